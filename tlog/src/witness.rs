//! Witness cosignatures: C2SP `tlog-cosignature` (Ed25519, type 0x04) and the witness side
//! of C2SP `tlog-witness` (`add-checkpoint`), without any I/O.
//!
//! A witness keeps, per log it follows, the latest checkpoint it cosigned, and cosigns a
//! new one only when a consistency proof shows it extends that one. A client that requires
//! K of its configured witnesses to cosign every checkpoint it trusts cannot be shown a
//! fork unless K witnesses were shown the same fork: the registry alone can no longer
//! split views. A witness holds its own key and only the *public* keys of the logs it
//! follows, so it can vouch for consistency but never sign a checkpoint itself.
//!
//! # Formats (checked against the C2SP text)
//!
//! - Cosigner key id: `SHA-256(name ‖ 0x0A ‖ 0x04 ‖ public key)[:4]`; verifier key
//!   `name+<8 hex digits of key id>+base64(0x04 ‖ public key)`.
//! - Signed message: `cosignature/v1\ntime <t>\n` followed by the whole checkpoint body
//!   (every line of the note text, extension lines included).
//! - Signature line: `— <name> base64(key id ‖ u64 big-endian t ‖ Ed25519 signature)`, with
//!   `t` below 2^63.
//! - `add-checkpoint` request body: `old <size>\n`, at most 63 base64 proof lines, an empty
//!   line, then the signed checkpoint; answers 404 (unknown origin), 403 (no trusted log
//!   signature), 400 (old size above the checkpoint's, malformed), 409 with the cosigned size
//!   (old size is not the witness's), 409 (same size, other root), 422 (proof fails).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::keys::{PublicKey, SecretKey, Signature};
use super::merkle::{Hash, verify_consistency};
use super::note::{
    MAX_NAME_LEN, Note, NoteError, NoteSignature, NoteVerifier, check_key_name, format_vkey,
    parse_decimal, parse_vkey, typed_key_id,
};

/// The signed-note signature type of an Ed25519 `cosignature/v1` key.
pub const COSIGNATURE_TYPE: u8 = 0x04;
/// The first line of every cosigned message.
pub const COSIGNATURE_HEADER: &str = "cosignature/v1\n";
/// The latest cosignature timestamp the format allows (2^63 - 1).
pub const MAX_COSIGNATURE_TIME: u64 = i64::MAX as u64;
/// The most consistency-proof lines an `add-checkpoint` request may carry.
pub const MAX_PROOF_LINES: usize = 63;
/// How far in the future a cosignature's timestamp may be, to allow for clock skew.
pub const MAX_COSIGNATURE_SKEW_SECS: u64 = 300;

/// The message an Ed25519 v1 cosignature at `time` signs for a checkpoint note `body`.
pub fn cosigned_message(body: &str, time: u64) -> Vec<u8> {
    format!("{COSIGNATURE_HEADER}time {time}\n{body}").into_bytes()
}

/// Why a cosignature does not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CosignatureError {
    /// The line is not `key id ‖ 8-byte time ‖ 64-byte signature`.
    #[error("cosignature by {0} is not 76 bytes")]
    Malformed(String),
    /// The timestamp is 2^63 or later.
    #[error("cosignature by {0} has a timestamp beyond 2^63 - 1")]
    TimeOutOfRange(String),
    /// The timestamp is ahead of the local clock by more than the allowed skew.
    #[error("cosignature by {name} is from the future ({time}, local time {now})")]
    FromTheFuture {
        /// The witness.
        name: String,
        /// The cosignature's time.
        time: u64,
        /// The local time.
        now: u64,
    },
    /// The Ed25519 signature does not verify.
    #[error("cosignature by {0} does not verify")]
    BadSignature(String),
}

/// A witness's signing key: name and Ed25519 secret key.
#[derive(Debug, Clone)]
pub struct Cosigner {
    name: String,
    key: SecretKey,
    key_id: [u8; 4],
}

