//! Load: one provider under a thousand concurrent offers, slow-loris and garbage peers, mid-transfer disconnects.
//!
//! Every test runs a real `provider run` process against a real `task-defs serve` registry
//! and drives it from in-process `pinfold-net` peers (and, for traffic `pinfold-net` would
//! never send, a bare libp2p swarm with `libp2p-stream` and raw TCP sockets). Each test
//! prints what it measured on `figure:` lines (`cargo test -p pinfold-e2e load:: --
//! --nocapture | grep figure:`).

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::join_all;
use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use pinfold_e2e::{ProviderProcess, ReviewedRegistry, Scratch, bin, example, ok_stdout, run};
use pinfold_net::protocol::{ErrorReply, JOB_PROTOCOL, ResultReply};
use pinfold_net::transfer::BLOB_PROTOCOL;
use pinfold_net::{
    BlobId, BlobReader, BlobRef, BlobStore, Client, FetchLimits, InputEntry, JobId, JobResult,
    Keypair, MemoryBlobStore, Multiaddr, NetConfig, Offer, OfferReply, PeerId, RejectReason,
    Request, ResourceNeeds, Response, RunStatus, TransferError,
};
use tokio::io::{AsyncRead, AsyncReadExt as _, ReadBuf};

/// The input every ordinary job counts words in.
const CORPUS: &[u8] = b"the cat and the hat and the bat\nthe end\n";
/// Its name in the offer (and in `provider exec`'s input directory).
const CORPUS_NAME: &str = "corpus.txt";
/// libp2p's default connection (upgrade) timeout, which `pinfold-net` keeps: a TCP
/// connection that has not finished Noise and Yamux by then is closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Slack on every "closed within its timeout" check: timers, scheduling on 2 busy cores.
const SLACK: Duration = Duration::from_secs(3);

/// A registry with wordfreq published and approved by both trusted reviewers (k = 2).
struct World {
    s: Scratch,
    reg: ReviewedRegistry,
    definition: String,
    bundle: Arc<[u8]>,
}

impl World {
    fn new() -> World {
        let s = Scratch::new();
        let reg = ReviewedRegistry::start(&s);
        let dir = example("wordfreq");
        let definition = reg.approved(&dir);
        let packed = s.path("wordfreq.bundle");
        ok_stdout(&run("task-defs", &[&"pack", &dir, &"-o", &packed]));
        let bundle = std::fs::read(&packed).expect("packed bundle").into();
        World {
            s,
            reg,
            definition,
            bundle,
        }
    }

    /// A provider node `name` with `network` lines in `[network]` and `extra` tables.
    fn provider(&self, name: &str, network: &str, extra: &str) -> ProviderProcess {
        let toml = self.reg.provider_toml(network, extra);
        ProviderProcess::start(&self.s.path(name), Some(&toml), &[], &[])
    }

    /// The output digest `provider exec` computes for wordfreq over [`CORPUS`]: what every
    /// ordinary job the node runs must report and sign.
    fn expected_digest(&self) -> String {
        let dir = self.s.path("exec");
        std::fs::create_dir_all(&dir).expect("exec dir");
        let input = dir.join(CORPUS_NAME);
        std::fs::write(&input, CORPUS).expect("corpus");
        let out = std::process::Command::new(bin("provider"))
            .env("PINFOLD_CACHE_DIR", dir.join("cache"))
            .args(["exec", "--allow-unreviewed", "--json", "--input"])
            .arg(&input)
            .arg(example("wordfreq"))
            .output()
            .expect("provider exec");
        let v: serde_json::Value = serde_json::from_str(&ok_stdout(&out)).expect("exec json");
        v["outputs"].as_str().expect("outputs digest").to_string()
    }

    /// An offer of wordfreq over `input`, with the bundle, both served from `store`.
    fn offer(&self, store: &MemoryBlobStore, name: &str, input: Arc<[u8]>) -> Offer {
        let bundle = BlobRef {
            id: store.insert(Arc::clone(&self.bundle)),
            size: self.bundle.len() as u64,
        };
        let size = input.len() as u64;
        let blake3 = store.insert(input);
        Offer {
            definition: self.definition.clone(),
            bundle: Some(bundle),
            params: BTreeMap::new(),
            inputs: vec![InputEntry {
                name: name.to_string(),
                size,
                blake3,
            }],
            needs: ResourceNeeds::default(),
            secrets: Vec::new(),
            secret_values: BTreeMap::new(),
            registry_size: None,
        }
    }
}

fn provider_id(p: &ProviderProcess) -> (PeerId, Multiaddr) {
    (
        p.peer.parse().expect("provider peer id"),
        p.addr().parse().expect("provider address"),
    )
}

/// An in-process `pinfold-net` peer serving blobs from a store; its swarm stops when dropped.
struct Peer {
    client: Client,
    task: tokio::task::JoinHandle<()>,
}

impl Peer {
    async fn start(store: Arc<dyn BlobStore>, tweak: impl FnOnce(&mut NetConfig)) -> Peer {
        let mut config = NetConfig::local_test(Keypair::generate_ed25519());
        tweak(&mut config);
        let (client, mut events, event_loop) =
            pinfold_net::new(config, Some(store)).expect("building a peer");
        let task = tokio::spawn(async move {
            // A requestor receives no requests; the rest of its events are only drained.
            let drain = async { while events.next().await.is_some() {} };
            tokio::join!(event_loop.run(), drain);
        });
        Peer { client, task }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Aborting drops the swarm: every connection closes at once, as when a process dies.
        self.task.abort();
    }
}

