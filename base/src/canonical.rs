//! Canonical JSON: the one writer every signed or hashed document in pinfold goes through.
//!
//! Object members are sorted by the UTF-8 bytes of their names, there is no insignificant
//! whitespace, strings are escaped as serde_json escapes them (only `"`, `\` and control
//! characters; `\u00XX` in lower-case hex for controls without a short form, never
//! non-ASCII), and numbers are integers only: a float has several spellings, so a value
//! holding one has no canonical encoding and is refused. The writer is our own rather than
//! serde_json's `to_vec`, because a `preserve_order` feature switched on anywhere in the
//! dependency graph would silently change member order and with it every identity and
//! signature.

use serde_json::Value;

/// A value that has no canonical encoding: it holds a floating-point number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("float {0}")]
pub struct NotCanonical(pub String);

/// Writes a JSON value canonically (sorted members, no whitespace); refuses floats.
pub fn write_canonical(v: &Value, out: &mut Vec<u8>) -> Result<(), NotCanonical> {
    match v {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write_canonical(v, out)?;
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out)?;
            }
            out.push(b']');
        }
        Value::String(s) => write_string(s, out),
        Value::Number(n) => {
            // Floats have several spellings; only integers are canonical.
            if n.is_f64() {
                return Err(NotCanonical(n.to_string()));
            }
            out.extend_from_slice(n.to_string().as_bytes());
        }
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Null => out.extend_from_slice(b"null"),
    }
    Ok(())
}

/// Appends `s` as a JSON string exactly as serde_json writes it.
fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json escapes only `"`, `\` and control characters, never non-ASCII: one spelling.
    let quoted = Value::String(s.to_owned()).to_string();
    out.extend_from_slice(quoted.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_members_by_bytes_and_refuses_floats() {
        let mut out = Vec::new();
        write_canonical(
            &json!({"b": 1, "a": [true, null, "é\n\u{1}"], "B": {"z": 0, "y": -1}}),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"B":{"y":-1,"z":0},"a":[true,null,"é\n\u0001"],"b":1}"#
        );
        assert_eq!(
            write_canonical(&json!({"x": [1.5]}), &mut Vec::new()),
            Err(NotCanonical("1.5".into()))
        );
    }
}
