//! The `cgroup` filesystem inside the container (CRI mounts `/sys/fs/cgroup`, type cgroup).
//!
//! Whatever the host layout, the container sees its own cgroup and nothing above it: each
//! hierarchy is a bind of the container's directory in it. On cgroup v1 (and hybrid) hosts the
//! destination is a tmpfs holding one directory per hierarchy, named like the host's
//! (`cpu,cpuacct`, `systemd`, `unified`), plus symlinks for co-mounted controllers (`cpu` ->
//! `cpu,cpuacct`), as runc does. On a pure v2 host the container's directory is bound onto the
//! destination itself. Binds (not fresh cgroup mounts) work before the init is in its cgroup,
//! and with or without a cgroup namespace.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::MountPlan;
use crate::{
    cgroups::{CgroupPlan, Layout},
    Error, Result,
};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupFs {
    /// Mount a tmpfs on the destination first and put the binds below it.
    pub tmpfs: bool,
    pub binds: Vec<CgroupBind>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupBind {
    /// Directory below the destination; empty for the destination itself.
    pub name: String,
    /// The container's cgroup directory in this hierarchy (host path).
    pub source: PathBuf,
    /// Symlinks to `name` next to it (co-mounted controllers).
    pub aliases: Vec<String>,
}

fn plan_one(fstype: &str, field: &str, cgroup: &CgroupPlan, layout: &Layout) -> Result<CgroupFs> {
    let pairs: Vec<_> = layout.hierarchies.iter().zip(&cgroup.dirs).collect();
    let unified = pairs.iter().find(|(h, _)| h.unified);
    let v1_count = pairs.iter().filter(|(h, _)| !h.unified).count();
    if fstype == "cgroup2" || v1_count == 0 {
        let Some((_, dir)) = unified else {
            return Err(Error::unsupported(
                field,
                format!("{fstype}: the host has no cgroup2 hierarchy to give the container"),
            ));
        };
        return Ok(CgroupFs {
            tmpfs: false,
            binds: vec![CgroupBind {
                name: String::new(),
                source: dir.to_path_buf(),
                aliases: Vec::new(),
            }],
        });
    }
    let mut binds: Vec<CgroupBind> = Vec::new();
    for (h, dir) in &pairs {
        let name = h
            .mountpoint
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                Error::Other(format!(
                    "cgroup hierarchy at {} has no name",
                    h.mountpoint.display()
                ))
            })?;
        if binds.iter().any(|b| b.name == name) {
            return Err(Error::unsupported(
                field,
                format!("two host cgroup hierarchies are both named {name:?}"),
            ));
        }
        let aliases = if h.unified {
            Vec::new()
        } else {
            name.split(',')
                .filter(|a| name.contains(',') && !a.is_empty())
                .map(str::to_owned)
                .collect()
        };
        binds.push(CgroupBind {
            name,
            source: dir.to_path_buf(),
            aliases,
        });
    }
    // An alias must not shadow a real hierarchy directory.
    let names: Vec<String> = binds.iter().map(|b| b.name.clone()).collect();
    for b in &mut binds {
        b.aliases.retain(|a| !names.contains(a));
    }
    Ok(CgroupFs { tmpfs: true, binds })
}

