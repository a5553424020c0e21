//! The `provider` binary: a thin front end over `provider::cli`.

fn main() {
    task_defs::cliutil::exit_quietly_on_broken_pipe();
    // A compile worker (started by this same executable) never reaches the CLI.
    provider::wasm::dispatch_worker();
    std::process::exit(provider::cli::main());
}
