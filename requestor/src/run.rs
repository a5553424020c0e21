//! `requestor run`: offer a job to providers, fetch and verify the result.
//!
//! Providers are tried in order of preference (holding the bundle, then free slots) from
//! one shared queue, so with `replicas = N` every replica runs on a distinct provider. A
//! refusal, a rejected run (e.g. a provider that could not fetch the bundle) or a provider
//! that dies or forgets the job moves that replica to the next provider in the queue; a
//! task that ran and failed, or a result that does not verify, ends the run. Replicas must
//! agree on the output digest; disagreement names every provider and its digest.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use indicatif::ProgressBar;
use pinfold_net::protocol::{ErrorReply, JobState, ResultReply};
use pinfold_net::{
    BlobRef, FetchLimits, InputEntry, JobId, JobResult, Multiaddr, Offer, OfferReply, PeerId,
    RejectReason, Request, ResourceNeeds, Response, RunStatus, SecretValue,
};
use serde::Serialize;
use task_defs::{Definition, DefinitionId};

use crate::budget::{self, BudgetedWriter, DiskBudget};
use crate::progress::{self, CountingWriter};
use crate::session::{Session, SessionConfig};
use crate::store::{self, NewJob, Store};
use crate::verify::{self, VerifyError};

/// What to run and how.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// A definition identity (`blake3:…`), a definition directory or a bundle file.
    pub definition: String,
    /// Files or directories, staged as `<io.input>/<base name>`.
    pub inputs: Vec<PathBuf>,
    /// Params, `NAME` → `VALUE`.
    pub params: BTreeMap<String, String>,
    /// Secret values by name; sent only inside the encrypted offer, never written out.
    pub secrets: BTreeMap<String, SecretValue>,
    /// Where to put the results (default `./pinfold-out/run-<time>-<random>`, a name made
    /// here: nothing a provider sends names a local path).
    pub output: Option<PathBuf>,
    /// Largest output accepted (files together, and stdout and stderr each): the
    /// definition's `limits.output` when it is at hand, else this (default
    /// [`budget::DEFAULT_MAX_OUTPUT`]); when both are known, the smaller.
    pub max_output: Option<u64>,
    /// Distinct providers to run on.
    pub replicas: usize,
    /// Only these providers (empty: any that advertises).
    pub providers: Vec<PeerId>,
    /// Peers to dial.
    pub bootstrap: Vec<Multiaddr>,
    /// Local-network discovery.
    pub mdns: bool,
    /// Longest wait for provider ads.
    pub wait_ads: Duration,
    /// Longest wait for one provider's result.
    pub timeout: Duration,
    /// Test only: serve this file as the bundle, unchecked, while offering `definition`.
    pub unchecked_bundle: Option<PathBuf>,
    /// Print progress lines on stderr.
    pub progress: bool,
    /// Return as soon as each provider has the bundle and inputs and has started the job,
    /// leaving the result to a later `requestor get` (needs `store`).
    pub detach: bool,
    /// The local job store: every accepted job is recorded there, with its result.
    pub store: Option<Arc<Store>>,
    /// The definition, fetched from a registry, when `definition` is an identity: used to
    /// check params, the output limit and the runtime before any offer; never sent.
    pub known: Option<Arc<Definition>>,
    /// Notified on Ctrl-C: the accepted jobs are cancelled on their providers.
    pub interrupt: Option<Arc<tokio::sync::Notify>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            definition: String::new(),
            inputs: Vec::new(),
            params: BTreeMap::new(),
            secrets: BTreeMap::new(),
            output: None,
            max_output: None,
            replicas: 1,
            providers: Vec::new(),
            bootstrap: Vec::new(),
            mdns: false,
            wait_ads: Duration::from_secs(5),
            timeout: Duration::from_secs(600),
            unchecked_bundle: None,
            progress: false,
            detach: false,
            store: None,
            known: None,
            interrupt: None,
        }
    }
}

/// One provider's verified run.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaReport {
    /// The provider.
    pub provider: String,
    /// Its job id.
    pub job_id: String,
    /// Where the outputs, stdio and receipt are.
    pub dir: PathBuf,
    /// How the run ended.
    pub status: RunStatus,
    /// The guest's exit code.
    pub exit_code: Option<i32>,
    /// The verified output digest.
    pub outputs: String,
    /// Output files.
    pub files: usize,
    /// Wall-clock microseconds on the provider.
    pub wall_us: u64,
    /// How this requestor was connected to the provider when the outputs had arrived:
    /// `direct` (perhaps after a hole punch) or `relayed`.
    pub route: Option<String>,
}

/// A provider that refused or dropped the job, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The provider.
    pub provider: String,
    /// Its typed reason (or what went wrong).
    pub reason: String,
}

/// A successful, verified run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The definition identity.
    pub definition: String,
    /// Every replica, verified.
    pub replicas: Vec<ReplicaReport>,
    /// Providers tried before the ones that ran it.
    pub refusals: Vec<Refusal>,
    /// Whether the replicas agree (always true on success).
    pub agreed: bool,
    /// Jobs left running on their providers (`--detach`): fetch them with `requestor get`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub detached: Vec<DetachedJob>,
}

/// A job left running with `--detach`.
#[derive(Debug, Clone, Serialize)]
pub struct DetachedJob {
    /// The provider.
    pub provider: String,
    /// Its job id (the handle for `requestor status|get|cancel|logs`).
    pub job_id: String,
    /// Where the provider said the job was when this process left.
    pub state: JobState,
}

/// What happened to one accepted job when the run was interrupted.
#[derive(Debug, Clone, Serialize)]
pub struct CancelReport {
    /// The provider.
    pub provider: String,
    /// Its job id.
    pub job_id: String,
    /// `cancelled`, `already finished` or why the cancel did not get through.
    pub outcome: String,
}

