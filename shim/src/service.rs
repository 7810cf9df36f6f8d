//! The Task service: each RPC becomes calls on container handles and the runtime library.
//! No syscalls of its own beyond signals and the rootfs mounts containerd asks for.

use std::{
    collections::HashMap,
    os::fd::AsFd,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Condvar, Mutex,
    },
};

use containerd_shim_protos::{
    api::{
        self, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
        DeleteRequest, Empty, ExecProcessRequest, KillRequest, PidsRequest, PidsResponse,
        ShutdownRequest, StartRequest, StartResponse, StateRequest, StateResponse, WaitRequest,
        WaitResponse,
    },
    events::task::{
        TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskStart,
    },
    events::task::{TaskPaused, TaskResumed},
    protobuf::{well_known_types::any::Any, EnumOrUnknown, Message, MessageField},
    shim::oci::ProcessDetails,
    shim::shim_ttrpc::Task,
    topics,
    ttrpc::{self, TtrpcContext},
};
use log::{debug, error, info, warn};
use runtime::{
    cgroups::{self, Layout},
    hooks,
    launch::{Exit, Zygote},
    plan::NamespaceKind,
    state::{self, ContainerState},
};

use crate::{
    container::{Container, ExecProcess, ExitOrder, Process, Status, StdioPaths},
    error::{Error, Result},
    events::{timestamp, EventQueue},
    exits::ExitMonitor,
    oom::OomWatcher,
    options::RuntimeOptions,
    rootfs,
    stdio::LaunchIo,
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
    namespace: String,
    zygote: Zygote,
    exits: ExitMonitor,
    events: Arc<EventQueue>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    shutdown: Arc<ShutdownSignal>,
    /// None if its descriptors could not be created (logged): no OOM events then.
    oom: Option<OomWatcher>,
}

