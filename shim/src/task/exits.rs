//! What happens when a process ends. The launcher reaps every container process and reports
//! `(pid, status)` on its exit channel, which the reactor watches. The exit is recorded at
//! once (the process is gone: Kill must not signal its pid again), then the client is given
//! the process's last output (a [`Drain`], polled on the reactor), then the lifecycle rules
//! publish it.
//!
//! A pid is registered while the launcher is locked (see `Zygote::launch`), so an exit that
//! arrives before its registration waits in `unclaimed` and can only belong to that pid.
//!
//! If the launcher itself dies, no process can be started or reaped any more: every
//! container is killed and its processes are reported exited (137), and the daemon keeps
//! answering, so containerd deletes the tasks the ordinary way and then shuts it down.

use std::{os::fd::AsRawFd, sync::Arc, time::Duration};

use log::{error, warn};
use runtime::{
    cgroups::{self, Layout},
    launch::{Exit, ExitChannel, ExitReport, Pidfd},
    plan::NamespaceKind,
};

use super::{
    lifecycle::{Container, Lifecycle},
    Service, Slot,
};
use crate::{events::now_nanos, reactor::Reactor, stdio::Drain};

/// How often a drain is looked at.
const DRAIN_POLL: Duration = Duration::from_millis(2);

impl Service {
    /// Watches the launcher's exit channel on the reactor.
    pub fn watch_exits(
        self: &Arc<Self>,
        r: &mut Reactor,
        channel: ExitChannel,
    ) -> std::io::Result<()> {
        let svc = self.clone();
        let fd = channel.as_raw_fd();
        r.add(fd, false, move |r, _| loop {
            match channel.try_recv() {
                ExitReport::Exit(exit) => svc.on_exit(exit),
                ExitReport::Nothing => return,
                ExitReport::LauncherGone => {
                    r.remove_fd(fd);
                    svc.launcher_gone();
                    return;
                }
            }
        })?;
        Ok(())
    }

    /// Called under the launcher's lock for each process it clones, before any other launch.
    pub(super) fn register_pid(
        &self,
        c: &Arc<Container>,
        pid: i32,
        pidfd: &Arc<Pidfd>,
        exec_id: &str,
    ) {
        if let Some(p) = c.lock().proc_mut(exec_id) {
            (p.pid, p.pidfd) = (pid, Some(pidfd.clone()));
        }
        let early = {
            let mut reg = self.registry();
            match reg.unclaimed.remove(&pid) {
                Some(exit) => Some(exit),
                None => {
                    reg.pids.insert(pid, (c.id.clone(), exec_id.to_owned()));
                    None
                }
            }
        };
        if let Some(exit) = early {
            self.record_exit(c, exec_id, exit);
        }
    }

    fn on_exit(&self, exit: Exit) {
        let found = {
            let mut reg = self.registry();
            match reg.pids.remove(&exit.pid) {
                None => {
                    reg.unclaimed.insert(exit.pid, exit);
                    None
                }
                Some((id, exec_id)) => match reg.containers.get(&id) {
                    Some(Slot::Ready(c)) | Some(Slot::Creating(Some(c))) => {
                        Some((c.clone(), exec_id))
                    }
                    _ => None,
                },
            }
        };
        if let Some((c, exec_id)) = found {
            self.record_exit(&c, &exec_id, exit);
        }
    }

    fn record_exit(&self, c: &Arc<Container>, exec_id: &str, exit: Exit) {
        let init = exec_id.is_empty();
        if init {
            // An OOM kill is signalled before the victim dies: its event goes out first.
            if let Some(oom) = &self.oom {
                oom.check(&c.id);
            }
        }
        let io = {
            let mut s = c.lock();
            if init && s.paused {
                // What is left of a paused container must be able to die (runc's shim
                // resumes an exited paused container too).
                let _ = cgroups::live::thaw(&c.plan.cgroup, Layout::host());
                s.paused = false;
            }
            let Some(p) = s.proc_mut(exec_id) else {
                return;
            };
            p.exit = Some(exit);
            p.launched = None;
            if init && !c.plan.namespaces.has(NamespaceKind::Pid) {
                // Without its own pid namespace nothing else dies with the init: we kill.
                cgroups::kill_all(&c.plan.cgroup, libc::SIGKILL);
            }
            match p.io.clone() {
                Some(io) => io,
                None => {
                    p.exit_drained = true;
                    return;
                }
            }
        };
        let drain = io.begin_drain();
        let (c, exec_id) = (c.clone(), exec_id.to_owned());
        self.reactor.post(move |r| poll_drain(r, drain, c, exec_id));
    }

    /// The launcher is gone: nothing can be started or reaped any more.
    fn launcher_gone(&self) {
        let containers: Vec<Arc<Container>> = self
            .registry()
            .containers
            .values()
            .filter_map(|slot| match slot {
                Slot::Ready(c) | Slot::Creating(Some(c)) => Some(c.clone()),
                Slot::Creating(None) => None,
            })
            .collect();
        let how = self.zygote.reap(Duration::from_millis(500));
        error!(
            "{how}: killing {} container(s), reporting their processes exited; no process can be started by this shim any more",
            containers.len()
        );
        for c in containers {
            cgroups::kill_all(&c.plan.cgroup, libc::SIGKILL);
            let mut s = c.lock();
            let now = now_nanos();
            let st: &mut Lifecycle = &mut s;
            let procs =
                std::iter::once(&mut st.init).chain(st.execs.values_mut().map(|e| &mut e.proc));
            for p in procs {
                if p.pid > 0 && p.exit.is_none() {
                    warn!("container {}: process {} reported killed", c.id, p.pid);
                    p.exit = Some(Exit {
                        pid: p.pid,
                        status: 128 + libc::SIGKILL as u32,
                        exited_at: now,
                    });
                    p.launched = None;
                    if let Some(io) = &p.io {
                        io.close_stdin();
                    }
                    p.exit_drained = true;
                }
            }
        }
    }
}

fn poll_drain(r: &mut Reactor, mut drain: Drain, c: Arc<Container>, exec_id: String) {
    if drain.poll() {
        if let Some(p) = c.lock().proc_mut(&exec_id) {
            p.exit_drained = true;
        }
        return;
    }
    r.after(DRAIN_POLL, move |r| poll_drain(r, drain, c, exec_id));
}
