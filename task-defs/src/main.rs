//! The `task-defs` binary: parses arguments and hands them to `task_defs::cli`.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    task_defs::cliutil::exit_quietly_on_broken_pipe();
    let cli: task_defs::cli::Cli = task_defs::cliutil::parse(task_defs::cli::help::command());
    let out = task_defs::cli::run(cli);
    // A closed pipe (`task-defs hash x | head -c0`) is not an error worth a panic.
    let _ = std::io::stdout().write_all(out.stdout.as_bytes());
    let _ = std::io::stderr().write_all(out.stderr.as_bytes());
    ExitCode::from(out.code)
}
