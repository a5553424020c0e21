//! What operators and authors expect of the three binaries from the shell (issue 15):
//! quiet broken pipes, observability endpoints, completions, pruning, contrib files.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::http::{get, sample};
use pinfold_e2e::{
    ProviderProcess, RegistryProcess, ReviewedRegistry, Scratch, bin, example, free_port,
    ok_stdout, repo, run,
};

/// Runs `name args` with its stdout a pipe whose reader is already gone, as in
/// `cmd | head -0`, and returns its exit code and stderr.
fn run_into_closed_pipe(name: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(bin(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before the program gets to print: its first write meets EPIPE.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_is_a_quiet_exit_for_every_binary() {
    let s = Scratch::new();
    let node = s.path("node");
    let def = s.path("def");
    pinfold_e2e::wat_definition(
        &def,
        "pipe",
        r#"(module (memory (export "memory") 1) (func (export "_start")))"#,
        pinfold_e2e::Limits::default(),
        "",
    );
    let node_s = node.to_str().unwrap();
    let def_s = def.to_str().unwrap();
    let cases: [(&str, Vec<&str>); 4] = [
        ("provider", vec!["init", "--dir", node_s]),
        ("task-defs", vec!["check", def_s]),
        ("task-defs", vec!["--help"]),
        ("requestor", vec!["providers", "--mdns", "--wait", "0"]),
    ];
    for (name, args) in cases {
        let (code, err) = run_into_closed_pipe(name, &args);
        assert!(!err.contains("panicked"), "{name} {args:?}: {err}");
        assert!(!err.contains("Broken pipe"), "{name} {args:?}: {err}");
        assert_eq!(code, Some(0), "{name} {args:?}: {err}");
    }
    // `provider jobs` on the node just made (no jobs yet, one line of output).
    let cfg = node.join("provider.toml");
    let (code, err) =
        run_into_closed_pipe("provider", &["jobs", "--config", cfg.to_str().unwrap()]);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn the_node_serves_metrics_and_health_and_lists_jobs_in_a_table() {
    let s = Scratch::new();
    let reg = ReviewedRegistry::start(&s);
    let id = reg.approved(&example("wordfreq"));
    let port = free_port();
    let toml = reg.provider_toml("", &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    let node = ProviderProcess::start(&s.path("node"), Some(&toml), &["--log-format", "json"], &[]);
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(get(&format!("{base}/healthz")), (200, "ok\n".to_string()));

    let corpus = s.path("corpus.txt");
    std::fs::write(&corpus, "the cat and the hat\n").unwrap();
    let out = Command::new(bin("requestor"))
        .args([
            "run",
            &id,
            "--json",
            "--wait",
            "10",
            "--timeout",
            "120",
            "--bootstrap",
            node.addr(),
        ])
        .arg("--input")
        .arg(&corpus)
        .arg("--output")
        .arg(s.path("out"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The job's row is written just after the result goes out; wait for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let (status, text) = get(&format!("{base}/metrics"));
        assert_eq!(status, 200);
        if sample(&text, "pinfold_job_run_duration_seconds_count") == Some(1.0) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no finished run in the metrics:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let finished = text
        .lines()
        .filter(|l| l.starts_with("pinfold_jobs{") && l.contains("status=\"succeeded\""))
        .count();
    assert_eq!(finished, 1, "{text}");
    assert!(
        sample(&text, "pinfold_transfer_bytes_total{direction=\"in\"}").unwrap() >= 20.0,
        "{text}"
    );
    assert!(
        sample(&text, "pinfold_transfer_bytes_total{direction=\"out\"}").unwrap() > 0.0,
        "{text}"
    );
    assert!(sample(&text, "pinfold_peers").is_some(), "{text}");
    assert!(
        sample(&text, "pinfold_registry_log_size").unwrap() >= 3.0,
        "{text}"
    );
    let age = sample(&text, "pinfold_registry_sync_age_seconds").unwrap();
    assert!((0.0..60.0).contains(&age), "{text}");
    assert!(
        text.contains("# TYPE pinfold_job_run_duration_seconds histogram"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");

    // JSON logs, no colour codes: every stderr line is one JSON object.
    let log = node.log();
    assert!(!log.contains('\u{1b}'), "{log}");
    let lines: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }

    // The table: a header, then the job with its time, run duration and usage.
    let cfg = node.dir.join("provider.toml");
    let table = ok_stdout(&run("provider", &[&"jobs", &"--config", &cfg]));
    let mut rows = table.lines();
    let header: Vec<&str> = rows
        .next()
        .unwrap()
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "JOB",
            "STATE",
            "STATUS",
            "CREATED (UTC)",
            "RUN",
            "WALL",
            "PEAK MEM",
            "FUEL",
            "DEFINITION",
            "REQUESTOR"
        ],
        "{table}"
    );
    let row = rows.next().unwrap();
    assert!(row.contains("succeeded"), "{table}");
    assert!(row.contains(" 20"), "{table}"); // the creation date's century
    let cells: Vec<&str> = row.split_whitespace().collect();
    // id, state, status, date, time, run, wall, peak memory, fuel, definition, requestor
    assert_eq!(cells.len(), 11, "{table}");
    assert!(
        cells[5].ends_with('s') && cells[6].ends_with('s'),
        "{table}"
    );
    assert!(cells[7].ends_with('B'), "{table}");
    let json: serde_json::Value = serde_json::from_str(&node.jobs_json()).unwrap();
    assert!(
        json[0]["run_ms"].is_u64() && json[0]["peak_memory"].is_u64(),
        "{json}"
    );
}

#[test]
fn the_registry_serves_metrics_and_health_on_its_own_address() {
    let s = Scratch::new();
    let (_, reviewer) = pinfold_e2e::keygen(&s, "reviewer");
    let r = RegistryProcess::start(
        &s.path("reg"),
        &["--reviewer", &reviewer, "--metrics-listen", "127.0.0.1:0"],
    );
    let base = r
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("metrics "))
        .unwrap_or_else(|| panic!("no metrics line in {:?}", r.banner))
        .to_string();
    assert_ne!(base, r.url);
    assert_eq!(get(&format!("{base}/healthz")), (200, "ok\n".to_string()));
    let (status, text) = get(&format!("{base}/metrics"));
    assert_eq!(status, 200);
    assert_eq!(
        sample(&text, "pinfold_registry_log_size"),
        Some(0.0),
        "{text}"
    );
    assert!(
        sample(&text, "pinfold_registry_checkpoint_age_seconds").unwrap() < 60.0,
        "{text}"
    );
    // The API port does not serve them.
    assert_eq!(get(&format!("{}/metrics", r.url)).0, 404);

    // With --json the banner is one JSON object with the same facts.
    let mut child = Command::new(bin("task-defs"))
        .arg("serve")
        .arg("--data")
        .arg(s.path("reg2"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--reviewer", &reviewer, "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert!(
        v["listening"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"),
        "{v}"
    );
    assert!(
        v["metrics"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"),
        "{v}"
    );
    assert_eq!(v["reviewers"], 1, "{v}");
}

#[test]
fn completions_and_man_pages_come_from_each_binary() {
    let s = Scratch::new();
    for name in ["provider", "task-defs", "requestor"] {
        let bash = ok_stdout(&run(name, &[&"completions", &"bash"]));
        assert!(
            bash.contains(&format!("complete -F _{} ", name.replace('-', "__")))
                || bash.contains("complete "),
            "{bash}"
        );
        assert!(
            bash.contains("completions"),
            "{name}: subcommands are listed"
        );
        let zsh = ok_stdout(&run(name, &[&"completions", &"zsh"]));
        assert!(zsh.starts_with(&format!("#compdef {name}")), "{zsh}");
        let page = ok_stdout(&run(name, &[&"man"]));
        assert!(page.contains(&format!(".TH {name} 1")), "{page}");
        let dir = s.path(name);
        let listed = ok_stdout(&run(name, &[&"man", &"--dir", &dir]));
        assert!(dir.join(format!("{name}.1")).is_file(), "{listed}");
        assert!(
            dir.join(format!("{name}-completions.1")).is_file(),
            "{listed}"
        );
        assert_eq!(run(name, &[&"completions", &"tcsh"]).status.code(), Some(2));
    }
    assert!(s.path("provider").join("provider-prune.1").is_file());
    // The hidden watchdog is not documented.
    assert!(
        !s.path("provider")
            .join("provider-__exec-watchdog.1")
            .exists()
    );
}

#[test]
fn prune_removes_old_final_jobs_bundles_and_artifacts_only() {
    let s = Scratch::new();
    let node = s.path("node");
    ok_stdout(&run("provider", &[&"init", &"--dir", &node]));
    let data = node.join("data");
    // A job store with one old finished job, one old running job and one recent finished one.
    let db = rusqlite::Connection::open(data.join("jobs.sqlite")).unwrap();
    db.execute_batch(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, requestor TEXT NOT NULL, definition TEXT NOT NULL,
             state TEXT NOT NULL, status TEXT, exit_code INTEGER, outputs TEXT, detail TEXT,
             created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
         CREATE TABLE transitions (job_id TEXT NOT NULL, state TEXT NOT NULL, at_ms INTEGER NOT NULL, detail TEXT);
         INSERT INTO jobs VALUES ('old', 'r', 'd', 'finished', 'succeeded', 0, 'o', NULL, 1000, 1000);
         INSERT INTO jobs VALUES ('stuck', 'r', 'd', 'running', NULL, NULL, NULL, NULL, 1000, 1000);
         INSERT INTO transitions VALUES ('old', 'offered', 1000, NULL);
         INSERT INTO transitions VALUES ('old', 'finished', 1000, NULL);",
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    db.execute(
        "INSERT INTO jobs VALUES ('new', 'r', 'd', 'finished', 'succeeded', 0, 'o', NULL, ?1, ?1)",
        [now],
    )
    .unwrap();
    drop(db);
    let old = std::time::SystemTime::now() - Duration::from_secs(30 * 24 * 3600);
    let touch = |p: &Path, when: std::time::SystemTime| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
        let f = std::fs::File::options().write(true).open(p).unwrap();
        f.set_times(
            std::fs::FileTimes::new()
                .set_accessed(when)
                .set_modified(when),
        )
        .unwrap();
    };
    let now_t = std::time::SystemTime::now();
    touch(&data.join("bundles/aa.bundle"), old);
    touch(&data.join("bundles/bb.bundle"), now_t);
    touch(&data.join("artifacts/k.cwasm"), old);
    touch(&data.join("artifacts/k.cwasm.b3"), old);
    touch(&data.join("artifacts/n.cwasm"), now_t);
    // Retention as an operator writes it, in the manifest's units.
    let cfg = node.join("provider.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("jobs = \"30d\""), "{text}");
    std::fs::write(
        &cfg,
        text.replace("jobs = \"30d\"", "jobs = \"1h\"")
            .replace("bundles = \"7d\"", "bundles = \"24h\""),
    )
    .unwrap();

    let dry = ok_stdout(&run(
        "provider",
        &[&"prune", &"--config", &cfg, &"--dry-run", &"--json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&dry).unwrap();
    assert_eq!(
        (
            v["jobs"].as_u64(),
            v["bundles"].as_u64(),
            v["artifacts"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{v}"
    );
    assert!(
        data.join("bundles/aa.bundle").exists(),
        "a dry run removes nothing"
    );

    let text = ok_stdout(&run("provider", &[&"prune", &"--config", &cfg]));
    assert!(
        text.starts_with(
            "removed 1 job(s), 1 bundle(s) (1 bytes), 1 compiled artifact(s) (2 bytes)"
        ),
        "{text}"
    );
    assert!(!data.join("bundles/aa.bundle").exists() && data.join("bundles/bb.bundle").exists());
    assert!(
        !data.join("artifacts/k.cwasm").exists() && !data.join("artifacts/k.cwasm.b3").exists()
    );
    assert!(data.join("artifacts/n.cwasm").exists());
    let db = rusqlite::Connection::open(data.join("jobs.sqlite")).unwrap();
    let ids: Vec<String> = db
        .prepare("SELECT id FROM jobs ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ids, ["new", "stuck"], "a job in flight is never pruned");
    let history: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM transitions WHERE job_id = 'old'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(history, 0);
}

#[test]
fn provider_toml_takes_manifest_units_and_refuses_unknown_enum_values() {
    let s = Scratch::new();
    let write = |name: &str, text: &str| {
        let p = s.path(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    // `provider jobs` loads the configuration and lists nothing: the units parse.
    let good = write(
        "good.toml",
        "[caps]\nmemory_bytes = \"512MiB\"\noutput_bytes = \"1GiB\"\nretain_secs = \"10m\"\n\
         [network]\nrequest_timeout_ms = \"30s\"\n[registry]\nmax_age_secs = \"5m\"\n",
    );
    assert_eq!(
        ok_stdout(&run("provider", &[&"jobs", &"--config", &good])),
        "no jobs\n"
    );
    let cases = [
        (
            "[executors]\ndocker_isolation = \"vm\"\n",
            "vm-required, vm-recommended or container",
        ),
        ("[caps]\nmemory_bytes = \"1 parsec\"\n", "unknown size unit"),
        (
            "[caps]\nretain_secs = \"1500ms\"\n",
            "not a whole number of seconds",
        ),
        (
            "[caps]\nmemory_bytes = true\n",
            "expected an integer or a string",
        ),
        (
            "[registry]\nurl = \"127.0.0.1:8417\"\n",
            "is not an http URL",
        ),
        (
            "[caps]\nmemroy_bytes = 1\n",
            "(did you mean `memory_bytes`?)",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let p = write(&format!("bad{i}.toml"), text);
        let o = run("provider", &[&"run", &"--config", &p]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(want), "{text}: {err}");
        assert!(
            !err.contains("untagged") && !err.contains("variant"),
            "{err}"
        );
    }
}

#[test]
fn the_systemd_units_verify() {
    let Ok(analyze) = which("systemd-analyze") else {
        println!("skipping systemd-analyze verify: systemd-analyze is not installed");
        return;
    };
    let s = Scratch::new();
    for (unit, binary) in [
        ("pinfold-provider.service", "provider"),
        ("pinfold-registry.service", "task-defs"),
    ] {
        // verify checks that ExecStart's program exists: point it at the built binary.
        let text = std::fs::read_to_string(repo().join("contrib/systemd").join(unit)).unwrap();
        let installed = format!("/usr/local/bin/{binary}");
        assert!(text.contains(&installed), "{unit} runs {installed}");
        let path = s.path(unit);
        std::fs::write(
            &path,
            text.replace(&installed, bin(binary).to_str().unwrap()),
        )
        .unwrap();
        let o = Command::new(&analyze)
            .arg("verify")
            .arg(&path)
            .env("SYSTEMD_LOG_LEVEL", "warning")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        // Only complaints about this unit count (the host's own units may have their own).
        let ours: Vec<&str> = err.lines().filter(|l| l.contains(unit)).collect();
        assert!(o.status.success() && ours.is_empty(), "{unit}: {err}");
    }
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

/// A container and image removed when dropped, whatever the test's outcome.
struct DockerGuard {
    image: String,
    container: String,
}

impl Drop for DockerGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.container])
            .output();
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

impl DockerGuard {
    /// Builds `contrib/docker/build.sh KIND BINARY` into an image private to this test.
    fn build(kind: &str, binary: &str) -> DockerGuard {
        let guard = DockerGuard {
            image: format!("pinfold-{kind}-test:{}", std::process::id()),
            container: format!("pinfold-{kind}-test-{}", std::process::id()),
        };
        let build = Command::new(repo().join("contrib/docker/build.sh"))
            .arg(kind)
            .arg(bin(binary))
            .arg(&guard.image)
            .output()
            .unwrap();
        assert!(
            build.status.success(),
            "build.sh {kind}: {}",
            String::from_utf8_lossy(&build.stderr)
        );
        guard
    }

    /// `docker run -d --network host EXTRA... IMAGE ARGS...` as this guard's container. Host
    /// networking: the test reaches the container's ports on loopback without relying on the
    /// bridge's port forwarding.
    fn run(&self, extra: &[&str], args: &[&str]) {
        let started = Command::new("docker")
            .args(["run", "-d", "--network", "host", "--name", &self.container])
            .args(extra)
            .arg(&self.image)
            .args(args)
            .output()
            .unwrap();
        assert!(
            started.status.success(),
            "docker run: {}",
            String::from_utf8_lossy(&started.stderr)
        );
    }

    /// Waits (at most 30 s) for `/healthz` on `port` to answer, and checks it says ok.
    fn wait_healthy(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        loop {
            if let Ok(mut r) = agent.get(format!("http://127.0.0.1:{port}/healthz")).call() {
                assert_eq!(r.status().as_u16(), 200);
                assert_eq!(r.body_mut().read_to_string().unwrap(), "ok\n");
                return;
            }
            if Instant::now() > deadline {
                let logs = Command::new("docker")
                    .args(["logs", &self.container])
                    .output()
                    .unwrap();
                panic!(
                    "/healthz did not answer within 30 s; container logs:\n{}{}",
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn the_registry_image_builds_offline_and_answers_healthz() {
    let guard = DockerGuard::build("registry", "task-defs");
    let (api, metrics) = (free_port(), free_port());
    let s = Scratch::new();
    let (_, reviewer) = pinfold_e2e::keygen(&s, "reviewer");
    let listen = format!("127.0.0.1:{api}");
    let metrics_listen = format!("127.0.0.1:{metrics}");
    guard.run(
        &[],
        &[
            "serve",
            "--data",
            "/data",
            "--listen",
            &listen,
            "--metrics-listen",
            &metrics_listen,
            "--reviewer",
            &reviewer,
        ],
    );
    guard.wait_healthy(metrics);
    // The API works too: the registry created its log in the image's data volume.
    let (status, body) = get(&format!("http://127.0.0.1:{api}/api/v1/checkpoint"));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn the_provider_image_builds_offline_and_runs_a_node() {
    let guard = DockerGuard::build("provider", "provider");
    let s = Scratch::new();
    let metrics = free_port();
    // The configuration the Dockerfile expects at /node/provider.toml (relative paths are
    // relative to it: /node/data and /node/work, owned by the image's user).
    let config = s.path("provider.toml");
    std::fs::write(
        &config,
        format!(
            "[network]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nmdns = false\nkad = false\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n"
        ),
    )
    .unwrap();
    let mount = format!("{}:/node/provider.toml:ro", config.display());
    guard.run(&["-v", &mount], &[]);
    guard.wait_healthy(metrics);
    let (_, text) = get(&format!("http://127.0.0.1:{metrics}/metrics"));
    assert!(text.contains("pinfold_uptime_seconds"), "{text}");
}

/// The subcommands a `--help` lists under `Commands:` (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn every_subcommand_help_has_examples_and_exit_codes() {
    for name in ["provider", "task-defs", "requestor"] {
        let mut todo = vec![Vec::<String>::new()];
        let mut seen = 0;
        while let Some(path) = todo.pop() {
            let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
            args.push("--help");
            let o = Command::new(bin(name)).args(&args).output().unwrap();
            let help = String::from_utf8_lossy(&o.stdout).into_owned();
            assert!(o.status.success(), "{name} {args:?}");
            let subs = subcommands(&help);
            if subs.is_empty() {
                assert!(
                    help.contains("examples:"),
                    "{name} {args:?} has no examples:\n{help}"
                );
                assert!(
                    help.contains("exit codes:"),
                    "{name} {args:?} lists no exit codes:\n{help}"
                );
                seen += 1;
            }
            for s in subs {
                let mut p = path.clone();
                p.push(s);
                todo.push(p);
            }
        }
        assert!(seen >= 6, "{name}: only {seen} subcommands found");
    }
}

#[test]
fn json_mode_prints_results_and_errors_as_json() {
    let s = Scratch::new();
    let missing = s.path("missing");
    let m = missing.to_str().unwrap();
    let id = format!("blake3:{}", "0".repeat(64));
    let dead = "http://127.0.0.1:1";
    let node = s.path("node");
    ok_stdout(&run("provider", &[&"init", &"--dir", &node]));
    let node_s = node.to_str().unwrap();
    let failing: Vec<(&str, Vec<&str>, i32)> = vec![
        ("task-defs", vec!["new", m, "--json"], 2),
        ("task-defs", vec!["hash", m, "--json"], 3),
        ("task-defs", vec!["pack", m, "-o", m, "--json"], 3),
        ("task-defs", vec!["unpack", m, "-o", m, "--json"], 3),
        (
            "task-defs",
            vec!["keygen", "-o", "/proc/no/such/key", "--json"],
            3,
        ),
        (
            "task-defs",
            vec!["queue", "hide", &id, "--data", m, "--json"],
            3,
        ),
        (
            "task-defs",
            vec!["publish", m, "--registry", dead, "--key", m, "--json"],
            3,
        ),
        (
            "task-defs",
            vec!["status", &id, "--registry", dead, "--json"],
            3,
        ),
        (
            "task-defs",
            vec!["review", "list", "--registry", dead, "--json"],
            3,
        ),
        (
            "task-defs",
            vec![
                "review",
                "approve",
                &id,
                "--registry",
                dead,
                "--key",
                m,
                "--json",
            ],
            3,
        ),
        ("task-defs", vec!["hash", m, "--json", "--no-such-flag"], 2),
        ("task-defs", vec!["serve", "--data", m, "--json"], 3),
        ("provider", vec!["exec", m, "--json"], 8),
        ("provider", vec!["init", "--dir", node_s, "--json"], 2),
        ("provider", vec!["jobs", "--config", m, "--json"], 9),
        ("provider", vec!["prune", "--config", m, "--json"], 2),
        ("provider", vec!["run", "--config", m, "--json"], 2),
        ("provider", vec!["jobs", "--json", "--limit", "many"], 2),
        ("requestor", vec!["providers", "--json"], 2),
        ("requestor", vec!["verify", m, "--json"], 4),
    ];
    for (name, args, code) in failing {
        let o = Command::new(bin(name)).args(&args).output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| {
            panic!(
                "{name} {args:?}: stdout is not JSON ({e}): {out:?}; stderr {}",
                String::from_utf8_lossy(&o.stderr)
            )
        });
        assert_eq!(o.status.code(), Some(code), "{name} {args:?}: {v}");
        assert_eq!(v["ok"], false, "{name} {args:?}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{name} {args:?}: {v}"
        );
    }
    // Results of the commands that only printed text before.
    let def = example("wordfreq");
    let v: serde_json::Value =
        serde_json::from_str(&ok_stdout(&run("task-defs", &[&"hash", &def, &"--json"]))).unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("blake3:"), "{v}");
    let bundle = s.path("w.bundle");
    let v: serde_json::Value = serde_json::from_str(&ok_stdout(&run(
        "task-defs",
        &[&"pack", &def, &"-o", &bundle, &"--json"],
    )))
    .unwrap();
    assert!(v["bytes"].as_u64().unwrap() > 0, "{v}");
    let key = s.path("k.key");
    let v: serde_json::Value = serde_json::from_str(&ok_stdout(&run(
        "task-defs",
        &[&"keygen", &"-o", &key, &"--json"],
    )))
    .unwrap();
    assert!(
        v["public_key"].as_str().unwrap().starts_with("ed25519:"),
        "{v}"
    );
    let v: serde_json::Value = serde_json::from_str(&ok_stdout(&run(
        "provider",
        &[&"init", &"--dir", &s.path("n2"), &"--json"],
    )))
    .unwrap();
    assert!(v["peer_id"].as_str().unwrap().starts_with("12D3"), "{v}");

    // `provider run --json`: the start-up announcement as one object, then `ready`; the
    // metrics address given as a flag is in it.
    let toml = s.path("run.toml");
    std::fs::write(
        &toml,
        "[network]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nmdns = false\nkad = false\n",
    )
    .unwrap();
    let mut child = Command::new(bin("provider"))
        .arg("run")
        .arg("--config")
        .arg(&toml)
        .args(["--json", "--metrics-listen", "127.0.0.1:0"])
        .env("PINFOLD_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(s.path("run.log")).unwrap())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first:?}"));
    assert!(v["peer_id"].as_str().unwrap().starts_with("12D3"), "{v}");
    assert!(
        v["listen"][0]
            .as_str()
            .unwrap()
            .starts_with("/ip4/127.0.0.1/tcp/"),
        "{v}"
    );
    let metrics = v["metrics"].as_str().unwrap();
    assert_eq!(second, "ready");
    let health = get(&format!("{metrics}/healthz")).0;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(health, 200, "{v}");
    // Text logs into a file: no colour codes.
    let log = std::fs::read_to_string(s.path("run.log")).unwrap();
    assert!(log.contains("INFO"), "{log}");
    assert!(!log.contains('\u{1b}'), "{log:?}");
}
