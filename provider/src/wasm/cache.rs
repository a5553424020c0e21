//! On-disk cache of precompiled modules and components, keyed by the bytes' BLAKE3, the artifact kind and the engine's configuration fingerprint.
//!
//! Deserialising a precompiled artifact is `unsafe` in wasmtime: the bytes are trusted to
//! be machine code that wasmtime itself produced. So the provider only loads artifacts it
//! wrote: the cache directory is created `0700` (an existing one must be owned by us and
//! closed to group and others), and each artifact sits next to a `.b3` file holding the
//! BLAKE3 of the artifact bytes, which is checked before deserialising. A mismatch (a torn
//! write, corruption, tampering) is treated as a miss and the module is recompiled.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use pinfold_base::fs::{Durability, write_atomic};
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

/// Errors opening the cache directory.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// An I/O operation failed.
    #[error("artifact cache {}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The directory is not private to this user.
    #[error("artifact cache {}: {reason}", path.display())]
    Unsafe {
        /// The path involved.
        path: PathBuf,
        /// Why it is refused.
        reason: &'static str,
    },
}

/// Whether an artifact is a core module or a component.
///
/// Part of the cache key, so that a lookup for one kind never finds the other's artifact
/// (wasmtime would refuse it anyway, but a key that cannot collide keeps the miss cheap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    /// A core WebAssembly module (WASI preview 1).
    Module,
    /// A WebAssembly component (WASI 0.2).
    Component,
}

impl ArtifactKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Module => "module",
            ArtifactKind::Component => "component",
        }
    }
}

/// A loaded artifact of either kind.
#[derive(Clone)]
pub enum Artifact {
    /// A precompiled core module.
    Module(Module),
    /// A precompiled component.
    Component(Component),
}

impl std::fmt::Debug for Artifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Artifact::Module(_) => "Artifact::Module",
            Artifact::Component(_) => "Artifact::Component",
        })
    }
}

/// A private directory of precompiled modules and components.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    max_artifact_bytes: u64,
}

impl ArtifactCache {
    /// Opens (creating `0700` if missing) the cache at `dir`.
    pub fn open(dir: &Path, max_artifact_bytes: u64) -> Result<Self, CacheError> {
        let err = |source| CacheError::Io {
            path: dir.to_path_buf(),
            source,
        };
        match fs::symlink_metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = dir.parent() {
                    fs::create_dir_all(parent).map_err(err)?;
                }
                crate::fsio::create_private_dir(dir).map_err(err)?;
            }
            Err(e) => return Err(err(e)),
            Ok(_) => {}
        }
        let meta = fs::symlink_metadata(dir).map_err(err)?;
        let unsafe_dir = |reason| CacheError::Unsafe {
            path: dir.to_path_buf(),
            reason,
        };
        if !meta.is_dir() {
            return Err(unsafe_dir(
                "is not a directory (symbolic links are refused)",
            ));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(unsafe_dir(
                "is accessible to group or others (must be 0700)",
            ));
        }
        // std has no getuid: compare with the owner of a file we create right now.
        let probe = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
        let me = probe.as_file().metadata().map_err(err)?.uid();
        if meta.uid() != me {
            return Err(unsafe_dir("is owned by another user"));
        }
        Ok(ArtifactCache {
            dir: dir.to_path_buf(),
            max_artifact_bytes,
        })
    }

    /// The cache key of a module or component for an engine configuration.
    pub fn key(hash: &blake3::Hash, kind: ArtifactKind, engine_fingerprint: &str) -> String {
        format!("{}-{}-{engine_fingerprint}", hash.to_hex(), kind.as_str())
    }

    fn paths(&self, key: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{key}.cwasm")),
            self.dir.join(format!("{key}.cwasm.b3")),
        )
    }

    /// Loads the artifact of `kind` for `key`, or `None` on a miss or a failed check.
    pub fn load(&self, engine: &Engine, key: &str, kind: ArtifactKind) -> Option<Artifact> {
        let (art, sum) = self.paths(key);
        let expected = read_small(&sum, 128)?;
        let bytes = read_small(&art, self.max_artifact_bytes)?;
        if blake3::hash(&bytes).to_hex().as_bytes() != expected.as_slice() {
            return None;
        }
        deserialize_trusted(engine, &bytes, kind, Provenance::Cache).ok()
    }

    /// Stores an artifact for `key` (atomically: temp file then rename, checksum last).
    pub fn store(&self, key: &str, artifact: &[u8]) -> io::Result<()> {
        if artifact.len() as u64 > self.max_artifact_bytes {
            return Ok(());
        }
        let (art, sum) = self.paths(key);
        write_atomic(&art, artifact, Durability::Durable)?;
        write_atomic(
            &sum,
            blake3::hash(artifact).to_hex().as_bytes(),
            Durability::Durable,
        )
    }
}

fn read_small(path: &Path, cap: u64) -> Option<Vec<u8>> {
    // The directory is private, so a link in it can only be ours; refuse one anyway.
    if !fs::symlink_metadata(path).ok()?.is_file() {
        return None;
    }
    let f = fs::File::open(path).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut buf = Vec::new();
    f.take(cap + 1).read_to_end(&mut buf).ok()?;
    (buf.len() as u64 <= cap).then_some(buf)
}

/// Where bytes handed to [`deserialize_trusted`] come from; each variant is a reason to
/// trust them as wasmtime's own output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Provenance {
    /// Read back from this provider's private cache, matching the BLAKE3 it recorded.
    Cache,
    /// Written by this provider's own compile worker over a private pipe, just now.
    Worker,
}

/// Deserialises an artifact the provider itself produced (the workspace's one `unsafe`).
#[allow(unsafe_code)]
pub(super) fn deserialize_trusted(
    engine: &Engine,
    bytes: &[u8],
    kind: ArtifactKind,
    provenance: Provenance,
) -> wasmtime::Result<Artifact> {
    // SAFETY: wasmtime requires these bytes to be its own `Engine::precompile_module` /
    // `precompile_component` output. They are, for both provenances:
    // - `Cache`: from the provider's private (0700, owner-checked) cache directory and
    //   matching the BLAKE3 recorded when this provider wrote them from a compile; the key
    //   includes the artifact kind and the engine's compatibility hash;
    // - `Worker`: read from the stdout pipe of the compile worker this process just started
    //   from its own executable (`compiler.rs`), which wrote exactly what
    //   `precompile_module` / `precompile_component` returned under the same engine
    //   configuration.
    // In both cases wasmtime itself also rejects artifacts of the other kind or from an
    // incompatible engine or version.
    let _ = provenance;
    match kind {
        ArtifactKind::Module => unsafe { Module::deserialize(engine, bytes) }.map(Artifact::Module),
        ArtifactKind::Component => {
            unsafe { Component::deserialize(engine, bytes) }.map(Artifact::Component)
        }
    }
}
