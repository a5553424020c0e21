//! The pinfold task-definition format: manifest, BLAKE3 identity, validation, bundles.
//!
//! A task definition is a directory holding `taskdef.toml` and the files it references.
//! Authors, reviewers, providers and requestors all agree on a definition through its
//! identity (`blake3:<hex>`, see `SPEC.md`), and every consumer obtains a [`Definition`]
//! through the same validating constructor, so a definition that one tool accepts is a
//! definition that every tool accepts.
//!
//! This crate does no I/O beyond files and knows nothing of wasmtime, Docker or libp2p.
//! The transparency log is `pinfold-tlog`, the registry server and client and the
//! `task-defs` binary are `pinfold-registry`.

#![deny(missing_docs)]

pub mod bundle;
pub mod definition;
pub mod diag;
pub mod footprint;
pub mod identity;
pub mod manifest;
pub mod scaffold;
pub mod secrets;

pub use definition::{Definition, Error};
pub use diag::{Diagnostic, Diagnostics, Rule};
pub use footprint::{Capability, Footprint};
pub use identity::DefinitionId;
pub use manifest::{Manifest, ParamValue, RuntimeKind, RuntimeSpec};
