//! The real `requestor run` against a hostile provider: job ids that are paths, outputs over `limits.output`, outputs that do not fit the disk.
//!
//! The provider is an in-process `pinfold-net` peer that speaks the job protocol
//! correctly where it must (its results carry receipts it signs itself, over output
//! digests computed with the documented formula, so an unguarded requestor would accept
//! them) and lies where it wants to. The requestor is the real binary, run in a working
//! directory of its own so that anything it creates is found.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use pinfold_e2e::{Scratch, bin, example};
use pinfold_net::protocol::{OutcomeSummary, OutputEntry, ResultReply};
use pinfold_net::{
    Accept, BlobId, BlobReader, BlobRef, BlobStore, Event, JobId, JobResult, JobState, Keypair,
    MemoryBlobStore, NetConfig, Offer, OfferReply, PeerId, Receipt, ReceiptBody, ReceiptUsage,
    Request, Response, RunStatus,
};
use pinfold_test_support::copy_tree;
use tokio::io::{AsyncRead, ReadBuf};

/// What the hostile provider answers.
#[derive(Clone, Default)]
struct Lies {
    /// The job id it accepts with (and puts in its result and receipt).
    job_id: String,
    /// Output files: path, the size it declares (`None`: the true size), content.
    files: Vec<(String, Option<u64>, Vec<u8>)>,
    /// Captured stdout it reports.
    stdout: Vec<u8>,
}

/// A provider peer answering every offer with `lies`; its swarm stops when dropped.
struct HostileProvider {
    /// Held: the event loop ends when its last client is dropped.
    _client: pinfold_net::Client,
    peer: PeerId,
    addr: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for HostileProvider {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The output digest as the provider defines it (`provider::executor::output_digest`):
/// BLAKE3 of the canonical JSON `{"files": [{blake3, path, size}...], "stdout": <hex>}`.
fn output_digest(files: &[OutputEntry], stdout: &[u8]) -> String {
    let doc = serde_json::json!({
        "files": files
            .iter()
            .map(|f| serde_json::json!({"blake3": f.blake3.hex(), "path": f.path, "size": f.size}))
            .collect::<Vec<_>>(),
        "stdout": blake3::hash(stdout).to_hex().to_string(),
    });
    let mut out = Vec::new();
    task_defs::identity::write_canonical(&doc, &mut out).unwrap();
    format!("blake3:{}", blake3::hash(&out).to_hex())
}

impl HostileProvider {
    async fn start(lies: Lies, store: Arc<dyn BlobStore>, memory: Arc<MemoryBlobStore>) -> Self {
        let keypair = Keypair::generate_ed25519();
        let config = NetConfig::local_test(keypair.clone());
        let (client, mut events, event_loop) =
            pinfold_net::new(config, Some(store)).expect("building the hostile provider");
        let peer = client.peer_id();
        let mut tasks = vec![tokio::spawn(event_loop.run())];
        let offers: Arc<Mutex<Option<(PeerId, Offer)>>> = Arc::default();
        tasks.push(tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let Event::Request {
                    peer,
                    request,
                    responder,
                } = event
                else {
                    continue;
                };
                let answer = match request {
                    Request::Offer(offer) => {
                        *offers.lock().unwrap() = Some((peer, offer));
                        Response::Offer(OfferReply::Accept(Accept {
                            job_id: JobId(lies.job_id.clone()),
                            fetch: Vec::new(),
                            hold_secs: 30,
                        }))
                    }
                    Request::Result { .. } => {
                        let Some((requestor, offer)) = offers.lock().unwrap().clone() else {
                            continue;
                        };
                        Response::Result(ResultReply::Done(Box::new(result(
                            &lies, &memory, &keypair, requestor, &offer,
                        ))))
                    }
                    Request::Status { .. } => Response::Status(JobState::Finished),
                    Request::Cancel { .. } => Response::Cancelled(false),
                };
                let _ = responder.send(answer).await;
            }
        }));
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = loop {
            if let Some(a) = client.listen_addrs().await.unwrap_or_default().first() {
                break a.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "the hostile provider never listened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        HostileProvider {
            _client: client,
            peer,
            addr,
            tasks,
        }
    }

    /// Runs the real requestor on `def` against this provider, in `cwd`.
    fn requestor(&self, def: &Path, cwd: &Path, extra: &[&str]) -> Output {
        Command::new(bin("requestor"))
            .current_dir(cwd)
            .args(["run", "--json", "--wait", "1", "--timeout", "30"])
            .arg(def)
            .args([
                "--bootstrap",
                &self.addr,
                "--provider",
                &self.peer.to_base58(),
            ])
            .args(extra)
            .output()
            .expect("running requestor")
    }
}

