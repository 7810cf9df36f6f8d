//! Building the container's root filesystem inside its mount namespace: the spec's mounts,
//! /dev, sysctls, pivot_root, masked and read-only paths. Runs only in the container's init.
//!
//! Every destination is resolved inside the rootfs by [`RootDir`] (openat2 with
//! RESOLVE_IN_ROOT on a descriptor of the rootfs), so a hostile image cannot point a mount at
//! the host, and every mount lands on the resolved descriptor, so a symlink swapped in after
//! the lookup cannot redirect it.

use std::{
    fs,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    unistd::{fchdir, pivot_root},
};

pub mod cgroupfs;
pub mod chroot;
pub mod copyup;
pub mod devices;
pub mod idmap;
pub mod masked;
pub mod mount;
pub mod resolve;

use self::{
    masked::locked_flags,
    mount::{
        attach_tree, bind_onto, clone_tree, mount_at, set_mount_attr, set_propagation,
        BIND_ATTR_FLAGS,
    },
    resolve::{Create, RootDir},
};
use crate::{
    fd::{openat2, RESOLVE_IN_ROOT, RESOLVE_NO_SYMLINKS},
    kernel,
    plan::{mounts::MountAttr, LaunchPlan, MountPlan, NamespaceKind},
    Error, Result,
};

const NONE: Option<&str> = None;

fn sys<T>(step: impl FnOnce() -> String, r: nix::Result<T>) -> Result<T> {
    r.map_err(|e| Error::sys(step(), e))
}

/// With a shared rootfs propagation, the binds that ask to be shared (Kubernetes'
/// Bidirectional mount propagation) must stay peers of their host mount, so that mounts
/// made under them reach the host and back. They are copied before "/" is made a slave,
/// which would otherwise cut them off. Indexed like the plan's mounts.
/// A tree the launcher made (`launcher_trees`) is used as it is.
fn clone_shared_binds(
    plan: &LaunchPlan,
    launcher_trees: Vec<Option<OwnedFd>>,
) -> Result<Vec<Option<OwnedFd>>> {
    let shared_root = plan.rootfs_propagation & libc::MS_SHARED != 0;
    let mut launcher_trees = launcher_trees.into_iter();
    plan.mounts
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if let Some(tree) = launcher_trees.next().flatten() {
                return Ok(Some(tree));
            }
            let wants_shared = m.propagation.iter().any(|p| p & libc::MS_SHARED != 0);
            if !(shared_root && wants_shared && m.is_bind() && m.cgroup.is_none()) {
                return Ok(None);
            }
            let src = m.source.as_deref().unwrap_or(Path::new(""));
            clone_tree(src, m.flags & libc::MS_REC != 0)
                .map(Some)
                .map_err(|e| {
                    Error::Init(format!(
                        "mounts[{i}] ({}): bind {}: {e}",
                        m.destination.display(),
                        src.display()
                    ))
                })
        })
        .collect()
}

/// procfs and sysfs are only mounted on real directories: a symlink there would let the
/// image move them (and the masked paths that rely on them) elsewhere.
fn check_no_symlinks(root: &RootDir, field: &str, dest: &Path) -> Result<()> {
    let rel: PathBuf = dest.components().skip(1).collect();
    let rel = if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    };
    match openat2(
        root.as_fd(),
        &rel,
        libc::O_PATH,
        0,
        RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS,
    ) {
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(Error::Init(format!(
            "{field}: {} is a symlink (or below one) in the rootfs; proc and sysfs are only mounted on directories",
            dest.display()
        ))),
        _ => Ok(()),
    }
}

/// A tmpfs mounted on a directory the image has takes that directory's mode, as with runc
/// (a tmpfs on the image's 0700 /root stays 0700). An explicit `mode=` wins, as in runc 1.2
/// and later (runc 1.1 chmods over it).
fn tmpfs_mode_to_keep(root: &RootDir, m: &MountPlan) -> Option<libc::mode_t> {
    if m.fstype.as_deref() != Some("tmpfs") || m.is_bind() {
        return None;
    }
    if m.data.split(',').any(|o| o.starts_with("mode=")) {
        return None;
    }
    let existing = root.open_in(&m.destination, libc::O_PATH).ok()?;
    let st = nix::sys::stat::fstat(&existing).ok()?;
    (st.st_mode & libc::S_IFMT == libc::S_IFDIR).then_some(st.st_mode & 0o7777)
}

