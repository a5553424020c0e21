//! Fuzzes signed provider ads as gossip delivers them (`SignedAd::decode_and_verify`,
//! with the seed provider as the gossip source and with another peer), and the bounded
//! provider view they feed.

#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use pinfold_net::SignedAd;
use pinfold_net::ad::ProviderView;

fuzz_target!(|data: &[u8]| {
    let source = pinfold_fuzz::provider_peer();
    let other = pinfold_fuzz::requestor_peer();

    let verified = SignedAd::decode_and_verify(data, &source);
    // The signer must be the source: one ad never verifies for two different peers.
    if verified.is_ok() {
        assert!(SignedAd::decode_and_verify(data, &other).is_err());
    }
    // Parsing alone (what a receiver does before it looks at the signature).
    if let Ok(ad) = serde_json::from_slice::<SignedAd>(data) {
        let _ = ad.ad.validate();
        let _ = ad.verify(&source);
    }
    let Ok(ad) = verified else {
        return;
    };
    // The wire form of a verified ad verifies again, to the same ad.
    let again = SignedAd::decode_and_verify(&ad.to_bytes(), &source)
        .expect("a verified ad re-encodes to a verifiable one");
    assert_eq!(again, ad);

    let now = Instant::now();
    let mut view = ProviderView::new(2, Duration::from_secs(60));
    let _ = view.check_time(&ad.ad, ad.ad.timestamp, Duration::from_secs(30));
    let _ = view.check_time(&ad.ad, u64::MAX, Duration::from_secs(u64::MAX));
    view.insert(source, ad.ad.clone(), now);
    view.insert(source, ad.ad.clone(), now);
    view.insert(other, ad.ad, now);
    assert!(view.len() <= 2);
    view.expire(now + Duration::from_secs(61));
    assert!(view.live(now + Duration::from_secs(61)).is_empty());
});
