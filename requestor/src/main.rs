//! The `requestor` binary (placeholder until the peer-network issue).

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("{}", requestor::NOT_YET);
    ExitCode::from(3)
}
