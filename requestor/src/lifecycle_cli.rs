//! The command-line side of the job commands (`jobs`, `status`, `get`, `cancel`, `logs`)
//! and of `describe`: argument handling, printing, exit codes.

use std::path::PathBuf;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use task_defs::{Definition, DefinitionId};

use crate::cli::{DescribeArgs, GetArgs, JobArgs, JobsArgs, registry_url};
use crate::describe::{self, DescribeError};
use crate::lifecycle::{self, open_store, store_error};
use crate::run::RunError;
use crate::store::Store;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Prints an error (JSON or text) and returns its exit code.
fn fail(e: RunError, json: bool) -> i32 {
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": false, "error": e.to_string()})
        );
    } else {
        eprintln!("error: {e}");
    }
    e.exit_code()
}

fn describe_error(e: DescribeError) -> RunError {
    match e {
        DescribeError::Usage(m) => RunError::Usage(m),
        DescribeError::Registry(m) => RunError::Other(format!("registry: {m}")),
    }
}

/// The definition a run names: a full identity, a prefix resolved against the registry
/// and earlier jobs, or a path (returned as it is). With a registry, an identity's
/// definition is fetched too, so params and limits are checked before any offer.
pub fn resolve_for_run(
    target: &str,
    registry: Option<String>,
    store: &Option<Arc<Store>>,
) -> Result<(String, Option<Arc<Definition>>), RunError> {
    let path = std::path::Path::new(target);
    if !target.starts_with("blake3:") && path.exists() {
        return Ok((target.to_string(), None));
    }
    let registry = registry_url(registry);
    let is_id = DefinitionId::from_str(target).is_ok();
    let looks_hex = target
        .strip_prefix("blake3:")
        .unwrap_or(target)
        .bytes()
        .all(|b| b.is_ascii_hexdigit());
    if !is_id && !looks_hex {
        // Neither identity nor prefix: `run` says what it expected.
        return Ok((target.to_string(), None));
    }
    if is_id && registry.is_none() {
        return Ok((target.to_string(), None));
    }
    let known: Vec<(String, String)> = store
        .as_ref()
        .and_then(|s| s.definitions().ok())
        .unwrap_or_default()
        .into_iter()
        .map(|d| (d, String::new()))
        .collect();
    let Some(url) = registry else {
        let id = describe::resolve_prefix(target, &known).map_err(describe_error)?;
        return Ok((id, None));
    };
    let def = describe::load(target, Some(&url), &known).map_err(describe_error)?;
    Ok((def.id.to_string(), Some(Arc::new(def))))
}

/// `requestor jobs`.
pub fn jobs(a: &JobsArgs, data_dir: Option<PathBuf>) -> anyhow::Result<i32> {
    let store = match open_store(data_dir.as_deref()) {
        Ok(s) => s,
        Err(e) => return Ok(fail(e, a.json)),
    };
    let rows = match store.list() {
        Ok(r) => r,
        Err(e) => return Ok(fail(store_error(e), a.json)),
    };
    if a.json {
        println!("{}", serde_json::to_value(&rows)?);
    } else if rows.is_empty() {
        println!("no jobs");
    } else {
        println!(
            "{:<20}  {:<10}  {:<16}  {:<12}  {:<10}  PROVIDER",
            "JOB", "STATE", "DEFINITION", "STATUS", "AGE"
        );
        let now = crate::store::now_ms();
        for r in &rows {
            let def = r
                .definition
                .strip_prefix("blake3:")
                .unwrap_or(&r.definition);
            println!(
                "{:<20}  {:<10}  {:<16}  {:<12}  {:<10}  {}",
                r.id,
                r.state,
                &def[..def.len().min(16)],
                r.status.as_deref().unwrap_or("-"),
                format!("{}s", now.saturating_sub(r.created_ms) / 1000),
                r.provider
            );
        }
    }
    Ok(crate::EXIT_OK)
}

/// Opens the store and resolves a job handle, adding `addrs` (given on the command line,
/// with or without the provider's `/p2p/` suffix) to the recorded ones; `Err` is the exit
/// code already reported.
fn job(
    data_dir: Option<PathBuf>,
    handle: &str,
    addrs: &[pinfold_net::Multiaddr],
    json: bool,
) -> Result<(Arc<Store>, crate::store::JobRow), i32> {
    let store = open_store(data_dir.as_deref()).map_err(|e| fail(e, json))?;
    let mut row = store
        .resolve(handle)
        .map_err(|e| fail(store_error(e), json))?;
    let suffix = format!("/p2p/{}", row.provider);
    for a in addrs {
        let text = a.to_string();
        let full = if text.ends_with(&suffix) {
            text
        } else if text.contains("/p2p/") {
            return Err(fail(
                RunError::Usage(format!(
                    "--addr {text} names another peer than the job's provider {}",
                    row.provider
                )),
                json,
            ));
        } else {
            format!("{text}{suffix}")
        };
        // Given ones first: the recorded ones may be stale.
        row.addrs.insert(0, full);
    }
    Ok((store, row))
}

