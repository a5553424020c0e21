//! The node's configuration file (`provider.toml`), its defaults, and `provider init`.
//!
//! Every field has a safe default, so an empty file is a valid configuration: listen on
//! all interfaces, wasm only, two tasks at once, nobody's definitions run until a registry
//! is configured. Relative paths are relative to the file's directory, so a node directory
//! can be moved as a whole.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::NodeError;

/// The name of the identity key file inside the data directory.
pub const KEY_FILE: &str = "identity.key";
/// The name of the configuration file `provider init` writes.
pub const CONFIG_FILE: &str = "provider.toml";

/// `provider.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Peer-to-peer settings.
    pub network: NetworkSection,
    /// The registry and whom to trust in it.
    pub registry: RegistrySection,
    /// Which executors run tasks.
    pub executors: ExecutorsSection,
    /// Per-task caps.
    pub caps: CapsSection,
    /// Which requestors are served.
    pub requestors: RequestorsSection,
    /// Where state lives.
    pub paths: PathsSection,
}

/// `[network]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSection {
    /// Listen multiaddrs.
    pub listen: Vec<String>,
    /// Peers to dial at start-up, each ending in `/p2p/<peer id>`.
    pub bootstrap: Vec<String>,
    /// Local-network discovery.
    pub mdns: bool,
    /// Kademlia peer routing.
    pub kad: bool,
    /// Seconds between capability ads.
    pub ad_interval_secs: u64,
    /// Gossip heartbeat in milliseconds (lower spreads ads faster, costs more chatter).
    pub gossip_heartbeat_ms: u64,
    /// Longest job-protocol exchange in milliseconds, the node's decision included. It is
    /// also how long a peer may hold a request stream open without sending its request.
    pub request_timeout_ms: u64,
    /// Longest wait in milliseconds for any single read or write of a blob transfer
    /// (a request, a header, one 64 KiB group), so a stalled peer frees its slot.
    pub transfer_timeout_ms: u64,
    /// Connections with no open stream close after this many milliseconds.
    pub idle_timeout_ms: u64,
    /// Relays to hold a reservation on (multiaddrs ending in `/p2p/<relay>`): behind a NAT,
    /// peers reach this node through them, then try a hole punch.
    pub relays: Vec<String>,
    /// How long `provider run` waits at start-up for a relay to accept a reservation before
    /// it reports ready anyway, in milliseconds.
    pub relay_wait_ms: u64,
    /// Serve as a relay for nodes behind NATs (a public node should).
    pub relay_server: bool,
    /// Relayed connections served at once (with `relay_server`).
    pub relay_max_circuits: usize,
    /// Bytes one relayed connection may carry before the relay cuts it.
    pub relay_circuit_bytes: u64,
    /// Seconds one relayed connection may last.
    pub relay_circuit_secs: u64,
    /// Addresses this node is reachable at from outside (a public IP and forwarded port),
    /// advertised without waiting for a reachability probe.
    pub external: Vec<String>,
}

impl NetworkSection {
    /// Applies the configured timeouts to the network layer's settings.
    pub fn apply_timeouts(&self, net: &mut pinfold_net::NetConfig) {
        use std::time::Duration;
        net.limits.request_timeout = Duration::from_millis(self.request_timeout_ms.max(100));
        net.limits.blob_io_timeout = Duration::from_millis(self.transfer_timeout_ms.max(100));
        net.idle_timeout = Duration::from_millis(self.idle_timeout_ms.max(100));
    }

    /// What this node grants others as a relay, if it serves as one.
    pub fn relay_limits(&self) -> Option<pinfold_net::RelayLimits> {
        self.relay_server.then(|| pinfold_net::RelayLimits {
            max_circuits: self.relay_max_circuits.max(1),
            max_circuit_bytes: self.relay_circuit_bytes,
            max_circuit_duration: std::time::Duration::from_secs(self.relay_circuit_secs.max(1)),
            ..pinfold_net::RelayLimits::default()
        })
    }
}

impl Default for NetworkSection {
    fn default() -> Self {
        NetworkSection {
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".into(),
                "/ip4/0.0.0.0/udp/0/quic-v1".into(),
            ],
            bootstrap: Vec::new(),
            mdns: true,
            kad: true,
            ad_interval_secs: 30,
            gossip_heartbeat_ms: 1000,
            request_timeout_ms: 30_000,
            transfer_timeout_ms: 20_000,
            idle_timeout_ms: 60_000,
            relays: Vec::new(),
            relay_wait_ms: 10_000,
            relay_server: false,
            relay_max_circuits: 32,
            relay_circuit_bytes: 64 << 20,
            relay_circuit_secs: 600,
            external: Vec::new(),
        }
    }
}

