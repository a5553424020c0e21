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
        assert!(
            o.usage.measured.fuel.unwrap() > 0,
            "deterministic runs are metered"
        );
        seen.push((o.outputs, o.stdout, o.usage.measured.fuel));
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

/// Lists /input and /output (in readdir order) with what `stat` says of each entry.
const METADATA_PROBE: &str = r#"#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
static void show(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d))) {
        char p[512]; struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        stat(p, &st);
        printf("%s %s d_ino=%llu ino=%llu dev=%llu nlink=%llu size=%lld mtime=%lld.%09ld atime=%lld ctime=%lld\n",
            dir, e->d_name, (unsigned long long)e->d_ino, (unsigned long long)st.st_ino,
            (unsigned long long)st.st_dev, (unsigned long long)st.st_nlink, (long long)st.st_size,
            (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, (long long)st.st_atim.tv_sec,
            (long long)st.st_ctim.tv_sec);
    }
    closedir(d);
}
int main(void) {
    const char *names[] = {"zeta", "alpha", "mid", "Beta", "0first"};
    for (int i = 0; i < 5; i++) {
        char p[64]; snprintf(p, sizeof p, "/output/%s", names[i]);
        FILE *f = fopen(p, "w"); fputs(names[i], f); fclose(f);
    }
    mkdir("/output/sub", 0755);
    for (int i = 0; i < 40; i++) { char p[64]; snprintf(p, sizeof p, "/output/sub/n%d", (i * 17) % 40);
        FILE *f = fopen(p, "w"); fclose(f); }
    show("/input"); show("/output"); show("/output/sub");
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deterministic_runs_agree_on_file_metadata_in_different_scratch_locations() {
    // Times, inode numbers, directory sizes and readdir order used to come from the host:
    // two honest providers (here: one on ext4, one on tmpfs) disagreed on a replicated run.
    let case = Case::new();
    let def = case.c_def(
        "meta",
        METADATA_PROBE,
        &Spec {
            deterministic: true,
            ..Spec::default()
        },
    );
    let tmpfs = case.path().join("tmpfs");
    std::fs::create_dir_all(&tmpfs).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(&tmpfs)
        .status()
        .expect("mount");
    assert!(
        mounted.success(),
        "this test mounts a tmpfs: run it as root"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(tmpfs.clone());
    let exec = case.executor();
    let mut runs = Vec::new();
    for root in [case.path().join("ext"), tmpfs.clone()] {
        let (input, output) = (root.join("in"), root.join("out"));
        std::fs::create_dir_all(input.join("docs")).unwrap();
        for n in ["b.txt", "a.txt", "c.txt"] {
            std::fs::write(input.join(n), n).unwrap();
        }
        std::fs::create_dir_all(&output).unwrap();
        let (o, _) = case
            .run_in(&exec, &def, BTreeMap::new(), input, output)
            .await;
        assert_eq!(o.status, Status::Succeeded, "{o:?}");
        runs.push(o);
    }
    let (a, b) = (&runs[0], &runs[1]);
    eprintln!("{}", a.stdout_text());
    assert_eq!(a.stdout_text(), b.stdout_text());
    assert_eq!(a.outputs, b.outputs);
    let text = a.stdout_text();
    // Listings are sorted by name bytes, `.` and `..` first.
    let names: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("/output "))
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(
        names,
        [".", "..", "0first", "Beta", "alpha", "mid", "sub", "zeta"]
    );
    // readdir and stat agree on inode numbers, times are the fixed epoch, and a directory's
    // size does not depend on the filesystem.
    for l in text
        .lines()
        .filter(|l| !l.contains(" . ") && !l.contains(" .. "))
    {
        let field = |k: &str| {
            l.split(' ')
                .find_map(|f| f.strip_prefix(k))
                .unwrap_or_else(|| panic!("{k} in {l}"))
        };
        assert_eq!(field("d_ino="), field("ino="), "{l}");
        assert_eq!(field("mtime="), "946684800.000000000", "{l}");
        assert_eq!(field("dev="), "0", "{l}");
    }
    assert!(text.contains("/output sub ") && text.contains("size=0 mtime"));
}
