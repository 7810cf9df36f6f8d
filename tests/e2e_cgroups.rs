//! cgroups of a running container, on whatever layout the host has (cgroup v1, this project's
//! hybrid test machine, or cgroup v2: `make test-cgroupv2` runs this suite in a v2-only VM):
//! limits at create (ctr flags, and full specs through `ctr run --config`), Update (over
//! ttrpc: ctr 1.6 has no update command), the device allowlist, Pause/Resume, Stats, OOM
//! events, cgroup namespaces, execs, nested cgroup paths. Every fact is stated once
//! ([`Fact`]) and read where the host's layout keeps it. Every test also passes under
//! `SHIM_RS_RUNTIME=io.containerd.runc.v2`, which is how the expectations were checked.

mod common;

use common::cgroup::{self, Cgroup, Fact};
use common::spec::{base_spec, busybox_rootfs, Scratch};
use common::*;
use serde_json::{json, Value};
use shim::protos::{
    api::{Empty, StatsRequest, UpdateTaskRequest},
    cgroups::metrics::Metrics as MetricsV1,
    cgroups_v2::metrics::Metrics as MetricsV2,
    protobuf::{well_known_types::any::Any, Message, MessageField},
    ttrpc::{self, context::Context, Client, Code},
    TaskClient,
};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A detached container, killed and removed when dropped.
struct Running(String);

impl Running {
    fn start(prefix: &str, extra: &[&str], args: &[&str]) -> Running {
        let id = unique_id(prefix);
        let rt = runtime();
        let mut a = vec!["run", "-d", "--runtime", &rt];
        a.extend_from_slice(extra);
        a.push(IMAGE);
        a.push(&id);
        a.extend_from_slice(args);
        ctr_ok(&a);
        Running(id)
    }

    /// The init's pid as containerd reports it.
    fn pid(&self) -> i32 {
        task_pid(&self.0)
    }

    /// The container's cgroup (ctr's cgroupsPath is /<namespace>/<id>).
    fn cgroup(&self) -> Cgroup {
        Cgroup::of_container(&self.0)
    }

    /// Runs `sh -c script` in the container as an exec; (stdout, stderr, exit code).
    fn exec(&self, script: &str) -> (String, String, i32) {
        let exec_id = unique_id("x");
        let out = ctr(&[
            "task",
            "exec",
            "--exec-id",
            &exec_id,
            &self.0,
            "sh",
            "-c",
            script,
        ]);
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            exit_code(&out.status),
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        remove_container(&self.0);
    }
}

/// A detached container from a full spec (`ctr run -d --config`): the spec ctr would write
/// over a busybox rootfs, edited by the test. Removed (then its rootfs) when dropped.
struct FromSpec {
    c: Running,
    _scratch: Scratch,
}

impl FromSpec {
    /// `Err(ctr's stderr)` when the runtime refused the spec.
    fn start(
        prefix: &str,
        args: &[&str],
        edit: impl FnOnce(&mut Value, &str),
    ) -> Result<FromSpec, String> {
        let id = unique_id(prefix);
        let scratch = Scratch::new(&id);
        let rootfs = busybox_rootfs(&scratch.0);
        let mut spec = base_spec(&id, &rootfs, args);
        edit(&mut spec, &id);
        let file = scratch.0.join("config.json");
        fs::write(&file, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        let rt = runtime();
        let out = ctr(&[
            "run",
            "-d",
            "--runtime",
            &rt,
            "--config",
            file.to_str().unwrap(),
            &id,
        ]);
        let c = Running(id);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(FromSpec {
            c,
            _scratch: scratch,
        })
    }
}

fn read(path: &PathBuf) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

fn task_client(id: &str) -> TaskClient {
    let sock = shim_socket_path(id);
    let client = Client::connect(&format!("unix://{}", sock.display()))
        .unwrap_or_else(|e| panic!("connect {}: {e}", sock.display()));
    TaskClient::new(client)
}

/// Update with OCI LinuxResources JSON, as containerd's client packs it.
fn update(client: &TaskClient, id: &str, resources: &str) -> ttrpc::Result<Empty> {
    let req = UpdateTaskRequest {
        id: id.to_string(),
        resources: MessageField::some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
            value: resources.as_bytes().to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    };
    client.update(Context::default(), &req)
}

fn code_of(r: ttrpc::Result<Empty>) -> (Code, String) {
    match r {
        Err(ttrpc::Error::RpcStatus(s)) => (s.code(), s.message),
        other => panic!("expected an RPC status, got {other:?}"),
    }
}

#[test]
fn update_changes_limits_live_and_the_new_pids_limit_is_enforced() {
    let _serial = shared();
    let c = Running::start("update", &[], &["sleep", "600"]);
    let client = task_client(&c.0);
    let cg = c.cgroup();

    update(
        &client,
        &c.0,
        r#"{"memory":{"limit":50000000,"swap":50000000},
            "cpu":{"quota":20000,"period":100000,"shares":512,"cpus":"0"},"pids":{"limit":3}}"#,
    )
    .expect("update");
    // (The kernel rounds memory limits down to whole pages; Fact knows.)
    cg.assert(Fact::MemoryLimit(50000000));
    cg.assert(Fact::MemorySwap {
        limit: 50000000,
        swap: 50000000,
    });
    cg.assert(Fact::CpuQuota {
        quota: 20000,
        period: 100000,
    });
    cg.assert(Fact::CpuShares(512));
    cg.assert(Fact::Cpus("0"));
    cg.assert(Fact::PidsLimit(3));

