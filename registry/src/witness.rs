//! Witnesses over HTTP: the `task-defs witness` server (C2SP `tlog-witness`
//! `add-checkpoint`) and the registry's side that asks its witnesses to cosign.
//!
//! **Push, as the spec says.** After every new checkpoint (an append or a re-signature) the
//! registry sends `POST <witness>/add-checkpoint` to each configured witness with the size
//! it believes the witness last cosigned and a consistency proof from it; a witness that
//! answers `409` with its size gets the request again from that size. Cosignatures that
//! verify under the configured witness key are attached to the checkpoint while it is
//! current (`GET /api/v1/checkpoint`) and kept as the newest cosigned checkpoint
//! (`GET /api/v1/checkpoint/cosigned`), which clients requiring witnesses sync to. Every
//! request has a timeout; a witness that is down costs one timeout per round and nothing
//! else. Push keeps witnesses standard: any C2SP witness works with the registry, and
//! `task-defs witness` works with any C2SP log.
//!
//! **The witness** keeps its view in `DIR/witness-state.json` (per origin, the latest
//! cosigned size and root), written atomically before it answers, under one lock, so
//! the check and the update are one step (the race the spec warns about cannot happen). It
//! holds its own key (`DIR/witness.key`, 0600) and only public keys of the logs it follows.
//! Each request is bounded: its body by size, the whole request (body included) by
//! [`WITNESS_REQUEST_TIMEOUT`], and the requests in flight by [`MAX_WITNESS_REQUESTS`].

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::api::WitnessEntry;
use super::service::Registry;
use super::{KeyFileError, create_secret_key_file, read_secret_key_file, unix_now};
use pinfold_base::fs::{Durability, write_atomic};
use pinfold_tlog::note::{MAX_NOTE_BYTES, Note, NoteError, NoteSignature, check_key_name};
use pinfold_tlog::witness::{
    AddCheckpoint, Cosigner, CosignerKey, MAX_PROOF_LINES, Witness, WitnessError, WitnessState,
    parse_response,
};
use pinfold_tlog::{Checkpoint, NoteVerifier};

/// The witness's key file inside its data directory.
pub const WITNESS_KEY_FILE: &str = "witness.key";
/// The witness's persisted view inside its data directory.
pub const WITNESS_STATE_FILE: &str = "witness-state.json";
/// The witness's optional configuration (`name`, `logs`) inside its data directory.
pub const WITNESS_CONFIG_FILE: &str = "witness.toml";
/// Content type of a `409` answer that carries the witness's cosigned size.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";
/// The largest `add-checkpoint` body accepted: an old-size line, 63 proof lines, a note.
pub const MAX_ADD_CHECKPOINT_BYTES: usize = 32 + MAX_PROOF_LINES * 46 + MAX_NOTE_BYTES;
/// The largest witness answer read.
const MAX_RESPONSE_BYTES: u64 = 16 * 1024;
/// The longest a witness spends on one request, its body included.
pub const WITNESS_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests a witness handles at once; more are answered 503 at once.
pub const MAX_WITNESS_REQUESTS: usize = 64;

/// Why a witness could not start.
#[derive(Debug, thiserror::Error)]
pub enum WitnessServiceError {
    /// A file in the data directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The key file is unusable.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// The configuration (flags, `witness.toml`, stored state) is invalid.
    #[error("configuration: {0}")]
    Config(String),
}

/// What `task-defs witness` is given; empty means "from `witness.toml`".
#[derive(Debug, Clone, Default)]
pub struct WitnessConfig {
    /// The data directory (created if missing).
    pub data_dir: PathBuf,
    /// The witness's name (its key name; fixed at the first start).
    pub name: Option<String>,
    /// The logs it follows: their C2SP verifier keys (`origin+keyid+base64(0x01 ‖ key)`).
    pub logs: Vec<NoteVerifier>,
    /// The longest one request may take (default [`WITNESS_REQUEST_TIMEOUT`]).
    pub request_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WitnessFile {
    name: Option<String>,
    #[serde(default)]
    logs: Vec<String>,
}

/// The persisted file: the witness's name (so its key id never changes) and its view.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredState {
    name: String,
    logs: WitnessState,
}

