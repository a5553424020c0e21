//! Verified blob transfer throughput between two in-process nodes over loopback.
//!
//! `cargo bench -p pinfold-net --bench transfer` (add `--profile dev` to reuse the
//! development build, whose dependencies are optimised). The serving side's hash list is
//! cached after the warm-up fetch, so the figure is the steady state of serving a blob
//! again: transport, encryption, and BLAKE3 verification of every group on the receiver.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt as _;
use pinfold_net::{BlobId, Client, FetchLimits, Keypair, MemoryBlobStore, NetConfig, PeerId};

const SIZE: usize = 100 * 1024 * 1024;

fn data() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(SIZE);
    while out.len() < SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(SIZE);
    out
}

async fn pair(listen: &str, data: Arc<[u8]>) -> (Client, PeerId, BlobId) {
    let store = Arc::new(MemoryBlobStore::new());
    let id = store.insert(data);
    let node = |store: Option<Arc<dyn pinfold_net::BlobStore>>| {
        let mut c = NetConfig::local_test(Keypair::generate_ed25519());
        c.listen.clear();
        let (client, mut events, event_loop) = pinfold_net::new(c, store).expect("node");
        tokio::spawn(event_loop.run());
        tokio::spawn(async move { while events.next().await.is_some() {} });
        client
    };
    let provider = node(Some(store));
    let requestor = node(None);
    let addr = provider.listen(listen.parse().unwrap()).await.unwrap();
    let peer = requestor.dial(addr).await.unwrap();
    // Leak the provider's client so its loop keeps running for the whole bench.
    std::mem::forget(provider);
    (requestor, peer, id)
}

async fn fetch(client: &Client, peer: PeerId, id: BlobId) -> Duration {
    let mut sink = Vec::with_capacity(SIZE);
    let t = Instant::now();
    client
        .fetch_blob(peer, id, FetchLimits::exact(SIZE as u64), &mut sink)
        .await
        .expect("fetch");
    let e = t.elapsed();
    assert_eq!(sink.len(), SIZE);
    e
}

fn transfer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let data: Arc<[u8]> = data().into();
    let mut group = c.benchmark_group("verified_fetch_100MiB");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for (name, listen) in [
        ("tcp_noise_yamux", "/ip4/127.0.0.1/tcp/0"),
        ("quic", "/ip4/127.0.0.1/udp/0/quic-v1"),
    ] {
        let (client, peer, id) = rt.block_on(pair(listen, Arc::clone(&data)));
        // Warm-up: fills the provider's hash-list cache.
        rt.block_on(fetch(&client, peer, id));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += fetch(&client, peer, id).await;
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, transfer);
criterion_main!(benches);
