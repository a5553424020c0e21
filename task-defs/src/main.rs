//! The `task-defs` binary: parses arguments and hands them to `task_defs::cli`.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let out = task_defs::cli::run(task_defs::cli::Cli::parse());
    // A closed pipe (`task-defs hash x | head -c0`) is not an error worth a panic.
    let _ = std::io::stdout().write_all(out.stdout.as_bytes());
    let _ = std::io::stderr().write_all(out.stderr.as_bytes());
    ExitCode::from(out.code)
}
