//! Mounts: the OCI mount-option table turned into mount(2) flags, data and propagation.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use oci_spec::runtime::Mount;
use serde::{Deserialize, Serialize};

use super::{
    cgroupfs::CgroupFs,
    idmap::{self, MountIdmap},
};
use crate::{Error, Result};

/// mount_setattr(2) attributes (`MOUNT_ATTR_*` of <linux/mount.h>): the values the plan
/// speaks in; rootfs::mount hands them to the kernel.
pub const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
pub const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
pub const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x0000_0008;
pub const MOUNT_ATTR_ATIME: u64 = 0x0000_0070;
pub const MOUNT_ATTR_RELATIME: u64 = 0x0000_0000;
pub const MOUNT_ATTR_NOATIME: u64 = 0x0000_0010;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x0000_0020;
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x0000_0080;
pub const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// Mount attributes to set and clear with mount_setattr(2) (`MOUNT_ATTR_*`). Changing the
/// atime mode needs `clear` to hold all of [`MOUNT_ATTR_ATIME`] and `set` one mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountAttr {
    pub set: u64,
    pub clear: u64,
}

impl MountAttr {
    pub fn is_empty(&self) -> bool {
        self.set == 0 && self.clear == 0
    }

    /// The attributes matching mount(2) flags (ro, nosuid, nodev, noexec, atime, nosymfollow).
    pub fn from_ms_flags(flags: u64) -> MountAttr {
        let mut a = MountAttr::default();
        for (ms, attr) in [
            (libc::MS_RDONLY, MOUNT_ATTR_RDONLY),
            (libc::MS_NOSUID, MOUNT_ATTR_NOSUID),
            (libc::MS_NODEV, MOUNT_ATTR_NODEV),
            (libc::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
            (libc::MS_NODIRATIME, MOUNT_ATTR_NODIRATIME),
            (libc::MS_NOSYMFOLLOW, MOUNT_ATTR_NOSYMFOLLOW),
        ] {
            if flags & ms != 0 {
                a.set |= attr;
            }
        }
        let atime = if flags & libc::MS_NOATIME != 0 {
            Some(MOUNT_ATTR_NOATIME)
        } else if flags & libc::MS_STRICTATIME != 0 {
            Some(MOUNT_ATTR_STRICTATIME)
        } else if flags & libc::MS_RELATIME != 0 {
            Some(MOUNT_ATTR_RELATIME)
        } else {
            None
        };
        if let Some(mode) = atime {
            a.set |= mode;
            a.clear |= MOUNT_ATTR_ATIME;
        }
        a
    }
}

/// One mount of the container, ready for mount(2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPlan {
    /// Absolute path inside the container.
    pub destination: PathBuf,
    /// Host path for binds (made absolute against the bundle), or the fs source string.
    pub source: Option<PathBuf>,
    pub fstype: Option<String>,
    /// mount(2) flags. A bind gets ro, nosuid, ... as mount attributes of its detached copy
    /// before it is attached (see crate::rootfs).
    pub flags: u64,
    /// Filesystem data: the options that are not flags, joined by commas.
    pub data: String,
    /// Propagation changes, each its own mount(2) call after the mount.
    pub propagation: Vec<u64>,
    /// The recursive options (rro, rnosuid, ...): mount_setattr(AT_RECURSIVE) on the new tree.
    #[serde(default)]
    pub recursive: MountAttr,
    /// tmpcopyup: the new tmpfs starts with a copy of what the destination held.
    #[serde(default)]
    pub tmpcopyup: bool,
    /// Set for cgroup filesystems (see [`super::cgroupfs`]).
    #[serde(default)]
    pub cgroup: Option<CgroupFs>,
    /// An idmapped bind mount: its tree is made by the launcher, outside the container.
    #[serde(default)]
    pub idmap: Option<MountIdmap>,
}

impl MountPlan {
    pub fn is_bind(&self) -> bool {
        self.flags & MsFlags::MS_BIND.bits() != 0
    }
}

/// How an option changes the mount flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MountOption {
    Set(MsFlags),
    Clear(MsFlags),
    Propagation(MsFlags),
    /// A recursive attribute (MOUNT_ATTR_*) to set, or to clear.
    RecursiveSet(u64),
    RecursiveClear(u64),
    /// A recursive atime mode (MOUNT_ATTR_RELATIME, _NOATIME or _STRICTATIME).
    RecursiveAtime(u64),
    TmpCopyUp,
    /// `idmap`, or `ridmap` (recursive).
    Idmap {
        recursive: bool,
    },
}

