//! Isolation that is measured, not named: the canary judges runtimes by what a container sees, gVisor's overhead is accounted for so limits mean the same under runc and runsc, and runtime processes that outlive their containers are found and killed.
//!
//! These tests need the runtimes `provider/testdata/gvisor/register.sh` registers (`runsc`
//! with `--network=none`, and the fixtures `pinfold-test-runsc-plain`, broken;
//! `pinfold-test-runsc-kvm`, hanging; `pinfold-test-kata-x`, runc under a VM's name) and
//! fail loudly without them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use provider::docker::headroom::Kernel;
use provider::docker::leaks::{self, RuntimeGroup};
use provider::docker::{self, DockerError, IsolationPolicy, hardening};
use provider::{DockerExecutor, Status};
use task_defs::manifest::Isolation;

use crate::docker::{
    Rt, Spec, assert_no_containers, config, config_on, docker_def, docker_ready, executor_on,
    executor_with, image, run_in, runtimes_registered,
};
use crate::harness::Case;

const PLAIN: &str = "pinfold-test-runsc-plain";
const KVM: &str = "pinfold-test-runsc-kvm";
const KATA_X: &str = "pinfold-test-kata-x";

/// Runtime process groups (shims, sandboxes, gofers) of Docker's containers right now.
fn groups() -> Vec<RuntimeGroup> {
    leaks::scan(leaks::DOCKER_NAMESPACE)
}

/// Groups whose container is `id`.
fn groups_of(id: &str) -> Vec<RuntimeGroup> {
    groups().into_iter().filter(|g| g.container == id).collect()
}

/// The ids of the runtime groups the engine does not list (leaks), now.
async fn leaked(d: &bollard::Docker) -> Vec<String> {
    docker::runtime_leaks(d, Duration::from_secs(30), None)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.container)
        .collect()
}

/// Containerd's record of a container, through `ctr` (which CI's containerd ships).
fn containerd_lists(id: &str) -> bool {
    let out = std::process::Command::new("ctr")
        .args([
            "--address",
            "/var/run/docker/containerd/containerd.sock",
            "--namespace",
            leaks::DOCKER_NAMESPACE,
            "containers",
            "list",
            "--quiet",
        ])
        .output()
        .expect("ctr (containerd's client) must be installed for this test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == id)
}

/// The same definition, close to its limits, behaves the same under runc and gVisor: 16
/// processes and 12 of 16 MiB succeed, a 17th process fails the fork, 64 MiB is
/// `memory_exceeded`. Before the headroom, gVisor's own threads and memory counted against
/// the task's limits and none of these ran (pids ≤ 32 does not start, 16 MiB is killed in
/// create).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_definition_near_its_limits_behaves_the_same_under_runc_and_runsc() {
    pinfold_test_support::heavy!("docker");
    let case = Case::new();
    let runc = executor_on(Rt::Runc, "near").await;
    let runsc = executor_on(Rt::Runsc, "near").await;
    assert_eq!(runsc.isolation_report().kernel(), Kernel::Gvisor);
    // docker-init, the shell, N sleeping processes and dd: N + 3 processes.
    let script = |sleepers: u32, dd: &str| {
        format!(
            "i=0; while [ $i -lt {sleepers} ]; do sleep 3 & i=$((i+1)); done; echo started $i; \
             dd if=/dev/zero of=/dev/null bs={dd} count=1 2>/dev/null && echo dd-ok"
        )
    };
    let cases = [
        ("at-the-pids-limit", script(13, "12M"), Status::Succeeded),
        ("one-process-over", script(14, "1M"), Status::Failed),
        ("memory-over", script(0, "64M"), Status::MemoryExceeded),
    ];
    for (name, sh, want) in cases {
        let mut spec = Spec::sh(&sh);
        spec.pids = 16;
        spec.memory = "16MiB";
        // A tiny output cap keeps the output tmpfs's allowance (charged to the memory
        // limit) at 4 MiB, so 16 MiB is close to what the task may really use.
        spec.output = "1KiB";
        spec.timeout = "60s";
        let def = docker_def(&case, name, &spec);
        let mut seen = Vec::new();
        for (rt, exec) in [(Rt::Runc, &runc), (Rt::Runsc, &runsc)] {
            let (input, output) = case.run_dirs();
            let o = run_in(exec, &def, input, output).await;
            println!(
                "figure: {name} under {}: {:?} exit {:?} in {} ms",
                rt.as_str(),
                o.status,
                o.exit_code,
                o.usage.measured.wall_us / 1000
            );
            assert_eq!(o.status, want, "{name} under {}: {o:?}", rt.as_str());
            seen.push((o.status, o.exit_code, o.stdout_text().to_string()));
        }
        assert_eq!(seen[0], seen[1], "{name}: runc and gVisor differ");
    }
    assert_no_containers(&runc).await;
    assert_no_containers(&runsc).await;
}

