//! The writable scratch root at `/`: ordinary programs with relative paths run unchanged, the scratch counts against `limits.output`, is never returned and is gone after the run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use provider::{Status, WasmConfig, WasmExecutor};

use crate::harness::{Case, Spec};

/// A program written for an ordinary filesystem: relative paths against the working
/// directory, a temporary file, a subdirectory, and the input and output reached both as
/// absolute and as relative paths.
const ORDINARY: &str = r#"#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
int main(void) {
    char cwd[256]; if (!getcwd(cwd, sizeof cwd)) return 10;
    FILE *t = fopen("notes.txt", "w"); if (!t) return 11;
    fputs("scratch works\n", t); fclose(t);
    if (mkdir("work", 0755)) return 12;
    t = fopen("work/deep.txt", "w"); if (!t) return 13; fputs("deep\n", t); fclose(t);
    char line[64] = {0};
    t = fopen("notes.txt", "r"); if (!t || !fgets(line, sizeof line, t)) return 14; fclose(t);
    char in_abs[64] = {0}, in_rel[64] = {0};
    t = fopen("/input/data.txt", "r"); if (!t || !fgets(in_abs, sizeof in_abs, t)) return 15; fclose(t);
    t = fopen("input/data.txt", "r"); if (!t || !fgets(in_rel, sizeof in_rel, t)) return 16; fclose(t);
    FILE *o = fopen("output/relative.txt", "w"); if (!o) return 17;
    fprintf(o, "cwd=%s\n%s%s%s", cwd, line, in_abs, in_rel); fclose(o);
    o = fopen("/output/absolute.txt", "w"); if (!o) return 18; fputs("abs\n", o); fclose(o);
    if (fopen("/input/new.txt", "w")) return 19; /* the input stays read-only */
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_programs_with_relative_paths_run_against_a_scratch_root() {
    let case = Case::new();
    let parent = case.path().join("scratch-parent");
    std::fs::create_dir_all(&parent).unwrap();
    let exec = WasmExecutor::new(WasmConfig {
        scratch_parent: Some(parent.clone()),
        ..crate::harness::wasm_config()
    })
    .unwrap();
    for deterministic in [false, true] {
        let def = case.c_def(
            &format!("ordinary{}", u8::from(deterministic)),
            ORDINARY,
            &Spec {
                deterministic,
                ..Spec::default()
            },
        );
        let (input, output) = case.run_dirs();
        std::fs::write(input.join("data.txt"), "input line\n").unwrap();
        let (o, out) = case
            .run_in(&exec, &def, BTreeMap::new(), input, output)
            .await;
        assert_eq!(o.status, Status::Succeeded, "{o:?}");
        // Only the output directory is returned; the scratch files are not.
        let paths: Vec<&str> = o.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["absolute.txt", "relative.txt"]);
        assert_eq!(
            std::fs::read_to_string(out.join("relative.txt")).unwrap(),
            "cwd=/\nscratch works\ninput line\ninput line\n"
        );
        // And the scratch root is gone once the run has ended.
        assert_eq!(std::fs::read_dir(&parent).unwrap().count(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_counts_against_the_output_limit() {
    let case = Case::new();
    let def = case.c_def(
        "scratchfill",
        r#"#include <stdio.h>
#include <string.h>
static char buf[65536];
int main(void) {
    memset(buf, 's', sizeof buf);
    FILE *f = fopen("big.tmp", "w");
    for (int i = 0; i < 64; i++) fwrite(buf, 1, sizeof buf, f);
    fflush(f);
    for (;;) {}
}
"#,
        &Spec {
            output: "1MiB",
            timeout: "20s",
            ..Spec::default()
        },
    );
    let t = Instant::now();
    let (o, _) = case.run(&case.executor(), &def).await;
    assert_eq!(o.status, Status::OutputExceeded, "{:?}", o.reason);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview1_socket_calls_link_without_network_and_fail_on_every_descriptor() {
    // Rust std and other toolchains import `sock_*`; preview 1 cannot create a socket, so a
    // module importing them runs without the network capability and its calls fail.
    let case = Case::new();
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (import "wasi_snapshot_preview1" "sock_recv"
        (func $recv (param i32 i32 i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        (call $exit (call $recv (i32.const 4) (i32.const 0) (i32.const 0) (i32.const 0)
          (i32.const 16) (i32.const 20)))))"#;
    let def = case.wat_def("sock", wat, &Spec::default());
    let (o, _) = case.run(&case.executor(), &def).await;
    assert_eq!(o.status, Status::Failed, "{o:?}");
    // ENOTSOCK on the output directory's descriptor.
    assert_eq!(o.exit_code, Some(57), "{o:?}");
}
