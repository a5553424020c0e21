//! Line diffs between two definitions, for reviewers comparing a version with the last
//! approved one.
//!
//! A longest-common-subsequence diff over lines, after trimming the common prefix and
//! suffix (which is most of any small edit). The quadratic table is capped at
//! [`MAX_DIFF_CELLS`]; beyond that the middle is shown as removed-then-added, which is still
//! a correct diff, only not a minimal one, so a hostile file cannot make the page expensive.

use crate::definition::Definition;
use crate::identity::FileDigest;
use crate::manifest::MANIFEST_FILE;

/// Most cells of the LCS table (old lines × new lines after trimming).
pub const MAX_DIFF_CELLS: usize = 4_000_000;
/// Lines of context around each change.
pub const CONTEXT: usize = 3;

/// One line of a diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// In both.
    Same(&'a str),
    /// Only in the old text.
    Removed(&'a str),
    /// Only in the new text.
    Added(&'a str),
}

/// Diffs two texts line by line.
pub fn lines<'a>(old: &'a str, new: &'a str) -> Vec<Line<'a>> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (am, bm) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut out: Vec<Line<'a>> = a[..prefix].iter().map(|l| Line::Same(l)).collect();
    if (am.len() + 1).saturating_mul(bm.len() + 1) > MAX_DIFF_CELLS {
        out.extend(am.iter().map(|l| Line::Removed(l)));
        out.extend(bm.iter().map(|l| Line::Added(l)));
    } else {
        out.extend(lcs(am, bm));
    }
    out.extend(a[a.len() - suffix..].iter().map(|l| Line::Same(l)));
    out
}

fn lcs<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<Line<'a>> {
    let (n, m) = (a.len(), b.len());
    // t[i][j] = LCS length of a[i..] and b[j..].
    let w = m + 1;
    let mut t = vec![0u32; (n + 1) * w];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            t[i * w + j] = if a[i] == b[j] {
                t[(i + 1) * w + j + 1] + 1
            } else {
                t[(i + 1) * w + j].max(t[i * w + j + 1])
            };
        }
    }
    let mut out = Vec::with_capacity(n + m);
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push(Line::Same(a[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || t[i * w + j + 1] >= t[(i + 1) * w + j]) {
            out.push(Line::Added(b[j]));
            j += 1;
        } else {
            out.push(Line::Removed(a[i]));
            i += 1;
        }
    }
    out
}

/// A run of diff lines around changes, with the 1-based line numbers it starts at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hunk<'a> {
    /// First old line shown.
    pub old_start: usize,
    /// First new line shown.
    pub new_start: usize,
    /// The lines.
    pub lines: Vec<Line<'a>>,
}

/// Groups a diff into hunks with [`CONTEXT`] lines of context; empty when nothing changed.
pub fn hunks<'a>(diff: &[Line<'a>]) -> Vec<Hunk<'a>> {
    let changed: Vec<usize> = diff
        .iter()
        .enumerate()
        .filter(|(_, l)| !matches!(l, Line::Same(_)))
        .map(|(i, _)| i)
        .collect();
    let mut out = Vec::new();
    let mut k = 0;
    while k < changed.len() {
        let start = changed[k].saturating_sub(CONTEXT);
        let mut end = (changed[k] + CONTEXT + 1).min(diff.len());
        k += 1;
        while k < changed.len() && changed[k] <= end + CONTEXT {
            end = (changed[k] + CONTEXT + 1).min(diff.len());
            k += 1;
        }
        let (mut old_line, mut new_line) = (1, 1);
        for l in &diff[..start] {
            match l {
                Line::Same(_) => {
                    old_line += 1;
                    new_line += 1;
                }
                Line::Removed(_) => old_line += 1,
                Line::Added(_) => new_line += 1,
            }
        }
        out.push(Hunk {
            old_start: old_line,
            new_start: new_line,
            lines: diff[start..end].to_vec(),
        });
    }
    out
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
