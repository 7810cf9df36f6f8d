//! cgroups: the host layout (v1, v2 or hybrid), the container's cgroup plan, and applying it.
//!
//! The layout is read once per process from /proc/self/mountinfo. A container joins every
//! mounted hierarchy (each v1 controller, the named `systemd` one, and the cgroup2 mount,
//! which on a hybrid host holds only what v1 does not), as runc does.

use std::{
    fs,
    io::Write,
    path::{Component, Path, PathBuf},
    sync::OnceLock,
};

use oci_spec::runtime::{Linux, LinuxDeviceCgroup, LinuxDeviceType};
use serde::{Deserialize, Serialize};

pub mod devices_bpf;
pub mod live;
pub mod resources;
pub mod systemd;

pub use self::systemd::CgroupDriver;
use self::{resources::CgroupWrite, systemd::SystemdUnit};
use crate::{plan::devices::DeviceNode, Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hierarchy {
    pub mountpoint: PathBuf,
    /// v1 controllers (or `name=...`) of this mount; for cgroup2, the controllers its root
    /// offers (cgroup.controllers).
    pub controllers: Vec<String>,
    pub unified: bool,
    /// The cgroup the planning process (the shim) is in, relative to this hierarchy's root:
    /// where a relative `cgroupsPath` goes (see [`Layout::with_own_cgroups`]).
    #[serde(default)]
    pub own: PathBuf,
}

impl Hierarchy {
    /// The container's directory in this hierarchy.
    pub fn dir_of(&self, place: &Placement) -> PathBuf {
        match place.below_own {
            true => self.mountpoint.join(&self.own).join(&place.rel),
            false => self.mountpoint.join(&place.rel),
        }
    }
}

/// Where a container's cgroup is: `rel` below each hierarchy's root, or, for a relative (or
/// empty) `cgroupsPath`, below the cgroup of the process that creates it, as runc places it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub rel: PathBuf,
    pub below_own: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub hierarchies: Vec<Hierarchy>,
}

impl Layout {
    /// The host's layout, read once.
    pub fn host() -> &'static Layout {
        static LAYOUT: OnceLock<Layout> = OnceLock::new();
        LAYOUT.get_or_init(|| {
            let mut layout =
                Layout::parse(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
            for h in layout.hierarchies.iter_mut().filter(|h| h.unified) {
                let available =
                    fs::read_to_string(h.mountpoint.join("cgroup.controllers")).unwrap_or_default();
                h.controllers = available.split_whitespace().map(str::to_owned).collect();
            }
            layout
        })
    }

    pub fn parse(mountinfo: &str) -> Layout {
        let mut hierarchies = Vec::new();
        for line in mountinfo.lines() {
            // id parent maj:min root mountpoint opts [optional...] - fstype source superopts
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mut right = right.split(' ');
            let (fstype, _source, superopts) = (right.next(), right.next(), right.next());
            let mountpoint = left.split(' ').nth(4).unwrap_or_default();
            let root = left.split(' ').nth(3).unwrap_or_default();
            if root != "/" {
                continue; // a bind of a sub-cgroup, not the hierarchy root
            }
            match fstype {
                Some("cgroup2") => hierarchies.push(Hierarchy {
                    mountpoint: PathBuf::from(mountpoint),
                    controllers: Vec::new(),
                    unified: true,
                    own: PathBuf::new(),
                }),
                Some("cgroup") => {
                    let controllers = superopts
                        .unwrap_or_default()
                        .split(',')
                        .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("release_agent"))
                        .filter(|o| {
                            o.starts_with("name=")
                                || !o.contains('=')
                                    && !matches!(
                                        *o,
                                        "noprefix" | "clone_children" | "xattr" | "cpuset_v2_mode"
                                    )
                        })
                        .map(str::to_owned)
                        .collect();
                    hierarchies.push(Hierarchy {
                        mountpoint: PathBuf::from(mountpoint),
                        controllers,
                        unified: false,
                        own: PathBuf::new(),
                    })
                }
                _ => {}
            }
        }
        Layout { hierarchies }
    }

    /// This layout with each hierarchy's `own` cgroup taken from `proc_self_cgroup` (the
    /// contents of /proc/self/cgroup of the process that will create containers).
    pub fn with_own_cgroups(&self, proc_self_cgroup: &str) -> Layout {
        let mut layout = self.clone();
        for line in proc_self_cgroup.lines() {
            let mut f = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let own = PathBuf::from(path.trim_start_matches('/'));
            for h in layout.hierarchies.iter_mut() {
                let matches = if controllers.is_empty() {
                    h.unified
                } else {
                    let mut theirs: Vec<&str> = controllers.split(',').collect();
                    let mut ours: Vec<&str> = h.controllers.iter().map(String::as_str).collect();
                    theirs.sort_unstable();
                    ours.sort_unstable();
                    !h.unified && theirs == ours
                };
                if matches {
                    h.own = own.clone();
                }
            }
        }
        layout
    }

    /// [`Layout::host`] with the calling process's own cgroups.
    pub fn host_from_here() -> Layout {
        Layout::host()
            .with_own_cgroups(&fs::read_to_string("/proc/self/cgroup").unwrap_or_default())
    }

    fn v1(&self, controller: &str) -> Option<&Hierarchy> {
        self.hierarchies
            .iter()
            .find(|h| !h.unified && h.controllers.iter().any(|c| c == controller))
    }

    /// The cgroup2 hierarchy, if it offers `controller`.
    fn unified_with(&self, controller: &str) -> Option<&Hierarchy> {
        self.hierarchies
            .iter()
            .find(|h| h.unified && h.controllers.iter().any(|c| c == controller))
    }

    fn v1_has_file(&self, controller: &str, file: &str) -> bool {
        self.v1(controller)
            .is_some_and(|h| h.mountpoint.join(file).exists())
    }
}

