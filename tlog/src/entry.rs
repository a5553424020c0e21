//! Log entries (publications and reviews), their canonical leaf bytes and signed statements.
//!
//! A leaf is the canonical JSON (see [`task_defs::identity::write_canonical`]) of an [`Entry`];
//! [`Entry::from_leaf`] accepts only that exact encoding, so every entry has one leaf and
//! one leaf hash. What the key signs, the *statement*, is the leaf without its `signature`
//! member, in the same canonical JSON. Its `type` member (`pinfold-publish/2`,
//! `pinfold-review/2`) separates its domain from every other thing these keys sign
//! (definition documents are `pinfold-taskdef/1`, checkpoints are signed notes, which never
//! start with `{`, and format-1 statements had other type names, so no format-1 signature
//! verifies as format 2). The statement names the signing key, so a signature cannot be
//! re-attributed to another key, and the log's origin, so a statement signed for one log
//! (a staging registry) is not a statement about any other.
//!
//! Statement times are Unix seconds below 2^63 ([`MAX_STATEMENT_TIME`]); a leaf with a later
//! time is refused by the parser, so no consumer ever clamps or wraps one.

use std::borrow::Cow;
use std::fmt::Display;
use std::io::Write as _;

use serde::{Deserialize, Serialize};

use super::keys::{KeyError, PreparedKey, PublicKey, SecretKey, Signature};
use task_defs::identity::DefinitionId;

/// The `type` member of an author's publication statement (and of its leaf).
pub const PUBLISH_STATEMENT_TYPE: &str = "pinfold-publish/2";
/// The `type` member of a reviewer's statement (and of its leaf).
pub const REVIEW_STATEMENT_TYPE: &str = "pinfold-review/2";
/// The latest statement time any parser accepts: 2^63 - 1, so a time always fits the signed
/// 64-bit integers of SQLite, JSON consumers and C2SP timestamps.
pub const MAX_STATEMENT_TIME: u64 = i64::MAX as u64;
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
    /// The origin of the log the author published to.
    pub origin: String,
    /// The author's signature over [`Published::statement`].
    pub signature: Signature,
    /// When the author signed, in Unix seconds.
    pub time: u64,
}

impl Published {
    /// Signs a publication as `author` to the log named `origin`.
    pub fn sign(
        author: &SecretKey,
        origin: &str,
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
            origin: origin.to_string(),
            signature: Signature([0; 64]),
            time,
        };
        p.signature = author.sign(&p.statement());
        p
    }

    /// The bytes the author signs.
    pub fn statement(&self) -> Vec<u8> {
        // Written member by member in sorted key order, exactly as canonical JSON of
        // `{type, definition, name, version, author, origin, time}` (the tests hold the
        // two equal): building a `serde_json::Value` and sorting it cost more than the
        // signature check it feeds.
        let mut out = Vec::with_capacity(256);
        self.write(&mut out, None);
        out
    }

    /// Writes the statement, or with `signature` the leaf (the statement plus its
    /// `signature` member, in its sorted place).
    fn write(&self, out: &mut Vec<u8>, signature: Option<&Signature>) {
        out.extend_from_slice(b"{\"author\":");
        push_display(out, &self.author);
        out.extend_from_slice(b",\"definition\":");
        push_display(out, &self.definition);
        out.extend_from_slice(b",\"name\":");
        push_str(out, &self.name);
        out.extend_from_slice(b",\"origin\":");
        push_str(out, &self.origin);
        if let Some(sig) = signature {
            out.extend_from_slice(b",\"signature\":");
            push_display(out, sig);
        }
        out.extend_from_slice(b",\"time\":");
        push_u64(out, self.time);
        out.extend_from_slice(b",\"type\":");
        push_str(out, PUBLISH_STATEMENT_TYPE);
        out.extend_from_slice(b",\"version\":");
        push_str(out, &self.version);
        out.push(b'}');
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
    /// The origin of the log the statement is for.
    pub origin: String,
    /// Why (may be empty for approvals).
    pub reason: String,
    /// The reviewer's signature over [`Review::statement`].
    pub signature: Signature,
    /// When the reviewer signed, in Unix seconds. Of one reviewer's statements about one
    /// definition, the one with the greatest time is their verdict.
    pub time: u64,
}

impl Review {
    /// Signs a statement as `reviewer` for the log named `origin`.
    pub fn sign(
        reviewer: &SecretKey,
        origin: &str,
        action: ReviewAction,
        definition: DefinitionId,
        reason: &str,
        time: u64,
    ) -> Review {
        let mut r = Review {
            reviewer: reviewer.public_key(),
            action,
            definition,
            origin: origin.to_string(),
            reason: reason.to_string(),
            signature: Signature([0; 64]),
            time,
        };
        r.signature = reviewer.sign(&r.statement());
        r
    }

