//! End-to-end test harness: one private containerd per test binary.
//!
//! The first call to [`env()`] creates a unique WORKDIR under /tmp, copies the
//! shim binary into WORKDIR/bin and runs `tests/harness/containerd.sh start`
//! (containerd with private root/state/socket, BINDIR first on its PATH, the
//! busybox image imported into a namespace unique to this process). A
//! `libc::atexit` hook runs `containerd.sh stop` when the test binary exits
//! (also after failed tests). `SHIM_RS_KEEP=1` keeps the environment for
//! debugging.
//!
//! Runtime under test: `SHIM_RS_RUNTIME` (default `io.containerd.rs.v1`);
//! `SHIM_RS_RUNTIME=io.containerd.runc.v2` validates the harness with runc.
//!
//! Not root, or no containerd: every test using [`env()`] fails with a message.
#![allow(dead_code)]

pub mod cgroup;
pub mod spec;

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Image imported by `containerd.sh start`.
pub const IMAGE: &str = "localhost/shim-rs/busybox:latest";
/// Our runtime type.
pub const RS_RUNTIME: &str = "io.containerd.rs.v1";
/// Default timeout of one `ctr` call.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `leftovers` waits for asynchronous teardown to settle.
pub const SETTLE: Duration = Duration::from_secs(5);

/// The shim binary built by cargo for this package.
const SHIM_BIN: &str = env!("CARGO_BIN_EXE_containerd-shim-rs-v1");

/// The shim under test: `SHIM_RS_SHIM_BIN` (another build, e.g. of an older commit, to
/// reproduce a fault against it), else the one cargo built.
fn shim_source() -> PathBuf {
    std::env::var_os("SHIM_RS_SHIM_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SHIM_BIN))
}

/// The private containerd of this test process.
#[derive(Debug)]
pub struct Env {
    pub workdir: PathBuf,
    pub bindir: PathBuf,
    /// containerd's grpc address (a unix socket path).
    pub address: String,
    pub namespace: String,
    pub ctr_bin: PathBuf,
    pub containerd_bin: PathBuf,
    /// As `containerd --version` prints it, e.g. "1.6.20~ds1", "v2.1.9+unknown".
    pub containerd_version: String,
    pub containerd_pid: i32,
    /// Our shim as containerd sees it (WORKDIR/bin/containerd-shim-rs-v1).
    pub shim_bin: PathBuf,
    pub script: PathBuf,
}

static ENV: OnceLock<Result<Env, String>> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);
/// Tests hold `shared()`; a test that must not overlap others (strace on
/// containerd slows every shim it follows) holds `exclusive()`.
static SERIAL: RwLock<()> = RwLock::new(());

/// Guard for an ordinary test: may run alongside other ordinary tests.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    SERIAL.read().unwrap_or_else(|e| e.into_inner())
}

/// Guard for a test that must run alone.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    SERIAL.write().unwrap_or_else(|e| e.into_inner())
}

/// Every id handed out, so the exit hook can remove shim sockets they leaked.
static IDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The environment, started on first use. Panics with the reason when it cannot be set up.
pub fn env() -> &'static Env {
    match ENV.get_or_init(setup) {
        Ok(e) => e,
        Err(msg) => panic!("e2e environment unavailable: {msg}"),
    }
}

/// Set by [`cri_env()`]: this test binary's containerd runs in CRI mode.
static CRI_MODE: AtomicBool = AtomicBool::new(false);

/// The environment with containerd's CRI plugin enabled (`containerd.sh` with
/// `SHIM_RS_CRI=1`); a test binary uses either this or [`env()`], not both.
pub fn cri_env() -> &'static Env {
    CRI_MODE.store(true, Ordering::SeqCst);
    env()
}

/// Set by [`debug_env()`]: this test binary's containerd logs at debug level.
static DEBUG_LOG: AtomicBool = AtomicBool::new(false);

/// The environment with containerd logging at debug level (it then logs every event a shim
/// forwards, "event forwarded" with its topic and namespace); a test binary uses either this
/// or [`env()`] first.
pub fn debug_env() -> &'static Env {
    DEBUG_LOG.store(true, Ordering::SeqCst);
    env()
}

