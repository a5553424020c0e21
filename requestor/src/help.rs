//! Examples and exit codes for each `requestor` subcommand's `--help` (and man page).

use clap::CommandFactory as _;

use crate::cli::Cli;

/// (subcommand, epilogue); `completions` and `man` get theirs from
/// [`task_defs::cliutil::with_help`].
pub const TEXTS: &[(&str, &str)] = &[
    (
        "run",
        "examples:\n  requestor run blake3:<64 hex> --bootstrap /ip4/10.0.0.5/tcp/4001/p2p/12D3... \
         --input corpus.txt --param top=5\n  \
         requestor run ./wordfreq --mdns --replicas 2 --output out/ --json\n\n\
         exit codes: 0 verified success, 1 the task ran and did not succeed, 2 usage error, \
         3 refused by every provider, 4 verification failed (digest, receipt, replicas disagree), \
         5 no provider found or reachable, 9 other error",
    ),
    (
        "verify",
        "examples:\n  requestor verify out/receipt.json --outputs out/\n  \
         requestor verify out/receipt.json --json\n\n\
         exit codes: 0 the receipt (and outputs) verify, 2 usage error, 4 verification failed, \
         9 the receipt cannot be read",
    ),
    (
        "providers",
        "examples:\n  requestor providers --bootstrap /ip4/10.0.0.5/tcp/4001/p2p/12D3...\n  \
         requestor providers --mdns --wait 5 --json\n\n\
         exit codes: 0 listed (possibly none), 2 no --bootstrap or --mdns, 9 network error",
    ),
    (
        "demo",
        "examples:\n  requestor demo\n  requestor demo --providers 3 --replicas 2 --keep\n\n\
         a narrated walkthrough: its output is text, not JSON\n\n\
         exit codes: 0 the demo job verified, 9 the demo failed",
    ),
];

/// The `requestor` command with every epilogue.
pub fn command() -> clap::Command {
    task_defs::cliutil::with_help(Cli::command(), TEXTS, 9)
}
