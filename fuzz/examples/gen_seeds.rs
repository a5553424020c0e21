//! Writes the committed seed corpus, `fuzz/seeds/<target>/`, from real data: the example
//! manifests and bundles, job-protocol messages as the codec writes them, a signed ad and
//! receipt, signed checkpoints, log leaves and registry requests.
//!
//! Run from the repository root after changing a format (the output is deterministic, so
//! an unchanged format gives an unchanged corpus):
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds
//! ```
//!
//! Seeds only start the fuzzers off in the right places: what each target finds beyond
//! them stays in its working corpus under the target directory, never in the repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use pinfold_fuzz::{
    ORIGIN, TINY_MANIFEST, WITNESSED_SIZE, cosigner, encode_request, encode_response, honest_tree,
    key, log_signer, provider_keypair, requestor_peer, tiny_files, transfer_blob, verifier_config,
};
use pinfold_net::protocol::{
    Accept, ErrorReply, JobState, OfferReply, OutcomeSummary, OutputEntry, RejectReason,
    ResultReply,
};
use pinfold_net::{
    BlobId, BlobRef, ExecutorAd, InputEntry, Isolation, JobId, JobResult, Offer, ProviderAd,
    Receipt, ReceiptBody, ReceiptUsage, Request, ResourceCaps, ResourceNeeds, Response, RunStatus,
    SecretValue, SignedAd,
};
use pinfold_registry::api::PublishRequest;
use pinfold_tlog::{
    AddCheckpoint, Checkpoint, Entry, MemoryTree, Note, Published, Review, ReviewAction, Verifier,
    consistency_proof,
};
use task_defs::{Definition, bundle};

/// Seeds above this size slow every fuzzer iteration that mutates them down.
const MAX_SEED: usize = 64 * 1024;

struct Seeds {
    root: PathBuf,
}

impl Seeds {
    fn put(&self, target: &str, name: &str, bytes: impl AsRef<[u8]>) {
        let bytes = bytes.as_ref();
        assert!(
            bytes.len() <= MAX_SEED,
            "seed {target}/{name} is {} bytes",
            bytes.len()
        );
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("create the seed directory");
        std::fs::write(dir.join(name), bytes).expect("write a seed");
    }
}

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = repo.join("fuzz/seeds");
    // Start from nothing, so a seed that is no longer generated does not linger.
    let _ = std::fs::remove_dir_all(&root);
    let s = Seeds { root };

    let tiny = Definition::from_parts(TINY_MANIFEST.into(), tiny_files())
        .expect("the tiny definition validates");
    let examples = repo.join("task-defs/examples");
    let mut defs = vec![("tiny".to_string(), tiny.clone())];
    for name in ["busybox-sha256sum", "nbody", "sha256sum", "wordfreq"] {
        let dir = examples.join(name);
        let text = std::fs::read(dir.join("taskdef.toml")).expect("read an example manifest");
        s.put("manifest", &format!("{name}.toml"), &text);
        defs.push((
            name.to_string(),
            Definition::load_dir(&dir).expect("the example validates"),
        ));
    }
    manifests(&s);
    for (name, def) in &defs {
        let packed = bundle::pack(def);
        if packed.len() <= MAX_SEED {
            s.put("bundle", &format!("{name}.tar"), packed);
        }
    }
    net(&s, &tiny);
    tlog(&s, &tiny);
    witness(&s);
    registry(&s, &tiny);
    println!("seeds written to fuzz/seeds/");
}

