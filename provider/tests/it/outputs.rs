//! Hostile output trees: every depth counted, sparse files refused, names held to the protocol's limit set, collection inside the time limit, exact stdout bytes, and the descriptor cap.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use provider::executor::output_digest;
use provider::{Status, WasmConfig, WasmExecutor};

use crate::harness::{Case, Spec};

/// Every path a result lists passes the rules a requestor applies, so the result of a
/// hostile task can never make an honest provider look dishonest.
fn assert_within_the_limit_set(o: &provider::Outcome) {
    assert!(o.files.len() <= pinfold_net::protocol::MAX_OUTPUT_FILES);
    let mut total = 0;
    for f in &o.files {
        pinfold_net::protocol::check_output_path(&f.path).unwrap();
        total += f.path.len();
    }
    assert!(total <= pinfold_net::protocol::MAX_OUTPUT_PATHS_TOTAL);
}

fn tree_bytes(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        n += if m.is_dir() {
            tree_bytes(&e.path())
        } else {
            m.len()
        };
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_written_below_the_old_depth_limit_is_counted() {
    // The watch used to stop descending at depth 32, so a file 40 directories down was
    // never counted: the guest filled the disk until its timeout. It writes at most 256 MiB
    // here so that the unfixed executor fails the test without filling this machine.
    let case = Case::new();
    let def = case.c_def(
        "deep",
        r#"#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
static char buf[65536];
int main(void) {
    char path[512] = "/output";
    for (int i = 0; i < 40; i++) { strcat(path, "/d"); mkdir(path, 0755); }
    strcat(path, "/big");
    int fd = open(path, O_CREAT | O_WRONLY, 0644);
    memset(buf, 'x', sizeof buf);
    for (int i = 0; i < 4096; i++) write(fd, buf, sizeof buf);
    for (;;) {}
}
"#,
        &Spec {
            output: "1MiB",
            memory: "4MiB",
            timeout: "20s",
            ..Spec::default()
        },
    );
    let t = Instant::now();
    let (o, out) = case.run(&case.executor(), &def).await;
    let took = t.elapsed();
    assert_eq!(o.status, Status::OutputExceeded, "{:?}", o.reason);
    assert!(
        took < Duration::from_secs(10),
        "stopped by the watch: {took:?}"
    );
    let written = tree_bytes(&out);
    assert!(
        written <= (1 << 20) + (4 << 20) + (16 << 20),
        "overshoot bound: {written}"
    );
    assert!(o.files.is_empty(), "{:?}", o.files);
}

#[test]
fn sparse_files_are_output_exceeded_and_never_copied_by_exec() {
    // A 1 GiB hole costs the guest nothing; `provider exec --output` used to copy it in
    // full (it collected without a cap). Now only the files the run returned are copied.
    let case = Case::new();
    case.c_def(
        "sparse",
        r#"#include <fcntl.h>
#include <unistd.h>
int main(void) {
    int fd = open("/output/sparse", O_CREAT | O_WRONLY, 0644);
    ftruncate(fd, 1LL << 30);
    int g = open("/output/hole", O_CREAT | O_WRONLY, 0644);
    pwrite(g, "x", 1, (1LL << 30) - 1);
    return 0;
}
"#,
        &Spec {
            output: "1MiB",
            ..Spec::default()
        },
    );
    let out = case.path().join("out");
    let r = Command::new(env!("CARGO_BIN_EXE_provider"))
        .env("PINFOLD_CACHE_DIR", case.path().join("cache"))
        .args(["exec", "--json", "--allow-unreviewed", "--output"])
        .arg(&out)
        .arg(case.path().join("def-sparse"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&r.stderr));
    });
    assert_eq!(v["status"], "output_exceeded", "{v}");
    assert_eq!(r.status.code(), Some(6));
    assert!(tree_bytes(&out) <= 1 << 20, "copied past the cap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_names_beyond_the_protocol_limit_set_make_the_run_output_exceeded() {
    let case = Case::new();
    let exec = case.executor();
    let cases = [
        (
            "control",
            r#"#include <stdio.h>
int main(void) { FILE *f = fopen("/output/bad\x01name", "w"); fputs("x", f); fclose(f);
  f = fopen("/output/good", "w"); fputs("y", f); fclose(f); return 0; }
"#,
        ),
        (
            "long",
            r#"#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
int main(void) {
    char p[2048] = "/output";
    char seg[202]; seg[0] = '/'; memset(seg + 1, 'a', 200); seg[201] = 0;
    for (int i = 0; i < 6; i++) { strcat(p, seg); mkdir(p, 0755); }
    strcat(p, "/f"); FILE *f = fopen(p, "w"); fputs("x", f); fclose(f); return 0;
}
"#,
        ),
        (
            "many",
            r#"#include <stdio.h>
int main(void) {
    char p[64];
    for (int i = 0; i < 4097; i++) { snprintf(p, sizeof p, "/output/f%05d", i);
        FILE *f = fopen(p, "w"); if (!f) return 1; fclose(f); }
    return 0;
}
"#,
        ),
    ];
    for (name, src) in cases {
        let def = case.c_def(name, src, &Spec::default());
        let (o, _) = case.run(&exec, &def).await;
        assert_eq!(o.status, Status::OutputExceeded, "{name}: {:?}", o.reason);
        assert_within_the_limit_set(&o);
        eprintln!("{name}: {:?}", o.reason);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collecting_outputs_counts_against_the_time_limit() {
    // The guest runs until just before its 2 s limit, leaving outputs that take far longer
    // to hash than the ~20 ms left: collecting them used to take as long as it took,
    // outside the limit. The outputs are a fixed 256 MiB written at once (not as many files
    // as the guest manages to create before its end), so how much collection has to do does
    // not depend on how fast this machine's disk creates files: a slow one once left too
    // little to overrun the window.
    let case = Case::new();
    let exec = WasmExecutor::new(WasmConfig {
        timeout_grace: Duration::from_millis(10),
        ..crate::harness::wasm_config()
    })
    .unwrap();
    let def = case.c_def(
        "leave",
        r#"#include <stdio.h>
#include <string.h>
#include <time.h>
static char buf[1 << 20];
static long ms(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000 + t.tv_nsec / 1000000; }
int main(void) {
    long t0 = ms();
    memset(buf, 'z', sizeof buf);
    char p[64];
    for (int i = 0; i < 64; i++) {
        snprintf(p, sizeof p, "/output/f%02d", i);
        FILE *f = fopen(p, "w"); if (!f) return 1;
        for (int k = 0; k < 4; k++) if (fwrite(buf, 1, sizeof buf, f) != sizeof buf) return 2;
        fclose(f);
    }
    if (ms() - t0 >= 1900) return 3; /* too slow to leave collection the tail of the limit */
    while (ms() - t0 < 1990) {}
    return 0;
}
"#,
        &Spec {
            output: "320MiB",
            timeout: "2s",
            ..Spec::default()
        },
    );
    let t = Instant::now();
    let (o, _) = case.run(&exec, &def).await;
    assert_eq!(o.status, Status::TimedOut, "{:?}", o.reason);
    assert!(
        o.reason.as_deref().unwrap_or("").contains("collecting"),
        "{:?}",
        o.reason
    );
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_that_is_not_utf8_is_kept_and_digested_byte_exact() {
    // Stored lossy but digested raw, such stdout made every requestor refuse an honest
    // provider's receipt.
    let case = Case::new();
    let def = case.c_def(
        "bytes",
        r#"#include <unistd.h>
int main(void) { write(1, "\xff\xfe" "a\x80\n", 5); return 0; }
"#,
        &Spec::default(),
    );
    let (o, _) = case.run(&case.executor(), &def).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert_eq!(o.stdout, b"\xff\xfea\x80\n");
    assert_eq!(o.outputs, output_digest(&o.files, b"\xff\xfea\x80\n"));
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_opening_thousands_of_files_traps_at_the_handle_cap() {
    // A core module used to hold ~20,000 host descriptors at once, starving the node.
    let case = Case::new();
    let exec = case.executor();
    let def = case.c_def(
        "hoard",
        r#"#include <fcntl.h>
#include <stdio.h>
int main(void) {
    int n = 0;
    for (int i = 0; i < 20000; i++) if (open("/output", O_RDONLY | O_DIRECTORY) >= 0) n++;
    printf("opened %d\n", n);
    return 0;
}
"#,
        &Spec::default(),
    );
    let before = open_fds();
    let (o, _) = case.run(&exec, &def).await;
    assert_eq!(o.status, Status::Trapped, "{o:?}");
    assert!(
        o.reason.as_deref().unwrap_or("").contains("handle limit"),
        "{o:?}"
    );
    assert!(
        open_fds() <= before + 8,
        "descriptors given back: {before} -> {}",
        open_fds()
    );
}
