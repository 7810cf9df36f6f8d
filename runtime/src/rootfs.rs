//! Building the container's root filesystem inside its mount namespace: the spec's mounts,
//! /dev, pivot_root, masked and read-only paths. Runs only in the container's init.
//!
//! Every destination is resolved inside the rootfs by [`resolve_in_root`], which follows
//! symlinks as if the rootfs were "/", so a hostile image cannot point a mount at the host.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Component, Path, PathBuf},
};

use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sys::{
        stat::{mknod, Mode, SFlag},
        statvfs::{statvfs, FsFlags},
    },
    unistd::{chown, fchdir, pivot_root, Gid, Uid},
};

use crate::{
    plan::{DeviceNode, LaunchPlan, MountPlan, NamespaceKind},
    Error, Result,
};

const MAX_SYMLINKS: usize = 40;
const NONE: Option<&str> = None;

/// Resolves `path` (absolute, as seen inside the container) to a host path below `root`,
/// following symlinks relative to `root` and never leaving it (`..` stops at `root`).
/// Components that do not exist yet are kept as they are.
pub fn resolve_in_root(root: &Path, path: &Path) -> Result<PathBuf> {
    let mut pending: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate: PathBuf = std::iter::once(root.as_os_str())
            .chain(resolved.iter().map(|s| s.as_os_str()))
            .chain(std::iter::once(part.as_os_str()))
            .collect();
        match fs::symlink_metadata(&candidate) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Error::Other(format!(
                        "{}: too many levels of symbolic links inside the rootfs",
                        path.display()
                    )));
                }
                let target = fs::read_link(&candidate).map_err(|e| Error::io(&candidate, e))?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_owned()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => resolved.push(part),
        }
    }
    Ok(std::iter::once(root.as_os_str())
        .chain(resolved.iter().map(|s| s.as_os_str()))
        .collect())
}

fn sys<T>(step: impl FnOnce() -> String, r: nix::Result<T>) -> Result<T> {
    r.map_err(|e| Error::sys(step(), e))
}

/// Makes sure a mount target exists: a directory, or an empty file when binding a file.
fn create_target(target: &Path, as_file: bool) -> Result<()> {
    if as_file {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        if fs::symlink_metadata(target).is_err() {
            fs::File::create(target).map_err(|e| Error::io(target, e))?;
        }
        Ok(())
    } else {
        fs::create_dir_all(target).map_err(|e| Error::io(target, e))
    }
}

fn apply_mount(plan: &LaunchPlan, m: &MountPlan) -> Result<()> {
    let target = resolve_in_root(&plan.rootfs, &m.destination)?;
    let dest = m.destination.display();
    let mut flags = MsFlags::from_bits_retain(m.flags);
    let mut source = m.source.clone();
    let mut fstype = m.fstype.clone();
    let mut data = m.data.clone();

    // Without its own network namespace, a container cannot mount a fresh sysfs: bind the host's.
    if fstype.as_deref() == Some("sysfs") && !plan.namespaces.has(NamespaceKind::Network) {
        flags |= MsFlags::MS_BIND | MsFlags::MS_REC;
        source = Some(PathBuf::from("/sys"));
        fstype = None;
        data.clear();
    }

    let is_bind = flags.contains(MsFlags::MS_BIND);
    let as_file = is_bind
        && source
            .as_deref()
            .and_then(|s| fs::metadata(s).ok())
            .is_some_and(|md| !md.is_dir());
    if is_bind {
        let src = source.as_deref().unwrap_or(Path::new(""));
        fs::metadata(src)
            .map_err(|e| Error::Init(format!("mount {dest}: source {}: {e}", src.display())))?;
    }
    create_target(&target, as_file)?;

    let first = if is_bind {
        flags & (MsFlags::MS_BIND | MsFlags::MS_REC)
    } else {
        flags
    };
    sys(
        || {
            format!(
                "mount {dest} (type {})",
                fstype.as_deref().unwrap_or("bind")
            )
        },
        mount(
            source.as_deref(),
            &target,
            fstype.as_deref(),
            first,
            (!data.is_empty()).then_some(data.as_str()),
        ),
    )?;
    if let Some(remount) = m.remount_flags {
        let flags = MsFlags::from_bits_retain(remount) | locked_flags(&target);
        sys(
            || format!("remount {dest} with its options"),
            mount(NONE, &target, NONE, flags, NONE),
        )?;
    }
    for p in &m.propagation {
        sys(
            || format!("set propagation of {dest}"),
            mount(NONE, &target, NONE, MsFlags::from_bits_retain(*p), NONE),
        )?;
    }
    Ok(())
}

/// The flags of an existing mount that a bind remount must keep (the kernel refuses to
/// clear nosuid/nodev/noexec that were locked by the source mount in some setups).
fn locked_flags(path: &Path) -> MsFlags {
    let Ok(st) = statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs_flag, ms_flag) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if f.contains(fs_flag) {
            out |= ms_flag;
        }
    }
    out
}

