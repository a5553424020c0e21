//! The node's persistent identity: an Ed25519 libp2p keypair in a `0600` file.
//!
//! The same key names the node on the network (its peer id), signs its capability ads and
//! signs its receipts, so a requestor can tie a receipt to the peer it talked to.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use pinfold_net::Keypair;

use super::NodeError;

/// Generates a key and writes it to `path` (mode `0600`, never overwriting).
pub fn create(path: &Path) -> Result<Keypair, NodeError> {
    let io = |e: std::io::Error| NodeError::Io(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let keypair = Keypair::generate_ed25519();
    let bytes = keypair
        .to_protobuf_encoding()
        .map_err(|e| NodeError::Io(format!("encoding the key: {e}")))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(keypair)
}

/// Reads the key at `path`, refusing one that others can read.
pub fn load(path: &Path) -> Result<Keypair, NodeError> {
    let io = |e: std::io::Error| NodeError::Io(format!("{}: {e}", path.display()));
    let meta = std::fs::symlink_metadata(path).map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(NodeError::Config(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(NodeError::Config(format!(
            "{} is readable by other users; chmod 600 it",
            path.display()
        )));
    }
    if meta.len() > 4096 {
        return Err(NodeError::Config(format!(
            "{} is too large",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    Keypair::from_protobuf_encoding(&bytes)
        .map_err(|e| NodeError::Config(format!("{}: not a key: {e}", path.display())))
}

/// Loads the key, creating it first when absent.
pub fn load_or_create(path: &Path) -> Result<Keypair, NodeError> {
    if path.exists() {
        load(path)
    } else {
        create(path)
    }
}
