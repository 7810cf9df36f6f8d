//! ID mappings: the uid/gid ranges of a user namespace (`linux.uidMappings`) and of an idmapped
//! mount (`mounts[].uidMappings`). Both end up as the text of /proc/<pid>/{uid,gid}_map, so
//! both are checked here against the kernel's rules, with errors that name the field.

use oci_spec::runtime::{LinuxIdMapping, LinuxIdMappingBuilder, Mount};
use serde::{Deserialize, Serialize};

use super::{MountPlan, NamespaceKind, NamespacePlan};
use crate::{Error, Result};

/// The most lines a uid_map or gid_map may hold (kernel limit since Linux 4.15).
const MAX_LINES: usize = 340;

/// `size` ids starting at `container_id` inside are `host_id`... outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdMapping {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

impl IdMapping {
    fn contains_container_id(&self, id: u32) -> bool {
        id >= self.container_id && id - self.container_id < self.size
    }
}

/// The uid and gid mappings of one user namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdMappings {
    pub uid: Vec<IdMapping>,
    pub gid: Vec<IdMapping>,
}

impl IdMappings {
    /// Container root (uid 0 and gid 0) exists in the namespace.
    pub fn maps_root(&self) -> bool {
        self.uid.iter().any(|m| m.contains_container_id(0))
            && self.gid.iter().any(|m| m.contains_container_id(0))
    }
}

/// The content of a uid_map/gid_map file: one "inside outside count" line per mapping.
pub fn map_file_text(mappings: &[IdMapping]) -> String {
    mappings
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
        .collect()
}

/// Parses what the kernel shows in /proc/<pid>/uid_map (whitespace-separated triples).
pub fn parse_map_file(text: &str) -> Option<Vec<IdMapping>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split_whitespace().map(str::parse::<u32>);
            match (f.next(), f.next(), f.next(), f.next()) {
                (Some(Ok(container_id)), Some(Ok(host_id)), Some(Ok(size)), None) => {
                    Some(IdMapping {
                        container_id,
                        host_id,
                        size,
                    })
                }
                _ => None,
            }
        })
        .collect()
}

/// The same set of ranges, whatever the order.
pub fn same_ranges(a: &[IdMapping], b: &[IdMapping]) -> bool {
    let key = |m: &IdMapping| (m.container_id, m.host_id, m.size);
    let mut a: Vec<_> = a.iter().map(key).collect();
    let mut b: Vec<_> = b.iter().map(key).collect();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

fn overlaps(a_start: u32, b_start: u32, a: &IdMapping, b: &IdMapping) -> bool {
    let (a_end, b_end) = (
        u64::from(a_start) + u64::from(a.size),
        u64::from(b_start) + u64::from(b.size),
    );
    u64::from(a_start) < b_end && u64::from(b_start) < a_end
}

/// Checks one list (`field` names it, e.g. `linux.uidMappings`) the way the kernel will when
/// it is written: non-empty ranges, no wrap-around, no overlap inside or outside, at most 340.
pub fn plan_mappings(field: &str, list: &[LinuxIdMapping]) -> Result<Vec<IdMapping>> {
    if list.len() > MAX_LINES {
        return Err(Error::invalid(
            field,
            format!(
                "{} mappings, the kernel accepts at most {MAX_LINES}",
                list.len()
            ),
        ));
    }
    let mut out: Vec<IdMapping> = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let m = IdMapping {
            container_id: m.container_id(),
            host_id: m.host_id(),
            size: m.size(),
        };
        let bad = |msg: String| Err(Error::invalid(format!("{field}[{i}]"), msg));
        if m.size == 0 {
            return bad("size must not be 0".into());
        }
        let end = |start: u32| u64::from(start) + u64::from(m.size) - 1;
        if end(m.container_id) > u64::from(u32::MAX) || end(m.host_id) > u64::from(u32::MAX) {
            return bad(format!(
                "containerID {} / hostID {} + size {} goes past the last id",
                m.container_id, m.host_id, m.size
            ));
        }
        for (j, o) in out.iter().enumerate() {
            if overlaps(m.container_id, o.container_id, &m, o) {
                return bad(format!("its containerID range overlaps {field}[{j}]"));
            }
            if overlaps(m.host_id, o.host_id, &m, o) {
                return bad(format!("its hostID range overlaps {field}[{j}]"));
            }
        }
        out.push(m);
    }
    Ok(out)
}

