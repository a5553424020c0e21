//! Diagnostics: what is wrong with a definition, located by file, line and key.
//!
//! Validation never stops at the first problem: an author fixing a definition wants
//! every reason at once, so validators push [`Diagnostic`]s into a [`Diagnostics`] list.

use std::fmt;

use serde::Serialize;

/// The closest known key to a misspelt one, if any is close enough to be a likely typo
/// (a few edits, or one is a prefix of the other: `maximum` for `max`).
pub fn suggest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(key, k), *k))
        .filter(|(d, k)| {
            *d <= (k.len().max(key.len()) / 3).max(1)
                || (k.len().min(key.len()) >= 3 && (key.starts_with(k) || k.starts_with(key)))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Adds "did you mean" to a serde `deny_unknown_fields` message (`unknown field `x`,
/// expected one of `a`, `b`` or `expected `a` or `b``) when a known key is close, for
/// configuration files (`provider.toml`, `registry.toml`) that serde reads in one go.
pub fn with_suggestion(message: String) -> String {
    let Some(rest) = message
        .rfind("unknown field `")
        .map(|i| &message[i + "unknown field `".len()..])
    else {
        return message;
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message;
    };
    let known: Vec<&str> = expected
        .lines()
        .next()
        .unwrap_or("")
        .split('`')
        .skip(1)
        .step_by(2)
        .collect();
    match suggest(unknown, &known) {
        Some(k) => format!("{} (did you mean `{k}`?)", message.trim_end()),
        None => message,
    }
}

/// Which rule a diagnostic reports. Stable names: tests and scripts match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// The manifest is not valid TOML or does not fit the schema (wrong type, unknown key).
    Syntax,
    /// A required key is missing.
    Missing,
    /// A value is outside what format 1 allows (bad name, bad semver, out-of-range limit).
    Value,
    /// A docker image is not pinned by digest.
    UnpinnedImage,
    /// An `{placeholder}` names no declared param, or a param default does not fit its type.
    Placeholder,
    /// A referenced file is missing, or a path leaves the definition directory.
    Path,
    /// A file in the definition is a symlink, a device, hidden or otherwise not allowed.
    FileType,
    /// The definition is larger than the caps allow.
    TooLarge,
    /// Something that looks like a credential was found.
    Secret,
    /// The wasm module is malformed or not a command module.
    Module,
    /// The wasm module imports something the manifest does not allow.
    Capability,
    /// A bundle is malformed or hostile (traversal, links, duplicates, oversize).
    Bundle,
}

impl Rule {
    /// The stable kebab-case name of the rule.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Syntax => "syntax",
            Rule::Missing => "missing",
            Rule::Value => "value",
            Rule::UnpinnedImage => "unpinned-image",
            Rule::Placeholder => "placeholder",
            Rule::Path => "path",
            Rule::FileType => "file-type",
            Rule::TooLarge => "too-large",
            Rule::Secret => "secret",
            Rule::Module => "module",
            Rule::Capability => "capability",
            Rule::Bundle => "bundle",
        }
    }
}

/// One problem with a definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The rule that was broken.
    pub rule: Rule,
    /// The file the problem is in, relative to the definition root (`taskdef.toml` for the manifest).
    pub file: String,
    /// 1-based line in `file`, when known.
    pub line: Option<usize>,
    /// Dotted manifest key (`limits.memory`), when the problem is about one.
    pub key: Option<String>,
    /// What is wrong, lower-case, no trailing period.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {} [{}]", self.message, self.rule.as_str())
    }
}

/// A list of problems; a definition is valid exactly when this is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Records a problem.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// True when no problem was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Iterates over the problems.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// True when some problem was reported under `rule`.
    pub fn has(&self, rule: Rule) -> bool {
        self.0.iter().any(|d| d.rule == rule)
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Shorthand for a diagnostic about a file rather than a manifest key.
pub(crate) fn file_diag(rule: Rule, file: &str, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        rule,
        file: file.to_string(),
        line: None,
        key: None,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_messages_get_a_suggestion_when_one_is_close() {
        let m = "unknown field `memroy_bytes`, expected one of `memory_bytes`, `concurrent_tasks`";
        assert!(with_suggestion(m.into()).ends_with("(did you mean `memory_bytes`?)"));
        let m = "unknown field `colour`, expected `a` or `b`";
        assert_eq!(with_suggestion(m.into()), m);
        assert_eq!(suggest("maximum", &["max", "min"]), Some("max"));
    }
}
