//! Time namespaces. clone(CLONE_NEWTIME) would put the init into the new namespace at once,
//! and the kernel freezes a namespace's offsets as soon as a process is in it. So the init
//! unshares it instead: that only sets the namespace of its future children and of its own
//! exec, leaving the offsets writable until the container's program starts.

use nix::sched::{unshare, CloneFlags};

use crate::{
    plan::namespaces::{timens_offsets_text, TimeOffset},
    Error, Result,
};

/// The init: creates the container's time namespace (owned by its user namespace, if any)
/// and sets its offsets; the exec of the container's program enters it.
pub fn create(offsets: &[TimeOffset]) -> Result<()> {
    unshare(CloneFlags::from_bits_retain(libc::CLONE_NEWTIME))
        .map_err(|e| Error::sys("create time namespace", e))?;
    if offsets.is_empty() {
        return Ok(());
    }
    // The file names the namespace of our children-to-be, the one just created.
    crate::procfs::handle()?
        .write_self("timens_offsets", &timens_offsets_text(offsets))
        .map_err(|e| {
            Error::Init(format!(
                "linux.timeOffsets: write /proc/self/timens_offsets: {e}"
            ))
        })
}
