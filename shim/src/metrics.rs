//! Stats: the container's cgroup files -> `io.containerd.cgroups.v1.Metrics` on hosts with v1
//! controllers (including the hybrid layout, as containerd's runc shim does), or
//! `io.containerd.cgroups.v2.Metrics` on cgroup2-only hosts.

use std::{
    fs,
    path::{Path, PathBuf},
};

use containerd_shim_protos::{
    cgroups::metrics as v1,
    cgroups_v2::metrics as v2,
    protobuf::{
        reflect::ReflectValueBox, well_known_types::any::Any, Message, MessageField, MessageFull,
    },
};
use runtime::cgroups::{live, CgroupPlan, Layout};

use crate::error::{Error, Result};

pub const V1_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";
pub const V2_TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

/// The container's metrics, packed as containerd expects them.
pub fn collect(plan: &CgroupPlan, layout: &Layout) -> Result<Any> {
    let (type_url, value) = if live::is_unified_host(layout) {
        let dir = live::unified_dir(plan, layout)
            .ok_or_else(|| Error::Internal("the container has no cgroup".into()))?;
        (V2_TYPE_URL, v2_metrics(&dir)?.write_to_bytes())
    } else {
        let dirs = V1Dirs {
            dir: |c: &str| live::v1_dir(plan, layout, c),
            unified: live::unified_dir(plan, layout),
        };
        (V1_TYPE_URL, v1_metrics(&dirs)?.write_to_bytes())
    };
    Ok(Any {
        type_url: type_url.into(),
        value: value.map_err(|e| Error::Internal(format!("encode metrics: {e}")))?,
        ..Default::default()
    })
}

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// A number file; "max" (no limit) reads as `max_value`.
fn read_u64(path: &Path, max_value: u64) -> u64 {
    match read(path).as_deref().map(str::trim) {
        Some("max") => max_value,
        Some(v) => v.parse().unwrap_or(0),
        None => 0,
    }
}

/// `key value` lines (memory.stat, cpu.stat, memory.events, ...).
fn key_values(text: &str) -> impl Iterator<Item = (&str, u64)> {
    text.lines().filter_map(|l| {
        let (k, v) = l.split_once(' ')?;
        Some((k, v.trim().parse().ok()?))
    })
}

/// Sets every u64 field of `msg` named like a key of `text` (after `rename`).
fn fill_by_name<M: MessageFull>(msg: &mut M, text: &str, rename: impl Fn(&str) -> &str) {
    let d = M::descriptor();
    for (k, v) in key_values(text) {
        if let Some(f) = d.field_by_name(rename(k)) {
            if f.proto().type_()
                == containerd_shim_protos::protobuf::descriptor::field_descriptor_proto::Type::TYPE_UINT64
                && !f.is_repeated()
            {
                f.set_singular_field(msg, ReflectValueBox::U64(v));
            }
        }
    }
}

/// Page sizes with files of the form `hugetlb.<size>.<suffix>` in `dir`.
fn hugepage_sizes(dir: &Path, suffix: &str) -> Vec<String> {
    let mut sizes: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let size = name.strip_prefix("hugetlb.")?.strip_suffix(suffix)?;
            (!size.contains('.')).then(|| size.to_owned())
        })
        .collect();
    sizes.sort();
    sizes
}

struct V1Dirs<F: Fn(&str) -> Option<PathBuf>> {
    dir: F,
    /// On a hybrid host: the cgroup2 directory (hugetlb lives there).
    unified: Option<PathBuf>,
}

/// Clock ticks of cpuacct.stat -> nanoseconds (USER_HZ is 100 on Linux).
const NANOS_PER_TICK: u64 = 1_000_000_000 / 100;

