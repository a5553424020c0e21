//! The job store: every job's transitions in SQLite, so a crash never loses track of a job.
//!
//! One row per job holds its current state and outcome; `transitions` is the append-only
//! history. The node writes a transition before acting on it (a job is `running` in the
//! store before the executor starts), so after a crash [`JobStore::recover`] can mark every
//! job that was in flight `interrupted`: such a job is never reported as succeeded.
//! WAL mode with `synchronous = NORMAL` keeps a write well under a millisecond; a power
//! loss may forget the last transitions, never corrupt the file.
//!
//! A transition that cannot be written (a full disk: SQLite rolls the transaction back and
//! the file stays intact) is kept in memory, bounded, and replayed in order before the next
//! write and by [`JobStore::retry_backlog`], so once space is freed the store catches up
//! instead of showing a finished job as running until the next restart.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension as _, params};
use serde::Serialize;

use super::NodeError;

/// Where a job is, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// An offer arrived.
    Offered,
    /// The offer was refused.
    Refused,
    /// The offer was accepted.
    Accepted,
    /// Fetching the bundle and inputs.
    Transferring,
    /// Executing.
    Running,
    /// Finished with an outcome.
    Finished,
    /// The result was handed to the requestor.
    Delivered,
    /// Cancelled by the requestor or dropped by the node.
    Cancelled,
    /// The node stopped (crash, kill, shutdown) while the job was in flight.
    Interrupted,
}

impl Stage {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Offered => "offered",
            Stage::Refused => "refused",
            Stage::Accepted => "accepted",
            Stage::Transferring => "transferring",
            Stage::Running => "running",
            Stage::Finished => "finished",
            Stage::Delivered => "delivered",
            Stage::Cancelled => "cancelled",
            Stage::Interrupted => "interrupted",
        }
    }
}

/// One job as listed by `provider jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRow {
    /// The job id.
    pub id: String,
    /// The requestor's peer id.
    pub requestor: String,
    /// The definition identity.
    pub definition: String,
    /// Current stage.
    pub state: String,
    /// Run status, once finished.
    pub status: Option<String>,
    /// Guest exit code, once finished.
    pub exit_code: Option<i32>,
    /// Output digest, once finished.
    pub outputs: Option<String>,
    /// Reason of a refusal or failure.
    pub detail: Option<String>,
    /// Creation, Unix milliseconds.
    pub created_ms: u64,
    /// Last transition, Unix milliseconds.
    pub updated_ms: u64,
    /// When the run started executing, Unix milliseconds.
    pub started_ms: Option<u64>,
    /// How long the run took (running to finished), milliseconds.
    pub run_ms: Option<u64>,
    /// Wall-clock time the executor measured, microseconds.
    pub wall_us: Option<u64>,
    /// Fuel consumed, when the run was metered.
    pub fuel: Option<u64>,
    /// Largest memory the task reached, bytes.
    pub peak_memory: Option<u64>,
}

/// The SQLite job store.
#[derive(Debug)]
pub struct JobStore {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    conn: Connection,
    /// Writes that failed, oldest first, replayed before any newer one.
    backlog: VecDeque<Write>,
}

/// Most failed writes kept for replay. Past it the oldest go (logged): a store that has not
/// been able to write for thousands of transitions needs an operator, not more memory.
const MAX_BACKLOG: usize = 4096;

/// A write of a job's progress, with the time it happened (kept if it cannot be made yet).
#[derive(Debug, Clone)]
enum Write {
    Transition {
        id: String,
        stage: Stage,
        detail: Option<String>,
        at: i64,
    },
    Finished {
        id: String,
        status: String,
        exit_code: Option<i32>,
        outputs: String,
        detail: Option<String>,
        at: i64,
    },
}