/// Polls `f` every 50 ms until it holds or `within` passes; whether it held.
async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls for a job's result until it is done.
async fn await_result(
    client: &Client,
    provider: PeerId,
    job: &JobId,
    within: Duration,
) -> JobResult {
    let deadline = Instant::now() + within;
    loop {
        let reply = client
            .request(
                provider,
                Request::Result {
                    job_id: job.clone(),
                },
            )
            .await;
        match reply {
            Ok(Response::Result(ResultReply::Done(r))) => return *r,
            Ok(Response::Result(ResultReply::Pending(_)) | Response::Error(ErrorReply::Busy)) => {}
            other => panic!("result of job {job}: {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "job {job} not done within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fetches one blob the provider serves (verified group by group by the transfer itself).
async fn fetch(client: &Client, provider: PeerId, id: BlobId, size: u64) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut bytes = Vec::new();
        match client
            .fetch_blob(provider, id, FetchLimits::exact(size), &mut bytes)
            .await
        {
            Ok(_) => return bytes,
            // The provider serves a few transfers per peer at once; a stream it could not
            // take yet is dropped before any byte. Both are worth another try.
            Err(TransferError::Busy | TransferError::Io(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("fetching {id}: {e}"),
        }
    }
}

/// Checks a result as a requestor must: succeeded, receipt signed by the provider and about
/// us, every output and stdout fetched with the BLAKE3 the result names, and (when known)
/// the output digest of an independent `provider exec` run.
async fn check_delivery(client: &Client, provider: PeerId, r: &JobResult, expected: Option<&str>) {
    assert_eq!(
        r.outcome.status,
        RunStatus::Succeeded,
        "job {}: {:?}",
        r.job_id,
        r.outcome.reason
    );
    let signer = r.receipt.verify().expect("the receipt verifies");
    assert_eq!(signer, provider, "receipt signed by another peer");
    assert_eq!(r.receipt.body.requestor, client.peer_id().to_base58());
    assert_eq!(r.receipt.body.outputs, r.outcome.outputs);
    if let Some(e) = expected {
        assert_eq!(r.outcome.outputs, e, "output digest of job {}", r.job_id);
    }
    assert!(!r.files.is_empty(), "wordfreq writes freq.tsv");
    let mut blobs: Vec<(BlobId, u64)> = r.files.iter().map(|f| (f.blake3, f.size)).collect();
    blobs.push((r.outcome.stdout.id, r.outcome.stdout.size));
    for (id, size) in blobs {
        let bytes = fetch(client, provider, id, size).await;
        assert_eq!(BlobId::of(&bytes), id);
    }
}

/// Offers `offer` until a slot is free, then waits for the result.
async fn run_to_result(
    client: &Client,
    provider: PeerId,
    offer: &Offer,
    within: Duration,
) -> JobResult {
    let deadline = Instant::now() + within;
    let accept = loop {
        match client.offer(provider, offer.clone()).await {
            Ok(OfferReply::Accept(a)) => break a,
            Ok(OfferReply::Reject {
                reason: RejectReason::Busy,
            }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("offer: {other:?}"),
        }
    };
    await_result(client, provider, &accept.job_id, within).await
}

/// A fresh requestor peer runs one wordfreq job and checks the delivery; returns how long
/// the whole exchange took.
async fn ordinary_run(w: &World, p: &ProviderProcess, expected: Option<&str>) -> Duration {
    let started = Instant::now();
    let (provider, addr) = provider_id(p);
    let store = Arc::new(MemoryBlobStore::new());
    let offer = w.offer(&store, CORPUS_NAME, CORPUS.into());
    let peer = Peer::start(store, |_| {}).await;
    peer.client.dial(addr).await.expect("dialling the provider");
    let r = run_to_result(&peer.client, provider, &offer, Duration::from_secs(60)).await;
    check_delivery(&peer.client, provider, &r, expected).await;
    started.elapsed()
}

/// The `q`-quantile of `xs` (sorted here), in milliseconds.
fn quantile_ms(xs: &mut [Duration], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort();
    let i = ((xs.len() as f64 - 1.0) * q).round() as usize;
    xs[i].as_secs_f64() * 1000.0
}

/// Deterministic pseudo-random bytes (BLAKE3 in XOF mode).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// An idle peer measuring the provider's responsiveness until `stop`, two ways: the libp2p
/// ping round trip (answered on the connection's own task) and a job-protocol round trip
/// through the node (Status of a job that does not exist, from as many probes as the node
/// takes from one peer at once). It runs on its own thread and runtime so the figures
/// measure the provider, not the scheduling of this process's fifty busy peers.
/// Returns (ping round trips, status round trips, status answers that were busy).
fn spawn_prober(
    provider: PeerId,
    addr: Multiaddr,
    stop: Arc<AtomicBool>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> std::thread::JoinHandle<(Vec<Duration>, Vec<Duration>, usize)> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("prober runtime");
        rt.block_on(async move {
            let prober = Peer::start(Arc::new(MemoryBlobStore::new()), |c| {
                c.ping_interval = Duration::from_millis(10);
            })
            .await;
            prober.client.dial(addr).await.expect("dialling");
            let _ = ready.send(());
            let pings = tokio::spawn({
                let (client, stop) = (prober.client.clone(), Arc::clone(&stop));
                async move {
                    let mut rtts = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        rtts.push(client.ping(provider).await.expect("ping during the burst"));
                    }
                    rtts
                }
            });
            let statuses: Vec<_> = (0..4)
                .map(|_| {
                    let (client, stop) = (prober.client.clone(), Arc::clone(&stop));
                    tokio::spawn(async move {
                        let (mut rtts, mut busy) = (Vec::new(), 0);
                        while !stop.load(Ordering::Relaxed) {
                            let t = Instant::now();
                            let job_id = JobId("no-such-job".into());
                            match client.request(provider, Request::Status { job_id }).await {
                                Ok(Response::Error(ErrorReply::UnknownJob)) => {
                                    rtts.push(t.elapsed());
                                }
                                Ok(Response::Error(ErrorReply::Busy)) => busy += 1,
                                other => panic!("status during the burst: {other:?}"),
                            }
                        }
                        (rtts, busy)
                    })
                })
                .collect();
            let ping_rtts = pings.await.expect("ping task");
            let (mut status_rtts, mut status_busy) = (Vec::new(), 0);
            for t in join_all(statuses).await {
                let (rtts, busy) = t.expect("status task");
                status_rtts.extend(rtts);
                status_busy += busy;
            }
            (ping_rtts, status_rtts, status_busy)
        })
    })
}

const PEERS: usize = 50;
const OFFERS_PER_PEER: usize = 20;
const CONCURRENT_TASKS: u64 = 2;
/// wordfreq's `limits.memory`: the most one of its runs may hold.
const TASK_MEMORY_MIB: u64 = 64;
/// Memory allowed per connection (Noise and Yamux buffers, connection handlers).
const PER_CONNECTION_KIB: u64 = 1024;
/// Memory allowed per inbound request left waiting (these offers encode to ~700 bytes; the
/// decoded offer, its event and the task answering it fit in 16 KiB).
const PER_WAITING_OFFER_KIB: u64 = 16;
/// Compiling wordfreq once (cranelift's working set) and keeping the artifact.
const COMPILE_MIB: u64 = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_offers_get_typed_answers_in_bounded_memory() {
    let w = World::new();
    let expected = w.expected_digest();
    let p = w.provider(
        "p",
        "",
        &format!("[caps]\nconcurrent_tasks = {CONCURRENT_TASKS}\n"),
    );
    let (provider, addr) = provider_id(&p);
    let idle_rss = p.status_kib("VmRSS");
    let idle_hwm = p.status_kib("VmHWM");
    let idle_fds = p.fd_count();

    // Fifty requestors, each serving the bundle and the corpus, all connected first.
    let mut peers = Vec::with_capacity(PEERS);
    let mut offers = Vec::with_capacity(PEERS);
    for _ in 0..PEERS {
        let store = Arc::new(MemoryBlobStore::new());
        offers.push(w.offer(&store, CORPUS_NAME, CORPUS.into()));
        peers.push(Peer::start(store, |_| {}).await);
    }
    for r in join_all(peers.iter().map(|peer| peer.client.dial(addr.clone()))).await {
        r.expect("dialling the provider");
    }
    let connected_fds = p.fd_count();

    let stop = Arc::new(AtomicBool::new(false));
    let (ready, prober_ready) = tokio::sync::oneshot::channel();
    let prober = spawn_prober(provider, addr.clone(), Arc::clone(&stop), ready);
    prober_ready.await.expect("the prober connected");

    // The burst: every offer in flight at once.
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(PEERS * OFFERS_PER_PEER);
    for (i, peer) in peers.iter().enumerate() {
        for _ in 0..OFFERS_PER_PEER {
            let (client, offer) = (peer.client.clone(), offers[i].clone());
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let reply = client.offer(provider, offer).await;
                (i, t.elapsed(), reply)
            }));
        }
    }
    let mut accepted = Vec::new();
    let (mut busy, mut other, mut latencies) = (0usize, Vec::new(), Vec::new());
    for t in join_all(tasks).await {
        let (i, latency, reply) = t.expect("offer task");
        latencies.push(latency);
        match reply {
            Ok(OfferReply::Accept(a)) => accepted.push((i, a.job_id)),
            Ok(OfferReply::Reject {
                reason: RejectReason::Busy,
            }) => busy += 1,
            other_reply => other.push(format!("{other_reply:?}")),
        }
    }
    let burst = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (mut ping_rtts, mut status_rtts, status_busy) =
        tokio::task::spawn_blocking(move || prober.join().expect("prober thread"))
            .await
            .expect("joining the prober");
    let burst_fds = p.fd_count();

    let offers_total = PEERS * OFFERS_PER_PEER;
    assert!(
        other.is_empty(),
        "{} untyped or unexpected answers: {:?}",
        other.len(),
        &other[..other.len().min(5)]
    );
    assert_eq!(accepted.len() + busy, offers_total);
    assert!(busy > 0, "a 2-slot node took all {offers_total} offers");
    assert!(!accepted.is_empty(), "no offer was accepted");
    let answer_max = latencies.iter().max().copied().unwrap_or_default();
    let answer_p50 = quantile_ms(&mut latencies, 0.5);
    let answer_p99 = quantile_ms(&mut latencies, 0.99);

    // Every accepted job runs to a verified delivery.
    let done = join_all(accepted.iter().map(|(i, job)| {
        let client = &peers[*i].client;
        let expected = expected.as_str();
        async move {
            let r = await_result(client, provider, job, Duration::from_secs(60)).await;
            check_delivery(client, provider, &r, Some(expected)).await;
        }
    }))
    .await;
    assert_eq!(done.len(), accepted.len());
    let peak_hwm = p.status_kib("VmHWM");
    let after_rss = p.status_kib("VmRSS");

    // The node still serves an ordinary run afterwards.
    drop(peers);
    let after = ordinary_run(&w, &p, Some(&expected)).await;

    // What the node may hold beyond its idle footprint, from its configuration: every
    // running task's memory limit, a per-connection allowance (Noise and Yamux buffers,
    // handler state), every inbound request the network layer lets wait (in flight and in
    // the event channel) at a generous size per offer, and compiling the module once.
    let limits = pinfold_net::Limits::default();
    let waiting = limits.max_inbound_total as u64
        + NetConfig::new(Keypair::generate_ed25519()).event_capacity as u64;
    let bound_kib = CONCURRENT_TASKS * TASK_MEMORY_MIB * 1024
        + (PEERS as u64 + 2) * PER_CONNECTION_KIB
        + waiting * PER_WAITING_OFFER_KIB
        + COMPILE_MIB * 1024;
    let ping_p50 = quantile_ms(&mut ping_rtts, 0.5);
    let ping_p99 = quantile_ms(&mut ping_rtts, 0.99);
    let status_p50 = quantile_ms(&mut status_rtts, 0.5);
    let status_p99 = quantile_ms(&mut status_rtts, 0.99);
    eprintln!(
        "figure: test=burst offers={offers_total} peers={PEERS} accepted={} busy={busy} \
         burst_ms={} answer_p50_ms={answer_p50:.1} answer_p99_ms={answer_p99:.1} \
         answer_max_ms={} idle_rss_mib={:.1} idle_hwm_mib={:.1} peak_hwm_mib={:.1} \
         after_rss_mib={:.1} ping_samples={} ping_p50_ms={ping_p50:.2} ping_p99_ms={ping_p99:.2} \
         status_samples={} status_busy={status_busy} status_p50_ms={status_p50:.1} \
         status_p99_ms={status_p99:.1} idle_fds={idle_fds} connected_fds={connected_fds} \
         burst_fds={burst_fds} after_run_ms={} rss_bound_mib={:.1}",
        accepted.len(),
        burst.as_millis(),
        answer_max.as_millis(),
        idle_rss as f64 / 1024.0,
        idle_hwm as f64 / 1024.0,
        peak_hwm as f64 / 1024.0,
        after_rss as f64 / 1024.0,
        ping_rtts.len(),
        status_rtts.len(),
        after.as_millis(),
        bound_kib as f64 / 1024.0,
    );
    assert!(
        peak_hwm <= idle_rss + bound_kib,
        "peak rss {peak_hwm} KiB over idle {idle_rss} KiB plus the bound {bound_kib} KiB"
    );
    assert!(
        answer_max < Duration::from_secs(20),
        "an offer took {answer_max:?} to answer"
    );
    // Responsiveness: the median must stay low; the tail only has to show no stall. On two
    // cores shared with the fifty peers, the other tests and whatever else the machine runs,
    // single samples of 0.5 to 1.6 s were seen while the median stayed under 100 ms.
    assert!(
        ping_rtts.len() >= 5,
        "too few ping samples: {}",
        ping_rtts.len()
    );
    assert!(
        ping_p50 < 250.0,
        "ping p50 {ping_p50:.1} ms during the burst"
    );
    assert!(
        ping_p99 < 2000.0,
        "ping p99 {ping_p99:.1} ms during the burst"
    );
    assert!(
        !status_rtts.is_empty(),
        "no status answered during the burst"
    );
    assert!(
        status_p50 < 1000.0,
        "status p50 {status_p50:.1} ms during the burst"
    );
    assert!(
        status_p99 < 3000.0,
        "status p99 {status_p99:.1} ms during the burst"
    );
}

