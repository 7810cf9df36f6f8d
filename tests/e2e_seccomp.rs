//! End-to-end seccomp tests: profiles through `ctr run --seccomp [--seccomp-profile]`, the
//! same probes under runc.v2 where that says something, and SCMP_ACT_NOTIFY with a seccomp
//! agent played by this test process.
//!
//! `ctr run` sets noNewPrivileges, so the filter is loaded after Start; `--allow-new-privs`
//! takes the other path (loaded during Create, before the capability drop). Both are run.

mod common;

use common::*;
use std::{
    fs,
    io::IoSliceMut,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::net::UnixListener,
    },
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

const RUNC: &str = "io.containerd.runc.v2";
/// The two ways our init loads a filter.
const PRIVS: [&[&str]; 2] = [&[], &["--allow-new-privs"]];

/// `ctr run --rm FLAGS --runtime RT IMAGE ID ARGS...` -> (stdout, stderr, exit code).
fn run_with(rt: &str, flags: &[&str], id: &str, args: &[&str]) -> (String, String, i32) {
    let mut a = vec!["run", "--rm", "--runtime", rt];
    a.extend_from_slice(flags);
    a.extend_from_slice(&[IMAGE, id]);
    a.extend_from_slice(args);
    let out = ctr_timeout(&a, Duration::from_secs(40));
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        exit_code(&out.status),
    )
}

/// [`run_with`], then asserts that the container left nothing behind.
fn run_clean(rt: &str, flags: &[&str], id: &str, args: &[&str]) -> (String, String, i32) {
    let r = run_with(rt, flags, id, args);
    let left = leftovers_settled(id);
    assert!(
        left.is_empty(),
        "leftovers of {id} ({rt} {flags:?}):\n  {}\n(the run: {r:?})",
        left.join("\n  ")
    );
    r
}

/// A scratch directory for profiles and sockets, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = env()
            .workdir
            .join(format!("seccomp-{tag}-{}", unique_id("d")));
        fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
    fn profile(&self, name: &str, profile: serde_json::Value) -> String {
        let p = self.0.join(name);
        fs::write(&p, serde_json::to_vec_pretty(&profile).unwrap()).unwrap();
        p.to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What the probes print: the kernel's view of our seccomp state, and `unshare -U`, which
/// an unprivileged process may do unless seccomp forbids it (the default profile does,
/// without CAP_SYS_ADMIN).
const DEFAULT_PROBE: &str =
    "grep -E '^Seccomp(_filters)?:' /proc/self/status; unshare -U true; echo unshare=$?";

#[test]
fn default_profile_is_loaded_and_enforced_like_runc() {
    let _serial = shared();
    for rt in [runtime().as_str(), RUNC] {
        for privs in PRIVS {
            let id = unique_id("sc-default");
            let mut flags = vec!["--seccomp"];
            flags.extend_from_slice(privs);
            let (out, err, code) = run_clean(rt, &flags, &id, &["sh", "-c", DEFAULT_PROBE]);
            assert_eq!(code, 0, "{rt} {privs:?}: stderr {err}");
            assert_eq!(
                out, "Seccomp:\t2\nSeccomp_filters:\t1\nunshare=1\n",
                "{rt} {privs:?}: stderr {err}"
            );
            assert!(
                err.contains("unshare(0x10000000): Operation not permitted"),
                "{rt} {privs:?}: {err}"
            );
        }
        // The control: without the profile the probe succeeds.
        let id = unique_id("sc-none");
        let (out, err, code) = run_clean(rt, &[], &id, &["sh", "-c", DEFAULT_PROBE]);
        assert_eq!(code, 0, "{rt}: {err}");
        assert_eq!(
            out, "Seccomp:\t0\nSeccomp_filters:\t0\nunshare=0\n",
            "{rt}: {err}"
        );
    }
}

/// Custom profile: mkdir fails with errno 38 (ENOSYS) from `errnoRet`; chmod fails with
/// EACCES only when the new mode is world-writable (SCMP_CMP_MASKED_EQ with valueTwo on
/// the mode argument: index 1 of chmod, 2 of fchmodat).
#[test]
fn custom_profile_errno_and_argument_conditions_like_runc() {
    let _serial = shared();
    let s = Scratch::new("custom");
    let world_writable = |index: u32| serde_json::json!([{"index": index, "value": 2, "valueTwo": 2, "op": "SCMP_CMP_MASKED_EQ"}]);
    let profile = s.profile(
        "custom.json",
        serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                 "args": world_writable(1)},
                {"names": ["fchmodat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                 "args": world_writable(2)},
                // Unknown to libseccomp: ignored (and logged), as runc does.
                {"names": ["no_such_syscall_shim_rs"], "action": "SCMP_ACT_KILL"}
            ]
        }),
    );
    let probe = "mkdir /tmp/d; echo mkdir=$?; touch /tmp/f; chmod 755 /tmp/f; echo chmod755=$?; \
                 chmod 777 /tmp/f; echo chmod777=$?; stat -c %a /tmp/f";
    for rt in [runtime().as_str(), RUNC] {
        for privs in PRIVS {
            let id = unique_id("sc-custom");
            let mut flags = vec!["--seccomp", "--seccomp-profile", &profile];
            flags.extend_from_slice(privs);
            let (out, err, code) = run_clean(rt, &flags, &id, &["sh", "-c", probe]);
            assert_eq!(code, 0, "{rt} {privs:?}: {err}");
            assert_eq!(
                out, "mkdir=1\nchmod755=0\nchmod777=1\n755\n",
                "{rt} {privs:?}: {err}"
            );
            assert!(
                err.contains("can't create directory '/tmp/d': Function not implemented")
                    && err.contains("chmod: /tmp/f: Permission denied"),
                "{rt} {privs:?}: {err}"
            );
        }
    }
    if testing_our_shim() {
        let log = fs::read_to_string(env().workdir.join("containerd.log")).unwrap();
        assert!(
            log.contains("ignoring syscalls unknown to libseccomp")
                && log.contains("no_such_syscall_shim_rs"),
            "the ignored name is not in the shim log\n{}",
            containerd_log_tail(20)
        );
    }
}