/// A signed result for `offer` that an unguarded requestor verifies: declared entries,
/// their digest and a receipt over both, all by this provider's key.
fn result(
    lies: &Lies,
    memory: &MemoryBlobStore,
    keypair: &Keypair,
    requestor: PeerId,
    offer: &Offer,
) -> JobResult {
    let mut files: Vec<OutputEntry> = lies
        .files
        .iter()
        .map(|(path, declared, bytes)| OutputEntry {
            path: path.clone(),
            size: declared.unwrap_or(bytes.len() as u64),
            blake3: memory.insert(bytes.clone()),
        })
        .collect();
    files.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let blob = |bytes: &[u8]| BlobRef {
        id: memory.insert(bytes.to_vec()),
        size: bytes.len() as u64,
    };
    let outputs = output_digest(&files, &lies.stdout);
    let job_id = JobId(lies.job_id.clone());
    let body = ReceiptBody {
        job_id: job_id.clone(),
        definition: offer.definition.clone(),
        inputs: offer.inputs.clone(),
        params: offer.params.clone(),
        outputs: outputs.clone(),
        status: RunStatus::Succeeded,
        exit_code: Some(0),
        usage: ReceiptUsage::default(),
        provider: String::new(),
        requestor: requestor.to_base58(),
        started_ms: 1,
        ended_ms: 2,
    };
    JobResult {
        job_id,
        outcome: OutcomeSummary {
            status: RunStatus::Succeeded,
            reason: None,
            exit_code: Some(0),
            stdout: blob(&lies.stdout),
            stdout_truncated: false,
            stderr: blob(b""),
            stderr_truncated: false,
            outputs,
            dropped: 0,
            usage: ReceiptUsage::default(),
        },
        files,
        receipt: Receipt::sign(body, keypair).expect("signing"),
    }
}

async fn hostile(lies: Lies) -> HostileProvider {
    let memory = Arc::new(MemoryBlobStore::new());
    HostileProvider::start(lies, memory.clone(), memory).await
}

/// The sha256sum example with `limits.output` set to `output`, in the scratch directory.
fn definition(s: &Scratch, output: &str) -> PathBuf {
    let dir = s.path(&format!("def-{output}"));
    copy_tree(&example("sha256sum"), &dir);
    let manifest = dir.join("taskdef.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let edited = text.replacen("output = \"16MiB\"", &format!("output = \"{output}\""), 1);
    assert!(
        edited.contains(&format!("output = \"{output}\"")),
        "{edited}"
    );
    std::fs::write(&manifest, edited).unwrap();
    dir
}

/// Every path below `root`, relative to it.
fn tree(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.insert(p.strip_prefix(root).unwrap().to_path_buf());
        }
    }
    out
}

/// Both streams, for failure messages (`--json` puts the error on stdout).
fn stderr(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn report(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("requestor --json printed no json ({e}): {}", stderr(o)))
}

