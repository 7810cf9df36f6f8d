//! The container's init: runs in the cloned child, applies the plan in a fixed order, reports
//! to the shim and execs the user's program.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::{
    sched::{unshare, CloneFlags},
    unistd::sethostname,
};

use super::{channel::Channel, spawn::LauncherFds, InitMessage, ShimMessage};
use crate::{
    hooks, kernel, namespaces,
    plan::{LaunchPlan, NamespaceKind},
    process::{self, ExecArgs},
    rootfs, seccomp, terminal, Error, Result,
};

/// Entry point of the cloned child. Never returns.
pub fn run(plan: &LaunchPlan, channel: Channel, stdio: Vec<OwnedFd>, launcher: LauncherFds) -> ! {
    let Prepared {
        exec,
        console,
        seccomp_filter,
    } = match setup(plan, &channel, stdio, launcher) {
        Ok(r) => r,
        Err(e) => fail(&channel, e, 1),
    };
    // The pty master, if any, travels with Ready; ours is closed on exec.
    let fds: Vec<i32> = console.iter().map(|m| m.as_raw_fd()).collect();
    if channel.send(&InitMessage::Ready, &fds).is_err() {
        std::process::exit(1);
    }
    drop(console);
    match channel.recv::<ShimMessage>() {
        Ok(Some((ShimMessage::Start, _))) => {}
        // The shim went away or deleted us before start.
        _ => std::process::exit(1),
    }
    // In the container's cgroup by now, whose cpuset may differ from the launcher's.
    if let Some(cpus) = &plan.kernel.cpu_affinity_final {
        if let Err(e) = kernel::set_cpu_affinity("process.execCPUAffinity.final", cpus) {
            fail(&channel, e, 1);
        }
    }
    // Before the signal reset: the hook runner relies on SIGPIPE being ignored.
    if let Err(e) = hooks::start_container(&plan.hooks) {
        fail(&channel, e, 1);
    }
    // The container outlives a crashed shim, as with runc; containerd's `delete` cleans up.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
    reset_signals();
    // noNewPrivileges: the filter goes in last, so that only execve (and the hand-off of a
    // notify fd) runs under it.
    if let Some(filter) = seccomp_filter {
        if let Err(e) = filter.load(&channel) {
            fail(&channel, e, 1)
        }
    }
    let e = exec.exec();
    fail(&channel, e, 127)
}

/// The launcher blocks SIGCHLD and the shim ignores SIGPIPE; the container's program must
/// start with default dispositions and an empty mask, as it would under runc.
fn reset_signals() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: resetting a disposition to SIG_DFL has no preconditions.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
}

fn fail(channel: &Channel, e: Error, code: i32) -> ! {
    let _ = channel.send(
        &InitMessage::Failed {
            error: e.to_string(),
        },
        &[],
    );
    std::process::exit(code)
}

fn dup_onto(fd: &OwnedFd, target: i32) -> Result<()> {
    // SAFETY: dup2 on descriptors we own; the target is one of 0..=2.
    if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
        return Err(Error::Init(format!(
            "stdio: dup2 onto {target}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
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

/// What setup leaves for after Start.
struct Prepared {
    exec: ExecArgs,
    /// The pty master, for the shim.
    console: Option<OwnedFd>,
    /// The seccomp filter when it is to be loaded after Start (noNewPrivileges).
    seccomp_filter: Option<seccomp::Filter>,
}

fn setup(
    plan: &LaunchPlan,
    channel: &Channel,
    stdio: Vec<OwnedFd>,
    launcher: LauncherFds,
) -> Result<Prepared> {
    // Die with the shim until we are started.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // Until we exec, we run the shim's binary and hold its descriptors: no ptrace and no
    // /proc/<pid>/{exe,fd} of ours for the processes that can see us (those of a joined pid
    // namespace, startContainer hooks). The exec of the container's program makes it
    // dumpable again.
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if let Some(cpus) = &plan.kernel.cpu_affinity_initial {
        kernel::set_cpu_affinity("process.execCPUAffinity.initial", cpus)?;
    }
    nix::unistd::setsid().map_err(|e| Error::sys("setsid", e))?;
    for (fd, target) in stdio.iter().zip(0..) {
        dup_onto(fd, target)?;
    }
    drop(stdio);

    // The shim creates the cgroup and moves us into it while we set up (see `Launched`).
    // A systemd scope exists only once systemd has our pid: then we wait for it, since a
    // cgroup mount binds its directories (runc's init waits for its parent likewise).
    if plan.cgroup.systemd.is_some() && !plan.exec {
        await_cgroup(channel)?;
    }
    // Joined namespaces were entered before the clone (see `spawn`).
    if let Some(mapped) = launcher.mapped {
        namespaces::user::wait_mapped(mapped)?;
    }
    // Changing uid makes us non-dumpable, and our /proc/self files then belong to the
    // host's root: write them before becoming root of a user namespace.
    if let Some(adj) = plan.process.oom_score_adj {
        process::set_oom_score_adj(adj)?;
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
    // The terminal is allocated in the container's own devpts: after pivot_root (the init
    // also binds it over /dev/console) or after the exec's setns.
    let mut console = None;
    if !plan.exec {
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
    } else if p.terminal {
        console = Some(terminal::setup(p.console_size, false)?);
    }
    kernel::apply_process_settings(&plan.kernel)?;
    process::give_stdio_to_user(p.uid)?;
    process::set_rlimits(p)?;
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(p.umask.unwrap_or(0o022)) };
    let exe = process::resolve_executable(p)?;
    let exec = ExecArgs::new(&exe, p)?;
    // Built now so that profile errors fail Create; loaded as late as privileges allow:
    // without noNewPrivileges loading needs CAP_SYS_ADMIN, so before the switch below.
    let mut filter = match &plan.seccomp {
        Some(s) => Some(seccomp::Filter::build(s, &plan.id)?),
        None => None,
    };
    if p.no_new_privileges {
        process::set_no_new_privileges()?;
    } else if let Some(f) = filter.take() {
        f.load(channel)?;
    }
    process::switch_user_and_capabilities(p)?;
    process::enter_cwd(p)?;
    process::close_fds_on_exec()?;
    Ok(Prepared {
        exec,
        console,
        seccomp_filter: filter,
    })
}
