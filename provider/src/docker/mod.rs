//! The Docker executor: digest-pinned images run in hardened, verified, disposable containers.
//!
//! # Hardening (every container; a definition cannot opt out)
//! The image is resolved by digest only (a bare local id `sha256:…` or `name@sha256:…`
//! checked against the image's RepoDigests) and the container is created from the
//! resolved id, so no tag is ever looked up. Images configured to run as root, or with a
//! working directory under `/proc`, `/sys` or `/dev` (CVE-2024-21626), are refused. The
//! create body ([`hardening::container_body`]) sets: not privileged, `cap_drop=["ALL"]`
//! with no `cap_add`, `no-new-privileges` (the daemon's default seccomp and AppArmor
//! profiles stay in force since none is named), a read-only root filesystem, a small
//! `noexec,nosuid,nodev` tmpfs on `/tmp`, memory with `memory_swap` equal (no swap),
//! `nano_cpus`, `pids_limit`, `nofile` and `core` ulimits, `network_mode=none` with
//! networking disabled, private IPC and cgroup namespaces, the host's PID/UTS/user
//! namespaces never shared, no devices, no sysctls, the daemon's masked and read-only
//! paths untouched, `init=true`, restart policy `no`, a size-capped json-file log, the
//! definition's numeric user, absolute working directory, entrypoint and args.
//!
//! Before create, [`hardening::validate_body`] checks the body's wire form against an
//! allowlist (keys and values; the only mounts are our two staging binds). After create,
//! [`hardening::verify_created`] re-inspects the container and compares every setting;
//! any create warning or mismatch removes the container and rejects the run.
//!
//! # Outputs: a provider-mounted tmpfs, bound in
//! The output directory must have a size cap the container cannot exceed. A tmpfs
//! mounted *by Docker* (a `tmpfs` mount or a tmpfs-backed local volume) disappears when
//! the container stops, so its files could only be copied out of a running container,
//! and the container stops by itself when the task ends. Polling a plain bind-mounted
//! directory (what the wasm executor does) lets a fast writer overshoot by whatever it
//! writes between polls. So the provider mounts a tmpfs (`noexec,nosuid,nodev`, mode
//! 0700, owned by the task's uid) on a per-job directory under
//! [`DockerConfig::scratch_dir`], binds it at `io.output`, and after the container is gone
//! copies regular files and directories out with [`crate::fsio::collect_outputs`] (never
//! following a link), then unmounts it. The tmpfs holds `limits.output` bytes in any file
//! shape: tmpfs charges whole pages, so it gets a page per possible file on top
//! (`staging::output_tmpfs_size`: 5,000 one-byte files take 20 MB of pages) and
//! [`DockerConfig::max_output_entries`] + 2 inodes. The byte cap itself is exact and is
//! enforced when the outputs are collected, on apparent sizes (a sparse file counts its
//! length): anything over it is `output_exceeded` with the entries over it dropped. A
//! disk-filling task gets `ENOSPC` from the tmpfs, which a tree within the cap never
//! fills, so a full tmpfs also ends the run as `output_exceeded`. Costs and assumptions:
//! * mounting needs root (or `CAP_SYS_ADMIN`); the provider talks to the Docker socket,
//!   which is root-equivalent anyway, and `provider doctor` reports it;
//! * the scratch directory must be in the daemon's mount namespace (checked at start-up
//!   when the daemon's pid is readable), or the daemon would bind the empty directory
//!   underneath the tmpfs;
//! * tmpfs pages are charged to the writer's memory cgroup, so the container's memory
//!   limit is `limits.memory` plus the tmpfs size: the memory limit still bounds what the
//!   run can pin in RAM in total (with the default 10,000 entries, the page allowance adds
//!   39 MiB; `max_output_entries` trades it against how many files a task may return).
//!
//! Inputs are the provider's staging directory, made world-readable (the task runs as a
//! non-root user) and bound read-only at `io.input`.
//!
//! # Run
//! Output is read through `attach` (opened before start, so nothing is missed), with
//! stdout and stderr each capped at `min(limits.output, max_stdio_bytes)`; the first byte
//! past a cap kills the container → `output_exceeded`. The run waits for the container
//! up to `limits.timeout`, then SIGKILLs it → `timed_out`. `State.OOMKilled` (read after
//! exit) → `memory_exceeded`. The container and its volumes are removed on every path
//! (a drop guard covers cancellation), every container carries `pinfold.job=<job id>`,
//! `pinfold.instance=<instance>` and `pinfold.owner=<pid>.<start time>`, and
//! [`DockerExecutor::new`] removes every container and scratch mount of the instance
//! whose owning process is gone (see [`DockerExecutor::cleanup_orphans`]), giving each
//! removal [`STARTUP_REMOVE_TIMEOUT`]: an orphan the engine cannot remove (a wedged
//! runtime, a refused filesystem removal) is logged and retried in the background, never
//! fatal, so one stuck container does not stop every later run. An interrupted `provider
//! exec` removes its own containers with [`DockerExecutor::cleanup_own`]; one killed
//! outright is cleaned up by its watchdog process or, failing that, by the next start,
//! which also removes its `pinfold-run-*` directory ([`sweep_stale_run_dirs`]). The attach
//! stream is drained to its end even past the cap: an undrained attach connection blocks
//! the daemon's stdio copier and, with it, the kill and every later call on the container.
//! Every Docker call has a timeout.
//!
//! # Runtimes: measured, not named
//! [`DockerExecutor::new`] runs the isolation canary ([`canary`]) under the configured
//! runtime (else the daemon's default) and takes the runtime's isolation level and cgroup
//! headroom ([`headroom`]) from the kernel it found, never from the runtime's name; a
//! runtime that fails or hangs on the canary stops the executor from starting. Under gVisor
//! the task's processes are held by `RLIMIT_NPROC` inside the sandbox and the pids and memory
//! cgroups get the sandbox's own threads and memory on top. A start that fails or hangs has
//! the runtime's processes killed before and after the container's removal
//! (`clear_container`), and the start-up sweep kills runtime processes of this instance's
//! containers that the engine no longer lists ([`leaks`]).
//!
//! # Speed
//! A trivial task (`provider/benches/docker.rs`, 2 cores, busy machine): 245 ms through
//! this hardened path, 487 ms unhardened (Docker's defaults, so mostly the bridge network
//! that `network_mode=none` skips), 402 ms for `docker run --rm` with the same flags and
//! 493 ms for `docker run --rm` with defaults. The allowlist, the re-inspection and the
//! output tmpfs cost little next to container start-up. The canary adds one container
//! start to each executor's start-up (0.25–0.4 s under runc, 0.55–0.75 s under gVisor,
//! once per runtime and process); under gVisor a task's create to exit takes about twice
//! runc's (0.4 s against 0.2 s for the busybox example).

