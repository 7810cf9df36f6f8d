//! Idmapped bind mounts, made by the launcher.
//!
//! An idmapped mount needs CAP_SYS_ADMIN over the user namespace of its mapping, which the
//! init, inside the container's user namespace, does not have. So the launcher makes each one
//! outside, as a detached mount tree, and the init (which inherits the descriptors) attaches it
//! like any other early bind (see `rootfs::prepare`).

use std::{
    io,
    os::fd::{AsFd, OwnedFd},
    path::Path,
};

use crate::{
    mountapi,
    namespaces::user,
    plan::{idmap::IdMappings, LaunchPlan},
    Error, Result,
};

/// The launcher: one detached, idmapped tree per idmapped mount of the plan (by mount index).
/// One user namespace per distinct mapping.
pub fn prepare(plan: &LaunchPlan) -> Result<Vec<Option<OwnedFd>>> {
    let mut userns: Vec<(&IdMappings, OwnedFd)> = Vec::new();
    let mut trees = Vec::with_capacity(plan.mounts.len());
    for (i, m) in plan.mounts.iter().enumerate() {
        let Some(idmap) = &m.idmap else {
            trees.push(None);
            continue;
        };
        let field = format!("mounts[{i}]");
        let ns = match userns.iter().position(|(maps, _)| **maps == idmap.mappings) {
            Some(n) => n,
            None => {
                userns.push((&idmap.mappings, user::userns_fd(&idmap.mappings, &field)?));
                userns.len() - 1
            }
        };
        let source = m.source.as_deref().unwrap_or(Path::new(""));
        let err = |what: &str, e: io::Error| {
            Error::Init(format!(
                "{field} ({}): idmapped mount of {}: {what}: {e}",
                m.destination.display(),
                source.display()
            ))
        };
        let tree = mountapi::clone_tree(source, m.flags & libc::MS_REC != 0)
            .map_err(|e| err("open_tree", e))?;
        mountapi::set_idmap(tree.as_fd(), userns[ns].1.as_fd(), idmap.recursive)
            .map_err(|e| err("mount_setattr", e))?;
        trees.push(Some(tree));
    }
    Ok(trees)
}
