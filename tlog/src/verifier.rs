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
//! For one identity, considering only statements signed for this log's origin, whose key is
//! in the roster and whose signature verifies, in this order of precedence:
//!
//! 1. **revoked** — any trusted reviewer revoked it (even if never published: fail closed);
//! 2. **unknown** — it was never published in the log;
//! 3. **approved** — at least `threshold` *distinct* trusted keys whose verdict is approve,
//!    not counting its **authors**: the keys that published this identity, or published
//!    the same name earlier in the log (no one approves their own work);
//! 4. **rejected** — some trusted key's verdict is reject;
//! 5. **pending** — published, not enough approvals and no rejection.
//!
//! A reviewer's *verdict* on an identity is their approve or reject statement with the
//! greatest **signed time**, wherever it sits in the log: a reviewer changes their mind by
//! signing a newer statement, and an older one appended later (a replay, or a statement
//! held back) is recorded as **stale** and never counts. At equal times a rejection beats
//! an approval, so ties never add approvals. A revocation is final whatever its time.
//!
//! Statements signed for another origin (another registry, a staging one) never count, nor
//! do statements whose time is more than [`MAX_STATEMENT_FUTURE_SECS`] after the checkpoint
//! that first included them (an honest registry refuses those at append), so a reviewer's
//! key cannot be made to win forever with a far-future time.
//!
//! Publication signatures are not checked here, which keeps syncing large logs fast (the
//! server checks them on submission): a publication can make an identity eligible for
//! review and can make a key an author, so a forged one can only *remove* approvals (fail
//! closed), never add one.
//!
//! # Witnesses
//!
//! With a [`WitnessPolicy`] that requires K cosignatures, the verifier moves only to
//! checkpoints that K distinct trusted witnesses cosigned (C2SP `tlog-cosignature`), and
//! [`Verifier::status`] refuses to vouch from a checkpoint that was not.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::entry::{Entry, ReviewAction};
use super::keys::{PreparedKey, PublicKey};
use super::merkle::{Frontier, Hash, leaf_hash, verify_consistency};
use super::note::{Checkpoint, CheckpointError, Note, NoteVerifier};
use super::witness::{TooFewCosignatures, WitnessPolicy};
use task_defs::identity::DefinitionId;

/// How far in the future a checkpoint's time may be, to allow for clock skew.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;
/// How far a statement's signed time may be ahead: of the registry's clock when it is
/// appended (the registry refuses later ones), and of the time of the checkpoint that
/// first includes it (the verifier ignores later ones).
pub const MAX_STATEMENT_FUTURE_SECS: u64 = 86_400;
/// Stale statements recorded per identity (all are counted in
/// [`DefinitionRecord::stale_total`]); the bound keeps a hostile log from growing the state.
pub const MAX_STALE_RECORDED: usize = 32;

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
    /// The witnesses that must cosign every checkpoint moved to (default: none required).
    pub witnesses: WitnessPolicy,
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

/// A trusted reviewer's verdict: their approve or reject statement with the greatest
/// signed time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// Approve or reject.
    pub action: ReviewAction,
    /// The statement's signed time.
    pub time: u64,
    /// Its leaf index.
    pub index: u64,
    /// An approval by one of the identity's authors (decided when indexed, and again when
    /// the identity is published or republished): never counted.
    #[serde(default)]
    pub self_approval: bool,
}

/// A trusted reviewer's statement that never counts because the same reviewer signed a
/// later one about the same identity before it (it arrived out of order: a replay, or a
/// statement held back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleStatement {
    /// Its leaf index.
    pub index: u64,
    /// The reviewer.
    pub reviewer: PublicKey,
    /// What it said.
    pub action: ReviewAction,
    /// Its signed time.
    pub time: u64,
    /// The signed time of the reviewer's verdict that outranked it when it was logged.
    pub outranked_by: u64,
}

