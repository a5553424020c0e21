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

impl OutputMount {
    /// Creates `<root>/<job>/out` and mounts a tmpfs of `size` bytes and `inodes` inodes on
    /// it, owned by `uid:gid` with mode 0700, `noexec,nosuid,nodev`.
    pub fn create(
        root: &Path,
        job: &str,
        size: u64,
        inodes: u64,
        uid: u32,
        gid: u32,
    ) -> io::Result<OutputMount> {
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
/// owner is no longer alive.
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
        // EINVAL just means it is not a mount point (any more).
        for sub in ["secrets", "out"] {
            let _ = rustix::mount::unmount(e.path().join(sub), UnmountFlags::DETACH);
        }
        if fs::remove_dir_all(e.path()).is_ok() {
            n += 1;
        }
    }
    // Fails harmlessly while a live owner's directory is still in it.
    let _ = fs::remove_dir(root);
    n
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
