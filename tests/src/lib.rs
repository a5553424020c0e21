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
