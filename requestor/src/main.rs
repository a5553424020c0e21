//! The `requestor` binary: a thin shell over [`requestor::cli`].

fn main() {
    std::process::exit(requestor::cli::main());
}
