//! The `provider` command line: argument parsing and the glue between staging, the executor and printing.
//!
//! Exit codes (documented in `provider --help` too):
//! 0 succeeded · 1 failed (guest exit code ≠ 0) · 2 usage error · 3 trapped ·
//! 4 timed_out · 5 memory_exceeded · 6 output_exceeded · 7 rejected ·
//! 8 refused to run an unreviewed definition · 9 provider-side error (I/O, staging, cache).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use task_defs::{Definition, RuntimeKind};

use crate::docker::{DockerConfig, DockerExecutor};
use crate::executor::{Executor, Outcome, RunRequest, Status};
use crate::fsio::{self, TreeCaps};
use crate::wasm::{WasmConfig, WasmExecutor};

/// Exit code for a refused unreviewed definition.
pub const EXIT_UNREVIEWED: i32 = 8;
/// Exit code for a provider-side error.
pub const EXIT_ERROR: i32 = 9;

/// Most bytes of inputs staged for one run.
pub const MAX_INPUT_BYTES: u64 = 1 << 30;
/// Most entries of inputs staged for one run.
pub const MAX_INPUT_ENTRIES: u64 = 100_000;

/// The exit code for a run's status.
pub fn exit_code(status: Status) -> i32 {
    match status {
        Status::Succeeded => 0,
        Status::Failed => 1,
        Status::Trapped => 3,
        Status::TimedOut => 4,
        Status::MemoryExceeded => 5,
        Status::OutputExceeded => 6,
        Status::Rejected => 7,
    }
}

/// The pinfold provider node.
#[derive(Debug, Parser)]
#[command(
    name = "provider",
    version,
    about,
    after_help = "exit codes: 0 succeeded, 1 failed, 2 usage error, 3 trapped, 4 timed_out, \
                  5 memory_exceeded, 6 output_exceeded, 7 rejected, 8 unreviewed definition refused, \
                  9 provider error"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a task definition locally.
    Exec(ExecArgs),
    /// Check this machine, the Docker daemon, the wasm set-up and the node's alarms (split
    /// registry views); exits 1 if any check fails.
    Doctor(DoctorArgs),
    /// Create a node directory: a commented provider.toml and a persistent identity key.
    Init(crate::node::cli::InitArgs),
    /// Run the provider node: join the network and run approved jobs for requestors.
    Run(crate::node::cli::RunArgs),
    /// List the node's jobs and their states.
    Jobs(crate::node::cli::JobsArgs),
}

/// Arguments of `provider doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print one JSON object with every check on stdout.
    #[arg(long)]
    pub json: bool,
    /// Artifact cache directory to check (default as for `exec`).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// The node's provider.toml, to find its data dir (default as for `run`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The node's data dir (overrides --config).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
}

