//! Loading and validating a bundle's `config.json`.

use std::path::Path;

use oci_spec::runtime::Spec;

use crate::{Error, Result};

/// The runtime-spec versions whose Linux fields this runtime understands.
const SUPPORTED_MAJOR: u64 = 1;
const MAX_MINOR: u64 = 3;

/// Reads `<bundle>/config.json`, parses it and checks `ociVersion`.
pub fn load(bundle: &Path) -> Result<Spec> {
    let file = bundle.join("config.json");
    let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
    parse(&bytes, &file)
}

/// Parses config.json bytes; `file` only names the source in errors.
pub fn parse(bytes: &[u8], file: &Path) -> Result<Spec> {
    let spec: Spec = serde_json::from_slice(bytes).map_err(|_| Error::SpecParse {
        file: file.to_path_buf(),
        message: located_parse_error(bytes),
    })?;
    check_version(spec.version())?;
    Ok(spec)
}

/// Parses again, on the error path only, to name the field that failed
/// (`linux.seccomp.syscalls[3].action: unknown variant ...`).
fn located_parse_error(bytes: &[u8]) -> String {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, Spec>(de) {
        Err(e) => e.to_string(),
        Ok(_) => "parse failed".into(),
    }
}

fn check_version(version: &str) -> Result<()> {
    let bad = || {
        Error::invalid(
            "ociVersion",
            format!("unsupported version {version:?} (supported: 1.0.0 to 1.{MAX_MINOR}.x)"),
        )
    };
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let mut parts = core.split('.').map(str::parse::<u64>);
    let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) else {
        return Err(bad());
    };
    if major != SUPPORTED_MAJOR || minor > MAX_MINOR {
        return Err(bad());
    }
    Ok(())
}

/// A default spec for a new bundle (like `runc spec`): an interactive `sh` in `rootfs`,
/// with the default namespaces, mounts, masked paths and capabilities of this runtime-spec
/// version.
pub fn default_spec_json() -> String {
    let mut spec = Spec::default();
    if let Some(p) = spec.process_mut() {
        p.set_terminal(Some(true));
        p.set_args(Some(vec!["sh".to_owned()]));
    }
    let mut v = serde_json::to_value(&spec).unwrap_or_default();
    v["ociVersion"] = crate::features::OCI_VERSION_MAX.into();
    v["root"] = serde_json::json!({"path": "rootfs", "readonly": true});
    v["hostname"] = "shim-rs".into();
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Spec> {
        parse(s.as_bytes(), Path::new("/b/config.json"))
    }

    #[test]
    fn accepts_supported_versions() {
        for v in ["1.0.0", "1.0.2-dev", "1.1.0", "1.2.1", "1.3.0"] {
            let s = format!(r#"{{"ociVersion":"{v}","root":{{"path":"rootfs"}}}}"#);
            parse_str(&s).unwrap_or_else(|e| panic!("{v}: {e}"));
        }
    }

    #[test]
    fn rejects_unsupported_versions_naming_the_field() {
        for v in ["2.0.0", "0.9.0", "1.9.0", "banana", ""] {
            let s = format!(r#"{{"ociVersion":"{v}"}}"#);
            let err = parse_str(&s).unwrap_err().to_string();
            assert!(err.contains("ociVersion"), "{v}: {err}");
        }
    }

    #[test]
    fn invalid_json_names_the_file() {
        let err = parse_str("{not json").unwrap_err().to_string();
        assert!(
            err.starts_with("/b/config.json: invalid OCI runtime spec"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_value_names_its_field() {
        let s = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"linux":{"seccomp":
            {"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
              {"names":["read"],"action":"SCMP_ACT_ALLOW"},
              {"names":["mkdir"],"action":"SCMP_ACT_BOGUS"}]}}}"#;
        let err = parse_str(s).unwrap_err().to_string();
        assert!(
            err.contains("linux.seccomp.syscalls[1].action: unknown variant `SCMP_ACT_BOGUS`"),
            "{err}"
        );
    }

    #[test]
    fn the_default_spec_loads_and_plans() {
        let json = default_spec_json();
        let spec = parse(json.as_bytes(), Path::new("config.json")).unwrap();
        assert_eq!(spec.version(), crate::features::OCI_VERSION_MAX);
        let layout = crate::cgroups::Layout::parse(
            "31 30 0:27 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices\n",
        );
        let plan = crate::plan::build(&spec, Path::new("/b"), "c", &layout).unwrap();
        assert_eq!(plan.process.args, ["sh"]);
        assert!(plan.process.terminal && plan.readonly_root);
    }

    #[test]
    fn missing_file_names_the_file() {
        let err = load(Path::new("/nonexistent-bundle"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent-bundle/config.json"), "{err}");
    }
}