/// The runtime under test (`SHIM_RS_RUNTIME`, default `io.containerd.rs.v1`).
pub fn runtime() -> String {
    std::env::var("SHIM_RS_RUNTIME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| RS_RUNTIME.to_string())
}

/// True when testing our own shim (not a stock runtime used to validate the harness).
pub fn testing_our_shim() -> bool {
    runtime() == RS_RUNTIME
}

/// containerd's shim binary name for a runtime type: io.containerd.NAME.VER -> containerd-shim-NAME-VER.
pub fn shim_binary_name(runtime: &str) -> String {
    let parts: Vec<&str> = runtime.split('.').collect();
    assert!(parts.len() >= 4, "unexpected runtime name {runtime}");
    format!(
        "containerd-shim-{}-{}",
        parts[parts.len() - 2],
        parts[parts.len() - 1]
    )
}

/// The namespace of this test process.
pub fn namespace() -> &'static str {
    &env().namespace
}

/// A container id unique on this machine: PREFIX-PID-COUNTER-RANDOM.
pub fn unique_id(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = format!("{prefix}-{}-{n}-{}", std::process::id(), random_hex(3));
    IDS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(id.clone());
    id
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_err()
    {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        buf.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (t >> (8 * (i % 4))) as u8);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

// ------------------------------------------------------------- setup ---

fn harness_script() -> PathBuf {
    // file!() is relative to the workspace root (= this package's manifest dir),
    // or absolute when this module is included through #[path].
    let here = Path::new(file!());
    let here = if here.is_absolute() {
        here.to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(here)
    };
    here.parent()
        .and_then(Path::parent)
        .map(|tests| tests.join("harness").join("containerd.sh"))
        .expect("tests/common/mod.rs has no tests/ parent")
}

/// An executable by name on PATH (or a path as is).
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name)).filter(|p| p.is_file());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| {
                p.is_file()
                    && p.metadata()
                        .map(|m| m.permissions().mode() & 0o111 != 0)
                        .unwrap_or(false)
            })
    })
}

/// "PID STARTTIME" of a process, to tell a live owner from a reused pid.
fn proc_identity(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    // fields after comm: state(0) ppid(1) ... starttime is field 22 overall -> index 19 here
    let start = rest.split_whitespace().nth(19)?;
    Some(format!("{pid} {start}"))
}

/// Stops environments of earlier test processes that died without cleaning up
/// (e.g. killed by SIGKILL): only WORKDIRs made by this harness whose owner is gone.
fn sweep_stale(script: &Path) {
    let Ok(rd) = fs::read_dir("/tmp") else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("shim-rs-e2e-") {
            continue;
        }
        let dir = e.path();
        let Ok(owner) = fs::read_to_string(dir.join("owner")) else {
            continue;
        };
        let owner = owner.trim();
        let pid: u32 = match owner.split_whitespace().next().and_then(|p| p.parse().ok()) {
            Some(p) => p,
            None => continue,
        };
        if proc_identity(pid).as_deref() == Some(owner) {
            continue; // owner still running
        }
        eprintln!(
            "e2e harness: cleaning stale environment {} (owner {owner} gone)",
            dir.display()
        );
        let _ = run_with_timeout(
            Command::new("bash").arg(script).arg("stop").arg(&dir),
            Duration::from_secs(60),
        );
    }
}

