//! Isolation policy: what kernel a task reaches and whether the machine is a VM, from evidence, and what that allows.
//!
//! A container shares the kernel of whatever runs its tasks. The level a provider achieves
//! (and advertises) is the best of:
//! * what the isolation canary ([`super::canary`]) saw from inside a container under the
//!   configured runtime: gVisor's kernel is `sandboxed-runtime`, a VM's kernel is `vm`, the
//!   host's kernel (runc, or anything named otherwise that only namespaces processes) is
//!   `container`. A runtime's name counts for nothing: `kata-x` pointing at runc is a
//!   `container`;
//! * whether the daemon's machine is a VM (the local machine shows a CPUID hypervisor bit,
//!   a hypervisor in DMI, `/sys/hypervisor/type` or `systemd-detect-virt --vm`; or the
//!   daemon reports Docker Desktop's VM): `vm`. A VM that hides all of these is reported as
//!   no VM (the safe direction: the provider then under-advertises).
//!
//! `vm-recommended` warns exactly when tasks share the host's kernel (`container`): a VM or
//! gVisor's user-space kernel both stand between a kernel exploit and the host, so the
//! advice it gives (a dedicated VM, or a gVisor or VM runtime) makes the warning go.
//! `vm-required` admits only `vm`.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use task_defs::manifest::Isolation;

use super::canary::Canary;
use super::headroom::Kernel;

/// The provider's policy (`docker.isolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IsolationPolicy {
    /// Refuse every Docker task unless containers run inside a VM.
    VmRequired,
    /// Run Docker tasks anywhere, but warn (at start-up and in `provider doctor`) when they
    /// share the host's kernel (neither a VM nor a sandboxing runtime such as gVisor).
    #[default]
    VmRecommended,
    /// Plain hardened containers are acceptable; no warning.
    Container,
}

impl IsolationPolicy {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            IsolationPolicy::VmRequired => "vm-required",
            IsolationPolicy::VmRecommended => "vm-recommended",
            IsolationPolicy::Container => "container",
        }
    }
}

impl fmt::Display for IsolationPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IsolationPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vm-required" => Ok(IsolationPolicy::VmRequired),
            "vm-recommended" => Ok(IsolationPolicy::VmRecommended),
            "container" => Ok(IsolationPolicy::Container),
            _ => Err(format!(
                "unknown docker isolation policy {s:?} (expected vm-required, vm-recommended or container)"
            )),
        }
    }
}

/// Evidence that the local machine is a virtual machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmEvidence {
    /// Each piece of evidence found, e.g. `cpuid hypervisor bit`, `systemd-detect-virt: kvm`.
    pub found: Vec<String>,
}

impl VmEvidence {
    /// Whether any evidence was found.
    pub fn is_vm(&self) -> bool {
        !self.found.is_empty()
    }
}

const DMI_VM_MARKERS: &[&str] = &[
    "qemu",
    "kvm",
    "vmware",
    "virtualbox",
    "innotek",
    "xen",
    "bochs",
    "parallels",
    "virtual machine",
    "amazon ec2",
    "google compute engine",
    "openstack",
    "cloud hypervisor",
    "firecracker",
    "bhyve",
    "hvm domu",
];

fn read_small(p: &Path) -> Option<String> {
    let mut s = String::new();
    std::fs::File::open(p)
        .ok()?
        .take(1 << 20)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

/// Whether the `hypervisor` flag (CPUID leaf 1, ECX bit 31) is in a cpuinfo text.
pub fn cpuinfo_has_hypervisor(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "hypervisor"))
}

/// Whether a DMI vendor or product string names a hypervisor.
pub fn dmi_names_vm(s: &str) -> bool {
    let s = s.to_ascii_lowercase();
    DMI_VM_MARKERS.iter().any(|m| s.contains(m))
}

/// Looks for VM evidence on the local machine (blocking; runs a subprocess with a 2 s limit).
pub fn detect_local_vm() -> VmEvidence {
    let mut found = Vec::new();
    if read_small(Path::new("/proc/cpuinfo")).is_some_and(|c| cpuinfo_has_hypervisor(&c)) {
        found.push("cpuid hypervisor bit (/proc/cpuinfo)".to_string());
    }
    for f in ["sys_vendor", "product_name"] {
        if let Some(v) = read_small(&Path::new("/sys/class/dmi/id").join(f))
            && dmi_names_vm(&v)
        {
            found.push(format!("dmi {f}: {}", v.trim()));
        }
    }
    if let Some(t) = read_small(Path::new("/sys/hypervisor/type")) {
        let t = t.trim();
        if !t.is_empty() {
            found.push(format!("/sys/hypervisor/type: {t}"));
        }
    }
    if let Some(v) = systemd_detect_virt() {
        found.push(format!("systemd-detect-virt --vm: {v}"));
    }
    VmEvidence { found }
}

