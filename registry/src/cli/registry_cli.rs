//! The registry commands of the CLI: keygen, serve, witness, publish, review, status.
//!
//! These talk to the network and the key files, so they report with `anyhow` chains
//! (`error: {e:#}`) and map the typed cause at the root of the chain to an exit code.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use serde_json::json;

use super::{
    Command, EXIT_FAILURE, EXIT_INVALID, EXIT_REFUSED, EXIT_UNVERIFIED, Outcome, QueueArgs,
    ReviewCommand, ServeArgs, StatusArgs, VerdictArgs, WitnessArgs, ok,
};
use crate::client::{self, Client, ClientError, SyncFailure, status_name};
use crate::witness::{WitnessConfig, WitnessService, serve_witness};
use crate::{self as reg, Registry, RegistryConfig, unix_now};
use pinfold_tlog::{
    MAX_STATEMENT_FUTURE_SECS, NoteVerifier, Published, Review, ReviewAction, StatusReport,
    VerifierConfig, WitnessPolicy,
};
use task_defs::definition::{Definition, Error as DefError};

/// Runs a registry command, or hands the command back when it is not one.
pub(super) fn dispatch(command: Command) -> Result<Outcome, Box<Command>> {
    let result = match command {
        Command::Keygen { output, json } => keygen(&output, json),
        Command::Serve(a) => serve(&a),
        Command::Queue(a) => queue(&a),
        Command::Witness(a) => witness(&a),
        Command::Publish {
            path,
            registry,
            key,
            origin,
            json,
        } => publish(&path, &registry, &key, origin, json),
        Command::Review(r) => review(r),
        Command::Status(a) => status(&a),
        other => return Err(Box::new(other)),
    };
    Ok(result.unwrap_or_else(|e| Outcome {
        stdout: String::new(),
        stderr: format!("error: {}\n", pinfold_base::cli::chain(&e)),
        code: exit_code(&e),
    }))
}

/// The exit code for an error, from the typed cause in its chain.
fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(ClientError::Status { status, .. }) = cause.downcast_ref::<ClientError>() {
            return if *status == 422 {
                EXIT_INVALID
            } else if (400..500).contains(status) {
                EXIT_REFUSED
            } else {
                EXIT_FAILURE
            };
        }
        if let Some(f) = cause.downcast_ref::<SyncFailure>()
            && f.is_verification_failure()
        {
            return EXIT_UNVERIFIED;
        }
        if let Some(DefError::Invalid(_)) = cause.downcast_ref::<DefError>() {
            return EXIT_INVALID;
        }
    }
    EXIT_FAILURE
}

fn keygen(path: &std::path::Path, json: bool) -> anyhow::Result<Outcome> {
    let key = reg::create_secret_key_file(path)?;
    if json {
        let v = json!({"public_key": key.public_key().to_string(), "file": path});
        return Ok(ok(v.to_string() + "\n"));
    }
    Ok(ok(format!("{}\n", key.public_key())))
}

