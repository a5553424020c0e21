//! The verifying client: follows the log, refuses forks and rollbacks, and answers
//! "may I run this definition?" from a locally verified index.
//!
//! The client trusts nothing the server says about trust: the log key, the reviewer roster
//! and the threshold come from its own [`VerifierConfig`]. Each update must carry the
//! *entries* since the last verified size; the client hashes them itself, so the server
//! cannot hide, reorder or alter an entry without the signed root giving it away.
//!
//! # Status rule
//!
//! For one identity, considering only reviews whose key is in the roster and whose
//! signature verifies, in this order of precedence:
//!
//! 1. **revoked** — any trusted reviewer revoked it (even if never published: fail closed);
//! 2. **unknown** — it was never published in the log;
//! 3. **approved** — at least `threshold` *distinct* trusted keys whose latest vote
//!    (approve or reject) is approve;
//! 4. **rejected** — some trusted key's latest vote is reject;
//! 5. **pending** — published, not enough approvals and no rejection.
//!
//! A reviewer changes their mind by signing a newer vote (their later vote replaces the
//! earlier one); a revocation is final. Publication signatures are not a trust input
//! (anyone may publish; only reviewers vouch), so authors' signatures are not checked
//! here, which also keeps syncing large logs fast; the server checks them on submission.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::entry::{Entry, ReviewAction};
use super::keys::PublicKey;
use super::merkle::{Frontier, Hash, leaf_hash, verify_consistency};
use super::note::{Checkpoint, CheckpointError, NoteVerifier};
use crate::identity::DefinitionId;

/// How far in the future a checkpoint's time may be, to allow for clock skew.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// What a client trusts, from its own configuration (never from the server).
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// The log's origin line.
    pub origin: String,
    /// The log's checkpoint key (by convention named like the origin).
    pub log_key: NoteVerifier,
    /// The reviewer roster.
    pub reviewers: Vec<PublicKey>,
    /// How many distinct roster keys must approve an identity.
    pub threshold: usize,
    /// The oldest checkpoint, in seconds, that [`Verifier::status`] vouches from.
    pub max_age_secs: u64,
}

/// The verdict on one definition identity (see the module docs for the rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Never published in the log.
    Unknown,
    /// Published, awaiting approval.
    Pending,
    /// Approved by at least the threshold of distinct trusted reviewers.
    Approved,
    /// Rejected by a trusted reviewer and not approved.
    Rejected,
    /// Revoked by a trusted reviewer.
    Revoked,
}

/// The publication of a definition, as first logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedInfo {
    /// The leaf index of the publication entry.
    pub index: u64,
    /// The definition's name.
    pub name: String,
    /// The definition's version.
    pub version: String,
    /// The author's key (not a trust input).
    pub author: PublicKey,
}

/// Everything the verified log says about one identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionRecord {
    /// Its first publication, if any.
    pub published: Option<PublishedInfo>,
    /// Each trusted reviewer's latest vote (approve or reject).
    pub votes: BTreeMap<PublicKey, ReviewAction>,
    /// The trusted reviewers who revoked it.
    pub revoked_by: BTreeSet<PublicKey>,
}

/// The persistent part of a verifier. Store it after every successful update and hand it
/// back to [`Verifier::restore`]: the stored checkpoint is what rollbacks across restarts
/// are detected against.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifierState {
    /// The latest verified checkpoint.
    pub checkpoint: Option<Checkpoint>,
    /// The right edge of the verified tree, to extend it with new entries.
    pub frontier: Frontier,
    /// The verified index.
    pub definitions: HashMap<DefinitionId, DefinitionRecord>,
    /// The roster the index was built for (reviews by other keys were not recorded).
    pub roster: BTreeSet<PublicKey>,
    /// A checkpoint verified before a resync from scratch: the new view must extend it.
    pub anchor: Option<Checkpoint>,
    /// Entries that counted for nothing: unparseable, bad or untrusted signatures.
    pub ignored_entries: u64,
}

