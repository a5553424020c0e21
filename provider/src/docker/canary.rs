//! The isolation canary: a short container run under the configured runtime that reports, from inside, which kernel a task's system calls would reach.
//!
//! A runtime's name proves nothing (a runtime called `kata-x` may be plain runc, and a
//! registered `runsc` may fail every start or hang), so the isolation level a provider
//! claims comes from what a container sees. The canary runs the busybox test image
//! ([`super::testimage`], built from the host's static busybox and loaded without a
//! registry) as a non-root user with the task containers' confinement (no capabilities,
//! `no-new-privileges`, read-only root, no network, docker-init, memory and pids limits
//! with gVisor's headroom) and prints:
//!
//! * `/proc/sys/kernel/random/boot_id`: a kernel's identity for this boot. Equal to the
//!   host's: the task shares the host kernel, whatever the runtime is called.
//! * the first lines of `dmesg`: gVisor's Sentry introduces itself ("Starting gVisor...")
//!   and lets any user read its log, while a Linux kernel refuses an unprivileged reader.
//! * `/proc/version`, the CPUID `hypervisor` flag from `/proc/cpuinfo`, DMI vendor and
//!   product, `/sys/hypervisor/type`: a kernel other than the host's that shows these runs
//!   in a VM.
//!
//! The whole probe (create, start, exit) is bounded by a timeout. A start that fails or
//! hangs is cleaned up like a task's: the runtime's processes are killed (a hung start
//! holds the engine's lock on the container, so removal would wait forever) and the
//! container is removed. Results are cached per process by daemon, runtime (with its
//! registered path and arguments) and host boot, so the executors of one process probe
//! each runtime once; `provider doctor` always probes afresh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigCgroupnsModeEnum, ResourcesUlimits, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures::StreamExt;

use super::headroom::{GVISOR, Kernel};
use super::testimage::{self, TestImage};
use super::{hardening, isolation, leaks};

/// How long a canary may take from create to exit before its runtime counts as hanging:
/// runc answers in about 0.3 s and gVisor in about 0.8 s on a busy 2-core machine.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// The user the canary runs as (the test image's `nobody`).
const USER: &str = "65534:65534";

/// The canary's script: one `key=value` line per observation.
const SCRIPT: &str = r#"echo "boot_id=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)"
echo "version=$(cat /proc/version 2>/dev/null)"
busybox dmesg 2>/dev/null | head -n 3 | sed 's/^/dmesg=/'
grep -q '^flags.* hypervisor' /proc/cpuinfo 2>/dev/null && echo "cpuid=hypervisor"
for f in sys_vendor product_name; do echo "dmi=$(cat /sys/class/dmi/id/$f 2>/dev/null)"; done
echo "hypervisor=$(cat /sys/hypervisor/type 2>/dev/null)"
echo "end=1"
"#;

/// What the canary found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Canary {
    /// The runtime it ran under (the configured one, else the daemon's default).
    pub runtime: String,
    /// The kernel it reached.
    pub kernel: Kernel,
    /// What that conclusion rests on.
    pub evidence: Vec<String>,
    /// From create to exit.
    pub took: Duration,
}

/// Why the canary could not tell.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanaryError {
    /// No image to run it with (no static busybox on this machine).
    #[error("no canary image: {0}")]
    Image(String),
    /// The engine refused or failed a call.
    #[error("docker {what}: {message}")]
    Docker {
        /// Which call.
        what: &'static str,
        /// The engine's answer.
        message: String,
    },
    /// The runtime failed to start the container.
    #[error("runtime {runtime:?} failed to start the canary: {message}")]
    Start {
        /// The runtime.
        runtime: String,
        /// The engine's answer.
        message: String,
    },
    /// The canary did not finish in time.
    #[error("runtime {runtime:?} had not run the canary after {:.1} s (the runtime hangs)", .after.as_secs_f64())]
    Hung {
        /// The runtime.
        runtime: String,
        /// How long it was given.
        after: Duration,
    },
    /// The canary ran but failed or printed nothing usable.
    #[error("runtime {runtime:?} ran the canary but it {message}")]
    Broken {
        /// The runtime.
        runtime: String,
        /// What went wrong.
        message: String,
    },
}

