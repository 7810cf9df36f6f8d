//! Kubernetes RuntimeClass end to end: containerd's CRI plugin drives our shim
//! (runtime handler `rs`, runtime type io.containerd.rs.v1) exactly as kubelet
//! would, over gRPC on containerd's socket (the `k8s-cri` client). Every scenario
//! runs for both handlers, `rs` and the stock `runc`, with the same assertions:
//! a failure that only `rs` shows is ours.
//!
//! containerd runs in the harness' CRI mode (`containerd.sh` with SHIM_RS_CRI=1):
//! local pause image as sandbox image, loopback-only CNI, private root/state, the CRI
//! config of its version (1.x: version 2; 2.x: version 3). `make test` runs this file
//! against containerd 1.6 (the system's), 1.7.24 and 2.1.9. Our handler `rs` has an options
//! table (runtimeoptions.v1.Options reach the shim); `rs-bare` has none (the README's
//! snippet), for the user-namespaced pod.

mod common;
#[path = "common/cri_util.rs"]
mod cri_util;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;

use common::cgroup::{Cgroup, Fact};

/// containerd's CRI plugin names its API version like this (kubelet checks it).
const CRI_API: &str = "v1";
const PAUSE_IMAGE: &str = "localhost/shim-rs/pause:3.9";
/// Bound on one CRI call: a hung shim must fail the test, not hang it.
const CALL: Duration = Duration::from_secs(60);

struct Cri {
    rt: RuntimeServiceClient<Channel>,
    img: ImageServiceClient<Channel>,
}

async fn connect() -> Cri {
    let sock = PathBuf::from(&common::cri_env().address);
    let ch = cri_util::channel(&sock, CALL).await.unwrap();
    Cri {
        rt: RuntimeServiceClient::new(ch.clone()),
        img: ImageServiceClient::new(ch),
    }
}

/// Runs one async scenario on a private current-thread runtime.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Unwraps a CRI reply, naming the call and showing containerd's log on error.
fn ok<T>(what: &str, r: Result<tonic::Response<T>, tonic::Status>) -> T {
    match r {
        Ok(r) => r.into_inner(),
        Err(s) => panic!(
            "{what}: {:?}: {}\ncontainerd log tail:\n{}",
            s.code(),
            s.message(),
            common::containerd_log_tail(30)
        ),
    }
}

/// The "info" JSON of a verbose status reply (pid, runtimeSpec, ...).
fn verbose_info(info: &HashMap<String, String>) -> serde_json::Value {
    let raw = info.get("info").expect("verbose status without info");
    serde_json::from_str(raw).expect("verbose info is JSON")
}

/// (major, minor) of the containerd under test ("1.6.20~ds1", "2.1.9+unknown", "v2.2.0").
fn containerd_version() -> (u32, u32) {
    let v = &common::cri_env().containerd_version;
    let mut parts = v.trim_start_matches('v').split('.').map(|p| p.parse().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor),
        _ => panic!("cannot tell the version of containerd {v:?}"),
    }
}

fn containerd_major() -> u32 {
    containerd_version().0
}

/// The shim binary containerd must run for a handler: ours from the harness' BINDIR, or the
/// containerd-shim-runc-v2 of containerd's own package (next to it; else the one on PATH,
/// as for the system containerd in /usr/bin).
fn expected_shim_exe(handler: &str) -> PathBuf {
    let e = common::cri_env();
    let p = if handler.starts_with("rs") {
        e.shim_bin.clone()
    } else {
        let beside = e
            .containerd_bin
            .parent()
            .expect("containerd binary has no directory")
            .join("containerd-shim-runc-v2");
        if beside.is_file() {
            beside
        } else {
            common::find_on_path("containerd-shim-runc-v2").expect("containerd-shim-runc-v2")
        }
    };
    fs::canonicalize(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn pod_config(name: &str, cgroup_parent: &str, logdir: &Path) -> PodSandboxConfig {
    cri_util::pod_config(name, "shim-rs-e2e", "crihost", cgroup_parent, logdir)
}

fn container_config(
    name: &str,
    command: &[&str],
    resources: LinuxContainerResources,
) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: common::IMAGE.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            resources: Some(resources),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A pod as the test made it, for assertions and teardown.
struct Pod {
    id: String,
    config: PodSandboxConfig,
    cgroup_parent: String,
    pid: i32,
    netns: Option<String>,
}

async fn run_pod(c: &mut Cri, handler: &str, tag: &str) -> Pod {
    run_pod_with(c, handler, tag, None).await
}

/// Namespace options as kubelet sets them on both the pod and its containers.
fn with_namespaces(ns: &Option<NamespaceOption>) -> Option<LinuxSandboxSecurityContext> {
    ns.as_ref().map(|ns| LinuxSandboxSecurityContext {
        namespace_options: Some(ns.clone()),
        ..Default::default()
    })
}

async fn run_pod_with(c: &mut Cri, handler: &str, tag: &str, ns: Option<NamespaceOption>) -> Pod {
    let e = common::cri_env();
    let name = common::unique_id(&format!("cri-{tag}-{handler}"));
    // cgroupfs driver: kubelet hands a parent below the hierarchy roots.
    let cgroup_parent = format!("/{name}");
    let logdir = e.workdir.join("pods").join(&name);
    fs::create_dir_all(&logdir).unwrap();
    let mut config = pod_config(&name, &cgroup_parent, &logdir);
    if let Some(linux) = config.linux.as_mut() {
        linux.security_context = with_namespaces(&ns);
    }
    // As kubelet: a pod on the host's network keeps the host's UTS namespace and hostname.
    if ns
        .as_ref()
        .is_some_and(|n| n.network == NamespaceMode::Node as i32)
    {
        config.hostname.clear();
    }
    let r = ok(
        "RunPodSandbox",
        c.rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        })
        .await,
    );
    let id = r.pod_sandbox_id;
    let st = ok(
        "PodSandboxStatus",
        c.rt.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: true,
        })
        .await,
    );
    let status = st.status.expect("PodSandboxStatus without status");
    assert_eq!(
        status.state,
        PodSandboxState::SandboxReady as i32,
        "{handler}: pod not ready"
    );
    let info = verbose_info(&st.info);
    assert_eq!(
        status.runtime_handler, handler,
        "{handler}: pod status names another handler: {status:?}"
    );
    // containerd 1.x has it at the top of the verbose info, 2.x in the sandbox metadata.
    let info_handler = match &info["runtimeHandler"] {
        serde_json::Value::Null => &info["sandboxMetadata"]["Metadata"]["RuntimeHandler"],
        h => h,
    };
    assert_eq!(
        info_handler, handler,
        "{handler}: pod created with another handler: {info}"
    );
    let pid = info["pid"].as_i64().expect("sandbox pid") as i32;
    let netns = info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["type"] == "network"))
        .and_then(|n| n["path"].as_str())
        .map(str::to_string);
    Pod {
        id,
        config,
        cgroup_parent,
        pid,
        netns,
    }
}

