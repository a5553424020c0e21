//! Usage errors and the local job store, through the real `requestor` executable.

use std::process::{Command, Output};

fn requestor(data_dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_requestor"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("running requestor")
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {:?}, stderr {:?}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

#[test]
fn a_run_with_no_way_to_find_providers_is_a_usage_error_before_any_network() {
    let dir = tempfile::tempdir().unwrap();
    let o = requestor(dir.path(), &["run", "./wordfreq", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let v = json(&o);
    assert_eq!(v["ok"], false, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("--bootstrap"),
        "the error names the way out: {v}"
    );
}

#[test]
fn an_empty_job_store_lists_no_jobs_and_knows_no_job() {
    let dir = tempfile::tempdir().unwrap();
    let o = requestor(dir.path(), &["jobs", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(json(&o), serde_json::json!([]));
    for cmd in ["status", "get", "cancel", "logs"] {
        let o = requestor(dir.path(), &[cmd, "abcd", "--json"]);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {o:?}");
        let v = json(&o);
        assert!(
            v["error"].as_str().unwrap().contains("no job matches"),
            "{cmd}: {v}"
        );
    }
}
