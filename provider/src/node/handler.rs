//! The node's job logic: answering offers, running jobs, serving results, advertising.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use pinfold_net::protocol::{ErrorReply, OutcomeSummary, OutputEntry, ResultReply};
use pinfold_net::{
    Accept, BlobId, BlobRef, Client, Event, Events, ExecutorAd, FetchLimits, Isolation, JobId,
    JobResult, JobState, Offer, OfferReply, PeerId, ProviderAd, Receipt, ReceiptBody, ReceiptUsage,
    RejectReason, Request, ResourceCaps, Response, RunStatus, TransferError,
};
use task_defs::{Definition, DefinitionId, RuntimeKind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::blobs::NodeBlobs;
use super::config::NodeConfig;
use super::jobs::{JobStore, Stage, now_ms};
use super::trust::RegistryView;
use super::{NodeError, parse_peers};
use crate::docker::{DockerConfig, DockerExecutor};
use crate::executor::{Executor, Outcome, RunRequest, Status, output_digest};
use crate::gate::GateConfig;
use crate::wasm::{WasmConfig, WasmExecutor};

/// Seconds the node waits for a job's bundle and inputs.
const HOLD_SECS: u64 = 120;
/// Definitions kept parsed in memory.
const MAX_CACHED_DEFINITIONS: usize = 64;
/// Jobs tracked in memory (running or retained); offers beyond are answered busy.
const MAX_TRACKED_JOBS: usize = 4096;
/// Longest reason text in a result.
const MAX_REASON: usize = pinfold_net::protocol::MAX_DETAIL;

/// A deliberate misbehaviour, for tests of the requestor's checks only.
///
/// Set through the `PINFOLD_TEST_FAULT` environment variable; compiled in so the tests
/// exercise the real binary. `wrong-output` changes the first output file after the run
/// and then reports, signs and serves the changed output consistently: only a comparison
/// with other providers (replicas) can catch it, which is the point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Lie about the output, consistently.
    WrongOutput,
}

impl Fault {
    /// The fault named by `PINFOLD_TEST_FAULT`, if any.
    pub fn from_env() -> Option<Fault> {
        match std::env::var(super::FAULT_ENV).ok()?.as_str() {
            "wrong-output" => {
                tracing::warn!("test fault wrong-output is on: this node lies about outputs");
                Some(Fault::WrongOutput)
            }
            other => {
                tracing::warn!("unknown test fault {other:?} ignored");
                None
            }
        }
    }
}

/// Removes a tree the node created, making read-only directories writable first.
pub fn remove_tree(dir: &Path) -> std::io::Result<()> {
    fn unlock(dir: &Path) {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    unlock(&e.path());
                }
            }
        }
    }
    unlock(dir);
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// What a job puts on disk: inputs and outputs in the work directory, the bundle (unless
/// held) in the data directory. `output` is `None` until the definition, and so its output
/// limit, is known.
#[derive(Debug, Clone, Copy)]
struct DiskNeed {
    input: u64,
    bundle: u64,
    output: Option<u64>,
}

/// Free disk space promised to jobs in flight, so two offers never both count the same
/// free bytes. What a running job has written already shows in `statvfs` and still in its
/// claim, which errs on the side of refusing.
#[derive(Debug, Default)]
pub(super) struct DiskBudget {
    promised: Mutex<u64>,
}

/// One job's share of the [`DiskBudget`], given back when dropped (after its result is
/// built; the outputs it then keeps on disk are counted by `statvfs` itself).
pub(super) struct DiskClaim {
    budget: Arc<DiskBudget>,
    bytes: u64,
    output_claimed: bool,
}

impl Drop for DiskClaim {
    fn drop(&mut self) {
        let mut p = self.budget.lock();
        *p = p.saturating_sub(self.bytes);
    }
}

/// Bytes an unprivileged writer may still use on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> Result<u64, String> {
    rustix::fs::statvfs(dir)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .map_err(|e| format!("cannot measure free disk space in {}: {e}", dir.display()))
}

/// Whether two directories share a filesystem (assumed when either cannot be read, which
/// counts everything against one and so errs on the side of refusing).
fn same_fs(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev(),
        _ => true,
    }
}

impl DiskBudget {
    fn lock(&self) -> Lock<'_, u64> {
        self.promised.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims what `need` takes, keeping `caps.disk_reserve_bytes` free; the error says
    /// what is missing where.
    fn claim(self: &Arc<Self>, cfg: &NodeConfig, need: DiskNeed) -> Result<DiskClaim, String> {
        let mut claim = DiskClaim {
            budget: self.clone(),
            bytes: 0,
            output_claimed: false,
        };
        self.add(cfg, &mut claim, need)?;
        Ok(claim)
    }

    /// Adds the output limit, once the definition is known, to a claim made without it.
    fn claim_output(
        &self,
        cfg: &NodeConfig,
        claim: &mut DiskClaim,
        output: u64,
    ) -> Result<(), String> {
        if claim.output_claimed {
            return Ok(());
        }
        let need = DiskNeed {
            input: 0,
            bundle: 0,
            output: Some(output),
        };
        self.add(cfg, claim, need)
    }

