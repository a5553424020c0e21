//! The `provider` binary: a thin front end over `provider::cli`.

fn main() {
    // A compile worker (started by this same executable) never reaches the CLI.
    provider::wasm::dispatch_worker();
    std::process::exit(provider::cli::main());
}