/// Everything the verified log says about one identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionRecord {
    /// Its first publication, if any.
    pub published: Option<PublishedInfo>,
    /// Every key that published this identity (normally one).
    #[serde(default)]
    pub publishers: BTreeSet<PublicKey>,
    /// Each trusted reviewer's verdict (approve or reject).
    pub votes: BTreeMap<PublicKey, Vote>,
    /// The trusted reviewers who revoked it.
    pub revoked_by: BTreeSet<PublicKey>,
    /// Stale statements, the first [`MAX_STALE_RECORDED`] in log order.
    #[serde(default)]
    pub stale: Vec<StaleStatement>,
    /// How many stale statements the log holds about it.
    #[serde(default)]
    pub stale_total: u64,
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
    /// Per definition name, each key that published it and the leaf index of its first
    /// publication: who authored earlier versions of a newly published identity.
    #[serde(default)]
    pub names: HashMap<String, BTreeMap<PublicKey, u64>>,
    /// The trusted witnesses (verifier keys) whose cosignature of the verified checkpoint
    /// verified.
    #[serde(default)]
    pub cosigned_by: Vec<String>,
    /// The roster the index was built for (reviews by other keys were not recorded).
    pub roster: BTreeSet<PublicKey>,
    /// A checkpoint verified before a resync from scratch: the new view must extend it.
    pub anchor: Option<Checkpoint>,
    /// Entries that counted for nothing: unparseable, another origin, bad or untrusted
    /// signatures, times too far ahead.
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
    /// Fewer trusted witnesses cosigned the checkpoint than the policy requires.
    #[error(transparent)]
    Cosignatures(#[from] TooFewCosignatures),
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
    /// The verified checkpoint lacks the cosignatures the witness policy requires (it was
    /// verified under a weaker policy).
    #[error(
        "unwitnessed registry view: the verified checkpoint is cosigned by {got} of the required {need} witnesses"
    )]
    NotCosigned {
        /// The policy's threshold.
        need: usize,
        /// Trusted witnesses among the checkpoint's cosigners.
        got: usize,
    },
}

/// One trusted reviewer's verdict as [`Verifier::report`] shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteReport {
    /// The reviewer.
    pub reviewer: PublicKey,
    /// Approve or reject.
    pub action: ReviewAction,
    /// The statement's signed time.
    pub time: u64,
    /// Its leaf index.
    pub index: u64,
    /// An approval by one of the identity's authors: shown, never counted.
    pub self_approval: bool,
}

/// Why an identity has its status: what [`Verifier::report`] returns, for `status` and the
/// review page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The status (the rule in the module docs).
    pub status: Status,
    /// Distinct trusted approvals required.
    pub threshold: usize,
    /// Distinct trusted approvals that count (self-approvals excluded).
    pub approvals: usize,
    /// Each trusted reviewer's verdict, by key.
    pub votes: Vec<VoteReport>,
    /// Trusted reviewers who revoked it.
    pub revoked_by: Vec<PublicKey>,
    /// Its authors: keys that published it or an earlier version of its name.
    pub authors: Vec<PublicKey>,
    /// Trusted reviewers' statements that are stale and never count (the first
    /// [`MAX_STALE_RECORDED`] in log order).
    pub stale: Vec<StaleStatement>,
    /// How many stale statements the log holds about it.
    pub stale_total: u64,
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
    /// The roster keys that are curve points, decompressed once rather than per review.
    prepared: HashMap<PublicKey, PreparedKey>,
    state: VerifierState,
}

/// What [`Verifier::open_checkpoint`] found the checkpoint to be, with the trusted
/// witnesses that cosigned it.
enum Step {
    /// The verified tree again (no entries).
    Same(Checkpoint, Vec<String>),
    /// A bigger tree, with the right number of entries to check.
    Grow(Checkpoint, Vec<String>),
}

/// Leaves checked ahead of an update by [`Verifier::check_leaves`]: their leaf hashes and
/// the entries to index, in log order.
#[derive(Debug, Default)]
pub struct CheckedLeaves {
    hashes: Vec<Hash>,
    entries: Vec<Option<Entry>>,
}

