//! Namespaces: which to create with the init's clone, which to join by path, and the settings
//! of the new ones (user namespace mappings, time namespace offsets).

use std::path::PathBuf;

use oci_spec::runtime::{Linux, LinuxNamespace, LinuxNamespaceType};
use serde::{Deserialize, Serialize};

use super::idmap::{self, IdMappings};
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NamespaceKind {
    Mount,
    Uts,
    Ipc,
    Pid,
    Network,
    Cgroup,
    User,
    Time,
}

impl NamespaceKind {
    pub fn clone_flag(self) -> libc::c_int {
        match self {
            NamespaceKind::Mount => libc::CLONE_NEWNS,
            NamespaceKind::Uts => libc::CLONE_NEWUTS,
            NamespaceKind::Ipc => libc::CLONE_NEWIPC,
            NamespaceKind::Pid => libc::CLONE_NEWPID,
            NamespaceKind::Network => libc::CLONE_NEWNET,
            NamespaceKind::Cgroup => libc::CLONE_NEWCGROUP,
            NamespaceKind::User => libc::CLONE_NEWUSER,
            NamespaceKind::Time => libc::CLONE_NEWTIME,
        }
    }

    /// The name used by /proc/<pid>/ns and by the OCI spec.
    pub fn proc_name(self) -> &'static str {
        match self {
            NamespaceKind::Mount => "mnt",
            NamespaceKind::Uts => "uts",
            NamespaceKind::Ipc => "ipc",
            NamespaceKind::Pid => "pid",
            NamespaceKind::Network => "net",
            NamespaceKind::Cgroup => "cgroup",
            NamespaceKind::User => "user",
            NamespaceKind::Time => "time",
        }
    }
}

impl From<LinuxNamespaceType> for NamespaceKind {
    fn from(t: LinuxNamespaceType) -> Self {
        match t {
            LinuxNamespaceType::Mount => NamespaceKind::Mount,
            LinuxNamespaceType::Uts => NamespaceKind::Uts,
            LinuxNamespaceType::Ipc => NamespaceKind::Ipc,
            LinuxNamespaceType::Pid => NamespaceKind::Pid,
            LinuxNamespaceType::Network => NamespaceKind::Network,
            LinuxNamespaceType::Cgroup => NamespaceKind::Cgroup,
            LinuxNamespaceType::User => NamespaceKind::User,
            LinuxNamespaceType::Time => NamespaceKind::Time,
        }
    }
}

/// A clock of a time namespace that can be offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Clock {
    Monotonic,
    Boottime,
}

/// One line of /proc/<pid>/timens_offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeOffset {
    pub clock: Clock,
    pub secs: i64,
    pub nanosecs: u32,
}

/// The content of /proc/<pid>/timens_offsets for these offsets.
pub fn timens_offsets_text(offsets: &[TimeOffset]) -> String {
    offsets
        .iter()
        .map(|o| {
            let clock = match o.clock {
                Clock::Monotonic => "monotonic",
                Clock::Boottime => "boottime",
            };
            format!("{clock} {} {}\n", o.secs, o.nanosecs)
        })
        .collect()
}

/// The namespaces of a container: created ones and ones joined by path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacePlan {
    pub create: Vec<NamespaceKind>,
    pub join: Vec<(NamespaceKind, PathBuf)>,
    /// `linux.uidMappings`/`gidMappings`: written from outside into a created user namespace,
    /// compared with those of a joined one.
    pub id_mappings: Option<IdMappings>,
    /// `linux.timeOffsets`, for a created time namespace, ordered by clock.
    pub time_offsets: Vec<TimeOffset>,
}

impl NamespacePlan {
    pub fn creates(&self, kind: NamespaceKind) -> bool {
        self.create.contains(&kind)
    }

    pub fn joins(&self, kind: NamespaceKind) -> bool {
        self.join.iter().any(|(k, _)| *k == kind)
    }

    /// Has its own namespace of this kind, created or joined (not the host's).
    pub fn has(&self, kind: NamespaceKind) -> bool {
        self.creates(kind) || self.joins(kind)
    }

    /// Flags for the clone that creates the init. With CLONE_NEWUSER the kernel creates the
    /// user namespace first, so the other new namespaces belong to it. Left out on purpose:
    /// the cgroup namespace (the init unshares it after joining its cgroup, so that the cgroup
    /// is the namespace root) and the time namespace (a clone enters it at once, which freezes
    /// its offsets: the init unshares it, the offsets are written, and its exec enters it).
    pub fn clone_flags(&self) -> libc::c_int {
        self.create
            .iter()
            .filter(|k| !matches!(k, NamespaceKind::Cgroup | NamespaceKind::Time))
            .fold(0, |acc, k| acc | k.clone_flag())
    }
}

/// The namespaces of `linux`, with the settings of the new ones.
pub fn plan_linux_namespaces(linux: &Linux) -> Result<NamespacePlan> {
    let mut plan = plan_namespaces(linux.namespaces().as_deref().unwrap_or_default())?;
    plan.id_mappings = idmap::plan_pair(
        "linux",
        linux.uid_mappings().as_ref(),
        linux.gid_mappings().as_ref(),
    )?;
    check_user_namespace(&plan)?;
    plan.time_offsets = plan_time_offsets(linux, &plan)?;
    Ok(plan)
}

