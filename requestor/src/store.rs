//! The requestor's local job store: every job it submitted, where it runs, and what came
//! back, in SQLite, so that `jobs`, `status`, `get`, `cancel` and `logs` work from a later
//! process than the one that ran `requestor run`.
//!
//! A job is keyed by the provider's job id and the provider's peer id. Each row keeps the
//! session key the job was submitted with: a provider answers questions about a job only
//! to the peer that offered it, and a fresh key per run keeps runs unlinkable, so a later
//! process speaks with that job's own key. The file is private to the user (0600), and so
//! is a directory made for it (0700), because of those keys.
//!
//! Also kept: the provider's addresses (to dial it again), what was offered (definition,
//! params, inputs: what its receipt must match), the output limit, and once fetched the
//! receipt and where the verified outputs are.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension as _, params};
use serde::Serialize;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite or the file system failed.
    #[error("job store {path}: {message}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// No job id starts with the given text.
    #[error("no job matches {0:?} (see `requestor jobs`)")]
    NotFound(String),
    /// Several jobs match a prefix.
    #[error("job prefix {prefix:?} is ambiguous: {}", .candidates.join(", "))]
    Ambiguous {
        /// What was given.
        prefix: String,
        /// The matching job ids.
        candidates: Vec<String>,
    },
}

/// Where a job is, as this requestor last knew it.
pub mod state {
    /// Offered and accepted; the submitting process is waiting for the result.
    pub const SUBMITTED: &str = "submitted";
    /// Accepted and started; the submitting process returned (`run --detach`).
    pub const DETACHED: &str = "detached";
    /// The provider signed a result; its receipt is stored.
    pub const FINISHED: &str = "finished";
    /// The outputs were downloaded and verified into `dir`.
    pub const DELIVERED: &str = "delivered";
    /// Cancelled on the provider at this requestor's request.
    pub const CANCELLED: &str = "cancelled";
    /// The provider dropped the job or answered with something that did not verify.
    pub const FAILED: &str = "failed";
}

/// One job as stored.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    /// The provider's job id (the handle commands take, or a prefix of it).
    pub id: String,
    /// The provider's peer id.
    pub provider: String,
    /// Addresses the provider was reached at, each ending in `/p2p/<peer id>`.
    pub addrs: Vec<String>,
    /// The definition identity.
    pub definition: String,
    /// Params as offered.
    pub params: std::collections::BTreeMap<String, String>,
    /// Inputs as offered.
    #[serde(skip)]
    pub inputs: Vec<pinfold_net::InputEntry>,
    /// Largest output accepted, in bytes.
    pub output_cap: u64,
    /// See [`state`].
    pub state: String,
    /// The run's status once a result arrived.
    pub status: Option<String>,
    /// The output digest once a result arrived.
    pub outputs: Option<String>,
    /// Why the job failed or was dropped.
    pub detail: Option<String>,
    /// The verified outputs' directory once delivered.
    pub dir: Option<PathBuf>,
    /// Creation, Unix milliseconds.
    pub created_ms: u64,
    /// Last change, Unix milliseconds.
    pub updated_ms: u64,
    /// The session key (protobuf encoding); never printed.
    #[serde(skip)]
    pub key: Vec<u8>,
    /// The signed receipt (JSON) once a result arrived.
    #[serde(skip)]
    pub receipt: Option<String>,
}

/// What is recorded when a provider accepts a job.
#[derive(Debug)]
pub struct NewJob<'a> {
    /// The provider's job id.
    pub id: &'a str,
    /// The provider's peer id.
    pub provider: &'a str,
    /// Its addresses.
    pub addrs: &'a [String],
    /// The session key, protobuf-encoded.
    pub key: &'a [u8],
    /// The definition identity.
    pub definition: &'a str,
    /// Params as offered.
    pub params: &'a std::collections::BTreeMap<String, String>,
    /// Inputs as offered.
    pub inputs: &'a [pinfold_net::InputEntry],
    /// Largest output accepted.
    pub output_cap: u64,
}

/// The SQLite job store.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT NOT NULL,
    provider TEXT NOT NULL,
    addrs TEXT NOT NULL,
    key BLOB NOT NULL,
    definition TEXT NOT NULL,
    params TEXT NOT NULL,
    inputs TEXT NOT NULL,
    output_cap INTEGER NOT NULL,
    state TEXT NOT NULL,
    status TEXT,
    outputs TEXT,
    detail TEXT,
    receipt TEXT,
    dir TEXT,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (id, provider)
);
";

/// Most jobs `requestor jobs` lists.
pub const MAX_LISTED: usize = 1000;

