//! `make bench`'s Kubernetes rows: drives containerd's CRI plugin over gRPC as kubelet
//! does and times, per runtime handler, side by side:
//!  - the pod cycle RunPodSandbox -> StopPodSandbox -> RemovePodSandbox;
//!  - a container's create-to-remove in a running pod: CreateContainer, StartContainer,
//!    StopContainer (timeout 0, a `sleep` container), RemoveContainer;
//!  - ExecSync of `true` into a running container, one call at a time (latency), then a
//!    storm of calls PAR in flight;
//!  - the pod's shim (one sandbox + two sleeping containers): PSS summed over every process
//!    of the shim binary serving the pod, and its threads when idle, at the storm's peak and
//!    after it.
//!
//! Handlers are interleaved (their order alternates every round / call) so that machine
//! noise hits all of them alike. Everything it makes (pods, containers, the pods' cgroup
//! parents) is removed again, also when a call fails. Writes a JSON report (samples and
//! their statistics, in ms) to --out.
//!
//! Built by `cargo build --release --example cri_bench`; run by tests/bench.sh against a
//! private containerd in the harness' CRI mode (tests/harness/containerd.sh, SHIM_RS_CRI=1).
//!
//! ```text
//! cri_bench --socket SOCK --handlers runc,rs --workdir DIR --out FILE
//!           [--runs 20] [--exec-calls 100] [--exec-par 10] [--pods 1] [--image IMG]
//!           [--quiet-secs 3]
//! ```
//!
//! `--pods N`: steady pods per handler for the memory figure (the mean per pod shim; the
//! timed work and the threads use the first). A lone shim's PSS is nearly its RSS: the
//! binary's pages are shared only between pods of the same handler.

#[path = "../tests/common/cri_util.rs"]
mod cri_util;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use serde_json::{json, Value};
use tonic::transport::Channel;

/// Bound on one CRI call: a hung shim fails the bench, it does not hang it.
const CALL: Duration = Duration::from_secs(60);

type Rt = RuntimeServiceClient<Channel>;
type Res<T> = Result<T, String>;

struct Args {
    socket: PathBuf,
    handlers: Vec<String>,
    workdir: PathBuf,
    out: PathBuf,
    runs: usize,
    exec_calls: usize,
    exec_par: usize,
    pods: usize,
    image: String,
    quiet: Duration,
}

fn parse_args() -> Res<Args> {
    let mut kv = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let Some(name) = k.strip_prefix("--") else {
            return Err(format!("unexpected argument {k:?}"));
        };
        const KNOWN: [&str; 10] = [
            "socket",
            "handlers",
            "workdir",
            "out",
            "runs",
            "exec-calls",
            "exec-par",
            "pods",
            "image",
            "quiet-secs",
        ];
        if !KNOWN.contains(&name) {
            return Err(format!("unknown option --{name}"));
        }
        let v = it.next().ok_or(format!("--{name} needs a value"))?;
        kv.insert(name.to_string(), v);
    }
    let need = |k: &str| kv.get(k).cloned().ok_or(format!("--{k} is required"));
    let num = |k: &str, d: usize| -> Res<usize> {
        kv.get(k)
            .map(|v| v.parse().map_err(|e| format!("--{k} {v:?}: {e}")))
            .unwrap_or(Ok(d))
    };
    let handlers: Vec<String> = need("handlers")?
        .split(',')
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect();
    if handlers.is_empty() {
        return Err("--handlers is empty".into());
    }
    Ok(Args {
        socket: need("socket")?.into(),
        handlers,
        workdir: need("workdir")?.into(),
        out: need("out")?.into(),
        runs: num("runs", 20)?.max(1),
        exec_calls: num("exec-calls", 100)?.max(1),
        exec_par: num("exec-par", 10)?.max(1),
        pods: num("pods", 1)?.max(1),
        image: kv
            .get("image")
            .cloned()
            .unwrap_or("localhost/shim-rs/busybox:latest".into()),
        quiet: Duration::from_secs(num("quiet-secs", 3)? as u64),
    })
}

async fn connect(sock: &Path) -> Res<Rt> {
    Ok(RuntimeServiceClient::new(
        cri_util::channel(sock, CALL).await?,
    ))
}

