//! The registry's HTTP connections: its own accept loop under axum's router, so that no
//! client can hold the server's connections, memory or time without bound.
//!
//! `axum::serve` has no header timeout and no connection cap: 300 half-sent requests stayed
//! open forever and 1,100 silent connections locked every client out. Here:
//!
//! - **Header timeout.** hyper's `header_read_timeout` runs from the moment the server
//!   starts reading a request head, which on a fresh connection is at once and on a
//!   keep-alive connection is when the previous response ended: a silent connection, a
//!   half-sent head and an idle keep-alive connection are all closed after
//!   [`ServerLimits::header_timeout`].
//! - **Body timeouts.** Every request body is wrapped in [`TimedBody`]: no byte for
//!   [`ServerLimits::idle_timeout`], or not complete within [`ServerLimits::body_timeout`]
//!   of the head, and reading it fails (the handler answers 408 and the connection closes).
//! - **Stalled writes.** [`StallIo`] fails a write that makes no progress for
//!   [`ServerLimits::idle_timeout`], so a client that stops reading a response cannot pin it.
//! - **Connection cap with eviction.** At most [`ServerLimits::max_connections`] (clamped
//!   below the process's open-file limit). When full, a new connection evicts the oldest
//!   connection that has no request in progress (silent, half-sent or idle), so a flood of
//!   idle connections delays a real client by at most one accept, never locks it out. Only
//!   when every connection is inside a request (each bounded by the timeouts above) is a
//!   new one closed at once.
//! - **Byte budgets.** [`Budgets`] holds two semaphores counted in KiB: bodies being
//!   spooled to disk (`upload_budget_bytes`; a request over it waits `upload_wait_secs`,
//!   then gets 503 with `Retry-After`) and bundles being sent (`send_budget_bytes`).
//! - **One bundle worker.** Work that holds whole bundles in memory (validating a
//!   publication, reading a stored bundle, rendering a review page) runs on one dedicated
//!   thread ([`BundleWorker`]), one job at a time, behind a bounded queue. Memory is then
//!   one job's worth (about twice the largest publication body: the spooled body and the
//!   decoded bundle, or the bundle and its parsed definition) rather than one per
//!   blocking thread; and since glibc gives each thread its own arena and raises its mmap
//!   threshold after the first large free, spreading such jobs over the blocking pool left
//!   freed bundles in a dozen arenas: 100 concurrent 10 MiB uploads peaked at 696 MiB that
//!   way, 150-170 MiB on one worker.
//!
//! With hyper's read buffer capped at [`READ_BUF`], these bound the server's memory;
//! SECURITY.md states the bound and the test that measures it.
//!
//! The loop is mini-redis shaped: it takes a bound listener and a shutdown future; on
//! shutdown it stops accepting, lets connections finish their request for
//! [`SHUTDOWN_GRACE`], then drops them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

use super::service::RequestError;

/// Default cap on open connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default time a client has to send a whole request head (and to start the next one on a
/// keep-alive connection).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a whole request body may take, from its head.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(120);
/// Default longest pause inside a body, or in a response the client does not read.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Default budget of request bodies being spooled at once.
pub const DEFAULT_UPLOAD_BUDGET: u64 = 1024 * 1024 * 1024;
/// Default wait for upload budget before a 503.
pub const DEFAULT_UPLOAD_WAIT: Duration = Duration::from_secs(5);
/// Jobs that may wait for the bundle worker; more get 503.
pub const WORKER_QUEUE: usize = 64;
/// Default budget of bundle bytes being sent at once.
pub const DEFAULT_SEND_BUDGET: u64 = 64 * 1024 * 1024;
/// hyper's read buffer per connection (its default is ~400 KiB).
pub const READ_BUF: usize = 64 * 1024;
/// How long connections may finish their request after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Open files kept free for the database, spooled bodies and the log when clamping the
/// connection cap to the open-file limit.
const FD_RESERVE: usize = 256;

/// The `[server]` table of `registry.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    max_connections: Option<usize>,
    header_timeout_secs: Option<u64>,
    body_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    upload_budget_bytes: Option<u64>,
    upload_wait_secs: Option<u64>,
    send_budget_bytes: Option<u64>,
}

