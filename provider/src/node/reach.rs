//! How peers reach the node: stable listen addresses (`provider init` picks one fixed port
//! for TCP and QUIC; `--listen` takes `IP:PORT`), bootstrap peers remembered across
//! restarts, and the status file a running node keeps for `provider status` (its
//! reachability as AutoNAT and its relays show it).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pinfold_net::{Client, Multiaddr, Reachability};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::NodeError;

/// Bootstrap peers remembered in the data directory.
pub const BOOTSTRAP_FILE: &str = "bootstrap.json";
/// What a running node says about itself, in the data directory.
pub const STATUS_FILE: &str = "status.json";
/// Most bootstrap peers remembered (newest kept).
const MAX_REMEMBERED: usize = 64;
/// How often the status file is refreshed while nothing changes.
const STATUS_INTERVAL: Duration = Duration::from_secs(2);

/// Expands one `--listen` value: a multiaddr as it is, or `IP:PORT` (IPv6 in brackets) as
/// the TCP and the QUIC address on that port.
pub fn listen_arg(s: &str) -> Result<Vec<String>, String> {
    if s.starts_with('/') {
        return s
            .parse::<Multiaddr>()
            .map(|_| vec![s.to_string()])
            .map_err(|e| format!("listen address {s:?}: {e}"));
    }
    let sa: SocketAddr = s.parse().map_err(|_| {
        format!("listen address {s:?}: expected a multiaddr or IP:PORT (e.g. 0.0.0.0:4001)")
    })?;
    let ip = match sa.ip() {
        IpAddr::V4(ip) => format!("/ip4/{ip}"),
        IpAddr::V6(ip) => format!("/ip6/{ip}"),
    };
    let port = sa.port();
    Ok(vec![
        format!("{ip}/tcp/{port}"),
        format!("{ip}/udp/{port}/quic-v1"),
    ])
}

/// A port free for both TCP and UDP on every interface now, from the dynamic range, for
/// `provider init` to write into the configuration (a fixed port is what a NAT forward or
/// a firewall rule can name).
pub fn pick_port() -> Result<u16, NodeError> {
    for _ in 0..64 {
        // The OS picks a free TCP port; keep it if the same UDP port is free too.
        let tcp = std::net::TcpListener::bind(("0.0.0.0", 0))
            .map_err(|e| NodeError::Io(format!("finding a free port: {e}")))?;
        let port = tcp
            .local_addr()
            .map_err(|e| NodeError::Io(e.to_string()))?
            .port();
        if std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(NodeError::Io(
        "no port free for both tcp and udp after 64 tries".into(),
    ))
}

/// The template's listen line with `port` in place of port 0.
pub fn template_with_port(template: &str, port: u16) -> String {
    template
        .replace("/tcp/0\"", &format!("/tcp/{port}\""))
        .replace("/udp/0/quic-v1\"", &format!("/udp/{port}/quic-v1\""))
}

/// Bootstrap peers for this start: the configured ones, then the ones remembered from
/// earlier starts. The configured ones are remembered (newest first, at most 64), so a
/// node started once with `--bootstrap` finds the network again after a restart without it.
pub fn bootstrap_peers(data_dir: &Path, configured: &[String]) -> Vec<String> {
    let path = data_dir.join(BOOTSTRAP_FILE);
    let remembered: Vec<String> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut all: Vec<String> = Vec::new();
    for a in configured.iter().chain(&remembered) {
        // Only full peer addresses are worth keeping; a bad remembered entry is dropped.
        let ok = a
            .parse::<Multiaddr>()
            .ok()
            .and_then(|m| pinfold_net::network::split_peer(&m))
            .is_some();
        if ok && !all.contains(a) {
            all.push(a.clone());
        }
    }
    all.truncate(MAX_REMEMBERED);
    if !configured.is_empty()
        && let Ok(json) = serde_json::to_vec_pretty(&all)
        && let Err(e) =
            pinfold_base::fs::write_atomic(&path, &json, pinfold_base::fs::Durability::Durable)
    {
        tracing::warn!("remembering bootstrap peers in {}: {e}", path.display());
    }
    all
}

/// What `provider status` shows: written by the running node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeStatus {
    /// The node's process.
    pub pid: u32,
    /// Its peer id.
    pub peer_id: String,
    /// Listen addresses.
    pub listening: Vec<Multiaddr>,
    /// What it knows of its reachability.
    pub reachability: Reachability,
    /// Peers connected now.
    pub peers: usize,
    /// When this was written, Unix seconds.
    pub updated: u64,
}

