//! WASI 0.2 command components run under the same sandbox, limits, determinism and caches as core modules.
//!
//! The guests are hand-written component-model WAT (there is no wasm toolchain here): a
//! core module exporting `run`, lifted to `wasi:cli/run@0.2.0`'s `func() -> result`, with
//! the WASI interfaces a test needs imported and lowered by hand.

use std::time::{Duration, Instant};

use provider::Status;

use crate::harness::{Case, Spec};

/// `wasi:io/error`, `wasi:io/streams` (just `blocking-write-and-flush`) and `wasi:cli/stdout`,
/// lowered into core funcs `$get-stdout`, `$write` (over the memory of instance `$libc`) and
/// `$drop-os`, then bundled as core instance `$io` for the guest module.
const STDOUT_IMPORTS: &str = r#"
  (import "wasi:io/error@0.2.0" (instance $io-error
    (export "error" (type (sub resource)))))
  (alias export $io-error "error" (type $error))
  (import "wasi:io/streams@0.2.0" (instance $io-streams
    (alias outer 1 $error (type $error-in))
    (export "error" (type $error-ex (eq $error-in)))
    (export "output-stream" (type $output-stream (sub resource)))
    (type $stream-error-def (variant (case "last-operation-failed" (own $error-ex)) (case "closed")))
    (export "stream-error" (type $stream-error (eq $stream-error-def)))
    (type $borrow-os (borrow $output-stream))
    (type $list-u8 (list u8))
    (export "[method]output-stream.blocking-write-and-flush"
      (func (param "self" $borrow-os) (param "contents" $list-u8)
        (result (result (error $stream-error)))))))
  (alias export $io-streams "output-stream" (type $output-stream))
  (import "wasi:cli/stdout@0.2.0" (instance $cli-stdout
    (alias outer 1 $output-stream (type $os-out))
    (export "output-stream" (type (eq $os-out)))
    (type $own-os (own $os-out))
    (export "get-stdout" (func (result $own-os)))))
  (core module $libc
    (memory (export "memory") 1)
    ;; A bump allocator above 32 KiB for lists the host returns; never frees.
    (global $heap (mut i32) (i32.const 32768))
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get 2))))
      (global.set $heap (i32.add (local.get $p) (local.get 3)))
      (local.get $p)))
  (core instance $libc (instantiate $libc))
  (core func $get-stdout (canon lower (func $cli-stdout "get-stdout")))
  (core func $write
    (canon lower (func $io-streams "[method]output-stream.blocking-write-and-flush")
      (memory (core memory $libc "memory"))))
  (core func $drop-os (canon resource.drop $output-stream))
  (core instance $io
    (export "get-stdout" (func $get-stdout))
    (export "write" (func $write))
    (export "drop-os" (func $drop-os)))
"#;

/// Core imports matching [`STDOUT_IMPORTS`], for splicing into the guest module.
const STDOUT_CORE_IMPORTS: &str = r#"
    (import "io" "get-stdout" (func $get-stdout (result i32)))
    (import "io" "write" (func $write (param i32 i32 i32 i32)))
    (import "io" "drop-os" (func $drop-os (param i32)))
    (import "libc" "memory" (memory 1))
"#;

/// A command component: `imports` at component level, then the core module `core` (which
/// exports `run: () -> i32`, 0 = ok, 1 = err) instantiated with `with`, lifted as
/// `wasi:cli/run@0.2.0`.
fn command(imports: &str, core: &str, with: &str) -> String {
    format!(
        r#"(component {imports}
  (core module $m {core})
  (core instance $i (instantiate $m {with}))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $cli (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $cli)))"#
    )
}

/// A command whose core module needs no imports.
fn plain(core_body: &str) -> String {
    command(
        "",
        &format!("(func (export \"run\") (result i32) {core_body})"),
        "",
    )
}

