//! The wasm executor: WASI preview-1 command modules and WASI 0.2 command components run
//! by wasmtime under hard limits.
//!
//! Both kinds share everything below (engines, stores, limiter, epoch callback, fuel,
//! stdio pipes, output watch, caches); they differ only in the linker (`wasmtime_wasi::p1`
//! or `p2`) and the entry point (`_start` or `wasi:cli/run`). The kind is read from the
//! bytes' header, not taken from the definition. `component.rs` holds what components add.
//!
//! # Sandbox
//! A run sees exactly three preopened directories (`io.input` read-only, `io.output`
//! writable and empty at start, and a private empty scratch root at `/`, counted with the
//! outputs and never returned), the manifest's `env` and nothing inherited, argv made of
//! the definition name and the manifest's args with params substituted, an empty stdin,
//! and stdout/stderr captured in memory. No sockets, no other files.
//!
//! # Limits and how each one stops a run
//! * memory, tables, instances: a [`wasmtime::ResourceLimiter`] that refuses growth past
//!   `limits.memory` with an error (so `memory.grow` traps instead of returning -1) →
//!   `memory_exceeded`. `limits.memory` bounds the sum of all of a run's memories (a
//!   component may hold several core instances, each with its own).
//! * wall time: epoch interruption. One background thread per executor bumps every
//!   engine's epoch each millisecond; each store's epoch callback checks its deadline and
//!   interrupts → `timed_out`. Epochs do not fire inside host calls (a blocking read, a
//!   sleep), so the whole run is also wrapped in a tokio timeout of `timeout + grace`.
//! * fuel: when `limits.fuel` is set, or in deterministic mode, the run uses a metered
//!   engine; running out of fuel → `timed_out` (it is the deterministic CPU budget). Fuel
//!   consumed is reported as CPU used.
//! * stack: `max_wasm_stack`; overflowing traps → `trapped`.
//! * stdout/stderr: [`stdio::CappedPipe`] keeps what fits and traps the guest on the
//!   first byte past the cap → `output_exceeded`.
//! * output directory: the same background thread measures (by `lstat`, never following
//!   links) every running task's output directory every [`WasmConfig::watch_every`] ticks
//!   and flags the run when its bytes plus captured stdio exceed `limits.output` or its
//!   entries exceed [`WasmConfig::max_output_entries`]; the epoch callback then interrupts
//!   it → `output_exceeded`. **Overshoot bound:** the guest can write past the cap for at
//!   most one watch interval plus the rest of the host call in progress, and a single
//!   `fd_write` writes at most one guest buffer, which lives in guest memory, so at most
//!   `limits.memory` bytes. In numbers: `cap + limits.memory + (disk write rate ×
//!   watch interval)`; the integration test checks `cap + limits.memory + 16 MiB`.
//! * module size and compile time: [`WasmConfig::max_module_bytes`] and
//!   [`WasmConfig::compile_timeout`]; both → `rejected`. Cranelift cannot be cancelled,
//!   so a compile that times out keeps its blocking thread until it finishes.
//!
//! # Deterministic mode
//! `capabilities.deterministic` runs use the metered engine (fuel instead of epochs for
//! the CPU budget, NaN canonicalisation, deterministic relaxed SIMD; wasmtime is built
//! without the threads proposal), fixed clocks and randomness seeded from BLAKE3(definition
//! id ‖ input digest); see [`determinism`]. Epochs stay on only as the wall-clock backstop:
//! they can only ever end a run as `timed_out`, never change what a finished run computed.
//!
//! Its cost is NaN canonicalisation, not the executor: on the nbody example (200k steps,
//! `provider/benches/executor.rs`, two runs) bare wasmtime takes 19–29 ms, with only NaN
//! canonicalisation 106–107 ms, and the executor 24–33 ms non-deterministic vs 117–123 ms
//! deterministic. On x86-64 Cranelift wraps every scalar float op in a vector compare and
//! bitselect, lengthening the dependency chains. Canonicalising is what makes float results
//! bit-identical across CPU architectures (x86 and Arm produce NaNs with different sign
//! bits), so it stays on.
//!
//! # Speed
//! Compiled modules and components are cached on disk ([`ArtifactCache`], keyed by BLAKE3,
//! kind and engine) and in memory as `InstancePre`s / `CommandPre`s per engine, keyed by
//! the bytes' BLAKE3. Instances come from the pooling allocator (memory slots sized to
//! [`WasmConfig::max_memory`], enough core instances, memories and tables for every run to
//! be a component at its per-component maxima) and a semaphore with as many permits as
//! there are runs the pool can hold sits in front of it.

mod cache;
pub mod compiler;
mod component;
pub mod determinism;
mod detfs;
pub mod stdio;

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use task_defs::footprint::{self, Capability};
use task_defs::{RuntimeKind, RuntimeSpec};
use tokio::sync::Semaphore;
use wasmtime::component::ResourceTable;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, PoolingAllocationConfig,
    ResourceLimiter, Store, Trap, UpdateDeadline,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder, WasiView};

pub use cache::{Artifact, ArtifactCache, ArtifactKind, CacheError};
pub use compiler::{CompileError, WORKER_ARG, dispatch_worker};

use crate::executor::{Executor, Outcome, RunRequest, Status, Usage, output_digest};
use crate::fsio::{self, TreeCaps};
use stdio::CappedPipe;

