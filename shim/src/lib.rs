//! The containerd side of containerd-shim-rs: the shim protocol (`start`, `delete`, `-info`,
//! the daemon), the task service over ttrpc, the container handles it owns, their stdio, exit
//! tracking and the ordered event stream back to containerd.

pub mod bootstrap;
pub mod error;
pub mod events;
pub mod logger;
pub mod metrics;
pub mod oom;
pub mod options;
pub mod pool;
pub mod protocol;
pub mod reactor;
pub mod rootfs;
pub mod stdio;
pub mod task;
pub mod ttrpc;

pub use containerd_shim_protos as protos;
