//! The `pinfold-demo` binary: a thin clap shell over [`pinfold_demo::main`].

use clap::Parser;

/// Start a registry, provider nodes and a requestor on loopback and run wordfreq through
/// them, explaining each step of the trust chain.
#[derive(Debug, Parser)]
#[command(
    name = "pinfold-demo",
    version,
    about,
    after_help = "exit codes: the requestor's (0 verified success, 1 task failed, 2 usage, \
                  3 refused, 4 verification failed, 5 no provider, 9 other error)"
)]
struct DemoArgs {
    /// Provider nodes to start.
    #[arg(long, default_value_t = 3)]
    providers: usize,
    /// Replicas to run the job on.
    #[arg(long, default_value_t = 2)]
    replicas: usize,
    /// Keep the demo's directory (registry, providers, outputs) instead of deleting it.
    #[arg(long)]
    keep: bool,
}

fn main() {
    // The in-process providers' compile workers are this executable started again.
    provider::wasm::dispatch_worker();
    let a = DemoArgs::parse();
    requestor::cli::init_logging();
    let opts = pinfold_demo::DemoOptions {
        providers: a.providers,
        replicas: a.replicas,
        keep: a.keep,
    };
    let code = match pinfold_demo::main(&opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            requestor::EXIT_ERROR
        }
    };
    std::process::exit(code);
}
