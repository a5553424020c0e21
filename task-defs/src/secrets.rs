//! Scanning a definition for credentials that must never be stored in it.
//!
//! Definitions are public and immutable once published, so a leaked key would leak
//! forever. The patterns are high-signal shapes (PEM private keys, cloud and forge tokens)
//! and deliberately not entropy heuristics, which would flag every wasm module.

use std::sync::LazyLock;

use regex::bytes::Regex;

/// A credential-looking match: what kind, and the byte offset where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretHit {
    /// Human name of the pattern (`PEM private key`).
    pub kind: &'static str,
    /// Byte offset of the match in the scanned data.
    pub offset: usize,
}

static PATTERNS: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    [
        ("PEM private key", r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
        ("PuTTY private key", r"PuTTY-User-Key-File-[0-9]+:"),
        ("AWS access key id", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
        ("GitHub token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})"),
        ("GitLab token", r"\bglpat-[A-Za-z0-9_\-]{20,}"),
        ("Slack token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
        ("Google API key", r"\bAIza[0-9A-Za-z_\-]{35}"),
        ("Stripe secret key", r"\b[sr]k_live_[0-9A-Za-z]{20,}"),
        ("OpenAI-style API key", r"\bsk-(?:proj-)?[A-Za-z0-9_\-]{32,}"),
        ("JSON web token", r"\beyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}"),
        ("pinfold secret key", r"pinfold-secret-key:[A-Za-z0-9+/=]{20,}"),
        (
            "password or token assignment",
            r#"(?i)\b(?:password|passwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token)\s*[:=]\s*["']?[A-Za-z0-9+/_\-]{16,}"#,
        ),
    ]
    .into_iter()
    .map(|(k, p)| (k, Regex::new(p).expect("secret patterns are valid regexes")))
    .collect()
});

/// Finds credential-looking data in `data`; at most one hit per pattern.
pub fn scan(data: &[u8]) -> Vec<SecretHit> {
    PATTERNS
        .iter()
        .filter_map(|(kind, re)| {
            re.find(data).map(|m| SecretHit {
                kind,
                offset: m.start(),
            })
        })
        .collect()
}

/// Does an environment variable name suggest its value is a credential?
pub fn secret_like_env_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    [
        "PASSWORD",
        "PASSWD",
        "SECRET",
        "TOKEN",
        "API_KEY",
        "APIKEY",
        "PRIVATE_KEY",
        "ACCESS_KEY",
        "CREDENTIAL",
    ]
    .iter()
    .any(|w| n.contains(w))
}