fn create_device(rootfs: &Path, d: &DeviceNode) -> Result<()> {
    let target = resolve_in_root(rootfs, &d.path)?;
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let _ = fs::remove_file(&target);
    let kind = SFlag::from_bits_truncate(d.kind);
    let dev = libc::makedev(d.major as u32, d.minor as u32);
    let path = d.path.display();
    sys(
        || format!("mknod {path}"),
        mknod(&target, kind, Mode::from_bits_truncate(d.mode), dev),
    )?;
    // mknod honours the umask; set the mode the spec asked for.
    sys(
        || format!("chmod {path}"),
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &target,
            Mode::from_bits_truncate(d.mode),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        ),
    )?;
    sys(
        || format!("chown {path}"),
        chown(
            &target,
            Some(Uid::from_raw(d.uid)),
            Some(Gid::from_raw(d.gid)),
        ),
    )
}

fn dev_symlinks(plan: &LaunchPlan) -> Result<()> {
    let dev = resolve_in_root(&plan.rootfs, Path::new("/dev"))?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if plan
        .mounts
        .iter()
        .any(|m| m.destination == Path::new("/dev/pts"))
    {
        let _ = fs::remove_file(dev.join("ptmx"));
        links.push(("pts/ptmx", "ptmx"));
    }
    for (target, name) in links {
        let link = dev.join(name);
        match symlink(target, &link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(link, e)),
        }
    }
    Ok(())
}

/// Switches the process's root to the rootfs and detaches the old root entirely.
fn pivot(rootfs: &Path) -> Result<()> {
    let old = fs::File::open("/").map_err(|e| Error::io("/", e))?;
    let new = fs::File::open(rootfs).map_err(|e| Error::io(rootfs, e))?;
    sys(|| "enter rootfs".into(), fchdir(&new))?;
    sys(
        || format!("pivot_root to {}", rootfs.display()),
        pivot_root(".", "."),
    )?;
    sys(|| "enter old root".into(), fchdir(&old))?;
    // Keep the unmount of the old root from propagating to the host.
    sys(
        || "make old root a slave".into(),
        mount(NONE, ".", NONE, MsFlags::MS_SLAVE | MsFlags::MS_REC, NONE),
    )?;
    sys(
        || "detach old root".into(),
        umount2(".", MntFlags::MNT_DETACH),
    )?;
    sys(|| "chdir /".into(), nix::unistd::chdir("/"))
}

fn mask(path: &Path) -> Result<()> {
    let Ok(md) = fs::metadata(path) else {
        return Ok(());
    };
    let r = if md.is_dir() {
        mount(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_RDONLY, NONE)
    } else {
        mount(Some("/dev/null"), path, NONE, MsFlags::MS_BIND, NONE)
    };
    sys(|| format!("mask {}", path.display()), r)
}

fn make_readonly(path: &Path) -> Result<()> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    let p = path.display();
    sys(
        || format!("bind readonly path {p}"),
        mount(
            Some(path),
            path,
            NONE,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            NONE,
        ),
    )?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked_flags(path);
    sys(
        || format!("remount readonly path {p}"),
        mount(NONE, path, NONE, flags, NONE),
    )
}

/// Builds the root filesystem and pivots into it. Afterwards "/" is the container's root.
/// `before_pivot` runs once the mounts are in place (the create hooks' moment).
pub fn prepare(plan: &LaunchPlan, before_pivot: impl FnOnce() -> Result<()>) -> Result<()> {
    let propagation = MsFlags::from_bits_retain(plan.rootfs_propagation);
    // Nothing we mount may propagate back to the host: start from a slave/private "/".
    let base = if propagation.contains(MsFlags::MS_SHARED) {
        MsFlags::MS_PRIVATE | MsFlags::MS_REC
    } else {
        propagation
    };
    sys(
        || "set propagation of /".into(),
        mount(NONE, "/", NONE, base, NONE),
    )?;
    sys(
        || format!("bind rootfs {}", plan.rootfs.display()),
        mount(
            Some(&plan.rootfs),
            &plan.rootfs,
            NONE,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            NONE,
        ),
    )?;
    for m in &plan.mounts {
        apply_mount(plan, m)?;
    }
    for d in &plan.devices {
        create_device(&plan.rootfs, d)?;
    }
    dev_symlinks(plan)?;
    if propagation.contains(MsFlags::MS_SHARED) {
        sys(
            || "set rootfsPropagation".into(),
            mount(NONE, &plan.rootfs, NONE, propagation, NONE),
        )?;
    }
    before_pivot()?;
    pivot(&plan.rootfs)?;
    for p in &plan.readonly_paths {
        make_readonly(p)?;
    }
    for p in &plan.masked_paths {
        mask(p)?;
    }
    if plan.readonly_root {
        let flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | locked_flags(Path::new("/"));
        sys(
            || "remount / read-only".into(),
            mount(NONE, "/", NONE, flags, NONE),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_cannot_escape_the_root() {
        let dir = std::env::temp_dir().join(format!("shim-rs-resolve-{}", std::process::id()));
        let root = dir.join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../../../../etc", root.join("rel")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();

        assert_eq!(
            resolve_in_root(&root, Path::new("/abs/passwd")).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(&root, Path::new("/rel/x")).unwrap(),
            root.join("etc/x")
        );
        assert_eq!(
            resolve_in_root(&root, Path::new("/../../x")).unwrap(),
            root.join("x")
        );
        assert_eq!(
            resolve_in_root(&root, Path::new("/new/dir")).unwrap(),
            root.join("new/dir")
        );
        assert!(resolve_in_root(&root, Path::new("/loop1")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
