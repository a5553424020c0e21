//! The `requestor` command line.
//!
//! Exit codes: 0 verified success · 1 the task ran and did not succeed · 2 usage ·
//! 3 refused by every provider · 4 verification failed (digest, receipt, replicas
//! disagree) · 5 no provider found or reachable · 9 other error.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pinfold_net::{Multiaddr, PeerId};

use crate::run::{RunError, RunOptions};
use crate::session::{Session, SessionConfig};

/// The pinfold requestor.
#[derive(Debug, Parser)]
#[command(
    name = "requestor",
    version,
    about,
    after_help = "exit codes: 0 verified success, 1 task failed, 2 usage, 3 refused, \
                  4 verification failed, 5 no provider, 9 other error"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a definition on the network and verify what comes back.
    Run(RunArgs),
    /// Check a saved receipt offline (and the outputs it attests).
    Verify(VerifyArgs),
    /// List live providers and what they offer.
    Providers(ProvidersArgs),
    /// Moved: the demo is its own binary, `cargo run --release -p pinfold-demo`.
    #[command(hide = true, disable_help_flag = true)]
    Demo {
        /// Whatever was passed; only the pointer to the new binary is printed.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Arguments of `requestor run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A definition identity (blake3:…), a definition directory or a bundle file.
    pub definition: String,
    /// A file or directory, made available as `<io.input>/<base name>`.
    #[arg(long = "input", value_name = "PATH")]
    pub inputs: Vec<PathBuf>,
    /// A param value, `NAME=VALUE`.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// A secret the definition declares, `NAME=@FILE` (the file's exact bytes); sent only
    /// inside the encrypted connection to the provider, never written anywhere.
    /// Parsed after clap so that a mistyped inline value is never echoed in an error.
    #[arg(long = "secret", value_name = "NAME=@FILE")]
    pub secrets: Vec<String>,
    /// Directory for outputs, stdio and the receipt (default a fresh
    /// ./pinfold-out/run-TIME-RANDOM; a provider never chooses the name).
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Largest output to accept, in bytes (files together, stdout and stderr each), when
    /// DEFINITION is an identity: without the manifest its limits.output is unknown
    /// (default 1 GiB). With a directory or bundle, its limits.output applies (and this
    /// can only lower it).
    #[arg(long, value_name = "BYTES")]
    pub max_output: Option<u64>,
    /// Run on this many distinct providers and require their outputs to agree.
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Only offer to this provider; repeat for several.
    #[arg(long = "provider", value_name = "PEER_ID")]
    pub providers: Vec<PeerId>,
    /// Peer to dial, ending in /p2p/<peer id>; repeat for several.
    // The help text shows `<peer id>` as written; rustdoc must not read it as HTML.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    pub bootstrap: Vec<Multiaddr>,
    /// Find providers on the local network too.
    #[arg(long)]
    pub mdns: bool,
    /// Seconds to wait for provider ads.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub wait: u64,
    /// Seconds to wait for one provider's result before trying another.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub timeout: u64,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Test only: serve FILE as the bundle, unchecked, while offering DEFINITION.
    #[arg(long, value_name = "FILE", hide = true)]
    pub unchecked_bundle: Option<PathBuf>,
}

/// Arguments of `requestor verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The saved receipt.json.
    pub receipt: PathBuf,
    /// The job directory (with outputs/ and stdout) whose digest must match.
    #[arg(long, value_name = "DIR")]
    pub outputs: Option<PathBuf>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `requestor providers`.
#[derive(Debug, Args)]
pub struct ProvidersArgs {
    /// Peer to dial, ending in /p2p/<peer id>; repeat for several.
    // The help text shows `<peer id>` as written; rustdoc must not read it as HTML.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    pub bootstrap: Vec<Multiaddr>,
    /// Find providers on the local network too.
    #[arg(long)]
    pub mdns: bool,
    /// Seconds to listen for ads.
    #[arg(long, value_name = "SECS", default_value_t = 3)]
    pub wait: u64,
    /// Print one JSON array on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Logs to stderr, filtered by `PINFOLD_LOG` (default `warn`); the demo binary uses it too.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PINFOLD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Parses the command line, runs, and returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Run(a) => run(a),
        Command::Verify(a) => Ok(verify(&a)),
        Command::Providers(a) => providers(&a),
        Command::Demo { .. } => {
            eprintln!(
                "error: the demo is its own binary now (so the requestor never links the \
                 provider): cargo run --release -p pinfold-demo -- [--providers N] \
                 [--replicas N] [--keep]"
            );
            Ok(crate::EXIT_USAGE)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            crate::EXIT_ERROR
        }
    }
}

fn run(a: RunArgs) -> anyhow::Result<i32> {
    let json = a.json;
    let opts = RunOptions {
        definition: a.definition,
        inputs: a.inputs,
        params: a.params.into_iter().collect::<BTreeMap<_, _>>(),
        secrets: match pinfold_net::secret::read_secret_args(&a.secrets) {
            Ok(s) => s,
            Err(e) => return Ok(report(Err(RunError::Usage(e)), json)),
        },
        output: a.output,
        max_output: a.max_output,
        replicas: a.replicas,
        providers: a.providers,
        bootstrap: a.bootstrap,
        mdns: a.mdns,
        wait_ads: Duration::from_secs(a.wait),
        timeout: Duration::from_secs(a.timeout),
        unchecked_bundle: a.unchecked_bundle,
        progress: !json,
    };
    let rt = runtime()?;
    let result = rt.block_on(crate::run::run(opts));
    // Do not wait for the network's background tasks to wind down.
    rt.shutdown_background();
    Ok(report(result, json))
}