pub mod canary;
pub mod hardening;
pub mod headroom;
pub mod image;
pub mod isolation;
pub mod leaks;
mod staging;
pub mod testimage;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, EventsOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures::{Stream, StreamExt};
use task_defs::manifest::Isolation;
use task_defs::{RuntimeKind, RuntimeSpec};
use tokio::sync::{Notify, Semaphore};

use crate::executor::{Executor, Outcome, RunRequest, Status, Usage, output_digest};
use crate::fsio::{self, TreeCaps};
pub use isolation::{IsolationPolicy, IsolationReport};

/// Provider-side policy and sizing of the Docker executor.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Names this executor's containers (`pinfold.instance` label) and scratch directory;
    /// orphans are cleaned up per instance.
    pub instance: String,
    /// `docker.isolation`: whether a VM is required, recommended or unnecessary.
    pub isolation: IsolationPolicy,
    /// `docker.runtime`: the OCI runtime to run containers with (e.g. `runsc`); `None`
    /// uses the daemon's default. Must be registered with the daemon and pass the canary.
    pub runtime: Option<String>,
    /// Overrides VM detection (`None`: detect).
    pub host_vm: Option<bool>,
    /// Whether a definition may ask for uid 0 (and run an image configured as root).
    pub allow_root: bool,
    /// Runs at once.
    pub max_concurrent: u32,
    /// Largest `limits.memory` accepted.
    pub max_memory: u64,
    /// Largest `limits.output` accepted (it is also RAM: the output tmpfs).
    pub max_output: u64,
    /// Largest `limits.cpus` accepted, in thousandths of a CPU.
    pub max_millicpus: u64,
    /// Largest `limits.pids` accepted.
    pub max_pids: u64,
    /// Cap on each of stdout and stderr held in memory (further capped by `limits.output`).
    pub max_stdio_bytes: u64,
    /// Most entries (inodes) the output tmpfs holds.
    pub max_output_entries: u64,
    /// Size of the container's `/tmp` tmpfs.
    pub tmp_bytes: u64,
    /// Size of the container's `/dev/shm`.
    pub shm_bytes: u64,
    /// `RLIMIT_NOFILE` inside the container.
    pub nofile: u64,
    /// Cap of the json-file log the daemon keeps (outputs are read through attach).
    pub log_max_bytes: u64,
    /// Timeout of every Docker API call (not of the task, which has its own).
    pub api_timeout: Duration,
    /// First wait before the orphan sweep is retried in the background after a removal
    /// failed at start-up (it doubles up to [`MAX_ORPHAN_RETRY`]).
    pub orphan_retry: Duration,
    /// Where per-job output mounts are created (`<scratch_dir>/pinfold-docker-<instance>`).
    pub scratch_dir: PathBuf,
    /// The bound on the isolation canary (create to exit) run at start-up under the
    /// runtime: past it the runtime counts as hanging and the executor refuses to start.
    pub canary_timeout: Duration,
    /// Apply the hardening. Only the benchmark that measures the cost of hardening sets
    /// this to `false`; the CLI and the node never do.
    #[doc(hidden)]
    pub hardened: bool,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            instance: "default".into(),
            isolation: IsolationPolicy::default(),
            runtime: None,
            host_vm: None,
            allow_root: false,
            max_concurrent: 4,
            max_memory: 8 << 30,
            max_output: 1 << 30,
            max_millicpus: 64_000,
            max_pids: 4096,
            max_stdio_bytes: 4 << 20,
            max_output_entries: 10_000,
            tmp_bytes: 16 << 20,
            shm_bytes: 4 << 20,
            nofile: 1024,
            log_max_bytes: 1 << 20,
            api_timeout: Duration::from_secs(30),
            orphan_retry: Duration::from_secs(30),
            scratch_dir: std::env::temp_dir(),
            canary_timeout: canary::DEFAULT_TIMEOUT,
            hardened: true,
        }
    }
}

impl DockerConfig {
    /// The defaults with `docker.isolation` and `docker.runtime` taken from
    /// `$PINFOLD_DOCKER_ISOLATION` and `$PINFOLD_DOCKER_RUNTIME` when set.
    pub fn from_env() -> Result<DockerConfig, DockerError> {
        let mut c = DockerConfig::default();
        if let Ok(p) = std::env::var("PINFOLD_DOCKER_ISOLATION") {
            c.isolation = p.parse().map_err(DockerError::Config)?;
        }
        if let Ok(r) = std::env::var("PINFOLD_DOCKER_RUNTIME")
            && !r.is_empty()
        {
            c.runtime = Some(r);
        }
        Ok(c)
    }

    fn scratch_root(&self) -> PathBuf {
        self.scratch_dir
            .join(format!("pinfold-docker-{}", self.instance))
    }
}

/// How long each orphan removal may take at start-up before it is left to the background
/// retry: a healthy engine removes a container in well under a second, and a wedged one
/// must not hold up every later run.
pub const STARTUP_REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait between background retries of the orphan sweep.
pub const MAX_ORPHAN_RETRY: Duration = Duration::from_secs(600);

/// Removes the `pinfold-run-<owner>-*` directories `provider exec` left in `dir` when it
/// was killed (see `staging::sweep_run_dirs` for how they are recognised safely).
pub fn sweep_stale_run_dirs(dir: &Path) -> usize {
    staging::sweep_run_dirs(dir, owner_alive)
}

/// The prefix of `provider exec`'s run directory, naming this process as its owner.
pub fn run_dir_prefix() -> String {
    format!("{}{}-", staging::RUN_DIR_PREFIX, owner_tag())
}

/// Errors creating a Docker executor.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The Docker client could not be set up (bad `DOCKER_HOST`).
    #[error("connecting to docker: {0}")]
    Connect(bollard::errors::Error),
    /// A Docker API call failed.
    #[error("docker {what}: {source}")]
    Api {
        /// Which call.
        what: &'static str,
        /// The error.
        source: bollard::errors::Error,
    },
    /// A Docker API call did not answer in time.
    #[error("docker {0}: no answer within the api timeout")]
    Timeout(&'static str),
    /// The configuration cannot work with this daemon.
    #[error("docker configuration: {0}")]
    Config(String),
    /// The daemon cannot run containers as hardened as required.
    #[error("the docker daemon cannot run hardened containers: {0}")]
    Insecure(String),
    /// The runtime failed its isolation canary (it does not start, hangs, or cannot be
    /// verified), so no task would run under it as claimed.
    #[error("the isolation canary failed: {0}")]
    Canary(canary::CanaryError),
}