    // Enforced: with the init and the exec's shell in the cgroup, at most one more process.
    // (runc's exec needs a `runc init` process in the cgroup first: on cgroup v2 the exec
    // itself fails there, which enforces the limit as well.)
    let (_, err, code) = c.exec("for i in 1 2 3 4; do sleep 1 & done; wait");
    let refused = err.contains("can't fork") || err.contains("Resource temporarily unavailable");
    assert!(
        refused || (!testing_our_shim() && code != 0),
        "forking past pids.max did not fail (exit {code}): {err}"
    );

    // A partial cpu update keeps the other half, as runc does: the period alone, then the
    // quota alone (cgroup v2 keeps both in cpu.max).
    update(&client, &c.0, r#"{"cpu":{"period":50000}}"#).expect("cpu period");
    cg.assert(Fact::CpuQuota {
        quota: 20000,
        period: 50000,
    });
    update(&client, &c.0, r#"{"cpu":{"quota":10000}}"#).expect("cpu quota");
    cg.assert(Fact::CpuQuota {
        quota: 10000,
        period: 50000,
    });

    // Raising memory and swap (v1: memsw must move first), then lowering them (limit first).
    update(
        &client,
        &c.0,
        r#"{"memory":{"limit":200000000,"swap":200000000},"pids":{"limit":100}}"#,
    )
    .expect("raise memory");
    cg.assert(Fact::MemoryLimit(200000000));
    cg.assert(Fact::MemorySwap {
        limit: 200000000,
        swap: 200000000,
    });
    update(
        &client,
        &c.0,
        r#"{"memory":{"limit":30000000,"swap":30000000}}"#,
    )
    .expect("lower memory");
    cg.assert(Fact::MemoryLimit(30000000));
    cg.assert(Fact::MemorySwap {
        limit: 30000000,
        swap: 30000000,
    });

    // Bad input changes nothing and says why.
    let (code, msg) = code_of(update(&client, &c.0, r#"{"memory":{"limit":"x"}}"#));
    assert_ne!(code, Code::OK, "{msg}");
    cg.assert(Fact::MemoryLimit(30000000));
    if testing_our_shim() {
        let (code, msg) = code_of(update(
            &client,
            &c.0,
            r#"{"memory":{"limit":4096,"checkBeforeUpdate":true}}"#,
        ));
        assert_eq!(code, Code::INVALID_ARGUMENT, "{msg}");
        assert!(
            msg.contains("linux.resources.memory.limit") && msg.contains("checkBeforeUpdate"),
            "{msg}"
        );
        let (code, msg) = code_of(update(
            &client,
            &c.0,
            r#"{"rdma":{"mlx5_1":{"hcaHandles":3}}}"#,
        ));
        assert_eq!(code, Code::UNIMPLEMENTED, "{msg}");
        assert!(msg.contains("linux.resources.rdma"), "{msg}");
        cg.assert(Fact::MemoryLimit(30000000));
    }

    // Unlimited memory without a swap value lifts the swap limit too, as runc does.
    update(&client, &c.0, r#"{"memory":{"limit":-1}}"#).expect("unlimited memory");
    cg.assert(Fact::MemoryLimit(-1));
    cg.assert(Fact::MemorySwap {
        limit: -1,
        swap: -1,
    });
}

/// What a container may do with devices: mknod works (as with runc), /dev/null opens, and a
/// node of a device outside the allowlist (/dev/mem's 1:1) does not.
const DEVICE_PROBE: &str = "rm -f /tmp/mem; mknod /tmp/mem c 1 1 && (head -c 1 /tmp/mem >/dev/null 2>&1 \
                            && echo mem-opened || echo mem-denied); echo x > /dev/null && echo null-ok";

/// Update leaves the device allowlist as it was created, as runc does (`runc update` skips
/// devices): CRI sends the spec's own rules back with every UpdateContainerResources, and
/// they are accepted without touching the kernel's allowlist (v2: the same eBPF program stays
/// attached). A request that would change the allowlist is refused by us (UNIMPLEMENTED)
/// where runc ignores it; either way the allowlist does not change.
#[test]
fn update_keeps_the_device_allowlist() {
    let _serial = shared();
    let c = Running::start("devupd", &[], &["sleep", "600"]);
    let client = task_client(&c.0);
    let cg = c.cgroup();
    let before = cg.device_policy();
    assert_eq!(c.exec(DEVICE_PROBE).0, "mem-denied\nnull-ok\n");

    update(
        &client,
        &c.0,
        r#"{"devices":[{"allow":false,"access":"rwm"}],"memory":{"limit":100000000}}"#,
    )
    .expect("update with the spec's own device rules");
    cg.assert(Fact::MemoryLimit(100000000));
    assert_eq!(cg.device_policy(), before, "{}", cgroup::layout_name());
    assert_eq!(c.exec(DEVICE_PROBE).0, "mem-denied\nnull-ok\n");

    let allow_all = r#"{"devices":[{"allow":true,"access":"rwm"}]}"#;
    let r = update(&client, &c.0, allow_all);
    if testing_our_shim() {
        let (code, msg) = code_of(r);
        assert_eq!(code, Code::UNIMPLEMENTED, "{msg}");
        assert!(msg.contains("linux.resources.devices"), "{msg}");
    }
    assert_eq!(cg.device_policy(), before, "{}", cgroup::layout_name());
    assert_eq!(c.exec(DEVICE_PROBE).0, "mem-denied\nnull-ok\n");
}

/// A `ctr events` subscription, live once it returns.
struct Events {
    _sub: Background,
    rx: mpsc::Receiver<String>,
}

impl Events {
    fn subscribe() -> Events {
        env();
        let child = ctr_command(&["events"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ctr events");
        let mut sub = Background(Some(child));
        let stdout = sub.0.as_mut().unwrap().stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let probe = unique_id("probe");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            ctr_ok(&["images", "label", IMAGE, &format!("shimrs.probe={probe}")]);
            let until = Instant::now() + Duration::from_millis(300);
            while let Ok(l) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                if l.contains(&probe) {
                    return Events { _sub: sub, rx };
                }
            }
        }
        panic!("ctr events never showed the probe event");
    }

    /// Task topics of container `id` until `last` arrives (or 15 s pass).
    fn topics_until(&self, id: &str, last: &str) -> Vec<String> {
        let quoted = format!("\"{id}\"");
        let mut topics = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.contains(&quoted) => {
                    // "DATE TIME +0000 UTC NAMESPACE TOPIC JSON"
                    let f: Vec<&str> = l.splitn(7, ' ').collect();
                    if f.len() == 7 && f[4] == namespace() && f[5].starts_with("/tasks/") {
                        topics.push(f[5].to_string());
                        if f[5] == last {
                            break;
                        }
                    }
                }
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        topics
    }
}

#[test]
fn pause_freezes_the_container_and_resume_thaws_it() {
    let _serial = shared();
    let events = Events::subscribe();
    let c = Running::start(
        "pause",
        &[],
        &[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i > /count; sleep 0.02; done",
        ],
    );
    let counter = PathBuf::from(format!("/proc/{}/root/count", c.pid()));
    let count = || -> u64 { read(&counter).parse().unwrap_or(0) };
    assert!(
        wait_until(Duration::from_secs(5), || count() > 2),
        "the counter never ran"
    );

    ctr_ok(&["task", "pause", &c.0]);
    assert_eq!(task_status(&c.0).as_deref(), Some("PAUSED"));
    c.cgroup().assert(Fact::Frozen(true));
    let frozen_at = count();
    thread::sleep(Duration::from_millis(400));
    assert_eq!(count(), frozen_at, "the counter advanced while paused");
    // No new process in a frozen container.
    let out = ctr(&["task", "exec", "--exec-id", "p", &c.0, "true"]);
    assert!(
        !out.status.success(),
        "exec in a paused container succeeded"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("paused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Pausing twice is an error.
    assert!(!ctr(&["task", "pause", &c.0]).status.success());

    ctr_ok(&["task", "resume", &c.0]);
    assert_eq!(task_status(&c.0).as_deref(), Some("RUNNING"));
    c.cgroup().assert(Fact::Frozen(false));
    assert!(
        wait_until(Duration::from_secs(5), || count() > frozen_at + 2),
        "the counter did not resume"
    );

    // SIGKILL reaches a paused container.
    ctr_ok(&["task", "pause", &c.0]);
    ctr_ok(&["task", "kill", "-s", "SIGKILL", &c.0]);
    assert!(
        wait_until(Duration::from_secs(10), || task_status(&c.0).as_deref()
            == Some("STOPPED")),
        "a paused container survived SIGKILL: {:?}",
        task_status(&c.0)
    );
    let topics = events.topics_until(&c.0, "/tasks/exit");
    let want = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/paused",
        "/tasks/resumed",
        "/tasks/paused",
        "/tasks/exit",
    ];
    assert_eq!(topics, want);
}

/// Stats over ttrpc, as containerd asks: `io.containerd.cgroups.v1.Metrics` where the host
/// has v1 controllers (hybrid included), `io.containerd.cgroups.v2.Metrics` on a v2-only host
/// (anything else floods containerd's log with unmarshal errors), with the values of the
/// container's cgroup files as containerd's own cgroups library reports them ("max" is 0 in
/// v1 pids, u64::MAX in v2).
#[test]
fn stats_are_the_metrics_of_the_host_layout() {
    let _serial = shared();
    let c = Running::start(
        "metrics",
        &["--memory-limit", "64000000"],
        &["sh", "-c", "sleep 600 & sleep 600"],
    );
    let cg = c.cgroup();
    assert!(wait_until(Duration::from_secs(5), || cg.pids_current() >= 2));
    let stats = task_client(&c.0)
        .stats(
            Context::default(),
            &StatsRequest {
                id: c.0.clone(),
                ..Default::default()
            },
        )
        .expect("Stats")
        .stats
        .into_option()
        .expect("Stats without metrics");
    let current = cg.pids_current();
    if cgroup::v2_only() {
        assert_eq!(stats.type_url, "io.containerd.cgroups.v2.Metrics");
        let m = MetricsV2::parse_from_bytes(&stats.value).expect("decode v2 metrics");
        assert_eq!(m.pids.current, current, "{m:?}");
        assert_eq!(m.pids.limit, u64::MAX, "pids.max is max: {m:?}");
        assert!(m.cpu.usage_usec > 0, "{m:?}");
        assert!(m.cpu.usage_usec >= m.cpu.user_usec, "{m:?}");
        assert!(m.memory.usage > 0, "{m:?}");
        assert_eq!(m.memory.usage_limit, 64000000, "{m:?}");
        assert_eq!(m.memory.swap_limit, u64::MAX, "{m:?}");
        assert!(m.memory.anon + m.memory.file > 0, "memory.stat: {m:?}");
        assert!(m.memory_events.is_some(), "no memory.events: {m:?}");
        // One entry per huge page size the kernel offers (no limit: u64::MAX).
        let mut sizes: Vec<&str> = m.hugetlb.iter().map(|h| h.pagesize.as_str()).collect();
        sizes.sort();
        let mut want = huge_page_sizes();
        want.sort();
        assert_eq!(sizes, want, "{m:?}");
        assert!(m.hugetlb.iter().all(|h| h.max == u64::MAX), "{m:?}");
    } else {
        assert_eq!(stats.type_url, "io.containerd.cgroups.v1.Metrics");
        let m = MetricsV1::parse_from_bytes(&stats.value).expect("decode v1 metrics");
        assert_eq!(m.pids.current, current, "{m:?}");
        assert_eq!(m.pids.limit, 0, "pids.max is max: {m:?}");
        assert!(m.cpu.usage.total > 0, "{m:?}");
        assert!(m.memory.usage.usage > 0, "{m:?}");
        assert_eq!(m.memory.usage.limit, 64000000, "{m:?}");
    }
}

/// The huge page sizes of this kernel as cgroup files name them ("2MB", "1GB").
fn huge_page_sizes() -> Vec<String> {
    fs::read_dir("/sys/kernel/mm/hugepages")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let kb: u64 = e
                        .file_name()
                        .to_str()?
                        .strip_prefix("hugepages-")?
                        .strip_suffix("kB")?
                        .parse()
                        .ok()?;
                    Some(match kb {
                        kb if kb >= 1 << 20 => format!("{}GB", kb >> 20),
                        kb if kb >= 1 << 10 => format!("{}MB", kb >> 10),
                        kb => format!("{kb}KB"),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn oom_kill_publishes_tasks_oom_before_the_exit() {
    let _serial = shared();
    let events = Events::subscribe();
    let id = unique_id("oom");
    let rt = runtime();
    let out = ctr(&[
        "run",
        "--rm",
        "--runtime",
        &rt,
        "--memory-limit",
        "20000000",
        IMAGE,
        &id,
        "sh",
        "-c",
        // After a second: runc's shim watches for OOM only once the task started, so an OOM
        // in the first milliseconds goes unreported there (ours reports it).
        "sleep 1; x=a; while true; do x=$x$x; done",
    ]);
    assert_eq!(
        exit_code(&out.status),
        137,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let topics = events.topics_until(&id, "/tasks/delete");
    let oom = topics.iter().position(|t| t == "/tasks/oom");
    let exit = topics.iter().position(|t| t == "/tasks/exit");
    assert!(
        oom.is_some() && exit.is_some() && oom < exit,
        "/tasks/oom must come before /tasks/exit: {topics:?}"
    );
    assert_no_leftovers(&id);
}

/// Resources given on `ctr run` land in the container's cgroup files at create.
#[test]
fn run_time_limits_are_in_the_cgroup_files() {
    let _serial = shared();
    let c = Running::start(
        "limits",
        &["--cpus", "0.5", "--memory-limit", "67108864"],
        &["sleep", "600"],
    );
    let cg = c.cgroup();
    cg.assert(Fact::CpuQuota {
        quota: 50000,
        period: 100000,
    });
    cg.assert(Fact::MemoryLimit(67108864));
    // The init really is in that cgroup.
    assert!(cg.procs().contains(&c.pid()), "{:?}", cg.procs());
}

/// The device allowlist is enforced: mknod is allowed (as with runc), but a device that is
/// not on the list cannot be opened, while /dev/null can. Same result under runc.v2.
#[test]
fn devices_outside_the_allowlist_cannot_be_opened() {
    let _serial = shared();
    for rt in [runtime(), "io.containerd.runc.v2".to_owned()] {
        let id = unique_id("devs");
        let script = "mknod /tmp/disk b 7 0 && echo mknod-ok; \
                      head -c 1 /tmp/disk >/dev/null 2>&1 && echo opened || echo denied; \
                      mknod /tmp/mem c 1 1 && (head -c 1 /tmp/mem >/dev/null 2>&1 && echo mem-opened || echo mem-denied); \
                      echo x > /dev/null && echo null-ok";
        let out = ctr(&[
            "run",
            "--rm",
            "--runtime",
            &rt,
            IMAGE,
            &id,
            "sh",
            "-c",
            script,
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{rt}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout, "mknod-ok\ndenied\nmem-denied\nnull-ok\n", "{rt}");
        assert_no_leftovers(&id);
    }
}

/// No process of the container is moved into its cgroup by another process: the init and
/// every exec are born in the container's cgroup v2 directory (clone3 with
/// CLONE_INTO_CGROUP), so none runs a single instruction outside it; on a host with v1
/// hierarchies each moves its own thread into them (writes "0" to the `tasks` files the
/// shim opens for it) before it sets anything up. A write of a pid to cgroup.procs would
/// first wait for an RCU grace period with the kernel's cgroup mutex held.
#[test]
fn processes_enter_their_cgroup_without_being_moved() {
    if !testing_our_shim() {
        eprintln!("skipped for {}: runc moves processes into their cgroup by writing cgroup.procs; this asserts our shim's design", runtime());
        return;
    }
    let _serial = exclusive();
    let v2_only = cgroup::v2_only();
    let unified = v2_only || cgroup::hybrid_unified_root().is_some();
    let mut id = String::new();
    let trace = trace_containerd("clone3,openat", || {
        let c = Running::start("born", &[], &["sleep", "600"]);
        ctr_ok(&["task", "exec", "--exec-id", "born-exec", &c.0, "true"]);
        id = c.0.clone();
    });
    let into: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains("clone3(") && l.contains("CLONE_INTO_CGROUP"))
        .collect();
    let writes_of = |file: &str| -> Vec<&str> {
        trace
            .lines()
            .filter(|l| l.contains(&format!("{id}/{file}\"")) && l.contains("O_WRONLY"))
            .collect()
    };
    let (moves, self_joins) = (writes_of("cgroup.procs"), writes_of("tasks"));
    assert!(
        moves.is_empty(),
        "a process of {id} was moved into its cgroup:\n{}",
        moves.join("\n")
    );
    if unified {
        assert!(
            into.len() >= 2,
            "expected the init and the exec cloned into their cgroup, got:\n{}",
            into.join("\n")
        );
    }
    if v2_only {
        assert!(
            self_joins.is_empty(),
            "tasks files on cgroup v2:\n{}",
            self_joins.join("\n")
        );
    } else {
        // Every v1 hierarchy the test itself is in (hierarchy id 0 is cgroup2's).
        let v1 = std::fs::read_to_string("/proc/self/cgroup")
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("0:"))
            .count();
        assert!(
            self_joins.len() >= 2 * v1,
            "expected the init and the exec to join each of the {v1} v1 hierarchies, got:\n{}",
            self_joins.join("\n")
        );
    }
}

/// The I/O weight fact exists where the kernel has a weight file: cgroup v2 (io.weight, or
/// io.bfq.weight with BFQ), v1 with CFQ or BFQ. This project's hybrid test machine has
/// neither on v1 (no BFQ module): there both runtimes refuse a weight.
fn host_has_io_weight() -> bool {
    cgroup::v2_only()
        || ["blkio.weight", "blkio.bfq.weight"].iter().any(|f| {
            std::path::Path::new("/sys/fs/cgroup/blkio")
                .join(f)
                .exists()
        })
}

/// Limits of a full spec land in the container's cgroup files at create: memory limit,
/// reservation and swap, cpu shares, quota, cpuset, pids, block I/O weight and throttles.
#[test]
fn spec_limits_are_in_the_cgroup_files() {
    let _serial = shared();
    let (major, minor) = cgroup::a_block_device()
        .expect("no block device here for the I/O limits (the cgroup v2 VM has a virtio disk)");
    let weight = host_has_io_weight();
    if !weight {
        eprintln!(
            "{}: no blkio weight file on this kernel, weight not checked",
            cgroup::layout_name()
        );
    }
    let c = FromSpec::start("speclimits", &["sleep", "600"], |spec, _| {
        let r = &mut spec["linux"]["resources"];
        r["memory"] = json!({"limit": 67108864, "reservation": 33554432, "swap": 100663296});
        r["cpu"] =
            json!({"shares": 512, "quota": 30000, "period": 100000, "cpus": "0", "mems": "0"});
        r["pids"] = json!({"limit": 50});
        r["blockIO"] = json!({
            "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}],
            "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}],
        });
        if weight {
            r["blockIO"]["weight"] = json!(300);
        }
    })
    .unwrap_or_else(|e| panic!("create: {e}"));
    let cg = c.c.cgroup();
    cg.assert(Fact::MemoryLimit(67108864));
    cg.assert(Fact::MemoryReservation(33554432));
    cg.assert(Fact::MemorySwap {
        limit: 67108864,
        swap: 100663296,
    });
    cg.assert(Fact::CpuShares(512));
    cg.assert(Fact::CpuQuota {
        quota: 30000,
        period: 100000,
    });
    cg.assert(Fact::Cpus("0"));
    cg.assert(Fact::Mems("0"));
    cg.assert(Fact::PidsLimit(50));
    cg.assert(Fact::IoMax {
        major,
        minor,
        rbps: Some(1048576),
        wbps: None,
        riops: None,
        wiops: Some(100),
    });
    if weight {
        cg.assert(Fact::IoWeight(300));
    }
    assert!(cg.procs().contains(&c.c.pid()), "{:?}", cg.procs());
    let id = c.c.0.clone();
    drop(c);
    assert_no_leftovers(&id);
}

/// hugepageLimits land in the hugetlb files: v2's hugetlb.<size>.max, v1's
/// hugetlb.<size>.limit_in_bytes, and on the hybrid layout (no v1 hugetlb controller) the
/// cgroup2 mount's files, where runc 1.1 refuses them.
#[test]
fn hugetlb_limits_are_in_the_cgroup_files() {
    let _serial = shared();
    let sizes = huge_page_sizes();
    assert!(!sizes.is_empty(), "this kernel offers no huge page size");
    let hybrid = !cgroup::v2_only() && !std::path::Path::new("/sys/fs/cgroup/hugetlb").exists();
    let limits: Vec<(String, u64)> = sizes
        .iter()
        .map(|s| {
            let page = if s.ends_with("GB") {
                1u64 << 30
            } else {
                2 << 20
            };
            (s.clone(), 2 * page)
        })
        .collect();
    let r = FromSpec::start("hugetlb", &["sleep", "600"], |spec, _| {
        spec["linux"]["resources"]["hugepageLimits"] = limits
            .iter()
            .map(|(s, l)| json!({"pageSize": s, "limit": l}))
            .collect();
    });
    if hybrid && !testing_our_shim() {
        let e = r
            .err()
            .expect("runc 1.1 set hugetlb limits on the hybrid layout");
        assert!(e.contains("hugetlb"), "{e}");
        return;
    }
    let c = r.unwrap_or_else(|e| panic!("create: {e}"));
    for (size, limit) in &limits {
        c.c.cgroup().assert(Fact::Hugetlb {
            page_size: size,
            limit: *limit,
        });
    }
}

/// `linux.resources.unified` keys are written to the cgroup2 files of those names; on a host
/// whose cgroup2 hierarchy lacks the controller (v1, hybrid) the container is refused, by
/// runc and by us, naming the problem.
#[test]
fn unified_keys_are_written_to_the_cgroup2_files() {
    let _serial = shared();
    let r = FromSpec::start("unified", &["sleep", "600"], |spec, _| {
        spec["linux"]["resources"]["unified"] =
            json!({"memory.high": "50000000", "pids.max": "42"});
    });
    if !cgroup::v2_only() {
        let e = r
            .err()
            .expect("unified keys accepted without a cgroup2 memory controller");
        assert!(e.contains("unified"), "{e}");
        return;
    }
    let c = r.unwrap_or_else(|e| panic!("create: {e}"));
    let cg = c.c.cgroup();
    assert_eq!(cg.read("memory", "memory.high"), "49999872");
    cg.assert(Fact::PidsLimit(42));
}

/// With a private cgroup namespace the container sees itself at `/` (in /proc/self/cgroup,
/// for its init and its execs) and its own limits at the top of its cgroup mount, while from
/// the host it sits in its cgroup.
#[test]
fn cgroup_namespace_shows_the_container_at_the_root() {
    let _serial = shared();
    let c = FromSpec::start("cgns", &["sleep", "600"], |spec, _| {
        spec["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "cgroup"}));
        spec["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
            "options": ["ro", "nosuid", "noexec", "nodev"]}));
        let r = &mut spec["linux"]["resources"];
        r["memory"] = json!({"limit": 67108864});
        r["pids"] = json!({"limit": 40});
    })
    .unwrap_or_else(|e| panic!("create: {e}"));
    let cg = c.c.cgroup();
    assert_eq!(
        cgroup::process_cgroup(c.c.pid(), "memory"),
        cg.path(),
        "the init's cgroup seen from the host"
    );
    // The files of those facts at the root of the container's own view.
    let inside = Cgroup::at("/");
    let mem = inside.files_of(&Fact::MemoryLimit(0)).remove(0);
    let pids = inside.files_of(&Fact::PidsLimit(0)).remove(0);
    let probe = format!(
        "cat /proc/1/cgroup; echo --; cat /proc/self/cgroup; echo --; cat {} {}",
        mem.display(),
        pids.display()
    );
    let (out, err, code) = c.c.exec(&probe);
    assert_eq!(code, 0, "{err}");
    let parts: Vec<&str> = out.split("--\n").collect();
    assert_eq!(parts.len(), 3, "{out}");
    for (who, lines) in [("init", parts[0]), ("exec", parts[1])] {
        assert!(!lines.trim().is_empty(), "{who}: {out}");
        for l in lines.lines() {
            assert!(
                l.ends_with(":/"),
                "{who} does not see itself at the root: {l:?} in\n{out}"
            );
        }
    }
    let values: Vec<&str> = parts[2].lines().collect();
    assert_eq!(
        values,
        ["67108864", "40"],
        "{}: {out}",
        cgroup::layout_name()
    );
}

/// Every exec runs in the container's cgroup, as the kernel reports it for the exec itself.
#[test]
fn execs_land_in_the_container_cgroup() {
    let _serial = shared();
    let c = Running::start("execcg", &[], &["sleep", "600"]);
    let want = c.cgroup().path();
    let (out, err, code) = c.exec("cat /proc/self/cgroup");
    assert_eq!(code, 0, "{err}");
    for controller in ["memory", "pids", "cpu"] {
        assert_eq!(
            cgroup::parse_proc_cgroup(&out, controller).as_deref(),
            Some(want.as_str()),
            "{controller}: {out}"
        );
    }
}

/// A cgroupsPath several levels below the namespace: every ancestor delegates the controllers
/// the limits need (cgroup v2 `cgroup.subtree_control`), the limits land, and once the
/// container is gone its ancestors are empty (kubelet removes them, as the test does).
#[test]
fn nested_cgroup_paths_get_their_controllers() {
    let _serial = shared();
    let nest = unique_id("nest");
    let mut path = String::new();
    let c = FromSpec::start("nested", &["sleep", "600"], |spec, id| {
        path = format!("/{}/{nest}/a/b/{id}", namespace());
        spec["linux"]["cgroupsPath"] = json!(path);
        let r = &mut spec["linux"]["resources"];
        r["memory"] = json!({"limit": 67108864});
        r["pids"] = json!({"limit": 30});
        r["cpu"] = json!({"quota": 25000, "period": 100000});
    });
    // Whatever happens, the ancestors go (deepest first) once the container is gone.
    struct Ancestors(Vec<Cgroup>);
    impl Drop for Ancestors {
        fn drop(&mut self) {
            for a in &self.0 {
                let _ = a.remove();
            }
        }
    }
    let ns = namespace();
    let ancestors = Ancestors(
        [
            format!("/{ns}/{nest}/a/b"),
            format!("/{ns}/{nest}/a"),
            format!("/{ns}/{nest}"),
        ]
        .iter()
        .map(|p| Cgroup::at(p))
        .collect(),
    );
    let c = c.unwrap_or_else(|e| panic!("create: {e}"));
    let cg = Cgroup::at(&path);
    cg.assert(Fact::MemoryLimit(67108864));
    cg.assert(Fact::PidsLimit(30));
    cg.assert(Fact::CpuQuota {
        quota: 25000,
        period: 100000,
    });
    if cgroup::v2_only() {
        for a in ancestors.0.iter().chain([&Cgroup::at(&format!("/{ns}"))]) {
            let control = a.read("memory", "cgroup.subtree_control");
            for controller in ["cpu", "memory", "pids"] {
                assert!(
                    control.split_whitespace().any(|c| c == controller),
                    "{}: {controller} not delegated: {control:?}",
                    a.path()
                );
            }
        }
    }
    let id = c.c.0.clone();
    drop(c);
    assert_no_leftovers(&id);
    assert!(cg.existing_dirs().is_empty(), "{:?}", cg.existing_dirs());
    for a in &ancestors.0 {
        a.remove()
            .unwrap_or_else(|e| panic!("ancestor {} not empty: {e}", a.path()));
    }
}
