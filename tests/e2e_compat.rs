//! Behaviours where containerd's client integration suite found us different from
//! io.containerd.runc.v2 + runc, each checked under both runtimes with one assertion.
//!
//! Where `ctr` cannot reach the behaviour (a task that is created but not started, runtime
//! options on Create, ResizePty, an exec request whose terminal flag differs from its process
//! spec), the test calls containerd's own gRPC API as containerd's Go client does: containerd
//! then drives the shim exactly as in production.

#[path = "common/api.rs"]
mod api;
mod common;

use std::{fs, os::unix::fs::OpenOptionsExt, path::Path, time::Duration};

use api::Api;
use common::*;
use containerd_client::{
    services::v1::{ExecProcessRequest, ResizePtyRequest},
    tonic::Request,
    with_namespace,
};
use shim::protos::{protobuf::Message, shim::oci::Options as RuncOptions};

const RUNTIMES: [&str; 2] = ["io.containerd.runc.v2", RS_RUNTIME];

/// The shared client, with this suite's panicking shorthands.
trait ApiExt {
    fn create_task_or_panic(&self, id: &str, options: Option<prost_types::Any>) -> u32;
    fn start_or_panic(&self, id: &str, exec_id: &str);
}

impl ApiExt for Api {
    /// Tasks.Create for container `id` with runtime options; returns the init's pid.
    fn create_task_or_panic(&self, id: &str, options: Option<prost_types::Any>) -> u32 {
        self.create_task_with(id, "", options)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn start_or_panic(&self, id: &str, exec_id: &str) {
        self.start(id, exec_id).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A container made with `ctr c create` (no task), removed with its task when dropped.
struct Container<'a> {
    api: &'a Api,
    id: String,
}

impl<'a> Container<'a> {
    fn create(api: &'a Api, prefix: &str, runtime: &str, args: &[&str]) -> Container<'a> {
        let id = unique_id(prefix);
        let mut a = vec!["c", "create", "--runtime", runtime, IMAGE, &id];
        a.extend_from_slice(args);
        ctr_ok(&a);
        Container { api, id }
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        self.api.kill_and_delete(&self.id);
        remove_container(&self.id);
    }
}

/// The cgroup paths of `pid` (/proc/PID/cgroup), one per hierarchy line.
fn cgroup_lines(pid: u32) -> Vec<String> {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/cgroup: {e}"))
        .lines()
        .map(str::to_owned)
        .collect()
}

fn field(pid: u32, file: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/{file}: {e}"))
        .trim()
        .to_owned()
}

fn ppid(pid: u32) -> u32 {
    field(pid, "stat")
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// A client that reads a task's cgroup right after Create finds the init in it.
#[test]
fn create_answers_with_the_init_in_its_cgroup() {
    let _serial = shared();
    let api = Api::connect();
    for rt in RUNTIMES {
        let c = Container::create(&api, "cgjoin", rt, &["sleep", "600"]);
        let pid = api.create_task_or_panic(&c.id, None);
        let expected = format!("/{}/{}", namespace(), c.id);
        let lines = cgroup_lines(pid);
        let outside: Vec<&String> = lines.iter().filter(|l| !l.ends_with(&expected)).collect();
        assert!(
            outside.is_empty(),
            "{rt}: right after Create, the init {pid} is outside {expected} in:\n{}",
            outside
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// The shim runs at containerd's oom_score_adj + 1, so the kernel picks it before containerd;
/// a container whose spec sets no oomScoreAdj inherits that score.
#[test]
fn the_shim_and_its_containers_get_containerds_oom_score_plus_one() {
    let _serial = shared();
    let containerd = env().containerd_pid as u32;
    let expected = (field(containerd, "oom_score_adj").parse::<i32>().unwrap() + 1).min(1000);
    for rt in RUNTIMES {
        let c = Detached::start("oomadj", rt, &[], &["sleep", "600"]);
        let init = task_pid(&c.0) as u32;
        // The init and its ancestors up to (not including) pid 1: the shim's processes.
        let mut chain = vec![init];
        while let Some(&last) = chain.last() {
            let parent = ppid(last);
            if parent <= 1 || parent == containerd {
                break;
            }
            chain.push(parent);
        }
        assert!(chain.len() >= 2, "{rt}: no shim process above {init}");
        let scores: Vec<(u32, String)> = chain
            .iter()
            .map(|&p| (p, field(p, "oom_score_adj")))
            .collect();
        assert!(
            scores.iter().all(|(_, s)| *s == expected.to_string()),
            "{rt}: expected oom_score_adj {expected} for the container and its shim, got (pid, score) {scores:?}"
        );
    }
}

/// ResizePty on a task without a terminal is accepted and does nothing.
#[test]
fn resize_pty_without_a_terminal_is_a_no_op() {
    let _serial = shared();
    let api = Api::connect();
    for rt in RUNTIMES {
        let c = Container::create(&api, "resize", rt, &["sleep", "600"]);
        api.create_task_or_panic(&c.id, None);
        api.start_or_panic(&c.id, "");
        let r = api.rt.block_on(api.tasks().resize_pty(with_namespace!(
            ResizePtyRequest {
                container_id: c.id.clone(),
                exec_id: String::new(),
                width: 100,
                height: 40,
            },
            namespace()
        )));
        assert!(r.is_ok(), "{rt}: ResizePty without a terminal: {r:?}");
    }
}

/// An exec request with terminal = true gets a terminal even though its process spec says
/// terminal: false: the request wins.
#[test]
fn an_exec_requests_terminal_flag_wins_over_its_process_spec() {
    let _serial = shared();
    let api = Api::connect();
    for rt in RUNTIMES {
        let c = Container::create(&api, "exectty", rt, &["sleep", "600"]);
        api.create_task_or_panic(&c.id, None);
        api.start_or_panic(&c.id, "");
        let spec = serde_json::json!({
            "args": ["sh", "-c", "if [ -t 0 ]; then echo tty > /exec-tty; else echo none > /exec-tty; fi"],
            "cwd": "/",
            "env": ["PATH=/bin:/usr/bin"],
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
        });
        // The console is copied to a stdout fifo (containerd's runc shim needs one).
        let fifo = env().workdir.join(format!("{}-tty.out", c.id));
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let _reader = fs::File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let r = api.rt.block_on(api.tasks().exec(with_namespace!(
            ExecProcessRequest {
                container_id: c.id.clone(),
                exec_id: "tty".into(),
                terminal: true,
                stdout: fifo.to_string_lossy().into_owned(),
                spec: Some(prost_types::Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                    value: serde_json::to_vec(&spec).unwrap(),
                }),
                ..Default::default()
            },
            namespace()
        )));
        assert!(r.is_ok(), "{rt}: Exec with terminal = true: {r:?}");
        api.start_or_panic(&c.id, "tty");
        let mut seen = String::new();
        wait_until(Duration::from_secs(10), || {
            seen = ctr(&[
                "task",
                "exec",
                "--exec-id",
                "read",
                &c.id,
                "cat",
                "/exec-tty",
            ])
            .stdout
            .iter()
            .map(|&b| b as char)
            .collect();
            !seen.is_empty()
        });
        assert_eq!(
            seen.trim(),
            "tty",
            "{rt}: the exec's stdin is not a terminal"
        );
    }
}

/// The `shim_cgroup` runtime option puts the shim into that existing cgroup (and with it the
/// processes it starts) and creates no cgroup anywhere.
#[test]
fn shim_cgroup_joins_an_existing_cgroup_and_creates_none() {
    let _serial = shared();
    let api = Api::connect();
    let unified_only = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    for rt in RUNTIMES {
        let name = format!("shimrs-compat-{}", unique_id("shimcg"));
        // Made in the hierarchies a shim joins: every v1 one, or the cgroup2 root on v2.
        let roots: Vec<std::path::PathBuf> = if unified_only {
            vec!["/sys/fs/cgroup".into()]
        } else {
            fs::read_dir("/sys/fs/cgroup")
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n != "unified"))
                .filter(|p| p.join("cgroup.procs").exists())
                .collect()
        };
        for r in &roots {
            let dir = r.join(&name);
            fs::create_dir(&dir).unwrap();
            // A v1 cpuset cgroup takes no process until its cpus and mems are set.
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(v) = fs::read_to_string(r.join(f)) {
                    fs::write(dir.join(f), v.trim()).unwrap();
                }
            }
        }
        let options = RuncOptions {
            shim_cgroup: format!("/{name}"),
            ..Default::default()
        };
        let any = prost_types::Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: options.write_to_bytes().unwrap(),
        };
        let c = Container::create(&api, "shimcg", rt, &["sleep", "600"]);
        let init = api.create_task_or_panic(&c.id, Some(any));
        let shim = ppid(init);
        let lines = cgroup_lines(shim);
        let expected = format!("/{name}");
        for line in &lines {
            let unified_line = line.starts_with("0::");
            if unified_line == unified_only {
                assert!(
                    line.ends_with(&expected),
                    "{rt}: shim {shim} not in {expected}: {line}"
                );
            }
        }
        if !unified_only {
            assert!(
                !Path::new("/sys/fs/cgroup/unified").join(&name).exists(),
                "{rt}: created {name} in the cgroup2 hierarchy"
            );
        }
        drop(c);
        // The shim exits after its last container; then the cgroups can go.
        for r in &roots {
            let dir = r.join(&name);
            let gone = wait_until(Duration::from_secs(10), || {
                fs::remove_dir(&dir).is_ok() || !dir.exists()
            });
            assert!(gone, "{rt}: {} still busy", dir.display());
        }
    }
}

/// A process without HOME in its environment gets its user's home from the container's
/// /etc/passwd ("/" when the user has none there); HOME given in the spec stays.
#[test]
fn home_comes_from_the_containers_passwd() {
    let _serial = shared();
    for rt in RUNTIMES {
        let run_home = |extra: &[&str]| {
            let id = unique_id("home");
            let mut a = vec!["run", "--rm", "--runtime", rt];
            a.extend_from_slice(extra);
            a.extend_from_slice(&[IMAGE, &id, "sh", "-c", "echo $HOME"]);
            ctr_ok(&a).trim().to_owned()
        };
        assert_eq!(run_home(&[]), "/root", "{rt}: root");
        assert_eq!(
            run_home(&["--env", "HOME=/custom"]),
            "/custom",
            "{rt}: HOME set"
        );
        // ctr 1.6's run has no --user; its exec has.
        let c = Detached::start("homeexec", rt, &[], &["sleep", "600"]);
        let exec_home = |user: &str| {
            let out = ctr_ok(&[
                "task",
                "exec",
                "--exec-id",
                &unique_id("h"),
                "--user",
                user,
                &c.0,
                "sh",
                "-c",
                "echo $HOME",
            ]);
            out.trim().to_owned()
        };
        assert_eq!(exec_home("65534"), "/nonexistent", "{rt}: exec as nobody");
        assert_eq!(
            exec_home("4242"),
            "/",
            "{rt}: exec as a uid without a passwd entry"
        );
        let out = ctr_ok(&[
            "task",
            "exec",
            "--exec-id",
            "h",
            &c.0,
            "sh",
            "-c",
            "echo $HOME",
        ]);
        assert_eq!(out.trim(), "/root", "{rt}: exec");
    }
}
