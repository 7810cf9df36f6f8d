//! The binary every container process runs until its own execve, sealed against writes.
//!
//! The CVE-2019-5736 class: a container's first process and every exec are clones of the
//! launcher, so until their final execve their /proc/self/exe is the binary they run. Were
//! that the host's file on a writable mount, an image whose entrypoint is /proc/self/exe (or
//! a `#!/proc/self/exe` script) would run it with the image's own dynamic loader, and that
//! code, or a neighbour with ptrace rights through /proc/<pid>/exe, could keep a handle on
//! the host binary and write it as soon as nothing executes it any more.
//!
//! So the launcher does not run from the host's path: the daemon executes it from a
//! read-only view of the binary that no path reaches, and the launcher and every process it
//! clones have that view as their executable. The view is, by preference:
//! - a read-only bind mount of the binary itself (open_tree + mount_setattr), detached: once
//!   the last descriptor of it is closed, the kernel dissolves it, so nothing can attach it,
//!   clone it or change its flags any more, and the file's page cache is the host binary's
//!   (no copy: every shim on the machine shares the same pages);
//! - where the kernel cannot (before Linux 5.12, or without the privilege to make mounts),
//!   a sealed copy in memory (memfd with F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK |
//!   F_SEAL_SEAL), at the cost of the binary's size in memory per shim.
//!
//! Either way the container can execute the view (which runs a shim that can do nothing to
//! the host), and never open it for writing: EROFS, or EPERM on a sealed memfd.

use std::{
    ffi::{CString, OsString},
    fs::File,
    io,
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::{OsStrExt, OsStringExt},
        unix::fs::OpenOptionsExt,
    },
};

use crate::{
    plan::mounts::{MountAttr, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY},
    rootfs::mount::{clone_fd_tree, set_mount_attr},
};

/// How the sealed view was made, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seal {
    /// A detached, read-only bind mount of the binary.
    ReadOnlyMount,
    /// A sealed memfd copy (the fallback).
    MemfdCopy,
}

/// A descriptor of the running binary, made unwritable; execute it with [`SealedExe::exec`].
pub struct SealedExe {
    fd: OwnedFd,
    pub seal: Seal,
}

impl SealedExe {
    /// Seals the binary the calling process runs (/proc/self/exe).
    pub fn of_self() -> io::Result<SealedExe> {
        let exe = File::options()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
            .open("/proc/self/exe")?;
        match read_only_mount(&exe) {
            Ok(fd) => Ok(SealedExe {
                fd,
                seal: Seal::ReadOnlyMount,
            }),
            Err(mount_err) => memfd_copy()
                .map(|fd| SealedExe {
                    fd,
                    seal: Seal::MemfdCopy,
                })
                .map_err(|e| {
                    io::Error::other(format!(
                        "a read-only mount of the binary failed ({mount_err}), and so did a \
                         sealed copy: {e}"
                    ))
                }),
        }
    }
}

impl AsRawFd for SealedExe {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// Executes the sealed binary `fd` refers to (a [`SealedExe`]'s, or a copy of it) with
/// execveat and AT_EMPTY_PATH; only returns on failure. Allocates nothing: fit for the child
/// of a fork.
pub fn exec_fd(fd: std::os::fd::RawFd, args: &ExecArgv) -> io::Error {
    // SAFETY: NULL-terminated arrays of NUL-terminated strings that `args` keeps alive; an
    // empty path with AT_EMPTY_PATH names the descriptor itself.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd,
            c"".as_ptr(),
            args.argv_ptrs.as_ptr(),
            args.envp_ptrs.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    io::Error::last_os_error()
}

/// A detached, read-only, nosuid, nodev bind of the binary `exe` refers to.
fn read_only_mount(exe: &File) -> io::Result<OwnedFd> {
    let tree = clone_fd_tree(exe.as_fd(), false)?;
    set_mount_attr(
        tree.as_fd(),
        MountAttr {
            set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            clear: 0,
        },
        false,
    )?;
    Ok(tree)
}

/// Linux 6.3: an executable memfd must say so where vm.memfd_noexec asks for it.
const MFD_EXEC: libc::c_uint = 0x10;

/// A sealed memfd copy of /proc/self/exe.
fn memfd_copy() -> io::Result<OwnedFd> {
    let name = c"containerd-shim-rs-v1";
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: a NUL-terminated name; the result is a new descriptor or an error.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), flags | MFD_EXEC) };
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // Before 6.3 MFD_EXEC is unknown (and every memfd executable).
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nothing else owns.
    let mut copy = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    io::copy(&mut File::open("/proc/self/exe")?, &mut copy)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our memfd with an integer argument.
    if unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(copy.into())
}

/// argv and envp for execve, built (allocated) before a fork.
pub struct ExecArgv {
    _strings: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
}

impl ExecArgv {
    pub fn new(
        argv: impl IntoIterator<Item = OsString>,
        envp: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> io::Result<ExecArgv> {
        let c = |b: Vec<u8>| {
            CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"))
        };
        let argv: Vec<CString> = argv
            .into_iter()
            .map(|a| c(a.into_vec()))
            .collect::<io::Result<_>>()?;
        let envp: Vec<CString> = envp
            .into_iter()
            .map(|(k, v)| {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                c(kv)
            })
            .collect::<io::Result<_>>()?;
        // A CString's bytes stay where they are when the CString moves.
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let (argv_ptrs, envp_ptrs) = (ptrs(&argv), ptrs(&envp));
        Ok(ExecArgv {
            _strings: argv.into_iter().chain(envp).collect(),
            argv_ptrs,
            envp_ptrs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::mounts::MOUNT_ATTR_RDONLY;

    fn reopen(fd: &impl AsRawFd, flags: i32) -> io::Result<File> {
        File::options()
            .read(flags & libc::O_ACCMODE == libc::O_RDONLY)
            .write(flags & libc::O_ACCMODE == libc::O_WRONLY)
            .custom_flags(flags & !libc::O_ACCMODE)
            .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
    }

    /// What a container holding the view (an O_PATH handle reached through
    /// /proc/<pid>/exe) can do once the last descriptor of the detached mount is closed:
    /// not write the file, not make the mount writable, not clone it into a writable one.
    #[test]
    fn the_read_only_view_cannot_be_written_or_unwrapped() {
        let dir = std::env::temp_dir().join(format!("shim-rs-sealed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("binary");
        std::fs::write(&bin, b"not really a binary").unwrap();
        let exe = File::options()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(&bin)
            .unwrap();
        let tree = read_only_mount(&exe).unwrap();
        // What /proc/<pid>/exe of a process executing the view hands out.
        let view = reopen(&tree, libc::O_PATH).unwrap();
        drop(tree); // the detached mount dissolves: only `view` refers to it now
        let e = reopen(&view, libc::O_WRONLY).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
        let clear = MountAttr {
            set: 0,
            clear: MOUNT_ATTR_RDONLY,
        };
        assert!(set_mount_attr(view.as_fd(), clear, false).is_err());
        assert!(clone_fd_tree(view.as_fd(), false).is_err());
        let e = reopen(&view, libc::O_WRONLY).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
        // The same file through the host's path stays writable: only the view is sealed.
        std::fs::write(&bin, b"still the host's file").unwrap();
        assert_eq!(
            std::io::read_to_string(reopen(&view, libc::O_RDONLY).unwrap()).unwrap(),
            "still the host's file"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