/// Prints a run's result (text on stderr + stdout of the task, or JSON) and returns the
/// exit code.
pub fn report(result: Result<crate::run::RunReport, RunError>, json: bool) -> i32 {
    match result {
        Ok(r) => {
            if json {
                println!("{}", serde_json::json!({"ok": true, "report": r}));
            } else {
                for rep in &r.replicas {
                    eprintln!(
                        "verified: {} on {} (job {}), outputs {} in {}",
                        rep.status.as_str(),
                        rep.provider,
                        rep.job_id,
                        rep.outputs,
                        rep.dir.display()
                    );
                }
                if r.replicas.len() > 1 {
                    eprintln!(
                        "replicas agree: {} providers, digest {}",
                        r.replicas.len(),
                        r.replicas[0].outputs
                    );
                }
                if let Some(first) = r.replicas.first()
                    && let Ok(out) = std::fs::read(first.dir.join("stdout"))
                {
                    print!("{}", String::from_utf8_lossy(&out));
                }
            }
            crate::EXIT_OK
        }
        Err(e) => {
            let code = e.exit_code();
            if json {
                let kind = match &e {
                    RunError::Usage(_) => "usage",
                    RunError::NoProvider(_) => "no_provider",
                    RunError::Refused(_) => "refused",
                    RunError::TaskFailed { .. } => "task_failed",
                    RunError::Verification { .. } => "verification",
                    RunError::Disagreement(_) => "disagreement",
                    RunError::Disk(_) => "disk",
                    RunError::Other(_) => "error",
                };
                let mut v = serde_json::json!({"ok": false, "kind": kind, "error": e.to_string()});
                if let RunError::Refused(r) = &e {
                    v["refusals"] = serde_json::to_value(r).unwrap_or_default();
                }
                if let RunError::Disagreement(d) = &e {
                    v["digests"] = serde_json::to_value(d).unwrap_or_default();
                }
                println!("{v}");
            } else {
                eprintln!("error: {e}");
            }
            code
        }
    }
}

fn verify(a: &VerifyArgs) -> i32 {
    match crate::verify::verify_saved(&a.receipt, a.outputs.as_deref()) {
        Ok(r) => {
            let b = &r.body;
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "provider": b.provider, "definition": b.definition,
                        "status": b.status.as_str(), "outputs": b.outputs, "outputs_checked": a.outputs.is_some()})
                );
            } else {
                println!("receipt verifies: signed by provider {}", b.provider);
                println!("definition {}", b.definition);
                match b.exit_code {
                    Some(c) => println!("status {} (exit code {c})", b.status.as_str()),
                    None => println!("status {}", b.status.as_str()),
                }
                println!(
                    "outputs {}{}",
                    b.outputs,
                    if a.outputs.is_some() {
                        " (matches the files)"
                    } else {
                        ""
                    }
                );
            }
            crate::EXIT_OK
        }
        Err(e) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "error": e.to_string()})
                );
            } else {
                eprintln!("error: {e}");
            }
            crate::EXIT_VERIFY
        }
    }
}

fn providers(a: &ProvidersArgs) -> anyhow::Result<i32> {
    if a.bootstrap.is_empty() && !a.mdns {
        eprintln!("error: pass --bootstrap MULTIADDR (or --mdns) to find providers");
        return Ok(crate::EXIT_USAGE);
    }
    let rt = runtime()?;
    let code = rt.block_on(async {
        let s = Session::start(SessionConfig {
            bootstrap: a.bootstrap.clone(),
            mdns: a.mdns,
        })
        .await?;
        for (addr, e) in &s.failed {
            eprintln!("warning: cannot dial {addr}: {e}");
        }
        let ads = s
            .wait_for_ads(usize::MAX, Duration::from_secs(a.wait))
            .await;
        if a.json {
            let v: Vec<_> = ads
                .iter()
                .map(|e| serde_json::json!({"peer": e.peer.to_base58(), "ad": e.ad}))
                .collect();
            println!("{}", serde_json::Value::Array(v));
        } else if ads.is_empty() {
            println!("no providers");
        } else {
            for e in &ads {
                let ex: Vec<String> =
                    e.ad.executors
                        .iter()
                        .map(|x| format!("{} ({})", x.runtime, x.isolation.as_str()))
                        .collect();
                println!(
                    "{}  executors {}  slots {}/{}  memory {} MiB  bundles {}",
                    e.peer,
                    ex.join(", "),
                    e.ad.free_slots,
                    e.ad.caps.concurrent_tasks,
                    e.ad.caps.memory_bytes >> 20,
                    e.ad.bundles.len()
                );
            }
        }
        anyhow::Ok(if ads.is_empty() {
            crate::EXIT_NO_PROVIDER
        } else {
            crate::EXIT_OK
        })
    })?;
    rt.shutdown_background();
    Ok(code)
}