/// Shortest job prefix accepted, so that one typed character never picks a job.
pub const MIN_PREFIX: usize = 4;

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The store's directory: `--data-dir`, else `$PINFOLD_REQUESTOR_DIR`, else
/// `$XDG_DATA_HOME/pinfold/requestor`, else `$HOME/.local/share/pinfold/requestor`.
pub fn data_dir(flag: Option<&Path>) -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    flag.map(Path::to_path_buf)
        .or_else(|| env("PINFOLD_REQUESTOR_DIR"))
        .or_else(|| env("XDG_DATA_HOME").map(|d| d.join("pinfold/requestor")))
        .or_else(|| env("HOME").map(|h| h.join(".local/share/pinfold/requestor")))
}

impl Store {
    /// Opens (creating) `DIR/jobs.sqlite`, the directory private to the user.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join("jobs.sqlite");
        let err = |e: &dyn std::fmt::Display| StoreError::Db {
            path: path.clone(),
            message: e.to_string(),
        };
        // A directory made here is private; one that exists (a --data-dir the user chose)
        // keeps its mode, and the file itself is private either way.
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| err(&e))?;
        }
        let conn = Connection::open(&path).map_err(|e| err(&e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| err(&e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| err(&e))?;
        conn.execute_batch(SCHEMA).map_err(|e| err(&e))?;
        Ok(Store {
            conn: Mutex::new(conn),
            path,
        })
    }

    fn db(&self, e: rusqlite::Error) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a job a provider accepted.
    pub fn insert(&self, j: &NewJob<'_>) -> Result<(), StoreError> {
        let now = now_ms() as i64;
        self.lock()
            .execute(
                "INSERT OR REPLACE INTO jobs (id, provider, addrs, key, definition, params, inputs,
                     output_cap, state, created_ms, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
                params![
                    j.id,
                    j.provider,
                    json(j.addrs),
                    j.key,
                    j.definition,
                    json(j.params),
                    json(j.inputs),
                    j.output_cap as i64,
                    state::SUBMITTED,
                    now
                ],
            )
            .map(|_| ())
            .map_err(|e| self.db(e))
    }

    /// Moves a job to `state`, with an optional detail.
    pub fn set_state(
        &self,
        id: &str,
        provider: &str,
        state: &str,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "UPDATE jobs SET state = ?3, detail = COALESCE(?4, detail), updated_ms = ?5
                 WHERE id = ?1 AND provider = ?2",
                params![id, provider, state, detail, now_ms() as i64],
            )
            .map(|_| ())
            .map_err(|e| self.db(e))
    }

    /// Records a signed result (checked against the offer already).
    pub fn finished(
        &self,
        id: &str,
        provider: &str,
        status: &str,
        outputs: &str,
        receipt: &str,
    ) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "UPDATE jobs SET state = ?3, status = ?4, outputs = ?5, receipt = ?6,
                     updated_ms = ?7
                 WHERE id = ?1 AND provider = ?2",
                params![
                    id,
                    provider,
                    state::FINISHED,
                    status,
                    outputs,
                    receipt,
                    now_ms() as i64
                ],
            )
            .map(|_| ())
            .map_err(|e| self.db(e))
    }

    /// Records where a job's verified outputs are.
    pub fn delivered(&self, id: &str, provider: &str, dir: &Path) -> Result<(), StoreError> {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        self.lock()
            .execute(
                "UPDATE jobs SET state = ?3, dir = ?4, updated_ms = ?5
                 WHERE id = ?1 AND provider = ?2",
                params![
                    id,
                    provider,
                    state::DELIVERED,
                    dir.to_string_lossy(),
                    now_ms() as i64
                ],
            )
            .map(|_| ())
            .map_err(|e| self.db(e))
    }

    /// Jobs, newest first (at most [`MAX_LISTED`]).
    pub fn list(&self) -> Result<Vec<JobRow>, StoreError> {
        let c = self.lock();
        let mut st = c
            .prepare(&format!(
                "{SELECT} ORDER BY created_ms DESC, id LIMIT {MAX_LISTED}"
            ))
            .map_err(|e| self.db(e))?;
        st.query_map([], row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.db(e))
    }

    /// The one job whose id is `prefix` or starts with it (at least [`MIN_PREFIX`]
    /// characters unless it is a whole id).
    pub fn resolve(&self, prefix: &str) -> Result<JobRow, StoreError> {
        let c = self.lock();
        let exact: Vec<JobRow> = {
            let mut st = c
                .prepare(&format!("{SELECT} WHERE id = ?1"))
                .map_err(|e| self.db(e))?;
            st.query_map(params![prefix], row)
                .and_then(|rows| rows.collect())
                .map_err(|e| self.db(e))?
        };
        let matches = if !exact.is_empty() || prefix.chars().count() < MIN_PREFIX {
            exact
        } else {
            // Job ids are a narrow alphabet (no `%` or `_` wildcards to escape, bar `_`):
            // compare prefixes in Rust rather than trust LIKE's rules.
            let mut st = c
                .prepare(&format!("{SELECT} ORDER BY created_ms DESC"))
                .map_err(|e| self.db(e))?;
            let all: Vec<JobRow> = st
                .query_map([], row)
                .and_then(|rows| rows.collect())
                .map_err(|e| self.db(e))?;
            all.into_iter()
                .filter(|j| j.id.starts_with(prefix))
                .collect()
        };
        let mut matches = matches;
        match matches.len() {
            0 => Err(StoreError::NotFound(prefix.to_string())),
            1 => Ok(matches.remove(0)),
            _ => Err(StoreError::Ambiguous {
                prefix: prefix.to_string(),
                candidates: matches
                    .iter()
                    .map(|j| format!("{} (on {})", j.id, j.provider))
                    .collect(),
            }),
        }
    }

    /// Definition identities of stored jobs, newest first, each once.
    pub fn definitions(&self) -> Result<Vec<String>, StoreError> {
        let c = self.lock();
        let mut st = c
            .prepare(
                "SELECT definition FROM jobs GROUP BY definition ORDER BY MAX(created_ms) DESC",
            )
            .map_err(|e| self.db(e))?;
        st.query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.db(e))
    }

    /// One job by id and provider.
    pub fn get(&self, id: &str, provider: &str) -> Result<Option<JobRow>, StoreError> {
        self.lock()
            .query_row(
                &format!("{SELECT} WHERE id = ?1 AND provider = ?2"),
                params![id, provider],
                row,
            )
            .optional()
            .map_err(|e| self.db(e))
    }
}