    fn add(&self, cfg: &NodeConfig, claim: &mut DiskClaim, need: DiskNeed) -> Result<(), String> {
        let reserve = cfg.caps.disk_reserve_bytes;
        let (work, data) = (&cfg.paths.work_dir, &cfg.paths.data_dir);
        let output = need.output.unwrap_or(0);
        let shared = same_fs(work, data);
        let mut on_work = need.input.saturating_add(output);
        if shared {
            on_work = on_work.saturating_add(need.bundle);
        }
        let mut parts = Vec::new();
        for (n, what) in [
            (need.input, "of input"),
            (output, "of output limit"),
            (need.bundle, "of bundle"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        let short = |dir: &Path, needed: u64, free: u64, promised: u64| {
            cap_text(
                &format!(
                    "not enough free disk space: the job needs {needed} bytes ({}) in {}, \
                     which has {free} bytes free, {promised} promised to jobs in flight and \
                     {reserve} kept in reserve",
                    parts.join(", "),
                    dir.display()
                ),
                MAX_REASON,
            )
        };
        let mut promised = self.lock();
        let free = free_bytes(work)?;
        if free < on_work.saturating_add(*promised).saturating_add(reserve) {
            return Err(short(work, on_work, free, *promised));
        }
        if !shared && need.bundle > 0 {
            let free = free_bytes(data)?;
            if free < need.bundle.saturating_add(reserve) {
                return Err(short(data, need.bundle, free, 0));
            }
        }
        let total = need
            .input
            .saturating_add(output)
            .saturating_add(need.bundle);
        *promised = promised.saturating_add(total);
        claim.bytes = claim.bytes.saturating_add(total);
        claim.output_claimed |= need.output.is_some();
        Ok(())
    }
}

/// Why the node can take no work at all, when its data or work directory has less free
/// space than the reserve.
fn disk_low(cfg: &NodeConfig) -> Option<String> {
    let reserve = cfg.caps.disk_reserve_bytes;
    for dir in [&cfg.paths.data_dir, &cfg.paths.work_dir] {
        match free_bytes(dir) {
            Ok(free) if free >= reserve => {}
            Ok(free) => {
                return Some(format!(
                    "{} has {free} bytes free, {reserve} are kept in reserve",
                    dir.display()
                ));
            }
            Err(e) => return Some(e),
        }
    }
    None
}

/// Why a run's outputs must be discarded because the work directory's filesystem filled up
/// during it. A guest's write then failed with "no space left on device", and a guest that
/// ignores that (most do) would otherwise succeed with truncated outputs the node would
/// sign. Checked whatever the status: a run that timed out or hit a limit may well be the
/// one that filled the disk, and its outputs must go at once, not after retention.
fn disk_filled(work_dir: &Path) -> Option<String> {
    let s = rustix::fs::statvfs(work_dir).ok()?;
    // Some filesystems (btrfs) report no inode counts at all: only a real count can be full.
    let full = s.f_bavail == 0 || (s.f_files > 0 && s.f_favail == 0);
    full.then(|| {
        "the provider's disk filled up during the run (no space left on device in its work \
         directory); the run's outputs were discarded"
            .to_string()
    })
}

/// The outcome of a run whose outputs were removed because the disk filled up. A run that
/// would have counted as the task's own result (succeeded, failed, trapped) becomes
/// `rejected`, the provider's failure, so the requestor tries elsewhere; a run a limit
/// stopped keeps its status, since the limit is what ended it, with no files.
fn discard_outputs(outcome: Outcome, reason: String) -> Outcome {
    if matches!(
        outcome.status,
        Status::Succeeded | Status::Failed | Status::Trapped
    ) {
        return Outcome {
            usage: outcome.usage,
            ..Outcome::rejected(reason)
        };
    }
    let reason = match &outcome.reason {
        Some(r) => format!("{r}; {reason}"),
        None => reason,
    };
    Outcome {
        outputs: output_digest(&[], &outcome.stdout),
        files: Vec::new(),
        reason: Some(reason),
        ..outcome
    }
}

/// Everything the node owns except the network handle.
pub(super) struct Inner {
    cfg: NodeConfig,
    store: JobStore,
    pub(super) blobs: Arc<NodeBlobs>,
    wasm: Option<WasmExecutor>,
    docker: Option<DockerExecutor>,
    registry: Option<RegistryView>,
    allow: HashSet<PeerId>,
    deny: HashSet<PeerId>,
    fault: Option<Fault>,
}

impl Inner {
    pub(super) async fn new(
        cfg: NodeConfig,
        store: JobStore,
        fault: Option<Fault>,
    ) -> Result<Inner, NodeError> {
        let data = &cfg.paths.data_dir;
        let wasm = if cfg.executors.wasm {
            Some(
                WasmExecutor::new(WasmConfig {
                    max_concurrent: cfg.caps.concurrent_tasks.max(1),
                    max_memory: cfg.caps.memory_bytes,
                    cache_dir: Some(data.join("artifacts")),
                    // On the disk the node admits jobs against; counted with the outputs.
                    scratch_parent: Some(cfg.paths.work_dir.clone()),
                    ..WasmConfig::default()
                })
                .map_err(|e| NodeError::Executor(e.to_string()))?,
            )
        } else {
            None
        };
        let docker = if cfg.executors.docker {
            match docker_executor(&cfg).await {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::warn!("docker executor unavailable, docker jobs will be refused: {e}");
                    None
                }
            }
        } else {
            None
        };
        if wasm.is_none() && docker.is_none() {
            tracing::warn!("no executor is enabled: every offer will be refused");
        }
        let r = &cfg.registry;
        let registry = match (&r.url, &r.log_key) {
            (Some(url), Some(key)) => {
                let log_key = key
                    .parse()
                    .map_err(|e| NodeError::Config(format!("registry.log_key: {e}")))?;
                let reviewers = r
                    .reviewers
                    .iter()
                    .map(|k| k.parse())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| NodeError::Config(format!("registry.reviewers: {e}")))?;
                let witnesses = r
                    .witnesses
                    .iter()
                    .map(|k| k.parse())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| NodeError::Config(format!("registry.witnesses: {e}")))?;
                task_defs::tlog::WitnessPolicy::new(
                    witnesses.iter().cloned(),
                    r.witness_threshold.unwrap_or(witnesses.len()),
                )
                .map_err(|e| NodeError::Config(format!("registry.witness_threshold: {e}")))?;
                Some(
                    RegistryView::new(
                        GateConfig {
                            registry: url.clone(),
                            log_key,
                            origin: None,
                            reviewers,
                            threshold: r.threshold,
                            max_age_secs: r.max_age_secs,
                            state_dir: Some(data.join("registry-state")),
                            witnesses,
                            witness_threshold: r.witness_threshold,
                        },
                        Duration::from_millis(r.sync_interval_ms),
                    )
                    .with_alarm_dir(super::trust::alarm_dir(data)),
                )
            }
            (Some(_), None) => {
                return Err(NodeError::Config(
                    "registry.url is set but registry.log_key is not".into(),
                ));
            }
            _ => None,
        };
        if registry.is_none() && !r.allow_unreviewed {
            tracing::warn!(
                "no registry is configured: every offer will be refused as not approved"
            );
        }
        let allow = parse_peers("requestors.allow", &cfg.requestors.allow)?
            .into_iter()
            .collect();
        let deny = parse_peers("requestors.deny", &cfg.requestors.deny)?
            .into_iter()
            .collect();
        std::fs::create_dir_all(data.join("bundles"))
            .map_err(|e| NodeError::Io(format!("{}: {e}", data.display())))?;
        Ok(Inner {
            cfg,
            store,
            blobs: Arc::new(NodeBlobs::default()),
            wasm,
            docker,
            registry,
            allow,
            deny,
            fault,
        })
    }
}

