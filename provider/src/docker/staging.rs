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
        let out = e.path().join("out");
        // EINVAL just means it is not a mount point (any more).
        let _ = rustix::mount::unmount(&out, UnmountFlags::DETACH);
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