/// Arguments of `provider exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Definition directory or bundle file.
    pub definition: PathBuf,
    /// A file or directory to make available read-only as `<io.input>/<base name>`.
    #[arg(long = "input", value_name = "PATH")]
    pub inputs: Vec<PathBuf>,
    /// Directory to copy the outputs into (must be absent or empty).
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// A param value, `NAME=VALUE`.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// A secret the definition declares, `NAME=@FILE` (the file's bytes; kept in memory,
    /// given to the task as environment (wasm) or a tmpfs file (Docker)).
    /// Parsed after clap so that a mistyped inline value is never echoed in an error.
    #[arg(long = "secret", value_name = "NAME=@FILE")]
    pub secrets: Vec<String>,
    /// Print one JSON object describing the outcome on stdout.
    #[arg(long)]
    pub json: bool,
    /// Run even though no registry has reviewed the definition.
    #[arg(long, conflicts_with = "registry")]
    pub allow_unreviewed: bool,
    /// Run only if this registry's verified log shows the definition approved by
    /// --threshold of the --reviewer keys (anything else exits 7, rejected).
    #[arg(long, value_name = "URL", requires_all = ["log_key", "threshold"])]
    pub registry: Option<String>,
    /// The registry log's public key (the registry's DIR/log.pub).
    #[arg(long, value_name = "PUBKEY", requires = "registry")]
    pub log_key: Option<task_defs::tlog::PublicKey>,
    /// A trusted reviewer's public key; repeat for each.
    #[arg(long = "reviewer", value_name = "PUBKEY", requires = "registry")]
    pub reviewers: Vec<task_defs::tlog::PublicKey>,
    /// Distinct trusted approvals required.
    #[arg(long, value_name = "K", requires = "registry")]
    pub threshold: Option<usize>,
    /// Oldest registry checkpoint, in seconds, to trust.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub max_age: u64,
    /// A trusted witness's C2SP verifier key (`name+keyid+base64`); repeat for each. The
    /// registry's checkpoint must then carry their cosignatures.
    #[arg(long = "witness", value_name = "VKEY", requires = "registry")]
    pub witnesses: Vec<task_defs::tlog::CosignerKey>,
    /// Distinct trusted witnesses that must cosign (default: all given witnesses).
    #[arg(long, value_name = "K", requires = "witnesses")]
    pub witness_threshold: Option<usize>,
    /// Artifact cache directory (default: $PINFOLD_CACHE_DIR, else ~/.cache/pinfold/artifacts).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

/// Parses the command line, runs, and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Exec(args) => match exec(&args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                EXIT_ERROR
            }
        },
        Command::Init(args) => crate::node::cli::init(&args),
        Command::Run(args) => crate::node::cli::run(&args),
        Command::Jobs(args) => crate::node::cli::jobs(&args),
        Command::Doctor(args) => match doctor(&args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                EXIT_ERROR
            }
        },
    }
}

/// Runs `provider doctor`; `Ok` carries the exit code (1 iff a check failed).
pub fn doctor(args: &DoctorArgs) -> anyhow::Result<i32> {
    let opts = crate::doctor::DoctorOptions {
        docker: DockerConfig::from_env()?,
        cache_dir: args.cache_dir.clone().or_else(default_cache_dir),
        api_timeout: std::time::Duration::from_secs(10),
        // As `provider run` finds it: --config, else ./provider.toml, else ./data.
        data_dir: match &args.data {
            Some(d) => Some(d.clone()),
            None => crate::node::cli::load_config(args.config.as_deref())
                .map(|c| c.paths.data_dir)
                .ok(),
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = rt.block_on(crate::doctor::run(&opts));
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", crate::doctor::render_text(&report));
    }
    Ok(i32::from(report.failed))
}

pub(crate) fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("PINFOLD_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("pinfold").join("artifacts"))
}

/// Runs `provider exec`; `Ok` carries the exit code.
pub fn exec(args: &ExecArgs) -> anyhow::Result<i32> {
    if !args.allow_unreviewed && args.registry.is_none() {
        eprintln!(
            "error: refusing to run {}: no registry is configured to confirm it was reviewed \
             (pass --registry URL --log-key KEY --reviewer KEY --threshold K, or \
             --allow-unreviewed to run it anyway)",
            args.definition.display()
        );
        return Ok(EXIT_UNREVIEWED);
    }
    if args.registry.is_none() {
        eprintln!(
            "warning: running an unreviewed definition ({}); it is sandboxed but nobody vouched for it",
            args.definition.display()
        );
    }
    let secrets = match pinfold_net::secret::read_secret_args(&args.secrets) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            // A usage error, as clap reports its own.
            return Ok(2);
        }
    };
    let definition = match Definition::load(&args.definition) {
        Ok(d) => d,
        Err(task_defs::Error::Invalid(diags)) => {
            return Ok(report(
                &Outcome::rejected(format!("invalid definition: {}", diags.to_string().trim())),
                args.json,
            ));
        }
        Err(e) => return Err(e).context("loading the definition"),
    };
    let cache_dir = args.cache_dir.clone().or_else(default_cache_dir);
    if let Some(gate) = crate::gate::GateConfig::from_exec_args(args, cache_dir.as_deref())
        && let Err(reason) = crate::gate::check(&gate, &definition.id)
    {
        return Ok(report(&Outcome::rejected(reason), args.json));
    }
    if let Some(out) = &args.output {
        check_empty_or_absent(out)?;
    }

    let work = tempfile::Builder::new()
        .prefix("pinfold-run-")
        .tempdir()
        .context("creating the run directory")?;
    let input_dir = work.path().join("input");
    let output_dir = work.path().join("output");
    for d in [&input_dir, &output_dir] {
        fsio::create_private_dir(d).with_context(|| format!("creating {}", d.display()))?;
    }
    fsio::stage_inputs(
        &args.inputs,
        &input_dir,
        TreeCaps {
            bytes: MAX_INPUT_BYTES,
            entries: MAX_INPUT_ENTRIES,
        },
    )
    .context("staging inputs")?;

    let cfg = WasmConfig {
        max_concurrent: 1,
        cache_dir: args.cache_dir.clone().or_else(default_cache_dir),
        ..WasmConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let kind = definition.manifest.runtime.kind();
    let req = RunRequest {
        definition: Arc::new(definition),
        params: args.params.iter().cloned().collect::<BTreeMap<_, _>>(),
        input_dir: input_dir.clone(),
        output_dir: output_dir.clone(),
        secrets,
    };
    let outcome = rt.block_on(async {
        anyhow::Ok(match kind {
            RuntimeKind::Wasm => WasmExecutor::new(cfg)?.run(req).await,
            RuntimeKind::Docker => {
                DockerExecutor::new(DockerConfig::from_env()?)
                    .await
                    .context("starting the docker executor")?
                    .run(req)
                    .await
            }
        })
    })?;

    if let Some(out) = &args.output {
        copy_outputs(&output_dir, out)?;
    }
    Ok(report(&outcome, args.json))
}

