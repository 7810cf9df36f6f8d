//! OOM events: the daemon's event loop watches (through one epoll descriptor of its own,
//! nested in the loop's) every container's OOM notification and publishes `/tasks/oom`.
//! cgroup v1: an eventfd registered on memory.oom_control through cgroup.event_control.
//! cgroup v2: inotify on memory.events, whose `oom_kill` counter grows.
//!
//! The exit path calls [`OomWatcher::check`] before it publishes an init's TaskExit: the kernel
//! signals the OOM before the victim dies, so a pending notification is published first and
//! containerd sees /tasks/oom before /tasks/exit.

use std::{
    collections::HashMap,
    fs,
    io::{self, Write},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use containerd_shim_protos::{events::task::TaskOOM, topics};
use log::{debug, error, warn};
use runtime::cgroups::{live, CgroupPlan, Layout};

use crate::{events::EventQueue, reactor::Reactor};

/// epoll token of the shared inotify descriptor; containers get tokens from 1 up.
const INOTIFY_TOKEN: u64 = 0;

enum Source {
    /// The eventfd (v1) the kernel signals on OOM; the oom_control fd only keeps it registered.
    EventFd { efd: OwnedFd, _control: OwnedFd },
    /// memory.events (v2) and the oom_kill count already published.
    Events {
        file: PathBuf,
        wd: i32,
        seen: Mutex<u64>,
    },
}

struct Entry {
    id: String,
    token: u64,
    source: Source,
    /// Serialises the watcher thread and the exit path so one OOM is published once.
    lock: Mutex<()>,
}

struct Inner {
    epoll: OwnedFd,
    inotify: OwnedFd,
    events: Arc<EventQueue>,
    entries: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next_token: u64,
    by_token: HashMap<u64, Arc<Entry>>,
    by_id: HashMap<String, Arc<Entry>>,
    by_wd: HashMap<i32, Arc<Entry>>,
}

#[derive(Clone)]
pub struct OomWatcher(Arc<Inner>);

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    cvt(fd).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
}

