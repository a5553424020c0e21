//! Blob transfer by BLAKE3 identity over libp2p streams, verified as the bytes arrive.
//!
//! Wire format on a `/pinfold/blob/1` stream (all integers big-endian):
//!
//! ```text
//! requester → server   "PFB1" ‖ id (32 bytes) ‖ max_size (u64)
//! server → requester   status (u8) ‖ size (u64)
//!                      then, when status = OK:
//!                      the CV of every group (32 bytes each) when size > GROUP_SIZE
//!                      the blob's bytes
//! ```
//!
//! The requester refuses a size above its maximum or different from what it expected
//! before reading anything else, checks the CV list against the identity before any content
//! ([`crate::tree`]), then checks each 64 KiB group as soon as it is in and writes only
//! verified groups to its sink. A lying server is cut off (stream dropped, peer struck) at
//! the first bad group.
//!
//! The serving side answers only from the node's [`BlobStore`], refuses blobs over its own
//! cap, and bounds transfers overall and per peer with semaphores (a requester over the
//! limit gets a typed `BUSY`). It computes the CV list in a first pass over the blob and
//! checks it against the identity before sending anything, so a store whose content does
//! not match its name is refused rather than served; CV lists are cached (bounded) so
//! serving the same blob again costs one pass.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, IncomingStreams};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::id::BlobId;
use crate::tree::{self, Cv, GROUP_SIZE, GroupVerifier, VerifyError};

/// Protocol name of blob transfer.
pub const BLOB_PROTOCOL: StreamProtocol = StreamProtocol::new("/pinfold/blob/1");

const MAGIC: &[u8; 4] = b"PFB1";
/// Bytes of a blob request: magic, the identity, the requester's size cap (big-endian).
pub const REQUEST_LEN: usize = 4 + 32 + 8;
/// Bytes of the serving side's header: a status byte and the blob size (big-endian).
pub const HEADER_LEN: usize = 9;

const STATUS_OK: u8 = 0;
const STATUS_NOT_FOUND: u8 = 1;
const STATUS_TOO_LARGE: u8 = 2;
const STATUS_BUSY: u8 = 3;
const STATUS_ERROR: u8 = 4;

/// Bytes read from the store per read on the serving side.
const SERVE_BUFFER: usize = 256 * 1024;
/// Total CV-list bytes the serving side caches.
const CV_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// Streams whose request is being read, or whose "busy" refusal is being written, at once;
/// beyond that, extra streams are just dropped.
const MAX_UNSERVED: usize = 64;
/// Longest wait for a requester's 44-byte request. A real requester writes it right after
/// opening the stream, so a peer that stays silent this long is a slow-loris.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// A blob opened for reading.
pub struct BlobReader {
    /// Its size in bytes; the reader must yield exactly this many.
    pub len: u64,
    /// Its bytes.
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader")
            .field("len", &self.len)
            .finish()
    }
}

/// The node's blobs, the only thing the blob server serves from.
///
/// `open` may be called twice per transfer (once to hash, once to send) and must not
/// block for long (open a file, do not read it).
pub trait BlobStore: Send + Sync + 'static {
    /// Opens the blob named `id`, or `None` when it is not held (or not to be served).
    fn open(&self, id: &BlobId) -> io::Result<Option<BlobReader>>;
}

/// A store in memory, for requestors serving small inputs and for tests.
#[derive(Debug, Default)]
pub struct MemoryBlobStore {
    blobs: Mutex<HashMap<BlobId, Arc<[u8]>>>,
}

impl MemoryBlobStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a blob; returns its identity.
    pub fn insert(&self, bytes: impl Into<Arc<[u8]>>) -> BlobId {
        let bytes = bytes.into();
        let id = BlobId::of(&bytes);
        self.blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, bytes);
        id
    }
}

impl BlobStore for MemoryBlobStore {
    fn open(&self, id: &BlobId) -> io::Result<Option<BlobReader>> {
        let blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        Ok(blobs.get(id).map(|b| BlobReader {
            len: b.len() as u64,
            reader: Box::new(io::Cursor::new(Arc::clone(b))),
        }))
    }
}

/// A store of files the node registered by identity (bundles it unpacked, a requestor's
/// inputs, a job's outputs), served in place without copying.
///
/// Only registered paths are served, and only while they are still the regular file that
/// was registered: a path that is now a link, or a file replaced since (other device or
/// inode), or of another length, is not served. Content is not re-hashed on open; the
/// server's first pass and the requester's verification catch a file changed in place.
#[derive(Debug, Default)]
pub struct PathBlobStore {
    files: Mutex<HashMap<BlobId, Registered>>,
}

