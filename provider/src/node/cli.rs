//! `provider init`, `provider run`, `provider jobs` and `provider prune`: thin glue between
//! flags and [`super`].
//!
//! `provider run` prints `peer id <PEER>`, one `listening on <MULTIADDR>` line per address
//! (each ending in `/p2p/<PEER>`) and then `ready` on stdout, flushed, before serving;
//! scripts and tests read the addresses from there. Logs go to stderr (`PINFOLD_LOG`
//! filters them, default `info`; `--log-format json` writes one JSON object a line, and text
//! has colour codes only when stderr is a terminal). With `[metrics] listen` (or
//! `--metrics-listen`) it prints `metrics http://<ADDR>` before `ready`. Exit codes: 0 after a clean shutdown (SIGINT or
//! SIGTERM), 2 usage or configuration error, 9 runtime error.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

use super::config::{CONFIG_FILE, NodeConfig};
use super::{NodeError, start};

/// Exit code for a bad configuration.
pub const EXIT_USAGE: i32 = 2;
/// Exit code for a runtime failure.
pub const EXIT_ERROR: i32 = 9;

/// Arguments of `provider init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to create the node in.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// Print one JSON object (`config`, `peer_id`) on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `provider run`; flags override the configuration file.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration file (default: ./provider.toml if present, else built-in defaults
    /// with state in ./data and ./work).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen address: a multiaddr, or IP:PORT for TCP and QUIC on that port; repeat for
    /// several. Replaces the configured list.
    #[arg(long = "listen", value_name = "MULTIADDR|IP:PORT")]
    pub listen: Vec<String>,
    /// Relay to hold a reservation on, ending in /p2p/<relay peer id>; repeat for several.
    /// Replaces the configured list. For a node behind a NAT.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(long = "relay", value_name = "MULTIADDR")]
    pub relays: Vec<String>,
    /// Serve as a relay for nodes behind NATs (within the configured relay limits).
    #[arg(long)]
    pub relay_server: bool,
    /// An address this node is reachable at from outside; repeat for several.
    #[arg(long = "external", value_name = "MULTIADDR")]
    pub external: Vec<String>,
    /// Peer to dial at start-up, ending in /p2p/<peer id>; repeat for several.
    // The help text shows `<peer id>` as written; rustdoc must not read it as HTML.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    pub bootstrap: Vec<String>,
    /// Registry base URL.
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,
    /// The registry log's public key.
    #[arg(long, value_name = "PUBKEY")]
    pub log_key: Option<String>,
    /// A trusted reviewer's key; repeat for each. Replaces the configured list.
    #[arg(long = "reviewer", value_name = "PUBKEY")]
    pub reviewers: Vec<String>,
    /// Distinct trusted approvals required.
    #[arg(long, value_name = "K")]
    pub threshold: Option<usize>,
    /// Turn off local-network discovery.
    #[arg(long)]
    pub no_mdns: bool,
    /// Serve Prometheus `/metrics` and `/healthz` on this IP:PORT (overrides
    /// `[metrics] listen`; keep it local or firewalled).
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_listen: Option<String>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Print the start-up announcement as one JSON object (`peer_id`, `listen`,
    /// `interrupted`, `metrics`) followed by `ready`, and errors as JSON.
    #[arg(long)]
    pub json: bool,
}

