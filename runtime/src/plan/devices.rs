//! Device nodes created in the container's /dev: the runtime-spec defaults plus the spec's list.

use std::path::PathBuf;

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNode {
    /// Absolute path inside the container.
    pub path: PathBuf,
    /// mknod(2) file type bits (S_IFCHR, S_IFBLK, S_IFIFO).
    pub kind: u32,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The devices every Linux container gets (runtime-spec config-linux.md "Default Devices").
fn default_devices() -> Vec<DeviceNode> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(name, major, minor)| DeviceNode {
        path: PathBuf::from("/dev").join(name),
        kind: libc::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

pub fn plan_devices(devices: &[LinuxDevice]) -> Result<Vec<DeviceNode>> {
    let mut nodes = default_devices();
    for (i, d) in devices.iter().enumerate() {
        let field = format!("linux.devices[{i}]");
        if !d.path().is_absolute() || d.path().file_name().is_none() {
            return Err(Error::invalid(
                format!("{field}.path"),
                format!("{} is not an absolute path to a file", d.path().display()),
            ));
        }
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(Error::invalid(
                    format!("{field}.type"),
                    "must be c, b, u or p",
                ))
            }
        };
        if d.major() < 0 || d.minor() < 0 {
            return Err(Error::invalid(
                field,
                "major and minor must not be negative",
            ));
        }
        let node = DeviceNode {
            path: d.path().clone(),
            kind,
            major: d.major() as u64,
            minor: d.minor() as u64,
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        };
        // A spec device replaces a default one at the same path.
        nodes.retain(|n| n.path != node.path);
        nodes.push(node);
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_always_there_and_spec_devices_override() {
        let devs: Vec<LinuxDevice> = serde_json::from_str(
            r#"[{"path":"/dev/fuse","type":"c","major":10,"minor":229,"fileMode":438,"uid":0,"gid":0},
                {"path":"/dev/null","type":"c","major":1,"minor":3,"fileMode":384}]"#,
        )
        .unwrap();
        let nodes = plan_devices(&devs).unwrap();
        let names: Vec<_> = nodes.iter().map(|n| n.path.to_str().unwrap()).collect();
        for d in [
            "/dev/zero",
            "/dev/full",
            "/dev/random",
            "/dev/urandom",
            "/dev/tty",
            "/dev/fuse",
            "/dev/null",
        ] {
            assert!(names.contains(&d), "{d}");
        }
        let null = nodes.iter().find(|n| n.path.ends_with("null")).unwrap();
        assert_eq!(null.mode, 0o600);
        assert_eq!(nodes.iter().filter(|n| n.path.ends_with("null")).count(), 1);
    }

    #[test]
    fn relative_device_path_is_an_error() {
        let devs: Vec<LinuxDevice> =
            serde_json::from_str(r#"[{"path":"dev/x","type":"c","major":1,"minor":1}]"#).unwrap();
        let e = plan_devices(&devs).unwrap_err().to_string();
        assert!(e.contains("linux.devices[0].path"), "{e}");
        let devs: Vec<LinuxDevice> =
            serde_json::from_str(r#"[{"path":"/dev/..","type":"c","major":1,"minor":1}]"#).unwrap();
        let e = plan_devices(&devs).unwrap_err().to_string();
        assert!(e.contains("linux.devices[0].path"), "{e}");
    }
}
