//! Delete (an exec, or the container with everything it holds on the host) and Shutdown.

use std::time::Duration;

use containerd_shim_protos::{
    api::{DeleteRequest, DeleteResponse, ShutdownRequest},
    events::task::TaskDelete,
    protobuf::MessageField,
    topics,
};
use log::{debug, info};
use runtime::{
    cgroups,
    launch::Exit,
    state::{self, ContainerState},
};

use super::{create::run_poststop, lifecycle::Status, Service};
use crate::{
    error::{Error, Result},
    events::timestamp,
};

/// How long Delete waits for an exit to be published (its output drain is bounded at 2 s).
const PUBLISH_WAIT: Duration = Duration::from_secs(10);

fn response(exit: Exit) -> DeleteResponse {
    DeleteResponse {
        pid: exit.pid as u32,
        exit_status: exit.status,
        exited_at: MessageField::some(timestamp(exit.exited_at)),
        ..Default::default()
    }
}

impl Service {
    pub(super) fn delete(&self, req: &DeleteRequest) -> Result<DeleteResponse> {
        let c = self.container(&req.id)?;
        if !req.exec_id.is_empty() {
            return self.delete_exec(&c, &req.exec_id);
        }
        {
            let s = c.lock();
            match s.init.status() {
                Status::Running => {
                    return Err(Error::FailedPrecondition(format!(
                        "cannot delete running container {}: kill it first",
                        req.id
                    )))
                }
                // Never started: the init waits on its channel; take it down.
                Status::Created if s.init.pid > 0 && !s.init.starting => {
                    let _ = s.init.signal(libc::SIGKILL);
                }
                Status::Created => {
                    return Err(Error::FailedPrecondition(format!(
                        "container {} is starting",
                        req.id
                    )))
                }
                Status::Stopped => {}
            }
        }
        let exit = {
            let mut s = c.wait_until(PUBLISH_WAIT, |s| s.init.exit_published);
            let exit = s.init.exit.ok_or_else(|| {
                Error::Internal(format!("container {}: its init was not reaped", req.id))
            })?;
            s.deleting = true;
            exit
        };
        if let Some(oom) = &self.oom {
            oom.unwatch(&req.id);
        }
        cgroups::destroy(&c.plan.cgroup)?;
        if c.rootfs_mounted {
            // The last reference goes on a thread of its own: see detach_rootfs.
            if let Some(hold) = state::detach_rootfs(&c.plan.rootfs)? {
                let _ = std::thread::Builder::new()
                    .name("rootfs-release".into())
                    .spawn(move || drop(hold));
            }
        }
        ContainerState::remove(&c.bundle)?;
        self.registry().containers.remove(&req.id);
        run_poststop(&req.id, &c.plan.hooks);
        self.events.publish_and_wait(
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(TaskDelete {
                container_id: req.id.clone(),
                pid: exit.pid as u32,
                exit_status: exit.status,
                exited_at: MessageField::some(timestamp(exit.exited_at)),
                ..Default::default()
            }),
        );
        info!("deleted container {}", req.id);
        Ok(response(exit))
    }

    fn delete_exec(
        &self,
        c: &super::lifecycle::Container,
        exec_id: &str,
    ) -> Result<DeleteResponse> {
        let not_found = || {
            Error::NotFound(format!(
                "exec {exec_id} of container {} does not exist",
                c.id
            ))
        };
        {
            let mut s = c.lock();
            let e = s.execs.get(exec_id).ok_or_else(not_found)?;
            match e.proc.status() {
                Status::Running => {
                    return Err(Error::FailedPrecondition(format!(
                        "cannot delete running process {exec_id} of container {}: kill it first",
                        c.id
                    )))
                }
                Status::Created if e.proc.starting => {
                    return Err(Error::FailedPrecondition(format!(
                        "exec {exec_id} of container {} is starting",
                        c.id
                    )))
                }
                // Added but never launched (or its start failed before it ran).
                Status::Created => {
                    let exit = e.proc.exit;
                    s.execs.remove(exec_id);
                    return Ok(exit.map(response).unwrap_or_default());
                }
                Status::Stopped => {}
            }
        }
        let mut s = c.wait_until(PUBLISH_WAIT, |s| {
            s.execs
                .get(exec_id)
                .is_none_or(|e| e.proc.exit_published || e.proc.abandoned)
        });
        let e = s.execs.remove(exec_id).ok_or_else(not_found)?;
        let exit = e.proc.exit.ok_or_else(|| {
            Error::Internal(format!("exec {exec_id}: the process was not reaped"))
        })?;
        Ok(response(exit))
    }

    /// Shutdown: true when the daemon may exit, as it owns no container (and none is being
    /// created); the caller stops the reactor once the answer is out.
    pub(super) fn shutdown(&self, _req: &ShutdownRequest) -> bool {
        let idle = self.close_if_idle();
        if !idle {
            debug!("shutdown requested while containers remain: staying up");
        }
        idle
    }
}
