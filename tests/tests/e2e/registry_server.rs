//! The real `task-defs serve` under hostile clients: silent and half-sent connections,
//! floods beyond its connection cap, 100 concurrent near-cap uploads (peak RSS from
//! `/proc`), and the CLI's answer to a refused publication.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use pinfold_e2e::{
    RegistryProcess, Scratch, example, keygen, ok_stdout, proc_fd_count, proc_status_kib, publish,
    run,
};
use pinfold_registry::client::Client;
use pinfold_registry::unix_now;
use pinfold_tlog::{Published, SecretKey};
use task_defs::identity::{FileDigest, canonical_document};
use task_defs::{Definition, DefinitionId};

/// Starts a registry in `s/registry` whose `registry.toml` is `toml`.
fn registry(s: &Scratch, toml: &str) -> RegistryProcess {
    let data = s.path("registry");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("registry.toml"), toml).unwrap();
    let reviewer = SecretKey::from_seed([1; 32]).public_key_text();
    RegistryProcess::start(&data, &["--reviewer", &reviewer])
}

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// How long a normal request takes: a fresh client asking for `/api/v1/info`.
fn normal_request(url: &str) -> Duration {
    let t = Instant::now();
    Client::with_timeout(url, Duration::from_secs(30))
        .info()
        .expect("a normal request is served");
    t.elapsed()
}

/// Waits until the server closed `conn` (EOF or reset); returns when, from `since`.
fn closed_at(conn: &mut TcpStream, since: Instant, limit: Duration) -> Option<Duration> {
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 512];
    while since.elapsed() < limit {
        match conn.read(&mut buf) {
            Ok(0) => return Some(since.elapsed()),
            // hyper closes a timed-out head with nothing, or a 408; either way EOF follows.
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(since.elapsed()),
        }
    }
    None
}

