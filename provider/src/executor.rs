//! The executor abstraction shared by every runtime, and the typed outcome of a run.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use pinfold_net::SecretValue;
use serde::{Deserialize, Serialize};
use task_defs::{Definition, RuntimeKind};

/// One run of a definition, with its provider-owned directories already prepared.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The validated definition (its module bytes are still treated as hostile).
    pub definition: Arc<Definition>,
    /// Requestor params as text (`NAME` → `VALUE`), checked against the manifest.
    pub params: BTreeMap<String, String>,
    /// Host directory mounted read-only at `io.input` (staged by the provider).
    pub input_dir: PathBuf,
    /// Host directory mounted writable at `io.output`; must be empty.
    pub output_dir: PathBuf,
    /// Secret values by name, for exactly the names the definition declares (or none).
    /// Held in memory only: executors hand them to the task as environment (wasm) or as
    /// files in a tmpfs (Docker), never write them to disk and never log them.
    pub secrets: BTreeMap<String, SecretValue>,
}

/// The checks every executor makes of a request before spending anything on it: no network
/// (neither runtime offers any, and running without what a task asked for would be a lie),
/// exactly the declared secrets, params that resolve, and an empty output directory.
/// Returns the rendered argument list, or why the run is rejected.
pub fn admit_request(req: &RunRequest) -> Result<Vec<String>, String> {
    let m = &req.definition.manifest;
    if m.capabilities.network {
        return Err("this provider does not offer network access".into());
    }
    check_secrets(&m.capabilities.secrets, &req.secrets)?;
    let args = m
        .resolve_params(&req.params)
        .and_then(|v| m.render_args(&v))?;
    match std::fs::read_dir(&req.output_dir).map(|mut it| it.next().is_none()) {
        Ok(true) => Ok(args),
        Ok(false) => Err("the output directory is not empty".into()),
        Err(e) => Err(format!(
            "output directory {}: {e}",
            req.output_dir.display()
        )),
    }
}

/// Checks that `secrets` supplies exactly the names the definition declares.
pub fn check_secrets(
    declared: &[String],
    secrets: &BTreeMap<String, SecretValue>,
) -> Result<(), String> {
    if let Some(name) = secrets.keys().find(|k| !declared.contains(k)) {
        return Err(format!("secret {name:?} is not declared by the definition"));
    }
    if let Some(name) = declared.iter().find(|d| !secrets.contains_key(*d)) {
        return Err(format!("declared secret {name:?} was not supplied"));
    }
    Ok(())
}

/// Something that runs definitions of one runtime kind.
///
/// `run` never returns an error: every failure, the provider's own included, becomes an
/// [`Outcome`] so that requestors always get a typed answer.
pub trait Executor: Send + Sync {
    /// Which runtime this executor serves.
    fn kind(&self) -> RuntimeKind;
    /// Runs one request to completion, within the definition's limits.
    fn run(&self, req: RunRequest) -> impl Future<Output = Outcome> + Send;
}

/// How a run ended, the one returned file and the output digest: the shared types of
/// [`pinfold_base`], which the job protocol and receipts carry unchanged.
pub use pinfold_base::{OutputFile, Status, output_digest};

/// Something in the output directory that is not returned (never followed, never copied).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// Path relative to the output directory (lossy UTF-8).
    pub path: String,
    /// Why it was dropped.
    pub reason: String,
}

/// Resources a run used: what receipts attest ([`pinfold_base::Usage`]) plus where the
/// compiled module came from. Serialised flat, as one `usage` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Wall-clock time, fuel and peak memory, as receipts carry them.
    #[serde(flatten)]
    pub measured: pinfold_base::Usage,
    /// Where the compiled module came from: `memory`, `disk` or `compiled`.
    pub module_source: Option<String>,
}

/// The typed result of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// How the run ended.
    pub status: Status,
    /// Human-readable detail: trap message, limit hit, or rejection reason.
    pub reason: Option<String>,
    /// The guest's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Captured stdout, the exact bytes the guest wrote (the output digest covers these,
    /// and the node serves these; JSON shows them as lossy UTF-8).
    #[serde(with = "lossy_text")]
    pub stdout: Vec<u8>,
    /// Whether stdout hit its cap.
    pub stdout_truncated: bool,
    /// Captured stderr, the exact bytes (JSON shows them as lossy UTF-8).
    #[serde(with = "lossy_text")]
    pub stderr: Vec<u8>,
    /// Whether stderr hit its cap.
    pub stderr_truncated: bool,
    /// The output digest, `blake3:<hex>`; see [`output_digest`] for its definition.
    pub outputs: String,
    /// Regular files in the output directory, sorted by path (JSON shows each `blake3` as
    /// bare hex, as `provider exec --json` always has).
    #[serde(with = "hex_files")]
    pub files: Vec<OutputFile>,
    /// Entries of the output directory that were not returned.
    pub dropped: Vec<Dropped>,
    /// Resources used.
    pub usage: Usage,
}

impl Outcome {
    /// Stdout as text (lossy UTF-8), for showing it.
    pub fn stdout_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.stdout)
    }

    /// Stderr as text (lossy UTF-8), for showing it.
    pub fn stderr_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.stderr)
    }

    /// An outcome for a run that never started.
    pub fn rejected(reason: impl Into<String>) -> Outcome {
        Outcome {
            status: Status::Rejected,
            reason: Some(reason.into()),
            exit_code: None,
            stdout: Vec::new(),
            stdout_truncated: false,
            stderr: Vec::new(),
            stderr_truncated: false,
            outputs: output_digest(&[], b""),
            files: Vec::new(),
            dropped: Vec::new(),
            usage: Usage::default(),
        }
    }
}

/// Serde for returned files in `provider exec --json`: `blake3` as bare lower-case hex.
mod hex_files {
    use pinfold_base::{BlobId, OutputFile};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct HexFile {
        path: String,
        size: u64,
        blake3: String,
    }

    pub(super) fn serialize<S: Serializer>(files: &[OutputFile], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(files.iter().map(|f| HexFile {
            path: f.path.clone(),
            size: f.size,
            blake3: f.blake3.hex(),
        }))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<OutputFile>, D::Error> {
        Vec::<HexFile>::deserialize(d)?
            .into_iter()
            .map(|f| {
                let blake3: BlobId = format!("{}{}", pinfold_base::ID_PREFIX, f.blake3)
                    .parse()
                    .map_err(serde::de::Error::custom)?;
                Ok(OutputFile {
                    path: f.path,
                    size: f.size,
                    blake3,
                })
            })
            .collect()
    }
}

/// Serde for captured stdio: the exact bytes in memory, text (lossy UTF-8) in JSON, since
/// `provider exec --json` readers want a string and the digest never comes from JSON.
mod lossy_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(String::deserialize(d)?.into_bytes())
    }
}
