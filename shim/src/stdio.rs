//! The container's stdio. containerd hands us fifo paths it has already opened for reading
//! (stdout/stderr) or writing (stdin); without a terminal we pass the fifos straight to the
//! container, so no copy loop runs in the shim and nothing is buffered here.

use std::{
    fs::{File, OpenOptions},
    os::{fd::AsFd, unix::fs::OpenOptionsExt},
};

use crate::error::{Error, Result};

#[derive(Debug)]
pub struct Stdio {
    pub stdin: File,
    pub stdout: File,
    pub stderr: File,
}

impl Stdio {
    pub fn fds(&self) -> [std::os::fd::BorrowedFd<'_>; 3] {
        [self.stdin.as_fd(), self.stdout.as_fd(), self.stderr.as_fd()]
    }
}

fn check_scheme(field: &str, path: &str) -> Result<()> {
    match path.split_once("://") {
        None => Ok(()),
        Some(("fifo", _)) => Ok(()),
        Some((scheme, _)) => Err(Error::Unimplemented(format!(
            "{field}: the {scheme}:// stdio scheme is not implemented yet"
        ))),
    }
}

fn strip_scheme(path: &str) -> &str {
    path.strip_prefix("fifo://").unwrap_or(path)
}

fn dev_null(write: bool) -> Result<File> {
    OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/null")
        .map_err(|e| Error::Internal(format!("open /dev/null: {e}")))
}

fn clear_nonblock(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
    }
}

fn open_output(field: &str, path: &str) -> Result<File> {
    if path.is_empty() {
        return dev_null(true);
    }
    check_scheme(field, path)?;
    let path = strip_scheme(path);
    let open = |flags| {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC | flags)
            .open(path)
    };
    // containerd opens the read side before Create; fall back to a blocking open if not yet.
    let f = match open(libc::O_NONBLOCK) {
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => open(0),
        r => r,
    }
    .map_err(|e| Error::InvalidArgument(format!("{field} {path}: {e}")))?;
    clear_nonblock(&f);
    Ok(f)
}

fn open_input(path: &str) -> Result<File> {
    if path.is_empty() {
        return dev_null(false);
    }
    check_scheme("stdin", path)?;
    let path = strip_scheme(path);
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::InvalidArgument(format!("stdin {path}: {e}")))?;
    clear_nonblock(&f);
    Ok(f)
}

pub fn open(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> Result<Stdio> {
    if terminal {
        return Err(Error::Unimplemented(
            "terminal: terminals are not implemented yet".into(),
        ));
    }
    Ok(Stdio {
        stdin: open_input(stdin)?,
        stdout: open_output("stdout", stdout)?,
        stderr: open_output("stderr", stderr)?,
    })
}
