//! The registry itself, without HTTP: data directory, validation, logging, checkpoints, views.
//!
//! One [`Registry`] owns one data directory:
//!
//! - `registry.sqlite` (+ WAL files): leaves, derived tables, the latest signed checkpoint;
//! - `log.key` (mode 0600): the log's Ed25519 checkpoint key, created on first start;
//! - `log.pub`: its public key, one line, the text `task-defs keygen` prints;
//! - `registry.toml` (optional, or `--config FILE`): `origin`, `threshold`,
//!   `checkpoint_interval_secs`, `max_bundle_bytes`, `public_url`, `[[reviewers]]` tables
//!   with `key` and optional `name`, `[[witnesses]]` tables with `vkey` (C2SP cosigner key)
//!   and `url` (its `add-checkpoint` prefix) plus `witness_timeout_secs`, the author policy
//!   and publishing limits in `[authors]` ([`super::policy`]), queue hiding in `[queue]` and
//!   the HTTP limits in `[server]` ([`super::conn::ServerLimits`]). Command-line flags
//!   override the file (a `--reviewer` flag replaces the file's roster, a `--witness` flag
//!   its witnesses);
//! - `uploads/`: publication bodies being received, spooled to disk (emptied at start).
//!
//! Every statement must be signed for this log's origin and at most
//! [`MAX_STATEMENT_FUTURE_SECS`] ahead of the registry's clock; anything else is refused,
//! never clamped. A statement older than the same reviewer's verdict is still logged (the
//! log shows the attempt), and every verifier, the server's own view included, records it
//! as stale.
//!
//! Writes are serialised by one mutex: the leaf, its derived rows and the checkpoint over
//! the new tree commit in one SQLite transaction before the call returns, so whatever the
//! server acknowledged is on disk. Leaf hashes live in a [`MemoryTree`] rebuilt at start
//! (one SHA-256 per leaf), so proofs never rehash the log. At start the rebuilt tree must
//! reproduce the stored checkpoint's root: a database edited behind the server's back is
//! refused rather than signed over.
//!
//! The server's own statuses come from a [`Verifier`] fed with every entry it logs, under
//! the server's roster and threshold: the same rule clients apply, but only a convenience
//! view; clients decide with their own configuration.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use super::api::{
    AppendResponse, ConsistencyResponse, DEFAULT_PAGE, DefinitionDetail, DefinitionList,
    DefinitionSummary, EntriesResponse, InclusionResponse, InfoResponse, ListOrder, ListQuery,
    MAX_ENTRIES_PER_PAGE, MAX_PAGE, MAX_SCAN, PublishRequest, ReviewRecord, RosterEntry,
    WitnessEntry,
};
use super::conn::{ServerFile, ServerLimits};
use super::policy::{AuthorPolicy, AuthorsFile, PublishPolicy, RateLimiter, ip_bucket};
use super::store::{DefinitionRow, Derived, ReviewRow, Store, StoreError};
use super::{KeyFileError, create_secret_key_file, read_secret_key_file, unix_now};
use crate::cli;
use pinfold_tlog::entry::MAX_LEAF_BYTES;
use pinfold_tlog::note::NoteSignature;
use pinfold_tlog::witness::signature_line;
use pinfold_tlog::{
    Checkpoint, Entry, MAX_STATEMENT_FUTURE_SECS, MAX_STATEMENT_TIME, MemoryTree, NoteSigner,
    NoteVerifier, PublicKey, Review, ReviewAction, Status, StatusReport, Verifier, VerifierConfig,
    WitnessPolicy, consistency_proof, inclusion_proof, leaf_hash, root, verify_inclusion,
};
use task_defs::bundle;
use task_defs::definition::{Definition, Error as DefError};
use task_defs::identity::DefinitionId;

/// The origin used when neither a flag nor the config file names one.
pub const DEFAULT_ORIGIN: &str = "pinfold-registry";
/// Default interval between checkpoint re-signatures.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
/// Default cap on a bundle's size.
pub const DEFAULT_MAX_BUNDLE_BYTES: u64 = 32 * 1024 * 1024;
/// Longest reviewer reason accepted.
pub const MAX_REASON_BYTES: usize = 4096;

/// The database file inside the data directory.
pub const DB_FILE: &str = "registry.sqlite";
/// The log's secret key file inside the data directory.
pub const KEY_FILE: &str = "log.key";
/// The log's public key file inside the data directory.
pub const PUB_FILE: &str = "log.pub";
/// The optional configuration file inside the data directory.
pub const CONFIG_FILE: &str = "registry.toml";
/// The directory inside the data directory where request bodies are spooled.
pub const UPLOADS_DIR: &str = "uploads";
/// The leaf format this code writes and reads (the `meta` row `log_format`): 2 since
/// statements name the log's origin.
pub const LOG_FORMAT: &str = "2";
/// The most witnesses a registry asks to cosign.
pub const MAX_WITNESSES: usize = 32;
/// Default timeout of one `add-checkpoint` request to a witness.
pub const DEFAULT_WITNESS_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the registry could not start.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A file in the data directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The log key file is unusable.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The configuration (flags or `registry.toml`) is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The stored log does not match its own signed checkpoint.
    #[error("integrity: {0}")]
    Integrity(String),
}

/// A refused or failed request, with the HTTP status it maps to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Over a rate limit (429); retry after so many seconds.
    #[error("{message}")]
    RateLimited {
        /// What limit, for people.
        message: String,
        /// Seconds until a retry can succeed.
        retry_after: u64,
    },
    /// The server is busy (503); retry after so many seconds.
    #[error("{message}")]
    Busy {
        /// Why, for people.
        message: String,
        /// Seconds to wait before retrying.
        retry_after: u64,
    },
    /// The client was too slow sending its request (408).
    #[error("{0}")]
    Timeout(String),
    /// Malformed input (400).
    #[error("{0}")]
    BadRequest(String),
    /// The signer may not do this here (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such thing (404).
    #[error("{0}")]
    NotFound(String),
    /// Too big (413).
    #[error("{0}")]
    TooLarge(String),
    /// The definition is invalid (422).
    #[error("{0}")]
    Invalid(String),
    /// The server failed (500).
    #[error("{0}")]
    Internal(String),
}

