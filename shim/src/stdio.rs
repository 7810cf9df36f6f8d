//! A process's stdio, wired to the fifos containerd named.
//!
//! - stdout/stderr without a terminal: the fifos are passed straight to the process, so no
//!   copy runs in the shim and nothing is buffered here.
//! - stdin: the process reads a pipe that a thread fills from the fifo. As containerd's runc
//!   shim, the shim holds a writer of the fifo itself, so only CloseIO delivers EOF: a client
//!   that detaches (`ctr run -d -t`) or has not opened the fifo yet is not taken for EOF, and
//!   a later client (`ctr task attach`) can write to it.
//! - the shim also holds a reader of each output fifo, so a process whose client detached
//!   does not die of SIGPIPE; what it writes then waits in the fifo for the next client.
//!   It is opened only once the client's reader is there (bounded), see [`open_output`].
//! - with a terminal: the pty master (sent by the process) is copied to the stdout fifo,
//!   and the stdin fifo to the master.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::fs::OpenOptionsExt,
    },
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    error::{Error, Result},
    task::lifecycle::StdioPaths,
};

fn check_scheme(field: &str, path: &str) -> Result<()> {
    match path.split_once("://") {
        None | Some(("fifo", _)) => Ok(()),
        Some((scheme, _)) => Err(Error::InvalidArgument(format!(
            "{field}: unknown stdio scheme {scheme}:// (fifo, binary and file are supported)"
        ))),
    }
}

/// `binary://` and `file://` log URIs (as containerd's `--log-uri` passes them for both
/// stdout and stderr): returns where the process's stdout and stderr go.
fn open_log_uri(uri: &str, id: &str, namespace: &str) -> Result<Option<(File, File)>> {
    if let Some(rest) = uri.strip_prefix("file://") {
        let path = std::path::Path::new(rest.split('?').next().unwrap_or_default());
        if !path.is_absolute() {
            return Err(Error::InvalidArgument(format!(
                "stdout: file:// log path {rest:?} is not absolute"
            )));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::InvalidArgument(format!("stdout: mkdir {}: {e}", dir.display()))
            })?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| Error::InvalidArgument(format!("stdout: open {}: {e}", path.display())))?;
        let dup = file
            .try_clone()
            .map_err(|e| Error::Internal(e.to_string()))?;
        return Ok(Some((file, dup)));
    }
    let Some(rest) = uri.strip_prefix("binary://") else {
        return Ok(None);
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    // Each query pair becomes the arguments "key value" (an empty value for a bare key), as
    // containerd's runc shim passes them.
    let args: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .flat_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            [k, v]
        })
        .collect();
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (ready_r, ready_w) = pipe()?;
    let mut cmd = std::process::Command::new(path);
    cmd.args(&args)
        .env_clear()
        .env("CONTAINER_ID", id)
        .env("CONTAINER_NAMESPACE", namespace)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // The logger gets the stdout pipe as fd 3, stderr as fd 4 and the ready pipe as fd 5.
    let fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // calls (place_for_exec); the descriptors stay open in the parent until spawn returns.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            runtime::fd::place_for_exec(fds, 3).map_err(std::io::Error::from_raw_os_error)
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::InvalidArgument(format!("stdout: start logging binary {path}: {e}")))?;
    drop((out_r, err_r, ready_w));
    // Reaped here: the daemon never waits for arbitrary children.
    spawn("logger-wait", move || {
        let _ = child.wait();
    })?;
    // The logger signals readiness by writing to or closing fd 5.
    let mut fds = [libc::pollfd {
        fd: ready_r.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: poll on one valid pollfd.
    if unsafe { libc::poll(fds.as_mut_ptr(), 1, 10_000) } <= 0 {
        return Err(Error::Internal(format!(
            "logging binary {path} did not become ready within 10 s"
        )));
    }
    Ok(Some((out_w, err_w)))
}

/// fchown of a fifo or pipe (containerd's stdio fifos, our stdin pipe, a logger's pipe);
/// anything else (/dev/null, a `file://` log) is left alone.
fn give_fifo(f: &File, uid: u32, gid: u32) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let is_fifo = f
        .metadata()
        .map_err(|e| Error::Internal(format!("stdio: fstat: {e}")))?
        .file_type()
        .is_fifo();
    if is_fifo {
        std::os::unix::fs::fchown(f, Some(uid), Some(gid))
            .map_err(|e| Error::Internal(format!("stdio: chown to {uid}:{gid}: {e}")))?;
    }
    Ok(())
}

