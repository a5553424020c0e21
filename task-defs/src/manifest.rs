//! The `taskdef.toml` manifest (format 1): schema, typed model, and checks of its own values.
//!
//! Parsing is two-step. Serde reads the TOML into a raw schema that mirrors the file
//! (`deny_unknown_fields` everywhere, so a typo is an error rather than a silently ignored
//! key); then [`parse`] turns the raw values into the typed [`Manifest`], normalising
//! units (`"64MiB"` → bytes, `"10s"` → milliseconds) so that the identity does not depend
//! on how a value was spelled. Every problem becomes a [`Diagnostic`] with the line of the
//! key, found through `toml`'s span-preserving parser.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::diag::{Diagnostic, Diagnostics, Rule};
use crate::footprint::Capability;

mod convert;
mod schema;

/// The file name of the manifest inside a definition.
pub const MANIFEST_FILE: &str = "taskdef.toml";
/// The largest manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Allowed range of `limits.memory` for wasm (32-bit memories cap at 4 GiB).
pub const WASM_MEMORY_RANGE: (u64, u64) = (MIB, 4 * GIB);
/// Allowed range of `limits.memory` for docker (the engine refuses less than 6 MiB).
pub const DOCKER_MEMORY_RANGE: (u64, u64) = (6 * MIB, 64 * GIB);
/// Allowed range of `limits.timeout`, in milliseconds.
pub const TIMEOUT_RANGE_MS: (u64, u64) = (1, 24 * 60 * 60 * 1000);
/// Allowed range of `limits.output`, in bytes.
pub const OUTPUT_RANGE: (u64, u64) = (KIB, 16 * GIB);
/// Allowed range of `limits.fuel`.
pub const FUEL_RANGE: (u64, u64) = (1, 1_000_000_000_000_000);
/// Allowed range of `limits.pids`.
pub const PIDS_RANGE: (u64, u64) = (1, 32_768);
/// Allowed range of `limits.cpus`, in thousandths of a CPU.
pub const MILLICPUS_RANGE: (u64, u64) = (10, 256_000);
/// Longest value a `string` param may declare or receive unless `max_len` says less.
pub const DEFAULT_STRING_PARAM_MAX: u32 = 256;

// ---------------------------------------------------------------------------------------
// Raw schema: exactly what the TOML file may contain.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    format: i64,
    name: String,
    version: String,
    description: String,
    license: String,
    source: Option<String>,
    #[serde(default)]
    authors: Vec<String>,
    runtime: RawRuntime,
    #[serde(default)]
    params: BTreeMap<String, RawParam>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    io: RawIo,
    #[serde(default)]
    capabilities: RawCapabilities,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    kind: RuntimeKind,
    module: Option<String>,
    image: Option<String>,
    user: Option<String>,
    entrypoint: Option<Vec<String>>,
    workdir: Option<String>,
    isolation: Option<Isolation>,
    #[serde(default)]
    args: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    #[serde(rename = "type")]
    ty: ParamType,
    allowed: Option<Vec<String>>,
    default: Option<toml::Value>,
    min: Option<i64>,
    max: Option<i64>,
    max_len: Option<i64>,
    description: Option<String>,
}

/// A size is written either as a byte count or as a string with a unit (`"64MiB"`).
#[derive(Debug)]
enum RawSize {
    Int(i64),
    Text(String),
}

/// By hand rather than `#[serde(untagged)]`, whose error ("data did not match any variant
/// of untagged enum RawSize") names our internals instead of what the author may write.
impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: a byte count or a string such as \"64MiB\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawSize, E> {
                i64::try_from(v)
                    .map(RawSize::Int)
                    .map_err(|_| E::custom(format!("{v} is too large")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory: Option<RawSize>,
    timeout: Option<String>,
    output: Option<RawSize>,
    fuel: Option<i64>,
    pids: Option<i64>,
    cpus: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIo {
    input: Option<String>,
    output: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapabilities {
    network: Option<bool>,
    deterministic: Option<bool>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    secrets: Vec<String>,
    wasi: Option<Vec<Capability>>,
}

// ---------------------------------------------------------------------------------------
// Typed model.

/// Which executor runs a definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// A WebAssembly module run by wasmtime.
    Wasm,
    /// A digest-pinned container image run by the Docker engine.
    Docker,
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuntimeKind::Wasm => "wasm",
            RuntimeKind::Docker => "docker",
        })
    }
}

