//! The pinfold peer network: how providers and requestors find, trust and talk to each other.
//!
//! One [`network::EventLoop`] owns the libp2p swarm (TCP + Noise + Yamux, and QUIC;
//! identify, ping, optional mDNS and Kademlia, gossipsub, the job protocol, blob streams);
//! [`network::Client`] handles talk to it over a bounded command channel and
//! [`network::Event`]s come out on a bounded stream. Build one with [`network::new`].
//!
//! - **Ads** ([`ad`]): providers gossip capability ads signed with their peer key over
//!   canonical JSON ([`canonical`]); receivers check the signer is the gossip source, keep
//!   a bounded, expiring view, and drop replays. Registry checkpoint notes travel on a
//!   second topic, size-capped; checking them is the node's job.
//! - **Negotiation** ([`protocol`]): request-response over CBOR with explicit size caps.
//!   An offer gets a typed accept or reject; status, result and cancel follow. The node
//!   answers each inbound request through a [`network::Responder`].
//! - **Blobs** ([`transfer`], [`tree`]): bundles, inputs and outputs move by BLAKE3
//!   identity over libp2p streams, verified as they arrive.
//! - **Receipts** ([`receipt`]): signed, offline-verifiable statements of what ran.
//!
//! # Why the transfer protocol looks the way it does
//!
//! A blob is named by its plain BLAKE3 hash, the identity the rest of pinfold already uses.
//! BLAKE3 is itself a Merkle tree, so the hash can be checked piecewise: the sender first
//! sends the chaining value of every 64 KiB group (32 bytes each, 0.05 % overhead), the
//! receiver recomputes the root from them and compares it with the identity before any
//! content arrives, then checks each group against its chaining value as soon as its bytes
//! are in. A lying peer is cut off at the first bad group: the receiver has read at most
//! the header, the CV list and one group past the last good one, and its sink holds only
//! verified bytes. This is Bao's idea (verified streaming with BLAKE3 as the root) with a
//! flat CV list instead of an interleaved tree: simpler to get right (about 150 lines over
//! `blake3::hazmat`, checked against `blake3::hash` for every size class), no extra
//! dependency, and the data itself moves in large contiguous writes with no per-chunk
//! framing, which is what throughput needs.
//!
//! Streams come from `libp2p-stream` rather than request-response chunk requests: one
//! stream per blob keeps the pipe full (no request round trip per chunk), back-pressure is
//! the transport's own flow control, and a transfer that fails verification is ended by
//! dropping the stream. The costs: the serving side hashes a blob once before sending (its
//! CV lists are cached), and `libp2p-stream` is still marked alpha.
//!
//! Every limit the layer enforces lives in [`config::Limits`].

#![deny(missing_docs)]

pub mod ad;
pub mod canonical;
pub mod codec;
pub mod config;
pub mod id;
pub mod network;
pub mod protocol;
pub mod receipt;
pub mod secret;
pub mod transfer;
pub mod tree;

pub use ad::{ExecutorAd, ProviderAd, ProviderEntry, ResourceCaps, SignedAd};
pub use config::{Limits, NetConfig, RelayLimits};
pub use id::BlobId;
pub use libp2p::identity::Keypair;
pub use libp2p::{Multiaddr, PeerId};
pub use network::{
    Client, Event, EventLoop, Events, NatStatus, NetError, Reachability, Responder, Route, new,
};
pub use protocol::{
    Accept, BlobRef, InputEntry, Isolation, JobId, JobResult, JobState, Offer, OfferReply,
    RejectReason, Request, ResourceNeeds, Response,
};
pub use receipt::{Receipt, ReceiptBody, ReceiptError, ReceiptUsage, RunStatus};
pub use secret::SecretValue;
pub use transfer::{
    BlobReader, BlobStore, FetchLimits, FetchStats, MemoryBlobStore, PathBlobStore, TransferError,
};
