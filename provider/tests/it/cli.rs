//! The `provider exec` binary end to end on the sha256sum example.

use std::process::Command;

use sha2::Digest;

use crate::harness::{Case, example};

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn provider(case: &Case) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_provider"));
    c.env("PINFOLD_CACHE_DIR", case.path().join("cache"));
    c
}

#[test]
fn exec_sha256sum_json_and_output_copy() {
    let case = Case::new();
    let input = case.path().join("docs");
    std::fs::create_dir_all(input.join("nested")).unwrap();
    std::fs::write(input.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(input.join("nested/b.bin"), [0u8, 1, 2, 255]).unwrap();
    let out = case.path().join("out");
    let r = provider(&case)
        .args(["exec", "--json", "--allow-unreviewed", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&out)
        .arg(example("sha256sum"))
        .output()
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(String::from_utf8_lossy(&r.stderr).contains("warning"));
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["exit_code"], 0);
    for key in ["stdout", "stderr", "outputs", "files", "usage"] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    let expected = format!(
        "{}  docs/a.txt\n{}  docs/nested/b.bin\n",
        sha256_hex(b"alpha\n"),
        sha256_hex(&[0, 1, 2, 255])
    );
    assert_eq!(
        std::fs::read_to_string(out.join("SHA256SUMS")).unwrap(),
        expected
    );
    assert_eq!(v["files"][0]["path"], "SHA256SUMS");
    assert_eq!(
        v["files"][0]["blake3"],
        blake3::hash(expected.as_bytes()).to_hex().as_str()
    );
    assert!(v["outputs"].as_str().unwrap().starts_with("blake3:"));
}

#[test]
fn exec_refuses_unreviewed_definitions_by_default() {
    let case = Case::new();
    let r = provider(&case)
        .arg("exec")
        .arg(example("sha256sum"))
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--allow-unreviewed"));
    assert!(r.stdout.is_empty());
}

/// What is passed as `--input` is the caller's to fix, not a provider failure: a link (given
/// directly or found inside a directory), a socket, a fifo or a missing path is a usage
/// refusal (exit 2) naming the path, nothing is followed or opened, and no run directory
/// is left behind.
#[test]
fn exec_refuses_links_sockets_and_fifos_as_inputs_with_a_usage_error() {
    let case = Case::new();
    let tmp = case.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let dir = case.path().join("in");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("ok.txt"), "fine\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).unwrap();
    let link = case.path().join("link");
    std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
    let fifo = case.path().join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let socket = case.path().join("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    for (input, needle) in [
        (&dir, "symbolic link"),
        (&link, "symbolic link"),
        (&fifo, "not a regular file or directory"),
        (&socket, "not a regular file or directory"),
        (&case.path().join("absent"), "No such file"),
    ] {
        let r = provider(&case)
            .env("TMPDIR", &tmp)
            .args(["exec", "--allow-unreviewed", "--input"])
            .arg(input)
            .arg(example("sha256sum"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{}: {err}", input.display());
        assert!(
            err.contains("--input refused") && err.contains(needle),
            "{}: {err}",
            input.display()
        );
        let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

#[test]
fn exec_status_maps_to_exit_code() {
    let case = Case::new();
    let r = provider(&case)
        .args(["exec", "--allow-unreviewed", "--json", "--param", "steps=0"])
        .arg(example("nbody"))
        .output()
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(7),
        "a param below its minimum is rejected"
    );
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["status"], "rejected");
}
