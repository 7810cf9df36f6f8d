//! The differential parity suite: every scenario runs under `io.containerd.runc.v2` (runc 1.1.5,
//! the oracle) and under our runtime, on this test binary's one containerd, in the same run.
//! What a user or a program can observe is normalised and must be the same.
//!
//! - A [`Scenario`] is a name and a probe: a function of the runtime that drives containers
//!   through `ctr` and returns what it saw as text (the container's output, exit codes, events,
//!   facts read on the host).
//! - Probes remove what changes from run to run whatever the runtime: container ids, the
//!   namespace and work directory, pids, mount ids, anonymous device numbers, peer group
//!   numbers, snapshot and fifo paths, timestamps ([`scrub`], [`mountinfo`], [`event_line`]).
//! - [`check`] runs a group of scenarios, both runtimes side by side, and diffs the two texts
//!   line by line with [`assert_same`]. A mismatch is retried twice before it counts (the
//!   machine is shared, and runc's shim has been seen losing the tail of stdout under load).
//! - [`KNOWN`] lists the differences that stay: deliberate ones (also in the README, under
//!   "Differences from runc that are deliberate"), whose scenario still runs and asserts our
//!   intended behaviour, and pending ones, whose fix is scheduled and which must not change in
//!   any other way meanwhile.
//!
//! `SHIM_RS_RUNTIME=io.containerd.runc.v2 cargo test --test e2e_parity` compares runc with
//! itself: then every scenario must be equal and no exception applies (a check of the
//! normalisers). `SHIM_RS_PARITY_SHOW=1` prints every observation.

mod common;

use std::{
    collections::HashMap,
    fs,
    io::{BufRead, BufReader, Read, Write},
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{mpsc, OnceLock},
    thread,
    time::{Duration, Instant},
};

use common::*;
use serde_json::{json, Value};

const RUNC: &str = "io.containerd.runc.v2";
const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// =============================================================== comparison ===

type Probe = Box<dyn Fn(&str) -> String + Send + Sync>;

/// One observable situation, probed under each runtime.
struct Scenario {
    name: String,
    probe: Probe,
}

fn scenario(
    name: impl Into<String>,
    probe: impl Fn(&str) -> String + Send + Sync + 'static,
) -> Scenario {
    Scenario {
        name: name.into(),
        probe: Box::new(probe),
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    /// We differ on purpose (documented in the README); the check asserts what we do instead.
    Deliberate,
    /// To be fixed elsewhere; the check asserts today's behaviour, and equality is welcome.
    Pending,
}

/// A difference from runc that is known and accounted for.
struct Known {
    scenario: &'static str,
    kind: Kind,
    why: &'static str,
    /// Given (runc, ours), Ok when ours differs exactly in the known way.
    check: fn(&str, &str) -> Result<(), String>,
}

/// Runs every scenario of a group under runc and ours; fails listing each one that differs.
fn check(group: &str, scenarios: Vec<Scenario>) {
    let _serial = shared();
    env();
    let ours = runtime();
    let started = Instant::now();
    let failures: Vec<String> = scenarios
        .iter()
        .filter_map(|s| compare(s, &ours).err())
        .collect();
    eprintln!(
        "parity {group}: {} scenarios, {} differ, {:.1?}",
        scenarios.len(),
        failures.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} {group} scenarios differ between {RUNC} and {ours}:\n\n{}",
        failures.len(),
        scenarios.len(),
        failures.join("\n")
    );
}

fn compare(s: &Scenario, ours: &str) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 1..=3 {
        let (runc_obs, our_obs) = thread::scope(|sc| {
            let a = sc.spawn(|| (s.probe)(RUNC));
            let b = sc.spawn(|| (s.probe)(ours));
            (joined(a.join()), joined(b.join()))
        });
        if std::env::var_os("SHIM_RS_PARITY_SHOW").is_some() {
            eprintln!(
                "== {} ({RUNC})\n{runc_obs}\n== {} ({ours})\n{our_obs}",
                s.name, s.name
            );
        }
        match assert_same(&s.name, ours, &runc_obs, &our_obs) {
            Ok(()) => {
                if attempt > 1 {
                    eprintln!(
                        "parity: {} agreed only on attempt {attempt}:\n{last}",
                        s.name
                    );
                }
                return Ok(());
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn joined(r: thread::Result<String>) -> String {
    r.unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("probe panicked: {msg}")
    })
}

/// The one comparison: the normalised observations of runc and ours must be equal, unless the
/// scenario is in [`KNOWN`] (and we test our shim), in which case its check decides.
fn assert_same(name: &str, ours: &str, runc_obs: &str, our_obs: &str) -> Result<(), String> {
    let known = KNOWN
        .iter()
        .find(|k| k.scenario == name)
        .filter(|_| ours == RS_RUNTIME);
    let equal = runc_obs == our_obs;
    match known {
        None if equal => Ok(()),
        None => Err(format!(
            "== {name}: differs from runc\n{}",
            diff(runc_obs, our_obs)
        )),
        Some(k) if equal && k.kind == Kind::Pending => {
            eprintln!("parity: the pending difference of {name} is gone: remove it from KNOWN");
            Ok(())
        }
        Some(k) if equal => Err(format!(
            "== {name}: listed as a deliberate difference ({}) but now the same as runc: \
             update KNOWN and the README\n{our_obs}",
            k.why
        )),
        Some(k) => (k.check)(runc_obs, our_obs).map_err(|e| {
            format!(
                "== {name}: not the known {:?} difference ({}): {e}\n{}",
                k.kind,
                k.why,
                diff(runc_obs, our_obs)
            )
        }),
    }
}

/// A line diff (longest common subsequence) with two lines of context: `-` runc, `+` ours.
fn diff(a: &str, b: &str) -> String {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if j == m || (i < n && lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    let near = |k: usize| {
        ops[k.saturating_sub(2)..(k + 3).min(ops.len())]
            .iter()
            .any(|(c, _)| *c != ' ')
    };
    let mut out = format!("--- {RUNC}\n+++ ours\n");
    let mut skipped = false;
    for (k, (c, line)) in ops.iter().enumerate() {
        if near(k) {
            out.push_str(&format!("{c} {line}\n"));
            skipped = false;
        } else if !skipped {
            out.push_str("  ...\n");
            skipped = true;
        }
    }
    out
}

// ============================================================ normalisation ===

/// Replaces what names this run (container ids, the namespace, the work directory) and what
/// changes between runs (snapshot, fifo and pipe numbers) with placeholders.
fn scrub(text: &str, ids: &[&str]) -> String {
    let e = env();
    let mut t = text.to_owned();
    for id in ids.iter().filter(|i| !i.is_empty()) {
        t = t.replace(id, "<ID>");
    }
    t = t.replace(&*e.workdir.to_string_lossy(), "<WORKDIR>");
    t = t.replace(&e.namespace, "<NS>");
    for prefix in ["snapshots/", "/run/containerd/fifo/", "pipe:[", "socket:["] {
        t = number_after(&t, prefix, "N");
    }
    t
}

/// Replaces the digits right after each occurrence of `prefix` with `with`.
fn number_after(text: &str, prefix: &str, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        out.push_str(&rest[..i + prefix.len()]);
        rest = &rest[i + prefix.len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            out.push_str(with);
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    out
}

/// Host peer groups by number, named after the first host mount point in them.
fn host_peer_groups() -> HashMap<String, String> {
    let mut groups = HashMap::new();
    for line in fs::read_to_string("/proc/self/mountinfo").unwrap().lines() {
        let f: Vec<&str> = line.split(' ').collect();
        for opt in f.iter().skip(6).take_while(|o| **o != "-") {
            if let Some(n) = opt.strip_prefix("shared:") {
                groups
                    .entry(n.to_owned())
                    .or_insert_with(|| f[4].to_owned());
            }
        }
    }
    groups
}

/// /proc/PID/mountinfo with mount ids, anonymous device numbers and container-only peer
/// groups renumbered in order of appearance (`m1`, `d1`, `g1`), a parent outside the
/// container shown as `^`, and a peer group the host also has named `host<mount point>`.
fn mountinfo(text: &str) -> String {
    let host = host_peer_groups();
    let mut mounts: HashMap<String, String> = HashMap::new();
    let mut devs: HashMap<String, String> = HashMap::new();
    let mut groups: HashMap<String, String> = HashMap::new();
    for line in text.lines() {
        if let Some(id) = line.split(' ').next() {
            let n = mounts.len() + 1;
            mounts.entry(id.to_owned()).or_insert(format!("m{n}"));
        }
    }
    let mut out = String::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 10 {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let dev = if f[2].starts_with("0:") {
            let n = devs.len() + 1;
            devs.entry(f[2].to_owned())
                .or_insert(format!("0:d{n}"))
                .clone()
        } else {
            f[2].to_owned()
        };
        let mut fields = vec![
            mounts[f[0]].clone(),
            mounts.get(f[1]).cloned().unwrap_or("^".into()),
            dev,
            f[3].to_owned(),
            f[4].to_owned(),
            f[5].to_owned(),
        ];
        let mut k = 6;
        while k < f.len() && f[k] != "-" {
            let (tag, num) = f[k].split_once(':').unwrap_or((f[k], ""));
            fields.push(match host.get(num) {
                _ if num.is_empty() => f[k].to_owned(),
                Some(mp) => format!("{tag}:host{mp}"),
                None => {
                    let n = groups.len() + 1;
                    let g = groups.entry(num.to_owned()).or_insert(format!("g{n}"));
                    format!("{tag}:{g}")
                }
            });
            k += 1;
        }
        fields.extend(f[k..].iter().map(|s| s.to_string()));
        out.push_str(&fields.join(" "));
        out.push('\n');
    }
    out
}

/// The optional (propagation) fields of the mount at `mount_point` in a normalised mountinfo.
fn propagation_of<'a>(mountinfo: &'a str, mount_point: &str) -> Option<Vec<&'a str>> {
    mountinfo.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.len() > 6 && f[4] == mount_point)
            .then(|| f[6..].iter().take_while(|o| **o != "-").copied().collect())
    })
}