impl Service {
    pub fn new(
        namespace: String,
        zygote: Zygote,
        exits: ExitMonitor,
        events: Arc<EventQueue>,
        shutdown: Arc<ShutdownSignal>,
    ) -> Service {
        let oom = OomWatcher::start(events.clone())
            .map_err(|e| error!("OOM watcher: {e}: no /tasks/oom events from this shim"))
            .ok();
        Service {
            namespace,
            zygote,
            exits,
            events,
            containers: Mutex::new(HashMap::new()),
            shutdown,
            oom,
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
        let opts = match req.options.as_ref() {
            Some(any) => RuntimeOptions::from_any(any).map_err(Error::InvalidArgument)?,
            None => RuntimeOptions::default(),
        };
        debug!("create {id}: runtime options {}", opts.describe());
        if let Some(cg) = &opts.shim_cgroup {
            self.move_shim_into(cg)?;
        }
        let bundle = PathBuf::from(&req.bundle);
        let rootfs_mounted = rootfs::mount(&bundle, &req.rootfs, &self.zygote)?;
        let result = self.launch(req, &opts, &bundle, rootfs_mounted);
        if result.is_err() && rootfs_mounted {
            let _ = state::unmount_rootfs(&bundle.join("rootfs"));
        }
        result
    }

    fn launch(
        &self,
        req: &CreateTaskRequest,
        opts: &RuntimeOptions,
        bundle: &Path,
        rootfs_mounted: bool,
    ) -> Result<u32> {
        let id = req.id.clone();
        let t0 = std::time::Instant::now();
        let spec = runtime::spec::load(bundle)?;
        let mut plan = runtime::plan::build_for(
            &spec,
            bundle,
            &id,
            &Layout::host_from_here(),
            opts.cgroup_driver(),
        )?;
        plan.no_pivot_root = opts.no_pivot_root;
        let stdio_paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        if req.terminal != plan.process.terminal {
            return Err(Error::InvalidArgument(format!(
                "create: terminal is {} but process.terminal in config.json is {}",
                req.terminal, plan.process.terminal
            )));
        }
        let io = LaunchIo::open(&stdio_paths, &id, &self.namespace, opts.io_owner)?;
        let t_planned = t0.elapsed();
        // On an error it leaves nothing behind, and kills nothing: the cgroup may be
        // someone else's (see cgroups::create).
        cgroups::create(&plan.cgroup)?;

        let init = Arc::new(Process::default());
        let exit_order = Arc::new(Mutex::new(ExitOrder::default()));
        let paused = Arc::new(AtomicBool::new(false));
        let on_exit = {
            let (watched, events, cid, order) = (
                init.clone(),
                self.events.clone(),
                id.clone(),
                exit_order.clone(),
            );
            let (cgroup, own_pidns) =
                (plan.cgroup.clone(), plan.namespaces.has(NamespaceKind::Pid));
            let (oom, paused) = (self.oom.clone(), paused.clone());
            move |exit: Exit| {
                watched.mark_reaped();
                // An OOM kill is signalled before the victim dies: publish it before the exit.
                if let Some(oom) = &oom {
                    oom.check(&cid);
                }
                if paused.swap(false, Ordering::SeqCst) {
                    // What is left of a paused container must be able to die (runc's shim
                    // resumes an exited paused container too).
                    let _ = cgroups::live::thaw(&cgroup, Layout::host());
                }
                watched.drain_output();
                let mut s = watched.set_exited(exit);
                if !own_pidns {
                    // Without its own pid namespace nothing else dies with the init: we kill.
                    cgroups::kill_all(&cgroup, libc::SIGKILL);
                }
                if !s.announced {
                    s.exit_unpublished = true;
                    return;
                }
                let mut order = order.lock().unwrap_or_else(|p| p.into_inner());
                if order.running_execs > 0 {
                    order.deferred_init_exit = Some(exit);
                } else {
                    events.publish(
                        topics::TASK_EXIT_EVENT_TOPIC,
                        Box::new(exit_event(&cid, &cid, exit)),
                    );
                }
            }
        };
        let t_cgroup = t0.elapsed();
        let launched = cgroups::open_birth_cgroup(&plan.cgroup).and_then(|birth| {
            self.zygote.launch(
                &plan,
                io.fds(),
                birth.as_ref().map(|f| f.as_fd()),
                None,
                |pid, pidfd| {
                    let mut s = init.lock();
                    (s.pid, s.pidfd) = (pid, Some(pidfd.clone()));
                    drop(s);
                    self.exits.watch(pid, on_exit);
                },
            )
        });
        let launched = match launched {
            Ok(l) => l,
            Err(e) => {
                let _ = cgroups::destroy(&plan.cgroup);
                return Err(e.into());
            }
        };
        let pid = launched.pid;
        if !launched.in_cgroup {
            let cgroup = plan.cgroup.clone();
            init.lock().cgroup_join = Some(std::thread::spawn(move || cgroups::join(&cgroup, pid)));
        }
        let t_launched = t0.elapsed();
        let persisted = ContainerState {
            id: id.clone(),
            pid,
            rootfs: plan.rootfs.clone(),
            cgroup: plan.cgroup.clone(),
        };
        let create_hooks = || {
            // The hooks find the init in its cgroup, as they would under runc.
            init.lock().finish_cgroup_join()?;
            hooks::create_runtime(&plan.hooks, pid)
        };
        let ready = persisted
            .save(bundle)
            .map_err(Error::from)
            .and_then(|()| {
                // A systemd scope exists only once the join has started it: the init waits
                // for it before its mounts (the OOM watch and Stats need its files too).
                let cgroup_ready = || init.lock().finish_cgroup_join();
                launched
                    .wait_ready(cgroup_ready, create_hooks)
                    .map_err(Error::from)
            })
            // Create answers with the init in its cgroup, as runc's create does: a client
            // may read the task's cgroup or limits right away.
            .and_then(|console| {
                init.lock().finish_cgroup_join()?;
                Ok(console)
            })
            .and_then(|console| io.start(console));
        if let Err(e) = ready {
            let _ = launched.pidfd.signal(libc::SIGKILL);
            init.wait();
            let _ = init.lock().finish_cgroup_join();
            let _ = cgroups::destroy(&plan.cgroup);
            let _ = ContainerState::remove(bundle);
            // Torn down like a deleted container: poststop follows (runtime.md lifecycle).
            run_poststop(&id, &plan.hooks);
            return Err(e);
        }
        let container = Arc::new(Container {
            id: id.clone(),
            bundle: bundle.to_path_buf(),
            rootfs_mounted,
            stdio: stdio_paths,
            io_owner: opts.io_owner,
            plan,
            init: init.clone(),
            execs: Mutex::new(HashMap::new()),
            exit_order,
            paused,
        });
        if let Some(oom) = &self.oom {
            if let Err(e) = oom.watch(&id, &container.plan.cgroup, Layout::host()) {
                error!("create {id}: watching for OOM: {e}: no /tasks/oom for this container");
            }
        }

        let mut s = init.lock();
        s.launched = Some(launched);
        s.set_io(ready.ok().map(Arc::new));
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
                    Box::new(exit_event(&id, &id, exit)),
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

    /// Honours the `shim_cgroup` option: the daemon and its launcher (and so the cgroup the
    /// inits start from) join that existing cgroup, as containerd's runc shim does.
    fn move_shim_into(&self, cgroup: &str) -> Result<()> {
        let rel = cgroups::cgroup_relative_path(Some(Path::new(cgroup)), "")
            .map_err(|e| Error::InvalidArgument(format!("runtime option shim_cgroup: {e}")))?;
        [std::process::id() as i32, self.zygote.pid()]
            .into_iter()
            .try_for_each(|pid| cgroups::join_existing(&rel, Layout::host(), pid))
            .map_err(|e| {
                Error::InvalidArgument(format!("runtime option shim_cgroup {cgroup:?}: {e}"))
            })
    }

    /// The process an RPC is about: the init, or the exec `exec_id`.
    fn process(&self, c: &Container, exec_id: &str) -> Result<Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(c.init.clone());
        }
        c.exec(exec_id).map(|e| e.process.clone()).ok_or_else(|| {
            Error::NotFound(format!(
                "exec {exec_id} of container {} does not exist",
                c.id
            ))
        })
    }

