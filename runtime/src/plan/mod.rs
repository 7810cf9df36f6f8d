//! The launch plan: everything the init must do, as typed data, computed from the spec by
//! pure code. The plan crosses a process boundary (shim -> launcher) as JSON.

pub mod cgroupfs;
pub mod devices;
pub mod hooks;
pub mod idmap;
pub mod kernel;
pub mod mounts;
pub mod namespaces;
pub mod process;
pub mod seccomp;

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

pub use self::{
    devices::DeviceNode,
    hooks::{HookKind, HookPlan, HooksPlan},
    kernel::KernelPlan,
    mounts::MountPlan,
    namespaces::{NamespaceKind, NamespacePlan},
    process::ProcessPlan,
    seccomp::SeccompPlan,
};
use crate::{
    cgroups::{self, CgroupDriver, CgroupPlan, Layout},
    Error, Result,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchPlan {
    pub id: String,
    /// Absolute host path of the container's root filesystem.
    pub rootfs: PathBuf,
    pub readonly_root: bool,
    /// Propagation of the container's "/" (defaults to rslave, as runc).
    pub rootfs_propagation: u64,
    pub namespaces: NamespacePlan,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub mounts: Vec<MountPlan>,
    pub devices: Vec<DeviceNode>,
    pub masked_paths: Vec<PathBuf>,
    pub readonly_paths: Vec<PathBuf>,
    /// sysctls, loopback, personality, scheduler, I/O priority, affinity, LSM labels.
    #[serde(default)]
    pub kernel: KernelPlan,
    /// MS_MOVE + chroot instead of pivot_root (containerd's `no_pivot_root` option).
    #[serde(default)]
    pub no_pivot_root: bool,
    pub process: ProcessPlan,
    pub cgroup: CgroupPlan,
    pub hooks: HooksPlan,
    pub seccomp: Option<SeccompPlan>,
    /// An extra process in a running container (exec): it joins the container's
    /// namespaces and cgroup and leaves the rootfs as it is.
    #[serde(default)]
    pub exec: bool,
}

/// An exec's process, planned when the exec is added: the process part, and its own LSM
/// labels (the container's apply where it names none, as with runc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecProcessPlan {
    pub process: ProcessPlan,
    pub apparmor_profile: Option<String>,
    pub selinux_label: Option<String>,
}

/// Plans the process spec of an exec request.
pub fn plan_exec_process(p: &oci_spec::runtime::Process) -> Result<ExecProcessPlan> {
    let label = |l: &Option<String>| l.clone().filter(|s| !s.is_empty());
    Ok(ExecProcessPlan {
        process: process::plan_process(p)?,
        apparmor_profile: label(p.apparmor_profile()),
        selinux_label: label(p.selinux_label()),
    })
}

/// The plan for an exec: process `exec` joins every namespace of the container whose init
/// is `init_pid` and its cgroup.
pub fn exec_plan(container: &LaunchPlan, init_pid: i32, exec: &ExecProcessPlan) -> LaunchPlan {
    let process = exec.process.clone();
    let kinds = container
        .namespaces
        .create
        .iter()
        .copied()
        .chain(container.namespaces.join.iter().map(|(k, _)| *k));
    LaunchPlan {
        id: container.id.clone(),
        rootfs: container.rootfs.clone(),
        readonly_root: container.readonly_root,
        rootfs_propagation: container.rootfs_propagation,
        namespaces: NamespacePlan {
            create: Vec::new(),
            join: kinds
                .map(|k| {
                    (
                        k,
                        PathBuf::from(format!("/proc/{init_pid}/ns/{}", k.proc_name())),
                    )
                })
                .collect(),
            ..Default::default()
        },
        hostname: None,
        domainname: None,
        mounts: Vec::new(),
        devices: Vec::new(),
        masked_paths: Vec::new(),
        readonly_paths: Vec::new(),
        process,
        cgroup: CgroupPlan {
            dirs: container.cgroup.dirs.clone(),
            unified_root: container.cgroup.unified_root.clone(),
            ..Default::default()
        },
        // Container-wide settings stay as the init left them; the process-level ones
        // follow the container's (personality), or the exec's own (LSM labels).
        kernel: KernelPlan {
            personality: container.kernel.personality,
            apparmor_profile: exec
                .apparmor_profile
                .clone()
                .or_else(|| container.kernel.apparmor_profile.clone()),
            selinux_label: exec
                .selinux_label
                .clone()
                .or_else(|| container.kernel.selinux_label.clone()),
            ..Default::default()
        },
        no_pivot_root: container.no_pivot_root,
        // Hooks belong to the container's lifecycle, not to its execs.
        hooks: HooksPlan::default(),
        // The container's filter applies to its execs too (as with runc).
        seccomp: container.seccomp.clone(),
        exec: true,
    }
}

