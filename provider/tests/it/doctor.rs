//! `provider doctor` end to end: the JSON report, its check ids, the runc CVE checks and the exit code.

use std::process::Command;

#[test]
fn doctor_json_reports_every_check() {
    let tmp = tempfile::tempdir().unwrap();
    let r = Command::new(env!("CARGO_BIN_EXE_provider"))
        .args(["doctor", "--json"])
        .env("PINFOLD_CACHE_DIR", tmp.path().join("cache"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}): {}",
            String::from_utf8_lossy(&r.stderr)
        )
    });
    let checks = v["checks"].as_array().expect("checks array");
    let ids: Vec<&str> = checks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    for id in [
        "provider.user",
        "docker.socket",
        "docker.reachable",
        "runc.cve-2019-5736",
        "runc.cve-2024-21626",
        "runc.cve-2025-31133",
        "docker.seccomp",
        "docker.lsm",
        "docker.userns",
        "docker.no-new-privileges",
        "docker.live-restore",
        "docker.icc",
        "containerd.version",
        "docker.limits",
        "docker.mount-namespace",
        "docker.disk",
        "provider.scratch",
        "docker.isolation",
        "wasm.engine",
        "wasm.cache-dir",
    ] {
        assert!(ids.contains(&id), "missing check {id} in {ids:?}");
    }
    for c in checks {
        let status = c["status"].as_str().unwrap();
        assert!(["pass", "warn", "fail"].contains(&status), "{c}");
        assert!(!c["seen"].as_str().unwrap().is_empty(), "{c}");
        // Anything that did not pass says how to fix it.
        assert_eq!(status == "pass", c["fix"].is_null(), "{c}");
    }
    // The runc checks say which version they saw.
    let runc = checks
        .iter()
        .find(|c| c["id"] == "runc.cve-2024-21626")
        .unwrap();
    assert!(runc["seen"].as_str().unwrap().contains("runc 1."), "{runc}");
    // The exit code is non-zero exactly when a check failed.
    let any_fail = checks.iter().any(|c| c["status"] == "fail");
    assert_eq!(v["failed"].as_bool().unwrap(), any_fail);
    assert_eq!(r.status.code(), Some(i32::from(any_fail)), "{v}");
    // A fresh cache directory passes (it will be created 0700).
    let cache = checks.iter().find(|c| c["id"] == "wasm.cache-dir").unwrap();
    assert_eq!(cache["status"], "pass", "{cache}");
}

#[test]
fn doctor_text_lists_checks_and_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let r = Command::new(env!("CARGO_BIN_EXE_provider"))
        .arg("doctor")
        .env("PINFOLD_CACHE_DIR", tmp.path().join("cache"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(out.contains("runc.cve-2024-21626"), "{out}");
    assert!(out.contains("passed,") && out.contains("failed"), "{out}");
}
