//! Fuzzes bundle reading (`bundle::read_entries`, `bundle::read`) with arbitrary bytes
//! under the real caps, and checks that a bundle that reads is the definition it packs to.
//!
//! Unpacking to disk (`bundle::unpack`) is `read` followed by `Definition::write_to`, and
//! writes nothing unless `read` succeeded; the target stays in memory so it can run at
//! full speed and never litters the disk.

#![no_main]

use libfuzzer_sys::fuzz_target;
use task_defs::bundle;

fuzz_target!(|data: &[u8]| {
    let entries = bundle::read_entries(data);
    let def = bundle::read(data);
    match (&entries, &def) {
        (Ok((manifest, files)), Ok(def)) => {
            assert_eq!(manifest, &def.manifest_text);
            assert_eq!(files, &def.files);
        }
        // Every bundle that reads was split into entries first.
        (Err(_), Ok(_)) => panic!("bundle read although its entries were refused"),
        _ => {}
    }
    let Ok(def) = def else {
        return;
    };
    // pack(read(b)) is a canonical bundle of the same definition: it reads back with the
    // same identity, and packing is a fixed point from there on.
    let packed = bundle::pack(&def);
    let again = bundle::read(&packed).expect("a packed valid definition reads back");
    assert_eq!(again.id, def.id);
    assert_eq!(again.files, def.files);
    assert_eq!(again.manifest_text, def.manifest_text);
    assert_eq!(bundle::pack(&again), packed);
});
