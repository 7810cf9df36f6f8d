//! An exec: an extra process entering a live container. The container's processes have had
//! all the time they wanted to rearrange what the exec will find, and a privileged one
//! (CAP_SYS_ADMIN in its namespaces) can mount anything anywhere in its mount namespace.
//! So, once in the container's namespaces, an exec:
//! - never reads or writes a file of the container's /proc or /sys, nor decides anything
//!   from what they contain: its own /proc files are reached through the launcher's
//!   procfs handle (`procfs`), its oomScoreAdj is written by the launcher, the LSM modules
//!   are looked for in the host's /sys, by the launcher;
//! - touches no path of the container's except the program it runs (resolved like any
//!   exec(2) of the container would), its working directory and /etc/passwd for HOME (read
//!   as untrusted data), and, for a terminal, its devpts instance (checked, see `terminal`);
//! - builds nothing: no mounts, no devices, no hostname.
//!
//! It was born in the container's namespaces (the launcher's helper joined them before the
//! clone) and cgroup.

use std::os::fd::OwnedFd;

use crate::{kernel, namespaces, plan::LaunchPlan, plan::NamespaceKind, terminal, Result};

/// Everything up to the process settings; returns the pty master when the process has a
/// terminal.
pub(super) fn setup(plan: &LaunchPlan) -> Result<Option<OwnedFd>> {
    // oomScoreAdj was written by the launcher, from outside (see `spawn`); the LSM modules
    // were checked there too, in the host's /sys.
    if plan.namespaces.has(NamespaceKind::User) {
        namespaces::user::become_root(&plan.namespaces)?;
    }
    kernel::apply_lsm_labels(&plan.kernel)?;
    let p = &plan.process;
    // From the container's devpts, checked (see `terminal`); no /dev/console for an exec.
    p.terminal
        .then(|| terminal::setup(p.console_size, false))
        .transpose()
}
