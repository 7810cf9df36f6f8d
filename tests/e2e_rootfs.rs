//! End-to-end tests of the container's filesystem and kernel settings: confined mount
//! destinations (hostile images), recursive mount attributes, tmpcopyup, the cgroup
//! filesystem, read-only root, rootfs propagation, no_pivot_root, devices, sysctls, the
//! loopback interface, domainname, personality, scheduler, I/O priority, CPU affinity and
//! LSM labels.
//!
//! Specs that `ctr run` flags cannot express go through `ctr run --config` with a rootfs
//! directory built here from busybox-static. containerd 1.6's client drops the spec fields
//! it does not know (process.scheduler, ioPriority, execCPUAffinity): those tests talk to the
//! shim directly over ttrpc, as containerd would (see [`run_direct`]).
//! Where runc implements the same thing, the probe also runs under io.containerd.runc.v2
//! and both must agree.

mod common;

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::cgroup::{self, Cgroup, Fact};
use common::spec::{base_spec, busybox_rootfs, Scratch};
use common::*;
use serde_json::{json, Value};

const RUNC: &str = "io.containerd.runc.v2";

/// `ctr run --rm` with extra ctr flags before the image; returns (stdout, stderr, code).
fn run_with(rt: &str, id: &str, flags: &[&str], args: &[&str]) -> (String, String, i32) {
    let mut a: Vec<&str> = vec!["run", "--rm", "--runtime", rt];
    a.extend_from_slice(flags);
    a.push(IMAGE);
    a.push(id);
    a.extend_from_slice(args);
    let out = ctr(&a);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        exit_code(&out.status),
    )
}

/// [`run_with`], then no leftovers.
fn run_clean_with(rt: &str, id: &str, flags: &[&str], args: &[&str]) -> (String, String, i32) {
    let r = run_with(rt, id, flags, args);
    let left = leftovers_settled(id);
    assert!(
        left.is_empty(),
        "leftovers of {id}:\n  {}\n(the run: {r:?})",
        left.join("\n  ")
    );
    r
}

/// `ctr run --rm --config` of a full spec; (stdout, stderr, code), then no leftovers.
fn run_spec(rt: &str, id: &str, spec: &Value, dir: &Path) -> (String, String, i32) {
    let file = dir.join(format!("{id}.json"));
    fs::write(&file, serde_json::to_vec_pretty(spec).unwrap()).unwrap();
    let out = ctr(&[
        "run",
        "--rm",
        "--runtime",
        rt,
        "--config",
        file.to_str().unwrap(),
        id,
    ]);
    let r = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        exit_code(&out.status),
    );
    let left = leftovers_settled(id);
    assert!(
        left.is_empty(),
        "leftovers of {id}:\n  {}\n(the run: {r:?})",
        left.join("\n  ")
    );
    r
}

fn host_mounts_mentioning(needle: &str) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

// ------------------------------------------------------------- hostile images ---

/// Symlinks in the image point mount destinations at the host (absolute, `..` chains, a
/// dangling one naming a host directory); `..` in the destination itself. Every mount must
/// land inside the rootfs and nothing may be created or mounted on the host.
#[test]
fn hostile_symlinks_keep_mounts_inside_the_rootfs() {
    let _serial = shared();
    let id = unique_id("hostile");
    let s = Scratch::new(&id);
    let root = busybox_rootfs(&s.0);
    let marker = id.clone();
    let host_dir = format!("/shim-rs-hostile-{marker}");
    symlink("/etc", root.join("evil")).unwrap();
    symlink("../../../../../../../../etc", root.join("rel")).unwrap();
    symlink(format!("{host_dir}/sub"), root.join("dangle")).unwrap();
    let host_file = s.0.join("hostfile");
    fs::write(&host_file, "bound\n").unwrap();

    let m1 = format!("type=tmpfs,src=tmpfs,dst=/evil/abs-{marker}");
    let m2 = format!("type=tmpfs,src=tmpfs,dst=/rel/rel-{marker}");
    let m3 = format!("type=tmpfs,src=tmpfs,dst=/../../../../tmp/dotdot-{marker}");
    let m4 = format!(
        "type=bind,src={},dst=/dangle/file,options=rbind:ro",
        host_file.display()
    );
    let rootfs = root.to_str().unwrap().to_owned();
    let rt = runtime();
    let mut a: Vec<&str> = vec!["run", "--rm", "--runtime", &rt, "--rootfs"];
    for m in [&m1, &m2, &m3, &m4] {
        a.push("--mount");
        a.push(m);
    }
    a.extend_from_slice(&[
        &rootfs,
        &id,
        // runc 1.1 does not look a bare name up in $PATH for a --rootfs container.
        "/bin/sh",
        "-c",
        "cut -d' ' -f5 /proc/self/mountinfo; cat /dangle/file",
    ]);
    let out = ctr(&a);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(exit_code(&out.status), 0, "stderr: {stderr}");
    let mounts: Vec<&str> = stdout.lines().collect();
    for inside in [
        format!("/etc/abs-{marker}"),
        format!("/etc/rel-{marker}"),
        format!("/tmp/dotdot-{marker}"),
        format!("{host_dir}/sub/file"),
    ] {
        assert!(
            mounts.contains(&inside.as_str()),
            "{inside} not in {mounts:?}"
        );
    }
    assert!(stdout.ends_with("bound\n"), "{stdout}");
    // Inside the rootfs on disk, nothing on the host.
    assert!(root.join(format!("etc/abs-{marker}")).is_dir());
    assert!(root.join(format!("tmp/dotdot-{marker}")).is_dir());
    assert!(root.join(format!(".{host_dir}/sub/file")).is_file());
    for host in [
        format!("/etc/abs-{marker}"),
        format!("/etc/rel-{marker}"),
        format!("/tmp/dotdot-{marker}"),
        host_dir.clone(),
    ] {
        assert!(!Path::new(&host).exists(), "{host} was created on the host");
    }
    assert_eq!(host_mounts_mentioning(&marker), Vec::<String>::new());
    assert_no_leftovers(&id);
}

