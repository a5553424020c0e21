//! The event loop: owns the swarm, runs commands, turns swarm events into node events,
//! validates gossip and inbound requests, and keeps strikes and bans.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::channel::mpsc as fmpsc;
use libp2p::core::ConnectedPoint;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, InboundRequestId, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, autonat, dcutr, identify, mdns, ping, relay};
use tokio::sync::{mpsc, oneshot};

use crate::ad::{AdError, Insert, ProviderView, SignedAd};
use crate::codec::Inbound;
use crate::config::Limits;
use crate::protocol::{ErrorReply, Request, Response};
use crate::transfer;

use super::reach::{MAX_ADVERTISED_ADDRS, RELAY_REDIAL, Reachability, RelayState, Route};
use super::{
    Behaviour, BehaviourEvent, Command, Event, KAD_PROTOCOL, MAX_PENDING, NetError,
    PROVIDERS_TOPIC, Responder, check_response, split_peer, unix_now,
};

/// A job-protocol request waiting for a free stream slot to its peer, with its caller.
pub(super) type QueuedRequest = (Box<Request>, oneshot::Sender<Result<Response, NetError>>);

/// Owns the swarm; drive it with [`EventLoop::run`]. It stops when every [`Client`](super::Client) and
/// [`Responder`] is dropped.
pub struct EventLoop {
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) commands: mpsc::Receiver<Command>,
    // Weak, so the loop ends when the last Client goes; upgraded to build Responders.
    pub(super) command_sender: mpsc::WeakSender<Command>,
    pub(super) events: fmpsc::Sender<Event>,
    pub(super) strikes_rx: mpsc::Receiver<(PeerId, String)>,
    pub(super) blob_server: Option<(transfer::Server, libp2p_stream::IncomingStreams)>,
    pub(super) limits: Arc<Limits>,
    pub(super) providers_topic: IdentTopic,
    pub(super) checkpoints_topic: IdentTopic,
    pub(super) view: ProviderView,
    pub(super) pending_listen:
        HashMap<libp2p::core::transport::ListenerId, oneshot::Sender<Result<Multiaddr, NetError>>>,
    pub(super) pending_dial: HashMap<PeerId, Vec<oneshot::Sender<Result<PeerId, NetError>>>>,
    pub(super) pending_requests:
        HashMap<OutboundRequestId, (PeerId, oneshot::Sender<Result<Response, NetError>>)>,
    pub(super) outbound_per_peer: HashMap<PeerId, usize>,
    pub(super) queued_requests: HashMap<PeerId, VecDeque<QueuedRequest>>,
    pub(super) queued_total: usize,
    pub(super) pending_pings: HashMap<PeerId, Vec<oneshot::Sender<Result<Duration, NetError>>>>,
    pub(super) in_flight: HashMap<InboundRequestId, PeerId>,
    pub(super) inbound_per_peer: HashMap<PeerId, usize>,
    pub(super) strikes: HashMap<PeerId, (u32, Instant)>,
    pub(super) bans: HashMap<PeerId, Instant>,
    pub(super) reach: Reachability,
    // Remote address of every open connection (bounded by the connection limits), so a
    // caller can tell a relayed connection from a direct one.
    pub(super) connections: HashMap<PeerId, Vec<(ConnectionId, Multiaddr)>>,
    // Configured relays, by peer id.
    pub(super) relays: HashMap<PeerId, RelayState>,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("peer_id", self.swarm.local_peer_id())
            .finish()
    }
}