/// A runtime's name proves nothing: `pinfold-test-kata-x` is runc, and the canary sees the
/// host's kernel (before, the name alone made it a VM, admitted under `vm-required`);
/// `runsc`'s canary sees gVisor and `sandboxed-runtime` definitions run; runc is a
/// container. The host is told to count as no VM so only the runtime is judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_comes_from_the_canary_not_the_runtime_name() {
    pinfold_test_support::heavy!("docker");
    runtimes_registered(&["runsc", KATA_X]).await;
    let case = Case::new();
    let mut found = Vec::new();
    for (runtime, kernel, level) in [
        (None, Kernel::Host, Isolation::Container),
        (Some(KATA_X), Kernel::Host, Isolation::Container),
        (Some("runsc"), Kernel::Gvisor, Isolation::SandboxedRuntime),
    ] {
        let mut cfg = config("canary-name");
        cfg.runtime = runtime.map(String::from);
        cfg.host_vm = Some(false);
        cfg.isolation = IsolationPolicy::VmRequired;
        let exec = executor_with(cfg).await;
        let r = exec.isolation_report();
        let canary = r.canary.as_ref().expect("the canary ran");
        assert_eq!(canary.kernel, kernel, "{runtime:?}: {canary:?}");
        assert_eq!(exec.isolation(), level, "{runtime:?}");
        found.push(format!(
            "{}: {} in {} ms",
            canary.runtime,
            canary.kernel.as_str(),
            canary.took.as_millis()
        ));
        // vm-required admits nothing that is not a VM, whatever the runtime is called.
        let mut spec = Spec::sh("echo ran");
        spec.isolation = "container";
        let def = docker_def(&case, "vm-required", &spec);
        let (input, output) = case.run_dirs();
        let o = run_in(&exec, &def, input, output).await;
        assert_eq!(o.status, Status::Rejected, "{runtime:?}: {o:?}");
        assert!(o.reason.unwrap().contains("vm-required"));
    }
    println!("figure: canary {}", found.join(", "));
    // Under vm-recommended, gVisor runs what asks for a sandboxing runtime.
    let exec = executor_on(Rt::Runsc, "canary-sandboxed").await;
    let mut spec = Spec::sh("dmesg | head -n 1");
    spec.isolation = "sandboxed-runtime";
    let def = docker_def(&case, "sandboxed", &spec);
    let (input, output) = case.run_dirs();
    let o = run_in(&exec, &def, input, output).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert!(o.stdout_text().contains("gVisor"), "{o:?}");
}