fn ok<T>(what: &str, r: Result<tonic::Response<T>, tonic::Status>) -> Res<T> {
    r.map(tonic::Response::into_inner)
        .map_err(|s| format!("{what}: {:?}: {}", s.code(), s.message()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ------------------------------------------------------------------ pods ---

/// What this program made and has not removed yet: torn down on every exit path.
#[derive(Default)]
struct Live {
    pods: Vec<(String, String)>, // (pod id, cgroup parent)
}

struct Bench {
    rt: Rt,
    args: Args,
    tag: String,
    seq: AtomicU64,
    live: Live,
}

struct Pod {
    id: String,
    config: PodSandboxConfig,
}

impl Bench {
    fn name(&self, what: &str, handler: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{what}-{handler}-{}-{n}", self.tag)
    }

    async fn run_pod(&mut self, handler: &str) -> Res<(Pod, Duration)> {
        let name = self.name("pod", handler);
        // cgroupfs driver: kubelet hands a parent below the hierarchy roots, one per pod.
        let cgroup_parent = format!("/shim-rs-bench-{name}");
        let logdir = self.args.workdir.join("pods").join(&name);
        fs::create_dir_all(&logdir).map_err(|e| format!("{}: {e}", logdir.display()))?;
        let config = cri_util::pod_config(&name, "shim-rs-bench", "bench", &cgroup_parent, &logdir);
        let t = Instant::now();
        let r = self
            .rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.into(),
            })
            .await;
        let took = t.elapsed();
        // A pod that failed half-way may still have left its cgroup parent.
        let r = match ok(&format!("RunPodSandbox ({handler})"), r) {
            Ok(r) => r,
            Err(e) => {
                remove_cgroup_parent(&cgroup_parent);
                return Err(e);
            }
        };
        self.live
            .pods
            .push((r.pod_sandbox_id.clone(), cgroup_parent));
        Ok((
            Pod {
                id: r.pod_sandbox_id,
                config,
            },
            took,
        ))
    }

    /// StopPodSandbox, RemovePodSandbox, then the pod's cgroup parent (as kubelet does).
    async fn remove_pod(&mut self, id: &str) -> Res<(Duration, Duration)> {
        let t = Instant::now();
        ok(
            "StopPodSandbox",
            self.rt
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.into(),
                })
                .await,
        )?;
        let stop = t.elapsed();
        let t = Instant::now();
        ok(
            "RemovePodSandbox",
            self.rt
                .remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: id.into(),
                })
                .await,
        )?;
        let remove = t.elapsed();
        if let Some(i) = self.live.pods.iter().position(|(p, _)| p == id) {
            let (_, parent) = self.live.pods.remove(i);
            if !remove_cgroup_parent(&parent) {
                return Err(format!(
                    "pod {id}: cgroup parent {parent} not empty after removal"
                ));
            }
        }
        Ok((stop, remove))
    }

    async fn create_container(&mut self, pod: &Pod, handler: &str, cmd: &[&str]) -> Res<String> {
        let name = self.name("c", handler);
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.clone(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.args.image.clone(),
                ..Default::default()
            }),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig::default()),
            ..Default::default()
        };
        let r = ok(
            &format!("CreateContainer ({handler})"),
            self.rt
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: pod.id.clone(),
                    config: Some(config),
                    sandbox_config: Some(pod.config.clone()),
                })
                .await,
        )?;
        Ok(r.container_id)
    }

    async fn start_container(&mut self, id: &str) -> Res<()> {
        ok(
            "StartContainer",
            self.rt
                .start_container(StartContainerRequest {
                    container_id: id.into(),
                })
                .await,
        )
        .map(drop)
    }

    async fn stop_container(&mut self, id: &str) -> Res<()> {
        ok(
            "StopContainer",
            self.rt
                .stop_container(StopContainerRequest {
                    container_id: id.into(),
                    timeout: 0,
                })
                .await,
        )
        .map(drop)
    }

    async fn remove_container(&mut self, id: &str) -> Res<()> {
        ok(
            "RemoveContainer",
            self.rt
                .remove_container(RemoveContainerRequest {
                    container_id: id.into(),
                })
                .await,
        )
        .map(drop)
    }

    async fn pid_of_pod(&mut self, id: &str) -> Res<i32> {
        let r = ok(
            "PodSandboxStatus",
            self.rt
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: id.into(),
                    verbose: true,
                })
                .await,
        )?;
        info_pid(&r.info)
    }

    async fn pid_of_container(&mut self, id: &str) -> Res<i32> {
        let r = ok(
            "ContainerStatus",
            self.rt
                .container_status(ContainerStatusRequest {
                    container_id: id.into(),
                    verbose: true,
                })
                .await,
        )?;
        info_pid(&r.info)
    }

    /// Best effort, for the error path: removes every pod still recorded (containerd
    /// removes their containers with them) and their cgroup parents.
    async fn teardown(&mut self) {
        for (id, parent) in std::mem::take(&mut self.live.pods) {
            let _ = self
                .rt
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await;
            if let Err(s) = self
                .rt
                .remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await
            {
                eprintln!(
                    "cri_bench: teardown: RemovePodSandbox {id}: {}",
                    s.message()
                );
            }
            if !remove_cgroup_parent(&parent) {
                eprintln!("cri_bench: teardown: cgroup parent {parent} not removed");
            }
        }
    }
}

