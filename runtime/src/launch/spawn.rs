//! How the launcher clones a container init into its namespaces.
//!
//! Without namespaces to join, one clone with the plan's flags does it. With some, a helper
//! process joins them first (see [`namespaces::join_all`]) and clones the init with
//! CLONE_PARENT, so that the init is still the launcher's child. A new user namespace is
//! mapped from here, outside, while the init waits; bind trees the init cannot make (idmapped,
//! or out of a user namespace's reach) are made here too, before the clone, and the init
//! inherits them as descriptors ([`LauncherFds`]).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::channel::Channel;
use crate::{
    namespaces::{self, user},
    plan::{LaunchPlan, NamespaceKind, NamespacePlan},
    Error, Result,
};

/// Descriptors the launcher prepared for an init, outside its namespaces.
pub struct LauncherFds {
    /// Becomes readable once the init's new user namespace is mapped.
    pub mapped: Option<OwnedFd>,
    /// Detached bind trees (idmapped binds; every bind in a user namespace), by mount index.
    pub bind_trees: Vec<Option<OwnedFd>>,
}

/// clone(2) with fork semantics: 0 in the child, the child's pid in the parent. Only for the
/// launcher and its children, which are single-threaded; `what` names the child in errors.
/// `flags` are CLONE_* flags; the child's exit signal is SIGCHLD (or, with CLONE_PARENT, the
/// caller's own).
pub(crate) fn clone(flags: libc::c_int, what: &str) -> Result<i32> {
    clone_with(flags, None, what)
}

/// [`clone`], also returning a pidfd of the child (CLONE_PIDFD, Linux 5.2) in the parent.
fn clone_pidfd(flags: libc::c_int, what: &str) -> Result<(i32, Option<OwnedFd>)> {
    let mut pidfd: libc::c_int = -1;
    let pid = clone_with(flags | libc::CLONE_PIDFD, Some(&mut pidfd), what)?;
    Ok((pid, owned_pidfd(pid, pidfd)))
}

fn owned_pidfd(pid: i32, pidfd: libc::c_int) -> Option<OwnedFd> {
    // SAFETY: the kernel stored a new descriptor there for the parent.
    (pid > 0 && pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) })
}

fn clone_with(flags: libc::c_int, pidfd: Option<&mut libc::c_int>, what: &str) -> Result<i32> {
    let signal = if flags & libc::CLONE_PARENT != 0 {
        0
    } else {
        libc::SIGCHLD
    };
    let pidfd_ptr = pidfd.map_or(std::ptr::null_mut(), |p| p as *mut libc::c_int);
    // SAFETY: a fork-style clone (no new stack) from a single-threaded process; the child
    // continues on a copy of this stack. With CLONE_PIDFD the kernel writes the pidfd
    // through the parent_tid argument (the third on every architecture but s390).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | signal) as libc::c_ulong,
            0usize,
            pidfd_ptr,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::Other(format!(
            "clone {what}: {e}{}",
            namespace_hint(flags, e.raw_os_error())
        )));
    }
    Ok(pid as i32)
}

/// What to do when the kernel refuses the namespaces a clone asks for.
fn namespace_hint(flags: libc::c_int, errno: Option<i32>) -> &'static str {
    let userns = flags & libc::CLONE_NEWUSER != 0;
    match errno {
        Some(libc::ENOSPC) => {
            "; a namespace limit is reached (/proc/sys/user/max_*_namespaces): raise it, or \
             remove containers"
        }
        Some(libc::EINVAL | libc::EPERM | libc::EUSERS) if userns => {
            "; user namespaces are not available here: enable them (kernel CONFIG_USER_NS, \
             sysctl user.max_user_namespaces > 0) or run the container without a user \
             namespace (linux.namespaces, uidMappings)"
        }
        Some(libc::EINVAL) if flags & (libc::CLONE_NEWPID | libc::CLONE_NEWNET) != 0 => {
            "; the kernel lacks a namespace type this container asks for (linux.namespaces)"
        }
        _ => "",
    }
}

