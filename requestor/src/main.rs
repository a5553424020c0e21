//! The `requestor` binary: a thin shell over [`requestor::cli`].

fn main() {
    task_defs::cliutil::exit_quietly_on_broken_pipe();
    // `requestor demo` runs provider nodes in this process; their compile workers are this
    // executable started again.
    provider::wasm::dispatch_worker();
    std::process::exit(requestor::cli::main());
}
