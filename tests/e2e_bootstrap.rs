//! The `start` action driven exactly as each containerd generation drives it (argv, env,
//! stdin), without a containerd: the reply is parsed the way that containerd parses it, then
//! the task service is called over ttrpc at the address it names, and the daemon is shut down.
//!
//! containerd 2.3+ is not packaged for Debian, so these tests are its only coverage: it writes
//! a protobuf `BootstrapParams` on stdin (pkg/shim `Command`, containerd v2.3.4) and reads back
//! a protobuf `BootstrapResult` (core/runtime/v2 `parseStartResponse`), with stdout and stderr
//! combined. 1.6 (bare address) and 1.7–2.2 (JSON) are also run against real containerds by
//! the e2e matrix (`make test`); here their exact start calls are checked byte for byte.
//!
//! Needs root: the legacy protocols put the socket in /run/containerd/s.

mod common;

use common::wait_output;
use shim::protos::{
    api::{ConnectRequest, ConnectResponse, Empty, ShutdownRequest, StateRequest, StateResponse},
    protobuf::{
        well_known_types::empty::Empty as PbEmpty, CodedOutputStream, Message, UnknownValueRef,
    },
    ttrpc::{self, Client, Code},
};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-rs-v1");
const V2: &str = "containerd.task.v2.Task";
const V3: &str = "containerd.task.v3.Task";
const CONTAINERD: &str = "/usr/bin/containerd";

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the e2e tests must run as root (the legacy start protocols bind in /run/containerd/s)"
    );
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("/dev/urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A private directory with a bundle in it; removed (with anything the test left) on drop.
struct Scratch {
    dir: PathBuf,
    bundle: PathBuf,
    /// Unique per test: the shim's -id.
    id: String,
    namespace: String,
    /// containerd's addresses as the shim is told them (nothing listens there).
    grpc: String,
    ttrpc: String,
}

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let r = random_hex(3);
        let dir = PathBuf::from(format!("/tmp/shim-rs-bs-{}-{r}", std::process::id()));
        let bundle = dir.join("bundle");
        fs::create_dir_all(&bundle).unwrap();
        // A regular file as the log "fifo": the daemon writes its log lines into it.
        fs::write(bundle.join("log"), "").unwrap();
        fs::write(bundle.join("config.json"), "{}").unwrap();
        Scratch {
            bundle,
            id: format!("bs-{tag}-{}-{r}", std::process::id()),
            namespace: format!("shimrs-bs-{r}"),
            grpc: dir.join("containerd.sock").display().to_string(),
            ttrpc: dir.join("containerd.sock.ttrpc").display().to_string(),
            dir,
        }
    }

    /// The daemon's log so far.
    fn log(&self) -> String {
        fs::read_to_string(self.bundle.join("log")).unwrap_or_default()
    }
}

