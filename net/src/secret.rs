//! Secret values supplied by a requestor for one run: in memory only, redacted in `Debug`.
//!
//! A [`SecretValue`] travels only inside the job protocol (every libp2p connection is
//! Noise-encrypted), never in gossip or receipts. Its `Debug` prints no byte of the value,
//! so a stray `{:?}` in a log line cannot leak it, and its bytes are zeroed on drop so a
//! freed allocation does not keep them around longer than the run.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroize;

/// Largest single secret value, in bytes.
pub const MAX_SECRET_VALUE: usize = 16 * 1024;

/// Largest sum of all secret values of one offer, in bytes; well under the job
/// protocol's request cap so that params and inputs still fit beside them.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// The bytes of one secret; `Debug` redacts them and `Drop` zeroes them.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretValue(Vec<u8>);

impl SecretValue {
    /// Wraps bytes (the caller's copy is moved in, not duplicated).
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretValue(bytes)
    }

    /// The raw bytes; handle with care (never log, never write to disk).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The value as UTF-8, when it is.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<redacted, {} bytes>)", self.0.len())
    }
}

impl Drop for SecretValue {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Serialize for SecretValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = SecretValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at most {MAX_SECRET_VALUE} bytes")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<SecretValue, E> {
        if v.len() > MAX_SECRET_VALUE {
            return Err(E::custom(format!(
                "secret value longer than {MAX_SECRET_VALUE} bytes"
            )));
        }
        Ok(SecretValue(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<SecretValue, E> {
        if v.len() > MAX_SECRET_VALUE {
            return Err(E::custom(format!(
                "secret value longer than {MAX_SECRET_VALUE} bytes"
            )));
        }
        Ok(SecretValue(v))
    }

    // Self-describing formats without a bytes type (JSON) send a sequence of numbers.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SecretValue, A::Error> {
        let mut out = SecretValue(Vec::new());
        while let Some(b) = seq.next_element::<u8>()? {
            if out.0.len() >= MAX_SECRET_VALUE {
                return Err(de::Error::custom(format!(
                    "secret value longer than {MAX_SECRET_VALUE} bytes"
                )));
            }
            out.0.push(b);
        }
        Ok(out)
    }
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SecretValue, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }
}

/// Parses a command-line `NAME=@FILE` and reads the file (its exact bytes, a trailing
/// newline included). Values are only ever taken from files so they never show up in a
/// process listing or a shell history.
pub fn read_secret_arg(arg: &str) -> Result<(String, SecretValue), String> {
    // Nothing of a malformed argument is echoed: it may be a value typed by mistake.
    let Some((name, file)) = arg.split_once('=') else {
        return Err("expected NAME=@FILE".into());
    };
    let Some(path) = file.strip_prefix('@') else {
        return Err(format!(
            "secret {name:?}: expected NAME=@FILE (values are read from a file, never taken \
             from the command line)"
        ));
    };
    if name.is_empty() || path.is_empty() {
        return Err("expected NAME=@FILE".into());
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("secret {name:?}: {path}: {e}"))?;
    if meta.len() > MAX_SECRET_VALUE as u64 {
        return Err(format!(
            "secret {name:?}: {path} is longer than {MAX_SECRET_VALUE} bytes"
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("secret {name:?}: {path}: {e}"))?;
    if bytes.len() > MAX_SECRET_VALUE {
        return Err(format!(
            "secret {name:?}: {path} is longer than {MAX_SECRET_VALUE} bytes"
        ));
    }
    Ok((name.to_string(), SecretValue::new(bytes)))
}

/// Reads every `NAME=@FILE` argument; a name given twice is refused.
pub fn read_secret_args(args: &[String]) -> Result<BTreeMap<String, SecretValue>, String> {
    let mut out = BTreeMap::new();
    for a in args {
        let (name, value) = read_secret_arg(a)?;
        if out.insert(name.clone(), value).is_some() {
            return Err(format!("secret {name:?} is given twice"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_value() {
        let v = SecretValue::new(b"hunter2-very-secret".to_vec());
        let shown = format!("{v:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("19 bytes"), "{shown}");
    }

    #[test]
    fn inline_values_are_refused_without_echoing_them() {
        let e = read_secret_arg("TOKEN=hunter2").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        let e = read_secret_arg("TOKENhunter2").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
