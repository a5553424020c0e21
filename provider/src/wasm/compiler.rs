//! Compiling untrusted modules in a child process that can be killed and whose memory is bounded.
//!
//! Cranelift cannot be cancelled, and a hostile module (say 28 MB holding 300,000
//! functions) can keep it busy for minutes while it allocates gigabytes. Inside the node
//! that would outlive the compile timeout and the node's memory promise, so every compile
//! runs in a separate process: the provider's own executable started with [`WORKER_ARG`].
//! The parent writes the module bytes to the worker's stdin, reads the serialised artifact
//! from its stdout (capped), samples its resident memory every few milliseconds and kills it
//! when it passes [`WasmConfig::compile_memory`] or the compile timeout. A killed compile
//! gives back all its memory and CPU at once.
//!
//! The worker builds its engine with the same `engine_config` as the parent, so the
//! artifact is one the parent's engine accepts; it is then loaded through the workspace's
//! single `unsafe` deserialisation function (`cache::deserialize_trusted`), because the
//! bytes come from the provider's own code over a private pipe, exactly as trustworthy as
//! an in-process compile. The worker also watches its stdin: the parent holds it open
//! until the compile ends, so a worker whose parent died sees end-of-file and exits.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wasmtime::Engine;

use super::cache::ArtifactKind;
use super::{WasmConfig, engine_config};

/// The first argument that makes a provider executable act as a compile worker.
pub const WORKER_ARG: &str = "__pinfold-compile-wasm";

/// How often the parent samples the worker's resident memory.
const SAMPLE_EVERY: Duration = Duration::from_millis(5);
/// Most bytes of a worker's error message kept.
const MAX_ERROR_BYTES: u64 = 16 * 1024;

/// Why a compile produced no artifact; the text is a rejection reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// Wasmtime refused the module.
    #[error("{0}")]
    Invalid(String),
    /// The compile went past the timeout and was killed.
    #[error("compiling the module took longer than {0} ms and was stopped")]
    Timeout(u128),
    /// The compile went past the memory bound and was killed.
    #[error("compiling the module needed more than {0} bytes of memory and was stopped")]
    Memory(u64),
    /// The worker could not be run or failed in some other way (the provider's fault).
    #[error("the compile worker failed: {0}")]
    Worker(String),
}

/// What the worker needs to know to build the same engine as the parent.
#[derive(Debug, Clone)]
struct Params {
    kind: ArtifactKind,
    metered: bool,
    max_wasm_stack: usize,
    pooling: bool,
    max_concurrent: u32,
    max_memory: u64,
    max_module_bytes: u64,
}

impl Params {
    fn to_args(&self) -> Vec<String> {
        vec![
            WORKER_ARG.to_string(),
            self.kind.as_str().to_string(),
            u8::from(self.metered).to_string(),
            self.max_wasm_stack.to_string(),
            u8::from(self.pooling).to_string(),
            self.max_concurrent.to_string(),
            self.max_memory.to_string(),
            self.max_module_bytes.to_string(),
        ]
    }

    fn from_args(args: &[String]) -> Option<Params> {
        let [kind, metered, stack, pooling, conc, mem, module] = args else {
            return None;
        };
        Some(Params {
            kind: match kind.as_str() {
                "module" => ArtifactKind::Module,
                "component" => ArtifactKind::Component,
                _ => return None,
            },
            metered: metered == "1",
            max_wasm_stack: stack.parse().ok()?,
            pooling: pooling == "1",
            max_concurrent: conc.parse().ok()?,
            max_memory: mem.parse().ok()?,
            max_module_bytes: module.parse().ok()?,
        })
    }

    fn wasm_config(&self) -> WasmConfig {
        WasmConfig {
            max_wasm_stack: self.max_wasm_stack,
            pooling: self.pooling,
            max_concurrent: self.max_concurrent,
            max_memory: self.max_memory,
            max_module_bytes: self.max_module_bytes,
            ..WasmConfig::default()
        }
    }
}

/// Runs the compile worker and exits if this process was started as one; returns otherwise.
///
/// Every binary that creates a [`super::WasmExecutor`] with the default
/// [`WasmConfig::compile_worker`] (its own executable) calls this first thing in `main`.
pub fn dispatch_worker() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(WORKER_ARG) {
        std::process::exit(worker_main(&args[1..]));
    }
}

