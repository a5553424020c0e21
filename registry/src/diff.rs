//! What changed between two definitions, for reviewers comparing a version with the last
//! approved one: unified line diffs, the import and capability footprint, module digests,
//! and invisible or bidirectional Unicode that could make source read differently from
//! what it does ("Trojan Source", CVE-2021-42574).
//!
//! Line diffs come from `similar` (Myers) with a deadline, so a hostile pair of files costs
//! bounded time: past [`DIFF_DEADLINE`] the diff is still correct, only less minimal.

use std::collections::BTreeSet;
use std::time::Duration;

use similar::{Algorithm, ChangeTag, TextDiff};

use task_defs::definition::Definition;
use task_defs::identity::FileDigest;
use task_defs::manifest::{MANIFEST_FILE, RuntimeSpec};

/// Lines of context around each change.
pub const CONTEXT: usize = 3;
/// Longest a line diff may search for a minimal answer.
pub const DIFF_DEADLINE: Duration = Duration::from_millis(300);

/// One line of a hunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffLine {
    /// `' '`, `'-'` or `'+'`.
    pub mark: char,
    /// 1-based line number in the old text (context and removed lines).
    pub old: Option<usize>,
    /// 1-based line number in the new text (context and added lines).
    pub new: Option<usize>,
    /// The line without its newline.
    pub text: String,
}

/// A unified-diff hunk: its `@@ -a,b +c,d @@` header and lines, removals before additions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hunk {
    /// The header, with counts, exactly as `diff -u` writes it.
    pub header: String,
    /// The lines.
    pub lines: Vec<DiffLine>,
}

/// The hunks of a unified diff of two texts (empty when they are equal).
pub fn unified(old: &str, new: &str) -> Vec<Hunk> {
    let diff = TextDiff::configure()
        .algorithm(Algorithm::Myers)
        .timeout(DIFF_DEADLINE)
        .diff_lines(old, new);
    let udiff = diff.unified_diff();
    let mut udiff = udiff;
    udiff.context_radius(CONTEXT);
    udiff
        .iter_hunks()
        .map(|h| Hunk {
            header: h.header().to_string(),
            lines: h
                .iter_changes()
                .map(|c| DiffLine {
                    mark: match c.tag() {
                        ChangeTag::Equal => ' ',
                        ChangeTag::Delete => '-',
                        ChangeTag::Insert => '+',
                    },
                    old: c.old_index().map(|i| i + 1),
                    new: c.new_index().map(|i| i + 1),
                    text: c
                        .to_string_lossy()
                        .trim_end_matches(['\n', '\r'])
                        .to_string(),
                })
                .collect(),
        })
        .collect()
}

/// How one file differs between two definitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChange {
    /// Only in the new definition.
    Added(FileDigest),
    /// Only in the old definition.
    Removed(FileDigest),
    /// In both, with different contents.
    Modified {
        /// The old file.
        old: FileDigest,
        /// The new file.
        new: FileDigest,
    },
}

impl FileChange {
    /// The file's path.
    pub fn path(&self) -> &str {
        match self {
            FileChange::Added(d) | FileChange::Removed(d) => &d.path,
            FileChange::Modified { new, .. } => &new.path,
        }
    }
}

/// Whether a file is shown as text: UTF-8 without NUL bytes.
pub fn as_text(bytes: &[u8]) -> Option<&str> {
    if bytes.contains(&0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// The files that differ between `old` and `new`, the manifest (as written) first.
pub fn file_changes(old: &Definition, new: &Definition) -> Vec<FileChange> {
    let mut out = Vec::new();
    if old.manifest_text != new.manifest_text {
        out.push(FileChange::Modified {
            old: FileDigest::of(MANIFEST_FILE, old.manifest_text.as_bytes()),
            new: FileDigest::of(MANIFEST_FILE, new.manifest_text.as_bytes()),
        });
    }
    let mut paths: Vec<&String> = old.files.keys().chain(new.files.keys()).collect();
    paths.sort();
    paths.dedup();
    for p in paths {
        match (old.files.get(p), new.files.get(p)) {
            (Some(a), Some(b)) if a != b => out.push(FileChange::Modified {
                old: FileDigest::of(p, a),
                new: FileDigest::of(p, b),
            }),
            (Some(a), None) => out.push(FileChange::Removed(FileDigest::of(p, a))),
            (None, Some(b)) => out.push(FileChange::Added(FileDigest::of(p, b))),
            _ => {}
        }
    }
    out
}

/// The bytes of a file of a definition, the manifest included.
pub fn file_bytes<'d>(def: &'d Definition, path: &str) -> Option<&'d [u8]> {
    if path == MANIFEST_FILE {
        Some(def.manifest_text.as_bytes())
    } else {
        def.files.get(path).map(|v| v.as_slice())
    }
}

