//! Moving files across the sandbox boundary (staging inputs, hashing and copying outputs) without ever following a link.
//!
//! Everything here walks trees with `symlink_metadata` and only ever opens entries that
//! were seen as regular files; after opening, the handle's device and inode are compared
//! with what `lstat` saw, so an entry swapped for a link between the two calls is refused
//! rather than followed. Only regular files and directories cross the boundary.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::executor::{Dropped, OutputFile};

/// Deepest directory nesting walked in a staged or collected tree.
pub const MAX_DEPTH: usize = 32;

/// Errors from staging inputs or copying outputs.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// An I/O operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// A symbolic link was found where only files and directories are accepted.
    #[error("{}: is a symbolic link; only regular files and directories are accepted", .0.display())]
    Symlink(PathBuf),
    /// A device, socket or fifo was found.
    #[error("{}: is not a regular file or directory", .0.display())]
    Special(PathBuf),
    /// An input path has no usable base name (`/`, `..`, non-UTF-8).
    #[error("{}: has no usable base name", .0.display())]
    BadName(PathBuf),
    /// Two inputs would land on the same name.
    #[error("two inputs are named {0:?}")]
    Duplicate(String),
    /// An entry changed between inspection and opening.
    #[error("{}: changed while it was being copied", .0.display())]
    Changed(PathBuf),
    /// The tree is larger than allowed.
    #[error("{what} exceed {limit}")]
    TooLarge {
        /// What went over.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// The tree nests deeper than [`MAX_DEPTH`].
    #[error("{}: nested deeper than {MAX_DEPTH} directories", .0.display())]
    TooDeep(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FsError + '_ {
    move |source| FsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Caps for a tree walk.
#[derive(Debug, Clone, Copy)]
pub struct TreeCaps {
    /// Most bytes of file content.
    pub bytes: u64,
    /// Most entries (files and directories).
    pub entries: u64,
}

/// Creates a directory that only the current user can enter.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new().mode(0o700).create(path)
}

/// Copies each input into `dest` under its base name; `dest` must exist and be empty.
///
/// A symlink or special file anywhere among the inputs is an error: it is never followed.
pub fn stage_inputs(inputs: &[PathBuf], dest: &Path, caps: TreeCaps) -> Result<(), FsError> {
    let mut used = TreeCaps {
        bytes: 0,
        entries: 0,
    };
    let mut names = std::collections::BTreeSet::new();
    for input in inputs {
        let name = input
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty() && *n != "." && *n != "..")
            .ok_or_else(|| FsError::BadName(input.clone()))?;
        if !names.insert(name.to_string()) {
            return Err(FsError::Duplicate(name.to_string()));
        }
        copy_entry(input, &dest.join(name), 0, caps, &mut used)?;
    }
    Ok(())
}

fn copy_entry(
    src: &Path,
    dst: &Path,
    depth: usize,
    caps: TreeCaps,
    used: &mut TreeCaps,
) -> Result<(), FsError> {
    let meta = fs::symlink_metadata(src).map_err(io_err(src))?;
    used.entries += 1;
    if used.entries > caps.entries {
        return Err(FsError::TooLarge {
            what: "input entries",
            limit: caps.entries,
        });
    }
    let ft = meta.file_type();
    if ft.is_symlink() {
        return Err(FsError::Symlink(src.to_path_buf()));
    }
    if ft.is_dir() {
        if depth >= MAX_DEPTH {
            return Err(FsError::TooDeep(src.to_path_buf()));
        }
        fs::DirBuilder::new()
            .mode(0o755)
            .create(dst)
            .map_err(io_err(dst))?;
        let mut entries: Vec<_> = fs::read_dir(src)
            .map_err(io_err(src))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_err(src))?;
        entries.sort();
        for name in entries {
            copy_entry(&src.join(&name), &dst.join(&name), depth + 1, caps, used)?;
        }
        return Ok(());
    }
    if !ft.is_file() {
        return Err(FsError::Special(src.to_path_buf()));
    }
    let remaining = caps.bytes.saturating_sub(used.bytes);
    let (n, _) = copy_file_checked(src, &meta, Some(dst), remaining)?.ok_or(FsError::TooLarge {
        what: "inputs' bytes",
        limit: caps.bytes,
    })?;
    used.bytes += n;
    Ok(())
}

/// Opens a regular file that `lstat` described as `meta`, refusing it if it changed.
fn open_checked(path: &Path, meta: &fs::Metadata) -> Result<File, FsError> {
    // O_NONBLOCK so that a fifo swapped in after lstat cannot block the open; the
    // inode check below then refuses it.
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(o_nonblock())
        .open(path)
        .map_err(io_err(path))?;
    let now = f.metadata().map_err(io_err(path))?;
    if !now.is_file() || now.dev() != meta.dev() || now.ino() != meta.ino() {
        return Err(FsError::Changed(path.to_path_buf()));
    }
    Ok(f)
}

fn o_nonblock() -> i32 {
    // O_NONBLOCK is 0o4000 on every Linux architecture we target (x86-64, aarch64) and
    // 0x4 on the BSDs and macOS.
    if cfg!(target_os = "linux") {
        0o4000
    } else {
        0x4
    }
}

