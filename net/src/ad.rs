//! Provider capability ads: signed by the provider's peer key, verified by every receiver,
//! kept in a bounded view that forgets providers that stop advertising.
//!
//! An ad is signed over `pinfold-provider-ad/1\n` followed by the canonical JSON of
//! [`ProviderAd`] ([`crate::canonical`]). A receiver accepts it only if the embedded key
//! verifies the signature and hashes to the gossip message's source (which gossipsub
//! itself authenticates), the sequence number is newer than the last one seen from that
//! provider, and the timestamp is neither in the future beyond the clock-skew allowance nor
//! older than the ad lifetime. Forged ads are reported invalid to gossipsub, so they are not
//! forwarded and count against the peer that relayed them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::identity::Keypair;
use serde::{Deserialize, Serialize};

use crate::canonical::{self, SignatureError};
use crate::id::is_identity;
use crate::protocol::Isolation;

/// Domain string of ad signatures.
pub const AD_DOMAIN: &str = "pinfold-provider-ad/1";
/// Largest encoded ad accepted.
pub const MAX_AD_BYTES: usize = 32 * 1024;
/// Most definition identities listed in one ad.
pub const MAX_AD_BUNDLES: usize = 256;
/// Most executors listed in one ad.
pub const MAX_AD_EXECUTORS: usize = 8;
/// Most addresses listed in one ad.
pub const MAX_AD_ADDRS: usize = crate::network::MAX_ADVERTISED_ADDRS;
/// Longest address listed in an ad, in bytes of its text form.
pub const MAX_AD_ADDR_BYTES: usize = 256;

/// One executor a provider offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorAd {
    /// Runtime kind (`wasm`, `docker`), at most 16 lower-case ASCII characters.
    pub runtime: String,
    /// Isolation this executor achieves on this host.
    pub isolation: Isolation,
}

/// Resource caps of a provider (per task unless said otherwise).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceCaps {
    /// Memory per task, bytes.
    pub memory_bytes: u64,
    /// Tasks run at once.
    pub concurrent_tasks: u32,
    /// Total input bytes per task.
    pub input_bytes: u64,
    /// Total output bytes per task.
    pub output_bytes: u64,
}

/// What a provider advertises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderAd {
    /// Executors available.
    pub executors: Vec<ExecutorAd>,
    /// Resource caps.
    pub caps: ResourceCaps,
    /// Free task slots now.
    pub free_slots: u32,
    /// Definitions whose bundles the provider holds (at most [`MAX_AD_BUNDLES`]).
    pub bundles: Vec<String>,
    /// When signed, Unix seconds.
    pub timestamp: u64,
    /// Strictly increasing per provider; receivers drop anything not newer.
    pub seq: u64,
    /// Where the provider can be dialled: confirmed public addresses and relayed
    /// (`…/p2p-circuit`) ones, without its own `/p2p` suffix (at most
    /// [`MAX_AD_ADDRS`]). Set by [`crate::Client::advertise`]; absent from the signed
    /// document when empty, so ads without addresses read as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addrs: Vec<libp2p::Multiaddr>,
}

impl ProviderAd {
    /// Checks every cap and shape.
    pub fn validate(&self) -> Result<(), String> {
        if self.executors.len() > MAX_AD_EXECUTORS {
            return Err(format!("more than {MAX_AD_EXECUTORS} executors"));
        }
        for e in &self.executors {
            if e.runtime.is_empty()
                || e.runtime.len() > 16
                || !e
                    .runtime
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            {
                return Err("runtime must be 1 to 16 lower-case ascii letters or digits".into());
            }
        }
        if self.bundles.len() > MAX_AD_BUNDLES {
            return Err(format!("more than {MAX_AD_BUNDLES} bundles"));
        }
        if !self.bundles.iter().all(|b| is_identity(b)) {
            return Err("a bundle is not a definition identity".into());
        }
        if self.addrs.len() > MAX_AD_ADDRS {
            return Err(format!("more than {MAX_AD_ADDRS} addresses"));
        }
        if self
            .addrs
            .iter()
            .any(|a| a.to_string().len() > MAX_AD_ADDR_BYTES)
        {
            return Err(format!("an address is over {MAX_AD_ADDR_BYTES} bytes"));
        }
        Ok(())
    }
}

