//! Capability footprint of a wasm module: what it imports, mapped to what it can touch.
//!
//! Reviewers read the footprint instead of disassembling the module, and providers refuse
//! modules whose imports exceed what the manifest declares, so this mapping is a security
//! boundary: an import we cannot classify is `unknown`, and `unknown` is never allowed.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use wasmparser::{Parser, Payload, TypeRef, Validator, WasmFeatures};

/// A class of host functionality a module can reach through its imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// Reading its command-line arguments.
    Args,
    /// Reading environment variables.
    Environment,
    /// Files and directories (only the preopened input and output exist).
    Filesystem,
    /// Standard input, output and error streams.
    Stdio,
    /// Reading clocks and sleeping.
    Clock,
    /// Random numbers.
    Random,
    /// Ending the process with an exit code.
    ProcessExit,
    /// Network sockets (needs `capabilities.network = true`).
    Sockets,
    /// Spawning threads (not supported by pinfold).
    Threads,
    /// Anything we cannot classify; never allowed.
    Unknown,
}

impl Capability {
    /// The stable kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Args => "args",
            Capability::Environment => "environment",
            Capability::Filesystem => "filesystem",
            Capability::Stdio => "stdio",
            Capability::Clock => "clock",
            Capability::Random => "random",
            Capability::ProcessExit => "process-exit",
            Capability::Sockets => "sockets",
            Capability::Threads => "threads",
            Capability::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the module is a core module or a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModuleKind {
    /// A core WebAssembly module (WASI preview 1).
    CoreModule,
    /// A WebAssembly component (WASI 0.2).
    Component,
}

/// One import of the module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Import {
    /// Import module (core) or interface name (component).
    pub module: String,
    /// Field name (core); empty for a component interface import.
    pub name: String,
    /// What kind of item: `func`, `memory`, `table`, `global`, `tag`, `instance`, ….
    pub item: String,
    /// The capability this import grants.
    pub capability: Capability,
}

/// The imports of a module and the capabilities they add up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Footprint {
    /// Core module or component.
    pub kind: ModuleKind,
    /// Every import, in module order.
    pub imports: Vec<Import>,
    /// The union of the imports' capabilities.
    pub capabilities: BTreeSet<Capability>,
    /// Whether the module exports a WASI command entry point (`_start`, or `wasi:cli/run`).
    pub command: bool,
    /// Initial size of the module's memory in bytes, when it defines one.
    pub initial_memory: Option<u64>,
    /// Whether a memory is shared (which implies threads).
    pub shared_memory: bool,
}

/// The capabilities a manifest allows unless `capabilities.wasi` narrows them.
pub fn default_allowed(network: bool) -> BTreeSet<Capability> {
    let mut s: BTreeSet<Capability> = [
        Capability::Args,
        Capability::Environment,
        Capability::Filesystem,
        Capability::Stdio,
        Capability::Clock,
        Capability::Random,
        Capability::ProcessExit,
    ]
    .into_iter()
    .collect();
    if network {
        s.insert(Capability::Sockets);
    }
    s
}

/// Classifies one core-module import from WASI preview 1.
pub fn classify_core(module: &str, name: &str) -> Capability {
    match module {
        "wasi_snapshot_preview1" | "wasi_unstable" => match name {
            "args_get" | "args_sizes_get" => Capability::Args,
            "environ_get" | "environ_sizes_get" => Capability::Environment,
            "clock_res_get" | "clock_time_get" | "poll_oneoff" => Capability::Clock,
            "random_get" => Capability::Random,
            "proc_exit" | "proc_raise" | "sched_yield" => Capability::ProcessExit,
            // Preview 1 cannot create a socket: these only act on descriptors the host
            // handed over, and pinfold hands over none, so they can only fail (`ENOTSOCK`).
            // Toolchains import them anyway (Rust std does), so they are plain stdio-like
            // descriptor calls, not network access.
            "sock_accept" | "sock_recv" | "sock_send" | "sock_shutdown" => Capability::Stdio,
            // The exact preview-1 list: a prefix match would let an invented `fd_teleport`
            // pass as filesystem access and only fail at link time on the provider.
            "fd_advise"
            | "fd_allocate"
            | "fd_close"
            | "fd_datasync"
            | "fd_fdstat_get"
            | "fd_fdstat_set_flags"
            | "fd_fdstat_set_rights"
            | "fd_filestat_get"
            | "fd_filestat_set_size"
            | "fd_filestat_set_times"
            | "fd_pread"
            | "fd_prestat_get"
            | "fd_prestat_dir_name"
            | "fd_pwrite"
            | "fd_read"
            | "fd_readdir"
            | "fd_renumber"
            | "fd_seek"
            | "fd_sync"
            | "fd_tell"
            | "fd_write"
            | "path_create_directory"
            | "path_filestat_get"
            | "path_filestat_set_times"
            | "path_link"
            | "path_open"
            | "path_readlink"
            | "path_remove_directory"
            | "path_rename"
            | "path_symlink"
            | "path_unlink_file" => Capability::Filesystem,
            _ => Capability::Unknown,
        },
        "wasi" if name == "thread-spawn" => Capability::Threads,
        _ => Capability::Unknown,
    }
}