async fn docker_executor(cfg: &NodeConfig) -> Result<DockerExecutor, String> {
    let mut d = DockerConfig::from_env().map_err(|e| e.to_string())?;
    d.isolation = cfg
        .executors
        .docker_isolation
        .parse()
        .map_err(|e| format!("executors.docker_isolation: {e}"))?;
    d.max_concurrent = cfg.caps.concurrent_tasks.max(1);
    d.max_memory = cfg.caps.memory_bytes;
    d.max_output = cfg.caps.output_bytes;
    d.scratch_dir = cfg.paths.work_dir.clone();
    // One instance per node directory: stable across restarts (so the orphans of a killed
    // run are found) and distinct between nodes on one host (so they never remove each
    // other's containers).
    let tag = blake3::hash(cfg.paths.data_dir.as_os_str().as_encoded_bytes()).to_hex();
    d.instance = format!("node-{}", &tag[..16]);
    DockerExecutor::new(d).await.map_err(|e| e.to_string())
}

/// One job the node tracks in memory.
struct Job {
    requestor: PeerId,
    state: JobState,
    result: Option<Arc<JobResult>>,
    task: Option<tokio::task::AbortHandle>,
    dir: PathBuf,
    served: Vec<BlobId>,
    finished_at: Option<Instant>,
    delivered: bool,
}

/// The node: its state and its network handle.
pub(super) struct Node {
    inner: Inner,
    client: Client,
    slots: Arc<Semaphore>,
    disk: Arc<DiskBudget>,
    jobs: Mutex<HashMap<String, Job>>,
    definitions: Mutex<HashMap<String, Arc<Definition>>>,
    counter: AtomicU64,
    ad_kick: AtomicBool,
    note_check: AtomicBool,
}

type Lock<'a, T> = std::sync::MutexGuard<'a, T>;

impl Node {
    pub(super) fn new(inner: Inner, client: Client) -> Node {
        let slots = Arc::new(Semaphore::new(
            inner.cfg.caps.concurrent_tasks.max(1) as usize
        ));
        Node {
            inner,
            client,
            slots,
            disk: Arc::new(DiskBudget::default()),
            jobs: Mutex::new(HashMap::new()),
            definitions: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
            ad_kick: AtomicBool::new(false),
            note_check: AtomicBool::new(false),
        }
    }

    fn jobs(&self) -> Lock<'_, HashMap<String, Job>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_job_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let seed = format!(
            "{}/{}/{n}/{}",
            self.client.peer_id(),
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        blake3::hash(seed.as_bytes()).to_hex()[..20].to_string()
    }

    fn bundle_path(&self, id: &str) -> PathBuf {
        let hex = id.strip_prefix("blake3:").unwrap_or(id);
        self.inner
            .cfg
            .paths
            .data_dir
            .join("bundles")
            .join(format!("{hex}.bundle"))
    }

    /// Definitions whose bundles the node holds (at most the ad's cap).
    fn held_bundles(&self) -> Vec<String> {
        let dir = self.inner.cfg.paths.data_dir.join("bundles");
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let name = e.file_name().into_string().ok()?;
                        let hex = name.strip_suffix(".bundle")?;
                        let id = format!("blake3:{hex}");
                        pinfold_net::id::is_identity(&id).then_some(id)
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out.truncate(pinfold_net::ad::MAX_AD_BUNDLES);
        out
    }

    /// The held definition `id`, parsed (from memory, else from the bundle on disk).
    fn held_definition(&self, id: &str) -> Option<Arc<Definition>> {
        if let Some(d) = self
            .definitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            return Some(d.clone());
        }
        let bytes = std::fs::read(self.bundle_path(id)).ok()?;
        // A bundle file that no longer parses (cut short by a crash) or no longer matches
        // its name is not ours to run; it goes, so it is neither advertised nor kept.
        let def = match task_defs::bundle::read(&bytes) {
            Ok(def) if def.id.to_string() == id => def,
            _ => {
                tracing::warn!("removing unusable held bundle {id}");
                let _ = std::fs::remove_file(self.bundle_path(id));
                return None;
            }
        };
        let def = Arc::new(def);
        self.cache_definition(def.clone());
        Some(def)
    }

    fn cache_definition(&self, def: Arc<Definition>) {
        let mut m = self.definitions.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_CACHED_DEFINITIONS
            && let Some(k) = m.keys().next().cloned()
        {
            m.remove(&k);
        }
        m.insert(def.id.to_string(), def);
    }

    /// Keeps a validated bundle on disk so the next job need not fetch it.
    fn keep_bundle(&self, bytes: &[u8], def: &Arc<Definition>) {
        let path = self.bundle_path(&def.id.to_string());
        let tmp = path.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, &path)) {
            // Not fatal (the job has the bundle in memory), but no partial file stays.
            tracing::warn!("not keeping bundle {}: {e}", def.id);
            let _ = std::fs::remove_file(&tmp);
        }
        self.cache_definition(def.clone());
        self.ad_kick.store(true, Ordering::Relaxed);
    }

    fn executors(&self) -> Vec<ExecutorAd> {
        let mut v = Vec::new();
        if self.inner.wasm.is_some() {
            v.push(ExecutorAd {
                runtime: "wasm".into(),
                isolation: Isolation::SandboxedRuntime,
            });
        }
        if let Some(d) = &self.inner.docker {
            v.push(ExecutorAd {
                runtime: "docker".into(),
                isolation: match d.isolation() {
                    task_defs::manifest::Isolation::Container => Isolation::Container,
                    task_defs::manifest::Isolation::SandboxedRuntime => Isolation::SandboxedRuntime,
                    task_defs::manifest::Isolation::Vm => Isolation::Vm,
                },
            });
        }
        v
    }

    fn ad(&self) -> ProviderAd {
        let c = &self.inner.cfg.caps;
        ProviderAd {
            executors: self.executors(),
            caps: ResourceCaps {
                memory_bytes: c.memory_bytes,
                concurrent_tasks: c.concurrent_tasks,
                input_bytes: c.input_bytes,
                output_bytes: c.output_bytes,
            },
            free_slots: self.slots.available_permits() as u32,
            bundles: self.held_bundles(),
            timestamp: 0,
            seq: 0,
            addrs: Vec::new(),
        }
    }

    fn set_state(&self, id: &str, state: JobState) {
        if let Some(j) = self.jobs().get_mut(id) {
            j.state = state;
        }
    }

    fn record(&self, id: &str, stage: Stage, detail: Option<&str>) {
        if let Err(e) = self.inner.store.transition(id, stage, detail) {
            tracing::error!(job = %id, "job store: {e}");
        }
    }
}