/// The HTTP front end's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Most open connections.
    pub max_connections: usize,
    /// Time to send a request head.
    pub header_timeout: Duration,
    /// Time to send a whole body.
    pub body_timeout: Duration,
    /// Longest pause in a body or in reading a response.
    pub idle_timeout: Duration,
    /// Request-body bytes spooled at once.
    pub upload_budget_bytes: u64,
    /// Wait for upload budget before answering 503.
    pub upload_wait: Duration,
    /// Bundle bytes being sent at once.
    pub send_budget_bytes: u64,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            upload_budget_bytes: DEFAULT_UPLOAD_BUDGET,
            upload_wait: DEFAULT_UPLOAD_WAIT,
            send_budget_bytes: DEFAULT_SEND_BUDGET,
        }
    }
}

impl ServerLimits {
    /// Limits for a local operator endpoint (`/metrics`, `/healthz` of the registry and the
    /// provider node): a handful of scrapers, not the public.
    pub fn local() -> ServerLimits {
        ServerLimits {
            max_connections: 64,
            ..ServerLimits::default()
        }
    }

    /// The limits a `[server]` table describes (defaults for what it omits).
    pub fn from_file(f: &ServerFile) -> Result<ServerLimits, String> {
        let d = ServerLimits::default();
        let secs = |v: Option<u64>, def: Duration, name: &str| match v {
            Some(0) => Err(format!("[server] {name} must be at least 1")),
            Some(s) => Ok(Duration::from_secs(s)),
            None => Ok(def),
        };
        let positive = |v: Option<u64>, def: u64, name: &str| match v {
            Some(0) => Err(format!("[server] {name} must be at least 1")),
            Some(b) => Ok(b),
            None => Ok(def),
        };
        Ok(ServerLimits {
            max_connections: match f.max_connections {
                Some(0) => return Err("[server] max_connections must be at least 1".into()),
                Some(n) => n,
                None => d.max_connections,
            },
            header_timeout: secs(
                f.header_timeout_secs,
                d.header_timeout,
                "header_timeout_secs",
            )?,
            body_timeout: secs(f.body_timeout_secs, d.body_timeout, "body_timeout_secs")?,
            idle_timeout: secs(f.idle_timeout_secs, d.idle_timeout, "idle_timeout_secs")?,
            upload_budget_bytes: positive(
                f.upload_budget_bytes,
                d.upload_budget_bytes,
                "upload_budget_bytes",
            )?,
            upload_wait: match f.upload_wait_secs {
                Some(s) => Duration::from_secs(s),
                None => d.upload_wait,
            },
            send_budget_bytes: positive(
                f.send_budget_bytes,
                d.send_budget_bytes,
                "send_budget_bytes",
            )?,
        })
    }

    /// The connection cap actually used: the configured one, clamped below the process's
    /// open-file limit so that accepting can never starve the database of descriptors.
    pub fn effective_max_connections(&self) -> usize {
        match open_file_limit() {
            Some(limit) => self
                .max_connections
                .min(limit.saturating_sub(FD_RESERVE).max(limit / 2).max(1)),
            None => self.max_connections,
        }
    }
}

/// The soft open-file limit, from `/proc/self/limits` (Linux).
fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The TCP peer of a request, inserted by the accept loop as a request extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// A KiB-counted budget.
#[derive(Debug)]
struct Budget {
    sem: Arc<Semaphore>,
    total_kib: u32,
}

impl Budget {
    fn new(bytes: u64) -> Budget {
        let total_kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1);
        Budget {
            sem: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    fn kib(&self, bytes: u64) -> u32 {
        u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total_kib)
    }

    /// Waits at most `wait` for `bytes` (a request bigger than the whole budget takes all
    /// of it, so it still runs, alone).
    async fn take(&self, bytes: u64, wait: Duration) -> Option<OwnedSemaphorePermit> {
        let n = self.kib(bytes);
        tokio::time::timeout(wait, self.sem.clone().acquire_many_owned(n))
            .await
            .ok()?
            .ok()
    }

    fn in_use(&self) -> u64 {
        u64::from(self.total_kib).saturating_sub(self.sem.available_permits() as u64) * 1024
    }
}

/// The byte budgets handlers take before they hold bodies or bundles.
#[derive(Debug)]
pub struct Budgets {
    upload: Budget,
    send: Budget,
    upload_wait: Duration,
}

/// How long work on bundles (validation, pages) may wait for the worker before a 503:
/// longer than an upload's wait, since the body is already here.
pub const WORK_WAIT: Duration = Duration::from_secs(60);

type Job = Box<dyn FnOnce() + Send>;