/// A JSON column (serde_json cannot fail on these plain types).
fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

const SELECT: &str = "SELECT id, provider, addrs, key, definition, params, inputs, output_cap,
    state, status, outputs, detail, receipt, dir, created_ms, updated_ms FROM jobs";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    let json_col = |i: usize| -> rusqlite::Result<String> { r.get(i) };
    let bad = |i: usize, e: serde_json::Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    Ok(JobRow {
        id: r.get(0)?,
        provider: r.get(1)?,
        addrs: serde_json::from_str(&json_col(2)?).map_err(|e| bad(2, e))?,
        key: r.get(3)?,
        definition: r.get(4)?,
        params: serde_json::from_str(&json_col(5)?).map_err(|e| bad(5, e))?,
        inputs: serde_json::from_str(&json_col(6)?).map_err(|e| bad(6, e))?,
        output_cap: r.get::<_, i64>(7)? as u64,
        state: r.get(8)?,
        status: r.get(9)?,
        outputs: r.get(10)?,
        detail: r.get(11)?,
        receipt: r.get(12)?,
        dir: r.get::<_, Option<String>>(13)?.map(PathBuf::from),
        created_ms: r.get::<_, i64>(14)? as u64,
        updated_ms: r.get::<_, i64>(15)? as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(store: &Store, id: &str, provider: &str) {
        store
            .insert(&NewJob {
                id,
                provider,
                addrs: &["/ip4/127.0.0.1/tcp/1/p2p/x".to_string()],
                key: b"key",
                definition: "blake3:00",
                params: &Default::default(),
                inputs: &[],
                output_cap: 10,
            })
            .unwrap();
    }

    #[test]
    fn prefixes_resolve_when_unambiguous_and_list_the_candidates_otherwise() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        job(&s, "abcd1111", "p1");
        job(&s, "abcd2222", "p1");
        job(&s, "ef01", "p2");
        assert_eq!(s.resolve("abcd1").unwrap().id, "abcd1111");
        assert_eq!(s.resolve("ef01").unwrap().provider, "p2");
        match s.resolve("abcd") {
            Err(StoreError::Ambiguous { candidates, .. }) => assert_eq!(candidates.len(), 2),
            other => panic!("{other:?}"),
        }
        // Too short to be a prefix, and no whole id.
        assert!(matches!(s.resolve("abc"), Err(StoreError::NotFound(_))));
        assert!(matches!(s.resolve("zzzz"), Err(StoreError::NotFound(_))));
        s.finished("abcd1111", "p1", "succeeded", "blake3:11", "{}")
            .unwrap();
        s.delivered("abcd1111", "p1", Path::new("/tmp/out"))
            .unwrap();
        let r = s.get("abcd1111", "p1").unwrap().unwrap();
        assert_eq!(
            (r.state.as_str(), r.receipt.as_deref(), r.key.as_slice()),
            (state::DELIVERED, Some("{}"), &b"key"[..])
        );
        assert_eq!(s.list().unwrap().len(), 3);
        assert_eq!(s.definitions().unwrap(), ["blake3:00"]);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(d.path().join("jobs.sqlite"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
