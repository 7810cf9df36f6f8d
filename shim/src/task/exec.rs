//! Exec (an extra process is added) and its Start (the launcher clones it into the
//! container's namespaces and cgroup, it execs).

use std::{os::fd::AsFd, sync::Arc};

use containerd_shim_protos::{
    api::{Empty, ExecProcessRequest},
    events::task::{TaskExecAdded, TaskExecStarted},
    topics,
};
use runtime::{cgroups, launch::Pidfd};

use super::{
    lifecycle::{Container, ExecProc, Proc, Status, StdioPaths},
    Service,
};
use crate::{
    error::{Error, Result},
    stdio::LaunchIo,
};

impl Service {
    pub(super) fn exec(&self, req: &ExecProcessRequest) -> Result<Empty> {
        let c = self.container(&req.id)?;
        let any = req
            .spec
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("exec: the process spec is missing".into()))?;
        let process: oci_spec::runtime::Process =
            serde_json::from_slice(&any.value).map_err(|e| {
                Error::InvalidArgument(format!("exec {}: invalid process spec: {e}", req.exec_id))
            })?;
        let mut spec = runtime::plan::plan_exec_process(&process)?;
        // The request's terminal wins over the process spec's, as in containerd's runc shim.
        spec.process.terminal = req.terminal;
        if req.exec_id.is_empty() {
            return Err(Error::InvalidArgument("exec: the exec id is empty".into()));
        }
        let mut s = c.lock();
        refuse_if_paused(&c, s.paused)?;
        if s.init.exit.is_some() {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                req.id
            )));
        }
        if s.execs.contains_key(&req.exec_id) {
            return Err(Error::AlreadyExists(format!(
                "exec {} already exists",
                req.exec_id
            )));
        }
        s.execs.insert(
            req.exec_id.clone(),
            ExecProc {
                proc: Proc::default(),
                spec,
                stdio: StdioPaths {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                },
                counted: false,
            },
        );
        self.events.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Box::new(TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            }),
        );
        Ok(Empty::default())
    }

    pub(super) fn start_exec(&self, c: &Arc<Container>, exec_id: &str) -> Result<i32> {
        let (spec, stdio, init_pid, init_pidfd) = {
            let mut s = c.lock();
            refuse_if_paused(c, s.paused)?;
            // As containerd's Go shim: no exec starts once the init has exited.
            if s.init.exit.is_some() || s.init.status() != Status::Running {
                return Err(Error::FailedPrecondition(format!(
                    "container {} is {:?}: cannot start exec {exec_id}",
                    c.id,
                    s.init.status()
                )));
            }
            let (init_pid, init_pidfd) = (s.init.pid, s.init.pidfd.clone());
            let e = s.execs.get_mut(exec_id).ok_or_else(|| {
                Error::NotFound(format!(
                    "exec {exec_id} of container {} does not exist",
                    c.id
                ))
            })?;
            if e.proc.status() != Status::Created || e.proc.starting || e.proc.pid > 0 {
                return Err(Error::FailedPrecondition(format!(
                    "exec {exec_id} was already started"
                )));
            }
            // Counted running before it runs: the init's exit now waits for this one's.
            e.counted = true;
            e.proc.starting = true;
            (e.spec.clone(), e.stdio.clone(), init_pid, init_pidfd)
        };
        match self.launch_exec(c, exec_id, &spec, &stdio, (init_pid, init_pidfd)) {
            Ok(pid) => Ok(pid),
            Err(err) => {
                let mut s = c.lock();
                if let Some(e) = s.execs.get_mut(exec_id) {
                    e.counted = false;
                    e.proc.starting = false;
                    // Never started: a Wait gets the exit of what was torn down, but no
                    // TaskExit goes out without its TaskExecStarted.
                    e.proc.abandon();
                }
                Err(err)
            }
        }
    }

    fn launch_exec(
        &self,
        c: &Arc<Container>,
        exec_id: &str,
        spec: &runtime::plan::ExecProcessPlan,
        stdio: &StdioPaths,
        (init_pid, init_pidfd): (i32, Option<Arc<Pidfd>>),
    ) -> Result<i32> {
        let plan = runtime::plan::exec_plan(&c.plan, init_pid, spec);
        let io = LaunchIo::open(stdio, &c.id, &self.namespace, c.io_owner)?;
        let launched = cgroups::open_entry(&plan.cgroup)
            .and_then(|entry| {
                self.zygote.launch(
                    &plan,
                    io.fds(),
                    &entry,
                    // The namespaces of that very init, whoever has its pid by now.
                    init_pidfd.as_ref().map(|p| p.as_fd()),
                    |pid, pidfd| self.register_pid(c, pid, pidfd, exec_id),
                )
            })
            .map_err(Error::from)?;
        let pid = launched.pid;
        // Setup errors first (they say more than a failed cgroup move of a dead process).
        let ready = launched
            .wait_ready(|| Ok(()), || Ok(())) // execs join after Ready, and have no create hooks
            .and_then(|console| match launched.in_cgroup {
                true => Ok(console),
                false => cgroups::join(&plan.cgroup, pid).map(|()| console),
            })
            .map_err(Error::from)
            .and_then(|console| io.start(console))
            .and_then(|pio| {
                // Before the exec: a quick exit's drain must find the copies.
                if let Some(e) = c.lock().execs.get_mut(exec_id) {
                    e.proc.set_io(Some(Arc::new(pio)));
                }
                launched.start().map_err(Error::from)
            });
        if let Err(err) = ready {
            if let Some(e) = c.lock().execs.get(exec_id) {
                let _ = e.proc.signal(libc::SIGKILL);
            }
            drop(c.wait_until(std::time::Duration::from_secs(10), |s| {
                s.execs.get(exec_id).is_none_or(|e| e.proc.exit.is_some())
            }));
            return Err(err);
        }
        let mut s = c.lock();
        if let Some(e) = s.execs.get_mut(exec_id) {
            e.proc.starting = false;
            e.proc.started = true;
            self.events.publish(
                topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                Box::new(TaskExecStarted {
                    container_id: c.id.clone(),
                    exec_id: exec_id.to_owned(),
                    pid: pid as u32,
                    ..Default::default()
                }),
            );
            // An exec that already exited has its TaskExit published right after this.
            e.proc.announced = true;
        }
        Ok(pid)
    }
}

/// runc's shim refuses new processes in a frozen container (they would hang).
fn refuse_if_paused(c: &Container, paused: bool) -> Result<()> {
    if paused {
        return Err(Error::FailedPrecondition(format!(
            "container {}: cannot exec in a paused state",
            c.id
        )));
    }
    Ok(())
}
