//! Ed25519 keys and signatures for authors, reviewers and the log, with their text forms.
//!
//! Text forms, all standard base64 (RFC 4648 §4, padded) and parsed canonically so one key
//! has exactly one spelling (the index counts reviewers by key, so two spellings of one
//! key must never look like two reviewers):
//!
//! - public key: `ed25519:<base64 of 32 bytes>`
//! - secret key file: `pinfold-ed25519-secret:<base64 of the 32-byte RFC 8032 seed>` and a
//!   newline; it should be stored with mode 0600
//! - signature: `<base64 of 64 bytes>`

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

/// Prefix of a public key's text form.
pub const PUBLIC_KEY_PREFIX: &str = "ed25519:";
/// Prefix of a secret key file.
pub const SECRET_KEY_PREFIX: &str = "pinfold-ed25519-secret:";

/// What went wrong with a key or signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not `ed25519:<base64 of 32 bytes>`, or not a valid curve point.
    #[error("{0:?} is not a public key (expected ed25519:<base64 of 32 bytes>)")]
    PublicKey(String),
    /// Not a secret key file.
    #[error("not a secret key file (expected pinfold-ed25519-secret:<base64 of 32 bytes>)")]
    SecretKey,
    /// Not the base64 of 64 bytes.
    #[error("{0:?} is not a signature (expected base64 of 64 bytes)")]
    SignatureText(String),
    /// The operating system's random source failed.
    #[error("no randomness for key generation: {0}")]
    Random(String),
    /// The signature does not verify under the key.
    #[error("signature does not verify")]
    BadSignature,
}

/// Decodes canonical standard base64 of exactly `N` bytes.
pub(crate) fn decode_b64<const N: usize>(s: &str) -> Option<[u8; N]> {
    let bytes = B64.decode(s).ok()?;
    let arr: [u8; N] = bytes.try_into().ok()?;
    (B64.encode(arr) == s).then_some(arr)
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Verifies `sig` over `msg` strictly (RFC 8032 with the small-order and
    /// non-canonical checks of `verify_strict`), so a signature cannot be malleated.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
        let vk = VerifyingKey::from_bytes(&self.0).map_err(|_| KeyError::BadSignature)?;
        vk.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig.0))
            .map_err(|_| KeyError::BadSignature)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_KEY_PREFIX}{}", B64.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let err = || KeyError::PublicKey(s.chars().take(80).collect());
        let b = s.strip_prefix(PUBLIC_KEY_PREFIX).ok_or_else(err)?;
        let bytes = decode_b64::<32>(b).ok_or_else(err)?;
        // Refuse bytes that are not a curve point now rather than at first verification.
        VerifyingKey::from_bytes(&bytes).map_err(|_| err())?;
        Ok(PublicKey(bytes))
    }
}

serde_as_text!(PublicKey);

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&B64.encode(self.0))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

impl FromStr for Signature {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode_b64::<64>(s)
            .map(Signature)
            .ok_or_else(|| KeyError::SignatureText(s.chars().take(100).collect()))
    }
}

serde_as_text!(Signature);

/// An Ed25519 secret key (the 32-byte seed). Its `Debug` never prints the seed, and
/// ed25519-dalek zeroizes its copy on drop.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// Generates a fresh key from the operating system's random source.
    pub fn generate() -> Result<SecretKey, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(SecretKey::from_seed(seed))
    }

    /// The key with this RFC 8032 seed (tests and derived keys).
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// The public key's text form, `ed25519:<base64>`.
    pub fn public_key_text(&self) -> String {
        self.public_key().to_string()
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.0.sign(msg).to_bytes())
    }

    /// The secret key file contents: `pinfold-ed25519-secret:<base64 seed>\n`.
    pub fn to_file_text(&self) -> String {
        format!("{SECRET_KEY_PREFIX}{}\n", B64.encode(self.0.to_bytes()))
    }

    /// Parses a secret key file (one line, the trailing newline optional).
    pub fn from_file_text(text: &str) -> Result<SecretKey, KeyError> {
        let line = text.strip_suffix('\n').unwrap_or(text);
        let b = line
            .strip_prefix(SECRET_KEY_PREFIX)
            .ok_or(KeyError::SecretKey)?;
        let seed = decode_b64::<32>(b).ok_or(KeyError::SecretKey)?;
        Ok(SecretKey::from_seed(seed))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public_key())
    }
}
