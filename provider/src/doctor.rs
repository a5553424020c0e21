//! `provider doctor`: checks of the machine, the Docker daemon, the wasm set-up and the node's alarms, each with what was seen and how to fix it.
//!
//! Every check has a stable id, a status (`pass`, `warn`, `fail`), what it saw and, unless
//! it passed, a fix. The command exits non-zero iff any check fails. Checks report what
//! the daemon and the kernel say is in force rather than what the configuration asked
//! for, so a limit the daemon silently cannot enforce shows up here.

use std::cmp::Ordering;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use task_defs::manifest::Isolation;

use crate::docker::canary::Canary;
use crate::docker::{self, IsolationPolicy, IsolationReport, isolation};
use crate::wasm::{WasmConfig, WasmExecutor};

/// The status of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Fine.
    Pass,
    /// Works, but weaker than recommended.
    Warn,
    /// Unsafe or broken; the provider should not take Docker tasks like this.
    Fail,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable identifier, e.g. `runc.cve-2024-21626`.
    pub id: String,
    /// Outcome.
    pub status: CheckStatus,
    /// What was observed.
    pub seen: String,
    /// How to fix it (absent when it passed).
    pub fix: Option<String>,
}

impl Check {
    fn new(id: &str, status: CheckStatus, seen: impl Into<String>, fix: Option<&str>) -> Check {
        Check {
            id: id.into(),
            status,
            seen: seen.into(),
            fix: if status == CheckStatus::Pass {
                None
            } else {
                fix.map(String::from)
            },
        }
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Every check, in a fixed order.
    pub checks: Vec<Check>,
    /// Whether any check failed (the exit code is non-zero then).
    pub failed: bool,
}

/// What the doctor checks against.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// The isolation policy and runtime the Docker executor would use.
    pub docker: docker::DockerConfig,
    /// The wasm artifact cache directory, if any.
    pub cache_dir: Option<PathBuf>,
    /// Timeout of each Docker call.
    pub api_timeout: Duration,
    /// The node's data dir (`provider run`'s `paths.data_dir`), for its alarms.
    pub data_dir: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------
// Versions.

/// A runc-style version: `1.1.5`, `1.0.0-rc6`, `1.0-rc95`, `v1.4.0-rc.3`, `1.1.5+ds1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Major, minor, patch.
    pub release: [u64; 3],
    /// Pre-release parts (`rc`, `6`); empty for a release.
    pub pre: Vec<PrePart>,
}

/// One part of a pre-release tag.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PrePart {
    /// Numeric parts sort before alphanumeric ones, as in semver.
    Num(u64),
    /// An alphanumeric part.
    Alpha(String),
}

impl Version {
    /// Parses a version, ignoring a leading `v` and build metadata after `+` or `~`.
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim().trim_start_matches('v');
        let s = s.split(['+', '~', ' ']).next()?;
        let (rel, pre) = match s.split_once('-') {
            Some((r, p)) => (r, Some(p)),
            None => (s, None),
        };
        let mut release = [0u64; 3];
        let mut n = 0;
        for (i, p) in rel.split('.').enumerate() {
            if i >= 3 {
                return None;
            }
            release[i] = p.parse().ok()?;
            n += 1;
        }
        if n == 0 {
            return None;
        }
        let mut parts = Vec::new();
        if let Some(p) = pre {
            // `rc6` and `rc.6` are the same tag: split at every letter/digit boundary.
            for chunk in p.split('.') {
                let mut cur = String::new();
                for ch in chunk.chars() {
                    if !cur.is_empty()
                        && cur.chars().last().is_some_and(|c| c.is_ascii_digit())
                            != ch.is_ascii_digit()
                    {
                        parts.push(PrePart::from(std::mem::take(&mut cur)));
                    }
                    cur.push(ch);
                }
                if !cur.is_empty() {
                    parts.push(PrePart::from(cur));
                }
            }
        }
        Some(Version {
            release,
            pre: parts,
        })
    }
}

impl From<String> for PrePart {
    fn from(s: String) -> PrePart {
        match s.parse() {
            Ok(n) => PrePart::Num(n),
            Err(_) => PrePart::Alpha(s),
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.release.cmp(&other.release).then_with(|| {
            match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                // A pre-release sorts before its release.
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => self.pre.cmp(&other.pre),
            }
        })
    }
}

fn v(s: &str) -> Version {
    Version::parse(s).unwrap_or(Version {
        release: [0, 0, 0],
        pre: Vec::new(),
    })
}

/// A runc vulnerability and the versions that fix it.
#[derive(Debug, Clone, Copy)]
pub struct RuncCve {
    /// Check id suffix, e.g. `cve-2024-21626`.
    pub id: &'static str,
    /// What it allows.
    pub summary: &'static str,
    /// Fixed ranges: a version is fixed if it is `>= lo` and (`< hi` or no `hi`).
    pub fixed: &'static [(&'static str, Option<&'static str>)],
}