impl Cosigner {
    /// A cosigner named `name` (a schema-less URL by convention, e.g. `witness.example/w1`).
    pub fn new(name: &str, key: SecretKey) -> Result<Cosigner, NoteError> {
        check_key_name(name)?;
        let key_id = typed_key_id(name, COSIGNATURE_TYPE, &key.public_key());
        Ok(Cosigner {
            name: name.to_string(),
            key,
            key_id,
        })
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> CosignerKey {
        CosignerKey {
            name: self.name.clone(),
            key: self.key.public_key(),
            key_id: self.key_id,
        }
    }

    /// The cosignature of the checkpoint note text `body` at `time`.
    pub fn cosign(&self, body: &str, time: u64) -> NoteSignature {
        let sig = self.key.sign(&cosigned_message(body, time));
        let mut raw = Vec::with_capacity(72);
        raw.extend_from_slice(&time.to_be_bytes());
        raw.extend_from_slice(&sig.0);
        NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature: raw,
        }
    }
}

/// A trusted witness: name and Ed25519 public key of its cosignatures.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CosignerKey {
    name: String,
    key: PublicKey,
    key_id: [u8; 4],
}

impl CosignerKey {
    /// The witness named `name` with public key `key`.
    pub fn new(name: &str, key: PublicKey) -> Result<CosignerKey, NoteError> {
        check_key_name(name)?;
        Ok(CosignerKey {
            name: name.to_string(),
            key_id: typed_key_id(name, COSIGNATURE_TYPE, &key),
            key,
        })
    }

    /// The witness's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The witness's public key.
    pub fn key(&self) -> &PublicKey {
        &self.key
    }

    /// The key id its signature lines carry.
    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }

    /// The C2SP verifier key, `name+<key id>+base64(0x04 ‖ key)`.
    pub fn to_vkey(&self) -> String {
        format_vkey(&self.name, COSIGNATURE_TYPE, &self.key)
    }

    /// Parses a C2SP verifier key of type 0x04, checking its key id.
    pub fn from_vkey(s: &str) -> Result<CosignerKey, NoteError> {
        let (name, key) = parse_vkey(s, COSIGNATURE_TYPE)?;
        CosignerKey::new(&name, key)
    }

    /// Whether a signature line names this witness (name and key id).
    pub fn matches(&self, sig: &NoteSignature) -> bool {
        sig.name == self.name && sig.key_id == self.key_id
    }

    /// Verifies one of this witness's signature lines over the checkpoint text `body` and
    /// returns its timestamp. `now` is local Unix time.
    pub fn verify(
        &self,
        body: &str,
        sig: &NoteSignature,
        now: u64,
    ) -> Result<u64, CosignatureError> {
        let raw: &[u8; 72] = sig
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| CosignatureError::Malformed(self.name.clone()))?;
        let mut t = [0u8; 8];
        t.copy_from_slice(&raw[..8]);
        let time = u64::from_be_bytes(t);
        if time > MAX_COSIGNATURE_TIME {
            return Err(CosignatureError::TimeOutOfRange(self.name.clone()));
        }
        if time > now.saturating_add(MAX_COSIGNATURE_SKEW_SECS) {
            return Err(CosignatureError::FromTheFuture {
                name: self.name.clone(),
                time,
                now,
            });
        }
        let mut s = [0u8; 64];
        s.copy_from_slice(&raw[8..]);
        self.key
            .verify(&cosigned_message(body, time), &Signature(s))
            .map_err(|_| CosignatureError::BadSignature(self.name.clone()))?;
        Ok(time)
    }
}

impl std::fmt::Display for CosignerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_vkey())
    }
}

impl std::str::FromStr for CosignerKey {
    type Err = NoteError;
    fn from_str(s: &str) -> Result<Self, NoteError> {
        CosignerKey::from_vkey(s)
    }
}

impl Serialize for CosignerKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CosignerKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a checkpoint does not carry enough cosignatures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "checkpoint is cosigned by {got} of the required {need} trusted witnesses{}",
    if problems.is_empty() { String::new() } else { format!(" ({})", problems.join("; ")) }
)]
pub struct TooFewCosignatures {
    /// The configured threshold.
    pub need: usize,
    /// Distinct trusted witnesses whose cosignature verified.
    pub got: usize,
    /// Why trusted witnesses' lines did not count, if any were there.
    pub problems: Vec<String>,
}

