//! Log entries (publications and reviews), their canonical leaf bytes and signed statements.
//!
//! A leaf is the canonical JSON (see [`crate::identity::write_canonical`]) of an [`Entry`];
//! [`Entry::from_leaf`] accepts only that exact encoding, so every entry has one leaf and
//! one leaf hash. Signatures do not cover the leaf but a separate *statement*: canonical
//! JSON whose `type` member (`pinfold-publish/1`, `pinfold-review/1`) separates its domain
//! from every other thing these keys sign (definition documents are `pinfold-taskdef/1`,
//! checkpoints are signed notes, which never start with `{`). The statement names the
//! signing key, so a signature cannot be re-attributed to another key.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::keys::{KeyError, PublicKey, SecretKey, Signature};
use crate::identity::{DefinitionId, write_canonical};

/// The `type` member of an author's publication statement.
pub const PUBLISH_STATEMENT_TYPE: &str = "pinfold-publish/1";
/// The `type` member of a reviewer's statement.
pub const REVIEW_STATEMENT_TYPE: &str = "pinfold-review/1";
/// The largest leaf accepted; bigger leaves are refused before parsing.
pub const MAX_LEAF_BYTES: usize = 16 * 1024;

/// An author published a definition identity to the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Published {
    /// The definition's identity.
    pub definition: DefinitionId,
    /// The definition's name, as its manifest says.
    pub name: String,
    /// The definition's version, as its manifest says.
    pub version: String,
    /// The author's key.
    pub author: PublicKey,
    /// The author's signature over [`Published::statement`].
    pub signature: Signature,
    /// When the author signed, in Unix seconds.
    pub time: u64,
}

impl Published {
    /// Signs a publication as `author`.
    pub fn sign(
        author: &SecretKey,
        definition: DefinitionId,
        name: &str,
        version: &str,
        time: u64,
    ) -> Published {
        let mut p = Published {
            definition,
            name: name.to_string(),
            version: version.to_string(),
            author: author.public_key(),
            signature: Signature([0; 64]),
            time,
        };
        p.signature = author.sign(&p.statement());
        p
    }

    /// The bytes the author signs.
    pub fn statement(&self) -> Vec<u8> {
        canonical(&json!({
            "type": PUBLISH_STATEMENT_TYPE,
            "definition": self.definition,
            "name": self.name,
            "version": self.version,
            "author": self.author,
            "time": self.time,
        }))
    }

    /// Checks the author's signature.
    pub fn verify(&self) -> Result<(), KeyError> {
        self.author.verify(&self.statement(), &self.signature)
    }
}

/// What a reviewer says about a definition identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewAction {
    /// The reviewer vouches for the definition.
    Approve,
    /// The reviewer refuses the definition.
    Reject,
    /// The reviewer withdraws trust for good; it outranks every approval.
    Revoke,
}

impl ReviewAction {
    /// The wire name: `approve`, `reject` or `revoke`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewAction::Approve => "approve",
            ReviewAction::Reject => "reject",
            ReviewAction::Revoke => "revoke",
        }
    }
}

/// A reviewer's signed statement about a definition identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Review {
    /// The reviewer's key.
    pub reviewer: PublicKey,
    /// What the reviewer says.
    pub action: ReviewAction,
    /// The definition the statement is about.
    pub definition: DefinitionId,
    /// Why (may be empty for approvals).
    pub reason: String,
    /// The reviewer's signature over [`Review::statement`].
    pub signature: Signature,
    /// When the reviewer signed, in Unix seconds.
    pub time: u64,
}

impl Review {
    /// Signs a review as `reviewer`.
    pub fn sign(
        reviewer: &SecretKey,
        action: ReviewAction,
        definition: DefinitionId,
        reason: &str,
        time: u64,
    ) -> Review {
        let mut r = Review {
            reviewer: reviewer.public_key(),
            action,
            definition,
            reason: reason.to_string(),
            signature: Signature([0; 64]),
            time,
        };
        r.signature = reviewer.sign(&r.statement());
        r
    }

    /// The bytes the reviewer signs.
    pub fn statement(&self) -> Vec<u8> {
        canonical(&json!({
            "type": REVIEW_STATEMENT_TYPE,
            "reviewer": self.reviewer,
            "action": self.action.as_str(),
            "definition": self.definition,
            "reason": self.reason,
            "time": self.time,
        }))
    }

    /// Checks the reviewer's signature.
    pub fn verify(&self) -> Result<(), KeyError> {
        self.reviewer.verify(&self.statement(), &self.signature)
    }
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Entry {
    /// An author published a definition.
    Published(Published),
    /// A reviewer approved, rejected or revoked a definition.
    Review(Review),
}

/// Why bytes are not a log entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Bigger than [`MAX_LEAF_BYTES`].
    #[error("entry of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// Not JSON of a known entry type.
    #[error("malformed entry: {0}")]
    Malformed(String),
    /// Valid JSON, but not the canonical encoding.
    #[error("entry is not canonically encoded")]
    NotCanonical,
}

fn canonical(v: &serde_json::Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(v, &mut out);
    out
}

impl Entry {
    /// The canonical leaf bytes that the log stores and hashes.
    pub fn to_leaf(&self) -> Vec<u8> {
        let v = serde_json::to_value(self).expect("entries serialize to json");
        canonical(&v)
    }

    /// Parses leaf bytes, accepting only the canonical encoding.
    pub fn from_leaf(leaf: &[u8]) -> Result<Entry, EntryError> {
        if leaf.len() > MAX_LEAF_BYTES {
            return Err(EntryError::TooLarge(leaf.len()));
        }
        let e: Entry =
            serde_json::from_slice(leaf).map_err(|e| EntryError::Malformed(e.to_string()))?;
        if e.to_leaf() != leaf {
            return Err(EntryError::NotCanonical);
        }
        Ok(e)
    }

    /// The definition the entry is about.
    pub fn definition(&self) -> DefinitionId {
        match self {
            Entry::Published(p) => p.definition,
            Entry::Review(r) => r.definition,
        }
    }

    /// Checks the entry's signature (author's or reviewer's).
    pub fn verify(&self) -> Result<(), KeyError> {
        match self {
            Entry::Published(p) => p.verify(),
            Entry::Review(r) => r.verify(),
        }
    }
}
