//! Fault injection through the real path (containerd -> our shim -> container): processes
//! SIGKILLed at every stage, containerd restarted or stalled, disks full, state files
//! corrupt, readers that never come, churn and storms. Each test asserts the outcome a
//! client sees (task state, exit status, the events containerd receives) and that nothing
//! is left: mounts, cgroups, processes, sockets, bundles, state files, descriptors.
//!
//! containerd runs at debug level here: it logs every event a shim forwards ("event
//! forwarded" with topic and namespace), which is how the restart and stall tests see an
//! exit reach containerd without racing a subscriber against the shim's retries.
//!
//! Sizes (churn, exec count) can be raised with SHIM_RS_CHURN and SHIM_RS_EXECS; the
//! defaults and their measured runtimes are in the README ("Faults").

#[path = "common/api.rs"]
mod api;
mod common;

use std::{
    collections::HashMap,
    fs,
    future::Future,
    io::{Read, Seek, SeekFrom, Write},
    os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
    thread,
    time::{Duration, Instant},
};

use api::{Api, PROCESS_TYPE_URL};
use common::*;
use containerd_client::{
    services::v1::{
        containers_client::ContainersClient, events_client::EventsClient,
        snapshots::snapshots_client::SnapshotsClient, snapshots::MountsRequest,
        tasks_client::TasksClient, CreateTaskRequest, DeleteProcessRequest, DeleteTaskRequest,
        ExecProcessRequest, GetContainerRequest, KillRequest, PublishRequest, StartRequest,
        SubscribeRequest, WaitRequest,
    },
    tonic::{transport::Channel, Request, Status},
    with_namespace,
};
use serde_json::{json, Value};
use shim::protos::{
    api as shim_api,
    events::task::TaskExit,
    protobuf::Message,
    ttrpc::{self, Client as TtrpcClient},
};

// ------------------------------------------------------------ processes ---

/// Fields of /proc/PID/stat after the command name (state is [0], ppid [1]).
fn stat_fields(pid: i32) -> Vec<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    match stat.rfind(')') {
        Some(i) => stat[i + 2..].split_whitespace().map(String::from).collect(),
        None => Vec::new(),
    }
}

fn ppid(pid: i32) -> i32 {
    stat_fields(pid)
        .get(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

fn comm(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn sigkill(pid: i32) {
    assert!(pid > 1, "refusing to signal pid {pid}");
    // SAFETY: kill(2); every caller passes a process its own test started through containerd.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

fn status_field(pid: i32, key: &str) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn threads(pid: i32) -> usize {
    status_field(pid, "Threads:").unwrap_or(0) as usize
}

fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// (RSS, PSS) in KiB, from smaps_rollup.
fn memory_kib(pid: i32) -> (u64, u64) {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let get = |key: &str| {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (get("Rss:"), get("Pss:"))
}

/// The shim processes of a container started by `ctr run`: its init's parent is our launcher,
/// whose parent is the daemon.
#[derive(Debug, Clone, Copy)]
struct ShimProcs {
    init: i32,
    launcher: i32,
    daemon: i32,
}

fn shim_procs(id: &str) -> ShimProcs {
    let init = task_pid(id);
    let launcher = ppid(init);
    let daemon = ppid(launcher);
    assert_eq!(
        comm(launcher),
        "shim-rs-launch",
        "the parent {launcher} of {id}'s init {init} is not our launcher"
    );
    let argv = fs::read(format!("/proc/{daemon}/cmdline")).unwrap_or_default();
    let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
    assert!(
        argv.contains(&env().bindir.display().to_string()),
        "pid {daemon} is not one of our shim daemons: {argv}"
    );
    ShimProcs {
        init,
        launcher,
        daemon,
    }
}

fn wait_dead(pids: &[i32], timeout: Duration) -> bool {
    wait_until(timeout, || pids.iter().all(|p| !pid_alive(*p)))
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The exit status `ctr task delete ID` reports: ctr warns "task ID exit with non-zero exit
/// code N" and exits 0 (-1 when the delete itself failed).
fn delete_task_status(id: &str) -> i32 {
    let out = ctr(&["task", "delete", id]);
    if !out.status.success() {
        return -1;
    }
    let err = stderr_of(&out);
    err.split("exit with non-zero exit code ")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// The bundle containerd made for `id` in our namespace.
fn bundle_of(id: &str) -> PathBuf {
    env()
        .workdir
        .join("state/io.containerd.runtime.v2.task")
        .join(namespace())
        .join(id)
}

/// The task is gone from containerd or reported stopped.
fn task_ended(id: &str) -> bool {
    matches!(task_status(id).as_deref(), None | Some("STOPPED"))
}

// ------------------------------------------------------- containerd log ---

/// containerd's log from byte `mark` on.
fn containerd_log_since(mark: u64) -> String {
    let mut text = Vec::new();
    if let Ok(mut f) = fs::File::open(env().workdir.join("containerd.log")) {
        let _ = f.seek(SeekFrom::Start(mark));
        let _ = f.read_to_end(&mut text);
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The log's current length: a mark to look at what containerd logs after it.
fn log_mark() -> u64 {
    fs::metadata(env().workdir.join("containerd.log")).map_or(0, |m| m.len())
}

/// containerd's "event forwarded" lines for `topic` in our namespace since `mark`: each is an
/// event a shim delivered (containerd logs it at debug level once it has taken it).
fn forwarded_since(mark: u64, topic: &str) -> usize {
    let ns = format!("ns={}", namespace());
    let topic = format!("topic={topic}");
    containerd_log_since(mark)
        .lines()
        .filter(|l| {
            l.contains("msg=\"event forwarded\"")
                && l.split_whitespace().any(|w| w == ns)
                && l.split_whitespace().any(|w| w == topic)
        })
        .count()
}

// ---------------------------------------------------------- accounting ---

/// What containerd and the host hold for our namespace, summed over all containers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Accounting {
    containerd_fds: usize,
    mounts: usize,
    cgroup_dirs: usize,
    bundles: usize,
    run_dirs: usize,
    shims: usize,
    container_processes: usize,
    containers: usize,
    tasks: usize,
    snapshots: usize,
}

fn count_entries(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Subdirectories only: a cgroup directory's files are its interface, not containers.
fn count_dirs(dir: &Path) -> usize {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .count()
        })
        .unwrap_or(0)
}

fn account() -> Accounting {
    let e = env();
    let ns = namespace();
    let workdir = e.workdir.display().to_string();
    let mounts = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&workdir))
        .count();
    let under = |base: &str| -> usize {
        fs::read_dir(base)
            .map(|rd| {
                rd.flatten()
                    .filter(|d| d.path() != Path::new("/run/containerd/s"))
                    .map(|d| count_dirs(&d.path().join(ns)))
                    .sum()
            })
            .unwrap_or(0)
    };
    let lines = |args: &[&str], header: usize| ctr_list(args).lines().skip(header).count();
    Accounting {
        containerd_fds: fd_count(containerd_pid()),
        mounts,
        cgroup_dirs: under("/sys/fs/cgroup") + count_dirs(&Path::new("/sys/fs/cgroup").join(ns)),
        bundles: count_entries(
            &e.workdir
                .join("state/io.containerd.runtime.v2.task")
                .join(ns),
        ),
        run_dirs: under("/run/containerd"),
        shims: our_shims().len(),
        container_processes: our_container_processes().len(),
        containers: lines(&["containers", "ls", "-q"], 0),
        tasks: lines(&["tasks", "ls"], 1),
        snapshots: lines(&["snapshots", "ls"], 1),
    }
}

/// Waits (up to 15 s) until the accounting is back to `before`, else fails naming what grew.
fn assert_back_to(before: &Accounting, what: &str) {
    let mut now = account();
    wait_until(Duration::from_secs(15), || {
        now = account();
        now == *before
    });
    assert_eq!(
        &now,
        before,
        "after {what}: leaked (left: now, right: before)\n{}",
        containerd_log_tail(20)
    );
}

/// Shim sockets (/run/containerd/s/sha256(address/ns/id)) that still exist for `ids`: one
/// sha256sum over a file per id.
fn leaked_sockets(ids: &[String]) -> Vec<String> {
    let e = env();
    let dir = e
        .workdir
        .join(format!("socket-names-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let f = dir.join(i.to_string());
        fs::write(&f, format!("{}/{}/{id}", e.address, e.namespace)).unwrap();
        files.push(f);
    }
    let mut leaked = Vec::new();
    for chunk in files.chunks(500) {
        let out = Command::new("sha256sum").args(chunk).output().unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let hash = line.split_whitespace().next().unwrap_or_default();
            let sock = Path::new("/run/containerd/s").join(hash);
            if sock.exists() {
                leaked.push(sock.display().to_string());
            }
        }
    }
    let _ = fs::remove_dir_all(&dir);
    leaked
}

// ------------------------------------------------------------ bundles ---

/// A busybox root filesystem under WORKDIR, shared (read-only use) by the tests that write
/// their own config.json.
fn busybox_rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        let root = env().workdir.join("faults-rootfs");
        for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "run"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        let busybox = root.join("bin/busybox");
        fs::copy("/bin/busybox", &busybox).expect("copy /bin/busybox (busybox-static)");
        fs::set_permissions(&busybox, fs::Permissions::from_mode(0o755)).unwrap();
        for applet in ["sh", "sleep", "true", "cat", "echo", "test"] {
            symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        root
    })
}

/// `ctr oci spec` made to run `args` in the busybox rootfs, in cgroup /<ns>/<id>.
fn spec_for(id: &str, args: &[&str]) -> Value {
    static BASE: OnceLock<Value> = OnceLock::new();
    let mut spec = BASE
        .get_or_init(|| serde_json::from_str(&ctr_ok(&["oci", "spec"])).expect("ctr oci spec"))
        .clone();
    spec["root"] = json!({"path": busybox_rootfs(), "readonly": true});
    spec["process"]["args"] = json!(args);
    spec["process"]["env"] = json!(["PATH=/bin"]);
    spec["linux"]["cgroupsPath"] = json!(format!("/{}/{id}", namespace()));
    spec
}

fn add_hook(spec: &mut Value, kind: &str, script: &str) {
    if spec["hooks"].is_null() {
        spec["hooks"] = json!({});
    }
    spec["hooks"][kind] = json!([{"path": "/bin/busybox", "args": ["sh", "-c", script]}]);
}

/// Cgroup directories named /<ns>/<id> that exist.
fn cgroups_of(id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(rd) = fs::read_dir("/sys/fs/cgroup") {
        for d in rd.flatten() {
            let p = d.path().join(namespace()).join(id);
            if p.exists() {
                found.push(p);
            }
        }
    }
    found
}

// ----------------------------------------------------------- gRPC API ---

const RPC_TIMEOUT: Duration = Duration::from_secs(30);

fn tasks(ch: &Channel) -> TasksClient<Channel> {
    TasksClient::new(ch.clone())
}

/// Bounds a call: a hung RPC fails the test instead of hanging it.
async fn bounded<T>(
    what: &str,
    limit: Duration,
    f: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "{what}: no answer within {limit:?}"
        ))),
    }
}

