//! Namespaces at launch time, around the plan's [`crate::plan::NamespacePlan`]: joining the
//! ones given by path, the user namespace ([`user`]) and the time namespace ([`time`]).

pub mod time;
pub mod user;

use std::{fs::File, os::fd::AsFd, path::PathBuf};

use nix::sched::{setns, CloneFlags};

use crate::{plan::NamespaceKind, Error, Result};

/// Joins every namespace given by path, in a helper process that then clones the init: the
/// init is born in them, and the namespaces it creates belong to the right user namespace.
/// The user namespace comes last: before it, we are still root of the host and may join any
/// namespace; after it, only those it owns. Every path is opened first, because a joined
/// mount namespace can change what later paths mean.
pub fn join_all(join: &[(NamespaceKind, PathBuf)]) -> Result<()> {
    let err = |kind: NamespaceKind, path: &PathBuf, what: String| {
        Error::Init(format!(
            "linux.namespaces: join {} namespace {}: {what}",
            kind.proc_name(),
            path.display()
        ))
    };
    let mut opened = Vec::with_capacity(join.len());
    for (kind, path) in join {
        let file = File::open(path).map_err(|e| err(*kind, path, e.to_string()))?;
        opened.push((*kind, path, file));
    }
    opened.sort_by_key(|(kind, _, _)| *kind == NamespaceKind::User);
    if opened.iter().any(|(k, _, _)| *k == NamespaceKind::User) {
        // Host groups would stay attached in a user namespace that cannot map them.
        nix::unistd::setgroups(&[]).map_err(|e| Error::sys("drop supplementary groups", e))?;
    }
    for (kind, path, file) in &opened {
        // The kernel checks that the file is a namespace of this type (EINVAL otherwise).
        setns(
            file.as_fd(),
            CloneFlags::from_bits_retain(kind.clone_flag()),
        )
        .map_err(|e| err(*kind, path, e.to_string()))?;
    }
    Ok(())
}