/// A container of the pod: it shares the namespaces the pod asked for, as kubelet sets it.
fn pod_container_config(
    pod: &Pod,
    name: &str,
    command: &[&str],
    resources: LinuxContainerResources,
) -> ContainerConfig {
    let mut config = container_config(name, command, resources);
    let pod_ns = pod
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    if let (Some(linux), Some(ns)) = (config.linux.as_mut(), pod_ns) {
        linux.security_context = Some(LinuxContainerSecurityContext {
            namespace_options: Some(ns),
            ..Default::default()
        });
    }
    config
}

/// Creates and starts a container in the pod; returns (id, pid, cgroupsPath).
async fn start_container(
    c: &mut Cri,
    pod: &Pod,
    name: &str,
    command: &[&str],
    resources: LinuxContainerResources,
) -> (String, i32, String) {
    let config = pod_container_config(pod, name, command, resources);
    let r = ok(
        "CreateContainer",
        c.rt.create_container(CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        })
        .await,
    );
    let id = r.container_id;
    ok(
        "StartContainer",
        c.rt.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await,
    );
    let (status, info) = container_status(c, &id).await;
    assert_eq!(
        status.state,
        ContainerState::ContainerRunning as i32,
        "{name} not running: {status:?}"
    );
    let pid = info["pid"].as_i64().expect("container pid") as i32;
    let cg = info["runtimeSpec"]["linux"]["cgroupsPath"]
        .as_str()
        .expect("cgroupsPath")
        .to_string();
    (id, pid, cg)
}

async fn container_status(c: &mut Cri, id: &str) -> (ContainerStatus, serde_json::Value) {
    let r = ok(
        "ContainerStatus",
        c.rt.container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await,
    );
    (
        r.status.expect("ContainerStatus without status"),
        verbose_info(&r.info),
    )
}

async fn exec_sync(c: &mut Cri, id: &str, cmd: &[&str]) -> (String, String, i32) {
    let r = ok(
        "ExecSync",
        c.rt.exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 30,
        })
        .await,
    );
    (
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
        r.exit_code,
    )
}

fn read_trim(p: impl AsRef<Path>) -> String {
    let p = p.as_ref();
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

/// The cgroup of a process (v1: in the hierarchy of `controller`; v2: its one cgroup).
fn cgroup_of(pid: i32, controller: &str) -> String {
    common::cgroup::process_cgroup(pid, controller)
}

/// Everything of the pod that may remain after it was removed: empty when clean.
/// `shim`: the pod's shim daemon (pid, argv[0]).
fn pod_leftovers(pod: &Pod, ids: &[&str], (shim, shim_argv0): (i32, &str)) -> Vec<String> {
    let e = common::cri_env();
    let mut found = Vec::new();
    if cri_util::argv0(shim) == shim_argv0 {
        found.push(format!("shim {shim} ({shim_argv0}) still running"));
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for l in mountinfo.lines() {
        if ids.iter().any(|id| l.contains(id))
            || pod.netns.as_deref().is_some_and(|n| l.contains(n))
        {
            found.push(format!("mount: {l}"));
        }
    }
    if let Some(n) = &pod.netns {
        if Path::new(n).exists() {
            found.push(format!("network namespace {n} still exists"));
        }
    }
    if let Ok(rd) = fs::read_dir("/proc") {
        for d in rd.flatten() {
            let Ok(pid) = d.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let argv = fs::read(d.path().join("cmdline")).unwrap_or_default();
            let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
            if ids.iter().any(|id| argv.contains(id)) {
                found.push(format!("process {pid} mentions the pod: {argv}"));
            }
        }
    }
    for id in ids {
        let cg = Cgroup::at(&format!("{}/{id}", pod.cgroup_parent));
        for d in cg.existing_dirs() {
            found.push(format!("cgroup {} still exists", d.display()));
        }
    }
    for id in ids {
        let bundle = e
            .workdir
            .join("state/io.containerd.runtime.v2.task/k8s.io")
            .join(id);
        if bundle.exists() {
            found.push(format!("bundle {} still exists", bundle.display()));
        }
        if let Ok(rd) = fs::read_dir("/run/containerd") {
            for d in rd.flatten() {
                let p = d.path().join("k8s.io").join(id);
                if p.exists() {
                    found.push(format!("{} still exists", p.display()));
                }
            }
        }
    }
    found
}

/// kubelet removes a pod's cgroup parent itself once the pod is gone: rmdir must
/// succeed everywhere (nothing of the pod left inside).
/// Waits (bounded) until nothing of the pod remains, then asserts it.
fn assert_pod_gone(handler: &str, pod: &Pod, ids: &[&str], shim: (i32, &str)) {
    let mut last = Vec::new();
    common::wait_until(common::SETTLE, || {
        last = pod_leftovers(pod, ids, shim);
        last.is_empty()
    });
    assert!(
        last.is_empty(),
        "{handler}: leftovers:\n  {}",
        last.join("\n  ")
    );
}

fn remove_pod_cgroup_parent(parent: &str) {
    Cgroup::at(parent)
        .remove()
        .unwrap_or_else(|e| panic!("pod cgroup parent not empty: {e}"));
}

async fn stop_remove_pod(c: &mut Cri, pod: &Pod, containers: &[&str]) {
    for id in containers {
        ok(
            "StopContainer",
            c.rt.stop_container(StopContainerRequest {
                container_id: id.to_string(),
                timeout: 2,
            })
            .await,
        );
        let (st, _) = container_status(c, id).await;
        assert_eq!(
            st.state,
            ContainerState::ContainerExited as i32,
            "{id} not exited after StopContainer: {st:?}"
        );
        ok(
            "RemoveContainer",
            c.rt.remove_container(RemoveContainerRequest {
                container_id: id.to_string(),
            })
            .await,
        );
    }
    ok(
        "StopPodSandbox",
        c.rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        })
        .await,
    );
    ok(
        "RemovePodSandbox",
        c.rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        })
        .await,
    );
}

