//! The registry workflow through the real binaries: keygen, serve, publish, review, status,
//! `provider exec --registry`. Durability of acknowledged writes across SIGKILL is in
//! `faults.rs`.

use std::path::Path;
use std::process::{Command, Output};

use pinfold_e2e::{RegistryProcess, Scratch, WitnessProcess, bin, example, keygen, ok_stdout, run};
use pinfold_tlog::SecretKey;

fn status_json(url: &str, log_key: &str, reviewers: &[&str], id: &str) -> serde_json::Value {
    let mut args: Vec<String> = vec![
        "status".into(),
        id.into(),
        "--registry".into(),
        url.into(),
        "--log-key".into(),
        log_key.into(),
        "--threshold".into(),
        "2".into(),
        "--json".into(),
    ];
    for r in reviewers {
        args.push("--reviewer".into());
        args.push(r.to_string());
    }
    let o = Command::new(bin("task-defs")).args(&args).output().unwrap();
    serde_json::from_str(&ok_stdout(&o)).unwrap()
}

fn provider_exec(
    s: &Scratch,
    url: &str,
    log_key: &str,
    reviewers: &[&str],
    def: &Path,
    out: &str,
) -> Output {
    let input = s.path("corpus.txt");
    std::fs::write(&input, "the cat and the hat and the bat\n").unwrap();
    let mut cmd = Command::new(bin("provider"));
    cmd.env("PINFOLD_CACHE_DIR", s.path("cache"))
        .args(["exec", "--json", "--registry", url, "--log-key", log_key])
        .args(["--threshold", "2", "--param", "top=2", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(s.path(out));
    for r in reviewers {
        cmd.args(["--reviewer", r]);
    }
    cmd.arg(def).output().unwrap()
}

fn review(verb: &str, id: &str, url: &str, key: &Path, reason: Option<&str>) -> Output {
    let mut cmd = Command::new(bin("task-defs"));
    cmd.args(["review", verb, id, "--registry", url, "--key"])
        .arg(key);
    if let Some(r) = reason {
        cmd.args(["--reason", r]);
    }
    cmd.output().unwrap()
}

#[test]
fn publish_review_and_provider_exec_through_the_cli() {
    let s = Scratch::new();
    let (author, _) = keygen(&s, "author");
    let (k1, p1) = keygen(&s, "r1");
    let (k2, p2) = keygen(&s, "r2");
    let (k3, p3) = keygen(&s, "r3");
    let (outsider, _) = keygen(&s, "outsider");
    // keygen refuses to overwrite a key.
    let again = run("task-defs", &[&"keygen", &"-o", &k1]);
    assert_eq!(again.status.code(), Some(3));

    let data = s.path("registry");
    let alice = format!("alice={p1}");
    let server = RegistryProcess::start(
        &data,
        &[
            "--reviewer",
            &alice,
            "--reviewer",
            &p2,
            "--reviewer",
            &p3,
            "--threshold",
            "2",
        ],
    );
    let url = server.url.clone();
    let log_key = server.log_key();
    let roster = [p1.as_str(), p2.as_str(), p3.as_str()];

    let published = ok_stdout(&run(
        "task-defs",
        &[
            &"publish",
            &example("wordfreq"),
            &"--registry",
            &url,
            &"--key",
            &author,
            &"--json",
        ],
    ));
    let v: serde_json::Value = serde_json::from_str(&published).unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["created"], true);
    let hash = ok_stdout(&run("task-defs", &[&"hash", &example("wordfreq")]));
    assert_eq!(hash.trim_end(), id);

    let listed = ok_stdout(&run(
        "task-defs",
        &[&"review", &"list", &"--registry", &url],
    ));
    assert!(
        listed.contains(&id) && listed.contains("pending"),
        "{listed}"
    );
    let shown = ok_stdout(&run(
        "task-defs",
        &[&"review", &"show", &id, &"--registry", &url],
    ));
    assert!(
        shown.contains("wordfreq 1.0.0") && shown.contains("fd_write"),
        "{shown}"
    );

    assert_eq!(
        status_json(&url, &log_key, &roster, &id)["status"],
        "pending"
    );
    let unverified = ok_stdout(&run("task-defs", &[&"status", &id, &"--registry", &url]));
    assert!(unverified.contains("unverified"), "{unverified}");

    ok_stdout(&review("approve", &id, &url, &k1, None));
    assert_eq!(
        status_json(&url, &log_key, &roster, &id)["status"],
        "pending"
    );
    let o = provider_exec(&s, &url, &log_key, &roster, &example("wordfreq"), "out0");
    assert_eq!(
        o.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let outcome: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(outcome["status"], "rejected");
    assert!(outcome.to_string().contains("pending"), "{outcome}");

    // Refusals: a rejection without a reason (usage), a key not on the roster (refused).
    assert_eq!(
        review("reject", &id, &url, &k2, None).status.code(),
        Some(2)
    );
    let o = review("approve", &id, &url, &outsider, None);
    assert_eq!(o.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&o.stderr).contains("roster"));

    ok_stdout(&review("approve", &id, &url, &k2, None));
    let st = status_json(&url, &log_key, &roster, &id);
    assert_eq!(st["status"], "approved");
    assert_eq!(st["verified"], true);
    // A client trusting only r1 and r3 with k=2 does not count r2.
    let narrow = status_json(&url, &log_key, &[&p1, &p3], &id);
    assert_eq!(narrow["status"], "pending");

    let o = provider_exec(&s, &url, &log_key, &roster, &example("wordfreq"), "out1");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(s.path("out1/freq.tsv")).unwrap(),
        "3\tthe\n2\tand\n"
    );

    ok_stdout(&review("revoke", &id, &url, &k3, Some("leaks input names")));
    assert_eq!(
        status_json(&url, &log_key, &roster, &id)["status"],
        "revoked"
    );
    let o = provider_exec(&s, &url, &log_key, &roster, &example("wordfreq"), "out2");
    assert_eq!(o.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&o.stdout).contains("revoked"));

    // A provider pointed at a registry with a different log key refuses to run anything.
    let wrong = SecretKey::from_seed([9; 32]).public_key().to_string();
    let o = provider_exec(&s, &url, &wrong, &roster, &example("wordfreq"), "out3");
    assert_eq!(
        o.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new(bin("task-defs"))
        .args(["status", &id, "--registry", &url, "--log-key", &wrong])
        .args(["--reviewer", &p1, "--threshold", "1"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `task-defs status` with a witness policy, as JSON; the exit code and the parsed output.
fn witnessed_status(
    url: &str,
    log_key: &str,
    reviewer: &str,
    witnesses: &[&str],
    k: usize,
    id: &str,
    max_age: u64,
) -> (Option<i32>, serde_json::Value) {
    let mut cmd = Command::new(bin("task-defs"));
    cmd.args(["status", id, "--registry", url, "--log-key", log_key])
        .args(["--reviewer", reviewer, "--threshold", "1", "--json"])
        .args(["--witness-threshold", &k.to_string()])
        .args(["--max-age", &max_age.to_string()]);
    for w in witnesses {
        cmd.args(["--witness", w]);
    }
    let o = cmd.output().unwrap();
    let v = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (o.status.code(), v)
}

/// Polls `witnessed_status` until `until` holds (at most 30 s).
fn wait_for_status(
    args: (&str, &str, &str, &[&str], usize, &str),
    until: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let (url, log_key, reviewer, witnesses, k, id) = args;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (code, v) = witnessed_status(url, log_key, reviewer, witnesses, k, id, 300);
        if code == Some(0) && until(&v) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{code:?} {v}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn three_witness_processes_cosign_and_status_and_provider_exec_require_two_of_three() {
    let s = Scratch::new();
    let (author, _) = keygen(&s, "author");
    let (k1, p1) = keygen(&s, "r1");
    let data = s.path("registry");
    // First start: the log key exists; `serve` prints the log's C2SP verifier key, and the
    // API gives the same one.
    let first = RegistryProcess::start(&data, &["--reviewer", &p1]);
    let log_vkey = first
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("log vkey "))
        .unwrap_or_else(|| panic!("no log vkey in {:?}", first.banner))
        .to_string();
    let info = pinfold_registry::Client::new(&first.url).info().unwrap();
    assert_eq!(info.log_vkey, log_vkey);
    assert!(log_vkey.starts_with("pinfold-registry+"), "{log_vkey}");
    first.kill();

    let w: Vec<WitnessProcess> = (1..=3)
        .map(|n| {
            WitnessProcess::start(
                &s.path(&format!("w{n}")),
                &format!("w{n}.pinfold.test/witness"),
                &log_vkey,
            )
        })
        .collect();
    let witness_args: Vec<String> = w.iter().map(|w| format!("{}={}", w.vkey, w.url)).collect();
    let mut args = vec!["--reviewer", &p1];
    for a in &witness_args {
        args.extend(["--witness", a.as_str()]);
    }
    let server = RegistryProcess::start(&data, &args);
    assert_eq!(
        server
            .banner
            .iter()
            .filter(|l| l.starts_with("witness "))
            .count(),
        3,
        "{:?}",
        server.banner
    );
    let (url, log_key) = (server.url.clone(), server.log_key());
    let published = ok_stdout(&run(
        "task-defs",
        &[
            &"publish",
            &example("wordfreq"),
            &"--registry",
            &url,
            &"--key",
            &author,
            &"--json",
        ],
    ));
    let id = serde_json::from_str::<serde_json::Value>(&published).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    ok_stdout(&review("approve", &id, &url, &k1, None));
    let owned: Vec<String> = w.iter().map(|w| w.vkey.clone()).collect();
    let vkeys: Vec<&str> = owned.iter().map(String::as_str).collect();
    let v = wait_for_status((&url, &log_key, &p1, &vkeys, 2, &id), |v| {
        v["status"] == "approved" && v["cosigned_by"].as_array().is_some_and(|a| a.len() == 3)
    });
    assert_eq!(v["witness_threshold"], 2);
    assert_eq!(v["tree_size"], 2);

    // provider exec with the same policy runs it.
    let exec = |witnesses: &[&str], k: usize, out: &str, max_age: u64| {
        let input = s.path("corpus.txt");
        std::fs::write(&input, "the cat and the hat\n").unwrap();
        let mut cmd = Command::new(bin("provider"));
        cmd.env("PINFOLD_CACHE_DIR", s.path("cache"))
            .args(["exec", "--json", "--registry", &url, "--log-key", &log_key])
            .args(["--reviewer", &p1, "--threshold", "1", "--param", "top=2"])
            .args(["--witness-threshold", &k.to_string()])
            .args(["--max-age", &max_age.to_string(), "--input"])
            .arg(&input)
            .arg("--output")
            .arg(s.path(out));
        for v in witnesses {
            cmd.args(["--witness", v]);
        }
        cmd.arg(example("wordfreq")).output().unwrap()
    };
    let o = exec(&vkeys, 2, "out0", 300);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Witnesses the registry does not use cosigned nothing: refused, with the reason.
    let strangers: Vec<String> = (0..2u8)
        .map(|n| {
            let k = SecretKey::from_seed([n + 40; 32]);
            pinfold_tlog::Cosigner::new(&format!("stranger{n}.example"), k)
                .unwrap()
                .verifier()
                .to_vkey()
        })
        .collect();
    let strangers: Vec<&str> = strangers.iter().map(String::as_str).collect();
    let o = exec(&strangers, 2, "out1", 300);
    assert_eq!(
        o.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let outcome = String::from_utf8_lossy(&o.stdout);
    assert!(
        outcome.contains("cosigned by 0 of the required 2"),
        "{outcome}"
    );

    // Two witnesses go down; a revocation is logged. Witness 3 alone cosigns it: a 1-of-3
    // client sees it, a 2-of-3 client keeps the newest view two witnesses vouched for
    // (still fresh), and refuses once that is older than its maximum age.
    let mut w = w.into_iter();
    let (w1, w2) = (w.next().unwrap(), w.next().unwrap());
    w1.kill();
    w2.kill();
    ok_stdout(&review("revoke", &id, &url, &k1, Some("leaks input names")));
    let v = wait_for_status((&url, &log_key, &p1, &vkeys, 1, &id), |v| {
        v["status"] == "revoked"
    });
    assert_eq!(v["cosigned_by"].as_array().unwrap().len(), 1);
    let (code, v) = witnessed_status(&url, &log_key, &p1, &vkeys, 2, &id, 300);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["tree_size"], 2, "{v}");
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (code, _) = witnessed_status(&url, &log_key, &p1, &vkeys, 2, &id, 1);
    assert_eq!(code, Some(5));
    let o = exec(&vkeys, 2, "out2", 1);
    assert_eq!(
        o.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_provider_node_runs_only_from_checkpoints_its_configured_witnesses_cosigned() {
    use pinfold_e2e::{ProviderProcess, provider_toml};
    let s = Scratch::new();
    let (author, _) = keygen(&s, "author");
    let (k1, p1) = keygen(&s, "r1");
    let data = s.path("registry");
    let first = RegistryProcess::start(&data, &["--reviewer", &p1]);
    let log_vkey = pinfold_registry::Client::new(&first.url)
        .info()
        .unwrap()
        .log_vkey;
    first.kill();
    let w = WitnessProcess::start(&s.path("w"), "w.pinfold.test/witness", &log_vkey);
    let witness = format!("{}={}", w.vkey, w.url);
    let server = RegistryProcess::start(&data, &["--reviewer", &p1, "--witness", &witness]);
    let (url, log_key) = (server.url.clone(), server.log_key());
    let published = ok_stdout(&run(
        "task-defs",
        &[
            &"publish",
            &example("wordfreq"),
            &"--registry",
            &url,
            &"--key",
            &author,
            &"--json",
        ],
    ));
    let id = serde_json::from_str::<serde_json::Value>(&published).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    ok_stdout(&review("approve", &id, &url, &k1, None));
    // Wait until the witness has cosigned the approval.
    wait_for_status((&url, &log_key, &p1, &[&w.vkey], 1, &id), |v| {
        v["status"] == "approved"
    });
    let node = |name: &str, witness_vkey: &str| {
        let toml = provider_toml(
            &url,
            &log_key,
            &[&p1],
            1,
            &format!("witnesses = [{witness_vkey:?}]\nwitness_threshold = 1\n"),
        );
        ProviderProcess::start(&s.path(name), Some(&toml), &[], &[])
    };
    let corpus = s.path("corpus.txt");
    std::fs::write(&corpus, "the cat and the hat\n").unwrap();
    let request = |p: &ProviderProcess, out: &str| {
        let o = Command::new(bin("requestor"))
            .args(["run", &id, "--json", "--wait", "10", "--timeout", "120"])
            .arg("--output")
            .arg(s.path(out))
            .args(["--bootstrap", p.addr(), "--input"])
            .arg(&corpus)
            .output()
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
        (o.status.code(), v)
    };
    // Trusting the registry's witness: the job runs.
    let good = node("good", &w.vkey);
    let (code, v) = request(&good, "out-good");
    assert_eq!(code, Some(0), "{v}");
    // Trusting a witness the registry does not use: nothing is cosigned for it, so the
    // node has no view it may vouch from and refuses.
    let stranger = pinfold_tlog::Cosigner::new("stranger.example", SecretKey::from_seed([44; 32]))
        .unwrap()
        .verifier()
        .to_vkey();
    let strict = node("strict", &stranger);
    let (code, v) = request(&strict, "out-strict");
    assert_eq!(code, Some(3), "{v}");
    assert_eq!(
        v["refusals"][0]["reason"], "provider's registry view is stale",
        "{v}"
    );
    let log = strict.log();
    assert!(
        log.contains("cosigned by 0 of the required 1 trusted witnesses"),
        "{log}"
    );
}
