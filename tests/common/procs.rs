//! Process lookups through /proc, for the tests and the CRI benchmark client (through
//! `cri_util`).

use std::{fs, path::Path};

/// The parent of `pid`, from /proc/PID/stat (the field after the command, which may hold
/// spaces and parentheses).
pub fn ppid_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The first word of a process's command line ("" if it is gone).
pub fn argv0(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            let first = b.split(|&c| c == 0).next().unwrap_or_default();
            String::from_utf8_lossy(first).into_owned()
        })
        .unwrap_or_default()
}

/// The shim daemon serving a container process: its topmost ancestor that is a
/// containerd-shim-* binary (our launcher is a shim below the daemon). By argv[0]: our
/// launcher runs from a detached view of the binary, whose /proc/PID/exe reads "/".
pub fn serving_shim(pid: i32) -> Option<i32> {
    let (mut top, mut p) = (None, pid);
    for _ in 0..64 {
        let Some(pp) = ppid_of(p).filter(|&pp| pp > 1) else {
            break;
        };
        if Path::new(&argv0(pp))
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("containerd-shim-"))
        {
            top = Some(pp);
        }
        p = pp;
    }
    top
}