impl RequestError {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::BadRequest(_) => 400,
            RequestError::Forbidden(_) => 403,
            RequestError::NotFound(_) => 404,
            RequestError::TooLarge(_) => 413,
            RequestError::Invalid(_) => 422,
            RequestError::Internal(_) => 500,
            RequestError::RateLimited { .. } => 429,
            RequestError::Busy { .. } => 503,
            RequestError::Timeout(_) => 408,
        }
    }

    /// The `Retry-After` seconds of a 429 or 503.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            RequestError::RateLimited { retry_after, .. }
            | RequestError::Busy { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

fn internal(e: impl std::fmt::Display) -> RequestError {
    RequestError::Internal(e.to_string())
}

/// Settings given on the command line (or by a test); `None` and empty mean "from
/// `registry.toml`, else the default".
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// The data directory (created if missing).
    pub data_dir: PathBuf,
    /// The log's origin line.
    pub origin: Option<String>,
    /// The reviewer roster; non-empty replaces the file's.
    pub reviewers: Vec<RosterEntry>,
    /// How many distinct roster keys approve a definition (server view).
    pub threshold: Option<usize>,
    /// How often to re-sign the checkpoint when nothing is written.
    pub checkpoint_interval: Option<Duration>,
    /// The largest bundle accepted, in bytes.
    pub max_bundle_bytes: Option<u64>,
    /// The configuration file (default `DATA/registry.toml`, optional there; a file named
    /// here must exist).
    pub config_file: Option<PathBuf>,
    /// The URL people reach the registry at, shown in the commands pages print.
    pub public_url: Option<String>,
    /// The witnesses asked to cosign each checkpoint; non-empty replaces the file's.
    pub witnesses: Vec<WitnessEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    origin: Option<String>,
    threshold: Option<usize>,
    checkpoint_interval_secs: Option<u64>,
    max_bundle_bytes: Option<u64>,
    public_url: Option<String>,
    #[serde(default)]
    reviewers: Vec<RosterEntry>,
    #[serde(default)]
    authors: AuthorsFile,
    #[serde(default)]
    queue: QueueFile,
    #[serde(default)]
    server: ServerFile,
    #[serde(default)]
    witnesses: Vec<WitnessEntry>,
    witness_timeout_secs: Option<u64>,
}

/// The `[queue]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueFile {
    /// Pending definitions without any statement leave the queue after this many days
    /// (0: never).
    hide_unreviewed_after_days: Option<u64>,
}

/// Default age after which an unreviewed pending definition leaves the queue.
pub const DEFAULT_HIDE_UNREVIEWED_AFTER: Duration = Duration::from_secs(30 * 86400);

/// The settings in force after merging flags, file and defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The log's origin line.
    pub origin: String,
    /// The reviewer roster.
    pub roster: Vec<RosterEntry>,
    /// The server-view threshold.
    pub threshold: usize,
    /// Checkpoint re-signing interval.
    pub checkpoint_interval: Duration,
    /// The largest bundle accepted.
    pub max_bundle_bytes: u64,
    /// The configured public URL (`https://...`), if any.
    pub public_url: Option<String>,
    /// Who may publish, and how much.
    pub publish: PublishPolicy,
    /// Unreviewed pending definitions older than this leave the queue (`None`: never).
    pub hide_unreviewed_after: Option<Duration>,
    /// The HTTP front end's limits.
    pub server: ServerLimits,
    /// The witnesses asked to cosign each checkpoint.
    pub witnesses: Vec<WitnessEntry>,
    /// Timeout of one request to a witness.
    pub witness_timeout: Duration,
}

/// The in-memory rate limiters of publishing.
#[derive(Debug)]
struct Limiters {
    key: RateLimiter<PublicKey>,
    ip: RateLimiter<IpAddr>,
}

struct Inner {
    store: Store,
    tree: MemoryTree,
    checkpoint: Checkpoint,
    note: Vec<u8>,
    /// Witness cosignatures of `note`, in the order they arrived.
    cosignatures: Vec<NoteSignature>,
    /// For each number of cosignatures n, the newest note at least n witnesses cosigned,
    /// with their cosignatures (maybe older than `note`): a client needing K cosignatures
    /// still finds a view when some witnesses are down. At most one entry per witness.
    cosigned: std::collections::BTreeMap<usize, (Checkpoint, Vec<u8>)>,
    view: Verifier,
}

/// A running registry over one data directory.
pub struct Registry {
    settings: Settings,
    limiters: Limiters,
    signer: NoteSigner,
    log_key: PublicKey,
    data_dir: PathBuf,
    inner: Mutex<Inner>,
    /// Signalled whenever a new checkpoint is signed, for the witness loop.
    changed: tokio::sync::Notify,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("data_dir", &self.data_dir)
            .field("origin", &self.settings.origin)
            .field("log_key", &self.log_key)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks a public URL: `http(s)://host[:port][/path]`, nothing a page could misquote.
pub fn check_public_url(url: &str) -> Result<String, String> {
    let url = url.trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("public URL {url:?} must start with https:// (or http://)"))?;
    let host = rest.split('/').next().unwrap_or("");
    let ok = !host.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~:/[]%".contains(c));
    if !ok {
        return Err(format!(
            "public URL {url:?} must be a plain http(s)://host[:port][/path] without query, fragment, spaces or user info"
        ));
    }
    Ok(url.to_string())
}

