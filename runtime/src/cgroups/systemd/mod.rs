//! The systemd cgroup driver (runtime option `SystemdCgroup`): the container's cgroup is a
//! transient scope unit `prefix-name.scope` in the slice of `cgroupsPath` ("slice:prefix:name"),
//! which systemd creates, owns and removes. Limits that systemd knows go in as unit
//! properties (so a `systemctl daemon-reload` keeps them); every limit is also written to
//! the scope's files as with cgroupfs, as runc does.
//!
//! Planning ([`plan_unit`]) is pure. Talking to systemd ([`start`], [`stop`],
//! [`set_properties`]) goes through [`dbus`], a minimal client of the few Manager methods
//! needed; nothing else in the runtime sees D-Bus.

mod dbus;
mod plan;

use std::{path::Path, time::Duration};

use serde::{Deserialize, Serialize};

use self::dbus::{BusError, Manager};
pub use self::plan::{
    device_properties, expand_slice, plan_unit, range_to_bits, resource_properties, unit_of,
};
use crate::{Error, Result};

/// Which cgroup manager a container's cgroup belongs to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CgroupDriver {
    /// The shim creates and removes the directories itself.
    #[default]
    Cgroupfs,
    /// systemd does, as a transient scope unit (runtime option `SystemdCgroup`).
    Systemd,
}

/// The runtime option users set to pick the systemd driver, for messages.
pub const OPTION: &str =
    "SystemdCgroup (runc Options systemd_cgroup, a CRI handler's options, --runtime-config-path TOML)";

/// A transient scope unit, as planned: what StartTransientUnit gets (plus the init's pid).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemdUnit {
    /// `prefix-name.scope`.
    pub unit: String,
    /// The slice the scope goes into (`Slice=`).
    pub slice: String,
    /// Unit properties besides `PIDs`, in the order they are sent.
    pub properties: Vec<Property>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Property {
    pub name: String,
    pub value: Value,
}

/// The D-Bus types unit properties use here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// `b`
    Bool(bool),
    /// `t`; `u64::MAX` is systemd's "infinity".
    U64(u64),
    /// `s`
    Str(String),
    /// `ay`: a CPU or memory node bitmask, lowest CPU in the lowest bit of the first byte.
    Bytes(Vec<u8>),
    /// `a(ss)`: DeviceAllow entries.
    DeviceAllow(Vec<DeviceAllow>),
}

/// One DeviceAllow entry: a device (or device class) and its access, `r`, `w`, `m`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceAllow {
    pub device: DeviceSpec,
    pub access: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceSpec {
    /// `/dev/char/1:3`, `char-*`, `block-*`: given to systemd as is.
    Path(String),
    /// Every minor of a major: systemd wants the class name from /proc/devices
    /// (`char-pts`), looked up when the unit starts.
    Class { block: bool, major: u32 },
}

/// The system bus systemd listens on, unless `DBUS_SYSTEM_BUS_ADDRESS` says otherwise.
pub const SYSTEM_BUS: &str = "/run/dbus/system_bus_socket";
/// How long systemd may take to start or stop a scope (runc waits as long).
const JOB_TIMEOUT: Duration = Duration::from_secs(30);

fn bus_address() -> String {
    std::env::var("DBUS_SYSTEM_BUS_ADDRESS").unwrap_or_else(|_| format!("unix:path={SYSTEM_BUS}"))
}

fn unreachable(e: impl std::fmt::Display) -> Error {
    Error::Systemd(format!(
        "runtime option {OPTION} is set, but systemd is not reachable over D-Bus at {}: {e}. \
         Set SystemdCgroup = false to use the cgroupfs driver, or run systemd and dbus",
        bus_address()
    ))
}

/// Connects and subscribes to job signals, with the errors a user can act on.
fn connect() -> Result<Manager> {
    if !Path::new("/run/systemd/system").is_dir() {
        return Err(Error::Systemd(format!(
            "runtime option {OPTION} is set, but this host does not run systemd \
             (no /run/systemd/system). Set SystemdCgroup = false to use the cgroupfs driver"
        )));
    }
    let m = Manager::connect().map_err(unreachable)?;
    m.subscribe().map_err(|e| {
        if e.name == "org.freedesktop.DBus.Error.ServiceUnknown" {
            unreachable(format!("systemd is not on the bus: {e}"))
        } else {
            unreachable(e)
        }
    })?;
    Ok(m)
}

/// Fails early, before anything is created, when systemd cannot be asked for a unit.
pub fn check_reachable() -> Result<()> {
    connect().map(drop)
}

