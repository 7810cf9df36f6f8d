//! Applying [`KernelPlan`] in the container's init: sysctls, the loopback interface,
//! personality, scheduler, I/O priority, CPU affinity and the LSM exec labels.

use std::{
    io::Write,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

use crate::{
    fd::{self, RESOLVE_BENEATH, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_NO_XDEV},
    plan::kernel::{KernelPlan, SchedulerPlan, Sysctl},
    procfs, Error, Result,
};

/// A handle on /proc/sys of a procfs the container cannot influence: opened by the init
/// before any mount of the spec, and checked to be procfs.
pub struct ProcSys(OwnedFd);

pub fn open_proc_sys() -> Result<ProcSys> {
    let fd = procfs::handle()?
        .open_root("sys", libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| Error::Init(format!("linux.sysctl: open /proc/sys: {e}")))?;
    Ok(ProcSys(fd))
}

/// Writes the sysctls below `proc_sys`. The lookup may not leave that directory, follow a
/// symlink or cross a mount, so a key can only ever name a file of that procfs.
pub fn write_sysctls(proc_sys: &ProcSys, sysctls: &[Sysctl]) -> Result<()> {
    for s in sysctls {
        let field = format!("linux.sysctl[{:?}]", s.key);
        let fd = fd::openat2(
            proc_sys.0.as_fd(),
            &s.path,
            libc::O_WRONLY,
            0,
            RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
        )
        .map_err(|e| Error::Init(format!("{field}: open /proc/sys/{}: {e}", s.path.display())))?;
        std::fs::File::from(fd)
            .write_all(s.value.as_bytes())
            .map_err(|e| Error::Init(format!("{field}: write {:?}: {e}", s.value)))?;
    }
    Ok(())
}

/// struct ifreq with the flags member of its union (sizeof(struct ifreq) is 40 on LP64).
#[repr(C)]
struct IfreqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;

/// Brings `lo` up in the init's (new) network namespace, as every runtime does.
pub fn loopback_up() -> Result<()> {
    let err = |what: &str| {
        Error::Init(format!(
            "network namespace: {what} lo: {}",
            std::io::Error::last_os_error()
        ))
    };
    // SAFETY: socket(2) with constant arguments; the result is checked and owned below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(err("socket to configure"));
    }
    // SAFETY: s is a new descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(s) };
    let mut req = IfreqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    req.name[..2].copy_from_slice(b"lo");
    // SAFETY: the ioctls read and write a correctly sized struct ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(err("get flags of"));
    }
    req.flags |= libc::IFF_UP as libc::c_short;
    // SAFETY: as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCSIFFLAGS as _, &req) } < 0 {
        return Err(err("bring up"));
    }
    Ok(())
}