    fn do_start(&self, req: &StartRequest) -> Result<u32> {
        let c = self.container(&req.id)?;
        if !req.exec_id.is_empty() {
            return self.start_exec(&c, &req.exec_id);
        }
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
        // startContainer hooks run in the init between Start and exec.
        if let Err(e) = launched.start() {
            drop(s);
            stop_failed_start(&c);
            return Err(Error::Runtime(e));
        }
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
        let status = match s.status {
            Status::Stopped => hooks::Status::Stopped,
            _ => hooks::Status::Running,
        };
        // Without the lock: Kill and State must work while a poststart hook runs.
        drop(s);
        if let Err(e) = hooks::poststart(&c.plan.hooks, pid, status) {
            stop_failed_start(&c);
            return Err(e.into());
        }
        Ok(pid as u32)
    }

    fn do_exec(&self, req: &ExecProcessRequest) -> Result<()> {
        let c = self.container(&req.id)?;
        c.refuse_if_paused()?;
        if c.init.lock().status == Status::Stopped {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                req.id
            )));
        }
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
        let mut execs = c.execs.lock().unwrap_or_else(|p| p.into_inner());
        if execs.contains_key(&req.exec_id) {
            return Err(Error::AlreadyExists(format!(
                "exec {} already exists",
                req.exec_id
            )));
        }
        execs.insert(
            req.exec_id.clone(),
            Arc::new(ExecProcess {
                process: Arc::new(Process::default()),
                spec,
                stdio: StdioPaths {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                },
            }),
        );
        drop(execs);
        self.events.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Box::new(TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            }),
        );
        Ok(())
    }

    fn start_exec(&self, c: &Arc<Container>, exec_id: &str) -> Result<u32> {
        let e = c.exec(exec_id).ok_or_else(|| {
            Error::NotFound(format!(
                "exec {exec_id} of container {} does not exist",
                c.id
            ))
        })?;
        c.refuse_if_paused()?;
        let (init_pid, init_pidfd) = {
            let s = c.init.lock();
            if s.status != Status::Running || s.reaped {
                return Err(Error::FailedPrecondition(format!(
                    "container {} is {:?}: cannot start exec {exec_id}",
                    c.id, s.status
                )));
            }
            (s.pid, s.pidfd.clone())
        };
        {
            let mut s = e.process.lock();
            if s.status != Status::Created || s.starting {
                return Err(Error::FailedPrecondition(format!(
                    "exec {exec_id} was already started"
                )));
            }
            s.starting = true;
        }
        let plan = runtime::plan::exec_plan(&c.plan, init_pid, &e.spec);
        let io = LaunchIo::open(&e.stdio, &c.id, &self.namespace, c.io_owner)
            .inspect_err(|_| e.process.lock().starting = false)?;
        let on_exit = {
            let (watched, events, cid, xid, order) = (
                e.process.clone(),
                self.events.clone(),
                c.id.clone(),
                exec_id.to_owned(),
                c.exit_order.clone(),
            );
            move |exit: Exit| {
                watched.mark_reaped();
                watched.drain_output();
                let was_running = watched.lock().status == Status::Running;
                let mut s = watched.set_exited(exit);
                if !s.announced {
                    s.exit_unpublished = true;
                    return;
                }
                events.publish(
                    topics::TASK_EXIT_EVENT_TOPIC,
                    Box::new(exit_event(&cid, &xid, exit)),
                );
                let mut order = order.lock().unwrap_or_else(|p| p.into_inner());
                if was_running {
                    order.running_execs = order.running_execs.saturating_sub(1);
                }
                if order.running_execs == 0 {
                    if let Some(init_exit) = order.deferred_init_exit.take() {
                        events.publish(
                            topics::TASK_EXIT_EVENT_TOPIC,
                            Box::new(exit_event(&cid, &cid, init_exit)),
                        );
                    }
                }
            }
        };
        let launched = cgroups::open_birth_cgroup(&plan.cgroup)
            .map_err(Error::from)
            .and_then(|birth| {
                self.zygote
                    .launch(
                        &plan,
                        io.fds(),
                        birth.as_ref().map(|f| f.as_fd()),
                        // The namespaces of that very init, whoever has its pid by now.
                        init_pidfd.as_ref().map(|p| p.as_fd()),
                        |pid, pidfd| {
                            let mut s = e.process.lock();
                            (s.pid, s.pidfd) = (pid, Some(pidfd.clone()));
                            drop(s);
                            self.exits.watch(pid, on_exit);
                        },
                    )
                    .map_err(Error::from)
            });
        let fail = |err: Error| {
            e.process.lock().starting = false;
            err
        };
        let launched = launched.map_err(fail)?;
        let (pid, pidfd) = (launched.pid, launched.pidfd.clone());
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
                e.process.lock().set_io(Some(Arc::new(pio)));
                launched.start().map_err(Error::from)
            });
        if let Err(err) = ready {
            let _ = pidfd.signal(libc::SIGKILL);
            e.process.wait();
            return Err(fail(err));
        }
        let mut s = e.process.lock();
        s.starting = false;
        self.events.publish(
            topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            Box::new(TaskExecStarted {
                container_id: c.id.clone(),
                exec_id: exec_id.to_owned(),
                pid: pid as u32,
                ..Default::default()
            }),
        );
        s.announced = true;
        if s.status == Status::Created {
            s.status = Status::Running;
            c.exit_order
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .running_execs += 1;
        } else if s.exit_unpublished {
            if let Some(exit) = s.exit {
                self.events.publish(
                    topics::TASK_EXIT_EVENT_TOPIC,
                    Box::new(exit_event(&c.id, exec_id, exit)),
                );
            }
        }
        Ok(pid as u32)
    }

    fn do_delete(&self, req: &DeleteRequest) -> Result<api::DeleteResponse> {
        let c = self.container(&req.id)?;
        let process = self.process(&c, &req.exec_id)?;
        let status = process.lock().status;
        match status {
            Status::Running => {
                return Err(Error::FailedPrecondition(format!(
                    "cannot delete running process {} of container {}: kill it first",
                    if req.exec_id.is_empty() {
                        "init"
                    } else {
                        &req.exec_id
                    },
                    req.id
                )))
            }
            Status::Created => {
                // Never started: the process waits on its channel; take it down.
                let mut s = process.lock();
                let _ = s.finish_cgroup_join();
                if let Some(pidfd) = s.pidfd.clone() {
                    let _ = pidfd.signal(libc::SIGKILL);
                } else {
                    // An exec that was added but never launched has no process to wait for.
                    drop(s);
                    c.execs
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&req.exec_id);
                    return Ok(api::DeleteResponse::default());
                }
            }
            Status::Stopped => {}
        }
        let exit = process.wait();
        let response = api::DeleteResponse {
            pid: exit.pid as u32,
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.exited_at)),
            ..Default::default()
        };
        if !req.exec_id.is_empty() {
            c.execs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&req.exec_id);
            return Ok(response);
        }
        if let Some(oom) = &self.oom {
            oom.unwatch(&req.id);
        }
        cgroups::destroy(&c.plan.cgroup)?;
        if c.rootfs_mounted {
            // The last reference goes on a thread of its own: see detach_rootfs.
            if let Some(hold) = state::detach_rootfs(&c.plan.rootfs)? {
                std::thread::spawn(move || drop(hold));
            }
        }
        ContainerState::remove(&c.bundle)?;
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&req.id);
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
        Ok(response)
    }

    fn do_state(&self, req: &StateRequest) -> Result<StateResponse> {
        let c = self.container(&req.id)?;
        let process = self.process(&c, &req.exec_id)?;
        let stdio = match c.exec(&req.exec_id) {
            Some(e) => e.stdio.clone(),
            None => c.stdio.clone(),
        };
        let s = process.lock();
        let status = match s.status {
            Status::Created => api::Status::CREATED,
            // A paused container's execs are paused too (as containerd's runc shim says).
            Status::Running if c.paused.load(Ordering::SeqCst) => api::Status::PAUSED,
            Status::Running => api::Status::RUNNING,
            Status::Stopped => api::Status::STOPPED,
        };
        Ok(StateResponse {
            id: c.id.clone(),
            bundle: c.bundle.to_string_lossy().into_owned(),
            pid: s.pid.max(0) as u32,
            status: EnumOrUnknown::new(status),
            stdin: stdio.stdin,
            stdout: stdio.stdout,
            stderr: stdio.stderr,
            terminal: stdio.terminal,
            exit_status: s.exit.map_or(0, |e| e.status),
            exited_at: s.exit.map(|e| timestamp(e.exited_at)).into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    fn do_kill(&self, req: &KillRequest) -> Result<()> {
        let c = self.container(&req.id)?;
        let process = self.process(&c, &req.exec_id)?;
        let signal = req.signal as i32;
        let pid = process.lock().pid;
        process.signal(signal).map_err(|e| match e {
            Error::NotFound(_) => {
                Error::NotFound(format!("container {}: process already finished", req.id))
            }
            other => other,
        })?;
        if req.all && req.exec_id.is_empty() {
            for other in cgroups::pids(&c.plan.cgroup)
                .into_iter()
                .filter(|p| *p != pid)
            {
                // SAFETY: kill(2) has no memory-safety preconditions.
                if unsafe { libc::kill(other, signal) } != 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::ESRCH) {
                        return Err(Error::Internal(format!(
                            "kill {other} with signal {signal}: {e}"
                        )));
                    }
                }
            }
        }
        if signal == libc::SIGKILL && c.paused.load(Ordering::SeqCst) {
            // A frozen (v1) task dies only once thawed; runc thaws for SIGKILL as well.
            cgroups::live::thaw(&c.plan.cgroup, Layout::host())?;
        }
        Ok(())
    }

    fn do_wait(&self, req: &WaitRequest) -> Result<WaitResponse> {
        let c = self.container(&req.id)?;
        let exit = self.process(&c, &req.exec_id)?.wait();
        Ok(WaitResponse {
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.exited_at)),
            ..Default::default()
        })
    }

    /// Pause (`freeze`) or Resume: the init must be running; events as runc's shim sends.
    fn do_pause(&self, id: &str, freeze: bool) -> Result<()> {
        let c = self.container(id)?;
        // The init's lock orders this against its exit (which thaws a paused container).
        let s = c.init.lock();
        if s.status != Status::Running {
            return Err(Error::FailedPrecondition(format!(
                "cannot {} container {id}: it is {:?}",
                if freeze { "pause" } else { "resume" },
                s.status
            )));
        }
        if c.paused.load(Ordering::SeqCst) == freeze {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is already {}",
                if freeze { "paused" } else { "running" }
            )));
        }
        if freeze {
            cgroups::live::freeze(&c.plan.cgroup, Layout::host())?;
            c.paused.store(true, Ordering::SeqCst);
            self.events.publish(
                topics::TASK_PAUSED_EVENT_TOPIC,
                Box::new(TaskPaused {
                    container_id: id.to_owned(),
                    ..Default::default()
                }),
            );
        } else {
            cgroups::live::thaw(&c.plan.cgroup, Layout::host())?;
            c.paused.store(false, Ordering::SeqCst);
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
    fn do_update(&self, req: &api::UpdateTaskRequest) -> Result<()> {
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
        if c.init.lock().status == Status::Stopped {
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
        })
    }

    fn do_pids(&self, req: &PidsRequest) -> Result<PidsResponse> {
        let c = self.container(&req.id)?;
        // Exec pids carry their exec id, as containerd's runc shim reports them.
        let exec_ids: HashMap<u32, String> = c
            .execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, e)| (e.process.lock().pid.max(0) as u32, id.clone()))
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
}

