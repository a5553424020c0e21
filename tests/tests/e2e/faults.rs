//! Faults: a provider whose disk is nearly full, and the registry killed mid-burst.
//!
//! The disk tests put a real `provider run` node's data and work directories on a small
//! tmpfs mounted for the test, so they need root (`CAP_SYS_ADMIN`) and `mount(8)`; like the
//! Docker tests they never skip, they fail saying what is missing. The registry test kills
//! `task-defs serve` with SIGKILL three times while writers keep publishing and reviewing,
//! and prints its figures as `figure: ...` lines.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use pinfold_e2e::{
    Limits, ProviderProcess, RegistryProcess, ReviewedRegistry, Scratch, bin, example, ok_stdout,
    wat_definition,
};
use pinfold_registry::client::{Client, sync};
use pinfold_registry::unix_now;
use pinfold_test_support::wait_for;
use pinfold_tlog::{
    Entry, NoteVerifier, Published, Review, ReviewAction, SecretKey, Status, Verifier,
    VerifierConfig,
};
use task_defs::{Definition, bundle};

/// `ENOSPC`.
const NO_SPACE: i32 = 28;
/// Free space every disk test's node keeps in reserve (`caps.disk_reserve_bytes`).
const RESERVE: u64 = 4 << 20;
const MIB: u64 = 1 << 20;

/// A tmpfs mounted for one test; unmounted (lazily, if something still holds it) on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size_mib: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size_mib}m,mode=0700"))
            .arg("tmpfs")
            .arg(dir)
            .output();
        match o {
            Ok(o) if o.status.success() => {}
            other => panic!(
                "the disk-full tests mount a {size_mib} MiB tmpfs at {} and need root \
                 (CAP_SYS_ADMIN) and mount(8); they never skip: {other:?}",
                dir.display()
            ),
        }
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// Bytes an unprivileged writer may still use, as `stat -f` reports them.
    fn free(&self) -> u64 {
        let o = Command::new("stat")
            .args(["-f", "--format=%a %S"])
            .arg(&self.dir)
            .output()
            .unwrap();
        let text = ok_stdout(&o);
        let mut it = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
        it.next().unwrap() * it.next().unwrap()
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("filler")
    }

    /// Grows the filler file until the kernel answers "no space left on device", then
    /// gives `leave` bytes back; returns the free space afterwards.
    fn fill(&self, leave: u64) -> u64 {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())
            .unwrap();
        let chunk = vec![0x5a; MIB as usize];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(NO_SPACE) => break,
                Err(e) => panic!("filling {}: {e}", self.dir.display()),
            }
        }
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(leave)).unwrap();
        self.free()
    }

    fn unfill(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// A registry with two trusted reviewers (k = 2) and the keys to act on it.
struct World {
    s: Scratch,
    reg: ReviewedRegistry,
}

impl std::ops::Deref for World {
    type Target = ReviewedRegistry;
    fn deref(&self) -> &ReviewedRegistry {
        &self.reg
    }
}

impl World {
    fn new() -> World {
        let s = Scratch::new();
        let reg = ReviewedRegistry::start(&s);
        World { s, reg }
    }

    /// A node whose data and work directories live on `disk`.
    fn provider(&self, name: &str, disk: &Tmpfs) -> ProviderProcess {
        let extra = format!(
            "[caps]\ndisk_reserve_bytes = {RESERVE}\n\n[paths]\ndata_dir = {:?}\nwork_dir = {:?}\n",
            disk.dir.join("data"),
            disk.dir.join("work")
        );
        let toml = self.reg.provider_toml("", &extra);
        ProviderProcess::start(&self.s.path(name), Some(&toml), &[], &[])
    }

    fn file(&self, name: &str, size: u64) -> PathBuf {
        let p = self.s.path(name);
        let line = b"the cat and the hat and the bat\n";
        let bytes: Vec<u8> = line.iter().copied().cycle().take(size as usize).collect();
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

/// Where a test guest writes.
#[derive(Clone, Copy, PartialEq)]
enum Sink {
    /// `out.bin` in its output directory.
    File,
    /// Its stdout, which the node keeps in memory and writes to disk after the run.
    Stdout,
}

/// A definition whose guest waits until a file `go` appears in its output directory (the
/// test's signal that the disk is now full), then writes `chunks` × 64 KiB to `sink`
/// ignoring every write error, as most programs do, and exits 0.
fn writer_definition(dir: &Path, name: &str, output_limit: &str, chunks: u32, sink: Sink) {
    writer_definition_then(dir, name, output_limit, chunks, sink, "60s", false);
}

/// [`writer_definition`] with a time limit, spinning after its writes instead of exiting
/// when `spin` is set (so that the run ends `timed_out`).
fn writer_definition_then(
    dir: &Path,
    name: &str,
    output_limit: &str,
    chunks: u32,
    sink: Sink,
    timeout: &str,
    spin: bool,
) {
    let end = if spin {
        "(loop $forever (br $forever))"
    } else {
        "(call $proc_exit (i32.const 0))"
    };
    let open = match sink {
        Sink::File => {
            r#"(if (call $path_open (i32.const 4) (i32.const 0) (i32.const 32) (i32.const 7)
          (i32.const 1) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 12))
      (then (call $proc_exit (i32.const 2))))"#
        }
        Sink::Stdout => "(i32.store (i32.const 12) (i32.const 1))",
    };
    let wat = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "go")
  (data (i32.const 32) "out.bin")
  (func (export "_start") (local $i i32)
    (block $ready (loop $wait
      (br_if $ready (i32.eqz (call $path_open (i32.const 4) (i32.const 0) (i32.const 16)
        (i32.const 2) (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 8))))
      (br $wait)))
    {open}
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (i32.const 65536))
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (i32.const {chunks})))
      (drop (call $fd_write (i32.load (i32.const 12)) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    {end}))"#
    );
    wat_definition(
        dir,
        name,
        &wat,
        Limits {
            timeout,
            output: output_limit,
            ..Limits::default()
        },
        "",
    );
}

