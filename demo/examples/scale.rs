//! Scale simulation: many provider nodes in this process on loopback, churn, a stream of jobs.
//!
//! Starts a registry and N provider nodes (each bootstraps from the first), then a fresh
//! requestor session that measures how long it takes to hear ads from k providers and from
//! all of them (gossip convergence), then runs J wordfreq jobs one after another through that
//! session while every C jobs one provider (never the first, which the others bootstrap from)
//! stops and a new one starts. Prints the figures BENCHMARKS.md records:
//!
//! `cargo run --release -p pinfold-demo --example scale -- [PROVIDERS] [JOBS] [CHURN_EVERY]`
//! (defaults 100, 1000, 50).

use std::sync::Arc;
use std::time::{Duration, Instant};

use pinfold_demo::LocalNetwork;
use requestor::run::{RunOptions, run_in};
use requestor::session::{Session, SessionConfig};

/// Resident memory of this process, in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// How long until the session has heard ads from at least `want` providers (`None` after
/// `cap`).
async fn time_to_hear(session: &Session, want: usize, cap: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < cap {
        if session.client.providers().await.unwrap_or_default().len() >= want {
            return Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn main() -> anyhow::Result<()> {
    // The in-process providers' compile workers are this executable started again.
    provider::wasm::dispatch_worker();
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let providers = args.next().transpose()?.unwrap_or(100).max(2);
    let jobs = args.next().transpose()?.unwrap_or(1000);
    let churn_every = args.next().transpose()?.unwrap_or(50).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut net = LocalNetwork::new().await?;
        let def = net.approved_wordfreq().await?;
        // Ads every 10 s and libp2p's 1 s gossip heartbeat: with a hundred nodes in one
        // process, every ad is verified by every node, and faster settings spend the CPU the
        // jobs need.
        let tune = |c: &mut provider::node::NodeConfig| {
            c.network.ad_interval_secs = 10;
            c.network.gossip_heartbeat_ms = 1000;
            c.caps.concurrent_tasks = 2;
            c.caps.retain_secs = 10;
        };
        let before = rss_mib();
        let t = Instant::now();
        net.start_providers(providers, tune).await?;
        let started = t.elapsed();
        let per_node = (rss_mib() - before) / providers as f64;
        println!(
            "scale: {providers} providers started in {:.1} s; {:.1} MiB resident per node",
            started.as_secs_f64(),
            per_node
        );

        let t = Instant::now();
        let session = Arc::new(
            Session::start(SessionConfig {
                bootstrap: net.addrs.first().cloned().into_iter().collect(),
                mdns: false,
                keypair: None,
            })
            .await?,
        );
        let cap = Duration::from_secs(120);
        for k in [1usize, 10, providers] {
            match time_to_hear(&session, k, cap).await {
                Some(_) => println!(
                    "scale: new requestor heard {k} provider(s) {:.2} s after it started",
                    t.elapsed().as_secs_f64()
                ),
                None => println!("scale: new requestor never heard {k} providers within {cap:?}"),
            }
        }

        let input = net.root().join("corpus.txt");
        std::fs::write(&input, "the cat and the hat and the bat\nthe end\n")?;
        let out = net.root().join("out");
        let id = def.id.to_string();
        let (mut ok, mut failed, mut churned) = (0usize, Vec::new(), 0usize);
        let mut times = Vec::with_capacity(jobs);
        let t = Instant::now();
        for j in 0..jobs {
            if j > 0 && j % churn_every == 0 {
                // One provider leaves (never the bootstrap node), one new provider joins.
                let i = 1 + (j / churn_every) % (net.nodes.len() - 1);
                let node = net.nodes.remove(i);
                net.addrs.remove(i);
                node.stop().await;
                net.start_providers(1, tune).await?;
                churned += 1;
            }
            let started = Instant::now();
            let r = run_in(
                session.clone(),
                RunOptions {
                    definition: id.clone(),
                    inputs: vec![input.clone()],
                    output: Some(out.join(j.to_string())),
                    wait_ads: Duration::from_secs(5),
                    timeout: Duration::from_secs(30),
                    ..RunOptions::default()
                },
            )
            .await;
            times.push(started.elapsed());
            match r {
                Ok(_) => ok += 1,
                Err(e) => failed.push(format!("job {j}: {e}")),
            }
            // Outputs are verified; keeping a thousand copies would only fill the disk.
            let _ = std::fs::remove_dir_all(out.join(j.to_string()));
        }
        times.sort();
        let p = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
        println!(
            "scale: {jobs} jobs in {:.1} s with {churned} providers replaced: {ok} verified ({:.2} %), \
             {} failed; job p50 {:.0} ms, p99 {:.0} ms; process resident {:.0} MiB",
            t.elapsed().as_secs_f64(),
            100.0 * ok as f64 / jobs.max(1) as f64,
            failed.len(),
            p(0.5).as_secs_f64() * 1e3,
            p(0.99).as_secs_f64() * 1e3,
            rss_mib()
        );
        for f in failed.iter().take(10) {
            println!("scale: {f}");
        }
        net.stop(false).await;
        anyhow::Ok(())
    })?;
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}