/// How `provider run` writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Arguments of `provider prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Configuration file (as for `run`); its `[retention]` says what goes.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Only count what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `provider jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Configuration file (as for `run`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print one JSON array on stdout.
    #[arg(long)]
    pub json: bool,
    /// Most jobs listed, newest first.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PINFOLD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a file or a journal.
        .with_ansi(format == LogFormat::Text && std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Reads `--config`, else `./provider.toml`, else the defaults rooted at the current dir.
pub fn load_config(path: Option<&Path>) -> Result<NodeConfig, NodeError> {
    match path {
        Some(p) => NodeConfig::load(p),
        None if Path::new(CONFIG_FILE).exists() => NodeConfig::load(Path::new(CONFIG_FILE)),
        None => {
            let mut c = NodeConfig::default();
            let cwd = std::env::current_dir().map_err(|e| NodeError::Io(e.to_string()))?;
            c.resolve_paths(&cwd);
            Ok(c)
        }
    }
}

/// Applies the flags of `provider run` over a configuration.
pub fn apply_flags(c: &mut NodeConfig, a: &RunArgs) {
    if !a.listen.is_empty() {
        c.network.listen = a.listen.clone();
    }
    if !a.bootstrap.is_empty() {
        c.network.bootstrap = a.bootstrap.clone();
    }
    if !a.relays.is_empty() {
        c.network.relays = a.relays.clone();
    }
    if a.relay_server {
        c.network.relay_server = true;
    }
    if !a.external.is_empty() {
        c.network.external = a.external.clone();
    }
    if let Some(u) = &a.registry {
        c.registry.url = Some(u.clone());
    }
    if let Some(k) = &a.log_key {
        c.registry.log_key = Some(k.clone());
    }
    if !a.reviewers.is_empty() {
        c.registry.reviewers = a.reviewers.clone();
    }
    if let Some(t) = a.threshold {
        c.registry.threshold = t;
    }
    if a.no_mdns {
        c.network.mdns = false;
    }
    if let Some(m) = &a.metrics_listen {
        c.metrics.listen = Some(m.clone());
    }
}

/// Runs `provider init`.
pub fn init(a: &InitArgs) -> i32 {
    match super::config::init(&a.dir) {
        Ok((path, peer)) if a.json => {
            println!("{}", serde_json::json!({"config": path, "peer_id": peer}));
            0
        }
        Ok((path, peer)) => {
            println!("wrote {}", path.display());
            println!("peer id {peer}");
            0
        }
        Err(e) => crate::cli::fail(a.json, EXIT_USAGE, &e.to_string()),
    }
}

/// Runs `provider run` until SIGINT or SIGTERM.
pub fn run(a: &RunArgs) -> i32 {
    init_logging(a.log_format);
    let mut config = match load_config(a.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return crate::cli::fail(a.json, EXIT_USAGE, &e.to_string()),
    };
    apply_flags(&mut config, a);
    let result = (|| -> anyhow::Result<i32> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        rt.block_on(async {
            let node = match start(config, None).await {
                Ok(n) => n,
                Err(e @ NodeError::Config(_)) => {
                    return Ok(crate::cli::fail(a.json, EXIT_USAGE, &e.to_string()));
                }
                Err(e) => return Err(e).context("starting the node"),
            };
            if a.json {
                let mut out = std::io::stdout().lock();
                let v = serde_json::json!({
                    "peer_id": node.peer_id.to_string(),
                    "listen": node.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "interrupted": node.interrupted,
                    "metrics": node.metrics_addr.map(|m| format!("http://{m}")),
                    "relayed": node
                        .reachability
                        .relayed
                        .iter()
                        .map(|a| format!("{a}/p2p/{}", node.peer_id))
                        .collect::<Vec<_>>(),
                    "reachability": node.reachability,
                });
                writeln!(out, "{v}")?;
                writeln!(out, "ready")?;
                out.flush()?;
            } else {
                let mut out = std::io::stdout().lock();
                writeln!(out, "peer id {}", node.peer_id)?;
                for addr in &node.addrs {
                    writeln!(out, "listening on {addr}")?;
                }
                for addr in &node.reachability.relayed {
                    writeln!(out, "relayed at {addr}/p2p/{}", node.peer_id)?;
                }
                writeln!(out, "reachability {}", node.reachability)?;
                for id in &node.interrupted {
                    writeln!(out, "interrupted {id}")?;
                }
                if let Some(m) = node.metrics_addr {
                    writeln!(out, "metrics http://{m}")?;
                }
                writeln!(out, "ready")?;
                out.flush()?;
            }
            pinfold_base::cli::shutdown_signal().await;
            tracing::info!("shutting down");
            node.stop().await;
            Ok(0)
        })
    })();
    match result {
        Ok(code) => code,
        Err(e) => crate::cli::fail(a.json, EXIT_ERROR, &pinfold_base::cli::chain(&e)),
    }
}

