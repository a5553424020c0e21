//! Provider-owned host directories for one container: the size-capped output tmpfs and a readable input tree.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

use crate::fsio::MAX_DEPTH;

/// A tmpfs mounted by the provider at `path`, unmounted and removed on drop.
#[derive(Debug)]
pub struct OutputMount {
    /// The per-job directory holding the mount point.
    job_dir: PathBuf,
    /// The mount point (the tmpfs root).
    path: PathBuf,
    mounted: bool,
}

/// The size of a tmpfs that holds `bytes` of file content in up to `entries` entries.
///
/// tmpfs charges whole pages: a one-byte file takes a page, so a tmpfs of exactly `bytes`
/// would refuse 5,000 one-byte files under a 16 MiB cap. Every non-empty file wastes less
/// than a page in its last one, and there are at most `min(entries, bytes)` non-empty
/// files, so `ceil(bytes / page) + min(entries, bytes)` pages always hold a tree whose
/// apparent size is within the cap (directories and inodes cost no pages). The byte cap
/// itself is enforced exactly when the outputs are collected; the tmpfs only bounds what a
/// hostile task can put in RAM.
pub fn output_tmpfs_size(bytes: u64, entries: u64) -> u64 {
    let page = rustix::param::page_size() as u64;
    bytes
        .div_ceil(page)
        .saturating_add(entries.min(bytes))
        .saturating_mul(page)
}

/// Inodes of the output tmpfs for `entries` entries: one for its root, and one more so
/// that a tree one entry over the cap is still written and then refused by collection
/// (which names the cap) rather than cut short by `ENOSPC`.
pub fn output_tmpfs_inodes(entries: u64) -> u64 {
    entries.saturating_add(2)
}

impl OutputMount {
    /// Creates `<root>/<job>/out` and mounts a tmpfs on it sized to hold `bytes` of content
    /// in `entries` entries ([`output_tmpfs_size`], [`output_tmpfs_inodes`]), owned by
    /// `uid:gid` with mode 0700, `noexec,nosuid,nodev`.
    pub fn create(
        root: &Path,
        job: &str,
        bytes: u64,
        entries: u64,
        uid: u32,
        gid: u32,
    ) -> io::Result<OutputMount> {
        let (size, inodes) = (
            output_tmpfs_size(bytes, entries),
            output_tmpfs_inodes(entries),
        );
        fs::DirBuilder::new()
            .recursive(true)
            .create(root)
            .and_then(|_| fs::set_permissions(root, fs::Permissions::from_mode(0o700)))?;
        let job_dir = root.join(job);
        crate::fsio::create_private_dir(&job_dir)?;
        let path = job_dir.join("out");
        crate::fsio::create_private_dir(&path)?;
        let mut m = OutputMount {
            job_dir,
            path,
            mounted: false,
        };
        let data = format!("size={size},nr_inodes={inodes},mode=0700,uid={uid},gid={gid}");
        let data = std::ffi::CString::new(data).map_err(io::Error::other)?;
        rustix::mount::mount(
            "pinfold-output",
            &m.path,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            data.as_c_str(),
        )?;
        m.mounted = true;
        Ok(m)
    }

    /// The tmpfs root.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts and removes the directories.
    pub fn release(mut self) -> io::Result<()> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> io::Result<()> {
        if self.mounted {
            // Lazy detach: nothing of ours holds it open, and a detach never fails on busy.
            rustix::mount::unmount(&self.path, UnmountFlags::DETACH)?;
            self.mounted = false;
        }
        match fs::remove_dir_all(&self.job_dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => {
                // The instance's scratch root goes too once no job uses it; this fails
                // harmlessly while another job's directory is still in it.
                if let Some(root) = self.job_dir.parent() {
                    let _ = fs::remove_dir(root);
                }
                Ok(())
            }
        }
    }
}

impl Drop for OutputMount {
    fn drop(&mut self) {
        if let Err(e) = self.release_inner() {
            tracing::warn!(path = %self.path.display(), "releasing the output tmpfs: {e}");
        }
    }
}

/// A small tmpfs holding one file per secret, owned by the task's user; unmounted (which
/// frees its pages, so the values are gone) and removed on release or drop.
///
/// It lives at `<root>/<job>/secrets`, beside the output tmpfs, and must be released before
/// the [`OutputMount`] removes the job directory. `noswap` is asked for so the values do
/// not reach a swap device either; kernels older than 6.4 do not know it, and then the
/// mount is made without it.
#[derive(Debug)]
pub struct SecretsMount {
    path: PathBuf,
    mounted: bool,
}

