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

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The guest exited with code 0.
    Succeeded,
    /// The guest exited with a non-zero code.
    Failed,
    /// The guest trapped (the trap message is in `reason`).
    Trapped,
    /// The wall-clock limit or the fuel budget ran out.
    TimedOut,
    /// The guest tried to use more memory (or tables or instances) than allowed.
    MemoryExceeded,
    /// Stdout, stderr or the output directory went over its cap.
    OutputExceeded,
    /// The run never started: validation or provider policy refused it.
    Rejected,
}

impl Status {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Trapped => "trapped",
            Status::TimedOut => "timed_out",
            Status::MemoryExceeded => "memory_exceeded",
            Status::OutputExceeded => "output_exceeded",
            Status::Rejected => "rejected",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One regular file the guest left in its output directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Path relative to the output directory, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the content, lower-case hex.
    pub blake3: String,
}

/// Something in the output directory that is not returned (never followed, never copied).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// Path relative to the output directory (lossy UTF-8).
    pub path: String,
    /// Why it was dropped.
    pub reason: String,
}

/// Resources a run used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Wall-clock time of instantiation plus execution, in microseconds.
    pub wall_us: u64,
    /// Fuel consumed (the CPU measure), when the run was metered.
    pub fuel: Option<u64>,
    /// Largest linear memory the guest reached, in bytes.
    pub peak_memory: u64,
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
    /// Regular files in the output directory, sorted by path.
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

/// The digest of a run's whole output, `blake3:<hex>`.
///
/// It is the BLAKE3 of the canonical JSON (sorted keys, no whitespace, as
/// `task_defs::identity::write_canonical` writes it) of
/// `{"files": [{"blake3": <hex>, "path": <path>, "size": <n>}, ...], "stdout": <hex>}`,
/// where `files` lists every returned regular file sorted by path (byte order) and
/// `stdout` is the lower-case hex BLAKE3 of the raw captured stdout bytes. Stderr,
/// empty directories and dropped entries are deliberately not part of it: stderr carries
/// diagnostics that may legitimately differ, and dropped entries are never returned.
pub fn output_digest(files: &[OutputFile], stdout: &[u8]) -> String {
    let mut sorted: Vec<&OutputFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let doc = serde_json::json!({
        "files": sorted
            .iter()
            .map(|f| serde_json::json!({"blake3": f.blake3, "path": f.path, "size": f.size}))
            .collect::<Vec<_>>(),
        "stdout": blake3::hash(stdout).to_hex().to_string(),
    });
    let mut out = Vec::new();
    task_defs::identity::write_canonical(&doc, &mut out);
    format!("blake3:{}", blake3::hash(&out).to_hex())
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