/// `requestor status JOB`.
pub fn status(a: &JobArgs, data_dir: Option<PathBuf>) -> anyhow::Result<i32> {
    let (store, row) = match job(data_dir, &a.job, &a.addrs, a.json) {
        Ok(j) => j,
        Err(code) => return Ok(code),
    };
    let rt = runtime()?;
    let local = row.clone();
    let result = rt.block_on(lifecycle::status(&store, row));
    rt.shutdown_background();
    if let (Err(_), false) = (&result, a.json) {
        // What this requestor knows still helps when the provider cannot be asked.
        eprintln!(
            "job {} on {}: local state {}",
            local.id, local.provider, local.state
        );
    }
    Ok(match result {
        Ok(r) => {
            if a.json {
                println!("{}", serde_json::json!({"ok": true, "status": r}));
            } else {
                println!("job {} on {}", r.job.id, r.job.provider);
                println!("provider says {}", r.provider_state);
                println!("local state {}", r.job.state);
                if let Some(s) = &r.job.status {
                    println!("run status {s}");
                }
                if let Some(d) = &r.job.dir {
                    println!("outputs in {}", d.display());
                }
            }
            crate::EXIT_OK
        }
        Err(e) => fail(e, a.json),
    })
}

/// `requestor get JOB [--output DIR]`.
pub fn get(a: &GetArgs, data_dir: Option<PathBuf>) -> anyhow::Result<i32> {
    let (store, row) = match job(data_dir, &a.job, &a.addrs, a.json) {
        Ok(j) => j,
        Err(code) => return Ok(code),
    };
    let definition = row.definition.clone();
    let rt = runtime()?;
    let result = rt.block_on(lifecycle::get(
        store,
        row,
        a.output.clone(),
        Duration::from_secs(a.timeout),
        !a.json,
    ));
    rt.shutdown_background();
    let report = result.map(|r| crate::run::RunReport {
        definition,
        replicas: vec![r],
        refusals: Vec::new(),
        agreed: true,
        detached: Vec::new(),
    });
    Ok(crate::cli::report(report, a.json))
}

/// `requestor cancel JOB`.
pub fn cancel(a: &JobArgs, data_dir: Option<PathBuf>) -> anyhow::Result<i32> {
    let (store, row) = match job(data_dir, &a.job, &a.addrs, a.json) {
        Ok(j) => j,
        Err(code) => return Ok(code),
    };
    let rt = runtime()?;
    let result = rt.block_on(lifecycle::cancel(&store, &row));
    rt.shutdown_background();
    Ok(match result {
        Ok(active) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "job": row.id, "provider": row.provider, "was_running": active})
                );
            } else if active {
                println!("cancelled job {} on provider {}", row.id, row.provider);
            } else {
                println!(
                    "job {} on provider {} had already ended; its outputs are dropped",
                    row.id, row.provider
                );
            }
            crate::EXIT_OK
        }
        Err(e) => fail(e, a.json),
    })
}

/// `requestor logs JOB`.
pub fn logs(a: &JobArgs, data_dir: Option<PathBuf>) -> anyhow::Result<i32> {
    use std::io::Write as _;
    let (_store, row) = match job(data_dir, &a.job, &a.addrs, a.json) {
        Ok(j) => j,
        Err(code) => return Ok(code),
    };
    let rt = runtime()?;
    let result = rt.block_on(lifecycle::logs(&row));
    rt.shutdown_background();
    Ok(match result {
        Ok(l) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "job": row.id, "source": l.source,
                        "stdout": String::from_utf8_lossy(&l.stdout),
                        "stderr": String::from_utf8_lossy(&l.stderr)})
                );
            } else {
                std::io::stdout().write_all(&l.stdout)?;
                std::io::stderr().write_all(&l.stderr)?;
            }
            crate::EXIT_OK
        }
        Err(e) => fail(e, a.json),
    })
}

/// `requestor describe ID`.
pub fn describe(a: &DescribeArgs, data_dir: Option<PathBuf>) -> anyhow::Result<i32> {
    // Earlier jobs' definitions count for prefixes too; a missing store is no error here.
    let known: Vec<(String, String)> = crate::store::data_dir(data_dir.as_deref())
        .filter(|d| d.join("jobs.sqlite").exists())
        .and_then(|d| Store::open(&d).ok())
        .and_then(|s| s.definitions().ok())
        .unwrap_or_default()
        .into_iter()
        .map(|d| (d, String::new()))
        .collect();
    let registry = registry_url(a.registry.clone());
    match describe::load(&a.definition, registry.as_deref(), &known) {
        Ok(def) => {
            if a.json {
                println!("{}", describe::describe_json(&def));
            } else {
                println!("{}", describe::describe(&def));
            }
            Ok(crate::EXIT_OK)
        }
        Err(e) => Ok(fail(describe_error(e), a.json)),
    }
}
