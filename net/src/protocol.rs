//! The job protocol: typed request-response messages for negotiation and the later phases.
//!
//! A requestor sends an [`Offer`]; the provider answers [`OfferReply::Accept`] with a job id
//! (and which blobs it will pull from the requestor) or [`OfferReply::Reject`] with a typed
//! [`RejectReason`]. The provider then fetches the bundle and inputs by content identity
//! over the blob protocol ([`crate::transfer`]), runs the job, and the requestor polls with
//! [`Request::Status`] and [`Request::Result`] (pull, not push: a requestor behind NAT can
//! always ask, a provider cannot always reach it). The [`JobResult`] names outputs by BLAKE3
//! so the requestor fetches them over the blob protocol and carries a signed [`Receipt`].
//!
//! Messages travel as CBOR with explicit size caps on the codec
//! ([`crate::Limits::max_request_bytes`], [`crate::Limits::max_response_bytes`]); a decoded
//! message must still pass its `validate`, which caps every list and string, before the node
//! sees it. Enums are closed: a new reason or phase is a new protocol version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::id::{BlobId, is_identity};
use crate::receipt::{Receipt, ReceiptUsage, RunStatus};
use crate::secret::{MAX_SECRET_BYTES, SecretValue};

/// Protocol name of the job protocol.
pub const JOB_PROTOCOL: &str = "/pinfold/job/1";

/// Most params in an offer.
pub const MAX_PARAMS: usize = 64;
/// Longest param name.
pub const MAX_PARAM_NAME: usize = 64;
/// Longest param value.
pub const MAX_PARAM_VALUE: usize = 4096;
/// Most inputs in an offer.
pub const MAX_INPUTS: usize = 1024;
/// Longest input name (a relative path in the input directory).
pub const MAX_INPUT_NAME: usize = 255;
/// Most secret names in an offer.
pub const MAX_SECRETS: usize = 32;
/// Longest secret name.
pub const MAX_SECRET_NAME: usize = 64;
/// Longest job id.
pub const MAX_JOB_ID: usize = 64;
/// Longest free-text detail (reject details, reasons).
pub const MAX_DETAIL: usize = 1024;
/// Most output files listed in a result.
pub const MAX_OUTPUT_FILES: usize = 4096;
/// Longest output path.
pub const MAX_OUTPUT_PATH: usize = 1024;
/// Most bytes of all output paths of a result together (so that a result listing
/// [`MAX_OUTPUT_FILES`] files still fits one job-protocol message).
pub const MAX_OUTPUT_PATHS_TOTAL: usize = 256 * 1024;

/// The output limit set, in one place: what a result may list. A provider applies exactly
/// these rules when it collects a run's outputs (anything beyond them makes the run
/// `output_exceeded`, decided by the provider), and a requestor applies them to the result
/// it receives (anything beyond them is then a protocol violation, since an honest
/// provider never sends it). `path` is `/`-separated and relative to the output directory.
pub fn check_output_path(path: &str) -> Result<(), String> {
    check_relative_path("output path", path, MAX_OUTPUT_PATH)
}

