//! Runtime options containerd sends with Create (and, for 1.6/1.7, on `start`'s stdin):
//! runc's `containerd.runc.v1.Options` (ctr, nerdctl), `runtimeoptions.v1.Options` whose
//! `config_body` is the TOML of a CRI handler's `options` table, and the legacy
//! `containerd.linux.runc.CreateOptions`. What we honour is parsed; the rest is logged,
//! never fatal.

use containerd_shim_protos::{
    protobuf::{well_known_types::any::Any, CodedInputStream, Message},
    shim::oci::Options as RuncOptions,
};

/// The options this runtime acts on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// The systemd cgroup driver: each container's cgroup is a transient scope unit that
    /// systemd creates and removes (cgroupsPath "slice:prefix:name").
    pub systemd_cgroup: bool,
    /// A cgroup (path below each hierarchy root) the shim daemon and its launcher move into.
    pub shim_cgroup: Option<String>,
    /// Enter the rootfs with MS_MOVE + chroot instead of pivot_root (`ctr run --no-pivot`).
    pub no_pivot_root: bool,
    /// (uid, gid) that must be able to reopen the process' stdio (`/dev/stdout`): the host ids
    /// of a user-namespaced container's user. containerd 2.x's CRI sets it (runc's IoUid and
    /// IoGid) for pods with `hostUsers: false`.
    pub io_owner: Option<(u32, u32)>,
    /// Options recognised but not acted on, for the log.
    pub ignored: Vec<String>,
}

const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";
const RUNTIME_OPTIONS: &str = "runtimeoptions.v1.Options";
const LEGACY_CREATE_OPTIONS: &str = "containerd.linux.runc.CreateOptions";

impl RuntimeOptions {
    pub fn from_any(any: &Any) -> Result<RuntimeOptions, String> {
        let type_url = any.type_url.trim_start_matches("type.googleapis.com/");
        match type_url {
            RUNC_OPTIONS => {
                let o = RuncOptions::parse_from_bytes(&any.value)
                    .map_err(|e| format!("{RUNC_OPTIONS}: {e}"))?;
                let mut ignored = Vec::new();
                for (name, set) in [
                    // We never create a session keyring: no_new_keyring is what we do anyway.
                    ("no_new_keyring", o.no_new_keyring),
                    ("binary_name", !o.binary_name.is_empty()),
                    ("root", !o.root.is_empty()),
                    ("criu_image_path", !o.criu_image_path.is_empty()),
                ] {
                    if set {
                        ignored.push(name.to_owned());
                    }
                }
                Ok(RuntimeOptions {
                    systemd_cgroup: o.systemd_cgroup,
                    shim_cgroup: Some(o.shim_cgroup).filter(|s| !s.is_empty()),
                    no_pivot_root: o.no_pivot_root,
                    io_owner: (o.io_uid != 0 || o.io_gid != 0).then_some((o.io_uid, o.io_gid)),
                    ignored,
                })
            }
            RUNTIME_OPTIONS => {
                let (path, body) = runtime_options_fields(&any.value)?;
                // ctr --runtime-config-path names a file instead of sending the body.
                let body = match (body.is_empty(), path.is_empty()) {
                    (true, false) => std::fs::read_to_string(&path)
                        .map_err(|e| format!("{RUNTIME_OPTIONS}: config_path {path}: {e}"))?,
                    _ => body,
                };
                Ok(parse_toml_body(&body))
            }
            // What containerd 1.x clients (ctr) send for a runtime that is not runc-named.
            LEGACY_CREATE_OPTIONS => legacy_create_options(&any.value),
            other => Ok(RuntimeOptions {
                ignored: vec![format!("options of unknown type {other:?}")],
                ..Default::default()
            }),
        }
    }

    pub fn cgroup_driver(&self) -> runtime::cgroups::CgroupDriver {
        if self.systemd_cgroup {
            runtime::cgroups::CgroupDriver::Systemd
        } else {
            runtime::cgroups::CgroupDriver::Cgroupfs
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "systemd_cgroup={} shim_cgroup={:?} io_owner={:?} ignored={:?}",
            self.systemd_cgroup, self.shim_cgroup, self.io_owner, self.ignored
        )
    }
}

/// `containerd.linux.runc.CreateOptions`: field 1 is no_pivot_root, 9 shim_cgroup; the
/// rest (checkpoint and io settings) is logged.
fn legacy_create_options(bytes: &[u8]) -> Result<RuntimeOptions, String> {
    let mut input = CodedInputStream::from_bytes(bytes);
    let mut o = RuntimeOptions::default();
    let err = |e: containerd_shim_protos::protobuf::Error| format!("{LEGACY_CREATE_OPTIONS}: {e}");
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(err)? {
        let (field, wire) = (tag >> 3, tag & 7);
        match (field, wire) {
            (1, 0) => o.no_pivot_root = input.read_bool().map_err(err)?,
            (9, 2) => {
                o.shim_cgroup = Some(input.read_string().map_err(err)?).filter(|s| !s.is_empty())
            }
            _ => {
                o.ignored
                    .push(format!("{LEGACY_CREATE_OPTIONS} field {field}"));
                let wire_type = containerd_shim_protos::protobuf::rt::WireType::new(wire)
                    .ok_or_else(|| format!("{LEGACY_CREATE_OPTIONS}: bad wire type {wire}"))?;
                input.skip_field(wire_type).map_err(err)?;
            }
        }
    }
    Ok(o)
}

