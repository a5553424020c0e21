//! Runtime processes the engine no longer lists: containerd shims, gVisor sandboxes and gofers that a failed start leaves behind, found in `/proc`, attributed and killed.
//!
//! When `runsc` fails to start a sandbox it has created (Debian's runsc refuses to start
//! with networking on recent kernels, or the sandbox hits its pids limit), the sandbox
//! stays in runsc's `created` state, which runsc cannot signal; containerd's task delete
//! then fails, the engine removes its container record anyway, and the shim, the
//! `runsc-sandbox` and the `runsc-gofer` live on, holding memory and threads, invisible to
//! `docker ps`. A start that hangs (runsc's KVM platform under nested virtualisation)
//! holds the container's lock in the engine, so even `docker rm -f` waits forever until
//! the runtime's processes die.
//!
//! A shim names its container (`-id`), containerd namespace (`-namespace`) and socket
//! (`-address`) on its command line and runs in the container's OCI bundle; the runtime's
//! processes are its descendants. A group whose container the engine does not know, seen
//! twice [`CONFIRM_DELAY`] apart (a shim lives on for a moment after a normal removal), is
//! a leak. Its bundle's `config.json` tells whose container it was: a bind mount from
//! `…/pinfold-docker-<instance>/…` (every task container has its output tmpfs there) or
//! the canary's [`CANARY_ENV`] variable. Only the groups of the caller's own instance are
//! killed (SIGKILL through a pidfd opened and checked against the process's start time,
//! so a recycled pid is never hit), then containerd's stale record is deleted with `ctr`
//! when it is installed. Everything else is only reported.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a leak candidate must stay to count: long enough for a shim to exit after
/// the engine removed its container normally.
pub const CONFIRM_DELAY: Duration = Duration::from_millis(1500);

/// Environment variable carrying the instance in the canary's container (task containers
/// are recognised by their output mount instead).
pub const CANARY_ENV: &str = "PINFOLD_CANARY_INSTANCE";

/// Docker's containerd namespace.
pub const DOCKER_NAMESPACE: &str = "moby";

/// One process of a runtime group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Proc {
    /// Process id.
    pub pid: i32,
    /// Start time in clock ticks since boot (with the pid, the process's identity).
    pub start: u64,
    /// What it is: the base name of its first argument (`containerd-shim-runc-v2`,
    /// `runsc-sandbox`, `runsc-gofer`, `runsc`, …).
    pub name: String,
}

/// The runtime processes of one container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuntimeGroup {
    /// The container id (64 hex digits).
    pub container: String,
    /// The containerd namespace (`moby` for Docker).
    pub namespace: String,
    /// containerd's socket, from the shim's command line.
    pub address: Option<String>,
    /// The shim, when it is still alive.
    pub shim: Option<Proc>,
    /// The runtime's processes: the shim's descendants, or runsc processes naming the
    /// container's bundle that lost their shim.
    pub procs: Vec<Proc>,
    /// The OCI bundle directory.
    pub bundle: Option<PathBuf>,
    /// The pinfold instance whose container it was, if any.
    pub instance: Option<String>,
}

impl RuntimeGroup {
    /// Every process of the group, runtime processes first and the shim last.
    pub fn all(&self) -> impl Iterator<Item = &Proc> {
        self.procs.iter().chain(self.shim.iter())
    }

    /// A one-line description: `container 1a2b3c4d5e6f (instance x): containerd-shim-runc-v2 123, runsc-sandbox 130`.
    pub fn describe(&self) -> String {
        let procs: Vec<String> = self
            .all()
            .map(|p| format!("{} {}", p.name, p.pid))
            .collect();
        format!(
            "container {}{}: {}",
            &self.container[..12.min(self.container.len())],
            self.instance
                .as_ref()
                .map(|i| format!(" (pinfold instance {i})"))
                .unwrap_or_default(),
            procs.join(", ")
        )
    }
}

struct Entry {
    ppid: i32,
    start: u64,
    args: Vec<String>,
}

fn read_capped(p: &Path, cap: u64) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::open(p)
        .ok()?
        .take(cap)
        .read_to_end(&mut buf)
        .ok()?;
    Some(buf)
}

/// `(ppid, start time)` from `/proc/<pid>/stat`, or `None` for a zombie or a gone process.
fn stat(pid: i32) -> Option<(i32, u64)> {
    let s = read_capped(&PathBuf::from(format!("/proc/{pid}/stat")), 4096)?;
    let s = String::from_utf8_lossy(&s);
    // Fields resume after the last `)` (the command name may hold anything): state is
    // field 3, ppid 4, starttime 22.
    let mut f = s.rsplit_once(')')?.1.split_whitespace();
    if matches!(f.next()?, "Z" | "X") {
        return None;
    }
    let ppid = f.next()?.parse().ok()?;
    let start = f.nth(17)?.parse().ok()?;
    Some((ppid, start))
}

