//! Applying the process part of the plan in the container's init, after pivot_root:
//! rlimits, umask, privileges, user, capabilities, cwd, and the exec itself.

use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Path, PathBuf},
};

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};

use crate::{
    plan::{process::CapabilitiesPlan, ProcessPlan},
    Error, Result,
};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Finds the program to exec the way runc does: a name with a '/' is used as is, anything
/// else is looked up in the container's $PATH. Errors read like runc's.
pub fn resolve_executable(plan: &ProcessPlan) -> Result<PathBuf> {
    let name = &plan.args[0];
    let is_exec = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.contains('/') {
        let p = Path::new(name);
        return match std::fs::metadata(p) {
            Err(e) => Err(Error::Init(format!("exec: {name:?}: stat {name}: {e}"))),
            Ok(_) if !is_exec(p) => Err(Error::Init(format!("exec: {name:?}: permission denied"))),
            Ok(_) => Ok(p.to_path_buf()),
        };
    }
    let path_var = plan
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path_var
        .split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(name))
        .find(|p| is_exec(p))
        .ok_or_else(|| {
            Error::Init(format!(
                "exec: {name:?}: executable file not found in $PATH"
            ))
        })
}

pub fn set_rlimits(plan: &ProcessPlan) -> Result<()> {
    for r in &plan.rlimits {
        let lim = libc::rlimit {
            rlim_cur: r.soft,
            rlim_max: r.hard,
        };
        // SAFETY: setrlimit reads a valid rlimit struct.
        if unsafe { libc::setrlimit(r.resource as _, &lim) } != 0 {
            return Err(Error::Init(format!(
                "process.rlimits: setrlimit({}, soft {}, hard {}): {}",
                r.resource,
                r.soft,
                r.hard,
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

/// The launcher, for its new child `pid` (not yet reaped, so the pid is that process): the
/// oomScoreAdj goes through the host's procfs, from outside. The process itself could only
/// reach the /proc of the container it is in, which is the container's to fake.
pub fn set_oom_score_adj(pid: i32, value: i32) -> Result<()> {
    crate::procfs::handle()?
        .write_pid(pid, "oom_score_adj", &value.to_string())
        .map_err(|e| Error::Init(format!("process.oomScoreAdj: write {value}: {e}")))
}

fn cap_set(indices: &[u8]) -> CapsHashSet {
    caps::all()
        .into_iter()
        .filter(|c: &Capability| indices.contains(&c.index()))
        .collect()
}

fn caps_err(what: &str, e: caps::errors::CapsError) -> Error {
    Error::Init(format!("process.capabilities: {what}: {e}"))
}

/// Switches to the spec's user and capability sets. Order matters: the bounding set is
/// dropped while we still hold CAP_SETPCAP, KEEPCAPS carries the permitted set across
/// setuid, and ambient capabilities come last because they need permitted+inheritable.
pub fn switch_user_and_capabilities(plan: &ProcessPlan) -> Result<()> {
    let caps = plan.capabilities.clone().unwrap_or_default();
    let bounding = cap_set(&caps.bounding);
    for c in caps::all() {
        if !bounding.contains(&c) && caps::has_cap(None, CapSet::Bounding, c).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, c).map_err(|e| caps_err("drop bounding", e))?;
        }
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(Error::Init(format!(
            "prctl(PR_SET_KEEPCAPS): {}",
            std::io::Error::last_os_error()
        )));
    }
    let gids: Vec<Gid> = plan
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    match setgroups(&gids) {
        // A user namespace with setgroups(2) disabled: nothing to set.
        Err(nix::Error::EPERM)
            if gids.is_empty() && !crate::namespaces::user::setgroups_allowed() => {}
        r => r.map_err(|e| Error::Init(format!("process.user.additionalGids: setgroups: {e}")))?,
    }
    let gid = Gid::from_raw(plan.gid);
    setresgid(gid, gid, gid)
        .map_err(|e| Error::Init(format!("process.user.gid: setgid {gid}: {e}")))?;
    let uid = Uid::from_raw(plan.uid);
    setresuid(uid, uid, uid)
        .map_err(|e| Error::Init(format!("process.user.uid: setuid {uid}: {e}")))?;
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    apply_capability_sets(&caps)
}

/// Inheritable and effective shrink while the permitted set still holds everything they
/// may name; permitted shrinks last (the kernel requires effective to stay a subset of it).
fn apply_capability_sets(caps: &CapabilitiesPlan) -> Result<()> {
    caps::set(None, CapSet::Inheritable, &cap_set(&caps.inheritable))
        .map_err(|e| caps_err("set inheritable", e))?;
    caps::set(None, CapSet::Effective, &cap_set(&caps.effective))
        .map_err(|e| caps_err("set effective", e))?;
    caps::set(None, CapSet::Permitted, &cap_set(&caps.permitted))
        .map_err(|e| caps_err("set permitted", e))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| caps_err("clear ambient", e))?;
    for c in cap_set(&caps.ambient) {
        caps::raise(None, CapSet::Ambient, c)
            .map_err(|e| caps_err(&format!("raise ambient {c}"), e))?;
    }
    Ok(())
}

/// Gives the process's stdio (fifos, pipes, its terminal) to its user, as runc does, so that a
/// non-root process can reopen them (`echo > /dev/stderr`, a log file symlinked to
/// /dev/stdout). Only the owner changes: the group stays (a terminal keeps devpts' `tty`
/// group). /dev/null and what the user already owns are left alone, and where the kernel
/// refuses (an owner unmapped in a user namespace, a read-only /dev) the stdio stays as it is.
pub fn give_stdio_to_user(uid: u32) -> Result<()> {
    let dev_null = libc::makedev(1, 3);
    for fd in 0..3 {
        // SAFETY: fstat into a zeroed stat of our own.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            continue; // not open
        }
        let is_null = st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == dev_null;
        if is_null || st.st_uid == uid {
            continue;
        }
        // SAFETY: fchown of one of our descriptors; -1 keeps the group.
        if unsafe { libc::fchown(fd, uid, u32::MAX) } != 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINVAL | libc::EPERM | libc::EROFS) => {}
                _ => {
                    return Err(Error::Init(format!(
                        "stdio: give fd {fd} to uid {uid}: {e}"
                    )))
                }
            }
        }
    }
    Ok(())
}

