//! The few calls of systemd's D-Bus API (org.freedesktop.systemd1.Manager) the driver
//! needs, on the system bus, through the `dbus` crate (libdbus, built in statically).
//! One private connection per operation: operations are rare (create, update, delete),
//! and a connection that outlives a restart of dbus-daemon would need reconnect logic.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use dbus::{
    arg::{RefArg, Variant},
    blocking::{Connection, Proxy},
    message::MatchRule,
    Path as ObjectPath,
};

use super::{DeviceSpec, Property, Value};

const DEST: &str = "org.freedesktop.systemd1";
const OBJECT: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
/// How long one method call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(25);

/// A D-Bus error: its name (`org.freedesktop.systemd1.NoSuchUnit`, ...) and message.
#[derive(Debug)]
pub struct BusError {
    pub name: String,
    pub message: String,
}

impl std::fmt::Display for BusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.name)
    }
}

impl From<dbus::Error> for BusError {
    fn from(e: dbus::Error) -> Self {
        BusError {
            name: e.name().unwrap_or("unknown").to_owned(),
            message: e.message().unwrap_or("no message").to_owned(),
        }
    }
}

pub type BusResult<T> = std::result::Result<T, BusError>;

/// The outcome of a job (the `result` of JobRemoved): "done", "failed", "timeout", ...
pub type JobResult = String;

pub struct Manager {
    conn: Connection,
    /// JobRemoved signals seen so far: (job path, result).
    finished: Arc<Mutex<Vec<(String, JobResult)>>>,
}

type Props = Vec<(String, Variant<Box<dyn RefArg>>)>;

fn variant(v: &Value, device_class: &dyn Fn(bool, u32) -> Option<String>) -> Box<dyn RefArg> {
    match v {
        Value::Bool(b) => Box::new(*b),
        Value::U64(n) => Box::new(*n),
        Value::Str(s) => Box::new(s.clone()),
        Value::Bytes(b) => Box::new(b.clone()),
        Value::DeviceAllow(list) => Box::new(
            list.iter()
                .filter_map(|d| {
                    let path = match &d.device {
                        DeviceSpec::Path(p) => p.clone(),
                        DeviceSpec::Class { block, major } => device_class(*block, *major)?,
                    };
                    Some((path, d.access.clone()))
                })
                .collect::<Vec<(String, String)>>(),
        ),
    }
}

impl Manager {
    /// Connects to the system bus (`DBUS_SYSTEM_BUS_ADDRESS`, else the default socket).
    pub fn connect() -> BusResult<Manager> {
        let conn = Connection::new_system()?;
        Ok(Manager {
            conn,
            finished: Arc::default(),
        })
    }

    fn proxy(&self) -> Proxy<'_, &Connection> {
        self.conn.with_proxy(DEST, OBJECT, CALL_TIMEOUT)
    }

    /// Asks systemd to send job signals to us, and collects JobRemoved. Before any job is
    /// started, so no result can be missed.
    pub fn subscribe(&self) -> BusResult<()> {
        let finished = self.finished.clone();
        self.conn.add_match(
            MatchRule::new_signal(MANAGER, "JobRemoved"),
            move |(_id, job, _unit, result): (u32, ObjectPath<'static>, String, String), _, _| {
                finished
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((job.to_string(), result));
                true
            },
        )?;
        self.proxy()
            .method_call::<(), _, _, _>(MANAGER, "Subscribe", ())?;
        Ok(())
    }

    /// The systemd version (`Version` property, "252.38-1~deb12u1" -> 252).
    pub fn version(&self) -> BusResult<u32> {
        use dbus::blocking::stdintf::org_freedesktop_dbus::Properties;
        let v: String = self.proxy().get(MANAGER, "Version")?;
        Ok(v.trim_start_matches('v')
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0))
    }

    /// StartTransientUnit(name, "replace", properties, no aux units): the job's path.
    pub fn start_transient_unit(
        &self,
        name: &str,
        properties: &[Property],
        pids: &[u32],
        device_class: &dyn Fn(bool, u32) -> Option<String>,
    ) -> BusResult<String> {
        let mut props: Props = properties
            .iter()
            .map(|p| (p.name.clone(), Variant(variant(&p.value, device_class))))
            .collect();
        props.push(("PIDs".into(), Variant(Box::new(pids.to_vec()))));
        let aux: Vec<(String, Props)> = Vec::new();
        let (job,): (ObjectPath,) = self.proxy().method_call(
            MANAGER,
            "StartTransientUnit",
            (name, "replace", props, aux),
        )?;
        Ok(job.to_string())
    }

    /// StopUnit(name, "replace"): the job's path.
    pub fn stop_unit(&self, name: &str) -> BusResult<String> {
        let (job,): (ObjectPath,) =
            self.proxy()
                .method_call(MANAGER, "StopUnit", (name, "replace"))?;
        Ok(job.to_string())
    }

    pub fn reset_failed_unit(&self, name: &str) -> BusResult<()> {
        self.proxy()
            .method_call(MANAGER, "ResetFailedUnit", (name,))
            .map_err(BusError::from)
    }

    /// SetUnitProperties(name, runtime = true, properties).
    pub fn set_unit_properties(
        &self,
        name: &str,
        properties: &[Property],
        device_class: &dyn Fn(bool, u32) -> Option<String>,
    ) -> BusResult<()> {
        let props: Props = properties
            .iter()
            .map(|p| (p.name.clone(), Variant(variant(&p.value, device_class))))
            .collect();
        self.proxy()
            .method_call(MANAGER, "SetUnitProperties", (name, true, props))
            .map_err(BusError::from)
    }

    /// Waits until job `job` is removed and returns its result; None on timeout.
    pub fn wait_job(&self, job: &str, timeout: Duration) -> BusResult<Option<JobResult>> {
        let deadline = Instant::now() + timeout;
        loop {
            let finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, result)) = finished.iter().find(|(j, _)| j == job) {
                return Ok(Some(result.clone()));
            }
            drop(finished);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.conn.process(left.min(Duration::from_millis(500)))?;
        }
    }
}
