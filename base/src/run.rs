//! What a run produced: its [`Status`], its [`Usage`], the [`OutputFile`]s it returned and
//! the [`output_digest`] over them.
//!
//! The provider's executors produce these, the job protocol and receipts carry them, and the
//! requestor recomputes the digest from what it downloaded, all with the same types.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::canonical::write_canonical;
use crate::id::BlobId;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The guest exited with code 0.
    Succeeded,
    /// The guest exited with a non-zero code.
    Failed,
    /// The guest trapped (the trap message is in the outcome's `reason`).
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
    /// Every status, in declaration order.
    pub const ALL: [Status; 7] = [
        Status::Succeeded,
        Status::Failed,
        Status::Trapped,
        Status::TimedOut,
        Status::MemoryExceeded,
        Status::OutputExceeded,
        Status::Rejected,
    ];

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

    /// Parses the stable name.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not a run status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown run status {0:?}")]
pub struct ParseStatusError(pub String);

impl FromStr for Status {
    type Err = ParseStatusError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::parse(s).ok_or_else(|| ParseStatusError(s.chars().take(40).collect()))
    }
}

/// Resources a run used, as measured by the executor and attested in receipts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Wall-clock time of instantiation plus execution, in microseconds.
    pub wall_us: u64,
    /// Fuel consumed (the CPU measure), when the run was metered.
    pub fuel: Option<u64>,
    /// Largest linear memory the guest reached, in bytes.
    pub peak_memory: u64,
}

/// One regular file a run returned from its output directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Path relative to the output directory, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the content.
    pub blake3: BlobId,
}

/// The digest of a run's whole output, `blake3:<hex>`.
///
/// It is the BLAKE3 of the canonical JSON ([`write_canonical`]) of
/// `{"files": [{"blake3": <hex>, "path": <path>, "size": <n>}, ...], "stdout": <hex>}`,
/// where `files` lists every returned regular file sorted by path (byte order), `<hex>` is
/// lower-case hex without prefix, and `stdout` is the BLAKE3 of the raw captured stdout
/// bytes. Stderr, empty directories and dropped entries are deliberately not part of it:
/// stderr carries diagnostics that may legitimately differ, and dropped entries are never
/// returned.
pub fn output_digest(files: &[OutputFile], stdout: &[u8]) -> String {
    let mut sorted: Vec<&OutputFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let doc = serde_json::json!({
        "files": sorted
            .iter()
            .map(|f| serde_json::json!({"blake3": f.blake3.hex(), "path": f.path, "size": f.size}))
            .collect::<Vec<_>>(),
        "stdout": blake3::hash(stdout).to_hex().to_string(),
    });
    let mut out = Vec::new();
    write_canonical(&doc, &mut out).expect("the output document holds no floats");
    format!("blake3:{}", blake3::hash(&out).to_hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip_through_serde_and_text() {
        for st in Status::ALL {
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{}\"", st.as_str()));
            assert_eq!(st.as_str().parse::<Status>().unwrap(), st);
        }
        assert!("Succeeded".parse::<Status>().is_err());
    }

    #[test]
    fn output_digest_does_not_depend_on_file_order() {
        let a = OutputFile {
            path: "a".into(),
            size: 1,
            blake3: BlobId::of(b"a"),
        };
        let b = OutputFile {
            path: "b".into(),
            size: 1,
            blake3: BlobId::of(b"b"),
        };
        assert_eq!(
            output_digest(&[a.clone(), b.clone()], b"out"),
            output_digest(&[b, a], b"out")
        );
        assert!(output_digest(&[], b"").starts_with("blake3:"));
    }
}
