//! Validation: every error path gives a clear, located diagnostic and never panics.

use std::os::unix::fs::symlink;

use task_defs::Rule;

use crate::harness::{Dir, assert_problem};

/// (fixture, replace this, with this, rule, key, message fragment)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    Rule,
    Option<&'static str>,
    &'static str,
);

const MANIFEST_CASES: &[Case] = &[
    (
        "wasm",
        "format = 1",
        "format = 2",
        Rule::Value,
        Some("format"),
        "format 2 is not supported",
    ),
    (
        "wasm",
        "name = \"noop\"",
        "name = \"No_Op\"",
        Rule::Value,
        Some("name"),
        "not a valid name",
    ),
    (
        "wasm",
        "name = \"noop\"",
        "name = \"\"",
        Rule::Value,
        Some("name"),
        "not a valid name",
    ),
    (
        "wasm",
        "0.1.0-alpha.1",
        "1.0",
        Rule::Value,
        Some("version"),
        "not a semantic version",
    ),
    (
        "wasm",
        "description = \"Does nothing, deterministically\"",
        "description = \"  \"",
        Rule::Value,
        Some("description"),
        "must not be empty",
    ),
    (
        "wasm",
        "license = \"CC0-1.0\"\n",
        "",
        Rule::Missing,
        None,
        "missing field `license`",
    ),
    (
        "wasm",
        "format = 1",
        "format = 1\ncolour = \"blue\"",
        Rule::Syntax,
        Some("colour"),
        "unknown key `colour`",
    ),
    (
        "wasm",
        "[limits]",
        "[limits]\nmemroy = \"1MiB\"",
        Rule::Syntax,
        Some("limits.memroy"),
        "unknown key `memroy` (did you mean `memory`?)",
    ),
    (
        "wasm",
        "kind = \"wasm\"",
        "kind = \"jvm\"",
        Rule::Syntax,
        Some("runtime.kind"),
        "unknown variant `jvm`",
    ),
    ("wasm", "format = 1", "format = [", Rule::Syntax, None, ""),
    (
        "wasm",
        "format = 1",
        "format = \"one\"",
        Rule::Syntax,
        Some("format"),
        "invalid type",
    ),
    (
        "wasm",
        "module = \"noop.wasm\"",
        "module = \"missing.wasm\"",
        Rule::Path,
        Some("runtime.module"),
        "is not a file of the definition",
    ),
    (
        "wasm",
        "module = \"noop.wasm\"",
        "module = \"../noop.wasm\"",
        Rule::Path,
        Some("runtime.module"),
        "leaves or re-enters",
    ),
    (
        "wasm",
        "module = \"noop.wasm\"",
        "module = \"/etc/passwd\"",
        Rule::Path,
        Some("runtime.module"),
        "absolute path",
    ),
    (
        "wasm",
        "module = \"noop.wasm\"\n",
        "",
        Rule::Missing,
        Some("runtime"),
        "needs module",
    ),
    (
        "wasm",
        "source = \"src/\"",
        "source = \"docs/\"",
        Rule::Path,
        Some("source"),
        "not a file or directory",
    ),
    (
        "wasm",
        "source = \"src/\"",
        "source = \"http://example.com/x\"",
        Rule::Value,
        Some("source"),
        "must use https",
    ),
    (
        "wasm",
        "\"{count}\"",
        "\"{cnt}\"",
        Rule::Placeholder,
        Some("runtime.args"),
        "{cnt} names no declared param",
    ),
    (
        "wasm",
        "\"{count}\"",
        "\"{count\"",
        Rule::Placeholder,
        Some("runtime.args"),
        "unclosed",
    ),
    (
        "wasm",
        "\"{count}\"",
        "\"{count}}\"",
        Rule::Placeholder,
        Some("runtime.args"),
        "unmatched",
    ),
    (
        "wasm",
        "\"{count}\", ",
        "",
        Rule::Placeholder,
        Some("params.count"),
        "no argument uses it",
    ),
    (
        "wasm",
        "default = 3",
        "default = 11",
        Rule::Placeholder,
        Some("params.count.default"),
        "above the maximum 10",
    ),
    (
        "wasm",
        "default = 3",
        "default = \"3\"",
        Rule::Placeholder,
        Some("params.count.default"),
        "expected a value of type int",
    ),
    (
        "wasm",
        "max = 10",
        "max = -1",
        Rule::Value,
        Some("params.count.max"),
        "below min",
    ),
    (
        "wasm",
        "type = \"int\"",
        "type = \"enum\"",
        Rule::Missing,
        Some("params.count"),
        "non-empty allowed list",
    ),
    (
        "wasm",
        "type = \"int\"",
        "type = \"float\"",
        Rule::Syntax,
        Some("params.count.type"),
        "unknown variant `float`",
    ),
    (
        "wasm",
        "memory = \"1MiB\"",
        "memory = \"5GiB\"",
        Rule::Value,
        Some("limits.memory"),
        "out of range",
    ),
    (
        "wasm",
        "memory = \"1MiB\"",
        "memory = \"12 parsecs\"",
        Rule::Value,
        Some("limits.memory"),
        "unknown size unit",
    ),
    (
        "wasm",
        "memory = \"1MiB\"",
        "memory = 0",
        Rule::Value,
        Some("limits.memory"),
        "out of range",
    ),
    (
        "wasm",
        "timeout = \"250ms\"",
        "timeout = \"25h\"",
        Rule::Value,
        Some("limits.timeout"),
        "out of range",
    ),
    (
        "wasm",
        "timeout = \"250ms\"",
        "timeout = \"250\"",
        Rule::Value,
        Some("limits.timeout"),
        "needs a unit",
    ),
    (
        "wasm",
        "output = \"1KiB\"",
        "output = \"1B\"",
        Rule::Value,
        Some("limits.output"),
        "out of range",
    ),
    (
        "wasm",
        "fuel = 1_000_000",
        "fuel = 0",
        Rule::Value,
        Some("limits.fuel"),
        "out of range",
    ),
    (
        "wasm",
        "fuel = 1_000_000",
        "pids = 10",
        Rule::Value,
        Some("limits.pids"),
        "docker definitions only",
    ),
    (
        "wasm",
        "[capabilities]",
        "[io]\ninput = \"relative\"\n[capabilities]",
        Rule::Value,
        Some("io.input"),
        "absolute normalised path",
    ),
    (
        "wasm",
        "[capabilities]",
        "[io]\ninput = \"/data/../etc\"\n[capabilities]",
        Rule::Value,
        Some("io.input"),
        "absolute normalised path",
    ),
    (
        "wasm",
        "[capabilities]",
        "[io]\noutput = \"/input/out\"\n[capabilities]",
        Rule::Value,
        Some("io.output"),
        "not nested",
    ),
    (
        "wasm",
        "[capabilities]",
        "[io]\ninput = \"/proc/self\"\n[capabilities]",
        Rule::Value,
        Some("io.input"),
        "under /proc",
    ),
    (
        "wasm",
        "TZ = \"UTC\"",
        "\"TZ-X\" = \"UTC\"",
        Rule::Value,
        Some("capabilities.env"),
        "not a valid environment variable name",
    ),
    (
        "wasm",
        "TZ = \"UTC\"",
        "GITHUB_TOKEN = \"x\"",
        Rule::Secret,
        Some("capabilities.env.GITHUB_TOKEN"),
        "looks like a credential",
    ),
    (
        "wasm",
        "TZ = \"UTC\"",
        "API_TOKEN = \"x\"",
        Rule::Secret,
        Some("capabilities.env.API_TOKEN"),
        "declared as a secret",
    ),
    (
        "wasm",
        "secrets = [\"API_TOKEN\"]",
        "secrets = [\"api-token\"]",
        Rule::Value,
        Some("capabilities.secrets"),
        "not a valid secret name",
    ),
    (
        "wasm",
        "secrets = [\"API_TOKEN\"]",
        "secrets = [\"A\", \"A\"]",
        Rule::Value,
        Some("capabilities.secrets"),
        "listed twice",
    ),
    (
        "wasm",
        "description = \"Does nothing, deterministically\"",
        "description = \"key: -----BEGIN RSA PRIVATE KEY-----\"",
        Rule::Secret,
        None,
        "PEM private key",
    ),
    (
        "wasm",
        "TZ = \"UTC\"",
        "TZ = \"AKIAIOSFODNN7EXAMPLE\"",
        Rule::Secret,
        None,
        "AWS access key",
    ),
    (
        "wasm",
        "format = 1",
        "format = 1\nformat = 1",
        Rule::Syntax,
        None,
        "duplicate key",
    ),
    (
        "docker",
        "busybox@sha256:0000000000000000000000000000000000000000000000000000000000000001",
        "busybox:latest",
        Rule::UnpinnedImage,
        Some("runtime.image"),
        "not pinned by digest",
    ),
    (
        "docker",
        "busybox@sha256:0000000000000000000000000000000000000000000000000000000000000001",
        "busybox:1.36@sha256:0000000000000000000000000000000000000000000000000000000000000001",
        Rule::UnpinnedImage,
        Some("runtime.image"),
        "carries a tag",
    ),
    (
        "docker",
        "busybox@sha256:0000000000000000000000000000000000000000000000000000000000000001",
        "busybox@sha256:00",
        Rule::UnpinnedImage,
        Some("runtime.image"),
        "malformed digest",
    ),
    (
        "docker",
        "entrypoint = [\"/bin/wc\"]",
        "entrypoint = [\"wc\"]",
        Rule::Value,
        Some("runtime.entrypoint"),
        "absolute path",
    ),
    (
        "docker",
        "entrypoint = [\"/bin/wc\"]\n",
        "",
        Rule::Missing,
        Some("runtime"),
        "needs entrypoint",
    ),
    (
        "docker",
        "entrypoint = [\"/bin/wc\"]",
        "entrypoint = [\"/bin/wc\"]\nuser = \"nobody\"",
        Rule::Value,
        Some("runtime.user"),
        "numeric uid:gid",
    ),
    (
        "docker",
        "entrypoint = [\"/bin/wc\"]",
        "entrypoint = [\"/bin/wc\"]\nuser = \"1000:0\"",
        Rule::Value,
        Some("runtime.user"),
        "gid 0 (the root group) is refused",
    ),
    (
        "docker",
        "entrypoint = [\"/bin/wc\"]",
        "entrypoint = [\"/bin/wc\"]\nuser = \"0:0\"",
        Rule::Value,
        Some("runtime.user"),
        "gid 0 (the root group) is refused",
    ),
    (
        "docker",
        "entrypoint = [\"/bin/wc\"]",
        "entrypoint = [\"/bin/wc\"]\nuser = \"2147483648:65534\"",
        Rule::Value,
        Some("runtime.user"),
        "below 2^31",
    ),
    (
        "docker",
        "entrypoint = [\"/bin/wc\"]",
        "entrypoint = [\"/bin/wc\"]\nuser = \"65534:2147483648\"",
        Rule::Value,
        Some("runtime.user"),
        "below 2^31",
    ),
    (
        "docker",
        "entrypoint = [\"/bin/wc\"]",
        "entrypoint = [\"/bin/wc\"]\nuser = \"4294967295:65534\"",
        Rule::Value,
        Some("runtime.user"),
        "below 2^31",
    ),
    (
        "docker",
        "entrypoint = [\"/bin/wc\"]",
        "entrypoint = [\"/bin/wc\"]\nuser = \"65534:4294967295\"",
        Rule::Value,
        Some("runtime.user"),
        "below 2^31",
    ),
    (
        "docker",
        "entrypoint = [\"/bin/wc\"]",
        "entrypoint = [\"/bin/wc\"]\nworkdir = \"/proc/1/cwd\"",
        Rule::Value,
        Some("runtime.workdir"),
        "under /proc",
    ),
    (
        "docker",
        "entrypoint = [\"/bin/wc\"]",
        "entrypoint = [\"/bin/wc\"]\nmodule = \"x.wasm\"",
        Rule::Value,
        Some("runtime.module"),
        "wasm definitions only",
    ),
    (
        "docker",
        "memory = \"32MiB\"",
        "memory = \"1MiB\"",
        Rule::Value,
        Some("limits.memory"),
        "out of range",
    ),
    (
        "docker",
        "memory = \"32MiB\"",
        "memory = \"32MiB\"\nfuel = 5",
        Rule::Value,
        Some("limits.fuel"),
        "wasm definitions only",
    ),
    (
        "docker",
        "memory = \"32MiB\"",
        "memory = \"32MiB\"\ncpus = -1.0",
        Rule::Value,
        Some("limits.cpus"),
        "not a positive number",
    ),
];

