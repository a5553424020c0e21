//! Integration tests of the provider: one binary, one module per area.

mod cli;
mod component;
mod concurrency;
mod determinism;
mod docker;
mod doctor;
mod harness;
mod interrupt;
mod limits;
mod rejection;
mod sandbox;
mod secrets;
