//! Fuzzes the blob transfer's wire parsing: the request the serving side reads
//! (`transfer::parse_request`), the header the fetching side reads
//! (`transfer::parse_header`), the CV list checked against the identity
//! (`transfer::cv_list_verifier`) and the group-by-group verification that follows.
//!
//! Input: a header, then the CV list the fetcher would read for the announced size, then
//! control bytes. The blob fetched is a fixed four-group blob, so a seed carrying its real
//! CV list gets past the identity check; content then comes from that blob, with one
//! byte flipped where the control bytes say and zeros past its end, and a group must
//! verify exactly when it is the blob's own group.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pinfold_net::transfer::{self, HEADER_LEN, REQUEST_LEN};
use pinfold_net::tree::{self, GROUP_SIZE};
use pinfold_net::{BlobId, FetchLimits};

fuzz_target!(|data: &[u8]| {
    // The serving side: any 44 bytes either parse to (identity, cap) or are refused.
    if let Some(req) = data.first_chunk::<REQUEST_LEN>()
        && let Some((id, max)) = transfer::parse_request(req)
    {
        assert_eq!(id.0[..], req[4..36]);
        assert_eq!(max.to_be_bytes()[..], req[36..]);
    }
    // Arbitrary CV lists never panic the root computation.
    let cvs: Vec<tree::Cv> = data
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32 bytes"))
        .collect();
    let _ = tree::root_from_cvs(&cvs);

    let Some(header) = data.first_chunk::<HEADER_LEN>() else {
        return;
    };
    let rest = &data[HEADER_LEN..];
    let blob = pinfold_fuzz::transfer_blob();
    let id = BlobId::of(&blob);
    // What a requester that knows nothing of the size would accept, and one that knows it.
    let loose = FetchLimits {
        expected_size: None,
        max_size: 1 << 20,
    };
    let _ = transfer::parse_header(header, id, FetchLimits::exact(blob.len() as u64));
    let Ok(size) = transfer::parse_header(header, id, loose) else {
        return;
    };
    assert!(size <= loose.max_size);

    let cv_len = if tree::has_cv_list(size) {
        tree::group_count(size) as usize * 32
    } else {
        0
    };
    let Some((raw, control)) = rest.split_at_checked(cv_len) else {
        return;
    };
    let Ok(mut verifier) = transfer::cv_list_verifier(id, size, raw) else {
        return;
    };
    if !tree::has_cv_list(size) {
        // A single group has no CV list: it is checked whole against the identity, which
        // no prefix of the (four-group) blob matches.
        assert!(verifier.verify_next(&blob[..size as usize]).is_err());
        return;
    }
    // The CV list hashed to the identity, which binds the number of groups and each
    // group's content but not the last group's length: a size announced up to 64 KiB off
    // passes here, and is caught when the last group does not verify.
    assert_eq!(
        tree::group_count(size),
        tree::group_count(blob.len() as u64)
    );

    // What the peer sends: the blob (one byte flipped where the control bytes say),
    // padded with zeros if it announced more.
    let mut sent = blob.clone();
    if let Some(at) = control.first_chunk::<4>() {
        let at = u32::from_le_bytes(*at) as usize % sent.len();
        sent[at] ^= control.get(4).copied().unwrap_or(1) | 1;
    }
    sent.resize(sent.len().max(size as usize), 0);
    let real: Vec<&[u8]> = blob.chunks(GROUP_SIZE as usize).collect();
    for index in 0..tree::group_count(size) {
        let from = (index * GROUP_SIZE) as usize;
        let group = &sent[from..from + tree::group_len(size, index) as usize];
        // A group verifies exactly when it is the blob's own group: nothing else ever
        // reaches the sink.
        let genuine = group == real[index as usize];
        assert_eq!(
            verifier.verify_next(group).is_ok(),
            genuine,
            "group {index}"
        );
        if !genuine {
            return;
        }
    }
    assert!(verifier.is_done());
    assert_eq!(
        size,
        blob.len() as u64,
        "a complete transfer is exactly the blob"
    );
    assert!(verifier.verify_next(&[]).is_err());
});
