//! The first process of a new container. It is alone in namespaces the launcher just made
//! (or joined on the spec's word, before it existed), so nothing inside the container can
//! have prepared a trap for it yet; the image's files can, and every path inside the rootfs
//! is resolved inside it (see `rootfs`). Order: user namespace, time namespace, hostname,
//! network, LSM labels, then the root filesystem (with the create hooks between the mounts
//! and pivot_root). Its oomScoreAdj is written by the launcher, like an exec's.

use nix::{
    sched::{unshare, CloneFlags},
    unistd::sethostname,
};

use std::os::fd::OwnedFd;

use super::{InitMessage, ShimMessage};
use crate::{
    hooks, kernel,
    launch::{channel::Channel, spawn::LauncherFds},
    namespaces,
    plan::{LaunchPlan, NamespaceKind},
    rootfs, terminal, Error, Result,
};

/// Everything up to the process settings; returns the pty master when the process has a
/// terminal.
pub(super) fn setup(
    plan: &LaunchPlan,
    channel: &Channel,
    launcher: LauncherFds,
) -> Result<Option<OwnedFd>> {
    // The shim creates the cgroup and moves us into it while we set up (see `Launched`).
    // A systemd scope exists only once systemd has our pid: then we wait for it, since a
    // cgroup mount binds its directories (runc's init waits for its parent likewise).
    if plan.cgroup.systemd.is_some() {
        await_cgroup(channel)?;
    }
    // Joined namespaces were entered before the clone (see `spawn`).
    if let Some(mapped) = launcher.mapped {
        namespaces::user::wait_mapped(mapped)?;
    }
    if plan.namespaces.creates(NamespaceKind::Time) {
        namespaces::time::create(&plan.namespaces.time_offsets)?;
    }
    if plan.namespaces.has(NamespaceKind::User) {
        namespaces::user::become_root(&plan.namespaces)?;
    }
    if let Some(h) = &plan.hostname {
        sethostname(h).map_err(|e| Error::sys(format!("hostname: set {h:?}"), e))?;
    }
    if let Some(d) = &plan.domainname {
        // SAFETY: setdomainname reads `len` bytes from a valid buffer.
        if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
            return Err(Error::Init(format!(
                "domainname: set {d:?}: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    if plan.kernel.loopback_up {
        kernel::loopback_up()?;
    }
    // Exec labels take effect at execve; written while /proc is still the host's.
    kernel::apply_lsm_labels(&plan.kernel)?;
    let p = &plan.process;
    // The terminal comes from the container's own devpts, right after pivot_root, and is
    // bound over /dev/console there (where runc puts it in the mount table).
    let mut console = None;
    rootfs::prepare(
        plan,
        launcher.bind_trees,
        || create_hooks(plan, channel),
        || {
            if p.terminal {
                console = Some(terminal::setup(p.console_size, true)?);
            }
            Ok(())
        },
    )?;
    Ok(console)
}

fn await_cgroup(channel: &Channel) -> Result<()> {
    channel.send(&InitMessage::AwaitCgroup, &[])?;
    match channel.recv::<ShimMessage>()? {
        Some((ShimMessage::CgroupReady, _)) => Ok(()),
        other => Err(Error::Init(format!(
            "waiting for the cgroup: unexpected {:?}",
            other.map(|(m, _)| m)
        ))),
    }
}

/// Between the mounts and pivot_root: the shim runs prestart and createRuntime in the runtime
/// namespaces while we wait, then we run createContainer in ours (paths still resolve on
/// the host, since the root has not moved yet).
///
/// The same round trip makes sure we are in our cgroup before we create a cgroup
/// namespace (its root is the cgroup we are in), while we still hold CAP_SYS_ADMIN.
fn create_hooks(plan: &LaunchPlan, channel: &Channel) -> Result<()> {
    let new_cgroupns = plan.namespaces.creates(NamespaceKind::Cgroup);
    if plan.hooks.has_runtime_create_hooks() || new_cgroupns {
        channel.send(&InitMessage::RunCreateHooks, &[])?;
        match channel.recv::<ShimMessage>()? {
            Some((ShimMessage::CreateHooksDone, _)) => {}
            other => {
                return Err(Error::Init(format!(
                    "waiting for the create hooks: unexpected {:?}",
                    other.map(|(m, _)| m)
                )))
            }
        }
    }
    if new_cgroupns {
        unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| Error::sys("create cgroup namespace", e))?;
    }
    hooks::create_container(&plan.hooks, &plan.rootfs)
}
