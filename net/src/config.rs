//! Node configuration: addresses, discovery switches and every limit in one place.

use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::identity::Keypair;

/// Every bound the network layer enforces. The defaults suit a public provider; tests
/// shrink the timers.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest job-protocol request read (the CBOR codec cuts reading there).
    pub max_request_bytes: u64,
    /// Largest job-protocol response read.
    pub max_response_bytes: u64,
    /// Timeout of one job-protocol exchange (including the node's decision time).
    pub request_timeout: Duration,
    /// Job-protocol requests one peer may have awaiting an answer; more are answered busy.
    pub max_inbound_per_peer: usize,
    /// Job-protocol requests awaiting an answer from all peers together.
    pub max_inbound_total: usize,
    /// Concurrent job-protocol streams per connection (the request-response limit); half
    /// of them is the most requests this node sends one peer at once, the rest wait.
    pub max_concurrent_streams: usize,
    /// Strikes (malformed or oversized messages, forged ads, lying transfers) before a ban.
    pub max_strikes: u32,
    /// How long strikes are remembered.
    pub strike_window: Duration,
    /// How long a banned peer stays blocked.
    pub ban_duration: Duration,
    /// Peers with strikes or bans tracked at once (oldest forgotten first).
    pub max_tracked_peers: usize,
    /// Providers kept in the view.
    pub max_providers: usize,
    /// Lifetime of an ad without a newer one.
    pub ad_ttl: Duration,
    /// How far in the future an ad's timestamp may be.
    pub max_clock_skew: Duration,
    /// Largest gossip message (a checkpoint note of up to 128 KiB fits).
    pub max_gossip_bytes: usize,
    /// Largest checkpoint note carried.
    pub max_checkpoint_bytes: usize,
    /// Blob transfers served at once to all peers.
    pub blob_serve_total: usize,
    /// Blob transfers served at once to one peer.
    pub blob_serve_per_peer: usize,
    /// Blob fetches this node runs at once.
    pub blob_fetch_total: usize,
    /// Largest blob this node serves or fetches.
    pub max_blob_bytes: u64,
    /// Longest wait for any single read or write of a transfer (request, header, one group).
    pub blob_io_timeout: Duration,
    /// Longest wait to open a stream (includes dialling).
    pub open_timeout: Duration,
    /// Established connections in total.
    pub max_connections: u32,
    /// Established connections per peer.
    pub max_connections_per_peer: u32,
    /// Connections being set up at once (incoming).
    pub max_pending_incoming: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 256 * 1024,
            max_response_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            max_inbound_per_peer: 4,
            max_inbound_total: 256,
            max_concurrent_streams: 16,
            max_strikes: 3,
            strike_window: Duration::from_secs(600),
            ban_duration: Duration::from_secs(3600),
            max_tracked_peers: 4096,
            max_providers: 1024,
            ad_ttl: Duration::from_secs(300),
            max_clock_skew: Duration::from_secs(120),
            max_gossip_bytes: 160 * 1024,
            max_checkpoint_bytes: 128 * 1024,
            blob_serve_total: 16,
            blob_serve_per_peer: 2,
            blob_fetch_total: 16,
            max_blob_bytes: 16 << 30,
            blob_io_timeout: Duration::from_secs(20),
            open_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_connections_per_peer: 2,
            max_pending_incoming: 64,
        }
    }
}

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// The node's identity (Ed25519); it signs ads and receipts too.
    pub keypair: Keypair,
    /// Addresses to listen on (`/ip4/0.0.0.0/tcp/0`, `/ip4/0.0.0.0/udp/0/quic-v1`, ...).
    pub listen: Vec<Multiaddr>,
    /// Kademlia bootstrap peers, each ending in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Local-network discovery (off in tests and on hosts that should stay quiet).
    pub mdns: bool,
    /// Kademlia (peer routing and bootstrap).
    pub kad: bool,
    /// Answer Kademlia queries even without a confirmed public address (providers and
    /// bootstrap nodes on a LAN); otherwise the mode follows libp2p's external-address
    /// detection.
    pub kad_server: bool,
    /// Gossipsub heartbeat (tests use tens of milliseconds).
    pub gossip_heartbeat: Duration,
    /// Ping interval.
    pub ping_interval: Duration,
    /// Connections without streams close after this long.
    pub idle_timeout: Duration,
    /// Capacity of the command channel (Client → event loop).
    pub command_capacity: usize,
    /// Capacity of the event channel (event loop → node); when full, requests are refused busy.
    pub event_capacity: usize,
    /// Agent string sent with identify.
    pub agent: String,
    /// Every bound.
    pub limits: Limits,
    /// Relays to reserve a slot on, each ending in `/p2p/<relay peer id>`: the node listens
    /// on `<relay>/p2p-circuit` through each, so peers that cannot reach it directly (it
    /// sits behind a NAT) reach it through the relay and then try a hole punch (DCUtR).
    pub relays: Vec<Multiaddr>,
    /// Serve as a relay for others (circuit relay v2), within these limits; `None` serves
    /// nobody.
    pub relay_server: Option<RelayLimits>,
    /// Addresses this node is known to be reachable at (a public IP and forwarded port), added
    /// as confirmed external addresses without waiting for AutoNAT.
    pub external: Vec<Multiaddr>,
    /// Answer other nodes' AutoNAT v2 reachability probes (dial back their candidate
    /// addresses). The client side always runs: it is how a node learns it is public.
    pub autonat_server: bool,
}

