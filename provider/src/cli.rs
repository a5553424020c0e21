//! The `provider` command line: argument parsing and the glue between staging, the executor and printing.
//!
//! Exit codes (documented in `provider --help` too):
//! 0 succeeded · 1 failed (guest exit code ≠ 0) · 2 usage error · 3 trapped ·
//! 4 timed_out · 5 memory_exceeded · 6 output_exceeded · 7 rejected ·
//! 8 refused to run an unreviewed definition · 9 provider-side error (I/O, staging, cache) ·
//! 130/143 interrupted by SIGINT/SIGTERM (the run stopped and cleaned up).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use task_defs::{Definition, RuntimeKind};

use crate::docker::{DockerConfig, DockerExecutor};
use crate::executor::{Outcome, RunRequest, Status};
use crate::executors::Executors;
use crate::fsio::{self, TreeCaps};
use crate::wasm::{WasmConfig, WasmExecutor};

/// Exit code for a usage error (what clap uses for its own).
pub const EXIT_USAGE: i32 = 2;
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
    after_help = "exit codes differ by subcommand: see `provider help <SUBCOMMAND>`"
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
    /// Remove finished jobs' rows, stored bundles and compiled artifacts past the
    /// `[retention]` settings (the running node also does this every `retention.interval`).
    Prune(crate::node::cli::PruneArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(pinfold_base::cli::CompletionsArgs),
    /// Print the man page, or write one per command into --dir.
    Man(pinfold_base::cli::ManArgs),
    /// Show whether the node runs, its addresses and its reachability (public, behind a
    /// NAT, relayed); exits 1 when no node runs with this configuration.
    Status(crate::node::cli::StatusArgs),
    /// Internal: started by `provider exec` for a Docker definition; when that process dies
    /// without dismissing it (SIGKILL, a crash), removes the containers, mounts and run
    /// directory it left.
    #[command(name = "__exec-watchdog", hide = true)]
    ExecWatchdog,
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
    pub log_key: Option<pinfold_tlog::PublicKey>,
    /// A trusted reviewer's public key; repeat for each.
    #[arg(long = "reviewer", value_name = "PUBKEY", requires = "registry")]
    pub reviewers: Vec<pinfold_tlog::PublicKey>,
    /// Distinct trusted approvals required.
    #[arg(long, value_name = "K", requires = "registry")]
    pub threshold: Option<usize>,
    /// Oldest registry checkpoint, in seconds, to trust.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub max_age: u64,
    /// A trusted witness's C2SP verifier key (`name+keyid+base64`); repeat for each. The
    /// registry's checkpoint must then carry their cosignatures.
    #[arg(long = "witness", value_name = "VKEY", requires = "registry")]
    pub witnesses: Vec<pinfold_tlog::CosignerKey>,
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
    let cli: Cli = pinfold_base::cli::parse(crate::help::command());
    if matches!(cli.command, Command::Exec(_) | Command::Run(_)) {
        crate::wasm::raise_descriptor_limit();
    }
    match cli.command {
        Command::Exec(args) => match exec(&args) {
            Ok(code) => code,
            Err(e) => fail(args.json, EXIT_ERROR, &pinfold_base::cli::chain(&e)),
        },
        Command::Init(args) => crate::node::cli::init(&args),
        Command::Run(args) => crate::node::cli::run(&args),
        Command::Jobs(args) => crate::node::cli::jobs(&args),
        Command::Status(args) => crate::node::cli::status(&args),
        Command::Prune(args) => crate::node::cli::prune(&args),
        Command::Completions(args) => {
            match pinfold_base::cli::run_completions(crate::help::command(), &args) {
                Ok(()) => 0,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
                Err(e) => {
                    eprintln!("error: {e}");
                    EXIT_ERROR
                }
            }
        }
        Command::Man(args) => match pinfold_base::cli::run_man(crate::help::command(), &args) {
            Ok(()) => 0,
            Err(e) if pinfold_base::cli::is_broken_pipe(&e) => 0,
            Err(e) => {
                eprintln!("error: {}", pinfold_base::cli::chain(&e));
                EXIT_ERROR
            }
        },
        Command::ExecWatchdog => exec_watchdog(),
        Command::Doctor(args) => match doctor(&args) {
            Ok(code) => code,
            Err(e) => fail(args.json, EXIT_ERROR, &pinfold_base::cli::chain(&e)),
        },
    }
}

