//! The guest reaches nothing but its two directories: escapes fail inside the guest, host files stay untouched, links are never followed.

use provider::Status;

use crate::harness::{Case, Spec, WASI_IMPORTS};

const FD_INPUT: u32 = 3;
const FD_OUTPUT: u32 = 4;
const RIGHT_READ: u64 = 1 << 1;
const RIGHT_WRITE: u64 = 1 << 6;
const O_CREAT: u32 = 1;
const O_TRUNC: u32 = 8;
const CANARY: &str = "canary: must never change\n";

/// A guest that opens `path` relative to `dirfd` and exits with the errno (0 on success),
/// after writing "pwned" to the file if it was opened for writing.
fn open_wat(dirfd: u32, path: &str, oflags: u32, rights: u64) -> String {
    let len = path.len();
    format!(
        r#"(module {WASI_IMPORTS}
      (memory (export "memory") 1)
      (data (i32.const 1024) "{path}")
      (data (i32.const 2048) "pwned")
      (func (export "_start") (local $e i32)
        (local.set $e (call $path_open (i32.const {dirfd}) (i32.const 0) (i32.const 1024)
          (i32.const {len}) (i32.const {oflags}) (i64.const {rights}) (i64.const {rights})
          (i32.const 0) (i32.const 12)))
        (if (local.get $e) (then (call $proc_exit (local.get $e))))
        (i32.store (i32.const 0) (i32.const 2048))
        (i32.store (i32.const 4) (i32.const 5))
        (drop (call $fd_write (i32.load (i32.const 12)) (i32.const 0) (i32.const 1) (i32.const 8)))
        (call $proc_exit (i32.const 0))))"#
    )
}

struct Sandbox {
    case: Case,
    canary: std::path::PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let case = Case::new();
        let canary = case.path().join("canary");
        std::fs::write(&canary, CANARY).unwrap();
        Sandbox { case, canary }
    }

    /// Runs an open attempt with an input dir holding `ok.txt` and two planted links
    /// (`abs` → the canary by absolute path, `rel` → `../../canary`).
    async fn attempt(&self, dirfd: u32, path: &str, oflags: u32, rights: u64) -> provider::Outcome {
        let exec = self.case.executor();
        let def = self.case.wat_def(
            "open",
            &open_wat(dirfd, path, oflags, rights),
            &Spec::default(),
        );
        let (input, output) = self.case.run_dirs();
        std::fs::write(input.join("ok.txt"), "fine").unwrap();
        std::os::unix::fs::symlink(&self.canary, input.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../canary", input.join("rel")).unwrap();
        let (o, _) = self
            .case
            .run_in(&exec, &def, Default::default(), input, output)
            .await;
        assert_eq!(
            std::fs::read_to_string(&self.canary).unwrap(),
            CANARY,
            "host canary changed after opening {path:?}"
        );
        o
    }

    async fn denied(&self, dirfd: u32, path: &str, oflags: u32, rights: u64) {
        let o = self.attempt(dirfd, path, oflags, rights).await;
        assert_eq!(
            o.status,
            Status::Failed,
            "opening {path:?} must fail: {o:?}"
        );
        assert_ne!(o.exit_code, Some(0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_reading_an_input_and_writing_an_output_work() {
    let s = Sandbox::new();
    let o = s.attempt(FD_INPUT, "ok.txt", 0, RIGHT_READ).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    let o = s
        .attempt(FD_OUTPUT, "new.txt", O_CREAT, RIGHT_WRITE | RIGHT_READ)
        .await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert_eq!(o.files.len(), 1);
    assert_eq!(o.files[0].path, "new.txt");
    assert_eq!(
        o.files[0].blake3.hex(),
        blake3::hash(b"pwned").to_hex().to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escapes_fail_inside_the_guest() {
    let s = Sandbox::new();
    s.denied(FD_INPUT, "/etc/passwd", 0, RIGHT_READ).await;
    s.denied(FD_INPUT, "../../../../../../etc/passwd", 0, RIGHT_READ)
        .await;
    s.denied(FD_INPUT, "..", 0, RIGHT_READ).await;
    s.denied(FD_INPUT, "abs", 0, RIGHT_READ).await;
    s.denied(FD_INPUT, "rel", 0, RIGHT_READ).await;
    let canary = s.canary.to_str().unwrap().to_string();
    s.denied(FD_OUTPUT, &canary, O_CREAT | O_TRUNC, RIGHT_WRITE)
        .await;
    s.denied(FD_OUTPUT, "../../canary", O_CREAT | O_TRUNC, RIGHT_WRITE)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_input_directory_is_read_only() {
    let s = Sandbox::new();
    s.denied(FD_INPUT, "new.txt", O_CREAT, RIGHT_WRITE).await;
    s.denied(FD_INPUT, "ok.txt", O_TRUNC, RIGHT_WRITE).await;
    s.denied(FD_INPUT, "abs", O_TRUNC, RIGHT_WRITE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_planted_links_are_dropped_never_followed() {
    let s = Sandbox::new();
    let target = b"../../canary";
    let wat = format!(
        r#"(module {WASI_IMPORTS}
      (import "wasi_snapshot_preview1" "path_symlink"
        (func $path_symlink (param i32 i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 1024) "../../canary")
      (data (i32.const 1100) "evil")
      (func (export "_start")
        (call $proc_exit (call $path_symlink (i32.const 1024) (i32.const {})
          (i32.const {FD_OUTPUT}) (i32.const 1100) (i32.const 4)))))"#,
        target.len()
    );
    let exec = s.case.executor();
    let def = s.case.wat_def("link", &wat, &Spec::default());
    let (o, out) = s.case.run(&exec, &def).await;
    assert_eq!(
        o.status,
        Status::Succeeded,
        "symlink creation itself is allowed: {o:?}"
    );
    assert!(
        std::fs::symlink_metadata(out.join("evil"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(o.files.is_empty(), "{:?}", o.files);
    assert_eq!(o.dropped.len(), 1);
    assert_eq!(o.dropped[0].path, "evil");
    assert!(o.dropped[0].reason.contains("symbolic link"));

    // Copying the outputs out skips the link too.
    let dest = s.case.path().join("copied");
    std::fs::create_dir(&dest).unwrap();
    let c = provider::fsio::collect_outputs(
        &out,
        Some(&dest),
        provider::fsio::TreeCaps {
            bytes: u64::MAX,
            entries: u64::MAX,
        },
    )
    .unwrap();
    assert_eq!(c.dropped.len(), 1);
    assert!(std::fs::symlink_metadata(dest.join("evil")).is_err());
    assert_eq!(std::fs::read_to_string(&s.canary).unwrap(), CANARY);
}
