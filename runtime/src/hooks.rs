//! Running OCI hooks, shared by the shim (runtime-namespace hooks: prestart, createRuntime,
//! poststart, poststop) and the container's init (createContainer, startContainer).
//!
//! Each hook gets the container state JSON (runtime.md "State") on stdin, exactly its `args`
//! and `env` (nothing of the runtime's environment), its own process group, and pipes for
//! stdout/stderr whose beginning goes into the error when it fails. It is reaped by whoever
//! spawned it (`Child::wait`): in the shim daemon nothing else waits for children (the
//! launcher reaps containers), so no exit is stolen. No threads: one poll loop writes the
//! state, collects the output and watches a pidfd for the exit, so the same code is safe in
//! the multithreaded shim and in the single-threaded init. At the deadline (`timeout`) the
//! whole process group is SIGKILLed and the hook fails.

use std::{
    borrow::Cow,
    collections::BTreeMap,
    io::{ErrorKind, Read, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::process::{CommandExt, ExitStatusExt},
    },
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    plan::{HookKind, HookPlan, HooksPlan},
    Error, Result,
};

/// How much of a hook's stdout and of its stderr is kept for the error message.
const OUTPUT_LIMIT: usize = 4096;
/// Without a pidfd, how often to look for the hook's exit.
const POLL_TICK_MS: i32 = 20;

/// `status` of the state a hook gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Stopped,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct State<'a> {
    oci_version: &'a str,
    id: &'a str,
    status: Status,
    /// Required while created or running; as seen from the namespace the hook runs in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<i32>,
    bundle: Cow<'a, str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

/// The state JSON the hooks of `plan` get on stdin.
pub fn state_json(plan: &HooksPlan, status: Status, pid: Option<i32>) -> Vec<u8> {
    let state = State {
        oci_version: &plan.oci_version,
        id: &plan.id,
        status,
        pid,
        bundle: plan.bundle.to_string_lossy(),
        annotations: &plan.annotations,
    };
    // Only strings, numbers and a string map: serialisation cannot fail.
    serde_json::to_vec(&state).unwrap_or_default()
}

/// Runs the hooks of `kind` in order; the first failure stops them and is returned.
pub fn run(
    plan: &HooksPlan,
    kind: HookKind,
    status: Status,
    pid: Option<i32>,
    cwd: Option<&Path>,
) -> Result<()> {
    let hooks = plan.get(kind);
    if hooks.is_empty() {
        return Ok(());
    }
    let state = state_json(plan, status, pid);
    for (i, hook) in hooks.iter().enumerate() {
        run_one(hook, &state, cwd).map_err(|message| hook_error(kind, i, hook, message))?;
    }
    Ok(())
}

/// Runs every hook of `kind`, also after failures; returns the failures.
pub fn run_all(
    plan: &HooksPlan,
    kind: HookKind,
    status: Status,
    pid: Option<i32>,
    cwd: Option<&Path>,
) -> Vec<Error> {
    let hooks = plan.get(kind);
    if hooks.is_empty() {
        return Vec::new();
    }
    let state = state_json(plan, status, pid);
    hooks
        .iter()
        .enumerate()
        .filter_map(|(i, hook)| {
            run_one(hook, &state, cwd)
                .err()
                .map(|message| hook_error(kind, i, hook, message))
        })
        .collect()
}

fn hook_error(kind: HookKind, index: usize, hook: &HookPlan, message: String) -> Error {
    Error::Hook {
        field: format!("hooks.{}[{index}]", kind.field()),
        path: hook.path.clone(),
        message,
    }
}

/// Runtime-namespace hooks run in the bundle directory, as under runc (the shim's cwd).
fn bundle_dir(plan: &HooksPlan) -> Option<&Path> {
    Some(plan.bundle.as_path()).filter(|b| !b.as_os_str().is_empty())
}

// ---------------------------------------------------------------- lifecycle points ---

