//! Pure planning for the systemd driver: unit name and slice from `cgroupsPath`, and the
//! unit properties for a container's limits and device rules.

use std::path::{Path, PathBuf};

use super::{DeviceAllow, DeviceSpec, Property, SystemdUnit, Value, OPTION};
use crate::{
    cgroups::{resources::CgroupWrite, DeviceRule},
    Error, Result,
};

fn prop(name: &str, value: Value) -> Property {
    Property {
        name: name.to_owned(),
        value,
    }
}

const FIELD: &str = "linux.cgroupsPath";

/// Splits `cgroupsPath` as runc's systemd driver does: "slice:prefix:name" (an empty slice
/// is `system.slice`), or nothing at all (`system.slice`, unit `runc-<id>.scope`). Returns
/// the slice, the unit and the unit's cgroup below the hierarchy roots.
pub fn unit_of(cgroups_path: Option<&Path>, id: &str) -> Result<(String, String, PathBuf)> {
    let raw = cgroups_path
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (slice, prefix, name) = if raw.is_empty() {
        ("", "runc", id)
    } else {
        let parts: Vec<&str> = raw.split(':').collect();
        let [slice, prefix, name] = parts[..] else {
            return Err(Error::invalid(
                FIELD,
                format!(
                    "{raw:?} is not of the form \"slice:prefix:name\" that the systemd cgroup \
                     driver needs (e.g. \"system.slice:ctr:{id}\"); it is on because of \
                     runtime option {OPTION}: give a cgroupsPath of that form \
                     (ctr run --cgroup, a kubelet with cgroupDriver: systemd) or set \
                     SystemdCgroup = false"
                ),
            ));
        };
        (slice, prefix, name)
    };
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    if name.ends_with(".slice") {
        return Err(Error::unsupported(
            FIELD,
            format!(
                "{raw:?}: a container's processes cannot live in a slice unit; name a scope \
                 (\"slice:prefix:name\" gives prefix-name.scope)"
            ),
        ));
    }
    if name.is_empty() {
        return Err(Error::invalid(FIELD, format!("{raw:?}: the name is empty")));
    }
    // As runc: prefix "-" name ".scope", even for an empty prefix.
    let unit = format!("{prefix}-{name}.scope");
    if !valid_unit_name(&unit) {
        return Err(Error::invalid(
            FIELD,
            format!("{raw:?}: {unit:?} is not a valid systemd unit name (letters, digits, \":-_.\\\" only)"),
        ));
    }
    let mut path =
        expand_slice(slice).map_err(|m| Error::invalid(FIELD, format!("{raw:?}: {m}")))?;
    path.push(&unit);
    Ok((slice.to_owned(), unit, path))
}

fn valid_unit_name(name: &str) -> bool {
    name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.\\".contains(&b))
}

/// `a-b-c.slice` lives at `a.slice/a-b.slice/a-b-c.slice`; `-.slice` is the root.
pub fn expand_slice(slice: &str) -> std::result::Result<PathBuf, String> {
    let bad = || format!("{slice:?} is not a valid slice name");
    let stem = slice.strip_suffix(".slice").ok_or_else(bad)?;
    if stem.is_empty() || !valid_unit_name(slice) {
        return Err(bad());
    }
    let mut path = PathBuf::new();
    if stem == "-" {
        return Ok(path);
    }
    let mut acc = String::new();
    for part in stem.split('-') {
        if part.is_empty() {
            return Err(bad()); // "-a.slice", "a--b.slice", "a-.slice"
        }
        if !acc.is_empty() {
            acc.push('-');
        }
        acc.push_str(part);
        path.push(format!("{acc}.slice"));
    }
    Ok(path)
}

