//! Operations on a running container's cgroup: live resource updates, freeze/thaw, and where
//! each controller's files are (for stats and OOM watching).

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use oci_spec::runtime::LinuxResources;

use super::{apply_writes, device_rule, resources, write_file, CgroupPlan, Hierarchy, Layout};
use crate::{Error, Result};

/// The container's directory in hierarchy `h` (one of `plan.dirs`).
pub fn dir_in(plan: &CgroupPlan, h: &Hierarchy) -> Option<PathBuf> {
    plan.dirs
        .iter()
        .find(|d| d.starts_with(&h.mountpoint))
        .cloned()
}

/// The container's directory in the v1 hierarchy of `controller`.
pub fn v1_dir(plan: &CgroupPlan, layout: &Layout, controller: &str) -> Option<PathBuf> {
    layout.v1(controller).and_then(|h| dir_in(plan, h))
}

/// The container's directory in the cgroup2 hierarchy (on a hybrid host it holds only what
/// v1 lacks).
pub fn unified_dir(plan: &CgroupPlan, layout: &Layout) -> Option<PathBuf> {
    layout
        .hierarchies
        .iter()
        .find(|h| h.unified)
        .and_then(|h| dir_in(plan, h))
}

/// True on a cgroup v2-only host (no v1 controller mounted).
pub fn is_unified_host(layout: &Layout) -> bool {
    !layout.hierarchies.is_empty() && layout.hierarchies.iter().all(|h| h.unified)
}

/// The directory holding memory files and whether it is cgroup2's.
pub fn memory_dir(plan: &CgroupPlan, layout: &Layout) -> Option<(PathBuf, bool)> {
    if let Some(d) = v1_dir(plan, layout, "memory") {
        return Some((d, false));
    }
    layout
        .unified_with("memory")
        .and_then(|h| dir_in(plan, h))
        .map(|d| (d, true))
}

fn read_trimmed(path: &Path) -> Result<String> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| Error::io(path, e))
}

/// Applies `resources` to the running container, as `runc update` does. Field names in errors
/// are those of `linux.resources` in the request.
pub fn update(plan: &CgroupPlan, r: &LinuxResources, layout: &Layout) -> Result<()> {
    if plan.dirs.is_empty() {
        return Err(Error::Other("the container has no cgroup to update".into()));
    }
    // A hierarchy the container has no directory in gets none of its writes.
    let dir_of = |h: &Hierarchy| dir_in(plan, h).unwrap_or_else(|| h.mountpoint.join("-"));
    // Device rules are not re-applied live (runc update leaves them alone too); a request that
    // would change them is refused rather than ignored.
    if let Some(devices) = r.devices().as_ref().filter(|d| !d.is_empty()) {
        let asked: Vec<_> = devices.iter().map(device_rule).collect();
        if !plan.device_rules.starts_with(&asked) {
            return Err(Error::unsupported(
                "linux.resources.devices",
                "changing the device allowlist of a running container is not implemented",
            ));
        }
    }
    let mut writes = resources::plan_resources(r, layout, &dir_of)?;
    if let Some(c) = r.cpu() {
        keep_unset_half_of_cpu_max(&mut writes, c.quota(), c.period())?;
    }
    if let Some(m) = r.memory() {
        let (dir, unified) = memory_dir(plan, layout).ok_or_else(|| {
            Error::unsupported(
                "linux.resources.memory",
                "the memory cgroup controller is not available on this host",
            )
        })?;
        if m.check_before_update() == Some(true) {
            if let Some(limit) = m.limit().filter(|l| *l >= 0) {
                let file = if unified {
                    "memory.current"
                } else {
                    "memory.usage_in_bytes"
                };
                let usage: i64 = read_trimmed(&dir.join(file))?.parse().unwrap_or(0);
                if limit < usage {
                    return Err(Error::invalid(
                        "linux.resources.memory.limit",
                        format!("{limit} is below the current usage {usage} (checkBeforeUpdate)"),
                    ));
                }
            }
        }
        if !unified {
            order_v1_memory(&mut writes, &dir, m.limit(), m.swap())?;
        }
    }
    if let Some(unit) = &plan.systemd {
        // systemd re-applies its unit's properties (daemon-reload, another SetUnitProperties):
        // they must say the same as the files.
        let props = super::systemd::resource_properties(&writes, is_unified_host(layout))?;
        super::systemd::set_properties(unit, &props)?;
    }
    apply_writes(&writes)
}