#[test]
fn symlink_loop_destination_fails_naming_the_mount() {
    let _serial = shared();
    let id = unique_id("loop");
    let s = Scratch::new(&id);
    let root = busybox_rootfs(&s.0);
    symlink("loop2", root.join("loop1")).unwrap();
    symlink("loop1", root.join("loop2")).unwrap();
    let rt = runtime();
    let out = ctr(&[
        "run",
        "--rm",
        "--runtime",
        &rt,
        "--rootfs",
        "--mount",
        "type=tmpfs,src=tmpfs,dst=/loop1/x",
        root.to_str().unwrap(),
        &id,
        "true",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(exit_code(&out.status), 0);
    if testing_our_shim() {
        // ctr's default spec has 7 mounts; --mount comes after them.
        assert!(
            err.contains("mounts[7]: /loop1/x")
                && err.contains("Too many levels of symbolic links"),
            "{err}"
        );
    }
    assert_no_leftovers(&id);
}

/// A /proc that is a symlink would move procfs (and the masked paths on it) elsewhere.
#[test]
fn proc_on_a_symlink_is_refused() {
    let _serial = shared();
    let id = unique_id("procsym");
    let s = Scratch::new(&id);
    let root = busybox_rootfs(&s.0);
    fs::remove_dir(root.join("proc")).unwrap();
    fs::create_dir(root.join("elsewhere")).unwrap();
    symlink("/elsewhere", root.join("proc")).unwrap();
    let rt = runtime();
    let out = ctr(&[
        "run",
        "--rm",
        "--runtime",
        &rt,
        "--rootfs",
        root.to_str().unwrap(),
        &id,
        "true",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(exit_code(&out.status), 0, "a symlinked /proc was accepted");
    if testing_our_shim() {
        assert!(err.contains("mounts[0]: /proc is a symlink"), "{err}");
    }
    assert_no_leftovers(&id);
}

// ------------------------------------------------------------ mount options ---

/// A host directory with a tmpfs mounted below it, for the recursive options.
struct HostTree {
    top: PathBuf,
}

impl HostTree {
    fn new(dir: &Path) -> HostTree {
        let top = dir.join("tree");
        fs::create_dir_all(top.join("sub")).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(top.join("sub"))
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs for the test");
        HostTree { top }
    }
}

impl Drop for HostTree {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.top.join("sub")).status();
    }
}

#[test]
fn recursive_read_only_and_noexec_reach_submounts() {
    let _serial = shared();
    let id = unique_id("rro");
    // Not named after the container: its host mount is not a leftover of the container.
    let s = Scratch::new(&unique_id("tree"));
    let tree = HostTree::new(&s.0);
    let probe = "touch /data/top 2>/dev/null && echo top-rw || echo top-ro; \
                 touch /data/sub/x 2>/dev/null && echo sub-rw || echo sub-ro; \
                 grep ' /data/sub ' /proc/self/mountinfo | cut -d' ' -f6";
    let rt = runtime();
    let m = format!(
        "type=bind,src={},dst=/data,options=rbind:rro:rnoexec:rnosymfollow",
        tree.top.display()
    );
    let (out, err, code) = run_clean_with(&rt, &id, &["--mount", &m], &["sh", "-c", probe]);
    assert_eq!(code, 0, "stderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["top-ro", "sub-ro"], "{out}");
    let opts: Vec<&str> = lines[2].split(',').collect();
    for o in ["ro", "noexec", "nosymfollow"] {
        assert!(
            opts.contains(&o),
            "{o} missing on the submount: {}",
            lines[2]
        );
    }

    // Plain ro is not recursive: the submount stays writable (as with runc).
    let id2 = unique_id("ro");
    let m = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        tree.top.display()
    );
    for rt in [runtime(), RUNC.to_string()] {
        let id2 = format!("{id2}-{}", if rt == RUNC { "runc" } else { "ours" });
        let (out, err, code) = run_clean_with(&rt, &id2, &["--mount", &m], &["sh", "-c", probe]);
        assert_eq!(code, 0, "{rt}: {err}");
        assert_eq!(
            out.lines().take(2).collect::<Vec<_>>(),
            ["top-ro", "sub-rw"],
            "{rt}"
        );
    }
}

#[test]
fn tmpcopyup_starts_the_tmpfs_with_the_image_content() {
    let _serial = shared();
    let id = unique_id("copyup");
    let (out, err, code) = run_clean_with(
        &runtime(),
        &id,
        &[
            "--mount",
            "type=tmpfs,src=tmpfs,dst=/etc,options=tmpcopyup:mode=755",
        ],
        &[
            "sh",
            "-c",
            "grep ' /etc ' /proc/self/mountinfo | sed 's/.* - //' | cut -d' ' -f1; head -1 /etc/passwd; \
             echo added > /etc/new && cat /etc/new; stat -c %a /etc/passwd",
        ],
    );
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "tmpfs\nroot:x:0:0:root:/root:/bin/sh\nadded\n644\n");
}

// --------------------------------------------------------------- cgroupfs ---

/// CRI's `/sys/fs/cgroup` mount: the container sees its own cgroup in every hierarchy (v1,
/// hybrid) or its own cgroup2 directory (v2), read-only.
#[test]
fn cgroup_mount_shows_the_container_cgroup() {
    let _serial = shared();
    // The container's own view: its cgroup at the top of the mount.
    let top = Cgroup::at("/");
    let mem = top.files_of(&Fact::MemoryLimit(0)).remove(0);
    let cpu = top.files_of(&Fact::CpuShares(0)).remove(0);
    let procs = top.dir("pids").join("cgroup.procs");
    let probe = format!(
        "ls /sys/fs/cgroup | tr '\\n' ' '; echo; cat {mem} {cpu}; cat {procs} | head -1; \
         touch /sys/fs/cgroup/x 2>/dev/null && echo top-rw || echo top-ro; \
         (echo 1 > {mem}) 2>/dev/null && echo rw || echo ro",
        mem = mem.display(),
        cpu = cpu.display(),
        procs = procs.display()
    );
    let flags = [
        "--mount",
        "type=cgroup,src=cgroup,dst=/sys/fs/cgroup,options=ro:nosuid:nodev:noexec",
        "--memory-limit",
        "104857600",
        "--cpu-shares",
        "512",
    ];
    let mut outputs = Vec::new();
    for rt in [runtime(), RUNC.to_string()] {
        let id = unique_id("cgfs");
        let (out, err, code) = run_clean_with(&rt, &id, &flags, &["sh", "-c", &probe]);
        assert_eq!(code, 0, "{rt}: {err}");
        outputs.push(out);
    }
    if !testing_our_shim() {
        return; // the expectations below are ours; runc 1.1 differs as said below
    }
    let ours: Vec<&str> = outputs[0].lines().collect();
    let runc: Vec<&str> = outputs[1].lines().collect();
    let cpu_value = if cgroup::v2_only() {
        cgroup::shares_to_weight(512).to_string()
    } else {
        "512".to_string()
    };
    assert_eq!(
        ours[1..],
        ["104857600", cpu_value.as_str(), "1", "top-ro", "ro"],
        "{}",
        cgroup::layout_name()
    );
    if cgroup::v2_only() {
        // The container's own cgroup2 directory. (runc 1.1 mounts a fresh cgroup2 there, which
        // without a cgroup namespace shows the host's whole tree: nothing to compare.)
        assert!(
            ours[0].split(' ').any(|n| n == "cgroup.procs"),
            "{}",
            ours[0]
        );
        return;
    }
    let layout = runtime::cgroups::Layout::host();
    for h in &layout.hierarchies {
        let name = h.mountpoint.file_name().unwrap().to_string_lossy();
        assert!(
            ours[0].split(' ').any(|n| n == name),
            "hierarchy {name} missing: {}",
            ours[0]
        );
    }
    // Same as runc for the v1 hierarchies (runc 1.1 leaves out the hybrid unified one, and
    // leaves its tmpfs writable (mode 0555) where the mount asks for ro).
    assert_eq!(ours[1..4], runc[1..4], "{outputs:?}");
    assert_eq!(ours[5], runc[5], "{outputs:?}");
    fn strip(l: &str) -> Vec<&str> {
        l.split(' ')
            .filter(|n| *n != "unified" && !n.is_empty())
            .collect()
    }
    assert_eq!(strip(ours[0]), strip(runc[0]));
}

// ------------------------------------------------------------ root, propagation ---

#[test]
fn read_only_root_with_writable_tmpfs_mounts() {
    let _serial = shared();
    let probe = "touch /x 2>/dev/null && echo root-rw || echo root-ro; \
                 echo s > /dev/shm/f && cat /dev/shm/f; \
                 grep ' /dev/shm ' /proc/self/mountinfo | sed 's/.* - //' | cut -d' ' -f1; \
                 test -e /dev/console && echo console || echo no-console";
    let mut outputs = Vec::new();
    for rt in [runtime(), RUNC.to_string()] {
        let id = unique_id("rdonly");
        let (out, err, code) = run_clean_with(&rt, &id, &["--read-only"], &["sh", "-c", probe]);
        assert_eq!(code, 0, "{rt}: {err}");
        outputs.push(out);
    }
    assert_eq!(outputs[0], "root-ro\ns\ntmpfs\nno-console\n");
    assert_eq!(outputs[0], outputs[1]);
}

/// In the host's network namespace the container still gets a sysfs of its own, without
/// the host's cgroup (and other) mounts below it, as under runc.
#[test]
fn host_network_container_gets_no_host_sysfs_submounts() {
    let _serial = shared();
    let probe = "awk '$5 ~ \"^/sys/\"' /proc/self/mountinfo | wc -l; ls /sys/fs/cgroup | wc -l; \
                 awk '$5 == \"/sys\" {print $6}' /proc/self/mountinfo";
    let mut outputs = Vec::new();
    for rt in [runtime(), RUNC.to_string()] {
        let id = unique_id("nethost");
        let (out, err, code) = run_clean_with(&rt, &id, &["--net-host"], &["sh", "-c", probe]);
        assert_eq!(code, 0, "{rt}: {err}");
        outputs.push(out);
    }
    // One mount below /sys: the masked /sys/firmware.
    assert_eq!(outputs[0], "1\n0\nro,nosuid,nodev,noexec,relatime\n");
    assert_eq!(outputs[0], outputs[1]);
}

/// The propagation of the container's "/" (optional fields of its mountinfo line). A slave
/// shows its master only when the host's mount of the rootfs is shared (not on this host,
/// unless someone else's test made it so meanwhile).
#[test]
fn rootfs_propagation_variants() {
    let _serial = shared();
    if !testing_our_shim() {
        return; // runc 1.1 leaves / private whatever is asked
    }
    for (value, allowed) in [
        ("shared", &["shared:"][..]),
        ("rshared", &["shared:"]),
        ("slave", &["-", "master:"]),
        ("rslave", &["-", "master:"]),
        ("private", &["-"]),
        ("rprivate", &["-"]),
        ("unbindable", &["unbindable"]),
        ("runbindable", &["unbindable"]),
    ] {
        let id = unique_id("prop");
        let (out, err, code) = run_clean_with(
            &runtime(),
            &id,
            &["--rootfs-propagation", value],
            &[
                "sh",
                "-c",
                "grep ' / / ' /proc/self/mountinfo | cut -d' ' -f7",
            ],
        );
        assert_eq!(code, 0, "{value}: {err}");
        let field = out.trim();
        assert!(
            allowed.iter().any(|a| field.starts_with(a)),
            "{value}: optional fields {field:?}, expected one of {allowed:?}"
        );
    }
}

/// A shared host mount bound into the container: rslave receives (master:N), rprivate is cut
/// off, and rshared with a shared bind (Kubernetes' Bidirectional) is a peer, so a mount
/// made inside shows up on the host. Same as runc.
#[test]
fn bind_propagation_against_a_shared_host_mount() {
    let _serial = shared();
    let s = Scratch::new(&unique_id("sharedsrc"));
    let src = s.0.join("shared");
    fs::create_dir_all(&src).unwrap();
    let sh = |cmd: &str| {
        let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
        assert!(st.success(), "{cmd}");
    };
    let src_s = src.to_str().unwrap().to_owned();
    sh(&format!(
        "mount -t tmpfs tmpfs {src_s} && mount --make-shared {src_s}"
    ));
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").args(["-R", &self.0]).status();
        }
    }
    let _unmount = Unmount(src_s.clone());

    let mut outputs = Vec::new();
    for rt in [runtime(), RUNC.to_string()] {
        for (prop, opts) in [
            ("rslave", "rbind"),
            ("rprivate", "rbind"),
            ("rshared", "rbind:rshared"),
        ] {
            let id = unique_id("bidi");
            // Not named after the container: on the host it is the test's, not a leftover.
            let inner = unique_id("inner");
            let m = format!("type=bind,src={src_s},dst=/shared,options={opts}");
            let probe = format!(
                "mkdir /shared/{inner} && mount -t tmpfs none /shared/{inner} && \
                 awk '$5 == \"/shared\" {{print $7}}' /proc/self/mountinfo"
            );
            let (out, err, code) = run_clean_with(
                &rt,
                &id,
                &["--privileged", "--rootfs-propagation", prop, "--mount", &m],
                &["sh", "-c", &probe],
            );
            assert_eq!(code, 0, "{rt} {prop}: {err}");
            let on_host = host_mounts_mentioning(&format!("{src_s}/{inner}"));
            for l in &on_host {
                let mp = l.split(' ').nth(4).unwrap();
                sh(&format!("umount {mp}"));
            }
            let tag = out.trim().split(':').next().unwrap_or("").to_owned();
            outputs.push(format!("{prop} {tag} host-sees-it={}", !on_host.is_empty()));
        }
    }
    assert_eq!(
        outputs[..3],
        [
            "rslave master host-sees-it=false",
            "rprivate - host-sees-it=false",
            "rshared shared host-sees-it=true",
        ]
    );
    assert_eq!(outputs[..3], outputs[3..]);
}

