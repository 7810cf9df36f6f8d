//! The rootfs containerd prepares for a container (Create's `rootfs` mounts: usually one
//! overlay from its snapshotter, sometimes a bind), mounted onto `<bundle>/rootfs`.
//!
//! A pod with its own user namespace (Kubernetes `hostUsers: false`) on containerd 2.x gets
//! `uidmap=`/`gidmap=` options on that overlay: the image layers are shared with every other
//! pod, so they are not chowned; each lower layer is seen through an idmapped mount instead,
//! and the container's root owns its files. These options are containerd's, not the
//! kernel's: the lowers are cloned, idmapped and attached below the bundle, the overlay is
//! mounted on them (it keeps its own private copies of its layers), and they are detached
//! again, as containerd's runc shim does.

use std::{
    fs,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
};

use containerd_shim_protos::api;
use log::warn;
use nix::mount::{umount2, MntFlags, MsFlags};
use runtime::{
    launch::Zygote,
    plan::idmap::{parse_option_mappings, IdMappings},
    plan::mounts::MountAttr,
    rootfs::mount as mountapi,
    state,
};

use crate::error::{Error, Result};

/// One of containerd's rootfs mounts, its options sorted into what mount(2) takes and
/// what we do ourselves.
#[derive(Debug, PartialEq, Eq)]
struct RootfsMount {
    /// None for a bind.
    fstype: Option<String>,
    source: String,
    flags: MsFlags,
    /// Filesystem options, in their order.
    data: Vec<String>,
    /// From `uidmap=` and `gidmap=`.
    idmap: Option<IdMappings>,
}

/// Where the idmapped lower layers of an overlay are attached while it is mounted.
const IDMAPPED_LOWERS: &str = ".idmapped-lowers";

impl RootfsMount {
    fn parse(index: usize, m: &api::Mount) -> Result<RootfsMount> {
        let field = format!("rootfs[{index}] ({} {})", m.type_, m.source);
        let mut flags = MsFlags::empty();
        let mut data = Vec::new();
        let (mut uidmap, mut gidmap) = (None, None);
        for o in &m.options {
            match o.as_str() {
                "ro" => flags |= MsFlags::MS_RDONLY,
                "rw" => {}
                "bind" => flags |= MsFlags::MS_BIND,
                "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
                "nosuid" => flags |= MsFlags::MS_NOSUID,
                "nodev" => flags |= MsFlags::MS_NODEV,
                "noexec" => flags |= MsFlags::MS_NOEXEC,
                other => match other.split_once('=') {
                    Some(("uidmap", maps)) => uidmap = Some(maps),
                    Some(("gidmap", maps)) => gidmap = Some(maps),
                    _ => data.push(other.to_owned()),
                },
            }
        }
        let idmap = match (uidmap, gidmap) {
            (None, None) => None,
            (Some(uid), Some(gid)) => Some(IdMappings {
                uid: parse_option_mappings(&format!("{field}: option uidmap"), uid)?,
                gid: parse_option_mappings(&format!("{field}: option gidmap"), gid)?,
            }),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "{field}: options uidmap and gidmap come together, one is missing"
                )))
            }
        };
        let is_bind = flags.contains(MsFlags::MS_BIND) || m.type_.is_empty() || m.type_ == "bind";
        if idmap.is_some() && !is_bind && m.type_ != "overlay" {
            return Err(Error::Unimplemented(format!(
                "{field}: uidmap/gidmap on a {} mount (supported: overlay and bind)",
                m.type_
            )));
        }
        Ok(RootfsMount {
            fstype: (!is_bind).then(|| m.type_.clone()),
            source: m.source.clone(),
            flags: if is_bind {
                flags | MsFlags::MS_BIND
            } else {
                flags
            },
            data,
            idmap,
        })
    }

    /// The overlay's lower layers (`lowerdir=a:b:...`) and the index of that option.
    fn lowerdirs(&self) -> Option<(usize, Vec<PathBuf>)> {
        self.data.iter().enumerate().find_map(|(i, o)| {
            o.strip_prefix("lowerdir=")
                .map(|l| (i, l.split(':').map(PathBuf::from).collect()))
        })
    }
}