/// Which namespaces to create and which to join.
pub fn plan_namespaces(namespaces: &[LinuxNamespace]) -> Result<NamespacePlan> {
    let mut plan = NamespacePlan::default();
    for (i, ns) in namespaces.iter().enumerate() {
        let kind = NamespaceKind::from(ns.typ());
        let field = format!("linux.namespaces[{i}]");
        if plan.has(kind) {
            return Err(Error::invalid(
                field,
                format!("namespace {} is listed twice", kind.proc_name()),
            ));
        }
        match ns.path() {
            Some(path) if !path.as_os_str().is_empty() => {
                if !path.is_absolute() {
                    return Err(Error::invalid(
                        format!("{field}.path"),
                        format!("{} is not an absolute path", path.display()),
                    ));
                }
                plan.join.push((kind, path.clone()));
            }
            _ => plan.create.push(kind),
        }
    }
    Ok(plan)
}

/// A created user namespace needs mappings that include root (the init becomes root in it to
/// build the container, as runc's does); a joined one has its own, which the spec may repeat.
fn check_user_namespace(plan: &NamespacePlan) -> Result<()> {
    match &plan.id_mappings {
        None if plan.creates(NamespaceKind::User) => Err(Error::invalid(
            "linux.uidMappings",
            "a new user namespace needs linux.uidMappings and linux.gidMappings",
        )),
        Some(_) if !plan.has(NamespaceKind::User) => Err(Error::invalid(
            "linux.uidMappings",
            "set, but linux.namespaces has no user namespace",
        )),
        Some(m) if plan.creates(NamespaceKind::User) && !m.maps_root() => Err(Error::invalid(
            "linux.uidMappings",
            "container uid 0 and gid 0 must be mapped: the container's init sets the \
             container up as root of its user namespace",
        )),
        _ => Ok(()),
    }
}