    /// The bytes the reviewer signs.
    pub fn statement(&self) -> Vec<u8> {
        // Canonical JSON of `{type, reviewer, action, definition, origin, reason, time}`,
        // written directly in sorted key order (see [`Published::statement`]).
        let mut out = Vec::with_capacity(256);
        self.write(&mut out, None);
        out
    }

    /// Writes the statement, or with `signature` the leaf.
    fn write(&self, out: &mut Vec<u8>, signature: Option<&Signature>) {
        out.extend_from_slice(b"{\"action\":");
        push_str(out, self.action.as_str());
        out.extend_from_slice(b",\"definition\":");
        push_display(out, &self.definition);
        out.extend_from_slice(b",\"origin\":");
        push_str(out, &self.origin);
        out.extend_from_slice(b",\"reason\":");
        push_str(out, &self.reason);
        out.extend_from_slice(b",\"reviewer\":");
        push_display(out, &self.reviewer);
        if let Some(sig) = signature {
            out.extend_from_slice(b",\"signature\":");
            push_display(out, sig);
        }
        out.extend_from_slice(b",\"time\":");
        push_u64(out, self.time);
        out.extend_from_slice(b",\"type\":");
        push_str(out, REVIEW_STATEMENT_TYPE);
        out.push(b'}');
    }

    /// Checks the reviewer's signature.
    pub fn verify(&self) -> Result<(), KeyError> {
        self.reviewer.verify(&self.statement(), &self.signature)
    }

    /// Checks the reviewer's signature against `key`, the already decompressed
    /// [`Review::reviewer`] (the verifier prepares its roster's keys once per sync rather
    /// than once per review).
    pub(crate) fn verify_prepared(&self, key: &PreparedKey) -> Result<(), KeyError> {
        key.verify(&self.statement(), &self.signature)
    }
}

/// One entry of the log. Its serde form is the leaf: the statement's members, the
/// signature, and the statement type as `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Entry {
    /// An author published a definition.
    #[serde(rename = "pinfold-publish/2")]
    Published(Published),
    /// A reviewer approved, rejected or revoked a definition.
    #[serde(rename = "pinfold-review/2")]
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
    /// The statement's time is 2^63 or later.
    #[error("statement time {0} is not below 2^63")]
    TimeOutOfRange(u64),
}

/// Appends a JSON string exactly as `serde_json` (and so [`task_defs::identity::write_canonical`]) writes it.
fn push_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a vec cannot fail");
}

/// Appends the JSON string of a value's text form (how keys, identities and signatures
/// serialize).
fn push_display(out: &mut Vec<u8>, v: &impl Display) {
    out.push(b'"');
    // Text forms of keys, identities and signatures are base64 or hex: nothing to escape.
    write!(out, "{v}").expect("writing to a vec cannot fail");
    out.push(b'"');
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    write!(out, "{n}").expect("writing to a vec cannot fail");
}

/// A cursor over leaf bytes in the one layout canonical encoding allows.
///
/// It only has to be right for canonical leaves: whatever it accepts is re-encoded and
/// compared byte for byte, and whatever it refuses goes through the general parser.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn lit(&mut self, s: &[u8]) -> Option<()> {
        let end = self.i.checked_add(s.len())?;
        (self.b.get(self.i..end)? == s).then(|| self.i = end)
    }

    /// A JSON string, borrowed unless it has escapes.
    fn str(&mut self) -> Option<Cow<'a, str>> {
        self.lit(b"\"")?;
        let start = self.i;
        let mut escaped = false;
        loop {
            match *self.b.get(self.i)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.i += 2;
                }
                _ => self.i += 1,
            }
        }
        let body = self.b.get(start..self.i)?;
        self.i += 1;
        if escaped {
            serde_json::from_slice(self.b.get(start - 1..self.i)?)
                .ok()
                .map(Cow::Owned)
        } else {
            std::str::from_utf8(body).ok().map(Cow::Borrowed)
        }
    }

    fn parse<T: std::str::FromStr>(&mut self) -> Option<T> {
        self.str()?.parse().ok()
    }

    fn u64(&mut self) -> Option<u64> {
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(d) = self.b.get(self.i).filter(|d| d.is_ascii_digit()) {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.i += 1;
        }
        (self.i > start).then_some(n)
    }

    fn end(&self) -> Option<()> {
        (self.i == self.b.len()).then_some(())
    }
}

impl Entry {
    /// The canonical leaf bytes that the log stores and hashes.
    pub fn to_leaf(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        self.write_leaf(&mut out);
        out
    }