/// A registered runtime that fails every start, or hangs, fails the canary: the executor
/// refuses to start under it (before: it started, and every task failed or hung), within
/// the canary's bound, leaving no container and no runtime process behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_or_hanging_runtime_fails_the_canary_and_leaves_nothing() {
    pinfold_test_support::heavy!("docker");
    runtimes_registered(&[PLAIN, KVM]).await;
    let d = docker_ready().await;
    for (runtime, bound) in [
        (PLAIN, Duration::from_secs(20)),
        (KVM, Duration::from_secs(6)),
    ] {
        let mut cfg = config("canary-broken");
        cfg.runtime = Some(runtime.into());
        cfg.canary_timeout = bound;
        let instance = cfg.instance.clone();
        let started = Instant::now();
        let e = DockerExecutor::new(cfg)
            .await
            .expect_err("a broken runtime must not pass");
        let took = started.elapsed();
        println!(
            "figure: {runtime} refused after {} ms: {e}",
            took.as_millis()
        );
        assert!(matches!(e, DockerError::Canary(_)), "{e}");
        let msg = e.to_string();
        assert!(msg.contains(runtime), "{msg}");
        if runtime == KVM {
            assert!(msg.contains("hangs"), "{msg}");
            assert!(took < bound + Duration::from_secs(15), "took {took:?}");
        }
        let left = docker::list_instance(&d, Duration::from_secs(30), &instance)
            .await
            .unwrap();
        assert!(left.is_empty(), "{runtime}: containers left {left:?}");
        assert_no_runtime_of(&instance).await;
    }
}