/// cgroup v2 keeps quota and period in one file, cpu.max. An update that gives only one of
/// them keeps the other at its current value, as runc's update does (and as v1's two files
/// do by themselves); 0 means "not given", as in runc.
fn keep_unset_half_of_cpu_max(
    writes: &mut [resources::CgroupWrite],
    quota: Option<i64>,
    period: Option<u64>,
) -> Result<()> {
    let (quota, period) = (quota.filter(|q| *q != 0), period.filter(|p| *p != 0));
    if quota.is_some() == period.is_some() {
        return Ok(());
    }
    let Some(w) = writes.iter_mut().find(|w| w.file == "cpu.max") else {
        return Ok(());
    };
    let current = read_trimmed(&w.dir.join("cpu.max"))?;
    let mut fields = current.split_whitespace();
    let (current_quota, current_period) = (
        fields.next().unwrap_or("max").to_owned(),
        fields.next().unwrap_or("100000").to_owned(),
    );
    w.value = match (quota, period) {
        (Some(q), _) if q > 0 => format!("{q} {current_period}"),
        (Some(_), _) => format!("max {current_period}"),
        (None, Some(p)) => format!("{current_quota} {p}"),
        (None, None) => unreachable!("one of them is given"),
    };
    Ok(())
}

/// v1 keeps memory.limit_in_bytes <= memory.memsw.limit_in_bytes at every moment, so the
/// order of the two writes depends on whether the limits go up or down.
fn order_v1_memory(
    writes: &mut Vec<resources::CgroupWrite>,
    dir: &Path,
    limit: Option<i64>,
    swap: Option<i64>,
) -> Result<()> {
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    // Unlimited memory with no swap given: lift the swap limit too, or the kernel refuses.
    if limit == Some(-1) && swap.is_none() && memsw.exists() {
        let pos = writes
            .iter()
            .position(|w| w.file == "memory.limit_in_bytes")
            .unwrap_or(0);
        writes.insert(
            pos,
            resources::CgroupWrite {
                dir: dir.to_path_buf(),
                file: "memory.memsw.limit_in_bytes".into(),
                value: "-1".into(),
                field: "linux.resources.memory.limit".into(),
                optional: false,
                fallback: None,
            },
        );
        return Ok(());
    }
    let (Some(_), Some(swap)) = (limit, swap) else {
        return Ok(());
    };
    let current: i64 = read_trimmed(&dir.join("memory.limit_in_bytes"))?
        .parse()
        .unwrap_or(i64::MAX);
    let l = writes
        .iter()
        .position(|w| w.file == "memory.limit_in_bytes");
    let s = writes
        .iter()
        .position(|w| w.file == "memory.memsw.limit_in_bytes");
    if let (Some(l), Some(s)) = (l, s) {
        let swap_first = swap == -1 || current < swap;
        if swap_first && s > l {
            let w = writes.remove(s);
            writes.insert(l, w);
        }
    }
    Ok(())
}

/// The freezer of the container: the v1 `freezer.state` file, or cgroup2's `cgroup.freeze`.
fn freezer(plan: &CgroupPlan, layout: &Layout) -> Result<(PathBuf, bool)> {
    if let Some(d) = v1_dir(plan, layout, "freezer") {
        return Ok((d, false));
    }
    match unified_dir(plan, layout) {
        Some(d) if d.join("cgroup.freeze").exists() => Ok((d, true)),
        _ => Err(Error::Other(
            "no cgroup freezer on this host (neither v1 freezer nor cgroup.freeze)".into(),
        )),
    }
}

