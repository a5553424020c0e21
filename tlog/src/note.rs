//! C2SP signed notes (c2sp.org/signed-note) and log checkpoints (c2sp.org/tlog-checkpoint).
//!
//! Everything here parses hostile bytes: sizes are capped before any work, the format is
//! matched exactly (no trimming, no alternative spellings), and nothing panics. Only
//! Ed25519 signatures (type 0x01) are produced or verified; signature lines from other
//! keys, of any algorithm, are kept but ignored, as the spec requires, so witness
//! cosignatures pass through.
//!
//! A pinfold checkpoint carries exactly one extension line, `time <unix seconds>`, the
//! moment the log signed it: a client compares it with its own clock to tell a fresh
//! view of the registry from a frozen one. (The spec discourages extension lines because
//! monitors cannot audit them; the time is only ever used for freshness, never for
//! membership, so an unauditable value costs nothing there.)

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use super::keys::{PublicKey, SecretKey, Signature};
use super::merkle::Hash;

/// The largest note accepted (the spec asks verifiers to cap size; 16 post-quantum
/// signatures of ~5 kB still fit).
pub const MAX_NOTE_BYTES: usize = 128 * 1024;
/// The most signature lines accepted (the spec requires accepting at least 16).
pub const MAX_SIGNATURES: usize = 64;
/// The signed-note signature type byte of Ed25519.
pub const ED25519_SIGNATURE_TYPE: u8 = 0x01;
/// The longest key name or origin accepted.
pub const MAX_NAME_LEN: usize = 256;

const DASH: &str = "\u{2014} ";

/// Why a note or checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Bigger than [`MAX_NOTE_BYTES`].
    #[error("note of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// Not UTF-8 or holds control characters other than newline.
    #[error("note is not utf-8 text without control characters")]
    BadCharacters,
    /// Not text, blank line, signature lines.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// More than [`MAX_SIGNATURES`] signature lines.
    #[error("note has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    /// A key name is empty, too long, or holds a space or `+`.
    #[error("invalid key name {0:?}")]
    BadKeyName(String),
    /// No signature line matches the verifier's key name and key id.
    #[error("note is not signed by {0}")]
    UnknownSigner(String),
    /// A signature line from the verifier's key does not verify.
    #[error("signature by {0} does not verify")]
    BadSignature(String),
    /// A verifier key string is not `<name>+<hex key id>+<base64(0x01 ‖ key)>`.
    #[error("malformed verifier key")]
    BadVerifierKey,
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key name.
    pub name: String,
    /// The 4-byte key id (big-endian in the encoding).
    pub key_id: [u8; 4],
    /// The signature bytes after the key id (64 for Ed25519).
    pub signature: Vec<u8>,
}

/// A parsed signed note: text (ending in a newline) and signature lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The signed text, including its final newline.
    pub text: String,
    /// The signatures, in order.
    pub signatures: Vec<NoteSignature>,
}

/// The key id of an Ed25519 note key: the first 4 bytes of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key).
pub fn key_id(name: &str, key: &PublicKey) -> [u8; 4] {
    typed_key_id(name, ED25519_SIGNATURE_TYPE, key)
}

/// The key id of a key with signature type `kind`: SHA-256(name ‖ 0x0A ‖ kind ‖ key)[:4].
pub(crate) fn typed_key_id(name: &str, kind: u8, key: &PublicKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', kind]);
    h.update(key.0);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// Formats a verifier key: `<name>+<8 hex digits of key id>+<base64(kind ‖ key)>`.
pub(crate) fn format_vkey(name: &str, kind: u8, key: &PublicKey) -> String {
    let mut raw = vec![kind];
    raw.extend_from_slice(&key.0);
    format!(
        "{name}+{}+{}",
        hex::encode(typed_key_id(name, kind, key)),
        B64.encode(raw)
    )
}

/// Parses a verifier key of signature type `kind` with an Ed25519 key, checking the name
/// and the key id.
pub(crate) fn parse_vkey(s: &str, kind: u8) -> Result<(String, PublicKey), NoteError> {
    // Only the first two `+` separate: the name may not hold one, the base64 key may.
    let mut parts = s.splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NoteError::BadVerifierKey);
    };
    let raw = super::keys::decode_b64::<33>(key).ok_or(NoteError::BadVerifierKey)?;
    if raw[0] != kind {
        return Err(NoteError::BadVerifierKey);
    }
    let mut pk = [0u8; 32];
    pk.copy_from_slice(&raw[1..]);
    let pk: PublicKey = format!("{}{}", super::keys::PUBLIC_KEY_PREFIX, B64.encode(pk))
        .parse()
        .map_err(|_| NoteError::BadVerifierKey)?;
    check_key_name(name)?;
    if hex::encode(typed_key_id(name, kind, &pk)) != id {
        return Err(NoteError::BadVerifierKey);
    }
    Ok((name.to_string(), pk))
}