/// Why a run did not end in verified success.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The command line or local inputs are wrong.
    #[error("{0}")]
    Usage(String),
    /// No provider could be found or reached.
    #[error("no provider: {0}")]
    NoProvider(String),
    /// Every provider tried refused.
    #[error("refused by every provider tried: {}", list(.0))]
    Refused(Vec<Refusal>),
    /// The task ran and did not succeed.
    #[error("task {} on {provider}{}", .status.as_str(), .reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    TaskFailed {
        /// Where it ran.
        provider: String,
        /// How it ended.
        status: RunStatus,
        /// The provider's detail.
        reason: Option<String>,
        /// The downloaded (and verified) outputs and stdio.
        dir: Option<PathBuf>,
    },
    /// A result did not verify.
    #[error("verification failed for {provider}: {error}")]
    Verification {
        /// Which provider.
        provider: String,
        /// What failed.
        error: VerifyError,
    },
    /// Replicas disagree.
    #[error("replicas disagree: {}", .0.iter().map(|(p, d)| format!("{p} says {d}")).collect::<Vec<_>>().join("; "))]
    Disagreement(Vec<(String, String)>),
    /// The outputs do not fit the local disk (checked before and while writing; nothing
    /// partial is kept).
    #[error("{0}")]
    Disk(String),
    /// Ctrl-C: the accepted jobs were cancelled on their providers (as far as they
    /// could be reached).
    #[error("interrupted: {}", cancels(.0))]
    Interrupted(Vec<CancelReport>),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

fn cancels(c: &[CancelReport]) -> String {
    if c.is_empty() {
        return "no job had been accepted yet".to_string();
    }
    c.iter()
        .map(|c| format!("job {} on {}: {}", c.job_id, c.provider, c.outcome))
        .collect::<Vec<_>>()
        .join("; ")
}

fn list(r: &[Refusal]) -> String {
    r.iter()
        .map(|r| format!("{}: {}", r.provider, r.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

impl RunError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Usage(_) => crate::EXIT_USAGE,
            RunError::NoProvider(_) => crate::EXIT_NO_PROVIDER,
            RunError::Refused(_) => crate::EXIT_REFUSED,
            RunError::TaskFailed { .. } => crate::EXIT_TASK_FAILED,
            RunError::Verification { .. } | RunError::Disagreement(_) => crate::EXIT_VERIFY,
            RunError::Interrupted(_) => crate::EXIT_INTERRUPTED,
            RunError::Disk(_) | RunError::Other(_) => crate::EXIT_ERROR,
        }
    }
}

/// What a run offers, prepared once.
struct Prepared {
    definition: Option<Arc<Definition>>,
    offer: Offer,
}

fn usage(e: impl std::fmt::Display) -> RunError {
    RunError::Usage(e.to_string())
}

/// Registers inputs with the session's blob store and lists them as the offer does.
fn collect_inputs(session: &Session, inputs: &[PathBuf]) -> Result<Vec<InputEntry>, RunError> {
    fn add(
        session: &Session,
        path: &Path,
        name: String,
        out: &mut Vec<InputEntry>,
    ) -> Result<(), RunError> {
        let meta = std::fs::symlink_metadata(path)
            .map_err(|e| usage(format!("--input {}: {e}", path.display())))?;
        let t = meta.file_type();
        if t.is_dir() {
            let rd = std::fs::read_dir(path)
                .map_err(|e| usage(format!("--input {}: {e}", path.display())))?;
            for e in rd {
                let e = e.map_err(|e| usage(format!("--input {}: {e}", path.display())))?;
                let child = e
                    .file_name()
                    .into_string()
                    .map_err(|_| usage(format!("{}: name is not UTF-8", e.path().display())))?;
                add(session, &e.path(), format!("{name}/{child}"), out)?;
            }
            Ok(())
        } else if t.is_file() {
            let (id, size) = session
                .blobs
                .paths
                .register(path)
                .map_err(|e| usage(format!("--input {}: {e}", path.display())))?;
            out.push(InputEntry {
                name,
                size,
                blake3: id,
            });
            Ok(())
        } else {
            Err(usage(format!(
                "--input {}: not a regular file or directory (links are not followed)",
                path.display()
            )))
        }
    }
    let mut out = Vec::new();
    for p in inputs {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty() && *n != "." && *n != "..")
            .ok_or_else(|| usage(format!("--input {}: no usable base name", p.display())))?;
        add(session, p, name.to_string(), &mut out)?;
    }
    out.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(out)
}

fn prepare(session: &Session, opts: &RunOptions) -> Result<Prepared, RunError> {
    let target = opts.definition.as_str();
    let path = Path::new(target);
    let (definition, bundle_bytes, id): (Option<Arc<Definition>>, Option<Vec<u8>>, String) =
        if let Ok(id) = DefinitionId::from_str(target) {
            // Checks only: the provider gets the bundle from its own registry view.
            let known = opts.known.clone().filter(|d| d.id == id);
            (known, None, id.to_string())
        } else if path.is_dir() {
            let def = Definition::load_dir(path).map_err(|e| usage(format!("{target}: {e}")))?;
            let bytes = task_defs::bundle::pack(&def);
            let id = def.id.to_string();
            (Some(Arc::new(def)), Some(bytes), id)
        } else if path.is_file() {
            let def =
                task_defs::bundle::read_file(path).map_err(|e| usage(format!("{target}: {e}")))?;
            let bytes = std::fs::read(path).map_err(|e| usage(format!("{target}: {e}")))?;
            let id = def.id.to_string();
            (Some(Arc::new(def)), Some(bytes), id)
        } else {
            return Err(usage(format!(
                "{target:?} is neither a definition identity (blake3:…), a directory nor a bundle"
            )));
        };
    let bundle_bytes = match &opts.unchecked_bundle {
        Some(p) => Some(std::fs::read(p).map_err(|e| usage(format!("{}: {e}", p.display())))?),
        None => bundle_bytes,
    };
    let bundle = bundle_bytes.map(|b| {
        let size = b.len() as u64;
        let id = session.blobs.memory.insert(b);
        BlobRef { id, size }
    });
    // With the definition in hand, wrong params or a wrong or missing secret are a usage
    // error here rather than a refusal from every provider; given only an identity (and no
    // registry to fetch it from), providers check them.
    if let Some(def) = &definition {
        check_params(def, &opts.params)?;
        let declared = &def.manifest.capabilities.secrets;
        if let Some(name) = opts.secrets.keys().find(|k| !declared.contains(k)) {
            return Err(usage(format!(
                "--secret {name}: the definition declares no such secret"
            )));
        }
        if let Some(name) = declared.iter().find(|d| !opts.secrets.contains_key(*d)) {
            return Err(usage(format!(
                "the definition needs secret {name}: pass --secret {name}=@FILE"
            )));
        }
    }
    let inputs = collect_inputs(session, &opts.inputs)?;
    let input_bytes = inputs.iter().map(|i| i.size).sum();
    let offer = Offer {
        definition: id,
        bundle,
        params: opts.params.clone(),
        inputs,
        needs: ResourceNeeds {
            input_bytes,
            ..ResourceNeeds::default()
        },
        secrets: opts.secrets.keys().cloned().collect(),
        secret_values: opts.secrets.clone(),
        registry_size: None,
    };
    offer.validate().map_err(usage)?;
    Ok(Prepared { definition, offer })
}

