//! `requestor demo` end to end in-process: the README's first command must keep working.

#[test]
fn the_demo_runs_wordfreq_on_two_agreeing_providers() {
    let code = requestor::demo::main(&requestor::cli::DemoArgs {
        providers: 2,
        replicas: 2,
        keep: false,
    })
    .expect("demo runs");
    assert_eq!(code, 0);
}