/// Idmapped copies of an overlay's lower layers, attached at `<bundle>/.idmapped-lowers/<n>`
/// until dropped.
struct IdmappedLowers {
    dir: PathBuf,
    attached: Vec<PathBuf>,
}

impl IdmappedLowers {
    fn attach(bundle: &Path, lowers: &[PathBuf], userns: &OwnedFd) -> Result<IdmappedLowers> {
        let dir = bundle.join(IDMAPPED_LOWERS);
        let mut out = IdmappedLowers {
            dir: dir.clone(),
            attached: Vec::with_capacity(lowers.len()),
        };
        fs::create_dir_all(&dir)
            .map_err(|e| Error::Internal(format!("mkdir {}: {e}", dir.display())))?;
        for (n, lower) in lowers.iter().enumerate() {
            let err = |what: &str, e: std::io::Error| {
                Error::Internal(format!(
                    "rootfs: idmapped lower layer {}: {what}: {e}",
                    lower.display()
                ))
            };
            let at = dir.join(n.to_string());
            match fs::create_dir(&at) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(err("mkdir", e))
                }
                _ => {}
            }
            let tree = mountapi::clone_tree(lower, false).map_err(|e| err("open_tree", e))?;
            mountapi::set_idmap(tree.as_fd(), userns.as_fd(), false)
                .map_err(|e| err("mount_setattr idmap", e))?;
            mountapi::set_mount_attr(
                tree.as_fd(),
                MountAttr::from_ms_flags(libc::MS_RDONLY),
                false,
            )
            .map_err(|e| err("mount_setattr ro", e))?;
            let target = fs::File::open(&at).map_err(|e| err("open", e))?;
            mountapi::move_mount_to_fd(tree.as_fd(), target.as_fd())
                .map_err(|e| err("move_mount", e))?;
            out.attached.push(at);
        }
        Ok(out)
    }
}

