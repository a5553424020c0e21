//! The second step of parsing: raw TOML values to the typed [`Manifest`], one converter per
//! manifest table, each reporting its problems as diagnostics.
//!
//! [`convert`] runs them in the file's order (top-level keys, `[params]`, `[runtime]`,
//! `[limits]`, `[io]`, `[capabilities]`), so diagnostics come out in that order. `[runtime]`
//! goes after `[params]` because its placeholders refer to them; a docker runtime without
//! a usable image stops the conversion there (nothing after it could be checked against
//! the right defaults).

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use super::*;

/// The typed manifest, or `None` when a problem (already reported) leaves no value to build.
pub(super) fn convert(raw: RawManifest, d: &mut ManifestDiags<'_>) -> Option<Manifest> {
    let version = top_level(&raw, d);
    let params = params(&raw.params, d);
    let spec = runtime(&raw.runtime, &params, d)?;
    let kind = raw.runtime.kind;
    let limits = limits(&raw.limits, kind, d);
    let io = io(&raw.io, d);
    let capabilities = capabilities(&raw.capabilities, kind, d);
    Some(Manifest {
        format: 1,
        name: raw.name,
        version,
        description: raw.description,
        license: raw.license,
        source: raw.source,
        authors: raw.authors,
        runtime: Runtime {
            spec,
            args: raw.runtime.args,
        },
        params,
        limits,
        io,
        capabilities,
    })
}

/// Reports a key that only docker definitions take, when a wasm definition has it.
fn wasm_only(d: &mut ManifestDiags<'_>, kind: RuntimeKind, present: bool, key: &[&str]) {
    if present {
        d.at(
            Rule::Value,
            key,
            format!("applies to docker definitions only, this one is {kind}"),
        );
    }
}

/// The top-level keys: format, name, version, description, license, source, authors.
fn top_level(raw: &RawManifest, d: &mut ManifestDiags<'_>) -> semver::Version {
    if raw.format != 1 {
        d.at(
            Rule::Value,
            &["format"],
            format!(
                "format {} is not supported (this tool reads format 1)",
                raw.format
            ),
        );
    }
    if !valid_name(&raw.name) {
        d.at(
            Rule::Value,
            &["name"],
            format!(
                "{:?} is not a valid name: use 1 to 64 of a-z, 0-9 and -",
                raw.name
            ),
        );
    }
    let version = match semver::Version::from_str(&raw.version) {
        Ok(v) => v,
        Err(e) => {
            d.at(
                Rule::Value,
                &["version"],
                format!("{:?} is not a semantic version: {e}", raw.version),
            );
            semver::Version::new(0, 0, 0)
        }
    };
    check_text(d, &["description"], &raw.description, 4096, true);
    check_text(d, &["license"], &raw.license, 256, true);
    if let Some(src) = &raw.source {
        check_text(d, &["source"], src, 1024, true);
        if src.contains("://") && !src.starts_with("https://") {
            d.at(Rule::Value, &["source"], "a source URL must use https://");
        }
    }
    for a in &raw.authors {
        check_text(d, &["authors"], a, 256, true);
    }

    version
}