/// Provider-side policy and sizing of the wasm executor.
#[derive(Debug, Clone)]
pub struct WasmConfig {
    /// Runs at once (semaphore permits and pooling-allocator slots per engine).
    pub max_concurrent: u32,
    /// Largest `limits.memory` accepted; also the size of each pool memory slot.
    pub max_memory: u64,
    /// Largest module accepted, in bytes.
    pub max_module_bytes: u64,
    /// Longest a module may take to compile; the compile worker is killed then.
    pub compile_timeout: Duration,
    /// Most resident memory one compile worker may use before it is killed.
    pub compile_memory: u64,
    /// Compiles at once (each in its own worker process).
    pub max_concurrent_compiles: u32,
    /// The executable started as compile worker (with [`WORKER_ARG`]): a binary whose
    /// `main` calls [`dispatch_worker`] first. Defaults to the current executable.
    pub compile_worker: PathBuf,
    /// Most native stack wasm may use, in bytes.
    pub max_wasm_stack: usize,
    /// Cap on each of stdout and stderr held in memory (further capped by `limits.output`).
    pub max_stdio_bytes: u64,
    /// Most entries (files and directories) a run may create in its output directory.
    pub max_output_entries: u64,
    /// Extra time after `limits.timeout` before the outer wall-clock backstop fires.
    pub timeout_grace: Duration,
    /// Epoch tick of the background thread.
    pub tick: Duration,
    /// The output directories are measured at most every this many ticks (less often when
    /// a round of measuring takes long; see the watch thread).
    pub watch_every: u32,
    /// Where each run's scratch root (the writable `/`) is created; `None` is the system's
    /// temporary directory. The node puts it in its work directory, on the disk it admits
    /// jobs against.
    pub scratch_parent: Option<PathBuf>,
    /// Where compiled modules are cached; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Use the pooling instance allocator (otherwise on-demand).
    pub pooling: bool,
}

impl Default for WasmConfig {
    fn default() -> Self {
        WasmConfig {
            max_concurrent: 4,
            max_memory: 1 << 30,
            max_module_bytes: 64 << 20,
            compile_timeout: Duration::from_secs(30),
            compile_memory: 1 << 30,
            max_concurrent_compiles: 2,
            compile_worker: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("provider")),
            max_wasm_stack: 512 << 10,
            max_stdio_bytes: 4 << 20,
            max_output_entries: 10_000,
            timeout_grace: Duration::from_millis(1000),
            tick: Duration::from_millis(1),
            watch_every: 2,
            scratch_parent: None,
            cache_dir: None,
            pooling: true,
        }
    }
}

/// Errors creating an executor.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// Wasmtime refused the engine configuration.
    #[error("creating the wasm engine: {0:#}")]
    Engine(wasmtime::Error),
    /// The artifact cache could not be opened.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The background thread could not start.
    #[error("starting the epoch thread: {0}")]
    Thread(std::io::Error),
}

/// Most table elements a guest may grow a table to.
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Most tables per module.
const MAX_TABLES: u32 = 4;
/// Most core instances per component. Toolchain output has a handful (the program, the
/// preview-1 adapter, shim and fixup modules); 16 leaves room without letting a component
/// fan out.
const MAX_COMPONENT_CORE_INSTANCES: u32 = 16;
/// Most memories per component (the program's and the adapter's, with room to spare).
const MAX_COMPONENT_MEMORIES: u32 = 4;
/// Most tables per component (shim modules each bring one).
const MAX_COMPONENT_TABLES: u32 = 8;
/// Most live resources and handles one run may hold, modules and components alike: the
/// host's WASI resource table (open files and directories, streams, pollables) and, for
/// components, wasmtime's component handle tables. An open file or directory is a host
/// file descriptor, and all of it lives in host memory outside `limits.memory`; wasmtime's
/// defaults (1,000,000 and 100,000) let one guest exhaust the node's descriptors (a module
/// opened ~20,000) or use hundreds of MiB. Real programs hold a few dozen. Past the cap the
/// guest traps (`trapped`, the reason naming the cap), so a node running
/// [`WasmConfig::max_concurrent`] tasks holds at most that many times this cap for guests.
pub const MAX_HANDLES: usize = 1_024;
/// Time allowed beyond the compile timeout for starting the worker and loading its artifact.
const COMPILE_MARGIN: Duration = Duration::from_secs(5);
/// Most `InstancePre`s and `CommandPre`s kept in memory per engine.
const MAX_CACHED_PRES: usize = 256;
/// The epoch callback yields to the async runtime every this many ticks, so that other
/// tasks on the same worker thread (and the outer timeout) get to run.
const YIELD_EVERY: u64 = 10;

const CAUSE_NONE: u8 = 0;
const CAUSE_TIMEOUT: u8 = 1;
const CAUSE_MEMORY: u8 = 2;
const CAUSE_OUTPUT: u8 = 3;

/// Why a run was stopped by the host; the first cause wins.
#[derive(Debug, Default)]
struct Flags(AtomicU8);

impl Flags {
    fn set(&self, cause: u8) {
        let _ = self
            .0
            .compare_exchange(CAUSE_NONE, cause, Ordering::AcqRel, Ordering::Acquire);
    }
    fn get(&self) -> u8 {
        self.0.load(Ordering::Acquire)
    }
}