/// A bare libp2p node (TCP, Noise, Yamux and `libp2p-stream` only) that opens raw streams
/// on the node's protocols: the traffic of a peer that does not follow them.
struct Bare {
    key: Keypair,
    peer: PeerId,
    control: libp2p_stream::Control,
    task: tokio::task::JoinHandle<()>,
}

impl Bare {
    /// Connects to the provider as `key`; an error when the connection does not come up.
    async fn connect(key: Keypair, provider: PeerId, addr: &Multiaddr) -> Result<Bare, String> {
        use libp2p::swarm::SwarmEvent;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default(),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .expect("tcp transport")
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .expect("stream behaviour")
            // This side never gives up a connection: only the provider may close it.
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
            .build();
        swarm.dial(addr.clone()).map_err(|e| e.to_string())?;
        let up = async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == provider => {
                        return Ok(());
                    }
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        return Err(error.to_string());
                    }
                    SwarmEvent::ConnectionClosed { .. } => return Err("connection closed".into()),
                    _ => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), up)
            .await
            .map_err(|_| "connecting timed out".to_string())??;
        let peer = *swarm.local_peer_id();
        let control = swarm.behaviour().new_control();
        let task = tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        });
        Ok(Bare {
            key,
            peer,
            control,
            task,
        })
    }

    async fn new(provider: PeerId, addr: &Multiaddr) -> Bare {
        Bare::connect(Keypair::generate_ed25519(), provider, addr)
            .await
            .expect("connecting a bare peer")
    }

    async fn open(&mut self, provider: PeerId, protocol: libp2p::StreamProtocol) -> libp2p::Stream {
        tokio::time::timeout(
            Duration::from_secs(10),
            self.control.open_stream(provider, protocol),
        )
        .await
        .expect("opening a stream in time")
        .expect("opening a stream")
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn job_protocol() -> libp2p::StreamProtocol {
    libp2p::StreamProtocol::new(JOB_PROTOCOL)
}

/// Holds a libp2p stream open without sending until the provider ends it (end of stream
/// or reset); how long after `opened` that was, or `None` if still open after `cap`.
async fn hold_stream(mut s: libp2p::Stream, opened: Instant, cap: Duration) -> Option<Duration> {
    let mut buf = [0u8; 256];
    let until_closed = async {
        while let Ok(n) = s.read(&mut buf).await
            && n > 0
        {}
    };
    tokio::time::timeout(cap, until_closed).await.ok()?;
    Some(opened.elapsed())
}

/// Connects to the provider's TCP port, sends `junk` (maybe nothing) and holds the
/// connection until the provider ends it; how long that took, or `None` after `cap`.
async fn hold_tcp(port: u16, junk: Vec<u8>, cap: Duration) -> Option<Duration> {
    use tokio::io::AsyncWriteExt as _;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tcp connect");
    let opened = Instant::now();
    // The node may cut the connection before all of the junk is written.
    let _ = s.write_all(&junk).await;
    let mut buf = [0u8; 256];
    let until_closed = async {
        while let Ok(n) = s.read(&mut buf).await
            && n > 0
        {}
    };
    tokio::time::timeout(cap, until_closed).await.ok()?;
    Some(opened.elapsed())
}

/// Every holder's answer, in order.
async fn gather(waits: Vec<tokio::task::JoinHandle<Option<Duration>>>) -> Vec<Option<Duration>> {
    let mut out = Vec::with_capacity(waits.len());
    for w in waits {
        out.push(w.await.expect("holder task"));
    }
    out
}

/// After the node has settled following `ordinary_run`: its descriptor count once two
/// samples a second apart agree (a closed connection's socket goes a moment after the peer).
async fn settled_fds(p: &ProviderProcess) -> usize {
    let mut last = p.fd_count();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = p.fd_count();
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the provider's descriptor count never settled (last {last})");
}

/// Descriptors the provider may hold above its settled baseline and still count as back to
/// it (sqlite's journal, a socket in the middle of closing).
const FD_SLACK: usize = 3;

// 8 peers × 4 silent blob streams: were serving slots (2 per peer, 16 in all) taken before a
// request arrived, these would hold every one of them and the legitimate requestor's output
// download would be refused busy until they time out.
const LORIS_PEERS: usize = 8;
const LORIS_JOB_STREAMS: usize = 8;
const LORIS_BLOB_STREAMS: usize = 4;
const LORIS_TCP: usize = 40;
const LORIS_REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
const LORIS_TRANSFER_TIMEOUT: Duration = Duration::from_secs(4);
const LORIS_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_streams_and_silent_connections_are_closed_within_the_timeouts() {
    let w = World::new();
    let p = w.provider(
        "p",
        &format!(
            "request_timeout_ms = {}\ntransfer_timeout_ms = {}\nidle_timeout_ms = {}",
            LORIS_REQUEST_TIMEOUT.as_millis(),
            LORIS_TRANSFER_TIMEOUT.as_millis(),
            LORIS_IDLE_TIMEOUT.as_millis()
        ),
        "",
    );
    let (provider, addr) = provider_id(&p);
    // Warm up (bundle held, module compiled), so the baseline is the node's steady state.
    ordinary_run(&w, &p, None).await;
    let baseline = settled_fds(&p).await;

    let setup = Instant::now();
    let open = Arc::new(AtomicUsize::new(0));
    let blob_open = Arc::new(AtomicUsize::new(0));
    let mut job_waits = Vec::new();
    let mut blob_waits = Vec::new();
    let mut loris = Vec::new();
    for _ in 0..LORIS_PEERS {
        let mut b = Bare::new(provider, &addr).await;
        for (n, protocol, waits) in [
            (LORIS_JOB_STREAMS, job_protocol(), &mut job_waits),
            (LORIS_BLOB_STREAMS, BLOB_PROTOCOL, &mut blob_waits),
        ] {
            for _ in 0..n {
                let s = b.open(provider, protocol.clone()).await;
                let open = Arc::clone(&open);
                open.fetch_add(1, Ordering::SeqCst);
                let blob = (protocol == BLOB_PROTOCOL).then(|| Arc::clone(&blob_open));
                if let Some(b) = &blob {
                    b.fetch_add(1, Ordering::SeqCst);
                }
                let cap = LORIS_REQUEST_TIMEOUT.max(LORIS_TRANSFER_TIMEOUT) + SLACK;
                waits.push(tokio::spawn(async move {
                    let closed = hold_stream(s, Instant::now(), cap).await;
                    open.fetch_sub(1, Ordering::SeqCst);
                    if let Some(b) = blob {
                        b.fetch_sub(1, Ordering::SeqCst);
                    }
                    closed
                }));
            }
        }
        loris.push(b);
    }
    let port = p.tcp_port();
    let tcp_waits: Vec<_> = (0..LORIS_TCP)
        .map(|_| tokio::spawn(hold_tcp(port, Vec::new(), HANDSHAKE_TIMEOUT + SLACK)))
        .collect();
    assert!(
        eventually(Duration::from_secs(5), || p.fd_count()
            >= baseline + LORIS_TCP)
        .await,
        "the silent tcp connections never reached the node"
    );
    let loaded_fds = p.fd_count();

    // A legitimate requestor is served while all of that is held open.
    let setup_ms = setup.elapsed().as_millis();
    let legit = ordinary_run(&w, &p, None).await;
    let still_open = open.load(Ordering::SeqCst);
    let blob_still_open = blob_open.load(Ordering::SeqCst);

    let job_closed = gather(job_waits).await;
    let blob_closed = gather(blob_waits).await;
    let tcp_closed = gather(tcp_waits).await;
    let max = |v: &[Option<Duration>]| v.iter().flatten().max().copied().unwrap_or_default();
    let (job_max, blob_max, tcp_max) = (max(&job_closed), max(&blob_closed), max(&tcp_closed));
    let timed_out_jobs = job_closed
        .iter()
        .flatten()
        .filter(|d| **d + Duration::from_millis(500) >= LORIS_REQUEST_TIMEOUT)
        .count();

    // With the streams gone, idle connections close; descriptors return to the baseline
    // although the slow-loris peers never hang up themselves.
    let t = Instant::now();
    let back = eventually(Duration::from_secs(15), || {
        p.fd_count() <= baseline + FD_SLACK
    })
    .await;
    let settle = t.elapsed();
    let final_fds = p.fd_count();
    let after = ordinary_run(&w, &p, None).await;
    eprintln!(
        "figure: test=slow-loris loris_peers={LORIS_PEERS} job_streams={} blob_streams={} \
         silent_tcp={LORIS_TCP} request_timeout_ms={} transfer_timeout_ms={} idle_timeout_ms={} \
         job_closed_max_ms={} job_held_to_timeout={timed_out_jobs} blob_closed_max_ms={} \
         blob_dropped_at_accept={} tcp_closed_max_ms={} baseline_fds={baseline} loaded_fds={loaded_fds} \
         fds_back_after_ms={} final_fds={final_fds} legit_run_ms={} still_open_at_legit_end={still_open} \
         after_run_ms={} setup_ms={setup_ms}",
        job_closed.len(),
        blob_closed.len(),
        LORIS_REQUEST_TIMEOUT.as_millis(),
        LORIS_TRANSFER_TIMEOUT.as_millis(),
        LORIS_IDLE_TIMEOUT.as_millis(),
        job_max.as_millis(),
        blob_max.as_millis(),
        blob_closed
            .iter()
            .flatten()
            .filter(|d| **d < Duration::from_secs(1))
            .count(),
        tcp_max.as_millis(),
        settle.as_millis(),
        legit.as_millis(),
        after.as_millis(),
    );
    assert!(
        job_closed.iter().all(Option::is_some),
        "job streams left open: {job_closed:?}"
    );
    assert!(job_max <= LORIS_REQUEST_TIMEOUT + SLACK, "{job_max:?}");
    assert!(
        timed_out_jobs > 0,
        "no job stream was held until the request timeout"
    );
    assert!(
        blob_closed.iter().all(Option::is_some),
        "blob streams left open: {blob_closed:?}"
    );
    assert!(blob_max <= LORIS_TRANSFER_TIMEOUT + SLACK, "{blob_max:?}");
    assert!(
        tcp_closed.iter().all(Option::is_some),
        "silent tcp left open: {tcp_closed:?}"
    );
    assert!(tcp_max <= HANDSHAKE_TIMEOUT + SLACK, "{tcp_max:?}");
    assert!(
        still_open > 0,
        "the legitimate run outlasted every slow-loris stream"
    );
    // Its output download was served while every silent blob stream was still held: silent
    // streams never take serving slots (with slots taken before the request, this run
    // waited out the slow-loris, about 3.9 s, and found these streams closed). A stream
    // closed within a second of opening never reached the server: libp2p-stream hands
    // inbound streams over a channel without buffer and drops what arrives while the
    // server is busy accepting the previous one (seen: 2 of 32 in a burst); those are not
    // held, so they are counted apart, and must stay few.
    let total_blob = LORIS_PEERS * LORIS_BLOB_STREAMS;
    let dropped_at_accept = blob_closed
        .iter()
        .flatten()
        .filter(|d| **d < Duration::from_secs(1))
        .count();
    assert!(
        dropped_at_accept <= total_blob / 4,
        "{dropped_at_accept} of {total_blob} silent blob streams dropped at accept"
    );
    assert_eq!(
        blob_still_open + dropped_at_accept,
        total_blob,
        "the legitimate run had to wait for silent blob streams to time out"
    );
    assert!(
        back,
        "descriptors stayed at {final_fds}, baseline {baseline}"
    );
    drop(loris);
}

/// Strikes that get a peer banned (`pinfold_net::Limits::default().max_strikes`).
const STRIKES: u64 = 3;

/// Sends `bytes` as one request on a fresh job-protocol stream and reads the answer.
async fn exchange(b: &mut Bare, provider: PeerId, bytes: &[u8]) -> io::Result<Vec<u8>> {
    let s = tokio::time::timeout(
        Duration::from_secs(10),
        b.control.open_stream(provider, job_protocol()),
    )
    .await
    .map_err(|_| io::Error::other("opening timed out"))?
    .map_err(io::Error::other)?;
    // Written and read at once: the node stops reading at its cap and answers, and a
    // writer waiting for flow-control credit would never see that answer.
    let (mut r, mut wr) = s.split();
    let write = async {
        let _ = wr.write_all(bytes).await;
        let _ = wr.close().await;
    };
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut answer));
    let ((), read) = tokio::join!(write, read);
    read.map_err(|_| io::Error::other("no answer in time"))??;
    Ok(answer)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether the provider logged a ban of `peer`.
