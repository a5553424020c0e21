//! What a provider's result may cost this machine: declared sizes against the definition's `limits.output`, and free disk before and while the outputs are written.
//!
//! A provider is a stranger. Its result lists files and sizes, each bound to a BLAKE3 it
//! must then serve exactly (the transfer refuses any other size and any byte that does
//! not hash right), so the declared sizes are what will be written. They are checked
//! before a single byte is fetched: every file and the files together, and stdout and
//! stderr each, within the output limit; then everything together against the free space
//! of the disk it lands on. While writing, free space is checked again every
//! [`CHECK_EVERY`] bytes (other programs fill disks too), and a full disk is reported as
//! such instead of as a transfer failure.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use pinfold_net::protocol::OutputEntry;
use tokio::io::AsyncWrite;

/// The output limit assumed when only a definition identity was given, so there is no
/// manifest to read `limits.output` from (`--max-output` overrides it).
pub const DEFAULT_MAX_OUTPUT: u64 = 1 << 30;

/// Free space is re-checked after every this many bytes written.
pub const CHECK_EVERY: u64 = 1 << 20;

/// Most free space kept spare when admitting a download: 64 MiB, or a twentieth of a
/// smaller filesystem, so a download never fills the disk to the last block.
pub const MAX_RESERVE: u64 = 64 << 20;

/// Checks a result's declared sizes against `limit` (the definition's `limits.output`);
/// `Err` says what is over. Returns the bytes the download will write.
///
/// An honest provider keeps the files within `limit` minus what stdout and stderr took,
/// and each of stdout and stderr within `limit`, so nothing it sends fails this.
pub fn check_declared(
    files: &[OutputEntry],
    stdout: u64,
    stderr: u64,
    limit: u64,
) -> Result<u64, String> {
    if let Some(f) = files.iter().find(|f| f.size > limit) {
        return Err(format!(
            "output file {:?} is declared at {} bytes, over the definition's limits.output of {limit}",
            f.path, f.size
        ));
    }
    let total = files
        .iter()
        .try_fold(0u64, |sum, f| sum.checked_add(f.size))
        .filter(|t| *t <= limit)
        .ok_or_else(|| {
            format!(
                "the {} output files are declared larger than the definition's limits.output of {limit} bytes together",
                files.len()
            )
        })?;
    for (name, size) in [("stdout", stdout), ("stderr", stderr)] {
        if size > limit {
            return Err(format!(
                "{name} is declared at {size} bytes, over the definition's limits.output of {limit}"
            ));
        }
    }
    Ok(total + stdout + stderr)
}

/// Free bytes for an unprivileged writer, and the filesystem's size, of the filesystem
/// holding `path`.
pub fn free_space(path: &Path) -> io::Result<(u64, u64)> {
    let s = rustix::fs::statvfs(path)?;
    Ok((
        s.f_bavail.saturating_mul(s.f_frsize),
        s.f_blocks.saturating_mul(s.f_frsize),
    ))
}

/// The nearest existing ancestor of `path` (itself if it exists), where its filesystem
/// can be asked about free space before anything is created.
pub fn existing_ancestor(path: &Path) -> PathBuf {
    let mut p = path;
    loop {
        if p.as_os_str().is_empty() {
            return PathBuf::from(".");
        }
        if std::fs::symlink_metadata(p).is_ok() {
            return p.to_path_buf();
        }
        match p.parent() {
            Some(parent) => p = parent,
            None => return PathBuf::from("."),
        }
    }
}

/// A download's claim on one filesystem: checked up front, then re-checked as bytes land.
#[derive(Debug)]
pub struct DiskBudget {
    dir: PathBuf,
    total: u64,
    written: AtomicU64,
    failed: std::sync::Mutex<Option<String>>,
}

impl DiskBudget {
    /// Admits writing `total` bytes under `dir` (which need not exist yet) if its
    /// filesystem has that much free plus a reserve; `Err` explains the shortfall.
    pub fn admit(dir: &Path, total: u64) -> Result<Arc<DiskBudget>, String> {
        let at = existing_ancestor(dir);
        let (free, size) = free_space(&at)
            .map_err(|e| format!("checking free disk space at {}: {e}", at.display()))?;
        let reserve = (size / 20).min(MAX_RESERVE);
        if free < total.saturating_add(reserve) {
            return Err(format!(
                "not enough free disk space in {}: the outputs need {total} bytes and {free} are free (keeping {reserve} spare); nothing was written",
                at.display()
            ));
        }
        Ok(Arc::new(DiskBudget {
            dir: at,
            total,
            written: AtomicU64::new(0),
            failed: std::sync::Mutex::new(None),
        }))
    }

