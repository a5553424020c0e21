//! The `task-defs` command line: argument definitions and what each command does.
//!
//! Other tools script against this CLI, so output formats and exit codes are a contract:
//! 0 success, 1 invalid definition or bundle (locally or as the registry judged it),
//! 2 usage error, 3 any other failure (I/O, registry unreachable), 4 the registry refused
//! the request (bad signature, not on the roster, unknown identity, ...), 5 the registry's
//! log failed verification (fork, rollback, altered entries, stale checkpoint).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use task_defs::definition::{Definition, Error};
use task_defs::identity::DefinitionId;
use task_defs::manifest::{self, RuntimeSpec, format_size};
use task_defs::{bundle, scaffold};

pub mod help;
mod registry_cli;

/// Exit code: the definition or bundle is invalid.
pub const EXIT_INVALID: u8 = 1;
/// Exit code: the command line is wrong (clap's own code).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: any other failure (I/O, identity mismatch, registry unreachable).
pub const EXIT_FAILURE: u8 = 3;
/// Exit code: the registry refused the request (a 4xx answer other than "invalid").
pub const EXIT_REFUSED: u8 = 4;
/// Exit code: the registry's log failed verification (fork, rollback, tampering, stale view).
pub const EXIT_UNVERIFIED: u8 = 5;

