//! The hardened container body, its allowlist check before create, and the re-inspection check after.
//!
//! Three steps, each independent of the others so that a bug in one is caught by the next:
//! [`container_body`] writes the body; [`validate_body`] checks the body's *wire form* (the
//! JSON the daemon receives) against an allowlist of keys and values, so a field added to
//! the body by mistake, or by a future bollard that serialises a new default, is refused
//! rather than sent; [`verify_created`] compares what the daemon says it created with what
//! was asked, because the daemon may silently drop or rewrite settings (old API versions,
//! daemon defaults, plugins).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HostConfig, HostConfigCgroupnsModeEnum,
    HostConfigLogConfig, Mount, MountBindOptions, MountBindOptionsPropagationEnum, MountType,
    ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum,
};
use serde_json::Value;

/// The label every pinfold container carries; its value is the job id.
pub const JOB_LABEL: &str = "pinfold.job";
/// The label naming the executor instance that owns a container.
pub const INSTANCE_LABEL: &str = "pinfold.instance";
/// The label naming the process that owns a container, `<pid>.<start time>`.
pub const OWNER_LABEL: &str = "pinfold.owner";
/// The owner label of an isolation canary (a probe, not a task: whoever watches a
/// process's task containers must not mistake it for one).
pub const CANARY_OWNER_LABEL: &str = "pinfold.canary-owner";

/// The process owning a container, from its task or canary owner label.
pub fn owner_of(labels: &HashMap<String, String>) -> Option<&String> {
    labels
        .get(OWNER_LABEL)
        .or_else(|| labels.get(CANARY_OWNER_LABEL))
}
/// The only security option pinfold sets; the daemon's default seccomp and AppArmor
/// profiles apply because none is named.
pub const NO_NEW_PRIVILEGES: &str = "no-new-privileges:true";
/// Where the secrets tmpfs appears in the container (read-only, one file per secret).
pub const SECRETS_TARGET: &str = "/run/secrets";
/// The variable telling the task where its secrets are (a path, never a value).
pub const SECRETS_DIR_ENV: &str = "PINFOLD_SECRETS_DIR";

/// Everything the body is made of; all values are decided by the provider.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The resolved image id (`sha256:…`), never a tag.
    pub image_id: String,
    /// Numeric user and group.
    pub user: (u32, u32),
    /// Program and leading arguments.
    pub entrypoint: Vec<String>,
    /// Arguments after the entrypoint.
    pub cmd: Vec<String>,
    /// Absolute working directory.
    pub workdir: String,
    /// `NAME=VALUE` environment, exactly the manifest's.
    pub env: Vec<String>,
    /// Host staging directory mounted read-only at `input_target`.
    pub input_source: PathBuf,
    /// Guest path of the inputs.
    pub input_target: String,
    /// Host directory (the size-capped tmpfs) mounted writable at `output_target`.
    pub output_source: PathBuf,
    /// Guest path of the outputs.
    pub output_target: String,
    /// Host tmpfs holding the secret files, bound read-only at [`SECRETS_TARGET`]; `None`
    /// when the definition declares no secrets. Values never go into `env` (the daemon
    /// stores the create body on disk and shows it in `docker inspect`).
    pub secrets_source: Option<PathBuf>,
    /// Memory cgroup limit in bytes (swap forbidden: memory_swap is the same).
    pub memory: i64,
    /// CPU cap in billionths of a CPU.
    pub nano_cpus: i64,
    /// Most processes and threads in the container's pids cgroup (the task's own limit,
    /// plus the runtime's headroom under gVisor).
    pub pids: i64,
    /// `RLIMIT_NPROC` (soft and hard) for the task, set only where the runtime has its own
    /// kernel to count the task's processes with (gVisor): on the host kernel it would count
    /// every process of the uid on the machine.
    pub nproc: Option<i64>,
    /// Size of the `/tmp` tmpfs in bytes.
    pub tmp_bytes: u64,
    /// Size of `/dev/shm` in bytes.
    pub shm_bytes: i64,
    /// Soft and hard `RLIMIT_NOFILE`.
    pub nofile: i64,
    /// Labels (the job and instance labels).
    pub labels: HashMap<String, String>,
    /// OCI runtime to use; `None` is the daemon's default.
    pub runtime: Option<String>,
    /// Cap of the json-file log the daemon keeps on disk (we read through attach).
    pub log_max_bytes: u64,
    /// Whether to apply the hardening at all; `false` exists only for the benchmark that
    /// measures what hardening costs and is never set by the CLI or the node.
    pub hardened: bool,
}

