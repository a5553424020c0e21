//! Test harness: each test gets its own temp dir holding a definition it can edit.

use std::fs;
use std::path::{Path, PathBuf};

use task_defs::{Definition, Diagnostics, Error, Rule};

// Through `..`, so the registry crate's tests (which include this file) find them too.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../task-defs/tests/fixtures");
pub const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../task-defs/examples");

/// A temp directory holding one definition under `def/`.
pub struct Dir {
    pub tmp: tempfile::TempDir,
}

impl Dir {
    /// A copy of a fixture or example directory.
    pub fn copy_of(src: &str) -> Dir {
        let tmp = tempfile::tempdir().unwrap();
        copy_tree(Path::new(src), &tmp.path().join("def"));
        Dir { tmp }
    }

    /// The wasm vector fixture (valid, small, uses most manifest features).
    pub fn wasm() -> Dir {
        Dir::copy_of(&format!("{FIXTURES}/vector-wasm"))
    }

    /// The docker vector fixture.
    pub fn docker() -> Dir {
        Dir::copy_of(&format!("{FIXTURES}/vector-docker"))
    }

    pub fn def(&self) -> PathBuf {
        self.tmp.path().join("def")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.def().join(rel)
    }

    pub fn manifest(&self) -> String {
        fs::read_to_string(self.path("taskdef.toml")).unwrap()
    }

    pub fn set_manifest(&self, text: &str) {
        fs::write(self.path("taskdef.toml"), text).unwrap();
    }

    /// Replaces the first occurrence of `from` in the manifest (which must occur).
    pub fn edit(&self, from: &str, to: &str) {
        let m = self.manifest();
        assert!(m.contains(from), "manifest does not contain {from:?}:\n{m}");
        self.set_manifest(&m.replacen(from, to, 1));
    }

    pub fn write(&self, rel: &str, bytes: &[u8]) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }

    pub fn load(&self) -> Result<Definition, Error> {
        Definition::load(&self.def())
    }

    pub fn id(&self) -> String {
        self.load()
            .unwrap_or_else(|e| panic!("{e}: {:?}", e.diagnostics()))
            .id
            .to_string()
    }

    /// Loads, expecting failure, and returns the diagnostics.
    pub fn problems(&self) -> Diagnostics {
        match self.load() {
            Ok(d) => panic!("expected an invalid definition, got {}", d.id),
            Err(Error::Invalid(d)) => d,
            Err(e) => panic!("expected diagnostics, got {e}"),
        }
    }
}

pub use pinfold_test_support::copy_tree;

/// Asserts that some diagnostic has `rule`, `key` (if given) and a message containing `needle`.
#[track_caller]
pub fn assert_problem(d: &Diagnostics, rule: Rule, key: Option<&str>, needle: &str) {
    let hit = d.iter().any(|p| {
        p.rule == rule && (key.is_none() || p.key.as_deref() == key) && p.message.contains(needle)
    });
    assert!(
        hit,
        "no {rule:?} problem at {key:?} mentioning {needle:?} in:\n{d}"
    );
}