/// Classifies one component import by its WASI interface name (`wasi:clocks/wall-clock@0.2.0`).
pub fn classify_component(interface: &str) -> Capability {
    let base = interface.split('@').next().unwrap_or(interface);
    match base {
        "wasi:cli/environment" => Capability::Environment,
        "wasi:cli/exit" => Capability::ProcessExit,
        "wasi:cli/stdin" | "wasi:cli/stdout" | "wasi:cli/stderr" => Capability::Stdio,
        b if b.starts_with("wasi:cli/terminal-") => Capability::Stdio,
        b if b.starts_with("wasi:io/") => Capability::Stdio,
        b if b.starts_with("wasi:filesystem/") => Capability::Filesystem,
        b if b.starts_with("wasi:clocks/") => Capability::Clock,
        b if b.starts_with("wasi:random/") => Capability::Random,
        b if b.starts_with("wasi:sockets/") || b.starts_with("wasi:http/") => Capability::Sockets,
        _ => Capability::Unknown,
    }
}

/// Validates a module (or component) and computes its footprint.
///
/// Errors are lower-case messages naming what is wrong (malformed bytes, failed validation).
pub fn analyze(bytes: &[u8]) -> Result<Footprint, String> {
    // Validate everything wasmtime would compile, but no proposal whose semantics we have not
    // reviewed for sandboxing: threads are refused later through the footprint instead.
    let mut validator = Validator::new_with_features(WasmFeatures::default());
    validator
        .validate_all(bytes)
        .map_err(|e| format!("invalid wasm: {e}"))?;

    let mut fp = Footprint {
        kind: ModuleKind::CoreModule,
        imports: Vec::new(),
        capabilities: BTreeSet::new(),
        command: false,
        initial_memory: None,
        shared_memory: false,
    };
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| format!("invalid wasm: {e}"))?;
        match payload {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding == wasmparser::Encoding::Component {
                    fp.kind = ModuleKind::Component;
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            // Core imports at the top level of a core module, or inside components' core
            // modules: a component's own imports are what reach the host, but core imports of
            // an embedded module are satisfied inside the component, so only count top level.
            Payload::ImportSection(reader) if fp.kind == ModuleKind::CoreModule && depth == 1 => {
                for imp in reader.into_imports() {
                    let imp = imp.map_err(|e| format!("invalid wasm: {e}"))?;
                    let (item, cap) = match imp.ty {
                        TypeRef::Func(_) | TypeRef::FuncExact(_) => {
                            ("func", classify_core(imp.module, imp.name))
                        }
                        TypeRef::Memory(m) => {
                            if m.shared {
                                fp.shared_memory = true;
                            }
                            fp.initial_memory =
                                Some(m.initial.saturating_mul(1u64 << m.page_size_log2()));
                            ("memory", Capability::Unknown)
                        }
                        TypeRef::Table(_) => ("table", Capability::Unknown),
                        TypeRef::Global(_) => ("global", Capability::Unknown),
                        TypeRef::Tag(_) => ("tag", Capability::Unknown),
                    };
                    fp.imports.push(Import {
                        module: imp.module.to_string(),
                        name: imp.name.to_string(),
                        item: item.into(),
                        capability: cap,
                    });
                }
            }
            Payload::MemorySection(reader) if fp.kind == ModuleKind::CoreModule && depth == 1 => {
                for m in reader {
                    let m = m.map_err(|e| format!("invalid wasm: {e}"))?;
                    if m.shared {
                        fp.shared_memory = true;
                    }
                    let bytes = m.initial.saturating_mul(1u64 << m.page_size_log2());
                    fp.initial_memory = Some(fp.initial_memory.unwrap_or(0).max(bytes));
                }
            }
            Payload::ExportSection(reader) if fp.kind == ModuleKind::CoreModule && depth == 1 => {
                for e in reader {
                    let e = e.map_err(|e| format!("invalid wasm: {e}"))?;
                    if e.name == "_start" && e.kind == wasmparser::ExternalKind::Func {
                        fp.command = true;
                    }
                }
            }
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for imp in reader {
                    let imp = imp.map_err(|e| format!("invalid wasm: {e}"))?;
                    let name = imp.name.name.to_string();
                    fp.imports.push(Import {
                        capability: classify_component(&name),
                        module: name,
                        name: String::new(),
                        item: format!("{:?}", imp.ty)
                            .split('(')
                            .next()
                            .unwrap_or("")
                            .to_lowercase(),
                    });
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for e in reader {
                    let e = e.map_err(|e| format!("invalid wasm: {e}"))?;
                    if e.name.name.starts_with("wasi:cli/run@") {
                        fp.command = true;
                    }
                }
            }
            _ => {}
        }
    }
    fp.capabilities = fp.imports.iter().map(|i| i.capability).collect();
    if fp.shared_memory {
        fp.capabilities.insert(Capability::Threads);
    }
    Ok(fp)
}

/// Checks a footprint against what the manifest allows; returns one message per violation.
pub fn violations(fp: &Footprint, allowed: &BTreeSet<Capability>) -> Vec<String> {
    let mut out = Vec::new();
    if !fp.command {
        out.push(match fp.kind {
            ModuleKind::CoreModule => {
                "the module is not a WASI command: it exports no _start function".to_string()
            }
            ModuleKind::Component => "the component does not export wasi:cli/run".to_string(),
        });
    }
    for imp in &fp.imports {
        let what = if imp.name.is_empty() {
            imp.module.clone()
        } else {
            format!("{}::{}", imp.module, imp.name)
        };
        match imp.capability {
            Capability::Unknown => out.push(format!(
                "imports {what} ({}), which no pinfold host provides",
                imp.item
            )),
            Capability::Threads => out.push(format!("imports {what}: threads are not supported")),
            c if !allowed.contains(&c) => out.push(format!(
                "imports {what}, which needs capability {c}, not declared by the manifest"
            )),
            _ => {}
        }
    }
    if fp.shared_memory {
        out.push("declares a shared memory: threads are not supported".into());
    }
    out
}