/// Author and reviewer tool for pinfold task definitions.
#[derive(Debug, Parser)]
#[command(
    name = "task-defs",
    version,
    about,
    after_help = "exit codes: 0 ok, 1 invalid definition or bundle, 2 usage error, 3 other failure \
                  (I/O, registry unreachable), 4 registry refused the request, 5 registry log \
                  failed verification (fork, rollback, tampering, stale checkpoint); each \
                  subcommand's --help lists the ones it uses"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scaffold a valid definition around an existing wasm module or docker image.
    New(NewArgs),
    /// Print the identity of a definition directory or bundle, nothing else.
    Hash {
        /// Definition directory or bundle file.
        path: PathBuf,
        /// Print the canonical document that is hashed instead of the identity.
        #[arg(long)]
        canonical: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Validate a definition and print a summary with its capability footprint.
    Check {
        /// Definition directory or bundle file.
        path: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Pack a definition directory into a single deterministic bundle file.
    Pack {
        /// Definition directory.
        dir: PathBuf,
        /// Bundle file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Unpack and re-verify a bundle into a new directory.
    Unpack {
        /// Bundle file.
        file: PathBuf,
        /// Directory to create (must not exist or be empty).
        #[arg(short, long)]
        output: PathBuf,
        /// Refuse the bundle unless it has this identity.
        #[arg(long, value_name = "ID")]
        expect: Option<DefinitionId>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Generate an Ed25519 key (author, reviewer) into a new file and print its public key.
    Keygen {
        /// Secret key file to create (mode 0600; never overwritten).
        #[arg(short, long)]
        output: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a registry server (prints `listening on http://ADDR` first).
    Serve(ServeArgs),
    /// Hide a pending definition from a registry's review queue, or show it again (an
    /// operator's act on the data directory; the log keeps it).
    Queue(QueueArgs),
    /// Run a log witness: cosign checkpoints of the given logs that extend what it saw
    /// (C2SP tlog-witness `POST /add-checkpoint`; prints `listening on http://ADDR` first).
    Witness(WitnessArgs),
    /// Sign and publish a definition to a registry, where it waits for review.
    Publish {
        /// Definition directory or bundle file.
        path: PathBuf,
        /// Registry base URL.
        #[arg(long, value_name = "URL")]
        registry: String,
        /// The author's secret key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The log's origin the publication is signed for (default: the one the registry's
        /// checkpoint names).
        #[arg(long)]
        origin: Option<String>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List, inspect, approve, reject or revoke definitions on a registry.
    #[command(subcommand)]
    Review(ReviewCommand),
    /// Print the verified status of a definition (pending, approved, rejected, revoked, unknown).
    ///
    /// With --log-key, --reviewer and --threshold the status is verified locally: the client
    /// syncs the log, checks the checkpoint signature, consistency and every entry, and
    /// counts only the given reviewers. Without --log-key it prints the registry's own,
    /// unverified claim and says so.
    Status(StatusArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(pinfold_base::cli::CompletionsArgs),
    /// Print the man page, or write one per command into --dir.
    Man(pinfold_base::cli::ManArgs),
}

/// Arguments of `task-defs serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory (database, log key, log.pub, optional registry.toml).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8417")]
    pub listen: String,
    /// A reviewer on the roster, `PUBKEY` or `NAME=PUBKEY` (replaces registry.toml's roster).
    #[arg(long = "reviewer", value_name = "[NAME=]PUBKEY", value_parser = parse_roster_entry)]
    pub reviewers: Vec<crate::api::RosterEntry>,
    /// Distinct reviewer approvals the server's own view requires (default 1).
    #[arg(long)]
    pub threshold: Option<usize>,
    /// The log's origin (fixed at the first start; default pinfold-registry).
    #[arg(long)]
    pub origin: Option<String>,
    /// Seconds between checkpoint re-signatures when idle (default 60).
    #[arg(long, value_name = "SECS")]
    pub checkpoint_interval: Option<u64>,
    /// Largest bundle accepted, in bytes (default 32 MiB).
    #[arg(long, value_name = "BYTES")]
    pub max_bundle_bytes: Option<u64>,
    /// Configuration file (default DIR/registry.toml): author policy, limits, roster.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The URL reviewers reach this registry at (use https://); pages print it in the
    /// commands they show, never the request's Host header.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// A witness asked to cosign every checkpoint: its C2SP verifier key and its
    /// add-checkpoint URL prefix (replaces registry.toml's witnesses); repeat for each.
    #[arg(long = "witness", value_name = "VKEY=URL", value_parser = parse_witness_entry)]
    pub witnesses: Vec<crate::api::WitnessEntry>,
    /// Serve Prometheus `/metrics` and `/healthz` on this IP:PORT (keep it local or
    /// firewalled); printed as `metrics http://ADDR` after the listening line.
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_listen: Option<String>,
    /// Print the start-up banner as one JSON object (`listening`, `metrics`, `origin`,
    /// `log_key`, `log_vkey`, `witnesses`, `reviewers`, `threshold`), and errors as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `task-defs queue`.
#[derive(Debug, Args)]
pub struct QueueArgs {
    /// `hide` or `unhide`.
    #[arg(value_parser = ["hide", "unhide"])]
    pub action: String,
    /// Definition identity.
    pub id: DefinitionId,
    /// The registry's data directory.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Why (shown on the page of hidden definitions).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `task-defs witness`.
#[derive(Debug, Args)]
pub struct WitnessArgs {
    /// Data directory (witness key, persisted view, optional witness.toml).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8418")]
    pub listen: String,
    /// The witness's name, e.g. `witness.example/w1` (fixed at the first start).
    #[arg(long)]
    pub name: Option<String>,
    /// A log to witness: its C2SP verifier key, as `task-defs serve` prints it (replaces
    /// witness.toml's logs); repeat for each.
    #[arg(long = "log", value_name = "VKEY", value_parser = parse_log_vkey)]
    pub logs: Vec<pinfold_tlog::NoteVerifier>,
    /// Print the start-up banner as one JSON object (`listening`, `vkey`, `logs`), and
    /// errors as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `task-defs review` subcommands.
#[derive(Debug, Subcommand)]
pub enum ReviewCommand {
    /// List definitions awaiting review (the registry's view).
    List {
        /// Registry base URL.
        #[arg(long, value_name = "URL")]
        registry: String,
        /// List every definition, not only pending ones.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Download a definition, verify its identity locally, and print it with its statements.
    Show {
        /// Definition identity.
        id: DefinitionId,
        /// Registry base URL.
        #[arg(long, value_name = "URL")]
        registry: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Sign and submit an approval.
    Approve(VerdictArgs),
    /// Sign and submit a rejection (needs --reason).
    Reject(VerdictArgs),
    /// Sign and submit a revocation, which outranks every approval (needs --reason).
    Revoke(VerdictArgs),
}

/// Arguments of `review approve|reject|revoke`.
#[derive(Debug, Args)]
pub struct VerdictArgs {
    /// Definition identity.
    pub id: DefinitionId,
    /// Registry base URL.
    #[arg(long, value_name = "URL")]
    pub registry: String,
    /// The reviewer's secret key file.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Why (required to reject or revoke).
    #[arg(long)]
    pub reason: Option<String>,
    /// The log's origin the statement is signed for (default: the one the registry's
    /// checkpoint names). Pin it when you cannot vouch for the URL.
    #[arg(long)]
    pub origin: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `task-defs status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Definition identity.
    pub id: DefinitionId,
    /// Registry base URL.
    #[arg(long, value_name = "URL")]
    pub registry: String,
    /// The log's public key (the registry's DIR/log.pub); enables verification.
    #[arg(long, value_name = "PUBKEY", requires_all = ["reviewers", "threshold"])]
    pub log_key: Option<pinfold_tlog::PublicKey>,
    /// A trusted reviewer key (`PUBKEY` or `NAME=PUBKEY`); repeat for each.
    #[arg(long = "reviewer", value_name = "PUBKEY", value_parser = parse_roster_entry)]
    pub reviewers: Vec<crate::api::RosterEntry>,
    /// Distinct trusted approvals required.
    #[arg(long)]
    pub threshold: Option<usize>,
    /// The log's origin (default: the one the log-key-signed checkpoint names).
    #[arg(long)]
    pub origin: Option<String>,
    /// Oldest checkpoint, in seconds, to vouch from.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub max_age: u64,
    /// Verifier state file: loaded before and saved after syncing, so a later run detects
    /// a rolled-back or forked registry. Keep one per witness policy.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// A trusted witness's C2SP verifier key (`name+keyid+base64`); repeat for each.
    #[arg(long = "witness", value_name = "VKEY", requires = "log_key")]
    pub witnesses: Vec<pinfold_tlog::CosignerKey>,
    /// Distinct trusted witnesses that must have cosigned the checkpoint (default: all
    /// given witnesses; 0 only without witnesses).
    #[arg(long, value_name = "K", requires = "witnesses")]
    pub witness_threshold: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Parses `PUBKEY` or `NAME=PUBKEY`.
pub fn parse_roster_entry(s: &str) -> Result<crate::api::RosterEntry, String> {
    let (name, key) = match s.split_once('=') {
        Some((n, k)) if !n.starts_with(pinfold_tlog::keys::PUBLIC_KEY_PREFIX) => {
            (Some(n.to_string()), k)
        }
        _ => (None, s),
    };
    Ok(crate::api::RosterEntry {
        key: key
            .parse()
            .map_err(|e: pinfold_tlog::KeyError| e.to_string())?,
        name,
    })
}

/// Parses `VKEY=URL` (a witness's C2SP verifier key and its add-checkpoint prefix).
pub fn parse_witness_entry(s: &str) -> Result<crate::api::WitnessEntry, String> {
    // Split before the URL's scheme: a key name may itself hold `=`.
    let at = s
        .find("=http://")
        .or_else(|| s.find("=https://"))
        .ok_or_else(|| "expected VKEY=URL with an http(s) URL".to_string())?;
    let (vkey, url) = (&s[..at], &s[at + 1..]);
    Ok(crate::api::WitnessEntry {
        vkey: vkey
            .parse()
            .map_err(|e: pinfold_tlog::NoteError| format!("witness key {vkey:?}: {e}"))?,
        url: url.to_string(),
    })
}

/// Parses a log's C2SP verifier key (`origin+keyid+base64(0x01 ‖ key)`).
pub fn parse_log_vkey(s: &str) -> Result<pinfold_tlog::NoteVerifier, String> {
    pinfold_tlog::NoteVerifier::from_vkey(s).map_err(|e| format!("log key {s:?}: {e}"))
}

/// Arguments of `task-defs new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// Directory to create.
    pub dir: PathBuf,
    /// Wrap this wasm module (copied into the definition).
    #[arg(long, value_name = "MODULE", conflicts_with = "docker")]
    pub wasm: Option<PathBuf>,
    /// Run this digest-pinned image (`name@sha256:<hex>` or `sha256:<hex>`).
    #[arg(long, value_name = "IMAGE")]
    pub docker: Option<String>,
    /// For --docker: absolute path of the program inside the image.
    #[arg(long, default_value = "/task", requires = "docker")]
    pub entrypoint: String,
    /// Definition name (default: from the directory name).
    #[arg(long)]
    pub name: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What a command produced: text for stdout and the exit code.
#[derive(Debug)]
pub struct Outcome {
    /// Printed to stdout.
    pub stdout: String,
    /// Printed to stderr.
    pub stderr: String,
    /// Process exit code.
    pub code: u8,
}

fn ok(stdout: String) -> Outcome {
    Outcome {
        stdout,
        stderr: String::new(),
        code: 0,
    }
}

/// Turns a loading error into the CLI's output and exit code.
pub fn error_outcome(e: &Error, json: bool) -> Outcome {
    match e {
        Error::Invalid(d) => {
            if json {
                Outcome {
                    stdout: json!({"valid": false, "problems": d}).to_string() + "\n",
                    stderr: String::new(),
                    code: EXIT_INVALID,
                }
            } else {
                Outcome {
                    stdout: String::new(),
                    stderr: format!("error: {e}\n{d}\n"),
                    code: EXIT_INVALID,
                }
            }
        }
        other => Outcome {
            stdout: String::new(),
            stderr: format!("error: {other}\n"),
            code: EXIT_FAILURE,
        },
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Outcome {
    let json = json_requested(&cli.command);
    let out = run_command(cli);
    if json { json_failure(out) } else { out }
}

fn run_command(cli: Cli) -> Outcome {
    let cli = match registry_cli::dispatch(cli.command) {
        Ok(outcome) => return outcome,
        Err(command) => Cli { command: *command },
    };
    let json_mode = matches!(cli.command, Command::Check { json: true, .. });
    match execute(cli.command) {
        Ok(o) => o,
        Err(e) => error_outcome(&e, json_mode),
    }
}

/// Whether a command line asked for JSON (`--json` on whichever subcommand).
pub fn json_requested(cmd: &Command) -> bool {
    match cmd {
        Command::New(a) => a.json,
        Command::Hash { json, .. }
        | Command::Check { json, .. }
        | Command::Pack { json, .. }
        | Command::Unpack { json, .. }
        | Command::Keygen { json, .. }
        | Command::Publish { json, .. } => *json,
        Command::Queue(a) => a.json,
        Command::Serve(a) => a.json,
        Command::Witness(a) => a.json,
        Command::Status(a) => a.json,
        Command::Review(ReviewCommand::List { json, .. } | ReviewCommand::Show { json, .. }) => {
            *json
        }
        Command::Review(
            ReviewCommand::Approve(a) | ReviewCommand::Reject(a) | ReviewCommand::Revoke(a),
        ) => a.json,
        Command::Completions(_) | Command::Man(_) => false,
    }
}

/// In `--json` mode, a failure that printed only text becomes `{"error", "exit_code"}` on
/// stdout, where the caller reads JSON (the text's first line, without `error: `).
pub fn json_failure(mut o: Outcome) -> Outcome {
    if o.code != 0 && o.stdout.is_empty() {
        let first = o.stderr.lines().next().unwrap_or("failed");
        let msg = first.strip_prefix("error: ").unwrap_or(first);
        o.stdout = pinfold_base::cli::json_error(msg, i32::from(o.code)) + "\n";
        o.stderr.clear();
    }
    o
}

fn execute(cmd: Command) -> Result<Outcome, Error> {
    match cmd {
        Command::New(a) => {
            let template = match (&a.wasm, &a.docker) {
                (Some(m), _) => scaffold::Template::Wasm(m),
                (None, Some(image)) => scaffold::Template::Docker {
                    image,
                    entrypoint: &a.entrypoint,
                },
                (None, None) => {
                    return Ok(Outcome {
                        stdout: String::new(),
                        stderr: "error: give --wasm MODULE or --docker IMAGE\n".into(),
                        code: EXIT_USAGE,
                    });
                }
            };
            let def = scaffold::create(&a.dir, template, a.name.as_deref())?;
            if a.json {
                return Ok(ok(json!({
                    "dir": a.dir,
                    "name": def.manifest.name,
                    "version": def.manifest.version.to_string(),
                    "id": def.id.to_string(),
                })
                .to_string()
                    + "\n"));
            }
            Ok(ok(format!(
                "created {} ({} {}), identity {}\nedit {}/taskdef.toml, then run: task-defs check {}\n",
                a.dir.display(),
                def.manifest.name,
                def.manifest.version,
                def.id,
                a.dir.display(),
                a.dir.display()
            )))
        }
        Command::Completions(a) => {
            let script = pinfold_base::cli::completions(help::command(), a.shell);
            Ok(ok(String::from_utf8_lossy(&script).into_owned()))
        }
        Command::Man(a) => {
            let pages = pinfold_base::cli::man_pages(help::command())
                .map_err(|e| Error::io(Path::new("man page"), e))?;
            match &a.dir {
                None => Ok(ok(String::from_utf8_lossy(&pages[0].1).into_owned())),
                Some(dir) => {
                    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                    let mut listing = String::new();
                    for (name, page) in &pages {
                        let p = dir.join(name);
                        std::fs::write(&p, page).map_err(|e| Error::io(&p, e))?;
                        listing.push_str(&format!("{}\n", p.display()));
                    }
                    Ok(ok(listing))
                }
            }
        }
        Command::Hash {
            path,
            canonical,
            json,
        } => {
            let def = Definition::load(&path)?;
            if json {
                return Ok(ok(json!({"id": def.id.to_string()}).to_string() + "\n"));
            }
            if canonical {
                let mut doc =
                    String::from_utf8(def.canonical_document()).expect("canonical JSON is UTF-8");
                doc.push('\n');
                Ok(ok(doc))
            } else {
                Ok(ok(format!("{}\n", def.id)))
            }
        }
        Command::Check { path, json } => {
            let def = Definition::load(&path)?;
            Ok(ok(if json {
                summary_json(&def).to_string() + "\n"
            } else {
                summary_text(&def)
            }))
        }
        Command::Pack { dir, output, json } => {
            let def = Definition::load_dir(&dir)?;
            let bytes = bundle::pack(&def);
            std::fs::write(&output, &bytes).map_err(|e| Error::io(&output, e))?;
            if json {
                let v = json!({"id": def.id.to_string(), "bundle": output, "bytes": bytes.len()});
                return Ok(ok(v.to_string() + "\n"));
            }
            Ok(ok(format!("{}\n", def.id)))
        }
        Command::Unpack {
            file,
            output,
            expect,
            json,
        } => {
            let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
            let def = bundle::read(&bytes)?;
            if let Some(expected) = expect {
                def.expect_id(&expected)?;
            }
            def.write_to(&output)?;
            if json {
                let v = json!({"id": def.id.to_string(), "dir": output});
                return Ok(ok(v.to_string() + "\n"));
            }
            Ok(ok(format!("{}\n", def.id)))
        }
        Command::Keygen { .. }
        | Command::Serve(_)
        | Command::Queue(_)
        | Command::Witness(_)
        | Command::Publish { .. }
        | Command::Review(_)
        | Command::Status(_) => unreachable!("registry commands are dispatched in run"),
    }
}

/// The machine-readable summary `check --json` prints for a valid definition.
pub fn summary_json(def: &Definition) -> serde_json::Value {
    let m = &def.manifest;
    let mut v = json!({
        "valid": true,
        "id": def.id.to_string(),
        "name": m.name,
        "version": m.version.to_string(),
        "description": m.description,
        "license": m.license,
        "source": m.source,
        "manifest": task_defs::identity::manifest_value(m),
        "files": def.digests,
        "size": def.size(),
    });
    if let Some(fp) = &def.footprint {
        v["footprint"] = json!(fp);
    }
    v
}

/// The human-readable summary `check` prints.
pub fn summary_text(def: &Definition) -> String {
    let m = &def.manifest;
    let mut s = String::new();
    let _ = writeln!(s, "{} {}  {}", m.name, m.version, def.id);
    let _ = writeln!(s, "  {}", m.description.lines().next().unwrap_or(""));
    match &m.runtime.spec {
        RuntimeSpec::Wasm { module } => {
            let size = def.files.get(module).map(|b| b.len()).unwrap_or(0);
            let kind = match def.footprint.as_ref().map(|f| f.kind) {
                Some(task_defs::footprint::ModuleKind::Component) => "component",
                _ => "core module",
            };
            let _ = writeln!(s, "  runtime     wasm: {module} ({size} bytes, {kind})");
        }
        RuntimeSpec::Docker {
            image,
            user,
            entrypoint,
            workdir,
            isolation,
        } => {
            let _ = writeln!(s, "  runtime     docker: {image}");
            let _ = writeln!(
                s,
                "              user {}:{}, entrypoint {}, workdir {workdir}, isolation at least {}",
                user.0,
                user.1,
                entrypoint.join(" "),
                isolation.as_str()
            );
        }
    }
    let _ = writeln!(
        s,
        "  args        {}",
        if m.runtime.args.is_empty() {
            "(none)".into()
        } else {
            m.runtime.args.join(" ")
        }
    );
    if m.params.is_empty() {
        let _ = writeln!(s, "  params      (none)");
    }
    for (i, (name, p)) in m.params.iter().enumerate() {
        let mut desc = format!("{name}: {}", p.ty.as_str());
        if !p.allowed.is_empty() {
            desc += &format!(" {}", p.allowed.join("|"));
        }
        if p.min.is_some() || p.max.is_some() {
            desc += &format!(
                " [{}..{}]",
                p.min.map(|v| v.to_string()).unwrap_or_default(),
                p.max.map(|v| v.to_string()).unwrap_or_default()
            );
        }
        desc += &match &p.default {
            Some(d) => format!(" = {d}"),
            None => " (required)".into(),
        };
        let _ = writeln!(
            s,
            "  {}{desc}",
            if i == 0 {
                "params      "
            } else {
                "            "
            }
        );
    }
    let l = &m.limits;
    let mut limits = format!(
        "memory {}, timeout {}ms, output {}",
        format_size(l.memory),
        l.timeout_ms,
        format_size(l.output)
    );
    if let Some(f) = l.fuel {
        limits += &format!(", fuel {f}");
    }
    if let Some(p) = l.pids {
        limits += &format!(", pids {p}");
    }
    if let Some(c) = l.millicpus {
        limits += &format!(", cpus {}", c as f64 / 1000.0);
    }
    let _ = writeln!(s, "  limits      {limits}");
    let _ = writeln!(
        s,
        "  io          input {} (read-only), output {}",
        m.io.input, m.io.output
    );
    let c = &m.capabilities;
    let env: Vec<String> = c.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(
        s,
        "  network     {}; deterministic {}",
        if c.network {
            "on (if the provider allows)"
        } else {
            "off"
        },
        if c.deterministic { "yes" } else { "no" }
    );
    let _ = writeln!(
        s,
        "  env         {}",
        if env.is_empty() {
            "(none)".into()
        } else {
            env.join(" ")
        }
    );
    let _ = writeln!(
        s,
        "  secrets     {}",
        if c.secrets.is_empty() {
            "(none)".into()
        } else {
            c.secrets.join(", ")
        }
    );
    if let Some(fp) = &def.footprint {
        let caps: Vec<&str> = fp.capabilities.iter().map(|c| c.as_str()).collect();
        let _ = writeln!(
            s,
            "  footprint   {}",
            if caps.is_empty() {
                "(nothing)".into()
            } else {
                caps.join(", ")
            }
        );
        for imp in &fp.imports {
            let _ = writeln!(
                s,
                "              {}::{} -> {}",
                imp.module, imp.name, imp.capability
            );
        }
    }
    let _ = writeln!(
        s,
        "  files       {} file{}, {} total",
        def.files.len(),
        if def.files.len() == 1 { "" } else { "s" },
        manifest::format_size(def.size())
    );
    for d in &def.digests {
        let _ = writeln!(
            s,
            "              {}  {:>9}  {}",
            &d.blake3[..16],
            d.size,
            d.path
        );
    }
    s.push_str("valid\n");
    s
}