    /// Appends the canonical leaf bytes: canonical JSON of the entry's serde form,
    /// written member by member in sorted key order (the tests hold this equal to
    /// [`task_defs::identity::write_canonical`] of the serialized value).
    fn write_leaf(&self, out: &mut Vec<u8>) {
        match self {
            Entry::Published(p) => p.write(out, Some(&p.signature)),
            Entry::Review(r) => r.write(out, Some(&r.signature)),
        }
    }

    /// Parses leaf bytes, accepting only the canonical encoding.
    pub fn from_leaf(leaf: &[u8]) -> Result<Entry, EntryError> {
        if leaf.len() > MAX_LEAF_BYTES {
            return Err(EntryError::TooLarge(leaf.len()));
        }
        // Fast path for the canonical layout, which every honest leaf has. It is exact
        // because the result must re-encode to the very same bytes; anything it refuses
        // (hostile or malformed leaves) takes the general path, which also gives the
        // precise error.
        if let Some(e) = Entry::parse_canonical(leaf) {
            let mut again = Vec::with_capacity(leaf.len());
            e.write_leaf(&mut again);
            if again == leaf {
                return e.check_time();
            }
        }
        let e: Entry =
            serde_json::from_slice(leaf).map_err(|e| EntryError::Malformed(e.to_string()))?;
        if e.to_leaf() != leaf {
            return Err(EntryError::NotCanonical);
        }
        e.check_time()
    }

    /// Refuses a time of 2^63 or later (the parser's last check).
    fn check_time(self) -> Result<Entry, EntryError> {
        match self.time() {
            t if t > MAX_STATEMENT_TIME => Err(EntryError::TimeOutOfRange(t)),
            _ => Ok(self),
        }
    }

    /// Reads the members of a leaf laid out canonically; `None` for any other layout.
    fn parse_canonical(leaf: &[u8]) -> Option<Entry> {
        let mut c = Cursor { b: leaf, i: 0 };
        if c.lit(b"{\"author\":").is_some() {
            let author = c.parse()?;
            c.lit(b",\"definition\":")?;
            let definition = c.parse()?;
            c.lit(b",\"name\":")?;
            let name = c.str()?.into_owned();
            c.lit(b",\"origin\":")?;
            let origin = c.str()?.into_owned();
            c.lit(b",\"signature\":")?;
            let signature = c.parse()?;
            c.lit(b",\"time\":")?;
            let time = c.u64()?;
            c.lit(b",\"type\":\"pinfold-publish/2\",\"version\":")?;
            let version = c.str()?.into_owned();
            c.lit(b"}")?;
            c.end()?;
            return Some(Entry::Published(Published {
                definition,
                name,
                version,
                author,
                origin,
                signature,
                time,
            }));
        }
        c.lit(b"{\"action\":")?;
        let action = match &*c.str()? {
            "approve" => ReviewAction::Approve,
            "reject" => ReviewAction::Reject,
            "revoke" => ReviewAction::Revoke,
            _ => return None,
        };
        c.lit(b",\"definition\":")?;
        let definition = c.parse()?;
        c.lit(b",\"origin\":")?;
        let origin = c.str()?.into_owned();
        c.lit(b",\"reason\":")?;
        let reason = c.str()?.into_owned();
        c.lit(b",\"reviewer\":")?;
        let reviewer = c.parse()?;
        c.lit(b",\"signature\":")?;
        let signature = c.parse()?;
        c.lit(b",\"time\":")?;
        let time = c.u64()?;
        c.lit(b",\"type\":\"pinfold-review/2\"}")?;
        c.end()?;
        Some(Entry::Review(Review {
            reviewer,
            action,
            definition,
            origin,
            reason,
            signature,
            time,
        }))
    }

    /// The definition the entry is about.
    pub fn definition(&self) -> DefinitionId {
        match self {
            Entry::Published(p) => p.definition,
            Entry::Review(r) => r.definition,
        }
    }

    /// The origin of the log the statement was signed for.
    pub fn origin(&self) -> &str {
        match self {
            Entry::Published(p) => &p.origin,
            Entry::Review(r) => &r.origin,
        }
    }