/// struct clone_args of clone3(2), up to `cgroup` (Linux 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Like [`clone_pidfd`], but the child is born in the cgroup v2 directory `cgroup` (clone3
/// with CLONE_INTO_CGROUP): it never runs outside it, and no migration follows. Returns
/// `None` when the kernel has no CLONE_INTO_CGROUP (before 5.7), for the caller to clone and
/// move.
fn clone_into_cgroup(
    flags: libc::c_int,
    cgroup: BorrowedFd<'_>,
    what: &str,
) -> Result<Option<(i32, Option<OwnedFd>)>> {
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: (flags | libc::CLONE_PIDFD) as u32 as u64 | CLONE_INTO_CGROUP,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        // clone3 refuses an exit signal with CLONE_PARENT: the child gets the caller's.
        exit_signal: if flags & libc::CLONE_PARENT != 0 {
            0
        } else {
            libc::SIGCHLD as u64
        },
        cgroup: cgroup.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: as for `clone`: fork semantics (no stack given), single-threaded caller; the
    // kernel reads `args`, of the size we pass.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            // No clone3 (before 5.3), or one without the cgroup field (5.3 to 5.6).
            Some(libc::ENOSYS) | Some(libc::E2BIG) => Ok(None),
            _ => Err(Error::Other(format!("clone {what} into its cgroup: {e}"))),
        };
    }
    let pid = pid as i32;
    Ok(Some((pid, owned_pidfd(pid, pidfd))))
}

/// A cloned container process, seen from its parent.
pub struct Born {
    pub pid: i32,
    /// Born in the cgroup it was asked to be born in.
    pub in_cgroup: bool,
    pub pidfd: OwnedFd,
}

/// Clones with `flags`, into `cgroup` when one is given and the kernel can. Returns 0 in
/// the child; in the parent, the child, with a pidfd of it.
fn clone_maybe_into(
    flags: libc::c_int,
    cgroup: Option<BorrowedFd<'_>>,
    what: &str,
) -> Result<Option<Born>> {
    let born = |(pid, pidfd): (i32, Option<OwnedFd>), in_cgroup: bool| -> Result<Option<Born>> {
        if pid == 0 {
            return Ok(None);
        }
        let pidfd =
            pidfd.ok_or_else(|| Error::Other(format!("clone {what}: no pidfd returned")))?;
        Ok(Some(Born {
            pid,
            in_cgroup,
            pidfd,
        }))
    };
    if let Some(cg) = cgroup {
        if let Some(cloned) = clone_into_cgroup(flags, cg, what)? {
            return born(cloned, true);
        }
    }
    born(clone_pidfd(flags, what)?, false)
}

/// Clones the init of `plan` (into `cgroup`, a cgroup v2 directory, when given) and returns
/// it; in the init, calls `init`, which execs or exits. `enter` is the pidfd of a live
/// container's init whose namespaces an exec enters (see [`clone_after_joins`]).
pub fn spawn(
    plan: &LaunchPlan,
    cgroup: Option<BorrowedFd<'_>>,
    enter: Option<BorrowedFd<'_>>,
    init: impl FnOnce(LauncherFds),
) -> Result<Born> {
    let bind_trees = crate::rootfs::idmap::prepare(plan)?;
    let ns = &plan.namespaces;
    let map_signal = ns
        .creates(NamespaceKind::User)
        .then(user::MapSignal::new)
        .transpose()?;
    let flags = ns.clone_flags();
    let born = if ns.join.is_empty() {
        clone_maybe_into(flags, cgroup, "container init")?
    } else {
        clone_after_joins(ns, flags, cgroup, enter)?
    };
    let Some(born) = born else {
        init(LauncherFds {
            mapped: map_signal.map(user::MapSignal::into_receiver),
            bind_trees,
        });
        // Never back into the launcher's loop as a second launcher.
        // SAFETY: _exit has no preconditions.
        unsafe { libc::_exit(1) }
    };
    let pid = born.pid;
    // From outside, while the child sets up: the child could only reach the /proc of the
    // container it is in (see `procfs`).
    let outside = || -> Result<()> {
        if let Some(signal) = map_signal {
            let mappings = ns.id_mappings.as_ref().ok_or_else(|| {
                Error::Other("plan has a new user namespace but no mappings".into())
            })?;
            user::map_init(pid, mappings, signal.into_sender())?;
        }
        if let Some(adj) = plan.process.oom_score_adj {
            crate::process::set_oom_score_adj(pid, adj)?;
        }
        Ok(())
    };
    if let Err(e) = outside() {
        // SAFETY: kill(2) of our own child, which we have not reaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        user::reap(pid);
        return Err(e);
    }
    Ok(born)
}

