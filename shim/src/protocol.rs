//! The shim protocol: the `start` action (returns the daemon's address), the daemon itself,
//! the `delete` action containerd runs after every container, `-info` and `-v`.
//!
//! `start` binds the ttrpc socket and then forks: the child goes on as the daemon, and the
//! parent prints the address and exits. The listening socket already queues connections, so
//! containerd can dial before the daemon has finished starting. The daemon executes its
//! launcher, the parent of every container process, from a sealed, read-only view of the
//! binary (see `runtime::launch::sealed_exe`: no process that enters a container can reach
//! the host binary for writing).
//! What `start` reads and writes differs by containerd version: see [`crate::bootstrap`].

use std::{
    ffi::OsString,
    io::Write,
    os::{
        fd::AsRawFd,
        unix::net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::Arc,
};

use containerd_shim::Flags;
use containerd_shim_protos::{
    api::DeleteResponse,
    protobuf::{well_known_types::any::Any, Message, MessageField},
    types::introspection::{RuntimeInfo, RuntimeVersion},
};
use log::{error, info};
use runtime::launch::{
    sealed_exe::{ExecArgv, SealedExe},
    zygote::LAUNCHER_LOG_FD,
    Zygote,
};

use crate::{
    bootstrap::{self, StartConfig},
    events::{self, EventQueue},
    logger,
    oom::OomWatcher,
    reactor::Reactor,
    task::Service,
    ttrpc,
};

pub const RUNTIME_NAME: &str = "io.containerd.rs.v1";
/// Annotations that put several containers into one shim daemon (a pod).
const GROUP_LABELS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

/// Entry point of the binary: returns the process exit code.
pub fn main() -> i32 {
    let args: Vec<OsString> = std::env::args_os().collect();
    let flags = match containerd_shim::parse(&args[1..]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{RUNTIME_NAME}: {e}");
            return 2;
        }
    };
    if flags.version {
        print!("{}", version_text());
        return 0;
    }
    let result = if flags.info {
        info()
    } else {
        match flags.action.as_str() {
            "start" => start(&flags),
            "delete" => delete(&flags),
            // Not containerd's: the launcher, as the daemon executes it (see `Zygote::spawn`).
            LAUNCHER_ACTION => {
                logger::adopt(LAUNCHER_LOG_FD);
                runtime::launch::zygote::run_launcher()
            }
            // Not containerd's: a default config.json to start a bundle from, as `runc spec`.
            "spec" => {
                println!("{}", runtime::spec::default_spec_json());
                Ok(())
            }
            "" => Err(
                "no action given: containerd runs this binary with `start`, `delete` or -info"
                    .into(),
            ),
            other => Err(format!("unknown action {other:?}")),
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{RUNTIME_NAME}: {e}");
            1
        }
    }
}

/// `-v`: the version, the commit and what this build can do, in the layout of containerd's
/// own shims (`containerd-shim-runc-v2 -v`).
fn version_text() -> String {
    let linkage = if cfg!(target_feature = "crt-static") {
        "static"
    } else {
        "dynamic (glibc)"
    };
    format!(
        "{RUNTIME_NAME}:\n  Version:  {}\n  Revision: {}\n  Compiler: {}\n  Linkage:  {linkage}\n  \
         Features: seccomp (libseccomp {}, SCMP_ACT_NOTIFY), cgroup v1, cgroup v2 (eBPF device \
         filter, CLONE_INTO_CGROUP), systemd cgroup driver (D-Bus), user and time namespaces, \
         idmapped mounts, OCI hooks; no checkpoint/restore\n",
        env!("CARGO_PKG_VERSION"),
        env!("SHIM_RS_COMMIT"),
        env!("SHIM_RS_RUSTC"),
        runtime::seccomp::library_version(),
    )
}

const FEATURES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

fn info() -> Result<(), String> {
    let features = serde_json::to_vec(&runtime::features::document()).map_err(|e| e.to_string())?;
    let info = RuntimeInfo {
        name: RUNTIME_NAME.into(),
        version: MessageField::some(RuntimeVersion {
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        }),
        // The OCI features document, as containerd's runc shim passes runc's.
        features: MessageField::some(Any {
            type_url: FEATURES_TYPE_URL.into(),
            value: features,
            ..Default::default()
        }),
        ..Default::default()
    };
    let bytes = info.write_to_bytes().map_err(|e| e.to_string())?;
    std::io::stdout()
        .write_all(&bytes)
        .map_err(|e| e.to_string())
}

