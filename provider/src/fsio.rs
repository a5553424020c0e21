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
use std::time::Instant;

use pinfold_net::protocol::{MAX_OUTPUT_FILES, MAX_OUTPUT_PATH, MAX_OUTPUT_PATHS_TOTAL};

use crate::executor::{Dropped, OutputFile};

/// Deepest directory nesting of staged inputs (outputs are bounded by path length instead).
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
    /// The walk ran past its deadline.
    #[error("the time limit passed while collecting outputs")]
    Deadline,
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
    /// Whether a limit was hit (some entries were then dropped); see `exceeded_by`.
    pub exceeded: bool,
    /// The first limit that was hit, as a reason for `output_exceeded`.
    pub exceeded_by: Option<String>,
}

impl Collected {
    fn exceed(&mut self, why: impl FnOnce() -> String) {
        self.exceeded = true;
        if self.exceeded_by.is_none() {
            self.exceeded_by = Some(why());
        }
    }
}

/// Walks a guest-written tree, hashing regular files and copying them to `copy_to` if given.
///
/// The result respects the output limit set that requestors check
/// ([`pinfold_net::protocol::check_output_path`], [`MAX_OUTPUT_FILES`],
/// [`MAX_OUTPUT_PATHS_TOTAL`]) and `caps`, at any depth: an entry beyond any of them is
/// dropped and `exceeded` set, so a hostile task can make its own run `output_exceeded`
/// but never make an honest provider send a result the requestor must refuse. Links and
/// special files are listed in `dropped`, never followed or opened; they are not limit
/// violations. A file is judged by its apparent size before a byte of it is read, so a
/// sparse 1 TiB file costs nothing to refuse.
pub fn collect_outputs(
    root: &Path,
    copy_to: Option<&Path>,
    caps: TreeCaps,
) -> Result<Collected, FsError> {
    collect_outputs_until(root, copy_to, caps, None)
}

/// [`collect_outputs`] that gives up with [`FsError::Deadline`] once `deadline` passes:
/// collecting is part of a run's time limit, and a guest that leaves thousands of files
/// must not stretch it.
pub fn collect_outputs_until(
    root: &Path,
    copy_to: Option<&Path>,
    caps: TreeCaps,
    deadline: Option<Instant>,
) -> Result<Collected, FsError> {
    let mut w = OutWalk {
        caps,
        deadline,
        entries: 0,
        path_bytes: 0,
        c: Collected::default(),
    };
    w.walk(root, "", copy_to)?;
    let mut c = w.c;
    c.files
        .sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(c)
}

struct OutWalk {
    caps: TreeCaps,
    deadline: Option<Instant>,
    entries: u64,
    path_bytes: usize,
    c: Collected,
}

impl OutWalk {
    fn walk(&mut self, dir: &Path, rel: &str, copy_to: Option<&Path>) -> Result<(), FsError> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .map_err(io_err(dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_err(dir))?;
        names.sort();
        for name in names {
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(FsError::Deadline);
            }
            let path = dir.join(&name);
            let lossy = name.to_string_lossy();
            let rel_path = if rel.is_empty() {
                lossy.to_string()
            } else {
                format!("{rel}/{lossy}")
            };
            let c = &mut self.c;
            let drop = |c: &mut Collected, reason: &str| {
                c.dropped.push(Dropped {
                    path: cap_chars(&rel_path, 512),
                    reason: reason.to_string(),
                })
            };
            self.entries += 1;
            if self.entries > self.caps.entries {
                let limit = self.caps.entries;
                c.exceed(|| format!("more than {limit} entries in the output directory"));
                drop(c, "output entry limit reached");
                continue;
            }
            if name.to_str().is_none() {
                c.exceed(|| "an output name is not UTF-8".into());
                drop(c, "name is not utf-8");
                continue;
            }
            if let Err(why) = pinfold_net::protocol::check_output_path(&rel_path) {
                c.exceed(|| why.clone());
                drop(c, &why);
                continue;
            }
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                // Removed by the guest's leftovers? Nothing runs any more; treat as gone.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(FsError::Io { path, source: e }),
            };
            let ft = meta.file_type();
            let dst = copy_to.map(|d| d.join(&name));
            if ft.is_symlink() {
                drop(c, "symbolic link (not followed)");
            } else if ft.is_dir() {
                if let Some(d) = &dst {
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(d)
                        .map_err(io_err(d))?;
                }
                self.walk(&path, &rel_path, dst.as_deref())?;
            } else if ft.is_file() {
                if c.files.len() >= MAX_OUTPUT_FILES {
                    c.exceed(|| format!("more than {MAX_OUTPUT_FILES} output files"));
                    drop(c, "output file limit reached");
                    continue;
                }
                if self.path_bytes + rel_path.len() > MAX_OUTPUT_PATHS_TOTAL {
                    c.exceed(|| {
                        format!("output paths exceed {MAX_OUTPUT_PATHS_TOTAL} bytes together")
                    });
                    drop(c, "output path total reached");
                    continue;
                }
                let remaining = self.caps.bytes.saturating_sub(c.bytes);
                match copy_file_checked(&path, &meta, dst.as_deref(), remaining)? {
                    Some((size, hash)) => {
                        c.bytes += size;
                        self.path_bytes += rel_path.len();
                        c.files.push(OutputFile {
                            path: rel_path,
                            size,
                            blake3: hash.into(),
                        });
                    }
                    None => {
                        let limit = self.caps.bytes;
                        c.exceed(|| format!("output files exceed {limit} bytes"));
                        drop(c, "output byte limit reached");
                    }
                }
            } else {
                drop(c, "special file (device, socket or fifo)");
            }
        }
        Ok(())
    }
}

