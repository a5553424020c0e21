//! Pruning (`provider prune`, and the running node every `retention.interval`): finished
//! jobs' rows and history, stored bundles and compiled artifacts past their retention.
//!
//! Only what the node can do without is removed: a job row in a final stage (never one in
//! flight), a bundle (refetched from the requestor or registry when next offered) and a
//! compiled artifact (recompiled on next use). "Unused" is the later of a file's access
//! and modification times: with Linux's default `relatime`, the access time is refreshed
//! at least daily on use, close enough for retentions counted in days.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::NodeError;
use super::config::NodeConfig;
use super::jobs::{JobStore, now_ms};

/// What one pass removed (or, dry, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Nothing was removed; the counts say what would have been.
    pub dry_run: bool,
    /// Job rows (with their history).
    pub jobs: u64,
    /// Bundle files.
    pub bundles: u64,
    /// Their bytes.
    pub bundle_bytes: u64,
    /// Compiled artifacts.
    pub artifacts: u64,
    /// Their bytes (with their checksum files).
    pub artifact_bytes: u64,
}

/// Prunes the node configured by `config` once, by its `[retention]` settings.
pub fn prune(config: &NodeConfig, dry_run: bool) -> Result<PruneReport, NodeError> {
    let r = &config.retention;
    let data = &config.paths.data_dir;
    let mut report = PruneReport {
        dry_run,
        ..PruneReport::default()
    };
    let store_path = data.join("jobs.sqlite");
    if r.jobs > 0 && store_path.exists() {
        let store = JobStore::open(&store_path)?;
        report.jobs = store.prune(now_ms().saturating_sub(r.jobs), dry_run)?;
    }
    if r.bundles > 0 {
        (report.bundles, report.bundle_bytes) = prune_files(
            &data.join("bundles"),
            &[".bundle"],
            Duration::from_millis(r.bundles),
            dry_run,
        )?;
    }
    if r.artifacts > 0 {
        (report.artifacts, report.artifact_bytes) = prune_files(
            &data.join("artifacts"),
            &[".cwasm"],
            Duration::from_millis(r.artifacts),
            dry_run,
        )?;
    }
    Ok(report)
}

/// When a file was last used: the later of its access and modification times.
fn last_use(m: &std::fs::Metadata) -> SystemTime {
    let modified = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let accessed = m.accessed().unwrap_or(SystemTime::UNIX_EPOCH);
    modified.max(accessed)
}

/// Removes the regular files in `dir` ending in one of `suffixes` unused for `older`, and
/// each one's `<name>.b3` checksum beside it; returns (files, bytes). A missing directory
/// has nothing to prune.
fn prune_files(
    dir: &Path,
    suffixes: &[&str],
    older: Duration,
    dry_run: bool,
) -> Result<(u64, u64), NodeError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(NodeError::Io(format!("{}: {e}", dir.display()))),
    };
    let cutoff = SystemTime::now()
        .checked_sub(older)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let (mut files, mut bytes) = (0, 0);
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !suffixes.iter().any(|s| name.ends_with(s)) {
            continue;
        }
        // symlink_metadata: never follow a link out of the directory.
        let Ok(m) = entry.path().symlink_metadata() else {
            continue;
        };
        if !m.is_file() || last_use(&m) >= cutoff {
            continue;
        }
        let path = entry.path();
        let sum = dir.join(format!("{name}.b3"));
        let sum_len = sum.symlink_metadata().map(|m| m.len()).unwrap_or(0);
        if !dry_run {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!("pruning {}: {e}", path.display());
                continue;
            }
            let _ = std::fs::remove_file(&sum);
        }
        files += 1;
        bytes += m.len() + sum_len;
    }
    Ok((files, bytes))
}

/// Prunes every `retention.interval` until `shutdown`; the first pass runs one interval
/// after start, so a restart loop cannot turn into a pruning loop.
pub(super) async fn prune_loop(
    config: NodeConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let every = Duration::from_millis(config.retention.interval);
    if every.is_zero() {
        return;
    }
    let config = std::sync::Arc::new(config);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let c = config.clone();
        match tokio::task::spawn_blocking(move || prune(&c, false)).await {
            Ok(Ok(r)) if r.jobs + r.bundles + r.artifacts > 0 => tracing::info!(
                jobs = r.jobs,
                bundles = r.bundles,
                artifacts = r.artifacts,
                bytes = r.bundle_bytes + r.artifact_bytes,
                "pruned"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("pruning: {e}"),
            Err(e) => tracing::warn!("pruning: {e}"),
        }
    }
}