fn apply_mount(
    root: &RootDir,
    plan: &LaunchPlan,
    index: usize,
    m: &MountPlan,
    early_tree: Option<OwnedFd>,
) -> Result<()> {
    let field = format!("mounts[{index}]");
    let dest = m.destination.display();
    let what = || format!("{field} ({dest})");
    if let Some(cg) = &m.cgroup {
        return cgroupfs::mount(root, &field, m, cg);
    }
    let flags = MsFlags::from_bits_retain(m.flags);
    let (source, fstype, data) = (&m.source, &m.fstype, &m.data);
    if matches!(fstype.as_deref(), Some("proc") | Some("sysfs")) && !m.is_bind() {
        check_no_symlinks(root, &field, &m.destination)?;
    }

    let is_bind = flags.contains(MsFlags::MS_BIND);
    let covered_mode = tmpfs_mode_to_keep(root, m);
    let mut as_file = false;
    if is_bind {
        let src = source.as_deref().unwrap_or(Path::new(""));
        // A tree from the launcher is asked, not its host path: in a user namespace the
        // path may be out of our reach.
        let md = match &early_tree {
            Some(tree) => fs::metadata(mount::proc_fd_path(tree.as_fd())),
            None => fs::metadata(src),
        }
        .map_err(|e| Error::Init(format!("{}: source {}: {e}", what(), src.display())))?;
        as_file = !md.is_dir();
    }
    let target = root
        .create(
            &m.destination,
            if as_file { Create::File } else { Create::Dir },
        )
        .map_err(|e| Error::Init(format!("{field}: {e}")))?;

    if is_bind {
        let src = source.as_deref().unwrap_or(Path::new(""));
        let top = MountAttr::from_ms_flags(flags.bits() & BIND_ATTR_FLAGS);
        match &early_tree {
            Some(tree) => attach_tree(tree, target.as_fd(), top, m.recursive),
            None => bind_onto(
                src,
                target.as_fd(),
                flags.contains(MsFlags::MS_REC),
                top,
                m.recursive,
            ),
        }
        .map_err(|e| Error::Init(format!("{}: bind {}: {e}", what(), src.display())))?;
    } else {
        // tmpcopyup reads the directory the tmpfs is about to cover, through a descriptor
        // opened before the mount.
        let covered = if m.tmpcopyup {
            Some(
                root.open_in(&m.destination, libc::O_RDONLY | libc::O_DIRECTORY)
                    .map_err(|e| Error::Init(format!("{}: tmpcopyup: {e}", what())))?,
            )
        } else {
            None
        };
        let mounted = mount_at(
            source.as_deref(),
            target.as_fd(),
            fstype.as_deref(),
            flags,
            (!data.is_empty()).then_some(data.as_str()),
        );
        match mounted {
            // A fresh sysfs needs a network namespace owned by our user namespace; where the
            // kernel refuses it, bind the host's, with the spec's restrictions on every
            // submount (a fresh sysfs would have none to leave writable).
            Err(nix::Error::EPERM)
                if fstype.as_deref() == Some("sysfs")
                    && !plan.namespaces.has(NamespaceKind::Network) =>
            {
                return bind_host_sysfs(root, &field, m, target.as_fd());
            }
            r => sys(
                || {
                    format!(
                        "{}: mount type {}",
                        what(),
                        fstype.as_deref().unwrap_or("none")
                    )
                },
                r,
            )?,
        }
        if let Some(covered) = covered {
            let new = root
                .open_in(&m.destination, libc::O_RDONLY | libc::O_DIRECTORY)
                .map_err(|e| Error::Init(format!("{}: tmpcopyup: {e}", what())))?;
            copyup::copy_dir(covered.as_fd(), new.as_fd())
                .map_err(|e| Error::Init(format!("{}: tmpcopyup: {e}", what())))?;
        }
        if let Some(mode) = covered_mode {
            let new = root
                .open_in(&m.destination, libc::O_RDONLY | libc::O_DIRECTORY)
                .map_err(|e| Error::Init(format!("{}: open the new tmpfs: {e}", what())))?;
            nix::sys::stat::fchmod(&new, nix::sys::stat::Mode::from_bits_truncate(mode))
                .map_err(|e| Error::sys(format!("{}: chmod the new tmpfs", what()), e))?;
        }
        if !m.recursive.is_empty() {
            let mounted = root
                .resolve(&m.destination)
                .map_err(|e| Error::Init(format!("{field}: {e}")))?;
            set_mount_attr(mounted.as_fd(), m.recursive, true).map_err(|e| {
                Error::Init(format!("{}: set recursive mount attributes: {e}", what()))
            })?;
        }
    }
    set_propagation(root, &field, &m.destination, &m.propagation)
}