/// The one thread that runs work holding whole bundles, behind a queue of
/// [`WORKER_QUEUE`] places.
#[derive(Debug)]
pub struct BundleWorker {
    tx: std::sync::mpsc::SyncSender<Job>,
    places: Arc<Semaphore>,
}

impl BundleWorker {
    /// Starts the worker thread; it ends when the worker is dropped.
    pub fn start() -> BundleWorker {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(WORKER_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("registry-bundles".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    // A panicking job fails its own request (its reply is dropped), not
                    // every later one.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            });
        if let Err(e) = spawned {
            eprintln!("warning: starting the bundle worker failed: {e}");
        }
        BundleWorker {
            tx,
            places: Arc::new(Semaphore::new(WORKER_QUEUE)),
        }
    }

    /// Runs `f` on the worker; 503 if the queue stays full for [`WORK_WAIT`].
    pub async fn run<T, F>(&self, f: F) -> Result<T, RequestError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, RequestError> + Send + 'static,
    {
        let place = tokio::time::timeout(WORK_WAIT, self.places.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| Budgets::busy("too much work on bundles queued", 10))?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _place = place;
            let _ = reply.send(f());
        });
        // A place was free, so the channel has room.
        self.tx
            .try_send(job)
            .map_err(|_| RequestError::Internal("the bundle worker is gone".into()))?;
        answer
            .await
            .map_err(|_| RequestError::Internal("the bundle worker failed this request".into()))?
    }
}

impl Budgets {
    /// Budgets of the given limits.
    pub fn new(limits: &ServerLimits) -> Budgets {
        Budgets {
            upload: Budget::new(limits.upload_budget_bytes),
            send: Budget::new(limits.send_budget_bytes),
            upload_wait: limits.upload_wait,
        }
    }

    fn busy(what: &str, retry_after: u64) -> RequestError {
        RequestError::Busy {
            message: format!("the registry is busy ({what}); retry in {retry_after} s"),
            retry_after,
        }
    }

    /// Room to spool a body of `bytes`.
    pub async fn upload(&self, bytes: u64) -> Result<OwnedSemaphorePermit, RequestError> {
        self.upload
            .take(bytes, self.upload_wait)
            .await
            .ok_or_else(|| Budgets::busy("too many uploads in flight", 5))
    }

    /// Room to send `bytes` of a bundle.
    pub async fn send(&self, bytes: u64) -> Result<OwnedSemaphorePermit, RequestError> {
        self.send
            .take(bytes, self.upload_wait)
            .await
            .ok_or_else(|| Budgets::busy("too many bundle downloads in flight", 5))
    }

    /// Bytes of upload budget in use (for tests and figures).
    pub fn uploads_in_flight(&self) -> u64 {
        self.upload.in_use()
    }
}

/// A connection's place in the table: when it came, and how many requests it is inside.
#[derive(Debug)]
struct Slot {
    accepted: Instant,
    /// Requests in progress; [`EVICTED`] once chosen for eviction.
    active: AtomicUsize,
    evict: Notify,
}

const EVICTED: usize = usize::MAX;

impl Slot {
    fn begin(&self) {
        let _ = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n != EVICTED).then_some(n + 1)
            });
    }

    fn end(&self) {
        let _ = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n != EVICTED && n > 0).then(|| n - 1)
            });
    }
}

/// Marks a request in progress on its connection until the response body is gone.
#[derive(Debug)]
struct Active(Arc<Slot>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.end();
    }
}

type Table = Arc<Mutex<HashMap<u64, Arc<Slot>>>>;

fn lock(t: &Table) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// Evicts the oldest connection without a request in progress; false if there is none.
fn evict_oldest_idle(map: &mut HashMap<u64, Arc<Slot>>) -> bool {
    let mut idle: Vec<(Instant, u64)> = map
        .iter()
        .filter(|(_, s)| s.active.load(Ordering::Acquire) == 0)
        .map(|(id, s)| (s.accepted, *id))
        .collect();
    idle.sort_unstable();
    for (_, id) in idle {
        let slot = &map[&id];
        if slot
            .active
            .compare_exchange(0, EVICTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            slot.evict.notify_one();
            map.remove(&id);
            return true;
        }
    }
    false
}

