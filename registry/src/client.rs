//! The registry client: blocking HTTP calls, and the verified sync every trust decision uses.
//!
//! [`Client`] speaks the JSON API with timeouts and a size cap on every response, so a
//! hostile or broken server can cost a client neither unbounded time nor memory.
//! [`sync`] brings a [`Verifier`] up to the server's latest checkpoint: it fetches the
//! signed checkpoint, every entry since the verified size (paged) and a consistency proof,
//! and hands them to [`Verifier::update`], which hashes the entries itself and refuses forks,
//! rollbacks and altered entries. A verifier whose witness policy requires cosignatures
//! syncs to the newest checkpoint the registry's witnesses cosigned instead of the latest
//! one, and refuses it unless enough trusted witnesses did. [`verified_status`] adds persistence: the verifier's state
//! is loaded from and saved to a file, so a server rolled back or forked between two runs is
//! caught too; a failed sync never overwrites the stored state.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::de::DeserializeOwned;

use super::api::{
    AppendResponse, ConsistencyResponse, DefinitionDetail, DefinitionList, DefinitionSummary,
    EntriesResponse, ErrorBody, InclusionResponse, InfoResponse, ListOrder, ListQuery,
    MAX_ENTRIES_PER_PAGE, MAX_PAGE, PublishRequest, ReviewRecord,
};
use pinfold_tlog::entry::MAX_LEAF_BYTES;
use pinfold_tlog::note::MAX_NOTE_BYTES;
use pinfold_tlog::verifier::CheckedLeaves;
use pinfold_tlog::{
    Checkpoint, ConfigError, Hash, Published, Review, Status, StatusError, StatusReport, SyncError,
    UpdateReport, Verifier, VerifierConfig, VerifierState,
};
use task_defs::definition::Definition;
use task_defs::identity::DefinitionId;

/// Default timeout of one whole request, body included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Cap on a JSON response other than an entries page.
pub const MAX_JSON_BYTES: u64 = 16 * 1024 * 1024;
/// Cap on an entries page: the most leaves per page at the largest leaf size, base64.
pub const MAX_ENTRIES_BYTES: u64 =
    MAX_ENTRIES_PER_PAGE * ((MAX_LEAF_BYTES as u64).div_ceil(3) * 4 + 8) + 4096;
/// Request bodies above this size ask the server to `Expect: 100-continue`.
pub const EXPECT_CONTINUE_ABOVE: usize = 64 * 1024;
/// Most definitions [`Client::definitions`] collects by following cursors.
pub const MAX_LISTED: usize = 100_000;
/// Most entries one sync accepts, so a checkpoint claiming an absurd size cannot make the
/// client page forever.
pub const MAX_SYNC_ENTRIES: u64 = 50_000_000;

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The request did not complete (connection, timeout, size cap).
    #[error("{url}: {message}")]
    Transport {
        /// The URL requested.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The server answered with an error status.
    #[error("registry refused ({status}): {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The server's answer is not what the API promises.
    #[error("{url}: malformed response: {message}")]
    Malformed {
        /// The URL requested.
        url: String,
        /// What is wrong with it.
        message: String,
    },
}

/// A registry client over HTTP.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
    /// The bound on one whole request, which also bounds [`sync`]'s waits for pages.
    timeout: Duration,
}

impl Client {
    /// A client of the registry at `base` (`http://host:port`), with [`DEFAULT_TIMEOUT`].
    pub fn new(base: &str) -> Client {
        Client::with_timeout(base, DEFAULT_TIMEOUT)
    }