/// Why an update was refused. The verifier's state is unchanged after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// The signed note or its body was refused (bad signature, wrong key, malformed).
    #[error("checkpoint refused: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The checkpoint is of another log.
    #[error("checkpoint is for origin {found:?}, not {expected:?}")]
    WrongOrigin {
        /// The configured origin.
        expected: String,
        /// The checkpoint's origin.
        found: String,
    },
    /// The checkpoint is smaller than the verified one: the server rolled back.
    #[error("rollback: offered tree size {offered} is below verified size {verified}")]
    Rollback {
        /// The verified size.
        verified: u64,
        /// The offered size.
        offered: u64,
    },
    /// The log signed a tree that does not extend the verified one.
    #[error(
        "fork: the signed tree of size {offered} does not extend the verified tree of size {verified}"
    )]
    Fork {
        /// The verified size.
        verified: u64,
        /// The offered size.
        offered: u64,
    },
    /// The signed tree does extend the verified one, but the proof sent is wrong.
    #[error("consistency proof does not verify")]
    BadConsistencyProof,
    /// The number of entries sent is not the growth of the tree.
    #[error("expected {expected} new entries, got {got}")]
    EntryCount {
        /// The growth of the tree.
        expected: u64,
        /// Entries received.
        got: u64,
    },
    /// The entries sent do not make the signed root: the server hid or altered one.
    #[error("entries do not hash to the signed root: an entry was hidden or altered")]
    EntriesMismatch,
    /// The checkpoint's time is ahead of the local clock by more than the allowed skew.
    #[error("checkpoint time {time} is ahead of local time {now}")]
    FromTheFuture {
        /// The checkpoint's time.
        time: u64,
        /// The local time.
        now: u64,
    },
    /// A bigger tree was signed earlier than the verified one.
    #[error("checkpoint time {offered} is before verified checkpoint time {verified}")]
    TimeWentBackwards {
        /// The verified checkpoint's time.
        verified: u64,
        /// The offered checkpoint's time.
        offered: u64,
    },
}

/// Why a verifier could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The threshold is 0 or above the roster size.
    #[error("threshold {threshold} must be between 1 and the roster size {roster}")]
    Threshold {
        /// The configured threshold.
        threshold: usize,
        /// The number of distinct roster keys.
        roster: usize,
    },
    /// The stored state was built for another log.
    #[error("stored state is for origin {0:?}")]
    WrongOrigin(String),
    /// The stored state is inconsistent (corrupt or edited).
    #[error("stored state is inconsistent")]
    CorruptState,
    /// The roster gained keys whose past reviews the stored index did not record; start
    /// over with [`Verifier::resync`].
    #[error("the reviewer roster gained keys; the index must be rebuilt from the log")]
    RosterGrew,
}

/// Why [`Verifier::status`] refuses to vouch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    /// No checkpoint has been verified yet.
    #[error("stale registry view: no verified checkpoint")]
    NoCheckpoint,
    /// The latest verified checkpoint is too old.
    #[error("stale registry view: checkpoint is {age_secs}s old, limit {max_age_secs}s")]
    Stale {
        /// The checkpoint's age.
        age_secs: u64,
        /// The configured limit.
        max_age_secs: u64,
    },
}

/// What an accepted update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateReport {
    /// The verified size before.
    pub old_size: u64,
    /// The verified size now.
    pub new_size: u64,
    /// New entries that counted for nothing.
    pub ignored_entries: u64,
}

/// A verifying client of the registry log.
#[derive(Debug, Clone)]
pub struct Verifier {
    config: VerifierConfig,
    roster: HashSet<PublicKey>,
    state: VerifierState,
}

impl Verifier {
    /// A verifier that has seen nothing yet.
    pub fn new(config: VerifierConfig) -> Result<Verifier, ConfigError> {
        let roster: HashSet<PublicKey> = config.reviewers.iter().copied().collect();
        if config.threshold == 0 || config.threshold > roster.len() {
            return Err(ConfigError::Threshold {
                threshold: config.threshold,
                roster: roster.len(),
            });
        }
        let state = VerifierState {
            roster: roster.iter().copied().collect(),
            ..VerifierState::default()
        };
        Ok(Verifier {
            config,
            roster,
            state,
        })
    }

    /// A verifier continuing from stored state. The configuration may shrink the roster
    /// or change the threshold and age freely; a roster that gained keys needs
    /// [`Verifier::resync`], because the index never recorded those keys' reviews.
    pub fn restore(config: VerifierConfig, state: VerifierState) -> Result<Verifier, ConfigError> {
        let mut v = Verifier::new(config)?;
        state
            .frontier
            .validate()
            .map_err(|_| ConfigError::CorruptState)?;
        if let Some(cp) = state.checkpoint.as_ref().or(state.anchor.as_ref())
            && cp.origin != v.config.origin
        {
            return Err(ConfigError::WrongOrigin(cp.origin.clone()));
        }
        match &state.checkpoint {
            Some(cp) if cp.size != state.frontier.size() || cp.root != state.frontier.root() => {
                return Err(ConfigError::CorruptState);
            }
            None if state.frontier.size() != 0 => return Err(ConfigError::CorruptState),
            _ => {}
        }
        if !v.roster.iter().all(|k| state.roster.contains(k)) {
            return Err(ConfigError::RosterGrew);
        }
        v.state = state;
        Ok(v)
    }

