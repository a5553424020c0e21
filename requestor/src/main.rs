//! The `requestor` binary: a thin shell over [`requestor::cli`].

fn main() {
    task_defs::cliutil::exit_quietly_on_broken_pipe();
    std::process::exit(requestor::cli::main());
}