impl SecretsMount {
    /// Mounts the tmpfs under the existing `<root>/<job>` and writes each secret as a
    /// mode-0400 file `NAME` owned by `uid:gid` (the directory is mode 0500).
    pub fn create(
        root: &Path,
        job: &str,
        secrets: &std::collections::BTreeMap<String, pinfold_net::SecretValue>,
        uid: u32,
        gid: u32,
    ) -> io::Result<SecretsMount> {
        let path = root.join(job).join("secrets");
        crate::fsio::create_private_dir(&path)?;
        let mut m = SecretsMount {
            path,
            mounted: false,
        };
        // A page per file and one for the directory: the values are capped far below this.
        let size = secrets
            .values()
            .map(|v| (v.len() as u64).div_ceil(4096).max(1) * 4096)
            .sum::<u64>()
            + 4096;
        let inodes = secrets.len() + 4;
        let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        let base = format!("size={size},nr_inodes={inodes},mode=0700,uid=0,gid=0");
        let with_noswap =
            std::ffi::CString::new(format!("{base},noswap")).map_err(io::Error::other)?;
        if rustix::mount::mount(
            "pinfold-secrets",
            &m.path,
            "tmpfs",
            flags,
            with_noswap.as_c_str(),
        )
        .is_err()
        {
            let plain = std::ffi::CString::new(base).map_err(io::Error::other)?;
            rustix::mount::mount("pinfold-secrets", &m.path, "tmpfs", flags, plain.as_c_str())?;
        }
        m.mounted = true;
        for (name, value) in secrets {
            // Names are manifest-validated (A-Z, 0-9, _), so never a path.
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(io::Error::other(format!(
                    "secret name {name:?} is not a file name"
                )));
            }
            let file = m.path.join(name);
            {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o400)
                    .open(&file)?;
                f.write_all(value.expose())?;
            }
            std::os::unix::fs::chown(&file, Some(uid), Some(gid))?;
        }
        // Only now hand the directory to the task's user, read and search only.
        std::os::unix::fs::chown(&m.path, Some(uid), Some(gid))?;
        fs::set_permissions(&m.path, fs::Permissions::from_mode(0o500))?;
        Ok(m)
    }

    /// The tmpfs root (bound read-only into the container).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts the tmpfs (its pages, and so the values, are freed) and removes the mount
    /// point.
    pub fn release(mut self) -> io::Result<()> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> io::Result<()> {
        if self.mounted {
            rustix::mount::unmount(&self.path, UnmountFlags::DETACH)?;
            self.mounted = false;
        }
        match fs::remove_dir(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

impl Drop for SecretsMount {
    fn drop(&mut self) {
        if let Err(e) = self.release_inner() {
            tracing::warn!(path = %self.path.display(), "releasing the secrets tmpfs: {e}");
        }
    }
}

/// Unmounts and removes every job directory under `root` (named `<owner>-<job>`) whose
/// owner is no longer alive, with every mount below it.
pub fn cleanup_root(root: &Path, alive: impl Fn(&str) -> bool) -> usize {
    let Ok(rd) = fs::read_dir(root) else { return 0 };
    let mut n = 0;
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if !ft.is_dir() {
            continue;
        }
        let name = e.file_name();
        let owner = name
            .to_str()
            .and_then(|n| n.split_once('-'))
            .map(|(o, _)| o);
        if owner.is_some_and(&alive) {
            continue;
        }
        if remove_with_mounts(&e.path()).is_ok() {
            n += 1;
        }
    }
    // Fails harmlessly while a live owner's directory is still in it.
    let _ = fs::remove_dir(root);
    n
}

/// What `provider exec` names its per-run directory: `pinfold-run-<owner>-<random>`, the
/// owner being the [`super::owner_tag`] of the process that made it.
pub const RUN_DIR_PREFIX: &str = "pinfold-run-";

/// Removes the `provider exec` run directories in `dir` whose owner is gone (a run that
/// was SIGKILLed or crashed), with any mount below them; returns how many.
///
/// `dir` is shared (`$TMPDIR`), so a directory is ours only if all of these hold: its
/// name is `pinfold-run-<pid>.<start time>-…`, `lstat` sees a directory (never a link),
/// and it belongs to this process's effective uid. A live owner's directory (another
/// `provider exec` running now) is kept.
pub fn sweep_run_dirs(dir: &Path, alive: impl Fn(&str) -> bool) -> usize {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    let me = rustix::process::geteuid().as_raw();
    let mut n = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(RUN_DIR_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .map(|(owner, _)| owner)
            .filter(|o| is_owner_tag(o))
        else {
            continue;
        };
        if alive(owner) {
            continue;
        }
        let path = e.path();
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_dir() && m.uid() == me => {}
            _ => continue,
        }
        match remove_with_mounts(&path) {
            Ok(()) => n += 1,
            Err(e) => tracing::warn!(path = %path.display(), "removing a stale run directory: {e}"),
        }
    }
    n
}