/// Awaits a Docker call with the API timeout.
async fn api<T>(
    limit: Duration,
    what: &'static str,
    fut: impl Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, DockerError> {
    match tokio::time::timeout(limit, fut).await {
        Err(_) => Err(DockerError::Timeout(what)),
        Ok(r) => r.map_err(|source| DockerError::Api { what, source }),
    }
}

/// Connects with bollard's defaults (`DOCKER_HOST` honoured) and negotiates the API version.
pub async fn connect(api_timeout: Duration) -> Result<Docker, DockerError> {
    let d = Docker::connect_with_defaults()
        .map_err(DockerError::Connect)?
        .with_timeout(api_timeout);
    api(api_timeout, "version negotiation", d.negotiate_version()).await
}

/// Whether the daemon is on this machine (a unix socket), so local evidence applies to it.
pub fn daemon_is_local() -> bool {
    std::env::var("DOCKER_HOST").map_or(true, |h| h.is_empty() || h.starts_with("unix://"))
}

/// The mount namespace of the daemon differs from ours (`Some(true)`), is the same, or
/// cannot be read (`None`: not root, or no pid file).
pub fn daemon_mount_ns_differs() -> Option<bool> {
    let pid = std::fs::read_to_string("/var/run/docker.pid").ok()?;
    let theirs = std::fs::read_link(format!("/proc/{}/ns/mnt", pid.trim())).ok()?;
    let ours = std::fs::read_link("/proc/self/ns/mnt").ok()?;
    Some(theirs != ours)
}

struct Inner {
    docker: Docker,
    cfg: DockerConfig,
    report: IsolationReport,
    permits: Semaphore,
    seq: AtomicU64,
}

/// Runs Docker definitions; cheap to clone, clones share the client and the limits.
#[derive(Clone)]
pub struct DockerExecutor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DockerExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerExecutor")
            .field("cfg", &self.inner.cfg)
            .field("isolation", &self.inner.report)
            .finish_non_exhaustive()
    }
}

impl DockerExecutor {
    /// Connects, checks that the daemon can enforce the hardening, detects the isolation
    /// level, and removes orphans of this instance.
    pub async fn new(cfg: DockerConfig) -> Result<Self, DockerError> {
        let t = cfg.api_timeout;
        let docker = connect(t).await?;
        let info = api(t, "info", docker.info()).await?;
        let sec = info.security_options.clone().unwrap_or_default();
        if !sec.iter().any(|s| s.contains("name=seccomp")) {
            return Err(DockerError::Insecure(
                "seccomp is not enabled in the daemon (security options: none with name=seccomp)"
                    .into(),
            ));
        }
        if sec.iter().any(|s| s.contains("profile=unconfined")) {
            return Err(DockerError::Insecure(
                "the daemon's default seccomp profile is unconfined".into(),
            ));
        }
        for (what, ok) in [
            ("memory", info.memory_limit),
            ("swap", info.swap_limit),
            ("pids", info.pids_limit),
        ] {
            if ok == Some(false) {
                return Err(DockerError::Insecure(format!(
                    "the daemon cannot enforce {what} limits"
                )));
            }
        }
        let runtimes: Vec<String> = info
            .runtimes
            .as_ref()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default();
        if let Some(r) = &cfg.runtime
            && !runtimes.contains(r)
        {
            return Err(DockerError::Config(format!(
                "runtime {r:?} is not registered with the daemon (registered: {})",
                runtimes.join(", ")
            )));
        }
        if cfg.hardened && daemon_mount_ns_differs() == Some(true) {
            return Err(DockerError::Config(
                "the daemon runs in another mount namespace, so it would not see the output tmpfs"
                    .into(),
            ));
        }
        let local = daemon_is_local();
        let mut evidence = Vec::new();
        match cfg.host_vm {
            Some(true) => evidence.push("configured: host_vm = true".to_string()),
            Some(false) => {}
            None => {
                if local {
                    let local = tokio::task::spawn_blocking(isolation::detect_local_vm)
                        .await
                        .unwrap_or_default();
                    evidence.extend(local.found);
                }
                if let Some(os) = &info.operating_system
                    && isolation::daemon_os_is_vm(os)
                {
                    evidence.push(format!("daemon operating system: {os}"));
                }
            }
        }
        let default_runtime = info
            .default_runtime
            .clone()
            .unwrap_or_else(|| "runc".into());
        // The runtime's own word counts for nothing: a canary container says what it is.
        let opts = canary::Options {
            runtime: cfg.runtime.clone(),
            default_runtime: default_runtime.clone(),
            instance: cfg.instance.clone(),
            timeout: cfg.canary_timeout,
            api_timeout: t,
            local,
        };
        let name = cfg.runtime.as_deref().unwrap_or(&default_runtime);
        let spec = info.runtimes.as_ref().and_then(|r| r.get(name));
        let key = format!(
            "{}|{name}|{:?}|{:?}|{:?}",
            info.id.as_deref().unwrap_or(""),
            spec.and_then(|s| s.path.as_deref()),
            spec.and_then(|s| s.runtime_args.as_deref()),
            if local { canary::host_boot_id() } else { None },
        );
        let probed = canary::cached(&docker, &opts, key).await;
        let report = IsolationReport::new(
            cfg.isolation,
            cfg.runtime.clone(),
            runtimes,
            default_runtime,
            evidence,
            probed.clone().map_err(|e| e.to_string()),
        );
        let exec = DockerExecutor {
            inner: Arc::new(Inner {
                docker,
                permits: Semaphore::new(cfg.max_concurrent.max(1) as usize),
                cfg,
                report,
                seq: AtomicU64::new(0),
            }),
        };
        // A container that will not go (a wedged runtime, a stuck kill) must not stop this
        // executor from running anything else: the sweep is retried in the background. It
        // runs before a failed canary is reported, so that even an executor made only to
        // clean up (the exec watchdog) does its job.
        if let Err(e) = exec.sweep_orphans(STARTUP_REMOVE_TIMEOUT).await {
            tracing::warn!(
                "orphaned pinfold containers could not all be removed ({e}); carrying on and retrying in the background"
            );
            exec.retry_orphans_in_background();
        }
        match probed {
            Ok(c) => tracing::info!(
                runtime = %c.runtime,
                "isolation canary: {} in {} ms ({})",
                c.kernel.as_str(),
                c.took.as_millis(),
                c.evidence.join("; ")
            ),
            // Without a canary image nothing is claimed for the daemon's default runtime
            // (it counts as sharing the host's kernel), but a runtime the operator chose
            // must be shown to work.
            Err(canary::CanaryError::Image(e)) if exec.inner.cfg.runtime.is_none() => {
                tracing::warn!(
                    "the isolation canary could not run ({e}); the runtime counts as sharing the host's kernel"
                );
            }
            Err(e) => return Err(DockerError::Canary(e)),
        }
        if let Some(w) = exec.inner.report.warning() {
            tracing::warn!("{w}");
        }
        Ok(exec)
    }

    /// The isolation level this provider achieves (what the node will advertise).
    pub fn isolation(&self) -> Isolation {
        self.inner.report.achieved
    }