/// `[registry]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySection {
    /// Registry base URL; without one, only `allow_unreviewed` lets anything run.
    pub url: Option<String>,
    /// The registry log's public key (`ed25519:...`).
    pub log_key: Option<String>,
    /// Trusted reviewer keys.
    pub reviewers: Vec<String>,
    /// Distinct trusted approvals required.
    pub threshold: usize,
    /// Oldest checkpoint, in seconds, to vouch from.
    pub max_age_secs: u64,
    /// Run definitions nobody reviewed (sandboxed regardless). Off unless you mean it.
    pub allow_unreviewed: bool,
    /// Sync the log at most this often, in milliseconds (a revocation takes effect on the
    /// node within this interval; every offer in between uses the verified view).
    pub sync_interval_ms: u64,
    /// Trusted witnesses: C2SP verifier keys (`name+keyid+base64`) of log witnesses.
    pub witnesses: Vec<String>,
    /// How many of them must cosign every checkpoint the node trusts (default: all listed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub witness_threshold: Option<usize>,
}

impl Default for RegistrySection {
    fn default() -> Self {
        RegistrySection {
            url: None,
            log_key: None,
            reviewers: Vec::new(),
            threshold: 2,
            max_age_secs: 300,
            allow_unreviewed: false,
            sync_interval_ms: 1000,
            witnesses: Vec::new(),
            witness_threshold: None,
        }
    }
}

/// `[executors]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorsSection {
    /// The wasm executor.
    pub wasm: bool,
    /// The Docker executor (needs a reachable daemon).
    pub docker: bool,
    /// `vm-required`, `vm-recommended` or `container`.
    pub docker_isolation: String,
}

impl Default for ExecutorsSection {
    fn default() -> Self {
        ExecutorsSection {
            wasm: true,
            docker: false,
            docker_isolation: "vm-recommended".into(),
        }
    }
}

/// `[caps]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapsSection {
    /// Memory per task, bytes.
    pub memory_bytes: u64,
    /// Tasks at once.
    pub concurrent_tasks: u32,
    /// Total input bytes per task.
    pub input_bytes: u64,
    /// Total output bytes per task.
    pub output_bytes: u64,
    /// Seconds a finished job's outputs stay available for download.
    pub retain_secs: u64,
    /// Free bytes kept in reserve on the data and work directories' filesystems: an offer
    /// whose inputs, bundle and output limit would eat into them is refused, so the job
    /// store, the compile cache and an output writer's overshoot always have room.
    pub disk_reserve_bytes: u64,
}

impl Default for CapsSection {
    fn default() -> Self {
        CapsSection {
            memory_bytes: 1 << 30,
            concurrent_tasks: 2,
            input_bytes: 256 << 20,
            output_bytes: 256 << 20,
            retain_secs: 600,
            disk_reserve_bytes: 64 << 20,
        }
    }
}

/// `[requestors]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestorsSection {
    /// Only these peer ids are served, when non-empty.
    pub allow: Vec<String>,
    /// These peer ids are never served.
    pub deny: Vec<String>,
}

/// `[paths]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathsSection {
    /// Identity key, job store, bundles, artifact cache.
    pub data_dir: PathBuf,
    /// Per-run scratch directories (wiped at start-up).
    pub work_dir: PathBuf,
}

impl Default for PathsSection {
    fn default() -> Self {
        PathsSection {
            data_dir: PathBuf::from("data"),
            work_dir: PathBuf::from("work"),
        }
    }
}

impl NodeConfig {
    /// Reads a configuration file; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<NodeConfig, NodeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?;
        let mut c: NodeConfig = toml::from_str(&text)
            .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        c.resolve_paths(base);
        Ok(c)
    }

    /// Makes the data and work directories absolute against `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.paths.data_dir, &mut self.paths.work_dir] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// The identity key file.
    pub fn key_file(&self) -> PathBuf {
        self.paths.data_dir.join(KEY_FILE)
    }
}

/// The commented configuration `provider init` writes.
pub const TEMPLATE: &str = r#"# pinfold provider node configuration.
# Every setting has a safe default; delete a line to get it back.

