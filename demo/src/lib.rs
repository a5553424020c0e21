//! `pinfold-demo`: the whole system on loopback, in one process, explained step by step.
//!
//! Its own crate so that the requestor never links the provider: this is the one place
//! (besides the end-to-end tests, which run binaries) where a provider node, a registry and
//! a requestor live together.
//!
//! A registry (the real server on an ephemeral port, SQLite in a temp dir), an author and
//! two demo reviewers with fresh keys, provider nodes (the real node code, each with its
//! own identity, job store and registry view), and a requestor. The wordfreq example is
//! embedded in the binary, so the demo needs nothing but the toolchain.

#![deny(missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use pinfold_net::Multiaddr;
use pinfold_registry::api::RosterEntry;
use pinfold_registry::client::Client;
use pinfold_registry::service::{Registry, RegistryConfig};
use pinfold_registry::unix_now;
use pinfold_tlog::{PublicKey, Published, Review, ReviewAction, SecretKey};
use provider::node::{self, NodeConfig, RunningNode};
use task_defs::{Definition, DefinitionId};

use requestor::run::RunOptions;

/// The wordfreq example's files, embedded.
const WORDFREQ: &[(&str, &[u8])] = &[
    (
        "taskdef.toml",
        include_bytes!("../../task-defs/examples/wordfreq/taskdef.toml"),
    ),
    (
        "wordfreq.wasm",
        include_bytes!("../../task-defs/examples/wordfreq/wordfreq.wasm"),
    ),
    (
        "README.md",
        include_bytes!("../../task-defs/examples/wordfreq/README.md"),
    ),
    (
        "src/wordfreq.c",
        include_bytes!("../../task-defs/examples/wordfreq/src/wordfreq.c"),
    ),
];

const POEM: &str = "the quick brown fox jumps over the lazy dog\n\
the dog sleeps and the fox runs\n\
a fox a dog a day\n";

fn step(n: usize, total: usize, who: &str, what: &str) {
    println!("[{n}/{total}] {who}: {what}");
}

/// Writes the embedded wordfreq example into `dir`.
pub fn write_wordfreq(dir: &Path) -> anyhow::Result<()> {
    write_example(dir)
}

/// What to run: how many providers, how many replicas, and whether to keep the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOptions {
    /// Provider nodes to start (at least one is started).
    pub providers: usize,
    /// Replicas to run the job on (clamped to 1..=providers).
    pub replicas: usize,
    /// Keep the demo's directory (registry, providers, outputs) instead of deleting it.
    pub keep: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            providers: 3,
            replicas: 2,
            keep: false,
        }
    }
}

/// Runs the demo; returns the exit code (the requestor's exit codes).
pub fn main(a: &DemoOptions) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let code = rt.block_on(demo(a));
    rt.shutdown_timeout(Duration::from_secs(2));
    code
}

