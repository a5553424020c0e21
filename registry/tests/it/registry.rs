//! The registry in-process: HTTP API, k-of-n review, idempotence, refusals, and a verifying
//! client that catches tampering, rollback, forks and stale views.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use pinfold_registry::api::RosterEntry;
use pinfold_registry::client::{self, Client, ClientError, SyncFailure, verified_status};
use pinfold_registry::{Registry, RegistryConfig, RegistryError, unix_now};
use pinfold_tlog::*;
use task_defs::{Definition, DefinitionId, bundle};

use crate::harness::{Dir, EXAMPLES};

pub(crate) const ORIGIN: &str = "test.pinfold/registry";

pub(crate) fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

pub(crate) fn author() -> SecretKey {
    key(100)
}

/// A registry served on 127.0.0.1:0 by its own runtime thread; stops when dropped.
#[derive(Debug)]
pub(crate) struct Server {
    /// Base URL.
    pub(crate) url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub(crate) fn start(config: &RegistryConfig) -> Server {
        Server::try_start(config).unwrap()
    }

    pub(crate) fn try_start(config: &RegistryConfig) -> Result<Server, RegistryError> {
        let registry = Arc::new(Registry::open(config)?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let r = registry.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                pinfold_registry::serve(listener, r, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        Ok(Server {
            url: format!("http://{addr}"),
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub(crate) fn client(&self) -> Client {
        Client::with_timeout(&self.url, Duration::from_secs(20))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(crate) fn roster(keys: &[u8]) -> Vec<RosterEntry> {
    keys.iter()
        .map(|n| RosterEntry {
            key: key(*n).public_key(),
            name: Some(format!("reviewer{n}")),
        })
        .collect()
}

pub(crate) fn config(dir: &Path, reviewers: &[u8], threshold: usize) -> RegistryConfig {
    RegistryConfig {
        data_dir: dir.to_path_buf(),
        origin: Some("test.pinfold/registry".into()),
        reviewers: roster(reviewers),
        threshold: Some(threshold),
        ..RegistryConfig::default()
    }
}

/// What a client trusts: the log key from `log.pub`, its own roster and threshold.
pub(crate) fn trust(
    data: &Path,
    reviewers: &[u8],
    threshold: usize,
    max_age: u64,
) -> VerifierConfig {
    let log_key: PublicKey = std::fs::read_to_string(data.join("log.pub"))
        .unwrap()
        .trim_end()
        .parse()
        .unwrap();
    VerifierConfig {
        origin: "test.pinfold/registry".into(),
        log_key: NoteVerifier::new("test.pinfold/registry", log_key).unwrap(),
        reviewers: reviewers.iter().map(|n| key(*n).public_key()).collect(),
        threshold,
        max_age_secs: max_age,
        witnesses: WitnessPolicy::default(),
    }
}

pub(crate) fn wordfreq(version: &str) -> Dir {
    let d = Dir::copy_of(&format!("{EXAMPLES}/wordfreq"));
    if version != "1.0.0" {
        d.edit("version = \"1.0.0\"", &format!("version = \"{version}\""));
    }
    d
}

pub(crate) fn publish(c: &Client, def: &Definition) -> pinfold_registry::api::AppendResponse {
    let p = Published::sign(
        &author(),
        ORIGIN,
        def.id,
        &def.manifest.name,
        &def.manifest.version.to_string(),
        unix_now(),
    );
    c.publish(&p, &bundle::pack(def)).unwrap()
}

pub(crate) fn vote(
    c: &Client,
    reviewer: u8,
    action: ReviewAction,
    id: DefinitionId,
    reason: &str,
    t: u64,
) {
    let r = Review::sign(&key(reviewer), ORIGIN, action, id, reason, t);
    c.review(&r).unwrap();
}

fn status(s: &Server, cfg: &VerifierConfig, state: Option<&Path>, id: &DefinitionId) -> Status {
    verified_status(&s.client(), cfg.clone(), state, id, unix_now())
        .unwrap()
        .status
}

#[test]
fn k_of_n_approval_counts_distinct_trusted_keys_and_revocation_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&config(&data, &[1, 2, 3], 2));
    let c = s.client();
    let cfg = trust(&data, &[1, 2, 3], 2, 300);
    let state = tmp.path().join("state.json");

    let v1 = wordfreq("1.0.0").load().unwrap();
    let other = wordfreq("9.9.9").load().unwrap();
    let r = publish(&c, &v1);
    assert!(r.created);
    assert_eq!((r.index, r.tree_size), (0, 1));
    publish(&c, &other);
    assert_eq!(status(&s, &cfg, Some(&state), &v1.id), Status::Pending);
    assert_eq!(
        status(&s, &cfg, Some(&state), &DefinitionId([7; 32])),
        Status::Unknown
    );

    let t = unix_now();
    vote(&c, 1, ReviewAction::Approve, v1.id, "", t);
    assert_eq!(status(&s, &cfg, Some(&state), &v1.id), Status::Pending);
    // The same reviewer again (a new statement, later time) is still one key.
    vote(&c, 1, ReviewAction::Approve, v1.id, "looked again", t + 1);
    // An approval of another identity counts for that identity only.
    vote(&c, 2, ReviewAction::Approve, other.id, "", t);
    assert_eq!(status(&s, &cfg, Some(&state), &v1.id), Status::Pending);
    assert_eq!(
        c.definition(&v1.id).unwrap().summary.status,
        Status::Pending,
        "the server's own view agrees"
    );

    vote(&c, 2, ReviewAction::Approve, v1.id, "", t);
    assert_eq!(status(&s, &cfg, Some(&state), &v1.id), Status::Approved);
    assert_eq!(status(&s, &cfg, Some(&state), &other.id), Status::Pending);
    assert_eq!(c.definition(&v1.id).unwrap().summary.approvals, 2);

    vote(&c, 3, ReviewAction::Revoke, v1.id, "exfiltrates input", t);
    assert_eq!(status(&s, &cfg, Some(&state), &v1.id), Status::Revoked);
    assert_eq!(
        c.definition(&v1.id).unwrap().summary.status,
        Status::Revoked
    );
    let revs = c.revocations().unwrap();
    assert_eq!(revs.len(), 1);
    assert_eq!(revs[0].reason, "exfiltrates input");

    // A rejection with a reason, and the pending queue.
    vote(&c, 3, ReviewAction::Reject, other.id, "reads too much", t);
    assert_eq!(status(&s, &cfg, Some(&state), &other.id), Status::Rejected);
    assert!(c.definitions(Some(Status::Pending)).unwrap().is_empty());
    assert_eq!(c.definitions(None).unwrap().len(), 2);

    // A fresh client without state agrees with the one that followed step by step.
    assert_eq!(status(&s, &cfg, None, &v1.id), Status::Revoked);
}

#[test]
fn the_client_not_the_server_decides_whose_approval_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&config(&data, &[1, 2, 3], 2));
    let c = s.client();
    let def = wordfreq("1.0.0").load().unwrap();
    publish(&c, &def);
    vote(&c, 1, ReviewAction::Approve, def.id, "", unix_now());
    vote(&c, 3, ReviewAction::Approve, def.id, "", unix_now());
    assert_eq!(
        c.definition(&def.id).unwrap().summary.status,
        Status::Approved
    );
    // Reviewer 3 is on the server's roster but not on this client's.
    let cfg = trust(&data, &[1, 2], 2, 300);
    assert_eq!(status(&s, &cfg, None, &def.id), Status::Pending);
    drop(s);

    // A compromised log (its key in hand) logs and signs what the server would never
    // accept: a forged signature by a trusted key, and a statement about another identity.
    let mut forged = Review::sign(&key(2), ORIGIN, ReviewAction::Approve, def.id, "", 1);
    forged.signature = key(9).sign(&forged.statement());
    let elsewhere = Review::sign(
        &key(2),
        ORIGIN,
        ReviewAction::Approve,
        DefinitionId([5; 32]),
        "",
        1,
    );
    let db = rusqlite::Connection::open(data.join("registry.sqlite")).unwrap();
    for (i, r) in [forged, elsewhere].into_iter().enumerate() {
        db.execute(
            "INSERT INTO leaves (idx, leaf) VALUES (?1, ?2)",
            rusqlite::params![3 + i as i64, Entry::Review(r).to_leaf()],
        )
        .unwrap();
    }
    // Unsigned rows are refused at start: leaves and checkpoint commit together.
    let e = Server::try_start(&config(&data, &[1, 2, 3], 2)).unwrap_err();
    assert!(
        e.to_string()
            .contains("covers 3 entries but the database holds 5"),
        "{e}"
    );
    let log_key =
        SecretKey::from_file_text(&std::fs::read_to_string(data.join("log.key")).unwrap()).unwrap();
    let leaves: Vec<Vec<u8>> = db
        .prepare("SELECT leaf FROM leaves ORDER BY idx")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let hashes: Vec<Hash> = leaves.iter().map(|l| leaf_hash(l)).collect();
    let note = Checkpoint {
        origin: "test.pinfold/registry".into(),
        size: 5,
        root: root(&hashes, 5).unwrap(),
        time: unix_now(),
    }
    .sign(&NoteSigner::new("test.pinfold/registry", log_key).unwrap())
    .unwrap();
    db.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'checkpoint'",
        [String::from_utf8(note).unwrap()],
    )
    .unwrap();
    drop(db);
    let s = Server::start(&config(&data, &[1, 2, 3], 2));
    let v = verified_status(&s.client(), cfg.clone(), None, &def.id, unix_now()).unwrap();
    assert_eq!(v.checkpoint.size, 5);
    assert_eq!(v.status, Status::Pending);
    assert_eq!(
        v.report.ignored_entries, 2,
        "reviewer 3's and the forged statement"
    );
}

#[test]
fn publishing_is_idempotent_and_new_versions_link_to_the_last_approved() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&config(&data, &[1], 1));
    let c = s.client();
    let v1 = wordfreq("1.0.0").load().unwrap();
    let a = publish(&c, &v1);
    let b = publish(&c, &v1);
    assert!(a.created && !b.created);
    assert_eq!((a.index, b.index, b.tree_size), (0, 0, 1));
    // Retrying a statement is idempotent too.
    let r = Review::sign(&key(1), ORIGIN, ReviewAction::Approve, v1.id, "", 42);
    let (r1, r2) = (c.review(&r).unwrap(), c.review(&r).unwrap());
    assert!(r1.created && !r2.created);
    assert_eq!(r1.index, r2.index);

