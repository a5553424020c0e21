//! Every schema problem of a manifest at once, with a suggestion for each misspelt key.
//!
//! Serde stops at the first problem (`deny_unknown_fields` reports one unknown key, a
//! wrong type ends the parse), so an author fixing a manifest met its mistakes one run at
//! a time. When serde refuses a manifest that is valid TOML, this pass walks it against the
//! same raw schema key by key: each unknown key gets "did you mean", each value that does
//! not fit gets its own diagnostic, each missing required key too. The raw structs stay the
//! single definition of the schema: values are checked by deserialising them into those
//! structs one key at a time, never by a second copy of the types.

use serde::de::DeserializeOwned;

use super::{ManifestDiags, RawCapabilities, RawIo, RawLimits, RawParam, RawRuntime, lower_first};
use crate::diag::Rule;

/// Top-level keys, and the ones a manifest must have.
const TOP: &[&str] = &[
    "format",
    "name",
    "version",
    "description",
    "license",
    "source",
    "authors",
    "runtime",
    "params",
    "limits",
    "io",
    "capabilities",
];
const TOP_REQUIRED: &[&str] = &[
    "format",
    "name",
    "version",
    "description",
    "license",
    "runtime",
];

const RUNTIME: &[&str] = &[
    "kind",
    "module",
    "image",
    "user",
    "entrypoint",
    "workdir",
    "isolation",
    "args",
];
const PARAM: &[&str] = &[
    "type",
    "allowed",
    "default",
    "min",
    "max",
    "max_len",
    "description",
];
const LIMITS: &[&str] = &["memory", "timeout", "output", "fuel", "pids", "cpus"];
const IO: &[&str] = &["input", "output"];
const CAPABILITIES: &[&str] = &["network", "deterministic", "env", "secrets", "wasi"];

use crate::diag::suggest;

fn unknown_key(key: &str, known: &[&str]) -> String {
    match suggest(key, known) {
        Some(k) => format!("unknown key `{key}` (did you mean `{k}`?)"),
        None => format!("unknown key `{key}` (expected one of {})", known.join(", ")),
    }
}

/// Serde's message for a value, without the trailing period and with a lower-case start.
fn message(e: &toml::de::Error) -> String {
    lower_first(e.message().trim().trim_end_matches('.'))
}

fn fits<T: DeserializeOwned>(t: toml::Table) -> Result<(), String> {
    toml::Value::Table(t)
        .try_into::<T>()
        .map(|_| ())
        .map_err(|e| message(&e))
}

/// Checks one table against its raw struct `T`: unknown keys, then each known key on its
/// own (with the `required` keys beside it, so a struct with a required field can be
/// built), then the required keys themselves.
fn section<T: DeserializeOwned>(
    d: &mut ManifestDiags<'_>,
    path: &[&str],
    table: &toml::Table,
    known: &[&str],
    required: &[&str],
) {
    let base: toml::Table = table
        .iter()
        .filter(|(k, _)| required.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in table {
        let mut p = path.to_vec();
        p.push(k.as_str());
        if !known.contains(&k.as_str()) {
            d.at(Rule::Syntax, &p, unknown_key(k, known));
            continue;
        }
        if required.contains(&k.as_str()) {
            continue;
        }
        let mut one = base.clone();
        one.insert(k.clone(), v.clone());
        if let Err(m) = fits::<T>(one)
            && !m.starts_with("missing field")
        {
            d.at(Rule::Syntax, &p, m);
        }
    }
    for r in required {
        match table.get(*r) {
            None => {
                d.at(Rule::Missing, path, format!("missing field `{r}`"));
            }
            Some(v) => {
                let mut only = toml::Table::new();
                only.insert((*r).to_string(), v.clone());
                if let Err(m) = fits::<T>(only) {
                    let mut p = path.to_vec();
                    p.push(r);
                    d.at(Rule::Syntax, &p, m);
                }
            }
        }
    }
}

fn type_name(v: &toml::Value) -> &'static str {
    v.type_str()
}

/// Reports every schema problem of `src` (valid TOML that serde refused); returns whether
/// it found any, so the caller can fall back to serde's own message if not.
pub(super) fn problems(src: &str, d: &mut ManifestDiags<'_>) -> bool {
    let Ok(top) = src.parse::<toml::Table>() else {
        return false;
    };
    let before = d.out.len();
    for (k, v) in &top {
        let expected = match k.as_str() {
            "format" => "integer",
            "name" | "version" | "description" | "license" | "source" => "string",
            "authors" => "array",
            "runtime" | "params" | "limits" | "io" | "capabilities" => "table",
            other => {
                d.at(Rule::Syntax, &[other], unknown_key(other, TOP));
                continue;
            }
        };
        if type_name(v) != expected {
            d.at(
                Rule::Syntax,
                &[k.as_str()],
                format!(
                    "invalid type: found {} {}, expected {} {expected}",
                    article(type_name(v)),
                    type_name(v),
                    article(expected)
                ),
            );
            continue;
        }
        match (k.as_str(), v) {
            ("authors", toml::Value::Array(a)) if a.iter().any(|x| !x.is_str()) => {
                d.at(Rule::Syntax, &[k.as_str()], "expected an array of strings");
            }
            ("runtime", toml::Value::Table(t)) => {
                section::<RawRuntime>(d, &["runtime"], t, RUNTIME, &["kind"]);
            }
            ("limits", toml::Value::Table(t)) => {
                section::<RawLimits>(d, &["limits"], t, LIMITS, &[])
            }
            ("io", toml::Value::Table(t)) => section::<RawIo>(d, &["io"], t, IO, &[]),
            ("capabilities", toml::Value::Table(t)) => {
                section::<RawCapabilities>(d, &["capabilities"], t, CAPABILITIES, &[]);
            }
            ("params", toml::Value::Table(t)) => {
                for (name, p) in t {
                    match p {
                        toml::Value::Table(pt) => {
                            section::<RawParam>(
                                d,
                                &["params", name.as_str()],
                                pt,
                                PARAM,
                                &["type"],
                            );
                        }
                        other => d.at(
                            Rule::Syntax,
                            &["params", name.as_str()],
                            format!(
                                "invalid type: found {} {}, expected a table",
                                article(type_name(other)),
                                type_name(other)
                            ),
                        ),
                    }
                }
            }
            _ => {}
        }
    }
    for r in TOP_REQUIRED {
        if !top.contains_key(*r) {
            d.at(Rule::Missing, &[], format!("missing field `{r}`"));
        }
    }
    d.out.len() > before
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_not_unrelated_words() {
        assert_eq!(suggest("memroy", LIMITS), Some("memory"));
        assert_eq!(suggest("timout", LIMITS), Some("timeout"));
        assert_eq!(suggest("entrypoint", RUNTIME), Some("entrypoint"));
        assert_eq!(suggest("maximum", PARAM), Some("max"));
        assert_eq!(suggest("colour", LIMITS), None);
    }
}