fn manifests(s: &Seeds) {
    s.put("manifest", "tiny.toml", TINY_MANIFEST);
    s.put(
        "manifest",
        "tiny-with-params",
        format!("{TINY_MANIFEST}\0greeting=hi\nother=1\n"),
    );
    // Every param type, with placeholders in the arguments.
    let params = TINY_MANIFEST.replace(
        "args = [\"{greeting}\"]",
        "args = [\"{greeting}\", \"--n={count}\", \"{fast}\", \"{mode}\"]",
    ) + r#"
[params.count]
type = "int"
min = 0
max = 10
default = 3

[params.fast]
type = "bool"
default = false

[params.mode]
type = "enum"
allowed = ["a", "b"]
default = "a"
"#;
    let mut files = tiny_files();
    files.insert("README.md".into(), b"# tiny\n".to_vec());
    Definition::from_parts(params.clone(), files).expect("the all-param-types manifest validates");
    s.put(
        "manifest",
        "all-param-types",
        format!("{params}\0count=7\nfast=true\nmode=b\n"),
    );
}

fn blob(n: u8) -> BlobId {
    BlobId::of(&[n])
}

fn receipt(def: &Definition) -> Receipt {
    Receipt::sign(
        ReceiptBody {
            job_id: JobId("job-1".into()),
            definition: def.id.to_string(),
            inputs: vec![InputEntry {
                name: "in.txt".into(),
                size: 1,
                blake3: blob(1),
            }],
            params: BTreeMap::from([("greeting".into(), "hi".into())]),
            outputs: blob(2).to_string(),
            status: RunStatus::Succeeded,
            exit_code: Some(0),
            usage: ReceiptUsage {
                wall_us: 1234,
                fuel: Some(99),
                peak_memory: 65_536,
            },
            provider: String::new(),
            requestor: requestor_peer().to_base58(),
            started_ms: 1_700_000_000_000,
            ended_ms: 1_700_000_000_100,
        },
        &provider_keypair(),
    )
    .expect("the receipt signs")
}

