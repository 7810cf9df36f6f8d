//! A container's cgroup as the tests look at it, whatever the host's layout: the v1
//! hierarchies (pure v1, or this project's hybrid test machine, whose cgroup2 mount at
//! /sys/fs/cgroup/unified holds only hugetlb) or the single cgroup2 tree of a v2-only host
//! (tests/vm). A test states a fact once ([`Fact`]); [`Cgroup::assert`] reads it from the
//! file the host keeps it in, with the value that file shows for it.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const ROOT: &str = "/sys/fs/cgroup";

/// True when /sys/fs/cgroup is a cgroup2 mount (a v2-only host).
pub fn v2_only() -> bool {
    static V2: OnceLock<bool> = OnceLock::new();
    *V2.get_or_init(|| {
        let path = std::ffi::CString::new(ROOT).unwrap();
        // SAFETY: a zeroed statfs is a valid out-parameter; the path is NUL-terminated.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::statfs(path.as_ptr(), &mut st) };
        r == 0 && st.f_type == libc::CGROUP2_SUPER_MAGIC
    })
}

/// The layout's name, for messages.
pub fn layout_name() -> &'static str {
    if v2_only() {
        "cgroup v2"
    } else if Path::new(ROOT).join("unified").is_dir() {
        "cgroup v1 (hybrid)"
    } else {
        "cgroup v1"
    }
}

/// The hybrid layout's cgroup2 mount (None on v2-only and pure v1 hosts).
pub fn hybrid_unified_root() -> Option<PathBuf> {
    let p = Path::new(ROOT).join("unified");
    (!v2_only() && p.join("cgroup.controllers").exists()).then_some(p)
}

fn page_floor(v: i64) -> i64 {
    v / 4096 * 4096
}

/// The largest v1 memory limit ("unlimited"), as the kernel shows it with 4 KiB pages.
const V1_UNLIMITED: &str = "9223372036854771712";

