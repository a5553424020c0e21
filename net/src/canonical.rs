//! Canonical JSON and domain-separated signatures with a libp2p identity key.
//!
//! Ads and receipts are signed over canonical JSON: object members sorted by the UTF-8
//! bytes of their names, no insignificant whitespace, integers only. The writer is our own
//! (`pinfold_base::canonical`, the one writer identities and output digests use too) rather than serde_json's
//! `to_vec`, because a `preserve_order` feature switched on anywhere in the dependency graph
//! would silently change member order and break every signature. Each signed message is
//! prefixed with a domain string and a newline, so an ad can never be replayed as a receipt.

use libp2p::PeerId;
use libp2p::identity::{KeyType, Keypair, PublicKey};
use serde::Serialize;
use serde_json::Value;

/// Why a signature could not be made or checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The value has a floating-point number or failed to serialise.
    #[error("value has no canonical encoding: {0}")]
    NotCanonical(String),
    /// The public key is not a protobuf-encoded Ed25519 key.
    #[error("public key is not an ed25519 key")]
    BadPublicKey,
    /// The key that signed is not the key of the claimed peer.
    #[error("signer {signer} is not the claimed peer {claimed}")]
    WrongSigner {
        /// Peer id (base58) of the embedded public key.
        signer: String,
        /// Peer id (base58) the message claims.
        claimed: String,
    },
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The local key could not sign.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// Writes a JSON value canonically (sorted members, no whitespace); refuses floats.
///
/// The one writer of the workspace, [`pinfold_base::canonical::write_canonical`].
pub fn write_canonical(v: &Value, out: &mut Vec<u8>) -> Result<(), SignatureError> {
    pinfold_base::canonical::write_canonical(v, out)
        .map_err(|e| SignatureError::NotCanonical(e.to_string()))
}

/// The exact bytes that are signed: `domain`, a newline, then the canonical JSON of `value`.
pub fn signing_bytes<T: Serialize>(domain: &str, value: &T) -> Result<Vec<u8>, SignatureError> {
    let v = serde_json::to_value(value).map_err(|e| SignatureError::NotCanonical(e.to_string()))?;
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(domain.as_bytes());
    out.push(b'\n');
    write_canonical(&v, &mut out)?;
    Ok(out)
}

/// Signs `value` under `domain`; returns the protobuf-encoded public key and the signature.
pub fn sign<T: Serialize>(
    keypair: &Keypair,
    domain: &str,
    value: &T,
) -> Result<(Vec<u8>, Vec<u8>), SignatureError> {
    let msg = signing_bytes(domain, value)?;
    let sig = keypair
        .sign(&msg)
        .map_err(|e| SignatureError::Signing(e.to_string()))?;
    Ok((keypair.public().encode_protobuf(), sig))
}

/// Decodes a protobuf-encoded Ed25519 public key (other key types are refused).
pub fn decode_public_key(bytes: &[u8]) -> Result<PublicKey, SignatureError> {
    // An Ed25519 key in protobuf form is 36 bytes; the cap stops big junk before decoding.
    if bytes.len() > 64 {
        return Err(SignatureError::BadPublicKey);
    }
    let key = PublicKey::try_decode_protobuf(bytes).map_err(|_| SignatureError::BadPublicKey)?;
    if key.key_type() != KeyType::Ed25519 {
        return Err(SignatureError::BadPublicKey);
    }
    Ok(key)
}

/// Verifies a signature over `value` under `domain` by `public_key`, and that the key is
/// `claimed`'s. Returns the signer's peer id.
pub fn verify<T: Serialize>(
    domain: &str,
    value: &T,
    public_key: &[u8],
    signature: &[u8],
    claimed: Option<&PeerId>,
) -> Result<PeerId, SignatureError> {
    let key = decode_public_key(public_key)?;
    let signer = key.to_peer_id();
    if let Some(claimed) = claimed
        && *claimed != signer
    {
        return Err(SignatureError::WrongSigner {
            signer: signer.to_base58(),
            claimed: claimed.to_base58(),
        });
    }
    // Ed25519 signatures are exactly 64 bytes; anything else is refused before verifying.
    if signature.len() != 64 {
        return Err(SignatureError::BadSignature);
    }
    let msg = signing_bytes(domain, value)?;
    if !key.verify(&msg, signature) {
        return Err(SignatureError::BadSignature);
    }
    Ok(signer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_float_has_no_canonical_encoding() {
        // The writer is pinfold-base's (tested there); a float becomes a signature error.
        assert_eq!(
            write_canonical(&json!({"x": 1.5}), &mut Vec::new()),
            Err(SignatureError::NotCanonical("float 1.5".into()))
        );
    }

    #[test]
    fn signature_is_domain_separated() {
        let kp = Keypair::generate_ed25519();
        let v = json!({"a": 1});
        let (pk, sig) = sign(&kp, "one", &v).unwrap();
        let peer = kp.public().to_peer_id();
        assert_eq!(verify("one", &v, &pk, &sig, Some(&peer)).unwrap(), peer);
        assert_eq!(
            verify("two", &v, &pk, &sig, Some(&peer)),
            Err(SignatureError::BadSignature)
        );
        let other = PeerId::random();
        assert!(matches!(
            verify("one", &v, &pk, &sig, Some(&other)),
            Err(SignatureError::WrongSigner { .. })
        ));
    }
}
