//! The node's registry view: one verified log client kept in memory, asked before every job.
//!
//! It wraps the same verifier `provider exec --registry` uses ([`crate::gate`]), but keeps
//! it between offers (its state file is still written after each sync, so a registry that
//! later forks or rolls back is caught across restarts) and answers with the protocol's
//! typed reasons: `Revoked`, `NotApproved` (pending, rejected, unknown) or
//! `StaleRegistryView` (no fresh verified checkpoint, or an older one than the requestor
//! saw). An unreachable registry does not fail open: the last verified view answers for as
//! long as it is fresh, then every offer is refused as stale.
//!
//! Split views: every checkpoint note a peer gossips that verifies under the log key and
//! names the same origin is compared with the node's verified checkpoint. Same size with
//! another root, or a different size without a valid consistency proof from the registry
//! between the two, means the registry showed different histories to different nodes. The
//! node then logs an alarm, writes both signed notes as evidence to
//! `DATA/alarms/split-view-<origin>.json` and refuses every offer as `StaleRegistryView`
//! until an operator deletes that file (`provider doctor` reports it). A registry that does
//! not answer at all raises nothing: the comparison is retried at the next gossip.
//!
//! What gossip taught the node is counted for `/metrics`: the notes received and the largest
//! tree size of a gossiped checkpoint found to be one history with the view, so an operator
//! (and `demo/examples/gossip.rs`) can see a new checkpoint spread before any offer needs it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pinfold_net::RejectReason;
use pinfold_registry::client::{self, Client, ClientError};
use pinfold_registry::unix_now;
use pinfold_tlog::merkle::verify_consistency;
use pinfold_tlog::{Checkpoint, Hash, Status, Verifier, VerifierConfig};
use serde::{Deserialize, Serialize};
use task_defs::{Definition, DefinitionId};

use crate::gate::GateConfig;

/// Timeout of every registry request the node makes.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(10);

/// Gossiped checkpoints remembered as consistent with the current view, so a peer
/// replaying old (validly signed) notes costs one proof request each, not one per message.
const CONSISTENT_CACHE: usize = 64;

/// File-name prefix of split-view alarms in the alarm directory.
pub const SPLIT_VIEW_PREFIX: &str = "split-view-";

/// The directory of alarms an operator must look at, under the node's data dir.
pub fn alarm_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("alarms")
}

/// The split-view alarm files in `dir`, sorted; none when it does not exist.
pub fn split_view_alarms(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(SPLIT_VIEW_PREFIX) && name.ends_with(".json")
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// One side of a split view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointEvidence {
    /// Tree size.
    pub size: u64,
    /// Root hash, base64.
    pub root: String,
    /// Signing time, Unix seconds.
    pub time: u64,
    /// The signed note, when the node has it (the gossiped side always does).
    pub note: Option<String>,
}

impl CheckpointEvidence {
    fn new(cp: &Checkpoint, note: Option<String>) -> CheckpointEvidence {
        CheckpointEvidence {
            size: cp.size,
            root: cp.root.to_base64(),
            time: cp.time,
            note,
        }
    }
}

/// What a split-view alarm file holds: both checkpoints, signed by the same log key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitViewEvidence {
    /// Always `split-view`.
    pub kind: String,
    /// The log's origin.
    pub origin: String,
    /// The registry URL the node syncs from.
    pub registry: String,
    /// The peer that gossiped the other checkpoint.
    pub peer: String,
    /// Why the two are not one history.
    pub reason: String,
    /// When it was detected, Unix seconds.
    pub detected_at: u64,
    /// The node's own verified checkpoint.
    pub local: CheckpointEvidence,
    /// The gossiped one.
    pub gossiped: CheckpointEvidence,
}

/// A checkpoint by (size, root).
type Point = (u64, Hash);

/// The view's checkpoint and gossiped ones proven consistent with it (bounded).
type ConsistentCache = (Option<Point>, VecDeque<Point>);

