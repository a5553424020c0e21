//! The registry gate of `provider exec`: only definitions approved in a verified log run.
//!
//! The provider's own configuration names the registry's log key, the trusted reviewers and
//! the threshold; the registry supplies nothing but the log. The gate syncs a
//! [`pinfold_tlog::Verifier`] (state persisted per log, next to the artifact cache, so a
//! registry that later rolls back or forks is caught) and lets a definition through only when
//! its verified status is `approved` and the view is fresh. Everything else, including an
//! unreachable registry, is a refusal with a reason: the gate fails closed.
//!
//! With witnesses configured (`--witness VKEY --witness-threshold K`, or `[registry]
//! witnesses` in `provider.toml`), the gate moves only to checkpoints that K of those
//! witnesses cosigned, so a registry that shows this provider a different history than
//! everyone else is refused unless K witnesses were fooled too.

use std::path::{Path, PathBuf};

use pinfold_registry::client::{self, Client, status_name};
use pinfold_registry::unix_now;
use pinfold_tlog::{CosignerKey, NoteVerifier, PublicKey, Status, VerifierConfig, WitnessPolicy};
use task_defs::DefinitionId;

/// Where and whom the gate trusts.
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// Registry base URL.
    pub registry: String,
    /// The log's public key.
    pub log_key: PublicKey,
    /// The log's origin; read from the (key-verified) checkpoint when absent.
    pub origin: Option<String>,
    /// Trusted reviewer keys.
    pub reviewers: Vec<PublicKey>,
    /// Distinct trusted approvals required.
    pub threshold: usize,
    /// Oldest checkpoint to vouch from, in seconds.
    pub max_age_secs: u64,
    /// Directory for the verifier's state files (no persistence when absent).
    pub state_dir: Option<PathBuf>,
    /// Trusted witnesses (their C2SP verifier keys).
    pub witnesses: Vec<CosignerKey>,
    /// How many of them must cosign every checkpoint trusted (`None`: all of them).
    pub witness_threshold: Option<usize>,
}

impl GateConfig {
    /// The witness policy: the configured witnesses, of which the threshold (default: all)
    /// must cosign.
    pub fn witness_policy(&self) -> Result<WitnessPolicy, String> {
        WitnessPolicy::new(
            self.witnesses.iter().cloned(),
            self.witness_threshold.unwrap_or(self.witnesses.len()),
        )
        .map_err(|e| format!("registry witnesses: {e}"))
    }

    /// The verifier configuration for the log named `origin`.
    pub fn verifier_config(&self, origin: &str) -> Result<VerifierConfig, String> {
        Ok(VerifierConfig {
            log_key: NoteVerifier::new(origin, self.log_key)
                .map_err(|e| format!("registry origin {origin:?}: {e}"))?,
            origin: origin.to_string(),
            reviewers: self.reviewers.clone(),
            threshold: self.threshold,
            max_age_secs: self.max_age_secs,
            witnesses: self.witness_policy()?,
        })
    }

    /// This gate's state file for the log named `origin` (see [`state_file`]).
    pub fn state_file(&self, origin: &str) -> Result<Option<PathBuf>, String> {
        let policy = self.witness_policy()?;
        Ok(self
            .state_dir
            .as_ref()
            .map(|d| state_file(d, origin, &self.log_key, &policy)))
    }
}

/// A log origin made safe as part of a file name: at most 64 characters, only ASCII
/// alphanumerics and `-` kept (origins are free text chosen by the registry operator).
pub(crate) fn origin_file_stem(origin: &str) -> String {
    origin
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// The state file of one log: named by origin and key, so two registries never share state,
/// and by the witness policy when it requires cosignatures, so a view verified without
/// witnesses (which may be ahead of the newest cosigned checkpoint) is never mistaken for a
/// witnessed one.
pub fn state_file(
    dir: &Path,
    origin: &str,
    log_key: &PublicKey,
    witnesses: &WitnessPolicy,
) -> PathBuf {
    let safe = origin_file_stem(origin);
    let mut tagged = log_key.to_string();
    if witnesses.is_required() {
        tagged.push_str(&format!("\nwitnesses {}", witnesses.threshold()));
        for w in witnesses.witnesses() {
            tagged.push_str(&format!("\n{w}"));
        }
    }
    let tag = blake3::hash(tagged.as_bytes()).to_hex();
    dir.join(format!("{safe}-{}.json", &tag[..16]))
}

/// Checks `id` against the registry: `Ok(())` to run, `Err(reason)` to refuse.
pub fn check(cfg: &GateConfig, id: &DefinitionId) -> Result<(), String> {
    let client = Client::new(&cfg.registry);
    let origin = match &cfg.origin {
        Some(o) => o.clone(),
        None => client
            .checkpoint()
            .ok()
            .and_then(|n| client::checkpoint_origin(&n))
            .ok_or_else(|| {
                format!(
                    "registry {} is unreachable or has no checkpoint",
                    cfg.registry
                )
            })?,
    };
    let config = cfg.verifier_config(&origin)?;
    let state = cfg.state_file(&origin)?;
    let v = client::verified_status(&client, config, state.as_deref(), id, unix_now())
        .map_err(|e| format!("registry {}: {e}", cfg.registry))?;
    match v.status {
        Status::Approved => Ok(()),
        Status::Pending => Err(format!(
            "{id} is pending review: fewer than {} of the trusted reviewers approved it",
            cfg.threshold
        )),
        s => Err(format!(
            "{id} is {} in the registry's verified log",
            status_name(s)
        )),
    }
}
