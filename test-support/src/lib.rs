//! Helpers the pinfold test suites share, so each exists once: [`copy_tree`],
//! [`wait_until`] / [`wait_for`], and the heavy-test switch [`skip_heavy`].
//!
//! A dev-dependency only; nothing here is part of any shipped binary.

#![deny(missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

/// Set to `1` to skip the heavy tests (Docker, gVisor, a browser) on a machine without them.
pub const SKIP_HEAVY_ENV: &str = "PINFOLD_SKIP_HEAVY";
/// Set by `.ci/run`: under CI the heavy tests never skip, whatever [`SKIP_HEAVY_ENV`] says.
pub const CI_ENV: &str = "PINFOLD_CI";

/// Copies a directory tree (directories and regular files, following nothing else),
/// creating `to`. Panics on any error: a test's fixture is broken.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("creating {}: {e}", to.display()));
    let entries =
        std::fs::read_dir(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display()));
    for e in entries {
        let e = e.unwrap_or_else(|e| panic!("reading {}: {e}", from.display()));
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ty = e
            .file_type()
            .unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        if ty.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst)
                .unwrap_or_else(|e| panic!("copying {} to {}: {e}", src.display(), dst.display()));
        }
    }
}

/// Polls `f` every 50 ms until it holds or `secs` seconds pass; whether it held.
pub fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Like [`wait_until`], but panics with "timed out waiting for `what`" when `f` never holds.
#[track_caller]
pub fn wait_for(secs: u64, what: &str, f: impl FnMut() -> bool) {
    assert!(wait_until(secs, f), "timed out waiting for {what}");
}

/// Whether to skip a heavy test (`what` names what it needs, for the message).
///
/// Heavy tests run unless [`SKIP_HEAVY_ENV`] is `1`; then they print why and skip. Under CI
/// ([`CI_ENV`] set) they never skip: asking to skip there panics, so a CI run cannot pass
/// without them. Without the switch a heavy test whose engine is missing fails loudly, as
/// it always has.
pub fn skip_heavy(what: &str) -> bool {
    let asked = std::env::var(SKIP_HEAVY_ENV).is_ok_and(|v| v == "1");
    if !asked {
        return false;
    }
    assert!(
        std::env::var_os(CI_ENV).is_none(),
        "{SKIP_HEAVY_ENV}=1 under CI ({CI_ENV} is set): heavy tests never skip in CI"
    );
    eprintln!("skipping a test that needs {what}: {SKIP_HEAVY_ENV}=1");
    true
}

/// Returns from the enclosing test when [`skip_heavy`] says so.
#[macro_export]
macro_rules! heavy {
    ($what:expr) => {
        if $crate::skip_heavy($what) {
            return;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_nested_trees_and_waits() {
        let root = std::env::temp_dir().join(format!("pinfold-ts-{}", std::process::id()));
        let src = root.join("src");
        std::fs::create_dir_all(src.join("a/b")).unwrap();
        std::fs::write(src.join("a/b/f"), b"x").unwrap();
        copy_tree(&src, &root.join("dst"));
        assert_eq!(std::fs::read(root.join("dst/a/b/f")).unwrap(), b"x");
        std::fs::remove_dir_all(&root).unwrap();
        let mut n = 0;
        assert!(wait_until(5, || {
            n += 1;
            n == 3
        }));
        assert!(!wait_until(0, || false));
    }
}
