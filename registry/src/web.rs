//! The review web pages: server-rendered HTML that works without JavaScript.
//!
//! Everything that came from an author or reviewer (names, manifest text, file contents,
//! reasons, paths) goes through [`esc`] before it reaches the page; nothing else is
//! interpolated except numbers, identities, keys and hashes, which are escaped too for
//! uniformity. Approving is a signed act, so pages show the exact CLI command instead of a
//! button: the server never holds a reviewer's key.

use std::fmt::Write as _;

use super::api::{DefinitionSummary, ListOrder, ListQuery, ReviewRecord};
use super::client::status_name;
use super::diff::{self, FileChange};
use super::service::{Registry, RequestError};
use super::unix_now;
use crate::cli::summary_text;
use pinfold_tlog::{ReviewAction, Status, StatusReport};
use task_defs::definition::Definition;
use task_defs::identity::DefinitionId;
use task_defs::manifest::{MANIFEST_FILE, RuntimeSpec};

/// Largest file whose text a page shows inline.
pub const MAX_INLINE_TEXT: usize = 256 * 1024;

/// Escapes text for HTML element content and attribute values. Characters that render
/// invisibly or reorder text ([`diff::char_name`]) become a visible `[U+202E]`, so no
/// author text (a name, a reason, a path) can read differently from what it is.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if diff::char_name(c).is_some() && !matches!(c, '\n' | '\t') => {
                let _ = write!(out, "[U+{:04X}]", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// [`esc`] for source text shown to reviewers: each hidden character becomes a marked,
/// named `[U+202E]` they cannot miss.
pub fn esc_code(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match diff::char_name(c) {
            Some(name) if c != '\t' => {
                let _ = write!(
                    out,
                    "<mark class=\"uni\" title=\"U+{:04X} {name}\">[U+{:04X}]</mark>",
                    c as u32, c as u32
                );
            }
            _ => out.push_str(&esc(c.encode_utf8(&mut [0; 4]))),
        }
    }
    out
}

/// `2025-01-31 12:34:56 UTC` for Unix seconds (proleptic Gregorian, no leap seconds).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