pub fn set_no_new_privileges() -> Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(Error::Init(format!(
            "process.noNewPrivileges: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

pub fn enter_cwd(plan: &ProcessPlan) -> Result<()> {
    // Resolved after pivot_root, so the path is inside the container whatever it contains.
    std::fs::create_dir_all(&plan.cwd).ok();
    nix::unistd::chdir(&plan.cwd)
        .map_err(|e| Error::Init(format!("process.cwd: chdir {}: {e}", plan.cwd.display())))
}

/// The largest /etc/passwd we read for HOME; a bigger one is not a passwd file.
const PASSWD_MAX_BYTES: u64 = 4 << 20;

/// The home directory of `uid` in the container's /etc/passwd, read the way runc's init reads
/// it when the process has no HOME. The file belongs to the (possibly hostile) image: it is
/// opened without following magic links or blocking (a fifo), must be a regular file outside
/// procfs, and is read up to a bound.
fn passwd_home(uid: u32) -> Option<String> {
    use std::{io::Read, os::fd::AsFd};
    let root = std::fs::File::open("/").ok()?;
    let fd = crate::fd::openat2(
        root.as_fd(),
        Path::new("etc/passwd"),
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
        0,
        crate::fd::RESOLVE_NO_MAGICLINKS | crate::fd::RESOLVE_IN_ROOT,
    )
    .ok()?;
    let st = crate::fd::fstat(fd.as_fd()).ok()?;
    let fs = nix::sys::statfs::fstatfs(&fd).ok()?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG
        || fs.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC
    {
        return None;
    }
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(PASSWD_MAX_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    home_of(&text, uid)
}

/// Parses passwd lines (name:password:uid:gid:gecos:home:shell) for `uid`'s home.
fn home_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 6 && f[2].parse() == Ok(uid)).then(|| f[5].to_owned())
    })
}

