//! Integration tests of pinfold-registry and the `task-defs` binary: one test binary, one
//! module per area.

mod cli;
// The format crate's harness (definitions copied from its fixtures into a temp dir), shared
// rather than copied; the format's tests use the parts these do not.
#[allow(dead_code)]
#[path = "../../../task-defs/tests/it/harness.rs"]
mod harness;
mod messages;
mod registry;
mod registry_limits;
mod witness;
