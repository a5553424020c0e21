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
//! | `GET /api/v1/definitions[?status=]` | definitions, newest first, server-view status |
//! | `POST /api/v1/definitions` | publish: [`PublishRequest`] → [`super::api::AppendResponse`] |
//! | `GET /api/v1/definitions/{id}` | manifest summary, files, footprint, reviews, previous approved |
//! | `GET /api/v1/definitions/{id}/bundle` | the bundle (application/x-tar), re-verified |
//! | `POST /api/v1/reviews` | a signed [`Review`] → [`super::api::AppendResponse`] |
//! | `GET /api/v1/revocations` | every revocation, newest first |
//! | `GET /` | HTML: pending queue and recent decisions |
//! | `GET /definitions/{id}` | HTML: the review page of one definition |
//! | `GET /revocations` | HTML: revocation history |
//!
//! Request bodies are capped (64 KiB, publications by the bundle cap) before they are
//! buffered; registry work runs on the blocking pool because SQLite calls block.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::de::DeserializeOwned;

use super::api::{
    ConsistencyQuery, CosignedQuery, DefinitionList, ErrorBody, InclusionQuery, ListQuery,
    PublishRequest, RangeQuery,
};
use super::service::{Registry, RequestError};
use super::web;
use crate::identity::DefinitionId;
use crate::tlog::Review;

/// The cap on request bodies other than publications.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

type Shared = Arc<Registry>;

/// An error response: the status and `{"error": message}`.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        ApiError(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(ErrorBody { error: self.1 })).into_response()
    }
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
    q.map(|Query(v)| v)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))
}

fn id_param(p: Result<Path<String>, PathRejection>) -> ApiResult<DefinitionId> {
    let Path(s) = p.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    s.parse().map_err(|e: crate::identity::ParseIdError| {
        ApiError(StatusCode::BAD_REQUEST, e.to_string())
    })
}

fn body<T: DeserializeOwned>(b: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    let bytes = b.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError(status, "request body exceeds the size limit".into())
        } else {
            ApiError(status, e.body_text())
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("malformed request body: {e}"),
        )
    })
}

async fn info(State(r): State<Shared>) -> ApiResult<Response> {
    Ok(json(blocking(move || Ok(r.info())).await?))
}

async fn checkpoint(State(r): State<Shared>) -> ApiResult<Response> {
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
    State(r): State<Shared>,
    q: Result<Query<CosignedQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let min = query(q)?.min.unwrap_or(1);
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
    State(r): State<Shared>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    Ok(json(blocking(move || r.entries(q.start, q.end)).await?))
}

async fn inclusion(
    State(r): State<Shared>,
    q: Result<Query<InclusionQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    Ok(json(blocking(move || r.inclusion(q.index, q.size)).await?))
}

async fn consistency(
    State(r): State<Shared>,
    q: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    Ok(json(blocking(move || r.consistency(q.old, q.new)).await?))
}

async fn list(
    State(r): State<Shared>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    let definitions = blocking(move || r.list(q.status)).await?;
    Ok(json(DefinitionList { definitions }))
}

async fn publish(State(r): State<Shared>, b: Result<Bytes, BytesRejection>) -> ApiResult<Response> {
    let req: PublishRequest = body(b)?;
    let resp = blocking(move || r.publish(&req)).await?;
    let status = if resp.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(resp)).into_response())
}

async fn review(State(r): State<Shared>, b: Result<Bytes, BytesRejection>) -> ApiResult<Response> {
    let req: Review = body(b)?;
    let resp = blocking(move || r.review(&req)).await?;
    let status = if resp.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(resp)).into_response())
}

async fn detail(
    State(r): State<Shared>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let id = id_param(p)?;
    Ok(json(blocking(move || r.detail(&id)).await?))
}

async fn bundle(
    State(r): State<Shared>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let id = id_param(p)?;
    let (bytes, _) = blocking(move || r.bundle(&id)).await?;
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], bytes).into_response())
}

async fn revocations(State(r): State<Shared>) -> ApiResult<Response> {
    Ok(json(blocking(move || r.revocations()).await?))
}

/// The base URL people should pass as `--registry`, from the request's `Host`.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// Headers of every page: no script may run and nothing may be loaded from elsewhere, so
/// even an escaping bug could not turn author text into active content.
const PAGE_HEADERS: [(header::HeaderName, &str); 3] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; frame-ancestors 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
];

fn html_error(e: RequestError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        PAGE_HEADERS,
        Html(web::error_page(status.as_u16(), &e.to_string())),
    )
        .into_response()
}

fn html(r: Result<String, RequestError>) -> Response {
    match r {
        Ok(page) => (PAGE_HEADERS, Html(page)).into_response(),
        Err(e) => html_error(e),
    }
}

async fn queue_page(State(r): State<Shared>) -> Response {
    html(blocking(move || web::queue_page(&r)).await)
}

async fn definition_page(
    State(r): State<Shared>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match id_param(p) {
        Ok(id) => id,
        Err(ApiError(_, msg)) => return html_error(RequestError::BadRequest(msg)),
    };
    let base = base_url(&headers);
    html(blocking(move || web::definition_page(&r, &id, &base)).await)
}

async fn revocations_page(State(r): State<Shared>) -> Response {
    html(blocking(move || web::revocations_page(&r)).await)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no such route: {}", uri.path()),
    )
}

/// The router over a registry.
pub fn router(registry: Arc<Registry>) -> Router {
    let max = registry.settings().max_bundle_bytes as usize;
    // Base64 inflates the bundle by 4/3; the rest of the request is small.
    let publish_limit = max.div_ceil(3) * 4 + MAX_REQUEST_BYTES;
    Router::new()
        .route("/api/v1/info", get(info))
        .route("/api/v1/checkpoint", get(checkpoint))
        .route("/api/v1/checkpoint/cosigned", get(cosigned_checkpoint))
        .route("/api/v1/entries", get(entries))
        .route("/api/v1/proof/inclusion", get(inclusion))
        .route("/api/v1/proof/consistency", get(consistency))
        .route(
            "/api/v1/definitions",
            get(list)
                .post(publish)
                .layer(DefaultBodyLimit::max(publish_limit)),
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
        .with_state(registry)
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

/// Serves the registry on a bound listener until `shutdown` completes.
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
    let result = axum::serve(listener, router(registry))
        .with_graceful_shutdown(shutdown)
        .await;
    resign.abort();
    witnesses.abort();
    result
}
