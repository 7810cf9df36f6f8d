//! Runtime options containerd passes with Create. For a runtime type that does not start with
//! `io.containerd.runc`, containerd 1.x clients send the legacy runc `CreateOptions`
//! (`containerd.linux.runc.CreateOptions`, e.g. `ctr run --no-pivot`); a client that takes us
//! for runc sends `containerd.runc.v1.Options`. Both are decoded by hand: the protos crate
//! does not generate them. Only `no_pivot_root` is honoured; `no_new_keyring` asks for what
//! we do anyway (no session keyring is ever created); any other field that is set is refused
//! by name rather than ignored.

use containerd_shim_protos::protobuf::{rt::WireType, CodedInputStream};

use crate::error::{Error, Result};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    pub no_pivot_root: bool,
}

const CREATE_OPTIONS: &str = "containerd.linux.runc.CreateOptions";
const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";

/// (field number, name) of the options of each message; field 1 is no_pivot_root in both.
fn field_names(message: &str) -> &'static [(u32, &'static str)] {
    match message {
        CREATE_OPTIONS => &[
            (1, "no_pivot_root"),
            (2, "open_tcp"),
            (3, "external_unix_sockets"),
            (4, "terminal"),
            (5, "file_locks"),
            (6, "empty_namespaces"),
            (7, "cgroups_mode"),
            (8, "no_new_keyring"),
            (9, "shim_cgroup"),
            (10, "io_uid"),
            (11, "io_gid"),
            (12, "criu_work_path"),
            (13, "criu_image_path"),
        ],
        _ => &[
            (1, "no_pivot_root"),
            (2, "no_new_keyring"),
            (3, "shim_cgroup"),
            (4, "io_uid"),
            (5, "io_gid"),
            (6, "binary_name"),
            (7, "root"),
            (8, "criu_path"),
            (9, "systemd_cgroup"),
            (10, "criu_image_path"),
            (11, "criu_work_path"),
        ],
    }
}

/// Decodes the options `Any`; `None` (or a type this runtime does not know) gives defaults.
pub fn parse(type_url: Option<&str>, value: &[u8]) -> Result<RuntimeOptions> {
    let Some(url) = type_url else {
        return Ok(RuntimeOptions::default());
    };
    let message = url.rsplit('/').next().unwrap_or(url);
    if message != CREATE_OPTIONS && message != RUNC_OPTIONS {
        return Ok(RuntimeOptions::default());
    }
    let bad = |e: String| Error::InvalidArgument(format!("runtime options {message}: {e}"));
    let names = field_names(message);
    let mut opts = RuntimeOptions::default();
    let mut is = CodedInputStream::from_bytes(value);
    while let Some(tag) = is.read_raw_tag_or_eof().map_err(|e| bad(e.to_string()))? {
        let (number, wire) = (tag >> 3, tag & 7);
        let wire = WireType::new(wire).ok_or_else(|| bad(format!("bad wire type {wire}")))?;
        let name = names
            .iter()
            .find(|(n, _)| *n == number)
            .map_or("unknown", |(_, name)| name);
        // proto3 does not encode defaults, but a client may: only a set value counts.
        let set = match wire {
            WireType::Varint => {
                let v = is.read_raw_varint64().map_err(|e| bad(e.to_string()))?;
                if name == "no_pivot_root" {
                    opts.no_pivot_root = v != 0;
                }
                v != 0
            }
            WireType::LengthDelimited => {
                !is.read_bytes().map_err(|e| bad(e.to_string()))?.is_empty()
            }
            other => {
                is.skip_field(other).map_err(|e| bad(e.to_string()))?;
                true
            }
        };
        if set && !matches!(name, "no_pivot_root" | "no_new_keyring") {
            return Err(Error::Unimplemented(format!(
                "runtime options {message}: {name} (field {number}) is not supported by io.containerd.rs.v1"
            )));
        }
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_pivot_root_from_both_message_types() {
        // field 1, varint 1
        for url in [
            "containerd.linux.runc.CreateOptions",
            "type.googleapis.com/containerd.linux.runc.CreateOptions",
            "containerd.runc.v1.Options",
        ] {
            assert!(
                parse(Some(url), &[0x08, 0x01]).unwrap().no_pivot_root,
                "{url}"
            );
        }
        assert!(!parse(Some(CREATE_OPTIONS), &[]).unwrap().no_pivot_root);
        assert!(
            !parse(Some(CREATE_OPTIONS), &[0x08, 0x00])
                .unwrap()
                .no_pivot_root
        );
        assert!(!parse(None, &[]).unwrap().no_pivot_root);
        // Something else entirely is not ours to read.
        assert_eq!(
            parse(Some("runtimeoptions.v1.Options"), &[0x0a, 0x01, b'x']).unwrap(),
            RuntimeOptions::default()
        );
    }

    #[test]
    fn no_new_keyring_is_accepted_and_other_fields_are_refused_by_name() {
        // CreateOptions.no_new_keyring = field 8
        assert!(parse(Some(CREATE_OPTIONS), &[0x40, 0x01, 0x08, 0x01]).is_ok());
        // CreateOptions.io_uid = field 10, varint 1000
        let e = parse(Some(CREATE_OPTIONS), &[0x50, 0xe8, 0x07])
            .unwrap_err()
            .to_string();
        assert!(e.contains("io_uid"), "{e}");
        // runc Options.binary_name = field 6, "crun"
        let e = parse(Some(RUNC_OPTIONS), &[0x32, 0x04, b'c', b'r', b'u', b'n'])
            .unwrap_err()
            .to_string();
        assert!(e.contains("binary_name"), "{e}");
        let e = parse(Some(CREATE_OPTIONS), &[0x08])
            .unwrap_err()
            .to_string();
        assert!(e.contains("CreateOptions"), "{e}");
    }
}
