//! Process handles that cannot be confused with a later process of the same pid.
//!
//! The launcher clones every container process with CLONE_PIDFD and hands the descriptor
//! to the shim. Signals go through it (pidfd_send_signal), and an exec enters the init's
//! namespaces through it (setns on a pidfd): once the process is gone, both fail with
//! ESRCH, whoever has the pid by then.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
};

#[derive(Debug)]
pub struct Pidfd(OwnedFd);

impl Pidfd {
    pub fn new(fd: OwnedFd) -> Pidfd {
        Pidfd(fd)
    }

    /// Sends `signal`; ESRCH once the process has been reaped (the launcher reaps at once),
    /// when its pid may belong to someone else, never this handle.
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with a valid pidfd, no siginfo, no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether the process has not been reaped yet.
    pub fn is_alive(&self) -> bool {
        self.signal(0).is_ok()
    }
}

impl AsFd for Pidfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
