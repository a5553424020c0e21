//! The RFC 6962 / RFC 9162 Merkle tree: hashing, roots, inclusion and consistency proofs.
//!
//! Proof *generation* works over any [`HashSource`] so the registry server can keep leaf
//! hashes in SQLite (or memory) and still answer proofs for large trees: every perfect,
//! aligned subtree is asked of the source first ([`HashSource::cached_subtree`]), which
//! makes roots and proofs O(log² n) hash reads with [`MemoryTree`], and O(n) with a plain
//! slice. Proof *verification* is the iterative algorithm of RFC 9162 §2.1.3.2 and
//! §2.1.4.2; it takes hostile input and never panics.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The longest proof any tree of at most 2⁶⁴ − 1 leaves needs; longer proofs are refused
/// before any hashing so a hostile proof cannot cost more than this many hash operations.
pub const MAX_PROOF_LEN: usize = 128;

/// A SHA-256 tree hash (leaf hash, interior node or root).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The root of the empty tree: SHA-256 of the empty string (RFC 6962 §2.1).
    pub fn empty_root() -> Hash {
        Hash(Sha256::digest([]).into())
    }

    /// The standard base64 form used in checkpoints.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// Parses the standard base64 form, insisting on the canonical encoding.
    pub fn from_base64(s: &str) -> Result<Hash, ParseHashError> {
        let err = || ParseHashError(s.chars().take(80).collect());
        let bytes = B64.decode(s).map_err(|_| err())?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| err())?;
        // A lenient decoder accepts non-zero trailing bits; re-encoding rejects that, so
        // one root has exactly one text form and checkpoints cannot be malleated.
        if B64.encode(arr) != s {
            return Err(err());
        }
        Ok(Hash(arr))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", hex::encode(self.0))
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Why a string is not a tree hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a tree hash (expected 32 bytes)")]
pub struct ParseHashError(pub String);

impl FromStr for Hash {
    type Err = ParseHashError;
    /// Parses 64 lower-case hex digits (the `Display` form).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseHashError(s.chars().take(80).collect());
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| err())?;
        Ok(Hash(out))
    }
}

pinfold_base::serde_as_text!(Hash);

/// The leaf hash of an entry: SHA-256(0x00 ‖ leaf).
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(leaf);
    Hash(h.finalize().into())
}

/// An interior node hash: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

/// Where proof generation reads leaf hashes from (the server: SQLite or memory).
pub trait HashSource {
    /// What reading a hash can fail with (`Infallible` for memory).
    type Error: std::error::Error + 'static;

    /// How many leaves the source holds; trees of any size up to this can be proven.
    fn len(&self) -> u64;

    /// Whether the source holds no leaves.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hash of leaf `index` (`index < len()`).
    fn leaf_hash(&self, index: u64) -> Result<Hash, Self::Error>;

    /// The root of the perfect subtree of `2^level` leaves starting at leaf
    /// `index << level`, if the source has it cached. Answering `None` is always
    /// correct (the caller then recurses); answering lets roots and proofs skip work.
    fn cached_subtree(&self, level: u32, index: u64) -> Result<Option<Hash>, Self::Error> {
        let _ = (level, index);
        Ok(None)
    }
}

impl HashSource for [Hash] {
    type Error = Infallible;
    fn len(&self) -> u64 {
        <[Hash]>::len(self) as u64
    }
    fn leaf_hash(&self, index: u64) -> Result<Hash, Infallible> {
        Ok(self[index as usize])
    }
}

impl HashSource for Vec<Hash> {
    type Error = Infallible;
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
    fn leaf_hash(&self, index: u64) -> Result<Hash, Infallible> {
        Ok(self[index as usize])
    }
}

/// Why a root or proof could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum TreeError<E: std::error::Error + 'static> {
    /// The requested tree is bigger than the source.
    #[error("tree size {size} exceeds the {available} leaves available")]
    SizeTooLarge {
        /// The requested tree size.
        size: u64,
        /// Leaves the source holds.
        available: u64,
    },
    /// An inclusion proof for a leaf outside the tree was requested.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// The requested leaf.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A consistency proof from a bigger tree to a smaller one was requested.
    #[error("old tree size {old} is larger than new tree size {new}")]
    SizesOutOfOrder {
        /// The older tree size.
        old: u64,
        /// The newer tree size.
        new: u64,
    },
    /// The hash source failed.
    #[error("reading a leaf hash failed")]
    Source(#[source] E),
}