fn banned_in_log(p: &ProviderProcess, peer: &PeerId) -> bool {
    let peer = peer.to_string();
    p.log()
        .lines()
        .any(|l| l.contains("peer banned") && l.contains(&peer))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_job_and_blob_protocols_bans_the_sender_and_junk_tcp_is_cut() {
    let w = World::new();
    let p = w.provider("p", "", "");
    let (provider, addr) = provider_id(&p);
    // A legitimate requestor stays connected throughout.
    let store = Arc::new(MemoryBlobStore::new());
    let offer = w.offer(&store, CORPUS_NAME, CORPUS.into());
    let legit = Peer::start(store, |_| {}).await;
    legit.client.dial(addr.clone()).await.expect("dialling");

    // Job protocol: random bytes, an oversized request, random bytes again.
    let mut job_junk = Bare::new(provider, &addr).await;
    let mut answers = Vec::new();
    for i in 0..STRIKES {
        let len = if i == 1 { 300 * 1024 } else { 1000 };
        answers.push(exchange(&mut job_junk, provider, &noise(i, len)).await);
    }
    let first = answers[0]
        .as_deref()
        .expect("an answer to the first garbage");
    assert!(contains(first, b"undecodable request"), "{first:?}");
    let second = answers[1]
        .as_deref()
        .expect("an answer to the oversized request");
    assert!(contains(second, b"exceeds"), "{second:?}");

    // Blob protocol: requests of the right length with the wrong magic; the server drops
    // each stream without a header.
    let mut blob_junk = Bare::new(provider, &addr).await;
    let mut blob_answers = Vec::new();
    for i in 0..STRIKES {
        let mut s = blob_junk.open(provider, BLOB_PROTOCOL).await;
        let _ = s.write_all(&noise(100 + i, 44)).await;
        let _ = s.flush().await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "the blob server kept a garbage stream open");
        blob_answers.push(answer.len());
    }
    assert!(blob_answers.iter().all(|n| *n == 0), "{blob_answers:?}");

    // Both senders are banned: logged, and turned away when they come back.
    let t = Instant::now();
    for peer in [job_junk.peer, blob_junk.peer] {
        assert!(
            eventually(Duration::from_secs(10), || banned_in_log(&p, &peer)).await,
            "{peer} was not banned: {}",
            p.log()
        );
    }
    let banned_ms = t.elapsed().as_millis();
    for junk in [&job_junk, &blob_junk] {
        // Coming back under the same key: refused at connection, or at least never answered.
        match Bare::connect(junk.key.clone(), provider, &addr).await {
            Err(_) => {}
            Ok(mut again) => {
                let answer = exchange(&mut again, provider, &noise(7, 100)).await;
                assert!(
                    answer.as_ref().map_or(true, Vec::is_empty),
                    "a banned peer was answered: {answer:?}"
                );
            }
        }
    }

    // Junk on the TCP port: the connection is cut without a handshake.
    let port = p.tcp_port();
    let junk: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0xff; 70_000],
        [&b"\x13/multistream/1.0.0\n"[..], &noise(9, 4096)].concat(),
        noise(10, 1 << 20),
    ];
    let tcp: Vec<_> = join_all(
        junk.into_iter()
            .map(|j| hold_tcp(port, j, HANDSHAKE_TIMEOUT + SLACK)),
    )
    .await;
    assert!(
        tcp.iter().all(Option::is_some),
        "junk connections left open: {tcp:?}"
    );
    let tcp_max = tcp.iter().flatten().max().copied().unwrap_or_default();

    // The legitimate requestor, connected all along, is served and was never struck out.
    let r = run_to_result(&legit.client, provider, &offer, Duration::from_secs(60)).await;
    check_delivery(&legit.client, provider, &r, None).await;
    assert!(!banned_in_log(&p, &legit.client.peer_id()));
    eprintln!(
        "figure: test=garbage job_garbage_answers={} blob_garbage_answer_bytes={blob_answers:?} \
         ban_logged_within_ms={banned_ms} junk_tcp_closed_max_ms={} legit_job={}",
        answers.iter().filter(|a| a.is_ok()).count(),
        tcp_max.as_millis(),
        r.job_id,
    );
}

