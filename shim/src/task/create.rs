//! Create (mount the rootfs, plan, make the cgroup, have the launcher clone the init, wait
//! until it has applied the plan) and the init's Start (let it exec, poststart hooks).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use containerd_shim_protos::{
    api::{CreateTaskRequest, CreateTaskResponse, StartRequest, StartResponse},
    events::task::{TaskCreate, TaskIO, TaskStart},
    protobuf::MessageField,
    topics,
};
use log::{debug, error, info, warn};
use runtime::{
    cgroups::{self, Layout},
    hooks,
    state::{self, ContainerState},
};

use super::{
    lifecycle::{Container, Status, StdioPaths},
    Service, Slot,
};
use crate::{
    error::{Error, Result},
    options::RuntimeOptions,
    rootfs,
    stdio::LaunchIo,
};

/// How long a torn-down init may take to be reaped before we give up waiting for it.
const REAP_WAIT: Duration = Duration::from_secs(10);

/// containerd's rootfs mounts, being mounted on a thread of Create's scope.
struct PendingRootfs<'scope> {
    mounting: Option<std::thread::ScopedJoinHandle<'scope, Result<bool>>>,
    mounted: bool,
}

impl PendingRootfs<'_> {
    /// Waits for the mount: whether anything is mounted (nothing after a failed mount).
    fn wait(&mut self) -> Result<bool> {
        if let Some(mounting) = self.mounting.take() {
            self.mounted = mounting
                .join()
                .unwrap_or_else(|_| Err(Error::Internal("the rootfs mount panicked".into())))?;
        }
        Ok(self.mounted)
    }
}

