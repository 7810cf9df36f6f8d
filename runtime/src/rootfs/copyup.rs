//! `tmpcopyup`: copying what a directory held into the tmpfs mounted over it.
//!
//! Everything goes through descriptors: entries are looked at with AT_SYMLINK_NOFOLLOW and
//! opened with O_NOFOLLOW, so a symlink in the image is copied as a symlink, never followed.

use std::{
    ffi::{CStr, CString},
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

/// Directories deeper than this are refused rather than risk the stack.
const MAX_DEPTH: usize = 128;

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: valid NUL-terminated name; the new descriptor is owned below.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            mode,
        )
    })?;
    // SAFETY: fd is new and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn lstatat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid name and out-parameter.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// The names in directory `dir` (without `.` and `..`).
fn entries(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    // SAFETY: dup of a valid descriptor; fdopendir takes ownership of the copy.
    let copy = check(unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: copy is a directory descriptor we own.
    let d = unsafe { libc::fdopendir(copy) };
    if d.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so the copy is still ours to close.
        unsafe { libc::close(copy) };
        return Err(e);
    }
    // SAFETY: rewind so a descriptor that was read before starts at the beginning.
    unsafe { libc::rewinddir(d) };
    let mut names = Vec::new();
    loop {
        // SAFETY: d is a valid DIR*; errno distinguishes the end from an error.
        unsafe { *libc::__errno_location() = 0 };
        let ent = unsafe { libc::readdir64(d) };
        if ent.is_null() {
            let err = io::Error::last_os_error();
            // SAFETY: d is valid and closed exactly once.
            unsafe { libc::closedir(d) };
            if err.raw_os_error().unwrap_or(0) != 0 {
                return Err(err);
            }
            return Ok(names);
        }
        // SAFETY: d_name is NUL-terminated.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
}

/// Gives `name` in `dir` the owner, mode and times of `st`.
fn copy_metadata(dir: BorrowedFd<'_>, name: &CStr, st: &libc::stat) -> io::Result<()> {
    let is_link = st.st_mode & libc::S_IFMT == libc::S_IFLNK;
    // SAFETY: valid names; AT_SYMLINK_NOFOLLOW acts on the entry itself.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.st_uid,
            st.st_gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    if !is_link {
        // SAFETY: the entry was just created by us in a fresh tmpfs and is not a symlink.
        check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), st.st_mode & 0o7777, 0) })?;
    }
    let times = [
        libc::timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec,
        },
        libc::timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec,
        },
    ];
    // SAFETY: valid name and two timespecs.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// Copies the content of directory `from` into the (empty) directory `to`.
pub fn copy_dir(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> io::Result<()> {
    copy_dir_at(from, to, 0)
}

fn copy_dir_at(from: BorrowedFd<'_>, to: BorrowedFd<'_>, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other("directory tree too deep to copy"));
    }
    for name in entries(from)? {
        let st = lstatat(from, &name)?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                // SAFETY: valid name.
                check(unsafe { libc::mkdirat(to.as_raw_fd(), name.as_ptr(), 0o700) })?;
                let src = openat(from, &name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                let dst = openat(to, &name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                copy_dir_at(
                    std::os::fd::AsFd::as_fd(&src),
                    std::os::fd::AsFd::as_fd(&dst),
                    depth + 1,
                )?;
            }
            libc::S_IFREG => {
                let src = openat(from, &name, libc::O_RDONLY, 0)?;
                let dst = openat(
                    to,
                    &name,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                    0o600,
                )?;
                io::copy(&mut std::fs::File::from(src), &mut std::fs::File::from(dst))?;
            }
            libc::S_IFLNK => {
                let mut buf = vec![0u8; libc::PATH_MAX as usize];
                // SAFETY: valid name and buffer.
                let n = unsafe {
                    libc::readlinkat(
                        from.as_raw_fd(),
                        name.as_ptr(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                    )
                };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                buf.truncate(n as usize);
                let target = CString::new(buf).map_err(io::Error::other)?;
                // SAFETY: valid strings.
                check(unsafe { libc::symlinkat(target.as_ptr(), to.as_raw_fd(), name.as_ptr()) })?;
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                // SAFETY: valid name; mode and device come from the source entry.
                check(unsafe {
                    libc::mknodat(to.as_raw_fd(), name.as_ptr(), st.st_mode, st.st_rdev)
                })?;
            }
            _ => continue, // sockets are not copied
        }
        copy_metadata(to, &name, &st)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::{fd::AsFd, unix::fs::PermissionsExt};

    #[test]
    fn copies_files_dirs_and_symlinks_without_following_them() {
        let base = std::env::temp_dir().join(format!("shim-rs-copyup-{}", std::process::id()));
        let (from, to) = (base.join("from"), base.join("to"));
        std::fs::create_dir_all(from.join("sub/deeper")).unwrap();
        std::fs::create_dir_all(&to).unwrap();
        std::fs::write(from.join("a"), "alpha").unwrap();
        std::fs::set_permissions(from.join("a"), std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::write(from.join("sub/deeper/b"), "beta").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", from.join("link")).unwrap();
        let f = std::fs::File::open(&from).unwrap();
        let t = std::fs::File::open(&to).unwrap();
        copy_dir(f.as_fd(), t.as_fd()).unwrap();
        assert_eq!(std::fs::read_to_string(to.join("a")).unwrap(), "alpha");
        assert_eq!(
            std::fs::metadata(to.join("a"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o640
        );
        assert_eq!(
            std::fs::read_to_string(to.join("sub/deeper/b")).unwrap(),
            "beta"
        );
        assert_eq!(
            std::fs::read_link(to.join("link")).unwrap(),
            std::path::PathBuf::from("/etc/passwd")
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
