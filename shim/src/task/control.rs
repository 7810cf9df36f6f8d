//! The RPCs on a running container: State, Kill, Pids, Connect, ResizePty, CloseIO (on the
//! reactor: they never block), Pause, Resume, Update, Stats (on a worker: a freeze waits).

use std::collections::HashMap;

use containerd_shim_protos::{
    api::{
        self, CloseIORequest, ConnectRequest, ConnectResponse, Empty, KillRequest, PidsRequest,
        PidsResponse, ResizePtyRequest, StateRequest, StateResponse,
    },
    events::task::{TaskPaused, TaskResumed},
    protobuf::{well_known_types::any::Any, EnumOrUnknown, Message, MessageField},
    shim::oci::ProcessDetails,
    topics,
};
use runtime::cgroups::{self, Layout};

use super::{
    lifecycle::{Container, Lifecycle, Proc, Status},
    Service,
};
use crate::{
    error::{Error, Result},
    events::timestamp,
};

fn no_such_exec(c: &Container, exec_id: &str) -> Error {
    Error::NotFound(format!(
        "exec {exec_id} of container {} does not exist",
        c.id
    ))
}

fn proc<'a>(c: &Container, s: &'a Lifecycle, exec_id: &str) -> Result<&'a Proc> {
    s.proc(exec_id).ok_or_else(|| no_such_exec(c, exec_id))
}

