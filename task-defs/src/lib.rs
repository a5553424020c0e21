//! The pinfold task-definition format: manifest, BLAKE3 identity, validation, bundles.
//!
//! A task definition is a directory holding `taskdef.toml` and the files it references.
//! Authors, reviewers, providers and requestors all agree on a definition through its
//! identity (`blake3:<hex>`, see `SPEC.md`), and every consumer obtains a [`Definition`]
//! through the same validating constructor, so a definition that one tool accepts is a
//! definition that every tool accepts.
//!
//! This crate does no I/O beyond files and knows nothing of wasmtime, Docker or libp2p.

#![deny(missing_docs)]

/// Implements serde for a type through its `Display` and `FromStr`, so the text form that
/// people and other tools see is the only serialised form (identities, hashes, keys).
macro_rules! serde_as_text {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub mod bundle;
pub mod cli;
pub mod cliutil;
pub mod definition;
pub mod diag;
pub mod footprint;
pub mod identity;
pub mod manifest;
pub mod registry;
pub mod scaffold;
pub mod secrets;
pub mod tlog;

pub use definition::{Definition, Error};
pub use diag::{Diagnostic, Diagnostics, Rule};
pub use footprint::{Capability, Footprint};
pub use identity::DefinitionId;
pub use manifest::{Manifest, ParamValue, RuntimeKind, RuntimeSpec};