/// Opens `n` connections in batches, each batch only once the server has accepted the
/// previous one (a connect can complete in the kernel long before the server accepts it,
/// so a tight loop measures the backlog, not the server); `first` is written on each.
fn open_accepted(
    server: &RegistryProcess,
    n: usize,
    first: impl Fn(usize) -> Option<String>,
) -> Vec<(TcpStream, Instant)> {
    let base = proc_fd_count(server.pid());
    let mut out = Vec::with_capacity(n);
    for batch in (0..n).collect::<Vec<_>>().chunks(100) {
        for &i in batch {
            let mut c = TcpStream::connect(addr(&server.url)).unwrap();
            if let Some(text) = first(i) {
                c.write_all(text.as_bytes()).unwrap();
            }
            out.push((c, Instant::now()));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while proc_fd_count(server.pid()) < base + out.len() {
            assert!(
                Instant::now() < deadline,
                "the server did not accept {} connections",
                out.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    out
}

#[test]
fn a_thousand_silent_connections_and_300_half_sent_requests_neither_lock_out_clients_nor_stay_open()
{
    const TIMEOUT: Duration = Duration::from_secs(10);
    let s = Scratch::new();
    let server = registry(&s, "[server]\nheader_timeout_secs = 10\n");
    let fds_idle = proc_fd_count(server.pid());
    let mut conns = open_accepted(&server, 1000, |_| None);
    conns.extend(open_accepted(&server, 300, |i| {
        Some(format!(
            "POST /api/v1/reviews HTTP/1.1\r\nHost: x\r\nX-Slow-{i}: "
        ))
    }));
    let fds_held = proc_fd_count(server.pid());
    let latencies: Vec<Duration> = (0..5).map(|_| normal_request(&server.url)).collect();
    let worst = latencies.iter().max().unwrap();
    println!(
        "figure: registry_silent=1000 half_sent=300 normal_request_ms={:?} fds={fds_idle}->{fds_held}",
        latencies.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
    assert!(
        fds_held >= fds_idle + 1300,
        "the connections are open: {fds_held}"
    );
    assert!(
        *worst < Duration::from_secs(1),
        "a normal request took {worst:?} with 1,300 idle connections open"
    );

    // Every one is closed after the header timeout, counted from when it opened.
    let (mut earliest, mut latest) = (Duration::MAX, Duration::ZERO);
    for (c, opened) in &mut conns {
        let at = closed_at(c, *opened, TIMEOUT + Duration::from_secs(10))
            .expect("a silent or half-sent connection still open 10 s after the timeout");
        earliest = earliest.min(at);
        latest = latest.max(at);
    }
    println!(
        "figure: registry_idle_connections_closed_after_ms={}..{}",
        earliest.as_millis(),
        latest.as_millis()
    );
    assert!(
        earliest >= TIMEOUT - Duration::from_millis(500),
        "closed before the timeout: {earliest:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let fds_after = proc_fd_count(server.pid());
    assert!(fds_after <= fds_idle + 5, "fds {fds_idle} -> {fds_after}");
}

#[test]
fn beyond_the_connection_cap_idle_connections_make_room_for_real_clients() {
    let s = Scratch::new();
    let server = registry(
        &s,
        "[server]\nmax_connections = 100\nheader_timeout_secs = 60\n",
    );
    let fds_idle = proc_fd_count(server.pid());
    // Ten times the cap, all silent for far longer than the test, each accepted before the
    // next batch (the server's fds stay at the cap, so wait for its accept count instead).
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.extend((0..100).map(|_| TcpStream::connect(addr(&server.url)).unwrap()));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let fds_held = proc_fd_count(server.pid());
    let latencies: Vec<Duration> = (0..5).map(|_| normal_request(&server.url)).collect();
    let worst = *latencies.iter().max().unwrap();
    println!(
        "figure: registry_cap=100 silent=1000 server_fds={fds_held} normal_request_ms={:?}",
        latencies.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
    assert!(
        fds_held <= fds_idle + 100 + 5,
        "the cap holds: fds {fds_idle} -> {fds_held}"
    );
    assert!(worst < Duration::from_secs(1), "{worst:?}");
}

/// A ustar entry: header, data, zero padding to 512.
fn tar_entry(path: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).unwrap();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
    out
}

/// Near-cap publication bodies that share one big file, so 100 distinct ones cost the test
/// one copy of it: base64 is 3-byte-group local, so when the tar before the big file's data
/// and the data itself are multiples of 3 bytes long, the body is three base64 pieces and
/// the middle one is shared.
struct Uploads {
    base: Definition,
    big_b64: Arc<String>,
    big_digest: FileDigest,
    big_len: usize,
}

const BIG: &str = "zz/big.bin";

impl Uploads {
    fn new(big_len: usize) -> Uploads {
        assert_eq!(big_len % 3, 0);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let big: Vec<u8> = (0..big_len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Uploads {
            base: Definition::load(&example("wordfreq")).unwrap(),
            big_b64: Arc::new(B64.encode(&big)),
            big_digest: FileDigest::of(BIG, &big),
            big_len,
        }
    }

    /// Upload `i`: its identity and the three body pieces around the shared one.
    fn body(&self, i: usize, author: &SecretKey, origin: &str) -> (DefinitionId, String, String) {
        let unique_path = format!("a/u{i:04}.txt");
        let files: Vec<(&str, &[u8])> = self
            .base
            .files
            .iter()
            .map(|(p, b)| (p.as_str(), b.as_slice()))
            .collect();
        let mut prefix = tar_entry("taskdef.toml", self.base.manifest_text.as_bytes());
        for (p, b) in &files {
            prefix.extend(tar_entry(p, b));
        }
        // Pad the unique file so the prefix (it, the rest and the big header) is a
        // multiple of 3 blocks, hence of 3 bytes.
        let blocks = prefix.len() / 512 + 1 + 1;
        let unique_blocks = match (3 - blocks % 3) % 3 {
            0 => 3,
            n => n,
        };
        let unique = vec![b'0' + (i % 10) as u8; unique_blocks * 512 - 1];
        prefix.extend(tar_entry(&unique_path, &unique));
        let mut h = tar::Header::new_ustar();
        h.set_path(BIG).unwrap();
        h.set_size(self.big_len as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        prefix.extend_from_slice(h.as_bytes());
        assert_eq!(prefix.len() % 3, 0);
        let mut suffix = vec![0u8; self.big_len.next_multiple_of(512) - self.big_len];
        suffix.extend([0u8; 1024]);

        let mut digests: Vec<FileDigest> = files
            .iter()
            .map(|(p, b)| FileDigest::of(p, b))
            .chain([
                FileDigest::of(&unique_path, &unique),
                self.big_digest.clone(),
            ])
            .collect();
        digests.sort_by(|a, b| a.path.cmp(&b.path));
        let id = DefinitionId::of_document(&canonical_document(&self.base.manifest, &digests));
        let p = Published::sign(
            author,
            origin,
            id,
            &self.base.manifest.name,
            &self.base.manifest.version.to_string(),
            unix_now(),
        );
        let head = format!(
            "{{\"publication\":{},\"bundle\":\"{}",
            serde_json::to_string(&p).unwrap(),
            B64.encode(&prefix)
        );
        let tail = format!("{}\"}}", B64.encode(&suffix));
        (id, head, tail)
    }
}

/// Posts one publication the way a careful client does (`Expect: 100-continue`, the body
/// only after `100 Continue`); returns the final status and headers.
fn post(url: &str, head: &str, big: &str, tail: &str) -> (u16, String) {
    let mut c = TcpStream::connect(addr(url)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let len = head.len() + big.len() + tail.len();
    write!(
        c,
        "POST /api/v1/definitions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {len}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut first = [0u8; 25];
    let n = c.read(&mut first).unwrap();
    let mut reply = first[..n].to_vec();
    if reply.starts_with(b"HTTP/1.1 100") {
        // Read the rest of the interim response, then send the body.
        while !reply.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            c.read_exact(&mut b).unwrap();
            reply.push(b[0]);
        }
        for part in [head.as_bytes(), big.as_bytes(), tail.as_bytes()] {
            for chunk in part.chunks(256 * 1024) {
                c.write_all(chunk).unwrap();
            }
        }
        reply.clear();
    }
    let _ = c.read_to_end(&mut reply);
    let text = String::from_utf8_lossy(&reply).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (status, text)
}

#[test]
fn peak_rss_stays_under_256_mib_with_100_concurrent_near_cap_uploads() {
    const UPLOADS: usize = 100;
    const CAP: usize = 8 * 1024 * 1024;
    let s = Scratch::new();
    let server = registry(
        &s,
        &format!(
            "max_bundle_bytes = {CAP}\n[authors]\nip_burst = 1000\nkey_burst = 1000\n\
             key_quota_bytes = 100000000000\n"
        ),
    );
    let pid = server.pid();
    let idle_kib = proc_status_kib(pid, "VmRSS");
    // The big file fills the bundle to within 64 KiB of the cap.
    let uploads = Uploads::new((CAP - 64 * 1024) / 3 * 3);
    let author = SecretKey::from_seed([9; 32]);
    let origin = server.origin();
    let started = Instant::now();
    let (created, busy): (Vec<DefinitionId>, Vec<usize>) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..UPLOADS)
            .map(|i| {
                let (uploads, url, author, origin) =
                    (&uploads, server.url.clone(), author.clone(), origin.clone());
                scope.spawn(move || {
                    let (id, head, tail) = uploads.body(i, &author, &origin);
                    let mut busy = 0;
                    loop {
                        let (status, text) = post(&url, &head, &uploads.big_b64, &tail);
                        match status {
                            201 => return (id, busy),
                            503 => {
                                assert!(
                                    text.to_ascii_lowercase().contains("retry-after:"),
                                    "{text}"
                                );
                                busy += 1;
                                std::thread::sleep(Duration::from_secs(1));
                            }
                            _ => panic!("upload {i}: {text}"),
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).unzip()
    });
    let peak_kib = proc_status_kib(pid, "VmHWM");
    println!(
        "figure: registry_uploads={UPLOADS} body_mib={:.1} idle_rss_mib={:.1} peak_rss_mib={:.1} busy_503={} secs={:.1}",
        (uploads.big_b64.len() as f64) / 1048576.0,
        idle_kib as f64 / 1024.0,
        peak_kib as f64 / 1024.0,
        busy.iter().sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(created.len(), UPLOADS);
    assert!(
        peak_kib <= 256 * 1024,
        "peak RSS {} MiB over the 256 MiB bound",
        peak_kib / 1024
    );
    // Every upload was logged and nothing is left spooled.
    assert_eq!(
        Client::new(&server.url).info().unwrap().tree_size,
        UPLOADS as u64
    );
    assert_eq!(
        std::fs::read_dir(server.data.join("uploads"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn a_refused_publication_prints_the_limit_and_exits_4() {
    let s = Scratch::new();
    let (author, author_pub) = keygen(&s, "author");
    let (other, _) = keygen(&s, "other");
    let server = registry(
        &s,
        &format!(
            "max_bundle_bytes = 20000\n[authors]\npolicy = \"allowlist\"\nallow = [\"{author_pub}\"]\n"
        ),
    );
    let refused = |key: &Path| {
        run(
            "task-defs",
            &[
                &"publish",
                &example("wordfreq"),
                &"--registry",
                &server.url,
                &"--key",
                &key,
            ],
        )
    };
    let o = refused(&other);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("(403)") && err.contains("author allowlist"),
        "{err}"
    );
    let o = refused(&author);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("(413)") && err.contains("max_bundle_bytes"),
        "{err}"
    );
    drop(server);

    // The operator hides a publication from the queue with the CLI; the log keeps it.
    let s = Scratch::new();
    let (author, _) = keygen(&s, "author");
    let server = registry(&s, "");
    let id = publish(&server.url, &example("wordfreq"), &author);
    let list = || {
        ok_stdout(&run(
            "task-defs",
            &[&"review", &"list", &"--registry", &server.url],
        ))
    };
    assert!(list().contains(&id));
    let out = ok_stdout(&run(
        "task-defs",
        &[
            &"queue",
            &"hide",
            &id,
            &"--data",
            &server.data,
            &"--reason",
            &"spam",
        ],
    ));
    assert!(out.contains("hidden from the review queue"), "{out}");
    assert!(!list().contains(&id), "hidden from the queue");
    assert!(Client::new(&server.url).info().unwrap().tree_size == 1);
}
