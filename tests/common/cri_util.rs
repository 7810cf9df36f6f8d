//! What tests/e2e_cri.rs and examples/cri_bench.rs share (each includes this file with
//! `#[path]`): the PodSandboxConfig kubelet would send, and the process lookups that find a
//! pod's shim.

use std::{fs, path::Path, time::Duration};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use k8s_cri::v1::{LinuxPodSandboxConfig, PodSandboxConfig, PodSandboxMetadata};

/// A pod `name` of Kubernetes namespace `namespace`, its cgroups below `cgroup_parent`, its
/// container logs in `logdir`.
pub fn pod_config(
    name: &str,
    namespace: &str,
    hostname: &str,
    cgroup_parent: &str,
    logdir: &Path,
) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: namespace.into(),
            attempt: 0,
        }),
        hostname: hostname.into(),
        log_directory: logdir.to_string_lossy().into_owned(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The parent of `pid`, from /proc/PID/stat (the field after the command, which may hold
/// spaces and parentheses).
pub fn ppid_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A gRPC channel to containerd's CRI socket, each call bounded by `timeout`.
pub async fn channel(sock: &Path, timeout: Duration) -> Result<Channel, String> {
    let shown = sock.display().to_string();
    let sock = sock.to_path_buf();
    Endpoint::try_from("http://[::]:0")
        .map_err(|e| e.to_string())?
        .timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let sock = sock.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(sock).await?))
            }
        }))
        .await
        .map_err(|e| format!("connect to containerd's CRI socket {shown}: {e}"))
}

/// The first word of a process's command line ("" if it is gone).
pub fn argv0(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            let first = b.split(|&c| c == 0).next().unwrap_or_default();
            String::from_utf8_lossy(first).into_owned()
        })
        .unwrap_or_default()
}

/// The shim daemon serving a container process: its topmost ancestor that is a
/// containerd-shim-* binary (our launcher is a shim below the daemon). By argv[0]: our
/// launcher runs from a detached view of the binary, whose /proc/PID/exe reads "/".
pub fn serving_shim(pid: i32) -> Option<i32> {
    let (mut top, mut p) = (None, pid);
    for _ in 0..64 {
        let Some(pp) = ppid_of(p).filter(|&pp| pp > 1) else {
            break;
        };
        if Path::new(&argv0(pp))
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("containerd-shim-"))
        {
            top = Some(pp);
        }
        p = pp;
    }
    top
}
