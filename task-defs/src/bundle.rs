//! Bundles: a definition as one deterministic tar file, and its hostile-input-safe reader.
//!
//! Packing writes `taskdef.toml` first, then every file in byte order of its path, as plain
//! ustar entries with fixed metadata (mode 0644, uid/gid 0, mtime 0, no owner names), so the
//! same definition always packs to the same bytes. Reading accepts only what a packer could
//! legitimately have written: regular files (and directory entries, which are ignored) with
//! normalised relative paths, no duplicates, within the caps; and then re-validates the
//! whole definition, so a bundle always yields a definition with a recomputed identity.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use tar::{Archive, EntryType, Header};

use crate::definition::{
    Definition, Error, MAX_FILE_BYTES, MAX_FILES, MAX_TOTAL_BYTES, read_capped, valid_rel_path,
};
use crate::diag::{Diagnostics, Rule, file_diag};
use crate::manifest::{MANIFEST_FILE, MAX_MANIFEST_BYTES};

/// Largest bundle file accepted: the content caps plus tar headers and padding.
pub const MAX_BUNDLE_BYTES: u64 =
    MAX_TOTAL_BYTES + MAX_MANIFEST_BYTES as u64 + (MAX_FILES as u64 + 4) * 1024 + 10240;

fn append(out: &mut tar::Builder<Vec<u8>>, path: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut h = Header::new_ustar();
    h.set_path(path)?;
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(EntryType::Regular);
    h.set_cksum();
    out.append(&h, bytes)
}

/// Packs a definition into bundle bytes.
pub fn pack(def: &Definition) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    // Paths were validated (≤ 200 bytes, normalised), which ustar can always hold, and
    // writing to a Vec cannot fail; so these expects are invariants, not error handling.
    append(&mut b, MANIFEST_FILE, def.manifest_text.as_bytes())
        .expect("manifest fits a ustar entry");
    for (p, bytes) in &def.files {
        append(&mut b, p, bytes).expect("validated paths fit ustar entries");
    }
    b.into_inner().expect("writing to memory cannot fail")
}

/// Reads and validates a bundle from memory.
pub fn read(bytes: &[u8]) -> Result<Definition, Error> {
    let (manifest, files) = read_entries(bytes).map_err(Error::Invalid)?;
    Definition::from_parts(manifest, files)
}

/// Reads and validates a bundle file.
pub fn read_file(path: &Path) -> Result<Definition, Error> {
    let bytes = read_capped(path, MAX_BUNDLE_BYTES)?;
    read(&bytes)
}

/// Unpacks a bundle into `out` (which must not exist or be empty), returning the definition.
///
/// The bundle is fully validated in memory before anything is written.
pub fn unpack(bytes: &[u8], out: &Path) -> Result<Definition, Error> {
    let def = read(bytes)?;
    def.write_to(out)?;
    Ok(def)
}

fn bundle_err(d: &mut Diagnostics, path: &str, msg: impl Into<String>) {
    d.push(file_diag(Rule::Bundle, path, msg));
}