/// The params against the definition's table: a usage error showing the table.
pub fn check_params(def: &Definition, params: &BTreeMap<String, String>) -> Result<(), RunError> {
    def.manifest
        .resolve_params(params)
        .map(|_| ())
        .map_err(|e| {
            usage(format!(
                "params do not fit the definition: {e}\n{}",
                crate::describe::param_table(def)
            ))
        })
}

/// Why one attempt on one provider ended.
enum AttemptError {
    /// Try the next provider.
    Retry(Refusal),
    /// End the run.
    Fatal(RunError),
}

pub(crate) struct Ctx {
    session: Arc<Session>,
    prep: Prepared,
    opts: RunOptions,
    out_base: PathBuf,
    /// Most bytes of output accepted (see [`RunOptions::max_output`]).
    output_cap: u64,
    queue: Mutex<VecDeque<PeerId>>,
    refusals: Mutex<Vec<Refusal>>,
    /// Accepted jobs whose result has not arrived: what Ctrl-C cancels.
    active: Arc<Mutex<Active>>,
}

impl Ctx {
    /// A context for collecting one stored job's result in a later process: what the
    /// job offered (so its receipt can be checked against it) and where to put it.
    pub(crate) fn for_job(
        session: Arc<Session>,
        job: &store::JobRow,
        out_base: PathBuf,
        opts: RunOptions,
    ) -> Ctx {
        let offer = Offer {
            definition: job.definition.clone(),
            bundle: None,
            params: job.params.clone(),
            inputs: job.inputs.clone(),
            needs: ResourceNeeds::default(),
            secrets: Vec::new(),
            secret_values: BTreeMap::new(),
            registry_size: None,
        };
        Ctx {
            session,
            prep: Prepared {
                definition: None,
                offer,
            },
            opts: RunOptions {
                replicas: 1,
                ..opts
            },
            out_base,
            output_cap: job.output_cap,
            queue: Mutex::new(VecDeque::new()),
            refusals: Mutex::new(Vec::new()),
            active: Arc::new(Mutex::new(Active::default())),
        }
    }

    /// Writes to the job store, if there is one; a store that fails costs a warning,
    /// never the run.
    fn record(&self, what: impl FnOnce(&Store) -> Result<(), store::StoreError>) {
        if let Some(s) = &self.opts.store
            && let Err(e) = what(s)
        {
            self.session
                .bars
                .suspend(|| eprintln!("requestor: warning: {e}"));
        }
    }

    fn active(&self) -> std::sync::MutexGuard<'_, Active> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn say(&self, msg: &str) {
        if self.opts.progress {
            // Suspended so the line is not drawn over by (or through) live bars.
            self.session.bars.suspend(|| eprintln!("requestor: {msg}"));
        }
    }
}

fn short(p: &PeerId) -> String {
    let s = p.to_base58();
    s[s.len().saturating_sub(8)..].to_string()
}

/// Runs a job as `opts` says; `Ok` only for verified success of every replica.
pub async fn run(opts: RunOptions) -> Result<RunReport, RunError> {
    if opts.replicas == 0 {
        return Err(usage("--replicas must be at least 1"));
    }
    if let Some(o) = &opts.output
        && std::fs::read_dir(o).is_ok_and(|mut d| d.next().is_some())
    {
        return Err(usage(format!(
            "--output {}: directory is not empty",
            o.display()
        )));
    }
    if opts.bootstrap.is_empty() && !opts.mdns {
        return Err(usage(
            "no way to find providers: pass --bootstrap MULTIADDR (or --mdns)",
        ));
    }
    let session = Session::start(SessionConfig {
        bootstrap: opts.bootstrap.clone(),
        mdns: opts.mdns,
        keypair: None,
    })
    .await
    .map_err(|e| RunError::Other(e.to_string()))?;
    for (addr, e) in &session.failed {
        if opts.progress {
            eprintln!("requestor: cannot dial {addr}: {e}");
        }
    }
    run_in(Arc::new(session), opts).await
}