/// What a definition may do, flattened for comparison: each entry is one line a reviewer
/// reads ("import wasi_snapshot_preview1::fd_write (stdio)", "capability network", ...).
pub fn footprint_lines(def: &Definition) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let c = &def.manifest.capabilities;
    if c.network {
        out.insert("manifest: network requested".to_string());
    }
    if !c.deterministic {
        out.insert("manifest: not deterministic".to_string());
    }
    for (k, v) in &c.env {
        out.insert(format!("manifest: env {k}={v}"));
    }
    for s in &c.secrets {
        out.insert(format!("manifest: secret {s}"));
    }
    match &def.manifest.runtime.spec {
        RuntimeSpec::Wasm { .. } => {
            if let Some(fp) = &def.footprint {
                for cap in &fp.capabilities {
                    out.insert(format!("capability {}", cap.as_str()));
                }
                for imp in &fp.imports {
                    out.insert(format!(
                        "import {} ({}, {})",
                        import_name(imp),
                        imp.item,
                        imp.capability.as_str()
                    ));
                }
            }
        }
        RuntimeSpec::Docker {
            image,
            user,
            entrypoint,
            workdir,
            isolation,
        } => {
            out.insert(format!("docker image {image}"));
            out.insert(format!("docker user {}:{}", user.0, user.1));
            out.insert(format!("docker entrypoint {}", entrypoint.join(" ")));
            out.insert(format!("docker workdir {workdir}"));
            out.insert(format!("docker isolation at least {}", isolation.as_str()));
        }
    }
    out
}

/// `module::name` of a core-module import, or the interface of a component import.
pub fn import_name(imp: &task_defs::footprint::Import) -> String {
    if imp.name.is_empty() {
        imp.module.clone()
    } else {
        format!("{}::{}", imp.module, imp.name)
    }
}

/// What the footprint gained and lost from `old` to `new`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FootprintDiff {
    /// Lines only `new` has.
    pub added: Vec<String>,
    /// Lines only `old` has.
    pub removed: Vec<String>,
}

/// The import and capability diff of two definitions.
pub fn footprint_diff(old: &Definition, new: &Definition) -> FootprintDiff {
    let (a, b) = (footprint_lines(old), footprint_lines(new));
    FootprintDiff {
        added: b.difference(&a).cloned().collect(),
        removed: a.difference(&b).cloned().collect(),
    }
}

/// The code a definition runs: its wasm module's digest, or its Docker image.
pub fn code_identity(def: &Definition) -> String {
    match &def.manifest.runtime.spec {
        RuntimeSpec::Wasm { module } => def.digests.iter().find(|d| d.path == *module).map_or_else(
            || format!("{module} (missing)"),
            |d| format!("{module} blake3:{} ({} bytes)", d.blake3, d.size),
        ),
        RuntimeSpec::Docker { image, .. } => format!("docker image {image}"),
    }
}

/// A character that renders invisibly or reorders text, with its code point and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspicious {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The character.
    pub ch: char,
}

impl Suspicious {
    /// `U+202E RIGHT-TO-LEFT OVERRIDE`.
    pub fn label(&self) -> String {
        format!(
            "U+{:04X} {}",
            self.ch as u32,
            char_name(self.ch).unwrap_or("CONTROL")
        )
    }
}

