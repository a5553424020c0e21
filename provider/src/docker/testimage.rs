//! A deterministic busybox image for tests, benchmarks and the docker example, loaded without any registry.
//!
//! The image is written as a `docker save` archive (`manifest.json`, the config JSON, one
//! layer tar) from a static `/bin/busybox` and loaded with `POST /images/load`. Every byte
//! is fixed (ustar headers with zero mtimes and root owners, a config JSON written by hand
//! with a fixed `created`), so the image id — the SHA-256 of the config JSON — is known
//! before loading and depends only on the busybox binary and the configured user. That is
//! what lets `task-defs/examples/busybox-wc` pin the image by id and CI on a fresh machine
//! rebuild exactly that image (`provider/testdata/image/build.sh`).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::ImportImageOptionsBuilder;
use futures::StreamExt;
use sha2::Digest;

/// The repository tag given to loaded test images (tags protect them from `image prune`;
/// pinfold itself never resolves an image by tag).
pub const TAG_REPO: &str = "pinfold/busybox-test";

/// SHA-256 of the busybox binary the example definition was pinned with (Debian bookworm
/// `busybox-static` 1:1.35.0-4+deb12u1+b1, amd64).
pub const PINNED_BUSYBOX_SHA256: &str =
    "3d9f2889d6782537624a4e1a10e68a2ddd53e0ee8bac02676f27308f42ec6bf6";

/// Applets linked into `/bin` (a fixed list so the layer does not depend on the build's
/// applet set; an applet the binary lacks just fails when called).
pub const APPLETS: &[&str] = &[
    "[",
    "cat",
    "chmod",
    "chown",
    "cp",
    "cut",
    "dd",
    "echo",
    "env",
    "false",
    "find",
    "grep",
    "head",
    "id",
    "ifconfig",
    "ip",
    "kill",
    "ls",
    "mkdir",
    "mknod",
    "mount",
    "nc",
    "ping",
    "printf",
    "ps",
    "rm",
    "sed",
    "seq",
    "sh",
    "sha256sum",
    "sleep",
    "sort",
    "stat",
    "tail",
    "test",
    "touch",
    "tr",
    "true",
    "umount",
    "uname",
    "wc",
    "wget",
    "whoami",
    "yes",
];

/// A built image archive and its id.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// `sha256:<hex>` of the config JSON, which is the image id the engine will report.
    pub id: String,
    /// The `docker save`-format archive.
    pub archive: Vec<u8>,
    /// The tag it is loaded under.
    pub tag: String,
}

