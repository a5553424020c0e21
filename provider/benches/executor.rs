//! Criterion benchmarks of the wasm executor: start-up cold vs cached, throughput, nbody vs native, and the cost of epochs, fuel and NaN canonicalisation.
//!
//! Run with `cargo bench -p provider --bench executor`. Ratios (nbody wasm/native,
//! epoch and fuel overhead) are read off the printed times of the paired benchmarks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use provider::fsio::{TreeCaps, stage_inputs};
use provider::{Executor, RunRequest, Status, WasmConfig, WasmExecutor};
use task_defs::Definition;
use wasmtime::{Config, Engine, Linker, Module, Store};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

const HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "hello\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

const NBODY_STEPS: &str = "200000";

fn hello_def(dir: &Path) -> Definition {
    let d = dir.join("hello");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("taskdef.toml"),
        r#"format = 1
name = "hello"
version = "1.0.0"
description = "prints hello"
license = "MIT"

[runtime]
kind = "wasm"
module = "hello.wasm"
"#,
    )
    .unwrap();
    std::fs::write(d.join("hello.wasm"), wat::parse_str(HELLO).unwrap()).unwrap();
    Definition::load_dir(&d).unwrap()
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../task-defs/examples")
}

/// One end-to-end run: fresh run dirs, stage one small input, run, collect the manifest.
async fn end_to_end(
    exec: &WasmExecutor,
    def: &Arc<Definition>,
    scratch: &Path,
    input_file: &Path,
    params: &BTreeMap<String, String>,
) {
    let run = tempfile::tempdir_in(scratch).unwrap();
    let (input, output) = (run.path().join("in"), run.path().join("out"));
    std::fs::create_dir(&input).unwrap();
    std::fs::create_dir(&output).unwrap();
    stage_inputs(
        &[input_file.to_path_buf()],
        &input,
        TreeCaps {
            bytes: 1 << 20,
            entries: 10,
        },
    )
    .unwrap();
    let o = exec
        .run(RunRequest {
            definition: def.clone(),
            params: params.clone(),
            input_dir: input,
            output_dir: output,
            secrets: Default::default(),
        })
        .await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
}

/// A runtime with one worker per core of this 2-core machine, as the provider node uses.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn startup(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    let def = Arc::new(hello_def(tmp.path()));
    let input_file = tmp.path().join("input.txt");
    std::fs::write(&input_file, "some input\n").unwrap();
    let none = BTreeMap::new();
    let exec = WasmExecutor::new(WasmConfig {
        cache_dir: Some(tmp.path().join("cache")),
        ..WasmConfig::default()
    })
    .unwrap();
    let no_disk = WasmExecutor::new(WasmConfig::default()).unwrap();

    let mut g = c.benchmark_group("trivial_task");
    g.bench_function("cold_compile", |b| {
        b.iter(|| {
            no_disk.forget_compiled();
            rt.block_on(end_to_end(&no_disk, &def, tmp.path(), &input_file, &none))
        })
    });
    g.bench_function("disk_artifact", |b| {
        b.iter(|| {
            exec.forget_compiled();
            rt.block_on(end_to_end(&exec, &def, tmp.path(), &input_file, &none))
        })
    });
    g.bench_function("cached_instance_pre", |b| {
        b.iter(|| rt.block_on(end_to_end(&exec, &def, tmp.path(), &input_file, &none)))
    });

    // Floor: bare wasmtime, instantiate and run hello with a fresh WASI context.
    let engine = Engine::default();
    let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |c| c).unwrap();
    let module = Module::new(&engine, wat::parse_str(HELLO).unwrap()).unwrap();
    let pre = linker.instantiate_pre(&module).unwrap();
    g.bench_function("bare_wasmtime_floor", |b| {
        b.iter(|| {
            let out = MemoryOutputPipe::new(1024);
            let wasi = WasiCtxBuilder::new().stdout(out.clone()).build_p1();
            let mut store = Store::new(&engine, wasi);
            let i = pre.instantiate(&mut store).unwrap();
            let f = i.get_typed_func::<(), ()>(&mut store, "_start").unwrap();
            f.call(&mut store, ()).unwrap();
        })
    });
    g.finish();

    // Throughput with two runs in flight at once.
    let mut g = c.benchmark_group("throughput");
    const BATCH: u64 = 64;
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("trivial_tasks_concurrency_2", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut hs = Vec::new();
                for _ in 0..2 {
                    let (exec, def, dir, input) = (
                        exec.clone(),
                        def.clone(),
                        tmp.path().to_path_buf(),
                        input_file.clone(),
                    );
                    hs.push(tokio::spawn(async move {
                        let none = BTreeMap::new();
                        for _ in 0..BATCH / 2 {
                            end_to_end(&exec, &def, &dir, &input, &none).await;
                        }
                    }));
                }
                for h in hs {
                    h.await.unwrap();
                }
            })
        })
    });
    g.finish();
}