/// Runs a job over an existing session (`opts.bootstrap` and `opts.mdns` are ignored):
/// for callers that submit many jobs, which then share connections and the ad view.
///
/// With `opts.interrupt`, a notification stops the run: every job a provider accepted
/// and has not delivered is cancelled there (each cancel bounded by the request timeout),
/// and the run ends in [`RunError::Interrupted`] saying what happened to each.
pub async fn run_in(session: Arc<Session>, opts: RunOptions) -> Result<RunReport, RunError> {
    let active = Arc::new(Mutex::new(Active::default()));
    let Some(interrupt) = opts.interrupt.clone() else {
        return run_jobs(session, opts, active).await;
    };
    let client = session.client.clone();
    let store = opts.store.clone();
    tokio::select! {
        r = run_jobs(session, opts, active.clone()) => r,
        _ = interrupt.notified() => {
            let lock = || active.lock().unwrap_or_else(|e| e.into_inner());
            let jobs: Vec<(PeerId, JobId)> = {
                let mut a = lock();
                a.interrupted = true;
                std::mem::take(&mut a.jobs)
            };
            let cancels = jobs.into_iter().map(|(peer, job)| {
                let client = client.clone();
                let store = store.clone();
                async move {
                    let answer = client
                        .request(peer, Request::Cancel { job_id: job.clone() })
                        .await;
                    if let (Some(s), Ok(Response::Cancelled(_))) = (&store, &answer)
                        && let Err(e) = s.set_state(
                            &job.0,
                            &peer.to_base58(),
                            store::state::CANCELLED,
                            Some("cancelled on ctrl-c"),
                        )
                    {
                        eprintln!("requestor: warning: {e}");
                    }
                    let outcome = match answer {
                        Ok(Response::Cancelled(true)) => "cancelled".to_string(),
                        Ok(Response::Cancelled(false)) => "already finished".to_string(),
                        Ok(Response::Error(e)) => format!("not cancelled: {e}"),
                        Ok(other) => format!("not cancelled: unexpected answer {other:?}"),
                        Err(e) => format!("not cancelled: {e}"),
                    };
                    CancelReport { provider: peer.to_base58(), job_id: job.0, outcome }
                }
            });
            let reports = futures::future::join_all(cancels).await;
            // Replicas whose offer was still on the wire cancel their own accept; the
            // process must not exit before they have.
            let deadline = tokio::time::Instant::now() + INTERRUPT_GRACE;
            while lock().offering > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(RunError::Interrupted(reports))
        }
    }
}

async fn run_jobs(
    session: Arc<Session>,
    opts: RunOptions,
    active: Arc<Mutex<Active>>,
) -> Result<RunReport, RunError> {
    if opts.detach && opts.store.is_none() {
        return Err(usage(
            "--detach needs the job store: no data directory (pass --data-dir)",
        ));
    }
    if opts.replicas == 0 {
        return Err(usage("--replicas must be at least 1"));
    }
    let prep = prepare(&session, &opts)?;
    if opts.progress {
        // Bars for what providers pull from us; the inputs' ids are only known here.
        if let Some(b) = &prep.offer.bundle {
            session.served.watch(b.id, "bundle");
        }
        for i in &prep.offer.inputs {
            session.served.watch(i.blake3, &i.name);
        }
    }
    // Named providers already connected (dialled with --bootstrap) need no ad: the offer
    // goes straight to them, which is most of a short run's latency saved. Named ones not
    // connected may be reachable only at the (relayed) addresses their ads carry.
    let ads = if opts.providers.is_empty() {
        session.wait_for_ads(opts.replicas, opts.wait_ads).await
    } else if opts.providers.iter().all(|p| session.dialled.contains(p)) {
        session.client.providers().await.unwrap_or_default()
    } else {
        session
            .wait_for_ads_from(&opts.providers, opts.wait_ads)
            .await
    };
    let runtime = prep
        .definition
        .as_ref()
        .map(|d| match d.manifest.runtime.kind() {
            task_defs::RuntimeKind::Wasm => "wasm",
            task_defs::RuntimeKind::Docker => "docker",
        });
    let mut candidates: Vec<(PeerId, bool, u32)> = Vec::new();
    for e in &ads {
        if runtime.is_some_and(|r| !e.ad.executors.iter().any(|x| x.runtime == r)) {
            continue;
        }
        let holds = e.ad.bundles.contains(&prep.offer.definition);
        candidates.push((e.peer, holds, e.ad.free_slots));
    }
    // Dialled peers that have not advertised (yet) are still worth an offer.
    for p in &session.dialled {
        if !ads.iter().any(|e| e.peer == *p) {
            candidates.push((*p, false, 0));
        }
    }
    // Holding the bundle first (no transfer), then the most free slots; stable, so ties
    // keep the view's most-recently-heard order.
    candidates.sort_by_key(|c| std::cmp::Reverse((c.1, c.2)));
    let mut order: Vec<PeerId> = candidates.into_iter().map(|c| c.0).collect();
    if !opts.providers.is_empty() {
        order = opts.providers.clone();
    }
    if order.is_empty() {
        let why = if session.dialled.is_empty() && !session.failed.is_empty() {
            format!(
                "could not reach any bootstrap peer ({})",
                session.failures()
            )
        } else {
            "no provider advertised a suitable executor".to_string()
        };
        return Err(RunError::NoProvider(why));
    }
    // Results land in `--output`, or in a fresh directory named here; with replicas, in
    // a subdirectory per provider named by its (authenticated) peer id.
    let out_base = match &opts.output {
        Some(o) => o.clone(),
        None => PathBuf::from("pinfold-out").join(local_run_name()),
    };
    let output_cap = match (
        prep.definition.as_ref().map(|d| d.manifest.limits.output),
        opts.max_output,
    ) {
        (Some(l), Some(m)) => l.min(m),
        (Some(l), None) => l,
        (None, m) => m.unwrap_or(budget::DEFAULT_MAX_OUTPUT),
    };
    // On failure, directories this run created and left empty go again.
    let missing = missing_dirs(&out_base);
    let definition = prep.offer.definition.clone();
    let ctx = Arc::new(Ctx {
        session,
        prep,
        out_base,
        output_cap,
        queue: Mutex::new(order.into_iter().collect()),
        refusals: Mutex::new(Vec::new()),
        active,
        opts,
    });
    ctx.say(&format!(
        "offering {definition} to {} provider(s) for {} replica(s)",
        ctx.queue.lock().map(|q| q.len()).unwrap_or(0),
        ctx.opts.replicas
    ));
    let tasks: Vec<_> = (0..ctx.opts.replicas)
        .map(|i| {
            let ctx = ctx.clone();
            tokio::spawn(async move { replica(&ctx, i).await })
        })
        .collect();
    let mut reports = Vec::new();
    let mut detached = Vec::new();
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok(Ok(Done::Verified(r))) => reports.push(r),
            Ok(Ok(Done::Detached(d))) => detached.push(d),
            Ok(Err(e)) => {
                if first_err.is_none() {
                    first_err = Some(e);
                }
            }
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(RunError::Other(format!("replica task: {e}")));
                }
            }
        }
    }
    let refusals = ctx.refusals.lock().map(|r| r.clone()).unwrap_or_default();
    // A disagreement between the replicas that did finish outranks a missing replica.
    let digests: Vec<(String, String)> = reports
        .iter()
        .map(|r| (r.provider.clone(), r.outputs.clone()))
        .collect();
    if digests.iter().any(|(_, d)| *d != digests[0].1) {
        return Err(RunError::Disagreement(digests));
    }
    if let Some(e) = first_err {
        if reports.is_empty() && detached.is_empty() {
            // Deepest first; `remove_dir` refuses any that holds something.
            for d in &missing {
                match std::fs::remove_dir(d) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => break,
                    _ => {}
                }
            }
        }
        return Err(e);
    }
    Ok(RunReport {
        definition,
        replicas: reports,
        refusals,
        agreed: true,
        detached,
    })
}

