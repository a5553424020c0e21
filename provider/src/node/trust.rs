//! The node's registry view: one verified log client kept in memory, asked before every job.
//!
//! It wraps the same verifier `provider exec --registry` uses ([`crate::gate`]), but keeps
//! it between offers (its state file is still written after each sync, so a registry that
//! later forks or rolls back is caught across restarts) and answers with the protocol's
//! typed reasons: `Revoked`, `NotApproved` (pending, rejected, unknown) or
//! `StaleRegistryView` (no fresh verified checkpoint, or an older one than the requestor
//! saw). An unreachable registry does not fail open: the last verified view answers for as
//! long as it is fresh, then every offer is refused as stale.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use pinfold_net::RejectReason;
use task_defs::registry::client::{self, Client};
use task_defs::registry::unix_now;
use task_defs::tlog::{Checkpoint, NoteVerifier, Status, Verifier, VerifierConfig};
use task_defs::{Definition, DefinitionId};

use crate::gate::{GateConfig, state_file};

/// Timeout of every registry request the node makes.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(10);

/// A verified, in-memory view of one registry.
#[derive(Debug)]
pub struct RegistryView {
    cfg: GateConfig,
    client: Client,
    sync_interval: Duration,
    verifier: Mutex<Option<(Verifier, Option<Instant>)>>,
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
        Ok(VerifierConfig {
            log_key: NoteVerifier::new(&origin, self.cfg.log_key)
                .map_err(|e| format!("registry origin {origin:?}: {e}"))?,
            origin,
            reviewers: self.cfg.reviewers.clone(),
            threshold: self.cfg.threshold,
            max_age_secs: self.cfg.max_age_secs,
        })
    }

    /// Syncs (blocking) and answers whether `id` may run. `seen_size` is the tree size at
    /// which the requestor saw it approved, if it said.
    pub fn check(&self, id: &DefinitionId, seen_size: Option<u64>) -> Result<(), RejectReason> {
        let mut guard = self.verifier.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let config = self.verifier_config().map_err(|e| {
                tracing::warn!("registry view: {e}");
                RejectReason::StaleRegistryView
            })?;
            let state = self
                .cfg
                .state_dir
                .as_ref()
                .map(|d| state_file(d, &config.origin, &self.cfg.log_key));
            let v = client::load_verifier(config, state.as_deref()).map_err(|e| {
                tracing::warn!("registry view: {e}");
                RejectReason::StaleRegistryView
            })?;
            *guard = Some((v, None));
        }
        let (v, last_sync) = guard.as_mut().ok_or(RejectReason::StaleRegistryView)?;
        let now = unix_now();
        let due = last_sync.is_none_or(|t| t.elapsed() >= self.sync_interval);
        match due.then(|| client::sync(&self.client, v, now)) {
            None => {}
            Some(Ok(_)) => {
                *last_sync = Some(Instant::now());
                if let Some(dir) = &self.cfg.state_dir {
                    let path = state_file(dir, &v.config().origin, &self.cfg.log_key);
                    if let Err(e) = client::save_verifier(v, &path) {
                        tracing::warn!("saving the registry view: {e}");
                    }
                }
            }
            // The last verified view still answers while it is fresh.
            Some(Err(e)) if e.is_verification_failure() => {
                tracing::error!("registry {} does not verify: {e}", self.cfg.registry);
            }
            Some(Err(e)) => tracing::warn!("registry {} sync failed: {e}", self.cfg.registry),
        }
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

    /// A checkpoint note gossiped by a peer: when it verifies under the log key and is
    /// ahead of the node's view, the next offer syncs at once instead of waiting out the
    /// sync interval (a revocation spreads as fast as the gossip). Never trusted otherwise.
    pub fn note_seen(&self, note: &str) {
        let mut guard = self.verifier.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, last_sync)) = guard.as_mut()
            && let Ok(cp) = Checkpoint::open(note.as_bytes(), &v.config().log_key)
            && cp.size > v.size()
        {
            *last_sync = None;
        }
    }

    /// Downloads and validates a bundle (blocking); fails unless its identity is `id`.
    pub fn bundle(&self, id: &DefinitionId) -> Result<(Vec<u8>, Definition), String> {
        self.client.bundle(id).map_err(|e| e.to_string())
    }

    /// The registry's current checkpoint note, if it verifies under the log key and is the
    /// checkpoint the node's view last verified (blocking). This is what the node gossips.
    pub fn verified_note(&self) -> Option<String> {
        let note = self.client.checkpoint().ok()?;
        let guard = self.verifier.lock().unwrap_or_else(|e| e.into_inner());
        let (v, _) = guard.as_ref()?;
        let cp: Checkpoint = Checkpoint::open(&note, &v.config().log_key).ok()?;
        let held = v.checkpoint()?;
        (cp.size == held.size && cp.root == held.root)
            .then(|| String::from_utf8(note).ok())
            .flatten()
    }
}
