//! The ordered event stream to containerd: one bounded queue and one thread, so events leave
//! in the order the service produced them (create, start, exit, delete).
//!
//! containerd may restart or stall at any time. Each forward has a deadline; a failed one is
//! retried, in order, with a growing pause, and the connection is made anew: an exit that
//! happens while containerd is down reaches it when it is back. Only an event that has
//! failed for [`GIVE_UP_AFTER`] is dropped (logged), and the queue holds at most
//! [`CAPACITY`] events (the oldest goes first), so a containerd that never returns costs
//! bounded memory and never blocks the shim.

use std::{
    collections::VecDeque,
    os::unix::net::UnixStream,
    sync::{mpsc, Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use containerd_shim_protos::{
    api::ForwardRequest,
    protobuf::{
        well_known_types::{any::Any, timestamp::Timestamp},
        CodedOutputStream, Message, MessageDyn, MessageField,
    },
    shim::event::Envelope,
    topics,
    ttrpc::{Code, Request, Response},
};
use log::{error, warn};

use crate::ttrpc::wire::{self, TYPE_REQUEST, TYPE_RESPONSE};

/// The protobuf type of each topic's event, as containerd decodes it. Written out rather
/// than asked of the message (`descriptor_dyn().full_name()`): protobuf builds the
/// reflection of the event's whole .proto file and its imports (descriptor.proto among
/// them) on first use, about 0.4 MiB of heap kept for the life of every shim.
fn event_type(topic: &str) -> Option<&'static str> {
    Some(match topic {
        topics::TASK_CREATE_EVENT_TOPIC => "containerd.events.TaskCreate",
        topics::TASK_START_EVENT_TOPIC => "containerd.events.TaskStart",
        topics::TASK_EXIT_EVENT_TOPIC => "containerd.events.TaskExit",
        topics::TASK_DELETE_EVENT_TOPIC => "containerd.events.TaskDelete",
        topics::TASK_EXEC_ADDED_EVENT_TOPIC => "containerd.events.TaskExecAdded",
        topics::TASK_EXEC_STARTED_EVENT_TOPIC => "containerd.events.TaskExecStarted",
        topics::TASK_PAUSED_EVENT_TOPIC => "containerd.events.TaskPaused",
        topics::TASK_RESUMED_EVENT_TOPIC => "containerd.events.TaskResumed",
        topics::TASK_OOM_EVENT_TOPIC => "containerd.events.TaskOOM",
        topics::TASK_CHECKPOINTED_EVENT_TOPIC => "containerd.events.TaskCheckpointed",
        _ => return None,
    })
}

/// The event's bytes. Not `write_to_vec_dyn`, which asks the message's descriptor for its
/// name (see [`event_type`] for what that costs).
fn encode(event: &dyn MessageDyn) -> containerd_shim_protos::protobuf::Result<Vec<u8>> {
    let mut value = Vec::with_capacity(event.compute_size_dyn() as usize);
    {
        let mut os = CodedOutputStream::vec(&mut value);
        event.write_to_with_cached_sizes_dyn(&mut os)?;
        os.flush()?;
    }
    Ok(value)
}

/// A protobuf timestamp from nanoseconds since the Unix epoch.
pub fn timestamp(nanos: u64) -> Timestamp {
    Timestamp {
        seconds: (nanos / 1_000_000_000) as i64,
        nanos: (nanos % 1_000_000_000) as i32,
        ..Default::default()
    }
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Events waiting for containerd; beyond this the oldest is dropped.
pub const CAPACITY: usize = 4096;
/// How long one forward may take before the connection is considered stalled.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// An event that containerd has not taken for this long is dropped.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(120);
/// The pause after a failed forward grows from the first to the last value.
const RETRY_PAUSE: (Duration, Duration) = (Duration::from_millis(20), Duration::from_secs(1));

const EVENTS_SERVICE: &str = "containerd.services.events.ttrpc.v1.Events";

struct Item {
    topic: &'static str,
    /// The encoded ForwardRequest; its envelope is stamped when the event was produced.
    request: Vec<u8>,
    produced: Instant,
    /// Told once containerd has the event (or it was dropped).
    sent: Option<mpsc::Sender<()>>,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    closed: bool,
    /// The worker has returned.
    finished: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    changed: Condvar,
}

pub struct EventQueue {
    shared: Arc<Shared>,
    namespace: String,
}

impl EventQueue {
    /// Starts the publishing thread. It connects to containerd's ttrpc address lazily, so a
    /// slow containerd never delays the shim's own start.
    pub fn start(ttrpc_address: String, namespace: String) -> std::io::Result<EventQueue> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
        });
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                Forwarder::new(&ttrpc_address).run(&worker);
                worker.lock().finished = true;
                worker.changed.notify_all();
            })?;
        Ok(EventQueue { shared, namespace })
    }

    fn envelope(&self, topic: &str, event: &dyn MessageDyn) -> Option<Vec<u8>> {
        let value = match encode(event) {
            Ok(v) => v,
            Err(e) => {
                error!("encode {topic}: {e}");
                return None;
            }
        };
        let request = ForwardRequest {
            envelope: MessageField::some(Envelope {
                timestamp: MessageField::some(timestamp(now_nanos())),
                namespace: self.namespace.clone(),
                topic: topic.to_owned(),
                event: MessageField::some(Any {
                    type_url: event_type(topic).map_or_else(
                        || event.descriptor_dyn().full_name().to_owned(),
                        str::to_owned,
                    ),
                    value,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        request.write_to_bytes().ok()
    }

    fn push(
        &self,
        topic: &'static str,
        event: Box<dyn MessageDyn>,
        sent: Option<mpsc::Sender<()>>,
    ) {
        let Some(request) = self.envelope(topic, &*event) else {
            return;
        };
        let mut q = self.shared.lock();
        if q.closed {
            warn!("event {topic} after shutdown: not sent");
            return;
        }
        if q.items.len() >= CAPACITY {
            if let Some(old) = q.items.pop_front() {
                error!(
                    "event queue full ({CAPACITY}): dropped {} produced {:?} ago",
                    old.topic,
                    old.produced.elapsed()
                );
            }
        }
        q.items.push_back(Item {
            topic,
            request,
            produced: Instant::now(),
            sent,
        });
        self.shared.changed.notify_all();
    }

    /// Queues an event; never blocks.
    pub fn publish(&self, topic: &'static str, event: Box<dyn MessageDyn>) {
        self.push(topic, event, None)
    }

    /// Publishes in order like `publish`, and waits (bounded) until containerd has the event:
    /// for the events a client must see before the RPC that caused them returns (a client
    /// that removes the container after Delete would otherwise see /containers/delete first).
    pub fn publish_and_wait(&self, topic: &'static str, event: Box<dyn MessageDyn>) {
        let (tx, rx) = mpsc::channel();
        self.push(topic, event, Some(tx));
        let _ = rx.recv_timeout(Duration::from_secs(2));
    }

    /// Stops accepting events and waits, at most `deadline`, until every queued one is sent.
    pub fn drain(&self, deadline: Duration) {
        let until = Instant::now() + deadline;
        let mut q = self.shared.lock();
        q.closed = true;
        self.shared.changed.notify_all();
        while !q.finished {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                warn!("{} events not delivered at shutdown", q.items.len());
                return;
            }
            q = self
                .shared
                .changed
                .wait_timeout(q, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The worker's side: a ttrpc client of containerd's Events service.
struct Forwarder {
    path: String,
    conn: Option<UnixStream>,
    next_stream: u32,
}

impl Forwarder {
    fn new(address: &str) -> Forwarder {
        Forwarder {
            path: address.trim_start_matches("unix://").to_owned(),
            conn: None,
            next_stream: 1,
        }
    }

    /// Sends the queue's head until it is taken, then the next; returns once the queue is
    /// closed and empty.
    fn run(&mut self, shared: &Shared) {
        let mut pause = RETRY_PAUSE.0;
        loop {
            let (topic, request, produced) = {
                let mut q = shared.lock();
                loop {
                    if let Some(head) = q.items.front() {
                        break (head.topic, head.request.clone(), head.produced);
                    }
                    if q.closed {
                        return;
                    }
                    q = shared.changed.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            };
            let result = self.forward(&request);
            let delivered = match &result {
                Ok(()) => true,
                Err(e) if produced.elapsed() >= GIVE_UP_AFTER => {
                    error!("event {topic} dropped after {GIVE_UP_AFTER:?}: {e}");
                    true
                }
                Err(e) => {
                    warn!("forward {topic}: {e}; retrying in {pause:?}");
                    false
                }
            };
            if delivered {
                pause = RETRY_PAUSE.0;
                let head = shared.lock().items.pop_front();
                if let Some(sent) = head.and_then(|h| h.sent) {
                    let _ = sent.send(());
                }
                continue;
            }
            self.conn = None;
            let q = shared.lock();
            // A closed queue still gets its retries, within drain's deadline.
            let _ = shared.changed.wait_timeout(q, pause);
            pause = (pause * 2).min(RETRY_PAUSE.1);
        }
    }

    fn connect(&mut self) -> std::io::Result<&mut UnixStream> {
        if self.conn.is_none() {
            let s = UnixStream::connect(&self.path)?;
            s.set_read_timeout(Some(FORWARD_TIMEOUT))?;
            s.set_write_timeout(Some(FORWARD_TIMEOUT))?;
            self.conn = Some(s);
        }
        Ok(self.conn.as_mut().expect("connected"))
    }

    /// One Events.Forward call; an error leaves the connection to be made anew.
    fn forward(&mut self, payload: &[u8]) -> Result<(), String> {
        let stream_id = self.next_stream;
        // Client streams are odd.
        self.next_stream = self.next_stream.wrapping_add(2) | 1;
        let request = Request {
            service: EVENTS_SERVICE.into(),
            method: "Forward".into(),
            payload: payload.to_vec(),
            timeout_nano: FORWARD_TIMEOUT.as_nanos() as i64,
            ..Default::default()
        };
        let body = request.write_to_bytes().map_err(|e| e.to_string())?;
        let path = self.path.clone();
        let conn = self.connect().map_err(|e| format!("connect {path}: {e}"))?;
        wire::write_frame(conn, stream_id, TYPE_REQUEST, &body)
            .map_err(|e| format!("send: {e}"))?;
        loop {
            let (header, body) = wire::read_frame(conn).map_err(|e| format!("receive: {e}"))?;
            if header.kind != TYPE_RESPONSE || header.stream_id != stream_id {
                continue; // not ours (a late answer to a timed-out call)
            }
            let response = Response::parse_from_bytes(&body).map_err(|e| e.to_string())?;
            let status = response.status.as_ref();
            return match status.map(|s| s.code.enum_value_or_default()) {
                None | Some(Code::OK) => Ok(()),
                Some(code) => Err(format!(
                    "containerd answered {code:?}: {}",
                    status.map(|s| s.message.as_str()).unwrap_or_default()
                )),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::{events::task::*, protobuf::MessageFull};

    #[test]
    fn every_topic_names_the_type_of_its_event() {
        let pairs = [
            (topics::TASK_CREATE_EVENT_TOPIC, TaskCreate::descriptor()),
            (topics::TASK_START_EVENT_TOPIC, TaskStart::descriptor()),
            (topics::TASK_EXIT_EVENT_TOPIC, TaskExit::descriptor()),
            (topics::TASK_DELETE_EVENT_TOPIC, TaskDelete::descriptor()),
            (
                topics::TASK_EXEC_ADDED_EVENT_TOPIC,
                TaskExecAdded::descriptor(),
            ),
            (
                topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                TaskExecStarted::descriptor(),
            ),
            (topics::TASK_PAUSED_EVENT_TOPIC, TaskPaused::descriptor()),
            (topics::TASK_RESUMED_EVENT_TOPIC, TaskResumed::descriptor()),
            (topics::TASK_OOM_EVENT_TOPIC, TaskOOM::descriptor()),
            (
                topics::TASK_CHECKPOINTED_EVENT_TOPIC,
                TaskCheckpointed::descriptor(),
            ),
        ];
        for (topic, descriptor) in pairs {
            assert_eq!(event_type(topic), Some(descriptor.full_name()), "{topic}");
        }
        assert_eq!(event_type("/tasks/unknown"), None);
    }
}