fn serve(a: &ServeArgs) -> anyhow::Result<Outcome> {
    let config = RegistryConfig {
        data_dir: a.data.clone(),
        origin: a.origin.clone(),
        reviewers: a.reviewers.clone(),
        threshold: a.threshold,
        checkpoint_interval: a.checkpoint_interval.map(std::time::Duration::from_secs),
        max_bundle_bytes: a.max_bundle_bytes,
        config_file: a.config.clone(),
        public_url: a.public_url.clone(),
        witnesses: a.witnesses.clone(),
    };
    let registry =
        Arc::new(Registry::open(&config).with_context(|| format!("opening {}", a.data.display()))?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&a.listen)
            .await
            .with_context(|| format!("listening on {}", a.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let metrics = match &a.metrics_listen {
            Some(m) => {
                let l = tokio::net::TcpListener::bind(m)
                    .await
                    .with_context(|| format!("--metrics-listen {m}"))?;
                let bound = l.local_addr().context("reading the metrics address")?;
                tokio::spawn(reg::observe::serve(l, registry.clone(), pinfold_base::cli::shutdown_signal()));
                Some(bound)
            }
            None => None,
        };
        // Printed and flushed before serving: scripts and tests read the address from here.
        let s = registry.settings();
        let mut out = std::io::stdout().lock();
        if a.json {
            let v = json!({
                "listening": format!("http://{addr}"),
                "metrics": metrics.map(|m| format!("http://{m}")),
                "origin": s.origin,
                "log_key": registry.log_key().to_string(),
                "log_vkey": registry.note_verifier().to_vkey(),
                "witnesses": s.witnesses.iter().map(|w| json!({"vkey": w.vkey.to_string(), "url": w.url})).collect::<Vec<_>>(),
                "reviewers": s.roster.len(),
                "threshold": s.threshold,
                "checkpoint_interval_secs": s.checkpoint_interval.as_secs(),
                "public_url": s.public_url,
            });
            writeln!(out, "{v}")?;
        } else {
            writeln!(out, "listening on http://{addr}")?;
            if let Some(m) = metrics {
                writeln!(out, "metrics http://{m}")?;
            }
            writeln!(out, "origin {}", s.origin)?;
            writeln!(out, "log key {}", registry.log_key())?;
            // The C2SP verifier key: what witnesses and third-party tools (Go's sumdb/note)
            // are configured with.
            writeln!(out, "log vkey {}", registry.note_verifier().to_vkey())?;
            for w in &s.witnesses {
                writeln!(out, "witness {} at {}", w.vkey, w.url)?;
            }
            writeln!(
                out,
                "reviewers {}, threshold {}, checkpoint every {}s",
                s.roster.len(),
                s.threshold,
                s.checkpoint_interval.as_secs()
            )?;
            let p = &s.publish;
            writeln!(
                out,
                "authors {}: per key {}, per ip {}, quota {} bytes per key; bundles up to {} bytes",
                p.authors.name(),
                p.key_rate,
                p.ip_rate,
                p.key_quota_bytes,
                s.max_bundle_bytes
            )?;
            writeln!(
                out,
                "connections up to {}, header timeout {}s, body timeout {}s, idle timeout {}s",
                s.server.effective_max_connections(),
                s.server.header_timeout.as_secs(),
                s.server.body_timeout.as_secs(),
                s.server.idle_timeout.as_secs()
            )?;
            match &s.public_url {
                Some(u) => writeln!(out, "public url {u}")?,
                None => writeln!(
                    out,
                    "public url not configured: pages show http://{addr} (set --public-url https://...)"
                )?,
            }
        }
        out.flush()?;
        drop(out);
        reg::serve(listener, registry.clone(), pinfold_base::cli::shutdown_signal())
            .await
            .context("serving")
    })?;
    Ok(ok(String::new()))
}

fn queue(a: &QueueArgs) -> anyhow::Result<Outcome> {
    let hide = a.action == "hide";
    let changed = reg::service::set_hidden(&a.data, &a.id, hide, &a.reason)
        .with_context(|| format!("{} {}", a.action, a.id))?;
    if a.json {
        let v = json!({"id": a.id.to_string(), "hidden": hide, "changed": changed});
        return Ok(ok(v.to_string() + "\n"));
    }
    Ok(ok(format!(
        "{} {}\n",
        a.id,
        match (hide, changed) {
            (true, true) => "hidden from the review queue (the log keeps it)",
            (true, false) => "was already hidden",
            (false, true) => "shown in the review queue again",
            (false, false) => "was not hidden",
        }
    )))
}

fn witness(a: &WitnessArgs) -> anyhow::Result<Outcome> {
    let service = Arc::new(
        WitnessService::open(&WitnessConfig {
            data_dir: a.data.clone(),
            name: a.name.clone(),
            logs: a.logs.clone(),
            request_timeout: None,
        })
        .with_context(|| format!("opening {}", a.data.display()))?,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&a.listen)
            .await
            .with_context(|| format!("listening on {}", a.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        // Printed and flushed before serving: scripts and tests read these lines.
        let mut out = std::io::stdout().lock();
        if a.json {
            let v = json!({
                "listening": format!("http://{addr}"),
                "vkey": service.verifier().to_string(),
                "logs": service.logs().iter().map(|l| l.to_vkey()).collect::<Vec<_>>(),
            });
            writeln!(out, "{v}")?;
        } else {
            writeln!(out, "listening on http://{addr}")?;
            writeln!(out, "witness vkey {}", service.verifier())?;
            for l in service.logs() {
                writeln!(out, "witnessing {}", l.to_vkey())?;
            }
        }
        out.flush()?;
        drop(out);
        serve_witness(listener, service, pinfold_base::cli::shutdown_signal())
            .await
            .context("serving")
    })?;
    Ok(ok(String::new()))
}