    /// The full isolation report (policy, runtime, evidence).
    pub fn isolation_report(&self) -> &IsolationReport {
        &self.inner.report
    }

    /// The configuration this executor was created with.
    pub fn config(&self) -> &DockerConfig {
        &self.inner.cfg
    }

    /// The Docker client.
    pub fn docker(&self) -> &Docker {
        &self.inner.docker
    }

    /// Removes (with their volumes) every container of this instance whose owning
    /// process is gone, and the scratch mounts such processes left behind. Returns how
    /// many containers were removed, or the first error once every container was tried.
    ///
    /// Each container and scratch directory records its owner as `<pid>.<start time>`
    /// (the start time from `/proc/<pid>/stat`, so a recycled pid is not mistaken for
    /// the owner): two `provider exec` processes of the same instance can run side by
    /// side without one removing the other's containers, while anything a crashed or
    /// killed process left is removed by the next one to start.
    pub async fn cleanup_orphans(&self) -> Result<usize, DockerError> {
        self.sweep_orphans(self.inner.cfg.api_timeout).await
    }

    async fn sweep_orphans(&self, per_removal: Duration) -> Result<usize, DockerError> {
        let root = self.inner.cfg.scratch_root();
        // Scratch directories first: a failure with the containers must not keep them.
        tokio::task::spawn_blocking(move || staging::cleanup_root(&root, owner_alive))
            .await
            .unwrap_or(0);
        let removed = self
            .remove_containers(per_removal, |labels| {
                !hardening::owner_of(labels).is_some_and(|o| owner_alive(o))
            })
            .await?;
        if removed > 0 {
            tracing::info!(count = removed, "removed orphaned pinfold containers");
        }
        if daemon_is_local() {
            self.reap_leaked_runtimes().await?;
        }
        Ok(removed)
    }

