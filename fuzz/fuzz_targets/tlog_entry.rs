//! Fuzzes log leaves (`Entry::from_leaf`, with its canonical fast path and its serde
//! fallback) and the signed statements inside them (`Entry::verify`): a leaf that parses
//! re-encodes to exactly its own bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pinfold_tlog::{Entry, MAX_STATEMENT_TIME};

fuzz_target!(|data: &[u8]| {
    let Ok(entry) = Entry::from_leaf(data) else {
        return;
    };
    assert_eq!(entry.to_leaf(), data, "leaves have one encoding");
    assert_eq!(Entry::from_leaf(&entry.to_leaf()).as_ref(), Ok(&entry));
    assert!(
        entry.time() <= MAX_STATEMENT_TIME,
        "no time of 2^63 or later parses"
    );
    let _ = entry.definition();
    let _ = entry.verify();
});