fn processes() -> HashMap<i32, Entry> {
    let mut all = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return all;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Some((ppid, start)) = stat(pid) else {
            continue;
        };
        let Some(cmd) = read_capped(&e.path().join("cmdline"), 64 << 10) else {
            continue;
        };
        let args = cmd
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        all.insert(pid, Entry { ppid, start, args });
    }
    all
}

fn base_name(arg0: &str) -> &str {
    arg0.rsplit('/').next().unwrap_or(arg0)
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let long = format!("{name}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == name {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(&long)
        }
    })
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn proc_of(pid: i32, e: &Entry) -> Proc {
    Proc {
        pid,
        start: e.start,
        name: e
            .args
            .first()
            .map(|a| base_name(a).to_string())
            .unwrap_or_default(),
    }
}

/// The pinfold instance a bundle's `config.json` belongs to: from a bind mount source
/// `…/pinfold-docker-<instance>/…`, or the canary's environment variable.
pub fn bundle_instance(config: &serde_json::Value) -> Option<String> {
    let from_mounts = config
        .get("mounts")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("source").and_then(|s| s.as_str()))
        .find_map(|src| {
            Path::new(src).components().find_map(|c| {
                c.as_os_str()
                    .to_str()
                    .and_then(|s| s.strip_prefix("pinfold-docker-"))
                    .filter(|i| !i.is_empty())
                    .map(String::from)
            })
        });
    from_mounts.or_else(|| {
        config
            .pointer("/process/env")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .find_map(|v| v.strip_prefix(CANARY_ENV)?.strip_prefix('='))
            .filter(|i| !i.is_empty())
            .map(String::from)
    })
}

fn instance_of(bundle: &Path) -> Option<String> {
    let raw = read_capped(&bundle.join("config.json"), 4 << 20)?;
    bundle_instance(&serde_json::from_slice(&raw).ok()?)
}

/// Every container runtime group on this machine (blocking: reads `/proc`).
///
/// A group is a containerd shim of the given namespace and its descendants, or, for a
/// shim that died, the runsc processes that name the same container's bundle.
pub fn scan(namespace: &str) -> Vec<RuntimeGroup> {
    let all = processes();
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (pid, e) in &all {
        children.entry(e.ppid).or_default().push(*pid);
    }
    let mut groups: BTreeMap<String, RuntimeGroup> = BTreeMap::new();
    let mut claimed = std::collections::HashSet::new();
    for (pid, e) in &all {
        let Some(arg0) = e.args.first() else { continue };
        if !base_name(arg0).starts_with("containerd-shim") {
            continue;
        }
        let (Some(id), Some(ns)) = (flag(&e.args, "-id"), flag(&e.args, "-namespace")) else {
            continue;
        };
        // `start` launches a shim and `delete` is containerd cleaning up after a dead one:
        // both are short-lived helpers, not a container's runtime.
        if ns != namespace
            || !is_container_id(id)
            || e.args.iter().skip(1).any(|a| a == "start" || a == "delete")
        {
            continue;
        }
        let mut procs = Vec::new();
        let mut stack = children.get(pid).cloned().unwrap_or_default();
        while let Some(c) = stack.pop() {
            if let Some(ce) = all.get(&c) {
                claimed.insert(c);
                procs.push(proc_of(c, ce));
                stack.extend(children.get(&c).into_iter().flatten());
            }
        }
        procs.sort_by_key(|p| p.pid);
        claimed.insert(*pid);
        let bundle = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
        groups.insert(
            id.to_string(),
            RuntimeGroup {
                container: id.to_string(),
                namespace: ns.to_string(),
                address: flag(&e.args, "-address").map(String::from),
                shim: Some(proc_of(*pid, e)),
                procs,
                instance: bundle.as_deref().and_then(instance_of),
                bundle,
            },
        );
    }
    // runsc processes whose shim is gone: the container is the bundle's last component.
    for (pid, e) in &all {
        if claimed.contains(pid) {
            continue;
        }
        let Some(arg0) = e.args.first() else { continue };
        if !base_name(arg0).starts_with("runsc") {
            continue;
        }
        let Some(bundle) = flag(&e.args, "--bundle").map(PathBuf::from) else {
            continue;
        };
        let Some(id) = bundle
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| is_container_id(n))
            .map(String::from)
        else {
            continue;
        };
        if bundle
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            != Some(namespace)
        {
            continue;
        }
        let g = groups.entry(id.clone()).or_insert_with(|| RuntimeGroup {
            container: id,
            namespace: namespace.to_string(),
            address: None,
            shim: None,
            procs: Vec::new(),
            instance: instance_of(&bundle),
            bundle: Some(bundle),
        });
        g.procs.push(proc_of(*pid, e));
    }
    groups.into_values().collect()
}

