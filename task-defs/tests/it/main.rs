//! Integration tests of task-defs (the format): one test binary, one module per area.

mod bundle;
mod fuzz_regressions;
mod harness;
mod identity;
mod props;
mod validation;