/// How to run the canary.
#[derive(Debug, Clone)]
pub struct Options {
    /// The runtime (`None`: the daemon's default).
    pub runtime: Option<String>,
    /// The daemon's default runtime, for reports.
    pub default_runtime: String,
    /// The pinfold instance (labels, and the marker that lets a leak be attributed).
    pub instance: String,
    /// The bound on the whole probe.
    pub timeout: Duration,
    /// The bound on each Docker call.
    pub api_timeout: Duration,
    /// Whether the daemon runs on this machine (so its processes and boot id are ours).
    pub local: bool,
}

/// This machine's boot id (the kernel's identity for this boot).
pub fn host_boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn image() -> Result<&'static TestImage, CanaryError> {
    static IMAGE: OnceLock<Result<TestImage, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let path = testimage::busybox_path();
            let bb = testimage::read_busybox(&path).map_err(|e| e.to_string())?;
            testimage::check_static(&bb).map_err(|e| format!("{}: {e}", path.display()))?;
            testimage::build(&bb, USER).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| {
            CanaryError::Image(format!(
                "{e} (the canary runs a static busybox: apt-get install busybox-static, or set PINFOLD_BUSYBOX)"
            ))
        })
}

/// Reads the canary's output and concludes which kernel it ran on.
///
/// `host_boot_id` is this machine's boot id when the daemon is local (`None` when it is
/// not, or unreadable): the canary sharing it shares the host kernel, whatever else it
/// shows. gVisor is recognised by its own kernel log, a VM kernel by a boot id other than
/// the host's together with a hypervisor sign (CPUID flag, DMI, `/sys/hypervisor`). With
/// no host to compare, hypervisor signs mean the daemon's machine, and so the containers,
/// run in a VM.
pub fn classify(output: &str, host_boot_id: Option<&str>) -> (Kernel, Vec<String>) {
    let values = |key: &str| -> Vec<&str> {
        output
            .lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    };
    let boot = values("boot_id").first().copied();
    let version = values("version").first().copied();
    let dmesg = values("dmesg");
    let mut vm = Vec::new();
    if !values("cpuid").is_empty() {
        vm.push("cpuid hypervisor bit".to_string());
    }
    for d in values("dmi") {
        if isolation::dmi_names_vm(d) {
            vm.push(format!("dmi: {d}"));
        }
    }
    for h in values("hypervisor") {
        vm.push(format!("/sys/hypervisor/type: {h}"));
    }
    let kernel_line = version.map(|v| format!("kernel: {v}"));
    if let Some(g) = dmesg.iter().find(|l| l.contains("gVisor")) {
        let mut ev = vec![format!("kernel log: {g}")];
        ev.extend(kernel_line);
        return (Kernel::Gvisor, ev);
    }
    match (boot, host_boot_id) {
        (Some(b), Some(h)) if b == h => {
            let mut ev = vec![format!("boot id {b} is the host's")];
            ev.extend(kernel_line);
            (Kernel::Host, ev)
        }
        (b, host) => {
            let mut ev = Vec::new();
            if host.is_some() {
                ev.push(format!(
                    "boot id {} is not the host's",
                    b.unwrap_or("(unreadable)")
                ));
            }
            ev.extend(kernel_line);
            if !vm.is_empty() {
                ev.extend(vm);
                (Kernel::Vm, ev)
            } else if host.is_some() {
                (Kernel::Unknown, ev)
            } else {
                ev.push("no sign of another kernel or a VM".into());
                (Kernel::Host, ev)
            }
        }
    }
}

