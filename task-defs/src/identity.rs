//! The identity of a definition: BLAKE3 over a canonical encoding of manifest and files.
//!
//! The canonical document is specified in `task-defs/SPEC.md`; this module is its only
//! implementation and the tests check it against the SPEC's test vectors. The encoding is
//! written out by hand (sorted keys, no whitespace, integers only) rather than trusting a
//! serializer's defaults, because a feature flag elsewhere in the dependency graph (serde_json's
//! `preserve_order`) could otherwise silently change every identity.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::{Value, json};

use crate::manifest::{Manifest, ParamValue, RuntimeSpec};

/// Prefix of the textual form of an identity.
pub const ID_PREFIX: &str = "blake3:";
/// The `type` member of the canonical document, which also separates domains.
pub const DOCUMENT_TYPE: &str = "pinfold-taskdef/1";

/// A definition identity: 32 bytes of BLAKE3, written `blake3:<64 lower-case hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DefinitionId(pub [u8; 32]);

impl DefinitionId {
    /// Hashes a canonical document.
    pub fn of_document(doc: &[u8]) -> Self {
        DefinitionId(*blake3::hash(doc).as_bytes())
    }

    /// The 64 hex digits without prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for DefinitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ID_PREFIX}{}", self.hex())
    }
}

impl fmt::Debug for DefinitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DefinitionId({self})")
    }
}

/// Why a string is not an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a definition identity (expected blake3:<64 lower-case hex digits>)")]
pub struct ParseIdError(pub String);

impl FromStr for DefinitionId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseIdError(s.chars().take(80).collect());
        pinfold_base::id::parse_hash_text(s)
            .map(DefinitionId)
            .ok_or_else(err)
    }
}

pinfold_base::serde_as_text!(DefinitionId);

/// A file of a definition as the identity sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileDigest {
    /// Path relative to the definition root, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the contents, 64 lower-case hex digits.
    pub blake3: String,
}

impl FileDigest {
    /// Digests one file's contents.
    pub fn of(path: &str, bytes: &[u8]) -> Self {
        FileDigest {
            path: path.to_string(),
            size: bytes.len() as u64,
            blake3: blake3::hash(bytes).to_hex().to_string(),
        }
    }
}

fn param_value_json(v: &ParamValue) -> Value {
    match v {
        ParamValue::Bool(b) => json!(b),
        ParamValue::Int(i) => json!(i),
        ParamValue::Str(s) => json!(s),
    }
}

/// The manifest part of the canonical document, as a JSON value (see SPEC.md §3).
pub fn manifest_value(m: &Manifest) -> Value {
    let runtime = match &m.runtime.spec {
        RuntimeSpec::Wasm { module } => json!({
            "kind": "wasm",
            "module": module,
            "args": m.runtime.args,
        }),
        RuntimeSpec::Docker {
            image,
            user,
            entrypoint,
            workdir,
            isolation,
        } => json!({
            "kind": "docker",
            "image": image.to_string(),
            "user": format!("{}:{}", user.0, user.1),
            "entrypoint": entrypoint,
            "workdir": workdir,
            "isolation": isolation.as_str(),
            "args": m.runtime.args,
        }),
    };
    let params: serde_json::Map<String, Value> = m
        .params
        .iter()
        .map(|(name, p)| {
            (
                name.clone(),
                json!({
                    "type": p.ty.as_str(),
                    "allowed": p.allowed,
                    "default": p.default.as_ref().map(param_value_json),
                    "min": p.min,
                    "max": p.max,
                    "max_len": (p.ty == crate::manifest::ParamType::String).then_some(p.max_len),
                    "description": p.description,
                }),
            )
        })
        .collect();
    let mut secrets = m.capabilities.secrets.clone();
    secrets.sort();
    json!({
        "format": m.format,
        "name": m.name,
        "version": m.version.to_string(),
        "description": m.description,
        "license": m.license,
        "source": m.source,
        "authors": m.authors,
        "runtime": runtime,
        "params": params,
        "limits": {
            "memory": m.limits.memory,
            "timeout_ms": m.limits.timeout_ms,
            "output": m.limits.output,
            "fuel": m.limits.fuel,
            "pids": m.limits.pids,
            "millicpus": m.limits.millicpus,
        },
        "io": { "input": m.io.input, "output": m.io.output },
        "capabilities": {
            "network": m.capabilities.network,
            "deterministic": m.capabilities.deterministic,
            "env": m.capabilities.env,
            "secrets": secrets,
            "wasi": m.capabilities.wasi.as_ref().map(|s| s.iter().map(|c| c.as_str()).collect::<Vec<_>>()),
        },
    })
}

/// Builds the canonical document bytes for a manifest and its files (SPEC.md §2).
pub fn canonical_document(m: &Manifest, files: &[FileDigest]) -> Vec<u8> {
    let mut files: Vec<&FileDigest> = files.iter().collect();
    files.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let doc = json!({
        "type": DOCUMENT_TYPE,
        "manifest": manifest_value(m),
        "files": files.iter().map(|f| json!({"path": f.path, "size": f.size, "blake3": f.blake3})).collect::<Vec<_>>(),
    });
    let mut out = Vec::with_capacity(1024);
    write_canonical(&doc, &mut out).expect("the canonical document holds no floats");
    out
}

/// Writes a JSON value canonically: the workspace's one writer,
/// [`pinfold_base::canonical::write_canonical`] (sorted members, no whitespace, strings
/// escaped as serde_json does, integers only).
pub use pinfold_base::canonical::write_canonical;