const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// Freezes every process of the container and returns once the kernel reports it frozen.
pub fn freeze(plan: &CgroupPlan, layout: &Layout) -> Result<()> {
    let (dir, unified) = freezer(plan, layout)?;
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    let mut pause = Duration::from_micros(100);
    loop {
        let frozen = if unified {
            write_file(&dir.join("cgroup.freeze"), "1")?;
            read_trimmed(&dir.join("cgroup.events"))?
                .lines()
                .any(|l| l.trim() == "frozen 1")
        } else {
            // A task in an uninterruptible sleep keeps v1 in FREEZING; writing again retries.
            write_file(&dir.join("freezer.state"), "FROZEN")?;
            read_trimmed(&dir.join("freezer.state"))? == "FROZEN"
        };
        if frozen {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let _ = thaw(plan, layout);
            return Err(Error::Other(format!(
                "{}: the container did not freeze within {FREEZE_TIMEOUT:?}",
                dir.display()
            )));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// Thaws the container.
pub fn thaw(plan: &CgroupPlan, layout: &Layout) -> Result<()> {
    let (dir, unified) = freezer(plan, layout)?;
    if unified {
        write_file(&dir.join("cgroup.freeze"), "0")
    } else {
        write_file(&dir.join("freezer.state"), "THAWED")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(file: &str, value: &str) -> resources::CgroupWrite {
        resources::CgroupWrite {
            dir: PathBuf::from("/x"),
            file: file.into(),
            value: value.into(),
            field: String::new(),
            optional: false,
            fallback: None,
        }
    }

    fn files(writes: &[resources::CgroupWrite]) -> Vec<&str> {
        writes.iter().map(|w| w.file.as_str()).collect()
    }

    /// A cgroup2 mount in a temp dir: the container directory with the files the kernel
    /// would create there (writes never create files).
    fn fake_v2(tag: &str) -> (PathBuf, Layout, CgroupPlan) {
        let root = std::env::temp_dir().join(format!("shimrs-v2-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let dir = root.join("k/c");
        fs::create_dir_all(&dir).unwrap();
        for f in [
            "cpu.weight",
            "cpu.max",
            "cpuset.cpus",
            "memory.max",
            "memory.low",
            "memory.swap.max",
            "pids.max",
            "cgroup.freeze",
        ] {
            fs::write(dir.join(f), "").unwrap();
        }
        fs::write(dir.join("memory.current"), "5000000\n").unwrap();
        // Empty, as a new container's cgroup is before its init joins.
        fs::write(dir.join("cgroup.events"), "populated 0\nfrozen 0\n").unwrap();
        let mut layout = Layout::parse(&format!(
            "35 30 0:31 / {} rw - cgroup2 cgroup2 rw\n",
            root.display()
        ));
        layout.hierarchies[0].controllers = ["cpu", "cpuset", "memory", "pids"]
            .map(String::from)
            .to_vec();
        let linux: oci_spec::runtime::Linux = serde_json::from_str(
            r#"{"cgroupsPath":"/k/c","resources":{"cpu":{"shares":1024,"quota":50000,"period":100000,"cpus":"0"},
                "memory":{"limit":20000000,"swap":30000000,"reservation":1000},"pids":{"limit":10}}}"#,
        )
        .unwrap();
        let plan = super::super::plan_cgroup(&linux, "c", &[], &layout).unwrap();
        (root, layout, plan)
    }

    fn contents(dir: &Path) -> Vec<(String, String)> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| {
                (
                    e.file_name().into_string().unwrap(),
                    fs::read_to_string(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn v2_create_then_update_writes_every_file() {
        let (root, layout, plan) = fake_v2("update");
        let dir = root.join("k/c");
        super::super::create(&plan).unwrap();
        let expect = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(f, v)| (f.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            contents(&dir),
            expect(&[
                ("cgroup.events", "populated 0\nfrozen 0\n"),
                ("cgroup.freeze", ""),
                ("cpu.max", "50000 100000"),
                ("cpu.weight", "39"),
                ("cpuset.cpus", "0"),
                ("memory.current", "5000000\n"),
                ("memory.low", "1000"),
                ("memory.max", "20000000"),
                ("memory.swap.max", "10000000"),
                ("pids.max", "10"),
            ])
        );
        assert_eq!(unified_dir(&plan, &layout), Some(dir.clone()));
        let r: LinuxResources = serde_json::from_str(
            r#"{"cpu":{"quota":-1},"memory":{"limit":-1,"swap":-1},"pids":{"limit":0}}"#,
        )
        .unwrap();
        update(&plan, &r, &layout).unwrap();
        let files = contents(&dir);
        let get = |f: &str| files.iter().find(|(n, _)| n == f).unwrap().1.clone();
        assert_eq!(get("cpu.max"), "max 100000");
        assert_eq!(get("memory.max"), "max");
        assert_eq!(get("memory.swap.max"), "max");
        assert_eq!(get("pids.max"), "max");
        assert_eq!(get("cpu.weight"), "39", "untouched by the update");
        // Half a cpu.max keeps the other half.
        let period: LinuxResources = serde_json::from_str(r#"{"cpu":{"period":200000}}"#).unwrap();
        update(&plan, &period, &layout).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("cpu.max")).unwrap(),
            "max 200000"
        );
        let quota: LinuxResources = serde_json::from_str(r#"{"cpu":{"quota":30000}}"#).unwrap();
        update(&plan, &quota, &layout).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("cpu.max")).unwrap(),
            "30000 200000"
        );

        // checkBeforeUpdate compares with memory.current and writes nothing when refused.
        let below: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":4096,"checkBeforeUpdate":true},"pids":{"limit":5}}"#,
        )
        .unwrap();
        let e = update(&plan, &below, &layout).unwrap_err().to_string();
        assert!(
            e.contains("linux.resources.memory.limit") && e.contains("5000000"),
            "{e}"
        );
        assert_eq!(fs::read_to_string(dir.join("pids.max")).unwrap(), "max");
        // Device changes are refused, not ignored.
        let devices: LinuxResources =
            serde_json::from_str(r#"{"devices":[{"allow":false,"access":"rwm"}]}"#).unwrap();
        let e = update(&plan, &devices, &layout).unwrap_err().to_string();
        assert!(e.contains("linux.resources.devices"), "{e}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v2_io_weight_goes_to_bfq_when_the_kernel_has_it_else_to_io_weight() {
        let (root, layout, _) = fake_v2("ioweight");
        let dir = root.join("k/c");
        let mut layout = layout;
        layout.hierarchies[0].controllers.push("io".into());
        let linux: oci_spec::runtime::Linux = serde_json::from_str(
            r#"{"cgroupsPath":"/k/c","resources":{"blockIO":{"weight":500}}}"#,
        )
        .unwrap();
        let plan = super::super::plan_cgroup(&linux, "c", &[], &layout).unwrap();
        // No BFQ scheduler: io.weight, 1 + (500 - 10) * 9999 / 990.
        fs::write(dir.join("io.weight"), "").unwrap();
        super::super::create(&plan).unwrap();
        assert_eq!(fs::read_to_string(dir.join("io.weight")).unwrap(), "4950");
        // With BFQ: its file, the blkio value as is.
        fs::write(dir.join("io.bfq.weight"), "").unwrap();
        let r: LinuxResources = serde_json::from_str(r#"{"blockIO":{"weight":300}}"#).unwrap();
        update(&plan, &r, &layout).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("io.bfq.weight")).unwrap(),
            "300"
        );
        assert_eq!(fs::read_to_string(dir.join("io.weight")).unwrap(), "4950");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v2_freeze_waits_for_frozen_and_thaw_clears_it() {
        let (root, layout, plan) = fake_v2("freeze");
        let dir = root.join("k/c");
        // The "kernel" reports frozen a little after the write.
        let events = dir.join("cgroup.events");
        // Before the thread starts its 50 ms, or freeze may seem to return early.
        let t0 = Instant::now();
        let kernel = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            fs::write(events, "populated 1\nfrozen 1\n").unwrap();
        });
        freeze(&plan, &layout).unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(50));
        kernel.join().unwrap();
        assert_eq!(fs::read_to_string(dir.join("cgroup.freeze")).unwrap(), "1");
        thaw(&plan, &layout).unwrap();
        assert_eq!(fs::read_to_string(dir.join("cgroup.freeze")).unwrap(), "0");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v1_memory_order_follows_the_direction_of_the_change() {
        let dir = std::env::temp_dir().join(format!("shimrs-live-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("memory.limit_in_bytes"), "100000000\n").unwrap();
        fs::write(dir.join("memory.memsw.limit_in_bytes"), "100000000\n").unwrap();
        let planned = || {
            vec![
                w("memory.limit_in_bytes", "1"),
                w("memory.memsw.limit_in_bytes", "2"),
            ]
        };
        // Raising: memsw first.
        let mut up = planned();
        order_v1_memory(&mut up, &dir, Some(200_000_000), Some(200_000_000)).unwrap();
        assert_eq!(
            files(&up),
            ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
        );
        // Lowering: limit first.
        let mut down = planned();
        order_v1_memory(&mut down, &dir, Some(50_000_000), Some(50_000_000)).unwrap();
        assert_eq!(
            files(&down),
            ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
        );
        // Unlimited without a swap value lifts memsw first.
        let mut unlimited = vec![w("memory.limit_in_bytes", "-1")];
        order_v1_memory(&mut unlimited, &dir, Some(-1), None).unwrap();
        assert_eq!(
            files(&unlimited),
            ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