/// A running witness over one data directory.
#[derive(Debug)]
pub struct WitnessService {
    witness: Mutex<Witness>,
    name: String,
    logs: Vec<NoteVerifier>,
    state_path: PathBuf,
    request_timeout: Duration,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WitnessServiceError + '_ {
    move |source| WitnessServiceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl WitnessService {
    /// Opens the data directory: creates the key on first start, loads the view.
    pub fn open(config: &WitnessConfig) -> Result<WitnessService, WitnessServiceError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let file_path = dir.join(WITNESS_CONFIG_FILE);
        let file: WitnessFile = match std::fs::read_to_string(&file_path) {
            Ok(t) => toml::from_str(&t).map_err(|e| {
                WitnessServiceError::Config(format!("{}: {e}", file_path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => WitnessFile::default(),
            Err(e) => return Err(io_err(&file_path)(e)),
        };
        let mut logs = config.logs.clone();
        if logs.is_empty() {
            for v in &file.logs {
                logs.push(NoteVerifier::from_vkey(v).map_err(|e| {
                    WitnessServiceError::Config(format!("{}: log {v:?}: {e}", file_path.display()))
                })?);
            }
        }
        if logs.is_empty() {
            return Err(WitnessServiceError::Config(format!(
                "no logs to witness: pass --log VKEY or list logs in {}",
                file_path.display()
            )));
        }
        let state_path = dir.join(WITNESS_STATE_FILE);
        let stored: Option<StoredState> = match std::fs::read(&state_path) {
            Ok(b) => Some(serde_json::from_slice(&b).map_err(|e| {
                WitnessServiceError::Config(format!("{}: {e}", state_path.display()))
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&state_path)(e)),
        };
        let wanted = config.name.clone().or(file.name);
        let name = match (&stored, wanted) {
            (Some(s), Some(w)) if s.name != w => {
                return Err(WitnessServiceError::Config(format!(
                    "this witness is named {:?}; it cannot become {w:?} (its key id would change)",
                    s.name
                )));
            }
            (Some(s), _) => s.name.clone(),
            (None, Some(w)) => w,
            (None, None) => {
                return Err(WitnessServiceError::Config(
                    "name the witness with --name (e.g. witness.example/w1)".into(),
                ));
            }
        };
        check_key_name(&name)
            .map_err(|e| WitnessServiceError::Config(format!("witness name: {e}")))?;
        let key_path = dir.join(WITNESS_KEY_FILE);
        let key = if key_path.exists() {
            read_secret_key_file(&key_path)?
        } else {
            create_secret_key_file(&key_path)?
        };
        let cosigner =
            Cosigner::new(&name, key).map_err(|e| WitnessServiceError::Config(e.to_string()))?;
        let state = stored.map(|s| s.logs).unwrap_or_default();
        let service = WitnessService {
            witness: Mutex::new(Witness::new(cosigner, logs.clone(), state)),
            name,
            logs,
            state_path,
            request_timeout: config.request_timeout.unwrap_or(WITNESS_REQUEST_TIMEOUT),
        };
        service.persist(&service.lock().state().clone())?;
        Ok(service)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Witness> {
        // The view is replaced only after it is persisted, so a panic leaves it sound.
        self.witness.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, state: &WitnessState) -> Result<(), WitnessServiceError> {
        let stored = StoredState {
            name: self.name.clone(),
            logs: state.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&stored)
            .map_err(|e| WitnessServiceError::Config(e.to_string()))?;
        write_atomic(&self.state_path, &bytes, Durability::Durable)
            .map_err(io_err(&self.state_path))
    }

    /// The witness's verifier key (give it to registries and clients).
    pub fn verifier(&self) -> CosignerKey {
        self.lock().verifier()
    }

    /// The logs it follows.
    pub fn logs(&self) -> &[NoteVerifier] {
        &self.logs
    }

    /// The persisted view: per origin, the latest cosigned checkpoint.
    pub fn state(&self) -> WitnessState {
        self.lock().state().clone()
    }

    /// Handles one `add-checkpoint` body: the cosignature line, or the refusal.
    pub fn add_checkpoint(&self, body: &[u8]) -> Result<String, AddCheckpointRefusal> {
        let req = AddCheckpoint::parse(body).map_err(AddCheckpointRefusal::Witness)?;
        // One lock around check, persist and update: no two requests interleave.
        let mut witness = self.lock();
        let mut next = witness.clone();
        let line = next
            .add_checkpoint(&req, unix_now())
            .map_err(AddCheckpointRefusal::Witness)?;
        self.persist(next.state())
            .map_err(|e| AddCheckpointRefusal::Internal(e.to_string()))?;
        *witness = next;
        Ok(line)
    }
}

/// Why a witness answered other than 200.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddCheckpointRefusal {
    /// Refused by the protocol's rules.
    #[error(transparent)]
    Witness(WitnessError),
    /// The view could not be persisted (500; nothing was cosigned).
    #[error("persisting the witness view failed: {0}")]
    Internal(String),
}

async fn add_checkpoint(State(w): State<Arc<WitnessService>>, body: Bytes) -> Response {
    let result = tokio::task::spawn_blocking(move || w.add_checkpoint(&body))
        .await
        .unwrap_or_else(|e| Err(AddCheckpointRefusal::Internal(e.to_string())));
    match result {
        Ok(line) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            line,
        )
            .into_response(),
        Err(AddCheckpointRefusal::Witness(WitnessError::WrongOldSize { cosigned, .. })) => (
            StatusCode::CONFLICT,
            [(header::CONTENT_TYPE, SIZE_CONTENT_TYPE)],
            format!("{cosigned}\n"),
        )
            .into_response(),
        Err(AddCheckpointRefusal::Witness(e)) => (
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{e}\n"),
        )
            .into_response(),
        Err(e @ AddCheckpointRefusal::Internal(_)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
        }
    }
}

async fn about(State(w): State<Arc<WitnessService>>) -> Response {
    let mut text = format!("{}\n", w.verifier());
    for l in w.logs() {
        text.push_str(&format!("log {}\n", l.to_vkey()));
    }
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// Bounds every request in time (body included) and the requests in flight, so slow or
/// numerous clients cannot pin the witness.
async fn bounded(
    State((slots, timeout)): State<(Arc<tokio::sync::Semaphore>, Duration)>,
    req: Request,
    next: Next,
) -> Response {
    let Ok(_slot) = slots.try_acquire() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "witness busy, retry\n").into_response();
    };
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request took too long\n").into_response(),
    }
}

/// The witness's routes: `POST /add-checkpoint` and `GET /` (its vkey and logs).
pub fn witness_router(service: Arc<WitnessService>) -> Router {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_WITNESS_REQUESTS));
    let timeout = service.request_timeout;
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .route("/", get(about))
        .layer(DefaultBodyLimit::max(MAX_ADD_CHECKPOINT_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            (slots, timeout),
            bounded,
        ))
        .with_state(service)
}