/// A normalised mountinfo without its propagation fields.
fn without_propagation(text: &str) -> String {
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            match f.iter().position(|o| *o == "-") {
                Some(dash) if dash > 6 && f.len() > 6 => {
                    let mut g = f[..6].to_vec();
                    g.extend_from_slice(&f[dash..]);
                    g.join(" ")
                }
                _ => l.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ================================================================== running ===

/// What one `ctr` call gave.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn of(o: &Output) -> Out {
        Out {
            code: exit_code(&o.status),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Exit code, stdout (through `f`) and stderr as one text. ctr's own error message names
    /// the runtime and its internals, so only the fact that ctr failed is kept.
    fn show(&self, f: &dyn Fn(&str) -> String) -> String {
        let stderr = if self.stderr.starts_with("ctr: ") {
            "ctr: <error>\n".to_owned()
        } else {
            self.stderr.clone()
        };
        format!(
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code,
            terminated(&f(&self.stdout)),
            terminated(&stderr)
        )
    }
}

fn terminated(s: &str) -> String {
    if s.is_empty() || s.ends_with('\n') {
        s.to_owned()
    } else {
        format!("{s}\n")
    }
}

fn same(s: &str) -> String {
    s.to_owned()
}

/// `ctr run --rm --runtime RT FLAGS IMAGE ID sh -c SCRIPT` (`rootfs`: `--rootfs DIR` instead of
/// the image), shown with `f` applied to stdout, ids scrubbed.
fn run_sh(
    rt: &str,
    flags: &[String],
    rootfs: Option<&Path>,
    script: &str,
    f: &dyn Fn(&str) -> String,
) -> String {
    let id = unique_id("parity");
    let mut a: Vec<String> = vec!["run".into(), "--rm".into(), "--runtime".into(), rt.into()];
    a.extend(flags.iter().cloned());
    match rootfs {
        Some(dir) => {
            a.push("--rootfs".into());
            a.push(dir.to_string_lossy().into_owned());
        }
        None => a.push(IMAGE.into()),
    }
    a.push(id.clone());
    // Under --rootfs ctr sets no PATH; runc 1.1 then finds no bare program name.
    a.extend(["/bin/sh".into(), "-c".into(), script.into()]);
    let out = Out::of(&ctr(&a));
    scrub(&out.show(f), &[&id])
}

/// A scenario running `script` in `ctr run` with `flags`.
fn run_scenario(
    name: &str,
    flags: &[&str],
    script: &'static str,
    f: fn(&str) -> String,
) -> Scenario {
    let flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    scenario(name, move |rt| run_sh(rt, &flags, None, script, &f))
}

/// `ctr run --config` of ctr's default spec for the busybox rootfs directory, edited by
/// `edit`, running `sh -c script`.
fn run_spec(
    rt: &str,
    edit: &dyn Fn(&mut Value),
    script: &str,
    f: &dyn Fn(&str) -> String,
) -> String {
    let id = unique_id("parity");
    let mut spec = default_spec().clone();
    spec["root"] = json!({ "path": rootfs_dir() });
    spec["process"]["args"] = json!(["/bin/sh", "-c", script]);
    spec["process"]["env"] = json!([PATH]);
    spec["linux"]["cgroupsPath"] = json!(format!("/{}/{id}", namespace()));
    edit(&mut spec);
    let file = scratch().join(format!("{id}.json"));
    fs::write(&file, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let out = Out::of(&ctr(&[
        "run",
        "--rm",
        "--runtime",
        rt,
        "--config",
        file.to_str().unwrap(),
        &id,
    ]));
    let _ = fs::remove_file(&file);
    scrub(&out.show(f), &[&id])
}

fn spec_scenario(
    name: &str,
    edit: impl Fn(&mut Value) + Send + Sync + 'static,
    script: &'static str,
    f: fn(&str) -> String,
) -> Scenario {
    scenario(name, move |rt| run_spec(rt, &edit, script, &f))
}

/// `ctr task exec` of `sh -c script` with `exec_flags` in a sleeping container started with
/// `run_flags`; `stdin` is written to the exec's stdin and closed (None: /dev/null).
fn exec_sh(
    rt: &str,
    run_flags: &[&str],
    exec_flags: &[&str],
    stdin: Option<&'static [u8]>,
    script: &str,
    f: &dyn Fn(&str) -> String,
) -> String {
    let c = Detached::start("parity", rt, run_flags, &["sleep", "600"]);
    let mut a = vec!["task", "exec", "--exec-id", "probe"];
    a.extend_from_slice(exec_flags);
    a.extend_from_slice(&[&c.0, "sh", "-c", script]);
    let out = match stdin {
        None => ctr(&a),
        Some(data) => {
            let mut child = ctr_command(&a)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut pipe = child.stdin.take().unwrap();
            let writer = thread::spawn(move || {
                let _ = pipe.write_all(data);
            });
            let (out, timed_out) = wait_output(child, Duration::from_secs(30));
            writer.join().unwrap();
            if timed_out {
                return "exec timed out (stdin EOF not delivered?)".into();
            }
            out
        }
    };
    scrub(&Out::of(&out).show(f), &[&c.0])
}

fn exec_scenario(
    name: &str,
    run_flags: &'static [&'static str],
    exec_flags: &'static [&'static str],
    script: &'static str,
    f: fn(&str) -> String,
) -> Scenario {
    scenario(name, move |rt| {
        exec_sh(rt, run_flags, exec_flags, None, script, &f)
    })
}

/// Runs ctr with `args` in a pseudo-terminal of 33x111 (util-linux `script`); its output
/// without NULs and carriage returns, and its exit code.
fn in_pty(args: &[&str], ids: &[&str]) -> String {
    let e = env();
    let mut cmd = format!(
        "stty rows 33 cols 111; {} --address {} -n {}",
        e.ctr_bin.display(),
        e.address,
        e.namespace
    );
    for a in args {
        cmd.push_str(&format!(" '{}'", a.replace('\'', r"'\''")));
    }
    let (out, timed_out) = run_with_timeout(
        Command::new("script").args(["-qec", &cmd, "/dev/null"]),
        Duration::from_secs(60),
    );
    if timed_out {
        return "timed out".into();
    }
    let text = String::from_utf8_lossy(&out.stdout).replace(['\0', '\r'], "");
    scrub(&format!("exit {}\n{text}", exit_code(&out.status)), ids)
}

/// ctr's default spec (`ctr oci spec` of this containerd's ctr).
fn default_spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| serde_json::from_str(&ctr_ok(&["oci", "spec"])).expect("ctr oci spec"))
}

