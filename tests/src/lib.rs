//! Harness for pinfold's end-to-end tests: finds the workspace's binaries, gives each test a temp dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path of a workspace binary (`task-defs`, `provider`, `requestor`).
///
/// Cargo only exposes `CARGO_BIN_EXE_*` for a package's own binaries, so we look next to the
/// running test executable (`target/<profile>/deps/..`). `cargo test --workspace` builds every
/// member's binaries, because each member has integration tests that need its own.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: build the workspace binaries first (cargo build --workspace --bins, or cargo test --workspace)",
        p.display()
    );
    p
}

/// Runs a workspace binary with arguments and returns its output.
pub fn run(name: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(bin(name))
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .unwrap_or_else(|e| panic!("running {name}: {e}"))
}

/// A command running `program`, inside network namespace `ns` (`ip netns exec NS ...`) when
/// one is given: the NAT topology tests run each node in its own namespace.
pub fn command_in(ns: Option<&str>, program: &Path) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// A per-test scratch directory, removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// A fresh directory.
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A path inside the scratch directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

/// Writes a wasm definition into `dir`: `taskdef.toml` naming `guest.wasm` (built from the
/// WAT text `wat`), with the given limits and any extra `[capabilities]` lines.
pub fn wat_definition(dir: &Path, name: &str, wat: &str, limits: Limits<'_>, capabilities: &str) {
    std::fs::create_dir_all(dir).expect("definition dir");
    let Limits {
        memory,
        timeout,
        output,
    } = limits;
    std::fs::write(
        dir.join("taskdef.toml"),
        format!(
            "format = 1\nname = \"{name}\"\nversion = \"1.0.0\"\n\
             description = \"an end-to-end test task\"\nlicense = \"MIT\"\n\n\
             [runtime]\nkind = \"wasm\"\nmodule = \"guest.wasm\"\nargs = []\n\n\
             [limits]\nmemory = \"{memory}\"\ntimeout = \"{timeout}\"\noutput = \"{output}\"\n\n\
             [capabilities]\ndeterministic = false\n{capabilities}\n"
        ),
    )
    .expect("writing taskdef.toml");
    let module = wat::parse_str(wat).unwrap_or_else(|e| panic!("{name}: {e}"));
    std::fs::write(dir.join("guest.wasm"), module).expect("writing guest.wasm");
}

/// The limits of a definition written by [`wat_definition`].
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    /// `limits.memory`.
    pub memory: &'a str,
    /// `limits.timeout`.
    pub timeout: &'a str,
    /// `limits.output`.
    pub output: &'a str,
}

impl Default for Limits<'_> {
    fn default() -> Self {
        Limits {
            memory: "16MiB",
            timeout: "10s",
            output: "1MiB",
        }
    }
}

/// The directory of an example definition.
pub fn example(name: &str) -> PathBuf {
    repo().join("task-defs/examples").join(name)
}

/// Stdout as text, asserting the command succeeded.
#[track_caller]
pub fn ok_stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "command failed with {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
}

/// A `task-defs serve` process on 127.0.0.1 with a free port; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct RegistryProcess {
    child: std::process::Child,
    /// Base URL, as the server printed it.
    pub url: String,
    /// The data directory.
    pub data: PathBuf,
    /// The lines it printed before serving (address, origin, keys, witnesses, roster).
    pub banner: Vec<String>,
}

impl RegistryProcess {
    /// Starts `task-defs serve --data DATA --listen 127.0.0.1:0 ARGS...` and waits for the
    /// `listening on http://...` line it prints first.
    pub fn start(data: &Path, args: &[&str]) -> RegistryProcess {
        RegistryProcess::start_in(None, "127.0.0.1:0", data, args)
    }

