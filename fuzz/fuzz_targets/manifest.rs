//! Fuzzes manifest parsing and full definition validation (`manifest::parse`,
//! `Definition::from_parts`), param resolution and argument rendering, and checks that
//! identity does not depend on how the manifest is spelled.
//!
//! Input: manifest text, optionally followed by a NUL byte and `name=value` lines that
//! are given as run params. The definition's files are fixed (the tiny wasm command and
//! two text files), so a manifest naming `tiny.wasm` can pass every check.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use task_defs::bundle;
use task_defs::identity::{DefinitionId, canonical_document};
use task_defs::manifest::{self, MAX_MANIFEST_BYTES};
use task_defs::{Definition, Rule};

fuzz_target!(|data: &[u8]| {
    let (text, params) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    // Manifests are read as UTF-8 text; other bytes never reach the parser.
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };

    let parsed = manifest::parse(text);
    // Parsing is a pure function of the text (no hash-map order may leak into it).
    assert_eq!(
        format!("{parsed:?}"),
        format!("{:?}", manifest::parse(text))
    );

    let mut files = pinfold_fuzz::tiny_files();
    files.insert("README.md".into(), b"# tiny\n".to_vec());
    files.insert("src/tiny.wat".into(), b"(module)\n".to_vec());
    let def = Definition::from_parts(text.to_string(), files.clone());

    if let Ok(m) = &parsed {
        exercise_params(m, params);
    }
    let Ok(def) = def else {
        return;
    };

    // Whatever validates also parses, to the manifest the definition holds.
    assert_eq!(parsed.as_ref().ok(), Some(&def.manifest));
    // The identity is the hash of the canonical document, and of nothing else.
    assert_eq!(
        def.id,
        DefinitionId::of_document(&canonical_document(&def.manifest, &def.digests))
    );
    // A bundle of it reads back as the same definition.
    let again = bundle::read(&bundle::pack(&def)).expect("a packed valid definition reads back");
    assert_eq!(again.id, def.id);
    assert_eq!(again.manifest, def.manifest);
    assert_eq!(again.manifest_text, def.manifest_text);

    // Re-spelling the manifest (toml's own writer: comments gone, tables and strings laid
    // out its way) must keep validity and identity: identity comes from meaning, not bytes.
    let Ok(table) = text.parse::<toml::Table>() else {
        panic!("a manifest that validates is a TOML table");
    };
    let Ok(respelled) = toml::to_string(&table) else {
        return;
    };
    if respelled.len() > MAX_MANIFEST_BYTES {
        return;
    }
    match Definition::from_parts(respelled.clone(), files) {
        Ok(d) => assert_eq!(d.id, def.id, "re-spelled manifest:\n{respelled}"),
        Err(e) => {
            // The credential scan also reads the manifest as written (comments included),
            // and toml's writer may lay a key and its value out so that the text matches
            // an assignment pattern the original spelling did not: such hits carry a line.
            // A hit in the decoded values (no line) would have refused the original too.
            let only_text_hits = e.diagnostics().is_some_and(|d| {
                d.0.iter()
                    .all(|d| d.rule == Rule::Secret && d.line.is_some())
            });
            assert!(
                only_text_hits,
                "re-spelled manifest no longer validates: {e}\n{respelled}"
            );
        }
    }
});

/// Resolves `name=value` lines as run params and renders the arguments; both must answer
/// with an error or a value, never panic, and rendering uses only declared params.
fn exercise_params(m: &task_defs::Manifest, params: &[u8]) {
    let Ok(params) = std::str::from_utf8(params) else {
        return;
    };
    let given: BTreeMap<String, String> = params
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Ok(values) = m.resolve_params(&given) {
        for (name, v) in &values {
            m.params[name]
                .check_value(v)
                .expect("a resolved value passes its own check");
        }
        let _ = m.render_args(&values);
    }
}
