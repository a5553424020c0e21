//! Identity: golden vectors from SPEC.md, reformat invariance, change sensitivity.

use std::fs;

use crate::harness::{Dir, FIXTURES};

fn spec_blocks(kind: &str) -> Vec<String> {
    let spec = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/SPEC.md")).unwrap();
    let open = format!("```{kind}\n");
    spec.split(&open)
        .skip(1)
        .map(|rest| rest.split("\n```").next().unwrap().to_string())
        .collect()
}

#[test]
fn spec_vectors_match_the_code() {
    let ids = spec_blocks("text id");
    let docs = spec_blocks("json canonical");
    assert_eq!(ids.len(), 2, "SPEC.md should hold two id vectors");
    assert_eq!(docs.len(), 2);
    for ((name, id), doc) in ["vector-docker", "vector-wasm"].iter().zip(&ids).zip(&docs) {
        let def = task_defs::Definition::load(std::path::Path::new(&format!("{FIXTURES}/{name}")))
            .unwrap();
        assert_eq!(
            &def.id.to_string(),
            id,
            "{name}: identity differs from SPEC.md"
        );
        assert_eq!(
            String::from_utf8(def.canonical_document()).unwrap(),
            *doc,
            "{name}: canonical document differs"
        );
        // The identity is the plain BLAKE3 of the documented bytes: anyone can recompute it.
        assert_eq!(
            format!("blake3:{}", blake3::hash(doc.as_bytes()).to_hex()),
            *id
        );
    }
}

#[test]
fn golden_identities_of_examples_are_stable() {
    // Pinned so that an accidental change to the canonical encoding is caught; update only
    // together with a new format version (or when an example's files change on purpose).
    for name in ["sha256sum", "wordfreq", "nbody"] {
        let d = Dir::copy_of(&format!("{}/{name}", crate::harness::EXAMPLES));
        let id = d.id();
        let via_bundle = {
            let def = d.load().unwrap();
            task_defs::bundle::read(&task_defs::bundle::pack(&def))
                .unwrap()
                .id
                .to_string()
        };
        assert_eq!(id, via_bundle, "{name}: directory and bundle disagree");
        assert!(id.starts_with("blake3:") && id.len() == 71);
    }
}

#[test]
fn reformatting_the_manifest_keeps_the_identity() {
    let d = Dir::wasm();
    let before = d.id();
    // Comments, blank lines, key order, quoting, inline vs dotted tables, spelled-out
    // defaults and different unit spellings all mean the same manifest.
    d.set_manifest(
        r#"
# a comment
name    = 'noop'
format  = 1
license = "CC0-1.0"
version = "0.1.0-alpha.1"
description = """Does nothing, deterministically"""
source = 'src/'
authors = []

[capabilities]
secrets = ["API_TOKEN"]   # names only
env.TZ = "UTC"
env.LANG = "C"
deterministic = true
network = false

[limits]
output = 1024
fuel = 1000000
timeout = "250ms"
memory = 1048576

[io]
output = "/output"
input = "/input"

[params.count]
max = 10
min = 0
default = 3
type = "int"

[runtime]
args = [ "{count}", "{{literal}}", ]
module = "noop.wasm"
kind = "wasm"
"#,
    );
    assert_eq!(d.id(), before);
}

#[test]
fn every_semantic_change_changes_the_identity() {
    let base = Dir::wasm().id();
    let edits: &[(&str, &str)] = &[
        ("name = \"noop\"", "name = \"noop2\""),
        ("0.1.0-alpha.1", "0.1.0-alpha.2"),
        ("Does nothing", "Does nothing at all"),
        ("CC0-1.0", "MIT"),
        ("source = \"src/\"", "source = \"src/noop.txt\""),
        ("\"{{literal}}\"", "\"{{literal}}\", \"x\""),
        ("default = 3", "default = 4"),
        ("min = 0", "min = 1"),
        ("max = 10", "max = 9"),
        ("memory = \"1MiB\"", "memory = \"2MiB\""),
        ("timeout = \"250ms\"", "timeout = \"251ms\""),
        ("output = \"1KiB\"", "output = \"2KiB\""),
        ("fuel = 1_000_000", "fuel = 1_000_001"),
        ("deterministic = true", "deterministic = false"),
        ("TZ = \"UTC\"", "TZ = \"GMT\""),
        ("secrets = [\"API_TOKEN\"]", "secrets = [\"API_TOKEN2\"]"),
        ("[capabilities]", "[io]\ninput = \"/in\"\n[capabilities]"),
    ];
    let mut seen = std::collections::BTreeSet::from([base.clone()]);
    for (from, to) in edits {
        let d = Dir::wasm();
        d.edit(from, to);
        let id = d.id();
        assert!(
            seen.insert(id),
            "editing {from:?} -> {to:?} did not give a new identity"
        );
    }
}

#[test]
fn a_single_changed_byte_in_any_file_changes_the_identity() {
    let base = Dir::wasm().id();
    let mut ids = std::collections::BTreeSet::new();
    let text = fs::read(format!("{FIXTURES}/vector-wasm/src/noop.txt")).unwrap();
    for i in 0..text.len() {
        let d = Dir::wasm();
        let mut t = text.clone();
        t[i] ^= 0x01;
        d.write("src/noop.txt", &t);
        let id = d.id();
        assert_ne!(id, base, "flipping byte {i} kept the identity");
        ids.insert(id);
    }
    assert_eq!(ids.len(), text.len(), "two different files hashed alike");
    // Adding a file, or renaming one, is a change too.
    let d = Dir::wasm();
    d.write("src/extra.txt", b"");
    assert_ne!(d.id(), base);
    let d = Dir::wasm();
    fs::rename(d.path("src/noop.txt"), d.path("src/noop2.txt")).unwrap();
    assert_ne!(d.id(), base);
}

#[test]
fn identity_round_trips_through_text() {
    let id: task_defs::DefinitionId = Dir::wasm().id().parse().unwrap();
    assert_eq!(
        id.to_string().parse::<task_defs::DefinitionId>().unwrap(),
        id
    );
    for bad in [
        "",
        "blake3:",
        "sha256:00",
        &format!("blake3:{}", "A".repeat(64)),
        &format!("blake3:{}", "0".repeat(63)),
    ] {
        assert!(
            bad.parse::<task_defs::DefinitionId>().is_err(),
            "{bad:?} parsed"
        );
    }
}