    /// A client whose every request must complete within `timeout`.
    pub fn with_timeout(base: &str, timeout: Duration) -> Client {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(Duration::from_secs(10))))
            // Error statuses carry a JSON message worth reading.
            .http_status_as_error(false)
            .max_redirects(0)
            .build();
        Client {
            base: base.trim_end_matches('/').to_string(),
            agent: config.into(),
            timeout,
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn transport(url: &str, e: impl std::fmt::Display) -> ClientError {
        // ureq says only "http: invalid format" for `127.0.0.1:8417`; say what to write.
        let message = if url.starts_with("http://") || url.starts_with("https://") {
            e.to_string()
        } else {
            "not an http URL: the registry URL needs a scheme, e.g. http://127.0.0.1:8417".into()
        };
        ClientError::Transport {
            url: url.to_string(),
            message,
        }
    }

    fn read(
        url: &str,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        limit: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let mut resp = resp.map_err(|e| Self::transport(url, e))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| Self::transport(url, e))?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|b| b.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(500).collect());
            return Err(ClientError::Status { status, message });
        }
        Ok(body)
    }

    fn get_bytes(&self, path: &str, limit: u64) -> Result<Vec<u8>, ClientError> {
        let url = self.url(path);
        Self::read(&url, self.agent.get(&url).call(), limit)
    }

    fn get_json<T: DeserializeOwned>(&self, path: &str, limit: u64) -> Result<T, ClientError> {
        let body = self.get_bytes(path, limit)?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Malformed {
            url: self.url(path),
            message: e.to_string(),
        })
    }

    fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        value: &impl serde::Serialize,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let body = serde_json::to_vec(value).map_err(|e| Self::transport(&url, e))?;
        let mut req = self
            .agent
            .post(&url)
            .header("content-type", "application/json");
        if body.len() > EXPECT_CONTINUE_ABOVE {
            // The server answers a refusal (rate limit, size, quota, busy) before the body,
            // so a refused upload costs neither side the bytes and the refusal is read
            // instead of lost in a reset connection.
            req = req.header("expect", "100-continue");
        }
        let resp = req.send(&body[..]);
        let bytes = Self::read(&url, resp, MAX_JSON_BYTES)?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Malformed {
            url,
            message: e.to_string(),
        })
    }

    /// What the server says about itself (informational, never a trust input).
    pub fn info(&self) -> Result<InfoResponse, ClientError> {
        self.get_json("/api/v1/info", MAX_JSON_BYTES)
    }

    /// The latest signed checkpoint note (unverified bytes).
    pub fn checkpoint(&self) -> Result<Vec<u8>, ClientError> {
        self.get_bytes("/api/v1/checkpoint", MAX_NOTE_BYTES as u64)
    }

    /// The newest checkpoint note at least `min` of the registry's witnesses cosigned
    /// (unverified bytes).
    pub fn cosigned_checkpoint(&self, min: usize) -> Result<Vec<u8>, ClientError> {
        self.get_bytes(
            &format!("/api/v1/checkpoint/cosigned?min={min}"),
            MAX_NOTE_BYTES as u64,
        )
    }

    /// The checkpoint note `config` syncs to: the cosigned one when its witness policy
    /// requires cosignatures, else the latest.
    pub fn checkpoint_for(&self, config: &VerifierConfig) -> Result<Vec<u8>, ClientError> {
        if config.witnesses.is_required() {
            self.cosigned_checkpoint(config.witnesses.threshold())
        } else {
            self.checkpoint()
        }
    }

    /// One page of leaves starting at `start` (at most up to `end`).
    pub fn entries_page(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, ClientError> {
        let path = format!("/api/v1/entries?start={start}&end={end}");
        let page: EntriesResponse = self.get_json(&path, MAX_ENTRIES_BYTES)?;
        let malformed = |message: String| ClientError::Malformed {
            url: self.url(&path),
            message,
        };
        if page.start != start {
            return Err(malformed(format!("page starts at {}", page.start)));
        }
        if page.entries.len() as u64 > end - start {
            return Err(malformed("page holds more entries than asked for".into()));
        }
        page.entries
            .iter()
            .map(|e| {
                B64.decode(e)
                    .map_err(|e| malformed(format!("entry is not base64: {e}")))
            })
            .collect()
    }

    /// Leaves `[start, end)`, paging as the server requires.
    pub fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, ClientError> {
        let mut out = Vec::with_capacity(end.saturating_sub(start).min(1 << 20) as usize);
        let mut next = start;
        while next < end {
            let page = self.entries_page(next, end)?;
            if page.is_empty() {
                return Err(ClientError::Malformed {
                    url: self.url("/api/v1/entries"),
                    message: format!("empty page at {next} before {end}"),
                });
            }
            next += page.len() as u64;
            out.extend(page);
        }
        Ok(out)
    }

    /// A consistency proof between two tree sizes.
    pub fn consistency(&self, old: u64, new: u64) -> Result<Vec<Hash>, ClientError> {
        let r: ConsistencyResponse = self.get_json(
            &format!("/api/v1/proof/consistency?old={old}&new={new}"),
            MAX_JSON_BYTES,
        )?;
        Ok(r.proof)
    }

    /// An inclusion proof of a leaf in a tree size.
    pub fn inclusion(&self, index: u64, size: u64) -> Result<Vec<Hash>, ClientError> {
        let r: InclusionResponse = self.get_json(
            &format!("/api/v1/proof/inclusion?index={index}&size={size}"),
            MAX_JSON_BYTES,
        )?;
        Ok(r.proof)
    }

    /// One page of definitions.
    pub fn definitions_page(&self, q: &ListQuery) -> Result<DefinitionList, ClientError> {
        let mut path = String::from("/api/v1/definitions?");
        if let Some(s) = q.status {
            path.push_str(&format!("status={}&", status_name(s)));
        }
        if let Some(l) = q.limit {
            path.push_str(&format!("limit={l}&"));
        }
        if let Some(c) = q.cursor {
            path.push_str(&format!("cursor={c}&"));
        }
        if let Some(o) = q.order {
            path.push_str(match o {
                ListOrder::Newest => "order=newest&",
                ListOrder::Oldest => "order=oldest&",
            });
        }
        if q.hidden {
            path.push_str("hidden=true&");
        }
        let path = path.trim_end_matches(['&', '?']);
        self.get_json(path, MAX_JSON_BYTES)
    }

    /// Definitions (newest first), optionally only those with a server-view status,
    /// following the server's pages up to [`MAX_LISTED`].
    pub fn definitions(
        &self,
        status: Option<Status>,
    ) -> Result<Vec<DefinitionSummary>, ClientError> {
        let mut out = Vec::new();
        let mut q = ListQuery {
            status,
            limit: Some(MAX_PAGE),
            ..ListQuery::default()
        };
        loop {
            let page = self.definitions_page(&q)?;
            out.extend(page.definitions);
            match page.next_cursor {
                // A cursor must move on, or a broken server could keep the client paging.
                Some(c) if out.len() < MAX_LISTED && q.cursor.is_none_or(|old| c < old) => {
                    q.cursor = Some(c);
                }
                _ => return Ok(out),
            }
        }
    }

    /// Everything the server says about one definition.
    pub fn definition(&self, id: &DefinitionId) -> Result<DefinitionDetail, ClientError> {
        self.get_json(&format!("/api/v1/definitions/{id}"), MAX_JSON_BYTES)
    }

    /// Every revocation, newest first.
    pub fn revocations(&self) -> Result<Vec<ReviewRecord>, ClientError> {
        self.get_json("/api/v1/revocations", MAX_JSON_BYTES)
    }

    /// Downloads a bundle and validates it locally; fails unless it has identity `id`.
    pub fn bundle(&self, id: &DefinitionId) -> Result<(Vec<u8>, Definition), ClientError> {
        let path = format!("/api/v1/definitions/{id}/bundle");
        let bytes = self.get_bytes(&path, task_defs::bundle::MAX_BUNDLE_BYTES)?;
        let malformed = |message: String| ClientError::Malformed {
            url: self.url(&path),
            message,
        };
        let def = task_defs::bundle::read(&bytes).map_err(|e| malformed(e.to_string()))?;
        if def.id != *id {
            return Err(malformed(format!("the bundle's identity is {}", def.id)));
        }
        Ok((bytes, def))
    }

    /// Publishes a signed publication with its bundle.
    pub fn publish(
        &self,
        publication: &Published,
        bundle: &[u8],
    ) -> Result<AppendResponse, ClientError> {
        self.post_json(
            "/api/v1/definitions",
            &PublishRequest {
                publication: publication.clone(),
                bundle: B64.encode(bundle),
            },
        )
    }

    /// Submits a signed reviewer statement.
    pub fn review(&self, review: &Review) -> Result<AppendResponse, ClientError> {
        self.post_json("/api/v1/reviews", review)
    }
}

