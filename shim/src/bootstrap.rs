//! How containerd and the `start` action find each other, across containerd versions
//! (containerd's docs/runtime-v2.md, "Bootstrap protocol"):
//!
//! | containerd | stdin of `start`                                | reads back from stdout                         |
//! |------------|-------------------------------------------------|------------------------------------------------|
//! | 1.6        | nothing, or the runtime options as an `Any`     | a bare address                                 |
//! | 1.7 – 2.2  | the same; env `MAX_SHIM_VERSION=2`              | a bare address or JSON `{version, address, protocol}` |
//! | 2.3+       | a protobuf `BootstrapParams` (plus the legacy flags and env) | a protobuf `BootstrapResult`, else JSON or a bare address |
//!
//! Each gets the format it reads: protobuf to a daemon that sent `BootstrapParams`, JSON to one
//! that announced `MAX_SHIM_VERSION`, a bare address otherwise.
//!
//! We always announce task API **version 2**. containerd 2.x takes version 3 to mean that the
//! shim also serves the sandbox and streaming APIs; CRI then stops running `start` (and the
//! `delete` action) for the 2nd..nth container of a pod and sends them all to the sandbox's shim.
//! We implement neither API, so version 3 would be a promise we do not keep. The daemon still
//! serves the task service under both names, `containerd.task.v2.Task` and
//! `containerd.task.v3.Task` (v3 is a wire-identical rename), so a client that speaks only v3
//! reaches the same service.
//!
//! containerd-shim-protos 0.11 has no bootstrap messages: the few fields of
//! `api/runtime/bootstrap/v1/bootstrap.proto` are encoded and decoded here by hand.

use std::{
    collections::HashMap,
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
};

use containerd_shim::Flags;
use containerd_shim_protos::{
    protobuf::{rt::WireType, CodedInputStream, CodedOutputStream},
    shim::shim_ttrpc::{create_task, Task},
    ttrpc::MethodHandler,
};

/// The task service names the daemon answers to.
pub const TASK_V2: &str = "containerd.task.v2.Task";
pub const TASK_V3: &str = "containerd.task.v3.Task";
/// The task API version we announce (see the module comment for why not 3).
pub const ANNOUNCED_VERSION: i32 = 2;
/// Where shim sockets go unless containerd 2.3+ names a `socket_dir`.
pub const DEFAULT_SOCKET_DIR: &str = "/run/containerd/s";
/// containerd's own bound on what it reads from a shim's stdin (pkg/shim).
pub const STDIN_LIMIT: u64 = 10 << 20;
/// `LogLevel` values of bootstrap.proto: DEBUG and everything more verbose enable debug logs.
pub const LOG_LEVEL_DEBUG: i32 = -4;
/// sun_path holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read stdin: {0}")]
    Stdin(std::io::Error),
    #[error("stdin is larger than {STDIN_LIMIT} bytes")]
    StdinTooLarge,
    #[error(
        "stdin ({len} bytes) is neither a containerd 2.3+ BootstrapParams nor a runtime options Any: {reason}"
    )]
    Unrecognised { len: usize, reason: String },
    #[error("BootstrapParams.{field} {param:?} differs from the {flag} flag {value:?}")]
    Mismatch {
        field: &'static str,
        param: String,
        flag: &'static str,
        value: String,
    },
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("BootstrapParams.socket_dir {dir:?}: {reason}")]
    SocketDir { dir: String, reason: String },
}

/// `containerd.runtime.bootstrap.v1.BootstrapParams`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BootstrapParams {
    pub instance_id: String,
    pub namespace: String,
    pub log_level: i32,
    pub containerd_version: String,
    pub containerd_ttrpc_address: String,
    pub containerd_grpc_address: String,
    pub containerd_binary: String,
    /// `repeated Extension extensions = 8`, each holding one `google.protobuf.Any`.
    pub extensions: Vec<AnyValue>,
    pub socket_dir: Option<String>,
}

/// `google.protobuf.Any`: what runtime options travel in, alone (1.6–2.2) or as an extension.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AnyValue {
    pub type_url: String,
    pub value: Vec<u8>,
}

/// `containerd.runtime.bootstrap.v1.BootstrapResult` (capabilities and metadata unused).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BootstrapResult {
    pub version: i32,
    pub address: String,
    pub protocol: String,
}

const VARINT: u32 = 0;
const LEN: u32 = 2;

