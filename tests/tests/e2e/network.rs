//! The peer network through the real binaries: `task-defs serve`, `provider run` nodes and
//! `requestor` on loopback. Successful runs match `provider exec`, refusals carry their
//! typed reasons, a killed provider's job is retried elsewhere and marked interrupted,
//! replicas agree and a lying provider is caught.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pinfold_e2e::{ProviderProcess, ReviewedRegistry, Scratch, bin, example, ok_stdout, run};
use pinfold_test_support::wait_until;

/// A registry with two trusted reviewers (k = 2) and the keys to act on it.
struct World {
    s: Scratch,
    reg: ReviewedRegistry,
}

impl std::ops::Deref for World {
    type Target = ReviewedRegistry;
    fn deref(&self) -> &ReviewedRegistry {
        &self.reg
    }
}

impl World {
    fn new() -> World {
        let s = Scratch::new();
        let reg = ReviewedRegistry::start(&s);
        World { s, reg }
    }

    fn toml(&self, extra: &str) -> String {
        self.reg.provider_toml("", extra)
    }

    fn provider(&self, name: &str, extra: &str, env: &[(&str, &str)]) -> ProviderProcess {
        ProviderProcess::start(&self.s.path(name), Some(&self.toml(extra)), &[], env)
    }

    fn corpus(&self) -> PathBuf {
        let p = self.s.path("corpus.txt");
        std::fs::write(&p, "the cat and the hat and the bat\nthe end\n").unwrap();
        p
    }
}

/// `requestor run ... --json` against `providers`; returns the output and parsed JSON.
fn request(
    providers: &[&ProviderProcess],
    def: &str,
    extra: &[&str],
    out: &Path,
    inputs: &[&Path],
) -> (Output, serde_json::Value) {
    let mut cmd = Command::new(bin("requestor"));
    cmd.args(["run", def, "--json", "--wait", "10", "--timeout", "120"])
        .arg("--output")
        .arg(out)
        .args(extra);
    for p in providers {
        cmd.args(["--bootstrap", p.addr()]);
    }
    for i in inputs {
        cmd.arg("--input").arg(i);
    }
    let o = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let v = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "requestor printed {text:?} ({e}); stderr {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o, v)
}

