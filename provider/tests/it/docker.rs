//! The Docker executor against the real engine: hardening in force, hostile containers, limits, rejections, cleanup.
//!
//! These tests never skip: without a reachable Docker engine they fail with a message
//! saying so. Images come from `provider::docker::testimage` (a static busybox loaded
//! through the API), so no registry is needed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use provider::docker::testimage::{self, TestImage};
use provider::docker::{self, IsolationPolicy, hardening};
use provider::executor::output_digest;
use provider::{DockerConfig, DockerExecutor, Executor, Outcome, RunRequest, Status};
use task_defs::Definition;

use crate::harness::{Case, example};

/// The unprivileged test image and one whose configured user is root.
fn images() -> &'static (TestImage, TestImage) {
    static IMAGES: OnceLock<(TestImage, TestImage)> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let path = testimage::busybox_path();
        let bb = testimage::read_busybox(&path).unwrap_or_else(|e| {
            panic!("docker tests need a static busybox ({e}); apt-get install busybox-static or set PINFOLD_BUSYBOX")
        });
        (
            testimage::build(&bb, "65534:65534").unwrap(),
            testimage::build(&bb, "").unwrap(),
        )
    })
}

pub(crate) fn image() -> &'static str {
    &images().0.id
}

/// Connects (failing loudly) and loads both test images.
pub async fn docker_ready() -> bollard::Docker {
    let d = docker::connect(Duration::from_secs(30)).await.unwrap_or_else(|e| {
        panic!("the docker tests need a reachable Docker engine (DOCKER_HOST or /var/run/docker.sock): {e}")
    });
    d.ping()
        .await
        .unwrap_or_else(|e| panic!("docker ping failed: {e}"));
    for img in [&images().0, &images().1] {
        testimage::ensure_loaded(&d, img)
            .await
            .expect("loading the test image");
    }
    d
}

pub(crate) fn config(name: &str) -> DockerConfig {
    DockerConfig {
        instance: format!("it-{name}-{}", std::process::id()),
        ..DockerConfig::default()
    }
}

pub(crate) async fn executor_with(cfg: DockerConfig) -> DockerExecutor {
    docker_ready().await;
    DockerExecutor::new(cfg).await.expect("docker executor")
}

async fn executor(name: &str) -> DockerExecutor {
    executor_with(config(name)).await
}

/// The OCI runtime a test runs its containers under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rt {
    /// The daemon's default runtime (runc).
    Runc,
    /// gVisor, registered as `runsc` (with `--network=none`; see
    /// `provider/testdata/gvisor/register.sh`).
    Runsc,
}

impl Rt {
    /// The runtime to configure (`None`: the daemon's default).
    pub(crate) fn configured(self) -> Option<String> {
        match self {
            Rt::Runc => None,
            Rt::Runsc => Some("runsc".into()),
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Rt::Runc => "runc",
            Rt::Runsc => "runsc",
        }
    }
}

/// Fails loudly unless the daemon has every runtime in `names` registered.
pub(crate) async fn runtimes_registered(names: &[&str]) {
    let d = docker_ready().await;
    let info = d.info().await.expect("docker info");
    let have: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
    for n in names {
        assert!(
            have.iter().any(|h| h == n),
            "runtime {n:?} is not registered with the Docker daemon (registered: {have:?}); \
             run provider/testdata/gvisor/register.sh as root (CI does, from .ci/run)"
        );
    }
}

/// A test configuration whose containers run under `rt`.
pub(crate) fn config_on(rt: Rt, name: &str) -> DockerConfig {
    DockerConfig {
        runtime: rt.configured(),
        ..config(&format!("{name}-{}", rt.as_str()))
    }
}

pub(crate) async fn executor_on(rt: Rt, name: &str) -> DockerExecutor {
    if rt == Rt::Runsc {
        runtimes_registered(&["runsc"]).await;
    }
    executor_with(config_on(rt, name)).await
}

/// One test body run twice, under runc and under gVisor: `NAME::runc` and `NAME::runsc`.
macro_rules! on_both_runtimes {
    ($(#[$doc:meta])* async fn $name:ident($rt:ident: Rt) $body:block) => {
        $(#[$doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn runc() {
                pinfold_test_support::heavy!("docker");
                body(Rt::Runc).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn runsc() {
                pinfold_test_support::heavy!("docker");
                body(Rt::Runsc).await
            }

            async fn body($rt: Rt) $body
        }
    };
}

/// Limits and runtime settings of a test definition.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) image: String,
    pub(crate) script: String,
    pub(crate) memory: &'static str,
    pub(crate) timeout: &'static str,
    pub(crate) output: &'static str,
    pub(crate) pids: u32,
    pub(crate) user: &'static str,
    pub(crate) isolation: &'static str,
    pub(crate) secrets: Vec<&'static str>,
}

impl Spec {
    pub(crate) fn sh(script: &str) -> Spec {
        Spec {
            image: image().to_string(),
            script: script.to_string(),
            memory: "32MiB",
            timeout: "10s",
            output: "1MiB",
            pids: 64,
            user: "65534:65534",
            isolation: "container",
            secrets: Vec::new(),
        }
    }
}

