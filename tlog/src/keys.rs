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
        if !is_curve_point(&bytes) {
            return Err(err());
        }
        Ok(PublicKey(bytes))
    }
}

/// How many distinct valid keys each thread remembers (32 bytes each).
const VALID_KEY_CACHE: usize = 4096;

thread_local! {
    /// Keys this thread has already found to be curve points. Decompressing a point costs
    /// a field exponentiation, and a log names the same authors and reviewers over and
    /// over: parsing 100,000 leaves spent about half its time here before this cache.
    static VALID_KEYS: std::cell::RefCell<std::collections::HashSet<[u8; 32]>> =
        std::cell::RefCell::default();
}

/// True when `bytes` decompress to a curve point (the check `VerifyingKey::from_bytes`
/// makes), remembering valid keys. Only successes are cached, so the answer is the same
/// as without the cache.
fn is_curve_point(bytes: &[u8; 32]) -> bool {
    if VALID_KEYS.with(|c| c.borrow().contains(bytes)) {
        return true;
    }
    if VerifyingKey::from_bytes(bytes).is_err() {
        return false;
    }
    VALID_KEYS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= VALID_KEY_CACHE {
            c.clear();
        }
        c.insert(*bytes);
    });
    true
}

/// A public key decompressed once, to verify many signatures by it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PreparedKey(VerifyingKey);

impl PreparedKey {
    /// The decompressed key; `None` when the bytes are not a curve point (such a key
    /// verifies nothing, as [`PublicKey::verify`] would say).
    pub(crate) fn new(key: &PublicKey) -> Option<PreparedKey> {
        VerifyingKey::from_bytes(&key.0).ok().map(PreparedKey)
    }

    /// Exactly [`PublicKey::verify`] (`verify_strict`) without decompressing the key again.
    pub(crate) fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
        self.0
            .verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig.0))
            .map_err(|_| KeyError::BadSignature)
    }
}

pinfold_base::serde_as_text!(PublicKey);

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

pinfold_base::serde_as_text!(Signature);

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The Ed25519 group order l, little-endian.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    /// The same signature with s replaced by s + l: equal modulo l, so it passes a
    /// verifier that reduces s, but it is not the canonical encoding.
    pub(crate) fn malleate(sig: &Signature) -> Signature {
        let mut out = sig.0;
        let mut carry = 0u16;
        for (i, l) in L.iter().enumerate() {
            let sum = u16::from(out[32 + i]) + u16::from(*l) + carry;
            out[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        Signature(out)
    }

    /// A small-order (weak) key: the identity point, y = 1. With R = identity and s = 0 the
    /// cofactorless equation holds for any message, which only strict verification refuses.
    pub(crate) const WEAK_KEY: PublicKey = {
        let mut b = [0u8; 32];
        b[0] = 1;
        PublicKey(b)
    };

    pub(crate) fn weak_signature() -> Signature {
        let mut s = [0u8; 64];
        s[0] = 1;
        Signature(s)
    }

    #[test]
    fn prepared_keys_verify_strictly() {
        let k = SecretKey::from_seed([9; 32]);
        let sig = k.sign(b"msg");
        let pk = k.public_key();
        let prepared = PreparedKey::new(&pk).unwrap();
        prepared.verify(b"msg", &sig).unwrap();
        pk.verify(b"msg", &sig).unwrap();
        let bad = malleate(&sig);
        assert_ne!(bad, sig);
        assert_eq!(prepared.verify(b"msg", &bad), Err(KeyError::BadSignature));
        assert_eq!(pk.verify(b"msg", &bad), Err(KeyError::BadSignature));
        assert!(prepared.verify(b"other", &sig).is_err());

        // The weak key is a curve point, so it parses; it must still verify nothing.
        let weak = PreparedKey::new(&WEAK_KEY).unwrap();
        for msg in [&b"msg"[..], b"anything"] {
            assert_eq!(
                weak.verify(msg, &weak_signature()),
                Err(KeyError::BadSignature)
            );
            assert_eq!(
                WEAK_KEY.verify(msg, &weak_signature()),
                Err(KeyError::BadSignature)
            );
        }
    }

    #[test]
    fn the_point_cache_changes_no_answer() {
        let good = SecretKey::from_seed([3; 32]).public_key().to_string();
        let off = (2u8..)
            .map(|y| {
                let mut b = [0u8; 32];
                b[0] = y;
                b
            })
            .find(|b| VerifyingKey::from_bytes(b).is_err())
            .unwrap();
        let off = format!("{PUBLIC_KEY_PREFIX}{}", B64.encode(off));
        for _ in 0..3 {
            assert!(good.parse::<PublicKey>().is_ok());
            assert!(off.parse::<PublicKey>().is_err());
        }
        // Overflowing the cache only forgets keys.
        for n in 0..(VALID_KEY_CACHE + 10) {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(n as u64).to_le_bytes());
            let k = SecretKey::from_seed(seed).public_key();
            assert_eq!(k.to_string().parse::<PublicKey>(), Ok(k));
        }
        assert!(VALID_KEYS.with(|c| c.borrow().len()) <= VALID_KEY_CACHE);
        assert!(good.parse::<PublicKey>().is_ok());
        assert!(off.parse::<PublicKey>().is_err());
    }
}
