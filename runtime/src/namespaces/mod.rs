//! Namespaces at launch time, around the plan's [`crate::plan::NamespacePlan`]: joining the
//! ones given by path, the user namespace ([`user`]) and the time namespace ([`time`]).

pub mod time;
pub mod user;

use std::{
    fs::File,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    path::{Path, PathBuf},
};

use nix::sched::{setns, CloneFlags};

use crate::{plan::NamespaceKind, Error, Result};

/// Joins every namespace given by path, in a helper process that then clones the init: the
/// init is born in them, and the namespaces it creates belong to the right user namespace.
/// The user namespace comes last: before it, we are still root of the host and may join any
/// namespace; after it, only those it owns. Every path is opened first, because a joined
/// mount namespace can change what later paths mean.
pub fn join_all(join: &[(NamespaceKind, PathBuf)]) -> Result<()> {
    setns_all(&open_all(join)?)
}

/// A cgroup namespace to enter after the clone (see `launch::spawn`): that of the live
/// process an exec enters, or the spec's path, opened before any other join (the path is
/// the host's).
pub enum CgroupNsEntry<'a> {
    Of(BorrowedFd<'a>),
    File(PathBuf, File),
}

impl<'a> CgroupNsEntry<'a> {
    pub fn prepare(
        join: Option<&(NamespaceKind, PathBuf)>,
        enter: Option<BorrowedFd<'a>>,
    ) -> Result<Option<Self>> {
        let Some((kind, path)) = join else {
            return Ok(None);
        };
        Ok(Some(match enter {
            Some(pidfd) => CgroupNsEntry::Of(pidfd),
            None => CgroupNsEntry::File(
                path.clone(),
                File::open(path).map_err(|e| join_err(*kind, path, e.to_string()))?,
            ),
        }))
    }

    pub fn enter(&self) -> Result<()> {
        let flag = CloneFlags::CLONE_NEWCGROUP;
        match self {
            CgroupNsEntry::Of(pidfd) => setns(pidfd, flag).map_err(|e| {
                Error::Init(format!(
                    "linux.namespaces: enter the cgroup namespace of the container's init: {e}"
                ))
            }),
            CgroupNsEntry::File(path, file) => setns(file.as_fd(), flag)
                .map_err(|e| join_err(NamespaceKind::Cgroup, path, e.to_string())),
        }
    }
}

fn join_err(kind: NamespaceKind, path: &Path, what: String) -> Error {
    Error::Init(format!(
        "linux.namespaces: join {} namespace {}: {what}",
        kind.proc_name(),
        path.display()
    ))
}

type Opened<'a> = Vec<(NamespaceKind, &'a PathBuf, File)>;

fn open_all(join: &[(NamespaceKind, PathBuf)]) -> Result<Opened<'_>> {
    let mut opened = Vec::with_capacity(join.len());
    for (kind, path) in join {
        let file = File::open(path).map_err(|e| join_err(*kind, path, e.to_string()))?;
        opened.push((*kind, path, file));
    }
    opened.sort_by_key(|(kind, _, _)| *kind == NamespaceKind::User);
    Ok(opened)
}

/// Host groups would stay attached in a user namespace that cannot map them.
fn drop_groups_before_user_ns(kinds: impl IntoIterator<Item = NamespaceKind>) -> Result<()> {
    if kinds.into_iter().any(|k| k == NamespaceKind::User) {
        nix::unistd::setgroups(&[]).map_err(|e| Error::sys("drop supplementary groups", e))?;
    }
    Ok(())
}

fn setns_all(opened: &Opened<'_>) -> Result<()> {
    drop_groups_before_user_ns(opened.iter().map(|(k, _, _)| *k))?;
    for (kind, path, file) in opened {
        // The kernel checks that the file is a namespace of this type (EINVAL otherwise).
        setns(
            file.as_fd(),
            CloneFlags::from_bits_retain(kind.clone_flag()),
        )
        .map_err(|e| join_err(*kind, path, e.to_string()))?;
    }
    Ok(())
}

/// An exec: enters the namespaces `join` names (by kind) of the live process `pidfd` (its
/// container's init), all at once, through the pidfd (setns on a pidfd, Linux 5.8): the
/// namespaces of that very process, whoever has its pid by now, and ESRCH once it is gone.
///
/// Before 5.8 setns refuses a pidfd (EINVAL); then the /proc/<pid>/ns paths of `join` are
/// opened, and the pidfd is asked whether the process still lives: if it does, the pid
/// could not have been reused, so the files opened were that process's.
pub fn enter_process(pidfd: BorrowedFd<'_>, join: &[(NamespaceKind, PathBuf)]) -> Result<()> {
    let flags = join.iter().fold(0, |f, (k, _)| f | k.clone_flag());
    let gone = || Error::Init("the container's init process has exited".into());
    drop_groups_before_user_ns(join.iter().map(|(k, _)| *k))?;
    match setns(pidfd, CloneFlags::from_bits_retain(flags)) {
        Ok(()) => Ok(()),
        Err(nix::Error::ESRCH) => Err(gone()),
        // EINVAL is also what 5.8+ says about the flags themselves: the paths then fail
        // the same way, with an error that names the namespace.
        Err(nix::Error::EINVAL) => {
            let opened = open_all(join)?;
            // SAFETY: pidfd_send_signal with signal 0 only checks the process.
            let alive = unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    0,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            } == 0;
            if !alive {
                return Err(gone());
            }
            setns_all(&opened)
        }
        Err(e) => Err(Error::Init(format!(
            "linux.namespaces: enter the namespaces of the container's init: {e}"
        ))),
    }
}