/// Store data of one run: the WASI state (`WasiP1Ctx` for modules, [`component::P2`] for
/// components) and the limiter.
struct Host<W> {
    wasi: W,
    limiter: Limiter,
    /// The deterministic filesystem view, for deterministic preview-1 runs.
    det: Option<detfs::DetFs>,
}

struct Limiter {
    /// `limits.memory`: the most all of the run's memories may hold together.
    memory: usize,
    /// Bytes held by all memories now; wasmtime reports each memory's creation as growth
    /// from 0, so this is the exact sum.
    used: usize,
    peak: usize,
    instances: usize,
    tables: usize,
    memories: usize,
    flags: Arc<Flags>,
}

impl Limiter {
    fn new(memory: u64, kind: ArtifactKind, flags: Arc<Flags>) -> Limiter {
        let (instances, tables, memories) = match kind {
            // A deterministic run adds one memory-less, table-less shim instance (`detfs`).
            ArtifactKind::Module => (2, MAX_TABLES, 1),
            ArtifactKind::Component => (
                MAX_COMPONENT_CORE_INSTANCES,
                MAX_COMPONENT_TABLES,
                MAX_COMPONENT_MEMORIES,
            ),
        };
        Limiter {
            memory: usize::try_from(memory).unwrap_or(usize::MAX),
            used: 0,
            peak: 0,
            instances: instances as usize,
            tables: tables as usize,
            memories: memories as usize,
            flags,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Past the memory's own maximum wasmtime fails the growth after asking us; refuse
        // it here so that `used` never counts bytes that were not granted.
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.memory {
            self.flags.set(CAUSE_MEMORY);
            // An error (not `Ok(false)`) traps the guest: a hostile loop that ignores a
            // failed `memory.grow` would otherwise spin until its timeout.
            return Err(wasmtime::format_err!(
                "memory limit of {} bytes exceeded",
                self.memory
            ));
        }
        self.used = total;
        self.peak = self.peak.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.flags.set(CAUSE_MEMORY);
            return Err(wasmtime::format_err!(
                "table limit of {MAX_TABLE_ELEMENTS} elements exceeded"
            ));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instances
    }
    fn tables(&self) -> usize {
        self.tables
    }
    fn memories(&self) -> usize {
        self.memories
    }
}

/// A module or component compiled, linked and ready to instantiate.
#[derive(Clone)]
enum Prepared {
    Module(InstancePre<Host<WasiP1Ctx>>),
    Component(component::Prepared),
}

/// One engine configuration with its linkers and compiled modules and components.
struct Flavor {
    engine: Engine,
    linker: Linker<Host<WasiP1Ctx>>,
    /// `linker` with the deterministic filesystem view in front (metered flavour only).
    det_linker: Option<Linker<Host<WasiP1Ctx>>>,
    component_linker: wasmtime::component::Linker<Host<component::P2>>,
    fingerprint: String,
    /// Keyed by the bytes' BLAKE3 and whether the deterministic linker made it.
    pres: Mutex<HashMap<([u8; 32], bool), Prepared>>,
}

/// The wasmtime configuration of one engine flavour. The compile worker builds its engine
/// with this same function, so that its artifacts load into the parent's engine.
pub(crate) fn engine_config(cfg: &WasmConfig, metered: bool) -> Config {
    let mut c = Config::new();
    c.epoch_interruption(true)
        .consume_fuel(metered)
        .cranelift_nan_canonicalization(metered)
        .relaxed_simd_deterministic(metered)
        .max_wasm_stack(cfg.max_wasm_stack)
        // Fibres need the wasm stack plus room for host calls made from it.
        .async_stack_size(cfg.max_wasm_stack + (1 << 20));
    if cfg.pooling {
        // Sized so that every permitted run can be a component at its maxima: the
        // semaphore then guarantees that instantiation never waits on or fails for a slot.
        let n = cfg.max_concurrent;
        let mut p = PoolingAllocationConfig::default();
        p.total_core_instances(n * MAX_COMPONENT_CORE_INSTANCES)
            .total_memories(n * MAX_COMPONENT_MEMORIES)
            .total_tables(n * MAX_COMPONENT_TABLES)
            // Two per run: a deterministic run makes one nested call through the `detfs` shim.
            .total_stacks(n * 2)
            .total_component_instances(n)
            .max_core_instances_per_component(MAX_COMPONENT_CORE_INSTANCES)
            .max_memories_per_component(MAX_COMPONENT_MEMORIES)
            .max_tables_per_component(MAX_COMPONENT_TABLES)
            .max_tables_per_module(MAX_TABLES)
            .max_memories_per_module(1)
            .table_elements(MAX_TABLE_ELEMENTS)
            .max_memory_size(usize::try_from(cfg.max_memory).unwrap_or(usize::MAX));
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    c
}

impl Flavor {
    fn new(cfg: &WasmConfig, metered: bool) -> Result<Flavor, WasmError> {
        let c = engine_config(cfg, metered);
        let engine = Engine::new(&c).map_err(WasmError::Engine)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |h: &mut Host<WasiP1Ctx>| &mut h.wasi)
            .map_err(WasmError::Engine)?;
        let det_linker = if metered {
            let mut l = linker.clone();
            detfs::add_overrides(&mut l, linker.clone()).map_err(WasmError::Engine)?;
            Some(l)
        } else {
            None
        };
        let mut component_linker = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker).map_err(WasmError::Engine)?;
        // DefaultHasher::new() has fixed keys, so this is stable for one provider build;
        // wasmtime's own artifact check covers anything that changes across builds.
        let mut h = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(Flavor {
            engine,
            linker,
            det_linker,
            component_linker,
            fingerprint: format!("{:016x}", h.finish()),
            pres: Mutex::new(HashMap::new()),
        })
    }
}