/// The OCI mount-option table (runtime-spec config.md, "Mount options").
fn lookup(option: &str) -> Option<MountOption> {
    use MountOption::*;
    let flag = |f| Some(Set(f));
    let clear = |f| Some(Clear(f));
    let prop = |f| Some(Propagation(f));
    match option {
        "defaults" => Some(Set(MsFlags::empty())),
        "async" => clear(MsFlags::MS_SYNCHRONOUS),
        "sync" => flag(MsFlags::MS_SYNCHRONOUS),
        "atime" => clear(MsFlags::MS_NOATIME),
        "noatime" => flag(MsFlags::MS_NOATIME),
        "bind" => flag(MsFlags::MS_BIND),
        "rbind" => flag(MsFlags::MS_BIND | MsFlags::MS_REC),
        "dev" => clear(MsFlags::MS_NODEV),
        "nodev" => flag(MsFlags::MS_NODEV),
        "diratime" => clear(MsFlags::MS_NODIRATIME),
        "nodiratime" => flag(MsFlags::MS_NODIRATIME),
        "dirsync" => flag(MsFlags::MS_DIRSYNC),
        "exec" => clear(MsFlags::MS_NOEXEC),
        "noexec" => flag(MsFlags::MS_NOEXEC),
        "iversion" => flag(MsFlags::MS_I_VERSION),
        "noiversion" => clear(MsFlags::MS_I_VERSION),
        "lazytime" => flag(MsFlags::MS_LAZYTIME),
        "nolazytime" => clear(MsFlags::MS_LAZYTIME),
        "loud" => clear(MsFlags::MS_SILENT),
        "silent" => flag(MsFlags::MS_SILENT),
        "mand" => flag(MsFlags::MS_MANDLOCK),
        "nomand" => clear(MsFlags::MS_MANDLOCK),
        "relatime" => flag(MsFlags::MS_RELATIME),
        "norelatime" => clear(MsFlags::MS_RELATIME),
        "strictatime" => flag(MsFlags::MS_STRICTATIME),
        "nostrictatime" => clear(MsFlags::MS_STRICTATIME),
        "nosymfollow" => flag(MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW)),
        "symfollow" => clear(MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW)),
        "remount" => flag(MsFlags::MS_REMOUNT),
        "ro" => flag(MsFlags::MS_RDONLY),
        "rw" => clear(MsFlags::MS_RDONLY),
        "suid" => clear(MsFlags::MS_NOSUID),
        "nosuid" => flag(MsFlags::MS_NOSUID),
        "private" => prop(MsFlags::MS_PRIVATE),
        "rprivate" => prop(MsFlags::MS_PRIVATE | MsFlags::MS_REC),
        "shared" => prop(MsFlags::MS_SHARED),
        "rshared" => prop(MsFlags::MS_SHARED | MsFlags::MS_REC),
        "slave" => prop(MsFlags::MS_SLAVE),
        "rslave" => prop(MsFlags::MS_SLAVE | MsFlags::MS_REC),
        "unbindable" => prop(MsFlags::MS_UNBINDABLE),
        "runbindable" => prop(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
        "rro" => Some(RecursiveSet(MOUNT_ATTR_RDONLY)),
        "rrw" => Some(RecursiveClear(MOUNT_ATTR_RDONLY)),
        "rnosuid" => Some(RecursiveSet(MOUNT_ATTR_NOSUID)),
        "rsuid" => Some(RecursiveClear(MOUNT_ATTR_NOSUID)),
        "rnodev" => Some(RecursiveSet(MOUNT_ATTR_NODEV)),
        "rdev" => Some(RecursiveClear(MOUNT_ATTR_NODEV)),
        "rnoexec" => Some(RecursiveSet(MOUNT_ATTR_NOEXEC)),
        "rexec" => Some(RecursiveClear(MOUNT_ATTR_NOEXEC)),
        "rnodiratime" => Some(RecursiveSet(MOUNT_ATTR_NODIRATIME)),
        "rdiratime" => Some(RecursiveClear(MOUNT_ATTR_NODIRATIME)),
        "rnosymfollow" => Some(RecursiveSet(MOUNT_ATTR_NOSYMFOLLOW)),
        "rsymfollow" => Some(RecursiveClear(MOUNT_ATTR_NOSYMFOLLOW)),
        // The kernel keeps one atime mode per mount; the "no" forms select what mount(8)
        // means by them: norelatime is strictatime, atime and nostrictatime the default.
        "rrelatime" | "ratime" | "rnostrictatime" => Some(RecursiveAtime(MOUNT_ATTR_RELATIME)),
        "rnoatime" => Some(RecursiveAtime(MOUNT_ATTR_NOATIME)),
        "rstrictatime" | "rnorelatime" => Some(RecursiveAtime(MOUNT_ATTR_STRICTATIME)),
        "tmpcopyup" => Some(TmpCopyUp),
        "idmap" => Some(Idmap { recursive: false }),
        "ridmap" => Some(Idmap { recursive: true }),
        _ => None,
    }
}

