//! Publishing is bounded: the author policy, rate limits, quota, size caps, paginated lists,
//! queue hiding, and commands on pages that name the configured URL, never the `Host`.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::time::Duration;

use pinfold_registry::api::{AppendResponse, ListOrder, ListQuery};
use pinfold_registry::client::{Client, ClientError};
use pinfold_registry::{RegistryConfig, unix_now};
use pinfold_tlog::{Published, ReviewAction, SecretKey, Status};
use task_defs::{Definition, bundle};

use crate::registry::{Server, config, key, vote, wordfreq};

/// `base` with version `1.0.{i}`: a distinct identity per `i`, built in memory.
fn variant(base: &Definition, i: u64) -> Definition {
    let text = base
        .manifest_text
        .replace("version = \"1.0.0\"", &format!("version = \"1.0.{i}\""));
    Definition::from_parts(text, base.files.clone()).unwrap()
}

fn publish_as(
    c: &Client,
    author: &SecretKey,
    def: &Definition,
) -> Result<AppendResponse, ClientError> {
    let p = Published::sign(
        author,
        crate::registry::ORIGIN,
        def.id,
        &def.manifest.name,
        &def.manifest.version.to_string(),
        unix_now(),
    );
    c.publish(&p, &bundle::pack(def))
}

/// A config with `registry.toml` holding `toml`.
fn with_toml(dir: &Path, toml: &str) -> RegistryConfig {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("registry.toml"), toml).unwrap();
    config(dir, &[1], 1)
}

/// One raw HTTP/1.1 exchange on a fresh connection (`Connection: close`), so a test can
/// set any header (a forged `Host`) and see every response header. Returns the status,
/// the header block and the body.
pub(crate) fn raw_http(url: &str, request: &[u8]) -> (u16, String, String) {
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, head.to_string(), body.to_string())
}

