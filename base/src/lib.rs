//! The vocabulary every pinfold crate shares, so no two crates hold twin types.
//!
//! Like iroh-base, this crate is small on purpose and depends on nothing of pinfold's:
//! content identities ([`BlobId`]), how a run ended ([`Status`]), what it used ([`Usage`]),
//! what it returned ([`OutputFile`], [`output_digest`]), how strongly a sandbox separates a
//! task from the host ([`Isolation`]), and the one canonical JSON writer
//! ([`canonical::write_canonical`]) that definition identities, the output digest, ads and
//! receipts are all computed over. The provider, the network, the requestor and the format
//! crate use these types directly; nothing converts between look-alikes through strings.

#![deny(missing_docs)]

/// Implements serde for a type through its `Display` and `FromStr`, so the text form that
/// people and other tools see is the only serialised form (identities, hashes, keys).
/// The calling crate must depend on `serde`.
#[macro_export]
macro_rules! serde_as_text {
    ($t:ty) => {
        impl ::serde::Serialize for $t {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $t {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as ::serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(::serde::de::Error::custom)
            }
        }
    };
}

pub mod canonical;
#[cfg(feature = "cli")]
pub mod cli;
pub mod fs;
pub mod id;
pub mod isolation;
pub mod run;

pub use canonical::{NotCanonical, write_canonical};
pub use id::{BlobId, ID_PREFIX, ParseBlobIdError};
pub use isolation::Isolation;
pub use run::{OutputFile, Status, Usage, output_digest};