/// A job id is the provider's word; where `requestor run` writes is not. Ids that are
/// paths (`../../x`, absolute, `..`) are refused on arrival, and a well-formed id that
/// names an existing directory changes nothing: the output directory is named locally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_cannot_choose_where_requestor_run_writes() {
    let s = Scratch::new();
    let def = definition(&s, "1MiB");
    let root = s.path("");
    let cwd = s.path("home/user/work");
    std::fs::create_dir_all(&cwd).unwrap();
    let absolute = s.path("abs-escape");
    for id in [
        "../../escape".to_string(),
        "../../../../../../../../../..".to_string() + &absolute.display().to_string(),
        absolute.display().to_string(),
        "..".to_string(),
        "x/../../../y".to_string(),
    ] {
        let before = tree(&root);
        let p = hostile(Lies {
            job_id: id.clone(),
            files: vec![("out.txt".into(), None, b"hello\n".to_vec())],
            ..Lies::default()
        })
        .await;
        let o = p.requestor(&def, &cwd, &[]);
        assert_eq!(o.status.code(), Some(3), "{id}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("job id") || report(&o)["error"].to_string().contains("job id"),
            "{id}: {}",
            stderr(&o)
        );
        let outside: Vec<_> = tree(&root)
            .difference(&before)
            .filter(|p| !p.starts_with("home/user/work/pinfold-out"))
            .cloned()
            .collect();
        assert!(
            outside.is_empty(),
            "{id}: created outside pinfold-out: {outside:?}"
        );
        assert!(
            !absolute.exists() && !s.path("home/escape").exists(),
            "{id}"
        );
    }

    // A well-formed id that names a directory already there.
    let victim = cwd.join("pinfold-out/victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("precious.txt"), "mine\n").unwrap();
    let p = hostile(Lies {
        job_id: "victim".into(),
        files: vec![("out.txt".into(), None, b"hello\n".to_vec())],
        ..Lies::default()
    })
    .await;
    let o = p.requestor(&def, &cwd, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let dir = PathBuf::from(
        report(&o)["report"]["replicas"][0]["dir"]
            .as_str()
            .expect("a result directory"),
    );
    let dir = cwd.join(dir);
    assert!(!dir.ends_with("victim"), "{}", dir.display());
    assert!(
        dir.starts_with(cwd.join("pinfold-out")),
        "{}",
        dir.display()
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("outputs/out.txt")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        tree(&victim),
        BTreeSet::from([PathBuf::from("precious.txt")]),
        "the existing directory was touched"
    );
}

/// Declared sizes are held to the definition's `limits.output` (1 MiB here) before a byte
/// is fetched: one file over it, files over it together, stdout over it, and a blob bigger
/// than declared all fail verification (exit 4) and leave nothing behind. Exactly the
/// limit is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_over_limits_output_are_refused_and_nothing_is_left() {
    let s = Scratch::new();
    let def = definition(&s, "1MiB");
    let mib = 1usize << 20;
    let cases: Vec<(&str, Lies)> = vec![
        (
            "one file one byte over",
            Lies {
                files: vec![("big".into(), None, vec![7; mib + 1])],
                ..Lies::default()
            },
        ),
        (
            "files over together",
            Lies {
                files: vec![
                    ("a".into(), None, vec![1; mib / 2]),
                    ("b".into(), None, vec![2; mib / 2 + 1]),
                ],
                ..Lies::default()
            },
        ),
        (
            "stdout over",
            Lies {
                stdout: vec![b'x'; mib + 1],
                ..Lies::default()
            },
        ),
        (
            "served bigger than declared",
            Lies {
                files: vec![("small".into(), Some(10), vec![3; 2 * mib])],
                ..Lies::default()
            },
        ),
    ];
    for (what, mut lies) in cases {
        lies.job_id = "job-1".into();
        let cwd = s.path(&format!("cwd-{}", what.replace(' ', "-")));
        std::fs::create_dir_all(&cwd).unwrap();
        let p = hostile(lies).await;
        let o = p.requestor(&def, &cwd, &[]);
        assert_eq!(o.status.code(), Some(4), "{what}: {}", stderr(&o));
        assert_eq!(report(&o)["kind"], "verification", "{what}");
        let left = tree(&cwd);
        assert!(left.is_empty(), "{what}: left behind {left:?}");
    }

    let cwd = s.path("cwd-exact");
    std::fs::create_dir_all(&cwd).unwrap();
    let p = hostile(Lies {
        job_id: "job-1".into(),
        files: vec![("exact".into(), None, vec![9; mib])],
        ..Lies::default()
    })
    .await;
    let o = p.requestor(&def, &cwd, &[]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "exactly the limit: {}",
        stderr(&o)
    );
}

/// A tmpfs mounted for one test, lazily unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "pinfold-e2e"])
            .arg(&dir)
            .status()
            .expect("mount");
        assert!(ok.success(), "mounting a tmpfs needs root");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Serves one blob up to `after` bytes, then holds the rest until `open` is set: a slow
/// provider, so the test can change the disk under a download in flight. The first open
/// of the blob is the server hashing it and passes untouched.
struct GatedStore {
    inner: Arc<MemoryBlobStore>,
    gated: BlobId,
    opens: std::sync::atomic::AtomicUsize,
    after: usize,
    open: Arc<AtomicBool>,
}

impl BlobStore for GatedStore {
    fn open(&self, id: &BlobId) -> io::Result<Option<BlobReader>> {
        let Some(blob) = self.inner.open(id)? else {
            return Ok(None);
        };
        if *id != self.gated || self.opens.fetch_add(1, Ordering::SeqCst) == 0 {
            return Ok(Some(blob));
        }
        Ok(Some(BlobReader {
            len: blob.len,
            reader: Box::new(Gate {
                inner: blob.reader,
                left: self.after,
                open: self.open.clone(),
            }),
        }))
    }
}

