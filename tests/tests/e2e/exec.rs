//! A bundle packed by `task-defs` runs under `provider exec`, deterministically across processes.

use std::collections::BTreeMap;

use pinfold_e2e::{Scratch, example, ok_stdout, run};

/// What wordfreq must print for `--case fold`: an independent Rust reimplementation.
fn reference_top(text: &str, top: usize) -> String {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for w in text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
    {
        *counts.entry(w.to_ascii_lowercase()).or_default() += 1;
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter()
        .take(top)
        .map(|(w, c)| format!("{c}\t{w}\n"))
        .collect()
}

#[test]
fn packed_wordfreq_runs_under_provider_exec_with_identical_digests() {
    let s = Scratch::new();
    let bundle = s.path("wordfreq.tar");
    let id = ok_stdout(&run(
        "task-defs",
        &[&"pack", &example("wordfreq"), &"-o", &bundle],
    ));
    let input = s.path("corpus.txt");
    let text = "The cat and the hat. THE END; the cat's hat isn't a cat!\n".repeat(50);
    std::fs::write(&input, &text).unwrap();

    let mut digests = Vec::new();
    for (i, cache) in ["cold", "cold2", "cold2"].iter().enumerate() {
        let out = s.path(&format!("out{i}"));
        let o = std::process::Command::new(pinfold_e2e::bin("provider"))
            .env("PINFOLD_CACHE_DIR", s.path(cache))
            .args([
                "exec",
                "--json",
                "--allow-unreviewed",
                "--param",
                "top=4",
                "--input",
            ])
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .arg(&bundle)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&ok_stdout(&o)).unwrap();
        assert_eq!(v["status"], "succeeded", "{v}");
        assert_eq!(
            std::fs::read_to_string(out.join("freq.tsv")).unwrap(),
            reference_top(&text, 4),
            "wordfreq output differs from the reference"
        );
        digests.push(v["outputs"].as_str().unwrap().to_string());
    }
    // Cold cache, second cold cache, then warm: the same task gives the same digest.
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    assert!(id.starts_with("blake3:"));
}

#[test]
fn provider_refuses_to_run_unreviewed_definitions_by_default() {
    let s = Scratch::new();
    let o = std::process::Command::new(pinfold_e2e::bin("provider"))
        .env("PINFOLD_CACHE_DIR", s.path("cache"))
        .args(["exec"])
        .arg(example("nbody"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unreviewed"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
