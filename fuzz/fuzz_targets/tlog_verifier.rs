//! Fuzzes the registry client's verifier (`Verifier::update`) against a log that holds its
//! signing key and lies at will: checkpoints of any size, root, time and origin, any
//! leaves (raw bytes or statements signed by the author, trusted reviewers or strangers,
//! for this log or a staging one, at any time), honest or arbitrary consistency proofs.
//! The verifier must never panic, must leave its state untouched on any refusal, must
//! only ever grow along the one honest tree, and its status report must agree with its
//! status.
//!
//! Stored state is the other input a verifier reads: when the input starts with `{`, it
//! is read as `VerifierState` JSON and restored instead (`Verifier::restore`).

#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use pinfold_fuzz::{ORIGIN, STAGING, key, log_signer, verifier_config};
use pinfold_tlog::{
    Checkpoint, Entry, Hash, MemoryTree, Published, Review, ReviewAction, Verifier, VerifierState,
    consistency_proof,
};
use task_defs::DefinitionId;

const START: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    if data.first() == Some(&b'{') {
        if let Ok(state) = serde_json::from_slice::<VerifierState>(data)
            && let Ok(v) = Verifier::restore(verifier_config(), state)
        {
            statuses(&v, START);
        }
        return;
    }
    let _ = run(&mut Unstructured::new(data));
});

fn ids() -> [DefinitionId; 2] {
    [DefinitionId([1; 32]), DefinitionId([2; 32])]
}

fn statuses(v: &Verifier, now: u64) {
    for id in ids() {
        let _ = v.status(&id, now);
        let status = v.status_unchecked(&id);
        let report = v.report(&id);
        assert_eq!(
            report.status, status,
            "the report explains the status it gives"
        );
        assert!(report.approvals <= report.votes.len());
        let _ = v.record(&id);
    }
    let _ = v.check_fresh(now);
}

fn leaf(u: &mut Unstructured<'_>, now: u64) -> Result<Vec<u8>> {
    let definition = *u.choose(&ids())?;
    // Mostly this log, sometimes a staging log; mostly around now, sometimes any time.
    let origin = if u.ratio(7, 8)? { ORIGIN } else { STAGING };
    let time = if u.ratio(7, 8)? {
        now.saturating_sub(u.int_in_range(0..=100)?)
    } else {
        u.arbitrary()?
    };
    Ok(match u.int_in_range(0..=3)? {
        0 => u.arbitrary::<&[u8]>()?.to_vec(),
        1 => Entry::Published(Published::sign(
            &key(u.int_in_range(1..=4)?),
            origin,
            definition,
            "tiny",
            "0.1.0",
            time,
        ))
        .to_leaf(),
        _ => {
            let action = *u.choose(&[
                ReviewAction::Approve,
                ReviewAction::Reject,
                ReviewAction::Revoke,
            ])?;
            // Reviewers 2 and 3 are trusted; 4 is a stranger.
            let reviewer = key(u.int_in_range(2..=4)?);
            let mut leaf = Entry::Review(Review::sign(
                &reviewer, origin, action, definition, "", time,
            ))
            .to_leaf();
            if u.ratio(1, 8)? && !leaf.is_empty() {
                // A statement whose signature no longer matches.
                let at = u.choose_index(leaf.len())?;
                leaf[at] ^= 1;
            }
            leaf
        }
    })
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let mut v = Verifier::new(verifier_config()).expect("a valid configuration");
    // The leaves the verifier has accepted so far: the one honest tree.
    let mut tree = MemoryTree::new();
    let mut now = START;
    for _ in 0..u.int_in_range(1..=5)? {
        let mut next = tree.clone();
        let mut leaves = Vec::new();
        for _ in 0..u.int_in_range(0..=4)? {
            let l = leaf(u, now)?;
            next.push(&l);
            leaves.push(l);
        }
        let size = if u.ratio(3, 4)? {
            next.size()
        } else {
            u.arbitrary()?
        };
        let root = match u.int_in_range(0..=5)? {
            0 => Hash(u.arbitrary()?),
            1 => tree.root(),
            _ => next.root(),
        };
        let time = if u.ratio(3, 4)? { now } else { u.arbitrary()? };
        let origin = if u.ratio(15, 16)? {
            ORIGIN.to_string()
        } else {
            u.arbitrary()?
        };
        let proof = if u.ratio(3, 4)? {
            consistency_proof(&next, v.size(), next.size()).unwrap_or_default()
        } else {
            let n = u.int_in_range(0..=8)?;
            (0..n)
                .map(|_| Ok(Hash(u.arbitrary()?)))
                .collect::<Result<Vec<_>>>()?
        };
        let cp = Checkpoint {
            origin,
            size,
            root,
            time,
        };
        let Ok(note) = cp.sign(&log_signer()) else {
            continue;
        };
        // Sometimes the leaves are handed over short or long.
        if u.ratio(1, 8)? {
            leaves.truncate(u.int_in_range(0..=leaves.len())?);
        }
        let before = v.state().clone();
        match v.update(&note, &leaves, &proof, now) {
            Ok(report) => {
                assert_eq!(report.new_size, size);
                assert_eq!(v.size(), size);
                if size > before.frontier.size() {
                    // Growth is only ever along the honest tree.
                    assert_eq!(size, next.size());
                    assert_eq!(v.state().frontier.root(), next.root());
                    tree = next;
                } else {
                    assert_eq!(v.state().frontier, before.frontier);
                }
            }
            Err(_) => assert_eq!(v.state(), &before, "a refused update changed the state"),
        }
        statuses(&v, now);
        now = now.saturating_add(u.int_in_range(0..=600)?);
    }
    Ok(())
}
