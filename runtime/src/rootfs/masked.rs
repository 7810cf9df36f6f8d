//! Masked and read-only paths, applied once "/" is the container's root.
//!
//! The CVE-2025-31133 class: a masked file is covered by a bind of /dev/null, and a container
//! that gets /dev/null swapped for a symlink (an image, or a racing neighbour sharing a
//! volume mounted at /dev) would have the link's target bound there instead: a procfs file
//! the mask was meant to hide, or one the container could then write. So:
//! - /dev/null is opened without following any link and must be the character device 1:3
//!   (on whatever filesystem: that device is the null device wherever its node lives);
//! - each path is resolved without following a link (a link on the way is an error naming
//!   the field, not something to follow or to skip silently) and held as a descriptor;
//! - the mask is a detached mount (a bind of that /dev/null descriptor, or a new read-only
//!   tmpfs for a directory) attached to the held descriptor. Nothing is looked up twice.

use std::{
    io,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::{Component, Path, PathBuf},
};

use nix::{
    mount::MsFlags,
    sys::statvfs::{statvfs, FsFlags},
};

use super::mount::{clone_fd_tree, move_mount_to_fd, new_fs_tree, set_mount_attr};
use crate::{
    fd::{self, openat2, RESOLVE_BENEATH, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS},
    plan::mounts::{MountAttr, MOUNT_ATTR_RDONLY},
    Error, Result,
};

/// Lookups in the container: never through a link, never above its root.
const NO_LINKS: u64 = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;

/// The flags of an existing mount that a bind remount must keep (the kernel refuses to
/// clear nosuid/nodev/noexec that were locked by the source mount in some setups).
pub(crate) fn locked_flags(path: &Path) -> MsFlags {
    let Ok(st) = statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs_flag, ms_flag) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if f.contains(fs_flag) {
            out |= ms_flag;
        }
    }
    out
}

/// `path` (absolute, in the container) relative to its root, for RESOLVE_BENEATH.
fn relative(path: &Path) -> PathBuf {
    let rel: PathBuf = path
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .collect();
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    }
}

/// The container's root, "/" of the calling process.
fn open_root() -> Result<OwnedFd> {
    openat2(
        fd::cwd(),
        Path::new("/"),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        0,
    )
    .map_err(|e| Error::Init(format!("open the container's /: {e}")))
}

/// An O_PATH handle on `path` in the container, or None when it does not exist there.
fn resolve(root: BorrowedFd<'_>, field: &str, path: &Path) -> Result<Option<OwnedFd>> {
    match openat2(root, &relative(path), libc::O_PATH, 0, NO_LINKS) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(Error::invalid(
            field,
            format!(
                "{} is a symlink, or below one, in the container: it is never followed",
                path.display()
            ),
        )),
        Err(e) => Err(Error::Init(format!("{field}: {}: {e}", path.display()))),
    }
}

/// The container's /dev/null, if it really is the null device.
fn dev_null(root: BorrowedFd<'_>) -> Result<OwnedFd> {
    let refuse = |what: String| {
        Error::Init(format!(
            "linux.maskedPaths: the container's /dev/null {what}: refusing to mask with it"
        ))
    };
    let fd =
        openat2(root, Path::new("dev/null"), libc::O_PATH, 0, NO_LINKS).map_err(|e| {
            match e.raw_os_error() {
                Some(libc::ELOOP) => refuse("is a symlink, or below one".into()),
                _ => refuse(format!("cannot be opened: {e}")),
            }
        })?;
    let st = fd::fstat(fd.as_fd()).map_err(|e| refuse(format!("cannot be examined: {e}")))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR || st.st_rdev != libc::makedev(1, 3) {
        return Err(refuse(format!(
            "is not the character device 1:3 (mode {:o}, device {}:{})",
            st.st_mode,
            libc::major(st.st_rdev),
            libc::minor(st.st_rdev)
        )));
    }
    Ok(fd)
}

/// Covers each masked path: a file with /dev/null, a directory with an empty read-only
/// tmpfs. Paths that do not exist are skipped, as runc does.
pub(crate) fn mask_paths(paths: &[PathBuf]) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let root = open_root()?;
    let null = dev_null(root.as_fd())?;
    for (i, path) in paths.iter().enumerate() {
        let field = format!("linux.maskedPaths[{i}]");
        let Some(target) = resolve(root.as_fd(), &field, path)? else {
            continue;
        };
        let st = fd::fstat(target.as_fd())
            .map_err(|e| Error::Init(format!("{field}: {}: {e}", path.display())))?;
        let failed = |e: io::Error| Error::Init(format!("{field}: mask {}: {e}", path.display()));
        let mask = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            new_fs_tree(
                "tmpfs",
                &[("source", "tmpfs"), ("ro", "")],
                MOUNT_ATTR_RDONLY,
            )
        } else {
            clone_fd_tree(null.as_fd(), false)
        }
        .map_err(failed)?;
        move_mount_to_fd(mask.as_fd(), target.as_fd()).map_err(failed)?;
    }
    Ok(())
}

/// Makes each read-only path a read-only bind of itself (only the top mount: mounts below
/// keep their flags, as with runc). Paths that do not exist are skipped.
pub(crate) fn readonly_paths(paths: &[PathBuf]) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let root = open_root()?;
    let ro = MountAttr {
        set: MOUNT_ATTR_RDONLY,
        clear: 0,
    };
    for (i, path) in paths.iter().enumerate() {
        let field = format!("linux.readonlyPaths[{i}]");
        let Some(target) = resolve(root.as_fd(), &field, path)? else {
            continue;
        };
        let failed =
            |e: io::Error| Error::Init(format!("{field}: bind {} read-only: {e}", path.display()));
        let tree = clone_fd_tree(target.as_fd(), true).map_err(failed)?;
        set_mount_attr(tree.as_fd(), ro, false).map_err(failed)?;
        move_mount_to_fd(tree.as_fd(), target.as_fd()).map_err(failed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_become_relative_to_the_root() {
        assert_eq!(relative(Path::new("/proc/kcore")), Path::new("proc/kcore"));
        assert_eq!(relative(Path::new("/")), Path::new("."));
        assert_eq!(relative(Path::new("/./a/../b")), Path::new("a/../b"));
    }
}
