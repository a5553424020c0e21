//! Per-runtime headroom: what a sandboxing runtime adds to a container's pids and memory cgroups, so that a definition's limits mean the same to its task under runc and gVisor.
//!
//! Under runc the container's cgroups hold only the task's own processes, so
//! `limits.pids` and `limits.memory` go to the engine as they are. Under gVisor the
//! cgroups also hold the sandbox: the Sentry (a Go program with its own threads and heap),
//! the gofer, and, on the ptrace platform Debian's `runsc` uses, one host stub process per
//! guest address space with one stub thread for every Sentry thread that has run in it.
//! Given the definition's limits unchanged, a trivial task does not start (pids ≤ 32
//! hangs or fails `runsc start`, 6 MiB is OOM-killed during create) and the busybox
//! example cannot run. So under gVisor:
//!
//! * the task's own process count is held *exactly* by `RLIMIT_NPROC = limits.pids`,
//!   which gVisor enforces inside the sandbox against the sandbox's own tasks (on the host
//!   it would count every process of the uid, so runc never gets it);
//! * the pids cgroup becomes a backstop sized for the sandbox: [`GVISOR`]'s
//!   `64 + 16·N + 1.5·N²` host threads for `N = limits.pids`, at most [`MAX_SANDBOX_PIDS`];
//! * the memory cgroup gets `24 MiB + 1 MiB·N` on top, at most [`MAX_MEMORY_HEADROOM`].
//!
//! The figures were measured with Debian's runsc 0.0~20221219 (ptrace platform, 2 cores,
//! cgroup v1; `pids.peak` and `memory.max_usage_in_bytes` of the container's cgroups,
//! busybox guests): at rest the sandbox takes 55 host threads and 15.4 MiB against 6 and
//! 3.7 MiB under runc; each further guest process that stays alive adds 10–12 threads and
//! 0.85 MiB. Guest processes that all keep running at once cost more, since the Sentry
//! then has that many threads and each traces every address space: a fork bomb held at
//! `N` processes plateaus at about 1.3–1.5·N² host threads (341 for N = 16, 1,557 for
//! 32, 5,056 for 64) and 32, 72 and 191 MiB. The pids backstop covers that up to the cap;
//! the memory headroom deliberately does not (it would hand a task that never forks
//! hundreds of MiB more than its limit), so a task churning through close to `limits.pids`
//! busy processes under gVisor can end `memory_exceeded` where runc lets it finish.

use task_defs::manifest::Isolation;

/// The kernel a task's system calls reach, as the canary found it from inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kernel {
    /// The host's own kernel (runc and anything else that only namespaces processes).
    Host,
    /// gVisor's Sentry, a kernel in user space.
    Gvisor,
    /// A separate kernel inside a virtual machine (Kata, or a daemon running in a VM).
    Vm,
    /// A kernel other than the host's that shows no sign of a VM: counted as no better
    /// than a container, since nothing says what it is.
    Unknown,
}

impl Kernel {
    /// The isolation level this kernel gives a task.
    pub fn isolation(self) -> Isolation {
        match self {
            Kernel::Gvisor => Isolation::SandboxedRuntime,
            Kernel::Vm => Isolation::Vm,
            Kernel::Host | Kernel::Unknown => Isolation::Container,
        }
    }

    /// A short name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Kernel::Host => "the host kernel",
            Kernel::Gvisor => "gVisor",
            Kernel::Vm => "a VM kernel",
            Kernel::Unknown => "an unidentified kernel",
        }
    }

    /// What the runtime running this kernel adds to the container's cgroups.
    pub fn headroom(self) -> Headroom {
        match self {
            Kernel::Gvisor => GVISOR,
            Kernel::Host | Kernel::Vm | Kernel::Unknown => NONE,
        }
    }
}

/// What a runtime itself adds to the pids and memory cgroups of a container whose task may
/// run `N = limits.pids` processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headroom {
    /// Host threads of the runtime at rest.
    pub pids_base: u64,
    /// Host threads per guest process.
    pub pids_per_task: u64,
    /// Host threads per pair of guest processes running at once, in halves (the ptrace
    /// platform's stub threads grow with the square of concurrent processes).
    pub pids_square_halves: u64,
    /// Bytes of the runtime at rest.
    pub memory_base: u64,
    /// Bytes per guest process.
    pub memory_per_task: u64,
    /// Whether the task's process count is held by `RLIMIT_NPROC` inside the sandbox
    /// (only where the runtime has its own kernel to count with).
    pub nproc: bool,
}

