//! Modules the host cannot or will not run are `rejected` with a reason, before any guest code runs.

use provider::Status;
use provider::fsio::{FsError, TreeCaps, stage_inputs};
use provider::{WasmConfig, WasmExecutor};

use crate::harness::{Case, Spec, exit_wat};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprovided_import_is_rejected_with_its_name() {
    let case = Case::new();
    let exec = case.executor();
    // Validation refuses this module, so build a valid definition and swap the module
    // bytes afterwards: the executor must not rely on the loader's checks.
    let mut def = case.wat_def("imp", &exit_wat(0), &Spec::default());
    let evil = wat::parse_str(
        r#"(module (import "env" "launch_missiles" (func)) (func (export "_start")))"#,
    )
    .unwrap();
    def.files.insert("guest.wasm".into(), evil.clone());
    let (o, _) = case.run(&exec, &def).await;
    assert_eq!(o.status, Status::Rejected, "{o:?}");
    assert!(
        o.reason.as_deref().unwrap().contains("launch_missiles"),
        "{o:?}"
    );

    // The loader refuses it too, naming the import.
    let dir = case.path().join("def-imp");
    std::fs::write(dir.join("guest.wasm"), &evil).unwrap();
    let err = task_defs::Definition::load_dir(&dir).unwrap_err();
    assert!(
        err.diagnostics()
            .unwrap()
            .to_string()
            .contains("launch_missiles"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_module_is_rejected() {
    let case = Case::new();
    let exec = case.executor();
    let mut def = case.wat_def("bad", &exit_wat(0), &Spec::default());
    def.files
        .insert("guest.wasm".into(), b"\0asm\x01\0\0\0garbage".to_vec());
    let (o, _) = case.run(&exec, &def).await;
    assert_eq!(o.status, Status::Rejected, "{o:?}");
    assert!(
        o.reason.as_deref().unwrap().contains("invalid module"),
        "{o:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_refusals_are_rejected() {
    let case = Case::new();
    let exec = case.executor();
    let mut def = case.wat_def("mem", &exit_wat(0), &Spec::default());
    def.manifest.limits.memory = 2 << 30;
    let (o, _) = case.run(&exec, &def).await;
    assert_eq!(o.status, Status::Rejected);
    assert!(o.reason.unwrap().contains("limits.memory"));

    let def = case.wat_def("nonempty", &exit_wat(0), &Spec::default());
    let (input, output) = case.run_dirs();
    std::fs::write(output.join("stale"), "x").unwrap();
    let (o, _) = case
        .run_in(&exec, &def, Default::default(), input, output)
        .await;
    assert_eq!(o.status, Status::Rejected);

    let (input, output) = case.run_dirs();
    let params = [("nope".to_string(), "1".to_string())].into();
    let (o, _) = case.run_in(&exec, &def, params, input, output).await;
    assert_eq!(
        o.status,
        Status::Rejected,
        "requestors cannot invent params"
    );
}

/// Wasm has no socket imports to give, so a definition that asks for network is refused
/// rather than run without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_capability_is_rejected() {
    let case = Case::new();
    let exec = case.executor();
    let mut def = case.wat_def("net", &exit_wat(0), &Spec::default());
    def.manifest.capabilities.network = true;
    let (o, _) = case.run(&exec, &def).await;
    assert_eq!(o.status, Status::Rejected, "{o:?}");
    assert!(
        o.reason.as_deref().unwrap().contains("network access"),
        "{o:?}"
    );
}

/// A module of `n` exported functions, each with a little arithmetic: big enough that
/// Cranelift needs measurable time, small enough to build instantly.
fn many_functions_wat(n: usize) -> String {
    let mut w = String::from("(module (memory 1)");
    for i in 0..n {
        w.push_str(&format!(
            "(func (export \"f{i}\") (param i64) (result i64) \
             local.get 0 i64.const {i} i64.mul i64.const 7 i64.add \
             local.get 0 i64.const 3 i64.rotl i64.xor)"
        ));
    }
    w.push_str("(func (export \"_start\")))");
    w
}

/// Module size and compile time are bounded before any guest code runs: an oversized
/// module is refused without compiling it, and a compile that outlives the provider's
/// budget is abandoned as `rejected`, so a hostile module cannot pin the node in Cranelift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_modules_and_slow_compiles_are_rejected() {
    let case = Case::new();
    let module = wat::parse_str(many_functions_wat(4000)).unwrap();
    let def = case.def_with_module("big", &module, &Spec::default());

    let small = WasmExecutor::new(WasmConfig {
        cache_dir: Some(case.path().join("cache-small")),
        max_module_bytes: module.len() as u64 - 1,
        ..crate::harness::wasm_config()
    })
    .unwrap();
    let (o, _) = case.run(&small, &def).await;
    assert_eq!(o.status, Status::Rejected, "{o:?}");
    let reason = o.reason.unwrap();
    assert!(reason.contains("maximum"), "{reason}");
    assert!(reason.contains(&module.len().to_string()), "{reason}");

    let hasty = WasmExecutor::new(WasmConfig {
        cache_dir: Some(case.path().join("cache-hasty")),
        compile_timeout: std::time::Duration::from_millis(1),
        ..crate::harness::wasm_config()
    })
    .unwrap();
    let (o, _) = case.run(&hasty, &def).await;
    assert_eq!(o.status, Status::Rejected, "{o:?}");
    let reason = o.reason.unwrap();
    assert!(reason.contains("longer than 1 ms"), "{reason}");

    // The same module within both bounds runs: the refusals above were the bounds'.
    let (o, _) = case.run(&case.executor(), &def).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
}

#[test]
fn staging_refuses_links_and_special_files() {
    let case = Case::new();
    let caps = TreeCaps {
        bytes: 1 << 20,
        entries: 100,
    };
    let src = case.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f"), "x").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("d/link")).unwrap();
    let dest = case.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let err = stage_inputs(&[src.join("d")], &dest, caps).unwrap_err();
    assert!(matches!(err, FsError::Symlink(_)), "{err}");
    let dest2 = case.path().join("dest2");
    std::fs::create_dir(&dest2).unwrap();
    let err = stage_inputs(&[src.join("d/link")], &dest2, caps).unwrap_err();
    assert!(matches!(err, FsError::Symlink(_)), "{err}");

    std::fs::remove_file(src.join("d/link")).unwrap();
    let dest3 = case.path().join("dest3");
    std::fs::create_dir(&dest3).unwrap();
    stage_inputs(&[src.join("d")], &dest3, caps).unwrap();
    assert_eq!(std::fs::read_to_string(dest3.join("d/f")).unwrap(), "x");
}