/// Largest power of two strictly below `n` (`n >= 2`), the RFC 6962 split point.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// MTH(D[start .. start + len]), `len >= 1`.
fn subtree<S: HashSource + ?Sized>(src: &S, start: u64, len: u64) -> Result<Hash, S::Error> {
    if len == 1 {
        return src.leaf_hash(start);
    }
    // Every perfect subtree of an RFC 6962 tree is aligned to its size, so it has a
    // (level, index) address a cache can answer.
    if len.is_power_of_two() && start.is_multiple_of(len) {
        let level = len.trailing_zeros();
        if let Some(h) = src.cached_subtree(level, start >> level)? {
            return Ok(h);
        }
    }
    let k = split(len);
    let left = subtree(src, start, k)?;
    let right = subtree(src, start + k, len - k)?;
    Ok(node_hash(&left, &right))
}

fn check_size<S: HashSource + ?Sized>(src: &S, size: u64) -> Result<(), TreeError<S::Error>> {
    if size > src.len() {
        return Err(TreeError::SizeTooLarge {
            size,
            available: src.len(),
        });
    }
    Ok(())
}

/// The root of the tree made of the first `size` leaves of `src`.
pub fn root<S: HashSource + ?Sized>(src: &S, size: u64) -> Result<Hash, TreeError<S::Error>> {
    check_size(src, size)?;
    if size == 0 {
        return Ok(Hash::empty_root());
    }
    subtree(src, 0, size).map_err(TreeError::Source)
}

/// The inclusion proof of leaf `index` in the tree of the first `size` leaves
/// (RFC 6962 §2.1.1 PATH), deepest sibling first.
pub fn inclusion_proof<S: HashSource + ?Sized>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, TreeError<S::Error>> {
    check_size(src, size)?;
    if index >= size {
        return Err(TreeError::IndexOutOfRange { index, size });
    }
    let mut out = Vec::new();
    path(src, index, 0, size, &mut out).map_err(TreeError::Source)?;
    out.reverse();
    Ok(out)
}

/// PATH(m, D[start .. start + n]), pushed root-side first (the caller reverses).
fn path<S: HashSource + ?Sized>(
    src: &S,
    m: u64,
    start: u64,
    n: u64,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    if n == 1 {
        return Ok(());
    }
    let k = split(n);
    if m < k {
        out.push(subtree(src, start + k, n - k)?);
        path(src, m, start, k, out)
    } else {
        out.push(subtree(src, start, k)?);
        path(src, m - k, start + k, n - k, out)
    }
}