/// Tasks.Create for container `id` (made by `ctr c create`) with its snapshot as rootfs and
/// the given stdout; returns the init's pid.
async fn create_task(ch: &Channel, id: &str, stdout: &str) -> Result<u32, Status> {
    let ns = namespace();
    let container = ContainersClient::new(ch.clone())
        .get(with_namespace!(GetContainerRequest { id: id.into() }, ns))
        .await?
        .into_inner()
        .container
        .expect("container");
    let mounts = SnapshotsClient::new(ch.clone())
        .mounts(with_namespace!(
            MountsRequest {
                snapshotter: container.snapshotter.clone(),
                key: container.snapshot_key.clone(),
            },
            ns
        ))
        .await?
        .into_inner()
        .mounts;
    let req = CreateTaskRequest {
        container_id: id.into(),
        rootfs: mounts,
        stdout: stdout.into(),
        ..Default::default()
    };
    bounded(
        "Create",
        RPC_TIMEOUT,
        tasks(ch).create(with_namespace!(req, ns)),
    )
    .await
    .map(|r| r.into_inner().pid)
}

async fn start(ch: &Channel, id: &str, exec_id: &str) -> Result<u32, Status> {
    let req = StartRequest {
        container_id: id.into(),
        exec_id: exec_id.into(),
    };
    bounded(
        "Start",
        RPC_TIMEOUT,
        tasks(ch).start(with_namespace!(req, namespace())),
    )
    .await
    .map(|r| r.into_inner().pid)
}

async fn exec(
    ch: &Channel,
    id: &str,
    exec_id: &str,
    args: &[&str],
    terminal: bool,
    stdout: &str,
) -> Result<(), Status> {
    let spec = json!({
        "args": args, "cwd": "/", "env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"],
        "terminal": terminal, "user": {"uid": 0, "gid": 0},
    });
    let req = ExecProcessRequest {
        container_id: id.into(),
        exec_id: exec_id.into(),
        terminal,
        stdout: stdout.into(),
        spec: Some(prost_types::Any {
            type_url: PROCESS_TYPE_URL.into(),
            value: serde_json::to_vec(&spec).unwrap(),
        }),
        ..Default::default()
    };
    bounded(
        "Exec",
        RPC_TIMEOUT,
        tasks(ch).exec(with_namespace!(req, namespace())),
    )
    .await
    .map(|_| ())
}

/// Tasks.Wait: the exit status.
async fn wait(ch: &Channel, id: &str, exec_id: &str, limit: Duration) -> Result<u32, Status> {
    let req = WaitRequest {
        container_id: id.into(),
        exec_id: exec_id.into(),
    };
    bounded(
        "Wait",
        limit,
        tasks(ch).wait(with_namespace!(req, namespace())),
    )
    .await
    .map(|r| r.into_inner().exit_status)
}

async fn kill(ch: &Channel, id: &str, exec_id: &str, signal: u32) -> Result<(), Status> {
    let req = KillRequest {
        container_id: id.into(),
        exec_id: exec_id.into(),
        signal,
        all: false,
    };
    bounded(
        "Kill",
        RPC_TIMEOUT,
        tasks(ch).kill(with_namespace!(req, namespace())),
    )
    .await
    .map(|_| ())
}

async fn delete_process(ch: &Channel, id: &str, exec_id: &str) -> Result<u32, Status> {
    let req = DeleteProcessRequest {
        container_id: id.into(),
        exec_id: exec_id.into(),
    };
    bounded(
        "DeleteProcess",
        RPC_TIMEOUT,
        tasks(ch).delete_process(with_namespace!(req, namespace())),
    )
    .await
    .map(|r| r.into_inner().exit_status)
}

async fn delete_task(ch: &Channel, id: &str) -> Result<u32, Status> {
    let req = DeleteTaskRequest {
        container_id: id.into(),
    };
    bounded(
        "Delete",
        RPC_TIMEOUT,
        tasks(ch).delete(with_namespace!(req, namespace())),
    )
    .await
    .map(|r| r.into_inner().exit_status)
}

/// A `ctr c create` container (no task) running `args`.
fn create_container(prefix: &str, args: &[&str]) -> String {
    let id = unique_id(prefix);
    let mut a = vec![
        "container",
        "create",
        "--runtime",
        RS_RUNTIME,
        IMAGE,
        &id,
        "--",
    ];
    a.extend_from_slice(args);
    ctr_ok(&a);
    id
}

/// Every /tasks/exit containerd publishes in our namespace, from a subscription that is
/// known to be live (it has seen an event published after it was made).
struct ExitEvents {
    seen: Arc<Mutex<Vec<TaskExit>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ExitEvents {
    fn subscribe() -> ExitEvents {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(AtomicBool::new(false));
        let marker = format!("/shim-rs-test/ready-{}", unique_id("ev"));
        let (s, st, lv, mk) = (seen.clone(), stop.clone(), live.clone(), marker.clone());
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let ch = containerd_client::connect(&env().address).await.unwrap();
                let req = SubscribeRequest {
                    filters: vec![format!("namespace=={}", namespace())],
                };
                let mut stream = EventsClient::new(ch)
                    .subscribe(Request::new(req))
                    .await
                    .expect("subscribe")
                    .into_inner();
                while !st.load(Ordering::SeqCst) {
                    let next =
                        tokio::time::timeout(Duration::from_millis(100), stream.message()).await;
                    let Ok(next) = next else { continue };
                    let Ok(Some(envelope)) = next else { return };
                    if envelope.topic == mk {
                        lv.store(true, Ordering::SeqCst);
                    }
                    if envelope.topic == "/tasks/exit" {
                        let any = envelope.event.unwrap_or_default();
                        if let Ok(exit) = TaskExit::parse_from_bytes(&any.value) {
                            s.lock().unwrap().push(exit);
                        }
                    }
                }
            });
        });
        let api = Api::connect();
        let live_now = wait_until(Duration::from_secs(20), || {
            let req = PublishRequest {
                topic: marker.clone(),
                event: Some(prost_types::Any {
                    type_url: "containerd.events.TaskExit".into(),
                    value: Vec::new(),
                }),
            };
            let _ = api.rt.block_on(
                EventsClient::new(api.channel()).publish(with_namespace!(req, namespace())),
            );
            wait_until(Duration::from_millis(300), || live.load(Ordering::SeqCst))
        });
        assert!(live_now, "the event subscription never became live");
        ExitEvents {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// The exits of container `id` seen so far, in arrival order.
    fn of(&self, id: &str) -> Vec<TaskExit> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.container_id == id)
            .cloned()
            .collect()
    }

    /// Waits until `cond` holds for the exits of `id`.
    fn wait_for(&self, id: &str, timeout: Duration, cond: impl Fn(&[TaskExit]) -> bool) -> bool {
        wait_until(timeout, || cond(&self.of(id)))
    }
}

