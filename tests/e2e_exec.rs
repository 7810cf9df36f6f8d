//! Exec processes through `ctr task exec`: namespaces, process settings, exit codes,
//! events and their order, and many at once.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

fn exec(id: &str, exec_id: &str, extra: &[&str], args: &[&str]) -> (String, String, i32) {
    let mut a = vec!["task", "exec", "--exec-id", exec_id];
    a.extend_from_slice(extra);
    a.push(id);
    a.extend_from_slice(args);
    let out = ctr(&a);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        exit_code(&out.status),
    )
}

#[test]
fn exec_joins_the_container_and_propagates_its_exit_code() {
    let _serial = shared();
    let c = Detached::sleeping("exec");
    // The container's init is pid 1 of its namespace; an exec sees it and its own rootfs.
    let (out, err, code) = exec(
        &c.0,
        "e1",
        &[],
        &[
            "sh",
            "-c",
            "cat /proc/1/cmdline | tr '\\0' ' '; echo; cat /etc/passwd | head -1; exit 7",
        ],
    );
    assert_eq!(code, 7, "stderr: {err}");
    assert_eq!(
        out, "sleep 600 \nroot:x:0:0:root:/root:/bin/sh\n",
        "stderr: {err}"
    );
    // Same namespaces as the init.
    let ns_of =
        |p: &str| format!("for n in net mnt pid uts ipc; do readlink /proc/{p}/ns/$n; done");
    let (ns_init, _, _) = exec(&c.0, "e2", &[], &["sh", "-c", &ns_of("1")]);
    let (ns_self, _, _) = exec(&c.0, "e3", &[], &["sh", "-c", &ns_of("self")]);
    assert_eq!(ns_init, ns_self);
    assert_eq!(ns_init.lines().count(), 5);
    // Same cgroup as the init.
    let (cg_init, _, _) = exec(&c.0, "e4", &[], &["cat", "/proc/1/cgroup"]);
    let (cg_self, _, _) = exec(&c.0, "e5", &[], &["cat", "/proc/self/cgroup"]);
    assert_eq!(cg_init, cg_self);
}