/// Waits (up to 10 s: containerd cleans up after a killed shim with short-lived helpers)
/// until no runtime process of `instance`'s containers is left, else fails.
async fn assert_no_runtime_of(instance: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<RuntimeGroup> = groups()
            .into_iter()
            .filter(|g| g.instance.as_deref() == Some(instance))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "runtime processes of {instance} left behind: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates and starts a container under the broken runtime the way a provider would have
/// (or, with `scratch: None`, as a stranger would), and removes it: the start fails, the
/// engine forgets the container, and its shim, sandbox and gofer live on. Returns its id.
async fn leak_one(
    d: &bollard::Docker,
    instance: &str,
    scratch: Option<&std::path::Path>,
) -> String {
    let mut labels = HashMap::new();
    let mut mounts = None;
    if let Some(scratch) = scratch {
        labels = HashMap::from([
            (hardening::JOB_LABEL.to_string(), "leak".to_string()),
            (hardening::INSTANCE_LABEL.to_string(), instance.to_string()),
            (
                hardening::OWNER_LABEL.to_string(),
                "999999999.1".to_string(),
            ),
        ]);
        let out = scratch
            .join(format!("pinfold-docker-{instance}"))
            .join("999999999.1-leak/out");
        std::fs::create_dir_all(&out).unwrap();
        mounts = Some(vec![bollard::models::Mount {
            target: Some("/output".into()),
            source: Some(out.display().to_string()),
            typ: Some(bollard::models::MountType::BIND),
            ..Default::default()
        }]);
    }
    let id = d
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            bollard::models::ContainerCreateBody {
                image: Some(image().to_string()),
                user: Some("65534:65534".into()),
                cmd: Some(vec!["/bin/true".into()]),
                labels: Some(labels),
                network_disabled: Some(true),
                host_config: Some(bollard::models::HostConfig {
                    runtime: Some(PLAIN.into()),
                    network_mode: Some("none".into()),
                    mounts,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .id;
    let e = d.start_container(&id, None).await;
    assert!(e.is_err(), "{PLAIN} started a container");
    d.remove_container(
        &id,
        Some(
            bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                .force(true)
                .build(),
        ),
    )
    .await
    .unwrap();
    id
}

/// What a failed gVisor start leaves (a shim, `runsc-sandbox` and `runsc-gofer` that
/// `docker ps` does not show) is found: the start-up sweep kills the runtime processes of
/// this provider's own containers and deletes containerd's record of them, reports a
/// stranger's and leaves it alone; `provider doctor` reports it. Before, nothing looked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_processes_outliving_their_containers_are_found_and_ours_killed() {
    pinfold_test_support::heavy!("docker");
    runtimes_registered(&[PLAIN]).await;
    let d = docker_ready().await;
    let case = Case::new();
    let mut cfg = config("leaks");
    cfg.scratch_dir = case.path().join("scratch");
    let ours = leak_one(&d, &cfg.instance, Some(&cfg.scratch_dir)).await;
    let stranger = leak_one(&d, &cfg.instance, None).await;
    for id in [&ours, &stranger] {
        let g = groups_of(id);
        assert_eq!(g.len(), 1, "no leaked runtime for {id}: {:?}", groups());
        let names: Vec<&str> = g[0].all().map(|p| p.name.as_str()).collect();
        assert!(
            names.iter().any(|n| n.starts_with("containerd-shim"))
                && names.contains(&"runsc-sandbox")
                && names.contains(&"runsc-gofer"),
            "{names:?}"
        );
        assert!(leaked(&d).await.contains(id), "{id} not seen as leaked");
    }
    assert_eq!(
        groups_of(&ours)[0].instance.as_deref(),
        Some(cfg.instance.as_str())
    );
    assert_eq!(groups_of(&stranger)[0].instance, None);
    assert!(containerd_lists(&ours));

    // The doctor reports both.
    let r = std::process::Command::new(env!("CARGO_BIN_EXE_provider"))
        .args(["doctor", "--json"])
        .env("PINFOLD_CACHE_DIR", case.path().join("cache"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let check = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "docker.runtime-leaks")
        .cloned()
        .unwrap_or_else(|| panic!("no docker.runtime-leaks check: {v}"));
    assert_eq!(check["status"], "warn", "{check}");
    let seen = check["seen"].as_str().unwrap();
    for id in [&ours, &stranger] {
        assert!(seen.contains(&id[..12]), "{id} not reported: {seen}");
    }
    assert!(
        seen.contains(&format!("pinfold instance {}", cfg.instance)),
        "{seen}"
    );

    // The next start of this instance kills its own, and only its own.
    let started = Instant::now();
    let instance = cfg.instance.clone();
    let exec = executor_with(cfg).await;
    println!(
        "figure: executor start-up with a leaked gVisor runtime to kill: {} ms",
        started.elapsed().as_millis()
    );
    assert_no_runtime_of(&instance).await;
    assert!(!containerd_lists(&ours), "containerd still lists {ours}");
    let left = groups_of(&stranger);
    assert_eq!(left.len(), 1, "a stranger's runtime was touched");
    assert_no_containers(&exec).await;

    // Clean up the stranger's by hand, as the doctor's fix says.
    let r =
        tokio::task::spawn_blocking(move || leaks::reap(&left[0], true, Duration::from_secs(5)))
            .await
            .unwrap();
    assert!(r.survivors.is_empty(), "{r:?}");
    assert!(groups_of(&stranger).is_empty());
}

/// A task whose gVisor start outlasts the API timeout (a sandbox booting on 1% of a CPU:
/// about 23 s) is rejected, and the executor kills the runtime's processes (the hung start
/// holds the engine's lock on the container, so removal alone would wait) and removes the
/// container at once, leaving nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_gvisor_start_hangs_leaves_nothing_behind() {
    pinfold_test_support::heavy!("docker");
    runtimes_registered(&["runsc"]).await;
    let case = Case::new();
    let mut cfg = config_on(Rt::Runsc, "start-hangs");
    cfg.api_timeout = Duration::from_secs(5);
    let instance = cfg.instance.clone();
    let exec = executor_with(cfg).await;
    let mut def = docker_def(&case, "hangs", &Spec::sh("echo late"));
    def.manifest.limits.millicpus = Some(10);
    let (input, output) = case.run_dirs();
    let started = Instant::now();
    let o = run_in(&exec, &def, input, output).await;
    let took = started.elapsed();
    println!(
        "figure: hung gVisor start rejected and cleared in {} ms",
        took.as_millis()
    );
    assert_eq!(o.status, Status::Rejected, "{o:?}");
    assert!(o.reason.as_deref().unwrap_or("").contains("start"), "{o:?}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_no_containers(&exec).await;
    assert_no_runtime_of(&instance).await;
}
