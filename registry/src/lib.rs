//! The registry: a transparency-logged store of definitions and reviewers' signed verdicts.
//!
//! - [`service`]: the registry itself, independent of HTTP: opens a data directory (SQLite
//!   store, log signing key, configuration), validates and logs publications and reviews,
//!   signs checkpoints, and answers proofs and views.
//! - [`store`]: the SQLite database behind it.
//! - [`server`]: the axum HTTP front end (JSON API and review web pages) over a bound
//!   listener with a shutdown future, plus periodic checkpoint re-signing.
//! - [`conn`]: the accept loop under it: connection cap, header/body/idle timeouts, byte
//!   budgets.
//! - [`policy`]: who may publish and how much (author policy, rate limits, quota).
//! - [`web`] and [`diff`]: the server-rendered review pages and their line diff.
//! - [`api`]: the JSON bodies both sides use.
//! - [`client`]: the blocking HTTP client, and [`client::sync`] / [`client::verified_status`],
//!   which bring a [`pinfold_tlog::Verifier`] up to date over HTTP and answer from it.
//! - [`witness`]: the `task-defs witness` server (C2SP `add-checkpoint`) and the registry's
//!   loop that asks its witnesses to cosign each new checkpoint.
//! - [`cli`]: the `task-defs` command line (authors, reviewers, operators), whose binary
//!   this crate builds.
//!
//! Without its default `server` feature the crate is [`api`] and [`client`] only: what a
//! node that reads a registry needs (the requestor), without axum, hyper, SQLite or tokio.
//!
//! The server is not trusted by clients: it signs what it logs, and clients verify the log
//! against keys, roster and threshold from their own configuration.

#![deny(missing_docs)]

pub mod api;
#[cfg(feature = "server")]
pub mod cli;
pub mod client;
#[cfg(feature = "server")]
pub mod conn;
#[cfg(feature = "server")]
pub mod diff;
#[cfg(feature = "server")]
pub mod observe;
#[cfg(feature = "server")]
pub mod policy;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod service;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod web;
#[cfg(feature = "server")]
pub mod witness;

use std::io::Write as _;
use std::path::Path;

use pinfold_tlog::{KeyError, SecretKey};

pub use client::{Client, ClientError, SyncFailure, verified_status};
#[cfg(feature = "server")]
pub use server::serve;
#[cfg(feature = "server")]
pub use service::{Registry, RegistryConfig, RegistryError, RequestError};

/// The current Unix time in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read or created.
    #[error("{}: {source}", path.display())]
    Io {
        /// The key file.
        path: std::path::PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not a secret key.
    #[error("{}: {source}", path.display())]
    Key {
        /// The key file.
        path: std::path::PathBuf,
        /// What went wrong.
        source: KeyError,
    },
}

/// Generates a key and writes it to a new file with mode 0600, refusing to overwrite.
pub fn create_secret_key_file(path: &Path) -> Result<SecretKey, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let key = SecretKey::generate().map_err(|source| KeyFileError::Key {
        path: path.to_path_buf(),
        source,
    })?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // Created private: no moment exists at which the seed is readable by others.
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(key.to_file_text().as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(key)
}

/// Reads a secret key file.
pub fn read_secret_key_file(path: &Path) -> Result<SecretKey, KeyFileError> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| std::io::Read::read_to_string(&mut std::io::Read::take(f, 4096), &mut text))
        .map_err(|source| KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    SecretKey::from_file_text(&text).map_err(|source| KeyFileError::Key {
        path: path.to_path_buf(),
        source,
    })
}