/// The wire name of a status.
pub fn status_name(s: Status) -> &'static str {
    match s {
        Status::Unknown => "unknown",
        Status::Pending => "pending",
        Status::Approved => "approved",
        Status::Rejected => "rejected",
        Status::Revoked => "revoked",
    }
}

/// Why a verified sync or status failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncFailure {
    /// The registry could not be asked.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The registry's log does not verify: fork, rollback, altered or hidden entries,
    /// bad signature. Treat the registry as compromised.
    #[error("registry log does not verify: {0}")]
    Verify(#[from] SyncError),
    /// The verifier's configuration or stored state is unusable.
    #[error("verifier: {0}")]
    Config(#[from] ConfigError),
    /// The verified view is older than the configured maximum age.
    #[error(transparent)]
    Stale(#[from] StatusError),
    /// The state file could not be read or written.
    #[error("verifier state {path}: {message}")]
    State {
        /// The state file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

impl SyncFailure {
    /// True when the log itself failed verification (as opposed to being unreachable).
    pub fn is_verification_failure(&self) -> bool {
        matches!(self, SyncFailure::Verify(_) | SyncFailure::Stale(_))
    }
}

/// Brings `verifier` up to the registry's latest checkpoint. On error the verifier is
/// unchanged.
pub fn sync(
    client: &Client,
    verifier: &mut Verifier,
    now: u64,
) -> Result<UpdateReport, SyncFailure> {
    let note = client.checkpoint_for(verifier.config())?;
    let cp = Checkpoint::open(&note, &verifier.config().log_key).map_err(SyncError::from)?;
    let old = verifier.size();
    let empty: [&[u8]; 0] = [];
    if cp.size <= old {
        // Same size (fresher time) or a rollback: the verifier decides which.
        return Ok(verifier.update(&note, &empty, &[], now)?);
    }
    if cp.size - old > MAX_SYNC_ENTRIES {
        return Err(ClientError::Malformed {
            url: client.url("/api/v1/checkpoint"),
            message: format!(
                "checkpoint claims {} new entries, more than {MAX_SYNC_ENTRIES} in one sync",
                cp.size - old
            ),
        }
        .into());
    }
    let checked = fetch_and_check(client, verifier, old, cp.size)?;
    let proof = if old == 0 {
        Vec::new()
    } else {
        client.consistency(old, cp.size)?
    };
    Ok(verifier.update_checked(&note, checked, &proof, now)?)
}

/// Pages waiting between the download and the checks: enough to keep the connection busy
/// while a page is checked, few enough to bound memory (a page is at most 4096 leaves).
const PAGES_IN_FLIGHT: usize = 2;

/// Downloads leaves `[start, end)` page by page on a helper thread while this thread
/// hashes, parses and verifies each page already received, so the download hides behind
/// the checks (which dominate a sync). Every wait is bounded by the client's timeout.
fn fetch_and_check(
    client: &Client,
    verifier: &Verifier,
    start: u64,
    end: u64,
) -> Result<CheckedLeaves, SyncFailure> {
    let (tx, rx) =
        std::sync::mpsc::sync_channel::<Result<Vec<Vec<u8>>, ClientError>>(PAGES_IN_FLIGHT);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut next = start;
            while next < end {
                let page = match client.entries_page(next, end) {
                    Ok(page) if page.is_empty() => Err(ClientError::Malformed {
                        url: client.url("/api/v1/entries"),
                        message: format!("empty page at {next} before {end}"),
                    }),
                    other => other,
                };
                let failed = page.is_err();
                if let Ok(p) = &page {
                    next += p.len() as u64;
                }
                // A closed channel means the checker gave up: stop fetching.
                if tx.send(page).is_err() || failed {
                    return;
                }
            }
        });
        // Returning drops `rx`, which ends the fetcher at its next send; the scope then
        // waits at most one request (bounded by the client's timeout) for it.
        let mut checked = CheckedLeaves::default();
        let want = (end - start) as usize;
        // One page may take up to the request timeout; a little slack for the handoff.
        let wait = client.timeout.saturating_add(Duration::from_secs(5));
        while checked.len() < want {
            let page = rx.recv_timeout(wait).map_err(|e| ClientError::Transport {
                url: client.url("/api/v1/entries"),
                message: match e {
                    std::sync::mpsc::RecvTimeoutError::Timeout => {
                        "timed out waiting for a page of entries".to_string()
                    }
                    std::sync::mpsc::RecvTimeoutError::Disconnected => {
                        "entry download stopped early".to_string()
                    }
                },
            })??;
            checked.append(verifier.check_leaves(&page));
        }
        Ok(checked)
    })
}