/// What Ctrl-C has to cancel: jobs accepted and not yet delivered, and offers still on
/// the wire (an accept arriving after the interrupt is cancelled at once by its replica,
/// which the interrupt waits for).
#[derive(Debug, Default)]
pub(crate) struct Active {
    jobs: Vec<(PeerId, JobId)>,
    offering: usize,
    interrupted: bool,
}

/// How long an interrupt waits for offers on the wire to be answered (and cancelled).
const INTERRUPT_GRACE: Duration = Duration::from_secs(10);

/// How one replica ended well.
enum Done {
    /// Its outputs are downloaded and verified.
    Verified(ReplicaReport),
    /// It runs on; a later `requestor get` collects it.
    Detached(DetachedJob),
}

async fn replica(ctx: &Ctx, index: usize) -> Result<Done, RunError> {
    loop {
        let next = ctx.queue.lock().ok().and_then(|mut q| q.pop_front());
        let Some(peer) = next else {
            let refusals = ctx.refusals.lock().map(|r| r.clone()).unwrap_or_default();
            return Err(if refusals.is_empty() {
                RunError::NoProvider(format!("not enough providers for replica {}", index + 1))
            } else {
                RunError::Refused(refusals)
            });
        };
        match attempt(ctx, peer).await {
            Ok(r) => return Ok(r),
            Err(AttemptError::Retry(r)) => {
                ctx.say(&format!(
                    "{} did not run it: {}; trying the next provider",
                    r.provider, r.reason
                ));
                if let Ok(mut v) = ctx.refusals.lock() {
                    v.push(r);
                }
            }
            Err(AttemptError::Fatal(e)) => return Err(e),
        }
    }
}

/// Longest wait for a hole punch to replace a relayed connection before offering.
const HOLE_PUNCH_WAIT: Duration = Duration::from_secs(3);

async fn attempt(ctx: &Ctx, peer: PeerId) -> Result<Done, AttemptError> {
    let client = &ctx.session.client;
    let retry = |reason: String| {
        AttemptError::Retry(Refusal {
            provider: peer.to_base58(),
            reason,
        })
    };
    // A busy provider (no free slot, or too many of our requests in flight) is asked again
    // for a short while before the replica moves on.
    // A provider behind a NAT is reached through a relay first: let the hole punch try to
    // make the connection direct before any bulk data moves (a second or so; less when the
    // punch fails fast, nothing when the connection is direct already).
    if let Some(route) = ctx.session.settle_route(peer, HOLE_PUNCH_WAIT).await {
        tracing::debug!(provider = %peer, %route, "connection before the offer");
    }
    let busy_until = tokio::time::Instant::now() + BUSY_OFFER_RETRY;
    let mut wait = Duration::from_millis(5);
    {
        let mut a = ctx.active();
        if a.interrupted {
            return Err(AttemptError::Fatal(RunError::Interrupted(Vec::new())));
        }
        a.offering += 1;
    }
    let offered = async {
        loop {
            match client.offer(peer, ctx.prep.offer.clone()).await {
                Ok(OfferReply::Accept(a)) => break Ok(a),
                Ok(OfferReply::Reject {
                    reason: RejectReason::Busy,
                }) if tokio::time::Instant::now() < busy_until && !ctx.active().interrupted => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(500));
                }
                Ok(OfferReply::Reject { reason }) => break Err(retry(reason.to_string())),
                Err(e) => break Err(retry(format!("offer failed: {e}"))),
            }
        }
    }
    .await;
    let late = {
        let mut a = ctx.active();
        if let (false, Ok(accept)) = (a.interrupted, &offered) {
            a.jobs.push((peer, accept.job_id.clone()));
        }
        a.interrupted
    };
    if late && let Ok(accept) = &offered {
        // Accepted after Ctrl-C: nobody will collect it, so it goes at once.
        let _ = client
            .request(
                peer,
                Request::Cancel {
                    job_id: accept.job_id.clone(),
                },
            )
            .await;
    }
    ctx.active().offering -= 1;
    if late {
        return Err(AttemptError::Fatal(RunError::Interrupted(Vec::new())));
    }
    let accept = offered?;
    ctx.say(&format!(
        "{} accepted as job {} (fetching {} blob(s) from us)",
        short(&peer),
        accept.job_id,
        accept.fetch.len()
    ));
    let job = accept.job_id;
    let provider = peer.to_base58();
    ctx.record(|s| {
        let key = ctx
            .session
            .client
            .keypair()
            .to_protobuf_encoding()
            .map_err(|e| store::StoreError::Db {
                path: PathBuf::new(),
                message: format!("encoding the session key: {e}"),
            })?;
        s.insert(&NewJob {
            id: &job.0,
            provider: &provider,
            addrs: &ctx.session.addrs_of(&peer, &ctx.opts.bootstrap),
            key: &key,
            definition: &ctx.prep.offer.definition,
            params: &ctx.prep.offer.params,
            inputs: &ctx.prep.offer.inputs,
            output_cap: ctx.output_cap,
        })
    });
    let done = if ctx.opts.detach {
        started(ctx, peer, &job).await.map(|state| {
            ctx.record(|s| s.set_state(&job.0, &provider, store::state::DETACHED, None));
            Done::Detached(DetachedJob {
                provider: provider.clone(),
                job_id: job.0.clone(),
                state,
            })
        })
    } else {
        collect(ctx, peer, &job).await.map(Done::Verified)
    };
    ctx.active()
        .jobs
        .retain(|(p, j)| !(*p == peer && *j == job));
    if let Err(e) = &done {
        let why = match e {
            AttemptError::Retry(r) => r.reason.clone(),
            AttemptError::Fatal(e) => e.to_string(),
        };
        // A job whose result arrived keeps its state (and receipt); others failed here.
        ctx.record(|s| match s.get(&job.0, &provider)? {
            Some(r) if r.state == store::state::SUBMITTED => {
                s.set_state(&job.0, &provider, store::state::FAILED, Some(&why))
            }
            _ => Ok(()),
        });
    }
    done
}

