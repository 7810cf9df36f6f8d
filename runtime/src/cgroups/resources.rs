//! `linux.resources` -> the cgroup files to write, for v1, v2 and hybrid hosts. Pure: the
//! result is a list of writes, in the order they must happen.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};
use serde::{Deserialize, Serialize};

use super::{Hierarchy, Layout};
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupWrite {
    pub dir: PathBuf,
    pub file: String,
    pub value: String,
    /// The spec field this write comes from, for errors.
    pub field: String,
    /// Skip silently when the kernel lacks the file (only for writes that restate a default).
    pub optional: bool,
    /// `(file, value)` to write instead when the kernel lacks `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<(String, String)>,
}

/// Where a controller lives on this host, and so which file names to use.
enum Target {
    V1(PathBuf),
    V2(PathBuf),
}

/// The container's directory in a hierarchy.
pub type DirOf<'a> = &'a dyn Fn(&Hierarchy) -> PathBuf;

struct Planner<'a> {
    layout: &'a Layout,
    dir_of: DirOf<'a>,
    writes: Vec<CgroupWrite>,
}

impl Planner<'_> {
    fn target(&self, controller: &str, field: &str) -> Result<Target> {
        if let Some(h) = self.layout.v1(controller) {
            return Ok(Target::V1((self.dir_of)(h)));
        }
        if let Some(h) = self.layout.unified_with(controller) {
            return Ok(Target::V2((self.dir_of)(h)));
        }
        Err(Error::unsupported(
            field,
            format!("the {controller} cgroup controller is not available on this host"),
        ))
    }

    fn write(&mut self, dir: &Path, file: &str, value: impl ToString, field: &str) {
        self.writes.push(CgroupWrite {
            dir: dir.to_path_buf(),
            file: file.to_owned(),
            value: value.to_string(),
            field: field.to_owned(),
            optional: false,
            fallback: None,
        });
    }

    fn cpu(&mut self, c: &LinuxCpu) -> Result<()> {
        let f = "linux.resources.cpu";
        let wants_cpu = c.shares().is_some()
            || c.quota().is_some()
            || c.period().is_some()
            || c.burst().is_some()
            || c.realtime_period().is_some()
            || c.realtime_runtime().is_some()
            || c.idle().is_some();
        if wants_cpu {
            match self.target("cpu", f)? {
                Target::V1(dir) => {
                    if let Some(s) = c.shares().filter(|s| *s != 0) {
                        self.write(&dir, "cpu.shares", s, &format!("{f}.shares"));
                    }
                    if let Some(p) = c.period().filter(|p| *p != 0) {
                        self.write(&dir, "cpu.cfs_period_us", p, &format!("{f}.period"));
                    }
                    if let Some(q) = c.quota().filter(|q| *q != 0) {
                        self.write(&dir, "cpu.cfs_quota_us", q, &format!("{f}.quota"));
                    }
                    if let Some(b) = c.burst() {
                        self.write(&dir, "cpu.cfs_burst_us", b, &format!("{f}.burst"));
                    }
                    if let Some(p) = c.realtime_period().filter(|p| *p != 0) {
                        self.write(&dir, "cpu.rt_period_us", p, &format!("{f}.realtimePeriod"));
                    }
                    if let Some(r) = c.realtime_runtime().filter(|r| *r != 0) {
                        self.write(
                            &dir,
                            "cpu.rt_runtime_us",
                            r,
                            &format!("{f}.realtimeRuntime"),
                        );
                    }
                    if let Some(i) = c.idle() {
                        self.write(&dir, "cpu.idle", i, &format!("{f}.idle"));
                    }
                }
                Target::V2(dir) => {
                    if let Some(s) = c.shares().filter(|s| *s != 0) {
                        self.write(
                            &dir,
                            "cpu.weight",
                            shares_to_weight(s),
                            &format!("{f}.shares"),
                        );
                    }
                    if c.quota().is_some() || c.period().is_some() {
                        let quota = c
                            .quota()
                            .filter(|q| *q > 0)
                            .map_or("max".to_owned(), |q| q.to_string());
                        let period = c.period().filter(|p| *p != 0).unwrap_or(100_000);
                        self.write(
                            &dir,
                            "cpu.max",
                            format!("{quota} {period}"),
                            &format!("{f}.quota"),
                        );
                    }
                    if let Some(b) = c.burst() {
                        self.write(&dir, "cpu.max.burst", b, &format!("{f}.burst"));
                    }
                    if let Some(i) = c.idle() {
                        self.write(&dir, "cpu.idle", i, &format!("{f}.idle"));
                    }
                    if c.realtime_period().is_some() || c.realtime_runtime().is_some() {
                        return Err(Error::unsupported(
                            format!("{f}.realtimeRuntime"),
                            "realtime scheduling limits do not exist in cgroup v2",
                        ));
                    }
                }
            }
        }
        let cpus = c.cpus().clone().filter(|s| !s.is_empty());
        let mems = c.mems().clone().filter(|s| !s.is_empty());
        if cpus.is_some() || mems.is_some() {
            let dir = match self.target("cpuset", f)? {
                Target::V1(d) | Target::V2(d) => d,
            };
            if let Some(cpus) = cpus {
                self.write(&dir, "cpuset.cpus", cpus, &format!("{f}.cpus"));
            }
            if let Some(mems) = mems {
                self.write(&dir, "cpuset.mems", mems, &format!("{f}.mems"));
            }
        }
        Ok(())
    }

    fn memory(&mut self, m: &LinuxMemory) -> Result<()> {
        let f = "linux.resources.memory";
        if m.kernel().is_some() || m.kernel_tcp().is_some() {
            // Deprecated by the spec and ignored by runc too; kernel memory is always accounted.
            log::warn!("{f}.kernel/kernelTCP are deprecated and ignored");
        }
        let nothing = m.limit().is_none()
            && m.reservation().is_none()
            && m.swap().is_none()
            && m.swappiness().is_none()
            && m.disable_oom_killer().is_none();
        if nothing {
            return Ok(());
        }
        match self.target("memory", f)? {
            Target::V1(dir) => {
                if let Some(l) = m.limit() {
                    self.write(&dir, "memory.limit_in_bytes", l, &format!("{f}.limit"));
                }
                if let Some(s) = m.swap() {
                    self.write(&dir, "memory.memsw.limit_in_bytes", s, &format!("{f}.swap"));
                    // Without swap accounting, a swap limit equal to the memory limit means
                    // "no swap beyond the limit", which is all we can do anyway.
                    if m.limit() == Some(s) {
                        self.writes.last_mut().unwrap().optional = true;
                    }
                }
                if let Some(r) = m.reservation() {
                    self.write(
                        &dir,
                        "memory.soft_limit_in_bytes",
                        r,
                        &format!("{f}.reservation"),
                    );
                }
                if let Some(s) = m.swappiness() {
                    if s > 100 {
                        return Err(Error::invalid(
                            format!("{f}.swappiness"),
                            format!("{s} is above 100"),
                        ));
                    }
                    self.write(&dir, "memory.swappiness", s, &format!("{f}.swappiness"));
                }
                if m.disable_oom_killer() == Some(true) {
                    self.write(
                        &dir,
                        "memory.oom_control",
                        1,
                        &format!("{f}.disableOOMKiller"),
                    );
                }
            }
            Target::V2(dir) => {
                let max = |v: i64| {
                    if v < 0 {
                        "max".to_owned()
                    } else {
                        v.to_string()
                    }
                };
                if let Some(l) = m.limit() {
                    self.write(&dir, "memory.max", max(l), &format!("{f}.limit"));
                }
                if let Some(r) = m.reservation() {
                    self.write(&dir, "memory.low", max(r), &format!("{f}.reservation"));
                }
                if let Some(s) = m.swap() {
                    // v1 swap counts memory+swap; v2's swap.max counts swap alone.
                    let v = match m.limit() {
                        _ if s < 0 => "max".to_owned(),
                        Some(l) if l >= 0 => (s - l).max(0).to_string(),
                        _ => s.to_string(),
                    };
                    self.write(&dir, "memory.swap.max", v, &format!("{f}.swap"));
                } else if m.limit() == Some(-1) {
                    // Unlimited memory without a swap value means unlimited swap too, as on v1
                    // (and in runc); a kernel without swap accounting has no file to write.
                    self.write(&dir, "memory.swap.max", "max", &format!("{f}.limit"));
                    self.writes.last_mut().unwrap().optional = true;
                }
                if m.swappiness().is_some() {
                    return Err(Error::unsupported(
                        format!("{f}.swappiness"),
                        "not available in cgroup v2",
                    ));
                }
                if m.disable_oom_killer() == Some(true) {
                    return Err(Error::unsupported(
                        format!("{f}.disableOOMKiller"),
                        "not available in cgroup v2",
                    ));
                }
            }
        }
        Ok(())
    }

    fn block_io(&mut self, b: &LinuxBlockIo) -> Result<()> {
        let f = "linux.resources.blockIO";
        let throttles = [
            (
                b.throttle_read_bps_device(),
                "blkio.throttle.read_bps_device",
                "rbps",
                "throttleReadBpsDevice",
            ),
            (
                b.throttle_write_bps_device(),
                "blkio.throttle.write_bps_device",
                "wbps",
                "throttleWriteBpsDevice",
            ),
            (
                b.throttle_read_iops_device(),
                "blkio.throttle.read_iops_device",
                "riops",
                "throttleReadIOPSDevice",
            ),
            (
                b.throttle_write_iops_device(),
                "blkio.throttle.write_iops_device",
                "wiops",
                "throttleWriteIOPSDevice",
            ),
        ];
        let anything = b.weight().is_some()
            || b.leaf_weight().is_some()
            || b.weight_device().as_ref().is_some_and(|v| !v.is_empty())
            || throttles
                .iter()
                .any(|t| t.0.as_ref().is_some_and(|v| !v.is_empty()));
        if !anything {
            return Ok(());
        }
        let (v1, dir) = match self.target("blkio", f).or_else(|_| self.target("io", f))? {
            Target::V1(d) => (true, d),
            Target::V2(d) => (false, d),
        };
        if let Some(w) = b.weight() {
            if v1 {
                // Kernels without CFQ only have the BFQ file.
                let file = if self.layout.v1_has_file("blkio", "blkio.weight") {
                    "blkio.weight"
                } else {
                    "blkio.bfq.weight"
                };
                self.write(&dir, file, w, &format!("{f}.weight"));
            } else {
                // As runc: BFQ's weight takes the blkio value where the BFQ scheduler is
                // loaded; without it, io.weight (blk-iocost) on its own 1..10000 scale.
                self.write(&dir, "io.bfq.weight", w, &format!("{f}.weight"));
                self.writes.last_mut().unwrap().fallback =
                    Some(("io.weight".into(), blkio_to_io_weight(w).to_string()));
            }
        }
        if let Some(w) = b.leaf_weight() {
            if !v1 {
                return Err(Error::unsupported(
                    format!("{f}.leafWeight"),
                    "not available in cgroup v2",
                ));
            }
            self.write(&dir, "blkio.leaf_weight", w, &format!("{f}.leafWeight"));
        }
        for (i, d) in b.weight_device().iter().flatten().enumerate() {
            let Some(w) = d.weight() else { continue };
            let file = if v1 {
                "blkio.weight_device"
            } else {
                "io.bfq.weight"
            };
            self.write(
                &dir,
                file,
                format!("{}:{} {w}", d.major(), d.minor()),
                &format!("{f}.weightDevice[{i}]"),
            );
        }
        for (list, v1_file, v2_key, name) in throttles {
            for (i, d) in list.iter().flatten().enumerate() {
                let field = format!("{f}.{name}[{i}]");
                if v1 {
                    self.write(
                        &dir,
                        v1_file,
                        format!("{}:{} {}", d.major(), d.minor(), d.rate()),
                        &field,
                    );
                } else {
                    self.write(
                        &dir,
                        "io.max",
                        format!("{}:{} {v2_key}={}", d.major(), d.minor(), d.rate()),
                        &field,
                    );
                }
            }
        }
        Ok(())
    }

    fn plan(&mut self, r: &LinuxResources) -> Result<()> {
        let f = "linux.resources";
        if let Some(c) = r.cpu() {
            self.cpu(c)?;
        }
        if let Some(m) = r.memory() {
            self.memory(m)?;
        }
        if let Some(p) = r.pids() {
            let dir = match self.target("pids", &format!("{f}.pids"))? {
                Target::V1(d) | Target::V2(d) => d,
            };
            let v = if p.limit() <= 0 {
                "max".to_owned()
            } else {
                p.limit().to_string()
            };
            self.write(&dir, "pids.max", v, &format!("{f}.pids.limit"));
        }
        if let Some(b) = r.block_io() {
            self.block_io(b)?;
        }
        for (i, h) in r.hugepage_limits().iter().flatten().enumerate() {
            let field = format!("{f}.hugepageLimits[{i}]");
            let size = h.page_size();
            if size.is_empty() || size.contains('/') {
                return Err(Error::invalid(field, format!("bad pageSize {size:?}")));
            }
            match self.target("hugetlb", &field)? {
                Target::V1(d) => self.write(
                    &d,
                    &format!("hugetlb.{size}.limit_in_bytes"),
                    h.limit(),
                    &field,
                ),
                Target::V2(d) => self.write(&d, &format!("hugetlb.{size}.max"), h.limit(), &field),
            }
        }
        if let Some(n) = r.network() {
            if let Some(id) = n.class_id() {
                match self.target("net_cls", &format!("{f}.network.classID"))? {
                    Target::V1(d) => {
                        self.write(&d, "net_cls.classid", id, &format!("{f}.network.classID"))
                    }
                    Target::V2(_) => unreachable!("net_cls is v1 only"),
                }
            }
            for (i, p) in n.priorities().iter().flatten().enumerate() {
                let field = format!("{f}.network.priorities[{i}]");
                match self.target("net_prio", &field)? {
                    Target::V1(d) => self.write(
                        &d,
                        "net_prio.ifpriomap",
                        format!("{} {}", p.name(), p.priority()),
                        &field,
                    ),
                    Target::V2(_) => unreachable!("net_prio is v1 only"),
                }
            }
        }
        if r.rdma().as_ref().is_some_and(|v| !v.is_empty()) {
            return Err(Error::unsupported(
                format!("{f}.rdma"),
                "rdma limits are not implemented",
            ));
        }
        let mut unified: Vec<_> = r.unified().iter().flatten().collect();
        unified.sort();
        for (key, value) in unified {
            let field = format!("{f}.unified.{key}");
            if key.contains('/') || key.starts_with('.') || !key.contains('.') {
                return Err(Error::invalid(field, "not a cgroup v2 file name"));
            }
            if key.starts_with("cgroup.") && !UNIFIED_CORE_LIMITS.contains(&key.as_str()) {
                // cgroup.procs or cgroup.threads would move any process of the host into
                // the container's cgroup (where its teardown kills it); subtree_control,
                // type, freeze or kill act on the hierarchy and the container's life.
                return Err(Error::invalid(
                    field,
                    format!(
                        "{key} is a cgroup core file the runtime manages; of those, only {} \
                         may be set",
                        UNIFIED_CORE_LIMITS.join(", ")
                    ),
                ));
            }
            let controller = key.split('.').next().unwrap_or_default();
            let Some(h) = self.layout.hierarchies.iter().find(|h| {
                h.unified
                    && (controller == "cgroup" || h.controllers.iter().any(|c| c == controller))
            }) else {
                return Err(Error::unsupported(
                    field,
                    "this host's cgroup v2 hierarchy lacks that controller",
                ));
            };
            let dir = (self.dir_of)(h);
            self.write(&dir, key, value, &field);
        }
        Ok(())
    }
}

/// The cgroup core files (`cgroup.*`) that `unified` may set: limits on the container's own
/// subtree, nothing that moves processes or changes the hierarchy.
const UNIFIED_CORE_LIMITS: [&str; 3] = [
    "cgroup.max.depth",
    "cgroup.max.descendants",
    "cgroup.pressure",
];

/// runc's mapping of cpu.shares (2..262144) onto cpu.weight (1..10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// runc's mapping of a blkio weight (10..1000) onto io.weight (1..10000).
pub fn blkio_to_io_weight(weight: u16) -> u64 {
    if weight == 0 {
        return 0;
    }
    1 + u64::from(weight.saturating_sub(10)) * 9999 / 990
}

pub fn plan_resources(
    r: &LinuxResources,
    layout: &Layout,
    dir_of: DirOf<'_>,
) -> Result<Vec<CgroupWrite>> {
    let mut p = Planner {
        layout,
        dir_of,
        writes: Vec::new(),
    };
    p.plan(r)?;
    Ok(p.writes)
}
