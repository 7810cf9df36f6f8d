//! What tests/e2e_cri.rs and examples/cri_bench.rs share (each includes this file with
//! `#[path]`): the PodSandboxConfig kubelet would send, and the process lookups that find a
//! pod's shim.

use std::{path::Path, time::Duration};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use k8s_cri::v1::{LinuxPodSandboxConfig, PodSandboxConfig, PodSandboxMetadata};

#[path = "procs.rs"]
mod procs;
pub use procs::*;

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