fn bind_host_sysfs(
    root: &RootDir,
    field: &str,
    m: &MountPlan,
    target: BorrowedFd<'_>,
) -> Result<()> {
    let restrict = MountAttr::from_ms_flags(
        m.flags & (libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC),
    );
    let recursive = MountAttr {
        set: m.recursive.set | restrict.set,
        clear: m.recursive.clear & !restrict.set,
    };
    let top = MountAttr::from_ms_flags(m.flags & BIND_ATTR_FLAGS);
    bind_onto(Path::new("/sys"), target, true, top, recursive).map_err(|e| {
        Error::Init(format!(
            "{field} ({}): bind the host's /sys: {e}",
            m.destination.display()
        ))
    })?;
    set_propagation(root, field, &m.destination, &m.propagation)
}

/// Switches the process's root to the rootfs and detaches the old root entirely.
fn pivot(root: &RootDir) -> nix::Result<()> {
    let old = fs::File::open("/")
        .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    fchdir(root)?;
    pivot_root(".", ".")?;
    fchdir(&old)?;
    // Keep the unmount of the old root from propagating to the host.
    mount(NONE, ".", NONE, MsFlags::MS_SLAVE | MsFlags::MS_REC, NONE)?;
    umount2(".", MntFlags::MNT_DETACH)?;
    nix::unistd::chdir("/")
}

/// pivot_root, or MS_MOVE + chroot when asked to (containerd's no_pivot_root) or when the
/// host root is the initramfs, which pivot_root refuses.
fn enter_root(plan: &LaunchPlan, root: &RootDir) -> Result<()> {
    if plan.no_pivot_root {
        return chroot::move_root(root);
    }
    match pivot(root) {
        Ok(()) => Ok(()),
        Err(nix::Error::EINVAL)
            if chroot::root_is_initramfs(
                &crate::procfs::handle()
                    .and_then(|p| {
                        p.read_self("mountinfo")
                            .map_err(|e| Error::io("/proc/self/mountinfo", e))
                    })
                    .unwrap_or_default(),
            ) =>
        {
            chroot::move_root(root)
        }
        Err(e) => Err(Error::sys(
            format!("pivot_root to {}", plan.rootfs.display()),
            e,
        )),
    }
}

