//! Disk admission: free space is claimed per job like any other cap, kept above the
//! reserve, and given back when the job's result is built; a run that filled the disk has
//! its outputs discarded.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::config::NodeConfig;
use super::service::{Lock, MAX_REASON, cap_text};
use crate::executor::{Outcome, Status, output_digest};

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
pub(super) struct DiskNeed {
    pub(super) input: u64,
    pub(super) bundle: u64,
    pub(super) output: Option<u64>,
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
pub(super) fn free_bytes(dir: &Path) -> Result<u64, String> {
    rustix::fs::statvfs(dir)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .map_err(|e| format!("cannot measure free disk space in {}: {e}", dir.display()))
}

/// Whether two directories share a filesystem (assumed when either cannot be read, which
/// counts everything against one and so errs on the side of refusing).
pub(super) fn same_fs(a: &Path, b: &Path) -> bool {
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
    pub(super) fn claim(
        self: &Arc<Self>,
        cfg: &NodeConfig,
        need: DiskNeed,
    ) -> Result<DiskClaim, String> {
        let mut claim = DiskClaim {
            budget: self.clone(),
            bytes: 0,
            output_claimed: false,
        };
        self.add(cfg, &mut claim, need)?;
        Ok(claim)
    }

    /// Adds the output limit, once the definition is known, to a claim made without it.
    pub(super) fn claim_output(
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
pub(super) fn disk_low(cfg: &NodeConfig) -> Option<String> {
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
pub(super) fn disk_filled(work_dir: &Path) -> Option<String> {
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
pub(super) fn discard_outputs(outcome: Outcome, reason: String) -> Outcome {
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