/// [`collect`] for a later process: one stored job, its failures as run errors.
pub(crate) async fn collect_stored(
    ctx: &Ctx,
    peer: PeerId,
    job: &JobId,
) -> Result<ReplicaReport, RunError> {
    collect(ctx, peer, job).await.map_err(|e| match e {
        AttemptError::Retry(r) => RunError::Other(format!("{}: {}", r.provider, r.reason)),
        AttemptError::Fatal(e) => e,
    })
}

/// Waits until the provider has the bundle and inputs (its job left `fetching`): until
/// then this process must keep serving them. Returns the job's state then.
async fn started(ctx: &Ctx, peer: PeerId, job: &JobId) -> Result<JobState, AttemptError> {
    let retry = |reason: String| {
        AttemptError::Retry(Refusal {
            provider: peer.to_base58(),
            reason,
        })
    };
    let deadline = tokio::time::Instant::now() + ctx.opts.timeout;
    let mut wait = Duration::from_millis(2);
    loop {
        match ctx
            .session
            .client
            .request(
                peer,
                Request::Status {
                    job_id: job.clone(),
                },
            )
            .await
        {
            Ok(Response::Status(JobState::Fetching)) | Ok(Response::Error(ErrorReply::Busy)) => {}
            Ok(Response::Status(JobState::Cancelled)) => {
                return Err(retry("the provider dropped the job".into()));
            }
            Ok(Response::Status(s)) => return Ok(s),
            Ok(Response::Error(ErrorReply::UnknownJob)) => {
                return Err(retry("the provider no longer knows the job".into()));
            }
            Ok(other) => return Err(retry(format!("unexpected answer {other:?}"))),
            Err(e) => return Err(retry(format!("provider unreachable: {e}"))),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(retry(format!(
                "the job did not start within {}s",
                ctx.opts.timeout.as_secs()
            )));
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(200));
    }
}

/// Waits for an accepted job's result, checks it against what was offered, downloads
/// and verifies the outputs: the second half of a run, and all of a later `get`.
async fn collect(ctx: &Ctx, peer: PeerId, job: &JobId) -> Result<ReplicaReport, AttemptError> {
    let retry = |reason: String| {
        AttemptError::Retry(Refusal {
            provider: peer.to_base58(),
            reason,
        })
    };
    let result = poll(ctx, peer, job).await?;
    let provider = peer.to_base58();
    let fatal_verify = |error: VerifyError| {
        AttemptError::Fatal(RunError::Verification {
            provider: provider.clone(),
            error,
        })
    };
    check_result(ctx, peer, &result).map_err(fatal_verify)?;
    if result.job_id != *job {
        return Err(fatal_verify(VerifyError::Mismatch(format!(
            "the result is for job {}, the provider accepted job {}",
            result.job_id, job
        ))));
    }
    ctx.record(|s| {
        s.finished(
            &job.0,
            &provider,
            result.outcome.status.as_str(),
            &result.outcome.outputs,
            &result.receipt.to_json(),
        )
    });
    // Before any byte is fetched: what the provider declares must fit the definition's
    // output limit (the transfer then refuses any size but the declared one).
    let o = &result.outcome;
    let total = budget::check_declared(&result.files, o.stdout.size, o.stderr.size, ctx.output_cap)
        .map_err(|e| fatal_verify(VerifyError::Mismatch(e)))?;
    if result.outcome.status == RunStatus::Rejected {
        return Err(retry(format!(
            "run rejected: {}",
            result.outcome.reason.clone().unwrap_or_default()
        )));
    }
    let dir = match download(ctx, peer, &result, total).await {
        Ok(d) => d,
        Err(DownloadError::Verify(e)) => return Err(fatal_verify(e)),
        Err(DownloadError::Disk(e)) => return Err(AttemptError::Fatal(RunError::Disk(e))),
        Err(DownloadError::Transfer(e)) => return Err(retry(format!("downloading: {e}"))),
    };
    ctx.say(&format!(
        "{}: verified {} file(s), output digest {}, receipt signed by the provider",
        short(&peer),
        result.files.len(),
        result.outcome.outputs
    ));
    ctx.record(|s| s.delivered(&job.0, &provider, &dir));
    if result.outcome.status != RunStatus::Succeeded {
        return Err(AttemptError::Fatal(RunError::TaskFailed {
            provider,
            status: result.outcome.status,
            reason: result.outcome.reason.clone(),
            dir: Some(dir),
        }));
    }
    Ok(ReplicaReport {
        provider,
        job_id: result.job_id.0.clone(),
        dir,
        status: result.outcome.status,
        exit_code: result.outcome.exit_code,
        outputs: result.outcome.outputs.clone(),
        files: result.files.len(),
        wall_us: result.outcome.usage.wall_us,
        route: route(ctx, peer).await,
    })
}

