//! What a definition takes and may use: its param table and limits, for `requestor
//! describe` and for the usage error of a run whose params do not fit; and finding the
//! definition a short identity names.
//!
//! A definition is read from a directory or bundle file, or fetched from a registry by
//! identity (the bundle is unpacked and its identity recomputed here, so a registry
//! cannot describe another definition than the one asked for).

use std::path::Path;
use std::str::FromStr as _;

use task_defs::{Definition, DefinitionId};

/// Shortest identity prefix (hex digits) accepted, so that a typo rarely picks a
/// definition.
pub const MIN_ID_PREFIX: usize = 6;

/// Why a definition could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum DescribeError {
    /// The name is no identity, prefix, directory or bundle, or the prefix matches
    /// nothing or several definitions.
    #[error("{0}")]
    Usage(String),
    /// The registry could not be asked or answered wrongly.
    #[error("registry: {0}")]
    Registry(String),
}

/// The params a definition declares, one per line, ready to print.
pub fn param_table(def: &Definition) -> String {
    let m = &def.manifest;
    if m.params.is_empty() {
        return format!("{} {} takes no params", m.name, m.version);
    }
    let mut rows = vec![[
        "NAME".to_string(),
        "TYPE".to_string(),
        "DEFAULT".to_string(),
        "ALLOWED".to_string(),
        "DESCRIPTION".to_string(),
    ]];
    for (name, p) in &m.params {
        let allowed = match p.ty.as_str() {
            "int" => match (p.min, p.max) {
                (Some(a), Some(b)) => format!("{a}..={b}"),
                (Some(a), None) => format!(">= {a}"),
                (None, Some(b)) => format!("<= {b}"),
                (None, None) => "any".to_string(),
            },
            "enum" => p.allowed.join("|"),
            "string" => format!("<= {} bytes", p.max_len),
            _ => "true|false".to_string(),
        };
        rows.push([
            name.clone(),
            p.ty.as_str().to_string(),
            p.default
                .as_ref()
                .map_or_else(|| "(required)".to_string(), |d| d.to_string()),
            allowed,
            p.description.clone().unwrap_or_default(),
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = format!("params of {} {}:", m.name, m.version);
    for r in &rows {
        out.push_str("\n  ");
        for (i, w) in widths.iter().enumerate() {
            out.push_str(&format!("{:<w$}  ", r[i], w = *w));
        }
        out.push_str(&r[4]);
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
    }
    out
}

/// Everything `requestor describe` prints: identity, runtime, params and limits.
pub fn describe(def: &Definition) -> String {
    let m = &def.manifest;
    let l = &m.limits;
    let mut out = format!(
        "{} {} ({})\n{}\nruntime {}\n\n{}\n\nlimits:\n  memory {} bytes\n  timeout {} ms\n  output {} bytes",
        m.name,
        m.version,
        def.id,
        m.description,
        match m.runtime.kind() {
            task_defs::RuntimeKind::Wasm => "wasm",
            task_defs::RuntimeKind::Docker => "docker",
        },
        param_table(def),
        l.memory,
        l.timeout_ms,
        l.output
    );
    for (what, v) in [
        ("fuel", l.fuel),
        ("pids", l.pids),
        ("millicpus", l.millicpus),
    ] {
        if let Some(v) = v {
            out.push_str(&format!("\n  {what} {v}"));
        }
    }
    let c = &m.capabilities;
    if !c.secrets.is_empty() {
        out.push_str(&format!("\nsecrets: {}", c.secrets.join(", ")));
    }
    out
}

/// The same facts as JSON.
pub fn describe_json(def: &Definition) -> serde_json::Value {
    let m = &def.manifest;
    let params: serde_json::Map<String, serde_json::Value> = m
        .params
        .iter()
        .map(|(k, p)| {
            (
                k.clone(),
                serde_json::json!({
                    "type": p.ty.as_str(),
                    "default": p.default.as_ref().map(|d| d.to_string()),
                    "required": p.default.is_none(),
                    "allowed": p.allowed,
                    "min": p.min,
                    "max": p.max,
                    "max_len": p.max_len,
                    "description": p.description,
                }),
            )
        })
        .collect();
    let l = &m.limits;
    serde_json::json!({
        "id": def.id.to_string(),
        "name": m.name,
        "version": m.version.to_string(),
        "params": params,
        "limits": {
            "memory": l.memory, "timeout_ms": l.timeout_ms, "output": l.output,
            "fuel": l.fuel, "pids": l.pids, "millicpus": l.millicpus,
        },
        "secrets": m.capabilities.secrets,
    })
}

/// The hex digits of an identity or identity prefix (`blake3:` optional), if that is
/// what `text` looks like.
fn hex_part(text: &str) -> Option<&str> {
    let h = text.strip_prefix("blake3:").unwrap_or(text);
    (!h.is_empty() && h.len() <= 64 && h.bytes().all(|b| b.is_ascii_hexdigit())).then_some(h)
}

/// Resolves a short identity to the one full identity among `known` it starts; the
/// ambiguous and unmatched cases are usage errors naming the candidates. A full identity
/// is returned as it is, known or not.
pub fn resolve_prefix(text: &str, known: &[(String, String)]) -> Result<String, DescribeError> {
    if DefinitionId::from_str(text).is_ok() {
        return Ok(text.to_string());
    }
    let Some(hex) = hex_part(text) else {
        return Err(DescribeError::Usage(format!(
            "{text:?} is neither a definition identity (blake3:…), a directory nor a bundle"
        )));
    };
    if hex.len() < MIN_ID_PREFIX {
        return Err(DescribeError::Usage(format!(
            "identity prefix {text:?} is too short: give at least {MIN_ID_PREFIX} hex digits"
        )));
    }
    let hex = hex.to_ascii_lowercase();
    let mut matches: Vec<&(String, String)> = known
        .iter()
        .filter(|(id, _)| hex_part(id).is_some_and(|h| h.starts_with(&hex)))
        .collect();
    matches.dedup_by(|a, b| a.0 == b.0);
    match matches.as_slice() {
        [] => Err(DescribeError::Usage(format!(
            "no known definition matches {text:?} (known: the registry given with --registry and earlier jobs)"
        ))),
        [one] => Ok(one.0.clone()),
        many => Err(DescribeError::Usage(format!(
            "identity prefix {text:?} is ambiguous: {}",
            many.iter()
                .map(|(id, what)| if what.is_empty() {
                    id.clone()
                } else {
                    format!("{id} ({what})")
                })
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Definitions a registry lists, as (identity, "name version").
pub fn registry_definitions(url: &str) -> Result<Vec<(String, String)>, DescribeError> {
    let client = pinfold_registry::Client::new(url);
    let list = client
        .definitions(None)
        .map_err(|e| DescribeError::Registry(e.to_string()))?;
    Ok(list
        .into_iter()
        .map(|d| (d.id.to_string(), format!("{} {}", d.name, d.version)))
        .collect())
}

/// A definition from a directory, a bundle file, or (by identity or prefix) a registry.
/// `known` are identities to resolve prefixes against besides the registry's own list.
pub fn load(
    target: &str,
    registry: Option<&str>,
    known: &[(String, String)],
) -> Result<Definition, DescribeError> {
    let path = Path::new(target);
    if hex_part(target).is_none() || (!target.starts_with("blake3:") && path.exists()) {
        if path.is_dir() {
            return Definition::load_dir(path)
                .map_err(|e| DescribeError::Usage(format!("{target}: {e}")));
        }
        if path.is_file() {
            return task_defs::bundle::read_file(path)
                .map_err(|e| DescribeError::Usage(format!("{target}: {e}")));
        }
    }
    let Some(url) = registry else {
        return Err(DescribeError::Usage(format!(
            "{target:?} is not a directory or bundle; pass --registry URL (or set PINFOLD_REGISTRY) to look identities up"
        )));
    };
    let mut all = known.to_vec();
    if DefinitionId::from_str(target).is_err() {
        all.extend(registry_definitions(url)?);
    }
    let id = resolve_prefix(target, &all)?;
    let id = DefinitionId::from_str(&id).map_err(|e| DescribeError::Usage(e.to_string()))?;
    let (_, def) = pinfold_registry::Client::new(url)
        .bundle(&id)
        .map_err(|e| DescribeError::Registry(e.to_string()))?;
    Ok(def)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_prefixes_resolve_only_when_unambiguous() {
        let a = format!("blake3:{}", "ab12".repeat(16));
        let b = format!("blake3:ab13{}", "0".repeat(60));
        let known = vec![(a.clone(), "a 1.0.0".into()), (b.clone(), String::new())];
        assert_eq!(resolve_prefix("ab12ab", &known).unwrap(), a);
        assert!(resolve_prefix("blake3:AB13", &known).is_err());
        assert_eq!(resolve_prefix("blake3:ab1300", &known).unwrap(), b);
        let e = resolve_prefix("blake3:ab1", &known)
            .unwrap_err()
            .to_string();
        assert!(e.contains("too short"), "{e}");
        let known2 = vec![
            (a.clone(), "a 1.0.0".into()),
            (format!("blake3:ab12ab{}", "f".repeat(58)), "c 2.0.0".into()),
        ];
        let e = resolve_prefix("ab12ab", &known2).unwrap_err().to_string();
        assert!(
            e.contains("ambiguous") && e.contains("a 1.0.0") && e.contains("c 2.0.0"),
            "{e}"
        );
        assert!(resolve_prefix("ffffff", &known).is_err());
        // A full identity passes even when unknown (the provider decides).
        let full = format!("blake3:{}", "9".repeat(64));
        assert_eq!(resolve_prefix(&full, &[]).unwrap(), full);
    }
}
