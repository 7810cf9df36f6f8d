//! The ordered event stream to containerd: one queue, one thread, so events leave in the
//! order the service produced them (create, start, exit, delete).

use std::{
    sync::{mpsc, Mutex},
    thread::JoinHandle,
};

use containerd_shim::publisher::RemotePublisher;
use containerd_shim_protos::{
    protobuf::{well_known_types::timestamp::Timestamp, MessageDyn},
    ttrpc::context::Context,
};
use log::warn;

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

/// A topic, its event, and who to tell once containerd has it.
type Event = (&'static str, Box<dyn MessageDyn>, Option<mpsc::Sender<()>>);

pub struct EventQueue {
    tx: Mutex<Option<mpsc::Sender<Event>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

const ATTEMPTS: usize = 5;

impl EventQueue {
    /// Starts the publishing thread. It connects to containerd's ttrpc address lazily, so a
    /// slow containerd never delays the shim's own start.
    pub fn start(ttrpc_address: String, namespace: String) -> EventQueue {
        let (tx, rx) = mpsc::channel::<Event>();
        let worker = std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                let mut publisher: Option<RemotePublisher> = None;
                for (topic, event, sent) in rx {
                    let mut event = Some(event);
                    for attempt in 0..ATTEMPTS {
                        if publisher.is_none() {
                            publisher = RemotePublisher::new(&ttrpc_address).ok();
                        }
                        let Some(p) = &publisher else {
                            std::thread::sleep(std::time::Duration::from_millis(10 << attempt));
                            continue;
                        };
                        // publish() consumes the event; keep a copy for a retry.
                        let e = event.take().unwrap();
                        let copy = e.clone_box();
                        match p.publish(Context::default(), topic, &namespace, e) {
                            Ok(()) => break,
                            Err(err) => {
                                warn!("publish {topic} (attempt {}): {err}", attempt + 1);
                                publisher = None;
                                event = Some(copy);
                            }
                        }
                    }
                    if let Some(sent) = sent {
                        let _ = sent.send(());
                    }
                }
            })
            .expect("spawn events thread");
        EventQueue {
            tx: Mutex::new(Some(tx)),
            worker: Mutex::new(Some(worker)),
        }
    }

    pub fn publish(&self, topic: &'static str, event: Box<dyn MessageDyn>) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send((topic, event, None));
        }
    }

    /// Publishes in order like `publish`, and waits (bounded) until containerd has the event:
    /// for the events a client must see before the RPC that caused them returns (a client
    /// that removes the container after Delete would otherwise see /containers/delete first).
    pub fn publish_and_wait(&self, topic: &'static str, event: Box<dyn MessageDyn>) {
        let (sent_tx, sent_rx) = mpsc::channel();
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if tx.send((topic, event, Some(sent_tx))).is_ok() {
                let _ = sent_rx.recv_timeout(std::time::Duration::from_secs(2));
            }
        }
    }

    /// Stops accepting events and waits until every queued one has been sent.
    pub fn drain(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = w.join();
        }
    }
}
