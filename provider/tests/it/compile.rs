//! Compiles run in a worker process that is killed at the compile timeout or memory bound, and give everything back.

use std::time::{Duration, Instant};

use provider::{Status, WasmConfig, WasmExecutor};

use crate::harness::{Case, Spec};

fn leb(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn sleb(mut n: i64, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        let done = (n == 0 && b & 0x40 == 0) || (n == -1 && b & 0x40 != 0);
        out.push(if done { b } else { b | 0x80 });
        if done {
            return;
        }
    }
}

fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
    out.push(id);
    leb(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// A valid module of `n` small arithmetic functions plus an empty `_start`, encoded
/// directly (300,000 functions is 6 MB of binary; as text it would be 60 MB). Cranelift on
/// this machine needs about 70 s and 1.7 GB for 300,000 of them.
pub fn many_functions(n: u32) -> Vec<u8> {
    let mut types = Vec::new();
    leb(2, &mut types);
    types.extend_from_slice(&[0x60, 1, 0x7e, 1, 0x7e, 0x60, 0, 0]);
    let mut funcs = Vec::new();
    leb(u64::from(n) + 1, &mut funcs);
    funcs.extend(std::iter::repeat_n(0u8, n as usize));
    funcs.push(1);
    let mut exports = Vec::new();
    leb(1, &mut exports);
    leb(6, &mut exports);
    exports.extend_from_slice(b"_start");
    exports.push(0);
    leb(u64::from(n), &mut exports);
    let mut code = Vec::new();
    leb(u64::from(n) + 1, &mut code);
    for i in 0..n {
        // local.get 0, i64.const i, i64.mul, i64.const 7, i64.add,
        // local.get 0, i64.const 3, i64.rotl, i64.xor, end
        let mut body = vec![0x00, 0x20, 0x00, 0x42];
        sleb(i64::from(i), &mut body);
        body.extend_from_slice(&[
            0x7e, 0x42, 0x07, 0x7c, 0x20, 0x00, 0x42, 0x03, 0x89, 0x85, 0x0b,
        ]);
        leb(body.len() as u64, &mut code);
        code.extend_from_slice(&body);
    }
    code.extend_from_slice(&[2, 0x00, 0x0b]);
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    section(1, &types, &mut m);
    section(3, &funcs, &mut m);
    section(7, &exports, &mut m);
    section(10, &code, &mut m);
    m
}

/// The two tests below look at this process's compile workers and memory: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// Compile workers still alive that this process started.
/// This test's own name for the worker executable (a symlink to the provider binary in the
/// case's directory), so that [`live_workers`] sees this test's workers only: other tests in
/// this binary compile modules at the same time, and their workers are children of this
/// process too.
fn own_worker(case: &Case) -> std::path::PathBuf {
    let link = case.path().join("provider-compile-worker");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_provider"), &link).unwrap();
    link
}

/// Compile workers started through `worker` that are still alive.
fn live_workers(worker: &std::path::Path) -> Vec<u32> {
    let me = std::process::id().to_string();
    let worker = worker.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // Field 4 (after the parenthesised name) is the parent pid.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .unwrap_or("");
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if ppid == me && cmd.contains(provider::wasm::WORKER_ARG) && cmd.contains(&worker) {
            found.push(pid);
        }
    }
    found
}

/// Samples this process's resident memory until `stop` is set; returns the peak.
fn sample_peak(
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(rss());
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compile_past_its_timeout_is_killed_and_gives_its_memory_back() {
    // 300,000 functions: about 70 s and 1.7 GB of Cranelift. The compile used to go on in the
    // node after the rejection, and `provider exec` exited only when it ended.
    let _one = ONE_AT_A_TIME.lock().await;
    let case = Case::new();
    let module = many_functions(300_000);
    let def = case.def_with_module("huge", &module, &Spec::default());
    let worker = own_worker(&case);
    let exec = WasmExecutor::new(WasmConfig {
        compile_timeout: Duration::from_secs(2),
        compile_worker: worker.clone(),
        ..crate::harness::wasm_config()
    })
    .unwrap();
    let before = rss();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_peak(stop.clone());
    let t = Instant::now();
    let (o, _) = case.run(&exec, &def).await;
    let took = t.elapsed();
    assert_eq!(o.status, Status::Rejected, "{o:?}");
    assert!(
        o.reason
            .as_deref()
            .unwrap_or("")
            .contains("longer than 2000 ms"),
        "{o:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "answered at the timeout: {took:?}"
    );
    assert!(
        live_workers(&worker).is_empty(),
        "worker killed: {:?}",
        live_workers(&worker)
    );
    // Well past the rejection, nothing is compiling on our behalf any more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    let grew = peak.saturating_sub(before);
    eprintln!(
        "figure: compile timeout 2 s -> rejected after {took:?}, this process grew {} MiB at peak",
        grew >> 20
    );
    assert!(
        grew < 96 << 20,
        "the compile's memory stayed out of this process: +{} MiB",
        grew >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compile_past_its_memory_bound_is_killed() {
    let _one = ONE_AT_A_TIME.lock().await;
    let case = Case::new();
    let module = many_functions(300_000);
    let def = case.def_with_module("hungry", &module, &Spec::default());
    let worker = own_worker(&case);
    let bound = 160u64 << 20;
    let exec = WasmExecutor::new(WasmConfig {
        compile_timeout: Duration::from_secs(120),
        compile_memory: bound,
        compile_worker: worker.clone(),
        ..crate::harness::wasm_config()
    })
    .unwrap();
    let t = Instant::now();
    let (o, _) = case.run(&exec, &def).await;
    let took = t.elapsed();
    assert_eq!(o.status, Status::Rejected, "{o:?}");
    assert!(
        o.reason
            .as_deref()
            .unwrap_or("")
            .contains(&format!("more than {bound} bytes of memory")),
        "{o:?}"
    );
    eprintln!(
        "figure: compile memory bound {} MiB -> rejected after {took:?}",
        bound >> 20
    );
    assert!(
        took < Duration::from_secs(60),
        "stopped by the bound: {took:?}"
    );
    assert!(
        live_workers(&worker).is_empty(),
        "worker killed: {:?}",
        live_workers(&worker)
    );
    // The executor still compiles and runs an ordinary module afterwards.
    let small = case.def_with_module("small", &many_functions(10), &Spec::default());
    let (o, _) = case.run(&exec, &small).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
}