    /// A fresh verifier that rebuilds its index from the start of the log but still
    /// refuses any view that does not extend the checkpoint in `old` (so a rebuild cannot
    /// be used to roll the client back).
    pub fn resync(config: VerifierConfig, old: &VerifierState) -> Result<Verifier, ConfigError> {
        let mut v = Verifier::new(config)?;
        v.state.anchor = old.checkpoint.clone().or_else(|| old.anchor.clone());
        Ok(v)
    }

    /// The state to persist.
    pub fn state(&self) -> &VerifierState {
        &self.state
    }

    /// The configuration.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// The latest verified checkpoint.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.state.checkpoint.as_ref()
    }

    /// The verified size (0 before the first update).
    pub fn size(&self) -> u64 {
        self.state.frontier.size()
    }

    /// Moves to a newer checkpoint.
    ///
    /// `checkpoint` is the signed note; `entries` are the leaves from the verified size
    /// up to the checkpoint's size, in order; `consistency_proof` proves the checkpoint
    /// extends the verified one; `now` is local Unix time. On any error the verifier is
    /// unchanged.
    pub fn update<L: AsRef<[u8]> + Sync>(
        &mut self,
        checkpoint: &[u8],
        entries: &[L],
        consistency_proof: &[Hash],
        now: u64,
    ) -> Result<UpdateReport, SyncError> {
        let cp = Checkpoint::open(checkpoint, &self.config.log_key)?;
        if cp.origin != self.config.origin {
            return Err(SyncError::WrongOrigin {
                expected: self.config.origin.clone(),
                found: cp.origin,
            });
        }
        if cp.time > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
            return Err(SyncError::FromTheFuture { time: cp.time, now });
        }
        let old_size = self.size();
        let old_root = self.state.frontier.root();
        if let Some(anchor) = &self.state.anchor
            && cp.size < anchor.size
        {
            return Err(SyncError::Rollback {
                verified: anchor.size,
                offered: cp.size,
            });
        }
        if cp.size < old_size {
            return Err(SyncError::Rollback {
                verified: old_size,
                offered: cp.size,
            });
        }
        let report = |ignored| UpdateReport {
            old_size,
            new_size: cp.size,
            ignored_entries: ignored,
        };
        if let Some(prev) = &self.state.checkpoint {
            if cp.size == old_size {
                if cp.root != old_root {
                    return Err(SyncError::Fork {
                        verified: old_size,
                        offered: cp.size,
                    });
                }
                if !entries.is_empty() {
                    return Err(SyncError::EntryCount {
                        expected: 0,
                        got: entries.len() as u64,
                    });
                }
                // Same tree, maybe signed again later: keep the freshest time.
                if cp.time > prev.time {
                    self.state.checkpoint = Some(cp.clone());
                }
                return Ok(report(0));
            }
            if cp.time < prev.time {
                return Err(SyncError::TimeWentBackwards {
                    verified: prev.time,
                    offered: cp.time,
                });
            }
        }
        let growth = cp.size - old_size;
        if entries.len() as u64 != growth {
            return Err(SyncError::EntryCount {
                expected: growth,
                got: entries.len() as u64,
            });
        }
        let proof_ok =
            verify_consistency(old_size, cp.size, &old_root, &cp.root, consistency_proof).is_ok();

        // Extend a copy of the frontier; check the anchor root when passing its size.
        let mut frontier = self.state.frontier.clone();
        let mut anchor_ok = true;
        let anchor = self.state.anchor.clone();
        let check_anchor = |f: &Frontier, ok: &mut bool| {
            if let Some(a) = &anchor
                && f.size() == a.size
                && f.root() != a.root
            {
                *ok = false;
            }
        };
        check_anchor(&frontier, &mut anchor_ok);
        for leaf in entries {
            frontier.push_hash(leaf_hash(leaf.as_ref()));
            check_anchor(&frontier, &mut anchor_ok);
        }
        let root_ok = frontier.root() == cp.root;
        if !anchor_ok {
            let a = anchor.as_ref().map_or(0, |a| a.size);
            return Err(SyncError::Fork {
                verified: a,
                offered: cp.size,
            });
        }
        match (proof_ok, root_ok) {
            (true, true) => {}
            (true, false) => return Err(SyncError::EntriesMismatch),
            (false, true) => return Err(SyncError::BadConsistencyProof),
            (false, false) => {
                return Err(SyncError::Fork {
                    verified: old_size,
                    offered: cp.size,
                });
            }
        }

        // Everything checks out: index the entries, then commit.
        let mut ignored = 0;
        for (i, entry) in self.check_entries(entries).into_iter().enumerate() {
            match entry {
                Some(e) => self.index_entry(old_size + i as u64, e),
                None => ignored += 1,
            }
        }
        self.state.frontier = frontier;
        if self
            .state
            .anchor
            .as_ref()
            .is_some_and(|a| a.size <= cp.size)
        {
            self.state.anchor = None;
        }
        self.state.checkpoint = Some(cp.clone());
        self.state.ignored_entries += ignored;
        Ok(report(ignored))
    }

    /// Adds one verified leaf to the index; false when it counts for nothing.
    /// Parses every leaf and verifies every roster review's signature, on all cores.
    ///
    /// Returns, per leaf, the entry to index or `None` for one that can never count
    /// (malformed, off-roster, bad signature). Parsing and Ed25519 verification dominate a
    /// sync and are independent per leaf, so they run in parallel; indexing stays sequential
    /// because log order decides which vote of a reviewer is the latest.
    fn check_entries<L: AsRef<[u8]> + Sync>(&self, entries: &[L]) -> Vec<Option<Entry>> {
        let check = |leaf: &L| -> Option<Entry> {
            let entry = Entry::from_leaf(leaf.as_ref()).ok()?;
            match &entry {
                Entry::Published(_) => Some(entry),
                // Only roster keys are checked (and recorded): others can never count.
                Entry::Review(r) => {
                    (self.roster.contains(&r.reviewer) && r.verify().is_ok()).then_some(entry)
                }
            }
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(16);
        if threads == 1 || entries.len() < 512 {
            return entries.iter().map(check).collect();
        }
        let chunk = entries.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = entries
                .chunks(chunk)
                .map(|part| scope.spawn(move || part.iter().map(check).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    }

    /// Records one checked entry in the verified index.
    fn index_entry(&mut self, index: u64, entry: Entry) {
        match entry {
            Entry::Published(p) => {
                let rec = self.state.definitions.entry(p.definition).or_default();
                if rec.published.is_none() {
                    rec.published = Some(PublishedInfo {
                        index,
                        name: p.name,
                        version: p.version,
                        author: p.author,
                    });
                }
            }
            Entry::Review(r) => {
                let rec = self.state.definitions.entry(r.definition).or_default();
                match r.action {
                    ReviewAction::Revoke => {
                        rec.revoked_by.insert(r.reviewer);
                    }
                    vote => {
                        rec.votes.insert(r.reviewer, vote);
                    }
                }
            }
        }
    }

    /// The status of an identity from the verified index, without a freshness check.
    pub fn status_unchecked(&self, id: &DefinitionId) -> Status {
        let Some(rec) = self.state.definitions.get(id) else {
            return Status::Unknown;
        };
        if rec.revoked_by.iter().any(|k| self.roster.contains(k)) {
            return Status::Revoked;
        }
        if rec.published.is_none() {
            return Status::Unknown;
        }
        // Keys, not signatures, are counted: `votes` holds one vote per key.
        let mut approvals = 0;
        let mut rejected = false;
        for (k, vote) in &rec.votes {
            if !self.roster.contains(k) {
                continue;
            }
            match vote {
                ReviewAction::Approve => approvals += 1,
                ReviewAction::Reject => rejected = true,
                ReviewAction::Revoke => {}
            }
        }
        if approvals >= self.config.threshold {
            Status::Approved
        } else if rejected {
            Status::Rejected
        } else {
            Status::Pending
        }
    }

    /// The status of an identity, refusing to vouch from a view older than the
    /// configured maximum age (`now` is local Unix time).
    pub fn status(&self, id: &DefinitionId, now: u64) -> Result<Status, StatusError> {
        self.check_fresh(now)?;
        Ok(self.status_unchecked(id))
    }

    /// Fails when the latest verified checkpoint is missing or too old.
    pub fn check_fresh(&self, now: u64) -> Result<(), StatusError> {
        let cp = self
            .state
            .checkpoint
            .as_ref()
            .ok_or(StatusError::NoCheckpoint)?;
        let age_secs = now.saturating_sub(cp.time);
        if age_secs > self.config.max_age_secs {
            return Err(StatusError::Stale {
                age_secs,
                max_age_secs: self.config.max_age_secs,
            });
        }
        Ok(())
    }

    /// The verified record of an identity, if the log mentions it.
    pub fn record(&self, id: &DefinitionId) -> Option<&DefinitionRecord> {
        self.state.definitions.get(id)
    }
}
