//! Entering the rootfs without pivot_root: the rootfs mount is moved onto "/" (MS_MOVE) and
//! the init chroots into it, as runc does with `--no-pivot`.
//!
//! This is weaker than pivot_root: the old root stays in the container's mount namespace,
//! underneath the moved rootfs, so a process that may chroot (CAP_SYS_CHROOT) or unmount can
//! find its way back to it. It is used only when containerd asks for it (the `no_pivot_root`
//! option) or when pivot_root cannot work: a host whose root is the initramfs (rootfs), which
//! pivot_root refuses with EINVAL. Before the move, every full procfs and sysfs of the host
//! is detached (or covered), as runc does: the kernel lets a container mount a new procfs
//! only when no covered-up full one is visible, and the host's must not be reachable.

use std::{
    fs,
    path::{Path, PathBuf},
};

use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    unistd::{chroot, fchdir},
};

use super::resolve::RootDir;
use crate::{Error, Result};

const NONE: Option<&str> = None;

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = (b[i] == b'\\' && i + 4 <= b.len())
            .then(|| std::str::from_utf8(&b[i + 1..i + 4]).ok())
            .flatten()
            .and_then(|s| u8::from_str_radix(s, 8).ok());
        if let Some(v) = octal {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (mount point, root, fstype) of each line of a mountinfo file.
fn entries(mountinfo: &str) -> Vec<(String, String, String)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut l = left.split(' ');
            let root = l.nth(3)?;
            let mountpoint = l.next()?;
            let fstype = right.split(' ').next()?;
            Some((unescape(mountpoint), unescape(root), fstype.to_owned()))
        })
        .collect()
}

/// True when the visible "/" (the last mount on it) is the initramfs, which pivot_root
/// cannot move away from.
pub fn root_is_initramfs(mountinfo: &str) -> bool {
    entries(mountinfo)
        .iter()
        .rev()
        .find(|(mp, _, _)| mp == "/")
        .is_some_and(|(_, _, fstype)| fstype == "rootfs")
}

/// Full procfs and sysfs mounts outside `rootfs`: they must go before the chroot.
fn host_proc_and_sys(mountinfo: &str, rootfs: &Path) -> Vec<PathBuf> {
    entries(mountinfo)
        .into_iter()
        .filter(|(mp, root, fstype)| {
            (fstype == "proc" || fstype == "sysfs")
                && root == "/"
                && !Path::new(mp).starts_with(rootfs)
        })
        .map(|(mp, _, _)| PathBuf::from(mp))
        .collect()
}

/// Moves the rootfs onto "/" and chroots into it.
pub fn move_root(root: &RootDir) -> Result<()> {
    let rootfs = fs::canonicalize(root.path()).map_err(|e| Error::io(root.path(), e))?;
    let mountinfo = crate::procfs::handle()?
        .read_self("mountinfo")
        .map_err(|e| Error::io("/proc/self/mountinfo", e))?;
    for p in host_proc_and_sys(&mountinfo, &rootfs) {
        match umount2(&p, MntFlags::MNT_DETACH) {
            // Gone with an earlier detach of a parent.
            Ok(()) | Err(nix::Error::ENOENT) => {}
            Err(nix::Error::EINVAL) | Err(nix::Error::EPERM) => {
                mount(
                    Some("tmpfs"),
                    &p,
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some("size=0"),
                )
                .map_err(|e| Error::sys(format!("no_pivot_root: cover {}", p.display()), e))?;
            }
            Err(e) => {
                return Err(Error::sys(
                    format!("no_pivot_root: detach {}", p.display()),
                    e,
                ))
            }
        }
    }
    fchdir(root).map_err(|e| Error::sys("no_pivot_root: enter rootfs", e))?;
    mount(Some("."), "/", NONE, MsFlags::MS_MOVE, NONE).map_err(|e| {
        Error::sys(
            format!("no_pivot_root: move {} onto /", rootfs.display()),
            e,
        )
    })?;
    chroot(".").map_err(|e| Error::sys("no_pivot_root: chroot", e))?;
    nix::unistd::chdir("/").map_err(|e| Error::sys("no_pivot_root: chdir /", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initramfs_root_is_detected_from_the_top_mount_on_slash() {
        assert!(root_is_initramfs(
            "1 1 0:2 / / rw - rootfs rootfs rw\n22 1 0:20 / /proc rw - proc proc rw\n"
        ));
        // switch_root'ed hosts show their real root file system.
        assert!(!root_is_initramfs(
            "25 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n22 25 0:20 / /proc rw - proc proc rw\n"
        ));
        // An overlay mounted over the initramfs root: the top one counts.
        assert!(!root_is_initramfs(
            "1 1 0:2 / / rw - rootfs rootfs rw\n30 1 0:40 / / rw - overlay overlay rw\n"
        ));
    }

    #[test]
    fn only_full_host_proc_and_sysfs_outside_the_rootfs_are_hidden() {
        let mi = "\
25 1 8:1 / / rw - ext4 /dev/sda1 rw
22 25 0:20 / /proc rw - proc proc rw
23 25 0:21 / /sys rw - sysfs sysfs rw
24 25 0:22 /sub /mnt/partial rw - proc proc rw
26 25 0:30 / /run/b/my\\040rootfs rw - overlay overlay rw
27 26 0:31 / /run/b/my\\040rootfs/proc rw - proc proc rw
28 25 0:32 / /run/b/my\\040rootfs-other/sys rw - sysfs sysfs rw
";
        assert_eq!(
            host_proc_and_sys(mi, Path::new("/run/b/my rootfs")),
            [
                PathBuf::from("/proc"),
                PathBuf::from("/sys"),
                PathBuf::from("/run/b/my rootfs-other/sys")
            ]
        );
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape("/a\\040b\\011c\\134d"), "/a b\tc\\d");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/trailing\\04"), "/trailing\\04");
    }
}
