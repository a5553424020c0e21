//! The registry's durable state: one SQLite database (WAL, `synchronous=FULL`).
//!
//! The log's leaves are the source of truth; the `definitions`, `bundles` and `reviews`
//! tables are indexes derived from them, written in the same transaction as the leaf, so a
//! crash leaves either all of an event or none of it. Every write commits before the server
//! acknowledges it, and with `synchronous=FULL` a commit survives power loss, not just a
//! process crash. Bundles are stored by identity (content-addressed) and re-verified by the
//! caller on every read, so a bundle edited on disk is refused, never served.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, MAIN_DB, OptionalExtension, params};

use pinfold_tlog::{PublicKey, Published, Review, ReviewAction};
use task_defs::identity::DefinitionId;

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The database holds something this code never writes (edited or corrupt).
    #[error("database is inconsistent: {0}")]
    Corrupt(String),
}

/// A logged publication, as the `definitions` table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionRow {
    /// The identity.
    pub id: DefinitionId,
    /// The manifest's name.
    pub name: String,
    /// The manifest's version.
    pub version: String,
    /// The author's key.
    pub author: PublicKey,
    /// Leaf index of the publication.
    pub index: u64,
    /// When the server logged it.
    pub received: u64,
    /// Bundle size in bytes.
    pub size: u64,
}

/// A logged reviewer statement, as the `reviews` table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewRow {
    /// Leaf index.
    pub index: u64,
    /// The definition.
    pub definition: DefinitionId,
    /// The reviewer's key.
    pub reviewer: PublicKey,
    /// The action.
    pub action: ReviewAction,
    /// The reason.
    pub reason: String,
    /// The reviewer's signing time.
    pub time: u64,
    /// When the server logged it.
    pub received: u64,
}

/// What a new leaf adds to the derived tables.
#[derive(Debug)]
pub enum Derived<'a> {
    /// A publication and its bundle bytes.
    Published(&'a Published, &'a [u8]),
    /// A reviewer statement.
    Review(&'a Review),
}

/// The registry database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leaves (idx INTEGER PRIMARY KEY, leaf BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS bundles (id TEXT PRIMARY KEY, bytes BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS definitions (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL, author TEXT NOT NULL,
    idx INTEGER NOT NULL UNIQUE, received INTEGER NOT NULL, size INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS definitions_by_name ON definitions (name, idx);