fn requestor(p: &ProviderProcess, def: &str, out: &Path, inputs: &[&Path]) -> Command {
    let mut cmd = Command::new(bin("requestor"));
    cmd.args(["run", def, "--json", "--wait", "10", "--timeout", "120"])
        .args(["--bootstrap", p.addr()])
        .arg("--output")
        .arg(out);
    for i in inputs {
        cmd.arg("--input").arg(i);
    }
    cmd
}

fn parse(o: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "requestor printed {text:?} ({e}); stderr {}",
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// `requestor run ... --json` against one provider; returns the exit code and the JSON.
fn request(
    p: &ProviderProcess,
    def: &str,
    out: &Path,
    inputs: &[&Path],
) -> (i32, serde_json::Value) {
    let o = requestor(p, def, out, inputs).output().unwrap();
    (o.status.code().unwrap_or(-1), parse(&o))
}

/// The reason the (only) provider gave for not running a refused job.
fn refusal(v: &serde_json::Value) -> String {
    assert_eq!(v["kind"], "refused", "{v}");
    v["refusals"][0]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn jobs(p: &ProviderProcess) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&p.jobs_json()).unwrap();
    v.as_array().unwrap().clone()
}

fn alive(p: &ProviderProcess) -> bool {
    // Zombie or gone both mean the node stopped; /proc/PID/stat's third field says which.
    std::fs::read_to_string(format!("/proc/{}/stat", p.pid())).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

/// `PRAGMA integrity_check` on the node's job store, opened read-only.
fn assert_store_intact(disk: &Tmpfs) {
    let path = disk.dir.join("data/jobs.sqlite");
    let c =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let verdict: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(verdict, "ok", "the job store is damaged");
}

/// Every file under `root` (relative paths), skipping the filler.
fn files_under(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                found.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    found.retain(|f| f != "filler");
    found.sort();
    found
}

/// Nothing half-written stays behind: no temporary bundle, no staged input of a job that
/// ended, no output of a run whose disk filled up.
fn assert_no_partial_files(disk: &Tmpfs) {
    let files = files_under(&disk.dir);
    let partial: Vec<&String> = files
        .iter()
        .filter(|f| {
            f.ends_with(".tmp")
                || f.contains("/input/")
                || f.ends_with("out.bin")
                || (f.starts_with("data/bundles/") && !f.ends_with(".bundle"))
        })
        .collect();
    assert!(
        partial.is_empty(),
        "left behind: {partial:?} (all: {files:?})"
    );
}

#[test]
fn offers_that_do_not_fit_a_nearly_full_disk_are_refused_up_front_with_a_disk_reason() {
    let w = World::new();
    let disk = Tmpfs::mount(&w.s.path("disk"), 64);
    let wordfreq = w.approved(&example("wordfreq"));
    let big_out = w.s.path("big-writer");
    writer_definition(&big_out, "big-writer", "32MiB", 1, Sink::File);
    let big_writer = w.approved(&big_out);
    let p = w.provider("p", &disk);
    let small = w.file("small.txt", 64);

    // Room enough: it runs, and the node now holds wordfreq (its output limit is known at
    // the offer).
    let (code, v) = request(&p, &wordfreq, &w.s.path("o1"), &[&small]);
    assert_eq!(code, 0, "{v}");

    // 26 MiB left: a 12 MiB input plus wordfreq's 16 MiB output limit plus the 4 MiB
    // reserve do not fit, so the offer is refused before a byte is fetched.
    let free = disk.fill(26 * MIB);
    assert!((24 * MIB..=27 * MIB).contains(&free), "{free}");
    let big = w.file("big.txt", 12 * MIB);
    let (code, v) = request(&p, &wordfreq, &w.s.path("o2"), &[&big]);
    assert_eq!(code, 3, "{v}");
    let reason = refusal(&v);
    assert!(
        reason.starts_with("over the provider's caps: not enough free disk space")
            && reason.contains(&format!("{} of input", 12 * MIB)),
        "{reason}"
    );
    let newest = &jobs(&p)[0];
    assert_eq!(newest["state"], "refused", "{newest}");
    assert!(!w.s.path("o2/outputs").exists());

    // A definition the node does not hold yet: its 32 MiB output limit is known once the
    // bundle arrives, and the job is rejected then, before it runs.
    let (code, v) = request(&p, &big_writer, &w.s.path("o3"), &[]);
    assert_eq!(code, 3, "{v}");
    let reason = refusal(&v);
    assert!(
        reason.starts_with("run rejected: not enough free disk space")
            && reason.contains(&format!("{} of output limit", 32 * MIB)),
        "{reason}"
    );
    let newest = &jobs(&p)[0];
    assert_eq!(newest["status"], "rejected", "{newest}");

    // Refused and rejected jobs gave their claims back: what fits still runs.
    let (code, v) = request(&p, &wordfreq, &w.s.path("o4"), &[&small]);
    assert_eq!(code, 0, "{v}");
    assert!(alive(&p));
    assert_no_partial_files(&disk);
    assert_store_intact(&disk);
}

#[test]
fn a_disk_that_fills_during_a_run_fails_the_job_cleanly_and_the_node_recovers() {
    let w = World::new();
    let disk = Tmpfs::mount(&w.s.path("disk"), 64);
    let wordfreq = w.approved(&example("wordfreq"));
    let writer_dir = w.s.path("writer");
    // 12 MiB, well within its 16 MiB limit: only the full disk stops it.
    writer_definition(&writer_dir, "writer", "16MiB", 192, Sink::File);
    let writer = w.approved(&writer_dir);
    // 128 KiB of stdout against a 64 KiB limit: it ends output_exceeded with 64 KiB of
    // stdout the node must then write to the full disk.
    let flooder_dir = w.s.path("flooder");
    writer_definition(&flooder_dir, "flooder", "64KiB", 2, Sink::Stdout);
    let flooder = w.approved(&flooder_dir);
    let mut p = w.provider("p", &disk);
    let small = w.file("small.txt", 64);
    let input = w.file("input.txt", MIB);

    // Both start while there is room, then wait for their signal. The flooder has no
    // input: removing one after its run would free the room its stdout needs.
    let spawn = |def: &str, out: &str, inputs: &[&Path]| {
        requestor(&p, def, &w.s.path(out), inputs)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let writing = spawn(&writer, "o1", &[&input]);
    let flooding = spawn(&flooder, "o2", &[]);
    let work = disk.dir.join("work");
    let mut dirs = std::collections::HashMap::new();
    wait_for(30, "both tasks to start", || {
        for j in jobs(&p) {
            let dir = work.join(j["id"].as_str().unwrap());
            if j["state"] == "running" && dir.join("output").is_dir() {
                dirs.insert(j["definition"].as_str().unwrap().to_string(), dir);
            }
        }
        dirs.len() == 2
    });
    assert!(dirs[&writer].join("input/input.txt").is_file());
    // The disk fills up while the tasks run; then each is told to write.
    assert_eq!(disk.fill(0), 0);
    let finish = |child: std::process::Child, def: &str| {
        std::fs::File::create(dirs[def].join("output/go")).unwrap();
        let o = child.wait_with_output().unwrap();
        let v = parse(&o);
        assert_eq!(o.status.code(), Some(3), "{v}");
        refusal(&v)
    };
    // Stdout the node holds in memory and cannot write out: a signed rejected result says
    // why, rather than a job the node forgets.
    let reason = finish(flooding, &flooder);
    assert!(
        reason.starts_with("run rejected: the provider could not keep the run's results")
            && reason.contains("No space left on device"),
        "{reason}"
    );
    // An output write that failed: not a success with a truncated file.
    let reason = finish(writing, &writer);
    assert!(reason.contains("disk filled up during the run"), "{reason}");
    // The truncated output and the staged inputs are gone at once, not after retention.
    assert_no_partial_files(&disk);

    // With the disk still full the node answers, with the reason, and its jobs list reads.
    let (code, v) = request(&p, &wordfreq, &w.s.path("o2"), &[&small]);
    assert_eq!(code, 3, "{v}");
    assert!(refusal(&v).contains("not enough free disk space"), "{v}");
    assert!(alive(&p), "the node died on a full disk: {}", p.log());
    assert!(!jobs(&p).is_empty());

    // Space back: the next task runs, and the store has caught up with what it could not
    // write while full (the writer's job is not left "running").
    disk.unfill();
    let (code, v) = request(&p, &wordfreq, &w.s.path("o3"), &[&small]);
    assert_eq!(code, 0, "{v}");
    let listed = jobs(&p);
    for (def, detail) in [
        (&writer, "disk filled up"),
        (&flooder, "could not keep the run's results"),
    ] {
        let failed = listed
            .iter()
            .find(|j| j["definition"] == def.as_str())
            .unwrap();
        assert_eq!(failed["state"], "delivered", "{failed}");
        assert_eq!(failed["status"], "rejected", "{failed}");
        assert!(
            failed["detail"].as_str().unwrap_or("").contains(detail),
            "{failed}"
        );
    }
    assert_store_intact(&disk);

    // A clean stop and a start on the same directories: nothing was left in flight.
    let dir = p.dir.clone();
    let status = p.terminate(20).expect("the node exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    // Started on a full disk, the node cannot open its store: it says so and why, at once,
    // and leaves the store as it was.
    assert_eq!(disk.fill(0), 0);
    let mut child = Command::new(bin("provider"))
        .arg("run")
        .arg("--config")
        .arg(dir.join("provider.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut exited = None;
    wait_for(20, "the node to give up on a full disk", || {
        exited = child.try_wait().unwrap();
        exited.is_some()
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(exited.unwrap().code(), Some(9), "{stderr}");
    assert!(
        stderr.contains("jobs.sqlite") && stderr.contains("(0 bytes free on its filesystem)"),
        "{stderr}"
    );
    disk.unfill();
    assert_store_intact(&disk);
    p = ProviderProcess::start(&dir, None, &[], &[]);
    assert!(p.interrupted.is_empty(), "{:?}", p.interrupted);
    assert_eq!(jobs(&p).len(), listed.len());
    assert_store_intact(&disk);
    let (code, v) = request(&p, &wordfreq, &w.s.path("o4"), &[&small]);
    assert_eq!(code, 0, "{v}");
    assert_no_partial_files(&disk);
}

#[test]
fn a_run_that_times_out_on_a_full_disk_has_its_outputs_removed_at_once() {
    // A run a limit ended used to skip the full-disk check, so its partial outputs stayed
    // on the full disk until retention.
    let w = World::new();
    let disk = Tmpfs::mount(&w.s.path("disk"), 64);
    let dir = w.s.path("spinner");
    writer_definition_then(&dir, "spinner", "16MiB", 64, Sink::File, "3s", true);
    let spinner = w.approved(&dir);
    let wordfreq = w.approved(&example("wordfreq"));
    let p = w.provider("p", &disk);
    let child = requestor(&p, &spinner, &w.s.path("o1"), &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let work = disk.dir.join("work");
    let mut out = None;
    wait_for(30, "the task to start", || {
        out = jobs(&p)
            .iter()
            .filter(|j| j["state"] == "running")
            .map(|j| work.join(j["id"].as_str().unwrap()).join("output"))
            .find(|d| d.is_dir());
        out.is_some()
    });
    let out = out.unwrap();
    // A little written while there is room, then the disk fills and the task spins on.
    std::fs::write(out.join("out.bin"), vec![7u8; 4096]).unwrap();
    assert_eq!(disk.fill(0), 0);
    std::fs::File::create(out.join("go")).unwrap();
    let o = child.wait_with_output().unwrap();
    let v = parse(&o);
    assert_eq!(o.status.code(), Some(1), "the task's own failure: {v}");
    assert_eq!(v["kind"], "task_failed", "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("task timed_out on "),
        "{v}"
    );
    assert!(
        !out.exists(),
        "the outputs went at once, not after retention"
    );
    let left: Vec<String> = files_under(&disk.dir)
        .into_iter()
        .filter(|f| f.ends_with("out.bin") || f.contains("/input/"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    disk.unfill();
    let small = w.file("small.txt", 64);
    let (code, v) = request(&p, &wordfreq, &w.s.path("o2"), &[&small]);
    assert_eq!(code, 0, "{v}");
}

/// Wordfreq at version `1.0.<i>`: a distinct identity per `i`.
fn variant(base: &Definition, i: u64) -> Definition {
    let text = base
        .manifest_text
        .replace("version = \"1.0.0\"", &format!("version = \"1.0.{i}\""));
    Definition::from_parts(text, base.files.clone()).unwrap()
}

/// Asks `url` for its checkpoint until it answers; returns how long that took from `since`.
fn answering(url: &str, since: Instant) -> Duration {
    let c = Client::with_timeout(url, Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.checkpoint().is_err() {
        assert!(
            Instant::now() < deadline,
            "the restarted registry never answered"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    since.elapsed()
}

#[test]
fn acknowledged_writes_survive_three_sigkills_with_writers_running() {
    const CYCLES: usize = 3;
    const WRITERS: u64 = 4;
    // Acknowledged writes between kills (about 1.5 s of writing each on a 2-core VM).
    const PER_CYCLE: usize = 100;
    let s = Scratch::new();
    let data = s.path("registry");
    let reviewers: Vec<SecretKey> = (1..=3).map(|n| SecretKey::from_seed([n; 32])).collect();
    let roster: Vec<String> = reviewers.iter().map(|k| k.public_key_text()).collect();
    let mut args = vec!["--threshold", "2"];
    for r in &roster {
        args.extend(["--reviewer", r.as_str()]);
    }
    // Hundreds of publications a second from one key and one address: far above the
    // default publishing limits, which this test is not about.
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("registry.toml"),
        "[authors]\nkey_per_hour = 1000000\nkey_burst = 1000000\n\
         ip_per_hour = 1000000\nip_burst = 1000000\n",
    )
    .unwrap();
    let mut server = RegistryProcess::start(&data, &args);
    let author = SecretKey::from_seed([50; 32]);
    let base = Definition::load(&example("wordfreq")).unwrap();

    // Writers publish and review without pause; across a kill their requests fail and they
    // carry on against whatever URL the restarted server has. Only acknowledged writes count.
    let url = Arc::new(RwLock::new(server.url.clone()));
    let acked = Arc::new(Mutex::new(Vec::<(u64, Vec<u8>)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (url, acked, stop) = (url.clone(), acked.clone(), stop.clone());
        let (author, base, reviewers) = (author.clone(), base.clone(), reviewers.clone());
        writers.push(std::thread::spawn(move || {
            let mut current = String::new();
            let mut c = Client::new("http://127.0.0.1:1");
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let now = url.read().unwrap().clone();
                if now != current {
                    c = Client::with_timeout(&now, Duration::from_secs(5));
                    current = now;
                }
                let def = variant(&base, w * 1_000_000 + i);
                let p = Published::sign(
                    &author,
                    "pinfold-registry",
                    def.id,
                    &def.manifest.name,
                    &def.manifest.version.to_string(),
                    unix_now(),
                );
                let Ok(r) = c.publish(&p, &bundle::pack(&def)) else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                acked
                    .lock()
                    .unwrap()
                    .push((r.index, Entry::Published(p).to_leaf()));
                let rv = Review::sign(
                    &reviewers[(i % 3) as usize],
                    "pinfold-registry",
                    ReviewAction::Approve,
                    def.id,
                    "",
                    unix_now(),
                );
                if let Ok(r) = c.review(&rv) {
                    acked
                        .lock()
                        .unwrap()
                        .push((r.index, Entry::Review(rv).to_leaf()));
                }
            }
        }));
    }
    let count = || acked.lock().unwrap().len();
    let mut recoveries = Vec::new();
    for cycle in 0..CYCLES {
        // Kill mid-burst: only once this server has acknowledged a good number of writes.
        let target = count() + PER_CYCLE;
        let deadline = Instant::now() + Duration::from_secs(15);
        while count() < target {
            assert!(
                Instant::now() < deadline,
                "cycle {cycle}: the writers stalled at {} acknowledged writes",
                count()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        server.kill();
        let t = Instant::now();
        server = RegistryProcess::start(&data, &args);
        recoveries.push(answering(&server.url, t));
        *url.write().unwrap() = server.url.clone();
    }
    // The writers carry on against the last server before they stop.
    let target = count() + PER_CYCLE;
    let deadline = Instant::now() + Duration::from_secs(15);
    while count() < target {
        assert!(
            Instant::now() < deadline,
            "no writes after the last restart"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let writing = started.elapsed();
    let acked = acked.lock().unwrap().clone();

    let log_key: pinfold_tlog::PublicKey = server.log_key().parse().unwrap();
    let mut v = Verifier::new(VerifierConfig {
        origin: "pinfold-registry".into(),
        log_key: NoteVerifier::new("pinfold-registry", log_key).unwrap(),
        reviewers: reviewers.iter().map(|k| k.public_key()).collect(),
        threshold: 1,
        max_age_secs: 300,
        witnesses: Default::default(),
    })
    .unwrap();
    let c = Client::new(&server.url);
    sync(&c, &mut v, unix_now()).expect("the restarted log verifies");
    let entries = c.entries(0, v.size()).unwrap();
    let lost = acked
        .iter()
        .filter(|(index, leaf)| entries.get(*index as usize) != Some(leaf))
        .count();
    let recovery_ms: Vec<String> = recoveries
        .iter()
        .map(|d| d.as_millis().to_string())
        .collect();
    println!(
        "figure: registry_kill_cycles={CYCLES} acked_writes={} lost={lost} writes_per_sec={:.0} recovery_ms={}",
        acked.len(),
        acked.len() as f64 / writing.as_secs_f64(),
        recoveries.iter().max().unwrap().as_millis()
    );
    println!(
        "figure: registry_recovery_ms_each={} log_size={}",
        recovery_ms.join(","),
        v.size()
    );
    for (index, leaf) in &acked {
        assert_eq!(
            entries.get(*index as usize),
            Some(leaf),
            "acknowledged entry {index} lost or changed"
        );
    }
    assert_eq!(lost, 0);
    // Every acknowledged approval counts after the restarts (threshold 1 here).
    let mut approved = 0;
    for (_, leaf) in &acked {
        if let Entry::Review(r) = Entry::from_leaf(leaf).unwrap() {
            assert_eq!(
                v.status(&r.definition, unix_now()).unwrap(),
                Status::Approved
            );
            approved += 1;
        }
    }
    assert!(approved >= PER_CYCLE, "{approved}");
    // The server keeps taking writes after recovery.
    let def = variant(&base, 999_999_999);
    let p = Published::sign(
        &author,
        "pinfold-registry",
        def.id,
        "wordfreq",
        &def.manifest.version.to_string(),
        1,
    );
    let r = c.publish(&p, &bundle::pack(&def)).unwrap();
    assert_eq!(r.index, v.size());
}
