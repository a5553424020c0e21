//! Who may publish, and how much: the author policy and the limits of `registry.toml`.
//!
//! A publication is permanent (the log never forgets), so an open registry must bound what
//! a stranger can make it store. Two policies:
//!
//! - `open`: any key may publish, within a per-key and a per-IP rate (token buckets: a
//!   burst, refilled at so many per hour) and a per-key storage quota (the bundle bytes of
//!   every publication the key ever logged). Fresh keys cost nothing, so the per-IP bucket is
//!   what bounds a flood; IPv6 clients are grouped by /64, the block one customer gets.
//! - `allowlist`: only listed author keys may publish; the same limits still apply, so a
//!   leaked author key cannot fill the disk either.
//!
//! Buckets live in memory (a restart refills them) and their number is capped, so many
//! distinct keys or addresses cannot grow the table without bound.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use pinfold_tlog::PublicKey;

/// Default publications per key per hour (refill rate of the per-key bucket).
pub const DEFAULT_KEY_PER_HOUR: u32 = 20;
/// Default burst of the per-key bucket.
pub const DEFAULT_KEY_BURST: u32 = 10;
/// Default publications per IP address (IPv6: per /64) per hour.
pub const DEFAULT_IP_PER_HOUR: u32 = 60;
/// Default burst of the per-IP bucket.
pub const DEFAULT_IP_BURST: u32 = 20;
/// Default storage quota of one author key, in bundle bytes.
pub const DEFAULT_KEY_QUOTA_BYTES: u64 = 256 * 1024 * 1024;
/// Most buckets one limiter keeps before it forgets the idle ones.
pub const MAX_BUCKETS: usize = 100_000;

/// Who may publish.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AuthorPolicy {
    /// Any key, within the limits.
    #[default]
    Open,
    /// Only these keys (and still within the limits).
    Allowlist(BTreeSet<PublicKey>),
}

impl AuthorPolicy {
    /// The policy's name as `registry.toml` spells it.
    pub fn name(&self) -> &'static str {
        match self {
            AuthorPolicy::Open => "open",
            AuthorPolicy::Allowlist(_) => "allowlist",
        }
    }
}

/// The `[authors]` table of `registry.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorsFile {
    /// `open` (default) or `allowlist`.
    pub policy: Option<String>,
    /// The author keys an `allowlist` admits.
    #[serde(default)]
    pub allow: Vec<PublicKey>,
    /// Publications per key per hour.
    pub key_per_hour: Option<u32>,
    /// Burst of the per-key bucket.
    pub key_burst: Option<u32>,
    /// Publications per IP address per hour.
    pub ip_per_hour: Option<u32>,
    /// Burst of the per-IP bucket.
    pub ip_burst: Option<u32>,
    /// Storage quota per author key, in bundle bytes.
    pub key_quota_bytes: Option<u64>,
}

/// The publishing rules in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishPolicy {
    /// Who may publish.
    pub authors: AuthorPolicy,
    /// The per-key rate.
    pub key_rate: Rate,
    /// The per-IP rate.
    pub ip_rate: Rate,
    /// The per-key storage quota in bytes.
    pub key_quota_bytes: u64,
}

impl Default for PublishPolicy {
    fn default() -> Self {
        PublishPolicy {
            authors: AuthorPolicy::Open,
            key_rate: Rate {
                per_hour: DEFAULT_KEY_PER_HOUR,
                burst: DEFAULT_KEY_BURST,
            },
            ip_rate: Rate {
                per_hour: DEFAULT_IP_PER_HOUR,
                burst: DEFAULT_IP_BURST,
            },
            key_quota_bytes: DEFAULT_KEY_QUOTA_BYTES,
        }
    }
}

