//! Property tests: arbitrary bytes as a manifest or a bundle never panic.

use std::collections::BTreeMap;

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_manifest_text_never_panics(text in ".{0,2000}") {
        let _ = task_defs::Definition::from_parts(text, BTreeMap::new());
    }

    #[test]
    fn arbitrary_manifest_bytes_near_valid_never_panic(edits in proptest::collection::vec((0usize..2000, any::<u8>()), 0..8)) {
        // Mutations of a valid manifest reach far deeper into the checks than random text.
        let base = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vector-wasm/taskdef.toml")).unwrap();
        let mut m = base.clone();
        for (i, b) in edits { let n = m.len(); m[i % n] = b; }
        let text = String::from_utf8_lossy(&m).into_owned();
        let files = BTreeMap::from([("noop.wasm".to_string(), std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vector-wasm/noop.wasm")).unwrap()), ("src/noop.txt".to_string(), b"x".to_vec())]);
        let _ = task_defs::Definition::from_parts(text, files);
    }

    #[test]
    fn arbitrary_bundle_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = task_defs::bundle::read(&bytes);
    }

    #[test]
    fn mutated_bundles_never_panic(edits in proptest::collection::vec((0usize..8192, any::<u8>()), 1..16)) {
        let def = task_defs::Definition::load(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vector-wasm"))).unwrap();
        let mut b = task_defs::bundle::pack(&def);
        for (i, v) in edits { let n = b.len(); b[i % n] = v; }
        let _ = task_defs::bundle::read(&b);
    }

    #[test]
    fn arbitrary_modules_never_panic_the_footprint(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend(bytes);
        let _ = task_defs::footprint::analyze(&m);
    }
}