fn refused(r: Result<AppendResponse, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Status { status, message }) => (status, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn two_hundred_parallel_publishes_from_fresh_keys_are_rate_limited_per_ip() {
    let tmp = tempfile::tempdir().unwrap();
    // The default policy: open, 20 publications at once per address, 60 an hour.
    let s = Server::start(&config(&tmp.path().join("data"), &[1], 1));
    let base = wordfreq("1.0.0").load().unwrap();
    let results: Vec<Result<AppendResponse, ClientError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..200)
            .map(|i| {
                let (c, base) = (s.client(), &base);
                scope.spawn(move || {
                    let fresh = SecretKey::generate().unwrap();
                    publish_as(&c, &fresh, &variant(base, i))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created = results.iter().filter(|r| r.is_ok()).count();
    println!("figure: parallel_fresh_key_publishes=200 accepted={created}");
    // One token may refill (1 a minute) if the burst took that long.
    assert!((20..=21).contains(&created), "{created} accepted");
    for r in results.into_iter().filter(Result::is_err) {
        let (status, msg) = refused(r);
        assert_eq!(status, 429, "{msg}");
        assert!(
            msg.contains("publication rate limit for 127.0.0.1")
                && msg.contains("60 per hour, bursts of 20")
                && msg.contains("retry in"),
            "{msg}"
        );
    }
    // Nothing refused was logged or stored.
    assert_eq!(s.client().info().unwrap().tree_size, created as u64);
    let (status, head, _) = raw_http(
        &s.url,
        b"POST /api/v1/definitions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert_eq!(status, 429);
    assert!(
        head.to_ascii_lowercase().contains("retry-after: "),
        "{head}"
    );
}

#[test]
fn an_author_key_over_its_rate_is_refused_naming_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = with_toml(
        &tmp.path().join("data"),
        "[authors]\nkey_burst = 3\nip_burst = 1000\n",
    );
    let s = Server::start(&cfg);
    let c = s.client();
    let base = wordfreq("1.0.0").load().unwrap();
    let author = key(100);
    for i in 0..3 {
        assert!(publish_as(&c, &author, &variant(&base, i)).unwrap().created);
    }
    // A retry of a logged publication stores nothing and costs no token.
    assert!(!publish_as(&c, &author, &variant(&base, 0)).unwrap().created);
    let (status, msg) = refused(publish_as(&c, &author, &variant(&base, 3)));
    assert_eq!(status, 429, "{msg}");
    assert!(
        msg.contains(&format!(
            "publication rate limit for author key {}",
            author.public_key()
        )) && msg.contains("20 per hour, bursts of 3"),
        "{msg}"
    );
    // Another key has its own bucket.
    assert!(
        publish_as(&c, &key(101), &variant(&base, 3))
            .unwrap()
            .created
    );
}

#[test]
fn an_author_over_its_storage_quota_is_refused_naming_the_quota() {
    let tmp = tempfile::tempdir().unwrap();
    let base = wordfreq("1.0.0").load().unwrap();
    let size = bundle::pack(&base).len() as u64;
    let quota = size * 5 / 2;
    let cfg = with_toml(
        &tmp.path().join("data"),
        &format!("[authors]\nkey_quota_bytes = {quota}\n"),
    );
    let s = Server::start(&cfg);
    let c = s.client();
    let author = key(100);
    publish_as(&c, &author, &variant(&base, 0)).unwrap();
    publish_as(&c, &author, &variant(&base, 1)).unwrap();
    let (status, msg) = refused(publish_as(&c, &author, &variant(&base, 2)));
    assert_eq!(status, 413, "{msg}");
    assert!(
        msg.contains(&format!(
            "storage quota of author key {} exceeded",
            author.public_key()
        )) && msg.contains(&format!("of {quota} bytes used (key_quota_bytes)")),
        "{msg}"
    );
    assert!(
        publish_as(&c, &key(101), &variant(&base, 2))
            .unwrap()
            .created
    );
}

#[test]
fn the_allowlist_admits_only_listed_authors() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = with_toml(
        &tmp.path().join("data"),
        &format!(
            "[authors]\npolicy = \"allowlist\"\nallow = [\"{}\"]\n",
            key(100).public_key()
        ),
    );
    let s = Server::start(&cfg);
    let c = s.client();
    let base = wordfreq("1.0.0").load().unwrap();
    let (status, msg) = refused(publish_as(&c, &key(101), &base));
    assert_eq!(status, 403, "{msg}");
    assert!(
        msg.contains(&format!(
            "author key {} is not on this registry's author allowlist",
            key(101).public_key()
        )),
        "{msg}"
    );
    assert!(publish_as(&c, &key(100), &base).unwrap().created);
    assert_eq!(c.info().unwrap().author_policy, "allowlist");

    // A policy that names no key, or an unknown policy, is refused at start.
    for bad in [
        "[authors]\npolicy = \"allowlist\"\n",
        "[authors]\npolicy = \"closed\"\n",
        "[authors]\nkey_burst = 0\n",
    ] {
        let dir = tmp.path().join(format!("bad{}", bad.len()));
        let e = Server::try_start(&with_toml(&dir, bad)).unwrap_err();
        assert!(e.to_string().contains("[authors]"), "{e}");
    }
}

#[test]
fn an_oversized_publication_is_refused_before_its_body_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&tmp.path().join("data"), &[1], 1);
    cfg.max_bundle_bytes = Some(200_000);
    let s = Server::start(&cfg);
    // Declared far over the limit, and the body never sent: the answer comes anyway,
    // because the client asked to wait for `100 Continue`.
    let (status, _, body) = raw_http(
        &s.url,
        b"POST /api/v1/definitions HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\
          Expect: 100-continue\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains("publish limit of 332204 bytes") && body.contains("max_bundle_bytes"),
        "{body}"
    );
    // The client's bundle over the cap: a 413 naming the cap.
    let big = wordfreq("1.0.0");
    big.write("data/big.bin", &vec![7u8; 250_000]);
    let (status, msg) = refused(publish_as(&s.client(), &key(100), &big.load().unwrap()));
    assert_eq!(status, 413, "{msg}");
    assert!(msg.contains("200000") || msg.contains("332204"), "{msg}");
}

#[test]
fn lists_are_paginated_with_bounded_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&config(&tmp.path().join("data"), &[1], 1));
    let c = s.client();
    let base = wordfreq("1.0.0").load().unwrap();
    let ids: Vec<_> = (0..7)
        .map(|i| {
            let d = variant(&base, i);
            publish_as(&c, &key(100), &d).unwrap();
            d.id
        })
        .collect();
    vote(&c, 1, ReviewAction::Approve, ids[3], "", unix_now());

    let mut q = ListQuery {
        limit: Some(3),
        ..ListQuery::default()
    };
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = c.definitions_page(&q).unwrap();
        assert!(page.definitions.len() <= 3);
        pages += 1;
        seen.extend(page.definitions.iter().map(|d| d.id));
        match page.next_cursor {
            Some(cur) => q.cursor = Some(cur),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    assert!((3..=4).contains(&pages), "{pages} pages");

    // The queue's order and a status filter, across pages.
    let page = c
        .definitions_page(&ListQuery {
            status: Some(Status::Pending),
            order: Some(ListOrder::Oldest),
            limit: Some(4),
            ..ListQuery::default()
        })
        .unwrap();
    assert_eq!(
        page.definitions.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![ids[0], ids[1], ids[2], ids[4]]
    );
    // Absurd page sizes are clamped, not obeyed; the client still follows every page.
    let (st, _) = crate::registry::raw(
        &format!("{}/api/v1/definitions?limit=1000000", s.url),
        "GET",
        None,
    );
    assert_eq!(st, 200);
    assert_eq!(c.definitions(None).unwrap().len(), 7);
    let (st, msg) = crate::registry::raw(
        &format!("{}/api/v1/definitions?cursor=x", s.url),
        "GET",
        None,
    );
    assert_eq!(st, 400, "{msg}");
}

