//! Examples and exit codes for each `requestor` subcommand's `--help` (and man page).

use clap::CommandFactory as _;

use crate::cli::Cli;

/// (subcommand, epilogue); `completions` and `man` get theirs from
/// [`pinfold_base::cli::with_help`].
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
        "jobs",
        "examples:\n  requestor jobs\n  requestor jobs --json\n\n\
         exit codes: 0 listed (possibly none), 9 the local job store cannot be read",
    ),
    (
        "status",
        "examples:\n  requestor status 3f9a\n  requestor status 3f9a2c1b --json\n\n\
         exit codes: 0 answered (the state is in the output), 2 unknown or ambiguous job, \
         5 the provider cannot be reached (the local state is shown), 9 other error",
    ),
    (
        "get",
        "examples:\n  requestor get 3f9a --output out/\n  requestor get 3f9a --timeout 60 --json\n\n\
         exit codes: 0 verified success, 1 the task did not succeed, 2 unknown or ambiguous job, \
         4 verification failed, 5 the provider cannot be reached, 9 other error",
    ),
    (
        "cancel",
        "examples:\n  requestor cancel 3f9a\n  requestor cancel 3f9a --json\n\n\
         exit codes: 0 cancelled (or already ended), 2 unknown or ambiguous job, \
         5 the provider cannot be reached, 9 other error",
    ),
    (
        "logs",
        "examples:\n  requestor logs 3f9a\n  requestor logs 3f9a > stdout.txt 2> stderr.txt\n\n\
         exit codes: 0 printed, 2 unknown or ambiguous job, 5 the provider cannot be reached, \
         9 other error",
    ),
    (
        "describe",
        "examples:\n  requestor describe blake3:3f9a2c --registry http://registry:8080\n  \
         requestor describe ./wordfreq --json\n\n\
         exit codes: 0 described, 2 unknown or ambiguous definition, 9 the registry cannot be read",
    ),
];

/// The `requestor` command with every epilogue.
pub fn command() -> clap::Command {
    pinfold_base::cli::with_help(Cli::command(), TEXTS, 9)
}