pub(crate) fn docker_def(case: &Case, name: &str, s: &Spec) -> Definition {
    let dir = case.path().join(format!("def-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    // Braces are placeholder syntax in args; `{{`/`}}` stand for literal braces.
    let script = s.script.replace('{', "{{").replace('}', "}}");
    assert!(!script.contains("'''"));
    let manifest = format!(
        r#"format = 1
name = "{name}"
version = "1.0.0"
description = "a docker test guest"
license = "MIT"

[runtime]
kind = "docker"
image = "{image}"
user = "{user}"
entrypoint = ["/bin/sh", "-c"]
args = ['''{script}''']
workdir = "/"
isolation = "{isolation}"

[limits]
memory = "{memory}"
timeout = "{timeout}"
output = "{output}"
pids = {pids}
cpus = 1

[io]
input = "/input"
output = "/output"

[capabilities]
env = {{ LANG = "C" }}
secrets = [{secrets}]
"#,
        secrets = s
            .secrets
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", "),
        image = s.image,
        user = s.user,
        isolation = s.isolation,
        memory = s.memory,
        timeout = s.timeout,
        output = s.output,
        pids = s.pids,
    );
    std::fs::write(dir.join("taskdef.toml"), manifest).unwrap();
    Definition::load_dir(&dir).expect("valid docker test definition")
}

pub(crate) async fn run_in(
    exec: &DockerExecutor,
    def: &Definition,
    input: PathBuf,
    output: PathBuf,
) -> Outcome {
    exec.run(RunRequest {
        definition: Arc::new(def.clone()),
        params: BTreeMap::new(),
        input_dir: input,
        output_dir: output,
        secrets: Default::default(),
    })
    .await
}

async fn run(case: &Case, exec: &DockerExecutor, name: &str, spec: &Spec) -> (Outcome, PathBuf) {
    let def = docker_def(case, name, spec);
    let (input, output) = case.run_dirs();
    let o = run_in(exec, &def, input, output.clone()).await;
    (o, output)
}

pub(crate) async fn assert_no_containers(exec: &DockerExecutor) {
    let left = docker::list_instance(
        exec.docker(),
        Duration::from_secs(30),
        &exec.config().instance,
    )
    .await
    .unwrap();
    assert!(left.is_empty(), "containers left behind: {left:?}");
}

on_both_runtimes! {
    async fn happy_path_outputs_digest_and_stdio(rt: Rt) {
        let case = Case::new();
        let exec = executor_on(rt, "happy").await;
        let def = docker_def(
            &case,
            "happy",
            &Spec::sh(
                "set -e; wc -c < /input/a.txt > /output/count; mkdir /output/sub; \
                 echo nested > /output/sub/x; echo out; echo err >&2; id -u; echo $LANG; pwd",
            ),
        );
        let (input, output) = case.run_dirs();
        std::fs::write(input.join("a.txt"), "hello docker\n").unwrap();
        let o = run_in(&exec, &def, input, output.clone()).await;
        assert_eq!(o.status, Status::Succeeded, "{o:?}");
        assert_eq!(o.exit_code, Some(0));
        assert_eq!(o.stdout_text(), "out\n65534\nC\n/\n");
        assert_eq!(o.stderr_text(), "err\n");
        let paths: Vec<&str> = o.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["count", "sub/x"]);
        assert_eq!(
            std::fs::read_to_string(output.join("count")).unwrap(),
            "13\n"
        );
        assert_eq!(
            std::fs::read_to_string(output.join("sub/x")).unwrap(),
            "nested\n"
        );
        assert_eq!(o.files[0].blake3.hex(), blake3::hash(b"13\n").to_hex().as_str());
        assert_eq!(
            o.outputs,
            output_digest(&o.files, o.stdout_text().as_bytes())
        );
        assert!(o.usage.measured.wall_us > 0);
        assert_no_containers(&exec).await;
    }
}

/// A file of a running container's cgroup on the host (cgroup v1 with the cgroupfs driver,
/// or v2 with the cgroupfs or systemd driver).
fn host_cgroup(id: &str, v1_controller: &str, v1_file: &str, v2_file: &str) -> String {
    let candidates = [
        format!("/sys/fs/cgroup/{v1_controller}/docker/{id}/{v1_file}"),
        format!("/sys/fs/cgroup/docker/{id}/{v2_file}"),
        format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/{v2_file}"),
    ];
    candidates
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_else(|| panic!("no cgroup file for container {id} among {candidates:?}"))
        .trim()
        .to_string()
}

