//! How a container's init is born from a multithreaded shim, safely by construction.
//!
//! The shim daemon forks a [`zygote`] first thing, while it is still single-threaded. The
//! zygote never starts a thread, so it may fork at any time and its child may run any code
//! (allocate, take locks, log). For each container it clones the init (with the namespace
//! flags of the plan); it stays the init's parent, reaps it, and reports the exit to the shim
//! on a dedicated channel. The init applies the plan ([`init`]), reports `Ready` on its [`channel::Channel`], waits
//! for `Start`, and execs. The channel is close-on-exec: EOF after `Start` means exec worked.

pub mod channel;
pub mod init;
pub mod zygote;

use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};

use self::channel::Channel;
pub use self::zygote::{Exit, ExitChannel, Zygote};
use crate::{Error, Result};

/// init -> shim.
#[derive(Debug, Serialize, Deserialize)]
pub enum InitMessage {
    Ready,
    Failed {
        error: String,
    },
    /// The mounts are done, pivot_root is next: run prestart and createRuntime now.
    RunCreateHooks,
}

/// shim -> init.
#[derive(Debug, Serialize, Deserialize)]
pub enum ShimMessage {
    Start,
    /// The runtime-namespace create hooks succeeded.
    CreateHooksDone,
}

/// A container init that is being set up or waits to be started.
#[derive(Debug)]
pub struct Launched {
    pub pid: i32,
    channel: Channel,
}

impl Launched {
    /// Blocks until the init has applied the whole plan (the container is "created").
    /// `create_hooks` runs the runtime-namespace create hooks when the init asks for them
    /// (before its pivot_root); its error fails the create. Returns the pty master when the
    /// process has a terminal.
    pub fn wait_ready(&self, create_hooks: impl FnOnce() -> Result<()>) -> Result<Option<OwnedFd>> {
        let mut create_hooks = Some(create_hooks);
        loop {
            match self.channel.recv::<InitMessage>()? {
                Some((InitMessage::Ready, mut fds)) => return Ok(fds.pop()),
                Some((InitMessage::RunCreateHooks, _)) => {
                    let run = create_hooks.take().ok_or_else(|| {
                        Error::Other("container init asked for the create hooks twice".into())
                    })?;
                    run()?;
                    self.channel.send(&ShimMessage::CreateHooksDone, &[])?;
                }
                Some((InitMessage::Failed { error }, _)) => return Err(Error::Init(error)),
                None => {
                    return Err(Error::Init(format!(
                        "container init (pid {}) exited during setup",
                        self.pid
                    )))
                }
            }
        }
    }

    /// Lets the init exec the user's program; returns once the exec has happened.
    pub fn start(self) -> Result<()> {
        self.channel.send(&ShimMessage::Start, &[])?;
        match self.channel.recv::<InitMessage>()? {
            None => Ok(()),
            Some((InitMessage::Failed { error }, _)) => Err(Error::Init(error)),
            Some((m, _)) => Err(Error::Other(format!(
                "container init sent {m:?} after Start"
            ))),
        }
    }
}
