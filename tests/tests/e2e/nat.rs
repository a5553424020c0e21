//! Beyond loopback: every node in its own network namespace, providers and the requestor
//! behind iptables MASQUERADE routers, reaching each other through a public relay and,
//! where the NAT allows it, a hole punch (DCUtR).
//!
//! The topology, built by the test and torn down with it (only addresses it made itself):
//!
//! ```text
//!   pub  (10.61.0.1: registry, relay node)     the "internet"; forwards between routers
//!    ├─ 10.61.1.0/24 ─ r1 (MASQUERADE)              ─ 192.168.1.0/24 ─ h1: provider A
//!    ├─ 10.61.2.0/24 ─ r2 (MASQUERADE --random-fully) ─ 192.168.2.0/24 ─ h2: provider B
//!    └─ 10.61.3.0/24 ─ r3 (MASQUERADE)              ─ 192.168.3.0/24 ─ h3: requestor
//! ```
//!
//! r1 and r3 keep a socket's port (endpoint-independent mapping, as home routers do) and drop
//! unsolicited packets from the WAN, so a QUIC hole punch between A and the requestor works;
//! r2 picks a fresh random port per destination (a symmetric NAT), so B stays reachable only
//! through the relay.

use std::path::Path;
use std::process::Command;

use pinfold_e2e::{
    ProviderProcess, RegistryProcess, Scratch, bin, command_in, example, keygen,
    provider_toml_with_network, publish_in,
};
use pinfold_test_support::wait_until;

