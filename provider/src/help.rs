//! Examples and exit codes for each `provider` subcommand's `--help` (and man page).

use clap::CommandFactory as _;

use crate::cli::Cli;

/// (subcommand, epilogue); `completions` and `man` get theirs from
/// [`pinfold_base::cli::with_help`].
pub const TEXTS: &[(&str, &str)] = &[
    (
        "exec",
        "examples:\n  \
         provider exec ./wordfreq --allow-unreviewed --input corpus.txt --param top=5\n  \
         provider exec ./task.bundle --registry http://127.0.0.1:8417 --log-key ed25519:... \\\n      \
         --reviewer ed25519:... --threshold 1 --output out/ --json\n\n\
         exit codes: 0 succeeded, 1 failed (guest exit code not 0), 2 usage error, 3 trapped, \
         4 timed_out, 5 memory_exceeded, 6 output_exceeded, 7 rejected, \
         8 unreviewed definition refused, 9 provider error, 130/143 interrupted by SIGINT/SIGTERM",
    ),
    (
        "doctor",
        "examples:\n  provider doctor\n  provider doctor --config /etc/pinfold/provider.toml --json\n\n\
         exit codes: 0 every check passed, 1 a check failed, 9 could not run the checks",
    ),
    (
        "init",
        "examples:\n  provider init --dir /etc/pinfold\n  provider init --dir node --json\n\n\
         exit codes: 0 created, 2 the directory already holds a configuration or cannot be written",
    ),
    (
        "run",
        "examples:\n  provider run --config /etc/pinfold/provider.toml\n  \
         provider run --listen /ip4/0.0.0.0/tcp/4001 --metrics-listen 127.0.0.1:9464 --log-format json\n  \
         provider run --listen 0.0.0.0:4001 --relay /ip4/203.0.113.7/udp/4001/quic-v1/p2p/12D3... \
         --bootstrap /ip4/203.0.113.7/udp/4001/quic-v1/p2p/12D3...\n\n\
         prints `peer id`, `listening on` lines, `relayed at` lines (with relays), a \
         `reachability` line, `metrics http://ADDR` when serving metrics, then `ready`; logs go \
         to stderr\n\n\
         exit codes: 0 clean shutdown (SIGINT/SIGTERM), 2 configuration error, 9 runtime error",
    ),
    (
        "jobs",
        "examples:\n  provider jobs --config /etc/pinfold/provider.toml\n  provider jobs --limit 20 --json\n\n\
         exit codes: 0 listed, 9 the configuration or job store cannot be read",
    ),
    (
        "status",
        "examples:\n  provider status --config /etc/pinfold/provider.toml\n  provider status --json\n\n\
         exit codes: 0 a node runs with this configuration, 1 none does, 9 the configuration or \
         status file cannot be read",
    ),
    (
        "prune",
        "examples:\n  provider prune --config /etc/pinfold/provider.toml --dry-run\n  provider prune --json\n\n\
         exit codes: 0 pruned, 2 configuration error, 9 the job store or a directory cannot be read",
    ),
];

/// The `provider` command with every epilogue.
pub fn command() -> clap::Command {
    pinfold_base::cli::with_help(Cli::command(), TEXTS, 9)
}
