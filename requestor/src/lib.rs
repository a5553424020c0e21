//! The pinfold requestor: will find providers, submit tasks and verify outputs and receipts.
//!
//! Not built yet: the peer-network issue brings it. Until then the binary says so and exits
//! with a distinct code rather than pretending to work.

/// What the binary prints while the requestor does not exist yet.
pub const NOT_YET: &str =
    "requestor: not implemented yet; run definitions locally with `provider exec`";
