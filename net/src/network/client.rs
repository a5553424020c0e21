//! The cheap, cloneable handle the node uses to act on the network.

use std::sync::Arc;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use tokio::io::AsyncWrite;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::ad::{ProviderAd, ProviderEntry, SignedAd};
use crate::config::Limits;
use crate::id::BlobId;
use crate::protocol::{ErrorReply, Offer, OfferReply, Request, Response};
use crate::transfer::{self, FetchLimits, FetchStats, TransferError};

use super::{
    CHECKPOINTS_TOPIC, Command, LOCAL_TIMEOUT, NetError, PROVIDERS_TOPIC, Reachability, Route,
    unix_now,
};

/// A handle to the network; clones are cheap and share the event loop.
#[derive(Clone)]
pub struct Client {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) control: libp2p_stream::Control,
    pub(super) keypair: Keypair,
    pub(super) peer_id: PeerId,
    pub(super) limits: Arc<Limits>,
    pub(super) fetches: Arc<Semaphore>,
    pub(super) ad_seq: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("peer_id", &self.peer_id)
            .finish()
    }
}

impl Client {
    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// This node's identity key (it signs ads and receipts).
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    async fn call<T>(
        &self,
        what: &'static str,
        timeout: Duration,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        tokio::time::timeout(timeout, self.commands.send(make(tx)))
            .await
            .map_err(|_| NetError::Timeout(what))?
            .map_err(|_| NetError::Closed)?;
        tokio::time::timeout(timeout, rx)
            .await
            .map_err(|_| NetError::Timeout(what))?
            .map_err(|_| NetError::Closed)
    }

    /// Listens on `addr` (port 0 picks one); returns the full address with `/p2p/`.
    pub async fn listen(&self, addr: Multiaddr) -> Result<Multiaddr, NetError> {
        self.call("listen", self.limits.open_timeout, |reply| {
            Command::Listen { addr, reply }
        })
        .await?
    }