fn body(opts: &Options, image_id: &str, job: &str) -> ContainerCreateBody {
    // Enough for gVisor's sandbox with a handful of processes: the canary's own pipelines.
    let pids = 16;
    let limits = GVISOR.limits(pids);
    let memory = i64::try_from((64u64 << 20) + limits.memory_headroom).unwrap_or(i64::MAX);
    ContainerCreateBody {
        user: Some(USER.into()),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        tty: Some(false),
        open_stdin: Some(false),
        env: Some(vec![format!("{}={}", leaks::CANARY_ENV, opts.instance)]),
        cmd: Some(vec![SCRIPT.into()]),
        image: Some(image_id.into()),
        working_dir: Some("/".into()),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        network_disabled: Some(true),
        labels: Some(HashMap::from([
            (hardening::JOB_LABEL.to_string(), job.to_string()),
            (hardening::INSTANCE_LABEL.to_string(), opts.instance.clone()),
            (
                hardening::CANARY_OWNER_LABEL.to_string(),
                super::owner_tag(),
            ),
        ])),
        host_config: Some(HostConfig {
            privileged: Some(false),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec![hardening::NO_NEW_PRIVILEGES.into()]),
            readonly_rootfs: Some(true),
            memory: Some(memory),
            memory_swap: Some(memory),
            nano_cpus: Some(1_000_000_000),
            pids_limit: Some(limits.pids),
            ulimits: Some(vec![ResourcesUlimits {
                name: Some("core".into()),
                soft: Some(0),
                hard: Some(0),
            }]),
            network_mode: Some("none".into()),
            ipc_mode: Some("private".into()),
            cgroupns_mode: Some(HostConfigCgroupnsModeEnum::PRIVATE),
            init: Some(true),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            log_config: Some(bollard::models::HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".into(), "65536".into()),
                    ("max-file".into(), "1".into()),
                ])),
            }),
            runtime: opts.runtime.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Runs the canary once and concludes. Always removes its container.
pub async fn probe(docker: &Docker, opts: &Options) -> Result<Canary, CanaryError> {
    let runtime = opts
        .runtime
        .clone()
        .unwrap_or_else(|| opts.default_runtime.clone());
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + opts.timeout;
    let image = image()?;
    let within = |what: &'static str| {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        (what, left.min(opts.api_timeout))
    };
    let hung = || CanaryError::Hung {
        runtime: runtime.clone(),
        after: started.elapsed(),
    };
    let (what, t) = within("image load");
    tokio::time::timeout(t, testimage::ensure_loaded(docker, image))
        .await
        .map_err(|_| CanaryError::Docker {
            what,
            message: "no answer in time".into(),
        })?
        .map_err(|e| CanaryError::Image(e.to_string()))?;
    let job = format!(
        "canary-{}",
        &blake3::hash(format!("{:?}{}", Instant::now(), super::owner_tag()).as_bytes()).to_hex()
            [..16]
    );
    let (what, t) = within("create");
    let created = super::api(
        t,
        what,
        docker.create_container(
            Some(
                CreateContainerOptionsBuilder::default()
                    .name(&format!("pinfold-{job}"))
                    .build(),
            ),
            body(opts, &image.id, &job),
        ),
    )
    .await
    .map_err(|e| CanaryError::Docker {
        what,
        message: e.to_string(),
    })?;
    let id = created.id;
    let result = async {
        let (_, t) = within("start");
        match tokio::time::timeout(t, docker.start_container(&id, None)).await {
            // The client's own request timeout ends a start the runtime never finishes.
            Err(_) | Ok(Err(bollard::errors::Error::RequestTimeoutError)) => return Err(hung()),
            Ok(Err(e)) => {
                return Err(CanaryError::Start {
                    runtime: runtime.clone(),
                    message: e.to_string(),
                });
            }
            Ok(Ok(())) => {}
        }
        let wait = async {
            docker
                .wait_container(
                    &id,
                    Some(
                        WaitContainerOptionsBuilder::default()
                            .condition("not-running")
                            .build(),
                    ),
                )
                .next()
                .await
        };
        if tokio::time::timeout_at(deadline, wait).await.is_err() {
            return Err(hung());
        }
        let (what, t) = within("inspect");
        let state = super::api(t, what, docker.inspect_container(&id, None))
            .await
            .map_err(|e| CanaryError::Docker {
                what,
                message: e.to_string(),
            })?
            .state
            .unwrap_or_default();
        let (_, t) = within("logs");
        let output = tokio::time::timeout(t, logs(docker, &id))
            .await
            .unwrap_or_default();
        if state.exit_code != Some(0) || !output.contains("end=1") {
            return Err(CanaryError::Broken {
                runtime: runtime.clone(),
                message: format!(
                    "exited with {:?}{}: {:?}",
                    state.exit_code,
                    state
                        .error
                        .filter(|e| !e.is_empty())
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default(),
                    output.chars().take(300).collect::<String>()
                ),
            });
        }
        Ok(output)
    }
    .await;
    let clean = result.is_ok();
    super::clear_container(docker, opts.api_timeout, &id, opts.local, !clean).await;
    let output = result?;
    let host = if opts.local { host_boot_id() } else { None };
    let (kernel, evidence) = classify(&output, host.as_deref());
    Ok(Canary {
        runtime,
        kernel,
        evidence,
        took: started.elapsed(),
    })
}

