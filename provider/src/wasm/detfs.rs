//! The filesystem as a deterministic run sees it: fixed times, stable inode numbers, no
//! directory sizes, and directory listings sorted by name.
//!
//! WASI preview 1 reports what the host's filesystem says: modification times, inode
//! numbers (wasmtime-wasi hashes the host's device and inode), directory sizes (4 KiB on
//! ext4, a few bytes per entry on tmpfs) and `fd_readdir` in the host's order (hash order on
//! ext4, creation order on tmpfs). Two honest providers running the same replicated job
//! would then disagree. In deterministic mode the executor links three functions of its own
//! in front of wasmtime-wasi's (`fd_filestat_get`, `path_filestat_get`, `fd_readdir`):
//!
//! * the two `stat`s call wasmtime-wasi's and rewrite the result: device 0, one link, times
//!   at [`WALL_START`], size 0 for directories, and the inode replaced by a small number
//!   given in the order the guest first sees each file (the guest is deterministic, so that
//!   order is too);
//! * `fd_readdir` lists the directory itself: the host directory behind the descriptor is
//!   found by its identity among the run's preopened trees, its entries are sorted by
//!   name bytes and given inode numbers in that order, and the listing is kept per
//!   descriptor from cookie 0 on, so a guest paging with a small buffer sees one
//!   consistent, sorted listing.
//!
//! The wasmtime-wasi inode is `DefaultHasher((dev, ino))` (its `MetadataHashValue`);
//! [`host_inode_hash`] computes the same value so that stat and readdir agree on inode
//! numbers, which a test checks through a guest.
//!
//! wasmtime-wasi's functions find the guest's memory through the *calling instance*, so
//! the overrides cannot call them directly from the host. They call them through a
//! three-function shim instance ([`SHIM_WAT`]), instantiated in the run's store on first
//! use, that imports the guest's own memory and re-exports it as `memory`: the original
//! then reads and writes the guest's memory exactly as if the guest had called it.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use wasmtime::{Caller, Extern, Func, Linker, Memory, Module};
use wasmtime_wasi::p1::WasiP1Ctx;

use super::Host;
use super::determinism::WALL_START;

const WASI: &str = "wasi_snapshot_preview1";
/// Size of a preview-1 `filestat`.
const FILESTAT_SIZE: usize = 64;
/// Size of a preview-1 `dirent` header.
const DIRENT_SIZE: usize = 24;
/// Preview-1 `filetype` values.
const FT_UNKNOWN: u8 = 0;
const FT_BLOCK: u8 = 1;
const FT_CHAR: u8 = 2;
const FT_DIRECTORY: u8 = 3;
const FT_REGULAR: u8 = 4;
const FT_SOCKET: u8 = 6;
const FT_SYMLINK: u8 = 7;
/// Preview-1 errno values used here.
const ERRNO_FAULT: i32 = 21;
const ERRNO_IO: i32 = 29;
const ERRNO_NOTDIR: i32 = 54;
const ERRNO_OVERFLOW: i32 = 61;
/// Most entries indexed while looking for a directory (the output tree is capped far below).
const MAX_INDEXED: usize = 200_000;

/// Per-run state of the deterministic filesystem view.
pub(super) struct DetFs {
    /// Host roots of the run's preopens (input, output, scratch).
    roots: Vec<PathBuf>,
    /// wasmtime-wasi's own functions, found once per store.
    orig: Option<Orig>,
    /// Host inode hash → virtual inode, in first-seen order.
    inodes: HashMap<u64, u64>,
    /// Host inode hash → host path of directories seen so far.
    dirs: HashMap<u64, PathBuf>,
    /// The listing each descriptor is paging through, with the directory it lists.
    listings: HashMap<i32, (u64, Vec<Entry>)>,
}

