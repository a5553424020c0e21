//! The registry's transparency log: entries, Merkle tree, signed checkpoints, verifier.
//!
//! The log is an RFC 6962 / RFC 9162 Merkle tree over SHA-256 (leaf = SHA-256(0x00 ‖ leaf),
//! node = SHA-256(0x01 ‖ left ‖ right)) whose heads are published as C2SP
//! `tlog-checkpoint` signed notes, so standard witnesses and tools can follow it. Its
//! leaves are [`Entry`] values (publications and reviews of BLAKE3 definition identities)
//! in canonical JSON. [`Verifier`] is the client side: it follows checkpoints, refuses
//! forks and rollbacks, and keeps the verified index that [`Verifier::status`] answers from.
//! [`witness`] adds C2SP witness cosignatures, so a client can require that independent
//! witnesses saw the same history before it trusts a checkpoint.
//!
//! **Why the Merkle and note code is our own.** We evaluated `ct-merkle` 0.3 and
//! Cloudflare's `tlog_tiles` / `signed_note` 0.2. `ct-merkle` proves and verifies
//! RFC 6962 proofs, but only over its own in-memory tree that owns every leaf value, so
//! the registry server could not prove from leaf hashes kept in SQLite; it also builds on
//! `digest` 0.11 while the workspace uses `sha2` 0.10, duplicating the hash stack.
//! `tlog_tiles` is a faithful port of Go's `tlog` and fits servers that store Go's
//! "stored hash" layout, but it drags in `url`, `thiserror` 1 and `base64` 0.21, and its
//! note parser is not ours to make as strict as hostile input warrants. What we need is
//! small: four RFC 9162 algorithms (about 200 lines, checked here against the Certificate
//! Transparency known-answer vectors and exhaustively against the RFC's recursive
//! definitions), a frontier for clients, and a strict signed-note parser. Writing it
//! keeps one hash stack, lets proofs come from any [`HashSource`] (with cached perfect
//! subtrees for O(log² n) proofs, see [`MemoryTree`]), and keeps every parser under our
//! own size caps and error types.
//!
//! Pure: no files, no network, no clock. The registry (`pinfold-registry`) stores and serves
//! the log; providers and requestors run [`Verifier`] over what it serves.

#![deny(missing_docs)]

pub mod entry;
pub mod keys;
pub mod merkle;
pub mod note;
pub mod verifier;
pub mod witness;

pub use entry::{Entry, EntryError, MAX_STATEMENT_TIME, Published, Review, ReviewAction};
pub use keys::{KeyError, PublicKey, SecretKey, Signature};
pub use merkle::{
    Frontier, Hash, HashSource, MemoryTree, ProofError, TreeError, consistency_proof,
    inclusion_proof, leaf_hash, node_hash, root, verify_consistency, verify_inclusion,
};
pub use note::{Checkpoint, CheckpointError, Note, NoteError, NoteSigner, NoteVerifier};
pub use verifier::{
    ConfigError, DefinitionRecord, MAX_STATEMENT_FUTURE_SECS, StaleStatement, Status, StatusError,
    StatusReport, SyncError, UpdateReport, Verifier, VerifierConfig, VerifierState, Vote,
    VoteReport,
};
pub use witness::{
    AddCheckpoint, Cosigner, CosignerKey, TooFewCosignatures, Witness, WitnessError, WitnessPolicy,
};