/// `ctr run --no-pivot` (containerd's no_pivot_root): the init moves the rootfs onto "/" and
/// chroots instead of pivot_root. Observed with strace on containerd and its children.
#[test]
fn no_pivot_root_uses_move_and_chroot() {
    let _serial = exclusive();
    for no_pivot in [true, false] {
        let id = unique_id(if no_pivot { "nopivot" } else { "pivot" });
        let flags: &[&str] = if no_pivot { &["--no-pivot"] } else { &[] };
        let (trace, (out, err, code)) = traced(&["pivot_root", "chroot"], || {
            run_with(
                &runtime(),
                &id,
                flags,
                &[
                    "sh",
                    "-c",
                    "cat /etc/passwd | head -1; ls /proc/self/fd >/dev/null && echo proc-ok",
                ],
            )
        });
        assert_eq!(code, 0, "stderr: {err}");
        assert_eq!(out, "root:x:0:0:root:/root:/bin/sh\nproc-ok\n");
        let pivots = trace.lines().filter(|l| l.contains("pivot_root(")).count();
        let chroots = trace
            .lines()
            .filter(|l| l.contains("chroot(\".\")"))
            .count();
        if testing_our_shim() {
            if no_pivot {
                assert_eq!((pivots, chroots), (0, 1), "{trace}");
            } else {
                assert_eq!((pivots, chroots), (1, 0), "{trace}");
            }
        }
        assert_no_leftovers(&id);
    }
}