/// The witnesses a client trusts and how many of them must cosign (0: no requirement).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WitnessPolicy {
    witnesses: BTreeSet<CosignerKey>,
    threshold: usize,
}

/// A witness policy's threshold is 0 with witnesses listed, or above their number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "witness threshold {threshold} must be between 1 and the number of witnesses ({witnesses})"
)]
pub struct WitnessPolicyError {
    /// The threshold asked for.
    pub threshold: usize,
    /// Distinct witnesses configured.
    pub witnesses: usize,
}

impl WitnessPolicy {
    /// Requires `threshold` of the distinct `witnesses` (duplicates count once). An empty
    /// list with threshold 0 is "no requirement".
    pub fn new(
        witnesses: impl IntoIterator<Item = CosignerKey>,
        threshold: usize,
    ) -> Result<WitnessPolicy, WitnessPolicyError> {
        let witnesses: BTreeSet<CosignerKey> = witnesses.into_iter().collect();
        let ok = if witnesses.is_empty() {
            threshold == 0
        } else {
            (1..=witnesses.len()).contains(&threshold)
        };
        if !ok {
            return Err(WitnessPolicyError {
                threshold,
                witnesses: witnesses.len(),
            });
        }
        Ok(WitnessPolicy {
            witnesses,
            threshold,
        })
    }

    /// How many witnesses must cosign.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// The trusted witnesses.
    pub fn witnesses(&self) -> impl Iterator<Item = &CosignerKey> {
        self.witnesses.iter()
    }

    /// Whether the policy requires anything.
    pub fn is_required(&self) -> bool {
        self.threshold > 0
    }

    /// The trusted witnesses (their vkeys, sorted) whose cosignature of `note` verifies,
    /// and why the other trusted lines present did not count.
    pub fn cosigners(&self, note: &Note, now: u64) -> (Vec<String>, Vec<String>) {
        let mut good = Vec::new();
        let mut problems = Vec::new();
        for w in &self.witnesses {
            let mut verified = false;
            for sig in note.signatures.iter().filter(|s| w.matches(s)) {
                match w.verify(&note.text, sig, now) {
                    Ok(_) => verified = true,
                    Err(e) => problems.push(e.to_string()),
                }
            }
            if verified {
                good.push(w.to_vkey());
            }
        }
        (good, problems)
    }

    /// The trusted cosigners of `note`, or an error when fewer than the threshold verify.
    pub fn check(&self, note: &Note, now: u64) -> Result<Vec<String>, TooFewCosignatures> {
        let (good, problems) = self.cosigners(note, now);
        if good.len() < self.threshold {
            return Err(TooFewCosignatures {
                need: self.threshold,
                got: good.len(),
                problems,
            });
        }
        Ok(good)
    }
}

/// The part of any C2SP checkpoint a witness checks: origin, size and root (extension lines,
/// if any, are cosigned but not interpreted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointBody {
    /// The origin line.
    pub origin: String,
    /// The tree size.
    pub size: u64,
    /// The root hash.
    pub root: Hash,
}

impl CheckpointBody {
    /// Parses the note text of a checkpoint: origin, decimal size, base64 root, then any
    /// non-empty extension lines.
    pub fn parse(text: &str) -> Result<CheckpointBody, WitnessError> {
        let bad = |why: &'static str| WitnessError::Malformed(why.to_string());
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("checkpoint text must end in a newline"))?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(bad("checkpoint needs origin, size and root lines"));
        };
        if origin.is_empty() || origin.len() > MAX_NAME_LEN {
            return Err(bad("bad origin line"));
        }
        if lines.any(str::is_empty) {
            return Err(bad("empty extension line"));
        }
        Ok(CheckpointBody {
            origin: origin.to_string(),
            size: parse_decimal(size).ok_or_else(|| bad("bad tree size"))?,
            root: Hash::from_base64(root).map_err(|_| bad("bad root hash"))?,
        })
    }
}

