//! The `requestor` binary: a thin shell over [`requestor::cli`].

fn main() {
    pinfold_base::cli::exit_quietly_on_broken_pipe();
    std::process::exit(requestor::cli::main());
}
