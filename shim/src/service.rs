//! The Task service: each RPC becomes calls on container handles and the runtime library.
//! No syscalls of its own beyond signals and the rootfs mounts containerd asks for.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex},
};

use containerd_shim_protos::{
    api::{
        self, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
        DeleteRequest, Empty, KillRequest, PidsRequest, PidsResponse, ShutdownRequest,
        StartRequest, StartResponse, StateRequest, StateResponse, WaitRequest, WaitResponse,
    },
    events::task::{TaskCreate, TaskDelete, TaskExit, TaskIO, TaskStart},
    protobuf::{well_known_types::timestamp::Timestamp, EnumOrUnknown, MessageField},
    shim::shim_ttrpc::Task,
    topics,
    ttrpc::{self, TtrpcContext},
};
use log::{debug, error, info};
use nix::mount::{mount, MsFlags};
use runtime::{
    cgroups::{self, Layout},
    launch::{Exit, Zygote},
    state::{self, ContainerState},
};

use crate::{
    container::{Container, Process, Status},
    error::{Error, Result},
    events::EventQueue,
    exits::ExitMonitor,
    options, stdio,
};

/// Set when the daemon may exit (Shutdown with no container left).
#[derive(Default)]
pub struct ShutdownSignal(Mutex<bool>, Condvar);

impl ShutdownSignal {
    pub fn signal(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.1.notify_all();
    }

    pub fn wait(&self) {
        let mut done = self.0.lock().unwrap_or_else(|p| p.into_inner());
        while !*done {
            done = self.1.wait(done).unwrap_or_else(|p| p.into_inner());
        }
    }
}

pub struct Service {
    zygote: Zygote,
    exits: ExitMonitor,
    events: Arc<EventQueue>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    shutdown: Arc<ShutdownSignal>,
}

fn timestamp(nanos: u64) -> Timestamp {
    Timestamp {
        seconds: (nanos / 1_000_000_000) as i64,
        nanos: (nanos % 1_000_000_000) as i32,
        ..Default::default()
    }
}

fn no_exec(exec_id: &str) -> Result<()> {
    if exec_id.is_empty() {
        Ok(())
    } else {
        Err(Error::NotFound(format!("exec {exec_id} does not exist")))
    }
}

/// Mounts what containerd prepared (usually one overlay) onto `<bundle>/rootfs`.
fn mount_rootfs(bundle: &Path, mounts: &[api::Mount]) -> Result<bool> {
    if mounts.is_empty() {
        return Ok(false);
    }
    let target = bundle.join("rootfs");
    std::fs::create_dir_all(&target)
        .map_err(|e| Error::Internal(format!("mkdir {}: {e}", target.display())))?;
    for m in mounts {
        let mut flags = MsFlags::empty();
        let mut data = Vec::new();
        for o in &m.options {
            match o.as_str() {
                "ro" => flags |= MsFlags::MS_RDONLY,
                "rw" => {}
                "bind" => flags |= MsFlags::MS_BIND,
                "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
                "nosuid" => flags |= MsFlags::MS_NOSUID,
                "nodev" => flags |= MsFlags::MS_NODEV,
                "noexec" => flags |= MsFlags::MS_NOEXEC,
                other => data.push(other),
            }
        }
        let data = data.join(",");
        if data.len() >= 4096 {
            return Err(Error::Unimplemented(format!(
                "rootfs mount options longer than a page ({} bytes) are not supported yet",
                data.len()
            )));
        }
        let fstype = (!m.type_.is_empty() && m.type_ != "bind").then_some(m.type_.as_str());
        mount(
            Some(m.source.as_str()),
            &target,
            fstype,
            flags,
            (!data.is_empty()).then_some(data.as_str()),
        )
        .map_err(|e| {
            let _ = state::unmount_rootfs(&target);
            Error::Internal(format!("mount rootfs ({} {}): {e}", m.type_, m.source))
        })?;
    }
    Ok(true)
}

impl Service {
    pub fn new(
        zygote: Zygote,
        exits: ExitMonitor,
        events: Arc<EventQueue>,
        shutdown: Arc<ShutdownSignal>,
    ) -> Service {
        Service {
            zygote,
            exits,
            events,
            containers: Mutex::new(HashMap::new()),
            shutdown,
        }
    }

