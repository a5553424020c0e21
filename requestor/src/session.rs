//! The requestor's network presence: an ephemeral peer that dials providers, listens to
//! their ads and serves the blobs (bundle, inputs) they fetch from it.
//!
//! The key is generated per session: a requestor needs no reputation, and a fresh peer id
//! per run keeps runs unlinkable. It does not listen; providers fetch the bundle and
//! inputs over the connection the requestor opened. A later command about a stored job
//! (`status`, `get`, `cancel`, `logs`) starts its session with that job's key instead,
//! since a provider answers about a job only to the peer that offered it.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use indicatif::MultiProgress;
use pinfold_net::{
    BlobId, BlobReader, BlobStore, Client, Event, Keypair, MemoryBlobStore, Multiaddr, NetConfig,
    PathBlobStore, PeerId, ProviderEntry, Route,
};

use crate::progress::ProgressStore;

/// Blobs the requestor serves: a packed bundle in memory, input files in place.
#[derive(Debug, Default)]
pub struct RequestorBlobs {
    /// In-memory blobs (bundles).
    pub memory: MemoryBlobStore,
    /// Registered files (inputs).
    pub paths: PathBlobStore,
}

impl BlobStore for RequestorBlobs {
    fn open(&self, id: &BlobId) -> io::Result<Option<BlobReader>> {
        match self.memory.open(id)? {
            Some(r) => Ok(Some(r)),
            None => self.paths.open(id),
        }
    }
}

/// How to join the network.
#[derive(Debug, Clone, Default)]
pub struct SessionConfig {
    /// Peers to dial (providers or bootstrap nodes), each ending in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Local-network discovery.
    pub mdns: bool,
    /// The session key (default: a fresh one).
    pub keypair: Option<Keypair>,
}

/// A joined session.
#[derive(Debug)]
pub struct Session {
    /// The network handle.
    pub client: Client,
    /// What this session serves.
    pub blobs: Arc<RequestorBlobs>,
    /// The store the network serves from: `blobs`, with a progress bar on reads of blobs
    /// a run asked to watch.
    pub served: Arc<ProgressStore<RequestorBlobs>>,
    /// Where transfer progress bars are drawn (stderr; hidden when it is not a terminal).
    pub bars: MultiProgress,
    /// Peers dialled successfully.
    pub dialled: Vec<PeerId>,
    /// Dials that failed, with the error.
    pub failed: Vec<(Multiaddr, String)>,
    connected: Arc<Mutex<BTreeSet<PeerId>>>,
    addrs: Arc<Mutex<HashMap<PeerId, Multiaddr>>>,
    punch_failed: Arc<Mutex<BTreeSet<PeerId>>>,
}