fn net(s: &Seeds, def: &Definition) {
    let offer = Offer {
        definition: def.id.to_string(),
        bundle: Some(BlobRef {
            id: blob(3),
            size: 300,
        }),
        params: BTreeMap::from([("greeting".into(), "hi".into())]),
        inputs: vec![InputEntry {
            name: "in.txt".into(),
            size: 1,
            blake3: blob(1),
        }],
        needs: ResourceNeeds {
            memory_bytes: 16 << 20,
            input_bytes: 1,
            output_bytes: 1 << 20,
            timeout_secs: 1,
            min_isolation: Some(Isolation::SandboxedRuntime),
        },
        secrets: vec!["token".into()],
        secret_values: BTreeMap::from([("token".into(), SecretValue::new(b"s3cret".to_vec()))]),
        registry_size: Some(3),
    };
    let job = JobId("job-1".into());
    let requests = [
        ("offer", Request::Offer(offer)),
        (
            "status",
            Request::Status {
                job_id: job.clone(),
            },
        ),
        (
            "result",
            Request::Result {
                job_id: job.clone(),
            },
        ),
        (
            "cancel",
            Request::Cancel {
                job_id: job.clone(),
            },
        ),
    ];
    for (name, r) in &requests {
        s.put("net_codec", &format!("request-{name}"), encode_request(r));
    }
    let r = receipt(def);
    let result = JobResult {
        job_id: job.clone(),
        outcome: OutcomeSummary {
            status: RunStatus::Succeeded,
            reason: None,
            exit_code: Some(0),
            stdout: BlobRef {
                id: blob(4),
                size: 3,
            },
            stdout_truncated: false,
            stderr: BlobRef {
                id: blob(5),
                size: 0,
            },
            stderr_truncated: false,
            outputs: r.body.outputs.clone(),
            dropped: 0,
            usage: r.body.usage.clone(),
        },
        files: vec![OutputEntry {
            path: "out/result.txt".into(),
            size: 3,
            blake3: blob(6),
        }],
        receipt: r.clone(),
    };
    let responses = [
        (
            "accept",
            Response::Offer(OfferReply::Accept(Accept {
                job_id: job.clone(),
                fetch: vec![blob(1), blob(3)],
                hold_secs: 60,
            })),
        ),
        (
            "reject",
            Response::Offer(OfferReply::Reject {
                reason: RejectReason::OverCaps("memory".into()),
            }),
        ),
        ("status", Response::Status(JobState::Running)),
        (
            "pending",
            Response::Result(ResultReply::Pending(JobState::Queued)),
        ),
        (
            "done",
            Response::Result(ResultReply::Done(Box::new(result))),
        ),
        ("cancelled", Response::Cancelled(true)),
        ("error", Response::Error(ErrorReply::Invalid("bad".into()))),
    ];
    for (name, r) in &responses {
        s.put("net_codec", &format!("response-{name}"), encode_response(r));
    }

    let ad = ProviderAd {
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
        free_slots: 3,
        bundles: vec![def.id.to_string()],
        timestamp: 1_700_000_000,
        seq: 42,
        addrs: vec![
            "/ip4/203.0.113.7/udp/4001/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
                .parse()
                .expect("a valid multiaddr"),
        ],
    };
    let signed = SignedAd::sign(ad, &provider_keypair()).expect("the ad signs");
    s.put("net_ad", "signed-ad.json", signed.to_bytes());

    s.put("net_receipt", "receipt.json", r.to_json());

    // Blob transfer: an OK header for the fixed blob, its CV list, then control bytes.
    let data = transfer_blob();
    let id = BlobId::of(&data);
    let mut ok = vec![0u8];
    ok.extend_from_slice(&(data.len() as u64).to_be_bytes());
    for cv in pinfold_net::tree::cvs_of(&data) {
        ok.extend_from_slice(&cv);
    }
    s.put("net_transfer", "ok-with-cv-list", &ok);
    let mut flipped = ok.clone();
    flipped.extend_from_slice(&70_000u32.to_le_bytes());
    flipped.push(0x10);
    s.put("net_transfer", "ok-flip-group-1", &flipped);
    let mut req = b"PFB1".to_vec();
    req.extend_from_slice(&id.0);
    req.extend_from_slice(&(1u64 << 20).to_be_bytes());
    s.put("net_transfer", "request", &req);
    for (name, status) in [
        ("not-found", 1u8),
        ("too-large", 2),
        ("busy", 3),
        ("error", 4),
    ] {
        let mut h = vec![status];
        h.extend_from_slice(&5u64.to_be_bytes());
        s.put("net_transfer", name, &h);
    }
}

fn tlog(s: &Seeds, def: &Definition) {
    let published = Published::sign(&key(1), ORIGIN, def.id, "tiny", "0.1.0", 1_700_000_000);
    let review = Review::sign(
        &key(2),
        ORIGIN,
        ReviewAction::Approve,
        def.id,
        "",
        1_700_000_100,
    );
    let revoke = Review::sign(
        &key(3),
        ORIGIN,
        ReviewAction::Revoke,
        def.id,
        "bad",
        1_700_000_200,
    );
    let leaves: Vec<Vec<u8>> = [
        Entry::Published(published),
        Entry::Review(review),
        Entry::Review(revoke),
    ]
    .iter()
    .map(Entry::to_leaf)
    .collect();
    for (i, l) in leaves.iter().enumerate() {
        s.put("tlog_entry", &format!("leaf-{i}.json"), l);
    }

    let mut tree = MemoryTree::new();
    for l in &leaves {
        tree.push(l);
    }
    let cp = Checkpoint {
        origin: ORIGIN.into(),
        size: tree.size(),
        root: tree.root(),
        time: 1_700_000_300,
    };
    let note = cp.sign(&log_signer()).expect("the checkpoint signs");
    s.put("tlog_note", "checkpoint.note", &note);
    let mut cosigned = Note::parse(&note).expect("a signed note parses");
    let line = cosigner().cosign(&cosigned.text, 1_700_000_350);
    cosigned.signatures.push(line);
    s.put("tlog_note", "cosigned.note", cosigned.to_bytes());
    s.put("tlog_note", "vkey", log_signer().verifier().to_vkey());
    s.put("tlog_note", "public-key", key(2).public_key().to_string());
    s.put("tlog_note", "signature", key(2).sign(b"x").to_string());

    // Proof targets read structured input; a few byte patterns get them past the first
    // choices into every branch quickly.
    for (name, fill) in [("zeros", 0u8), ("ones", 0xff), ("mixed", 0x5a)] {
        s.put("tlog_proof", name, vec![fill; 256]);
        s.put("tlog_verifier", name, vec![fill; 512]);
    }
    let counting: Vec<u8> = (0..=255).collect();
    s.put("tlog_proof", "counting", &counting);
    s.put("tlog_verifier", "counting", &counting);

    // A stored verifier state after one honest update.
    let mut v = Verifier::new(verifier_config()).expect("a valid configuration");
    v.update(&note, &leaves, &[], 1_700_000_400)
        .expect("an honest log verifies");
    s.put(
        "tlog_verifier",
        "state.json",
        serde_json::to_vec(v.state()).expect("the state serialises"),
    );
}