fn cap_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Copies exactly the files a run returned (and nothing else) from `src` into `dest`,
/// re-checking each one's size and BLAKE3 as it is copied. The copy is therefore bounded by
/// what the collection counted against `limits.output`, whatever the guest left behind.
pub fn copy_returned(src: &Path, dest: &Path, files: &[OutputFile]) -> Result<u64, FsError> {
    let mut total = 0u64;
    for f in files {
        pinfold_net::protocol::check_output_path(&f.path)
            .map_err(|_| FsError::BadName(f.path.clone().into()))?;
        let mut from = src.to_path_buf();
        let mut to = dest.to_path_buf();
        let segs: Vec<&str> = f.path.split('/').collect();
        for (i, seg) in segs.iter().enumerate() {
            from.push(seg);
            to.push(seg);
            let meta = fs::symlink_metadata(&from).map_err(io_err(&from))?;
            let last = i + 1 == segs.len();
            if meta.file_type().is_symlink() {
                return Err(FsError::Symlink(from));
            }
            if !last {
                if !meta.is_dir() {
                    return Err(FsError::Changed(from));
                }
                match fs::DirBuilder::new().mode(0o755).create(&to) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        if !fs::symlink_metadata(&to).map_err(io_err(&to))?.is_dir() {
                            return Err(FsError::Changed(to));
                        }
                    }
                    Err(e) => {
                        return Err(FsError::Io {
                            path: to,
                            source: e,
                        });
                    }
                }
                continue;
            }
            if !meta.is_file() {
                return Err(FsError::Changed(from));
            }
            match copy_file_checked(&from, &meta, Some(&to), f.size)? {
                Some((n, hash)) if n == f.size && pinfold_base::BlobId::from(hash) == f.blake3 => {
                    total += n;
                }
                _ => {
                    let _ = fs::remove_file(&to);
                    return Err(FsError::Changed(from));
                }
            }
        }
    }
    Ok(total)
}

/// What the output watch measured of a tree while its guest runs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TreeUsage {
    /// Sum of the regular files' apparent sizes (a sparse file counts at its length).
    pub apparent: u64,
    /// Sum of the blocks allocated to every entry, directories included.
    pub allocated: u64,
    /// Entries of any kind.
    pub entries: u64,
    /// Set when the tree holds something beyond the output limit set (a path longer than
    /// requestors accept, or a directory the walk could not read).
    pub beyond_limits: bool,
}

impl TreeUsage {
    /// Whether this is over `caps`: apparent bytes, entries, allocated bytes (with
    /// [`ALLOCATION_SLACK_PER_ENTRY`] per entry) or the output limit set.
    pub fn over(&self, caps: TreeCaps) -> bool {
        self.beyond_limits
            || self.apparent > caps.bytes
            || self.entries > caps.entries
            || self.allocated
                > caps
                    .bytes
                    .saturating_add(self.entries.saturating_mul(ALLOCATION_SLACK_PER_ENTRY))
    }
}

/// Room the watch allows per entry for block rounding and directory blocks, on top of the
/// byte cap, before allocated space counts as over the cap: a 1-byte file takes a 4 KiB
/// block, and ext4 directories take 4 KiB or more. Bounded: entries are capped too.
pub const ALLOCATION_SLACK_PER_ENTRY: u64 = 8 * 1024;

/// Measures a tree by `lstat` only, at every depth, and stops early once it is over
/// `caps` (bytes against both apparent and allocated size, the latter with
/// [`ALLOCATION_SLACK_PER_ENTRY`] per entry).
///
/// Used by the output watch while the guest runs, so it must stay cheap, must never follow
/// anything, and must have no blind spot: there is no depth limit, since a directory whose
/// relative path is longer than requestors accept is itself over the limits (so every
/// directory the walk needs is within reach of an ordinary path), and a directory that
/// cannot be read counts as over the limits rather than as empty.
pub fn tree_usage(root: &Path, caps: TreeCaps) -> TreeUsage {
    let mut u = TreeUsage::default();
    let mut stack: Vec<(PathBuf, usize)> = vec![(root.to_path_buf(), 0)];
    while let Some((dir, rel_len)) = stack.pop() {
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => {
                u.beyond_limits = true;
                return u;
            }
        };
        for e in rd {
            let Ok(e) = e else {
                u.beyond_limits = true;
                return u;
            };
            u.entries += 1;
            let name_len = e.file_name().len();
            let child_len = if rel_len == 0 {
                name_len
            } else {
                rel_len + 1 + name_len
            };
            if child_len > MAX_OUTPUT_PATH {
                u.beyond_limits = true;
                return u;
            }
            // DirEntry::metadata does not traverse symlinks.
            let Ok(meta) = e.metadata() else { continue };
            u.allocated = u
                .allocated
                .saturating_add(meta.blocks().saturating_mul(512));
            if meta.is_file() {
                u.apparent = u.apparent.saturating_add(meta.len());
            } else if meta.is_dir() {
                stack.push((e.path(), child_len));
            }
            if u.over(caps) {
                return u;
            }
        }
    }
    u
}