/// The node's main loop: answers requests, advertises, retires old jobs, until shutdown.
pub(super) async fn serve(
    node: Arc<Node>,
    mut events: Events,
    mut shutdown: watch::Receiver<bool>,
) {
    let interval = Duration::from_secs(node.inner.cfg.network.ad_interval_secs.max(1));
    let mut ads = tokio::time::interval(interval);
    let mut sweep = tokio::time::interval(Duration::from_secs(5));
    let mut kick = tokio::time::interval(Duration::from_millis(400));
    let mut last_note: Option<String> = None;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            ev = events.next() => {
                let Some(ev) = ev else { break };
                on_event(&node, ev);
            }
            _ = ads.tick() => {
                advertise(&node).await;
                gossip_checkpoint(&node, &mut last_note).await;
            }
            _ = kick.tick() => {
                if node.ad_kick.swap(false, Ordering::Relaxed) {
                    advertise(&node).await;
                }
            }
            _ = sweep.tick() => {
                retire(&node);
                if let Err(e) = node.inner.store.retry_backlog() {
                    tracing::warn!("job store: {e}");
                }
            }
        }
    }
    stop_jobs(&node);
    if let Err(e) = node.inner.store.retry_backlog() {
        tracing::error!("job store: {e}; jobs in flight will show as interrupted");
    }
}

fn on_event(node: &Arc<Node>, ev: Event) {
    match ev {
        Event::Request {
            peer,
            request,
            responder,
        } => {
            let node = node.clone();
            tokio::spawn(async move {
                let response = answer(&node, peer, request).await;
                if let Err(e) = responder.send(response).await {
                    tracing::debug!(%peer, "answering: {e}");
                }
            });
        }
        Event::PeerConnected { peer, .. } => {
            tracing::debug!(%peer, "connected");
            // A new peer only learns what we offer from an ad; send one soon (after the
            // gossip subscription exchange), not at the next interval.
            node.ad_kick.store(true, Ordering::Relaxed);
        }
        Event::Banned { peer, reason } => tracing::warn!(%peer, "banned: {reason}"),
        Event::Checkpoint { source, note } => {
            tracing::debug!(%source, "checkpoint gossip");
            // One check at a time; notes arriving meanwhile are dropped (the next ad tick
            // or offer catches up anyway), so gossip cannot pile up blocking work.
            if node.inner.registry.is_some() && !node.note_check.swap(true, Ordering::AcqRel) {
                let n = node.clone();
                // Verifying the note's signature is cheap but takes the view's lock, which a
                // sync may hold for a while: off the event loop.
                tokio::task::spawn_blocking(move || {
                    if let Some(r) = &n.inner.registry {
                        r.note_seen(&note, &source.to_string());
                    }
                    n.note_check.store(false, Ordering::Release);
                });
            }
        }
        _ => {}
    }
}

async fn advertise(node: &Arc<Node>) {
    let ad = node.ad();
    if let Err(e) = node.client.advertise(ad).await {
        // No gossip peers yet is normal for a lone node.
        tracing::debug!("advertising: {e}");
    }
}

async fn gossip_checkpoint(node: &Arc<Node>, last: &mut Option<String>) {
    if node.inner.registry.is_none() {
        return;
    }
    let n = node.clone();
    let note = tokio::task::spawn_blocking(move || {
        n.inner.registry.as_ref().and_then(|r| r.verified_note())
    })
    .await
    .ok()
    .flatten();
    if let Some(note) = note
        && last.as_deref() != Some(note.as_str())
    {
        if let Err(e) = node.client.publish_checkpoint(&note).await {
            tracing::debug!("gossiping the checkpoint: {e}");
        } else {
            *last = Some(note);
        }
    }
}

/// Forgets finished jobs past their retention: their outputs stop being served and their
/// directories go.
fn retire(node: &Arc<Node>) {
    let retain = Duration::from_secs(node.inner.cfg.caps.retain_secs);
    let old: Vec<(String, Job)> = {
        let mut jobs = node.jobs();
        let ids: Vec<String> = jobs
            .iter()
            .filter(|(_, j)| j.finished_at.is_some_and(|t| t.elapsed() >= retain))
            .map(|(k, _)| k.clone())
            .collect();
        ids.into_iter()
            .filter_map(|k| jobs.remove(&k).map(|j| (k, j)))
            .collect()
    };
    for (_, j) in old {
        cleanup(node, &j);
    }
}

fn cleanup(node: &Node, job: &Job) {
    for id in &job.served {
        node.inner.blobs.release(id);
    }
    if let Err(e) = remove_tree(&job.dir) {
        tracing::warn!("removing {}: {e}", job.dir.display());
    }
}