/// A directory for this suite's files, inside the harness' work directory.
fn scratch() -> PathBuf {
    let d = env().workdir.join("parity");
    fs::create_dir_all(&d).unwrap();
    d
}

/// Fills `root` with busybox-static, its applets, a passwd with a user without a home and a
/// group file.
fn make_rootfs(root: &Path) {
    for d in [
        "bin", "proc", "sys", "dev", "etc", "tmp", "run", "root", "mnt",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy /bin/busybox (busybox-static)");
    let out = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        if applet != "busybox" {
            let _ = symlink("busybox", root.join("bin").join(applet));
        }
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
         app:x:1000:1000:app:/home/app:/bin/sh\n\
         nohome:x:1001:1001:nohome::/bin/sh\n",
    )
    .unwrap();
    fs::write(
        root.join("etc/group"),
        "root:x:0:\ntty:x:5:\nnogroup:x:65534:\napp:x:1000:\nextra:x:2000:app\n",
    )
    .unwrap();
}

/// The busybox rootfs of the `--config` scenarios (shared by them; they do not write to it).
fn rootfs_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = scratch().join("rootfs");
        make_rootfs(&root);
        root
    })
}

/// A busybox rootfs below a shared mount, as every directory is on a host whose "/" is
/// shared (systemd's default). The harness unmounts it with the work directory.
fn shared_rootfs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let top = scratch().join("shared");
        fs::create_dir_all(&top).unwrap();
        for args in [
            vec!["--bind", top.to_str().unwrap(), top.to_str().unwrap()],
            vec!["--make-rshared", top.to_str().unwrap()],
        ] {
            let st = Command::new("mount").args(&args).status().unwrap();
            assert!(st.success(), "mount {args:?}");
        }
        let root = top.join("rootfs");
        make_rootfs(&root);
        root
    })
}

// ================================================================== probes ===

/// The environment exactly as the runtime passed it to the container's process. (Through a
/// pipe: a shell execs its last command, and a descriptor opened on /proc/PID/environ before
/// that exec reads nothing after it.)
const ENV: &str = "cat /proc/$$/environ | tr '\\0' '\\n'";

/// Ids, groups, capabilities, no_new_privs, seccomp, limits, oom_score_adj, umask, cwd.
const PROCESS: &str =
    "grep -E '^(Uid|Gid|Groups|Cap[A-Za-z]+|NoNewPrivs|Seccomp|Seccomp_filters):' \
     /proc/$$/status; cat /proc/$$/limits; echo oom_score_adj $(cat /proc/$$/oom_score_adj); \
     echo umask $(umask); echo cwd $(pwd)";

const MOUNTS: &str = "cat /proc/$$/mountinfo";

/// Every entry of /dev: name, type, mode, owner, device number, link target.
const DEV: &str = "cd /dev && for f in $(find . | sort); do \
     stat -c '%n %F %a %u:%g %t:%T %N' $f; done";

/// What opening device nodes for reading and for writing does: the default ones, a few the
/// default allowlist leaves out (never a watchdog: opening one arms it), and nodes made with
/// mknod (allowed by the default rules) that the allowlist must still refuse to open.
const DEV_ACCESS: &str = "cd /dev && for f in null zero full random urandom tty console ptmx \
     pts/ptmx pts/0 fuse loop-control kmsg net/tun; do \
     if [ -e $f ]; then r=-; w=-; (: < $f) 2>/dev/null && r=r; (: >> $f) 2>/dev/null && w=w; \
     echo \"$f $r$w\"; else echo \"$f missing\"; fi; done; \
     for n in 'mem c 1 1' 'kmsg c 1 11' 'null2 c 1 3' 'loop b 7 0' 'fuse c 10 229'; do \
     set -- $n; if mknod /tmp/$1 $2 $3 $4 2>/dev/null; then r=-; w=-; \
     (: < /tmp/$1) 2>/dev/null && r=r; (: >> /tmp/$1) 2>/dev/null && w=w; echo \"mknod $1 $r$w\"; \
     rm -f /tmp/$1; else echo \"mknod $1 refused\"; fi; done";

/// The cgroup filesystem as the container sees it.
const CGROUPFS: &str = "cat /proc/$$/cgroup; cd /sys/fs/cgroup && \
     for f in $(find . -maxdepth 1 | sort); do stat -c '%n %F %a %N' $f; done; \
     grep -E ' /sys/fs/cgroup' /proc/$$/mountinfo | cut -d' ' -f4-";

// ================================================================ scenarios ===

#[test]
fn environment() {
    check(
        "environment",
        vec![
            run_scenario("env/run", &[], ENV, same),
            run_scenario(
                "env/run --env HOME=/custom",
                &["--env", "HOME=/custom"],
                ENV,
                same,
            ),
            run_scenario(
                "env/run --env FOO=bar --env PATH=/bin",
                &["--env", "FOO=bar", "--env", "PATH=/bin"],
                ENV,
                same,
            ),
            spec_scenario(
                "env/spec user nobody",
                |s| set_user(s, 65534, 65534),
                ENV,
                same,
            ),
            spec_scenario(
                "env/spec user 1000 (home in passwd)",
                |s| set_user(s, 1000, 1000),
                ENV,
                same,
            ),
            spec_scenario(
                "env/spec user 1001 (empty home)",
                |s| set_user(s, 1001, 1001),
                ENV,
                same,
            ),
            spec_scenario(
                "env/spec user 4242 (not in passwd)",
                |s| set_user(s, 4242, 4242),
                ENV,
                same,
            ),
            spec_scenario(
                "env/spec user nobody with HOME set",
                |s| {
                    set_user(s, 65534, 65534);
                    s["process"]["env"] = json!([PATH, "HOME=/given"]);
                },
                ENV,
                same,
            ),
            spec_scenario(
                "env/spec user 1000 with an empty HOME",
                |s| {
                    set_user(s, 1000, 1000);
                    s["process"]["env"] = json!(["HOME=", PATH]);
                },
                ENV,
                same,
            ),
            spec_scenario(
                "env/spec without PATH, absolute program",
                |s| s["process"]["env"] = json!(["FOO=1"]),
                ENV,
                same,
            ),
            scenario("env/spec without PATH, bare program name", |rt| {
                run_spec(
                    rt,
                    &|s| {
                        s["process"]["env"] = json!(["FOO=1"]);
                        s["process"]["args"] = json!(["env"]);
                    },
                    "",
                    &same,
                )
            }),
            exec_scenario("env/exec", &[], &[], ENV, same),
            exec_scenario(
                "env/exec --user nobody",
                &[],
                &["--user", "nobody"],
                ENV,
                same,
            ),
            exec_scenario(
                "env/exec --user 1234 (not in passwd)",
                &[],
                &["--user", "1234"],
                ENV,
                same,
            ),
            exec_scenario(
                "env/exec --cwd /tmp",
                &[],
                &["--cwd", "/tmp"],
                "pwd; cat /proc/$$/environ | tr '\\0' '\\n'",
                same,
            ),
            exec_scenario(
                "env/exec in a container run --env HOME=/custom",
                &["--env", "HOME=/custom"],
                &[],
                ENV,
                same,
            ),
            scenario("env/run -t", |rt| {
                let id = unique_id("parity");
                in_pty(
                    &[
                        "run",
                        "-t",
                        "--rm",
                        "--runtime",
                        rt,
                        IMAGE,
                        &id,
                        "sh",
                        "-c",
                        ENV,
                    ],
                    &[&id],
                )
            }),
        ],
    );
}

