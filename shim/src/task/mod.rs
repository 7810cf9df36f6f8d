//! The Task service: containerd's RPCs as calls on container handles and the runtime
//! library, split by concern — [`create`] (Create, the init's Start), [`exec`], [`control`]
//! (State, Kill, Pause, Update, Stats, ...), [`delete`] (Delete, Shutdown), [`exits`] (what
//! happens when a process ends) — with the ordering rules in [`lifecycle`].
//!
//! How each RPC runs is decided here ([`Service::dispatch`]): ones that cannot block run on
//! the reactor at once, ones that can on the worker pool, and Wait is answered when the
//! exit goes out, holding no thread meanwhile.

pub mod control;
pub mod create;
pub mod delete;
pub mod exec;
pub mod exits;
pub mod lifecycle;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use containerd_shim_protos::{
    api,
    protobuf::Message,
    ttrpc::{Code, Status},
};
use log::{debug, error};
use runtime::launch::Zygote;

use self::lifecycle::Container;
use crate::{
    bootstrap::{TASK_V2, TASK_V3},
    error::{Error, Result},
    events::EventQueue,
    oom::OomWatcher,
    pool::Pool,
    reactor::{Handle, Reactor},
    ttrpc::server::{status, Reply, Responder},
};

/// Where a container id stands in this daemon.
enum Slot {
    /// Create is under way: the id is taken; the container (once planned) is here for its
    /// init's exit, not yet for containerd's RPCs.
    Creating(Option<Arc<Container>>),
    Ready(Arc<Container>),
}

#[derive(Default)]
struct Registry {
    containers: HashMap<String, Slot>,
    /// Which container (and exec, "" for the init) a live pid belongs to.
    pids: HashMap<i32, (String, String)>,
    /// Exits reported before their pid was registered (see `exits`).
    unclaimed: HashMap<i32, runtime::launch::Exit>,
    /// Set once the daemon decided to exit: a Create that reaches a worker after that
    /// decision is refused rather than half-made in a process about to end.
    closing: bool,
}

pub struct Service {
    namespace: String,
    zygote: Zygote,
    events: Arc<EventQueue>,
    pool: Pool,
    reactor: Handle,
    registry: Mutex<Registry>,
    /// None if its descriptors could not be created (logged): no OOM events then.
    oom: Option<OomWatcher>,
}