/// The origin to sign statements for: the one given, else the one the registry's
/// checkpoint names (a hostile registry can only make the statement useless elsewhere).
fn statement_origin(client: &Client, origin: Option<String>) -> anyhow::Result<String> {
    match origin {
        Some(o) => Ok(o),
        None => client::checkpoint_origin(&client.checkpoint()?)
            .ok_or_else(|| anyhow!("the registry's checkpoint names no origin")),
    }
}

fn publish(
    path: &std::path::Path,
    registry: &str,
    key: &std::path::Path,
    origin: Option<String>,
    json_out: bool,
) -> anyhow::Result<Outcome> {
    let def = Definition::load(path)?;
    let key = reg::read_secret_key_file(key)?;
    let bundle = task_defs::bundle::pack(&def);
    let client = Client::new(registry);
    let origin = statement_origin(&client, origin)?;
    let publication = Published::sign(
        &key,
        &origin,
        def.id,
        &def.manifest.name,
        &def.manifest.version.to_string(),
        unix_now(),
    );
    let r = client
        .publish(&publication, &bundle)
        .with_context(|| format!("publishing {} to {registry}", def.id))?;
    Ok(ok(if json_out {
        json!({
            "id": r.id,
            "index": r.index,
            "created": r.created,
            "tree_size": r.tree_size,
        })
        .to_string()
            + "\n"
    } else {
        format!(
            "{} {} {}\n{} as log entry {}; it is pending until reviewers approve it\n",
            def.manifest.name,
            def.manifest.version,
            r.id,
            if r.created {
                "published"
            } else {
                "already published"
            },
            r.index
        )
    }))
}

fn review(cmd: ReviewCommand) -> anyhow::Result<Outcome> {
    match cmd {
        ReviewCommand::List {
            registry,
            all,
            json,
        } => {
            let client = Client::new(&registry);
            let filter = (!all).then_some(pinfold_tlog::Status::Pending);
            let defs = client.definitions(filter)?;
            if json {
                return Ok(ok(json!({ "definitions": defs }).to_string() + "\n"));
            }
            let now = unix_now();
            let mut s = String::new();
            if defs.is_empty() {
                s.push_str(if all {
                    "no definitions\n"
                } else {
                    "nothing awaits review\n"
                });
            }
            for d in defs {
                let _ = writeln!(
                    s,
                    "{}  {:<9} {} {}  {} approval{}, waiting {}",
                    d.id,
                    status_name(d.status),
                    d.name,
                    d.version,
                    d.approvals,
                    if d.approvals == 1 { "" } else { "s" },
                    reg::web::age(now.saturating_sub(d.published_at))
                );
            }
            Ok(ok(s))
        }
        ReviewCommand::Show { id, registry, json } => {
            let client = Client::new(&registry);
            let detail = client.definition(&id)?;
            // Review what you sign: the bundle is downloaded and its identity recomputed here.
            let (_, def) = client.bundle(&id)?;
            if json {
                return Ok(ok(serde_json::to_string(&detail)? + "\n"));
            }
            let mut s = super::summary_text(&def);
            let _ = writeln!(
                s,
                "status (registry's view): {}, {} approval{}",
                status_name(detail.summary.status),
                detail.summary.approvals,
                if detail.summary.approvals == 1 {
                    ""
                } else {
                    "s"
                }
            );
            if let Some(p) = &detail.previous_approved {
                let _ = writeln!(
                    s,
                    "previous approved version: {} {} {}",
                    p.name, p.version, p.id
                );
            }
            // What the registry's own view says about each statement (a convenience: `status`
            // verifies): stale ones and self-approvals never count.
            let report = detail.report.as_ref();
            let stale = |i: u64| report.is_some_and(|d| d.stale.iter().any(|st| st.index == i));
            let own = |i: u64| {
                report.is_some_and(|d| d.votes.iter().any(|v| v.index == i && v.self_approval))
            };
            for r in &detail.reviews {
                let _ = writeln!(
                    s,
                    "  entry {}: {} {} {} (signed {}){}{}",
                    r.index,
                    r.reviewer_name.as_deref().unwrap_or(""),
                    r.reviewer,
                    r.action.as_str(),
                    r.time,
                    if stale(r.index) {
                        " [stale: older than this reviewer's verdict, never counts]"
                    } else if own(r.index) {
                        " [self-approval: the key authored it, not counted]"
                    } else {
                        ""
                    },
                    if r.reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", r.reason)
                    }
                );
            }
            Ok(ok(s))
        }
        ReviewCommand::Approve(a) => verdict(ReviewAction::Approve, &a),
        ReviewCommand::Reject(a) => verdict(ReviewAction::Reject, &a),
        ReviewCommand::Revoke(a) => verdict(ReviewAction::Revoke, &a),
    }
}

