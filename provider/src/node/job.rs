//! One job from acceptance to its signed result: obtaining the definition (held, the
//! requestor's blob or the registry), fetching the inputs by BLAKE3, running them through
//! the node's [`Executors`](crate::executors::Executors), and serving outputs and stdio
//! with a receipt.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pinfold_net::protocol::OutcomeSummary;
use pinfold_net::{
    BlobId, BlobRef, FetchLimits, JobId, JobResult, JobState, Offer, PeerId, Receipt, ReceiptBody,
    TransferError,
};
use task_defs::{Definition, DefinitionId};
use tokio::sync::OwnedSemaphorePermit;

use super::admission::check_definition;
use super::disk::{DiskClaim, discard_outputs, disk_filled, remove_tree};
use super::jobs::{Stage, now_ms};
use super::service::{MAX_REASON, Node, cap_text, cleanup};
use crate::executor::{Outcome, RunRequest, output_digest};

/// Seconds the node waits for a job's bundle and inputs.
pub(super) const HOLD_SECS: u64 = 120;

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
                    Ok(_) => {
                        node.inner.traffic.received(b.size);
                        break;
                    }
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
                    node.inner.traffic.received(input.size);
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

pub(super) async fn run_job(
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
            node.inner.executors.run(req).await
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
    let ctx = FinishCtx {
        node: &node,
        peer,
        job_id: &job_id,
        offer: &offer,
        dir: &dir,
        started_ms,
        ended_ms: now_ms(),
    };
    let finished = finish(&ctx, &outcome).or_else(|e| {
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
        finish(&ctx, &outcome)
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
            let u = &outcome.usage;
            if let Err(e) = node.inner.store.usage(
                &job_id,
                u.measured.wall_us,
                u.measured.fuel,
                u.measured.peak_memory,
            ) {
                tracing::warn!(job = %job_id, "job store: usage: {e}");
            }
            tracing::info!(job = %job_id, status = %outcome.status, "finished");
            let mut jobs = node.jobs();
            match jobs.get_mut(&job_id) {
                Some(j) if j.state != JobState::Cancelled => {
                    j.state = JobState::Finished;
                    j.result = Some(Arc::new(result));
                    j.served = served;
                    j.finished_at = Some(Instant::now());
                    j.task = None;
                }
                // Cancelled meanwhile (a tombstone, or retired already).
                _ => {
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
    first.blake3 = BlobId::of(&bytes);
    outcome.outputs = output_digest(&outcome.files, &outcome.stdout);
}

/// What a job's result is built from besides its outcome.
#[derive(Clone, Copy)]
struct FinishCtx<'a> {
    node: &'a Node,
    /// The requestor, whom the receipt names.
    peer: PeerId,
    job_id: &'a str,
    offer: &'a Offer,
    /// The job's directory: stdio files are written here, outputs are in `output/`.
    dir: &'a Path,
    started_ms: u64,
    ended_ms: u64,
}

/// Serves a job's outputs and stdio and builds its signed result.
fn finish(ctx: &FinishCtx<'_>, outcome: &Outcome) -> Result<(JobResult, Vec<BlobId>), String> {
    let FinishCtx {
        node,
        peer,
        job_id,
        offer,
        dir,
        started_ms,
        ended_ms,
    } = *ctx;
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
            if id != f.blake3 || size != f.size {
                return Err(format!("output {} changed after the run", f.path));
            }
            files.push(f.clone());
        }
        let usage = outcome.usage.measured.clone();
        let status = outcome.status;
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
