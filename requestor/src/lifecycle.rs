//! The job commands of a later process: `requestor jobs`, `status`, `get`, `cancel` and
//! `logs`, over the local [`Store`].
//!
//! A stored job names its provider (peer id and addresses) and carries the session key it
//! was submitted with; each command joins the network with that key, dials the provider
//! directly and asks it with the job protocol's typed requests (`Status`, `Result`,
//! `Cancel`), every one bounded by the network's request timeout. `get` then checks and
//! downloads exactly as `requestor run` does (`run::collect_stored`): receipt
//! signed by that provider and matching what was offered, every file's BLAKE3, the output
//! digest recomputed over the files on disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pinfold_net::protocol::{ErrorReply, JobState, ResultReply};
use pinfold_net::{FetchLimits, JobId, Keypair, Multiaddr, PeerId, Request, Response};
use serde::Serialize;

use crate::run::{Ctx, ReplicaReport, RunError, RunOptions};
use crate::session::{Session, SessionConfig};
use crate::store::{self, JobRow, Store, StoreError};

/// A store error as a run error: an unknown or ambiguous job is a usage error.
pub fn store_error(e: StoreError) -> RunError {
    match e {
        StoreError::NotFound(_) | StoreError::Ambiguous { .. } => RunError::Usage(e.to_string()),
        StoreError::Db { .. } => RunError::Other(e.to_string()),
    }
}

/// Opens the store in `data_dir` (see [`store::data_dir`]).
pub fn open_store(data_dir: Option<&Path>) -> Result<Arc<Store>, RunError> {
    let dir = store::data_dir(data_dir).ok_or_else(|| {
        RunError::Usage("no data directory: pass --data-dir or set PINFOLD_REQUESTOR_DIR".into())
    })?;
    Store::open(&dir).map(Arc::new).map_err(store_error)
}

/// A stored job's provider, reached with the job's own key.
struct Reached {
    session: Arc<Session>,
    peer: PeerId,
}

impl Reached {
    /// Sends `request` about `job` (bounded by the network's request timeout).
    async fn ask(&self, job: &JobRow, request: Request) -> Result<Response, RunError> {
        self.session
            .client
            .request(self.peer, request)
            .await
            .map_err(|e| RunError::NoProvider(format!("provider {}: {e}", job.provider)))
    }
}

async fn reach(job: &JobRow) -> Result<Reached, RunError> {
    let peer: PeerId = job
        .provider
        .parse()
        .map_err(|e| RunError::Other(format!("stored provider id {}: {e}", job.provider)))?;
    let keypair = Keypair::from_protobuf_encoding(&job.key)
        .map_err(|e| RunError::Other(format!("stored session key of job {}: {e}", job.id)))?;
    let bootstrap: Vec<Multiaddr> = job.addrs.iter().filter_map(|a| a.parse().ok()).collect();
    if bootstrap.is_empty() {
        return Err(RunError::NoProvider(format!(
            "no address of provider {} was recorded for job {}",
            job.provider, job.id
        )));
    }
    let session = Session::start(SessionConfig {
        bootstrap,
        mdns: false,
        keypair: Some(keypair),
    })
    .await
    .map_err(|e| RunError::Other(e.to_string()))?;
    if !session.dialled.contains(&peer) {
        return Err(RunError::NoProvider(format!(
            "cannot reach provider {} ({})",
            job.provider,
            session.failures()
        )));
    }
    Ok(Reached {
        session: Arc::new(session),
        peer,
    })
}

/// What `requestor status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The job.
    pub job: JobRow,
    /// What the provider says now: a job state, or `unknown` once it forgot the job
    /// (retention over, or a restart).
    pub provider_state: String,
    /// The signed receipt, once a result arrived (as checked then).
    pub receipt: Option<serde_json::Value>,
}

/// Asks the provider where a stored job is.
pub async fn status(store: &Store, job: JobRow) -> Result<StatusReport, RunError> {
    let r = reach(&job).await?;
    let answer = r
        .ask(
            &job,
            Request::Status {
                job_id: JobId(job.id.clone()),
            },
        )
        .await?;
    let provider_state = match answer {
        Response::Status(s) => state_name(s).to_string(),
        Response::Error(ErrorReply::UnknownJob) => "unknown".to_string(),
        other => return Err(RunError::Other(format!("unexpected answer {other:?}"))),
    };
    if provider_state == "cancelled" && job.state != store::state::CANCELLED {
        let _ = store.set_state(&job.id, &job.provider, store::state::CANCELLED, None);
    }
    let receipt = job
        .receipt
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok());
    Ok(StatusReport {
        job,
        provider_state,
        receipt,
    })
}

fn state_name(s: JobState) -> &'static str {
    match s {
        JobState::Fetching => "fetching",
        JobState::Queued => "queued",
        JobState::Running => "running",
        JobState::Finished => "finished",
        JobState::Cancelled => "cancelled",
    }
}