fn resolve(config: &RegistryConfig) -> Result<Settings, RegistryError> {
    let (path, required) = match &config.config_file {
        Some(p) => (p.clone(), true),
        None => (config.data_dir.join(CONFIG_FILE), false),
    };
    let file: FileConfig = match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            let msg = task_defs::diag::with_suggestion(e.to_string());
            RegistryError::Config(format!("{}: {msg}", path.display()))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => FileConfig::default(),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let in_file = |e: String| RegistryError::Config(format!("{}: {e}", path.display()));
    let publish = PublishPolicy::from_file(&file.authors).map_err(in_file)?;
    let server = ServerLimits::from_file(&file.server).map_err(in_file)?;
    let public_url = match config.public_url.clone().or(file.public_url) {
        Some(u) => Some(check_public_url(&u).map_err(RegistryError::Config)?),
        None => None,
    };
    let hide_unreviewed_after = match file.queue.hide_unreviewed_after_days {
        Some(0) => None,
        Some(d) => Some(Duration::from_secs(d.saturating_mul(86400))),
        None => Some(DEFAULT_HIDE_UNREVIEWED_AFTER),
    };
    let roster = if config.reviewers.is_empty() {
        file.reviewers
    } else {
        config.reviewers.clone()
    };
    if roster.is_empty() {
        return Err(RegistryError::Config(format!(
            "no reviewers: pass --reviewer PUBKEY or list [[reviewers]] in {}",
            path.display()
        )));
    }
    let distinct: std::collections::BTreeSet<_> = roster.iter().map(|r| r.key).collect();
    let threshold = config.threshold.or(file.threshold).unwrap_or(1);
    if threshold == 0 || threshold > distinct.len() {
        return Err(RegistryError::Config(format!(
            "threshold {threshold} must be between 1 and the number of reviewers ({})",
            distinct.len()
        )));
    }
    let interval = config
        .checkpoint_interval
        .or(file.checkpoint_interval_secs.map(Duration::from_secs))
        .unwrap_or(DEFAULT_CHECKPOINT_INTERVAL);
    if interval.is_zero() {
        return Err(RegistryError::Config(
            "checkpoint interval must be positive".into(),
        ));
    }
    let witnesses = if config.witnesses.is_empty() {
        file.witnesses
    } else {
        config.witnesses.clone()
    };
    // Every cosignature rides on the served note, and clients accept at most 64 signature
    // lines per note (`note::MAX_SIGNATURES`, the log's own included).
    if witnesses.len() > MAX_WITNESSES {
        return Err(RegistryError::Config(format!(
            "{} witnesses configured, at most {MAX_WITNESSES}",
            witnesses.len()
        )));
    }
    Ok(Settings {
        origin: config
            .origin
            .clone()
            .or(file.origin)
            .unwrap_or_else(|| DEFAULT_ORIGIN.into()),
        roster,
        threshold,
        checkpoint_interval: interval,
        max_bundle_bytes: config
            .max_bundle_bytes
            .or(file.max_bundle_bytes)
            .unwrap_or(DEFAULT_MAX_BUNDLE_BYTES)
            .min(bundle::MAX_BUNDLE_BYTES),
        public_url,
        publish,
        hide_unreviewed_after,
        server,
        witnesses,
        witness_timeout: file
            .witness_timeout_secs
            .map_or(DEFAULT_WITNESS_TIMEOUT, Duration::from_secs)
            .max(Duration::from_secs(1)),
    })
}

fn create_private_dir(dir: &Path) -> Result<(), RegistryError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        b.mode(0o700);
    }
    b.create(dir).map_err(io_err(dir))
}

/// Loads the log key, creating it (and `log.pub`) on first start.
fn log_key(dir: &Path) -> Result<pinfold_tlog::SecretKey, RegistryError> {
    let key_path = dir.join(KEY_FILE);
    let key = if key_path.exists() {
        read_secret_key_file(&key_path)?
    } else {
        create_secret_key_file(&key_path)?
    };
    let pub_path = dir.join(PUB_FILE);
    let text = format!("{}\n", key.public_key());
    if std::fs::read_to_string(&pub_path).ok().as_deref() != Some(text.as_str()) {
        std::fs::write(&pub_path, text).map_err(io_err(&pub_path))?;
    }
    Ok(key)
}