impl CheckedLeaves {
    /// How many leaves.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Appends leaves that follow these in the log.
    pub fn append(&mut self, mut next: CheckedLeaves) {
        self.hashes.append(&mut next.hashes);
        self.entries.append(&mut next.entries);
    }
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
        let prepared = roster
            .iter()
            .filter_map(|k| Some((*k, PreparedKey::new(k)?)))
            .collect();
        Ok(Verifier {
            config,
            roster,
            prepared,
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
        // The cheap checks first, so a refused checkpoint costs no parsing.
        match self.open_checkpoint(checkpoint, entries.len() as u64, now)? {
            Step::Same(cp, w) => Ok(self.commit_same(cp, w)),
            Step::Grow(cp, w) => {
                let checked = self.check_leaves(entries);
                self.commit_growth(cp, w, checked, consistency_proof)
            }
        }
    }

    /// [`Verifier::update`] with leaves already run through [`Verifier::check_leaves`] (by
    /// this verifier), so a sync can check each page while the next one downloads.
    pub fn update_checked(
        &mut self,
        checkpoint: &[u8],
        checked: CheckedLeaves,
        consistency_proof: &[Hash],
        now: u64,
    ) -> Result<UpdateReport, SyncError> {
        match self.open_checkpoint(checkpoint, checked.len() as u64, now)? {
            Step::Same(cp, w) => Ok(self.commit_same(cp, w)),
            Step::Grow(cp, w) => self.commit_growth(cp, w, checked, consistency_proof),
        }
    }

    /// Opens the note and makes every check that needs no entries: log signature,
    /// witness cosignatures, origin, clock, rollback, same-size fork, time order and the
    /// number of entries (`got`).
    fn open_checkpoint(&self, checkpoint: &[u8], got: u64, now: u64) -> Result<Step, SyncError> {
        let note = Note::parse(checkpoint).map_err(CheckpointError::from)?;
        let text = note
            .verify(&self.config.log_key)
            .map_err(CheckpointError::from)?;
        let cp = Checkpoint::from_text(text)?;
        if cp.origin != self.config.origin {
            return Err(SyncError::WrongOrigin {
                expected: self.config.origin.clone(),
                found: cp.origin,
            });
        }
        if cp.time > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
            return Err(SyncError::FromTheFuture { time: cp.time, now });
        }
        // Checked before any history: a checkpoint too few witnesses saw is not a view at
        // all for this client, whatever it would extend.
        let cosigned_by = if self.config.witnesses.is_required() {
            self.config.witnesses.check(&note, now)?
        } else {
            self.config.witnesses.cosigners(&note, now).0
        };
        let old_size = self.size();
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
        if let Some(prev) = &self.state.checkpoint {
            if cp.size == old_size {
                if cp.root != self.state.frontier.root() {
                    return Err(SyncError::Fork {
                        verified: old_size,
                        offered: cp.size,
                    });
                }
                if got != 0 {
                    return Err(SyncError::EntryCount { expected: 0, got });
                }
                return Ok(Step::Same(cp, cosigned_by));
            }
            if cp.time < prev.time {
                return Err(SyncError::TimeWentBackwards {
                    verified: prev.time,
                    offered: cp.time,
                });
            }
        }
        let growth = cp.size - old_size;
        if got != growth {
            return Err(SyncError::EntryCount {
                expected: growth,
                got,
            });
        }
        Ok(Step::Grow(cp, cosigned_by))
    }

    /// Accepts the same tree, maybe signed again later: keeps the freshest time (or, at
    /// the same time, the note more witnesses cosigned).
    fn commit_same(&mut self, cp: Checkpoint, cosigned_by: Vec<String>) -> UpdateReport {
        let size = self.size();
        if self.state.checkpoint.as_ref().is_some_and(|p| {
            cp.time > p.time
                || (cp.time == p.time && cosigned_by.len() > self.state.cosigned_by.len())
        }) {
            self.state.checkpoint = Some(cp);
            self.state.cosigned_by = cosigned_by;
        }
        UpdateReport {
            old_size: size,
            new_size: size,
            ignored_entries: 0,
        }
    }

