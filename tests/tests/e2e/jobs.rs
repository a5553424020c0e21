//! The requestor's job lifecycle through the real binaries: `run --detach` and a later
//! `status`/`get`/`logs` from new processes (outputs verified), `cancel` of a looping
//! task (the provider stops burning CPU, marks the job cancelled and removes its work
//! directory), Ctrl-C on a foreground run cancelling the job on the provider, job and
//! identity prefixes (with ambiguity listing the candidates), params checked before any
//! offer, and `describe`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pinfold_e2e::{
    Limits, ProviderProcess, ReviewedRegistry, Scratch, bin, example, ok_stdout, run,
    wat_definition,
};
use pinfold_test_support::wait_until;

/// A registry (k = 2), one provider trusting it (started once the definitions are
/// approved, so its first registry view has them), and a requestor data directory.
struct World {
    s: Scratch,
    reg: ReviewedRegistry,
    node: Option<ProviderProcess>,
}

impl World {
    fn new() -> World {
        let s = Scratch::new();
        let reg = ReviewedRegistry::start(&s);
        World { s, reg, node: None }
    }

    fn start_provider(&mut self) {
        self.node = Some(ProviderProcess::start(
            &self.s.path("p1"),
            Some(&self.reg.provider_toml("", "")),
            &[],
            &[],
        ));
    }

    fn provider(&self) -> &ProviderProcess {
        self.node.as_ref().expect("start_provider first")
    }

    fn data_dir(&self) -> PathBuf {
        self.s.path("requestor-data")
    }