/// `[params]`: each param's type, constraints and default.
fn params(raw: &BTreeMap<String, RawParam>, d: &mut ManifestDiags<'_>) -> BTreeMap<String, Param> {
    let mut params = BTreeMap::new();
    for (name, p) in raw {
        let key = ["params", name.as_str()];
        if !valid_param_name(name) {
            d.at(
                Rule::Value,
                &key,
                format!(
                    "{name:?} is not a valid param name: use a-z, 0-9 and _, starting with a letter"
                ),
            );
        }
        let field = |f: &'static str| ["params", name.as_str(), f];
        if p.ty != ParamType::Enum && p.allowed.is_some() {
            d.at(
                Rule::Value,
                &field("allowed"),
                "only enum params take allowed",
            );
        }
        if p.ty != ParamType::Int && (p.min.is_some() || p.max.is_some()) {
            d.at(Rule::Value, &key, "only int params take min and max");
        }
        if p.ty != ParamType::String && p.max_len.is_some() {
            d.at(
                Rule::Value,
                &field("max_len"),
                "only string params take max_len",
            );
        }
        let allowed = p.allowed.clone().unwrap_or_default();
        if p.ty == ParamType::Enum {
            if allowed.is_empty() {
                d.at(
                    Rule::Missing,
                    &key,
                    "an enum param needs a non-empty allowed list",
                );
            }
            let set: BTreeSet<_> = allowed.iter().collect();
            if set.len() != allowed.len() {
                d.at(
                    Rule::Value,
                    &field("allowed"),
                    "allowed lists a value twice",
                );
            }
            for a in &allowed {
                if a.is_empty() || a.len() > 256 || a.chars().any(|c| c.is_control()) {
                    d.at(
                        Rule::Value,
                        &field("allowed"),
                        format!("{a:?} is not a usable enum value"),
                    );
                }
            }
        }
        if let (Some(lo), Some(hi)) = (p.min, p.max)
            && lo > hi
        {
            d.at(
                Rule::Value,
                &field("max"),
                format!("max {hi} is below min {lo}"),
            );
        }
        let max_len = match p.max_len {
            None => DEFAULT_STRING_PARAM_MAX,
            Some(n) if (1..=4096).contains(&n) => n as u32,
            Some(n) => {
                d.at(
                    Rule::Value,
                    &field("max_len"),
                    format!("{n} is out of range (1 to 4096)"),
                );
                DEFAULT_STRING_PARAM_MAX
            }
        };
        if let Some(desc) = &p.description {
            check_text(d, &field("description"), desc, 1024, false);
        }
        let mut param = Param {
            ty: p.ty,
            allowed,
            default: None,
            min: p.min,
            max: p.max,
            max_len,
            description: p.description.clone(),
        };
        if let Some(def) = &p.default {
            match toml_to_param_value(def) {
                Some(v) => match param.check_value(&v) {
                    Ok(()) => param.default = Some(v),
                    Err(e) => d.at(
                        Rule::Placeholder,
                        &field("default"),
                        format!("default does not fit the param: {e}"),
                    ),
                },
                None => d.at(
                    Rule::Placeholder,
                    &field("default"),
                    format!("default must be a {}", p.ty.as_str()),
                ),
            }
        }
        params.insert(name.clone(), param);
    }
    if params.len() > 64 {
        d.at(Rule::TooLarge, &["params"], "more than 64 params");
    }

    params
}