/// The runc escapes the doctor knows.
pub const RUNC_CVES: &[RuncCve] = &[
    RuncCve {
        id: "cve-2019-5736",
        summary: "a container process can overwrite the host runc binary through /proc/self/exe",
        fixed: &[("1.0.0-rc6", None)],
    },
    RuncCve {
        id: "cve-2024-21626",
        summary: "a leaked host file descriptor lets a working directory under /proc/self/fd reach the host filesystem",
        fixed: &[("1.1.12", None)],
    },
    RuncCve {
        id: "cve-2025-31133",
        summary: "masked-path and /dev/console bind-mount races (CVE-2025-31133, -52565, -52881) let a malicious image write to host /proc",
        fixed: &[
            ("1.2.8", Some("1.3.0-0")),
            ("1.3.3", Some("1.4.0-0")),
            ("1.4.0-rc.3", None),
        ],
    },
];

/// Whether `version` is in one of the CVE's fixed ranges.
pub fn runc_fixed(cve: &RuncCve, version: &Version) -> bool {
    cve.fixed
        .iter()
        .any(|(lo, hi)| *version >= v(lo) && hi.is_none_or(|h| *version < v(h)))
}

/// Whether a version string carries a distribution revision, whose maintainers may have
/// backported fixes without changing the upstream version.
pub fn has_distro_revision(full: &str) -> bool {
    let f = full.to_ascii_lowercase();
    ["deb", "ubuntu", "el", "fc", "suse"]
        .iter()
        .any(|m| f.split(['+', '-', '~']).skip(1).any(|p| p.contains(m)))
}

