//! The ttrpc server containerd calls, on the reactor: accepts connections, reads requests
//! and hands each to the dispatcher with a [`Responder`]. Nothing here blocks and no thread
//! belongs to a request: a Wait that lasts hours costs a small struct, not a worker, and
//! an answer can come from any thread.

use std::{
    collections::HashMap,
    io::{self, Read, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::net::{UnixListener, UnixStream},
    },
    sync::{Arc, Mutex},
};

use containerd_shim_protos::{
    protobuf::{Message, MessageField},
    ttrpc::{Code, Request, Response, Status},
};
use log::{debug, warn};

use super::wire::{self, Header, HEADER_LEN, MAX_BODY, TYPE_REQUEST, TYPE_RESPONSE};
use crate::reactor::{Handle, Reactor, Ready, Token};

/// What a method returns: its encoded response message, or a status.
pub type Reply = Result<Vec<u8>, Status>;

pub fn status(code: Code, message: impl Into<String>) -> Status {
    Status {
        code: code.into(),
        message: message.into(),
        ..Default::default()
    }
}

/// Answers one request, once, from any thread. Dropped unanswered (a request whose
/// connection is gone, or a Wait whose process outlives the daemon), it answers nothing.
pub struct Responder {
    handle: Handle,
    conns: Connections,
    conn: u64,
    stream_id: u32,
}

impl Responder {
    pub fn reply(self, reply: Reply) {
        let mut response = Response::default();
        match reply {
            Ok(payload) => response.payload = payload,
            Err(s) => response.status = MessageField::some(s),
        }
        let body = match response.write_to_bytes() {
            Ok(b) => b,
            Err(e) => {
                warn!("encode a ttrpc response: {e}");
                return;
            }
        };
        let frame = wire::frame(self.stream_id, TYPE_RESPONSE, &body);
        let (conns, conn) = (self.conns, self.conn);
        self.handle.post(move |r| conns.send(r, conn, frame));
    }
}

/// Decides how each request runs: inline on the loop (it must not block), on the worker
/// pool, or later (keep the Responder). `method` is "/service/method".
pub type Dispatch = Arc<dyn Fn(&mut Reactor, &str, Vec<u8>, Responder) + Send + Sync>;

struct Conn {
    stream: UnixStream,
    token: Token,
    input: Vec<u8>,
    output: Vec<u8>,
}

#[derive(Clone, Default)]
struct Connections(Arc<Mutex<HashMap<u64, Conn>>>);

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Conn>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `frame` for connection `id` and writes what the socket takes now.
    fn send(&self, r: &mut Reactor, id: u64, frame: Vec<u8>) {
        let mut conns = self.lock();
        let Some(c) = conns.get_mut(&id) else {
            return; // the client is gone
        };
        c.output.extend_from_slice(&frame);
        match flush(c) {
            Ok(()) => r.modify(c.token, true, !c.output.is_empty()),
            Err(e) => {
                debug!("ttrpc connection {id}: write: {e}");
                let c = conns.remove(&id).expect("present");
                r.remove(c.token);
            }
        }
    }
}

fn flush(c: &mut Conn) -> io::Result<()> {
    while !c.output.is_empty() {
        match c.stream.write(&c.output) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => drop(c.output.drain(..n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Serves `listener` on the reactor until the reactor stops.
pub fn serve(r: &mut Reactor, listener: UnixListener, dispatch: Dispatch) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let conns = Connections::default();
    let mut next_id = 0u64;
    let fd = listener.as_raw_fd();
    r.add(fd, false, move |r, _| loop {
        // SAFETY: accept4 on our listening socket; a new descriptor is ours.
        let raw = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            )
        };
        if raw < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::Interrupted {
                warn!("ttrpc accept: {e}");
            }
            return;
        }
        // SAFETY: accept4 returned a new descriptor nothing else owns.
        let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(raw) });
        next_id += 1;
        let id = next_id;
        let (conns2, dispatch) = (conns.clone(), dispatch.clone());
        match r.add(raw, false, move |r, ready| {
            on_ready(r, &conns2, id, ready, &dispatch)
        }) {
            Ok(token) => {
                conns.lock().insert(
                    id,
                    Conn {
                        stream,
                        token,
                        input: Vec::new(),
                        output: Vec::new(),
                    },
                );
            }
            Err(e) => warn!("ttrpc: watch a connection: {e}"),
        }
    })?;
    Ok(())
}

fn close(r: &mut Reactor, conns: &Connections, id: u64) {
    if let Some(c) = conns.lock().remove(&id) {
        r.remove(c.token);
    }
}

