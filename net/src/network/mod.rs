//! The node's network: one [`EventLoop`] owns the libp2p `Swarm`; cheap [`Client`] clones
//! send it `Command`s over a bounded channel and get answers on `oneshot`s; what happens
//! on the network comes out as [`Event`]s on a bounded stream.
//!
//! The shape follows rust-libp2p's file-sharing example (`new() -> (Client, events, loop)`,
//! pending maps keyed by request id). Everything is bounded: channels have fixed capacity,
//! every wait has a timeout, inbound job requests are capped per peer and in total, and the
//! pending maps refuse new entries past a fixed size. When the node does not drain its
//! events, inbound requests are answered busy instead of queueing.
//!
//! Misbehaviour (a malformed or oversized request, a forged or malformed gossip message, a
//! blob transfer that fails verification, a malformed blob request) is a strike against the
//! peer; `max_strikes` strikes within `strike_window` block the peer for `ban_duration`
//! (all its connections are closed and new ones refused).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::channel::mpsc as fmpsc;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, MessageId};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport, ResponseChannel};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, allow_block_list, autonat, connection_limits, dcutr,
    identify, kad, mdns, noise, ping, relay, tcp, yamux,
};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::ad::{ProviderAd, ProviderEntry, ProviderView};
use crate::codec::JobCodec;
use crate::config::NetConfig;
use crate::protocol::{JOB_PROTOCOL, Request, Response};
use crate::transfer::{self, BLOB_PROTOCOL, BlobStore};

mod client;
mod event_loop;
mod reach;

pub use client::Client;
pub use event_loop::EventLoop;
pub use reach::{MAX_ADVERTISED_ADDRS, NatStatus, Reachability, Route, is_relayed};

/// Gossipsub topic of provider ads.
pub const PROVIDERS_TOPIC: &str = "pinfold/providers/1";
/// Gossipsub topic of registry checkpoints.
pub const CHECKPOINTS_TOPIC: &str = "pinfold/checkpoints/1";
/// Identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/pinfold/id/1";
/// Kademlia protocol name (a private DHT, not the public IPFS one).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/pinfold/kad/1");

/// Entries each pending map holds at most; commands beyond are refused.
const MAX_PENDING: usize = 1024;
/// Longest wait for the event loop to take a local command.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks a response's caps and, for a result, that its receipt verifies and was signed
/// by the peer that sent it (a provider cannot hand over someone else's receipt).
fn check_response(response: &Response, peer: &PeerId) -> Result<(), String> {
    response.validate()?;
    if let Response::Result(crate::protocol::ResultReply::Done(r)) = response {
        let signer = r
            .receipt
            .verify()
            .map_err(|e| format!("receipt does not verify: {e}"))?;
        if signer != *peer {
            return Err("receipt is signed by another provider".into());
        }
    }
    Ok(())
}

/// Why a network operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// The transport or a behaviour could not be built.
    #[error("cannot build the network: {0}")]
    Build(String),
    /// Listening failed.
    #[error("cannot listen: {0}")]
    Listen(String),
    /// Dialling failed.
    #[error("cannot dial: {0}")]
    Dial(String),
    /// An address lacks its `/p2p/<peer id>` suffix.
    #[error("address {0} does not end in /p2p/<peer id>")]
    NoPeerId(Multiaddr),
    /// The peer is not connected.
    #[error("peer {0} is not connected")]
    NotConnected(PeerId),
    /// Publishing to gossip failed.
    #[error("cannot publish: {0}")]
    Publish(String),
    /// Signing failed.
    #[error("cannot sign: {0}")]
    Sign(String),
    /// A job-protocol request failed (dial failure, timeout, closed connection, bad response).
    #[error("request failed: {0}")]
    Request(String),
    /// The peer's response broke the protocol's caps.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// The response to an offer was not an offer reply.
    #[error("unexpected response to an offer")]
    UnexpectedResponse,
    /// No answer in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// Too many operations of this kind are in flight.
    #[error("too many pending operations")]
    Overloaded,
    /// The event loop has stopped.
    #[error("network event loop has stopped")]
    Closed,
}

