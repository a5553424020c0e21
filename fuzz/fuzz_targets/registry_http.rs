//! Fuzzes the registry's HTTP front end in-process: the real axum router over a real
//! registry (SQLite in a scratch directory), driven with `tower::ServiceExt::oneshot`.
//!
//! Each input is sent as the body of every POST endpoint, as the query string of every
//! GET endpoint that takes one, and as the `{id}` path segment and a whole path. The
//! server must never panic and never answer 5xx: a malformed request is the client's
//! fault (4xx), and a 5xx for one would page an operator for an attacker's noise.
//!
//! The registry lives for the whole fuzzing process, so inputs see the state earlier
//! ones left (a seed's valid publication gets logged once, then answered idempotently).
//! Its directory is `$PINFOLD_FUZZ_SCRATCH/registry-<pid>` (`fuzz/run.sh` points that
//! under the fuzz target directory and empties it), else under the system temp dir.

#![no_main]

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use pinfold_registry::Registry;
use pinfold_registry::server::router;
use tower::ServiceExt as _;

struct Server {
    runtime: tokio::runtime::Runtime,
    router: Router,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let scratch = std::env::var_os("PINFOLD_FUZZ_SCRATCH")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = scratch.join(format!("registry-{}", std::process::id()));
        // A leftover directory of a dead process with the same pid would hold another
        // log key; start clean.
        let _ = std::fs::remove_dir_all(&dir);
        let registry =
            Registry::open(&pinfold_fuzz::registry_config(&dir)).expect("the fuzz registry opens");
        // SQLite calls run on the blocking pool, as in the real server; one worker
        // thread is plenty and keeps the fuzzer to one core.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(1)
            .build()
            .expect("a tokio runtime");
        Server {
            runtime,
            router: router(Arc::new(registry)),
        }
    })
}

/// Percent-encodes every byte outside `keep` (and outside the unreserved set), so any
/// input makes a valid URI while the characters the extractors care about stay raw.
fn encode(data: &[u8], keep: &[u8]) -> String {
    let mut s = String::with_capacity(data.len());
    for &b in data {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

fn send(server: &Server, method: Method, uri: &str, body: &[u8]) {
    let Ok(req) = Request::builder()
        .method(method.clone())
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
    else {
        return;
    };
    let resp = server
        .runtime
        .block_on(server.router.clone().oneshot(req))
        .expect("the router is infallible");
    let status = resp.status();
    if status.is_server_error() {
        let body = server
            .runtime
            .block_on(axum::body::to_bytes(resp.into_body(), 64 * 1024))
            .unwrap_or_default();
        panic!(
            "{method} {uri} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let server = server();

    for path in ["/api/v1/definitions", "/api/v1/reviews"] {
        send(server, Method::POST, path, data);
    }

    let query = encode(data, b"=&+%");
    for path in [
        "/api/v1/entries",
        "/api/v1/proof/inclusion",
        "/api/v1/proof/consistency",
        "/api/v1/definitions",
    ] {
        send(server, Method::GET, &format!("{path}?{query}"), &[]);
    }

    let segment = encode(data, b":%");
    for uri in [
        format!("/api/v1/definitions/{segment}"),
        format!("/api/v1/definitions/{segment}/bundle"),
        format!("/definitions/{segment}"),
        format!("/{}", encode(data, b"/:%?=&")),
    ] {
        send(server, Method::GET, &uri, &[]);
    }
});
