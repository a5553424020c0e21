//! The registry's HTTP front end: JSON API, review web pages, checkpoint re-signing.
//!
//! Routes (all JSON unless noted; errors are `{"error": "..."}` with a 4xx or 5xx status):
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /api/v1/info` | origin, log key, roster, threshold, size (informational) |
//! | `GET /api/v1/checkpoint` | the latest signed checkpoint (text/plain, C2SP signed note) with the witness cosignatures gathered for it |
//! | `GET /api/v1/checkpoint/cosigned[?min=K]` | the newest checkpoint at least K (default 1) witnesses cosigned, with their cosignatures (404 before there is one) |
//! | `GET /api/v1/entries?start=&end=` | leaves `[start, end)`, at most 4096 per page, base64 |
//! | `GET /api/v1/proof/inclusion?index=&size=` | inclusion proof |
//! | `GET /api/v1/proof/consistency?old=&new=` | consistency proof |
//! | `GET /api/v1/definitions?status=&limit=&cursor=&order=&hidden=` | one page of definitions (server-view status); `next_cursor` continues |
//! | `POST /api/v1/definitions` | publish: [`super::api::PublishRequest`] → [`super::api::AppendResponse`] |
//! | `GET /api/v1/definitions/{id}` | manifest summary, files, footprint, reviews, previous approved |
//! | `GET /api/v1/definitions/{id}/bundle` | the bundle (application/x-tar), re-verified |
//! | `POST /api/v1/reviews` | a signed [`Review`] → [`super::api::AppendResponse`] |
//! | `GET /api/v1/revocations` | every revocation, newest first |
//! | `GET /[?cursor=&hidden=true]` | HTML: pending queue (oldest first, paged) and recent decisions |
//! | `GET /definitions/{id}` | HTML: the review page of one definition |
//! | `GET /revocations` | HTML: revocation history |
//!
//! Request bodies are capped (64 KiB, publications by the bundle cap) and timed
//! ([`super::conn`]); publications are streamed to a file under `DATA/uploads/` within a
//! global byte budget, never buffered in memory whole. Registry work runs on the blocking
//! pool because SQLite calls block; work on whole bundles (validation, stored-bundle reads,
//! review pages) runs on the one bundle worker. Connections, timeouts, budgets and the
//! worker are [`super::conn`]'s.
//!
//! Pages print CLI commands with the registry's URL: the configured `public_url`, else the
//! address the server listens on, never the request's `Host` header, which the client
//! chooses (a forged `Host` once made pages tell reviewers to use `http://evil.example`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use http_body_util::BodyExt as _;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt as _;

use super::api::{
    ConsistencyQuery, CosignedQuery, ErrorBody, InclusionQuery, ListQuery, RangeQuery,
};
use super::conn::{self, Budgets, BundleWorker, Guarded, Peer};
use super::service::{Registry, RequestError};
use super::web;
use pinfold_tlog::Review;
use task_defs::identity::DefinitionId;

/// The cap on request bodies other than publications.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// What every handler shares.
#[derive(Debug)]
pub struct App {
    /// The registry.
    pub registry: Arc<Registry>,
    /// Byte budgets for bodies and bundles.
    pub budgets: Budgets,
    /// The thread that runs work holding whole bundles.
    pub worker: BundleWorker,
    /// The base URL pages print in commands.
    pub base_url: String,
}

type Shared = Arc<App>;

/// An error response: the status and `{"error": message}`.
#[derive(Debug)]
struct ApiError(StatusCode, String, Option<u64>);

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        ApiError(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.to_string(),
            e.retry_after(),
        )
    }
}

fn retry_after_header(r: &mut Response, secs: Option<u64>) {
    if let Some(secs) = secs {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, axum::Json(ErrorBody { error: self.1 })).into_response();
        retry_after_header(&mut r, self.2);
        r
    }
}

fn bad_request(msg: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg, None)
}

type ApiResult<T> = Result<T, ApiError>;

