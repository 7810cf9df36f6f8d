//! /dev in the container: the spec's device nodes (made, or in a user namespace bound from
//! the host) and the links that are not nodes of their own.

use std::{
    ffi::OsStr,
    fs::File,
    io,
    os::{
        fd::{AsFd, BorrowedFd},
        unix::fs::OpenOptionsExt,
    },
    path::Path,
};

use super::{
    mount::{clone_fd_tree, move_mount_to_fd},
    resolve::{Create, RootDir},
};
use crate::{
    fd::{self, openat2, RESOLVE_NO_SYMLINKS},
    plan::{DeviceNode, LaunchPlan},
    Error, Result,
};

/// Creates a device node of the spec, replacing whatever the image has at that path (a
/// symlink is replaced, not followed). In a user namespace, binds the host's instead.
pub(crate) fn create_device(
    root: &RootDir,
    index: usize,
    d: &DeviceNode,
    in_userns: bool,
) -> Result<()> {
    let path = d.path.display();
    let err = |what: &str, e: std::io::Error| {
        Error::Init(format!("linux.devices[{index}] ({path}): {what}: {e}"))
    };
    let (dir, name) = root
        .create_parent(&d.path)
        .map_err(|e| Error::Init(format!("linux.devices[{index}]: {e}")))?;
    fd::unlink_if_exists(dir.as_fd(), &name).map_err(|e| err("remove what is there", e))?;
    if in_userns {
        return bind_host_device(dir.as_fd(), &name, d).map_err(|e| err("bind", e));
    }
    fd::mknodat(
        dir.as_fd(),
        &name,
        d.kind | d.mode,
        libc::makedev(d.major as u32, d.minor as u32),
    )
    .map_err(|e| err("mknod", e))?;
    fd::chown_chmod_at(dir.as_fd(), &name, d.uid, d.gid, d.mode)
        .map_err(|e| err("set owner and mode", e))
}

/// Devices that are not nodes of their own: the /dev/fd and stdio links, and ptmx.
pub(crate) fn dev_symlinks(root: &RootDir, plan: &LaunchPlan) -> Result<()> {
    let dev = root.create(Path::new("/dev"), Create::Dir)?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if plan
        .mounts
        .iter()
        .any(|m| m.destination == Path::new("/dev/pts"))
    {
        fd::unlink_if_exists(dev.as_fd(), "ptmx".as_ref())
            .map_err(|e| Error::Init(format!("/dev/ptmx: {e}")))?;
        links.push(("pts/ptmx", "ptmx"));
    }
    for (target, name) in links {
        fd::symlink_if_missing(Path::new(target), dev.as_fd(), name.as_ref())
            .map_err(|e| Error::Init(format!("/dev/{name}: {e}")))?;
    }
    Ok(())
}

/// Inside a user namespace mknod(2) is refused (and a node on a filesystem mounted there would
/// not open): the device is the host's node at the same path, bound onto an empty file `name`
/// made in `dir`, as runc does. The host node must be the device the spec asks for; its owner
/// and mode stay the host's.
pub fn bind_host_device(dir: BorrowedFd<'_>, name: &OsStr, d: &DeviceNode) -> io::Result<()> {
    // O_PATH: the host node is only looked at and bound, never opened as a device.
    let source = File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(&d.path)
        .map_err(|e| io::Error::new(e.kind(), format!("the host's {}: {e}", d.path.display())))?;
    let st = fd::fstat(source.as_fd())?;
    let want = libc::makedev(d.major as u32, d.minor as u32);
    if st.st_mode & libc::S_IFMT != d.kind || (d.kind != libc::S_IFIFO && st.st_rdev != want) {
        return Err(io::Error::other(format!(
            "devices are bound from the host in a user namespace, and the host's {} is not \
             device {}:{}",
            d.path.display(),
            d.major,
            d.minor
        )));
    }
    fd::mknodat(dir, name, libc::S_IFREG, 0)?;
    let target = openat2(dir, Path::new(name), libc::O_PATH, 0, RESOLVE_NO_SYMLINKS)?;
    let tree = clone_fd_tree(source.as_fd(), false)?;
    move_mount_to_fd(tree.as_fd(), target.as_fd())
}
