//! Negotiation over the job protocol: accept, typed rejects, caps and misbehaving peers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use pinfold_net::protocol::ErrorReply;
use pinfold_net::{
    Accept, BlobId, Event, InputEntry, JobId, JobState, Offer, OfferReply, PeerId, RejectReason,
    Request, ResourceNeeds, Response,
};
use tokio::sync::Notify;

use crate::util::{answer_jobs, drain, spawn, spawn_with, test_config};

pub fn approved() -> String {
    BlobId::of(b"approved definition").to_string()
}

pub fn offer() -> Offer {
    Offer {
        definition: approved(),
        bundle: None,
        params: BTreeMap::from([("N".to_string(), "3".to_string())]),
        inputs: vec![InputEntry {
            name: "data/in.txt".into(),
            size: 5,
            blake3: BlobId::of(b"hello"),
        }],
        needs: ResourceNeeds {
            memory_bytes: 64 << 20,
            input_bytes: 5,
            output_bytes: 1 << 20,
            timeout_secs: 10,
            min_isolation: None,
        },
        secrets: vec!["API_TOKEN".into()],
        secret_values: BTreeMap::from([(
            "API_TOKEN".to_string(),
            pinfold_net::SecretValue::new(b"t0ken".to_vec()),
        )]),
        registry_size: Some(42),
    }
}

/// A provider policy: approve one definition, reject revoked ones, cap memory.
pub fn accept_all(_peer: PeerId, request: &Request) -> Response {
    match request {
        Request::Offer(o) if o.definition == approved() => {
            if o.needs.memory_bytes > 1 << 30 {
                return Response::Offer(OfferReply::Reject {
                    reason: RejectReason::OverCaps("memory above 1 GiB".into()),
                });
            }
            Response::Offer(OfferReply::Accept(Accept {
                job_id: JobId("job-1".into()),
                fetch: o.inputs.iter().map(|i| i.blake3).collect(),
                hold_secs: 60,
            }))
        }
        Request::Offer(o) if o.definition == BlobId::of(b"revoked").to_string() => {
            Response::Offer(OfferReply::Reject {
                reason: RejectReason::Revoked,
            })
        }
        Request::Offer(_) => Response::Offer(OfferReply::Reject {
            reason: RejectReason::NotApproved,
        }),
        Request::Status { .. } => Response::Status(JobState::Running),
        Request::Result { .. } => Response::Error(ErrorReply::UnknownJob),
        Request::Cancel { .. } => Response::Cancelled(false),
    }
}

#[tokio::test]
async fn offer_round_trips_accept_and_typed_rejects() {
    let p = spawn(None).await;
    let r = spawn(None).await;
    let _rest = answer_jobs(p.events, accept_all);
    drain(r.events);
    r.client.dial(p.addr.clone()).await.unwrap();

    let reply = r.client.offer(p.peer, offer()).await.unwrap();
    assert_eq!(
        reply,
        OfferReply::Accept(Accept {
            job_id: JobId("job-1".into()),
            fetch: vec![BlobId::of(b"hello")],
            hold_secs: 60,
        })
    );

    let mut o = offer();
    o.definition = BlobId::of(b"revoked").to_string();
    assert_eq!(
        r.client.offer(p.peer, o).await.unwrap(),
        OfferReply::Reject {
            reason: RejectReason::Revoked
        }
    );
    let mut o = offer();
    o.definition = BlobId::of(b"unknown").to_string();
    assert_eq!(
        r.client.offer(p.peer, o).await.unwrap(),
        OfferReply::Reject {
            reason: RejectReason::NotApproved
        }
    );
    let mut o = offer();
    o.needs.memory_bytes = 8 << 30;
    assert_eq!(
        r.client.offer(p.peer, o).await.unwrap(),
        OfferReply::Reject {
            reason: RejectReason::OverCaps("memory above 1 GiB".into())
        }
    );
    // An offer breaking the protocol's own rules never reaches the node's policy.
    let mut o = offer();
    o.inputs.push(o.inputs[0].clone());
    o.needs.input_bytes = 10;
    match r.client.offer(p.peer, o).await.unwrap() {
        OfferReply::Reject {
            reason: RejectReason::Invalid(d),
        } => assert!(d.contains("listed twice"), "{d}"),
        other => panic!("{other:?}"),
    }
    let mut o = offer();
    o.inputs[0].name = "../escape".into();
    assert!(matches!(
        r.client.offer(p.peer, o).await.unwrap(),
        OfferReply::Reject {
            reason: RejectReason::Invalid(_)
        }
    ));
}

