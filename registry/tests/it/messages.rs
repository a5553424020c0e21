//! Error messages an author or operator reads: every schema problem at once, suggestions
//! for misspelt keys, and no internals (type names, doubled OS errors, library jargon).

use std::process::Command;

use crate::harness::Dir;

fn task_defs(args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_task-defs"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn every_schema_problem_is_reported_at_once_with_suggestions() {
    let d = Dir::wasm();
    d.edit("memory = \"1MiB\"", "memroy = \"1MiB\"");
    d.edit("timeout = \"250ms\"", "timeout = 250");
    d.edit("kind = \"wasm\"", "kind = \"wasm\"\nentypoint = [\"/x\"]");
    d.edit("deterministic = true", "deterministic = \"yes\"");
    d.edit("type = \"int\"", "type = \"int\"\nmaximum = 3");
    d.edit("license = \"CC0-1.0\"", "licence = \"CC0-1.0\"");
    let problems = d.problems();
    let text = problems.to_string();
    let want = [
        (
            Some("limits.memroy"),
            "unknown key `memroy` (did you mean `memory`?)",
        ),
        (
            Some("limits.timeout"),
            "invalid type: integer `250`, expected a string",
        ),
        (Some("runtime.entypoint"), "did you mean `entrypoint`?"),
        (Some("capabilities.deterministic"), "expected a boolean"),
        (Some("params.count.maximum"), "did you mean `max`?"),
        (Some("licence"), "did you mean `license`?"),
        (None, "missing field `license`"),
    ];
    for (key, msg) in want {
        assert!(
            problems
                .iter()
                .any(|p| p.key.as_deref() == key && p.message.contains(msg)),
            "no {key:?}: {msg:?} in:\n{text}"
        );
    }
    assert_eq!(problems.len(), want.len(), "{text}");
    // Each is on its own line of the manifest.
    let mem = problems
        .iter()
        .find(|p| p.key.as_deref() == Some("limits.memroy"))
        .unwrap();
    let line = d
        .manifest()
        .lines()
        .position(|l| l.starts_with("memroy"))
        .unwrap()
        + 1;
    assert_eq!(mem.line, Some(line));
}

#[test]
fn a_size_of_the_wrong_type_says_what_to_write_not_which_enum_failed() {
    let d = Dir::wasm();
    d.edit("memory = \"1MiB\"", "memory = true");
    let text = d.problems().to_string();
    assert!(
        !text.contains("untagged") && !text.contains("RawSize"),
        "{text}"
    );
    assert!(
        text.contains("limits.memory: invalid type: boolean `true`, expected a size: a byte count or a string such as \"64MiB\""),
        "{text}"
    );
}

#[test]
fn a_registry_url_without_a_scheme_is_named_as_such() {
    let id = format!("blake3:{}", "0".repeat(64));
    let (code, _, err) = task_defs(&["status", &id, "--registry", "127.0.0.1:1"]);
    assert_ne!(code, Some(0));
    assert!(!err.contains("invalid format"), "{err}");
    assert!(
        err.contains("needs a scheme, e.g. http://127.0.0.1:8417"),
        "{err}"
    );
}

#[test]
fn an_os_error_is_printed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let (code, _, err) = task_defs(&[
        "publish",
        missing.to_str().unwrap(),
        "--registry",
        "http://127.0.0.1:1",
        "--key",
        missing.to_str().unwrap(),
    ]);
    assert_ne!(code, Some(0));
    assert_eq!(err.matches("os error").count(), 1, "{err}");
}
