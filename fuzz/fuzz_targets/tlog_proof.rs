//! Fuzzes Merkle proof verification (`verify_inclusion`, `verify_consistency`) with
//! arbitrary proofs against arbitrary sizes, indices and roots (which must never panic,
//! whatever the index arithmetic meets), and checks proofs from a real tree: they verify,
//! and any altered proof, index or root does not.
//!
//! Input (through `arbitrary`): the fully arbitrary proof first, then a tree size up to
//! 200 leaves with the positions and the alteration to try on it.

#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use pinfold_tlog::{
    Frontier, Hash, MemoryTree, consistency_proof, inclusion_proof, verify_consistency,
    verify_inclusion,
};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = arbitrary_proofs(&mut u);
    let _ = real_tree(&mut u);
});

fn hash(u: &mut Unstructured<'_>) -> Result<Hash> {
    Ok(Hash(u.arbitrary()?))
}

fn hashes(u: &mut Unstructured<'_>) -> Result<Vec<Hash>> {
    // A little past MAX_PROOF_LEN, so the length cap itself is exercised.
    let n = u.int_in_range(0..=130)?;
    (0..n).map(|_| hash(u)).collect()
}

/// Sizes where the arithmetic is interesting: tiny, powers of two and their neighbours,
/// and the top of the range.
fn size(u: &mut Unstructured<'_>) -> Result<u64> {
    Ok(match u.int_in_range(0..=3)? {
        0 => u.int_in_range(0..=70)?,
        1 => {
            let k = u.int_in_range(0..=63)?;
            let d: i8 = u.int_in_range(-1..=1)?;
            (1u64 << k).wrapping_add_signed(d.into())
        }
        2 => u64::MAX - u.int_in_range(0..=3)?,
        _ => u.arbitrary()?,
    })
}

fn arbitrary_proofs(u: &mut Unstructured<'_>) -> Result<()> {
    let (leaf, root) = (hash(u)?, hash(u)?);
    let (index, tree_size) = (size(u)?, size(u)?);
    let proof = hashes(u)?;
    let _ = verify_inclusion(&leaf, index, tree_size, &proof, &root);

    let (old, new) = (size(u)?, size(u)?);
    let (old_root, new_root) = (hash(u)?, hash(u)?);
    let proof = hashes(u)?;
    let _ = verify_consistency(old, new, &old_root, &new_root, &proof);
    Ok(())
}

fn real_tree(u: &mut Unstructured<'_>) -> Result<()> {
    let n: u64 = u.int_in_range(1..=200)?;
    let mut tree = MemoryTree::new();
    let mut frontier = Frontier::new();
    for i in 0..n {
        // Distinct leaves: with equal leaves a proof may honestly verify at another index.
        tree.push(&i.to_le_bytes());
        frontier.push_hash(*tree.leaf_hashes().last().expect("just pushed"));
        assert_eq!(frontier.root(), tree.root());
    }
    let leaves = tree.leaf_hashes().to_vec();
    let root_at = |size: u64| pinfold_tlog::root(&tree, size).expect("size within the tree");

    // Inclusion: the real proof verifies; another index or an altered hash does not.
    let size = u.int_in_range(1..=n)?;
    let index = u.int_in_range(0..=size - 1)?;
    let mut proof = inclusion_proof(&tree, index, size).expect("index below size");
    let root = root_at(size);
    let leaf = leaves[index as usize];
    assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));
    let other = u.int_in_range(0..=size)?;
    if other != index {
        assert!(verify_inclusion(&leaf, other, size, &proof, &root).is_err());
    }
    if !proof.is_empty() {
        let at = u.choose_index(proof.len())?;
        proof[at].0[u.int_in_range(0..=31)?] ^= 1 << u.int_in_range(0..=7)?;
        assert!(verify_inclusion(&leaf, index, size, &proof, &root).is_err());
    }

    // Consistency: the real proof verifies; altered sizes, roots or hashes do not.
    let new = u.int_in_range(0..=n)?;
    let old = u.int_in_range(0..=new)?;
    let mut proof = consistency_proof(&tree, old, new).expect("sizes within the tree");
    let (old_root, new_root) = (root_at(old), root_at(new));
    assert_eq!(
        verify_consistency(old, new, &old_root, &new_root, &proof),
        Ok(())
    );
    if old > 0 && old < new {
        let wrong = u.int_in_range(1..=new)?;
        if wrong != old {
            assert!(verify_consistency(wrong, new, &old_root, &new_root, &proof).is_err());
        }
        let at = u.choose_index(proof.len())?;
        proof[at].0[u.int_in_range(0..=31)?] ^= 1 << u.int_in_range(0..=7)?;
        assert!(verify_consistency(old, new, &old_root, &new_root, &proof).is_err());
    }

    // The tree answers out-of-range requests with errors, never panics.
    let (a, b) = (u.arbitrary::<u64>()?, u.arbitrary::<u64>()?);
    let _ = inclusion_proof(&tree, a, b);
    let _ = consistency_proof(&tree, a, b);
    let _ = pinfold_tlog::root(&tree, a);
    Ok(())
}