#[derive(Debug, Clone)]
struct Registered {
    path: std::path::PathBuf,
    len: u64,
    dev: u64,
    ino: u64,
}

impl PathBlobStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `path` (a regular file, not followed if a link) under its BLAKE3,
    /// which is computed here; returns the identity and size.
    pub fn register(&self, path: impl Into<std::path::PathBuf>) -> io::Result<(BlobId, u64)> {
        use std::io::Read as _;
        use std::os::unix::fs::MetadataExt as _;
        let path = path.into();
        let meta = std::fs::symlink_metadata(&path)?;
        if !meta.file_type().is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let mut file = std::fs::File::open(&path)?;
        let opened = file.metadata()?;
        if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "file changed while opening",
            ));
        }
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; SERVE_BUFFER];
        let mut len = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        let id = BlobId::from(hasher.finalize());
        self.files.lock().unwrap_or_else(|e| e.into_inner()).insert(
            id,
            Registered {
                path,
                len,
                dev: meta.dev(),
                ino: meta.ino(),
            },
        );
        Ok((id, len))
    }

    /// Stops serving `id`.
    pub fn remove(&self, id: &BlobId) {
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

impl BlobStore for PathBlobStore {
    fn open(&self, id: &BlobId) -> io::Result<Option<BlobReader>> {
        use std::os::unix::fs::MetadataExt as _;
        let Some(reg) = self
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
        else {
            return Ok(None);
        };
        let meta = std::fs::symlink_metadata(&reg.path)?;
        if !meta.file_type().is_file()
            || (meta.dev(), meta.ino(), meta.len()) != (reg.dev, reg.ino, reg.len)
        {
            return Ok(None);
        }
        let file = std::fs::File::open(&reg.path)?;
        let opened = file.metadata()?;
        if (opened.dev(), opened.ino()) != (reg.dev, reg.ino) {
            return Ok(None);
        }
        Ok(Some(BlobReader {
            len: reg.len,
            reader: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}

/// What the requester knows about the blob it wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// The size it expects (from an offer or a manifest); any other size is refused.
    pub expected_size: Option<u64>,
    /// The largest size it accepts.
    pub max_size: u64,
}

impl FetchLimits {
    /// Exactly `size` bytes.
    pub fn exact(size: u64) -> Self {
        FetchLimits {
            expected_size: Some(size),
            max_size: size,
        }
    }
}

/// A completed fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchStats {
    /// Blob size (all verified and written).
    pub size: u64,
    /// Bytes read from the stream, header and CV list included.
    pub received: u64,
}

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// The stream could not be opened (not connected, protocol unsupported).
    #[error("cannot open a blob stream: {0}")]
    Open(String),
    /// A read or write waited longer than the i/o timeout.
    #[error("blob transfer timed out during {0}")]
    Timeout(&'static str),
    /// The stream failed.
    #[error("blob stream failed: {0}")]
    Io(String),
    /// The peer does not hold the blob.
    #[error("peer does not serve {0}")]
    NotFound(BlobId),
    /// The peer is at its transfer limit.
    #[error("peer is busy")]
    Busy,
    /// The peer failed internally.
    #[error("peer could not serve the blob")]
    Remote,
    /// The blob is larger than the requester's maximum.
    #[error("blob of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Size announced.
        size: u64,
        /// The requester's maximum.
        max: u64,
    },
    /// The announced size is not the expected size.
    #[error("blob is {actual} bytes, expected {expected}")]
    SizeMismatch {
        /// Expected.
        expected: u64,
        /// Announced.
        actual: u64,
    },
    /// The CV list does not match the identity: nothing was written.
    #[error("group hashes do not match the blob identity (after {received} bytes)")]
    BadCvList {
        /// Bytes read from the stream before the refusal.
        received: u64,
    },
    /// A group's bytes do not match: every earlier group was written, this one was not.
    #[error("group {index} does not match its hash (after {received} bytes)")]
    BadGroup {
        /// The group.
        index: u64,
        /// Bytes read from the stream before the refusal.
        received: u64,
    },
    /// The response is not the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// Writing to the local sink failed.
    #[error("cannot write the blob locally: {0}")]
    Sink(String),
    /// The local node is shutting down or at its fetch limit for too long.
    #[error("local fetch limit or shutdown")]
    Local,
}

impl TransferError {
    /// Whether the error proves the peer misbehaved (and should be struck).
    pub fn is_misbehaviour(&self) -> bool {
        matches!(
            self,
            TransferError::BadCvList { .. }
                | TransferError::BadGroup { .. }
                | TransferError::Protocol(_)
        )
    }
}

async fn timed<T>(
    d: Duration,
    what: &'static str,
    f: impl Future<Output = io::Result<T>>,
) -> Result<T, TransferError> {
    match tokio::time::timeout(d, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(TransferError::Io(e.to_string())),
        Err(_) => Err(TransferError::Timeout(what)),
    }
}

/// Attempts at a fetch whose stream fails before the server's header arrives.
const FETCH_ATTEMPTS: u32 = 8;
/// First pause before such a retry; doubled each time, plus up to as much again of jitter.
const RETRY_BASE: Duration = Duration::from_millis(5);
/// Longest pause before such a retry.
const RETRY_MAX: Duration = Duration::from_millis(250);

/// The pause before retry `attempt` (1-based): exponential with jitter, so a burst of
/// fetches that lost the race together does not collide again in lockstep.
fn retry_delay(attempt: u32) -> Duration {
    let base = RETRY_BASE
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(RETRY_MAX);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = base.mul_f64(f64::from(nanos % 1000) / 1000.0);
    base + jitter
}

/// Fetches `id` from `peer`, writing verified bytes to `sink`.
///
/// libp2p-stream queues at most one incoming stream per protocol on the serving side and
/// resets any stream that arrives while that slot is taken, however fast the server drains
/// it: streams negotiated in the same poll of a connection race for the slot. Such a stream
/// fails before the server has read the request, so nothing reached `sink` and nothing was
/// served; the fetch is retried on a fresh stream a bounded number of times, within
/// `open_timeout` overall. Any failure after the header (or a typed answer) is final.
pub(crate) async fn fetch<W: AsyncWrite + Unpin>(
    control: &mut Control,
    peer: PeerId,
    id: BlobId,
    limits: FetchLimits,
    open_timeout: Duration,
    io_timeout: Duration,
    sink: &mut W,
) -> Result<FetchStats, TransferError> {
    let deadline = tokio::time::Instant::now() + open_timeout;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut stream = match tokio::time::timeout(
            open_timeout,
            control.open_stream(peer, BLOB_PROTOCOL),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(TransferError::Open(e.to_string())),
            Err(_) => return Err(TransferError::Timeout("open")),
        };
        let size = match request(&mut stream, id, limits, io_timeout).await {
            Ok(size) => size,
            Err(TransferError::Io(why)) if attempt < FETCH_ATTEMPTS => {
                let delay = retry_delay(attempt);
                if tokio::time::Instant::now() + delay >= deadline {
                    return Err(TransferError::Io(why));
                }
                tracing::debug!(%peer, %id, attempt, why, "blob stream reset before header, retrying");
                drop(stream);
                tokio::time::sleep(delay).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let result = receive(&mut stream, id, size, io_timeout, sink).await;
        if result.is_ok() {
            let _ = tokio::time::timeout(io_timeout, stream.close()).await;
        }
        // On error the stream is dropped here, which resets it: the liar stops being read.
        return result;
    }
}

/// Parses a blob request as the serving side reads it: the identity asked for and the
/// requester's size cap, or `None` when the magic is wrong (the requester misbehaved).
pub fn parse_request(req: &[u8; REQUEST_LEN]) -> Option<(BlobId, u64)> {
    if &req[..4] != MAGIC {
        return None;
    }
    let id = BlobId(req[4..36].try_into().expect("32 bytes"));
    let max = u64::from_be_bytes(req[36..].try_into().expect("8 bytes"));
    Some((id, max))
}

/// Parses the serving side's header for a fetch of `id` under `limits`: the announced size
/// once it is acceptable, else the typed answer or the reason to refuse it.
pub fn parse_header(
    header: &[u8; HEADER_LEN],
    id: BlobId,
    limits: FetchLimits,
) -> Result<u64, TransferError> {
    let size = u64::from_be_bytes(header[1..].try_into().expect("8 bytes"));
    match header[0] {
        STATUS_OK => {}
        STATUS_NOT_FOUND => return Err(TransferError::NotFound(id)),
        STATUS_TOO_LARGE => {
            return Err(TransferError::TooLarge {
                size,
                max: limits.max_size,
            });
        }
        STATUS_BUSY => return Err(TransferError::Busy),
        STATUS_ERROR => return Err(TransferError::Remote),
        s => return Err(TransferError::Protocol(format!("unknown status {s}"))),
    }
    if size > limits.max_size {
        return Err(TransferError::TooLarge {
            size,
            max: limits.max_size,
        });
    }
    if let Some(expected) = limits.expected_size
        && expected != size
    {
        return Err(TransferError::SizeMismatch {
            expected,
            actual: size,
        });
    }
    Ok(size)
}

/// The verifier for the content of blob `id` of `size` bytes, from the raw CV list that
/// followed an OK header (32 bytes per group; empty when [`tree::has_cv_list`] is false).
/// The list is checked against the identity here, before any content is read.
pub fn cv_list_verifier(id: BlobId, size: u64, raw: &[u8]) -> Result<GroupVerifier, VerifyError> {
    if !raw.len().is_multiple_of(32) {
        return Err(VerifyError::BadCvList);
    }
    let cvs = raw
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32 bytes"))
        .collect();
    GroupVerifier::new(id, size, cvs)
}

/// Sends the request and reads the header; returns the announced size once it is acceptable.
async fn request(
    stream: &mut Stream,
    id: BlobId,
    limits: FetchLimits,
    io_timeout: Duration,
) -> Result<u64, TransferError> {
    let mut req = [0u8; REQUEST_LEN];
    req[..4].copy_from_slice(MAGIC);
    req[4..36].copy_from_slice(&id.0);
    req[36..].copy_from_slice(&limits.max_size.to_be_bytes());
    timed(io_timeout, "request", async {
        stream.write_all(&req).await?;
        stream.flush().await
    })
    .await?;

    let mut header = [0u8; HEADER_LEN];
    timed(io_timeout, "header", stream.read_exact(&mut header)).await?;
    parse_header(&header, id, limits)
}

/// Reads the CV list and content of a blob of `size` bytes after an OK header.
async fn receive<W: AsyncWrite + Unpin>(
    stream: &mut Stream,
    id: BlobId,
    size: u64,
    io_timeout: Duration,
    sink: &mut W,
) -> Result<FetchStats, TransferError> {
    let mut received = HEADER_LEN as u64;
    let mut raw = Vec::new();
    if tree::has_cv_list(size) {
        // Bounded by max_size: one CV per 64 KiB the requester agreed to receive.
        let n = tree::group_count(size) as usize;
        raw = vec![0u8; n * 32];
        timed(io_timeout, "group hashes", stream.read_exact(&mut raw)).await?;
        received += raw.len() as u64;
    }
    let mut verifier =
        cv_list_verifier(id, size, &raw).map_err(|_| TransferError::BadCvList { received })?;

    let mut buf = vec![0u8; GROUP_SIZE as usize];
    while !verifier.is_done() {
        let len = verifier.next_len() as usize;
        let group = &mut buf[..len];
        timed(io_timeout, "content", stream.read_exact(group)).await?;
        received += len as u64;
        if verifier.verify_next(group).is_err() {
            return Err(TransferError::BadGroup {
                index: verifier.next_group(),
                received,
            });
        }
        sink.write_all(group)
            .await
            .map_err(|e| TransferError::Sink(e.to_string()))?;
    }
    sink.flush()
        .await
        .map_err(|e| TransferError::Sink(e.to_string()))?;
    Ok(FetchStats { size, received })
}

/// Bounded cache of CV lists by identity, oldest evicted first.
#[derive(Debug, Default)]
struct CvCache {
    map: HashMap<BlobId, Arc<Vec<Cv>>>,
    order: VecDeque<BlobId>,
    bytes: usize,
}

impl CvCache {
    fn get(&self, id: &BlobId) -> Option<Arc<Vec<Cv>>> {
        self.map.get(id).cloned()
    }

    fn insert(&mut self, id: BlobId, cvs: Arc<Vec<Cv>>) {
        let size = cvs.len() * 32;
        if size > CV_CACHE_BYTES || self.map.contains_key(&id) {
            return;
        }
        while self.bytes + size > CV_CACHE_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(v) = self.map.remove(&old) {
                self.bytes -= v.len() * 32;
            }
        }
        self.bytes += size;
        self.order.push_back(id);
        self.map.insert(id, cvs);
    }
}

/// Serving-side settings.
#[derive(Clone)]
pub(crate) struct ServerConfig {
    pub store: Arc<dyn BlobStore>,
    pub total: usize,
    pub per_peer: usize,
    pub max_blob: u64,
    pub io_timeout: Duration,
    /// Where misbehaving requesters are reported (try_send: a full channel drops reports).
    pub strikes: mpsc::Sender<(PeerId, String)>,
}

/// Serves blobs from a store until the incoming-stream handle closes.
#[derive(Clone)]
pub(crate) struct Server {
    cfg: ServerConfig,
    total: Arc<Semaphore>,
    unserved: Arc<Semaphore>,
    per_peer: Arc<Mutex<HashMap<PeerId, usize>>>,
    cache: Arc<Mutex<CvCache>>,
}

/// One per-peer transfer slot, returned on drop.
struct PeerSlot {
    peer: PeerId,
    map: Arc<Mutex<HashMap<PeerId, usize>>>,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.peer);
            }
        }
    }
}

