//! Checkpoint gossip convergence: how fast one new registry checkpoint reaches N providers.
//!
//! Starts a registry and N provider nodes in this process on loopback (as the `scale`
//! example does: ads every 10 s, a 1 s gossip heartbeat),
//! waits until every node has synced its registry view and a fresh requestor session hears
//! all of them, then, each round, grows the log (another wordfreq variant published and
//! approved), fetches the registry's newest signed checkpoint note and gossips it once,
//! from that session (connected to the first node only). Each node checks the note against
//! its log key and asks the registry for a consistency proof from its own view, so the N
//! proof requests arriving together are part of what is measured. Every 10 ms the example
//! reads each node's view ([`provider::node::trust::RegistryView`], what `/metrics` shows)
//! and prints when 50 %, 90 % and 100 % of the nodes had received the note and when they
//! had verified it as one history with their view.
//!
//! The nodes' own syncs are spaced an hour apart, so only the gossip can tell them about the
//! new checkpoint (with the default `sync_interval_ms` every node also syncs at each ad
//! tick, and a new checkpoint reaches every view within an ad interval without gossip).
//!
//! Who a node is connected to decides who gossip reaches. Each node bootstraps from the first
//! and from `PEERS - 1` other earlier nodes picked at random, so the network is a random
//! graph, as Kademlia's walks would make it (Kademlia itself stays off: with it a hundred
//! debug-build nodes took minutes to start and to be heard, under load). With `PEERS` 1 (what [`LocalNetwork`]
//! sets up for the demo) every node but the first has that one peer: a star whose centre
//! keeps only a dozen of them in its gossip mesh and tells a random few others per heartbeat.
//!
//! `cargo run -p pinfold-demo --example gossip -- [PROVIDERS] [ROUNDS] [PEERS]` (defaults
//! 100, 3, 4).

use std::time::{Duration, Instant};

use pinfold_demo::{LocalNetwork, write_wordfreq};
use pinfold_registry::client::Client;
use pinfold_registry::service::DEFAULT_ORIGIN;
use pinfold_tlog::{Checkpoint, NoteVerifier};
use requestor::session::{Session, SessionConfig};

/// Longest a round waits for every node.
const ROUND_CAP: Duration = Duration::from_secs(60);

/// CPU time this process has used (user + system), from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) end with ')'.
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// The time by which `q` of the nodes had an event (`None` where a node never did).
fn quantile(times: &[Option<Duration>], q: f64) -> Option<Duration> {
    let need = ((times.len() as f64) * q).ceil().max(1.0) as usize;
    let mut seen: Vec<Duration> = times.iter().flatten().copied().collect();
    seen.sort();
    seen.get(need - 1).copied()
}

fn show(d: Option<Duration>) -> String {
    d.map_or("never".to_string(), |d| {
        format!("{:.0} ms", d.as_secs_f64() * 1e3)
    })
}