// ---------------------------------------------------------------- tests ---

fn version_and_images() {
    block_on(async {
        let mut c = connect().await;
        let v = ok(
            "Version",
            c.rt.version(VersionRequest {
                version: CRI_API.into(),
            })
            .await,
        );
        assert_eq!(v.runtime_name, "containerd");
        assert_eq!(v.runtime_api_version, CRI_API);
        // kubelet's readiness check; 2.x also lists the runtime handlers (RuntimeClasses).
        let st = ok(
            "Status",
            c.rt.status(StatusRequest { verbose: false }).await,
        );
        let conditions = st.status.map(|s| s.conditions).unwrap_or_default();
        for want in ["RuntimeReady", "NetworkReady"] {
            assert!(
                conditions.iter().any(|c| c.r#type == want && c.status),
                "{want} not true: {conditions:?}"
            );
        }
        let handlers: Vec<&str> = st
            .runtime_handlers
            .iter()
            .map(|h| h.name.as_str())
            .collect();
        if containerd_major() >= 2 || !handlers.is_empty() {
            for want in ["rs", "rs-bare", "runc"] {
                assert!(
                    handlers.contains(&want),
                    "handler {want} not listed: {handlers:?}"
                );
            }
        }
        if containerd_major() >= 2 {
            // containerd 2.x decodes our `-info` (RuntimeInfo and the OCI features document)
            // in its introspection service; its CRI turns it into the handler's
            // user_namespaces and recursive_read_only_mounts features (2.2.7 and later ask
            // every runtime type). The options arrive as CRI sends a handler's table:
            // runtimeoptions.v1.Options, here naming a file.
            let cfg = common::cri_env().workdir.join("rs-runtime-options.toml");
            fs::write(&cfg, "SystemdCgroup = false\n").unwrap();
            let out = common::ctr_ok(&[
                "plugins",
                "inspect-runtime",
                "--runtime",
                common::RS_RUNTIME,
                "--runtime-config-path",
                &cfg.to_string_lossy(),
            ]);
            let info: serde_json::Value =
                serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
            let f = &info["Features"];
            let has = |v: &serde_json::Value, s: &str| {
                v.as_array().is_some_and(|a| a.iter().any(|x| x == s))
            };
            assert_eq!(info["Name"], common::RS_RUNTIME, "{out}");
            assert!(has(&f["linux"]["namespaces"], "user"), "{out}");
            assert!(has(&f["mountOptions"], "rro"), "{out}");
            assert_eq!(
                f["linux"]["mountExtensions"]["idmap"]["enabled"], true,
                "{out}"
            );
        }
        let imgs = ok(
            "ListImages",
            c.img.list_images(ListImagesRequest { filter: None }).await,
        );
        let tags: Vec<&String> = imgs.images.iter().flat_map(|i| &i.repo_tags).collect();
        for want in [common::IMAGE, PAUSE_IMAGE] {
            assert!(
                tags.iter().any(|t| *t == want),
                "{want} not listed: {tags:?}"
            );
        }
        let st = ok(
            "ImageStatus",
            c.img
                .image_status(ImageStatusRequest {
                    image: Some(ImageSpec {
                        image: common::IMAGE.into(),
                        ..Default::default()
                    }),
                    verbose: false,
                })
                .await,
        );
        let img = st.image.expect("busybox image status");
        assert!(img.size > 0, "busybox image size 0: {img:?}");
    });
}

#[test]
fn cri_version_and_images() {
    let _g = common::shared();
    version_and_images();
}

/// The README's handler snippet for this containerd's config version is, line for line, in
/// the config the harness runs (as handler `rs-bare`, which the user-namespaced pod uses).
#[test]
fn cri_readme_handler_snippet_is_the_tested_config() {
    let _g = common::shared();
    let e = common::cri_env();
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let section = readme
        .split("### Kubernetes (CRI RuntimeClass)")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has no Kubernetes section");
    let config = fs::read_to_string(e.workdir.join("config.toml")).unwrap();
    let config_lines: Vec<&str> = config.lines().map(str::trim).collect();
    let version = if containerd_major() >= 2 { 3 } else { 2 };
    let snippet = section
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| {
            b.lines()
                .any(|l| l.trim() == format!("version = {version}"))
        })
        .unwrap_or_else(|| panic!("no config version {version} snippet in the README"));
    for line in snippet.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let ours = line.replace(".runtimes.rs]", ".runtimes.rs-bare]");
        assert!(
            config_lines.contains(&ours.as_str()),
            "README line {line:?} (as {ours:?}) is not in the tested config:\n{config}"
        );
    }
}