    let v2dir = wordfreq("1.1.0");
    v2dir.write("src/NOTES.txt", b"counts words\n");
    let v2 = v2dir.load().unwrap();
    publish(&c, &v2);
    let d = c.definition(&v2.id).unwrap();
    assert_eq!(d.previous_approved.as_ref().map(|p| p.id), Some(v1.id));
    assert_eq!(d.check["name"], "wordfreq");
    assert!(c.definition(&v1.id).unwrap().previous_approved.is_none());

    // The bundle comes back byte for byte and with its identity.
    let (bytes, def) = c.bundle(&v2.id).unwrap();
    assert_eq!(bytes, bundle::pack(&v2));
    assert_eq!(def.id, v2.id);
}

/// A raw request: status and the `error` member of the JSON body.
pub(crate) fn raw(url: &str, method: &str, body: Option<&[u8]>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let resp = match (method, body) {
        ("POST", Some(b)) => agent
            .post(url)
            .header("content-type", "application/json")
            .send(b),
        _ => agent.get(url).call(),
    };
    let mut resp = resp.unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let msg = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or(text);
    (status, msg)
}

#[test]
fn bad_input_gets_a_4xx_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut cfg = config(&data, &[1, 2], 1);
    cfg.max_bundle_bytes = Some(200_000);
    let s = Server::start(&cfg);
    let c = s.client();
    let u = |p: &str| format!("{}{p}", s.url);
    let def = wordfreq("1.0.0").load().unwrap();
    let bundle_bytes = bundle::pack(&def);
    let good = Published::sign(&author(), ORIGIN, def.id, "wordfreq", "1.0.0", 1);

    let (st, msg) = raw(&u("/api/v1/definitions"), "POST", Some(b"{not json"));
    assert_eq!(st, 400);
    assert!(msg.contains("malformed request body"), "{msg}");

    let (st, msg) = raw(&u("/api/v1/reviews"), "POST", Some(&vec![b' '; 100_000]));
    assert_eq!(st, 413, "{msg}");
    assert!(msg.contains("size limit"), "{msg}");

    let mut forged = good.clone();
    forged.signature = key(9).sign(&forged.statement());
    let e = c.publish(&forged, &bundle_bytes).unwrap_err();
    assert!(
        matches!(&e, ClientError::Status { status: 400, message } if message.contains("does not verify")),
        "{e}"
    );

    let wrong_id = Published::sign(
        &author(),
        ORIGIN,
        DefinitionId([1; 32]),
        "wordfreq",
        "1.0.0",
        1,
    );
    let e = c.publish(&wrong_id, &bundle_bytes).unwrap_err();
    assert!(e.to_string().contains("the bundle's identity is"), "{e}");

    let wrong_name = Published::sign(&author(), ORIGIN, def.id, "other", "1.0.0", 1);
    let e = c.publish(&wrong_name, &bundle_bytes).unwrap_err();
    assert!(e.to_string().contains("the manifest says"), "{e}");

    // The same validation as `task-defs check`: a bundle holding a secret is refused.
    let bad = wordfreq("1.0.0");
    bad.write(
        "src/key.pem",
        b"-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n",
    );
    let (_, files) = {
        let d = Definition::load_dir(&bad.def());
        assert!(d.is_err());
        bundle::read_entries(&bundle_bytes).unwrap()
    };
    let mut files = files;
    files.insert(
        "src/key.pem".into(),
        std::fs::read(bad.path("src/key.pem")).unwrap(),
    );
    let mut tar = tar::Builder::new(Vec::new());
    for (p, b) in
        std::iter::once(("taskdef.toml".to_string(), bad.manifest().into_bytes())).chain(files)
    {
        let mut h = tar::Header::new_ustar();
        h.set_path(&p).unwrap();
        h.set_size(b.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        tar.append(&h, &b[..]).unwrap();
    }
    let e = c.publish(&good, &tar.into_inner().unwrap()).unwrap_err();
    assert!(
        matches!(&e, ClientError::Status { status: 422, message } if message.contains("invalid definition")),
        "{e}"
    );

    let body = serde_json::json!({"publication": good, "bundle": "%%%"}).to_string();
    let (st, msg) = raw(&u("/api/v1/definitions"), "POST", Some(body.as_bytes()));
    assert_eq!((st, msg.contains("not base64")), (400, true), "{msg}");

    let big = B64.encode(vec![0u8; 300_000]);
    let body = serde_json::json!({"publication": good, "bundle": big}).to_string();
    let (st, msg) = raw(&u("/api/v1/definitions"), "POST", Some(body.as_bytes()));
    assert_eq!(st, 413, "{msg}");

    publish(&c, &def);
    let outsider = Review::sign(&key(9), ORIGIN, ReviewAction::Approve, def.id, "", 1);
    let e = c.review(&outsider).unwrap_err();
    assert!(
        matches!(&e, ClientError::Status { status: 403, message } if message.contains("roster")),
        "{e}"
    );
    let no_reason = Review::sign(&key(1), ORIGIN, ReviewAction::Reject, def.id, " ", 1);
    let e = c.review(&no_reason).unwrap_err();
    assert!(e.to_string().contains("needs a reason"), "{e}");
    let unknown = Review::sign(
        &key(1),
        ORIGIN,
        ReviewAction::Approve,
        DefinitionId([3; 32]),
        "",
        1,
    );
    assert!(matches!(
        c.review(&unknown).unwrap_err(),
        ClientError::Status { status: 404, .. }
    ));

    for (path, want) in [
        ("/api/v1/entries?start=0&end=99", 400),
        ("/api/v1/entries?start=x", 400),
        ("/api/v1/proof/inclusion?index=5&size=1", 400),
        ("/api/v1/proof/consistency?old=2&new=1", 400),
        ("/api/v1/definitions/blake3:zz", 400),
        ("/api/v1/definitions?status=maybe", 400),
        ("/api/v1/nothing", 404),
    ] {
        let (st, msg) = raw(&u(path), "GET", None);
        assert_eq!(st, want, "{path}: {msg}");
        assert!(!msg.is_empty(), "{path}");
    }
    let missing = DefinitionId([4; 32]);
    let (st, msg) = raw(&u(&format!("/api/v1/definitions/{missing}")), "GET", None);
    assert_eq!(st, 404);
    assert!(msg.contains("never published"), "{msg}");
}

