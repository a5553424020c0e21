//! Receipts: what a provider ran, on what, with what result, signed with its peer key.
//!
//! A [`Receipt`] is a [`ReceiptBody`] plus the provider's public key and an Ed25519
//! signature over `pinfold-receipt/1\n` followed by the body's canonical JSON
//! ([`crate::canonical`]). The saved form is plain JSON carrying the public key, so anyone
//! can check a receipt offline with [`Receipt::verify`], which also checks that the key is
//! the key of the peer id the body names: a receipt cannot be re-signed by someone else
//! and still claim the original provider.

use std::collections::BTreeMap;

use libp2p::PeerId;
use libp2p::identity::Keypair;
use serde::{Deserialize, Serialize};

use crate::canonical::{self, SignatureError};
use crate::protocol::{InputEntry, JobId};

/// Domain string of receipt signatures.
pub const RECEIPT_DOMAIN: &str = "pinfold-receipt/1";
/// Largest saved receipt accepted by [`Receipt::from_json`].
pub const MAX_RECEIPT_BYTES: usize = 1024 * 1024;

/// How a run ended: the shared [`pinfold_base::Status`], under the name receipts always used.
pub use pinfold_base::Status as RunStatus;

/// Resources a run used: the shared [`pinfold_base::Usage`], under the name receipts always
/// used.
pub use pinfold_base::Usage as ReceiptUsage;

/// Everything a receipt attests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptBody {
    /// The provider's job id.
    pub job_id: JobId,
    /// Definition identity, `blake3:<hex>`.
    pub definition: String,
    /// Inputs by name, size and digest, sorted by name.
    pub inputs: Vec<InputEntry>,
    /// Params as given.
    pub params: BTreeMap<String, String>,
    /// Output digest, `blake3:<hex>`.
    pub outputs: String,
    /// How the run ended.
    pub status: RunStatus,
    /// Exit code, when the guest exited.
    pub exit_code: Option<i32>,
    /// Resources used.
    pub usage: ReceiptUsage,
    /// Provider peer id (base58), set by [`Receipt::sign`].
    pub provider: String,
    /// Requestor peer id (base58), so a receipt cannot be passed off to another requestor.
    pub requestor: String,
    /// Start, Unix milliseconds.
    pub started_ms: u64,
    /// End, Unix milliseconds.
    pub ended_ms: u64,
}

/// A signed receipt, in its saved (JSON) form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// What is attested.
    pub body: ReceiptBody,
    /// Provider's public key, protobuf encoding, lower-case hex.
    pub public_key: String,
    /// Ed25519 signature, lower-case hex.
    pub signature: String,
}

/// Why a receipt does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// The saved form is not a receipt.
    #[error("malformed receipt: {0}")]
    Malformed(String),
    /// `provider` is not a peer id.
    #[error("provider {0:?} is not a peer id")]
    BadProvider(String),
    /// Signature problem (bad key, wrong signer, bad signature).
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

impl Receipt {
    /// Signs `body` with the provider's key, first setting `body.provider` to its peer id.
    pub fn sign(mut body: ReceiptBody, keypair: &Keypair) -> Result<Receipt, ReceiptError> {
        body.inputs
            .sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        body.provider = keypair.public().to_peer_id().to_base58();
        let (pk, sig) = canonical::sign(keypair, RECEIPT_DOMAIN, &body)?;
        Ok(Receipt {
            body,
            public_key: hex::encode(pk),
            signature: hex::encode(sig),
        })
    }

    /// Verifies the signature and that the key belongs to `body.provider`; returns that peer.
    pub fn verify(&self) -> Result<PeerId, ReceiptError> {
        let provider: PeerId = self.body.provider.parse().map_err(|_| {
            ReceiptError::BadProvider(self.body.provider.chars().take(80).collect())
        })?;
        let pk = hex::decode(&self.public_key)
            .map_err(|_| ReceiptError::Malformed("public key is not hex".into()))?;
        let sig = hex::decode(&self.signature)
            .map_err(|_| ReceiptError::Malformed("signature is not hex".into()))?;
        Ok(canonical::verify(
            RECEIPT_DOMAIN,
            &self.body,
            &pk,
            &sig,
            Some(&provider),
        )?)
    }

    /// The saved form: pretty JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain strings, integers and maps cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads the saved form (does not verify; call [`Receipt::verify`]).
    pub fn from_json(bytes: &[u8]) -> Result<Receipt, ReceiptError> {
        if bytes.len() > MAX_RECEIPT_BYTES {
            return Err(ReceiptError::Malformed(format!(
                "{} bytes exceeds the limit",
                bytes.len()
            )));
        }
        serde_json::from_slice(bytes).map_err(|e| ReceiptError::Malformed(e.to_string()))
    }
}
