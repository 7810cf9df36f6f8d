//! Masked and read-only paths, applied after the container's root is in place.

use std::{fs, path::Path};

use nix::{
    mount::{mount, MsFlags},
    sys::statvfs::{statvfs, FsFlags},
};

use crate::{Error, Result};

const NONE: Option<&str> = None;

fn sys<T>(step: impl FnOnce() -> String, r: nix::Result<T>) -> Result<T> {
    r.map_err(|e| Error::sys(step(), e))
}

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

pub(crate) fn mask(path: &Path) -> Result<()> {
    let Ok(md) = fs::metadata(path) else {
        return Ok(());
    };
    let r = if md.is_dir() {
        mount(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_RDONLY, NONE)
    } else {
        mount(Some("/dev/null"), path, NONE, MsFlags::MS_BIND, NONE)
    };
    sys(|| format!("mask {}", path.display()), r)
}

pub(crate) fn make_readonly(path: &Path) -> Result<()> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    let p = path.display();
    sys(
        || format!("bind readonly path {p}"),
        mount(
            Some(path),
            path,
            NONE,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            NONE,
        ),
    )?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked_flags(path);
    sys(
        || format!("remount readonly path {p}"),
        mount(NONE, path, NONE, flags, NONE),
    )
}
