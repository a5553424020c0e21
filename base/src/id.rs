//! Content identities: `blake3:<64 lower-case hex>`, the same text form as definition identities.

use std::fmt;
use std::str::FromStr;

/// Prefix of the textual form of a content identity.
pub const ID_PREFIX: &str = "blake3:";

/// The BLAKE3 hash of a blob's bytes (a bundle, an input, an output, captured stdio).
///
/// Written `blake3:<64 lower-case hex digits>`, exactly like a definition identity, so the
/// node can name either with one type on the wire. Serialised as that text in JSON and CBOR.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub [u8; 32]);

impl BlobId {
    /// Hashes a whole blob in memory.
    pub fn of(bytes: &[u8]) -> Self {
        BlobId(*blake3::hash(bytes).as_bytes())
    }

    /// The 64 hex digits without prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl From<blake3::Hash> for BlobId {
    fn from(h: blake3::Hash) -> Self {
        BlobId(*h.as_bytes())
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ID_PREFIX}{}", self.hex())
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({self})")
    }
}

/// Why a string is not a content identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a content identity (expected blake3:<64 lower-case hex digits>)")]
pub struct ParseBlobIdError(pub String);

impl FromStr for BlobId {
    type Err = ParseBlobIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only a short prefix goes into the error: the string may be hostile and huge.
        let err = || ParseBlobIdError(s.chars().take(80).collect());
        parse_hash_text(s).map(BlobId).ok_or_else(err)
    }
}

impl serde::Serialize for BlobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for BlobId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The 32 bytes of `blake3:<64 lower-case hex digits>`, the text form of content and
/// definition identities alike; `None` for any other string.
pub fn parse_hash_text(s: &str) -> Option<[u8; 32]> {
    let h = s.strip_prefix(ID_PREFIX)?;
    if h.len() != 64
        || !h
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(h, &mut out).ok()?;
    Some(out)
}

/// Checks that `s` has the shape of an identity (`blake3:<64 lower-case hex>`).
pub fn is_identity(s: &str) -> bool {
    s.parse::<BlobId>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_variants() {
        let id = BlobId::of(b"hello");
        let text = id.to_string();
        assert_eq!(text.parse::<BlobId>().unwrap(), id);
        assert!(text.to_uppercase().parse::<BlobId>().is_err());
        assert!(text[..70].parse::<BlobId>().is_err());
        assert!(format!("sha256:{}", id.hex()).parse::<BlobId>().is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<BlobId>(&json).unwrap(), id);
    }
}