async fn blocking<T, F>(f: F) -> Result<T, RequestError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, RequestError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(RequestError::Internal(format!("request task failed: {e}"))))
}

fn json<T: serde::Serialize>(v: T) -> Response {
    axum::Json(v).into_response()
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(v)| v).map_err(|e| bad_request(e.body_text()))
}

fn id_param(p: Result<Path<String>, PathRejection>) -> ApiResult<DefinitionId> {
    let Path(s) = p.map_err(|e| bad_request(e.body_text()))?;
    s.parse()
        .map_err(|e: task_defs::identity::ParseIdError| bad_request(e.to_string()))
}

fn body<T: DeserializeOwned>(b: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    let bytes = b.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError(status, "request body exceeds the size limit".into(), None)
        } else if conn::is_body_timeout(&e) {
            RequestError::Timeout(e.body_text()).into()
        } else {
            ApiError(status, e.body_text(), None)
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| bad_request(format!("malformed request body: {e}")))
}

async fn info(State(app): State<Shared>) -> ApiResult<Response> {
    let r = app.registry.clone();
    Ok(json(blocking(move || Ok(r.info())).await?))
}

async fn checkpoint(State(app): State<Shared>) -> ApiResult<Response> {
    let r = app.registry.clone();
    let note = blocking(move || Ok(r.checkpoint_note())).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        note,
    )
        .into_response())
}

async fn cosigned_checkpoint(
    State(app): State<Shared>,
    q: Result<Query<CosignedQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let min = query(q)?.min.unwrap_or(1);
    let r = app.registry.clone();
    let note = blocking(move || {
        r.cosigned_note(min).ok_or_else(|| {
            RequestError::NotFound(format!(
                "no checkpoint of this log is cosigned by {min} witnesses yet"
            ))
        })
    })
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        note,
    )
        .into_response())
}

async fn entries(
    State(app): State<Shared>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    let r = app.registry.clone();
    Ok(json(blocking(move || r.entries(q.start, q.end)).await?))
}

async fn inclusion(
    State(app): State<Shared>,
    q: Result<Query<InclusionQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    let r = app.registry.clone();
    Ok(json(blocking(move || r.inclusion(q.index, q.size)).await?))
}

async fn consistency(
    State(app): State<Shared>,
    q: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    let r = app.registry.clone();
    Ok(json(blocking(move || r.consistency(q.old, q.new)).await?))
}

async fn list(
    State(app): State<Shared>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    let r = app.registry.clone();
    Ok(json(blocking(move || r.list(&q)).await?))
}

/// The largest publication request body: the bundle cap in base64 plus the small rest.
pub fn publish_limit(registry: &Registry) -> u64 {
    registry.settings().max_bundle_bytes.div_ceil(3) * 4 + MAX_REQUEST_BYTES as u64
}

/// Receives a publication body into a file under `DATA/uploads/`, counting it against
/// `limit` as it arrives.
async fn spool(body: Body, file: &tempfile::NamedTempFile, limit: u64) -> Result<(), RequestError> {
    let f = file
        .reopen()
        .map_err(|e| RequestError::Internal(e.to_string()))?;
    let mut f = tokio::fs::File::from_std(f);
    // tokio's file buffers up to 2 MiB per write by default; 100 uploads would hold 200 MiB.
    f.set_max_buf_size(conn::READ_BUF);
    let mut body = body;
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if conn::is_body_timeout(&e) {
                RequestError::Timeout(e.to_string())
            } else {
                RequestError::BadRequest(format!("reading the request body: {e}"))
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        n += data.len() as u64;
        if n > limit {
            return Err(too_big(limit));
        }
        f.write_all(&data)
            .await
            .map_err(|e| RequestError::Internal(format!("spooling the request body: {e}")))?;
    }
    f.flush()
        .await
        .map_err(|e| RequestError::Internal(format!("spooling the request body: {e}")))?;
    Ok(())
}

fn too_big(limit: u64) -> RequestError {
    RequestError::TooLarge(format!(
        "request body exceeds the registry's publish limit of {limit} bytes \
         (a bundle of at most max_bundle_bytes, base64, plus the signed publication)"
    ))
}