/// Checks a key name as C2SP signed notes require it: non-empty, at most [`MAX_NAME_LEN`]
/// bytes, no whitespace, `+` or control characters.
pub fn check_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
    {
        return Err(NoteError::BadKeyName(name.chars().take(80).collect()));
    }
    Ok(())
}

fn check_chars(s: &str) -> Result<(), NoteError> {
    if s.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::BadCharacters);
    }
    Ok(())
}

impl Note {
    /// Parses a signed note without verifying it.
    pub fn parse(bytes: &[u8]) -> Result<Note, NoteError> {
        if bytes.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge(bytes.len()));
        }
        let s = std::str::from_utf8(bytes).map_err(|_| NoteError::BadCharacters)?;
        check_chars(s)?;
        // The text may hold blank lines; the signatures start after the last one.
        let split = s
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let text = &s[..split + 1];
        let sigs = &s[split + 2..];
        let body = sigs.strip_suffix('\n').ok_or(NoteError::Malformed(
            "signature block must end in a newline",
        ))?;
        if body.is_empty() {
            return Err(NoteError::Malformed("no signature lines"));
        }
        let mut signatures = Vec::new();
        for line in body.split('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            let rest = line.strip_prefix(DASH).ok_or(NoteError::Malformed(
                "signature line must start with an em dash",
            ))?;
            let (name, b64) = rest.split_once(' ').ok_or(NoteError::Malformed(
                "signature line needs a name and a signature",
            ))?;
            check_key_name(name)?;
            let raw = B64
                .decode(b64)
                .map_err(|_| NoteError::Malformed("signature is not base64"))?;
            // Re-encoding refuses non-canonical base64 (and any stray spaces).
            if raw.len() < 5 || B64.encode(&raw) != b64 {
                return Err(NoteError::Malformed("signature is not canonical base64"));
            }
            signatures.push(NoteSignature {
                name: name.to_string(),
                key_id: [raw[0], raw[1], raw[2], raw[3]],
                signature: raw[4..].to_vec(),
            });
        }
        Ok(Note {
            text: text.to_string(),
            signatures,
        })
    }

    /// Signs `text` (which must end in a newline and hold no blank line at its end).
    pub fn sign(text: &str, signer: &NoteSigner) -> Result<Note, NoteError> {
        check_chars(text)?;
        if !text.ends_with('\n') || text.ends_with("\n\n") || text == "\n" {
            return Err(NoteError::Malformed("text must end in exactly one newline"));
        }
        let mut note = Note {
            text: text.to_string(),
            signatures: Vec::new(),
        };
        note.add_signature(signer);
        Ok(note)
    }

    /// Adds a signature by `signer` over the text (cosigning).
    pub fn add_signature(&mut self, signer: &NoteSigner) {
        let sig = signer.key.sign(self.text.as_bytes());
        self.signatures.push(NoteSignature {
            name: signer.name.clone(),
            key_id: signer.key_id,
            signature: sig.0.to_vec(),
        });
    }

    /// The note's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    /// Verifies the note against one trusted key and returns its text. Lines from
    /// other keys are ignored; any line that matches the key's name and id must verify,
    /// and at least one must.
    pub fn verify(&self, verifier: &NoteVerifier) -> Result<&str, NoteError> {
        let mut ok = false;
        for s in &self.signatures {
            if s.name != verifier.name || s.key_id != verifier.key_id {
                continue;
            }
            let sig: [u8; 64] = s
                .signature
                .as_slice()
                .try_into()
                .map_err(|_| NoteError::BadSignature(verifier.name.clone()))?;
            verifier
                .key
                .verify(self.text.as_bytes(), &Signature(sig))
                .map_err(|_| NoteError::BadSignature(verifier.name.clone()))?;
            ok = true;
        }
        if !ok {
            return Err(NoteError::UnknownSigner(verifier.name.clone()));
        }
        Ok(&self.text)
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        f.write_str("\n")?;
        for s in &self.signatures {
            let mut raw = Vec::with_capacity(4 + s.signature.len());
            raw.extend_from_slice(&s.key_id);
            raw.extend_from_slice(&s.signature);
            writeln!(f, "{DASH}{} {}", s.name, B64.encode(raw))?;
        }
        Ok(())
    }
}

