//! The real `provider exec` binary on a sleeping Docker task, interrupted: SIGINT and SIGTERM leave nothing behind, a SIGKILLed run is cleaned up by its watchdog, and one whose watchdog died too is swept by the next start.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::ListContainersOptionsBuilder;
use provider::docker::hardening;
use rustix::process::{Pid, Signal, kill_process};

use crate::docker::{Spec, docker_def, docker_ready};
use crate::harness::Case;

/// Generous bound for a child to start its container or to exit after a signal.
const WITHIN: Duration = Duration::from_secs(60);

/// A `provider exec` child working in its own `$TMPDIR`. Dropped by a failing test, it
/// SIGKILLs the child and detaches any mount it left under that directory, so a failure
/// does not leak a tmpfs (its container is swept by the next `provider exec`).
struct Exec {
    child: Child,
    tmp: PathBuf,
}

impl Exec {
    fn spawn(case: &Case, tmp: &Path, def: &Path) -> Exec {
        let child = Command::new(env!("CARGO_BIN_EXE_provider"))
            .env("TMPDIR", tmp)
            .env("PINFOLD_CACHE_DIR", case.path().join("cache"))
            .env("PINFOLD_DOCKER_ISOLATION", "container")
            .args(["exec", "--allow-unreviewed"])
            .arg(def)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning provider exec");
        Exec {
            child,
            tmp: tmp.to_path_buf(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: Signal) {
        let pid = Pid::from_raw(self.pid() as i32).expect("a child pid");
        kill_process(pid, sig).expect("signalling provider exec");
    }

    /// Waits for the exit; the exit code (`None` if killed by a signal) and stderr.
    fn wait(&mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + WITHIN;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("waiting for provider exec") {
                break s;
            }
            assert!(Instant::now() < deadline, "provider exec did not exit");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status.code(), err)
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for m in mounts_under(&self.tmp) {
            let _ = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

/// Containers (id, state) whose owner label names process `pid`.
async fn containers_of(d: &Docker, pid: u32) -> Vec<(String, String)> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![hardening::OWNER_LABEL.to_string()],
    )]);
    let list = d
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .expect("listing containers");
    let owner = format!("{pid}.");
    list.into_iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get(hardening::OWNER_LABEL))
                .is_some_and(|o| o.starts_with(&owner))
        })
        .map(|c| {
            (
                c.id.unwrap_or_default(),
                c.state.map(|s| s.to_string()).unwrap_or_default(),
            )
        })
        .collect()
}

async fn wait_until_running(d: &Docker, exec: &mut Exec) {
    let deadline = Instant::now() + WITHIN;
    loop {
        if containers_of(d, exec.pid())
            .await
            .iter()
            .any(|(_, s)| s == "running")
        {
            return;
        }
        if let Some(s) = exec.child.try_wait().unwrap() {
            let (_, err) = exec.wait();
            panic!("provider exec ended ({s}) before its container ran: {err}");
        }
        assert!(Instant::now() < deadline, "the container never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `provider __exec-watchdog` child of process `pid`.
fn watchdog_of(pid: u32) -> Option<Pid> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let ppid: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let is_watchdog = cmd.split(|b| *b == 0).any(|a| a == b"__exec-watchdog");
        (ppid == pid && is_watchdog)
            .then(|| Pid::from_raw(e.file_name().to_str()?.parse().ok()?))
            .flatten()
    })
}