/// Runs `f` while strace follows our containerd and its descendants for `syscalls`.
fn traced<T>(syscalls: &[&str], f: impl FnOnce() -> T) -> (String, T) {
    let mut result = None;
    let trace = trace_containerd(&syscalls.join(","), || result = Some(f()));
    (trace, result.expect("the traced closure ran"))
}

// ----------------------------------------------------------------- devices ---

#[test]
fn ctr_device_flag_creates_the_host_device() {
    let _serial = shared();
    let mut outputs = Vec::new();
    for rt in [runtime(), RUNC.to_string()] {
        let id = unique_id("devflag");
        let (out, err, code) = run_clean_with(
            &rt,
            &id,
            &["--device", "/dev/loop-control"],
            &["stat", "-c", "%F %t:%T %a %u:%g", "/dev/loop-control"],
        );
        assert_eq!(code, 0, "{rt}: {err}");
        outputs.push(out);
    }
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = fs::metadata("/dev/loop-control").unwrap();
    assert!(md.file_type().is_char_device());
    let expect = format!(
        "character special file {:x}:{:x} {:o} 0:0\n",
        libc::major(md.rdev()),
        libc::minor(md.rdev()),
        md.mode() & 0o7777
    );
    assert_eq!(outputs[0], expect);
    assert_eq!(outputs[0], outputs[1]);
}

