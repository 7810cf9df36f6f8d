//! The container process: argv, env, cwd, user, rlimits, capabilities, privileges.

use std::{path::PathBuf, str::FromStr};

use oci_spec::runtime::{LinuxCapabilities, PosixRlimitType, Process};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessPlan {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    pub rlimits: Vec<RlimitPlan>,
    pub capabilities: Option<CapabilitiesPlan>,
    pub no_new_privileges: bool,
    pub oom_score_adj: Option<i32>,
    /// Give the process a pty (the shim copies between it and containerd's fifos).
    #[serde(default)]
    pub terminal: bool,
    /// (height, width) of the terminal.
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RlimitPlan {
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

/// Capability sets as kernel capability numbers; `None` for a set the spec leaves out
/// (runc treats a missing set as empty, and so do we).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilitiesPlan {
    pub bounding: Vec<u8>,
    pub effective: Vec<u8>,
    pub inheritable: Vec<u8>,
    pub permitted: Vec<u8>,
    pub ambient: Vec<u8>,
}

fn rlimit_resource(t: PosixRlimitType) -> u32 {
    match t {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

fn capability_set(field: &str, set: Option<&oci_spec::runtime::Capabilities>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for cap in set.into_iter().flatten() {
        // oci-spec and the caps crate both spell capabilities CAP_*.
        let name = cap.to_string();
        let name = if name.starts_with("CAP_") {
            name
        } else {
            format!("CAP_{name}")
        };
        let parsed = caps::Capability::from_str(&name).map_err(|_| {
            Error::unsupported(
                field,
                format!("capability {name} is unknown to this runtime"),
            )
        })?;
        out.push(parsed.index());
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn plan_capabilities(c: &LinuxCapabilities) -> Result<CapabilitiesPlan> {
    let f = "process.capabilities";
    Ok(CapabilitiesPlan {
        bounding: capability_set(&format!("{f}.bounding"), c.bounding().as_ref())?,
        effective: capability_set(&format!("{f}.effective"), c.effective().as_ref())?,
        inheritable: capability_set(&format!("{f}.inheritable"), c.inheritable().as_ref())?,
        permitted: capability_set(&format!("{f}.permitted"), c.permitted().as_ref())?,
        ambient: capability_set(&format!("{f}.ambient"), c.ambient().as_ref())?,
    })
}

pub fn plan_process(p: &Process) -> Result<ProcessPlan> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(Error::invalid(
            "process.args",
            "must name the program to run",
        ));
    }
    if !p.cwd().is_absolute() {
        return Err(Error::invalid(
            "process.cwd",
            format!("{:?} is not an absolute path", p.cwd()),
        ));
    }
    // apparmorProfile, selinuxLabel, scheduler, ioPriority and execCPUAffinity: see
    // super::kernel.

    let mut rlimits: Vec<RlimitPlan> = Vec::new();
    for (i, r) in p.rlimits().iter().flatten().enumerate() {
        let resource = rlimit_resource(r.typ());
        if rlimits.iter().any(|x| x.resource == resource) {
            return Err(Error::invalid(
                format!("process.rlimits[{i}]"),
                format!("{:?} is set more than once", r.typ()),
            ));
        }
        if r.soft() > r.hard() {
            return Err(Error::invalid(
                format!("process.rlimits[{i}]"),
                format!("soft limit {} is above hard limit {}", r.soft(), r.hard()),
            ));
        }
        rlimits.push(RlimitPlan {
            resource,
            soft: r.soft(),
            hard: r.hard(),
        });
    }

    let user = p.user();
    Ok(ProcessPlan {
        args,
        env: p.env().clone().unwrap_or_default(),
        cwd: p.cwd().clone(),
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        umask: user.umask(),
        rlimits,
        capabilities: p
            .capabilities()
            .as_ref()
            .map(plan_capabilities)
            .transpose()?,
        no_new_privileges: p.no_new_privileges().unwrap_or(false),
        oom_score_adj: p.oom_score_adj(),
        terminal: p.terminal().unwrap_or(false),
        console_size: p.console_size().map(|b| {
            (
                b.height().min(u16::MAX as u64) as u16,
                b.width().min(u16::MAX as u64) as u16,
            )
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(json: &str) -> Process {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn plans_user_env_cwd_rlimits_and_capabilities() {
        let p = process(
            r#"{"user":{"uid":1000,"gid":100,"umask":18,"additionalGids":[5,6]},
                "args":["sh","-c","true"],"env":["PATH=/bin"],"cwd":"/work",
                "rlimits":[{"type":"RLIMIT_NOFILE","hard":1024,"soft":512}],
                "capabilities":{"bounding":["CAP_CHOWN","CAP_KILL"],"effective":["CAP_KILL"]},
                "noNewPrivileges":true,"oomScoreAdj":100}"#,
        );
        let plan = plan_process(&p).unwrap();
        assert_eq!(plan.args, ["sh", "-c", "true"]);
        assert_eq!((plan.uid, plan.gid, plan.umask), (1000, 100, Some(18)));
        assert_eq!(plan.additional_gids, [5, 6]);
        assert_eq!(
            plan.rlimits,
            [RlimitPlan {
                resource: libc::RLIMIT_NOFILE,
                soft: 512,
                hard: 1024
            }]
        );
        let caps = plan.capabilities.unwrap();
        assert_eq!(caps.bounding, [0, 5]); // CAP_CHOWN=0, CAP_KILL=5
        assert_eq!(caps.effective, [5]);
        assert!(caps.ambient.is_empty());
        assert!(plan.no_new_privileges);
        assert_eq!(plan.oom_score_adj, Some(100));
    }

    #[test]
    fn terminal_and_console_size() {
        let p = process(
            r#"{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/","terminal":true,"consoleSize":{"height":40,"width":120}}"#,
        );
        let plan = plan_process(&p).unwrap();
        assert!(plan.terminal);
        assert_eq!(plan.console_size, Some((40, 120)));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"user":{"uid":0,"gid":0},"cwd":"/"}"#, "process.args"),
            (
                r#"{"user":{"uid":0,"gid":0},"args":["x"],"cwd":"rel"}"#,
                "process.cwd",
            ),
            (
                r#"{"user":{"uid":0,"gid":0},"args":["x"],"cwd":"/","rlimits":[
                   {"type":"RLIMIT_NOFILE","hard":1,"soft":1},{"type":"RLIMIT_NOFILE","hard":2,"soft":2}]}"#,
                "process.rlimits[1]",
            ),
            (
                r#"{"user":{"uid":0,"gid":0},"args":["x"],"cwd":"/","rlimits":[
                   {"type":"RLIMIT_CORE","hard":1,"soft":2}]}"#,
                "process.rlimits[0]",
            ),
        ];
        for (json, field) in cases {
            let e = plan_process(&process(json)).unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    }
}
