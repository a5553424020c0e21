//! Provider ads and checkpoints over gossipsub: propagation, verification, forgery.

use pinfold_net::{
    BlobId, Event, ExecutorAd, Isolation, Keypair, ProviderAd, ResourceCaps, SignedAd,
};

use crate::util::{drain, retry, spawn, wait_for};

fn ad(free_slots: u32) -> ProviderAd {
    ProviderAd {
        executors: vec![
            ExecutorAd {
                runtime: "wasm".into(),
                isolation: Isolation::SandboxedRuntime,
            },
            ExecutorAd {
                runtime: "docker".into(),
                isolation: Isolation::Container,
            },
        ],
        caps: ResourceCaps {
            memory_bytes: 1 << 30,
            concurrent_tasks: 4,
            input_bytes: 1 << 30,
            output_bytes: 1 << 30,
        },
        free_slots,
        bundles: vec![BlobId::of(b"def").to_string()],
        timestamp: 0,
        seq: 0,
        addrs: Vec::new(),
    }
}

#[tokio::test]
async fn ads_propagate_through_a_relay_and_verify() {
    // a — b — c: a hears c only through b, which validates before forwarding.
    let mut a = spawn(None).await;
    let b = spawn(None).await;
    let c = spawn(None).await;
    a.client.dial(b.addr.clone()).await.unwrap();
    c.client.dial(b.addr.clone()).await.unwrap();
    drain(b.events);
    drain(c.events);
    // Wait for the mesh: publishing fails until c sees a subscriber, and a must be in b's mesh.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let signed = retry(5, || c.client.advertise(ad(3))).await;
    let (peer, got) = wait_for(&mut a.events, 10, |e| match e {
        Event::ProviderAd { peer, ad } => Some((peer, ad)),
        _ => None,
    })
    .await;
    assert_eq!(peer, c.peer);
    assert_eq!(got, signed.ad);
    assert_eq!(got.free_slots, 3);
    let live = a.client.providers().await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].peer, c.peer);

    // A newer ad replaces the old one.
    c.client.advertise(ad(1)).await.unwrap();
    let got = wait_for(&mut a.events, 10, |e| match e {
        Event::ProviderAd { ad, .. } => Some(ad),
        _ => None,
    })
    .await;
    assert_eq!(got.free_slots, 1);
    assert_eq!(a.client.providers().await.unwrap()[0].ad.free_slots, 1);
}

#[tokio::test]
async fn forged_ad_is_dropped_and_genuine_one_kept() {
    let mut a = spawn(None).await;
    let b = spawn(None).await;
    b.client.dial(a.addr.clone()).await.unwrap();
    drain(b.events);

    // b publishes an ad signed by some other key, then its own.
    let mut forged = ad(9);
    forged.timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    forged.seq = u64::MAX / 2;
    let forged = SignedAd::sign(forged, &Keypair::generate_ed25519()).unwrap();
    retry(5, || b.client.publish_signed_ad(&forged)).await;
    b.client.advertise(ad(2)).await.unwrap();

    // Same connection, same order: when the genuine ad arrives the forged one was handled.
    let (peer, got) = wait_for(&mut a.events, 10, |e| match e {
        Event::ProviderAd { peer, ad } => Some((peer, ad)),
        _ => None,
    })
    .await;
    assert_eq!(peer, b.peer);
    assert_eq!(
        got.free_slots, 2,
        "the forged ad (9 slots) must not be accepted"
    );
    let live = a.client.providers().await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].ad.free_slots, 2);
    // One strike against b, no ban yet; two more forgeries and b is banned.
    assert!(!a.client.is_banned(b.peer).await.unwrap());
    for slots in [10, 11] {
        let mut f = forged.ad.clone();
        f.free_slots = slots;
        let f = SignedAd::sign(f, &Keypair::generate_ed25519()).unwrap();
        b.client.publish_signed_ad(&f).await.unwrap();
    }
    let banned = wait_for(&mut a.events, 10, |e| match e {
        Event::Banned { peer, reason } => Some((peer, reason)),
        _ => None,
    })
    .await;
    assert_eq!(banned.0, b.peer);
    assert!(banned.1.contains("not the claimed peer"), "{}", banned.1);
    assert!(
        a.client.providers().await.unwrap().is_empty(),
        "a banned provider is forgotten"
    );
}

#[tokio::test]
async fn checkpoints_are_carried_verbatim_and_capped() {
    let mut a = spawn(None).await;
    let b = spawn(None).await;
    b.client.dial(a.addr.clone()).await.unwrap();
    drain(b.events);
    let note = "pinfold.example/registry\n42\nq6qZ4xb3Wj0=\ntime 1700000000\n\n\u{2014} key sig\n";
    retry(5, || b.client.publish_checkpoint(note)).await;
    let (source, got) = wait_for(&mut a.events, 10, |e| match e {
        Event::Checkpoint { source, note } => Some((source, note)),
        _ => None,
    })
    .await;
    assert_eq!(source, b.peer);
    assert_eq!(got, note);
    let huge = "x".repeat(200 * 1024);
    assert!(b.client.publish_checkpoint(&huge).await.is_err());
}