fn strip_scheme(path: &str) -> &str {
    path.strip_prefix("fifo://").unwrap_or(path)
}

fn dev_null(write: bool) -> Result<File> {
    OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/null")
        .map_err(|e| Error::Internal(format!("open /dev/null: {e}")))
}

fn clear_nonblock(f: &File) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
    }
}

/// How long Create and Exec wait for the client to open its end of an output fifo.
/// containerd opens its readers from a goroutine, usually before the request reaches us;
/// only a client that never reads waits this long (and its output then waits in the fifo).
const CLIENT_READER_WAIT: Duration = Duration::from_secs(2);

/// The writer for the process, and a reader the shim keeps (see the module comment).
///
/// The client's reader must be open before the process can exit. A blocking open(2) of
/// a fifo for reading waits for a writer to open it *after* that reader arrived: if the
/// process wrote, exited and closed its end before containerd's reader got to its open,
/// that open waits for a writer that never comes, and so does the client's EOF (an
/// ExecSync of `true` in a storm hung so, one in a few thousand). So the first writer is
/// opened without a reader of ours: it fails (ENXIO) until the client's reader is there.
fn open_output(field: &str, path: &str, deadline: Instant) -> Result<Option<(File, File)>> {
    if path.is_empty() {
        return Ok(None);
    }
    check_scheme(field, path)?;
    let path = strip_scheme(path);
    let open = |read: bool| {
        OpenOptions::new()
            .read(read)
            .write(!read)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
    };
    let fail = |e: std::io::Error| Error::InvalidArgument(format!("{field} {path}: {e}"));
    let mut pause = Duration::from_micros(100);
    let writer = loop {
        match open(false) {
            Ok(w) => break Some(w),
            Err(e) if e.raw_os_error() != Some(libc::ENXIO) => return Err(fail(e)),
            Err(_) if Instant::now() >= deadline => break None,
            Err(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
        }
    };
    // Our own reader: with it open, a writer's open cannot fail for want of a reader, so
    // Create never hangs on a client that never opens its end.
    let keep = open(true).map_err(fail)?;
    let f = match writer {
        Some(w) => w,
        None => {
            log::warn!(
                "{field} {path}: no reader opened it within {CLIENT_READER_WAIT:?}; the \
                 output waits in the fifo for one"
            );
            open(false).map_err(fail)?
        }
    };
    clear_nonblock(&f);
    Ok(Some((f, keep)))
}

/// The read end of the stdin fifo (non-blocking), and a writer of our own: as containerd's
/// runc shim, we hold one, so only CloseIO delivers EOF (a detached client does not).
struct StdinFifo {
    reader: File,
    keepalive: File,
}

fn open_stdin(path: &str) -> Result<Option<StdinFifo>> {
    if path.is_empty() {
        return Ok(None);
    }
    check_scheme("stdin", path)?;
    let path = strip_scheme(path);
    let reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::InvalidArgument(format!("stdin {path}: {e}")))?;
    // Cannot block or fail for want of a reader: ours is open.
    let keepalive = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::InvalidArgument(format!("stdin {path}: {e}")))?;
    Ok(Some(StdinFifo { reader, keepalive }))
}