fn check_empty_or_absent(dir: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("--output {}", dir.display())),
        Ok(m) if !m.is_dir() => bail!("--output {}: not a directory", dir.display()),
        Ok(_) => {
            let empty = std::fs::read_dir(dir)
                .with_context(|| format!("--output {}", dir.display()))?
                .next()
                .is_none();
            if !empty {
                bail!("--output {}: directory is not empty", dir.display());
            }
            Ok(())
        }
    }
}

/// Copies the returned outputs (regular files and directories only) into `dest`.
fn copy_outputs(src: &Path, dest: &Path) -> anyhow::Result<()> {
    if !dest.exists() {
        std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    }
    fsio::collect_outputs(
        src,
        Some(dest),
        TreeCaps {
            bytes: u64::MAX,
            entries: u64::MAX,
        },
    )
    .with_context(|| format!("copying outputs to {}", dest.display()))?;
    Ok(())
}

/// Prints the outcome and returns the exit code for it.
fn report(o: &Outcome, json: bool) -> i32 {
    if json {
        match serde_json::to_string(o) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: serialising the outcome: {e}");
                return EXIT_ERROR;
            }
        }
    } else {
        print!("{}", o.stdout);
        eprint!("{}", o.stderr);
        let mut line = format!("status: {}", o.status);
        if let Some(c) = o.exit_code {
            line.push_str(&format!(" (exit code {c})"));
        }
        if let Some(r) = &o.reason {
            line.push_str(&format!(": {r}"));
        }
        eprintln!("{line}");
        eprintln!(
            "outputs: {} ({} files, {} dropped), wall {} ms",
            o.outputs,
            o.files.len(),
            o.dropped.len(),
            o.usage.wall_us / 1000
        );
        for d in &o.dropped {
            eprintln!("dropped {}: {}", d.path, d.reason);
        }
    }
    exit_code(o.status)
}
