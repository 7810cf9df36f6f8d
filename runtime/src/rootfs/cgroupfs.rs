//! Mounting the container's cgroup filesystem (planned by [`crate::plan::cgroupfs`]).

use std::{os::fd::AsFd, path::Path};

use nix::mount::MsFlags;

use super::{
    mount::{bind_onto, proc_fd_path, set_mount_attr, set_propagation, BIND_ATTR_FLAGS},
    resolve::{Create, RootDir},
};
use crate::{
    fd::{self, openat2, RESOLVE_BENEATH, RESOLVE_NO_SYMLINKS, RESOLVE_NO_XDEV},
    plan::{
        cgroupfs::CgroupFs,
        mounts::{MountAttr, MOUNT_ATTR_RDONLY},
        MountPlan,
    },
    Error, Result,
};

pub fn mount(root: &RootDir, field: &str, m: &MountPlan, cg: &CgroupFs) -> Result<()> {
    let what = format!("{field} ({} type cgroup)", m.destination.display());
    let err = |step: &str, e: std::io::Error| Error::Init(format!("{what}: {step}: {e}"));
    // ro, nosuid, ... of the spec mount apply to every hierarchy bind.
    let attr = MountAttr::from_ms_flags(m.flags & BIND_ATTR_FLAGS);
    let target = root
        .create(&m.destination, Create::Dir)
        .map_err(|e| Error::Init(format!("{field}: {e}")))?;
    if !cg.tmpfs {
        let b = cg
            .binds
            .first()
            .ok_or_else(|| Error::Init(format!("{what}: no hierarchy planned")))?;
        bind_onto(&b.source, target.as_fd(), false, attr, m.recursive)
            .map_err(|e| err(&format!("bind {}", b.source.display()), e))?;
        return set_propagation(root, field, &m.destination, &m.propagation);
    }

    // Always nosuid, nodev and noexec, as runc mounts it, whatever the spec mount's options.
    let tmpfs_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    nix::mount::mount(
        Some("tmpfs"),
        proc_fd_path(target.as_fd()).as_str(),
        Some("tmpfs"),
        tmpfs_flags,
        Some("mode=755"),
    )
    .map_err(|e| Error::sys(format!("{what}: mount tmpfs"), e))?;
    // The tmpfs is new and only we write to it; still, never follow anything inside it.
    let dir = root
        .open_in(&m.destination, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| err("open the new tmpfs", e))?;
    for b in &cg.binds {
        fd::mkdirat(dir.as_fd(), b.name.as_ref(), 0o755)
            .map_err(|e| err(&format!("mkdir {}", b.name), e))?;
        let sub = openat2(
            dir.as_fd(),
            Path::new(&b.name),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
            RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV,
        )
        .map_err(|e| err(&format!("open {}", b.name), e))?;
        bind_onto(&b.source, sub.as_fd(), false, attr, MountAttr::default())
            .map_err(|e| err(&format!("bind {} to {}", b.source.display(), b.name), e))?;
        for alias in &b.aliases {
            fd::symlink_if_missing(Path::new(&b.name), dir.as_fd(), alias.as_ref())
                .map_err(|e| err(&format!("symlink {alias}"), e))?;
        }
    }
    if m.flags & libc::MS_RDONLY != 0 {
        let ro = MountAttr {
            set: MOUNT_ATTR_RDONLY,
            clear: 0,
        };
        set_mount_attr(dir.as_fd(), ro, false).map_err(|e| err("make the tmpfs read-only", e))?;
    }
    set_mount_attr(dir.as_fd(), m.recursive, true)
        .map_err(|e| err("set recursive mount attributes", e))?;
    set_propagation(root, field, &m.destination, &m.propagation)
}
