//! The containers a shim daemon owns: their init process, its state machine
//! (created -> running -> stopped) and everything needed to tear them down.

use std::{
    path::PathBuf,
    sync::{Condvar, Mutex, MutexGuard},
};

use runtime::{
    cgroups::CgroupPlan,
    launch::{Exit, Launched},
    plan::HooksPlan,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Stopped,
}

#[derive(Debug)]
pub struct ProcessState {
    pub pid: i32,
    pub status: Status,
    pub exit: Option<Exit>,
    /// Held until Start: the channel to the init that waits to exec.
    pub launched: Option<Launched>,
    /// The background move of the init into its cgroup; Start waits for it.
    pub cgroup_join: Option<std::thread::JoinHandle<runtime::Result<()>>>,
    /// TaskCreate went out; from now on an exit is published as TaskExit.
    pub announced: bool,
    /// The process exited before it was announced: publish its exit right after TaskCreate.
    pub exit_unpublished: bool,
}

/// A container's init process. Its lock also orders the events that concern it.
#[derive(Debug)]
pub struct Process {
    state: Mutex<ProcessState>,
    exited: Condvar,
}

impl Default for Process {
    fn default() -> Self {
        Process {
            state: Mutex::new(ProcessState {
                pid: 0,
                status: Status::Created,
                exit: None,
                launched: None,
                cgroup_join: None,
                announced: false,
                exit_unpublished: false,
            }),
            exited: Condvar::new(),
        }
    }
}

impl ProcessState {
    /// Waits for the background cgroup move, if one is pending.
    pub fn finish_cgroup_join(&mut self) -> runtime::Result<()> {
        match self.cgroup_join.take() {
            Some(h) => h.join().unwrap_or_else(|_| {
                Err(runtime::Error::Other("cgroup join thread panicked".into()))
            }),
            None => Ok(()),
        }
    }
}

impl Process {
    pub fn lock(&self) -> MutexGuard<'_, ProcessState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the exit and wakes every waiter. Returns the guard so the caller can publish
    /// the exit event while still ordered against Start and Create.
    pub fn set_exited(&self, exit: Exit) -> MutexGuard<'_, ProcessState> {
        let mut s = self.lock();
        s.status = Status::Stopped;
        s.exit = Some(exit);
        s.launched = None;
        self.exited.notify_all();
        s
    }

    /// Blocks until the process has exited.
    pub fn wait(&self) -> Exit {
        let mut s = self.lock();
        loop {
            if let Some(exit) = s.exit {
                return exit;
            }
            s = self.exited.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[derive(Debug)]
pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// We mounted the rootfs from the Create request and must unmount it.
    pub rootfs_mounted: bool,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub cgroup: CgroupPlan,
    /// For poststart and poststop, which the shim runs.
    pub hooks: HooksPlan,
    pub init: std::sync::Arc<Process>,
}