/// `[runtime]`: args and their placeholders, then the wasm or docker specifics.
fn runtime(
    rt: &RawRuntime,
    params: &BTreeMap<String, Param>,
    d: &mut ManifestDiags<'_>,
) -> Option<RuntimeSpec> {
    let kind = rt.kind;
    let mut used_params = BTreeSet::new();
    if rt.args.len() > 256 {
        d.at(
            Rule::TooLarge,
            &["runtime", "args"],
            "more than 256 arguments",
        );
    }
    for a in &rt.args {
        if a.len() > 4096 || a.contains('\0') {
            d.at(
                Rule::Value,
                &["runtime", "args"],
                "an argument is longer than 4096 bytes or contains NUL",
            );
        }
        match placeholders(a) {
            Ok(names) => {
                for n in names {
                    if !params.contains_key(&n) {
                        d.at(
                            Rule::Placeholder,
                            &["runtime", "args"],
                            format!(
                                "{{{n}}} names no declared param (declare it under [params.{n}])"
                            ),
                        );
                    }
                    used_params.insert(n);
                }
            }
            Err(e) => d.at(Rule::Placeholder, &["runtime", "args"], e),
        }
    }
    for name in params.keys() {
        if !used_params.contains(name) {
            d.at(
                Rule::Placeholder,
                &["params", name.as_str()],
                format!("param {name:?} is declared but no argument uses it"),
            );
        }
    }

    let spec = match kind {
        RuntimeKind::Wasm => {
            wasm_only(d, kind, rt.image.is_some(), &["runtime", "image"]);
            wasm_only(d, kind, rt.user.is_some(), &["runtime", "user"]);
            wasm_only(d, kind, rt.entrypoint.is_some(), &["runtime", "entrypoint"]);
            wasm_only(d, kind, rt.workdir.is_some(), &["runtime", "workdir"]);
            wasm_only(d, kind, rt.isolation.is_some(), &["runtime", "isolation"]);
            let module = rt.module.clone().unwrap_or_default();
            if rt.module.is_none() {
                d.at(
                    Rule::Missing,
                    &["runtime"],
                    "a wasm runtime needs module = \"<file>.wasm\"",
                );
            }
            RuntimeSpec::Wasm { module }
        }
        RuntimeKind::Docker => {
            if rt.module.is_some() {
                d.at(
                    Rule::Value,
                    &["runtime", "module"],
                    "applies to wasm definitions only, this one is docker",
                );
            }
            let image = match &rt.image {
                None => {
                    d.at(
                        Rule::Missing,
                        &["runtime"],
                        "a docker runtime needs image = \"name@sha256:<digest>\"",
                    );
                    None
                }
                Some(s) => match parse_image(s) {
                    Ok(i) => Some(i),
                    Err(e) => {
                        d.at(Rule::UnpinnedImage, &["runtime", "image"], e);
                        None
                    }
                },
            };
            let user = match rt.user.as_deref().unwrap_or("65534:65534").split_once(':') {
                Some((u, g)) => match (u.parse::<u32>(), g.parse::<u32>()) {
                    (Ok(u), Ok(g)) => {
                        if let Err(why) = check_user_ids(u, g) {
                            d.at(Rule::Value, &["runtime", "user"], why);
                        }
                        (u, g)
                    }
                    _ => {
                        d.at(
                            Rule::Value,
                            &["runtime", "user"],
                            "user must be numeric uid:gid, e.g. \"65534:65534\"",
                        );
                        (65534, 65534)
                    }
                },
                None => {
                    d.at(
                        Rule::Value,
                        &["runtime", "user"],
                        "user must be numeric uid:gid, e.g. \"65534:65534\"",
                    );
                    (65534, 65534)
                }
            };
            let entrypoint = rt.entrypoint.clone().unwrap_or_default();
            match entrypoint.first() {
                None => d.at(
                    Rule::Missing,
                    &["runtime"],
                    "a docker runtime needs entrypoint = [\"/absolute/program\", ...]",
                ),
                Some(p) if !p.starts_with('/') => d.at(
                    Rule::Value,
                    &["runtime", "entrypoint"],
                    format!("{p:?} must be an absolute path inside the image"),
                ),
                _ => {}
            }
            for e in &entrypoint {
                if placeholders(e).map(|v| !v.is_empty()).unwrap_or(true) || e.contains('\0') {
                    d.at(
                        Rule::Placeholder,
                        &["runtime", "entrypoint"],
                        "the entrypoint takes no placeholders; put them in args",
                    );
                }
            }
            let workdir = rt.workdir.clone().unwrap_or_else(|| "/".to_string());
            if workdir != "/" && !valid_guest_path(&workdir) {
                d.at(
                    Rule::Value,
                    &["runtime", "workdir"],
                    format!("{workdir:?} is not an absolute normalised path"),
                );
            }
            if ["/proc", "/sys", "/dev"]
                .iter()
                .any(|p| workdir == *p || workdir.starts_with(&format!("{p}/")))
            {
                // CVE-2024-21626: a working directory under /proc let containers reach
                // leaked host file descriptors.
                d.at(
                    Rule::Value,
                    &["runtime", "workdir"],
                    format!("{workdir:?} is under /proc, /sys or /dev"),
                );
            }
            image.map(|image| RuntimeSpec::Docker {
                image,
                user,
                entrypoint,
                workdir,
                isolation: rt.isolation.unwrap_or(Isolation::Container),
            })?
        }
    };

    Some(spec)
}

/// `[limits]`, with the defaults of the runtime kind.
fn limits(l: &RawLimits, kind: RuntimeKind, d: &mut ManifestDiags<'_>) -> Limits {
    let memory = size_value(d, &["limits", "memory"], &l.memory, 64 * MIB);
    let mem_range = match kind {
        RuntimeKind::Wasm => WASM_MEMORY_RANGE,
        RuntimeKind::Docker => DOCKER_MEMORY_RANGE,
    };
    in_range(d, &["limits", "memory"], memory, mem_range, format_size);
    let timeout_ms = match &l.timeout {
        None => 10_000,
        Some(t) => parse_duration_ms(t).unwrap_or_else(|e| {
            d.at(Rule::Value, &["limits", "timeout"], e);
            10_000
        }),
    };
    in_range(
        d,
        &["limits", "timeout"],
        timeout_ms,
        TIMEOUT_RANGE_MS,
        |v| format!("{v}ms"),
    );
    let output = size_value(d, &["limits", "output"], &l.output, 16 * MIB);
    in_range(d, &["limits", "output"], output, OUTPUT_RANGE, format_size);
    let fuel = l.fuel.map(|f| {
        let f = f.max(0) as u64;
        in_range(d, &["limits", "fuel"], f, FUEL_RANGE, |v| v.to_string());
        f
    });
    let mut pids = l.pids.map(|p| {
        let p = p.max(0) as u64;
        in_range(d, &["limits", "pids"], p, PIDS_RANGE, |v| v.to_string());
        p
    });
    let mut millicpus = l.cpus.map(|c| {
        if !c.is_finite() || c <= 0.0 {
            d.at(
                Rule::Value,
                &["limits", "cpus"],
                format!("{c} is not a positive number of CPUs"),
            );
            return 1000;
        }
        let m = (c * 1000.0).round() as u64;
        in_range(d, &["limits", "cpus"], m, MILLICPUS_RANGE, |v| {
            format!("{}", v as f64 / 1000.0)
        });
        m
    });
    match kind {
        RuntimeKind::Wasm => {
            wasm_only(d, kind, pids.is_some(), &["limits", "pids"]);
            wasm_only(d, kind, millicpus.is_some(), &["limits", "cpus"]);
        }
        RuntimeKind::Docker => {
            if fuel.is_some() {
                d.at(
                    Rule::Value,
                    &["limits", "fuel"],
                    "applies to wasm definitions only, this one is docker",
                );
            }
            pids.get_or_insert(64);
            millicpus.get_or_insert(1000);
        }
    }

    Limits {
        memory,
        timeout_ms,
        output,
        fuel,
        pids,
        millicpus,
    }
}