/// Fills in [`MountPlan::cgroup`] for every mount of type cgroup or cgroup2.
pub fn plan_cgroup_mounts(
    mounts: &mut [MountPlan],
    cgroup: &CgroupPlan,
    layout: &Layout,
) -> Result<()> {
    for (i, m) in mounts.iter_mut().enumerate() {
        let Some(fstype) = m.fstype.clone().filter(|t| t == "cgroup" || t == "cgroup2") else {
            continue;
        };
        if m.is_bind() {
            continue; // a bind of some host path that happens to say type cgroup
        }
        let field = format!("mounts[{i}].type");
        if layout.hierarchies.is_empty() || cgroup.dirs.len() != layout.hierarchies.len() {
            return Err(Error::unsupported(
                field,
                format!("{fstype}: the host has no cgroup hierarchies mounted"),
            ));
        }
        m.cgroup = Some(plan_one(&fstype, &field, cgroup, layout)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::mounts::plan_mount;
    use oci_spec::runtime::Mount;
    use std::path::Path;

    fn layout(mountinfo: &str, unified_controllers: &[&str]) -> Layout {
        let mut l = Layout::parse(mountinfo);
        for h in l.hierarchies.iter_mut().filter(|h| h.unified) {
            h.controllers = unified_controllers.iter().map(|s| s.to_string()).collect();
        }
        l
    }

    fn mounts(typ: &str) -> Vec<MountPlan> {
        let m: Mount = serde_json::from_str(&format!(
            r#"{{"destination":"/sys/fs/cgroup","type":"{typ}","source":"cgroup",
                "options":["ro","nosuid","noexec","nodev"]}}"#
        ))
        .unwrap();
        vec![plan_mount(0, &m, Path::new("/b")).unwrap()]
    }

    const HYBRID_COMOUNTED: &str = "\
31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
33 31 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
34 31 0:31 / /sys/fs/cgroup/net_cls,net_prio rw - cgroup cgroup rw,net_cls,net_prio
35 31 0:32 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
36 31 0:33 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";

    #[test]
    fn v1_and_hybrid_get_a_tmpfs_with_one_bind_per_hierarchy_and_aliases() {
        let l = layout(HYBRID_COMOUNTED, &["hugetlb"]);
        let linux = oci_spec::runtime::Linux::default();
        let cg = crate::cgroups::plan_cgroup(&linux, "c1", &[], &l).unwrap();
        let mut m = mounts("cgroup");
        plan_cgroup_mounts(&mut m, &cg, &l).unwrap();
        let fs = m[0].cgroup.clone().unwrap();
        assert!(fs.tmpfs);
        let got: Vec<_> = fs
            .binds
            .iter()
            .map(|b| {
                (
                    b.name.as_str(),
                    b.source.to_str().unwrap(),
                    b.aliases.join(" "),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "cpu,cpuacct",
                    "/sys/fs/cgroup/cpu,cpuacct/c1",
                    "cpu cpuacct".into()
                ),
                ("memory", "/sys/fs/cgroup/memory/c1", String::new()),
                (
                    "net_cls,net_prio",
                    "/sys/fs/cgroup/net_cls,net_prio/c1",
                    "net_cls net_prio".into()
                ),
                ("systemd", "/sys/fs/cgroup/systemd/c1", String::new()),
                ("unified", "/sys/fs/cgroup/unified/c1", String::new()),
            ]
        );
        // The mount's own options still apply to every bind (ro here).
        assert_ne!(m[0].flags & libc::MS_RDONLY, 0);
    }

    #[test]
    fn pure_v2_binds_the_container_cgroup_onto_the_destination() {
        let l = layout(
            "35 30 0:31 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            &["cpu", "memory"],
        );
        let linux: oci_spec::runtime::Linux =
            serde_json::from_str(r#"{"cgroupsPath":"/k/c"}"#).unwrap();
        let cg = crate::cgroups::plan_cgroup(&linux, "c", &[], &l).unwrap();
        for typ in ["cgroup", "cgroup2"] {
            let mut m = mounts(typ);
            plan_cgroup_mounts(&mut m, &cg, &l).unwrap();
            assert_eq!(
                m[0].cgroup,
                Some(CgroupFs {
                    tmpfs: false,
                    binds: vec![CgroupBind {
                        name: String::new(),
                        source: "/sys/fs/cgroup/k/c".into(),
                        aliases: vec![]
                    }]
                }),
                "{typ}"
            );
        }
    }

    #[test]
    fn cgroup2_on_a_v1_only_host_and_no_cgroups_at_all_are_errors() {
        let l = layout(
            "32 31 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
            &[],
        );
        let cg = crate::cgroups::plan_cgroup(&Default::default(), "c", &[], &l).unwrap();
        let mut m = mounts("cgroup2");
        let e = plan_cgroup_mounts(&mut m, &cg, &l).unwrap_err().to_string();
        assert!(
            e.contains("mounts[0].type") && e.contains("no cgroup2"),
            "{e}"
        );
        let empty = Layout::default();
        let cg = crate::cgroups::plan_cgroup(&Default::default(), "c", &[], &empty).unwrap();
        let mut m = mounts("cgroup");
        let e = plan_cgroup_mounts(&mut m, &cg, &empty)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mounts[0].type"), "{e}");
    }
}
