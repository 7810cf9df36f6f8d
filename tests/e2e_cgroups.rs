//! cgroups of a running container: Update (over ttrpc: ctr 1.6 has no update command),
//! Pause/Resume, Stats (`ctr task metrics`) and OOM events. Every test also passes under
//! `SHIM_RS_RUNTIME=io.containerd.runc.v2`, which is how the expectations were checked.

mod common;

use common::*;
use shim::protos::{
    api::{Empty, UpdateTaskRequest},
    protobuf::{well_known_types::any::Any, MessageField},
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
        ctr_list(&["task", "ls"])
            .lines()
            .skip(1)
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.first() == Some(&self.0.as_str())).then(|| f[1].parse().ok())?
            })
            .expect("task pid")
    }

    /// The container's directory in the v1 hierarchy of `controller` (ctr's cgroupsPath is
    /// /<namespace>/<id>).
    fn cgroup(&self, controller: &str) -> PathBuf {
        PathBuf::from("/sys/fs/cgroup")
            .join(controller)
            .join(namespace())
            .join(&self.0)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        remove_container(&self.0);
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
    let mem = c.cgroup("memory");

    update(
        &client,
        &c.0,
        r#"{"memory":{"limit":50000000,"swap":50000000},
            "cpu":{"quota":20000,"period":100000,"shares":512},"pids":{"limit":3}}"#,
    )
    .expect("update");
    // The kernel rounds memory limits down to whole pages.
    assert_eq!(read(&mem.join("memory.limit_in_bytes")), "49999872");
    assert_eq!(read(&mem.join("memory.memsw.limit_in_bytes")), "49999872");
    assert_eq!(read(&c.cgroup("cpu").join("cpu.cfs_quota_us")), "20000");
    assert_eq!(read(&c.cgroup("cpu").join("cpu.shares")), "512");
    assert_eq!(read(&c.cgroup("pids").join("pids.max")), "3");

    // Enforced: with the init and the exec's shell in the cgroup, at most one more process.
    let out = ctr(&[
        "task",
        "exec",
        "--exec-id",
        "forks",
        &c.0,
        "sh",
        "-c",
        "for i in 1 2 3 4; do sleep 1 & done; wait",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("can't fork") || err.contains("Resource temporarily unavailable"),
        "forking past pids.max did not fail: {err}"
    );

    // Raising memory and swap (memsw must move first), then lowering them (limit first).
    update(
        &client,
        &c.0,
        r#"{"memory":{"limit":200000000,"swap":200000000},"pids":{"limit":100}}"#,
    )
    .expect("raise memory");
    assert_eq!(read(&mem.join("memory.limit_in_bytes")), "199999488");
    assert_eq!(read(&mem.join("memory.memsw.limit_in_bytes")), "199999488");
    update(
        &client,
        &c.0,
        r#"{"memory":{"limit":30000000,"swap":30000000}}"#,
    )
    .expect("lower memory");
    assert_eq!(read(&mem.join("memory.limit_in_bytes")), "29999104");
    assert_eq!(read(&mem.join("memory.memsw.limit_in_bytes")), "29999104");

    // Bad input changes nothing and says why.
    let (code, msg) = code_of(update(&client, &c.0, r#"{"memory":{"limit":"x"}}"#));
    assert_ne!(code, Code::OK, "{msg}");
    assert_eq!(read(&mem.join("memory.limit_in_bytes")), "29999104");
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
        assert_eq!(read(&mem.join("memory.limit_in_bytes")), "29999104");
    }
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
    assert_eq!(read(&c.cgroup("freezer").join("freezer.state")), "FROZEN");
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

#[test]
fn metrics_report_memory_and_pids() {
    let _serial = shared();
    let c = Running::start(
        "metrics",
        &["--memory-limit", "64000000"],
        &["sh", "-c", "sleep 600 & sleep 600"],
    );
    let pids = c.cgroup("pids").join("pids.current");
    assert!(wait_until(Duration::from_secs(5), || read(&pids)
        .parse::<u32>()
        .unwrap_or(0)
        >= 2));
    let out = ctr_ok(&["task", "metrics", &c.0]);
    let value = |name: &str| -> String {
        out.lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(name)).then(|| f.collect::<Vec<_>>().join(" "))
            })
            .unwrap_or_else(|| panic!("no {name} in ctr task metrics:\n{out}"))
    };
    let num = |name: &str| -> u64 { value(name).parse().unwrap_or(0) };
    assert_eq!(num("pids.current").to_string(), read(&pids), "{out}");
    assert!(num("memory.usage_in_bytes") > 0, "{out}");
    assert_eq!(num("memory.limit_in_bytes"), 64000000, "{out}");
    assert!(num("cpuacct.usage") > 0, "{out}");
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
        "x=a; while true; do x=$x$x; done",
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
    assert_eq!(read(&c.cgroup("cpu").join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(&c.cgroup("cpu").join("cpu.cfs_period_us")), "100000");
    assert_eq!(
        read(&c.cgroup("memory").join("memory.limit_in_bytes")),
        "67108864"
    );
    // The init really is in that cgroup.
    let procs = read(&c.cgroup("memory").join("cgroup.procs"));
    assert!(procs.lines().any(|p| p == c.pid().to_string()), "{procs}");
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

/// On a cgroup v2-only host the init and every exec are born in the container's cgroup
/// (clone3 with CLONE_INTO_CGROUP): none of its processes is ever moved there, so none runs
/// a single instruction outside it. On a host with v1 hierarchies the kernel cannot do that
/// (CLONE_INTO_CGROUP is cgroup2's), and the shim moves them (cgroup.procs) before they exec.
#[test]
fn processes_are_born_in_their_cgroup_on_cgroup_v2() {
    if !testing_our_shim() {
        eprintln!("skipped for {}: runc moves processes into their cgroup by writing cgroup.procs; this asserts our shim's design", runtime());
        return;
    }
    let _serial = exclusive();
    let unified = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
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
    let moves: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains(&format!("{id}/cgroup.procs")) && l.contains("O_WRONLY"))
        .collect();
    if unified {
        assert!(
            into.len() >= 2,
            "expected the init and the exec cloned into their cgroup, got:\n{}",
            into.join("\n")
        );
        assert!(
            moves.is_empty(),
            "a process of {id} was moved into its cgroup:\n{}",
            moves.join("\n")
        );
    } else {
        assert!(
            into.is_empty(),
            "CLONE_INTO_CGROUP on a host with v1 hierarchies:\n{}",
            into.join("\n")
        );
        assert!(
            !moves.is_empty(),
            "no cgroup.procs write for {id}: how did its processes get into their cgroup?"
        );
    }
}
