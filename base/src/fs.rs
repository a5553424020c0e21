//! Whole-file replacement that neither a crash nor a concurrent writer can tear.
//!
//! Every crate that keeps state in a file (the registry client's verified view, a witness's
//! state, the provider's status file, kept bundles, split-view alarms, compiled artifacts)
//! replaces it through [`write_atomic`]: a fresh temporary file beside the target, then
//! `rename`, which POSIX makes atomic within one directory. Two things used to differ
//! between the copies this replaces, and both mattered: a fixed temporary name (`x.tmp`)
//! lets two writers of the same file interleave in it, so the rename can publish a mix of
//! both; and only some copies synced, so after a power loss a "written" state could be an
//! empty file.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How hard [`write_atomic`] works for the new content to survive a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Readers see the old file or the new one, never a mix; a crash soon after may still
    /// leave the old one. For files rewritten every few seconds anyway.
    Atomic,
    /// Also syncs the file before the rename and the directory after it: once this returns,
    /// the new content survives a crash. For state a restart must find as acknowledged.
    Durable,
}

/// Replaces `path` whole with `bytes`, creating its directory if needed.
///
/// The temporary file is created new (mode 0600 on Unix, so private state is never
/// readable by others, not even for a moment) under a name no other writer in any
/// process uses, and removed again if anything fails. The final file keeps mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let tmp = temp_path(dir, path);
    let written = (|| {
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        if durability == Durability::Durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // A failed write (a full disk, most often) must not leave its half behind.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if durability == Durability::Durable {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A temporary name beside `path` that no concurrent writer shares: hidden, and unique by
/// process id and a per-process counter.
fn temp_path(dir: &Path, path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn concurrent_writers_of_one_file_never_publish_a_mix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        // Each writer's content is one repeated byte, long enough that interleaved writes
        // into a shared temporary file would mix bytes.
        let contents: Vec<Vec<u8>> = (0..6u8).map(|i| vec![b'a' + i; 256 * 1024]).collect();
        std::thread::scope(|s| {
            for c in &contents {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..20 {
                        write_atomic(path, c, Durability::Atomic).unwrap();
                    }
                });
            }
            s.spawn(|| {
                for _ in 0..200 {
                    if let Ok(read) = std::fs::read(&path) {
                        assert!(
                            contents.contains(&read),
                            "a torn file: {} bytes",
                            read.len()
                        );
                    }
                }
            });
        });
        assert!(contents.contains(&std::fs::read(&path).unwrap()));
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_failed_replacement_keeps_nothing_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        // A directory cannot be replaced by a file: the rename fails after the write.
        let target = dir.path().join("taken");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("inside"), b"kept").unwrap();
        assert!(write_atomic(&target, b"new", Durability::Durable).is_err());
        assert!(leftovers(dir.path()).is_empty());
        assert_eq!(std::fs::read(target.join("inside")).unwrap(), b"kept");
    }

    #[test]
    fn the_file_is_private_and_its_directory_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/view.json");
        write_atomic(&path, b"{}", Durability::Durable).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        write_atomic(&path, b"[]", Durability::Atomic).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"[]");
    }
}