/// Where the container's cgroups are and what to write before the init joins them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupPlan {
    /// The container's directory in every hierarchy; the init joins all of them.
    pub dirs: Vec<PathBuf>,
    /// The cpuset directory, whose cpus/mems must be filled in before a process can join (v1).
    pub cpuset_dir: Option<PathBuf>,
    /// The v1 devices directory and the rules to write there, in order.
    pub devices_dir: Option<PathBuf>,
    /// Without a v1 devices controller: the cgroup v2 directory that gets the rules as an
    /// eBPF device program (see devices_bpf).
    #[serde(default)]
    pub bpf_devices_dir: Option<PathBuf>,
    pub device_rules: Vec<DeviceRule>,
    /// Resource limits, written in order before the init joins.
    pub writes: Vec<CgroupWrite>,
    /// The cgroup2 mountpoint when the container has a directory below it: every ancestor
    /// of that directory must delegate its controllers (`cgroup.subtree_control`).
    #[serde(default)]
    pub unified_root: Option<PathBuf>,
    /// With the systemd driver: the scope unit systemd makes of `dirs` (it creates and
    /// removes them; we only add what systemd does not manage).
    #[serde(default)]
    pub systemd: Option<SystemdUnit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRule {
    pub allow: bool,
    /// `type major:minor access`, as devices.allow/devices.deny take it.
    pub rule: String,
}

/// Turns `cgroupsPath` into a path below each hierarchy root, for the cgroupfs driver.
/// Like runc's cgroupfs driver, the systemd form "slice:prefix:name" is not interpreted
/// there: it names a directory of that name (the slice is not systemd's, so nothing of
/// systemd's tree is touched); the systemd driver ([`systemd::unit_of`]) interprets it.
pub fn cgroup_relative_path(cgroups_path: Option<&Path>, id: &str) -> Result<PathBuf> {
    cgroup_placement(cgroups_path, id).map(|p| p.rel)
}

/// Where `cgroupsPath` puts the container (cgroupfs driver): an absolute path below each
/// hierarchy's root; a relative one, or none (then the container id), below the creating
/// process's own cgroup, as runc does.
pub fn cgroup_placement(cgroups_path: Option<&Path>, id: &str) -> Result<Placement> {
    let given = cgroups_path
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| !p.is_empty());
    let below_own = !given.as_deref().is_some_and(|p| p.starts_with('/'));
    let raw = given.unwrap_or_else(|| id.to_owned());
    if !raw.starts_with('/') && raw.matches(':').count() == 2 {
        log::warn!(
            "linux.cgroupsPath {raw:?} has the systemd form slice:prefix:name, but the runtime \
             option SystemdCgroup is not set: it is used as a cgroupfs directory of that name, \
             as runc does. To have systemd manage it, set SystemdCgroup = true (containerd \
             1.6's CRI passes a non-runc runtime only ConfigPath of the handler's options: \
             put the line in the file it names)"
        );
    }
    let path = PathBuf::from(raw.trim_start_matches('/'));
    if path.as_os_str().is_empty()
        || path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(Error::invalid(
            "linux.cgroupsPath",
            format!("{raw:?} must name a cgroup below the root, without '..'"),
        ));
    }
    Ok(Placement {
        rel: path,
        below_own,
    })
}

fn device_rule(d: &LinuxDeviceCgroup) -> DeviceRule {
    let typ = d.typ().unwrap_or(LinuxDeviceType::A);
    let num = |n: Option<i64>| {
        n.filter(|n| *n >= 0)
            .map_or("*".to_owned(), |n| n.to_string())
    };
    let rule = if typ == LinuxDeviceType::A {
        "a".to_owned()
    } else {
        format!(
            "{} {}:{} {}",
            typ.as_str(),
            num(d.major()),
            num(d.minor()),
            d.access().clone().unwrap_or_else(|| "rwm".to_owned())
        )
    };
    DeviceRule {
        allow: d.allow(),
        rule,
    }
}