/// An ad with its signature, as published on the providers topic (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedAd {
    /// The ad.
    pub ad: ProviderAd,
    /// Signer's public key, protobuf encoding, lower-case hex.
    pub public_key: String,
    /// Ed25519 signature, lower-case hex.
    pub signature: String,
}

/// Why an ad was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdError {
    /// Not JSON of a signed ad, or over [`MAX_AD_BYTES`].
    #[error("malformed ad: {0}")]
    Malformed(String),
    /// Fails [`ProviderAd::validate`].
    #[error("invalid ad: {0}")]
    Invalid(String),
    /// Signature problem, including a signer that is not the gossip source.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The gossip message had no authenticated source.
    #[error("ad has no authenticated source")]
    NoSource,
    /// Timestamp too far in the future or too old.
    #[error("ad timestamp {0} is outside the accepted window")]
    Stale(u64),
}

impl SignedAd {
    /// Signs an ad with the provider's key.
    pub fn sign(ad: ProviderAd, keypair: &Keypair) -> Result<SignedAd, SignatureError> {
        let (pk, sig) = canonical::sign(keypair, AD_DOMAIN, &ad)?;
        Ok(SignedAd {
            ad,
            public_key: hex::encode(pk),
            signature: hex::encode(sig),
        })
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes, validates and verifies an ad that gossip says `source` published.
    pub fn decode_and_verify(bytes: &[u8], source: &PeerId) -> Result<SignedAd, AdError> {
        if bytes.len() > MAX_AD_BYTES {
            return Err(AdError::Malformed(format!(
                "{} bytes exceeds the limit",
                bytes.len()
            )));
        }
        let ad: SignedAd =
            serde_json::from_slice(bytes).map_err(|e| AdError::Malformed(e.to_string()))?;
        ad.ad.validate().map_err(AdError::Invalid)?;
        ad.verify(source)?;
        Ok(ad)
    }

    /// Verifies the signature and that the signer is `source`.
    pub fn verify(&self, source: &PeerId) -> Result<(), SignatureError> {
        let pk = hex::decode(&self.public_key).map_err(|_| SignatureError::BadPublicKey)?;
        let sig = hex::decode(&self.signature).map_err(|_| SignatureError::BadSignature)?;
        canonical::verify(AD_DOMAIN, &self.ad, &pk, &sig, Some(source))?;
        Ok(())
    }
}

/// A live provider as a receiver knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEntry {
    /// The provider.
    pub peer: PeerId,
    /// Its latest verified ad.
    pub ad: ProviderAd,
    /// When this node accepted the ad.
    pub received: Instant,
}

/// What [`ProviderView::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// A new or newer ad.
    Updated,
    /// Not newer than the ad held: a replay or a reordering, dropped.
    NotNewer,
}

/// Bounded set of live providers: at most `capacity` entries, each forgotten `ttl` after
/// its last accepted ad.
#[derive(Debug)]
pub struct ProviderView {
    entries: HashMap<PeerId, ProviderEntry>,
    // Highest sequence seen per provider, kept a while after expiry so an old ad replayed
    // later cannot resurrect a stale view; bounded like `entries`.
    last_seq: HashMap<PeerId, (u64, Instant)>,
    capacity: usize,
    ttl: Duration,
}