/// Plans one spec mount; `index` names it in errors (`mounts[3]`).
pub fn plan_mount(index: usize, mount: &Mount, bundle: &Path) -> Result<MountPlan> {
    let field = |sub: &str| format!("mounts[{index}]{sub}");
    let destination = mount.destination().clone();
    if !destination.is_absolute() {
        return Err(Error::invalid(
            field(".destination"),
            format!("{} is not an absolute path", destination.display()),
        ));
    }
    let mut flags = MsFlags::empty();
    let mut propagation = Vec::new();
    let mut data = Vec::new();
    let mut recursive = MountAttr::default();
    let mut tmpcopyup = false;
    let mut idmap_option: Option<bool> = None;
    for option in mount.options().iter().flatten() {
        match lookup(option) {
            Some(MountOption::Set(f)) => flags |= f,
            Some(MountOption::Clear(f)) => flags &= !f,
            Some(MountOption::Propagation(f)) => propagation.push(f.bits()),
            Some(MountOption::RecursiveSet(a)) => {
                recursive.set |= a;
                recursive.clear &= !a;
            }
            Some(MountOption::RecursiveClear(a)) => {
                recursive.clear |= a;
                recursive.set &= !a;
            }
            Some(MountOption::RecursiveAtime(a)) => {
                recursive.set = (recursive.set & !MOUNT_ATTR_ATIME) | a;
                recursive.clear |= MOUNT_ATTR_ATIME;
            }
            Some(MountOption::TmpCopyUp) => tmpcopyup = true,
            Some(MountOption::Idmap { recursive: r }) => {
                idmap_option = Some(r || idmap_option == Some(true))
            }
            None => data.push(option.as_str()),
        }
    }

    let fstype = mount.typ().clone().filter(|t| !t.is_empty());
    if fstype.as_deref() == Some("bind") {
        // "type": "bind" without a bind option still means a bind mount (runc does the same).
        flags |= MsFlags::MS_BIND;
    }
    if tmpcopyup && fstype.as_deref() != Some("tmpfs") {
        return Err(Error::invalid(
            field(".options"),
            "tmpcopyup needs a mount of type tmpfs",
        ));
    }

    let is_bind = flags.contains(MsFlags::MS_BIND);
    let mut source = mount.source().clone();
    if is_bind {
        let Some(src) = source.as_mut() else {
            return Err(Error::invalid(
                field(".source"),
                "a bind mount needs a source",
            ));
        };
        if src.is_relative() {
            *src = bundle.join(&*src);
        }
    }

    let idmap = idmap::plan_mount_idmap(index, mount, idmap_option, is_bind)?;

    Ok(MountPlan {
        destination,
        source,
        fstype,
        flags: flags.bits(),
        data: data.join(","),
        propagation,
        recursive,
        tmpcopyup,
        cgroup: None,
        idmap,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::MountBuilder;

    fn mount(typ: &str, src: &str, dst: &str, opts: &[&str]) -> Mount {
        MountBuilder::default()
            .typ(typ)
            .source(src)
            .destination(dst)
            .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .build()
            .unwrap()
    }

    fn plan(opts: &[&str]) -> MountPlan {
        plan_mount(0, &mount("tmpfs", "tmpfs", "/x", opts), Path::new("/b")).unwrap()
    }

    #[test]
    fn every_flag_option_of_the_table() {
        let table: &[(&str, MsFlags)] = &[
            ("sync", MsFlags::MS_SYNCHRONOUS),
            ("noatime", MsFlags::MS_NOATIME),
            ("nodev", MsFlags::MS_NODEV),
            ("nodiratime", MsFlags::MS_NODIRATIME),
            ("dirsync", MsFlags::MS_DIRSYNC),
            ("noexec", MsFlags::MS_NOEXEC),
            ("iversion", MsFlags::MS_I_VERSION),
            ("lazytime", MsFlags::MS_LAZYTIME),
            ("silent", MsFlags::MS_SILENT),
            ("mand", MsFlags::MS_MANDLOCK),
            ("relatime", MsFlags::MS_RELATIME),
            ("strictatime", MsFlags::MS_STRICTATIME),
            (
                "nosymfollow",
                MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW),
            ),
            ("remount", MsFlags::MS_REMOUNT),
            ("ro", MsFlags::MS_RDONLY),
            ("nosuid", MsFlags::MS_NOSUID),
        ];
        for (opt, f) in table {
            assert_eq!(plan(&[opt]).flags, f.bits(), "{opt}");
        }
    }

    #[test]
    fn clear_options_undo_their_flag() {
        let pairs = [
            ("sync", "async"),
            ("noatime", "atime"),
            ("nodev", "dev"),
            ("nodiratime", "diratime"),
            ("noexec", "exec"),
            ("iversion", "noiversion"),
            ("lazytime", "nolazytime"),
            ("silent", "loud"),
            ("mand", "nomand"),
            ("relatime", "norelatime"),
            ("strictatime", "nostrictatime"),
            ("nosymfollow", "symfollow"),
            ("ro", "rw"),
            ("nosuid", "suid"),
        ];
        for (set, clear) in pairs {
            assert_eq!(plan(&[set, clear]).flags, 0, "{set},{clear}");
            assert_ne!(plan(&[clear, set]).flags, 0, "{clear},{set}: last one wins");
        }
    }

    #[test]
    fn defaults_sets_nothing_and_unknown_options_become_data() {
        let p = plan(&["defaults", "mode=755", "size=65536k", "nosuid"]);
        assert_eq!(p.flags, MsFlags::MS_NOSUID.bits());
        assert_eq!(p.data, "mode=755,size=65536k");
        assert!(p.propagation.is_empty());
    }

    #[test]
    fn propagation_options_are_separate_calls_in_order() {
        let p = plan(&[
            "rprivate",
            "shared",
            "slave",
            "rslave",
            "unbindable",
            "runbindable",
            "private",
            "rshared",
        ]);
        let rec = MsFlags::MS_REC;
        let expect: Vec<u64> = [
            MsFlags::MS_PRIVATE | rec,
            MsFlags::MS_SHARED,
            MsFlags::MS_SLAVE,
            MsFlags::MS_SLAVE | rec,
            MsFlags::MS_UNBINDABLE,
            MsFlags::MS_UNBINDABLE | rec,
            MsFlags::MS_PRIVATE,
            MsFlags::MS_SHARED | rec,
        ]
        .iter()
        .map(|f| f.bits())
        .collect();
        assert_eq!(p.propagation, expect);
        assert_eq!(p.flags, 0);
    }

    #[test]
    fn read_only_bind_keeps_its_flags_and_relative_source_uses_the_bundle() {
        let m = mount("none", "data", "/data", &["rbind", "ro", "nosuid"]);
        let p = plan_mount(0, &m, Path::new("/bundle")).unwrap();
        assert_eq!(p.source.as_deref(), Some(Path::new("/bundle/data")));
        assert!(p.is_bind());
        assert_eq!(
            p.flags,
            (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID).bits()
        );
    }

    #[test]
    fn type_bind_implies_bind() {
        let m = mount("bind", "/host", "/c", &[]);
        let p = plan_mount(0, &m, Path::new("/b")).unwrap();
        assert!(p.is_bind());
        assert_eq!(p.flags, MsFlags::MS_BIND.bits());
        assert_eq!(p.source.as_deref(), Some(Path::new("/host")));
    }

    #[test]
    fn errors_name_the_mount_and_field() {
        let e = plan_mount(2, &mount("tmpfs", "t", "rel/path", &[]), Path::new("/b")).unwrap_err();
        assert!(e.to_string().contains("mounts[2].destination"), "{e}");
        let e = plan_mount(1, &mount("tmpfs", "t", "/c", &["idmap"]), Path::new("/b")).unwrap_err();
        assert!(
            e.to_string().contains("mounts[1].options") && e.to_string().contains("bind mounts"),
            "{e}"
        );
        let e = plan_mount(
            3,
            &mount("bind", "/h", "/c", &["rbind", "tmpcopyup"]),
            Path::new("/b"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("mounts[3].options"), "{e}");
    }

    #[test]
    fn recursive_options_become_mount_attributes() {
        let p = |opts: &[&str]| {
            plan_mount(0, &mount("bind", "/h", "/c", opts), Path::new("/b"))
                .unwrap()
                .recursive
        };
        let table: &[(&str, &str, u64)] = &[
            ("rro", "rrw", MOUNT_ATTR_RDONLY),
            ("rnosuid", "rsuid", MOUNT_ATTR_NOSUID),
            ("rnodev", "rdev", MOUNT_ATTR_NODEV),
            ("rnoexec", "rexec", MOUNT_ATTR_NOEXEC),
            ("rnodiratime", "rdiratime", MOUNT_ATTR_NODIRATIME),
            ("rnosymfollow", "rsymfollow", MOUNT_ATTR_NOSYMFOLLOW),
        ];
        for (set, clear, attr) in table {
            assert_eq!(
                p(&[set]),
                MountAttr {
                    set: *attr,
                    clear: 0
                },
                "{set}"
            );
            assert_eq!(
                p(&[clear]),
                MountAttr {
                    set: 0,
                    clear: *attr
                },
                "{clear}"
            );
            assert_eq!(
                p(&[set, clear]),
                MountAttr {
                    set: 0,
                    clear: *attr
                },
                "{set},{clear}"
            );
        }
        for (opt, mode) in [
            ("rnoatime", MOUNT_ATTR_NOATIME),
            ("rstrictatime", MOUNT_ATTR_STRICTATIME),
            ("rnorelatime", MOUNT_ATTR_STRICTATIME),
            ("rrelatime", MOUNT_ATTR_RELATIME),
            ("ratime", MOUNT_ATTR_RELATIME),
            ("rnostrictatime", MOUNT_ATTR_RELATIME),
        ] {
            assert_eq!(
                p(&["rnoexec", opt]),
                MountAttr {
                    set: MOUNT_ATTR_NOEXEC | mode,
                    clear: MOUNT_ATTR_ATIME
                },
                "{opt}"
            );
        }
        // The last atime option wins.
        assert_eq!(p(&["rnoatime", "ratime"]).set, MOUNT_ATTR_RELATIME);
        // Recursive options leave the mount(2) flags alone.
        let m = plan_mount(
            0,
            &mount("bind", "/h", "/c", &["rbind", "rro"]),
            Path::new("/b"),
        )
        .unwrap();
        assert_eq!(m.flags, (MsFlags::MS_BIND | MsFlags::MS_REC).bits());
    }

    #[test]
    fn tmpcopyup_is_planned_for_tmpfs() {
        let p = plan_mount(
            0,
            &mount("tmpfs", "tmpfs", "/etc", &["tmpcopyup", "mode=755"]),
            Path::new("/b"),
        )
        .unwrap();
        assert!(p.tmpcopyup);
        assert_eq!(p.data, "mode=755");
    }

    #[test]
    fn cgroup_mounts_are_planned_later_with_the_host_layout() {
        let p = plan_mount(
            3,
            &mount("cgroup", "cgroup", "/sys/fs/cgroup", &["ro", "nosuid"]),
            Path::new("/b"),
        )
        .unwrap();
        assert_eq!(p.fstype.as_deref(), Some("cgroup"));
        assert_eq!(p.cgroup, None);
    }

    #[test]
    fn ms_flags_map_to_mount_attributes() {
        let a = MountAttr::from_ms_flags(libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC);
        assert_eq!(
            a,
            MountAttr {
                set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
                clear: 0
            }
        );
        let a = MountAttr::from_ms_flags(libc::MS_NOATIME | libc::MS_NODEV);
        assert_eq!(a.set, MOUNT_ATTR_NOATIME | MOUNT_ATTR_NODEV);
        assert_eq!(a.clear, MOUNT_ATTR_ATIME);
        let a = MountAttr::from_ms_flags(libc::MS_RELATIME);
        assert_eq!((a.set, a.clear), (MOUNT_ATTR_RELATIME, MOUNT_ATTR_ATIME));
        assert!(MountAttr::from_ms_flags(libc::MS_BIND | libc::MS_REC).is_empty());
    }
}