fn bundle_dir(flags: &Flags) -> PathBuf {
    if flags.bundle.is_empty() {
        std::env::current_dir().unwrap_or_default()
    } else {
        PathBuf::from(&flags.bundle)
    }
}

/// The group a container's shim belongs to: its pod, or the container alone.
fn grouping(bundle: &Path, id: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Annotated {
        #[serde(default)]
        annotations: std::collections::HashMap<String, String>,
    }
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Annotated>(&b).ok())
        .and_then(|a| {
            GROUP_LABELS
                .iter()
                .find_map(|l| a.annotations.get(*l).cloned())
        })
        .filter(|g| !g.is_empty())
        .unwrap_or_else(|| id.to_owned())
}

fn start(flags: &Flags) -> Result<(), String> {
    let stdin = bootstrap::read_stdin().map_err(|e| format!("start: {e}"))?;
    let input = bootstrap::classify(&stdin, &flags.id, &flags.namespace)
        .map_err(|e| format!("start: {e}"))?;
    let cfg = StartConfig::resolve(flags, input, |k| std::env::var(k).ok())
        .map_err(|e| format!("start: {e}"))?;
    let bundle = bundle_dir(flags);
    let (address, path) = cfg
        .socket(&grouping(&bundle, &cfg.id))
        .map_err(|e| format!("start: {e}"))?;

    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            // The group's daemon may already run: share it.
            if UnixStream::connect(&path).is_ok() {
                return answer(&cfg, &bundle, &address);
            }
            std::fs::remove_file(&path)
                .map_err(|e| format!("remove stale socket {}: {e}", path.display()))?;
            UnixListener::bind(&path).map_err(|e| format!("bind {}: {e}", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
            }
            UnixListener::bind(&path).map_err(|e| format!("bind {}: {e}", path.display()))?
        }
        Err(e) => return Err(format!("bind {}: {e}", path.display())),
    };

    // From here on a failure must not leave the socket (nor a daemon) behind.
    let forget_socket = |e: String| {
        let _ = std::fs::remove_file(&path);
        e
    };
    adjust_oom_score().map_err(forget_socket)?;
    let child = fork_daemon(&cfg, listener, &path).map_err(forget_socket)?;
    answer(&cfg, &bundle, &address).inspect_err(|_| {
        // containerd will never know this daemon (a full disk for the address file,
        // containerd gone): end it, and its launcher with it (PDEATHSIG).
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(child, None);
        let _ = std::fs::remove_file(&path);
    })
}

/// The action the daemon executes its launcher with (see [`Zygote::spawn`]).
const LAUNCHER_ACTION: &str = "launcher";

/// Forks the daemon. `start` is single-threaded, so the child simply goes on as the daemon:
/// no second execution of the binary, whose loading would delay the daemon's first answer
/// (the launcher, which does need a fresh process, is executed from the sealed view while
/// the daemon already serves).
fn fork_daemon(
    cfg: &StartConfig,
    listener: UnixListener,
    socket: &Path,
) -> Result<nix::unistd::Pid, String> {
    // For the daemon's launcher, but made here: a failure is then start's error, which
    // containerd shows to its client.
    let exe = SealedExe::of_self().map_err(|e| format!("seal the shim binary: {e}"))?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("open /dev/null: {e}"))?;
    // SAFETY: no thread has been started in this process (`start` starts none), so the
    // child may run any code.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork shim daemon: {e}"))? {
        nix::unistd::ForkResult::Parent { child } => Ok(child),
        nix::unistd::ForkResult::Child => {
            // containerd reads `start`'s stdout and stderr (one pipe) to EOF before it
            // dials the socket: let go of them first of all.
            for fd in 0..=2 {
                redirect(fd, &null);
            }
            drop(null);
            let code = match daemon(cfg, socket, listener, exe) {
                Ok(()) => 0,
                Err(e) => {
                    error!("shim daemon: {e}");
                    1
                }
            };
            std::process::exit(code)
        }
    }
}