impl Drop for ExitEvents {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------- direct ttrpc ---

const TASK_V2: &str = "containerd.task.v2.Task";

/// One call to a shim daemon's task service, bypassing containerd.
fn shim_call<Req: Message, Resp: Message>(
    c: &TtrpcClient,
    method: &str,
    req: &Req,
) -> ttrpc::Result<Resp> {
    let mut r = ttrpc::Request::new();
    r.set_service(TASK_V2.into());
    r.set_method(method.into());
    r.set_timeout_nano(30_000_000_000);
    r.payload = req.write_to_bytes().unwrap();
    let res = c.request(r)?;
    Ok(Resp::parse_from_bytes(&res.payload).expect("decode the shim's answer"))
}

fn code_of<T: std::fmt::Debug>(r: &ttrpc::Result<T>) -> Option<ttrpc::Code> {
    match r {
        Err(ttrpc::Error::RpcStatus(s)) => Some(s.code()),
        _ => None,
    }
}

/// The shim daemon containerd started for container `id`, by the address in its bundle.
fn connect_shim_of(id: &str) -> TtrpcClient {
    let address = fs::read_to_string(bundle_of(id).join("address")).expect("address file");
    TtrpcClient::connect(address.trim()).expect("connect to the shim")
}

/// A shim daemon this test starts itself with the `start` action, as containerd 1.6 does
/// (events go to our containerd), to call its task service directly.
struct Standalone {
    /// The shim's -id (the socket is derived from it).
    id: String,
    dir: PathBuf,
    address: String,
    daemon: i32,
}

impl Standalone {
    fn start(prefix: &str) -> Standalone {
        let e = env();
        let id = unique_id(prefix);
        let dir = e.workdir.join(format!("standalone-{id}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("log"), "").unwrap();
        fs::write(dir.join("config.json"), "{}").unwrap();
        let ttrpc_address = format!("{}.ttrpc", e.address);
        let child = Command::new(&e.shim_bin)
            .args([
                "-namespace",
                namespace(),
                "-address",
                &e.address,
                "-publish-binary",
                "containerd",
                "-id",
                &id,
                "start",
            ])
            .current_dir(&dir)
            .env("TTRPC_ADDRESS", &ttrpc_address)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the shim's start action");
        let (out, timed_out) = wait_output(child, Duration::from_secs(30));
        assert!(
            !timed_out && out.status.success(),
            "start: {}",
            stderr_of(&out)
        );
        let address = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let client = TtrpcClient::connect(&address).expect("connect to the new shim");
        let c: shim_api::ConnectResponse = shim_call(
            &client,
            "Connect",
            &shim_api::ConnectRequest {
                id: id.clone(),
                ..Default::default()
            },
        )
        .expect("Connect");
        Standalone {
            id,
            dir,
            address,
            daemon: c.shim_pid as i32,
        }
    }

    fn client(&self) -> TtrpcClient {
        TtrpcClient::connect(&self.address).expect("connect to the shim")
    }

    fn socket(&self) -> PathBuf {
        PathBuf::from(self.address.trim_start_matches("unix://"))
    }

    /// A bundle for container `cid` running `args` (no rootfs mount: config.json names it).
    fn bundle(&self, cid: &str, args: &[&str]) -> PathBuf {
        let b = self.dir.join(cid);
        fs::create_dir_all(&b).unwrap();
        fs::write(
            b.join("config.json"),
            serde_json::to_vec(&spec_for(cid, args)).unwrap(),
        )
        .unwrap();
        b
    }

    fn create_request(cid: &str, bundle: &Path) -> shim_api::CreateTaskRequest {
        shim_api::CreateTaskRequest {
            id: cid.into(),
            bundle: bundle.display().to_string(),
            ..Default::default()
        }
    }

    /// Kill, Wait, Delete of container `cid` in this shim: the exit status.
    fn kill_and_delete(&self, client: &TtrpcClient, cid: &str) -> u32 {
        let _: shim_api::Empty = shim_call(
            client,
            "Kill",
            &shim_api::KillRequest {
                id: cid.into(),
                signal: 9,
                ..Default::default()
            },
        )
        .expect("Kill");
        let w: shim_api::WaitResponse = shim_call(
            client,
            "Wait",
            &shim_api::WaitRequest {
                id: cid.into(),
                ..Default::default()
            },
        )
        .expect("Wait");
        let d: shim_api::DeleteResponse = shim_call(
            client,
            "Delete",
            &shim_api::DeleteRequest {
                id: cid.into(),
                ..Default::default()
            },
        )
        .expect("Delete");
        assert_eq!(d.exit_status, w.exit_status, "Delete and Wait disagree");
        w.exit_status
    }

    /// Shutdown; the daemon (and its launcher) must be gone within 10 s, its socket removed.
    fn shutdown(&self) {
        let client = self.client();
        let r: ttrpc::Result<shim_api::Empty> =
            shim_call(&client, "Shutdown", &shim_api::ShutdownRequest::new());
        match r {
            Ok(_) | Err(ttrpc::Error::Socket(_)) => {}
            Err(e) => panic!("Shutdown: {e:?}"),
        }
        drop(client);
        self.assert_gone();
    }

    fn assert_gone(&self) {
        assert!(
            wait_until(Duration::from_secs(10), || self.processes().is_empty()),
            "shim {} still has processes 10 s after Shutdown: {:?}",
            self.id,
            self.processes()
        );
        assert!(!self.socket().exists(), "shim {} left its socket", self.id);
    }

    /// Live processes with this shim's id in their argv (the daemon and its launcher).
    fn processes(&self) -> Vec<i32> {
        let mut v = Vec::new();
        for p in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let argv = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if pid_alive(pid) && argv.split(|b| *b == 0).any(|a| a == self.id.as_bytes()) {
                v.push(pid);
            }
        }
        v
    }

    /// What container `cid` of this shim left: cgroups, processes in them, its state file.
    fn leftovers_of(&self, cid: &str) -> Vec<String> {
        let mut found: Vec<String> = cgroups_of(cid)
            .iter()
            .map(|p| format!("cgroup {}", p.display()))
            .collect();
        let state = self.dir.join(cid).join("shim-rs-state.json");
        if state.exists() {
            found.push(format!("state file {}", state.display()));
        }
        found.extend(
            our_container_processes()
                .into_iter()
                .filter(|p| p.contains(cid))
                .map(|p| format!("process {p}")),
        );
        found
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        for pid in self.processes() {
            sigkill(pid);
        }
        let _ = fs::remove_file(self.socket());
    }
}

// ====================================================== SIGKILL of shim processes ===

/// The daemon dies: containerd runs our `delete` action, which kills the container and
/// removes its cgroup, mount and socket; containerd reports the task exited 137.
#[test]
fn sigkill_of_the_daemon_leaves_nothing() {
    debug_env();
    if !testing_our_shim() {
        return; // finds our processes by our launcher
    }
    let _serial = shared();
    let events = ExitEvents::subscribe();
    let c = Detached::sleeping("kill-daemon");
    let p = shim_procs(&c.0);
    sigkill(p.daemon);
    assert!(
        wait_dead(&[p.init, p.launcher, p.daemon], Duration::from_secs(20)),
        "processes of {} survived its daemon's death\n{}",
        c.0,
        containerd_log_tail(30)
    );
    assert!(
        wait_until(Duration::from_secs(20), || task_ended(&c.0)),
        "task still {:?}",
        task_status(&c.0)
    );
    assert!(
        events.wait_for(&c.0, Duration::from_secs(20), |x| x
            .iter()
            .any(|e| e.id == c.0 && e.exit_status == 137)),
        "no /tasks/exit 137 for {}: {:?}",
        c.0,
        events.of(&c.0)
    );
    let _ = ctr(&["task", "delete", &c.0]);
    ctr_ok(&["container", "rm", &c.0]);
    assert_no_leftovers(&c.0);
}

/// The launcher dies: every process of its containers is killed and reported exited 137
/// (execs before their init), the shim's log says how the launcher ended and the daemon
/// reaps it, a new exec is refused, `ctr task rm -f` works, and the daemon
/// exits once containerd has deleted the task. (On the shim before issue 12 the task stayed
/// RUNNING forever and `ctr task rm -f` hung.)
#[test]
fn sigkill_of_the_launcher_reports_every_process_killed() {
    debug_env();
    if !testing_our_shim() {
        return;
    }
    let _serial = shared();
    let events = ExitEvents::subscribe();
    let c = Detached::sleeping("kill-launcher");
    ctr_ok(&[
        "task",
        "exec",
        "-d",
        "--exec-id",
        "bg",
        &c.0,
        "sleep",
        "600",
    ]);
    let p = shim_procs(&c.0);
    sigkill(p.launcher);
    assert!(
        wait_until(Duration::from_secs(15), || task_status(&c.0).as_deref()
            == Some("STOPPED")),
        "task still {:?} after its launcher died\n{}",
        task_status(&c.0),
        containerd_log_tail(30)
    );
    assert!(
        wait_dead(&[p.init, p.launcher], Duration::from_secs(10)),
        "the container outlived its launcher"
    );
    assert!(
        events.wait_for(&c.0, Duration::from_secs(15), |x| x.len() >= 2),
        "exits seen: {:?}",
        events.of(&c.0)
    );
    let exits = events.of(&c.0);
    let got: Vec<(&str, u32)> = exits
        .iter()
        .map(|e| (e.id.as_str(), e.exit_status))
        .collect();
    assert_eq!(
        got,
        [("bg", 137), (c.0.as_str(), 137)],
        "the exec's exit, then the init's, both 137"
    );
    let out = run_with_timeout(
        Command::new(&env().ctr_bin).args([
            "--address",
            &env().address,
            "-n",
            namespace(),
            "task",
            "exec",
            "--exec-id",
            "late",
            &c.0,
            "true",
        ]),
        Duration::from_secs(20),
    );
    assert!(
        !out.1 && !out.0.status.success(),
        "an exec after the launcher died: timed out {} / {}",
        out.1,
        stderr_of(&out.0)
    );
    // The shim's log says how the launcher ended, and the daemon reaped it (no zombie).
    let why = format!("the launcher (pid {}) was killed by SIGKILL", p.launcher);
    // The whole log (other tests of this binary log too), which containerd writes a moment
    // after the shim.
    assert!(
        wait_until(Duration::from_secs(5), || containerd_log_tail(usize::MAX)
            .contains(&why)),
        "the shim's log does not say {why:?}:\n{}",
        containerd_log_tail(30)
    );
    assert!(
        !Path::new(&format!("/proc/{}", p.launcher)).exists(),
        "the dead launcher {} was not reaped",
        p.launcher
    );
    let rm = run_with_timeout(
        Command::new(&env().ctr_bin).args([
            "--address",
            &env().address,
            "-n",
            namespace(),
            "task",
            "rm",
            "-f",
            &c.0,
        ]),
        Duration::from_secs(20),
    );
    assert!(
        !rm.1 && rm.0.status.success(),
        "ctr task rm -f: hung {}: {}",
        rm.1,
        stderr_of(&rm.0)
    );
    ctr_ok(&["container", "rm", &c.0]);
    assert!(
        wait_dead(&[p.daemon], Duration::from_secs(10)),
        "the daemon did not exit after its last task was deleted"
    );
    assert_no_leftovers(&c.0);
}

/// A container whose createRuntime hook waits for `DIR/go`, and records its state (with the
/// init's pid) and its own pid; `ctr run --rm` of it runs in the background.
struct PausedCreate {
    id: String,
    dir: PathBuf,
    ctr: Background,
}

impl PausedCreate {
    fn start(prefix: &str) -> PausedCreate {
        let id = unique_id(prefix);
        let dir = env().workdir.join(format!("paused-{id}"));
        fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let mut spec = spec_for(&id, &["sleep", "600"]);
        add_hook(
            &mut spec,
            "createRuntime",
            &format!(
                "cat > {d}/state.json; echo $$ > {d}/hook.pid; \
                 while [ ! -e {d}/go ]; do sleep 0.05; done"
            ),
        );
        let spec_file = dir.join("spec.json");
        fs::write(&spec_file, serde_json::to_vec(&spec).unwrap()).unwrap();
        let e = env();
        let child = Command::new(&e.ctr_bin)
            .args(["--address", &e.address, "-n", namespace(), "run", "--rm"])
            .args(["--runtime", RS_RUNTIME, "--config"])
            .arg(&spec_file)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ctr run");
        let p = PausedCreate {
            id,
            dir,
            ctr: Background(Some(child)),
        };
        assert!(
            wait_until(Duration::from_secs(30), || p.dir.join("hook.pid").exists()),
            "the createRuntime hook never ran\n{}",
            containerd_log_tail(20)
        );
        thread::sleep(Duration::from_millis(50)); // the pid is written after the state
        p
    }

