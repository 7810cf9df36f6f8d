//! How a container's init is born from a multithreaded shim, safely by construction.
//!
//! The shim daemon starts a [`zygote`] first thing: a fresh process, executed from the
//! sealed view of the binary ([`sealed_exe`]), so it shares no lock or allocator state
//! with the daemon's threads. The zygote never starts a thread, so it may fork at any
//! time and its child may run any code (allocate, take locks, log). For each container
//! it clones the init (with the namespace flags of the plan); it stays the init's
//! parent, reaps it, and reports the exit to the shim on a dedicated channel. The init
//! applies the plan ([`init`]), reports `Ready` on its [`channel::Channel`], waits for
//! `Start`, and execs. The channel is close-on-exec: EOF after `Start` means exec
//! worked.

pub mod channel;
pub mod init;
pub mod pidfd;
pub mod sealed_exe;
pub mod spawn;
pub mod zygote;

use std::{
    os::fd::{AsFd, OwnedFd},
    sync::Arc,
};

use serde::{Deserialize, Serialize};

use self::channel::Channel;
pub use self::{
    pidfd::Pidfd,
    zygote::{Exit, ExitChannel, ExitReport, Zygote},
};
use crate::{plan::seccomp::ListenerPlan, seccomp, Error, Result};

/// For the fuzz target fuzz/fuzz_targets/launch_channel.rs: `bytes` arrives as one packet on
/// a channel and is received as each message the shim, the launcher, its namespace helpers
/// and the inits exchange, as each receiving side does. Must never panic.
#[doc(hidden)]
pub fn fuzz_channel_packet(bytes: &[u8]) {
    zygote::fuzz_receive(bytes);
}

/// init -> shim.
#[derive(Debug, Serialize, Deserialize)]
pub enum InitMessage {
    Ready,
    Failed {
        error: String,
    },
    /// The mounts are done, pivot_root is next: run prestart and createRuntime now.
    RunCreateHooks,
    /// Before setup, when only the shim's join makes the cgroup (a systemd scope needs the
    /// init's pid): wait for `CgroupReady`.
    AwaitCgroup,
    /// Comes with the seccomp listener fd; the init waits for `SeccompNotifyFdDelivered`.
    SeccompNotifyFd,
}

/// shim -> init.
#[derive(Debug, Serialize, Deserialize)]
pub enum ShimMessage {
    Start,
    /// The runtime-namespace create hooks succeeded.
    CreateHooksDone,
    /// The init is in its cgroup, which exists in every hierarchy.
    CgroupReady,
    /// The seccomp agent has the notify fd.
    SeccompNotifyFdDelivered,
}

/// A container init that is being set up or waits to be started.
#[derive(Debug)]
pub struct Launched {
    pub pid: i32,
    /// The process, whatever its pid comes to mean later.
    pub pidfd: Arc<Pidfd>,
    /// In every directory of its cgroup by itself (born in its cgroup v2 directory, moved its
    /// own thread into the v1 ones: [`crate::cgroups::open_entry`]); false when the launch
    /// was not asked to or the kernel cannot, and then the caller moves the process.
    pub in_cgroup: bool,
    channel: Channel,
    /// Where a seccomp notify fd goes, when the plan's filter notifies.
    seccomp_listener: Option<ListenerPlan>,
}

impl Launched {
    fn new(pid: i32, pidfd: Arc<Pidfd>, channel: Channel, plan: &crate::plan::LaunchPlan) -> Self {
        Launched {
            pid,
            pidfd,
            in_cgroup: false,
            channel,
            seccomp_listener: plan.seccomp.as_ref().and_then(|s| s.listener.clone()),
        }
    }