/// The unit for container `id`: what systemd sets for every container scope, the device
/// allowlist, and the limits of `writes` that systemd has properties for.
pub fn plan_unit(
    slice: String,
    unit: String,
    name: &str,
    writes: &[CgroupWrite],
    device_rules: &[DeviceRule],
    unified: bool,
) -> Result<SystemdUnit> {
    let mut properties = vec![
        prop(
            "Description",
            Value::Str(format!("containerd-shim-rs container {name}")),
        ),
        prop("Slice", Value::Str(slice.clone())),
        prop("Delegate", Value::Bool(true)),
        prop("MemoryAccounting", Value::Bool(true)),
        prop("CPUAccounting", Value::Bool(true)),
        prop(
            if unified {
                "IOAccounting"
            } else {
                "BlockIOAccounting"
            },
            Value::Bool(true),
        ),
        prop("TasksAccounting", Value::Bool(true)),
        prop("DefaultDependencies", Value::Bool(false)),
    ];
    properties.extend(device_properties(device_rules)?);
    properties.extend(resource_properties(writes, unified)?);
    Ok(SystemdUnit {
        unit,
        slice,
        properties,
    })
}

/// systemd's "infinity".
const INFINITY: u64 = u64::MAX;

fn parse_limit(w: &CgroupWrite) -> Result<u64> {
    let v = w.value.trim();
    if v == "max" || v == "-1" {
        return Ok(INFINITY);
    }
    v.parse()
        .map_err(|_| Error::invalid(&w.field, format!("{v:?} is not a number")))
}

/// The unit properties for the cgroup file writes systemd has a property for (the files
/// stay in `writes` too). Used at create and for Update. `unified`: systemd runs the cgroup
/// v2 controllers (a v2-only host); otherwise it runs v1 ones, with v1 property names.
pub fn resource_properties(writes: &[CgroupWrite], unified: bool) -> Result<Vec<Property>> {
    let mut props = Vec::new();
    // v1 splits the CPU quota over two files; systemd takes both together.
    let (mut quota, mut period) = (None, None);
    for w in writes {
        let file = w.file.as_str();
        let name = match file {
            // cgroup v2 names, then v1
            "memory.max" => "MemoryMax",
            "memory.high" => "MemoryHigh",
            "memory.low" => "MemoryLow",
            "memory.min" => "MemoryMin",
            "memory.swap.max" => "MemorySwapMax",
            "pids.max" => "TasksMax",
            "memory.limit_in_bytes" => "MemoryLimit",
            "cpu.weight" | "cpu.shares" | "io.bfq.weight" | "blkio.weight" | "blkio.bfq.weight" => {
                // weights: one value, no "max"
                let Ok(v) = w.value.trim().parse::<u64>() else {
                    continue; // per-device form "8:0 100": files only
                };
                let (name, v) = match file {
                    "cpu.weight" => ("CPUWeight", v),
                    "cpu.shares" => ("CPUShares", v),
                    "io.bfq.weight" => ("IOWeight", bfq_to_io_weight(v)),
                    _ => ("BlockIOWeight", v),
                };
                props.push(prop(name, Value::U64(v)));
                continue;
            }
            "cpu.max" => {
                let mut it = w.value.split_whitespace();
                let q = it.next().unwrap_or("max");
                quota = Some(if q == "max" {
                    -1
                } else {
                    q.parse().map_err(|_| {
                        Error::invalid(&w.field, format!("bad cpu.max {:?}", w.value))
                    })?
                });
                period = it.next().map(|p| p.parse().unwrap_or(0));
                continue;
            }
            "cpu.cfs_quota_us" => {
                quota = Some(w.value.trim().parse().map_err(|_| {
                    Error::invalid(&w.field, format!("{:?} is not a number", w.value))
                })?);
                continue;
            }
            "cpu.cfs_period_us" => {
                period = Some(w.value.trim().parse().map_err(|_| {
                    Error::invalid(&w.field, format!("{:?} is not a number", w.value))
                })?);
                continue;
            }
            // Only cgroup v2 has a cpuset systemd manages.
            "cpuset.cpus" | "cpuset.mems" if unified => {
                let bits = range_to_bits(&w.value)
                    .map_err(|m| Error::invalid(&w.field, format!("{:?}: {m}", w.value)))?;
                let name = if file == "cpuset.cpus" {
                    "AllowedCPUs"
                } else {
                    "AllowedMemoryNodes"
                };
                props.push(prop(name, Value::Bytes(bits)));
                continue;
            }
            _ => continue,
        };
        props.push(prop(name, Value::U64(parse_limit(w)?)));
    }
    if quota.is_some() || period.is_some() {
        let period = period.filter(|p| *p > 0);
        if let Some(p) = period {
            props.push(prop("CPUQuotaPeriodUSec", Value::U64(p)));
        }
        props.push(prop(
            "CPUQuotaPerSecUSec",
            Value::U64(quota_per_sec(
                quota.unwrap_or(-1),
                period.unwrap_or(100_000),
            )),
        ));
    }
    Ok(props)
}