#[test]
fn proofs_from_the_api_verify_against_the_signed_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&config(&data, &[1], 1));
    let c = s.client();
    for v in ["1.0.0", "1.0.1", "1.0.2"] {
        publish(&c, &wordfreq(v).load().unwrap());
    }
    let cfg = trust(&data, &[1], 1, 300);
    let cp = Checkpoint::open(&c.checkpoint().unwrap(), &cfg.log_key).unwrap();
    assert_eq!(cp.size, 3);
    let leaves = c.entries(0, 3).unwrap();
    for (i, leaf) in leaves.iter().enumerate() {
        let proof = c.inclusion(i as u64, 3).unwrap();
        verify_inclusion(&leaf_hash(leaf), i as u64, 3, &proof, &cp.root).unwrap();
    }
    let old = root(&leaves.iter().map(|l| leaf_hash(l)).collect::<Vec<_>>(), 2).unwrap();
    let proof = c.consistency(2, 3).unwrap();
    verify_consistency(2, 3, &old, &cp.root, &proof).unwrap();
    let info = c.info().unwrap();
    assert_eq!(info.origin, "test.pinfold/registry");
    assert_eq!(info.tree_size, 3);
}

#[test]
fn a_tampered_database_row_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&config(&data, &[1, 2], 1));
    let c = s.client();
    let def = wordfreq("1.0.0").load().unwrap();
    publish(&c, &def);
    vote(&c, 1, ReviewAction::Reject, def.id, "too broad", unix_now());
    let cfg = trust(&data, &[1, 2], 1, 300);
    assert_eq!(status(&s, &cfg, None, &def.id), Status::Rejected);

    // Turn the logged rejection into an approval behind the running server's back.
    let db = rusqlite::Connection::open(data.join("registry.sqlite")).unwrap();
    let leaf: Vec<u8> = db
        .query_row("SELECT leaf FROM leaves WHERE idx = 1", [], |r| r.get(0))
        .unwrap();
    let forged = String::from_utf8(leaf)
        .unwrap()
        .replace("\"reject\"", "\"approve\"");
    db.execute(
        "UPDATE leaves SET leaf = ?1 WHERE idx = 1",
        [forged.as_bytes()],
    )
    .unwrap();
    drop(db);
    let e = verified_status(&c, cfg.clone(), None, &def.id, unix_now()).unwrap_err();
    assert!(
        matches!(e, SyncFailure::Verify(SyncError::EntriesMismatch)),
        "{e}"
    );
    // The web page's inclusion check notices too.
    let (st, page) = raw(&format!("{}/definitions/{}", s.url, def.id), "GET", None);
    assert_eq!(st, 200);
    assert!(page.contains("does NOT verify"), "{page}");
    drop(s);

    // And the server refuses to start over a log that no longer matches its checkpoint.
    let e = Server::try_start(&config(&data, &[1, 2], 1)).unwrap_err();
    assert!(matches!(e, RegistryError::Integrity(_)), "{e}");

    // A bundle edited in storage is refused on read, never served.
    let tmp2 = tempfile::tempdir().unwrap();
    let data2 = tmp2.path().join("data");
    let s = Server::start(&config(&data2, &[1], 1));
    publish(&s.client(), &def);
    let db = rusqlite::Connection::open(data2.join("registry.sqlite")).unwrap();
    let mut bytes = bundle::pack(&def);
    let n = bytes.len();
    bytes[n - 2000] ^= 1;
    db.execute("UPDATE bundles SET bytes = ?1", [&bytes])
        .unwrap();
    let e = s.client().bundle(&def.id).unwrap_err();
    assert!(matches!(e, ClientError::Status { status: 500, .. }), "{e}");
}