#[test]
fn unreviewed_definitions_leave_the_queue_but_not_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&with_toml(
        &data,
        "[queue]\nhide_unreviewed_after_days = 30\n",
    ));
    let c = s.client();
    let base = wordfreq("1.0.0").load().unwrap();
    let defs: Vec<_> = (0..4).map(|i| variant(&base, i)).collect();
    for d in &defs {
        publish_as(&c, &key(100), d).unwrap();
    }
    // 0: old and never reviewed (hidden); 1: old but reviewed (stays); 2: hidden by the
    // operator; 3: new (stays).
    vote(
        &c,
        1,
        ReviewAction::Reject,
        defs[1].id,
        "needs work",
        unix_now(),
    );
    let db = rusqlite::Connection::open(data.join("registry.sqlite")).unwrap();
    let old = (unix_now() - 40 * 86400) as i64;
    for d in &defs[..2] {
        db.execute(
            "UPDATE definitions SET received = ?1 WHERE id = ?2",
            rusqlite::params![old, d.id.to_string()],
        )
        .unwrap();
    }
    drop(db);
    assert!(pinfold_registry::service::set_hidden(&data, &defs[2].id, true, "spam").unwrap());

    let queue: Vec<_> = c
        .definitions(Some(Status::Pending))
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(queue, vec![defs[3].id]);
    let hidden = c
        .definitions_page(&ListQuery {
            status: Some(Status::Pending),
            hidden: true,
            ..ListQuery::default()
        })
        .unwrap();
    let reasons: Vec<_> = hidden
        .definitions
        .iter()
        .map(|d| (d.id, d.hidden.clone()))
        .collect();
    assert!(reasons.contains(&(defs[0].id, Some("no reviewer statement in 30 days".into()))));
    assert!(reasons.contains(&(defs[2].id, Some("hidden by the operator: spam".into()))));
    // The log still holds every publication, and each is reachable by identity.
    assert_eq!(c.info().unwrap().tree_size, 5);
    let d = c.definition(&defs[0].id).unwrap();
    assert_eq!(d.summary.status, Status::Pending);
    let (_, page) = crate::registry::raw(&format!("{}/", s.url), "GET", None);
    assert!(
        !page.contains(&defs[0].id.to_string()[..19]),
        "hidden from the queue page"
    );
    let (_, page) = crate::registry::raw(&format!("{}/?hidden=true", s.url), "GET", None);
    assert!(page.contains("hidden by the operator: spam"), "{page}");

    assert!(pinfold_registry::service::set_hidden(&data, &defs[2].id, false, "").unwrap());
    assert!(
        c.definitions(Some(Status::Pending))
            .unwrap()
            .iter()
            .any(|d| d.id == defs[2].id)
    );
}

#[test]
fn pages_print_the_configured_public_url_never_the_host_header() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&tmp.path().join("data"), &[1], 1);
    cfg.public_url = Some("https://registry.example.org/".into());
    let s = Server::start(&cfg);
    let def = wordfreq("1.0.0").load().unwrap();
    publish_as(&s.client(), &key(100), &def).unwrap();
    let get = format!(
        "GET /definitions/{} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        def.id
    );
    let (status, head, page) = raw_http(&s.url, get.as_bytes());
    assert_eq!(status, 200, "{head}");
    assert!(
        !page.contains("evil.example"),
        "the forged Host reached the page"
    );
    assert!(
        page.contains(&format!(
            "task-defs review approve {} --registry https://registry.example.org --key",
            def.id
        )),
        "{page}"
    );
    drop(s);

    // Without a public URL, the address the server listens on.
    let cfg = config(&tmp.path().join("data"), &[1], 1);
    let s = Server::start(&cfg);
    let (_, _, page) = raw_http(&s.url, get.as_bytes());
    assert!(!page.contains("evil.example"));
    assert!(
        page.contains(&format!("--registry {} --key", s.url)),
        "{page}"
    );

    // A public URL that could smuggle markup or another host is refused at start.
    for bad in ["ftp://x", "https://a b", "https://x/?q=<b>", "https://u@x"] {
        let mut cfg = config(&tmp.path().join("data"), &[1], 1);
        cfg.public_url = Some(bad.into());
        assert!(Server::try_start(&cfg).is_err(), "{bad}");
    }
}