/// Whether the process is still the one that was scanned.
fn same(p: &Proc) -> bool {
    stat(p.pid).is_some_and(|(_, start)| start == p.start)
}

/// SIGKILLs a process through a pidfd, after checking that the pid still names the
/// process that was scanned (so a recycled pid is never signalled).
fn kill(p: &Proc) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(p.pid) else {
        return false;
    };
    let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else {
        return false;
    };
    // The pidfd pins the process it was opened on; if that is still the scanned one, the
    // signal cannot reach anything else.
    same(p) && rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL).is_ok()
}

/// What killing a group did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Processes signalled.
    pub killed: usize,
    /// Processes still alive after the wait.
    pub survivors: Vec<Proc>,
    /// Whether containerd's record of the container was deleted (`None`: not tried,
    /// because `ctr` is not installed or the shim named no socket).
    pub record_deleted: Option<bool>,
}

/// Kills a group's runtime processes (and its shim when `with_shim`), waits up to
/// `within` for them to go, then, with the shim, deletes containerd's record of the
/// container with `ctr` (bounded by `within` too). Blocking.
pub fn reap(g: &RuntimeGroup, with_shim: bool, within: Duration) -> Reaped {
    let targets: Vec<&Proc> = g
        .procs
        .iter()
        .chain(g.shim.iter().filter(|_| with_shim))
        .collect();
    let mut r = Reaped {
        killed: targets.iter().filter(|p| kill(p)).count(),
        ..Reaped::default()
    };
    let deadline = Instant::now() + within;
    loop {
        r.survivors = targets
            .iter()
            .filter(|p| same(p))
            .map(|p| (*p).clone())
            .collect();
        if r.survivors.is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if with_shim && let Some(addr) = &g.address {
        // containerd notices the dead shim and cleans up its task on its own, for a moment
        // refusing to delete the container: retry until the bound.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            r.record_deleted = ctr(
                addr,
                &g.namespace,
                &["containers", "delete", &g.container],
                left.max(Duration::from_secs(1)),
            );
            if r.record_deleted != Some(false) || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    r
}

/// Runs `ctr --address A --namespace N ARGS…`; `None` when `ctr` cannot be started,
/// else whether it succeeded (or the record was already gone) within `within`.
fn ctr(address: &str, namespace: &str, args: &[&str], within: Duration) -> Option<bool> {
    let mut child = Command::new("ctr")
        .args(["--address", address, "--namespace", namespace])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + within;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = (&mut e).take(4096).read_to_string(&mut err);
                }
                return Some(status.success() || err.contains("not found"));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Some(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_are_attributed_by_output_mount_or_canary_env() {
        let task = serde_json::json!({"mounts": [
            {"destination": "/proc", "source": "proc"},
            {"destination": "/input", "source": "/tmp/pinfold-run-1.2-x/input"},
            {"destination": "/output", "source": "/tmp/pinfold-docker-node-ab12/123.456-9f/out"}
        ], "process": {"env": ["PATH=/bin"]}});
        assert_eq!(bundle_instance(&task).as_deref(), Some("node-ab12"));
        let canary = serde_json::json!({"mounts": [{"destination": "/proc", "source": "proc"}],
            "process": {"env": ["PATH=/bin", format!("{CANARY_ENV}=default")]}});
        assert_eq!(bundle_instance(&canary).as_deref(), Some("default"));
        let foreign = serde_json::json!({"mounts": [{"destination": "/data", "source": "/srv/pinfold-docker-"}],
            "process": {"env": [format!("{CANARY_ENV}=")]}});
        assert_eq!(bundle_instance(&foreign), None);
        assert_eq!(bundle_instance(&serde_json::json!({})), None);
    }

    #[test]
    fn flags_are_read_in_both_spellings() {
        let args: Vec<String> = [
            "shim",
            "-namespace",
            "moby",
            "-id",
            "abc",
            "--bundle=/x/moby/y",
        ]
        .map(String::from)
        .into();
        assert_eq!(flag(&args, "-id"), Some("abc"));
        assert_eq!(flag(&args, "-namespace"), Some("moby"));
        assert_eq!(flag(&args, "--bundle"), Some("/x/moby/y"));
        assert_eq!(flag(&args, "-address"), None);
        assert!(is_container_id(&"a".repeat(64)));
        assert!(!is_container_id(&"g".repeat(64)));
    }

    #[test]
    fn a_stranger_is_never_signalled_through_a_stale_scan() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let (_, start) = stat(pid).unwrap();
        let wrong = Proc {
            pid,
            start: start + 1,
            name: "sleep".into(),
        };
        assert!(
            !kill(&wrong),
            "a different start time is a different process"
        );
        assert!(same(&Proc {
            start,
            ..wrong.clone()
        }));
        assert!(kill(&Proc { start, ..wrong }));
        child.wait().unwrap();
    }
}