impl Service {
    pub fn new(
        namespace: String,
        zygote: Zygote,
        events: Arc<EventQueue>,
        reactor: Handle,
        oom: Option<OomWatcher>,
    ) -> Service {
        Service {
            namespace,
            zygote,
            events,
            pool: Pool::default(),
            reactor,
            registry: Mutex::new(Registry::default()),
            oom,
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn container(&self, id: &str) -> Result<Arc<Container>> {
        match self.registry().containers.get(id) {
            Some(Slot::Ready(c)) => Ok(c.clone()),
            _ => Err(Error::NotFound(format!("container {id} does not exist"))),
        }
    }

    /// True (and from then on every Create refused) when the daemon owns no container and
    /// none is being created, so it may exit; decided under the lock Create reserves under.
    pub fn close_if_idle(&self) -> bool {
        let mut reg = self.registry();
        if reg.containers.is_empty() {
            reg.closing = true;
        }
        reg.closing
    }

    /// Runs one RPC: `method` is "/service/method", `payload` its encoded request.
    pub fn dispatch(
        self: &Arc<Self>,
        r: &mut Reactor,
        method: &str,
        payload: Vec<u8>,
        resp: Responder,
    ) {
        let name = method
            .strip_prefix('/')
            .and_then(|m| m.split_once('/'))
            .filter(|(service, _)| *service == TASK_V2 || *service == TASK_V3)
            .map(|(_, name)| name);
        let Some(name) = name else {
            return resp.reply(Err(status(
                Code::UNIMPLEMENTED,
                format!("{method}: no such service in io.containerd.rs.v1"),
            )));
        };
        // On the reactor: must not block.
        macro_rules! now {
            ($req:ty, $f:ident) => {
                resp.reply(run::<$req, _, _>(stringify!($f), &payload, |req| {
                    self.$f(req)
                }))
            };
        }
        // On a worker: may block.
        macro_rules! pooled {
            ($req:ty, $f:ident) => {{
                let svc = self.clone();
                self.pool.spawn(move || {
                    resp.reply(run::<$req, _, _>(stringify!($f), &payload, |req| {
                        svc.$f(req)
                    }))
                })
            }};
        }
        match name {
            "State" => now!(api::StateRequest, state),
            "Kill" => now!(api::KillRequest, kill),
            "Pids" => now!(api::PidsRequest, pids),
            "Connect" => now!(api::ConnectRequest, connect),
            "ResizePty" => now!(api::ResizePtyRequest, resize_pty),
            "CloseIO" => now!(api::CloseIORequest, close_io),
            "Exec" => now!(api::ExecProcessRequest, exec),
            "Shutdown" => match decode::<api::ShutdownRequest>(&payload) {
                Ok(req) => {
                    let stop = self.shutdown(&req);
                    resp.reply(Ok(api::Empty::default()
                        .write_to_bytes()
                        .unwrap_or_default()));
                    if stop {
                        // Posted after the answer, so the answer is written first.
                        r.handle().post(|r| r.stop());
                    }
                }
                Err(s) => resp.reply(Err(s)),
            },
            "Wait" => match decode::<api::WaitRequest>(&payload) {
                Ok(req) => self.wait(req, resp),
                Err(s) => resp.reply(Err(s)),
            },
            "Create" => pooled!(api::CreateTaskRequest, create),
            "Start" => pooled!(api::StartRequest, start),
            "Delete" => pooled!(api::DeleteRequest, delete),
            "Pause" => pooled!(api::PauseRequest, pause),
            "Resume" => pooled!(api::ResumeRequest, resume),
            "Update" => pooled!(api::UpdateTaskRequest, update),
            "Stats" => pooled!(api::StatsRequest, stats),
            other => resp.reply(Err(status(
                Code::UNIMPLEMENTED,
                format!("{other} is not implemented by io.containerd.rs.v1"),
            ))),
        }
    }

    /// Wait: answered once the process's exit is out.
    fn wait(&self, req: api::WaitRequest, resp: Responder) {
        let c = match self.container(&req.id) {
            Ok(c) => c,
            Err(e) => return resp.reply(Err(to_status("wait", &req.id, e))),
        };
        let mut s = c.lock();
        if s.proc(&req.exec_id).is_none() {
            drop(s);
            let e = Error::NotFound(format!(
                "exec {} of container {} does not exist",
                req.exec_id, req.id
            ));
            return resp.reply(Err(to_status("wait", &req.id, e)));
        }
        s.add_waiter(&req.exec_id, resp);
    }
}

fn decode<T: Message>(payload: &[u8]) -> std::result::Result<T, Status> {
    T::parse_from_bytes(payload)
        .map_err(|e| status(Code::INVALID_ARGUMENT, format!("malformed request: {e}")))
}

/// Something with the container id a request is about, for the log.
pub trait Named {
    fn id(&self) -> &str;
}

macro_rules! named {
    ($($t:ty),*) => {$(impl Named for $t { fn id(&self) -> &str { &self.id } })*};
}
named!(
    api::StateRequest,
    api::KillRequest,
    api::PidsRequest,
    api::ConnectRequest,
    api::ResizePtyRequest,
    api::CloseIORequest,
    api::ExecProcessRequest,
    api::ShutdownRequest,
    api::CreateTaskRequest,
    api::StartRequest,
    api::DeleteRequest,
    api::PauseRequest,
    api::ResumeRequest,
    api::UpdateTaskRequest,
    api::StatsRequest
);

/// Decodes, runs and encodes one RPC, logging a failure into containerd's log.
fn run<Req: Message + Named, Resp: Message, F: FnOnce(&Req) -> Result<Resp>>(
    rpc: &str,
    payload: &[u8],
    f: F,
) -> Reply {
    let req = decode::<Req>(payload)?;
    match f(&req) {
        Ok(resp) => resp
            .write_to_bytes()
            .map_err(|e| status(Code::INTERNAL, format!("encode the response: {e}"))),
        Err(e) => Err(to_status(rpc, req.id(), e)),
    }
}

fn to_status(rpc: &str, id: &str, e: Error) -> Status {
    match &e {
        Error::NotFound(_) => debug!("{rpc} {id}: {e}"),
        _ => error!("{rpc} {id}: {e}"),
    }
    let code = e.code();
    status(code, e.to_string())
}
