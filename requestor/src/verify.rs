//! Checking what providers return: file digests, the output digest, receipts.
//!
//! The output digest is recomputed with [`pinfold_base::output_digest`], the very
//! function the provider's executors use, over what the requestor holds on its own disk,
//! so a provider cannot make a requestor accept outputs it did not describe.
//!
//! A downloaded job directory looks like this (and `requestor verify --outputs` reads it):
//! `outputs/` (the returned files), `stdout`, `stderr`, `receipt.json`.

use std::path::{Path, PathBuf};

use pinfold_net::protocol::OutputEntry;
use pinfold_net::{BlobId, PeerId, Receipt};

/// Why a check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The receipt is malformed or its signature does not verify.
    #[error("receipt: {0}")]
    Receipt(String),
    /// The receipt was signed by another peer than the one that ran the job.
    #[error("receipt is signed by {signer}, the job ran on {provider}")]
    WrongSigner {
        /// Who signed.
        signer: String,
        /// Who ran the job.
        provider: String,
    },
    /// A file or the digest does not match.
    #[error("{0}")]
    Mismatch(String),
    /// Reading local files failed.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> VerifyError {
    VerifyError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The BLAKE3 and size of a regular file (a link is refused, never followed).
pub fn hash_file(path: &Path) -> Result<(BlobId, u64), VerifyError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| io_err(path, e))?;
    if !meta.file_type().is_file() {
        return Err(io_err(path, "not a regular file"));
    }
    let mut f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut h = blake3::Hasher::new();
    let n = std::io::copy(&mut f, &mut h).map_err(|e| io_err(path, e))?;
    Ok((BlobId::from(h.finalize()), n))
}

/// The output digest of a file list and stdout, as the provider computes it (the shared
/// [`pinfold_base::output_digest`]).
pub fn output_digest(files: &[OutputEntry], stdout: &[u8]) -> String {
    pinfold_base::output_digest(files, stdout)
}

/// Every regular file under `root`, as `/`-separated relative paths with digests.
/// Links and special files are an error: a download never contains them.
pub fn scan_outputs(root: &Path) -> Result<Vec<OutputEntry>, VerifyError> {
    fn walk(root: &Path, rel: &str, out: &mut Vec<OutputEntry>) -> Result<(), VerifyError> {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let rd = std::fs::read_dir(&dir).map_err(|e| io_err(&dir, e))?;
        for e in rd {
            let e = e.map_err(|e| io_err(&dir, e))?;
            let name = e
                .file_name()
                .into_string()
                .map_err(|_| io_err(&e.path(), "name is not UTF-8"))?;
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let t = e.file_type().map_err(|err| io_err(&e.path(), err))?;
            if t.is_dir() {
                walk(root, &r, out)?;
            } else if t.is_file() {
                let (id, size) = hash_file(&e.path())?;
                out.push(OutputEntry {
                    path: r,
                    size,
                    blake3: id,
                });
            } else {
                return Err(io_err(&e.path(), "not a regular file or directory"));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    if root.exists() {
        walk(root, "", &mut out)?;
    }
    out.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(out)
}

/// Recomputes the output digest of a downloaded job directory (`outputs/` and `stdout`).
pub fn digest_of_job_dir(dir: &Path) -> Result<String, VerifyError> {
    let files = scan_outputs(&dir.join("outputs"))?;
    let stdout_path = dir.join("stdout");
    let stdout = std::fs::read(&stdout_path).map_err(|e| io_err(&stdout_path, e))?;
    Ok(output_digest(&files, &stdout))
}

/// Checks the receipt's signature; returns the signing provider.
pub fn check_receipt(receipt: &Receipt) -> Result<PeerId, VerifyError> {
    receipt
        .verify()
        .map_err(|e| VerifyError::Receipt(e.to_string()))
}

/// Reads and verifies a saved receipt, and (with `outputs`) that a downloaded job
/// directory's outputs have the digest it attests.
pub fn verify_saved(receipt: &Path, outputs: Option<&Path>) -> Result<Receipt, VerifyError> {
    let bytes = std::fs::read(receipt).map_err(|e| io_err(receipt, e))?;
    let r = Receipt::from_json(&bytes).map_err(|e| VerifyError::Receipt(e.to_string()))?;
    check_receipt(&r)?;
    if let Some(dir) = outputs {
        let digest = digest_of_job_dir(dir)?;
        if digest != r.body.outputs {
            return Err(VerifyError::Mismatch(format!(
                "outputs in {} have digest {digest}, the receipt attests {}",
                dir.display(),
                r.body.outputs
            )));
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_dir_digest_follows_the_files_and_stdout_and_refuses_links() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("outputs/sub")).unwrap();
        std::fs::write(d.path().join("outputs/b.txt"), b"bee").unwrap();
        std::fs::write(d.path().join("outputs/sub/a.txt"), b"ay").unwrap();
        std::fs::write(d.path().join("stdout"), b"hello\n").unwrap();
        let files = scan_outputs(&d.path().join("outputs")).unwrap();
        assert_eq!(
            files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            ["b.txt", "sub/a.txt"]
        );
        let expected = pinfold_base::output_digest(
            &[
                OutputEntry {
                    path: "sub/a.txt".into(),
                    size: 2,
                    blake3: BlobId::of(b"ay"),
                },
                OutputEntry {
                    path: "b.txt".into(),
                    size: 3,
                    blake3: BlobId::of(b"bee"),
                },
            ],
            b"hello\n",
        );
        assert_eq!(digest_of_job_dir(d.path()).unwrap(), expected);
        std::fs::write(d.path().join("stdout"), b"hello!\n").unwrap();
        assert_ne!(digest_of_job_dir(d.path()).unwrap(), expected);
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("outputs/link")).unwrap();
        assert!(matches!(
            scan_outputs(&d.path().join("outputs")),
            Err(VerifyError::Io { .. })
        ));
    }
}
