//! Deterministic clocks and randomness for `capabilities.deterministic` runs.
//!
//! Two providers running the same definition on the same inputs must produce the same
//! bits, so nothing the guest can observe may depend on the host: clocks start at fixed
//! values and advance by a fixed step per reading (a clock that never moves would make
//! guests that measure elapsed time divide by zero or spin), and randomness is a BLAKE3
//! XOF stream seeded from the definition id and the input digest.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// Wall-clock time every deterministic run starts at: 2000-01-01T00:00:00Z.
pub const WALL_START: Duration = Duration::from_secs(946_684_800);
/// How far each clock reading advances, in nanoseconds.
pub const STEP_NS: u64 = 1_000;

/// A wall clock that starts at [`WALL_START`] and advances [`STEP_NS`] per reading.
#[derive(Debug, Default)]
pub struct FixedWallClock(AtomicU64);

impl HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(STEP_NS)
    }
    fn now(&self) -> Duration {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        WALL_START + Duration::from_nanos(n.saturating_mul(STEP_NS))
    }
}

/// A monotonic clock that starts at 0 and advances [`STEP_NS`] per reading.
#[derive(Debug, Default)]
pub struct FixedMonotonicClock(AtomicU64);

impl HostMonotonicClock for FixedMonotonicClock {
    fn resolution(&self) -> u64 {
        STEP_NS
    }
    fn now(&self) -> u64 {
        self.0
            .fetch_add(1, Ordering::Relaxed)
            .saturating_mul(STEP_NS)
    }
}

/// An endless random stream: the BLAKE3 XOF of a seed.
#[derive(Debug)]
pub struct SeededRng(blake3::OutputReader);

impl SeededRng {
    /// The stream for `seed` under a domain-separating `context`.
    pub fn new(context: &str, seed: &[u8; 32]) -> Self {
        let mut h = blake3::Hasher::new_derive_key(context);
        h.update(seed);
        SeededRng(h.finalize_xof())
    }
}

impl rand_core::TryRng for SeededRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.0.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill(dst);
        Ok(())
    }
}

/// The seed of a run: BLAKE3(definition id ‖ input digest).
pub fn seed(definition_id: &str, input_digest: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(definition_id.as_bytes());
    h.update(b"\0");
    h.update(input_digest.as_bytes());
    *h.finalize().as_bytes()
}