fn info_pid(info: &HashMap<String, String>) -> Res<i32> {
    let raw = info.get("info").ok_or("verbose status without info")?;
    let v: Value = serde_json::from_str(raw).map_err(|e| format!("verbose info: {e}"))?;
    v["pid"]
        .as_i64()
        .map(|p| p as i32)
        .ok_or(format!("verbose info without pid: {raw:.200}"))
}

/// rmdir of the pod's cgroup parent in every hierarchy (a v1 controller's, the unified
/// one), retried briefly: false if one stays (not empty).
fn remove_cgroup_parent(parent: &str) -> bool {
    let rel = parent.trim_start_matches('/');
    if rel.is_empty() || rel.contains("..") {
        return false;
    }
    let mut dirs = vec![Path::new("/sys/fs/cgroup").join(rel)];
    if let Ok(rd) = fs::read_dir("/sys/fs/cgroup") {
        dirs.extend(rd.flatten().map(|h| h.path().join(rel)));
    }
    for _ in 0..100 {
        let mut left = false;
        for d in &dirs {
            match fs::remove_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // ENOTDIR: a v2 root whose entry is a file of that name; not ours.
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {}
                Err(_) => left = true,
            }
        }
        if !left {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

// --------------------------------------------------------- shim processes ---

/// The binary a process runs, by base name. Our daemon runs from a detached read-only view
/// of its binary whose /proc/PID/exe reads "/": then its argv[0].
fn exe_base(pid: i32) -> String {
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| {
            p.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string()
        })
        .unwrap_or_default();
    let path = if exe == "/" || exe.is_empty() {
        cri_util::argv0(pid)
    } else {
        exe
    };
    path.rsplit('/').next().unwrap_or_default().to_string()
}

/// Every process of the shim binary serving the pod whose sandbox/container processes
/// are `pids`: the serving shims and all their descendants running the same binary
/// (our daemon's launcher; not the containers, not a transient runc).
fn pod_shim_pids(pids: &[i32]) -> Res<Vec<i32>> {
    let mut tops = HashSet::new();
    for &p in pids {
        tops.insert(
            cri_util::serving_shim(p).ok_or(format!("no containerd-shim-* ancestor of pid {p}"))?,
        );
    }
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for d in fs::read_dir("/proc").map_err(|e| e.to_string())?.flatten() {
        if let Ok(p) = d.file_name().to_string_lossy().parse::<i32>() {
            if let Some(pp) = cri_util::ppid_of(p) {
                children.entry(pp).or_default().push(p);
            }
        }
    }
    let mut found = Vec::new();
    for &top in &tops {
        let name = exe_base(top);
        let mut queue = vec![top];
        while let Some(q) = queue.pop() {
            if exe_base(q) == name {
                found.push(q);
            }
            queue.extend(children.get(&q).into_iter().flatten());
        }
    }
    found.sort_unstable();
    found.dedup();
    Ok(found)
}

/// (rss, pss, uss) in KiB and threads of one process; zeros if it is gone.
fn mem_of(pid: i32) -> (u64, u64, u64, u64) {
    let (mut rss, mut pss, mut uss, mut threads) = (0, 0, 0, 0);
    let field = |l: &str| -> u64 {
        l.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    for l in fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
    {
        match l.split(':').next().unwrap_or_default() {
            "Rss" => rss = field(l),
            "Pss" => pss = field(l),
            "Private_Clean" | "Private_Dirty" => uss += field(l),
            _ => {}
        }
    }
    for l in fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
    {
        if l.starts_with("Threads:") {
            threads = field(l);
        }
    }
    (rss, pss, uss, threads)
}

fn threads_of(pids: &[i32]) -> u64 {
    pids.iter().map(|&p| mem_of(p).3).sum()
}

// ----------------------------------------------------------------- stats ---

/// n, min, p50, p90, p99, max, mean (nearest rank), in the samples' unit.
fn stats(samples: &[f64]) -> Value {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        return json!({"n": 0});
    }
    let rank = |p: f64| s[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    json!({
        "n": n,
        "min": round(s[0]),
        "p50": round(rank(0.50)),
        "p90": round(rank(0.90)),
        "p99": round(rank(0.99)),
        "max": round(s[n - 1]),
        "mean": round(s.iter().sum::<f64>() / n as f64),
    })
}

fn series(samples: &BTreeMap<&str, Vec<f64>>) -> Value {
    let mut o = serde_json::Map::new();
    for (k, v) in samples {
        o.insert(k.to_string(), json!({"stats": stats(v), "samples_ms": v}));
    }
    Value::Object(o)
}

/// Handler order of round `r`: reversed every other round.
fn order(handlers: &[String], r: usize) -> Vec<String> {
    let mut h = handlers.to_vec();
    if r % 2 == 1 {
        h.reverse();
    }
    h
}

fn log(msg: &str) {
    eprintln!("cri_bench: {msg}");
}

// ------------------------------------------------------------- scenarios ---

async fn pod_cycles(b: &mut Bench) -> Res<Value> {
    let hs = b.args.handlers.clone();
    let mut out = serde_json::Map::new();
    let mut samples: HashMap<String, BTreeMap<&str, Vec<f64>>> = HashMap::new();
    // One untimed cycle each: first use of the handler, image and snapshot caches.
    for h in &hs {
        let (pod, _) = b.run_pod(h).await?;
        b.remove_pod(&pod.id).await?;
    }
    for r in 0..b.args.runs {
        for h in order(&hs, r) {
            let (pod, run) = b.run_pod(&h).await?;
            let (stop, remove) = b.remove_pod(&pod.id).await?;
            let s = samples.entry(h).or_default();
            s.entry("total").or_default().push(ms(run + stop + remove));
            s.entry("run").or_default().push(ms(run));
            s.entry("stop").or_default().push(ms(stop));
            s.entry("remove").or_default().push(ms(remove));
        }
    }
    for h in &hs {
        out.insert(h.clone(), series(&samples[h]));
    }
    Ok(Value::Object(out))
}

/// The steady pod of a handler: sandbox + two sleeping containers, kept for the
/// container cycles, ExecSync and the shim's memory and threads.
struct Steady {
    pod: Pod,
    containers: Vec<String>,
    pids: Vec<i32>,
}

async fn steady_pod(b: &mut Bench, handler: &str) -> Res<Steady> {
    let (pod, _) = b.run_pod(handler).await?;
    let mut pids = vec![b.pid_of_pod(&pod.id).await?];
    let mut containers = Vec::new();
    for _ in 0..2 {
        let id = b
            .create_container(&pod, handler, &["sleep", "3600"])
            .await?;
        b.start_container(&id).await?;
        pids.push(b.pid_of_container(&id).await?);
        containers.push(id);
    }
    Ok(Steady {
        pod,
        containers,
        pids,
    })
}

async fn container_cycles(b: &mut Bench, pods: &HashMap<String, Steady>) -> Res<Value> {
    let hs = b.args.handlers.clone();
    let mut samples: HashMap<String, BTreeMap<&str, Vec<f64>>> = HashMap::new();
    for r in 0..=b.args.runs {
        for h in order(&hs, r) {
            let pod = &pods[&h].pod;
            let t = Instant::now();
            let id = b.create_container(pod, &h, &["sleep", "3600"]).await?;
            let create = t.elapsed();
            let t = Instant::now();
            b.start_container(&id).await?;
            let start = t.elapsed();
            let t = Instant::now();
            b.stop_container(&id).await?;
            let stop = t.elapsed();
            let t = Instant::now();
            b.remove_container(&id).await?;
            let remove = t.elapsed();
            if r == 0 {
                continue; // warmup
            }
            let s = samples.entry(h).or_default();
            s.entry("total")
                .or_default()
                .push(ms(create + start + stop + remove));
            s.entry("create").or_default().push(ms(create));
            s.entry("start").or_default().push(ms(start));
            s.entry("stop").or_default().push(ms(stop));
            s.entry("remove").or_default().push(ms(remove));
        }
    }
    let mut out = serde_json::Map::new();
    for h in &hs {
        out.insert(h.clone(), series(&samples[h]));
    }
    Ok(Value::Object(out))
}

async fn exec_sync(rt: &mut Rt, id: &str) -> Res<()> {
    let r = ok(
        "ExecSync",
        rt.exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["true".into()],
            timeout: 30,
        })
        .await,
    )?;
    if r.exit_code != 0 {
        return Err(format!(
            "ExecSync true in {id}: exit code {}: {}",
            r.exit_code,
            String::from_utf8_lossy(&r.stderr)
        ));
    }
    Ok(())
}

