//! Many blob fetches at once from one server all succeed.
//!
//! libp2p-stream hands incoming streams to the acceptor over a channel that holds one
//! stream, and resets any stream that arrives while it is full. Streams opened in a burst
//! therefore used to fail with "connection is closed" before the server ever saw them.

use std::sync::Arc;
use std::time::Duration;

use pinfold_net::{BlobId, FetchLimits, Keypair, MemoryBlobStore, NetConfig};

const FETCHES: usize = 16;
const BLOB: usize = 300 * 1024;

fn config() -> NetConfig {
    let mut c = NetConfig::local_test(Keypair::generate_ed25519());
    c.listen.clear();
    // Room for every fetch at once, so a failure can only be a dropped stream.
    c.limits.blob_serve_total = FETCHES;
    c.limits.blob_serve_per_peer = FETCHES;
    c.limits.blob_fetch_total = FETCHES;
    c
}

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_fetches_of_distinct_blobs_all_succeed() {
    let store = Arc::new(MemoryBlobStore::new());
    let blobs: Vec<(BlobId, Vec<u8>)> = (0..FETCHES)
        .map(|i| {
            let data = bytes(BLOB + i, i as u64 + 1);
            (store.insert(data.clone()), data)
        })
        .collect();

    let (server, mut server_events, server_loop) =
        pinfold_net::new(config(), Some(store)).expect("server builds");
    tokio::spawn(server_loop.run());
    tokio::spawn(async move {
        use futures::StreamExt as _;
        while server_events.next().await.is_some() {}
    });
    let addr = server
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .await
        .expect("listens");

    let (client, mut client_events, client_loop) =
        pinfold_net::new(config(), None).expect("client builds");
    tokio::spawn(client_loop.run());
    tokio::spawn(async move {
        use futures::StreamExt as _;
        while client_events.next().await.is_some() {}
    });
    client.dial(addr).await.expect("dials");

    // Several bursts: one burst loses the race often, not always.
    for round in 0..20 {
        let tasks: Vec<_> = blobs
            .iter()
            .map(|(id, data)| {
                let (client, id, len, peer) =
                    (client.clone(), *id, data.len() as u64, server.peer_id());
                tokio::spawn(async move {
                    let mut sink = Vec::new();
                    let r = tokio::time::timeout(
                        Duration::from_secs(30),
                        client.fetch_blob(peer, id, FetchLimits::exact(len), &mut sink),
                    )
                    .await
                    .expect("fetch finishes in time");
                    r.map(|_| sink)
                })
            })
            .collect();
        let mut failures = Vec::new();
        for (task, (_, data)) in tasks.into_iter().zip(&blobs) {
            match task.await.expect("fetch task") {
                Ok(sink) => assert!(sink == *data, "round {round}: wrong bytes"),
                Err(e) => failures.push(e.to_string()),
            }
        }
        assert!(
            failures.is_empty(),
            "round {round}: {} of {FETCHES} fetches failed: {failures:?}",
            failures.len()
        );
    }
}