impl Drop for IdmappedLowers {
    fn drop(&mut self) {
        for at in &self.attached {
            if let Err(e) = umount2(at, MntFlags::MNT_DETACH) {
                warn!("unmount idmapped lower layer {}: {e}", at.display());
            }
            let _ = fs::remove_dir(at);
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Mounts what containerd prepared onto `<bundle>/rootfs`; false when there was nothing to
/// mount (the bundle brings its own rootfs). On error nothing stays mounted.
pub fn mount(bundle: &Path, mounts: &[api::Mount], zygote: &Zygote) -> Result<bool> {
    if mounts.is_empty() {
        return Ok(false);
    }
    let target = bundle.join("rootfs");
    fs::create_dir_all(&target)
        .map_err(|e| Error::Internal(format!("mkdir {}: {e}", target.display())))?;
    for (i, m) in mounts.iter().enumerate() {
        let parsed = RootfsMount::parse(i, m);
        if let Err(e) = parsed.and_then(|p| mount_one(bundle, &target, i, m, p, zygote)) {
            let _ = state::unmount_rootfs(&target);
            return Err(e);
        }
    }
    Ok(true)
}

fn mount_one(
    bundle: &Path,
    target: &Path,
    index: usize,
    m: &api::Mount,
    mut p: RootfsMount,
    zygote: &Zygote,
) -> Result<()> {
    let what = format!("mount rootfs[{index}] ({} {})", m.type_, m.source);
    let userns = match &p.idmap {
        Some(maps) => Some(zygote.user_namespace(maps, &format!("rootfs[{index}]"))?),
        None => None,
    };
    if let (Some(userns), None) = (&userns, &p.fstype) {
        // An idmapped bind: the copy gets its mapping and flags while still detached.
        let recursive = p.flags.contains(MsFlags::MS_REC);
        let err = |step: &str, e: std::io::Error| Error::Internal(format!("{what}: {step}: {e}"));
        let tree = mountapi::clone_tree(Path::new(&p.source), recursive)
            .map_err(|e| err("open_tree", e))?;
        mountapi::set_idmap(tree.as_fd(), userns.as_fd(), recursive)
            .map_err(|e| err("mount_setattr idmap", e))?;
        let attr_flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        mountapi::set_mount_attr(
            tree.as_fd(),
            MountAttr::from_ms_flags(p.flags.bits() & attr_flags),
            false,
        )
        .map_err(|e| err("mount_setattr", e))?;
        let dir = fs::File::open(target).map_err(|e| err("open target", e))?;
        return mountapi::move_mount_to_fd(tree.as_fd(), dir.as_fd())
            .map_err(|e| err("move_mount", e));
    }
    // Held until the overlay is mounted on them.
    let _lowers = match &userns {
        Some(userns) => {
            let (at, lowers) = p.lowerdirs().ok_or_else(|| {
                Error::InvalidArgument(format!("{what}: uidmap/gidmap without a lowerdir option"))
            })?;
            let attached = IdmappedLowers::attach(bundle, &lowers, userns)?;
            let joined: Vec<String> = attached
                .attached
                .iter()
                .map(|l| l.display().to_string())
                .collect();
            p.data[at] = format!("lowerdir={}", joined.join(":"));
            Some(attached)
        }
        None => None,
    };
    let data = p.data.join(",");
    if data.len() >= 4096 {
        return Err(Error::Unimplemented(format!(
            "{what}: mount options longer than a page ({} bytes) are not supported yet",
            data.len()
        )));
    }
    nix::mount::mount(
        Some(p.source.as_str()),
        target,
        p.fstype.as_deref(),
        p.flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(|e| Error::Internal(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime::plan::idmap::IdMapping;

    fn api_mount(type_: &str, source: &str, options: &[&str]) -> api::Mount {
        api::Mount {
            type_: type_.into(),
            source: source.into(),
            options: options.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn overlay_options_split_into_flags_data_and_idmap() {
        let m = api_mount(
            "overlay",
            "overlay",
            &[
                "index=off",
                "workdir=/s/2/work",
                "upperdir=/s/2/fs",
                "lowerdir=/s/1/fs:/s/0/fs",
                "uidmap=0:200000:65536",
                "gidmap=0:300000:65536",
                "nosuid",
            ],
        );
        let p = RootfsMount::parse(0, &m).unwrap();
        assert_eq!(p.fstype.as_deref(), Some("overlay"));
        assert_eq!(p.flags, MsFlags::MS_NOSUID);
        assert_eq!(
            p.data,
            [
                "index=off",
                "workdir=/s/2/work",
                "upperdir=/s/2/fs",
                "lowerdir=/s/1/fs:/s/0/fs"
            ]
        );
        let map = |host_id| {
            vec![IdMapping {
                container_id: 0,
                host_id,
                size: 65536,
            }]
        };
        assert_eq!(
            p.idmap,
            Some(IdMappings {
                uid: map(200000),
                gid: map(300000)
            })
        );
        assert_eq!(
            p.lowerdirs(),
            Some((3, vec![PathBuf::from("/s/1/fs"), PathBuf::from("/s/0/fs")]))
        );
    }

    #[test]
    fn bad_idmap_options_name_the_option() {
        let one = api_mount("overlay", "overlay", &["lowerdir=/l", "uidmap=0:1:1"]);
        let e = RootfsMount::parse(2, &one).unwrap_err().to_string();
        assert!(e.contains("rootfs[2]") && e.contains("gidmap"), "{e}");
        let bad = api_mount("overlay", "overlay", &["uidmap=0:1", "gidmap=0:1:1"]);
        let e = RootfsMount::parse(0, &bad).unwrap_err().to_string();
        assert!(e.contains("option uidmap"), "{e}");
        let tmpfs = api_mount("tmpfs", "tmpfs", &["uidmap=0:1:1", "gidmap=0:1:1"]);
        assert!(matches!(
            RootfsMount::parse(0, &tmpfs),
            Err(Error::Unimplemented(_))
        ));
        let bind = api_mount(
            "bind",
            "/x",
            &["rbind", "ro", "uidmap=0:1:1", "gidmap=0:1:1"],
        );
        let p = RootfsMount::parse(0, &bind).unwrap();
        assert_eq!(p.fstype, None);
        assert!(p
            .flags
            .contains(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY));
    }
}