/// `[io]`: the input and output directories inside the sandbox.
fn io(io: &RawIo, d: &mut ManifestDiags<'_>) -> Io {
    let input = io.input.clone().unwrap_or_else(|| "/input".into());
    let out_dir = io.output.clone().unwrap_or_else(|| "/output".into());
    for (k, p) in [("input", &input), ("output", &out_dir)] {
        if !valid_guest_path(p) {
            d.at(
                Rule::Value,
                &["io", k],
                format!("{p:?} must be an absolute normalised path other than /"),
            );
        } else if ["/proc", "/sys", "/dev"]
            .iter()
            .any(|s| p == s || p.starts_with(&format!("{s}/")))
        {
            d.at(
                Rule::Value,
                &["io", k],
                format!("{p:?} is under /proc, /sys or /dev"),
            );
        }
    }
    if input == out_dir
        || input.starts_with(&format!("{out_dir}/"))
        || out_dir.starts_with(&format!("{input}/"))
    {
        d.at(
            Rule::Value,
            &["io", "output"],
            "input and output directories must be distinct and not nested",
        );
    }

    Io {
        input,
        output: out_dir,
    }
}

/// `[capabilities]`: network, determinism, environment, secrets and WASI capabilities.
fn capabilities(c: &RawCapabilities, kind: RuntimeKind, d: &mut ManifestDiags<'_>) -> Capabilities {
    if c.env.len() > 64 {
        d.at(
            Rule::TooLarge,
            &["capabilities", "env"],
            "more than 64 environment variables",
        );
    }
    for (k, v) in &c.env {
        if !valid_env_name(k) {
            d.at(
                Rule::Value,
                &["capabilities", "env"],
                format!("{k:?} is not a valid environment variable name"),
            );
        }
        if v.len() > 4096 || v.contains('\0') {
            d.at(
                Rule::Value,
                &["capabilities", "env", k],
                "value is longer than 4096 bytes or contains NUL",
            );
        }
    }
    let mut seen = BTreeSet::new();
    for s in &c.secrets {
        if !valid_secret_name(s) {
            d.at(
                Rule::Value,
                &["capabilities", "secrets"],
                format!(
                    "{s:?} is not a valid secret name: use A-Z, 0-9 and _, starting with a letter"
                ),
            );
        }
        if !seen.insert(s) {
            d.at(
                Rule::Value,
                &["capabilities", "secrets"],
                format!("secret {s:?} is listed twice"),
            );
        }
        if c.env.contains_key(s) {
            d.at(
                Rule::Secret,
                &["capabilities", "env", s.as_str()],
                format!(
                    "{s:?} is declared as a secret; its value must come from the requestor, not env"
                ),
            );
        }
    }
    if c.secrets.len() > 32 {
        d.at(
            Rule::TooLarge,
            &["capabilities", "secrets"],
            "more than 32 secrets",
        );
    }
    if kind == RuntimeKind::Docker && c.wasi.is_some() {
        d.at(
            Rule::Value,
            &["capabilities", "wasi"],
            "applies to wasm definitions only, this one is docker",
        );
    }

    Capabilities {
        network: c.network.unwrap_or(false),
        deterministic: c.deterministic.unwrap_or(false),
        env: c.env.clone(),
        secrets: c.secrets.clone(),
        wasi: c.wasi.as_ref().map(|v| v.iter().copied().collect()),
    }
}