    /// Kills the runtime processes of this instance's containers that the engine no
    /// longer lists (what a failed gVisor start leaves), and reports those of others.
    /// Returns the groups reaped.
    pub async fn reap_leaked_runtimes(&self) -> Result<Vec<leaks::RuntimeGroup>, DockerError> {
        let cfg = &self.inner.cfg;
        let leaked = runtime_leaks(&self.inner.docker, cfg.api_timeout, None).await?;
        let (ours, others): (Vec<_>, Vec<_>) = leaked
            .into_iter()
            .partition(|g| g.instance.as_deref() == Some(cfg.instance.as_str()));
        if !others.is_empty() {
            tracing::warn!(
                "runtime processes of containers the docker engine no longer lists, not this provider's: {}",
                others
                    .iter()
                    .map(leaks::RuntimeGroup::describe)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        if ours.is_empty() {
            return Ok(ours);
        }
        let groups = ours.clone();
        let results = tokio::task::spawn_blocking(move || {
            groups
                .iter()
                .map(|g| (g.describe(), leaks::reap(g, true, LEAK_REAP_WAIT)))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (what, r) in results {
            if r.survivors.is_empty() {
                tracing::info!(
                    "killed the leaked runtime processes of {what}{}",
                    match r.record_deleted {
                        Some(true) => "; containerd's record deleted",
                        Some(false) => "; containerd's record could not be deleted",
                        None => "",
                    }
                );
            } else {
                tracing::warn!(
                    "leaked runtime processes of {what} survived SIGKILL: {:?}",
                    r.survivors
                );
            }
        }
        Ok(ours)
    }

    /// Removes this instance's containers whose labels `doomed` selects, several at once,
    /// each within `per_removal`. Every one is tried; the first error is returned after.
    async fn remove_containers(
        &self,
        per_removal: Duration,
        doomed: impl Fn(&HashMap<String, String>) -> bool,
    ) -> Result<usize, DockerError> {
        let d = &self.inner.docker;
        let ids: Vec<String> =
            list_instance_labels(d, self.inner.cfg.api_timeout, &self.inner.cfg.instance)
                .await?
                .into_iter()
                .filter(|(_, labels)| doomed(labels))
                .map(|(id, _)| id)
                .collect();
        let results: Vec<(String, Result<(), DockerError>)> = futures::stream::iter(ids)
            .map(|id| async move {
                let r = remove(d, per_removal, &id).await;
                (id, r)
            })
            .buffer_unordered(8)
            .collect()
            .await;
        let mut removed = 0;
        let mut first_err = None;
        for (id, r) in results {
            match r {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(container = %id, "removing a pinfold container failed: {e}");
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(removed), Err)
    }

    /// Repeats [`Self::cleanup_orphans`] with a doubling wait until it succeeds or the
    /// executor is dropped.
    fn retry_orphans_in_background(&self) {
        let weak = Arc::downgrade(&self.inner);
        let mut wait = self.inner.cfg.orphan_retry;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(wait).await;
                let Some(inner) = weak.upgrade() else { return };
                let exec = DockerExecutor { inner };
                match exec.cleanup_orphans().await {
                    Ok(n) => {
                        tracing::info!(count = n, "orphan sweep retried and done");
                        return;
                    }
                    Err(e) => {
                        wait = (wait * 2).min(MAX_ORPHAN_RETRY);
                        tracing::warn!(
                            "orphan sweep still failing ({e}); retrying in {} s",
                            wait.as_secs()
                        );
                    }
                }
            }
        });
    }

    /// Removes every container and scratch mount this process made, waiting until the
    /// engine lists none of its containers (or `within` passes). For a `provider exec`
    /// that is interrupted: its run future has been dropped, which may leave a container
    /// running or one whose create was still in flight.
    pub async fn cleanup_own(&self, within: Duration) -> Result<(), DockerError> {
        let me = owner_tag();
        let deadline = tokio::time::Instant::now() + within;
        let mut quiet = 0;
        let mut last = Ok(());
        // Two empty listings in a row: a create in flight when the run was dropped shows
        // up between them.
        while quiet < 2 {
            let left = tokio::time::timeout_at(
                deadline,
                self.remove_containers(self.inner.cfg.api_timeout, |l| {
                    hardening::owner_of(l) == Some(&me)
                }),
            )
            .await
            .map_err(|_| DockerError::Timeout("remove"))?;
            match left {
                Ok(0) => quiet += 1,
                Ok(_) => quiet = 0,
                Err(e) => {
                    quiet = 0;
                    last = Err(e);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let root = self.inner.cfg.scratch_root();
        let me2 = me.clone();
        tokio::task::spawn_blocking(move || {
            staging::cleanup_root(&root, |o| o != me2 && owner_alive(o))
        })
        .await
        .unwrap_or(0);
        if quiet >= 2 { Ok(()) } else { last }
    }

    fn job_id(&self) -> String {
        let n = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let h = blake3::hash(format!("{}-{nanos}-{n}", std::process::id()).as_bytes());
        h.to_hex()[..16].to_string()
    }

    async fn run_inner(&self, req: RunRequest) -> Outcome {
        let cfg = &self.inner.cfg;
        let m = &req.definition.manifest;
        let RuntimeSpec::Docker {
            image: image_ref,
            user,
            entrypoint,
            workdir,
            isolation: wanted,
        } = &m.runtime.spec
        else {
            return Outcome::rejected("not a docker definition");
        };
        if let Err(e) = self.inner.report.admit(*wanted) {
            return Outcome::rejected(e);
        }
        let millicpus = m.limits.millicpus.unwrap_or(1000);
        let pids = m.limits.pids.unwrap_or(64);
        for (what, got, max) in [
            ("limits.memory", m.limits.memory, cfg.max_memory),
            ("limits.output", m.limits.output, cfg.max_output),
            ("limits.cpus (millicpus)", millicpus, cfg.max_millicpus),
            ("limits.pids", pids, cfg.max_pids),
        ] {
            if got > max {
                return Outcome::rejected(format!(
                    "{what} {got} exceeds this provider's maximum {max}"
                ));
            }
        }
        let args = match crate::executor::admit_request(&req) {
            Ok(a) => a,
            Err(reason) => return Outcome::rejected(reason),
        };
        let with_secrets = !req.secrets.is_empty();
        if with_secrets {
            if !cfg.hardened {
                // Secrets live only in a provider tmpfs, which the unhardened baseline lacks.
                return Outcome::rejected("secrets need the hardened executor");
            }
            if m.capabilities.env.contains_key(hardening::SECRETS_DIR_ENV) {
                return Outcome::rejected(format!(
                    "capabilities.env sets {}, which the provider reserves for secrets",
                    hardening::SECRETS_DIR_ENV
                ));
            }
            let overlaps = |p: &str| {
                let p = p.trim_end_matches('/');
                let t = hardening::SECRETS_TARGET;
                p.is_empty()
                    || t == p
                    || t.starts_with(&format!("{p}/"))
                    || p.starts_with(&format!("{t}/"))
            };
            if overlaps(&m.io.input) || overlaps(&m.io.output) {
                return Outcome::rejected(format!(
                    "io.input or io.output overlaps {}, where secrets are mounted",
                    hardening::SECRETS_TARGET
                ));
            }
        }
        // Validation refuses these already; checked again because a definition can reach
        // an executor without passing through it, and an id of 2^31 or more is `-1` to
        // chown ("leave unchanged") while gid 0 is the root group.
        if let Err(why) = task_defs::manifest::check_user_ids(user.0, user.1) {
            return Outcome::rejected(format!("runtime.user: {why}"));
        }
        if user.0 == 0 && !cfg.allow_root {
            return Outcome::rejected(
                "the definition asks to run as root, which this provider refuses",
            );
        }
        if hardening::under_pseudo_fs(workdir) {
            return Outcome::rejected(format!(
                "working directory {workdir:?} is under /proc, /sys or /dev"
            ));
        }
        let input_dir = match std::fs::canonicalize(&req.input_dir) {
            Ok(p) => p,
            Err(e) => {
                return Outcome::rejected(format!(
                    "input directory {}: {e}",
                    req.input_dir.display()
                ));
            }
        };

        let Ok(_permit) = self.inner.permits.acquire().await else {
            return Outcome::rejected("the executor is shutting down");
        };
        let t = cfg.api_timeout;
        let docker = &self.inner.docker;

        // The image, by digest only.
        let inspected = match tokio::time::timeout(
            t,
            docker.inspect_image(&image::lookup_ref(image_ref)),
        )
        .await
        {
            Err(_) => {
                return Outcome::rejected("docker image inspect: no answer within the api timeout");
            }
            Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            })) => {
                return Outcome::rejected(format!(
                    "image {image_ref} is not present on this provider (images are never pulled by tag; \
                     load the image with that exact digest first)"
                ));
            }
            Ok(Err(e)) => {
                return Outcome::rejected(format!("docker image inspect {image_ref}: {e}"));
            }
            Ok(Ok(i)) => i,
        };
        let resolved = match image::check(
            image_ref,
            &inspected,
            image::RootPolicy {
                allow_root: cfg.allow_root,
                definition_wants_root: user.0 == 0,
            },
        ) {
            Ok(r) => r,
            Err(e) => return Outcome::rejected(e),
        };

        // Staging: inputs readable by the task's user, outputs on a size-capped tmpfs.
        let job = self.job_id();
        let in_dir = input_dir.clone();
        let (uid, gid) = *user;
        let (out_size, entries, hardened) = (m.limits.output, cfg.max_output_entries, cfg.hardened);
        let scratch = cfg.scratch_root();
        let job2 = format!("{}-{job}", owner_tag());
        let out_dir = req.output_dir.clone();
        // Cloned into the blocking task; every copy zeroes itself when dropped.
        let secrets = req.secrets.clone();
        let staged = tokio::task::spawn_blocking(move || {
            staging::make_world_readable(&in_dir)
                .map_err(|e| format!("making the inputs readable: {e}"))?;
            if hardened {
                let out = staging::OutputMount::create(&scratch, &job2, out_size, entries, uid, gid)
                    .map_err(|e| {
                        format!(
                            "mounting the size-capped output tmpfs under {} (needs root or CAP_SYS_ADMIN): {e}",
                            scratch.display()
                        )
                    })?;
                let sec = if secrets.is_empty() {
                    None
                } else {
                    Some(
                        staging::SecretsMount::create(&scratch, &job2, &secrets, uid, gid)
                            .map_err(|e| format!("staging the secrets tmpfs: {e}"))?,
                    )
                };
                Ok::<_, String>(Some((out, sec)))
            } else {
                // Benchmark baseline only: the task writes straight into the request's
                // output directory, uncapped.
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(0o777))
                    .map_err(|e| format!("output directory: {e}"))?;
                Ok(None)
            }
        })
        .await;
        let (mount, secrets_mount) = match staged {
            Ok(Ok(Some((m, s)))) => (Some(m), s),
            Ok(Ok(None)) => (None, None),
            Ok(Err(e)) => return Outcome::rejected(e),
            Err(e) => return Outcome::rejected(format!("staging failed: {e}")),
        };
        let output_source = match &mount {
            Some(m) => m.path().to_path_buf(),
            None => match std::fs::canonicalize(&req.output_dir) {
                Ok(p) => p,
                Err(e) => return Outcome::rejected(format!("output directory: {e}")),
            },
        };

        // What the runtime itself adds to the cgroups (gVisor's sandbox), so the task gets
        // exactly its own limits (see `headroom`).
        let cgroup = self.inner.report.kernel().headroom().limits(pids);
        let output_tmpfs = if hardened {
            staging::output_tmpfs_size(m.limits.output, cfg.max_output_entries)
        } else {
            0
        };
        let mut env: Vec<String> = m
            .capabilities
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if secrets_mount.is_some() {
            env.push(format!(
                "{}={}",
                hardening::SECRETS_DIR_ENV,
                hardening::SECRETS_TARGET
            ));
        }
        let plan = hardening::Plan {
            image_id: resolved.id.clone(),
            user: *user,
            entrypoint: entrypoint.clone(),
            cmd: args,
            workdir: workdir.clone(),
            env,
            input_source: input_dir,
            input_target: m.io.input.clone(),
            output_source,
            output_target: m.io.output.clone(),
            secrets_source: secrets_mount.as_ref().map(|s| s.path().to_path_buf()),
            memory: i64::try_from(
                m.limits
                    .memory
                    .saturating_add(output_tmpfs)
                    .saturating_add(cgroup.memory_headroom),
            )
            .unwrap_or(i64::MAX),
            nano_cpus: i64::try_from(millicpus.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
            pids: cgroup.pids,
            nproc: cgroup.nproc,
            tmp_bytes: cfg.tmp_bytes,
            shm_bytes: i64::try_from(cfg.shm_bytes).unwrap_or(i64::MAX),
            nofile: i64::try_from(cfg.nofile).unwrap_or(i64::MAX),
            labels: HashMap::from([
                (hardening::JOB_LABEL.to_string(), job.clone()),
                (hardening::INSTANCE_LABEL.to_string(), cfg.instance.clone()),
                (hardening::OWNER_LABEL.to_string(), owner_tag()),
                (
                    "pinfold.definition".to_string(),
                    req.definition.id.to_string(),
                ),
            ]),
            runtime: cfg.runtime.clone(),
            log_max_bytes: cfg.log_max_bytes,
            hardened,
        };
        let outcome = self.run_container(&req, &plan, &job, &resolved).await;
        let outcome = match outcome {
            Ok((o, raw_stdout)) => {
                self.finish(
                    o,
                    &raw_stdout,
                    &req,
                    mount.as_ref().map(|m| m.path()),
                    &plan,
                )
                .await
            }
            Err(reason) => Outcome::rejected(reason),
        };
        // The secrets tmpfs first: it sits inside the job directory the output mount removes.
        if mount.is_some() || secrets_mount.is_some() {
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(s) = secrets_mount
                    && let Err(e) = s.release()
                {
                    tracing::warn!("releasing the secrets tmpfs: {e}");
                }
                mount.map(|m| m.release())
            })
            .await;
        }
        outcome
    }

