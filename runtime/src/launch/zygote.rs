//! The launcher: a single-threaded helper process the shim executes from the sealed view of
//! its binary, the parent of every container process.

use std::{
    collections::HashSet,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    sync::{Arc, Mutex},
};

use nix::sys::signal::{SigSet, Signal};
use serde::{Deserialize, Serialize};

use super::{
    channel::{Channel, Received},
    init,
    pidfd::Pidfd,
    sealed_exe::{exec_fd, ExecArgv, SealedExe},
    spawn, Launched,
};
use crate::{
    cgroups::CgroupEntry,
    namespaces::user,
    plan::{idmap::IdMappings, LaunchPlan},
    Error, Result,
};

#[derive(Debug, Serialize, Deserialize)]
enum Request {
    /// Comes with the init's stdin, stdout and stderr, then (with `into_cgroup`) the cgroup
    /// v2 directory the init is to be born in, then `cgroup_tasks` v1 `tasks` files it
    /// moves itself into (see [`crate::cgroups::open_entry`]), then (with `enter`) the
    /// pidfd of the live init whose namespaces an exec enters.
    Launch {
        plan: Box<LaunchPlan>,
        into_cgroup: bool,
        #[serde(default)]
        cgroup_tasks: usize,
        #[serde(default)]
        enter: bool,
    },
    /// A user namespace with these maps, for idmapped mounts the shim makes itself (the
    /// rootfs containerd prepares); `field` names where the maps come from.
    UserNamespace { mappings: IdMappings, field: String },
}

/// An exit of a process the launcher started: sent on the exit channel, in reaping order.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Exit {
    pub pid: i32,
    /// The exit code, or 128 + the signal that killed the process.
    pub status: u32,
    /// Nanoseconds since the Unix epoch.
    pub exited_at: u64,
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    /// Comes with two descriptors: the shim's end of the init's channel, a pidfd of it.
    Launched {
        pid: i32,
        /// Born in the cgroup it was sent: no move needed.
        in_cgroup: bool,
    },
    /// Comes with one descriptor: the user namespace.
    UserNamespace,
    Failed {
        error: String,
    },
}

/// The shim's handle on its launcher.
#[derive(Debug)]
pub struct Zygote {
    pid: i32,
    channel: Mutex<Channel>,
    exits: Mutex<Option<Channel>>,
    /// How the launcher ended, once [`Zygote::reap`] knows.
    ended: std::sync::OnceLock<String>,
}

/// Where the executed launcher finds its request channel, its exit channel and (if open)
/// the shim's log, placed by [`Zygote::spawn`]: consecutive numbers.
const LAUNCHER_CHANNEL_FD: i32 = 3;
const LAUNCHER_EXITS_FD: i32 = 4;
pub const LAUNCHER_LOG_FD: i32 = 5;