on_both_runtimes! {
    /// Every limit and confinement the create body asks for is in force: as the task sees
    /// it and, since gVisor's kernel shows the task its own view, on the host's cgroups
    /// (where gVisor's sandbox gets its headroom and the task its exact `RLIMIT_NPROC`).
    async fn hardening_is_in_force_inside_the_container(rt: Rt) {
        let case = Case::new();
        let exec = executor_on(rt, "inforce").await;
        let script = r#"
cg=/sys/fs/cgroup
r() { cat "$cg/$1" 2>/dev/null || cat "$cg/$2" 2>/dev/null || echo missing; }
echo "pids $(r pids/pids.max pids.max)"
echo "mem $(r memory/memory.limit_in_bytes memory.max)"
echo "memsw $(r memory/memory.memsw.limit_in_bytes memory.swap.max)"
echo "quota $(r cpu/cpu.cfs_quota_us cpu.max)"
grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status
echo "nofile $(ulimit -n)"
echo "nproc $(ulimit -u)"
echo "core $(ulimit -c)"
grep -E ' /(output|tmp|input) ' /proc/mounts
echo "ifaces $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')"
sleep 3
"#;
        let mut spec = Spec::sh(script);
        spec.pids = 50;
        spec.memory = "48MiB";
        let def = docker_def(&case, "inforce", &spec);
        let (input, output) = case.run_dirs();
        let running = {
            let exec = exec.clone();
            tokio::spawn(async move { run_in(&exec, &def, input, output).await })
        };
        // The host's side, read while the task sleeps.
        let deadline = Instant::now() + Duration::from_secs(30);
        let id = loop {
            let ids = docker::list_instance(
                exec.docker(),
                Duration::from_secs(30),
                &exec.config().instance,
            )
            .await
            .unwrap();
            // A listed container may be gone by the time it is inspected (CI saw a 404
            // here), and one carrying the canary's label is not the task's: skip both and
            // keep looking, but stop as soon as the run itself has ended.
            let mut task = None;
            for id in &ids {
                let Ok(c) = exec.docker().inspect_container(id, None).await else {
                    continue;
                };
                let canary = c
                    .config
                    .and_then(|c| c.labels)
                    .is_some_and(|l| l.contains_key(hardening::CANARY_OWNER_LABEL));
                if !canary && c.state.and_then(|s| s.running) == Some(true) {
                    task = Some(id.clone());
                }
            }
            if let Some(id) = task {
                break id;
            }
            if running.is_finished() {
                let o = running.await.unwrap();
                panic!("the run ended before its container was seen running: {o:?}");
            }
            assert!(Instant::now() < deadline, "the container never ran");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let host_pids = host_cgroup(&id, "pids", "pids.max", "pids.max");
        let host_mem = host_cgroup(&id, "memory", "memory.limit_in_bytes", "memory.max");
        let o = running.await.unwrap();
        assert_eq!(o.status, Status::Succeeded, "{o:?}");
        let out = &o.stdout_text();
        let line = |p: &str| {
            out.lines()
                .find(|l| l.starts_with(p))
                .unwrap_or_else(|| panic!("no {p} line in {out}"))
                .to_string()
        };
        // Memory limit = limits.memory + the output tmpfs, which is charged to it: the 1 MiB
        // cap in pages plus a page for each of the 10,000 entries that may hold a byte; under
        // gVisor plus its sandbox's headroom.
        let page = rustix::param::page_size() as u64;
        let tmpfs = (1u64 << 20) + 10_000 * page;
        let task_mem = (48u64 << 20) + tmpfs;
        match rt {
            Rt::Runc => {
                assert_eq!(host_pids, "50");
                assert_eq!(host_mem, task_mem.to_string());
                assert_eq!(line("pids "), "pids 50");
                assert_eq!(line("mem "), format!("mem {task_mem}"));
                assert_eq!(
                    line("memsw "),
                    format!("memsw {task_mem}"),
                    "swap must equal memory"
                );
                assert_eq!(line("quota "), "quota 100000");
                assert_eq!(line("NoNewPrivs:"), "NoNewPrivs:\t1");
                assert_eq!(line("Seccomp:"), "Seccomp:\t2", "seccomp filter mode");
                // The host kernel counts RLIMIT_NPROC per uid over the whole machine, so
                // runc's tasks are held by the pids cgroup alone.
                assert_ne!(line("nproc "), "nproc 50");
            }
            Rt::Runsc => {
                let headroom = provider::docker::headroom::GVISOR.limits(50);
                assert_eq!(host_pids, headroom.pids.to_string());
                assert_eq!(host_mem, (task_mem + headroom.memory_headroom).to_string());
                assert_eq!(line("nproc "), "nproc 50", "the task's own count is exact");
            }
        }
        assert_eq!(line("CapEff:"), "CapEff:\t0000000000000000");
        assert_eq!(line("CapBnd:"), "CapBnd:\t0000000000000000");
        assert_eq!(line("nofile "), "nofile 1024");
        assert_eq!(line("core "), "core 0");
        match rt {
            Rt::Runc => {
                let output_mount = line("pinfold-output /output ");
                for f in ["nosuid", "nodev", "noexec"] {
                    assert!(output_mount.contains(f), "{output_mount}");
                }
                assert!(
                    output_mount.contains(&format!("size={}k", tmpfs >> 10))
                        && output_mount.contains("nr_inodes=10002"),
                    "{output_mount}"
                );
                let tmp = line("tmpfs /tmp ");
                for f in ["nosuid", "nodev", "noexec"] {
                    assert!(tmp.contains(f), "{tmp}");
                }
            }
            // gVisor serves binds through its gofer (9p) and lists its own mount options:
            // the host tmpfs's flags and size hold underneath (the read-only, noexec and
            // output-cap tests run under gVisor too), and setuid bits grant nothing with
            // no-new-privileges.
            Rt::Runsc => {
                assert!(line("none /output ").contains(" rw,"), "{out}");
                assert!(line("none /tmp ").contains("noexec"), "{out}");
            }
        }
        assert!(
            out.lines()
                .any(|l| l.contains(" /input ") && l.contains(" ro,")),
            "{out}"
        );
        assert_eq!(line("ifaces ").trim(), "ifaces lo", "only loopback: {out}");
    }
}

on_both_runtimes! {
    async fn root_filesystem_is_read_only_and_tmp_is_noexec(rt: Rt) {
        let case = Case::new();
        let exec = executor_on(rt, "readonly").await;
        let (o, _) = run(
            &case,
            &exec,
            "readonly",
            &Spec::sh(
                "if touch /evil 2>/dev/null; then echo WROTE-ROOT; else echo root-refused; fi; \
                 if echo x > /input/planted 2>/dev/null; then echo WROTE-INPUT; else echo input-refused; fi; \
                 touch /tmp/ok && echo tmp-ok; cp /bin/busybox /tmp/bb; \
                 if /tmp/bb true 2>/dev/null; then echo EXEC-TMP; else echo tmp-noexec; fi; \
                 cp /bin/busybox /output/bb; \
                 if /output/bb true 2>/dev/null; then echo EXEC-OUT; else echo out-noexec; fi; rm /output/bb",
            ),
        )
        .await;
        assert_eq!(o.status, Status::Succeeded, "{o:?}");
        assert_eq!(
            o.stdout_text(),
            "root-refused\ninput-refused\ntmp-ok\ntmp-noexec\nout-noexec\n"
        );
    }
}

on_both_runtimes! {
    async fn network_is_unreachable(rt: Rt) {
        let case = Case::new();
        let exec = executor_on(rt, "network").await;
        let (o, _) = run(
            &case,
            &exec,
            "network",
            &Spec::sh(
                "if wget -q -T 2 -O /dev/null http://1.1.1.1/ 2>/dev/null; then echo WGET; else echo wget-failed; fi; \
                 if nc -w 2 8.8.8.8 53 </dev/null 2>/dev/null; then echo NC; else echo nc-failed; fi; \
                 if ping -c 1 -W 1 127.0.0.1 >/dev/null 2>&1; then echo PING; else echo ping-failed; fi",
            ),
        )
        .await;
        assert_eq!(o.status, Status::Succeeded, "{o:?}");
        assert_eq!(
            o.stdout_text(),
            "wget-failed\nnc-failed\nping-failed\n",
            "{o:?}"
        );
    }
}

on_both_runtimes! {
    async fn mount_chown_and_privilege_changes_fail(rt: Rt) {
        let case = Case::new();
        let exec = executor_on(rt, "nocaps").await;
        let (o, _) = run(
            &case,
            &exec,
            "nocaps",
            &Spec::sh(
                "mkdir /tmp/m; if mount -t tmpfs x /tmp/m 2>/dev/null; then echo MOUNTED; else echo mount-failed; fi; \
                 touch /output/f; if chown 0:0 /output/f 2>/dev/null; then echo CHOWNED; else echo chown-failed; fi; \
                 if chmod 4755 /output/f && [ -u /output/f ]; then echo setuid-bit-set; fi; \
                 if mknod /tmp/disk b 8 0 2>/dev/null; then \
                   if head -c 1 /tmp/disk >/dev/null 2>&1; then echo READ-A-DISK; else echo mknod-inert; fi; \
                 else echo mknod-failed; fi; \
                 id -u; rm /output/f; kill -9 1 2>/dev/null; echo init-survived",
            ),
        )
        .await;
        // chmod u+s on a file the task owns is allowed by the kernel, but the filesystem is
        // nosuid and no-new-privileges is set, so it grants nothing.
        let out = o.stdout_text().replace("setuid-bit-set\n", "");
        match rt {
            Rt::Runc => {
                assert_eq!(o.status, Status::Succeeded, "{o:?}");
                assert_eq!(
                    out,
                    "mount-failed\nchown-failed\nmknod-failed\n65534\ninit-survived\n",
                    "{o:?}"
                );
            }
            // gVisor's Sentry lets the task make device nodes on its own tmpfs, but every
            // device is the Sentry's own emulation, so a node for the host's first disk
            // reaches nothing; and it does not shield the container's init from a SIGKILL
            // sent inside, so the task can end itself (and only itself) that way.
            Rt::Runsc => {
                assert_eq!(
                    out.replace("init-survived\n", ""),
                    "mount-failed\nchown-failed\nmknod-inert\n65534\n",
                    "{o:?}"
                );
                assert!(
                    o.status == Status::Succeeded
                        || (o.status == Status::Failed && o.exit_code == Some(137)),
                    "{o:?}"
                );
            }
        }
    }
}

on_both_runtimes! {
    async fn fork_bomb_is_held_by_the_pids_limit(rt: Rt) {
        let case = Case::new();
        let exec = executor_on(rt, "forkbomb").await;
        let mut spec = Spec::sh("b() { b | b & }; b; sleep 5");
        spec.pids = 32;
        spec.timeout = "2s";
        let started = Instant::now();
        let (o, _) = run(&case, &exec, "forkbomb", &spec).await;
        let took = started.elapsed();
        // Held either way; under gVisor each process the bomb keeps alive also costs the
        // sandbox host threads and memory, so the bomb may end at the memory backstop.
        assert!(
            matches!(
                o.status,
                Status::TimedOut | Status::Failed | Status::Succeeded
            ) || (rt == Rt::Runsc && o.status == Status::MemoryExceeded),
            "{o:?}"
        );
        assert!(took < Duration::from_secs(15), "took {took:?}");
        assert_no_containers(&exec).await;
        // The host (and the engine) are fine: the next run works and sees its own limit.
        let (o, _) = run(&case, &exec, "after-bomb", &Spec::sh("echo alive")).await;
        assert_eq!(o.status, Status::Succeeded, "{o:?}");
        assert_eq!(o.stdout_text(), "alive\n");
    }
}

on_both_runtimes! {
    async fn memory_hog_is_memory_exceeded(rt: Rt) {
        let case = Case::new();
        let exec = executor_on(rt, "memhog").await;
        // One 200 MB buffer filled by a single read: under gVisor's ptrace platform every
        // system call is a round trip through the Sentry, so a pipeline that moves the same
        // bytes 64 KiB at a time would run into the timeout long before the memory limit.
        let mut spec = Spec::sh("dd if=/dev/zero of=/dev/null bs=200M count=1; echo dd=$?");
        spec.memory = "16MiB";
        let (o, _) = run(&case, &exec, "memhog", &spec).await;
        assert_eq!(o.status, Status::MemoryExceeded, "{o:?}");
        assert!(o.reason.unwrap().contains("OOM"));
        assert_no_containers(&exec).await;
    }
}

on_both_runtimes! {
    async fn infinite_loop_is_timed_out_and_removed(rt: Rt) {
        let case = Case::new();
        let exec = executor_on(rt, "loop").await;
        let mut spec = Spec::sh("while :; do :; done");
        spec.timeout = "1s";
        let (o, _) = run(&case, &exec, "loop", &spec).await;
        assert_eq!(o.status, Status::TimedOut, "{o:?}");
        let wall = Duration::from_micros(o.usage.measured.wall_us);
        assert!(
            wall >= Duration::from_millis(1000) && wall < Duration::from_millis(3000),
            "wall {wall:?}"
        );
        assert_no_containers(&exec).await;
    }
}

on_both_runtimes! {
    async fn log_flood_is_capped(rt: Rt) {
        let case = Case::new();
        let exec = executor_on(rt, "logflood").await;
        let mut spec = Spec::sh("yes flood");
        spec.output = "64KiB";
        let (o, _) = run(&case, &exec, "logflood", &spec).await;
        assert_eq!(o.status, Status::OutputExceeded, "{o:?}");
        assert!(o.stdout_truncated);
        assert_eq!(o.stdout_text().len(), 64 << 10);
        assert!(o.stdout_text().starts_with("flood\nflood\n"));
        assert_no_containers(&exec).await;

        let mut spec = Spec::sh("yes flood >&2");
        spec.output = "64KiB";
        let (o, _) = run(&case, &exec, "errflood", &spec).await;
        assert_eq!(o.status, Status::OutputExceeded, "{o:?}");
        assert!(o.stderr_truncated && !o.stdout_truncated);
    }
}

on_both_runtimes! {
    async fn disk_filling_is_stopped_by_the_output_cap(rt: Rt) {
        let case = Case::new();
        let exec = executor_on(rt, "diskfill").await;
        let mut spec = Spec::sh(
            "dd if=/dev/zero of=/output/big bs=65536 count=1000 2>/dev/null; echo dd=$?; \
             i=0; while [ $i -lt 100 ]; do touch /output/f$i 2>/dev/null; i=$((i+1)); done; echo done",
        );
        spec.output = "1MiB";
        let (o, output) = run(&case, &exec, "diskfill", &spec).await;
        assert_eq!(o.status, Status::OutputExceeded, "{o:?}");
        assert!(
            o.stdout_text().starts_with("dd=1\n"),
            "dd must hit ENOSPC: {o:?}"
        );
        let total: u64 = o.files.iter().map(|f| f.size).sum();
        assert!(total <= 1 << 20, "returned {total} bytes");
        let on_disk: u64 = std::fs::read_dir(&output)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(on_disk <= 1 << 20, "copied {on_disk} bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_not_pinned_here_are_rejected() {
    pinfold_test_support::heavy!("docker");
    let case = Case::new();
    let exec = executor("noimage").await;
    // A digest that matches no local image.
    let mut spec = Spec::sh("true");
    spec.image = format!("sha256:{}", "0".repeat(64));
    let (o, _) = run(&case, &exec, "absent", &spec).await;
    assert_eq!(o.status, Status::Rejected, "{o:?}");
    assert!(
        o.reason.as_deref().unwrap().contains("not present"),
        "{o:?}"
    );
    // The right id under a name: a loaded image carries no repo digest, so the engine
    // cannot vouch that the name and the digest belong together.
    spec.image = format!("{}@{}", testimage::TAG_REPO, image());
    let (o, _) = run(&case, &exec, "named", &spec).await;
    assert_eq!(o.status, Status::Rejected, "{o:?}");
    // A tag is refused before the executor ever sees it.
    let dir = case.path().join("def-tagged");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("taskdef.toml"),
        format!(
            "format = 1\nname = \"tagged\"\nversion = \"1.0.0\"\ndescription = \"x\"\nlicense = \"MIT\"\n\
             [runtime]\nkind = \"docker\"\nimage = \"{}\"\nentrypoint = [\"/bin/true\"]\n",
            images().0.tag
        ),
    )
    .unwrap();
    let Err(task_defs::Error::Invalid(diags)) = Definition::load_dir(&dir) else {
        panic!("a tagged image was accepted");
    };
    let e = diags.to_string();
    assert!(e.contains("not pinned by digest"), "{e}");
}

/// A definition that asks for network is refused before a container exists: the hardened
/// executor only offers `network_mode=none`, and silently running without the network a task
/// asked for would be a lie to the requestor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_capability_is_rejected_before_any_container() {
    pinfold_test_support::heavy!("docker");
    let case = Case::new();
    let exec = executor("netcap").await;
    let mut def = docker_def(&case, "netcap", &Spec::sh("true"));
    def.manifest.capabilities.network = true;
    let (input, output) = case.run_dirs();
    let o = run_in(&exec, &def, input, output).await;
    assert_eq!(o.status, Status::Rejected, "{o:?}");
    assert!(
        o.reason.as_deref().unwrap().contains("network access"),
        "{o:?}"
    );
    assert_no_containers(&exec).await;
}

/// Defence in depth behind validation: a definition that reaches the executor with the root
/// group or an id of 2^31 and above (built in memory here, as a bug elsewhere could) is
/// refused before any mount, chown or container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_user_ids_are_rejected_before_any_container() {
    pinfold_test_support::heavy!("docker");
    let case = Case::new();
    let mut cfg = config("userids");
    cfg.scratch_dir = case.path().join("scratch");
    let exec = executor_with(cfg).await;
    for (uid, gid) in [
        (65534, 0),
        (1 << 31, 65534),
        (65534, 1 << 31),
        (u32::MAX, 65534),
        (65534, u32::MAX),
    ] {
        let mut def = docker_def(&case, "userids", &Spec::sh("id"));
        let task_defs::RuntimeSpec::Docker { user, .. } = &mut def.manifest.runtime.spec else {
            unreachable!("a docker definition");
        };
        *user = (uid, gid);
        let (input, output) = case.run_dirs();
        let o = run_in(&exec, &def, input, output).await;
        assert_eq!(o.status, Status::Rejected, "{uid}:{gid}: {o:?}");
        let reason = o.reason.unwrap_or_default();
        assert!(reason.starts_with("runtime.user: "), "{reason}");
    }
    assert_no_containers(&exec).await;
    assert!(
        !case.path().join("scratch").exists(),
        "a scratch mount was made for a refused user"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_is_refused_by_default() {
    pinfold_test_support::heavy!("docker");
    let case = Case::new();
    let exec = executor("root").await;
    let mut spec = Spec::sh("id -u");
    spec.image = images().1.id.clone();
    let (o, _) = run(&case, &exec, "rootimage", &spec).await;
    assert_eq!(o.status, Status::Rejected, "{o:?}");
    assert!(o.reason.as_deref().unwrap().contains("root"), "{o:?}");
    let mut spec = Spec::sh("id -u");
    spec.user = "0:65534";
    let (o, _) = run(&case, &exec, "rootuser", &spec).await;
    assert_eq!(o.status, Status::Rejected, "{o:?}");
    assert!(o.reason.as_deref().unwrap().contains("root"), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_of_the_instance_are_removed_at_start_up() {
    pinfold_test_support::heavy!("docker");
    let d = docker_ready().await;
    let cfg = config("orphans");
    let mk = |instance: &str, owner: Option<&str>| {
        let mut labels: std::collections::HashMap<String, String> = [
            (hardening::JOB_LABEL.to_string(), "j".to_string()),
            (hardening::INSTANCE_LABEL.to_string(), instance.to_string()),
        ]
        .into();
        if let Some(o) = owner {
            labels.insert(hardening::OWNER_LABEL.to_string(), o.to_string());
        }
        bollard::models::ContainerCreateBody {
            image: Some(image().to_string()),
            cmd: Some(vec!["/bin/true".into()]),
            labels: Some(labels),
            ..Default::default()
        }
    };
    let create = |body| {
        let d = d.clone();
        async move { d.create_container(None, body).await.unwrap().id }
    };
    // Owned by a process that is gone (no such pid), by nobody, by this live process,
    // and by another instance.
    let dead = create(mk(&cfg.instance, Some("999999999.1"))).await;
    let unowned = create(mk(&cfg.instance, None)).await;
    let live = create(mk(&cfg.instance, Some(&docker::owner_tag()))).await;
    let other = create(mk(&format!("{}-other", cfg.instance), None)).await;
    let scratch = cfg
        .scratch_dir
        .join(format!("pinfold-docker-{}", cfg.instance));
    let stale = scratch.join("999999999.1-stale");
    let busy = scratch.join(format!("{}-busy", docker::owner_tag()));
    for s in [&stale, &busy] {
        std::fs::create_dir_all(s.join("out")).unwrap();
    }

    let exec = DockerExecutor::new(cfg).await.unwrap();
    for (id, what) in [(&dead, "dead owner"), (&unowned, "no owner")] {
        assert!(
            d.inspect_container(id, None).await.is_err(),
            "{what} survived"
        );
    }
    assert!(!stale.exists(), "stale scratch survived");
    // A live owner's (two `provider exec` side by side) and another instance's are kept.
    for id in [&live, &other] {
        assert!(d.inspect_container(id, None).await.is_ok());
        d.remove_container(
            id,
            Some(
                bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .build(),
            ),
        )
        .await
        .unwrap();
    }
    assert!(busy.exists(), "a live owner's scratch was removed");
    std::fs::remove_dir_all(&busy).unwrap();
    assert_no_containers(&exec).await;
    assert_eq!(exec.cleanup_orphans().await.unwrap(), 0);
}

/// The process of a container's runtime shim, found by the container id on its command line.
fn shim_of(container: &str) -> rustix::process::Pid {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if args
            .first()
            .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"))
            && args
                .windows(2)
                .any(|w| w[0] == b"-id" && w[1] == container.as_bytes())
        {
            let pid: i32 = e.file_name().to_str().unwrap().parse().unwrap();
            return rustix::process::Pid::from_raw(pid).unwrap();
        }
    }
    panic!("no containerd-shim-runc-v2 for {container}");
}

/// Stops a process while alive and continues it when dropped (so a failed test does not
/// leave the engine's shim stopped).
struct Stopped(rustix::process::Pid);

impl Stopped {
    fn new(pid: rustix::process::Pid) -> Stopped {
        rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(self.0, rustix::process::Signal::CONT);
    }
}

/// Makes a directory immutable (`chattr +i`) while alive, and mutable again when dropped.
struct Immutable(PathBuf);

impl Immutable {
    fn new(dir: PathBuf) -> Immutable {
        let ok = std::process::Command::new("chattr")
            .arg("+i")
            .arg(&dir)
            .status()
            .expect("chattr");
        assert!(ok.success(), "chattr +i {}", dir.display());
        Immutable(dir)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

/// Orphans the engine cannot remove must not stop the executor: one wedged (its runtime
/// shim stopped, so the kill never completes and `docker rm -f` never answers: the
/// "docker remove: Timeout error" seen in the field) and one whose removal the engine
/// refuses (its state directory immutable: "unable to remove filesystem", which the
/// engine does not retry by itself). The executor starts within the start-up removal
/// timeout, runs tasks, and its background retry removes both once the engine can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_orphan_does_not_stop_later_runs_and_is_removed_in_the_background() {
    pinfold_test_support::heavy!("docker");
    let d = docker_ready().await;
    let case = Case::new();
    let mut cfg = config("wedged");
    cfg.scratch_dir = case.path().join("scratch");
    cfg.orphan_retry = Duration::from_millis(500);
    let mut orphans = Vec::new();
    for _ in 0..2 {
        let labels = std::collections::HashMap::from([
            (hardening::JOB_LABEL.to_string(), "j".to_string()),
            (hardening::INSTANCE_LABEL.to_string(), cfg.instance.clone()),
            (
                hardening::OWNER_LABEL.to_string(),
                "999999999.1".to_string(),
            ),
        ]);
        let id = d
            .create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                bollard::models::ContainerCreateBody {
                    image: Some(image().to_string()),
                    user: Some("65534:65534".into()),
                    cmd: Some(vec!["/bin/sleep".into(), "600".into()]),
                    labels: Some(labels),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .id;
        d.start_container(&id, None).await.unwrap();
        orphans.push(id);
    }
    let root = d
        .info()
        .await
        .unwrap()
        .docker_root_dir
        .expect("docker root dir");
    let stopped = Stopped::new(shim_of(&orphans[0]));
    let immutable = Immutable::new(PathBuf::from(root).join("containers").join(&orphans[1]));

    let started = Instant::now();
    let exec = DockerExecutor::new(cfg)
        .await
        .expect("orphans the engine cannot remove must not make start-up fail");
    let took = started.elapsed();
    println!(
        "figure: executor start-up with a wedged and a stuck orphan: {} ms",
        took.as_millis()
    );
    assert!(
        took < docker::STARTUP_REMOVE_TIMEOUT + Duration::from_secs(10),
        "start-up took {took:?}"
    );
    // Listed, not inspected: inspecting waits for the container's lock, which the
    // engine's stuck removal holds.
    let instance = exec.config().instance.clone();
    let listed = || async {
        let all = docker::list_instance(&d, Duration::from_secs(30), &instance)
            .await
            .unwrap();
        orphans.iter().filter(|o| all.contains(o)).count()
    };
    assert_eq!(listed().await, 2, "the engine cannot have removed them");
    let (o, _) = run(&case, &exec, "after-wedge", &Spec::sh("echo ran")).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert_eq!(o.stdout_text(), "ran\n");
    // The refused removal is not retried by the engine: still there after a while.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(listed().await, 2);

    // The engine recovers; the background retry removes both.
    drop(stopped);
    drop(immutable);
    let resumed = Instant::now();
    let deadline = resumed + Duration::from_secs(60);
    while listed().await > 0 {
        assert!(Instant::now() < deadline, "an orphan was never removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "figure: both orphans gone {} ms after the engine recovered",
        resumed.elapsed().as_millis()
    );
    assert_no_containers(&exec).await;
}

/// The output cap counts bytes, not tmpfs pages: 4,096 one-byte files (the protocol's most)
/// under 8 MiB (16 MiB of pages) succeed, and so does a tree of exactly `limits.output` bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_files_and_exactly_the_cap_succeed() {
    pinfold_test_support::heavy!("docker");
    let case = Case::new();
    let exec = executor("smallfiles").await;
    let files = pinfold_net::protocol::MAX_OUTPUT_FILES;
    let mut spec = Spec::sh(&format!(
        "set -e; i=0; while [ $i -lt {files} ]; do printf x > /output/f$i; i=$((i+1)); done"
    ));
    spec.output = "8MiB";
    spec.timeout = "60s";
    let (o, output) = run(&case, &exec, "smallfiles", &spec).await;
    assert_eq!(o.status, Status::Succeeded, "{:?}", o.reason);
    println!(
        "figure: {files} one-byte files under an 8 MiB cap: succeeded, wall {} ms",
        o.usage.measured.wall_us / 1000
    );
    assert_eq!(o.files.len(), files);
    assert!(o.files.iter().all(|f| f.size == 1));
    assert_eq!(std::fs::read_dir(&output).unwrap().count(), files);

    // Exactly 1 MiB, in one file and spread over a directory tree.
    for (name, script) in [
        ("exact-one", "head -c 1048576 /dev/zero > /output/f"),
        (
            "exact-tree",
            "set -e; mkdir -p /output/a/b; head -c 524288 /dev/zero > /output/a/x; \
             head -c 524287 /dev/zero > /output/a/b/y; printf z > /output/z",
        ),
    ] {
        let mut spec = Spec::sh(script);
        spec.output = "1MiB";
        let (o, _) = run(&case, &exec, name, &spec).await;
        assert_eq!(o.status, Status::Succeeded, "{name}: {:?}", o.reason);
        assert_eq!(
            o.files.iter().map(|f| f.size).sum::<u64>(),
            1 << 20,
            "{name}"
        );
    }
    assert_no_containers(&exec).await;
}

on_both_runtimes! {
    /// One byte over `limits.output`, in any shape, is `output_exceeded` and nothing over the
    /// cap is copied out: one file, a tree, a sparse file whose pages fit the tmpfs easily but
    /// whose apparent size does not, and stdout plus files (stdout counts against the cap).
    async fn one_byte_over_the_output_cap_is_output_exceeded(rt: Rt) {
        let case = Case::new();
        let exec = executor_on(rt, "overcap").await;
        for (name, script) in [
            ("over-one", "head -c 1048577 /dev/zero > /output/f"),
            (
                "over-tree",
                "set -e; mkdir -p /output/a/b; head -c 524288 /dev/zero > /output/a/x; \
                 head -c 524288 /dev/zero > /output/a/b/y; printf z > /output/z",
            ),
            (
                "over-sparse",
                "dd if=/dev/zero of=/output/sparse bs=1 count=1 seek=1073741824 2>/dev/null",
            ),
            (
                "over-stdout",
                "head -c 1048576 /dev/zero > /output/f; echo x",
            ),
        ] {
            let mut spec = Spec::sh(script);
            spec.output = "1MiB";
            let (o, output) = run(&case, &exec, name, &spec).await;
            assert_eq!(o.status, Status::OutputExceeded, "{name}: {o:?}");
            let returned: u64 = o.files.iter().map(|f| f.size).sum();
            assert!(
                returned + o.stdout.len() as u64 <= 1 << 20,
                "{name}: {returned}"
            );
            assert!(!o.dropped.is_empty(), "{name}: nothing reported dropped");
            let mut copied = 0;
            let mut stack = vec![output];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(dir).unwrap() {
                    let e = e.unwrap();
                    let m = e.metadata().unwrap();
                    if m.is_dir() {
                        stack.push(e.path());
                    } else {
                        copied += m.len();
                    }
                }
            }
            assert!(copied <= 1 << 20, "{name}: copied {copied} bytes");
        }
        assert_no_containers(&exec).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_levels_gate_definitions() {
    pinfold_test_support::heavy!("docker");
    let case = Case::new();
    // Pretend no VM: `container` runs, `vm` and `sandboxed-runtime` are refused.
    let mut cfg = config("iso-novm");
    cfg.host_vm = Some(false);
    let exec = executor_with(cfg).await;
    assert_eq!(exec.isolation(), task_defs::manifest::Isolation::Container);
    let (o, _) = run(&case, &exec, "iso-container", &Spec::sh("echo ok")).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    for level in ["vm", "sandboxed-runtime"] {
        let mut spec = Spec::sh("echo ok");
        spec.isolation = level;
        let (o, _) = run(&case, &exec, &format!("iso-{level}"), &spec).await;
        assert_eq!(o.status, Status::Rejected, "{o:?}");
        assert!(o.reason.as_deref().unwrap().contains(level), "{o:?}");
    }
    // vm-required without a VM refuses every docker task.
    let mut cfg = config("iso-required");
    cfg.host_vm = Some(false);
    cfg.isolation = IsolationPolicy::VmRequired;
    let exec = executor_with(cfg).await;
    let (o, _) = run(&case, &exec, "iso-required", &Spec::sh("echo ok")).await;
    assert_eq!(o.status, Status::Rejected, "{o:?}");
    assert!(
        o.reason.as_deref().unwrap().contains("vm-required"),
        "{o:?}"
    );
    // With a VM, a definition asking for one runs.
    let mut cfg = config("iso-vm");
    cfg.host_vm = Some(true);
    cfg.isolation = IsolationPolicy::VmRequired;
    let exec = executor_with(cfg).await;
    assert_eq!(exec.isolation(), task_defs::manifest::Isolation::Vm);
    let mut spec = Spec::sh("echo ok");
    spec.isolation = "vm";
    let (o, _) = run(&case, &exec, "iso-vm", &spec).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    // An unregistered runtime is a configuration error, not a silent fallback.
    let mut cfg = config("iso-runtime");
    cfg.runtime = Some("no-such-runtime".into());
    let e = DockerExecutor::new(cfg).await.unwrap_err().to_string();
    assert!(e.contains("not registered"), "{e}");
}

on_both_runtimes! {
    /// The shipped busybox example, through `provider exec` as an operator runs it (under
    /// gVisor its `pids = 32` and `64MiB` are the task's, the sandbox gets its headroom).
    async fn the_example_pins_the_image_this_build_produces_and_runs(rt: Rt) {
        if rt == Rt::Runsc {
            runtimes_registered(&["runsc"]).await;
        }
        docker_ready().await;
        let dir = example("busybox-sha256sum");
        let def = Definition::load_dir(&dir).unwrap();
        let task_defs::RuntimeSpec::Docker { image: pinned, .. } = &def.manifest.runtime.spec else {
            panic!("not a docker example");
        };
        assert_eq!(
            pinned.digest,
            images().0.id,
            "the example's pinned image differs from the one built from {} (sha256 pinned: {})",
            testimage::busybox_path().display(),
            testimage::PINNED_BUSYBOX_SHA256
        );
        let case = Case::new();
        let input = case.path().join("docs");
        std::fs::create_dir_all(&input).unwrap();
        std::fs::write(input.join("a.txt"), "alpha\n").unwrap();
        std::fs::write(input.join("b.bin"), [0u8, 1, 2, 255]).unwrap();
        let out = case.path().join("out");
        let r = std::process::Command::new(env!("CARGO_BIN_EXE_provider"))
            .args(["exec", "--json", "--allow-unreviewed", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .arg(&dir)
            .env("PINFOLD_CACHE_DIR", case.path().join("cache"))
            .env("PINFOLD_DOCKER_RUNTIME", rt.configured().unwrap_or_default())
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&r.stderr)));
        assert_eq!(
            r.status.code(),
            Some(0),
            "{v} {}",
            String::from_utf8_lossy(&r.stderr)
        );
        assert_eq!(v["status"], "succeeded");
        let expected = format!(
            "{}  docs/a.txt\n{}  docs/b.bin\n",
            crate::cli::sha256_hex(b"alpha\n"),
            crate::cli::sha256_hex(&[0, 1, 2, 255])
        );
        assert_eq!(
            std::fs::read_to_string(out.join("SHA256SUMS")).unwrap(),
            expected
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_read_only_tmpfs_files_and_leave_nothing_on_disk() {
    pinfold_test_support::heavy!("docker");
    let case = Case::new();
    let mut cfg = config("secrets");
    cfg.scratch_dir = case.path().join("scratch");
    let exec = executor_with(cfg).await;
    let mut spec = Spec::sh(
        "set -e; test \"$PINFOLD_SECRETS_DIR\" = /run/secrets; \
         tr 'a-z0-9' 'b-za1-90' < \"$PINFOLD_SECRETS_DIR/API_TOKEN\"; echo; \
         stat -c '%a %u' /run/secrets /run/secrets/API_TOKEN; \
         if touch /run/secrets/x 2>/dev/null; then echo writable; fi; \
         grep -c pinfold-secret /proc/self/environ || true; \
         grep ' /run/secrets ' /proc/self/mountinfo | grep -c ' ro,' ",
    );
    spec.secrets = vec!["API_TOKEN"];
    let def = docker_def(&case, "secrets", &spec);
    let seed = format!("{:?} {}", std::time::SystemTime::now(), std::process::id());
    let value = format!("pinfold-secret-{}", blake3::hash(seed.as_bytes()).to_hex());
    let (input, output) = case.run_dirs();
    let o = exec
        .run(RunRequest {
            definition: Arc::new(def.clone()),
            params: BTreeMap::new(),
            input_dir: input,
            output_dir: output,
            secrets: BTreeMap::from([(
                "API_TOKEN".to_string(),
                pinfold_net::SecretValue::new(value.clone().into_bytes()),
            )]),
        })
        .await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    let shifted: String = value
        .chars()
        .map(|c| match c {
            'z' => 'a',
            '9' => '0',
            'a'..='y' | '0'..='8' => (c as u8 + 1) as char,
            c => c,
        })
        .collect();
    // Delivered as a 0400 file of the task's user in a 0500 directory, read-only, and
    // not in the process environment.
    assert_eq!(
        o.stdout_text(),
        format!("{shifted}\n500 65534\n400 65534\n0\n1\n"),
        "{o:?}"
    );
    assert_no_containers(&exec).await;
    let found = crate::secrets::files_containing(case.path(), value.as_bytes());
    assert!(found.is_empty(), "secret on disk in {found:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&case.path().display().to_string()),
        "a tmpfs is still mounted: {mounts}"
    );

    // Undeclared or missing secrets never reach Docker.
    let (input, output) = case.run_dirs();
    let o = run_in(&exec, &def, input, output).await;
    assert_eq!(o.status, Status::Rejected, "{o:?}");
    assert!(o.reason.unwrap().contains("not supplied"));
}