async fn exec_sync_latency(b: &mut Bench, pods: &HashMap<String, Steady>) -> Res<Value> {
    let hs = b.args.handlers.clone();
    let mut samples: HashMap<String, Vec<f64>> = HashMap::new();
    for i in 0..b.args.exec_calls + 5 {
        for h in order(&hs, i) {
            let t = Instant::now();
            exec_sync(&mut b.rt, &pods[&h].containers[0]).await?;
            if i >= 5 {
                samples.entry(h).or_default().push(ms(t.elapsed()));
            }
        }
    }
    let mut out = serde_json::Map::new();
    for h in &hs {
        out.insert(
            h.clone(),
            json!({"stats": stats(&samples[h]), "samples_ms": samples[h]}),
        );
    }
    Ok(Value::Object(out))
}

/// `calls` ExecSyncs of `true`, `par` in flight, into `id`; samples the shim's threads
/// meanwhile. Returns (wall time, peak threads).
async fn exec_sync_storm(
    rt: &Rt,
    id: &str,
    calls: usize,
    par: usize,
    shim: &[i32],
) -> Res<(Duration, u64)> {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, peak, shim) = (done.clone(), peak.clone(), shim.to_vec());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(threads_of(&shim), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let t = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..par {
        let (mut rt, id, next) = (rt.clone(), id.to_string(), next.clone());
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < calls {
                exec_sync(&mut rt, &id).await?;
            }
            Ok::<_, String>(())
        }));
    }
    let mut result = Ok(());
    for w in workers {
        let r = w.await.map_err(|e| e.to_string()).and_then(|r| r);
        if result.is_ok() {
            result = r;
        }
    }
    let wall = t.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    result.map(|()| (wall, peak.load(Ordering::Relaxed)))
}