/// Builds the root filesystem and pivots into it. Afterwards "/" is the container's root.
/// `launcher_trees` holds the bind trees the launcher made (see `crate::idmap`), by mount
/// index. `before_pivot` runs once the mounts are in place (the create hooks' moment),
/// `after_pivot` right after the pivot, before the read-only and masked paths (the console's
/// moment, so that /dev/console comes in the mount table where runc puts it).
pub fn prepare(
    plan: &LaunchPlan,
    launcher_trees: Vec<Option<OwnedFd>>,
    before_pivot: impl FnOnce() -> Result<()>,
    after_pivot: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let propagation = MsFlags::from_bits_retain(plan.rootfs_propagation);
    let mut early_trees = clone_shared_binds(plan, launcher_trees)?;
    // Nothing else we mount may propagate back to the host, and pivot_root refuses shared mounts:
    // build everything below a recursively slave (or private) "/", and give the container's
    // "/" the propagation it asked for once it is its root.
    let base = MsFlags::MS_REC
        | if propagation.contains(MsFlags::MS_PRIVATE) {
            MsFlags::MS_PRIVATE
        } else {
            MsFlags::MS_SLAVE
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
    // A shared or unbindable root starts out private, as runc (1.4) has it: it gets a peer
    // group of its own below, instead of also staying a slave of the host's mount.
    if propagation.intersects(MsFlags::MS_SHARED | MsFlags::MS_UNBINDABLE) {
        sys(
            || format!("make the rootfs {} private", plan.rootfs.display()),
            mount(NONE, &plan.rootfs, NONE, MsFlags::MS_PRIVATE, NONE),
        )?;
    }
    // /proc/sys of the host procfs, opened before any mount of the spec could matter.
    let proc_sys = if plan.kernel.sysctls.is_empty() {
        None
    } else {
        Some(kernel::open_proc_sys()?)
    };
    let root = RootDir::open(&plan.rootfs)?;
    for (i, m) in plan.mounts.iter().enumerate() {
        apply_mount(&root, plan, i, m, early_trees[i].take())?;
    }
    let in_userns = plan.namespaces.has(NamespaceKind::User);
    for (i, d) in plan.devices.iter().enumerate() {
        devices::create_device(&root, i, d, in_userns)?;
    }
    devices::dev_symlinks(&root, plan)?;
    if let Some(proc_sys) = &proc_sys {
        kernel::write_sysctls(proc_sys, &plan.kernel.sysctls)?;
    }
    before_pivot()?;
    enter_root(plan, &root)?;
    after_pivot()?;
    masked::readonly_paths(&plan.readonly_paths)?;
    masked::mask_paths(&plan.masked_paths)?;
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
    // Last: an unbindable "/" would refuse the read-only binds above.
    if propagation.intersects(MsFlags::MS_SHARED | MsFlags::MS_UNBINDABLE) {
        sys(
            || "linux.rootfsPropagation: set propagation of /".into(),
            mount(NONE, "/", NONE, propagation, NONE),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::statvfs::{statvfs, FsFlags};
    use std::{os::unix::fs::symlink, process::Command};

    const IN_PRIVATE_NS: &str = "SHIM_RS_TEST_IN_PRIVATE_MOUNT_NS";

    /// Runs the named test of this binary again, alone, in a private mount namespace (needs
    /// root and unshare(1)); true when this process is that run.
    fn in_private_mount_ns(test: &str) -> bool {
        if std::env::var_os(IN_PRIVATE_NS).is_some() {
            return true;
        }
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private"])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", test, "--test-threads=1", "--nocapture"])
            .env(IN_PRIVATE_NS, "1")
            .output()
            .expect("run unshare(1)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{test} in a private mount namespace: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        false
    }

    fn mount_points() -> Vec<PathBuf> {
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
            .collect()
    }

    /// The CVE-2021-30465 pattern: the destination is resolved, then the image swaps a
    /// directory on the path for a symlink to the host before the mount happens. Mounting
    /// onto the resolved descriptor still lands where the lookup went.
    #[test]
    fn a_symlink_swapped_in_after_the_lookup_cannot_redirect_the_mount() {
        if !in_private_mount_ns(
            "rootfs::tests::a_symlink_swapped_in_after_the_lookup_cannot_redirect_the_mount",
        ) {
            return;
        }
        let base = std::env::temp_dir().join(format!("shim-rs-swap-{}", std::process::id()));
        let (root, host) = (base.join("root"), base.join("host"));
        for d in [
            root.join("a/fs"),
            root.join("a/bind"),
            host.join("fs"),
            host.join("bind"),
        ] {
            fs::create_dir_all(d).unwrap();
        }
        let source = base.join("source");
        fs::create_dir_all(&source).unwrap();
        fs::write(source.join("marker"), "bound").unwrap();

        let r = RootDir::open(&root).unwrap();
        let fs_target = r.create(Path::new("/a/fs"), Create::Dir).unwrap();
        let bind_target = r.create(Path::new("/a/bind"), Create::Dir).unwrap();
        // The swap.
        fs::rename(root.join("a"), root.join("a.old")).unwrap();
        symlink(&host, root.join("a")).unwrap();

        mount_at(
            Some(Path::new("tmpfs")),
            fs_target.as_fd(),
            Some("tmpfs"),
            MsFlags::empty(),
            None,
        )
        .unwrap();
        bind_onto(
            &source,
            bind_target.as_fd(),
            false,
            MountAttr::default(),
            MountAttr::default(),
        )
        .unwrap();

        let mounts = mount_points();
        assert!(mounts.contains(&root.join("a.old/fs")), "{mounts:?}");
        assert!(mounts.contains(&root.join("a.old/bind")), "{mounts:?}");
        assert!(!mounts.iter().any(|m| m.starts_with(&host)), "{mounts:?}");
        assert_eq!(
            fs::read_to_string(root.join("a.old/bind/marker")).unwrap(),
            "bound"
        );
        assert_eq!(fs::read_dir(host.join("bind")).unwrap().count(), 0);
        for m in ["a.old/fs", "a.old/bind"] {
            umount2(&root.join(m), MntFlags::MNT_DETACH).unwrap();
        }
        fs::remove_dir_all(&base).unwrap();
    }

    /// Where the kernel refuses a fresh sysfs (user namespaces), the host's is bound with the
    /// spec's restrictions on every submount: its cgroup mounts must not be writable.
    #[test]
    fn host_sysfs_fallback_is_read_only_all_the_way_down() {
        if !in_private_mount_ns("rootfs::tests::host_sysfs_fallback_is_read_only_all_the_way_down")
        {
            return;
        }
        let base = std::env::temp_dir().join(format!("shim-rs-sysfs-{}", std::process::id()));
        fs::create_dir_all(base.join("root/sys")).unwrap();
        let m: oci_spec::runtime::Mount = serde_json::from_str(
            r#"{"destination":"/sys","type":"sysfs","source":"sysfs",
                "options":["nosuid","noexec","nodev","ro"]}"#,
        )
        .unwrap();
        let plan = crate::plan::mounts::plan_mount(5, &m, Path::new("/b")).unwrap();
        let r = RootDir::open(&base.join("root")).unwrap();
        let target = r.create(Path::new("/sys"), Create::Dir).unwrap();
        bind_host_sysfs(&r, "mounts[5]", &plan, target.as_fd()).unwrap();
        let sub = fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
            .filter(|p| p.starts_with(base.join("root/sys")))
            .collect::<Vec<_>>();
        assert!(sub.len() > 1, "no submounts came along: {sub:?}");
        for p in &sub {
            let f = statvfs(p).unwrap().flags();
            for flag in [FsFlags::ST_RDONLY, FsFlags::ST_NOSUID, FsFlags::ST_NOEXEC] {
                assert!(f.contains(flag), "{} lacks {flag:?}", p.display());
            }
        }
        umount2(&base.join("root/sys"), MntFlags::MNT_DETACH).unwrap();
        fs::remove_dir_all(&base).unwrap();
    }

    /// The recursive attributes reach every mount below the destination; the plain ones only
    /// the top.
    #[test]
    fn recursive_attributes_reach_submounts_of_a_bind() {
        if !in_private_mount_ns("rootfs::tests::recursive_attributes_reach_submounts_of_a_bind") {
            return;
        }
        let base = std::env::temp_dir().join(format!("shim-rs-rattr-{}", std::process::id()));
        let (src, dst) = (base.join("src"), base.join("dst"));
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::create_dir_all(&dst).unwrap();
        mount(
            Some("tmpfs"),
            &src.join("sub"),
            Some("tmpfs"),
            MsFlags::empty(),
            NONE,
        )
        .unwrap();
        let target = fs::File::open(&dst).unwrap();
        let ro = MountAttr::from_ms_flags(libc::MS_RDONLY);
        let rec = MountAttr {
            set: crate::plan::mounts::MOUNT_ATTR_NOEXEC,
            clear: 0,
        };
        bind_onto(&src, target.as_fd(), true, ro, rec).unwrap();
        let flags = |p: &Path| statvfs(p).unwrap().flags();
        assert!(flags(&dst).contains(FsFlags::ST_RDONLY));
        assert!(flags(&dst).contains(FsFlags::ST_NOEXEC));
        assert!(!flags(&dst.join("sub")).contains(FsFlags::ST_RDONLY));
        assert!(flags(&dst.join("sub")).contains(FsFlags::ST_NOEXEC));
        umount2(&dst, MntFlags::MNT_DETACH).unwrap();
        umount2(&src.join("sub"), MntFlags::MNT_DETACH).unwrap();
        fs::remove_dir_all(&base).unwrap();
    }
}