fn write_example(dir: &Path) -> anyhow::Result<()> {
    for (rel, bytes) in WORDFREQ {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("blocking task")?
}

/// A registry with two demo reviewers (k = 2) and provider nodes trusting it, all on
/// loopback in this process; for the demo and the benchmarks.
#[derive(Debug)]
pub struct LocalNetwork {
    root: tempfile::TempDir,
    /// The registry's base URL.
    pub url: String,
    /// The registry log's key.
    pub log_key: PublicKey,
    author: SecretKey,
    reviewers: [SecretKey; 2],
    /// Running provider nodes.
    pub nodes: Vec<RunningNode>,
    /// Their first listen addresses.
    pub addrs: Vec<Multiaddr>,
    stop_registry: Option<tokio::sync::oneshot::Sender<()>>,
}

impl LocalNetwork {
    /// Starts the registry (no providers yet).
    pub async fn new() -> anyhow::Result<LocalNetwork> {
        let root = tempfile::Builder::new()
            .prefix("pinfold-demo-")
            .tempdir()
            .context("creating the demo directory")?;
        let author = SecretKey::generate().context("generating a key")?;
        let alice = SecretKey::generate().context("generating a key")?;
        let bob = SecretKey::generate().context("generating a key")?;
        let registry = Arc::new(
            Registry::open(&RegistryConfig {
                data_dir: root.path().join("registry"),
                reviewers: vec![
                    RosterEntry {
                        key: alice.public_key(),
                        name: Some("alice".into()),
                    },
                    RosterEntry {
                        key: bob.public_key(),
                        name: Some("bob".into()),
                    },
                ],
                threshold: Some(2),
                ..RegistryConfig::default()
            })
            .context("opening the registry")?,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop_registry, stopped) = tokio::sync::oneshot::channel::<()>();
        let log_key = registry.log_key();
        tokio::spawn(pinfold_registry::server::serve(
            listener,
            registry,
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(LocalNetwork {
            root,
            url,
            log_key,
            author,
            reviewers: [alice, bob],
            nodes: Vec::new(),
            addrs: Vec::new(),
            stop_registry: Some(stop_registry),
        })
    }

    /// The scratch directory everything lives in.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Publishes a definition directory as the demo author.
    pub async fn publish(&self, dir: &Path) -> anyhow::Result<Definition> {
        let def =
            Definition::load_dir(dir).with_context(|| format!("loading {}", dir.display()))?;
        let bundle = task_defs::bundle::pack(&def);
        let p = Published::sign(
            &self.author,
            pinfold_registry::service::DEFAULT_ORIGIN,
            def.id,
            &def.manifest.name,
            &def.manifest.version.to_string(),
            unix_now(),
        );
        let url = self.url.clone();
        blocking(move || {
            Client::new(&url).publish(&p, &bundle)?;
            Ok(())
        })
        .await
        .context("publishing")?;
        Ok(def)
    }

    /// Publishes a definition directory and has both demo reviewers approve it.
    pub async fn publish_approved(&self, dir: &Path) -> anyhow::Result<Definition> {
        let def = self.publish(dir).await?;
        self.approve(def.id).await?;
        Ok(def)
    }

    /// Writes the wordfreq example under the network's directory, publishes and approves it.
    pub async fn approved_wordfreq(&self) -> anyhow::Result<Definition> {
        let dir = self.root().join("wordfreq");
        write_wordfreq(&dir)?;
        self.publish_approved(&dir).await
    }

    /// Both demo reviewers approve `id`.
    pub async fn approve(&self, id: DefinitionId) -> anyhow::Result<()> {
        let reviews: Vec<Review> = self
            .reviewers
            .iter()
            .map(|k| {
                Review::sign(
                    k,
                    pinfold_registry::service::DEFAULT_ORIGIN,
                    ReviewAction::Approve,
                    id,
                    "read the source; pure computation",
                    unix_now(),
                )
            })
            .collect();
        let url = self.url.clone();
        blocking(move || {
            let c = Client::new(&url);
            for r in &reviews {
                c.review(r)?;
            }
            Ok(())
        })
        .await
        .context("approving")
    }

    /// Starts `n` more provider nodes trusting the registry and both reviewers; each
    /// after the first bootstraps from the first. `tune` adjusts each configuration.
    pub async fn start_providers(
        &mut self,
        n: usize,
        tune: impl Fn(&mut NodeConfig),
    ) -> anyhow::Result<()> {
        for _ in 0..n {
            let dir = self
                .root
                .path()
                .join(format!("provider-{}", self.nodes.len() + 1));
            let mut c = NodeConfig::default();
            c.network.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
            c.network.bootstrap = self
                .addrs
                .first()
                .map(|a| vec![a.to_string()])
                .unwrap_or_default();
            c.network.mdns = false;
            c.network.kad = false;
            c.network.gossip_heartbeat_ms = 200;
            c.registry.url = Some(self.url.clone());
            c.registry.log_key = Some(self.log_key.to_string());
            c.registry.reviewers = self
                .reviewers
                .iter()
                .map(|k| k.public_key().to_string())
                .collect();
            c.registry.threshold = 2;
            c.resolve_paths(&dir);
            tune(&mut c);
            let node = node::start(c, None)
                .await
                .context("starting a provider node")?;
            if let Some(addr) = node.addrs.first() {
                self.addrs.push(addr.clone());
            }
            self.nodes.push(node);
        }
        Ok(())
    }

    /// Stops the nodes and the registry; with `keep`, leaves the directory and returns it.
    pub async fn stop(mut self, keep: bool) -> Option<std::path::PathBuf> {
        for n in self.nodes.drain(..) {
            n.stop().await;
        }
        if let Some(s) = self.stop_registry.take() {
            let _ = s.send(());
        }
        keep.then(|| self.root.keep())
    }
}

async fn demo(a: &DemoOptions) -> anyhow::Result<i32> {
    const TOTAL: usize = 7;
    let providers = a.providers.max(1);
    let replicas = a.replicas.clamp(1, providers);

    // 1. The registry, with a roster of two demo reviewers and k = 2.
    let mut net = LocalNetwork::new().await?;
    step(
        1,
        TOTAL,
        "registry",
        &format!(
            "serving {}; its append-only log is signed with {}, and clients verify every checkpoint against that key",
            net.url, net.log_key
        ),
    );

    // 2. The author publishes wordfreq.
    let def_dir = net.root().join("wordfreq");
    write_example(&def_dir)?;
    let def = net.publish(&def_dir).await?;
    let id = def.id;
    step(
        2,
        TOTAL,
        "author",
        &format!(
            "published wordfreq 1.0.0 as {id}; the identity is the BLAKE3 of the canonical definition, so changing one byte makes a new, unreviewed identity"
        ),
    );

    // 3. Two reviewers approve it.
    net.approve(id).await?;
    step(
        3,
        TOTAL,
        "reviewers",
        &format!(
            "alice and bob signed approvals of {id} into the log; providers run it only when k=2 reviewers they trust approved it"
        ),
    );

    // 4. Provider nodes, each trusting the log key and the two reviewers.
    net.start_providers(providers, |_| {}).await?;
    step(
        4,
        TOTAL,
        "providers",
        &format!(
            "{} nodes up ({}); each verifies the registry log itself and signs its ads and receipts with its own peer key",
            net.nodes.len(),
            net.nodes
                .iter()
                .map(|n| n.peer_id.to_base58())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );

    // 5. The requestor runs wordfreq on `replicas` providers.
    let input = net.root().join("poem.txt");
    std::fs::write(&input, POEM)?;
    let out = net.root().join("out");
    step(
        5,
        TOTAL,
        "requestor",
        &format!(
            "offering {id} with top=5 on poem.txt to {replicas} distinct provider(s); they fetch the bundle from the registry and the input from us by BLAKE3"
        ),
    );
    let result = requestor::run::run(RunOptions {
        definition: id.to_string(),
        inputs: vec![input],
        params: [("top".to_string(), "5".to_string())].into_iter().collect(),
        output: Some(out.clone()),
        replicas,
        bootstrap: net.addrs.clone(),
        wait_ads: Duration::from_secs(5),
        timeout: Duration::from_secs(60),
        progress: true,
        ..RunOptions::default()
    })
    .await;
    let code = match result {
        Ok(report) => {
            step(
                6,
                TOTAL,
                "verified",
                &format!(
                    "every output file's BLAKE3, the output digest {} recomputed locally, and each receipt's signature by the provider that ran it{}",
                    report.replicas[0].outputs,
                    if report.replicas.len() > 1 {
                        format!("; all {} replicas agree", report.replicas.len())
                    } else {
                        String::new()
                    }
                ),
            );
            let first = &report.replicas[0];
            let receipt =
                std::fs::read_to_string(first.dir.join("receipt.json")).unwrap_or_default();
            println!("\nreceipt from {}:\n{receipt}\n", first.provider);
            let freq =
                std::fs::read_to_string(first.dir.join("outputs/freq.tsv")).unwrap_or_default();
            step(7, TOTAL, "result", "outputs/freq.tsv (count, word):");
            print!("{freq}");
            requestor::EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    };
    if let Some(kept) = net.stop(a.keep).await {
        println!("\nkept the demo directory: {}", kept.display());
    }
    Ok(code)
}
