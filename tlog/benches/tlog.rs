//! Benchmarks of the transparency log's hot paths against their goals: status lookup
//! (≤ 10 µs), inclusion-proof verification (≤ 100 µs), syncing 100,000 entries (≤ 2 s),
//! and the witness path: a witness's `add-checkpoint` and a client's 2-of-3 cosignature
//! check (each ≤ 1 ms, so witnessing never limits a registry's write rate).

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use pinfold_tlog::*;
use task_defs::DefinitionId;

const ORIGIN: &str = "registry.pinfold.example/log";
const T0: u64 = 1_800_000_000;
const ENTRIES: u64 = 100_000;

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

fn def(i: u64) -> DefinitionId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&i.to_be_bytes());
    DefinitionId(b)
}

/// 100,000 leaves: 60,000 publications, 40,000 approvals by three trusted reviewers.
fn log() -> (Vec<Vec<u8>>, MemoryTree, Vec<u8>) {
    let author = key(100);
    let reviewers = [key(1), key(2), key(3)];
    let mut leaves = Vec::with_capacity(ENTRIES as usize);
    for i in 0..ENTRIES {
        let e = if i % 5 < 3 {
            Entry::Published(Published::sign(
                &author,
                ORIGIN,
                def(i),
                "bench",
                "1.0.0",
                T0,
            ))
        } else {
            let r = &reviewers[(i % 3) as usize];
            Entry::Review(Review::sign(
                r,
                ORIGIN,
                ReviewAction::Approve,
                def(i - 3),
                "",
                T0,
            ))
        };
        leaves.push(e.to_leaf());
    }
    let tree = MemoryTree::from_leaf_hashes(leaves.iter().map(|l| leaf_hash(l)));
    let signer = NoteSigner::new(ORIGIN, key(200)).unwrap();
    let cp = Checkpoint {
        origin: ORIGIN.into(),
        size: ENTRIES,
        root: tree.root(),
        time: T0,
    }
    .sign(&signer)
    .unwrap();
    (leaves, tree, cp)
}

fn config() -> VerifierConfig {
    VerifierConfig {
        origin: ORIGIN.into(),
        log_key: NoteSigner::new(ORIGIN, key(200)).unwrap().verifier(),
        reviewers: (1..=3).map(|n| key(n).public_key()).collect(),
        threshold: 1,
        max_age_secs: 3600,
        witnesses: Default::default(),
    }
}

fn benches(c: &mut Criterion) {
    let (leaves, tree, cp) = log();

    let mut v = Verifier::new(config()).unwrap();
    v.update(&cp, &leaves, &[], T0).unwrap();
    assert_eq!(v.status(&def(0), T0).unwrap(), Status::Approved);
    c.bench_function("status lookup", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i = (i + 7919) % ENTRIES;
            black_box(v.status(black_box(&def(i)), T0).unwrap())
        })
    });

    let root = tree.root();
    let index = 54_321;
    let proof = inclusion_proof(&tree, index, ENTRIES).unwrap();
    let lh = leaf_hash(&leaves[index as usize]);
    c.bench_function("inclusion proof verification (100k tree)", |b| {
        b.iter(|| verify_inclusion(black_box(&lh), index, ENTRIES, &proof, &root).unwrap())
    });
    c.bench_function("inclusion proof generation (100k memory tree)", |b| {
        b.iter(|| inclusion_proof(&tree, black_box(index), ENTRIES).unwrap())
    });

    // Witnessing: a witness that cosigned the 100k tree minus 10 leaves checks the log's
    // signature and a consistency proof, and cosigns; a client checks 3 cosignatures.
    let signer = NoteSigner::new(ORIGIN, key(200)).unwrap();
    let cosigners: Vec<Cosigner> = (0..3)
        .map(|n| Cosigner::new(&format!("w{n}.example"), key(210 + n)).unwrap())
        .collect();
    let old = ENTRIES - 10;
    let mut state = witness::WitnessState::new();
    state.insert(
        ORIGIN.to_string(),
        witness::WitnessedLog {
            size: old,
            root: root_of(&tree, old),
            cosigned_at: T0,
        },
    );
    let request = AddCheckpoint {
        old,
        proof: consistency_proof(&tree, old, ENTRIES).unwrap(),
        checkpoint: cp.clone(),
    };
    let w = Witness::new(cosigners[0].clone(), [signer.verifier()], state);
    c.bench_function("witness add-checkpoint (100k tree, +10 leaves)", |b| {
        b.iter(|| {
            let mut w = w.clone();
            black_box(w.add_checkpoint(black_box(&request), T0).unwrap())
        })
    });
    let mut note = Note::parse(&cp).unwrap();
    for w in &cosigners {
        let line = w.cosign(&note.text, T0);
        note.signatures.push(line);
    }
    let policy = WitnessPolicy::new(cosigners.iter().map(Cosigner::verifier), 2).unwrap();
    c.bench_function("client cosignature check (3 witnesses, 2 required)", |b| {
        b.iter(|| black_box(policy.check(black_box(&note), T0).unwrap()))
    });

    let mut g = c.benchmark_group("sync");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("sync 100k entries from empty", |b| {
        b.iter(|| {
            let mut v = Verifier::new(config()).unwrap();
            v.update(&cp, &leaves, &[], T0).unwrap();
            v
        })
    });
    // The same sync, timed in CPU seconds of the whole process (all threads): on a
    // shared machine wall time mostly measures the neighbours, CPU time the work.
    g.bench_function("sync 100k entries from empty (process cpu time)", |b| {
        b.iter_custom(|iters| {
            let start = process_cpu_time();
            for _ in 0..iters {
                let mut v = Verifier::new(config()).unwrap();
                black_box(v.update(&cp, &leaves, &[], T0).unwrap());
            }
            process_cpu_time() - start
        })
    });
    g.finish();
}

fn root_of(tree: &MemoryTree, size: u64) -> Hash {
    pinfold_tlog::root(tree, size).unwrap()
}

/// User plus system CPU time of this process so far, from `/proc/self/stat` (Linux; clock
/// ticks, assumed 100 per second as on every mainstream kernel).
fn process_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

criterion_group!(tlog, benches);
criterion_main!(tlog);