/// `runtimeoptions.v1.Options { type_url = 1; config_path = 2; config_body = 3 }`:
/// (config_path, config_body).
fn runtime_options_fields(bytes: &[u8]) -> Result<(String, String), String> {
    let mut input = CodedInputStream::from_bytes(bytes);
    let (mut path, mut body) = (String::new(), String::new());
    while let Some(tag) = input
        .read_raw_tag_or_eof()
        .map_err(|e| format!("{RUNTIME_OPTIONS}: {e}"))?
    {
        let (field, wire) = (tag >> 3, tag & 7);
        if field == 3 && wire == 2 {
            body = input
                .read_string()
                .map_err(|e| format!("{RUNTIME_OPTIONS}: {e}"))?;
        } else if field == 2 && wire == 2 {
            path = input
                .read_string()
                .map_err(|e| format!("{RUNTIME_OPTIONS}: {e}"))?;
        } else {
            let wire_type = containerd_shim_protos::protobuf::rt::WireType::new(wire)
                .ok_or_else(|| format!("{RUNTIME_OPTIONS}: bad wire type {wire}"))?;
            input
                .skip_field(wire_type)
                .map_err(|e| format!("{RUNTIME_OPTIONS}: {e}"))?;
        }
    }
    Ok((path, body))
}

/// The flat `Key = value` lines of a CRI handler's options table.
fn parse_toml_body(body: &str) -> RuntimeOptions {
    let mut o = RuntimeOptions::default();
    let (mut io_uid, mut io_gid) = (0u32, 0u32);
    for line in body.lines().map(str::trim) {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (
            key.trim(),
            value.trim().trim_matches('"').trim_matches('\''),
        );
        match key {
            "SystemdCgroup" => o.systemd_cgroup = value == "true",
            "NoPivotRoot" => o.no_pivot_root = value == "true",
            "ShimCgroup" if !value.is_empty() => o.shim_cgroup = Some(value.to_owned()),
            "IoUid" | "IoGid" => match value.parse::<u32>() {
                Ok(id) if key == "IoUid" => io_uid = id,
                Ok(id) => io_gid = id,
                Err(_) => o.ignored.push(format!("{key} (not an id: {value:?})")),
            },
            "" => {}
            other => o.ignored.push(other.to_owned()),
        }
    }
    o.io_owner = (io_uid != 0 || io_gid != 0).then_some((io_uid, io_gid));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_options_name_what_a_runtime_entry_sets() {
        let o = parse_toml_body(
            "SystemdCgroup = true\nNoPivotRoot = true\nShimCgroup = \"/shims\"\nIoUid = 1000\nIoGid = 1001\nBinaryName = \"runc\"\n",
        );
        assert!(o.systemd_cgroup && o.no_pivot_root);
        assert_eq!(o.shim_cgroup.as_deref(), Some("/shims"));
        assert_eq!(o.io_owner, Some((1000, 1001)));
        assert_eq!(o.ignored, ["BinaryName"]);
    }

    fn any(type_url: &str, value: Vec<u8>) -> Any {
        Any {
            type_url: type_url.into(),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn runc_options() {
        let o = RuncOptions {
            systemd_cgroup: true,
            shim_cgroup: "/shims".into(),
            binary_name: "crun".into(),
            ..Default::default()
        };
        let parsed =
            RuntimeOptions::from_any(&any(RUNC_OPTIONS, o.write_to_bytes().unwrap())).unwrap();
        assert!(parsed.systemd_cgroup);
        assert_eq!(parsed.shim_cgroup.as_deref(), Some("/shims"));
        assert_eq!(parsed.io_owner, None);
        assert_eq!(parsed.ignored, ["binary_name"]);
        // What containerd 2.x's CRI sends for a user-namespaced pod of a handler without an
        // options table: runc's options with the host ids of the container's user.
        let o = RuncOptions {
            io_uid: 200000,
            io_gid: 300000,
            ..Default::default()
        };
        let parsed =
            RuntimeOptions::from_any(&any(RUNC_OPTIONS, o.write_to_bytes().unwrap())).unwrap();
        assert_eq!(parsed.io_owner, Some((200000, 300000)));
        assert!(parsed.ignored.is_empty());
    }

    #[test]
    fn cri_runtime_options_toml_body() {
        let body =
            "SystemdCgroup = true\nShimCgroup = \"/pods/shims\"\nBinaryName = \"x\"\nIoUid = 7\n";
        // field 1 (type_url) then field 3 (config_body), length-delimited.
        let mut v = vec![0x0a, 3, b'a', b'b', b'c', 0x1a, body.len() as u8];
        v.extend_from_slice(body.as_bytes());
        let parsed = RuntimeOptions::from_any(&any(RUNTIME_OPTIONS, v)).unwrap();
        assert!(parsed.systemd_cgroup);
        assert_eq!(parsed.shim_cgroup.as_deref(), Some("/pods/shims"));
        assert_eq!(parsed.io_owner, Some((7, 0)));
        assert_eq!(parsed.ignored, ["BinaryName"]);
    }

    #[test]
    fn legacy_and_unknown_options_are_accepted() {
        let legacy =
            RuntimeOptions::from_any(&any(LEGACY_CREATE_OPTIONS, vec![0x08, 1, 0x20, 1])).unwrap();
        assert!(legacy.no_pivot_root);
        assert_eq!(legacy.ignored, [format!("{LEGACY_CREATE_OPTIONS} field 4")]);
        let unknown = RuntimeOptions::from_any(&any("example.com/Other", vec![1, 2, 3])).unwrap();
        assert!(!unknown.systemd_cgroup && unknown.shim_cgroup.is_none());
        assert!(RuntimeOptions::from_any(&any(RUNC_OPTIONS, vec![0xff, 0xff])).is_err());
    }
}