fn v1_metrics<F: Fn(&str) -> Option<PathBuf>>(dirs: &V1Dirs<F>) -> Result<v1::Metrics> {
    let mut m = v1::Metrics::new();
    if let Some(d) = (dirs.dir)("pids") {
        m.pids = MessageField::some(v1::PidsStat {
            current: read_u64(&d.join("pids.current"), 0),
            limit: read_u64(&d.join("pids.max"), 0),
            ..Default::default()
        });
    }
    let mut cpu = v1::CPUStat::new();
    if let Some(d) = (dirs.dir)("cpuacct") {
        let mut usage = v1::CPUUsage {
            total: read_u64(&d.join("cpuacct.usage"), 0),
            per_cpu: read(&d.join("cpuacct.usage_percpu"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect(),
            ..Default::default()
        };
        for (k, v) in key_values(&read(&d.join("cpuacct.stat")).unwrap_or_default()) {
            match k {
                "user" => usage.user = v * NANOS_PER_TICK,
                "system" => usage.kernel = v * NANOS_PER_TICK,
                _ => {}
            }
        }
        cpu.usage = MessageField::some(usage);
    }
    if let Some(d) = (dirs.dir)("cpu") {
        let mut t = v1::Throttle::new();
        for (k, v) in key_values(&read(&d.join("cpu.stat")).unwrap_or_default()) {
            match k {
                "nr_periods" => t.periods = v,
                "nr_throttled" => t.throttled_periods = v,
                "throttled_time" => t.throttled_time = v,
                _ => {}
            }
        }
        cpu.throttling = MessageField::some(t);
    }
    m.cpu = MessageField::some(cpu);
    if let Some(d) = (dirs.dir)("memory") {
        let mut mem = v1::MemoryStat::new();
        fill_by_name(
            &mut mem,
            &read(&d.join("memory.stat")).unwrap_or_default(),
            |k| match k {
                "pgpgin" => "pg_pg_in",
                "pgpgout" => "pg_pg_out",
                "pgfault" => "pg_fault",
                "pgmajfault" => "pg_maj_fault",
                "hierarchical_memsw_limit" => "hierarchical_swap_limit",
                "total_pgpgin" => "total_pg_pg_in",
                "total_pgpgout" => "total_pg_pg_out",
                "total_pgfault" => "total_pg_fault",
                "total_pgmajfault" => "total_pg_maj_fault",
                k => k,
            },
        );
        let entry = |prefix: &str| {
            let f = |n: &str| read_u64(&d.join(format!("{prefix}.{n}")), 0);
            MessageField::some(v1::MemoryEntry {
                limit: f("limit_in_bytes"),
                usage: f("usage_in_bytes"),
                max: f("max_usage_in_bytes"),
                failcnt: f("failcnt"),
                ..Default::default()
            })
        };
        mem.usage = entry("memory");
        mem.swap = entry("memory.memsw");
        mem.kernel = entry("memory.kmem");
        mem.kernel_tcp = entry("memory.kmem.tcp");
        m.memory = MessageField::some(mem);
        let mut oom = v1::MemoryOomControl::new();
        fill_by_name(
            &mut oom,
            &read(&d.join("memory.oom_control")).unwrap_or_default(),
            |k| k,
        );
        m.memory_oom_control = MessageField::some(oom);
    }
    if let Some(d) = (dirs.dir)("blkio") {
        m.blkio = MessageField::some(v1_blkio(&d));
    }
    if let Some(d) = (dirs.dir)("hugetlb") {
        for size in hugepage_sizes(&d, ".usage_in_bytes") {
            let f = |n: &str| read_u64(&d.join(format!("hugetlb.{size}.{n}")), 0);
            m.hugetlb.push(v1::HugetlbStat {
                usage: f("usage_in_bytes"),
                max: f("max_usage_in_bytes"),
                failcnt: f("failcnt"),
                pagesize: size.clone(),
                ..Default::default()
            });
        }
    } else if let Some(d) = dirs.unified.as_ref() {
        // Hybrid host: hugetlb is only in cgroup2, which has no high-water mark.
        for size in hugepage_sizes(d, ".current") {
            let events = read(&d.join(format!("hugetlb.{size}.events"))).unwrap_or_default();
            m.hugetlb.push(v1::HugetlbStat {
                usage: read_u64(&d.join(format!("hugetlb.{size}.current")), 0),
                failcnt: key_values(&events)
                    .find(|(k, _)| *k == "max")
                    .map_or(0, |(_, v)| v),
                pagesize: size.clone(),
                ..Default::default()
            });
        }
    }
    Ok(m)
}

/// blkio `MAJ:MIN Op value` files; CFQ's files when they have data, else the throttle ones.
fn v1_blkio(d: &Path) -> v1::BlkIOStat {
    let entries = |file: &str| -> Vec<v1::BlkIOEntry> {
        read(&d.join(file))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let (dev, op, v) = match f.as_slice() {
                    [dev, op, v] => (*dev, *op, *v),
                    [dev, v] if dev.contains(':') => (*dev, "", *v),
                    _ => return None,
                };
                let (major, minor) = dev.split_once(':')?;
                Some(v1::BlkIOEntry {
                    op: op.to_owned(),
                    major: major.parse().ok()?,
                    minor: minor.parse().ok()?,
                    value: v.parse().ok()?,
                    ..Default::default()
                })
            })
            .collect()
    };
    let mut s = v1::BlkIOStat::new();
    s.io_service_bytes_recursive = entries("blkio.io_service_bytes_recursive");
    if s.io_service_bytes_recursive.is_empty() {
        s.io_service_bytes_recursive = entries("blkio.throttle.io_service_bytes_recursive");
        s.io_serviced_recursive = entries("blkio.throttle.io_serviced_recursive");
        return s;
    }
    s.io_serviced_recursive = entries("blkio.io_serviced_recursive");
    s.io_queued_recursive = entries("blkio.io_queued_recursive");
    s.io_service_time_recursive = entries("blkio.io_service_time_recursive");
    s.io_wait_time_recursive = entries("blkio.io_wait_time_recursive");
    s.io_merged_recursive = entries("blkio.io_merged_recursive");
    s.io_time_recursive = entries("blkio.time_recursive");
    s.sectors_recursive = entries("blkio.sectors_recursive");
    s
}