impl Zygote {
    /// Starts the launcher: forks, and the child executes `exe` (the sealed view of the
    /// shim binary, see [`SealedExe`]) with `args`, which must make that binary call
    /// [`run_launcher`]. The launcher gets its two channels and `log` (the shim's log: the
    /// launcher and the processes it clones log through it until they exec).
    ///
    /// A fresh process rather than a plain fork of the shim: it shares no lock or allocator
    /// state with the caller, which may already run threads, and it and every process it
    /// clones have the sealed view as their executable, never the host's binary. Call it from
    /// the thread that lives as long as the shim: the launcher's death signal follows the
    /// thread that forked it.
    pub fn spawn(exe: &SealedExe, args: &ExecArgv, log: Option<BorrowedFd<'_>>) -> Result<Zygote> {
        let (shim_end, zygote_end) = Channel::pair()?;
        let (exits_shim_end, exits_zygote_end) = Channel::pair()?;
        let parent = std::process::id() as i32;
        let log = log.map_or(-1, |f| f.as_raw_fd());
        // SAFETY: the child only makes async-signal-safe system calls before it executes
        // (or exits): whatever other threads of ours held at the fork cannot matter.
        match unsafe { nix::unistd::fork() }.map_err(|e| Error::sys("fork launcher", e))? {
            nix::unistd::ForkResult::Child => {
                let from = [zygote_end.as_raw_fd(), exits_zygote_end.as_raw_fd(), log];
                let exe = exe.as_raw_fd();
                // SAFETY: descriptor and prctl system calls on our own descriptors.
                unsafe {
                    // Dies with the shim; set before the check so no death goes unseen.
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                    if libc::getppid() != parent {
                        libc::_exit(0);
                    }
                    // Out of the way of the targets first (see place_for_exec).
                    let exe = libc::fcntl(exe, libc::F_DUPFD_CLOEXEC, LAUNCHER_LOG_FD + 1);
                    if exe < 0 || crate::fd::place_for_exec(from, LAUNCHER_CHANNEL_FD).is_err() {
                        libc::_exit(127);
                    }
                    let _ = exec_fd(exe, args);
                }
                // SAFETY: _exit skips the exit handlers of the process this is a copy of.
                unsafe { libc::_exit(127) }
            }
            nix::unistd::ForkResult::Parent { child } => Ok(Zygote {
                pid: child.as_raw(),
                channel: Mutex::new(shim_end),
                exits: Mutex::new(Some(exits_shim_end)),
                ended: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Once the launcher's channels have closed: reaps it (it is our child; waiting at most
    /// `wait` for it to finish exiting) and says how it ended, for the log and for the error
    /// of every later launch.
    pub fn reap(&self, wait: std::time::Duration) -> String {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        let until = std::time::Instant::now() + wait;
        let how = loop {
            match waitpid(
                nix::unistd::Pid::from_raw(self.pid),
                Some(WaitPidFlag::WNOHANG),
            ) {
                Ok(WaitStatus::StillAlive) if std::time::Instant::now() < until => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Ok(WaitStatus::StillAlive) => break "still runs, its channels closed".to_owned(),
                // Only the child of `spawn` exits so, before or instead of its exec.
                Ok(WaitStatus::Exited(_, 127)) => {
                    break "exited with status 127: the sealed view of the shim binary could \
                           not be executed"
                        .to_owned()
                }
                Ok(WaitStatus::Exited(_, code)) => break format!("exited with status {code}"),
                Ok(WaitStatus::Signaled(_, sig, _)) => break format!("was killed by {sig}"),
                Ok(other) => break format!("ended ({other:?})"),
                Err(e) => break format!("could not be reaped ({e})"),
            }
        };
        let how = format!("the launcher (pid {}) {how}", self.pid);
        let _ = self.ended.set(how.clone());
        how
    }

    fn gone(&self, why: &dyn std::fmt::Display) -> Error {
        match self.ended.get() {
            Some(how) => launcher_gone(&format_args!("{why}; {how}")),
            None => launcher_gone(why),
        }
    }

    /// The channel on which the launcher reports exits ([`Exit`]); can be taken once.
    pub fn take_exit_channel(&self) -> Option<ExitChannel> {
        self.exits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .map(ExitChannel)
    }

    /// Clones a new container init for `plan` with the given stdio, entering its cgroup by
    /// itself as `cgroup` says where the kernel can (see [`Launched::in_cgroup`]); an exec
    /// enters the namespaces of the live init `enter` (its pidfd). `register` runs with the
    /// new process before any other launch can happen, so the caller can record it before a
    /// reused pid could ever be reported.
    pub fn launch(
        &self,
        plan: &LaunchPlan,
        stdio: [BorrowedFd<'_>; 3],
        cgroup: &CgroupEntry,
        enter: Option<BorrowedFd<'_>>,
        register: impl FnOnce(i32, &Arc<Pidfd>),
    ) -> Result<Launched> {
        let channel = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        let fds: Vec<_> = stdio
            .iter()
            .map(|f| f.as_raw_fd())
            .chain(cgroup.birth.iter().map(|f| f.as_raw_fd()))
            .chain(cgroup.tasks.iter().map(|f| f.as_raw_fd()))
            .chain(enter.as_ref().map(|f| f.as_raw_fd()))
            .collect();
        channel
            .send(
                &Request::Launch {
                    plan: Box::new(plan.clone()),
                    into_cgroup: cgroup.birth.is_some(),
                    cgroup_tasks: cgroup.tasks.len(),
                    enter: enter.is_some(),
                },
                &fds,
            )
            .map_err(|e| self.gone(&e))?;
        match channel.recv::<Reply>().map_err(|e| self.gone(&e))? {
            Some((Reply::Launched { pid, in_cgroup }, mut fds)) if fds.len() == 2 => {
                let pidfd = Arc::new(Pidfd::new(fds.pop().expect("two descriptors")));
                register(pid, &pidfd);
                let mut launched = Launched::new(
                    pid,
                    pidfd,
                    Channel::from(fds.pop().expect("two descriptors")),
                    plan,
                );
                launched.in_cgroup = cgroup.covers_all(in_cgroup);
                Ok(launched)
            }
            Some((Reply::Failed { error }, _)) => Err(Error::Init(error)),
            Some(_) => Err(Error::Other("launcher sent a malformed reply".into())),
            None => Err(self.gone(&"it closed its channel")),
        }
    }
}

impl Zygote {
    /// A user namespace with `mappings`, held by descriptor (for MOUNT_ATTR_IDMAP). Making one
    /// takes a short-lived child, so the single-threaded launcher makes it, not the shim.
    pub fn user_namespace(&self, mappings: &IdMappings, field: &str) -> Result<OwnedFd> {
        let channel = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        channel.send(
            &Request::UserNamespace {
                mappings: mappings.clone(),
                field: field.to_owned(),
            },
            &[],
        )?;
        match channel.recv::<Reply>().map_err(|e| self.gone(&e))? {
            Some((Reply::UserNamespace, mut fds)) if fds.len() == 1 => Ok(fds.pop().unwrap()),
            Some((Reply::Failed { error }, _)) => Err(Error::Init(error)),
            Some(_) => Err(Error::Other("launcher sent a malformed reply".into())),
            None => Err(self.gone(&"it closed its channel")),
        }
    }
}

/// What [`ExitChannel::try_recv`] found.
#[derive(Debug)]
pub enum ExitReport {
    Exit(Exit),
    /// No exit to report now.
    Nothing,
    /// The channel is closed: the launcher died.
    LauncherGone,
}

fn launcher_gone(why: &dyn std::fmt::Display) -> Error {
    Error::Other(format!(
        "the launcher process is gone ({why}): this shim can start no process any more"
    ))
}

/// The fuzz target of the launcher protocol (see [`super::fuzz_channel_packet`]).
pub(super) fn fuzz_receive(bytes: &[u8]) {
    fn one<T: serde::de::DeserializeOwned>(bytes: &[u8]) {
        let Ok((a, b)) = Channel::pair() else {
            return;
        };
        if a.send_bytes(bytes, &[]).is_ok() {
            let _ = b.recv::<T>();
        }
    }
    one::<Request>(bytes);
    one::<Reply>(bytes);
    one::<super::InitMessage>(bytes);
    one::<super::ShimMessage>(bytes);
    one::<Exit>(bytes);
    one::<std::result::Result<(i32, bool), String>>(bytes);
}

/// The shim's end of the exit channel.
#[derive(Debug)]
pub struct ExitChannel(Channel);

impl ExitChannel {
    /// Blocks for the next exit; `None` once the launcher is gone.
    pub fn recv(&self) -> Option<Exit> {
        match self.0.recv::<Exit>() {
            Ok(Some((exit, _))) => Some(exit),
            _ => None,
        }
    }

    /// The next exit if one is there, without blocking.
    pub fn try_recv(&self) -> ExitReport {
        match self.0.try_recv::<Exit>() {
            Ok(Received::Message(exit, _)) => ExitReport::Exit(exit),
            Ok(Received::Empty) => ExitReport::Nothing,
            Ok(Received::Closed) | Err(_) => ExitReport::LauncherGone,
        }
    }
}

impl std::os::fd::AsRawFd for ExitChannel {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

impl From<OwnedFd> for Channel {
    fn from(fd: OwnedFd) -> Self {
        Channel::from_fd(fd)
    }
}

/// Closes every descriptor from 3 up except `keep`.
fn close_all_but(keep: &[i32]) {
    let mut keep = keep.to_vec();
    keep.sort_unstable();
    let mut from = 3u32;
    for k in keep.into_iter().filter(|k| *k >= 3).map(|k| k as u32) {
        if k > from {
            // SAFETY: close_range on descriptors of our own process.
            unsafe { libc::syscall(libc::SYS_close_range, from, k - 1, 0) };
        }
        from = k + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, 0) };
}

/// A pidfd of the launcher itself, which every process it clones inherits: their way to
/// learn that it died before they set their death signal.
static LAUNCHER: std::sync::OnceLock<OwnedFd> = std::sync::OnceLock::new();

/// In a process the launcher cloned: whether the launcher is still alive (a pidfd becomes
/// readable when its process exits). True where there is no launcher to ask.
pub(crate) fn launcher_alive() -> bool {
    let Some(fd) = LAUNCHER.get() else {
        return true;
    };
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd without waiting.
    unsafe { libc::poll(&mut p, 1, 0) == 0 }
}

/// The launcher's entry point, in the binary [`Zygote::spawn`] executed: takes the channels
/// it placed, keeps nothing else, and serves until the shim is gone. Never returns.
pub fn run_launcher() -> ! {
    // SAFETY: `Zygote::spawn` placed these two channels there for us alone.
    let (channel, exits) = unsafe {
        (
            Channel::from_fd(OwnedFd::from_raw_fd(LAUNCHER_CHANNEL_FD)),
            Channel::from_fd(OwnedFd::from_raw_fd(LAUNCHER_EXITS_FD)),
        )
    };
    // Not passed on by the execs of the processes we clone (the log is theirs until then).
    for fd in [LAUNCHER_CHANNEL_FD, LAUNCHER_EXITS_FD, LAUNCHER_LOG_FD] {
        // SAFETY: fcntl with an integer argument (EBADF for a log that is not there).
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // Set before the exec too (so a shim that died meanwhile has killed us already); an exec
    // that changes credentials clears it, so it is set again.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // Only stdio, the channels and the log (when open) survive: anything the shim left
    // without close-on-exec must not reach a container.
    close_all_but(&[LAUNCHER_CHANNEL_FD, LAUNCHER_EXITS_FD, LAUNCHER_LOG_FD]);
    let _ = std::env::set_current_dir("/");
    serve(channel, exits)
}

fn set_name(name: &[u8]) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
}

/// The launcher's loop. Never returns; exits when the shim closes the channel or dies.
///
/// It is the parent (and, as a subreaper, the reaper of orphans) of every container process,
/// so it learns each pid before that process can be reaped: exits are reported exactly, in
/// order, and a reused pid can never be confused with an old one.
fn serve(channel: Channel, exits: Channel) -> ! {
    // SAFETY: prctl with integer arguments. (The death signal was set before the exec.)
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    set_name(b"shim-rs-launch\0");
    // Opened here, in the host's mount namespace, and inherited by every process we clone:
    // their only way to their own /proc files (see `procfs`).
    if crate::procfs::handle().is_err() {
        std::process::exit(1);
    }
    // SAFETY: pidfd_open of ourselves; the result is a new descriptor or an error.
    let me = unsafe { libc::syscall(libc::SYS_pidfd_open, std::process::id(), 0) };
    if me >= 0 {
        // SAFETY: a new descriptor nothing else owns (close-on-exec: see below).
        let me = unsafe { OwnedFd::from_raw_fd(me as i32) };
        let _ = LAUNCHER.set(me);
    }
    let sigchld = match child_signal_fd() {
        Ok(fd) => fd,
        Err(_) => std::process::exit(1),
    };
    let mut launched: HashSet<i32> = HashSet::new();
    loop {
        let mut fds = [
            libc::pollfd {
                fd: channel.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sigchld.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll on two valid pollfds.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            continue; // EINTR
        }
        if fds[1].revents != 0 {
            drain_signal_fd(&sigchld);
            reap(&mut launched, &exits);
        }
        if fds[0].revents == 0 {
            continue;
        }
        let reply = match channel.recv::<Request>() {
            Ok(None) => std::process::exit(0),
            Err(e) => Err(e),
            Ok(Some((
                Request::Launch {
                    plan,
                    into_cgroup,
                    cgroup_tasks,
                    enter,
                },
                fds,
            ))) => launch(&plan, fds, into_cgroup, cgroup_tasks, enter).map(|(born, ch)| {
                launched.insert(born.pid);
                let reply = Reply::Launched {
                    pid: born.pid,
                    in_cgroup: born.in_cgroup,
                };
                (reply, vec![ch.into_fd(), born.pidfd])
            }),
            Ok(Some((Request::UserNamespace { mappings, field }, _))) => {
                user::userns_fd(&mappings, &field).map(|ns| (Reply::UserNamespace, vec![ns]))
            }
        };
        let sent = match reply {
            Ok((reply, fds)) => {
                let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
                channel.send(&reply, &raw)
            }
            Err(e) => channel.send(
                &Reply::Failed {
                    error: e.to_string(),
                },
                &[],
            ),
        };
        if sent.is_err() {
            std::process::exit(1);
        }
    }
}

/// Blocks SIGCHLD and returns a signalfd for it (the init unblocks it again before exec).
fn child_signal_fd() -> Result<OwnedFd> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set.thread_block()
        .map_err(|e| Error::sys("block SIGCHLD", e))?;
    // SAFETY: signalfd on a valid sigset; we take ownership of the new descriptor.
    let fd = unsafe { libc::signalfd(-1, set.as_ref(), libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(Error::Other(format!(
            "signalfd: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: fd is a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn drain_signal_fd(fd: &OwnedFd) {
    let mut buf = [0u8; 128 * 8];
    // SAFETY: read into a local buffer.
    while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

/// Reaps every exited child; reports the ones we launched, drops orphans.
fn reap(launched: &mut HashSet<i32>, exits: &Channel) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status) as u32
        } else if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status) as u32
        } else {
            continue;
        };
        if launched.remove(&pid) {
            let exited_at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default();
            let _ = exits.send(
                &Exit {
                    pid,
                    status: code,
                    exited_at,
                },
                &[],
            );
        }
    }
}

fn launch(
    plan: &LaunchPlan,
    mut fds: Vec<OwnedFd>,
    into_cgroup: bool,
    cgroup_tasks: usize,
    enter: bool,
) -> Result<(spawn::Born, Channel)> {
    let expected = (3 + usize::from(into_cgroup) + usize::from(enter)).saturating_add(cgroup_tasks);
    if fds.len() != expected {
        return Err(Error::Other(format!(
            "launch request carried {} descriptors, not {expected}",
            fds.len()
        )));
    }
    let enter = if enter { fds.pop() } else { None };
    let tasks = fds.split_off(fds.len() - cgroup_tasks);
    let cgroup = if into_cgroup { fds.pop() } else { None };
    let stdio = fds;
    // Decided here, on the host's /sys, never on a container's.
    crate::kernel::check_lsm_labels(&plan.kernel)?;
    let (shim_end, init_end) = Channel::pair()?;
    let mut shim_end = Some(shim_end);
    let born = spawn::spawn(
        plan,
        cgroup.as_ref().map(|c| c.as_fd()),
        enter.as_ref().map(|e| e.as_fd()),
        |launcher| {
            drop(shim_end.take());
            init::run(plan, init_end, stdio, tasks, launcher)
        },
    )?;
    let shim_end = shim_end.expect("only the init takes it");
    Ok((born, shim_end))
}