struct Gate {
    inner: Box<dyn AsyncRead + Send + Unpin>,
    left: usize,
    open: Arc<AtomicBool>,
}

impl AsyncRead for Gate {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.left == 0 && !self.open.load(Ordering::SeqCst) {
            let waker = cx.waker().clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                waker.wake();
            });
            return Poll::Pending;
        }
        if self.open.load(Ordering::SeqCst) {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let mut tmp = vec![0u8; buf.remaining().min(self.left)];
        let mut part = ReadBuf::new(&mut tmp);
        match Pin::new(&mut self.inner).poll_read(cx, &mut part) {
            Poll::Ready(Ok(())) => {
                let n = part.filled().len();
                buf.put_slice(part.filled());
                self.left -= n;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// Outputs are checked against free disk before anything is written (refused with a disk
/// error, exit 9, nothing created) and while writing (a disk that fills up mid-download
/// ends the run the same way, and the partial files are removed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_that_do_not_fit_the_disk_are_refused_and_partial_files_removed() {
    let s = Scratch::new();
    let def = definition(&s, "16MiB");
    let mib = 1usize << 20;

    // Before: 12 MiB of outputs (within the 16 MiB limit) for an 8 MiB disk.
    let small = Tmpfs::mount(s.path("small"), "8m");
    let p = hostile(Lies {
        job_id: "job-1".into(),
        files: vec![("big".into(), None, vec![5; 12 * mib])],
        ..Lies::default()
    })
    .await;
    let o = p.requestor(&def, &s.path(""), &["--output", "small/out"]);
    assert_eq!(o.status.code(), Some(9), "{}", stderr(&o));
    assert_eq!(report(&o)["kind"], "disk");
    assert!(
        report(&o)["error"]
            .as_str()
            .unwrap()
            .contains("not enough free disk space"),
        "{}",
        stderr(&o)
    );
    assert!(tree(&small.0).is_empty(), "{:?}", tree(&small.0));
    drop(p);

    // While: 6 MiB fit a 16 MiB disk, until something else fills it mid-download.
    let disk = Tmpfs::mount(s.path("disk"), "16m");
    let memory = Arc::new(MemoryBlobStore::new());
    let content = vec![6; 6 * mib];
    let open = Arc::new(AtomicBool::new(false));
    let store = Arc::new(GatedStore {
        inner: memory.clone(),
        gated: BlobId::of(&content),
        opens: Default::default(),
        after: 2 * mib,
        open: open.clone(),
    });
    let p = HostileProvider::start(
        Lies {
            job_id: "job-2".into(),
            files: vec![("big".into(), None, content)],
            ..Lies::default()
        },
        store,
        memory,
    )
    .await;
    let requestor = {
        let def = def.clone();
        let cwd = s.path("");
        let (addr, peer) = (p.addr.clone(), p.peer.to_base58());
        std::thread::spawn(move || {
            Command::new(bin("requestor"))
                .current_dir(cwd)
                .args(["run", "--json", "--wait", "1", "--timeout", "30"])
                .arg(def)
                .args(["--bootstrap", &addr, "--provider", &peer])
                .args(["--output", "disk/out"])
                .output()
                .expect("running requestor")
        })
    };
    // Wait until the first 2 MiB have landed, then fill the disk.
    let deadline = Instant::now() + Duration::from_secs(30);
    let partial = loop {
        let found = tree(&disk.0)
            .into_iter()
            .find(|p| p.ends_with("outputs/big"));
        if let Some(f) = found.map(|f| disk.0.join(f))
            && std::fs::metadata(&f).is_ok_and(|m| m.len() >= 2 * mib as u64)
        {
            break f;
        }
        assert!(Instant::now() < deadline, "the download never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut filler = std::fs::File::create(disk.0.join("filler")).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while io::Write::write_all(&mut filler, &chunk).is_ok() {}
    drop(filler);
    open.store(true, Ordering::SeqCst);
    let o = requestor.join().unwrap();
    assert_eq!(o.status.code(), Some(9), "{}", stderr(&o));
    assert_eq!(report(&o)["kind"], "disk");
    assert!(
        report(&o)["error"]
            .as_str()
            .unwrap()
            .contains("filled up while downloading"),
        "{}",
        stderr(&o)
    );
    assert!(!partial.exists(), "the partial download was kept");
    assert_eq!(
        tree(&disk.0),
        BTreeSet::from([PathBuf::from("filler")]),
        "left behind"
    );
}
