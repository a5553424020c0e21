//! Connections: explicit dials over TCP and QUIC, full listen addresses, ping.

use std::sync::Arc;

use pinfold_net::{FetchLimits, MemoryBlobStore, OfferReply, Request, Response};

use crate::jobs::{accept_all, offer};
use crate::util::{answer_jobs, drain, spawn, spawn_with, test_config};

#[tokio::test]
async fn three_nodes_dial_each_other_with_full_addresses() {
    let a = spawn(None).await;
    let b = spawn(None).await;
    let c = spawn(None).await;
    for n in [&a, &b, &c] {
        let text = n.addr.to_string();
        assert!(text.starts_with("/ip4/127.0.0.1/tcp/"), "{text}");
        assert!(text.ends_with(&format!("/p2p/{}", n.peer)), "{text}");
        assert_eq!(n.client.listen_addrs().await.unwrap(), vec![n.addr.clone()]);
    }
    assert_eq!(a.client.dial(b.addr.clone()).await.unwrap(), b.peer);
    assert_eq!(b.client.dial(c.addr.clone()).await.unwrap(), c.peer);
    assert_eq!(c.client.dial(a.addr.clone()).await.unwrap(), a.peer);
    // Dialling a connected peer answers at once.
    assert_eq!(a.client.dial(b.addr.clone()).await.unwrap(), b.peer);
    let mut peers = a.client.connected_peers().await.unwrap();
    peers.sort();
    let mut want = vec![b.peer, c.peer];
    want.sort();
    assert_eq!(peers, want);
    assert!(a.client.ping(b.peer).await.unwrap() < std::time::Duration::from_secs(1));
    // An address without /p2p/ is refused rather than dialled blindly.
    let mut bare = b.addr.clone();
    bare.pop();
    assert!(a.client.dial(bare).await.is_err());
    for n in [a, b, c] {
        drain(n.events);
    }
}

#[tokio::test]
async fn quic_carries_negotiation_and_blobs() {
    let store = Arc::new(MemoryBlobStore::new());
    let data = crate::util::bytes(1_000_000, 7);
    let id = store.insert(data.clone());
    let p = spawn_with(test_config(), "/ip4/127.0.0.1/udp/0/quic-v1", Some(store)).await;
    assert!(p.addr.to_string().contains("/quic-v1/p2p/"), "{}", p.addr);
    let r = spawn_with(test_config(), "/ip4/127.0.0.1/udp/0/quic-v1", None).await;
    let _rest = answer_jobs(p.events, accept_all);
    drain(r.events);
    r.client.dial(p.addr.clone()).await.unwrap();

    let reply = r.client.offer(p.peer, offer()).await.unwrap();
    assert!(matches!(reply, OfferReply::Accept(_)), "{reply:?}");
    let status = r
        .client
        .request(
            p.peer,
            Request::Status {
                job_id: pinfold_net::JobId("job-1".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(status, Response::Status(pinfold_net::JobState::Running));

    let mut sink = Vec::new();
    let stats = r
        .client
        .fetch_blob(p.peer, id, FetchLimits::exact(data.len() as u64), &mut sink)
        .await
        .unwrap();
    assert_eq!(stats.size, data.len() as u64);
    assert_eq!(sink, data);
}

#[tokio::test]
async fn kademlia_bootstrap_finds_peers_through_the_bootstrap_node() {
    let kad_config = || {
        let mut c = test_config();
        c.kad = true;
        c.kad_server = true;
        c
    };
    let boot = spawn_with(kad_config(), "/ip4/127.0.0.1/tcp/0", None).await;
    drain(boot.events);
    let mut b_config = kad_config();
    b_config.bootstrap = vec![boot.addr.clone()];
    let b = spawn_with(b_config, "/ip4/127.0.0.1/tcp/0", None).await;
    drain(b.events);
    // b's listen address reaches the bootstrap node through identify.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut c_config = kad_config();
    c_config.bootstrap = vec![boot.addr.clone()];
    let mut c = spawn_with(c_config, "/ip4/127.0.0.1/tcp/0", None).await;
    // c only knows the bootstrap node; its bootstrap query leads it to b.
    let found = crate::util::wait_for(&mut c.events, 15, |e| match e {
        pinfold_net::Event::PeerConnected { peer, .. } if peer == b.peer => Some(peer),
        _ => None,
    })
    .await;
    assert_eq!(found, b.peer);
}

#[tokio::test]
async fn mdns_can_be_switched_on() {
    // Only that a node builds and runs with mDNS on; discovery itself needs multicast,
    // which test sandboxes may not have.
    let mut c = test_config();
    c.mdns = true;
    let n = spawn_with(c, "/ip4/127.0.0.1/tcp/0", None).await;
    assert!(n.client.listen_addrs().await.unwrap().len() == 1);
}