impl Write {
    fn apply(&self, c: &mut Connection) -> rusqlite::Result<()> {
        let tx = c.transaction()?;
        match self {
            Write::Transition {
                id,
                stage,
                detail,
                at,
            } => {
                tx.execute(
                    "UPDATE jobs SET state = ?2, updated_ms = ?3, detail = COALESCE(?4, detail)
                     WHERE id = ?1",
                    params![id, stage.as_str(), at, detail],
                )?;
                tx.execute(
                    "INSERT INTO transitions (job_id, state, at_ms, detail) VALUES (?1, ?2, ?3, ?4)",
                    params![id, stage.as_str(), at, detail],
                )?;
            }
            Write::Finished {
                id,
                status,
                exit_code,
                outputs,
                detail,
                at,
            } => {
                tx.execute(
                    "UPDATE jobs SET state = 'finished', status = ?2, exit_code = ?3, outputs = ?4,
                         detail = COALESCE(?5, detail), updated_ms = ?6
                     WHERE id = ?1",
                    params![id, status, exit_code, outputs, detail, at],
                )?;
                tx.execute(
                    "INSERT INTO transitions (job_id, state, at_ms, detail)
                     VALUES (?1, 'finished', ?2, ?3)",
                    params![id, at, status],
                )?;
            }
        }
        tx.commit()
    }
}

impl State {
    /// Replays the backlog in order; stops at the first write that still fails.
    fn drain(&mut self) -> rusqlite::Result<usize> {
        let mut n = 0;
        while let Some(w) = self.backlog.front() {
            w.apply(&mut self.conn)?;
            self.backlog.pop_front();
            n += 1;
        }
        Ok(n)
    }

    fn keep(&mut self, w: Write) {
        if self.backlog.len() >= MAX_BACKLOG
            && let Some(lost) = self.backlog.pop_front()
        {
            tracing::error!("job store backlog full; dropping the oldest unwritten write {lost:?}");
        }
        self.backlog.push_back(w);
    }
}

fn db_err(e: rusqlite::Error) -> NodeError {
    NodeError::Store(e.to_string())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    requestor TEXT NOT NULL,
    definition TEXT NOT NULL,
    state TEXT NOT NULL,
    status TEXT,
    exit_code INTEGER,
    outputs TEXT,
    detail TEXT,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS transitions (
    job_id TEXT NOT NULL,
    state TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS transitions_job ON transitions(job_id);
";

/// Columns added after the first release, each added to an older store at open (SQLite has
/// no `ADD COLUMN IF NOT EXISTS`): a run's measured usage, for `provider jobs`.
const ADDED_COLUMNS: [(&str, &str); 3] = [
    ("wall_us", "INTEGER"),
    ("fuel", "INTEGER"),
    ("peak_memory", "INTEGER"),
];

fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    let have: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('jobs')")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for (name, ty) in ADDED_COLUMNS {
        if !have.iter().any(|h| h == name) {
            conn.execute_batch(&format!("ALTER TABLE jobs ADD COLUMN {name} {ty}"))?;
        }
    }
    Ok(())
}

/// Stages after which a job never changes again: the only rows pruning may remove.
pub const FINAL_STAGES: [Stage; 5] = [
    Stage::Refused,
    Stage::Finished,
    Stage::Delivered,
    Stage::Cancelled,
    Stage::Interrupted,
];