    /// Creates, verifies, runs and removes the container. Outputs are collected by the
    /// caller once the container is gone. `Err` is a rejection reason.
    async fn run_container(
        &self,
        req: &RunRequest,
        plan: &hardening::Plan,
        job: &str,
        resolved: &image::Resolved,
    ) -> Result<(Outcome, Vec<u8>), String> {
        let cfg = &self.inner.cfg;
        let t = cfg.api_timeout;
        let docker = &self.inner.docker;
        let m = &req.definition.manifest;
        let body = hardening::container_body(plan);
        if plan.hardened {
            hardening::validate_body(
                &body,
                (&plan.input_source.display().to_string(), &plan.input_target),
                (
                    &plan.output_source.display().to_string(),
                    &plan.output_target,
                ),
                plan.secrets_source
                    .as_ref()
                    .map(|s| s.display().to_string())
                    .as_deref(),
                cfg.runtime.as_deref(),
            )
            .map_err(|v| format!("the container body failed the hardening allowlist: {v}"))?;
        }
        let name = format!("pinfold-{job}");
        let created = tokio::time::timeout(
            t,
            docker.create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            ),
        )
        .await
        .map_err(|_| "docker create: no answer within the api timeout".to_string())?
        .map_err(|e| format!("docker create: {e}"))?;
        let mut guard = ContainerGuard {
            docker: docker.clone(),
            id: Some(created.id.clone()),
            timeout: t,
        };
        let id = created.id.clone();
        let result = async {
            if !created.warnings.is_empty() {
                return Err(format!(
                    "docker create warned, refusing to run: {}",
                    created.warnings.join("; ")
                ));
            }
            if plan.hardened {
                let got = api(t, "inspect", docker.inspect_container(&id, None))
                    .await
                    .map_err(|e| e.to_string())?;
                hardening::verify_created(
                    &got,
                    plan,
                    &self.inner.report.default_runtime,
                    &resolved.env,
                )
                .map_err(|v| format!("the created container is not hardened as requested: {v}"))?;
            }
            self.attach_start_wait(&id, m).await
        }
        .await;
        // The guard only covers cancellation; here the container is removed in line, and
        // after a failure with whatever a failed or hung start left of the runtime.
        guard.id = None;
        clear_container(docker, t, &id, daemon_is_local(), result.is_err()).await;
        result
    }

    async fn attach_start_wait(
        &self,
        id: &str,
        m: &task_defs::Manifest,
    ) -> Result<(Outcome, Vec<u8>), String> {
        let cfg = &self.inner.cfg;
        let t = cfg.api_timeout;
        let docker = &self.inner.docker;
        let attached = api(
            t,
            "attach",
            docker.attach_container(
                id,
                Some(
                    AttachContainerOptionsBuilder::default()
                        .stream(true)
                        .stdout(true)
                        .stderr(true)
                        .logs(false)
                        .build(),
                ),
            ),
        )
        .await
        .map_err(|e| e.to_string())?;
        let cap = m.limits.output.min(cfg.max_stdio_bytes) as usize;
        let exceeded = Arc::new(Notify::new());
        let pump = tokio::spawn(pump(attached.output, cap, exceeded.clone()));
        // Stdin was never attached; close our half at once.
        drop(attached.input);

        let started = Instant::now();
        let started_at = std::time::SystemTime::now();
        api(t, "start", docker.start_container(id, None))
            .await
            .map_err(|e| e.to_string())?;
        let timeout = Duration::from_millis(m.limits.timeout_ms);
        let deadline = tokio::time::Instant::from_std(started + timeout);
        let wait = async {
            let mut s = docker.wait_container(
                id,
                Some(
                    WaitContainerOptionsBuilder::default()
                        .condition("not-running")
                        .build(),
                ),
            );
            s.next().await
        };
        let ended = tokio::select! {
            _ = wait => Ended::Exited,
            _ = tokio::time::sleep_until(deadline) => Ended::TimedOut,
            _ = exceeded.notified() => Ended::OutputExceeded,
        };
        let wall = started.elapsed();
        if ended != Ended::Exited {
            // SIGKILL, then wait until the engine reports the container stopped.
            let _ = api(
                t,
                "kill",
                docker.kill_container(
                    id,
                    Some(
                        KillContainerOptionsBuilder::default()
                            .signal("SIGKILL")
                            .build(),
                    ),
                ),
            )
            .await;
            let mut s = docker.wait_container(
                id,
                Some(
                    WaitContainerOptionsBuilder::default()
                        .condition("not-running")
                        .build(),
                ),
            );
            let _ = tokio::time::timeout(t, s.next()).await;
        }
        let state = api(t, "inspect", docker.inspect_container(id, None))
            .await
            .map_err(|e| e.to_string())?
            .state
            .unwrap_or_default();
        let mut pump = pump;
        let captured = match tokio::time::timeout(t, &mut pump).await {
            Ok(Ok(c)) => c,
            _ => {
                pump.abort();
                Captured::default()
            }
        };
        let exit_code = state.exit_code.and_then(|c| i32::try_from(c).ok());
        // State.OOMKilled comes from the OOM event, which on cgroup v1 can be processed
        // after the exit; a SIGKILLed task (exit 137) we did not kill gets a second look
        // at the daemon's event log.
        let oom = state.oom_killed == Some(true)
            || (ended == Ended::Exited
                && exit_code == Some(137)
                && self.oom_event(id, started_at).await);
        let (status, reason, exit_code) = match ended {
            Ended::TimedOut => (
                Status::TimedOut,
                Some(format!(
                    "wall-clock limit of {} ms reached; the container was killed",
                    m.limits.timeout_ms
                )),
                None,
            ),
            Ended::OutputExceeded => (
                Status::OutputExceeded,
                Some(format!(
                    "stdout and stderr together exceeded {cap} bytes; the container was killed"
                )),
                None,
            ),
            Ended::Exited if oom => (
                Status::MemoryExceeded,
                Some(format!(
                    "the kernel OOM killer stopped the task at the memory limit of {} bytes",
                    m.limits.memory
                )),
                exit_code,
            ),
            Ended::Exited if state.running == Some(true) => {
                return Err("docker reported the container stopped but it is still running".into());
            }
            Ended::Exited if exit_code == Some(0) => (Status::Succeeded, None, exit_code),
            Ended::Exited => (
                Status::Failed,
                state.error.filter(|e| !e.is_empty()),
                exit_code,
            ),
        };
        let (status, reason, exit_code) = if matches!(status, Status::Succeeded | Status::Failed)
            && (captured.out_truncated || captured.err_truncated)
        {
            (
                Status::OutputExceeded,
                Some(format!("stdout and stderr together exceeded {cap} bytes")),
                None,
            )
        } else {
            (status, reason, exit_code)
        };
        let o = Outcome {
            status,
            reason,
            exit_code,
            stdout: captured.out.clone(),
            stdout_truncated: captured.out_truncated,
            stderr: captured.err.clone(),
            stderr_truncated: captured.err_truncated,
            // Filled in by `finish`, once the files are known.
            outputs: String::new(),
            files: Vec::new(),
            dropped: Vec::new(),
            usage: Usage {
                measured: pinfold_base::Usage {
                    wall_us: u64::try_from(wall.as_micros()).unwrap_or(u64::MAX),
                    ..Default::default()
                },
                ..Usage::default()
            },
        };
        Ok((o, captured.out))
    }

    /// Whether the daemon logged an OOM event for the container since `since`.
    async fn oom_event(&self, id: &str, since: std::time::SystemTime) -> bool {
        let stamp = |t: std::time::SystemTime| {
            let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
        };
        let filters = HashMap::from([
            ("container".to_string(), vec![id.to_string()]),
            ("event".to_string(), vec!["oom".to_string()]),
        ]);
        let mut s = self.inner.docker.events(Some(
            EventsOptionsBuilder::default()
                .since(&stamp(since - Duration::from_secs(1)))
                .until(&stamp(std::time::SystemTime::now()))
                .filters(&filters)
                .build(),
        ));
        matches!(
            tokio::time::timeout(self.inner.cfg.api_timeout, s.next()).await,
            Ok(Some(Ok(_)))
        )
    }

    /// Collects the outputs (after the container is gone) and computes the digest.
    async fn finish(
        &self,
        mut o: Outcome,
        raw_stdout: &[u8],
        req: &RunRequest,
        mount: Option<&Path>,
        plan: &hardening::Plan,
    ) -> Outcome {
        let m = &req.definition.manifest;
        let stdio = (o.stdout.len() + o.stderr.len()) as u64;
        let caps = TreeCaps {
            bytes: m.limits.output.saturating_sub(stdio),
            entries: self.inner.cfg.max_output_entries,
        };
        let src = mount
            .map(Path::to_path_buf)
            .unwrap_or_else(|| plan.output_source.clone());
        let dest = req.output_dir.clone();
        let copy_to = mount.is_some();
        let full = mount.is_some_and(|p| {
            rustix::fs::statvfs(p).is_ok_and(|s| s.f_bavail == 0 || s.f_favail == 0)
        });
        let collected = tokio::task::spawn_blocking(move || {
            fsio::collect_outputs(&src, copy_to.then_some(dest.as_path()), caps)
        })
        .await;
        let collected = match collected {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let mut r = Outcome::rejected(format!("collecting outputs failed: {e}"));
                r.status = Status::OutputExceeded;
                return r;
            }
            Err(e) => return Outcome::rejected(format!("collecting outputs failed: {e}")),
        };
        if (collected.exceeded || full) && matches!(o.status, Status::Succeeded | Status::Failed) {
            o.status = Status::OutputExceeded;
            o.exit_code = None;
            o.reason = Some(format!(
                "output directory reached its cap of {} bytes or {} entries",
                m.limits.output, self.inner.cfg.max_output_entries
            ));
        }
        o.outputs = output_digest(&collected.files, raw_stdout);
        o.files = collected.files;
        o.dropped = collected.dropped;
        o
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Exited,
    TimedOut,
    OutputExceeded,
}