/// An `add-checkpoint` request: the size the client believes the witness cosigned, a
/// consistency proof from it, and the signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The previous size.
    pub old: u64,
    /// The consistency proof from `old` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note.
    pub checkpoint: Vec<u8>,
}

impl AddCheckpoint {
    /// The request body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("old {}\n", self.old).into_bytes();
        for h in &self.proof {
            out.extend_from_slice(h.to_base64().as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(&self.checkpoint);
        out
    }

    /// Parses a request body (the caller caps its size).
    pub fn parse(body: &[u8]) -> Result<AddCheckpoint, WitnessError> {
        let bad = |why: &str| WitnessError::Malformed(why.to_string());
        let split = body
            .windows(2)
            .position(|w| w == b"\n\n")
            .ok_or_else(|| bad("no empty line before the checkpoint"))?;
        let head =
            std::str::from_utf8(&body[..split]).map_err(|_| bad("request head is not utf-8"))?;
        let mut lines = head.split('\n');
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .and_then(parse_decimal)
            .ok_or_else(|| bad("first line must be `old <size>`"))?;
        let mut proof = Vec::new();
        for line in lines {
            if proof.len() == MAX_PROOF_LINES {
                return Err(bad("more than 63 consistency proof lines"));
            }
            proof.push(Hash::from_base64(line).map_err(|_| bad("bad consistency proof line"))?);
        }
        Ok(AddCheckpoint {
            old,
            proof,
            checkpoint: body[split + 2..].to_vec(),
        })
    }
}

/// Why a witness refused a checkpoint; each maps to the HTTP status `tlog-witness` names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessError {
    /// The request or checkpoint is malformed (400).
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The old size is above the checkpoint's size (400).
    #[error("old size {old} is above the checkpoint's size {size}")]
    OldAboveSize {
        /// The request's old size.
        old: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// This witness does not follow the origin (404).
    #[error("unknown log origin {0:?}")]
    UnknownOrigin(String),
    /// No signature by the log's key verifies (403).
    #[error("the checkpoint is not signed by the log's key")]
    NotSigned,
    /// The old size is not the size this witness last cosigned (409, with that size).
    #[error("the witness last cosigned size {cosigned}, not {old}")]
    WrongOldSize {
        /// The request's old size.
        old: u64,
        /// What the witness last cosigned.
        cosigned: u64,
    },
    /// Same size as the cosigned checkpoint with another root: a fork (409).
    #[error("fork: the checkpoint has another root than the cosigned one of size {size}")]
    SameSizeOtherRoot {
        /// The size.
        size: u64,
    },
    /// The consistency proof does not verify: not an extension of the cosigned tree (422).
    #[error(
        "the consistency proof from the cosigned size {old} to {size} does not verify: not an extension of the witnessed tree"
    )]
    Inconsistent {
        /// The cosigned size.
        old: u64,
        /// The checkpoint's size.
        size: u64,
    },
}

impl WitnessError {
    /// The HTTP status `tlog-witness` prescribes.
    pub fn status(&self) -> u16 {
        match self {
            WitnessError::Malformed(_) | WitnessError::OldAboveSize { .. } => 400,
            WitnessError::NotSigned => 403,
            WitnessError::UnknownOrigin(_) => 404,
            WitnessError::WrongOldSize { .. } | WitnessError::SameSizeOtherRoot { .. } => 409,
            WitnessError::Inconsistent { .. } => 422,
        }
    }
}

/// What a witness remembers of one log: the latest checkpoint it cosigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessedLog {
    /// Its size.
    pub size: u64,
    /// Its root.
    pub root: Hash,
    /// When the witness cosigned it, Unix seconds.
    pub cosigned_at: u64,
}

/// A witness's whole persisted view: per origin, the latest cosigned checkpoint.
pub type WitnessState = BTreeMap<String, WitnessedLog>;