/// Shim, during create, while the init waits before pivot_root: prestart, then
/// createRuntime. `pid` is the init's pid as the shim sees it.
pub fn create_runtime(plan: &HooksPlan, pid: i32) -> Result<()> {
    let cwd = bundle_dir(plan);
    run(plan, HookKind::Prestart, Status::Creating, Some(pid), cwd)?;
    run(
        plan,
        HookKind::CreateRuntime,
        Status::Creating,
        Some(pid),
        cwd,
    )
}

/// Init, after the mounts and before pivot_root, in the container's namespaces; in the
/// (host path of the) rootfs directory, as under runc.
pub fn create_container(plan: &HooksPlan, rootfs: &Path) -> Result<()> {
    let pid = Some(std::process::id() as i32);
    run(
        plan,
        HookKind::CreateContainer,
        Status::Creating,
        pid,
        Some(rootfs),
    )
}

/// Init, after Start, just before exec: in the container, as its user, in its cwd.
pub fn start_container(plan: &HooksPlan) -> Result<()> {
    if plan.start_container.is_empty() {
        return Ok(());
    }
    // The init is not dumpable (see `launch::init`): a hook (its path resolves in the
    // container, so it may come from the image) cannot reach the shim's binary or channel
    // through /proc/<our pid>/{exe,fd}.
    let pid = Some(std::process::id() as i32);
    run(plan, HookKind::StartContainer, Status::Created, pid, None)
}

/// Shim, after the user's program was executed and before Start returns.
pub fn poststart(plan: &HooksPlan, pid: i32, status: Status) -> Result<()> {
    run(
        plan,
        HookKind::Poststart,
        status,
        Some(pid),
        bundle_dir(plan),
    )
}

/// Shim, after the container was destroyed. A failure is only a warning (runtime.md,
/// lifecycle step 13): every hook runs, the failures are returned for the log.
pub fn poststop(plan: &HooksPlan) -> Vec<Error> {
    run_all(
        plan,
        HookKind::Poststop,
        Status::Stopped,
        None,
        bundle_dir(plan),
    )
}

/// The `delete` action after a shim died before deleting its container: the poststop
/// hooks from the bundle's config.json. Returns the failures.
pub fn poststop_from_bundle(bundle: &Path, id: &str) -> Vec<Error> {
    let plan = crate::spec::load(bundle)
        .and_then(|spec| crate::plan::hooks::plan_hooks(&spec, bundle, id));
    match plan {
        Ok(plan) => poststop(&plan),
        Err(e) => vec![e],
    }
}

// -------------------------------------------------------------------- one hook ---

/// The first [`OUTPUT_LIMIT`] bytes of a stream, and how many more there were.
#[derive(Default)]
struct Capture {
    bytes: Vec<u8>,
    dropped: usize,
}

impl Capture {
    fn push(&mut self, data: &[u8]) {
        let room = OUTPUT_LIMIT.saturating_sub(self.bytes.len());
        let keep = room.min(data.len());
        self.bytes.extend_from_slice(&data[..keep]);
        self.dropped += data.len() - keep;
    }

    fn describe(&self, name: &str) -> String {
        let text = String::from_utf8_lossy(&self.bytes);
        let text = text.trim();
        if text.is_empty() && self.dropped == 0 {
            return String::new();
        }
        let more = if self.dropped > 0 {
            format!(" [{} more bytes]", self.dropped)
        } else {
            String::new()
        };
        format!("; {name}: {text}{more}")
    }
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes integers; on success we own the new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a new descriptor nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Reads what is available now; returns false at EOF or on an error (the pipe is done).
fn drain(reader: &mut impl Read, into: &mut Capture) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => into.push(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("ended with {status}"),
    }
}