/// runc and other runtimes that add nothing to the container's cgroups.
pub const NONE: Headroom = Headroom {
    pids_base: 0,
    pids_per_task: 0,
    pids_square_halves: 0,
    memory_base: 0,
    memory_per_task: 0,
    nproc: false,
};

/// gVisor (`runsc`, ptrace platform), from the measurements in the module documentation
/// with a margin of about 1.3× on the threads and 1.5× on the memory at rest.
pub const GVISOR: Headroom = Headroom {
    pids_base: 64,
    pids_per_task: 16,
    pids_square_halves: 3,
    memory_base: 24 << 20,
    memory_per_task: 1 << 20,
    nproc: true,
};

/// Most host threads one sandbox may hold, whatever `limits.pids` says: the host's
/// `pid_max` is 32,768 by default and several tasks run at once.
pub const MAX_SANDBOX_PIDS: u64 = 8192;

/// Most memory a runtime's headroom may add to one container.
pub const MAX_MEMORY_HEADROOM: u64 = 256 << 20;

/// The limits the engine gets for a task, once the runtime's headroom is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    /// `pids_limit` of the container.
    pub pids: i64,
    /// Bytes of memory to add to the task's own (and the output tmpfs's) limit.
    pub memory_headroom: u64,
    /// `RLIMIT_NPROC` (soft and hard) inside the container, when the runtime counts the
    /// task's processes itself.
    pub nproc: Option<i64>,
}

impl Headroom {
    /// The cgroup limits for a task allowed `pids` processes.
    pub fn limits(&self, pids: u64) -> CgroupLimits {
        let host_pids = if *self == NONE {
            pids
        } else {
            self.pids_base
                .saturating_add(self.pids_per_task.saturating_mul(pids))
                .saturating_add(
                    pids.saturating_mul(pids)
                        .saturating_mul(self.pids_square_halves)
                        / 2,
                )
                .min(MAX_SANDBOX_PIDS.max(pids))
        };
        let memory_headroom = self
            .memory_base
            .saturating_add(self.memory_per_task.saturating_mul(pids))
            .min(MAX_MEMORY_HEADROOM);
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        CgroupLimits {
            pids: to_i64(host_pids),
            memory_headroom,
            nproc: self.nproc.then(|| to_i64(pids)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_gets_the_definitions_limits_unchanged() {
        for p in [1, 32, 64, 4096] {
            let l = NONE.limits(p);
            assert_eq!(l.pids, p as i64);
            assert_eq!(l.memory_headroom, 0);
            assert_eq!(l.nproc, None);
        }
    }

    #[test]
    fn gvisor_headroom_covers_the_measured_sandbox_and_is_capped() {
        // The measured plateaus of a fork bomb held at N processes fit under the backstop.
        for (n, measured) in [(16u64, 341i64), (32, 1557), (64, 5056)] {
            let l = GVISOR.limits(n);
            assert!(l.pids > measured, "{n}: {} <= {measured}", l.pids);
            assert_eq!(l.nproc, Some(n as i64), "the task's count is exact");
        }
        // A sandbox at rest (55 threads, 15.4 MiB) starts with a single process allowed.
        let one = GVISOR.limits(1);
        assert!(one.pids > 55 && one.memory_headroom > 15 << 20);
        // The shipped busybox example: pids 32.
        assert_eq!(GVISOR.limits(32).pids, 64 + 16 * 32 + 3 * 32 * 32 / 2);
        // Caps.
        assert_eq!(GVISOR.limits(4096).pids, MAX_SANDBOX_PIDS as i64);
        assert_eq!(GVISOR.limits(4096).memory_headroom, MAX_MEMORY_HEADROOM);
        assert_eq!(GVISOR.limits(u64::MAX).nproc, Some(i64::MAX));
        assert_eq!(Kernel::Gvisor.headroom(), GVISOR);
        assert_eq!(Kernel::Vm.headroom(), NONE);
    }
}