impl Service {
    pub(super) fn create(&self, req: &CreateTaskRequest) -> Result<CreateTaskResponse> {
        let id = req.id.clone();
        if id.is_empty() {
            return Err(Error::InvalidArgument(
                "create: the container id is empty".into(),
            ));
        }
        {
            let mut reg = self.registry();
            if reg.closing {
                return Err(Error::FailedPrecondition(format!(
                    "create {id}: the shim is shutting down"
                )));
            }
            if reg.containers.contains_key(&id) {
                return Err(Error::AlreadyExists(format!(
                    "container {id} already exists"
                )));
            }
            // Taken now: a second Create of this id, or a Shutdown, sees it at once.
            reg.containers.insert(id.clone(), Slot::Creating(None));
        }
        let result = self.create_reserved(req);
        if result.is_err() {
            self.registry().containers.remove(&id);
        }
        result.map(|pid| CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn create_reserved(&self, req: &CreateTaskRequest) -> Result<u32> {
        if !req.checkpoint.is_empty() || !req.parent_checkpoint.is_empty() {
            return Err(Error::Unimplemented(
                "restoring from a checkpoint is not implemented".into(),
            ));
        }
        let opts = match req.options.as_ref() {
            Some(any) => RuntimeOptions::from_any(any).map_err(Error::InvalidArgument)?,
            None => RuntimeOptions::default(),
        };
        debug!("create {}: runtime options {}", req.id, opts.describe());
        if let Some(cg) = &opts.shim_cgroup {
            self.move_shim_into(cg)?;
        }
        let bundle = PathBuf::from(&req.bundle);
        std::thread::scope(|scope| {
            // The rootfs mount (an overlay mount is 0.5-2 ms in the kernel) goes on beside
            // the plan, the stdio and the cgroups, none of which reads the rootfs.
            let mut rootfs = PendingRootfs {
                mounting: (!req.rootfs.is_empty())
                    .then(|| scope.spawn(|| rootfs::mount(&bundle, &req.rootfs, &self.zygote))),
                mounted: false,
            };
            let result = self.launch_init(req, &opts, &bundle, &mut rootfs);
            if result.is_err() && rootfs.wait().unwrap_or(false) {
                let _ = state::unmount_rootfs(&bundle.join("rootfs"));
            }
            result
        })
    }

    fn launch_init(
        &self,
        req: &CreateTaskRequest,
        opts: &RuntimeOptions,
        bundle: &Path,
        rootfs: &mut PendingRootfs,
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
        let stdio = StdioPaths {
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
        let io = LaunchIo::open(&stdio, &id, &self.namespace, opts.io_owner)?;
        let t_planned = t0.elapsed();
        // On an error it leaves nothing behind, and kills nothing: the cgroup may be
        // someone else's (see cgroups::create).
        cgroups::create(&plan.cgroup)?;
        // An init that the shim moves (the systemd driver) waits for the kernel: start that
        // wait now (not before the cgroups are made: it holds the lock their mkdir needs).
        let entry = cgroups::open_entry(&plan.cgroup).inspect_err(|_| {
            let _ = cgroups::destroy(&plan.cgroup);
        })?;
        if entry.left_to_the_shim() {
            cgroups::prime_moves();
        }
        // The init is cloned onto the mounted rootfs; a failed mount leaves nothing mounted.
        let rootfs_mounted = rootfs.wait().inspect_err(|_| {
            let _ = cgroups::destroy(&plan.cgroup);
        })?;
        let c = Arc::new(Container::new(
            id.clone(),
            bundle.to_path_buf(),
            rootfs_mounted,
            stdio,
            opts.io_owner,
            plan,
            self.events.clone(),
        ));
        // Exits of the init find it from here on, before containerd can.
        self.registry()
            .containers
            .insert(id.clone(), Slot::Creating(Some(c.clone())));
        let plan = &c.plan;
        let t_cgroup = t0.elapsed();
        let launched = self
            .zygote
            .launch(plan, io.fds(), &entry, None, |pid, pidfd| {
                self.register_pid(&c, pid, pidfd, "")
            });
        drop(entry);
        let launched = match launched {
            Ok(l) => l,
            Err(e) => {
                let _ = cgroups::destroy(&plan.cgroup);
                return Err(e.into());
            }
        };
        let pid = launched.pid;
        // Where the shim moves the init, the move may wait for an RCU grace period: overlap
        // it with the init's rootfs setup.
        let join = (!launched.in_cgroup).then(|| {
            let cgroup = plan.cgroup.clone();
            std::thread::Builder::new()
                .name("cgroup-join".into())
                .spawn(move || cgroups::join(&cgroup, pid))
        });
        let join = match join.transpose() {
            Ok(j) => std::sync::Mutex::new(j),
            Err(e) => {
                let e = Error::Internal(format!("start a thread: {e}"));
                return Err(self.abort_create(&c, None, e));
            }
        };
        let finish_join = || -> runtime::Result<()> {
            match join.lock().unwrap_or_else(|p| p.into_inner()).take() {
                Some(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(runtime::Error::Other("cgroup join panicked".into()))),
                None => Ok(()),
            }
        };
        let t_launched = t0.elapsed();
        let persisted = ContainerState {
            id: id.clone(),
            pid,
            rootfs: plan.rootfs.clone(),
            cgroup: plan.cgroup.clone(),
        };
        let ready = persisted
            .save(bundle)
            .map_err(Error::from)
            .and_then(|()| {
                // A systemd scope exists only once the join has started it: the init waits
                // for it before its mounts (the OOM watch and Stats need its files too).
                launched
                    .wait_ready(finish_join, || {
                        // The hooks find the init in its cgroup, as they would under runc.
                        finish_join()?;
                        hooks::create_runtime(&plan.hooks, pid)
                    })
                    .map_err(Error::from)
            })
            // Create answers with the init in its cgroup, as runc's create does: a client
            // may read the task's cgroup or limits right away.
            .and_then(|console| {
                finish_join()?;
                Ok(console)
            })
            .and_then(|console| io.start(console));
        let process_io = match ready {
            Ok(pio) => Arc::new(pio),
            Err(e) => return Err(self.abort_create(&c, Some(&finish_join), e)),
        };
        if let Some(oom) = &self.oom {
            if let Err(e) = oom.watch(&id, &plan.cgroup, Layout::host()) {
                error!("create {id}: watching for OOM: {e}: no /tasks/oom for this container");
            }
        }
        {
            let mut s = c.lock();
            s.init.launched = Some(launched);
            s.init.set_io(Some(process_io));
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
            // An init that already died has its TaskExit published right after this.
            s.init.announced = true;
            self.registry()
                .containers
                .insert(id.clone(), Slot::Ready(c.clone()));
        }
        debug!(
            "create {id}: planned after {t_planned:?}, cgroup after {t_cgroup:?}, init {pid} cloned after {t_launched:?}, ready after {:?}",
            t0.elapsed()
        );
        info!("created container {id} (pid {pid})");
        Ok(pid as u32)
    }

    /// Tears down a Create that failed after the init was cloned; returns `e`.
    fn abort_create(
        &self,
        c: &Container,
        finish_join: Option<&dyn Fn() -> runtime::Result<()>>,
        e: Error,
    ) -> Error {
        let _ = c.lock().init.signal(libc::SIGKILL);
        drop(c.wait_until(REAP_WAIT, |s| s.init.exit.is_some()));
        if let Some(f) = finish_join {
            let _ = f();
        }
        let _ = cgroups::destroy(&c.plan.cgroup);
        let _ = ContainerState::remove(&c.bundle);
        // Torn down like a deleted container: poststop follows (runtime.md lifecycle).
        run_poststop(&c.id, &c.plan.hooks);
        e
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

    pub(super) fn start(&self, req: &StartRequest) -> Result<StartResponse> {
        let c = self.container(&req.id)?;
        let pid = if req.exec_id.is_empty() {
            self.start_init(&c)?
        } else {
            self.start_exec(&c, &req.exec_id)?
        };
        Ok(StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    fn start_init(&self, c: &Container) -> Result<i32> {
        let (launched, pid) = {
            let mut s = c.lock();
            if s.init.status() != Status::Created || s.init.starting {
                return Err(Error::FailedPrecondition(format!(
                    "container {} is {:?}, not created",
                    c.id,
                    s.init.status()
                )));
            }
            let launched = s.init.launched.take().ok_or_else(|| {
                Error::FailedPrecondition(format!("container {} cannot be started", c.id))
            })?;
            s.init.starting = true;
            (launched, s.init.pid)
        };
        // startContainer hooks run in the init between Start and exec.
        if let Err(e) = launched.start() {
            stop_failed_start(c);
            return Err(Error::Runtime(e));
        }
        let status = {
            let mut s = c.lock();
            s.init.starting = false;
            s.init.started = true;
            self.events.publish(
                topics::TASK_START_EVENT_TOPIC,
                Box::new(TaskStart {
                    container_id: c.id.clone(),
                    pid: pid as u32,
                    ..Default::default()
                }),
            );
            match s.init.status() {
                Status::Stopped => hooks::Status::Stopped,
                _ => hooks::Status::Running,
            }
        };
        // Without the lock: Kill and State must work while a poststart hook runs.
        if let Err(e) = hooks::poststart(&c.plan.hooks, pid, status) {
            stop_failed_start(c);
            return Err(e.into());
        }
        Ok(pid)
    }
}

/// A failed Start stops the container (runtime.md lifecycle steps 7 and 9) and returns once
/// its exit is recorded: clients delete a task only when it is stopped.
pub(super) fn stop_failed_start(c: &Container) {
    {
        let mut s = c.lock();
        s.init.starting = false;
        let _ = s.init.signal(libc::SIGKILL);
    }
    drop(c.wait_until(REAP_WAIT, |s| s.init.exit.is_some()));
}

/// Poststop failures are warnings only (runtime.md lifecycle step 13).
pub(super) fn run_poststop(id: &str, plan: &runtime::plan::HooksPlan) {
    for e in hooks::poststop(plan) {
        warn!("{id}: {e}");
    }
}