impl ProviderView {
    /// An empty view.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        ProviderView {
            entries: HashMap::new(),
            last_seq: HashMap::new(),
            capacity: capacity.max(1),
            ttl,
        }
    }

    /// Checks an ad's timestamp against `now_unix` (seconds) and the allowed skew.
    pub fn check_time(
        &self,
        ad: &ProviderAd,
        now_unix: u64,
        skew: Duration,
    ) -> Result<(), AdError> {
        let too_new = ad.timestamp > now_unix.saturating_add(skew.as_secs());
        let too_old = ad.timestamp.saturating_add(self.ttl.as_secs()) < now_unix;
        if too_new || too_old {
            return Err(AdError::Stale(ad.timestamp));
        }
        Ok(())
    }

    /// Inserts a verified ad from `peer`.
    pub fn insert(&mut self, peer: PeerId, ad: ProviderAd, now: Instant) -> Insert {
        self.expire(now);
        if let Some((seq, _)) = self.last_seq.get(&peer)
            && ad.seq <= *seq
        {
            return Insert::NotNewer;
        }
        if !self.entries.contains_key(&peer) && self.entries.len() >= self.capacity {
            // Full: the provider heard from least recently makes room.
            if let Some(oldest) = self
                .entries
                .values()
                .min_by_key(|e| e.received)
                .map(|e| e.peer)
            {
                self.entries.remove(&oldest);
            }
        }
        if !self.last_seq.contains_key(&peer)
            && self.last_seq.len() >= 2 * self.capacity
            && let Some(oldest) = self
                .last_seq
                .iter()
                .min_by_key(|(_, v)| v.1)
                .map(|(k, _)| *k)
        {
            self.last_seq.remove(&oldest);
        }
        self.last_seq.insert(peer, (ad.seq, now));
        self.entries.insert(
            peer,
            ProviderEntry {
                peer,
                ad,
                received: now,
            },
        );
        Insert::Updated
    }

    /// Drops entries older than the ttl.
    pub fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.received) < ttl);
        self.last_seq
            .retain(|_, (_, t)| now.saturating_duration_since(*t) < ttl * 4);
    }

    /// Forgets a provider (for example after banning it).
    pub fn remove(&mut self, peer: &PeerId) {
        self.entries.remove(peer);
    }

    /// Live providers, most recently heard first.
    pub fn live(&mut self, now: Instant) -> Vec<ProviderEntry> {
        self.expire(now);
        let mut v: Vec<ProviderEntry> = self.entries.values().cloned().collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.received));
        v
    }

    /// Number of live entries (without expiring).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ad(seq: u64) -> ProviderAd {
        ProviderAd {
            executors: vec![ExecutorAd {
                runtime: "wasm".into(),
                isolation: Isolation::SandboxedRuntime,
            }],
            caps: ResourceCaps::default(),
            free_slots: 1,
            addrs: Vec::new(),
            bundles: vec![crate::BlobId::of(b"x").to_string()],
            timestamp: 1000,
            seq,
        }
    }

    #[test]
    fn verify_checks_signer_against_source() {
        let kp = Keypair::generate_ed25519();
        let me = kp.public().to_peer_id();
        let signed = SignedAd::sign(ad(1), &kp).unwrap();
        let bytes = signed.to_bytes();
        assert_eq!(SignedAd::decode_and_verify(&bytes, &me).unwrap(), signed);
        let err = SignedAd::decode_and_verify(&bytes, &PeerId::random()).unwrap_err();
        assert!(matches!(
            err,
            AdError::Signature(SignatureError::WrongSigner { .. })
        ));
        let mut tampered = signed.clone();
        tampered.ad.free_slots = 99;
        assert!(matches!(
            SignedAd::decode_and_verify(&tampered.to_bytes(), &me),
            Err(AdError::Signature(SignatureError::BadSignature))
        ));
    }

    #[test]
    fn view_is_bounded_ordered_and_expires() {
        let t0 = Instant::now();
        let mut v = ProviderView::new(2, Duration::from_secs(10));
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        assert_eq!(v.insert(a, ad(5), t0), Insert::Updated);
        assert_eq!(v.insert(a, ad(5), t0), Insert::NotNewer);
        assert_eq!(v.insert(a, ad(4), t0), Insert::NotNewer);
        v.insert(b, ad(1), t0 + Duration::from_secs(1));
        v.insert(c, ad(1), t0 + Duration::from_secs(2));
        assert_eq!(v.len(), 2, "capacity holds");
        let live = v.live(t0 + Duration::from_secs(3));
        assert_eq!(live.iter().map(|e| e.peer).collect::<Vec<_>>(), vec![c, b]);
        assert!(v.live(t0 + Duration::from_secs(30)).is_empty());
        // The replay protection outlives the entry.
        assert_eq!(
            v.insert(a, ad(5), t0 + Duration::from_secs(30)),
            Insert::NotNewer
        );
    }
}
