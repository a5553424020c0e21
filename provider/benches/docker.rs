//! Criterion benchmarks of the Docker executor: a trivial container through the hardened path vs `docker run --rm`, and hardened vs unhardened through our path.
//!
//! Run with `cargo bench -p provider --bench docker`. Needs a reachable Docker engine and a
//! static busybox (the test image is built and loaded through the API). Ratios are read
//! off the printed times of the paired benchmarks; each sample starts one container, so
//! sample sizes are small. "Unhardened" is Docker's defaults, so it includes setting up
//! the default bridge network, which `network_mode=none` skips: most of the difference
//! between the two paths is that, not the checks.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use provider::docker::testimage;
use provider::{DockerConfig, DockerExecutor, Executor, RunRequest, Status};
use task_defs::Definition;

fn trivial_def(dir: &Path, image: &str) -> Definition {
    let d = dir.join("trivial");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("taskdef.toml"),
        format!(
            r#"format = 1
name = "trivial"
version = "1.0.0"
description = "echoes hello"
license = "MIT"

[runtime]
kind = "docker"
image = "{image}"
entrypoint = ["/bin/sh", "-c"]
args = ["echo hello > /output/x; echo hello"]

[limits]
memory = "32MiB"
timeout = "10s"
output = "1MiB"
pids = 64
cpus = 1
"#
        ),
    )
    .unwrap();
    Definition::load_dir(&d).unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bb = testimage::read_busybox(&testimage::busybox_path()).expect("a static busybox");
    let img = testimage::build(&bb, "65534:65534").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let def = Arc::new(trivial_def(tmp.path(), &img.id));
    let mk = |hardened: bool| {
        rt.block_on(async {
            let d = provider::docker::connect(Duration::from_secs(30))
                .await
                .expect("docker");
            testimage::ensure_loaded(&d, &img).await.unwrap();
            DockerExecutor::new(DockerConfig {
                instance: format!("bench-{hardened}-{}", std::process::id()),
                hardened,
                ..DockerConfig::default()
            })
            .await
            .unwrap()
        })
    };
    let hardened = mk(true);
    let plain = mk(false);
    let n = std::sync::atomic::AtomicUsize::new(0);
    let run = |exec: &DockerExecutor| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let input = tmp.path().join(format!("in{i}"));
        let output = tmp.path().join(format!("out{i}"));
        std::fs::create_dir_all(&input).unwrap();
        std::fs::create_dir_all(&output).unwrap();
        let o = rt.block_on(exec.run(RunRequest {
            definition: def.clone(),
            params: BTreeMap::new(),
            input_dir: input,
            output_dir: output,
            secrets: Default::default(),
        }));
        assert_eq!(o.status, Status::Succeeded, "{o:?}");
        assert_eq!(o.stdout, b"hello\n");
    };

    let mut g = c.benchmark_group("docker_trivial");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("pinfold_hardened", |b| b.iter(|| run(&hardened)));
    g.bench_function("pinfold_unhardened", |b| b.iter(|| run(&plain)));
    // The same hardening flags through the docker CLI, for an outside reference (the CLI
    // does not re-inspect, mounts no tmpfs of its own and attaches the same way).
    let cli_in = tmp.path().join("cli-in");
    let cli_out = tmp.path().join("cli-out");
    std::fs::create_dir_all(&cli_in).unwrap();
    std::fs::create_dir_all(&cli_out).unwrap();
    std::fs::set_permissions(
        &cli_out,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    g.bench_function("docker_cli_run_rm_same_flags", |b| {
        b.iter(|| {
            let out = Command::new("docker")
                .args([
                    "run",
                    "--rm",
                    "--privileged=false",
                    "--cap-drop",
                    "ALL",
                    "--security-opt",
                    "no-new-privileges:true",
                    "--read-only",
                    "--tmpfs",
                    "/tmp:rw,noexec,nosuid,nodev,size=16777216,mode=1777",
                    "--memory",
                    "34603008",
                    "--memory-swap",
                    "34603008",
                    "--cpus",
                    "1",
                    "--pids-limit",
                    "64",
                    "--ulimit",
                    "nofile=1024:1024",
                    "--ulimit",
                    "core=0:0",
                    "--network",
                    "none",
                    "--ipc",
                    "private",
                    "--cgroupns",
                    "private",
                    "--shm-size",
                    "4194304",
                    "--init",
                    "--restart",
                    "no",
                    "--log-driver",
                    "json-file",
                    "--log-opt",
                    "max-size=1048576",
                    "--log-opt",
                    "max-file=1",
                    "--user",
                    "65534:65534",
                    "--workdir",
                    "/",
                    "--label",
                    "pinfold.job=bench-cli",
                    "--entrypoint",
                    "/bin/sh",
                ])
                .arg("--mount")
                .arg(format!(
                    "type=bind,source={},target=/input,readonly",
                    cli_in.display()
                ))
                .arg("--mount")
                .arg(format!(
                    "type=bind,source={},target=/output",
                    cli_out.display()
                ))
                .args([img.id.as_str(), "-c", "echo hello > /output/x; echo hello"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.stdout, b"hello\n");
        })
    });
    // Docker's defaults (bridge network, no limits): the counterpart of the unhardened path.
    g.bench_function("docker_cli_run_rm_defaults", |b| {
        b.iter(|| {
            let out = Command::new("docker")
                .args([
                    "run",
                    "--rm",
                    "--user",
                    "65534:65534",
                    "--entrypoint",
                    "/bin/sh",
                ])
                .arg("--mount")
                .arg(format!(
                    "type=bind,source={},target=/input,readonly",
                    cli_in.display()
                ))
                .arg("--mount")
                .arg(format!(
                    "type=bind,source={},target=/output",
                    cli_out.display()
                ))
                .args([img.id.as_str(), "-c", "echo hello > /output/x; echo hello"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.stdout, b"hello\n");
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