/// Shutdown: jobs in flight become `interrupted` and their directories go.
fn stop_jobs(node: &Arc<Node>) {
    let jobs: Vec<(String, Job)> = node.jobs().drain().collect();
    for (id, j) in jobs {
        if let Some(t) = &j.task {
            t.abort();
        }
        if matches!(
            j.state,
            JobState::Fetching | JobState::Queued | JobState::Running
        ) {
            node.record(&id, Stage::Interrupted, Some("the node shut down"));
        }
        cleanup(node, &j);
    }
}

async fn answer(node: &Arc<Node>, peer: PeerId, request: Request) -> Response {
    match request {
        Request::Offer(offer) => Response::Offer(offer_reply(node, peer, offer).await),
        Request::Status { job_id } => match node.jobs().get(&job_id.0) {
            Some(j) if j.requestor == peer => Response::Status(j.state),
            _ => Response::Error(ErrorReply::UnknownJob),
        },
        Request::Result { job_id } => {
            let reply = {
                let mut jobs = node.jobs();
                match jobs.get_mut(&job_id.0) {
                    Some(j) if j.requestor == peer => match &j.result {
                        Some(r) => {
                            let first = !j.delivered;
                            j.delivered = true;
                            Some((ResultReply::Done(Box::new((**r).clone())), first))
                        }
                        None => Some((ResultReply::Pending(j.state), false)),
                    },
                    _ => None,
                }
            };
            match reply {
                Some((reply, first)) => {
                    if first {
                        node.record(&job_id.0, Stage::Delivered, None);
                    }
                    Response::Result(reply)
                }
                None => Response::Error(ErrorReply::UnknownJob),
            }
        }
        Request::Cancel { job_id } => {
            let job = {
                let mut jobs = node.jobs();
                match jobs.get(&job_id.0) {
                    Some(j) if j.requestor == peer => jobs.remove(&job_id.0),
                    _ => None,
                }
            };
            match job {
                Some(j) => {
                    let active = j.result.is_none();
                    if let Some(t) = &j.task {
                        t.abort();
                    }
                    if active {
                        node.record(
                            &job_id.0,
                            Stage::Cancelled,
                            Some("cancelled by the requestor"),
                        );
                    }
                    cleanup(node, &j);
                    Response::Cancelled(active)
                }
                None => Response::Error(ErrorReply::UnknownJob),
            }
        }
    }
}

fn reject(reason: RejectReason) -> OfferReply {
    OfferReply::Reject { reason }
}

/// Checks a definition the node holds against its executors and caps, and the offer's
/// params against the definition.
fn check_definition(
    node: &Node,
    def: &Definition,
    params: &std::collections::BTreeMap<String, String>,
    secrets: &[String],
) -> Result<(), RejectReason> {
    def.manifest
        .resolve_params(params)
        .map_err(|e| RejectReason::Invalid(cap_text(&e, MAX_REASON)))?;
    // Names only here (the offer's validation already matched values to names); the
    // values themselves stay in the offer, in memory, until the executor has them.
    let declared = &def.manifest.capabilities.secrets;
    if let Some(s) = secrets.iter().find(|s| !declared.contains(s)) {
        return Err(RejectReason::Invalid(cap_text(
            &format!("secret {s:?} is not declared by the definition"),
            MAX_REASON,
        )));
    }
    if let Some(s) = declared.iter().find(|d| !secrets.contains(d)) {
        return Err(RejectReason::Invalid(cap_text(
            &format!("declared secret {s:?} was not supplied"),
            MAX_REASON,
        )));
    }
    let available = match def.manifest.runtime.kind() {
        RuntimeKind::Wasm => node.inner.wasm.is_some(),
        RuntimeKind::Docker => node.inner.docker.is_some(),
    };
    if !available {
        return Err(RejectReason::ExecutorUnavailable);
    }
    let caps = &node.inner.cfg.caps;
    let l = &def.manifest.limits;
    if l.memory > caps.memory_bytes {
        return Err(RejectReason::OverCaps(format!(
            "the definition asks for {} bytes of memory, the cap is {}",
            l.memory, caps.memory_bytes
        )));
    }
    if l.output > caps.output_bytes {
        return Err(RejectReason::OverCaps(format!(
            "the definition may write {} bytes of output, the cap is {}",
            l.output, caps.output_bytes
        )));
    }
    Ok(())
}

async fn offer_reply(node: &Arc<Node>, peer: PeerId, offer: Offer) -> OfferReply {
    let job_id = node.new_job_id();
    if let Err(e) = node
        .inner
        .store
        .offered(&job_id, &peer.to_base58(), &offer.definition)
    {
        tracing::error!("job store: {e}");
        // A store that cannot write is almost always a full disk; say so rather than
        // "busy", which would have the requestor ask again and again.
        return reject(match disk_low(&node.inner.cfg) {
            Some(low) => RejectReason::OverCaps(format!(
                "not enough free disk space: the job store cannot record the offer ({low})"
            )),
            None => RejectReason::Busy,
        });
    }
    let reply = decide(node, peer, &offer, &job_id).await;
    match &reply {
        Ok(_) => node.record(&job_id, Stage::Accepted, None),
        Err(reason) => {
            tracing::info!(job = %job_id, %peer, "refused {}: {reason}", offer.definition);
            node.record(&job_id, Stage::Refused, Some(&reason.to_string()));
        }
    }
    match reply {
        Ok((fetch, held, permit, claim)) => {
            let n = node.clone();
            let id = job_id.clone();
            let dir = node.inner.cfg.paths.work_dir.join(&job_id);
            node.jobs().insert(
                job_id.clone(),
                Job {
                    requestor: peer,
                    state: JobState::Fetching,
                    result: None,
                    task: None,
                    dir,
                    served: Vec::new(),
                    finished_at: None,
                    delivered: false,
                },
            );
            let handle =
                tokio::spawn(async move { run_job(n, peer, id, offer, held, permit, claim).await });
            if let Some(j) = node.jobs().get_mut(&job_id) {
                j.task = Some(handle.abort_handle());
            }
            node.ad_kick.store(true, Ordering::Relaxed);
            OfferReply::Accept(Accept {
                job_id: JobId(job_id),
                fetch,
                hold_secs: HOLD_SECS,
            })
        }
        Err(reason) => reject(reason),
    }
}

