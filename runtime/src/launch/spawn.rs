//! How the launcher clones a container init into its namespaces.
//!
//! Without namespaces to join, one clone with the plan's flags does it. With some, a helper
//! process joins them first (see [`namespaces::join_all`]) and clones the init with
//! CLONE_PARENT, so that the init is still the launcher's child. A new user namespace is
//! mapped from here, outside, while the init waits; bind trees the init cannot make (idmapped,
//! or out of a user namespace's reach) are made here too, before the clone, and the init
//! inherits them as descriptors ([`LauncherFds`]).

use std::os::fd::OwnedFd;

use super::channel::Channel;
use crate::{
    idmap,
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
pub(crate) fn clone(flags: libc::c_int, what: &str) -> Result<i32> {
    // SAFETY: a fork-style clone (no new stack) from a single-threaded process; the child
    // continues on a copy of this stack.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags as libc::c_ulong,
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

/// Clones the init of `plan` and returns its pid; in the init, calls `init`, which execs or
/// exits.
pub fn spawn(plan: &LaunchPlan, init: impl FnOnce(LauncherFds)) -> Result<i32> {
    let bind_trees = idmap::prepare(plan)?;
    let ns = &plan.namespaces;
    let map_signal = ns
        .creates(NamespaceKind::User)
        .then(user::MapSignal::new)
        .transpose()?;
    let flags = ns.clone_flags() | libc::SIGCHLD;
    let pid = if ns.join.is_empty() {
        clone(flags, "container init")?
    } else {
        clone_after_joins(ns, flags)?
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
    if let Some(signal) = map_signal {
        let mappings = ns
            .id_mappings
            .as_ref()
            .ok_or_else(|| Error::Other("plan has a new user namespace but no mappings".into()));
        if let Err(e) = mappings.and_then(|m| user::map_init(pid, m, signal.into_sender())) {
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            user::reap(pid);
            return Err(e);
        }
    }
    Ok(pid)
}

/// Like [`clone`], but the init is cloned by a helper that first joins the plan's namespaces.
fn clone_after_joins(ns: &NamespacePlan, flags: libc::c_int) -> Result<i32> {
    let (ours, theirs) = Channel::pair()?;
    let helper = clone(libc::SIGCHLD, "namespace helper")?;
    if helper == 0 {
        drop(ours);
        let cloned = namespaces::join_all(&ns.join)
            .and_then(|()| clone(flags | libc::CLONE_PARENT, "container init"));
        let (reply, code) = match cloned {
            Ok(0) => return Ok(0), // the init
            Ok(pid) => (Ok(pid), 0),
            Err(e) => (Err(e.to_string()), 1),
        };
        let _ = theirs.send::<std::result::Result<i32, String>>(&reply, &[]);
        // SAFETY: _exit skips the exit handlers of the launcher this process is a copy of.
        unsafe { libc::_exit(code) }
    }
    drop(theirs);
    let reply = ours.recv::<std::result::Result<i32, String>>();
    user::reap(helper);
    match reply {
        Ok(Some((Ok(pid), _))) => Ok(pid),
        Ok(Some((Err(e), _))) => Err(Error::Init(e)),
        Ok(None) => Err(Error::Other(
            "the helper joining the container's namespaces died".into(),
        )),
        Err(e) => Err(e),
    }
}
