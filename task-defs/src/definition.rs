//! A whole task definition: manifest plus files, validated, with its identity.
//!
//! Every way of obtaining a definition (a directory, a bundle, the registry's store) ends
//! in [`Definition::from_parts`], so every consumer gets the same checks and the same
//! identity. A `Definition` value exists only for a valid definition.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, Diagnostics, Rule, file_diag};
use crate::footprint::{self, Footprint};
use crate::identity::{self, DefinitionId, FileDigest};
use crate::manifest::{self, MANIFEST_FILE, Manifest, ManifestDiags, RuntimeSpec};
use crate::secrets;

/// Most files a definition may hold (besides the manifest).
pub const MAX_FILES: usize = 1000;
/// Largest single file, in bytes.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Largest definition, all files together, in bytes.
pub const MAX_TOTAL_BYTES: u64 = 128 * 1024 * 1024;
/// Longest relative path, in bytes.
pub const MAX_PATH_BYTES: usize = 200;
/// Deepest directory nesting.
pub const MAX_DEPTH: usize = 16;

/// Errors from loading a definition.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The definition (or bundle) is invalid; every problem found is listed.
    #[error("invalid definition ({} problem{})", .0.len(), if .0.len() == 1 { "" } else { "s" })]
    Invalid(Diagnostics),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The definition's identity is not the one expected.
    #[error("identity mismatch: expected {expected}, the content hashes to {actual}")]
    IdentityMismatch {
        /// The identity the caller asked for.
        expected: DefinitionId,
        /// The identity of what was actually read.
        actual: DefinitionId,
    },
}

impl Error {
    /// An I/O error on `path` (for tools that read or write definition files).
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// The diagnostics, when the error is an invalid definition.
    pub fn diagnostics(&self) -> Option<&Diagnostics> {
        match self {
            Error::Invalid(d) => Some(d),
            _ => None,
        }
    }
}

/// A valid task definition.
///
/// `#[non_exhaustive]`: code outside this crate cannot build one by struct literal, so
/// every `Definition` comes from [`Definition::from_parts`] (directly or through a loader)
/// and has passed every check. The fields stay public for reading; only tests write them,
/// to get a hostile module past validation, and the provider re-checks what it executes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Definition {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The manifest as written (kept for bundles and reviewers; not part of the identity).
    pub manifest_text: String,
    /// Every other file, by relative path.
    pub files: BTreeMap<String, Vec<u8>>,
    /// The digest of every file, sorted by path.
    pub digests: Vec<FileDigest>,
    /// The identity.
    pub id: DefinitionId,
    /// For wasm definitions, the module's capability footprint.
    pub footprint: Option<Footprint>,
}

/// Every string in a JSON value, object keys included, in document order.
fn json_strings<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(a) => a.iter().for_each(|v| json_strings(v, out)),
        serde_json::Value::Object(o) => {
            for (k, v) in o {
                out.push(k);
                json_strings(v, out);
            }
        }
        _ => {}
    }
}

/// Is `p` a normalised relative path we accept inside a definition?
pub fn valid_rel_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("empty path".into());
    }
    if p.len() > MAX_PATH_BYTES {
        return Err(format!("path is longer than {MAX_PATH_BYTES} bytes"));
    }
    if p.starts_with('/') {
        return Err("absolute path".into());
    }
    if p.contains('\\') {
        return Err("backslash in path".into());
    }
    let segs: Vec<&str> = p.split('/').collect();
    if segs.len() > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} directories"));
    }
    for s in segs {
        match s {
            "" => return Err("empty path segment".into()),
            "." | ".." => return Err("path leaves or re-enters the definition directory".into()),
            s if s.starts_with('.') => return Err("hidden files are not allowed".into()),
            s if s.chars().any(|c| c.is_control()) => {
                return Err("control character in path".into());
            }
            _ => {}
        }
    }
    Ok(())
}