/// Devices of the spec with their type, numbers, mode and owner; a symlink the image has at
/// a device path is replaced, not followed.
#[test]
fn spec_devices_get_type_numbers_mode_and_owner() {
    let _serial = shared();
    let mut outputs = Vec::new();
    for rt in [runtime(), RUNC.to_string()] {
        let id = unique_id("devspec");
        let s = Scratch::new(&id);
        let root = busybox_rootfs(&s.0);
        let mut spec = base_spec(
            &id,
            &root,
            &[
                "sh",
                "-c",
                "for d in /dev/char1 /dev/sub/blk /dev/fifo1; do stat -c '%n %F %t:%T %a %u:%g' $d; done; \
                 cat /dev/char1 && echo read-ok",
            ],
        );
        spec["linux"]["devices"] = json!([
            {"path": "/dev/char1", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640, "uid": 1234, "gid": 5678},
            {"path": "/dev/sub/blk", "type": "b", "major": 7, "minor": 0, "fileMode": 0o600, "uid": 0, "gid": 6},
            {"path": "/dev/fifo1", "type": "p", "fileMode": 0o620, "uid": 42, "gid": 42}
        ]);
        spec["linux"]["resources"]["devices"] = json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
        ]);
        let (out, err, code) = run_spec(&rt, &id, &spec, &s.0);
        assert_eq!(code, 0, "{rt}: {err}");
        outputs.push(out);
    }
    assert_eq!(
        outputs[0],
        "/dev/char1 character special file 1:3 640 1234:5678\n\
         /dev/sub/blk block special file 7:0 600 0:6\n\
         /dev/fifo1 fifo 0:0 620 42:42\n\
         read-ok\n"
    );
    assert_eq!(outputs[0], outputs[1]);
}