/// What a node serving as a relay grants others. Relayed traffic costs the relay bandwidth
/// it does not otherwise spend, so every dimension is capped; the defaults fit a job's
/// control traffic and modest inputs and outputs until a hole punch moves it off the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLimits {
    /// Reservations held at once (nodes reachable through this relay).
    pub max_reservations: usize,
    /// Reservations one peer may hold.
    pub max_reservations_per_peer: usize,
    /// How long a reservation lasts before it must be renewed.
    pub reservation_duration: Duration,
    /// Relayed connections at once.
    pub max_circuits: usize,
    /// Relayed connections one peer may have at once.
    pub max_circuits_per_peer: usize,
    /// Longest life of one relayed connection.
    pub max_circuit_duration: Duration,
    /// Most bytes one relayed connection may carry (both ways).
    pub max_circuit_bytes: u64,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_reservations: 128,
            max_reservations_per_peer: 4,
            reservation_duration: Duration::from_secs(3600),
            max_circuits: 32,
            max_circuits_per_peer: 4,
            max_circuit_duration: Duration::from_secs(600),
            max_circuit_bytes: 64 << 20,
        }
    }
}

impl NetConfig {
    /// Defaults for a node with this identity: listens on all IPv4 TCP and QUIC ports
    /// chosen by the OS, mDNS on, Kademlia on, no bootstrap peers.
    pub fn new(keypair: Keypair) -> Self {
        NetConfig {
            keypair,
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".parse().expect("valid multiaddr"),
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .expect("valid multiaddr"),
            ],
            bootstrap: Vec::new(),
            mdns: true,
            kad: true,
            kad_server: false,
            gossip_heartbeat: Duration::from_secs(1),
            ping_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            command_capacity: 64,
            event_capacity: 256,
            agent: format!("pinfold/{}", env!("CARGO_PKG_VERSION")),
            limits: Limits::default(),
            relays: Vec::new(),
            relay_server: None,
            external: Vec::new(),
            autonat_server: true,
        }
    }

    /// A quiet configuration for in-process tests: loopback TCP only, no mDNS, no
    /// Kademlia, fast heartbeat and ping.
    pub fn local_test(keypair: Keypair) -> Self {
        let mut c = NetConfig::new(keypair);
        c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")];
        c.mdns = false;
        c.kad = false;
        c.gossip_heartbeat = Duration::from_millis(50);
        c.ping_interval = Duration::from_millis(500);
        c
    }
}