type Decision = (
    Vec<BlobId>,
    Option<Arc<Definition>>,
    OwnedSemaphorePermit,
    DiskClaim,
);

/// Every check that can be made before the bundle is in hand.
async fn decide(
    node: &Arc<Node>,
    peer: PeerId,
    offer: &Offer,
    _job_id: &str,
) -> Result<Decision, RejectReason> {
    let i = &node.inner;
    if i.deny.contains(&peer) || (!i.allow.is_empty() && !i.allow.contains(&peer)) {
        return Err(RejectReason::RequestorNotAllowed);
    }
    let id = DefinitionId::from_str(&offer.definition)
        .map_err(|e| RejectReason::Invalid(format!("definition: {e}")))?;
    let caps = &i.cfg.caps;
    if offer.needs.memory_bytes > caps.memory_bytes {
        return Err(RejectReason::OverCaps(format!(
            "{} bytes of memory asked, the cap is {}",
            offer.needs.memory_bytes, caps.memory_bytes
        )));
    }
    if offer.input_bytes() > caps.input_bytes {
        return Err(RejectReason::OverCaps(format!(
            "{} bytes of input, the cap is {}",
            offer.input_bytes(),
            caps.input_bytes
        )));
    }
    if let Some(b) = &offer.bundle
        && b.size > task_defs::bundle::MAX_BUNDLE_BYTES
    {
        return Err(RejectReason::OverCaps(format!(
            "a {}-byte bundle is over the bundle cap",
            b.size
        )));
    }
    let executors = node.executors();
    if executors.is_empty() {
        return Err(RejectReason::ExecutorUnavailable);
    }
    if let Some(min) = offer.needs.min_isolation
        && !executors.iter().any(|e| e.isolation >= min)
    {
        return Err(RejectReason::ExecutorUnavailable);
    }
    match &i.registry {
        Some(_) => {
            let n = node.clone();
            let seen = offer.registry_size;
            tokio::task::spawn_blocking(move || {
                n.inner
                    .registry
                    .as_ref()
                    .map(|r| r.check(&id, seen))
                    .unwrap_or(Err(RejectReason::NotApproved))
            })
            .await
            .map_err(|_| RejectReason::Busy)??;
        }
        None if i.cfg.registry.allow_unreviewed => {}
        None => return Err(RejectReason::NotApproved),
    }
    let held = node.held_definition(&offer.definition);
    if let Some(def) = &held {
        check_definition(node, def, &offer.params, &offer.secrets)?;
    } else if offer.bundle.is_none() && i.registry.is_none() {
        return Err(RejectReason::Invalid(
            "no bundle offered and no registry to fetch it from".into(),
        ));
    }
    if node.jobs().len() >= MAX_TRACKED_JOBS {
        return Err(RejectReason::Busy);
    }
    // The output limit is known only once the definition is; a job offered without a
    // bundle the node holds claims it when the bundle arrives (`run_job`).
    let claim = node
        .disk
        .claim(
            &i.cfg,
            DiskNeed {
                input: offer.input_bytes(),
                bundle: if held.is_none() {
                    offer.bundle.as_ref().map_or(0, |b| b.size)
                } else {
                    0
                },
                output: held.as_ref().map(|d| d.manifest.limits.output),
            },
        )
        .map_err(RejectReason::OverCaps)?;
    let permit = node
        .slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| RejectReason::Busy)?;
    let mut fetch = Vec::new();
    if held.is_none()
        && let Some(b) = &offer.bundle
    {
        fetch.push(b.id);
    }
    let mut seen = HashSet::new();
    for input in &offer.inputs {
        if seen.insert(input.blake3) {
            fetch.push(input.blake3);
        }
    }
    Ok((fetch, held, permit, claim))
}

/// Whether a failed fetch is worth repeating: "busy" always (bounded by the job's hold
/// time), a broken or unopenable stream up to three times (under load a peer drops
/// streams it cannot take yet). The sink is reset per attempt and only ever holds verified
/// bytes; a peer that sent bad bytes is never retried.
fn retryable(e: &TransferError, broken: &mut u32) -> bool {
    match e {
        TransferError::Busy => true,
        TransferError::Io(_) | TransferError::Open(_) | TransferError::Local => {
            *broken += 1;
            *broken <= 3
        }
        _ => false,
    }
}

/// Why a job ended before running, as text for the rejected outcome.
type Refusal = String;

async fn obtain_definition(
    node: &Arc<Node>,
    peer: PeerId,
    offer: &Offer,
    held: Option<Arc<Definition>>,
) -> Result<Arc<Definition>, Refusal> {
    if let Some(d) = held {
        return Ok(d);
    }
    let expected = DefinitionId::from_str(&offer.definition).map_err(|e| e.to_string())?;
    let (bytes, def) = match &offer.bundle {
        Some(b) => {
            let mut bytes = Vec::new();
            let mut wait = Duration::from_millis(2);
            let mut broken = 0;
            loop {
                bytes.clear();
                match node
                    .client
                    .fetch_blob(peer, b.id, FetchLimits::exact(b.size), &mut bytes)
                    .await
                {
                    Ok(_) => break,
                    Err(e) if retryable(&e, &mut broken) => {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_millis(200));
                    }
                    Err(e) => return Err(format!("fetching the bundle: {e}")),
                }
            }
            let def = task_defs::bundle::read(&bytes)
                .map_err(|e| format!("the bundle is invalid: {e}"))?;
            (bytes, def)
        }
        None => {
            let n = node.clone();
            tokio::task::spawn_blocking(move || match &n.inner.registry {
                Some(r) => r.bundle(&expected),
                None => Err("no registry to fetch the bundle from".into()),
            })
            .await
            .map_err(|e| e.to_string())??
        }
    };
    if def.id != expected {
        return Err(format!(
            "tampered bundle: its identity is {}, the offer names {expected}",
            def.id
        ));
    }
    let def = Arc::new(def);
    node.keep_bundle(&bytes, &def);
    Ok(def)
}