    /// The next message of the init, after delivering any seccomp notify fd it sends
    /// first (`status` is the container's state for the agent).
    fn recv(&self, status: &str) -> Result<Option<(InitMessage, Vec<OwnedFd>)>> {
        loop {
            // ECONNRESET: the init died with a message of ours unread (killed while we sent).
            let message = self
                .channel
                .recv::<InitMessage>()
                .map_err(|e| self.if_init_gone(e, &format!("while {status}")))?;
            match message {
                Some((InitMessage::SeccompNotifyFd, fds)) => {
                    let (Some(listener), [fd]) = (&self.seccomp_listener, &fds[..]) else {
                        return Err(Error::Other(
                            "container init sent an unexpected seccomp notify fd".into(),
                        ));
                    };
                    seccomp::send_to_listener(listener, self.pid, status, fd.as_fd())?;
                    drop(fds);
                    self.channel
                        .send(&ShimMessage::SeccompNotifyFdDelivered, &[])?;
                }
                other => return Ok(other),
            }
        }
    }

    /// Blocks until the init has applied the whole plan (the container is "created").
    /// `create_hooks` runs the runtime-namespace create hooks when the init asks for them
    /// (before its pivot_root); its error fails the create. Returns the pty master when the
    /// process has a terminal.
    /// `cgroup_ready` runs when the init asks to be in its cgroup before it sets up.
    pub fn wait_ready(
        &self,
        cgroup_ready: impl FnOnce() -> Result<()>,
        create_hooks: impl FnOnce() -> Result<()>,
    ) -> Result<Option<OwnedFd>> {
        let mut create_hooks = Some(create_hooks);
        let mut cgroup_ready = Some(cgroup_ready);
        loop {
            match self.recv("creating")? {
                Some((InitMessage::Ready, mut fds)) => return Ok(fds.pop()),
                Some((InitMessage::AwaitCgroup, _)) => {
                    let join = cgroup_ready.take().ok_or_else(|| {
                        Error::Other("container init asked for its cgroup twice".into())
                    })?;
                    join()?;
                    self.send_to_init(&ShimMessage::CgroupReady, "during setup")?;
                }
                Some((InitMessage::RunCreateHooks, _)) => {
                    let run = create_hooks.take().ok_or_else(|| {
                        Error::Other("container init asked for the create hooks twice".into())
                    })?;
                    run()?;
                    self.send_to_init(&ShimMessage::CreateHooksDone, "during setup")?;
                }
                Some((InitMessage::Failed { error }, _)) => return Err(Error::Init(error)),
                Some((m, _)) => {
                    return Err(Error::Other(format!(
                        "container init sent {m:?} during setup"
                    )))
                }
                None => {
                    return Err(Error::Init(format!(
                        "container init (pid {}) exited during setup",
                        self.pid
                    )))
                }
            }
        }
    }

    /// A send that fails because the init is gone (killed, crashed) says so.
    fn send_to_init(&self, msg: &ShimMessage, when: &str) -> Result<()> {
        self.channel
            .send(msg, &[])
            .map_err(|e| self.if_init_gone(e, when))
    }

    /// `e`, a failure on the channel, as "the init exited" where that is its cause.
    fn if_init_gone(&self, e: Error, when: &str) -> Error {
        let gone = matches!(
            e,
            Error::Sys {
                source: nix::Error::EPIPE | nix::Error::ECONNRESET,
                ..
            }
        );
        if gone || !self.pidfd.is_alive() {
            Error::Init(format!(
                "container init (pid {}) exited {when} ({e})",
                self.pid
            ))
        } else {
            e
        }
    }

    /// Lets the init exec the user's program; returns once the exec has happened. On an
    /// error the init has exited or is being killed.
    pub fn start(self) -> Result<()> {
        self.send_to_init(&ShimMessage::Start, "before Start")?;
        // A failed seccomp hand-off leaves the init waiting for a confirmation: end it.
        let kill = |e: Error| {
            let _ = self.pidfd.signal(libc::SIGKILL);
            e
        };
        match self.recv("created").map_err(kill)? {
            None => Ok(()),
            Some((InitMessage::Failed { error }, _)) => Err(Error::Init(error)),
            Some((m, _)) => Err(Error::Other(format!(
                "container init sent {m:?} after Start"
            ))),
        }
    }
}
