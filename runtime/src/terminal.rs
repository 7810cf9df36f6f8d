//! Terminals: a pty allocated inside the container (from its own devpts instance), made the
//! process's controlling terminal and stdio. The master goes back to the shim.
//!
//! No path the container controls decides which object is used (the CVE-2025-52565 class):
//! - the multiplexer is the container's /dev/pts/ptmx, reached without following any link
//!   (/dev/ptmx is a symlink the container may replace), checked to be the ptmx inode of a
//!   devpts, and only then opened, through the launcher's procfs handle;
//! - the slave comes from the master itself (TIOCGPTPEER), never from /dev/pts/<n>;
//! - /dev/console is created without following a link, and the slave is bound over it by
//!   descriptor.

use std::{
    ffi::OsStr,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::Path,
};

use crate::{
    fd::{self, openat2, RESOLVE_BENEATH, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS},
    procfs,
    rootfs::mount::{clone_fd_tree, move_mount_to_fd},
    Error, Result,
};

/// From <linux/magic.h>.
const DEVPTS_SUPER_MAGIC: i64 = 0x1cd1;
/// The ptmx node of every devpts instance (fs/devpts/inode.c: mknod_ptmx).
const PTMX_INO: u64 = 2;
const PTMX_MAJOR: u32 = 5;
const PTMX_MINOR: u32 = 2;
/// Lookups in the container: never through a link, never above its root.
const NO_LINKS: u64 = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;

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

/// Opens a new pty from the container's devpts (the calling process's "/" is the
/// container's root), makes the slave the controlling terminal and fds 0-2 of the calling
/// process (which must be a session leader); with `console`, also binds it over
/// /dev/console. Returns the master. The slave keeps the owner devpts gives it (the
/// process's user gets it with the rest of its stdio).
pub fn setup(size: Option<(u16, u16)>, console: bool) -> Result<OwnedFd> {
    let root = openat2(
        fd::cwd(),
        Path::new("/"),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        0,
    )
    .map_err(|e| Error::Init(format!("terminal: open /: {e}")))?;
    let master = open_ptmx(root.as_fd())?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int we own.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(last("unlock pty"));
    }
    // The peer of this very master (Linux 4.13; openat2, which the runtime needs, is 5.6).
    // SAFETY: TIOCGPTPEER takes open(2) flags and returns a new descriptor.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(last("open the pty's peer (TIOCGPTPEER)"));
    }
    // SAFETY: a new descriptor nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    if let Some((h, w)) = size {
        set_size(&slave, h, w).map_err(|e| Error::Init(format!("process.consoleSize: {e}")))?;
    }
    if console {
        bind_console(root.as_fd(), slave.as_fd())?;
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
    Ok(master)
}

/// The container's /dev/pts/ptmx, opened read-write once it is known to be the real thing.
fn open_ptmx(root: BorrowedFd<'_>) -> Result<OwnedFd> {
    let err = |what: String| {
        Error::Init(format!(
            "terminal: /dev/pts/ptmx in the container {what} (a terminal needs devpts at /dev/pts)"
        ))
    };
    let handle = openat2(root, Path::new("dev/pts/ptmx"), libc::O_PATH, 0, NO_LINKS)
        .map_err(|e| err(format!("cannot be reached without following a link: {e}")))?;
    let kind = fd::fs_type(handle.as_fd()).map_err(|e| err(format!("statfs: {e}")))?;
    let st = fd::fstat(handle.as_fd()).map_err(|e| err(format!("stat: {e}")))?;
    let ptmx = libc::makedev(PTMX_MAJOR, PTMX_MINOR);
    if kind != DEVPTS_SUPER_MAGIC
        || st.st_ino != PTMX_INO
        || st.st_mode & libc::S_IFMT != libc::S_IFCHR
        || st.st_rdev != ptmx
    {
        return Err(err(format!(
            "is not the ptmx of a devpts (filesystem {kind:#x}, inode {}, mode {:o}, device {}:{})",
            st.st_ino,
            st.st_mode,
            libc::major(st.st_rdev),
            libc::minor(st.st_rdev)
        )));
    }
    procfs::handle()?
        .reopen(handle.as_fd(), libc::O_RDWR | libc::O_NOCTTY)
        .map_err(|e| err(format!("open: {e}")))
}

/// /dev/console in the container is the container's terminal (as with runc). The mount
/// point is created without following a link, and the pty is bound onto it by descriptor.
fn bind_console(root: BorrowedFd<'_>, slave: BorrowedFd<'_>) -> Result<()> {
    let err =
        |what: &str, e: io::Error| Error::Init(format!("terminal: /dev/console: {what}: {e}"));
    let dev = openat2(
        root,
        Path::new("dev"),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        NO_LINKS,
    )
    .map_err(|e| err("open /dev without following links", e))?;
    let name = OsStr::new("console");
    let open = || openat2(dev.as_fd(), Path::new(name), libc::O_PATH, 0, NO_LINKS);
    let target = match open() {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            match fd::create_file(dev.as_fd(), name) {
                Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                    return Err(err("create the mount point", e))
                }
                _ => open(),
            }
        }
        other => other,
    }
    .map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => Error::Init(
            "terminal: /dev/console in the container is a symlink: refusing to mount the \
             terminal through it"
                .into(),
        ),
        _ => err("open the mount point", e),
    })?;
    let st = fd::fstat(target.as_fd()).map_err(|e| err("stat", e))?;
    let kind = st.st_mode & libc::S_IFMT;
    if kind != libc::S_IFREG && kind != libc::S_IFCHR {
        return Err(Error::Init(format!(
            "terminal: /dev/console in the container is neither a file nor a device \
             (mode {:o}): refusing to mount the terminal over it",
            st.st_mode
        )));
    }
    let tree = clone_fd_tree(slave, false).map_err(|e| err("clone the pty's mount", e))?;
    move_mount_to_fd(tree.as_fd(), target.as_fd()).map_err(|e| err("bind the pty", e))
}
