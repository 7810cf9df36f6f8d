//! Hostile images and containers: each test is an attack on the runtime (the CVE classes of
//! runc's history, and the ones particular to a shim that runs containers itself) through the
//! real path, containerd -> shim -> container. Each asserts that the attack fails and that
//! the host is untouched.
//!
//! The attacker's tool is `tests/hostile/attack.c`, built static and freestanding with gcc:
//! it is also an ELF interpreter (bound at /lib64/ld-linux-x86-64.so.2 in a container), which
//! is how a malicious image gets code to run inside a dynamically linked host binary that the
//! container executes (CVE-2019-5736).
//!
//! Where runc 1.1.5 (Debian 12) is safe, the same attack also runs under io.containerd.runc.v2;
//! where it is vulnerable, only our runtime is held to the safe behaviour.

#[path = "common/api.rs"]
mod api;
mod common;
#[path = "common/procs.rs"]
mod procs;

use std::{
    fs,
    io::Read,
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

use api::{process_spec, Api};
use common::*;
use procs::{ppid_of, serving_shim};
use serde_json::{json, Value};

const RUNC: &str = "io.containerd.runc.v2";

/// The runtimes an attack runs under: ours, and runc's where runc 1.1.5 is safe against it.
fn runtimes(runc_is_safe: bool) -> Vec<String> {
    let mut v = vec![runtime()];
    if runc_is_safe && runtime() != RUNC {
        v.push(RUNC.to_owned());
    }
    v
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// tests/hostile/attack.c, built once per test binary.
fn attack_tool() -> &'static Path {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile/attack.c");
        let out = env().workdir.join("attack");
        let st = Command::new("gcc")
            .args([
                "-static",
                "-nostdlib",
                "-nostartfiles",
                "-ffreestanding",
                "-fno-builtin",
                "-fno-stack-protector",
                "-fno-pie",
                "-no-pie",
                "-O1",
                "-o",
            ])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("run gcc (apt-get install gcc libc6-dev)");
        assert!(st.success(), "building {} failed", src.display());
        out
    })
}

/// The dynamic loader path the shim binary asks for (its PT_INTERP), where the attack tool
/// is bound.
const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";

fn loader_mount() -> String {
    format!(
        "type=bind,src={},dst={LOADER},options=rbind:ro",
        attack_tool().display()
    )
}

/// One line of the attack tool: what it could open.
#[derive(Debug)]
struct ExeReport {
    path: String,
    dev: u64,
    ino: u64,
    rdonly: bool,
    write: String,
}

fn exe_reports(out: &str) -> Vec<ExeReport> {
    out.lines()
        .filter_map(|l| {
            let l = l.trim().strip_prefix("exe ")?;
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|f| f.strip_prefix(&format!("{k}=")).map(str::to_owned))
            };
            Some(ExeReport {
                path: field("path")?,
                dev: field("dev")?.parse().ok()?,
                ino: field("ino")?.parse().ok()?,
                rdonly: field("rdonly")? == "1",
                write: field("write")?,
            })
        })
        .collect()
}

/// (dev, ino, name) of every runtime binary on this host: ours, runc, runc's shim.
fn runtime_binaries() -> Vec<(u64, u64, String)> {
    let mut v = vec![env().shim_bin.clone()];
    v.extend(find_on_path("runc"));
    v.extend(find_on_path("containerd-shim-runc-v2"));
    v.iter()
        .filter_map(|p| {
            let md = fs::metadata(p).ok()?;
            Some((md.dev(), md.ino(), path_str(p)))
        })
        .collect()
}

/// Fails if the attack tool's output shows a runtime binary reached on a writable mount:
/// then the container could write it as soon as no process executes it any more.
fn assert_no_writable_runtime_binary(rt: &str, what: &str, out: &str) {
    let bins = runtime_binaries();
    for r in exe_reports(out) {
        if let Some((_, _, name)) = bins.iter().find(|(d, i, _)| *d == r.dev && *i == r.ino) {
            assert!(
                r.rdonly,
                "{rt}: {what}: the container reached the runtime binary {name} through {} \
                 on a writable mount (opening it for writing gave {})",
                r.path, r.write
            );
            assert_ne!(r.write, "ok", "{rt}: {what}: {name} opened for writing");
        }
    }
}

