//! The registry's `/metrics` (Prometheus/OpenMetrics text) and `/healthz`, served on their
//! own local address (`task-defs serve --metrics-listen`) so that exposing the registry's
//! API publicly never exposes its operational figures too.
//!
//! Read at scrape time from the registry itself: the log size and the age of the latest
//! signed checkpoint (the resign loop refreshes it every `checkpoint_interval`, so an old
//! one means the loop or the signer is stuck, which is also what `/healthz` reports).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use super::unix_now;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry as Metrics;

use super::service::Registry;

/// The content type of the OpenMetrics text `prometheus-client` writes (Prometheus reads it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A checkpoint older than this many re-signing intervals makes `/healthz` fail.
const STALE_INTERVALS: u32 = 3;

struct Observed {
    registry: Arc<Registry>,
    started: Instant,
}

/// Every metric of `registry` as OpenMetrics text.
pub fn render(registry: &Registry, started: Instant) -> String {
    let mut m = Metrics::with_prefix("pinfold_registry");
    let cp = registry.checkpoint();
    let g = Gauge::<i64>::default();
    g.set(cp.size as i64);
    m.register("log_size", "Entries in the transparency log", g);
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(unix_now().saturating_sub(cp.time) as f64);
    m.register(
        "checkpoint_age_seconds",
        "Time since the latest checkpoint was signed (re-signed every checkpoint interval)",
        g,
    );
    let g = Gauge::<i64>::default();
    g.set(registry.settings().witnesses.len() as i64);
    m.register("witnesses", "Witnesses asked to cosign each checkpoint", g);
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(started.elapsed().as_secs_f64());
    m.register("uptime_seconds", "Time since the server started", g);
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &m) {
        eprintln!("warning: encoding metrics: {e}");
    }
    out
}

async fn metrics(State(o): State<Arc<Observed>>) -> Response {
    let body = render(&o.registry, o.started);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

async fn healthz(State(o): State<Arc<Observed>>) -> Response {
    let age = unix_now().saturating_sub(o.registry.checkpoint().time);
    let limit = o.registry.settings().checkpoint_interval.as_secs() * u64::from(STALE_INTERVALS);
    if age > limit.max(1) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "checkpoint is {age}s old (re-signed every {}s)\n",
                limit / 3
            ),
        )
            .into_response();
    }
    (StatusCode::OK, "ok\n").into_response()
}

/// The router serving `/metrics` and `/healthz` for `registry`.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(Arc::new(Observed {
            registry,
            started: Instant::now(),
        }))
}

/// Serves [`router`] on `listener` until `shutdown`, within small limits (scrapers, not
/// the public).
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    shutdown: F,
) -> std::io::Result<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let limits = super::conn::ServerLimits::local();
    super::conn::serve(listener, router(registry), limits, shutdown).await
}