#[test]
fn rollback_fork_and_foreign_keys_are_detected_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let snapshot = tmp.path().join("snapshot");
    let state: PathBuf = tmp.path().join("client-state.json");
    let v1 = wordfreq("1.0.0").load().unwrap();
    let v2 = wordfreq("2.0.0").load().unwrap();
    let v3 = wordfreq("3.0.0").load().unwrap();
    {
        let s = Server::start(&config(&data, &[1], 1));
        publish(&s.client(), &v1);
    }
    let cfg = trust(&data, &[1], 1, 300);
    crate::harness::copy_tree(&data, &snapshot);
    {
        let s = Server::start(&config(&data, &[1], 1));
        publish(&s.client(), &v2);
        vote(&s.client(), 1, ReviewAction::Approve, v2.id, "", unix_now());
        assert_eq!(status(&s, &cfg, Some(&state), &v2.id), Status::Approved);
    }
    let saved = std::fs::read(&state).unwrap();

    // The server comes back from an old copy of its data directory: a rollback.
    let old = Server::start(&config(&snapshot, &[1], 1));
    let e =
        verified_status(&old.client(), cfg.clone(), Some(&state), &v2.id, unix_now()).unwrap_err();
    assert!(
        matches!(
            e,
            SyncFailure::Verify(SyncError::Rollback {
                verified: 3,
                offered: 1
            })
        ),
        "{e}"
    );
    assert!(e.is_verification_failure());
    assert_eq!(std::fs::read(&state).unwrap(), saved, "evidence kept");

    // It grows a different history past the verified size: a fork.
    publish(&old.client(), &v3);
    vote(
        &old.client(),
        1,
        ReviewAction::Approve,
        v3.id,
        "",
        unix_now(),
    );
    let e =
        verified_status(&old.client(), cfg.clone(), Some(&state), &v3.id, unix_now()).unwrap_err();
    assert!(
        matches!(e, SyncFailure::Verify(SyncError::Fork { .. })),
        "{e}"
    );
    drop(old);

    // A different log (new key) at the registry's address is refused outright.
    let other = tmp.path().join("other");
    let s = Server::start(&config(&other, &[1], 1));
    publish(&s.client(), &v1);
    let e =
        verified_status(&s.client(), cfg.clone(), Some(&state), &v1.id, unix_now()).unwrap_err();
    assert!(
        matches!(e, SyncFailure::Verify(SyncError::Checkpoint(_))),
        "{e}"
    );

    // The real registry, restarted, still verifies against the stored state.
    drop(s);
    let s = Server::start(&config(&data, &[1], 1));
    assert_eq!(status(&s, &cfg, Some(&state), &v2.id), Status::Approved);
}