/// Bad profiles fail `ctr run` with an error that names the field and its value, and
/// leave nothing behind. The first two are refused while parsing config.json, the third
/// by libseccomp in the init, the fourth by the plan (the runtime spec says an errnoRet on
/// an action without one MUST fail; runc ignores it, so that case is ours only).
#[test]
fn invalid_profiles_fail_create_naming_the_field() {
    let _serial = shared();
    let s = Scratch::new("invalid");
    let cases = [
        (
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mkdir"], "action": "SCMP_ACT_BOGUS"}]}),
            ["linux.seccomp.syscalls[1].action", "SCMP_ACT_BOGUS"],
        ),
        (
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_BOGUS"]}),
            ["linux.seccomp.architectures[1]", "SCMP_ARCH_BOGUS"],
        ),
        (
            // Valid names, but libseccomp cannot mix byte orders in one filter.
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_S390X"]}),
            ["linux.seccomp.architectures[1]", "SCMP_ARCH_S390X"],
        ),
        (
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["mkdir"], "action": "SCMP_ACT_KILL", "errnoRet": 5}]}),
            ["linux.seccomp.syscalls[0].errnoRet", "SCMP_ACT_KILL"],
        ),
    ];
    for (i, (profile, needles)) in cases.into_iter().enumerate() {
        if i == 3 && !testing_our_shim() {
            continue;
        }
        let file = s.profile(&format!("bad{i}.json"), profile);
        for privs in PRIVS {
            let id = unique_id("sc-invalid");
            let mut flags = vec!["--seccomp", "--seccomp-profile", &file];
            flags.extend_from_slice(privs);
            let (out, err, code) = run_clean(&runtime(), &flags, &id, &["echo", "ran"]);
            assert_ne!(code, 0, "case {i} {privs:?} ran: {out}");
            assert!(!out.contains("ran"), "case {i}: {out}");
            if testing_our_shim() {
                for n in needles {
                    assert!(err.contains(n), "case {i} {privs:?}: {n:?} not in {err}");
                }
            }
        }
    }
}

/// What the agent saw.
#[derive(Debug)]
struct AgentReport {
    state: serde_json::Value,
    /// (pid, syscall name, same pid namespace as the container's init) per notification.
    notified: Vec<(u32, String, bool)>,
}

/// A seccomp agent on `sock`: takes one connection, reads the container process state and
/// the fd, then answers every notification with -EXDEV until the container is gone.
fn spawn_agent(sock: &Path) -> thread::JoinHandle<Result<AgentReport, String>> {
    let listener = UnixListener::bind(sock).unwrap();
    listener.set_nonblocking(true).unwrap();
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let conn = loop {
            match listener.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err("no connection from the runtime".into());
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        conn.set_nonblocking(false).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut cmsg = nix::cmsg_space!([i32; 4]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            nix::sys::socket::MsgFlags::empty(),
        )
        .map_err(|e| format!("recvmsg: {e}"))?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(|e| e.to_string())? {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(r) = c {
                // SAFETY: fresh descriptors from SCM_RIGHTS.
                fds.extend(r.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
            }
        }
        let n = msg.bytes;
        let state: serde_json::Value = serde_json::from_slice(&buf[..n])
            .map_err(|e| format!("state JSON: {e}: {:?}", String::from_utf8_lossy(&buf[..n])))?;
        let [fd] = &fds[..] else {
            return Err(format!("{} fds received, not 1", fds.len()));
        };
        let init_pid = state["pid"].as_i64().unwrap_or(0);
        let pidns = |pid: i64| fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
        let init_ns = pidns(init_pid);
        let mut notified = Vec::new();
        loop {
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            // SAFETY: poll on one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
            if r == 0 {
                return Err(format!("timed out; so far {notified:?}"));
            }
            if pfd.revents & libc::POLLIN == 0 {
                break; // POLLHUP: no process uses the filter any more
            }
            let Ok(req) = libseccomp::ScmpNotifReq::receive(fd.as_raw_fd()) else {
                continue; // the caller went away meanwhile
            };
            let name = req
                .data
                .syscall
                .get_name_by_arch(req.data.arch)
                .unwrap_or_default();
            let same_ns = init_ns.is_some() && pidns(req.pid.into()) == init_ns;
            notified.push((req.pid, name, same_ns));
            let _ = libseccomp::ScmpNotifResp::new_error(
                req.id,
                -libc::EXDEV,
                libseccomp::ScmpNotifRespFlags::empty(),
            )
            .respond(fd.as_raw_fd());
        }
        Ok(AgentReport { state, notified })
    })
}

