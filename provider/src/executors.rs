//! [`Executors`]: the executors a process has, dispatching each run by its runtime kind.
//!
//! `provider exec` and the node hold one each, so both run a definition through the same
//! code path. A new executor kind is one new module implementing [`Executor`], one field
//! here and one arm in each `match` on [`RuntimeKind`] below.

use pinfold_base::Isolation;
use pinfold_net::ExecutorAd;
use task_defs::RuntimeKind;

use crate::docker::DockerExecutor;
use crate::executor::{Executor, Outcome, RunRequest};
use crate::wasm::WasmExecutor;

/// The executors available to this process, at most one per runtime kind.
#[derive(Debug, Default)]
pub struct Executors {
    wasm: Option<WasmExecutor>,
    docker: Option<DockerExecutor>,
}

impl Executors {
    /// Executors from what could be started (`None` for a kind that is off or failed).
    pub fn new(wasm: Option<WasmExecutor>, docker: Option<DockerExecutor>) -> Executors {
        Executors { wasm, docker }
    }

    /// The wasm executor, if there is one.
    pub fn wasm(&self) -> Option<&WasmExecutor> {
        self.wasm.as_ref()
    }

    /// The Docker executor, if there is one.
    pub fn docker(&self) -> Option<&DockerExecutor> {
        self.docker.as_ref()
    }

    /// Whether there is an executor for `kind`.
    pub fn has(&self, kind: RuntimeKind) -> bool {
        match kind {
            RuntimeKind::Wasm => self.wasm.is_some(),
            RuntimeKind::Docker => self.docker.is_some(),
        }
    }

    /// Whether there is no executor at all.
    pub fn is_empty(&self) -> bool {
        self.wasm.is_none() && self.docker.is_none()
    }

    /// Runs `req` on the executor of its definition's runtime kind; a kind without an
    /// executor is a `rejected` outcome, like every other failure.
    pub async fn run(&self, req: RunRequest) -> Outcome {
        match req.definition.manifest.runtime.kind() {
            RuntimeKind::Wasm => match &self.wasm {
                Some(w) => w.run(req).await,
                None => Outcome::rejected("no wasm executor"),
            },
            RuntimeKind::Docker => match &self.docker {
                Some(d) => d.run(req).await,
                None => Outcome::rejected("no docker executor"),
            },
        }
    }

    /// What the node advertises: each executor's runtime and the isolation it reaches
    /// (the wasm sandbox counts as a sandboxing runtime; Docker's comes from its canary).
    pub fn ads(&self) -> Vec<ExecutorAd> {
        let mut v = Vec::new();
        if let Some(w) = &self.wasm {
            v.push(ExecutorAd {
                runtime: w.kind().to_string(),
                isolation: Isolation::SandboxedRuntime,
            });
        }
        if let Some(d) = &self.docker {
            v.push(ExecutorAd {
                runtime: d.kind().to_string(),
                isolation: d.isolation(),
            });
        }
        v
    }
}