/// The name /proc/devices gives the device class `major` (`char-pts` for 136), as DeviceAllow
/// wants wildcard-minor rules; None (the entry is skipped, with a warning) if it has none.
fn device_class(block: bool, major: u32) -> Option<String> {
    let devices = std::fs::read_to_string("/proc/devices").unwrap_or_default();
    let section = if block {
        "Block devices:"
    } else {
        "Character devices:"
    };
    let name = devices
        .split("\n\n")
        .find(|s| s.trim_start().starts_with(section))
        .and_then(|s| {
            s.lines().skip(1).find_map(|l| {
                let (num, name) = l.trim().split_once(' ')?;
                (num.parse() == Ok(major)).then(|| name.trim().to_owned())
            })
        });
    let kind = if block { "block" } else { "char" };
    match name {
        Some(n) => Some(format!("{kind}-{n}")),
        None => {
            log::warn!("no {kind} device class {major} in /proc/devices: not in DeviceAllow");
            None
        }
    }
}

/// Properties systemd versions before `since` do not know.
fn supported(p: &Property, version: u32) -> bool {
    let since = match p.name.as_str() {
        "CPUQuotaPeriodUSec" => 242,
        "AllowedCPUs" | "AllowedMemoryNodes" => 244,
        _ => 0,
    };
    version >= since
}

fn filter_for(m: &Manager, props: &[Property]) -> Vec<Property> {
    let version = m.version().unwrap_or(u32::MAX);
    props
        .iter()
        .filter(|p| supported(p, version))
        .cloned()
        .collect()
}

/// Starts the unit's transient scope with process `pid` in it, and waits until systemd is
/// done. A leftover unit of the same name (a failed one keeps its name until reset) is
/// reset once and the start retried; a live one is an error, never shared.
pub fn start(unit: &SystemdUnit, pid: i32) -> Result<()> {
    let m = connect()?;
    let props = filter_for(&m, &unit.properties);
    let fail = |what: String| Error::Systemd(format!("start unit {}: {what}", unit.unit));
    let mut retried = false;
    let job = loop {
        match m.start_transient_unit(&unit.unit, &props, &[pid as u32], &device_class) {
            Ok(job) => break job,
            Err(e) if e.name == "org.freedesktop.systemd1.UnitExists" && !retried => {
                let _ = m.reset_failed_unit(&unit.unit);
                retried = true;
            }
            Err(e) if e.name == "org.freedesktop.systemd1.UnitExists" => {
                return Err(fail(format!(
                    "{e}: another container already has this cgroupsPath"
                )))
            }
            Err(e) => return Err(fail(e.to_string())),
        }
    };
    match m
        .wait_job(&job, JOB_TIMEOUT)
        .map_err(|e| fail(e.to_string()))?
    {
        Some(r) if r == "done" => Ok(()),
        outcome => {
            let _ = m.reset_failed_unit(&unit.unit);
            let _ = m.stop_unit(&unit.unit);
            Err(fail(match outcome {
                Some(r) => format!(
                    "systemd's job ended with {r:?} (journalctl -u {})",
                    unit.unit
                ),
                None => format!("systemd did not finish within {JOB_TIMEOUT:?}"),
            }))
        }
    }
}

/// Stops the unit (systemd kills what is left in it and removes its cgroup), waits, and
/// resets it if it failed. A unit that is already gone is fine. Without systemd on the bus
/// (it went away) there is nothing to stop: a warning.
pub fn stop(unit: &SystemdUnit) -> Result<()> {
    let m = match connect() {
        Ok(m) => m,
        Err(e) => {
            log::warn!("stop unit {}: {e}", unit.unit);
            return Ok(());
        }
    };
    let result = match m.stop_unit(&unit.unit) {
        Ok(job) => match m.wait_job(&job, JOB_TIMEOUT) {
            Ok(Some(r)) if r != "done" => {
                log::warn!("stop unit {}: systemd's job ended with {r:?}", unit.unit);
                Ok(())
            }
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(Error::Systemd(format!(
                "stop unit {}: systemd did not finish within {JOB_TIMEOUT:?}",
                unit.unit
            ))),
            Err(e) => Err(Error::Systemd(format!("stop unit {}: {e}", unit.unit))),
        },
        Err(e) if is_gone(&e) => Ok(()),
        Err(e) => Err(Error::Systemd(format!("stop unit {}: {e}", unit.unit))),
    };
    // A unit that failed (an OOM kill, say) stays loaded until this.
    let _ = m.reset_failed_unit(&unit.unit);
    result
}

fn is_gone(e: &BusError) -> bool {
    e.name == "org.freedesktop.systemd1.NoSuchUnit" || e.message.contains("not loaded")
}

/// Sets properties of the running unit (Update), so that systemd keeps them rather than
/// restoring older ones when it re-applies the unit's settings.
pub fn set_properties(unit: &SystemdUnit, props: &[Property]) -> Result<()> {
    if props.is_empty() {
        return Ok(());
    }
    let m = connect()?;
    let props = filter_for(&m, props);
    m.set_unit_properties(&unit.unit, &props, &device_class)
        .map_err(|e| Error::Systemd(format!("set properties of unit {}: {e}", unit.unit)))
}

#[cfg(test)]
mod tests;