fn pb(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// The next (field number, wire type), or None at the end.
fn next_field(is: &mut CodedInputStream, msg: &str) -> Result<Option<(u32, u32)>, String> {
    match is.read_raw_tag_or_eof().map_err(|e| pb(msg, e))? {
        None => Ok(None),
        Some(tag) if tag >> 3 == 0 => Err(format!("{msg}: field number 0")),
        Some(tag) => Ok(Some((tag >> 3, tag & 7))),
    }
}

fn skip(is: &mut CodedInputStream, msg: &str, field: u32, wire: u32) -> Result<(), String> {
    let wt = WireType::new(wire).ok_or_else(|| format!("{msg}.{field}: wire type {wire}"))?;
    is.skip_field(wt)
        .map_err(|e| pb(&format!("{msg}.{field}"), e))
}

fn string(is: &mut CodedInputStream, path: &str) -> Result<String, String> {
    is.read_string().map_err(|e| pb(path, e))
}

fn wrong_wire(msg: &str, name: &str, wire: u32) -> String {
    format!("{msg}.{name}: unexpected wire type {wire}")
}

/// A proto3 string field: not written when empty. Writes into a Vec cannot fail.
fn put_str(os: &mut CodedOutputStream, field: u32, v: &str) {
    if !v.is_empty() {
        os.write_string(field, v).expect("write to Vec");
    }
}

impl AnyValue {
    /// Strict: an `Any` has exactly these two fields.
    pub fn decode(bytes: &[u8]) -> Result<AnyValue, String> {
        const M: &str = "Any";
        let mut is = CodedInputStream::from_bytes(bytes);
        let mut any = AnyValue::default();
        while let Some((field, wire)) = next_field(&mut is, M)? {
            match (field, wire) {
                (1, LEN) => any.type_url = string(&mut is, "Any.type_url")?,
                (2, LEN) => any.value = is.read_bytes().map_err(|e| pb("Any.value", e))?,
                (1, w) => return Err(wrong_wire(M, "type_url", w)),
                (2, w) => return Err(wrong_wire(M, "value", w)),
                (f, _) => return Err(format!("Any has no field {f}")),
            }
        }
        Ok(any)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut os = CodedOutputStream::vec(&mut out);
            put_str(&mut os, 1, &self.type_url);
            if !self.value.is_empty() {
                os.write_bytes(2, &self.value).expect("write to Vec");
            }
            os.flush().expect("write to Vec");
        }
        out
    }
}

impl BootstrapParams {
    /// Decodes a `BootstrapParams`. The flag says whether a field numbered above 2 was present:
    /// an `Any` cannot have one, so such bytes are no runtime options.
    pub fn decode(bytes: &[u8]) -> Result<(BootstrapParams, bool), String> {
        const M: &str = "BootstrapParams";
        let mut is = CodedInputStream::from_bytes(bytes);
        let mut p = BootstrapParams::default();
        let mut beyond_any = false;
        while let Some((field, wire)) = next_field(&mut is, M)? {
            beyond_any |= field > 2;
            let name = match field {
                1 => "instance_id",
                2 => "namespace",
                3 => "log_level",
                4 => "containerd_version",
                5 => "containerd_ttrpc_address",
                6 => "containerd_grpc_address",
                7 => "containerd_binary",
                8 => "extensions",
                9 => "socket_dir",
                _ => {
                    // A newer containerd's field: not ours to refuse.
                    skip(&mut is, M, field, wire)?;
                    continue;
                }
            };
            let want = if field == 3 { VARINT } else { LEN };
            if wire != want {
                return Err(wrong_wire(M, name, wire));
            }
            let path = format!("{M}.{name}");
            match field {
                1 => p.instance_id = string(&mut is, &path)?,
                2 => p.namespace = string(&mut is, &path)?,
                3 => p.log_level = is.read_int32().map_err(|e| pb(&path, e))?,
                4 => p.containerd_version = string(&mut is, &path)?,
                5 => p.containerd_ttrpc_address = string(&mut is, &path)?,
                6 => p.containerd_grpc_address = string(&mut is, &path)?,
                7 => p.containerd_binary = string(&mut is, &path)?,
                8 => {
                    let ext = is.read_bytes().map_err(|e| pb(&path, e))?;
                    p.extensions.push(decode_extension(&ext)?);
                }
                _ => p.socket_dir = Some(string(&mut is, &path)?),
            }
        }
        Ok((p, beyond_any))
    }