/// Cancels a stored job on its provider; `Ok(true)` when it was still in flight.
pub async fn cancel(store: &Store, job: &JobRow) -> Result<bool, RunError> {
    let r = reach(job).await?;
    let answer = r
        .ask(
            job,
            Request::Cancel {
                job_id: JobId(job.id.clone()),
            },
        )
        .await?;
    match answer {
        Response::Cancelled(active) => {
            store
                .set_state(
                    &job.id,
                    &job.provider,
                    store::state::CANCELLED,
                    Some("cancelled by the requestor"),
                )
                .map_err(store_error)?;
            Ok(active)
        }
        Response::Error(ErrorReply::UnknownJob) => Err(RunError::Other(format!(
            "provider {} no longer knows job {} (retention over, or it restarted)",
            job.provider, job.id
        ))),
        other => Err(RunError::Other(format!("unexpected answer {other:?}"))),
    }
}

/// Waits (up to `timeout`) for a stored job's result, then downloads and verifies it into
/// `output` (default a fresh `./pinfold-out/run-…`).
pub async fn get(
    store: Arc<Store>,
    job: JobRow,
    output: Option<PathBuf>,
    timeout: Duration,
    progress: bool,
) -> Result<ReplicaReport, RunError> {
    if let Some(o) = &output
        && std::fs::read_dir(o).is_ok_and(|mut d| d.next().is_some())
    {
        return Err(RunError::Usage(format!(
            "--output {}: directory is not empty",
            o.display()
        )));
    }
    let out =
        output.unwrap_or_else(|| PathBuf::from("pinfold-out").join(crate::run::local_run_name()));
    let r = reach(&job).await?;
    let ctx = Ctx::for_job(
        r.session.clone(),
        &job,
        out,
        RunOptions {
            timeout,
            progress,
            store: Some(store),
            ..RunOptions::default()
        },
    );
    let report = crate::run::collect_stored(&ctx, r.peer, &JobId(job.id.clone())).await?;
    // The run's report names the provider and status; `collect` already failed a task
    // that did not succeed, with its verified outputs kept.
    Ok(report)
}

/// A job's stdout and stderr.
#[derive(Debug)]
pub struct Logs {
    /// Captured stdout.
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
    /// Where they came from: the verified download directory, or the provider.
    pub source: String,
}

/// A stored job's stdout and stderr: from its verified download if there is one, else
/// from the provider (each stream fetched by the BLAKE3 named in the result whose
/// receipt is signed by that provider; the whole output digest is only checked by
/// `get`). A job not finished yet is an error saying where it is.
pub async fn logs(job: &JobRow) -> Result<Logs, RunError> {
    if let Some(dir) = &job.dir
        && let (Ok(stdout), Ok(stderr)) = (
            std::fs::read(dir.join("stdout")),
            std::fs::read(dir.join("stderr")),
        )
    {
        return Ok(Logs {
            stdout,
            stderr,
            source: dir.display().to_string(),
        });
    }
    let r = reach(job).await?;
    let answer = r
        .ask(
            job,
            Request::Result {
                job_id: JobId(job.id.clone()),
            },
        )
        .await?;
    let result = match answer {
        Response::Result(ResultReply::Done(res)) => res,
        Response::Result(ResultReply::Pending(s)) => {
            return Err(RunError::Other(format!(
                "job {} is {} on its provider: its logs arrive with its result",
                job.id,
                state_name(s)
            )));
        }
        Response::Error(ErrorReply::UnknownJob) => {
            return Err(RunError::Other(format!(
                "provider {} no longer knows job {} (retention over, or it restarted)",
                job.provider, job.id
            )));
        }
        other => return Err(RunError::Other(format!("unexpected answer {other:?}"))),
    };
    // The network layer already refused a result whose receipt another peer signed.
    if result.job_id.0 != job.id {
        return Err(RunError::Verification {
            provider: job.provider.clone(),
            error: crate::verify::VerifyError::Mismatch("the result is for another job".into()),
        });
    }
    let mut streams = Vec::new();
    for blob in [result.outcome.stdout, result.outcome.stderr] {
        if blob.size > job.output_cap {
            return Err(RunError::Verification {
                provider: job.provider.clone(),
                error: crate::verify::VerifyError::Mismatch(format!(
                    "a log of {} bytes is over the output limit of {}",
                    blob.size, job.output_cap
                )),
            });
        }
        let mut buf: Vec<u8> = Vec::new();
        r.session
            .client
            .fetch_blob(r.peer, blob.id, FetchLimits::exact(blob.size), &mut buf)
            .await
            .map_err(|e| RunError::Other(format!("fetching the logs: {e}")))?;
        streams.push(buf);
    }
    let stderr = streams.pop().unwrap_or_default();
    let stdout = streams.pop().unwrap_or_default();
    Ok(Logs {
        stdout,
        stderr,
        source: format!("provider {}", job.provider),
    })
}
