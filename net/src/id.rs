//! Content identities: the shared [`pinfold_base::id`] types, re-exported where the network
//! always had them.

pub use pinfold_base::id::{BlobId, ID_PREFIX, ParseBlobIdError, is_identity};
