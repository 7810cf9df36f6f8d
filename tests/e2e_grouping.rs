//! Pod grouping and the process list: containers with the same group annotation share
//! one shim daemon, which serves them all and exits only when the last one is gone.

mod common;

use common::*;
use std::time::Duration;

/// The pid of the shim daemon serving task `id` (via the shim_pid of `ctr task ls`'s
/// container, i.e. the parent process of the container's launcher).
fn shim_pid_of(id: &str) -> i32 {
    let out = ctr_list(&["task", "ls"]);
    let task_pid: i32 = out
        .lines()
        .skip(1)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| f[1].parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no task {id}:\n{out}"));
    // task -> its parent (our launcher, or runc's shim) -> for us, the daemon.
    let ppid = |pid: i32| -> i32 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let parent = ppid(task_pid);
    let comm = std::fs::read_to_string(format!("/proc/{parent}/comm")).unwrap();
    if comm.trim() == "shim-rs-launch" {
        ppid(parent)
    } else {
        parent
    }
}

#[test]
fn containers_of_one_group_share_one_shim() {
    let _serial = shared();
    let group = unique_id("pod");
    let (a, b, alone) = (unique_id("grp-a"), unique_id("grp-b"), unique_id("alone"));
    let label = format!("io.kubernetes.cri.sandbox-id={group}");
    for id in [&a, &b] {
        ctr_ok(&[
            "run",
            "-d",
            "--runtime",
            &runtime(),
            "--annotation",
            &label,
            IMAGE,
            id,
            "sleep",
            "600",
        ]);
    }
    ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        &runtime(),
        IMAGE,
        &alone,
        "sleep",
        "600",
    ]);
    let (sa, sb, salone) = (shim_pid_of(&a), shim_pid_of(&b), shim_pid_of(&alone));
    assert_eq!(sa, sb, "containers of one group must share a shim");
    assert_ne!(
        sa, salone,
        "a container without the group gets its own shim"
    );

    // The shared daemon serves each container on its own: stop one, the other runs on.
    remove_container(&a);
    assert_eq!(task_status(&b).as_deref(), Some("RUNNING"));
    assert!(
        std::path::Path::new(&format!("/proc/{sb}")).exists(),
        "the shared shim exited too early"
    );
    let (out, err, code) = {
        let o = ctr(&["task", "exec", "--exec-id", "still", &b, "echo", "alive"]);
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
            exit_code(&o.status),
        )
    };
    assert_eq!((out.as_str(), code), ("alive\n", 0), "{err}");
    remove_container(&b);
    remove_container(&alone);
    // With its last container gone, the daemon exits.
    assert!(
        wait_until(Duration::from_secs(10), || !std::path::Path::new(&format!(
            "/proc/{sb}/cmdline"
        ))
        .exists()
            || std::fs::read_to_string(format!("/proc/{sb}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)),
        "shim {sb} still running after its last container"
    );
    for id in [&a, &b, &alone] {
        assert_no_leftovers(id);
    }
}

#[test]
fn pids_lists_the_init_and_execs_with_their_exec_id() {
    let _serial = shared();
    let id = unique_id("pids");
    ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        &runtime(),
        IMAGE,
        &id,
        "sleep",
        "600",
    ]);
    let ex = ctr_command(&[
        "task",
        "exec",
        "-d",
        "--exec-id",
        "worker",
        &id,
        "sleep",
        "600",
    ])
    .output()
    .unwrap();
    assert!(
        ex.status.success(),
        "{}",
        String::from_utf8_lossy(&ex.stderr)
    );
    let ps = ctr_ok(&["task", "ps", &id]);
    let rows: Vec<&str> = ps.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{ps}");
    assert!(
        rows.iter().any(|r| r.contains("worker")),
        "the exec's row names its exec id:\n{ps}"
    );
    remove_container(&id);
    assert_no_leftovers(&id);
}
