//! The child the launcher clones for a container process: it applies the plan in a fixed
//! order, reports to the shim and execs the user's program.
//!
//! Two kinds, each with its own rules:
//! - [`container`]: the first process of a new container. Alone in fresh namespaces, it
//!   builds the root filesystem and pivots into it.
//! - [`exec`]: an extra process entering a live container, which the container's own
//!   processes may have rearranged to trap it. Its rules are in that module.
//!
//! What both do is here: the common start (death signal, stdio), the process settings after
//! the kind-specific part, and the Ready/Start hand-shake that ends in execve.

mod container;
mod exec;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use super::{channel::Channel, spawn::LauncherFds, InitMessage, ShimMessage};
use crate::{
    hooks, kernel,
    plan::LaunchPlan,
    process::{self, ExecArgs},
    seccomp, Error, Result,
};

/// Entry point of the cloned child. Never returns.
pub fn run(
    plan: &LaunchPlan,
    channel: Channel,
    stdio: Vec<OwnedFd>,
    cgroup_tasks: Vec<OwnedFd>,
    launcher: LauncherFds,
) -> ! {
    let prepared = begin(plan, stdio, cgroup_tasks).and_then(|()| {
        if plan.exec {
            exec::setup(plan)
        } else {
            container::setup(plan, &channel, launcher)
        }
        .and_then(|console| process_settings(plan, &channel, console))
    });
    let Prepared {
        exec,
        console,
        seccomp_filter,
    } = match prepared {
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

/// The start both kinds share: tied to the launcher's life, invisible to ptrace, in its
/// cgroup, a session of its own, the stdio the shim sent.
fn begin(plan: &LaunchPlan, stdio: Vec<OwnedFd>, cgroup_tasks: Vec<OwnedFd>) -> Result<()> {
    // Die with the launcher until we are started; if it died before we asked, it is too late
    // for the signal, so look (its pidfd, inherited: getppid says nothing in a new pid
    // namespace).
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if !super::zygote::launcher_alive() {
        std::process::exit(1);
    }
    // Until we exec, we run the shim's binary and hold its descriptors: no ptrace and no
    // /proc/<pid>/{exe,fd} of ours for the processes that can see us (those of a joined pid
    // namespace, startContainer hooks). The exec of the container's program makes it
    // dumpable again.
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if let Some(cpus) = &plan.kernel.cpu_affinity_initial {
        kernel::set_cpu_affinity("process.execCPUAffinity.initial", cpus)?;
    }
    // Into the v1 hierarchies before anything of the container is set up (and after the
    // initial affinity, which is the one before the move).
    crate::cgroups::join_self(&plan.cgroup, cgroup_tasks)?;
    nix::unistd::setsid().map_err(|e| Error::sys("setsid", e))?;
    for (fd, target) in stdio.iter().zip(0..) {
        dup_onto(fd, target)?;
    }
    Ok(())
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

/// A seccomp filter loaded at the last moment, and how its notify fd reaches the shim.
struct LateFilter {
    filter: seccomp::Filter,
    /// The notify hand-off messages, encoded before the filter is loaded.
    handoff: Option<(Vec<u8>, Vec<u8>)>,
}

impl LateFilter {
    fn new(filter: seccomp::Filter) -> LateFilter {
        let handoff = filter.notifies().then(|| {
            (
                Channel::encode(&InitMessage::SeccompNotifyFd),
                Channel::encode(&ShimMessage::SeccompNotifyFdDelivered),
            )
        });
        LateFilter { filter, handoff }
    }

    /// Loads the filter; with notifying rules, hands the listener fd to the shim and waits
    /// until the agent has it, so no user code runs before the agent could answer.
    fn load(self, channel: &Channel) -> Result<()> {
        let fd = self.filter.load()?;
        let (Some(fd), Some((notice, ack))) = (fd, self.handoff) else {
            return Ok(());
        };
        match channel.send_raw_with_fd(&notice, fd.as_fd(), &ack) {
            Ok(true) => Ok(()),
            // EOF: the shim could not deliver the fd (it reports why) or went away.
            Ok(false) => Err(Error::Init(
                "linux.seccomp: the shim did not confirm the notify fd hand-off".into(),
            )),
            Err(e) => Err(Error::Init(format!(
                "linux.seccomp: hand the notify fd to the shim: {e}"
            ))),
        }
    }
}

/// What setup leaves for after Start.
struct Prepared {
    exec: ExecArgs,
    /// The pty master, for the shim.
    console: Option<OwnedFd>,
    /// The seccomp filter when it is to be loaded after Start (noNewPrivileges).
    seccomp_filter: Option<LateFilter>,
}

/// The process part of the plan, once the kind-specific setup is done and "/" is the
/// container's (`console`: the pty master it allocated, if any): stdio ownership,
/// rlimits, umask, the program, seccomp, user and capabilities, cwd.
fn process_settings(
    plan: &LaunchPlan,
    channel: &Channel,
    console: Option<OwnedFd>,
) -> Result<Prepared> {
    kernel::apply_process_settings(&plan.kernel)?;
    let p = &plan.process;
    process::give_stdio_to_user(p.uid)?;
    process::set_rlimits(p)?;
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(p.umask.unwrap_or(0o022)) };
    let exe = process::resolve_executable(p)?;
    let exec = ExecArgs::new(&exe, p)?;
    // Built now so that profile errors fail Create; loaded as late as privileges allow:
    // without noNewPrivileges loading needs CAP_SYS_ADMIN, so before the switch below.
    let mut filter = match &plan.seccomp {
        Some(s) => Some(LateFilter::new(seccomp::Filter::build(s, &plan.id)?)),
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