/// Whether `s` has the shape of an owner tag, `<pid>.<start time>` in decimal.
fn is_owner_tag(s: &str) -> bool {
    s.split_once('.').is_some_and(|(pid, start)| {
        [pid, start]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Detaches every mount at or below `path` (deepest first), then removes the tree.
///
/// Removing first would descend into a still-mounted tmpfs and delete what is on it (a
/// live container's output, were the owner check ever wrong) and then fail on the mount
/// point; detaching first leaves only the directories we made.
fn remove_with_mounts(path: &Path) -> io::Result<()> {
    for m in mounts_below(path) {
        if let Err(e) = rustix::mount::unmount(&m, UnmountFlags::DETACH) {
            tracing::warn!(mount = %m.display(), "unmounting a stale scratch mount: {e}");
        }
    }
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Mount points at or below `path` in this process's mount namespace, deepest first.
pub fn mounts_below(path: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        // Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| m.starts_with(path))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found.dedup();
    found
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Adds read (and, for directories, search) permission for everyone to a staged input
/// tree, so the container's non-root user can read it. Never follows links (there are
/// none in a staged tree; any found are left untouched) and walks at most `MAX_DEPTH`.
pub fn make_world_readable(root: &Path) -> io::Result<()> {
    fn walk(p: &Path, depth: usize) -> io::Result<()> {
        let meta = fs::symlink_metadata(p)?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            return Ok(());
        }
        let mode = meta.permissions().mode() & 0o7777;
        if ft.is_dir() {
            fs::set_permissions(p, fs::Permissions::from_mode(mode | 0o555))?;
            if depth >= MAX_DEPTH {
                return Ok(());
            }
            for e in fs::read_dir(p)? {
                walk(&e?.path(), depth + 1)?;
            }
        } else if ft.is_file() {
            fs::set_permissions(p, fs::Permissions::from_mode(mode | 0o444))?;
        }
        Ok(())
    }
    walk(root, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_tmpfs_holds_the_cap_in_any_file_shape() {
        let page = rustix::param::page_size() as u64;
        // 5,000 one-byte files under 16 MiB: a page each, on top of the content.
        let size = output_tmpfs_size(16 << 20, 10_000);
        assert!(size >= (16 << 20) + 5_000 * page, "{size}");
        assert_eq!(size % page, 0);
        // Never more than one page per byte of the cap: a 10-byte cap with 10,000 entries
        // needs at most 10 files with content.
        assert_eq!(output_tmpfs_size(10, 10_000), 11 * page);
        assert_eq!(output_tmpfs_size(0, 10_000), 0);
        // One page per possible file plus the content rounded up.
        assert_eq!(output_tmpfs_size(page + 1, 3), (2 + 3) * page);
        // Saturates rather than wrapping (the executor refuses such caps long before).
        assert_eq!(output_tmpfs_size(u64::MAX, u64::MAX), u64::MAX);
        assert_eq!(output_tmpfs_inodes(10_000), 10_002);
    }

    #[test]
    fn owner_tags_and_mountinfo_escapes_are_read_strictly() {
        assert!(is_owner_tag("123.456"));
        for bad in ["", "123", ".1", "1.", "1.2.3", "a.1", "1.-2", "../1"] {
            assert!(!is_owner_tag(bad), "{bad}");
        }
        assert_eq!(
            unescape_mountinfo(r"/tmp/a\040b\011c\134d"),
            "/tmp/a b\tc\\d"
        );
        assert_eq!(unescape_mountinfo(r"/tmp/x\9"), r"/tmp/x\9");
    }

    #[test]
    fn only_dead_owners_run_dirs_are_swept_and_never_through_links() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), "x").unwrap();
        let mk = |name: &str| {
            let p = tmp.path().join(name);
            std::fs::create_dir_all(p.join("input")).unwrap();
            std::fs::write(p.join("input/f"), "x").unwrap();
            p
        };
        let dead = mk("pinfold-run-999999999.1-abc");
        let live = mk("pinfold-run-123.456-def");
        let foreign = mk("pinfold-run-notanowner-ghi");
        let other = mk("something-else");
        let link = tmp.path().join("pinfold-run-999999999.2-lnk");
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        let n = sweep_run_dirs(tmp.path(), |o| o == "123.456");
        assert_eq!(n, 1);
        assert!(!dead.exists());
        for p in [&live, &foreign, &other] {
            assert!(p.join("input/f").exists(), "{}", p.display());
        }
        assert!(
            link.symlink_metadata().is_ok(),
            "the link itself is not ours to remove"
        );
        assert!(outside.path().join("keep").exists(), "a link was followed");
    }
}