/// A failed Start stops the container (runtime.md lifecycle steps 7 and 9) and returns once
/// its exit is recorded: clients delete a task only when it is stopped.
fn stop_failed_start(c: &Container) {
    let _ = c.init.signal(libc::SIGKILL);
    c.init.wait();
}

/// Poststop failures are warnings only (runtime.md lifecycle step 13).
fn run_poststop(id: &str, plan: &runtime::plan::HooksPlan) {
    for e in hooks::poststop(plan) {
        warn!("{id}: {e}");
    }
}

/// TaskExit of process `id` (the container id for the init, else the exec id).
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

    fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> ttrpc::Result<Empty> {
        reply("pause", &req.id, self.do_pause(&req.id, true)).map(|()| Empty::default())
    }

    fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> ttrpc::Result<Empty> {
        reply("resume", &req.id, self.do_pause(&req.id, false)).map(|()| Empty::default())
    }

    fn checkpoint(&self, _: &TtrpcContext, _: api::CheckpointTaskRequest) -> ttrpc::Result<Empty> {
        unimplemented("Checkpoint")
    }

    fn exec(&self, _: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        reply("exec", &req.id, self.do_exec(&req)).map(|()| Empty::default())
    }

    fn resize_pty(&self, _: &TtrpcContext, req: api::ResizePtyRequest) -> ttrpc::Result<Empty> {
        let r = self.container(&req.id).and_then(|c| {
            let process = self.process(&c, &req.exec_id)?;
            let s = process.lock();
            // As containerd's runc shim: the init's terminal can be resized until Delete
            // (`ctr run -t` resizes once more when a short-lived container has already
            // exited), an exited exec's cannot.
            if s.status == Status::Stopped && !req.exec_id.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "container {}: cannot resize the terminal of a stopped process",
                    req.id
                )));
            }
            // Before Start, or without stdio to act on: nothing to resize yet.
            match &s.io {
                Some(io) => io.resize(req.height, req.width),
                None => Ok(()),
            }
        });
        reply("resize_pty", &req.id, r).map(|()| Empty::default())
    }

    fn close_io(&self, _: &TtrpcContext, req: api::CloseIORequest) -> ttrpc::Result<Empty> {
        let r = self.container(&req.id).and_then(|c| {
            let process = self.process(&c, &req.exec_id)?;
            if req.stdin {
                // A client may close stdin before Start (ctr does for an exec whose input is
                // already at EOF): remember it for when the process's stdio exists.
                process.lock().close_stdin();
            }
            Ok(())
        });
        reply("close_io", &req.id, r).map(|()| Empty::default())
    }

    fn update(&self, _: &TtrpcContext, req: api::UpdateTaskRequest) -> ttrpc::Result<Empty> {
        reply("update", &req.id, self.do_update(&req)).map(|()| Empty::default())
    }

    fn stats(&self, _: &TtrpcContext, req: api::StatsRequest) -> ttrpc::Result<api::StatsResponse> {
        let r = self.container(&req.id).and_then(|c| {
            crate::metrics::collect(&c.plan.cgroup, Layout::host()).map(|any| api::StatsResponse {
                stats: MessageField::some(any),
                ..Default::default()
            })
        });
        reply("stats", &req.id, r)
    }
}