/// What happens on the network, for the node to act on.
#[derive(Debug)]
pub enum Event {
    /// A new listen address, as a full multiaddr ending in `/p2p/<peer id>`.
    Listening(Multiaddr),
    /// First connection to a peer.
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// Its address on this connection.
        addr: Multiaddr,
    },
    /// Last connection to a peer closed.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
    },
    /// A verified, newer ad from a provider.
    ProviderAd {
        /// The provider (signer and gossip source).
        peer: PeerId,
        /// The ad.
        ad: ProviderAd,
    },
    /// A registry checkpoint note as gossiped (size-capped UTF-8, not yet checked).
    Checkpoint {
        /// Who published it.
        source: PeerId,
        /// The note text.
        note: String,
    },
    /// A job-protocol request that passed validation; answer it with the responder.
    Request {
        /// The requester.
        peer: PeerId,
        /// The request.
        request: Request,
        /// Where the answer goes (dropping it answers nothing; the requester times out).
        responder: Responder,
    },
    /// A peer was banned.
    Banned {
        /// The peer.
        peer: PeerId,
        /// The last strike's reason.
        reason: String,
    },
    /// This node's reachability changed (an address confirmed or expired, a relay
    /// reservation accepted, a probe failed).
    Reachability(Reachability),
    /// A hole punch to a peer reached over a relay ended.
    HolePunch {
        /// The peer.
        peer: PeerId,
        /// `Ok` when a direct connection replaced the relayed one, else why not.
        result: Result<(), String>,
    },
}

/// Answers one inbound request.
#[derive(Debug)]
pub struct Responder {
    channel: ResponseChannel<Response>,
    commands: mpsc::Sender<Command>,
}

impl Responder {
    /// Sends the answer.
    pub async fn send(self, response: Response) -> Result<(), NetError> {
        let (tx, rx) = oneshot::channel();
        let command = Command::Respond {
            channel: self.channel,
            response: Box::new(response),
            reply: tx,
        };
        tokio::time::timeout(LOCAL_TIMEOUT, async {
            self.commands
                .send(command)
                .await
                .map_err(|_| NetError::Closed)?;
            rx.await.map_err(|_| NetError::Closed)?
        })
        .await
        .map_err(|_| NetError::Timeout("the event loop"))?
    }
}

/// The events of a node.
pub type Events = fmpsc::Receiver<Event>;