#[test]
fn exec_applies_its_own_process_spec() {
    let _serial = shared();
    let c = Detached::sleeping("execspec");
    let (out, err, code) = exec(&c.0, "u", &["--user", "65534:65534"], &["id"]);
    assert_eq!(
        (code, out.trim()),
        (
            0,
            "uid=65534(nobody) gid=65534(nobody) groups=65534(nobody)"
        ),
        "stderr: {err}"
    );
    let (out, _, _) = exec(&c.0, "w", &["--cwd", "/tmp"], &["pwd"]);
    assert_eq!(out, "/tmp\n");
    // The exec gets the container's environment (ctr copies the init's process spec).
    let (out, _, _) = exec(&c.0, "env", &[], &["sh", "-c", "echo $PATH"]);
    assert!(out.starts_with("/usr/local/sbin:"), "PATH in exec: {out}");
    let (_, err, code) = exec(&c.0, "missing", &[], &["/no/such/program"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("/no/such/program"),
        "error should name the program: {err}"
    );
}

#[test]
fn exec_into_a_stopped_container_fails_cleanly() {
    let _serial = shared();
    let id = unique_id("execdead");
    ctr_ok(&["run", "-d", "--runtime", &runtime(), IMAGE, &id, "true"]);
    assert!(wait_until(Duration::from_secs(10), || task_status(&id)
        .as_deref()
        == Some("STOPPED")));
    let (_, err, code) = exec(&id, "late", &[], &["true"]);
    assert_ne!(code, 0, "exec into a stopped container succeeded");
    assert!(!err.is_empty());
    ctr_ok(&["task", "delete", &id]);
    ctr_ok(&["container", "rm", &id]);
    assert_no_leftovers(&id);
}

#[test]
fn a_hundred_concurrent_execs_get_their_own_exit_codes() {
    let _serial = shared();
    let c = Detached::sleeping("exec100");
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for i in 0..100 {
        let (tx, id) = (tx.clone(), c.0.clone());
        handles.push(thread::spawn(move || {
            let code_wanted = i % 50 + 1;
            let (out, err, code) = exec(
                &id,
                &format!("x{i}"),
                &[],
                &["sh", "-c", &format!("echo {i}; exit {code_wanted}")],
            );
            tx.send((i, code_wanted, out, err, code)).unwrap();
        }));
    }
    drop(tx);
    for h in handles {
        h.join().unwrap();
    }
    let mut results: Vec<_> = rx.iter().collect();
    results.sort_by_key(|r| r.0);
    assert_eq!(results.len(), 100);
    for (i, wanted, out, err, code) in results {
        assert_eq!(code, wanted, "exec x{i}: stderr {err}");
        assert_eq!(out, format!("{i}\n"), "exec x{i}");
    }
    // Every exec is gone from the container afterwards.
    let ps = ctr_ok(&["task", "ps", &c.0]);
    assert_eq!(ps.lines().count(), 2, "only the init should be left:\n{ps}");
}

/// The init's /tasks/exit comes after the exit of every exec that was running, and exec
/// events carry the exec id.
#[test]
fn init_exit_is_published_after_running_execs_exit() {
    let _serial = shared();
    let c = Detached::sleeping("execorder");
    let mut sub = Background(Some(
        ctr_command(&["events"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let stdout = sub.0.as_mut().unwrap().stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    thread::sleep(Duration::from_millis(300));
    // A detached exec that keeps running until the init dies.
    let detached = ctr_command(&[
        "task",
        "exec",
        "-d",
        "--exec-id",
        "long",
        &c.0,
        "sleep",
        "600",
    ])
    .output()
    .unwrap();
    assert!(
        detached.status.success(),
        "{}",
        String::from_utf8_lossy(&detached.stderr)
    );
    ctr_ok(&["task", "kill", "-s", "SIGKILL", &c.0]);
    assert!(wait_until(Duration::from_secs(10), || task_status(&c.0)
        .as_deref()
        == Some("STOPPED")));
    thread::sleep(Duration::from_millis(500));
    sub.stop(libc::SIGKILL, Duration::from_secs(5));
    let lines: Vec<String> = rx.try_iter().filter(|l| l.contains(&c.0)).collect();
    let pos = |pat: &str| lines.iter().position(|l| l.contains(pat));
    let added = pos("/tasks/exec-added").expect("exec-added event");
    let started = pos("/tasks/exec-started").expect("exec-started event");
    let exits: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("/tasks/exit"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        exits.len(),
        2,
        "one exit for the exec, one for the init:\n{}",
        lines.join("\n")
    );
    assert!(
        added < started && started < exits[0],
        "{}",
        lines.join("\n")
    );
    assert!(
        lines[exits[0]].contains("long"),
        "the first exit must be the exec's:\n{}",
        lines.join("\n")
    );
    assert!(
        !lines[exits[1]].contains("long"),
        "the last exit must be the init's:\n{}",
        lines.join("\n")
    );
}

/// Kill with all=true signals every process of the container, not only the init.
#[test]
fn kill_all_reaches_every_process() {
    let _serial = shared();
    let c = Detached::start(
        "killall",
        &runtime(),
        &[],
        &["sh", "-c", "sleep 600 & sleep 600 & wait"],
    );
    let ps = ctr_ok(&["task", "ps", &c.0]);
    assert_eq!(ps.lines().count(), 4, "init and two children:\n{ps}");
    ctr_ok(&["task", "kill", "--all", "-s", "SIGKILL", &c.0]);
    assert!(
        wait_until(Duration::from_secs(10), || task_status(&c.0).as_deref()
            == Some("STOPPED")),
        "{:?}",
        task_status(&c.0)
    );
}