    /// [`RegistryProcess::start`] inside network namespace `ns`, listening on `listen`.
    pub fn start_in(ns: Option<&str>, listen: &str, data: &Path, args: &[&str]) -> RegistryProcess {
        use std::io::BufRead as _;
        let mut child = command_in(ns, &bin("task-defs"))
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--listen", listen])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawning task-defs serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let first = lines
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("task-defs serve exited: {:?}", child.wait()));
        let url = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        // The banner ends with the roster line.
        let mut banner = vec![first];
        while !banner.last().is_some_and(|l| l.starts_with("reviewers ")) {
            match lines.next() {
                Some(Ok(l)) => banner.push(l),
                _ => break,
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        RegistryProcess {
            child,
            url,
            data: data.to_path_buf(),
            banner,
        }
    }

    /// The log's origin, from the banner's `origin` line.
    pub fn origin(&self) -> String {
        self.banner
            .iter()
            .find_map(|l| l.strip_prefix("origin "))
            .expect("the banner names the origin")
            .to_string()
    }

    /// The log public key the server wrote to `DATA/log.pub`.
    pub fn log_key(&self) -> String {
        std::fs::read_to_string(self.data.join("log.pub"))
            .expect("log.pub")
            .trim_end()
            .to_string()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server with SIGKILL (no chance to flush anything) and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A size field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, ...) in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {path}"))
}

/// Open file descriptors of a process (entries of `/proc/<pid>/fd`).
pub fn proc_fd_count(pid: u32) -> usize {
    let path = format!("/proc/{pid}/fd");
    std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .count()
}

/// A `task-defs witness` process on 127.0.0.1 with a free port; killed when dropped.
#[derive(Debug)]
pub struct WitnessProcess {
    child: std::process::Child,
    /// Base URL (its add-checkpoint prefix), as it printed it.
    pub url: String,
    /// Its C2SP verifier key, as it printed it.
    pub vkey: String,
}

impl WitnessProcess {
    /// Starts `task-defs witness --data DATA --listen 127.0.0.1:0 --name NAME --log LOG`
    /// and reads the `listening on` and `witness vkey` lines it prints first.
    pub fn start(data: &Path, name: &str, log_vkey: &str) -> WitnessProcess {
        use std::io::BufRead as _;
        let mut child = Command::new(bin("task-defs"))
            .arg("witness")
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0", "--name", name, "--log", log_vkey])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawning task-defs witness");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut line = |prefix: &str| {
            let l = lines
                .next()
                .and_then(Result::ok)
                .unwrap_or_else(|| panic!("task-defs witness exited before {prefix:?}"));
            l.strip_prefix(prefix)
                .unwrap_or_else(|| panic!("unexpected line {l:?}"))
                .to_string()
        };
        let url = line("listening on ");
        let vkey = line("witness vkey ");
        std::thread::spawn(move || for _ in lines {});
        WitnessProcess { child, url, vkey }
    }

    /// Kills the witness with SIGKILL and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Generates a key with `task-defs keygen` and returns (secret key file, public key text).
pub fn keygen(scratch: &Scratch, name: &str) -> (PathBuf, String) {
    let file = scratch.path(&format!("{name}.key"));
    let public = ok_stdout(&run("task-defs", &[&"keygen", &"-o", &file]));
    (file, public.trim_end().to_string())
}

/// A `task-defs serve` process trusting two reviewers (k = 2), with the author's and the
/// reviewers' keys: the registry most end-to-end tests publish to and approve in.
#[derive(Debug)]
pub struct ReviewedRegistry {
    /// The server.
    pub server: RegistryProcess,
    /// The author's secret key file.
    pub author: PathBuf,
    /// Each reviewer's (secret key file, public key text).
    pub reviewers: [(PathBuf, String); 2],
}

impl ReviewedRegistry {
    /// Generates the keys in `s` and starts the registry in `s/registry`.
    pub fn start(s: &Scratch) -> ReviewedRegistry {
        let (author, _) = keygen(s, "author");
        let r1 = keygen(s, "r1");
        let r2 = keygen(s, "r2");
        let server = RegistryProcess::start(
            &s.path("registry"),
            &["--reviewer", &r1.1, "--reviewer", &r2.1, "--threshold", "2"],
        );
        ReviewedRegistry {
            server,
            author,
            reviewers: [r1, r2],
        }
    }

    /// Publishes the definition in `dir` as the author; returns its identity.
    pub fn publish(&self, dir: &Path) -> String {
        publish(&self.server.url, dir, &self.author)
    }

    /// Reviewer `which` signs `verb` (approve, reject, revoke) for `id`.
    pub fn review(&self, verb: &str, id: &str, which: usize) {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"review",
            &verb,
            &id,
            &"--registry",
            &self.server.url,
            &"--key",
            &self.reviewers[which].0,
        ];
        if verb != "approve" {
            args.extend([&"--reason" as &dyn AsRef<std::ffi::OsStr>, &"test"]);
        }
        ok_stdout(&run("task-defs", &args));
    }

    /// Both reviewers approve `id`.
    pub fn approve(&self, id: &str) {
        self.review("approve", id, 0);
        self.review("approve", id, 1);
    }

    /// Publishes `dir` and has both reviewers approve it; returns its identity.
    pub fn approved(&self, dir: &Path) -> String {
        let id = self.publish(dir);
        self.approve(&id);
        id
    }

    /// `provider.toml` for a node trusting this registry: [`provider_toml_with_network`].
    pub fn provider_toml(&self, network: &str, extra: &str) -> String {
        provider_toml_with_network(
            &self.server.url,
            &self.server.log_key(),
            &[&self.reviewers[0].1, &self.reviewers[1].1],
            2,
            network,
            extra,
        )
    }
}

/// `task-defs publish DIR --registry URL --key KEY --json`; returns the identity.
pub fn publish(url: &str, dir: &Path, key: &Path) -> String {
    publish_in(None, url, dir, key)
}