const STYLE: &str = "
body{font-family:system-ui,sans-serif;max-width:72rem;margin:1rem auto;padding:0 1rem;color:#222;line-height:1.4}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:1.8rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #eee;vertical-align:top}
code,pre{font-family:ui-monospace,monospace;font-size:.85rem}pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;white-space:pre}
.id{word-break:break-all}.muted{color:#777}nav a{margin-right:1rem}
.pending{color:#a60}.approved{color:#070}.rejected{color:#b00}.revoked{color:#b00;font-weight:bold}.unknown{color:#777}
.old{background:#fff4e0}.older{background:#ffe0e0}
table.diff,table.src{font-family:ui-monospace,monospace;font-size:.8rem;border:1px solid #ddd;margin:.4rem 0 1rem}
table.diff td,table.src td{border:0;padding:0 .4rem;white-space:pre-wrap;overflow-wrap:anywhere}
td.ln{color:#888;text-align:right;user-select:none;width:3.5rem;white-space:nowrap}td.ln a{color:#888;text-decoration:none}
tr.add td.code{background:#e6ffed}tr.del td.code{background:#ffeef0}tr.hunk td{background:#eef;color:#555}
tr:target td{background:#fff8c5}
mark.uni{background:#b00;color:#fff;font-weight:bold;padding:0 .15rem;border-radius:2px}
.warn{border:2px solid #b00;background:#fff0f0;padding:.5rem .8rem;margin:1rem 0}
.note{border:1px solid #a60;background:#fff8e6;padding:.5rem .8rem;margin:1rem 0}
.cmd{background:#222;color:#eee;white-space:pre-wrap;overflow-wrap:anywhere;word-break:break-all}
";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · pinfold registry</title><style>{STYLE}</style></head><body>\
         <nav><a href=\"/\">Review queue</a><a href=\"/revocations\">Revocations</a></nav>\n{body}\n</body></html>\n",
        esc(title)
    )
}

/// A page for an error.
pub fn error_page(status: u16, message: &str) -> String {
    page(
        "error",
        &format!("<h1>Error {status}</h1><p>{}</p>", esc(message)),
    )
}

/// "3 min", "2 h", ... for an age in seconds.
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3600 => format!("{} min", s / 60),
        s if s < 2 * 86400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86400),
    }
}

fn status_span(s: Status) -> String {
    let n = status_name(s);
    format!("<span class=\"{n}\">{n}</span>")
}

fn def_link(id: &DefinitionId, text: &str) -> String {
    format!(
        "<a href=\"/definitions/{}\">{}</a>",
        esc(&id.to_string()),
        esc(text)
    )
}

fn short(id: &DefinitionId) -> String {
    let s = id.to_string();
    format!("{}…", &s[..s.len().min(7 + 12)])
}

fn reviewer(r: &ReviewRecord) -> String {
    let key = esc(&r.reviewer.to_string());
    let mut s = match &r.reviewer_name {
        Some(n) => format!("{} <code class=\"id\">{key}</code>", esc(n)),
        None => format!("<code class=\"id\">{key}</code>"),
    };
    if !r.on_roster {
        s.push_str(" <span class=\"muted\">(not on this registry's roster)</span>");
    }
    s
}

/// The query of the queue page: `?cursor=` to page on, `?hidden=true` to show what the
/// queue hides.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueQuery {
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<u64>,
    /// Show the definitions hidden from the queue instead.
    #[serde(default)]
    pub hidden: bool,
}

/// Definitions per queue page.
pub const QUEUE_PAGE: usize = 100;

/// The queue: pending definitions, oldest first, with their age; then recent decisions.
pub fn queue_page(registry: &Registry, q: &QueueQuery) -> Result<String, RequestError> {
    let cp = registry.checkpoint();
    let now = unix_now();
    let threshold = registry.settings().threshold;
    let queue = registry.list(&ListQuery {
        status: Some(Status::Pending),
        limit: Some(QUEUE_PAGE),
        cursor: q.cursor,
        order: Some(ListOrder::Oldest),
        hidden: q.hidden,
    })?;
    let pending: Vec<&DefinitionSummary> = queue
        .definitions
        .iter()
        .filter(|d| !q.hidden || d.hidden.is_some())
        .collect();
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>Review queue</h1><p class=\"muted\">Log <code>{}</code>: {} entries, checkpoint signed {} ago. \
         Statuses here are this server's view (roster of {}, threshold {threshold}); \
         providers verify the log with their own roster.</p>",
        esc(&cp.origin),
        cp.size,
        age(now.saturating_sub(cp.time)),
        registry.settings().roster.len()
    );
    if q.hidden {
        let _ = write!(
            b,
            "<h2>Hidden from the queue ({})</h2><p class=\"muted\">Pending definitions nobody \
             reviewed for a long time, or that the operator hid. The log keeps them; a reviewer \
             can still judge them by identity. <a href=\"/\">Back to the queue</a>.</p>",
            pending.len()
        );
    } else {
        let _ = write!(b, "<h2>Pending ({})</h2>", pending.len());
    }
    if pending.is_empty() {
        b.push_str("<p id=\"queue-empty\">Nothing awaits review.</p>");
    } else {
        b.push_str(
            "<table id=\"queue\"><thead><tr><th>Definition</th><th>Version</th><th>Identity</th>\
             <th>Approvals</th><th>Waiting</th></tr></thead><tbody>",
        );
        for d in pending {
            let waiting = now.saturating_sub(d.published_at);
            let class = match waiting {
                w if w > 7 * 86400 => " class=\"older\"",
                w if w > 86400 => " class=\"old\"",
                _ => "",
            };
            let _ = write!(
                b,
                "<tr{class}><td>{}</td><td>{}</td><td><code class=\"id\">{}</code></td>\
                 <td>{}/{threshold}</td><td>{}{}</td></tr>",
                def_link(&d.id, &d.name),
                esc(&d.version),
                esc(&short(&d.id)),
                d.approvals,
                age(waiting),
                d.hidden
                    .as_deref()
                    .map(|h| format!(" <span class=\"muted\">({})</span>", esc(h)))
                    .unwrap_or_default()
            );
        }
        b.push_str("</tbody></table>");
    }
    if let Some(c) = queue.next_cursor {
        let _ = write!(
            b,
            "<p><a id=\"next-page\" href=\"/?cursor={c}{}\">Next page</a></p>",
            if q.hidden { "&amp;hidden=true" } else { "" }
        );
    }
    if !q.hidden {
        b.push_str(
            "<p class=\"muted\"><a id=\"hidden-link\" href=\"/?hidden=true\">Definitions hidden from the queue</a></p>",
        );
    }
    let recent = registry.list(&ListQuery {
        limit: Some(200),
        ..ListQuery::default()
    })?;
    let decided: Vec<&DefinitionSummary> = recent
        .definitions
        .iter()
        .filter(|d| d.status != Status::Pending)
        .take(50)
        .collect();
    b.push_str("<h2>Recently published, decided</h2>");
    if decided.is_empty() {
        b.push_str("<p class=\"muted\">None yet.</p>");
    } else {
        b.push_str(
            "<table id=\"decided\"><thead><tr><th>Definition</th><th>Version</th><th>Status</th>\
             <th>Identity</th></tr></thead><tbody>",
        );
        for d in decided {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code class=\"id\">{}</code></td></tr>",
                def_link(&d.id, &d.name),
                esc(&d.version),
                status_span(d.status),
                esc(&short(&d.id))
            );
        }
        b.push_str("</tbody></table>");
    }
    Ok(page("Review queue", &b))
}

fn footprint_section(b: &mut String, def: &Definition) {
    b.push_str("<h2 id=\"footprint\">Capability footprint</h2>");
    let m = &def.manifest;
    let c = &m.capabilities;
    let _ = write!(
        b,
        "<p>Network: <b>{}</b>. Deterministic: {}. Environment: {}. Secrets: {}.</p>",
        if c.network { "requested" } else { "off" },
        if c.deterministic { "yes" } else { "no" },
        if c.env.is_empty() {
            "(none)".to_string()
        } else {
            esc(&c
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "))
        },
        if c.secrets.is_empty() {
            "(none)".to_string()
        } else {
            esc(&c.secrets.join(", "))
        }
    );
    match (&m.runtime.spec, &def.footprint) {
        (RuntimeSpec::Wasm { module }, Some(fp)) => {
            let caps: Vec<&str> = fp.capabilities.iter().map(|c| c.as_str()).collect();
            let _ = write!(
                b,
                "<p>Wasm module <code>{}</code> ({}), capabilities: <b>{}</b>.</p>",
                esc(module),
                match fp.kind {
                    task_defs::footprint::ModuleKind::Component => "component",
                    task_defs::footprint::ModuleKind::CoreModule => "core module",
                },
                if caps.is_empty() {
                    "(nothing)".to_string()
                } else {
                    esc(&caps.join(", "))
                }
            );
            b.push_str(
                "<table id=\"imports\"><thead><tr><th>Import</th><th>Kind</th><th>Capability</th>\
                 </tr></thead><tbody>",
            );
            for imp in &fp.imports {
                let _ = write!(
                    b,
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                    esc(&diff::import_name(imp)),
                    esc(&imp.item),
                    esc(imp.capability.as_str())
                );
            }
            b.push_str("</tbody></table>");
        }
        (
            RuntimeSpec::Docker {
                image,
                user,
                entrypoint,
                workdir,
                isolation,
            },
            _,
        ) => {
            let l = &m.limits;
            let _ = write!(
                b,
                "<table id=\"docker\"><tbody>\
                 <tr><th>Image</th><td><code class=\"id\">{}</code> (pinned by digest)</td></tr>\
                 <tr><th>User</th><td>{}:{}{}</td></tr>\
                 <tr><th>Entrypoint</th><td><code>{}</code> in <code>{}</code></td></tr>\
                 <tr><th>Isolation</th><td>at least {}</td></tr>\
                 <tr><th>Network</th><td>{}</td></tr>\
                 <tr><th>Limits</th><td>memory {} bytes, pids {}, cpus {}, timeout {} ms</td></tr>\
                 <tr><th>Filesystem</th><td>input <code>{}</code> read-only, output <code>{}</code> the only writable directory</td></tr>\
                 </tbody></table>",
                esc(&image.to_string()),
                user.0,
                user.1,
                if user.0 == 0 { " <b>(root)</b>" } else { "" },
                esc(&entrypoint.join(" ")),
                esc(workdir),
                esc(isolation.as_str()),
                if c.network { "requested" } else { "none" },
                l.memory,
                l.pids.map_or("default".into(), |p| p.to_string()),
                l.millicpus
                    .map_or("default".into(), |c| format!("{}", c as f64 / 1000.0)),
                l.timeout_ms,
                esc(&m.io.input),
                esc(&m.io.output)
            );
        }
        _ => b.push_str("<p class=\"muted\">No footprint.</p>"),
    }
}

/// The texts of a definition a reviewer reads: the manifest as written, then each file
/// (`None` for binary files), with their place in the page's anchors.
fn texts(def: &Definition) -> Vec<(&str, &[u8])> {
    std::iter::once((MANIFEST_FILE, def.manifest_text.as_bytes()))
        .chain(def.files.iter().map(|(p, v)| (p.as_str(), v.as_slice())))
        .collect()
}

fn source_table(b: &mut String, file: usize, text: &str) {
    b.push_str("<table class=\"src\"><tbody>");
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let _ = write!(
            b,
            "<tr id=\"src-{file}-L{n}\"><td class=\"ln\"><a href=\"#src-{file}-L{n}\">{n}</a></td>\
             <td class=\"code\">{}</td></tr>",
            esc_code(line)
        );
    }
    b.push_str("</tbody></table>");
}

fn files_section(b: &mut String, def: &Definition) {
    b.push_str(
        "<h2 id=\"files\">Files</h2><table><thead><tr><th>Path</th><th>Size</th><th>BLAKE3</th>\
         </tr></thead><tbody>",
    );
    let manifest = task_defs::identity::FileDigest::of(MANIFEST_FILE, def.manifest_text.as_bytes());
    for d in std::iter::once(&manifest).chain(&def.digests) {
        let _ = write!(
            b,
            "<tr><td><code>{}</code></td><td>{}</td><td><code class=\"id\">{}</code></td></tr>",
            esc(&d.path),
            d.size,
            esc(&d.blake3)
        );
    }
    b.push_str("</tbody></table><h2 id=\"source\">Source</h2>");
    for (i, (path, bytes)) in texts(def).into_iter().enumerate() {
        match diff::as_text(bytes) {
            Some(t) if t.len() <= MAX_INLINE_TEXT => {
                let _ = write!(
                    b,
                    "<details open id=\"src-{i}\"><summary><code>{}</code> ({} lines)</summary>",
                    esc(path),
                    t.lines().count()
                );
                source_table(b, i, t);
                b.push_str("</details>");
            }
            Some(_) => {
                let _ = write!(
                    b,
                    "<p id=\"src-{i}\"><code>{}</code>: text too large to show inline; download the bundle.</p>",
                    esc(path)
                );
            }
            None => {
                let _ = write!(
                    b,
                    "<p id=\"src-{i}\"><code>{}</code>: binary, {} bytes, blake3 <code class=\"id\">{}</code>.</p>",
                    esc(path),
                    bytes.len(),
                    esc(&blake3::hash(bytes).to_hex())
                );
            }
        }
    }
}

/// A warning listing every invisible or bidirectional character in the definition's text
/// files, each linked to its line in the source view.
fn unicode_banner(b: &mut String, def: &Definition) {
    const SHOWN: usize = 50;
    let mut found = Vec::new();
    for (i, (path, bytes)) in texts(def).into_iter().enumerate() {
        if let Some(t) = diff::as_text(bytes) {
            for s in diff::suspicious_chars(t) {
                found.push((i, path, s));
            }
        }
    }
    if found.is_empty() {
        return;
    }
    let files: std::collections::BTreeSet<&str> = found.iter().map(|(_, p, _)| *p).collect();
    let _ = write!(
        b,
        "<div class=\"warn\" id=\"unicode-warning\"><b>Warning: invisible or bidirectional \
         Unicode.</b> {} character{} in {} file{} can make the source read differently from \
         what it does (Trojan Source). Each is marked <mark class=\"uni\">[U+…]</mark> below.<ul>",
        found.len(),
        if found.len() == 1 { "" } else { "s" },
        files.len(),
        if files.len() == 1 { "" } else { "s" },
    );
    for (i, path, s) in found.iter().take(SHOWN) {
        let _ = write!(
            b,
            "<li><a href=\"#src-{i}-L{line}\"><code>{}:{line}:{}</code></a> {}</li>",
            esc(path),
            s.column,
            esc(&s.label()),
            line = s.line
        );
    }
    if found.len() > SHOWN {
        let _ = write!(b, "<li>and {} more</li>", found.len() - SHOWN);
    }
    b.push_str("</ul></div>");
}

fn diff_table(b: &mut String, file: usize, hunks: &[diff::Hunk]) {
    b.push_str("<table class=\"diff\"><tbody>");
    for h in hunks {
        let _ = write!(
            b,
            "<tr class=\"hunk\"><td class=\"ln\"></td><td class=\"ln\"></td><td class=\"code\">{}</td></tr>",
            esc(&h.header)
        );
        for l in &h.lines {
            let class = match l.mark {
                '-' => "del",
                '+' => "add",
                _ => "ctx",
            };
            let anchor = match (l.mark, l.old, l.new) {
                ('-', Some(o), _) => format!(" id=\"diff-{file}-O{o}\""),
                (_, _, Some(n)) => format!(" id=\"diff-{file}-N{n}\""),
                _ => String::new(),
            };
            let num = |n: Option<usize>| n.map_or(String::new(), |n| n.to_string());
            let _ = write!(
                b,
                "<tr class=\"{class}\"{anchor}><td class=\"ln\">{}</td><td class=\"ln\">{}</td>\
                 <td class=\"code\">{}{}</td></tr>",
                num(l.old),
                num(l.new),
                l.mark,
                esc_code(&l.text)
            );
        }
    }
    b.push_str("</tbody></table>");
}

fn diff_section(
    b: &mut String,
    s: &DefinitionSummary,
    def: &Definition,
    prev: Option<(&DefinitionSummary, &Definition)>,
) {
    b.push_str("<h2>Changes since the last approved version</h2>");
    let Some((ps, pd)) = prev else {
        let _ = write!(
            b,
            "<p id=\"no-previous\">No earlier approved version of <code>{}</code>: review everything.</p>",
            esc(&def.manifest.name)
        );
        return;
    };
    let _ = write!(
        b,
        "<p>Compared with {} {} <code class=\"id\">{}</code>.</p>",
        def_link(&ps.id, &ps.name),
        esc(&ps.version),
        esc(&ps.id.to_string())
    );
    if ps.author == s.author {
        let _ = write!(
            b,
            "<p id=\"author-same\">Author key unchanged: <code class=\"id\">{}</code>.</p>",
            esc(&s.author.to_string())
        );
    } else {
        let _ = write!(
            b,
            "<div class=\"warn\" id=\"author-changed\"><b>The author key changed.</b> {} {} was \
             published by <code class=\"id\">{}</code>; this version by <code class=\"id\">{}</code>. \
             A new key may be a new owner: check why before trusting the name.</div>",
            esc(&ps.name),
            esc(&ps.version),
            esc(&ps.author.to_string()),
            esc(&s.author.to_string())
        );
    }
    let (old_code, new_code) = (diff::code_identity(pd), diff::code_identity(def));
    let _ = write!(
        b,
        "<table id=\"code-change\"><tbody><tr><th>Code</th><td><code class=\"id\">{}</code></td>\
         <td>→</td><td><code class=\"id\">{}</code></td><td>{}</td></tr></tbody></table>",
        esc(&old_code),
        esc(&new_code),
        if old_code == new_code {
            "unchanged"
        } else {
            "<b>changed</b>"
        }
    );
    let fp = diff::footprint_diff(pd, def);
    b.push_str("<h3 id=\"capability-diff\">Imports and capabilities</h3>");
    if fp.added.is_empty() && fp.removed.is_empty() {
        b.push_str("<p id=\"capabilities-same\">Unchanged.</p>");
    } else {
        b.push_str("<table class=\"diff\" id=\"capabilities\"><tbody>");
        for l in &fp.removed {
            let _ = write!(
                b,
                "<tr class=\"del\"><td class=\"code\">-{}</td></tr>",
                esc(l)
            );
        }
        for l in &fp.added {
            let _ = write!(
                b,
                "<tr class=\"add\"><td class=\"code\">+{}</td></tr>",
                esc(l)
            );
        }
        b.push_str("</tbody></table>");
    }
    let changes = diff::file_changes(pd, def);
    if changes.is_empty() {
        b.push_str("<p>No file differs.</p>");
    }
    for (k, ch) in changes.iter().enumerate() {
        let digest = |d: &task_defs::identity::FileDigest| {
            format!(
                "<code class=\"id\">blake3:{}</code> ({} bytes)",
                esc(&d.blake3),
                d.size
            )
        };
        let _ = match ch {
            FileChange::Added(d) => write!(
                b,
                "<h3 id=\"change-{k}\"><code>{}</code> added</h3><p>new {}</p>",
                esc(&d.path),
                digest(d)
            ),
            FileChange::Removed(d) => write!(
                b,
                "<h3 id=\"change-{k}\"><code>{}</code> removed</h3><p>was {}</p>",
                esc(&d.path),
                digest(d)
            ),
            FileChange::Modified { old, new } => write!(
                b,
                "<h3 id=\"change-{k}\"><code>{}</code> modified</h3><p class=\"digests\">{} → {}</p>",
                esc(&new.path),
                digest(old),
                digest(new)
            ),
        };
        let old = diff::file_bytes(pd, ch.path()).map(diff::as_text);
        let new = diff::file_bytes(def, ch.path()).map(diff::as_text);
        let (old_text, new_text) = match (old, new) {
            (Some(None), _) | (_, Some(None)) => {
                b.push_str(
                    "<p class=\"note\">Binary file: the digests above are the change; \
                     rebuild it from the source to check it matches.</p>",
                );
                continue;
            }
            (o, n) => (o.flatten().unwrap_or(""), n.flatten().unwrap_or("")),
        };
        if old_text.len() > MAX_INLINE_TEXT || new_text.len() > MAX_INLINE_TEXT {
            b.push_str("<p class=\"muted\">Too large to diff inline.</p>");
            continue;
        }
        diff_table(b, k, &diff::unified(old_text, new_text));
    }
}

/// Flags shown next to one reviewer statement on a definition's page: the single place
/// where the verifier's judgements about a statement are rendered (the server's own
/// verifier, which applies the same rules as every client's: verdicts by signed time, stale
/// statements never count, the author's own approvals never count).
pub fn statement_flags(report: &StatusReport, statement: &ReviewRecord) -> Vec<String> {
    let mut flags = Vec::new();
    if !statement.on_roster {
        flags.push("not a reviewer on this server's roster".to_string());
    }
    if let Some(st) = report.stale.iter().find(|st| st.index == statement.index) {
        flags.push(format!(
            "stale: signed before this reviewer's verdict of {}, so it never counts",
            utc(st.outranked_by)
        ));
    }
    match report.votes.iter().find(|v| v.index == statement.index) {
        Some(v) if v.self_approval => {
            flags.push("the author's own key: does not count towards k".to_string())
        }
        Some(_) => flags.push("this reviewer's verdict".to_string()),
        None => {}
    }
    if statement.action == ReviewAction::Approve
        && report.authors.contains(&statement.reviewer)
        && !flags.iter().any(|f| f.starts_with("the author's own key"))
    {
        flags.push("signed by an author of this name: never counts towards k".to_string());
    }
    flags
}

fn statements_section(b: &mut String, report: &StatusReport, reviews: &[ReviewRecord]) {
    b.push_str("<h2 id=\"statements\">Reviewer statements</h2>");
    if reviews.is_empty() {
        b.push_str("<p class=\"muted\" id=\"no-statements\">None yet.</p>");
        return;
    }
    b.push_str(
        "<table id=\"statement-list\"><thead><tr><th>Signed</th><th>Reviewer</th><th>Action</th>\
         <th>Reason</th><th>Logged</th><th>Notes</th></tr></thead><tbody>",
    );
    let now = unix_now();
    for r in reviews {
        let flags = statement_flags(report, r);
        let _ = write!(
            b,
            "<tr><td class=\"signed\">{} <span class=\"muted\">({} ago)</span></td><td>{}</td>\
             <td class=\"{}\">{}</td><td>{}</td><td>entry {}, {}</td><td>{}</td></tr>",
            utc(r.time),
            age(now.saturating_sub(r.time)),
            reviewer(r),
            action_class(r.action),
            r.action.as_str(),
            esc(&r.reason),
            r.index,
            utc(r.logged_at),
            esc(&flags.join("; "))
        );
    }
    b.push_str("</tbody></table>");
}

fn action_class(a: ReviewAction) -> &'static str {
    match a {
        ReviewAction::Approve => "approved",
        ReviewAction::Reject => "rejected",
        ReviewAction::Revoke => "revoked",
    }
}

fn reviews_table(b: &mut String, reviews: &[ReviewRecord], with_definition: bool) {
    b.push_str("<table><thead><tr><th>Entry</th>");
    if with_definition {
        b.push_str("<th>Definition</th>");
    }
    b.push_str(
        "<th>Reviewer</th><th>Action</th><th>Reason</th><th>Signed</th></tr></thead><tbody>",
    );
    for r in reviews {
        let _ = write!(b, "<tr><td>{}</td>", r.index);
        if with_definition {
            let _ = write!(
                b,
                "<td>{}</td>",
                def_link(&r.definition, &r.definition.to_string())
            );
        }
        let _ = write!(
            b,
            "<td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            reviewer(r),
            action_class(r.action),
            r.action.as_str(),
            esc(&r.reason),
            utc(r.time)
        );
    }
    b.push_str("</tbody></table>");
}

/// The review page of one definition.
pub fn definition_page(
    registry: &Registry,
    id: &DefinitionId,
    base_url: &str,
) -> Result<String, RequestError> {
    let s = registry.summary_of(id)?;
    let (_, def) = registry.bundle(id)?;
    let prev = match registry.previous_approved(&s)? {
        Some(p) => Some((registry.bundle(&p.id)?.1, p)),
        None => None,
    };
    let reviews = registry.reviews_of(id)?;
    let inclusion = registry.inclusion_status(s.index)?;
    let threshold = registry.settings().threshold;
    let now = unix_now();

    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>{} {}</h1><p><code class=\"id\">{}</code></p>\
         <p id=\"status-summary\">Status (this server's view): {} — {} of {threshold} approvals. \
         Published by <code class=\"id\">{}</code> at {} ({} ago), log entry {}.{}</p>",
        esc(&def.manifest.name),
        esc(&def.manifest.version.to_string()),
        esc(&id.to_string()),
        status_span(s.status),
        s.approvals,
        esc(&s.author.to_string()),
        utc(s.published_at),
        age(now.saturating_sub(s.published_at)),
        s.index,
        s.hidden
            .as_deref()
            .map(|h| format!(
                " <span class=\"muted\">Hidden from the queue: {}.</span>",
                esc(h)
            ))
            .unwrap_or_default()
    );
    if let Some((_, p)) = &prev
        && p.author != s.author
    {
        b.push_str(
            "<div class=\"warn\" id=\"author-changed-top\"><b>The author key changed</b> since \
             the last approved version: see <a href=\"#author-changed\">Changes</a>.</div>",
        );
    }
    let report = registry.status_report(id);
    if !report.authors.is_empty() {
        let keys: Vec<String> = report
            .authors
            .iter()
            .map(|k| format!("<code class=\"id\">{}</code>", esc(&k.to_string())))
            .collect();
        let _ = write!(
            b,
            "<p id=\"authors\">Authors of this name (their approvals never count towards k): {}.</p>",
            keys.join(", ")
        );
    }
    if report.stale_total > 0 {
        let _ = write!(
            b,
            "<p id=\"stale-count\" class=\"muted\">{} stale statement(s) about it: signed before \
             the same reviewer's verdict, logged, never counted.</p>",
            report.stale_total
        );
    }
    unicode_banner(&mut b, &def);
    statements_section(&mut b, &report, &reviews);
    let _ = write!(
        b,
        "<h2 id=\"review\">Review</h2><p>Approving, rejecting and revoking are signed with your \
         reviewer key, so they happen on your machine:</p><pre class=\"cmd\" id=\"approve-cmd\">\
         task-defs review show {id} --registry {url}\n\
         task-defs review approve {id} --registry {url} --key &lt;YOUR_KEY&gt;\n\
         task-defs review reject {id} --registry {url} --key &lt;YOUR_KEY&gt; --reason &quot;...&quot;\n\
         task-defs review revoke {id} --registry {url} --key &lt;YOUR_KEY&gt; --reason &quot;...&quot;</pre>\
         <p>Bundle: <a href=\"/api/v1/definitions/{id}/bundle\">download</a> \
         (check it with <code>task-defs unpack FILE -o DIR --expect {id}</code>).</p>",
        id = esc(&id.to_string()),
        url = esc(base_url)
    );
    b.push_str("<section id=\"diff\">");
    diff_section(&mut b, &s, &def, prev.as_ref().map(|(d, p)| (p, d)));
    b.push_str("</section>");
    let _ = write!(
        b,
        "<h2 id=\"manifest\">Manifest</h2><pre>{}</pre>",
        esc(&summary_text(&def))
    );
    footprint_section(&mut b, &def);
    files_section(&mut b, &def);

    let _ = write!(
        b,
        "<h2 id=\"inclusion\">Transparency log</h2><p>Publication entry {} is {} in the checkpoint \
         of size {} (root <code class=\"id\">{}</code>, signed {} ago): inclusion proof of {} hashes {}.</p>",
        inclusion.index,
        if inclusion.verified {
            "included"
        } else {
            "<b>NOT</b> provably included"
        },
        inclusion.checkpoint.size,
        esc(&inclusion.checkpoint.root.to_string()),
        age(now.saturating_sub(inclusion.checkpoint.time)),
        inclusion.proof.len(),
        if inclusion.verified {
            "<span class=\"approved\">verifies</span>"
        } else {
            "<span class=\"revoked\">does not verify</span>"
        }
    );
    for r in reviews.iter() {
        let inc = registry.inclusion_status(r.index)?;
        let _ = write!(
            b,
            "<p class=\"muted\">Statement entry {}: proof {}.</p>",
            r.index,
            if inc.verified {
                "verifies"
            } else {
                "does NOT verify"
            }
        );
    }
    Ok(page(
        &format!("{} {}", def.manifest.name, def.manifest.version),
        &b,
    ))
}

/// Every revocation, newest first.
pub fn revocations_page(registry: &Registry) -> Result<String, RequestError> {
    let revs = registry.revocations()?;
    let mut b = String::from("<h1>Revocations</h1>");
    if revs.is_empty() {
        b.push_str("<p class=\"muted\">No definition has been revoked.</p>");
    } else {
        reviews_table(&mut b, &revs, true);
    }
    Ok(page("Revocations", &b))
}
