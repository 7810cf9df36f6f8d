//! Records what `containerd-shim-rs-v1 -v` reports about the build: the git commit it was
//! built from (with "-dirty" for uncommitted changes; "unknown" outside a checkout) and the
//! compiler.
use std::process::Command;

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let top = output("git", &["rev-parse", "--show-toplevel"]);
    let commit = output("git", &["rev-parse", "--short=12", "HEAD"])
        .map(|c| {
            let dirty = output("git", &["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c}-dirty")
            } else {
                c
            }
        })
        .unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = output(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SHIM_RS_COMMIT={commit}");
    println!("cargo:rustc-env=SHIM_RS_RUSTC={rustc_version}");
    if let Some(top) = top {
        // A new commit or a change to a tracked file: record them again.
        println!("cargo:rerun-if-changed={top}/.git/HEAD");
        println!("cargo:rerun-if-changed={top}/.git/index");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