/// The worker: reads `u64 length ‖ module` from stdin, writes the artifact to stdout.
/// Exit 0 with the artifact, 1 with a wasmtime error on stderr, 2 for a protocol error.
fn worker_main(args: &[String]) -> i32 {
    let Some(p) = Params::from_args(args) else {
        eprintln!("bad compile worker arguments");
        return 2;
    };
    let mut stdin = std::io::stdin().lock();
    let mut len = [0u8; 8];
    if stdin.read_exact(&mut len).is_err() {
        return 2;
    }
    let len = u64::from_le_bytes(len);
    if len > p.max_module_bytes {
        eprintln!("module larger than the maximum");
        return 2;
    }
    let mut bytes = vec![0u8; len as usize];
    if stdin.read_exact(&mut bytes).is_err() {
        return 2;
    }
    drop(stdin);
    // The parent keeps our stdin open until it has our answer; end-of-file before that
    // means it died, and nobody wants this compile any more.
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        while let Ok(n) = std::io::stdin().read(&mut sink) {
            if n == 0 {
                break;
            }
        }
        std::process::exit(3);
    });
    let cfg = p.wasm_config();
    let engine = match Engine::new(&engine_config(&cfg, p.metered)) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("creating the engine: {e:#}");
            return 2;
        }
    };
    let compiled = match p.kind {
        ArtifactKind::Module => engine.precompile_module(&bytes),
        ArtifactKind::Component => engine.precompile_component(&bytes),
    };
    match compiled {
        Ok(artifact) => {
            let mut out = std::io::stdout().lock();
            if out.write_all(&artifact).and_then(|()| out.flush()).is_err() {
                return 2;
            }
            0
        }
        Err(e) => {
            eprint!("invalid {}: {e:#}", p.kind.as_str());
            1
        }
    }
}

/// Where and how compiles run.
#[derive(Debug, Clone)]
pub(super) struct Compiler {
    pub(super) program: PathBuf,
    pub(super) timeout: Duration,
    pub(super) memory: u64,
    pub(super) max_artifact: u64,
}

impl Compiler {
    /// Compiles `bytes` in a worker; blocking (call it from a blocking thread).
    pub(super) fn compile(
        &self,
        cfg: &WasmConfig,
        metered: bool,
        kind: ArtifactKind,
        bytes: &[u8],
    ) -> Result<Vec<u8>, CompileError> {
        let params = Params {
            kind,
            metered,
            max_wasm_stack: cfg.max_wasm_stack,
            pooling: cfg.pooling,
            max_concurrent: cfg.max_concurrent,
            max_memory: cfg.max_memory,
            max_module_bytes: cfg.max_module_bytes,
        };
        let deadline = Instant::now() + self.timeout;
        let mut child = spawn(&self.program, &params.to_args())
            .map_err(|e| CompileError::Worker(format!("{}: {e}", self.program.display())))?;
        let guard = KillOnDrop(&mut child);
        let mut stdin = guard.0.stdin.take();
        let stdout = guard.0.stdout.take();
        let stderr = guard.0.stderr.take();
        let pid = guard.0.id();
        // Stdout and stderr are drained on their own threads so that a worker blocked on a
        // full pipe never looks like a slow compile.
        let max_artifact = self.max_artifact;
        let out_reader = std::thread::spawn(move || read_capped(stdout, max_artifact));
        let err_reader = std::thread::spawn(move || read_capped(stderr, MAX_ERROR_BYTES));
        if let Some(w) = stdin.as_mut() {
            let len = (bytes.len() as u64).to_le_bytes();
            // A worker that died early closes the pipe; its exit status says why.
            let _ = w.write_all(&len).and_then(|()| w.write_all(bytes));
        }
        let status = loop {
            match guard.0.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => return Err(CompileError::Worker(format!("waiting for it: {e}"))),
            }
            if Instant::now() >= deadline {
                return Err(CompileError::Timeout(self.timeout.as_millis()));
            }
            if resident_bytes(pid).is_some_and(|rss| rss > self.memory) {
                return Err(CompileError::Memory(self.memory));
            }
            std::thread::sleep(SAMPLE_EVERY);
        };
        drop(stdin);
        let out = out_reader.join().unwrap_or(None);
        let err = err_reader.join().unwrap_or(None).unwrap_or_default();
        let err = String::from_utf8_lossy(&err).trim().to_string();
        match status.code() {
            Some(0) => out.ok_or_else(|| {
                CompileError::Worker(format!("artifact larger than {max_artifact} bytes"))
            }),
            Some(1) => Err(CompileError::Invalid(err)),
            _ => Err(CompileError::Worker(if err.is_empty() {
                format!("exited with {status}")
            } else {
                format!("exited with {status}: {err}")
            })),
        }
    }
}

fn spawn(program: &Path, args: &[String]) -> std::io::Result<Child> {
    Command::new(program)
        .args(args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

/// Kills and reaps the worker however the compile ends.
struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn read_capped(r: Option<impl Read>, cap: u64) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    r?.take(cap + 1).read_to_end(&mut buf).ok()?;
    (buf.len() as u64 <= cap).then_some(buf)
}

/// Resident memory of a process in bytes, from `/proc/PID/status` (`VmRSS`).
pub(crate) fn resident_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