async fn logs(docker: &Docker, id: &str) -> String {
    let mut s = docker.logs(
        id,
        Some(
            LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .build(),
        ),
    );
    let mut out = Vec::new();
    while let Some(Ok(item)) = s.next().await {
        let bytes = match item {
            LogOutput::StdOut { message }
            | LogOutput::StdErr { message }
            | LogOutput::Console { message } => message,
            LogOutput::StdIn { .. } => continue,
        };
        out.extend_from_slice(&bytes[..bytes.len().min((64 << 10) - out.len().min(64 << 10))]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The canary's verdict for a runtime, probed once per process for each daemon, runtime
/// (name, registered path and arguments) and host boot; failures are not remembered, so a
/// runtime that is fixed is believed at the next try.
pub async fn cached(docker: &Docker, opts: &Options, key: String) -> Result<Canary, CanaryError> {
    type Cells = Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Canary>>>>;
    static CELLS: OnceLock<Cells> = OnceLock::new();
    let cell = CELLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_default()
        .clone();
    cell.get_or_try_init(|| probe(docker, opts)).await.cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "c1cb18af-3763-4932-af2e-06bb6f88bcba";

    #[test]
    fn a_shared_boot_id_is_the_host_kernel_whatever_else_is_seen() {
        let out = format!(
            "boot_id={HOST}\nversion=Linux version 6.1.0\ncpuid=hypervisor\ndmi=QEMU\nhypervisor=\nend=1\n"
        );
        let (k, ev) = classify(&out, Some(HOST));
        assert_eq!(k, Kernel::Host, "{ev:?}");
        assert!(ev[0].contains("is the host's"), "{ev:?}");
    }

    #[test]
    fn gvisor_introduces_itself_in_its_kernel_log() {
        let out = "boot_id=\nversion=Linux version 4.4.0 #1 SMP Sun Jan 10 15:06:54 PST 2016\n\
                   dmesg=[   0.000000] Starting gVisor...\ndmesg=[   0.1] Reticulating splines...\n\
                   cpuid=hypervisor\nend=1\n";
        let (k, ev) = classify(out, Some(HOST));
        assert_eq!(k, Kernel::Gvisor);
        assert!(ev[0].contains("Starting gVisor"), "{ev:?}");
        assert_eq!(
            k.isolation(),
            task_defs::manifest::Isolation::SandboxedRuntime
        );
    }

    #[test]
    fn another_kernel_with_hypervisor_signs_is_a_vm_and_without_is_unknown() {
        let vm =
            "boot_id=0000\nversion=Linux version 6.6 (kata)\ncpuid=hypervisor\ndmi=QEMU\nend=1\n";
        let (k, ev) = classify(vm, Some(HOST));
        assert_eq!(k, Kernel::Vm, "{ev:?}");
        assert!(ev.iter().any(|e| e == "dmi: QEMU"), "{ev:?}");
        let bare = "boot_id=0000\nversion=Linux version 6.6\nend=1\n";
        assert_eq!(classify(bare, Some(HOST)).0, Kernel::Unknown);
        assert_eq!(
            Kernel::Unknown.isolation(),
            task_defs::manifest::Isolation::Container
        );
        // A remote daemon: hypervisor signs mean its machine is a VM; none, a shared kernel.
        assert_eq!(classify(vm, None).0, Kernel::Vm);
        assert_eq!(classify(bare, None).0, Kernel::Host);
    }
}