/// Instructions from a [`Client`] to the [`EventLoop`].
#[derive(Debug)]
pub(crate) enum Command {
    /// Listen on an address; answer with the first full address.
    Listen {
        /// Where.
        addr: Multiaddr,
        /// Answer.
        reply: oneshot::Sender<Result<Multiaddr, NetError>>,
    },
    /// Connect to a peer at an address ending in `/p2p/<peer id>`.
    Dial {
        /// Where.
        addr: Multiaddr,
        /// Answer.
        reply: oneshot::Sender<Result<PeerId, NetError>>,
    },
    /// Current listen addresses (full).
    ListenAddrs {
        /// Answer.
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    /// Currently connected peers.
    ConnectedPeers {
        /// Answer.
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    /// Publish on a topic.
    Publish {
        /// Topic name.
        topic: &'static str,
        /// Payload.
        data: Vec<u8>,
        /// Answer.
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    /// Live providers.
    Providers {
        /// Answer.
        reply: oneshot::Sender<Vec<ProviderEntry>>,
    },
    /// Send a job-protocol request.
    Request {
        /// To whom.
        peer: PeerId,
        /// What.
        request: Box<Request>,
        /// Answer.
        reply: oneshot::Sender<Result<Response, NetError>>,
    },
    /// Answer an inbound request.
    Respond {
        /// The request's channel.
        channel: ResponseChannel<Response>,
        /// The answer.
        response: Box<Response>,
        /// Whether it could be queued.
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    /// Wait for the next successful ping of a peer.
    Ping {
        /// Whom.
        peer: PeerId,
        /// Round-trip time.
        reply: oneshot::Sender<Result<Duration, NetError>>,
    },
    /// Record a strike against a peer.
    Strike {
        /// Whom.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// This node's reachability.
    Reachability {
        /// Answer.
        reply: oneshot::Sender<Reachability>,
    },
    /// How each open connection to a peer runs.
    Routes {
        /// Whom.
        peer: PeerId,
        /// Answer (empty when not connected).
        reply: oneshot::Sender<Vec<Route>>,
    },
    /// Whether a peer is banned now.
    IsBanned {
        /// Whom.
        peer: PeerId,
        /// Answer.
        reply: oneshot::Sender<bool>,
    },
}

/// The combined behaviour.
#[derive(NetworkBehaviour)]
struct Behaviour {
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    gossipsub: gossipsub::Behaviour,
    jobs: request_response::Behaviour<JobCodec>,
    streams: libp2p_stream::Behaviour,
    relay_client: relay::client::Behaviour,
    relay_server: Toggle<relay::Behaviour>,
    dcutr: dcutr::Behaviour,
    autonat_client: autonat::v2::client::Behaviour,
    autonat_server: Toggle<autonat::v2::server::Behaviour>,
}

/// Builds a node: its client, its events, and the loop to spawn.
///
/// With a `store`, the node serves blobs from it; without, it only fetches. Listening on
/// `config.listen` and dialling `config.bootstrap` start when the loop runs.
pub fn new(
    config: NetConfig,
    store: Option<Arc<dyn BlobStore>>,
) -> Result<(Client, Events, EventLoop), NetError> {
    let limits = Arc::new(config.limits.clone());
    let peer_id = config.keypair.public().to_peer_id();
    let build = |e: &dyn std::fmt::Display| NetError::Build(e.to_string());

    let gossip_config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(config.gossip_heartbeat)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(limits.max_gossip_bytes)
        // Content-addressed ids: the same checkpoint from many providers is one message.
        .message_id_fn(|m: &gossipsub::Message| {
            MessageId::from(blake3::hash(&m.data).as_bytes().to_vec())
        })
        .build()
        .map_err(|e| build(&e))?;
    let mut gossipsub = gossipsub::Behaviour::new(
        MessageAuthenticity::Signed(config.keypair.clone()),
        gossip_config,
    )
    .map_err(|e| build(&e))?;
    let providers_topic = IdentTopic::new(PROVIDERS_TOPIC);
    let checkpoints_topic = IdentTopic::new(CHECKPOINTS_TOPIC);
    gossipsub
        .subscribe(&providers_topic)
        .map_err(|e| build(&e))?;
    gossipsub
        .subscribe(&checkpoints_topic)
        .map_err(|e| build(&e))?;

    let mdns = if config.mdns {
        Some(mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id).map_err(|e| build(&e))?)
    } else {
        None
    };
    let kad = if config.kad {
        let mut kc = kad::Config::new(KAD_PROTOCOL);
        kc.set_query_timeout(Duration::from_secs(30));
        let mut k = kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kc);
        if config.kad_server {
            k.set_mode(Some(kad::Mode::Server));
        }
        Some(k)
    } else {
        None
    };

    let streams = libp2p_stream::Behaviour::new();
    let mut control = streams.new_control();
    let (strikes_tx, strikes_rx) = mpsc::channel(64);
    let blob_server = match store {
        Some(store) => {
            let incoming = control.accept(BLOB_PROTOCOL).map_err(|e| build(&e))?;
            let server = transfer::Server::new(transfer::ServerConfig {
                store,
                total: limits.blob_serve_total,
                per_peer: limits.blob_serve_per_peer,
                max_blob: limits.max_blob_bytes,
                io_timeout: limits.blob_io_timeout,
                strikes: strikes_tx,
            });
            Some((server, incoming))
        }
        None => None,
    };

    let jobs = request_response::Behaviour::with_codec(
        JobCodec::new(limits.max_request_bytes, limits.max_response_bytes),
        [(StreamProtocol::new(JOB_PROTOCOL), ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(limits.request_timeout)
            .with_max_concurrent_streams(limits.max_concurrent_streams),
    );

    let conn_limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(limits.max_connections))
        .with_max_established_per_peer(Some(limits.max_connections_per_peer))
        .with_max_pending_incoming(Some(limits.max_pending_incoming));

    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL.to_string(), config.keypair.public())
            .with_agent_version(config.agent.clone()),
    );
    let ping = ping::Behaviour::new(ping::Config::new().with_interval(config.ping_interval));

    let relay_server = config.relay_server.as_ref().map(|l| {
        let mut r = relay::Behaviour::new(peer_id, reach::relay_config(l));
        // libp2p only offers relaying once the node has a confirmed external address; an
        // operator who asked for a relay gets one at once (on a LAN or a public IP that
        // no probe confirmed yet, it is still what was asked for).
        r.set_status(Some(relay::Status::Enable));
        r
    });
    let autonat_server = config
        .autonat_server
        .then(autonat::v2::server::Behaviour::default);
    let make_behaviour = |relay_client| Behaviour {
        blocked: allow_block_list::Behaviour::default(),
        limits: connection_limits::Behaviour::new(conn_limits),
        identify,
        ping,
        mdns: Toggle::from(mdns),
        kad: Toggle::from(kad),
        gossipsub,
        jobs,
        streams,
        relay_client,
        relay_server: Toggle::from(relay_server),
        dcutr: dcutr::Behaviour::new(peer_id),
        // Probes a candidate address every 5 s until confirmed (libp2p's default).
        autonat_client: autonat::v2::client::Behaviour::default(),
        autonat_server: Toggle::from(autonat_server),
    };

    let idle = config.idle_timeout;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| build(&e))?
        .with_quic()
        // The relay client is a transport too: listening on `<relay>/p2p-circuit` makes a
        // reservation, dialling such an address goes through the relay.
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| build(&e))?
        .with_behaviour(|_, relay_client| make_behaviour(relay_client))
        .map_err(|e| build(&e))?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(idle)
                .with_notify_handler_buffer_size(NonZeroUsize::new(32).expect("non-zero"))
        })
        .build();

    let (cmd_tx, cmd_rx) = mpsc::channel(config.command_capacity.max(1));
    let (ev_tx, ev_rx) = fmpsc::channel(config.event_capacity.max(1));

    let mut event_loop = EventLoop {
        swarm,
        commands: cmd_rx,
        command_sender: cmd_tx.downgrade(),
        events: ev_tx,
        strikes_rx,
        blob_server,
        limits: Arc::clone(&limits),
        providers_topic,
        checkpoints_topic,
        view: ProviderView::new(limits.max_providers, limits.ad_ttl),
        pending_listen: HashMap::new(),
        pending_dial: HashMap::new(),
        pending_requests: HashMap::new(),
        outbound_per_peer: HashMap::new(),
        queued_requests: HashMap::new(),
        queued_total: 0,
        pending_pings: HashMap::new(),
        in_flight: HashMap::new(),
        inbound_per_peer: HashMap::new(),
        strikes: HashMap::new(),
        bans: HashMap::new(),
        reach: Reachability::default(),
        connections: HashMap::new(),
        relays: HashMap::new(),
    };
    for addr in &config.external {
        // The swarm tells its behaviours, not its caller: record it here too.
        event_loop.swarm.add_external_address(addr.clone());
        event_loop.reach.confirm(addr.clone());
    }
    if config.relay_server.is_some() && config.external.is_empty() {
        // A relay's reservations name its external addresses; until AutoNAT confirms one,
        // it has none to give and refuses every reservation.
        tracing::warn!(
            "serving as a relay without a configured external address: reservations are \
             refused until a reachability probe confirms one"
        );
    }
    for addr in &config.listen {
        event_loop
            .swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen(format!("{addr}: {e}")))?;
    }
    for addr in &config.bootstrap {
        let Some((peer, bare)) = split_peer(addr) else {
            return Err(NetError::NoPeerId(addr.clone()));
        };
        event_loop.swarm.add_peer_address(peer, bare.clone());
        if let Some(kad) = event_loop.swarm.behaviour_mut().kad.as_mut() {
            kad.add_address(&peer, bare);
        }
        if let Err(e) = event_loop.swarm.dial(peer) {
            tracing::debug!(%peer, %e, "bootstrap dial failed");
        }
    }
    for relay in &config.relays {
        // Dial now; the reservation (a listen on `<relay>/p2p-circuit`) is asked for once
        // the connection is up, and again whenever it is lost (`EventLoop::keep_relays`).
        let Some((peer, bare)) = split_peer(relay) else {
            return Err(NetError::NoPeerId(relay.clone()));
        };
        event_loop.swarm.add_peer_address(peer, bare);
        event_loop
            .relays
            .insert(peer, reach::RelayState::new(relay.clone()));
        let _ = event_loop.swarm.dial(peer);
    }
    if !config.bootstrap.is_empty()
        && let Some(kad) = event_loop.swarm.behaviour_mut().kad.as_mut()
    {
        let _ = kad.bootstrap();
    }

    let client = Client {
        commands: cmd_tx,
        control,
        keypair: config.keypair,
        peer_id,
        fetches: Arc::new(Semaphore::new(limits.blob_fetch_total.max(1))),
        limits,
        ad_seq: Arc::new(std::sync::atomic::AtomicU64::new(0)),
    };
    Ok((client, ev_rx, event_loop))
}

/// `/p2p/<peer>`: dialling it uses whatever addresses the node knows for the peer.
pub fn peer_only(peer: PeerId) -> Multiaddr {
    Multiaddr::empty().with(Protocol::P2p(peer))
}

/// Splits `/…/p2p/<peer>` into the peer and the address without the suffix.
pub fn split_peer(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut bare = addr.clone();
    match bare.pop() {
        Some(Protocol::P2p(peer)) => Some((peer, bare)),
        _ => None,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
