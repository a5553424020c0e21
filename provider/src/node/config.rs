//! The node's configuration file (`provider.toml`), its defaults, and `provider init`.
//!
//! Every field has a safe default, so an empty file is a valid configuration: listen on
//! all interfaces, wasm only, two tasks at once, nobody's definitions run until a registry
//! is configured. Relative paths are relative to the file's directory, so a node directory
//! can be moved as a whole. Sizes and durations take the manifest's units (`"1GiB"`,
//! `"10m"`) as well as integers in the unit the key names ([`super::units`]).

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
    /// The local observability endpoint.
    pub metrics: MetricsSection,
    /// How long finished jobs, bundles and compiled artifacts are kept.
    pub retention: RetentionSection,
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// `IP:PORT` serving `/metrics` and `/healthz`; off when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

/// `[retention]`: what `provider prune` and the running node remove. A duration of 0 keeps
/// that kind forever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    /// Jobs in a final stage whose last change is older than this (milliseconds) are
    /// removed from the job store with their history.
    #[serde(deserialize_with = "super::units::millis")]
    pub jobs: u64,
    /// Stored bundles unused for this long (milliseconds) are removed (refetched on need).
    #[serde(deserialize_with = "super::units::millis")]
    pub bundles: u64,
    /// Compiled artifacts unused for this long (milliseconds) are removed (recompiled on
    /// need).
    #[serde(deserialize_with = "super::units::millis")]
    pub artifacts: u64,
    /// How often the running node prunes (milliseconds); 0 leaves it to `provider prune`.
    #[serde(deserialize_with = "super::units::millis")]
    pub interval: u64,
}

impl Default for RetentionSection {
    fn default() -> Self {
        const DAY: u64 = 24 * 3_600_000;
        RetentionSection {
            jobs: 30 * DAY,
            bundles: 7 * DAY,
            artifacts: 7 * DAY,
            interval: 3_600_000,
        }
    }
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
    #[serde(deserialize_with = "super::units::secs")]
    pub ad_interval_secs: u64,
    /// Gossip heartbeat in milliseconds (lower spreads ads faster, costs more chatter).
    #[serde(deserialize_with = "super::units::millis")]
    pub gossip_heartbeat_ms: u64,
    /// Longest job-protocol exchange in milliseconds, the node's decision included. It is
    /// also how long a peer may hold a request stream open without sending its request.
    #[serde(deserialize_with = "super::units::millis")]
    pub request_timeout_ms: u64,
    /// Longest wait in milliseconds for any single read or write of a blob transfer
    /// (a request, a header, one 64 KiB group), so a stalled peer frees its slot.
    #[serde(deserialize_with = "super::units::millis")]
    pub transfer_timeout_ms: u64,
    /// Connections with no open stream close after this many milliseconds.
    #[serde(deserialize_with = "super::units::millis")]
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
    #[serde(deserialize_with = "super::units::http_url")]
    pub url: Option<String>,
    /// The registry log's public key (`ed25519:...`).
    pub log_key: Option<String>,
    /// Trusted reviewer keys.
    pub reviewers: Vec<String>,
    /// Distinct trusted approvals required.
    pub threshold: usize,
    /// Oldest checkpoint, in seconds, to vouch from.
    #[serde(deserialize_with = "super::units::secs")]
    pub max_age_secs: u64,
    /// Run definitions nobody reviewed (sandboxed regardless). Off unless you mean it.
    pub allow_unreviewed: bool,
    /// Sync the log at most this often, in milliseconds (a revocation takes effect on the
    /// node within this interval; every offer in between uses the verified view).
    #[serde(deserialize_with = "super::units::millis")]
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
    #[serde(deserialize_with = "super::units::isolation")]
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
    #[serde(deserialize_with = "super::units::bytes")]
    pub memory_bytes: u64,
    /// Tasks at once.
    pub concurrent_tasks: u32,
    /// Total input bytes per task.
    #[serde(deserialize_with = "super::units::bytes")]
    pub input_bytes: u64,
    /// Total output bytes per task.
    #[serde(deserialize_with = "super::units::bytes")]
    pub output_bytes: u64,
    /// Seconds a finished job's outputs stay available for download.
    #[serde(deserialize_with = "super::units::secs")]
    pub retain_secs: u64,
    /// Free bytes kept in reserve on the data and work directories' filesystems: an offer
    /// whose inputs, bundle and output limit would eat into them is refused, so the job
    /// store, the compile cache and an output writer's overshoot always have room.
    #[serde(deserialize_with = "super::units::bytes")]
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
        let mut c: NodeConfig = toml::from_str(&text).map_err(|e| {
            let msg = task_defs::diag::with_suggestion(e.to_string());
            NodeError::Config(format!("{}: {msg}", path.display()))
        })?;
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
# Sizes and durations: an integer in the unit the key names, or a string with a unit as in
# manifests ("1GiB", "512MiB"; "500ms", "10s", "10m", "1h").
memory_bytes = "1GiB"            # per task
concurrent_tasks = 2
input_bytes = "256MiB"           # per task
output_bytes = "256MiB"          # per task
retain_secs = "10m"              # how long finished outputs stay downloadable
# Free disk space kept in reserve (data and work directories); offers whose inputs and
# output limit do not fit above it are refused as over the caps.
disk_reserve_bytes = "64MiB"

[requestors]
# Peer ids. An empty allow list serves everyone not denied.
allow = []
deny = []

[metrics]
# Serve Prometheus /metrics and /healthz here (keep it local or firewalled); off when absent.
# listen = "127.0.0.1:9464"

[retention]
# What `provider prune`, and the running node every `interval`, remove: finished jobs'
# rows and history, stored bundles and compiled artifacts unused for this long. "0s"
# keeps that kind forever.
jobs = "30d"
bundles = "7d"
artifacts = "7d"
interval = "1h"

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
        let e = toml::from_str::<NodeConfig>("[executors]\ndocker_isolation = \"vm\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("vm-required, vm-recommended or container"),
            "{e}"
        );

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
