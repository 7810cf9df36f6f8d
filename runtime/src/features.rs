//! The OCI features document (runtime-spec features.md) that `-info` returns. containerd's
//! CRI reads it: user-namespaced pods need "user" in namespaces and idmap mounts, recursive
//! read-only mounts need "rro" in mountOptions. Every claim here is checked by the tests
//! below against what planning accepts, so the document cannot promise more than we do.

use serde_json::{json, Value};

pub const OCI_VERSION_MIN: &str = "1.0.0";
pub const OCI_VERSION_MAX: &str = "1.3.0";

pub const HOOKS: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

pub const NAMESPACES: &[&str] = &[
    "cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts",
];

pub const MOUNT_OPTIONS: &[&str] = &[
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "iversion",
    "lazytime",
    "loud",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "noiversion",
    "nolazytime",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "nosymfollow",
    "private",
    "ratime",
    "rbind",
    "rdev",
    "rdiratime",
    "relatime",
    "remount",
    "rexec",
    "rnoatime",
    "rnodev",
    "rnodiratime",
    "rnoexec",
    "rnorelatime",
    "rnostrictatime",
    "rnosuid",
    "rnosymfollow",
    "ro",
    "rprivate",
    "rrelatime",
    "rro",
    "rrw",
    "rshared",
    "rslave",
    "rstrictatime",
    "rsuid",
    "rsymfollow",
    "runbindable",
    "rw",
    "shared",
    "silent",
    "slave",
    "strictatime",
    "suid",
    "symfollow",
    "sync",
    "tmpcopyup",
    "unbindable",
];

pub const SECCOMP_ACTIONS: &[&str] = &[
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_TRAP",
];

pub const SECCOMP_OPERATORS: &[&str] = &[
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_LE",
    "SCMP_CMP_LT",
    "SCMP_CMP_MASKED_EQ",
    "SCMP_CMP_NE",
];

pub const SECCOMP_ARCHS: &[&str] = &[
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
];

pub const SECCOMP_FLAGS: &[&str] = &[
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_TSYNC",
];

/// The whole capability list of the kernel headers we know.
fn capabilities() -> Vec<String> {
    let mut caps: Vec<String> = caps::all().into_iter().map(|c| c.to_string()).collect();
    caps.sort();
    caps
}