impl Session {
    /// Starts the network and dials every bootstrap address (each with its own timeout).
    pub async fn start(config: SessionConfig) -> Result<Session, pinfold_net::NetError> {
        let keypair = config
            .keypair
            .clone()
            .unwrap_or_else(Keypair::generate_ed25519);
        let mut net = NetConfig::new(keypair);
        // One QUIC socket, so that a provider behind a NAT reached through a relay can
        // hole-punch to this requestor (DCUtR needs a socket whose mapping the relay saw).
        net.listen = vec![
            "/ip4/0.0.0.0/udp/0/quic-v1"
                .parse()
                .expect("a valid multiaddr"),
        ];
        // A requestor probes nobody's reachability and relays for nobody.
        net.autonat_server = false;
        net.mdns = config.mdns;
        net.kad = false;
        net.gossip_heartbeat = Duration::from_millis(200);
        let blobs = Arc::new(RequestorBlobs::default());
        let bars = MultiProgress::new();
        let served = Arc::new(ProgressStore::new(blobs.clone(), bars.clone()));
        let (client, mut events, event_loop) = pinfold_net::new(net, Some(served.clone()))?;
        tokio::spawn(event_loop.run());
        let connected = Arc::new(Mutex::new(BTreeSet::new()));
        let c = connected.clone();
        let addrs = Arc::new(Mutex::new(HashMap::new()));
        let a = addrs.clone();
        let punch_failed: Arc<Mutex<BTreeSet<PeerId>>> = Arc::default();
        let failed_punches = punch_failed.clone();
        // Drain events (the loop refuses requests when nobody listens) and track peers.
        tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                match ev {
                    Event::PeerConnected { peer, addr } => {
                        c.lock().unwrap_or_else(|e| e.into_inner()).insert(peer);
                        // Bounded by the connection limits: one entry per connected peer.
                        a.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(peer, addr);
                    }
                    Event::PeerDisconnected { peer } => {
                        c.lock().unwrap_or_else(|e| e.into_inner()).remove(&peer);
                    }
                    Event::HolePunch {
                        peer,
                        result: Err(_),
                    } => {
                        let mut f = failed_punches.lock().unwrap_or_else(|e| e.into_inner());
                        // Bounded: a session talks to a handful of providers.
                        if f.len() < 1024 {
                            f.insert(peer);
                        }
                    }
                    _ => {}
                }
            }
        });
        let dials = config.bootstrap.iter().map(|a| {
            let client = client.clone();
            let a = a.clone();
            async move { (a.clone(), client.dial(a).await) }
        });
        let mut dialled = Vec::new();
        let mut failed = Vec::new();
        for (addr, r) in futures::future::join_all(dials).await {
            match r {
                Ok(p) => {
                    if !dialled.contains(&p) {
                        dialled.push(p);
                    }
                }
                Err(e) => failed.push((addr, e.to_string())),
            }
        }
        Ok(Session {
            client,
            blobs,
            served,
            bars,
            dialled,
            failed,
            connected,
            addrs,
            punch_failed,
        })
    }

    /// Connects to `peer` (at the addresses its ad named, relayed ones included) and, if the
    /// connection runs through a relay, gives the hole punch that DCUtR starts at once up to
    /// `wait` to replace it, so that inputs and outputs move directly; returns the route
    /// then (`None` when the peer could not be reached here; the offer will say why).
    pub async fn settle_route(&self, peer: PeerId, wait: Duration) -> Option<Route> {
        if self
            .client
            .dial(pinfold_net::network::peer_only(peer))
            .await
            .is_err()
        {
            return None;
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let routes = self.client.routes(peer).await.ok()?;
            if let Some(direct) = routes.iter().find(|r| !r.is_relayed()) {
                return Some(direct.clone());
            }
            let failed = self
                .punch_failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&peer);
            if routes.is_empty() || failed || tokio::time::Instant::now() >= deadline {
                return routes.into_iter().next();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `peer` is connected now.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.connected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(peer)
    }

    /// The failed dials, as one line.
    pub fn failures(&self) -> String {
        self.failed
            .iter()
            .map(|(a, e)| format!("{a}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Where `peer` can be dialled again: the address of this session's connection to it
    /// and any bootstrap address naming it, each ending in `/p2p/<peer id>`.
    pub fn addrs_of(&self, peer: &PeerId, bootstrap: &[Multiaddr]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let seen = self
            .addrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(peer)
            .cloned();
        let suffix = format!("/p2p/{peer}");
        for a in seen.into_iter().chain(bootstrap.iter().cloned()) {
            let text = a.to_string();
            // Multiaddr text is canonical, so the suffix test is exact.
            let full = if text.ends_with(&suffix) {
                text
            } else if text.contains("/p2p/") {
                continue; // another peer's bootstrap address
            } else {
                format!("{text}{suffix}")
            };
            if !out.contains(&full) {
                out.push(full);
            }
        }
        out
    }

    /// Waits up to `wait` for an ad from each of `peers` (returns the whole view then, or
    /// at the deadline). A provider behind a NAT is reachable only at the relayed addresses
    /// its ad carries, so naming it is not enough to dial it.
    pub async fn wait_for_ads_from(&self, peers: &[PeerId], wait: Duration) -> Vec<ProviderEntry> {
        self.wait_for_view(wait, |ads| {
            peers.iter().all(|p| ads.iter().any(|e| e.peer == *p))
        })
        .await
    }

    /// Waits up to `wait` for ads: returns early once every dialled peer and at least
    /// `want` providers have advertised.
    pub async fn wait_for_ads(&self, want: usize, wait: Duration) -> Vec<ProviderEntry> {
        self.wait_for_view(wait, |ads| {
            let heard: BTreeSet<PeerId> = ads.iter().map(|e| e.peer).collect();
            self.dialled.iter().all(|p| heard.contains(p)) && ads.len() >= want.max(1)
        })
        .await
    }

    /// Polls the provider view every 50 ms until `enough` holds or `wait` has passed;
    /// returns the view then.
    async fn wait_for_view(
        &self,
        wait: Duration,
        enough: impl Fn(&[ProviderEntry]) -> bool,
    ) -> Vec<ProviderEntry> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let ads = self.client.providers().await.unwrap_or_default();
            if enough(&ads) || tokio::time::Instant::now() >= deadline {
                return ads;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