/// A fact about a container's cgroup, in the terms of the OCI spec's `linux.resources`.
#[derive(Debug, Clone)]
pub enum Fact<'a> {
    /// `memory.limit` (-1: none).
    MemoryLimit(i64),
    /// `memory.swap`: memory plus swap, with `memory.limit` beside it (-1: none).
    MemorySwap { limit: i64, swap: i64 },
    /// `memory.reservation`.
    MemoryReservation(i64),
    /// `cpu.shares` (cgroup v2 maps them onto cpu.weight, as runc does).
    CpuShares(u64),
    /// `cpu.quota` (-1: none) per `cpu.period`.
    CpuQuota { quota: i64, period: u64 },
    /// `cpu.cpus`.
    Cpus(&'a str),
    /// `cpu.mems`.
    Mems(&'a str),
    /// `pids.limit` (0 or -1: none).
    PidsLimit(i64),
    /// `hugepageLimits[]`: page size as the kernel names it ("2MB") and the limit.
    Hugetlb { page_size: &'a str, limit: u64 },
    /// `blockIO.weight`.
    IoWeight(u16),
    /// `blockIO.throttle*Device` of one device; None: no limit.
    IoMax {
        major: u32,
        minor: u32,
        rbps: Option<u64>,
        wbps: Option<u64>,
        riops: Option<u64>,
        wiops: Option<u64>,
    },
    /// Paused (frozen) or not.
    Frozen(bool),
}

/// What a file must show.
#[derive(Debug)]
enum Want {
    /// The whole file (trimmed).
    Is(String),
    /// One of its lines (trimmed).
    HasLine(String),
}

/// runc's cpu.shares -> cpu.weight mapping.
pub fn shares_to_weight(shares: u64) -> u64 {
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// runc's blkio.weight (10..1000) -> io.weight (1..10000) mapping, used when the host has no
/// BFQ (io.bfq.weight takes the blkio value as it is).
pub fn blkio_to_io_weight(weight: u16) -> u64 {
    1 + (u64::from(weight).saturating_sub(10)) * 9999 / 990
}

/// A container's cgroup: its path below every hierarchy's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    rel: PathBuf,
}

impl Cgroup {
    /// The cgroup at `cgroups_path` (a cgroupfs `linux.cgroupsPath`, absolute or relative).
    pub fn at(cgroups_path: &str) -> Cgroup {
        Cgroup {
            rel: PathBuf::from(cgroups_path.trim_start_matches('/')),
        }
    }

    /// The cgroup `ctr` gives container `id`: /<namespace>/<id>.
    pub fn of_container(id: &str) -> Cgroup {
        Cgroup::at(&format!("/{}/{id}", super::namespace()))
    }

    /// The cgroup process `pid` is in (on v1, in the memory hierarchy), as seen from here.
    pub fn of_process(pid: i32) -> Cgroup {
        Cgroup::at(&process_cgroup(pid, "memory"))
    }

    /// The path below the roots, with a leading '/', as /proc/PID/cgroup shows it.
    pub fn path(&self) -> String {
        format!("/{}", self.rel.display())
    }

    /// The directory holding the files of v1 controller `controller`; on a v2-only host the
    /// one directory of the cgroup. Hybrid hosts keep hugetlb in the cgroup2 mount.
    pub fn dir(&self, controller: &str) -> PathBuf {
        if v2_only() {
            return Path::new(ROOT).join(&self.rel);
        }
        let v1 = Path::new(ROOT).join(controller);
        match hybrid_unified_root() {
            Some(u) if !v1.exists() && controller == "hugetlb" => u.join(&self.rel),
            _ => v1.join(&self.rel),
        }
    }

    /// The cgroup's directory in the cgroup2 hierarchy, if the host has one.
    pub fn unified_dir(&self) -> Option<PathBuf> {
        if v2_only() {
            Some(Path::new(ROOT).join(&self.rel))
        } else {
            hybrid_unified_root().map(|u| u.join(&self.rel))
        }
    }

    /// Every directory of this cgroup that exists, in any hierarchy.
    pub fn existing_dirs(&self) -> Vec<PathBuf> {
        if v2_only() {
            let d = Path::new(ROOT).join(&self.rel);
            return if d.exists() { vec![d] } else { Vec::new() };
        }
        let mut found = Vec::new();
        if let Ok(rd) = fs::read_dir(ROOT) {
            for h in rd.flatten() {
                let d = h.path().join(&self.rel);
                if d.exists() {
                    found.push(d);
                }
            }
        }
        found.sort();
        found
    }

    /// Removes the cgroup's (empty) directory in every hierarchy, as kubelet removes a pod's
    /// cgroup parent; fails if one is not empty.
    pub fn remove(&self) -> Result<(), String> {
        for d in self.existing_dirs() {
            fs::remove_dir(&d).map_err(|e| format!("rmdir {}: {e}", d.display()))?;
        }
        Ok(())
    }

    /// A file of the cgroup (trimmed), or a panic naming it.
    pub fn read(&self, controller: &str, file: &str) -> String {
        let p = self.dir(controller).join(file);
        fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: read {}: {e}", layout_name(), p.display()))
            .trim()
            .to_string()
    }

    /// The processes in the cgroup (in the memory hierarchy on v1).
    pub fn procs(&self) -> Vec<i32> {
        self.read("memory", "cgroup.procs")
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// `pids.current`.
    pub fn pids_current(&self) -> u64 {
        self.read("pids", "pids.current").parse().unwrap_or(0)
    }

    /// The files that show `fact`, and what each must show, on this host's layout.
    fn expected(&self, fact: &Fact) -> Vec<(PathBuf, Want)> {
        let v2 = v2_only();
        let is = |s: String| Want::Is(s);
        let mem = |v: i64, v1_none: &str| {
            if v < 0 {
                if v2 {
                    "max".to_string()
                } else {
                    v1_none.to_string()
                }
            } else {
                page_floor(v).to_string()
            }
        };
        match fact {
            Fact::MemoryLimit(l) => {
                let f = if v2 {
                    "memory.max"
                } else {
                    "memory.limit_in_bytes"
                };
                vec![(self.dir("memory").join(f), is(mem(*l, V1_UNLIMITED)))]
            }
            Fact::MemorySwap { limit, swap } => {
                if v2 {
                    // cgroup v2 limits swap alone; the spec's value counts memory + swap.
                    let v = if *swap < 0 {
                        "max".to_string()
                    } else {
                        page_floor((swap - limit.max(&0)).max(0)).to_string()
                    };
                    vec![(self.dir("memory").join("memory.swap.max"), is(v))]
                } else {
                    vec![(
                        self.dir("memory").join("memory.memsw.limit_in_bytes"),
                        is(mem(*swap, V1_UNLIMITED)),
                    )]
                }
            }
            Fact::MemoryReservation(r) => {
                let f = if v2 {
                    "memory.low"
                } else {
                    "memory.soft_limit_in_bytes"
                };
                vec![(self.dir("memory").join(f), is(mem(*r, V1_UNLIMITED)))]
            }
            Fact::CpuShares(s) => {
                if v2 {
                    let w = shares_to_weight(*s).to_string();
                    vec![(self.dir("cpu").join("cpu.weight"), is(w))]
                } else {
                    vec![(self.dir("cpu").join("cpu.shares"), is(s.to_string()))]
                }
            }
            Fact::CpuQuota { quota, period } => {
                if v2 {
                    let q = if *quota < 0 {
                        "max".to_string()
                    } else {
                        quota.to_string()
                    };
                    vec![(self.dir("cpu").join("cpu.max"), is(format!("{q} {period}")))]
                } else {
                    vec![
                        (
                            self.dir("cpu").join("cpu.cfs_quota_us"),
                            is(quota.max(&-1).to_string()),
                        ),
                        (
                            self.dir("cpu").join("cpu.cfs_period_us"),
                            is(period.to_string()),
                        ),
                    ]
                }
            }
            Fact::Cpus(c) => vec![(self.dir("cpuset").join("cpuset.cpus"), is(c.to_string()))],
            Fact::Mems(m) => vec![(self.dir("cpuset").join("cpuset.mems"), is(m.to_string()))],
            Fact::PidsLimit(n) => {
                let v = if *n <= 0 {
                    "max".to_string()
                } else {
                    n.to_string()
                };
                vec![(self.dir("pids").join("pids.max"), is(v))]
            }
            Fact::Hugetlb { page_size, limit } => {
                let dir = self.dir("hugetlb");
                let f = if dir.join(format!("hugetlb.{page_size}.max")).exists() {
                    format!("hugetlb.{page_size}.max")
                } else {
                    format!("hugetlb.{page_size}.limit_in_bytes")
                };
                vec![(dir.join(f), is(limit.to_string()))]
            }
            Fact::IoWeight(w) => {
                let dir = self.dir("blkio");
                // BFQ's file takes the blkio value as is; io.weight a converted one.
                let bfq = if v2 {
                    "io.bfq.weight"
                } else {
                    "blkio.bfq.weight"
                };
                if v2 && dir.join(bfq).exists() {
                    vec![(dir.join(bfq), Want::HasLine(format!("default {w}")))]
                } else if v2 {
                    let v = blkio_to_io_weight(*w);
                    vec![(dir.join("io.weight"), Want::HasLine(format!("default {v}")))]
                } else if dir.join(bfq).exists() {
                    vec![(dir.join(bfq), is(w.to_string()))]
                } else {
                    vec![(dir.join("blkio.weight"), is(w.to_string()))]
                }
            }
            Fact::IoMax {
                major,
                minor,
                rbps,
                wbps,
                riops,
                wiops,
            } => {
                let dir = self.dir("blkio");
                let dev = format!("{major}:{minor}");
                if v2 {
                    let f = |v: &Option<u64>| v.map_or("max".to_string(), |v| v.to_string());
                    let line = format!(
                        "{dev} rbps={} wbps={} riops={} wiops={}",
                        f(rbps),
                        f(wbps),
                        f(riops),
                        f(wiops)
                    );
                    vec![(dir.join("io.max"), Want::HasLine(line))]
                } else {
                    [
                        ("read_bps_device", rbps),
                        ("write_bps_device", wbps),
                        ("read_iops_device", riops),
                        ("write_iops_device", wiops),
                    ]
                    .into_iter()
                    .filter_map(|(f, v)| {
                        let v = (*v)?;
                        Some((
                            dir.join(format!("blkio.throttle.{f}")),
                            Want::HasLine(format!("{dev} {v}")),
                        ))
                    })
                    .collect()
                }
            }
            Fact::Frozen(frozen) => {
                if v2 {
                    let dir = self.dir("freezer");
                    let n = u8::from(*frozen);
                    vec![
                        (dir.join("cgroup.freeze"), is(n.to_string())),
                        (
                            dir.join("cgroup.events"),
                            Want::HasLine(format!("frozen {n}")),
                        ),
                    ]
                } else {
                    let s = if *frozen { "FROZEN" } else { "THAWED" };
                    vec![(self.dir("freezer").join("freezer.state"), is(s.into()))]
                }
            }
        }
    }

    /// Where `fact` would be checked, for messages.
    pub fn files_of(&self, fact: &Fact) -> Vec<PathBuf> {
        self.expected(fact).into_iter().map(|(p, _)| p).collect()
    }

    /// None when the cgroup shows `fact`; else what differs.
    pub fn check(&self, fact: &Fact) -> Option<String> {
        let mut bad = Vec::new();
        for (path, want) in self.expected(fact) {
            let got = match fs::read_to_string(&path) {
                Ok(s) => s.trim().to_string(),
                Err(e) => {
                    bad.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            let ok = match &want {
                Want::Is(v) => got == *v,
                Want::HasLine(l) => got.lines().any(|g| g.trim() == l),
            };
            if !ok {
                bad.push(format!("{}: {got:?}, want {want:?}", path.display()));
            }
        }
        (!bad.is_empty()).then(|| format!("{}: {fact:?}: {}", layout_name(), bad.join("; ")))
    }

    /// Asserts that the cgroup shows `fact`.
    #[track_caller]
    pub fn assert(&self, fact: Fact) {
        if let Some(msg) = self.check(&fact) {
            panic!("{msg}");
        }
    }
}

/// The cgroup of `pid` (v1: in the hierarchy of `controller`; v2: the one line "0::PATH").
pub fn process_cgroup(pid: i32, controller: &str) -> String {
    let cg = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/cgroup: {e}"));
    parse_proc_cgroup(&cg, controller)
        .unwrap_or_else(|| panic!("{}: no {controller} cgroup for {pid}: {cg}", layout_name()))
}

/// The path of `controller`'s line in a /proc/PID/cgroup text (v2: the "0::" line).
pub fn parse_proc_cgroup(text: &str, controller: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (id, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        let hit = if v2_only() {
            id == "0" && ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == controller)
        };
        hit.then(|| path.to_string())
    })
}

/// A block device of this machine (major, minor), for I/O limits: the first disk with a
/// device behind it (not loop, ram or zram). The test VM has a virtio disk for this.
pub fn a_block_device() -> Option<(u32, u32)> {
    let mut disks: Vec<_> = fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .filter(|e| e.path().join("device").exists())
        .map(|e| e.path())
        .collect();
    disks.sort();
    let dev = fs::read_to_string(disks.first()?.join("dev")).ok()?;
    let (maj, min) = dev.trim().split_once(':')?;
    Some((maj.parse().ok()?, min.parse().ok()?))
}

impl Cgroup {
    /// The device allowlist as the kernel holds it for this cgroup: on v1 the devices
    /// controller's `devices.list`; on v2 the ids of the eBPF device programs attached to the
    /// cgroup (`BPF_PROG_QUERY`), which change whenever a program is replaced.
    pub fn device_policy(&self) -> String {
        if !v2_only() {
            return self.read("devices", "devices.list");
        }
        let dir = self.dir("devices");
        let f = fs::File::open(&dir).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()));
        let ids = bpf_device_programs(&f).unwrap_or_else(|e| {
            panic!("BPF_PROG_QUERY on {}: {e}", dir.display());
        });
        format!("eBPF device programs {ids:?}")
    }
}

/// The ids of the BPF_CGROUP_DEVICE programs attached to the cgroup open as `dir`.
fn bpf_device_programs(dir: &fs::File) -> std::io::Result<Vec<u32>> {
    use std::os::fd::AsRawFd;
    const BPF_PROG_QUERY: libc::c_long = 16;
    const BPF_CGROUP_DEVICE: u32 = 6;
    let mut ids = [0u32; 64];
    // union bpf_attr, the BPF_PROG_QUERY member: target_fd, attach_type, query_flags,
    // attach_flags (u32 each), prog_ids (u64 pointer), prog_cnt (u32).
    let mut attr = [0u8; 32];
    attr[0..4].copy_from_slice(&(dir.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&BPF_CGROUP_DEVICE.to_ne_bytes());
    attr[16..24].copy_from_slice(&(ids.as_mut_ptr() as u64).to_ne_bytes());
    attr[24..28].copy_from_slice(&(ids.len() as u32).to_ne_bytes());
    // SAFETY: attr is a valid bpf_attr prefix of the size given; prog_ids points to `ids`,
    // which holds prog_cnt entries and outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            attr.as_mut_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let count = u32::from_ne_bytes(attr[24..28].try_into().unwrap()) as usize;
    Ok(ids[..count.min(ids.len())].to_vec())
}