    /// proto3 encoding (default values are not written; `socket_dir` is when set).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut os = CodedOutputStream::vec(&mut out);
            put_str(&mut os, 1, &self.instance_id);
            put_str(&mut os, 2, &self.namespace);
            if self.log_level != 0 {
                os.write_int32(3, self.log_level).expect("write to Vec");
            }
            put_str(&mut os, 4, &self.containerd_version);
            put_str(&mut os, 5, &self.containerd_ttrpc_address);
            put_str(&mut os, 6, &self.containerd_grpc_address);
            put_str(&mut os, 7, &self.containerd_binary);
            for ext in &self.extensions {
                // message Extension { google.protobuf.Any value = 1; }
                let mut e = Vec::new();
                {
                    let mut es = CodedOutputStream::vec(&mut e);
                    es.write_bytes(1, &ext.encode()).expect("write to Vec");
                    es.flush().expect("write to Vec");
                }
                os.write_bytes(8, &e).expect("write to Vec");
            }
            if let Some(dir) = &self.socket_dir {
                os.write_string(9, dir).expect("write to Vec");
            }
            os.flush().expect("write to Vec");
        }
        out
    }
}

/// `message Extension { google.protobuf.Any value = 1; }`
fn decode_extension(bytes: &[u8]) -> Result<AnyValue, String> {
    const M: &str = "BootstrapParams.extensions";
    let mut is = CodedInputStream::from_bytes(bytes);
    let mut any = AnyValue::default();
    while let Some((field, wire)) = next_field(&mut is, M)? {
        match (field, wire) {
            (1, LEN) => {
                let b = is.read_bytes().map_err(|e| pb(M, e))?;
                any = AnyValue::decode(&b).map_err(|e| pb(M, e))?;
            }
            (1, w) => return Err(wrong_wire(M, "value", w)),
            (f, w) => skip(&mut is, M, f, w)?,
        }
    }
    Ok(any)
}

impl BootstrapResult {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut os = CodedOutputStream::vec(&mut out);
            if self.version != 0 {
                os.write_int32(1, self.version).expect("write to Vec");
            }
            put_str(&mut os, 2, &self.address);
            put_str(&mut os, 3, &self.protocol);
            os.flush().expect("write to Vec");
        }
        out
    }

    /// Decodes the fields we use; capabilities (4) and metadata (5) are skipped.
    pub fn decode(bytes: &[u8]) -> Result<BootstrapResult, String> {
        const M: &str = "BootstrapResult";
        let mut is = CodedInputStream::from_bytes(bytes);
        let mut r = BootstrapResult::default();
        while let Some((field, wire)) = next_field(&mut is, M)? {
            match (field, wire) {
                (1, VARINT) => r.version = is.read_int32().map_err(|e| pb("version", e))?,
                (2, LEN) => r.address = string(&mut is, "BootstrapResult.address")?,
                (3, LEN) => r.protocol = string(&mut is, "BootstrapResult.protocol")?,
                (1..=3, w) => return Err(format!("{M}.{field}: unexpected wire type {w}")),
                (f, w) => skip(&mut is, M, f, w)?,
            }
        }
        Ok(r)
    }
}

/// What containerd wrote on the stdin of `start`.
#[derive(Debug, Clone, PartialEq)]
pub enum StartInput {
    /// Nothing: containerd 1.6–2.2 without runtime options (or a person at a terminal).
    Empty,
    /// containerd 1.6–2.2: the runtime options, of which only the type matters at start.
    RuntimeOptions { type_url: String },
    /// containerd 2.3+.
    Bootstrap(BootstrapParams),
}

/// Reads stdin as containerd hands it over: a pipe it closes, or /dev/null.
pub fn read_stdin() -> Result<Vec<u8>, Error> {
    // SAFETY: isatty(3) has no preconditions. A terminal is a person, not containerd: never
    // block on it.
    if unsafe { libc::isatty(0) } == 1 {
        return Ok(Vec::new());
    }
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .take(STDIN_LIMIT + 1)
        .read_to_end(&mut buf)
        .map_err(Error::Stdin)?;
    if buf.len() as u64 > STDIN_LIMIT {
        return Err(Error::StdinTooLarge);
    }
    Ok(buf)
}