impl PublishPolicy {
    /// The policy an `[authors]` table describes (defaults for what it omits).
    pub fn from_file(f: &AuthorsFile) -> Result<PublishPolicy, String> {
        let d = PublishPolicy::default();
        let authors = match f.policy.as_deref().unwrap_or("open") {
            "open" if f.allow.is_empty() => AuthorPolicy::Open,
            "open" => {
                return Err("[authors] allow lists keys but policy is \"open\"; \
                            set policy = \"allowlist\" to restrict publishing to them"
                    .into());
            }
            "allowlist" if f.allow.is_empty() => {
                return Err(
                    "[authors] policy = \"allowlist\" needs at least one key in allow".into(),
                );
            }
            "allowlist" => AuthorPolicy::Allowlist(f.allow.iter().copied().collect()),
            other => {
                return Err(format!(
                    "[authors] policy must be \"open\" or \"allowlist\", not {other:?}"
                ));
            }
        };
        let rate = |per_hour: Option<u32>, burst: Option<u32>, def: Rate, what: &str| {
            let r = Rate {
                per_hour: per_hour.unwrap_or(def.per_hour),
                burst: burst.unwrap_or(def.burst),
            };
            if r.per_hour == 0 || r.burst == 0 {
                return Err(format!(
                    "[authors] {what}_per_hour and {what}_burst must be at least 1"
                ));
            }
            Ok(r)
        };
        Ok(PublishPolicy {
            authors,
            key_rate: rate(f.key_per_hour, f.key_burst, d.key_rate, "key")?,
            ip_rate: rate(f.ip_per_hour, f.ip_burst, d.ip_rate, "ip")?,
            key_quota_bytes: f.key_quota_bytes.unwrap_or(d.key_quota_bytes),
        })
    }
}

/// A token-bucket rate: `burst` at once, refilled at `per_hour`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Refill per hour.
    pub per_hour: u32,
    /// Bucket size.
    pub burst: u32,
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} per hour, bursts of {}", self.per_hour, self.burst)
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per key of type `K`, capped at [`MAX_BUCKETS`].
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: Rate,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// A limiter at `rate`.
    pub fn new(rate: Rate) -> Self {
        RateLimiter {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The rate.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    fn per_sec(&self) -> f64 {
        f64::from(self.rate.per_hour) / 3600.0
    }

    fn refilled(&self, b: Bucket, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + dt * self.per_sec()).min(f64::from(self.rate.burst))
    }

    /// Takes one token for `k` at `now`, or says how long until one is free.
    pub fn take(&self, k: &K, now: Instant) -> Result<(), Duration> {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_BUCKETS && !map.contains_key(k) {
            // A full bucket is the same as no bucket, so forgetting those loses nothing;
            // if every bucket is in use, forget the longest-untouched half.
            let burst = f64::from(self.rate.burst);
            map.retain(|_, b| self.refilled(*b, now) < burst);
            if map.len() >= MAX_BUCKETS {
                let mut ats: Vec<Instant> = map.values().map(|b| b.at).collect();
                ats.sort_unstable();
                let cut = ats[ats.len() / 2];
                map.retain(|_, b| b.at > cut);
            }
        }
        let b = map.entry(k.clone()).or_insert(Bucket {
            tokens: f64::from(self.rate.burst),
            at: now,
        });
        let tokens = self.refilled(*b, now);
        if tokens >= 1.0 {
            *b = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            Ok(())
        } else {
            *b = Bucket { tokens, at: now };
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_sec()))
        }
    }
}

/// The address a per-IP limit counts under: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its
/// /64, since one customer gets a whole /64 and could rotate through it for free.
pub fn ip_bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let l = RateLimiter::new(Rate {
            per_hour: 3600,
            burst: 3,
        });
        let t = Instant::now();
        for _ in 0..3 {
            l.take(&1u8, t).unwrap();
        }
        let wait = l.take(&1u8, t).unwrap_err();
        assert!(
            wait <= Duration::from_secs(1) && wait > Duration::ZERO,
            "{wait:?}"
        );
        l.take(&2u8, t).unwrap();
        l.take(&1u8, t + Duration::from_millis(1100)).unwrap();
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_bucket(a), ip_bucket(b));
        assert_ne!(ip_bucket(a), ip_bucket(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(ip_bucket(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_table_stays_bounded_under_many_keys() {
        let l = RateLimiter::new(Rate {
            per_hour: 1,
            burst: 1,
        });
        let t = Instant::now();
        for k in 0..(MAX_BUCKETS as u64 + 10) {
            l.take(&k, t).unwrap();
        }
        assert!(l.buckets.lock().unwrap().len() <= MAX_BUCKETS);
    }
}