/// A provider-chosen job identifier: 1 to [`MAX_JOB_ID`] characters from `A-Z a-z 0-9 _ -`.
///
/// The id comes from a peer and travels into log lines, the provider's work directory and
/// the requestor's reports, so its alphabet leaves nothing to interpret: no `/`, `.`, `\`,
/// spaces or control characters, hence never a path, a parent, a hidden name or a forged
/// log line. Both sides check every id they receive (requests, accepts, results) with
/// [`JobId::validate`]. A requestor still never names a file after one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl JobId {
    /// Checks length and alphabet.
    pub fn validate(&self) -> Result<(), String> {
        let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        if self.0.is_empty() || self.0.len() > MAX_JOB_ID || !self.0.bytes().all(ok) {
            return Err(format!(
                "job id {:?} is not 1 to {MAX_JOB_ID} characters of A-Z, a-z, 0-9, _ and -",
                trunc(&self.0)
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A blob named by identity and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlobRef {
    /// BLAKE3 of the bytes.
    pub id: BlobId,
    /// Size in bytes.
    pub size: u64,
}

/// One input file of an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputEntry {
    /// Path relative to the input directory, `/`-separated.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the content.
    pub blake3: BlobId,
}

/// How strongly a sandbox separates a task from the host: the shared
/// [`pinfold_base::Isolation`].
pub use pinfold_base::Isolation;

/// Resources an offer asks for; zero means "the definition's own limit".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceNeeds {
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Total input bytes (must equal the sum of the input sizes when non-zero).
    pub input_bytes: u64,
    /// Output bytes the requestor is prepared to receive.
    pub output_bytes: u64,
    /// Wall-clock seconds.
    pub timeout_secs: u64,
    /// Weakest isolation the requestor accepts, if it cares.
    pub min_isolation: Option<Isolation>,
}

/// A request to run one definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The definition identity, `blake3:<hex>`.
    pub definition: String,
    /// The bundle's bytes by identity, for a provider that does not hold the definition.
    pub bundle: Option<BlobRef>,
    /// Params as text (`NAME` → `VALUE`), checked by the provider against the manifest.
    pub params: BTreeMap<String, String>,
    /// Input files, fetched by the provider from the requestor by identity.
    pub inputs: Vec<InputEntry>,
    /// Resources asked for.
    pub needs: ResourceNeeds,
    /// Names of the secrets the requestor supplies for this run.
    pub secrets: Vec<String>,
    /// The secret values by name (exactly the names in `secrets`). They travel only in
    /// this Noise-encrypted request, never in gossip or receipts; `Debug` redacts them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_values: BTreeMap<String, SecretValue>,
    /// Tree size of the registry checkpoint at which the requestor saw the definition
    /// approved; a provider whose verified view is older answers `StaleRegistryView`.
    pub registry_size: Option<u64>,
}

fn check_text(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() || s.len() > max {
        return Err(format!("{what} must be 1 to {max} bytes"));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{what} holds control characters"));
    }
    Ok(())
}

fn check_relative_path(what: &str, s: &str, max: usize) -> Result<(), String> {
    check_text(what, s, max)?;
    if s.starts_with('/') || s.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(format!(
            "{what} {:?} is not a normalised relative path",
            trunc(s)
        ));
    }
    Ok(())
}

fn trunc(s: &str) -> String {
    s.chars().take(80).collect()
}

impl Offer {
    /// Checks every cap and shape; the provider calls this before any policy decision.
    pub fn validate(&self) -> Result<(), String> {
        if !is_identity(&self.definition) {
            return Err("definition is not an identity".into());
        }
        if self.params.len() > MAX_PARAMS {
            return Err(format!("more than {MAX_PARAMS} params"));
        }
        for (k, v) in &self.params {
            check_text("param name", k, MAX_PARAM_NAME)?;
            if v.len() > MAX_PARAM_VALUE {
                return Err(format!(
                    "param {:?} longer than {MAX_PARAM_VALUE} bytes",
                    trunc(k)
                ));
            }
        }
        if self.inputs.len() > MAX_INPUTS {
            return Err(format!("more than {MAX_INPUTS} inputs"));
        }
        let mut names = std::collections::BTreeSet::new();
        let mut total: u64 = 0;
        for i in &self.inputs {
            check_relative_path("input name", &i.name, MAX_INPUT_NAME)?;
            if !names.insert(i.name.as_str()) {
                return Err(format!("input {:?} listed twice", trunc(&i.name)));
            }
            total = total
                .checked_add(i.size)
                .ok_or_else(|| "input sizes overflow".to_string())?;
        }
        if self.needs.input_bytes != 0 && self.needs.input_bytes != total {
            return Err("needs.input_bytes differs from the sum of input sizes".into());
        }
        if self.secrets.len() > MAX_SECRETS {
            return Err(format!("more than {MAX_SECRETS} secrets"));
        }
        for s in &self.secrets {
            check_text("secret name", s, MAX_SECRET_NAME)?;
        }
        let names: std::collections::BTreeSet<&str> =
            self.secrets.iter().map(String::as_str).collect();
        if names.len() != self.secrets.len() {
            return Err("a secret name is listed twice".into());
        }
        if !self.secret_values.keys().map(String::as_str).eq(names) {
            return Err("secret values do not match the secret names".into());
        }
        let total = self
            .secret_values
            .values()
            .fold(0usize, |a, v| a.saturating_add(v.len()));
        if total > MAX_SECRET_BYTES {
            return Err(format!("secret values exceed {MAX_SECRET_BYTES} bytes"));
        }
        Ok(())
    }