/// What the background thread checks for one running task.
struct Watch {
    /// The output directory and the scratch root: both count against `limits.output`.
    dirs: Vec<PathBuf>,
    max_bytes: u64,
    max_entries: u64,
    stdout: CappedPipe,
    stderr: CappedPipe,
    flags: Arc<Flags>,
}

impl Watch {
    fn check(&self) {
        if self.flags.get() != CAUSE_NONE {
            return;
        }
        let stdio = (self.stdout.len() + self.stderr.len()) as u64;
        let cap = TreeCaps {
            bytes: self.max_bytes.saturating_sub(stdio),
            entries: self.max_entries,
        };
        let mut total = fsio::TreeUsage::default();
        for dir in &self.dirs {
            let u = fsio::tree_usage(dir, cap);
            total.apparent = total.apparent.saturating_add(u.apparent);
            total.allocated = total.allocated.saturating_add(u.allocated);
            total.entries = total.entries.saturating_add(u.entries);
            total.beyond_limits |= u.beyond_limits;
            if total.over(cap) {
                self.flags.set(CAUSE_OUTPUT);
                return;
            }
        }
    }
}

/// The output watch: measures every running task's output directory, on its own thread so
/// that a slow walk of a big tree never delays the epoch ticks that enforce time limits.
/// It waits at least `interval` between rounds and at least four times as long as the last
/// round took, so walking hostile trees costs at most a fifth of one core.
fn spawn_watch_thread(
    watches: WatchList,
    stop: Arc<AtomicBool>,
    interval: Duration,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("pinfold-watch".into())
        .spawn(move || {
            let mut pause = interval;
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(pause);
                let list: Vec<Arc<Watch>> = lock(&watches).clone();
                let t = Instant::now();
                for w in list {
                    w.check();
                }
                pause = interval.max(t.elapsed() * 4);
            }
        })
        .map(|_| ())
}

type WatchList = Arc<Mutex<Vec<Arc<Watch>>>>;

/// Removes a watch from the list when the run ends, however it ends.
struct WatchGuard {
    list: WatchList,
    watch: Arc<Watch>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let mut l = self.list.lock().unwrap_or_else(|e| e.into_inner());
        l.retain(|w| !Arc::ptr_eq(w, &self.watch));
    }
}

struct Inner {
    cfg: WasmConfig,
    standard: Flavor,
    metered: Flavor,
    cache: Option<ArtifactCache>,
    permits: Semaphore,
    compile_permits: Semaphore,
    compiler: compiler::Compiler,
    watches: WatchList,
    stop: Arc<AtomicBool>,
}

