//! The pinfold provider: runs hash-pinned task definitions in sandboxes that assume the task is hostile.
//!
//! The library holds all the logic; the `provider` binary is a thin clap front end over
//! [`cli`]. Executors share the [`Executor`] abstraction: the [`WasmExecutor`] and the
//! [`DockerExecutor`].

pub mod cli;
pub mod docker;
pub mod doctor;
pub mod executor;
pub mod executors;
pub mod fsio;
pub mod gate;
pub mod help;
pub mod node;
pub mod wasm;

pub use docker::{DockerConfig, DockerExecutor};
pub use executor::{Dropped, Executor, Outcome, OutputFile, RunRequest, Status, Usage};
pub use executors::Executors;
pub use wasm::{WasmConfig, WasmExecutor};