pub fn set_personality(persona: u64) -> Result<()> {
    // SAFETY: personality(2) takes an integer.
    if unsafe { libc::personality(persona as libc::c_ulong) } < 0 {
        return Err(Error::Init(format!(
            "linux.personality: personality({persona:#x}): {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// struct sched_attr, SCHED_ATTR_SIZE_VER0.
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

pub fn set_scheduler(s: &SchedulerPlan) -> Result<()> {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: s.policy,
        flags: s.flags,
        nice: s.nice,
        priority: s.priority,
        runtime: s.runtime,
        deadline: s.deadline,
        period: s.period,
    };
    // SAFETY: sched_setattr on ourselves with a correctly sized struct.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if r != 0 {
        return Err(Error::Init(format!(
            "process.scheduler: sched_setattr(policy {}, nice {}, priority {}): {}",
            s.policy,
            s.nice,
            s.priority,
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

pub fn set_io_priority(value: u32) -> Result<()> {
    const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    // SAFETY: ioprio_set on ourselves with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, value) };
    if r != 0 {
        return Err(Error::Init(format!(
            "process.ioPriority: ioprio_set(class {}, level {}): {}",
            value >> 13,
            value & 0x1fff,
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

pub fn set_cpu_affinity(field: &str, cpus: &[usize]) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: c < CPU_SETSIZE, checked when the plan was made.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: sched_setaffinity on ourselves with a valid set.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(Error::Init(format!(
            "{field}: sched_setaffinity({cpus:?}): {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// The settings of the init that outlive exec: applied once the rootfs is ready.
pub fn apply_process_settings(k: &KernelPlan) -> Result<()> {
    if let Some(p) = k.personality {
        set_personality(p)?;
    }
    if let Some(s) = &k.scheduler {
        set_scheduler(s)?;
    }
    if let Some(io) = k.io_priority {
        set_io_priority(io)?;
    }
    Ok(())
}

/// Which Linux security module a label is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lsm {
    AppArmor,
    SELinux,
}

impl Lsm {
    fn field(self) -> &'static str {
        match self {
            Lsm::AppArmor => "process.apparmorProfile",
            Lsm::SELinux => "process.selinuxLabel",
        }
    }

    /// The securityfs/selinuxfs directory that exists when the module is active.
    fn marker(self) -> &'static str {
        match self {
            Lsm::AppArmor => "sys/kernel/security/apparmor",
            Lsm::SELinux => "sys/fs/selinux",
        }
    }
}

/// Fails with a clear error unless the host (seen below `root`) runs `lsm`.
pub fn check_lsm_enabled(root: &Path, lsm: Lsm) -> Result<()> {
    let marker = root.join(lsm.marker());
    if marker.is_dir() {
        return Ok(());
    }
    let name = match lsm {
        Lsm::AppArmor => "AppArmor",
        Lsm::SELinux => "SELinux",
    };
    Err(Error::invalid(
        lsm.field(),
        format!(
            "{name} is not enabled on this host (/{} does not exist), so the label cannot be applied",
            lsm.marker()
        ),
    ))
}

/// Where the exec label of `lsm` goes below /proc/self, and what is written there.
/// `apparmor_dir`: the kernel has attr/apparmor/ (Linux 5.8+); attr/exec before that.
pub fn exec_label_target(lsm: Lsm, label: &str, apparmor_dir: bool) -> (&'static str, String) {
    match lsm {
        Lsm::AppArmor if apparmor_dir => ("attr/apparmor/exec", format!("exec {label}")),
        Lsm::AppArmor => ("attr/exec", format!("exec {label}")),
        Lsm::SELinux => ("attr/exec", label.to_owned()),
    }
}

/// The launcher, in the host's mount namespace: fails with a clear error unless the host
/// runs every LSM the plan has a label for. Never decided from a container's /sys.
pub fn check_lsm_labels(k: &KernelPlan) -> Result<()> {
    for (lsm, label) in [
        (Lsm::AppArmor, &k.apparmor_profile),
        (Lsm::SELinux, &k.selinux_label),
    ] {
        if label.is_some() {
            check_lsm_enabled(Path::new("/"), lsm)?;
        }
    }
    Ok(())
}

/// The process itself (only a task may write its own attr/exec): writes the LSM exec
/// labels of the plan, which take effect at its execve, through the launcher's procfs handle,
/// never through the container's /proc. The launcher checked the modules are there.
pub fn apply_lsm_labels(k: &KernelPlan) -> Result<()> {
    for (lsm, label) in [
        (Lsm::AppArmor, &k.apparmor_profile),
        (Lsm::SELinux, &k.selinux_label),
    ] {
        let Some(label) = label else { continue };
        let proc = procfs::handle()?;
        let (rel, content) = exec_label_target(lsm, label, proc.self_has("attr/apparmor"));
        proc.write_self(rel, &content).map_err(|e| {
            Error::Init(format!(
                "{}: write {content:?} to /proc/self/{rel}: {e}",
                lsm.field()
            ))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsm_detection_names_the_field_and_the_missing_directory() {
        let dir = std::env::temp_dir().join(format!("shim-rs-lsm-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sys/kernel/security/apparmor")).unwrap();
        assert!(check_lsm_enabled(&dir, Lsm::AppArmor).is_ok());
        let e = check_lsm_enabled(&dir, Lsm::SELinux)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "config.json: process.selinuxLabel: SELinux is not enabled on this host \
             (/sys/fs/selinux does not exist), so the label cannot be applied"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let e = check_lsm_enabled(&dir, Lsm::AppArmor)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("process.apparmorProfile") && e.contains("AppArmor"),
            "{e}"
        );
    }

    #[test]
    fn exec_labels_go_where_each_module_reads_them() {
        assert_eq!(
            exec_label_target(Lsm::AppArmor, "my-profile", true),
            ("attr/apparmor/exec", "exec my-profile".to_owned())
        );
        // Without the AppArmor directory (Linux < 5.8), attr/exec takes the AppArmor label.
        assert_eq!(
            exec_label_target(Lsm::AppArmor, "other", false),
            ("attr/exec", "exec other".to_owned())
        );
        assert_eq!(
            exec_label_target(Lsm::SELinux, "system_u:system_r:container_t:s0", true),
            ("attr/exec", "system_u:system_r:container_t:s0".to_owned())
        );
    }

    #[test]
    fn proc_sys_refuses_keys_that_leave_it() {
        let ps = open_proc_sys().unwrap();
        let e = write_sysctls(
            &ps,
            &[Sysctl {
                key: "x".into(),
                path: "../self/comm".into(),
                value: "x".into(),
            }],
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("linux.sysctl[\"x\"]: open"), "{e}");
    }
}
