//! End-to-end lifecycle tests: containerd -> shim -> container, through `ctr`.
//!
//! Needs root, containerd, ctr, busybox-static and strace (see tests/harness/NOTES.md).
//! The runtime under test is `SHIM_RS_RUNTIME` (default io.containerd.rs.v1);
//! `SHIM_RS_RUNTIME=io.containerd.runc.v2` validates the harness against runc.

mod common;

use common::*;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// `ctr run --rm` then the leftovers check; returns (stdout, stderr, code).
fn run_clean(id: &str, args: &[&str]) -> (String, String, i32) {
    let (out, err, code) = run(&runtime(), id, args);
    let left = leftovers_settled(id);
    assert!(
        left.is_empty(),
        "leftovers of {id} after {SETTLE:?}:\n  {}\n(the run: exit {code}, stdout {out:?}, stderr {err:?})",
        left.join("\n  ")
    );
    (out, err, code)
}

#[test]
fn echo_hello_prints_exactly_hello() {
    let _serial = shared();
    let id = unique_id("echo");
    let (out, err, code) = run_clean(&id, &["echo", "hello"]);
    assert_eq!(code, 0, "exit code; stderr: {err}");
    assert_eq!(out, "hello\n", "stdout; stderr: {err}");
}

#[test]
fn exit_code_42_propagates() {
    let _serial = shared();
    let id = unique_id("exit42");
    let (_, err, code) = run_clean(&id, &["sh", "-c", "exit 42"]);
    assert_eq!(code, 42, "stderr: {err}");
    // ctr exits non-zero on its own errors too: it must not have complained.
    assert_eq!(err, "", "stderr");
}

#[test]
fn false_exits_1() {
    let _serial = shared();
    let id = unique_id("false");
    let (_, err, code) = run_clean(&id, &["false"]);
    assert_eq!(code, 1, "stderr: {err}");
    // ctr's own failures also exit 1: the container must have run, silently.
    assert_eq!(err, "", "stderr");
}

/// A container whose init dies of SIGKILL exits 137. The container's own
/// `kill -9 $$` cannot do it: pid 1 of a pid namespace is immune to signals
/// it has no handler for when they come from inside the namespace (see
/// `pid1_cannot_sigkill_itself`). A kernel-sent SIGKILL is delivered though:
/// the hard RLIMIT_CPU limit (`ulimit -t 1` sets soft = hard) kills the busy
/// loop after one second of CPU.
#[test]
fn self_inflicted_sigkill_exits_137() {
    let _serial = shared();
    let id = unique_id("selfkill");
    let (_, err, code) = run_clean(&id, &["sh", "-c", "ulimit -t 1; while :; do :; done"]);
    assert_eq!(code, 137, "stderr: {err}");
    assert_eq!(err, "", "stderr");
}

