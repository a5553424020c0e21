//! Integration tests of task-defs: one test binary, one module per area.

mod bundle;
mod cli;
mod fuzz_regressions;
mod harness;
mod identity;
mod messages;
mod props;
mod registry;
mod registry_limits;
mod tlog;
mod validation;
mod witness;