#[derive(Debug, Default)]
struct Captured {
    out: Vec<u8>,
    err: Vec<u8>,
    out_truncated: bool,
    err_truncated: bool,
}

/// Reads the attach stream into capped buffers; signals `exceeded` at the first byte
/// past a cap. It keeps reading (and discarding) until the stream ends: a daemon whose
/// attach connection is not drained blocks the container's stdio copier, and then its
/// kill and exit handling, while holding the container's lock.
async fn pump(
    mut s: impl Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin,
    cap: usize,
    exceeded: Arc<Notify>,
) -> Captured {
    let mut c = Captured::default();
    while let Some(Ok(item)) = s.next().await {
        let (is_err, bytes) = match item {
            LogOutput::StdOut { message } | LogOutput::Console { message } => (false, message),
            LogOutput::StdErr { message } => (true, message),
            LogOutput::StdIn { .. } => continue,
        };
        // Stdout and stderr share one budget: both are output a requestor downloads, and
        // together they stay within `limits.output`.
        let room = cap.saturating_sub(c.out.len() + c.err.len());
        let buf = buf_of(&mut c, is_err);
        buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        let trunc = if is_err {
            &mut c.err_truncated
        } else {
            &mut c.out_truncated
        };
        if bytes.len() > room && !*trunc {
            *trunc = true;
            exceeded.notify_one();
        }
    }
    c
}

