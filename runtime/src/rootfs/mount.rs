//! Mount primitives, all through descriptors: open_tree(2), move_mount(2), mount_setattr(2),
//! fsopen(2)/fsmount(2), and mount(2) where a target can only be named by path (through the
//! target's own /proc/self/fd magic link, before pivot_root).
//!
//! A mount is made detached, given its attributes while nothing can see it, and attached to
//! a descriptor that was resolved beforehand: a path the container swaps afterwards cannot
//! redirect it. libc has the syscall numbers; the argument structs are declared here because
//! libc marks some non-exhaustive.

use std::{
    ffi::CString,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    path::Path,
};

use nix::mount::{mount, MsFlags};

use super::resolve::RootDir;
use crate::{
    fd::{cstr, fd_result},
    plan::mounts::{MountAttr, MOUNT_ATTR_IDMAP},
    Error, Result,
};

const OPEN_TREE_CLONE: u32 = 1;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x04;
const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;
const FSOPEN_CLOEXEC: u32 = 0x01;
const FSCONFIG_SET_FLAG: u32 = 0;
const FSCONFIG_SET_STRING: u32 = 1;
const FSCONFIG_CMD_CREATE: u32 = 6;
const FSMOUNT_CLOEXEC: u32 = 0x01;

/// The mount(2) flags a bind gets as mount attributes of its detached copy (ro, nosuid, ...).
pub(crate) const BIND_ATTR_FLAGS: u64 = libc::MS_RDONLY
    | libc::MS_NOSUID
    | libc::MS_NODEV
    | libc::MS_NOEXEC
    | libc::MS_NOATIME
    | libc::MS_NODIRATIME
    | libc::MS_RELATIME
    | libc::MS_STRICTATIME
    | libc::MS_NOSYMFOLLOW;

#[repr(C)]
struct RawMountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn unit_result(r: libc::c_long) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A detached copy of the mount (tree, with `recursive`) at `path`: open_tree(OPEN_TREE_CLONE).
pub fn clone_tree(path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    open_tree(libc::AT_FDCWD, &cstr(path)?, recursive, 0)
}

/// A detached copy of the mount at what `fd` refers to (a bind of exactly that object,
/// however it was reached; `fd` may be an O_PATH descriptor).
pub fn clone_fd_tree(fd: BorrowedFd<'_>, recursive: bool) -> io::Result<OwnedFd> {
    open_tree(fd.as_raw_fd(), c"", recursive, libc::AT_EMPTY_PATH as u32)
}

fn open_tree(
    dir: libc::c_int,
    path: &std::ffi::CStr,
    recursive: bool,
    extra: u32,
) -> io::Result<OwnedFd> {
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | extra;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    // SAFETY: valid NUL-terminated path; the result is a new descriptor or an error.
    fd_result(unsafe { libc::syscall(libc::SYS_open_tree, dir, path.as_ptr(), flags) })
}

/// A new, detached mount of filesystem `fstype` with the string `options` (fsconfig keys and
/// values, "source" included; an empty value sets a flag such as "ro") and mount attributes
/// `attr`: fsopen(2) + fsmount(2). Nothing is resolved by path, and the mount is visible
/// nowhere until it is attached.
pub fn new_fs_tree(fstype: &str, options: &[(&str, &str)], attr: u64) -> io::Result<OwnedFd> {
    let name = CString::new(fstype).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a NUL-terminated filesystem name.
    let ctx = fd_result(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) })?;
    for (key, value) in options {
        let (k, v) = (
            CString::new(*key).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
            CString::new(*value).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
        );
        let (cmd, value) = match value.is_empty() {
            true => (FSCONFIG_SET_FLAG, std::ptr::null()),
            false => (FSCONFIG_SET_STRING, v.as_ptr()),
        };
        // SAFETY: a valid fs context, a NUL-terminated key and value (or none for a flag).
        unit_result(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                ctx.as_raw_fd(),
                cmd,
                k.as_ptr(),
                value,
                0,
            )
        })?;
    }
    // SAFETY: as above, no key or value.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })?;
    // SAFETY: a created fs context; the result is a new descriptor or an error.
    fd_result(unsafe { libc::syscall(libc::SYS_fsmount, ctx.as_raw_fd(), FSMOUNT_CLOEXEC, attr) })
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
/// cannot be redirected by renaming or symlinking anything in the rootfs. Only for the
/// init's setup before pivot_root, in its own new mount namespace, whose /proc is still the
/// host's.
pub fn proc_fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// mount(2) that names its target by descriptor (see [`proc_fd_path`]).
pub(crate) fn mount_at(
    source: Option<&Path>,
    target: BorrowedFd<'_>,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> nix::Result<()> {
    mount(source, proc_fd_path(target).as_str(), fstype, flags, data)
}

/// Binds (a copy of) the mount tree at host path `source` onto `target`. The copy gets its
/// attributes while still detached, so it is never visible without them.
pub(crate) fn bind_onto(
    source: &Path,
    target: BorrowedFd<'_>,
    recursive_tree: bool,
    top: MountAttr,
    recursive: MountAttr,
) -> io::Result<()> {
    let tree = clone_tree(source, recursive_tree)?;
    attach_tree(&tree, target, top, recursive)
}

/// Gives the detached `tree` its attributes (`top` on its root mount, `recursive` on all of
/// it) and attaches it onto `target`.
pub(crate) fn attach_tree(
    tree: &OwnedFd,
    target: BorrowedFd<'_>,
    top: MountAttr,
    recursive: MountAttr,
) -> io::Result<()> {
    set_mount_attr(tree.as_fd(), top, false)?;
    set_mount_attr(tree.as_fd(), recursive, true)?;
    move_mount_to_fd(tree.as_fd(), target)
}

/// Applies propagation changes to the mount now at `dest` (inside `root`).
pub(crate) fn set_propagation(
    root: &RootDir,
    field: &str,
    dest: &Path,
    propagation: &[u64],
) -> Result<()> {
    if propagation.is_empty() {
        return Ok(());
    }
    let mounted = root
        .resolve(dest)
        .map_err(|e| Error::Init(format!("{field}: {e}")))?;
    for p in propagation {
        mount_at(
            None,
            mounted.as_fd(),
            None,
            MsFlags::from_bits_retain(*p),
            None,
        )
        .map_err(|e| Error::sys(format!("{field} ({}): set propagation", dest.display()), e))?;
    }
    Ok(())
}
