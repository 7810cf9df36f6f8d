//! Kernel settings of the container: namespaced sysctls, the loopback interface, personality,
//! and the process's scheduler, I/O priority, CPU affinity and LSM labels.

use std::{collections::BTreeMap, path::PathBuf};

use oci_spec::runtime::{
    IOPriorityClass, Linux, LinuxPersonalityDomain, LinuxSchedulerFlag, LinuxSchedulerPolicy,
    Process,
};
use serde::{Deserialize, Serialize};

use super::{NamespaceKind, NamespacePlan};
use crate::{Error, Result};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelPlan {
    /// linux.sysctl, sorted by key.
    pub sysctls: Vec<Sysctl>,
    /// The container has a network namespace of its own making: bring `lo` up.
    pub loopback_up: bool,
    /// personality(2) persona.
    pub personality: Option<u64>,
    pub scheduler: Option<SchedulerPlan>,
    /// ioprio_set(2) value: class << 13 | level.
    pub io_priority: Option<u32>,
    /// CPUs for the init before it joins its cgroup, and right before exec.
    pub cpu_affinity_initial: Option<Vec<usize>>,
    pub cpu_affinity_final: Option<Vec<usize>>,
    pub apparmor_profile: Option<String>,
    pub selinux_label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sysctl {
    pub key: String,
    /// Below /proc/sys.
    pub path: PathBuf,
    pub value: String,
}

/// sched_setattr(2) arguments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerPlan {
    pub policy: u32,
    pub flags: u64,
    pub nice: i32,
    pub priority: u32,
    pub runtime: u64,
    pub deadline: u64,
    pub period: u64,
}

/// Sysctls that live in the IPC namespace (ipc/ipc_sysctl.c and ipc/mq_sysctl.c).
fn needs_ipc(key: &str) -> bool {
    key.starts_with("fs.mqueue.")
        || key == "kernel.sem"
        || key == "kernel.sem_next_id"
        || key.starts_with("kernel.shm")
        || key.starts_with("kernel.msg")
}

/// The namespace a sysctl belongs to, or None when it is global (would change the host).
fn sysctl_namespace(key: &str) -> Option<NamespaceKind> {
    if key.starts_with("net.") {
        Some(NamespaceKind::Network)
    } else if needs_ipc(key) {
        Some(NamespaceKind::Ipc)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(NamespaceKind::Uts)
    } else {
        None
    }
}

/// `net.ipv4.ip_forward` -> `net/ipv4/ip_forward`; a key written with slashes is taken as is
/// (that is how a dotted interface name such as `eth0.100` is written).
fn sysctl_path(field: &str, key: &str) -> Result<PathBuf> {
    let parts: Vec<&str> = if key.contains('/') {
        key.split('/').collect()
    } else {
        key.split('.').collect()
    };
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(Error::invalid(field, "is not a valid sysctl name"));
    }
    Ok(parts.iter().collect())
}

fn plan_sysctls(
    sysctl: &BTreeMap<&String, &String>,
    ns: &NamespacePlan,
    hostname: Option<&str>,
) -> Result<Vec<Sysctl>> {
    let mut out = Vec::new();
    for (key, value) in sysctl {
        let field = format!("linux.sysctl[{key:?}]");
        let normalized = key.replace('/', ".");
        let Some(kind) = sysctl_namespace(&normalized) else {
            return Err(Error::invalid(
                field,
                "is not a namespaced sysctl: setting it would change the host",
            ));
        };
        if !ns.has(kind) {
            return Err(Error::invalid(
                field,
                format!(
                    "needs a {} namespace of the container's own in linux.namespaces",
                    kind.proc_name()
                ),
            ));
        }
        if normalized == "kernel.hostname" && hostname.is_some_and(|h| h != value.as_str()) {
            return Err(Error::invalid(
                field,
                format!("conflicts with hostname {:?}", hostname.unwrap_or_default()),
            ));
        }
        out.push(Sysctl {
            key: key.to_string(),
            path: sysctl_path(&field, key)?,
            value: value.to_string(),
        });
    }
    Ok(out)
}

fn plan_personality(linux: &Linux) -> Result<Option<u64>> {
    let Some(p) = linux.personality() else {
        return Ok(None);
    };
    if p.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(Error::unsupported(
            "linux.personality.flags",
            "personality flags are not supported (only the domain is)",
        ));
    }
    // PER_LINUX and PER_LINUX32 from <sys/personality.h>.
    Ok(Some(match p.domain() {
        LinuxPersonalityDomain::PerLinux => 0x0000,
        LinuxPersonalityDomain::PerLinux32 => 0x0008,
    }))
}

