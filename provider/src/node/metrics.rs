//! The node's `/metrics` (Prometheus/OpenMetrics text) and `/healthz`, on a local address
//! (`[metrics] listen`, `provider run --metrics-listen`).
//!
//! Almost everything is read at scrape time from what the node keeps anyway (the job store
//! for jobs by status and run durations, the network for connected peers, the registry
//! view for the verified log size, the age of its last sync and what checkpoint gossip
//! taught it), so the job handler only has to count transferred bytes. The endpoint is
//! served by the registry's bounded accept loop ([`pinfold_registry::conn`]): header
//! timeouts and a connection cap, since even a local port can be reached by whatever else
//! runs on the host.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::NodeError;
use super::blobs::NodeBlobs;
use super::jobs::JobStore;
use super::trust::RegistryView;

/// The content type of the OpenMetrics text `prometheus-client` writes (Prometheus reads it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds, in seconds, of the run-duration histogram's buckets: tasks take from
/// milliseconds (a small wasm module) to the 24 h a manifest's timeout allows.
const DURATION_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
];

/// Longest a scrape waits for the network's peer count, so a busy event loop cannot hang
/// the scraper.
const PEERS_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes fetched from requestors (bundles and inputs); counted by the job handler.
#[derive(Debug, Default)]
pub struct Traffic {
    bytes_in: AtomicU64,
}

impl Traffic {
    /// Counts `n` bytes received.
    pub fn received(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }
}

/// What a scrape reads.
pub(super) struct Sources {
    pub traffic: Arc<Traffic>,
    pub blobs: Arc<NodeBlobs>,
    /// A second connection to the node's job store (WAL: reads do not block its writes).
    pub store: JobStore,
    pub client: pinfold_net::Client,
    pub registry: Option<Arc<RegistryView>>,
    pub started: Instant,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

/// Renders every metric; a source that fails is left out (and logged) rather than failing
/// the scrape, so one broken part does not blind the operator to the rest.
pub(super) async fn render(src: &Sources) -> String {
    let mut reg = Registry::with_prefix("pinfold");

    let jobs = Family::<Vec<(String, String)>, Gauge>::default();
    match src.store.counts() {
        Ok(rows) => {
            for (state, status, n) in rows {
                let labels = vec![
                    ("state".to_string(), state),
                    ("status".to_string(), status.unwrap_or_default()),
                ];
                jobs.get_or_create(&labels).set(n as i64);
            }
        }
        Err(e) => tracing::warn!("metrics: job counts: {e}"),
    }
    reg.register(
        "jobs",
        "Jobs in the job store by stage and run status (status is empty until a run finishes)",
        jobs,
    );

    let durations = Histogram::new(DURATION_BUCKETS);
    match src.store.run_durations_ms() {
        Ok(ms) => ms
            .into_iter()
            .for_each(|m| durations.observe(m as f64 / 1000.0)),
        Err(e) => tracing::warn!("metrics: run durations: {e}"),
    }
    reg.register(
        "job_run_duration_seconds",
        "How long finished runs took, from running to finished, over the jobs the store keeps",
        durations,
    );

    let bytes = Family::<Vec<(String, String)>, Counter>::default();
    bytes
        .get_or_create(&vec![("direction".into(), "in".into())])
        .inc_by(src.traffic.bytes_in.load(Ordering::Relaxed));
    bytes
        .get_or_create(&vec![("direction".into(), "out".into())])
        .inc_by(src.blobs.served_bytes());
    reg.register(
        "transfer_bytes",
        "Bytes received from requestors (bundles, inputs) and served to them (outputs, stdio)",
        bytes,
    );

    match tokio::time::timeout(PEERS_TIMEOUT, src.client.connected_peers()).await {
        Ok(Ok(p)) => {
            let g = Gauge::<i64>::default();
            g.set(p.len() as i64);
            reg.register("peers", "Peers connected now", g);
        }
        Ok(Err(e)) => tracing::warn!("metrics: connected peers: {e}"),
        Err(_) => tracing::warn!("metrics: connected peers: no answer within {PEERS_TIMEOUT:?}"),
    }

    if let Some(view) = &src.registry
        && let Some((size, age)) = view.sync_status()
    {
        let g = Gauge::<i64>::default();
        g.set(size as i64);
        reg.register(
            "registry_log_size",
            "Entries in the registry log as of the node's last verified sync",
            g,
        );
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(age.as_secs_f64());
        reg.register(
            "registry_sync_age_seconds",
            "Time since the node last verified the registry log",
            g,
        );
    }

    if let Some(view) = &src.registry {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(view.gossiped_tree_size()).unwrap_or(i64::MAX));
        reg.register(
            "registry_gossiped_tree_size",
            "Largest tree size of a checkpoint gossiped by a peer that the node verified as one history with its view (0 until one)",
            g,
        );
        let c = Counter::<u64>::default();
        c.inc_by(view.gossip_notes_received());
        reg.register(
            "registry_gossiped_checkpoints",
            "Registry checkpoint notes received over gossip",
            c,
        );
    }

    let g = Gauge::<f64, AtomicU64>::default();
    g.set(src.started.elapsed().as_secs_f64());
    reg.register("uptime_seconds", "Time since the node started", g);

    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg) {
        tracing::warn!("metrics: encoding: {e}");
    }
    out
}

async fn metrics(State(src): State<Arc<Sources>>) -> Response {
    let body = render(&src).await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

/// Healthy while the job store answers and the network's event loop responds.
async fn healthz(State(src): State<Arc<Sources>>) -> Response {
    if let Err(e) = src.store.counts() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("job store: {e}\n")).into_response();
    }
    match tokio::time::timeout(PEERS_TIMEOUT, src.client.connected_peers()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ok\n").into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "network: not answering\n").into_response(),
    }
}

/// Binds `addr` and serves `/metrics` and `/healthz` until `shutdown` completes; returns
/// the bound address (port 0 picks one).
pub(super) async fn start(
    addr: SocketAddr,
    src: Sources,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<SocketAddr, NodeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| NodeError::Config(format!("metrics.listen {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| NodeError::Io(format!("metrics listener: {e}")))?;
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(Arc::new(src));
    let limits = pinfold_registry::conn::ServerLimits::local();
    let mut stop = shutdown;
    tokio::spawn(async move {
        let until = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = pinfold_registry::conn::serve(listener, router, limits, until).await {
            tracing::warn!("metrics endpoint stopped: {e}");
        }
    });
    Ok(bound)
}