[network]
# Where to listen: multiaddrs, or IP:PORT for TCP and QUIC on that port. `provider init`
# writes one fixed port (peers and NAT forwards can name it); port 0 picks one at start-up.
listen = ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]
# Peers to dial at start-up, each ending in /p2p/<peer id>.
bootstrap = []
# Discover peers on the local network.
mdns = true
kad = true
# Seconds between signed capability ads.
ad_interval_secs = 30
# How long a job-protocol exchange may take (also how long a peer may hold a request
# stream open without sending), one blob-transfer read or write may stall, and an
# unused connection stays open; milliseconds.
request_timeout_ms = 30000
transfer_timeout_ms = 20000
idle_timeout_ms = 60000
# Behind a NAT: relays to hold a reservation on (multiaddrs ending in /p2p/<relay>).
# Requestors reach this node through them, then a hole punch (DCUtR) tries to move the
# connection off the relay. `provider status` shows what the node found out.
relays = []
relay_wait_ms = 10000            # wait this long at start-up for a reservation
# A node with a public address can relay for others, within these limits.
relay_server = false
relay_max_circuits = 32
relay_circuit_bytes = 67108864   # per relayed connection
relay_circuit_secs = 600         # per relayed connection
# Addresses you know this node is reachable at (public IP, forwarded port).
external = []

[registry]
# Only definitions approved in this registry's verified log run here.
# url = "http://127.0.0.1:8080"
# log_key = "ed25519:..."        # the registry's DIR/log.pub
# reviewers = ["ed25519:...", "ed25519:..."]   # reviewers you trust
threshold = 2                    # distinct trusted approvals required
max_age_secs = 300               # refuse to vouch from an older checkpoint
# Running unreviewed code is off; sandboxed or not, nobody vouched for it.
allow_unreviewed = false
# Sync the log at most once per this many milliseconds; a revocation reaches the node
# within this interval.
sync_interval_ms = 1000
# Witnesses that must have cosigned every checkpoint the node trusts (C2SP verifier keys,
# as `task-defs witness` prints them); with none listed, no cosignature is required.
witnesses = []
# witness_threshold = 2          # how many of them (default: all listed)

[executors]
wasm = true
# Docker needs a local daemon; "vm-required" refuses to run unless containers sit in a VM.
docker = false
docker_isolation = "vm-recommended"

[caps]
memory_bytes = 1073741824        # per task
concurrent_tasks = 2
input_bytes = 268435456          # per task
output_bytes = 268435456         # per task
retain_secs = 600                # how long finished outputs stay downloadable
# Free disk space kept in reserve (data and work directories); offers whose inputs and
# output limit do not fit above it are refused as over the caps.
disk_reserve_bytes = 67108864

[requestors]
# Peer ids. An empty allow list serves everyone not denied.
allow = []
deny = []

[paths]
# Relative paths are relative to this file.
data_dir = "data"
work_dir = "work"
"#;

/// Writes `DIR/provider.toml` and the identity key; refuses to overwrite either.
/// Returns the config path and the node's peer id.
pub fn init(dir: &Path) -> Result<(PathBuf, String), NodeError> {
    let io = |p: &Path, e: std::io::Error| NodeError::Io(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let config_path = dir.join(CONFIG_FILE);
    if config_path.exists() {
        return Err(NodeError::Config(format!(
            "{} already exists; not overwriting it",
            config_path.display()
        )));
    }
    let mut config: NodeConfig = toml::from_str(TEMPLATE)
        .map_err(|e| NodeError::Config(format!("built-in template: {e}")))?;
    config.resolve_paths(dir);
    let keypair = super::identity::create(&config.key_file())?;
    // A fixed port (the same for TCP and QUIC) rather than port 0: peers, NAT forwards and
    // firewall rules can name it, and it survives restarts.
    let text = super::reach::template_with_port(TEMPLATE, super::reach::pick_port()?);
    std::fs::write(&config_path, text).map_err(|e| io(&config_path, e))?;
    Ok((config_path, keypair.public().to_peer_id().to_base58()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_parses_to_the_defaults_and_init_never_overwrites() {
        let parsed: NodeConfig = toml::from_str(TEMPLATE).unwrap();
        assert_eq!(parsed, NodeConfig::default());
        let empty: NodeConfig = toml::from_str("").unwrap();
        assert_eq!(empty, NodeConfig::default());
        assert!(toml::from_str::<NodeConfig>("[caps]\nmemroy_bytes = 1\n").is_err());

        let dir = tempfile::tempdir().unwrap();
        let (path, peer) = init(dir.path()).unwrap();
        let c = NodeConfig::load(&path).unwrap();
        assert_eq!(c.paths.data_dir, dir.path().join("data"));
        let key = super::super::identity::load(&c.key_file()).unwrap();
        assert_eq!(key.public().to_peer_id().to_base58(), peer);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(c.key_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(init(dir.path()), Err(NodeError::Config(_))));
        std::fs::set_permissions(c.key_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(super::super::identity::load(&c.key_file()).is_err());
    }
}
