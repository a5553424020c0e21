//! Witnesses: three `task-defs witness` servers, a registry that pushes its checkpoints to
//! them, a fork of the registry shown to one of them, and clients requiring 2 of 3.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pinfold_registry::api::WitnessEntry;
use pinfold_registry::client::{Client, SyncFailure, sync, verified_status};
use pinfold_registry::witness::{WitnessConfig, WitnessService, serve_witness};
use pinfold_registry::{RegistryConfig, unix_now};
use pinfold_tlog::witness::{AddCheckpoint, WitnessedLog};
use pinfold_tlog::*;

use crate::registry::{ORIGIN, Server, config, publish, trust, vote, wordfreq};

/// A witness served on 127.0.0.1:0 by its own runtime thread; stops when dropped.
struct WitnessServer {
    url: String,
    vkey: CosignerKey,
    service: Arc<WitnessService>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WitnessServer {
    fn start(dir: &Path, name: Option<&str>, log: &NoteVerifier) -> WitnessServer {
        let service = Arc::new(
            WitnessService::open(&WitnessConfig {
                data_dir: dir.to_path_buf(),
                name: name.map(str::to_string),
                logs: vec![log.clone()],
                request_timeout: Some(Duration::from_secs(1)),
            })
            .unwrap(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let s = service.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                serve_witness(listener, s, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        WitnessServer {
            url: format!("http://{addr}"),
            vkey: service.verifier(),
            service,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn entry(&self) -> WitnessEntry {
        WitnessEntry {
            vkey: self.vkey.clone(),
            url: self.url.clone(),
        }
    }

    fn witnessed(&self) -> Option<WitnessedLog> {
        self.service.state().get(ORIGIN).cloned()
    }
}

impl Drop for WitnessServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The log's verifier key, from the data directory a registry created.
fn log_vkey(data: &Path) -> NoteVerifier {
    let key: PublicKey = std::fs::read_to_string(data.join("log.pub"))
        .unwrap()
        .trim_end()
        .parse()
        .unwrap();
    NoteVerifier::new(ORIGIN, key).unwrap()
}

/// Waits until the registry's newest cosigned checkpoint has `size` leaves and
/// cosignatures from all of `witnesses`; returns its note.
fn cosigned_at(c: &Client, size: u64, witnesses: &[&WitnessServer]) -> Vec<u8> {
    let policy =
        WitnessPolicy::new(witnesses.iter().map(|w| w.vkey.clone()), witnesses.len()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(note) = c.cosigned_checkpoint(witnesses.len()) {
            let parsed = Note::parse(&note).unwrap();
            let cp = Checkpoint::from_text(&parsed.text).unwrap();
            if cp.size == size && policy.check(&parsed, unix_now()).is_ok() {
                return note;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint of size {size} cosigned by all"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn registry_with(data: &Path, witnesses: &[&WitnessServer]) -> RegistryConfig {
    RegistryConfig {
        witnesses: witnesses.iter().map(|w| w.entry()).collect(),
        checkpoint_interval: Some(Duration::from_secs(3600)),
        ..config(data, &[1], 1)
    }
}

fn two_of(witnesses: &[&WitnessServer], data: &Path) -> VerifierConfig {
    VerifierConfig {
        witnesses: WitnessPolicy::new(witnesses.iter().map(|w| w.vkey.clone()), 2).unwrap(),
        ..trust(data, &[1], 1, 300)
    }
}

#[test]
fn three_witnesses_cosign_one_history_and_refuse_a_fork() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("registry");
    // The first start creates the log key the witnesses are configured with.
    drop(pinfold_registry::Registry::open(&config(&data, &[1], 1)).unwrap());
    let log = log_vkey(&data);
    let wdir = |n: u8| -> PathBuf { tmp.path().join(format!("w{n}")) };
    let w1 = WitnessServer::start(&wdir(1), Some("w1.pinfold.test/witness"), &log);
    let w2 = WitnessServer::start(&wdir(2), Some("w2.pinfold.test/witness"), &log);
    let mut w3 = WitnessServer::start(&wdir(3), Some("w3.pinfold.test/witness"), &log);
    let all = [&w1, &w2, &w3];

    // The real registry: every checkpoint goes to all three witnesses.
    let r = Server::start(&registry_with(&data, &all));
    let c = r.client();
    let def = wordfreq("1.0.0").load().unwrap();
    publish(&c, &def);
    vote(&c, 1, ReviewAction::Approve, def.id, "", unix_now());
    let note = cosigned_at(&c, 2, &all);
    let two = two_of(&all, &data);
    let v = verified_status(&c, two.clone(), None, &def.id, unix_now()).unwrap();
    assert_eq!(v.status, Status::Approved);
    assert_eq!(v.checkpoint.size, 2);
    assert_eq!(v.cosigned_by.len(), 3);
    // The latest checkpoint carries the cosignatures too, and the API names the log's
    // verifier key and the witnesses.
    assert!(
        Note::parse(&c.checkpoint().unwrap())
            .unwrap()
            .signatures
            .len()
            >= 2
    );
    let info = c.info().unwrap();
    assert_eq!(info.log_vkey, log.to_vkey());
    assert_eq!(info.witnesses.len(), 3);

    // A checkpoint with fewer than 2 trusted cosignatures is refused by a 2-of-3 client,
    // and taken by a 1-of-3 client.
    let mut one = Note::parse(&note).unwrap();
    one.signatures
        .retain(|s| !w1.vkey.matches(s) && !w2.vkey.matches(s));
    let mut strict = Verifier::new(two.clone()).unwrap();
    let leaves = c.entries(0, 2).unwrap();
    let e = strict
        .update(&one.to_bytes(), &leaves, &[], unix_now())
        .unwrap_err();
    assert!(
        matches!(&e, SyncError::Cosignatures(t) if t.need == 2 && t.got == 1),
        "{e}"
    );
    assert_eq!(strict.size(), 0);
    let lenient = VerifierConfig {
        witnesses: WitnessPolicy::new(all.iter().map(|w| w.vkey.clone()), 1).unwrap(),
        ..two.clone()
    };
    Verifier::new(lenient)
        .unwrap()
        .update(&one.to_bytes(), &leaves, &[], unix_now())
        .unwrap();
    // A cosignature by an unknown witness key under a trusted name counts for nothing.
    let mut forged = one.clone();
    let impostor = Cosigner::new("w1.pinfold.test/witness", SecretKey::from_seed([77; 32]));
    forged
        .signatures
        .push(impostor.unwrap().cosign(&forged.text, unix_now()));
    let e = Verifier::new(two.clone())
        .unwrap()
        .update(&forged.to_bytes(), &leaves, &[], unix_now())
        .unwrap_err();
    assert!(
        matches!(&e, SyncError::Cosignatures(t) if t.got == 1),
        "{e}"
    );

    // Fork: a copy of the registry at size 2 diverges from the real one. The real one
    // logs a revocation (size 3), witnessed by all three.
    drop(r);
    let fork_data = tmp.path().join("fork");
    crate::harness::copy_tree(&data, &fork_data);
    let r = Server::start(&registry_with(&data, &all));
    let c = r.client();
    vote(&c, 1, ReviewAction::Revoke, def.id, "malware", unix_now());
    cosigned_at(&c, 3, &all);
    let real = w3.witnessed().unwrap();
    assert_eq!(real.size, 3);

    // The fork, signed with the same log key, hides the revocation and logs something
    // else instead; it shows its checkpoints to witness 3 only.
    let f = Server::start(&registry_with(&fork_data, &[&w3]));
    let fc = f.client();
    let other = wordfreq("6.6.6").load().unwrap();
    publish(&fc, &other);
    // Same size as what witness 3 cosigned, another root: refused (409), view unchanged.
    let fork_note = fc.checkpoint().unwrap();
    let fork_cp = Checkpoint::open(&fork_note, &log).unwrap();
    assert_eq!(fork_cp.size, 3);
    let (status, why) = request_to(
        &w3.url,
        &AddCheckpoint {
            old: 3,
            proof: Vec::new(),
            checkpoint: fork_note.clone(),
        },
    );
    assert_eq!(status, 409, "{why}");
    assert!(why.contains("fork"), "{why}");
    assert_eq!(w3.witnessed().unwrap(), real);
    // Bigger than what it cosigned, with the fork's own consistency proof: refused (422).
    publish(&fc, &wordfreq("6.6.7").load().unwrap());
    let fork_note = fc.checkpoint().unwrap();
    let proof = fc.consistency(3, 4).unwrap();
    let (status, why) = request_to(
        &w3.url,
        &AddCheckpoint {
            old: 3,
            proof: proof.clone(),
            checkpoint: fork_note.clone(),
        },
    );
    assert_eq!(status, 422, "{why}");
    assert_eq!(w3.witnessed().unwrap(), real);
    // The fork's own witness loop got nothing from witness 3 either: nothing cosigned.
    std::thread::sleep(Duration::from_millis(300));
    assert!(fc.cosigned_checkpoint(1).is_err());
    assert_eq!(
        Note::parse(&fc.checkpoint().unwrap())
            .unwrap()
            .signatures
            .len(),
        1,
        "only the log's own signature"
    );

    // A client requiring 2 of 3 refuses the fork, with or without a stored view.
    let e = verified_status(&fc, two.clone(), None, &other.id, unix_now()).unwrap_err();
    assert!(matches!(e, SyncFailure::Client(_)), "{e}");
    let mut v = Verifier::new(two.clone()).unwrap();
    let leaves = fc.entries(0, 4).unwrap();
    let e = v.update(&fork_note, &leaves, &[], unix_now()).unwrap_err();
    assert!(
        matches!(&e, SyncError::Cosignatures(t) if t.need == 2 && t.got == 0),
        "{e}"
    );
    // The real registry still verifies, revocation included.
    let mut v = Verifier::new(two.clone()).unwrap();
    sync(&c, &mut v, unix_now()).unwrap();
    assert_eq!(v.status(&def.id, unix_now()).unwrap(), Status::Revoked);

    // The witness's view survives a restart: the fork is still refused.
    drop(w3);
    w3 = WitnessServer::start(&wdir(3), None, &log);
    assert_eq!(w3.witnessed().unwrap(), real);
    let (status, why) = request_to(
        &w3.url,
        &AddCheckpoint {
            old: 3,
            proof,
            checkpoint: fork_note,
        },
    );
    assert_eq!(status, 422, "{why}");
    // And it keeps cosigning the real log as it grows.
    vote(&c, 1, ReviewAction::Reject, def.id, "still bad", unix_now());
    drop(f);
    drop(r);
    let r = Server::start(&registry_with(&data, &[&w1, &w2, &w3]));
    cosigned_at(&r.client(), 4, &[&w1, &w2, &w3]);
}

fn request_to(url: &str, req: &AddCheckpoint) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let mut resp = agent
        .post(&format!("{url}/add-checkpoint"))
        .send(&req.to_bytes()[..])
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap())
}

#[test]
fn witnesses_come_from_registry_toml_and_show_in_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("registry");
    std::fs::create_dir_all(&data).unwrap();
    let w = Cosigner::new("w.pinfold.test/1", SecretKey::from_seed([50; 32]))
        .unwrap()
        .verifier();
    std::fs::write(
        data.join("registry.toml"),
        format!(
            "witness_timeout_secs = 2\n[[reviewers]]\nkey = \"{}\"\n[[witnesses]]\nvkey = \"{w}\"\nurl = \"http://127.0.0.1:9\"\n",
            crate::registry::key(1).public_key()
        ),
    )
    .unwrap();
    let r = pinfold_registry::Registry::open(&RegistryConfig {
        data_dir: data.clone(),
        ..RegistryConfig::default()
    })
    .unwrap();
    let info = r.info();
    assert_eq!(info.witnesses.len(), 1);
    assert_eq!(info.witnesses[0].vkey, w);
    assert_eq!(info.log_vkey, r.note_verifier().to_vkey());
    assert_eq!(r.settings().witness_timeout, Duration::from_secs(2));
    // Nothing is cosigned while the witness is unreachable.
    assert!(r.cosigned_note(1).is_none());
    // A malformed witness key is a configuration error naming the file.
    std::fs::write(
        data.join("registry.toml"),
        "[[witnesses]]\nvkey = \"w+00+AA\"\nurl = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    let e = pinfold_registry::Registry::open(&RegistryConfig {
        data_dir: data,
        reviewers: crate::registry::roster(&[1]),
        ..RegistryConfig::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("registry.toml"), "{e}");
    // More witnesses than a note can carry cosignatures of is refused.
    let many: Vec<WitnessEntry> = (0..33u8)
        .map(|n| WitnessEntry {
            vkey: Cosigner::new(&format!("w{n}.example"), SecretKey::from_seed([n; 32]))
                .unwrap()
                .verifier(),
            url: "http://127.0.0.1:9".into(),
        })
        .collect();
    let e = pinfold_registry::Registry::open(&RegistryConfig {
        data_dir: tmp.path().join("other"),
        reviewers: crate::registry::roster(&[1]),
        witnesses: many,
        ..RegistryConfig::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("at most 32"), "{e}");
}

#[test]
fn a_witness_answers_a_stalled_or_oversized_request_and_keeps_serving() {
    use std::io::{Read as _, Write as _};
    let tmp = tempfile::tempdir().unwrap();
    let log = NoteSigner::new(ORIGIN, SecretKey::from_seed([60; 32])).unwrap();
    let w = WitnessServer::start(tmp.path(), Some("w.pinfold.test/1"), &log.verifier());
    let addr = w.url.strip_prefix("http://").unwrap().to_string();
    // A body announced but never sent: answered 408 after the request timeout (1 s here),
    // not held open.
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stalled,
        "POST /add-checkpoint HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\nold 0\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stalled.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // A body over the cap is refused (413) before it is read.
    let big = vec![b'a'; pinfold_registry::witness::MAX_ADD_CHECKPOINT_BYTES + 1];
    let (status, _) = request_to(
        &w.url,
        &AddCheckpoint {
            old: 0,
            proof: Vec::new(),
            checkpoint: big,
        },
    );
    assert_eq!(status, 413);
    // Garbage is a 400, an unknown log a 404, a checkpoint not signed by the log a 403.
    let garbage = ureq_post(&w.url, b"hello");
    assert_eq!(garbage, 400);
    let other = NoteSigner::new("other.example/log", SecretKey::from_seed([61; 32])).unwrap();
    let cp = |signer: &NoteSigner, origin: &str| {
        Checkpoint {
            origin: origin.into(),
            size: 0,
            root: Hash::empty_root(),
            time: unix_now(),
        }
        .sign(signer)
        .unwrap()
    };
    let req = |checkpoint| AddCheckpoint {
        old: 0,
        proof: Vec::new(),
        checkpoint,
    };
    assert_eq!(
        request_to(&w.url, &req(cp(&other, "other.example/log"))).0,
        404
    );
    let impostor = NoteSigner::new(ORIGIN, SecretKey::from_seed([62; 32])).unwrap();
    assert_eq!(request_to(&w.url, &req(cp(&impostor, ORIGIN))).0, 403);
    // And the honest empty log is cosigned.
    let (status, line) = request_to(&w.url, &req(cp(&log, ORIGIN)));
    assert_eq!(status, 200, "{line}");
    assert!(line.starts_with("\u{2014} w.pinfold.test/1 "), "{line}");
    assert_eq!(w.witnessed().unwrap().size, 0);
}

fn ureq_post(url: &str, body: &[u8]) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    agent
        .post(&format!("{url}/add-checkpoint"))
        .send(body)
        .unwrap()
        .status()
        .as_u16()
}
