//! Test nodes: spawn, wait for events, answer job requests.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use pinfold_net::{
    BlobStore, Client, Event, Events, Keypair, Multiaddr, NetConfig, PeerId, Request, Response,
};
use tokio::sync::mpsc;

/// A running node.
pub struct Node {
    pub client: Client,
    pub events: Events,
    pub peer: PeerId,
    pub addr: Multiaddr,
}

/// The test configuration: loopback TCP, fast timers, no discovery.
pub fn test_config() -> NetConfig {
    let mut c = NetConfig::local_test(Keypair::generate_ed25519());
    c.listen.clear();
    c.limits.request_timeout = Duration::from_secs(10);
    c
}

/// Spawns a node listening on `listen`.
pub async fn spawn_with(
    mut config: NetConfig,
    listen: &str,
    store: Option<Arc<dyn BlobStore>>,
) -> Node {
    config.listen.clear();
    let (client, events, event_loop) = pinfold_net::new(config, store).expect("node builds");
    tokio::spawn(event_loop.run());
    let addr = client
        .listen(listen.parse().unwrap())
        .await
        .expect("listens");
    let peer = client.peer_id();
    Node {
        client,
        events,
        peer,
        addr,
    }
}

/// Spawns a node on loopback TCP with the test configuration.
pub async fn spawn(store: Option<Arc<dyn BlobStore>>) -> Node {
    spawn_with(test_config(), "/ip4/127.0.0.1/tcp/0", store).await
}

/// Waits (at most `secs`) for an event that `f` maps to `Some`, dropping the others.
pub async fn wait_for<T>(
    events: &mut Events,
    secs: u64,
    mut f: impl FnMut(Event) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            let ev = events.next().await.expect("event stream open");
            if let Some(t) = f(ev) {
                return t;
            }
        }
    })
    .await
    .expect("expected event in time")
}

/// Answers every job request with `handler`; forwards all other events to the returned
/// receiver (dropping them when it is full).
pub fn answer_jobs(
    mut events: Events,
    handler: impl Fn(PeerId, &Request) -> Response + Send + 'static,
) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            match ev {
                Event::Request {
                    peer,
                    request,
                    responder,
                } => {
                    let response = handler(peer, &request);
                    let _ = responder.send(response).await;
                }
                other => {
                    let _ = tx.try_send(other);
                }
            }
        }
    });
    rx
}

/// Keeps a node's events drained.
pub fn drain(mut events: Events) {
    tokio::spawn(async move { while events.next().await.is_some() {} });
}

/// Retries `f` until it succeeds (gossip needs subscriptions exchanged first).
pub async fn retry<T, E: std::fmt::Debug, F: Future<Output = Result<T, E>>>(
    secs: u64,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match f().await {
            Ok(t) => return t,
            Err(e) => {
                if tokio::time::Instant::now() > deadline {
                    panic!("still failing: {e:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
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