fn buf_of(c: &mut Captured, is_err: bool) -> &mut Vec<u8> {
    if is_err { &mut c.err } else { &mut c.out }
}

/// Removes a container (and its anonymous volumes) when dropped, unless removed already.
struct ContainerGuard {
    docker: Docker,
    id: Option<String>,
    timeout: Duration,
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if let Some(id) = self.id.take()
            && let Ok(h) = tokio::runtime::Handle::try_current()
        {
            let (d, t) = (self.docker.clone(), self.timeout);
            h.spawn(async move {
                if let Err(e) = remove(&d, t, &id).await {
                    tracing::error!(container = %id, "removing the container failed: {e}");
                }
            });
        }
    }
}

async fn remove(d: &Docker, t: Duration, id: &str) -> Result<(), DockerError> {
    match api(
        t,
        "remove",
        d.remove_container(
            id,
            Some(
                RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build(),
            ),
        ),
    )
    .await
    {
        Err(DockerError::Api {
            source:
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                },
            ..
        }) => Ok(()),
        r => r,
    }
}

/// How long reaping waits for SIGKILLed runtime processes to go.
const LEAK_REAP_WAIT: Duration = Duration::from_secs(5);

/// Runtime process groups on this machine whose container the engine does not list: the
/// shims, sandboxes and gofers of failed starts (see [`leaks`]). With `confirm`, only
/// groups still there (same processes) after that long count, so a shim exiting just
/// after a normal removal is never reported. Meaningful only for a local daemon.
pub async fn runtime_leaks(
    d: &Docker,
    t: Duration,
    confirm: Option<Duration>,
) -> Result<Vec<leaks::RuntimeGroup>, DockerError> {
    let scan = || async {
        tokio::task::spawn_blocking(|| leaks::scan(leaks::DOCKER_NAMESPACE))
            .await
            .unwrap_or_default()
    };
    let groups = scan().await;
    if groups.is_empty() {
        return Ok(groups);
    }
    let known: std::collections::HashSet<String> = api(
        t,
        "list containers",
        d.list_containers(Some(
            ListContainersOptionsBuilder::default().all(true).build(),
        )),
    )
    .await?
    .into_iter()
    .filter_map(|c| c.id)
    .collect();
    let mut leaked: Vec<leaks::RuntimeGroup> = groups
        .into_iter()
        .filter(|g| !known.contains(&g.container))
        .collect();
    if let Some(wait) = confirm
        && !leaked.is_empty()
    {
        tokio::time::sleep(wait).await;
        let again = scan().await;
        leaked.retain(|g| {
            again
                .iter()
                .any(|a| a.container == g.container && a.all().any(|p| g.all().any(|q| p == q)))
        });
    }
    Ok(leaked)
}

/// Removes a container this process made; after a start that failed or hung (`failed`),
/// with the daemon on this machine, it first kills the runtime's processes for that
/// container (a hung start holds the engine's lock on it, so the removal would wait
/// forever) and afterwards whatever the engine's removal left (a gVisor sandbox in its
/// `created` state, which containerd cannot delete).
async fn clear_container(d: &Docker, t: Duration, id: &str, local: bool, failed: bool) {
    let reap = |with_shim: bool| {
        let id = id.to_string();
        tokio::task::spawn_blocking(move || {
            leaks::scan(leaks::DOCKER_NAMESPACE)
                .into_iter()
                .filter(|g| g.container == id)
                .map(|g| (g.describe(), leaks::reap(&g, with_shim, LEAK_REAP_WAIT)))
                .collect::<Vec<_>>()
        })
    };
    if failed && local {
        let _ = reap(false).await;
    }
    if let Err(e) = remove(d, t, id).await {
        tracing::error!(container = %id, "removing the container failed: {e}");
        return;
    }
    if failed && local {
        for (what, r) in reap(true).await.unwrap_or_default() {
            if r.survivors.is_empty() {
                tracing::info!("killed the runtime processes the engine left for {what}");
            } else {
                tracing::warn!(
                    "runtime processes the engine left for {what} survived SIGKILL: {:?}",
                    r.survivors
                );
            }
        }
    }
}

/// Ids of all containers (running or not) labelled with this instance.
pub async fn list_instance(
    d: &Docker,
    t: Duration,
    instance: &str,
) -> Result<Vec<String>, DockerError> {
    Ok(list_instance_labels(d, t, instance)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect())
}

/// This process as an owner tag, `<pid>.<start time in clock ticks>`.
pub fn owner_tag() -> String {
    let pid = std::process::id();
    format!("{pid}.{}", process_start_time(pid).unwrap_or(0))
}

fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields resume after the last
    // `)`, with the state (field 3) first, so starttime (field 22) is the 19th after it.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    // A zombie has exited and only waits to be reaped: it owns nothing any more.
    if matches!(fields.next()?, "Z" | "X") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Whether the process an owner tag names is still running (the same process, not a
/// recycled pid).
pub fn owner_alive(tag: &str) -> bool {
    let Some((pid, start)) = tag.split_once('.') else {
        return false;
    };
    match (pid.parse::<u32>(), start.parse::<u64>()) {
        (Ok(pid), Ok(start)) => process_start_time(pid) == Some(start),
        _ => false,
    }
}

async fn list_instance_labels(
    d: &Docker,
    t: Duration,
    instance: &str,
) -> Result<Vec<(String, HashMap<String, String>)>, DockerError> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![
            hardening::JOB_LABEL.to_string(),
            format!("{}={instance}", hardening::INSTANCE_LABEL),
        ],
    )]);
    let list = api(
        t,
        "list containers",
        d.list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        )),
    )
    .await?;
    Ok(list
        .into_iter()
        .filter_map(|c| Some((c.id?, c.labels.unwrap_or_default())))
        .collect())
}

impl Executor for DockerExecutor {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Docker
    }

    fn run(&self, req: RunRequest) -> impl Future<Output = Outcome> + Send {
        self.run_inner(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_tags_name_live_processes_only() {
        let me = owner_tag();
        assert!(owner_alive(&me), "{me}");
        let (pid, start) = me.split_once('.').unwrap();
        assert!(start.parse::<u64>().unwrap() > 0);
        // The same pid with another start time is a recycled pid, not us.
        let start: u64 = start.parse().unwrap();
        assert!(!owner_alive(&format!("{pid}.{}", start + 1)));
        assert!(!owner_alive("999999999.1"));
        assert!(!owner_alive("garbage"));
    }

    #[test]
    fn a_zombie_owns_nothing() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited but not reaped: a zombie until `wait`.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "never became a zombie"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(process_start_time(pid), None);
        child.wait().unwrap();
    }
}