/// The weakest isolation a docker definition accepts: the shared [`pinfold_base::Isolation`].
pub use pinfold_base::Isolation;

/// A parsed, normalised manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Always 1 for this format.
    pub format: u32,
    /// `[a-z0-9-]{1,64}`.
    pub name: String,
    /// Semantic version of this definition.
    pub version: semver::Version,
    /// What the task does, for people.
    pub description: String,
    /// Licence of the definition's contents (SPDX expression).
    pub license: String,
    /// Where reviewers find the source: a path in the definition or an `https://` URL.
    pub source: Option<String>,
    /// Who wrote it.
    pub authors: Vec<String>,
    /// How to run it.
    pub runtime: Runtime,
    /// What a requestor may vary, by name.
    pub params: BTreeMap<String, Param>,
    /// Resource limits, all filled in (defaults applied).
    pub limits: Limits,
    /// Guest paths of the input and output directories.
    pub io: Io,
    /// What the task may touch beyond its directories.
    pub capabilities: Capabilities,
}

/// The `[runtime]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// The executor-specific part.
    pub spec: RuntimeSpec,
    /// Arguments, fixed by the definition; `{name}` is filled from declared params only.
    pub args: Vec<String>,
}

impl Runtime {
    /// Which executor this definition needs.
    pub fn kind(&self) -> RuntimeKind {
        match self.spec {
            RuntimeSpec::Wasm { .. } => RuntimeKind::Wasm,
            RuntimeSpec::Docker { .. } => RuntimeKind::Docker,
        }
    }
}

/// Executor-specific runtime settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeSpec {
    /// Run a WebAssembly module.
    Wasm {
        /// Path of the module inside the definition.
        module: String,
    },
    /// Run a container image.
    Docker {
        /// The digest-pinned image.
        image: ImageRef,
        /// Numeric `uid:gid` the container runs as (never root unless provider policy allows).
        user: (u32, u32),
        /// Program and leading arguments inside the image; `args` follow.
        entrypoint: Vec<String>,
        /// Absolute working directory inside the container.
        workdir: String,
        /// The weakest isolation this definition accepts.
        isolation: Isolation,
    },
}

/// A container image pinned by content digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Repository name (`library/busybox`), absent for a bare local image id.
    pub name: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: String,
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{n}@{}", self.digest),
            None => f.write_str(&self.digest),
        }
    }
}

/// Type of a param.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// Free text (bounded length, no control characters).
    String,
    /// A 64-bit signed integer, optionally bounded.
    Int,
    /// `true` or `false`.
    Bool,
    /// One of a fixed list of strings.
    Enum,
}

impl ParamType {
    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Int => "int",
            ParamType::Bool => "bool",
            ParamType::Enum => "enum",
        }
    }
}

/// A typed param value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// For `bool` params.
    Bool(bool),
    /// For `int` params.
    Int(i64),
    /// For `string` and `enum` params.
    Str(String),
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Str(s) => f.write_str(s),
        }
    }
}

/// One declared param.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Its type.
    pub ty: ParamType,
    /// For `enum`: the allowed values.
    pub allowed: Vec<String>,
    /// Value used when the requestor gives none; a param without default is required.
    pub default: Option<ParamValue>,
    /// For `int`: inclusive lower bound.
    pub min: Option<i64>,
    /// For `int`: inclusive upper bound.
    pub max: Option<i64>,
    /// For `string`: longest accepted value in bytes.
    pub max_len: u32,
    /// What it means, for people.
    pub description: Option<String>,
}

impl Param {
    /// Parses and checks a value given as text (`--param NAME=VALUE`) against this param.
    pub fn parse_value(&self, text: &str) -> Result<ParamValue, String> {
        let value = match self.ty {
            ParamType::Bool => match text {
                "true" => ParamValue::Bool(true),
                "false" => ParamValue::Bool(false),
                _ => return Err(format!("expected true or false, got {text:?}")),
            },
            ParamType::Int => ParamValue::Int(
                text.parse::<i64>()
                    .map_err(|_| format!("expected an integer, got {text:?}"))?,
            ),
            ParamType::String | ParamType::Enum => ParamValue::Str(text.to_string()),
        };
        self.check_value(&value)?;
        Ok(value)
    }