fn file_bytes(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// What the container sees at `path`, read from the host through its init's root.
fn in_container(init: i32, path: &str) -> Option<String> {
    fs::read_to_string(format!("/proc/{init}/root{path}")).ok()
}

fn wait_for_file(init: i32, path: &str) {
    let there = wait_until(Duration::from_secs(20), || {
        in_container(init, path).is_some()
    });
    assert!(there, "{path} never appeared in the container of {init}");
}

// ------------------------------------------------------------------ /proc of an exec ---

/// A privileged container (CAP_SYS_ADMIN) replaces its /proc and /sys with tmpfs trees that
/// look like procfs and an AppArmor/SELinux host: every /proc/self file a runtime writes
/// for an exec becomes a plain file the container can read back.
const PROC_TRAP: &str = "mount -t tmpfs trap /proc && \
    mkdir -p /proc/self/attr/apparmor && \
    touch /proc/self/oom_score_adj /proc/self/attr/exec /proc/self/attr/current \
          /proc/self/attr/apparmor/exec /proc/self/setgroups /proc/self/uid_map && \
    mount -t tmpfs trap /sys && \
    mkdir -p /sys/kernel/security/apparmor /sys/fs/selinux /sys/module/apparmor/parameters && \
    echo Y > /sys/module/apparmor/parameters/enabled && \
    touch /trap-ready && exec sleep 600";

/// CVE-2019-16884 / CVE-2023-27561 / CVE-2025-52881 class: an exec's oomScoreAdj must reach
/// the process's real /proc entry, never a file the container put where /proc was.
#[test]
fn an_exec_writes_its_oom_score_to_the_real_proc_not_the_containers_tmpfs() {
    let _serial = shared();
    let api = Api::connect();
    for rt in runtimes(true) {
        let c = Detached::start("procoom", &rt, &["--privileged"], &["sh", "-c", PROC_TRAP]);
        let init = task_pid(&c.0);
        wait_for_file(init, "/trap-ready");
        let spec = process_spec(&["sleep", "30"], json!({"oomScoreAdj": 7}));
        let started = api.exec_and_start(&c.0, "oom", &spec);
        let fake = in_container(init, "/proc/self/oom_score_adj").unwrap_or_default();
        assert_eq!(
            fake, "",
            "{rt}: the exec wrote its oom_score_adj into the container's tmpfs ({started:?})"
        );
        match started {
            Ok(pid) => {
                let real =
                    fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap_or_default();
                assert_eq!(real.trim(), "7", "{rt}: the exec's real oom_score_adj");
            }
            // runc 1.1.5 refuses an exec into a container whose /proc is not procfs.
            Err(e) => assert_eq!(rt, RUNC, "{rt}: the exec failed: {e}"),
        }
    }
}

/// The same trap for the LSM exec labels: the container's /sys claims AppArmor and SELinux,
/// its /proc/self/attr files are plain files. A label must never be "applied" by writing
/// into them; whether the host has the LSM is decided by the host.
#[test]
fn an_exec_lsm_label_is_not_decided_or_written_through_the_containers_sys_and_proc() {
    let _serial = shared();
    let api = Api::connect();
    let host_apparmor = Path::new("/sys/kernel/security/apparmor").is_dir();
    let host_selinux = Path::new("/sys/fs/selinux").is_dir();
    for rt in runtimes(true) {
        let c = Detached::start("proclsm", &rt, &["--privileged"], &["sh", "-c", PROC_TRAP]);
        let init = task_pid(&c.0);
        wait_for_file(init, "/trap-ready");
        let aa = api.exec_and_start(
            &c.0,
            "aa",
            &process_spec(
                &["sleep", "30"],
                json!({"apparmorProfile": "shimrs-hostile-test"}),
            ),
        );
        let se = api.exec_and_start(
            &c.0,
            "se",
            &process_spec(
                &["sleep", "30"],
                json!({"selinuxLabel": "system_u:system_r:shimrs_hostile_t:s0"}),
            ),
        );
        for f in [
            "/proc/self/attr/apparmor/exec",
            "/proc/self/attr/exec",
            "/proc/self/attr/current",
        ] {
            let fake = in_container(init, f).unwrap_or_default();
            assert_eq!(
                fake, "",
                "{rt}: an exec label went into the container's {f} (apparmor exec: {aa:?}, \
                 selinux exec: {se:?})"
            );
        }
        if rt != RUNC {
            // Neither profile exists, and this host may not even have the modules: the
            // execs must fail, saying why, instead of running unconfined.
            let aa = aa.expect_err("an exec with an AppArmor profile ran unconfined");
            let se = se.expect_err("an exec with an SELinux label ran unconfined");
            if !host_apparmor {
                assert!(aa.contains("AppArmor is not enabled"), "{aa}");
            }
            if !host_selinux {
                assert!(se.contains("SELinux is not enabled"), "{se}");
            }
        }
    }
}

// ------------------------------------------------------------ the runtime binary ---

/// CVE-2019-5736: the image's entrypoint is /proc/self/exe, and the image ships its own
/// dynamic loader. If the container's first process is still the runtime binary when it
/// execs, the kernel runs that binary with the image's loader, which then holds the host
/// binary open.
#[test]
fn a_proc_self_exe_entrypoint_cannot_reach_the_runtime_binary_for_writing() {
    let _serial = shared();
    let before = file_bytes(&env().shim_bin);
    for rt in runtimes(true) {
        let id = unique_id("selfexe");
        let mount = loader_mount();
        let out = ctr(&[
            "run",
            "--rm",
            "--runtime",
            &rt,
            "--mount",
            &mount,
            IMAGE,
            &id,
            "/proc/self/exe",
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_no_writable_runtime_binary(&rt, "entrypoint /proc/self/exe", &text);
        assert_no_leftovers(&id);
    }
    assert!(
        file_bytes(&env().shim_bin) == before,
        "the shim binary changed"
    );
}

/// The same through a script whose interpreter is /proc/self/exe (the kernel opens the
/// interpreter while the process is still the runtime).
#[test]
fn a_proc_self_exe_shebang_cannot_reach_the_runtime_binary_for_writing() {
    let _serial = shared();
    let dir = env().workdir.join(unique_id("shebang"));
    fs::create_dir_all(&dir).unwrap();
    let script = dir.join("run.sh");
    fs::write(&script, "#!/proc/self/exe\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    for rt in runtimes(true) {
        let id = unique_id("shebang");
        let (loader, scripts) = (
            loader_mount(),
            format!("type=bind,src={},dst=/x,options=rbind:ro", dir.display()),
        );
        let out = ctr(&[
            "run",
            "--rm",
            "--runtime",
            &rt,
            "--mount",
            &loader,
            "--mount",
            &scripts,
            IMAGE,
            &id,
            "/x/run.sh",
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_no_writable_runtime_binary(&rt, "#!/proc/self/exe script", &text);
        assert_no_leftovers(&id);
    }
}

/// An exec whose program is /proc/self/exe, into a container that ships a loader.
#[test]
fn an_exec_of_proc_self_exe_cannot_reach_the_runtime_binary_for_writing() {
    let _serial = shared();
    for rt in runtimes(true) {
        let mount = loader_mount();
        let c = Detached::start("execself", &rt, &["--mount", &mount], &["sleep", "600"]);
        let out = ctr(&["task", "exec", "--exec-id", "self", &c.0, "/proc/self/exe"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_no_writable_runtime_binary(&rt, "exec of /proc/self/exe", &text);
    }
}

/// The attack tool's report on /proc/<pid>/exe of every process visible in container `id`
/// (an exec there), with ctr's output.
fn scan_exe_in(id: &str) -> (String, std::process::Output) {
    let out = ctr(&[
        "task",
        "exec",
        "--exec-id",
        "scan",
        id,
        "/attack",
        "scan-exe",
    ]);
    (String::from_utf8_lossy(&out.stdout).into_owned(), out)
}

/// A privileged container shares its pid namespace with a container being created: it sees
/// that container's first process while the runtime sets it up, and reopens the process's
/// executable through /proc/<pid>/exe.
#[test]
fn a_neighbour_cannot_reopen_the_runtime_binary_through_proc_pid_exe() {
    let _serial = shared();
    let api = Api::connect();
    for rt in runtimes(true) {
        let tool = format!(
            "type=bind,src={},dst=/attack,options=rbind:ro",
            attack_tool().display()
        );
        let a = Detached::start(
            "exewatch",
            &rt,
            &["--privileged", "--mount", &tool],
            &["sleep", "600"],
        );
        let pidns = format!("pid:/proc/{}/ns/pid", task_pid(&a.0));
        let b = unique_id("exevictim");
        ctr_ok(&[
            "c",
            "create",
            "--runtime",
            &rt,
            "--with-ns",
            &pidns,
            IMAGE,
            &b,
            "sleep",
            "600",
        ]);
        // Created, not started: the first process waits in the runtime's code.
        let created = api.create_task(&b);
        let (text, out) = scan_exe_in(&a.0);
        api.kill_and_delete(&b);
        remove_container(&b);
        let victim = created.unwrap_or_else(|e| panic!("{rt}: {e}"));
        assert!(
            exe_reports(&text).len() >= 2,
            "{rt}: the scan saw too little (victim {victim}):\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_no_writable_runtime_binary(&rt, "/proc/<pid>/exe of a created container", &text);
    }
}

/// A container in the host's pid namespace with the default capabilities (a hostPID pod)
/// sees the shim daemon and, for ours, its launcher. It reaches neither binary: the daemon
/// runs the host's binary, as containerd's runc shim does, but /proc/<pid>/exe of a process
/// with more capabilities needs CAP_SYS_PTRACE; the launcher runs the sealed view.
#[test]
fn a_host_pid_container_cannot_reach_the_shim_binary() {
    let _serial = shared();
    for rt in runtimes(true) {
        let tool = format!(
            "type=bind,src={},dst=/attack,options=rbind:ro",
            attack_tool().display()
        );
        // The test's own pid namespace: the host's, the shim's (pid 1 may be out of reach).
        let host_pid = format!("pid:/proc/{}/ns/pid", std::process::id());
        let a = Detached::start(
            "hostpid",
            &rt,
            &["--with-ns", &host_pid, "--mount", &tool],
            &["sleep", "600"],
        );
        let daemon =
            serving_shim(task_pid(&a.0)).unwrap_or_else(|| panic!("{rt}: no shim above the init"));
        let (text, out) = scan_exe_in(&a.0);
        let seen = format!("exe path=/proc/{daemon}/exe ");
        let line = text.lines().find(|l| l.starts_with(&seen));
        assert!(
            line.is_some_and(|l| l.contains(" open=errno:")),
            "{rt}: the shim daemon {daemon}, seen from the host's pid namespace: {line:?}\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_no_writable_runtime_binary(
            &rt,
            "/proc/<pid>/exe from the host's pid namespace",
            &text,
        );
    }
}

// ------------------------------------------------------- /dev traps (custom specs) ---

/// A container run from a spec of our own (`ctr oci spec` edited) on a busybox rootfs
/// directory, with `ctr run --config`.
struct SpecCase {
    id: String,
    rootfs: PathBuf,
    spec: Value,
    spec_file: PathBuf,
}

impl SpecCase {
    fn new(prefix: &str, args: &[&str]) -> SpecCase {
        let e = env();
        let id = unique_id(prefix);
        let dir = e.workdir.join(format!("hostile-{id}"));
        let rootfs = dir.join("rootfs");
        for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "run"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        let busybox = rootfs.join("bin/busybox");
        fs::copy("/bin/busybox", &busybox).expect("copy /bin/busybox (busybox-static)");
        fs::set_permissions(&busybox, fs::Permissions::from_mode(0o755)).unwrap();
        for applet in [
            "sh", "cat", "echo", "grep", "sleep", "stat", "true", "ls", "tty",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        let mut spec: Value =
            serde_json::from_str(&ctr_ok(&["oci", "spec"])).expect("ctr oci spec");
        spec["root"] = json!({"path": rootfs});
        spec["process"]["args"] = json!(args);
        spec["process"]["env"] = json!(["PATH=/bin"]);
        spec["linux"]["cgroupsPath"] = json!(format!("/{}/{id}", e.namespace));
        SpecCase {
            spec_file: dir.join("spec.json"),
            id,
            rootfs,
            spec,
        }
    }

    /// A createContainer hook running `script` with the host's busybox sh: it runs after the
    /// container's mounts and devices are made and before the runtime enters the rootfs, so
    /// it stands for an attacker racing the runtime there (another container sharing a
    /// volume mounted at /dev, say), deterministically.
    fn race_with(&mut self, script: &str) {
        self.spec["hooks"] = json!({"createContainer": [
            {"path": "/bin/busybox", "args": ["sh", "-c", script], "env": ["PATH=/bin:/usr/bin"]}
        ]});
    }

    fn write_spec(&self) -> String {
        fs::write(
            &self.spec_file,
            serde_json::to_vec_pretty(&self.spec).unwrap(),
        )
        .unwrap();
        path_str(&self.spec_file)
    }

    /// `ctr run --rm --config` under the runtime being tested: (stdout, stderr, code).
    fn run(&self) -> (String, String, i32) {
        let spec = self.write_spec();
        let out = ctr(&[
            "run",
            "--rm",
            "--runtime",
            &runtime(),
            "--config",
            &spec,
            &self.id,
        ]);
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            exit_code(&out.status),
        )
    }
}

/// CVE-2025-31133: masked paths are bind mounts of /dev/null. An attacker who swaps the
/// container's /dev/null for a symlink to a procfs file gets that file bound over every
/// masked path instead (and, with it, read or write access the masking was meant to deny).
#[test]
fn a_dev_null_symlink_cannot_unmask_or_redirect_masked_paths() {
    let _serial = shared();
    let core_pattern = fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let mut c = SpecCase::new(
        "devnull",
        &[
            "sh",
            "-c",
            "echo kcore=[$(cat /proc/kcore)]; echo keys=[$(cat /proc/keys)]; \
             echo x > /proc/kcore; stat -L -c dev=%t:%T /proc/kcore",
        ],
    );
    let root = path_str(&c.rootfs);
    c.race_with(&format!(
        "rm -f {root}/dev/null && ln -s /proc/sys/kernel/core_pattern {root}/dev/null"
    ));
    let (out, err, code) = c.run();
    let refused = code != 0 && err.contains("/dev/null");
    if !refused {
        assert!(
            out.contains("kcore=[]") && out.contains("keys=[]") && out.contains("dev=1:3"),
            "a masked path is not the null device after /dev/null was swapped for a symlink \
             (exit {code}):\n{out}\n{err}"
        );
    }
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        core_pattern,
        "the host's core_pattern changed"
    );
    assert_no_leftovers(&c.id);
}

/// CVE-2025-52565: the pty is bound over /dev/console. If /dev/console is a symlink when that
/// happens, a runtime that follows it mounts the pty wherever the container pointed it.
#[test]
fn a_dev_console_symlink_is_not_followed() {
    let _serial = shared();
    let mut c = SpecCase::new(
        "console",
        &[
            "sh",
            "-c",
            "echo mounted=$(grep -c ' /etc/console-trap ' /proc/self/mountinfo)",
        ],
    );
    c.spec["process"]["terminal"] = json!(true);
    let root = path_str(&c.rootfs);
    c.race_with(&format!(
        "touch {root}/etc/console-trap && rm -f {root}/dev/console && \
         ln -s /etc/console-trap {root}/dev/console"
    ));
    let spec = c.write_spec();
    let e = env();
    let cmd = format!(
        "{} --address {} -n {} run --rm -t --runtime {} --config {spec} {}",
        e.ctr_bin.display(),
        e.address,
        e.namespace,
        runtime(),
        c.id
    );
    let (out, timed_out) = run_with_timeout(
        Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(Stdio::null()),
        Duration::from_secs(60),
    );
    assert!(!timed_out, "ctr run -t hung");
    let text = String::from_utf8_lossy(&out.stdout).replace('\0', "");
    let refused = !out.status.success() && text.contains("/dev/console");
    assert!(
        refused || text.contains("mounted=0"),
        "the pty was mounted through the /dev/console symlink:\n{text}"
    );
    remove_container(&c.id);
    assert_no_leftovers(&c.id);
}

/// An exec with a terminal allocates its pty in the live container: /dev/ptmx there is the
/// container's to replace (here by a symlink to a fifo it made). The pty must still come from
/// the container's devpts, found without following anything the container controls.
#[test]
fn a_dev_ptmx_trap_does_not_catch_a_terminal_exec() {
    let _serial = shared();
    let c = Detached::start(
        "ptmx",
        &runtime(),
        &[],
        &[
            "sh",
            "-c",
            "rm /dev/ptmx && mkfifo /tmp/trap && ln -s /tmp/trap /dev/ptmx && \
             touch /trap-ready && exec sleep 600",
        ],
    );
    let init = task_pid(&c.0);
    wait_for_file(init, "/trap-ready");
    let e = env();
    let cmd = format!(
        "{} --address {} -n {} task exec -t --exec-id tty {} tty",
        e.ctr_bin.display(),
        e.address,
        e.namespace,
        c.0
    );
    let (out, timed_out) = run_with_timeout(
        Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(Stdio::null()),
        Duration::from_secs(60),
    );
    assert!(!timed_out, "ctr task exec -t hung");
    // `script` shows the terminal's NUL as ^@.
    let text = String::from_utf8_lossy(&out.stdout).replace('\0', "");
    assert!(
        text.lines()
            .any(|l| l.trim_start_matches("^@").trim().starts_with("/dev/pts/")),
        "a terminal exec did not get its pty from the container's devpts:\n{text}"
    );
}

// ----------------------------------------------------------------------- cgroups ---

/// The cgroup hierarchy roots a container's cgroup lives under on this host.
fn cgroup_roots() -> Vec<PathBuf> {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return vec!["/sys/fs/cgroup".into()];
    }
    fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("cgroup.procs").exists())
        .collect()
}

/// A cgroup of someone else's, `name` in every hierarchy, holding a host process.
struct ForeignCgroup {
    name: String,
    dirs: Vec<PathBuf>,
    process: Child,
}

impl ForeignCgroup {
    fn new(prefix: &str) -> ForeignCgroup {
        let name = format!("shimrs-foreign-{}", unique_id(prefix));
        let mut process = Command::new("sleep").arg("600").spawn().unwrap();
        let mut dirs = Vec::new();
        for r in cgroup_roots() {
            let dir = r.join(&name);
            fs::create_dir(&dir).unwrap();
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(v) = fs::read_to_string(r.join(f)) {
                    let _ = fs::write(dir.join(f), v.trim());
                }
            }
            if let Err(e) = fs::write(dir.join("cgroup.procs"), process.id().to_string()) {
                let _ = process.kill();
                panic!("move the host process into {}: {e}", dir.display());
            }
            dirs.push(dir);
        }
        ForeignCgroup {
            name,
            dirs,
            process,
        }
    }

    fn alive(&mut self) -> bool {
        self.process.try_wait().unwrap().is_none()
    }
}

impl Drop for ForeignCgroup {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        for d in &self.dirs {
            wait_until(Duration::from_secs(5), || {
                fs::remove_dir(d).is_ok() || !d.exists()
            });
        }
    }
}

/// A spec whose cgroupsPath names a cgroup that already holds processes (a system service's,
/// say) is refused: Delete and kill-all would otherwise kill those processes. runc 1.1.5
/// only warns (and then kills them), so only ours is held to this.
#[test]
fn a_populated_foreign_cgroup_is_refused_and_its_processes_survive() {
    let _serial = shared();
    let mut foreign = ForeignCgroup::new("cg");
    let id = unique_id("foreigncg");
    let cgroup = format!("/{}", foreign.name);
    let out = ctr(&[
        "run",
        "--rm",
        "--runtime",
        &runtime(),
        "--cgroup",
        &cgroup,
        IMAGE,
        &id,
        "true",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    thread_sleep(300);
    assert!(
        foreign.alive(),
        "the host process in {cgroup} was killed by a container's teardown"
    );
    assert!(
        !out.status.success() && err.contains(&foreign.name) && err.contains("not empty"),
        "a container was created in the populated cgroup {cgroup}: {err}"
    );
    assert_no_leftovers(&id);
}

/// `linux.resources.unified` may not name cgroup core files: cgroup.procs would move any
/// host process into the container's cgroup (where teardown kills it), subtree_control or
/// cgroup.kill would act on the hierarchy itself.
#[test]
fn unified_keys_naming_cgroup_core_files_are_refused() {
    let _serial = shared();
    let mut victim = Command::new("sleep").arg("600").spawn().unwrap();
    for (key, value) in [
        ("cgroup.procs", victim.id().to_string()),
        ("cgroup.threads", victim.id().to_string()),
        ("cgroup.subtree_control", "+memory".to_owned()),
        ("cgroup.kill", "1".to_owned()),
    ] {
        let mut c = SpecCase::new("unified", &["true"]);
        c.spec["linux"]["resources"]["unified"] = json!({ key: value });
        let (_, err, code) = c.run();
        assert!(
            code != 0 && err.contains(key),
            "a unified key {key:?} was accepted (exit {code}): {err}"
        );
        assert!(
            victim.try_wait().unwrap().is_none(),
            "the host process was killed through unified {key:?}"
        );
        assert_no_leftovers(&c.id);
    }
    let _ = victim.kill();
    let _ = victim.wait();
}

fn thread_sleep(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

// ---------------------------------------------------------------------- pid reuse ---

/// Creates a host process at pid `pid` (free by now) through ns_last_pid; None when another
/// process of the machine took it first.
fn decoy_at(pid: u32) -> Option<Child> {
    for _ in 0..50 {
        fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).ok()?;
        let mut child = Command::new("sleep").arg("60").spawn().unwrap();
        if child.id() == pid {
            return Some(child);
        }
        let _ = child.kill();
        let _ = child.wait();
        if Path::new(&format!("/proc/{pid}")).exists() {
            return None; // someone else has it now
        }
    }
    None
}

/// The shim publishes a process's exit only once its client has read the last output, which
/// a slow client stretches to seconds. The pid is free from the reap on: a Kill in that
/// window (whatever State says meanwhile) must not reach whatever process got the pid next.
#[test]
fn a_kill_after_the_exit_never_reaches_a_process_that_reused_the_pid() {
    let _serial = shared();
    let api = Api::connect();
    let mut exercised = false;
    for attempt in 0..3 {
        let id = unique_id("pidreuse");
        ctr_ok(&[
            "c",
            "create",
            "--runtime",
            &runtime(),
            IMAGE,
            &id,
            "--",
            "sh",
            "-c",
            "sleep 1; head -c 4000 /dev/zero",
        ]);
        let fifo = env().workdir.join(format!("{id}.out"));
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let reader = fs::File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let pid = api
            .create_task_with_stdout(&id, &path_str(&fifo))
            .unwrap_or_else(|e| panic!("{e}"));
        api.start(&id, "").unwrap();
        // A client that reads, but slowly: the drain goes on for seconds.
        let stop = Arc::new(AtomicBool::new(false));
        let slow = {
            let stop = stop.clone();
            let mut reader = reader;
            std::thread::spawn(move || {
                let mut buf = [0u8; 8];
                while !stop.load(Ordering::SeqCst) {
                    let _ = reader.read(&mut buf);
                    thread_sleep(40);
                }
            })
        };
        let reaped = wait_until(Duration::from_secs(10), || {
            !Path::new(&format!("/proc/{pid}")).exists()
        });
        assert!(reaped, "the container's process {pid} did not exit");
        let status = task_status(&id);
        let mut decoy = decoy_at(pid);
        if let Some(d) = decoy.as_mut() {
            exercised = true;
            let out = ctr(&["task", "kill", "-s", "SIGTERM", &id]);
            thread_sleep(300);
            let survived = d.try_wait().unwrap().is_none();
            let _ = d.kill();
            let _ = d.wait();
            stop.store(true, Ordering::SeqCst);
            let _ = slow.join();
            api.kill_and_delete(&id);
            remove_container(&id);
            assert!(
                survived,
                "Kill of the exited task {id} reached pid {pid}, reused by a host process ({})",
                String::from_utf8_lossy(&out.stderr)
            );
            break;
        }
        stop.store(true, Ordering::SeqCst);
        let _ = slow.join();
        api.kill_and_delete(&id);
        remove_container(&id);
        eprintln!("attempt {attempt}: pid {pid} not reusable in the window (status {status:?})");
    }
    assert!(
        exercised,
        "could not put a process at the exited pid during the drain in 3 attempts"
    );
}

// ----------------------------------------------------------------------- hygiene ---

/// Inodes of the listening unix sockets bound at `path` (/proc/net/unix).
fn listening_socket_inodes(path: &Path) -> Vec<String> {
    let table = fs::read_to_string("/proc/net/unix").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Num RefCount Protocol Flags Type St Inode Path; St 01 = listening.
            (f.len() >= 8 && f[5] == "01" && Path::new(f[7]) == path).then(|| f[6].to_owned())
        })
        .collect()
}

/// The launcher (and every container process it clones, until its exec) holds nothing of the
/// daemon's it does not need: not the ttrpc listening socket, not the bundle as its working
/// directory; and it runs the shim binary from a read-only mount.
#[test]
fn the_launcher_holds_no_listening_socket_no_bundle_cwd_and_a_read_only_binary() {
    let _serial = shared();
    if !testing_our_shim() {
        return;
    }
    let c = Detached::sleeping("hygiene");
    let init = task_pid(&c.0);
    let launcher = ppid_of(init).expect("the init's parent");
    let comm = fs::read_to_string(format!("/proc/{launcher}/comm")).unwrap();
    assert_eq!(comm.trim(), "shim-rs-launch", "the init's parent");
    let cwd = fs::read_link(format!("/proc/{launcher}/cwd")).unwrap();
    assert_eq!(cwd, Path::new("/"), "the launcher's working directory");
    let listeners = listening_socket_inodes(&shim_socket_path(&c.0));
    assert!(!listeners.is_empty(), "no listening shim socket found");
    for fd in fs::read_dir(format!("/proc/{launcher}/fd"))
        .unwrap()
        .flatten()
    {
        let target = fs::read_link(fd.path()).unwrap_or_default();
        let t = path_str(&target);
        assert!(
            !listeners.iter().any(|i| t == format!("socket:[{i}]")),
            "the launcher holds the ttrpc listening socket as fd {:?}",
            fd.file_name()
        );
    }
    let exe = fs::File::options()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(format!("/proc/{launcher}/exe"))
        .unwrap();
    let st = nix::sys::statvfs::fstatvfs(&exe).unwrap();
    assert!(
        st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY),
        "the launcher runs the shim binary from a writable mount"
    );
}