/// Copies the stdin fifo into `to` until the client closes the fifo or `cancel` fires
/// (CloseIO, or the process exited), copying what is already in the fifo, then closes `to`
/// (EOF for the process).
fn forward_stdin(fifo: File, cancel: File, mut to: impl Write) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut drain_and_stop = false;
    loop {
        if !drain_and_stop {
            let mut fds = [
                libc::pollfd {
                    fd: fifo.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: cancel.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: poll on two valid pollfds.
            if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
                continue; // EINTR
            }
            drain_and_stop = fds[1].revents != 0;
            if fds[0].revents == 0 {
                continue;
            }
        }
        match (&fifo).read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // Nothing more to read right now (EAGAIN) or a real error.
            Err(_) if drain_and_stop => return,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

fn pipe() -> Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::Internal(format!(
            "pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: both descriptors are new and ours.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// Copies until EOF or an error on either side; returns when done.
fn copy(mut from: impl Read, mut to: impl Write) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // EIO: the pty's last slave descriptor is gone.
            Err(_) => return,
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(|e| Error::Internal(format!("spawn {name} thread: {e}")))
}

/// What a process is launched with, before it runs.
pub struct LaunchIo {
    /// fds 0, 1 and 2 for the process (for a terminal, /dev/null until the pty replaces them).
    pub child: [File; 3],
    stdin: Option<StdinFifo>,
    stdin_pipe: Option<File>,
    terminal_out: Option<File>,
    /// The shim's own readers of the output fifos.
    kept: Vec<File>,
}

impl LaunchIo {
    /// Opens what containerd named for process `id` of `namespace`. `owner` (uid, gid) gets
    /// the fifos and pipes the process is given, so that a user-namespaced process can reopen
    /// them (`/dev/stdout`), as runc's shim does for its pipes with IoUid/IoGid.
    pub fn open(
        paths: &StdioPaths,
        id: &str,
        namespace: &str,
        owner: Option<(u32, u32)>,
    ) -> Result<LaunchIo> {
        let deadline = Instant::now() + CLIENT_READER_WAIT;
        let mut kept = Vec::new();
        let mut keep = |o: Option<(File, File)>| {
            o.map(|(w, r)| {
                kept.push(r);
                w
            })
        };
        let stdin = open_stdin(&paths.stdin)?;
        let logged = open_log_uri(&paths.stdout, id, namespace)?;
        let (stdout, stderr) = match logged {
            Some((out, err)) => (Some(out), Some(err)),
            None => (keep(open_output("stdout", &paths.stdout, deadline)?), None),
        };
        if paths.terminal {
            // One stream: containerd names no stderr for a terminal.
            return Ok(LaunchIo {
                child: [dev_null(false)?, dev_null(true)?, dev_null(true)?],
                stdin,
                stdin_pipe: None,
                terminal_out: stdout,
                kept,
            });
        }
        let stderr = match stderr {
            Some(e) => Some(e),
            None => keep(open_output("stderr", &paths.stderr, deadline)?),
        };
        let (child_in, stdin_pipe) = match &stdin {
            Some(_) => {
                let (r, w) = pipe()?;
                (r, Some(w))
            }
            None => (dev_null(false)?, None),
        };
        let child = [
            child_in,
            stdout.map_or_else(|| dev_null(true), Ok)?,
            stderr.map_or_else(|| dev_null(true), Ok)?,
        ];
        if let Some((uid, gid)) = owner {
            for f in &child {
                give_fifo(f, uid, gid)?;
            }
        }
        Ok(LaunchIo {
            child,
            stdin,
            stdin_pipe,
            terminal_out: None,
            kept,
        })
    }

    pub fn fds(&self) -> [BorrowedFd<'_>; 3] {
        [
            self.child[0].as_fd(),
            self.child[1].as_fd(),
            self.child[2].as_fd(),
        ]
    }

    /// Starts the copy threads once the process runs; `console` is its pty master.
    pub fn start(self, console: Option<OwnedFd>) -> Result<ProcessIo> {
        let LaunchIo {
            child,
            stdin,
            stdin_pipe,
            terminal_out,
            kept,
        } = self;
        let mut io = ProcessIo::default();
        // Our own handles on the output streams, to see them drained before the exit goes out.
        if console.is_none() {
            let outputs = child[1..]
                .iter()
                .filter_map(|f| f.try_clone().ok())
                .collect();
            io.outputs = Mutex::new(outputs);
        }
        drop(child);
        let master = console.map(|m| Arc::new(File::from(m)));
        if let (Some(master), Some(out)) = (&master, terminal_out) {
            let (tx, rx) = mpsc::channel();
            let m = master.clone();
            let out_handle = out.try_clone().ok();
            spawn("console-out", move || {
                copy(&*m, &out);
                let _ = tx.send(());
            })?;
            // The Drain also waits for the client to take what the copy wrote.
            if let Some(h) = out_handle {
                io.outputs.lock().unwrap_or_else(|p| p.into_inner()).push(h);
            }
            io.output_done = Some(Mutex::new(rx));
        }
        if let Some(StdinFifo { reader, keepalive }) = stdin {
            io.stdin_keepalive = Mutex::new(Some(keepalive));
            let (cancel_rx, cancel_tx) = pipe()?;
            io.stdin_cancel = Mutex::new(Some(cancel_tx));
            match (&master, stdin_pipe) {
                (Some(m), _) => {
                    let m = m.clone();
                    spawn("console-in", move || forward_stdin(reader, cancel_rx, &*m))?;
                }
                (None, Some(pipe)) => {
                    spawn("stdin", move || forward_stdin(reader, cancel_rx, pipe))?
                }
                (None, None) => {}
            }
        }
        io.console = master;
        io.kept = Mutex::new(kept);
        Ok(io)
    }
}

/// A running process's side of the stdio copies.
#[derive(Default)]
pub struct ProcessIo {
    console: Option<Arc<File>>,
    /// Closing it stops the stdin thread (after it copied what is already in the fifo).
    stdin_cancel: Mutex<Option<File>>,
    /// Our writer of the stdin fifo, dropped at CloseIO.
    stdin_keepalive: Mutex<Option<File>>,
    output_done: Option<Mutex<mpsc::Receiver<()>>>,
    /// Write ends of the stdout/stderr fifos (or pipes), held until the exit.
    outputs: Mutex<Vec<File>>,
    /// See LaunchIo::kept; released at the exit.
    kept: Mutex<Vec<File>>,
}

/// How long an exit waits for the client to take the process's last output.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the fifo or pipe `f` writes to has a reader now: opening another write end
/// without blocking fails with ENXIO when nobody has it open for reading (a detached
/// client), and then there is nobody to wait for.
fn has_reader(f: &File) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", f.as_raw_fd()))
    {
        Ok(_) => true,
        Err(e) => e.raw_os_error() != Some(libc::ENXIO),
    }
}

/// Bytes written to a fifo or pipe that its reader has not taken yet; None on error.
fn pending_bytes(f: &File) -> Option<libc::c_int> {
    let mut pending: libc::c_int = 0;
    // SAFETY: FIONREAD writes an int we own.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut pending) };
    (r == 0).then_some(pending)
}

/// The wait, after a process exited, until the client has its last output: polled (never
/// blocks), so any number of exits can drain at once. See [`ProcessIo::begin_drain`].
pub struct Drain {
    io: Arc<ProcessIo>,
    deadline: std::time::Instant,
    /// The terminal copy has reached EOF (or there is none).
    console_done: bool,
    /// Our handles on the output streams.
    outputs: Vec<File>,
}

impl Drain {
    /// True once the client has read everything (or stopped reading, or time is up); the
    /// output fifos are then released, so the client sees EOF.
    pub fn poll(&mut self) -> bool {
        let now = std::time::Instant::now();
        let late = now >= self.deadline;
        if !self.console_done {
            self.console_done = late
                || match &self.io.output_done {
                    Some(rx) => !matches!(
                        rx.lock().unwrap_or_else(|p| p.into_inner()).try_recv(),
                        Err(mpsc::TryRecvError::Empty)
                    ),
                    None => true,
                };
            if !self.console_done {
                return false;
            }
        }
        // A client that is still there gets until the deadline to read, however slowly (a
        // loaded machine): it cancels its copy once it has the exit (containerd's client
        // does, at Delete), so what it has not read by then is lost.
        self.outputs.retain(|f| match pending_bytes(f) {
            Some(n) if n > 0 && !late => has_reader(f),
            _ => false,
        });
        if !self.outputs.is_empty() {
            return false;
        }
        self.io
            .kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        true
    }
}

impl std::fmt::Debug for ProcessIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessIo")
            .field("console", &self.console.is_some())
            .finish()
    }
}