/// Copies (or just hashes, when `dst` is `None`) one checked regular file, reading at most
/// `cap` bytes. Returns `None` if the file is larger than `cap`.
fn copy_file_checked(
    src: &Path,
    meta: &fs::Metadata,
    dst: Option<&Path>,
    cap: u64,
) -> Result<Option<(u64, blake3::Hash)>, FsError> {
    if meta.len() > cap {
        return Ok(None);
    }
    let f = open_checked(src, meta)?;
    let mut out = match dst {
        Some(d) => Some(
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(d)
                .map_err(io_err(d))?,
        ),
        None => None,
    };
    let mut hasher = blake3::Hasher::new();
    let mut reader = f.take(cap.saturating_add(1));
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(io_err(src))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > cap {
            if let Some(d) = dst {
                let _ = fs::remove_file(d);
            }
            return Ok(None);
        }
        hasher.update(&buf[..n]);
        if let (Some(o), Some(d)) = (out.as_mut(), dst) {
            o.write_all(&buf[..n]).map_err(io_err(d))?;
        }
    }
    Ok(Some((total, hasher.finalize())))
}

/// What a walk of the output directory found.
#[derive(Debug, Default, Clone)]
pub struct Collected {
    /// Regular files, sorted by path.
    pub files: Vec<OutputFile>,
    /// Entries not returned.
    pub dropped: Vec<Dropped>,
    /// Total bytes of the returned files.
    pub bytes: u64,
    /// Whether the caps were hit (some entries were then dropped).
    pub exceeded: bool,
}

/// Walks a guest-written tree, hashing regular files and copying them to `copy_to` if given.
///
/// Links and special files are listed in `dropped`, never followed or opened. Entries
/// beyond `caps` are dropped too and `exceeded` is set.
pub fn collect_outputs(
    root: &Path,
    copy_to: Option<&Path>,
    caps: TreeCaps,
) -> Result<Collected, FsError> {
    let mut c = Collected::default();
    let mut entries = 0u64;
    walk_out(root, "", copy_to, 0, caps, &mut entries, &mut c)?;
    c.files
        .sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(c)
}

fn walk_out(
    dir: &Path,
    rel: &str,
    copy_to: Option<&Path>,
    depth: usize,
    caps: TreeCaps,
    entries: &mut u64,
    c: &mut Collected,
) -> Result<(), FsError> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err(dir))?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let lossy = name.to_string_lossy();
        let rel_path = if rel.is_empty() {
            lossy.to_string()
        } else {
            format!("{rel}/{lossy}")
        };
        let drop = |c: &mut Collected, reason: &str| {
            c.dropped.push(Dropped {
                path: rel_path.clone(),
                reason: reason.to_string(),
            })
        };
        *entries += 1;
        if *entries > caps.entries {
            c.exceeded = true;
            drop(c, "output entry limit reached");
            continue;
        }
        if name.to_str().is_none() {
            drop(c, "name is not utf-8");
            continue;
        }
        let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
        let ft = meta.file_type();
        let dst = copy_to.map(|d| d.join(&name));
        if ft.is_symlink() {
            drop(c, "symbolic link (not followed)");
        } else if ft.is_dir() {
            if depth + 1 >= MAX_DEPTH {
                drop(c, "directory nested too deep");
                continue;
            }
            if let Some(d) = &dst {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(d)
                    .map_err(io_err(d))?;
            }
            walk_out(
                &path,
                &rel_path,
                dst.as_deref(),
                depth + 1,
                caps,
                entries,
                c,
            )?;
        } else if ft.is_file() {
            let remaining = caps.bytes.saturating_sub(c.bytes);
            match copy_file_checked(&path, &meta, dst.as_deref(), remaining)? {
                Some((size, hash)) => {
                    c.bytes += size;
                    c.files.push(OutputFile {
                        path: rel_path,
                        size,
                        blake3: hash.to_hex().to_string(),
                    });
                }
                None => {
                    c.exceeded = true;
                    drop(c, "output byte limit reached");
                }
            }
        } else {
            drop(c, "special file (device, socket or fifo)");
        }
    }
    Ok(())
}

/// Apparent size of a tree (file lengths) and its entry count, by `lstat` only.
///
/// Stops early once either exceeds its cap; used by the output watcher while the guest
/// runs, so it must stay cheap and must never follow anything.
pub fn tree_usage(root: &Path, caps: TreeCaps) -> (u64, u64) {
    let mut bytes = 0u64;
    let mut entries = 0u64;
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            entries += 1;
            let Ok(meta) = e.metadata() else { continue };
            // DirEntry::metadata does not traverse symlinks; only file content counts.
            if meta.is_file() {
                bytes = bytes.saturating_add(meta.len());
            }
            if meta.is_dir() && depth < MAX_DEPTH {
                stack.push((e.path(), depth + 1));
            }
            if bytes > caps.bytes || entries > caps.entries {
                return (bytes, entries);
            }
        }
    }
    (bytes, entries)
}
