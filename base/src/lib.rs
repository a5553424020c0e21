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

pub mod canonical;
pub mod id;
pub mod isolation;
pub mod run;

pub use canonical::{NotCanonical, write_canonical};
pub use id::{BlobId, ID_PREFIX, ParseBlobIdError};
pub use isolation::Isolation;
pub use run::{OutputFile, Status, Usage, output_digest};