#[test]
fn a_stale_or_frozen_view_is_refused_and_checkpoints_are_resigned() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut c = config(&data, &[1], 1);
    c.checkpoint_interval = Some(Duration::from_secs(1));
    let s = Server::start(&c);
    let def = wordfreq("1.0.0").load().unwrap();
    publish(&s.client(), &def);
    let cfg = trust(&data, &[1], 1, 60);
    let later = unix_now() + 3600;
    let e = verified_status(&s.client(), cfg.clone(), None, &def.id, later).unwrap_err();
    assert!(
        matches!(
            e,
            SyncFailure::Stale(StatusError::Stale {
                max_age_secs: 60,
                ..
            })
        ),
        "{e}"
    );

    let t0 = Checkpoint::open(&s.client().checkpoint().unwrap(), &cfg.log_key)
        .unwrap()
        .time;
    std::thread::sleep(Duration::from_millis(2500));
    let t1 = Checkpoint::open(&s.client().checkpoint().unwrap(), &cfg.log_key)
        .unwrap()
        .time;
    assert!(t1 > t0, "checkpoint re-signed: {t0} -> {t1}");
    assert_eq!(
        client::verified_status(&s.client(), cfg, None, &def.id, unix_now())
            .unwrap()
            .status,
        Status::Pending
    );
}

