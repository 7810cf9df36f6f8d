//! An exec: an extra process entering a live container. The container's processes have had
//! all the time they wanted to rearrange what the exec will find, and a privileged one
//! (CAP_SYS_ADMIN in its namespaces) can mount anything anywhere in its mount namespace.
//! So, once in the container's namespaces, an exec:
//! - never writes a file of the container's /proc or /sys, and never decides anything from
//!   what they contain;
//! - touches no path of the container's except the program it runs (resolved like any
//!   exec(2) of the container would), its working directory and /etc/passwd for HOME (read
//!   as untrusted data), and, for a terminal, its devpts instance (checked, see `terminal`);
//! - builds nothing: no mounts, no devices, no hostname.
//!
//! It was born in the container's namespaces (the launcher's helper joined them before the
//! clone) and cgroup.

use super::Console;
use crate::{kernel, namespaces, plan::LaunchPlan, plan::NamespaceKind, process, Result};

/// Everything up to the process settings; returns where the terminal comes from.
pub(super) fn setup(plan: &LaunchPlan) -> Result<Console> {
    if let Some(adj) = plan.process.oom_score_adj {
        process::set_oom_score_adj(adj)?;
    }
    if plan.namespaces.has(NamespaceKind::User) {
        namespaces::user::become_root(&plan.namespaces)?;
    }
    kernel::apply_lsm_labels(&plan.kernel)?;
    Ok(match plan.process.terminal {
        true => Console::Pty {
            bind_console: false,
        },
        false => Console::None,
    })
}
