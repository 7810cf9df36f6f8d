//! The OCI runtime half of containerd-shim-rs.
//!
//! Data flows one way: `config.json` ([`spec`]) -> a typed, serialisable [`plan::LaunchPlan`]
//! (pure code, unit-tested without root) -> [`launch`], the only place that creates processes,
//! whose child applies the plan with syscalls ([`rootfs`], [`process`], [`cgroups`]) and execs.
//! Nothing here knows about ttrpc or containerd.

pub mod cgroups;
pub mod error;
pub mod fd;
pub mod features;
pub mod hooks;
pub mod kernel;
pub mod launch;
pub mod namespaces;
pub mod plan;
pub mod process;
pub mod procfs;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod terminal;

pub use error::{Error, Result};