    /// Checks that a typed value fits this param (type, range, length, allowed list).
    pub fn check_value(&self, value: &ParamValue) -> Result<(), String> {
        match (self.ty, value) {
            (ParamType::Bool, ParamValue::Bool(_)) => Ok(()),
            (ParamType::Int, ParamValue::Int(i)) => {
                if let Some(min) = self.min
                    && *i < min
                {
                    return Err(format!("{i} is below the minimum {min}"));
                }
                if let Some(max) = self.max
                    && *i > max
                {
                    return Err(format!("{i} is above the maximum {max}"));
                }
                Ok(())
            }
            (ParamType::Enum, ParamValue::Str(s)) => {
                if self.allowed.iter().any(|a| a == s) {
                    Ok(())
                } else {
                    Err(format!(
                        "{s:?} is not one of {}",
                        self.allowed
                            .iter()
                            .map(|a| format!("{a:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
            }
            (ParamType::String, ParamValue::Str(s)) => {
                if s.len() > self.max_len as usize {
                    return Err(format!(
                        "value is {} bytes, longer than max_len {}",
                        s.len(),
                        self.max_len
                    ));
                }
                if s.chars().any(|c| c.is_control()) {
                    return Err("value contains control characters".into());
                }
                Ok(())
            }
            (ty, _) => Err(format!("expected a value of type {}", ty.as_str())),
        }
    }
}

/// The `[limits]` table, defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory cap in bytes.
    pub memory: u64,
    /// Wall-clock cap in milliseconds.
    pub timeout_ms: u64,
    /// Cap on stdout + stderr + output files together, in bytes.
    pub output: u64,
    /// Wasm only: deterministic CPU budget.
    pub fuel: Option<u64>,
    /// Docker only: process count cap.
    pub pids: Option<u64>,
    /// Docker only: CPU cap in thousandths of a CPU.
    pub millicpus: Option<u64>,
}

/// The `[io]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Io {
    /// Guest path where inputs appear, read-only.
    pub input: String,
    /// Guest path of the only writable directory.
    pub output: String,
}

/// The `[capabilities]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Whether the task may use the network at all (providers may still refuse).
    pub network: bool,
    /// Whether two runs on the same inputs must give bit-identical outputs.
    pub deterministic: bool,
    /// Environment given to the task, exactly this and nothing inherited.
    pub env: BTreeMap<String, String>,
    /// Names of secrets a requestor supplies per run; values never live in a definition.
    pub secrets: Vec<String>,
    /// Wasm only: if set, the module's capability footprint must stay within this set.
    pub wasi: Option<BTreeSet<Capability>>,
}

// ---------------------------------------------------------------------------------------
// Locating keys in the source text.

/// Finds the line of a dotted key in the manifest text, for diagnostics.
pub(crate) struct Locator<'a> {
    src: &'a str,
    table: Option<toml::Spanned<toml::de::DeTable<'a>>>,
}

impl<'a> Locator<'a> {
    pub(crate) fn new(src: &'a str) -> Self {
        Locator {
            src,
            table: toml::de::DeTable::parse(src).ok(),
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        let offset = offset.min(self.src.len());
        self.src.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// The 1-based line where `path` is written, or of its nearest existing parent.
    pub(crate) fn line(&self, path: &[&str]) -> Option<usize> {
        let table = self.table.as_ref()?;
        let mut current: &toml::de::DeTable<'_> = table.get_ref();
        let mut best = None;
        for (i, part) in path.iter().enumerate() {
            let (k, v) = current
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == *part)?;
            best = Some(k.span().start);
            if i + 1 < path.len() {
                match v.get_ref() {
                    toml::de::DeValue::Table(t) => current = t,
                    _ => break,
                }
            }
        }
        best.map(|o| self.line_of(o))
    }

    /// The dotted key whose key or value span contains `offset`, as deep as possible.
    pub(crate) fn key_at(&self, offset: usize) -> Option<String> {
        // A standard table's value span covers only its header, so containment is not
        // enough: the key that owns an offset is the last one that starts before it.
        fn walk(t: &toml::de::DeTable<'_>, offset: usize, prefix: &mut Vec<String>) {
            let owner = t
                .iter()
                .filter(|(k, _)| k.span().start <= offset)
                .max_by_key(|(k, _)| k.span().start);
            if let Some((k, v)) = owner {
                prefix.push(k.get_ref().to_string());
                if let toml::de::DeValue::Table(inner) = v.get_ref() {
                    walk(inner, offset, prefix);
                }
            }
        }
        let table = self.table.as_ref()?;
        let mut path = Vec::new();
        walk(table.get_ref(), offset, &mut path);
        if path.is_empty() {
            None
        } else {
            Some(path.join("."))
        }
    }

    fn span_line(&self, span: Range<usize>) -> usize {
        self.line_of(span.start)
    }
}

/// Builds diagnostics about manifest keys, locating each one.
pub(crate) struct ManifestDiags<'a> {
    loc: Locator<'a>,
    pub(crate) out: Diagnostics,
}

impl<'a> ManifestDiags<'a> {
    pub(crate) fn new(src: &'a str) -> Self {
        ManifestDiags {
            loc: Locator::new(src),
            out: Diagnostics::default(),
        }
    }

