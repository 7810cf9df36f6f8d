//! Descriptor-based file primitives: openat2(2) and the *at(2) calls the runtime builds on.
//! Paths a container may control are only ever resolved through these, relative to a
//! descriptor, with the resolution rules the caller chooses.

use std::{
    ffi::{CString, OsStr},
    io,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

/// openat2(2) `resolve` flags.
pub const RESOLVE_NO_XDEV: u64 = 0x01;
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub const RESOLVE_BENEATH: u64 = 0x08;
pub const RESOLVE_IN_ROOT: u64 = 0x10;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

pub(crate) fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

pub(crate) fn fd_result(r: libc::c_long) -> io::Result<OwnedFd> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// openat2(2) relative to `dir`; `O_CLOEXEC` is always added.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let p = cstr(path)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: mode as u64,
        resolve,
    };
    loop {
        // SAFETY: valid NUL-terminated path and a correctly sized open_how.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                p.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        match fd_result(r) {
            // The kernel asks for a retry when a rename raced with a RESOLVE_IN_ROOT lookup.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
            other => return other,
        }
    }
}

/// The working directory as a "descriptor" for the *at calls.
pub fn cwd() -> BorrowedFd<'static> {
    // SAFETY: AT_FDCWD is a valid "descriptor" for the *at calls for the whole process life.
    unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) }
}

fn name_c(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// readlinkat on `name` in `dir` (EINVAL: not a symlink).
pub fn readlinkat(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<PathBuf> {
    let c = name_c(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: valid path and a buffer of the given size.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(OsStr::from_bytes(&buf)))
}

pub fn mkdirat(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let c = name_c(name)?;
    // SAFETY: valid path.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) })
}

pub fn create_file(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let c = name_c(name)?;
    // SAFETY: valid path; O_NOFOLLOW|O_EXCL never follows or reuses an existing entry.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_WRONLY | libc::O_CLOEXEC,
            0o644,
        )
    };
    check(fd)?;
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    Ok(())
}

/// unlinkat of a non-directory; a missing entry is fine.
pub fn unlink_if_exists(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let c = name_c(name)?;
    // SAFETY: valid path.
    match check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) }) {
        Err(e) if errno(&e) == libc::ENOENT => Ok(()),
        other => other,
    }
}

/// symlinkat `name` -> `target` in `dir`; an existing entry of that name is left alone.
pub fn symlink_if_missing(target: &Path, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let t = name_c(target.as_os_str())?;
    let c = name_c(name)?;
    // SAFETY: valid paths.
    match check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) }) {
        Err(e) if errno(&e) == libc::EEXIST => Ok(()),
        other => other,
    }
}

/// The filesystem type (statfs f_type magic) of what `fd` refers to.
pub fn fs_type(fd: BorrowedFd<'_>) -> io::Result<i64> {
    // SAFETY: zeroed statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and out-parameter.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

/// fstat of what `fd` refers to (works on O_PATH descriptors).
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let empty = c"";
    // SAFETY: valid descriptor, empty path with AT_EMPTY_PATH.
    check(unsafe {
        libc::fstatat(
            fd.as_raw_fd(),
            empty.as_ptr(),
            &mut st,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// mknodat(2): `mode` holds the file type bits and the permissions.
pub fn mknodat(dir: BorrowedFd<'_>, name: &OsStr, mode: u32, dev: libc::dev_t) -> io::Result<()> {
    let c = name_c(name)?;
    // SAFETY: valid path.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), c.as_ptr(), mode, dev) })
}

/// Owner, then exact mode (chown clears set-id bits, and mknod/mkdir honour the umask).
pub fn chown_chmod_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    uid: u32,
    gid: u32,
    mode: u32,
) -> io::Result<()> {
    let c = name_c(name)?;
    // SAFETY: valid path; AT_SYMLINK_NOFOLLOW acts on the entry itself.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            c.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: valid path. The entry was just created by the init, the only process that
    // can see this rootfs yet.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), c.as_ptr(), mode & 0o7777, 0) })
}

/// Between a fork and an exec: puts `sources[i]` at descriptor `first + i`, without
/// close-on-exec, so exactly these cross the exec; a negative source closes that number
/// instead. Each source is first copied above every target, so that no dup2 overwrites
/// another's source. Only async-signal-safe calls, no allocation. On failure, the errno.
pub fn place_for_exec<const N: usize>(sources: [i32; N], first: i32) -> Result<(), i32> {
    let above = first + N as i32;
    let last_errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EBADF)
    };
    let mut high = [-1; N];
    for (h, s) in high.iter_mut().zip(sources) {
        if s >= 0 {
            // SAFETY: fcntl with an integer argument on a descriptor of ours.
            *h = unsafe { libc::fcntl(s, libc::F_DUPFD_CLOEXEC, above) };
            if *h < 0 {
                return Err(last_errno());
            }
        }
    }
    for (target, h) in (first..).zip(high) {
        // SAFETY: dup2 and close on descriptors of our own process.
        let r = unsafe {
            if h < 0 {
                libc::close(target);
                0
            } else {
                libc::dup2(h, target)
            }
        };
        if r < 0 {
            return Err(last_errno());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn openat2_in_root_stays_inside() {
        let dir = std::env::temp_dir().join(format!("shim-rs-openat2-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/marker"), "inside").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        let rootfd = std::fs::File::open(&root).unwrap();
        let fd = openat2(
            rootfd.as_fd(),
            Path::new("abs/marker"),
            libc::O_RDONLY,
            0,
            RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        )
        .unwrap();
        let content = std::io::read_to_string(std::fs::File::from(fd)).unwrap();
        assert_eq!(content, "inside");
        let e = openat2(
            rootfd.as_fd(),
            Path::new("abs/marker"),
            libc::O_RDONLY,
            0,
            RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS,
        )
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