/// Serves a witness on a bound listener until `shutdown` completes.
pub async fn serve_witness<F>(
    listener: tokio::net::TcpListener,
    service: Arc<WitnessService>,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    axum::serve(listener, witness_router(service))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The registry's client of one witness: its key, URL, HTTP agent and the size it last
/// cosigned (as far as the registry knows).
#[derive(Debug)]
pub(crate) struct WitnessCaller {
    entry: WitnessEntry,
    agent: ureq::Agent,
    cosigned: Mutex<Option<u64>>,
}

/// Why a witness gave no cosignature this round.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessCallError {
    /// No answer (connection, timeout, size cap).
    #[error("{url}: {message}")]
    Transport {
        /// The witness URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The witness refused.
    #[error("{url} refused ({status}): {message}")]
    Refused {
        /// The witness URL.
        url: String,
        /// Its HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// It claims to have cosigned a bigger tree than this log has: it was shown another
    /// history (or this log lost entries). Logged loudly; never "fixed" by the registry.
    #[error(
        "{url} has cosigned size {cosigned}, above this log's size {size}: it saw another history"
    )]
    Ahead {
        /// The witness URL.
        url: String,
        /// Its cosigned size.
        cosigned: u64,
        /// This log's size.
        size: u64,
    },
    /// The answer holds no valid cosignature by the configured key.
    #[error("{url}: no valid cosignature by {vkey} in the answer: {message}")]
    BadCosignature {
        /// The witness URL.
        url: String,
        /// The configured key.
        vkey: String,
        /// What was wrong.
        message: String,
    },
}

impl WitnessCaller {
    pub(crate) fn new(entry: WitnessEntry, timeout: Duration) -> WitnessCaller {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
            .http_status_as_error(false)
            .max_redirects(0)
            .build();
        WitnessCaller {
            entry,
            agent: config.into(),
            cosigned: Mutex::new(None),
        }
    }

    fn url(&self) -> String {
        format!("{}/add-checkpoint", self.entry.url.trim_end_matches('/'))
    }