    /// Why writing stopped, once it has.
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }

    fn fail(&self, why: String) -> io::Error {
        if let Ok(mut f) = self.failed.lock() {
            f.get_or_insert_with(|| why.clone());
        }
        io::Error::new(io::ErrorKind::StorageFull, why)
    }

    /// Counts `n` bytes written; every [`CHECK_EVERY`] bytes, checks that what is still to
    /// come fits the free space.
    fn wrote(&self, n: u64) -> io::Result<()> {
        let before = self.written.fetch_add(n, Ordering::Relaxed);
        let after = before + n;
        if before / CHECK_EVERY == after / CHECK_EVERY {
            return Ok(());
        }
        let left = self.total.saturating_sub(after);
        match free_space(&self.dir) {
            Ok((free, _)) if free < left => Err(self.fail(format!(
                "the disk at {} filled up while downloading: {left} bytes still to write, {free} free",
                self.dir.display()
            ))),
            _ => Ok(()),
        }
    }

    /// Gives back bytes of an attempt whose file is about to be rewritten from scratch.
    fn forget(&self, n: u64) {
        let _ = self
            .written
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                Some(w.saturating_sub(n))
            });
    }
}

/// An [`AsyncWrite`] that charges what it writes to a [`DiskBudget`] and reports a full
/// disk (`ENOSPC`, or too little space left for the rest) as such.
#[derive(Debug)]
pub struct BudgetedWriter<W> {
    inner: W,
    budget: Arc<DiskBudget>,
    written: u64,
    complete: bool,
}

impl<W> BudgetedWriter<W> {
    /// Charges writes to `inner` to `budget`.
    pub fn new(inner: W, budget: Arc<DiskBudget>) -> Self {
        Self {
            inner,
            budget,
            written: 0,
            complete: false,
        }
    }

    /// Keeps this file's bytes charged: it is complete.
    pub fn complete(mut self) {
        self.complete = true;
    }
}

impl<W> Drop for BudgetedWriter<W> {
    fn drop(&mut self) {
        // An abandoned attempt's file is recreated from scratch (or removed with the
        // staging directory), so its bytes no longer count.
        if !self.complete {
            self.budget.forget(self.written);
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for BudgetedWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.written += n as u64;
                Poll::Ready(this.budget.wrote(n as u64).map(|()| n))
            }
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::StorageFull => {
                Poll::Ready(Err(this.budget.fail(format!(
                    "the disk at {} filled up while downloading ({e})",
                    this.budget.dir.display()
                ))))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64) -> OutputEntry {
        OutputEntry {
            path: path.into(),
            size,
            blake3: pinfold_net::BlobId::of(b""),
        }
    }

    #[test]
    fn declared_sizes_are_held_to_the_limit_one_by_one_and_together() {
        let limit = 1 << 20;
        assert_eq!(
            check_declared(&[file("a", 1 << 19), file("b", 1 << 19)], 5, 7, limit),
            Ok((1 << 20) + 12)
        );
        assert_eq!(check_declared(&[], limit, limit, limit), Ok(2 * limit));
        for (files, out, err) in [
            (vec![file("a", limit + 1)], 0, 0),
            (vec![file("a", 1 << 19), file("b", (1 << 19) + 1)], 0, 0),
            (vec![file("a", u64::MAX), file("b", u64::MAX)], 0, 0),
            (vec![], limit + 1, 0),
            (vec![], 0, limit + 1),
        ] {
            let e = check_declared(&files, out, err, limit).unwrap_err();
            assert!(e.contains("limits.output"), "{e}");
        }
    }

    #[test]
    fn free_space_is_asked_of_the_nearest_existing_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b/c");
        assert_eq!(existing_ancestor(&deep), tmp.path());
        assert_eq!(
            existing_ancestor(Path::new("no-such-dir/x")),
            Path::new(".")
        );
        assert!(DiskBudget::admit(&deep, 1).is_ok());
        let e = DiskBudget::admit(&deep, u64::MAX / 2).unwrap_err();
        assert!(e.contains("not enough free disk space"), "{e}");
        assert!(
            !tmp.path().join("a").exists(),
            "admitting created something"
        );
    }
}