#[tokio::test]
async fn oversized_request_is_refused_and_the_node_keeps_working() {
    let p = spawn(None).await;
    let r = spawn(None).await;
    let _rest = answer_jobs(p.events, accept_all);
    drain(r.events);
    r.client.dial(p.addr.clone()).await.unwrap();

    let mut o = offer();
    // 300 KiB of params against a 256 KiB request cap.
    for i in 0..60 {
        o.params.insert(format!("P{i}"), "x".repeat(5000));
    }
    let started = std::time::Instant::now();
    let answer = r.client.request(p.peer, Request::Offer(o)).await;
    eprintln!("oversized request answered: {answer:?}");
    match &answer {
        Ok(Response::Error(ErrorReply::Invalid(d))) => assert!(d.contains("exceeds"), "{d}"),
        Err(_) => {} // The provider stopped reading; the requester may see the stream fail.
        other => panic!("oversized request answered {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused promptly"
    );

    // Still alive: pings answer, a normal offer round-trips, the peer is struck not banned.
    assert!(r.client.ping(p.peer).await.is_ok());
    assert!(matches!(
        r.client.offer(p.peer, offer()).await.unwrap(),
        OfferReply::Accept(_)
    ));
    assert!(!p.client.is_banned(r.peer).await.unwrap());
}

#[tokio::test]
async fn repeated_malformed_requests_get_the_peer_banned() {
    let p = spawn(None).await;
    let r = spawn(None).await;
    let mut rest = answer_jobs(p.events, accept_all);
    drain(r.events);
    r.client.dial(p.addr.clone()).await.unwrap();

    for _ in 0..3 {
        let mut o = offer();
        o.definition = "not an identity".into();
        let _ = r.client.request(p.peer, Request::Offer(o)).await;
    }
    let banned = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(Event::Banned { peer, .. }) = rest.recv().await {
                return peer;
            }
        }
    })
    .await
    .expect("ban event");
    assert_eq!(banned, r.peer);
    assert!(p.client.is_banned(r.peer).await.unwrap());
    // Connections are closed and new ones refused.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!p.client.connected_peers().await.unwrap().contains(&r.peer));
    let again = r.client.offer(p.peer, offer()).await;
    assert!(again.is_err(), "banned peer still served: {again:?}");
}

#[tokio::test]
async fn concurrent_offers_per_peer_are_capped() {
    let mut config = test_config();
    config.limits.max_inbound_per_peer = 4;
    let mut p = spawn_with(config, "/ip4/127.0.0.1/tcp/0", None).await;
    let r = spawn(None).await;
    drain(r.events);
    r.client.dial(p.addr.clone()).await.unwrap();

    // The provider holds the first four offers unanswered until released.
    let release = Arc::new(Notify::new());
    let release2 = Arc::clone(&release);
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while held.len() < 4 {
            if let Some(Event::Request { responder, .. }) = p.events.next().await {
                held.push(responder);
            }
        }
        release2.notified().await;
        for responder in held {
            responder
                .send(accept_all(PeerId::random(), &Request::Offer(offer())))
                .await
                .unwrap();
        }
        p.events
    });

    let mut offers = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let c = r.client.clone();
        let peer = p.peer;
        offers.spawn(async move { c.offer(peer, offer()).await.unwrap() });
    }
    let mut busy = 0;
    while busy < 2 {
        let reply = offers.join_next().await.unwrap().unwrap();
        assert_eq!(
            reply,
            OfferReply::Reject {
                reason: RejectReason::Busy
            }
        );
        busy += 1;
    }
    release.notify_one();
    let mut accepted = 0;
    while let Some(reply) = offers.join_next().await {
        assert!(matches!(reply.unwrap(), OfferReply::Accept(_)));
        accepted += 1;
    }
    assert_eq!(accepted, 4);
    drain(holder.await.unwrap());
}

#[tokio::test]
async fn requests_beyond_a_connections_stream_slots_wait_for_one_instead_of_failing() {
    // More offers in flight to one peer than request-response has stream slots on a
    // connection (16): each must still get its answer, none "max sub-streams reached".
    let mut config = test_config();
    config.limits.max_inbound_per_peer = 64;
    let mut p = spawn_with(config, "/ip4/127.0.0.1/tcp/0", None).await;
    let r = spawn(None).await;
    drain(r.events);
    r.client.dial(p.addr.clone()).await.unwrap();
    let provider = p.peer;
    // The provider answers every request after a pause, so they all overlap.
    let answering = tokio::spawn(async move {
        while let Some(event) = p.events.next().await {
            if let Event::Request {
                peer,
                request,
                responder,
            } = event
            {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let _ = responder.send(accept_all(peer, &request)).await;
                });
            }
        }
    });
    let mut offers = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let c = r.client.clone();
        offers.spawn(async move { c.offer(provider, offer()).await });
    }
    while let Some(reply) = offers.join_next().await {
        let reply = reply.unwrap();
        assert!(matches!(reply, Ok(OfferReply::Accept(_))), "{reply:?}");
    }
    answering.abort();
}

