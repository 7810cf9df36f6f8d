//! The container's init: runs in the cloned child, applies the plan in a fixed order, reports
//! to the shim and execs the user's program.

use std::{
    fs::File,
    os::fd::{AsFd, AsRawFd, OwnedFd},
};

use nix::{
    sched::{setns, unshare, CloneFlags},
    unistd::sethostname,
};

use super::{channel::Channel, InitMessage, ShimMessage};
use crate::{
    kernel,
    plan::{LaunchPlan, NamespaceKind},
    process::{self, ExecArgs},
    rootfs, Error, Result,
};

/// Entry point of the cloned child. Never returns.
pub fn run(plan: &LaunchPlan, channel: Channel, stdio: Vec<OwnedFd>) -> ! {
    let exec = match setup(plan, stdio) {
        Ok(exec) => exec,
        Err(e) => fail(&channel, e, 1),
    };
    if channel.send(&InitMessage::Ready, &[]).is_err() {
        std::process::exit(1);
    }
    match channel.recv::<ShimMessage>() {
        Ok(Some((ShimMessage::Start, _))) => {}
        // The shim went away or deleted us before start.
        _ => std::process::exit(1),
    }
    if let Some(cpus) = &plan.kernel.cpu_affinity_final {
        if let Err(e) = kernel::set_cpu_affinity("process.execCPUAffinity.final", cpus) {
            fail(&channel, e, 1);
        }
    }
    // The shim has moved us into the container's cgroup by now: make it the namespace root.
    if plan.namespaces.creates(NamespaceKind::Cgroup) {
        if let Err(e) = unshare(CloneFlags::CLONE_NEWCGROUP) {
            fail(&channel, Error::sys("create cgroup namespace", e), 1);
        }
    }
    // The container outlives a crashed shim, as with runc; containerd's `delete` cleans up.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
    reset_signals();
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

fn setup(plan: &LaunchPlan, stdio: Vec<OwnedFd>) -> Result<ExecArgs> {
    // Die with the shim until we are started.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if let Some(cpus) = &plan.kernel.cpu_affinity_initial {
        kernel::set_cpu_affinity("process.execCPUAffinity.initial", cpus)?;
    }
    nix::unistd::setsid().map_err(|e| Error::sys("setsid", e))?;
    for (fd, target) in stdio.iter().zip(0..) {
        dup_onto(fd, target)?;
    }
    drop(stdio);

    // The shim creates the cgroup and moves us into it while we set up (see `Launched`).
    for (kind, path) in &plan.namespaces.join {
        if *kind == NamespaceKind::Pid {
            continue; // joined by the launcher, at clone time
        }
        let ns = File::open(path).map_err(|e| Error::io(path, e))?;
        setns(ns.as_fd(), CloneFlags::from_bits_retain(kind.clone_flag())).map_err(|e| {
            Error::sys(
                format!("join {} namespace {}", kind.proc_name(), path.display()),
                e,
            )
        })?;
    }
    if plan.namespaces.creates(NamespaceKind::Cgroup) {
        unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| Error::sys("create cgroup namespace", e))?;
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
    if let Some(adj) = plan.process.oom_score_adj {
        process::set_oom_score_adj(adj)?;
    }
    if plan.kernel.loopback_up {
        kernel::loopback_up()?;
    }
    // Exec labels take effect at execve; written while /proc is still the host's.
    kernel::apply_lsm_labels(&plan.kernel)?;

    rootfs::prepare(plan)?;
    kernel::apply_process_settings(&plan.kernel)?;

    let p = &plan.process;
    process::set_rlimits(p)?;
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(p.umask.unwrap_or(0o022)) };
    let exe = process::resolve_executable(p)?;
    let exec = ExecArgs::new(&exe, p)?;
    if p.no_new_privileges {
        process::set_no_new_privileges()?;
    }
    process::switch_user_and_capabilities(p)?;
    process::enter_cwd(p)?;
    process::close_fds_on_exec()?;
    Ok(exec)
}
