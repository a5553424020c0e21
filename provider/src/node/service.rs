//! The node's service loop and shared state: answering requests (offers go to
//! [`admission`](super::admission), jobs to [`job`](super::job)), advertising, gossiping
//! checkpoints, retiring finished jobs.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use pinfold_net::protocol::{ErrorReply, ResultReply};
use pinfold_net::{
    BlobId, Client, Event, Events, ExecutorAd, JobResult, JobState, PeerId, ProviderAd, Request,
    ResourceCaps, Response,
};
use task_defs::Definition;
use tokio::sync::{Semaphore, watch};

use super::admission::offer_reply;
use super::blobs::NodeBlobs;
use super::config::NodeConfig;
use super::disk::{DiskBudget, remove_tree};
use super::job::Fault;
use super::jobs::{JobStore, Stage};
use super::trust::RegistryView;
use super::{NodeError, parse_peers};
use crate::docker::{DockerConfig, DockerExecutor};
use crate::executors::Executors;
use crate::gate::GateConfig;
use crate::wasm::{WasmConfig, WasmExecutor};

/// Definitions kept parsed in memory.
const MAX_CACHED_DEFINITIONS: usize = 64;
/// Longest reason text in a result.
pub(super) const MAX_REASON: usize = pinfold_net::protocol::MAX_DETAIL;

/// `s` cut to at most `max` bytes, on a character boundary.
pub(super) fn cap_text(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Everything the node owns except the network handle.
pub(super) struct Inner {
    pub(super) cfg: NodeConfig,
    pub(super) store: JobStore,
    pub(super) blobs: Arc<NodeBlobs>,
    pub(super) traffic: Arc<super::metrics::Traffic>,
    pub(super) executors: Executors,
    pub(super) registry: Option<Arc<RegistryView>>,
    pub(super) allow: HashSet<PeerId>,
    pub(super) deny: HashSet<PeerId>,
    pub(super) fault: Option<Fault>,
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
        let executors = Executors::new(wasm, docker);
        if executors.is_empty() {
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
                pinfold_tlog::WitnessPolicy::new(
                    witnesses.iter().cloned(),
                    r.witness_threshold.unwrap_or(witnesses.len()),
                )
                .map_err(|e| NodeError::Config(format!("registry.witness_threshold: {e}")))?;
                Some(Arc::new(
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
                ))
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
            traffic: Arc::default(),
            executors,
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
pub(super) struct Job {
    pub(super) requestor: PeerId,
    pub(super) state: JobState,
    pub(super) result: Option<Arc<JobResult>>,
    pub(super) task: Option<tokio::task::AbortHandle>,
    pub(super) dir: PathBuf,
    pub(super) served: Vec<BlobId>,
    pub(super) finished_at: Option<Instant>,
    pub(super) delivered: bool,
}

/// The node: its state and its network handle.
pub(super) struct Node {
    pub(super) inner: Inner,
    pub(super) client: Client,
    pub(super) slots: Arc<Semaphore>,
    pub(super) disk: Arc<DiskBudget>,
    jobs: Mutex<HashMap<String, Job>>,
    definitions: Mutex<HashMap<String, Arc<Definition>>>,
    counter: AtomicU64,
    pub(super) ad_kick: AtomicBool,
    note_check: AtomicBool,
}

pub(super) type Lock<'a, T> = std::sync::MutexGuard<'a, T>;

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

    pub(super) fn jobs(&self) -> Lock<'_, HashMap<String, Job>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn new_job_id(&self) -> String {
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
    pub(super) fn held_definition(&self, id: &str) -> Option<Arc<Definition>> {
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
    pub(super) fn keep_bundle(&self, bytes: &[u8], def: &Arc<Definition>) {
        let path = self.bundle_path(&def.id.to_string());
        // Two jobs of one definition may keep it at once: each through its own temporary.
        if let Err(e) =
            pinfold_base::fs::write_atomic(&path, bytes, pinfold_base::fs::Durability::Atomic)
        {
            // Not fatal: the job has the bundle in memory.
            tracing::warn!("not keeping bundle {}: {e}", def.id);
        }
        self.cache_definition(def.clone());
        self.ad_kick.store(true, Ordering::Relaxed);
    }

    pub(super) fn executors(&self) -> Vec<ExecutorAd> {
        self.inner.executors.ads()
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

    pub(super) fn set_state(&self, id: &str, state: JobState) {
        // A cancelled job stays cancelled, whatever its unwinding run still reports.
        if let Some(j) = self.jobs().get_mut(id)
            && j.state != JobState::Cancelled
        {
            j.state = state;
        }
    }

    pub(super) fn record(&self, id: &str, stage: Stage, detail: Option<&str>) {
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
            if let Some(r) = &node.inner.registry {
                r.gossip_received();
            }
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

pub(super) fn cleanup(node: &Node, job: &Job) {
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
        Request::Cancel { job_id } => super::cancel::cancel(node, peer, job_id).await,
    }
}