async fn fetch_inputs(
    node: &Node,
    peer: PeerId,
    offer: &Offer,
    input_dir: &Path,
) -> Result<(), Refusal> {
    for input in &offer.inputs {
        let dest = input_dir.join(&input.name);
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| format!("staging {}: {e}", input.name))?;
        }
        let mut wait = Duration::from_millis(2);
        let mut broken = 0;
        loop {
            let mut f = tokio::fs::File::create(&dest)
                .await
                .map_err(|e| format!("staging {}: {e}", input.name))?;
            match node
                .client
                .fetch_blob(peer, input.blake3, FetchLimits::exact(input.size), &mut f)
                .await
            {
                Ok(_) => {
                    tokio::io::AsyncWriteExt::flush(&mut f)
                        .await
                        .map_err(|e| format!("staging {}: {e}", input.name))?;
                    break;
                }
                // The requestor serves a few transfers per peer at once, and under load a
                // stream may be dropped before any byte; the job's hold time bounds this.
                Err(e) if retryable(&e, &mut broken) => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(200));
                }
                Err(e) => return Err(format!("fetching input {}: {e}", input.name)),
            }
        }
    }
    make_read_only(input_dir).map_err(|e| format!("sealing the inputs: {e}"))
}

fn make_read_only(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            make_read_only(&e.path())?;
        } else if t.is_file() {
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o444))?;
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555))
}