/// Serves blobs from memory, except that every content pass over `stall` (the serving side
/// reads a blob once to hash it, then again to send it) stops after `after` bytes and never
/// resumes: a requestor whose upload hangs mid-transfer, until it goes away.
struct StallingStore {
    inner: MemoryBlobStore,
    stall: BlobId,
    after: usize,
    opens: AtomicUsize,
}

impl BlobStore for StallingStore {
    fn open(&self, id: &BlobId) -> io::Result<Option<BlobReader>> {
        let Some(blob) = self.inner.open(id)? else {
            return Ok(None);
        };
        if *id != self.stall || self.opens.fetch_add(1, Ordering::SeqCst) == 0 {
            return Ok(Some(blob));
        }
        Ok(Some(BlobReader {
            len: blob.len,
            reader: Box::new(Stall {
                inner: blob.reader,
                left: self.after,
            }),
        }))
    }
}

struct Stall {
    inner: Box<dyn AsyncRead + Send + Unpin>,
    left: usize,
}

impl AsyncRead for Stall {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.left == 0 {
            // Never woken: the transfer hangs here until the peer is dropped.
            return Poll::Pending;
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

const BIG_INPUT: usize = 32 << 20;
const SENT_BEFORE_STALL: usize = 8 << 20;

/// The job's row in `provider jobs --json`, once it has one with a status.
fn job_row(p: &ProviderProcess, job: &JobId) -> Option<serde_json::Value> {
    let jobs: serde_json::Value = serde_json::from_str(&p.jobs_json()).ok()?;
    jobs.as_array()?
        .iter()
        .find(|j| j["id"] == job.0.as_str() && !j["status"].is_null())
        .cloned()
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requestor_gone_mid_transfer_leaves_a_failed_job_and_no_residue() {
    let w = World::new();
    let p = w.provider("p", "", "[caps]\nretain_secs = 2\n");
    let (provider, addr) = provider_id(&p);
    ordinary_run(&w, &p, None).await;
    let baseline = settled_fds(&p).await;

    let big: Arc<[u8]> = noise(42, BIG_INPUT).into();
    let memory = MemoryBlobStore::new();
    let offer = w.offer(&memory, "big.txt", Arc::clone(&big));
    let store = Arc::new(StallingStore {
        inner: memory,
        stall: BlobId::of(&big),
        after: SENT_BEFORE_STALL,
        opens: AtomicUsize::new(0),
    });
    let peer = Peer::start(store, |_| {}).await;
    peer.client.dial(addr).await.expect("dialling");
    let job = match peer.client.offer(provider, offer).await {
        Ok(OfferReply::Accept(a)) => a.job_id,
        other => panic!("offer: {other:?}"),
    };
    let job_dir = p.dir.join("work").join(&job.0);
    let partial = job_dir.join("input/big.txt");
    assert!(
        eventually(Duration::from_secs(20), || file_len(&partial)
            >= (SENT_BEFORE_STALL / 2) as u64)
        .await,
        "the input transfer never got going: {}",
        p.log()
    );
    let in_flight = file_len(&partial);
    let fds_in_flight = p.fd_count();

    // The requestor vanishes mid-transfer.
    let gone = Instant::now();
    drop(peer);
    let mut row = None;
    assert!(
        eventually(Duration::from_secs(30), || {
            row = job_row(&p, &job);
            row.is_some()
        })
        .await,
        "the job never ended: {}",
        p.jobs_json()
    );
    let ended = gone.elapsed();
    let row = row.expect("a row");
    assert_eq!(row["status"], "rejected", "{row}");
    let detail = row["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("fetching input big.txt"), "{row}");

    // The partial input goes with the job's end (the store's row and the removal are not
    // one atomic step, hence the short wait: far shorter than the 2 s retention, so only
    // the job's end can have removed it), the rest after retention.
    let input_dir = job_dir.join("input");
    let input_gone = eventually(Duration::from_secs(1), || !input_dir.exists()).await;
    let t = Instant::now();
    assert!(
        eventually(Duration::from_secs(15), || !job_dir.exists()).await,
        "{} outlived the retention",
        job_dir.display()
    );
    let dir_gone = t.elapsed();
    let fds_back = eventually(Duration::from_secs(10), || {
        p.fd_count() <= baseline + FD_SLACK
    })
    .await;
    let final_fds = p.fd_count();
    let after = ordinary_run(&w, &p, None).await;
    eprintln!(
        "figure: test=mid-transfer input_bytes={BIG_INPUT} received_at_disconnect={in_flight} \
         job_failed_after_ms={} input_removed_at_end={input_gone} work_dir_gone_after_ms={} \
         baseline_fds={baseline} in_flight_fds={fds_in_flight} final_fds={final_fds} \
         after_run_ms={}",
        ended.as_millis(),
        dir_gone.as_millis(),
        after.as_millis(),
    );
    assert!(input_gone, "the partial input outlived its job");
    assert!(
        fds_back,
        "descriptors stayed at {final_fds}, baseline {baseline}"
    );
}