    /// Total bytes of all inputs (saturating).
    pub fn input_bytes(&self) -> u64 {
        self.inputs
            .iter()
            .fold(0u64, |a, i| a.saturating_add(i.size))
    }
}

/// Why a provider refuses an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The definition is not approved in the provider's registry view.
    #[error("definition is not approved")]
    NotApproved,
    /// The definition has been revoked.
    #[error("definition is revoked")]
    Revoked,
    /// The provider's registry view is older than the requestor's.
    #[error("provider's registry view is stale")]
    StaleRegistryView,
    /// The offer asks for more than the provider's caps.
    #[error("over the provider's caps: {0}")]
    OverCaps(String),
    /// No executor for the definition's runtime (or the isolation asked for).
    #[error("no executor available for this definition")]
    ExecutorUnavailable,
    /// No free slot now; try later or elsewhere.
    #[error("provider is busy")]
    Busy,
    /// The provider's policy does not serve this requestor.
    #[error("requestor is not allowed")]
    RequestorNotAllowed,
    /// The offer is malformed.
    #[error("invalid offer: {0}")]
    Invalid(String),
}

/// What a provider accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    /// The job's id, used in every later request.
    pub job_id: JobId,
    /// Blobs the provider will fetch from the requestor (bundle and inputs it lacks); the
    /// requestor must serve them until the job starts.
    pub fetch: Vec<BlobId>,
    /// Seconds the provider keeps the slot while waiting for those blobs.
    pub hold_secs: u64,
}

/// The answer to an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferReply {
    /// The provider takes the job.
    Accept(Accept),
    /// The provider refuses.
    Reject {
        /// Why.
        reason: RejectReason,
    },
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted, fetching the bundle and inputs.
    Fetching,
    /// Waiting for an executor slot.
    Queued,
    /// Executing.
    Running,
    /// Finished; the result is ready.
    Finished,
    /// Cancelled by the requestor or dropped by the provider.
    Cancelled,
}

/// One output file as returned: the shared [`pinfold_base::OutputFile`], under the name
/// the protocol always used.
pub use pinfold_base::OutputFile as OutputEntry;

/// A run's outcome without the bulky parts (stdio travel as blobs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeSummary {
    /// How the run ended.
    pub status: RunStatus,
    /// Trap message, limit hit, or rejection reason (capped at [`MAX_DETAIL`]).
    pub reason: Option<String>,
    /// The guest's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Captured stdout, fetchable by identity.
    pub stdout: BlobRef,
    /// Whether stdout hit its cap.
    pub stdout_truncated: bool,
    /// Captured stderr, fetchable by identity.
    pub stderr: BlobRef,
    /// Whether stderr hit its cap.
    pub stderr_truncated: bool,
    /// The output digest, `blake3:<hex>` (the provider's `output_digest`).
    pub outputs: String,
    /// Entries of the output directory that were dropped (links, special files).
    pub dropped: u32,
    /// Resources used.
    pub usage: ReceiptUsage,
}

/// A finished job: what happened, what it produced, and the provider's signed receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    /// The job.
    pub job_id: JobId,
    /// The outcome.
    pub outcome: OutcomeSummary,
    /// Returned files, sorted by path.
    pub files: Vec<OutputEntry>,
    /// The receipt binding definition, inputs, params and outputs.
    pub receipt: Receipt,
}

impl JobResult {
    /// Checks caps and that the summary, files and receipt agree with each other.
    pub fn validate(&self) -> Result<(), String> {
        self.job_id.validate()?;
        if let Some(r) = &self.outcome.reason
            && r.len() > MAX_DETAIL
        {
            return Err("reason too long".into());
        }
        if self.files.len() > MAX_OUTPUT_FILES {
            return Err(format!("more than {MAX_OUTPUT_FILES} output files"));
        }
        let mut total = 0usize;
        for f in &self.files {
            check_output_path(&f.path)?;
            total += f.path.len();
        }
        if total > MAX_OUTPUT_PATHS_TOTAL {
            return Err(format!(
                "output paths exceed {MAX_OUTPUT_PATHS_TOTAL} bytes together"
            ));
        }
        let b = &self.receipt.body;
        if b.job_id != self.job_id
            || b.outputs != self.outcome.outputs
            || b.status != self.outcome.status
            || b.exit_code != self.outcome.exit_code
        {
            return Err("receipt does not match the result".into());
        }
        Ok(())
    }
}

