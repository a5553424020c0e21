//! The task-defs CLI contract: outputs and exit codes that other tools script against.

use std::process::{Command, Output};

use crate::harness::{Dir, EXAMPLES};

fn task_defs(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_task-defs"))
        .args(args)
        .output()
        .unwrap()
}

macro_rules! run {
    ($($a:expr),* $(,)?) => { task_defs(&[$(std::ffi::OsStr::new(&$a)),*]) };
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn hash_prints_only_the_identity() {
    let d = Dir::wasm();
    let o = run!("hash", d.def());
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), format!("{}\n", d.id()));
    assert!(o.stderr.is_empty());
}

#[test]
fn check_succeeds_on_every_example_and_shows_the_footprint() {
    for name in ["sha256sum", "wordfreq", "nbody"] {
        let o = run!("check", format!("{EXAMPLES}/{name}"));
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let s = stdout(&o);
        assert!(
            s.contains("footprint   args, filesystem, process-exit"),
            "{s}"
        );
        assert!(
            s.contains("wasi_snapshot_preview1::path_open -> filesystem"),
            "{s}"
        );
        let j = run!("check", "--json", format!("{EXAMPLES}/{name}"));
        let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
        assert_eq!(v["valid"], true);
        assert_eq!(v["name"], name);
        assert_eq!(v["footprint"]["command"], true);
        assert!(
            v["footprint"]["imports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["name"] == "fd_write")
        );
    }
}

#[test]
fn check_exits_1_with_every_reason() {
    let d = Dir::wasm();
    d.edit("name = \"noop\"", "name = \"Bad Name\"");
    d.edit("memory = \"1MiB\"", "memory = \"8GiB\"");
    let o = run!("check", d.def());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(
        err.starts_with("error: invalid definition (2 problems)"),
        "{err}"
    );
    assert!(
        err.contains("taskdef.toml:2: name: \"Bad Name\" is not a valid name"),
        "{err}"
    );
    assert!(err.contains("limits.memory: 8GiB is out of range"), "{err}");
    let j = run!("check", "--json", d.def());
    assert_eq!(j.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["problems"].as_array().unwrap().len(), 2);
    assert_eq!(v["problems"][0]["rule"], "value");
}

#[test]
fn pack_unpack_and_hash_agree() {
    let d = Dir::wasm();
    let bundle = d.tmp.path().join("noop.tar");
    let o = run!("pack", d.def(), "-o", bundle);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(stdout(&o), format!("{}\n", d.id()));
    assert_eq!(stdout(&run!("hash", bundle)), format!("{}\n", d.id()));
    assert_eq!(run!("check", bundle).status.code(), Some(0));
    let out = d.tmp.path().join("unpacked");
    let o = run!("unpack", bundle, "-o", out, "--expect", d.id());
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(stdout(&run!("hash", out)), format!("{}\n", d.id()));
    // Expecting another identity is refused, and nothing is written.
    let other = d.tmp.path().join("other");
    let wrong = format!("blake3:{}", "0".repeat(64));
    let o = run!("unpack", bundle, "-o", other, "--expect", wrong);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("identity mismatch"));
    assert!(!other.exists());
}

#[test]
fn new_scaffolds_a_valid_definition() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("My Task");
    let o = run!("new", dir, "--wasm", format!("{EXAMPLES}/nbody/nbody.wasm"));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let c = run!("check", dir);
    assert_eq!(
        c.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&c.stderr)
    );
    assert!(stdout(&c).starts_with("my-task 0.1.0"));
    let ddir = tmp.path().join("dock");
    let img = format!("busybox@sha256:{}", "ab".repeat(32));
    let o = run!("new", ddir, "--docker", img, "--entrypoint", "/bin/true");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(run!("check", ddir).status.code(), Some(0));
    // A tag is refused even when scaffolding.
    let o = run!("new", tmp.path().join("t"), "--docker", "busybox:latest");
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not pinned by digest"));
    // Scaffolding over a non-empty directory is refused.
    assert_eq!(
        run!("new", dir, "--wasm", format!("{EXAMPLES}/nbody/nbody.wasm"))
            .status
            .code(),
        Some(3)
    );
}

#[test]
fn new_passes_no_argument_the_program_did_not_ask_for() {
    // An injected `args = ["{mode}"]` made working programs fail: the scaffold runs the
    // program bare, and its param example stays a comment that is valid once uncommented.
    let tmp = tempfile::tempdir().unwrap();
    let wasm = tmp.path().join("w");
    let img = format!("busybox@sha256:{}", "ab".repeat(32));
    assert_eq!(
        run!(
            "new",
            wasm,
            "--wasm",
            format!("{EXAMPLES}/nbody/nbody.wasm")
        )
        .status
        .code(),
        Some(0)
    );
    let dock = tmp.path().join("d");
    assert_eq!(
        run!("new", dock, "--docker", img, "--entrypoint", "/bin/true")
            .status
            .code(),
        Some(0)
    );
    for dir in [&wasm, &dock] {
        let def = task_defs::Definition::load(dir).unwrap();
        assert!(def.manifest.runtime.args.is_empty(), "{dir:?}");
        assert!(def.manifest.params.is_empty(), "{dir:?}");
        let text = std::fs::read_to_string(dir.join("taskdef.toml")).unwrap();
        assert!(text.contains("args = []\n"), "{text}");
        // Uncommenting the example gives a definition that passes the param on.
        let uncommented = text
            .replace("# e.g. args = [", "args = [")
            .replace("args = []\n", "")
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|r| {
                        r.starts_with("[params")
                            || r.starts_with("type =")
                            || r.starts_with("allowed =")
                            || r.starts_with("default =")
                    })
                    .unwrap_or(l)
            })
            .collect::<Vec<_>>()
            .join("\n");
        let uncommented = uncommented.replace(" with the [params.mode] below.", "");
        std::fs::write(dir.join("taskdef.toml"), uncommented).unwrap();
        let def = task_defs::Definition::load(dir)
            .unwrap_or_else(|e| panic!("{e}: {:?}", e.diagnostics()));
        assert_eq!(def.manifest.runtime.args, ["--mode", "{mode}"]);
        assert!(def.manifest.params.contains_key("mode"));
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run!("frobnicate").status.code(), Some(2));
    assert_eq!(run!("new", "x").status.code(), Some(2));
    assert_eq!(
        run!("unpack", "x", "-o", "y", "--expect", "sha256:00")
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn missing_paths_exit_3() {
    let o = run!("hash", "/nonexistent/def");
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("error: /nonexistent/def:"));
}