/// Reports an error, as `{"error": ..., "exit_code": ...}` on stdout in `--json` mode (where
/// the caller reads JSON) and as `error: ...` on stderr otherwise; returns `code`.
pub fn fail(json: bool, code: i32, message: &str) -> i32 {
    if json {
        println!("{}", pinfold_base::cli::json_error(message, code));
    } else {
        eprintln!("error: {message}");
    }
    code
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
        return Ok(fail(
            args.json,
            EXIT_UNREVIEWED,
            &format!(
                "refusing to run {}: no registry is configured to confirm it was reviewed \
                 (pass --registry URL --log-key KEY --reviewer KEY --threshold K, or \
                 --allow-unreviewed to run it anyway)",
                args.definition.display()
            ),
        ));
    }
    if args.registry.is_none() {
        eprintln!(
            "warning: running an unreviewed definition ({}); it is sandboxed but nobody vouched for it",
            args.definition.display()
        );
    }
    let secrets = match pinfold_net::secret::read_secret_args(&args.secrets) {
        Ok(s) => s,
        Err(e) => return Ok(fail(args.json, EXIT_USAGE, &e.to_string())),
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
    if let Some(gate) = gate_config(args, cache_dir.as_deref())
        && let Err(reason) = crate::gate::check(&gate, &definition.id)
    {
        return Ok(report(&Outcome::rejected(reason), args.json));
    }
    if let Some(out) = &args.output {
        check_empty_or_absent(out)?;
    }

    // Signals are caught from here on, so the run directory below is always removed; one
    // left by a provider exec that was SIGKILLed is swept first.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut signals = {
        let _in_runtime = rt.enter();
        Signals::new().context("installing signal handlers")?
    };
    crate::docker::sweep_stale_run_dirs(&std::env::temp_dir());
    let work = tempfile::Builder::new()
        .prefix(&crate::docker::run_dir_prefix())
        .tempdir()
        .context("creating the run directory")?;
    let input_dir = work.path().join("input");
    let output_dir = work.path().join("output");
    for d in [&input_dir, &output_dir] {
        fsio::create_private_dir(d).with_context(|| format!("creating {}", d.display()))?;
    }
    if let Err(e) = fsio::stage_inputs(
        &args.inputs,
        &input_dir,
        TreeCaps {
            bytes: MAX_INPUT_BYTES,
            entries: MAX_INPUT_ENTRIES,
        },
    ) {
        if input_refusal(&e, &input_dir) {
            return Ok(fail(
                args.json,
                EXIT_USAGE,
                &format!("--input refused: {e}"),
            ));
        }
        return Err(e).context("staging inputs");
    }

    let cfg = WasmConfig {
        max_concurrent: 1,
        cache_dir: args.cache_dir.clone().or_else(default_cache_dir),
        ..WasmConfig::default()
    };
    let kind = definition.manifest.runtime.kind();
    let req = RunRequest {
        definition: Arc::new(definition),
        params: args.params.iter().cloned().collect::<BTreeMap<_, _>>(),
        input_dir: input_dir.clone(),
        output_dir: output_dir.clone(),
        secrets,
    };
    let outcome = match rt.block_on(run_until_signal(kind, cfg, req, &mut signals))? {
        Ok(o) => o,
        Err(code) => return Ok(code),
    };

    if let Some(out) = &args.output {
        copy_outputs(&output_dir, out, &outcome.files)?;
    }
    Ok(report(&outcome, args.json))
}

/// SIGINT and SIGTERM, caught so that an interrupted run is cleaned up.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    /// Must be called inside the runtime.
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// The next signal's name and the exit code it stands for (128 + its number).
    async fn recv(&mut self) -> (&'static str, i32) {
        tokio::select! {
            _ = self.int.recv() => ("SIGINT", 130),
            _ = self.term.recv() => ("SIGTERM", 143),
        }
    }
}

/// The gate `provider exec` was asked for, if `--registry` was given. State lives in
/// `registry-state/` next to the artifact cache directory.
fn gate_config(args: &ExecArgs, cache_dir: Option<&Path>) -> Option<crate::gate::GateConfig> {
    Some(crate::gate::GateConfig {
        registry: args.registry.clone()?,
        log_key: args.log_key?,
        origin: None,
        reviewers: args.reviewers.clone(),
        threshold: args.threshold?,
        max_age_secs: args.max_age,
        state_dir: cache_dir
            .and_then(Path::parent)
            .map(|p| p.join("registry-state")),
        witnesses: args.witnesses.clone(),
        witness_threshold: args.witness_threshold,
    })
}