fn set_user(spec: &mut Value, uid: u32, gid: u32) {
    spec["process"]["user"] = json!({ "uid": uid, "gid": gid });
}

#[test]
fn process_status_limits_and_oom_score() {
    check(
        "process",
        vec![
            run_scenario("process/run", &[], PROCESS, same),
            run_scenario("process/run --privileged", &["--privileged"], PROCESS, same),
            run_scenario("process/run --seccomp", &["--seccomp"], PROCESS, same),
            run_scenario(
                "process/run --cap-add CAP_SYS_ADMIN --cap-drop CAP_CHOWN",
                &["--cap-add", "CAP_SYS_ADMIN", "--cap-drop", "CAP_CHOWN"],
                PROCESS,
                same,
            ),
            run_scenario(
                "process/run --allow-new-privs",
                &["--allow-new-privs"],
                PROCESS,
                same,
            ),
            spec_scenario(
                "process/spec user nobody",
                |s| set_user(s, 65534, 65534),
                PROCESS,
                same,
            ),
            spec_scenario(
                "process/spec user 1000 with additionalGids, umask",
                |s| {
                    s["process"]["user"] = json!({ "uid": 1000, "gid": 1000, "additionalGids": [2000, 5], "umask": 63 })
                },
                PROCESS,
                same,
            ),
            spec_scenario(
                "process/spec user 1000 with ambient capabilities",
                |s| {
                    set_user(s, 1000, 1000);
                    let caps = json!(["CAP_NET_BIND_SERVICE", "CAP_CHOWN"]);
                    for set in [
                        "bounding",
                        "effective",
                        "permitted",
                        "inheritable",
                        "ambient",
                    ] {
                        s["process"]["capabilities"][set] = caps.clone();
                    }
                },
                PROCESS,
                same,
            ),
            spec_scenario(
                "process/spec rlimits and oomScoreAdj",
                |s| {
                    s["process"]["rlimits"] = json!([
                        { "type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024 },
                        { "type": "RLIMIT_NPROC", "soft": 300, "hard": 400 },
                        { "type": "RLIMIT_CORE", "soft": 0, "hard": 0 }
                    ]);
                    s["process"]["oomScoreAdj"] = json!(500);
                },
                PROCESS,
                same,
            ),
            spec_scenario(
                "process/spec cwd /tmp",
                |s| s["process"]["cwd"] = json!("/tmp"),
                PROCESS,
                same,
            ),
            exec_scenario("process/exec", &[], &[], PROCESS, same),
            exec_scenario(
                "process/exec --user nobody",
                &[],
                &["--user", "nobody"],
                PROCESS,
                same,
            ),
            exec_scenario(
                "process/exec in a --privileged container",
                &["--privileged"],
                &[],
                PROCESS,
                same,
            ),
            exec_scenario(
                "process/exec in a --seccomp container",
                &["--seccomp"],
                &[],
                PROCESS,
                same,
            ),
            // Pids in the container's pid namespace.
            run_scenario(
                "process/pids in a run",
                &[],
                "echo $$; sh -c 'echo $$'",
                same,
            ),
            exec_scenario("process/pids in an exec", &[], &[], "sh -c 'echo $$'", same),
        ],
    );
}

#[test]
fn mount_table() {
    let mut list = vec![
        run_scenario("mountinfo/run", &[], MOUNTS, mountinfo),
        run_scenario(
            "mountinfo/run --privileged",
            &["--privileged"],
            MOUNTS,
            mountinfo,
        ),
        run_scenario(
            "mountinfo/run --no-pivot",
            &["--no-pivot"],
            MOUNTS,
            mountinfo,
        ),
        run_scenario(
            "mountinfo/run --read-only",
            &["--read-only"],
            "cat /proc/$$/mountinfo; touch /x 2>&1; touch /dev/x /run/x && echo tmpfs-writable",
            mountinfo,
        ),
        run_scenario(
            "mountinfo/run --net-host",
            &["--net-host"],
            MOUNTS,
            mountinfo,
        ),
        run_scenario(
            "mountinfo/run tmpfs mounts (with and without mode, existing and new directory)",
            &[
                "--mount",
                "type=tmpfs,src=tmpfs,dst=/tmp",
                "--mount",
                "type=tmpfs,src=tmpfs,dst=/root,options=size=1m:nosuid",
                "--mount",
                "type=tmpfs,src=tmpfs,dst=/new",
            ],
            "grep -E ' /(tmp|root|new) ' /proc/$$/mountinfo; stat -c '%n %a' /tmp /root /new",
            mountinfo,
        ),
        run_scenario(
            "mountinfo/run tmpfs mode= on an existing directory",
            &["--mount", "type=tmpfs,src=tmpfs,dst=/tmp,options=mode=0755"],
            "grep -E ' /tmp ' /proc/$$/mountinfo; stat -c '%n %a' /tmp",
            mountinfo,
        ),
    ];
    for p in [
        "shared",
        "slave",
        "private",
        "unbindable",
        "rshared",
        "rslave",
        "rprivate",
        "runbindable",
    ] {
        list.push(run_scenario(
            &format!("mountinfo/run --rootfs-propagation {p}"),
            &["--rootfs-propagation", p],
            MOUNTS,
            mountinfo,
        ));
        list.push(scenario(
            format!("mountinfo/rootfs below a shared host mount, --rootfs-propagation {p}"),
            move |rt| {
                let flags = vec!["--rootfs-propagation".to_owned(), p.to_owned()];
                run_sh(rt, &flags, Some(shared_rootfs()), MOUNTS, &mountinfo)
            },
        ));
    }
    list.push(scenario(
        "mountinfo/rootfs below a shared host mount, default propagation",
        |rt| run_sh(rt, &[], Some(shared_rootfs()), MOUNTS, &mountinfo),
    ));
    // Binds: a directory read-only and read-write, a file, and a shared host directory with
    // the propagation asked for on the bind.
    for (what, opts) in [
        ("rbind:ro", "rbind:ro"),
        ("rbind:rw", "rbind:rw"),
        ("bind:ro:nosuid:nodev:noexec", "bind:ro:nosuid:nodev:noexec"),
        ("rbind:rslave", "rbind:rslave"),
        ("rbind:rshared", "rbind:rshared"),
        ("rbind:rprivate", "rbind:rprivate"),
    ] {
        list.push(scenario(format!("mountinfo/bind {what}"), move |rt| {
            let src = shared_rootfs().parent().unwrap().join("bind-src");
            fs::create_dir_all(&src).unwrap();
            fs::write(src.join("file"), "bound\n").unwrap();
            let flags = vec![
                "--mount".to_owned(),
                format!("type=bind,src={},dst=/mnt,options={opts}", src.display()),
                "--mount".to_owned(),
                format!(
                    "type=bind,src={},dst=/etc/bound,options=bind:ro",
                    src.join("file").display()
                ),
            ];
            run_sh(
                rt,
                &flags,
                None,
                "grep -E ' /(mnt|etc/bound) ' /proc/$$/mountinfo; cat /etc/bound; \
                 touch /mnt/x 2>&1 && echo writable",
                &mountinfo,
            )
        }));
    }
    list.push(scenario("mountinfo/run -t (console)", |rt| {
        let id = unique_id("parity");
        mountinfo(&in_pty(
            &[
                "run",
                "-t",
                "--rm",
                "--runtime",
                rt,
                IMAGE,
                &id,
                "sh",
                "-c",
                MOUNTS,
            ],
            &[&id],
        ))
    }));
    check("mount table", list);
}

#[test]
fn devices() {
    check(
        "devices",
        vec![
            run_scenario("dev/run", &[], DEV, same),
            run_scenario("dev/run --privileged", &["--privileged"], DEV, same),
            run_scenario(
                "dev/run --device /dev/loop-control",
                &["--device", "/dev/loop-control"],
                DEV,
                same,
            ),
            run_scenario("dev access/run", &[], DEV_ACCESS, same),
            run_scenario(
                "dev access/run --privileged",
                &["--privileged"],
                DEV_ACCESS,
                same,
            ),
            run_scenario(
                "dev access/run --device /dev/loop-control",
                &["--device", "/dev/loop-control"],
                DEV_ACCESS,
                same,
            ),
            scenario("dev access/run -t", |rt| {
                let id = unique_id("parity");
                in_pty(
                    &[
                        "run",
                        "-t",
                        "--rm",
                        "--runtime",
                        rt,
                        IMAGE,
                        &id,
                        "sh",
                        "-c",
                        DEV_ACCESS,
                    ],
                    &[&id],
                )
            }),
            scenario("dev/run -t", |rt| {
                let id = unique_id("parity");
                in_pty(
                    &[
                        "run",
                        "-t",
                        "--rm",
                        "--runtime",
                        rt,
                        IMAGE,
                        &id,
                        "sh",
                        "-c",
                        DEV,
                    ],
                    &[&id],
                )
            }),
            run_scenario(
                "dev/cgroup devices.list",
                &[
                    "--mount",
                    "type=cgroup,src=cgroup,dst=/sys/fs/cgroup,options=ro:nosuid:nodev:noexec",
                ],
                "cat /sys/fs/cgroup/devices/devices.list",
                same,
            ),
            run_scenario(
                "dev/cgroup devices.list --privileged",
                &[
                    "--privileged",
                    "--mount",
                    "type=cgroup,src=cgroup,dst=/sys/fs/cgroup,options=ro:nosuid:nodev:noexec",
                ],
                "cat /sys/fs/cgroup/devices/devices.list",
                same,
            ),
        ],
    );
}

#[test]
fn cgroup_filesystem() {
    let cg = |opts: &str| format!("type=cgroup,src=cgroup,dst=/sys/fs/cgroup{opts}");
    let with = |name: &str, flags: Vec<String>| {
        scenario(name, move |rt| run_sh(rt, &flags, None, CGROUPFS, &same))
    };
    check(
        "cgroup filesystem",
        vec![
            run_scenario("cgroupfs/run (no cgroup mount)", &[], CGROUPFS, same),
            with(
                "cgroupfs/run, cgroup mount ro (as CRI)",
                vec!["--mount".into(), cg(",options=ro:nosuid:nodev:noexec")],
            ),
            with(
                "cgroupfs/run, cgroup mount without options",
                vec!["--mount".into(), cg("")],
            ),
            with(
                "cgroupfs/run --privileged, cgroup mount rw",
                vec![
                    "--privileged".into(),
                    "--mount".into(),
                    cg(",options=rw:nosuid:nodev:noexec"),
                ],
            ),
        ],
    );
}

#[test]
fn cgroup_placement() {
    check(
        "cgroup placement",
        vec![
            scenario("cgroup placement/absolute --cgroup /TAG/b", |rt| {
                placement(rt, "/{tag}/b")
            }),
            scenario("cgroup placement/relative --cgroup TAG/b", |rt| {
                placement(rt, "{tag}/b")
            }),
            scenario("cgroup placement/empty --cgroup \"\"", |rt| {
                placement(rt, "")
            }),
        ],
    );
}

/// A container with `cgroupsPath` from `pattern` ({tag}: a unique name), observed from the
/// host: /proc/PID/cgroup of its init, containerd's own cgroup shown as `<containerd>`.
fn placement(rt: &str, pattern: &str) -> String {
    let tag = unique_id("cgtag");
    let path = pattern.replace("{tag}", &tag);
    let c = Detached::start("parity", rt, &["--cgroup", &path], &["sleep", "600"]);
    let id = c.0.clone();
    let pid = task_pid(&id);
    let own = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let containerd = cgroup_paths(env().containerd_pid);
    let mut out = String::new();
    let mut dirs = Vec::new();
    for line in own.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrl, p) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        let shown = match containerd.get(ctrl) {
            Some(base) if base != "/" && p.starts_with(&format!("{base}/")) => {
                format!("<containerd>{}", &p[base.len()..])
            }
            _ => p.to_owned(),
        };
        out.push_str(&format!("{ctrl}:{shown}\n"));
        if let Some(mp) = hierarchy_mountpoint(ctrl) {
            dirs.push(mp.join(p.trim_start_matches('/')));
        }
    }
    drop(c);
    // Remove what was made for this container: runc leaves the parents of its leaf.
    for d in dirs {
        let mut d = d.as_path();
        while d.to_string_lossy().contains(&tag) || d.to_string_lossy().contains(&id) {
            let _ = fs::remove_dir(d);
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
    }
    scrub(&out, &[&tag, &id])
}