/// CPU time per second of wall time, as runc computes it: rounded up to whole 10 ms
/// (systemd keeps a percentage), `u64::MAX` without a quota.
fn quota_per_sec(quota: i64, period: u64) -> u64 {
    if quota <= 0 || period == 0 {
        return INFINITY;
    }
    let per_sec = quota as u64 * 1_000_000 / period;
    per_sec.div_ceil(10_000) * 10_000
}

/// The IOWeight whose BFQ weight (systemd's conversion) is exactly `bfq` (1..1000).
pub(super) fn bfq_to_io_weight(bfq: u64) -> u64 {
    if bfq <= 100 {
        bfq.max(1)
    } else {
        (bfq.min(1000) - 100) * 11 + 100
    }
}

/// "0-3,8" -> a little-endian bitmask, as AllowedCPUs / AllowedMemoryNodes take it.
pub fn range_to_bits(list: &str) -> std::result::Result<Vec<u8>, String> {
    let mut bits: Vec<u8> = Vec::new();
    for part in list
        .trim()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let num = |s: &str| {
            s.parse::<usize>()
                .map_err(|_| format!("{part:?} is not a range"))
        };
        let (lo, hi) = (num(lo)?, num(hi)?);
        if lo > hi || hi >= 8192 {
            return Err(format!("{part:?} is not a valid range"));
        }
        for bit in lo..=hi {
            if bits.len() <= bit / 8 {
                bits.resize(bit / 8 + 1, 0);
            }
            bits[bit / 8] |= 1 << (bit % 8);
        }
    }
    if bits.is_empty() {
        return Err("empty list".into());
    }
    Ok(bits)
}

