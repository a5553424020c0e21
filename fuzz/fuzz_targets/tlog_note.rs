//! Fuzzes signed notes and checkpoints (`Note::parse`, `Note::verify`,
//! `Checkpoint::from_text`, `Checkpoint::open`) and the text forms around them (verifier
//! keys, public keys, signatures, root hashes): each either refuses the input or parses it
//! to a value that writes back to exactly the same bytes, so one value has one spelling.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pinfold_tlog::{Checkpoint, Hash, Note, NoteVerifier, PublicKey, Signature};

fuzz_target!(|data: &[u8]| {
    let log = pinfold_fuzz::log_verifier();

    if let Ok(note) = Note::parse(data) {
        assert_eq!(note.to_bytes(), data, "a parsed note writes back as read");
        assert!(note.text.ends_with('\n'));
        if let Ok(cp) = Checkpoint::from_text(&note.text) {
            assert_eq!(cp.to_text(), note.text, "a checkpoint writes back as read");
        }
        if let Ok(text) = note.verify(&log) {
            assert_eq!(text, note.text);
        }
    }
    if let Ok(cp) = Checkpoint::open(data, &log) {
        // Only the log's key signs checkpoints that open (the seeds are signed with it).
        let signed = cp
            .sign(&pinfold_fuzz::log_signer())
            .expect("an opened checkpoint signs");
        assert_eq!(Checkpoint::open(&signed, &log), Ok(cp));
    }

    // The single-line text forms, read from the first line.
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let line = s.lines().next().unwrap_or("");
    if let Ok(v) = NoteVerifier::from_vkey(line) {
        assert_eq!(v.to_vkey(), line);
    }
    if let Ok(k) = line.parse::<PublicKey>() {
        assert_eq!(k.to_string(), line);
    }
    if let Ok(sig) = line.parse::<Signature>() {
        assert_eq!(sig.to_string(), line);
    }
    if let Ok(h) = Hash::from_base64(line) {
        assert_eq!(h.to_base64(), line);
    }
});