    /// When the statement was signed, Unix seconds.
    pub fn time(&self) -> u64 {
        match self {
            Entry::Published(p) => p.time,
            Entry::Review(r) => r.time,
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use task_defs::identity::write_canonical;

    fn canonical(v: &serde_json::Value) -> Vec<u8> {
        let mut out = Vec::new();
        write_canonical(v, &mut out).unwrap();
        out
    }

    /// The leaf encoding as first specified: canonical JSON of the serde form.
    fn reference_leaf(e: &Entry) -> Vec<u8> {
        canonical(&serde_json::to_value(e).unwrap())
    }

    /// The general parser alone, as `from_leaf` was before its fast path.
    fn reference_from_leaf(leaf: &[u8]) -> Result<Entry, EntryError> {
        if leaf.len() > MAX_LEAF_BYTES {
            return Err(EntryError::TooLarge(leaf.len()));
        }
        let e: Entry =
            serde_json::from_slice(leaf).map_err(|e| EntryError::Malformed(e.to_string()))?;
        if reference_leaf(&e) != leaf {
            return Err(EntryError::NotCanonical);
        }
        if e.time() >= 1 << 63 {
            return Err(EntryError::TimeOutOfRange(e.time()));
        }
        Ok(e)
    }

    /// An entry of `kind`; `other` is the origin of reviews and the version of publications.
    fn entry(kind: u8, text: String, other: String, time: u64, seed: u8) -> Entry {
        let key = SecretKey::from_seed([seed; 32]);
        let id = DefinitionId([seed.wrapping_mul(7); 32]);
        match kind % 4 {
            0 => Entry::Published(Published::sign(&key, &text, id, &text, &other, time)),
            n => {
                let action = [
                    ReviewAction::Approve,
                    ReviewAction::Reject,
                    ReviewAction::Revoke,
                ][n as usize - 1];
                Entry::Review(Review::sign(&key, &other, action, id, &text, time))
            }
        }
    }

    /// Strings that exercise every escape: quotes, backslashes, control characters, DEL,
    /// non-ASCII and astral characters.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), "[a-z\"\\\\\u{0}-\u{1f}\u{7f}é€😀/ ]{0,12}",]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn direct_encodings_equal_canonical_json(
            kind in any::<u8>(), a in text(), b in text(), time in any::<u64>(), seed in 1u8..8,
        ) {
            let e = entry(kind, a, b, time, seed);
            prop_assert_eq!(e.to_leaf(), reference_leaf(&e));
            let stmt = match &e {
                Entry::Published(p) => (p.statement(), canonical(&json!({
                    "type": PUBLISH_STATEMENT_TYPE,
                    "definition": p.definition,
                    "name": p.name,
                    "version": p.version,
                    "author": p.author,
                    "origin": p.origin,
                    "time": p.time,
                }))),
                Entry::Review(r) => (r.statement(), canonical(&json!({
                    "type": REVIEW_STATEMENT_TYPE,
                    "reviewer": r.reviewer,
                    "action": r.action.as_str(),
                    "definition": r.definition,
                    "origin": r.origin,
                    "reason": r.reason,
                    "time": r.time,
                }))),
            };
            prop_assert_eq!(&stmt.0, &stmt.1);
            // The statement is the leaf without its signature member.
            let mut leaf: serde_json::Value = serde_json::from_slice(&e.to_leaf()).unwrap();
            leaf.as_object_mut().unwrap().remove("signature");
            prop_assert_eq!(canonical(&leaf), stmt.1);
            if time < 1 << 63 {
                prop_assert_eq!(Entry::from_leaf(&e.to_leaf()), Ok(e));
            } else {
                prop_assert_eq!(Entry::from_leaf(&e.to_leaf()), Err(EntryError::TimeOutOfRange(time)));
            }
        }

        #[test]
        fn from_leaf_agrees_with_the_general_parser(
            kind in any::<u8>(), a in text(), b in text(), time in any::<u64>(), seed in 1u8..8,
            at in any::<prop::sample::Index>(), byte in any::<u8>(), how in 0u8..3,
        ) {
            let mut leaf = entry(kind, a, b, time, seed).to_leaf();
            let i = at.index(leaf.len());
            match how {
                0 => leaf[i] = byte,
                1 => leaf.insert(i, byte),
                _ => { leaf.remove(i); }
            }
            prop_assert_eq!(Entry::from_leaf(&leaf), reference_from_leaf(&leaf));
        }
    }

    #[test]
    fn non_canonical_spellings_are_refused() {
        let e = entry(1, "a/b".into(), String::new(), 7, 3);
        let leaf = String::from_utf8(e.to_leaf()).unwrap();
        for bad in [
            leaf.replace("a/b", "a\\/b"),
            leaf.replace("a/b", "\\u0061/b"),
            leaf.replace("\"time\":7", "\"time\":07"),
            leaf.replace("\"time\":7", "\"time\":7.0"),
            leaf.replace("approve", "appr\\u006fve"),
            format!("{leaf} "),
        ] {
            assert_ne!(bad, leaf);
            assert!(Entry::from_leaf(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
