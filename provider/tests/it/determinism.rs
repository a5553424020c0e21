//! Deterministic runs give bit-identical outputs across executors, cache cold and warm, whatever the guest reads from clocks and randomness.

use std::collections::BTreeMap;

use provider::Status;
use task_defs::Definition;

use crate::harness::{Case, Spec, WASI_IMPORTS, example};

/// Prints 16 random bytes and the wall and monotonic clocks to stdout.
fn entropy_wat() -> String {
    format!(
        r#"(module {WASI_IMPORTS}
      (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "clock_time_get"
        (func $clock_time_get (param i32 i64 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        (drop (call $random_get (i32.const 112) (i32.const 16)))
        (drop (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 128)))
        (drop (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 136)))
        (i32.store (i32.const 0) (i32.const 112))
        (i32.store (i32.const 4) (i32.const 32))
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clocks_and_randomness_are_fixed_in_deterministic_mode() {
    let case = Case::new();
    let det = case.wat_def(
        "entropy",
        &entropy_wat(),
        &Spec {
            deterministic: true,
            ..Spec::default()
        },
    );
    let a = case.run(&case.executor(), &det).await.0;
    let b = case.run(&case.executor(), &det).await.0;
    assert_eq!(a.status, Status::Succeeded, "{a:?}");
    assert!(!a.stdout_text().is_empty());
    assert_eq!(a.outputs, b.outputs);
    assert_eq!(a.stdout_text(), b.stdout_text());

    // Control: without deterministic mode the same guest sees fresh entropy each run.
    let free = case.wat_def("entropy-free", &entropy_wat(), &Spec::default());
    let exec = case.executor();
    let c = case.run(&exec, &free).await.0;
    let d = case.run(&exec, &free).await.0;
    assert_eq!(c.status, Status::Succeeded);
    assert_ne!(c.outputs, d.outputs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_task_twice_cold_and_warm_gives_identical_digests() {
    let case = Case::new();
    let def = Definition::load(&example("nbody")).unwrap();
    let params: BTreeMap<String, String> = [("steps".to_string(), "20000".to_string())].into();
    let mut seen = Vec::new();
    // First executor compiles (cold), its second run hits the in-memory InstancePre, a
    // fresh executor on the same cache dir loads the artifact from disk.
    let first = case.executor();
    for (exec, source) in [
        (&first, "compiled"),
        (&first, "memory"),
        (&case.executor(), "disk"),
    ] {
        let (input, output) = case.run_dirs();
        let (o, _) = case.run_in(exec, &def, params.clone(), input, output).await;
        assert_eq!(o.status, Status::Succeeded, "{o:?}");
        assert_eq!(o.usage.module_source.as_deref(), Some(source));
        assert!(o.usage.fuel.unwrap() > 0, "deterministic runs are metered");
        seen.push((o.outputs, o.stdout, o.usage.fuel));
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0], seen[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_artifact_is_not_loaded() {
    let case = Case::new();
    let def = case.wat_def("tamper", &crate::harness::exit_wat(0), &Spec::default());
    let (o, _) = case.run(&case.executor(), &def).await;
    assert_eq!(o.usage.module_source.as_deref(), Some("compiled"));
    let cache = case.path().join("cache");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for e in std::fs::read_dir(&cache).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "cwasm") {
            let mut bytes = std::fs::read(&p).unwrap();
            let n = bytes.len();
            bytes[n / 2] ^= 0xff;
            std::fs::write(&p, bytes).unwrap();
        }
    }
    let (o, _) = case.run(&case.executor(), &def).await;
    assert_eq!(o.status, Status::Succeeded);
    assert_eq!(
        o.usage.module_source.as_deref(),
        Some("compiled"),
        "a checksum mismatch forces a recompile"
    );
}