/// Runs wasm definitions; cheap to clone, all clones share engines, caches and limits.
#[derive(Clone)]
pub struct WasmExecutor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WasmExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmExecutor")
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl WasmExecutor {
    /// Creates the engines, opens the artifact cache and starts the epoch thread.
    pub fn new(cfg: WasmConfig) -> Result<Self, WasmError> {
        let standard = Flavor::new(&cfg, false)?;
        let metered = Flavor::new(&cfg, true)?;
        let cache = match &cfg.cache_dir {
            Some(d) => Some(ArtifactCache::open(
                d,
                cfg.max_module_bytes.saturating_mul(16),
            )?),
            None => None,
        };
        let watches: WatchList = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let engines = [standard.engine.clone(), metered.engine.clone()];
        let (thread_stop, tick) = (stop.clone(), cfg.tick);
        std::thread::Builder::new()
            .name("pinfold-epoch".into())
            .spawn(move || {
                while !thread_stop.load(Ordering::Acquire) {
                    std::thread::sleep(tick);
                    for e in &engines {
                        e.increment_epoch();
                    }
                }
            })
            .map_err(WasmError::Thread)?;
        spawn_watch_thread(
            watches.clone(),
            stop.clone(),
            cfg.tick * cfg.watch_every.max(1),
        )
        .map_err(WasmError::Thread)?;
        Ok(WasmExecutor {
            inner: Arc::new(Inner {
                permits: Semaphore::new(cfg.max_concurrent as usize),
                compile_permits: Semaphore::new(cfg.max_concurrent_compiles.max(1) as usize),
                compiler: compiler::Compiler {
                    program: cfg.compile_worker.clone(),
                    timeout: cfg.compile_timeout,
                    memory: cfg.compile_memory,
                    max_artifact: cfg.max_module_bytes.saturating_mul(16),
                },
                cfg,
                standard,
                metered,
                cache,
                watches,
                stop,
            }),
        })
    }

    /// The configuration this executor was created with.
    pub fn config(&self) -> &WasmConfig {
        &self.inner.cfg
    }

    /// A fresh private (0700) scratch directory for one run, removed when dropped.
    fn scratch_dir(&self) -> std::io::Result<Scratch> {
        let parent = (self.inner.cfg.scratch_parent.clone()).unwrap_or_else(std::env::temp_dir);
        Scratch::create(&parent)
    }

    /// Forgets the in-memory `InstancePre`s (the disk cache stays), e.g. to measure cold starts.
    pub fn forget_compiled(&self) {
        lock(&self.inner.standard.pres).clear();
        lock(&self.inner.metered.pres).clear();
    }

    /// Finds or builds the `InstancePre` of a module or the `CommandPre` of a component;
    /// the error is a rejection reason.
    async fn prepare(
        &self,
        metered: bool,
        deterministic: bool,
        kind: ArtifactKind,
        bytes: &[u8],
    ) -> Result<(Prepared, &'static str), String> {
        let flavor = self.flavor(metered);
        let hash = blake3::hash(bytes);
        if let Some(p) = lock(&flavor.pres).get(&(*hash.as_bytes(), deterministic)) {
            return Ok((p.clone(), "memory"));
        }
        // One compile at a time per permit: each is a worker process of up to
        // `compile_memory`, and waiting for a permit counts against the compile timeout.
        let limit = self.inner.cfg.compile_timeout;
        let Ok(Ok(_compile_permit)) =
            tokio::time::timeout(limit, self.inner.compile_permits.acquire()).await
        else {
            return Err(format!(
                "no compile slot became free within {} ms",
                limit.as_millis()
            ));
        };
        let engine = flavor.engine.clone();
        let cache = self.inner.cache.clone();
        let key = ArtifactCache::key(&hash, kind, &flavor.fingerprint);
        let owned = bytes.to_vec();
        let compiler = self.inner.compiler.clone();
        let cfg = self.inner.cfg.clone();
        let job =
            tokio::task::spawn_blocking(move || -> Result<(Artifact, &'static str), String> {
                if let Some(a) = cache.as_ref().and_then(|c| c.load(&engine, &key, kind)) {
                    return Ok((a, "disk"));
                }
                let serialized = compiler
                    .compile(&cfg, metered, kind, &owned)
                    .map_err(|e| e.to_string())?;
                let artifact = cache::deserialize_trusted(
                    &engine,
                    &serialized,
                    kind,
                    cache::Provenance::Worker,
                )
                .map_err(|e| format!("loading the compiled module failed: {e:#}"))?;
                if let Some(c) = &cache {
                    // A failed cache write only costs a recompile next time.
                    let _ = c.store(&key, &serialized);
                }
                Ok((artifact, "compiled"))
            });
        // The worker is killed at `limit`; the margin covers starting it and loading the
        // artifact, so this outer bound only ever fires if something else hangs.
        let (artifact, source) = match tokio::time::timeout(limit + COMPILE_MARGIN, job).await {
            Err(_) => {
                return Err(format!(
                    "compiling the module took longer than {} ms",
                    limit.as_millis()
                ));
            }
            Ok(Err(e)) => return Err(format!("compiling the module failed: {e}")),
            Ok(Ok(r)) => r?,
        };
        let prepared = match artifact {
            Artifact::Module(module) => {
                match module.get_export("_start") {
                    Some(wasmtime::ExternType::Func(_)) => {}
                    _ => return Err("the module exports no _start function".into()),
                }
                let linker = match (&flavor.det_linker, deterministic) {
                    (Some(det), true) => det,
                    _ => &flavor.linker,
                };
                Prepared::Module(
                    linker
                        .instantiate_pre(&module)
                        .map_err(|e| format!("cannot link the module: {e:#}"))?,
                )
            }
            Artifact::Component(c) => Prepared::Component(component::Prepared::new(
                &flavor.engine,
                &flavor.component_linker,
                &c,
            )?),
        };
        let mut pres = lock(&flavor.pres);
        if pres.len() >= MAX_CACHED_PRES {
            pres.clear();
        }
        pres.insert((*hash.as_bytes(), deterministic), prepared.clone());
        Ok((prepared, source))
    }

    fn flavor(&self, metered: bool) -> &Flavor {
        if metered {
            &self.inner.metered
        } else {
            &self.inner.standard
        }
    }

    async fn run_inner(&self, req: RunRequest) -> Outcome {
        let def = &req.definition;
        let m = &def.manifest;
        let cfg = &self.inner.cfg;
        let RuntimeSpec::Wasm { module } = &m.runtime.spec else {
            return Outcome::rejected("not a wasm definition");
        };
        let Some(bytes) = def.files.get(module) else {
            return Outcome::rejected(format!("module {module:?} is not in the definition"));
        };
        // From the bytes, not `def.footprint`: what runs decides how it runs.
        let kind = artifact_kind(bytes);
        if bytes.len() as u64 > cfg.max_module_bytes {
            return Outcome::rejected(format!(
                "module is {} bytes, more than this provider's maximum {}",
                bytes.len(),
                cfg.max_module_bytes
            ));
        }
        if m.limits.memory > cfg.max_memory {
            return Outcome::rejected(format!(
                "limits.memory {} exceeds this provider's maximum {}",
                m.limits.memory, cfg.max_memory
            ));
        }
        let args = match crate::executor::admit_request(&req) {
            Ok(a) => a,
            Err(reason) => return Outcome::rejected(reason),
        };
        let deterministic = m.capabilities.deterministic;
        let metered = deterministic || m.limits.fuel.is_some();

        let Ok(_permit) = self.inner.permits.acquire().await else {
            return Outcome::rejected("the executor is shutting down");
        };
        let (prepared, source) = match self.prepare(metered, deterministic, kind, bytes).await {
            Ok(p) => p,
            Err(reason) => return Outcome::rejected(reason),
        };
        if let Prepared::Component(c) = &prepared {
            if let Err(reason) = c.check_imports(&allowed_capabilities(m)) {
                return Outcome::rejected(reason);
            }
            // Preview 2's filesystem reports host times, inodes, sizes and listing order,
            // which only the preview-1 path virtualises (see `detfs`); refusing is honest,
            // running would let two providers disagree.
            if deterministic && let Some(name) = c.filesystem_import() {
                return Outcome::rejected(format!(
                    "deterministic mode does not support filesystem access from components \
                     yet (the component imports {name}); use a preview-1 module"
                ));
            }
        }

        let stdio_cap = m.limits.output.min(cfg.max_stdio_bytes) as usize;
        let (stdout, stderr) = CappedPipe::pair(stdio_cap);
        let mut b = WasiCtxBuilder::new();
        let mut argv = vec![m.name.clone()];
        argv.extend(args);
        b.args(&argv)
            .stdin(MemoryInputPipe::new(Bytes::new()))
            .stdout(stdout.clone())
            .stderr(stderr.clone());
        for (k, v) in &m.capabilities.env {
            b.env(k, v);
        }
        // Wasm has no tmpfs to put a file in; the WASI environment lives only in this
        // process's memory (and the guest's), so secrets go there, under declared names.
        for (k, v) in &req.secrets {
            match v.expose_str() {
                Some(text) if !text.contains('\0') => {
                    b.env(k, text);
                }
                _ => {
                    return Outcome::rejected(format!(
                        "secret {k:?} is not UTF-8 text without NUL, as an environment value must be"
                    ));
                }
            }
        }
        if let Err(e) = b.preopened_dir(&req.input_dir, &m.io.input, FsPerms::ReadOnly) {
            return Outcome::rejected(format!("opening the input directory: {e:#}"));
        }
        if let Err(e) = b.preopened_dir(&req.output_dir, &m.io.output, FsPerms::ReadWrite) {
            return Outcome::rejected(format!("opening the output directory: {e:#}"));
        }
        // A writable scratch root at `/`, so that ordinary programs (relative paths against
        // the working directory `/`, temporary files) run unchanged. It is counted with the
        // outputs against `limits.output` while the guest runs, never returned, and removed
        // when the run ends. Preopened last, so the input and output keep descriptors 3 and 4.
        let scratch = match self.scratch_dir() {
            Ok(d) => d,
            Err(e) => return Outcome::rejected(format!("creating the scratch directory: {e}")),
        };
        if let Err(e) = b.preopened_dir(scratch.path(), "/", FsPerms::ReadWrite) {
            return Outcome::rejected(format!("opening the scratch directory: {e:#}"));
        }
        b.max_random_size(1 << 20);
        if deterministic {
            let input = match fsio::collect_outputs(
                &req.input_dir,
                None,
                TreeCaps {
                    bytes: u64::MAX,
                    entries: u64::MAX,
                },
            ) {
                Ok(c) => output_digest(&c.files, b""),
                Err(e) => return Outcome::rejected(format!("hashing the inputs: {e}")),
            };
            let seed = determinism::seed(&def.id.to_string(), &input);
            b.wall_clock(determinism::FixedWallClock::default())
                .monotonic_clock(determinism::FixedMonotonicClock::default())
                .secure_random(determinism::SeededRng::new("pinfold secure_random", &seed))
                .insecure_random(determinism::SeededRng::new(
                    "pinfold insecure_random",
                    &seed,
                ))
                .insecure_random_seed(u128::from_le_bytes(
                    seed[..16].try_into().unwrap_or_default(),
                ));
        }

        let flags = Arc::new(Flags::default());
        let limiter = Limiter::new(m.limits.memory, kind, flags.clone());
        let fuel_budget = m.limits.fuel.unwrap_or(u64::MAX);
        let timeout = Duration::from_millis(m.limits.timeout_ms);
        let backstop = timeout + cfg.timeout_grace;
        let started = Instant::now();
        let deadline = started + timeout;
        let engine = &self.flavor(metered).engine;
        let meter = Meter {
            metered,
            fuel_budget,
            deadline,
            flags: flags.clone(),
        };

        let _watch = {
            let watch = Arc::new(Watch {
                dirs: vec![req.output_dir.clone(), scratch.path().to_path_buf()],
                max_bytes: m.limits.output,
                max_entries: cfg.max_output_entries,
                stdout: stdout.clone(),
                stderr: stderr.clone(),
                flags: flags.clone(),
            });
            lock(&self.inner.watches).push(watch.clone());
            WatchGuard {
                list: self.inner.watches.clone(),
                watch,
            }
        };

        // The two arms differ only in the WASI state and the entry point; the store
        // (limiter, fuel, epoch deadline) and the backstop are the same.
        let (result, fuel, peak_memory) = match prepared {
            Prepared::Module(pre) => {
                let mut wasi = b.build_p1();
                wasi.ctx().table.set_max_capacity(MAX_HANDLES);
                let det = deterministic
                    .then(|| detfs::DetFs::new(&[&req.input_dir, &req.output_dir, scratch.path()]));
                let mut store = match meter.store(engine, wasi, limiter, det) {
                    Ok(s) => s,
                    Err(reason) => return Outcome::rejected(reason),
                };
                let run = async {
                    let instance = pre.instantiate_async(&mut store).await?;
                    let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                    start.call_async(&mut store, ()).await
                };
                let result = tokio::time::timeout(backstop, run).await;
                let (fuel, peak) = meter.usage(&store);
                (result, fuel, peak)
            }
            Prepared::Component(c) => {
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_HANDLES);
                let wasi = component::P2 {
                    ctx: b.build(),
                    table,
                };
                let mut store = match meter.store(engine, wasi, limiter, None) {
                    Ok(s) => s,
                    Err(reason) => return Outcome::rejected(reason),
                };
                store.set_max_component_handles(MAX_HANDLES);
                let result =
                    tokio::time::timeout(backstop, component::run(&c.pre, &mut store)).await;
                let (fuel, peak) = meter.usage(&store);
                (result, fuel, peak)
            }
        };
        let wall = started.elapsed();
        drop(_watch);

        let (mut status, mut reason, mut exit_code) = match result {
            Err(_) => {
                flags.set(CAUSE_TIMEOUT);
                (
                    Status::TimedOut,
                    Some(format!(
                        "wall-clock limit of {} ms reached inside a host call",
                        m.limits.timeout_ms
                    )),
                    None,
                )
            }
            Ok(r) => classify(r, &flags, m, fuel_budget),
        };
        if status != Status::TimedOut
            && status != Status::MemoryExceeded
            && (stdout.truncated() || stderr.truncated())
        {
            status = Status::OutputExceeded;
            reason = Some(format!(
                "stdout and stderr together exceeded {stdio_cap} bytes"
            ));
            exit_code = None;
        }

        let out = stdout.contents();
        let err = stderr.contents();
        let caps = TreeCaps {
            bytes: m
                .limits
                .output
                .saturating_sub((out.len() + err.len()) as u64),
            entries: cfg.max_output_entries,
        };
        // Collecting is part of the run's time: a guest that leaves thousands of files
        // must not stretch its limit, and the walk runs off the async workers.
        let collect_deadline = deadline + cfg.timeout_grace;
        let out_dir = req.output_dir.clone();
        let collected = blocking(move || {
            fsio::collect_outputs_until(&out_dir, None, caps, Some(collect_deadline))
        })
        .await;
        let collected = match collected {
            Ok(Ok(c)) => c,
            Ok(Err(fsio::FsError::Deadline)) => {
                let mut o = Outcome::rejected(format!(
                    "the wall-clock limit of {} ms passed while collecting the outputs",
                    m.limits.timeout_ms
                ));
                o.status = Status::TimedOut;
                o.usage.measured.wall_us =
                    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                return o;
            }
            Ok(Err(e)) => {
                let mut o = Outcome::rejected(format!("collecting outputs failed: {e}"));
                o.status = Status::OutputExceeded;
                return o;
            }
            Err(e) => return Outcome::rejected(format!("collecting outputs failed: {e}")),
        };
        if collected.exceeded && matches!(status, Status::Succeeded | Status::Failed) {
            status = Status::OutputExceeded;
            reason = Some(format!(
                "output over the limits: {}",
                collected
                    .exceeded_by
                    .as_deref()
                    .unwrap_or("the output directory is over its caps")
            ));
            exit_code = None;
        }
        Outcome {
            status,
            reason,
            exit_code,
            outputs: output_digest(&collected.files, &out),
            stdout: out,
            stdout_truncated: stdout.truncated(),
            stderr: err,
            stderr_truncated: stderr.truncated(),
            files: collected.files,
            dropped: collected.dropped,
            usage: Usage {
                measured: pinfold_base::Usage {
                    wall_us: u64::try_from(wall.as_micros()).unwrap_or(u64::MAX),
                    fuel,
                    peak_memory,
                },
                module_source: Some(source.to_string()),
            },
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit and returns the new
/// soft limit. Guests may hold [`MAX_HANDLES`] descriptors per run; the node's own
/// connections and the job store need room beside them, and the usual soft default (1,024)
/// is one guest's worth.
pub fn raise_descriptor_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current != l.maximum {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
    getrlimit(Resource::Nofile).current
}

/// Runs blocking file work (walking a guest's tree) without stalling the async workers:
/// `block_in_place` on a multi-threaded runtime (no thread hand-off, which costs more than a
/// trivial task's whole collection), a blocking-pool thread otherwise.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        Ok(tokio::task::block_in_place(f))
    } else {
        tokio::task::spawn_blocking(f).await
    }
}

