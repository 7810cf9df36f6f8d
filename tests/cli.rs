//! The binary's own commands: `-info` (what containerd's CRI reads to enable user-namespaced
//! pods and recursive read-only mounts) and `spec`.

use shim::protos::{protobuf::Message, types::introspection::RuntimeInfo};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_containerd-shim-rs-v1");

#[test]
fn info_returns_the_oci_features_document() {
    let out = Command::new(BIN).arg("-info").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = RuntimeInfo::parse_from_bytes(&out.stdout).unwrap();
    assert_eq!(info.name, "io.containerd.rs.v1");
    assert_eq!(info.version.version, env!("CARGO_PKG_VERSION"));
    let features = info.features.as_ref().expect("features");
    assert_eq!(
        features.type_url,
        "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
    );
    let doc: serde_json::Value = serde_json::from_slice(&features.value).unwrap();
    assert_eq!(doc["ociVersionMin"], "1.0.0");
    let has =
        |key: &serde_json::Value, item: &str| key.as_array().unwrap().iter().any(|v| v == item);
    assert!(has(&doc["mountOptions"], "rro"));
    assert!(has(&doc["linux"]["namespaces"], "pid"));
    assert!(has(&doc["linux"]["seccomp"]["actions"], "SCMP_ACT_NOTIFY"));
    assert!(has(&doc["hooks"], "createContainer"));
}

#[test]
fn spec_prints_a_default_config_json() {
    let out = Command::new(BIN).arg("spec").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["root"]["path"], "rootfs");
    assert_eq!(doc["process"]["args"][0], "sh");
    assert_eq!(doc["ociVersion"], "1.3.0");
}

#[test]
fn version_names_the_commit_and_the_features() {
    let out = Command::new(BIN).arg("-v").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("io.containerd.rs.v1:\n"), "{text}");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}:")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_string()
    };
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    // A checkout's commit (12 hex digits, "-dirty" with local changes), as git reports it.
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert!(field("Revision").starts_with(&head), "{text}");
    assert!(field("Compiler").starts_with("rustc "), "{text}");
    assert!(field("Features").contains("libseccomp 2."), "{text}");
}
