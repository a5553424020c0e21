//! Shared fixtures of the fuzz targets and the seed generator: fixed keys, the job
//! protocol's encoder, a tiny valid definition and the registry set-up.
//!
//! The targets and `examples/gen_seeds.rs` must agree on every key: a seed holding a
//! signed ad, receipt or note only reaches the code behind the signature check when the
//! target verifies it with the key that signed it. So both take their keys from here, all
//! derived from fixed seeds (these keys protect nothing).

use std::collections::BTreeMap;

use futures::FutureExt as _;
use libp2p::StreamProtocol;
use libp2p::request_response::{Codec as _, cbor};
use pinfold_net::protocol::JOB_PROTOCOL;
use pinfold_net::{Keypair, PeerId, Request, Response};
use pinfold_registry::RegistryConfig;
use pinfold_registry::api::RosterEntry;
use pinfold_tlog::{Cosigner, NoteSigner, NoteVerifier, SecretKey, VerifierConfig};

/// Origin of the fuzzed log (checkpoints, the verifier target, the registry target).
pub const ORIGIN: &str = "fuzz.pinfold/registry";

/// The node key of the provider that signs the seed ads and receipts.
pub fn provider_keypair() -> Keypair {
    Keypair::ed25519_from_bytes([7u8; 32]).expect("32 bytes are an ed25519 seed")
}

/// The provider's peer id: the gossip source the ad target checks signers against.
pub fn provider_peer() -> PeerId {
    provider_keypair().public().to_peer_id()
}

/// The requestor named in seed receipts.
pub fn requestor_peer() -> PeerId {
    Keypair::ed25519_from_bytes([8u8; 32])
        .expect("32 bytes are an ed25519 seed")
        .public()
        .to_peer_id()
}

/// A task-defs key from a one-byte seed (author 1, reviewers 2 and 3, log 9).
pub fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

/// The log's note signer.
pub fn log_signer() -> NoteSigner {
    NoteSigner::new(ORIGIN, key(9)).expect("a valid key name")
}

/// The log's note verifier, as a client configures it.
pub fn log_verifier() -> NoteVerifier {
    log_signer().verifier()
}

/// What the verifier target trusts: the log key, reviewers 2 and 3, threshold 1.
pub fn verifier_config() -> VerifierConfig {
    VerifierConfig {
        origin: ORIGIN.into(),
        log_key: log_verifier(),
        reviewers: vec![key(2).public_key(), key(3).public_key()],
        threshold: 1,
        max_age_secs: u64::MAX,
        witnesses: Default::default(),
    }
}

/// Origin of the "staging" log whose statements the verifier target replays.
pub const STAGING: &str = "staging.fuzz.pinfold/registry";

/// The witness of the witness target (key seed 10).
pub fn cosigner() -> Cosigner {
    Cosigner::new("witness.fuzz.pinfold/w1", key(10)).expect("a valid key name")
}

/// The honest log the witness target's witness has seen: `n` leaves `leaf 0`, `leaf 1`, ...
pub fn honest_tree(n: u64) -> pinfold_tlog::MemoryTree {
    let mut tree = pinfold_tlog::MemoryTree::new();
    for i in 0..n {
        tree.push(format!("leaf {i}").as_bytes());
    }
    tree
}

/// The size of the honest checkpoint the witness target's witness starts from.
pub const WITNESSED_SIZE: u64 = 3;

/// A witness that follows the fuzzed log and has cosigned its honest tree of
/// [`WITNESSED_SIZE`] leaves.
pub fn witness() -> pinfold_tlog::Witness {
    let mut state = pinfold_tlog::witness::WitnessState::new();
    state.insert(
        ORIGIN.to_string(),
        pinfold_tlog::witness::WitnessedLog {
            size: WITNESSED_SIZE,
            root: honest_tree(WITNESSED_SIZE).root(),
            cosigned_at: 1_700_000_000,
        },
    );
    pinfold_tlog::Witness::new(cosigner(), [log_verifier()], state)
}

/// The registry target's configuration over `dir`: reviewers 2 and 3, threshold 1.
pub fn registry_config(dir: &std::path::Path) -> RegistryConfig {
    RegistryConfig {
        data_dir: dir.to_path_buf(),
        origin: Some(ORIGIN.into()),
        reviewers: [2u8, 3]
            .iter()
            .map(|n| RosterEntry {
                key: key(*n).public_key(),
                name: Some(format!("reviewer{n}")),
            })
            .collect(),
        threshold: Some(1),
        ..RegistryConfig::default()
    }
}

fn job_codec() -> cbor::codec::Codec<Request, Response> {
    cbor::codec::Codec::default()
}

/// The CBOR bytes the job codec writes for `req` (what a peer sends).
pub fn encode_request(req: &Request) -> Vec<u8> {
    let mut out = futures::io::Cursor::new(Vec::new());
    job_codec()
        .write_request(&StreamProtocol::new(JOB_PROTOCOL), &mut out, req.clone())
        .now_or_never()
        .expect("writing to memory is never pending")
        .expect("every request encodes");
    out.into_inner()
}

/// The CBOR bytes the job codec writes for `resp`.
pub fn encode_response(resp: &Response) -> Vec<u8> {
    let mut out = futures::io::Cursor::new(Vec::new());
    job_codec()
        .write_response(&StreamProtocol::new(JOB_PROTOCOL), &mut out, resp.clone())
        .now_or_never()
        .expect("writing to memory is never pending")
        .expect("every response encodes");
    out.into_inner()
}

/// `(module (func (export "_start")))`: the smallest WASI command, written out so the
/// fuzz crate needs no wat parser.
pub const TINY_WASM: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
    0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
    0x07, 0x0a, 0x01, 0x06, b'_', b's', b't', b'a', b'r', b't', 0x00, 0x00, // export _start
    0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code section: an empty body
];

/// The manifest of the tiny definition.
pub const TINY_MANIFEST: &str = r#"format = 1
name = "tiny"
version = "0.1.0"
description = "The smallest valid wasm definition, for fuzz seeds"
license = "MIT"

[runtime]
kind = "wasm"
module = "tiny.wasm"
args = ["{greeting}"]

[params.greeting]
type = "string"
default = "hello"

[limits]
memory = "16MiB"
timeout = "1s"
output = "1MiB"

[io]
input = "/input"
output = "/output"
"#;

/// The tiny definition's files, as [`task_defs::Definition::from_parts`] takes them.
pub fn tiny_files() -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([("tiny.wasm".to_string(), TINY_WASM.to_vec())])
}

/// The blob the transfer target fetches: three full 64 KiB groups and a short fourth one,
/// so it travels with a CV list, in a pattern that differs between groups.
pub fn transfer_blob() -> Vec<u8> {
    (0..3 * 65_536 + 1_000u32)
        .map(|i| (i.wrapping_mul(31) % 251) as u8)
        .collect()
}
