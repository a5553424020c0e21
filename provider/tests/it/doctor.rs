//! `provider doctor` end to end: the JSON report, its check ids, the runc CVE checks, the isolation canary, the vm-recommended advice and the exit code.

use std::process::Command;
use std::time::Duration;

use provider::DockerConfig;
use provider::docker::IsolationPolicy;
use provider::doctor::{CheckStatus, DoctorOptions};

use crate::docker::runtimes_registered;

#[test]
fn doctor_json_reports_every_check() {
    pinfold_test_support::heavy!("docker");
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
        "docker.runtime",
        "docker.isolation",
        "docker.runtime-leaks",
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
    pinfold_test_support::heavy!("docker");
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

/// `provider doctor --json` under `PINFOLD_DOCKER_RUNTIME=runtime`: the report and the exit code.
fn doctor_with_runtime(runtime: &str) -> (serde_json::Value, Option<i32>) {
    let tmp = tempfile::tempdir().unwrap();
    let r = Command::new(env!("CARGO_BIN_EXE_provider"))
        .args(["doctor", "--json"])
        .env("PINFOLD_CACHE_DIR", tmp.path().join("cache"))
        .env("PINFOLD_DOCKER_RUNTIME", runtime)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&r.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}): {}",
            String::from_utf8_lossy(&r.stderr)
        )
    });
    (v, r.status.code())
}

fn check<'a>(v: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no {id} check in {v}"))
}

/// The doctor runs a canary under the configured runtime and reports what it found from
/// inside: a registered runtime that fails every start, or hangs, fails the check (and the
/// exit code) within the canary's bound; gVisor is recognised by its kernel; a runtime
/// named like a VM but running runc is reported as the host kernel. Before, a registered
/// runtime passed whatever it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_runs_a_canary_and_fails_a_broken_or_hanging_runtime() {
    pinfold_test_support::heavy!("docker");
    runtimes_registered(&[
        "runsc",
        "pinfold-test-runsc-plain",
        "pinfold-test-runsc-kvm",
        "pinfold-test-kata-x",
    ])
    .await;
    for (runtime, status, saw) in [
        ("runsc", "pass", "gVisor"),
        ("pinfold-test-kata-x", "pass", "the host kernel"),
        (
            "pinfold-test-runsc-plain",
            "fail",
            "failed to start the canary",
        ),
        ("pinfold-test-runsc-kvm", "fail", "the runtime hangs"),
    ] {
        let started = std::time::Instant::now();
        let (v, code) = tokio::task::spawn_blocking(move || doctor_with_runtime(runtime))
            .await
            .unwrap();
        let c = check(&v, "docker.runtime");
        println!(
            "figure: doctor with {runtime}: {} in {} ms",
            c["status"],
            started.elapsed().as_millis()
        );
        assert_eq!(c["status"], status, "{runtime}: {c}");
        assert!(c["seen"].as_str().unwrap().contains(saw), "{runtime}: {c}");
        if status == "fail" {
            assert_eq!(code, Some(1), "{runtime}: a failed check is exit 1");
            assert!(c["fix"].as_str().unwrap().contains("daemon.json"), "{c}");
        }
        let iso = check(&v, "docker.isolation");
        assert!(
            iso["seen"]
                .as_str()
                .unwrap()
                .contains(&format!("runtime {runtime}")),
            "{iso}"
        );
    }
}

async fn isolation_check(runtime: Option<&str>) -> provider::doctor::Check {
    let tmp = tempfile::tempdir().unwrap();
    let report = provider::doctor::run(&DoctorOptions {
        docker: DockerConfig {
            runtime: runtime.map(String::from),
            isolation: IsolationPolicy::VmRecommended,
            // This machine is itself a VM; count it as bare metal so that only the runtime
            // is judged.
            host_vm: Some(false),
            ..DockerConfig::default()
        },
        cache_dir: Some(tmp.path().join("cache")),
        api_timeout: Duration::from_secs(10),
        data_dir: None,
    })
    .await;
    report
        .checks
        .into_iter()
        .find(|c| c.id == "docker.isolation")
        .expect("a docker.isolation check")
}

/// `vm-recommended` warns when tasks share the host's kernel and says what to do; doing it
/// (here: the runtime set to gVisor's `runsc`) makes the warning go. Before, the advice
/// named runsc but the warning stayed. A runtime that only has a VM's name does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_the_vm_recommended_advice_clears_the_warning() {
    pinfold_test_support::heavy!("docker");
    runtimes_registered(&["runsc", "pinfold-test-kata-x"]).await;
    let bare = isolation_check(None).await;
    assert_eq!(bare.status, CheckStatus::Warn, "{bare:?}");
    let fix = bare.fix.clone().unwrap();
    assert!(
        fix.contains("PINFOLD_DOCKER_RUNTIME") && fix.contains("runsc"),
        "{fix}"
    );
    let followed = isolation_check(Some("runsc")).await;
    assert_eq!(followed.status, CheckStatus::Pass, "{followed:?}");
    assert!(followed.seen.contains("gVisor"), "{followed:?}");
    let misnamed = isolation_check(Some("pinfold-test-kata-x")).await;
    assert_eq!(misnamed.status, CheckStatus::Warn, "{misnamed:?}");
}