/// `direct` if any open connection to `peer` is direct, else `relayed` if one is, else
/// `None` (the connection already closed).
async fn route(ctx: &Ctx, peer: PeerId) -> Option<String> {
    let routes = ctx.session.client.routes(peer).await.ok()?;
    if routes.iter().any(|r| !r.is_relayed()) {
        Some("direct".into())
    } else if routes.is_empty() {
        None
    } else {
        Some("relayed".into())
    }
}

async fn poll(ctx: &Ctx, peer: PeerId, job: &JobId) -> Result<JobResult, AttemptError> {
    let client = &ctx.session.client;
    let retry = |reason: String| {
        AttemptError::Retry(Refusal {
            provider: peer.to_base58(),
            reason,
        })
    };
    let deadline = tokio::time::Instant::now() + ctx.opts.timeout;
    let mut wait = Duration::from_millis(1);
    let mut polls = 0u32;
    let mut failures = 0;
    loop {
        match client
            .request(
                peer,
                Request::Result {
                    job_id: job.clone(),
                },
            )
            .await
        {
            Ok(Response::Result(ResultReply::Done(r))) => return Ok(*r),
            Ok(Response::Result(ResultReply::Pending(JobState::Cancelled))) => {
                return Err(retry("the job was cancelled on the provider".into()));
            }
            Ok(Response::Result(ResultReply::Pending(_))) => failures = 0,
            // Too many of our requests in flight at this provider: not a failure.
            Ok(Response::Error(ErrorReply::Busy)) => {}
            Ok(Response::Error(ErrorReply::UnknownJob)) => {
                return Err(retry(
                    "the provider no longer knows the job (restarted?)".into(),
                ));
            }
            Ok(other) => {
                failures += 1;
                tracing::debug!("unexpected answer {other:?}");
            }
            Err(e) => {
                failures += 1;
                if failures >= 3 {
                    return Err(retry(format!("provider unreachable: {e}")));
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = client
                .request(
                    peer,
                    Request::Cancel {
                        job_id: job.clone(),
                    },
                )
                .await;
            return Err(retry(format!(
                "no result within {}s",
                ctx.opts.timeout.as_secs()
            )));
        }
        tokio::time::sleep(wait).await;
        // Short tasks dominate: poll every millisecond for the first 50 ms (each poll is
        // one small request on an open connection), then back off to 250 ms.
        polls += 1;
        if polls > 50 {
            wait = (wait * 2).min(Duration::from_millis(250));
        }
    }
}

/// Checks the receipt and that the result is about what we offered, to us.
fn check_result(ctx: &Ctx, peer: PeerId, r: &JobResult) -> Result<(), VerifyError> {
    let signer = verify::check_receipt(&r.receipt)?;
    if signer != peer {
        return Err(VerifyError::WrongSigner {
            signer: signer.to_base58(),
            provider: peer.to_base58(),
        });
    }
    let b = &r.receipt.body;
    let o = &ctx.prep.offer;
    let mismatch =
        |what: &str| VerifyError::Mismatch(format!("the receipt's {what} is not what was offered"));
    if b.definition != o.definition {
        return Err(mismatch("definition"));
    }
    if b.params != o.params {
        return Err(mismatch("params"));
    }
    if b.inputs != o.inputs {
        return Err(mismatch("input list"));
    }
    if b.requestor != ctx.session.client.peer_id().to_base58() {
        return Err(mismatch("requestor"));
    }
    if b.job_id != r.job_id || b.outputs != r.outcome.outputs {
        return Err(VerifyError::Mismatch(
            "the receipt does not match the result".into(),
        ));
    }
    Ok(())
}

enum DownloadError {
    Transfer(String),
    Verify(VerifyError),
    /// The local disk is too full: no other provider would change that.
    Disk(String),
}

/// `dir` and those of its ancestors that do not exist yet, deepest first: what a run may
/// create on its way to a result, and removes again (if still empty) when it fails.
fn missing_dirs(dir: &Path) -> Vec<PathBuf> {
    dir.ancestors()
        .filter(|d| !d.as_os_str().is_empty())
        .take_while(|d| std::fs::symlink_metadata(d).is_err())
        .map(Path::to_path_buf)
        .collect()
}

/// A name for this run's output directory, made here from the clock and this process so
/// that no peer chooses (or collides with) where results land.
pub(crate) fn local_run_name() -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let salt = blake3::hash(format!("{}/{}/{seq}", std::process::id(), now.as_nanos()).as_bytes());
    format!("run-{}-{}", now.as_millis(), &salt.to_hex()[..8])
}

async fn fetch_to(
    ctx: &Ctx,
    peer: PeerId,
    blob: pinfold_net::BlobId,
    size: u64,
    dest: &Path,
    name: &str,
    disk: &Arc<DiskBudget>,
) -> Result<(), DownloadError> {
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| DownloadError::Transfer(format!("{}: {e}", parent.display())))?;
    }
    // A provider serves a few transfers per peer at once and answers "busy" (before any
    // byte) beyond that; several jobs downloading from one provider wait their turn.
    let deadline = tokio::time::Instant::now() + BUSY_RETRY;
    let mut wait = Duration::from_millis(2);
    let mut broken = 0;
    // One bar per file across retries (each retry starts the file, and the bar, over).
    // An empty file gets none: nothing is written to it, so its bar would never finish.
    let bar = (ctx.opts.progress && size > 0).then(|| progress::bar(&ctx.session.bars, name, size));
    loop {
        let f = tokio::fs::File::create(dest)
            .await
            .map_err(|e| DownloadError::Transfer(format!("{}: {e}", dest.display())))?;
        let bar = bar.clone().unwrap_or_else(ProgressBar::hidden);
        bar.reset();
        let mut f = BudgetedWriter::new(CountingWriter::new(f, bar.clone()), disk.clone());
        let fetched = ctx
            .session
            .client
            .fetch_blob(peer, blob, FetchLimits::exact(size), &mut f)
            .await;
        if let Some(why) = disk.failure() {
            bar.abandon();
            return Err(DownloadError::Disk(why));
        }
        match fetched {
            Ok(_) => {
                tokio::io::AsyncWriteExt::flush(&mut f)
                    .await
                    .map_err(|e| DownloadError::Transfer(format!("{}: {e}", dest.display())))?;
                f.complete();
                bar.finish();
                return Ok(());
            }
            Err(e) if retryable(&e, &mut broken) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(200));
            }
            Err(e) => {
                bar.abandon();
                // A peer that sent other bytes or another size than it declared lied; that
                // is a verification failure, not a transfer to retry elsewhere.
                return Err(
                    if e.is_misbehaviour()
                        || matches!(
                            e,
                            pinfold_net::TransferError::SizeMismatch { .. }
                                | pinfold_net::TransferError::TooLarge { .. }
                        )
                    {
                        DownloadError::Verify(VerifyError::Mismatch(format!("serving {name}: {e}")))
                    } else {
                        DownloadError::Transfer(e.to_string())
                    },
                );
            }
        }
    }
}