fn plan_time_offsets(linux: &Linux, plan: &NamespacePlan) -> Result<Vec<TimeOffset>> {
    let Some(offsets) = linux.time_offsets().as_ref().filter(|o| !o.is_empty()) else {
        return Ok(Vec::new());
    };
    if !plan.creates(NamespaceKind::Time) {
        let why = if plan.joins(NamespaceKind::Time) {
            "the offsets of a joined time namespace cannot be changed"
        } else {
            "offsets need a new time namespace in linux.namespaces"
        };
        return Err(Error::invalid("linux.timeOffsets", why));
    }
    let mut out = Vec::new();
    for (name, offset) in offsets {
        let field = format!("linux.timeOffsets.{name}");
        let clock = match name.as_str() {
            "monotonic" => Clock::Monotonic,
            "boottime" => Clock::Boottime,
            _ => {
                return Err(Error::invalid(
                    field,
                    "unknown clock (a time namespace offsets monotonic and boottime)",
                ))
            }
        };
        let nanosecs = offset.nanosecs().unwrap_or(0);
        if nanosecs >= 1_000_000_000 {
            return Err(Error::invalid(
                format!("{field}.nanosecs"),
                format!("{nanosecs} is not below 1000000000"),
            ));
        }
        out.push(TimeOffset {
            clock,
            secs: offset.secs().unwrap_or(0),
            nanosecs,
        });
    }
    out.sort_by_key(|o| o.clock);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::get_default_namespaces;

    fn linux(v: serde_json::Value) -> Linux {
        serde_json::from_value(v).unwrap()
    }

    fn plan(v: serde_json::Value) -> Result<NamespacePlan> {
        plan_linux_namespaces(&linux(v))
    }

    fn err(v: serde_json::Value) -> String {
        plan(v).unwrap_err().to_string()
    }

    const MAP: &str = r#"[{"containerID":0,"hostID":100000,"size":65536}]"#;

    fn userns(extra: serde_json::Value) -> serde_json::Value {
        let map: serde_json::Value = serde_json::from_str(MAP).unwrap();
        let mut v = serde_json::json!({
            "namespaces": [{"type":"user"},{"type":"mount"},{"type":"pid"}],
            "uidMappings": map, "gidMappings": map,
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    #[test]
    fn default_namespaces_are_all_created_and_cgroup_is_not_cloned() {
        let plan = plan_namespaces(&get_default_namespaces()).unwrap();
        assert!(plan.join.is_empty());
        for k in [
            NamespaceKind::Pid,
            NamespaceKind::Network,
            NamespaceKind::Ipc,
            NamespaceKind::Uts,
            NamespaceKind::Mount,
            NamespaceKind::Cgroup,
        ] {
            assert!(plan.creates(k), "{k:?}");
        }
        let flags = plan.clone_flags();
        assert_eq!(
            flags,
            libc::CLONE_NEWPID
                | libc::CLONE_NEWNET
                | libc::CLONE_NEWIPC
                | libc::CLONE_NEWUTS
                | libc::CLONE_NEWNS
        );
    }

    #[test]
    fn namespaces_with_a_path_are_joined() {
        let plan = plan(serde_json::json!({"namespaces": [
            {"type":"network","path":"/proc/1/ns/net"},
            {"type":"mount"},
            {"type":"user","path":"/proc/1/ns/user"},
            {"type":"pid","path":"/proc/1/ns/pid"},
        ]}))
        .unwrap();
        assert_eq!(plan.create, vec![NamespaceKind::Mount]);
        assert_eq!(
            plan.join,
            vec![
                (NamespaceKind::Network, PathBuf::from("/proc/1/ns/net")),
                (NamespaceKind::User, PathBuf::from("/proc/1/ns/user")),
                (NamespaceKind::Pid, PathBuf::from("/proc/1/ns/pid")),
            ]
        );
        assert!(plan.has(NamespaceKind::Network) && plan.joins(NamespaceKind::User));
        assert!(!plan.has(NamespaceKind::Ipc));
        // A joined user namespace brings its own mappings: none needed in the spec.
        assert_eq!(plan.id_mappings, None);
        assert_eq!(plan.clone_flags(), libc::CLONE_NEWNS);
    }

    #[test]
    fn duplicates_and_relative_paths_are_errors() {
        let e = err(serde_json::json!({"namespaces": [{"type":"pid"},{"type":"pid","path":"/p"}]}));
        assert!(
            e.contains("linux.namespaces[1]") && e.contains("twice"),
            "{e}"
        );
        let e = err(serde_json::json!({"namespaces": [{"type":"network","path":"ns/net"}]}));
        assert!(e.contains("linux.namespaces[0].path"), "{e}");
    }

    #[test]
    fn a_new_user_namespace_is_cloned_first_with_its_mappings() {
        let plan = plan(userns(serde_json::json!({}))).unwrap();
        assert_eq!(
            plan.clone_flags(),
            libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID
        );
        let m = plan.id_mappings.unwrap();
        assert_eq!(idmap::map_file_text(&m.uid), "0 100000 65536\n");
        assert_eq!(m.gid, m.uid);
    }

    #[test]
    fn user_namespace_mapping_rules() {
        let e = err(serde_json::json!({"namespaces": [{"type":"user"}]}));
        assert!(
            e.contains("linux.uidMappings: a new user namespace needs"),
            "{e}"
        );
        let e = err(userns(
            serde_json::json!({"namespaces": [{"type":"mount"}]}),
        ));
        assert!(
            e.contains("linux.uidMappings: set, but linux.namespaces has no user"),
            "{e}"
        );
        let e = err(userns(serde_json::json!({
            "uidMappings": [{"containerID":1,"hostID":100000,"size":10}]
        })));
        assert!(
            e.contains("container uid 0 and gid 0 must be mapped"),
            "{e}"
        );
        let e = err(userns(serde_json::json!({"gidMappings": []})));
        assert!(e.contains("linux.gidMappings: missing"), "{e}");
        let e = err(userns(serde_json::json!({
            "uidMappings": [{"containerID":0,"hostID":100000,"size":0}]
        })));
        assert!(e.contains("linux.uidMappings[0]: size"), "{e}");
    }

    #[test]
    fn time_offsets_go_to_a_new_time_namespace_that_is_not_cloned() {
        let plan = plan(serde_json::json!({
            "namespaces": [{"type":"time"},{"type":"mount"}],
            "timeOffsets": {
                "monotonic": {"secs": -5, "nanosecs": 7},
                "boottime": {"secs": 86400}
            }
        }))
        .unwrap();
        assert!(plan.creates(NamespaceKind::Time));
        // Unshared by the init, so that the offsets are written before anything runs in it.
        assert_eq!(plan.clone_flags(), libc::CLONE_NEWNS);
        assert_eq!(
            timens_offsets_text(&plan.time_offsets),
            "monotonic -5 7\nboottime 86400 0\n"
        );
    }

    #[test]
    fn time_offset_rules() {
        let offsets = serde_json::json!({"boottime": {"secs": 1}});
        let e = err(serde_json::json!({"namespaces": [{"type":"mount"}], "timeOffsets": offsets}));
        assert!(
            e.contains("linux.timeOffsets: offsets need a new time namespace"),
            "{e}"
        );
        let e = err(serde_json::json!({
            "namespaces": [{"type":"time","path":"/proc/1/ns/time"}], "timeOffsets": offsets
        }));
        assert!(e.contains("joined time namespace"), "{e}");
        let e = err(serde_json::json!({
            "namespaces": [{"type":"time"}], "timeOffsets": {"realtime": {"secs": 1}}
        }));
        assert!(
            e.contains("linux.timeOffsets.realtime: unknown clock"),
            "{e}"
        );
        let e = err(serde_json::json!({
            "namespaces": [{"type":"time"}],
            "timeOffsets": {"monotonic": {"nanosecs": 1000000000u32}}
        }));
        assert!(e.contains("linux.timeOffsets.monotonic.nanosecs"), "{e}");
        // A time namespace without offsets is fine.
        let p = plan(serde_json::json!({"namespaces": [{"type":"time"}]})).unwrap();
        assert!(p.time_offsets.is_empty());
    }
}