/// Keeps `DATA/status.json` current until `shutdown`, then removes it.
pub async fn keep_status(client: Client, data_dir: PathBuf, mut shutdown: watch::Receiver<bool>) {
    let path = data_dir.join(STATUS_FILE);
    loop {
        let (Ok(reachability), Ok(listening), Ok(peers)) = (
            client.reachability().await,
            client.listen_addrs().await,
            client.connected_peers().await,
        ) else {
            break;
        };
        let status = NodeStatus {
            pid: std::process::id(),
            peer_id: client.peer_id().to_string(),
            listening,
            reachability,
            peers: peers.len(),
            updated: pinfold_registry::unix_now(),
        };
        if let Ok(json) = serde_json::to_vec_pretty(&status)
            // Rewritten every few seconds: atomic for readers, not worth an fsync each time.
            && let Err(e) =
                pinfold_base::fs::write_atomic(&path, &json, pinfold_base::fs::Durability::Atomic)
        {
            tracing::warn!("writing {}: {e}", path.display());
        }
        tokio::select! {
            _ = tokio::time::sleep(STATUS_INTERVAL) => {}
            _ = shutdown.changed() => break,
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Reads the status a running node keeps in `data_dir`; `None` when no node runs there
/// (no file, or its process is gone).
pub fn read_status(data_dir: &Path) -> Result<Option<NodeStatus>, NodeError> {
    let path = data_dir.join(STATUS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(NodeError::Io(format!("{}: {e}", path.display()))),
    };
    let status: NodeStatus = serde_json::from_slice(&bytes)
        .map_err(|e| NodeError::Io(format!("{}: {e}", path.display())))?;
    // A SIGKILLed node leaves its file behind: only a live process counts.
    if !Path::new(&format!("/proc/{}", status.pid)).exists() {
        return Ok(None);
    }
    Ok(Some(status))
}

/// Waits up to `wait` for a relay to accept a reservation (when relays are configured), so
/// that what `provider run` prints before `ready` already includes the relayed address.
pub async fn wait_for_relay(client: &Client, wait: Duration) -> Option<Reachability> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let r = client.reachability().await.ok()?;
        if !r.relayed.is_empty() || tokio::time::Instant::now() >= deadline {
            return Some(r);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_accepts_ip_port_and_multiaddrs() {
        assert_eq!(
            listen_arg("0.0.0.0:4001").unwrap(),
            vec!["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
        );
        assert_eq!(
            listen_arg("[::1]:5").unwrap(),
            vec!["/ip6/::1/tcp/5", "/ip6/::1/udp/5/quic-v1"]
        );
        assert_eq!(
            listen_arg("/ip4/127.0.0.1/tcp/0").unwrap(),
            vec!["/ip4/127.0.0.1/tcp/0"]
        );
        for bad in [
            "localhost:4001",
            "1.2.3.4",
            "/ip4/1.2.3.4/tcp/x",
            "1.2.3.4:70000",
        ] {
            let e = listen_arg(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn init_gets_one_fixed_port_for_tcp_and_quic() {
        let port = pick_port().unwrap();
        assert_ne!(port, 0);
        let t = template_with_port(super::super::config::TEMPLATE, port);
        let c: super::super::config::NodeConfig = toml::from_str(&t).unwrap();
        assert_eq!(
            c.network.listen,
            vec![
                format!("/ip4/0.0.0.0/tcp/{port}"),
                format!("/ip4/0.0.0.0/udp/{port}/quic-v1")
            ]
        );
    }

    #[test]
    fn bootstrap_peers_survive_a_restart_without_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let a = "/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
        assert_eq!(bootstrap_peers(dir.path(), &[a.to_string()]), vec![a]);
        assert_eq!(bootstrap_peers(dir.path(), &[]), vec![a], "remembered");
        // A garbage file or entry is ignored, never fatal.
        std::fs::write(dir.path().join(BOOTSTRAP_FILE), b"[\"/not/an/addr\", 7]").unwrap();
        assert!(bootstrap_peers(dir.path(), &[]).is_empty());
    }
}
