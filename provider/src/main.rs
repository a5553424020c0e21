//! The `provider` binary: a thin front end over `provider::cli`.

fn main() {
    pinfold_base::cli::exit_quietly_on_broken_pipe();
    // A compile worker (started by this same executable) never reaches the CLI.
    provider::wasm::dispatch_worker();
    std::process::exit(provider::cli::main());
}
