//! What the shim persists about a container in its bundle, so that the `delete` action can
//! clean up after a shim that died (kill what is left, free the cgroup, unmount the rootfs).

use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags};
use serde::{Deserialize, Serialize};

use crate::{
    cgroups::{self, CgroupPlan},
    Error, Result,
};

const STATE_FILE: &str = "shim-rs-state.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    pub pid: i32,
    pub rootfs: PathBuf,
    pub cgroup: CgroupPlan,
}

impl ContainerState {
    pub fn save(&self, bundle: &Path) -> Result<()> {
        let path = bundle.join(STATE_FILE);
        let tmp = bundle.join(format!(".{STATE_FILE}.tmp"));
        let bytes = serde_json::to_vec(self).map_err(|e| Error::Other(e.to_string()))?;
        std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }

    pub fn load(bundle: &Path) -> Result<Option<ContainerState>> {
        let path = bundle.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => ContainerState::parse(&bytes, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// The state file's content; `path` names it in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<ContainerState> {
        serde_json::from_slice(bytes).map_err(|e| Error::Other(format!("{}: {e}", path.display())))
    }

    pub fn remove(bundle: &Path) -> Result<()> {
        let path = bundle.join(STATE_FILE);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
            _ => Ok(()),
        }
    }
}

/// Detaches the rootfs from the mount tree at once, but leaves the filesystem's teardown
/// (overlayfs syncs its upper directory then: ~10 ms) to whoever drops the returned
/// handle. The shim drops it on another thread, so Delete does not wait for the sync;
/// nothing stays visible on the host either way.
pub fn detach_rootfs(rootfs: &Path) -> Result<Option<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let hold = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(rootfs)
        .ok();
    unmount_rootfs(rootfs)?;
    Ok(hold)
}

/// Unmounts the rootfs (every layer stacked on it). Not being mounted is fine.
pub fn unmount_rootfs(rootfs: &Path) -> Result<()> {
    loop {
        match umount2(rootfs, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => return Ok(()),
            Err(e) => return Err(Error::sys(format!("unmount {}", rootfs.display()), e)),
        }
    }
}

/// Removes everything a container left: processes and cgroups, the rootfs mount and the
/// state file. Safe to call any number of times. A state file that cannot be read (corrupt,
/// truncated by a full disk) does not stop the rest: the rootfs is still unmounted and the
/// file removed; only the cgroup, which it alone names, cannot be cleaned (the error says so).
/// The cgroup of the container of `bundle` as its config.json names it (the container's id
/// is the bundle directory's name, as containerd lays bundles out).
fn cgroup_from_config(bundle: &Path) -> Result<CgroupPlan> {
    let id = bundle
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Other(format!("bundle {} has no id", bundle.display())))?;
    let spec = crate::spec::load(bundle)?;
    let plan = crate::plan::build(&spec, bundle, id, &cgroups::Layout::host_from_here())?;
    Ok(plan.cgroup)
}

pub fn destroy(bundle: &Path) -> Result<Option<ContainerState>> {
    let state = ContainerState::load(bundle);
    let mut first_error = None;
    if let Ok(Some(s)) = &state {
        if let Err(e) = cgroups::destroy(&s.cgroup) {
            first_error.get_or_insert(e);
        }
        if let Err(e) = unmount_rootfs(&s.rootfs) {
            first_error.get_or_insert(e);
        }
    }
    let mut fallback = None;
    if state.is_err() {
        // An unreadable state file (corrupt, truncated): the cgroup the bundle's
        // config.json names is the container's (Create refuses a populated one), and
        // killing what is in it is what the lost state would have led to.
        fallback = Some(cgroup_from_config(bundle).and_then(|plan| cgroups::destroy(&plan)));
    }
    if let Err(e) = unmount_rootfs(&bundle.join("rootfs")) {
        first_error.get_or_insert(e);
    }
    ContainerState::remove(bundle)?;
    match (state, first_error) {
        (Err(e), _) => Err(Error::Other(match fallback.unwrap_or(Ok(())) {
            Ok(()) => format!(
                "{e}: the rootfs was unmounted, the state file removed and the cgroup named \
                 by config.json emptied and removed"
            ),
            Err(f) => format!(
                "{e}: the rootfs was unmounted and the state file removed, but the container's \
                 cgroup could not be cleaned up: {f}"
            ),
        })),
        (Ok(_), Some(e)) => Err(e),
        (Ok(state), None) => Ok(state),
    }
}