#[test]
fn a_run_through_three_providers_matches_provider_exec_and_verifies_offline() {
    let w = World::new();
    let id = w.publish(&example("wordfreq"));
    w.approve(&id);
    let p1 = w.provider("p1", "", &[]);
    let p2 = w.provider("p2", "", &[]);
    // The third node is set up the way an operator would: `provider init`, then flags.
    let p3_dir = w.s.path("p3");
    let init = ok_stdout(&run("provider", &[&"init", &"--dir", &p3_dir]));
    assert!(init.contains("peer id 12D3"), "{init}");
    assert_eq!(
        run("provider", &[&"init", &"--dir", &p3_dir]).status.code(),
        Some(2),
        "init must not overwrite"
    );
    let log_key = w.server.log_key();
    let p3 = ProviderProcess::start(
        &p3_dir,
        None,
        &[
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
            "--registry",
            &w.server.url,
            "--log-key",
            &log_key,
            "--reviewer",
            &w.reviewers[0].1,
            "--reviewer",
            &w.reviewers[1].1,
            "--threshold",
            "2",
        ],
        &[],
    );
    assert!(p3.addr().starts_with("/ip4/127.0.0.1/tcp/") && p3.addr().ends_with(&p3.peer));
    let corpus = w.corpus();
    let out = w.s.path("out");
    let (o, v) = request(
        &[&p1, &p2, &p3],
        &id,
        &["--param", "top=2"],
        &out,
        &[&corpus],
    );
    assert_eq!(o.status.code(), Some(0), "{v}");
    let digest = v["report"]["replicas"][0]["outputs"]
        .as_str()
        .unwrap()
        .to_string();

    let local = Command::new(bin("provider"))
        .env("PINFOLD_CACHE_DIR", w.s.path("cache"))
        .args([
            "exec",
            "--allow-unreviewed",
            "--json",
            "--param",
            "top=2",
            "--input",
        ])
        .arg(&corpus)
        .arg(example("wordfreq"))
        .output()
        .unwrap();
    let local: serde_json::Value = serde_json::from_str(&ok_stdout(&local)).unwrap();
    assert_eq!(local["outputs"], digest.as_str());
    assert!(out.join("outputs/freq.tsv").is_file());

    // The saved receipt verifies offline, with and without the outputs; a changed output does not.
    let receipt = out.join("receipt.json");
    let ok = run("requestor", &[&"verify", &receipt, &"--outputs", &out]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    std::fs::write(out.join("outputs/freq.tsv"), "forged\t1\n").unwrap();
    let bad = run("requestor", &[&"verify", &receipt, &"--outputs", &out]);
    assert_eq!(bad.status.code(), Some(4));
    let mut r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
    r["body"]["exit_code"] = 1.into();
    std::fs::write(&receipt, r.to_string()).unwrap();
    assert_eq!(
        run("requestor", &[&"verify", &receipt]).status.code(),
        Some(4)
    );

    // The provider that ran it recorded the whole life of the job.
    let ran_on = v["report"]["replicas"][0]["provider"].as_str().unwrap();
    let node = [&p1, &p2, &p3]
        .into_iter()
        .find(|p| p.peer == ran_on)
        .unwrap();
    let jobs: serde_json::Value = serde_json::from_str(&node.jobs_json()).unwrap();
    let job = &jobs.as_array().unwrap()[0];
    assert_eq!(job["state"], "delivered");
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["outputs"], digest.as_str());

    // `requestor providers` sees all three.
    let listed = run(
        "requestor",
        &[
            &"providers",
            &"--json",
            &"--wait",
            &"5",
            &"--bootstrap",
            &p1.addr(),
            &"--bootstrap",
            &p2.addr(),
            &"--bootstrap",
            &p3.addr(),
        ],
    );
    let listed: serde_json::Value = serde_json::from_str(&ok_stdout(&listed)).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");

    // SIGTERM is a clean shutdown.
    let status = p1.terminate(20).expect("provider exits on SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn unapproved_revoked_tampered_and_unlisted_requestors_are_refused_with_reasons() {
    let w = World::new();
    let wordfreq = w.publish(&example("wordfreq"));
    w.approve(&wordfreq);
    let pending = w.publish(&example("sha256sum"));
    w.review("approve", &pending, 0);
    let revoked = w.publish(&example("nbody"));
    w.approve(&revoked);
    w.review("revoke", &revoked, 0);
    let p = w.provider("p", "", &[]);
    let corpus = w.corpus();

    let reason = |v: &serde_json::Value| {
        v["refusals"][0]["reason"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let (o, v) = request(&[&p], &pending, &[], &w.s.path("o1"), &[&corpus]);
    assert_eq!(o.status.code(), Some(3), "{v}");
    assert_eq!(reason(&v), "definition is not approved");
    let (o, v) = request(&[&p], &revoked, &[], &w.s.path("o2"), &[]);
    assert_eq!(o.status.code(), Some(3), "{v}");
    assert_eq!(reason(&v), "definition is revoked");

    // A bundle whose content is not the offered (approved) identity.
    let copy = w.s.path("wordfreq-copy");
    std::fs::create_dir_all(copy.join("src")).unwrap();
    for f in [
        "taskdef.toml",
        "wordfreq.wasm",
        "README.md",
        "src/wordfreq.c",
    ] {
        std::fs::copy(example("wordfreq").join(f), copy.join(f)).unwrap();
    }
    std::fs::write(copy.join("README.md"), "changed after review\n").unwrap();
    let tampered = w.s.path("tampered.bundle");
    ok_stdout(&run("task-defs", &[&"pack", &copy, &"-o", &tampered]));
    let t = tampered.to_str().unwrap();
    let (o, v) = request(
        &[&p],
        &wordfreq,
        &["--unchecked-bundle", t],
        &w.s.path("o3"),
        &[&corpus],
    );
    assert_eq!(o.status.code(), Some(3), "{v}");
    assert!(reason(&v).contains("tampered bundle"), "{v}");

    // A provider that serves only one (other) requestor.
    let other = "12D3KooWFEZAGDe77a1WSGJUcvJnwwQfoZHzwT4v5zXmSCSZknKA";
    let picky = w.provider(
        "picky",
        &format!("[requestors]\nallow = [{other:?}]\n"),
        &[],
    );
    let (o, v) = request(&[&picky], &wordfreq, &[], &w.s.path("o4"), &[&corpus]);
    assert_eq!(o.status.code(), Some(3), "{v}");
    assert_eq!(reason(&v), "requestor is not allowed");

    // The node kept serving throughout: the approved definition still runs, here from a
    // directory the requestor packs and serves itself; the node then holds and advertises it.
    let dir = example("wordfreq");
    let (o, v) = request(
        &[&p],
        dir.to_str().unwrap(),
        &[],
        &w.s.path("o5"),
        &[&corpus],
    );
    assert_eq!(o.status.code(), Some(0), "{v}");
    assert!(p.log().contains("finished"), "{}", p.log());
    let listed = run(
        "requestor",
        &[
            &"providers",
            &"--json",
            &"--wait",
            &"5",
            &"--bootstrap",
            &p.addr(),
        ],
    );
    let listed: serde_json::Value = serde_json::from_str(&ok_stdout(&listed)).unwrap();
    assert_eq!(listed[0]["ad"]["bundles"][0], wordfreq.as_str(), "{listed}");
}

#[test]
fn a_provider_killed_mid_task_is_replaced_and_marks_the_job_interrupted_on_restart() {
    let w = World::new();
    let nbody = w.publish(&example("nbody"));
    w.approve(&nbody);
    let a = w.provider("a", "", &[]);
    let b = w.provider("b", "", &[]);
    let out = w.s.path("out");
    let child = Command::new(bin("requestor"))
        .args(["run", &nbody, "--json", "--wait", "10", "--timeout", "300"])
        .args([
            "--param",
            "steps=20000000",
            "--provider",
            &a.peer,
            "--provider",
            &b.peer,
        ])
        .args(["--bootstrap", a.addr(), "--bootstrap", b.addr()])
        .arg("--output")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_until(60, || a.jobs_json().contains("\"running\"")),
        "the job never started on a: {}",
        a.log()
    );
    let a_dir = a.dir.clone();
    a.kill();
    let o = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(o.status.code(), Some(0), "{v}");
    assert_eq!(v["report"]["replicas"][0]["provider"], b.peer.as_str());
    assert!(
        v["report"]["refusals"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{v}"
    );

    // Restarted, `a` marks the job interrupted and its work dir is empty.
    let a = ProviderProcess::start(&a_dir, None, &[], &[]);
    assert_eq!(a.interrupted.len(), 1, "{:?}", a.interrupted);
    let jobs: serde_json::Value = serde_json::from_str(&a.jobs_json()).unwrap();
    let job = &jobs.as_array().unwrap()[0];
    assert_eq!(job["state"], "interrupted");
    assert_eq!(job["status"], serde_json::Value::Null);
    let left: Vec<_> = std::fs::read_dir(a_dir.join("work")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn replicas_agree_and_a_lying_provider_is_caught_by_disagreement() {
    let w = World::new();
    let id = w.publish(&example("wordfreq"));
    w.approve(&id);
    let p1 = w.provider("p1", "", &[]);
    let p2 = w.provider("p2", "", &[]);
    let p3 = w.provider("p3", "", &[]);
    let corpus = w.corpus();
    let (o, v) = request(
        &[&p1, &p2, &p3],
        &id,
        &["--replicas", "3"],
        &w.s.path("o1"),
        &[&corpus],
    );
    assert_eq!(o.status.code(), Some(0), "{v}");
    let reps = v["report"]["replicas"].as_array().unwrap();
    assert_eq!(reps.len(), 3);
    assert!(reps.iter().all(|r| r["outputs"] == reps[0]["outputs"]));

    let liar = w.provider("liar", "", &[("PINFOLD_TEST_FAULT", "wrong-output")]);
    let (o, v) = request(
        &[&p1, &liar],
        &id,
        &[
            "--replicas",
            "2",
            "--provider",
            &p1.peer,
            "--provider",
            &liar.peer,
        ],
        &w.s.path("o2"),
        &[&corpus],
    );
    assert_eq!(o.status.code(), Some(4), "{v}");
    assert_eq!(v["kind"], "disagreement");
    assert!(v["error"].as_str().unwrap().contains(&liar.peer), "{v}");

    // Garbage on the node's TCP port does not take it down.
    let port: u16 = p1.addr().split('/').nth(4).unwrap().parse().unwrap();
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0xffu8; 70_000][..],
        b"/multistream/1.0.0\n",
    ] {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::Write as _;
            let _ = s.write_all(junk);
        }
    }
    let (o, v) = request(&[&p1], &id, &[], &w.s.path("o3"), &[&corpus]);
    assert_eq!(o.status.code(), Some(0), "{v}");
}

/// Every regular file under `root` whose bytes contain `needle`.
fn files_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file()
                && let Ok(bytes) = std::fs::read(e.path())
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(e.path());
            }
        }
    }
    found
}