    /// Checks that the entries extend the verified tree to the signed one, then indexes
    /// them and commits. `cp` passed [`Verifier::open_checkpoint`] with `checked.len()`.
    fn commit_growth(
        &mut self,
        cp: Checkpoint,
        cosigned_by: Vec<String>,
        checked: CheckedLeaves,
        consistency_proof: &[Hash],
    ) -> Result<UpdateReport, SyncError> {
        let old_size = self.size();
        let old_root = self.state.frontier.root();
        let proof_ok =
            verify_consistency(old_size, cp.size, &old_root, &cp.root, consistency_proof).is_ok();

        // Extend a copy of the frontier; check the anchor root when passing its size.
        let mut frontier = self.state.frontier.clone();
        let mut anchor_ok = true;
        let anchor = self.state.anchor.as_ref();
        let check_anchor = |f: &Frontier, ok: &mut bool| {
            if let Some(a) = anchor
                && f.size() == a.size
                && f.root() != a.root
            {
                *ok = false;
            }
        };
        check_anchor(&frontier, &mut anchor_ok);
        for h in &checked.hashes {
            frontier.push_hash(*h);
            check_anchor(&frontier, &mut anchor_ok);
        }
        let root_ok = frontier.root() == cp.root;
        if !anchor_ok {
            let a = anchor.map_or(0, |a| a.size);
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
        // A statement may be at most this far ahead of the checkpoint that includes it.
        let latest = cp.time.saturating_add(MAX_STATEMENT_FUTURE_SECS);
        for (i, entry) in checked.entries.into_iter().enumerate() {
            match entry {
                Some(e) if e.time() <= latest => self.index_entry(old_size + i as u64, e),
                _ => ignored += 1,
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
        let new_size = cp.size;
        self.state.checkpoint = Some(cp);
        self.state.cosigned_by = cosigned_by;
        self.state.ignored_entries += ignored;
        Ok(UpdateReport {
            old_size,
            new_size,
            ignored_entries: ignored,
        })
    }

    /// Hashes every leaf, parses it and verifies every roster review's signature, on all
    /// cores.
    ///
    /// Gives, per leaf in order, its leaf hash and the entry to index or `None` for one
    /// that can never count (malformed, off-roster, bad signature). Hashing, parsing and
    /// Ed25519 verification dominate a sync and are independent per leaf, so they run in
    /// parallel; indexing stays sequential because log order decides which vote of a
    /// reviewer is the latest. The work is pure, so doing it before the root is known to
    /// match changes no outcome, only what a refused update costs.
    pub fn check_leaves<L: AsRef<[u8]> + Sync>(&self, leaves: &[L]) -> CheckedLeaves {
        let check = |part: &[L]| -> CheckedLeaves {
            let mut out = CheckedLeaves {
                hashes: Vec::with_capacity(part.len()),
                entries: Vec::with_capacity(part.len()),
            };
            for leaf in part {
                let leaf = leaf.as_ref();
                out.hashes.push(leaf_hash(leaf));
                out.entries.push(self.check_entry(leaf));
            }
            out
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(16);
        if threads == 1 || leaves.len() < 512 {
            return check(leaves);
        }
        let chunk = leaves.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = leaves
                .chunks(chunk)
                .map(|part| scope.spawn(move || check(part)))
                .collect();
            let mut all = CheckedLeaves {
                hashes: Vec::with_capacity(leaves.len()),
                entries: Vec::with_capacity(leaves.len()),
            };
            for h in handles {
                all.append(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            }
            all
        })
    }

    /// Parses one leaf; `None` unless it is a publication or a roster review whose
    /// signature verifies, signed for this log's origin.
    fn check_entry(&self, leaf: &[u8]) -> Option<Entry> {
        let entry = Entry::from_leaf(leaf).ok()?;
        // Signed for another log: not a statement about anything in this one.
        if entry.origin() != self.config.origin {
            return None;
        }
        match &entry {
            Entry::Published(_) => Some(entry),
            // Only roster keys are checked (and recorded): others can never count. A
            // roster key that is not a curve point verifies nothing, as before.
            Entry::Review(r) => {
                let key = self.prepared.get(&r.reviewer)?;
                r.verify_prepared(key).is_ok().then_some(entry)
            }
        }
    }

    /// Records one checked entry in the verified index.
    fn index_entry(&mut self, index: u64, entry: Entry) {
        match entry {
            Entry::Published(p) => {
                self.state
                    .names
                    .entry(p.name.clone())
                    .or_default()
                    .entry(p.author)
                    .or_insert(index);
                let rec = self.state.definitions.entry(p.definition).or_default();
                rec.publishers.insert(p.author);
                if rec.published.is_none() {
                    rec.published = Some(PublishedInfo {
                        index,
                        name: p.name,
                        version: p.version,
                        author: p.author,
                    });
                }
                // The set of authors may have grown: decide every verdict's kind again (only
                // a hostile log has verdicts before the publication or republishes).
                if !rec.votes.is_empty() {
                    let names = &self.state.names;
                    let mut votes = std::mem::take(&mut rec.votes);
                    for (k, v) in &mut votes {
                        v.self_approval =
                            v.action == ReviewAction::Approve && is_author(names, rec, k);
                    }
                    rec.votes = votes;
                }
            }
            Entry::Review(r) => {
                let rec = self.state.definitions.entry(r.definition).or_default();
                let action = match r.action {
                    ReviewAction::Revoke => {
                        rec.revoked_by.insert(r.reviewer);
                        return;
                    }
                    vote => vote,
                };
                // Decided here, not at every status lookup: a verdict's kind changes only
                // when the identity is (re)published, which re-decides it above.
                let new = Vote {
                    action,
                    time: r.time,
                    index,
                    self_approval: action == ReviewAction::Approve
                        && is_author(&self.state.names, rec, &r.reviewer),
                };
                match rec.votes.get(&r.reviewer) {
                    Some(cur) if !outranks(&new, cur) => {
                        // The same verdict signed at the same time again changes nothing;
                        // anything else the current verdict outranks arrived out of order.
                        if (cur.time, cur.action) != (new.time, new.action) {
                            rec.stale_total += 1;
                            if rec.stale.len() < MAX_STALE_RECORDED {
                                rec.stale.push(StaleStatement {
                                    index,
                                    reviewer: r.reviewer,
                                    action,
                                    time: r.time,
                                    outranked_by: cur.time,
                                });
                            }
                        }
                    }
                    _ => {
                        rec.votes.insert(r.reviewer, new);
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
        // Keys, not signatures, are counted: `votes` holds one verdict per key.
        let mut approvals = 0;
        let mut rejected = false;
        for (k, vote) in &rec.votes {
            if !self.roster.contains(k) {
                continue;
            }
            match vote.action {
                ReviewAction::Approve if !vote.self_approval => approvals += 1,
                ReviewAction::Reject => rejected = true,
                _ => {}
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

    /// Why an identity has its status (without a freshness check): every trusted
    /// reviewer's verdict, which approvals count, its authors and its stale statements.
    pub fn report(&self, id: &DefinitionId) -> StatusReport {
        let status = self.status_unchecked(id);
        let empty = DefinitionRecord::default();
        let rec = self.state.definitions.get(id).unwrap_or(&empty);
        let trusted = |k: &PublicKey| self.roster.contains(k);
        let votes: Vec<VoteReport> = rec
            .votes
            .iter()
            .filter(|(k, _)| trusted(k))
            .map(|(k, v)| VoteReport {
                reviewer: *k,
                action: v.action,
                time: v.time,
                index: v.index,
                self_approval: v.self_approval,
            })
            .collect();
        let mut authors = rec.publishers.clone();
        if let Some(p) = &rec.published
            && let Some(keys) = self.state.names.get(&p.name)
        {
            authors.extend(keys.iter().filter(|(_, i)| **i < p.index).map(|(k, _)| *k));
        }
        StatusReport {
            status,
            threshold: self.config.threshold,
            approvals: votes
                .iter()
                .filter(|v| v.action == ReviewAction::Approve && !v.self_approval)
                .count(),
            votes,
            revoked_by: rec.revoked_by.iter().copied().filter(trusted).collect(),
            authors: authors.into_iter().collect(),
            stale: rec
                .stale
                .iter()
                .filter(|s| trusted(&s.reviewer))
                .cloned()
                .collect(),
            stale_total: rec.stale_total,
        }
    }

    /// The status of an identity, refusing to vouch from a view older than the
    /// configured maximum age or less cosigned than the witness policy requires (`now` is
    /// local Unix time).
    pub fn status(&self, id: &DefinitionId, now: u64) -> Result<Status, StatusError> {
        self.check_fresh(now)?;
        Ok(self.status_unchecked(id))
    }

    /// Fails when the latest verified checkpoint is missing, too old, or not cosigned by
    /// enough trusted witnesses.
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
        let policy = &self.config.witnesses;
        if policy.is_required() {
            let got = policy
                .witnesses()
                .filter(|w| self.state.cosigned_by.contains(&w.to_vkey()))
                .count();
            if got < policy.threshold() {
                return Err(StatusError::NotCosigned {
                    need: policy.threshold(),
                    got,
                });
            }
        }
        Ok(())
    }

    /// The trusted witnesses (verifier keys) that cosigned the verified checkpoint.
    pub fn cosigned_by(&self) -> &[String] {
        &self.state.cosigned_by
    }

    /// The verified record of an identity, if the log mentions it.
    pub fn record(&self, id: &DefinitionId) -> Option<&DefinitionRecord> {
        self.state.definitions.get(id)
    }
}

/// Whether `key` authored the identity of `rec`: it published it, or published the same
/// name at an earlier log index (`names` maps each name to its publishers' first indexes).
fn is_author(
    names: &HashMap<String, BTreeMap<PublicKey, u64>>,
    rec: &DefinitionRecord,
    key: &PublicKey,
) -> bool {
    rec.publishers.contains(key)
        || rec.published.as_ref().is_some_and(|p| {
            names
                .get(&p.name)
                .and_then(|keys| keys.get(key))
                .is_some_and(|&first| first < p.index)
        })
}

/// Whether `new` replaces `cur` as a reviewer's verdict: it was signed later, or at the
/// same time and rejects what `cur` approved (ties never add approvals).
fn outranks(new: &Vote, cur: &Vote) -> bool {
    new.time > cur.time
        || (new.time == cur.time
            && new.action == ReviewAction::Reject
            && cur.action == ReviewAction::Approve)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Signature;
    use crate::keys::tests::{WEAK_KEY, malleate, weak_signature};
    use crate::{MemoryTree, NoteSigner, Published, Review, SecretKey};

    const ORIGIN: &str = "test.pinfold/log";

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    fn def(n: u64) -> DefinitionId {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&n.to_be_bytes());
        DefinitionId(b)
    }

    fn config(reviewers: Vec<PublicKey>) -> VerifierConfig {
        VerifierConfig {
            origin: ORIGIN.into(),
            log_key: NoteSigner::new(ORIGIN, key(200)).unwrap().verifier(),
            reviewers,
            threshold: 1,
            max_age_secs: 3600,
            witnesses: WitnessPolicy::default(),
        }
    }

    fn checkpoint(leaves: &[Vec<u8>]) -> Vec<u8> {
        let tree = MemoryTree::from_leaf_hashes(leaves.iter().map(|l| leaf_hash(l)));
        Checkpoint {
            origin: ORIGIN.into(),
            size: leaves.len() as u64,
            root: tree.root(),
            time: 10,
        }
        .sign(&NoteSigner::new(ORIGIN, key(200)).unwrap())
        .unwrap()
    }

    /// Publications of `n` definitions, each followed by a review whose signature is
    /// forged in one of three ways (so it must not count), except every 4th which is good.
    fn log(n: u64) -> Vec<Vec<u8>> {
        let mut leaves = Vec::new();
        for i in 0..n {
            let p = Published::sign(&key(100), ORIGIN, def(i), "x", "1.0.0", 1);
            leaves.push(Entry::Published(p).to_leaf());
            let mut r = Review::sign(&key(1), ORIGIN, ReviewAction::Approve, def(i), "", 2);
            match i % 4 {
                // Same signature, s + l: a non-canonical encoding of the same scalar.
                0 => r.signature = malleate(&r.signature),
                // A small-order roster key with a signature that satisfies the
                // cofactorless equation for every message.
                1 => {
                    r.reviewer = WEAK_KEY;
                    r.signature = weak_signature();
                }
                // A signature by another key.
                2 => r.signature = key(2).sign(&r.statement()),
                _ => {}
            }
            leaves.push(Entry::Review(r).to_leaf());
        }
        leaves
    }

    #[test]
    fn malleated_and_weak_key_signatures_never_count() {
        // Both the sequential (< 512 leaves) and the threaded path.
        for n in [8, 400] {
            let leaves = log(n);
            let mut v = Verifier::new(config(vec![key(1).public_key(), WEAK_KEY])).unwrap();
            let report = v.update(&checkpoint(&leaves), &leaves, &[], 10).unwrap();
            assert_eq!(report.ignored_entries, n - n / 4);
            for i in 0..n {
                let want = if i % 4 == 3 {
                    Status::Approved
                } else {
                    Status::Pending
                };
                assert_eq!(v.status_unchecked(&def(i)), want, "definition {i}");
            }
            assert!(v.record(&def(1)).unwrap().votes.is_empty());
        }
        assert_ne!(malleate(&Signature([0; 64])), Signature([0; 64]));
    }

    #[test]
    fn checking_pages_ahead_changes_nothing() {
        let leaves = log(700);
        let cp = checkpoint(&leaves);
        let cfg = config(vec![key(1).public_key()]);
        let mut whole = Verifier::new(cfg.clone()).unwrap();
        let r1 = whole.update(&cp, &leaves, &[], 10).unwrap();
        let mut paged = Verifier::new(cfg).unwrap();
        let mut checked = CheckedLeaves::default();
        for page in leaves.chunks(333) {
            checked.append(paged.check_leaves(page));
        }
        let r2 = paged.update_checked(&cp, checked, &[], 10).unwrap();
        assert_eq!(r1, r2);
        assert_eq!(whole.state(), paged.state());

        // A page checked ahead but altered in between is still caught by the root.
        let mut altered = leaves.clone();
        altered[5] =
            Entry::Published(Published::sign(&key(100), ORIGIN, def(999), "x", "1", 1)).to_leaf();
        let mut v = Verifier::new(config(vec![key(1).public_key()])).unwrap();
        let checked = v.check_leaves(&altered);
        assert_eq!(
            v.update_checked(&cp, checked, &[], 10),
            Err(SyncError::EntriesMismatch)
        );
        assert_eq!(v.size(), 0);
    }
}
