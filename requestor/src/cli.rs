//! The `requestor` command line.
//!
//! Exit codes: 0 verified success · 1 the task ran and did not succeed · 2 usage ·
//! 3 refused by every provider · 4 verification failed (digest, receipt, replicas
//! disagree) · 5 no provider found or reachable · 9 other error · 130 interrupted (the
//! accepted jobs were cancelled on their providers).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
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
                  4 verification failed, 5 no provider, 9 other error, 130 interrupted; each \
                  subcommand's --help lists the ones it uses"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Where the job store lives (default $PINFOLD_REQUESTOR_DIR, else
    /// $XDG_DATA_HOME/pinfold/requestor, else ~/.local/share/pinfold/requestor).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
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
    /// List the jobs this requestor submitted, newest first.
    Jobs(JobsArgs),
    /// Ask a job's provider where the job is.
    Status(JobArgs),
    /// Download and verify a job's outputs and receipt (waiting for it to finish).
    Get(GetArgs),
    /// Cancel a job on its provider.
    Cancel(JobArgs),
    /// Print a finished job's stdout (and its stderr on stderr).
    Logs(JobArgs),
    /// Print a definition's params and limits.
    Describe(DescribeArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(pinfold_base::cli::CompletionsArgs),
    /// Print the man page, or write one per command into --dir.
    Man(pinfold_base::cli::ManArgs),
}

