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
}

impl RegistryProcess {
    /// Starts `task-defs serve --data DATA --listen 127.0.0.1:0 ARGS...` and waits for the
    /// `listening on http://...` line it prints first.
    pub fn start(data: &Path, args: &[&str]) -> RegistryProcess {
        use std::io::BufRead as _;
        let mut child = Command::new(bin("task-defs"))
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0"])
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
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        RegistryProcess {
            child,
            url,
            data: data.to_path_buf(),
        }
    }

    /// The log public key the server wrote to `DATA/log.pub`.
    pub fn log_key(&self) -> String {
        std::fs::read_to_string(self.data.join("log.pub"))
            .expect("log.pub")
            .trim_end()
            .to_string()
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

/// Generates a key with `task-defs keygen` and returns (secret key file, public key text).
pub fn keygen(scratch: &Scratch, name: &str) -> (PathBuf, String) {
    let file = scratch.path(&format!("{name}.key"));
    let public = ok_stdout(&run("task-defs", &[&"keygen", &"-o", &file]));
    (file, public.trim_end().to_string())
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a free port")
        .port()
}