/// Runs `req`, or, at SIGINT or SIGTERM, stops it and removes what it made: dropping the
/// run unmounts its tmpfs and removes its scratch directories, and every container this
/// process created is removed before returning (a second signal skips the wait, and the
/// watchdog, left undismissed, cleans up once this process has exited). `Err` carries the
/// exit code of an interrupted run.
async fn run_until_signal(
    kind: RuntimeKind,
    cfg: WasmConfig,
    req: RunRequest,
    signals: &mut Signals,
) -> anyhow::Result<Result<Outcome, i32>> {
    let executors = match kind {
        RuntimeKind::Wasm => Executors::new(Some(WasmExecutor::new(cfg)?), None),
        RuntimeKind::Docker => tokio::select! {
            d = DockerExecutor::new(DockerConfig::from_env()?) => {
                Executors::new(None, Some(d.context("starting the docker executor")?))
            }
            (name, code) = signals.recv() => {
                eprintln!("error: interrupted by {name} before the run started");
                return Ok(Err(code));
            }
        },
    };
    // Signals are handled here; for what cannot be (SIGKILL, a crash) a watchdog process
    // cleans up after us, unless dismissed once everything is known to be gone.
    let watchdog = executors.docker().and_then(|_| Watchdog::spawn());
    let run = executors.run(req);
    let (name, code) = tokio::select! {
        o = run => {
            if let Some(w) = watchdog {
                w.dismiss();
            }
            return Ok(Ok(o));
        }
        s = signals.recv() => s,
    };
    if let Some(d) = executors.docker() {
        tokio::select! {
            r = d.cleanup_own(d.config().api_timeout) => match r {
                Ok(()) => {
                    if let Some(w) = watchdog {
                        w.dismiss();
                    }
                }
                Err(e) => eprintln!(
                    "warning: removing this run's container: {e:#}; a watchdog retries once this process exits"
                ),
            },
            (again, _) = signals.recv() => {
                eprintln!("warning: {again} again: leaving the cleanup to a watchdog that runs once this process exits");
            }
        }
    }
    eprintln!("error: interrupted by {name}; the run was stopped and cleaned up");
    Ok(Err(code))
}

/// A child `provider __exec-watchdog` holding the read end of a pipe whose write end only
/// this process has. Dropped without [`Watchdog::dismiss`] (or when this process dies in
/// any way, SIGKILL included, which closes the pipe), the watchdog sees end-of-file and
/// removes what this process left: its containers, mounts and run directory.
struct Watchdog {
    stdin: std::process::ChildStdin,
}

impl Watchdog {
    /// Starts the watchdog in its own process group (so a terminal's Ctrl-C, which goes
    /// to the whole foreground group, does not stop it too); `None` if it cannot start,
    /// and then the next `provider exec` sweeps instead.
    fn spawn() -> Option<Watchdog> {
        use std::os::unix::process::CommandExt as _;
        let started = std::env::current_exe().and_then(|exe| {
            std::process::Command::new(exe)
                .arg("__exec-watchdog")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .process_group(0)
                .spawn()
        });
        match started {
            Ok(mut child) => child.stdin.take().map(|stdin| Watchdog { stdin }),
            Err(e) => {
                eprintln!(
                    "warning: no cleanup watchdog ({e}); the next provider exec sweeps instead"
                );
                None
            }
        }
    }

    /// Tells the watchdog everything is clean: it exits without touching anything.
    fn dismiss(mut self) {
        use std::io::Write as _;
        let _ = self.stdin.write_all(b"x");
    }
}

/// `provider __exec-watchdog`: waits for its parent `provider exec` to dismiss it or die;
/// on death, removes the containers and scratch mounts of every dead owner of the
/// instance (the parent's included) and their run directories. Always exits 0.
fn exec_watchdog() -> i32 {
    use std::io::Read as _;
    let parent = std::os::unix::process::parent_id();
    let mut byte = [0u8; 1];
    let dismissed = loop {
        match std::io::stdin().read(&mut byte) {
            Ok(n) => break n == 1,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break false,
        }
    };
    if dismissed {
        return 0;
    }
    // The pipe closes as the parent exits; once we are reparented it is gone (a zombie at
    // most, which owns nothing), so its containers are orphans, which is exactly what an
    // executor's start-up sweep removes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::os::unix::process::parent_id() == parent && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 0;
    };
    rt.block_on(async {
        if let Ok(cfg) = DockerConfig::from_env()
            && let Ok(d) = DockerExecutor::new(cfg).await
        {
            let _ = d.cleanup_orphans().await;
        }
    });
    crate::docker::sweep_stale_run_dirs(&std::env::temp_dir());
    0
}

/// Whether a staging failure is the caller's doing (a link, socket, fifo or device given
/// as `--input` or found inside one, a missing or unreadable path, clashing names, too
/// much): a usage refusal. Only failing to write into our own staging directory is a
/// provider error.
fn input_refusal(e: &fsio::FsError, staging: &Path) -> bool {
    match e {
        fsio::FsError::Io { path, .. } => !path.starts_with(staging),
        _ => true,
    }
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

/// Copies exactly the files the run returned into `dest`: what the executor counted against
/// `limits.output`, never whatever else the guest left behind (a sparse 1 TiB file, a tree
/// past the entry cap).
fn copy_outputs(src: &Path, dest: &Path, files: &[crate::OutputFile]) -> anyhow::Result<()> {
    if !dest.exists() {
        std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    }
    fsio::copy_returned(src, dest, files)
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
        // The exact bytes the task wrote, not a lossy rendering of them.
        let _ = std::io::stdout().write_all(&o.stdout);
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().write_all(&o.stderr);
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
            o.usage.measured.wall_us / 1000
        );
        for d in &o.dropped {
            eprintln!("dropped {}: {}", d.path, d.reason);
        }
    }
    exit_code(o.status)
}