/// Like [`clone_maybe_into`], but the init is cloned by a helper that first joins the plan's
/// namespaces: those of the live init `enter` refers to, for an exec (by pidfd, see
/// [`namespaces::enter_process`]), or the spec's paths.
fn clone_after_joins(
    ns: &NamespacePlan,
    flags: libc::c_int,
    cgroup: Option<BorrowedFd<'_>>,
    enter: Option<BorrowedFd<'_>>,
) -> Result<Option<Born>> {
    type Reply = std::result::Result<(i32, bool), String>;
    let (ours, theirs) = Channel::pair()?;
    let helper = clone(0, "namespace helper")?;
    if helper == 0 {
        drop(ours);
        // The cgroup namespace last, by the child once born: clone3 refuses (ENOENT) to
        // put a child into a cgroup when the caller's own cgroup (here the launcher's) is
        // outside the caller's cgroup namespace.
        let (cgroupns, join): (Vec<_>, Vec<_>) = ns
            .join
            .iter()
            .cloned()
            .partition(|(k, _)| *k == NamespaceKind::Cgroup);
        let joined = namespaces::CgroupNsEntry::prepare(cgroupns.first(), enter).and_then(|cg| {
            match enter {
                Some(pidfd) => namespaces::enter_process(pidfd, &join),
                None => namespaces::join_all(&join),
            }
            .map(|()| cg)
        });
        let cloned = joined.and_then(|cg| {
            clone_maybe_into(flags | libc::CLONE_PARENT, cgroup, "container init").map(|b| (b, cg))
        });
        let (reply, fd, code): (Reply, _, _) = match cloned {
            Ok((None, cg)) => {
                // The init.
                if let Some(Err(e)) = cg.map(|c| c.enter()) {
                    log::error!("{e}");
                    // SAFETY: _exit skips the exit handlers of the launcher's copy.
                    unsafe { libc::_exit(1) }
                }
                return Ok(None);
            }
            Ok((Some(b), _)) => (Ok((b.pid, b.in_cgroup)), Some(b.pidfd), 0),
            Err(e) => (Err(e.to_string()), None, 1),
        };
        let fds: Vec<i32> = fd.iter().map(|f| f.as_raw_fd()).collect();
        let _ = theirs.send::<Reply>(&reply, &fds);
        // SAFETY: _exit skips the exit handlers of the launcher this process is a copy of.
        unsafe { libc::_exit(code) }
    }
    drop(theirs);
    let reply = ours.recv::<Reply>();
    user::reap(helper);
    match reply {
        Ok(Some((Ok((pid, in_cgroup)), mut fds))) if fds.len() == 1 => Ok(Some(Born {
            pid,
            in_cgroup,
            pidfd: fds.pop().expect("one descriptor"),
        })),
        Ok(Some((Err(e), _))) => Err(Error::Init(e)),
        Ok(Some(_)) => Err(Error::Other(
            "the namespace helper sent no pidfd with the init's pid".into(),
        )),
        Ok(None) => Err(Error::Other(
            "the helper joining the container's namespaces died".into(),
        )),
        Err(e) => Err(e),
    }
}