    fn container(&self, id: &str) -> Result<Arc<Container>> {
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("container {id} does not exist")))
    }

    fn do_create(&self, req: &CreateTaskRequest) -> Result<u32> {
        let id = req.id.clone();
        if self
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&id)
        {
            return Err(Error::AlreadyExists(format!(
                "container {id} already exists"
            )));
        }
        if !req.checkpoint.is_empty() || !req.parent_checkpoint.is_empty() {
            return Err(Error::Unimplemented(
                "restoring from a checkpoint is not implemented".into(),
            ));
        }
        if let Some(opts) = req.options.as_ref() {
            debug!("create {id}: runtime options of type {}", opts.type_url);
        }
        let bundle = PathBuf::from(&req.bundle);
        let rootfs_mounted = mount_rootfs(&bundle, &req.rootfs)?;
        let result = self.launch(req, &bundle, rootfs_mounted);
        if result.is_err() && rootfs_mounted {
            let _ = state::unmount_rootfs(&bundle.join("rootfs"));
        }
        result
    }

    fn launch(&self, req: &CreateTaskRequest, bundle: &Path, rootfs_mounted: bool) -> Result<u32> {
        let id = req.id.clone();
        let t0 = std::time::Instant::now();
        let spec = runtime::spec::load(bundle)?;
        let mut plan = runtime::plan::build(&spec, bundle, &id, Layout::host())?;
        let opts = req.options.as_ref();
        plan.no_pivot_root = options::parse(
            opts.map(|o| o.type_url.as_str()),
            opts.map_or(&[][..], |o| &o.value[..]),
        )?
        .no_pivot_root;
        let io = stdio::open(&req.stdin, &req.stdout, &req.stderr, req.terminal)?;
        let t_planned = t0.elapsed();
        if let Err(e) = cgroups::create(&plan.cgroup) {
            let _ = cgroups::destroy(&plan.cgroup);
            return Err(e.into());
        }

        let init = Arc::new(Process::default());
        let (watched, events, cid) = (init.clone(), self.events.clone(), id.clone());
        let on_exit = move |exit: Exit| {
            let mut s = watched.set_exited(exit);
            if s.announced {
                events.publish(
                    topics::TASK_EXIT_EVENT_TOPIC,
                    Box::new(exit_event(&cid, exit)),
                );
            } else {
                s.exit_unpublished = true;
            }
        };
        let t_cgroup = t0.elapsed();
        let launched = self.zygote.launch(&plan, io.fds(), |pid| {
            init.lock().pid = pid;
            self.exits.watch(pid, on_exit);
        });
        let launched = match launched {
            Ok(l) => l,
            Err(e) => {
                let _ = cgroups::destroy(&plan.cgroup);
                return Err(e.into());
            }
        };
        drop(io);
        let pid = launched.pid;
        let cgroup = plan.cgroup.clone();
        init.lock().cgroup_join = Some(std::thread::spawn(move || cgroups::join(&cgroup, pid)));
        let t_launched = t0.elapsed();
        let container = Arc::new(Container {
            id: id.clone(),
            bundle: bundle.to_path_buf(),
            rootfs: plan.rootfs.clone(),
            rootfs_mounted,
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            cgroup: plan.cgroup.clone(),
            init: init.clone(),
        });
        let persisted = ContainerState {
            id: id.clone(),
            pid,
            rootfs: plan.rootfs.clone(),
            cgroup: plan.cgroup.clone(),
        };
        let ready = persisted
            .save(bundle)
            .map_err(Error::from)
            .and_then(|()| launched.wait_ready().map_err(Error::from));
        if let Err(e) = ready {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            init.wait();
            let _ = init.lock().finish_cgroup_join();
            let _ = cgroups::destroy(&plan.cgroup);
            let _ = ContainerState::remove(bundle);
            return Err(e);
        }

        let mut s = init.lock();
        s.launched = Some(launched);
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), container);
        self.events.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(TaskCreate {
                container_id: id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                }),
                checkpoint: req.checkpoint.clone(),
                pid: pid as u32,
                ..Default::default()
            }),
        );
        s.announced = true;
        if s.exit_unpublished {
            if let Some(exit) = s.exit {
                self.events.publish(
                    topics::TASK_EXIT_EVENT_TOPIC,
                    Box::new(exit_event(&id, exit)),
                );
            }
        }
        debug!(
            "create {id}: planned after {t_planned:?}, cgroup after {t_cgroup:?}, init {pid} cloned after {:?}, ready after {:?}",
            t_launched,
            t0.elapsed()
        );
        info!("created container {id} (pid {pid})");
        Ok(pid as u32)
    }

    fn do_start(&self, req: &StartRequest) -> Result<u32> {
        no_exec(&req.exec_id)?;
        let c = self.container(&req.id)?;
        let mut s = c.init.lock();
        if s.status != Status::Created {
            return Err(Error::FailedPrecondition(format!(
                "container {} is {:?}, not created",
                req.id, s.status
            )));
        }
        let launched = s.launched.take().ok_or_else(|| {
            Error::FailedPrecondition(format!("container {} cannot be started", req.id))
        })?;
        let pid = s.pid;
        if let Err(e) = s.finish_cgroup_join() {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return Err(Error::Runtime(e));
        }
        launched.start()?;
        if s.status == Status::Created {
            s.status = Status::Running;
        }
        self.events.publish(
            topics::TASK_START_EVENT_TOPIC,
            Box::new(TaskStart {
                container_id: req.id.clone(),
                pid: pid as u32,
                ..Default::default()
            }),
        );
        Ok(pid as u32)
    }

    fn do_delete(&self, req: &DeleteRequest) -> Result<api::DeleteResponse> {
        no_exec(&req.exec_id)?;
        let c = self.container(&req.id)?;
        let status = c.init.lock().status;
        match status {
            Status::Running => {
                return Err(Error::FailedPrecondition(format!(
                    "cannot delete running container {}: kill it first",
                    req.id
                )))
            }
            Status::Created => {
                // Never started: the init waits on its channel; take it down.
                let mut s = c.init.lock();
                let _ = s.finish_cgroup_join();
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(s.pid, libc::SIGKILL) };
            }
            Status::Stopped => {}
        }
        let exit = c.init.wait();
        cgroups::destroy(&c.cgroup)?;
        if c.rootfs_mounted {
            state::unmount_rootfs(&c.rootfs)?;
        }
        ContainerState::remove(&c.bundle)?;
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&req.id);
        self.events.publish(
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
        Ok(api::DeleteResponse {
            pid: exit.pid as u32,
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.exited_at)),
            ..Default::default()
        })
    }

    fn do_state(&self, req: &StateRequest) -> Result<StateResponse> {
        no_exec(&req.exec_id)?;
        let c = self.container(&req.id)?;
        let s = c.init.lock();
        let status = match s.status {
            Status::Created => api::Status::CREATED,
            Status::Running => api::Status::RUNNING,
            Status::Stopped => api::Status::STOPPED,
        };
        Ok(StateResponse {
            id: c.id.clone(),
            bundle: c.bundle.to_string_lossy().into_owned(),
            pid: s.pid as u32,
            status: EnumOrUnknown::new(status),
            stdin: c.stdin.clone(),
            stdout: c.stdout.clone(),
            stderr: c.stderr.clone(),
            terminal: false,
            exit_status: s.exit.map_or(0, |e| e.status),
            exited_at: s.exit.map(|e| timestamp(e.exited_at)).into(),
            ..Default::default()
        })
    }

    fn do_kill(&self, req: &KillRequest) -> Result<()> {
        no_exec(&req.exec_id)?;
        let c = self.container(&req.id)?;
        let s = c.init.lock();
        if s.status == Status::Stopped {
            return Err(Error::NotFound(format!(
                "container {}: process already finished",
                req.id
            )));
        }
        let signal = req.signal as i32;
        let mut targets = vec![s.pid];
        if req.all {
            targets.extend(cgroups::pids(&c.cgroup).into_iter().filter(|p| *p != s.pid));
        }
        for pid in targets {
            // SAFETY: kill(2) has no memory-safety preconditions.
            if unsafe { libc::kill(pid, signal) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ESRCH) {
                    return Err(Error::Internal(format!(
                        "kill {pid} with signal {signal}: {e}"
                    )));
                }
            }
        }
        Ok(())
    }

    fn do_wait(&self, req: &WaitRequest) -> Result<WaitResponse> {
        no_exec(&req.exec_id)?;
        let c = self.container(&req.id)?;
        let exit = c.init.wait();
        Ok(WaitResponse {
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.exited_at)),
            ..Default::default()
        })
    }

    fn do_pids(&self, req: &PidsRequest) -> Result<PidsResponse> {
        let c = self.container(&req.id)?;
        let processes = cgroups::pids(&c.cgroup)
            .into_iter()
            .map(|pid| containerd_shim_protos::types::task::ProcessInfo {
                pid: pid as u32,
                ..Default::default()
            })
            .collect();
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }
}