/// Splits bundle bytes into manifest text and files, refusing anything hostile.
pub fn read_entries(bytes: &[u8]) -> Result<(String, BTreeMap<String, Vec<u8>>), Diagnostics> {
    let mut d = Diagnostics::default();
    if bytes.len() as u64 > MAX_BUNDLE_BYTES {
        bundle_err(
            &mut d,
            "bundle",
            format!("bundle is larger than {MAX_BUNDLE_BYTES} bytes"),
        );
        return Err(d);
    }
    let mut archive = Archive::new(bytes);
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => {
            bundle_err(&mut d, "bundle", format!("not a tar archive: {e}"));
            return Err(d);
        }
    };
    let mut manifest = None;
    let mut files = BTreeMap::new();
    let mut seen_folded = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    let mut total = 0u64;
    let mut count = 0usize;
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                bundle_err(&mut d, "bundle", format!("malformed tar entry: {e}"));
                return Err(d);
            }
        };
        count += 1;
        if count > MAX_FILES + 1 + 1024 {
            bundle_err(&mut d, "bundle", format!("more than {MAX_FILES} entries"));
            return Err(d);
        }
        let raw_path = entry.path_bytes().into_owned();
        let Ok(path) = String::from_utf8(raw_path) else {
            bundle_err(&mut d, "bundle", "entry path is not UTF-8");
            return Err(d);
        };
        let ty = entry.header().entry_type();
        let kind = match ty {
            EntryType::Regular | EntryType::Continuous => "file",
            EntryType::Directory => "dir",
            EntryType::Symlink | EntryType::Link => {
                bundle_err(&mut d, &path, "links are not allowed in a bundle");
                continue;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                bundle_err(
                    &mut d,
                    &path,
                    "device files and fifos are not allowed in a bundle",
                );
                continue;
            }
            other => {
                bundle_err(
                    &mut d,
                    &path,
                    format!("unsupported tar entry type {:?}", other.as_byte() as char),
                );
                continue;
            }
        };
        let norm = if kind == "dir" {
            path.trim_end_matches('/')
        } else {
            path.as_str()
        };
        if let Err(e) = valid_rel_path(norm) {
            bundle_err(&mut d, &path, format!("unsafe path: {e}"));
            continue;
        }
        if kind == "dir" {
            dirs.insert(norm.to_string());
            continue;
        }
        // Case-folded duplicates would collide on case-insensitive file systems, letting
        // one entry silently replace another after unpacking.
        if !seen_folded.insert(norm.to_ascii_lowercase()) {
            bundle_err(&mut d, &path, "duplicate entry");
            continue;
        }
        let size = match entry.header().size() {
            Ok(s) => s,
            Err(e) => {
                bundle_err(&mut d, &path, format!("bad size field: {e}"));
                return Err(d);
            }
        };
        let cap = if norm == MANIFEST_FILE {
            MAX_MANIFEST_BYTES as u64
        } else {
            MAX_FILE_BYTES
        };
        if size > cap {
            bundle_err(
                &mut d,
                &path,
                format!("entry is {size} bytes, more than the {cap} allowed"),
            );
            return Err(d);
        }
        total += size;
        if total > MAX_TOTAL_BYTES + MAX_MANIFEST_BYTES as u64 {
            bundle_err(
                &mut d,
                "bundle",
                format!("contents total more than {MAX_TOTAL_BYTES} bytes"),
            );
            return Err(d);
        }
        let mut buf = Vec::with_capacity(size as usize);
        if let Err(e) = (&mut entry).take(size).read_to_end(&mut buf) {
            bundle_err(&mut d, &path, format!("truncated entry: {e}"));
            return Err(d);
        }
        if buf.len() as u64 != size {
            bundle_err(&mut d, &path, "truncated entry");
            return Err(d);
        }
        if norm == MANIFEST_FILE {
            match String::from_utf8(buf) {
                Ok(s) => manifest = Some(s),
                Err(_) => bundle_err(&mut d, MANIFEST_FILE, "manifest is not UTF-8"),
            }
        } else {
            files.insert(norm.to_string(), buf);
        }
    }
    // A file that is also used as a directory ("a" and "a/b") cannot be unpacked faithfully.
    for p in files.keys() {
        let mut prefix = String::new();
        for seg in p.split('/') {
            if !prefix.is_empty() && (files.contains_key(&prefix) || prefix == MANIFEST_FILE) {
                bundle_err(
                    &mut d,
                    p,
                    format!("{prefix:?} is both a file and a directory"),
                );
            }
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(seg);
        }
        if dirs.contains(p) {
            bundle_err(&mut d, p, "entry is both a file and a directory");
        }
    }
    if manifest.is_none() && d.is_empty() {
        bundle_err(
            &mut d,
            MANIFEST_FILE,
            format!("the bundle has no {MANIFEST_FILE}"),
        );
    }
    match manifest {
        Some(m) if d.is_empty() => Ok((m, files)),
        _ => Err(d),
    }
}