fn v2_metrics(d: &Path) -> Result<v2::Metrics> {
    if !d.is_dir() {
        return Err(Error::NotFound(format!(
            "cgroup {} does not exist",
            d.display()
        )));
    }
    let mut m = v2::Metrics::new();
    // "max" reads as u64::MAX in every v2 limit, as containerd's cgroups library reports it
    // (its v1 pids reader says 0; see v1_metrics).
    m.pids = MessageField::some(v2::PidsStat {
        current: read_u64(&d.join("pids.current"), 0),
        limit: read_u64(&d.join("pids.max"), u64::MAX),
        ..Default::default()
    });
    let mut cpu = v2::CPUStat::new();
    fill_by_name(
        &mut cpu,
        &read(&d.join("cpu.stat")).unwrap_or_default(),
        |k| k,
    );
    m.cpu = MessageField::some(cpu);
    let mut mem = v2::MemoryStat::new();
    fill_by_name(
        &mut mem,
        &read(&d.join("memory.stat")).unwrap_or_default(),
        |k| k,
    );
    mem.usage = read_u64(&d.join("memory.current"), 0);
    mem.usage_limit = read_u64(&d.join("memory.max"), u64::MAX);
    mem.swap_usage = read_u64(&d.join("memory.swap.current"), 0);
    mem.swap_limit = read_u64(&d.join("memory.swap.max"), u64::MAX);
    mem.max_usage = read_u64(&d.join("memory.peak"), 0);
    mem.swap_max_usage = read_u64(&d.join("memory.swap.peak"), 0);
    m.memory = MessageField::some(mem);
    if let Some(events) = read(&d.join("memory.events")) {
        let mut e = v2::MemoryEvents::new();
        fill_by_name(&mut e, &events, |k| k);
        m.memory_events = MessageField::some(e);
    }
    let mut io = v2::IOStat::new();
    for line in read(&d.join("io.stat")).unwrap_or_default().lines() {
        let mut parts = line.split_whitespace();
        let Some((major, minor)) = parts.next().and_then(|dev| dev.split_once(':')) else {
            continue;
        };
        let mut e = v2::IOEntry {
            major: major.parse().unwrap_or(0),
            minor: minor.parse().unwrap_or(0),
            ..Default::default()
        };
        for kv in parts {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let v = v.parse().unwrap_or(0);
            match k {
                "rbytes" => e.rbytes = v,
                "wbytes" => e.wbytes = v,
                "rios" => e.rios = v,
                "wios" => e.wios = v,
                _ => {}
            }
        }
        io.usage.push(e);
    }
    m.io = MessageField::some(io);
    for size in hugepage_sizes(d, ".current") {
        let events = read(&d.join(format!("hugetlb.{size}.events"))).unwrap_or_default();
        m.hugetlb.push(v2::HugeTlbStat {
            current: read_u64(&d.join(format!("hugetlb.{size}.current")), 0),
            max: read_u64(&d.join(format!("hugetlb.{size}.max")), u64::MAX),
            failcnt: key_values(&events)
                .find(|(k, _)| *k == "max")
                .map_or(0, |(_, v)| v),
            pagesize: size.clone(),
            ..Default::default()
        });
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn tempdir(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("shimrs-metrics-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    #[test]
    fn v2_files_become_v2_metrics() {
        let t = tempdir("v2");
        let d = &t.0;
        for (f, v) in [
            ("pids.current", "3\n"),
            ("pids.max", "max\n"),
            (
                "cpu.stat",
                "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 7\nnr_throttled 2\nthrottled_usec 40\n",
            ),
            (
                "memory.stat",
                "anon 4096\nfile 8192\nkernel_stack 16384\npgfault 12\nunknown_key 5\n",
            ),
            ("memory.current", "123456\n"),
            ("memory.max", "20000000\n"),
            ("memory.swap.current", "0\n"),
            ("memory.swap.max", "max\n"),
            ("memory.peak", "200000\n"),
            (
                "memory.events",
                "low 0\nhigh 1\nmax 4\noom 2\noom_kill 1\noom_group_kill 0\n",
            ),
            (
                "io.stat",
                "8:0 rbytes=100 wbytes=200 rios=3 wios=4 dbytes=0 dios=0\n",
            ),
            ("hugetlb.2MB.current", "0\n"),
            ("hugetlb.2MB.max", "4194304\n"),
            ("hugetlb.2MB.events", "max 6\n"),
        ] {
            fs::write(d.join(f), v).unwrap();
        }
        let m = v2_metrics(d).unwrap();
        assert_eq!((m.pids.current, m.pids.limit), (3, u64::MAX));
        assert_eq!(
            (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec),
            (1500, 1000, 500)
        );
        assert_eq!(
            (m.cpu.nr_periods, m.cpu.nr_throttled, m.cpu.throttled_usec),
            (7, 2, 40)
        );
        let mem = &m.memory;
        assert_eq!(
            (mem.anon, mem.file, mem.kernel_stack, mem.pgfault),
            (4096, 8192, 16384, 12)
        );
        assert_eq!(
            (mem.usage, mem.usage_limit, mem.max_usage),
            (123456, 20000000, 200000)
        );
        assert_eq!((mem.swap_usage, mem.swap_limit), (0, u64::MAX));
        let ev = &m.memory_events;
        assert_eq!((ev.high, ev.max, ev.oom, ev.oom_kill), (1, 4, 2, 1));
        assert_eq!(m.io.usage.len(), 1);
        let io = &m.io.usage[0];
        assert_eq!(
            (io.major, io.minor, io.rbytes, io.wbytes, io.rios, io.wios),
            (8, 0, 100, 200, 3, 4)
        );
        assert_eq!(m.hugetlb.len(), 1);
        assert_eq!(
            (
                m.hugetlb[0].pagesize.as_str(),
                m.hugetlb[0].max,
                m.hugetlb[0].failcnt
            ),
            ("2MB", 4194304, 6)
        );
        // It round-trips as the type containerd decodes.
        let bytes = m.write_to_bytes().unwrap();
        assert_eq!(v2::Metrics::parse_from_bytes(&bytes).unwrap(), m);
    }

    #[test]
    fn a_missing_v2_cgroup_is_not_found() {
        let t = tempdir("gone");
        assert!(matches!(
            v2_metrics(&t.0.join("nope")),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn v1_files_become_v1_metrics() {
        let t = tempdir("v1");
        let root = &t.0;
        let files: &[(&str, &str, &str)] = &[
            ("pids", "pids.current", "2\n"),
            ("pids", "pids.max", "50\n"),
            ("cpuacct", "cpuacct.usage", "5000000\n"),
            ("cpuacct", "cpuacct.usage_percpu", "3000000 2000000 \n"),
            ("cpuacct", "cpuacct.stat", "user 3\nsystem 1\n"),
            (
                "cpu",
                "cpu.stat",
                "nr_periods 9\nnr_throttled 1\nthrottled_time 77\n",
            ),
            (
                "memory",
                "memory.stat",
                "cache 4096\nrss 8192\npgpgin 10\ntotal_pgfault 30\nhierarchical_memsw_limit 99\n",
            ),
            ("memory", "memory.usage_in_bytes", "1234567\n"),
            ("memory", "memory.limit_in_bytes", "20000000\n"),
            ("memory", "memory.max_usage_in_bytes", "2000000\n"),
            ("memory", "memory.failcnt", "4\n"),
            ("memory", "memory.memsw.usage_in_bytes", "1234567\n"),
            (
                "memory",
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
            ),
            (
                "blkio",
                "blkio.throttle.io_service_bytes_recursive",
                "8:0 Read 100\n8:0 Write 200\nTotal 300\n",
            ),
            ("unified", "hugetlb.2MB.current", "2097152\n"),
            ("unified", "hugetlb.2MB.events", "max 1\n"),
        ];
        for (c, f, v) in files {
            fs::create_dir_all(root.join(c)).unwrap();
            fs::write(root.join(c).join(f), v).unwrap();
        }
        fs::create_dir_all(root.join("blkio")).unwrap();
        let dirs = V1Dirs {
            dir: |c: &str| Some(root.join(c)).filter(|p| p.is_dir()),
            unified: Some(root.join("unified")),
        };
        let m = v1_metrics(&dirs).unwrap();
        assert_eq!((m.pids.current, m.pids.limit), (2, 50));
        let u = &m.cpu.usage;
        assert_eq!(
            (u.total, u.user, u.kernel, u.per_cpu.clone()),
            (5000000, 30_000_000, 10_000_000, vec![3000000, 2000000])
        );
        assert_eq!(m.cpu.throttling.throttled_time, 77);
        let mem = &m.memory;
        assert_eq!(
            (
                mem.cache,
                mem.rss,
                mem.pg_pg_in,
                mem.total_pg_fault,
                mem.hierarchical_swap_limit
            ),
            (4096, 8192, 10, 30, 99)
        );
        assert_eq!(
            (
                mem.usage.usage,
                mem.usage.limit,
                mem.usage.max,
                mem.usage.failcnt
            ),
            (1234567, 20000000, 2000000, 4)
        );
        assert_eq!(mem.swap.usage, 1234567);
        assert_eq!(m.memory_oom_control.oom_kill, 1);
        let b = &m.blkio.io_service_bytes_recursive;
        assert_eq!(b.len(), 2);
        assert_eq!(
            (b[1].op.as_str(), b[1].major, b[1].value),
            ("Write", 8, 200)
        );
        assert_eq!(m.hugetlb.len(), 1);
        assert_eq!(
            (
                m.hugetlb[0].pagesize.as_str(),
                m.hugetlb[0].usage,
                m.hugetlb[0].failcnt
            ),
            ("2MB", 2097152, 1)
        );
    }
}
