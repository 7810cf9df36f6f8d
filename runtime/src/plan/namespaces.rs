//! Namespaces: which to create with the init's clone, which to join by path.

use std::path::PathBuf;

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};
use serde::{Deserialize, Serialize};

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

/// The namespaces of a container: created ones and ones joined by path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacePlan {
    pub create: Vec<NamespaceKind>,
    pub join: Vec<(NamespaceKind, PathBuf)>,
}

impl NamespacePlan {
    pub fn creates(&self, kind: NamespaceKind) -> bool {
        self.create.contains(&kind)
    }

    /// Has its own namespace of this kind, created or joined (not the host's).
    pub fn has(&self, kind: NamespaceKind) -> bool {
        self.creates(kind) || self.join.iter().any(|(k, _)| *k == kind)
    }

    /// Flags for the clone that creates the init. The cgroup namespace is left out on purpose:
    /// the init unshares it after joining its cgroup, so that the cgroup is the namespace root.
    pub fn clone_flags(&self) -> libc::c_int {
        self.create
            .iter()
            .filter(|k| **k != NamespaceKind::Cgroup)
            .fold(0, |acc, k| acc | k.clone_flag())
    }
}

pub fn plan_namespaces(namespaces: &[LinuxNamespace]) -> Result<NamespacePlan> {
    let mut plan = NamespacePlan::default();
    let mut seen = Vec::new();
    for (i, ns) in namespaces.iter().enumerate() {
        let kind = NamespaceKind::from(ns.typ());
        let field = format!("linux.namespaces[{i}]");
        if seen.contains(&kind) {
            return Err(Error::invalid(
                field,
                format!("namespace {} is listed twice", kind.proc_name()),
            ));
        }
        seen.push(kind);
        if matches!(kind, NamespaceKind::User | NamespaceKind::Time) {
            return Err(Error::unsupported(
                field,
                format!("{} namespaces are not implemented yet", kind.proc_name()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{get_default_namespaces, LinuxNamespaceBuilder};

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
        let ns = vec![
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path("/proc/1/ns/net")
                .build()
                .unwrap(),
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Mount)
                .build()
                .unwrap(),
        ];
        let plan = plan_namespaces(&ns).unwrap();
        assert_eq!(plan.create, vec![NamespaceKind::Mount]);
        assert_eq!(
            plan.join,
            vec![(NamespaceKind::Network, PathBuf::from("/proc/1/ns/net"))]
        );
        assert!(plan.has(NamespaceKind::Network));
        assert!(!plan.has(NamespaceKind::Pid));
    }

    #[test]
    fn duplicates_relative_paths_and_unimplemented_kinds_are_errors() {
        let mk = |t, p: Option<&str>| {
            let b = LinuxNamespaceBuilder::default().typ(t);
            match p {
                Some(p) => b.path(p).build().unwrap(),
                None => b.build().unwrap(),
            }
        };
        let e = plan_namespaces(&[
            mk(LinuxNamespaceType::Pid, None),
            mk(LinuxNamespaceType::Pid, None),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("linux.namespaces[1]"), "{e}");
        let e = plan_namespaces(&[mk(LinuxNamespaceType::Network, Some("ns/net"))]).unwrap_err();
        assert!(e.to_string().contains("linux.namespaces[0].path"), "{e}");
        let e = plan_namespaces(&[mk(LinuxNamespaceType::User, None)]).unwrap_err();
        assert!(e.to_string().contains("user namespaces"), "{e}");
    }
}