    fn init_pid(&self) -> i32 {
        let state: Value =
            serde_json::from_slice(&fs::read(self.dir.join("state.json")).unwrap()).unwrap();
        state["pid"].as_i64().expect("pid in the hook's state") as i32
    }

    fn hook_pid(&self) -> i32 {
        fs::read_to_string(self.dir.join("hook.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Lets the hook finish; returns ctr's output (it must end within 30 s).
    fn release(mut self) -> Output {
        fs::write(self.dir.join("go"), "").unwrap();
        let (out, timed_out) = wait_output(self.ctr.take().unwrap(), Duration::from_secs(30));
        assert!(!timed_out, "ctr run did not return");
        let _ = ctr(&["container", "rm", &self.id]);
        out
    }
}

/// The init is SIGKILLed while Create waits for a createRuntime hook: Create fails saying the
/// init died, and nothing is left.
#[test]
fn sigkill_of_an_init_mid_create_fails_create_cleanly() {
    debug_env();
    let _serial = shared();
    let p = PausedCreate::start("kill-init-create");
    let init = p.init_pid();
    assert!(pid_alive(init));
    sigkill(init);
    let id = p.id.clone();
    let out = p.release();
    let err = stderr_of(&out);
    assert!(!out.status.success(), "ctr run succeeded: {err}");
    if testing_our_shim() {
        assert!(
            err.contains("exited during setup") || err.contains("init"),
            "the error does not say the init died: {err}"
        );
    }
    assert_no_leftovers(&id);
}

/// The createRuntime hook is SIGKILLed: Create fails naming the hook and the signal, and
/// nothing is left (the init it was preparing is killed too).
#[test]
fn sigkill_of_a_hook_fails_create_cleanly() {
    debug_env();
    let _serial = shared();
    let p = PausedCreate::start("kill-hook");
    let init = p.init_pid();
    let hook = p.hook_pid();
    sigkill(hook);
    let id = p.id.clone();
    let out = p.release();
    let err = stderr_of(&out);
    assert!(!out.status.success(), "ctr run succeeded: {err}");
    if testing_our_shim() {
        assert!(
            err.contains("hooks.createRuntime[0]") && err.contains("killed by signal 9"),
            "the error does not name the hook and its signal: {err}"
        );
    }
    assert!(wait_dead(&[init], Duration::from_secs(10)), "init survived");
    assert_no_leftovers(&id);
}

// ================================================== containerd restarts and stalls ===

/// A container that exits with `code` once `/tmp/go` exists in its rootfs.
fn exits_on_go(prefix: &str, code: u32) -> Detached {
    let script = format!("while [ ! -e /tmp/go ]; do sleep 0.05; done; exit {code}");
    Detached::start(prefix, RS_RUNTIME, &[], &["sh", "-c", &script])
}

fn go(id: &str) {
    fs::write(bundle_of(id).join("rootfs/tmp/go"), "").unwrap();
}

/// containerd is stopped with `signal` while tasks run; while it is down one container exits
/// by itself (7), one is SIGKILLed from the host (137) and an exec of a third exits (3).
/// After containerd is back, each of those three exits reaches it as a /tasks/exit event,
/// `task ls` and `task delete` report them, and the surviving task still takes execs.
fn exits_while_containerd_is_down(signal: i32) {
    if !testing_our_shim() {
        return;
    }
    let _serial = exclusive();
    debug_env();
    let survivor = Detached::sleeping("restart-alive");
    let quits = exits_on_go("restart-quits", 7);
    let killed = Detached::sleeping("restart-killed");
    let exec_script = "while [ ! -e /tmp/go ]; do sleep 0.05; done; touch /tmp/exec-done; exit 3";
    ctr_ok(&[
        "task",
        "exec",
        "-d",
        "--exec-id",
        "quits",
        &survivor.0,
        "sh",
        "-c",
        exec_script,
    ]);
    let (quits_pid, killed_pid) = (task_pid(&quits.0), task_pid(&killed.0));
    let mark = log_mark();
    let down_for = Instant::now();
    restart_containerd(signal, || {
        go(&quits.0);
        go(&survivor.0);
        sigkill(killed_pid);
        assert!(wait_dead(&[quits_pid, killed_pid], Duration::from_secs(10)));
        assert!(wait_until(Duration::from_secs(10), || bundle_of(
            &survivor.0
        )
        .join("rootfs/tmp/exec-done")
        .exists()));
        // Long enough for the shims to fail a few forwards and back off.
        thread::sleep(Duration::from_secs(3));
    });
    eprintln!(
        "containerd (signal {signal}) was down for {:?}",
        down_for.elapsed()
    );
    let delivered = wait_until(Duration::from_secs(30), || {
        forwarded_since(mark, "/tasks/exit") >= 3
    });
    assert!(
        delivered,
        "{} of 3 exits reached containerd after its restart\n{}",
        forwarded_since(mark, "/tasks/exit"),
        containerd_log_tail(40)
    );
    assert_eq!(task_status(&survivor.0).as_deref(), Some("RUNNING"));
    assert_eq!(task_status(&quits.0).as_deref(), Some("STOPPED"));
    assert_eq!(task_status(&killed.0).as_deref(), Some("STOPPED"));
    let after = ctr(&[
        "task",
        "exec",
        "--exec-id",
        "after",
        &survivor.0,
        "sh",
        "-c",
        "exit 5",
    ]);
    assert_eq!(
        after.status.code(),
        Some(5),
        "exec after the restart: {}",
        stderr_of(&after)
    );
    assert_eq!(delete_task_status(&quits.0), 7);
    assert_eq!(delete_task_status(&killed.0), 137);
    let ids = [survivor.0.clone(), quits.0.clone(), killed.0.clone()];
    drop((survivor, quits, killed));
    for id in &ids {
        assert_no_leftovers(id);
    }
}

#[test]
fn exits_while_containerd_is_stopped_reach_it_after_sigterm_restart() {
    debug_env();
    exits_while_containerd_is_down(libc::SIGTERM);
}

#[test]
fn exits_while_containerd_is_dead_reach_it_after_sigkill_restart() {
    debug_env();
    exits_while_containerd_is_down(libc::SIGKILL);
}

/// Sends SIGCONT when dropped: a stopped containerd must never outlive a failed assertion.
struct Stopped(i32);

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the containerd this binary started.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// containerd accepts but stalls (SIGSTOP, longer than the shim's 5 s forward timeout) while
/// a container of a pod exits: the shim's RPCs keep answering meanwhile (State and Wait of
/// it and of its neighbour, straight to the shim), and the exit reaches containerd once it
/// runs again.
#[test]
fn a_stalled_containerd_neither_loses_an_exit_nor_blocks_the_shim() {
    debug_env();
    if !testing_our_shim() {
        return;
    }
    let _serial = exclusive();
    debug_env();
    let pod = format!("io.containerd.runc.v2.group={}", unique_id("pod"));
    let script = "while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 4";
    let quits = Detached::start(
        "stall-quits",
        RS_RUNTIME,
        &["--annotation", &pod],
        &["sh", "-c", script],
    );
    let neighbour = Detached::start(
        "stall-stays",
        RS_RUNTIME,
        &["--annotation", &pod],
        &["sleep", "600"],
    );
    let client = connect_shim_of(&quits.0);
    let mark = log_mark();
    let containerd = containerd_pid();
    // SAFETY: kill(2) of the containerd this binary started; `stopped` resumes it.
    unsafe { libc::kill(containerd, libc::SIGSTOP) };
    let stopped = Stopped(containerd);
    let t0 = Instant::now();
    go(&quits.0);
    let state = |id: &str| -> shim_api::StateResponse {
        let t = Instant::now();
        let s = shim_call(
            &client,
            "State",
            &shim_api::StateRequest {
                id: id.into(),
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("State {id} while containerd is stopped: {e:?}"));
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "State took {:?}",
            t.elapsed()
        );
        s
    };
    let w: shim_api::WaitResponse = shim_call(
        &client,
        "Wait",
        &shim_api::WaitRequest {
            id: quits.0.clone(),
            ..Default::default()
        },
    )
    .expect("Wait while containerd is stopped");
    assert_eq!(w.exit_status, 4);
    // Through the first forward's timeout and into its retries.
    while t0.elapsed() < Duration::from_secs(8) {
        assert_eq!(
            state(&neighbour.0).status.enum_value_or_default(),
            shim_api::Status::RUNNING
        );
        let s = state(&quits.0);
        assert_eq!(
            (s.status.enum_value_or_default(), s.exit_status),
            (shim_api::Status::STOPPED, 4)
        );
        thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(forwarded_since(mark, "/tasks/exit"), 0);
    drop(stopped);
    let delivered = wait_until(Duration::from_secs(20), || {
        forwarded_since(mark, "/tasks/exit") >= 1
    });
    assert!(
        delivered,
        "the exit never reached containerd after SIGCONT\n{}",
        containerd_log_tail(40)
    );
    assert_eq!(delete_task_status(&quits.0), 4);
    let ids = [quits.0.clone(), neighbour.0.clone()];
    drop(client);
    drop((quits, neighbour));
    for id in &ids {
        assert_no_leftovers(id);
    }
}

// ============================================================= churn and storms ===

fn count_from_env(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `ctr run --rm ... true` many times, a few at once: every run succeeds, and afterwards
/// containerd's descriptors, mounts, cgroups, bundles, state, shims, sockets and processes
/// are back to where they were.
#[test]
fn container_churn_leaks_nothing() {
    debug_env();
    let _serial = exclusive();
    let total = count_from_env("SHIM_RS_CHURN", 1000);
    let parallel = 4;
    let before = account();
    let next = Arc::new(AtomicUsize::new(0));
    let ids = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..parallel)
        .map(|_| {
            let (next, ids, failures) = (next.clone(), ids.clone(), failures.clone());
            thread::spawn(move || {
                while next.fetch_add(1, Ordering::SeqCst) < total {
                    let id = unique_id("churn");
                    ids.lock().unwrap().push(id.clone());
                    let (out, err, code) = run(&runtime(), &id, &["true"]);
                    if code != 0 || !err.is_empty() || !out.is_empty() {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{id}: exit {code}: {err}"));
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let took = t0.elapsed();
    eprintln!(
        "churn: {total} containers, {parallel} at a time, in {took:?} ({:?} each)",
        took / total as u32
    );
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {total} runs failed, e.g.:\n{}",
        failures.len(),
        failures
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_back_to(&before, &format!("{total} containers"));
    let ids = ids.lock().unwrap();
    assert_eq!(leaked_sockets(&ids), Vec::<String>::new());
}

/// Threads hammer three containers at once with Exec, exec Kill and Delete, task Kill,
/// Delete and a new Create/Start (`ctr task start`) in a loop. Any call may fail with an
/// error (the task is gone, the process already exited), none may hang, an exec that runs
/// reports its own exit code, and afterwards everything is gone.
#[test]
fn create_delete_exec_kill_storms_leave_nothing() {
    debug_env();
    let _serial = exclusive();
    let before = account();
    let rounds = count_from_env("SHIM_RS_STORM_ROUNDS", 12);
    let ids: Vec<String> = (0..3)
        .map(|_| {
            let id = unique_id("storm");
            ctr_ok(&[
                "container",
                "create",
                "--runtime",
                &runtime(),
                IMAGE,
                &id,
                "sleep",
                "600",
            ]);
            ctr_ok(&["task", "start", "-d", &id]);
            id
        })
        .collect();
    let wrong = Arc::new(Mutex::new(Vec::<String>::new()));
    let bounded_ctr = |args: Vec<String>| -> (Output, bool) {
        let e = env();
        run_with_timeout(
            Command::new(&e.ctr_bin)
                .args(["--address", &e.address, "-n", namespace()])
                .args(&args),
            Duration::from_secs(30),
        )
    };
    thread::scope(|s| {
        for id in &ids {
            // Execs that run to the end: the exit code must be the exec's own.
            for t in 0..2 {
                let wrong = wrong.clone();
                s.spawn(move || {
                    for i in 0..rounds {
                        let code = (i + t) % 5;
                        let (out, hung) = bounded_ctr(vec![
                            "task".into(),
                            "exec".into(),
                            "--exec-id".into(),
                            format!("run-{t}-{i}"),
                            id.clone(),
                            "sh".into(),
                            "-c".into(),
                            format!("exit {code}"),
                        ]);
                        let err = stderr_of(&out);
                        let got = out.status.code();
                        // 137 is the exec's fate when the storm SIGKILLs the task itself.
                        if hung {
                            wrong.lock().unwrap().push(format!("exec hung on {id}"));
                        } else if err.is_empty() && got != Some(code as i32) && got != Some(137) {
                            wrong
                                .lock()
                                .unwrap()
                                .push(format!("exec on {id}: exit {got:?}, not {code}"));
                        }
                    }
                });
            }
            // Detached execs, killed and deleted.
            let wrong2 = wrong.clone();
            s.spawn(move || {
                for i in 0..rounds {
                    let exec_id = format!("bg-{i}");
                    let ops: [Vec<String>; 3] = [
                        vec![
                            "task",
                            "exec",
                            "-d",
                            "--exec-id",
                            &exec_id,
                            id,
                            "sleep",
                            "60",
                        ]
                        .into_iter()
                        .map(String::from)
                        .collect(),
                        vec!["task", "kill", "-s", "SIGKILL", "--exec-id", &exec_id, id]
                            .into_iter()
                            .map(String::from)
                            .collect(),
                        vec!["task", "delete", "--exec-id", &exec_id, id]
                            .into_iter()
                            .map(String::from)
                            .collect(),
                    ];
                    for op in ops {
                        if bounded_ctr(op.clone()).1 {
                            wrong2.lock().unwrap().push(format!("hung: {op:?}"));
                        }
                    }
                }
            });
            // The task itself: killed, deleted and created again.
            let wrong3 = wrong.clone();
            s.spawn(move || {
                for _ in 0..rounds / 3 {
                    thread::sleep(Duration::from_millis(300));
                    for op in [
                        vec!["task", "kill", "-s", "SIGKILL", id],
                        vec!["task", "delete", id],
                        vec!["task", "start", "-d", id],
                    ] {
                        let op: Vec<String> = op.into_iter().map(String::from).collect();
                        if op[1] == "delete" {
                            wait_until(Duration::from_secs(10), || task_ended(id));
                        }
                        if bounded_ctr(op.clone()).1 {
                            wrong3.lock().unwrap().push(format!("hung: {op:?}"));
                        }
                    }
                }
            });
        }
    });
    let wrong = wrong.lock().unwrap();
    assert!(wrong.is_empty(), "storm results:\n{}", wrong.join("\n"));
    for id in &ids {
        remove_container(id);
    }
    for id in &ids {
        assert_no_leftovers(id);
    }
    assert_back_to(&before, "the storms");
}

/// Two Creates of one id reach the shim at once (containerd never sends that, a direct
/// client can): one wins, the other gets AlreadyExists and leaves nothing behind.
#[test]
fn create_create_of_one_id_one_wins() {
    debug_env();
    if !testing_our_shim() {
        return;
    }
    let _serial = shared();
    let shim = Standalone::start("cc-shim");
    for round in 0..5 {
        let cid = unique_id(&format!("cc{round}"));
        let bundle = shim.bundle(&cid, &["sleep", "600"]);
        let req = Standalone::create_request(&cid, &bundle);
        let results: Vec<ttrpc::Result<shim_api::CreateTaskResponse>> = thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let (client, req) = (shim.client(), req.clone());
                    s.spawn(move || shim_call(&client, "Create", &req))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let won = results.iter().filter(|r| r.is_ok()).count();
        let lost: Vec<_> = results.iter().filter_map(code_of).collect();
        assert_eq!(
            (won, lost.as_slice()),
            (1, &[ttrpc::Code::ALREADY_EXISTS][..]),
            "two Creates of {cid}: {results:?}"
        );
        let client = shim.client();
        let again: ttrpc::Result<shim_api::CreateTaskResponse> = shim_call(&client, "Create", &req);
        assert_eq!(code_of(&again), Some(ttrpc::Code::ALREADY_EXISTS));
        assert_eq!(shim.kill_and_delete(&client, &cid), 137);
        assert_eq!(shim.leftovers_of(&cid), Vec::<String>::new());
    }
    shim.shutdown();
}

/// Create and Shutdown reach an idle shim at once: either Create wins (the shim stays up
/// with the container) or Shutdown does (Create is refused and the shim exits); never a
/// container left half-made in a shim that is exiting.
#[test]
fn create_racing_shutdown_leaves_nothing_half_made() {
    debug_env();
    if !testing_our_shim() {
        return;
    }
    let _serial = shared();
    let mut outcomes: HashMap<&str, usize> = HashMap::new();
    // Many short rounds: the window (Create read, its worker not yet started) is narrow.
    for round in 0..32 {
        let shim = Standalone::start("cs-shim");
        let cid = unique_id(&format!("cs{round}"));
        let bundle = shim.bundle(&cid, &["sleep", "600"]);
        let req = Standalone::create_request(&cid, &bundle);
        let (create, _shutdown) = thread::scope(|s| {
            let (client, req) = (shim.client(), req.clone());
            let create = s.spawn(move || {
                shim_call::<_, shim_api::CreateTaskResponse>(&client, "Create", &req)
            });
            let client = shim.client();
            let delay = Duration::from_micros(100 * (round % 8) as u64);
            let shutdown = s.spawn(move || {
                thread::sleep(delay);
                shim_call::<_, shim_api::Empty>(
                    &client,
                    "Shutdown",
                    &shim_api::ShutdownRequest::new(),
                )
            });
            (create.join().unwrap(), shutdown.join().unwrap())
        });
        if create.is_ok() {
            *outcomes.entry("create won").or_default() += 1;
            assert!(
                pid_alive(shim.daemon),
                "Create succeeded but the shim exited: the container is orphaned"
            );
            let client = shim.client();
            assert_eq!(shim.kill_and_delete(&client, &cid), 137);
            drop(client);
            shim.shutdown();
        } else {
            *outcomes.entry("shutdown won").or_default() += 1;
            // The shim exits (or, if Create failed for another reason, Shutdown ends it now).
            if pid_alive(shim.daemon) && !wait_dead(&[shim.daemon], Duration::from_secs(10)) {
                shim.shutdown();
            }
            shim.assert_gone();
        }
        assert_eq!(
            shim.leftovers_of(&cid),
            Vec::<String>::new(),
            "round {round}: {create:?}"
        );
    }
    eprintln!("create vs shutdown: {outcomes:?}");
}

/// A rootfs mount that fails (Tasks.Create with an overlay on a lowerdir that does not
/// exist; the shim mounts it while it makes the plan and the cgroups): Create fails naming
/// the mount and leaves nothing behind; the container then gets a task on its snapshot.
#[test]
fn a_failing_rootfs_mount_leaves_nothing() {
    debug_env();
    if !testing_our_shim() {
        return;
    }
    let _serial = shared();
    let api = Api::connect();
    let ch = api.channel();
    let id = create_container("rootfs-fail", &["sleep", "600"]);
    let missing = env().workdir.join(format!("{id}-no-such-lower"));
    let req = CreateTaskRequest {
        container_id: id.clone(),
        rootfs: vec![containerd_client::types::Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            options: vec![format!("lowerdir={}", missing.display())],
            ..Default::default()
        }],
        ..Default::default()
    };
    let created = api.rt.block_on(bounded(
        "Create",
        RPC_TIMEOUT,
        tasks(&ch).create(with_namespace!(req, namespace())),
    ));
    let err = created.expect_err("Create on an overlay without its lowerdir");
    assert!(
        err.message().contains("rootfs[0]"),
        "Create's error does not name the mount: {}",
        err.message()
    );
    // Only the container and its snapshot stay: no cgroup, mount, process, socket or bundle.
    let kept = |l: &String| l.contains("lists the container") || l.contains("the snapshot");
    let mut left = Vec::new();
    wait_until(SETTLE, || {
        left = leftovers(&id).into_iter().filter(|l| !kept(l)).collect();
        left.is_empty()
    });
    assert!(
        left.is_empty(),
        "after the failed Create:\n  {}",
        left.join("\n  ")
    );
    api.rt
        .block_on(create_task(&ch, &id, ""))
        .expect("Create after the failed one");
    remove_container(&id);
    assert_no_leftovers(&id);
}

// ======================================================================== disks ===

/// A tmpfs over our namespace's bundle directory (containerd's state for our tasks, where
/// the shim writes its address and state files), unmounted when dropped.
struct FullDisk {
    dir: PathBuf,
}

impl FullDisk {
    fn mount(size: &str) -> FullDisk {
        let dir = env()
            .workdir
            .join("state/io.containerd.runtime.v2.task")
            .join(namespace());
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(count_entries(&dir), 0, "bundles exist: {}", dir.display());
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0711")])
            .arg("shim-rs-faults")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount tmpfs: {}", stderr_of(&out));
        FullDisk { dir }
    }

    fn filler(&self) -> PathBuf {
        self.dir.join(".filler")
    }

    /// Free blocks (4 KiB pages) of the tmpfs.
    fn free_pages(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(&self.dir).unwrap();
        st.blocks_available() as u64
    }

    /// Fills the tmpfs until exactly `pages` are left.
    fn leave(&self, pages: u64) {
        let _ = fs::remove_file(self.filler());
        let fill = self.free_pages().saturating_sub(pages);
        let mut f = fs::File::create(self.filler()).unwrap();
        f.write_all(&vec![0xa5u8; (fill * 4096) as usize])
            .expect("fill the tmpfs");
        drop(f);
        assert_eq!(self.free_pages(), pages);
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.filler());
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// The disk holding the bundles (config.json, the shim's address and state files) is full:
/// for every amount of free space short of what one container needs, Create fails with an
/// error saying so, and nothing is left; once space is freed, containers run again.
#[test]
fn a_full_state_disk_fails_create_cleanly_then_recovers() {
    debug_env();
    let _serial = exclusive();
    let disk = FullDisk::mount("2m");
    // What one running container takes there.
    let empty = disk.free_pages();
    let probe = Detached::sleeping("disk-probe");
    let needed = empty - disk.free_pages();
    drop(probe);
    assert!(
        wait_until(Duration::from_secs(10), || count_entries(&disk.dir) == 0),
        "the probe's bundle stayed"
    );
    eprintln!("one container takes {needed} pages of the bundle filesystem");
    assert!(needed > 0);
    for free in (0..needed).rev() {
        disk.leave(free);
        let id = unique_id("disk-full");
        let (_, err, code) = run(&runtime(), &id, &["true"]);
        assert_ne!(code, 0, "ran with {free} of {needed} pages free");
        assert!(
            err.to_lowercase().contains("no space left on device"),
            "{free} pages free: the error does not say the disk is full: {err}"
        );
        let _ = ctr(&["container", "rm", &id]);
        assert_no_leftovers(&id);
        let _ = fs::remove_file(disk.filler());
        assert_eq!(
            count_entries(&disk.dir),
            0,
            "{free} pages free: a bundle stayed"
        );
    }
    let _ = fs::remove_file(disk.filler());
    let id = unique_id("disk-freed");
    let (out, err, code) = run(&runtime(), &id, &["echo", "ok"]);
    assert_eq!((out.as_str(), err.as_str(), code), ("ok\n", "", 0));
    assert_no_leftovers(&id);
}

/// The state file in the bundle is corrupt or truncated when the daemon is SIGKILLed: the
/// `delete` action containerd runs still kills the container, removes its cgroup (found
/// again from config.json), unmounts the rootfs, and reports the bad file in containerd's
/// log.
#[test]
fn a_corrupt_or_truncated_state_file_still_cleans_up_after_a_dead_shim() {
    debug_env();
    if !testing_our_shim() {
        return;
    }
    let _serial = shared();
    for variant in ["corrupt", "truncated"] {
        let c = Detached::sleeping(&format!("state-{variant}"));
        let p = shim_procs(&c.0);
        let mark = log_mark();
        let file = bundle_of(&c.0).join("shim-rs-state.json");
        let good = fs::read(&file).expect("the state file");
        let bad = match variant {
            "corrupt" => b"{\"id\": 17, \x00\xff garbage".to_vec(),
            _ => good[..good.len() / 2].to_vec(),
        };
        fs::write(&file, bad).unwrap();
        sigkill(p.daemon);
        assert!(
            wait_dead(&[p.init, p.launcher, p.daemon], Duration::from_secs(20)),
            "{variant}: the container survived\n{}",
            containerd_log_tail(30)
        );
        assert!(wait_until(Duration::from_secs(20), || task_ended(&c.0)));
        let _ = ctr(&["task", "delete", &c.0]);
        ctr_ok(&["container", "rm", &c.0]);
        assert_no_leftovers(&c.0);
        let log = containerd_log_since(mark);
        assert!(
            log.lines()
                .any(|l| l.contains(&c.0) && l.contains("shim-rs-state.json")),
            "{variant}: containerd's log does not name the bad state file\n{}",
            containerd_log_tail(30)
        );
    }
}

// ========================================================================= stdio ===

/// A task is created with a stdout fifo that nobody ever opens for reading: Create answers
/// at once, the process runs and exits, Wait returns, Delete cleans up. (The shim before
/// issue 12 blocked in open(2) forever.)
#[test]
fn a_stdout_fifo_nobody_reads_never_blocks_create() {
    debug_env();
    let _serial = shared();
    let api = Api::connect();
    let id = create_container("noreader", &["sh", "-c", "echo lost; exit 3"]);
    let fifo = env().workdir.join(format!("{id}.stdout"));
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let ch = api.channel();
    let t0 = Instant::now();
    let created = api
        .rt
        .block_on(create_task(&ch, &id, &fifo.display().to_string()));
    if created.is_err() {
        // Unblock a shim stuck in open(2) so that the test can clean up.
        let _reader = fs::File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
        thread::sleep(Duration::from_secs(2));
        remove_container(&id);
        panic!("Create with an unread stdout fifo: {created:?}");
    }
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "Create took {:?}",
        t0.elapsed()
    );
    api.rt.block_on(start(&ch, &id, "")).expect("Start");
    let code = api.rt.block_on(wait(&ch, &id, "", Duration::from_secs(15)));
    assert_eq!(code.ok(), Some(3), "Wait");
    assert_eq!(api.rt.block_on(delete_task(&ch, &id)).ok(), Some(3));
    ctr_ok(&["container", "rm", &id]);
    let _ = fs::remove_file(&fifo);
    assert_no_leftovers(&id);
}

/// A client's reader that opens its output fifo late, with a blocking open(2) as
/// containerd's does from a goroutine that a busy machine may run after the process already
/// exited. A fifo's blocking reader waits for a writer that opens after it: had the process
/// exited first, the client would wait for EOF forever (an ExecSync in a storm hung so).
/// Both an init and an exec are `true` (the shim's drain, waiting for the client to read
/// what was written, would hide this for output); each reader opens 300 ms after the
/// request and must get EOF.
#[test]
fn a_client_reader_that_opens_late_still_gets_eof() {
    debug_env();
    let _serial = shared();
    let api = Api::connect();
    let ch = api.channel();

    // The init: Create with its stdout fifo not yet open for reading.
    let id = create_container("late-reader", &["true"]);
    let init_fifo = env().workdir.join(format!("{id}.init.out"));
    let init_out = LateReader::open(&init_fifo, Duration::from_millis(300));
    api.rt
        .block_on(create_task(&ch, &id, &init_fifo.display().to_string()))
        .expect("Create");
    api.rt.block_on(start(&ch, &id, "")).expect("Start");
    let code = api.rt.block_on(wait(&ch, &id, "", Duration::from_secs(15)));
    assert_eq!(code.ok(), Some(0), "Wait on the init");
    assert_eq!(init_out.output(), "", "the init's stdout");
    api.rt.block_on(delete_task(&ch, &id)).expect("Delete");
    ctr_ok(&["container", "rm", &id]);
    assert_no_leftovers(&id);

    // An exec into a running init.
    let id = create_container("late-reader", &["sleep", "600"]);
    api.rt.block_on(create_task(&ch, &id, "")).expect("Create");
    api.rt.block_on(start(&ch, &id, "")).expect("Start");
    let exec_fifo = env().workdir.join(format!("{id}.exec.out"));
    let exec_out = LateReader::open(&exec_fifo, Duration::from_millis(300));
    let fifo = exec_fifo.display().to_string();
    api.rt
        .block_on(exec(&ch, &id, "late", &["true"], false, &fifo))
        .expect("Exec");
    api.rt
        .block_on(start(&ch, &id, "late"))
        .expect("Start exec");
    let code = api
        .rt
        .block_on(wait(&ch, &id, "late", Duration::from_secs(15)));
    assert_eq!(code.ok(), Some(0), "Wait on the exec");
    assert_eq!(exec_out.output(), "", "the exec's stdout");
    api.rt.block_on(kill(&ch, &id, "", 9)).expect("Kill");
    let _ = api.rt.block_on(wait(&ch, &id, "", Duration::from_secs(15)));
    api.rt.block_on(delete_task(&ch, &id)).expect("Delete");
    ctr_ok(&["container", "rm", &id]);
    assert_no_leftovers(&id);
}

/// A fifo read as containerd reads one: a blocking open(2) for reading, `delay` after it
/// was made, then everything until EOF.
struct LateReader {
    path: PathBuf,
    got: std::sync::mpsc::Receiver<String>,
}

impl LateReader {
    fn open(path: &Path, delay: Duration) -> LateReader {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, got) = std::sync::mpsc::channel();
        let p = path.to_path_buf();
        thread::spawn(move || {
            thread::sleep(delay);
            let mut out = String::new();
            let _ = fs::File::open(&p).and_then(|mut f| f.read_to_string(&mut out));
            let _ = tx.send(out);
        });
        LateReader {
            path: path.to_path_buf(),
            got,
        }
    }

    /// What the reader got until EOF; fails the test if EOF does not come within 10 s.
    fn output(&self) -> String {
        match self.got.recv_timeout(Duration::from_secs(10)) {
            Ok(out) => out,
            Err(_) => {
                // Release the reader's open(2) (it waits for a writer), then fail.
                let _ = fs::File::options()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&self.path);
                panic!("no EOF on {} within 10 s", self.path.display());
            }
        }
    }
}

impl Drop for LateReader {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

// =========================================================== exits and their order ===

/// An exec that exits right after its Start, while the init is being killed, many times:
/// the init's TaskExit always goes out (after those of the execs that started) and Wait on
/// the init returns.
#[test]
fn quick_exec_exits_never_hold_back_the_inits_exit() {
    debug_env();
    let _serial = shared();
    let rounds = count_from_env("SHIM_RS_QUICK_EXEC_ROUNDS", 15);
    let events = ExitEvents::subscribe();
    let api = Api::connect();
    let ch = api.channel();
    for round in 0..rounds {
        let id = create_container("quick-exec", &["sleep", "600"]);
        api.rt.block_on(create_task(&ch, &id, "")).expect("Create");
        api.rt.block_on(start(&ch, &id, "")).expect("Start");
        let started: Vec<String> = api.rt.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for i in 0..12 {
                let (ch, id) = (ch.clone(), id.clone());
                set.spawn(async move {
                    let exec_id = format!("q{i}");
                    exec(&ch, &id, &exec_id, &["true"], false, "").await.ok()?;
                    start(&ch, &id, &exec_id).await.ok()?;
                    Some(exec_id)
                });
            }
            let (ch2, id2) = (ch.clone(), id.clone());
            let delay = Duration::from_millis((round as u64 * 7) % 40);
            set.spawn(async move {
                tokio::time::sleep(delay).await;
                kill(&ch2, &id2, "", 9).await.expect("Kill");
                None
            });
            let mut started = Vec::new();
            while let Some(r) = set.join_next().await {
                started.extend(r.unwrap());
            }
            started
        });
        let code = api.rt.block_on(wait(&ch, &id, "", Duration::from_secs(20)));
        assert_eq!(code.ok(), Some(137), "round {round}: Wait on the init");
        for exec_id in &started {
            let code = api
                .rt
                .block_on(wait(&ch, &id, exec_id, Duration::from_secs(20)));
            assert!(code.is_ok(), "round {round}: Wait on {exec_id}: {code:?}");
        }
        let init_seen = events.wait_for(&id, Duration::from_secs(10), |x| {
            x.iter().any(|e| e.id == id)
        });
        assert!(init_seen, "round {round}: no TaskExit for the init");
        let exits = events.of(&id);
        let order: Vec<&str> = exits.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            order.iter().filter(|x| **x == id).count(),
            1,
            "round {round}: {order:?}"
        );
        assert_eq!(order.last(), Some(&id.as_str()), "round {round}: {order:?}");
        for exec_id in &started {
            assert_eq!(
                order.iter().filter(|x| *x == exec_id).count(),
                1,
                "round {round}: TaskExit of {exec_id}: {order:?}"
            );
        }
        api.rt.block_on(delete_task(&ch, &id)).expect("Delete");
        ctr_ok(&["container", "rm", &id]);
        assert_no_leftovers(&id);
    }
}

/// Reads a fifo until dropped (so writers never block), from its own thread.
struct FifoReader {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FifoReader {
    fn new(path: PathBuf) -> FifoReader {
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let f = fs::File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = thread::spawn(move || {
            let mut f = f;
            let mut buf = [0u8; 4096];
            while !st.load(Ordering::SeqCst) {
                match f.read(&mut buf) {
                    Ok(n) if n > 0 => {}
                    _ => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        FifoReader {
            path,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FifoReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = fs::remove_file(&self.path);
    }
}

/// 100 terminal execs exit while a background process of each keeps its terminal open: each
/// exit still goes out within the drain bound (2 s, plus slack for a loaded machine), and
/// an exit elsewhere in the pod meanwhile is not held up by them.
#[test]
fn terminal_execs_held_open_are_bounded_and_delay_no_other_exit() {
    debug_env();
    if !testing_our_shim() {
        return; // the bound is ours
    }
    let _serial = exclusive();
    let api = Api::connect();
    let ch = api.channel();
    let c = Detached::sleeping("held-open");
    let daemon = shim_procs(&c.0).daemon;
    let idle_threads = threads(daemon);
    let reader = FifoReader::new(env().workdir.join(format!("{}-tty", c.0)));
    let out = reader.path.display().to_string();
    let n = 100;
    let t0 = Instant::now();
    let (held, other) = api.rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let (ch, id, out) = (ch.clone(), c.0.clone(), out.clone());
            set.spawn(async move {
                let exec_id = format!("tty{i}");
                let args = ["sh", "-c", "sleep 60 & exit 0"];
                exec(&ch, &id, &exec_id, &args, true, &out).await?;
                start(&ch, &id, &exec_id).await?;
                let started = Instant::now();
                let code = wait(&ch, &id, &exec_id, Duration::from_secs(30)).await?;
                Ok::<_, Status>((code, started.elapsed()))
            });
        }
        // Meanwhile, an exec without a terminal in the same container.
        let (ch2, id2) = (ch.clone(), c.0.clone());
        let other = async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            exec(&ch2, &id2, "plain", &["true"], false, "").await?;
            start(&ch2, &id2, "plain").await?;
            let started = Instant::now();
            let code = wait(&ch2, &id2, "plain", Duration::from_secs(30)).await?;
            Ok::<_, Status>((code, started.elapsed()))
        }
        .await;
        let mut held = Vec::new();
        while let Some(r) = set.join_next().await {
            held.push(r.unwrap());
        }
        (held, other)
    });
    eprintln!("{n} held-open terminal execs done in {:?}", t0.elapsed());
    let (code, took) = other.expect("the plain exec");
    assert_eq!(code, 0);
    assert!(
        took < Duration::from_millis(1500),
        "a plain exec's exit took {took:?} while terminal drains were pending"
    );
    let mut slowest = Duration::ZERO;
    for r in held {
        let (code, took) = r.expect("a terminal exec");
        assert_eq!(code, 0);
        slowest = slowest.max(took);
    }
    eprintln!("slowest held-open exit after Start: {slowest:?}");
    assert!(
        slowest < Duration::from_secs(5),
        "a held-open terminal exec's exit took {slowest:?} (bound: 2 s drain)"
    );
    // The background processes go with the container; the copy threads with them.
    let id = c.0.clone();
    drop(c);
    drop(reader);
    assert_no_leftovers(&id);
    let _ = idle_threads;
}

// ========================================================== threads and memory ===

/// One pod shim runs many execs (8 in flight at a time, through containerd's API): its
/// threads return to the idle count, never exceed the worker bound meanwhile, and its RSS,
/// PSS and descriptors stay within the bounds the README states.
#[test]
fn a_pod_shim_after_many_execs_is_back_to_idle_size() {
    debug_env();
    if !testing_our_shim() {
        return;
    }
    let _serial = exclusive();
    let total = count_from_env("SHIM_RS_EXECS", 10_000);
    let in_flight = 8;
    let api = Api::connect();
    let ch = api.channel();
    let c = Detached::sleeping("many-execs");
    let daemon = shim_procs(&c.0).daemon;
    // Settled: the worker threads of the Create and Start are gone.
    thread::sleep(shim::pool::IDLE + Duration::from_secs(1));
    let idle = (threads(daemon), fd_count(daemon), memory_kib(daemon));
    eprintln!(
        "idle pod shim: {} threads, {} fds, RSS {} KiB, PSS {} KiB",
        idle.0, idle.1, idle.2 .0, idle.2 .1
    );
    let peak = Arc::new(AtomicUsize::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        thread::spawn(move || {
            while sampling.load(Ordering::SeqCst) {
                peak.fetch_max(threads(daemon), Ordering::SeqCst);
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let failures: Vec<String> = api.rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..in_flight {
            let (ch, id, next) = (ch.clone(), c.0.clone(), next.clone());
            set.spawn(async move {
                let mut failures = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= total {
                        return failures;
                    }
                    let exec_id = format!("x{i}");
                    let r = async {
                        exec(&ch, &id, &exec_id, &["true"], false, "").await?;
                        start(&ch, &id, &exec_id).await?;
                        let code = wait(&ch, &id, &exec_id, RPC_TIMEOUT).await?;
                        delete_process(&ch, &id, &exec_id).await?;
                        Ok::<_, Status>(code)
                    }
                    .await;
                    match r {
                        Ok(0) => {}
                        other => failures.push(format!("{exec_id}: {other:?}")),
                    }
                }
            });
        }
        let mut failures = Vec::new();
        while let Some(r) = set.join_next().await {
            failures.extend(r.unwrap());
        }
        failures
    });
    let took = t0.elapsed();
    let busy = (threads(daemon), memory_kib(daemon));
    sampling.store(false, Ordering::SeqCst);
    sampler.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {total} execs failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let back = wait_until(shim::pool::IDLE + Duration::from_secs(5), || {
        threads(daemon) <= idle.0
    });
    let after = (threads(daemon), fd_count(daemon), memory_kib(daemon));
    eprintln!(
        "{total} execs in {took:?}: peak {} threads, {} right after; settled: {} threads, {} fds, RSS {} KiB, PSS {} KiB",
        peak.load(Ordering::SeqCst),
        busy.0,
        after.0,
        after.1,
        after.2 .0,
        after.2 .1
    );
    assert!(
        back,
        "threads: {} idle before, {} after",
        idle.0,
        threads(daemon)
    );
    assert!(
        peak.load(Ordering::SeqCst) <= idle.0 + shim::pool::MAX_THREADS,
        "peak {} threads: beyond {} idle + {} workers",
        peak.load(Ordering::SeqCst),
        idle.0,
        shim::pool::MAX_THREADS
    );
    assert_eq!(after.1, idle.1, "descriptors of the daemon");
    // The bounds the README states: growth of at most 2 MiB RSS and 2 MiB PSS.
    assert!(
        after.2 .0 <= idle.2 .0 + 2048 && after.2 .1 <= idle.2 .1 + 2048,
        "memory grew beyond 2 MiB: RSS {} -> {} KiB, PSS {} -> {} KiB",
        idle.2 .0,
        after.2 .0,
        idle.2 .1,
        after.2 .1
    );
    let id = c.0.clone();
    drop(c);
    assert_no_leftovers(&id);
}
