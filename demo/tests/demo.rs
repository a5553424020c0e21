//! `pinfold-demo` end to end: the README's first command must keep working.

#[test]
fn the_demo_runs_wordfreq_on_two_agreeing_providers() {
    // The real binary: the demo's in-process providers start their compile workers from
    // the executable they run in, which must be `pinfold-demo` itself.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pinfold-demo"))
        .args(["--providers", "2", "--replicas", "2"])
        .output()
        .expect("running pinfold-demo");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
