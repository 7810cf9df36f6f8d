//! A container's processes and the rules containerd relies on for their events, in one place
//! and under one lock per container (containerd's Go shim keeps the same rules in its
//! `lifecycleMu`, `runningExecs` and `preStart`/`handleStarted`):
//!
//! - TaskCreate before any TaskStart, TaskStart before the init's TaskExit;
//!   TaskExecAdded, TaskExecStarted, then the exec's TaskExit.
//! - An exec counts as running from the moment its Start begins until its TaskExit is out
//!   (or its start failed); an exec cannot start once the init has exited.
//! - The init's TaskExit goes out only after the TaskExit of every exec counted running.
//! - An exit is recorded the moment the process is reaped (Kill then finds it finished and
//!   signals nothing, so a reused pid is never hit); it is published, and Wait answered,
//!   once the client had the process's last output ([`Exit`] handling in `task::exits`).
//!
//! Every change goes through [`Lifecycle::settle`], which publishes whatever has become
//! publishable, so no transition can forget an event.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::Duration,
};

use containerd_shim_protos::{
    api::WaitResponse, events::task::TaskExit, protobuf::Message, protobuf::MessageField, topics,
};
use runtime::{
    launch::{Exit, Launched, Pidfd},
    plan::{ExecProcessPlan, LaunchPlan},
};

use crate::{
    events::{timestamp, EventQueue},
    stdio::ProcessIo,
    ttrpc::server::Responder,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Stopped,
}

/// Where a process's stdio goes, as containerd named it.
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// The init or an exec.
#[derive(Default)]
pub struct Proc {
    pub pid: i32,
    /// The process itself: signals go here, never to the pid (see `runtime::launch::pidfd`).
    pub pidfd: Option<Arc<Pidfd>>,
    /// Set when reaped; the process no longer exists from then on.
    pub exit: Option<Exit>,
    /// The client has the process's output: its exit may go out.
    pub exit_drained: bool,
    /// TaskExit is out and Wait answered.
    pub exit_published: bool,
    /// The event that must precede TaskExit is out (TaskCreate, or TaskExecStarted).
    pub announced: bool,
    /// A Start is under way: an exit waits for its TaskStart / TaskExecStarted.
    pub starting: bool,
    /// Start succeeded (the user's program was exec'd).
    pub started: bool,
    /// Held until Start: the channel to the process waiting to exec.
    pub launched: Option<Launched>,
    pub io: Option<Arc<ProcessIo>>,
    /// CloseIO came before the stdio existed.
    pub stdin_closed: bool,
    /// Its Start failed: no TaskExit will go out; Waits are answered at once.
    pub abandoned: bool,
    /// Wait RPCs, answered with the exit.
    waiters: Vec<Responder>,
}

impl Proc {
    pub fn status(&self) -> Status {
        match (self.exit, self.started) {
            (Some(_), _) => Status::Stopped,
            (None, true) => Status::Running,
            (None, false) => Status::Created,
        }
    }

    /// Signals the process through its pidfd. `Ok(false)`: it has exited (reaped, or
    /// exiting: ESRCH), or was never launched.
    pub fn signal(&self, signal: i32) -> std::io::Result<bool> {
        let Some(pidfd) = self.pidfd.as_ref().filter(|_| self.exit.is_none()) else {
            return Ok(false);
        };
        match pidfd.signal(signal) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// CloseIO for stdin, now or as soon as the process's stdio exists.
    pub fn close_stdin(&mut self) {
        self.stdin_closed = true;
        if let Some(io) = &self.io {
            io.close_stdin();
        }
    }

    /// A Start that failed: answers every Wait now (with the exit of what was torn down, or
    /// an error if nothing ran), and every later one at once.
    pub fn abandon(&mut self) {
        self.abandoned = true;
        let exit = self.exit;
        for w in self.waiters.drain(..) {
            reply_abandoned(w, exit);
        }
    }

    pub fn set_io(&mut self, io: Option<Arc<ProcessIo>>) {
        if let (Some(io), true) = (&io, self.stdin_closed) {
            io.close_stdin();
        }
        self.io = io;
    }
}

/// An exec's own parts, next to its process.
pub struct ExecProc {
    pub proc: Proc,
    pub spec: ExecProcessPlan,
    pub stdio: StdioPaths,
    /// Counted as running (see the module rules) from its Start until its exit is out.
    pub counted: bool,
}

#[derive(Default)]
pub struct Lifecycle {
    pub init: Proc,
    pub execs: HashMap<String, ExecProc>,
    /// Frozen by Pause.
    pub paused: bool,
    /// A Pause or Resume is under way (without the lock).
    pub freezing: bool,
    /// Delete is tearing the container down.
    pub deleting: bool,
}

/// A container this daemon owns.
pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    /// We mounted the rootfs from the Create request and must unmount it.
    pub rootfs_mounted: bool,
    pub stdio: StdioPaths,
    /// Owner (uid, gid) of the stdio fifos/pipes handed to processes (runtime option
    /// IoUid/IoGid); `None` leaves them as they are.
    pub io_owner: Option<(u32, u32)>,
    /// The init's plan: execs join what it describes.
    pub plan: LaunchPlan,
    state: Mutex<Lifecycle>,
    /// Signalled on every settle (an exit recorded or published).
    changed: Condvar,
    events: Arc<EventQueue>,
}