/// The features document, as JSON.
pub fn document() -> Value {
    json!({
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION_MAX,
        "hooks": HOOKS,
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": NAMESPACES,
            "capabilities": capabilities(),
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": {
                "enabled": true,
                "actions": SECCOMP_ACTIONS,
                "operators": SECCOMP_OPERATORS,
                "archs": SECCOMP_ARCHS,
                "knownFlags": SECCOMP_FLAGS,
                "supportedFlags": SECCOMP_FLAGS,
            },
            "apparmor": {"enabled": true},
            "selinux": {"enabled": true},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": true}},
        },
        "annotations": {
            "io.containerd.rs.v1.launcher": "zygote",
        },
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{cgroups::Layout, plan};

    const BASE: &str = include_str!("plan/testdata/ctr-default-spec.json");

    fn layout() -> Layout {
        Layout::parse("31 30 0:27 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices\n")
    }

    fn plan_with(edit: impl FnOnce(&mut Value)) -> crate::Result<plan::LaunchPlan> {
        let mut v: Value = serde_json::from_str(BASE).unwrap();
        edit(&mut v);
        let spec = crate::spec::parse(v.to_string().as_bytes(), Path::new("config.json"))?;
        plan::build(&spec, Path::new("/b"), "c", &layout())
    }

    #[test]
    fn every_listed_mount_option_is_accepted_and_idmap_is_claimed_as_planned() {
        for opt in MOUNT_OPTIONS {
            plan_with(|v| {
                v["mounts"] = json!([{"destination": "/x", "type": "tmpfs", "source": "tmpfs", "options": [opt]}])
            })
            .unwrap_or_else(|e| panic!("{opt} is listed but refused: {e}"));
        }
        let map = json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
        let idmap = plan_with(|v| {
            v["mounts"] = json!([{"destination": "/x", "type": "bind", "source": "/tmp",
                "options": ["rbind", "idmap"], "uidMappings": map, "gidMappings": map}])
        });
        assert_eq!(
            idmap.is_ok(),
            document()["linux"]["mountExtensions"]["idmap"]["enabled"] == true
        );
        assert!(
            MOUNT_OPTIONS.contains(&"rro"),
            "CRI needs rro for recursive read-only mounts"
        );
    }

    #[test]
    fn every_listed_namespace_is_accepted() {
        let with = |ns: &str| {
            if ns == "mount" {
                json!([{"type": "mount"}])
            } else {
                json!([{"type": "mount"}, {"type": ns}])
            }
        };
        for ns in NAMESPACES {
            plan_with(|v| {
                v["linux"]["namespaces"] = with(ns);
                if *ns == "user" {
                    // A new user namespace comes with its mappings.
                    let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
                    v["linux"]["uidMappings"] = map.clone();
                    v["linux"]["gidMappings"] = map;
                }
            })
            .unwrap_or_else(|e| panic!("namespace {ns} is listed but refused: {e}"));
        }
        assert_eq!(NAMESPACES.len(), 8, "every namespace type of the spec");
    }

    #[test]
    fn every_listed_seccomp_action_operator_arch_and_flag_is_accepted() {
        let profile = |action: &str, op: &str, arch: &str, flag: &str| {
            json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": [arch], "flags": [flag],
                   "listenerPath": "/run/agent.sock",
                   "syscalls": [{"names": ["mkdirat"], "action": action,
                                 "args": [{"index": 0, "value": 1, "op": op}]}]})
        };
        for a in SECCOMP_ACTIONS {
            plan_with(|v| {
                v["linux"]["seccomp"] = profile(
                    a,
                    "SCMP_CMP_EQ",
                    "SCMP_ARCH_X86_64",
                    "SECCOMP_FILTER_FLAG_LOG",
                )
            })
            .unwrap_or_else(|e| panic!("{a}: {e}"));
        }
        for o in SECCOMP_OPERATORS {
            plan_with(|v| {
                let mut p = profile(
                    "SCMP_ACT_ERRNO",
                    o,
                    "SCMP_ARCH_X86_64",
                    "SECCOMP_FILTER_FLAG_LOG",
                );
                if *o == "SCMP_CMP_MASKED_EQ" {
                    p["syscalls"][0]["args"][0]["valueTwo"] = json!(1);
                }
                v["linux"]["seccomp"] = p
            })
            .unwrap_or_else(|e| panic!("{o}: {e}"));
        }
        for arch in SECCOMP_ARCHS {
            plan_with(|v| {
                v["linux"]["seccomp"] = profile(
                    "SCMP_ACT_ERRNO",
                    "SCMP_CMP_EQ",
                    arch,
                    "SECCOMP_FILTER_FLAG_LOG",
                )
            })
            .unwrap_or_else(|e| panic!("{arch}: {e}"));
        }
        for flag in SECCOMP_FLAGS {
            plan_with(|v| {
                v["linux"]["seccomp"] =
                    profile("SCMP_ACT_ERRNO", "SCMP_CMP_EQ", "SCMP_ARCH_X86_64", flag)
            })
            .unwrap_or_else(|e| panic!("{flag}: {e}"));
        }
    }

    #[test]
    fn hooks_of_every_kind_are_accepted() {
        for kind in HOOKS {
            plan_with(|v| v["hooks"] = json!({*kind: [{"path": "/bin/true"}]}))
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
    }

    #[test]
    fn the_document_names_the_supported_spec_versions() {
        let d = document();
        assert_eq!(d["ociVersionMin"], "1.0.0");
        assert!(crate::spec::parse(
            format!(r#"{{"ociVersion":"{OCI_VERSION_MAX}"}}"#).as_bytes(),
            Path::new("c")
        )
        .is_ok());
        assert!(d["linux"]["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "CAP_SYS_ADMIN"));
    }
}
