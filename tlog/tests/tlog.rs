//! Transparency log: RFC 6962 vectors, exhaustive proofs, signed notes, and the verifier.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use pinfold_tlog::merkle::MAX_PROOF_LEN;
use pinfold_tlog::note::MAX_NOTE_BYTES;
use pinfold_tlog::*;
use proptest::prelude::*;
use task_defs::DefinitionId;

fn hx(s: &str) -> Hash {
    s.parse().unwrap()
}

// ---------------------------------------------------------------- Merkle tree

/// The Certificate Transparency reference leaves (merkle_tree_test.cc / Go testonly).
fn ct_leaves() -> Vec<Vec<u8>> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|h| hex::decode(h).unwrap())
    .collect()
}

const CT_ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

#[test]
fn empty_root_is_sha256_of_the_empty_string() {
    assert_eq!(
        Hash::empty_root(),
        hx("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    let none: Vec<Hash> = Vec::new();
    assert_eq!(root(&none, 0).unwrap(), Hash::empty_root());
    assert_eq!(MemoryTree::new().root(), Hash::empty_root());
    assert_eq!(Frontier::new().root(), Hash::empty_root());
}

#[test]
fn ct_reference_roots_for_every_size() {
    let hashes: Vec<Hash> = ct_leaves().iter().map(|l| leaf_hash(l)).collect();
    let mut tree = MemoryTree::new();
    let mut frontier = Frontier::new();
    for (i, want) in CT_ROOTS.iter().enumerate() {
        tree.push(&ct_leaves()[i]);
        frontier.push_hash(hashes[i]);
        let n = i as u64 + 1;
        assert_eq!(root(&hashes, n).unwrap(), hx(want), "slice root at {n}");
        assert_eq!(tree.root(), hx(want), "memory tree root at {n}");
        assert_eq!(frontier.root(), hx(want), "frontier root at {n}");
    }
}

#[test]
fn ct_reference_inclusion_and_consistency_proofs() {
    let hashes: Vec<Hash> = ct_leaves().iter().map(|l| leaf_hash(l)).collect();
    let root8 = hx(CT_ROOTS[7]);
    let cases: [(u64, [&str; 3]); 2] = [
        (
            0,
            [
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            [
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    for (index, want) in cases {
        let want: Vec<Hash> = want.iter().map(|h| hx(h)).collect();
        assert_eq!(inclusion_proof(&hashes, index, 8).unwrap(), want);
        verify_inclusion(&hashes[index as usize], index, 8, &want, &root8).unwrap();
    }
    let consistency: [(u64, u64, &[&str]); 4] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (old, new, want) in consistency {
        let want: Vec<Hash> = want.iter().map(|h| hx(h)).collect();
        assert_eq!(
            consistency_proof(&hashes, old, new).unwrap(),
            want,
            "{old}->{new}"
        );
        let (r1, r2) = (
            hx(CT_ROOTS[old as usize - 1]),
            hx(CT_ROOTS[new as usize - 1]),
        );
        verify_consistency(old, new, &r1, &r2, &want).unwrap();
    }
}

/// RFC 6962 §2.1 MTH, written as literally as the RFC states it.
fn ref_mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => Hash::empty_root(),
        1 => d[0],
        n => {
            let k = largest_pow2_below(n);
            node_hash(&ref_mth(&d[..k]), &ref_mth(&d[k..]))
        }
    }
}

fn largest_pow2_below(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// RFC 6962 §2.1.1 PATH.
fn ref_path(m: usize, d: &[Hash]) -> Vec<Hash> {
    let n = d.len();
    if n == 1 {
        return vec![];
    }
    let k = largest_pow2_below(n);
    if m < k {
        let mut p = ref_path(m, &d[..k]);
        p.push(ref_mth(&d[k..]));
        p
    } else {
        let mut p = ref_path(m - k, &d[k..]);
        p.push(ref_mth(&d[..k]));
        p
    }
}

/// RFC 6962 §2.1.2 SUBPROOF.
fn ref_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![ref_mth(d)] };
    }
    let k = largest_pow2_below(n);
    if m <= k {
        let mut p = ref_subproof(m, &d[..k], b);
        p.push(ref_mth(&d[k..]));
        p
    } else {
        let mut p = ref_subproof(m - k, &d[k..], false);
        p.push(ref_mth(&d[..k]));
        p
    }
}

fn flip(h: &Hash) -> Hash {
    let mut h = *h;
    h.0[7] ^= 0x40;
    h
}

#[test]
fn inclusion_proofs_for_every_index_of_every_size_up_to_64() {
    let hashes: Vec<Hash> = (0..64u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let tree = MemoryTree::from_leaf_hashes(hashes.iter().copied());
    for n in 1..=64usize {
        let d = &hashes[..n];
        let r = ref_mth(d);
        assert_eq!(root(&hashes, n as u64).unwrap(), r);
        assert_eq!(root(&tree, n as u64).unwrap(), r);
        for m in 0..n {
            let (mu, nu) = (m as u64, n as u64);
            let p = inclusion_proof(&hashes, mu, nu).unwrap();
            assert_eq!(p, ref_path(m, d), "PATH({m}, {n})");
            assert_eq!(inclusion_proof(&tree, mu, nu).unwrap(), p);
            verify_inclusion(&d[m], mu, nu, &p, &r).unwrap();
            // Every single-hash tamper, and every wrong leaf, index, size or length fails.
            for i in 0..p.len() {
                let mut bad = p.clone();
                bad[i] = flip(&bad[i]);
                assert!(verify_inclusion(&d[m], mu, nu, &bad, &r).is_err());
            }
            assert!(verify_inclusion(&flip(&d[m]), mu, nu, &p, &r).is_err());
            assert!(verify_inclusion(&d[m], mu, nu, &p, &flip(&r)).is_err());
            if n > 1 {
                let other = (m + 1) % n;
                assert!(verify_inclusion(&d[m], other as u64, nu, &p, &r).is_err());
            }
            // Proofs only fix the size up to the shape of the path (the signed checkpoint
            // binds root and size); any size whose path has another length must fail.
            for other in m + 1..=64 {
                // (Lengths from `tree`, whose proofs equal PATH, checked above and below.)
                let len = inclusion_proof(&tree, mu, other as u64).unwrap().len();
                if other != n && len != p.len() {
                    assert!(verify_inclusion(&d[m], mu, other as u64, &p, &r).is_err());
                }
            }
            assert!(verify_inclusion(&d[m], nu, nu, &p, &r).is_err());
            let mut longer = p.clone();
            longer.push(r);
            assert!(verify_inclusion(&d[m], mu, nu, &longer, &r).is_err());
            if !p.is_empty() {
                assert!(verify_inclusion(&d[m], mu, nu, &p[..p.len() - 1], &r).is_err());
            }
        }
        assert!(matches!(
            inclusion_proof(&hashes, n as u64, n as u64),
            Err(TreeError::IndexOutOfRange { .. })
        ));
    }
    assert!(matches!(
        root(&hashes, 65),
        Err(TreeError::SizeTooLarge { .. })
    ));
}

#[test]
fn consistency_proofs_for_every_pair_of_sizes_up_to_64() {
    let hashes: Vec<Hash> = (0..64u32).map(|i| leaf_hash(&i.to_le_bytes())).collect();
    let tree = MemoryTree::from_leaf_hashes(hashes.iter().copied());
    let roots: Vec<Hash> = (0..=64).map(|n| ref_mth(&hashes[..n])).collect();
    for n in 1..=64usize {
        for m in 1..=n {
            let (mu, nu) = (m as u64, n as u64);
            let p = consistency_proof(&hashes, mu, nu).unwrap();
            let want = if m == n {
                vec![]
            } else {
                ref_subproof(m, &hashes[..n], true)
            };
            assert_eq!(p, want, "PROOF({m}, {n})");
            assert_eq!(consistency_proof(&tree, mu, nu).unwrap(), p);
            verify_consistency(mu, nu, &roots[m], &roots[n], &p).unwrap();
            for i in 0..p.len() {
                let mut bad = p.clone();
                bad[i] = flip(&bad[i]);
                assert!(verify_consistency(mu, nu, &roots[m], &roots[n], &bad).is_err());
            }
            assert!(verify_consistency(mu, nu, &flip(&roots[m]), &roots[n], &p).is_err());
            assert!(verify_consistency(mu, nu, &roots[m], &flip(&roots[n]), &p).is_err());
            if m < n {
                // The proof is for these sizes only.
                for other in m + 1..=64 {
                    let len = consistency_proof(&tree, mu, other as u64).unwrap().len();
                    if other != n && len != p.len() {
                        assert!(
                            verify_consistency(mu, other as u64, &roots[m], &roots[n], &p).is_err()
                        );
                    }
                }
                assert!(verify_consistency(mu, nu, &roots[m], &roots[n], &p[1..]).is_err());
                let mut longer = p.clone();
                longer.push(roots[n]);
                assert!(verify_consistency(mu, nu, &roots[m], &roots[n], &longer).is_err());
            }
        }
        // The empty tree is extended by any tree, with an empty proof only.
        verify_consistency(0, n as u64, &roots[0], &roots[n], &[]).unwrap();
        assert!(verify_consistency(0, n as u64, &roots[0], &roots[n], &[roots[n]]).is_err());
        assert!(verify_consistency(n as u64, n as u64 - 1, &roots[n], &roots[n], &[]).is_err());
    }
    assert!(matches!(
        consistency_proof(&hashes, 5, 4),
        Err(TreeError::SizesOutOfOrder { .. })
    ));
}

#[test]
fn hundred_thousand_leaves_prove_quickly_from_a_memory_tree() {
    let n = 100_000u64;
    let mut tree = MemoryTree::new();
    let mut frontier = Frontier::new();
    for i in 0..n {
        let h = leaf_hash(&i.to_be_bytes());
        tree.push_hash(h);
        frontier.push_hash(h);
    }
    let r = tree.root();
    assert_eq!(r, frontier.root());
    assert_eq!(r, root(tree.leaf_hashes(), n).unwrap());
    let start = std::time::Instant::now();
    for i in (0..n).step_by(997) {
        let p = inclusion_proof(&tree, i, n).unwrap();
        verify_inclusion(&tree.leaf_hashes()[i as usize], i, n, &p, &r).unwrap();
        let old = i + 1;
        let old_root = root(&tree, old).unwrap();
        let c = consistency_proof(&tree, old, n).unwrap();
        verify_consistency(old, n, &old_root, &r, &c).unwrap();
    }
    // ~100 of each, cached subtrees make them O(log² n): far below a second even unoptimised.
    assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
}

#[test]
fn frontier_state_is_checked() {
    let mut f = Frontier::new();
    for i in 0..5u8 {
        f.push_hash(leaf_hash(&[i]));
    }
    assert_eq!(f.peaks().len(), 2);
    assert!(Frontier::from_parts(5, f.peaks().to_vec()).is_ok());
    assert!(Frontier::from_parts(6, f.peaks().to_vec()).is_ok());
    assert!(Frontier::from_parts(7, f.peaks().to_vec()).is_err());
}

// ---------------------------------------------------------------- keys and entries

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

fn def(n: u8) -> DefinitionId {
    DefinitionId([n; 32])
}

#[test]
fn key_text_forms_round_trip_and_are_canonical() {
    let k = SecretKey::generate().unwrap();
    let text = k.public_key_text();
    assert!(
        text.starts_with("ed25519:") && text.len() == 8 + 44,
        "{text}"
    );
    assert_eq!(text.parse::<PublicKey>().unwrap(), k.public_key());
    let file = k.to_file_text();
    let back = SecretKey::from_file_text(&file).unwrap();
    assert_eq!(back.public_key(), k.public_key());
    assert!(!format!("{k:?}").contains(file.trim_end().split(':').nth(1).unwrap()));
    // Two different keys are two different strings; bad forms are refused.
    assert_ne!(SecretKey::generate().unwrap().public_key(), k.public_key());
    for bad in [
        "",
        "ed25519:",
        "ED25519:AAAA",
        &text[..text.len() - 1],
        &format!("{text}="),
        &format!(" {text}"),
    ] {
        assert!(bad.parse::<PublicKey>().is_err(), "{bad:?}");
    }
    // The last base64 digit of 32 bytes carries 2 spare bits: a second spelling of the
    // same key must be refused, or one reviewer could count twice.
    let b = text.strip_prefix("ed25519:").unwrap();
    let last = b.as_bytes()[42];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let pos = alphabet.iter().position(|&c| c == last).unwrap();
    let twin = alphabet[pos ^ 1] as char;
    let alias = format!("ed25519:{}{}=", &b[..42], twin);
    assert!(alias.parse::<PublicKey>().is_err(), "{alias}");
    assert!(SecretKey::from_file_text("pinfold-ed25519-secret:AAAA\n").is_err());
    assert!(SecretKey::from_file_text(&text).is_err());
}

#[test]
fn entries_have_one_canonical_leaf() {
    let p = Entry::Published(Published::sign(
        &key(1),
        ORIGIN,
        def(9),
        "hello",
        "1.2.0",
        1_700_000_000,
    ));
    let leaf = p.to_leaf();
    assert_eq!(Entry::from_leaf(&leaf).unwrap(), p);
    let s = String::from_utf8(leaf.clone()).unwrap();
    assert!(s.starts_with("{\"author\":\"ed25519:"), "{s}");
    assert!(s.contains("\"type\":\"pinfold-publish/2\""), "{s}");
    assert!(s.contains(&format!("\"origin\":\"{ORIGIN}\"")), "{s}");
    // Whitespace, reordered members, extra or missing members: all refused.
    let v: serde_json::Value = serde_json::from_slice(&leaf).unwrap();
    let pretty = serde_json::to_vec_pretty(&v).unwrap();
    assert_eq!(Entry::from_leaf(&pretty), Err(EntryError::NotCanonical));
    let mut extra = v.clone();
    extra["x"] = 1.into();
    let mut buf = Vec::new();
    task_defs::identity::write_canonical(&extra, &mut buf).unwrap();
    assert!(matches!(
        Entry::from_leaf(&buf),
        Err(EntryError::Malformed(_))
    ));
    let mut missing = v.clone();
    missing.as_object_mut().unwrap().remove("time");
    buf.clear();
    task_defs::identity::write_canonical(&missing, &mut buf).unwrap();
    assert!(matches!(
        Entry::from_leaf(&buf),
        Err(EntryError::Malformed(_))
    ));
    assert!(matches!(
        Entry::from_leaf(&vec![b' '; 20_000]),
        Err(EntryError::TooLarge(_))
    ));

    let r = Entry::Review(Review::sign(
        &key(2),
        ORIGIN,
        ReviewAction::Revoke,
        def(9),
        "malware",
        5,
    ));
    let leaf = r.to_leaf();
    assert_eq!(Entry::from_leaf(&leaf).unwrap(), r);
    assert!(
        String::from_utf8(leaf)
            .unwrap()
            .contains("\"action\":\"revoke\"")
    );
}

#[test]
fn statements_are_signed_and_domain_separated() {
    let p = Published::sign(&key(1), ORIGIN, def(1), "n", "1.0.0", 10);
    p.verify().unwrap();
    let stmt = String::from_utf8(p.statement()).unwrap();
    assert!(stmt.contains("\"type\":\"pinfold-publish/2\""), "{stmt}");
    let mut other = p.clone();
    other.definition = def(2);
    assert!(other.verify().is_err(), "signature must bind the identity");
    let mut other = p.clone();
    other.author = key(3).public_key();
    assert!(other.verify().is_err(), "signature must bind the author");

    let r = Review::sign(&key(4), ORIGIN, ReviewAction::Approve, def(1), "", 11);
    r.verify().unwrap();
    assert!(
        String::from_utf8(r.statement())
            .unwrap()
            .contains("\"type\":\"pinfold-review/2\"")
    );
    for tamper in [
        |r: &mut Review| r.action = ReviewAction::Reject,
        |r: &mut Review| r.definition = DefinitionId([7; 32]),
        |r: &mut Review| r.reason = "x".into(),
        |r: &mut Review| r.time += 1,
        |r: &mut Review| r.reviewer = SecretKey::from_seed([5; 32]).public_key(),
        |r: &mut Review| r.origin = "staging.pinfold.example/log".into(),
    ] {
        let mut bad = r.clone();
        tamper(&mut bad);
        assert!(bad.verify().is_err());
    }
    // A reviewer's signature over an approval is not an author's signature over anything.
    let forged = Published {
        signature: r.signature,
        author: r.reviewer,
        ..p.clone()
    };
    assert!(forged.verify().is_err());
}

// ---------------------------------------------------------------- notes and checkpoints

const ORIGIN: &str = "registry.pinfold.example/log";

fn log_signer() -> NoteSigner {
    NoteSigner::new(ORIGIN, key(200)).unwrap()
}

#[test]
fn go_sumdb_note_known_answer() {
    // golang.org/x/mod/sumdb/note's example key and signed note.
    let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    let skey = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    let text = "If you think cryptography is the answer to your problem,\n\
                then you don't know what your problem is.\n";
    let msg = format!(
        "{text}\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
    );
    let v = NoteVerifier::from_vkey(vkey).unwrap();
    assert_eq!(v.key_id(), [0xc7, 0x4f, 0x20, 0xa3]);
    assert_eq!(v.to_vkey(), vkey);
    let note = Note::parse(msg.as_bytes()).unwrap();
    assert_eq!(note.verify(&v).unwrap(), text);
    // Signing the same text with the same key reproduces Go's bytes exactly.
    let seed: [u8; 32] = B64.decode(skey).unwrap()[1..].try_into().unwrap();
    let signer = NoteSigner::new("PeterNeumann", SecretKey::from_seed(seed)).unwrap();
    assert_eq!(signer.verifier(), v);
    assert_eq!(
        Note::sign(text, &signer).unwrap().to_bytes(),
        msg.as_bytes()
    );
    // A wrong key id in the vkey is refused.
    assert!(NoteVerifier::from_vkey(&vkey.replace("c74f20a3", "c74f20a4")).is_err());
}

#[test]
fn checkpoint_round_trip_and_format() {
    let cp = Checkpoint {
        origin: ORIGIN.into(),
        size: 8,
        root: hx(CT_ROOTS[7]),
        time: 1_750_000_000,
    };
    let bytes = cp.sign(&log_signer()).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    let want_head = format!(
        "{ORIGIN}\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\ntime 1750000000\n\n\u{2014} {ORIGIN} "
    );
    assert!(text.starts_with(&want_head), "{text}");
    assert_eq!(
        Checkpoint::open(&bytes, &log_signer().verifier()).unwrap(),
        cp
    );
    // Cosignatures by other keys are ignored, in any order.
    let mut note = Note::parse(&bytes).unwrap();
    note.add_signature(&NoteSigner::new("witness.example", key(7)).unwrap());
    note.signatures.reverse();
    assert_eq!(
        Checkpoint::open(&note.to_bytes(), &log_signer().verifier()).unwrap(),
        cp
    );
}

#[test]
fn altered_or_foreign_checkpoints_are_refused() {
    let cp = Checkpoint {
        origin: ORIGIN.into(),
        size: 3,
        root: hx(CT_ROOTS[2]),
        time: 1,
    };
    let good = String::from_utf8(cp.sign(&log_signer()).unwrap()).unwrap();
    let v = log_signer().verifier();
    // Altered body.
    let altered = good.replacen("\n3\n", "\n4\n", 1);
    assert!(matches!(
        Checkpoint::open(altered.as_bytes(), &v),
        Err(CheckpointError::Note(NoteError::BadSignature(_)))
    ));
    // Altered signature (same key id).
    let mut note = Note::parse(good.as_bytes()).unwrap();
    note.signatures[0].signature[10] ^= 1;
    assert!(matches!(
        Checkpoint::open(&note.to_bytes(), &v),
        Err(CheckpointError::Note(NoteError::BadSignature(_)))
    ));
    // Signed by another key under the same name: unknown signer, not accepted.
    let impostor = NoteSigner::new(ORIGIN, key(201)).unwrap();
    let forged = cp.sign(&impostor).unwrap();
    assert!(matches!(
        Checkpoint::open(&forged, &v),
        Err(CheckpointError::Note(NoteError::UnknownSigner(_)))
    ));
    // Right key, wrong key name.
    let renamed = NoteSigner::new("other.example/log", key(200)).unwrap();
    let forged = cp.sign(&renamed).unwrap();
    assert!(matches!(
        Checkpoint::open(&forged, &v),
        Err(CheckpointError::Note(NoteError::UnknownSigner(_)))
    ));
    // A forged line from the known key next to a good one still rejects the note.
    let mut note = Note::parse(good.as_bytes()).unwrap();
    let mut bad = note.signatures[0].clone();
    bad.signature[0] ^= 1;
    note.signatures.push(bad);
    assert!(Checkpoint::open(&note.to_bytes(), &v).is_err());
}

#[test]
fn malformed_notes_are_errors() {
    let cp = Checkpoint {
        origin: ORIGIN.into(),
        size: 0,
        root: Hash::empty_root(),
        time: 0,
    };
    let good = String::from_utf8(cp.sign(&log_signer()).unwrap()).unwrap();
    let v = log_signer().verifier();
    let sig_line = good.rsplit("\n\n").next().unwrap().to_string();
    let cases: Vec<String> = vec![
        String::new(),
        "\n".into(),
        good.trim_end().into(),
        good.replace('\u{2014}', "-"),
        good.replace("\n\n", "\n"),
        good.replacen("\n0\n", "\n00\n", 1),
        good.replacen("\n0\n", "\n-0\n", 1),
        good.replacen("\n0\n", "\n+0\n", 1),
        good.replacen("\n0\n", "\n18446744073709551616\n", 1),
        good.replacen("time 0", "time  0", 1),
        good.replacen("time 0", "Time 0", 1),
        good.replacen("time 0\n", "", 1),
        good.replacen("time 0\n", "time 0\nextra\n", 1),
        good.replacen("\n\n", "\r\n\n", 1),
        good.replacen(ORIGIN, "", 1),
        format!(
            "{good}{}  {}",
            '\u{2014}',
            sig_line.split(' ').nth(2).unwrap()
        ),
        format!("{good}\n"),
        good.replace(&format!("{ORIGIN} "), &format!("{ORIGIN}  ")),
        good.replace(&format!("\u{2014} {ORIGIN}"), "\u{2014} a+b"),
        good.replace("=\n", "\n"),
    ];
    for (i, c) in cases.iter().enumerate() {
        assert!(
            Checkpoint::open(c.as_bytes(), &v).is_err(),
            "case {i} accepted: {c:?}"
        );
    }
    // Non-UTF-8, and oversized input, refused before any other work.
    assert_eq!(
        Note::parse(&[0xff, b'\n', b'\n']),
        Err(NoteError::BadCharacters)
    );
    let huge = vec![b'a'; MAX_NOTE_BYTES + 1];
    assert_eq!(
        Note::parse(&huge),
        Err(NoteError::TooLarge(MAX_NOTE_BYTES + 1))
    );
    // Too many signature lines.
    let mut many = good.clone();
    for _ in 0..100 {
        many.push_str(&format!("\u{2014} w.example {}\n", B64.encode([0u8; 68])));
    }
    assert_eq!(
        Note::parse(many.as_bytes()),
        Err(NoteError::TooManySignatures)
    );
    // 16 cosignatures must be accepted (signed-note requirement).
    let mut note = Note::parse(good.as_bytes()).unwrap();
    for i in 0..16u8 {
        note.add_signature(&NoteSigner::new(&format!("w{i}.example"), key(i)).unwrap());
    }
    assert_eq!(Checkpoint::open(&note.to_bytes(), &v).unwrap(), cp);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parsers_and_verifiers_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        index in any::<u64>(),
        size in any::<u64>(),
        size2 in any::<u64>(),
        n in 0usize..70,
    ) {
        let v = log_signer().verifier();
        let _ = Note::parse(&bytes);
        let _ = Checkpoint::open(&bytes, &v);
        let _ = Entry::from_leaf(&bytes);
        let s = String::from_utf8_lossy(&bytes);
        let _ = Checkpoint::from_text(&s);
        let _ = NoteVerifier::from_vkey(&s);
        let _ = s.parse::<PublicKey>();
        let _ = SecretKey::from_file_text(&s);
        let proof: Vec<Hash> = bytes
            .chunks(32)
            .cycle()
            .take(n)
            .map(leaf_hash)
            .collect();
        let h = leaf_hash(&bytes);
        let _ = verify_inclusion(&h, index, size, &proof, &h);
        let _ = verify_inclusion(&h, index % 70, size % 70, &proof, &h);
        let _ = verify_consistency(size, size2, &h, &h, &proof);
        let _ = verify_consistency(size % 70, size2 % 70, &h, &h, &proof);
    }

    #[test]
    fn signature_lines_with_mutated_bytes_never_verify_or_panic(
        pos in 0usize..400,
        byte in any::<u8>(),
    ) {
        let cp = Checkpoint { origin: ORIGIN.into(), size: 5, root: hx(CT_ROOTS[4]), time: 9 };
        let mut bytes = cp.sign(&log_signer()).unwrap();
        let pos = pos % bytes.len();
        prop_assume!(bytes[pos] != byte);
        bytes[pos] = byte;
        // Any single-byte change either breaks parsing or the signature.
        prop_assert!(Checkpoint::open(&bytes, &log_signer().verifier()).is_err());
    }
}

#[test]
fn overlong_proofs_are_refused_without_hashing() {
    let h = Hash::empty_root();
    let long = vec![h; MAX_PROOF_LEN + 1];
    assert_eq!(
        verify_inclusion(&h, 0, u64::MAX, &long, &h),
        Err(ProofError::WrongLength)
    );
    assert_eq!(
        verify_consistency(1, u64::MAX, &h, &h, &long),
        Err(ProofError::WrongLength)
    );
}

// ---------------------------------------------------------------- verifier

const T0: u64 = 1_800_000_000;

/// A registry server, honest unless a test makes it otherwise.
struct Server {
    signer: NoteSigner,
    leaves: Vec<Vec<u8>>,
    tree: MemoryTree,
}

impl Server {
    fn new() -> Self {
        Server {
            signer: log_signer(),
            leaves: Vec::new(),
            tree: MemoryTree::new(),
        }
    }

    fn append(&mut self, e: &Entry) {
        let leaf = e.to_leaf();
        self.tree.push(&leaf);
        self.leaves.push(leaf);
    }

    fn checkpoint(&self, time: u64) -> Vec<u8> {
        Checkpoint {
            origin: ORIGIN.into(),
            size: self.tree.size(),
            root: self.tree.root(),
            time,
        }
        .sign(&self.signer)
        .unwrap()
    }

    /// Syncs `v` to the current tree.
    fn sync(&self, v: &mut Verifier, time: u64) -> Result<UpdateReport, SyncError> {
        let from = v.size();
        let proof = consistency_proof(&self.tree, from, self.tree.size()).unwrap();
        v.update(
            &self.checkpoint(time),
            &self.leaves[from as usize..],
            &proof,
            time,
        )
    }
}

fn config(reviewers: &[u8], threshold: usize) -> VerifierConfig {
    VerifierConfig {
        origin: ORIGIN.into(),
        log_key: log_signer().verifier(),
        reviewers: reviewers.iter().map(|&n| key(n).public_key()).collect(),
        threshold,
        max_age_secs: 3600,
        witnesses: WitnessPolicy::default(),
    }
}

fn publish(s: &mut Server, d: u8) {
    s.append(&Entry::Published(Published::sign(
        &key(100),
        ORIGIN,
        def(d),
        "demo",
        "1.0.0",
        T0,
    )));
}

/// A statement signed at `T0` plus the log's size: later statements are signed later.
fn review(s: &mut Server, reviewer: u8, action: ReviewAction, d: u8) {
    let time = T0 + s.tree.size();
    s.append(&Entry::Review(Review::sign(
        &key(reviewer),
        ORIGIN,
        action,
        def(d),
        "because",
        time,
    )));
}

#[test]
fn approval_needs_k_distinct_trusted_keys() {
    use ReviewAction::*;
    let mut s = Server::new();
    let mut v = Verifier::new(config(&[1, 2, 3], 2)).unwrap();
    publish(&mut s, 1);
    s.sync(&mut v, T0).unwrap();
    assert_eq!(v.status(&def(1), T0).unwrap(), Status::Pending);
    assert_eq!(v.status(&def(2), T0).unwrap(), Status::Unknown);

    // The same trusted key approving twice is one key.
    review(&mut s, 1, Approve, 1);
    review(&mut s, 1, Approve, 1);
    // A key not on the roster does not count.
    review(&mut s, 50, Approve, 1);
    // A trusted key's approval of another identity does not count.
    review(&mut s, 2, Approve, 9);
    // A forged approval in a trusted key's name does not count.
    let mut forged = Review::sign(&key(51), ORIGIN, Approve, def(1), "", T0);
    forged.reviewer = key(3).public_key();
    s.append(&Entry::Review(forged));
    // A trusted key's signature moved onto another identity does not count.
    let mut moved = Review::sign(&key(3), ORIGIN, Approve, def(8), "", T0);
    moved.definition = def(1);
    s.append(&Entry::Review(moved));
    let r = s.sync(&mut v, T0).unwrap();
    assert_eq!(r.ignored_entries, 3);
    assert_eq!(v.status(&def(1), T0).unwrap(), Status::Pending);
    // Approving an unpublished identity does not make it approved.
    assert_eq!(v.status(&def(9), T0).unwrap(), Status::Unknown);

    review(&mut s, 2, Approve, 1);
    s.sync(&mut v, T0).unwrap();
    assert_eq!(v.status(&def(1), T0).unwrap(), Status::Approved);
    let rec = v.record(&def(1)).unwrap();
    assert_eq!(rec.published.as_ref().unwrap().name, "demo");
    assert_eq!(rec.votes.len(), 2);
}

#[test]
fn revoke_wins_and_rejections_yield_to_k_approvals() {
    use ReviewAction::*;
    let mut s = Server::new();
    let mut v = Verifier::new(config(&[1, 2, 3], 2)).unwrap();
    publish(&mut s, 1);
    publish(&mut s, 2);
    review(&mut s, 3, Reject, 1);
    s.sync(&mut v, T0).unwrap();
    assert_eq!(v.status(&def(1), T0).unwrap(), Status::Rejected);
    // An untrusted rejection does nothing.
    review(&mut s, 60, Reject, 2);
    s.sync(&mut v, T0).unwrap();
    assert_eq!(v.status(&def(2), T0).unwrap(), Status::Pending);
    // k approvals outrank a rejection.
    review(&mut s, 1, Approve, 1);
    review(&mut s, 2, Approve, 1);
    s.sync(&mut v, T0).unwrap();
    assert_eq!(v.status(&def(1), T0).unwrap(), Status::Approved);
    // A reviewer changing their vote to reject drops below k again.
    review(&mut s, 2, Reject, 1);
    s.sync(&mut v, T0).unwrap();
    assert_eq!(v.status(&def(1), T0).unwrap(), Status::Rejected);
    review(&mut s, 2, Approve, 1);
    s.sync(&mut v, T0).unwrap();
    assert_eq!(v.status(&def(1), T0).unwrap(), Status::Approved);
    // An untrusted revoke does nothing; one trusted revoke beats every approval, for good.
    review(&mut s, 61, Revoke, 1);
    s.sync(&mut v, T0).unwrap();
    assert_eq!(v.status(&def(1), T0).unwrap(), Status::Approved);
    review(&mut s, 3, Revoke, 1);
    review(&mut s, 3, Approve, 1);
    s.sync(&mut v, T0).unwrap();
    assert_eq!(v.status(&def(1), T0).unwrap(), Status::Revoked);
    // Revoking an identity never published still fails closed.
    review(&mut s, 1, Revoke, 77);
    s.sync(&mut v, T0).unwrap();
    assert_eq!(v.status(&def(77), T0).unwrap(), Status::Revoked);
}

#[test]
fn stale_views_are_refused() {
    let mut s = Server::new();
    let mut v = Verifier::new(config(&[1], 1)).unwrap();
    assert_eq!(v.status(&def(1), T0), Err(StatusError::NoCheckpoint));
    publish(&mut s, 1);
    review(&mut s, 1, ReviewAction::Approve, 1);
    s.sync(&mut v, T0).unwrap();
    assert_eq!(v.status(&def(1), T0 + 3600).unwrap(), Status::Approved);
    let err = v.status(&def(1), T0 + 3601).unwrap_err();
    assert_eq!(
        err,
        StatusError::Stale {
            age_secs: 3601,
            max_age_secs: 3600
        }
    );
    assert!(err.to_string().starts_with("stale registry view"));
    // A re-signed checkpoint of the same tree refreshes the view.
    s.sync(&mut v, T0 + 7200).unwrap();
    assert_eq!(v.status(&def(1), T0 + 7201).unwrap(), Status::Approved);
    // The unchecked lookup still answers, for diagnostics.
    assert_eq!(v.status_unchecked(&def(1)), Status::Approved);
    // A checkpoint from far in the future is refused, so a log cannot pre-date freshness.
    publish(&mut s, 2);
    let proof = consistency_proof(&s.tree, 2, 3).unwrap();
    assert!(matches!(
        v.update(
            &s.checkpoint(T0 + 99_999),
            &s.leaves[2..],
            &proof,
            T0 + 7300
        ),
        Err(SyncError::FromTheFuture { .. })
    ));
}

#[test]
fn rollback_and_fork_are_detected() {
    let mut s = Server::new();
    let mut v = Verifier::new(config(&[1], 1)).unwrap();
    for d in 0..5 {
        publish(&mut s, d);
    }
    let old_checkpoint = s.checkpoint(T0);
    s.sync(&mut v, T0).unwrap();
    publish(&mut s, 5);
    s.sync(&mut v, T0 + 1).unwrap();
    assert_eq!(v.size(), 6);
    let before = v.state().clone();

    // Rollback: an older, validly signed checkpoint.
    let none: [Vec<u8>; 0] = [];
    assert_eq!(
        v.update(&old_checkpoint, &none, &[], T0 + 2),
        Err(SyncError::Rollback {
            verified: 6,
            offered: 5
        })
    );

    // Fork at the same size: the log signs a different tree of 6 leaves.
    let mut fork = Server::new();
    for d in 0..5 {
        publish(&mut fork, d);
    }
    publish(&mut fork, 66);
    assert_eq!(
        v.update(&fork.checkpoint(T0 + 2), &none, &[], T0 + 2),
        Err(SyncError::Fork {
            verified: 6,
            offered: 6
        })
    );
    // Fork at a larger size, whatever proof and entries the server sends.
    publish(&mut fork, 7);
    let cp = fork.checkpoint(T0 + 2);
    let proof = consistency_proof(&fork.tree, 6, 7).unwrap();
    assert_eq!(
        v.update(&cp, &fork.leaves[6..], &proof, T0 + 2),
        Err(SyncError::Fork {
            verified: 6,
            offered: 7
        })
    );
    assert_eq!(v.state(), &before, "failed updates leave the state alone");

    // Rollback across a restart: the persisted state remembers size 6.
    let json = serde_json::to_string(v.state()).unwrap();
    let state: VerifierState = serde_json::from_str(&json).unwrap();
    assert_eq!(&state, v.state());
    let mut restarted = Verifier::restore(config(&[1], 1), state).unwrap();
    assert!(matches!(
        restarted.update(&old_checkpoint, &none, &[], T0 + 3),
        Err(SyncError::Rollback { .. })
    ));
    s.sync(&mut restarted, T0 + 3).unwrap();
}

#[test]
fn a_hidden_or_altered_entry_is_detected() {
    use ReviewAction::*;
    let mut s = Server::new();
    let mut v = Verifier::new(config(&[1, 2], 1)).unwrap();
    publish(&mut s, 1);
    s.sync(&mut v, T0).unwrap();
    review(&mut s, 2, Revoke, 1);
    publish(&mut s, 2);
    let cp = s.checkpoint(T0 + 1);
    let proof = consistency_proof(&s.tree, 1, 3).unwrap();

    // Altered: the server swaps the revocation for an approval by the same reviewer.
    let mut altered = s.leaves[1..].to_vec();
    altered[0] = Entry::Review(Review::sign(&key(2), ORIGIN, Approve, def(1), "", T0)).to_leaf();
    assert_eq!(
        v.update(&cp, &altered, &proof, T0 + 1),
        Err(SyncError::EntriesMismatch)
    );
    // Reordered.
    let mut swapped = s.leaves[1..].to_vec();
    swapped.swap(0, 1);
    assert_eq!(
        v.update(&cp, &swapped, &proof, T0 + 1),
        Err(SyncError::EntriesMismatch)
    );
    // Hidden: one entry left out.
    assert_eq!(
        v.update(&cp, &s.leaves[2..], &proof, T0 + 1),
        Err(SyncError::EntryCount {
            expected: 2,
            got: 1
        })
    );
    // A bogus consistency proof is refused even with honest entries.
    let mut bad = proof.clone();
    bad[0] = flip(&bad[0]);
    assert_eq!(
        v.update(&cp, &s.leaves[1..], &bad, T0 + 1),
        Err(SyncError::BadConsistencyProof)
    );
    assert_eq!(v.status(&def(1), T0 + 1).unwrap(), Status::Pending);
    // The honest update goes through and the revocation shows.
    let r = v.update(&cp, &s.leaves[1..], &proof, T0 + 1).unwrap();
    assert_eq!((r.old_size, r.new_size), (1, 3));
    assert_eq!(v.status(&def(1), T0 + 1).unwrap(), Status::Revoked);
}

#[test]
fn checkpoints_from_other_logs_or_keys_are_refused() {
    let mut s = Server::new();
    publish(&mut s, 1);
    let mut v = Verifier::new(config(&[1], 1)).unwrap();
    let leaves = s.leaves.clone();
    let impostor = NoteSigner::new(ORIGIN, key(99)).unwrap();
    let cp = Checkpoint {
        origin: ORIGIN.into(),
        size: 1,
        root: s.tree.root(),
        time: T0,
    };
    assert!(matches!(
        v.update(&cp.sign(&impostor).unwrap(), &leaves, &[], T0),
        Err(SyncError::Checkpoint(_))
    ));
    let other = Checkpoint {
        origin: "elsewhere.example".into(),
        ..cp.clone()
    };
    assert!(matches!(
        v.update(&other.sign(&s.signer).unwrap(), &leaves, &[], T0),
        Err(SyncError::WrongOrigin { .. })
    ));
    assert_eq!(v.size(), 0);
}

#[test]
fn restore_checks_config_and_state() {
    let mut s = Server::new();
    publish(&mut s, 1);
    review(&mut s, 1, ReviewAction::Approve, 1);
    let mut v = Verifier::new(config(&[1, 2], 1)).unwrap();
    s.sync(&mut v, T0).unwrap();
    let state = v.state().clone();
    // A smaller roster is fine: the index holds those keys' reviews.
    let r = Verifier::restore(config(&[1], 1), state.clone()).unwrap();
    assert_eq!(r.status(&def(1), T0).unwrap(), Status::Approved);
    // A bigger roster needs a rebuild, which still refuses rollbacks.
    assert_eq!(
        Verifier::restore(config(&[1, 2, 3], 1), state.clone()).unwrap_err(),
        ConfigError::RosterGrew
    );
    let mut rebuilt = Verifier::resync(config(&[1, 2, 3], 1), &state).unwrap();
    let none: [Vec<u8>; 0] = [];
    let empty = Server::new();
    assert!(matches!(
        rebuilt.update(&empty.checkpoint(T0), &none, &[], T0),
        Err(SyncError::Rollback { .. })
    ));
    // A rebuild onto a different history of at least the anchored size is a fork.
    let mut fork = Server::new();
    publish(&mut fork, 3);
    publish(&mut fork, 4);
    assert!(matches!(
        fork.sync(&mut rebuilt, T0),
        Err(SyncError::Fork { .. })
    ));
    s.sync(&mut rebuilt, T0).unwrap();
    assert_eq!(rebuilt.status(&def(1), T0).unwrap(), Status::Approved);
    // Bad thresholds and corrupted state are refused.
    assert!(Verifier::new(config(&[1, 2], 3)).is_err());
    assert!(
        Verifier::new(config(&[1, 1], 2)).is_err(),
        "duplicates are one key"
    );
    assert!(Verifier::new(config(&[1], 0)).is_err());
    let mut corrupt = state.clone();
    corrupt.checkpoint.as_mut().unwrap().size = 5;
    assert_eq!(
        Verifier::restore(config(&[1], 1), corrupt).unwrap_err(),
        ConfigError::CorruptState
    );
}

// ---------------------------------------------------------------- trust rules

const STAGING: &str = "staging.pinfold.example/log";

fn statement(reviewer: u8, origin: &str, action: ReviewAction, d: u8, time: u64) -> Entry {
    Entry::Review(Review::sign(
        &key(reviewer),
        origin,
        action,
        def(d),
        "r",
        time,
    ))
}

#[test]
fn statements_signed_for_another_log_never_count() {
    use ReviewAction::*;
    let mut s = Server::new();
    let mut v = Verifier::new(config(&[1, 2], 1)).unwrap();
    publish(&mut s, 1);
    // Validly signed by a trusted reviewer, for the staging registry: a hostile log
    // appending it (the honest one refuses it) changes nothing.
    s.append(&statement(1, STAGING, Approve, 1, T0 + 5));
    let r = s.sync(&mut v, T0 + 10).unwrap();
    assert_eq!(r.ignored_entries, 1);
    assert_eq!(v.status(&def(1), T0 + 10).unwrap(), Status::Pending);
    // Nor does a staging revocation, or a staging publication make anything known.
    s.append(&statement(2, STAGING, Revoke, 1, T0 + 6));
    s.append(&Entry::Published(Published::sign(
        &key(100),
        STAGING,
        def(2),
        "demo",
        "1.0.0",
        T0,
    )));
    s.sync(&mut v, T0 + 10).unwrap();
    assert_eq!(v.status(&def(1), T0 + 10).unwrap(), Status::Pending);
    assert_eq!(v.status(&def(2), T0 + 10).unwrap(), Status::Unknown);
}

#[test]
fn the_statement_signed_last_wins_and_older_ones_are_stale() {
    use ReviewAction::*;
    let mut s = Server::new();
    let mut v = Verifier::new(config(&[1, 2], 1)).unwrap();
    publish(&mut s, 1);
    s.append(&statement(1, ORIGIN, Reject, 1, T0 + 20));
    // An approval signed before the rejection, appended after it: stale.
    s.append(&statement(1, ORIGIN, Approve, 1, T0 + 10));
    s.sync(&mut v, T0 + 30).unwrap();
    assert_eq!(v.status(&def(1), T0 + 30).unwrap(), Status::Rejected);
    let report = v.report(&def(1));
    assert_eq!(report.stale.len(), 1);
    assert_eq!(
        (
            report.stale[0].index,
            report.stale[0].time,
            report.stale[0].outranked_by
        ),
        (2, T0 + 10, T0 + 20)
    );
    assert_eq!(report.votes[0].action, Reject);
    // At the same signed time a rejection beats an approval in either log order.
    s.append(&statement(1, ORIGIN, Approve, 1, T0 + 20));
    s.append(&statement(2, ORIGIN, Approve, 1, T0 + 21));
    s.append(&statement(2, ORIGIN, Reject, 1, T0 + 21));
    s.sync(&mut v, T0 + 30).unwrap();
    assert_eq!(v.status(&def(1), T0 + 30).unwrap(), Status::Rejected);
    assert_eq!(v.report(&def(1)).stale_total, 2);
    // The same statement logged twice is not stale: nothing arrived out of order.
    s.append(&statement(2, ORIGIN, Reject, 1, T0 + 21));
    s.sync(&mut v, T0 + 30).unwrap();
    assert_eq!(v.report(&def(1)).stale_total, 2);
    // A newer approval is a change of mind and counts.
    s.append(&statement(1, ORIGIN, Approve, 1, T0 + 25));
    s.append(&statement(2, ORIGIN, Approve, 1, T0 + 25));
    s.sync(&mut v, T0 + 30).unwrap();
    assert_eq!(v.status(&def(1), T0 + 30).unwrap(), Status::Approved);
    // A revocation is final whatever its signed time.
    s.append(&statement(2, ORIGIN, Revoke, 1, T0));
    s.sync(&mut v, T0 + 30).unwrap();
    assert_eq!(v.status(&def(1), T0 + 30).unwrap(), Status::Revoked);
    // The index is the same however the log is split into updates.
    let mut whole = Verifier::new(config(&[1, 2], 1)).unwrap();
    s.sync(&mut whole, T0 + 30).unwrap();
    assert_eq!(whole.report(&def(1)), v.report(&def(1)));
}

#[test]
fn statement_times_beyond_the_bound_never_count() {
    use ReviewAction::*;
    let mut s = Server::new();
    let mut v = Verifier::new(config(&[1, 2], 1)).unwrap();
    publish(&mut s, 1);
    // More than a day ahead of the checkpoint that includes it: ignored, so it cannot
    // win every later comparison.
    s.append(&statement(
        1,
        ORIGIN,
        Approve,
        1,
        T0 + MAX_STATEMENT_FUTURE_SECS + 1,
    ));
    // Exactly a day ahead is still fine.
    s.append(&statement(
        2,
        ORIGIN,
        Reject,
        1,
        T0 + MAX_STATEMENT_FUTURE_SECS,
    ));
    let r = s.sync(&mut v, T0).unwrap();
    assert_eq!(r.ignored_entries, 1);
    assert_eq!(v.status(&def(1), T0).unwrap(), Status::Rejected);
    // A leaf with a time of 2^63 or more is not an entry at all, never a clamped one.
    for t in [1u64 << 63, u64::MAX] {
        let leaf = statement(1, ORIGIN, Approve, 1, t).to_leaf();
        assert_eq!(Entry::from_leaf(&leaf), Err(EntryError::TimeOutOfRange(t)));
    }
    let last = statement(1, ORIGIN, Approve, 1, MAX_STATEMENT_TIME).to_leaf();
    assert!(Entry::from_leaf(&last).is_ok());
}

#[test]
fn authors_approvals_of_their_own_publications_never_count() {
    use ReviewAction::*;
    let mut s = Server::new();
    let mut v = Verifier::new(config(&[1, 2, 3], 1)).unwrap();
    let publication = |author: u8, d: u8, name: &str, version: &str| {
        Entry::Published(Published::sign(
            &key(author),
            ORIGIN,
            def(d),
            name,
            version,
            T0,
        ))
    };
    // Reviewer 1 publishes `tool` 1.0 and approves it.
    s.append(&publication(1, 1, "tool", "1.0.0"));
    s.append(&statement(1, ORIGIN, Approve, 1, T0 + 1));
    // Someone else publishes `tool` 2.0; reviewer 1 approves that too: the name is theirs.
    s.append(&publication(9, 2, "tool", "2.0.0"));
    s.append(&statement(1, ORIGIN, Approve, 2, T0 + 2));
    // Reviewer 2 approves `other` 1.0, then publishes `other` 2.0 later: the approval of
    // the earlier version counts (they did not author it).
    s.append(&publication(9, 3, "other", "1.0.0"));
    s.append(&statement(2, ORIGIN, Approve, 3, T0 + 3));
    s.append(&publication(2, 4, "other", "2.0.0"));
    // The same identity published a second time by reviewer 3 (a hostile log can): 3 is
    // one of its authors too.
    s.append(&publication(3, 3, "other", "1.0.0"));
    s.sync(&mut v, T0 + 10).unwrap();
    assert_eq!(v.status(&def(1), T0 + 10).unwrap(), Status::Pending);
    assert_eq!(v.status(&def(2), T0 + 10).unwrap(), Status::Pending);
    assert_eq!(v.status(&def(3), T0 + 10).unwrap(), Status::Approved);
    let r = v.report(&def(2));
    assert_eq!(r.approvals, 0);
    assert!(r.votes.iter().all(|v| v.self_approval));
    let mut want = vec![key(1).public_key(), key(9).public_key()];
    want.sort();
    assert_eq!(r.authors, want);
    let r3 = v.report(&def(3));
    assert!(r3.authors.contains(&key(3).public_key()));
    assert!(!r3.authors.contains(&key(2).public_key()));
    s.append(&statement(3, ORIGIN, Approve, 3, T0 + 4));
    s.sync(&mut v, T0 + 10).unwrap();
    assert_eq!(v.report(&def(3)).approvals, 1);
    // Rejections by authors still count: failing closed is always allowed.
    s.append(&statement(1, ORIGIN, Reject, 2, T0 + 5));
    s.append(&statement(3, ORIGIN, Approve, 2, T0 + 5));
    s.sync(&mut v, T0 + 10).unwrap();
    assert_eq!(v.status(&def(2), T0 + 10).unwrap(), Status::Approved);
    let mut v2 = Verifier::new(config(&[1, 2, 3], 2)).unwrap();
    s.sync(&mut v2, T0 + 10).unwrap();
    assert_eq!(v2.status(&def(2), T0 + 10).unwrap(), Status::Rejected);
}

// ---------------------------------------------------------------- SPEC.md section 8

/// The block of SPEC.md opened by "```text log-vector NAME".
fn spec_log_vector(name: &str) -> String {
    let spec =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../task-defs/SPEC.md"))
            .unwrap();
    let open = format!("```text log-vector {name}\n");
    let rest = spec
        .split(&open)
        .nth(1)
        .unwrap_or_else(|| panic!("no vector {name}"));
    rest.split("\n```").next().unwrap().to_string()
}

#[test]
fn spec_log_vectors_match_the_code() {
    const SPEC_ORIGIN: &str = "registry.pinfold.example/log";
    let id: DefinitionId =
        "blake3:551d08b18b9d624b889398c432a860476c63e819de763e8ba4534558ce195a8a"
            .parse()
            .unwrap();
    let p = Published::sign(
        &key(1),
        SPEC_ORIGIN,
        id,
        "noop",
        "0.1.0-alpha.1",
        1_750_000_000,
    );
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    assert_eq!(text(p.statement()), spec_log_vector("publish-statement"));
    let publish_leaf = Entry::Published(p).to_leaf();
    assert_eq!(text(publish_leaf.clone()), spec_log_vector("publish-leaf"));
    let r = Review::sign(
        &key(2),
        SPEC_ORIGIN,
        ReviewAction::Approve,
        id,
        "read the source; \"noop\" does nothing",
        1_750_000_100,
    );
    assert_eq!(text(r.statement()), spec_log_vector("review-statement"));
    let review_leaf = Entry::Review(r).to_leaf();
    assert_eq!(text(review_leaf.clone()), spec_log_vector("review-leaf"));
    // The documented leaves parse back and verify.
    for leaf in [&publish_leaf, &review_leaf] {
        Entry::from_leaf(leaf).unwrap().verify().unwrap();
    }

    let log = NoteSigner::new(SPEC_ORIGIN, key(4)).unwrap();
    assert_eq!(log.verifier().to_vkey(), spec_log_vector("log-vkey"));
    let witness = Cosigner::new("witness.pinfold.example/w1", key(3)).unwrap();
    assert_eq!(
        witness.verifier().to_vkey(),
        spec_log_vector("witness-vkey")
    );
    let tree = MemoryTree::from_leaf_hashes([leaf_hash(&publish_leaf), leaf_hash(&review_leaf)]);
    let note = Checkpoint {
        origin: SPEC_ORIGIN.into(),
        size: 2,
        root: tree.root(),
        time: 1_750_000_200,
    }
    .sign(&log)
    .unwrap();
    let mut cosigned = Note::parse(&note).unwrap();
    cosigned
        .signatures
        .push(witness.cosign(&cosigned.text, 1_750_000_300));
    let want = spec_log_vector("cosigned-checkpoint") + "\n";
    assert_eq!(text(cosigned.to_bytes()), want);
    // Read back from the document: the vkeys parse and the cosignature verifies.
    let parsed = Note::parse(want.as_bytes()).unwrap();
    let wkey = CosignerKey::from_vkey(&spec_log_vector("witness-vkey")).unwrap();
    let policy = WitnessPolicy::new([wkey.clone()], 1).unwrap();
    assert_eq!(
        policy.check(&parsed, 1_750_000_300),
        Ok(vec![wkey.to_vkey()])
    );
    let lkey = NoteVerifier::from_vkey(&spec_log_vector("log-vkey")).unwrap();
    assert_eq!(Checkpoint::open(want.as_bytes(), &lkey).unwrap().size, 2);
}

#[test]
fn verifier_keys_whose_base64_holds_a_plus_parse() {
    // The key material is standard base64, which may hold `+`: only the first two `+`
    // separate the fields (as Go's sumdb/note reads them). About half of all keys have one.
    let mut seen = 0;
    for n in 0..=255u8 {
        let log = NoteSigner::new(ORIGIN, key(n)).unwrap().verifier();
        let witness = Cosigner::new("w.example/1", key(n)).unwrap().verifier();
        let (lv, wv) = (log.to_vkey(), witness.to_vkey());
        if lv.rsplit('+').next() != lv.splitn(3, '+').nth(2) {
            seen += 1;
        }
        assert_eq!(NoteVerifier::from_vkey(&lv).unwrap(), log, "{lv}");
        assert_eq!(CosignerKey::from_vkey(&wv).unwrap(), witness, "{wv}");
        // The two kinds never parse as each other.
        assert!(NoteVerifier::from_vkey(&wv).is_err());
        assert!(CosignerKey::from_vkey(&lv).is_err());
    }
    assert!(seen > 10, "{seen}");
}