/// The v1 devices controller writes for `rules`, in the order runc writes them: when the
/// rules are "everything denied (or allowed), then exceptions", the exceptions come sorted
/// (by type, then major and minor numbers, wildcards first) and once each, so `devices.list`
/// reads the same as under runc. Rules that mix allows and denies after the reset keep the
/// spec's order: there the order is the meaning.
pub fn v1_device_writes(rules: &[DeviceRule]) -> Vec<DeviceRule> {
    let reset = rules
        .iter()
        .rposition(|r| r.rule == "a" || r.rule == "a *:* rwm");
    let Some(reset) = reset else {
        return rules.to_vec();
    };
    let default = &rules[reset];
    let mut exceptions: Vec<&DeviceRule> = rules[reset + 1..].iter().collect();
    if exceptions.iter().any(|r| r.allow == default.allow) {
        return rules.to_vec();
    }
    let key = |r: &DeviceRule| {
        let mut f = r.rule.split_whitespace();
        let kind = f.next().unwrap_or_default().to_owned();
        let (major, minor) = f
            .next()
            .and_then(|mm| mm.split_once(':'))
            .unwrap_or(("", ""));
        let num = |n: &str| n.parse::<u32>().ok();
        (kind, num(major), num(minor), r.rule.clone())
    };
    exceptions.sort_by_key(|r| key(r));
    exceptions.dedup_by_key(|r| r.rule.clone());
    std::iter::once(default)
        .chain(exceptions)
        .cloned()
        .collect()
}

/// Devices every container may use whatever the spec says (runc allows the same set).
const ALWAYS_ALLOWED: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:200 rwm",
];

impl CgroupPlan {
    /// The cgroup at `place` in every hierarchy, with nothing to write yet.
    pub fn at(place: &Placement, layout: &Layout) -> CgroupPlan {
        CgroupPlan {
            dirs: layout.hierarchies.iter().map(|h| h.dir_of(place)).collect(),
            cpuset_dir: layout.v1("cpuset").map(|h| h.dir_of(place)),
            devices_dir: layout.v1("devices").map(|h| h.dir_of(place)),
            unified_root: layout
                .hierarchies
                .iter()
                .find(|h| h.unified)
                .map(|h| h.mountpoint.clone()),
            ..Default::default()
        }
    }
}

/// The cgroup plan with the cgroupfs driver.
pub fn plan_cgroup(
    linux: &Linux,
    id: &str,
    nodes: &[DeviceNode],
    layout: &Layout,
) -> Result<CgroupPlan> {
    plan_cgroup_for(linux, id, nodes, layout, CgroupDriver::Cgroupfs)
}

/// The cgroup plan with `driver`: the same directories, writes and device rules either way;
/// with systemd also the scope unit, whose properties restate what systemd has names for.
pub fn plan_cgroup_for(
    linux: &Linux,
    id: &str,
    nodes: &[DeviceNode],
    layout: &Layout,
    driver: CgroupDriver,
) -> Result<CgroupPlan> {
    let cgroups_path = linux.cgroups_path().as_deref();
    let (place, unit) = match driver {
        CgroupDriver::Cgroupfs => (cgroup_placement(cgroups_path, id)?, None),
        CgroupDriver::Systemd => {
            let (slice, unit, rel) = systemd::unit_of(cgroups_path, id)?;
            let place = Placement {
                rel,
                below_own: false,
            };
            (place, Some((slice, unit)))
        }
    };
    let mut plan = CgroupPlan::at(&place, layout);
    if let Some(resources) = linux.resources() {
        plan.writes = resources::plan_resources(resources, layout, &|h| h.dir_of(&place))?;
        plan.device_rules = resources
            .devices()
            .iter()
            .flatten()
            .map(device_rule)
            .collect();
    }
    if !plan.device_rules.is_empty() {
        if plan.devices_dir.is_none() {
            plan.bpf_devices_dir = layout
                .hierarchies
                .iter()
                .find(|h| h.unified)
                .map(|h| h.dir_of(&place));
            if plan.bpf_devices_dir.is_none() {
                return Err(Error::unsupported(
                    "linux.resources.devices",
                    "the host has neither a v1 devices controller nor a cgroup2 hierarchy",
                ));
            }
        }
        plan.device_rules
            .extend(ALWAYS_ALLOWED.iter().map(|r| DeviceRule {
                allow: true,
                rule: r.to_string(),
            }));
        for n in nodes {
            let t = match n.kind {
                libc::S_IFBLK => 'b',
                libc::S_IFCHR => 'c',
                _ => continue,
            };
            plan.device_rules.push(DeviceRule {
                allow: true,
                rule: format!("{t} {}:{} rwm", n.major, n.minor),
            });
        }
    }
    if let Some((slice, unit)) = unit {
        let name = unit.trim_end_matches(".scope");
        plan.systemd = Some(systemd::plan_unit(
            slice,
            unit.clone(),
            name,
            &plan.writes,
            &plan.device_rules,
            live::is_unified_host(layout),
        )?);
    }
    Ok(plan)
}

fn write_file(path: &Path, value: &str) -> Result<()> {
    // O_TRUNC as runc does: meaningless for cgroupfs, but keeps a plain file (tests) exact.
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| {
            // A missing file is a controller that is not there: not in this kernel, not
            // mounted (v1), or not enabled in the parent's cgroup.subtree_control (v2).
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                ": the cgroup controller of this file is not available for the container's \
                 cgroup; enable it (cgroup v2: the parent's cgroup.subtree_control; v1: mount \
                 its hierarchy) or leave the limit out of the spec"
            } else {
                ""
            };
            Error::Other(format!("write {value:?} to {}: {e}{hint}", path.display()))
        })
}