/// The whole pod life as kubelet drives it, on one runtime handler.
fn pod_lifecycle(handler: &str) {
    block_on(async {
        let mut c = connect().await;
        let pod = run_pod(&mut c, handler, "pod").await;

        // The pod's network: loopback only (CNI loopback plugin), up.
        let netns = pod
            .netns
            .clone()
            .expect("sandbox spec has no network namespace path");
        assert!(Path::new(&netns).exists(), "{handler}: {netns} missing");
        let host_net = fs::read_link("/proc/self/ns/net").unwrap();
        let pod_net = fs::read_link(format!("/proc/{}/ns/net", pod.pid)).unwrap();
        assert_ne!(pod_net, host_net, "{handler}: pod shares the host network");

        let mut res = LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        };
        let (c1, c1_pid, c1_cg) =
            start_container(&mut c, &pod, "sleeper", &["sleep", "3600"], res.clone()).await;
        assert_eq!(c1_cg, format!("{}/{c1}", pod.cgroup_parent), "{handler}");

        // ExecSync: output and exit codes travel back.
        let (out, err, code) = exec_sync(&mut c, &c1, &["echo", "hi"]).await;
        assert_eq!((out.as_str(), code), ("hi\n", 0), "{handler}: stderr {err}");
        let (_, _, code) = exec_sync(&mut c, &c1, &["sh", "-c", "exit 3"]).await;
        assert_eq!(code, 3, "{handler}: exit code of exec");

        // The container sits in the pod's network namespace: only lo, and it is up.
        assert_eq!(
            fs::read_link(format!("/proc/{c1_pid}/ns/net")).unwrap(),
            pod_net,
            "{handler}: container not in the pod network namespace"
        );
        let (out, _, code) = exec_sync(&mut c, &c1, &["ls", "/sys/class/net"]).await;
        assert_eq!((out.trim(), code), ("lo", 0), "{handler}: interfaces");
        let (out, _, _) = exec_sync(&mut c, &c1, &["cat", "/sys/class/net/lo/flags"]).await;
        let flags = u32::from_str_radix(out.trim().trim_start_matches("0x"), 16)
            .unwrap_or_else(|_| panic!("{handler}: lo flags {out:?}"));
        assert_eq!(flags & 0x9, 0x9, "{handler}: lo not UP|LOOPBACK: {out}");
        let (out, _, _) = exec_sync(&mut c, &c1, &["cat", "/proc/net/dev"]).await;
        let ifaces: Vec<&str> = out
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(str::trim)
            .collect();
        assert_eq!(ifaces, ["lo"], "{handler}: /proc/net/dev: {out}");
        // enable_unprivileged_ports and _icmp (on for every version in the harness): the
        // sandbox's net.ipv4 sysctls, set in the pod's network namespace (defaults 1024, "1 0").
        let (out, err, code) = exec_sync(
            &mut c,
            &c1,
            &[
                "cat",
                "/proc/sys/net/ipv4/ip_unprivileged_port_start",
                "/proc/sys/net/ipv4/ping_group_range",
            ],
        )
        .await;
        assert_eq!(
            (out.split_whitespace().collect::<Vec<_>>(), code),
            (vec!["0", "0", "2147483647"], 0),
            "{handler}: pod sysctls: {out:?} {err}"
        );

        // Stats from the shim: memory in use.
        let stats = ok(
            "ContainerStats",
            c.rt.container_stats(ContainerStatsRequest {
                container_id: c1.clone(),
            })
            .await,
        )
        .stats
        .expect("no stats");
        let mem = stats.memory.expect("no memory stats");
        let ws = mem.working_set_bytes.map(|v| v.value).unwrap_or(0);
        let usage = mem.usage_bytes.map(|v| v.value).unwrap_or(0);
        assert!(
            ws > 0 || usage > 0,
            "{handler}: memory stats all zero: {mem:?}"
        );
        assert!(
            stats.cpu.is_some_and(|c| c.timestamp > 0),
            "{handler}: no cpu stats"
        );

        // Limits at creation, then UpdateContainerResources, both in the cgroup.
        let cg = Cgroup::at(&c1_cg);
        let quota = |quota| Fact::CpuQuota {
            quota,
            period: 100_000,
        };
        assert_eq!(cg.check(&quota(50_000)), None, "{handler}");
        assert_eq!(cg.check(&Fact::MemoryLimit(64 << 20)), None, "{handler}");
        res.cpu_quota = 20_000;
        ok(
            "UpdateContainerResources",
            c.rt.update_container_resources(UpdateContainerResourcesRequest {
                container_id: c1.clone(),
                linux: Some(res.clone()),
                ..Default::default()
            })
            .await,
        );
        assert_eq!(cg.check(&quota(20_000)), None, "{handler}");

        // A second container of the pod: same shim daemon, same pod cgroup parent.
        let (c2, c2_pid, c2_cg) =
            start_container(&mut c, &pod, "second", &["sleep", "3600"], res.clone()).await;
        let shim = cri_util::serving_shim(pod.pid).expect("sandbox has no shim ancestor");
        assert_eq!(
            cri_util::serving_shim(c1_pid),
            Some(shim),
            "{handler}: first container"
        );
        assert_eq!(
            cri_util::serving_shim(c2_pid),
            Some(shim),
            "{handler}: second container"
        );
        let shim_argv0 = cri_util::argv0(shim);
        let want_shim = if handler.starts_with("rs") {
            "containerd-shim-rs-v1"
        } else {
            "containerd-shim-runc-v2"
        };
        assert!(
            shim_argv0.ends_with(want_shim),
            "{handler}: served by {shim_argv0}"
        );
        // The file, not its name (the same inode whether the link reads its path or "/", as
        // for a detached read-only view of it: README "Security").
        let file_id = |p: &str| {
            use std::os::unix::fs::MetadataExt;
            let m = fs::metadata(p).unwrap_or_else(|e| panic!("{p}: {e}"));
            (m.dev(), m.ino())
        };
        let want_exe = expected_shim_exe(handler);
        assert_eq!(
            file_id(&format!("/proc/{shim}/exe")),
            file_id(want_exe.to_str().unwrap()),
            "{handler}: the shim ({:?}) is not the binary of this containerd's package ({})",
            fs::read_link(format!("/proc/{shim}/exe")),
            want_exe.display()
        );
        for (what, pid, cg) in [
            (
                "sandbox",
                pod.pid,
                format!("{}/{}", pod.cgroup_parent, pod.id),
            ),
            ("first", c1_pid, c1_cg.clone()),
            ("second", c2_pid, c2_cg.clone()),
        ] {
            for ctrl in ["memory", "cpu", "pids"] {
                assert_eq!(cgroup_of(pid, ctrl), cg, "{handler}: {what} {ctrl} cgroup");
            }
        }
        // Pod stats as kubelet's CRI stats provider reads them: the process count comes from
        // the shim (1.x: the Pids RPC of each running container; 2.x: pids.current in each
        // container's Stats), one sleep per container.
        let ps = ok(
            "PodSandboxStats",
            c.rt.pod_sandbox_stats(PodSandboxStatsRequest {
                pod_sandbox_id: pod.id.clone(),
            })
            .await,
        )
        .stats
        .and_then(|s| s.linux)
        .expect("PodSandboxStats without linux stats");
        assert_eq!(
            ps.process
                .as_ref()
                .and_then(|p| p.process_count.as_ref())
                .map(|v| v.value),
            Some(2),
            "{handler}: pod process count: {:?}",
            ps.process
        );
        let mut listed: Vec<&str> = ps
            .containers
            .iter()
            .filter_map(|s| s.attributes.as_ref().map(|a| a.id.as_str()))
            .collect();
        listed.sort_unstable();
        let mut want = [c1.as_str(), c2.as_str()];
        want.sort_unstable();
        assert_eq!(listed, want, "{handler}: containers in the pod stats");
        assert!(
            ps.memory
                .as_ref()
                .and_then(|m| m.working_set_bytes.as_ref())
                .is_some_and(|v| v.value > 0),
            "{handler}: pod memory: {:?}",
            ps.memory
        );
        let (out, _, _) = exec_sync(&mut c, &c2, &["hostname"]).await;
        assert_eq!(out.trim(), "crihost", "{handler}: pod hostname");

        // Teardown as kubelet does it; then nothing of the pod may remain.
        stop_remove_pod(&mut c, &pod, &[&c1, &c2]).await;
        let ids = [pod.id.as_str(), c1.as_str(), c2.as_str()];
        assert_pod_gone(handler, &pod, &ids, (shim, &shim_argv0));
        let listed = ok(
            "ListContainers",
            c.rt.list_containers(ListContainersRequest { filter: None })
                .await,
        );
        assert!(
            !listed
                .containers
                .iter()
                .any(|x| ids.contains(&x.id.as_str())),
            "{handler}: containers still listed"
        );
        let pods = ok(
            "ListPodSandbox",
            c.rt.list_pod_sandbox(ListPodSandboxRequest { filter: None })
                .await,
        );
        assert!(
            !pods.items.iter().any(|p| p.id == pod.id),
            "{handler}: pod still listed"
        );
        remove_pod_cgroup_parent(&pod.cgroup_parent);
    });
}