fn gone(pid: Pid) -> bool {
    let deadline = Instant::now() + WITHIN;
    while std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero()))
        .is_ok_and(|s| !s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'))
    {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Mount points at or below `dir`, from this process's mountinfo.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(PathBuf::from)
        .collect()
}

/// What `provider exec` leaves in its `$TMPDIR`: run directories and scratch entries.
fn leftovers(tmp: &Path) -> Vec<String> {
    let mut left = Vec::new();
    for e in std::fs::read_dir(tmp).expect("reading TMPDIR") {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("pinfold-docker-") {
            for j in std::fs::read_dir(e.path()).unwrap() {
                left.push(format!(
                    "{name}/{}",
                    j.unwrap().file_name().to_string_lossy()
                ));
            }
        } else {
            left.push(name);
        }
    }
    left
}

fn sleeping_definition(case: &Case, name: &str) -> PathBuf {
    let mut spec = Spec::sh("echo started > /output/started; exec sleep 600");
    spec.timeout = "15m";
    docker_def(case, name, &spec);
    case.path().join(format!("def-{name}"))
}

/// Ctrl-C (SIGINT) and SIGTERM stop the run and remove its container, its output tmpfs
/// and its run directory before `provider exec` exits with 128 + the signal number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_and_sigterm_leave_no_container_mount_or_run_dir() {
    pinfold_test_support::heavy!("docker");
    let d = docker_ready().await;
    let case = Case::new();
    let def = sleeping_definition(&case, "sleeper");
    for (sig, name, code) in [(Signal::INT, "sigint", 130), (Signal::TERM, "sigterm", 143)] {
        let tmp = case.path().join(name);
        std::fs::create_dir(&tmp).unwrap();
        let mut exec = Exec::spawn(&case, &tmp, &def);
        wait_until_running(&d, &mut exec).await;
        // What the run holds while it runs, so the checks below look in the right places.
        assert!(
            !mounts_under(&tmp).is_empty(),
            "no output tmpfs under {tmp:?}"
        );
        assert!(
            leftovers(&tmp)
                .iter()
                .any(|n| n.starts_with("pinfold-run-")),
            "{:?}",
            leftovers(&tmp)
        );
        let pid = exec.pid();
        let watchdog = watchdog_of(pid).expect("a watchdog beside the run");
        let sent = Instant::now();
        exec.signal(sig);
        let (got, err) = exec.wait();
        println!(
            "figure: provider exec {name} to exit, container removed: {} ms",
            sent.elapsed().as_millis()
        );
        assert_eq!(got, Some(code), "{name}: {err}");
        assert!(err.contains("interrupted by"), "{name}: {err}");
        let left = containers_of(&d, pid).await;
        assert!(left.is_empty(), "{name}: containers left: {left:?}");
        assert!(
            mounts_under(&tmp).is_empty(),
            "{name}: {:?}",
            mounts_under(&tmp)
        );
        assert!(leftovers(&tmp).is_empty(), "{name}: {:?}", leftovers(&tmp));
        assert!(gone(watchdog), "{name}: the dismissed watchdog lingers");
    }
}

/// SIGKILL cannot be caught, but it closes the pipe to the run's watchdog, which then
/// removes the container, the tmpfs and the run directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_exec_is_cleaned_up_by_its_watchdog() {
    pinfold_test_support::heavy!("docker");
    let d = docker_ready().await;
    let case = Case::new();
    let def = sleeping_definition(&case, "killed");
    let tmp = case.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let mut exec = Exec::spawn(&case, &tmp, &def);
    wait_until_running(&d, &mut exec).await;
    let pid = exec.pid();
    let watchdog = watchdog_of(pid).expect("a watchdog beside the run");
    let killed = Instant::now();
    exec.signal(Signal::KILL);
    let (got, _) = exec.wait();
    assert_eq!(got, None, "killed by a signal");
    assert!(gone(watchdog), "the watchdog never finished");
    println!(
        "figure: SIGKILLed provider exec cleaned up by its watchdog in {} ms",
        killed.elapsed().as_millis()
    );
    let left = containers_of(&d, pid).await;
    assert!(left.is_empty(), "containers left: {left:?}");
    assert!(mounts_under(&tmp).is_empty(), "{:?}", mounts_under(&tmp));
    assert!(leftovers(&tmp).is_empty(), "{:?}", leftovers(&tmp));
}

/// With the watchdog SIGKILLed too, the container keeps running and the tmpfs and run
/// directory stay, until the next `provider exec` removes all three before it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_exec_and_watchdog_are_swept_by_the_next_start() {
    pinfold_test_support::heavy!("docker");
    let d = docker_ready().await;
    let case = Case::new();
    let def = sleeping_definition(&case, "killed");
    let tmp = case.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let mut exec = Exec::spawn(&case, &tmp, &def);
    wait_until_running(&d, &mut exec).await;
    let pid = exec.pid();
    let watchdog = watchdog_of(pid).expect("a watchdog beside the run");
    kill_process(watchdog, Signal::KILL).unwrap();
    assert!(gone(watchdog));
    exec.signal(Signal::KILL);
    let (got, _) = exec.wait();
    assert_eq!(got, None, "killed by a signal");
    assert_eq!(containers_of(&d, pid).await.len(), 1, "the orphan runs on");
    assert!(!mounts_under(&tmp).is_empty());
    assert!(!leftovers(&tmp).is_empty());

    docker_def(&case, "next", &Spec::sh("true"));
    let started = Instant::now();
    let mut next = Exec::spawn(&case, &tmp, &case.path().join("def-next"));
    let (got, err) = next.wait();
    println!(
        "figure: next provider exec (sweep + a trivial task): {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(got, Some(0), "{err}");
    let left = containers_of(&d, pid).await;
    assert!(left.is_empty(), "orphan survived the next start: {left:?}");
    assert!(mounts_under(&tmp).is_empty(), "{:?}", mounts_under(&tmp));
    assert!(leftovers(&tmp).is_empty(), "{:?}", leftovers(&tmp));
}