#[test]
fn the_review_pages_render_and_escape_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&config(&data, &[1], 1));
    let c = s.client();
    let v1 = wordfreq("1.0.0").load().unwrap();
    publish(&c, &v1);
    vote(&c, 1, ReviewAction::Approve, v1.id, "", unix_now());
    let v2dir = wordfreq("1.1.0");
    v2dir.edit(
        "Counts word frequencies in the input text files",
        "Counts <script>alert(1)</script> words",
    );
    let v2 = v2dir.load().unwrap();
    publish(&c, &v2);

    let resp = ureq::get(&format!("{}/", s.url)).call().unwrap();
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let (st, queue) = raw(&format!("{}/", s.url), "GET", None);
    assert_eq!(st, 200);
    assert!(queue.contains("id=\"queue\""), "{queue}");
    assert!(queue.contains(&v2.id.to_string()));

    let (st, page) = raw(&format!("{}/definitions/{}", s.url, v2.id), "GET", None);
    assert_eq!(st, 200);
    assert!(!page.contains("<script>alert"), "unescaped author text");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("wasi_snapshot_preview1::fd_write"), "imports");
    assert!(page.contains(&format!(
        "task-defs review approve {} --registry {} --key &lt;YOUR_KEY&gt;",
        v2.id, s.url
    )));
    assert!(page.contains("id=\"diff\""));
    assert!(page.contains("-version = &quot;1.0.0&quot;"), "diff");
    assert!(page.contains("+version = &quot;1.1.0&quot;"), "diff");
    assert!(page.contains("proof of"));
    assert!(page.contains("<span class=\"approved\">verifies</span>"));

    vote(&c, 1, ReviewAction::Revoke, v1.id, "<b>bad</b>", unix_now());
    let (_, revs) = raw(&format!("{}/revocations", s.url), "GET", None);
    assert!(revs.contains("&lt;b&gt;bad&lt;/b&gt;"));
    let (st, _) = raw(
        &format!("{}/definitions/{}", s.url, DefinitionId([0; 32])),
        "GET",
        None,
    );
    assert_eq!(st, 404);
}

