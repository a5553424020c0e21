//! The provider node: joins the peer network, advertises what it can run, and runs offered
//! jobs for strangers, but only definitions its own registry view says are approved.
//!
//! A job goes offered → accepted → transferring → running → finished → delivered, each
//! step written to the [`jobs::JobStore`] before it happens. The order of checks before
//! anything runs: requestor allow/deny lists, the offer's caps against the node's caps,
//! the registry view (approved and fresh, [`trust::RegistryView`]) and a free slot; then,
//! once the bundle is in hand, that its identity is the one offered (a tampered bundle is
//! refused), that an executor for its runtime is enabled, and that its limits fit the caps.
//! Inputs are fetched by BLAKE3 from the requestor (verified as they stream in) into a
//! per-job directory under the work dir and made read-only; outputs and captured stdio are
//! served back as blobs for `caps.retain_secs`, with a [`pinfold_net::JobResult`] carrying
//! a receipt signed with the node's identity key.
//!
//! Signed capability ads (executors, isolation, caps, free slots, bundles held) go out every
//! `network.ad_interval_secs` and soon after a peer connects or a slot frees. The node
//! gossips the registry checkpoint its own view has verified, and a gossiped checkpoint
//! that verifies under its log key and is ahead of its view makes the next offer sync at
//! once (a revocation travels at gossip speed instead of waiting out the sync interval);
//! one that is not the same history as its view raises a split-view alarm and stops every
//! offer until an operator deletes the alarm file ([`trust`]).
//!
//! The node never trusts its own earlier run: at start-up every job the store shows in
//! flight is marked `interrupted` and the work dir is emptied (the Docker executor removes
//! its orphaned containers when it starts).

pub mod cli;
pub mod config;
pub mod identity;
pub mod jobs;
pub mod reach;
pub mod retention;
pub mod trust;
pub mod units;

mod admission;
mod blobs;
mod cancel;
mod disk;
mod job;
mod metrics;
mod service;
mod table;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pinfold_net::{Keypair, Multiaddr, NetConfig, NetError, PeerId};
use tokio::sync::watch;

pub use config::NodeConfig;
pub use job::Fault;

/// Why the node could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// A file operation failed.
    #[error("{0}")]
    Io(String),
    /// The job store failed.
    #[error("job store: {0}")]
    Store(String),
    /// The network failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// No executor could be started.
    #[error("executor: {0}")]
    Executor(String),
}

/// Environment variable naming a test-only fault (see [`Fault`]); never set it in production.
pub const FAULT_ENV: &str = "PINFOLD_TEST_FAULT";

/// A running node.
#[derive(Debug)]
pub struct RunningNode {
    /// The node's peer id.
    pub peer_id: PeerId,
    /// Its listen addresses, each ending in `/p2p/<peer id>`.
    pub addrs: Vec<Multiaddr>,
    /// Jobs found in flight at start-up and marked interrupted.
    pub interrupted: Vec<String>,
    /// Where `/metrics` and `/healthz` are served, when configured.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Reachability at start-up (with relays configured, after the wait for a reservation).
    pub reachability: pinfold_net::Reachability,
    registry: Option<Arc<trust::RegistryView>>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningNode {
    /// The node's registry view (the verified log size, what checkpoint gossip taught it),
    /// when a registry is configured; what its `/metrics` reads, for in-process callers.
    pub fn registry(&self) -> Option<&trust::RegistryView> {
        self.registry.as_deref()
    }

    /// Stops serving, marks jobs in flight interrupted, removes their directories.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

fn parse_addrs(what: &str, list: &[String]) -> Result<Vec<Multiaddr>, NodeError> {
    list.iter()
        .map(|a| {
            a.parse::<Multiaddr>()
                .map_err(|e| NodeError::Config(format!("{what} address {a:?}: {e}")))
        })
        .collect()
}

fn parse_peers(what: &str, list: &[String]) -> Result<Vec<PeerId>, NodeError> {
    list.iter()
        .map(|p| {
            p.parse::<PeerId>()
                .map_err(|e| NodeError::Config(format!("{what} peer id {p:?}: {e}")))
        })
        .collect()
}

/// Creates `dir` (and parents) and makes it private to this user.
fn private_dir(dir: &Path) -> Result<(), NodeError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| NodeError::Io(format!("{}: {e}", dir.display())))
}

/// Removes everything inside the work dir: scratch of runs the node no longer tracks.
fn wipe_work_dir(dir: &Path) -> Result<usize, NodeError> {
    let mut n = 0;
    let entries =
        std::fs::read_dir(dir).map_err(|e| NodeError::Io(format!("{}: {e}", dir.display())))?;
    for e in entries.flatten() {
        let p = e.path();
        let r = match e.file_type() {
            Ok(t) if t.is_dir() => disk::remove_tree(&p),
            _ => std::fs::remove_file(&p),
        };
        match r {
            Ok(()) => n += 1,
            Err(err) => tracing::warn!("removing {}: {err}", p.display()),
        }
    }
    Ok(n)
}

