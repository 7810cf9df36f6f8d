//! Terminals: a pty allocated inside the container (from its own devpts instance), made the
//! process's controlling terminal and stdio. The master goes back to the shim.

use std::{
    fs::{File, OpenOptions},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::OpenOptionsExt,
    },
    path::Path,
};

use nix::mount::{mount, MsFlags};

use crate::{Error, Result};

fn last(what: &str) -> Error {
    Error::Init(format!(
        "terminal: {what}: {}",
        std::io::Error::last_os_error()
    ))
}

/// Sets the window size of a pty (master or slave).
pub fn set_size(fd: &impl AsRawFd, height: u16, width: u16) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Opens a new pty from the container's /dev/ptmx, makes the slave the controlling
/// terminal and fds 0-2 of the calling process (which must be a session leader); with
/// `console`, also binds it over /dev/console. Returns the master. The slave keeps the owner
/// devpts gives it (the process's user gets it with the rest of its stdio).
pub fn setup(size: Option<(u16, u16)>, console: bool) -> Result<OwnedFd> {
    let master = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open("/dev/ptmx")
        .map_err(|e| Error::Init(format!("terminal: open /dev/ptmx: {e}")))?;
    let unlock: libc::c_int = 0;
    let mut number: libc::c_uint = 0;
    // SAFETY: TIOCSPTLCK reads an int, TIOCGPTN writes an unsigned int; both are ours.
    unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) != 0 {
            return Err(last("unlock pty"));
        }
        if libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut number) != 0 {
            return Err(last("pty number"));
        }
    }
    let slave_path = format!("/dev/pts/{number}");
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&slave_path)
        .map_err(|e| Error::Init(format!("terminal: open {slave_path}: {e}")))?;
    if let Some((h, w)) = size {
        set_size(&slave, h, w).map_err(|e| Error::Init(format!("process.consoleSize: {e}")))?;
    }
    if console {
        bind_console(Path::new(&slave_path))?;
    }
    // SAFETY: TIOCSCTTY on our session's new terminal; dup2 onto 0..=2.
    unsafe {
        if libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) != 0 {
            return Err(last("make it the controlling terminal"));
        }
        for fd in 0..3 {
            if libc::dup2(slave.as_raw_fd(), fd) < 0 {
                return Err(last("dup2"));
            }
        }
    }
    // SAFETY: we own the master descriptor; hand it over as an OwnedFd.
    Ok(unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(master)) })
}

/// /dev/console in the container is the container's terminal (as with runc).
fn bind_console(slave: &Path) -> Result<()> {
    let console = Path::new("/dev/console");
    if std::fs::symlink_metadata(console).is_err() {
        File::create(console).map_err(|e| Error::io(console, e))?;
    }
    mount(
        Some(slave),
        console,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| Error::sys("terminal: bind /dev/console", e))
}