impl EventLoop {
    /// Runs until every [`Client`](super::Client) and [`Responder`] is dropped.
    pub async fn run(mut self) {
        let server = self
            .blob_server
            .take()
            .map(|(server, incoming)| AbortOnDrop(tokio::spawn(server.run(incoming))));
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                Some((peer, reason)) = self.strikes_rx.recv() => self.strike(peer, reason),
                _ = housekeeping.tick() => self.housekeeping(),
            }
        }
        drop(server);
    }

    fn emit(&mut self, event: Event) {
        // A full or closed channel drops informational events; requests never come here
        // (`on_inbound_request` answers them busy instead).
        if let Err(e) = self.events.try_send(event)
            && e.is_full()
        {
            tracing::warn!("event channel full, dropping an event");
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Listen { addr, reply } => {
                if self.pending_listen.len() >= MAX_PENDING {
                    let _ = reply.send(Err(NetError::Overloaded));
                    return;
                }
                match self.swarm.listen_on(addr.clone()) {
                    Ok(id) => {
                        self.pending_listen.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetError::Listen(format!("{addr}: {e}"))));
                    }
                }
            }
            Command::Dial { addr, reply } => self.dial(addr, reply),
            Command::ListenAddrs { reply } => {
                let me = *self.swarm.local_peer_id();
                let addrs = self
                    .swarm
                    .listeners()
                    .map(|a| a.clone().with(Protocol::P2p(me)))
                    .collect();
                let _ = reply.send(addrs);
            }
            Command::ConnectedPeers { reply } => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::Publish { topic, data, reply } => {
                let topic = if topic == PROVIDERS_TOPIC {
                    self.providers_topic.clone()
                } else {
                    self.checkpoints_topic.clone()
                };
                let result = match self.swarm.behaviour_mut().gossipsub.publish(topic, data) {
                    Ok(_) | Err(gossipsub::PublishError::Duplicate) => Ok(()),
                    Err(e) => Err(NetError::Publish(e.to_string())),
                };
                let _ = reply.send(result);
            }
            Command::Providers { reply } => {
                let _ = reply.send(self.view.live(Instant::now()));
            }
            Command::Request {
                peer,
                request,
                reply,
            } => {
                if self.pending_requests.len() + self.queued_total >= MAX_PENDING {
                    let _ = reply.send(Err(NetError::Overloaded));
                    return;
                }
                let on_wire = self.outbound_per_peer.get(&peer).copied().unwrap_or(0);
                if on_wire < self.max_outbound_per_peer() {
                    self.send_request(peer, request, reply);
                } else {
                    self.queued_requests
                        .entry(peer)
                        .or_default()
                        .push_back((request, reply));
                    self.queued_total += 1;
                }
            }
            Command::Respond {
                channel,
                response,
                reply,
            } => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .jobs
                    .send_response(channel, *response)
                    .map_err(|_| {
                        NetError::Request("the request timed out or its connection closed".into())
                    });
                let _ = reply.send(result);
            }
            Command::Ping { peer, reply } => {
                if !self.swarm.is_connected(&peer) {
                    let _ = reply.send(Err(NetError::NotConnected(peer)));
                    return;
                }
                let waiting = self.pending_pings.get(&peer).map_or(0, Vec::len);
                if waiting >= 16 || self.pending_pings.len() >= MAX_PENDING {
                    let _ = reply.send(Err(NetError::Overloaded));
                    return;
                }
                self.pending_pings.entry(peer).or_default().push(reply);
            }
            Command::Strike { peer, reason } => self.strike(peer, reason),
            Command::Reachability { reply } => {
                let _ = reply.send(self.reach.clone());
            }
            Command::Routes { peer, reply } => {
                let routes = self
                    .connections
                    .get(&peer)
                    .map(|c| c.iter().map(|(_, a)| Route::of(a)).collect())
                    .unwrap_or_default();
                let _ = reply.send(routes);
            }
            Command::IsBanned { peer, reply } => {
                let _ = reply.send(self.bans.contains_key(&peer));
            }
        }
    }

    /// Job-protocol requests to one peer on the wire at once. request-response gives a
    /// connection `max_concurrent_streams` stream slots, inbound and outbound together, and
    /// fails an outbound request beyond them at once ("max sub-streams reached") while the
    /// remote drops an inbound stream beyond its own; half the slots leave room for the
    /// peer's requests to us on the same connection.
    fn max_outbound_per_peer(&self) -> usize {
        (self.limits.max_concurrent_streams / 2).max(1)
    }

    fn send_request(
        &mut self,
        peer: PeerId,
        request: Box<Request>,
        reply: oneshot::Sender<Result<Response, NetError>>,
    ) {
        let id = self
            .swarm
            .behaviour_mut()
            .jobs
            .send_request(&peer, Inbound::Request(*request));
        self.pending_requests.insert(id, (peer, reply));
        *self.outbound_per_peer.entry(peer).or_insert(0) += 1;
    }

    /// An outbound request to `peer` ended: the next one queued for it whose caller still
    /// waits goes out.
    fn finish_outbound(&mut self, peer: PeerId) {
        if let Some(n) = self.outbound_per_peer.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                self.outbound_per_peer.remove(&peer);
            }
        }
        while let Some(queue) = self.queued_requests.get_mut(&peer) {
            let next = queue.pop_front();
            if queue.is_empty() {
                self.queued_requests.remove(&peer);
            }
            let Some((request, reply)) = next else { break };
            self.queued_total -= 1;
            // A caller that gave up (its timeout covers the wait here) is skipped.
            if !reply.is_closed() {
                self.send_request(peer, request, reply);
                break;
            }
        }
    }

    fn dial(&mut self, addr: Multiaddr, reply: oneshot::Sender<Result<PeerId, NetError>>) {
        let Some((peer, bare)) = split_peer(&addr) else {
            let _ = reply.send(Err(NetError::NoPeerId(addr)));
            return;
        };
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(peer));
            return;
        }
        if self.pending_dial.len() >= MAX_PENDING {
            let _ = reply.send(Err(NetError::Overloaded));
            return;
        }
        // A bare `/p2p/<peer>` dials the addresses the swarm already knows for the peer
        // (from its ad: direct or relayed).
        let opts = if bare.is_empty() {
            DialOpts::peer_id(peer).build()
        } else {
            DialOpts::peer_id(peer).addresses(vec![bare]).build()
        };
        match self.swarm.dial(opts) {
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {
                self.pending_dial.entry(peer).or_default().push(reply);
            }
            Err(e) => {
                let _ = reply.send(Err(NetError::Dial(e.to_string())));
            }
        }
    }

    fn strike(&mut self, peer: PeerId, reason: String) {
        if peer == *self.swarm.local_peer_id() || self.bans.contains_key(&peer) {
            return;
        }
        let now = Instant::now();
        let window = self.limits.strike_window;
        if !self.strikes.contains_key(&peer) && self.strikes.len() >= self.limits.max_tracked_peers
        {
            // Forget the peer struck longest ago.
            if let Some(old) = self
                .strikes
                .iter()
                .min_by_key(|(_, v)| v.1)
                .map(|(k, _)| *k)
            {
                self.strikes.remove(&old);
            }
        }
        let entry = self.strikes.entry(peer).or_insert((0, now));
        if now.saturating_duration_since(entry.1) > window {
            *entry = (0, now);
        }
        entry.0 += 1;
        entry.1 = now;
        let count = entry.0;
        tracing::info!(%peer, count, reason, "strike");
        if count >= self.limits.max_strikes {
            self.strikes.remove(&peer);
            self.ban(peer, reason);
        }
    }

    fn ban(&mut self, peer: PeerId, reason: String) {
        if self.bans.len() >= self.limits.max_tracked_peers
            && let Some(old) = self.bans.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k)
        {
            self.bans.remove(&old);
            self.swarm.behaviour_mut().blocked.unblock_peer(old);
        }
        self.bans
            .insert(peer, Instant::now() + self.limits.ban_duration);
        // Blocking closes every connection to the peer and refuses new ones.
        self.swarm.behaviour_mut().blocked.block_peer(peer);
        self.view.remove(&peer);
        tracing::warn!(%peer, reason, "peer banned");
        self.emit(Event::Banned { peer, reason });
    }

    /// Asks every connected relay without a reservation for one (a listen on its circuit
    /// address), and redials relays that are not connected, at most every 10 s each.
    fn keep_relays(&mut self) {
        let now = Instant::now();
        let mut listen = Vec::new();
        let mut dial = Vec::new();
        for (peer, r) in &mut self.relays {
            if r.listener.is_some() {
                continue;
            }
            let backing_off = r
                .failed
                .is_some_and(|t| now.saturating_duration_since(t) < RELAY_REDIAL);
            if backing_off {
                continue;
            }
            if self.swarm.is_connected(peer) {
                listen.push((*peer, r.circuit()));
            } else if now.saturating_duration_since(r.dialled) >= RELAY_REDIAL {
                r.dialled = now;
                dial.push(*peer);
            }
        }
        for (peer, circuit) in listen {
            match self.swarm.listen_on(circuit.clone()) {
                Ok(id) => {
                    if let Some(r) = self.relays.get_mut(&peer) {
                        r.listener = Some(id);
                    }
                }
                Err(e) => tracing::warn!(%circuit, "asking the relay for a reservation: {e}"),
            }
        }
        for peer in dial {
            let _ = self.swarm.dial(peer);
        }
    }

    fn housekeeping(&mut self) {
        self.keep_relays();
        let now = Instant::now();
        let expired: Vec<PeerId> = self
            .bans
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in expired {
            self.bans.remove(&p);
            self.swarm.behaviour_mut().blocked.unblock_peer(p);
        }
        let window = self.limits.strike_window;
        self.strikes
            .retain(|_, (_, t)| now.saturating_duration_since(*t) <= window);
        self.view.expire(now);
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                let me = *self.swarm.local_peer_id();
                // The relay client's addresses already end in `/p2p/<me>`.
                let mut bare = address.clone();
                if bare.iter().last() == Some(Protocol::P2p(me)) {
                    bare.pop();
                }
                if super::reach::is_relayed(&bare) {
                    // The relay accepted a reservation: the circuit address is one peers
                    // can reach; external, so identify and DCUtR tell peers about it.
                    self.swarm.add_external_address(bare.clone());
                    if self.reach.confirm(bare.clone()) {
                        self.emit(Event::Reachability(self.reach.clone()));
                    }
                }
                let full = bare.with(Protocol::P2p(me));
                tracing::info!(%full, "listening");
                if let Some(reply) = self.pending_listen.remove(&listener_id) {
                    let _ = reply.send(Ok(full.clone()));
                }
                self.emit(Event::Listening(full));
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                for (peer, r) in &mut self.relays {
                    if r.listener == Some(listener_id) {
                        r.listener = None;
                        r.failed = reason.is_err().then(Instant::now);
                        match &reason {
                            Ok(()) => tracing::info!(relay = %peer, "relay reservation ended"),
                            Err(e) => {
                                tracing::warn!(relay = %peer, "relay reservation failed: {e}")
                            }
                        }
                    }
                }
                if let Some(reply) = self.pending_listen.remove(&listener_id) {
                    let detail = match reason {
                        Ok(()) => "listener closed".to_string(),
                        Err(e) => e.to_string(),
                    };
                    let _ = reply.send(Err(NetError::Listen(detail)));
                }
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                tracing::warn!("listener error: {error}");
                if let Some(reply) = self.pending_listen.remove(&listener_id) {
                    let _ = reply.send(Err(NetError::Listen(error.to_string())));
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                for reply in self.pending_dial.remove(&peer_id).unwrap_or_default() {
                    let _ = reply.send(Ok(peer_id));
                }
                let addr = match endpoint {
                    ConnectedPoint::Dialer { address, .. } => address,
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr,
                };
                self.connections
                    .entry(peer_id)
                    .or_default()
                    .push((connection_id, addr.clone()));
                self.keep_relays();
                if num_established.get() == 1 {
                    self.emit(Event::PeerConnected {
                        peer: peer_id,
                        addr,
                    });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some(c) = self.connections.get_mut(&peer_id) {
                    c.retain(|(id, _)| *id != connection_id);
                }
                if num_established > 0 {
                    return;
                }
                self.connections.remove(&peer_id);
                for reply in self.pending_pings.remove(&peer_id).unwrap_or_default() {
                    let _ = reply.send(Err(NetError::NotConnected(peer_id)));
                }
                self.emit(Event::PeerDisconnected { peer: peer_id });
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } if !self.swarm.is_connected(&peer) => {
                for reply in self.pending_dial.remove(&peer).unwrap_or_default() {
                    let _ = reply.send(Err(NetError::Dial(error.to_string())));
                }
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "external address confirmed");
                if self.reach.confirm(address) {
                    self.emit(Event::Reachability(self.reach.clone()));
                }
            }
            SwarmEvent::ExpiredListenAddr { mut address, .. }
                if super::reach::is_relayed(&address) =>
            {
                // The reservation ended (relay gone, or refused a renewal).
                if address.iter().last() == Some(Protocol::P2p(*self.swarm.local_peer_id())) {
                    address.pop();
                }
                self.swarm.remove_external_address(&address);
                if self.reach.expire(&address) {
                    self.emit(Event::Reachability(self.reach.clone()));
                }
            }
            SwarmEvent::ExternalAddrExpired { address } if self.reach.expire(&address) => {
                self.emit(Event::Reachability(self.reach.clone()));
            }
            _ => {}
        }
    }

    /// Relay, hole-punch and AutoNAT events: they only change what this node knows about
    /// its own reachability and its routes to peers.
    fn on_reach_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::RelayClient(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal: false,
                ..
            }) => tracing::info!(relay = %relay_peer_id, "relay reservation accepted"),
            BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            }) => {
                let result = result.map(|_| ()).map_err(|e| e.to_string());
                match &result {
                    Ok(()) => tracing::info!(peer = %remote_peer_id, "hole punch succeeded"),
                    Err(e) => tracing::info!(peer = %remote_peer_id, "hole punch failed: {e}"),
                }
                self.emit(Event::HolePunch {
                    peer: remote_peer_id,
                    result,
                });
            }
            BehaviourEvent::AutonatClient(autonat::v2::client::Event {
                tested_addr,
                server,
                result,
                ..
            }) => match result {
                // Success arrives as `ExternalAddrConfirmed` as well.
                Ok(()) => tracing::debug!(%tested_addr, %server, "autonat: reachable"),
                Err(e) => {
                    tracing::debug!(%tested_addr, %server, "autonat: not reachable: {e}");
                    if self.reach.probe_failed(tested_addr) {
                        self.emit(Event::Reachability(self.reach.clone()));
                    }
                }
            },
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let acceptance = self.on_gossip(propagation_source, message);
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            BehaviourEvent::Jobs(event) => self.on_jobs_event(event),
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                for reply in self.pending_pings.remove(&peer).unwrap_or_default() {
                    let _ = reply.send(Ok(rtt));
                }
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                // Only peers that answer Kademlia go into the routing table, with a bounded
                // number of addresses each.
                if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut()
                    && info.protocols.contains(&KAD_PROTOCOL)
                {
                    for addr in info.listen_addrs.into_iter().take(8) {
                        kad.add_address(&peer_id, addr);
                    }
                }
            }
            e @ (BehaviourEvent::RelayClient(_)
            | BehaviourEvent::RelayServer(_)
            | BehaviourEvent::Dcutr(_)
            | BehaviourEvent::AutonatClient(_)
            | BehaviourEvent::AutonatServer(_)) => self.on_reach_event(e),
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found.into_iter().take(64) {
                    if self.bans.contains_key(&peer) {
                        continue;
                    }
                    self.swarm.add_peer_address(peer, addr.clone());
                    if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                        kad.add_address(&peer, addr);
                    }
                    if !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(peer);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_gossip(&mut self, source_hop: PeerId, message: gossipsub::Message) -> MessageAcceptance {
        if message.topic == self.providers_topic.hash() {
            let result = message
                .source
                .ok_or(AdError::NoSource)
                .and_then(|source| {
                    SignedAd::decode_and_verify(&message.data, &source).map(|ad| (source, ad))
                })
                .and_then(|(source, ad)| {
                    self.view
                        .check_time(&ad.ad, unix_now(), self.limits.max_clock_skew)
                        .map(|()| (source, ad))
                });
            match result {
                Ok((source, signed)) => {
                    if self.bans.contains_key(&source) {
                        return MessageAcceptance::Ignore;
                    }
                    match self.view.insert(source, signed.ad.clone(), Instant::now()) {
                        Insert::Updated => {
                            // Where the provider says it can be reached (directly or through
                            // a relay): how a requestor behind its own NAT dials it.
                            for addr in signed.ad.addrs.iter().take(MAX_ADVERTISED_ADDRS) {
                                self.swarm.add_peer_address(source, addr.clone());
                            }
                            self.emit(Event::ProviderAd {
                                peer: source,
                                ad: signed.ad,
                            });
                            MessageAcceptance::Accept
                        }
                        Insert::NotNewer => MessageAcceptance::Ignore,
                    }
                }
                // An honest relay may pass on an ad that aged on the way: not a strike.
                Err(AdError::Stale(_)) => MessageAcceptance::Ignore,
                Err(e) => {
                    self.strike(source_hop, format!("bad provider ad: {e}"));
                    MessageAcceptance::Reject
                }
            }
        } else if message.topic == self.checkpoints_topic.hash() {
            let Some(source) = message.source else {
                self.strike(source_hop, "checkpoint without source".into());
                return MessageAcceptance::Reject;
            };
            if message.data.len() > self.limits.max_checkpoint_bytes {
                self.strike(source_hop, "oversized checkpoint".into());
                return MessageAcceptance::Reject;
            }
            match String::from_utf8(message.data) {
                Ok(note) => {
                    self.emit(Event::Checkpoint { source, note });
                    MessageAcceptance::Accept
                }
                Err(_) => {
                    self.strike(source_hop, "checkpoint is not utf-8".into());
                    MessageAcceptance::Reject
                }
            }
        } else {
            MessageAcceptance::Ignore
        }
    }

    fn on_jobs_event(&mut self, event: request_response::Event<Inbound, Response>) {
        use request_response::{Event as E, InboundFailure, Message};
        match event {
            E::Message {
                peer,
                message:
                    Message::Request {
                        request_id,
                        request,
                        channel,
                    },
                ..
            } => self.on_inbound_request(peer, request_id, request, channel),
            E::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some((to, reply)) = self.pending_requests.remove(&request_id) {
                    self.finish_outbound(to);
                    let result = match check_response(&response, &peer) {
                        Ok(()) => Ok(response),
                        Err(e) => {
                            self.strike(peer, format!("invalid response: {e}"));
                            Err(NetError::InvalidResponse(e))
                        }
                    };
                    let _ = reply.send(result);
                }
            }
            E::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let request_response::OutboundFailure::Io(e) = &error
                    && e.kind() == std::io::ErrorKind::InvalidData
                {
                    // The response did not decode or went over the cap.
                    self.strike(peer, format!("malformed response: {e}"));
                }
                if let Some((to, reply)) = self.pending_requests.remove(&request_id) {
                    self.finish_outbound(to);
                    let _ = reply.send(Err(NetError::Request(error.to_string())));
                }
            }
            E::InboundFailure {
                request_id, error, ..
            } => {
                self.finish_inbound(request_id);
                if !matches!(error, InboundFailure::ResponseOmission) {
                    tracing::debug!(%error, "inbound request failed");
                }
            }
            E::ResponseSent { request_id, .. } => self.finish_inbound(request_id),
        }
    }

    fn finish_inbound(&mut self, request_id: InboundRequestId) {
        if let Some(peer) = self.in_flight.remove(&request_id)
            && let Some(n) = self.inbound_per_peer.get_mut(&peer)
        {
            *n -= 1;
            if *n == 0 {
                self.inbound_per_peer.remove(&peer);
            }
        }
    }

    fn on_inbound_request(
        &mut self,
        peer: PeerId,
        request_id: InboundRequestId,
        request: Inbound,
        channel: ResponseChannel<Response>,
    ) {
        let request = match request {
            Inbound::Request(r) => r,
            Inbound::Malformed(detail) => {
                self.strike(peer, detail.clone());
                self.respond_now(channel, Response::Error(ErrorReply::Invalid(detail)));
                return;
            }
        };
        if let Err(detail) = request.validate() {
            self.strike(peer, format!("invalid request: {detail}"));
            self.respond_now(channel, request.invalid_response(detail));
            return;
        }
        let per_peer = self.inbound_per_peer.get(&peer).copied().unwrap_or(0);
        if per_peer >= self.limits.max_inbound_per_peer
            || self.in_flight.len() >= self.limits.max_inbound_total
        {
            self.respond_now(channel, request.busy_response());
            return;
        }
        let Some(commands) = self.command_sender.upgrade() else {
            self.respond_now(channel, request.busy_response());
            return;
        };
        let event = Event::Request {
            peer,
            request,
            responder: Responder { channel, commands },
        };
        match self.events.try_send(event) {
            Ok(()) => {
                self.in_flight.insert(request_id, peer);
                *self.inbound_per_peer.entry(peer).or_insert(0) += 1;
            }
            Err(e) => {
                // The node is not keeping up (or gone): answer busy rather than queue.
                if let Event::Request {
                    request, responder, ..
                } = e.into_inner()
                {
                    let busy = request.busy_response();
                    self.respond_now(responder.channel, busy);
                }
            }
        }
    }

    fn respond_now(&mut self, channel: ResponseChannel<Response>, response: Response) {
        let _ = self
            .swarm
            .behaviour_mut()
            .jobs
            .send_response(channel, response);
    }
}

/// Aborts a spawned task when dropped, so the blob server stops with the loop.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