impl JobStore {
    /// Opens (creating) `path`.
    pub fn open(path: &Path) -> Result<JobStore, NodeError> {
        let open = || {
            let conn = Connection::open(path)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.execute_batch(SCHEMA)?;
            add_missing_columns(&conn)?;
            Ok::<_, rusqlite::Error>(conn)
        };
        // On a full disk SQLite cannot even map its WAL index and says only "disk I/O
        // error"; name the file and the free space so the operator knows what to fix.
        let conn = open().map_err(|e| {
            let dir = path.parent().unwrap_or(Path::new("."));
            let free = rustix::fs::statvfs(dir)
                .map(|s| {
                    format!(
                        " ({} bytes free on its filesystem)",
                        s.f_bavail * s.f_frsize
                    )
                })
                .unwrap_or_default();
            NodeError::Store(format!("{}: {e}{free}", path.display()))
        })?;
        Ok(JobStore {
            state: Mutex::new(State {
                conn,
                backlog: VecDeque::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `w` after every earlier write that failed; keeps it for later if it cannot.
    fn write(&self, w: Write) -> Result<(), NodeError> {
        let mut s = self.lock();
        match s.drain().and_then(|_| w.apply(&mut s.conn)) {
            Ok(()) => Ok(()),
            Err(e) => {
                s.keep(w);
                Err(NodeError::Store(format!(
                    "{e} (kept in memory; {} write(s) wait for the store)",
                    s.backlog.len()
                )))
            }
        }
    }

    /// Replays writes that failed earlier; returns how many are still waiting.
    pub fn retry_backlog(&self) -> Result<usize, NodeError> {
        let mut s = self.lock();
        if s.backlog.is_empty() {
            return Ok(0);
        }
        match s.drain() {
            Ok(n) => {
                tracing::info!("job store caught up: wrote {n} delayed write(s)");
                Ok(0)
            }
            Err(e) => Err(NodeError::Store(format!(
                "{e} ({} write(s) still wait for the store)",
                s.backlog.len()
            ))),
        }
    }

    /// Records a new offer. An offer that cannot be recorded is refused by the caller, so
    /// it is never kept for later; earlier writes still waiting go first.
    pub fn offered(&self, id: &str, requestor: &str, definition: &str) -> Result<(), NodeError> {
        let now = now_ms() as i64;
        let mut s = self.lock();
        s.drain().map_err(db_err)?;
        let tx = s.conn.transaction().map_err(db_err)?;
        tx.execute(
            "INSERT INTO jobs (id, requestor, definition, state, created_ms, updated_ms)
             VALUES (?1, ?2, ?3, 'offered', ?4, ?4)",
            params![id, requestor, definition, now],
        )
        .map_err(db_err)?;
        tx.execute(
            "INSERT INTO transitions (job_id, state, at_ms) VALUES (?1, 'offered', ?2)",
            params![id, now],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    /// Moves a job to `stage`, with an optional detail.
    pub fn transition(
        &self,
        id: &str,
        stage: Stage,
        detail: Option<&str>,
    ) -> Result<(), NodeError> {
        self.write(Write::Transition {
            id: id.to_string(),
            stage,
            detail: detail.map(str::to_string),
            at: now_ms() as i64,
        })
    }

    /// Records the outcome and moves the job to `finished`.
    pub fn finished(
        &self,
        id: &str,
        status: &str,
        exit_code: Option<i32>,
        outputs: &str,
        detail: Option<&str>,
    ) -> Result<(), NodeError> {
        self.write(Write::Finished {
            id: id.to_string(),
            status: status.to_string(),
            exit_code,
            outputs: outputs.to_string(),
            detail: detail.map(str::to_string),
            at: now_ms() as i64,
        })
    }

    /// Marks every job that was in flight when the node stopped `interrupted`; returns
    /// their ids. Call once at start-up, before serving.
    pub fn recover(&self) -> Result<Vec<String>, NodeError> {
        let now = now_ms() as i64;
        let mut s = self.lock();
        let tx = s.conn.transaction().map_err(db_err)?;
        let ids: Vec<String> = {
            let mut st = tx
                .prepare(
                    "SELECT id FROM jobs
                     WHERE state IN ('offered', 'accepted', 'transferring', 'running')",
                )
                .map_err(db_err)?;
            st.query_map([], |r| r.get(0))
                .map_err(db_err)?
                .collect::<Result<_, _>>()
                .map_err(db_err)?
        };
        for id in &ids {
            tx.execute(
                "UPDATE jobs SET state = 'interrupted', updated_ms = ?2,
                     detail = 'the node stopped while the job was in flight'
                 WHERE id = ?1",
                params![id, now],
            )
            .map_err(db_err)?;
            tx.execute(
                "INSERT INTO transitions (job_id, state, at_ms) VALUES (?1, 'interrupted', ?2)",
                params![id, now],
            )
            .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(ids)
    }

    /// One job.
    pub fn get(&self, id: &str) -> Result<Option<JobRow>, NodeError> {
        self.lock()
            .conn
            .query_row(&format!("{SELECT} WHERE id = ?1"), params![id], row_to_job)
            .optional()
            .map_err(db_err)
    }

    /// Every job, newest first (at most `limit`).
    pub fn list(&self, limit: usize) -> Result<Vec<JobRow>, NodeError> {
        let s = self.lock();
        let mut st = s
            .conn
            .prepare(&format!("{SELECT} ORDER BY created_ms DESC, id LIMIT ?1"))
            .map_err(db_err)?;
        st.query_map(params![limit as i64], row_to_job)
            .map_err(db_err)?
            .collect::<Result<_, _>>()
            .map_err(db_err)
    }

    /// Records what a finished run used (best effort: the listing shows it, nothing depends
    /// on it, so it is never kept for replay).
    pub fn usage(
        &self,
        id: &str,
        wall_us: u64,
        fuel: Option<u64>,
        peak_memory: u64,
    ) -> Result<(), NodeError> {
        self.lock()
            .conn
            .execute(
                "UPDATE jobs SET wall_us = ?2, fuel = ?3, peak_memory = ?4 WHERE id = ?1",
                params![
                    id,
                    wall_us as i64,
                    fuel.map(|f| f as i64),
                    peak_memory as i64
                ],
            )
            .map(|_| ())
            .map_err(db_err)
    }

    /// Jobs by (stage, run status) with their counts, for `/metrics`.
    pub fn counts(&self) -> Result<Vec<(String, Option<String>, u64)>, NodeError> {
        let s = self.lock();
        let mut st = s
            .conn
            .prepare("SELECT state, status, COUNT(*) FROM jobs GROUP BY state, status")
            .map_err(db_err)?;
        st.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
        })
        .map_err(db_err)?
        .collect::<Result<_, _>>()
        .map_err(db_err)
    }

    /// How long each finished run took (running to finished), in milliseconds, for
    /// `/metrics`. Bounded by what retention keeps.
    pub fn run_durations_ms(&self) -> Result<Vec<u64>, NodeError> {
        let s = self.lock();
        let mut st = s
            .conn
            .prepare(
                "SELECT f.at_ms - r.at_ms FROM transitions r
                 JOIN transitions f ON f.job_id = r.job_id
                 WHERE r.state = 'running' AND f.state = 'finished' AND f.at_ms >= r.at_ms",
            )
            .map_err(db_err)?;
        st.query_map([], |r| Ok(r.get::<_, i64>(0)? as u64))
            .map_err(db_err)?
            .collect::<Result<_, _>>()
            .map_err(db_err)
    }

    /// Removes jobs in a final stage whose last transition is older than `before_ms`
    /// (Unix ms), with their history; with `dry_run`, only counts them. Returns how many.
    pub fn prune(&self, before_ms: u64, dry_run: bool) -> Result<u64, NodeError> {
        let finals = FINAL_STAGES
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let which = format!("state IN ({finals}) AND updated_ms < ?1");
        let mut s = self.lock();
        let tx = s.conn.transaction().map_err(db_err)?;
        let n: i64 = tx
            .query_row(
                &format!("SELECT COUNT(*) FROM jobs WHERE {which}"),
                params![before_ms as i64],
                |r| r.get(0),
            )
            .map_err(db_err)?;
        if !dry_run && n > 0 {
            tx.execute(
                &format!(
                    "DELETE FROM transitions WHERE job_id IN (SELECT id FROM jobs WHERE {which})"
                ),
                params![before_ms as i64],
            )
            .map_err(db_err)?;
            tx.execute(
                &format!("DELETE FROM jobs WHERE {which}"),
                params![before_ms as i64],
            )
            .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(n as u64)
    }

    /// A job's transitions, oldest first, as (stage, Unix ms).
    pub fn history(&self, id: &str) -> Result<Vec<(String, u64)>, NodeError> {
        let s = self.lock();
        let mut st = s
            .conn
            .prepare("SELECT state, at_ms FROM transitions WHERE job_id = ?1 ORDER BY rowid")
            .map_err(db_err)?;
        st.query_map(params![id], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(db_err)?
            .collect::<Result<_, _>>()
            .map_err(db_err)
    }
}

const SELECT: &str = "SELECT id, requestor, definition, state, status, exit_code, outputs, detail,
    created_ms, updated_ms,
    (SELECT MIN(at_ms) FROM transitions t WHERE t.job_id = jobs.id AND t.state = 'running'),
    (SELECT MIN(at_ms) FROM transitions t WHERE t.job_id = jobs.id AND t.state = 'finished'),
    wall_us, fuel, peak_memory
    FROM jobs";

fn row_to_job(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        id: r.get(0)?,
        requestor: r.get(1)?,
        definition: r.get(2)?,
        state: r.get(3)?,
        status: r.get(4)?,
        exit_code: r.get(5)?,
        outputs: r.get(6)?,
        detail: r.get(7)?,
        created_ms: r.get::<_, i64>(8)? as u64,
        updated_ms: r.get::<_, i64>(9)? as u64,
        started_ms: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
        run_ms: match (r.get::<_, Option<i64>>(10)?, r.get::<_, Option<i64>>(11)?) {
            (Some(a), Some(b)) if b >= a => Some((b - a) as u64),
            _ => None,
        },
        wall_us: r.get::<_, Option<i64>>(12)?.map(|v| v as u64),
        fuel: r.get::<_, Option<i64>>(13)?.map(|v| v as u64),
        peak_memory: r.get::<_, Option<i64>>(14)?.map(|v| v as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_jobs_become_interrupted_and_finished_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite");
        {
            let s = JobStore::open(&path).unwrap();
            s.offered("a", "req", "blake3:00").unwrap();
            s.transition("a", Stage::Running, None).unwrap();
            s.offered("b", "req", "blake3:00").unwrap();
            s.finished("b", "succeeded", Some(0), "blake3:11", None)
                .unwrap();
        }
        let s = JobStore::open(&path).unwrap();
        assert_eq!(s.recover().unwrap(), vec!["a".to_string()]);
        assert_eq!(s.get("a").unwrap().unwrap().state, "interrupted");
        assert_eq!(s.get("a").unwrap().unwrap().status, None);
        assert_eq!(s.get("b").unwrap().unwrap().state, "finished");
        let h: Vec<String> = s.history("a").unwrap().into_iter().map(|h| h.0).collect();
        assert_eq!(h, ["offered", "running", "interrupted"]);
        assert!(s.recover().unwrap().is_empty());
    }

    #[test]
    fn writes_that_fail_for_lack_of_space_are_replayed_in_order_once_there_is_room() {
        let dir = tempfile::tempdir().unwrap();
        let s = JobStore::open(&dir.path().join("jobs.sqlite")).unwrap();
        s.offered("a", "req", "blake3:00").unwrap();
        // SQLite's own size cap fails writes with SQLITE_FULL, as a full disk does.
        let pages: i64 = s
            .lock()
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        s.lock()
            .conn
            .execute_batch(&format!("PRAGMA max_page_count = {pages}"))
            .unwrap();
        let big = "x".repeat(64 << 10);
        let e = s.transition("a", Stage::Running, Some(&big)).unwrap_err();
        assert!(e.to_string().contains("full"), "{e}");
        // A later write that would fit waits behind the earlier one: history stays in order.
        assert!(
            s.finished("a", "succeeded", Some(0), "blake3:11", None)
                .is_err()
        );
        assert_eq!(s.get("a").unwrap().unwrap().state, "offered");
        assert!(s.retry_backlog().is_err());

        s.lock()
            .conn
            .execute_batch("PRAGMA max_page_count = 1073741823")
            .unwrap();
        assert_eq!(s.retry_backlog().unwrap(), 0);
        let row = s.get("a").unwrap().unwrap();
        assert_eq!(
            (row.state.as_str(), row.status.as_deref()),
            ("finished", Some("succeeded"))
        );
        let h: Vec<String> = s.history("a").unwrap().into_iter().map(|h| h.0).collect();
        assert_eq!(h, ["offered", "running", "finished"]);
        assert_eq!(s.retry_backlog().unwrap(), 0);
    }
}