fn notify_profile(sock: &Path) -> serde_json::Value {
    serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock,
        "listenerMetadata": "shim-rs-agent-metadata",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    })
}

/// SCMP_ACT_NOTIFY: the agent at listenerPath gets the container process state and the
/// notify fd; its answer (EXDEV) is what mkdir in the container sees.
#[test]
fn notify_hands_the_fd_to_the_agent_and_its_answer_reaches_the_container() {
    let _serial = shared();
    for rt in [runtime().as_str(), RUNC] {
        for privs in PRIVS {
            let s = Scratch::new("notify");
            let sock = s.0.join("agent.sock");
            let file = s.profile("notify.json", notify_profile(&sock));
            let agent = spawn_agent(&sock);
            let id = unique_id("sc-notify");
            let mut flags = vec!["--seccomp", "--seccomp-profile", &file];
            flags.extend_from_slice(privs);
            let (out, err, code) = run_clean(
                rt,
                &flags,
                &id,
                &[
                    "sh",
                    "-c",
                    "mkdir /tmp/agent; echo mkdir=$?; ls -d /tmp/agent",
                ],
            );
            let report = agent.join().unwrap().unwrap_or_else(|e| {
                panic!("{rt} {privs:?}: agent: {e}; the run: {out:?} {err:?} {code}")
            });
            let what = format!("{rt} {privs:?}: {report:?}; stderr {err}");
            assert_eq!(code, 1, "{what}"); // ls of the directory that was not made
            assert_eq!(out, "mkdir=1\n", "{what}");
            assert!(
                err.contains("can't create directory '/tmp/agent': Invalid cross-device link"),
                "{what}"
            );
            assert!(
                report
                    .notified
                    .iter()
                    .any(|(_, name, same_ns)| name.starts_with("mkdir") && *same_ns),
                "{what}"
            );
            let st = &report.state;
            assert_eq!(st["fds"], serde_json::json!(["seccompFd"]), "{what}");
            assert_eq!(st["metadata"], "shim-rs-agent-metadata", "{what}");
            assert_eq!(st["state"]["id"], id.as_str(), "{what}");
            assert!(st["pid"].as_i64().unwrap_or(0) > 0, "{what}");
            assert_eq!(st["pid"], st["state"]["pid"], "{what}");
            assert!(
                st["state"]["bundle"]
                    .as_str()
                    .is_some_and(|b| b.ends_with(&format!("/{id}"))),
                "{what}"
            );
            if testing_our_shim() && rt != RUNC {
                // Loaded during Start with noNewPrivileges, during Create without.
                let status = if privs.is_empty() {
                    "created"
                } else {
                    "creating"
                };
                assert_eq!(st["state"]["status"], status, "{what}");
            }
        }
    }
}

/// Nobody listens at listenerPath: the run fails naming the field, at Create or at Start
/// depending on when the filter is loaded, and leaves nothing behind.
#[test]
fn unreachable_listener_fails_naming_listener_path() {
    let _serial = shared();
    let s = Scratch::new("nolistener");
    let file = s.profile("notify.json", notify_profile(&s.0.join("nobody.sock")));
    for privs in PRIVS {
        let id = unique_id("sc-nolistener");
        let mut flags = vec!["--seccomp", "--seccomp-profile", &file];
        flags.extend_from_slice(privs);
        let (out, err, code) = run_clean(&runtime(), &flags, &id, &["echo", "ran"]);
        assert_ne!(code, 0, "{privs:?}: {out}");
        assert!(!out.contains("ran"), "{privs:?}: {out}");
        if testing_our_shim() {
            assert!(
                err.contains("linux.seccomp.listenerPath") && err.contains("nobody.sock"),
                "{privs:?}: {err}"
            );
        }
    }
}
