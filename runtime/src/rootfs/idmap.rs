//! Bind mount trees the launcher makes for the init, outside the container.
//!
//! Two kinds of bind cannot be made by the init itself:
//! - an idmapped mount needs CAP_SYS_ADMIN over the user namespace of its mapping, which the
//!   init, inside the container's user namespace, does not have;
//! - in a user namespace (new or joined) the init is root only of that namespace: a bind
//!   source below a directory it may not search is out of its reach, though the runtime may
//!   read it. containerd's CRI keeps a pod's /dev/shm below a 0700 directory, for one, so a
//!   user-namespaced pod (Kubernetes `hostUsers: false`) needs this (runc opens its bind
//!   sources before it enters the namespace for the same reason).
//!
//! So the launcher makes each as a detached mount tree, and the init (which inherits the
//! descriptors) attaches it like any other early bind (see `rootfs::prepare`).

use std::{
    io,
    os::fd::{AsFd, OwnedFd},
    path::Path,
};

use super::mount;
use crate::{
    namespaces::user,
    plan::{idmap::IdMappings, LaunchPlan, NamespaceKind},
    Error, Result,
};

/// The launcher: one detached tree per idmapped bind of the plan, and, for a container in a
/// user namespace, per bind (by mount index). One user namespace per distinct mapping.
pub fn prepare(plan: &LaunchPlan) -> Result<Vec<Option<OwnedFd>>> {
    let in_userns = !plan.exec && plan.namespaces.has(NamespaceKind::User);
    let mut userns: Vec<(&IdMappings, OwnedFd)> = Vec::new();
    let mut trees = Vec::with_capacity(plan.mounts.len());
    for (i, m) in plan.mounts.iter().enumerate() {
        let plain_bind = in_userns && m.is_bind() && m.cgroup.is_none();
        if m.idmap.is_none() && !plain_bind {
            trees.push(None);
            continue;
        }
        let field = format!("mounts[{i}]");
        let source = m.source.as_deref().unwrap_or(Path::new(""));
        let err = |what: &str, e: io::Error| {
            let kind = if m.idmap.is_some() {
                "idmapped mount"
            } else {
                "bind"
            };
            Error::Init(format!(
                "{field} ({}): {kind} of {}: {what}: {e}",
                m.destination.display(),
                source.display()
            ))
        };
        let tree = mount::clone_tree(source, m.flags & libc::MS_REC != 0)
            .map_err(|e| err("open_tree", e))?;
        if let Some(idmap) = &m.idmap {
            let ns = match userns.iter().position(|(maps, _)| **maps == idmap.mappings) {
                Some(n) => n,
                None => {
                    userns.push((&idmap.mappings, user::userns_fd(&idmap.mappings, &field)?));
                    userns.len() - 1
                }
            };
            mount::set_idmap(tree.as_fd(), userns[ns].1.as_fd(), idmap.recursive)
                .map_err(|e| err("mount_setattr", e))?;
        }
        trees.push(Some(tree));
    }
    Ok(trees)
}
