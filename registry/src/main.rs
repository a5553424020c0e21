//! The `task-defs` binary: parses arguments and hands them to `pinfold_registry::cli`.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    pinfold_base::cli::exit_quietly_on_broken_pipe();
    let cli: pinfold_registry::cli::Cli =
        pinfold_base::cli::parse(pinfold_registry::cli::help::command());
    let out = pinfold_registry::cli::run(cli);
    // A closed pipe (`task-defs hash x | head -c0`) is not an error worth a panic.
    let _ = std::io::stdout().write_all(out.stdout.as_bytes());
    let _ = std::io::stderr().write_all(out.stderr.as_bytes());
    ExitCode::from(out.code)
}