/// Runs one set-up command; its stderr on failure.
fn sh(args: &[&str]) -> Result<(), String> {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// The namespaces of one test; deleted (with their veths and rules) when dropped.
struct Topology {
    tag: String,
    made: Vec<String>,
}

impl Topology {
    fn ns(&self, role: &str) -> String {
        format!("pf{role}{}", self.tag)
    }

    /// Builds the topology, or says why the kernel refused namespaces (`Err` only then;
    /// any later failure panics).
    fn build() -> Result<Topology, String> {
        let tag = format!("{}", std::process::id() % 100_000);
        let mut t = Topology {
            tag,
            made: Vec::new(),
        };
        let public = t.ns("pub");
        let _ = sh(&["ip", "netns", "del", &public]);
        sh(&["ip", "netns", "add", &public])?;
        t.made.push(public.clone());
        let run = |args: &[&str]| sh(args).unwrap_or_else(|e| panic!("topology: {e}"));
        run(&["ip", "-n", &public, "link", "set", "lo", "up"]);
        run(&[
            "ip",
            "-n",
            &public,
            "addr",
            "add",
            "10.61.0.1/32",
            "dev",
            "lo",
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            &public,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        for i in 1..=3 {
            let (router, host) = (t.ns(&format!("r{i}")), t.ns(&format!("h{i}")));
            for ns in [&router, &host] {
                let _ = sh(&["ip", "netns", "del", ns]);
                run(&["ip", "netns", "add", ns]);
                t.made.push(ns.clone());
                run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            }
            let (pw, rw) = (format!("pw{i}{}", t.tag), format!("rw{i}{}", t.tag));
            let (rl, hl) = (format!("rl{i}{}", t.tag), format!("hl{i}{}", t.tag));
            run(&[
                "ip", "link", "add", &pw, "type", "veth", "peer", "name", &rw,
            ]);
            run(&["ip", "link", "set", &pw, "netns", &public]);
            run(&["ip", "link", "set", &rw, "netns", &router]);
            run(&[
                "ip", "link", "add", &rl, "type", "veth", "peer", "name", &hl,
            ]);
            run(&["ip", "link", "set", &rl, "netns", &router]);
            run(&["ip", "link", "set", &hl, "netns", &host]);
            let wan = format!("10.61.{i}");
            let lan = format!("192.168.{i}");
            for (ns, dev, addr) in [
                (&public, &pw, format!("{wan}.1/24")),
                (&router, &rw, format!("{wan}.2/24")),
                (&router, &rl, format!("{lan}.1/24")),
                (&host, &hl, format!("{lan}.2/24")),
            ] {
                run(&["ip", "-n", ns, "addr", "add", &addr, "dev", dev]);
                run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            }
            run(&[
                "ip",
                "-n",
                &router,
                "route",
                "add",
                "default",
                "via",
                &format!("{wan}.1"),
            ]);
            run(&[
                "ip",
                "-n",
                &host,
                "route",
                "add",
                "default",
                "via",
                &format!("{lan}.1"),
            ]);
            run(&[
                "ip",
                "netns",
                "exec",
                &router,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ]);
            let mut nat = vec![
                "ip",
                "netns",
                "exec",
                &router,
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                &rw,
                "-j",
                "MASQUERADE",
            ];
            if i == 2 {
                nat.push("--random-fully");
            }
            run(&nat);
            // A home router's firewall: unsolicited packets from the WAN are dropped before
            // conntrack confirms an entry for them. Without it, a peer's punch packet that
            // arrives first leaves an entry that makes the router remap the host's own
            // outgoing port, and no hole punch could work anywhere.
            run(&[
                "ip",
                "netns",
                "exec",
                &router,
                "iptables",
                "-A",
                "INPUT",
                "-i",
                &rw,
                "-m",
                "conntrack",
                "--ctstate",
                "NEW",
                "-j",
                "DROP",
            ]);
        }
        Ok(t)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in &self.made {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
    }
}

/// Runs `task-defs ARGS` inside `ns` (where the registry is reachable); its stdout.
fn task_defs_in(ns: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let o = command_in(Some(ns), &bin("task-defs"))
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .expect("running task-defs");
    assert!(
        o.status.success(),
        "task-defs failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `requestor run` inside `ns` on `provider` only; the parsed `--json` report.
fn request_in(
    ns: &str,
    s: &Scratch,
    def: &str,
    relay: &str,
    provider: &str,
    input: &Path,
) -> serde_json::Value {
    let out = s.path(&format!("out-{}", &provider[provider.len() - 6..]));
    let o = command_in(Some(ns), &bin("requestor"))
        .args(["run", def, "--json", "--wait", "20", "--timeout", "120"])
        .args(["--bootstrap", relay, "--provider", provider])
        .arg("--output")
        .arg(&out)
        .arg("--input")
        .arg(input)
        .env("PINFOLD_REQUESTOR_DIR", s.path("requestor-state"))
        .output()
        .expect("running requestor");
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "requestor printed {text:?} ({e}); stderr {}",
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// `provider status --json` for the node in `dir`, run inside `ns`.
fn status_in(ns: &str, dir: &Path) -> serde_json::Value {
    let o = command_in(Some(ns), &bin("provider"))
        .args(["status", "--json", "--config"])
        .arg(dir.join("provider.toml"))
        .output()
        .expect("running provider status");
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "provider status printed {:?} ({e})",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

#[test]
fn providers_behind_nats_run_jobs_directly_after_a_hole_punch_or_through_the_relay() {
    let t = match Topology::build() {
        Ok(t) => t,
        Err(e) if std::env::var_os("PINFOLD_REQUIRE_NETNS").is_none() => {
            eprintln!("SKIPPED nat topology test: the kernel refused network namespaces ({e})");
            return;
        }
        Err(e) => panic!("PINFOLD_REQUIRE_NETNS is set and network namespaces fail: {e}"),
    };
    let (public, h1, h2, h3) = (t.ns("pub"), t.ns("h1"), t.ns("h2"), t.ns("h3"));
    let s = Scratch::new();

    // The registry on the public segment, with two reviewers.
    let (author, _) = keygen(&s, "author");
    let r1 = keygen(&s, "r1");
    let r2 = keygen(&s, "r2");
    let registry = RegistryProcess::start_in(
        Some(&public),
        "0.0.0.0:0",
        &s.path("registry"),
        &["--reviewer", &r1.1, "--reviewer", &r2.1, "--threshold", "2"],
    );
    let port = registry.url.rsplit(':').next().expect("a port");
    let url = format!("http://10.61.0.1:{port}");
    let id = publish_in(Some(&public), &url, &example("wordfreq"), &author);
    for key in [&r1.0, &r2.0] {
        task_defs_in(
            &public,
            &[
                &"review",
                &"approve",
                &id,
                &"--registry",
                &url,
                &"--key",
                key,
            ],
        );
    }
    let toml = |network: &str| {
        provider_toml_with_network(&url, &registry.log_key(), &[&r1.1, &r2.1], 2, network, "")
    };

    // The relay: a public provider node that relays for others.
    let relay = ProviderProcess::start_in(
        Some(&public),
        &s.path("relay"),
        Some(&toml("")),
        &[
            "--listen",
            "0.0.0.0:4001",
            "--relay-server",
            "--external",
            "/ip4/10.61.0.1/udp/4001/quic-v1",
        ],
        &[],
    );
    let relay_addr = format!("/ip4/10.61.0.1/udp/4001/quic-v1/p2p/{}", relay.peer);
    let behind_nat = |ns: &str, name: &str| {
        let p = ProviderProcess::start_in(
            Some(ns),
            &s.path(name),
            Some(&toml("")),
            &[
                "--listen",
                "0.0.0.0:0",
                "--relay",
                &relay_addr,
                "--bootstrap",
                &relay_addr,
            ],
            &[],
        );
        assert!(
            p.relayed.iter().any(|a| a.contains("/p2p-circuit/")),
            "{name} printed no relayed address before ready: {:?}\n{}",
            p.relayed,
            p.log()
        );
        p
    };
    let a = behind_nat(&h1, "a");
    let b = behind_nat(&h2, "b");

    // What `provider status` shows: the NATed nodes hold a relay reservation, and the
    // relay's AutoNAT v2 dial-back to the address it observed fails, so they learn they
    // are private (never public); the relay is public at its configured address.
    for (ns, p) in [(&h1, &a), (&h2, &b)] {
        assert!(
            wait_until(30, || status_in(ns, &p.dir)["reachability"]["status"]
                == "private"),
            "{} never found itself private: {}\n{}",
            p.peer,
            status_in(ns, &p.dir),
            p.log()
        );
        let st = status_in(ns, &p.dir);
        assert_eq!(st["running"], true, "{st}");
        assert!(
            st["reachability"]["relayed"]
                .as_array()
                .is_some_and(|r| !r.is_empty()),
            "{st}"
        );
        assert!(
            st["reachability"]["public"]
                .as_array()
                .is_some_and(Vec::is_empty),
            "{st}"
        );
    }
    assert_eq!(
        status_in(&public, &relay.dir)["reachability"]["status"],
        "public"
    );

    let corpus = s.path("corpus.txt");
    std::fs::write(&corpus, "the cat and the hat and the bat\nthe end\n").unwrap();

    // A sits behind a port-preserving NAT, as the requestor does: a hole punch works and the
    // job's connection ends up direct.
    let ra = request_in(&h3, &s, &id, &relay_addr, &a.peer, &corpus);
    assert_eq!(ra["ok"], true, "{ra}");
    let rep = &ra["report"]["replicas"][0];
    assert_eq!(rep["provider"], a.peer.as_str(), "{ra}");
    // The only way to a direct connection: neither side can be dialled from outside.
    assert_eq!(rep["route"], "direct", "{ra}\n{}", a.log());

    // B sits behind a symmetric NAT: no hole punch can work, the relay carries the job.
    let rb = request_in(&h3, &s, &id, &relay_addr, &b.peer, &corpus);
    assert_eq!(rb["ok"], true, "{rb}");
    let rep = &rb["report"]["replicas"][0];
    assert_eq!(rep["provider"], b.peer.as_str(), "{rb}");
    assert_eq!(rep["route"], "relayed", "{rb}\n{}", b.log());
    assert_eq!(
        ra["report"]["replicas"][0]["outputs"], rep["outputs"],
        "both providers computed the same outputs"
    );
    drop((a, b, relay, registry));
    drop(t);
}
