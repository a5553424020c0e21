//! Fuzzes saved receipts (`Receipt::from_json`, `Receipt::verify`) and checks that a
//! receipt that verifies names its signer, and still verifies after a save/load cycle.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pinfold_net::Receipt;

fuzz_target!(|data: &[u8]| {
    let Ok(receipt) = Receipt::from_json(data) else {
        return;
    };
    let Ok(signer) = receipt.verify() else {
        return;
    };
    // Only the peer the body names can have signed it (the seed provider, unless the
    // fuzzer forged an Ed25519 signature).
    assert_eq!(signer.to_base58(), receipt.body.provider);
    let again = Receipt::from_json(receipt.to_json().as_bytes()).expect("a saved receipt loads");
    assert_eq!(again, receipt);
    assert_eq!(again.verify().ok(), Some(signer));
});