fn verdict(action: ReviewAction, a: &VerdictArgs) -> anyhow::Result<Outcome> {
    let reason = a.reason.clone().unwrap_or_default();
    if action != ReviewAction::Approve && reason.trim().is_empty() {
        return Ok(Outcome {
            stdout: String::new(),
            stderr: format!("error: `review {}` needs --reason TEXT\n", action.as_str()),
            code: super::EXIT_USAGE,
        });
    }
    let key = reg::read_secret_key_file(&a.key)?;
    let client = Client::new(&a.registry);
    let origin = statement_origin(&client, a.origin.clone())?;
    let time = statement_time(&client, &a.id, &key.public_key(), unix_now())?;
    let review = Review::sign(&key, &origin, action, a.id, &reason, time);
    let r = client
        .review(&review)
        .with_context(|| format!("submitting the {} of {}", action.as_str(), a.id))?;
    if a.json {
        let v = json!({
            "action": action.as_str(),
            "id": a.id.to_string(),
            "reviewer": key.public_key().to_string(),
            "origin": origin,
            "index": r.index,
            "created": r.created,
            "tree_size": r.tree_size,
        });
        return Ok(ok(v.to_string() + "\n"));
    }
    Ok(ok(format!(
        "{} {} by {} for log {origin}: {} log entry {}\n",
        action.as_str(),
        a.id,
        key.public_key(),
        if r.created { "logged as" } else { "already" },
        r.index
    )))
}

/// The time to sign a new statement at: now, or just after the reviewer's latest logged
/// verdict on `id` when this machine's clock is behind it, so the new statement is the
/// verdict rather than a stale one. The registry's answer only ever moves the time later,
/// and never past what the registry itself would accept.
fn statement_time(
    client: &Client,
    id: &task_defs::DefinitionId,
    reviewer: &pinfold_tlog::PublicKey,
    now: u64,
) -> anyhow::Result<u64> {
    let latest = match client.definition(id) {
        Ok(d) => d
            .reviews
            .iter()
            .filter(|r| r.reviewer == *reviewer && r.action != ReviewAction::Revoke)
            .map(|r| r.time)
            .max(),
        // A revocation of an identity never published here has nothing to follow.
        Err(ClientError::Status { status: 404, .. }) => None,
        Err(e) => return Err(e.into()),
    };
    match latest {
        Some(t) if t >= now => {
            let next = t.saturating_add(1);
            if next > now.saturating_add(MAX_STATEMENT_FUTURE_SECS) {
                bail!(
                    "your latest statement about {id} is signed at {t}, more than a day ahead of \
                     this machine's clock ({now}): fix the clock before signing again"
                );
            }
            Ok(next)
        }
        _ => Ok(now),
    }
}

