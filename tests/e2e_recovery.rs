//! What containerd relies on when things go wrong: the `delete` action after a shim
//! dies, and Create errors that name the bad field and leave nothing behind.

mod common;

use common::*;
use std::fs;
use std::time::Duration;

/// The shim daemon serving container `id`: the runtime's shim binary, started by our
/// containerd with `-id ID`, and not our launcher (which renames itself `shim-rs-launch`).
fn shim_daemon_pid(id: &str) -> Option<i32> {
    let bin = shim_binary_name(&runtime());
    let id_arg = format!("\0-id\0{id}\0");
    let address_arg = format!("\0-address\0{}\0", env().address);
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).into_owned();
        let argv0 = cmdline.split('\0').next().unwrap_or_default();
        if argv0.rsplit('/').next() == Some(bin.as_str())
            && cmdline.contains(&id_arg)
            && cmdline.contains(&address_arg)
            && comm.trim() != "shim-rs-launch"
        {
            return Some(pid);
        }
    }
    None
}

/// A SIGKILLed shim: containerd runs the runtime's `delete` action, which must kill the
/// container (ours: from the state saved in the bundle), remove its cgroup and unmount its
/// rootfs. Same assertions for runc.v2, whose `delete` runs `runc delete --force`.
#[test]
fn delete_action_cleans_up_after_a_killed_shim() {
    let _serial = shared();
    let id = unique_id("crash");
    ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        &runtime(),
        "--memory-limit",
        "67108864",
        IMAGE,
        &id,
        "sleep",
        "300",
    ]);
    let container_pid = task_pid(&id);
    let cg = cgroup::Cgroup::of_container(&id);
    assert!(cg.procs().contains(&container_pid), "{:?}", cg.procs());
    let shim = shim_daemon_pid(&id).expect("shim daemon process");
    // SAFETY: kill(2); the pid is the shim daemon this test started through containerd.
    unsafe { libc::kill(shim, libc::SIGKILL) };

    let gone = wait_until(Duration::from_secs(15), || {
        !std::path::Path::new(&format!("/proc/{container_pid}")).exists()
            || fs::read_to_string(format!("/proc/{container_pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
    });
    assert!(
        gone,
        "container process {container_pid} survived its shim's death\n{}",
        containerd_log_tail(30)
    );
    // containerd 1.6 deletes the task of a dead shim itself (after the `delete` action).
    let stopped = wait_until(Duration::from_secs(15), || {
        matches!(task_status(&id).as_deref(), None | Some("STOPPED"))
    });
    assert!(
        stopped,
        "task still {:?} after shim death\n{}",
        task_status(&id),
        containerd_log_tail(30)
    );
    // The `delete` action removed the container's cgroup (in every hierarchy).
    assert!(
        wait_until(SETTLE, || cg.existing_dirs().is_empty()),
        "{}: cgroup left after the delete action: {:?}",
        cgroup::layout_name(),
        cg.existing_dirs()
    );
    let _ = ctr(&["task", "delete", &id]);
    ctr_ok(&["container", "rm", &id]);
    if testing_our_shim() {
        assert_no_leftovers(&id);
    } else {
        // The stock Go shim leaves its socket behind when it is SIGKILLed (its `delete`
        // action does not remove it; the harness' exit hook does). Everything else holds.
        let sock = shim_socket_path(&id).display().to_string();
        let left: Vec<String> = leftovers_settled(&id)
            .into_iter()
            .filter(|l| !l.contains(&sock))
            .collect();
        assert!(
            left.is_empty(),
            "leftovers of {id}:\n  {}",
            left.join("\n  ")
        );
    }
}

/// A config.json error is reported by field to the `ctr` user and leaves nothing.
#[test]
fn invalid_spec_field_fails_create_naming_it() {
    if !testing_our_shim() {
        return; // the message is ours
    }
    let _serial = shared();
    let id = unique_id("badspec");
    // A relative cwd is invalid per the runtime spec.
    let out = ctr(&[
        "run",
        "--rm",
        "--runtime",
        &runtime(),
        "--cwd",
        "relative/dir",
        IMAGE,
        &id,
        "true",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "create with a relative cwd succeeded"
    );
    assert!(
        err.contains("process.cwd"),
        "error does not name process.cwd: {err}"
    );
    let _ = ctr(&["container", "rm", &id]);
    assert_no_leftovers(&id);
}

/// An unimplemented RPC answers UNIMPLEMENTED (not NOT_FOUND, the generated default).
#[test]
fn unimplemented_rpc_says_so() {
    if !testing_our_shim() {
        return;
    }
    let _serial = shared();
    let id = unique_id("unimpl");
    ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        &runtime(),
        IMAGE,
        &id,
        "sleep",
        "300",
    ]);
    // Checkpoint (ctr pauses around it, and resumes after the refusal).
    let out = ctr(&["task", "checkpoint", &id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "checkpoint succeeded?");
    assert!(err.contains("not implemented"), "checkpoint error: {err}");
    assert_eq!(task_status(&id).as_deref(), Some("RUNNING"));
    ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(wait_until(Duration::from_secs(10), || task_status(&id)
        .as_deref()
        == Some("STOPPED")));
    ctr_ok(&["task", "delete", &id]);
    ctr_ok(&["container", "rm", &id]);
    assert_no_leftovers(&id);
}