/// The process's environment with HOME set when it has none or an empty one, as runc does:
/// the home field of the user's entry in the container's /etc/passwd (empty if the entry's
/// is), or "/" for a user without one. An empty HOME is replaced where it stands.
pub fn environment(plan: &ProcessPlan) -> Vec<String> {
    let mut env = plan.env.clone();
    let has_home = env
        .iter()
        .any(|e| e.strip_prefix("HOME=").is_some_and(|v| !v.is_empty()));
    if !has_home {
        let home = format!("HOME={}", passwd_home(plan.uid).as_deref().unwrap_or("/"));
        match env.iter_mut().find(|e| *e == "HOME=") {
            Some(empty) => *empty = home,
            None => env.push(home),
        }
    }
    env
}

/// Everything execve needs, built before the point of no return.
pub struct ExecArgs {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

impl ExecArgs {
    pub fn new(path: &Path, plan: &ProcessPlan) -> Result<Self> {
        let c = |s: &[u8], what: &str| {
            CString::new(s).map_err(|_| Error::invalid(what, "contains a NUL byte"))
        };
        Ok(ExecArgs {
            path: c(path.as_os_str().as_bytes(), "process.args")?,
            argv: plan
                .args
                .iter()
                .map(|a| c(a.as_bytes(), "process.args"))
                .collect::<Result<_>>()?,
            envp: environment(plan)
                .iter()
                .map(|e| c(e.as_bytes(), "process.env"))
                .collect::<Result<_>>()?,
        })
    }

    /// Replaces the process image. Only returns on failure.
    pub fn exec(&self) -> Error {
        let e = nix::unistd::execve(&self.path, &self.argv, &self.envp).unwrap_err();
        Error::Init(format!("exec {:?}: {e}", self.path))
    }
}

/// Marks every descriptor from 3 up close-on-exec, so that nothing of the shim's reaches
/// the container's process (the CVE-2024-21626 class).
pub fn close_fds_on_exec() -> Result<()> {
    // SAFETY: close_range has no memory-safety preconditions.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r != 0 {
        return Err(Error::Init(format!(
            "close_range: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str], env: &[&str]) -> ProcessPlan {
        ProcessPlan {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|s| s.to_string()).collect(),
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            umask: None,
            rlimits: vec![],
            capabilities: None,
            no_new_privileges: false,
            oom_score_adj: None,
            terminal: false,
            console_size: None,
        }
    }

    #[test]
    fn home_comes_from_the_users_passwd_line() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nbad line\nnobody:x:65534:65534::/nonexistent:/bin/false\nu:x:1000:1000:::/bin/sh\n";
        assert_eq!(home_of(passwd, 0).as_deref(), Some("/root"));
        assert_eq!(home_of(passwd, 65534).as_deref(), Some("/nonexistent"));
        assert_eq!(home_of(passwd, 1000).as_deref(), Some(""));
        assert_eq!(home_of(passwd, 7), None);
    }

    #[test]
    fn executable_lookup_follows_path_and_reports_like_runc() {
        assert_eq!(
            resolve_executable(&plan(&["sh"], &["PATH=/nonexistent:/bin"])).unwrap(),
            PathBuf::from("/bin/sh")
        );
        let e = resolve_executable(&plan(&["no-such-program-x"], &[]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "exec: \"no-such-program-x\": executable file not found in $PATH"
        );
        let e = resolve_executable(&plan(&["/nonexistent"], &[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("exec: \"/nonexistent\": stat /nonexistent"),
            "{e}"
        );
    }
}