/// Reads and discards at most `max` body bytes (within the body timeouts).
async fn drain(mut body: Body, max: u64) {
    let mut n = 0u64;
    while n < max {
        match body.frame().await {
            Some(Ok(f)) => n += f.data_ref().map_or(0, |d| d.len() as u64),
            _ => return,
        }
    }
}

async fn publish(
    State(app): State<Shared>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    b: Body,
) -> ApiResult<Response> {
    let r = app.registry.clone();
    let limit = publish_limit(&r);
    // Refusals that need no body come first. hyper sends `100 Continue` only once the body
    // is read, so a client that asked for it never uploads a refused publication; one that
    // did not is already sending, and closing on it would reset the connection before it
    // reads the answer, so its body is read and dropped (at most the publish limit, within
    // the body timeouts) before the refusal.
    let expects_continue = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let early = async {
        if let Some(Extension(Peer(addr))) = peer {
            r.admit_publisher_ip(addr.ip())?;
        }
        let declared = match headers.get(header::CONTENT_LENGTH) {
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| RequestError::BadRequest("malformed content-length".into()))?,
            ),
            None => None,
        };
        if declared.is_some_and(|n| n > limit) {
            return Err(too_big(limit));
        }
        app.budgets.upload(declared.unwrap_or(limit)).await
    };
    let _upload = match early.await {
        Ok(ok) => ok,
        Err(e) => {
            if !expects_continue {
                drain(b, limit).await;
            }
            return Err(e.into());
        }
    };
    let dir = r.uploads_dir();
    let file = tempfile::Builder::new()
        .prefix("publish-")
        .tempfile_in(&dir)
        .map_err(|e| RequestError::Internal(format!("{}: {e}", dir.display())))?;
    spool(b, &file, limit).await?;
    // Parsing holds the body and the decoded bundle, then the bundle and the definition:
    // about twice the body at once (see `Registry::publish_spooled`), so it runs on the worker.
    let resp = app
        .worker
        .run(move || {
            let resp = r.publish_spooled(file.path());
            drop(file);
            resp
        })
        .await?;
    let status = if resp.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(resp)).into_response())
}

async fn review(
    State(app): State<Shared>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req: Review = body(b)?;
    let r = app.registry.clone();
    let resp = blocking(move || r.review(&req)).await?;
    let status = if resp.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(resp)).into_response())
}

async fn stored_size(app: &App, id: DefinitionId) -> Result<u64, RequestError> {
    let r = app.registry.clone();
    blocking(move || r.summary_of(&id).map(|s| s.size)).await
}

async fn detail(
    State(app): State<Shared>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let id = id_param(p)?;
    let r = app.registry.clone();
    Ok(json(app.worker.run(move || r.detail(&id)).await?))
}

async fn bundle(
    State(app): State<Shared>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let id = id_param(p)?;
    let size = stored_size(&app, id).await?;
    // The bytes stay in memory until the client has them: budget them until then.
    let send = app.budgets.send(size).await?;
    let r = app.registry.clone();
    let bytes = app
        .worker
        .run(move || r.bundle(&id).map(|(bytes, _)| bytes))
        .await?;
    let mut resp = Response::new(Guarded::body(Body::from(bytes), send));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(resp)
}

async fn revocations(State(app): State<Shared>) -> ApiResult<Response> {
    let r = app.registry.clone();
    Ok(json(blocking(move || r.revocations()).await?))
}

/// Headers of every page: no script may run and nothing may be loaded from elsewhere, so
/// even an escaping bug could not turn author text into active content.
const PAGE_HEADERS: [(header::HeaderName, &str); 3] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
];

fn html_error(e: RequestError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (
        status,
        PAGE_HEADERS,
        Html(web::error_page(status.as_u16(), &e.to_string())),
    )
        .into_response();
    retry_after_header(&mut r, e.retry_after());
    r
}