fn status(a: &StatusArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(&a.registry);
    let Some(log_key) = a.log_key else {
        let d = client.definition(&a.id);
        let status = match d {
            Ok(d) => status_name(d.summary.status),
            Err(ClientError::Status { status: 404, .. }) => "unknown",
            Err(e) => return Err(e.into()),
        };
        return Ok(Outcome {
            stdout: if a.json {
                json!({"id": a.id, "status": status, "verified": false}).to_string() + "\n"
            } else {
                format!("{status} (unverified: the registry's claim)\n")
            },
            stderr: "warning: unverified status; pass --log-key, --reviewer and --threshold to verify the log\n"
                .into(),
            code: 0,
        });
    };
    let origin = match &a.origin {
        Some(o) => o.clone(),
        None => client::checkpoint_origin(&client.checkpoint()?)
            .ok_or_else(|| anyhow!("the registry's checkpoint names no origin"))?,
    };
    let Some(threshold) = a.threshold else {
        bail!("--threshold is required with --log-key");
    };
    let witnesses = WitnessPolicy::new(
        a.witnesses.iter().cloned(),
        a.witness_threshold.unwrap_or(a.witnesses.len()),
    )?;
    let config = VerifierConfig {
        log_key: NoteVerifier::new(&origin, log_key)
            .with_context(|| format!("origin {origin:?}"))?,
        origin,
        reviewers: a.reviewers.iter().map(|r| r.key).collect(),
        threshold,
        max_age_secs: a.max_age,
        witnesses: witnesses.clone(),
    };
    let now = unix_now();
    let v = client::verified_status(&client, config, a.state.as_deref(), &a.id, now)
        .with_context(|| format!("verifying {}", a.registry))?;
    let name = status_name(v.status);
    let d = &v.details;
    let self_approvals: Vec<_> = d
        .votes
        .iter()
        .filter(|v| v.self_approval)
        .map(|v| v.reviewer)
        .collect();
    Ok(ok(if a.json {
        json!({
            "id": a.id,
            "status": name,
            "verified": true,
            "tree_size": v.checkpoint.size,
            "checkpoint_time": v.checkpoint.time,
            "approvals": d.approvals,
            "threshold": d.threshold,
            "votes": d.votes,
            "self_approvals": self_approvals,
            "authors": d.authors,
            "revoked_by": d.revoked_by,
            "stale": d.stale,
            "stale_total": d.stale_total,
            "cosigned_by": v.cosigned_by,
            "witness_threshold": witnesses.threshold(),
        })
        .to_string()
            + "\n"
    } else {
        let mut s = format!(
            "{name} (verified against checkpoint of size {}, signed {} ago{})\n",
            v.checkpoint.size,
            reg::web::age(now.saturating_sub(v.checkpoint.time)),
            if witnesses.is_required() {
                format!(
                    ", cosigned by {} of {} trusted witnesses, {} required",
                    v.cosigned_by.len(),
                    witnesses.witnesses().count(),
                    witnesses.threshold()
                )
            } else {
                String::new()
            }
        );
        s.push_str(&report_text(d, &a.reviewers, now));
        s
    }))
}

/// The reasons behind a status, one line each: counted approvals, every trusted verdict
/// (self-approvals marked), revocations and stale statements.
fn report_text(d: &StatusReport, roster: &[reg::api::RosterEntry], now: u64) -> String {
    let who = |k: &pinfold_tlog::PublicKey| match roster.iter().find(|r| r.key == *k) {
        Some(reg::api::RosterEntry { name: Some(n), .. }) => format!("{n} ({k})"),
        _ => k.to_string(),
    };
    let when = |t: u64| {
        if t > now {
            format!("{} ahead", reg::web::age(t - now))
        } else {
            format!("{} ago", reg::web::age(now - t))
        }
    };
    let mut s = format!(
        "  {} of {} required trusted approvals\n",
        d.approvals, d.threshold
    );
    for v in &d.votes {
        let _ = writeln!(
            s,
            "  {} {} (signed {}, entry {}){}",
            who(&v.reviewer),
            v.action.as_str(),
            when(v.time),
            v.index,
            if v.self_approval {
                ": self-approval, not counted (this key published it or an earlier version)"
            } else {
                ""
            }
        );
    }
    for k in &d.revoked_by {
        let _ = writeln!(s, "  {} revoked it", who(k));
    }
    for st in &d.stale {
        let _ = writeln!(
            s,
            "  stale, never counts: entry {} by {} {} (signed {}), older than their verdict signed {}",
            st.index,
            who(&st.reviewer),
            st.action.as_str(),
            when(st.time),
            when(st.outranked_by)
        );
    }
    if d.stale_total > d.stale.len() as u64 {
        let _ = writeln!(
            s,
            "  and {} more stale statements",
            d.stale_total - d.stale.len() as u64
        );
    }
    s
}