#[test]
fn every_manifest_error_is_reported_with_rule_key_and_line() {
    for (fixture, from, to, rule, key, needle) in MANIFEST_CASES {
        let d = if *fixture == "wasm" {
            Dir::wasm()
        } else {
            Dir::docker()
        };
        d.edit(from, to);
        let problems = d.problems();
        assert_problem(&problems, *rule, *key, needle);
        for p in problems.iter() {
            assert_eq!(p.file, "taskdef.toml", "{p}");
            // Messages are lower-case and carry no trailing period (CLI convention).
            assert!(!p.message.ends_with('.'), "trailing period: {p}");
            assert!(
                !p.message.starts_with(|c: char| c.is_uppercase()),
                "capitalised: {p}"
            );
        }
        if key.is_some() {
            assert!(
                problems.iter().any(|p| p.line.is_some()),
                "no line for {from:?} -> {to:?}: {problems}"
            );
        }
    }
}

/// The refusals above stop exactly at their bounds: the largest id below 2^31 and uid 0
/// with another group (left to provider policy) are valid definitions.
#[test]
fn docker_user_ids_are_accepted_up_to_the_edge_of_their_range() {
    for user in ["2147483647:2147483647", "0:65534", "1:1"] {
        let d = Dir::docker();
        d.edit(
            "entrypoint = [\"/bin/wc\"]",
            &format!("entrypoint = [\"/bin/wc\"]\nuser = \"{user}\""),
        );
        let def = d.load().unwrap_or_else(|e| panic!("{user}: {e}"));
        let task_defs::RuntimeSpec::Docker { user: got, .. } = def.manifest.runtime.spec else {
            panic!("a docker definition");
        };
        assert_eq!(format!("{}:{}", got.0, got.1), user);
    }
}

