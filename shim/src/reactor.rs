//! The daemon's event loop: one thread that waits (epoll) on every descriptor the shim
//! watches — containerd's connections, the launcher's exit channel, OOM notifications, the
//! stdio copies — and on timers, and runs the handler registered for each. Handlers must not
//! block: anything that can wait (a container's setup, hooks, a freeze) runs on the worker
//! pool ([`crate::pool`]) and comes back with [`Handle::post`].
//!
//! One thread for all of it is what keeps an idle shim small (containerd's Go shim has a
//! goroutine per stream; a thread each would cost a stack and a task per copy here).

use std::{
    collections::{BTreeMap, HashMap},
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// What the loop reports to a descriptor's handler.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    pub readable: bool,
    pub writable: bool,
    /// Hang-up or error: the peer is gone (reads may still return what is buffered).
    pub closed: bool,
}

pub type Token = u64;

type FdHandler = Box<dyn FnMut(&mut Reactor, Ready) + Send>;
type Task = Box<dyn FnOnce(&mut Reactor) + Send>;

/// Work handed to the loop from other threads.
#[derive(Default)]
struct Inbox {
    tasks: Vec<Task>,
}

/// A cheap, clonable way for other threads to reach the loop.
#[derive(Clone)]
pub struct Handle {
    inbox: Arc<Mutex<Inbox>>,
    wake: Arc<OwnedFd>,
}

impl Handle {
    /// Runs `f` on the loop thread, soon.
    pub fn post(&self, f: impl FnOnce(&mut Reactor) + Send + 'static) {
        self.inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tasks
            .push(Box::new(f));
        let one = 1u64;
        // SAFETY: an 8-byte write to our eventfd; EAGAIN (counter full) still wakes the loop.
        unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

pub struct Reactor {
    epoll: OwnedFd,
    handle: Handle,
    handlers: HashMap<Token, (RawFd, Option<FdHandler>)>,
    next_token: Token,
    /// Deadline-ordered timers; the sequence number keeps equal deadlines apart.
    timers: BTreeMap<(Instant, u64), Task>,
    timer_seq: u64,
    stop: bool,
}

const WAKE_TOKEN: Token = 0;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Reactor {
    pub fn new() -> io::Result<Reactor> {
        // SAFETY: plain syscalls returning new descriptors we take ownership of.
        let epoll = unsafe { OwnedFd::from_raw_fd(cvt(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) };
        let wake = unsafe {
            OwnedFd::from_raw_fd(cvt(libc::eventfd(
                0,
                libc::EFD_CLOEXEC | libc::EFD_NONBLOCK,
            ))?)
        };
        let r = Reactor {
            epoll,
            handle: Handle {
                inbox: Arc::default(),
                wake: Arc::new(wake),
            },
            handlers: HashMap::new(),
            next_token: WAKE_TOKEN + 1,
            timers: BTreeMap::new(),
            timer_seq: 0,
            stop: false,
        };
        let wake_fd = r.handle.wake.as_raw_fd();
        r.ctl(
            libc::EPOLL_CTL_ADD,
            wake_fd,
            WAKE_TOKEN,
            libc::EPOLLIN as u32,
        )?;
        Ok(r)
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: Token, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: valid epoll and target descriptors, a valid event.
        cvt(unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) }).map(drop)
    }

    /// Watches `fd` (which the caller keeps open until [`Reactor::remove`]) for reading, and
    /// for writing too with `writable`; `handler` runs on every readiness (level-triggered).
    pub fn add(
        &mut self,
        fd: RawFd,
        writable: bool,
        handler: impl FnMut(&mut Reactor, Ready) + Send + 'static,
    ) -> io::Result<Token> {
        let token = self.next_token;
        self.next_token += 1;
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest(true, writable))?;
        self.handlers.insert(token, (fd, Some(Box::new(handler))));
        Ok(token)
    }

    /// Changes what `token`'s descriptor is watched for.
    pub fn modify(&mut self, token: Token, readable: bool, writable: bool) {
        if let Some((fd, _)) = self.handlers.get(&token) {
            let _ = self.ctl(
                libc::EPOLL_CTL_MOD,
                *fd,
                token,
                interest(readable, writable),
            );
        }
    }

    /// Stops watching `fd` (by descriptor, for a handler that does not know its token).
    pub fn remove_fd(&mut self, fd: RawFd) {
        let token = self
            .handlers
            .iter()
            .find_map(|(t, (f, _))| (*f == fd).then_some(*t));
        if let Some(t) = token {
            self.remove(t);
        }
    }