    /// Records a problem with the key `path` (dotted), e.g. `["limits", "memory"]`.
    pub(crate) fn at(&mut self, rule: Rule, path: &[&str], message: impl Into<String>) {
        self.out.push(Diagnostic {
            rule,
            file: MANIFEST_FILE.into(),
            line: self.loc.line(path),
            key: if path.is_empty() {
                None
            } else {
                Some(path.join("."))
            },
            message: message.into(),
        });
    }
}

// ---------------------------------------------------------------------------------------
// Units.

/// Parses a byte size: an integer, or a number with a unit B, KiB, MiB, GiB, KB, MB, GB.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: u64 = num
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{text:?} is not a size (examples: \"64MiB\", \"512KiB\", 4096)"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => KIB,
        "MiB" => MIB,
        "GiB" => GIB,
        "KB" | "kB" => 1000,
        "MB" => 1000 * 1000,
        "GB" => 1000 * 1000 * 1000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KiB, MiB or GiB)"
            ));
        }
    };
    num.checked_mul(mult)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses a duration into milliseconds: `"500ms"`, `"10s"`, `"2m"`, `"1h"`, `"7d"`.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: u64 = num.replace('_', "").parse().map_err(|_| {
        format!("{text:?} is not a duration (examples: \"500ms\", \"10s\", \"2m\")")
    })?;
    let mult = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        // For retention settings; a manifest's timeout range ends at 24 h anyway.
        "d" => 86_400_000,
        "" => return Err(format!("{text:?} needs a unit (ms, s, m, h or d)")),
        other => {
            return Err(format!(
                "unknown duration unit {other:?} (use ms, s, m, h or d)"
            ));
        }
    };
    num.checked_mul(mult)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Formats a byte count the way manifests write it.
pub fn format_size(bytes: u64) -> String {
    for (unit, m) in [("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
        if bytes >= m && bytes.is_multiple_of(m) {
            return format!("{}{unit}", bytes / m);
        }
    }
    format!("{bytes}B")
}

// ---------------------------------------------------------------------------------------
// Checks of single values.

/// Is `s` a valid definition name (`[a-z0-9-]{1,64}`)?
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn valid_param_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_lowercase())
        && s.len() <= 64
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

fn valid_env_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && s.len() <= 128
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn valid_secret_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_uppercase())
        && s.len() <= 64
        && b.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
}

/// Is `p` an absolute, normalised guest path (no `.`/`..`, no empty or trailing segment)?
pub fn valid_guest_path(p: &str) -> bool {
    p.len() <= 255
        && p.starts_with('/')
        && p.len() > 1
        && p[1..]
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.contains('\0'))
}

/// Largest uid or gid a docker definition may name: 2^31 - 1.
pub const MAX_USER_ID: u32 = i32::MAX as u32;