// ---------------------------------------------------------- kernel settings ---

#[test]
fn namespaced_sysctls_are_set_in_the_container_only() {
    let _serial = shared();
    let host_shmmax = fs::read_to_string("/proc/sys/kernel/shmmax").unwrap();
    let host_msgmax = fs::read_to_string("/proc/sys/fs/mqueue/msg_max").unwrap();
    let mut outputs = Vec::new();
    for rt in [runtime(), RUNC.to_string()] {
        let id = unique_id("sysctl");
        let s = Scratch::new(&id);
        let root = busybox_rootfs(&s.0);
        let mut spec = base_spec(
            &id,
            &root,
            &[
                "cat",
                "/proc/sys/net/ipv4/ip_forward",
                "/proc/sys/kernel/shmmax",
                "/proc/sys/fs/mqueue/msg_max",
                "/proc/sys/net/ipv4/conf/lo/forwarding",
            ],
        );
        spec["linux"]["sysctl"] = json!({
            "net.ipv4.ip_forward": "1",
            "kernel.shmmax": "12345678",
            "fs.mqueue.msg_max": "17",
            "net/ipv4/conf/lo/forwarding": "1"
        });
        let (out, err, code) = run_spec(&rt, &id, &spec, &s.0);
        assert_eq!(code, 0, "{rt}: {err}");
        outputs.push(out);
    }
    assert_eq!(outputs[0], "1\n12345678\n17\n1\n");
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/shmmax").unwrap(),
        host_shmmax
    );
    assert_eq!(
        fs::read_to_string("/proc/sys/fs/mqueue/msg_max").unwrap(),
        host_msgmax
    );
}

#[test]
fn sysctls_that_are_global_or_miss_their_namespace_are_refused() {
    let _serial = shared();
    if !testing_our_shim() {
        return;
    }
    let id = unique_id("sysglobal");
    let s = Scratch::new(&id);
    let root = busybox_rootfs(&s.0);
    let mut spec = base_spec(&id, &root, &["true"]);
    spec["linux"]["sysctl"] = json!({"kernel.pid_max": "4096"});
    let (_, err, code) = run_spec(&runtime(), &id, &spec, &s.0);
    assert_ne!(code, 0);
    assert!(
        err.contains("linux.sysctl[\"kernel.pid_max\"]") && err.contains("not a namespaced sysctl"),
        "{err}"
    );

    let id = unique_id("sysnonet");
    let mut spec = base_spec(&id, &root, &["true"]);
    spec["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    spec["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "mount"}]);
    let (_, err, code) = run_spec(&runtime(), &id, &spec, &s.0);
    assert_ne!(code, 0);
    assert!(
        err.contains("linux.sysctl[\"net.ipv4.ip_forward\"]")
            && err.contains("needs a net namespace"),
        "{err}"
    );
}