/// The runc checks for a version string (`full` may include a distribution revision).
pub fn runc_checks(full: &str) -> Vec<Check> {
    let Some(ver) = Version::parse(full) else {
        return RUNC_CVES
            .iter()
            .map(|c| {
                Check::new(
                    &format!("runc.{}", c.id),
                    CheckStatus::Warn,
                    format!("runc version {full:?} could not be parsed"),
                    Some("check the runc version by hand (runc --version)"),
                )
            })
            .collect();
    };
    RUNC_CVES
        .iter()
        .map(|c| {
            let id = format!("runc.{}", c.id);
            let fixes = c
                .fixed
                .iter()
                .map(|(lo, _)| *lo)
                .collect::<Vec<_>>()
                .join(" / ");
            if runc_fixed(c, &ver) {
                Check::new(&id, CheckStatus::Pass, format!("runc {full} (fixed in {fixes})"), None)
            } else if has_distro_revision(full) {
                Check::new(
                    &id,
                    CheckStatus::Warn,
                    format!(
                        "runc {full}: upstream version predates the fix ({fixes}); {}; the distribution revision may carry a backport",
                        c.summary
                    ),
                    Some("confirm the fix in your distribution's security tracker, or install runc with the fix"),
                )
            } else {
                Check::new(
                    &id,
                    CheckStatus::Fail,
                    format!("runc {full} is vulnerable: {} (fixed in {fixes})", c.summary),
                    Some("upgrade runc (and containerd/docker packages) to a fixed version"),
                )
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Local checks.

fn proc_status_field(name: &str) -> Option<String> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
}

/// The effective uid of this process.
pub fn effective_uid() -> Option<u32> {
    proc_status_field("Uid:")?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn has_cap_sys_admin() -> bool {
    proc_status_field("CapEff:")
        .and_then(|h| u64::from_str_radix(&h, 16).ok())
        .is_some_and(|caps| caps & (1 << 21) != 0)
}

fn docker_socket_path() -> Option<PathBuf> {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => h.strip_prefix("unix://").map(PathBuf::from),
        _ => Some(PathBuf::from("/var/run/docker.sock")),
    }
}

fn group_name(gid: u32) -> String {
    std::fs::read_to_string("/etc/group")
        .ok()
        .and_then(|g| {
            g.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == gid.to_string()).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| gid.to_string())
}

/// The socket check: owner root, group docker (or root), mode 0660 or stricter.
pub fn socket_check(path: &Path) -> Check {
    let id = "docker.socket";
    match std::fs::metadata(path) {
        Err(e) => Check::new(
            id,
            CheckStatus::Warn,
            format!("{}: {e}", path.display()),
            Some("point DOCKER_HOST at the daemon's socket"),
        ),
        Ok(m) => {
            let mode = m.mode() & 0o777;
            let group = group_name(m.gid());
            let seen = format!(
                "{} owner uid {} group {group} mode {mode:04o}",
                path.display(),
                m.uid()
            );
            if mode & 0o006 != 0 {
                Check::new(
                    id,
                    CheckStatus::Fail,
                    seen,
                    Some("the socket is root-equivalent: chmod 660 it and keep it root:docker"),
                )
            } else if m.uid() != 0 || mode & 0o020 != 0 && group != "docker" && group != "root" {
                Check::new(
                    id,
                    CheckStatus::Warn,
                    seen,
                    Some("expected root:docker with mode 660 (CIS Docker 3.15/3.16)"),
                )
            } else {
                Check::new(id, CheckStatus::Pass, seen, None)
            }
        }
    }
}

/// The provider-user check: root or CAP_SYS_ADMIN is needed for the output tmpfs; both
/// root and docker-group membership are root-equivalent.
pub fn user_check() -> Check {
    let id = "provider.user";
    let uid = effective_uid();
    let groups = proc_status_field("Groups:").unwrap_or_default();
    let in_docker = groups
        .split_whitespace()
        .filter_map(|g| g.parse::<u32>().ok())
        .any(|g| group_name(g) == "docker");
    match uid {
        Some(0) => Check::new(
            id,
            CheckStatus::Warn,
            "the provider runs as root (uid 0)",
            Some(
                "root is needed today to mount each run's size-capped output tmpfs; run the provider \
                 on a dedicated machine or VM so that a provider bug is not a compromise of anything else",
            ),
        ),
        Some(u) if has_cap_sys_admin() => Check::new(
            id,
            CheckStatus::Warn,
            format!(
                "uid {u} with CAP_SYS_ADMIN{}",
                if in_docker {
                    ", in the docker group"
                } else {
                    ""
                }
            ),
            Some(
                "the docker group and CAP_SYS_ADMIN are root-equivalent: dedicate the machine to the provider",
            ),
        ),
        Some(u) => Check::new(
            id,
            CheckStatus::Fail,
            format!(
                "uid {u} without CAP_SYS_ADMIN{}",
                if in_docker {
                    ", in the docker group"
                } else {
                    ""
                }
            ),
            Some(
                "the docker executor mounts a size-capped tmpfs per run: run the provider as root or with CAP_SYS_ADMIN",
            ),
        ),
        None => Check::new(
            id,
            CheckStatus::Warn,
            "could not read /proc/self/status",
            None,
        ),
    }
}

/// Permission check of the wasm artifact cache directory.
pub fn cache_dir_check(dir: Option<&Path>) -> Check {
    let id = "wasm.cache-dir";
    let Some(dir) = dir else {
        return Check::new(
            id,
            CheckStatus::Warn,
            "no cache directory (HOME and PINFOLD_CACHE_DIR unset); modules are recompiled every run",
            Some("set PINFOLD_CACHE_DIR or pass --cache-dir"),
        );
    };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Check::new(
            id,
            CheckStatus::Pass,
            format!(
                "{} does not exist yet; it will be created with mode 0700",
                dir.display()
            ),
            None,
        ),
        Err(e) => Check::new(
            id,
            CheckStatus::Fail,
            format!("{}: {e}", dir.display()),
            Some("make the cache directory readable by the provider"),
        ),
        Ok(m) => {
            let mode = m.mode() & 0o777;
            let seen = format!("{} owner uid {} mode {mode:04o}", dir.display(), m.uid());
            if m.file_type().is_symlink() || !m.is_dir() {
                Check::new(
                    id,
                    CheckStatus::Fail,
                    seen + " (not a directory)",
                    Some("remove it; the provider recreates it"),
                )
            } else if Some(m.uid()) != effective_uid() {
                Check::new(
                    id,
                    CheckStatus::Fail,
                    seen,
                    Some(
                        "the cache must belong to the provider's user: another user could plant compiled code",
                    ),
                )
            } else if mode & 0o077 != 0 {
                Check::new(
                    id,
                    CheckStatus::Fail,
                    seen,
                    Some("chmod 700 the cache directory"),
                )
            } else {
                Check::new(id, CheckStatus::Pass, seen, None)
            }
        }
    }
}

/// Free-space check of a directory.
pub fn disk_check(id: &str, dir: &Path) -> Check {
    match rustix::fs::statvfs(dir) {
        Err(e) => Check::new(
            id,
            CheckStatus::Warn,
            format!("{}: {e}", dir.display()),
            Some("run the doctor on the daemon's machine"),
        ),
        Ok(s) => {
            let free = s.f_bavail.saturating_mul(s.f_frsize);
            let total = s.f_blocks.saturating_mul(s.f_frsize);
            let seen = format!(
                "{}: {:.1} GiB free of {:.1} GiB",
                dir.display(),
                free as f64 / (1u64 << 30) as f64,
                total as f64 / (1u64 << 30) as f64
            );
            if free < 1 << 30 {
                Check::new(
                    id,
                    CheckStatus::Fail,
                    seen,
                    Some("free disk space: images and container layers live here"),
                )
            } else if free < 10 << 30 {
                Check::new(
                    id,
                    CheckStatus::Warn,
                    seen,
                    Some("keep at least 10 GiB free under the docker root"),
                )
            } else {
                Check::new(id, CheckStatus::Pass, seen, None)
            }
        }
    }
}

/// The isolation check: the achieved level against the policy.
pub fn isolation_check(r: &IsolationReport) -> Check {
    let id = "docker.isolation";
    let seen = format!(
        "policy {}, runtime {} ({}), achieved {}; vm evidence: {}",
        r.policy,
        r.runtime_name(),
        match &r.canary {
            Ok(c) => format!("canary: {}", c.kernel.as_str()),
            Err(e) => format!("canary failed: {e}"),
        },
        r.achieved.as_str(),
        if r.vm_evidence.is_empty() {
            "none".to_string()
        } else {
            r.vm_evidence.join(", ")
        }
    );
    match (r.policy, r.achieved) {
        (_, Isolation::Vm) | (IsolationPolicy::Container, _) => {
            Check::new(id, CheckStatus::Pass, seen, None)
        }
        (IsolationPolicy::VmRequired, _) => Check::new(
            id,
            CheckStatus::Fail,
            seen,
            Some(
                "docker tasks are refused: run the provider inside a VM, or set PINFOLD_DOCKER_RUNTIME to a VM runtime \
                 (kata) whose canary finds a VM kernel",
            ),
        ),
        // gVisor's kernel stands between the task and the host's, which is what the
        // recommendation is about; only tasks on the host kernel warn.
        (IsolationPolicy::VmRecommended, Isolation::SandboxedRuntime) => {
            Check::new(id, CheckStatus::Pass, seen, None)
        }
        (IsolationPolicy::VmRecommended, Isolation::Container) => {
            Check::new(id, CheckStatus::Warn, seen, Some(isolation::RECOMMENDATION))
        }
    }
}

// ---------------------------------------------------------------------------------------
// The whole run.

/// Whether the node has raised a split-view alarm (its registry showed another history to
/// a peer); the node refuses every offer until the alarm file is deleted.
pub fn split_view_check(data_dir: Option<&Path>) -> Check {
    const ID: &str = "registry-split-view";
    let Some(data) = data_dir else {
        return Check::new(
            ID,
            CheckStatus::Warn,
            "no node data dir (no provider.toml found)",
            Some("pass --config FILE or --data DIR of the node to check"),
        );
    };
    let dir = crate::node::trust::alarm_dir(data);
    let alarms = crate::node::trust::split_view_alarms(&dir);
    let Some(first) = alarms.first() else {
        return Check::new(
            ID,
            CheckStatus::Pass,
            format!("no split-view alarm in {}", dir.display()),
            None,
        );
    };
    let detail = std::fs::read(first)
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::node::trust::SplitViewEvidence>(&b).ok())
        .map(|e| {
            format!(
                ": registry {} origin {:?}, own checkpoint {} ({}), peer {} gossiped {} ({}): {}",
                e.registry,
                e.origin,
                e.local.size,
                e.local.root,
                e.peer,
                e.gossiped.size,
                e.gossiped.root,
                e.reason
            )
        })
        .unwrap_or_default();
    let files: Vec<String> = alarms.iter().map(|p| p.display().to_string()).collect();
    Check::new(
        ID,
        CheckStatus::Fail,
        format!(
            "split-view alarm raised, evidence in {}{detail}; every offer is refused",
            files.join(", ")
        ),
        Some(&format!(
            "investigate (the file holds both signed checkpoints), then delete {}",
            files.join(" ")
        )),
    )
}

async fn within<T, E: std::fmt::Display>(
    t: Duration,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(t, f).await {
        Err(_) => Err("no answer within the timeout".into()),
        Ok(r) => r.map_err(|e| e.to_string()),
    }
}

/// Runs every check.
pub async fn run(opts: &DoctorOptions) -> Report {
    let mut checks = Vec::new();
    let t = opts.api_timeout;
    checks.push(user_check());
    if let Some(sock) = docker_socket_path() {
        checks.push(socket_check(&sock));
    }
    match docker::connect(t).await {
        Err(e) => checks.push(Check::new(
            "docker.reachable",
            CheckStatus::Fail,
            e.to_string(),
            Some("start the docker daemon and make its socket reachable (DOCKER_HOST)"),
        )),
        Ok(d) => docker_checks(&d, opts, &mut checks).await,
    }
    let wasm = WasmExecutor::new(WasmConfig {
        cache_dir: None,
        max_concurrent: 1,
        ..WasmConfig::default()
    });
    checks.push(match wasm {
        Ok(w) => {
            let c = w.config();
            Check::new(
                "wasm.engine",
                CheckStatus::Pass,
                format!(
                    "engines created: pooling {}, max memory {} MiB, max module {} MiB, stack {} KiB",
                    c.pooling,
                    c.max_memory >> 20,
                    c.max_module_bytes >> 20,
                    c.max_wasm_stack >> 10
                ),
                None,
            )
        }
        Err(e) => Check::new(
            "wasm.engine",
            CheckStatus::Fail,
            e.to_string(),
            Some("the pooling allocator needs virtual address space: check ulimit -v and vm.overcommit"),
        ),
    });
    checks.push(cache_dir_check(opts.cache_dir.as_deref()));
    checks.push(split_view_check(opts.data_dir.as_deref()));
    let failed = checks.iter().any(|c| c.status == CheckStatus::Fail);
    Report { checks, failed }
}

async fn docker_checks(d: &bollard::Docker, opts: &DoctorOptions, checks: &mut Vec<Check>) {
    let t = opts.api_timeout;
    let (info, version) = match (within(t, d.info()).await, within(t, d.version()).await) {
        (Ok(i), Ok(v)) => (i, v),
        (Err(e), _) | (_, Err(e)) => {
            checks.push(Check::new(
                "docker.reachable",
                CheckStatus::Fail,
                e,
                Some("start the docker daemon and make its socket reachable (DOCKER_HOST)"),
            ));
            return;
        }
    };
    checks.push(Check::new(
        "docker.reachable",
        CheckStatus::Pass,
        format!(
            "docker {} (api {}), {}",
            version.version.as_deref().unwrap_or("?"),
            d.client_version(),
            info.operating_system.as_deref().unwrap_or("?")
        ),
        None,
    ));
    // runc: the component version, plus the full package version from the commit field.
    let runc = version
        .components
        .iter()
        .flatten()
        .find(|c| c.name.eq_ignore_ascii_case("runc"))
        .map(|c| {
            let commit = c
                .details
                .as_ref()
                .and_then(|d| d.get("GitCommit"))
                .filter(|g| g.starts_with(c.version.split('+').next().unwrap_or("")))
                .cloned();
            commit.unwrap_or_else(|| c.version.clone())
        })
        .or_else(|| info.runc_commit.as_ref().and_then(|c| c.id.clone()));
    match runc {
        Some(r) => checks.extend(runc_checks(&r)),
        None => checks.push(Check::new(
            "runc.version",
            CheckStatus::Warn,
            "the daemon does not report a runc version",
            Some("check runc --version by hand against CVE-2019-5736, CVE-2024-21626 and CVE-2025-31133"),
        )),
    }
    let sec = info.security_options.clone().unwrap_or_default();
    let seccomp = sec.iter().find(|s| s.contains("name=seccomp"));
    checks.push(match seccomp {
        Some(s) if !s.contains("profile=unconfined") => {
            Check::new("docker.seccomp", CheckStatus::Pass, s.clone(), None)
        }
        other => Check::new(
            "docker.seccomp",
            CheckStatus::Fail,
            format!("{other:?}"),
            Some(
                "run the daemon with its default seccomp profile (no --seccomp-profile=unconfined)",
            ),
        ),
    });
    let lsm = sec
        .iter()
        .find(|s| s.contains("name=apparmor") || s.contains("name=selinux"));
    checks.push(match lsm {
        Some(s) => Check::new("docker.lsm", CheckStatus::Pass, s.clone(), None),
        None => Check::new(
            "docker.lsm",
            CheckStatus::Warn,
            format!("no AppArmor or SELinux in the daemon's security options {sec:?}"),
            Some("enable AppArmor (or SELinux with --selinux-enabled) for a second layer of confinement"),
        ),
    });
    let rootless = sec.iter().any(|s| s.contains("name=rootless"));
    let userns = sec.iter().any(|s| s.contains("name=userns"));
    checks.push(Check::new(
        "docker.userns",
        if rootless || userns { CheckStatus::Pass } else { CheckStatus::Warn },
        format!("rootless {rootless}, userns-remap {userns}"),
        Some("userns-remap maps container root to an unprivileged host uid (CIS 2.9); tasks already run non-root"),
    ));
    // Daemon-wide defaults (CIS 2.14, 2.15, 2.2). pinfold sets no-new-privileges and
    // network=none on every container itself, so these are second lines: warn, not fail.
    let nnp = sec.iter().any(|s| s.contains("name=no-new-privileges"));
    checks.push(Check::new(
        "docker.no-new-privileges",
        if nnp { CheckStatus::Pass } else { CheckStatus::Warn },
        format!("daemon default no-new-privileges {nnp}"),
        Some("set \"no-new-privileges\": true in daemon.json (CIS 2.14); pinfold already sets it per container"),
    ));
    let live = info.live_restore_enabled == Some(true);
    checks.push(Check::new(
        "docker.live-restore",
        if live { CheckStatus::Pass } else { CheckStatus::Warn },
        format!("live-restore {live}"),
        Some("set \"live-restore\": true in daemon.json (CIS 2.15) so a daemon restart does not kill running tasks"),
    ));
    checks.push(match within(t, d.inspect_network("bridge", None)).await {
        Ok(n) => {
            let icc = n
                .options
                .as_ref()
                .and_then(|o| o.get("com.docker.network.bridge.enable_icc"))
                .cloned()
                .unwrap_or_else(|| "true".into());
            Check::new(
                "docker.icc",
                if icc == "false" { CheckStatus::Pass } else { CheckStatus::Warn },
                format!("default bridge enable_icc={icc}"),
                Some("set \"icc\": false in daemon.json (CIS 2.2); pinfold's containers have no network, but other containers on this host talk freely"),
            )
        }
        Err(e) => Check::new(
            "docker.icc",
            CheckStatus::Warn,
            format!("cannot inspect the default bridge network: {e}"),
            Some("check the daemon's icc setting by hand (CIS 2.2)"),
        ),
    });
    let containerd = version
        .components
        .iter()
        .flatten()
        .find(|c| c.name.eq_ignore_ascii_case("containerd"))
        .map(|c| c.version.clone());
    checks.push(match containerd {
        Some(v) => Check::new(
            "containerd.version",
            CheckStatus::Pass,
            format!("containerd {v} (the container escapes checked above are runc's)"),
            None,
        ),
        None => Check::new(
            "containerd.version",
            CheckStatus::Warn,
            "the daemon does not report a containerd version",
            Some("check containerd --version by hand and keep it patched"),
        ),
    });
    let cgroup_v = info
        .cgroup_version
        .map(|v| v.to_string())
        .unwrap_or_default();
    let cgroup_d = info
        .cgroup_driver
        .map(|v| v.to_string())
        .unwrap_or_default();
    let limits = [
        ("memory", info.memory_limit),
        ("swap", info.swap_limit),
        ("pids", info.pids_limit),
        ("cpu quota", info.cpu_cfs_quota),
    ];
    let missing: Vec<&str> = limits
        .iter()
        .filter(|(_, ok)| *ok != Some(true))
        .map(|(n, _)| *n)
        .collect();
    checks.push(Check::new(
        "docker.limits",
        if missing.is_empty() && !(rootless && cgroup_v != "2") {
            CheckStatus::Pass
        } else {
            CheckStatus::Fail
        },
        format!(
            "cgroup v{cgroup_v} ({cgroup_d}); limits the daemon cannot enforce: {}{}",
            if missing.is_empty() { "none".to_string() } else { missing.join(", ") },
            if rootless { "; rootless" } else { "" }
        ),
        Some("enable the memory, swap and pids cgroup controllers (rootless needs cgroup v2 with systemd)"),
    ));
    checks.push(match crate::docker::daemon_mount_ns_differs() {
        Some(false) => Check::new(
            "docker.mount-namespace",
            CheckStatus::Pass,
            "the daemon shares the provider's mount namespace (output tmpfs mounts are visible to it)",
            None,
        ),
        Some(true) => Check::new(
            "docker.mount-namespace",
            CheckStatus::Fail,
            "the daemon runs in another mount namespace",
            Some("run the provider in the daemon's mount namespace (no PrivateTmp, no separate container)"),
        ),
        None => Check::new(
            "docker.mount-namespace",
            CheckStatus::Warn,
            "cannot compare mount namespaces (/var/run/docker.pid unreadable)",
            Some("run the doctor as root on the daemon's machine"),
        ),
    });
    if crate::docker::daemon_is_local() {
        let root = info
            .docker_root_dir
            .clone()
            .unwrap_or_else(|| "/var/lib/docker".into());
        checks.push(disk_check("docker.disk", Path::new(&root)));
    }
    checks.push(disk_check("provider.scratch", &opts.docker.scratch_dir));
    // Isolation, exactly as the executor computes it: from the machine's VM evidence and a
    // canary run under the runtime, never from the runtime's name.
    let runtimes: Vec<String> = info
        .runtimes
        .as_ref()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default();
    let default_runtime = info
        .default_runtime
        .clone()
        .unwrap_or_else(|| "runc".into());
    let local = crate::docker::daemon_is_local();
    let probed = match &opts.docker.runtime {
        Some(r) if !runtimes.contains(r) => Err(format!(
            "{r} is not registered (registered: {})",
            runtimes.join(", ")
        )),
        _ => docker::canary::probe(
            d,
            &docker::canary::Options {
                runtime: opts.docker.runtime.clone(),
                default_runtime: default_runtime.clone(),
                instance: opts.docker.instance.clone(),
                timeout: opts.docker.canary_timeout,
                api_timeout: t,
                local,
            },
        )
        .await
        .map_err(|e| e.to_string()),
    };
    checks.push(runtime_check(
        opts.docker.runtime.as_deref().unwrap_or(&default_runtime),
        opts.docker.runtime.is_some(),
        &probed,
    ));
    let mut evidence = Vec::new();
    match opts.docker.host_vm {
        Some(true) => evidence.push("configured: host_vm = true".to_string()),
        Some(false) => {}
        None => {
            if local {
                evidence.extend(
                    tokio::task::spawn_blocking(isolation::detect_local_vm)
                        .await
                        .unwrap_or_default()
                        .found,
                );
            }
            if let Some(os) = &info.operating_system
                && isolation::daemon_os_is_vm(os)
            {
                evidence.push(format!("daemon operating system: {os}"));
            }
        }
    }
    let report = IsolationReport::new(
        opts.docker.isolation,
        opts.docker.runtime.clone(),
        runtimes,
        default_runtime,
        evidence,
        probed,
    );
    checks.push(isolation_check(&report));
    if local {
        checks.push(
            match docker::runtime_leaks(d, t, Some(docker::leaks::CONFIRM_DELAY)).await {
                Ok(leaked) => leaks_check(&leaked),
                Err(e) => Check::new(
                    "docker.runtime-leaks",
                    CheckStatus::Warn,
                    format!("cannot compare runtime processes with the engine's containers: {e}"),
                    Some("check for containerd-shim and runsc processes by hand"),
                ),
            },
        );
    }
}

/// The runtime check: the canary ran under the runtime (the configured one, else the
/// daemon's default) and found a kernel. A runtime that fails, hangs or prints nothing
/// fails the check; without a canary image the default runtime only warns, a configured
/// one fails (the executor refuses to start with it).
pub fn runtime_check(name: &str, configured: bool, probed: &Result<Canary, String>) -> Check {
    const ID: &str = "docker.runtime";
    match probed {
        Ok(c) => {
            let h = c.kernel.headroom();
            let headroom = if h == docker::headroom::NONE {
                String::new()
            } else {
                format!(
                    "; each task's container gets the sandbox's headroom: {} + {}·pids + {}·pids²/2 host threads (at most {}), \
                     {} MiB + {} MiB·pids of memory (at most {} MiB), and RLIMIT_NPROC = pids",
                    h.pids_base,
                    h.pids_per_task,
                    h.pids_square_halves,
                    docker::headroom::MAX_SANDBOX_PIDS,
                    h.memory_base >> 20,
                    h.memory_per_task >> 20,
                    docker::headroom::MAX_MEMORY_HEADROOM >> 20
                )
            };
            Check::new(
                ID,
                CheckStatus::Pass,
                format!(
                    "{name}: canary ran in {} ms on {} ({}){headroom}",
                    c.took.as_millis(),
                    c.kernel.as_str(),
                    c.evidence.join("; ")
                ),
                None,
            )
        }
        Err(e) if !configured && e.starts_with("no canary image") => Check::new(
            ID,
            CheckStatus::Warn,
            format!("{name}: not verified, {e}"),
            Some("install busybox-static (or set PINFOLD_BUSYBOX) so the canary can run"),
        ),
        Err(e) => Check::new(
            ID,
            CheckStatus::Fail,
            format!("{name}: {e}"),
            Some(
                "fix the runtime or its registration in /etc/docker/daemon.json (\"runtimes\", then reload the daemon), \
                 or unset PINFOLD_DOCKER_RUNTIME; the provider refuses to start docker tasks under it",
            ),
        ),
    }
}

/// The leak check: runtime processes (containerd shims, gVisor sandboxes and gofers) of
/// containers the engine no longer lists.
pub fn leaks_check(leaked: &[docker::leaks::RuntimeGroup]) -> Check {
    const ID: &str = "docker.runtime-leaks";
    if leaked.is_empty() {
        return Check::new(
            ID,
            CheckStatus::Pass,
            "no runtime processes outlive their containers",
            None,
        );
    }
    let ours = leaked.iter().filter(|g| g.instance.is_some()).count();
    let first = leaked
        .first()
        .map(|g| {
            format!(
                "; to remove one by hand: kill its processes, then ctr{} --namespace {} containers delete {}",
                g.address
                    .as_ref()
                    .map(|a| format!(" --address {a}"))
                    .unwrap_or_default(),
                g.namespace,
                g.container
            )
        })
        .unwrap_or_default();
    Check::new(
        ID,
        CheckStatus::Warn,
        format!(
            "{} container runtime(s) the docker engine no longer lists are still running ({ours} from pinfold containers): {}",
            leaked.len(),
            leaked
                .iter()
                .map(docker::leaks::RuntimeGroup::describe)
                .collect::<Vec<_>>()
                .join("; ")
        ),
        Some(&format!(
            "they hold memory and threads; pinfold kills its own when the provider starts (provider exec or run){first}"
        )),
    )
}

/// Prints the report as text.
pub fn render_text(r: &Report) -> String {
    let mut s = String::new();
    for c in &r.checks {
        let tag = match c.status {
            CheckStatus::Pass => "pass",
            CheckStatus::Warn => "WARN",
            CheckStatus::Fail => "FAIL",
        };
        s.push_str(&format!("{tag:4}  {:28} {}\n", c.id, c.seen));
        if let Some(f) = &c.fix {
            s.push_str(&format!("      {:28} fix: {f}\n", ""));
        }
    }
    let count = |st| r.checks.iter().filter(|c| c.status == st).count();
    s.push_str(&format!(
        "{} passed, {} warnings, {} failed\n",
        count(CheckStatus::Pass),
        count(CheckStatus::Warn),
        count(CheckStatus::Fail)
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The socket verdicts on a stand-in file: world access fails, a non-root owner or a
    /// group-writable socket of a group other than docker/root warns, root:root or
    /// root:docker at 0660 or stricter passes, and a missing socket warns.
    #[test]
    fn socket_verdicts_follow_owner_group_and_mode() {
        use std::os::unix::fs::{PermissionsExt as _, chown};
        // Changing owners needs root: these checks run as root in CI, so not being root
        // is a loud failure rather than a silent pass.
        // /proc/self belongs to the process's effective uid.
        assert_eq!(
            std::fs::metadata("/proc/self").unwrap().uid(),
            0,
            "this test changes file owners and must run as root"
        );
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        std::fs::write(&sock, b"").unwrap();
        let verdict = |uid: u32, gid: u32, mode: u32| {
            chown(&sock, Some(uid), Some(gid)).unwrap();
            std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(mode)).unwrap();
            socket_check(&sock).status
        };
        let docker_gid = std::fs::read_to_string("/etc/group")
            .unwrap()
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f[0] == "docker").then(|| f[2].parse::<u32>().unwrap())
            });
        assert_eq!(verdict(0, 0, 0o660), CheckStatus::Pass);
        assert_eq!(verdict(0, 0, 0o600), CheckStatus::Pass);
        if let Some(g) = docker_gid {
            assert_eq!(verdict(0, g, 0o660), CheckStatus::Pass);
        }
        assert_eq!(verdict(0, 0, 0o666), CheckStatus::Fail, "world writable");
        assert_eq!(verdict(0, 0, 0o664), CheckStatus::Fail, "world readable");
        assert_eq!(
            verdict(0, 0, 0o662),
            CheckStatus::Fail,
            "world writable only"
        );
        assert_eq!(verdict(1000, 0, 0o660), CheckStatus::Warn, "non-root owner");
        // A group no one expects (an unlisted gid) with write access.
        assert_eq!(verdict(0, 54321, 0o660), CheckStatus::Warn, "foreign group");
        assert_eq!(
            verdict(0, 54321, 0o640),
            CheckStatus::Pass,
            "group read only"
        );
        let missing = socket_check(&dir.path().join("absent.sock"));
        assert_eq!(missing.status, CheckStatus::Warn);
        assert!(missing.fix.is_some());
    }

    #[test]
    fn versions_parse_and_order() {
        let order = [
            "0.1.1",
            "1.0.0-rc5",
            "1.0-rc6",
            "1.0.0-rc10",
            "1.0.0-rc95",
            "1.0.0",
            "1.1.5+ds1",
            "v1.1.11",
            "1.1.12",
            "1.2.7",
            "1.2.8",
            "1.3.0-rc.1",
            "1.3.0",
            "1.4.0-rc.2",
            "1.4.0-rc.3",
            "1.4.0",
        ];
        for w in order.windows(2) {
            assert!(v(w[0]) < v(w[1]), "{} < {}", w[0], w[1]);
        }
        assert_eq!(v("1.0.0-rc6"), v("1.0-rc6"));
        assert_eq!(v("1.4.0-rc3"), v("1.4.0-rc.3"));
        assert_eq!(v("1.1.5+ds1-1+deb12u1").release, [1, 1, 5]);
        assert!(Version::parse("garbage").is_none());
    }

    fn status(version: &str, cve: &str) -> CheckStatus {
        runc_checks(version)
            .into_iter()
            .find(|c| c.id == format!("runc.{cve}"))
            .unwrap()
            .status
    }

    #[test]
    fn runc_cve_ranges() {
        use CheckStatus::*;
        assert_eq!(status("1.0.0-rc5", "cve-2019-5736"), Fail);
        assert_eq!(status("1.0.0-rc6", "cve-2019-5736"), Pass);
        assert_eq!(status("1.1.11", "cve-2024-21626"), Fail);
        assert_eq!(status("1.1.12", "cve-2024-21626"), Pass);
        for (ver, want) in [
            ("1.1.15", Fail),
            ("1.2.7", Fail),
            ("1.2.8", Pass),
            ("1.2.9", Pass),
            ("1.3.0", Fail),
            ("1.3.2", Fail),
            ("1.3.3", Pass),
            ("1.4.0-rc.2", Fail),
            ("1.4.0-rc.3", Pass),
            ("1.4.1", Pass),
        ] {
            assert_eq!(status(ver, "cve-2025-31133"), want, "{ver}");
        }
        // A distribution build of a vulnerable upstream version is a warning, not a pass.
        assert_eq!(status("1.1.5+ds1-1+deb12u1", "cve-2024-21626"), Warn);
        assert_eq!(status("1.1.5+ds1-1+deb12u1", "cve-2019-5736"), Pass);
        assert!(has_distro_revision("1.1.5+ds1-1+deb12u1"));
        assert!(!has_distro_revision("1.1.5"));
        assert!(!has_distro_revision("1.4.0-rc.3"));
    }

    #[test]
    fn cache_dir_permissions() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("cache");
        assert_eq!(cache_dir_check(Some(&c)).status, CheckStatus::Pass);
        std::fs::create_dir(&c).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&c, std::fs::Permissions::from_mode(0o755)).unwrap();
        let r = cache_dir_check(Some(&c));
        assert_eq!(r.status, CheckStatus::Fail, "{r:?}");
        assert!(r.fix.is_some());
        std::fs::set_permissions(&c, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(cache_dir_check(Some(&c)).status, CheckStatus::Pass);
    }

    #[test]
    fn split_view_alarm_fails_until_deleted() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(split_view_check(None).status, CheckStatus::Warn);
        assert_eq!(split_view_check(Some(d.path())).status, CheckStatus::Pass);
        let dir = crate::node::trust::alarm_dir(d.path());
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("split-view-pinfold-registry.json");
        std::fs::write(&file, "{}").unwrap();
        let c = split_view_check(Some(d.path()));
        assert_eq!(c.status, CheckStatus::Fail);
        assert!(c.seen.contains(&file.display().to_string()), "{c:?}");
        let fix = c.fix.unwrap();
        assert!(
            fix.ends_with(&format!("delete {}", file.display())),
            "{fix}"
        );
        std::fs::remove_file(&file).unwrap();
        assert_eq!(split_view_check(Some(d.path())).status, CheckStatus::Pass);
    }
}