/// Fills an empty cpuset.cpus/mems from the nearest ancestor, top down (v1 refuses tasks otherwise).
fn inherit_cpuset(dir: &Path) -> Result<()> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mut chain = vec![dir.to_path_buf()];
        let mut value = String::new();
        let mut cur = dir.parent();
        while let Some(p) = cur {
            match fs::read_to_string(p.join(file)) {
                Ok(v) if !v.trim().is_empty() => {
                    value = v.trim().to_owned();
                    break;
                }
                Ok(_) => chain.push(p.to_path_buf()),
                Err(_) => break,
            }
            cur = p.parent();
        }
        for d in chain.iter().rev() {
            let current = fs::read_to_string(d.join(file)).unwrap_or_default();
            if current.trim().is_empty() {
                write_file(&d.join(file), &value)?;
            }
        }
    }
    Ok(())
}

/// Enables every controller the cgroup2 root offers in each ancestor of `dir` below `root`,
/// top down, as runc does: a controller's files appear in a cgroup only when its parent
/// delegates it. Controllers that cannot be enabled (an ancestor with processes of its own,
/// a controller another manager withholds) are left out; writing their limits fails later
/// with the field named.
fn enable_controllers(root: &Path, dir: &Path) {
    let Ok(rel) = dir.strip_prefix(root) else {
        return;
    };
    let offered = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let mut cur = root.to_path_buf();
    let mut below = rel.parent().into_iter().flat_map(Path::components);
    loop {
        let control = cur.join("cgroup.subtree_control");
        let enabled = fs::read_to_string(&control).unwrap_or_default();
        let missing: Vec<String> = offered
            .split_whitespace()
            .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
            .map(|c| format!("+{c}"))
            .collect();
        if !missing.is_empty() && write_file(&control, &missing.join(" ")).is_err() {
            for m in &missing {
                let _ = write_file(&control, m);
            }
        }
        match below.next() {
            Some(part) => cur.push(part),
            None => return,
        }
    }
}

/// Creates the cgroups and writes the device rules and resource limits. Cheap: no process
/// moves yet (see [`join`]). On an error nothing of it is left, and nothing is killed. With the systemd driver the cgroup exists only once systemd has
/// made the scope, which needs the init's pid: here we only check that systemd can be asked
/// (so a host without it fails before anything is made), and [`join`] does the rest.
pub fn create(plan: &CgroupPlan) -> Result<()> {
    if plan.systemd.is_some() {
        // systemd refuses to start a scope unit that exists already.
        return systemd::check_reachable();
    }
    refuse_populated(plan)?;
    make_and_limit(plan).inspect_err(|_| {
        // No process is in them yet: removing the directories is all there is to undo
        // (never a kill, whatever `destroy` would do).
        for dir in plan.dirs.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    })
}

