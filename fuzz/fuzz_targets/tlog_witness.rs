//! Fuzzes the witness side of C2SP tlog-witness (`AddCheckpoint::parse`,
//! `Witness::add_checkpoint`, `parse_response`) and cosigner verifier keys. The witness has
//! cosigned the honest log at size 3; whatever the request, it must not panic, must leave
//! its view untouched when it refuses, and may cosign only a checkpoint signed by the log's
//! key that the request's proof shows extends the witnessed tree; its cosignature must
//! verify under its own key.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pinfold_fuzz::{ORIGIN, WITNESSED_SIZE, cosigner, honest_tree, log_verifier, witness};
use pinfold_tlog::witness::{CheckpointBody, parse_response};
use pinfold_tlog::{AddCheckpoint, CosignerKey, Note, verify_consistency};

const NOW: u64 = 1_700_000_500;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(k) = CosignerKey::from_vkey(s.lines().next().unwrap_or(""))
    {
        assert_eq!(k.to_vkey(), s.lines().next().unwrap_or(""));
    }
    let Ok(req) = AddCheckpoint::parse(data) else {
        return;
    };
    assert!(req.proof.len() <= 63);
    let mut w = witness();
    let before = w.state().clone();
    match w.add_checkpoint(&req, NOW) {
        Ok(line) => {
            let note = Note::parse(&req.checkpoint).expect("a cosigned note parses");
            note.verify(&log_verifier())
                .expect("only the log's checkpoints are cosigned");
            let body = CheckpointBody::parse(&note.text).expect("a cosigned body parses");
            assert_eq!(body.origin, ORIGIN);
            assert_eq!(req.old, WITNESSED_SIZE);
            let old_root = honest_tree(WITNESSED_SIZE).root();
            if body.size == WITNESSED_SIZE {
                assert_eq!(body.root, old_root, "a second root for the witnessed size");
            } else {
                verify_consistency(WITNESSED_SIZE, body.size, &old_root, &body.root, &req.proof)
                    .expect("only extensions of the witnessed tree are cosigned");
            }
            let sigs = parse_response(&req.checkpoint, line.as_bytes()).expect("one line");
            assert_eq!(sigs.len(), 1);
            let key = cosigner().verifier();
            assert_eq!(key.verify(&note.text, &sigs[0], NOW), Ok(NOW));
            assert_eq!(w.state()[ORIGIN].size, body.size);
        }
        Err(_) => assert_eq!(w.state(), &before, "a refusal changed the view"),
    }
});