/// The outcome of [`verified_status`].
#[derive(Debug, Clone)]
pub struct VerifiedStatus {
    /// The verified status.
    pub status: Status,
    /// The checkpoint it was verified against.
    pub checkpoint: Checkpoint,
    /// The trusted witnesses (verifier keys) that cosigned that checkpoint.
    pub cosigned_by: Vec<String>,
    /// What the sync did.
    pub report: UpdateReport,
    /// Why the identity has its status: verdicts, self-approvals, stale statements.
    pub details: StatusReport,
}

fn state_err(path: &Path, e: impl std::fmt::Display) -> SyncFailure {
    SyncFailure::State {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Loads a verifier from `state` (if the file exists) or starts a fresh one.
pub fn load_verifier(
    config: VerifierConfig,
    state: Option<&Path>,
) -> Result<Verifier, SyncFailure> {
    let Some(path) = state else {
        return Ok(Verifier::new(config)?);
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Verifier::new(config)?),
        Err(e) => return Err(state_err(path, e)),
    };
    // Never silently discarded: the stored checkpoint is what catches a rollback.
    let stored: VerifierState = serde_json::from_slice(&bytes).map_err(|e| {
        state_err(
            path,
            format!(
                "{e} (state written by an older version, before log format 2, cannot be read: \
                 check the registry, then delete the file to start over)"
            ),
        )
    })?;
    match Verifier::restore(config.clone(), stored.clone()) {
        Err(ConfigError::RosterGrew) => Ok(Verifier::resync(config, &stored)?),
        other => Ok(other?),
    }
}

/// Writes the verifier's state atomically and durably (temporary file, fsync, rename, fsync
/// of the directory).
pub fn save_verifier(verifier: &Verifier, path: &Path) -> Result<(), SyncFailure> {
    let json = serde_json::to_vec(verifier.state()).map_err(|e| state_err(path, e))?;
    pinfold_base::fs::write_atomic(path, &json, pinfold_base::fs::Durability::Durable)
        .map_err(|e| state_err(path, e))
}

/// Syncs a verifier (restored from `state` if given, saved back after a successful sync)
/// from the registry and returns the verified status of `id` at local time `now`.
///
/// The trust roots come from `config` alone. A fork, rollback or altered entry fails with
/// [`SyncFailure::Verify`] and leaves the state file as it was, so the evidence stays.
pub fn verified_status(
    client: &Client,
    config: VerifierConfig,
    state: Option<&Path>,
    id: &DefinitionId,
    now: u64,
) -> Result<VerifiedStatus, SyncFailure> {
    let mut v = load_verifier(config, state)?;
    let report = sync(client, &mut v, now)?;
    if let Some(path) = state {
        save_verifier(&v, path)?;
    }
    let status = v.status(id, now)?;
    let checkpoint = v.checkpoint().cloned().ok_or(StatusError::NoCheckpoint)?;
    Ok(VerifiedStatus {
        status,
        checkpoint,
        cosigned_by: v.cosigned_by().to_vec(),
        report,
        details: v.report(id),
    })
}

/// The origin a checkpoint names, read without verification: for clients configured with
/// a log key but no origin. The origin is still authenticated afterwards, because the log
/// key's signature covers it and the note key id binds the name.
pub fn checkpoint_origin(note: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(note).ok()?;
    let line = text.split('\n').next()?;
    (!line.is_empty()).then(|| line.to_string())
}