fn nbody(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    let def = Arc::new(Definition::load(&examples().join("nbody")).unwrap());
    let exec = WasmExecutor::new(WasmConfig::default()).unwrap();
    let input_file = tmp.path().join("input.txt");
    std::fs::write(&input_file, "x").unwrap();
    let params: BTreeMap<String, String> = [("steps".into(), NBODY_STEPS.into())].into();

    // The same definition with `deterministic = false`: the standard engine (epochs only,
    // no fuel, no NaN canonicalisation), to split the executor's cost from the mode's.
    let nondet_dir = tmp.path().join("nbody-nondeterministic");
    pinfold_test_support::copy_tree(&examples().join("nbody"), &nondet_dir);
    let manifest = std::fs::read_to_string(nondet_dir.join("taskdef.toml")).unwrap();
    let flipped = manifest.replace("deterministic = true", "deterministic = false");
    assert_ne!(
        manifest, flipped,
        "the nbody example declares deterministic = true"
    );
    std::fs::write(nondet_dir.join("taskdef.toml"), flipped).unwrap();
    let nondet = Arc::new(Definition::load(&nondet_dir).unwrap());
    assert!(!nondet.manifest.capabilities.deterministic);

    let mut g = c.benchmark_group("nbody");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("wasm_executor_deterministic", |b| {
        b.iter(|| rt.block_on(end_to_end(&exec, &def, tmp.path(), &input_file, &params)))
    });
    g.bench_function("wasm_executor_nondeterministic", |b| {
        b.iter(|| rt.block_on(end_to_end(&exec, &nondet, tmp.path(), &input_file, &params)))
    });

    // The same C compiled natively, run as a subprocess with the same step count.
    let native = tmp.path().join("nbody-native");
    let built = std::process::Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&native)
        .arg(examples().join("nbody/src/nbody.c"))
        .arg("-lm")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if built {
        g.bench_function("native_subprocess", |b| {
            b.iter(|| {
                let s = std::process::Command::new(&native)
                    .arg(NBODY_STEPS)
                    .current_dir(tmp.path())
                    .output()
                    .unwrap();
                assert!(s.status.success());
            })
        });
    } else {
        eprintln!("cc not available: skipping the native nbody baseline");
    }

    // Interruption cost: the same module under bare wasmtime with neither, epochs, fuel.
    let wasm = std::fs::read(examples().join("nbody/nbody.wasm")).unwrap();
    // `bare_nan_canonicalization` isolates the one deterministic-mode setting that changes
    // the generated float code; `bare_metered` is the executor's metered engine settings
    // (epochs, fuel, NaN canonicalisation, deterministic relaxed SIMD) with a sync call.
    for (name, epoch, fuel, nan) in [
        ("bare_neither", false, false, false),
        ("bare_epoch", true, false, false),
        ("bare_fuel", false, true, false),
        ("bare_nan_canonicalization", false, false, true),
        ("bare_metered", true, true, true),
    ] {
        let mut cfg = Config::new();
        cfg.epoch_interruption(epoch)
            .consume_fuel(fuel)
            .cranelift_nan_canonicalization(nan)
            .relaxed_simd_deterministic(nan);
        let engine = Engine::new(&cfg).unwrap();
        let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |c| c).unwrap();
        let module = Module::new(&engine, &wasm).unwrap();
        let pre = linker.instantiate_pre(&module).unwrap();
        let out_dir = tempfile::tempdir().unwrap();
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let _ = std::fs::remove_file(out_dir.path().join("energy.txt"));
                    let mut wasi = WasiCtxBuilder::new();
                    wasi.args(&["nbody", NBODY_STEPS])
                        .stdout(MemoryOutputPipe::new(1 << 16))
                        .preopened_dir(out_dir.path(), "/output", wasmtime_wasi::FsPerms::ReadWrite)
                        .unwrap();
                    let mut store = Store::new(&engine, wasi.build_p1());
                    if epoch {
                        store.set_epoch_deadline(u64::MAX / 2);
                    }
                    if fuel {
                        store.set_fuel(u64::MAX).unwrap();
                    }
                    let t = Instant::now();
                    let i = pre.instantiate(&mut store).unwrap();
                    let f = i.get_typed_func::<(), ()>(&mut store, "_start").unwrap();
                    match f.call(&mut store, ()) {
                        Ok(()) => {}
                        Err(e) => {
                            let code = e.downcast_ref::<wasmtime_wasi::I32Exit>().map(|x| x.0);
                            assert_eq!(code, Some(0), "{e:#}");
                        }
                    }
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, startup, nbody);
fn main() {
    // The executor's compile workers are this bench executable started again.
    provider::wasm::dispatch_worker();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