/// The answer to a result request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultReply {
    /// Not finished yet.
    Pending(JobState),
    /// Finished.
    Done(Box<JobResult>),
}

/// A request on the job protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Offer a job.
    Offer(Offer),
    /// Ask where a job is.
    Status {
        /// The job.
        job_id: JobId,
    },
    /// Ask for a job's result.
    Result {
        /// The job.
        job_id: JobId,
    },
    /// Cancel a job.
    Cancel {
        /// The job.
        job_id: JobId,
    },
}

impl Request {
    /// Checks every cap and shape.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Request::Offer(o) => o.validate(),
            Request::Status { job_id }
            | Request::Result { job_id }
            | Request::Cancel { job_id } => job_id.validate(),
        }
    }

    /// The answer a node gives when it cannot take the request now.
    pub fn busy_response(&self) -> Response {
        match self {
            Request::Offer(_) => Response::Offer(OfferReply::Reject {
                reason: RejectReason::Busy,
            }),
            _ => Response::Error(ErrorReply::Busy),
        }
    }

    /// The answer to a request that failed validation.
    pub fn invalid_response(&self, detail: String) -> Response {
        match self {
            Request::Offer(_) => Response::Offer(OfferReply::Reject {
                reason: RejectReason::Invalid(detail),
            }),
            _ => Response::Error(ErrorReply::Invalid(detail)),
        }
    }
}

/// A generic failure answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum ErrorReply {
    /// The provider cannot take the request now.
    #[error("provider is busy")]
    Busy,
    /// The request is malformed.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The job is not known to the provider (or not the requestor's).
    #[error("unknown job")]
    UnknownJob,
}

/// A response on the job protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// The answer to [`Request::Offer`].
    Offer(OfferReply),
    /// The answer to [`Request::Status`].
    Status(JobState),
    /// The answer to [`Request::Result`].
    Result(ResultReply),
    /// The answer to [`Request::Cancel`]: whether the job was running or queued.
    Cancelled(bool),
    /// A failure answer to any request.
    Error(ErrorReply),
}

impl Response {
    /// Checks caps and shape of what a provider sent.
    pub fn validate(&self) -> Result<(), String> {
        let check_detail = |s: &str| {
            if s.len() > MAX_DETAIL {
                Err("detail too long".to_string())
            } else {
                Ok(())
            }
        };
        match self {
            Response::Offer(OfferReply::Accept(a)) => {
                a.job_id.validate()?;
                if a.fetch.len() > MAX_INPUTS + 1 {
                    return Err("fetch list too long".into());
                }
                Ok(())
            }
            Response::Offer(OfferReply::Reject {
                reason: RejectReason::OverCaps(d) | RejectReason::Invalid(d),
            }) => check_detail(d),
            Response::Result(ResultReply::Done(r)) => r.validate(),
            Response::Error(ErrorReply::Invalid(d)) => check_detail(d),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job id can never be a path or carry a control character, wherever it arrives.
    #[test]
    fn job_ids_are_a_narrow_alphabet_wherever_they_arrive() {
        let longest = "a".repeat(MAX_JOB_ID);
        for good in ["a", "0123456789abcdef0123", "job_1-B", longest.as_str()] {
            assert_eq!(JobId(good.into()).validate(), Ok(()), "{good:?}");
        }
        let too_long = "a".repeat(MAX_JOB_ID + 1);
        for bad in [
            "",
            ".",
            "..",
            "../../x",
            "/etc/cron.d/x",
            "a/b",
            "a\\b",
            ".hidden",
            "a b",
            "line\nforged",
            "nul\0",
            "caf\u{e9}",
            too_long.as_str(),
        ] {
            let id = JobId(bad.into());
            assert!(id.validate().is_err(), "{bad:?}");
            let accept = Response::Offer(OfferReply::Accept(Accept {
                job_id: id.clone(),
                fetch: Vec::new(),
                hold_secs: 1,
            }));
            assert!(accept.validate().is_err(), "accept with {bad:?}");
            for r in [
                Request::Status { job_id: id.clone() },
                Request::Result { job_id: id.clone() },
                Request::Cancel { job_id: id },
            ] {
                assert!(r.validate().is_err(), "{r:?}");
            }
        }
    }
}