fn plan_scheduler(p: &Process) -> Result<Option<SchedulerPlan>> {
    let Some(s) = p.scheduler() else {
        return Ok(None);
    };
    let f = "process.scheduler";
    let policy = match s.policy() {
        LinuxSchedulerPolicy::SchedOther => libc::SCHED_OTHER,
        LinuxSchedulerPolicy::SchedFifo => libc::SCHED_FIFO,
        LinuxSchedulerPolicy::SchedRr => libc::SCHED_RR,
        LinuxSchedulerPolicy::SchedBatch => libc::SCHED_BATCH,
        LinuxSchedulerPolicy::SchedIdle => libc::SCHED_IDLE,
        LinuxSchedulerPolicy::SchedDeadline => 6, // SCHED_DEADLINE
        LinuxSchedulerPolicy::SchedIso => {
            return Err(Error::unsupported(
                format!("{f}.policy"),
                "SCHED_ISO is not implemented by the Linux kernel",
            ))
        }
    } as u32;
    let realtime = matches!(
        s.policy(),
        LinuxSchedulerPolicy::SchedFifo | LinuxSchedulerPolicy::SchedRr
    );
    let deadline = *s.policy() == LinuxSchedulerPolicy::SchedDeadline;
    let nice = s.nice().unwrap_or(0);
    if !(-20..=19).contains(&nice) {
        return Err(Error::invalid(
            format!("{f}.nice"),
            format!("{nice} is outside -20..19"),
        ));
    }
    let priority = s.priority().unwrap_or(0);
    if realtime && !(1..=99).contains(&priority) {
        return Err(Error::invalid(
            format!("{f}.priority"),
            format!("{priority} is outside 1..99, as SCHED_FIFO and SCHED_RR need"),
        ));
    }
    if !realtime && priority != 0 {
        return Err(Error::invalid(
            format!("{f}.priority"),
            "can only be set for SCHED_FIFO and SCHED_RR",
        ));
    }
    let (runtime, dl, period) = (
        s.runtime().unwrap_or(0),
        s.deadline().unwrap_or(0),
        s.period().unwrap_or(0),
    );
    if !deadline && (runtime != 0 || dl != 0 || period != 0) {
        return Err(Error::invalid(
            f,
            "runtime, deadline and period can only be set for SCHED_DEADLINE",
        ));
    }
    let mut flags = 0u64;
    for (i, flag) in s.flags().iter().flatten().enumerate() {
        flags |= match flag {
            LinuxSchedulerFlag::SchedResetOnFork => 0x01,
            LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
            LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
            LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
            LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
            LinuxSchedulerFlag::SchedFlagUtilClampMin
            | LinuxSchedulerFlag::SchedFlagUtilClampMax => {
                return Err(Error::unsupported(
                    format!("{f}.flags[{i}]"),
                    "utilization clamping needs clamp values the spec cannot express",
                ))
            }
        };
    }
    Ok(Some(SchedulerPlan {
        policy,
        flags,
        nice,
        priority: priority as u32,
        runtime,
        deadline: dl,
        period,
    }))
}