fn job_result(keypair: &pinfold_net::Keypair, requestor: PeerId) -> pinfold_net::JobResult {
    use pinfold_net::protocol::{OutcomeSummary, OutputEntry};
    use pinfold_net::{BlobRef, Receipt, ReceiptBody, ReceiptUsage, RunStatus};
    let outputs = BlobId::of(b"output digest").to_string();
    let usage = ReceiptUsage {
        wall_us: 10,
        fuel: None,
        peak_memory: 1 << 16,
    };
    let o = offer();
    let receipt = Receipt::sign(
        ReceiptBody {
            job_id: JobId("job-1".into()),
            definition: o.definition.clone(),
            inputs: o.inputs.clone(),
            params: o.params.clone(),
            outputs: outputs.clone(),
            status: RunStatus::Succeeded,
            exit_code: Some(0),
            usage: usage.clone(),
            provider: String::new(),
            requestor: requestor.to_base58(),
            started_ms: 1,
            ended_ms: 2,
        },
        keypair,
    )
    .unwrap();
    let empty = BlobRef {
        id: BlobId::of(b""),
        size: 0,
    };
    pinfold_net::JobResult {
        job_id: JobId("job-1".into()),
        outcome: OutcomeSummary {
            status: RunStatus::Succeeded,
            reason: None,
            exit_code: Some(0),
            stdout: empty,
            stdout_truncated: false,
            stderr: empty,
            stderr_truncated: false,
            outputs,
            dropped: 0,
            usage,
        },
        files: vec![OutputEntry {
            path: "out/result.txt".into(),
            size: 3,
            blake3: BlobId::of(b"abc"),
        }],
        receipt,
    }
}

#[tokio::test]
async fn results_carry_a_receipt_signed_by_the_responding_provider() {
    use pinfold_net::protocol::ResultReply;
    let honest = spawn(None).await;
    let liar = spawn(None).await;
    let r = spawn(None).await;
    let (hk, rp) = (honest.client.keypair().clone(), r.peer);
    let _h = answer_jobs(honest.events, move |_, _| {
        Response::Result(ResultReply::Done(Box::new(job_result(&hk, rp))))
    });
    // The liar hands over a receipt signed by some other provider.
    let other = pinfold_net::Keypair::generate_ed25519();
    let _l = answer_jobs(liar.events, move |_, _| {
        Response::Result(ResultReply::Done(Box::new(job_result(&other, rp))))
    });
    drain(r.events);
    r.client.dial(honest.addr.clone()).await.unwrap();
    r.client.dial(liar.addr.clone()).await.unwrap();
    let ask = Request::Result {
        job_id: JobId("job-1".into()),
    };

    let Response::Result(ResultReply::Done(result)) =
        r.client.request(honest.peer, ask.clone()).await.unwrap()
    else {
        panic!("expected a result");
    };
    assert_eq!(result.receipt.verify().unwrap(), honest.peer);
    assert_eq!(result.files[0].path, "out/result.txt");

    let err = r.client.request(liar.peer, ask).await.unwrap_err();
    assert!(
        matches!(&err, pinfold_net::NetError::InvalidResponse(d) if d.contains("another provider")),
        "{err:?}"
    );
}

#[tokio::test]
async fn secret_values_cross_the_wire_checked_and_redacted() {
    let p = spawn(None).await;
    let r = spawn(None).await;
    // Accepts only when the value arrived intact; the reply never echoes it.
    let _rest = answer_jobs(p.events, |peer, req| match req {
        Request::Offer(o)
            if o.secret_values.get("API_TOKEN").map(|v| v.expose()) == Some(&b"t0ken"[..]) =>
        {
            accept_all(peer, req)
        }
        _ => Response::Offer(OfferReply::Reject {
            reason: RejectReason::NotApproved,
        }),
    });
    drain(r.events);
    r.client.dial(p.addr.clone()).await.unwrap();
    assert!(matches!(
        r.client.offer(p.peer, offer()).await.unwrap(),
        OfferReply::Accept(_)
    ));
    // Names without values (or values without names) break the protocol's rules.
    let mut o = offer();
    o.secret_values.clear();
    assert!(o.validate().is_err());
    let mut o = offer();
    o.secrets.clear();
    assert!(o.validate().is_err());
    // A tracing line printing the offer shows no value.
    let shown = format!("{:?}", offer());
    assert!(!shown.contains("t0ken"), "{shown}");
    // Values over the total cap are refused.
    let mut o = offer();
    o.secrets = (0..5).map(|i| format!("S{i}")).collect();
    o.secret_values = o
        .secrets
        .iter()
        .map(|n| {
            (
                n.clone(),
                pinfold_net::SecretValue::new(vec![b'x'; pinfold_net::secret::MAX_SECRET_VALUE]),
            )
        })
        .collect();
    assert!(o.validate().unwrap_err().contains("secret values exceed"));
}
