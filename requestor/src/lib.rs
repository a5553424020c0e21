//! The pinfold requestor: finds providers, submits tasks, verifies outputs and receipts.
//!
//! The library holds the logic; the `requestor` binary is a thin clap front end over
//! [`cli`]. A run ([`run::run`]) joins the network as an ephemeral peer ([`session`]),
//! offers the job to providers picked from their signed ads, serves the bundle and inputs
//! by BLAKE3, polls for the result, downloads the outputs and trusts nothing it has not
//! checked: every file's BLAKE3 (verified in flight and again on disk), the output digest
//! recomputed with the provider's own formula ([`verify::output_digest`]), and the
//! receipt's signature by the peer it talked to. Every accepted job is recorded in a local
//! SQLite [`store`], so the [`lifecycle`] commands (`jobs`, `status`, `get`, `cancel`,
//! `logs`) work from a later process; [`describe`] prints what a definition takes. The demo
//! that runs the whole system on loopback in one process is its own crate
//! (`pinfold-demo`), so the requestor never links the provider.

pub mod budget;
pub mod cli;
pub mod describe;
pub mod help;
pub mod lifecycle;
pub mod lifecycle_cli;
pub mod progress;
pub mod run;
pub mod session;
pub mod store;
pub mod verify;

/// Exit code: verified success.
pub const EXIT_OK: i32 = 0;
/// Exit code: the task ran and did not succeed (failed, trapped, timed out, over a limit).
pub const EXIT_TASK_FAILED: i32 = 1;
/// Exit code: bad command line or inputs.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: every provider refused (typed reasons printed).
pub const EXIT_REFUSED: i32 = 3;
/// Exit code: verification failed (digest, receipt, replica disagreement).
pub const EXIT_VERIFY: i32 = 4;
/// Exit code: no provider could be found or reached.
pub const EXIT_NO_PROVIDER: i32 = 5;
/// Exit code: any other error (network, files).
pub const EXIT_ERROR: i32 = 9;
/// Exit code: interrupted (Ctrl-C); accepted jobs were cancelled on their providers.
pub const EXIT_INTERRUPTED: i32 = 130;