fn propagation(value: &str) -> Result<u64> {
    let f = match value {
        "" | "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        other => {
            return Err(Error::invalid(
                "linux.rootfsPropagation",
                format!("unknown propagation {other:?}"),
            ))
        }
    };
    Ok(f.bits())
}

fn absolute_paths(field: &str, paths: Option<&Vec<String>>) -> Result<Vec<PathBuf>> {
    paths
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, p)| {
            if p.starts_with('/') {
                Ok(PathBuf::from(p))
            } else {
                Err(Error::invalid(
                    format!("{field}[{i}]"),
                    format!("{p:?} is not an absolute path"),
                ))
            }
        })
        .collect()
}

/// Fields of the spec this runtime does not implement yet: refused, never silently ignored.
fn reject_unimplemented(spec: &Spec) -> Result<()> {
    let Some(linux) = spec.linux() else {
        return Ok(());
    };
    let checks = [
        ("linux.intelRdt", linux.intel_rdt().is_some()),
        ("linux.memoryPolicy", linux.memory_policy().is_some()),
        (
            "linux.netDevices",
            linux.net_devices().as_ref().is_some_and(|v| !v.is_empty()),
        ),
        (
            "linux.mountLabel",
            linux.mount_label().as_ref().is_some_and(|v| !v.is_empty()),
        ),
    ];
    for (field, set) in checks {
        if set {
            return Err(Error::unsupported(field, "not implemented yet"));
        }
    }
    Ok(())
}

/// Builds the plan for container `id` of `bundle` on a host with this cgroup `layout`, with
/// the cgroupfs driver.
pub fn build(spec: &Spec, bundle: &Path, id: &str, layout: &Layout) -> Result<LaunchPlan> {
    build_for(spec, bundle, id, layout, CgroupDriver::Cgroupfs)
}