/// Checks a docker definition's numeric `uid:gid`; `Err` says why it is refused.
///
/// Group 0 is root's group: whatever is group-writable by root in the image or on a bind
/// would become the task's, and an unprivileged task never needs it. Ids of 2^31 and
/// above are negative to the many tools and syscalls that treat `uid_t`/`gid_t` as
/// signed (`4294967295` is `-1`, which `chown` takes as "leave unchanged"), so what they
/// mean depends on who reads them. Uid 0 with another group is left to provider policy,
/// which refuses root by default. Providers call this again before running, whatever
/// produced the definition.
pub fn check_user_ids(uid: u32, gid: u32) -> Result<(), String> {
    if gid == 0 {
        return Err(format!(
            "gid 0 (the root group) is refused in {uid}:{gid}; use an unprivileged group such as \"65534:65534\""
        ));
    }
    if uid > MAX_USER_ID || gid > MAX_USER_ID {
        return Err(format!(
            "{uid}:{gid} is out of range: uid and gid must be below 2^31 (at most {MAX_USER_ID})"
        ));
    }
    Ok(())
}

/// Parses a docker image reference that must be pinned by digest.
pub fn parse_image(s: &str) -> Result<ImageRef, String> {
    fn is_digest(d: &str) -> bool {
        d.strip_prefix("sha256:").is_some_and(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    }
    if is_digest(s) {
        return Ok(ImageRef {
            name: None,
            digest: s.to_string(),
        });
    }
    match s.split_once('@') {
        Some((name, digest)) if is_digest(digest) => {
            if name.is_empty()
                || name.len() > 255
                || !name.bytes().all(|b| {
                    b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || matches!(b, b'.' | b'_' | b'-' | b'/' | b':')
                })
            {
                return Err(format!("{name:?} is not a valid image name"));
            }
            // A tag next to the digest (`name:tag@sha256:…`) is ignored by the engine and
            // misleads reviewers; refuse it so the manifest says exactly what runs.
            let last = name.rsplit('/').next().unwrap_or(name);
            if last.contains(':') {
                return Err(format!(
                    "{s:?} carries a tag as well as a digest; write name@sha256:<digest> only"
                ));
            }
            Ok(ImageRef {
                name: Some(name.to_string()),
                digest: digest.to_string(),
            })
        }
        Some(_) => Err(format!(
            "{s:?} has a malformed digest (expected sha256: and 64 lower-case hex digits)"
        )),
        None => Err(format!(
            "{s:?} is not pinned by digest: use name@sha256:<64 hex> or a local image id sha256:<64 hex>, never a tag"
        )),
    }
}

/// One piece of an argument template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'a> {
    /// Literal text (with `{{`/`}}` already unescaped to a single brace).
    Text(&'a str),
    /// A `{param}` reference.
    Param(&'a str),
}

/// Splits an argument template into literal text and `{param}` references.
///
/// `{{` and `}}` stand for literal braces; any other brace must form `{name}` with a valid
/// param name. Both [`placeholders`] and [`substitute`] use this, so checking a template and
/// filling it can never disagree about what it means.
fn tokenize(template: &str) -> Result<Vec<Token<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        if i > 0 {
            out.push(Token::Text(&rest[..i]));
        }
        let (brace, after) = (&rest[i..i + 1], &rest[i + 1..]);
        if after.starts_with(brace) {
            out.push(Token::Text(brace));
            rest = &after[1..];
            continue;
        }
        if brace == "}" {
            return Err(format!(
                "unmatched '}}' in {template:?} (write '}}}}' for a literal brace)"
            ));
        }
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in {template:?}"))?;
        let name = &after[..end];
        if !valid_param_name(name) {
            return Err(format!(
                "{{{name}}} in {template:?} is not a valid param name"
            ));
        }
        out.push(Token::Param(name));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Token::Text(rest));
    }
    Ok(out)
}

/// The `{param}` names an argument template references, or an error for a malformed brace.
pub fn placeholders(template: &str) -> Result<Vec<String>, String> {
    Ok(tokenize(template)?
        .into_iter()
        .filter_map(|t| match t {
            Token::Param(n) => Some(n.to_string()),
            Token::Text(_) => None,
        })
        .collect())
}

/// Fills `{param}` placeholders in `template` from `values` (all names must be present).
pub fn substitute(template: &str, values: &BTreeMap<String, ParamValue>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    for t in tokenize(template)? {
        match t {
            Token::Text(s) => out.push_str(s),
            Token::Param(n) => {
                let v = values
                    .get(n)
                    .ok_or_else(|| format!("no value for param {n:?}"))?;
                out.push_str(&v.to_string());
            }
        }
    }
    Ok(out)
}