CREATE TABLE IF NOT EXISTS reviews (
    idx INTEGER PRIMARY KEY, definition TEXT NOT NULL, reviewer TEXT NOT NULL,
    action TEXT NOT NULL, reason TEXT NOT NULL, time INTEGER NOT NULL, received INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS reviews_by_definition ON reviews (definition, idx);
CREATE INDEX IF NOT EXISTS definitions_by_author ON definitions (author);
CREATE TABLE IF NOT EXISTS hidden (id TEXT PRIMARY KEY, at INTEGER NOT NULL, reason TEXT NOT NULL);
";

fn to_i64(v: u64) -> i64 {
    // Indexes, sizes and Unix times stay far below 2^63.
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

fn parse_action(s: &str) -> Result<ReviewAction, StoreError> {
    match s {
        "approve" => Ok(ReviewAction::Approve),
        "reject" => Ok(ReviewAction::Reject),
        "revoke" => Ok(ReviewAction::Revoke),
        other => Err(corrupt(format!("unknown review action {other:?}"))),
    }
}

type RawDefinition = (String, String, String, String, i64, i64, i64);
type RawReview = (i64, String, String, String, String, i64, i64);

fn definition_row(r: RawDefinition) -> Result<DefinitionRow, StoreError> {
    Ok(DefinitionRow {
        id: r
            .0
            .parse()
            .map_err(|_| corrupt("bad identity in definitions"))?,
        name: r.1,
        version: r.2,
        author: r.3.parse().map_err(|_| corrupt("bad author key"))?,
        index: to_u64(r.4),
        received: to_u64(r.5),
        size: to_u64(r.6),
    })
}

fn review_row(r: RawReview) -> Result<ReviewRow, StoreError> {
    Ok(ReviewRow {
        index: to_u64(r.0),
        definition: r
            .1
            .parse()
            .map_err(|_| corrupt("bad identity in reviews"))?,
        reviewer: r.2.parse().map_err(|_| corrupt("bad reviewer key"))?,
        action: parse_action(&r.3)?,
        reason: r.4,
        time: to_u64(r.5),
        received: to_u64(r.6),
    })
}

const DEF_COLUMNS: &str = "id, name, version, author, idx, received, size";
const REVIEW_COLUMNS: &str = "idx, definition, reviewer, action, reason, time, received";

fn raw_definition(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawDefinition> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn raw_review(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawReview> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(corrupt(format!("journal mode is {mode}, not wal")));
        }
        // FULL: the WAL is synced at every commit, so an acknowledged write survives power loss.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store { conn })
    }

    /// A meta value.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Sets a meta value (committed before returning).
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// The number of leaves.
    pub fn leaf_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM leaves", [], |r| r.get(0))?;
        Ok(to_u64(n))
    }

    /// Leaves `[start, end)`, in order; fails unless every index is present.
    pub fn leaves(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT idx, leaf FROM leaves WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
        )?;
        let mut out = Vec::with_capacity(end.saturating_sub(start).min(1 << 16) as usize);
        let rows = stmt.query_map(params![to_i64(start), to_i64(end)], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        for (i, row) in rows.enumerate() {
            let (idx, leaf) = row?;
            if to_u64(idx) != start + i as u64 {
                return Err(corrupt(format!("leaf {} is missing", start + i as u64)));
            }
            out.push(leaf);
        }
        if out.len() as u64 != end.saturating_sub(start) {
            return Err(corrupt(format!(
                "leaf {} is missing",
                start + out.len() as u64
            )));
        }
        Ok(out)
    }

    /// Appends one leaf and its derived rows, and stores `checkpoint` (the note signed
    /// over the tree that includes the leaf), in one transaction committed before return.
    pub fn append(
        &mut self,
        index: u64,
        leaf: &[u8],
        derived: Derived<'_>,
        received: u64,
        checkpoint: &str,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO leaves (idx, leaf) VALUES (?1, ?2)",
            params![to_i64(index), leaf],
        )?;
        match derived {
            Derived::Published(p, bundle) => {
                let id = p.definition.to_string();
                // zeroblob + incremental write: SQLite never holds a second copy of the
                // bundle in memory (binding it as a value would copy it whole).
                let n = tx.execute(
                    "INSERT OR IGNORE INTO bundles (id, bytes) VALUES (?1, zeroblob(?2))",
                    params![id, to_i64(bundle.len() as u64)],
                )?;
                if n == 1 {
                    let row = tx.last_insert_rowid();
                    let mut blob = tx.blob_open(MAIN_DB, "bundles", "bytes", row, false)?;
                    blob.write_at(bundle, 0)?;
                }
                tx.execute(
                    &format!(
                        "INSERT INTO definitions ({DEF_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                    ),
                    params![
                        id,
                        p.name,
                        p.version,
                        p.author.to_string(),
                        to_i64(index),
                        to_i64(received),
                        to_i64(bundle.len() as u64)
                    ],
                )?;
            }
            Derived::Review(r) => {
                tx.execute(
                    &format!(
                        "INSERT INTO reviews ({REVIEW_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                    ),
                    params![
                        to_i64(index),
                        r.definition.to_string(),
                        r.reviewer.to_string(),
                        r.action.as_str(),
                        r.reason,
                        to_i64(r.time),
                        to_i64(received)
                    ],
                )?;
            }
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('checkpoint', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [checkpoint],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The publication of `id`, if logged.
    pub fn definition(&self, id: &DefinitionId) -> Result<Option<DefinitionRow>, StoreError> {
        let raw = self
            .conn
            .query_row(
                &format!("SELECT {DEF_COLUMNS} FROM definitions WHERE id = ?1"),
                [id.to_string()],
                raw_definition,
            )
            .optional()?;
        raw.map(definition_row).transpose()
    }

    /// Every publication, newest first.
    pub fn definitions(&self) -> Result<Vec<DefinitionRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {DEF_COLUMNS} FROM definitions ORDER BY idx DESC"
        ))?;
        let raws = stmt
            .query_map([], raw_definition)?
            .collect::<Result<Vec<_>, _>>()?;
        raws.into_iter().map(definition_row).collect()
    }

    /// Publications of `name` logged before leaf `before`, newest first.
    pub fn versions_before(
        &self,
        name: &str,
        before: u64,
    ) -> Result<Vec<DefinitionRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {DEF_COLUMNS} FROM definitions WHERE name = ?1 AND idx < ?2 ORDER BY idx DESC"
        ))?;
        let raws = stmt
            .query_map(params![name, to_i64(before)], raw_definition)?
            .collect::<Result<Vec<_>, _>>()?;
        raws.into_iter().map(definition_row).collect()
    }

    /// The stored bundle bytes of `id` (unverified: the caller re-reads them).
    pub fn bundle(&self, id: &DefinitionId) -> Result<Option<Vec<u8>>, StoreError> {
        let row: Option<i64> = self
            .conn
            .query_row(
                "SELECT rowid FROM bundles WHERE id = ?1",
                [id.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        let Some(row) = row else { return Ok(None) };
        // Read incrementally into one buffer: a plain SELECT would materialise the blob
        // in SQLite and then copy it, twice the bundle's size at once.
        let blob = self
            .conn
            .blob_open(MAIN_DB, "bundles", "bytes", row, true)?;
        let mut out = vec![0u8; blob.len()];
        blob.read_at_exact(&mut out, 0)?;
        Ok(Some(out))
    }

    /// The bundle bytes every publication by `author` stored (its quota usage).
    pub fn author_usage(&self, author: &PublicKey) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT COALESCE(SUM(size), 0) FROM definitions WHERE author = ?1",
            [author.to_string()],
            |r| r.get(0),
        )?;
        Ok(to_u64(n))
    }

    /// Publications in log order from `cursor` (exclusive; `None` = from the end given by
    /// `newest_first`), at most `limit`.
    pub fn definitions_page(
        &self,
        cursor: Option<u64>,
        newest_first: bool,
        limit: usize,
    ) -> Result<Vec<DefinitionRow>, StoreError> {
        let (cmp, order, start) = if newest_first {
            ("<", "DESC", cursor.map_or(i64::MAX, to_i64))
        } else {
            (">", "ASC", cursor.map_or(-1, to_i64))
        };
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {DEF_COLUMNS} FROM definitions WHERE idx {cmp} ?1 ORDER BY idx {order} LIMIT ?2"
        ))?;
        let raws = stmt
            .query_map(params![start, to_i64(limit as u64)], raw_definition)?
            .collect::<Result<Vec<_>, _>>()?;
        raws.into_iter().map(definition_row).collect()
    }

    /// Whether any reviewer statement about `id` was logged.
    pub fn has_reviews(&self, id: &DefinitionId) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM reviews WHERE definition = ?1 LIMIT 1",
                [id.to_string()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// When and why an operator hid `id` from the queue, if they did.
    pub fn hidden(&self, id: &DefinitionId) -> Result<Option<(u64, String)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT at, reason FROM hidden WHERE id = ?1",
                [id.to_string()],
                |r| Ok((to_u64(r.get(0)?), r.get(1)?)),
            )
            .optional()?)
    }

    /// Hides `id` from the queue (an operator's act; the log is untouched). Returns false
    /// when it was hidden already.
    pub fn hide(&self, id: &DefinitionId, at: u64, reason: &str) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO hidden (id, at, reason) VALUES (?1, ?2, ?3)",
            params![id.to_string(), to_i64(at), reason],
        )?;
        Ok(n == 1)
    }

    /// Shows `id` in the queue again. Returns false when it was not hidden.
    pub fn unhide(&self, id: &DefinitionId) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM hidden WHERE id = ?1", [id.to_string()])?;
        Ok(n == 1)
    }

    /// Every statement about `id`, in log order.
    pub fn reviews_of(&self, id: &DefinitionId) -> Result<Vec<ReviewRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {REVIEW_COLUMNS} FROM reviews WHERE definition = ?1 ORDER BY idx"
        ))?;
        let raws = stmt
            .query_map([id.to_string()], raw_review)?
            .collect::<Result<Vec<_>, _>>()?;
        raws.into_iter().map(review_row).collect()
    }

    /// Every statement with `action`, newest first.
    pub fn reviews_with(&self, action: ReviewAction) -> Result<Vec<ReviewRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {REVIEW_COLUMNS} FROM reviews WHERE action = ?1 ORDER BY idx DESC"
        ))?;
        let raws = stmt
            .query_map([action.as_str()], raw_review)?
            .collect::<Result<Vec<_>, _>>()?;
        raws.into_iter().map(review_row).collect()
    }

    /// The leaf index of an identical statement already logged, for idempotent retries.
    pub fn find_review(&self, r: &Review) -> Result<Option<u64>, StoreError> {
        let idx: Option<i64> = self
            .conn
            .query_row(
                "SELECT idx FROM reviews WHERE definition = ?1 AND reviewer = ?2 AND action = ?3
                 AND reason = ?4 AND time = ?5 ORDER BY idx LIMIT 1",
                params![
                    r.definition.to_string(),
                    r.reviewer.to_string(),
                    r.action.as_str(),
                    r.reason,
                    to_i64(r.time)
                ],
                |row| row.get(0),
            )
            .optional()?;
        Ok(idx.map(to_u64))
    }
}