/// A command that writes `text` to stdout once, then returns ok.
fn hello(text: &str) -> String {
    let len = text.len();
    let text = text.replace('\n', "\\n");
    command(
        STDOUT_IMPORTS,
        &format!(
            r#"{STDOUT_CORE_IMPORTS}
    (data (i32.const 1024) "{text}")
    (func (export "run") (result i32) (local $s i32)
      (local.set $s (call $get-stdout))
      (call $write (local.get $s) (i32.const 1024) (i32.const {len}) (i32.const 16))
      (call $drop-os (local.get $s))
      (i32.const 0))"#
        ),
        r#"(with "io" (instance $io)) (with "libc" (instance $libc))"#,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_returns_ok_succeeds() {
    let case = Case::new();
    let def = case.wat_def("ok", &plain("(i32.const 0)"), &Spec::default());
    assert_eq!(
        def.footprint.as_ref().map(|f| f.kind),
        Some(task_defs::footprint::ModuleKind::Component)
    );
    let (o, _) = case.run(&case.executor(), &def).await;
    assert_eq!(
        (o.status, o.exit_code),
        (Status::Succeeded, Some(0)),
        "{o:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_whose_run_returns_err_fails_with_code_1() {
    let case = Case::new();
    let def = case.wat_def("err", &plain("(i32.const 1)"), &Spec::default());
    let (o, _) = case.run(&case.executor(), &def).await;
    assert_eq!((o.status, o.exit_code), (Status::Failed, Some(1)), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_cli_exit_maps_to_exit_codes() {
    let case = Case::new();
    let exec = case.executor();
    // exit(ok) ends the run as success even though `run` would then return err.
    for (name, status, want) in [
        ("exit-ok", 0, (Status::Succeeded, Some(0))),
        ("exit-err", 1, (Status::Failed, Some(1))),
    ] {
        let wat = command(
            r#"(import "wasi:cli/exit@0.2.0" (instance $exit
                 (export "exit" (func (param "status" (result))))))
               (core func $exit (canon lower (func $exit "exit")))
               (core instance $cli (export "exit" (func $exit)))"#,
            &format!(
                r#"(import "cli" "exit" (func $exit (param i32)))
                   (func (export "run") (result i32) (call $exit (i32.const {status})) (i32.const 1))"#
            ),
            r#"(with "cli" (instance $cli))"#,
        );
        let def = case.wat_def(name, &wat, &Spec::default());
        let (o, _) = case.run(&exec, &def).await;
        assert_eq!((o.status, o.exit_code), want, "{name}: {o:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_of_a_component_is_captured() {
    let case = Case::new();
    let def = case.wat_def("hello", &hello("hello from p2\n"), &Spec::default());
    let (o, _) = case.run(&case.executor(), &def).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert_eq!(o.stdout_text(), "hello from p2\n");
    assert!(o.stderr_text().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_flooding_stdout_is_output_exceeded() {
    let case = Case::new();
    let flood = command(
        STDOUT_IMPORTS,
        &format!(
            r#"{STDOUT_CORE_IMPORTS}
    (func (export "run") (result i32) (local $s i32)
      (local.set $s (call $get-stdout))
      (loop $l
        (call $write (local.get $s) (i32.const 1024) (i32.const 4096) (i32.const 16))
        (br $l))
      (i32.const 0))"#
        ),
        r#"(with "io" (instance $io)) (with "libc" (instance $libc))"#,
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
    let (o, _) = case.run(&case.executor(), &def).await;
    assert_eq!(o.status, Status::OutputExceeded, "{:?}", o.reason);
    assert!(o.stdout_truncated);
    assert_eq!(o.stdout_text().len(), 64 << 10, "kept exactly the cap");
    assert!(t.elapsed() < Duration::from_secs(5), "stopped at the cap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_in_a_component_times_out() {
    let case = Case::new();
    let def = case.wat_def(
        "spin",
        &plain("(loop $l (br $l)) (i32.const 0)"),
        &Spec {
            timeout: "1s",
            ..Spec::default()
        },
    );
    let t = Instant::now();
    let (o, _) = case.run(&case.executor(), &def).await;
    let took = t.elapsed();
    assert_eq!(o.status, Status::TimedOut, "{o:?}");
    assert!(
        took >= Duration::from_secs(1),
        "stopped too early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "stopped too late: {took:?}");
}

/// `wasi:io/poll` and `wasi:clocks/monotonic-clock`'s `subscribe-duration`, lowered into
/// core funcs `subscribe: (i64) -> i32` and `block: (i32)` in core instance `$env`.
const POLL_IMPORTS: &str = r#"(import "wasi:io/poll@0.2.0" (instance $poll
             (export "pollable" (type $p (sub resource)))
             (type $borrow-p (borrow $p))
             (export "[method]pollable.block" (func (param "self" $borrow-p)))))
           (alias export $poll "pollable" (type $pollable))
           (import "wasi:clocks/monotonic-clock@0.2.0" (instance $clock
             (alias outer 1 $pollable (type $p))
             (export "pollable" (type $p-ex (eq $p)))
             (type $own-p (own $p-ex))
             (export "subscribe-duration" (func (param "when" u64) (result $own-p)))))
           (core func $subscribe (canon lower (func $clock "subscribe-duration")))
           (core func $block (canon lower (func $poll "[method]pollable.block")))
           (core instance $env (export "subscribe" (func $subscribe)) (export "block" (func $block)))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_sleeping_in_a_host_call_times_out() {
    let case = Case::new();
    // Blocks on a one-minute monotonic-clock pollable: epochs do not fire inside the host
    // call, so only the outer wall-clock backstop (timeout + grace) can end it.
    let sleep = command(
        POLL_IMPORTS,
        r#"(import "env" "subscribe" (func $subscribe (param i64) (result i32)))
           (import "env" "block" (func $block (param i32)))
           (func (export "run") (result i32)
             (call $block (call $subscribe (i64.const 60000000000)))
             (i32.const 0))"#,
        r#"(with "env" (instance $env))"#,
    );
    let def = case.wat_def(
        "sleep",
        &sleep,
        &Spec {
            timeout: "1s",
            ..Spec::default()
        },
    );
    let t = Instant::now();
    let (o, _) = case.run(&case.executor(), &def).await;
    let took = t.elapsed();
    assert_eq!(o.status, Status::TimedOut, "{o:?}");
    assert!(
        o.reason.as_deref().unwrap_or("").contains("host call"),
        "{o:?}"
    );
    assert!(took < Duration::from_secs(5), "stopped too late: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_hoarding_handles_traps_at_the_handle_cap() {
    let case = Case::new();
    // Creates 20,000 pollables without dropping one, then returns ok: each is host memory
    // outside limits.memory, so the run must trap at the 16,384 cap (with wasmtime's
    // default caps it would succeed).
    let hoard = command(
        POLL_IMPORTS,
        r#"(import "env" "subscribe" (func $subscribe (param i64) (result i32)))
           (import "env" "block" (func $block (param i32)))
           (func (export "run") (result i32) (local $i i32)
             (loop $l
               (drop (call $subscribe (i64.const 1)))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $l (i32.lt_u (local.get $i) (i32.const 20000))))
             (i32.const 0))"#,
        r#"(with "env" (instance $env))"#,
    );
    let def = case.wat_def(
        "hoard",
        &hoard,
        &Spec {
            timeout: "20s",
            ..Spec::default()
        },
    );
    let t = Instant::now();
    let (o, _) = case.run(&case.executor(), &def).await;
    let took = t.elapsed();
    assert_eq!(o.status, Status::Trapped, "{o:?}");
    assert!(
        o.reason.as_deref().unwrap_or("").contains("resource table"),
        "{o:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "trapped at the cap: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fuel_budget_ends_a_deterministic_component_spin() {
    let case = Case::new();
    let def = case.wat_def(
        "fuel",
        &plain("(loop $l (br $l)) (i32.const 0)"),
        &Spec {
            fuel: Some(1_000_000),
            deterministic: true,
            ..Spec::default()
        },
    );
    let (o, _) = case.run(&case.executor(), &def).await;
    assert_eq!(o.status, Status::TimedOut, "{o:?}");
    assert!(o.reason.as_deref().unwrap_or("").contains("fuel"), "{o:?}");
    assert_eq!(o.usage.measured.fuel, Some(1_000_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_growth_in_a_component_is_memory_exceeded() {
    let case = Case::new();
    let grow = plain("(loop $l (drop (memory.grow (i32.const 1))) (br $l)) (i32.const 0)")
        .replace("(core module $m ", "(core module $m (memory 1) ");
    let def = case.wat_def(
        "grow",
        &grow,
        &Spec {
            memory: "2MiB",
            ..Spec::default()
        },
    );
    let (o, _) = case.run(&case.executor(), &def).await;
    assert_eq!(o.status, Status::MemoryExceeded, "{o:?}");
    assert_eq!(
        o.usage.measured.peak_memory,
        2 << 20,
        "grew up to the cap, not past it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_limit_covers_all_memories_of_a_component() {
    let case = Case::new();
    // Two core instances with 1 MiB (16 pages) each: 2 MiB in all, over a 1.5 MiB limit,
    // though each memory alone fits.
    let wat = r#"(component
      (core module $a (memory (export "memory") 16))
      (core instance $a (instantiate $a))
      (core module $m (memory 16) (func (export "run") (result i32) (i32.const 0)))
      (core instance $i (instantiate $m))
      (func $run (result (result)) (canon lift (core func $i "run")))
      (instance $cli (export "run" (func $run)))
      (export "wasi:cli/run@0.2.0" (instance $cli)))"#;
    let def = case.wat_def(
        "two",
        wat,
        &Spec {
            memory: "1536KiB",
            ..Spec::default()
        },
    );
    let (o, _) = case.run(&case.executor(), &def).await;
    assert_eq!(o.status, Status::MemoryExceeded, "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_importing_sockets_is_rejected_naming_the_interface() {
    let case = Case::new();
    let exec = case.executor();
    let evil = wat::parse_str(command(
        r#"(import "wasi:sockets/tcp@0.2.0" (instance))"#,
        r#"(func (export "run") (result i32) (i32.const 0))"#,
        "",
    ))
    .unwrap();
    // Validation refuses this component, so swap the bytes into a valid definition: the
    // executor must not rely on the loader's checks.
    let mut def = case.wat_def("sock", &plain("(i32.const 0)"), &Spec::default());
    def.files.insert("guest.wasm".into(), evil.clone());
    let (o, _) = case.run(&exec, &def).await;
    assert_eq!(o.status, Status::Rejected, "{o:?}");
    let reason = o.reason.unwrap_or_default();
    assert!(reason.contains("wasi:sockets/tcp@0.2.0"), "{reason}");
    assert!(reason.contains("capability sockets"), "{reason}");

    // An interface no host provides is refused the same way.
    let unknown = wat::parse_str(command(
        r#"(import "acme:missiles/launch@1.0.0" (instance))"#,
        r#"(func (export "run") (result i32) (i32.const 0))"#,
        "",
    ))
    .unwrap();
    def.files.insert("guest.wasm".into(), unknown);
    let (o, _) = case.run(&exec, &def).await;
    assert_eq!(o.status, Status::Rejected, "{o:?}");
    assert!(
        o.reason
            .as_deref()
            .unwrap_or("")
            .contains("acme:missiles/launch"),
        "{o:?}"
    );

    // The loader refuses the sockets import too, naming it.
    let dir = case.path().join("def-sock");
    std::fs::write(dir.join("guest.wasm"), &evil).unwrap();
    let err = task_defs::Definition::load_dir(&dir).unwrap_err();
    assert!(
        err.diagnostics()
            .unwrap()
            .to_string()
            .contains("wasi:sockets/tcp@0.2.0"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_without_wasi_cli_run_is_rejected() {
    let case = Case::new();
    let mut def = case.wat_def("norun", &plain("(i32.const 0)"), &Spec::default());
    let bytes = wat::parse_str(
        r#"(component
          (core module $m (func (export "run") (result i32) (i32.const 0)))
          (core instance $i (instantiate $m))
          (func $run (result (result)) (canon lift (core func $i "run")))
          (export "main" (func $run)))"#,
    )
    .unwrap();
    def.files.insert("guest.wasm".into(), bytes);
    let (o, _) = case.run(&case.executor(), &def).await;
    assert_eq!(o.status, Status::Rejected, "{o:?}");
    assert!(
        o.reason.as_deref().unwrap_or("").contains("wasi:cli/run"),
        "{o:?}"
    );
}

/// Prints `dir:<name>` per preopen, `arg:<arg>` per argument and `env:<k>=<v>` per variable.
fn introspect() -> String {
    command(
        &format!(
            r#"{STDOUT_IMPORTS}
  (import "wasi:filesystem/types@0.2.0" (instance $fs-types
    (export "descriptor" (type (sub resource)))))
  (alias export $fs-types "descriptor" (type $descriptor))
  (import "wasi:filesystem/preopens@0.2.0" (instance $preopens
    (alias outer 1 $descriptor (type $d))
    (export "descriptor" (type $d-ex (eq $d)))
    (type $own-d (own $d-ex))
    (type $dirs (list (tuple $own-d string)))
    (export "get-directories" (func (result $dirs)))))
  (import "wasi:cli/environment@0.2.0" (instance $environment
    (type $args (list string))
    (type $vars (list (tuple string string)))
    (export "get-environment" (func (result $vars)))
    (export "get-arguments" (func (result $args)))))
  (core func $dirs (canon lower (func $preopens "get-directories")
    (memory (core memory $libc "memory")) (realloc (core func $libc "cabi_realloc"))))
  (core func $args (canon lower (func $environment "get-arguments")
    (memory (core memory $libc "memory")) (realloc (core func $libc "cabi_realloc"))))
  (core func $vars (canon lower (func $environment "get-environment")
    (memory (core memory $libc "memory")) (realloc (core func $libc "cabi_realloc"))))
  (core instance $env
    (export "dirs" (func $dirs)) (export "args" (func $args)) (export "vars" (func $vars)))"#
        ),
        &format!(
            r#"{STDOUT_CORE_IMPORTS}
    (import "env" "dirs" (func $dirs (param i32)))
    (import "env" "args" (func $args (param i32)))
    (import "env" "vars" (func $vars (param i32)))
    (data (i32.const 1000) "\0adir:arg:env:=")
    (global $s (mut i32) (i32.const 0))
    (func $print (param $p i32) (param $l i32)
      (call $write (global.get $s) (local.get $p) (local.get $l) (i32.const 16)))
    ;; Calls $get (list at retptr 64), then prints each element: `tag`, the string at
    ;; element offset 0, and when `pair`, "=" and the string at offset 8; then a newline.
    (func $each (param $tag i32) (param $stride i32) (param $first i32) (param $pair i32)
      (local $i i32) (local $e i32)
      (block $done (loop $l
        (br_if $done (i32.ge_u (local.get $i) (i32.load (i32.const 68))))
        (local.set $e (i32.add (i32.add (i32.load (i32.const 64))
          (i32.mul (local.get $i) (local.get $stride))) (local.get $first)))
        (call $print (local.get $tag) (i32.const 4))
        (call $print (i32.load (local.get $e)) (i32.load offset=4 (local.get $e)))
        (if (local.get $pair) (then
          (call $print (i32.const 1013) (i32.const 1))
          (call $print (i32.load offset=8 (local.get $e)) (i32.load offset=12 (local.get $e)))))
        (call $print (i32.const 1000) (i32.const 1))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l))))
    (func (export "run") (result i32)
      (global.set $s (call $get-stdout))
      (call $dirs (i32.const 64))
      (call $each (i32.const 1001) (i32.const 12) (i32.const 4) (i32.const 0))
      (call $args (i32.const 64))
      (call $each (i32.const 1005) (i32.const 8) (i32.const 0) (i32.const 0))
      (call $vars (i32.const 64))
      (call $each (i32.const 1009) (i32.const 16) (i32.const 0) (i32.const 1))
      (i32.const 0))"#
        ),
        r#"(with "io" (instance $io)) (with "libc" (instance $libc)) (with "env" (instance $env))"#,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_sees_only_its_input_output_and_scratch_directories_its_args_and_the_manifest_env()
 {
    let case = Case::new();
    let mut def = case.wat_def("intro", &introspect(), &Spec::default());
    // Tests may adjust a loaded definition; the manifest env is what the guest must see,
    // and nothing of this test process's environment.
    def.manifest
        .capabilities
        .env
        .insert("GREETING".into(), "hi".into());
    let (o, _) = case.run(&case.executor(), &def).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert_eq!(
        o.stdout_text(),
        "dir:/input\ndir:/output\ndir:/\narg:intro\nenv:GREETING=hi\n"
    );
}

/// Prints 8 random bytes (`wasi:random/random`) and 8 bytes of monotonic clock.
fn entropy() -> String {
    command(
        &format!(
            r#"(import "wasi:random/random@0.2.0" (instance $random
                 (export "get-random-u64" (func (result u64)))))
               (import "wasi:clocks/monotonic-clock@0.2.0" (instance $clock
                 (export "now" (func (result u64)))))
               {STDOUT_IMPORTS}
               (core func $random (canon lower (func $random "get-random-u64")))
               (core func $now (canon lower (func $clock "now")))
               (core instance $env (export "random" (func $random)) (export "now" (func $now)))"#
        ),
        &format!(
            r#"{STDOUT_CORE_IMPORTS}
    (import "env" "random" (func $random (result i64)))
    (import "env" "now" (func $now (result i64)))
    (func (export "run") (result i32) (local $s i32)
      (i64.store (i32.const 1024) (call $random))
      (i64.store (i32.const 1032) (call $now))
      (local.set $s (call $get-stdout))
      (call $write (local.get $s) (i32.const 1024) (i32.const 16) (i32.const 16))
      (call $drop-os (local.get $s))
      (i32.const 0))"#
        ),
        r#"(with "io" (instance $io)) (with "libc" (instance $libc)) (with "env" (instance $env))"#,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deterministic_component_sees_fixed_randomness_and_clocks() {
    let case = Case::new();
    let det = case.wat_def(
        "entropy",
        &entropy(),
        &Spec {
            deterministic: true,
            ..Spec::default()
        },
    );
    let a = case.run(&case.executor(), &det).await.0;
    let b = case.run(&case.executor(), &det).await.0;
    assert_eq!(a.status, Status::Succeeded, "{a:?}");
    assert!(
        a.usage.measured.fuel.unwrap() > 0,
        "deterministic runs are metered"
    );
    assert_eq!(a.outputs, b.outputs);
    assert_eq!(a.stdout_text(), b.stdout_text());

    // Control: without deterministic mode the same guest sees fresh entropy each run.
    let free = case.wat_def("entropy-free", &entropy(), &Spec::default());
    let exec = case.executor();
    let c = case.run(&exec, &free).await.0;
    let d = case.run(&exec, &free).await.0;
    assert_eq!(c.status, Status::Succeeded, "{c:?}");
    assert_ne!(c.outputs, d.outputs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_is_served_from_memory_then_from_the_disk_cache() {
    let case = Case::new();
    let def = case.wat_def("cached", &hello("cached\n"), &Spec::default());
    let first = case.executor();
    for (exec, source) in [
        (&first, "compiled"),
        (&first, "memory"),
        (&case.executor(), "disk"),
    ] {
        let (o, _) = case.run(exec, &def).await;
        assert_eq!(o.status, Status::Succeeded, "{o:?}");
        assert_eq!(o.stdout_text(), "cached\n");
        assert_eq!(o.usage.module_source.as_deref(), Some(source));
    }
    // The artifact is filed as a component, so a module lookup can never find it.
    let names: Vec<String> = std::fs::read_dir(case.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cwasm"))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].contains("-component-"), "{names:?}");

    // A tampered component artifact is recompiled, never loaded.
    for e in std::fs::read_dir(case.path().join("cache")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "cwasm") {
            let mut bytes = std::fs::read(&p).unwrap();
            let n = bytes.len();
            bytes[n / 2] ^= 0xff;
            std::fs::write(&p, bytes).unwrap();
        }
    }
    let (o, _) = case.run(&case.executor(), &def).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert_eq!(o.usage.module_source.as_deref(), Some("compiled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_and_modules_share_one_executor() {
    let case = Case::new();
    let exec = case.executor();
    let component = case.wat_def("c", &hello("component\n"), &Spec::default());
    let module = case.wat_def("m", &crate::harness::exit_wat(0), &Spec::default());
    let runs = (0..8).map(|i| {
        let (exec, def) = if i % 2 == 0 {
            (exec.clone(), component.clone())
        } else {
            (exec.clone(), module.clone())
        };
        let (input, output) = case.run_dirs();
        async move {
            provider::Executor::run(
                &exec,
                provider::RunRequest {
                    definition: std::sync::Arc::new(def),
                    params: Default::default(),
                    input_dir: input,
                    output_dir: output,
                    secrets: Default::default(),
                },
            )
            .await
        }
    });
    for o in futures::future::join_all(runs).await {
        assert_eq!(o.status, Status::Succeeded, "{o:?}");
    }
}
