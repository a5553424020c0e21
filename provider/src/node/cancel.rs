//! Cancelling a job for its requestor: stop the run, wait until it has let go of the
//! job's directory, remove it, and keep a `cancelled` tombstone until the retention ends.
//!
//! The tombstone is what lets a requestor (a later process, or the one that pressed
//! Ctrl-C) ask afterwards and hear `cancelled` rather than "unknown job", which would be
//! indistinguishable from a provider that restarted and lost the job.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pinfold_net::protocol::ErrorReply;
use pinfold_net::{JobId, JobState, PeerId, Response};

use super::disk::remove_tree;
use super::jobs::Stage;
use super::service::Node;

/// Longest wait for an aborted run to unwind (the wasm guest stops at its next epoch
/// yield, a container's guard removes it) before its directory is removed regardless.
const UNWIND_WAIT: Duration = Duration::from_secs(10);

/// Answers [`pinfold_net::Request::Cancel`]: `Cancelled(true)` when the job was still in
/// flight (now stopped), `Cancelled(false)` when it had finished or was cancelled before.
pub(super) async fn cancel(node: &Arc<Node>, peer: PeerId, job_id: JobId) -> Response {
    let (task, active) = {
        let mut jobs = node.jobs();
        let Some(j) = jobs.get_mut(&job_id.0).filter(|j| j.requestor == peer) else {
            return Response::Error(ErrorReply::UnknownJob);
        };
        if j.state == JobState::Cancelled {
            return Response::Cancelled(false);
        }
        let active = j.result.is_none();
        // Marked first, under the lock: a run that completes meanwhile sees the mark and
        // leaves its result out (see `run_job`), so nothing is served from a removed
        // directory.
        j.state = JobState::Cancelled;
        j.result = None;
        j.finished_at = Some(Instant::now());
        (j.task.take(), active)
    };
    if let Some(t) = &task {
        t.abort();
        // Aborting only takes effect at the run's next await; removing the directory
        // before then would race the executor still writing into it.
        let deadline = Instant::now() + UNWIND_WAIT;
        while !t.is_finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !t.is_finished() {
            tracing::warn!(job = %job_id, "the cancelled run has not unwound; removing its directory anyway");
        }
    }
    if active {
        node.record(
            &job_id.0,
            Stage::Cancelled,
            Some("cancelled by the requestor"),
        );
    }
    // The served outputs and the directory go now; the entry stays as a tombstone that
    // `retire` drops with the other finished jobs.
    let job = {
        let mut jobs = node.jobs();
        jobs.get_mut(&job_id.0)
            .map(|j| (std::mem::take(&mut j.served), j.dir.clone()))
    };
    if let Some((served, dir)) = job {
        for id in &served {
            node.inner.blobs.release(id);
        }
        if let Err(e) = remove_tree(&dir) {
            tracing::warn!("removing {}: {e}", dir.display());
        }
    }
    tracing::info!(job = %job_id, active, "cancelled by the requestor");
    Response::Cancelled(active)
}
