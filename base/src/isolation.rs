//! Isolation levels: how strongly a sandbox separates a task from the host.

use serde::{Deserialize, Serialize};

/// How strongly a sandbox separates a task from the host (ordered weakest first).
///
/// One type for the manifest's `runtime.isolation` (the weakest level a docker definition
/// accepts), the level a provider's executor reaches and advertises, and the level a
/// requestor asks for in an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// A hardened container sharing the host kernel.
    Container,
    /// A sandboxing runtime such as gVisor (`runsc`) or Kata, or the wasm sandbox.
    SandboxedRuntime,
    /// A virtual machine.
    Vm,
}

impl Isolation {
    /// The stable name used in manifests, capability ads and offers.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Container => "container",
            Isolation::SandboxedRuntime => "sandboxed-runtime",
            Isolation::Vm => "vm",
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
