//! The registry's JSON API: paths, request and response bodies, shared by server and client.
//!
//! Everything the server says here except checkpoints, entries and proofs is a
//! *convenience view* (lists, statuses, reviewer names): a client that must decide whether
//! to trust a definition verifies the log itself (see [`super::client::sync`]) and never
//! takes a status from these bodies.

use serde::{Deserialize, Serialize};

use pinfold_tlog::{CosignerKey, Hash, PublicKey, Published, ReviewAction, Status, StatusReport};
use task_defs::identity::DefinitionId;

/// Prefix of every API path.
pub const API_PREFIX: &str = "/api/v1";
/// Most entries one `entries` request returns; clients page through bigger ranges.
pub const MAX_ENTRIES_PER_PAGE: u64 = 4096;
/// Definitions per list page when the request names no `limit`.
pub const DEFAULT_PAGE: usize = 100;
/// Most definitions one list page holds.
pub const MAX_PAGE: usize = 500;
/// Most publications one list request looks at; a page of a rare status may come back short
/// (even empty) with a `next_cursor` to continue from.
pub const MAX_SCAN: usize = 10_000;

/// The body of every error response: `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
}

/// `POST /api/v1/definitions`: an author's signed publication and the bundle it names.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// The author's signed statement.
    pub publication: Published,
    /// The bundle (`task-defs pack` bytes), standard base64.
    pub bundle: String,
}

/// The answer to a publication or review: where the entry sits in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResponse {
    /// The definition the entry is about.
    pub id: DefinitionId,
    /// The leaf index of the entry (of the earlier identical entry when `created` is false).
    pub index: u64,
    /// False when the same publication or statement was already logged (idempotent retry).
    pub created: bool,
    /// The tree size of the checkpoint signed after the write (includes the entry).
    pub tree_size: u64,
}

/// `GET /api/v1/entries?start=&end=`: leaves `[start, start + entries.len())`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntriesResponse {
    /// Index of the first leaf.
    pub start: u64,
    /// The leaves, standard base64 of their exact bytes.
    pub entries: Vec<String>,
}

/// `GET /api/v1/proof/inclusion?index=&size=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionResponse {
    /// The leaf index.
    pub index: u64,
    /// The tree size the proof is for.
    pub size: u64,
    /// The proof, deepest sibling first.
    pub proof: Vec<Hash>,
}

/// `GET /api/v1/proof/consistency?old=&new=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyResponse {
    /// The older tree size.
    pub old: u64,
    /// The newer tree size.
    pub new: u64,
    /// The proof.
    pub proof: Vec<Hash>,
}

/// A reviewer on the server's roster (informational: clients bring their own roster).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    /// The reviewer's key.
    pub key: PublicKey,
    /// A display name, if configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A witness the registry asks to cosign its checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessEntry {
    /// Its C2SP verifier key (`name+keyid+base64(0x04 ‖ key)`).
    pub vkey: CosignerKey,
    /// Its `tlog-witness` submission prefix (`add-checkpoint` is appended).
    pub url: String,
}

/// `GET /api/v1/info`: what the server says about itself (informational only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoResponse {
    /// The log's origin line.
    pub origin: String,
    /// The log's checkpoint key.
    pub log_key: PublicKey,
    /// The server's reviewer roster.
    pub reviewers: Vec<RosterEntry>,
    /// The server's threshold.
    pub threshold: usize,
    /// The current tree size.
    pub tree_size: u64,
    /// The largest bundle the registry accepts, in bytes.
    #[serde(default)]
    pub max_bundle_bytes: u64,
    /// The URL the operator says the registry is reached at, if configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// The author policy: `open` or `allowlist`.
    #[serde(default)]
    pub author_policy: String,
    /// The log's C2SP verifier key (`origin+keyid+base64(0x01 ‖ key)`), for third-party
    /// tools and witnesses.
    #[serde(default)]
    pub log_vkey: String,
    /// The witnesses the registry asks to cosign its checkpoints.
    #[serde(default)]
    pub witnesses: Vec<WitnessEntry>,
}

/// One definition in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionSummary {
    /// The identity.
    pub id: DefinitionId,
    /// The manifest's name.
    pub name: String,
    /// The manifest's version.
    pub version: String,
    /// The author's key.
    pub author: PublicKey,
    /// Leaf index of the publication.
    pub index: u64,
    /// When the server logged it, Unix seconds.
    pub published_at: u64,
    /// Bundle size in bytes.
    pub size: u64,
    /// The server's view of the status under its own roster and threshold (unverified).
    pub status: Status,
    /// Distinct roster keys whose latest vote is approve.
    pub approvals: usize,
    /// Why the review queue does not show it (unreviewed too long, or the operator hid it);
    /// absent when it is shown. The log keeps it either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<String>,
}

/// One logged reviewer statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewRecord {
    /// Leaf index.
    pub index: u64,
    /// The reviewer's key.
    pub reviewer: PublicKey,
    /// The roster's display name for the key, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewer_name: Option<String>,
    /// Whether the key is on the server's current roster.
    pub on_roster: bool,
    /// What the reviewer said.
    pub action: ReviewAction,
    /// The definition the statement is about.
    pub definition: DefinitionId,
    /// The reviewer's reason.
    pub reason: String,
    /// When the reviewer signed, Unix seconds (the reviewer's clock).
    pub time: u64,
    /// When the server logged it, Unix seconds.
    pub logged_at: u64,
}

/// `GET /api/v1/definitions/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefinitionDetail {
    /// The list view of the definition.
    pub summary: DefinitionSummary,
    /// What `task-defs check --json` prints for it (manifest, files, footprint).
    pub check: serde_json::Value,
    /// Every reviewer statement about it, in log order.
    pub reviews: Vec<ReviewRecord>,
    /// Why the server's view gives it its status: verdicts by signed time, self-approvals
    /// (shown, not counted), authors, stale statements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<StatusReport>,
    /// The last approved version of the same name published before it, for diffing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_approved: Option<DefinitionSummary>,
}

/// `GET /api/v1/definitions?status=&limit=&cursor=&order=&hidden=`: one page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionList {
    /// The definitions, in the order asked for (newest publication first by default).
    pub definitions: Vec<DefinitionSummary>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<u64>,
}

/// The order of a definitions list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListOrder {
    /// Newest publication first (the default).
    Newest,
    /// Oldest publication first (the review queue's order).
    Oldest,
}

/// The query of `GET /api/v1/definitions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only definitions with this (server-view) status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Page size (default [`DEFAULT_PAGE`], at most [`MAX_PAGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<u64>,
    /// `newest` (default) or `oldest` first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<ListOrder>,
    /// Include definitions hidden from the queue.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
}

/// The query of `GET /api/v1/entries`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RangeQuery {
    /// First leaf.
    pub start: u64,
    /// One past the last leaf.
    pub end: u64,
}

/// The query of `GET /api/v1/proof/inclusion`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct InclusionQuery {
    /// The leaf index.
    pub index: u64,
    /// The tree size.
    pub size: u64,
}

/// The query of `GET /api/v1/checkpoint/cosigned`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct CosignedQuery {
    /// The fewest cosignatures the checkpoint must carry (default 1).
    #[serde(default)]
    pub min: Option<usize>,
}

/// The query of `GET /api/v1/proof/consistency`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ConsistencyQuery {
    /// The older tree size.
    pub old: u64,
    /// The newer tree size.
    pub new: u64,
}