/// add-checkpoint requests to a witness that has cosigned the honest tree at size 3: an
/// honest extension, the same tree again, a fork, a wrong old size; and the witness's vkey.
fn witness(s: &Seeds) {
    let signed = |size: u64, tree: &MemoryTree| {
        Checkpoint {
            origin: ORIGIN.into(),
            size,
            root: tree.root(),
            time: 1_700_000_400,
        }
        .sign(&log_signer())
        .expect("the checkpoint signs")
    };
    let old = WITNESSED_SIZE;
    let big = honest_tree(old + 2);
    let request = |old: u64, proof, checkpoint| AddCheckpoint {
        old,
        proof,
        checkpoint,
    };
    let honest = request(
        old,
        consistency_proof(&big, old, big.size()).expect("sizes in order"),
        signed(big.size(), &big),
    );
    s.put("tlog_witness", "extend", honest.to_bytes());
    let same = request(old, Vec::new(), signed(old, &honest_tree(old)));
    s.put("tlog_witness", "same", same.to_bytes());
    let mut fork = MemoryTree::new();
    for i in 0..old {
        fork.push(format!("fork {i}").as_bytes());
    }
    s.put(
        "tlog_witness",
        "fork",
        request(old, Vec::new(), signed(old, &fork)).to_bytes(),
    );
    s.put(
        "tlog_witness",
        "old-zero",
        request(0, Vec::new(), signed(big.size(), &big)).to_bytes(),
    );
    s.put("tlog_witness", "vkey", cosigner().verifier().to_vkey());
}

fn registry(s: &Seeds, def: &Definition) {
    let publication = PublishRequest {
        publication: Published::sign(&key(1), ORIGIN, def.id, "tiny", "0.1.0", 1_700_000_000),
        bundle: base64::engine::general_purpose::STANDARD.encode(bundle::pack(def)),
    };
    s.put(
        "registry_http",
        "publish.json",
        serde_json::to_vec(&publication).expect("serialises"),
    );
    let review = Review::sign(
        &key(2),
        ORIGIN,
        ReviewAction::Approve,
        def.id,
        "",
        1_700_000_100,
    );
    s.put(
        "registry_http",
        "review.json",
        serde_json::to_vec(&review).expect("serialises"),
    );
    let queries = [
        ("entries", "start=0&end=2".to_string()),
        ("inclusion", "index=0&size=1".to_string()),
        ("consistency", "old=1&new=2".to_string()),
        ("status", "status=pending".to_string()),
        ("id", def.id.to_string()),
        ("info", "api/v1/info".to_string()),
        ("checkpoint", "api/v1/checkpoint".to_string()),
        ("revocations", "revocations".to_string()),
    ];
    for (name, q) in queries {
        s.put("registry_http", name, q);
    }
}
