//! Admission: every check of an offer that does not need the bundle (allow and deny lists,
//! caps, executors and isolation, the registry view, the disk, a free slot), made before
//! the node accepts, and the checks of a definition once it is known.

use std::collections::HashSet;
use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use pinfold_net::{Accept, BlobId, JobId, JobState, Offer, OfferReply, PeerId, RejectReason};
use task_defs::{Definition, DefinitionId};
use tokio::sync::OwnedSemaphorePermit;

use super::disk::{DiskClaim, DiskNeed, disk_low};
use super::job::{HOLD_SECS, run_job};
use super::jobs::Stage;
use super::service::{Job, MAX_REASON, Node, cap_text};

/// Jobs tracked in memory (running or retained); offers beyond are answered busy.
const MAX_TRACKED_JOBS: usize = 4096;

pub(super) fn reject(reason: RejectReason) -> OfferReply {
    OfferReply::Reject { reason }
}

/// Checks a definition the node holds against its executors and caps, and the offer's
/// params against the definition.
pub(super) fn check_definition(
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
    if !node.inner.executors.has(def.manifest.runtime.kind()) {
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

pub(super) async fn offer_reply(node: &Arc<Node>, peer: PeerId, offer: Offer) -> OfferReply {
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

pub(super) type Decision = (
    Vec<BlobId>,
    Option<Arc<Definition>>,
    OwnedSemaphorePermit,
    DiskClaim,
);

/// Every check that can be made before the bundle is in hand.
pub(super) async fn decide(
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