/// argv and environment of the launcher: `start`'s argv, but for the action (tools that find
/// shims by their flags, containerd's and ours, still do); of the environment only the log
/// level to keep. The launcher reads nothing else from it, and containerd 1.6/1.7 put
/// `LD_LIBRARY_PATH=<root>/opt/lib:` in it, whose empty entry has the dynamic loader look for
/// each library in the bundle directory first (about 50 failed opens per start).
fn launcher_args() -> Result<ExecArgv, String> {
    let argv = std::env::args_os().map(|a| {
        if a == "start" {
            OsString::from(LAUNCHER_ACTION)
        } else {
            a
        }
    });
    let level = OsString::from(log::max_level().to_string());
    let env = std::iter::once((OsString::from(logger::LEVEL_ENV), level));
    ExecArgv::new(argv, env).map_err(|e| format!("the launcher's arguments: {e}"))
}

/// Sets our oom_score_adj to containerd's + 1 (at most 1000) before the daemon is forked, as
/// containerd's runc shim does: under memory pressure the kernel picks a shim before
/// containerd, and containers whose spec sets no oomScoreAdj inherit the shim's score.
fn adjust_oom_score() -> Result<(), String> {
    let parent = format!("/proc/{}/oom_score_adj", nix::unistd::getppid());
    let score: i32 = std::fs::read_to_string(&parent)
        .map_err(|e| format!("read {parent}: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("{parent}: {e}"))?;
    let ours = (score + 1).min(1000);
    std::fs::write("/proc/self/oom_score_adj", ours.to_string())
        .map_err(|e| format!("set the shim's oom_score_adj to {ours}: {e}"))
}

/// Records the address in the bundle, where containerd 1.6/1.7 look for it when they
/// reconnect after a restart (as containerd's own shims do) and where the `delete` action
/// finds the socket of a daemon that died, then prints the reply.
fn answer(cfg: &StartConfig, bundle: &Path, address: &str) -> Result<(), String> {
    let file = bundle.join("address");
    std::fs::write(&file, address).map_err(|e| format!("write {}: {e}", file.display()))?;
    let mut out = std::io::stdout().lock();
    out.write_all(&cfg.reply.render(address))
        .and_then(|()| out.flush())
        .map_err(|e| format!("write the address to stdout: {e}"))
}

fn redirect(fd: i32, file: &std::fs::File) {
    // SAFETY: dup2 between descriptors we own.
    unsafe { libc::dup2(file.as_raw_fd(), fd) };
}

/// The long-lived daemon: forked by `start`, in the bundle directory, with stdio on
/// /dev/null, serving `listener` (bound at `socket`); `exe` is the sealed view of the binary
/// to execute the launcher from.
fn daemon(
    cfg: &StartConfig,
    socket: &Path,
    listener: UnixListener,
    exe: SealedExe,
) -> Result<(), String> {
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    // The log fifo as stderr too: panics then reach containerd's log.
    if let Some(log_fifo) = logger::init(cfg.debug) {
        redirect(2, &log_fifo);
    }
    // A panic on any thread ends the daemon at once: a half-dead shim (its exits or events
    // thread gone) would lose exits silently, a dead one is cleaned up by containerd.
    std::panic::set_hook(Box::new(|info| {
        error!("shim daemon {}: {info}", std::process::id());
        std::process::abort();
    }));
    // SAFETY: ignoring SIGPIPE has no preconditions; a vanished reader must not kill us.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };

    // One malloc arena for all threads: the shim's threads mostly sleep, and an arena per
    // thread costs resident memory in every shim on the machine.
    // SAFETY: mallopt has no preconditions; called before any thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    // The bundle, our working directory until now, is no business of the launcher's.
    let bundle = BundleWatch::here();
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    // On this thread, which lives as long as the daemon (the launcher's death signal
    // follows it). The parent's view of the binary goes with it: once the launcher has
    // executed it, no descriptor of it remains anywhere (a detached mount then dissolves).
    let log_fd = logger::fd().map(|fd| {
        // SAFETY: the logger's descriptor stays open as long as the process.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
    });
    let zygote = Zygote::spawn(&exe, &launcher_args()?, log_fd).map_err(|e| e.to_string())?;
    let seal = exe.seal;
    drop(exe);

    let exits = zygote
        .take_exit_channel()
        .ok_or("launcher exit channel missing")?;
    let events = Arc::new(
        EventQueue::start(cfg.ttrpc_address.clone(), cfg.namespace.clone())
            .map_err(|e| format!("start the events thread: {e}"))?,
    );
    let mut reactor = Reactor::new().map_err(|e| format!("event loop: {e}"))?;
    let oom = OomWatcher::start(events.clone(), &mut reactor)
        .map_err(|e| error!("OOM watcher: {e}: no /tasks/oom events from this shim"))
        .ok();
    let service = Arc::new(Service::new(
        cfg.namespace.clone(),
        zygote,
        events.clone(),
        reactor.handle(),
        oom,
    ));
    service
        .watch_exits(&mut reactor, exits)
        .map_err(|e| format!("watch the launcher's exits: {e}"))?;
    let svc = service.clone();
    ttrpc::server::serve(
        &mut reactor,
        listener,
        Arc::new(move |r: &mut Reactor, method: &str, payload, resp| {
            svc.dispatch(r, method, payload, resp)
        }),
    )
    .map_err(|e| format!("ttrpc listener: {e}"))?;
    info!(
        "shim daemon {} serving {} and {} on {}, started by {}, launcher run from {seal:?}",
        std::process::id(),
        bootstrap::TASK_V2,
        bootstrap::TASK_V3,
        socket.display(),
        cfg.origin
    );
    // Until Shutdown finds no container left.
    if let Some(bundle) = bundle {
        bundle.watch(&mut reactor, service.clone());
    }
    reactor.run();
    events.drain(std::time::Duration::from_secs(5));
    let _ = std::fs::remove_file(socket);
    info!("shim daemon {} exiting", std::process::id());
    // Exit without tearing down other threads: the socket is gone and nothing is pending.
    std::process::exit(0)
}

/// Removes the shim socket recorded in the bundle if no daemon answers on it any more
/// (a live daemon may still serve other containers of its group).
fn remove_dead_socket(bundle: &Path) {
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let path = Path::new(address.trim().trim_start_matches("unix://"));
    if !path.as_os_str().is_empty() && UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}

/// The `delete` action: cleans up after a container whose shim is gone (or just finished).
/// Idempotent and fast, since containerd runs it after every container.
fn delete(flags: &Flags) -> Result<(), String> {
    let bundle = bundle_dir(flags);
    // What cannot be cleaned is reported (containerd logs our stderr) but does not stop the
    // rest: the socket, the response containerd waits for.
    let state = runtime::state::destroy(&bundle).unwrap_or_else(|e| {
        eprintln!("{RUNTIME_NAME}: warning: delete: {e}");
        None
    });
    remove_dead_socket(&bundle);
    if let Some(s) = &state {
        // The daemon died before its Delete: the poststop hooks are still owed. Failures
        // are warnings (on our stderr, which containerd logs).
        for e in runtime::hooks::poststop_from_bundle(&bundle, &s.id) {
            eprintln!("{RUNTIME_NAME}: warning: {}: {e}", s.id);
        }
    }
    let response = DeleteResponse {
        pid: state.map_or(0, |s| s.pid as u32),
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: MessageField::some(events::timestamp(events::now_nanos())),
        ..Default::default()
    };
    let bytes = response.write_to_bytes().map_err(|e| e.to_string())?;
    std::io::stdout()
        .write_all(&bytes)
        .map_err(|e| e.to_string())
}

/// The bundle this daemon was started for. containerd removes it when it gives up on a shim
/// it started without ever telling it (e.g. it failed to record the shim on a full disk,
/// after `start` had answered); a daemon with no container whose bundle is gone has nobody
/// left to serve, so it exits instead of waiting for a Shutdown that will never come.
struct BundleWatch {
    path: PathBuf,
    inode: u64,
}

impl BundleWatch {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(1);

    /// The working directory, which `start` (and so the daemon) runs in.
    fn here() -> Option<BundleWatch> {
        use std::os::unix::fs::MetadataExt;
        let path = std::env::current_dir().ok()?;
        let inode = std::fs::metadata(&path).ok()?.ino();
        Some(BundleWatch { path, inode })
    }

    fn gone(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.path).map_or(true, |m| m.ino() != self.inode)
    }

    fn watch(self, r: &mut Reactor, service: Arc<Service>) {
        r.after(Self::EVERY, move |r| {
            if self.gone() && service.close_if_idle() {
                info!(
                    "shim daemon {}: bundle {} removed and no container here: containerd gave \
                     up on this shim; exiting",
                    std::process::id(),
                    self.path.display()
                );
                r.stop();
            } else {
                self.watch(r, service);
            }
        });
    }
}