/// Calls wasmtime-wasi's `fd_filestat_get` and `path_filestat_get` from wasm, with the
/// guest's memory as the calling instance's `memory`.
pub(super) const SHIM_WAT: &str = r#"(module
  (import "pinfold" "memory" (memory 0))
  (import "wasi_snapshot_preview1" "fd_filestat_get" (func $fsg (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_filestat_get"
    (func $psg (param i32 i32 i32 i32 i32) (result i32)))
  (export "memory" (memory 0))
  (func (export "fd_filestat_get") (param i32 i32) (result i32)
    (call $fsg (local.get 0) (local.get 1)))
  (func (export "path_filestat_get") (param i32 i32 i32 i32 i32) (result i32)
    (call $psg (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4))))"#;

#[derive(Clone, Copy)]
struct Orig {
    fd_filestat_get: Func,
    path_filestat_get: Func,
}

struct Entry {
    name: Vec<u8>,
    ino: u64,
    kind: u8,
}

impl DetFs {
    pub(super) fn new(roots: &[&Path]) -> DetFs {
        DetFs {
            roots: roots.iter().map(|r| r.to_path_buf()).collect(),
            orig: None,
            inodes: HashMap::new(),
            dirs: HashMap::new(),
            listings: HashMap::new(),
        }
    }

    fn virtual_inode(&mut self, host: u64) -> u64 {
        let next = self.inodes.len() as u64 + 1;
        *self.inodes.entry(host).or_insert(next)
    }

    /// The host directory whose identity hashes to `hash`, re-indexing the run's trees on a
    /// miss (a directory the guest created since the last look).
    fn find_dir(&mut self, hash: u64) -> Option<PathBuf> {
        if let Some(p) = self.dirs.get(&hash) {
            return Some(p.clone());
        }
        self.dirs.clear();
        let mut stack = self.roots.clone();
        let mut seen = 0usize;
        while let Some(dir) = stack.pop() {
            if let Ok(m) = std::fs::symlink_metadata(&dir) {
                self.dirs
                    .insert(host_inode_hash(m.dev(), m.ino()), dir.clone());
            }
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                seen += 1;
                if seen > MAX_INDEXED {
                    break;
                }
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        self.dirs.get(&hash).cloned()
    }
}

/// The inode number wasmtime-wasi reports for a host file: the low 64 bits of its
/// `MetadataHashValue`, `DefaultHasher` (fixed keys) over `(dev, ino)`.
pub(super) fn host_inode_hash(dev: u64, ino: u64) -> u64 {
    let mut h = DefaultHasher::new();
    (dev, ino).hash(&mut h);
    h.finish()
}

/// Adds the deterministic overrides to a linker that already holds wasmtime-wasi's
/// preview 1 (`base` is a copy of that linker, used to reach the originals).
pub(super) fn add_overrides(
    linker: &mut Linker<Host<WasiP1Ctx>>,
    base: Linker<Host<WasiP1Ctx>>,
) -> wasmtime::Result<()> {
    let shim = Module::new(linker.engine(), wat::parse_str(SHIM_WAT)?)?;
    let base = Shim {
        linker: base,
        module: shim,
    };
    linker.allow_shadowing(true);
    let b1 = base.clone();
    linker.func_wrap_async(
        WASI,
        "fd_filestat_get",
        move |mut caller: Caller<'_, Host<WasiP1Ctx>>, (fd, buf): (i32, i32)| {
            let base = b1.clone();
            Box::new(async move {
                let orig = originals(&mut caller, &base).await?;
                let errno =
                    call_i32(&mut caller, orig.fd_filestat_get, &[fd.into(), buf.into()]).await?;
                if errno == 0 {
                    rewrite_filestat(&mut caller, buf)?;
                }
                Ok(errno)
            })
        },
    )?;
    let b2 = base.clone();
    linker.func_wrap_async(
        WASI,
        "path_filestat_get",
        move |mut caller: Caller<'_, Host<WasiP1Ctx>>,
              (fd, flags, path, len, buf): (i32, i32, i32, i32, i32)| {
            let base = b2.clone();
            Box::new(async move {
                let orig = originals(&mut caller, &base).await?;
                let args = [fd.into(), flags.into(), path.into(), len.into(), buf.into()];
                let errno = call_i32(&mut caller, orig.path_filestat_get, &args).await?;
                if errno == 0 {
                    rewrite_filestat(&mut caller, buf)?;
                }
                Ok(errno)
            })
        },
    )?;
    let b3 = base;
    linker.func_wrap_async(
        WASI,
        "fd_readdir",
        move |mut caller: Caller<'_, Host<WasiP1Ctx>>,
              (fd, buf, len, cookie, used): (i32, i32, i32, i64, i32)| {
            let base = b3.clone();
            Box::new(async move { readdir(&mut caller, &base, fd, buf, len, cookie, used).await })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

fn det<'a>(caller: &'a mut Caller<'_, Host<WasiP1Ctx>>) -> wasmtime::Result<&'a mut DetFs> {
    caller
        .data_mut()
        .det
        .as_mut()
        .ok_or_else(|| wasmtime::format_err!("deterministic filesystem state missing"))
}

/// wasmtime-wasi's preview 1 and the compiled shim.
#[derive(Clone)]
pub(super) struct Shim {
    linker: Linker<Host<WasiP1Ctx>>,
    module: Module,
}

async fn originals(
    caller: &mut Caller<'_, Host<WasiP1Ctx>>,
    base: &Shim,
) -> wasmtime::Result<Orig> {
    if let Some(o) = det(caller)?.orig {
        return Ok(o);
    }
    let mem =
        memory(caller).ok_or_else(|| wasmtime::format_err!("the module exports no memory"))?;
    let mut linker = base.linker.clone();
    linker.define(&mut *caller, "pinfold", "memory", mem)?;
    let shim = linker.instantiate_async(&mut *caller, &base.module).await?;
    let func = |caller: &mut Caller<'_, Host<WasiP1Ctx>>, name: &str| {
        shim.get_func(&mut *caller, name)
            .ok_or_else(|| wasmtime::format_err!("the shim exports no {name}"))
    };
    let o = Orig {
        fd_filestat_get: func(caller, "fd_filestat_get")?,
        path_filestat_get: func(caller, "path_filestat_get")?,
    };
    det(caller)?.orig = Some(o);
    Ok(o)
}

async fn call_i32(
    caller: &mut Caller<'_, Host<WasiP1Ctx>>,
    f: Func,
    args: &[wasmtime::Val],
) -> wasmtime::Result<i32> {
    let mut out = [wasmtime::Val::I32(0)];
    f.call_async(&mut *caller, args, &mut out).await?;
    out[0]
        .i32()
        .ok_or_else(|| wasmtime::format_err!("unexpected result type"))
}

fn memory(caller: &mut Caller<'_, Host<WasiP1Ctx>>) -> Option<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Some(m),
        _ => None,
    }
}

fn rewrite_filestat(caller: &mut Caller<'_, Host<WasiP1Ctx>>, buf: i32) -> wasmtime::Result<()> {
    let Some(mem) = memory(caller) else {
        return Ok(());
    };
    let at = buf as u32 as usize;
    let mut st = [0u8; FILESTAT_SIZE];
    if mem.read(&mut *caller, at, &mut st).is_err() {
        return Ok(());
    }
    let host_ino = u64::from_le_bytes(st[8..16].try_into().unwrap_or_default());
    let kind = st[16];
    let ino = det(caller)?.virtual_inode(host_ino);
    let time = u64::try_from(WALL_START.as_nanos()).unwrap_or(0);
    st[0..8].copy_from_slice(&0u64.to_le_bytes());
    st[8..16].copy_from_slice(&ino.to_le_bytes());
    st[24..32].copy_from_slice(&1u64.to_le_bytes());
    if kind == FT_DIRECTORY {
        st[32..40].copy_from_slice(&0u64.to_le_bytes());
    }
    for off in [40, 48, 56] {
        st[off..off + 8].copy_from_slice(&time.to_le_bytes());
    }
    let _ = mem.write(&mut *caller, at, &st);
    Ok(())
}

/// `fd_readdir` over a sorted listing of the host directory behind `fd`.
async fn readdir(
    caller: &mut Caller<'_, Host<WasiP1Ctx>>,
    base: &Shim,
    fd: i32,
    buf: i32,
    len: i32,
    cookie: i64,
    used: i32,
) -> wasmtime::Result<i32> {
    let Some(mem) = memory(caller) else {
        return Ok(ERRNO_FAULT);
    };
    let orig = originals(caller, base).await?;
    // Ask wasmtime-wasi what `fd` is (it also checks that `fd` is valid), into a scratch
    // copy of the guest's buffer that is put back afterwards.
    let at = buf as u32 as usize;
    let mut saved = [0u8; FILESTAT_SIZE];
    if mem.read(&mut *caller, at, &mut saved).is_err() {
        return Ok(ERRNO_FAULT);
    }
    let errno = call_i32(caller, orig.fd_filestat_get, &[fd.into(), buf.into()]).await?;
    let mut st = [0u8; FILESTAT_SIZE];
    let _ = mem.read(&mut *caller, at, &mut st);
    let _ = mem.write(&mut *caller, at, &saved);
    if errno != 0 {
        return Ok(errno);
    }
    if st[16] != FT_DIRECTORY {
        return Ok(ERRNO_NOTDIR);
    }
    let dir_hash = u64::from_le_bytes(st[8..16].try_into().unwrap_or_default());
    let Ok(cookie) = usize::try_from(cookie) else {
        return Ok(ERRNO_OVERFLOW);
    };
    let state = det(caller)?;
    if cookie == 0 || state.listings.get(&fd).is_none_or(|(h, _)| *h != dir_hash) {
        let Some(path) = state.find_dir(dir_hash) else {
            return Ok(ERRNO_IO);
        };
        let Some(listing) = list(state, &path, dir_hash) else {
            return Ok(ERRNO_IO);
        };
        state.listings.insert(fd, (dir_hash, listing));
    }
    // Serialise exactly as wasmtime-wasi does: entries from `cookie` on, each header then
    // its name, truncated at the end of the buffer (the guest then retries with more room).
    let mut out = Vec::new();
    let cap = len as u32 as usize;
    let listing = state
        .listings
        .get(&fd)
        .map(|(_, l)| l.as_slice())
        .unwrap_or_default();
    for (i, e) in listing.iter().enumerate().skip(cookie) {
        let mut d = [0u8; DIRENT_SIZE];
        d[0..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        d[8..16].copy_from_slice(&e.ino.to_le_bytes());
        d[16..20].copy_from_slice(&(e.name.len() as u32).to_le_bytes());
        d[20] = e.kind;
        out.extend_from_slice(&d);
        out.extend_from_slice(&e.name);
        if out.len() >= cap {
            break;
        }
    }
    out.truncate(cap);
    if mem.write(&mut *caller, at, &out).is_err() {
        return Ok(ERRNO_FAULT);
    }
    let n = (out.len() as u32).to_le_bytes();
    if mem.write(&mut *caller, used as u32 as usize, &n).is_err() {
        return Ok(ERRNO_FAULT);
    }
    Ok(0)
}

/// The sorted listing of `path`, with `.` and `..` first, inode numbers given in order.
fn list(state: &mut DetFs, path: &Path, dir_hash: u64) -> Option<Vec<Entry>> {
    let mut entries = Vec::new();
    for e in std::fs::read_dir(path).ok()? {
        let e = e.ok()?;
        let name = e.file_name().into_encoded_bytes();
        let Ok(m) = e.metadata() else {
            // Gone between listing and stat: as if it had not been there.
            continue;
        };
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            FT_DIRECTORY
        } else if ft.is_file() {
            FT_REGULAR
        } else if ft.is_symlink() {
            FT_SYMLINK
        } else if ft.is_block_device() {
            FT_BLOCK
        } else if ft.is_char_device() {
            FT_CHAR
        } else if ft.is_socket() {
            FT_SOCKET
        } else {
            FT_UNKNOWN
        };
        let hash = host_inode_hash(m.dev(), m.ino());
        if ft.is_dir() {
            state.dirs.insert(hash, e.path());
        }
        entries.push((name, hash, kind));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let dir_ino = state.virtual_inode(dir_hash);
    let mut listing = vec![
        Entry {
            name: b".".to_vec(),
            ino: dir_ino,
            kind: FT_DIRECTORY,
        },
        // wasmtime-wasi reports the directory's own inode for `..` as well.
        Entry {
            name: b"..".to_vec(),
            ino: dir_ino,
            kind: FT_DIRECTORY,
        },
    ];
    for (name, hash, kind) in entries {
        let ino = state.virtual_inode(hash);
        listing.push(Entry { name, ino, kind });
    }
    Some(listing)
}
