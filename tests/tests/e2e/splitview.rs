//! A registry that shows different histories to different providers is caught: two
//! `task-defs serve` processes share one log key and origin (one data dir copied) but grow
//! different entries, each provider trusts one, and the checkpoints they gossip raise a
//! split-view alarm (log line, evidence file, `provider doctor` failure, offers refused).
//! The honest case too: a newer checkpoint of the same history, gossiped by a peer, is
//! verified, shown on `/metrics` and makes the node sync.

use std::path::{Path, PathBuf};
use std::process::Command;

use pinfold_e2e::{
    ProviderProcess, RegistryProcess, Scratch, bin, example, free_port, keygen, ok_stdout,
    provider_toml, run,
};
use pinfold_test_support::{copy_tree, wait_until};

use crate::http::{get, sample};

fn publish(url: &str, author: &Path, dir: &Path) -> String {
    let out = ok_stdout(&run(
        "task-defs",
        &[
            &"publish",
            &dir,
            &"--registry",
            &url,
            &"--key",
            &author,
            &"--json",
        ],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["id"].as_str().unwrap().to_string()
}

fn approve(url: &str, id: &str, reviewer: &Path) {
    ok_stdout(&run(
        "task-defs",
        &[
            &"review",
            &"approve",
            &id,
            &"--registry",
            &url,
            &"--key",
            &reviewer,
        ],
    ));
}

fn alarms(node: &ProviderProcess) -> Vec<PathBuf> {
    std::fs::read_dir(node.dir.join("data/alarms"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("split-view-"))
        })
        .collect()
}

/// `provider doctor --config NODE/provider.toml --json`: the `registry-split-view` check.
fn doctor_split_view(node: &ProviderProcess) -> serde_json::Value {
    let o = run(
        "provider",
        &[
            &"doctor",
            &"--json",
            &"--config",
            &node.dir.join("provider.toml"),
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor printed {:?} ({e})",
            String::from_utf8_lossy(&o.stdout)
        )
    });
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "registry-split-view")
        .cloned()
        .unwrap_or_else(|| panic!("no registry-split-view check in {v}"))
}