/// The consistency proof between the trees of the first `old` and first `new` leaves
/// (RFC 6962 §2.1.2 PROOF). Empty when `old` is 0 or equals `new`.
pub fn consistency_proof<S: HashSource + ?Sized>(
    src: &S,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, TreeError<S::Error>> {
    check_size(src, new)?;
    if old > new {
        return Err(TreeError::SizesOutOfOrder { old, new });
    }
    let mut out = Vec::new();
    if old == 0 || old == new {
        return Ok(out);
    }
    subproof(src, old, 0, new, true, &mut out).map_err(TreeError::Source)?;
    out.reverse();
    Ok(out)
}

/// SUBPROOF(m, D[start .. start + n], b), pushed root-side first.
fn subproof<S: HashSource + ?Sized>(
    src: &S,
    m: u64,
    start: u64,
    n: u64,
    b: bool,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    if m == n {
        if !b {
            out.push(subtree(src, start, n)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        out.push(subtree(src, start + k, n - k)?);
        subproof(src, m, start, k, b, out)
    } else {
        out.push(subtree(src, start, k)?);
        subproof(src, m - k, start + k, n - k, false, out)
    }
}

/// Why a proof did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// The claimed leaf index.
        index: u64,
        /// The claimed tree size.
        size: u64,
    },
    /// The old tree is bigger than the new one.
    #[error("old tree size {old} is larger than new tree size {new}")]
    SizesOutOfOrder {
        /// The older tree size.
        old: u64,
        /// The newer tree size.
        new: u64,
    },
    /// The proof has the wrong number of hashes for these sizes.
    #[error("proof has the wrong length for these tree sizes")]
    WrongLength,
    /// The proof does not lead to the expected root(s).
    #[error("proof does not match the root hash")]
    RootMismatch,
}

/// Verifies that `leaf` (a leaf hash) is leaf `index` of the tree of `size` leaves whose
/// root is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    if proof.len() > MAX_PROOF_LEN {
        return Err(ProofError::WrongLength);
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verifies that the tree of `new` leaves with root `new_root` extends the tree of `old`
/// leaves with root `old_root` (RFC 9162 §2.1.4.2). The empty tree is extended by every
/// tree (with an empty proof); equal sizes need an empty proof and equal roots.
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::SizesOutOfOrder { old, new });
    }
    if proof.len() > MAX_PROOF_LEN {
        return Err(ProofError::WrongLength);
    }
    if old == 0 || old == new {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        if old == new && old_root != new_root {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength);
    }
    // A perfect old tree is itself a node of the new tree; the proof omits it.
    let (first, rest) = if old.is_power_of_two() {
        (*old_root, proof)
    } else {
        (proof[0], &proof[1..])
    };
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (first, first);
    for c in rest {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr != *old_root || sr != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// An in-memory tree that caches every perfect subtree (about 2n hashes, 64 bytes a
/// leaf), so roots and proofs at any size cost O(log² n) hashing. The server can
/// rebuild one from its stored leaf hashes at start-up and append as it logs.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    /// `levels[l][i]` is the root of leaves `[i << l, (i + 1) << l)`; level 0 is leaves.
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> Self {
        MemoryTree::default()
    }

    /// A tree of these leaf hashes.
    pub fn from_leaf_hashes(hashes: impl IntoIterator<Item = Hash>) -> Self {
        let mut t = MemoryTree::new();
        for h in hashes {
            t.push_hash(h);
        }
        t
    }

    /// Appends a leaf (its bytes) and returns its index.
    pub fn push(&mut self, leaf: &[u8]) -> u64 {
        self.push_hash(leaf_hash(leaf))
    }

    /// Appends a leaf by its leaf hash and returns its index.
    pub fn push_hash(&mut self, hash: Hash) -> u64 {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        let index = self.levels[0].len() as u64;
        self.levels[0].push(hash);
        // Completing a pair on one level completes one node on the next, like a carry.
        let mut level = 0;
        while self.levels[level].len().is_multiple_of(2) {
            let n = self.levels[level].len();
            let parent = node_hash(&self.levels[level][n - 2], &self.levels[level][n - 1]);
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[level + 1].push(parent);
            level += 1;
        }
        index
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// The leaf hashes, in order.
    pub fn leaf_hashes(&self) -> &[Hash] {
        self.levels.first().map_or(&[], |l| l.as_slice())
    }

    /// The root at the current size.
    pub fn root(&self) -> Hash {
        if self.size() == 0 {
            return Hash::empty_root();
        }
        let Ok(h) = subtree(self, 0, self.size());
        h
    }
}

impl HashSource for MemoryTree {
    type Error = Infallible;
    fn len(&self) -> u64 {
        self.size()
    }
    fn leaf_hash(&self, index: u64) -> Result<Hash, Infallible> {
        Ok(self.levels[0][index as usize])
    }
    fn cached_subtree(&self, level: u32, index: u64) -> Result<Option<Hash>, Infallible> {
        Ok(self
            .levels
            .get(level as usize)
            .and_then(|l| l.get(index as usize))
            .copied())
    }
}

/// The right edge of a tree: the roots of its maximal perfect subtrees, largest first
/// (at most 64 hashes). It is all a client needs to append leaves and recompute the root,
/// so a verifier can check that the entries a server sent really make the signed root
/// without storing the whole tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frontier {
    size: u64,
    /// One hash per set bit of `size`, highest bit first.
    peaks: Vec<Hash>,
}

/// Why a frontier is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frontier of size {size} must hold {expected} hashes, not {actual}")]
pub struct FrontierError {
    /// The claimed size.
    pub size: u64,
    /// The number of set bits of the size.
    pub expected: u32,
    /// How many hashes it holds.
    pub actual: usize,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Frontier::default()
    }

    /// Builds a frontier from its parts, checking there is one peak per set bit of `size`.
    pub fn from_parts(size: u64, peaks: Vec<Hash>) -> Result<Self, FrontierError> {
        if peaks.len() != size.count_ones() as usize {
            return Err(FrontierError {
                size,
                expected: size.count_ones(),
                actual: peaks.len(),
            });
        }
        Ok(Frontier { size, peaks })
    }

    /// Checks the invariant after deserializing untrusted state.
    pub fn validate(&self) -> Result<(), FrontierError> {
        Frontier::from_parts(self.size, self.peaks.clone()).map(|_| ())
    }

    /// The number of leaves appended.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The peaks, largest subtree first.
    pub fn peaks(&self) -> &[Hash] {
        &self.peaks
    }

    /// Appends one leaf hash.
    pub fn push_hash(&mut self, hash: Hash) {
        let mut h = hash;
        // Each trailing one bit of the old size is a peak of equal size to merge with.
        let mut carry = self.size;
        while carry & 1 == 1 {
            let left = self.peaks.pop().expect("one peak per set bit");
            h = node_hash(&left, &h);
            carry >>= 1;
        }
        self.peaks.push(h);
        self.size += 1;
    }

    /// The root hash of the tree so far.
    pub fn root(&self) -> Hash {
        let mut it = self.peaks.iter().rev();
        let Some(last) = it.next() else {
            return Hash::empty_root();
        };
        it.fold(*last, |acc, left| node_hash(left, &acc))
    }
}