impl Definition {
    /// Loads a definition from a directory or a bundle file.
    pub fn load(path: &Path) -> Result<Definition, Error> {
        let meta = fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            Self::load_dir(path)
        } else if meta.is_file() {
            crate::bundle::read_file(path)
        } else {
            Err(Error::io(
                path,
                std::io::Error::other("not a directory or a regular file"),
            ))
        }
    }

    /// Loads a definition from its directory.
    pub fn load_dir(dir: &Path) -> Result<Definition, Error> {
        let mut diags = Diagnostics::default();
        let mut files = BTreeMap::new();
        let mut total = 0u64;
        let mut manifest_text = None;
        walk(
            dir,
            "",
            0,
            &mut files,
            &mut total,
            &mut manifest_text,
            &mut diags,
        )?;
        let Some(manifest_text) = manifest_text else {
            diags.push(file_diag(
                Rule::Missing,
                MANIFEST_FILE,
                format!("no {MANIFEST_FILE} in {}", dir.display()),
            ));
            return Err(Error::Invalid(diags));
        };
        if !diags.is_empty() {
            // Still parse the manifest so the author sees all problems at once.
            if let Err(Error::Invalid(more)) = Self::from_parts(manifest_text, files) {
                diags.0.extend(more.0);
            }
            return Err(Error::Invalid(diags));
        }
        Self::from_parts(manifest_text, files)
    }

    /// Builds and validates a definition from its manifest text and files (paths relative).
    pub fn from_parts(
        manifest_text: String,
        files: BTreeMap<String, Vec<u8>>,
    ) -> Result<Definition, Error> {
        let mut d = ManifestDiags::new(&manifest_text);
        let parsed = manifest::parse(&manifest_text);

        // File-level checks that need no manifest.
        if files.len() > MAX_FILES {
            d.out.push(file_diag(
                Rule::TooLarge,
                ".",
                format!("more than {MAX_FILES} files"),
            ));
        }
        let total: u64 = files.values().map(|f| f.len() as u64).sum();
        if total > MAX_TOTAL_BYTES {
            d.out.push(file_diag(
                Rule::TooLarge,
                ".",
                format!("files total {total} bytes, more than {MAX_TOTAL_BYTES}"),
            ));
        }
        for (p, bytes) in &files {
            if let Err(e) = valid_rel_path(p) {
                d.out.push(file_diag(Rule::Path, p, e));
            }
            if bytes.len() as u64 > MAX_FILE_BYTES {
                d.out.push(file_diag(
                    Rule::TooLarge,
                    p,
                    format!("file is larger than {MAX_FILE_BYTES} bytes"),
                ));
            }
            for hit in secrets::scan(bytes) {
                d.out.push(file_diag(
                    Rule::Secret,
                    p,
                    format!(
                        "looks like a {} at byte {}; credentials never belong in a definition (declare a secret instead)",
                        hit.kind, hit.offset
                    ),
                ));
            }
        }
        let raw_hits = secrets::scan(manifest_text.as_bytes());
        for hit in &raw_hits {
            let line = manifest_text.as_bytes()[..hit.offset]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            d.out.push(Diagnostic {
                rule: Rule::Secret,
                file: MANIFEST_FILE.into(),
                line: Some(line),
                key: None,
                message: format!(
                    "looks like a {}; credentials never belong in a definition (declare a secret in capabilities.secrets)",
                    hit.kind
                ),
            });
        }

        let manifest = match parsed {
            Ok(m) => m,
            Err(more) => {
                let mut all = more;
                all.0.extend(d.out.0);
                return Err(Error::Invalid(all));
            }
        };

        // The scan above reads the manifest as written, so a credential spelled with TOML
        // escapes ("\u0041KIA...") would pass it while meaning the very same value, and
        // validity would depend on spelling rather than meaning. So every string of the
        // manifest's meaning (its identity document, keys included) is scanned decoded too;
        // a kind the raw scan already reported is not reported again.
        let mut reported: BTreeSet<&str> = raw_hits.iter().map(|h| h.kind).collect();
        let meaning = identity::manifest_value(&manifest);
        let mut strings = Vec::new();
        json_strings(&meaning, &mut strings);
        for s in strings {
            for hit in secrets::scan(s.as_bytes()) {
                if reported.insert(hit.kind) {
                    d.out.push(Diagnostic {
                        rule: Rule::Secret,
                        file: MANIFEST_FILE.into(),
                        line: None,
                        key: None,
                        message: format!(
                            "looks like a {} once its escapes are decoded; credentials never belong in a definition (declare a secret in capabilities.secrets)",
                            hit.kind
                        ),
                    });
                }
            }
        }

        for k in manifest.capabilities.env.keys() {
            if secrets::secret_like_env_name(k) {
                d.at(
                    Rule::Secret,
                    &["capabilities", "env", k.as_str()],
                    format!("{k:?} looks like a credential; list it in capabilities.secrets so the requestor supplies it per run"),
                );
            }
        }

        if let Some(src) = &manifest.source
            && !src.starts_with("https://")
        {
            let dir = src.trim_end_matches('/');
            match valid_rel_path(dir) {
                Err(e) => d.at(Rule::Path, &["source"], format!("{src:?}: {e}")),
                Ok(()) => {
                    let prefix = format!("{dir}/");
                    if !files.contains_key(dir) && !files.keys().any(|k| k.starts_with(&prefix)) {
                        d.at(
                            Rule::Path,
                            &["source"],
                            format!("{src:?} is not a file or directory of the definition"),
                        );
                    }
                }
            }
        }

        let mut fp = None;
        if let RuntimeSpec::Wasm { module } = &manifest.runtime.spec {
            if let Err(e) = valid_rel_path(module) {
                d.at(
                    Rule::Path,
                    &["runtime", "module"],
                    format!("{module:?}: {e}"),
                );
            } else {
                match files.get(module) {
                    None => d.at(
                        Rule::Path,
                        &["runtime", "module"],
                        format!("{module:?} is not a file of the definition"),
                    ),
                    Some(bytes) => match footprint::analyze(bytes) {
                        Err(e) => d.at(
                            Rule::Module,
                            &["runtime", "module"],
                            format!("{module}: {e}"),
                        ),
                        Ok(f) => {
                            let allowed = match &manifest.capabilities.wasi {
                                Some(declared) => {
                                    let mut a = declared.clone();
                                    if !manifest.capabilities.network {
                                        a.remove(&footprint::Capability::Sockets);
                                    }
                                    a
                                }
                                None => footprint::default_allowed(manifest.capabilities.network),
                            };
                            for v in footprint::violations(&f, &allowed) {
                                d.at(
                                    Rule::Capability,
                                    &["runtime", "module"],
                                    format!("{module} {v}"),
                                );
                            }
                            if let Some(init) = f.initial_memory
                                && init > manifest.limits.memory
                            {
                                d.at(
                                    Rule::Value,
                                    &["limits", "memory"],
                                    format!(
                                        "{module} needs {} of memory at start, more than limits.memory {}",
                                        manifest::format_size(init),
                                        manifest::format_size(manifest.limits.memory)
                                    ),
                                );
                            }
                            fp = Some(f);
                        }
                    },
                }
            }
        }

        if !d.out.is_empty() {
            return Err(Error::Invalid(d.out));
        }
        let digests: Vec<FileDigest> = files.iter().map(|(p, b)| FileDigest::of(p, b)).collect();
        let id = DefinitionId::of_document(&identity::canonical_document(&manifest, &digests));
        Ok(Definition {
            manifest,
            manifest_text,
            files,
            digests,
            id,
            footprint: fp,
        })
    }

    /// The canonical document whose BLAKE3 is the identity (SPEC.md §2).
    pub fn canonical_document(&self) -> Vec<u8> {
        identity::canonical_document(&self.manifest, &self.digests)
    }

    /// Total size of the definition's files, manifest included.
    pub fn size(&self) -> u64 {
        self.manifest_text.len() as u64 + self.files.values().map(|f| f.len() as u64).sum::<u64>()
    }

    /// Checks that this definition has the identity the caller expects.
    pub fn expect_id(&self, expected: &DefinitionId) -> Result<(), Error> {
        if &self.id == expected {
            Ok(())
        } else {
            Err(Error::IdentityMismatch {
                expected: *expected,
                actual: self.id,
            })
        }
    }

    /// Writes the definition into `dir`, which must not exist or be empty.
    ///
    /// Files are created with `create_new` under directories this call created, so a
    /// pre-existing link in `dir` cannot redirect a write.
    pub fn write_to(&self, dir: &Path) -> Result<(), Error> {
        match fs::read_dir(dir) {
            Ok(mut it) => {
                if it.next().is_some() {
                    return Err(Error::io(
                        dir,
                        std::io::Error::other("directory is not empty"),
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            Err(e) => return Err(Error::io(dir, e)),
        }
        let write = |rel: &str, bytes: &[u8]| -> Result<(), Error> {
            let target = dir.join(rel);
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)
                .map_err(|e| Error::io(&target, e))?;
            std::io::Write::write_all(&mut f, bytes).map_err(|e| Error::io(&target, e))
        };
        write(MANIFEST_FILE, self.manifest_text.as_bytes())?;
        for (p, bytes) in &self.files {
            write(p, bytes)?;
        }
        Ok(())
    }
}

fn walk(
    root: &Path,
    rel: &str,
    depth: usize,
    files: &mut BTreeMap<String, Vec<u8>>,
    total: &mut u64,
    manifest: &mut Option<String>,
    diags: &mut Diagnostics,
) -> Result<(), Error> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .map_err(|e| Error::io(&dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| Error::io(&dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            diags.push(file_diag(
                Rule::Path,
                &format!("{rel}/{}", name.to_string_lossy()),
                "file name is not UTF-8",
            ));
            continue;
        };
        let path = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let full = entry.path();
        let meta = fs::symlink_metadata(&full).map_err(|e| Error::io(&full, e))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            diags.push(file_diag(
                Rule::FileType,
                &path,
                "symlinks are not allowed in a definition",
            ));
            continue;
        }
        if let Err(e) = valid_rel_path(&path) {
            diags.push(file_diag(Rule::Path, &path, e));
            continue;
        }
        if ft.is_dir() {
            if depth + 1 >= MAX_DEPTH {
                diags.push(file_diag(
                    Rule::TooLarge,
                    &path,
                    format!("nested deeper than {MAX_DEPTH} directories"),
                ));
                continue;
            }
            walk(root, &path, depth + 1, files, total, manifest, diags)?;
            continue;
        }
        if !ft.is_file() {
            diags.push(file_diag(
                Rule::FileType,
                &path,
                "only regular files and directories are allowed (found a device, socket or fifo)",
            ));
            continue;
        }
        if meta.len() > MAX_FILE_BYTES {
            diags.push(file_diag(
                Rule::TooLarge,
                &path,
                format!("file is larger than {MAX_FILE_BYTES} bytes"),
            ));
            continue;
        }
        *total += meta.len();
        if *total > MAX_TOTAL_BYTES {
            diags.push(file_diag(
                Rule::TooLarge,
                ".",
                format!("files total more than {MAX_TOTAL_BYTES} bytes"),
            ));
            return Ok(());
        }
        if files.len() >= MAX_FILES {
            diags.push(file_diag(
                Rule::TooLarge,
                ".",
                format!("more than {MAX_FILES} files"),
            ));
            return Ok(());
        }
        let bytes = read_capped(&full, MAX_FILE_BYTES)?;
        if path == MANIFEST_FILE {
            match String::from_utf8(bytes) {
                Ok(s) => *manifest = Some(s),
                Err(_) => diags.push(file_diag(
                    Rule::Syntax,
                    MANIFEST_FILE,
                    "manifest is not UTF-8",
                )),
            }
        } else {
            files.insert(path, bytes);
        }
    }
    Ok(())
}

/// Reads a regular file, refusing more than `cap` bytes (the file may grow after stat).
pub(crate) fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, Error> {
    let f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = f.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::io(path, std::io::Error::other("not a regular file")));
    }
    let mut buf = Vec::with_capacity(meta.len().min(cap) as usize);
    f.take(cap + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, e))?;
    if buf.len() as u64 > cap {
        return Err(Error::io(
            path,
            std::io::Error::other(format!("larger than {cap} bytes")),
        ));
    }
    Ok(buf)
}

/// The set of capability names, for summaries.
pub fn capability_names(fp: &Footprint) -> BTreeSet<&'static str> {
    fp.capabilities.iter().map(|c| c.as_str()).collect()
}