/// How long an offer is repeated to a provider that answers busy.
const BUSY_OFFER_RETRY: Duration = Duration::from_secs(10);

/// How long a download keeps retrying a provider that is busy serving others.
const BUSY_RETRY: Duration = Duration::from_secs(30);

/// Whether a failed fetch is worth repeating: "busy" always (until the deadline); a
/// stream that broke or could not be opened a few times (under load the remote drops
/// streams it cannot take yet, which shows up as a reset before any byte arrived). The
/// sink is recreated for each attempt and only ever holds verified bytes, so repeating
/// is safe; a peer that sent bad bytes is never retried.
pub(crate) fn retryable(e: &pinfold_net::TransferError, broken: &mut u32) -> bool {
    use pinfold_net::TransferError as T;
    match e {
        T::Busy => true,
        T::Io(_) | T::Open(_) | T::Local => {
            *broken += 1;
            *broken <= 3
        }
        _ => false,
    }
}

/// Downloads outputs and stdio into a fresh directory and verifies everything on disk.
/// `total` is what the result declares (already held to the output limit); it must fit
/// the disk before anything is created, and keep fitting while it is written.
async fn download(
    ctx: &Ctx,
    peer: PeerId,
    r: &JobResult,
    total: u64,
) -> Result<PathBuf, DownloadError> {
    let final_dir = if ctx.opts.replicas == 1 {
        ctx.out_base.clone()
    } else {
        ctx.out_base.join(peer.to_base58())
    };
    let parent = final_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let disk = DiskBudget::admit(&parent, total).map_err(DownloadError::Disk)?;
    std::fs::create_dir_all(&parent)
        .map_err(|e| DownloadError::Transfer(format!("{}: {e}", parent.display())))?;
    let staging = tempfile::Builder::new()
        .prefix(".pinfold-partial-")
        .tempdir_in(&parent)
        .map_err(|e| DownloadError::Transfer(format!("{}: {e}", parent.display())))?;
    let s = staging.path();
    std::fs::create_dir(s.join("outputs")).map_err(|e| DownloadError::Transfer(e.to_string()))?;
    let o = &r.outcome;
    let mut wanted = vec![
        (
            o.stdout.id,
            o.stdout.size,
            s.join("stdout"),
            "stdout".to_string(),
        ),
        (
            o.stderr.id,
            o.stderr.size,
            s.join("stderr"),
            "stderr".to_string(),
        ),
    ];
    for f in &r.files {
        let dest = s.join("outputs").join(&f.path);
        wanted.push((f.blake3, f.size, dest, f.path.clone()));
    }
    // Two at a time: what a provider serves one peer at once by default.
    let mut fetches = futures::stream::iter(wanted)
        .map(|(id, size, dest, name)| {
            let disk = &disk;
            async move { fetch_to(ctx, peer, id, size, &dest, &name, disk).await }
        })
        .buffer_unordered(2);
    while let Some(r) = fetches.next().await {
        r?;
    }
    drop(fetches);

    // The transfer verified every byte against the identities asked for; now check that
    // those identities make up the digest the provider signed.
    let on_disk = verify::scan_outputs(&s.join("outputs")).map_err(DownloadError::Verify)?;
    if on_disk != r.files {
        return Err(DownloadError::Verify(VerifyError::Mismatch(
            "downloaded files differ from the result's file list".into(),
        )));
    }
    let digest = verify::digest_of_job_dir(s).map_err(DownloadError::Verify)?;
    if digest != o.outputs || digest != r.receipt.body.outputs {
        return Err(DownloadError::Verify(VerifyError::Mismatch(format!(
            "outputs hash to {digest}, the provider signed {}",
            r.receipt.body.outputs
        ))));
    }
    std::fs::write(s.join("receipt.json"), r.receipt.to_json())
        .map_err(|e| DownloadError::Transfer(format!("receipt.json: {e}")))?;
    if final_dir.exists() {
        // Checked empty before the run started.
        let _ = std::fs::remove_dir(&final_dir);
    }
    let kept = staging.keep();
    std::fs::rename(&kept, &final_dir).map_err(|e| {
        DownloadError::Transfer(format!(
            "moving the results to {}: {e}",
            final_dir.display()
        ))
    })?;
    Ok(final_dir)
}
