//! Benchmarks of the registry over HTTP on loopback: a durable (fsync'd) reviewer statement
//! from request to acknowledgement, and a verifying client syncing 100,000 entries from
//! empty (checkpoint, 25 pages of entries, verification) — the HTTP share of the ≤ 2 s goal.

#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use pinfold_registry::api::RosterEntry;
use pinfold_registry::client::{Client, sync};
use pinfold_registry::{Registry, RegistryConfig, unix_now};
use pinfold_tlog::*;
use task_defs::{Definition, DefinitionId, bundle};

const ORIGIN: &str = "bench.pinfold/registry";
const ENTRIES: u64 = 100_000;

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

fn config(dir: &std::path::Path) -> RegistryConfig {
    RegistryConfig {
        data_dir: dir.to_path_buf(),
        origin: Some(ORIGIN.into()),
        reviewers: (1..=3)
            .map(|n| RosterEntry {
                key: key(n).public_key(),
                name: None,
            })
            .collect(),
        threshold: Some(1),
        ..RegistryConfig::default()
    }
}

/// Serves `registry` on a loopback port from a background runtime; returns the base URL.
fn serve(registry: Arc<Registry>) -> (String, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(pinfold_registry::serve(
        listener,
        registry,
        std::future::pending(),
    ));
    (url, rt)
}

/// A data directory holding `ENTRIES` leaves like the tlog bench's (60% publications, 40%
/// approvals), written in one transaction with a checkpoint signed by the log key.
fn big_log(dir: &std::path::Path) {
    drop(Registry::open(&config(dir)).unwrap());
    let log_key =
        SecretKey::from_file_text(&std::fs::read_to_string(dir.join("log.key")).unwrap()).unwrap();
    let author = key(100);
    let mut db = rusqlite::Connection::open(dir.join("registry.sqlite")).unwrap();
    let tx = db.transaction().unwrap();
    let mut tree = MemoryTree::new();
    for i in 0..ENTRIES {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&(if i % 5 < 3 { i } else { i - 3 }).to_be_bytes());
        let e = if i % 5 < 3 {
            Entry::Published(Published::sign(
                &author,
                ORIGIN,
                DefinitionId(id),
                "bench",
                "1.0.0",
                1,
            ))
        } else {
            let r = key((i % 3) as u8 + 1);
            Entry::Review(Review::sign(
                &r,
                ORIGIN,
                ReviewAction::Approve,
                DefinitionId(id),
                "",
                1,
            ))
        };
        let leaf = e.to_leaf();
        tree.push(&leaf);
        tx.execute(
            "INSERT INTO leaves (idx, leaf) VALUES (?1, ?2)",
            rusqlite::params![i as i64, leaf],
        )
        .unwrap();
    }
    let note = Checkpoint {
        origin: ORIGIN.into(),
        size: ENTRIES,
        root: tree.root(),
        time: unix_now(),
    }
    .sign(&NoteSigner::new(ORIGIN, log_key).unwrap())
    .unwrap();
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'checkpoint'",
        [String::from_utf8(note).unwrap()],
    )
    .unwrap();
    tx.commit().unwrap();
}

fn benches(c: &mut Criterion) {
    // Durable write latency: one statement, committed with fsync before the answer.
    let tmp = tempfile::tempdir().unwrap();
    let registry = Arc::new(Registry::open(&config(tmp.path())).unwrap());
    let (url, _rt) = serve(registry);
    let client = Client::new(&url);
    let def = Definition::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../task-defs/examples/wordfreq"
    )))
    .unwrap();
    let p = Published::sign(&key(100), ORIGIN, def.id, "wordfreq", "1.0.0", 1);
    client.publish(&p, &bundle::pack(&def)).unwrap();
    let mut t = 0u64;
    c.bench_function("review over http, durable (fsync) ack", |b| {
        b.iter(|| {
            t += 1;
            let r = Review::sign(&key(1), ORIGIN, ReviewAction::Approve, def.id, "", t);
            client.review(&r).unwrap()
        })
    });

    let big = tempfile::tempdir().unwrap();
    big_log(big.path());
    let registry = Arc::new(Registry::open(&config(big.path())).unwrap());
    let log_key = registry.note_verifier();
    let (url, _rt2) = serve(registry);
    let client = Client::new(&url);
    let cfg = VerifierConfig {
        origin: ORIGIN.into(),
        log_key,
        reviewers: (1..=3).map(|n| key(n).public_key()).collect(),
        threshold: 1,
        max_age_secs: 3600,
        witnesses: Default::default(),
    };
    let mut g = c.benchmark_group("http sync");
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    g.bench_function("sync 100k entries over http from empty", |b| {
        b.iter(|| {
            let mut v = Verifier::new(cfg.clone()).unwrap();
            sync(&client, &mut v, unix_now()).unwrap();
            assert_eq!(v.size(), ENTRIES);
            v
        })
    });
    g.bench_function("fetch 100k entries over http (no verification)", |b| {
        b.iter(|| client.entries(0, ENTRIES).unwrap().len())
    });
    g.finish();
}

criterion_group!(registry, benches);
criterion_main!(registry);
