//! Tidy: the ARCHITECTURE.md invariants that a machine can check, checked on every test run.
//!
//! - which workspace crates may depend on which (normal dependencies; dev-dependencies are
//!   free), so the layering in ARCHITECTURE.md cannot erode one convenient import at a time;
//! - `unsafe` only in the files allowed to hold it;
//! - every Rust file opens with a `//!` line saying what it is;
//! - the library crates that promise complete docs deny missing docs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support sits in the workspace root")
        .to_path_buf()
}

fn toml_at(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Workspace members: package name → directory.
fn members() -> BTreeMap<String, PathBuf> {
    let root = root();
    let ws = toml_at(&root.join("Cargo.toml"));
    let list = ws["workspace"]["members"]
        .as_array()
        .expect("workspace.members is a list");
    list.iter()
        .map(|m| {
            let dir = root.join(m.as_str().expect("member paths are strings"));
            let pkg = toml_at(&dir.join("Cargo.toml"));
            let name = pkg["package"]["name"]
                .as_str()
                .expect("package.name")
                .to_string();
            (name, dir)
        })
        .collect()
}

/// The workspace crates each crate may depend on (normal dependencies). ARCHITECTURE.md's
/// "Crates and what they may depend on" lists the same table.
const ALLOWED: &[(&str, &[&str])] = &[
    ("pinfold-base", &[]),
    ("pinfold-test-support", &[]),
    ("task-defs", &["pinfold-base"]),
    // The log knows definitions by identity, nothing of the registry that stores it.
    ("pinfold-tlog", &["pinfold-base", "task-defs"]),
    (
        "pinfold-registry",
        &["pinfold-base", "task-defs", "pinfold-tlog"],
    ),
    ("pinfold-net", &["pinfold-base"]),
    (
        "provider",
        &[
            "pinfold-base",
            "pinfold-net",
            "task-defs",
            "pinfold-tlog",
            "pinfold-registry",
        ],
    ),
    // The requestor never links the provider: the demo that needs both is its own crate.
    (
        "requestor",
        &[
            "pinfold-base",
            "pinfold-net",
            "task-defs",
            "pinfold-registry",
        ],
    ),
    (
        "pinfold-demo",
        &[
            "pinfold-base",
            "pinfold-net",
            "task-defs",
            "pinfold-tlog",
            "pinfold-registry",
            "provider",
            "requestor",
        ],
    ),
    // The end-to-end tests drive binaries; their library depends on no workspace crate.
    ("pinfold-e2e", &[]),
];

#[test]
fn crates_depend_only_on_the_crates_the_architecture_allows() {
    let members = members();
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(k, v)| (*k, v.iter().copied().collect()))
        .collect();
    let mut problems = Vec::new();
    for (name, dir) in &members {
        let Some(ok) = allowed.get(name.as_str()) else {
            problems.push(format!(
                "{name}: a new crate; add it to ALLOWED here and to ARCHITECTURE.md"
            ));
            continue;
        };
        let pkg = toml_at(&dir.join("Cargo.toml"));
        for table in ["dependencies", "build-dependencies"] {
            let Some(deps) = pkg.get(table).and_then(|t| t.as_table()) else {
                continue;
            };
            for dep in deps.keys() {
                if members.contains_key(dep) && !ok.contains(dep.as_str()) {
                    problems.push(format!("{name} depends on {dep} ({table})"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "dependencies the architecture does not allow:\n{}",
        problems.join("\n")
    );
}

/// Crates that reach the network, a database or an async runtime.
const IO_CRATES: &[&str] = &[
    "axum",
    "bollard",
    "hyper",
    "hyper-util",
    "libp2p",
    "reqwest",
    "rusqlite",
    "tokio",
    "ureq",
];

#[test]
fn the_format_and_the_log_do_no_network_or_database_io() {
    let members = members();
    let mut problems = Vec::new();
    for name in ["task-defs", "pinfold-tlog"] {
        let pkg = toml_at(&members[name].join("Cargo.toml"));
        let deps = pkg.get("dependencies").and_then(|t| t.as_table());
        for dep in deps.into_iter().flat_map(|d| d.keys()) {
            if IO_CRATES.contains(&dep.as_str()) {
                problems.push(format!("{name} depends on {dep}"));
            }
        }
    }
    // The log is pure: no files and no clock either (callers pass times in).
    for f in rust_files() {
        let r = rel(&f);
        if !r.starts_with("tlog/src/") {
            continue;
        }
        let code = std::fs::read_to_string(&f).unwrap();
        for word in ["std::fs", "std::net", "SystemTime", "Instant::now"] {
            if code.contains(word) {
                problems.push(format!("{r} uses {word}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "I/O where the architecture has none:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_requestor_links_the_registry_client_without_its_server() {
    // The workspace entry turns default features off (a member cannot, when inheriting);
    // members that serve or embed a registry ask for `server` themselves.
    let ws = toml_at(&root().join("Cargo.toml"));
    let entry = &ws["workspace"]["dependencies"]["pinfold-registry"];
    assert_eq!(
        entry.get("default-features").and_then(|v| v.as_bool()),
        Some(false),
        "the workspace must list pinfold-registry with default-features = false: {entry}"
    );
    let pkg = toml_at(&members()["requestor"].join("Cargo.toml"));
    let dep = &pkg["dependencies"]["pinfold-registry"];
    let features: Vec<&str> = dep
        .get("features")
        .and_then(|f| f.as_array())
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str())
        .collect();
    assert!(
        !features.contains(&"server")
            && dep
                .get("default-features")
                .is_none_or(|d| d.as_bool() == Some(false)),
        "the requestor must not build the registry server: {dep}"
    );
}

/// Every `.rs` file of the workspace (and the fuzz crate), without build output.
fn rust_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            let Ok(ty) = e.file_type() else { continue };
            if ty.is_dir() {
                if name == "target" || name.starts_with('.') || name == "corpus" {
                    continue;
                }
                walk(&p, out);
            } else if ty.is_file() && name.ends_with(".rs") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root(), &mut out);
    out.sort();
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root())
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

/// Files allowed to hold `unsafe`: the one function that loads precompiled artifacts.
const UNSAFE_ALLOWED: &[&str] = &["provider/src/wasm/cache.rs"];

/// Whether a line of code (comments already stripped) uses `unsafe` as a keyword or allows it.
fn uses_unsafe(code: &str) -> bool {
    if code.contains("unsafe_code") {
        return true;
    }
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(i) = code[from..].find("unsafe") {
        let at = from + i;
        from = at + "unsafe".len();
        let before = at.checked_sub(1).map(|j| bytes[j]);
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b"_'\"-".contains(&b)) {
            continue;
        }
        let rest = code[from..].trim_start();
        if rest.starts_with('{')
            || ["fn", "impl", "extern", "trait"]
                .iter()
                .any(|k| rest.starts_with(k))
        {
            return true;
        }
    }
    false
}

#[test]
fn unsafe_appears_only_where_allowed() {
    let mut found = Vec::new();
    for path in rust_files() {
        let r = rel(&path);
        if r == "test-support/tests/tidy.rs" {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if uses_unsafe(code) && !UNSAFE_ALLOWED.contains(&r.as_str()) {
                found.push(format!("{r}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "`unsafe` outside {UNSAFE_ALLOWED:?}:\n{}",
        found.join("\n")
    );
    assert!(uses_unsafe("unsafe { x() }") && uses_unsafe("#[allow(unsafe_code)]"));
    assert!(!uses_unsafe(r#"h.runtime = Some("runc-unsafe".into())"#));
    assert!(!uses_unsafe("style-src 'unsafe-inline';"));
}

#[test]
fn every_rust_file_opens_with_a_module_doc_line() {
    let missing: Vec<String> = rust_files()
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(p)
                .map(|t| !t.starts_with("//!"))
                .unwrap_or(false)
        })
        .map(|p| rel(&p))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! line:\n{}",
        missing.join("\n")
    );
}

/// Library crates whose every public item is documented (the provider and the requestor
/// are applications with a library for their binaries and tests, not yet held to it).
const DOCUMENTED: &[&str] = &[
    "pinfold-base",
    "pinfold-test-support",
    "task-defs",
    "pinfold-tlog",
    "pinfold-registry",
    "pinfold-net",
    "pinfold-demo",
];

#[test]
fn documented_library_crates_deny_missing_docs() {
    let members = members();
    let mut missing = Vec::new();
    for name in DOCUMENTED {
        let dir = members
            .get(*name)
            .unwrap_or_else(|| panic!("{name} is not a workspace member"));
        let text = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap_or_default();
        if !text.contains("#![deny(missing_docs)]") {
            missing.push(*name);
        }
    }
    assert!(
        missing.is_empty(),
        "library crates without #![deny(missing_docs)]: {missing:?}"
    );
}