async fn run_job(
    node: Arc<Node>,
    peer: PeerId,
    job_id: String,
    mut offer: Offer,
    held: Option<Arc<Definition>>,
    permit: OwnedSemaphorePermit,
    mut claim: DiskClaim,
) {
    // Moved out so the values go to the executor and are dropped (and zeroed) with the
    // run; nothing after the run (store, receipt, result) can reach them.
    let secrets = std::mem::take(&mut offer.secret_values);
    let started_ms = now_ms();
    node.record(&job_id, Stage::Transferring, None);
    let dir = node.inner.cfg.paths.work_dir.join(&job_id);
    let input_dir = dir.join("input");
    let output_dir = dir.join("output");
    let prepared = tokio::time::timeout(Duration::from_secs(HOLD_SECS), async {
        let def = obtain_definition(&node, peer, &offer, held).await?;
        check_definition(&node, &def, &offer.params, &offer.secrets).map_err(|r| r.to_string())?;
        node.disk
            .claim_output(&node.inner.cfg, &mut claim, def.manifest.limits.output)?;
        for d in [&dir, &input_dir, &output_dir] {
            crate::fsio::create_private_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        fetch_inputs(&node, peer, &offer, &input_dir).await?;
        Ok::<_, Refusal>(def)
    })
    .await
    .unwrap_or_else(|_| Err("timed out fetching the bundle and inputs".into()));

    let mut outcome = match prepared {
        Err(reason) => {
            tracing::info!(job = %job_id, "not run: {reason}");
            Outcome::rejected(reason)
        }
        Ok(def) => {
            node.set_state(&job_id, JobState::Running);
            node.record(&job_id, Stage::Running, None);
            let req = RunRequest {
                definition: def.clone(),
                params: offer.params.clone(),
                input_dir: input_dir.clone(),
                output_dir: output_dir.clone(),
                secrets,
            };
            match def.manifest.runtime.kind() {
                RuntimeKind::Wasm => match &node.inner.wasm {
                    Some(w) => w.run(req).await,
                    None => Outcome::rejected("no wasm executor"),
                },
                RuntimeKind::Docker => match &node.inner.docker {
                    Some(d) => d.run(req).await,
                    None => Outcome::rejected("no docker executor"),
                },
            }
        }
    };
    drop(permit);
    node.ad_kick.store(true, Ordering::Relaxed);
    // Before anything is removed, which would hide that the disk was full.
    if let Some(reason) = disk_filled(&node.inner.cfg.paths.work_dir) {
        tracing::warn!(job = %job_id, status = %outcome.status, "{reason}");
        if let Err(e) = remove_tree(&output_dir) {
            tracing::warn!(job = %job_id, "removing {}: {e}", output_dir.display());
        }
        outcome = discard_outputs(outcome, reason);
    }
    // Inputs are never served back: free their space now rather than after retention.
    if let Err(e) = remove_tree(&input_dir) {
        tracing::warn!(job = %job_id, "removing {}: {e}", input_dir.display());
    }
    if node.inner.fault == Some(Fault::WrongOutput) {
        inject_wrong_output(&mut outcome, &output_dir);
    }
    let ended_ms = now_ms();
    let finished = finish(
        &node, peer, &job_id, &offer, &outcome, &dir, started_ms, ended_ms,
    )
    .or_else(|e| {
        // The results could not be kept (a full disk, most likely: the stdio files are
        // written here). A signed rejected result saying why still reaches the requestor,
        // which then tries elsewhere, instead of a job the node silently forgets.
        tracing::error!(job = %job_id, "keeping the results: {e}");
        let _ = remove_tree(&output_dir);
        outcome = Outcome {
            usage: outcome.usage.clone(),
            ..Outcome::rejected(format!(
                "the provider could not keep the run's results: {e}"
            ))
        };
        finish(
            &node, peer, &job_id, &offer, &outcome, &dir, started_ms, ended_ms,
        )
    });
    drop(claim);
    match finished {
        Ok((result, served)) => {
            if let Err(e) = node.inner.store.finished(
                &job_id,
                outcome.status.as_str(),
                outcome.exit_code,
                &outcome.outputs,
                outcome.reason.as_deref(),
            ) {
                tracing::error!(job = %job_id, "job store: {e}");
            }
            tracing::info!(job = %job_id, status = %outcome.status, "finished");
            let mut jobs = node.jobs();
            match jobs.get_mut(&job_id) {
                Some(j) => {
                    j.state = JobState::Finished;
                    j.result = Some(Arc::new(result));
                    j.served = served;
                    j.finished_at = Some(Instant::now());
                    j.task = None;
                }
                // Cancelled meanwhile.
                None => {
                    for id in &served {
                        node.inner.blobs.release(id);
                    }
                }
            }
        }
        Err(e) => {
            tracing::error!(job = %job_id, "delivering the result: {e}");
            node.record(&job_id, Stage::Interrupted, Some(&e));
            if let Some(j) = node.jobs().remove(&job_id) {
                cleanup(&node, &j);
            }
        }
    }
}

/// Test fault: append to the first output file, then describe the changed output honestly.
fn inject_wrong_output(outcome: &mut Outcome, output_dir: &Path) {
    let Some(first) = outcome.files.first_mut() else {
        return;
    };
    let path = output_dir.join(&first.path);
    let Ok(mut bytes) = std::fs::read(&path) else {
        return;
    };
    bytes.extend_from_slice(b"wrong\n");
    if std::fs::write(&path, &bytes).is_err() {
        return;
    }
    first.size = bytes.len() as u64;
    first.blake3 = blake3::hash(&bytes).to_hex().to_string();
    outcome.outputs = output_digest(&outcome.files, &outcome.stdout);
}

fn run_status(s: Status) -> RunStatus {
    RunStatus::parse(s.as_str()).unwrap_or(RunStatus::Rejected)
}

fn cap_text(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Serves a job's outputs and stdio and builds its signed result.
#[allow(clippy::too_many_arguments)]
fn finish(
    node: &Node,
    peer: PeerId,
    job_id: &str,
    offer: &Offer,
    outcome: &Outcome,
    dir: &Path,
    started_ms: u64,
    ended_ms: u64,
) -> Result<(JobResult, Vec<BlobId>), String> {
    let mut served = Vec::new();
    let result = (|| {
        if !dir.exists() {
            crate::fsio::create_private_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let mut stdio = |name: &str, bytes: &[u8]| -> Result<BlobRef, String> {
            let path = dir.join(name);
            std::fs::write(&path, bytes).map_err(|e| format!("{name}: {e}"))?;
            let (id, size) = node
                .inner
                .blobs
                .add(&path)
                .map_err(|e| format!("{name}: {e}"))?;
            served.push(id);
            Ok(BlobRef { id, size })
        };
        let stdout = stdio("stdout", &outcome.stdout)?;
        let stderr = stdio("stderr", &outcome.stderr)?;
        let mut files = Vec::with_capacity(outcome.files.len());
        for f in &outcome.files {
            let (id, size) = node
                .inner
                .blobs
                .add(dir.join("output").join(&f.path))
                .map_err(|e| format!("output {}: {e}", f.path))?;
            served.push(id);
            if id.hex() != f.blake3 || size != f.size {
                return Err(format!("output {} changed after the run", f.path));
            }
            files.push(OutputEntry {
                path: f.path.clone(),
                size,
                blake3: id,
            });
        }
        let usage = ReceiptUsage {
            wall_us: outcome.usage.wall_us,
            fuel: outcome.usage.fuel,
            peak_memory: outcome.usage.peak_memory,
        };
        let status = run_status(outcome.status);
        let body = ReceiptBody {
            job_id: JobId(job_id.to_string()),
            definition: offer.definition.clone(),
            inputs: offer.inputs.clone(),
            params: offer.params.clone(),
            outputs: outcome.outputs.clone(),
            status,
            exit_code: outcome.exit_code,
            usage: usage.clone(),
            provider: String::new(),
            requestor: peer.to_base58(),
            started_ms,
            ended_ms,
        };
        let receipt = Receipt::sign(body, node.client.keypair()).map_err(|e| e.to_string())?;
        Ok(JobResult {
            job_id: JobId(job_id.to_string()),
            outcome: OutcomeSummary {
                status,
                reason: outcome.reason.as_deref().map(|r| cap_text(r, MAX_REASON)),
                exit_code: outcome.exit_code,
                stdout,
                stdout_truncated: outcome.stdout_truncated,
                stderr,
                stderr_truncated: outcome.stderr_truncated,
                outputs: outcome.outputs.clone(),
                dropped: outcome.dropped.len().min(u32::MAX as usize) as u32,
                usage,
            },
            files,
            receipt,
        })
    })();
    match result {
        Ok(r) => Ok((r, served)),
        Err(e) => {
            for id in &served {
                node.inner.blobs.release(id);
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_claims_count_each_other_keep_the_reserve_and_are_given_back_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = NodeConfig::default();
        cfg.paths.data_dir = dir.path().to_path_buf();
        cfg.paths.work_dir = dir.path().to_path_buf();
        cfg.caps.disk_reserve_bytes = 0;
        let free = free_bytes(dir.path()).unwrap();
        let budget = Arc::new(DiskBudget::default());
        // Three fifths of the free space each: one fits, two do not, whatever else the
        // machine writes meanwhile.
        let need = DiskNeed {
            input: free / 5 * 3,
            bundle: 0,
            output: None,
        };
        let a = budget.claim(&cfg, need).unwrap();
        let e = budget.claim(&cfg, need).err().unwrap();
        assert!(
            e.starts_with("not enough free disk space") && e.contains("promised to jobs in flight"),
            "{e}"
        );
        drop(a);
        let mut b = budget.claim(&cfg, need).unwrap();
        // The output limit, once known, is claimed on top, and only once.
        assert!(budget.claim_output(&cfg, &mut b, free).is_err());
        budget.claim_output(&cfg, &mut b, 1).unwrap();
        budget.claim_output(&cfg, &mut b, free).unwrap();
        drop(b);
        assert_eq!(*budget.lock(), 0);
        // The reserve is never handed out.
        cfg.caps.disk_reserve_bytes = free.saturating_mul(2);
        let e = budget.claim(&cfg, need).err().unwrap();
        assert!(e.contains("kept in reserve"), "{e}");
        assert!(disk_low(&cfg).is_some());
        cfg.caps.disk_reserve_bytes = 0;
        assert!(disk_low(&cfg).is_none());
    }
}