impl Server {
    pub(crate) fn new(cfg: ServerConfig) -> Self {
        Server {
            total: Arc::new(Semaphore::new(cfg.total.max(1))),
            unserved: Arc::new(Semaphore::new(MAX_UNSERVED)),
            per_peer: Arc::default(),
            cache: Arc::default(),
            cfg,
        }
    }

    fn peer_slot(&self, peer: PeerId) -> Option<PeerSlot> {
        let mut m = self.per_peer.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(peer).or_insert(0);
        if *n >= self.cfg.per_peer.max(1) {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peer,
            map: Arc::clone(&self.per_peer),
        })
    }

    pub(crate) async fn run(self, mut incoming: IncomingStreams) {
        while let Some((peer, stream)) = incoming.next().await {
            // Serving slots are few and taken only once a complete request is in: a peer
            // that opens streams and never sends holds at most an `unserved` permit (shared
            // by all peers, bounded, released at the short request deadline), never the
            // slots other requesters' downloads need.
            let Ok(unserved) = Arc::clone(&self.unserved).try_acquire_owned() else {
                continue;
            };
            tokio::spawn(self.clone().handle(peer, stream, unserved));
        }
    }

    async fn handle(self, peer: PeerId, mut stream: Stream, unserved: OwnedSemaphorePermit) {
        let t = self.cfg.io_timeout;
        let mut req = [0u8; REQUEST_LEN];
        if let Err(ServeError::Gone(why) | ServeError::Misbehaved(why)) = io_step(
            t.min(REQUEST_DEADLINE),
            "request",
            stream.read_exact(&mut req),
        )
        .await
        {
            tracing::debug!(%peer, why, "blob request never arrived");
            return;
        }
        let permit = Arc::clone(&self.total).try_acquire_owned().ok();
        let slot = permit.as_ref().and_then(|_| self.peer_slot(peer));
        let (Some(permit), Some(slot)) = (permit, slot) else {
            // Over a limit: say so briefly, still under the `unserved` permit.
            let _ = tokio::time::timeout(t, async {
                write_header(&mut stream, STATUS_BUSY, 0).await?;
                stream.close().await
            })
            .await;
            return;
        };
        drop(unserved);
        match serve(&self.cfg, &self.cache, &mut stream, &req).await {
            Ok(()) => {
                let _ = tokio::time::timeout(t, stream.close()).await;
            }
            Err(ServeError::Misbehaved(why)) => {
                tracing::debug!(%peer, why, "blob requester misbehaved");
                let _ = self.cfg.strikes.try_send((peer, why));
            }
            Err(ServeError::Gone(why)) => {
                tracing::debug!(%peer, why, "blob transfer ended early");
            }
        }
        drop((slot, permit));
    }
}