#[test]
fn loopback_is_up_in_a_new_network_namespace() {
    let _serial = shared();
    let mut outputs = Vec::new();
    for rt in [runtime(), RUNC.to_string()] {
        let id = unique_id("lo");
        let (out, err, code) = run_clean_with(
            &rt,
            &id,
            &[],
            &[
                "cat",
                "/sys/class/net/lo/flags",
                "/sys/class/net/lo/operstate",
            ],
        );
        assert_eq!(code, 0, "{rt}: {err}");
        outputs.push(out);
    }
    // IFF_UP | IFF_LOOPBACK (and RUNNING, which operstate "unknown" reflects).
    let flags = u32::from_str_radix(
        outputs[0].lines().next().unwrap().trim_start_matches("0x"),
        16,
    )
    .unwrap();
    assert_eq!(flags & 0x9, 0x9, "{}", outputs[0]);
    assert_eq!(outputs[0], outputs[1]);
}

#[test]
fn hostname_and_domainname() {
    let _serial = shared();
    let mut outputs = Vec::new();
    for rt in [runtime(), RUNC.to_string()] {
        let id = unique_id("domain");
        let s = Scratch::new(&id);
        let root = busybox_rootfs(&s.0);
        let mut spec = base_spec(
            &id,
            &root,
            &["sh", "-c", "hostname; cat /proc/sys/kernel/domainname"],
        );
        spec["hostname"] = json!("box1");
        spec["domainname"] = json!("example.test");
        let (out, err, code) = run_spec(&rt, &id, &spec, &s.0);
        assert_eq!(code, 0, "{rt}: {err}");
        outputs.push(out);
    }
    if testing_our_shim() {
        assert_eq!(outputs[0], "box1\nexample.test\n");
    }
    // runc 1.1 predates domainname: it agrees on the hostname only.
    assert_eq!(outputs[1].lines().next(), Some("box1"));
}

#[test]
fn personality_linux32() {
    let _serial = shared();
    let id = unique_id("pers");
    let s = Scratch::new(&id);
    let root = busybox_rootfs(&s.0);
    let mut spec = base_spec(&id, &root, &["uname", "-m"]);
    spec["linux"]["personality"] = json!({"domain": "LINUX32"});
    let (out, err, code) = run_spec(&runtime(), &id, &spec, &s.0);
    assert_eq!(code, 0, "stderr: {err}");
    let expect = match std::env::consts::ARCH {
        "x86_64" => "i686",
        "aarch64" => "armv8l",
        other => panic!("no 32-bit personality expectation for {other}"),
    };
    if testing_our_shim() {
        assert_eq!(out.trim(), expect);
    }
    let id = unique_id("persflags");
    let mut spec = base_spec(&id, &root, &["true"]);
    spec["linux"]["personality"] = json!({"domain": "LINUX", "flags": ["ADDR_NO_RANDOMIZE"]});
    let (_, err, code) = run_spec(&runtime(), &id, &spec, &s.0);
    if testing_our_shim() {
        assert_ne!(code, 0);
        assert!(err.contains("linux.personality.flags"), "{err}");
    }
}

/// AppArmor and SELinux labels: this host has neither, so both are refused by name (the
/// label is written to /proc/self/attr when the host has the module; see runtime::kernel).
#[test]
fn lsm_labels_are_refused_on_a_host_without_the_module() {
    let _serial = shared();
    if !testing_our_shim() {
        return;
    }
    if Path::new("/sys/kernel/security/apparmor").exists() || Path::new("/sys/fs/selinux").exists()
    {
        eprintln!("this host has AppArmor or SELinux: the refusal cannot be tested here");
        return;
    }
    let id = unique_id("apparmor");
    let (_, err, code) = run_clean_with(
        &runtime(),
        &id,
        &["--apparmor-profile", "my-profile"],
        &["true"],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("process.apparmorProfile: AppArmor is not enabled on this host"),
        "{err}"
    );
    let id = unique_id("selinux");
    let s = Scratch::new(&id);
    let root = busybox_rootfs(&s.0);
    let mut spec = base_spec(&id, &root, &["true"]);
    spec["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0");
    let (_, err, code) = run_spec(&runtime(), &id, &spec, &s.0);
    assert_ne!(code, 0);
    assert!(
        err.contains("process.selinuxLabel: SELinux is not enabled on this host"),
        "{err}"
    );
}

// ------------------------------------------------- straight to the shim ---