fn setup() -> Result<Env, String> {
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "the e2e tests must run as root (containerd, mounts, namespaces); \
                    run them as root, e.g. `sudo -E make test`"
                .into(),
        );
    }
    let cbin = std::env::var("CONTAINERD_BIN").unwrap_or_else(|_| "containerd".into());
    // SHIM_RS_CONTAINERD=VERSION: containerd.sh resolves a fetched version itself.
    let fetched = std::env::var("SHIM_RS_CONTAINERD").is_ok_and(|v| !v.is_empty() && v != "system");
    if !fetched && find_on_path(&cbin).is_none() {
        return Err(format!(
            "containerd binary `{cbin}` not found (apt-get install containerd, or set CONTAINERD_BIN)"
        ));
    }
    let script = harness_script();
    if !script.is_file() {
        return Err(format!("harness script {} missing", script.display()));
    }
    sweep_stale(&script);

    let pid = std::process::id();
    let workdir = PathBuf::from(format!("/tmp/shim-rs-e2e-{pid}-{}", random_hex(4)));
    let bindir = workdir.join("bin");
    fs::create_dir_all(&bindir).map_err(|e| format!("mkdir {}: {e}", bindir.display()))?;
    let owner = proc_identity(pid).unwrap_or_else(|| pid.to_string());
    fs::write(workdir.join("owner"), format!("{owner}\n")).map_err(|e| e.to_string())?;
    let shim_bin = bindir.join("containerd-shim-rs-v1");
    let source = shim_source();
    fs::copy(&source, &shim_bin).map_err(|e| format!("copy {}: {e}", source.display()))?;
    let namespace = format!("shimrs-e2e-{pid}-{}", random_hex(2));

    // From here on the atexit hook owns the cleanup, whatever happens next.
    let _ = CLEANUP.set((script.clone(), workdir.clone()));
    unsafe {
        libc::atexit(cleanup_at_exit);
    }

    start_containerd(&script, &workdir, &bindir, &namespace)?;
    let envfile = fs::read_to_string(workdir.join("env")).map_err(|e| format!("read env: {e}"))?;
    let kv: HashMap<&str, &str> = envfile.lines().filter_map(|l| l.split_once('=')).collect();
    if let Some(v) = kv.get("CONTAINERD_VERSION") {
        eprintln!("e2e harness: containerd {v} in {}", workdir.display());
    }
    let get = |k: &str| {
        kv.get(k)
            .map(|s| s.to_string())
            .ok_or(format!("{k} missing in env file"))
    };
    Ok(Env {
        address: get("ADDRESS")?,
        ctr_bin: PathBuf::from(get("CTR_BIN")?),
        containerd_bin: PathBuf::from(get("CONTAINERD_BIN")?),
        containerd_version: get("CONTAINERD_VERSION")?,
        containerd_pid: get("PID")?.parse().map_err(|e| format!("bad PID: {e}"))?,
        namespace,
        shim_bin,
        workdir,
        bindir,
        script,
    })
}