fn shim_memory(pids: &[i32]) -> Value {
    let (mut rss, mut pss, mut uss, mut threads) = (0, 0, 0, 0);
    for &p in pids {
        let m = mem_of(p);
        rss += m.0;
        pss += m.1;
        uss += m.2;
        threads += m.3;
    }
    json!({"processes": pids.len(), "pids": pids, "rss_kib": rss, "pss_kib": pss, "uss_kib": uss, "threads": threads})
}

async fn run(b: &mut Bench) -> Res<Value> {
    let hs = b.args.handlers.clone();
    log(&format!(
        "pod cycles: {} per handler ({}), interleaved",
        b.args.runs,
        hs.join(", ")
    ));
    let pod_cycle = pod_cycles(b).await?;

    log(&format!(
        "steady pods: {} per handler, each one sandbox + two sleeping containers",
        b.args.pods
    ));
    let mut pods = HashMap::new();
    let mut more: Vec<(String, Steady)> = Vec::new();
    for i in 0..b.args.pods {
        for h in order(&hs, i) {
            let s = steady_pod(b, &h).await?;
            if i == 0 {
                pods.insert(h, s);
            } else {
                more.push((h, s));
            }
        }
    }
    let mut shims = HashMap::new();
    for h in &hs {
        shims.insert(h.clone(), pod_shim_pids(&pods[h].pids)?);
    }
    tokio::time::sleep(b.args.quiet).await;
    let mut idle = HashMap::new();
    let mut mean = HashMap::new();
    for h in &hs {
        let first = shim_memory(&shims[h]);
        let mut per_pod = vec![first.clone()];
        for (_, s) in more.iter().filter(|(mh, _)| mh == h) {
            per_pod.push(shim_memory(&pod_shim_pids(&s.pids)?));
        }
        let avg = |k: &str| {
            let sum: u64 = per_pod.iter().map(|m| m[k].as_u64().unwrap_or(0)).sum();
            (sum as f64 / per_pod.len() as f64 * 10.0).round() / 10.0
        };
        mean.insert(
            h.clone(),
            json!({"pods": per_pod.len(), "rss_kib": avg("rss_kib"), "pss_kib": avg("pss_kib"),
                   "uss_kib": avg("uss_kib"), "threads": avg("threads"), "processes": avg("processes")}),
        );
        idle.insert(h.clone(), first);
    }

    log(&format!(
        "container create-to-remove: {} per handler, interleaved",
        b.args.runs
    ));
    let container_cycle = container_cycles(b, &pods).await?;

    log(&format!(
        "ExecSync of true: {} calls per handler one at a time, interleaved",
        b.args.exec_calls
    ));
    let exec_latency = exec_sync_latency(b, &pods).await?;

    let mut storm = serde_json::Map::new();
    for (i, h) in order(&hs, 1).into_iter().enumerate() {
        log(&format!(
            "ExecSync storm ({h}): {} calls, {} in flight",
            b.args.exec_calls, b.args.exec_par
        ));
        let (wall, peak) = exec_sync_storm(
            &b.rt,
            &pods[&h].containers[0],
            b.args.exec_calls,
            b.args.exec_par,
            &shims[&h],
        )
        .await?;
        storm.insert(
            h.clone(),
            json!({"calls": b.args.exec_calls, "in_flight": b.args.exec_par,
                   "wall_ms": (ms(wall) * 1000.0).round() / 1000.0, "peak_threads": peak, "order": i}),
        );
    }
    tokio::time::sleep(b.args.quiet).await;
    let mut pod_shim = serde_json::Map::new();
    for h in &hs {
        // The shim's processes again (a launcher may have come or gone); the other pods
        // still run, so its PSS compares with the idle figure.
        let after = shim_memory(&pod_shim_pids(&pods[h].pids)?);
        pod_shim.insert(
            h.clone(),
            json!({
                "idle": idle[h],
                "mean_per_pod": mean[h],
                "after_exec_storm": after,
                "threads_idle": idle[h]["threads"],
                "threads_peak": storm[h]["peak_threads"],
                "threads_after": after["threads"],
                "pss_mib": (mean[h]["pss_kib"].as_f64().unwrap_or(0.0) / 1024.0 * 100.0).round() / 100.0,
                "processes": idle[h]["processes"],
            }),
        );
    }

    log("removing the steady pods");
    let all = hs
        .iter()
        .filter_map(|h| pods.remove(h))
        .chain(more.into_iter().map(|(_, s)| s));
    for s in all {
        for c in &s.containers {
            b.stop_container(c).await?;
            b.remove_container(c).await?;
        }
        b.remove_pod(&s.pod.id).await?;
    }
    Ok(json!({
        "handlers": hs,
        "runs": b.args.runs,
        "exec_calls": b.args.exec_calls,
        "exec_par": b.args.exec_par,
        "pods": b.args.pods,
        "pod_cycle_ms": pod_cycle,
        "container_cycle_ms": container_cycle,
        "exec_sync_ms": exec_latency,
        "exec_sync_storm": storm,
        "pod_shim": pod_shim,
    }))
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cri_bench: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(async {
        let client = match connect(&args.socket).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cri_bench: {e}");
                return 1;
            }
        };
        let tag = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() % 100_000)
                .unwrap_or(0)
        );
        let mut b = Bench {
            rt: client,
            args,
            tag,
            seq: AtomicU64::new(0),
            live: Live::default(),
        };
        let r = run(&mut b).await;
        b.teardown().await;
        match r {
            Ok(v) => {
                let text = serde_json::to_string_pretty(&v).expect("json");
                if let Err(e) = fs::write(&b.args.out, text) {
                    eprintln!("cri_bench: {}: {e}", b.args.out.display());
                    return 1;
                }
                0
            }
            Err(e) => {
                eprintln!("cri_bench: FAILED: {e}");
                1
            }
        }
    });
    std::process::exit(code);
}
