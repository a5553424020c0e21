//! The `provider` binary: a thin front end over `provider::cli`.

fn main() {
    std::process::exit(provider::cli::main());
}
