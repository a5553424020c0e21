//! `task-defs new`: writing a fresh, valid definition around a module or an image.

use std::fs;
use std::path::Path;

use crate::definition::{Definition, Error, MAX_FILE_BYTES, read_capped};
use crate::footprint::{self, Capability};
use crate::manifest::{self, MANIFEST_FILE};

/// What the new definition runs.
#[derive(Debug, Clone)]
pub enum Template<'a> {
    /// Copy this wasm module into the definition.
    Wasm(&'a Path),
    /// Run this digest-pinned image, starting this program.
    Docker {
        /// `name@sha256:<digest>` or `sha256:<digest>`.
        image: &'a str,
        /// Absolute path of the program inside the image.
        entrypoint: &'a str,
    },
}

/// Written above `args`: the scaffold passes the program nothing it did not ask for (an
/// injected `{mode}` argument made working programs fail), but shows how a param reaches it.
const ARGS_COMMENT: &str = "# Arguments are fixed here; \"{name}\" is filled only from a declared [params.name],\n\
                            # e.g. args = [\"--mode\", \"{mode}\"] with the [params.mode] below.\n";

/// Written where params go: an example to uncomment, not a param the program never reads.
const PARAMS_COMMENT: &str = "# The only things a requestor may vary (none yet). For example:\n\
                              # [params.mode]\n\
                              # type = \"enum\"\n\
                              # allowed = [\"fast\", \"thorough\"]\n\
                              # default = \"fast\"\n";

/// Turns a directory or file name into a valid definition name.
pub fn name_from(s: &str) -> String {
    let mut out: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    out = out.trim_matches('-').to_string();
    out.truncate(64);
    if out.is_empty() { "task".into() } else { out }
}

/// Creates `dir` (absent or empty) holding a valid definition, and returns it loaded.
pub fn create(dir: &Path, template: Template<'_>, name: Option<&str>) -> Result<Definition, Error> {
    if dir.exists()
        && fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .next()
            .is_some()
    {
        return Err(Error::io(
            dir,
            std::io::Error::other("directory exists and is not empty"),
        ));
    }
    let base = dir.file_name().and_then(|n| n.to_str()).unwrap_or("task");
    let name = name.map(str::to_string).unwrap_or_else(|| name_from(base));
    let (runtime, caps_comment, file) = match template {
        Template::Wasm(module) => {
            let bytes = read_capped(module, MAX_FILE_BYTES)?;
            let fp = footprint::analyze(&bytes)
                .map_err(|e| Error::io(module, std::io::Error::other(e)))?;
            let file_name = module
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|n| !n.starts_with('.'))
                .unwrap_or("task.wasm")
                .to_string();
            let caps: Vec<&str> = fp.capabilities.iter().map(|c| c.as_str()).collect();
            let network = fp.capabilities.contains(&Capability::Sockets);
            (
                format!(
                    "[runtime]\nkind = \"wasm\"\nmodule = {}\n{ARGS_COMMENT}args = []\n",
                    toml_str(&file_name)
                ),
                format!(
                    "# The module imports: {}.\nnetwork = {network}\n",
                    if caps.is_empty() {
                        "nothing".to_string()
                    } else {
                        caps.join(", ")
                    }
                ),
                Some((file_name, bytes)),
            )
        }
        Template::Docker { image, entrypoint } => {
            manifest::parse_image(image).map_err(|e| Error::io(dir, std::io::Error::other(e)))?;
            (
                format!(
                    "[runtime]\nkind = \"docker\"\nimage = {}   # pinned by digest, never a tag\nuser = \"65534:65534\"   # numeric, non-root\nentrypoint = [{}]\nworkdir = \"/output\"\n{ARGS_COMMENT}args = []\n",
                    toml_str(image),
                    toml_str(entrypoint)
                ),
                "network = false\n".to_string(),
                None,
            )
        }
    };
    let text = format!(
        "# pinfold task definition, format 1 (see task-defs/SPEC.md).\nformat = 1\nname = {}\nversion = \"0.1.0\"\ndescription = \"TODO: say what this task does\"\nlicense = \"MIT\"\n\n{runtime}\n{PARAMS_COMMENT}\n[limits]\nmemory = \"64MiB\"\ntimeout = \"10s\"\noutput = \"16MiB\"   # stdout + stderr + output files together\n\n[io]\ninput = \"/input\"     # read-only\noutput = \"/output\"   # the only writable directory\n\n[capabilities]\n{caps_comment}deterministic = false\nenv = {{ LANG = \"C\" }}\nsecrets = []   # names only; values come from the requestor per run\n",
        toml_str(&name)
    );
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mpath = dir.join(MANIFEST_FILE);
    fs::write(&mpath, text).map_err(|e| Error::io(&mpath, e))?;
    if let Some((file_name, bytes)) = file {
        let p = dir.join(file_name);
        fs::write(&p, bytes).map_err(|e| Error::io(&p, e))?;
    }
    Definition::load_dir(dir)
}

fn toml_str(s: &str) -> String {
    // A TOML basic string has the same escapes as JSON for everything we emit.
    serde_json::to_string(s).expect("strings serialize")
}
