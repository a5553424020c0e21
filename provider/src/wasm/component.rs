//! WASI 0.2 command components: host state, import policy and the `wasi:cli/run` call.
//!
//! Components run in the same stores as core modules (same engines, limiter, epoch
//! callback, fuel, stdio pipes and output watch); only the linker and the entry point
//! differ. The component linker carries all of `wasmtime_wasi::p2`, including
//! `wasi:sockets`, so the import policy is checked here against the component's own
//! import list as wasmtime sees it, before any guest code runs; the `WasiCtx` additionally
//! denies every socket address and name lookup (its defaults), as a second wall.

use std::collections::BTreeSet;
use std::sync::Arc;

use task_defs::footprint::{self, Capability};
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxView, WasiView};

use super::Host;

/// The WASI state of a component run.
pub(super) struct P2 {
    pub(super) ctx: WasiCtx,
    pub(super) table: ResourceTable,
}

impl WasiView for Host<P2> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.ctx,
            table: &mut self.wasi.table,
        }
    }
}

/// A linked command component and the interfaces it imports.
#[derive(Clone)]
pub(super) struct Prepared {
    pub(super) pre: CommandPre<Host<P2>>,
    imports: Arc<[String]>,
}

impl Prepared {
    /// Links `component`; the error is a rejection reason.
    pub(super) fn new(
        engine: &Engine,
        linker: &wasmtime::component::Linker<Host<P2>>,
        component: &Component,
    ) -> Result<Prepared, String> {
        let imports: Arc<[String]> = component
            .component_type()
            .imports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let pre = linker
            .instantiate_pre(component)
            .map_err(|e| format!("cannot link the component: {e:#}"))?;
        let pre = CommandPre::new(pre)
            .map_err(|e| format!("the component does not export wasi:cli/run: {e:#}"))?;
        Ok(Prepared { pre, imports })
    }

    /// The first `wasi:filesystem` interface the component imports, if any.
    pub(super) fn filesystem_import(&self) -> Option<&str> {
        self.imports
            .iter()
            .find(|n| n.starts_with("wasi:filesystem/"))
            .map(String::as_str)
    }

    /// The first import the manifest does not allow, as a rejection reason.
    ///
    /// The definition was checked when it was loaded, but the provider re-checks what it
    /// executes: the same bytes may come with a narrower manifest, and the loader's checks
    /// are not this executor's to rely on.
    pub(super) fn check_imports(&self, allowed: &BTreeSet<Capability>) -> Result<(), String> {
        for name in self.imports.iter() {
            match footprint::classify_component(name) {
                Capability::Unknown => {
                    return Err(format!(
                        "the component imports {name}, which no pinfold host provides"
                    ));
                }
                c if !allowed.contains(&c) => {
                    return Err(format!(
                        "the component imports {name}, which needs capability {c}, not allowed here"
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Instantiates the command and calls `wasi:cli/run`.
///
/// `run` returning `err` is exit code 1, as `wasi:cli/exit` with `err` would be, so both
/// reach the classifier as [`I32Exit`], like `proc_exit` from a core module.
pub(super) async fn run(
    pre: &CommandPre<Host<P2>>,
    store: &mut Store<Host<P2>>,
) -> wasmtime::Result<()> {
    let command = pre.instantiate_async(&mut *store).await?;
    match command.wasi_cli_run().call_run(&mut *store).await? {
        Ok(()) => Ok(()),
        Err(()) => Err(wasmtime::format_err!(I32Exit(1))),
    }
}