fn exit_event(id: &str, exit: Exit) -> TaskExit {
    TaskExit {
        container_id: id.to_owned(),
        id: id.to_owned(),
        pid: exit.pid as u32,
        exit_status: exit.status,
        exited_at: MessageField::some(timestamp(exit.exited_at)),
        ..Default::default()
    }
}

/// Logs a failed RPC into containerd's log and turns it into a ttrpc status.
fn reply<T>(rpc: &str, id: &str, r: Result<T>) -> ttrpc::Result<T> {
    r.map_err(|e| {
        match &e {
            Error::NotFound(_) => debug!("{rpc} {id}: {e}"),
            _ => error!("{rpc} {id}: {e}"),
        }
        e.into()
    })
}

fn unimplemented<T>(rpc: &str) -> ttrpc::Result<T> {
    Err(Error::Unimplemented(format!("{rpc} is not implemented by io.containerd.rs.v1")).into())
}

impl Task for Service {
    fn create(
        &self,
        _: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        let pid = reply("create", &req.id, self.do_create(&req))?;
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(&self, _: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        let pid = reply("start", &req.id, self.do_start(&req))?;
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<api::DeleteResponse> {
        reply("delete", &req.id, self.do_delete(&req))
    }

    fn state(&self, _: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        reply("state", &req.id, self.do_state(&req))
    }

    fn kill(&self, _: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        reply("kill", &req.id, self.do_kill(&req)).map(|()| Empty::default())
    }

    fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        reply("wait", &req.id, self.do_wait(&req))
    }

    fn pids(&self, _: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        reply("pids", &req.id, self.do_pids(&req))
    }

    fn connect(&self, _: &TtrpcContext, req: ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        let task_pid = self
            .container(&req.id)
            .map(|c| c.init.lock().pid as u32)
            .unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            ..Default::default()
        })
    }

    fn shutdown(&self, _: &TtrpcContext, _: ShutdownRequest) -> ttrpc::Result<Empty> {
        if self
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            self.shutdown.signal();
        } else {
            debug!("shutdown requested while containers remain: staying up");
        }
        Ok(Empty::default())
    }

    fn pause(&self, _: &TtrpcContext, _: api::PauseRequest) -> ttrpc::Result<Empty> {
        unimplemented("Pause")
    }

    fn resume(&self, _: &TtrpcContext, _: api::ResumeRequest) -> ttrpc::Result<Empty> {
        unimplemented("Resume")
    }

    fn checkpoint(&self, _: &TtrpcContext, _: api::CheckpointTaskRequest) -> ttrpc::Result<Empty> {
        unimplemented("Checkpoint")
    }

    fn exec(&self, _: &TtrpcContext, _: api::ExecProcessRequest) -> ttrpc::Result<Empty> {
        unimplemented("Exec")
    }

    fn resize_pty(&self, _: &TtrpcContext, _: api::ResizePtyRequest) -> ttrpc::Result<Empty> {
        unimplemented("ResizePty")
    }

    fn close_io(&self, _: &TtrpcContext, _: api::CloseIORequest) -> ttrpc::Result<Empty> {
        unimplemented("CloseIO")
    }

    fn update(&self, _: &TtrpcContext, _: api::UpdateTaskRequest) -> ttrpc::Result<Empty> {
        unimplemented("Update")
    }

    fn stats(&self, _: &TtrpcContext, _: api::StatsRequest) -> ttrpc::Result<api::StatsResponse> {
        unimplemented("Stats")
    }
}