/// Arguments of `provider status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Configuration file (as for `run`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print one JSON object on stdout (`{"running": false}` when no node runs).
    #[arg(long)]
    pub json: bool,
}

/// Runs `provider status`: 0 when a node runs with this configuration, 1 when none does.
pub fn status(a: &StatusArgs) -> i32 {
    let result = (|| -> anyhow::Result<i32> {
        let config = load_config(a.config.as_deref())?;
        let status = super::reach::read_status(&config.paths.data_dir)?;
        if a.json {
            let v = match &status {
                Some(s) => {
                    let mut v = serde_json::to_value(s)?;
                    v["running"] = true.into();
                    v
                }
                None => serde_json::json!({ "running": false }),
            };
            println!("{v}");
        } else if let Some(s) = &status {
            println!("running (pid {})", s.pid);
            println!("peer id {}", s.peer_id);
            for addr in &s.listening {
                println!("listening on {addr}");
            }
            for addr in &s.reachability.relayed {
                println!("relayed at {addr}/p2p/{}", s.peer_id);
            }
            println!("reachability {}", s.reachability);
            println!("peers {}", s.peers);
        } else {
            println!(
                "not running (no live node keeps {})",
                config
                    .paths
                    .data_dir
                    .join(super::reach::STATUS_FILE)
                    .display()
            );
        }
        Ok(if status.is_some() { 0 } else { 1 })
    })();
    match result {
        Ok(code) => code,
        Err(e) if pinfold_base::cli::is_broken_pipe(&e) => 0,
        Err(e) => crate::cli::fail(a.json, EXIT_ERROR, &pinfold_base::cli::chain(&e)),
    }
}

/// Runs `provider jobs`: a table with a header (or `--json`), newest first.
pub fn jobs(a: &JobsArgs) -> i32 {
    let result = (|| -> anyhow::Result<()> {
        let config = load_config(a.config.as_deref())?;
        let rows = super::list_jobs(&config, a.limit)?;
        let mut out = std::io::stdout().lock();
        if a.json {
            writeln!(out, "{}", serde_json::to_string(&rows)?)?;
        } else if rows.is_empty() {
            writeln!(out, "no jobs")?;
        } else {
            out.write_all(super::table::jobs_table(&rows).as_bytes())?;
        }
        out.flush()?;
        Ok(())
    })();
    match result {
        Ok(()) => 0,
        Err(e) if pinfold_base::cli::is_broken_pipe(&e) => 0,
        Err(e) => crate::cli::fail(a.json, EXIT_ERROR, &pinfold_base::cli::chain(&e)),
    }
}

/// Runs `provider prune`.
pub fn prune(a: &PruneArgs) -> i32 {
    let config = match load_config(a.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return crate::cli::fail(a.json, EXIT_USAGE, &e.to_string()),
    };
    match super::retention::prune(&config, a.dry_run) {
        Ok(r) if a.json => match serde_json::to_string(&r) {
            Ok(j) => {
                println!("{j}");
                0
            }
            Err(e) => crate::cli::fail(true, EXIT_ERROR, &e.to_string()),
        },
        Ok(r) => {
            let verb = if r.dry_run { "would remove" } else { "removed" };
            println!(
                "{verb} {} job(s), {} bundle(s) ({} bytes), {} compiled artifact(s) ({} bytes)",
                r.jobs, r.bundles, r.bundle_bytes, r.artifacts, r.artifact_bytes
            );
            0
        }
        Err(e) => crate::cli::fail(a.json, EXIT_ERROR, &e.to_string()),
    }
}