#[test]
fn the_first_start_creates_a_private_log_key_and_later_starts_reuse_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let k1 = Registry::open(&config(&data, &[1], 1)).unwrap().log_key();
    let mode = std::fs::metadata(data.join("log.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let pubtext = std::fs::read_to_string(data.join("log.pub")).unwrap();
    assert_eq!(pubtext, format!("{k1}\n"));
    let k2 = Registry::open(&config(&data, &[1], 1)).unwrap().log_key();
    assert_eq!(k1, k2);

    // The roster from registry.toml, overridden by flags; the origin cannot change.
    std::fs::write(
        data.join("registry.toml"),
        format!(
            "threshold = 2\n[[reviewers]]\nkey = \"{}\"\nname = \"ann\"\n[[reviewers]]\nkey = \"{}\"\n",
            key(1).public_key(),
            key(2).public_key()
        ),
    )
    .unwrap();
    let from_file = RegistryConfig {
        data_dir: data.clone(),
        ..RegistryConfig::default()
    };
    let r = Registry::open(&from_file).unwrap();
    assert_eq!(r.settings().threshold, 2);
    assert_eq!(r.settings().roster.len(), 2);
    assert_eq!(r.settings().origin, "test.pinfold/registry");
    drop(r);
    let r = Registry::open(&config(&data, &[3], 1)).unwrap();
    assert_eq!(r.settings().roster[0].key, key(3).public_key());
    drop(r);
    let mut moved = config(&data, &[1], 1);
    moved.origin = Some("elsewhere".into());
    assert!(matches!(
        Registry::open(&moved).unwrap_err(),
        RegistryError::Config(m) if m.contains("cannot become")
    ));
    let mut bad = config(&data, &[1], 1);
    bad.threshold = Some(2);
    assert!(Registry::open(&bad).is_err());
}

#[test]
fn a_staging_approval_replayed_after_a_newer_rejection_does_not_flip_rejected_to_approved() {
    const STAGING: &str = "staging.pinfold/registry";
    let tmp = tempfile::tempdir().unwrap();
    let prod_data = tmp.path().join("prod");
    let staging_data = tmp.path().join("staging");
    let prod = Server::start(&config(&prod_data, &[1], 1));
    let staging = Server::start(&RegistryConfig {
        origin: Some(STAGING.into()),
        ..config(&staging_data, &[1], 1)
    });
    let def = wordfreq("1.0.0").load().unwrap();
    publish(&prod.client(), &def);
    let now = unix_now();
    let p = Published::sign(&author(), STAGING, def.id, "wordfreq", "1.0.0", now);
    staging.client().publish(&p, &bundle::pack(&def)).unwrap();
    // The reviewer approves on staging, then rejects on the real registry, later.
    let approval = Review::sign(
        &key(1),
        STAGING,
        ReviewAction::Approve,
        def.id,
        "",
        now - 100,
    );
    staging.client().review(&approval).unwrap();
    vote(
        &prod.client(),
        1,
        ReviewAction::Reject,
        def.id,
        "bad",
        now - 10,
    );
    let cfg = trust(&prod_data, &[1], 1, 300);
    assert_eq!(status(&prod, &cfg, None, &def.id), Status::Rejected);

    // Someone replays the staging approval into the real log: refused, naming the origin.
    let e = prod.client().review(&approval).unwrap_err();
    assert!(
        matches!(&e, ClientError::Status { status: 400, message } if message.contains(STAGING)),
        "{e}"
    );
    assert_eq!(status(&prod, &cfg, None, &def.id), Status::Rejected);

    // The same class within one log: an approval signed before the rejection but submitted
    // after it is logged (the attempt is on record) and stale: it never counts.
    let held_back = Review::sign(&key(1), ORIGIN, ReviewAction::Approve, def.id, "", now - 50);
    let r = prod.client().review(&held_back).unwrap();
    let v = verified_status(&prod.client(), cfg.clone(), None, &def.id, unix_now()).unwrap();
    assert_eq!(v.status, Status::Rejected);
    assert_eq!(v.details.stale.len(), 1);
    assert_eq!(v.details.stale[0].index, r.index);
    assert_eq!(v.details.stale[0].outranked_by, now - 10);
    // The server's own view agrees, for the review page.
    let detail = prod.client().definition(&def.id).unwrap();
    assert_eq!(detail.summary.status, Status::Rejected);
    assert_eq!(detail.report.unwrap().stale, v.details.stale);
}

#[test]
fn authors_cannot_approve_their_own_publications() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&config(&data, &[1, 2], 1));
    let c = s.client();
    let cfg = trust(&data, &[1, 2], 1, 300);
    // Reviewer 1 publishes version 1.0.0 and approves it: that approval does not count.
    let v1 = wordfreq("1.0.0").load().unwrap();
    let p = Published::sign(&key(1), ORIGIN, v1.id, "wordfreq", "1.0.0", unix_now());
    c.publish(&p, &bundle::pack(&v1)).unwrap();
    vote(&c, 1, ReviewAction::Approve, v1.id, "", unix_now());
    assert_eq!(status(&s, &cfg, None, &v1.id), Status::Pending);
    // Nor does their approval of a later version of the same name by someone else.
    let v2 = wordfreq("1.1.0").load().unwrap();
    publish(&c, &v2);
    vote(&c, 1, ReviewAction::Approve, v2.id, "", unix_now());
    assert_eq!(status(&s, &cfg, None, &v2.id), Status::Pending);
    let v = verified_status(&c, cfg.clone(), None, &v2.id, unix_now()).unwrap();
    assert_eq!(v.details.approvals, 0);
    assert!(v.details.votes[0].self_approval);
    assert!(v.details.authors.contains(&key(1).public_key()));
    // Another reviewer's approval counts.
    vote(&c, 2, ReviewAction::Approve, v2.id, "", unix_now());
    assert_eq!(status(&s, &cfg, None, &v2.id), Status::Approved);
    // The server's own view (what `review list` and the pages show) agrees.
    assert_eq!(c.definition(&v1.id).unwrap().summary.approvals, 0);
    assert_eq!(c.definition(&v2.id).unwrap().summary.approvals, 1);
}

#[test]
fn statement_times_beyond_the_bound_are_refused_not_clamped() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&config(&data, &[1], 1));
    let c = s.client();
    let def = wordfreq("1.0.0").load().unwrap();
    publish(&c, &def);
    for t in [unix_now() + 2 * 86_400, 1 << 63, u64::MAX] {
        let r = Review::sign(&key(1), ORIGIN, ReviewAction::Approve, def.id, "", t);
        let e = c.review(&r).unwrap_err();
        assert!(
            matches!(e, ClientError::Status { status: 400, .. }),
            "{t}: {e}"
        );
        let v2 = wordfreq("2.0.0").load().unwrap();
        let p = Published::sign(&author(), ORIGIN, v2.id, "wordfreq", "2.0.0", t);
        let e = c.publish(&p, &bundle::pack(&v2)).unwrap_err();
        assert!(
            matches!(e, ClientError::Status { status: 400, .. }),
            "{t}: {e}"
        );
    }
    // Within the bound is fine, and publications are bound to the origin too.
    let r = Review::sign(
        &key(1),
        ORIGIN,
        ReviewAction::Approve,
        def.id,
        "",
        unix_now() + 3600,
    );
    c.review(&r).unwrap();
    let v3 = wordfreq("3.0.0").load().unwrap();
    let p = Published::sign(
        &author(),
        "elsewhere",
        v3.id,
        "wordfreq",
        "3.0.0",
        unix_now(),
    );
    let e = c.publish(&p, &bundle::pack(&v3)).unwrap_err();
    assert!(matches!(e, ClientError::Status { status: 400, .. }), "{e}");
}