/// A cgroup that already holds processes, in it or below it, is someone else's: a container
/// there would take them down with it (Delete and kill-all kill everything in the
/// container's cgroup). Refused, as runc (1.2 and later) does. A pod's containers are not
/// affected: each gets a cgroup of its own below the pod's (CRI's cgroupsPath is
/// `<pod cgroup>/<container id>`), and the pod's own cgroup holds no processes.
fn refuse_populated(plan: &CgroupPlan) -> Result<()> {
    for dir in plan.dirs.iter().filter(|d| d.is_dir()) {
        let populated = match fs::read_to_string(dir.join("cgroup.events")) {
            // cgroup v2 counts the whole subtree for us.
            Ok(events) => events.lines().any(|l| l.trim() == "populated 1"),
            Err(_) => tree_has_processes(dir, 0),
        };
        if populated {
            return Err(Error::invalid(
                "linux.cgroupsPath",
                format!(
                    "cgroup {} is not empty: it (or a cgroup below it) holds processes that \
                     are not this container's",
                    dir.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Whether the v1 cgroup `dir` or one below it (to a sane depth) has a process.
fn tree_has_processes(dir: &Path, depth: usize) -> bool {
    let own = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    if !own.trim().is_empty() {
        return true;
    }
    depth < 32
        && fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .any(|e| tree_has_processes(&e.path(), depth + 1))
        })
}

/// The directories, controllers, cpuset, device rules and limit files of `plan`.
fn make_and_limit(plan: &CgroupPlan) -> Result<()> {
    for dir in &plan.dirs {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        if let Some(root) = &plan.unified_root {
            enable_controllers(root, dir);
        }
    }
    if let Some(dir) = &plan.cpuset_dir {
        inherit_cpuset(dir)?;
    }
    if let Some(dir) = &plan.bpf_devices_dir {
        devices_bpf::attach(dir, &plan.device_rules)?;
    }
    if let Some(dir) = &plan.devices_dir {
        for r in &v1_device_writes(&plan.device_rules) {
            let file = if r.allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            write_file(&dir.join(file), &r.rule)?;
        }
    }
    apply_writes(&plan.writes)
}

/// Writes planned limits in order. Where the kernel lacks a write's file, an optional write
/// is skipped and one with a fallback writes that instead; errors name the spec field.
fn apply_writes(writes: &[CgroupWrite]) -> Result<()> {
    for w in writes {
        let mut path = w.dir.join(&w.file);
        let mut value = w.value.as_str();
        if !path.exists() {
            if w.optional {
                continue;
            }
            if let Some((file, fallback)) = &w.fallback {
                path = w.dir.join(file);
                value = fallback;
            }
        }
        write_file(&path, value).map_err(|e| Error::invalid(&w.field, e.to_string()))?;
    }
    Ok(())
}

/// How a new container process enters the container's cgroup without being moved by
/// another process, see [`open_entry`].
#[derive(Default)]
pub struct CgroupEntry {
    /// The cgroup v2 directory to be born in (clone3 CLONE_INTO_CGROUP).
    pub birth: Option<std::os::fd::OwnedFd>,
    /// The `tasks` files of the v1 hierarchies, for the process to write "0" to itself,
    /// in the order of the plan's v1 directories.
    pub tasks: Vec<std::os::fd::OwnedFd>,
}

impl CgroupEntry {
    /// Nothing to enter by: the shim moves the process ([`join`]), the systemd driver's init.
    pub fn left_to_the_shim(&self) -> bool {
        self.birth.is_none() && self.tasks.is_empty()
    }

    /// True when the new process ends up in every directory of the plan by itself (once
    /// born where it was asked to be); otherwise the shim moves it with [`join`].
    pub fn covers_all(&self, born_in_cgroup: bool) -> bool {
        !self.left_to_the_shim() && (self.birth.is_none() || born_in_cgroup)
    }
}

/// The v1 directories of the container's cgroup, which a new process joins by itself by
/// writing "0" to their `tasks` files (see [`open_entry`]).
fn self_join_dirs(plan: &CgroupPlan) -> Vec<&Path> {
    plan.dirs
        .iter()
        .filter(|d| !plan.unified_root.as_ref().is_some_and(|r| d.starts_with(r)))
        .map(PathBuf::as_path)
        .collect()
}

/// How a new process of the container gets into its cgroup with no migration by someone
/// else: born in its cgroup v2 directory (clone3 CLONE_INTO_CGROUP), and moving its own
/// thread into each v1 hierarchy (writing "0" to `tasks`).
///
/// Why not a write of its pid to cgroup.procs: moving a process (rather than the calling
/// thread) turns the kernel's global cgroup-move lock to writer mode, which first waits for
/// an RCU grace period (10-20 ms on a small VM) while holding the cgroup mutex, on the path
/// of every Create and exec. Since Linux 5.2 a thread that moves only itself takes neither;
/// the process is single-threaded until its exec, so moving its thread moves it. Being born
/// in a cgroup takes that lock only for reading.
///
/// With the systemd driver the init is left to [`join`] (systemd starts its scope with it).
pub fn open_entry(plan: &CgroupPlan) -> Result<CgroupEntry> {
    // A transient scope exists only once systemd has a process to put in it.
    if plan.systemd.is_some() {
        return Ok(CgroupEntry::default());
    }
    let birth = match &plan.unified_root {
        Some(root) => {
            let mut unified = plan.dirs.iter().filter(|d| d.starts_with(root));
            match (unified.next(), unified.next()) {
                (Some(dir), None) => Some(
                    fs::File::open(dir)
                        .map(std::os::fd::OwnedFd::from)
                        .map_err(|e| Error::io(dir, e))?,
                ),
                _ => None,
            }
        }
        None => None,
    };
    let tasks = self_join_dirs(plan)
        .into_iter()
        .map(|dir| {
            let path = dir.join("tasks");
            fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map(std::os::fd::OwnedFd::from)
                .map_err(|e| Error::io(&path, e))
        })
        .collect::<Result<_>>()?;
    Ok(CgroupEntry { birth, tasks })
}

/// In a new container process (single-threaded, before its exec): moves the calling
/// thread into each v1 directory of `plan` through the `tasks` files [`open_entry`] opened,
/// and closes them.
pub fn join_self(plan: &CgroupPlan, tasks: Vec<std::os::fd::OwnedFd>) -> Result<()> {
    use std::os::fd::AsRawFd;
    for (fd, dir) in tasks.iter().zip(self_join_dirs(plan)) {
        // SAFETY: write(2) of one byte from a static buffer to a descriptor we own.
        if unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) } != 1 {
            let e = std::io::Error::last_os_error();
            return Err(Error::io(dir.join("tasks"), e));
        }
    }
    Ok(())
}

/// Moves process `pid` into every hierarchy of the container's cgroup, where it did not
/// get there by itself (see [`open_entry`]): with the systemd driver, or on a kernel
/// without CLONE_INTO_CGROUP. The first move may wait for an RCU grace period, which is
/// why the shim does this in the background while the init builds its rootfs, and holds
/// the exec until it is done.
///
/// With the systemd driver, systemd starts the scope with `pid` in it first; then, as runc
/// does, the directories systemd does not manage (v1 cpuset, freezer, ...) are made, every
/// limit is written to the files too, and `pid` joins every hierarchy (a no-op where systemd
/// put it already). The init has not exec'd yet: no container code runs before its limits.
pub fn join(plan: &CgroupPlan, pid: i32) -> Result<()> {
    if let Some(unit) = &plan.systemd {
        systemd::start(unit, pid)?;
        make_and_limit(plan)?;
    }
    for dir in &plan.dirs {
        write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
    }
    Ok(())
}

/// Starts, on a short-lived thread, a move of the calling process into the cgroup it is
/// already in, so that the next real move finds the kernel ready for it.
///
/// Why: a write to cgroup.procs first turns the kernel's global cgroup-move lock to writer
/// mode, which waits for an RCU grace period (10-20 ms on a small VM), and the lock stays
/// turned for about one more grace period after the write. Only an init that the shim
/// moves ([`join`]: the systemd driver) needs this; a no-op move started as soon as the
/// container's cgroups are made pays that wait while the launch does its other work. It
/// holds the kernel's cgroup mutex while it waits, so it must not start before the
/// container's cgroup directories are made, nor where processes enter their cgroup by
/// themselves ([`open_entry`]): their moves need that mutex too. Nothing to do on a
/// cgroup v2-only host. At most one such thread runs at a time.
pub fn prime_moves() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static RUNNING: AtomicBool = AtomicBool::new(false);
    let layout = Layout::host();
    if layout.hierarchies.iter().all(|h| h.unified) || RUNNING.swap(true, Ordering::AcqRel) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("cgroup-prime".into())
        .spawn(|| {
            let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
            let layout = Layout::host().with_own_cgroups(&own);
            // A controller hierarchy rather than the named systemd one, which systemd owns.
            let h = ["pids", "memory", "cpu"]
                .iter()
                .find_map(|c| layout.v1(c))
                .or_else(|| layout.hierarchies.iter().find(|h| !h.unified));
            if let Some(h) = h {
                // "0": the writing process, into the cgroup it is in (a no-op move).
                let procs = h.mountpoint.join(&h.own).join("cgroup.procs");
                if let Err(e) = write_file(&procs, "0") {
                    log::debug!("priming cgroup moves: {e}");
                }
            }
            RUNNING.store(false, Ordering::Release);
        });
    if spawned.is_err() {
        RUNNING.store(false, Ordering::Release);
    }
}

/// Moves process `pid` into the existing cgroup `rel` (below each hierarchy's root), creating
/// nothing, as containerd's runc shim joins its `shim_cgroup`: on a cgroup v2-only host the
/// cgroup must exist; otherwise every v1 hierarchy that has it is joined, and at least one
/// must.
pub fn join_existing(rel: &Path, layout: &Layout, pid: i32) -> Result<()> {
    let unified_only = layout.hierarchies.iter().all(|h| h.unified);
    let dirs: Vec<PathBuf> = layout
        .hierarchies
        .iter()
        .filter(|h| h.unified == unified_only)
        .map(|h| h.mountpoint.join(rel))
        .filter(|d| d.is_dir())
        .collect();
    if dirs.is_empty() {
        return Err(Error::Other(format!(
            "cgroup {} does not exist in any {} hierarchy",
            rel.display(),
            if unified_only {
                "cgroup v2"
            } else {
                "cgroup v1"
            }
        )));
    }
    for dir in dirs {
        write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
    }
    Ok(())
}

/// The pids in the container's cgroup (from the first hierarchy that has the directory).
pub fn pids(plan: &CgroupPlan) -> Vec<i32> {
    plan.dirs
        .iter()
        .find_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Sends `signal` to every process in the container's cgroup; processes already gone are
/// fine. SIGKILL goes through cgroup.kill where cgroup v2 has it (Linux 5.14): the kernel
/// kills exactly the cgroup's processes, new forks included, with no pid read in between.
pub fn kill_all(plan: &CgroupPlan, signal: i32) {
    if signal == libc::SIGKILL {
        let unified = plan
            .dirs
            .iter()
            .find(|d| plan.unified_root.as_ref().is_some_and(|r| d.starts_with(r)));
        if unified.is_some_and(|d| write_file(&d.join("cgroup.kill"), "1").is_ok()) {
            return;
        }
    }
    for pid in pids(plan) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, signal) };
    }
}