fn toml_to_param_value(v: &toml::Value) -> Option<ParamValue> {
    match v {
        toml::Value::String(s) => Some(ParamValue::Str(s.clone())),
        toml::Value::Integer(i) => Some(ParamValue::Int(*i)),
        toml::Value::Boolean(b) => Some(ParamValue::Bool(*b)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Parsing.

/// Parses manifest text into a typed [`Manifest`], or every problem found.
///
/// This checks the manifest on its own; [`crate::Definition`] adds the checks that need
/// the definition's files (module present, footprint, secrets).
pub fn parse(src: &str) -> Result<Manifest, Diagnostics> {
    let mut d = ManifestDiags::new(src);
    if src.len() > MAX_MANIFEST_BYTES {
        d.at(
            Rule::TooLarge,
            &[],
            format!(
                "manifest is {} bytes, more than the {MAX_MANIFEST_BYTES} allowed",
                src.len()
            ),
        );
        return Err(d.out);
    }
    let raw: RawManifest = match toml::from_str(src) {
        Ok(r) => r,
        // Valid TOML that does not fit the schema: every problem at once, not just the first.
        Err(_) if schema::problems(src, &mut d) => return Err(d.out),
        Err(e) => {
            let span = e.span();
            let key = span.as_ref().and_then(|s| d.loc.key_at(s.start));
            let line = span.map(|s| d.loc.span_line(s));
            let msg = e.message().trim().trim_end_matches('.').to_string();
            let msg = lower_first(&msg);
            d.out.push(Diagnostic {
                rule: if msg.starts_with("missing field") {
                    Rule::Missing
                } else {
                    Rule::Syntax
                },
                file: MANIFEST_FILE.into(),
                line,
                key,
                message: msg,
            });
            return Err(d.out);
        }
    };
    let m = convert::convert(raw, &mut d);
    if d.out.is_empty() {
        Ok(m.expect("convert returns a manifest when it reports nothing"))
    } else {
        Err(d.out)
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn check_text(d: &mut ManifestDiags<'_>, key: &[&str], s: &str, max: usize, required: bool) {
    if required && s.trim().is_empty() {
        d.at(Rule::Value, key, "must not be empty");
    }
    if s.len() > max {
        d.at(
            Rule::Value,
            key,
            format!("is {} bytes, more than {max}", s.len()),
        );
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        d.at(Rule::Value, key, "contains control characters");
    }
}

fn size_value(d: &mut ManifestDiags<'_>, key: &[&str], raw: &Option<RawSize>, default: u64) -> u64 {
    match raw {
        None => default,
        Some(RawSize::Int(i)) if *i >= 0 => *i as u64,
        Some(RawSize::Int(i)) => {
            d.at(Rule::Value, key, format!("{i} is negative"));
            default
        }
        Some(RawSize::Text(t)) => parse_size(t).unwrap_or_else(|e| {
            d.at(Rule::Value, key, e);
            default
        }),
    }
}

fn in_range(
    d: &mut ManifestDiags<'_>,
    key: &[&str],
    v: u64,
    (lo, hi): (u64, u64),
    show: fn(u64) -> String,
) {
    if v < lo || v > hi {
        d.at(
            Rule::Value,
            key,
            format!("{} is out of range ({} to {})", show(v), show(lo), show(hi)),
        );
    }
}

impl Manifest {
    /// Resolves the values of every param for one run: requestor-given values checked
    /// against their declarations, defaults for the rest; unknown or missing names are errors.
    pub fn resolve_params(
        &self,
        given: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, ParamValue>, String> {
        let mut out = BTreeMap::new();
        for name in given.keys() {
            if !self.params.contains_key(name) {
                return Err(format!("{name:?} is not a param of {}", self.name));
            }
        }
        for (name, p) in &self.params {
            let v = match given.get(name) {
                Some(text) => p
                    .parse_value(text)
                    .map_err(|e| format!("param {name}: {e}"))?,
                None => p
                    .default
                    .clone()
                    .ok_or_else(|| format!("param {name} is required (it has no default)"))?,
            };
            out.insert(name.clone(), v);
        }
        Ok(out)
    }

    /// The argument list for one run, with params substituted.
    pub fn render_args(
        &self,
        values: &BTreeMap<String, ParamValue>,
    ) -> Result<Vec<String>, String> {
        self.runtime
            .args
            .iter()
            .map(|a| substitute(a, values))
            .collect()
    }
}