/// The name of a character that can hide or reorder source text, if it is one: bidi
/// embeddings, overrides and isolates, zero-width characters and marks, the byte-order
/// mark, the soft hyphen, invisible operators, tag characters, fillers and C0/C1 controls
/// other than tab, newline and carriage return.
pub fn char_name(c: char) -> Option<&'static str> {
    Some(match c {
        '\u{202A}' => "LEFT-TO-RIGHT EMBEDDING",
        '\u{202B}' => "RIGHT-TO-LEFT EMBEDDING",
        '\u{202C}' => "POP DIRECTIONAL FORMATTING",
        '\u{202D}' => "LEFT-TO-RIGHT OVERRIDE",
        '\u{202E}' => "RIGHT-TO-LEFT OVERRIDE",
        '\u{2066}' => "LEFT-TO-RIGHT ISOLATE",
        '\u{2067}' => "RIGHT-TO-LEFT ISOLATE",
        '\u{2068}' => "FIRST STRONG ISOLATE",
        '\u{2069}' => "POP DIRECTIONAL ISOLATE",
        '\u{200B}' => "ZERO WIDTH SPACE",
        '\u{200C}' => "ZERO WIDTH NON-JOINER",
        '\u{200D}' => "ZERO WIDTH JOINER",
        '\u{200E}' => "LEFT-TO-RIGHT MARK",
        '\u{200F}' => "RIGHT-TO-LEFT MARK",
        '\u{061C}' => "ARABIC LETTER MARK",
        '\u{2060}' => "WORD JOINER",
        '\u{2061}' => "FUNCTION APPLICATION",
        '\u{2062}' => "INVISIBLE TIMES",
        '\u{2063}' => "INVISIBLE SEPARATOR",
        '\u{2064}' => "INVISIBLE PLUS",
        '\u{206A}'..='\u{206F}' => "DEPRECATED FORMAT CHARACTER",
        '\u{FEFF}' => "ZERO WIDTH NO-BREAK SPACE",
        '\u{00AD}' => "SOFT HYPHEN",
        '\u{034F}' => "COMBINING GRAPHEME JOINER",
        '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' => "HANGUL FILLER",
        '\u{17B4}' | '\u{17B5}' => "KHMER INHERENT VOWEL",
        '\u{180E}' => "MONGOLIAN VOWEL SEPARATOR",
        '\u{FFF9}'..='\u{FFFB}' => "INTERLINEAR ANNOTATION",
        '\u{E0000}'..='\u{E007F}' => "TAG CHARACTER",
        '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}' => "VARIATION SELECTOR",
        c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => "CONTROL CHARACTER",
        _ => return None,
    })
}

/// Every suspicious character in `text`, with its position.
pub fn suspicious_chars(text: &str) -> Vec<Suspicious> {
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        for (j, ch) in line.chars().enumerate() {
            if ch != '\r' && char_name(ch).is_some() {
                out.push(Suspicious {
                    line: i + 1,
                    column: j + 1,
                    ch,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hunks_carry_counts_and_put_removals_first() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let new = "a\nb\nc\nD\ne\nf\ng\nh\nI\n";
        let h = unified(old, new);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].header, "@@ -1,8 +1,9 @@");
        let marks: String = h[0].lines.iter().map(|l| l.mark).collect();
        assert_eq!(marks, "   -+    +");
        assert_eq!(h[0].lines[3].old, Some(4));
        assert_eq!(h[0].lines[4].new, Some(4));
        assert!(unified("same\n", "same\n").is_empty());
    }

    #[test]
    fn trojan_source_characters_are_found_and_named() {
        let text =
            "ok\nif (admin) {\u{202E} } \u{2066}// check\u{2069}\nx\u{200B}y\u{E0041}\u{00AD}";
        let found: Vec<(usize, String)> = suspicious_chars(text)
            .iter()
            .map(|s| (s.line, s.label()))
            .collect();
        assert_eq!(
            found,
            vec![
                (2, "U+202E RIGHT-TO-LEFT OVERRIDE".to_string()),
                (2, "U+2066 LEFT-TO-RIGHT ISOLATE".to_string()),
                (2, "U+2069 POP DIRECTIONAL ISOLATE".to_string()),
                (3, "U+200B ZERO WIDTH SPACE".to_string()),
                (3, "U+E0041 TAG CHARACTER".to_string()),
                (3, "U+00AD SOFT HYPHEN".to_string()),
            ]
        );
        assert!(suspicious_chars("plain\tascii\r\nand ünïcödé ✓\n").is_empty());
    }
}