/// DevicePolicy and DeviceAllow from the container's device rules (v1 semantics: the last
/// "a" rule sets the default, what follows are exceptions). systemd only knows allowlists:
/// - default deny: `strict` and the allowed devices (a deny exception that cannot be
///   expressed is left to our own enforcement, with a warning);
/// - default allow with no exception: `auto` and an empty list (systemd adds no program);
/// - default allow with deny exceptions: also `auto` and empty, with a warning: our own
///   eBPF program / devices.deny enforce the denials (runc tells systemd "deny all" here,
///   which on cgroup v2 would deny every device alongside our program).
///
/// No rules at all (the spec has no `linux.resources.devices`): nothing is sent.
pub fn device_properties(rules: &[DeviceRule]) -> Result<Vec<Property>> {
    if rules.is_empty() {
        return Ok(Vec::new());
    }
    let parsed = rules.iter().map(parse_rule).collect::<Result<Vec<_>>>()?;
    let reset = parsed.iter().rposition(|r| r.is_reset());
    let (default_allow, exceptions) = match reset {
        Some(i) => (parsed[i].allow, &parsed[i + 1..]),
        None => (true, &parsed[..]),
    };
    let auto = || {
        vec![
            prop("DevicePolicy", Value::Str("auto".into())),
            prop("DeviceAllow", Value::DeviceAllow(Vec::new())),
        ]
    };
    if default_allow {
        if exceptions.iter().any(|r| !r.allow) {
            log::warn!(
                "systemd cannot express device deny rules: DevicePolicy=auto, the denials are \
                 enforced by the container's own device filter"
            );
        }
        return Ok(auto());
    }
    // Allowlist: each allow adds access; a later deny takes access away from an earlier
    // entry for exactly the same device.
    let mut list: Vec<(RuleKey, String)> = Vec::new();
    for r in exceptions {
        if r.allow {
            match list.iter_mut().find(|(k, _)| *k == r.key) {
                Some((_, acc)) => {
                    for c in r.access.chars() {
                        if !acc.contains(c) {
                            acc.push(c);
                        }
                    }
                }
                None => list.push((r.key.clone(), r.access.clone())),
            }
        } else {
            match list.iter_mut().find(|(k, _)| *k == r.key) {
                Some((_, acc)) => acc.retain(|c| !r.access.contains(c)),
                None => log::warn!(
                    "systemd DeviceAllow cannot express the deny rule {:?}: enforced by the \
                     container's own device filter only",
                    r.text
                ),
            }
        }
    }
    let mut entries = Vec::new();
    for (key, access) in list.into_iter().filter(|(_, a)| !a.is_empty()) {
        let kind = if key.block { "block" } else { "char" };
        let device = match (key.major, key.minor) {
            (None, None) => DeviceSpec::Path(format!("{kind}-*")),
            (None, Some(_)) => {
                log::warn!("systemd DeviceAllow has no form for \"{kind} *:n\" rules: skipped");
                continue;
            }
            (Some(major), None) => DeviceSpec::Class {
                block: key.block,
                major,
            },
            (Some(major), Some(minor)) => DeviceSpec::Path(format!("/dev/{kind}/{major}:{minor}")),
        };
        entries.push(DeviceAllow { device, access });
    }
    Ok(vec![
        prop("DevicePolicy", Value::Str("strict".into())),
        prop("DeviceAllow", Value::DeviceAllow(entries)),
    ])
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct RuleKey {
    /// None: every type ("a").
    any_type: bool,
    block: bool,
    major: Option<u32>,
    minor: Option<u32>,
}

struct ParsedRule {
    allow: bool,
    key: RuleKey,
    access: String,
    text: String,
}

impl ParsedRule {
    fn is_reset(&self) -> bool {
        self.key.any_type && self.access.len() == 3
    }
}

fn parse_rule(r: &DeviceRule) -> Result<ParsedRule> {
    let bad = || {
        Error::invalid(
            "linux.resources.devices",
            format!("bad device rule {:?}", r.rule),
        )
    };
    let mut parts = r.rule.split_whitespace();
    let (any_type, block) = match parts.next().ok_or_else(bad)? {
        "a" => (true, false),
        "c" => (false, false),
        "b" => (false, true),
        _ => return Err(bad()),
    };
    let (major, minor) = match parts.next() {
        None => (None, None),
        Some(mm) => {
            let (ma, mi) = mm.split_once(':').ok_or_else(bad)?;
            let num = |s: &str| -> Result<Option<u32>> {
                if s == "*" {
                    Ok(None)
                } else {
                    s.parse().map(Some).map_err(|_| bad())
                }
            };
            (num(ma)?, num(mi)?)
        }
    };
    let mut access = String::new();
    for c in parts.next().unwrap_or("rwm").chars() {
        if !"rwm".contains(c) {
            return Err(bad());
        }
        if !access.contains(c) {
            access.push(c);
        }
    }
    if any_type && (major.is_some() || minor.is_some()) {
        return Err(bad());
    }
    Ok(ParsedRule {
        allow: r.allow,
        key: RuleKey {
            any_type,
            block,
            major,
            minor,
        },
        access,
        text: r.rule.clone(),
    })
}