impl Service {
    pub(super) fn state(&self, req: &StateRequest) -> Result<StateResponse> {
        let c = self.container(&req.id)?;
        let s = c.lock();
        let p = proc(&c, &s, &req.exec_id)?;
        let stdio = match s.execs.get(&req.exec_id) {
            Some(e) => e.stdio.clone(),
            None => c.stdio.clone(),
        };
        let status = match p.status() {
            Status::Created => api::Status::CREATED,
            // A paused container's execs are paused too (as containerd's runc shim says).
            Status::Running if s.paused => api::Status::PAUSED,
            Status::Running => api::Status::RUNNING,
            Status::Stopped => api::Status::STOPPED,
        };
        Ok(StateResponse {
            id: c.id.clone(),
            bundle: c.bundle.to_string_lossy().into_owned(),
            pid: p.pid.max(0) as u32,
            status: EnumOrUnknown::new(status),
            stdin: stdio.stdin,
            stdout: stdio.stdout,
            stderr: stdio.stderr,
            terminal: stdio.terminal,
            exit_status: p.exit.map_or(0, |e| e.status),
            exited_at: p.exit.map(|e| timestamp(e.exited_at)).into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    pub(super) fn kill(&self, req: &KillRequest) -> Result<Empty> {
        let c = self.container(&req.id)?;
        let s = c.lock();
        let p = proc(&c, &s, &req.exec_id)?;
        let signal = req.signal as i32;
        // Through its pidfd: reaped already (or never launched), its pid may be anyone's.
        let signalled = p
            .signal(signal)
            .map_err(|e| Error::Internal(format!("signal {signal}: {e}")))?;
        if !signalled {
            return Err(Error::NotFound(format!(
                "container {}: process already finished",
                req.id
            )));
        }
        let mut others = Vec::new();
        if req.all && req.exec_id.is_empty() {
            others.extend(
                cgroups::pids(&c.plan.cgroup)
                    .into_iter()
                    .filter(|q| *q != p.pid),
            );
        }
        for pid in others {
            // SAFETY: kill(2) has no memory-safety preconditions; the target is a member of
            // the container's cgroup (which holds nothing of anyone else's, see create).
            if unsafe { libc::kill(pid, signal) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ESRCH) {
                    return Err(Error::Internal(format!(
                        "kill {pid} with signal {signal}: {e}"
                    )));
                }
            }
        }
        if signal == libc::SIGKILL && s.paused {
            // A frozen (v1) task dies only once thawed; runc thaws for SIGKILL as well.
            cgroups::live::thaw(&c.plan.cgroup, Layout::host())?;
        }
        Ok(Empty::default())
    }

    pub(super) fn pids(&self, req: &PidsRequest) -> Result<PidsResponse> {
        let c = self.container(&req.id)?;
        // Exec pids carry their exec id, as containerd's runc shim reports them.
        let exec_ids: HashMap<u32, String> = c
            .lock()
            .execs
            .iter()
            .map(|(id, e)| (e.proc.pid.max(0) as u32, id.clone()))
            .collect();
        let processes = cgroups::pids(&c.plan.cgroup)
            .into_iter()
            .map(|pid| {
                let pid = pid as u32;
                let info = exec_ids.get(&pid).and_then(|exec_id| {
                    let details = ProcessDetails {
                        exec_id: exec_id.clone(),
                        ..Default::default()
                    };
                    Some(Any {
                        type_url: "containerd.runc.v1.ProcessDetails".into(),
                        value: details.write_to_bytes().ok()?,
                        ..Default::default()
                    })
                });
                containerd_shim_protos::types::task::ProcessInfo {
                    pid,
                    info: info.into(),
                    ..Default::default()
                }
            })
            .collect();
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    pub(super) fn connect(&self, req: &ConnectRequest) -> Result<ConnectResponse> {
        let task_pid = self
            .container(&req.id)
            .map(|c| c.lock().init.pid as u32)
            .unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            ..Default::default()
        })
    }

    pub(super) fn resize_pty(&self, req: &ResizePtyRequest) -> Result<Empty> {
        let c = self.container(&req.id)?;
        let s = c.lock();
        let p = proc(&c, &s, &req.exec_id)?;
        // As containerd's runc shim: the init's terminal can be resized until Delete
        // (`ctr run -t` resizes once more when a short-lived container has already exited),
        // an exited exec's cannot.
        if p.status() == Status::Stopped && !req.exec_id.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "container {}: cannot resize the terminal of a stopped process",
                req.id
            )));
        }
        // Before Start, or without stdio to act on: nothing to resize yet.
        if let Some(io) = &p.io {
            io.resize(req.height, req.width)?;
        }
        Ok(Empty::default())
    }

    pub(super) fn close_io(&self, req: &CloseIORequest) -> Result<Empty> {
        let c = self.container(&req.id)?;
        let mut s = c.lock();
        let p = s
            .proc_mut(&req.exec_id)
            .ok_or_else(|| no_such_exec(&c, &req.exec_id))?;
        if req.stdin {
            // A client may close stdin before Start (ctr does for an exec whose input is
            // already at EOF): remember it for when the process's stdio exists.
            p.close_stdin();
        }
        Ok(Empty::default())
    }

    pub(super) fn pause(&self, req: &api::PauseRequest) -> Result<Empty> {
        self.freeze(&req.id, true).map(|()| Empty::default())
    }

    pub(super) fn resume(&self, req: &api::ResumeRequest) -> Result<Empty> {
        self.freeze(&req.id, false).map(|()| Empty::default())
    }

    /// Pause (`freeze`) or Resume: the init must be running; events as runc's shim sends.
    fn freeze(&self, id: &str, freeze: bool) -> Result<()> {
        let c = self.container(id)?;
        let verb = if freeze { "pause" } else { "resume" };
        {
            let mut s = c.lock();
            if s.init.status() != Status::Running {
                return Err(Error::FailedPrecondition(format!(
                    "cannot {verb} container {id}: it is {:?}",
                    s.init.status()
                )));
            }
            if s.paused == freeze || s.freezing {
                return Err(Error::FailedPrecondition(format!(
                    "container {id} is already {}",
                    if s.freezing {
                        "being paused or resumed"
                    } else if freeze {
                        "paused"
                    } else {
                        "running"
                    }
                )));
            }
            s.freezing = true;
        }
        // Without the lock: a freeze waits for every task to stop, and the reactor must be
        // able to record exits meanwhile.
        let result = if freeze {
            cgroups::live::freeze(&c.plan.cgroup, Layout::host())
        } else {
            cgroups::live::thaw(&c.plan.cgroup, Layout::host())
        };
        let mut s = c.lock();
        s.freezing = false;
        result?;
        if s.init.exit.is_some() {
            // The init died meanwhile: what is left must be able to die too.
            let _ = cgroups::live::thaw(&c.plan.cgroup, Layout::host());
            s.paused = false;
            return Err(Error::FailedPrecondition(format!(
                "cannot {verb} container {id}: it exited"
            )));
        }
        s.paused = freeze;
        if freeze {
            self.events.publish(
                topics::TASK_PAUSED_EVENT_TOPIC,
                Box::new(TaskPaused {
                    container_id: id.to_owned(),
                    ..Default::default()
                }),
            );
        } else {
            self.events.publish(
                topics::TASK_RESUMED_EVENT_TOPIC,
                Box::new(TaskResumed {
                    container_id: id.to_owned(),
                    ..Default::default()
                }),
            );
        }
        Ok(())
    }

    /// Update: `resources` holds OCI LinuxResources as JSON (containerd's runc shim decodes
    /// it the same way), applied live to the container's cgroup.
    pub(super) fn update(&self, req: &api::UpdateTaskRequest) -> Result<Empty> {
        let c = self.container(&req.id)?;
        let any = req
            .resources
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("update: resources are missing".into()))?;
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| {
                Error::InvalidArgument(format!(
                    "update {}: resources are not OCI LinuxResources JSON: {e}",
                    req.id
                ))
            })?;
        if c.lock().init.status() == Status::Stopped {
            return Err(Error::FailedPrecondition(format!(
                "cannot update container {}: it is stopped",
                req.id
            )));
        }
        // The planner names spec fields; here they come from the request, not config.json.
        cgroups::live::update(&c.plan.cgroup, &resources, Layout::host()).map_err(|e| match e {
            runtime::Error::InvalidField { field, message } => {
                Error::InvalidArgument(format!("update {}: {field}: {message}", req.id))
            }
            runtime::Error::Unsupported { field, message } => Error::Unimplemented(format!(
                "update {}: {field}: not supported by io.containerd.rs.v1: {message}",
                req.id
            )),
            other => Error::Internal(format!("update {}: {other}", req.id)),
        })?;
        Ok(Empty::default())
    }

    pub(super) fn stats(&self, req: &api::StatsRequest) -> Result<api::StatsResponse> {
        let c = self.container(&req.id)?;
        crate::metrics::collect(&c.plan.cgroup, Layout::host()).map(|any| api::StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }
}