fn on_ready(r: &mut Reactor, conns: &Connections, id: u64, ready: Ready, dispatch: &Dispatch) {
    let mut requests = Vec::new();
    {
        let mut map = conns.lock();
        let Some(c) = map.get_mut(&id) else {
            return;
        };
        if ready.writable {
            if let Err(e) = flush(c) {
                debug!("ttrpc connection {id}: write: {e}");
                drop(map);
                return close(r, conns, id);
            }
            let token = c.token;
            let pending = !c.output.is_empty();
            r.modify(token, true, pending);
        }
        let mut eof = false;
        if ready.readable || ready.closed {
            let mut buf = [0u8; 16 << 10];
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => c.input.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        eof = true;
                        break;
                    }
                }
            }
        }
        match take_frames(&mut c.input) {
            Ok(frames) => requests = frames,
            Err(e) => {
                warn!("ttrpc connection {id}: {e}: closing it");
                eof = true;
            }
        }
        if eof {
            drop(map);
            close(r, conns, id);
            // Requests read before the EOF are still answered where possible: no.
            return;
        }
    }
    for (header, body) in requests {
        if header.kind != TYPE_REQUEST {
            continue;
        }
        let responder = Responder {
            handle: r.handle(),
            conns: conns.clone(),
            conn: id,
            stream_id: header.stream_id,
        };
        match Request::parse_from_bytes(&body) {
            Ok(req) => {
                let method = format!("/{}/{}", req.service, req.method);
                dispatch(r, &method, req.payload, responder);
            }
            Err(e) => responder.reply(Err(status(
                Code::INVALID_ARGUMENT,
                format!("malformed ttrpc request: {e}"),
            ))),
        }
    }
}

/// Splits whole frames off the front of `input`.
pub fn take_frames(input: &mut Vec<u8>) -> Result<Vec<(Header, Vec<u8>)>, String> {
    let mut frames = Vec::new();
    let mut at = 0;
    while input.len() - at >= HEADER_LEN {
        let header = Header::parse(input[at..at + HEADER_LEN].try_into().expect("10 bytes"));
        let len = header.length as usize;
        if len > MAX_BODY {
            return Err(format!("a message of {len} bytes (at most {MAX_BODY})"));
        }
        if input.len() - at - HEADER_LEN < len {
            break;
        }
        let body = input[at + HEADER_LEN..at + HEADER_LEN + len].to_vec();
        frames.push((header, body));
        at += HEADER_LEN + len;
    }
    input.drain(..at);
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_split_whole_and_partial_ones_kept() {
        let mut input = wire::frame(1, TYPE_REQUEST, b"abc");
        input.extend(wire::frame(3, TYPE_REQUEST, b""));
        let second = wire::frame(5, TYPE_REQUEST, b"defg");
        input.extend_from_slice(&second[..12]);
        let frames = take_frames(&mut input).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!((frames[0].0.stream_id, &frames[0].1[..]), (1, &b"abc"[..]));
        assert_eq!((frames[1].0.stream_id, frames[1].1.len()), (3, 0));
        assert_eq!(input, second[..12]);
    }

    #[test]
    fn a_request_is_dispatched_and_answered_from_another_thread() {
        let mut r = Reactor::new().unwrap();
        let dir = std::env::temp_dir().join(format!("shim-rs-ttrpc-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let listener = UnixListener::bind(&dir).unwrap();
        let dispatch: Dispatch = Arc::new(|r: &mut Reactor, method: &str, payload, responder| {
            assert_eq!(method, "/svc/Echo");
            let stop = r.handle();
            std::thread::spawn(move || {
                responder.reply(Ok(payload));
                stop.post(|r| r.stop());
            });
        });
        serve(&mut r, listener, dispatch).unwrap();
        let path = dir.clone();
        let client = std::thread::spawn(move || {
            let mut s = UnixStream::connect(&path).unwrap();
            let req = Request {
                service: "svc".into(),
                method: "Echo".into(),
                payload: b"hi".to_vec(),
                ..Default::default()
            };
            wire::write_frame(&mut s, 7, TYPE_REQUEST, &req.write_to_bytes().unwrap()).unwrap();
            let (h, body) = wire::read_frame(&mut s).unwrap();
            (
                h.stream_id,
                Response::parse_from_bytes(&body).unwrap().payload,
            )
        });
        r.run();
        let _ = std::fs::remove_file(&dir);
        assert_eq!(client.join().unwrap(), (7, b"hi".to_vec()));
    }
}
