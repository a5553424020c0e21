//! Each limit ends a hostile run with its own status, promptly, and the executor keeps working.

use std::time::{Duration, Instant};

use provider::{Status, WasmConfig, WasmExecutor};

use crate::harness::{Case, Spec, WASI_IMPORTS, exit_wat};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_times_out_close_to_the_limit() {
    let case = Case::new();
    let exec = case.executor();
    let spin = r#"(module (func (export "_start") (loop $l (br $l))))"#;
    let def = case.wat_def(
        "spin",
        spin,
        &Spec {
            timeout: "1s",
            ..Spec::default()
        },
    );
    let t = Instant::now();
    let (o, _) = case.run(&exec, &def).await;
    let took = t.elapsed();
    assert_eq!(o.status, Status::TimedOut, "{o:?}");
    assert!(
        took >= Duration::from_secs(1),
        "stopped too early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "stopped too late: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_budget_ends_a_deterministic_spin() {
    let case = Case::new();
    let exec = case.executor();
    let spin = r#"(module (func (export "_start") (loop $l (br $l))))"#;
    let def = case.wat_def(
        "fuel",
        spin,
        &Spec {
            fuel: Some(1_000_000),
            deterministic: true,
            ..Spec::default()
        },
    );
    let (o, _) = case.run(&exec, &def).await;
    assert_eq!(o.status, Status::TimedOut, "{o:?}");
    assert!(o.reason.as_deref().unwrap_or("").contains("fuel"), "{o:?}");
    assert_eq!(o.usage.measured.fuel, Some(1_000_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_grow_loop_is_memory_exceeded() {
    let case = Case::new();
    let exec = case.executor();
    let grow = r#"(module (memory 1)
      (func (export "_start") (loop $l (drop (memory.grow (i32.const 1))) (br $l))))"#;
    let def = case.wat_def(
        "grow",
        grow,
        &Spec {
            memory: "2MiB",
            ..Spec::default()
        },
    );
    let (o, _) = case.run(&exec, &def).await;
    assert_eq!(o.status, Status::MemoryExceeded, "{o:?}");
    assert_eq!(
        o.usage.measured.peak_memory,
        2 << 20,
        "grew up to the cap, not past it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_traps_and_the_executor_still_works() {
    let case = Case::new();
    let exec = case.executor();
    let rec = r#"(module (func $f (call $f)) (func (export "_start") (call $f)))"#;
    let def = case.wat_def("rec", rec, &Spec::default());
    let (o, _) = case.run(&exec, &def).await;
    assert_eq!(o.status, Status::Trapped, "{o:?}");
    assert!(
        o.reason.as_deref().unwrap_or("").contains("stack"),
        "trap message names the stack: {o:?}"
    );
    let ok = case.wat_def("ok", &exit_wat(0), &Spec::default());
    let (o, _) = case.run(&exec, &ok).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_exit_codes_map_to_statuses() {
    let case = Case::new();
    let exec = case.executor();
    let zero = case.wat_def("zero", &exit_wat(0), &Spec::default());
    let three = case.wat_def("three", &exit_wat(3), &Spec::default());
    let (o, _) = case.run(&exec, &zero).await;
    assert_eq!((o.status, o.exit_code), (Status::Succeeded, Some(0)));
    let (o, _) = case.run(&exec, &three).await;
    assert_eq!((o.status, o.exit_code), (Status::Failed, Some(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_flood_is_capped_and_output_exceeded() {
    let case = Case::new();
    let exec = case.executor();
    let flood = format!(
        r#"(module {WASI_IMPORTS}
      (memory (export "memory") 1)
      (func (export "_start")
        (i32.store (i32.const 0) (i32.const 16))
        (i32.store (i32.const 4) (i32.const 4096))
        (loop $l
          (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
          (br $l))))"#
    );
    let def = case.wat_def(
        "flood",
        &flood,
        &Spec {
            output: "64KiB",
            timeout: "20s",
            ..Spec::default()
        },
    );
    let t = Instant::now();
    let (o, _) = case.run(&exec, &def).await;
    assert_eq!(o.status, Status::OutputExceeded, "{:?}", o.reason);
    assert!(o.stdout_truncated);
    assert_eq!(o.stdout_text().len(), 64 << 10, "kept exactly the cap");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stopped at the cap, not by the timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filling_the_disk_is_stopped_near_the_cap() {
    let case = Case::new();
    let exec = case.executor();
    // Opens /output/fill (fd 4 is the output preopen) and appends 60000-byte chunks forever.
    let fill = format!(
        r#"(module {WASI_IMPORTS}
      (memory (export "memory") 1)
      (data (i32.const 1024) "fill")
      (func (export "_start") (local $e i32)
        (local.set $e (call $path_open (i32.const 4) (i32.const 0) (i32.const 1024) (i32.const 4)
          (i32.const 1) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 12)))
        (if (local.get $e) (then (call $proc_exit (i32.add (local.get $e) (i32.const 100)))))
        (i32.store (i32.const 0) (i32.const 2048))
        (i32.store (i32.const 4) (i32.const 60000))
        (loop $l
          (drop (call $fd_write (i32.load (i32.const 12)) (i32.const 0) (i32.const 1) (i32.const 8)))
          (br $l))))"#
    );
    let def = case.wat_def(
        "fill",
        &fill,
        &Spec {
            memory: "1MiB",
            output: "1MiB",
            timeout: "30s",
            ..Spec::default()
        },
    );
    let t = Instant::now();
    let (o, out) = case.run(&exec, &def).await;
    assert_eq!(o.status, Status::OutputExceeded, "{o:?}");
    let on_disk = std::fs::metadata(out.join("fill")).unwrap().len();
    // Documented bound: cap + limits.memory (one write) + one watch interval of writes,
    // checked here as 16 MiB.
    let bound = (1u64 << 20) + (1 << 20) + (16 << 20);
    assert!(
        on_disk > 1 << 20,
        "the guest really wrote past the cap ({on_disk})"
    );
    assert!(on_disk <= bound, "overshoot too large: {on_disk} > {bound}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "stopped by the watcher, not the timeout"
    );
    assert!(
        o.files.is_empty(),
        "an over-cap file is not returned: {:?}",
        o.files
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_many_files_is_stopped_near_the_entry_cap() {
    const CAP: u64 = 50;
    let case = Case::new();
    let exec = WasmExecutor::new(WasmConfig {
        cache_dir: Some(case.path().join("cache")),
        max_output_entries: CAP,
        ..crate::harness::wasm_config()
    })
    .expect("executor");
    // Creates empty files /output/<8 letters spelling $i> (O_CREAT|O_EXCL, fd 4 is the output
    // preopen) for $i = 0..20000, closing each, then spins. The files are empty so only the
    // entry cap can trip (limits.output stays far away), and the spin means a broken watcher
    // shows up as `timed_out` rather than being rescued by the post-run collection check.
    let many = format!(
        r#"(module {WASI_IMPORTS}
      (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start") (local $i i32) (local $k i32) (local $e i32)
        (loop $files
          (local.set $k (i32.const 0))
          (loop $name
            (i32.store8 (i32.add (i32.const 1024) (local.get $k))
              (i32.add (i32.const 97)
                (i32.and (i32.shr_u (local.get $i) (i32.shl (local.get $k) (i32.const 2)))
                  (i32.const 15))))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br_if $name (i32.lt_u (local.get $k) (i32.const 8))))
          (local.set $e (call $path_open (i32.const 4) (i32.const 0) (i32.const 1024) (i32.const 8)
            (i32.const 5) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 12)))
          (if (local.get $e) (then (call $proc_exit (i32.add (local.get $e) (i32.const 100)))))
          (drop (call $fd_close (i32.load (i32.const 12))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $files (i32.lt_u (local.get $i) (i32.const 20000))))
        (loop $spin (br $spin))))"#
    );
    let def = case.wat_def(
        "many",
        &many,
        &Spec {
            output: "1MiB",
            timeout: "30s",
            ..Spec::default()
        },
    );
    let t = Instant::now();
    let (o, out) = case.run(&exec, &def).await;
    let took = t.elapsed();
    // Only the status and reason: the full outcome lists thousands of dropped files when broken.
    assert_eq!(o.status, Status::OutputExceeded, "{:?}", o.reason);
    assert!(
        took < Duration::from_secs(5),
        "stopped by the watcher, not the 30 s timeout: {took:?}"
    );
    let on_disk = std::fs::read_dir(&out).unwrap().count() as u64;
    // The watcher looks every 2 ms (watch_every = 2 ticks of 1 ms), so the overshoot is the
    // files created in about one interval plus the scan and the wait for the next epoch; one
    // file costs tens of µs here, so that is a few hundred at most. 1000 leaves room for a
    // loaded machine yet is 20× below what the guest would create unchecked (20000).
    let bound = CAP + 1000;
    assert!(
        on_disk > CAP,
        "the guest really went past the cap ({on_disk})"
    );
    assert!(on_disk <= bound, "overshoot too large: {on_disk} > {bound}");
    assert_eq!(o.files.len() as u64, CAP, "exactly the cap is returned");
    assert_eq!(
        o.dropped.len() as u64,
        on_disk - CAP,
        "every entry past the cap is reported as dropped"
    );
    eprintln!("entry cap {CAP}: {on_disk} entries on disk, stopped after {took:?}");
}