fn main() -> anyhow::Result<()> {
    // The in-process providers' compile workers are this executable started again.
    provider::wasm::dispatch_worker();
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let providers = args.next().transpose()?.unwrap_or(100).max(2);
    let rounds = args.next().transpose()?.unwrap_or(3).max(1);
    let peers = args.next().transpose()?.unwrap_or(4).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut net = LocalNetwork::new().await?;
        net.approved_wordfreq().await?;
        let tune = |c: &mut provider::node::NodeConfig| {
            c.network.ad_interval_secs = 10;
            c.network.gossip_heartbeat_ms = 1000;
            c.registry.sync_interval_ms = 3_600_000;
        };
        let t = Instant::now();
        // xorshift64: the same graph on every run.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..providers {
            let earlier = net.addrs.clone();
            let mut boot: Vec<String> = earlier.first().map(|a| a.to_string()).into_iter().collect();
            while boot.len() < peers.min(earlier.len()) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let a = earlier[(seed % earlier.len() as u64) as usize].to_string();
                if !boot.contains(&a) {
                    boot.push(a);
                }
            }
            net.start_providers(1, |c| {
                tune(c);
                c.network.bootstrap = boot.clone();
            })
            .await?;
        }
        println!(
            "gossip: {providers} providers started in {:.1} s, each bootstrapping from up to {peers}",
            t.elapsed().as_secs_f64(),
        );

        // Settled: every view synced once, and a new session hears every node's ad (so the
        // gossip meshes have formed).
        let session = Session::start(SessionConfig {
            bootstrap: net.addrs.first().cloned().into_iter().collect(),
            mdns: false,
            keypair: None,
        })
        .await?;
        let t = Instant::now();
        loop {
            let synced = net
                .nodes
                .iter()
                .filter(|n| n.registry().and_then(|r| r.sync_status()).is_some())
                .count();
            let heard = session.client.providers().await.unwrap_or_default().len();
            if synced == providers && heard >= providers {
                break;
            }
            if t.elapsed() > Duration::from_secs(120) {
                anyhow::bail!("not settled after 120 s: {synced} views synced, {heard} ads heard");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "gossip: settled {:.1} s after start",
            t.elapsed().as_secs_f64()
        );

        let url = net.url.clone();
        let log = NoteVerifier::new(DEFAULT_ORIGIN, net.log_key)?;
        let size = |n: &provider::node::RunningNode| {
            n.registry()
                .and_then(|r| r.sync_status())
                .map_or(0, |(s, _)| s)
        };
        let mut target = net.nodes.iter().map(size).max().unwrap_or(0);
        for round in 1..=rounds {
            // Every view caught up with the last round (each syncs at its next ad tick once
            // gossip told it), so this round's checkpoint is ahead of all of them.
            let t = Instant::now();
            while net.nodes.iter().any(|n| size(n) < target) {
                if t.elapsed() > ROUND_CAP {
                    // A node that missed the last note learns of this one all the same.
                    println!(
                        "gossip: {} views still behind tree size {target} after {ROUND_CAP:?}",
                        net.nodes.iter().filter(|n| size(n) < target).count()
                    );
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // A quiet moment: the checkpoints the nodes gossiped after syncing are checked.
            // What the process burns meanwhile (ads, heartbeats) is the load the gossip
            // below competes with.
            let (cpu, wall) = (cpu_time(), Instant::now());
            tokio::time::sleep(Duration::from_secs(2)).await;
            let busy = (cpu_time() - cpu).as_secs_f64() / wall.elapsed().as_secs_f64();

            let variant = net.root().join(format!("wordfreq-{round}"));
            write_wordfreq(&variant)?;
            std::fs::write(variant.join("README.md"), format!("variant {round}\n"))?;
            net.publish_approved(&variant).await?;
            let u = url.clone();
            let note = tokio::task::spawn_blocking(move || Client::new(&u).checkpoint())
                .await??;
            let new_size = Checkpoint::open(&note, &log)?.size;
            let note = String::from_utf8(note)?;

            let received: Vec<u64> = net
                .nodes
                .iter()
                .map(|n| n.registry().map_or(0, |r| r.gossip_notes_received()))
                .collect();
            let mut heard: Vec<Option<Duration>> = vec![None; net.nodes.len()];
            let mut verified: Vec<Option<Duration>> = vec![None; net.nodes.len()];
            let t = Instant::now();
            // The session may still be joining the checkpoint topic's mesh.
            while let Err(e) = session.client.publish_checkpoint(&note).await {
                if t.elapsed() > Duration::from_secs(10) {
                    anyhow::bail!("gossiping the checkpoint: {e}");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let published = t.elapsed();
            while t.elapsed() < ROUND_CAP && verified.iter().any(Option::is_none) {
                for (i, n) in net.nodes.iter().enumerate() {
                    let Some(r) = n.registry() else { continue };
                    if heard[i].is_none() && r.gossip_notes_received() > received[i] {
                        heard[i] = Some(t.elapsed());
                    }
                    if verified[i].is_none() && r.gossiped_tree_size() >= new_size {
                        verified[i] = Some(t.elapsed());
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let done = verified.iter().flatten().count();
            println!(
                "gossip: round {round}: checkpoint of tree size {target} -> {new_size} gossiped once \
                 ({:.0} ms to publish); received by 50/90/100 % of {} nodes after {} / {} / {}; \
                 verified consistent by 50/90/100 % after {} / {} / {} ({done} of {}); \
                 the process used {busy:.2} cores just before",
                published.as_secs_f64() * 1e3,
                net.nodes.len(),
                show(quantile(&heard, 0.5)),
                show(quantile(&heard, 0.9)),
                show(quantile(&heard, 1.0)),
                show(quantile(&verified, 0.5)),
                show(quantile(&verified, 0.9)),
                show(quantile(&verified, 1.0)),
                net.nodes.len(),
            );
            target = new_size;
        }
        net.stop(false).await;
        anyhow::Ok(())
    })?;
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}