/// Runs one container the way containerd does, but with a config.json written here: the
/// `start` action, then Create/Start/Wait/Delete/Shutdown over ttrpc. For the spec fields
/// containerd 1.6's client would drop. Returns stdout and the exit status, or the Create
/// error.
fn run_direct(id: &str, spec: &Value, dir: &Path) -> Result<(String, u32), String> {
    use shim::protos::{
        api::{CreateTaskRequest, DeleteRequest, ShutdownRequest, StartRequest, WaitRequest},
        shim::shim_ttrpc::TaskClient,
        ttrpc,
    };
    let e = env();
    let bundle = dir.join("bundle");
    fs::create_dir_all(&bundle).unwrap();
    fs::write(
        bundle.join("config.json"),
        serde_json::to_vec(spec).unwrap(),
    )
    .unwrap();
    let (stdout, stderr) = (bundle.join("stdout"), bundle.join("stderr"));
    fs::write(&stdout, "").unwrap();
    fs::write(&stderr, "").unwrap();

    let (out, timed_out) = run_with_timeout(
        Command::new(&e.shim_bin)
            .args([
                "-namespace",
                namespace(),
                "-id",
                id,
                "-address",
                &e.address,
                "start",
            ])
            .current_dir(&bundle)
            .env("TTRPC_ADDRESS", format!("{}.ttrpc", e.address)),
        Duration::from_secs(30),
    );
    assert!(!timed_out && out.status.success(), "shim start: {out:?}");
    let address = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let client = TaskClient::new(ttrpc::Client::connect(&address).expect("connect to the shim"));
    let ctx = || ttrpc::context::with_timeout(30_000_000_000);

    let created = client.create(
        ctx(),
        &CreateTaskRequest {
            id: id.into(),
            bundle: bundle.to_string_lossy().into_owned(),
            stdout: stdout.to_string_lossy().into_owned(),
            stderr: stderr.to_string_lossy().into_owned(),
            ..Default::default()
        },
    );
    let result = match created {
        Err(err) => Err(format!("{err:?}")),
        Ok(_) => {
            client
                .start(
                    ctx(),
                    &StartRequest {
                        id: id.into(),
                        ..Default::default()
                    },
                )
                .expect("Start");
            let waited = client
                .wait(
                    ctx(),
                    &WaitRequest {
                        id: id.into(),
                        ..Default::default()
                    },
                )
                .expect("Wait");
            client
                .delete(
                    ctx(),
                    &DeleteRequest {
                        id: id.into(),
                        ..Default::default()
                    },
                )
                .expect("Delete");
            Ok((fs::read_to_string(&stdout).unwrap(), waited.exit_status))
        }
    };
    let _ = client.shutdown(
        ctx(),
        &ShutdownRequest {
            id: id.into(),
            now: true,
            ..Default::default()
        },
    );
    // The daemon removes its socket on the way out.
    let sock = address.trim_start_matches("unix://").to_owned();
    assert!(
        wait_until(Duration::from_secs(10), || !Path::new(&sock).exists()),
        "shim socket {sock} left behind"
    );
    result
}

#[test]
fn scheduler_io_priority_and_cpu_affinity() {
    let _serial = shared();
    if !testing_our_shim() {
        return; // talks to our shim directly
    }
    let id = unique_id("sched");
    let s = Scratch::new(&id);
    let root = busybox_rootfs(&s.0);
    // The last online CPU, so the final affinity differs from the default on a multi-core host.
    let online = fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let last_cpu = online.trim().rsplit([',', '-']).next().unwrap().to_owned();
    let mut spec = base_spec(
        &id,
        &root,
        &[
            "sh",
            "-c",
            "cut -d' ' -f19,41 /proc/self/stat; ionice -p $$; grep Cpus_allowed_list /proc/self/status",
        ],
    );
    spec["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 7});
    spec["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_IDLE", "priority": 0});
    spec["process"]["execCPUAffinity"] = json!({"initial": "0", "final": last_cpu});
    let (out, status) = run_direct(&id, &spec, &s.0).expect("create");
    assert_eq!(status, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    // nice 7, policy 3 (SCHED_BATCH): inherited by the shell's children too.
    assert_eq!(lines[0], "7 3", "{out}");
    assert_eq!(lines[1], "idle", "{out}");
    assert_eq!(lines[2], format!("Cpus_allowed_list:\t{last_cpu}"), "{out}");
    assert_no_leftovers(&id);

    // Refused by name before anything runs.
    let id = unique_id("schedbad");
    let mut spec = base_spec(&id, &root, &["true"]);
    spec["process"]["scheduler"] = json!({"policy": "SCHED_OTHER", "priority": 5});
    let err = run_direct(&id, &spec, &s.0).unwrap_err();
    assert!(err.contains("process.scheduler.priority"), "{err}");
    assert_no_leftovers(&id);
}
