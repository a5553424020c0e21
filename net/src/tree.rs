//! The BLAKE3 tree cut into fixed groups: what makes a blob verifiable as it arrives.
//!
//! BLAKE3 is a binary Merkle tree over 1 KiB chunks whose left subtrees are always complete
//! powers of two. Cutting a blob into groups of [`GROUP_SIZE`] bytes (64 chunks) therefore
//! cuts the tree at one level: every group but the last is a complete subtree, and the root
//! over the groups' chaining values ("CVs") has the same shape as the root over chunks, with
//! the same split rule in group units. So a sender that first sends the CV of every group
//! lets the receiver (1) check the CV list against the blob's BLAKE3 hash before any content
//! arrives, and (2) check each group the moment its bytes are in, by hashing just that group
//! at its offset ([`blake3::hazmat`]). A blob of one group has no CV list: its bytes are
//! checked against the hash directly.
//!
//! The overhead is 32 bytes per 64 KiB (0.05 %); the most a liar can make a receiver read
//! past the CV list is one group. The tests compare [`root_from_cvs`] with [`blake3::hash`]
//! for every size class around the group and chunk boundaries, as `hazmat` asks.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

use crate::id::BlobId;

/// Bytes per group: 64 BLAKE3 chunks, enough for the widest SIMD hashing within a group.
pub const GROUP_SIZE: u64 = 64 * 1024;

/// A group's (non-root) chaining value.
pub type Cv = ChainingValue;

/// Number of groups of a blob of `len` bytes (an empty blob is one empty group).
pub fn group_count(len: u64) -> u64 {
    len.div_ceil(GROUP_SIZE).max(1)
}

/// Whether a blob of `len` bytes travels with a CV list (it has more than one group).
pub fn has_cv_list(len: u64) -> bool {
    len > GROUP_SIZE
}

/// Length of group `index` of a blob of `len` bytes.
pub fn group_len(len: u64, index: u64) -> u64 {
    len.saturating_sub(index * GROUP_SIZE).min(GROUP_SIZE)
}

/// The chaining value of group `index` (only meaningful when the blob has several groups).
pub fn group_cv(index: u64, data: &[u8]) -> Cv {
    let mut h = blake3::Hasher::new();
    h.set_input_offset(index * GROUP_SIZE);
    h.update(data);
    h.finalize_non_root()
}

fn largest_power_of_two_below(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

fn subtree_cv(cvs: &[Cv]) -> Cv {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let split = largest_power_of_two_below(cvs.len());
    merge_subtrees_non_root(
        &subtree_cv(&cvs[..split]),
        &subtree_cv(&cvs[split..]),
        Mode::Hash,
    )
}

/// The BLAKE3 hash of a blob from the CVs of its groups; `None` for fewer than two groups
/// (a single group's hash is its plain BLAKE3, which no CV can give).
pub fn root_from_cvs(cvs: &[Cv]) -> Option<BlobId> {
    if cvs.len() < 2 {
        return None;
    }
    let split = largest_power_of_two_below(cvs.len());
    let root = merge_subtrees_root(
        &subtree_cv(&cvs[..split]),
        &subtree_cv(&cvs[split..]),
        Mode::Hash,
    );
    Some(root.into())
}

/// The CV of every group of `data`, for a blob held in memory.
pub fn cvs_of(data: &[u8]) -> Vec<Cv> {
    data.chunks(GROUP_SIZE as usize)
        .enumerate()
        .map(|(i, g)| group_cv(i as u64, g))
        .collect()
}

/// Checks groups of one blob as they arrive, in order.
#[derive(Debug)]
pub struct GroupVerifier {
    id: BlobId,
    len: u64,
    cvs: Vec<Cv>,
    next: u64,
}

/// Why streamed content failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The CV list does not hash to the expected identity (or has the wrong length).
    #[error("group hashes do not match the blob identity")]
    BadCvList,
    /// A group's bytes do not match its CV.
    #[error("group {0} does not match its hash")]
    BadGroup(u64),
    /// A group arrived out of order or with the wrong length.
    #[error("unexpected group {0}")]
    Unexpected(u64),
}

