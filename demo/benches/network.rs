//! End-to-end latency and throughput of a trivial wasm task through the network.
//!
//! One registry and one provider node in this process, a requestor session over loopback
//! TCP; the bundle is cached on the provider after a warm-up run, so what is measured is
//! the network path: offer (including the provider's registry check against its
//! in-memory verified view), input transfer, the run, result polling, output and stdio
//! download, digest and receipt verification, and writing the results to disk.
//!
//! Prints p50/p90/p99 of sequential runs and tasks per second with several jobs in
//! flight. `cargo bench -p pinfold-demo --bench network [-- RUNS]` (default 300 runs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use pinfold_demo::LocalNetwork;
use requestor::run::{RunOptions, run_in};
use requestor::session::{Session, SessionConfig};

/// A WASI command module whose `_start` returns at once.
const NOOP_WASM: &[u8] = &[
    0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 1, 4, 1, 0x60, 0, 0, 3, 2, 1, 0, 5, 3, 1, 0, 1, 7, 0x13, 2, 6,
    b'm', b'e', b'm', b'o', b'r', b'y', 2, 0, 6, b'_', b's', b't', b'a', b'r', b't', 0, 0, 10, 4,
    1, 2, 0, 0x0b,
];

const NOOP_TOML: &str = r#"format = 1
name = "noop"
version = "1.0.0"
description = "Does nothing and exits 0; measures the network path"
license = "MIT"

[runtime]
kind = "wasm"
module = "noop.wasm"

[limits]
memory = "16MiB"
timeout = "10s"
output = "1MiB"

[io]
input = "/input"
output = "/output"

[capabilities]
network = false
deterministic = true
secrets = []
"#;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    // The in-process providers' compile workers are this bench executable started again.
    provider::wasm::dispatch_worker();
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(300);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut net = LocalNetwork::new().await?;
        let dir = net.root().join("noop");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("taskdef.toml"), NOOP_TOML)?;
        std::fs::write(dir.join("noop.wasm"), NOOP_WASM)?;
        let def = net.publish_approved(&dir).await?;
        net.start_providers(1, |c| {
            c.caps.concurrent_tasks = 8;
            c.caps.retain_secs = 5;
        })
        .await?;
        let input = net.root().join("input.txt");
        std::fs::write(&input, b"hello\n")?;
        let session = Arc::new(
            Session::start(SessionConfig {
                bootstrap: net.addrs.clone(),
                mdns: false,
                keypair: None,
            })
            .await?,
        );
        let out = net.root().join("out");
        let id = def.id.to_string();
        let opts = move |i: usize| RunOptions {
            definition: id.clone(),
            inputs: vec![input.clone()],
            output: Some(out.join(i.to_string())),
            wait_ads: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            ..RunOptions::default()
        };
        // Warm-up: the provider fetches the bundle from the registry and compiles it.
        for i in 0..5 {
            run_in(session.clone(), opts(1_000_000 + i)).await?;
        }

        let mut lat = Vec::with_capacity(runs);
        for i in 0..runs {
            let t = Instant::now();
            run_in(session.clone(), opts(i)).await?;
            lat.push(t.elapsed());
        }
        lat.sort();
        println!(
            "network/noop sequential ({runs} runs, bundle cached): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            percentile(&lat, 0.50).as_secs_f64() * 1e3,
            percentile(&lat, 0.90).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
            lat[lat.len() - 1].as_secs_f64() * 1e3,
        );

        for in_flight in [4usize, 8] {
            let t = Instant::now();
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let workers: Vec<_> = (0..in_flight)
                .map(|_| {
                    let session = session.clone();
                    let next = next.clone();
                    let opts = opts.clone();
                    tokio::spawn(async move {
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if i >= runs {
                                return anyhow::Ok(());
                            }
                            run_in(session.clone(), opts(10_000 * in_flight + i)).await?;
                        }
                    })
                })
                .collect();
            for w in workers {
                w.await??;
            }
            let secs = t.elapsed().as_secs_f64();
            println!(
                "network/noop throughput, one provider, {in_flight} jobs in flight: {:.0} tasks/s ({runs} tasks in {secs:.2} s)",
                runs as f64 / secs
            );
        }
        net.stop(false).await;
        anyhow::Ok(())
    })?;
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}