/// Tells the three kinds of stdin apart. `id` and `namespace` are the -id and -namespace flags.
///
/// Both a `BootstrapParams` and an `Any` are protobuf messages whose first two fields are
/// strings, so parsing alone does not separate them. Bytes are a `BootstrapParams` when they
/// parse as one and either hold a field an `Any` does not have (containerd 2.3 always sends
/// its version and addresses) or name exactly this container and namespace. Otherwise they
/// must be a well-formed `Any` with a type.
pub fn classify(stdin: &[u8], id: &str, namespace: &str) -> Result<StartInput, Error> {
    if stdin.is_empty() {
        return Ok(StartInput::Empty);
    }
    let as_params = match BootstrapParams::decode(stdin) {
        Ok((p, beyond_any)) => {
            let names_us =
                !p.instance_id.is_empty() && p.instance_id == id && p.namespace == namespace;
            if beyond_any || names_us {
                check_flags(&p, id, namespace)?;
                return Ok(StartInput::Bootstrap(p));
            }
            "BootstrapParams names neither this -id nor this -namespace and has no field beyond 2"
                .to_string()
        }
        Err(e) => e,
    };
    match AnyValue::decode(stdin) {
        Ok(any) if !any.type_url.is_empty() => Ok(StartInput::RuntimeOptions {
            type_url: any.type_url,
        }),
        Ok(_) => Err(Error::Unrecognised {
            len: stdin.len(),
            reason: format!("{as_params}; Any without type_url"),
        }),
        Err(e) => Err(Error::Unrecognised {
            len: stdin.len(),
            reason: format!("{as_params}; {e}"),
        }),
    }
}

/// containerd 2.3 sends the legacy flags too; they must agree with the params.
fn check_flags(p: &BootstrapParams, id: &str, namespace: &str) -> Result<(), Error> {
    for (field, param, flag, value) in [
        ("instance_id", &p.instance_id, "-id", id),
        ("namespace", &p.namespace, "-namespace", namespace),
    ] {
        if !param.is_empty() && !value.is_empty() && param != value {
            return Err(Error::Mismatch {
                field,
                param: param.clone(),
                flag,
                value: value.to_owned(),
            });
        }
    }
    Ok(())
}

/// The format of `start`'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// `unix:///run/containerd/s/<hash>`, no newline (containerd 1.6 reads only this).
    Bare,
    /// `{"address":...,"protocol":"ttrpc","version":2}` (containerd 1.7–2.2).
    Json,
    /// A protobuf `BootstrapResult` (containerd 2.3+).
    Protobuf,
}

impl Reply {
    pub fn render(self, address: &str) -> Vec<u8> {
        match self {
            Reply::Bare => address.as_bytes().to_vec(),
            Reply::Json => serde_json::json!({
                "version": ANNOUNCED_VERSION,
                "address": address,
                "protocol": "ttrpc",
            })
            .to_string()
            .into_bytes(),
            Reply::Protobuf => BootstrapResult {
                version: ANNOUNCED_VERSION,
                address: address.to_owned(),
                protocol: "ttrpc".into(),
            }
            .encode(),
        }
    }
}

/// Everything `start` and the daemon need, from the flags, the environment and stdin.
#[derive(Debug, Clone, PartialEq)]
pub struct StartConfig {
    pub id: String,
    pub namespace: String,
    /// containerd's grpc address: part of the socket name's hash.
    pub grpc_address: String,
    /// Where events go.
    pub ttrpc_address: String,
    pub debug: bool,
    pub socket_dir: PathBuf,
    pub reply: Reply,
    /// Who started us, for the daemon's first log line.
    pub origin: String,
}

fn first_nonempty(a: &str, b: &str) -> String {
    if a.is_empty() { b } else { a }.to_owned()
}