fn epoll_add(epoll: RawFd, fd: RawFd, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: valid descriptors and a valid event pointer.
    cvt(unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(drop)
}

fn oom_kill_count(file: &Path) -> u64 {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
        .unwrap_or(0)
}

impl Entry {
    /// Publishes the OOM if one is pending. Never blocks.
    fn check(&self, events: &EventQueue) {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let oom = match &self.source {
            Source::EventFd { efd, .. } => {
                let mut count = 0u64;
                // SAFETY: reading 8 bytes into a u64 from a non-blocking eventfd.
                let n = unsafe {
                    libc::read(
                        efd.as_raw_fd(),
                        (&mut count as *mut u64).cast(),
                        std::mem::size_of::<u64>(),
                    )
                };
                n == 8 && count > 0
            }
            Source::Events { file, seen, .. } => {
                let now = oom_kill_count(file);
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                let grew = now > *seen;
                *seen = now.max(*seen);
                grew
            }
        };
        if oom {
            debug!("container {}: OOM", self.id);
            events.publish(
                topics::TASK_OOM_EVENT_TOPIC,
                Box::new(TaskOOM {
                    container_id: self.id.clone(),
                    ..Default::default()
                }),
            );
        }
    }
}

impl OomWatcher {
    /// Creates the epoll and inotify descriptors and hands the epoll descriptor to the
    /// daemon's event loop, which runs the watcher whenever a notification is ready: no
    /// thread of its own.
    pub fn start(events: Arc<EventQueue>, reactor: &mut Reactor) -> io::Result<OomWatcher> {
        // SAFETY: plain syscalls creating new descriptors.
        let epoll = owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        let inotify = owned(unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) })?;
        epoll_add(epoll.as_raw_fd(), inotify.as_raw_fd(), INOTIFY_TOKEN)?;
        let w = OomWatcher(Arc::new(Inner {
            epoll,
            inotify,
            events,
            entries: Mutex::new(Table {
                next_token: INOTIFY_TOKEN + 1,
                ..Default::default()
            }),
        }));
        let on_ready = w.clone();
        reactor.add(w.0.epoll.as_raw_fd(), false, move |_, _| {
            on_ready.dispatch_ready()
        })?;
        Ok(w)
    }

    /// Publishes what the ready notifications report; never blocks.
    fn dispatch_ready(&self) {
        let mut ready = [libc::epoll_event { events: 0, u64: 0 }; 16];
        // SAFETY: the buffer is valid for `ready.len()` events.
        let n = unsafe {
            libc::epoll_wait(
                self.0.epoll.as_raw_fd(),
                ready.as_mut_ptr(),
                ready.len() as i32,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                error!("oom watcher: epoll_wait: {e}");
            }
            return;
        }
        for ev in &ready[..n as usize] {
            let token = ev.u64;
            if token == INOTIFY_TOKEN {
                for wd in self.inotify_wds() {
                    let entry = self.table().by_wd.get(&wd).cloned();
                    if let Some(e) = entry {
                        e.check(&self.0.events);
                    }
                }
            } else {
                let entry = self.table().by_token.get(&token).cloned();
                if let Some(e) = entry {
                    e.check(&self.0.events);
                }
            }
        }
    }

    /// Drains the inotify descriptor; returns the watch descriptors that fired.
    fn inotify_wds(&self) -> Vec<i32> {
        let mut wds = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reading into a buffer of the given length.
            let n = unsafe {
                libc::read(
                    self.0.inotify.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n <= 0 {
                return wds;
            }
            let mut off = 0usize;
            let header = std::mem::size_of::<libc::inotify_event>();
            while off + header <= n as usize {
                // SAFETY: the kernel wrote a whole event header at `off`; read it unaligned.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf.as_ptr().add(off).cast()) };
                if !wds.contains(&ev.wd) {
                    wds.push(ev.wd);
                }
                off += header + ev.len as usize;
            }
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts watching container `id`. A host without a memory controller has nothing to watch.
    pub fn watch(&self, id: &str, plan: &CgroupPlan, layout: &Layout) -> io::Result<()> {
        let Some((dir, unified)) = live::memory_dir(plan, layout) else {
            return Ok(());
        };
        let mut t = self.table();
        let token = t.next_token;
        t.next_token += 1;
        let source = if unified {
            let file = dir.join("memory.events");
            let path = std::ffi::CString::new(file.as_os_str().as_encoded_bytes())
                .map_err(io::Error::other)?;
            // SAFETY: valid inotify descriptor and NUL-terminated path.
            let wd = cvt(unsafe {
                libc::inotify_add_watch(self.0.inotify.as_raw_fd(), path.as_ptr(), libc::IN_MODIFY)
            })?;
            let seen = Mutex::new(oom_kill_count(&file));
            Source::Events { file, wd, seen }
        } else {
            let control = fs::File::open(dir.join("memory.oom_control"))?;
            // SAFETY: creating a new descriptor.
            let efd = owned(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
            fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.event_control"))?
                .write_all(format!("{} {}", efd.as_raw_fd(), control.as_raw_fd()).as_bytes())?;
            epoll_add(self.0.epoll.as_raw_fd(), efd.as_raw_fd(), token)?;
            Source::EventFd {
                efd,
                _control: control.into(),
            }
        };
        let entry = Arc::new(Entry {
            id: id.to_owned(),
            token,
            source,
            lock: Mutex::new(()),
        });
        if let Source::Events { wd, .. } = &entry.source {
            t.by_wd.insert(*wd, entry.clone());
        }
        t.by_token.insert(token, entry.clone());
        if let Some(old) = t.by_id.insert(id.to_owned(), entry) {
            warn!("oom watcher: container {id} was already watched");
            self.forget(&mut t, &old);
        }
        Ok(())
    }

    /// Publishes a pending OOM of `id` now (the exit path calls it before TaskExit).
    pub fn check(&self, id: &str) {
        let entry = self.table().by_id.get(id).cloned();
        if let Some(e) = entry {
            e.check(&self.0.events);
        }
    }

    /// Stops watching `id` (before its cgroup is removed).
    pub fn unwatch(&self, id: &str) {
        let mut t = self.table();
        if let Some(e) = t.by_id.remove(id) {
            self.forget(&mut t, &e);
        }
    }

    fn forget(&self, t: &mut Table, e: &Entry) {
        t.by_token.remove(&e.token);
        match &e.source {
            Source::EventFd { efd, .. } => {
                // SAFETY: removing a registered descriptor; the fds close when `e` drops.
                unsafe {
                    libc::epoll_ctl(
                        self.0.epoll.as_raw_fd(),
                        libc::EPOLL_CTL_DEL,
                        efd.as_raw_fd(),
                        std::ptr::null_mut(),
                    )
                };
            }
            Source::Events { wd, .. } => {
                t.by_wd.remove(wd);
                // SAFETY: removing our own watch descriptor.
                unsafe { libc::inotify_rm_watch(self.0.inotify.as_raw_fd(), *wd) };
            }
        }
    }
}