#[test]
fn status_and_review_show_explain_self_approvals_and_stale_statements() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&config(&data, &[1, 2], 1));
    let c = s.client();
    let def = wordfreq("1.0.0").load().unwrap();
    let p = Published::sign(&key(1), ORIGIN, def.id, "wordfreq", "1.0.0", unix_now());
    c.publish(&p, &bundle::pack(&def)).unwrap();
    let now = unix_now();
    vote(&c, 1, ReviewAction::Approve, def.id, "", now);
    vote(&c, 2, ReviewAction::Reject, def.id, "no", now);
    // Reviewer 2's approval signed before their rejection, submitted after it.
    vote(&c, 2, ReviewAction::Approve, def.id, "", now - 60);
    let log_key = std::fs::read_to_string(data.join("log.pub")).unwrap();
    let status = |json: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_task-defs"));
        cmd.args(["status", &def.id.to_string(), "--registry", &s.url])
            .args(["--log-key", log_key.trim_end(), "--threshold", "1"])
            .args(["--reviewer", &format!("one={}", key(1).public_key())])
            .args(["--reviewer", &key(2).public_key().to_string()]);
        if json {
            cmd.arg("--json");
        }
        let o = cmd.output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let text = status(false);
    assert!(text.starts_with("rejected (verified"), "{text}");
    assert!(text.contains("0 of 1 required trusted approvals"), "{text}");
    assert!(
        text.contains(&format!("one ({}) approve", key(1).public_key()))
            && text.contains("self-approval, not counted"),
        "{text}"
    );
    assert!(text.contains("stale, never counts: entry 3"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&status(true)).unwrap();
    assert_eq!(json["status"], "rejected");
    assert_eq!(json["approvals"], 0);
    assert_eq!(
        json["self_approvals"],
        serde_json::json!([key(1).public_key().to_string()])
    );
    assert_eq!(json["stale"][0]["index"], 3);
    assert_eq!(json["stale"][0]["outranked_by"], now);
    assert_eq!(json["stale_total"], 1);
    // `review show` marks the same statements from the registry's own view.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_task-defs"))
        .args(["review", "show", &def.id.to_string(), "--registry", &s.url])
        .output()
        .unwrap();
    let shown = String::from_utf8(o.stdout).unwrap();
    assert!(shown.contains("entry 1: reviewer1"), "{shown}");
    assert!(shown.contains("[self-approval"), "{shown}");
    assert!(
        shown.contains("entry 3: reviewer2") && shown.contains("[stale"),
        "{shown}"
    );
    // The review page shows the same judgements next to each statement, and names the
    // authors whose approvals never count.
    let (st, page) = raw(&format!("{}/definitions/{}", s.url, def.id), "GET", None);
    assert_eq!(st, 200);
    assert!(
        page.contains("the author&#39;s own key: does not count towards k")
            || page.contains("the author's own key: does not count towards k"),
        "{page}"
    );
    assert!(
        page.contains("stale: signed before this reviewer"),
        "{page}"
    );
    assert!(page.contains("id=\"authors\""), "{page}");
    assert!(page.contains("1 stale statement(s)"), "{page}");
}

#[test]
fn a_verdict_signed_on_a_machine_whose_clock_is_behind_is_not_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&config(&data, &[1], 1));
    let c = s.client();
    let def = wordfreq("1.0.0").load().unwrap();
    publish(&c, &def);
    // An approval from another machine whose clock runs an hour ahead.
    let ahead = unix_now() + 3600;
    vote(&c, 1, ReviewAction::Approve, def.id, "", ahead);
    let cfg = trust(&data, &[1], 1, 300);
    assert_eq!(status(&s, &cfg, None, &def.id), Status::Approved);
    // `review reject` here signs just after that statement, so it is the verdict.
    let key_file = tmp.path().join("r1.key");
    std::fs::write(&key_file, key(1).to_file_text()).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_task-defs"))
        .args([
            "review",
            "reject",
            &def.id.to_string(),
            "--registry",
            &s.url,
        ])
        .arg("--key")
        .arg(&key_file)
        .args(["--reason", "found a problem"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains(&format!("for log {ORIGIN}")), "{out}");
    let v = verified_status(&c, cfg, None, &def.id, unix_now()).unwrap();
    assert_eq!(v.status, Status::Rejected);
    assert_eq!(v.details.votes[0].time, ahead + 1);
    assert!(v.details.stale.is_empty());
}