impl StartConfig {
    /// `env` reads an environment variable (a parameter so tests need not touch the process's).
    pub fn resolve(
        flags: &Flags,
        input: StartInput,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<StartConfig, Error> {
        let env = |k: &str| env(k).filter(|v| !v.is_empty());
        let cfg = match input {
            StartInput::Bootstrap(p) => {
                let socket_dir = match p.socket_dir.as_deref() {
                    Some(d) if !d.is_empty() => socket_dir(d)?,
                    _ => PathBuf::from(DEFAULT_SOCKET_DIR),
                };
                let extensions: Vec<&str> =
                    p.extensions.iter().map(|e| e.type_url.as_str()).collect();
                StartConfig {
                    id: first_nonempty(&p.instance_id, &flags.id),
                    namespace: first_nonempty(&p.namespace, &flags.namespace),
                    grpc_address: first_nonempty(&p.containerd_grpc_address, &flags.address),
                    ttrpc_address: first_nonempty(
                        &p.containerd_ttrpc_address,
                        &env("TTRPC_ADDRESS").unwrap_or_default(),
                    ),
                    debug: flags.debug || p.log_level <= LOG_LEVEL_DEBUG,
                    socket_dir,
                    reply: Reply::Protobuf,
                    origin: format!(
                        "containerd {} (bootstrap protocol, extensions {extensions:?})",
                        if p.containerd_version.is_empty() {
                            "2.3+"
                        } else {
                            &p.containerd_version
                        }
                    ),
                }
            }
            legacy => {
                let max = env("MAX_SHIM_VERSION");
                let json = max
                    .as_deref()
                    .and_then(|v| v.trim().parse::<i32>().ok())
                    .is_some_and(|v| v >= 2);
                let options = match &legacy {
                    StartInput::RuntimeOptions { type_url } => type_url.as_str(),
                    _ => "none",
                };
                StartConfig {
                    id: flags.id.clone(),
                    namespace: flags.namespace.clone(),
                    grpc_address: flags.address.clone(),
                    ttrpc_address: env("TTRPC_ADDRESS").unwrap_or_default(),
                    debug: flags.debug,
                    socket_dir: PathBuf::from(DEFAULT_SOCKET_DIR),
                    reply: if json { Reply::Json } else { Reply::Bare },
                    origin: match &max {
                        Some(v) => format!(
                            "containerd 1.7-2.2 (legacy start, MAX_SHIM_VERSION={v}, runtime options {options})"
                        ),
                        None => format!("containerd 1.6 (legacy start, runtime options {options})"),
                    },
                }
            }
        };
        if cfg.id.is_empty() || cfg.namespace.is_empty() {
            return Err(Error::Missing("-namespace or -id"));
        }
        if cfg.ttrpc_address.is_empty() {
            return Err(Error::Missing(
                "TTRPC_ADDRESS (or BootstrapParams.containerd_ttrpc_address)",
            ));
        }
        Ok(cfg)
    }

    /// The socket of a group's daemon: `<socket_dir>/sha256(<grpc address>/<ns>/<group>)`, the
    /// name containerd's own shims use, so one group shares one daemon whoever starts it.
    pub fn socket(&self, group: &str) -> Result<(String, PathBuf), Error> {
        let default = containerd_shim::socket_address(&self.grpc_address, &self.namespace, group);
        let hash = default.rsplit('/').next().unwrap_or_default();
        let path = self.socket_dir.join(hash);
        let len = path.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(Error::SocketDir {
                dir: self.socket_dir.display().to_string(),
                reason: format!(
                    "the socket path {} is {len} bytes, unix sockets allow {MAX_SOCKET_PATH}",
                    path.display()
                ),
            });
        }
        Ok((format!("unix://{}", path.display()), path))
    }
}

fn socket_dir(dir: &str) -> Result<PathBuf, Error> {
    let bad = |reason: &str| Error::SocketDir {
        dir: dir.to_owned(),
        reason: reason.to_owned(),
    };
    let p = Path::new(dir);
    if !p.is_absolute() {
        return Err(bad("must be an absolute path"));
    }
    if dir.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    // The 64-character hash and a '/' must still fit.
    if dir.len() + 65 > MAX_SOCKET_PATH {
        return Err(bad(&format!(
            "too long for a unix socket path (at most {} bytes)",
            MAX_SOCKET_PATH - 65
        )));
    }
    Ok(p.to_path_buf())
}

type Methods = HashMap<String, Box<dyn MethodHandler + Send + Sync>>;