/// The outcome of comparing a gossiped checkpoint with the view.
enum Comparison {
    /// One history.
    Consistent,
    /// Two histories, and why.
    Split(String),
    /// Could not tell now (registry unreachable or overloaded); try again later.
    Unknown(String),
}

/// A verified, in-memory view of one registry.
#[derive(Debug)]
pub struct RegistryView {
    cfg: GateConfig,
    client: Client,
    sync_interval: Duration,
    verifier: Mutex<Option<(Verifier, Option<Instant>)>>,
    /// Where split-view alarms are written; without it an alarm lasts until restart.
    alarm_dir: Option<PathBuf>,
    /// Raised when there is no alarm dir to hold the alarm.
    alarmed: AtomicBool,
    /// The signed note of the view's checkpoint, kept as evidence.
    local_note: Mutex<Option<(u64, Hash, Vec<u8>)>>,
    /// Checkpoints proven consistent with the view.
    consistent: Mutex<ConsistentCache>,
    /// Tree size and time of the last successful sync, read by `/metrics` without taking
    /// the verifier's lock (held across a sync's network round trips).
    synced: Mutex<Option<(u64, Instant)>>,
    /// Checkpoint notes received over gossip, checked or not.
    gossip_received: AtomicU64,
    /// The largest tree size of a gossiped checkpoint found to be one history with the view.
    gossip_consistent: AtomicU64,
}

impl RegistryView {
    /// A view of the registry `cfg` names, synced at most once per `sync_interval` (a
    /// revocation reaches the node within that interval); nothing is fetched yet.
    pub fn new(cfg: GateConfig, sync_interval: Duration) -> RegistryView {
        let client = Client::with_timeout(&cfg.registry, REGISTRY_TIMEOUT);
        RegistryView {
            cfg,
            client,
            sync_interval,
            verifier: Mutex::new(None),
            alarm_dir: None,
            alarmed: AtomicBool::new(false),
            local_note: Mutex::new(None),
            consistent: Mutex::default(),
            synced: Mutex::new(None),
            gossip_received: AtomicU64::new(0),
            gossip_consistent: AtomicU64::new(0),
        }
    }

    /// Counts a checkpoint note received over gossip, including one dropped unchecked
    /// because a check was already running.
    pub fn gossip_received(&self) {
        self.gossip_received.fetch_add(1, Ordering::Relaxed);
    }

    /// Checkpoint notes received over gossip so far.
    pub fn gossip_notes_received(&self) -> u64 {
        self.gossip_received.load(Ordering::Relaxed)
    }

    /// The largest tree size of a gossiped checkpoint that verified under the log key and
    /// was found to be one history with the view (the view's own checkpoint, or a
    /// consistency proof between them); 0 until there is one. Ahead of
    /// [`RegistryView::sync_status`]'s size, it is a sync the gossip has already scheduled.
    pub fn gossiped_tree_size(&self) -> u64 {
        self.gossip_consistent.load(Ordering::Relaxed)
    }

    fn gossip_consistent(&self, cp: &Checkpoint) {
        self.gossip_consistent.fetch_max(cp.size, Ordering::Relaxed);
    }