/// Errors building or loading the test image.
#[derive(Debug, thiserror::Error)]
pub enum TestImageError {
    /// The busybox binary could not be read.
    #[error("reading {path}: {source}")]
    Busybox {
        /// Where it was looked for.
        path: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Writing the archive failed (in memory, so only on absurd sizes).
    #[error("writing the image archive: {0}")]
    Archive(std::io::Error),
    /// The engine refused or failed the load.
    #[error("loading the image into docker: {0}")]
    Load(String),
    /// The binary is not a statically linked ELF executable, so it cannot run in an image
    /// that holds nothing else.
    #[error("not a static executable: {0}")]
    NotStatic(&'static str),
    /// The engine reports a different id than the one computed from the bytes.
    #[error("docker loaded the image as {got}, expected {want}")]
    IdMismatch {
        /// What the engine reports.
        got: String,
        /// What the config digest says.
        want: String,
    },
}

/// Where the busybox binary is read from: `$PINFOLD_BUSYBOX`, else `/bin/busybox`.
pub fn busybox_path() -> std::path::PathBuf {
    std::env::var_os("PINFOLD_BUSYBOX")
        .map(Into::into)
        .unwrap_or_else(|| "/bin/busybox".into())
}

/// Reads the busybox binary (at most 64 MiB).
pub fn read_busybox(path: &Path) -> Result<Vec<u8>, TestImageError> {
    use std::io::Read;
    let err = |source| TestImageError::Busybox {
        path: path.display().to_string(),
        source,
    };
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .map_err(err)?
        .take(64 << 20)
        .read_to_end(&mut buf)
        .map_err(err)?;
    Ok(buf)
}

/// Checks that `bin` is an ELF executable without a program interpreter (a dynamically
/// linked busybox, e.g. Debian's `busybox` rather than `busybox-static`, would fail to
/// start in the image, which holds no libraries).
pub fn check_static(bin: &[u8]) -> Result<(), TestImageError> {
    if bin.len() < 0x40 || &bin[..4] != b"\x7fELF" {
        return Err(TestImageError::NotStatic("not an ELF file"));
    }
    let wide = match bin[4] {
        1 => false,
        2 => true,
        _ => return Err(TestImageError::NotStatic("unknown ELF class")),
    };
    let little = match bin[5] {
        1 => true,
        2 => false,
        _ => return Err(TestImageError::NotStatic("unknown ELF byte order")),
    };
    let num = |at: usize, len: usize| -> Option<u64> {
        let b = bin.get(at..at + len)?;
        let mut v = 0u64;
        for i in 0..len {
            let byte = if little { b[len - 1 - i] } else { b[i] };
            v = v << 8 | u64::from(byte);
        }
        Some(v)
    };
    let (phoff, phentsize, phnum) = if wide {
        (num(0x20, 8), num(0x36, 2), num(0x38, 2))
    } else {
        (num(0x1c, 4), num(0x2a, 2), num(0x2c, 2))
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (phoff, phentsize, phnum) else {
        return Err(TestImageError::NotStatic("truncated ELF header"));
    };
    for i in 0..phnum {
        let at = phoff.saturating_add(i.saturating_mul(phentsize));
        let Some(p_type) = usize::try_from(at).ok().and_then(|at| num(at, 4)) else {
            return Err(TestImageError::NotStatic("truncated program headers"));
        };
        // PT_INTERP: the binary asks for a dynamic loader.
        if p_type == 3 {
            return Err(TestImageError::NotStatic(
                "it is dynamically linked (it names a program interpreter)",
            ));
        }
    }
    Ok(())
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

fn docker_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The layer: `/bin/busybox`, applet links, `/etc/passwd`, `/etc/group`, `/tmp`.
fn layer(busybox: &[u8]) -> Result<Vec<u8>, TestImageError> {
    let mut b = tar::Builder::new(Vec::new());
    let mut put = |path: &str, kind: tar::EntryType, mode: u32, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            h.set_link_name(l)?;
        }
        b.append_data(&mut h, path, data)
    };
    let passwd =
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    let group = "root:x:0:\nnogroup:x:65534:\n";
    let dir = tar::EntryType::Directory;
    (|| {
        put("bin/", dir, 0o755, b"", None)?;
        put("bin/busybox", tar::EntryType::Regular, 0o755, busybox, None)?;
        for a in APPLETS {
            put(
                &format!("bin/{a}"),
                tar::EntryType::Symlink,
                0o777,
                b"",
                Some("busybox"),
            )?;
        }
        put("etc/", dir, 0o755, b"", None)?;
        put(
            "etc/group",
            tar::EntryType::Regular,
            0o644,
            group.as_bytes(),
            None,
        )?;
        put(
            "etc/passwd",
            tar::EntryType::Regular,
            0o644,
            passwd.as_bytes(),
            None,
        )?;
        put("tmp/", dir, 0o1777, b"", None)
    })()
    .map_err(TestImageError::Archive)?;
    b.into_inner().map_err(TestImageError::Archive)
}

/// Builds the archive for an image running as `user` (e.g. `"65534:65534"`, or `""` for
/// an image that defaults to root).
pub fn build(busybox: &[u8], user: &str) -> Result<TestImage, TestImageError> {
    let layer = layer(busybox)?;
    let diff_id = sha256_hex(&layer);
    let created = "2024-01-01T00:00:00Z";
    // Written by hand so that no serializer setting can reorder keys and change the id.
    let mut config = String::new();
    let _ = write!(
        config,
        r#"{{"architecture":"{arch}","config":{{"Cmd":["/bin/sh"],"Env":["PATH=/bin"],"User":"{user}","WorkingDir":"/"}},"created":"{created}","history":[{{"created":"{created}","created_by":"pinfold testimage busybox sha256:{bb}"}}],"os":"linux","rootfs":{{"diff_ids":["sha256:{diff_id}"],"type":"layers"}}}}"#,
        arch = docker_arch(),
        user = user,
        bb = sha256_hex(busybox),
    );
    let config_hex = sha256_hex(config.as_bytes());
    let tag = format!("{TAG_REPO}:{}", &config_hex[..12]);
    let manifest = format!(
        r#"[{{"Config":"{config_hex}.json","RepoTags":["{tag}"],"Layers":["{diff_id}/layer.tar"]}}]"#
    );
    let mut b = tar::Builder::new(Vec::new());
    let mut put = |path: &str, kind: tar::EntryType, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data)
    };
    (|| {
        put(
            &format!("{config_hex}.json"),
            tar::EntryType::Regular,
            0o644,
            config.as_bytes(),
        )?;
        put(
            &format!("{diff_id}/"),
            tar::EntryType::Directory,
            0o755,
            b"",
        )?;
        put(
            &format!("{diff_id}/layer.tar"),
            tar::EntryType::Regular,
            0o644,
            &layer,
        )?;
        put(
            "manifest.json",
            tar::EntryType::Regular,
            0o644,
            manifest.as_bytes(),
        )
    })()
    .map_err(TestImageError::Archive)?;
    Ok(TestImage {
        id: format!("sha256:{config_hex}"),
        archive: b.into_inner().map_err(TestImageError::Archive)?,
        tag,
    })
}