/// Live processes whose argv has this test's unique id as an argument: the daemon and its
/// launcher are forks of `start` and keep its argv.
fn processes_of(id: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for p in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let argv = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if alive(pid) && argv.split(|b| *b == 0).any(|a| a == id.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

impl Drop for Scratch {
    /// Also after a failed test: kills what provably belongs to it, removes its sockets.
    fn drop(&mut self) {
        for pid in processes_of(&self.id) {
            // SAFETY: kill(2); the pid runs with this test's unique id in its argv.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let legacy = Path::new("/run/containerd/s").join(socket_name(self));
        if legacy.exists() {
            let _ = fs::remove_file(legacy);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Runs `containerd-shim-rs-v1 ARGS` in the bundle with `stdin`, as containerd's exec.Cmd does
/// (the caller's environment plus `env`, without `unset`).
fn shim_start(
    s: &Scratch,
    args: &[&str],
    env: &[(&str, &str)],
    unset: &[&str],
    stdin: &[u8],
) -> Output {
    let mut cmd = Command::new(SHIM);
    cmd.args(args)
        .current_dir(&s.bundle)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for k in unset {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().expect("spawn the shim");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).expect("write stdin");
    drop(input);
    let (out, timed_out) = wait_output(child, Duration::from_secs(30));
    assert!(!timed_out, "start did not return within 30 s");
    out
}

/// The legacy argv every containerd since 1.7 passes (2.3 still does).
fn legacy_args(s: &Scratch, debug: bool) -> Vec<&str> {
    let mut a = vec![
        "-namespace",
        &s.namespace,
        "-address",
        &s.grpc,
        "-publish-binary",
        CONTAINERD,
        "-id",
        &s.id,
    ];
    if debug {
        a.push("-debug");
    }
    a.push("start");
    a
}

fn string_field(os: &mut CodedOutputStream, field: u32, v: &str) {
    if !v.is_empty() {
        os.write_string(field, v).unwrap();
    }
}

/// google.protobuf.Any { string type_url = 1; bytes value = 2; }
fn any_bytes(type_url: &str, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut os = CodedOutputStream::vec(&mut out);
    string_field(&mut os, 1, type_url);
    if !value.is_empty() {
        os.write_bytes(2, value).unwrap();
    }
    os.flush().unwrap();
    drop(os);
    out
}

/// runc Options { bool no_pivot_root = 1; ... } with no_pivot_root = false: what containerd
/// sends for a runtime with default options.
fn runc_options_any() -> Vec<u8> {
    any_bytes("containerd.runc.v1.Options", &[])
}

/// `BootstrapParams` as containerd 2.3.4 marshals it (api/runtime/bootstrap/v1/bootstrap.proto):
/// instance_id = 1, namespace = 2, log_level = 3, containerd_version = 4,
/// containerd_ttrpc_address = 5, containerd_grpc_address = 6, containerd_binary = 7,
/// extensions = 8 (Extension { Any value = 1 }), optional socket_dir = 9.
fn bootstrap_params(s: &Scratch, id: &str, log_level: i32, socket_dir: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut os = CodedOutputStream::vec(&mut out);
    string_field(&mut os, 1, id);
    string_field(&mut os, 2, &s.namespace);
    if log_level != 0 {
        os.write_int32(3, log_level).unwrap();
    }
    string_field(&mut os, 4, "2.3.4");
    string_field(&mut os, 5, &s.ttrpc);
    string_field(&mut os, 6, &s.grpc);
    string_field(&mut os, 7, CONTAINERD);
    let mut ext = Vec::new();
    {
        let mut es = CodedOutputStream::vec(&mut ext);
        es.write_bytes(1, &runc_options_any()).unwrap();
        es.flush().unwrap();
    }
    os.write_bytes(8, &ext).unwrap();
    os.write_string(9, socket_dir).unwrap();
    os.flush().unwrap();
    drop(os);
    out
}

/// containerd 2.3's env for `start` (pkg/shim `Command`).
fn env_2_3(s: &Scratch) -> Vec<(&str, &str)> {
    vec![
        ("GOMAXPROCS", "2"),
        ("MAX_SHIM_VERSION", "2"),
        ("TTRPC_ADDRESS", &s.ttrpc),
        ("GRPC_ADDRESS", &s.grpc),
        ("NAMESPACE", &s.namespace),
    ]
}

/// (version, address, protocol) of a `BootstrapResult`, decoded by the protobuf crate's own
/// parser: as a message without fields, every field lands in its unknown fields.
fn decode_result(bytes: &[u8]) -> (u64, String, String) {
    let msg = PbEmpty::parse_from_bytes(bytes)
        .unwrap_or_else(|e| panic!("stdout is no protobuf message ({e}): {bytes:?}"));
    let u = msg.special_fields.unknown_fields();
    let text = |f| match u.get(f) {
        Some(UnknownValueRef::LengthDelimited(b)) => String::from_utf8(b.to_vec()).unwrap(),
        other => panic!("BootstrapResult field {f}: {other:?}"),
    };
    let version = match u.get(1) {
        Some(UnknownValueRef::Varint(v)) => v,
        other => panic!("BootstrapResult.version: {other:?}"),
    };
    (version, text(2), text(3))
}

fn sha256_hex(s: &str) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The socket name containerd's shims use: sha256("<grpc address>/<namespace>/<group>").
fn socket_name(s: &Scratch) -> String {
    sha256_hex(&format!("{}/{}/{}", s.grpc, s.namespace, s.id))
}

/// One unary call under an explicit service name.
fn call<Req: Message, Resp: Message>(
    c: &Client,
    service: &str,
    method: &str,
    req: &Req,
) -> ttrpc::Result<Resp> {
    let mut r = ttrpc::Request::new();
    r.set_service(service.into());
    r.set_method(method.into());
    r.set_timeout_nano(10_000_000_000);
    r.payload = req.write_to_bytes().unwrap();
    let res = c.request(r)?;
    Ok(Resp::parse_from_bytes(&res.payload).unwrap())
}

fn code_of<T: std::fmt::Debug>(r: ttrpc::Result<T>) -> Code {
    match r {
        Err(ttrpc::Error::RpcStatus(s)) => s.code(),
        other => panic!("expected an RPC status, got {other:?}"),
    }
}

fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| {
            let state = st[st.rfind(')')? + 2..].chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// Talks to the daemon under both names, shuts it down under `shutdown_via`, and checks
/// that it exits and removes its socket. Returns the daemon's pid.
fn exercise_and_shut_down(s: &Scratch, address: &str, socket: &Path, shutdown_via: &str) -> i32 {
    let client = Client::connect(address).unwrap_or_else(|e| panic!("connect {address}: {e}"));
    let connect = |service| -> ConnectResponse {
        call(
            &client,
            service,
            "Connect",
            &ConnectRequest {
                id: s.id.clone(),
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{service}/Connect: {e:?}"))
    };
    let c2 = connect(V2);
    let pid = c2.shim_pid as i32;
    assert!(pid > 0 && alive(pid), "Connect names no live shim: {c2:?}");
    assert_eq!(c2.task_pid, 0, "no task was created");
    let c3 = connect(V3);
    assert_eq!(
        c3.shim_pid, c2.shim_pid,
        "v2 and v3 reach different daemons"
    );

    for service in [V2, V3] {
        let state: ttrpc::Result<StateResponse> = call(
            &client,
            service,
            "State",
            &StateRequest {
                id: "no-such-container".into(),
                ..Default::default()
            },
        );
        assert_eq!(code_of(state), Code::NOT_FOUND, "{service}/State");
    }
    // A name we do not serve is refused, as Go's ttrpc refuses one (UNIMPLEMENTED): the two
    // above answered because they are served.
    let v4: ttrpc::Result<StateResponse> = call(
        &client,
        "containerd.task.v4.Task",
        "State",
        &StateRequest::new(),
    );
    assert_eq!(
        code_of(v4),
        Code::UNIMPLEMENTED,
        "an unknown service answered"
    );

    // The daemon may exit before its reply leaves; containerd takes the closed connection as
    // success (shimTask.Shutdown ignores ttrpc.ErrClosed), and so does this test.
    let shutdown: ttrpc::Result<Empty> =
        call(&client, shutdown_via, "Shutdown", &ShutdownRequest::new());
    match shutdown {
        Ok(_) => {}
        Err(ttrpc::Error::Socket(e)) if e.contains("disconnected") => {}
        Err(e) => panic!("{shutdown_via}/Shutdown: {e:?}"),
    }
    drop(client);
    // The daemon, then its launcher (which sees the daemon's end of their socket close).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = processes_of(&s.id);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        left = processes_of(&s.id);
    }
    assert!(!alive(pid), "daemon {pid} still alive 10 s after Shutdown");
    assert!(
        left.is_empty(),
        "processes left 10 s after Shutdown: {left:?}"
    );
    assert!(
        !socket.exists(),
        "daemon left its socket {}",
        socket.display()
    );
    pid
}

#[test]
fn containerd_2_3_bootstrap_params_get_a_protobuf_result() {
    require_root();
    let s = Scratch::new("v23");
    let socket_dir = s.dir.join("s");
    let params = bootstrap_params(&s, &s.id, -4, &socket_dir.display().to_string());
    let out = shim_start(&s, &legacy_args(&s, true), &env_2_3(&s), &[], &params);
    assert!(
        out.status.success(),
        "start failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // containerd 2.3 reads stdout and stderr combined: stderr must stay empty.
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "stderr");
    let (version, address, protocol) = decode_result(&out.stdout);
    let socket = socket_dir.join(socket_name(&s));
    assert_eq!(
        (version, address.as_str(), protocol.as_str()),
        (2, format!("unix://{}", socket.display()).as_str(), "ttrpc"),
        "BootstrapResult"
    );
    assert_eq!(
        fs::read_to_string(s.bundle.join("address")).unwrap(),
        address,
        "the bundle's address file"
    );

    // A second start of the same group answers the same way and shares the daemon.
    let again = shim_start(&s, &legacy_args(&s, true), &env_2_3(&s), &[], &params);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(decode_result(&again.stdout).1, address);

    exercise_and_shut_down(&s, &address, &socket, V3);
    let log = s.log();
    assert!(
        log.contains("started by containerd 2.3.4 (bootstrap protocol")
            && log.contains("containerd.runc.v1.Options"),
        "daemon log: {log}"
    );
    assert!(
        log.contains("level=debug"),
        "containerd at debug level (-debug, log_level DEBUG) but no debug logs: {log}"
    );
}

#[test]
fn containerd_1_6_start_gets_a_bare_address() {
    require_root();
    let s = Scratch::new("v16");
    // containerd 1.6: -namespace -address -publish-binary -id start; TTRPC_ADDRESS only,
    // and the library path of its `opt` plugin, with its empty (current directory) entry.
    let opt_lib = format!("{}/opt/lib:", s.dir.display());
    let out = shim_start(
        &s,
        &legacy_args(&s, false),
        &[
            ("GOMAXPROCS", "2"),
            ("TTRPC_ADDRESS", s.ttrpc.as_str()),
            ("LD_LIBRARY_PATH", opt_lib.as_str()),
        ],
        &["MAX_SHIM_VERSION", "GRPC_ADDRESS", "NAMESPACE"],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "stderr");
    let socket = Path::new("/run/containerd/s").join(socket_name(&s));
    let address = format!("unix://{}", socket.display());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        address,
        "bare address, no newline"
    );
    // The launcher, parent of every container process, inherits none of containerd's
    // environment: no library path sends its loader into the bundle directory.
    let launcher = processes_of(&s.id)
        .into_iter()
        .find(|p| {
            fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "shim-rs-launch")
        })
        .expect("no launcher among the shim's processes");
    let environ = fs::read(format!("/proc/{launcher}/environ")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&environ),
        "SHIM_RS_LOG_LEVEL=INFO\0",
        "the launcher's environment"
    );
    exercise_and_shut_down(&s, &address, &socket, V2);
    assert!(
        s.log()
            .contains("containerd 1.6 (legacy start, runtime options none)"),
        "daemon log: {}",
        s.log()
    );
}

#[test]
fn containerd_1_7_to_2_2_start_gets_json() {
    require_root();
    let s = Scratch::new("v17");
    let out = shim_start(
        &s,
        &legacy_args(&s, false),
        &[
            ("GOMAXPROCS", "2"),
            ("MAX_SHIM_VERSION", "2"),
            ("TTRPC_ADDRESS", s.ttrpc.as_str()),
            ("GRPC_ADDRESS", s.grpc.as_str()),
            ("NAMESPACE", s.namespace.as_str()),
        ],
        &[],
        &runc_options_any(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "stderr");
    // What 1.7 and 2.0-2.2 unmarshal: {version >= 2, address, protocol}; version <= 2 for 1.7.
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let socket = Path::new("/run/containerd/s").join(socket_name(&s));
    let address = format!("unix://{}", socket.display());
    assert_eq!(
        v,
        serde_json::json!({"version": 2, "address": address, "protocol": "ttrpc"})
    );
    exercise_and_shut_down(&s, &address, &socket, V2);
    assert!(
        s.log().contains(
            "containerd 1.7-2.2 (legacy start, MAX_SHIM_VERSION=2, runtime options containerd.runc.v1.Options)"
        ),
        "daemon log: {}",
        s.log()
    );
}

/// No process of this test's id is left, nor anything in the socket dir or the bundle.
fn assert_nothing_started(s: &Scratch, socket_dir: &Path) {
    let left: Vec<String> = fs::read_dir(socket_dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "sockets left: {left:?}");
    assert!(!s.bundle.join("address").exists(), "address file written");
    let procs = processes_of(&s.id);
    assert!(
        procs.is_empty(),
        "processes of {} still run: {procs:?}",
        s.id
    );
}

#[test]
fn bootstrap_params_for_another_container_are_refused() {
    require_root();
    let s = Scratch::new("mismatch");
    let socket_dir = s.dir.join("s");
    let params = bootstrap_params(&s, "someone-else", 0, &socket_dir.display().to_string());
    let out = shim_start(&s, &legacy_args(&s, false), &env_2_3(&s), &[], &params);
    assert_eq!(
        out.status.code(),
        Some(1),
        "start of a mismatched id succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("BootstrapParams.instance_id \"someone-else\" differs from the -id flag"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
    assert_nothing_started(&s, &socket_dir);
}

#[test]
fn unusable_start_input_is_refused() {
    require_root();
    let s = Scratch::new("bad");
    let socket_dir = s.dir.join("s");
    // Neither BootstrapParams nor Any.
    let out = shim_start(
        &s,
        &legacy_args(&s, false),
        &env_2_3(&s),
        &[],
        b"\xff\xff\xff\xff",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("neither a containerd 2.3+ BootstrapParams nor a runtime options Any"),
        "{err}"
    );
    // A socket_dir whose socket path cannot fit in sun_path.
    let long = s.dir.join("d".repeat(80));
    let params = bootstrap_params(&s, &s.id, 0, &long.display().to_string());
    let out = shim_start(&s, &legacy_args(&s, false), &env_2_3(&s), &[], &params);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BootstrapParams.socket_dir"), "{err}");
    assert!(!long.exists(), "created {}", long.display());
    assert_nothing_started(&s, &socket_dir);
}