    /// The verified log size and the time since the last successful sync, once there was one.
    pub fn sync_status(&self) -> Option<(u64, Duration)> {
        self.synced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|(size, at)| (size, at.elapsed()))
    }

    /// Persists split-view alarms in `dir` (the node uses [`alarm_dir`] of its data dir);
    /// while one is there every offer is refused.
    pub fn with_alarm_dir(mut self, dir: PathBuf) -> RegistryView {
        self.alarm_dir = Some(dir);
        self
    }

    /// The raised split-view alarm, if any: its file, or a note that it is in memory.
    pub fn split_view_alarm(&self) -> Option<String> {
        match &self.alarm_dir {
            Some(dir) => split_view_alarms(dir)
                .first()
                .map(|p| p.display().to_string()),
            None => self
                .alarmed
                .load(Ordering::Acquire)
                .then(|| "in memory (no alarm dir)".to_string()),
        }
    }

    /// The registry's URL.
    pub fn url(&self) -> &str {
        &self.cfg.registry
    }

    fn verifier_config(&self) -> Result<VerifierConfig, String> {
        let origin = match &self.cfg.origin {
            Some(o) => o.clone(),
            None => self
                .client
                .checkpoint()
                .ok()
                .and_then(|n| client::checkpoint_origin(&n))
                .ok_or_else(|| {
                    format!(
                        "registry {} is unreachable or has no checkpoint",
                        self.cfg.registry
                    )
                })?,
        };
        self.cfg.verifier_config(&origin)
    }

    /// Loads the verifier (from its state file) unless it is loaded.
    fn load(&self, guard: &mut Option<(Verifier, Option<Instant>)>) -> Result<(), RejectReason> {
        if guard.is_some() {
            return Ok(());
        }
        let config = self.verifier_config().map_err(|e| {
            tracing::warn!("registry view: {e}");
            RejectReason::StaleRegistryView
        })?;
        let state = self.cfg.state_file(&config.origin).map_err(|e| {
            tracing::warn!("registry view: {e}");
            RejectReason::StaleRegistryView
        })?;
        let v = client::load_verifier(config, state.as_deref()).map_err(|e| {
            tracing::warn!("registry view: {e}");
            RejectReason::StaleRegistryView
        })?;
        *guard = Some((v, None));
        Ok(())
    }

    /// Syncs (blocking) when the sync interval has passed since the last success.
    fn sync_if_due(&self, v: &mut Verifier, last_sync: &mut Option<Instant>, now: u64) {
        let due = last_sync.is_none_or(|t| t.elapsed() >= self.sync_interval);
        match due.then(|| client::sync(&self.client, v, now)) {
            None => {}
            Some(Ok(_)) => {
                *last_sync = Some(Instant::now());
                *self.synced.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((v.size(), Instant::now()));
                if let Ok(Some(path)) = self.cfg.state_file(&v.config().origin)
                    && let Err(e) = client::save_verifier(v, &path)
                {
                    tracing::warn!("saving the registry view: {e}");
                }
            }
            // The last verified view still answers while it is fresh.
            Some(Err(e)) if e.is_verification_failure() => {
                tracing::error!("registry {} does not verify: {e}", self.cfg.registry);
            }
            Some(Err(e)) => tracing::warn!("registry {} sync failed: {e}", self.cfg.registry),
        }
    }

    /// Syncs (blocking) and answers whether `id` may run. `seen_size` is the tree size at
    /// which the requestor saw it approved, if it said.
    pub fn check(&self, id: &DefinitionId, seen_size: Option<u64>) -> Result<(), RejectReason> {
        // Checked before anything else and on every offer, so deleting the file is all an
        // operator does to lift the alarm.
        if let Some(alarm) = self.split_view_alarm() {
            tracing::warn!(
                "refusing {id}: split view of registry {} raised ({alarm}); investigate, then delete the alarm",
                self.cfg.registry
            );
            return Err(RejectReason::StaleRegistryView);
        }
        let mut guard = self.verifier.lock().unwrap_or_else(|e| e.into_inner());
        self.load(&mut guard)?;
        let (v, last_sync) = guard.as_mut().ok_or(RejectReason::StaleRegistryView)?;
        let now = unix_now();
        self.sync_if_due(v, last_sync, now);
        let status = v.status(id, now).map_err(|e| {
            tracing::info!("refusing {id}: {e}");
            RejectReason::StaleRegistryView
        })?;
        if let Some(seen) = seen_size
            && seen > v.size()
        {
            return Err(RejectReason::StaleRegistryView);
        }
        match status {
            Status::Approved => Ok(()),
            Status::Revoked => Err(RejectReason::Revoked),
            _ => Err(RejectReason::NotApproved),
        }
    }

    /// A checkpoint note gossiped by `peer` (blocking; may ask the registry for a proof).
    ///
    /// A note that does not verify under the log key, or names another origin, is ignored.
    /// One that is ahead of the view and proven consistent with it makes the next offer
    /// sync at once (a revocation spreads as fast as the gossip); one that is not one
    /// history with the view raises the split-view alarm. Never trusted otherwise.
    pub fn note_seen(&self, note: &str, peer: &str) {
        let (held, cp) = {
            let mut guard = self.verifier.lock().unwrap_or_else(|e| e.into_inner());
            // A node that has not served an offer yet still compares: load and sync now.
            if guard.is_none() {
                if self.load(&mut guard).is_err() {
                    return;
                }
                if let Some((v, last_sync)) = guard.as_mut() {
                    self.sync_if_due(v, last_sync, unix_now());
                }
            }
            let Some((v, last_sync)) = guard.as_mut() else {
                return;
            };
            let Ok(cp) = Checkpoint::open(note.as_bytes(), &v.config().log_key) else {
                return;
            };
            let Some(held) = v.checkpoint().cloned() else {
                return;
            };
            if cp.origin != v.config().origin {
                return;
            }
            if cp.size == held.size && cp.root == held.root {
                self.gossip_consistent(&cp);
                return;
            }
            if self.known_consistent(&held, &cp) {
                self.gossip_consistent(&cp);
                if cp.size > held.size {
                    *last_sync = None;
                }
                return;
            }
            (held, cp)
        };
        // The proof request runs without the view's lock: offers keep being answered.
        match self.compare(&held, &cp) {
            Comparison::Consistent => {
                self.remember_consistent(&held, &cp);
                self.gossip_consistent(&cp);
                if cp.size > held.size {
                    let mut guard = self.verifier.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some((_, last_sync)) = guard.as_mut() {
                        *last_sync = None;
                    }
                }
            }
            Comparison::Unknown(why) => tracing::warn!(
                %peer,
                "cannot check gossiped checkpoint {} against the view at {}: {why}",
                cp.size,
                held.size
            ),
            Comparison::Split(why) => self.raise_split_view(&held, &cp, note, peer, &why),
        }
    }

    fn known_consistent(&self, held: &Checkpoint, cp: &Checkpoint) -> bool {
        let cache = self.consistent.lock().unwrap_or_else(|e| e.into_inner());
        cache.0 == Some((held.size, held.root))
            && cache.1.iter().any(|&(s, r)| s == cp.size && r == cp.root)
    }

    fn remember_consistent(&self, held: &Checkpoint, cp: &Checkpoint) {
        let mut cache = self.consistent.lock().unwrap_or_else(|e| e.into_inner());
        // Consistency with an older view says nothing about the current one: start over.
        if cache.0 != Some((held.size, held.root)) {
            *cache = (Some((held.size, held.root)), VecDeque::new());
        }
        if cache.1.len() >= CONSISTENT_CACHE {
            cache.1.pop_front();
        }
        cache.1.push_back((cp.size, cp.root));
    }

    /// Whether `cp` and the view's `held` checkpoint are one history (blocking).
    fn compare(&self, held: &Checkpoint, cp: &Checkpoint) -> Comparison {
        if cp.size == held.size {
            return if cp.root == held.root {
                Comparison::Consistent
            } else {
                Comparison::Split(format!("two roots for tree size {}", cp.size))
            };
        }
        let (old, new) = if held.size < cp.size {
            (held, cp)
        } else {
            (cp, held)
        };
        match self.client.consistency(old.size, new.size) {
            Ok(proof) => match verify_consistency(old.size, new.size, &old.root, &new.root, &proof)
            {
                Ok(()) => Comparison::Consistent,
                Err(e) => Comparison::Split(format!(
                    "the registry's consistency proof from {} to {} does not verify: {e}",
                    old.size, new.size
                )),
            },
            // Silence or overload is not evidence; the next gossip tries again.
            Err(e @ ClientError::Transport { .. }) => Comparison::Unknown(e.to_string()),
            Err(ClientError::Status { status, message }) if status >= 500 || status == 429 => {
                Comparison::Unknown(format!("registry answered {status}: {message}"))
            }
            // The registry signed both sizes yet will not prove one extends the other.
            Err(e) => Comparison::Split(format!(
                "the registry gives no consistency proof from {} to {}: {e}",
                old.size, new.size
            )),
        }
    }

    fn raise_split_view(
        &self,
        held: &Checkpoint,
        cp: &Checkpoint,
        note: &str,
        peer: &str,
        why: &str,
    ) {
        let local_note = self
            .local_note
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(s, r, _)| *s == held.size && *r == held.root)
            .and_then(|(_, _, n)| String::from_utf8(n.clone()).ok());
        let evidence = SplitViewEvidence {
            kind: "split-view".into(),
            origin: held.origin.clone(),
            registry: self.cfg.registry.clone(),
            peer: peer.to_string(),
            reason: why.to_string(),
            detected_at: unix_now(),
            local: CheckpointEvidence::new(held, local_note),
            gossiped: CheckpointEvidence::new(cp, Some(note.to_string())),
        };
        self.alarmed.store(true, Ordering::Release);
        let written = self
            .alarm_dir
            .as_ref()
            .map(|dir| write_alarm(dir, &evidence));
        let place = match &written {
            Some(Ok(p)) => p.display().to_string(),
            Some(Err(e)) => format!("not written: {e}"),
            None => "in memory only".into(),
        };
        tracing::error!(
            %peer,
            "split view of registry {} (origin {:?}): own checkpoint size {} root {}, gossiped checkpoint size {} root {}: {why}; refusing every offer until an operator investigates and deletes the alarm ({place})",
            self.cfg.registry,
            held.origin,
            held.size,
            held.root.to_base64(),
            cp.size,
            cp.root.to_base64(),
        );
    }

    /// Downloads and validates a bundle (blocking); fails unless its identity is `id`.
    pub fn bundle(&self, id: &DefinitionId) -> Result<(Vec<u8>, Definition), String> {
        self.client.bundle(id).map_err(|e| e.to_string())
    }

    /// The signed note of the checkpoint the node's view has verified, fetched from the
    /// registry after a sync when due (blocking). This is what the node gossips; it also
    /// loads and syncs a view no offer has needed yet, so a fresh node joins the
    /// split-view comparison at once.
    pub fn verified_note(&self) -> Option<String> {
        let (held, config) = {
            let mut guard = self.verifier.lock().unwrap_or_else(|e| e.into_inner());
            self.load(&mut guard).ok()?;
            let (v, last_sync) = guard.as_mut()?;
            self.sync_if_due(v, last_sync, unix_now());
            (v.checkpoint()?.clone(), v.config().clone())
        };
        if let Some((size, root, note)) = self
            .local_note
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && *size == held.size
            && *root == held.root
        {
            return String::from_utf8(note.clone()).ok();
        }
        // Fetched without holding the lock: an alarm being raised reads it meanwhile.
        // The note the view syncs to: with witnesses required, the cosigned one (its
        // cosignatures travel with the gossip).
        let note = self.client.checkpoint_for(&config).ok()?;
        let cp = Checkpoint::open(&note, &config.log_key).ok()?;
        if cp.size != held.size || cp.root != held.root {
            return None;
        }
        *self.local_note.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((cp.size, cp.root, note.clone()));
        String::from_utf8(note).ok()
    }
}

/// Writes the alarm for `evidence` into `dir` (atomically; an alarm already there is kept,
/// the first evidence being what the operator needs); returns its path.
fn write_alarm(dir: &Path, evidence: &SplitViewEvidence) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let safe = crate::gate::origin_file_stem(&evidence.origin);
    let path = dir.join(format!("{SPLIT_VIEW_PREFIX}{safe}.json"));
    if path.exists() {
        return Ok(path);
    }
    let body = serde_json::to_vec_pretty(evidence).map_err(std::io::Error::other)?;
    pinfold_base::fs::write_atomic(&path, &body, pinfold_base::fs::Durability::Durable)?;
    Ok(path)
}