fn exit_event(container_id: &str, id: &str, exit: Exit) -> TaskExit {
    TaskExit {
        container_id: container_id.to_owned(),
        id: id.to_owned(),
        pid: exit.pid as u32,
        exit_status: exit.status,
        exited_at: MessageField::some(timestamp(exit.exited_at)),
        ..Default::default()
    }
}

pub fn wait_response(exit: Exit) -> Vec<u8> {
    WaitResponse {
        exit_status: exit.status,
        exited_at: MessageField::some(timestamp(exit.exited_at)),
        ..Default::default()
    }
    .write_to_bytes()
    .unwrap_or_default()
}

impl Container {
    pub fn new(
        id: String,
        bundle: PathBuf,
        rootfs_mounted: bool,
        stdio: StdioPaths,
        io_owner: Option<(u32, u32)>,
        plan: LaunchPlan,
        events: Arc<EventQueue>,
    ) -> Container {
        Container {
            id,
            bundle,
            rootfs_mounted,
            stdio,
            io_owner,
            plan,
            state: Mutex::new(Lifecycle::default()),
            changed: Condvar::new(),
            events,
        }
    }

    pub fn lock(&self) -> Guard<'_> {
        Guard {
            c: self,
            s: self.state.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Blocks until `done` holds for the state, or `timeout`; returns the guard either way.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&Lifecycle) -> bool,
    ) -> Guard<'_> {
        let deadline = std::time::Instant::now() + timeout;
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while !done(&s) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Guard { c: self, s }
    }
}

/// The locked state; dropping it settles (publishes what became publishable).
pub struct Guard<'a> {
    c: &'a Container,
    s: MutexGuard<'a, Lifecycle>,
}

impl std::ops::Deref for Guard<'_> {
    type Target = Lifecycle;
    fn deref(&self) -> &Lifecycle {
        &self.s
    }
}

impl std::ops::DerefMut for Guard<'_> {
    fn deref_mut(&mut self) -> &mut Lifecycle {
        &mut self.s
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.s.settle(&self.c.id, &self.c.events);
        self.c.changed.notify_all();
    }
}

impl Lifecycle {
    /// The process an RPC names: the init for "", else the exec.
    pub fn proc(&self, exec_id: &str) -> Option<&Proc> {
        if exec_id.is_empty() {
            Some(&self.init)
        } else {
            self.execs.get(exec_id).map(|e| &e.proc)
        }
    }

    pub fn proc_mut(&mut self, exec_id: &str) -> Option<&mut Proc> {
        if exec_id.is_empty() {
            Some(&mut self.init)
        } else {
            self.execs.get_mut(exec_id).map(|e| &mut e.proc)
        }
    }

    /// Execs counted running whose TaskExit is not out yet.
    pub fn running_execs(&self) -> usize {
        self.execs
            .values()
            .filter(|e| e.counted && !e.proc.exit_published)
            .count()
    }

    /// Wait: answered now if the exit is out, or when it goes out.
    pub fn add_waiter(&mut self, exec_id: &str, responder: Responder) {
        match self.proc_mut(exec_id) {
            Some(p) if p.abandoned => reply_abandoned(responder, p.exit),
            Some(p) if p.exit_published => {
                let exit = p.exit.expect("published exits are recorded");
                responder.reply(Ok(wait_response(exit)));
            }
            Some(p) => p.waiters.push(responder),
            None => {} // dropped: the caller checked it exists
        }
    }

    /// Publishes every exit that the rules allow now, execs first.
    fn settle(&mut self, container_id: &str, events: &EventQueue) {
        let publishable = |p: &Proc| {
            p.exit.is_some() && p.exit_drained && p.announced && !p.starting && !p.exit_published
        };
        for (exec_id, e) in self.execs.iter_mut() {
            if publishable(&e.proc) {
                publish_exit(&mut e.proc, container_id, exec_id, events);
            }
        }
        if publishable(&self.init) && self.running_execs() == 0 {
            publish_exit(&mut self.init, container_id, container_id, events);
        }
    }
}

fn reply_abandoned(w: Responder, exit: Option<Exit>) {
    w.reply(match exit {
        Some(exit) => Ok(wait_response(exit)),
        None => Err(crate::ttrpc::server::status(
            containerd_shim_protos::ttrpc::Code::FAILED_PRECONDITION,
            "the process failed to start",
        )),
    });
}

fn publish_exit(p: &mut Proc, container_id: &str, id: &str, events: &EventQueue) {
    let exit = p.exit.expect("checked");
    events.publish(
        topics::TASK_EXIT_EVENT_TOPIC,
        Box::new(exit_event(container_id, id, exit)),
    );
    p.exit_published = true;
    for w in p.waiters.drain(..) {
        w.reply(Ok(wait_response(exit)));
    }
}
