//! Examples and exit codes for each `task-defs` subcommand's `--help` (and man page).

use clap::CommandFactory as _;

use super::Cli;

/// (subcommand path, epilogue); `completions` and `man` get theirs from
/// [`pinfold_base::cli::with_help`].
pub const TEXTS: &[(&str, &str)] = &[
    (
        "new",
        "examples:\n  task-defs new mytask --wasm build/mytask.wasm\n  \
         task-defs new mytask --docker busybox@sha256:<64 hex> --entrypoint /bin/sh --json\n\n\
         exit codes: 0 created, 2 usage error, 3 the directory is not empty, the module or image is refused, I/O",
    ),
    (
        "hash",
        "examples:\n  task-defs hash ./mytask\n  task-defs hash mytask.bundle --json\n  \
         task-defs hash ./mytask --canonical\n\n\
         exit codes: 0 printed, 1 invalid definition or bundle, 2 usage error, 3 I/O",
    ),
    (
        "check",
        "examples:\n  task-defs check ./mytask\n  task-defs check mytask.bundle --json\n\n\
         exit codes: 0 valid, 1 invalid (every problem is listed), 2 usage error, 3 I/O",
    ),
    (
        "pack",
        "examples:\n  task-defs pack ./mytask -o mytask.bundle\n  task-defs pack ./mytask -o mytask.bundle --json\n\n\
         exit codes: 0 written, 1 invalid definition, 2 usage error, 3 I/O",
    ),
    (
        "unpack",
        "examples:\n  task-defs unpack mytask.bundle -o mytask --expect blake3:<64 hex>\n\n\
         exit codes: 0 written, 1 invalid bundle, 2 usage error, 3 identity mismatch or I/O",
    ),
    (
        "keygen",
        "examples:\n  task-defs keygen -o reviewer.key\n  task-defs keygen -o author.key --json\n\n\
         exit codes: 0 created, 2 usage error, 3 the file exists or cannot be written",
    ),
    (
        "serve",
        "examples:\n  task-defs serve --data /var/lib/pinfold-registry --listen 0.0.0.0:8417 \\\n      \
         --reviewer alice=ed25519:... --threshold 1 --metrics-listen 127.0.0.1:9464\n\n\
         prints `listening on http://ADDR` first (then `metrics http://ADDR` with --metrics-listen), \
         or with --json one JSON object with the same facts\n\n\
         exit codes: 0 clean shutdown (SIGINT/SIGTERM), 2 usage error, 3 cannot open the data \
         directory or bind the address",
    ),
    (
        "queue",
        "examples:\n  task-defs queue hide blake3:<64 hex> --data /var/lib/pinfold-registry --reason spam\n\n\
         exit codes: 0 done, 2 usage error, 3 unknown definition or I/O",
    ),
    (
        "witness",
        "examples:\n  task-defs witness --data witness/ --name witness.example --log <log vkey> \
         --listen 127.0.0.1:8418\n\n\
         prints `listening on http://ADDR` and `witness vkey ...`, or with --json one JSON object\n\n\
         exit codes: 0 clean shutdown, 2 usage error, 3 cannot open the data directory or bind",
    ),
    (
        "publish",
        "examples:\n  task-defs publish ./mytask --registry http://127.0.0.1:8417 --key author.key\n  \
         task-defs publish mytask.bundle --registry https://registry.example --key author.key --json\n\n\
         exit codes: 0 published (or already), 1 invalid definition, 2 usage error, \
         3 registry unreachable or I/O, 4 the registry refused (rate, quota, size, author policy)",
    ),
    (
        "review list",
        "examples:\n  task-defs review list --registry http://127.0.0.1:8417\n  \
         task-defs review list --registry http://127.0.0.1:8417 --all --json\n\n\
         exit codes: 0 listed, 2 usage error, 3 registry unreachable, 4 refused",
    ),
    (
        "review show",
        "examples:\n  task-defs review show blake3:<64 hex> --registry http://127.0.0.1:8417\n\n\
         exit codes: 0 shown, 1 the bundle does not match its identity, 2 usage error, \
         3 registry unreachable, 4 refused",
    ),
    (
        "review approve",
        "examples:\n  task-defs review approve blake3:<64 hex> --registry http://127.0.0.1:8417 --key reviewer.key\n\n\
         exit codes: 0 logged (or already), 2 usage error, 3 registry unreachable or I/O, 4 refused",
    ),
    (
        "review reject",
        "examples:\n  task-defs review reject blake3:<64 hex> --registry http://127.0.0.1:8417 \
         --key reviewer.key --reason \"reads the network\"\n\n\
         exit codes: 0 logged (or already), 2 usage error (no --reason), 3 registry unreachable or I/O, 4 refused",
    ),
    (
        "review revoke",
        "examples:\n  task-defs review revoke blake3:<64 hex> --registry http://127.0.0.1:8417 \
         --key reviewer.key --reason \"CVE-2026-0001\"\n\n\
         exit codes: 0 logged (or already), 2 usage error (no --reason), 3 registry unreachable or I/O, 4 refused",
    ),
    (
        "status",
        "examples:\n  task-defs status blake3:<64 hex> --registry http://127.0.0.1:8417\n  \
         task-defs status blake3:<64 hex> --registry http://127.0.0.1:8417 --log-key ed25519:... \\\n      \
         --reviewer ed25519:... --threshold 1 --json\n\n\
         exit codes: 0 printed (whatever the status), 2 usage error, 3 registry unreachable, \
         4 refused, 5 the log failed verification (fork, rollback, tampering, stale checkpoint)",
    ),
];

/// The `task-defs` command with every epilogue.
pub fn command() -> clap::Command {
    pinfold_base::cli::with_help(Cli::command(), TEXTS, 3)
}