/// `containerd.sh start WORKDIR BINDIR` with this binary's settings (namespace, CRI mode,
/// log level); also what [`restart_containerd`] runs.
fn start_containerd(
    script: &Path,
    workdir: &Path,
    bindir: &Path,
    namespace: &str,
) -> Result<(), String> {
    let mut cmd = Command::new("bash");
    cmd.arg(script)
        .arg("start")
        .arg(workdir)
        .arg(bindir)
        .env("CONTAINERD_NAMESPACE", namespace)
        .env(
            "SHIM_RS_CRI",
            if CRI_MODE.load(Ordering::SeqCst) {
                "1"
            } else {
                "0"
            },
        );
    if DEBUG_LOG.load(Ordering::SeqCst) {
        cmd.env("CONTAINERD_LOG_LEVEL", "debug");
    }
    let (out, timed_out) = run_with_timeout(&mut cmd, Duration::from_secs(180));
    if timed_out || !out.status.success() {
        return Err(format!(
            "`containerd.sh start {}` failed ({}): {}{}",
            workdir.display(),
            if timed_out {
                "timed out".to_string()
            } else {
                out.status.to_string()
            },
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// The pid of this binary's containerd now (a restart changes it; `Env::containerd_pid` is
/// the first one).
pub fn containerd_pid() -> i32 {
    let e = env();
    fs::read_to_string(e.workdir.join("containerd.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(e.containerd_pid)
}

/// True while `pid` exists and is not a zombie (this VM's pid 1 reaps orphans late).
pub fn pid_alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| {
            let state = st[st.rfind(')')? + 2..].chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// Stops this binary's containerd with `signal` (SIGTERM: a clean shutdown; SIGKILL: a
/// crash), runs `while_down`, and starts it again with the same config, root, state and
/// sockets, as a host's service manager would. Shims and containers keep running meanwhile.
/// Returns the new containerd's pid. Hold [`exclusive()`]: every other test loses its
/// containerd for a while.
pub fn restart_containerd(signal: i32, while_down: impl FnOnce()) -> i32 {
    let e = env();
    let pid = containerd_pid();
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let config = format!("{}/config.toml", e.workdir.display());
    assert!(
        String::from_utf8_lossy(&cmdline).contains(&config),
        "pid {pid} is not this binary's containerd"
    );
    // SAFETY: kill(2) of the containerd this test binary started (checked above).
    unsafe { libc::kill(pid, signal) };
    assert!(
        wait_until(Duration::from_secs(20), || !pid_alive(pid)),
        "containerd {pid} still alive 20 s after signal {signal}"
    );
    while_down();
    start_containerd(&e.script, &e.workdir, &e.bindir, &e.namespace)
        .unwrap_or_else(|err| panic!("restart containerd: {err}"));
    let new = containerd_pid();
    assert_ne!(new, pid, "containerd was not restarted");
    new
}

static CLEANUP: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();

extern "C" fn cleanup_at_exit() {
    let Some((script, workdir)) = CLEANUP.get() else {
        return;
    };
    if std::env::var_os("SHIM_RS_KEEP").is_some_and(|v| !v.is_empty() && v != "0") {
        eprintln!(
            "e2e harness: SHIM_RS_KEEP set, leaving {} running; stop it with: {} stop {}",
            workdir.display(),
            script.display(),
            workdir.display()
        );
        return;
    }
    let (out, timed_out) = run_with_timeout(
        Command::new("bash").arg(script).arg("stop").arg(workdir),
        Duration::from_secs(90),
    );
    if timed_out || !out.status.success() {
        eprintln!(
            "e2e harness: `containerd.sh stop {}` failed: {}{}",
            workdir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Shim sockets of our ids whose bundles are gone (a shim killed hard, say):
    // the name hashes our private containerd address, so they are provably ours,
    // and every shim of that containerd is dead by now.
    if let Some(Ok(e)) = ENV.get() {
        let ids = IDS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for id in ids {
            let sock = socket_for(&e.address, &e.namespace, &id);
            if fs::symlink_metadata(&sock).is_ok_and(|m| m.file_type().is_socket()) {
                eprintln!(
                    "e2e harness: removing leaked shim socket {} of {id}",
                    sock.display()
                );
                let _ = fs::remove_file(&sock);
            }
        }
    }
}

// ------------------------------------------------------- processes ---

/// Runs a command to completion with stdin closed; on timeout kills it with
/// SIGKILL. Returns its output and whether it timed out.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> (Output, bool) {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    wait_output(child, timeout)
}

/// Waits for a spawned child (stdout/stderr piped) with a deadline; SIGKILL on timeout.
pub fn wait_output(mut child: Child, timeout: Duration) -> (Output, bool) {
    let mut so = child.stdout.take();
    let mut se = child.stderr.take();
    let t_out = thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = so.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let t_err = thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = se.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill(); // SIGKILL
                break child.wait().expect("wait after kill");
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("wait: {e}"),
        }
    };
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    (
        Output {
            status,
            stdout,
            stderr,
        },
        timed_out,
    )
}

/// Exit code as a shell reports it (128+N when killed by signal N).
pub fn exit_code(st: &ExitStatus) -> i32 {
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

/// A `ctr --address ADDR -n NS ARGS...` command, not yet started.
pub fn ctr_command<S: AsRef<OsStr>>(args: &[S]) -> Command {
    let e = env();
    let mut c = Command::new(&e.ctr_bin);
    c.arg("--address")
        .arg(&e.address)
        .arg("-n")
        .arg(&e.namespace);
    c.args(args);
    c
}

/// Runs ctr in our namespace with the default timeout; panics if it times out.
pub fn ctr<S: AsRef<OsStr>>(args: &[S]) -> Output {
    ctr_timeout(args, CTR_TIMEOUT)
}

/// Runs ctr in our namespace; SIGKILL and panic after `timeout`.
pub fn ctr_timeout<S: AsRef<OsStr>>(args: &[S], timeout: Duration) -> Output {
    let mut cmd = ctr_command(args);
    let (out, timed_out) = run_with_timeout(&mut cmd, timeout);
    if timed_out {
        panic!(
            "ctr {:?} timed out after {timeout:?} (killed)\nstdout: {}\nstderr: {}\n{}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            containerd_log_tail(20)
        );
    }
    out
}

/// Like [`ctr`] but panics unless ctr succeeded; returns stdout.
pub fn ctr_ok<S: AsRef<OsStr>>(args: &[S]) -> String {
    let out = ctr(args);
    assert!(
        out.status.success(),
        "ctr {:?} failed ({}):\nstdout: {}\nstderr: {}",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// For listing calls (`task ls`, `containers ls`, ...): containerd 1.6 fails a
/// whole `task ls` when one task is torn down concurrently ("ttrpc: closed"),
/// so retry a few times before panicking.
pub fn ctr_list<S: AsRef<OsStr>>(args: &[S]) -> String {
    for _ in 0..5 {
        let out = ctr(args);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        thread::sleep(Duration::from_millis(50));
    }
    ctr_ok(args)
}

/// `ctr run --rm --runtime RUNTIME IMAGE ID ARGS...` -> (stdout, stderr, exit code).
pub fn run(runtime: &str, id: &str, args: &[&str]) -> (String, String, i32) {
    let mut a: Vec<&str> = vec!["run", "--rm", "--runtime", runtime, IMAGE, id];
    a.extend_from_slice(args);
    let out = ctr(&a);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        exit_code(&out.status),
    )
}

/// Task status from `ctr task ls` ("RUNNING", "STOPPED", ...), None if no such task.
pub fn task_status(id: &str) -> Option<String> {
    let out = ctr_list(&["task", "ls"]);
    out.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&id)).then(|| f.last().unwrap_or(&"").to_string())
    })
}

/// Polls until `cond` holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A background child that is SIGKILLed and reaped when dropped.
pub struct Background(pub Option<Child>);

impl Background {
    pub fn pid(&self) -> i32 {
        self.0.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }
    /// Sends `sig`, then waits up to `timeout`, then SIGKILL. Returns the exit status.
    pub fn stop(&mut self, sig: i32, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.0.take()?;
        unsafe {
            libc::kill(child.id() as i32, sig);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
    pub fn take(&mut self) -> Option<Child> {
        self.0.take()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `during` while strace follows our containerd and every process it starts (shims,
/// runtimes, containers), tracing `syscalls` (strace's `-e trace=` list); returns the trace.
pub fn trace_containerd(syscalls: &str, during: impl FnOnce()) -> String {
    let strace = find_on_path("strace").expect("strace missing: apt-get install strace");
    let e = env();
    let trace_file = e.workdir.join(format!("strace-{}.txt", unique_id("trace")));
    let child = Command::new(&strace)
        .args(["-f", "-qq", "-s", "1024", "-e"])
        .arg(format!("trace={syscalls}"))
        .arg("-o")
        .arg(&trace_file)
        .arg("-p")
        .arg(e.containerd_pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strace");
    let mut st = Background(Some(child));
    let tracer = st.pid();
    // Attached when every thread of containerd has strace as its tracer.
    let attached = wait_until(Duration::from_secs(30), || {
        let Ok(tasks) = fs::read_dir(format!("/proc/{}/task", e.containerd_pid)) else {
            return false;
        };
        tasks.flatten().all(|t| {
            fs::read_to_string(t.path().join("status"))
                .map(|s| s.lines().any(|l| l == format!("TracerPid:\t{tracer}")))
                .unwrap_or(false)
        })
    });
    assert!(
        attached,
        "strace did not attach to containerd {}",
        e.containerd_pid
    );
    during();
    // Detach (SIGINT makes strace detach cleanly and flush).
    let status = st.stop(libc::SIGINT, Duration::from_secs(10));
    assert!(status.is_some(), "strace did not exit");
    let trace = fs::read_to_string(&trace_file).expect("strace output");
    let _ = fs::remove_file(&trace_file);
    trace
}

/// Last lines of our containerd's log, for failure messages.
pub fn containerd_log_tail(n: usize) -> String {
    let Some(Ok(e)) = ENV.get() else {
        return String::new();
    };
    let log = fs::read_to_string(e.workdir.join("containerd.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    format!(
        "--- last {n} lines of {}/containerd.log ---\n{}",
        e.workdir.display(),
        lines[lines.len().saturating_sub(n)..].join("\n")
    )
}

// ------------------------------------------------------- leftovers ---

struct ProcInfo {
    pid: i32,
    ppid: i32,
    argv: Vec<String>,
    root: Option<String>,
    mntns: Option<String>,
}

fn processes() -> Vec<ProcInfo> {
    let me = std::process::id() as i32;
    let mut v = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if f.len() < 2 || f[0] == "Z" || f[0] == "X" {
            continue;
        }
        let ppid = f[1].parse().unwrap_or(0);
        let argv = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                b.split(|c| *c == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let root = fs::read_link(format!("/proc/{pid}/root"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        let mntns = fs::read_link(format!("/proc/{pid}/ns/mnt"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        v.push(ProcInfo {
            pid,
            ppid,
            argv,
            root,
            mntns,
        });
    }
    v
}

fn is_our_shim(p: &ProcInfo, address: &str) -> bool {
    p.argv
        .windows(2)
        .any(|w| w[0] == "-address" && w[1] == address)
        || p.argv.iter().any(|a| a == &format!("-address={address}"))
}

/// The process runs in a container of our containerd: chrooted under WORKDIR, or
/// in another mount namespace whose root mount names a path under WORKDIR.
fn rooted_in(p: &ProcInfo, workdir: &str, self_mntns: &Option<String>) -> bool {
    let prefix = format!("{workdir}/");
    if p.root.as_deref().is_some_and(|r| r.starts_with(&prefix)) {
        return true;
    }
    if p.mntns.is_none() || p.mntns == *self_mntns {
        return false;
    }
    fs::read_to_string(format!("/proc/{}/mountinfo", p.pid))
        .map(|mi| {
            mi.lines()
                .any(|l| l.split(' ').nth(4) == Some("/") && l.contains(&prefix))
        })
        .unwrap_or(false)
}

/// Live shim processes of our containerd (daemons and launchers: argv has its `-address`).
pub fn our_shims() -> Vec<i32> {
    let address = &env().address;
    processes()
        .iter()
        .filter(|p| is_our_shim(p, address))
        .map(|p| p.pid)
        .collect()
}

/// Live container processes of our containerd (chrooted under WORKDIR, or in a mount
/// namespace whose root mount names WORKDIR), whatever their parent: "pid argv" each.
pub fn our_container_processes() -> Vec<String> {
    let e = env();
    let workdir = e.workdir.to_string_lossy().into_owned();
    let self_mntns = fs::read_link("/proc/self/ns/mnt")
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    processes()
        .iter()
        .filter(|p| !is_our_shim(p, &e.address) && rooted_in(p, &workdir, &self_mntns))
        .map(|p| format!("{} {}", p.pid, p.argv.join(" ")))
        .collect()
}

/// sha256 hex of a string, via sha256sum (coreutils).
fn sha256_hex(s: &str) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// The shim socket containerd (and the containerd-shim crate) derive for a task:
/// /run/containerd/s/sha256("<containerd address>/<namespace>/<id>").
pub fn shim_socket_path(id: &str) -> PathBuf {
    let e = env();
    socket_for(&e.address, &e.namespace, id)
}

fn socket_for(address: &str, namespace: &str, id: &str) -> PathBuf {
    PathBuf::from("/run/containerd/s").join(sha256_hex(&format!("{address}/{namespace}/{id}")))
}

/// Everything a finished container `id` may have left behind; empty when clean.
/// Checks, once (see [`assert_no_leftovers`] for the settling wait):
/// - mounts mentioning the id (/proc/self/mountinfo);
/// - live processes whose argv mentions the id, or which sit in cgroup <ns>/<id>;
/// - orphaned container processes of our containerd (rooted under WORKDIR but no
///   longer below one of our shims) - not attributable to one id, reported anyway;
/// - the shim socket derived for (our address, namespace, id);
/// - the bundle dir, /run/containerd/<runtime>/<ns>/<id> state, cgroup dirs <ns>/<id>;
/// - containerd metadata: container, task, snapshot named id.
pub fn leftovers(id: &str) -> Vec<String> {
    let e = env();
    let ns = &e.namespace;
    let workdir = e.workdir.to_string_lossy().into_owned();
    let mut found = Vec::new();

    if let Ok(mi) = fs::read_to_string("/proc/self/mountinfo") {
        for l in mi.lines().filter(|l| l.contains(id)) {
            found.push(format!("mount: {l}"));
        }
    }

    let procs = processes();
    let self_mntns = fs::read_link("/proc/self/ns/mnt")
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let shims: HashSet<i32> = procs
        .iter()
        .filter(|p| is_our_shim(p, &e.address))
        .map(|p| p.pid)
        .collect();
    let ppid: HashMap<i32, i32> = procs.iter().map(|p| (p.pid, p.ppid)).collect();
    let cg_needle = format!("/{ns}/{id}");
    for p in &procs {
        if p.argv.iter().any(|a| a.contains(id)) {
            found.push(format!(
                "process {} mentions the id: {}",
                p.pid,
                p.argv.join(" ")
            ));
            continue;
        }
        if let Ok(cg) = fs::read_to_string(format!("/proc/{}/cgroup", p.pid)) {
            if cg
                .lines()
                .any(|l| l.ends_with(&cg_needle) || l.contains(&format!("{cg_needle}/")))
            {
                found.push(format!(
                    "process {} is in cgroup {cg_needle}: {}",
                    p.pid,
                    p.argv.join(" ")
                ));
                continue;
            }
        }
        if !shims.contains(&p.pid) && rooted_in(p, &workdir, &self_mntns) {
            let mut a = p.ppid;
            let mut under_shim = false;
            for _ in 0..64 {
                if shims.contains(&a) {
                    under_shim = true;
                    break;
                }
                match ppid.get(&a) {
                    Some(&next) if a > 1 => a = next,
                    _ => break,
                }
            }
            if !under_shim {
                found.push(format!(
                    "orphaned container process {} (ppid {}, not below a shim): {}",
                    p.pid,
                    p.ppid,
                    p.argv.join(" ")
                ));
            }
        }
    }

    let sock = shim_socket_path(id);
    if sock.exists() {
        found.push(format!("shim socket {} still exists", sock.display()));
    }
    let bundle = e
        .workdir
        .join("state/io.containerd.runtime.v2.task")
        .join(ns)
        .join(id);
    if bundle.exists() {
        found.push(format!("bundle {} still exists", bundle.display()));
    }
    if let Ok(rd) = fs::read_dir("/run/containerd") {
        for d in rd.flatten() {
            let p = d.path().join(ns).join(id);
            if p.exists() {
                found.push(format!("{} still exists", p.display()));
            }
        }
    }
    for d in cgroup::Cgroup::of_container(id).existing_dirs() {
        found.push(format!("cgroup {} still exists", d.display()));
    }

    let has_line = |out: &str, skip: usize| {
        out.lines()
            .skip(skip)
            .any(|l| l.split_whitespace().next() == Some(id))
    };
    if has_line(&ctr_list(&["containers", "ls", "-q"]), 0) {
        found.push("containerd still lists the container".into());
    }
    if has_line(&ctr_list(&["tasks", "ls"]), 1) {
        found.push("containerd still lists the task".into());
    }
    if has_line(&ctr_list(&["snapshots", "ls"]), 1) {
        found.push("containerd still has the snapshot".into());
    }
    found
}

/// [`leftovers`] after waiting up to [`SETTLE`] for them to go away.
pub fn leftovers_settled(id: &str) -> Vec<String> {
    let mut last = Vec::new();
    wait_until(SETTLE, || {
        last = leftovers(id);
        last.is_empty()
    });
    last
}

/// Asserts that [`leftovers`] becomes empty within [`SETTLE`].
pub fn assert_no_leftovers(id: &str) {
    let last = leftovers_settled(id);
    assert!(
        last.is_empty(),
        "leftovers of {id} after {SETTLE:?}:\n  {}",
        last.join("\n  ")
    );
}

/// Kills, deletes and removes container `id` (a paused one is resumed first), ignoring
/// whatever is already gone.
pub fn remove_container(id: &str) {
    let _ = ctr(&["task", "resume", id]);
    let _ = ctr(&["task", "kill", "-s", "SIGKILL", id]);
    wait_until(Duration::from_secs(10), || {
        matches!(task_status(id).as_deref(), None | Some("STOPPED"))
    });
    let _ = ctr(&["task", "delete", id]);
    let _ = ctr(&["container", "rm", id]);
}

/// The pid of task `id` as `ctr task ls` reports it.
pub fn task_pid(id: &str) -> i32 {
    let out = ctr_list(&["task", "ls"]);
    out.lines()
        .skip(1)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| f[1].parse().ok())?
        })
        .unwrap_or_else(|| panic!("no task {id} in:\n{out}"))
}

/// A detached container of runtime `rt` running `args`, removed when dropped.
pub struct Detached(pub String);

impl Detached {
    pub fn start(prefix: &str, rt: &str, extra: &[&str], args: &[&str]) -> Detached {
        let id = unique_id(prefix);
        let mut a = vec!["run", "-d", "--runtime", rt];
        a.extend_from_slice(extra);
        a.push(IMAGE);
        a.push(&id);
        a.extend_from_slice(args);
        ctr_ok(&a);
        Detached(id)
    }

    /// `sleep 600` under the runtime being tested.
    pub fn sleeping(prefix: &str) -> Detached {
        Detached::start(prefix, &runtime(), &[], &["sleep", "600"])
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        remove_container(&self.0);
    }
}