/// Arguments of `requestor jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Print one JSON array on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of the commands about one job.
#[derive(Debug, Args)]
pub struct JobArgs {
    /// The job id, or an unambiguous prefix of it (at least 4 characters).
    pub job: String,
    /// Another address of the job's provider, for one that moved (its recorded
    /// addresses are tried too); repeat for several.
    #[arg(long = "addr", value_name = "MULTIADDR")]
    pub addrs: Vec<Multiaddr>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `requestor get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The job id, or an unambiguous prefix of it (at least 4 characters).
    pub job: String,
    /// Another address of the job's provider, for one that moved (its recorded
    /// addresses are tried too); repeat for several.
    #[arg(long = "addr", value_name = "MULTIADDR")]
    pub addrs: Vec<Multiaddr>,
    /// Directory for outputs, stdio and the receipt (default a fresh
    /// ./pinfold-out/run-TIME-RANDOM).
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Seconds to wait for the job to finish.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub timeout: u64,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `requestor describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// A definition identity or unambiguous prefix of one, a directory or a bundle file.
    pub definition: String,
    /// Registry to look identities up in (default $PINFOLD_REGISTRY).
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `requestor run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A definition identity (blake3:…) or an unambiguous prefix of one, a definition
    /// directory or a bundle file.
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
    /// Return once the provider has started the job; print its job id and leave the
    /// result to `requestor get JOB`.
    #[arg(long)]
    pub detach: bool,
    /// Registry to look DEFINITION up in when it is an identity or a prefix of one
    /// (default $PINFOLD_REGISTRY): params, limits and runtime are then checked here
    /// before any offer.
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,
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
        // Colour codes only for a person at a terminal, never into a file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Parses the command line, runs, and returns the exit code.
pub fn main() -> i32 {
    let cli: Cli = pinfold_base::cli::parse(crate::help::command());
    init_logging();
    let data_dir = cli.data_dir.clone();
    let json = match &cli.command {
        Command::Run(a) => a.json,
        Command::Verify(a) => a.json,
        Command::Providers(a) => a.json,
        Command::Jobs(a) => a.json,
        Command::Status(a) | Command::Cancel(a) | Command::Logs(a) => a.json,
        Command::Get(a) => a.json,
        Command::Describe(a) => a.json,
        Command::Demo { .. } | Command::Completions(_) | Command::Man(_) => false,
    };
    let result = match cli.command {
        Command::Run(a) => run(a, data_dir),
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
        Command::Jobs(a) => crate::lifecycle_cli::jobs(&a, data_dir),
        Command::Status(a) => crate::lifecycle_cli::status(&a, data_dir),
        Command::Get(a) => crate::lifecycle_cli::get(&a, data_dir),
        Command::Cancel(a) => crate::lifecycle_cli::cancel(&a, data_dir),
        Command::Logs(a) => crate::lifecycle_cli::logs(&a, data_dir),
        Command::Describe(a) => crate::lifecycle_cli::describe(&a, data_dir),
        Command::Completions(a) => pinfold_base::cli::run_completions(crate::help::command(), &a)
            .map(|()| 0)
            .map_err(anyhow::Error::from),
        Command::Man(a) => pinfold_base::cli::run_man(crate::help::command(), &a).map(|()| 0),
    };
    match result {
        Ok(code) => code,
        // The reader went away (`requestor providers | head -1`): not a failure.
        Err(e) if pinfold_base::cli::is_broken_pipe(&e) => 0,
        Err(e) if json => {
            let msg = pinfold_base::cli::chain(&e);
            println!("{}", pinfold_base::cli::json_error(&msg, crate::EXIT_ERROR));
            crate::EXIT_ERROR
        }
        Err(e) => {
            eprintln!("error: {}", pinfold_base::cli::chain(&e));
            crate::EXIT_ERROR
        }
    }
}

/// The registry URL: the flag, else `$PINFOLD_REGISTRY`.
pub(crate) fn registry_url(flag: Option<String>) -> Option<String> {
    flag.or_else(|| {
        std::env::var("PINFOLD_REGISTRY")
            .ok()
            .filter(|v| !v.is_empty())
    })
}

fn run(a: RunArgs, data_dir: Option<PathBuf>) -> anyhow::Result<i32> {
    let json = a.json;
    // The store is best effort for a foreground run (a warning if it cannot be opened)
    // and required for --detach, whose job is only reachable again through it.
    let store = match crate::lifecycle::open_store(data_dir.as_deref()) {
        Ok(s) => Some(s),
        Err(e) if a.detach => return Ok(report(Err(e), json)),
        Err(e) => {
            eprintln!("requestor: warning: not recording the job: {e}");
            None
        }
    };
    let (definition, known) =
        match crate::lifecycle_cli::resolve_for_run(&a.definition, a.registry.clone(), &store) {
            Ok(r) => r,
            Err(e) => return Ok(report(Err(e), json)),
        };
    let interrupt = Arc::new(tokio::sync::Notify::new());
    let opts = RunOptions {
        definition,
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
        detach: a.detach,
        store,
        known,
        interrupt: Some(interrupt.clone()),
    };
    let rt = runtime()?;
    let result = rt.block_on(async {
        // Installed before anything goes on the wire, so Ctrl-C never kills the process
        // with a job accepted and left running.
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(|e| RunError::Other(format!("installing the Ctrl-C handler: {e}")))?;
        tokio::spawn(async move {
            if sigint.recv().await.is_some() {
                interrupt.notify_one();
            }
        });
        crate::run::run(opts).await
    });
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
            } else if !r.detached.is_empty() {
                for d in &r.detached {
                    eprintln!(
                        "detached: job {} on {} is {}; collect it with `requestor get {}`",
                        d.job_id,
                        d.provider,
                        serde_json::to_value(d.state)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        d.job_id
                    );
                    // The handle alone on stdout, for scripts.
                    println!("{}", d.job_id);
                }
            } else {
                for rep in &r.replicas {
                    eprintln!(
                        "verified: {} on {} (job {}), outputs {} in {}{}",
                        rep.status.as_str(),
                        rep.provider,
                        rep.job_id,
                        rep.outputs,
                        rep.dir.display(),
                        rep.route
                            .as_deref()
                            .map(|r| format!(", connection {r}"))
                            .unwrap_or_default()
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
                    RunError::Interrupted(_) => "interrupted",
                    RunError::Other(_) => "error",
                };
                let mut v = serde_json::json!({"ok": false, "kind": kind, "error": e.to_string()});
                if let RunError::Refused(r) = &e {
                    v["refusals"] = serde_json::to_value(r).unwrap_or_default();
                }
                if let RunError::Disagreement(d) = &e {
                    v["digests"] = serde_json::to_value(d).unwrap_or_default();
                }
                if let RunError::Interrupted(c) = &e {
                    v["cancels"] = serde_json::to_value(c).unwrap_or_default();
                }
                println!("{v}");
            } else if let RunError::Interrupted(c) = &e {
                for c in c {
                    eprintln!(
                        "requestor: interrupted: job {} on {}: {}",
                        c.job_id, c.provider, c.outcome
                    );
                }
                if c.is_empty() {
                    eprintln!("requestor: interrupted before any provider accepted the job");
                }
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
        let msg = "pass --bootstrap MULTIADDR (or --mdns) to find providers";
        if a.json {
            println!("{}", pinfold_base::cli::json_error(msg, crate::EXIT_USAGE));
        } else {
            eprintln!("error: {msg}");
        }
        return Ok(crate::EXIT_USAGE);
    }
    let rt = runtime()?;
    let code = rt.block_on(async {
        let s = Session::start(SessionConfig {
            bootstrap: a.bootstrap.clone(),
            mdns: a.mdns,
            keypair: None,
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
