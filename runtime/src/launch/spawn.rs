//! How the launcher clones a container init into its namespaces.
//!
//! Without namespaces to join, one clone with the plan's flags does it. With some, a helper
//! process joins them first (see [`namespaces::join_all`]) and clones the init with
//! CLONE_PARENT, so that the init is still the launcher's child. A new user namespace is
//! mapped from here, outside, while the init waits; bind trees the init cannot make (idmapped,
//! or out of a user namespace's reach) are made here too, before the clone, and the init
//! inherits them as descriptors ([`LauncherFds`]).

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

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
    let signal = if flags & libc::CLONE_PARENT != 0 {
        0
    } else {
        libc::SIGCHLD
    };
    // SAFETY: a fork-style clone (no new stack) from a single-threaded process; the child
    // continues on a copy of this stack.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | signal) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(Error::Other(format!(
            "clone {what}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(pid as i32)
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

/// Like [`clone`], but the child is born in the cgroup v2 directory `cgroup` (clone3 with
/// CLONE_INTO_CGROUP): it never runs outside it, and no migration follows. Returns `None`
/// when the kernel has no CLONE_INTO_CGROUP (before 5.7), for the caller to clone and move.
pub(crate) fn clone_into_cgroup(
    flags: libc::c_int,
    cgroup: BorrowedFd<'_>,
    what: &str,
) -> Result<Option<i32>> {
    let mut args = CloneArgs {
        flags: flags as u32 as u64 | CLONE_INTO_CGROUP,
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
    Ok(Some(pid as i32))
}

/// Clones with `flags`, into `cgroup` when one is given and the kernel can. Returns the pid
/// (0 in the child) and whether the child was born in the cgroup.
fn clone_maybe_into(
    flags: libc::c_int,
    cgroup: Option<BorrowedFd<'_>>,
    what: &str,
) -> Result<(i32, bool)> {
    if let Some(cg) = cgroup {
        if let Some(pid) = clone_into_cgroup(flags, cg, what)? {
            return Ok((pid, true));
        }
    }
    Ok((clone(flags, what)?, false))
}

/// Clones the init of `plan` (into `cgroup`, a cgroup v2 directory, when given) and returns
/// its pid and whether it was born in that cgroup; in the init, calls `init`, which execs
/// or exits.
pub fn spawn(
    plan: &LaunchPlan,
    cgroup: Option<BorrowedFd<'_>>,
    init: impl FnOnce(LauncherFds),
) -> Result<(i32, bool)> {
    let bind_trees = crate::rootfs::idmap::prepare(plan)?;
    let ns = &plan.namespaces;
    let map_signal = ns
        .creates(NamespaceKind::User)
        .then(user::MapSignal::new)
        .transpose()?;
    let flags = ns.clone_flags();
    let (pid, in_cgroup) = if ns.join.is_empty() {
        clone_maybe_into(flags, cgroup, "container init")?
    } else {
        clone_after_joins(ns, flags, cgroup)?
    };
    if pid == 0 {
        init(LauncherFds {
            mapped: map_signal.map(user::MapSignal::into_receiver),
            bind_trees,
        });
        // Never back into the launcher's loop as a second launcher.
        // SAFETY: _exit has no preconditions.
        unsafe { libc::_exit(1) }
    }
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
    Ok((pid, in_cgroup))
}

/// Like [`clone_maybe_into`], but the init is cloned by a helper that first joins the plan's
/// namespaces.
fn clone_after_joins(
    ns: &NamespacePlan,
    flags: libc::c_int,
    cgroup: Option<BorrowedFd<'_>>,
) -> Result<(i32, bool)> {
    let (ours, theirs) = Channel::pair()?;
    let helper = clone(0, "namespace helper")?;
    if helper == 0 {
        drop(ours);
        let cloned = namespaces::join_all(&ns.join)
            .and_then(|()| clone_maybe_into(flags | libc::CLONE_PARENT, cgroup, "container init"));
        let (reply, code) = match cloned {
            Ok((0, _)) => return Ok((0, false)), // the init
            Ok(born) => (Ok(born), 0),
            Err(e) => (Err(e.to_string()), 1),
        };
        let _ = theirs.send::<std::result::Result<(i32, bool), String>>(&reply, &[]);
        // SAFETY: _exit skips the exit handlers of the launcher this process is a copy of.
        unsafe { libc::_exit(code) }
    }
    drop(theirs);
    let reply = ours.recv::<std::result::Result<(i32, bool), String>>();
    user::reap(helper);
    match reply {
        Ok(Some((Ok(born), _))) => Ok(born),
        Ok(Some((Err(e), _))) => Err(Error::Init(e)),
        Ok(None) => Err(Error::Other(
            "the helper joining the container's namespaces died".into(),
        )),
        Err(e) => Err(e),
    }
}