/// controller list -> cgroup path, from /proc/PID/cgroup.
fn cgroup_paths(pid: i32) -> HashMap<String, String> {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let _ = f.next();
            Some((f.next()?.to_owned(), f.next()?.to_owned()))
        })
        .collect()
}

/// Where the hierarchy of a /proc/PID/cgroup controller list is mounted on the host.
fn hierarchy_mountpoint(ctrl: &str) -> Option<PathBuf> {
    let mi = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mi.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mp = pre.split(' ').nth(4)?;
        let mut p = post.split(' ');
        let fstype = p.next()?;
        let opts = p.nth(1)?;
        let hit = match fstype {
            "cgroup2" => ctrl.is_empty(),
            "cgroup" => {
                let want: Vec<&str> = ctrl.split(',').collect();
                want.iter().all(|w| opts.split(',').any(|o| o == *w))
            }
            _ => false,
        };
        hit.then(|| PathBuf::from(mp))
    })
}

#[test]
fn exit_codes_and_signals() {
    let exits = [0, 1, 42].map(|code| {
        scenario(format!("exit/sh -c 'exit {code}'"), move |rt| {
            run_sh(rt, &[], None, &format!("exit {code}"), &same)
        })
    });
    let mut list: Vec<Scenario> = exits.into_iter().collect();
    list.extend([
        scenario("signals/SIGKILL from ctr task kill", |rt| {
            signals(rt, "echo ready; exec sleep 600", &["SIGKILL"])
        }),
        scenario(
            "signals/SIGTERM to an init without a handler, then SIGKILL",
            |rt| signals(rt, "echo ready; exec sleep 600", &["SIGTERM", "SIGKILL"]),
        ),
        scenario("signals/SIGTERM to an init with a handler", |rt| {
            signals(
                rt,
                "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done",
                &["SIGTERM"],
            )
        }),
        scenario(
            "signals/SIGUSR1 and SIGHUP with handlers, then SIGINT without",
            |rt| {
                signals(
                    rt,
                    "trap 'echo got USR1' USR1; trap 'echo got HUP' HUP; echo ready; \
                 while :; do sleep 0.1; done",
                    &["SIGUSR1", "SIGHUP", "SIGINT", "SIGKILL"],
                )
            },
        ),
        scenario(
            "signals/SIGKILL of a process that ignores SIGTERM, via kill --all",
            |rt| {
                signals(
                    rt,
                    "trap '' TERM; echo ready; while :; do sleep 0.1; done",
                    &["SIGTERM", "all:SIGKILL"],
                )
            },
        ),
        scenario("exit/exec exit codes and a signalled exec", exec_exits),
    ]);
    check("exit codes and signals", list);
}

