//! Sizes, durations and enums in `provider.toml`, spelled as in manifests.
//!
//! A key keeps its unit in its name (`memory_bytes`, `retain_secs`) and a bare integer
//! means that unit, so existing files keep their meaning; a string takes the manifest's
//! units (`"1GiB"`, `"10m"`), parsed by the manifest's own [`parse_size`] and
//! [`parse_duration_ms`] so the two files never disagree on what a unit means.

use serde::Deserialize;
use serde::de::{Deserializer, Error as _};
use task_defs::manifest::{parse_duration_ms, parse_size};

/// An integer in the key's own unit, or a string with a unit.
enum IntOrText {
    Int(u64),
    Text(String),
}

/// Reads one value, turning serde's untagged-enum message (which names internals) into one
/// that says what is accepted.
fn int_or_text<'de, D: Deserializer<'de>>(d: D, examples: &str) -> Result<IntOrText, D::Error> {
    let v = toml::Value::deserialize(d)?;
    match v {
        toml::Value::Integer(i) => u64::try_from(i)
            .map(IntOrText::Int)
            .map_err(|_| D::Error::custom(format!("{i} is negative"))),
        toml::Value::String(s) => Ok(IntOrText::Text(s)),
        other => Err(D::Error::custom(format!(
            "expected an integer or a string like {examples}, found a {}",
            other.type_str()
        ))),
    }
}

/// A size in bytes: `1073741824` or `"1GiB"`.
pub fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match int_or_text(d, "\"64MiB\"")? {
        IntOrText::Int(n) => Ok(n),
        IntOrText::Text(t) => parse_size(&t).map_err(D::Error::custom),
    }
}

/// A duration in milliseconds: `1500` or `"1500ms"`, `"2s"`.
pub fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match int_or_text(d, "\"500ms\" or \"30s\"")? {
        IntOrText::Int(n) => Ok(n),
        IntOrText::Text(t) => parse_duration_ms(&t).map_err(D::Error::custom),
    }
}

/// A duration in whole seconds: `600` or `"10m"`; `"1500ms"` is refused rather than
/// rounded, since the key cannot hold it.
pub fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match int_or_text(d, "\"30s\" or \"10m\"")? {
        IntOrText::Int(n) => Ok(n),
        IntOrText::Text(t) => {
            let ms = parse_duration_ms(&t).map_err(D::Error::custom)?;
            if ms % 1000 != 0 {
                return Err(D::Error::custom(format!(
                    "{t:?} is not a whole number of seconds"
                )));
            }
            Ok(ms / 1000)
        }
    }
}

/// `registry.url`: refused at load time unless it is an http(s) URL, since a URL without a
/// scheme otherwise fails only at the first sync with the HTTP library's "invalid format".
pub fn http_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    if !(s.starts_with("http://") || s.starts_with("https://")) {
        return Err(D::Error::custom(format!(
            "{s:?} is not an http URL: write http://HOST:PORT or https://HOST"
        )));
    }
    Ok(Some(s))
}

/// `executors.docker_isolation`, refused at load time (not only once Docker is enabled)
/// with the allowed values.
pub fn isolation<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<crate::docker::IsolationPolicy>()
        .map_err(D::Error::custom)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct T {
        #[serde(deserialize_with = "super::bytes")]
        b: u64,
        #[serde(deserialize_with = "super::millis")]
        m: u64,
        #[serde(deserialize_with = "super::secs")]
        s: u64,
    }

    fn parse(text: &str) -> Result<T, String> {
        toml::from_str::<T>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn integers_keep_the_key_unit_and_strings_take_manifest_units() {
        let t = parse("b = 4096\nm = 250\ns = 600").unwrap();
        assert_eq!((t.b, t.m, t.s), (4096, 250, 600));
        let t = parse("b = \"1GiB\"\nm = \"2s\"\ns = \"10m\"").unwrap();
        assert_eq!((t.b, t.m, t.s), (1 << 30, 2000, 600));
        let e = parse("b = \"1 parsec\"\nm = 1\ns = 1").unwrap_err();
        assert!(e.contains("unknown size unit"), "{e}");
        let e = parse("b = 1\nm = 1\ns = \"1500ms\"").unwrap_err();
        assert!(e.contains("not a whole number of seconds"), "{e}");
        let e = parse("b = true\nm = 1\ns = 1").unwrap_err();
        assert!(e.contains("expected an integer or a string"), "{e}");
        assert!(!e.contains("untagged"), "{e}");
    }
}