    /// Current listen addresses, each ending in `/p2p/<peer id>`.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.call("listen addresses", self.limits.open_timeout, |reply| {
            Command::ListenAddrs { reply }
        })
        .await
    }

    /// Connects to `addr` (which must end in `/p2p/<peer id>`); returns the peer.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NetError> {
        self.call("dial", self.limits.open_timeout, |reply| Command::Dial {
            addr,
            reply,
        })
        .await?
    }

    /// Connected peers.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, NetError> {
        self.call("connected peers", self.limits.open_timeout, |reply| {
            Command::ConnectedPeers { reply }
        })
        .await
    }

    /// Signs `ad` with this node's key and publishes it. `seq` and `timestamp` are set here
    /// (sequence strictly increasing, timestamp now).
    pub async fn advertise(&self, mut ad: ProviderAd) -> Result<SignedAd, NetError> {
        use std::sync::atomic::Ordering;
        // Seconds since the epoch times 1000 plus a counter: increasing across restarts
        // without persisted state, unless more than 1000 ads go out in one second.
        let base = unix_now().saturating_mul(1000);
        let seq = loop {
            let prev = self.ad_seq.load(Ordering::SeqCst);
            let next = base.max(prev + 1);
            if self
                .ad_seq
                .compare_exchange(prev, next, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                break next;
            }
        };
        ad.seq = seq;
        ad.timestamp = unix_now();
        // Behind a NAT, the relayed addresses are the only way in for a peer that did not
        // dial through the same relay already; in the ad, every requestor learns them.
        ad.addrs = self.reachability().await?.advertised();
        let signed =
            SignedAd::sign(ad, &self.keypair).map_err(|e| NetError::Sign(e.to_string()))?;
        self.publish_signed_ad(&signed).await?;
        Ok(signed)
    }

    /// What this node knows about its own reachability.
    pub async fn reachability(&self) -> Result<Reachability, NetError> {
        self.call("reachability", LOCAL_TIMEOUT, |reply| {
            Command::Reachability { reply }
        })
        .await
    }

    /// How each open connection to `peer` runs (direct or relayed); empty if none.
    pub async fn routes(&self, peer: PeerId) -> Result<Vec<Route>, NetError> {
        self.call("routes", LOCAL_TIMEOUT, |reply| Command::Routes {
            peer,
            reply,
        })
        .await
    }

    /// Publishes an ad signed elsewhere. Receivers drop it unless its signer is this node.
    pub async fn publish_signed_ad(&self, ad: &SignedAd) -> Result<(), NetError> {
        let data = ad.to_bytes();
        self.call("publish", self.limits.open_timeout, |reply| {
            Command::Publish {
                topic: PROVIDERS_TOPIC,
                data,
                reply,
            }
        })
        .await?
    }

    /// Gossips a registry checkpoint note (at most `max_checkpoint_bytes`).
    pub async fn publish_checkpoint(&self, note: &str) -> Result<(), NetError> {
        if note.len() > self.limits.max_checkpoint_bytes {
            return Err(NetError::Publish(
                "checkpoint note exceeds the limit".into(),
            ));
        }
        let data = note.as_bytes().to_vec();
        self.call("publish", self.limits.open_timeout, |reply| {
            Command::Publish {
                topic: CHECKPOINTS_TOPIC,
                data,
                reply,
            }
        })
        .await?
    }

    /// Live providers, most recently heard first.
    pub async fn providers(&self) -> Result<Vec<ProviderEntry>, NetError> {
        self.call("providers", self.limits.open_timeout, |reply| {
            Command::Providers { reply }
        })
        .await
    }

    /// Sends a job-protocol request and waits for the (validated) response.
    ///
    /// At most half of `max_concurrent_streams` requests to one peer are on the wire at
    /// once (a connection has that many stream slots, and request-response fails a request
    /// beyond them outright); more wait in the event loop for a slot, within this call's
    /// timeout and the loop's bound on pending requests.
    pub async fn request(&self, peer: PeerId, request: Request) -> Result<Response, NetError> {
        // The behaviour times the exchange out itself; the margin covers the loop's latency.
        let timeout = self.limits.request_timeout + Duration::from_secs(5);
        self.call("response", timeout, |reply| Command::Request {
            peer,
            request: Box::new(request),
            reply,
        })
        .await?
    }

    /// Sends an offer; returns the provider's accept or typed reject.
    pub async fn offer(&self, peer: PeerId, offer: Offer) -> Result<OfferReply, NetError> {
        match self.request(peer, Request::Offer(offer)).await? {
            Response::Offer(r) => Ok(r),
            Response::Error(ErrorReply::Busy) => Ok(OfferReply::Reject {
                reason: crate::protocol::RejectReason::Busy,
            }),
            Response::Error(ErrorReply::Invalid(d)) => Ok(OfferReply::Reject {
                reason: crate::protocol::RejectReason::Invalid(d),
            }),
            _ => Err(NetError::UnexpectedResponse),
        }
    }

    /// Waits for the next successful ping of a connected peer; returns the round trip.
    pub async fn ping(&self, peer: PeerId) -> Result<Duration, NetError> {
        self.call("ping", self.limits.request_timeout, |reply| Command::Ping {
            peer,
            reply,
        })
        .await?
    }

    /// Records a strike against a peer (the node's own judgement, e.g. a bad receipt).
    pub async fn strike(&self, peer: PeerId, reason: impl Into<String>) -> Result<(), NetError> {
        let reason = reason.into();
        tokio::time::timeout(
            self.limits.open_timeout,
            self.commands.send(Command::Strike { peer, reason }),
        )
        .await
        .map_err(|_| NetError::Timeout("strike"))?
        .map_err(|_| NetError::Closed)
    }

    /// Whether `peer` is banned now.
    pub async fn is_banned(&self, peer: PeerId) -> Result<bool, NetError> {
        self.call("ban state", self.limits.open_timeout, |reply| {
            Command::IsBanned { peer, reply }
        })
        .await
    }

    /// Fetches blob `id` from `peer` into `sink`, verifying every 64 KiB group before
    /// writing it. A peer that sends bytes not matching `id` is struck and cut off at the
    /// first bad group; `sink` then holds only verified groups.
    pub async fn fetch_blob<W: AsyncWrite + Unpin>(
        &self,
        peer: PeerId,
        id: BlobId,
        limits: FetchLimits,
        sink: &mut W,
    ) -> Result<FetchStats, TransferError> {
        let limits = FetchLimits {
            expected_size: limits.expected_size,
            max_size: limits.max_size.min(self.limits.max_blob_bytes),
        };
        let _permit = tokio::time::timeout(self.limits.open_timeout, self.fetches.acquire())
            .await
            .map_err(|_| TransferError::Local)?
            .map_err(|_| TransferError::Local)?;
        let mut control = self.control.clone();
        let result = transfer::fetch(
            &mut control,
            peer,
            id,
            limits,
            self.limits.open_timeout,
            self.limits.blob_io_timeout,
            sink,
        )
        .await;
        if let Err(e) = &result
            && e.is_misbehaviour()
        {
            let _ = self.commands.try_send(Command::Strike {
                peer,
                reason: e.to_string(),
            });
        }
        result
    }
}