/// [`build`] with the cgroup driver the runtime options ask for.
pub fn build_for(
    spec: &Spec,
    bundle: &Path,
    id: &str,
    layout: &Layout,
    driver: CgroupDriver,
) -> Result<LaunchPlan> {
    reject_unimplemented(spec)?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::invalid("root", "missing"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::invalid("process", "missing"))?;
    let default_linux = oci_spec::runtime::Linux::default();
    let linux = spec.linux().as_ref().unwrap_or(&default_linux);

    let namespaces = namespaces::plan_linux_namespaces(linux)?;
    if !namespaces.has(NamespaceKind::Mount) {
        return Err(Error::unsupported(
            "linux.namespaces",
            "a container without its own mount namespace is not supported",
        ));
    }
    let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
    let domainname = spec.domainname().clone().filter(|h| !h.is_empty());
    for (field, set) in [("hostname", &hostname), ("domainname", &domainname)] {
        if set.is_some() && !namespaces.has(NamespaceKind::Uts) {
            return Err(Error::invalid(
                field,
                format!("setting the {field} needs a UTS namespace in linux.namespaces"),
            ));
        }
    }

    let mut mounts = spec
        .mounts()
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, m)| mounts::plan_mount(i, m, bundle))
        .collect::<Result<Vec<_>>>()?;
    idmap::complete_mount_idmaps(&mut mounts, &namespaces)?;
    let devices = devices::plan_devices(linux.devices().as_deref().unwrap_or_default())?;
    let cgroup = cgroups::plan_cgroup_for(linux, id, &devices, layout, driver)?;
    cgroupfs::plan_cgroup_mounts(&mut mounts, &cgroup, layout)?;
    let kernel = kernel::plan_kernel(linux, process, &namespaces, hostname.as_deref())?;

    Ok(LaunchPlan {
        id: id.to_owned(),
        rootfs,
        readonly_root: root.readonly().unwrap_or(false),
        rootfs_propagation: propagation(linux.rootfs_propagation().as_deref().unwrap_or(""))?,
        namespaces,
        hostname,
        domainname,
        mounts,
        devices,
        masked_paths: absolute_paths("linux.maskedPaths", linux.masked_paths().as_ref())?,
        readonly_paths: absolute_paths("linux.readonlyPaths", linux.readonly_paths().as_ref())?,
        kernel,
        no_pivot_root: false,
        process: process::plan_process(process)?,
        cgroup,
        hooks: hooks::plan_hooks(spec, bundle, id)?,
        seccomp: seccomp::plan_seccomp(spec, bundle, id)?,
        exec: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec `ctr run` generates (containerd 1.6 default spec), trimmed of nothing.
    pub(crate) const CTR_DEFAULT_SPEC: &str = include_str!("testdata/ctr-default-spec.json");

    fn layout() -> Layout {
        Layout::parse(
            "31 30 0:27 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices\n\
             35 30 0:31 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
        )
    }

    #[test]
    fn ctr_default_spec_plans_completely() {
        let spec =
            crate::spec::parse(CTR_DEFAULT_SPEC.as_bytes(), Path::new("config.json")).unwrap();
        let plan = build(&spec, Path::new("/run/b"), "c1", &layout()).unwrap();
        assert_eq!(plan.rootfs, PathBuf::from("/run/b/rootfs"));
        assert_eq!(plan.process.args, ["echo", "hello"]);
        assert!(plan.namespaces.creates(NamespaceKind::Pid));
        let dests: Vec<_> = plan
            .mounts
            .iter()
            .map(|m| m.destination.to_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/run"
            ]
        );
        let dev = &plan.mounts[1];
        assert_eq!(dev.fstype.as_deref(), Some("tmpfs"));
        assert_eq!(dev.data, "mode=755,size=65536k");
        assert_eq!(
            dev.flags,
            (MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME).bits()
        );
        assert!(plan.masked_paths.contains(&PathBuf::from("/proc/kcore")));
        assert!(plan.readonly_paths.contains(&PathBuf::from("/proc/sys")));
        assert_eq!(
            plan.cgroup.dirs[0],
            PathBuf::from("/sys/fs/cgroup/devices/default/c1")
        );
        assert_eq!(
            plan.rootfs_propagation,
            (MsFlags::MS_SLAVE | MsFlags::MS_REC).bits()
        );
        // The plan survives the trip to the launcher.
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<LaunchPlan>(&json).unwrap(), plan);
    }

    #[test]
    fn unimplemented_fields_are_refused_by_name() {
        let mut v: serde_json::Value = serde_json::from_str(CTR_DEFAULT_SPEC).unwrap();
        v["linux"]["intelRdt"] = serde_json::json!({"closID":"x"});
        let spec: Spec = serde_json::from_value(v).unwrap();
        let e = build(&spec, Path::new("/b"), "c", &layout())
            .unwrap_err()
            .to_string();
        assert!(e.contains("linux.intelRdt"), "{e}");
    }

    fn with_userns(namespaces: serde_json::Value) -> LaunchPlan {
        let mut v: serde_json::Value = serde_json::from_str(CTR_DEFAULT_SPEC).unwrap();
        let map = serde_json::json!([{"containerID":0,"hostID":100000,"size":65536}]);
        v["linux"]["uidMappings"] = map.clone();
        v["linux"]["gidMappings"] = map;
        v["linux"]["namespaces"] = namespaces;
        let spec: Spec = serde_json::from_value(v).unwrap();
        build(&spec, Path::new("/b"), "c", &layout()).unwrap()
    }

    #[test]
    fn ctr_uidmap_spec_clones_a_user_namespace_and_mounts_as_asked() {
        // What `ctr run --uidmap 0:100000:65536 --gidmap 0:100000:65536` generates.
        let plan = with_userns(serde_json::json!([
            {"type":"pid"},{"type":"ipc"},{"type":"uts"},{"type":"mount"},{"type":"network"},
            {"type":"user"}
        ]));
        assert_ne!(plan.namespaces.clone_flags() & libc::CLONE_NEWUSER, 0);
        let sys = plan
            .mounts
            .iter()
            .find(|m| m.destination == Path::new("/sys"));
        assert_eq!(sys.unwrap().fstype.as_deref(), Some("sysfs"));
        let mq = plan
            .mounts
            .iter()
            .find(|m| m.destination == Path::new("/dev/mqueue"));
        assert_eq!(mq.unwrap().fstype.as_deref(), Some("mqueue"));
    }

    #[test]
    fn hostname_without_uts_namespace_is_refused() {
        let mut v: serde_json::Value = serde_json::from_str(CTR_DEFAULT_SPEC).unwrap();
        v["hostname"] = "h".into();
        v["linux"]["namespaces"] = serde_json::json!([{"type":"mount"}]);
        let spec: Spec = serde_json::from_value(v).unwrap();
        let e = build(&spec, Path::new("/b"), "c", &layout())
            .unwrap_err()
            .to_string();
        assert!(e.contains("hostname"), "{e}");
        let mut v: serde_json::Value = serde_json::from_str(CTR_DEFAULT_SPEC).unwrap();
        v["domainname"] = "example.org".into();
        v["linux"]["namespaces"] = serde_json::json!([{"type":"mount"}]);
        let spec: Spec = serde_json::from_value(v).unwrap();
        let e = build(&spec, Path::new("/b"), "c", &layout())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("config.json: domainname: "), "{e}");
    }

    #[test]
    fn kernel_settings_and_cgroup_mounts_are_planned() {
        let mut v: serde_json::Value = serde_json::from_str(CTR_DEFAULT_SPEC).unwrap();
        v["domainname"] = "example.org".into();
        v["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ip_forward": "1"});
        v["linux"]["personality"] = serde_json::json!({"domain": "LINUX32"});
        v["process"]["scheduler"] = serde_json::json!({"policy": "SCHED_IDLE"});
        v["process"]["ioPriority"] = serde_json::json!({"class": "IOPRIO_CLASS_BE", "priority": 4});
        v["process"]["execCPUAffinity"] = serde_json::json!({"final": "0"});
        v["process"]["apparmorProfile"] = "p".into();
        v["mounts"].as_array_mut().unwrap().push(
            serde_json::json!({"destination": "/sys/fs/cgroup", "type": "cgroup",
                "source": "cgroup", "options": ["ro", "nosuid"]}),
        );
        let spec: Spec = serde_json::from_value(v).unwrap();
        let plan = build(&spec, Path::new("/b"), "c", &layout()).unwrap();
        assert_eq!(plan.domainname.as_deref(), Some("example.org"));
        assert_eq!(plan.kernel.sysctls[0].key, "net.ipv4.ip_forward");
        assert!(plan.kernel.loopback_up);
        assert_eq!(plan.kernel.personality, Some(8));
        assert_eq!(
            plan.kernel.scheduler.unwrap().policy,
            libc::SCHED_IDLE as u32
        );
        assert_eq!(plan.kernel.io_priority, Some((2 << 13) | 4));
        assert_eq!(plan.kernel.cpu_affinity_final, Some(vec![0]));
        assert_eq!(plan.kernel.apparmor_profile.as_deref(), Some("p"));
        let cg = plan.mounts.last().unwrap().cgroup.as_ref().unwrap();
        let names: Vec<_> = cg.binds.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["devices", "unified"]);
        assert!(!plan.no_pivot_root);
    }

    #[test]
    fn exec_joins_every_container_namespace_and_touches_no_mounts() {
        let mut v: serde_json::Value = serde_json::from_str(CTR_DEFAULT_SPEC).unwrap();
        v["linux"]["namespaces"] = serde_json::json!([
            {"type":"pid"},{"type":"network","path":"/proc/9/ns/net"},{"type":"mount"}
        ]);
        let spec: Spec = serde_json::from_value(v).unwrap();
        let mut c = build(&spec, Path::new("/b"), "c", &layout()).unwrap();
        c.namespaces.create.push(NamespaceKind::User); // as if the spec had a user namespace
        let exec = ExecProcessPlan {
            process: c.process.clone(),
            apparmor_profile: Some("exec-profile".into()),
            selinux_label: None,
        };
        c.kernel.selinux_label = Some("container-label".into());
        let e = exec_plan(&c, 42, &exec);
        assert_eq!(e.kernel.apparmor_profile.as_deref(), Some("exec-profile"));
        assert_eq!(e.kernel.selinux_label.as_deref(), Some("container-label"));
        assert!(e.exec && e.namespaces.create.is_empty());
        let joins: Vec<_> = e
            .namespaces
            .join
            .iter()
            .map(|(k, p)| (*k, p.to_str().unwrap().to_owned()))
            .collect();
        assert_eq!(
            joins,
            [
                (NamespaceKind::Pid, "/proc/42/ns/pid".to_owned()),
                (NamespaceKind::Mount, "/proc/42/ns/mnt".to_owned()),
                (NamespaceKind::User, "/proc/42/ns/user".to_owned()),
                (NamespaceKind::Network, "/proc/42/ns/net".to_owned()),
            ]
        );
        assert!(e.mounts.is_empty() && e.devices.is_empty() && e.masked_paths.is_empty());
        assert_eq!(e.cgroup.dirs, c.cgroup.dirs);
        assert!(e.cgroup.writes.is_empty() && e.cgroup.device_rules.is_empty());
    }

    #[test]
    fn bad_propagation_is_refused() {
        assert!(propagation("sideways")
            .unwrap_err()
            .to_string()
            .contains("linux.rootfsPropagation"));
    }
}