impl Registry {
    /// Opens the data directory: creates what is missing, checks the stored log against
    /// its last signed checkpoint, and signs a fresh checkpoint.
    pub fn open(config: &RegistryConfig) -> Result<Registry, RegistryError> {
        let dir = &config.data_dir;
        create_private_dir(dir)?;
        let mut settings = resolve(config)?;
        let key = log_key(dir)?;
        // Validate a flag's or file's origin before it can be recorded.
        NoteSigner::new(&settings.origin, key.clone())
            .map_err(|e| RegistryError::Config(format!("origin {:?}: {e}", settings.origin)))?;
        let store = Store::open(&dir.join(DB_FILE))?;

        // The origin is part of every checkpoint clients verified: it may never change.
        match store.meta("origin")? {
            Some(o) if config.origin.is_some() && o != settings.origin => {
                return Err(RegistryError::Config(format!(
                    "this log's origin is {o:?}; it cannot become {:?}",
                    settings.origin
                )));
            }
            Some(o) => settings.origin = o,
            None => store.set_meta("origin", &settings.origin)?,
        }
        let signer = NoteSigner::new(&settings.origin, key.clone())
            .map_err(|e| RegistryError::Config(format!("origin {:?}: {e}", settings.origin)))?;
        let verifier = signer.verifier();

        let count = store.leaf_count()?;
        // Format-1 leaves name no origin: their reviews would be replayable, so such a log
        // is not silently reinterpreted (its approvals would all stop counting).
        match store.meta("log_format")? {
            Some(f) if f == LOG_FORMAT => {}
            None if count == 0 => store.set_meta("log_format", LOG_FORMAT)?,
            f => {
                return Err(RegistryError::Config(format!(
                    "{} holds a log of format {}; this registry writes format {LOG_FORMAT} \
                     (statements bound to the log's origin): serve a new data directory and \
                     publish and review again there",
                    dir.display(),
                    f.as_deref().unwrap_or("1")
                )));
            }
        }
        let leaves = store.leaves(0, count)?;
        let tree = MemoryTree::from_leaf_hashes(leaves.iter().map(|l| leaf_hash(l)));
        let now = unix_now();
        let mut time = now;
        if let Some(note) = store.meta("checkpoint")? {
            let cp = Checkpoint::open(note.as_bytes(), &verifier).map_err(|e| {
                RegistryError::Integrity(format!(
                    "the stored checkpoint does not verify under {}: {e}",
                    dir.join(KEY_FILE).display()
                ))
            })?;
            // Leaves and the checkpoint over them commit together, so any other count means
            // rows were added or removed behind the server's back.
            if cp.size != tree.size() {
                return Err(RegistryError::Integrity(format!(
                    "the last checkpoint covers {} entries but the database holds {}",
                    cp.size,
                    tree.size()
                )));
            }
            let r = root(&tree, cp.size).map_err(|e| RegistryError::Integrity(e.to_string()))?;
            if r != cp.root {
                return Err(RegistryError::Integrity(format!(
                    "the stored entries do not hash to the last signed root (size {}): the database was altered",
                    cp.size
                )));
            }
            time = time.max(cp.time);
        } else if tree.size() > 0 {
            return Err(RegistryError::Integrity(format!(
                "the database holds {} entries but no signed checkpoint",
                tree.size()
            )));
        }
        let checkpoint = Checkpoint {
            origin: settings.origin.clone(),
            size: tree.size(),
            root: tree.root(),
            time,
        };
        let note = checkpoint
            .sign(&signer)
            .map_err(|e| RegistryError::Config(e.to_string()))?;
        store.set_meta("checkpoint", &String::from_utf8_lossy(&note))?;

        let mut view = Verifier::new(VerifierConfig {
            origin: settings.origin.clone(),
            log_key: verifier,
            reviewers: settings.roster.iter().map(|r| r.key).collect(),
            threshold: settings.threshold,
            max_age_secs: u64::MAX,
            witnesses: WitnessPolicy::default(),
        })
        .map_err(|e| RegistryError::Config(e.to_string()))?;
        view.update(&note, &leaves, &[], time.max(now))
            .map_err(|e| RegistryError::Integrity(e.to_string()))?;

        // Bodies half-received when the last process died are of no use to anyone.
        let uploads = dir.join(UPLOADS_DIR);
        if uploads.exists() {
            std::fs::remove_dir_all(&uploads).map_err(io_err(&uploads))?;
        }
        create_private_dir(&uploads)?;

        Ok(Registry {
            limiters: Limiters {
                key: RateLimiter::new(settings.publish.key_rate),
                ip: RateLimiter::new(settings.publish.ip_rate),
            },
            settings,
            signer,
            log_key: key.public_key(),
            data_dir: dir.clone(),
            inner: Mutex::new(Inner {
                store,
                tree,
                checkpoint,
                note,
                cosignatures: Vec::new(),
                cosigned: std::collections::BTreeMap::new(),
                view,
            }),
            changed: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock happens before any commit or after a full one, and
        // the tree is restored on failed commits, so the state behind a poisoned lock is sound.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The log's public key.
    pub fn log_key(&self) -> PublicKey {
        self.log_key
    }

    /// The verifier key of the log (origin and public key).
    pub fn note_verifier(&self) -> NoteVerifier {
        self.signer.verifier()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The latest signed checkpoint note, with the witness cosignatures gathered for it.
    pub fn checkpoint_note(&self) -> Vec<u8> {
        let inner = self.lock();
        let mut note = inner.note.clone();
        for sig in &inner.cosignatures {
            note.extend_from_slice(signature_line(sig).as_bytes());
        }
        note
    }

    /// The newest checkpoint note that at least `min` (at least 1) witnesses cosigned, with
    /// their cosignatures; it may be older than [`Registry::checkpoint_note`] while a witness
    /// round is under way or when witnesses are down.
    pub fn cosigned_note(&self, min: usize) -> Option<Vec<u8>> {
        self.lock()
            .cosigned
            .get(&min.max(1))
            .map(|(_, n)| n.clone())
    }

    /// The signed note of the current checkpoint (without cosignatures) and the checkpoint.
    pub(crate) fn current_note(&self) -> (Vec<u8>, Checkpoint) {
        let inner = self.lock();
        (inner.note.clone(), inner.checkpoint.clone())
    }

    /// Records witness cosignatures (already verified by the caller) of `note`, the signed
    /// checkpoint `cp`: served with the note while it is current, and as the newest
    /// checkpoint with that many cosignatures (and with each smaller number) unless a
    /// bigger (or same-size, fresher) one is already.
    pub(crate) fn add_cosignatures(&self, note: &[u8], cp: &Checkpoint, sigs: Vec<NoteSignature>) {
        if sigs.is_empty() {
            return;
        }
        let mut inner = self.lock();
        let mut bytes = note.to_vec();
        for sig in &sigs {
            bytes.extend_from_slice(signature_line(sig).as_bytes());
        }
        let count = sigs.len();
        if inner.note == note {
            inner.cosignatures = sigs;
        }
        for n in 1..=count {
            let newer = inner
                .cosigned
                .get(&n)
                .is_none_or(|(c, _)| (cp.size, cp.time) >= (c.size, c.time));
            if newer {
                inner.cosigned.insert(n, (cp.clone(), bytes.clone()));
            }
        }
    }

    /// Waits until a checkpoint newer than the last wait's is signed.
    pub(crate) async fn checkpoint_changed(&self) {
        self.changed.notified().await;
    }

    /// The consistency proof between two sizes of the current tree, for witnesses.
    pub(crate) fn proof_between(&self, old: u64, new: u64) -> Option<Vec<pinfold_tlog::Hash>> {
        consistency_proof(&self.lock().tree, old, new).ok()
    }

    /// The latest checkpoint.
    pub fn checkpoint(&self) -> Checkpoint {
        self.lock().checkpoint.clone()
    }

    /// Signs the current tree again with the current time, so clients can tell a live log
    /// from a frozen one.
    pub fn resign(&self) -> Result<(), RequestError> {
        let mut inner = self.lock();
        let now = unix_now();
        let cp = Checkpoint {
            time: now.max(inner.checkpoint.time),
            ..inner.checkpoint.clone()
        };
        let note = cp.sign(&self.signer).map_err(internal)?;
        inner
            .store
            .set_meta("checkpoint", &String::from_utf8_lossy(&note))
            .map_err(internal)?;
        let empty: [&[u8]; 0] = [];
        inner
            .view
            .update(&note, &empty, &[], cp.time)
            .map_err(internal)?;
        inner.checkpoint = cp;
        inner.note = note;
        inner.cosignatures.clear();
        self.changed.notify_one();
        Ok(())
    }

    /// Logs one entry with its derived rows; commits before returning its leaf index.
    fn append(
        &self,
        inner: &mut Inner,
        entry: &Entry,
        derived: Derived<'_>,
    ) -> Result<u64, RequestError> {
        let leaf = entry.to_leaf();
        if leaf.len() > MAX_LEAF_BYTES {
            return Err(RequestError::TooLarge(format!(
                "the log entry would be {} bytes, over the {MAX_LEAF_BYTES}-byte limit",
                leaf.len()
            )));
        }
        let index = inner.tree.size();
        let now = unix_now();
        inner.tree.push(&leaf);
        let cp = Checkpoint {
            origin: self.settings.origin.clone(),
            size: index + 1,
            root: inner.tree.root(),
            time: now.max(inner.checkpoint.time),
        };
        let signed = cp.sign(&self.signer).map_err(internal);
        let result = signed.and_then(|note| {
            inner
                .store
                .append(index, &leaf, derived, now, &String::from_utf8_lossy(&note))
                .map_err(internal)
                .map(|()| note)
        });
        let note = match result {
            Ok(n) => n,
            Err(e) => {
                // Not committed: forget the leaf so the tree matches the database again.
                inner.tree = MemoryTree::from_leaf_hashes(
                    inner.tree.leaf_hashes()[..index as usize].to_vec(),
                );
                return Err(e);
            }
        };
        let proof = consistency_proof(&inner.tree, index, index + 1).unwrap_or_default();
        if let Err(e) = inner.view.update(&note, &[&leaf], &proof, cp.time) {
            // Committed and signed, so the log is right; only the server's view lags.
            eprintln!("warning: the registry's own view refused entry {index}: {e}");
        }
        inner.checkpoint = cp;
        inner.note = note;
        inner.cosignatures.clear();
        self.changed.notify_one();
        Ok(index)
    }

    /// The directory request bodies are spooled to.
    pub fn uploads_dir(&self) -> PathBuf {
        self.data_dir.join(UPLOADS_DIR)
    }

    /// The per-IP publishing limit: takes a token for `ip` or refuses with a 429. Called
    /// before a publication's body is read, so a flood costs the server nothing more.
    pub fn admit_publisher_ip(&self, ip: IpAddr) -> Result<(), RequestError> {
        let bucket = ip_bucket(ip);
        self.limiters
            .ip
            .take(&bucket, std::time::Instant::now())
            .map_err(|wait| {
                let retry_after = wait.as_secs().max(1);
                RequestError::RateLimited {
                    message: format!(
                        "publication rate limit for {bucket}{}: {}; retry in {retry_after} s",
                        if bucket.is_ipv6() { "/64" } else { "" },
                        self.limiters.ip.rate()
                    ),
                    retry_after,
                }
            })
    }

    /// Refuses a statement signed for another log, or with a time more than
    /// [`MAX_STATEMENT_FUTURE_SECS`] ahead of this registry's clock (or of 2^63): refused,
    /// never clamped, so the log holds only statements every verifier will weigh.
    fn check_statement(&self, what: &str, origin: &str, time: u64) -> Result<(), RequestError> {
        if origin != self.settings.origin {
            return Err(RequestError::BadRequest(format!(
                "the {what} is signed for the log {origin:?}, not this one ({:?})",
                self.settings.origin
            )));
        }
        let latest = unix_now()
            .saturating_add(MAX_STATEMENT_FUTURE_SECS)
            .min(MAX_STATEMENT_TIME);
        if time > latest {
            return Err(RequestError::BadRequest(format!(
                "the {what}'s signed time {time} is more than {MAX_STATEMENT_FUTURE_SECS} s \
                 ahead of the registry's clock (latest accepted {latest})"
            )));
        }
        Ok(())
    }

    /// Validates and logs a publication; publishing a logged identity again is a no-op.
    pub fn publish(&self, req: &PublishRequest) -> Result<AppendResponse, RequestError> {
        self.publish_parts(&req.publication, &req.bundle)
    }

    /// [`Registry::publish`] of a request body spooled to `path` (at most the publish
    /// limit: the caller capped it while receiving).
    pub fn publish_spooled(&self, path: &Path) -> Result<AppendResponse, RequestError> {
        /// The request with its bundle borrowed from the body, so the largest thing in
        /// memory is the body itself, not a second copy of it.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Borrowed<'a> {
            publication: pinfold_tlog::Published,
            #[serde(borrow)]
            bundle: std::borrow::Cow<'a, str>,
        }
        let body = std::fs::read(path).map_err(internal)?;
        let req: Borrowed<'_> = serde_json::from_slice(&body)
            .map_err(|e| RequestError::BadRequest(format!("malformed request body: {e}")))?;
        if let Some(done) = self.admit(&req.publication, req.bundle.len())? {
            return Ok(done);
        }
        let bytes = decode_bundle(&req.bundle)?;
        let publication = req.publication;
        // The body is the largest thing held; it goes before validation copies the bundle.
        drop(body);
        self.validate_and_append(&publication, bytes)
    }

    fn publish_parts(
        &self,
        p: &pinfold_tlog::Published,
        bundle_b64: &str,
    ) -> Result<AppendResponse, RequestError> {
        if let Some(done) = self.admit(p, bundle_b64.len())? {
            return Ok(done);
        }
        self.validate_and_append(p, decode_bundle(bundle_b64)?)
    }

    /// The checks a publication passes before its bundle is decoded: signature, allowlist,
    /// size, the author's rate and quota. `Some` answers a retry of a logged publication.
    fn admit(
        &self,
        p: &pinfold_tlog::Published,
        b64_len: usize,
    ) -> Result<Option<AppendResponse>, RequestError> {
        self.check_statement("publication", &p.origin, p.time)?;
        p.verify().map_err(|_| {
            RequestError::BadRequest(format!(
                "the publication's signature does not verify under author key {}",
                p.author
            ))
        })?;
        let policy = &self.settings.publish;
        if let AuthorPolicy::Allowlist(keys) = &policy.authors
            && !keys.contains(&p.author)
        {
            return Err(RequestError::Forbidden(format!(
                "author key {} is not on this registry's author allowlist",
                p.author
            )));
        }
        let max = self.settings.max_bundle_bytes;
        if b64_len as u64 > max.div_ceil(3) * 4 + 4 {
            return Err(RequestError::TooLarge(format!(
                "bundle exceeds the registry's limit of {max} bytes per bundle (max_bundle_bytes)"
            )));
        }
        // A retry of a logged publication is answered before any limit or validation: it
        // stores nothing.
        if let Some(done) = self.already_logged(&self.lock(), p)? {
            return Ok(Some(done));
        }
        self.limiters
            .key
            .take(&p.author, std::time::Instant::now())
            .map_err(|wait| {
                let retry_after = wait.as_secs().max(1);
                RequestError::RateLimited {
                    message: format!(
                        "publication rate limit for author key {}: {}; retry in {retry_after} s",
                        p.author,
                        self.limiters.key.rate()
                    ),
                    retry_after,
                }
            })?;
        // Refuse over-quota authors before the costly decode and validation.
        let estimate = (b64_len as u64 / 4) * 3;
        self.check_quota(&self.lock().store, &p.author, estimate)?;
        Ok(None)
    }

    /// Validates an admitted publication's bundle and logs it.
    fn validate_and_append(
        &self,
        p: &pinfold_tlog::Published,
        bytes: Vec<u8>,
    ) -> Result<AppendResponse, RequestError> {
        let max = self.settings.max_bundle_bytes;
        if bytes.len() as u64 > max {
            return Err(RequestError::TooLarge(format!(
                "bundle of {} bytes exceeds the registry's limit of {max} bytes per bundle (max_bundle_bytes)",
                bytes.len()
            )));
        }
        // The same checks as `task-defs check`: a bundle becomes a Definition only through
        // `Definition::from_parts`.
        let def = bundle::read(&bytes).map_err(|e| match e {
            DefError::Invalid(ref d) => RequestError::Invalid(format!("{e}:\n{d}")),
            other => RequestError::BadRequest(format!("unreadable bundle: {other}")),
        })?;
        drop(bytes);
        if def.id != p.definition {
            return Err(RequestError::BadRequest(format!(
                "the bundle's identity is {} but the publication names {}",
                def.id, p.definition
            )));
        }
        if def.manifest.name != p.name || def.manifest.version.to_string() != p.version {
            return Err(RequestError::BadRequest(format!(
                "the publication names {} {} but the manifest says {} {}",
                p.name, p.version, def.manifest.name, def.manifest.version
            )));
        }
        // Store the canonical packing, so the stored bytes depend on the identity alone.
        let canonical = bundle::pack(&def);
        drop(def);
        let mut inner = self.lock();
        if let Some(done) = self.already_logged(&inner, p)? {
            return Ok(done);
        }
        // Checked again under the lock: two uploads by one key cannot both squeeze in.
        self.check_quota(&inner.store, &p.author, canonical.len() as u64)?;
        let entry = Entry::Published(p.clone());
        let index = self.append(&mut inner, &entry, Derived::Published(p, &canonical))?;
        Ok(AppendResponse {
            id: p.definition,
            index,
            created: true,
            tree_size: inner.checkpoint.size,
        })
    }

    /// The answer to a publication of an identity already logged: where it sits.
    fn already_logged(
        &self,
        inner: &Inner,
        p: &pinfold_tlog::Published,
    ) -> Result<Option<AppendResponse>, RequestError> {
        Ok(inner
            .store
            .definition(&p.definition)
            .map_err(internal)?
            .map(|row| AppendResponse {
                id: row.id,
                index: row.index,
                created: false,
                tree_size: inner.checkpoint.size,
            }))
    }

    fn check_quota(
        &self,
        store: &Store,
        author: &PublicKey,
        adding: u64,
    ) -> Result<(), RequestError> {
        let quota = self.settings.publish.key_quota_bytes;
        let used = store.author_usage(author).map_err(internal)?;
        if used.saturating_add(adding) > quota {
            return Err(RequestError::TooLarge(format!(
                "storage quota of author key {author} exceeded: {used} of {quota} bytes used \
                 (key_quota_bytes), this bundle needs {adding} more"
            )));
        }
        Ok(())
    }

    /// Validates and logs a reviewer statement; logging the same statement again is a no-op.
    pub fn review(&self, r: &Review) -> Result<AppendResponse, RequestError> {
        r.verify().map_err(|_| {
            RequestError::BadRequest(format!(
                "the statement's signature does not verify under reviewer key {}",
                r.reviewer
            ))
        })?;
        self.check_statement("statement", &r.origin, r.time)?;
        if !self.settings.roster.iter().any(|e| e.key == r.reviewer) {
            return Err(RequestError::Forbidden(format!(
                "{} is not on this registry's reviewer roster",
                r.reviewer
            )));
        }
        if r.reason.len() > MAX_REASON_BYTES {
            return Err(RequestError::TooLarge(format!(
                "reason exceeds {MAX_REASON_BYTES} bytes"
            )));
        }
        if r.action != ReviewAction::Approve && r.reason.trim().is_empty() {
            return Err(RequestError::BadRequest(format!(
                "a {} needs a reason",
                match r.action {
                    ReviewAction::Reject => "rejection",
                    _ => "revocation",
                }
            )));
        }
        let mut inner = self.lock();
        // Revocations of identities never published here are logged too: a reviewer may
        // block a definition known to be bad before anyone publishes it (clients fail closed).
        if r.action != ReviewAction::Revoke
            && inner
                .store
                .definition(&r.definition)
                .map_err(internal)?
                .is_none()
        {
            return Err(RequestError::NotFound(format!(
                "{} was never published to this registry",
                r.definition
            )));
        }
        if let Some(index) = inner.store.find_review(r).map_err(internal)? {
            return Ok(AppendResponse {
                id: r.definition,
                index,
                created: false,
                tree_size: inner.checkpoint.size,
            });
        }
        let entry = Entry::Review(r.clone());
        let index = self.append(&mut inner, &entry, Derived::Review(r))?;
        Ok(AppendResponse {
            id: r.definition,
            index,
            created: true,
            tree_size: inner.checkpoint.size,
        })
    }

    /// What the server says about itself.
    pub fn info(&self) -> InfoResponse {
        InfoResponse {
            origin: self.settings.origin.clone(),
            log_key: self.log_key,
            reviewers: self.settings.roster.clone(),
            threshold: self.settings.threshold,
            tree_size: self.lock().checkpoint.size,
            max_bundle_bytes: self.settings.max_bundle_bytes,
            public_url: self.settings.public_url.clone(),
            author_policy: self.settings.publish.authors.name().to_string(),
            log_vkey: self.signer.verifier().to_vkey(),
            witnesses: self.settings.witnesses.clone(),
        }
    }

    /// Leaves from `start`, at most [`MAX_ENTRIES_PER_PAGE`], ending before `end`.
    pub fn entries(&self, start: u64, end: u64) -> Result<EntriesResponse, RequestError> {
        let inner = self.lock();
        let size = inner.checkpoint.size;
        if start > end || end > size {
            return Err(RequestError::BadRequest(format!(
                "entry range {start}..{end} is not within the tree of size {size}"
            )));
        }
        let end = end.min(start + MAX_ENTRIES_PER_PAGE);
        let leaves = inner.store.leaves(start, end).map_err(internal)?;
        Ok(EntriesResponse {
            start,
            entries: leaves.iter().map(|l| B64.encode(l)).collect(),
        })
    }

    /// An inclusion proof from the in-memory tree.
    pub fn inclusion(&self, index: u64, size: u64) -> Result<InclusionResponse, RequestError> {
        let inner = self.lock();
        if size > inner.checkpoint.size || index >= size {
            return Err(RequestError::BadRequest(format!(
                "no leaf {index} in a tree of size {size} (current size {})",
                inner.checkpoint.size
            )));
        }
        let proof = inclusion_proof(&inner.tree, index, size).map_err(internal)?;
        Ok(InclusionResponse { index, size, proof })
    }

    /// A consistency proof from the in-memory tree.
    pub fn consistency(&self, old: u64, new: u64) -> Result<ConsistencyResponse, RequestError> {
        let inner = self.lock();
        if old > new || new > inner.checkpoint.size {
            return Err(RequestError::BadRequest(format!(
                "no consistency proof from size {old} to {new} (current size {})",
                inner.checkpoint.size
            )));
        }
        let proof = consistency_proof(&inner.tree, old, new).map_err(internal)?;
        Ok(ConsistencyResponse { old, new, proof })
    }

    fn summary(
        &self,
        inner: &Inner,
        row: &DefinitionRow,
        now: u64,
    ) -> Result<DefinitionSummary, RequestError> {
        // Counted as every verifier counts them: verdicts by signed time, no self-approval.
        let approvals = inner.view.report(&row.id).approvals;
        let status = inner.view.status_unchecked(&row.id);
        // Only the queue hides: a definition someone judged is never hidden.
        let hidden = if status != Status::Pending {
            None
        } else if let Some((_, reason)) = inner.store.hidden(&row.id).map_err(internal)? {
            Some(format!("hidden by the operator: {reason}"))
        } else {
            match self.settings.hide_unreviewed_after {
                Some(after)
                    if now.saturating_sub(row.received) > after.as_secs()
                        && !inner.store.has_reviews(&row.id).map_err(internal)? =>
                {
                    Some(format!(
                        "no reviewer statement in {} days",
                        after.as_secs() / 86400
                    ))
                }
                _ => None,
            }
        };
        Ok(DefinitionSummary {
            id: row.id,
            name: row.name.clone(),
            version: row.version.clone(),
            author: row.author,
            index: row.index,
            published_at: row.received,
            size: row.size,
            status,
            approvals,
            hidden,
        })
    }

    /// One page of definitions (see [`ListQuery`]): at most [`MAX_PAGE`] rows, found by
    /// scanning at most [`MAX_SCAN`] publications, so a rare status costs bounded work per
    /// request; follow `next_cursor` until it is absent.
    pub fn list(&self, q: &ListQuery) -> Result<DefinitionList, RequestError> {
        let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
        let newest_first = q.order != Some(ListOrder::Oldest);
        let now = unix_now();
        let inner = self.lock();
        let mut out = Vec::new();
        let mut cursor = q.cursor;
        let mut scanned = 0;
        loop {
            let chunk = (MAX_SCAN - scanned).min(256);
            let rows = inner
                .store
                .definitions_page(cursor, newest_first, chunk)
                .map_err(internal)?;
            for row in &rows {
                scanned += 1;
                cursor = Some(row.index);
                let s = self.summary(&inner, row, now)?;
                if q.status.is_none_or(|st| s.status == st) && (q.hidden || s.hidden.is_none()) {
                    out.push(s);
                    if out.len() == limit {
                        return Ok(DefinitionList {
                            definitions: out,
                            next_cursor: cursor,
                        });
                    }
                }
            }
            let next_cursor = if rows.len() < chunk {
                None
            } else if scanned >= MAX_SCAN {
                cursor
            } else {
                continue;
            };
            return Ok(DefinitionList {
                definitions: out,
                next_cursor,
            });
        }
    }

    /// The server-view summary of one definition.
    pub fn summary_of(&self, id: &DefinitionId) -> Result<DefinitionSummary, RequestError> {
        let inner = self.lock();
        let row = inner
            .store
            .definition(id)
            .map_err(internal)?
            .ok_or_else(|| not_published(id))?;
        self.summary(&inner, &row, unix_now())
    }

    fn review_record(&self, r: ReviewRow) -> ReviewRecord {
        let entry = self.settings.roster.iter().find(|e| e.key == r.reviewer);
        ReviewRecord {
            index: r.index,
            reviewer: r.reviewer,
            reviewer_name: entry.and_then(|e| e.name.clone()),
            on_roster: entry.is_some(),
            action: r.action,
            definition: r.definition,
            reason: r.reason,
            time: r.time,
            logged_at: r.received,
        }
    }

    /// Why the server's view gives `id` its status (its roster and threshold): each
    /// reviewer's verdict, self-approvals, authors and stale statements. A convenience for
    /// pages; clients compute their own with [`Verifier::report`].
    pub fn status_report(&self, id: &DefinitionId) -> StatusReport {
        self.lock().view.report(id)
    }

    /// Every statement about `id`, in log order.
    pub fn reviews_of(&self, id: &DefinitionId) -> Result<Vec<ReviewRecord>, RequestError> {
        let rows = self.lock().store.reviews_of(id).map_err(internal)?;
        Ok(rows.into_iter().map(|r| self.review_record(r)).collect())
    }

    /// Every revocation, newest first.
    pub fn revocations(&self) -> Result<Vec<ReviewRecord>, RequestError> {
        let rows = self
            .lock()
            .store
            .reviews_with(ReviewAction::Revoke)
            .map_err(internal)?;
        Ok(rows.into_iter().map(|r| self.review_record(r)).collect())
    }

    /// The last approved (server view) version of the same name published before `id`.
    pub fn previous_approved(
        &self,
        summary: &DefinitionSummary,
    ) -> Result<Option<DefinitionSummary>, RequestError> {
        let inner = self.lock();
        let rows = inner
            .store
            .versions_before(&summary.name, summary.index)
            .map_err(internal)?;
        let now = unix_now();
        for r in rows.iter().filter(|r| r.id != summary.id) {
            let s = self.summary(&inner, r, now)?;
            if s.status == Status::Approved {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    /// The stored bundle of `id`, re-read and re-validated: bytes and definition.
    pub fn bundle(&self, id: &DefinitionId) -> Result<(Vec<u8>, Definition), RequestError> {
        let bytes = self
            .lock()
            .store
            .bundle(id)
            .map_err(internal)?
            .ok_or_else(|| not_published(id))?;
        let def = bundle::read(&bytes).map_err(|e| {
            RequestError::Internal(format!("the stored bundle of {id} fails validation: {e}"))
        })?;
        if def.id != *id {
            return Err(RequestError::Internal(format!(
                "the stored bundle of {id} hashes to {}: storage was altered",
                def.id
            )));
        }
        Ok((bytes, def))
    }

    /// Everything about one definition.
    pub fn detail(&self, id: &DefinitionId) -> Result<DefinitionDetail, RequestError> {
        let summary = self.summary_of(id)?;
        let (_, def) = self.bundle(id)?;
        Ok(DefinitionDetail {
            previous_approved: self.previous_approved(&summary)?,
            check: cli::summary_json(&def),
            reviews: self.reviews_of(id)?,
            report: Some(self.status_report(id)),
            summary,
        })
    }

    /// Whether leaf `index` is in the current tree: its stored bytes hash to the leaf the
    /// tree holds and the inclusion proof verifies against the current checkpoint's root.
    pub fn inclusion_status(&self, index: u64) -> Result<InclusionStatus, RequestError> {
        let inner = self.lock();
        let cp = inner.checkpoint.clone();
        if index >= cp.size {
            return Err(RequestError::NotFound(format!(
                "no leaf {index} in the tree of size {}",
                cp.size
            )));
        }
        let leaf = inner
            .store
            .leaves(index, index + 1)
            .map_err(internal)?
            .pop()
            .unwrap_or_default();
        let proof = inclusion_proof(&inner.tree, index, cp.size).map_err(internal)?;
        let verified =
            verify_inclusion(&leaf_hash(&leaf), index, cp.size, &proof, &cp.root).is_ok();
        Ok(InclusionStatus {
            index,
            checkpoint: cp,
            proof,
            verified,
        })
    }
}

/// The web page's view of one leaf's inclusion.
#[derive(Debug, Clone)]
pub struct InclusionStatus {
    /// The leaf index.
    pub index: u64,
    /// The checkpoint the proof is against.
    pub checkpoint: Checkpoint,
    /// The proof.
    pub proof: Vec<pinfold_tlog::Hash>,
    /// Whether the stored leaf's proof verifies against the checkpoint's root.
    pub verified: bool,
}

fn not_published(id: &DefinitionId) -> RequestError {
    RequestError::NotFound(format!("{id} was never published to this registry"))
}

fn decode_bundle(b64: &str) -> Result<Vec<u8>, RequestError> {
    B64.decode(b64.as_bytes())
        .map_err(|e| RequestError::BadRequest(format!("bundle is not base64: {e}")))
}

/// Hides `id` from the review queue (or shows it again with `hide = false`) in the registry
/// whose data directory is `data_dir`, while its server runs or not: the queue reads this
/// table on every request. The log is untouched; the definition stays reachable by identity.
/// Returns false when nothing changed.
pub fn set_hidden(
    data_dir: &Path,
    id: &DefinitionId,
    hide: bool,
    reason: &str,
) -> Result<bool, RegistryError> {
    let db = data_dir.join(DB_FILE);
    if !db.exists() {
        return Err(RegistryError::Config(format!(
            "{} holds no registry database",
            data_dir.display()
        )));
    }
    let store = Store::open(&db)?;
    if store.definition(id)?.is_none() {
        return Err(RegistryError::Config(format!(
            "{id} was never published to this registry"
        )));
    }
    Ok(if hide {
        store.hide(id, unix_now(), reason)?
    } else {
        store.unhide(id)?
    })
}
