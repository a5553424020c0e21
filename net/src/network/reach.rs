//! Reachability: whether peers can dial this node directly (AutoNAT v2 and configured
//! external addresses), the relayed addresses it holds reservations for (circuit relay v2),
//! and whether a connection to a peer is direct or runs through a relay.
//!
//! A provider behind a NAT cannot be dialled, so it reserves a slot on a public relay and
//! advertises `<relay>/p2p-circuit`; a requestor reaches it there, and DCUtR then tries a
//! hole punch so that the job's bulk traffic leaves the relay. This module only keeps the
//! state the event loop learns from those protocols; the loop owns every change.

use std::fmt;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, relay};
use serde::{Deserialize, Serialize};

use crate::config::RelayLimits;

/// Most addresses a node advertises (and a receiver accepts from one ad).
pub const MAX_ADVERTISED_ADDRS: usize = 8;
/// Addresses AutoNAT found unreachable that are remembered (for `provider status`).
const MAX_UNREACHABLE: usize = 8;

/// What AutoNAT and the relays have shown about this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatStatus {
    /// Nothing confirmed yet (no probe answered, or no peer able to probe).
    #[default]
    Unknown,
    /// At least one address was dialled back by a peer, or was configured as external.
    Public,
    /// Probes failed: peers cannot dial this node directly.
    Private,
}

impl fmt::Display for NatStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NatStatus::Unknown => "unknown",
            NatStatus::Public => "public",
            NatStatus::Private => "private",
        })
    }
}

/// This node's reachability as its event loop knows it now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reachability {
    /// Derived from the fields below.
    pub status: NatStatus,
    /// Addresses confirmed dialable from outside (AutoNAT dial-back, or configured).
    pub public: Vec<Multiaddr>,
    /// Relayed addresses (`…/p2p/<relay>/p2p-circuit`) with an accepted reservation.
    pub relayed: Vec<Multiaddr>,
    /// Candidate addresses a peer failed to dial back.
    pub unreachable: Vec<Multiaddr>,
}

impl Reachability {
    /// The addresses to put in ads: confirmed public ones first, then relayed ones.
    pub fn advertised(&self) -> Vec<Multiaddr> {
        self.public
            .iter()
            .chain(&self.relayed)
            .take(MAX_ADVERTISED_ADDRS)
            .cloned()
            .collect()
    }

    pub(super) fn confirm(&mut self, addr: Multiaddr) -> bool {
        let addr = without_own_id(addr);
        let list = if is_relayed(&addr) {
            &mut self.relayed
        } else {
            self.unreachable.retain(|a| a != &addr);
            &mut self.public
        };
        if list.contains(&addr) {
            return false;
        }
        list.push(addr);
        self.derive();
        true
    }

    pub(super) fn expire(&mut self, addr: &Multiaddr) -> bool {
        let addr = &without_own_id(addr.clone());
        let before = self.public.len() + self.relayed.len();
        self.public.retain(|a| a != addr);
        self.relayed.retain(|a| a != addr);
        let changed = before != self.public.len() + self.relayed.len();
        if changed {
            self.derive();
        }
        changed
    }

    pub(super) fn probe_failed(&mut self, addr: Multiaddr) -> bool {
        if self.public.contains(&addr) || self.unreachable.contains(&addr) {
            return false;
        }
        if self.unreachable.len() >= MAX_UNREACHABLE {
            self.unreachable.remove(0);
        }
        self.unreachable.push(addr);
        self.derive();
        true
    }

    fn derive(&mut self) {
        self.status = if !self.public.is_empty() {
            NatStatus::Public
        } else if !self.unreachable.is_empty() {
            NatStatus::Private
        } else {
            NatStatus::Unknown
        };
    }
}

impl fmt::Display for Reachability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[Multiaddr]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self.status {
            NatStatus::Public => write!(f, "public, reachable at {}", list(&self.public))?,
            NatStatus::Private => write!(f, "private (behind a NAT or firewall)")?,
            NatStatus::Unknown => write!(f, "unknown (no reachability probe answered yet)")?,
        }
        if !self.relayed.is_empty() {
            write!(f, "; relayed at {}", list(&self.relayed))?;
        } else if self.status != NatStatus::Public {
            write!(f, "; no relay reservation")?;
        }
        Ok(())
    }
}