fn systemd_detect_virt() -> Option<String> {
    let mut child = Command::new("systemd-detect-virt")
        .arg("--vm")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut out = String::new();
                child
                    .stdout
                    .take()?
                    .take(4096)
                    .read_to_string(&mut out)
                    .ok()?;
                let out = out.trim().to_string();
                return (status.success() && !out.is_empty() && out != "none").then_some(out);
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Whether the daemon's operating system string says it runs in its own VM.
pub fn daemon_os_is_vm(os: &str) -> bool {
    let o = os.to_ascii_lowercase();
    [
        "docker desktop",
        "boot2docker",
        "rancher desktop",
        "colima",
        "orbstack",
    ]
    .iter()
    .any(|m| o.contains(m))
}

/// Everything known about isolation on this provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationReport {
    /// The configured policy.
    pub policy: IsolationPolicy,
    /// The configured OCI runtime, if any.
    pub runtime: Option<String>,
    /// Runtimes the daemon has registered.
    pub registered_runtimes: Vec<String>,
    /// The daemon's default runtime.
    pub default_runtime: String,
    /// Evidence that the daemon's machine is a VM.
    pub vm_evidence: Vec<String>,
    /// What the canary found under the runtime; `Err` says why it could not tell (then the
    /// runtime counts as sharing the host's kernel).
    pub canary: Result<Canary, String>,
    /// The level achieved.
    pub achieved: Isolation,
}

impl IsolationReport {
    /// Computes the achieved level from the machine's VM evidence and the canary's finding.
    pub fn new(
        policy: IsolationPolicy,
        runtime: Option<String>,
        registered_runtimes: Vec<String>,
        default_runtime: String,
        vm_evidence: Vec<String>,
        canary: Result<Canary, String>,
    ) -> IsolationReport {
        let by_runtime = canary
            .as_ref()
            .map_or(Isolation::Container, |c| c.kernel.isolation());
        let by_vm = if vm_evidence.is_empty() {
            Isolation::Container
        } else {
            Isolation::Vm
        };
        IsolationReport {
            policy,
            achieved: by_runtime.max(by_vm),
            runtime,
            registered_runtimes,
            default_runtime,
            vm_evidence,
            canary,
        }
    }

    /// The runtime containers run with: the configured one, else the daemon's default.
    pub fn runtime_name(&self) -> &str {
        self.runtime.as_deref().unwrap_or(&self.default_runtime)
    }

    /// The kernel tasks reach, as the canary saw it; without a canary, the host's (the
    /// assumption that claims least, and adds no runtime headroom).
    pub fn kernel(&self) -> Kernel {
        self.canary.as_ref().map_or(Kernel::Host, |c| c.kernel)
    }

    /// Whether a definition asking for `wanted` may run here; the error is a rejection reason.
    pub fn admit(&self, wanted: Isolation) -> Result<(), String> {
        if self.policy == IsolationPolicy::VmRequired && self.achieved < Isolation::Vm {
            return Err(format!(
                "this provider requires a VM for docker tasks (docker.isolation = vm-required) and achieves only {}",
                self.achieved.as_str()
            ));
        }
        if self.achieved < wanted {
            return Err(format!(
                "the definition requires isolation {} and this provider achieves {}",
                wanted.as_str(),
                self.achieved.as_str()
            ));
        }
        Ok(())
    }

    /// A warning to print at start-up, if the policy calls for one.
    pub fn warning(&self) -> Option<String> {
        (self.policy == IsolationPolicy::VmRecommended && self.achieved == Isolation::Container)
            .then(|| {
                format!(
                    "docker tasks run in containers sharing this machine's kernel (runtime {}: {}); {}",
                    self.runtime_name(),
                    match &self.canary {
                        Ok(c) => c.kernel.as_str().to_string(),
                        Err(e) => format!("not verified: {e}"),
                    },
                    RECOMMENDATION
                )
            })
    }
}