fn plan_io_priority(p: &Process) -> Result<Option<u32>> {
    let Some(io) = p.io_priority() else {
        return Ok(None);
    };
    let class = match io.class() {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    let level = io.priority();
    if !(0..=7).contains(&level) {
        return Err(Error::invalid(
            "process.ioPriority.priority",
            format!("{level} is outside 0..7"),
        ));
    }
    Ok(Some((class << 13) | level as u32))
}

/// "0-3,7" -> [0, 1, 2, 3, 7].
pub fn parse_cpu_list(field: &str, list: &str) -> Result<Option<Vec<usize>>> {
    let list = list.trim();
    if list.is_empty() {
        return Ok(None);
    }
    let bad = |m: String| Error::invalid(field, m);
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = match (a.trim().parse(), b.trim().parse()) {
            (Ok(a), Ok(b)) => (a, b),
            _ => return Err(bad(format!("{list:?} is not a CPU list"))),
        };
        if a > b {
            return Err(bad(format!("{part:?} is a decreasing range")));
        }
        if b >= libc::CPU_SETSIZE as usize {
            return Err(bad(format!(
                "CPU {b} is beyond the {} this runtime handles",
                libc::CPU_SETSIZE
            )));
        }
        cpus.extend(a..=b);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(Some(cpus))
}

fn non_empty(s: &Option<String>) -> Option<String> {
    s.clone().filter(|s| !s.is_empty())
}

pub fn plan_kernel(
    linux: &Linux,
    process: &Process,
    ns: &NamespacePlan,
    hostname: Option<&str>,
) -> Result<KernelPlan> {
    let sysctl: BTreeMap<&String, &String> = linux.sysctl().iter().flatten().collect();
    let (initial, last) = match process.exec_cpu_affinity() {
        Some(a) => (
            parse_cpu_list(
                "process.execCPUAffinity.initial",
                a.initial().as_deref().unwrap_or(""),
            )?,
            parse_cpu_list(
                "process.execCPUAffinity.final",
                a.cpu_affinity_final().as_deref().unwrap_or(""),
            )?,
        ),
        None => (None, None),
    };
    Ok(KernelPlan {
        sysctls: plan_sysctls(&sysctl, ns, hostname)?,
        loopback_up: ns.creates(NamespaceKind::Network),
        personality: plan_personality(linux)?,
        scheduler: plan_scheduler(process)?,
        io_priority: plan_io_priority(process)?,
        cpu_affinity_initial: initial,
        cpu_affinity_final: last,
        apparmor_profile: non_empty(process.apparmor_profile()),
        selinux_label: non_empty(process.selinux_label()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{get_default_namespaces, LinuxNamespace};

    fn ns(json: &str) -> NamespacePlan {
        let v: Vec<LinuxNamespace> = serde_json::from_str(json).unwrap();
        super::super::namespaces::plan_namespaces(&v).unwrap()
    }

    fn all_ns() -> NamespacePlan {
        super::super::namespaces::plan_namespaces(&get_default_namespaces()).unwrap()
    }

    fn kernel(linux: &str, process: &str, ns: &NamespacePlan) -> Result<KernelPlan> {
        let linux: Linux = serde_json::from_str(linux).unwrap();
        let mut p: serde_json::Value =
            serde_json::from_str(r#"{"user":{"uid":0,"gid":0},"args":["x"],"cwd":"/"}"#).unwrap();
        let extra: serde_json::Value = serde_json::from_str(process).unwrap();
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        let process: Process = serde_json::from_value(p).unwrap();
        plan_kernel(&linux, &process, ns, None)
    }

    #[test]
    fn namespaced_sysctls_are_planned_sorted_with_their_paths() {
        let k = kernel(
            r#"{"sysctl":{"net.ipv4.ip_forward":"1","kernel.shmmax":"65536","fs.mqueue.msg_max":"20",
                "kernel.domainname":"d","net/ipv4/conf/eth0.100/forwarding":"0"}}"#,
            "{}",
            &all_ns(),
        )
        .unwrap();
        let got: Vec<_> = k
            .sysctls
            .iter()
            .map(|s| (s.key.as_str(), s.path.to_str().unwrap(), s.value.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("fs.mqueue.msg_max", "fs/mqueue/msg_max", "20"),
                ("kernel.domainname", "kernel/domainname", "d"),
                ("kernel.shmmax", "kernel/shmmax", "65536"),
                ("net.ipv4.ip_forward", "net/ipv4/ip_forward", "1"),
                (
                    "net/ipv4/conf/eth0.100/forwarding",
                    "net/ipv4/conf/eth0.100/forwarding",
                    "0"
                ),
            ]
        );
        assert!(k.loopback_up);
    }

    #[test]
    fn sysctls_need_their_namespace_and_global_ones_are_refused() {
        let only_mnt = ns(r#"[{"type":"mount"}]"#);
        for (key, needs) in [
            ("net.ipv4.ip_forward", "network"),
            ("kernel.msgmax", "ipc"),
            ("kernel.sem", "ipc"),
            ("fs.mqueue.queues_max", "ipc"),
            ("kernel.hostname", "uts"),
        ] {
            let e = kernel(&format!(r#"{{"sysctl":{{"{key}":"1"}}}}"#), "{}", &only_mnt)
                .unwrap_err()
                .to_string();
            let ns_name = match needs {
                "network" => "net",
                other => other,
            };
            assert!(
                e.contains(&format!("linux.sysctl[\"{key}\"]"))
                    && e.contains(&format!("needs a {ns_name} namespace")),
                "{key}: {e}"
            );
        }
        for key in [
            "kernel.pid_max",
            "vm.swappiness",
            "fs.file-max",
            "kernel.shmmax/../x",
        ] {
            let e = kernel(&format!(r#"{{"sysctl":{{"{key}":"1"}}}}"#), "{}", &all_ns())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("linux.sysctl[\"{key}\"]")),
                "{key}: {e}"
            );
        }
        let e = kernel(r#"{"sysctl":{"net..x":"1"}}"#, "{}", &all_ns())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a valid sysctl name"), "{e}");
    }

    #[test]
    fn joined_network_namespace_gets_no_loopback_setup() {
        let k = kernel(
            "{}",
            "{}",
            &ns(r#"[{"type":"mount"},{"type":"network","path":"/proc/1/ns/net"}]"#),
        )
        .unwrap();
        assert!(!k.loopback_up);
    }

    #[test]
    fn hostname_sysctl_must_agree_with_the_hostname() {
        let linux: Linux = serde_json::from_str(r#"{"sysctl":{"kernel.hostname":"a"}}"#).unwrap();
        let p: Process =
            serde_json::from_str(r#"{"user":{"uid":0,"gid":0},"args":["x"],"cwd":"/"}"#).unwrap();
        assert!(plan_kernel(&linux, &p, &all_ns(), Some("a")).is_ok());
        let e = plan_kernel(&linux, &p, &all_ns(), Some("b"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("conflicts with hostname"), "{e}");
    }

    #[test]
    fn personality_domains_and_flags() {
        let k = kernel(r#"{"personality":{"domain":"LINUX32"}}"#, "{}", &all_ns()).unwrap();
        assert_eq!(k.personality, Some(8));
        let k = kernel(r#"{"personality":{"domain":"LINUX"}}"#, "{}", &all_ns()).unwrap();
        assert_eq!(k.personality, Some(0));
        let e = kernel(
            r#"{"personality":{"domain":"LINUX","flags":["ADDR_NO_RANDOMIZE"]}}"#,
            "{}",
            &all_ns(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("linux.personality.flags"), "{e}");
    }

    #[test]
    fn scheduler_is_validated_like_the_spec_says() {
        let k = kernel(
            "{}",
            r#"{"scheduler":{"policy":"SCHED_BATCH","nice":5}}"#,
            &all_ns(),
        )
        .unwrap();
        assert_eq!(
            k.scheduler,
            Some(SchedulerPlan {
                policy: libc::SCHED_BATCH as u32,
                nice: 5,
                ..Default::default()
            })
        );
        let k = kernel(
            "{}",
            r#"{"scheduler":{"policy":"SCHED_FIFO","priority":10,"flags":["SCHED_RESET_ON_FORK"]}}"#,
            &all_ns(),
        )
        .unwrap();
        let s = k.scheduler.unwrap();
        assert_eq!((s.policy, s.priority, s.flags), (1, 10, 1));
        for (json, field) in [
            (
                r#"{"policy":"SCHED_OTHER","nice":30}"#,
                "process.scheduler.nice",
            ),
            (r#"{"policy":"SCHED_FIFO"}"#, "process.scheduler.priority"),
            (
                r#"{"policy":"SCHED_OTHER","priority":3}"#,
                "process.scheduler.priority",
            ),
            (
                r#"{"policy":"SCHED_BATCH","runtime":100}"#,
                "process.scheduler",
            ),
            (r#"{"policy":"SCHED_ISO"}"#, "process.scheduler.policy"),
        ] {
            let e = kernel("{}", &format!(r#"{{"scheduler":{json}}}"#), &all_ns())
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{json}: {e}");
        }
    }

    #[test]
    fn io_priority_affinity_and_labels() {
        let k = kernel(
            "{}",
            r#"{"ioPriority":{"class":"IOPRIO_CLASS_IDLE","priority":0},
                "execCPUAffinity":{"initial":"0-2,5","final":"1"},
                "apparmorProfile":"p","selinuxLabel":"system_u:system_r:container_t:s0"}"#,
            &all_ns(),
        )
        .unwrap();
        assert_eq!(k.io_priority, Some(3 << 13));
        assert_eq!(k.cpu_affinity_initial, Some(vec![0, 1, 2, 5]));
        assert_eq!(k.cpu_affinity_final, Some(vec![1]));
        assert_eq!(k.apparmor_profile.as_deref(), Some("p"));
        assert!(k.selinux_label.is_some());
        let e = kernel(
            "{}",
            r#"{"ioPriority":{"class":"IOPRIO_CLASS_BE","priority":9}}"#,
            &all_ns(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("process.ioPriority.priority"), "{e}");
        assert!(parse_cpu_list("f", "3-1").is_err());
        assert!(parse_cpu_list("f", "5000").is_err());
        assert_eq!(parse_cpu_list("f", "").unwrap(), None);
    }
}