    /// `requestor ARGS... --data-dir DIR`.
    fn requestor(&self, args: &[&str]) -> Output {
        Command::new(bin("requestor"))
            .args(args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .output()
            .unwrap()
    }

    fn corpus(&self) -> PathBuf {
        let p = self.s.path("corpus.txt");
        std::fs::write(&p, "the cat and the hat and the bat\nthe end\n").unwrap();
        p
    }

    /// A wasm task that spins for `secs` seconds of wall-clock time (forever with
    /// `None`), then prints `slow done`; approved.
    fn spinner(&self, name: &str, secs: Option<u64>) -> String {
        let dir = self.s.path(name);
        // The monotonic clock (id 1) at 64, in nanoseconds: the start at 72.
        let body = match secs {
            Some(n) => format!(
                "(drop (call $clock (i32.const 1) (i64.const 1) (i32.const 72)))
                 (loop $l
                   (drop (call $clock (i32.const 1) (i64.const 1) (i32.const 64)))
                   (br_if $l (i64.lt_u
                     (i64.sub (i64.load (i32.const 64)) (i64.load (i32.const 72)))
                     (i64.const {}))))",
                n * 1_000_000_000
            ),
            None => "(loop $l (local.set $i (i64.add (local.get $i) (i64.const 1))) (br $l))"
                .to_string(),
        };
        let wat = format!(
            r#"(module
              (import "wasi_snapshot_preview1" "fd_write"
                (func $fd_write (param i32 i32 i32 i32) (result i32)))
              (import "wasi_snapshot_preview1" "clock_time_get"
                (func $clock (param i32 i64 i32) (result i32)))
              (memory (export "memory") 1)
              (data (i32.const 16) "slow done\n")
              (func (export "_start") (local $i i64)
                {body}
                (i32.store (i32.const 0) (i32.const 16))
                (i32.store (i32.const 4) (i32.const 10))
                (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#
        );
        wat_definition(
            &dir,
            name,
            &wat,
            Limits {
                timeout: "120s",
                ..Limits::default()
            },
            "",
        );
        self.reg.approved(&dir)
    }

    /// `provider jobs --json`, parsed.
    fn provider_jobs(&self) -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(&self.provider().jobs_json()).unwrap();
        v.as_array()
            .cloned()
            .or_else(|| v["jobs"].as_array().cloned())
            .unwrap_or_else(|| panic!("provider jobs --json: {v}"))
    }

    fn provider_state(&self, job: &str) -> Option<String> {
        self.provider_jobs()
            .into_iter()
            .find(|j| j["id"] == job)
            .and_then(|j| j["state"].as_str().map(str::to_string))
    }

    fn work_dir(&self) -> PathBuf {
        self.provider().dir.join("work")
    }

    /// The provider stopped `job`: its own store says cancelled, the job's work directory
    /// and the wasm scratch root are gone, and the CPU the loop burnt is free again.
    fn assert_killed(&self, job: &str) {
        assert_eq!(self.provider_state(job).as_deref(), Some("cancelled"));
        assert!(
            wait_until(10, || self.work_entries().is_empty()),
            "{:?}",
            self.work_entries()
        );
        let idle = cpu_over(self.provider().pid(), 1.5);
        assert!(idle < 0.3, "the provider still burns CPU: {idle}s");
    }

    /// Entries of the provider's work directory (job directories, wasm scratch roots).
    fn work_entries(&self) -> Vec<String> {
        std::fs::read_dir(self.work_dir())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn cpu_over(pid: u32, secs: f64) -> f64 {
    let a = cpu_secs(pid);
    std::thread::sleep(Duration::from_secs_f64(secs));
    cpu_secs(pid) - a
}

/// `requestor run DEF --detach ...` against the world's provider; returns the job id.
fn detach(w: &World, def: &str, extra: &[&str]) -> String {
    let mut args = vec!["run", def, "--detach", "--wait", "10", "--bootstrap"];
    args.push(w.provider().addr());
    args.extend_from_slice(extra);
    let o = w.requestor(&args);
    let out = ok_stdout(&o);
    let job = out.trim().to_string();
    assert!(
        !job.is_empty() && job.bytes().all(|b| b.is_ascii_alphanumeric()),
        "run --detach printed {out:?}; stderr {}",
        text(&o.stderr)
    );
    assert!(
        text(&o.stderr).contains(&format!("requestor get {job}")),
        "{}",
        text(&o.stderr)
    );
    job
}

#[test]
fn a_detached_job_is_collected_and_verified_by_later_processes() {
    let mut w = World::new();
    let def = w.spinner("slow", Some(3));
    w.start_provider();
    let started = Instant::now();
    let job = detach(&w, &def, &[]);
    let detached_after = started.elapsed();
    let prefix = &job[..8];

    // A new process asks the provider; the job is known and not lost.
    let o = w.requestor(&["status", prefix, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&ok_stdout(&o)).unwrap();
    // The task takes 3 s: the first process left while it ran, and it runs on.
    assert!(
        detached_after < Duration::from_secs(3),
        "{detached_after:?}"
    );
    assert_eq!(v["status"]["provider_state"], "running", "{v}");
    assert_eq!(v["status"]["job"]["id"], job.as_str());

    let listed: serde_json::Value =
        serde_json::from_str(&ok_stdout(&w.requestor(&["jobs", "--json"]))).unwrap();
    assert_eq!(listed[0]["id"], job.as_str(), "{listed}");
    assert_eq!(listed[0]["definition"], def.as_str(), "{listed}");

    // `get` waits for the result, then checks and downloads it as `run` does.
    let out = w.s.path("got");
    let o = w.requestor(&["get", prefix, "--output", out.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(text(&o.stdout).trim())
        .unwrap_or_else(|e| panic!("{e}: {} / {}", text(&o.stdout), text(&o.stderr)));
    assert_eq!(o.status.code(), Some(0), "{v} {}", text(&o.stderr));
    assert_eq!(v["report"]["replicas"][0]["job_id"], job.as_str());
    assert_eq!(v["report"]["definition"], def.as_str());
    assert_eq!(
        v["report"]["replicas"][0]["provider"],
        w.provider().peer.as_str()
    );
    assert_eq!(
        std::fs::read_to_string(out.join("stdout")).unwrap(),
        "slow done\n"
    );
    // The saved receipt verifies offline against the downloaded outputs.
    let verified = run(
        "requestor",
        &[&"verify", &out.join("receipt.json"), &"--outputs", &out],
    );
    assert!(ok_stdout(&verified).contains(&w.provider().peer.clone()));
    let digest = v["report"]["replicas"][0]["outputs"].as_str().unwrap();
    let receipt: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("receipt.json")).unwrap()).unwrap();
    assert_eq!(receipt["body"]["outputs"], digest);

    // The store knows it is delivered, and where.
    let listed: serde_json::Value =
        serde_json::from_str(&ok_stdout(&w.requestor(&["jobs", "--json"]))).unwrap();
    assert_eq!(listed[0]["state"], "delivered", "{listed}");
    assert_eq!(listed[0]["status"], "succeeded", "{listed}");
    let table = ok_stdout(&w.requestor(&["jobs"]));
    let line = table
        .lines()
        .find(|l| l.starts_with(&job))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.contains("delivered")
            && line.contains("succeeded")
            && line.contains(&w.provider().peer),
        "{line}"
    );

    // `status` shows the stored receipt, the one saved with the outputs.
    let o = w.requestor(&["status", &job, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&ok_stdout(&o)).unwrap();
    assert_eq!(v["status"]["receipt"], receipt, "{v}");
    assert_eq!(v["status"]["provider_state"], "finished", "{v}");

    // `logs` from yet another process.
    let o = w.requestor(&["logs", &job]);
    assert_eq!(ok_stdout(&o), "slow done\n");

    // A get into a second directory fetches again from the provider (within retention)
    // and lands the same verified bytes.
    let again = w.s.path("again");
    let o = w.requestor(&["get", &job, "--output", again.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        std::fs::read(again.join("receipt.json")).unwrap(),
        std::fs::read(out.join("receipt.json")).unwrap()
    );
    // The provider delivered it; nothing of it is left running.
    assert_eq!(w.provider_state(&job).as_deref(), Some("delivered"));

    // A provider restarted on another port: the recorded address fails (exit 5, the
    // local state still shown); `--addr` reaches it, and it no longer knows the job.
    let node = w.node.take().unwrap();
    let dir = node.dir.clone();
    node.kill();
    w.node = Some(ProviderProcess::start(&dir, None, &[], &[]));
    let o = w.requestor(&["status", &job]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("local state delivered"),
        "{}",
        text(&o.stderr)
    );
    let moved = w.provider().addr().to_string();
    let bare = moved.split("/p2p/").next().unwrap().to_string();
    let o = w.requestor(&["status", &job, "--addr", &bare]);
    assert!(ok_stdout(&o).contains("provider says unknown"));
}

#[test]
fn cancel_kills_a_looping_task_on_the_provider_and_removes_its_work_dir() {
    let mut w = World::new();
    let def = w.spinner("forever", None);
    w.start_provider();
    let job = detach(&w, &def, &[]);
    assert!(
        wait_until(20, || w.provider_state(&job).as_deref() == Some("running")),
        "{:?}",
        w.provider_jobs()
    );
    assert!(w.work_dir().join(&job).is_dir(), "{:?}", w.work_entries());
    let busy = cpu_over(w.provider().pid(), 1.5);
    assert!(
        busy > 0.5,
        "the looping task should keep a core busy: {busy}s"
    );

    let o = w.requestor(&["cancel", &job[..6]]);
    let out = ok_stdout(&o);
    assert!(
        out.contains(&format!(
            "cancelled job {job} on provider {}",
            w.provider().peer
        )),
        "{out}"
    );
    w.assert_killed(&job);

    let o = w.requestor(&["status", &job]);
    let out = ok_stdout(&o);
    assert!(out.contains("provider says cancelled"), "{out}");
    assert!(out.contains("local state cancelled"), "{out}");
    // A second cancel says it had ended; get refuses with the reason, not a hang.
    let o = w.requestor(&["cancel", &job]);
    assert!(ok_stdout(&o).contains("already ended"));
    let o = w.requestor(&[
        "get",
        &job,
        "--timeout",
        "10",
        "--output",
        w.s.path("out").to_str().unwrap(),
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o.stderr).contains("cancelled"), "{}", text(&o.stderr));
}

#[test]
fn ctrl_c_on_a_foreground_run_cancels_the_job_on_the_provider() {
    let mut w = World::new();
    let def = w.spinner("forever", None);
    w.start_provider();
    let mut child = Command::new(bin("requestor"))
        .args([
            "run",
            &def,
            "--wait",
            "10",
            "--bootstrap",
            w.provider().addr(),
        ])
        .arg("--data-dir")
        .arg(w.data_dir())
        .arg("--output")
        .arg(w.s.path("out"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let running = || {
        w.provider_jobs()
            .into_iter()
            .find(|j| j["state"] == "running")
            .and_then(|j| j["id"].as_str().map(str::to_string))
    };
    assert!(
        wait_until(30, || running().is_some()),
        "{:?}",
        w.provider_jobs()
    );
    let job = running().unwrap();
    let interrupted = Instant::now();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // A requestor that ignores Ctrl-C would run on: it gets 20 s, then it is killed.
    let exited = wait_until(20, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    let o = child.wait_with_output().unwrap();
    assert!(
        exited,
        "still running {:?} after SIGINT: {}",
        interrupted.elapsed(),
        text(&o.stderr)
    );
    let stderr = text(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "interrupted: job {job} on {}: cancelled",
            w.provider().peer
        )),
        "{stderr}"
    );
    w.assert_killed(&job);
}

/// Copies a stored job's row under another id (the store's own table, as the requestor
/// wrote it), to make a prefix ambiguous.
fn clone_job(data: &Path, job: &str, new_id: &str, definition: Option<&str>) {
    let c = rusqlite::Connection::open(data.join("jobs.sqlite")).unwrap();
    c.execute(
        "INSERT INTO jobs (id, provider, addrs, key, definition, params, inputs, output_cap,
             state, created_ms, updated_ms)
         SELECT ?2, provider, addrs, key, COALESCE(?3, definition), params, inputs, output_cap,
             state, created_ms, updated_ms FROM jobs WHERE id = ?1",
        rusqlite::params![job, new_id, definition],
    )
    .unwrap();
}

#[test]
fn prefixes_resolve_when_unambiguous_and_list_candidates_otherwise_and_describe_prints_params() {
    let mut w = World::new();
    let id = w.reg.approved(&example("wordfreq"));
    w.start_provider();
    let hex = id.strip_prefix("blake3:").unwrap();
    let url = w.reg.server.url.clone();

    // describe by a short identity, from the registry.
    let o = w.requestor(&["describe", &hex[..10], "--registry", &url]);
    let out = ok_stdout(&o);
    for needle in [
        "wordfreq 1.0.0",
        id.as_str(),
        "top",
        "int",
        "1..=10000",
        "case",
        "fold|keep",
        "memory 67108864 bytes",
        "timeout 10000 ms",
        "output 16777216 bytes",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from {out}");
    }
    let o = w.requestor(&["describe", &id, "--registry", &url, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&ok_stdout(&o)).unwrap();
    assert_eq!(v["params"]["top"]["max"], 10000);
    assert_eq!(v["limits"]["output"], 16777216);

    // A run by short identity resolves it against the registry.
    let corpus = w.corpus();
    let out = w.s.path("out");
    let o = w.requestor(&[
        "run",
        &format!("blake3:{}", &hex[..8]),
        "--registry",
        &url,
        "--param",
        "top=2",
        "--input",
        corpus.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--wait",
        "10",
        "--json",
        "--bootstrap",
        w.provider().addr(),
    ]);
    let v: serde_json::Value = serde_json::from_str(text(&o.stdout).trim())
        .unwrap_or_else(|e| panic!("{e}: {} / {}", text(&o.stdout), text(&o.stderr)));
    assert_eq!(o.status.code(), Some(0), "{v}");
    assert_eq!(v["report"]["definition"], id.as_str());
    let job = v["report"]["replicas"][0]["job_id"]
        .as_str()
        .unwrap()
        .to_string();

    // The foreground run was recorded: a job prefix finds it.
    let o = w.requestor(&["status", &job[..5]]);
    let s = ok_stdout(&o);
    assert!(s.contains(&format!("job {job}")), "{s}");
    assert!(s.contains("local state delivered"), "{s}");
    let o = w.requestor(&["logs", &job[..5]]);
    assert_eq!(
        ok_stdout(&o),
        std::fs::read_to_string(out.join("stdout")).unwrap()
    );

    // Two jobs sharing the prefix: a usage error naming both.
    let twin = format!("{}zz", &job[..5]);
    let fake_def = format!("blake3:{}{}", &hex[..8], "0".repeat(56));
    assert_ne!(fake_def, id);
    clone_job(&w.data_dir(), &job, &twin, Some(&fake_def));
    for cmd in ["status", "get", "cancel", "logs"] {
        let o = w.requestor(&[cmd, &job[..5]]);
        let e = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {e}");
        assert!(
            e.contains("ambiguous") && e.contains(&job) && e.contains(&twin),
            "{cmd}: {e}"
        );
    }
    // The whole id still picks one; too short a prefix picks none.
    assert!(ok_stdout(&w.requestor(&["status", &job])).contains("provider says finished"));
    assert_eq!(w.requestor(&["status", &job[..3]]).status.code(), Some(2));

    // An identity prefix now matching an earlier job's definition too is ambiguous.
    let o = w.requestor(&["describe", &hex[..8], "--registry", &url]);
    let e = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("ambiguous") && e.contains(&id) && e.contains(&fake_def),
        "{e}"
    );
    // A longer one is not.
    assert!(
        ok_stdout(&w.requestor(&["describe", &hex[..12], "--registry", &url])).contains("wordfreq")
    );
    // Unknown prefixes and too-short ones are usage errors too.
    assert_eq!(
        w.requestor(&["describe", "ffffff0", "--registry", &url])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        w.requestor(&["describe", &hex[..3], "--registry", &url])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn params_are_checked_before_any_offer_with_the_param_table() {
    let mut w = World::new();
    let id = w.reg.approved(&example("wordfreq"));
    w.start_provider();
    let url = w.reg.server.url.clone();
    let corpus = w.corpus();
    let dir = example("wordfreq");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                dir.to_string_lossy().to_string(),
                "--param".into(),
                "top=many".into(),
            ],
            "expected an integer",
        ),
        (
            vec![
                dir.to_string_lossy().to_string(),
                "--param".into(),
                "bogus=1".into(),
            ],
            "bogus",
        ),
        (
            vec![
                id.clone(),
                "--registry".into(),
                url.clone(),
                "--param".into(),
                "case=shout".into(),
            ],
            "shout",
        ),
        (
            vec![
                id.clone(),
                "--registry".into(),
                url.clone(),
                "--param".into(),
                "top=0".into(),
            ],
            "below the minimum",
        ),
    ];
    for (args, needle) in cases {
        let mut full: Vec<&str> = vec!["run"];
        full.extend(args.iter().map(String::as_str));
        full.extend([
            "--input",
            corpus.to_str().unwrap(),
            "--wait",
            "10",
            "--bootstrap",
            w.provider().addr(),
        ]);
        let o = w.requestor(&full);
        let e = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.contains(needle), "{args:?}: {e}");
        // The definition's param table comes with the refusal.
        assert!(
            e.contains("params of wordfreq 1.0.0")
                && e.contains("fold|keep")
                && e.contains("1..=10000"),
            "{args:?}: {e}"
        );
    }
    // `describe` of the directory itself prints the same table, no registry needed.
    let o = w.requestor(&["describe", dir.to_str().unwrap()]);
    let out = ok_stdout(&o);
    assert!(
        out.contains("params of wordfreq 1.0.0") && out.contains("fold|keep"),
        "{out}"
    );

    // Not one offer reached the provider.
    assert!(w.provider_jobs().is_empty(), "{:?}", w.provider_jobs());
    // And nothing was recorded as a job.
    let listed = ok_stdout(&w.requestor(&["jobs"]));
    assert_eq!(listed.trim(), "no jobs");
}