/// Loads the image unless the engine already has it; returns its id.
pub async fn ensure_loaded(docker: &Docker, image: &TestImage) -> Result<String, TestImageError> {
    let limit = Duration::from_secs(60);
    if let Ok(Ok(i)) = tokio::time::timeout(limit, docker.inspect_image(&image.id)).await
        && i.id.as_deref() == Some(image.id.as_str())
    {
        return Ok(image.id.clone());
    }
    let load = async {
        let mut s = docker.import_image(
            ImportImageOptionsBuilder::default().quiet(true).build(),
            bollard::body_full(image.archive.clone().into()),
            None,
        );
        while let Some(r) = s.next().await {
            r.map_err(|e| TestImageError::Load(e.to_string()))?;
        }
        Ok::<_, TestImageError>(())
    };
    tokio::time::timeout(limit, load)
        .await
        .map_err(|_| TestImageError::Load("timed out".into()))??;
    let got = tokio::time::timeout(limit, docker.inspect_image(&image.id))
        .await
        .map_err(|_| TestImageError::Load("inspect timed out".into()))?
        .map_err(|e| TestImageError::Load(e.to_string()))?
        .id
        .unwrap_or_default();
    if got != image.id {
        return Err(TestImageError::IdMismatch {
            got,
            want: image.id.clone(),
        });
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The image holds nothing but busybox, so only a static one can run in it (the
    /// canary's verdict on a runtime must not fail for want of a loader).
    #[test]
    fn only_a_static_executable_is_accepted() {
        let bb = read_busybox(&busybox_path()).unwrap_or_else(|e| {
            panic!("needs a static busybox ({e}); apt-get install busybox-static or set PINFOLD_BUSYBOX")
        });
        check_static(&bb).unwrap();
        // This test binary names the dynamic loader.
        let me = std::fs::read("/proc/self/exe").unwrap();
        let e = check_static(&me).unwrap_err().to_string();
        assert!(e.contains("dynamically linked"), "{e}");
        assert!(check_static(b"#!/bin/sh\necho hi\n").is_err());
        assert!(check_static(&bb[..0x30]).is_err());
    }
}