/// The task service under both of its names: the generated map (keys
/// `/containerd.task.v2.Task/<Method>`) plus a copy with the v3 name.
pub fn task_services(task: Arc<dyn Task + Send + Sync>) -> Methods {
    let v2_prefix = format!("/{TASK_V2}/");
    let mut methods = create_task(task.clone());
    let v3: Methods = create_task(task)
        .into_iter()
        .filter_map(|(key, handler)| {
            let method = key.strip_prefix(&v2_prefix)?;
            Some((format!("/{TASK_V3}/{method}"), handler))
        })
        .collect();
    methods.extend(v3);
    methods
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A length-delimited field by hand: tag, one-byte length, bytes.
    fn ld(field: u8, bytes: &[u8]) -> Vec<u8> {
        assert!(bytes.len() < 128);
        let mut v = vec![(field << 3) | 2, bytes.len() as u8];
        v.extend_from_slice(bytes);
        v
    }

    /// A BootstrapParams as containerd 2.3 marshals it (fields in number order), by hand from
    /// bootstrap.proto: 1 instance_id, 2 namespace, 3 log_level (int32 enum, varint),
    /// 4 containerd_version, 5 ttrpc, 6 grpc, 7 binary, 8 Extension{1: Any}, 9 socket_dir.
    fn params_bytes(log_level_varint: &[u8]) -> Vec<u8> {
        let any = [ld(1, b"containerd.runc.v1.Options"), ld(2, &[0x08, 0x01])].concat();
        let mut b = Vec::new();
        b.extend(ld(1, b"c1"));
        b.extend(ld(2, b"ns"));
        b.push(3 << 3);
        b.extend_from_slice(log_level_varint);
        b.extend(ld(4, b"2.3.4"));
        b.extend(ld(5, b"/run/ctd/containerd.sock.ttrpc"));
        b.extend(ld(6, b"/run/ctd/containerd.sock"));
        b.extend(ld(7, b"/usr/bin/containerd"));
        b.extend(ld(8, &ld(1, &any)));
        b.extend(ld(9, b"/run/ctd/s"));
        b
    }

    /// -4 (LOG_LEVEL_DEBUG) as a proto int32: sign-extended to 64 bits, 10 varint bytes.
    const MINUS_FOUR: [u8; 10] = [0xfc, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];

    fn expected_params() -> BootstrapParams {
        BootstrapParams {
            instance_id: "c1".into(),
            namespace: "ns".into(),
            log_level: LOG_LEVEL_DEBUG,
            containerd_version: "2.3.4".into(),
            containerd_ttrpc_address: "/run/ctd/containerd.sock.ttrpc".into(),
            containerd_grpc_address: "/run/ctd/containerd.sock".into(),
            containerd_binary: "/usr/bin/containerd".into(),
            extensions: vec![AnyValue {
                type_url: "containerd.runc.v1.Options".into(),
                value: vec![0x08, 0x01],
            }],
            socket_dir: Some("/run/ctd/s".into()),
        }
    }

    #[test]
    fn params_decode_every_field() {
        let (p, beyond) = BootstrapParams::decode(&params_bytes(&MINUS_FOUR)).unwrap();
        assert_eq!(p, expected_params());
        assert!(beyond);
    }

    #[test]
    fn params_encode_matches_the_hand_made_bytes() {
        assert_eq!(
            expected_params().encode(),
            params_bytes(&MINUS_FOUR),
            "field order and varint of -4"
        );
        let (p, _) = BootstrapParams::decode(&expected_params().encode()).unwrap();
        assert_eq!(p, expected_params());
    }

    #[test]
    fn params_skip_fields_of_newer_containerds() {
        let mut b = params_bytes(&[0x08]); // log level 8 = ERROR
        b.extend(ld(13, b"future")); // an unknown string field
        b.extend([(14 << 3), 0x2a]); // an unknown varint
        b.extend([(15 << 3) | 5, 1, 2, 3, 4]); // an unknown fixed32
        b.extend([0x80, 0x02, 0x01]); // field 32 (a two-byte tag), varint 1
        let (p, _) = BootstrapParams::decode(&b).unwrap();
        assert_eq!(p.log_level, 8);
        assert_eq!(p.socket_dir.as_deref(), Some("/run/ctd/s"));
    }

    #[test]
    fn params_refuse_a_known_field_with_the_wrong_wire_type() {
        // log_level as a length-delimited field.
        let e = BootstrapParams::decode(&ld(3, b"x")).unwrap_err();
        assert!(e.contains("BootstrapParams.log_level"), "{e}");
        // namespace as a varint.
        let e = BootstrapParams::decode(&[(2 << 3), 1]).unwrap_err();
        assert!(e.contains("BootstrapParams.namespace"), "{e}");
        // invalid UTF-8 in a string.
        let e = BootstrapParams::decode(&ld(1, &[0xff, 0xfe])).unwrap_err();
        assert!(e.contains("instance_id"), "{e}");
        // truncated.
        assert!(BootstrapParams::decode(&[0x0a, 0x05, b'a']).is_err());
    }

    #[test]
    fn result_encode_is_what_containerd_2_3_unmarshals() {
        let bytes = Reply::Protobuf.render("unix:///run/containerd/s/ab");
        let mut want = vec![0x08, 0x02];
        want.extend(ld(2, b"unix:///run/containerd/s/ab"));
        want.extend(ld(3, b"ttrpc"));
        assert_eq!(bytes, want);
        let r = BootstrapResult::decode(&bytes).unwrap();
        assert_eq!(
            r,
            BootstrapResult {
                version: 2,
                address: "unix:///run/containerd/s/ab".into(),
                protocol: "ttrpc".into()
            }
        );
        // capabilities (packed enum) and a metadata map entry are skipped.
        let mut more = bytes.clone();
        more.extend(ld(4, &[0]));
        more.extend(ld(5, &[ld(1, b"k"), ld(2, b"v")].concat()));
        assert_eq!(BootstrapResult::decode(&more).unwrap(), r);
    }

    #[test]
    fn json_and_bare_replies() {
        let addr = "unix:///run/containerd/s/ab";
        assert_eq!(Reply::Bare.render(addr), addr.as_bytes());
        let v: serde_json::Value = serde_json::from_slice(&Reply::Json.render(addr)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"version": 2, "address": addr, "protocol": "ttrpc"})
        );
    }

    #[test]
    fn classify_each_kind_of_stdin() {
        assert_eq!(classify(b"", "c1", "ns").unwrap(), StartInput::Empty);
        // 2.3+.
        assert_eq!(
            classify(&params_bytes(&MINUS_FOUR), "c1", "ns").unwrap(),
            StartInput::Bootstrap(expected_params())
        );
        // Runtime options as 1.6–2.2 send them: an Any, also with an empty value.
        let any = [ld(1, b"containerd.runc.v1.Options"), ld(2, &[0x08, 0x01])].concat();
        assert_eq!(
            classify(&any, "c1", "ns").unwrap(),
            StartInput::RuntimeOptions {
                type_url: "containerd.runc.v1.Options".into()
            }
        );
        let any = ld(1, b"containerd.linux.runc.CreateOptions");
        assert!(matches!(
            classify(&any, "c1", "ns").unwrap(),
            StartInput::RuntimeOptions { .. }
        ));
        // An Any whose value is not UTF-8 cannot parse as BootstrapParams.namespace.
        let any = [ld(1, b"t"), ld(2, &[0xff, 0x00])].concat();
        assert!(matches!(
            classify(&any, "c1", "ns").unwrap(),
            StartInput::RuntimeOptions { .. }
        ));
        // Only id and namespace, both ours: BootstrapParams of a minimal 2.3+ caller.
        let minimal = [ld(1, b"c1"), ld(2, b"ns")].concat();
        assert!(matches!(
            classify(&minimal, "c1", "ns").unwrap(),
            StartInput::Bootstrap(_)
        ));
    }

    #[test]
    fn classify_refuses_what_is_neither() {
        for garbage in [&b"\xff\xff\xff"[..], b"hello", &ld(3, b"x"), &[0x08, 0x01]] {
            let e = classify(garbage, "c1", "ns").unwrap_err();
            assert!(matches!(e, Error::Unrecognised { .. }), "{garbage:?}: {e}");
            assert!(e.to_string().contains("BootstrapParams"), "{e}");
        }
    }

    #[test]
    fn classify_refuses_params_for_another_container() {
        let e = classify(&params_bytes(&MINUS_FOUR), "c2", "ns").unwrap_err();
        assert_eq!(
            e.to_string(),
            "BootstrapParams.instance_id \"c1\" differs from the -id flag \"c2\""
        );
        let e = classify(&params_bytes(&MINUS_FOUR), "c1", "other").unwrap_err();
        assert!(
            e.to_string().starts_with("BootstrapParams.namespace"),
            "{e}"
        );
        // Without the legacy flags, the params alone are enough.
        assert!(matches!(
            classify(&params_bytes(&MINUS_FOUR), "", "").unwrap(),
            StartInput::Bootstrap(_)
        ));
    }

    fn flags(id: &str, ns: &str, address: &str, debug: bool) -> Flags {
        Flags {
            id: id.into(),
            namespace: ns.into(),
            address: address.into(),
            debug,
            ..Default::default()
        }
    }

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.get(k).cloned()
    }

    #[test]
    fn resolve_legacy_1_6_and_1_7() {
        let f = flags("c1", "ns", "/run/ctd/containerd.sock", false);
        let c = StartConfig::resolve(
            &f,
            StartInput::Empty,
            env_of(&[("TTRPC_ADDRESS", "/run/ctd/t")]),
        )
        .unwrap();
        assert_eq!(c.reply, Reply::Bare, "1.6 sets no MAX_SHIM_VERSION");
        assert_eq!(c.socket_dir, Path::new(DEFAULT_SOCKET_DIR));
        assert_eq!((c.ttrpc_address.as_str(), c.debug), ("/run/ctd/t", false));
        let c = StartConfig::resolve(
            &f,
            StartInput::RuntimeOptions {
                type_url: "x".into(),
            },
            env_of(&[("TTRPC_ADDRESS", "/run/ctd/t"), ("MAX_SHIM_VERSION", "2")]),
        )
        .unwrap();
        assert_eq!(c.reply, Reply::Json);
        assert!(c.origin.contains("runtime options x"), "{}", c.origin);
        let e = StartConfig::resolve(&f, StartInput::Empty, env_of(&[])).unwrap_err();
        assert!(e.to_string().starts_with("TTRPC_ADDRESS"), "{e}");
        let e = StartConfig::resolve(
            &flags("", "ns", "", false),
            StartInput::Empty,
            env_of(&[("TTRPC_ADDRESS", "t")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("-id"), "{e}");
    }

    #[test]
    fn resolve_bootstrap_takes_the_params() {
        let f = flags("c1", "ns", "/run/ctd/containerd.sock", false);
        let c = StartConfig::resolve(
            &f,
            StartInput::Bootstrap(expected_params()),
            env_of(&[("MAX_SHIM_VERSION", "2")]),
        )
        .unwrap();
        assert_eq!(c.reply, Reply::Protobuf);
        assert_eq!(c.socket_dir, Path::new("/run/ctd/s"));
        assert_eq!(c.ttrpc_address, "/run/ctd/containerd.sock.ttrpc");
        assert!(c.debug, "log level DEBUG");
        assert!(c.origin.contains("2.3.4"), "{}", c.origin);
        let (address, path) = c.socket("c1").unwrap();
        // Same name as the legacy one, in the directory containerd chose.
        let legacy = containerd_shim::socket_address("/run/ctd/containerd.sock", "ns", "c1");
        let hash = legacy.rsplit('/').next().unwrap();
        assert_eq!(hash.len(), 64);
        assert_eq!(path, Path::new("/run/ctd/s").join(hash));
        assert_eq!(address, format!("unix:///run/ctd/s/{hash}"));

        let mut p = expected_params();
        p.log_level = 0;
        p.socket_dir = None;
        let c = StartConfig::resolve(&f, StartInput::Bootstrap(p), env_of(&[])).unwrap();
        assert!(!c.debug);
        assert_eq!(c.socket_dir, Path::new(DEFAULT_SOCKET_DIR));
    }

    #[test]
    fn resolve_refuses_bad_socket_dirs() {
        let f = flags("c1", "ns", "a", false);
        for (dir, why) in [
            ("relative/s", "absolute"),
            (&*format!("/{}", "d".repeat(60)), "too long"),
        ] {
            let mut p = expected_params();
            p.socket_dir = Some(dir.into());
            let e = StartConfig::resolve(&f, StartInput::Bootstrap(p), env_of(&[])).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.starts_with("BootstrapParams.socket_dir") && msg.contains(why),
                "{msg}"
            );
        }
    }

    /// Answers State with the id it was asked about; everything else is the generated default.
    struct Echo;
    impl Task for Echo {
        fn state(
            &self,
            _: &containerd_shim_protos::ttrpc::TtrpcContext,
            req: containerd_shim_protos::api::StateRequest,
        ) -> containerd_shim_protos::ttrpc::Result<containerd_shim_protos::api::StateResponse>
        {
            Ok(containerd_shim_protos::api::StateResponse {
                id: req.id,
                ..Default::default()
            })
        }
    }

    #[test]
    fn both_task_service_names_are_registered() {
        let m = task_services(Arc::new(Echo));
        let v2: Vec<&str> = m
            .keys()
            .filter_map(|k| k.strip_prefix("/containerd.task.v2.Task/"))
            .collect();
        assert!(v2.len() >= 17, "{v2:?}");
        for method in &v2 {
            assert!(
                m.contains_key(&format!("/containerd.task.v3.Task/{method}")),
                "{method} has no v3 name"
            );
        }
        assert_eq!(m.len(), 2 * v2.len(), "{:?}", m.keys());
    }

    #[test]
    fn both_task_service_names_answer_over_ttrpc() {
        use containerd_shim_protos::{
            api::{StateRequest, StateResponse},
            protobuf::Message,
            ttrpc::{self, Client, Code, Server},
        };
        use std::os::fd::IntoRawFd;
        let dir = std::env::temp_dir().join(format!("shim-rs-bootstrap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let mut server = Server::new()
            .add_listener(listener.into_raw_fd())
            .unwrap()
            .register_service(task_services(Arc::new(Echo)));
        server.start().unwrap();
        let client = Client::connect(&format!("unix://{}", sock.display())).unwrap();
        let call = |service: &str, id: &str| -> ttrpc::Result<StateResponse> {
            let mut req = ttrpc::Request::new();
            req.set_service(service.into());
            req.set_method("State".into());
            req.set_timeout_nano(5_000_000_000);
            req.payload = StateRequest {
                id: id.into(),
                ..Default::default()
            }
            .write_to_bytes()
            .unwrap();
            let res = client.request(req)?;
            Ok(StateResponse::parse_from_bytes(&res.payload).unwrap())
        };
        assert_eq!(call(TASK_V2, "a").unwrap().id, "a");
        assert_eq!(call(TASK_V3, "b").unwrap().id, "b");
        match call("containerd.task.v4.Task", "c") {
            Err(ttrpc::Error::RpcStatus(s)) => assert_eq!(s.code(), Code::INVALID_ARGUMENT),
            other => panic!("unknown service answered: {other:?}"),
        }
        server.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
