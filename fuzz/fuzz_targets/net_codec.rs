//! Fuzzes the job protocol's decoders exactly as the network runs them
//! (`codec::decode_request`, `codec::decode_response`, the functions `JobCodec` reads
//! with), then `Request::validate` / `Response::validate` and the answers a node derives
//! from a request, and checks that whatever decodes re-encodes to the same message.
//!
//! Secret values (`SecretValue`'s own deserializer) are reached through
//! `Offer::secret_values`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pinfold_net::Limits;
use pinfold_net::codec::{Inbound, decode_request, decode_response};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();

    match decode_request(data, limits.max_request_bytes) {
        Inbound::Request(req) => {
            // A node answers every request, valid or not, busy or not; none of it panics.
            match req.validate() {
                Ok(()) => {}
                Err(why) => {
                    let _ = req.invalid_response(why);
                }
            }
            let _ = req.busy_response();
            let bytes = pinfold_fuzz::encode_request(&req);
            match decode_request(&bytes, u64::MAX) {
                Inbound::Request(again) => assert_eq!(again, req),
                Inbound::Malformed(why) => panic!("re-encoded request does not decode: {why}"),
            }
        }
        Inbound::Malformed(why) => assert!(!why.is_empty()),
    }

    if let Ok(resp) = decode_response(data, limits.max_response_bytes) {
        let _ = resp.validate();
        let bytes = pinfold_fuzz::encode_response(&resp);
        let again = decode_response(&bytes, u64::MAX).expect("a re-encoded response decodes");
        assert_eq!(again, resp);
    }
});