/// Starts a node from its configuration (paths must already be absolute or resolved);
/// `keypair` overrides the identity file (tests and the demo).
pub async fn start(config: NodeConfig, keypair: Option<Keypair>) -> Result<RunningNode, NodeError> {
    private_dir(&config.paths.data_dir)?;
    private_dir(&config.paths.work_dir)?;
    let keypair = match keypair {
        Some(k) => k,
        None => identity::load_or_create(&config.key_file())?,
    };
    let store = jobs::JobStore::open(&config.paths.data_dir.join("jobs.sqlite"))?;
    let interrupted = store.recover()?;
    for id in &interrupted {
        tracing::warn!(job = %id, "job was in flight when the node stopped; marked interrupted");
    }
    let wiped = wipe_work_dir(&config.paths.work_dir)?;
    if wiped > 0 {
        tracing::info!("removed {wiped} leftover run directories");
    }

    let mut net = NetConfig::new(keypair);
    let mut listen_list = Vec::new();
    for l in &config.network.listen {
        listen_list.extend(reach::listen_arg(l).map_err(NodeError::Config)?);
    }
    let listen = parse_addrs("listen", &listen_list)?;
    net.listen = Vec::new();
    let bootstrap = reach::bootstrap_peers(&config.paths.data_dir, &config.network.bootstrap);
    net.bootstrap = parse_addrs("bootstrap", &bootstrap)?;
    net.relays = parse_addrs("relay", &config.network.relays)?;
    if let Some(r) = net
        .relays
        .iter()
        .find(|r| pinfold_net::network::split_peer(r).is_none())
    {
        return Err(NodeError::Config(format!(
            "relay address {r} must end in /p2p/<relay peer id>"
        )));
    }
    net.external = parse_addrs("external", &config.network.external)?;
    net.relay_server = config.network.relay_limits();
    let relay_wait = (!config.network.relays.is_empty())
        .then(|| Duration::from_millis(config.network.relay_wait_ms));
    let data_dir = config.paths.data_dir.clone();
    net.mdns = config.network.mdns;
    net.kad = config.network.kad;
    net.kad_server = true;
    net.gossip_heartbeat = Duration::from_millis(config.network.gossip_heartbeat_ms.max(10));
    config.network.apply_timeouts(&mut net);
    let metrics_listen = match &config.metrics.listen {
        Some(a) => Some(a.parse::<std::net::SocketAddr>().map_err(|e| {
            NodeError::Config(format!("metrics.listen {a:?}: {e} (expected IP:PORT)"))
        })?),
        None => None,
    };
    let store_path = config.paths.data_dir.join("jobs.sqlite");
    let retention_config = config.clone();
    let fault = Fault::from_env();
    let inner = service::Inner::new(config, store, fault).await?;
    let (client, events, event_loop) = pinfold_net::new(net, Some(inner.blobs.clone()))?;
    tokio::spawn(event_loop.run());
    for addr in listen {
        client.listen(addr).await?;
    }
    let reachability = match relay_wait {
        None => client.reachability().await?,
        Some(wait) => reach::wait_for_relay(&client, wait)
            .await
            .unwrap_or_default(),
    };
    let addrs = client.listen_addrs().await?;
    let peer_id = client.peer_id();
    let (shutdown, shutdown_rx) = watch::channel(false);
    tokio::spawn(reach::keep_status(
        client.clone(),
        data_dir,
        shutdown_rx.clone(),
    ));
    let metrics_addr = match metrics_listen {
        Some(addr) => {
            let sources = metrics::Sources {
                traffic: inner.traffic.clone(),
                blobs: inner.blobs.clone(),
                store: jobs::JobStore::open(&store_path)?,
                client: client.clone(),
                registry: inner.registry.clone(),
                started: std::time::Instant::now(),
            };
            Some(metrics::start(addr, sources, shutdown_rx.clone()).await?)
        }
        None => None,
    };
    tokio::spawn(retention::prune_loop(retention_config, shutdown_rx.clone()));
    let registry = inner.registry.clone();
    let node = Arc::new(service::Node::new(inner, client));
    let task = tokio::spawn(service::serve(node, events, shutdown_rx));
    Ok(RunningNode {
        peer_id,
        addrs,
        reachability,
        interrupted,
        metrics_addr,
        registry,
        shutdown,
        task,
    })
}

/// Lists the jobs in the store of the node configured by `config`.
pub fn list_jobs(config: &NodeConfig, limit: usize) -> Result<Vec<jobs::JobRow>, NodeError> {
    let path = config.paths.data_dir.join("jobs.sqlite");
    if !path.exists() {
        return Ok(Vec::new());
    }
    jobs::JobStore::open(&path)?.list(limit)
}