#[test]
fn cri_pod_lifecycle_rs() {
    let _g = common::shared();
    pod_lifecycle("rs");
}

#[test]
fn cri_pod_lifecycle_runc() {
    let _g = common::shared();
    pod_lifecycle("runc");
}

/// A container over its memory limit is OOM-killed and kubelet learns why.
fn oom_killed(handler: &str) {
    block_on(async {
        let mut c = connect().await;
        let pod = run_pod(&mut c, handler, "oom").await;
        let shim = cri_util::serving_shim(pod.pid).expect("sandbox has no shim ancestor");
        let shim_argv0 = cri_util::argv0(shim);
        let res = LinuxContainerResources {
            memory_limit_in_bytes: 32 << 20,
            memory_swap_limit_in_bytes: 32 << 20,
            ..Default::default()
        };
        // dd fills a 64 MiB buffer from /dev/zero: pid 1 itself exceeds the limit.
        // After a second: runc's shim watches for OOM only once the task started, so an
        // OOM within its first milliseconds shows as reason "Error" there (ours reports it).
        let (id, _, _) = start_container(
            &mut c,
            &pod,
            "hog",
            &[
                "sh",
                "-c",
                "sleep 1; exec dd if=/dev/zero of=/dev/null bs=64M count=1",
            ],
            res,
        )
        .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            let (st, _) = container_status(&mut c, &id).await;
            if st.state == ContainerState::ContainerExited as i32 {
                break st;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{handler}: hog still {st:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(status.reason, "OOMKilled", "{handler}: {status:?}");
        assert_eq!(status.exit_code, 137, "{handler}: {status:?}");

        stop_remove_pod(&mut c, &pod, &[&id]).await;
        let ids = [pod.id.as_str(), id.as_str()];
        assert_pod_gone(handler, &pod, &ids, (shim, &shim_argv0));
        remove_pod_cgroup_parent(&pod.cgroup_parent);
    });
}

#[test]
fn cri_oom_killed_rs() {
    let _g = common::shared();
    oom_killed("rs");
}

#[test]
fn cri_oom_killed_runc() {
    let _g = common::shared();
    oom_killed("runc");
}

/// A pod on the host's network (`hostNetwork: true`): its container sees the host's network
/// namespace; ListContainerStats reports it. Then nothing is left.
fn host_network_pod(handler: &str) {
    block_on(async {
        let mut c = connect().await;
        let ns = NamespaceOption {
            network: NamespaceMode::Node as i32,
            pid: NamespaceMode::Container as i32,
            ipc: NamespaceMode::Pod as i32,
            ..Default::default()
        };
        let pod = run_pod_with(&mut c, handler, "hostnet", Some(ns)).await;
        assert!(
            pod.netns.is_none(),
            "{handler}: a host-network pod got a netns: {:?}",
            pod.netns
        );
        let shim = cri_util::serving_shim(pod.pid).expect("sandbox has no shim ancestor");
        let shim_argv0 = cri_util::argv0(shim);
        let (id, _, _) = start_container(
            &mut c,
            &pod,
            "web",
            &["sleep", "600"],
            LinuxContainerResources::default(),
        )
        .await;
        let (out, err, code) = exec_sync(&mut c, &id, &["readlink", "/proc/self/ns/net"]).await;
        assert_eq!(code, 0, "{handler}: {err}");
        let host = fs::read_link("/proc/self/ns/net").unwrap();
        assert_eq!(
            out.trim(),
            host.to_string_lossy(),
            "{handler}: not the host's network"
        );
        let stats = ok(
            "ListContainerStats",
            c.rt.list_container_stats(ListContainerStatsRequest {
                filter: Some(ContainerStatsFilter {
                    pod_sandbox_id: pod.id.clone(),
                    ..Default::default()
                }),
            })
            .await,
        );
        assert!(
            stats
                .stats
                .iter()
                .any(|s| s.attributes.as_ref().is_some_and(|a| a.id == id)),
            "{handler}: ListContainerStats misses {id}: {:?}",
            stats.stats
        );
        stop_remove_pod(&mut c, &pod, &[&id]).await;
        let ids = [pod.id.as_str(), id.as_str()];
        assert_pod_gone(handler, &pod, &ids, (shim, &shim_argv0));
        remove_pod_cgroup_parent(&pod.cgroup_parent);
    });
}

#[test]
fn cri_host_network_pod_rs() {
    let _g = common::shared();
    host_network_pod("rs");
}

#[test]
fn cri_host_network_pod_runc() {
    let _g = common::shared();
    host_network_pod("runc");
}

/// Whether the runtime binary of the stock handler (runc) declares idmapped mounts in its
/// OCI features: containerd 2.x refuses a user-namespaced pod's containers without them.
fn runc_has_idmap_mounts() -> bool {
    let out = std::process::Command::new("runc")
        .arg("features")
        .output()
        .expect("run `runc features`");
    assert!(out.status.success(), "runc features: {out:?}");
    let f: serde_json::Value = serde_json::from_slice(&out.stdout).expect("runc features JSON");
    f["linux"]["mountExtensions"]["idmap"]["enabled"] == true
}

fn uid_map(pid: i32) -> Vec<String> {
    read_trim(format!("/proc/{pid}/uid_map"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn host_owner(path: impl AsRef<Path>) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let md = fs::metadata(path.as_ref())
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.as_ref().display()));
    (md.uid(), md.gid())
}

/// A pod with its own user namespace (Kubernetes `hostUsers: false`): its processes are root
/// inside and an unprivileged range outside; the image's files are owned by root inside
/// (containerd 1.7 chowns a copy of the layers, 2.x hands the shim an overlay whose layers
/// must be idmapped); the pod's /dev/shm, which containerd keeps below a 0700 directory,
/// is bound all the same. containerd 1.6 has no user namespaces for pods: there the pod runs
/// in the host's, which is asserted too.
/// Handler `rs-bare` (no options table): containerd 2.x then sends runc's options with
/// IoUid/IoGid, which the process needs to reopen its stdio (with an options table it fails
/// the container itself, before any shim is involved: it assumes runc's options).
fn userns_pod(handler: &str, host_base: u32) {
    block_on(async {
        let mut c = connect().await;
        let (major, minor) = containerd_version();
        let has_userns = (major, minor) >= (1, 7);
        let size = 65_536;
        let map = vec![IdMapping {
            host_id: host_base,
            container_id: 0,
            length: size,
        }];
        let ns = NamespaceOption {
            network: NamespaceMode::Pod as i32,
            pid: NamespaceMode::Container as i32,
            ipc: NamespaceMode::Pod as i32,
            userns_options: Some(UserNamespace {
                mode: NamespaceMode::Pod as i32,
                uids: map.clone(),
                gids: map,
            }),
            ..Default::default()
        };
        let pod = run_pod_with(&mut c, handler, "userns", Some(ns)).await;
        let shim = cri_util::serving_shim(pod.pid).expect("sandbox has no shim ancestor");
        let shim_argv0 = cri_util::argv0(shim);
        let want_map = if has_userns {
            vec!["0".to_string(), host_base.to_string(), size.to_string()]
        } else {
            vec!["0".into(), "0".into(), u32::MAX.to_string()]
        };
        let (root_uid, root_gid) = if has_userns {
            (host_base, host_base)
        } else {
            (0, 0)
        };
        assert_eq!(uid_map(pod.pid), want_map, "{handler}: sandbox uid_map");
        assert_eq!(
            host_owner(format!("/proc/{}/root/pause", pod.pid)),
            (root_uid, root_gid),
            "{handler}: owner of the sandbox image's /pause as the host sees it"
        );
        let mounts = read_trim(format!("/proc/{}/mountinfo", pod.pid));
        assert!(
            mounts
                .lines()
                .any(|l| l.split(' ').nth(4) == Some("/dev/shm")),
            "{handler}: no /dev/shm in the sandbox:\n{mounts}"
        );

        if major >= 2 && handler == "runc" && !runc_has_idmap_mounts() {
            // The pod's containers bind /etc/hosts and the like idmapped: containerd 2.x
            // checks the runtime's features first, and runc before 1.2 has none.
            let config = pod_container_config(
                &pod,
                "u",
                &["sleep", "600"],
                LinuxContainerResources::default(),
            );
            let created =
                c.rt.create_container(CreateContainerRequest {
                    pod_sandbox_id: pod.id.clone(),
                    config: Some(config),
                    sandbox_config: Some(pod.config.clone()),
                })
                .await;
            let id = ok("CreateContainer", created).container_id;
            let started =
                c.rt.start_container(StartContainerRequest {
                    container_id: id.clone(),
                })
                .await;
            let err = started.expect_err("runc without idmapped mounts ran the container");
            assert!(
                err.message().contains("idmap mounts not supported"),
                "{handler}: {err:?}"
            );
            ok(
                "RemoveContainer",
                c.rt.remove_container(RemoveContainerRequest {
                    container_id: id.clone(),
                })
                .await,
            );
            stop_remove_pod(&mut c, &pod, &[]).await;
            assert_pod_gone(
                handler,
                &pod,
                &[pod.id.as_str(), id.as_str()],
                (shim, &shim_argv0),
            );
            remove_pod_cgroup_parent(&pod.cgroup_parent);
            return;
        }

        let (id, pid, _) = start_container(
            &mut c,
            &pod,
            "u",
            &["sleep", "600"],
            LinuxContainerResources::default(),
        )
        .await;
        assert_eq!(uid_map(pid), want_map, "{handler}: container uid_map");
        let (out, err, code) = exec_sync(
            &mut c,
            &id,
            &[
                "sh",
                "-c",
                "id -u; cat /proc/self/uid_map; stat -c %u:%g /bin/busybox; touch /tmp/written",
            ],
        )
        .await;
        let words: Vec<&str> = out.split_whitespace().collect();
        let want: Vec<String> = ["0".to_string()]
            .into_iter()
            .chain(want_map.iter().cloned())
            .chain(["0:0".to_string()])
            .collect();
        assert_eq!(
            (words, code),
            (want.iter().map(String::as_str).collect(), 0),
            "{handler}: {err}"
        );
        assert_eq!(
            host_owner(format!("/proc/{pid}/root/tmp/written")),
            (root_uid, root_gid),
            "{handler}: a file the container's root wrote, as the host sees it"
        );
        if major >= 2 {
            // containerd 2.x asks for stdio the container's root can reopen (IoUid/IoGid).
            let (out, err, code) =
                exec_sync(&mut c, &id, &["sh", "-c", "echo reopened >/dev/stdout"]).await;
            assert_eq!((out.as_str(), code), ("reopened\n", 0), "{handler}: {err}");
        }

        stop_remove_pod(&mut c, &pod, &[&id]).await;
        assert_pod_gone(
            handler,
            &pod,
            &[pod.id.as_str(), id.as_str()],
            (shim, &shim_argv0),
        );
        remove_pod_cgroup_parent(&pod.cgroup_parent);
    });
}

#[test]
fn cri_userns_pod_rs() {
    let _g = common::shared();
    userns_pod("rs-bare", 200_000);
}

#[test]
fn cri_userns_pod_runc() {
    let _g = common::shared();
    // Another range: containerd 1.7 makes one remapped copy of the image per range, and two
    // pods making the same copy at once collide there.
    userns_pod("runc", 300_000);
}

// ------------------------------------------------- systemd cgroup driver ---

/// True where systemd is PID 1 (the test VM's systemd mode); otherwise says why `test` is
/// skipped.
fn systemd_or_skip(test: &str) -> bool {
    let comm = fs::read_to_string("/proc/1/comm").unwrap_or_default();
    if comm.trim() == "systemd" && Path::new("/run/systemd/system").is_dir() {
        return true;
    }
    eprintln!(
        "{test}: skipped: PID 1 is {:?}, not systemd; run it in the test VM's systemd mode \
         (make test-systemd)",
        comm.trim()
    );
    false
}

/// `systemctl show -p NAME unit`'s value.
fn unit_property(unit: &str, name: &str) -> String {
    let out = std::process::Command::new("systemctl")
        .args(["show", "-p", name, "--value", unit])
        .output()
        .expect("systemctl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A pod whose cgroup parent is a systemd slice, as kubelet's systemd cgroup driver names a
/// BestEffort pod's: `kubepods-besteffort-pod<uid>.slice` (dashes of the uid become `_`).
/// The handler's options have `SystemdCgroup = true`; containerd's CRI then gives each
/// container the cgroupsPath `<slice>:cri-containerd:<id>`.
fn systemd_slice_pod(handler: &str) {
    block_on(async {
        let mut c = connect().await;
        let e = common::cri_env();
        let name = common::unique_id(&format!("cri-sd-{handler}"));
        let slice = format!("kubepods-besteffort-pod{}.slice", name.replace('-', "_"));
        let logdir = e.workdir.join("pods").join(&name);
        fs::create_dir_all(&logdir).unwrap();
        let config = pod_config(&name, &slice, &logdir);
        let r = ok(
            "RunPodSandbox",
            c.rt.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.into(),
            })
            .await,
        );
        let st = ok(
            "PodSandboxStatus",
            c.rt.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: r.pod_sandbox_id.clone(),
                verbose: true,
            })
            .await,
        );
        let info = verbose_info(&st.info);
        let pod = Pod {
            id: r.pod_sandbox_id,
            config,
            cgroup_parent: slice.clone(),
            pid: info["pid"].as_i64().expect("sandbox pid") as i32,
            netns: info["runtimeSpec"]["linux"]["namespaces"]
                .as_array()
                .and_then(|a| a.iter().find(|n| n["type"] == "network"))
                .and_then(|n| n["path"].as_str())
                .map(str::to_string),
        };
        let shim = cri_util::serving_shim(pod.pid).expect("sandbox has no shim ancestor");
        let shim_argv0 = cri_util::argv0(shim);
        let res = LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_period: 100_000,
            cpu_quota: 25_000,
            ..Default::default()
        };
        let (id, pid, cgroups_path) =
            start_container(&mut c, &pod, "app", &["sleep", "600"], res).await;
        assert_eq!(
            cgroups_path,
            format!("{slice}:cri-containerd:{id}"),
            "{handler}"
        );
        // The slice did not exist: systemd made it (and its parents) for the scopes.
        let slice_dir = format!("/kubepods.slice/kubepods-besteffort.slice/{slice}");
        for (what, unit_id, p) in [("sandbox", &pod.id, pod.pid), ("container", &id, pid)] {
            let unit = format!("cri-containerd-{unit_id}.scope");
            assert_eq!(
                unit_property(&unit, "ActiveState"),
                "active",
                "{handler}: {what} {unit}"
            );
            assert_eq!(
                unit_property(&unit, "Delegate"),
                "yes",
                "{handler}: {what} {unit}"
            );
            assert_eq!(
                unit_property(&unit, "Slice"),
                slice,
                "{handler}: {what} {unit}"
            );
            let cg = fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap_or_default();
            assert_eq!(
                cg.trim(),
                format!("0::{slice_dir}/{unit}"),
                "{handler}: {what} process {p}"
            );
        }
        let unit = format!("cri-containerd-{id}.scope");
        assert_eq!(
            unit_property(&unit, "MemoryMax"),
            (64u64 << 20).to_string(),
            "{handler}"
        );
        assert_eq!(
            unit_property(&unit, "CPUQuotaPerSecUSec"),
            "250ms",
            "{handler}"
        );
        let dir = format!("/sys/fs/cgroup{slice_dir}/{unit}");
        assert_eq!(
            read_trim(format!("{dir}/memory.max")),
            "67108864",
            "{handler}"
        );
        // ExecSync lands in the scope (seen as "/" from a private cgroup namespace).
        let (out, err, code) = exec_sync(&mut c, &id, &["cat", "/proc/self/cgroup"]).await;
        assert_eq!(code, 0, "{handler}: {err}");
        assert!(
            out.trim() == "0::/" || out.trim() == format!("0::{slice_dir}/{unit}"),
            "{handler}: exec in {out:?}"
        );

        stop_remove_pod(&mut c, &pod, &[&id]).await;
        let ids = [pod.id.as_str(), id.as_str()];
        assert_pod_gone(handler, &pod, &ids, (shim, &shim_argv0));
        for unit_id in ids {
            let unit = format!("cri-containerd-{unit_id}.scope");
            assert!(
                common::wait_until(common::SETTLE, || unit_property(&unit, "LoadState")
                    == "not-found"),
                "{handler}: {unit} is still {}",
                unit_property(&unit, "LoadState")
            );
        }
        // kubelet stops the pod's slice once the pod is gone: nothing may be left in it.
        let stop = std::process::Command::new("systemctl")
            .args(["stop", &slice])
            .status()
            .expect("systemctl stop");
        assert!(stop.success(), "{handler}: systemctl stop {slice}");
        assert!(
            !Path::new(&format!("/sys/fs/cgroup{slice_dir}")).exists(),
            "{handler}: {slice_dir} left behind"
        );
    });
}

#[test]
fn cri_systemd_slice_pod_rs() {
    if systemd_or_skip("cri_systemd_slice_pod_rs") {
        let _g = common::shared();
        systemd_slice_pod("rs-systemd");
    }
}

#[test]
fn cri_systemd_slice_pod_runc() {
    if systemd_or_skip("cri_systemd_slice_pod_runc") {
        let _g = common::shared();
        systemd_slice_pod("runc-systemd");
    }
}
