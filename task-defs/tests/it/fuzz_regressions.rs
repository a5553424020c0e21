//! Regression tests for what the fuzz targets (`fuzz/`) found: each holds the input that
//! showed the bug, inline, and is named after what it guards.

use task_defs::Rule;

use crate::harness::{Dir, assert_problem};

/// Found by the `manifest` target's re-spelling property (a manifest that validates must
/// still validate, with the same identity, once `toml` writes it out again): the
/// credential scan read only the manifest's text, so a credential written with TOML
/// escapes passed it, although it means exactly the value that the plain spelling is
/// refused for. Validity depended on spelling, not meaning.
#[test]
fn credentials_spelled_with_toml_escapes_are_refused_like_plain_ones() {
    let plain = Dir::wasm();
    plain.edit(
        "description = \"Does nothing, deterministically\"",
        "description = \"key AKIAABCDEFGHIJKLMNOP here\"",
    );
    let escaped = Dir::wasm();
    escaped.edit(
        "description = \"Does nothing, deterministically\"",
        r#"description = "key \u0041KIAABCDEFGHIJKLMNOP here""#,
    );
    for d in [&plain, &escaped] {
        assert_problem(&d.problems(), Rule::Secret, None, "AWS access key id");
    }

    // The same for an argument, with the long `\U` escape.
    let arg = Dir::wasm();
    let text = arg.manifest();
    let args_line = text
        .lines()
        .find(|l| l.starts_with("args = ["))
        .expect("the fixture has args");
    arg.edit(
        args_line,
        r#"args = ["{count}", "--token=\U00000067hp_abcdefghijklmnopqrstuvwxyz0123456789"]"#,
    );
    assert_problem(&arg.problems(), Rule::Secret, None, "GitHub token");
}