#[test]
fn diagnostic_points_at_the_right_line() {
    let d = Dir::wasm();
    d.edit("memory = \"1MiB\"", "memory = \"9GiB\"");
    let line = d
        .manifest()
        .lines()
        .position(|l| l.starts_with("memory"))
        .unwrap()
        + 1;
    let p = d.problems();
    let hit = p
        .iter()
        .find(|p| p.key.as_deref() == Some("limits.memory"))
        .unwrap();
    assert_eq!(hit.line, Some(line));
    assert_eq!(
        hit.to_string(),
        format!("taskdef.toml:{line}: limits.memory: 9GiB is out of range (1MiB to 4GiB) [value]")
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let d = Dir::wasm();
    d.edit("name = \"noop\"", "name = \"BAD\"");
    d.edit("memory = \"1MiB\"", "memory = \"9GiB\"");
    d.edit("\"{count}\"", "\"{nope}\"");
    let p = d.problems();
    assert!(p.len() >= 3, "{p}");
}

#[test]
fn symlinks_in_a_definition_are_refused() {
    let d = Dir::wasm();
    symlink("/etc/passwd", d.path("src/passwd")).unwrap();
    assert_problem(
        &d.problems(),
        Rule::FileType,
        None,
        "symlinks are not allowed",
    );
    let d = Dir::wasm();
    std::fs::remove_file(d.path("noop.wasm")).unwrap();
    symlink(
        format!("{}/vector-wasm/noop.wasm", crate::harness::FIXTURES),
        d.path("noop.wasm"),
    )
    .unwrap();
    let p = d.problems();
    assert_problem(&p, Rule::FileType, None, "symlinks are not allowed");
}

#[test]
fn special_files_and_hidden_files_are_refused() {
    let d = Dir::wasm();
    let fifo = d.path("src/pipe");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    assert_problem(
        &d.problems(),
        Rule::FileType,
        None,
        "only regular files and directories",
    );
    let d = Dir::wasm();
    d.write(".hidden", b"x");
    assert_problem(
        &d.problems(),
        Rule::Path,
        None,
        "hidden files are not allowed",
    );
}

#[test]
fn a_missing_manifest_is_reported() {
    let d = Dir::wasm();
    std::fs::remove_file(d.path("taskdef.toml")).unwrap();
    assert_problem(&d.problems(), Rule::Missing, None, "no taskdef.toml");
}

#[test]
fn secrets_in_files_are_found() {
    for (content, kind) in [
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n",
            "PEM private key",
        ),
        (
            "token: ghp_0123456789abcdefghijklmnopqrstuvwxyzAB",
            "GitHub token",
        ),
        (
            "password = \"hunter2hunter2hunter2\"",
            "password or token assignment",
        ),
    ] {
        let d = Dir::wasm();
        d.write("src/config.txt", content.as_bytes());
        let p = d.problems();
        assert_problem(&p, Rule::Secret, None, kind);
        assert!(p.iter().any(|x| x.file == "src/config.txt"), "{p}");
    }
}