/// [`publish`] run inside network namespace `ns` (where that registry is reachable).
pub fn publish_in(ns: Option<&str>, url: &str, dir: &Path, key: &Path) -> String {
    let out = ok_stdout(
        &command_in(ns, &bin("task-defs"))
            .arg("publish")
            .arg(dir)
            .args(["--registry", url, "--key"])
            .arg(key)
            .arg("--json")
            .output()
            .expect("running task-defs publish"),
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("publish prints json");
    v["id"].as_str().expect("an id").to_string()
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a free port")
        .port()
}

/// A `provider run` process; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct ProviderProcess {
    child: std::process::Child,
    /// The node directory (holds `provider.toml`, `data/`, `work/`, `stderr.log`).
    pub dir: PathBuf,
    /// The node's peer id, as printed.
    pub peer: String,
    /// Its listen addresses, as printed (each ends in `/p2p/<peer>`).
    pub addrs: Vec<String>,
    /// Its relayed addresses, as printed (`…/p2p-circuit/p2p/<peer>`).
    pub relayed: Vec<String>,
    /// Jobs the node reported as interrupted at start-up.
    pub interrupted: Vec<String>,
}

/// `provider.toml` text for a test node on loopback trusting `registry` (URL, log key,
/// reviewer keys, k) with `extra` TOML appended to the `[registry]` table's end (or after).
pub fn provider_toml(
    url: &str,
    log_key: &str,
    reviewers: &[&str],
    k: usize,
    extra: &str,
) -> String {
    provider_toml_with_network(url, log_key, reviewers, k, "", extra)
}

/// [`provider_toml`] with `network` lines added to the `[network]` table (a second
/// `[network]` header in `extra` would be a duplicate table).
pub fn provider_toml_with_network(
    url: &str,
    log_key: &str,
    reviewers: &[&str],
    k: usize,
    network: &str,
    extra: &str,
) -> String {
    let reviewers = reviewers
        .iter()
        .map(|r| format!("{r:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[network]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nmdns = false\nkad = false\n\
         ad_interval_secs = 2\ngossip_heartbeat_ms = 100\n{network}\n\n\
         [registry]\nurl = {url:?}\nlog_key = {log_key:?}\nreviewers = [{reviewers}]\n\
         threshold = {k}\nmax_age_secs = 300\n\n{extra}\n"
    )
}

impl ProviderProcess {
    /// Writes `DIR/provider.toml` (unless `toml` is `None`, to restart with the old one),
    /// starts `provider run --config DIR/provider.toml ARGS...` with `env`, and waits for
    /// `ready`.
    pub fn start(
        dir: &Path,
        toml: Option<&str>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> ProviderProcess {
        ProviderProcess::start_in(None, dir, toml, args, env)
    }

    /// [`ProviderProcess::start`] inside network namespace `ns`.
    pub fn start_in(
        ns: Option<&str>,
        dir: &Path,
        toml: Option<&str>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> ProviderProcess {
        use std::io::BufRead as _;
        std::fs::create_dir_all(dir).expect("node dir");
        let config = dir.join("provider.toml");
        if let Some(t) = toml {
            std::fs::write(&config, t).expect("writing provider.toml");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stderr.log"))
            .expect("stderr.log");
        let mut cmd = command_in(ns, &bin("provider"));
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("PINFOLD_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawning provider run");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let (mut peer, mut addrs, mut interrupted) = (String::new(), Vec::new(), Vec::new());
        let mut relayed = Vec::new();
        loop {
            let line = match lines.next() {
                Some(Ok(l)) => l,
                _ => panic!(
                    "provider run exited before ready: {:?}\n{}",
                    child.wait(),
                    std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
                ),
            };
            if let Some(p) = line.strip_prefix("peer id ") {
                peer = p.to_string();
            } else if let Some(a) = line.strip_prefix("listening on ") {
                addrs.push(a.to_string());
            } else if let Some(j) = line.strip_prefix("interrupted ") {
                interrupted.push(j.to_string());
            } else if let Some(a) = line.strip_prefix("relayed at ") {
                relayed.push(a.to_string());
            } else if line == "ready" {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        ProviderProcess {
            child,
            dir: dir.to_path_buf(),
            peer,
            addrs,
            relayed,
            interrupted,
        }
    }

    /// The first listen address.
    pub fn addr(&self) -> &str {
        &self.addrs[0]
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A size field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, ...) in KiB.
    pub fn status_kib(&self, field: &str) -> u64 {
        proc_status_kib(self.pid(), field)
    }

    /// Open file descriptors of the process (entries of `/proc/<pid>/fd`).
    pub fn fd_count(&self) -> usize {
        proc_fd_count(self.pid())
    }

    /// The TCP port of the first listen address.
    pub fn tcp_port(&self) -> u16 {
        self.addr()
            .split('/')
            .nth(4)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no tcp port in {}", self.addr()))
    }

    /// Kills the node with SIGKILL and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (at most `secs`) for the exit status.
    pub fn terminate(mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }

    /// `provider jobs --config DIR/provider.toml --json`, parsed.
    pub fn jobs_json(&self) -> String {
        ok_stdout(&run(
            "provider",
            &[
                &"jobs",
                &"--config",
                &self.dir.join("provider.toml"),
                &"--json",
            ],
        ))
    }

    /// The stderr log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for ProviderProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
