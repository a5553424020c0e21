//! Per-run secrets in the wasm executor: delivered as environment, checked against the
//! declared names, and never left on the provider's disk.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use pinfold_net::SecretValue;
use provider::{Executor, RunRequest, Status};
use task_defs::Definition;

use crate::harness::Case;

/// A guest that writes its whole WASI environment (`NAME=VALUE\0` entries) to stdout,
/// every byte shifted up by `shift` (so a test can prove delivery without the plain value
/// ever being output).
pub fn environ_dump_wat(shift: u8) -> String {
    format!(
        r#"(module
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
        (i32.add (i32.load8_u (i32.add (i32.const 8192) (local.get $i))) (i32.const {shift})))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (i32.store (i32.const 16) (i32.const 8192))
    (i32.store (i32.const 20) (local.get $n))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))
"#
    )
}

fn secret_def(case: &Case, declared: &[&str]) -> Definition {
    let dir = case.path().join("def-secrets");
    std::fs::create_dir_all(&dir).unwrap();
    let names = declared
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let manifest = format!(
        r#"format = 1
name = "secret-env"
version = "1.0.0"
description = "prints its environment"
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
secrets = [{names}]
"#
    );
    std::fs::write(dir.join("taskdef.toml"), manifest).unwrap();
    std::fs::write(
        dir.join("guest.wasm"),
        wat::parse_str(environ_dump_wat(0)).unwrap(),
    )
    .unwrap();
    Definition::load_dir(&dir).expect("valid secret definition")
}

fn old_enough() -> u8 {
    0
}

/// A value no file could contain by accident.
fn random_value() -> String {
    let seed = format!(
        "{:?} {} {:p}",
        std::time::SystemTime::now(),
        std::process::id(),
        &old_enough()
    );
    format!("pinfold-secret-{}", blake3::hash(seed.as_bytes()).to_hex())
}

/// Every regular file under `root` whose bytes contain `needle`.
pub fn files_containing(root: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
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

async fn run(
    case: &Case,
    def: &Definition,
    secrets: BTreeMap<String, SecretValue>,
) -> provider::Outcome {
    let (input, output) = case.run_dirs();
    case.executor()
        .run(RunRequest {
            definition: Arc::new(def.clone()),
            params: BTreeMap::new(),
            input_dir: input,
            output_dir: output,
            secrets,
        })
        .await
}

#[tokio::test]
async fn secret_reaches_the_guest_as_env_and_not_the_disk() {
    let case = Case::new();
    let def = secret_def(&case, &["API_TOKEN"]);
    let value = random_value();
    let secrets = BTreeMap::from([(
        "API_TOKEN".to_string(),
        SecretValue::new(value.clone().into_bytes()),
    )]);
    let o = run(&case, &def, secrets).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert!(
        o.stdout_text().contains(&format!("API_TOKEN={value}\0")),
        "{:?}",
        o.stdout_text()
    );
    // The request's Debug (what a tracing line would print) never shows the value.
    let shown = format!("{:?}", SecretValue::new(value.clone().into_bytes()));
    assert!(!shown.contains(&value), "{shown}");
    // Scratch dirs, artifact cache and the definition: nothing holds the value.
    let found = files_containing(case.path(), value.as_bytes());
    assert!(found.is_empty(), "secret found on disk in {found:?}");
}

#[tokio::test]
async fn undeclared_and_missing_secrets_are_refused() {
    let case = Case::new();
    let def = secret_def(&case, &["API_TOKEN"]);
    let extra = BTreeMap::from([
        ("API_TOKEN".to_string(), SecretValue::new(b"a".to_vec())),
        ("OTHER".to_string(), SecretValue::new(b"b".to_vec())),
    ]);
    let o = run(&case, &def, extra).await;
    assert_eq!(o.status, Status::Rejected, "{o:?}");
    assert!(
        o.reason.as_deref().unwrap_or("").contains("not declared"),
        "{o:?}"
    );

    let o = run(&case, &def, BTreeMap::new()).await;
    assert_eq!(o.status, Status::Rejected, "{o:?}");
    assert!(
        o.reason.as_deref().unwrap_or("").contains("not supplied"),
        "{o:?}"
    );

    let undeclared = secret_def(&case, &[]);
    let o = run(
        &case,
        &undeclared,
        BTreeMap::from([("API_TOKEN".to_string(), SecretValue::new(b"a".to_vec()))]),
    )
    .await;
    assert_eq!(o.status, Status::Rejected, "{o:?}");
}

#[tokio::test]
async fn a_secret_that_is_not_text_is_refused_for_wasm() {
    let case = Case::new();
    let def = secret_def(&case, &["API_TOKEN"]);
    let o = run(
        &case,
        &def,
        BTreeMap::from([(
            "API_TOKEN".to_string(),
            SecretValue::new(vec![b'a', 0, b'b']),
        )]),
    )
    .await;
    assert_eq!(o.status, Status::Rejected, "{o:?}");
}

#[test]
fn exec_passes_secrets_from_files_and_refuses_inline_values() {
    let case = Case::new();
    secret_def(&case, &["API_TOKEN"]);
    let value = random_value();
    let file = case.path().join("token");
    std::fs::write(&file, &value).unwrap();
    let dir = case.path().join("def-secrets");
    let exe = env!("CARGO_BIN_EXE_provider");
    let r = std::process::Command::new(exe)
        .env("PINFOLD_CACHE_DIR", case.path().join("cache"))
        .args(["exec", "--json", "--allow-unreviewed", "--secret"])
        .arg(format!("API_TOKEN=@{}", file.display()))
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["stdout"], format!("API_TOKEN={value}\0"));
    assert!(!String::from_utf8_lossy(&r.stderr).contains(&value));

    let r = std::process::Command::new(exe)
        .env("PINFOLD_CACHE_DIR", case.path().join("cache"))
        .args([
            "exec",
            "--allow-unreviewed",
            "--secret",
            "API_TOKEN=inline-value-xyz",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("NAME=@FILE"), "{err}");
    assert!(!err.contains("inline-value-xyz"), "{err}");

    let r = std::process::Command::new(exe)
        .env("PINFOLD_CACHE_DIR", case.path().join("cache"))
        .args(["exec", "--allow-unreviewed", "--json"])
        .arg(&dir)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["status"], "rejected");
    assert!(v["reason"].as_str().unwrap().contains("API_TOKEN"), "{v}");
}
