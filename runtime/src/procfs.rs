//! A procfs the container cannot redirect.
//!
//! An exec runs inside a live container's mount namespace, where /proc is whatever the
//! container put there: a tmpfs with files named like procfs's, a bind of /proc/sysrq-trigger
//! over /proc/self/attr/exec (the CVE-2019-16884 / CVE-2023-27561 / CVE-2025-52881 class).
//! So no container process reads or writes /proc by path. The launcher opens this handle
//! once, in the host's mount namespace, and every process it clones inherits it:
//! - preferably a private procfs instance (fsopen("proc") + fsmount): a detached mount that
//!   no path reaches, so nothing can be mounted over anything in it;
//! - where the kernel refuses one (before Linux 5.2, or without the privilege), the host's
//!   /proc, opened without following anything and checked to be the root of a procfs.
//!
//! Lookups below it never follow a symlink, never leave it and never cross a mount
//! (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV), so a name can only
//! ever reach a file of that procfs. A process finds itself under its pid *in this procfs's
//! pid namespace* (its `self` link), which holds for the inits of new pid namespaces too.

use std::{
    ffi::OsStr,
    io::{self, Read, Write},
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::Path,
    sync::OnceLock,
};

use crate::{
    fd::{
        self, openat2, RESOLVE_BENEATH, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_NO_XDEV,
    },
    plan::mounts::{MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID},
    rootfs::mount::new_fs_tree,
    Error, Result,
};

/// The inode number of every procfs root (PROC_ROOT_INO).
const PROC_ROOT_INO: u64 = 1;
/// Lookups inside the handle: never out of it, never through a link, never onto a mount.
const STRICT: u64 = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;

/// A descriptor of the root of a procfs instance.
#[derive(Debug)]
pub struct ProcfsHandle {
    root: OwnedFd,
}

static HANDLE: OnceLock<ProcfsHandle> = OnceLock::new();

/// The process's handle: the one the launcher opened (and its clones inherited), or, in a
/// process that is not the launcher's, one opened now.
pub fn handle() -> Result<&'static ProcfsHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h);
    }
    let h = ProcfsHandle::open()?;
    Ok(HANDLE.get_or_init(|| h))
}

fn io_err(what: &str, e: io::Error) -> Error {
    Error::Init(format!("procfs: {what}: {e}"))
}

impl ProcfsHandle {
    /// A private procfs, or the host's /proc checked (see the module doc).
    pub fn open() -> Result<ProcfsHandle> {
        let private = new_fs_tree(
            "proc",
            &[("source", "proc")],
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        );
        let root = match private {
            Ok(fd) => fd,
            Err(_) => openat2(
                fd::cwd(),
                Path::new("/proc"),
                libc::O_PATH | libc::O_DIRECTORY,
                0,
                RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
            )
            .map_err(|e| io_err("open /proc", e))?,
        };
        let h = ProcfsHandle { root };
        h.check_root()?;
        Ok(h)
    }

    fn check_root(&self) -> Result<()> {
        let kind = fd::fs_type(self.root.as_fd()).map_err(|e| io_err("statfs", e))?;
        let st = fd::fstat(self.root.as_fd()).map_err(|e| io_err("stat", e))?;
        if kind != libc::PROC_SUPER_MAGIC || st.st_ino != PROC_ROOT_INO {
            return Err(Error::Init(format!(
                "procfs: /proc is not the root of a procfs (type {kind:#x}, inode {})",
                st.st_ino
            )));
        }
        Ok(())
    }

    /// The calling process's pid as this procfs names it (its `self` link).
    pub fn self_pid(&self) -> io::Result<i32> {
        let target = fd::readlinkat(self.root.as_fd(), OsStr::new("self"))?;
        target
            .to_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("procfs self is {}", target.display())))
    }

    /// Opens `rel` below /proc/<pid>/ (see the module doc for how it is looked up).
    pub fn open_pid(&self, pid: i32, rel: &str, flags: i32) -> io::Result<OwnedFd> {
        // openat2 refuses O_PATH with flags that mean nothing to it, O_NOCTTY included.
        let noctty = if flags & libc::O_PATH == 0 {
            libc::O_NOCTTY
        } else {
            0
        };
        openat2(
            self.root.as_fd(),
            Path::new(&format!("{pid}/{rel}")),
            flags | noctty,
            0,
            STRICT,
        )
    }

    /// Opens `rel` below the calling process's own /proc/<pid>/.
    pub fn open_self(&self, rel: &str, flags: i32) -> io::Result<OwnedFd> {
        self.open_pid(self.self_pid()?, rel, flags)
    }

    /// Opens `rel` below the procfs root (`sys`, `sys/kernel/...`).
    pub fn open_root(&self, rel: &str, flags: i32) -> io::Result<OwnedFd> {
        openat2(self.root.as_fd(), Path::new(rel), flags, 0, STRICT)
    }

    /// Reads /proc/self/`rel`.
    pub fn read_self(&self, rel: &str) -> io::Result<String> {
        let mut s = String::new();
        std::fs::File::from(self.open_self(rel, libc::O_RDONLY)?).read_to_string(&mut s)?;
        Ok(s)
    }

    /// Writes `data` to /proc/<pid>/`rel` in one write(2), as procfs files expect.
    pub fn write_pid(&self, pid: i32, rel: &str, data: &str) -> io::Result<()> {
        std::fs::File::from(self.open_pid(pid, rel, libc::O_WRONLY)?).write_all(data.as_bytes())
    }

    /// Writes `data` to /proc/self/`rel`.
    pub fn write_self(&self, rel: &str, data: &str) -> io::Result<()> {
        self.write_pid(self.self_pid()?, rel, data)
    }

    /// Whether /proc/self/`rel` exists.
    pub fn self_has(&self, rel: &str) -> bool {
        self.open_self(rel, libc::O_PATH).is_ok()
    }

    /// Opens `fd` (an O_PATH handle, say) again with `flags`, through /proc/self/fd/N of
    /// this procfs: the very object `fd` refers to, whatever paths now say. The magic link is
    /// followed on purpose; the directory holding it is reached strictly.
    pub fn reopen(&self, fd: BorrowedFd<'_>, flags: i32) -> io::Result<OwnedFd> {
        let dir = self.open_self("fd", libc::O_PATH | libc::O_DIRECTORY)?;
        let name = std::ffi::CString::new(fd.as_raw_fd().to_string()).expect("digits");
        // SAFETY: a valid directory descriptor and NUL-terminated name.
        let r = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                flags | libc::O_CLOEXEC | libc::O_NOCTTY,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(r) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handle_is_a_procfs_root_that_finds_ourselves() {
        let h = ProcfsHandle::open().unwrap();
        assert_eq!(h.self_pid().unwrap(), std::process::id() as i32);
        let status = h.read_self("status").unwrap();
        assert!(status.contains(&format!("\nPid:\t{}\n", std::process::id())));
        // Symlinks and escapes are refused, even procfs's own.
        assert!(h.open_pid(1, "../self/status", libc::O_RDONLY).is_err());
        assert!(
            h.open_root("mounts", libc::O_RDONLY).is_err(),
            "mounts is a symlink"
        );
        assert!(h.open_root("sys/kernel/ostype", libc::O_RDONLY).is_ok());
        assert!(h.self_has("status") && !h.self_has("no-such-file"));
        let f = std::fs::File::open("/proc/self/status").unwrap();
        let again = h.reopen(f.as_fd(), libc::O_RDONLY).unwrap();
        let (a, b) = (
            fd::fstat(f.as_fd()).unwrap(),
            fd::fstat(again.as_fd()).unwrap(),
        );
        assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));
    }
}