/// A definition declaring secret `API_TOKEN` whose guest prints its whole environment with
/// every byte shifted up by one: the requestor can check delivery, yet the plain value is
/// never part of any output the provider keeps.
fn secret_definition(dir: &Path) {
    const WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 4)
  (func (export "_start")
    (local $n i32) (local $i i32)
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (drop (call $get (i32.const 1024) (i32.const 8192)))
    (local.set $n (i32.load (i32.const 4)))
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (i32.store8 (i32.add (i32.const 8192) (local.get $i))
        (i32.add (i32.load8_u (i32.add (i32.const 8192) (local.get $i))) (i32.const 1)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (i32.store (i32.const 16) (i32.const 8192))
    (i32.store (i32.const 20) (local.get $n))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))
"#;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("taskdef.toml"),
        r#"format = 1
name = "secret-env"
version = "1.0.0"
description = "prints its environment, shifted by one"
license = "MIT"

[runtime]
kind = "wasm"
module = "guest.wasm"
args = []

[limits]
memory = "16MiB"
timeout = "10s"
output = "1MiB"

[capabilities]
deterministic = false
secrets = ["API_TOKEN"]
"#,
    )
    .unwrap();
    std::fs::write(dir.join("guest.wasm"), wat::parse_str(WAT).unwrap()).unwrap();
}

