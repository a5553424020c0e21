//! Test harness: a private temp dir per test, test definitions built from WAT, and run helpers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use provider::{Executor, Outcome, RunRequest, WasmConfig, WasmExecutor};
use task_defs::Definition;

/// WASI imports most hostile guests need, for splicing into a WAT module.
pub const WASI_IMPORTS: &str = r#"
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
"#;

/// Limits and flags of a test definition.
#[derive(Debug, Clone)]
pub struct Spec {
    pub memory: &'static str,
    pub timeout: &'static str,
    pub output: &'static str,
    pub fuel: Option<u64>,
    pub deterministic: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            memory: "16MiB",
            timeout: "10s",
            output: "1MiB",
            fuel: None,
            deterministic: false,
        }
    }
}

/// One test's private scratch space.
pub struct Case {
    pub tmp: tempfile::TempDir,
    runs: std::sync::atomic::AtomicUsize,
}

impl Case {
    pub fn new() -> Case {
        Case {
            tmp: tempfile::tempdir().expect("temp dir"),
            runs: Default::default(),
        }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// An executor whose artifact cache lives in this case's temp dir.
    pub fn executor(&self) -> WasmExecutor {
        WasmExecutor::new(WasmConfig {
            cache_dir: Some(self.path().join("cache")),
            ..crate::harness::wasm_config()
        })
        .expect("executor")
    }

    /// Writes and loads a definition whose module is `wat` (text) and whose manifest follows `spec`.
    pub fn wat_def(&self, name: &str, wat: &str, spec: &Spec) -> Definition {
        let module = wat::parse_str(wat).expect("valid wat");
        self.def_with_module(name, &module, spec)
    }

    pub fn def_with_module(&self, name: &str, module: &[u8], spec: &Spec) -> Definition {
        let dir = self.path().join(format!("def-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let fuel = spec.fuel.map(|f| format!("fuel = {f}")).unwrap_or_default();
        let manifest = format!(
            r#"format = 1
name = "{name}"
version = "1.0.0"
description = "a test guest"
license = "MIT"

[runtime]
kind = "wasm"
module = "guest.wasm"
args = []

[limits]
memory = "{}"
timeout = "{}"
output = "{}"
{fuel}

[capabilities]
deterministic = {}
"#,
            spec.memory, spec.timeout, spec.output, spec.deterministic
        );
        std::fs::write(dir.join("taskdef.toml"), manifest).unwrap();
        std::fs::write(dir.join("guest.wasm"), module).unwrap();
        Definition::load_dir(&dir).expect("valid test definition")
    }

    /// Fresh, empty input and output directories for one run.
    pub fn run_dirs(&self) -> (PathBuf, PathBuf) {
        let n = self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let input = self.path().join(format!("run{n}/input"));
        let output = self.path().join(format!("run{n}/output"));
        std::fs::create_dir_all(&input).unwrap();
        std::fs::create_dir_all(&output).unwrap();
        (input, output)
    }

    /// Runs `def` with empty inputs; returns the outcome and the output directory.
    pub async fn run(&self, exec: &WasmExecutor, def: &Definition) -> (Outcome, PathBuf) {
        let (input, output) = self.run_dirs();
        self.run_in(exec, def, BTreeMap::new(), input, output).await
    }

    pub async fn run_in(
        &self,
        exec: &WasmExecutor,
        def: &Definition,
        params: BTreeMap<String, String>,
        input: PathBuf,
        output: PathBuf,
    ) -> (Outcome, PathBuf) {
        let o = exec
            .run(RunRequest {
                definition: Arc::new(def.clone()),
                params,
                input_dir: input,
                output_dir: output.clone(),
                secrets: BTreeMap::new(),
            })
            .await;
        (o, output)
    }
}

/// The repository's example definitions.
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../task-defs/examples")
        .join(name)
}

/// A guest that exits with `code` via proc_exit.
pub fn exit_wat(code: i32) -> String {
    format!(
        r#"(module {WASI_IMPORTS}
  (memory (export "memory") 1)
  (func (export "_start") (call $proc_exit (i32.const {code}))))"#
    )
}

/// The executor configuration tests start from: the defaults, with compiles run by the
/// `provider` binary (this test binary cannot act as a compile worker).
pub fn wasm_config() -> WasmConfig {
    WasmConfig {
        compile_worker: env!("CARGO_BIN_EXE_provider").into(),
        ..WasmConfig::default()
    }
}

impl Case {
    /// Compiles a C program for `wasm32-wasi` with clang (CI installs it; a machine without
    /// it fails here loudly rather than skipping the hostile cases written in C).
    pub fn c_module(&self, name: &str, src: &str) -> Vec<u8> {
        let dir = self.path().join(format!("c-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (c, wasm) = (
            dir.join(format!("{name}.c")),
            dir.join(format!("{name}.wasm")),
        );
        std::fs::write(&c, src).unwrap();
        let out = std::process::Command::new(std::env::var("CC").unwrap_or("clang".into()))
            .args(["--target=wasm32-wasi", "-O2", "-o"])
            .arg(&wasm)
            .arg(&c)
            .output()
            .expect("clang (with the wasm32-wasi target, wasi-libc and lld) must be installed");
        assert!(
            out.status.success(),
            "compiling {name}.c: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(&wasm).unwrap()
    }

    /// A definition whose module is the C program `src`.
    pub fn c_def(&self, name: &str, src: &str, spec: &Spec) -> Definition {
        let module = self.c_module(name, src);
        self.def_with_module(name, &module, spec)
    }
}
