//! A hostile task on an honest provider: whatever it prints or names, the requestor verifies the result (or gets a typed task failure) and keeps trusting the provider.

use std::path::Path;
use std::process::Command;

use pinfold_e2e::{Limits, ProviderProcess, ReviewedRegistry, Scratch, bin, wat_definition};

/// A definition whose `_start` is `body` (WAT), with `data` segments, output on fd 4.
fn wat_task(dir: &Path, name: &str, data: &str, body: &str) {
    let wat = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  {data}
  (func (export "_start") {body}))"#
    );
    wat_definition(dir, name, &wat, Limits::default(), "");
}

/// Creates `/output/<name at 64..64+len>` holding one byte.
fn create_file(len: usize) -> String {
    format!(
        r#"(drop (call $path_open (i32.const 4) (i32.const 0) (i32.const 64) (i32.const {len})
          (i32.const 1) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 8)))
        (i32.store (i32.const 0) (i32.const 32))
        (i32.store (i32.const 4) (i32.const 1))
        (drop (call $fd_write (i32.load (i32.const 8)) (i32.const 0) (i32.const 1) (i32.const 12)))"#
    )
}

fn request(p: &ProviderProcess, def: &str, out: &Path) -> (i32, serde_json::Value) {
    let o = Command::new(bin("requestor"))
        .args(["run", def, "--json", "--wait", "10", "--timeout", "120"])
        .args(["--bootstrap", p.addr()])
        .arg("--output")
        .arg(out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let v = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "requestor printed {text:?} ({e}); stderr {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.code().unwrap_or(-1), v)
}

#[test]
fn hostile_task_output_never_makes_an_honest_provider_look_dishonest() {
    let s = Scratch::new();
    let reg = ReviewedRegistry::start(&s);
    // Stdout that is not UTF-8: it used to be stored lossy but signed raw, so the requestor
    // saw a digest mismatch and called the provider a liar.
    let raw = s.path("raw");
    wat_task(
        &raw,
        "raw",
        r#"(data (i32.const 32) "\ff\fea\80\n")"#,
        r#"(i32.store (i32.const 0) (i32.const 32))
        (i32.store (i32.const 4) (i32.const 5))
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 12)))"#,
    );
    // An output name with a control character: beyond what a requestor accepts (it used
    // to ban the provider for it), so the provider must decide output_exceeded itself.
    let control = s.path("control");
    wat_task(
        &control,
        "control",
        r#"(data (i32.const 32) "x") (data (i32.const 64) "bad\01name")"#,
        &create_file(8),
    );
    let [raw, control] = [&raw, &control].map(|d| reg.approved(d));
    let p = ProviderProcess::start(&s.path("p"), Some(&reg.provider_toml("", "")), &[], &[]);

    let out = s.path("o-raw");
    let (code, v) = request(&p, &raw, &out);
    assert_eq!(code, 0, "{v}");
    let stdout = std::fs::read(out.join("stdout")).unwrap();
    assert_eq!(stdout, b"\xff\xfea\x80\n");

    let (code, v) = request(&p, &control, &s.path("o-control"));
    assert_eq!(
        code, 1,
        "a typed task failure, not a verification failure: {v}"
    );
    assert_eq!(v["kind"], "task_failed", "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("task output_exceeded on "),
        "{v}"
    );

    // The provider is still trusted: the same requestor runs on it again.
    let (code, v) = request(&p, &raw, &s.path("o-raw-again"));
    assert_eq!(code, 0, "not banned: {v}");
}
