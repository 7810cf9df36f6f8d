//! Containers from a full OCI spec (`ctr run --config`), for what `ctr run` flags cannot
//! express: the spec `ctr run` would write, over a busybox rootfs directory built here.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use super::{env, namespace};

/// `ctr run`'s spec as containerd 1.6 writes it (no seccomp, default devices and mounts).
pub const CTR_DEFAULT_SPEC: &str =
    include_str!("../../runtime/src/plan/testdata/ctr-default-spec.json");

/// A scratch directory for one test, removed on drop (after the containers are gone).
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(id: &str) -> Scratch {
        let p = env().workdir.join(format!("scratch-{id}"));
        fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A minimal rootfs: busybox-static with its applets, and the usual top directories.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "etc", "tmp", "run"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy /bin/busybox (busybox-static)");
    let out = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        if applet != "busybox" {
            let _ = symlink("busybox", root.join("bin").join(applet));
        }
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    root
}

/// The spec `ctr run` would generate, for `rootfs`, in the cgroup ctr would use.
pub fn base_spec(id: &str, rootfs: &Path, args: &[&str]) -> Value {
    let mut v: Value = serde_json::from_str(CTR_DEFAULT_SPEC).unwrap();
    v["root"] = json!({ "path": rootfs });
    v["process"]["args"] = json!(args);
    v["linux"]["cgroupsPath"] = json!(format!("/{}/{id}", namespace()));
    v
}