/// SIGKILL from outside (`ctr task kill`) during `ctr run --rm`: ctr exits 137.
#[test]
fn sigkill_from_outside_exits_137() {
    let _serial = shared();
    let id = unique_id("extkill");
    let rt = runtime();
    let child = ctr_command(&["run", "--rm", "--runtime", &rt, IMAGE, &id, "sleep", "300"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ctr run");
    let mut bg = Background(Some(child));
    let mut exited = None;
    let running = wait_until(Duration::from_secs(20), || {
        if let Ok(Some(st)) = bg.0.as_mut().unwrap().try_wait() {
            exited = Some(st);
            return true;
        }
        task_status(&id).as_deref() == Some("RUNNING")
    });
    if let Some(st) = exited {
        let (out, _) = wait_output(bg.take().unwrap(), Duration::from_secs(5));
        panic!(
            "ctr run exited early ({st}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        running,
        "task never RUNNING: {:?}\n{}",
        task_status(&id),
        containerd_log_tail(20)
    );
    ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    let (out, timed_out) = wait_output(bg.take().unwrap(), Duration::from_secs(30));
    assert!(!timed_out, "ctr run did not return after SIGKILL");
    assert_eq!(
        exit_code(&out.status),
        137,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_leftovers(&id);
}

/// pid 1 in its own pid namespace: `kill -9 $$` from inside is ignored.
#[test]
fn pid1_cannot_sigkill_itself() {
    let _serial = shared();
    let id = unique_id("pid1kill");
    let (out, err, code) = run_clean(&id, &["sh", "-c", "echo $$; kill -9 $$; echo survived"]);
    assert_eq!((out.as_str(), code), ("1\nsurvived\n", 0), "stderr: {err}");
}

#[test]
fn missing_binary_fails_naming_it() {
    let _serial = shared();
    let id = unique_id("missing");
    let (out, err, code) = run_clean(&id, &["/nonexistent"]);
    assert_ne!(code, 0, "ctr run of /nonexistent succeeded; stdout: {out}");
    assert!(
        err.contains("/nonexistent"),
        "error does not name the binary: {err}"
    );
}

#[test]
fn stdout_and_stderr_both_arrive() {
    let _serial = shared();
    let id = unique_id("stdio");
    let (out, err, code) = run_clean(&id, &["sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
}

#[test]
fn larger_output_is_complete() {
    let _serial = shared();
    // 1 MiB through the stdout fifo, checksummed inside and outside.
    let id = unique_id("bigout");
    let (out, err, code) = run_clean(&id, &["sh", "-c", "head -c 1048576 /dev/zero | tr '\\0' x"]);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.bytes().all(|b| b == b'x'), "stdout corrupted");
    if out.len() != 1 << 20 && !testing_our_shim() {
        // The stock runc.v2 shim + ctr 1.6 lose the tail of stdout now and then
        // under CPU load (reproduced by hand: 2 of 30 runs with both cores busy).
        // Our shim must not; a stock runtime only gets a warning here.
        eprintln!(
            "WARNING: {} truncated stdout to {} of {} bytes",
            runtime(),
            out.len(),
            1 << 20
        );
        return;
    }
    assert_eq!(out.len(), 1 << 20, "stdout length");
}

#[test]
fn container_is_pid_1() {
    let _serial = shared();
    let id = unique_id("pidns");
    let (out, err, code) = run_clean(&id, &["sh", "-c", "echo $$"]);
    assert_eq!((out.as_str(), code), ("1\n", 0), "stderr: {err}");
}

#[test]
fn namespaces_differ_from_host() {
    let _serial = shared();
    let id = unique_id("ns");
    let kinds = ["pid", "mnt", "uts", "ipc", "net"];
    let script: String = kinds
        .iter()
        .map(|k| format!("readlink /proc/self/ns/{k}; "))
        .collect();
    let (out, err, code) = run_clean(&id, &["sh", "-c", &format!("{script}hostname")]);
    assert_eq!(code, 0, "stderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), kinds.len() + 1, "output: {out}");
    for (k, inside) in kinds.iter().zip(&lines) {
        let host = fs::read_link(format!("/proc/self/ns/{k}")).unwrap();
        assert!(inside.starts_with(&format!("{k}:[")), "{k}: {inside}");
        assert_ne!(
            *inside,
            host.to_string_lossy(),
            "container shares the host's {k} namespace"
        );
    }
    assert!(!lines[kinds.len()].is_empty(), "empty hostname");
}

#[test]
fn rootfs_is_the_image() {
    let _serial = shared();
    let id = unique_id("rootfs");
    let (out, err, code) = run_clean(
        &id,
        &[
            "sh",
            "-c",
            "cat /etc/passwd; test -e /etc/os-release && echo host-visible || echo private",
        ],
    );
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(
        out,
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nprivate\n"
    );
}

#[test]
fn detached_run_kill_delete() {
    let _serial = shared();
    let id = unique_id("detach");
    let rt = runtime();
    ctr_ok(&["run", "-d", "--runtime", &rt, IMAGE, &id, "sleep", "300"]);
    assert_eq!(
        task_status(&id).as_deref(),
        Some("RUNNING"),
        "{}",
        containerd_log_tail(20)
    );
    ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    let stopped = wait_until(Duration::from_secs(10), || {
        task_status(&id).as_deref() == Some("STOPPED")
    });
    assert!(
        stopped,
        "task not STOPPED after SIGKILL: {:?}",
        task_status(&id)
    );
    let del = ctr(&["task", "delete", &id]);
    let del_err = String::from_utf8_lossy(&del.stderr);
    assert!(del.status.success(), "task delete: {del_err}");
    assert!(
        del_err.contains("137"),
        "task delete should report exit code 137: {del_err:?}"
    );
    assert_eq!(task_status(&id), None);
    ctr_ok(&["container", "rm", &id]);
    assert_no_leftovers(&id);
}

#[test]
fn no_leftovers_after_run_rm() {
    let _serial = shared();
    let id = unique_id("clean");
    let (_, err, code) = run(&runtime(), &id, &["true"]);
    assert_eq!(code, 0, "stderr: {err}");
    assert_no_leftovers(&id);
}

/// `ctr events` during one `ctr run --rm`: the container's task events come in
/// lifecycle order, once each, and /tasks/exit carries the exit status.
#[test]
fn events_in_lifecycle_order() {
    let _serial = shared();
    let id = unique_id("events");
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
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // Wait until the subscription is live: our own probe event comes through.
    let probe = format!("shimrs.probe={}", unique_id("p"));
    let mut live = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    'probe: while Instant::now() < deadline {
        ctr_ok(&["images", "label", IMAGE, &probe]);
        let until = Instant::now() + Duration::from_millis(300);
        while let Ok(l) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            if l.contains(&probe[probe.find('=').unwrap() + 1..]) {
                live = true;
                break 'probe;
            }
        }
    }
    assert!(live, "ctr events never showed the probe event");

    let (_, err, code) = run(&runtime(), &id, &["sh", "-c", "exit 3"]);
    assert_eq!(code, 3, "stderr: {err}");

    // Collect this container's events until /containers/delete (bounded).
    let quoted = format!("\"{id}\"");
    let mut mine: Vec<(String, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) if l.contains(&quoted) => {
                // "DATE TIME +0000 UTC NAMESPACE TOPIC JSON"
                let f: Vec<&str> = l.splitn(7, ' ').collect();
                if f.len() == 7 && f[4] == namespace() {
                    mine.push((f[5].to_string(), f[6].to_string()));
                    if f[5] == "/containers/delete" {
                        break;
                    }
                }
            }
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    sub.stop(libc::SIGKILL, Duration::from_secs(5));
    let _ = reader.join();

    let topics: Vec<&str> = mine.iter().map(|(t, _)| t.as_str()).collect();
    let want = [
        "/containers/create",
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
        "/containers/delete",
    ];
    let positions: Vec<usize> = want
        .iter()
        .map(|w| {
            let hits: Vec<usize> = topics
                .iter()
                .enumerate()
                .filter(|(_, t)| *t == w)
                .map(|(i, _)| i)
                .collect();
            assert_eq!(
                hits.len(),
                1,
                "{w} seen {} times; events: {topics:?}",
                hits.len()
            );
            hits[0]
        })
        .collect();
    assert!(
        positions.windows(2).all(|p| p[0] < p[1]),
        "events out of order: {topics:?}"
    );
    let exit = &mine.iter().find(|(t, _)| t == "/tasks/exit").unwrap().1;
    assert!(
        exit.contains("\"exit_status\":3"),
        "/tasks/exit without exit_status 3: {exit}"
    );
    assert_no_leftovers(&id);
}

/// Parses strace -f output: (path, whole line) of every execve.
fn execves(trace: &str) -> Vec<(String, String)> {
    trace
        .lines()
        .filter_map(|l| {
            let i = l.find("execve(\"")? + 8;
            let j = l[i..].find('"')? + i;
            Some((l[i..j].to_string(), l.to_string()))
        })
        .collect()
}

/// Runs one container while strace follows every execve of our containerd and
/// its descendants (shims, runtimes, containers).
#[test]
fn no_external_runtime_is_executed() {
    let _serial = exclusive();
    let e = env();
    let id = unique_id("strace");
    let mut result = (String::new(), String::new(), -1);
    let trace = trace_containerd("execve", || {
        result = run(&runtime(), &id, &["echo", "traced"]);
    });
    let (out, err, code) = result;
    assert_eq!((out.as_str(), code), ("traced\n", 0), "stderr: {err}");
    let execs = execves(&trace);
    let base = |p: &str| {
        Path::new(p)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let quoted = format!("\"{id}\"");
    let shim_name = shim_binary_name(&runtime());

    // The shim of the runtime under test was executed for this container.
    let shim_runs: Vec<&(String, String)> = execs
        .iter()
        .filter(|(p, l)| base(p) == shim_name && l.contains(&quoted))
        .collect();
    assert!(
        !shim_runs.is_empty(),
        "no execve of {shim_name} for {id} in the trace; execve paths: {:?}",
        execs.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>()
    );

    let runtimes = [
        "runc",
        "crun",
        "youki",
        "runsc",
        "kata-runtime",
        "containerd-shim",
        "containerd-shim-runc-v1",
        "containerd-shim-runc-v2",
    ];
    let external: Vec<&str> = execs
        .iter()
        .filter(|(p, _)| runtimes.contains(&base(p).as_str()))
        .map(|(_, l)| l.as_str())
        .collect();
    if testing_our_shim() {
        for (p, l) in &shim_runs {
            assert!(
                Path::new(p).starts_with(&e.bindir),
                "containerd ran a shim outside our BINDIR {}: {l}",
                e.bindir.display()
            );
        }
        assert!(
            external.is_empty(),
            "external runtime executed:\n{}",
            external.join("\n")
        );
    } else {
        // Stock runtime: proves the capture sees runtimes (runc create for this id).
        assert!(
            execs
                .iter()
                .any(|(p, l)| base(p) == "runc" && l.contains(&quoted)),
            "expected runc execve for {id} with {}; execve paths: {:?}",
            runtime(),
            execs.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>()
        );
    }
    assert_no_leftovers(&id);
}