impl ProcessIo {
    /// CloseIO (and process exit): stdin is closed once what the client wrote is copied.
    pub fn close_stdin(&self) {
        self.stdin_keepalive
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.stdin_cancel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// Resizes the terminal; a process without one has nothing to resize, which is not an
    /// error (containerd's runc shim ignores it too).
    pub fn resize(&self, height: u32, width: u32) -> Result<()> {
        let Some(console) = self.console.as_ref() else {
            return Ok(());
        };
        let clamp = |v: u32| v.min(u16::MAX as u32) as u16;
        runtime::terminal::set_size(&**console, clamp(height), clamp(width))
            .map_err(|e| Error::Internal(format!("resize terminal: {e}")))
    }

    /// After the process exited: stops the stdin copy and starts the wait until the client
    /// has the last output, terminal or fifos (bounded by [`DRAIN_TIMEOUT`], in case a
    /// background process keeps the pty open or nobody reads).
    pub fn begin_drain(self: &Arc<Self>) -> Drain {
        self.close_stdin();
        let outputs = std::mem::take(&mut *self.outputs.lock().unwrap_or_else(|p| p.into_inner()));
        Drain {
            io: self.clone(),
            deadline: std::time::Instant::now() + DRAIN_TIMEOUT,
            console_done: false,
            outputs,
        }
    }
}
