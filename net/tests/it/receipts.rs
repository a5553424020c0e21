//! Receipts: sign, save, verify offline, and every field is covered by the signature.

use std::collections::BTreeMap;

use pinfold_net::{
    BlobId, InputEntry, JobId, Keypair, Receipt, ReceiptBody, ReceiptError, ReceiptUsage, RunStatus,
};

fn body() -> ReceiptBody {
    ReceiptBody {
        job_id: JobId("job-7".into()),
        definition: BlobId::of(b"def").to_string(),
        inputs: vec![
            InputEntry {
                name: "b.txt".into(),
                size: 2,
                blake3: BlobId::of(b"bb"),
            },
            InputEntry {
                name: "a.txt".into(),
                size: 1,
                blake3: BlobId::of(b"a"),
            },
        ],
        params: BTreeMap::from([("N".into(), "3".into())]),
        outputs: BlobId::of(b"outputs").to_string(),
        status: RunStatus::Succeeded,
        exit_code: Some(0),
        usage: ReceiptUsage {
            wall_us: 1234,
            fuel: Some(99),
            peak_memory: 65536,
        },
        provider: String::new(),
        requestor: Keypair::generate_ed25519()
            .public()
            .to_peer_id()
            .to_base58(),
        started_ms: 1_700_000_000_000,
        ended_ms: 1_700_000_000_050,
    }
}

#[test]
fn receipt_signs_saves_and_verifies_offline() {
    let kp = Keypair::generate_ed25519();
    let receipt = Receipt::sign(body(), &kp).unwrap();
    assert_eq!(receipt.body.provider, kp.public().to_peer_id().to_base58());
    assert_eq!(receipt.body.inputs[0].name, "a.txt", "inputs are sorted");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("receipt.json");
    std::fs::write(&path, receipt.to_json()).unwrap();
    let loaded = Receipt::from_json(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(loaded, receipt);
    assert_eq!(loaded.verify().unwrap(), kp.public().to_peer_id());
}

#[test]
fn any_field_change_breaks_verification() {
    let kp = Keypair::generate_ed25519();
    let receipt = Receipt::sign(body(), &kp).unwrap();
    type Mutation = (&'static str, fn(&mut ReceiptBody));
    let mutations: &[Mutation] = &[
        ("job_id", |b| b.job_id = JobId("job-8".into())),
        ("definition", |b| {
            b.definition = BlobId::of(b"other").to_string()
        }),
        ("input digest", |b| b.inputs[0].blake3 = BlobId::of(b"z")),
        ("input size", |b| b.inputs[0].size += 1),
        ("input name", |b| b.inputs[0].name = "c.txt".into()),
        ("input dropped", |b| {
            b.inputs.pop();
        }),
        ("param value", |b| {
            b.params.insert("N".into(), "4".into());
        }),
        ("param added", |b| {
            b.params.insert("M".into(), "1".into());
        }),
        ("outputs", |b| b.outputs = BlobId::of(b"forged").to_string()),
        ("status", |b| b.status = RunStatus::Failed),
        ("exit code", |b| b.exit_code = Some(1)),
        ("exit code gone", |b| b.exit_code = None),
        ("wall", |b| b.usage.wall_us += 1),
        ("fuel", |b| b.usage.fuel = None),
        ("memory", |b| b.usage.peak_memory += 1),
        ("requestor", |b| {
            b.requestor = Keypair::generate_ed25519()
                .public()
                .to_peer_id()
                .to_base58()
        }),
        ("start", |b| b.started_ms -= 1),
        ("end", |b| b.ended_ms += 1),
    ];
    for (what, mutate) in mutations {
        let mut r = receipt.clone();
        mutate(&mut r.body);
        assert_ne!(r.body, receipt.body, "{what} must change the body");
        assert!(
            matches!(r.verify(), Err(ReceiptError::Signature(_))),
            "{what} change still verifies"
        );
    }
    // Claiming another provider fails on the key check.
    let mut r = receipt.clone();
    r.body.provider = Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_base58();
    assert!(matches!(r.verify(), Err(ReceiptError::Signature(_))));
    // Re-signing with another key while keeping the provider fails too.
    let mut r = receipt.clone();
    let other = Keypair::generate_ed25519();
    let resigned = Receipt::sign(receipt.body.clone(), &other).unwrap();
    r.public_key = resigned.public_key;
    r.signature = resigned.signature;
    assert!(matches!(r.verify(), Err(ReceiptError::Signature(_))));
    // Junk in the saved form is refused with a diagnostic, not a panic.
    assert!(Receipt::from_json(b"{\"body\":1}").is_err());
    let mut r = receipt.clone();
    r.signature = "zz".into();
    assert!(matches!(r.verify(), Err(ReceiptError::Malformed(_))));
    // Unknown fields are refused (they would be unsigned).
    let mut v: serde_json::Value = serde_json::from_str(&receipt.to_json()).unwrap();
    v["body"]["extra"] = serde_json::json!(1);
    assert!(Receipt::from_json(v.to_string().as_bytes()).is_err());
}