fn wasm_def_with(wat_src: &str) -> Dir {
    let d = Dir::wasm();
    d.write("noop.wasm", &wat::parse_str(wat_src).unwrap());
    d
}

#[test]
fn unknown_imports_are_refused_by_name() {
    let d = wasm_def_with(
        r#"(module (import "env" "launch_missiles" (func)) (func (export "_start")))"#,
    );
    assert_problem(
        &d.problems(),
        Rule::Capability,
        Some("runtime.module"),
        "env::launch_missiles",
    );
    let d = wasm_def_with(
        r#"(module (import "wasi_snapshot_preview1" "fd_teleport" (func)) (func (export "_start")))"#,
    );
    assert_problem(
        &d.problems(),
        Rule::Capability,
        Some("runtime.module"),
        "fd_teleport",
    );
}

#[test]
fn sockets_need_the_network_capability() {
    // WASI 0.2 can create sockets, so its socket interfaces still need the capability.
    let m = r#"(component (import "wasi:sockets/tcp@0.2.0" (instance)))"#;
    let d = wasm_def_with(m);
    assert_problem(
        &d.problems(),
        Rule::Capability,
        Some("runtime.module"),
        "needs capability sockets",
    );
}

#[test]
fn preview1_socket_calls_are_descriptor_calls_not_network_access() {
    // Preview 1 cannot create a socket; `sock_*` only act on descriptors the host hands
    // over (pinfold hands over none), and ordinary toolchains import them.
    let m = r#"(module (import "wasi_snapshot_preview1" "sock_accept" (func (param i32 i32 i32) (result i32))) (func (export "_start")))"#;
    let d = wasm_def_with(m);
    let def = d.load().expect("sock_accept needs no network capability");
    assert!(
        !def.footprint
            .as_ref()
            .unwrap()
            .capabilities
            .contains(&task_defs::footprint::Capability::Sockets)
    );
}

