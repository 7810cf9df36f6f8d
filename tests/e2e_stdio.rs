//! stdio and terminals through containerd: stdin and its EOF, byte-exact large streams,
//! `ctr run -t` and `ctr task exec -t` in a pseudo-terminal (util-linux `script`), and
//! terminal resizes. Where a behaviour is containerd's, the test also runs runc.v2.

mod common;

use common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `ctr task exec` with `input` on its stdin; returns (stdout, exit code).
fn exec_with_stdin(id: &str, exec_id: &str, input: &[u8], args: &[&str]) -> (Vec<u8>, i32) {
    let mut a = vec!["task", "exec", "--exec-id", exec_id, id];
    a.extend_from_slice(args);
    let mut child = ctr_command(&a)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let (out, timed_out) = wait_output(child, Duration::from_secs(60));
    writer.join().unwrap();
    assert!(!timed_out, "exec {exec_id} hung (stdin EOF not delivered?)");
    (out.stdout, exit_code(&out.status))
}

fn sha256(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn stdin_reaches_the_process_byte_exact_and_its_eof_too() {
    let _serial = shared();
    let c = Detached::sleeping("stdin");
    let (out, code) = exec_with_stdin(
        &c.0,
        "small",
        b"line1\nline2\n",
        &["sh", "-c", "cat; echo EOF-seen"],
    );
    assert_eq!(
        (String::from_utf8_lossy(&out).as_ref(), code),
        ("line1\nline2\nEOF-seen\n", 0)
    );
    // 3 MiB of random bytes through stdin, hashed inside the container.
    let data: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let (out, code) = exec_with_stdin(&c.0, "big", &data, &["sha256sum"]);
    assert_eq!(code, 0);
    assert_eq!(
        String::from_utf8_lossy(&out)
            .split_whitespace()
            .next()
            .unwrap(),
        sha256(&data)
    );
}

#[test]
fn large_output_arrives_byte_exact_when_the_process_exits_right_after_writing() {
    let _serial = shared();
    let id = unique_id("bigout");
    // 8 MiB, deterministic, then exit at once.
    let out = ctr(&[
        "run",
        "--rm",
        "--runtime",
        &runtime(),
        IMAGE,
        &id,
        "sh",
        "-c",
        "head -c 8388608 /dev/zero | tr '\\0' x",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 8 * 1024 * 1024);
    assert!(out.stdout.iter().all(|b| *b == b'x'));
    assert_no_leftovers(&id);
}

/// Runs `cmd` in a pseudo-terminal of `rows`x`cols` (util-linux `script`); returns its
/// output with NUL bytes removed, and the exit code `script` reports.
fn in_pty(rows: u16, cols: u16, cmd: &str) -> (String, i32) {
    let wrapped = format!("stty rows {rows} cols {cols}; {cmd}");
    let (out, timed_out) = run_with_timeout(
        Command::new("script")
            .args(["-qec", &wrapped, "/dev/null"])
            .stdin(Stdio::null()),
        Duration::from_secs(60),
    );
    assert!(!timed_out, "{cmd} hung");
    (
        String::from_utf8_lossy(&out.stdout).replace('\0', ""),
        exit_code(&out.status),
    )
}

/// Runs `cmd` in a pseudo-terminal and types `lines` into it, one every half second after
/// the command had time to start; returns (output without NULs, exit code, timed out).
fn type_into_pty(cmd: &str, lines: &[&[u8]]) -> (String, i32, bool) {
    let mut child = Command::new("script")
        .args(["-qec", cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for line in lines {
        std::thread::sleep(Duration::from_millis(500));
        stdin.write_all(line).unwrap();
    }
    let (out, timed_out) = wait_output(child, Duration::from_secs(30));
    drop(stdin);
    let text = String::from_utf8_lossy(&out.stdout).replace('\0', "");
    (text, exit_code(&out.status), timed_out)
}

fn ctr_cmdline(args: &[&str]) -> String {
    let e = env();
    let mut s = format!(
        "{} --address {} -n {}",
        e.ctr_bin.display(),
        e.address,
        e.namespace
    );
    for a in args {
        s.push_str(&format!(" '{a}'"));
    }
    s
}

#[test]
fn run_with_a_terminal_gets_a_pty_its_size_and_the_exit_code() {
    let _serial = shared();
    for rt in [runtime(), "io.containerd.runc.v2".to_owned()] {
        let id = unique_id("tty");
        let cmd = ctr_cmdline(&[
            "run",
            "-t",
            "--rm",
            "--runtime",
            &rt,
            IMAGE,
            &id,
            "sh",
            "-c",
            "sleep 0.3; tty; stty size; ls /dev/console; exit 3",
        ]);
        let (out, code) = in_pty(33, 111, &cmd);
        assert_eq!(code, 3, "{rt}: {out}");
        assert!(out.contains("/dev/pts/0"), "{rt}: {out}");
        assert!(
            out.contains("33 111"),
            "{rt}: the terminal size must follow ctr's: {out}"
        );
        assert!(out.contains("/dev/console"), "{rt}: {out}");
        assert_no_leftovers(&id);
    }
}

#[test]
fn exec_with_a_terminal() {
    let _serial = shared();
    let c = Detached::sleeping("exectty");
    let cmd = ctr_cmdline(&[
        "task",
        "exec",
        "-t",
        "--exec-id",
        "t1",
        &c.0,
        "sh",
        "-c",
        "sleep 0.3; tty; stty size; echo exec-tty-ok",
    ]);
    let (out, code) = in_pty(20, 70, &cmd);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("/dev/pts/"), "{out}");
    assert!(out.contains("20 70"), "{out}");
    assert!(out.contains("exec-tty-ok"), "{out}");
}

#[test]
fn input_typed_into_a_terminal_reaches_the_process() {
    let _serial = shared();
    let c = Detached::sleeping("ttyin");
    // `script` forwards our stdin to the pty ctr runs in; ctr forwards it to the container's.
    let cmd = ctr_cmdline(&[
        "task",
        "exec",
        "-t",
        "--exec-id",
        "r1",
        &c.0,
        "sh",
        "-c",
        "read line; echo got:$line",
    ]);
    let (out, _, timed_out) = type_into_pty(&cmd, &[b"hello-tty\n"]);
    assert!(!timed_out, "{out}");
    assert!(out.contains("got:hello-tty"), "{out}");
}

/// `--log-uri binary://` starts the logging binary with the container's stdout and stderr
/// on fds 3 and 4 and CONTAINER_ID/CONTAINER_NAMESPACE; `file://` appends both streams to a
/// file. Same result under runc.v2.
#[test]
fn log_uris_binary_and_file() {
    let _serial = shared();
    for rt in [runtime(), "io.containerd.runc.v2".to_owned()] {
        let dir = std::env::temp_dir().join(unique_id("logs"));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let logger = dir.join("logger.sh");
        std::fs::write(
            &logger,
            format!(
                "#!/bin/sh\necho \"id=$CONTAINER_ID ns=$CONTAINER_NAMESPACE args=$*\" > {d}/meta\n\
                 cat <&3 5>&- > {d}/out &\ncat <&4 5>&- > {d}/err &\nexec 5>&-\nwait\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&logger, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let id = unique_id("binlog");
        let uri = format!("binary://{}?tag=web", logger.display());
        let out = ctr(&[
            "run",
            "--rm",
            "--runtime",
            &rt,
            "--log-uri",
            &uri,
            IMAGE,
            &id,
            "sh",
            "-c",
            "echo to-out; echo to-err >&2",
        ]);
        assert!(
            out.status.success(),
            "{rt}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let read = |f: &str| {
            wait_until(Duration::from_secs(5), || {
                std::fs::read_to_string(dir.join(f))
                    .map(|s| !s.is_empty())
                    .unwrap_or(false)
            });
            std::fs::read_to_string(dir.join(f)).unwrap_or_default()
        };
        assert_eq!(read("out"), "to-out\n", "{rt}");
        assert_eq!(read("err"), "to-err\n", "{rt}");
        assert_eq!(
            read("meta").trim(),
            format!("id={id} ns={} args=tag web", namespace()),
            "{rt}"
        );

        let id = unique_id("filelog");
        let file = dir.join("sub/file.log");
        let out = ctr(&[
            "run",
            "--rm",
            "--runtime",
            &rt,
            "--log-uri",
            &format!("file://{}", file.display()),
            IMAGE,
            &id,
            "sh",
            "-c",
            "echo f-out; echo f-err >&2",
        ]);
        assert!(
            out.status.success(),
            "{rt}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // runc's shim copies into the file on its own and may finish after ctr returns.
        let complete = |s: &str| s.contains("f-out\n") && s.contains("f-err\n");
        wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&file).is_ok_and(|s| complete(&s))
        });
        let logged = std::fs::read_to_string(&file).unwrap();
        if rt == runtime() {
            assert!(complete(&logged), "{rt}: {logged:?}");
        } else {
            // containerd 2.1.9's runc shim (with Debian's runc 1.1.5) was seen to keep only
            // stdout in the file: the stock stack is checked for stdout alone.
            assert!(logged.contains("f-out\n"), "{rt}: {logged:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `ctr run -d -t` then `ctr task attach`: the shell keeps its terminal after ctr detaches,
/// typed input reaches it, its output comes back and its exit code ends the attach.
/// Same under runc.v2.
#[test]
fn attach_to_a_detached_terminal() {
    let _serial = shared();
    for rt in [runtime(), "io.containerd.runc.v2".to_owned()] {
        let id = unique_id("attach");
        let (_, code) = in_pty(
            24,
            80,
            &ctr_cmdline(&["run", "-d", "-t", "--runtime", &rt, IMAGE, &id, "sh"]),
        );
        assert_eq!(code, 0, "{rt}: ctr run -d -t");
        let cmd = ctr_cmdline(&["task", "attach", &id]);
        let (text, code, timed_out) =
            type_into_pty(&cmd, &[b"echo attached-$((40+2))\n", b"exit 7\n"]);
        assert!(!timed_out, "{rt}: attach hung: {text}");
        assert!(text.contains("attached-42"), "{rt}: {text}");
        assert_eq!(code, 7, "{rt}: {text}");
        remove_container(&id);
        assert_no_leftovers(&id);
    }
}

/// A detached container keeps running when it writes after ctr went away (no SIGPIPE):
/// the shim holds the fifos open, as containerd's runc shim does.
#[test]
fn detached_output_does_not_kill_the_container() {
    let _serial = shared();
    let c = Detached::start(
        "detout",
        &runtime(),
        &[],
        &[
            "sh",
            "-c",
            "sleep 0.5; echo after-detach; echo err >&2; sleep 600",
        ],
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(task_status(&c.0).as_deref(), Some("RUNNING"));
}