enum ServeError {
    /// The requester broke the protocol.
    Misbehaved(String),
    /// The stream failed or timed out, or the store failed: nobody's fault we can prove.
    Gone(String),
}

async fn write_header(stream: &mut Stream, status: u8, size: u64) -> io::Result<()> {
    let mut h = [0u8; HEADER_LEN];
    h[0] = status;
    h[1..].copy_from_slice(&size.to_be_bytes());
    stream.write_all(&h).await
}

async fn io_step<T>(
    d: Duration,
    what: &str,
    f: impl Future<Output = io::Result<T>>,
) -> Result<T, ServeError> {
    match tokio::time::timeout(d, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ServeError::Gone(format!("{what}: {e}"))),
        Err(_) => Err(ServeError::Gone(format!("{what}: timed out"))),
    }
}

/// Reads exactly `len` bytes of a blob, handing each full buffer to `f`.
async fn read_blob(
    reader: &mut (dyn AsyncRead + Send + Unpin),
    len: u64,
    buf: &mut [u8],
    mut f: impl FnMut(&[u8]),
) -> io::Result<()> {
    let mut left = len;
    while left > 0 {
        let n = (buf.len() as u64).min(left) as usize;
        reader.read_exact(&mut buf[..n]).await?;
        f(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

async fn compute_cvs(reader: &mut (dyn AsyncRead + Send + Unpin), len: u64) -> io::Result<Vec<Cv>> {
    // SERVE_BUFFER is a multiple of GROUP_SIZE, so groups never straddle two reads.
    let mut buf = vec![0u8; SERVE_BUFFER];
    let mut cvs = Vec::with_capacity(tree::group_count(len) as usize);
    read_blob(reader, len, &mut buf, |data| {
        for g in data.chunks(GROUP_SIZE as usize) {
            cvs.push(tree::group_cv(cvs.len() as u64, g));
        }
    })
    .await?;
    Ok(cvs)
}

async fn serve(
    cfg: &ServerConfig,
    cache: &Mutex<CvCache>,
    stream: &mut Stream,
    req: &[u8; REQUEST_LEN],
) -> Result<(), ServeError> {
    let t = cfg.io_timeout;
    let Some((id, max)) = parse_request(req) else {
        return Err(ServeError::Misbehaved("bad blob request magic".into()));
    };

    let opened = cfg
        .store
        .open(&id)
        .map_err(|e| ServeError::Gone(format!("store: {e}")));
    let Some(mut blob) = opened? else {
        io_step(t, "header", write_header(stream, STATUS_NOT_FOUND, 0)).await?;
        return Ok(());
    };
    let len = blob.len;
    if len > max || len > cfg.max_blob {
        io_step(t, "header", write_header(stream, STATUS_TOO_LARGE, len)).await?;
        return Ok(());
    }

    if !tree::has_cv_list(len) {
        // One group: read it, check it, send it.
        let mut data = vec![0u8; len as usize];
        let read = blob.reader.read_exact(&mut data).await;
        if read.is_err() || BlobId::of(&data) != id {
            tracing::warn!(%id, "blob store content does not match its identity");
            io_step(t, "header", write_header(stream, STATUS_ERROR, 0)).await?;
            return Ok(());
        }
        io_step(t, "header", write_header(stream, STATUS_OK, len)).await?;
        io_step(t, "content", stream.write_all(&data)).await?;
        return Ok(());
    }

    let cached = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&id);
    let cvs = match cached {
        Some(c) if c.len() as u64 == tree::group_count(len) => c,
        _ => {
            let cvs = compute_cvs(&mut *blob.reader, len)
                .await
                .map_err(|e| ServeError::Gone(format!("store read: {e}")))?;
            if tree::root_from_cvs(&cvs) != Some(id) {
                tracing::warn!(%id, "blob store content does not match its identity");
                io_step(t, "header", write_header(stream, STATUS_ERROR, 0)).await?;
                return Ok(());
            }
            let cvs = Arc::new(cvs);
            cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, Arc::clone(&cvs));
            // The first reader is spent: open again for the content pass.
            match cfg.store.open(&id) {
                Ok(Some(b)) if b.len == len => blob = b,
                _ => {
                    io_step(t, "header", write_header(stream, STATUS_ERROR, 0)).await?;
                    return Ok(());
                }
            }
            cvs
        }
    };

    io_step(t, "header", write_header(stream, STATUS_OK, len)).await?;
    let mut raw = Vec::with_capacity(cvs.len() * 32);
    for cv in cvs.iter() {
        raw.extend_from_slice(cv);
    }
    io_step(t, "group hashes", stream.write_all(&raw)).await?;

    let mut buf = vec![0u8; SERVE_BUFFER];
    let mut left = len;
    while left > 0 {
        let n = (buf.len() as u64).min(left) as usize;
        blob.reader
            .read_exact(&mut buf[..n])
            .await
            .map_err(|e| ServeError::Gone(format!("store read: {e}")))?;
        io_step(t, "content", stream.write_all(&buf[..n])).await?;
        left -= n as u64;
    }
    Ok(())
}
