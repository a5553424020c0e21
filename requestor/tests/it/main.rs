//! The `requestor` binary on its own (no network): what it refuses before it dials anyone,
//! and the local job store's commands. One test binary for the crate; it also makes
//! `cargo test --workspace` build the `requestor` executable the end-to-end tests run.

mod cli;
