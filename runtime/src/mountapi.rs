//! Thin wrappers over the fd-based file and mount syscalls the rootfs code relies on:
//! openat2(2), open_tree(2), move_mount(2) and mount_setattr(2). libc has the syscall
//! numbers; the argument structs are declared here because libc marks some non-exhaustive.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

use serde::{Deserialize, Serialize};

pub const RESOLVE_NO_XDEV: u64 = 0x01;
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub const RESOLVE_BENEATH: u64 = 0x08;
pub const RESOLVE_IN_ROOT: u64 = 0x10;

pub const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
pub const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
pub const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x0000_0008;
pub const MOUNT_ATTR_ATIME: u64 = 0x0000_0070;
pub const MOUNT_ATTR_RELATIME: u64 = 0x0000_0000;
pub const MOUNT_ATTR_NOATIME: u64 = 0x0000_0010;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x0000_0020;
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x0000_0080;
pub const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

const OPEN_TREE_CLONE: u32 = 1;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x04;
const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

#[repr(C)]
struct RawMountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Mount attributes to set and clear with mount_setattr(2) (`MOUNT_ATTR_*`). Changing the
/// atime mode needs `clear` to hold all of [`MOUNT_ATTR_ATIME`] and `set` one mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountAttr {
    pub set: u64,
    pub clear: u64,
}

impl MountAttr {
    pub fn is_empty(&self) -> bool {
        self.set == 0 && self.clear == 0
    }

    /// The attributes matching mount(2) flags (ro, nosuid, nodev, noexec, atime, nosymfollow).
    pub fn from_ms_flags(flags: u64) -> MountAttr {
        let mut a = MountAttr::default();
        for (ms, attr) in [
            (libc::MS_RDONLY, MOUNT_ATTR_RDONLY),
            (libc::MS_NOSUID, MOUNT_ATTR_NOSUID),
            (libc::MS_NODEV, MOUNT_ATTR_NODEV),
            (libc::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
            (libc::MS_NODIRATIME, MOUNT_ATTR_NODIRATIME),
            (libc::MS_NOSYMFOLLOW, MOUNT_ATTR_NOSYMFOLLOW),
        ] {
            if flags & ms != 0 {
                a.set |= attr;
            }
        }
        let atime = if flags & libc::MS_NOATIME != 0 {
            Some(MOUNT_ATTR_NOATIME)
        } else if flags & libc::MS_STRICTATIME != 0 {
            Some(MOUNT_ATTR_STRICTATIME)
        } else if flags & libc::MS_RELATIME != 0 {
            Some(MOUNT_ATTR_RELATIME)
        } else {
            None
        };
        if let Some(mode) = atime {
            a.set |= mode;
            a.clear |= MOUNT_ATTR_ATIME;
        }
        a
    }
}

fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn fd_result(r: libc::c_long) -> io::Result<OwnedFd> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

fn unit_result(r: libc::c_long) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
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

/// A detached copy of the mount (tree, with `recursive`) at `path`: open_tree(OPEN_TREE_CLONE).
pub fn clone_tree(path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let p = cstr(path)?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as u32;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    // SAFETY: valid NUL-terminated path.
    let r = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, p.as_ptr(), flags) };
    fd_result(r)
}

/// Attaches the detached mount `tree` onto the file or directory `target` refers to.
pub fn move_mount_to_fd(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
    let empty = c"";
    // SAFETY: two valid descriptors and empty paths, as the *_EMPTY_PATH flags require.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    unit_result(r)
}

/// mount_setattr(2) on the mount `fd` refers to (its whole tree with `recursive`).
pub fn set_mount_attr(fd: BorrowedFd<'_>, attr: MountAttr, recursive: bool) -> io::Result<()> {
    if attr.is_empty() {
        return Ok(());
    }
    mount_setattr(
        fd,
        &RawMountAttr {
            attr_set: attr.set,
            attr_clr: attr.clear,
            propagation: 0,
            userns_fd: 0,
        },
        recursive,
    )
}

/// mount_setattr(MOUNT_ATTR_IDMAP): the detached tree `fd` (its whole tree with `recursive`)
/// shows ids as mapped by the user namespace `userns`.
pub fn set_idmap(fd: BorrowedFd<'_>, userns: BorrowedFd<'_>, recursive: bool) -> io::Result<()> {
    mount_setattr(
        fd,
        &RawMountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns.as_raw_fd() as u64,
        },
        recursive,
    )
}

fn mount_setattr(fd: BorrowedFd<'_>, raw: &RawMountAttr, recursive: bool) -> io::Result<()> {
    let mut flags = libc::AT_EMPTY_PATH as u32;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    let empty = c"";
    // SAFETY: a valid descriptor, an empty path with AT_EMPTY_PATH and a sized mount_attr.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            flags,
            raw as *const RawMountAttr,
            std::mem::size_of::<RawMountAttr>(),
        )
    };
    unit_result(r)
}

/// The path through which mount(2) reaches exactly the object `fd` refers to: the magic link
/// cannot be redirected by renaming or symlinking anything in the rootfs.
pub fn proc_fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ms_flags_map_to_mount_attributes() {
        let a = MountAttr::from_ms_flags(libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC);
        assert_eq!(
            a,
            MountAttr {
                set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
                clear: 0
            }
        );
        let a = MountAttr::from_ms_flags(libc::MS_NOATIME | libc::MS_NODEV);
        assert_eq!(a.set, MOUNT_ATTR_NOATIME | MOUNT_ATTR_NODEV);
        assert_eq!(a.clear, MOUNT_ATTR_ATIME);
        let a = MountAttr::from_ms_flags(libc::MS_RELATIME);
        assert_eq!((a.set, a.clear), (MOUNT_ATTR_RELATIME, MOUNT_ATTR_ATIME));
        assert!(MountAttr::from_ms_flags(libc::MS_BIND | libc::MS_REC).is_empty());
    }

    #[test]
    fn openat2_in_root_stays_inside() {
        let dir = std::env::temp_dir().join(format!("shim-rs-openat2-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/marker"), "inside").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        let rootfd = std::fs::File::open(&root).unwrap();
        let fd = openat2(
            std::os::fd::AsFd::as_fd(&rootfd),
            Path::new("abs/marker"),
            libc::O_RDONLY,
            0,
            RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        )
        .unwrap();
        let content = std::io::read_to_string(std::fs::File::from(fd)).unwrap();
        assert_eq!(content, "inside");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
