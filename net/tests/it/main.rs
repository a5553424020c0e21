//! Integration tests of the network layer: real libp2p nodes in one process, over loopback
//! TCP (port 0) and QUIC, with gossip heartbeats and pings shortened.

mod blobs;
mod gossip;
mod jobs;
mod receipts;
mod transport;
mod util;
