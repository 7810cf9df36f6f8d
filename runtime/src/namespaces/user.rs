//! User namespaces. The maps of a new user namespace are written from outside, by the
//! launcher in the parent namespace: the init cannot map ids it does not own, so it waits
//! until they are written and then becomes root of its namespace. Also here: the user
//! namespaces that idmapped mounts are made with.

use std::{
    fs::File,
    io::{Read, Write},
    os::fd::{AsRawFd, OwnedFd},
};

use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};

use crate::{
    launch::spawn::clone,
    plan::{
        idmap::{map_file_text, parse_map_file, same_ranges, IdMapping, IdMappings},
        NamespaceKind, NamespacePlan,
    },
    procfs, Error, Result,
};

/// Writes the maps of the user namespace of `pid`; `field` names the spec field they come
/// from (`linux` or `mounts[2]`).
///
/// Like runc, "deny" goes to /proc/<pid>/setgroups only when we are not root: the kernel then
/// accepts a gid_map only with setgroups(2) disabled. As root we leave setgroups allowed, so
/// that the init can set the spec's additionalGids.
pub fn write_mappings(pid: i32, mappings: &IdMappings, field: &str) -> Result<()> {
    let proc = procfs::handle()?;
    let write = |file: &str, text: &str, what: &str| {
        proc.write_pid(pid, file, text)
            .map_err(|e| Error::Init(format!("{what}: write /proc/{pid}/{file}: {e}")))
    };
    if nix::unistd::geteuid().as_raw() != 0 {
        write("setgroups", "deny", field)?;
    }
    write(
        "uid_map",
        &map_file_text(&mappings.uid),
        &format!("{field}.uidMappings"),
    )?;
    write(
        "gid_map",
        &map_file_text(&mappings.gid),
        &format!("{field}.gidMappings"),
    )
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))
}

/// A pipe on which the launcher tells a new init that its maps are written (one byte), or
/// that they never will be (EOF).
pub struct MapSignal {
    read: OwnedFd,
    write: OwnedFd,
}

impl MapSignal {
    pub fn new() -> Result<MapSignal> {
        let (read, write) = pipe()?;
        Ok(MapSignal { read, write })
    }

    /// The launcher's end, after the clone.
    pub fn into_sender(self) -> OwnedFd {
        self.write
    }

    /// The init's end, after the clone.
    pub fn into_receiver(self) -> OwnedFd {
        self.read
    }
}

/// The launcher: maps the user namespace the init `pid` was cloned into, then lets it go on.
pub fn map_init(pid: i32, mappings: &IdMappings, sender: OwnedFd) -> Result<()> {
    write_mappings(pid, mappings, "linux")?;
    File::from(sender)
        .write_all(&[1])
        .map_err(|e| Error::Init(format!("tell the init its user namespace is mapped: {e}")))
}

/// Reads /proc/self/<file> (uid_map or gid_map) of a joined user namespace, through the
/// launcher's procfs handle, and compares it with what the spec says it should be.
fn check_joined(file: &str, want: &[IdMapping], field: &str) -> Result<()> {
    let text = procfs::handle()?
        .read_self(file)
        .map_err(|e| Error::Init(format!("{field}: read /proc/self/{file}: {e}")))?;
    match parse_map_file(&text) {
        Some(have) if same_ranges(&have, want) => Ok(()),
        _ => Err(Error::invalid(
            field,
            format!(
                "{} does not match the joined user namespace's {file}: {}",
                map_file_text(want).trim_end().replace('\n', ", "),
                text.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
        )),
    }
}

/// The init, first thing in a new user namespace: waits until the launcher has mapped it.
pub fn wait_mapped(mapped: OwnedFd) -> Result<()> {
    let mut byte = [0u8; 1];
    let n = File::from(mapped)
        .read(&mut byte)
        .map_err(|e| Error::Init(format!("wait for the user namespace maps: {e}")))?;
    if n == 0 {
        return Err(Error::Init(
            "the launcher did not map the user namespace".into(),
        ));
    }
    Ok(())
}

/// The init in a (mapped or joined) user namespace: checks a joined one against the spec and
/// becomes root of it (uid 0 and gid 0 there), which the rest of the setup needs: files it
/// creates must belong to mapped ids.
pub fn become_root(plan: &NamespacePlan) -> Result<()> {
    if let (true, Some(want)) = (plan.joins(NamespaceKind::User), &plan.id_mappings) {
        check_joined("uid_map", &want.uid, "linux.uidMappings")?;
        check_joined("gid_map", &want.gid, "linux.gidMappings")?;
    }
    let root = |what: &str, e: nix::Error| {
        Error::Init(format!(
            "linux.{what}Mappings: become {what} 0 in the container's user namespace \
             (is container {what} 0 mapped?): {e}"
        ))
    };
    setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0)).map_err(|e| root("gid", e))?;
    setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).map_err(|e| root("uid", e))?;
    if setgroups_allowed() {
        setgroups(&[]).map_err(|e| Error::sys("drop supplementary groups", e))?;
    }
    Ok(())
}

/// Whether setgroups(2) works in our user namespace ("deny" in /proc/self/setgroups when
/// not), read through the launcher's procfs handle.
pub fn setgroups_allowed() -> bool {
    procfs::handle()
        .ok()
        .and_then(|p| p.read_self("setgroups").ok())
        .is_none_or(|s| s.trim() != "deny")
}

/// A user namespace with these maps, kept by descriptor (for MOUNT_ATTR_IDMAP). Made by a
/// short-lived child of the launcher, which must be single-threaded; `field` names the spec
/// field of the maps.
pub fn userns_fd(mappings: &IdMappings, field: &str) -> Result<OwnedFd> {
    let (read, write) = pipe()?;
    let pid = clone(libc::CLONE_NEWUSER, "a user namespace")
        .map_err(|e| Error::Init(format!("{field}: idmapped mount: {e}")))?;
    if pid == 0 {
        drop(write);
        let mut byte = [0u8; 1];
        // SAFETY: read into a local buffer; _exit skips the launcher's exit handlers.
        unsafe {
            libc::read(read.as_raw_fd(), byte.as_mut_ptr().cast(), 1);
            libc::_exit(0)
        }
    }
    drop(read);
    let ns = write_mappings(pid, mappings, field).and_then(|()| {
        let path = format!("/proc/{pid}/ns/user");
        File::open(&path)
            .map(OwnedFd::from)
            .map_err(|e| Error::io(path, e))
    });
    drop(write); // the child reads EOF and exits
    reap(pid);
    ns
}

/// Waits for a child of ours that we know is exiting.
pub fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid status pointer.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
    {}
}