/// What `vm-recommended` recommends; each way makes its warning go.
pub const RECOMMENDATION: &str = "run the provider inside a dedicated VM, or set PINFOLD_DOCKER_RUNTIME to a \
     registered gVisor (runsc) or VM (kata) runtime; the isolation canary must confirm it";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_spellings_round_trip() {
        for p in [
            IsolationPolicy::VmRequired,
            IsolationPolicy::VmRecommended,
            IsolationPolicy::Container,
        ] {
            assert_eq!(p.as_str().parse::<IsolationPolicy>().unwrap(), p);
        }
        assert!("vm".parse::<IsolationPolicy>().is_err());
        assert_eq!(IsolationPolicy::default(), IsolationPolicy::VmRecommended);
    }

    #[test]
    fn evidence_parsers() {
        assert!(cpuinfo_has_hypervisor(
            "processor: 0\nflags\t\t: fpu vme hypervisor lahf_lm\n"
        ));
        assert!(!cpuinfo_has_hypervisor(
            "flags\t\t: fpu vme lahf_lm\nmodel name: hypervisor-free\n"
        ));
        assert!(dmi_names_vm("QEMU\n"));
        assert!(dmi_names_vm("VMware, Inc."));
        assert!(!dmi_names_vm("Dell Inc."));
        assert!(daemon_os_is_vm("Docker Desktop"));
        assert!(!daemon_os_is_vm("Debian GNU/Linux 12 (bookworm)"));
    }

    /// A report for a runtime whose canary found `kernel`.
    fn report(
        policy: IsolationPolicy,
        runtime: Option<&str>,
        kernel: Kernel,
        vm: bool,
    ) -> IsolationReport {
        IsolationReport::new(
            policy,
            runtime.map(String::from),
            vec!["runc".into(), "runsc".into(), "kata-x".into()],
            "runc".into(),
            if vm { vec!["test".into()] } else { vec![] },
            Ok(Canary {
                runtime: runtime.unwrap_or("runc").into(),
                kernel,
                evidence: vec![],
                took: std::time::Duration::ZERO,
            }),
        )
    }

    #[test]
    fn achieved_level_and_admission() {
        let bare = report(IsolationPolicy::VmRecommended, None, Kernel::Host, false);
        assert_eq!(bare.achieved, Isolation::Container);
        assert!(bare.admit(Isolation::Container).is_ok());
        assert!(bare.admit(Isolation::Vm).is_err());
        assert!(bare.admit(Isolation::SandboxedRuntime).is_err());
        assert!(bare.warning().is_some());

        let gvisor = report(
            IsolationPolicy::VmRecommended,
            Some("runsc"),
            Kernel::Gvisor,
            false,
        );
        assert_eq!(gvisor.achieved, Isolation::SandboxedRuntime);
        assert!(gvisor.admit(Isolation::SandboxedRuntime).is_ok());
        assert!(gvisor.admit(Isolation::Vm).is_err());
        // gVisor's kernel stands between the task and the host: following the advice
        // makes the warning go.
        assert!(gvisor.warning().is_none());
        assert!(bare.warning().unwrap().contains("runsc"));

        // The name says VM, the canary saw the host's kernel.
        let misnamed = report(
            IsolationPolicy::VmRequired,
            Some("kata-x"),
            Kernel::Host,
            false,
        );
        assert_eq!(misnamed.achieved, Isolation::Container);
        assert!(misnamed.admit(Isolation::Container).is_err());
        let kata = report(
            IsolationPolicy::VmRequired,
            Some("kata-x"),
            Kernel::Vm,
            false,
        );
        assert_eq!(kata.achieved, Isolation::Vm);

        // No canary: nothing is claimed for the runtime.
        let unverified = IsolationReport::new(
            IsolationPolicy::VmRecommended,
            Some("runsc".into()),
            vec![],
            "runc".into(),
            vec![],
            Err("no canary image".into()),
        );
        assert_eq!(unverified.achieved, Isolation::Container);
        assert_eq!(unverified.kernel(), Kernel::Host);
        assert!(unverified.warning().unwrap().contains("not verified"));

        let vm = report(IsolationPolicy::VmRequired, None, Kernel::Host, true);
        assert_eq!(vm.achieved, Isolation::Vm);
        assert!(vm.admit(Isolation::Vm).is_ok());
        assert!(vm.warning().is_none());

        let required = report(
            IsolationPolicy::VmRequired,
            Some("runsc"),
            Kernel::Gvisor,
            false,
        );
        let e = required.admit(Isolation::Container).unwrap_err();
        assert!(e.contains("vm-required"), "{e}");

        let quiet = report(IsolationPolicy::Container, None, Kernel::Host, false);
        assert!(quiet.warning().is_none());
    }
}