    /// Stops watching; the descriptor may be closed afterwards.
    pub fn remove(&mut self, token: Token) {
        if let Some((fd, _)) = self.handlers.remove(&token) {
            let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, token, 0);
        }
    }

    /// Runs `f` on the loop after `delay`.
    pub fn after(&mut self, delay: Duration, f: impl FnOnce(&mut Reactor) + Send + 'static) {
        self.timer_seq += 1;
        self.timers
            .insert((Instant::now() + delay, self.timer_seq), Box::new(f));
    }

    /// Makes [`Reactor::run`] return after the current round.
    pub fn stop(&mut self) {
        self.stop = true;
    }

    /// Runs until [`Reactor::stop`].
    pub fn run(&mut self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
        while !self.stop {
            let timeout = self.timers.keys().next().map_or(-1, |(at, _)| {
                let left = at.saturating_duration_since(Instant::now());
                // Round up, so a timer is never polled for a millisecond early in a loop.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            });
            // SAFETY: a valid epoll descriptor and a buffer of the length we pass.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    timeout,
                )
            };
            let n = if n < 0 { 0 } else { n as usize }; // EINTR
            for ev in &events[..n] {
                let token = ev.u64;
                if token == WAKE_TOKEN {
                    self.drain_inbox();
                    continue;
                }
                let ready = Ready {
                    readable: ev.events & libc::EPOLLIN as u32 != 0,
                    writable: ev.events & libc::EPOLLOUT as u32 != 0,
                    closed: ev.events & (libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0,
                };
                // Taken out while it runs, so it may add or remove handlers (itself too).
                let Some(mut handler) = self.handlers.get_mut(&token).and_then(|h| h.1.take())
                else {
                    continue;
                };
                handler(self, ready);
                if let Some(slot) = self.handlers.get_mut(&token) {
                    slot.1.get_or_insert(handler);
                }
            }
            self.run_due_timers();
        }
    }

    fn drain_inbox(&mut self) {
        let mut count = 0u64;
        // SAFETY: an 8-byte read from our non-blocking eventfd.
        unsafe {
            libc::read(
                self.handle.wake.as_raw_fd(),
                (&mut count as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        let tasks = std::mem::take(
            &mut self
                .handle
                .inbox
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .tasks,
        );
        for t in tasks {
            t(self);
        }
    }

    fn run_due_timers(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let f = entry.remove();
            f(self);
        }
    }
}

fn interest(readable: bool, writable: bool) -> u32 {
    let mut e = 0;
    if readable {
        e |= libc::EPOLLIN as u32;
    }
    if writable {
        e |= libc::EPOLLOUT as u32;
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn timers_fire_in_order_and_posts_reach_the_loop() {
        let mut r = Reactor::new().unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        // Stops once the last timer and the post from another thread have both run.
        let pending = Arc::new(AtomicUsize::new(2));
        let done = |r: &mut Reactor, pending: &AtomicUsize| {
            if pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                r.stop();
            }
        };
        for (ms, tag) in [(30, "c"), (10, "a"), (20, "b")] {
            let (o, p) = (order.clone(), pending.clone());
            r.after(Duration::from_millis(ms), move |r| {
                o.lock().unwrap().push(tag);
                if tag == "c" {
                    done(r, &p);
                }
            });
        }
        let handle = r.handle();
        let p = pending.clone();
        std::thread::spawn(move || handle.post(move |r| done(r, &p)));
        r.run();
        assert_eq!(*order.lock().unwrap(), ["a", "b", "c"]);
        assert_eq!(pending.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_readable_descriptor_runs_its_handler_until_removed() {
        let mut r = Reactor::new().unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::io::{Read, Write};
        (&b).write_all(b"xy").unwrap();
        let a = a;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let fd = a.as_raw_fd();
        a.set_nonblocking(true).unwrap();
        let mut reader = a.try_clone().unwrap();
        r.add(fd, false, move |r, ready| {
            assert!(ready.readable);
            let mut buf = [0u8; 1];
            if reader.read(&mut buf).unwrap() == 1 {
                s.lock().unwrap().push(buf[0]);
            }
            if s.lock().unwrap().len() == 2 {
                r.stop();
            }
        })
        .unwrap();
        r.run();
        assert_eq!(*seen.lock().unwrap(), b"xy");
        drop(a);
    }
}