/// Plans a uid list and a gid list that must come together; `prefix` is e.g. `linux` or
/// `mounts[2]`. `None` when neither is given.
pub fn plan_pair(
    prefix: &str,
    uid: Option<&Vec<LinuxIdMapping>>,
    gid: Option<&Vec<LinuxIdMapping>>,
) -> Result<Option<IdMappings>> {
    let uid = uid.filter(|v| !v.is_empty());
    let gid = gid.filter(|v| !v.is_empty());
    match (uid, gid) {
        (None, None) => Ok(None),
        (Some(uid), Some(gid)) => Ok(Some(IdMappings {
            uid: plan_mappings(&format!("{prefix}.uidMappings"), uid)?,
            gid: plan_mappings(&format!("{prefix}.gidMappings"), gid)?,
        })),
        (Some(_), None) => Err(Error::invalid(
            format!("{prefix}.gidMappings"),
            format!("missing: {prefix}.uidMappings is set, and the two come together"),
        )),
        (None, Some(_)) => Err(Error::invalid(
            format!("{prefix}.uidMappings"),
            format!("missing: {prefix}.gidMappings is set, and the two come together"),
        )),
    }
}

/// The mappings of containerd's `uidmap=`/`gidmap=` mount options (its overlay snapshotter
/// adds them to the rootfs of a user-namespaced pod): `containerID:hostID:size`, comma-separated.
/// `field` names the option in errors.
pub fn parse_option_mappings(field: &str, text: &str) -> Result<Vec<IdMapping>> {
    let list = text
        .split(',')
        .enumerate()
        .map(|(i, triple)| {
            let ids: Vec<u32> = triple
                .split(':')
                .map(|n| n.trim().parse::<u32>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| Error::invalid(format!("{field}[{i}]"), format!("{triple:?}: {e}")))?;
            match ids[..] {
                [container_id, host_id, size] => LinuxIdMappingBuilder::default()
                    .container_id(container_id)
                    .host_id(host_id)
                    .size(size)
                    .build()
                    .map_err(|e| Error::invalid(format!("{field}[{i}]"), e.to_string())),
                _ => Err(Error::invalid(
                    format!("{field}[{i}]"),
                    format!("{triple:?} is not containerID:hostID:size"),
                )),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    plan_mappings(field, &list)
}

/// An idmapped bind mount: the launcher clones the source tree outside the container, applies
/// a user namespace with `mappings` to it (to its top mount, or to every mount with `ridmap`),
/// and the init moves the result onto the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountIdmap {
    /// Empty until [`complete_mount_idmaps`] fills in the container's own mappings.
    pub mappings: IdMappings,
    pub recursive: bool,
}

/// The idmap of mount `index`: asked for by the `idmap`/`ridmap` option (`option`, true for
/// recursive) or by the mount's own uid/gid mappings (runc applies those without the option).
pub fn plan_mount_idmap(
    index: usize,
    mount: &Mount,
    option: Option<bool>,
    is_bind: bool,
) -> Result<Option<MountIdmap>> {
    let prefix = format!("mounts[{index}]");
    let mappings = plan_pair(
        &prefix,
        mount.uid_mappings().as_ref(),
        mount.gid_mappings().as_ref(),
    )?;
    if option.is_none() && mappings.is_none() {
        return Ok(None);
    }
    if !is_bind {
        return Err(Error::unsupported(
            format!("{prefix}.options"),
            "idmapped mounts are only supported for bind mounts",
        ));
    }
    Ok(Some(MountIdmap {
        mappings: mappings.unwrap_or_default(),
        recursive: option == Some(true),
    }))
}

/// Gives `idmap` mounts without mappings of their own the container's (the spec allows it),
/// and refuses what cannot be done.
pub fn complete_mount_idmaps(mounts: &mut [MountPlan], namespaces: &NamespacePlan) -> Result<()> {
    for (i, m) in mounts.iter_mut().enumerate() {
        let Some(idmap) = m.idmap.as_mut() else {
            continue;
        };
        if namespaces.joins(NamespaceKind::Mount) {
            // The launcher makes the tree in its own mount namespace, not the joined one.
            return Err(Error::unsupported(
                format!("mounts[{i}].options"),
                "idmapped mounts in a joined mount namespace are not supported",
            ));
        }
        if idmap.mappings.uid.is_empty() {
            match &namespaces.id_mappings {
                Some(own) => idmap.mappings = own.clone(),
                None => {
                    return Err(Error::invalid(
                        format!("mounts[{i}].uidMappings"),
                        "an idmap mount without uidMappings/gidMappings takes the container's \
                         linux.uidMappings/gidMappings, and there are none",
                    ))
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod option_tests {
    use super::*;

    #[test]
    fn containerd_mapping_options_parse_and_are_checked() {
        let m = |c, h, s| IdMapping {
            container_id: c,
            host_id: h,
            size: s,
        };
        assert_eq!(
            parse_option_mappings("uidmap", "0:666:1000,1000:6666:64536").unwrap(),
            [m(0, 666, 1000), m(1000, 6666, 64536)]
        );
        let err = |t: &str| parse_option_mappings("uidmap", t).unwrap_err().to_string();
        assert!(err("0:666").contains("uidmap[0]"), "{}", err("0:666"));
        assert!(
            err("0:1:1,x:1:1").contains("uidmap[1]"),
            "{}",
            err("0:1:1,x:1:1")
        );
        assert!(err("0:1:0").contains("size must not be 0"));
        assert!(err("0:1:10,5:100:10").contains("overlaps"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(container_id: u32, host_id: u32, size: u32) -> LinuxIdMapping {
        LinuxIdMappingBuilder::default()
            .container_id(container_id)
            .host_id(host_id)
            .size(size)
            .build()
            .unwrap()
    }

    fn err(list: &[LinuxIdMapping]) -> String {
        plan_mappings("linux.uidMappings", list)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn valid_mappings_become_map_file_lines() {
        let list = plan_mappings("f", &[m(0, 100000, 65536), m(65536, 1000, 1)]).unwrap();
        assert_eq!(map_file_text(&list), "0 100000 65536\n65536 1000 1\n");
        let parsed =
            parse_map_file("         0     100000      65536\n     65536       1000          1\n")
                .unwrap();
        assert_eq!(parsed, list);
        assert!(same_ranges(&parsed, &[list[1], list[0]]));
        assert!(!same_ranges(&parsed, &list[..1]));
        assert_eq!(parse_map_file("0 1 x\n"), None);
    }

    #[test]
    fn kernel_rules_are_checked_with_the_index() {
        assert!(err(&[m(0, 1, 0)]).contains("linux.uidMappings[0]: size must not be 0"));
        assert!(err(&[m(u32::MAX, 1, 2)]).contains("goes past the last id"));
        assert!(err(&[m(0, u32::MAX - 1, 3)]).contains("goes past the last id"));
        // The last id itself may be mapped.
        plan_mappings("f", &[m(u32::MAX, 1, 1)]).unwrap();
        let e = err(&[m(0, 100000, 10), m(5, 200000, 10)]);
        assert!(
            e.contains("linux.uidMappings[1]") && e.contains("containerID range overlaps"),
            "{e}"
        );
        let e = err(&[m(0, 100000, 10), m(10, 100009, 10)]);
        assert!(
            e.contains("hostID range overlaps linux.uidMappings[0]"),
            "{e}"
        );
        // Adjacent ranges are fine.
        plan_mappings("f", &[m(0, 100000, 10), m(10, 100010, 10)]).unwrap();
        let many: Vec<_> = (0..341).map(|i| m(i, 1000 + i, 1)).collect();
        assert!(err(&many).contains("at most 340"));
    }

    fn mount(typ: &str, opts: &[&str], maps: bool) -> Mount {
        let mut v = serde_json::json!({
            "type": typ, "source": "/src", "destination": "/dst", "options": opts
        });
        if maps {
            let map = serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
            v["uidMappings"] = map.clone();
            v["gidMappings"] = map;
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn idmap_options_and_mount_mappings() {
        let plan = |m: &Mount, opt, bind| plan_mount_idmap(4, m, opt, bind);
        assert_eq!(plan(&mount("bind", &[], false), None, true).unwrap(), None);
        let own = plan(&mount("bind", &[], true), None, true)
            .unwrap()
            .unwrap();
        assert_eq!(map_file_text(&own.mappings.uid), "0 1000 1\n");
        assert!(!own.recursive);
        let r = plan(&mount("bind", &[], false), Some(true), true)
            .unwrap()
            .unwrap();
        assert!(r.recursive && r.mappings.uid.is_empty());
        let e = plan(&mount("tmpfs", &[], true), None, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mounts[4].options") && e.contains("only supported for bind"),
            "{e}"
        );
    }

    #[test]
    fn mount_options_idmap_and_ridmap_are_planned() {
        use crate::plan::mounts::plan_mount;
        let b = std::path::Path::new("/b");
        let p = plan_mount(0, &mount("bind", &["rbind", "idmap"], false), b).unwrap();
        assert!(!p.idmap.unwrap().recursive);
        let p = plan_mount(0, &mount("none", &["bind", "idmap", "ridmap"], true), b).unwrap();
        let idmap = p.idmap.unwrap();
        assert!(idmap.recursive);
        assert_eq!(map_file_text(&idmap.mappings.gid), "0 1000 1\n");
        // Not passed to mount(2) as data.
        assert_eq!(p.data, "");
        let e = plan_mount(5, &mount("tmpfs", &["idmap"], false), b).unwrap_err();
        assert!(e.to_string().contains("mounts[5].options"), "{e}");
    }

    #[test]
    fn idmap_without_mappings_takes_the_containers() {
        let idmapped = |maps: IdMappings| MountPlan {
            destination: "/d".into(),
            source: Some("/s".into()),
            fstype: None,
            flags: 0,
            data: String::new(),
            propagation: vec![],
            recursive: Default::default(),
            tmpcopyup: false,
            cgroup: None,
            idmap: Some(MountIdmap {
                mappings: maps,
                recursive: false,
            }),
        };
        let own = plan_pair(
            "linux",
            Some(&vec![m(0, 100000, 65536)]),
            Some(&vec![m(0, 100000, 65536)]),
        )
        .unwrap();
        let mut ns = NamespacePlan {
            create: vec![NamespaceKind::User, NamespaceKind::Mount],
            id_mappings: own.clone(),
            ..Default::default()
        };
        let explicit = plan_pair("m", Some(&vec![m(0, 5, 1)]), Some(&vec![m(0, 5, 1)]))
            .unwrap()
            .unwrap();
        let mut mounts = vec![idmapped(IdMappings::default()), idmapped(explicit.clone())];
        complete_mount_idmaps(&mut mounts, &ns).unwrap();
        assert_eq!(mounts[0].idmap.as_ref().unwrap().mappings, own.unwrap());
        assert_eq!(mounts[1].idmap.as_ref().unwrap().mappings, explicit);

        ns.id_mappings = None;
        let mut mounts = vec![idmapped(IdMappings::default())];
        let e = complete_mount_idmaps(&mut mounts, &ns)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mounts[0].uidMappings"), "{e}");

        ns.create = vec![];
        ns.join = vec![(NamespaceKind::Mount, "/proc/1/ns/mnt".into())];
        let mut mounts = vec![idmapped(explicit)];
        let e = complete_mount_idmaps(&mut mounts, &ns)
            .unwrap_err()
            .to_string();
        assert!(e.contains("joined mount namespace"), "{e}");
    }

    #[test]
    fn uid_and_gid_mappings_come_together() {
        let v = vec![m(0, 100000, 65536)];
        assert_eq!(plan_pair("linux", None, Some(&vec![])).unwrap(), None);
        let both = plan_pair("linux", Some(&v), Some(&v)).unwrap().unwrap();
        assert!(both.maps_root());
        let e = plan_pair("mounts[2]", Some(&v), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mounts[2].gidMappings: missing"), "{e}");
        let e = plan_pair("linux", None, Some(&v)).unwrap_err().to_string();
        assert!(e.contains("linux.uidMappings: missing"), "{e}");
        let no_root = plan_pair("linux", Some(&vec![m(1, 100000, 10)]), Some(&v))
            .unwrap()
            .unwrap();
        assert!(!no_root.maps_root());
    }
}
