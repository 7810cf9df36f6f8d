//! The containers a shim daemon owns: their init and exec processes, the process state
//! machine (created -> running -> stopped), the order of their exit events, and everything
//! needed to tear them down.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Condvar, Mutex, MutexGuard,
    },
};

use runtime::{
    launch::{Exit, Launched, Pidfd},
    plan::{ExecProcessPlan, LaunchPlan},
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
    /// The process itself: signals go here, never to the pid (see `runtime::launch::pidfd`).
    pub pidfd: Option<Arc<Pidfd>>,
    /// The launcher reaped it: its pid may be anyone's now, even while its exit waits for
    /// the output to drain (see [`Process::mark_reaped`]).
    pub reaped: bool,
    pub status: Status,
    pub exit: Option<Exit>,
    /// Held until Start: the channel to the init that waits to exec.
    pub launched: Option<Launched>,
    /// The background move of the init into its cgroup; Start waits for it.
    pub cgroup_join: Option<std::thread::JoinHandle<runtime::Result<()>>>,
    /// TaskCreate (init) or TaskExecStarted (exec) went out; from now on an exit is
    /// published as TaskExit.
    pub announced: bool,
    /// An exec's Start is under way (its launch happens without the lock held).
    pub starting: bool,
    /// The stdio copies (stdin, terminal) of the running process.
    pub io: Option<Arc<crate::stdio::ProcessIo>>,
    /// CloseIO came before the stdio existed.
    pub stdin_closed: bool,
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
                pidfd: None,
                reaped: false,
                status: Status::Created,
                exit: None,
                launched: None,
                cgroup_join: None,
                announced: false,
                starting: false,
                io: None,
                stdin_closed: false,
                exit_unpublished: false,
            }),
            exited: Condvar::new(),
        }
    }
}

impl ProcessState {
    /// CloseIO for stdin, now or as soon as the process's stdio exists.
    pub fn close_stdin(&mut self) {
        self.stdin_closed = true;
        if let Some(io) = &self.io {
            io.close_stdin();
        }
    }

    pub fn set_io(&mut self, io: Option<Arc<crate::stdio::ProcessIo>>) {
        if let (Some(io), true) = (&io, self.stdin_closed) {
            io.close_stdin();
        }
        self.io = io;
    }

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

    /// The first thing on an exit, before anything that takes time: from now on the process
    /// takes no more signals, whatever State says until the exit is published.
    pub fn mark_reaped(&self) {
        self.lock().reaped = true;
    }

    /// Signals the process through its pidfd; NotFound once it has exited.
    pub fn signal(&self, signal: i32) -> crate::error::Result<()> {
        let s = self.lock();
        let finished = || crate::error::Error::NotFound("process already finished".into());
        if s.reaped || s.status == Status::Stopped {
            return Err(finished());
        }
        let Some(pidfd) = s.pidfd.clone() else {
            return Err(finished());
        };
        drop(s);
        match pidfd.signal(signal) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Err(finished()),
            Err(e) => Err(crate::error::Error::Internal(format!(
                "signal {signal}: {e}"
            ))),
        }
    }

    /// Lets a terminal's last output reach containerd before the exit is announced.
    /// Also stops its stdin thread.
    pub fn drain_output(&self) {
        let io = self.lock().io.clone();
        if let Some(io) = io {
            io.close_stdin();
            io.wait_output(std::time::Duration::from_secs(2));
        }
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

/// Where a process's stdio goes, as containerd named it.
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// An exec process: added by Exec, launched by Start.
#[derive(Debug)]
pub struct ExecProcess {
    pub process: Arc<Process>,
    pub spec: ExecProcessPlan,
    pub stdio: StdioPaths,
}

/// The rule that containerd relies on: the init's TaskExit is published only after the
/// TaskExit of every exec that was running. Only the exits thread touches it.
#[derive(Debug, Default)]
pub struct ExitOrder {
    pub running_execs: usize,
    pub deferred_init_exit: Option<Exit>,
}

#[derive(Debug)]
pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    /// We mounted the rootfs from the Create request and must unmount it.
    pub rootfs_mounted: bool,
    pub stdio: StdioPaths,
    /// Owner of the stdio fifos of the init and every exec (runtime options IoUid/IoGid).
    pub io_owner: Option<(u32, u32)>,
    /// The init's plan: execs join what it describes.
    pub plan: LaunchPlan,
    pub init: Arc<Process>,
    pub execs: Mutex<HashMap<String, Arc<ExecProcess>>>,
    pub exit_order: Arc<Mutex<ExitOrder>>,
    /// Frozen by Pause (the exit path thaws and clears it).
    pub paused: Arc<AtomicBool>,
}

impl Container {
    /// runc's shim refuses new processes in a frozen container (they would hang).
    pub fn refuse_if_paused(&self) -> crate::error::Result<()> {
        if self.paused.load(Ordering::SeqCst) {
            return Err(crate::error::Error::FailedPrecondition(format!(
                "container {}: cannot exec in a paused state",
                self.id
            )));
        }
        Ok(())
    }

    pub fn exec(&self, exec_id: &str) -> Option<Arc<ExecProcess>> {
        self.execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(exec_id)
            .cloned()
    }
}