/// A configured relay: its address and the circuit listener holding the reservation.
#[derive(Debug)]
pub(super) struct RelayState {
    /// The relay's address, ending in `/p2p/<relay>`.
    pub(super) addr: Multiaddr,
    /// The circuit listener while one is open.
    pub(super) listener: Option<libp2p::core::transport::ListenerId>,
    /// When the relay was last dialled (redialled at most every [`RELAY_REDIAL`]).
    pub(super) dialled: std::time::Instant,
    /// When a reservation last failed (asked again at most every [`RELAY_REDIAL`]).
    pub(super) failed: Option<std::time::Instant>,
}

/// How often a relay that is not connected is dialled again.
pub(super) const RELAY_REDIAL: std::time::Duration = std::time::Duration::from_secs(10);

impl RelayState {
    pub(super) fn new(addr: Multiaddr) -> RelayState {
        RelayState {
            addr,
            listener: None,
            dialled: std::time::Instant::now(),
            failed: None,
        }
    }

    /// The address to listen on for a reservation.
    pub(super) fn circuit(&self) -> Multiaddr {
        self.addr.clone().with(Protocol::P2pCircuit)
    }
}

/// How a connection to a peer runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "route", content = "addr")]
pub enum Route {
    /// Straight to the peer (possibly after a hole punch).
    Direct(Multiaddr),
    /// Through a relay.
    Relayed(Multiaddr),
}

impl Route {
    /// Classifies a connection by its remote address.
    pub fn of(addr: &Multiaddr) -> Route {
        if is_relayed(addr) {
            Route::Relayed(addr.clone())
        } else {
            Route::Direct(addr.clone())
        }
    }

    /// Whether it goes through a relay.
    pub fn is_relayed(&self) -> bool {
        matches!(self, Route::Relayed(_))
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Direct(a) => write!(f, "direct ({a})"),
            Route::Relayed(a) => write!(f, "relayed ({a})"),
        }
    }
}

/// The address without a trailing `/p2p/<id>` (addresses are kept without this node's own
/// id; a relayed one still names its relay before `/p2p-circuit`).
fn without_own_id(mut addr: Multiaddr) -> Multiaddr {
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.pop();
    }
    addr
}

/// Whether an address runs through a relay circuit.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// The relay server's configuration for `limits`; libp2p's per-peer and per-IP rate limits
/// on reservations and circuits stay as they are.
pub(super) fn relay_config(limits: &RelayLimits) -> relay::Config {
    relay::Config {
        max_reservations: limits.max_reservations,
        max_reservations_per_peer: limits.max_reservations_per_peer,
        reservation_duration: limits.reservation_duration,
        max_circuits: limits.max_circuits,
        max_circuits_per_peer: limits.max_circuits_per_peer,
        max_circuit_duration: limits.max_circuit_duration,
        max_circuit_bytes: limits.max_circuit_bytes,
        ..relay::Config::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn status_follows_confirmations_failures_and_expiry() {
        let mut r = Reachability::default();
        assert_eq!(r.status, NatStatus::Unknown);
        assert!(r.probe_failed(a("/ip4/10.0.0.2/udp/4001/quic-v1")));
        assert_eq!(r.status, NatStatus::Private);
        let relayed = a(
            "/ip4/1.2.3.4/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit",
        );
        assert!(r.confirm(relayed.clone()));
        assert_eq!(
            r.status,
            NatStatus::Private,
            "a relay does not make a node public"
        );
        assert_eq!(r.relayed, vec![relayed.clone()]);
        let public = a("/ip4/1.2.3.5/udp/4001/quic-v1");
        assert!(r.confirm(public.clone()));
        assert!(!r.confirm(public.clone()), "confirmed twice is no change");
        assert_eq!(r.status, NatStatus::Public);
        assert_eq!(r.advertised(), vec![public.clone(), relayed]);
        assert!(r.expire(&public));
        assert_eq!(r.status, NatStatus::Private);
        assert!(r.to_string().starts_with("private"), "{r}");
    }

    #[test]
    fn unreachable_candidates_are_bounded() {
        let mut r = Reachability::default();
        for port in 0..20 {
            r.probe_failed(a(&format!("/ip4/10.0.0.2/tcp/{port}")));
        }
        assert_eq!(r.unreachable.len(), MAX_UNREACHABLE);
    }

    #[test]
    fn routes_are_told_apart_by_the_circuit() {
        assert!(
            Route::of(&a(
                "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
            ))
            .is_relayed()
        );
        assert!(!Route::of(&a("/ip4/1.2.3.4/tcp/1")).is_relayed());
    }
}