#[test]
fn a_registry_showing_two_histories_raises_a_split_view_alarm() {
    let s = Scratch::new();
    let (author, _) = keygen(&s, "author");
    let r1 = keygen(&s, "r1");
    let r2 = keygen(&s, "r2");
    let reviewer_args = ["--reviewer", &r1.1, "--reviewer", &r2.1, "--threshold", "2"];

    // A shared history: wordfreq published and approved (3 entries).
    let wordfreq = {
        let reg = RegistryProcess::start(&s.path("reg1"), &reviewer_args);
        let id = publish(&reg.url, &author, &example("wordfreq"));
        approve(&reg.url, &id, &r1.0);
        approve(&reg.url, &id, &r2.0);
        reg.kill();
        id
    };
    // The same log (key, origin, entries) in a second data dir; from here on they differ.
    copy_tree(&s.path("reg1"), &s.path("reg2"));
    let reg1 = RegistryProcess::start(&s.path("reg1"), &reviewer_args);
    let reg2 = RegistryProcess::start(&s.path("reg2"), &reviewer_args);
    assert_eq!(reg1.log_key(), reg2.log_key());
    publish(&reg1.url, &author, &example("sha256sum"));
    let nbody = publish(&reg2.url, &author, &example("nbody"));
    approve(&reg2.url, &nbody, &r1.0);

    let toml = |url: &str| provider_toml(url, &reg1.log_key(), &[&r1.1, &r2.1], 2, "");
    let a = ProviderProcess::start(&s.path("a"), Some(&toml(&reg1.url)), &[], &[]);
    // Before any peer gossips, the node's own view is fine.
    assert_eq!(doctor_split_view(&a)["status"], "pass");
    let b = ProviderProcess::start(
        &s.path("b"),
        Some(&toml(&reg2.url)),
        &["--bootstrap", a.addr()],
        &[],
    );

    // A holds size 4 and B size 5 of two histories: A's registry cannot prove 4 → 5 and
    // B's proof from 4 does not reach A's root, so both raise the alarm.
    assert!(
        wait_until(30, || !alarms(&a).is_empty() && !alarms(&b).is_empty()),
        "no split-view alarm: a {:?} b {:?}\na log:\n{}\nb log:\n{}",
        alarms(&a),
        alarms(&b),
        a.log(),
        b.log()
    );
    let file = alarms(&a).remove(0);
    let evidence: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(evidence["kind"], "split-view");
    assert_eq!(evidence["peer"], b.peer.as_str(), "{evidence}");
    assert_eq!(evidence["local"]["size"], 4, "{evidence}");
    assert_eq!(evidence["gossiped"]["size"], 5, "{evidence}");
    for side in ["local", "gossiped"] {
        assert!(
            evidence[side]["note"]
                .as_str()
                .is_some_and(|n| n.contains("\n5\n") || n.contains("\n4\n")),
            "{side} note missing: {evidence}"
        );
    }
    let log = a.log();
    assert!(
        log.contains("split view") && log.contains(&b.peer),
        "no alarm line in a's log:\n{log}"
    );

    // The doctor fails the check, naming the evidence and the fix.
    let check = doctor_split_view(&a);
    assert_eq!(check["status"], "fail", "{check}");
    let path = file.display().to_string();
    assert!(check["seen"].as_str().unwrap().contains(&path), "{check}");
    assert!(
        check["fix"]
            .as_str()
            .unwrap()
            .contains(&format!("delete {path}")),
        "{check}"
    );

    // Offers are refused, even for a definition both histories approve.
    let o = Command::new(bin("requestor"))
        .args([
            "run",
            &wordfreq,
            "--json",
            "--wait",
            "10",
            "--timeout",
            "60",
        ])
        .args(["--bootstrap", a.addr()])
        .arg("--output")
        .arg(s.path("out"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("requestor printed {text:?} ({e})"));
    assert_eq!(o.status.code(), Some(3), "{v}");
    assert_eq!(
        v["refusals"][0]["reason"], "provider's registry view is stale",
        "{v}"
    );

    // The operator looked: deleting the file lifts the alarm.
    std::fs::remove_file(&file).unwrap();
    assert_eq!(doctor_split_view(&a)["status"], "pass");
}

/// The value of the unlabelled sample `name` on the node's `/metrics` at `port`.
fn metric(port: u16, name: &str) -> Option<f64> {
    sample(&get(&format!("http://127.0.0.1:{port}/metrics")).1, name)
}

#[test]
fn a_newer_consistent_checkpoint_gossiped_by_a_peer_is_counted_and_makes_the_node_sync() {
    let s = Scratch::new();
    let (author, _) = keygen(&s, "author");
    let r1 = keygen(&s, "r1");
    let r2 = keygen(&s, "r2");
    let reg = RegistryProcess::start(
        &s.path("reg"),
        &["--reviewer", &r1.1, "--reviewer", &r2.1, "--threshold", "2"],
    );
    let wordfreq = publish(&reg.url, &author, &example("wordfreq"));
    approve(&reg.url, &wordfreq, &r1.0);
    approve(&reg.url, &wordfreq, &r2.0);

    // A syncs once at start and then, with its interval an hour away, only when gossip tells
    // it the log grew; B syncs at every ad tick (2 s) and gossips what it verified.
    let port = free_port();
    let slow = format!("sync_interval_ms = \"1h\"\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let a = ProviderProcess::start(
        &s.path("a"),
        Some(&provider_toml(
            &reg.url,
            &reg.log_key(),
            &[&r1.1, &r2.1],
            2,
            &slow,
        )),
        &[],
        &[],
    );
    let b = ProviderProcess::start(
        &s.path("b"),
        Some(&provider_toml(
            &reg.url,
            &reg.log_key(),
            &[&r1.1, &r2.1],
            2,
            "",
        )),
        &["--bootstrap", a.addr()],
        &[],
    );
    let gossiped = || metric(port, "pinfold_registry_gossiped_tree_size");
    let log_size = || metric(port, "pinfold_registry_log_size");

    // B's checkpoint is A's own: one history, counted at size 3.
    assert!(
        wait_until(30, || gossiped() == Some(3.0)),
        "gossiped tree size {:?}\na log:\n{}\nb log:\n{}",
        gossiped(),
        a.log(),
        b.log()
    );
    assert_eq!(log_size(), Some(3.0));

    // The log grows; B syncs and gossips size 4, the registry proves 3 -> 4 to A.
    publish(&reg.url, &author, &example("sha256sum"));
    assert!(
        wait_until(30, || gossiped() == Some(4.0)),
        "gossiped tree size {:?}, log size {:?}\na log:\n{}\nb log:\n{}",
        gossiped(),
        log_size(),
        a.log(),
        b.log()
    );
    assert!(
        metric(port, "pinfold_registry_gossiped_checkpoints_total").is_some_and(|n| n >= 2.0),
        "notes received: {:?}",
        metric(port, "pinfold_registry_gossiped_checkpoints_total")
    );
    // And A syncs at its next ad tick instead of in an hour.
    assert!(
        wait_until(30, || log_size() == Some(4.0)),
        "log size {:?}\na log:\n{}",
        log_size(),
        a.log()
    );
    assert!(alarms(&a).is_empty() && alarms(&b).is_empty());
}
