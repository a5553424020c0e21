//! Bundles: deterministic packing, and refusal of every hostile archive shape.

use task_defs::{Rule, bundle};

use crate::harness::{Dir, assert_problem};

/// One raw ustar entry, written by hand so tests can express what no honest packer writes.
fn raw_entry(name: &[u8], typeflag: u8, data: &[u8], link: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn archive(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = entries.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// The vector-wasm definition's entries, as an honest bundle would hold them.
fn honest_entries() -> Vec<Vec<u8>> {
    let def = Dir::wasm().load().unwrap();
    let mut v = vec![raw_entry(
        b"taskdef.toml",
        b'0',
        def.manifest_text.as_bytes(),
        b"",
    )];
    for (p, b) in &def.files {
        v.push(raw_entry(p.as_bytes(), b'0', b, b""));
    }
    v
}

fn refused(bytes: &[u8], needle: &str) {
    match bundle::read(bytes) {
        Ok(d) => panic!("hostile bundle accepted as {}", d.id),
        Err(task_defs::Error::Invalid(p)) => assert_problem(&p, Rule::Bundle, None, needle),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[test]
fn packing_is_deterministic_and_round_trips() {
    let d = Dir::wasm();
    let def = d.load().unwrap();
    let a = bundle::pack(&def);
    // Same content at another path, with other mtimes and modes: same bytes.
    let d2 = Dir::wasm();
    std::fs::write(
        d2.path("src/noop.txt"),
        std::fs::read(d.path("src/noop.txt")).unwrap(),
    )
    .unwrap();
    let b = bundle::pack(&d2.load().unwrap());
    assert_eq!(a, b);
    let back = bundle::read(&a).unwrap();
    assert_eq!(back.id, def.id);
    assert_eq!(back.files, def.files);
    assert_eq!(back.manifest_text, def.manifest_text);
    // The hand-written honest archive reads back to the same identity too.
    assert_eq!(
        bundle::read(&archive(&honest_entries())).unwrap().id,
        def.id
    );
}

#[test]
fn unpack_writes_the_definition_and_reverifies() {
    let def = Dir::wasm().load().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let got = bundle::unpack(&bundle::pack(&def), &out).unwrap();
    assert_eq!(got.id, def.id);
    assert_eq!(task_defs::Definition::load(&out).unwrap().id, def.id);
    // Unpacking into a non-empty directory is refused.
    let e = bundle::unpack(&bundle::pack(&def), &out).unwrap_err();
    assert!(e.to_string().contains("not empty"), "{e}");
}

#[test]
fn path_traversal_is_refused() {
    for name in [
        &b"../evil"[..],
        b"src/../../evil",
        b"/etc/evil",
        b"./taskdef2",
        b"a//b",
    ] {
        let mut e = honest_entries();
        e.push(raw_entry(name, b'0', b"x", b""));
        refused(&archive(&e), "unsafe path");
    }
}

#[test]
fn nothing_is_written_when_a_bundle_is_hostile() {
    let mut e = honest_entries();
    e.push(raw_entry(b"../escaped", b'0', b"x", b""));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("inner").join("out");
    assert!(bundle::unpack(&archive(&e), &out).is_err());
    assert!(!out.exists());
    assert!(!tmp.path().join("inner").join("escaped").exists());
    assert!(!tmp.path().join("escaped").exists());
}

#[test]
fn links_and_devices_are_refused() {
    for (ty, needle) in [
        (b'2', "links are not allowed"),
        (b'1', "links are not allowed"),
        (b'3', "device files"),
        (b'4', "device files"),
        (b'6', "device files"),
    ] {
        let mut e = honest_entries();
        e.push(raw_entry(b"src/link", ty, b"", b"/etc/passwd"));
        refused(&archive(&e), needle);
    }
}

#[test]
fn duplicates_are_refused() {
    let mut e = honest_entries();
    e.push(raw_entry(b"src/noop.txt", b'0', b"second", b""));
    refused(&archive(&e), "duplicate entry");
    let mut e = honest_entries();
    e.push(raw_entry(b"SRC/NOOP.TXT", b'0', b"case", b""));
    refused(&archive(&e), "duplicate entry");
    let mut e = honest_entries();
    e.push(raw_entry(b"taskdef.toml", b'0', b"format = 1", b""));
    refused(&archive(&e), "duplicate entry");
    let mut e = honest_entries();
    e.push(raw_entry(b"src/noop.txt/inner", b'0', b"x", b""));
    refused(&archive(&e), "both a file and a directory");
}

#[test]
fn oversized_entries_are_refused_before_reading_them() {
    // A header claiming 8 GiB must be refused from the header alone.
    let mut h = raw_entry(b"big.bin", b'0', b"", b"");
    h[124..136].copy_from_slice(format!("{:011o}\0", (8u64 << 30) - 1).as_bytes());
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h[..512].iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut e = honest_entries();
    e.push(h);
    refused(&archive(&e), "more than the");
    // A manifest over its own cap.
    let big = vec![b'#'; task_defs::manifest::MAX_MANIFEST_BYTES + 1];
    refused(
        &archive(&[raw_entry(b"taskdef.toml", b'0', &big, b"")]),
        "more than the",
    );
}

#[test]
fn truncated_and_garbage_archives_are_refused() {
    let good = archive(&honest_entries());
    assert!(bundle::read(&good[..good.len() / 2 + 7]).is_err());
    assert!(bundle::read(b"definitely not a tar").is_err());
    refused(&archive(&[]), "no taskdef.toml");
}

#[test]
fn a_tampered_bundle_gets_a_different_identity() {
    let def = Dir::wasm().load().unwrap();
    let mut e = honest_entries();
    let last = e.len() - 1;
    e[last] = raw_entry(
        b"src/noop.txt",
        b'0',
        b"A module that does SOMETHING.\n",
        b"",
    );
    let tampered = bundle::read(&archive(&e)).unwrap();
    assert_ne!(tampered.id, def.id);
    let err = tampered.expect_id(&def.id).unwrap_err();
    assert!(err.to_string().contains("identity mismatch"), "{err}");
}

#[test]
fn hostile_definition_content_in_a_bundle_is_still_validated() {
    let mut e = honest_entries();
    e.push(raw_entry(
        b"src/id_rsa",
        b'0',
        b"-----BEGIN RSA PRIVATE KEY-----\nMIIE\n",
        b"",
    ));
    match bundle::read(&archive(&e)) {
        Err(task_defs::Error::Invalid(p)) => {
            assert_problem(&p, Rule::Secret, None, "PEM private key")
        }
        other => panic!("expected a secret to be found, got {other:?}"),
    }
}