/// A note signing key: key name and Ed25519 secret key.
#[derive(Debug, Clone)]
pub struct NoteSigner {
    name: String,
    key: SecretKey,
    key_id: [u8; 4],
}

impl NoteSigner {
    /// A signer; the name must be non-empty without spaces or `+` (use the log origin).
    pub fn new(name: &str, key: SecretKey) -> Result<NoteSigner, NoteError> {
        check_key_name(name)?;
        let key_id = key_id(name, &key.public_key());
        Ok(NoteSigner {
            name: name.to_string(),
            key,
            key_id,
        })
    }

    /// The matching verifier.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key: self.key.public_key(),
            key_id: self.key_id,
        }
    }
}

/// A trusted note key: key name and Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key: PublicKey,
    key_id: [u8; 4],
}

impl NoteVerifier {
    /// A verifier for the key `key` named `name`.
    pub fn new(name: &str, key: PublicKey) -> Result<NoteVerifier, NoteError> {
        check_key_name(name)?;
        Ok(NoteVerifier {
            name: name.to_string(),
            key_id: key_id(name, &key),
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public key.
    pub fn key(&self) -> &PublicKey {
        &self.key
    }

    /// The key id.
    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }

    /// The verifier key string that Go's `sumdb/note` and witnesses use:
    /// `<name>+<8 hex digits of key id>+<base64(0x01 ‖ key)>`.
    pub fn to_vkey(&self) -> String {
        format_vkey(&self.name, ED25519_SIGNATURE_TYPE, &self.key)
    }

    /// Parses a verifier key string (see [`NoteVerifier::to_vkey`]), checking its key id.
    pub fn from_vkey(s: &str) -> Result<NoteVerifier, NoteError> {
        let (name, key) = parse_vkey(s, ED25519_SIGNATURE_TYPE)?;
        NoteVerifier::new(&name, key)
    }
}

/// A pinfold log checkpoint: origin, tree size, root hash and signing time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// The log's origin line.
    pub origin: String,
    /// The number of leaves.
    pub size: u64,
    /// The root hash at that size.
    pub root: Hash,
    /// When the log signed the checkpoint, in Unix seconds.
    pub time: u64,
}

/// Why a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The signed note itself was refused.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The note text is not a pinfold checkpoint body.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
}

/// A decimal without sign or leading zeroes (the one spelling C2SP allows).
pub(crate) fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

impl Checkpoint {
    /// The note text: `<origin>\n<size>\n<base64 root>\ntime <seconds>\n`.
    pub fn to_text(&self) -> String {
        format!(
            "{}\n{}\n{}\ntime {}\n",
            self.origin,
            self.size,
            self.root.to_base64(),
            self.time
        )
    }

    /// Parses a note text, exactly in the form [`Checkpoint::to_text`] writes.
    pub fn from_text(text: &str) -> Result<Checkpoint, CheckpointError> {
        use CheckpointError::Malformed;
        let body = text
            .strip_suffix('\n')
            .ok_or(Malformed("text must end in a newline"))?;
        let lines: Vec<&str> = body.splitn(5, '\n').collect();
        let [origin, size, root, time] = lines[..] else {
            return Err(Malformed("expected origin, size, root and time lines"));
        };
        if origin.is_empty() || origin.len() > MAX_NAME_LEN {
            return Err(Malformed("bad origin line"));
        }
        check_chars(origin).map_err(|_| Malformed("bad origin line"))?;
        let size = parse_decimal(size).ok_or(Malformed("bad tree size"))?;
        let root = Hash::from_base64(root).map_err(|_| Malformed("bad root hash"))?;
        let time = time
            .strip_prefix("time ")
            .and_then(parse_decimal)
            .ok_or(Malformed("bad time extension line"))?;
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            time,
        })
    }

    /// Signs the checkpoint and returns the signed note's bytes.
    pub fn sign(&self, signer: &NoteSigner) -> Result<Vec<u8>, CheckpointError> {
        if self.origin.is_empty() || self.origin.contains('\n') || self.origin.len() > MAX_NAME_LEN
        {
            return Err(CheckpointError::Malformed("bad origin line"));
        }
        Ok(Note::sign(&self.to_text(), signer)?.to_bytes())
    }

    /// Parses a signed note, verifies it with the log's key and parses the checkpoint.
    pub fn open(note: &[u8], log_key: &NoteVerifier) -> Result<Checkpoint, CheckpointError> {
        let note = Note::parse(note)?;
        let text = note.verify(log_key)?;
        Checkpoint::from_text(text)
    }
}
