//! Integration tests of the provider: one binary, one module per area.

mod cli;
mod compile;
mod component;
mod concurrency;
mod determinism;
mod docker;
mod doctor;
mod harness;
mod interrupt;
mod isolation;
mod limits;
mod outputs;
mod rejection;
mod sandbox;
mod scratch;
mod secrets;