/// Runs one hook to completion; the error message says how it failed, with its output.
fn run_one(hook: &HookPlan, state: &[u8], cwd: Option<&Path>) -> std::result::Result<(), String> {
    let mut cmd = Command::new(&hook.path);
    if let Some((argv0, rest)) = hook.args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear();
    for kv in &hook.env {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // Descriptors the shim (or the init) inherited without close-on-exec are not the hook's.
    // SAFETY: the closure only makes a syscall, which is async-signal-safe after fork.
    unsafe {
        cmd.pre_exec(|| {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("cannot execute: {e}"))?;
    let (status, out, err, timed_out) = supervise(&mut child, state, hook.timeout_secs);
    let streams = format!("{}{}", err.describe("stderr"), out.describe("stdout"));
    if let Some(secs) = timed_out {
        return Err(format!("timed out after {secs}s and was killed{streams}"));
    }
    match status {
        Ok(st) if st.success() => {
            log::debug!(
                "hook {} ran in {:?}",
                hook.path.display(),
                started.elapsed()
            );
            Ok(())
        }
        Ok(st) => Err(format!("{}{streams}", describe_status(st))),
        Err(e) => Err(format!("waiting for it failed: {e}{streams}")),
    }
}

/// Feeds `state` to the child's stdin and collects its output until it exits or the
/// timeout passes (then its process group is killed). Returns the exit status, stdout,
/// stderr and, on timeout, the timeout.
fn supervise(
    child: &mut Child,
    state: &[u8],
    timeout_secs: Option<u64>,
) -> (std::io::Result<ExitStatus>, Capture, Capture, Option<u64>) {
    let deadline = timeout_secs.map(|t| Instant::now() + Duration::from_secs(t));
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    for fd in [
        stdin.as_ref().map(|s| s.as_raw_fd()),
        stdout.as_ref().map(|s| s.as_raw_fd()),
        stderr.as_ref().map(|s| s.as_raw_fd()),
    ]
    .into_iter()
    .flatten()
    {
        set_nonblocking(fd);
    }
    let pidfd = pidfd_open(child.id());
    let (mut out, mut err) = (Capture::default(), Capture::default());
    let mut written = 0;
    if state.is_empty() {
        stdin = None;
    }
    loop {
        // Index 0..3 may be absent; the pidfd (if any) goes last.
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(4);
        let mut push = |fd: Option<RawFd>, events: libc::c_short| {
            fds.push(libc::pollfd {
                fd: fd.unwrap_or(-1), // poll ignores negative descriptors
                events,
                revents: 0,
            })
        };
        push(stdin.as_ref().map(|s| s.as_raw_fd()), libc::POLLOUT);
        push(stdout.as_ref().map(|s| s.as_raw_fd()), libc::POLLIN);
        push(stderr.as_ref().map(|s| s.as_raw_fd()), libc::POLLIN);
        push(pidfd.as_ref().map(|p| p.as_raw_fd()), libc::POLLIN);
        let mut wait_ms = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                i32::try_from(left.as_millis() + 1).unwrap_or(i32::MAX)
            }
            None => -1,
        };
        if pidfd.is_none() && !(0..=POLL_TICK_MS).contains(&wait_ms) {
            wait_ms = POLL_TICK_MS;
        }
        // SAFETY: poll on a valid array of pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
        if n < 0 && std::io::Error::last_os_error().kind() != ErrorKind::Interrupted {
            // Cannot wait for events: fall back to plain waiting, output is lost.
            let _ = child.kill();
            return (child.wait(), out, err, None);
        }
        if fds[0].revents != 0 {
            if let Some(pipe) = stdin.as_mut() {
                match pipe.write(&state[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    // EPIPE: the hook does not read its state; that is its business.
                    Err(_) => written = state.len(),
                }
                if written >= state.len() {
                    stdin = None; // EOF for the hook
                }
            }
        }
        if fds[1].revents != 0 && !stdout.as_mut().is_some_and(|p| drain(p, &mut out)) {
            stdout = None;
        }
        if fds[2].revents != 0 && !stderr.as_mut().is_some_and(|p| drain(p, &mut err)) {
            stderr = None;
        }
        // The hook may have exited while something it started still holds the pipes:
        // its exit, not EOF, ends the wait.
        if let Ok(Some(status)) = child.try_wait() {
            if let Some(p) = stdout.as_mut() {
                drain(p, &mut out);
            }
            if let Some(p) = stderr.as_mut() {
                drain(p, &mut err);
            }
            return (Ok(status), out, err, None);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            // SAFETY: kill(2) on the hook's own process group (pgid = its pid).
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let status = child.wait();
            if let Some(p) = stdout.as_mut() {
                drain(p, &mut out);
            }
            if let Some(p) = stderr.as_mut() {
                drain(p, &mut err);
            }
            return (status, out, err, timeout_secs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn sh(script: &str) -> HookPlan {
        HookPlan {
            path: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec![],
            timeout_secs: None,
        }
    }

    fn plan_with(kind: HookKind, hooks: Vec<HookPlan>) -> HooksPlan {
        let mut plan = HooksPlan {
            id: "c1".into(),
            oci_version: "1.2.0".into(),
            bundle: "/".into(),
            annotations: [("k".to_string(), "v".to_string())].into(),
            ..HooksPlan::default()
        };
        match kind {
            HookKind::Prestart => plan.prestart = hooks,
            HookKind::CreateRuntime => plan.create_runtime = hooks,
            HookKind::CreateContainer => plan.create_container = hooks,
            HookKind::StartContainer => plan.start_container = hooks,
            HookKind::Poststart => plan.poststart = hooks,
            HookKind::Poststop => plan.poststop = hooks,
        }
        plan
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("shim-rs-hooks-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn state_json_follows_the_schema() {
        let plan = plan_with(HookKind::Poststop, vec![]);
        let v: serde_json::Value =
            serde_json::from_slice(&state_json(&plan, Status::Created, Some(42))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ociVersion": "1.2.0", "id": "c1", "status": "created",
                "pid": 42, "bundle": "/", "annotations": {"k": "v"}})
        );
        let mut plan = plan;
        plan.annotations.clear();
        let v: serde_json::Value =
            serde_json::from_slice(&state_json(&plan, Status::Stopped, None)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ociVersion": "1.2.0", "id": "c1", "status": "stopped", "bundle": "/"})
        );
    }

    #[test]
    fn hook_gets_state_args_env_and_cwd_exactly() {
        let dir = tempdir("exact");
        let out = dir.join("out");
        let hook = HookPlan {
            path: "/bin/sh".into(),
            args: vec![
                "custom-argv0".into(),
                "-c".into(),
                format!(
                    "{{ cat; echo; head -c 12 /proc/$$/cmdline; echo \"|$0|$1\"; pwd; \
                     env | grep -v '^PWD=' | sort; }} > {}",
                    out.display()
                ),
                "zero".into(),
                "first arg".into(),
            ],
            env: vec!["B=2".into(), "A=x=y".into()],
            timeout_secs: Some(10),
        };
        let plan = plan_with(HookKind::CreateRuntime, vec![hook]);
        create_runtime(&plan, 77).unwrap();
        let got = std::fs::read_to_string(&out).unwrap();
        let mut lines = got.lines();
        let state: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(state["status"], "creating");
        assert_eq!(state["pid"], 77);
        assert_eq!(lines.next(), Some("custom-argv0|zero|first arg"));
        assert_eq!(lines.next(), Some("/"), "cwd is the bundle");
        // Only the hook's env (the shell may add its own SHLVL/_ bookkeeping).
        let env: Vec<&str> = lines
            .filter(|l| !l.starts_with("SHLVL=") && !l.starts_with("_="))
            .collect();
        assert_eq!(env, ["A=x=y", "B=2"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failure_names_the_hook_with_status_and_output() {
        let plan = plan_with(
            HookKind::CreateRuntime,
            vec![
                sh("true"),
                sh("echo to-stdout; echo to-stderr >&2; exit 3"),
                sh("echo never >&2; exit 9"),
            ],
        );
        let e = create_runtime(&plan, 1).unwrap_err().to_string();
        assert_eq!(
            e,
            "config.json: hooks.createRuntime[1] (/bin/sh): exited with status 3; \
             stderr: to-stderr; stdout: to-stdout"
        );
    }

    #[test]
    fn missing_binary_is_an_error_naming_it() {
        let mut hook = sh("");
        hook.path = "/nonexistent/hook".into();
        let plan = plan_with(HookKind::Prestart, vec![hook]);
        let e = create_runtime(&plan, 1).unwrap_err().to_string();
        assert!(
            e.contains("hooks.prestart[0] (/nonexistent/hook): cannot execute"),
            "{e}"
        );
    }

    #[test]
    fn timeout_kills_the_hook_and_what_it_started() {
        let dir = tempdir("timeout");
        let pidfile = dir.join("pid");
        let mut hook = sh(&format!(
            "echo started; sleep 30 & echo $! > {}; wait",
            pidfile.display()
        ));
        hook.timeout_secs = Some(1);
        let plan = plan_with(HookKind::Poststart, vec![hook]);
        let t0 = Instant::now();
        let e = poststart(&plan, 1, Status::Running)
            .unwrap_err()
            .to_string();
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(3),
            "{took:?}"
        );
        assert!(
            e.ends_with("timed out after 1s and was killed; stdout: started"),
            "{e}"
        );
        // The background sleep was in the hook's process group: gone too (maybe a zombie
        // until its new parent reaps it).
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let alive = || {
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                .map(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
                .unwrap_or(false)
        };
        // SIGKILL is delivered asynchronously: on a loaded machine the child may take a
        // moment to die.
        let deadline = Instant::now() + Duration::from_secs(2);
        while alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(), "the hook's background child survived the timeout");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exit_ends_the_wait_even_if_a_child_keeps_the_pipes() {
        let plan = plan_with(HookKind::Poststart, vec![sh("sleep 5 & exit 0")]);
        let t0 = Instant::now();
        poststart(&plan, 1, Status::Running).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    }

    #[test]
    fn large_state_and_output_do_not_deadlock() {
        let mut plan = plan_with(
            HookKind::CreateRuntime,
            vec![sh(
                "yes | head -c 300000; cat >/dev/null; yes | head -c 300000 >&2; exit 1",
            )],
        );
        // A state larger than a pipe buffer.
        plan.annotations.insert("big".into(), "x".repeat(1 << 20));
        let e = create_runtime(&plan, 1).unwrap_err().to_string();
        assert!(e.contains("exited with status 1"), "{}", &e[..200]);
        assert!(e.contains("more bytes]"), "output not truncated");
        assert!(e.len() < 3 * OUTPUT_LIMIT, "error is {} bytes", e.len());
    }

    #[test]
    fn a_hook_ignoring_its_stdin_still_succeeds() {
        let mut plan = plan_with(HookKind::CreateRuntime, vec![sh("exit 0")]);
        plan.annotations.insert("big".into(), "x".repeat(1 << 20));
        create_runtime(&plan, 1).unwrap();
    }

    #[test]
    fn poststop_runs_every_hook_and_returns_the_failures() {
        let dir = tempdir("poststop");
        let marker = dir.join("ran");
        let plan = plan_with(
            HookKind::Poststop,
            vec![sh("exit 4"), sh(&format!("cat > {}", marker.display()))],
        );
        let errors = poststop(&plan);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().contains("hooks.poststop[0]"),
            "{}",
            errors[0]
        );
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&marker).unwrap()).unwrap();
        assert_eq!(state["status"], "stopped");
        assert!(state.get("pid").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