#[test]
fn secrets_reach_the_task_and_never_the_providers_disk_or_logs() {
    let w = World::new();
    let def_dir = w.s.path("secret-def");
    secret_definition(&def_dir);
    let id = w.publish(&def_dir);
    w.approve(&id);
    let p1 = w.provider("p1", "", &[]);

    // A long value no file could contain by accident.
    let seed = format!("{:?} {}", std::time::SystemTime::now(), std::process::id());
    let value = format!(
        "pinfold-e2e-secret-{}",
        task_defs::DefinitionId::of_document(seed.as_bytes()).hex()
    );
    let file = w.s.path("token");
    std::fs::write(&file, &value).unwrap();
    let secret_arg = format!("API_TOKEN=@{}", file.display());

    // Undeclared, missing and inline secrets are usage errors at the requestor.
    for (extra, expect) in [
        (
            vec!["--secret", "OTHER=@/dev/null"],
            "declares no such secret",
        ),
        (vec![], "--secret API_TOKEN=@FILE"),
        (vec!["--secret", "API_TOKEN=inline-xyz"], "NAME=@FILE"),
    ] {
        let (o, v) = request(
            &[&p1],
            def_dir.to_str().unwrap(),
            &extra,
            &w.s.path("bad"),
            &[],
        );
        assert_ne!(o.status.code(), Some(0), "{v}");
        assert!(v.to_string().contains(expect), "{expect}: {v}");
        assert!(!v.to_string().contains("inline-xyz"), "{v}");
    }

    // Offered by identity alone, the requestor cannot check; the provider refuses.
    let (o, v) = request(&[&p1], &id, &[], &w.s.path("missing"), &[]);
    assert_ne!(o.status.code(), Some(0), "{v}");
    assert!(v.to_string().contains("was not supplied"), "{v}");

    let out = w.s.path("out");
    let (o, v) = request(&[&p1], &id, &["--secret", &secret_arg], &out, &[]);
    assert_eq!(o.status.code(), Some(0), "{v}");
    let shifted = std::fs::read(out.join("stdout")).unwrap();
    let plain: Vec<u8> = shifted.iter().map(|b| b.wrapping_sub(1)).collect();
    assert_eq!(plain, format!("API_TOKEN={value}\0").into_bytes());
    assert!(!String::from_utf8_lossy(&o.stderr).contains(&value));

    // The provider's data dir (job store, bundles, cache), work dir, config and logs; the
    // registry's data; the requestor's output dir (receipt included): none holds the value.
    let log = p1.log();
    assert!(!log.contains(&value), "secret in the provider log");
    let found = files_containing(&p1.dir, value.as_bytes());
    assert!(
        found.is_empty(),
        "secret on the provider's disk in {found:?}"
    );
    let found = files_containing(&out, value.as_bytes());
    assert!(
        found.is_empty(),
        "secret in the requestor's outputs in {found:?}"
    );
    let jobs = p1.jobs_json();
    assert!(!jobs.contains(&value));
    let receipt = std::fs::read_to_string(out.join("receipt.json")).unwrap();
    assert!(!receipt.contains("API_TOKEN"), "{receipt}");
}