    fn known_size(&self) -> Option<u64> {
        *self.cosigned.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_known_size(&self, size: u64) {
        *self.cosigned.lock().unwrap_or_else(|p| p.into_inner()) = Some(size);
    }

    /// Asks the witness to cosign `note` (the signed checkpoint `cp`); at most two
    /// requests (the second after learning the witness's size from a 409).
    fn cosign(
        &self,
        registry: &Registry,
        note: &[u8],
        cp: &Checkpoint,
    ) -> Result<NoteSignature, WitnessCallError> {
        let url = self.url();
        let transport = |message: String| WitnessCallError::Transport {
            url: url.clone(),
            message,
        };
        for _ in 0..2 {
            let old = self.known_size().unwrap_or(0);
            if old > cp.size {
                return Err(WitnessCallError::Ahead {
                    url: url.clone(),
                    cosigned: old,
                    size: cp.size,
                });
            }
            let proof = if old == 0 {
                Vec::new()
            } else {
                registry
                    .proof_between(old, cp.size)
                    .ok_or_else(|| transport(format!("no proof from {old} to {}", cp.size)))?
            };
            let body = AddCheckpoint {
                old,
                proof,
                checkpoint: note.to_vec(),
            }
            .to_bytes();
            let mut resp = self
                .agent
                .post(&url)
                .header("content-type", "text/plain")
                .send(&body[..])
                .map_err(|e| transport(e.to_string()))?;
            let status = resp.status().as_u16();
            let size_answer = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(SIZE_CONTENT_TYPE));
            let answer = resp
                .body_mut()
                .with_config()
                .limit(MAX_RESPONSE_BYTES)
                .read_to_vec()
                .map_err(|e| transport(e.to_string()))?;
            match status {
                200 => {
                    let sig = self.pick(note, &answer)?;
                    self.set_known_size(cp.size);
                    return Ok(sig);
                }
                409 if size_answer => {
                    let text = String::from_utf8_lossy(&answer);
                    let size = text
                        .strip_suffix('\n')
                        .and_then(|t| t.parse::<u64>().ok())
                        .ok_or_else(|| transport(format!("bad 409 size answer {text:?}")))?;
                    self.set_known_size(size);
                }
                _ => {
                    return Err(WitnessCallError::Refused {
                        url: url.clone(),
                        status,
                        message: String::from_utf8_lossy(&answer)
                            .trim_end()
                            .chars()
                            .take(300)
                            .collect(),
                    });
                }
            }
        }
        Err(transport(
            "the witness's cosigned size keeps changing".into(),
        ))
    }

    /// The configured witness's valid cosignature among the answer's signature lines.
    fn pick(&self, note: &[u8], answer: &[u8]) -> Result<NoteSignature, WitnessCallError> {
        let bad = |message: String| WitnessCallError::BadCosignature {
            url: self.url(),
            vkey: self.entry.vkey.to_vkey(),
            message,
        };
        let text = Note::parse(note).map_err(|e| bad(e.to_string()))?.text;
        let sigs = parse_response(note, answer).map_err(|e: NoteError| bad(e.to_string()))?;
        let now = unix_now();
        let mut last = "no line by that key".to_string();
        for sig in sigs.into_iter().filter(|s| self.entry.vkey.matches(s)) {
            match self.entry.vkey.verify(&text, &sig, now) {
                Ok(_) => return Ok(sig),
                Err(e) => last = e.to_string(),
            }
        }
        Err(bad(last))
    }
}

/// Asks every witness, in parallel, to cosign the registry's current checkpoint and
/// attaches the cosignatures that verify. Returns each witness's outcome, by vkey.
pub(crate) fn witness_round(
    registry: &Registry,
    callers: &[WitnessCaller],
) -> BTreeMap<String, Result<(), WitnessCallError>> {
    let (note, cp) = registry.current_note();
    let results: Vec<(String, Result<NoteSignature, WitnessCallError>)> =
        std::thread::scope(|scope| {
            let handles: Vec<_> = callers
                .iter()
                .map(|c| {
                    let (note, cp) = (&note, &cp);
                    scope.spawn(move || (c.entry.vkey.to_vkey(), c.cosign(registry, note, cp)))
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
    let sigs = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().cloned())
        .collect();
    registry.add_cosignatures(&note, &cp, sigs);
    results
        .into_iter()
        .map(|(k, r)| (k, r.map(|_| ())))
        .collect()
}

/// Asks the configured witnesses to cosign every new checkpoint, for as long as it runs.
/// A witness that fails is reported once per change of its error, not once per round.
pub async fn witness_loop(registry: Arc<Registry>) {
    let settings = registry.settings();
    let callers: Arc<Vec<WitnessCaller>> = Arc::new(
        settings
            .witnesses
            .iter()
            .map(|w| WitnessCaller::new(w.clone(), settings.witness_timeout))
            .collect(),
    );
    if callers.is_empty() {
        return;
    }
    let mut last_errors: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let (r, c) = (registry.clone(), callers.clone());
        match tokio::task::spawn_blocking(move || witness_round(&r, &c)).await {
            Ok(outcomes) => {
                for (vkey, outcome) in outcomes {
                    match outcome {
                        Ok(()) => {
                            if last_errors.remove(&vkey).is_some() {
                                eprintln!("witness {vkey} cosigns again");
                            }
                        }
                        Err(e) => {
                            let msg = e.to_string();
                            if last_errors.get(&vkey) != Some(&msg) {
                                eprintln!("warning: witness {vkey}: {msg}");
                                last_errors.insert(vkey, msg);
                            }
                        }
                    }
                }
            }
            Err(e) => eprintln!("warning: witness round failed: {e}"),
        }
        registry.checkpoint_changed().await;
    }
}