fn tmp_options(bytes: u64) -> String {
    format!("rw,noexec,nosuid,nodev,size={bytes},mode=1777")
}

/// Writes the create body for a plan.
pub fn container_body(p: &Plan) -> ContainerCreateBody {
    let mut mounts = vec![
        Mount {
            target: Some(p.input_target.clone()),
            source: Some(p.input_source.display().to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            bind_options: Some(MountBindOptions {
                propagation: Some(MountBindOptionsPropagationEnum::RPRIVATE),
                ..Default::default()
            }),
            ..Default::default()
        },
        Mount {
            target: Some(p.output_target.clone()),
            source: Some(p.output_source.display().to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(false),
            bind_options: Some(MountBindOptions {
                propagation: Some(MountBindOptionsPropagationEnum::RPRIVATE),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    if let Some(src) = &p.secrets_source {
        mounts.push(Mount {
            target: Some(SECRETS_TARGET.into()),
            source: Some(src.display().to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            bind_options: Some(MountBindOptions {
                propagation: Some(MountBindOptionsPropagationEnum::RPRIVATE),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let host = if p.hardened {
        HostConfig {
            privileged: Some(false),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec![NO_NEW_PRIVILEGES.into()]),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([("/tmp".into(), tmp_options(p.tmp_bytes))])),
            memory: Some(p.memory),
            memory_swap: Some(p.memory),
            nano_cpus: Some(p.nano_cpus),
            pids_limit: Some(p.pids),
            ulimits: Some(ulimits(p)),
            network_mode: Some("none".into()),
            ipc_mode: Some("private".into()),
            cgroupns_mode: Some(HostConfigCgroupnsModeEnum::PRIVATE),
            shm_size: Some(p.shm_bytes),
            init: Some(true),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            log_config: Some(log_config(p.log_max_bytes)),
            mounts: Some(mounts),
            runtime: p.runtime.clone(),
            ..Default::default()
        }
    } else {
        HostConfig {
            mounts: Some(mounts),
            ..Default::default()
        }
    };
    ContainerCreateBody {
        user: Some(format!("{}:{}", p.user.0, p.user.1)),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        open_stdin: Some(false),
        env: Some(p.env.clone()),
        cmd: Some(p.cmd.clone()),
        image: Some(p.image_id.clone()),
        working_dir: Some(p.workdir.clone()),
        entrypoint: Some(p.entrypoint.clone()),
        network_disabled: p.hardened.then_some(true),
        labels: Some(p.labels.clone()),
        host_config: Some(host),
        ..Default::default()
    }
}

fn ulimits(p: &Plan) -> Vec<ResourcesUlimits> {
    let limit = |name: &str, v: i64| ResourcesUlimits {
        name: Some(name.into()),
        soft: Some(v),
        hard: Some(v),
    };
    let mut u = vec![limit("nofile", p.nofile), limit("core", 0)];
    if let Some(n) = p.nproc {
        u.push(limit("nproc", n));
    }
    u
}

fn log_config(max: u64) -> HostConfigLogConfig {
    HostConfigLogConfig {
        typ: Some("json-file".into()),
        config: Some(HashMap::from([
            ("max-size".into(), max.to_string()),
            ("max-file".into(), "1".into()),
        ])),
    }
}

/// Why a body or a created container failed the checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct Violations(pub Vec<String>);

const BODY_KEYS: &[&str] = &[
    "User",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "Tty",
    "OpenStdin",
    "Env",
    "Cmd",
    "Image",
    "WorkingDir",
    "Entrypoint",
    "NetworkDisabled",
    "Labels",
    "HostConfig",
];

const HOST_KEYS: &[&str] = &[
    "Privileged",
    "CapDrop",
    "SecurityOpt",
    "ReadonlyRootfs",
    "Tmpfs",
    "Memory",
    "MemorySwap",
    "NanoCpus",
    "PidsLimit",
    "Ulimits",
    "NetworkMode",
    "IpcMode",
    "CgroupnsMode",
    "ShmSize",
    "Init",
    "RestartPolicy",
    "LogConfig",
    "Mounts",
    "Runtime",
];

/// Security options that switch a confinement off; refused wherever they appear.
pub fn is_unconfining(opt: &str) -> bool {
    let o = opt.replace(':', "=").to_ascii_lowercase();
    o.starts_with("seccomp=")
        || o.starts_with("apparmor=unconfined")
        || o.starts_with("label=disable")
        || o.starts_with("systempaths=unconfined")
        || o.contains("unconfined")
}

/// Checks the wire form of a hardened body against the allowlist.
///
/// `sources` are the only host paths a mount may name (the provider's staging dirs and,
/// when there are secrets, the secrets tmpfs), `runtime` the only OCI runtime allowed.
pub fn validate_body(
    body: &ContainerCreateBody,
    input: (&str, &str),
    output: (&str, &str),
    secrets: Option<&str>,
    runtime: Option<&str>,
) -> Result<(), Violations> {
    let mut v = Vec::new();
    let wire = match serde_json::to_value(body) {
        Ok(Value::Object(m)) => m,
        _ => {
            return Err(Violations(vec![
                "the body does not serialise to an object".into(),
            ]));
        }
    };
    for k in wire.keys() {
        if !BODY_KEYS.contains(&k.as_str()) {
            v.push(format!("body key {k} is not allowed"));
        }
    }
    let bool_is = |m: &serde_json::Map<String, Value>, k: &str, want: bool| {
        m.get(k).and_then(Value::as_bool) == Some(want)
    };
    for (k, want) in [
        ("AttachStdin", false),
        ("Tty", false),
        ("OpenStdin", false),
        ("NetworkDisabled", true),
    ] {
        if !bool_is(&wire, k, want) {
            v.push(format!("{k} must be {want}"));
        }
    }
    match wire.get("User").and_then(Value::as_str) {
        Some(u) if is_numeric_user(u) => {}
        other => v.push(format!("User must be numeric uid:gid, got {other:?}")),
    }
    match wire.get("WorkingDir").and_then(Value::as_str) {
        Some(w) if w.starts_with('/') && !under_pseudo_fs(w) => {}
        other => v.push(format!(
            "WorkingDir must be absolute and outside /proc, /sys and /dev, got {other:?}"
        )),
    }
    match wire.get("Image").and_then(Value::as_str) {
        Some(i) if is_image_id(i) => {}
        other => v.push(format!(
            "Image must be a resolved id sha256:<hex>, got {other:?}"
        )),
    }
    match wire.get("Entrypoint").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => {}
        _ => v.push("Entrypoint must be explicit".into()),
    }
    if !wire.get("Cmd").is_some_and(Value::is_array) {
        v.push("Cmd must be explicit".into());
    }
    match wire.get("Labels").and_then(Value::as_object) {
        Some(l)
            if l.get(JOB_LABEL)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty()) => {}
        _ => v.push(format!("the {JOB_LABEL} label is missing")),
    }
    let Some(Value::Object(h)) = wire.get("HostConfig") else {
        v.push("HostConfig is missing".into());
        return Err(Violations(v));
    };
    for k in h.keys() {
        if !HOST_KEYS.contains(&k.as_str()) {
            v.push(format!("HostConfig key {k} is not allowed"));
        }
    }
    for (k, want) in [
        ("Privileged", false),
        ("ReadonlyRootfs", true),
        ("Init", true),
    ] {
        if !bool_is(h, k, want) {
            v.push(format!("HostConfig.{k} must be {want}"));
        }
    }
    if h.get("CapDrop") != Some(&serde_json::json!(["ALL"])) {
        v.push("HostConfig.CapDrop must be [\"ALL\"]".into());
    }
    if h.get("SecurityOpt") != Some(&serde_json::json!([NO_NEW_PRIVILEGES])) {
        v.push(format!(
            "HostConfig.SecurityOpt must be [{NO_NEW_PRIVILEGES:?}]"
        ));
    }
    for (k, want) in [
        ("NetworkMode", "none"),
        ("IpcMode", "private"),
        ("CgroupnsMode", "private"),
    ] {
        if h.get(k).and_then(Value::as_str) != Some(want) {
            v.push(format!("HostConfig.{k} must be {want:?}"));
        }
    }
    let pos = |k: &str| h.get(k).and_then(Value::as_i64).filter(|n| *n > 0);
    for k in ["Memory", "NanoCpus", "PidsLimit", "ShmSize"] {
        if pos(k).is_none() {
            v.push(format!("HostConfig.{k} must be set and positive"));
        }
    }
    if pos("MemorySwap") != pos("Memory") {
        v.push("HostConfig.MemorySwap must equal Memory (no swap)".into());
    }
    match h.get("Tmpfs").and_then(Value::as_object) {
        Some(t) if t.len() == 1 => match t.get("/tmp").and_then(Value::as_str) {
            Some(o)
                if ["noexec", "nosuid", "nodev"]
                    .iter()
                    .all(|f| o.split(',').any(|x| x == *f))
                    && o.split(',').any(|x| x.starts_with("size=")) => {}
            _ => v.push("HostConfig.Tmpfs must be a sized noexec,nosuid,nodev /tmp only".into()),
        },
        _ => v.push("HostConfig.Tmpfs must be a sized noexec,nosuid,nodev /tmp only".into()),
    }
    if let Some(u) = h.get("Ulimits").and_then(Value::as_array) {
        for l in u {
            let name = l.get("Name").and_then(Value::as_str).unwrap_or("");
            // Each only lowers a limit; `nproc` is how gVisor holds the task's processes.
            if !["nofile", "core", "nproc"].contains(&name) {
                v.push(format!("ulimit {name:?} is not allowed"));
            }
        }
    }
    match h
        .get("RestartPolicy")
        .and_then(|r| r.get("Name"))
        .and_then(Value::as_str)
    {
        Some("no") => {}
        _ => v.push("HostConfig.RestartPolicy must be no".into()),
    }
    let log = h.get("LogConfig");
    if log.and_then(|l| l.get("Type")).and_then(Value::as_str) != Some("json-file")
        || log
            .and_then(|l| l.get("Config"))
            .and_then(|c| c.get("max-size"))
            .is_none()
    {
        v.push("HostConfig.LogConfig must be a size-capped json-file".into());
    }
    match (h.get("Runtime").and_then(Value::as_str), runtime) {
        (None, None) => {}
        (Some(a), Some(b)) if a == b => {}
        (got, _) => v.push(format!(
            "HostConfig.Runtime {got:?} is not the configured runtime"
        )),
    }
    let mut want_mounts = vec![
        serde_json::json!({"Target": input.1, "Source": input.0, "Type": "bind", "ReadOnly": true,
         "BindOptions": {"Propagation": "rprivate"}}),
        serde_json::json!({"Target": output.1, "Source": output.0, "Type": "bind", "ReadOnly": false,
         "BindOptions": {"Propagation": "rprivate"}}),
    ];
    if let Some(src) = secrets {
        want_mounts.push(serde_json::json!({"Target": SECRETS_TARGET, "Source": src,
            "Type": "bind", "ReadOnly": true, "BindOptions": {"Propagation": "rprivate"}}));
    }
    if h.get("Mounts") != Some(&Value::Array(want_mounts)) {
        v.push(
            "HostConfig.Mounts must be exactly the input (read-only) and output staging binds \
             (and the read-only secrets tmpfs when there are secrets)"
                .into(),
        );
    }
    let secrets_source = secrets.map(|s| (s, SECRETS_TARGET));
    for (src, _) in [input, output].into_iter().chain(secrets_source) {
        if !src.starts_with('/') || src.contains("docker.sock") || src == "/" {
            v.push(format!(
                "mount source {src:?} is not a provider staging directory"
            ));
        }
    }
    if v.is_empty() {
        Ok(())
    } else {
        Err(Violations(v))
    }
}

fn is_numeric_user(u: &str) -> bool {
    u.split_once(':').is_some_and(|(a, b)| {
        !a.is_empty() && !b.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
    })
}

fn is_image_id(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether a guest path is `/proc`, `/sys` or `/dev` or beneath them (CVE-2024-21626).
pub fn under_pseudo_fs(p: &str) -> bool {
    let p = p.trim_end_matches('/');
    ["/proc", "/sys", "/dev"]
        .iter()
        .any(|r| p == *r || p.starts_with(&format!("{r}/")))
}

/// Compares the daemon's view of a created container with the hardened plan.
pub fn verify_created(
    got: &ContainerInspectResponse,
    p: &Plan,
    default_runtime: &str,
    image_env: &[String],
) -> Result<(), Violations> {
    let mut v = Vec::new();
    let Some(h) = got.host_config.as_ref() else {
        return Err(Violations(vec!["inspect shows no HostConfig".into()]));
    };
    let Some(c) = got.config.as_ref() else {
        return Err(Violations(vec!["inspect shows no Config".into()]));
    };
    let mut check = |ok: bool, what: String| {
        if !ok {
            v.push(what);
        }
    };
    let empty = |x: Option<usize>| x.unwrap_or(0) == 0;
    check(
        h.privileged == Some(false),
        format!("privileged is {:?}", h.privileged),
    );
    check(
        h.cap_drop
            .as_deref()
            .is_some_and(|d| d.iter().any(|c| c.eq_ignore_ascii_case("ALL"))),
        format!("cap_drop is {:?}", h.cap_drop),
    );
    check(
        empty(h.cap_add.as_ref().map(Vec::len)),
        format!("cap_add is {:?}", h.cap_add),
    );
    check(
        h.security_opt.as_deref() == Some(&[NO_NEW_PRIVILEGES.to_string()][..]),
        format!("security_opt is {:?}", h.security_opt),
    );
    check(
        h.readonly_rootfs == Some(true),
        format!("readonly_rootfs is {:?}", h.readonly_rootfs),
    );
    check(
        h.memory == Some(p.memory),
        format!("memory is {:?}", h.memory),
    );
    check(
        h.memory_swap == Some(p.memory),
        format!("memory_swap is {:?}", h.memory_swap),
    );
    check(
        h.nano_cpus == Some(p.nano_cpus),
        format!("nano_cpus is {:?}", h.nano_cpus),
    );
    check(
        h.pids_limit == Some(p.pids),
        format!("pids_limit is {:?}", h.pids_limit),
    );
    check(
        h.oom_kill_disable != Some(true),
        "oom_kill_disable is set".into(),
    );
    check(
        h.network_mode.as_deref() == Some("none"),
        format!("network_mode is {:?}", h.network_mode),
    );
    check(
        c.network_disabled == Some(true),
        format!("network_disabled is {:?}", c.network_disabled),
    );
    check(
        h.ipc_mode.as_deref() == Some("private"),
        format!("ipc_mode is {:?}", h.ipc_mode),
    );
    check(
        h.cgroupns_mode == Some(HostConfigCgroupnsModeEnum::PRIVATE),
        format!("cgroupns_mode is {:?}", h.cgroupns_mode),
    );
    for (name, val) in [
        ("pid_mode", &h.pid_mode),
        ("uts_mode", &h.uts_mode),
        ("userns_mode", &h.userns_mode),
    ] {
        check(
            val.as_deref().unwrap_or("").is_empty(),
            format!("{name} is {val:?}"),
        );
    }
    check(
        empty(h.devices.as_ref().map(Vec::len)),
        format!("devices are {:?}", h.devices),
    );
    check(
        empty(h.device_cgroup_rules.as_ref().map(Vec::len)),
        format!("device_cgroup_rules are {:?}", h.device_cgroup_rules),
    );
    check(
        empty(h.device_requests.as_ref().map(Vec::len)),
        "device_requests are set".into(),
    );
    check(
        empty(h.sysctls.as_ref().map(HashMap::len)),
        format!("sysctls are {:?}", h.sysctls),
    );
    check(
        empty(h.binds.as_ref().map(Vec::len)),
        format!("binds are {:?}", h.binds),
    );
    check(
        empty(h.volumes_from.as_ref().map(Vec::len)),
        "volumes_from is set".into(),
    );
    check(
        empty(h.group_add.as_ref().map(Vec::len)),
        format!("group_add is {:?}", h.group_add),
    );
    check(
        h.cgroup_parent.as_deref().unwrap_or("").is_empty(),
        "cgroup_parent is set".into(),
    );
    // The daemon fills in its default masked and read-only paths; empty lists would mean
    // /proc and /sys are exposed.
    check(
        h.masked_paths
            .as_deref()
            .is_some_and(|m| m.iter().any(|x| x == "/proc/kcore")),
        format!("masked_paths are {:?}", h.masked_paths),
    );
    check(
        h.readonly_paths
            .as_deref()
            .is_some_and(|m| m.iter().any(|x| x == "/proc/sys")),
        format!("readonly_paths are {:?}", h.readonly_paths),
    );
    check(h.init == Some(true), format!("init is {:?}", h.init));
    check(
        h.restart_policy
            .as_ref()
            .and_then(|r| r.name)
            .is_none_or(|n| matches!(n, RestartPolicyNameEnum::NO | RestartPolicyNameEnum::EMPTY)),
        format!("restart_policy is {:?}", h.restart_policy),
    );
    check(
        h.log_config == Some(log_config(p.log_max_bytes)),
        format!("log_config is {:?}", h.log_config),
    );
    check(
        h.tmpfs
            == Some(HashMap::from([(
                "/tmp".to_string(),
                tmp_options(p.tmp_bytes),
            )])),
        format!("tmpfs is {:?}", h.tmpfs),
    );
    check(
        h.shm_size == Some(p.shm_bytes),
        format!("shm_size is {:?}", h.shm_size),
    );
    let want_ulimits: BTreeMap<String, (Option<i64>, Option<i64>)> = ulimits(p)
        .into_iter()
        .map(|u| (u.name.unwrap_or_default(), (u.soft, u.hard)))
        .collect();
    let got_ulimits: BTreeMap<String, (Option<i64>, Option<i64>)> = h
        .ulimits
        .iter()
        .flatten()
        .map(|u| (u.name.clone().unwrap_or_default(), (u.soft, u.hard)))
        .collect();
    check(
        got_ulimits == want_ulimits,
        format!("ulimits are {:?}", h.ulimits),
    );
    let runtime = p.runtime.as_deref().unwrap_or(default_runtime);
    check(
        h.runtime.as_deref() == Some(runtime),
        format!("runtime is {:?}, expected {runtime:?}", h.runtime),
    );
    check(
        !got.app_armor_profile
            .as_deref()
            .unwrap_or("")
            .eq_ignore_ascii_case("unconfined"),
        "apparmor profile is unconfined".into(),
    );
    // Mounts as the daemon resolved them: exactly our two binds, with the right modes.
    let mounts: BTreeSet<(String, String, bool)> = got
        .mounts
        .iter()
        .flatten()
        .map(|m| {
            (
                m.destination.clone().unwrap_or_default(),
                m.source.clone().unwrap_or_default(),
                m.rw.unwrap_or(true),
            )
        })
        .collect();
    let mut want: BTreeSet<(String, String, bool)> = [
        (
            p.input_target.clone(),
            p.input_source.display().to_string(),
            false,
        ),
        (
            p.output_target.clone(),
            p.output_source.display().to_string(),
            true,
        ),
    ]
    .into();
    if let Some(src) = &p.secrets_source {
        want.insert((SECRETS_TARGET.into(), src.display().to_string(), false));
    }
    check(mounts == want, format!("mounts are {mounts:?}"));
    check(
        got.mounts
            .iter()
            .flatten()
            .all(|m| m.typ.as_deref() == Some("bind")),
        "a mount is not a bind of a staging directory".into(),
    );
    // The process as configured.
    check(
        c.user.as_deref() == Some(&format!("{}:{}", p.user.0, p.user.1)[..]),
        format!("user is {:?}", c.user),
    );
    check(
        c.working_dir.as_deref() == Some(p.workdir.as_str()),
        format!("working_dir is {:?}", c.working_dir),
    );
    check(
        c.entrypoint.as_ref() == Some(&p.entrypoint),
        format!("entrypoint is {:?}", c.entrypoint),
    );
    check(
        c.cmd.as_ref() == Some(&p.cmd),
        format!("cmd is {:?}", c.cmd),
    );
    check(
        got.image.as_deref() == Some(p.image_id.as_str()),
        format!("image is {:?}", got.image),
    );
    check(
        c.tty != Some(true) && c.open_stdin != Some(true),
        "a tty or stdin is attached".into(),
    );
    check(
        p.labels
            .iter()
            .all(|(k, val)| c.labels.as_ref().and_then(|l| l.get(k)) == Some(val)),
        format!("labels are {:?}", c.labels),
    );
    check(
        c.env
            .iter()
            .flatten()
            .all(|e| p.env.contains(e) || image_env.contains(e)),
        format!("environment has unexpected entries: {:?}", c.env),
    );
    if v.is_empty() {
        Ok(())
    } else {
        Err(Violations(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            image_id: format!("sha256:{}", "a".repeat(64)),
            user: (65534, 65534),
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["true".into()],
            workdir: "/".into(),
            env: vec!["LANG=C".into()],
            input_source: "/tmp/in".into(),
            input_target: "/input".into(),
            output_source: "/tmp/job/out".into(),
            output_target: "/output".into(),
            secrets_source: None,
            memory: 64 << 20,
            nano_cpus: 1_000_000_000,
            pids: 64,
            nproc: None,
            tmp_bytes: 16 << 20,
            shm_bytes: 1 << 20,
            nofile: 1024,
            labels: HashMap::from([(JOB_LABEL.into(), "j1".into())]),
            runtime: None,
            log_max_bytes: 1 << 20,
            hardened: true,
        }
    }

    fn check(b: &ContainerCreateBody) -> Result<(), Violations> {
        validate_body(
            b,
            ("/tmp/in", "/input"),
            ("/tmp/job/out", "/output"),
            None,
            None,
        )
    }

    #[test]
    fn the_hardened_body_passes_the_allowlist() {
        check(&container_body(&plan())).unwrap();
    }

    #[test]
    fn the_allowlist_refuses_every_escape_hatch() {
        let base = container_body(&plan());
        type Mutation = Box<dyn Fn(&mut HostConfig)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "Binds",
                Box::new(|h| h.binds = Some(vec!["/:/host".into()])),
            ),
            ("Privileged", Box::new(|h| h.privileged = Some(true))),
            (
                "CapAdd",
                Box::new(|h| h.cap_add = Some(vec!["SYS_ADMIN".into()])),
            ),
            (
                "SecurityOpt",
                Box::new(|h| {
                    h.security_opt =
                        Some(vec![NO_NEW_PRIVILEGES.into(), "seccomp=unconfined".into()])
                }),
            ),
            (
                "apparmor",
                Box::new(|h| h.security_opt = Some(vec!["apparmor=unconfined".into()])),
            ),
            (
                "label",
                Box::new(|h| h.security_opt = Some(vec!["label=disable".into()])),
            ),
            (
                "Devices",
                Box::new(|h| h.devices = Some(vec![Default::default()])),
            ),
            (
                "Sysctls",
                Box::new(|h| h.sysctls = Some(HashMap::from([("kernel.x".into(), "1".into())]))),
            ),
            ("MaskedPaths", Box::new(|h| h.masked_paths = Some(vec![]))),
            (
                "ReadonlyPaths",
                Box::new(|h| h.readonly_paths = Some(vec![])),
            ),
            ("PidMode", Box::new(|h| h.pid_mode = Some("host".into()))),
            ("UTSMode", Box::new(|h| h.uts_mode = Some("host".into()))),
            (
                "UsernsMode",
                Box::new(|h| h.userns_mode = Some("host".into())),
            ),
            (
                "NetworkMode",
                Box::new(|h| h.network_mode = Some("host".into())),
            ),
            ("IpcMode", Box::new(|h| h.ipc_mode = Some("host".into()))),
            ("MemorySwap", Box::new(|h| h.memory_swap = Some(-1))),
            (
                "ReadonlyRootfs",
                Box::new(|h| h.readonly_rootfs = Some(false)),
            ),
            (
                "docker.sock",
                Box::new(|h| {
                    if let Some(m) = h.mounts.as_mut() {
                        m.push(Mount {
                            target: Some("/var/run/docker.sock".into()),
                            source: Some("/var/run/docker.sock".into()),
                            typ: Some(MountType::BIND),
                            ..Default::default()
                        })
                    }
                }),
            ),
            (
                "volume",
                Box::new(|h| {
                    if let Some(m) = h.mounts.as_mut() {
                        m[0].typ = Some(MountType::VOLUME)
                    }
                }),
            ),
            (
                "writable input",
                Box::new(|h| {
                    if let Some(m) = h.mounts.as_mut() {
                        m[0].read_only = Some(false)
                    }
                }),
            ),
            (
                "Runtime",
                Box::new(|h| h.runtime = Some("runc-unsafe".into())),
            ),
        ];
        for (what, f) in cases {
            let mut b = base.clone();
            f(b.host_config.as_mut().unwrap());
            assert!(check(&b).is_err(), "{what} was not refused");
        }
        let mut b = base.clone();
        b.image = Some("busybox:latest".into());
        assert!(check(&b).is_err(), "a tag was not refused");
        let mut b = base.clone();
        b.user = Some("root".into());
        assert!(check(&b).is_err());
        let mut b = base.clone();
        b.working_dir = Some("/proc/self/fd/7".into());
        assert!(check(&b).is_err());
        let mut b = base.clone();
        b.volumes = Some(vec!["/data".into()]);
        assert!(check(&b).is_err());
        let mut b = base;
        b.network_disabled = Some(false);
        assert!(check(&b).is_err());
    }

    #[test]
    fn the_secrets_bind_is_admitted_only_read_only_and_never_carries_values() {
        let mut p = plan();
        p.secrets_source = Some("/tmp/job/secrets".into());
        p.env.push(format!("{SECRETS_DIR_ENV}={SECRETS_TARGET}"));
        let body = container_body(&p);
        let with = |b: &ContainerCreateBody, src: Option<&str>| {
            validate_body(
                b,
                ("/tmp/in", "/input"),
                ("/tmp/job/out", "/output"),
                src,
                None,
            )
        };
        with(&body, Some("/tmp/job/secrets")).unwrap();
        // Without secrets declared, the extra bind is refused; so is a writable one or
        // one from another source.
        assert!(with(&body, None).is_err());
        assert!(with(&body, Some("/tmp/other")).is_err());
        let mut b = body.clone();
        if let Some(m) = b.host_config.as_mut().and_then(|h| h.mounts.as_mut()) {
            m[2].read_only = Some(false);
        }
        assert!(with(&b, Some("/tmp/job/secrets")).is_err());
        // The wire form names the directory only: a path, never a secret's bytes.
        let wire = serde_json::to_string(&body).unwrap();
        assert!(wire.contains("PINFOLD_SECRETS_DIR=/run/secrets"), "{wire}");
        assert_eq!(
            body.env.as_ref().map(Vec::len),
            Some(2),
            "only LANG and the directory"
        );
    }

    #[test]
    fn unconfining_options_are_recognised() {
        for o in [
            "seccomp=unconfined",
            "seccomp:unconfined",
            "apparmor=unconfined",
            "label=disable",
            "label:disable",
            "seccomp={}",
            "systempaths=unconfined",
        ] {
            assert!(is_unconfining(o), "{o}");
        }
        assert!(!is_unconfining(NO_NEW_PRIVILEGES));
    }

    #[test]
    fn pseudo_filesystems_are_recognised() {
        for p in ["/proc", "/proc/self/fd/7", "/sys/", "/dev/shm"] {
            assert!(under_pseudo_fs(p), "{p}");
        }
        for p in ["/", "/procfs", "/work", "/device"] {
            assert!(!under_pseudo_fs(p), "{p}");
        }
    }
}