/// Serves `router` on `listener` until `shutdown` completes, within `limits`.
pub async fn serve<F>(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let max = limits.effective_max_connections();
    let table: Table = Arc::new(Mutex::new(HashMap::new()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let limits = Arc::new(limits);
    tokio::pin!(shutdown);
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => r,
        };
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors or buffers: free an idle connection and back off
                // briefly instead of spinning on the error.
                evict_oldest_idle(&mut lock(&table));
                eprintln!("warning: accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = {
            let mut map = lock(&table);
            if map.len() >= max && !evict_oldest_idle(&mut map) {
                // Every connection is inside a request, each bounded by the timeouts.
                drop(stream);
                continue;
            }
            let slot = Arc::new(Slot {
                accepted: Instant::now(),
                active: AtomicUsize::new(0),
                evict: Notify::new(),
            });
            next_id += 1;
            map.insert(next_id, slot.clone());
            slot
        };
        tasks.spawn(connection(
            stream,
            peer,
            router.clone(),
            limits.clone(),
            slot,
            (table.clone(), next_id),
            stop_rx.clone(),
        ));
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    Ok(())
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Arc<ServerLimits>,
    slot: Arc<Slot>,
    (table, id): (Table, u64),
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(StallIo::new(stream, limits.idle_timeout));
    let svc_slot = slot.clone();
    let svc_limits = limits.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        svc_slot.begin();
        let active = Active(svc_slot.clone());
        let (idle, total) = (svc_limits.idle_timeout, svc_limits.body_timeout);
        let mut req = req.map(|b| Body::new(TimedBody::new(b, idle, total)));
        req.extensions_mut().insert(Peer(peer));
        let mut router = router.clone();
        async move {
            let resp = tower_service::Service::call(&mut router, req).await?;
            Ok::<_, Infallible>(resp.map(|b| Guarded::body(b, active)))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(READ_BUF)
        .keep_alive(true);
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        // Dropping the connection closes the socket.
        _ = slot.evict.notified() => {}
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await;
        }
    }
    lock(&table).remove(&id);
}

/// Why reading a request body failed on time.
#[derive(Debug, thiserror::Error)]
#[error("request body timed out: {0}")]
pub struct BodyTimeout(&'static str);

/// Whether `e` (or its cause) is a [`BodyTimeout`].
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<BodyTimeout>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A request body that fails when the client pauses too long or takes too long overall.
#[derive(Debug)]
pub struct TimedBody {
    inner: Incoming,
    idle: Duration,
    idle_sleep: Pin<Box<Sleep>>,
    idle_armed: bool,
    deadline: Pin<Box<Sleep>>,
}

impl TimedBody {
    fn new(inner: Incoming, idle: Duration, total: Duration) -> TimedBody {
        TimedBody {
            inner,
            idle,
            idle_sleep: Box::pin(tokio::time::sleep(idle)),
            idle_armed: false,
            deadline: Box::pin(tokio::time::sleep(total)),
        }
    }
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(f) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.idle_armed = false;
            return Poll::Ready(f.map(|r| r.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(
                Err(BodyTimeout("the whole body took too long").into()),
            ));
        }
        if !this.idle_armed {
            let at = tokio::time::Instant::now() + this.idle;
            this.idle_sleep.as_mut().reset(at);
            this.idle_armed = true;
        }
        if this.idle_sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyTimeout("the client stopped sending").into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that holds `guard` until it has been sent (or dropped): the request's
/// place as "in progress" on its connection, or a budget permit.
#[derive(Debug)]
pub struct Guarded<G> {
    inner: Body,
    _guard: G,
}

impl<G: Send + Unpin + 'static> Guarded<G> {
    /// `inner`, holding `guard` while it is sent.
    pub fn body(inner: Body, guard: G) -> Body {
        Body::new(Guarded {
            inner,
            _guard: guard,
        })
    }
}

impl<G: Unpin> http_body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A TCP stream whose writes fail after `limit` without progress: a client that stops
/// reading its response cannot hold the connection (and what the response pins) forever.
#[derive(Debug)]
pub struct StallIo {
    inner: TcpStream,
    limit: Duration,
    stall: Pin<Box<Sleep>>,
    armed: bool,
}

impl StallIo {
    fn new(inner: TcpStream, limit: Duration) -> StallIo {
        StallIo {
            inner,
            limit,
            stall: Box::pin(tokio::time::sleep(limit)),
            armed: false,
        }
    }

    fn progress<T>(&mut self, cx: &mut Context<'_>, p: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if p.is_ready() {
            self.armed = false;
            return p;
        }
        if !self.armed {
            let at = tokio::time::Instant::now() + self.limit;
            self.stall.as_mut().reset(at);
            self.armed = true;
        }
        if self.stall.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for StallIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(cx, p)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(cx, p)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(cx, p)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progress(cx, p)
    }
}