/// A run's scratch root: a private directory named by this process and a counter (cheaper
/// than a random name, and unique: a name left by an earlier process with the same pid is
/// skipped), removed when dropped.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn create(parent: &std::path::Path) -> std::io::Result<Scratch> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = parent.join(format!("pinfold-scratch-{}-{n}", std::process::id()));
            match fsio::create_private_dir(&path) {
                Ok(()) => return Ok(Scratch { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Most runs leave it empty: one rmdir. Otherwise the whole tree, never following a
        // link (remove_dir_all removes links themselves).
        if std::fs::remove_dir(&self.path).is_err() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// What every store of a run is set up with, and how its usage is read back.
struct Meter {
    metered: bool,
    fuel_budget: u64,
    deadline: Instant,
    flags: Arc<Flags>,
}

impl Meter {
    /// A store holding `wasi`, limited by `limiter`, fuelled when metered, and interrupted
    /// by the epoch callback at the deadline or when the host flags the run.
    fn store<W: Send + 'static>(
        &self,
        engine: &Engine,
        wasi: W,
        limiter: Limiter,
        det: Option<detfs::DetFs>,
    ) -> Result<Store<Host<W>>, String> {
        let mut store = Store::new(engine, Host { wasi, limiter, det });
        store.limiter(|h| &mut h.limiter);
        if self.metered {
            store
                .set_fuel(self.fuel_budget)
                .map_err(|e| format!("setting fuel: {e:#}"))?;
        }
        let (flags, deadline) = (self.flags.clone(), self.deadline);
        let mut ticks = 0u64;
        store.epoch_deadline_callback(move |_| {
            if flags.get() != CAUSE_NONE {
                return Ok(UpdateDeadline::Interrupt);
            }
            if Instant::now() >= deadline {
                flags.set(CAUSE_TIMEOUT);
                return Ok(UpdateDeadline::Interrupt);
            }
            ticks += 1;
            Ok(if ticks.is_multiple_of(YIELD_EVERY) {
                UpdateDeadline::Yield(1)
            } else {
                UpdateDeadline::Continue(1)
            })
        });
        store.set_epoch_deadline(1);
        Ok(store)
    }

    /// Fuel consumed (when metered) and the peak of all memories together.
    fn usage<W>(&self, store: &Store<Host<W>>) -> (Option<u64>, u64) {
        let fuel = if self.metered {
            store.get_fuel().ok().map(|left| self.fuel_budget - left)
        } else {
            None
        };
        (fuel, store.data().limiter.peak as u64)
    }
}

/// Whether `bytes` claim to be a component: the binary header's layer field (bytes 6–7)
/// is 1 for components and 0 for core modules. Anything else compiles as a module and is
/// refused by wasmtime with a message.
fn artifact_kind(bytes: &[u8]) -> ArtifactKind {
    if bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0] {
        ArtifactKind::Component
    } else {
        ArtifactKind::Module
    }
}

/// The capabilities the manifest allows a guest's imports to use on this provider (which
/// offers no network, so never sockets); the same rule the loader applies.
fn allowed_capabilities(m: &task_defs::Manifest) -> BTreeSet<Capability> {
    let mut allowed = match &m.capabilities.wasi {
        Some(declared) => declared.clone(),
        None => footprint::default_allowed(false),
    };
    allowed.remove(&Capability::Sockets);
    allowed
}

/// Maps the result of `_start` or `wasi:cli/run` to a status, trusting the host's flags over the error.
fn classify(
    r: wasmtime::Result<()>,
    flags: &Flags,
    m: &task_defs::Manifest,
    fuel_budget: u64,
) -> (Status, Option<String>, Option<i32>) {
    match flags.get() {
        CAUSE_TIMEOUT => {
            return (
                Status::TimedOut,
                Some(format!(
                    "wall-clock limit of {} ms reached",
                    m.limits.timeout_ms
                )),
                None,
            );
        }
        CAUSE_MEMORY => {
            return (
                Status::MemoryExceeded,
                Some(format!(
                    "memory limit of {} bytes exceeded",
                    m.limits.memory
                )),
                None,
            );
        }
        CAUSE_OUTPUT => {
            return (
                Status::OutputExceeded,
                Some(format!(
                    "output exceeded limits.output of {} bytes (or the entry limit)",
                    m.limits.output
                )),
                None,
            );
        }
        _ => {}
    }
    let e = match r {
        Ok(()) => return (Status::Succeeded, None, Some(0)),
        Err(e) => e,
    };
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return if exit.0 == 0 {
            (Status::Succeeded, None, Some(0))
        } else {
            (
                Status::Failed,
                Some(format!("exited with code {}", exit.0)),
                Some(exit.0),
            )
        };
    }
    if e.chain().any(|c| {
        matches!(
            c.downcast_ref::<wasmtime::component::ResourceTableError>(),
            Some(wasmtime::component::ResourceTableError::Full)
        )
    }) {
        return (
            Status::Trapped,
            Some(format!(
                "handle limit reached: at most {MAX_HANDLES} open files, directories, streams \
                 and other resources at once (resource table has no free keys)"
            )),
            None,
        );
    }
    if let Some(trap) = e.downcast_ref::<Trap>() {
        if *trap == Trap::OutOfFuel {
            return (
                Status::TimedOut,
                Some(format!("fuel budget of {fuel_budget} exhausted")),
                None,
            );
        }
        return (Status::Trapped, Some(trap.to_string()), None);
    }
    // Host errors carry wasm backtraces in their context; the root cause is the message.
    (Status::Trapped, Some(e.root_cause().to_string()), None)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Executor for WasmExecutor {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Wasm
    }

    fn run(&self, req: RunRequest) -> impl std::future::Future<Output = Outcome> + Send {
        self.run_inner(req)
    }
}
