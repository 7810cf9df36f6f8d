//! Logging into containerd's `log` fifo in logrus' text format, which containerd re-emits.
//! Writes are non-blocking: when containerd does not drain the fifo, lines are dropped
//! instead of stalling the shim.

use std::{
    fs::File,
    io::Write,
    os::fd::{FromRawFd, IntoRawFd},
    sync::Mutex,
};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// The descriptor the logger writes to, for the launcher to keep.
static LOG_FD: std::sync::OnceLock<std::os::fd::RawFd> = std::sync::OnceLock::new();

/// The log fifo's descriptor once [`init`] opened it.
pub fn fd() -> Option<std::os::fd::RawFd> {
    LOG_FD.get().copied()
}

struct FifoLogger {
    file: Mutex<File>,
}

impl Log for FifoLogger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        let msg = record
            .args()
            .to_string()
            .replace('\\', "\\\\")
            .replace('"', "\\\"");
        let line = format!(
            "time=\"{}\" level={level} msg=\"{msg}\" runtime=io.containerd.rs.v1\n",
            now_rfc3339()
        );
        let _ = self
            .file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// In the launcher: logs to `fd`, the daemon's log the launcher was given, if it is open,
/// at the level of `SHIM_RS_LOG_LEVEL` (which the daemon sets for it).
pub fn adopt(fd: std::os::fd::RawFd) {
    // SAFETY: fcntl with an integer argument: whether `fd` is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return;
    }
    // SAFETY: the descriptor was passed to this process for the log alone.
    let file = unsafe { File::from_raw_fd(fd) };
    install(file, env_level().unwrap_or(LevelFilter::Info));
}

/// The variable that overrides the log level (the daemon also sets it for its launcher).
pub const LEVEL_ENV: &str = "SHIM_RS_LOG_LEVEL";

fn env_level() -> Option<LevelFilter> {
    std::env::var(LEVEL_ENV).ok().and_then(|l| l.parse().ok())
}

fn install(file: File, level: LevelFilter) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    if log::set_boxed_logger(Box::new(FifoLogger {
        file: Mutex::new(file),
    }))
    .is_ok()
    {
        let _ = LOG_FD.set(fd);
        log::set_max_level(level);
    }
}

/// Opens `log` in the current directory (the bundle) if containerd made it, and installs the
/// logger. Returns the fifo so it can also become the daemon's stderr (panics then reach
/// containerd's log).
pub fn init(debug: bool) -> Option<File> {
    let fd = {
        // SAFETY: open(2) on a NUL-terminated literal path.
        unsafe {
            libc::open(
                c"log".as_ptr(),
                libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        }
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: we own the freshly opened descriptor.
    let file = unsafe { File::from_raw_fd(fd) };
    let copy = file.try_clone().ok();
    let level = env_level().unwrap_or(if debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    });
    install(file, level);
    copy.map(|f| {
        // SAFETY: as above; the clone is ours.
        unsafe { File::from_raw_fd(f.into_raw_fd()) }
    })
}

/// Civil UTC time from the Unix clock, formatted as RFC 3339 with nanoseconds.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_shape() {
        let s = super::now_rfc3339();
        assert_eq!(s.len(), 30, "{s}");
        assert!(s.ends_with('Z') && s.as_bytes()[10] == b'T', "{s}");
        assert!(s.starts_with("20"), "{s}");
    }
}