#[test]
fn declared_wasi_capabilities_narrow_the_footprint() {
    let m = r#"(module (import "wasi_snapshot_preview1" "random_get" (func (param i32 i32) (result i32))) (func (export "_start")))"#;
    let d = wasm_def_with(m);
    d.load().expect("random is allowed by default");
    let d = wasm_def_with(m);
    d.edit(
        "deterministic = true",
        "deterministic = true\nwasi = [\"clock\"]",
    );
    assert_problem(
        &d.problems(),
        Rule::Capability,
        None,
        "needs capability random",
    );
    let fp = wasm_def_with(m).load().unwrap().footprint.unwrap();
    assert_eq!(
        fp.capabilities
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>(),
        ["random"]
    );
}

#[test]
fn threads_and_non_commands_and_garbage_are_refused() {
    let d = wasm_def_with(
        r#"(module (import "wasi" "thread-spawn" (func (param i32) (result i32))) (func (export "_start")))"#,
    );
    assert_problem(
        &d.problems(),
        Rule::Capability,
        None,
        "threads are not supported",
    );
    let d = wasm_def_with(r#"(module (func (export "main")))"#);
    assert_problem(&d.problems(), Rule::Capability, None, "exports no _start");
    let d = Dir::wasm();
    d.write("noop.wasm", b"\0asm\x01\0\0\0\x05garbage");
    assert_problem(
        &d.problems(),
        Rule::Module,
        Some("runtime.module"),
        "invalid wasm",
    );
    let d = Dir::wasm();
    d.write("noop.wasm", b"#!/bin/sh\necho not wasm\n");
    assert_problem(
        &d.problems(),
        Rule::Module,
        Some("runtime.module"),
        "invalid wasm",
    );
}

#[test]
fn initial_memory_beyond_the_limit_is_refused() {
    let d = wasm_def_with(r#"(module (memory (export "memory") 32) (func (export "_start")))"#);
    assert_problem(
        &d.problems(),
        Rule::Value,
        Some("limits.memory"),
        "needs 2MiB of memory at start",
    );
}

#[test]
fn params_resolve_and_render() {
    let def = Dir::wasm().load().unwrap();
    let m = &def.manifest;
    let none = Default::default();
    let v = m.resolve_params(&none).unwrap();
    assert_eq!(m.render_args(&v).unwrap(), ["3", "{literal}"]);
    // Escaped braces next to a placeholder, and text around it.
    let sub = task_defs::manifest::substitute("a{{{count}}}b-{count}", &v).unwrap();
    assert_eq!(sub, "a{3}b-3");
    assert_eq!(
        task_defs::manifest::placeholders("{{x}} {count} {count}").unwrap(),
        ["count", "count"]
    );
    let given = [("count".to_string(), "7".to_string())].into();
    assert_eq!(
        m.render_args(&m.resolve_params(&given).unwrap()).unwrap(),
        ["7", "{literal}"]
    );
    for (k, v, err) in [
        ("count", "11", "above the maximum"),
        ("count", "x", "expected an integer"),
        ("other", "1", "not a param"),
    ] {
        let given = [(k.to_string(), v.to_string())].into();
        let e = m.resolve_params(&given).unwrap_err();
        assert!(e.contains(err), "{e}");
    }
}

#[test]
fn caps_on_files_depth_and_paths_are_enforced() {
    use task_defs::definition::{MAX_DEPTH, MAX_FILE_BYTES, MAX_FILES, MAX_PATH_BYTES};
    // A sparse file just over the per-file cap: refused from its size, without reading it.
    let d = Dir::wasm();
    let f = std::fs::File::create(d.path("src/huge.bin")).unwrap();
    f.set_len(MAX_FILE_BYTES + 1).unwrap();
    assert_problem(&d.problems(), Rule::TooLarge, None, "larger than");
    // More files than allowed.
    let d = Dir::wasm();
    for i in 0..=MAX_FILES {
        d.write(&format!("src/many/{i}.txt"), b"");
    }
    assert_problem(
        &d.problems(),
        Rule::TooLarge,
        None,
        &format!("more than {MAX_FILES} files"),
    );
    // Nested deeper than allowed.
    let d = Dir::wasm();
    let deep: Vec<String> = (0..MAX_DEPTH + 1).map(|i| format!("d{i}")).collect();
    d.write(&format!("{}/f.txt", deep.join("/")), b"x");
    assert_problem(&d.problems(), Rule::TooLarge, None, "nested deeper");
    // A path longer than allowed.
    let d = Dir::wasm();
    let long = format!(
        "src/{}/{}",
        "a".repeat(100),
        "b".repeat(MAX_PATH_BYTES - 100)
    );
    d.write(&long, b"x");
    assert_problem(&d.problems(), Rule::Path, None, "longer than");
}

#[test]
fn non_utf8_names_and_oversized_manifests_are_refused() {
    use std::os::unix::ffi::OsStrExt;
    let d = Dir::wasm();
    std::fs::write(
        d.path("src")
            .join(std::ffi::OsStr::from_bytes(b"bad\xffname")),
        b"x",
    )
    .unwrap();
    assert_problem(&d.problems(), Rule::Path, None, "not UTF-8");
    let d = Dir::wasm();
    let mut m = d.manifest();
    m.push_str(&format!(
        "# {}\n",
        "x".repeat(task_defs::manifest::MAX_MANIFEST_BYTES)
    ));
    d.set_manifest(&m);
    assert_problem(&d.problems(), Rule::TooLarge, None, "manifest is");
    let d = Dir::wasm();
    std::fs::write(d.path("taskdef.toml"), b"format = 1\nname = \"\xff\"\n").unwrap();
    assert_problem(&d.problems(), Rule::Syntax, None, "not UTF-8");
}