/// SIGKILLs everything in the cgroup and removes its directories, retrying briefly while
/// the kernel finishes tearing the processes down. Missing directories are fine. With the
/// systemd driver, the unit is stopped (and reset if it failed) in between, as runc does.
pub fn destroy(plan: &CgroupPlan) -> Result<()> {
    if let Some(unit) = &plan.systemd {
        kill_all(plan, libc::SIGKILL);
        let stopped = systemd::stop(unit);
        return remove_dirs(plan).and(stopped);
    }
    remove_dirs(plan)
}

fn remove_dirs(plan: &CgroupPlan) -> Result<()> {
    let mut last_err = None;
    for attempt in 0..200 {
        kill_all(plan, libc::SIGKILL);
        last_err = None;
        for dir in &plan.dirs {
            match fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => last_err = Some(Error::io(dir, e)),
            }
        }
        if last_err.is_none() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(if attempt < 20 {
            1
        } else {
            10
        }));
    }
    Err(last_err.unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 23 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
33 30 0:29 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
34 30 0:30 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
35 30 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
36 30 0:29 /sub /mnt/x rw,relatime - cgroup cgroup rw,devices
";

    #[test]
    fn parses_the_hybrid_layout() {
        let l = Layout::parse(HYBRID);
        let names: Vec<_> = l
            .hierarchies
            .iter()
            .map(|h| h.mountpoint.to_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "/sys/fs/cgroup/cpu",
                "/sys/fs/cgroup/cpuset",
                "/sys/fs/cgroup/devices",
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/unified"
            ]
        );
        assert_eq!(l.hierarchies[3].controllers, ["name=systemd"]);
        assert!(l.hierarchies[4].unified);
        assert!(l.v1("devices").is_some());
    }

    #[test]
    fn cgroups_path_forms() {
        let p = |s: &str| cgroup_relative_path(Some(Path::new(s)), "id");
        assert_eq!(p("/default/c1").unwrap(), PathBuf::from("default/c1"));
        assert_eq!(p("rel/c1").unwrap(), PathBuf::from("rel/c1"));
        assert_eq!(
            cgroup_relative_path(None, "myid").unwrap(),
            PathBuf::from("myid")
        );
        // The cgroupfs driver does not interpret the systemd form (as runc's): a directory
        // of that name, nothing in systemd's slices.
        assert_eq!(
            p("kubepods-besteffort.slice:cri-containerd:abc").unwrap(),
            PathBuf::from("kubepods-besteffort.slice:cri-containerd:abc")
        );
        for bad in ["/a/../../etc", "/", "a:b/../../x:y"] {
            let e = p(bad).unwrap_err().to_string();
            assert!(e.contains("linux.cgroupsPath"), "{bad}: {e}");
        }
    }

    #[test]
    fn plan_joins_every_hierarchy_and_orders_device_rules() {
        let linux: Linux = serde_json::from_str(
            r#"{"cgroupsPath":"/default/c1","resources":{"devices":[
                {"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":10,"minor":229,"access":"rw"}]}}"#,
        )
        .unwrap();
        let plan = plan_cgroup(&linux, "c1", &[], &Layout::parse(HYBRID)).unwrap();
        assert_eq!(plan.dirs.len(), 5);
        assert_eq!(
            plan.dirs[4],
            PathBuf::from("/sys/fs/cgroup/unified/default/c1")
        );
        assert_eq!(
            plan.devices_dir,
            Some(PathBuf::from("/sys/fs/cgroup/devices/default/c1"))
        );
        assert_eq!(
            plan.device_rules[0],
            DeviceRule {
                allow: false,
                rule: "a".into()
            }
        );
        assert_eq!(
            plan.device_rules[1],
            DeviceRule {
                allow: true,
                rule: "c 10:229 rw".into()
            }
        );
        assert!(plan.device_rules.iter().any(|r| r.rule == "c 1:3 rwm"));
    }

    fn hybrid() -> Layout {
        let mut l = Layout::parse(HYBRID);
        l.hierarchies[4].controllers = vec!["hugetlb".into()];
        l
    }

    #[test]
    fn resources_land_in_v1_files_and_hugetlb_in_the_unified_hierarchy() {
        let linux: Linux = serde_json::from_str(
            r#"{"cgroupsPath":"/d/c","resources":{"cpu":{"shares":512,"quota":50000,"period":100000,"cpus":"0"},
                "hugepageLimits":[{"pageSize":"2MB","limit":4194304}]}}"#,
        )
        .unwrap();
        let plan = plan_cgroup(&linux, "c", &[], &hybrid()).unwrap();
        let w: Vec<_> = plan
            .writes
            .iter()
            .map(|w| (w.dir.to_str().unwrap(), w.file.as_str(), w.value.as_str()))
            .collect();
        assert_eq!(
            w,
            [
                ("/sys/fs/cgroup/cpu/d/c", "cpu.shares", "512"),
                ("/sys/fs/cgroup/cpu/d/c", "cpu.cfs_period_us", "100000"),
                ("/sys/fs/cgroup/cpu/d/c", "cpu.cfs_quota_us", "50000"),
                ("/sys/fs/cgroup/cpuset/d/c", "cpuset.cpus", "0"),
                ("/sys/fs/cgroup/unified/d/c", "hugetlb.2MB.max", "4194304"),
            ]
        );
    }

    #[test]
    fn missing_controllers_are_errors_naming_the_field() {
        let linux: Linux =
            serde_json::from_str(r#"{"resources":{"memory":{"limit":1000000}}}"#).unwrap();
        let e = plan_cgroup(&linux, "c", &[], &hybrid())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("linux.resources.memory") && e.contains("not available"),
            "{e}"
        );
        let linux: Linux =
            serde_json::from_str(r#"{"resources":{"network":{"classID":1}}}"#).unwrap();
        let e = plan_cgroup(&linux, "c", &[], &hybrid())
            .unwrap_err()
            .to_string();
        assert!(e.contains("linux.resources.network.classID"), "{e}");
    }

    #[test]
    fn v2_mappings() {
        let mut l = Layout::parse("35 30 0:31 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        l.hierarchies[0].controllers = ["cpu", "cpuset", "memory", "pids", "io", "hugetlb"]
            .map(String::from)
            .to_vec();
        let linux: Linux = serde_json::from_str(
            r#"{"cgroupsPath":"/k/c","resources":{"cpu":{"shares":1024,"quota":-1},
                "memory":{"limit":1048576,"swap":2097152,"reservation":1000},"pids":{"limit":0},
                "blockIO":{"weight":100,"throttleReadBpsDevice":[{"major":8,"minor":0,"rate":1000}]},
                "unified":{"memory.high":"900000"}}}"#,
        )
        .unwrap();
        let plan = plan_cgroup(&linux, "c", &[], &l).unwrap();
        let w: Vec<_> = plan
            .writes
            .iter()
            .map(|w| (w.file.as_str(), w.value.as_str()))
            .collect();
        assert_eq!(
            w,
            [
                ("cpu.weight", "39"),
                ("cpu.max", "max 100000"),
                ("memory.max", "1048576"),
                ("memory.low", "1000"),
                ("memory.swap.max", "1048576"),
                ("pids.max", "max"),
                ("io.bfq.weight", "100"),
                ("io.max", "8:0 rbps=1000"),
                ("memory.high", "900000"),
            ]
        );
        assert!(plan
            .writes
            .iter()
            .all(|w| w.dir == Path::new("/sys/fs/cgroup/k/c")));
        let unlimited: Linux =
            serde_json::from_str(r#"{"resources":{"memory":{"limit":-1}}}"#).unwrap();
        let plan2 = plan_cgroup(&unlimited, "c", &[], &l).unwrap();
        let w2: Vec<_> = plan2
            .writes
            .iter()
            .map(|w| (w.file.as_str(), w.value.as_str(), w.optional))
            .collect();
        assert_eq!(
            w2,
            [
                ("memory.max", "max", false),
                ("memory.swap.max", "max", true)
            ]
        );
        // Without BFQ the weight goes to io.weight, on its own scale (as runc maps it).
        let weight = plan
            .writes
            .iter()
            .find(|w| w.file == "io.bfq.weight")
            .unwrap();
        assert_eq!(weight.fallback, Some(("io.weight".into(), "910".into())));
        let bad: Linux =
            serde_json::from_str(r#"{"resources":{"memory":{"swappiness":10}}}"#).unwrap();
        let e = plan_cgroup(&bad, "c", &[], &l).unwrap_err().to_string();
        assert!(e.contains("linux.resources.memory.swappiness"), "{e}");
        // unified may set limits on the container's subtree, never the core files that move
        // processes or change the hierarchy.
        for key in [
            "cgroup.procs",
            "cgroup.threads",
            "cgroup.subtree_control",
            "cgroup.type",
            "cgroup.freeze",
            "cgroup.kill",
        ] {
            let core: Linux =
                serde_json::from_value(serde_json::json!({"resources": {"unified": {key: "1"}}}))
                    .unwrap();
            let e = plan_cgroup(&core, "c", &[], &l).unwrap_err().to_string();
            assert!(
                e.contains(&format!("linux.resources.unified.{key}")) && e.contains("core file"),
                "{e}"
            );
        }
        let limit: Linux =
            serde_json::from_str(r#"{"resources":{"unified":{"cgroup.max.descendants":"5"}}}"#)
                .unwrap();
        assert!(plan_cgroup(&limit, "c", &[], &l).is_ok());
    }

    #[test]
    fn device_rules_on_a_v2_only_host_become_an_ebpf_program_on_the_container_cgroup() {
        let l = Layout::parse("35 30 0:31 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        let linux: Linux = serde_json::from_str(
            r#"{"cgroupsPath":"/k/c","resources":{"devices":[{"allow":false,"access":"rwm"}]}}"#,
        )
        .unwrap();
        let plan = plan_cgroup(&linux, "c", &[], &l).unwrap();
        assert_eq!(plan.devices_dir, None);
        assert_eq!(
            plan.bpf_devices_dir,
            Some(PathBuf::from("/sys/fs/cgroup/k/c"))
        );
        devices_bpf::program(&plan.device_rules).unwrap();
    }

    #[test]
    fn v1_device_rules_are_written_sorted_after_the_reset_like_runc() {
        let r = |allow, rule: &str| DeviceRule {
            allow,
            rule: rule.into(),
        };
        let rules = [
            r(false, "a"),
            r(true, "c 1:3 rwm"),
            r(true, "c 136:* rwm"),
            r(true, "c 10:200 rwm"),
            r(true, "b *:* m"),
            r(true, "c *:* m"),
            r(true, "c 1:3 rwm"),
        ];
        let w: Vec<String> = v1_device_writes(&rules)
            .into_iter()
            .map(|r| r.rule)
            .collect();
        assert_eq!(
            w,
            [
                "a",
                "b *:* m",
                "c *:* m",
                "c 1:3 rwm",
                "c 10:200 rwm",
                "c 136:* rwm"
            ]
        );
        // An allow after a deny after the reset: order is meaning, kept as given.
        let mixed = [r(false, "a"), r(true, "c *:* rwm"), r(false, "c 1:5 rwm")];
        assert_eq!(v1_device_writes(&mixed), mixed.to_vec());
    }

    #[test]
    fn shares_map_to_weight_like_runc() {
        assert_eq!(resources::shares_to_weight(2), 1);
        assert_eq!(resources::shares_to_weight(1024), 39);
        assert_eq!(resources::shares_to_weight(262_144), 10_000);
    }
}