/// The witness logic of `add-checkpoint`: its key, the logs it follows and its view.
#[derive(Debug, Clone)]
pub struct Witness {
    cosigner: Cosigner,
    logs: BTreeMap<String, NoteVerifier>,
    state: WitnessState,
}

impl Witness {
    /// A witness signing as `cosigner` that follows the logs whose checkpoint keys are
    /// `logs` (each key's name is the log's origin), starting from a stored view.
    pub fn new(
        cosigner: Cosigner,
        logs: impl IntoIterator<Item = NoteVerifier>,
        state: WitnessState,
    ) -> Witness {
        Witness {
            cosigner,
            logs: logs
                .into_iter()
                .map(|k| (k.name().to_string(), k))
                .collect(),
            state,
        }
    }

    /// The witness's verifier key.
    pub fn verifier(&self) -> CosignerKey {
        self.cosigner.verifier()
    }

    /// The persisted view.
    pub fn state(&self) -> &WitnessState {
        &self.state
    }

    /// Checks an `add-checkpoint` request as `tlog-witness` prescribes and, when the
    /// checkpoint extends the view, moves the view to it and returns the cosignature line
    /// (with its final newline). On any error the view is unchanged. The caller must persist
    /// [`Witness::state`] before answering, and serialise calls.
    pub fn add_checkpoint(
        &mut self,
        req: &AddCheckpoint,
        now: u64,
    ) -> Result<String, WitnessError> {
        let note =
            Note::parse(&req.checkpoint).map_err(|e| WitnessError::Malformed(e.to_string()))?;
        let body = CheckpointBody::parse(&note.text)?;
        let key = self
            .logs
            .get(&body.origin)
            .ok_or_else(|| WitnessError::UnknownOrigin(body.origin.clone()))?;
        note.verify(key).map_err(|_| WitnessError::NotSigned)?;
        if req.old > body.size {
            return Err(WitnessError::OldAboveSize {
                old: req.old,
                size: body.size,
            });
        }
        let known = self.state.get(&body.origin);
        let cosigned = known.map_or(0, |l| l.size);
        if req.old != cosigned {
            return Err(WitnessError::WrongOldSize {
                old: req.old,
                cosigned,
            });
        }
        match known {
            Some(l) if l.size == body.size && l.root != body.root => {
                return Err(WitnessError::SameSizeOtherRoot { size: body.size });
            }
            Some(l) if l.size == body.size => {}
            Some(l) => {
                verify_consistency(l.size, body.size, &l.root, &body.root, &req.proof).map_err(
                    |_| WitnessError::Inconsistent {
                        old: l.size,
                        size: body.size,
                    },
                )?;
            }
            // Nothing witnessed yet: the proof from size 0 must be empty.
            None if !req.proof.is_empty() => {
                return Err(WitnessError::Inconsistent {
                    old: 0,
                    size: body.size,
                });
            }
            None => {}
        }
        let time = now.min(MAX_COSIGNATURE_TIME);
        let sig = self.cosigner.cosign(&note.text, time);
        self.state.insert(
            body.origin,
            WitnessedLog {
                size: body.size,
                root: body.root,
                cosigned_at: time,
            },
        );
        Ok(signature_line(&sig))
    }
}

/// One note signature line, `— <name> <base64>\n`.
pub fn signature_line(sig: &NoteSignature) -> String {
    let mut raw = Vec::with_capacity(4 + sig.signature.len());
    raw.extend_from_slice(&sig.key_id);
    raw.extend_from_slice(&sig.signature);
    format!("\u{2014} {} {}\n", sig.name, B64.encode(raw))
}

/// Parses an `add-checkpoint` response body (signature lines) into signature lines, by
/// appending it to the checkpoint and parsing the note (as the spec suggests).
pub fn parse_response(checkpoint: &[u8], response: &[u8]) -> Result<Vec<NoteSignature>, NoteError> {
    let mut all = checkpoint.to_vec();
    all.extend_from_slice(response);
    let before = Note::parse(checkpoint)?.signatures.len();
    let note = Note::parse(&all)?;
    Ok(note.signatures[before..].to_vec())
}