fn html(r: Result<String, RequestError>) -> Response {
    match r {
        Ok(page) => (PAGE_HEADERS, Html(page)).into_response(),
        Err(e) => html_error(e),
    }
}

async fn queue_page(
    State(app): State<Shared>,
    q: Result<Query<web::QueueQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return html_error(RequestError::BadRequest(e.body_text())),
    };
    let r = app.registry.clone();
    html(blocking(move || web::queue_page(&r, &q)).await)
}

async fn definition_page(
    State(app): State<Shared>,
    p: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match id_param(p) {
        Ok(id) => id,
        Err(ApiError(_, msg, _)) => return html_error(RequestError::BadRequest(msg)),
    };
    // The page reads this bundle and the last approved one.
    let r = app.registry.clone();
    let base = app.base_url.clone();
    html(
        app.worker
            .run(move || web::definition_page(&r, &id, &base))
            .await,
    )
}

async fn revocations_page(State(app): State<Shared>) -> Response {
    let r = app.registry.clone();
    html(blocking(move || web::revocations_page(&r)).await)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no such route: {}", uri.path()),
        None,
    )
}

/// The URL pages print in commands when no listener address is known: the configured
/// public URL, else a placeholder the reviewer must fill in.
pub fn configured_base_url(registry: &Registry, listening: Option<std::net::SocketAddr>) -> String {
    if let Some(u) = &registry.settings().public_url {
        return u.clone();
    }
    match listening {
        Some(a) if !a.ip().is_unspecified() => format!("http://{a}"),
        _ => "REGISTRY_URL".into(),
    }
}

/// The router over a registry, printing the configured public URL (or a placeholder).
pub fn router(registry: Arc<Registry>) -> Router {
    let base_url = configured_base_url(&registry, None);
    router_with(registry, base_url)
}

/// The router over a registry whose pages print `base_url` in commands.
pub fn router_with(registry: Arc<Registry>, base_url: String) -> Router {
    let budgets = Budgets::new(&registry.settings().server);
    let app = Arc::new(App {
        registry,
        budgets,
        worker: BundleWorker::start(),
        base_url,
    });
    Router::new()
        .route("/api/v1/info", get(info))
        .route("/api/v1/checkpoint", get(checkpoint))
        .route("/api/v1/checkpoint/cosigned", get(cosigned_checkpoint))
        .route("/api/v1/entries", get(entries))
        .route("/api/v1/proof/inclusion", get(inclusion))
        .route("/api/v1/proof/consistency", get(consistency))
        .route(
            "/api/v1/definitions",
            // The publish handler counts its own bytes as they are spooled.
            get(list).post(publish).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/definitions/{id}", get(detail))
        .route("/api/v1/definitions/{id}/bundle", get(bundle))
        .route("/api/v1/reviews", axum::routing::post(review))
        .route("/api/v1/revocations", get(revocations))
        .route("/", get(queue_page))
        .route("/definitions/{id}", get(definition_page))
        .route("/revocations", get(revocations_page))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(app)
}

/// Re-signs the checkpoint every `interval`, so a client can tell a live log from a frozen
/// one even when nothing is written.
async fn resign_loop(registry: Arc<Registry>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let r = registry.clone();
        match tokio::task::spawn_blocking(move || r.resign()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: re-signing the checkpoint failed: {e}"),
            Err(e) => eprintln!("warning: re-signing the checkpoint failed: {e}"),
        }
    }
}

/// Serves the registry on a bound listener until `shutdown` completes, with the limits of
/// its `[server]` settings ([`super::conn`]).
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let resign = tokio::spawn(resign_loop(
        registry.clone(),
        registry.settings().checkpoint_interval,
    ));
    let witnesses = tokio::spawn(super::witness::witness_loop(registry.clone()));
    let base_url = configured_base_url(&registry, listener.local_addr().ok());
    let limits = registry.settings().server.clone();
    let result = conn::serve(listener, router_with(registry, base_url), limits, shutdown).await;
    resign.abort();
    witnesses.abort();
    result
}