impl GroupVerifier {
    /// A verifier for the blob `id` of `len` bytes; `cvs` must be given when
    /// [`has_cv_list`]`(len)`, and is checked against `id` here.
    pub fn new(id: BlobId, len: u64, cvs: Vec<Cv>) -> Result<Self, VerifyError> {
        if has_cv_list(len) {
            if cvs.len() as u64 != group_count(len) || root_from_cvs(&cvs) != Some(id) {
                return Err(VerifyError::BadCvList);
            }
        } else if !cvs.is_empty() {
            return Err(VerifyError::BadCvList);
        }
        Ok(GroupVerifier {
            id,
            len,
            cvs,
            next: 0,
        })
    }

    /// Index of the next expected group.
    pub fn next_group(&self) -> u64 {
        self.next
    }

    /// Whether every group has been verified.
    pub fn is_done(&self) -> bool {
        self.next >= group_count(self.len)
    }

    /// Length of the next expected group.
    pub fn next_len(&self) -> u64 {
        group_len(self.len, self.next)
    }

    /// Verifies the next group.
    pub fn verify_next(&mut self, data: &[u8]) -> Result<(), VerifyError> {
        let index = self.next;
        if self.is_done() || data.len() as u64 != group_len(self.len, index) {
            return Err(VerifyError::Unexpected(index));
        }
        let ok = if self.cvs.is_empty() {
            BlobId::of(data) == self.id
        } else {
            group_cv(index, data) == self.cvs[index as usize]
        };
        if !ok {
            return Err(VerifyError::BadGroup(index));
        }
        self.next += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn root_from_group_cvs_equals_blake3_for_every_size_class() {
        let g = GROUP_SIZE as usize;
        let mut sizes = vec![g + 1, 2 * g - 1, 2 * g, 2 * g + 1, 3 * g, 3 * g + 1024];
        for groups in [4usize, 5, 7, 8, 9, 15, 16, 17, 33] {
            sizes.extend([groups * g - 1, groups * g, groups * g + 1]);
        }
        for len in sizes {
            let d = data(len);
            let cvs = cvs_of(&d);
            assert_eq!(root_from_cvs(&cvs), Some(BlobId::of(&d)), "length {len}");
            let mut v = GroupVerifier::new(BlobId::of(&d), len as u64, cvs).unwrap();
            for chunk in d.chunks(g) {
                v.verify_next(chunk).unwrap();
            }
            assert!(v.is_done());
        }
    }

    #[test]
    fn single_group_blobs_verify_against_the_plain_hash() {
        for len in [0usize, 1, 1024, 1025, GROUP_SIZE as usize] {
            let d = data(len);
            assert!(!has_cv_list(len as u64));
            let mut v = GroupVerifier::new(BlobId::of(&d), len as u64, Vec::new()).unwrap();
            v.verify_next(&d).unwrap();
            assert!(v.is_done());
        }
    }

    #[test]
    fn a_flipped_byte_fails_its_own_group() {
        let len = 5 * GROUP_SIZE as usize + 77;
        let d = data(len);
        let id = BlobId::of(&d);
        let cvs = cvs_of(&d);
        let mut bad_cvs = cvs.clone();
        bad_cvs[2][0] ^= 1;
        assert_eq!(
            GroupVerifier::new(id, len as u64, bad_cvs).unwrap_err(),
            VerifyError::BadCvList
        );
        let mut corrupt = d.clone();
        corrupt[3 * GROUP_SIZE as usize + 5] ^= 0x80;
        let mut v = GroupVerifier::new(id, len as u64, cvs).unwrap();
        let mut groups = corrupt.chunks(GROUP_SIZE as usize);
        for _ in 0..3 {
            v.verify_next(groups.next().unwrap()).unwrap();
        }
        assert_eq!(
            v.verify_next(groups.next().unwrap()),
            Err(VerifyError::BadGroup(3))
        );
    }
}