/// `ctr run --rm` of `script`; once it printed "ready", each signal of `sigs` is sent with
/// `ctr task kill` (`all:SIG` with --all), and the task status noted after each.
fn signals(rt: &str, script: &str, sigs: &[&str]) -> String {
    let id = unique_id("parity");
    let child = ctr_command(&[
        "run",
        "--rm",
        "--runtime",
        rt,
        IMAGE,
        &id,
        "sh",
        "-c",
        script,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut bg = Background(Some(child));
    let stdout = bg.0.as_mut().unwrap().stdout.take().unwrap();
    let mut stderr = bg.0.as_mut().unwrap().stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            let _ = tx.send(line);
        }
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut out = String::new();
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(l) => out.push_str(&format!("{l}\n")),
        Err(_) => return "never printed ready".into(),
    }
    for sig in sigs {
        let (all, sig) = match sig.strip_prefix("all:") {
            Some(s) => (true, s),
            None => (false, *sig),
        };
        let mut a = vec!["task", "kill", "-s", sig];
        if all {
            a.push("--all");
        }
        a.push(&id);
        let k = ctr(&a);
        thread::sleep(Duration::from_millis(500));
        while let Ok(l) = rx.try_recv() {
            out.push_str(&format!("{l}\n"));
        }
        let status = task_status(&id).unwrap_or_else(|| "gone".into());
        out.push_str(&format!(
            "kill {}{sig}: ctr exit {}, task {status}\n",
            if all { "--all " } else { "" },
            exit_code(&k.status)
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Ok(Some(st)) = bg.0.as_mut().unwrap().try_wait() {
            break exit_code(&st).to_string();
        }
        if Instant::now() > deadline {
            remove_container(&id);
            break "none: still running 30 s after the signals".to_owned();
        }
        thread::sleep(Duration::from_millis(50));
    };
    let _ = reader.join();
    for l in rx.try_iter() {
        out.push_str(&format!("{l}\n"));
    }
    let stderr = err_reader.join().unwrap_or_default();
    scrub(
        &format!("{out}ctr run exit {code}\n--- stderr\n{stderr}"),
        &[&id],
    )
}

/// Exec exit codes: 0, 3, a signal sent to the exec, and the exit status ctr reports.
fn exec_exits(rt: &str) -> String {
    let c = Detached::start("parity", rt, &[], &["sleep", "600"]);
    let mut out = String::new();
    for (n, script) in [
        "exit 0",
        "exit 3",
        "kill -TERM $$; sleep 5",
        "kill -KILL $$",
    ]
    .iter()
    .enumerate()
    {
        let eid = format!("x{n}");
        let o = ctr(&["task", "exec", "--exec-id", &eid, &c.0, "sh", "-c", script]);
        out.push_str(&format!("{script}: exit {}\n", exit_code(&o.status)));
    }
    // A long-running exec, killed through its exec id.
    let child = ctr_command(&["task", "exec", "--exec-id", "long", &c.0, "sleep", "600"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut bg = Background(Some(child));
    let listed = wait_until(Duration::from_secs(20), || {
        ctr_list(&["task", "ps", &c.0]).lines().count() >= 3
    });
    let k = ctr(&["task", "kill", "-s", "SIGTERM", "--exec-id", "long", &c.0]);
    let st = bg.stop(0, Duration::from_secs(20)).map(|s| exit_code(&s));
    out.push_str(&format!(
        "exec listed {listed}; kill --exec-id: ctr exit {}, exec exit {st:?}\n",
        exit_code(&k.status)
    ));
    out
}

#[test]
fn stdio_and_terminals() {
    check(
        "stdio and terminals",
        vec![
            run_scenario(
                "stdio/stdout and stderr separated",
                &[],
                "echo out1; echo err1 >&2; echo out2; echo err2 >&2",
                same,
            ),
            run_scenario(
                "stdio/the process's stdio descriptors",
                &[],
                "for i in 0 1 2; do echo \"$i $(readlink /proc/$$/fd/$i) \
                 $(stat -L -c '%F %u:%g %a' /proc/$$/fd/$i)\"; done; ls /proc/$$/fd",
                same,
            ),
            exec_scenario(
                "stdio/an exec's stdio descriptors, as nobody, reopened",
                &[],
                &["--user", "nobody"],
                "for i in 0 1 2; do echo \"$i $(readlink /proc/$$/fd/$i) \
                 $(stat -L -c '%F %u:%g %a' /proc/$$/fd/$i)\"; done; \
                 echo via-dev-stdout > /dev/stdout; echo via-dev-stderr > /dev/stderr",
                same,
            ),
            scenario("stdio/a large output", |rt| {
                let id = unique_id("parity");
                let o = ctr(&[
                    "run",
                    "--rm",
                    "--runtime",
                    rt,
                    IMAGE,
                    &id,
                    "sh",
                    "-c",
                    "yes 0123456789abcdef | head -c 2097152; echo done >&2",
                ]);
                let hash = o.stdout.iter().fold(0xcbf29ce484222325u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
                });
                format!(
                    "exit {}, stdout {} bytes, fnv {hash:x}, stderr {}",
                    exit_code(&o.status),
                    o.stdout.len(),
                    String::from_utf8_lossy(&o.stderr)
                )
            }),
            scenario("stdio/stdin and its EOF through ctr task exec", |rt| {
                exec_sh(
                    rt,
                    &[],
                    &[],
                    Some(b"line1\nline2\n"),
                    "cat; echo EOF-seen; wc -c < /dev/null",
                    &same,
                )
            }),
            scenario("terminal/run -t", |rt| {
                let id = unique_id("parity");
                in_pty(
                    &[
                        "run",
                        "-t",
                        "--rm",
                        "--runtime",
                        rt,
                        IMAGE,
                        &id,
                        "sh",
                        "-c",
                        TTY,
                    ],
                    &[&id],
                )
            }),
            scenario("terminal/exec -t", |rt| {
                let c = Detached::start("parity", rt, &[], &["sleep", "600"]);
                in_pty(
                    &[
                        "task",
                        "exec",
                        "-t",
                        "--exec-id",
                        "tty",
                        &c.0,
                        "sh",
                        "-c",
                        TTY,
                    ],
                    &[&c.0],
                )
            }),
            scenario("terminal/exec -t --user nobody", |rt| {
                let c = Detached::start("parity", rt, &[], &["sleep", "600"]);
                in_pty(
                    &[
                        "task",
                        "exec",
                        "-t",
                        "--user",
                        "nobody",
                        "--exec-id",
                        "tty",
                        &c.0,
                        "sh",
                        "-c",
                        TTY,
                    ],
                    &[&c.0],
                )
            }),
        ],
    );
}

/// The terminal: its name and size, the session and controlling terminal (the shell leads its
/// session and process group, which is the terminal's foreground), the descriptors,
/// /dev/console and the pty's owner and mode.
const TTY: &str =
    "sleep 0.3; tty; stty size; read -r _ _ _ _ pgrp sid tty_nr tpgid _ < /proc/$$/stat; \
     echo \"session leader $([ $sid = $$ ] && echo yes), own group $([ $pgrp = $$ ] && echo yes), \
     foreground $([ $tpgid = $$ ] && echo yes), tty_nr $tty_nr\"; \
     for i in 0 1 2; do echo \"$i $(readlink /proc/$$/fd/$i)\"; done; \
     stat -c '%n %F %a %u:%g %t:%T' /dev/console $(tty) 2>&1; exit 3";

#[test]
fn events() {
    check(
        "events",
        vec![
            scenario(
                "events/run, exec, pause, resume, kill, delete",
                events_of_a_lifecycle,
            ),
            scenario("events/run --rm of a process exiting 3", |rt| {
                tap_events(rt, |id| {
                    let _ = ctr(&[
                        "run",
                        "--rm",
                        "--runtime",
                        rt,
                        IMAGE,
                        id,
                        "sh",
                        "-c",
                        "exit 3",
                    ]);
                })
            }),
        ],
    );
}

fn events_of_a_lifecycle(rt: &str) -> String {
    tap_events(rt, |id| {
        ctr_ok(&["run", "-d", "--runtime", rt, IMAGE, id, "sleep", "600"]);
        let _ = ctr(&["task", "exec", "--exec-id", "e1", id, "sh", "-c", "exit 3"]);
        ctr_ok(&["task", "pause", id]);
        ctr_ok(&["task", "resume", id]);
        ctr_ok(&["task", "kill", "-s", "SIGKILL", id]);
        wait_until(Duration::from_secs(20), || {
            task_status(id).as_deref() == Some("STOPPED")
        });
        let _ = ctr(&["task", "delete", id]);
        ctr_ok(&["container", "rm", id]);
    })
}

/// `ctr events` while `action` runs on a new container id: this container's events until
/// /containers/delete, one normalised line each.
fn tap_events(rt: &str, action: impl FnOnce(&str)) -> String {
    let id = unique_id("parity");
    let child = ctr_command(&["events"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut sub = Background(Some(child));
    let stdout = sub.0.as_mut().unwrap().stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Live once a label we set on the image comes through.
    let probe = unique_id("evprobe");
    let live = wait_until(Duration::from_secs(15), || {
        ctr_ok(&["images", "label", IMAGE, &format!("shimrs.parity={probe}")]);
        let until = Instant::now() + Duration::from_millis(300);
        while let Ok(l) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            if l.contains(&probe) {
                return true;
            }
        }
        false
    });
    if !live {
        return "ctr events never showed the probe event".into();
    }
    action(&id);
    let quoted = format!("\"{id}\"");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) if l.contains(&quoted) => {
                // "DATE TIME +0000 UTC NAMESPACE TOPIC JSON"
                let f: Vec<&str> = l.splitn(7, ' ').collect();
                if f.len() == 7 && f[4] == namespace() {
                    seen.push(event_line(f[5], f[6], &id, rt));
                    if f[5] == "/containers/delete" {
                        break;
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            _ => {}
        }
    }
    sub.stop(libc::SIGKILL, Duration::from_secs(5));
    let _ = reader.join();
    seen.join("\n")
}

/// One event: topic and payload, with pids and times replaced and the runtime's name (which
/// only /containers/create carries, with the options ctr sends for it) removed.
fn event_line(topic: &str, json: &str, id: &str, rt: &str) -> String {
    let mut v: Value = serde_json::from_str(json).unwrap_or(Value::String(json.into()));
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    match k.as_str() {
                        "pid" => *x = json!("<PID>"),
                        "exited_at" => *x = json!("<TIME>"),
                        _ => walk(x),
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    if let Some(m) = v.as_object_mut() {
        if m.get("runtime").and_then(|r| r["name"].as_str()) == Some(rt) {
            m.remove("runtime");
        }
        // The parent snapshot of /snapshot/prepare is the image's, the same for both.
    }
    scrub(&format!("{topic} {v}"), &[id])
}

// =================================================================== known ===

/// The differences from runc 1.1.5 that stay, each with its reason. The deliberate ones are in
/// the README ("Differences from runc that are deliberate").
const KNOWN: &[Known] = &[
    // -- cgroup filesystem
    Known {
        scenario: "cgroupfs/run, cgroup mount ro (as CRI)",
        kind: Kind::Deliberate,
        why: CGROUPFS_WHY,
        check: cgroupfs_as_ours,
    },
    Known {
        scenario: "cgroupfs/run, cgroup mount without options",
        kind: Kind::Deliberate,
        why: CGROUPFS_WHY,
        check: cgroupfs_as_ours,
    },
    Known {
        scenario: "cgroupfs/run --privileged, cgroup mount rw",
        kind: Kind::Deliberate,
        why: CGROUPFS_WHY,
        check: cgroupfs_as_ours,
    },
    // -- process
    Known {
        scenario: "env/spec without PATH, bare program name",
        kind: Kind::Deliberate,
        why: "a bare program name is looked up in a default PATH when process.env has none \
              (execvp semantics, as the runtime spec asks for args[0]); runc fails the create",
        check: |runc, ours| {
            let runc_failed = runc.starts_with("exit 1\n") && runc.contains("ctr: <error>");
            let ours_ran = ours.starts_with("exit 0\n") && ours.contains("\nFOO=1\n");
            (runc_failed && ours_ran)
                .then_some(())
                .ok_or("runc must fail and ours run `env`".into())
        },
    },
    Known {
        scenario: "process/pids in an exec",
        kind: Kind::Deliberate,
        why: "an exec's process is forked straight into the container's pid namespace; runc's \
              multithreaded `runc init` joins it first and its threads use up pids",
        check: |runc, ours| {
            let pid = |s: &str| s.lines().nth(2).and_then(|l| l.parse::<u32>().ok());
            match (pid(runc), pid(ours)) {
                (Some(r), Some(2)) if r > 2 => Ok(()),
                other => Err(format!("want runc > 2 and ours 2, got {other:?}")),
            }
        },
    },
    // -- mounts
    Known {
        scenario: "mountinfo/run --rootfs-propagation shared",
        kind: Kind::Deliberate,
        why: ROOTFS_PROPAGATION_WHY,
        check: |r, o| root_propagation(r, o, &["shared:g1"]),
    },
    Known {
        scenario: "mountinfo/rootfs below a shared host mount, --rootfs-propagation shared",
        kind: Kind::Deliberate,
        why: ROOTFS_PROPAGATION_WHY,
        check: |r, o| root_propagation(r, o, &["shared:g1"]),
    },
    Known {
        scenario: "mountinfo/run --rootfs-propagation unbindable",
        kind: Kind::Deliberate,
        why: ROOTFS_PROPAGATION_WHY,
        check: |r, o| root_propagation(r, o, &["unbindable"]),
    },
    Known {
        scenario: "mountinfo/rootfs below a shared host mount, --rootfs-propagation unbindable",
        kind: Kind::Deliberate,
        why: ROOTFS_PROPAGATION_WHY,
        check: |r, o| root_propagation(r, o, &["unbindable"]),
    },
    Known {
        scenario: "mountinfo/rootfs below a shared host mount, --rootfs-propagation slave",
        kind: Kind::Deliberate,
        why: "runc 1.1 makes a slave rootfs private when the mount it lives in is shared; \
              runc's main branch (ec170d86) keeps it a slave of that mount, as we do",
        check: |r, o| {
            let prop = propagation_of(o, "/").unwrap_or_default();
            let slave_of_host = prop.len() == 1 && prop[0].starts_with("master:host");
            if !slave_of_host {
                return Err(format!("/ must be a slave of the host's mount: {prop:?}"));
            }
            equal(
                "without propagation",
                &without_propagation(r),
                &without_propagation(o),
            )
        },
    },
    Known {
        scenario: "mountinfo/run --rootfs-propagation rshared",
        kind: Kind::Deliberate,
        why: ROOTFS_PROPAGATION_WHY,
        check: |r, o| every_mount(r, o, "shared:g"),
    },
    Known {
        scenario: "mountinfo/rootfs below a shared host mount, --rootfs-propagation rshared",
        kind: Kind::Deliberate,
        why: ROOTFS_PROPAGATION_WHY,
        check: |r, o| every_mount(r, o, "shared:g"),
    },
    Known {
        scenario: "mountinfo/run --rootfs-propagation runbindable",
        kind: Kind::Deliberate,
        why: RUNBINDABLE_WHY,
        check: runc_fails_ours_all_unbindable,
    },
    Known {
        scenario: "mountinfo/rootfs below a shared host mount, --rootfs-propagation runbindable",
        kind: Kind::Deliberate,
        why: RUNBINDABLE_WHY,
        check: runc_fails_ours_all_unbindable,
    },
    Known {
        scenario: "mountinfo/run tmpfs mode= on an existing directory",
        kind: Kind::Deliberate,
        why: "runc 1.1 chmods a tmpfs to the mode of the directory it covers even when its \
              options set mode= (runc#3911); runc 1.2 lets mode= win, as we do",
        check: |r, o| {
            let want = r.replace("\n/tmp 1777\n", "\n/tmp 755\n");
            equal("runc with mode=0755 honoured", &want, o)
        },
    },
    // -- stdio
    Known {
        scenario: "stdio/the process's stdio descriptors",
        kind: Kind::Deliberate,
        why: STDIO_WHY,
        check: fifos_for_pipes,
    },
    Known {
        scenario: "stdio/an exec's stdio descriptors, as nobody, reopened",
        kind: Kind::Deliberate,
        why: STDIO_WHY,
        check: fifos_for_pipes,
    },
];

const CGROUPFS_WHY: &str = "the v1 cgroup tmpfs is read-only when the mount asks for ro (runc \
     leaves it writable); on a hybrid host the cgroup2 hierarchy the container is in shows as \
     /sys/fs/cgroup/unified (runc leaves it out); the tmpfs keeps mode 0755 (runc 1.1 chmods it \
     to sysfs' 0555, runc 1.2 no longer)";
const ROOTFS_PROPAGATION_WHY: &str = "runc 1.1 ignores a shared or unbindable rootfsPropagation \
     (the root stays private); runc 1.4 applies it to / after pivot_root, as we do";
const RUNBINDABLE_WHY: &str = "runc 1.1 fails to bind a runbindable rootfs (EINVAL); runc 1.2 \
     makes it private first, and 1.4 applies runbindable after pivot_root, as we do";
const STDIO_WHY: &str = "stdout and stderr are containerd's fifos themselves (no copy loop in \
     the shim), runc's shim hands runc pipes it copies from: /proc/self/fd/1 names the fifo, \
     which containerd made with mode 0700";

fn equal(what: &str, want: &str, got: &str) -> Result<(), String> {
    (want == got)
        .then_some(())
        .ok_or_else(|| format!("{what}:\n{}", diff(want, got)))
}

fn cgroupfs_as_ours(runc: &str, ours: &str) -> Result<(), String> {
    let hybrid = Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists();
    if hybrid != ours.contains("\n./unified directory 755 ./unified\n") {
        return Err(format!(
            "the unified hierarchy must show exactly on a hybrid host ({hybrid})"
        ));
    }
    let ro = runc.contains(" /sys/fs/cgroup/cpu ro,");
    if ro != ours.contains("\n/ /sys/fs/cgroup ro,") {
        return Err(format!(
            "the tmpfs must be read-only exactly when the mount is ({ro})"
        ));
    }
    let ours: Vec<String> = ours
        .lines()
        .filter(|l| !l.contains("unified"))
        .map(|l| match l.strip_prefix("/ /sys/fs/cgroup ro,") {
            Some(rest) if ro => format!("/ /sys/fs/cgroup rw,{rest}"),
            _ => l.to_owned(),
        })
        .collect();
    let runc = runc.replace("\n. directory 555 .\n", "\n. directory 755 .\n");
    equal(
        "runc without its differences",
        &runc,
        &(ours.join("\n") + "\n"),
    )
}

fn root_propagation(runc: &str, ours: &str, want: &[&str]) -> Result<(), String> {
    let got = propagation_of(ours, "/").unwrap_or_default();
    if got != want {
        return Err(format!("/ must have {want:?}, has {got:?}"));
    }
    equal(
        "without propagation",
        &without_propagation(runc),
        &without_propagation(ours),
    )
}

fn mount_lines(obs: &str) -> impl Iterator<Item = &str> {
    obs.lines()
        .filter(|l| l.starts_with('m') && l.contains(" - "))
}

fn every_mount(runc: &str, ours: &str, prefix: &str) -> Result<(), String> {
    for l in mount_lines(ours) {
        let f: Vec<&str> = l.split(' ').collect();
        let prop: Vec<&str> = f[6..].iter().take_while(|o| **o != "-").copied().collect();
        if prop.len() != 1 || !prop[0].starts_with(prefix) {
            return Err(format!("every mount must be {prefix}*: {l}"));
        }
    }
    equal(
        "without propagation",
        &without_propagation(runc),
        &without_propagation(ours),
    )
}

fn runc_fails_ours_all_unbindable(runc: &str, ours: &str) -> Result<(), String> {
    if !(runc.starts_with("exit 1\n") && runc.contains("ctr: <error>")) {
        return Err("runc 1.1 must fail".into());
    }
    if !ours.starts_with("exit 0\n") || mount_lines(ours).count() < 10 {
        return Err("ours must run".into());
    }
    match mount_lines(ours).find(|l| !l.contains(" unbindable - ")) {
        Some(l) => Err(format!("every mount must be unbindable: {l}")),
        None => Ok(()),
    }
}

/// Our stdout/stderr lines written as runc's: the fifo as a pipe, mode 0700 as 0600.
fn fifos_for_pipes(runc: &str, ours: &str) -> Result<(), String> {
    let mut fifos = 0;
    let as_runc: Vec<String> = ours
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let fifo = f.len() == 5
                && (f[0] == "1" || f[0] == "2")
                && f[1].starts_with("/run/containerd/fifo/N/")
                && f[4] == "700";
            if fifo {
                fifos += 1;
                format!("{} pipe:[N] {} {} 600", f[0], f[2], f[3])
            } else {
                l.to_owned()
            }
        })
        .collect();
    if fifos != 2 {
        return Err("fds 1 and 2 must be containerd's fifos".into());
    }
    equal(
        "the fifos shown as pipes",
        runc,
        &(as_runc.join("\n") + "\n"),
    )
}
