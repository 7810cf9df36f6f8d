//! `linux.seccomp` -> a typed description of the filter, checked field by field.
//!
//! Pure: nothing here talks to libseccomp or the kernel. Syscall names are resolved when the
//! init builds the filter ([`crate::seccomp`]), because which names exist is a property of
//! the linked libseccomp, not of the spec. Where the spec leaves room, runc's behaviour is
//! the reference (see each item).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator, Spec,
};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

const FIELD: &str = "linux.seccomp";
/// Linux passes at most six arguments to a syscall.
const MAX_ARGS: usize = 6;
/// The kernel caps SECCOMP_RET_ERRNO data at MAX_ERRNO; a larger errnoRet would silently
/// become 4095.
const MAX_ERRNO: u32 = 4095;
/// After loading the filter the init hands the notify fd to the shim with this syscall; were
/// it notified, it would wait for an agent that can only get the fd through it.
const HANDOFF_SYSCALL: &str = "sendmsg";

/// What the filter does with a matching syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// SCMP_ACT_KILL and SCMP_ACT_KILL_THREAD.
    KillThread,
    KillProcess,
    Trap,
    /// Fail with this errno (0 makes the syscall "succeed" without running).
    Errno(u16),
    /// Hand the syscall to a ptrace tracer with this message.
    Trace(u16),
    Log,
    Allow,
    /// Ask the seccomp agent at `listenerPath`.
    Notify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilterFlag {
    /// Synchronise all threads on the filter (the init is single-threaded; set anyway).
    Tsync,
    /// Log every action but SCMP_ACT_ALLOW.
    Log,
    /// Do not enable the speculative store bypass mitigation.
    SpecAllow,
    /// Notified syscalls wait killably once the agent has received them (libseccomp 2.6).
    WaitKillableRecv,
}

impl FilterFlag {
    pub fn spec_name(self) -> &'static str {
        match self {
            FilterFlag::Tsync => "SECCOMP_FILTER_FLAG_TSYNC",
            FilterFlag::Log => "SECCOMP_FILTER_FLAG_LOG",
            FilterFlag::SpecAllow => "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
            FilterFlag::WaitKillableRecv => "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
        }
    }
}

/// One argument comparison, as libseccomp takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compare {
    Ne(u64),
    Lt(u64),
    Le(u64),
    Eq(u64),
    Ge(u64),
    Gt(u64),
    /// `(arg & mask) == value`: the spec's `value` is the mask, `valueTwo` the value.
    MaskedEq {
        mask: u64,
        value: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgCondition {
    pub index: u8,
    pub compare: Compare,
}

/// One entry of `linux.seccomp.syscalls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyscallRule {
    /// `linux.seccomp.syscalls[i]`, for errors the init reports while building the filter.
    pub field: String,
    pub names: Vec<String>,
    pub action: Action,
    /// The rule matches when every condition of one of these sets holds; no set at all
    /// matches unconditionally. More than one set only comes from several conditions on
    /// the same argument: runc then adds one rule per condition (so they OR), and profiles
    /// written for Docker rely on that.
    pub condition_sets: Vec<Vec<ArgCondition>>,
}

/// Where the notify fd goes, and the parts of the container state known at plan time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerPlan {
    /// Absolute; a relative `listenerPath` is taken relative to the bundle, as runc (which
    /// containerd starts in the bundle) does.
    pub path: PathBuf,
    pub metadata: Option<String>,
    pub id: String,
    pub bundle: PathBuf,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompPlan {
    pub default_action: Action,
    /// Added to the native architecture.
    pub architectures: Vec<Arch>,
    pub flags: Vec<FilterFlag>,
    /// In spec order, without rules whose action is the default one (libseccomp refuses
    /// them, and they change nothing).
    pub rules: Vec<SyscallRule>,
    /// Set when some rule notifies.
    pub listener: Option<ListenerPlan>,
}

impl SeccompPlan {
    pub fn notifies(&self) -> bool {
        self.rules.iter().any(|r| r.action == Action::Notify)
    }
}

fn action(field: &str, a: LinuxSeccompAction, errno_ret: Option<u32>) -> Result<Action> {
    let errno_field = || {
        if field.ends_with("defaultAction") {
            format!("{FIELD}.defaultErrnoRet")
        } else {
            format!("{}.errnoRet", field.trim_end_matches(".action"))
        }
    };
    let value = |default: u32, max: u32| -> Result<u16> {
        let v = errno_ret.unwrap_or(default);
        if v > max {
            return Err(Error::invalid(
                errno_field(),
                format!("{v} is out of range (at most {max})"),
            ));
        }
        Ok(v as u16)
    };
    let eperm = libc::EPERM as u32;
    let act = match a {
        LinuxSeccompAction::ScmpActErrno => return Ok(Action::Errno(value(eperm, MAX_ERRNO)?)),
        LinuxSeccompAction::ScmpActTrace => return Ok(Action::Trace(value(eperm, 0xffff)?)),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            Action::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => Action::KillProcess,
        LinuxSeccompAction::ScmpActTrap => Action::Trap,
        LinuxSeccompAction::ScmpActLog => Action::Log,
        LinuxSeccompAction::ScmpActAllow => Action::Allow,
        LinuxSeccompAction::ScmpActNotify => Action::Notify,
    };
    // The spec: "When the action doesn't support an errno, the runtime MUST print an error
    // and fail" (runc ignores it silently).
    if let Some(v) = errno_ret {
        return Err(Error::invalid(
            errno_field(),
            format!("errno {v} given, but {a} does not return an errno (only SCMP_ACT_ERRNO and SCMP_ACT_TRACE do)"),
        ));
    }
    Ok(act)
}

fn flag(f: LinuxSeccompFilterFlag) -> FilterFlag {
    match f {
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync => FilterFlag::Tsync,
        LinuxSeccompFilterFlag::SeccompFilterFlagLog => FilterFlag::Log,
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => FilterFlag::SpecAllow,
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => FilterFlag::WaitKillableRecv,
    }
}

fn condition(field: &str, arg: &oci_spec::runtime::LinuxSeccompArg) -> Result<ArgCondition> {
    if arg.index() >= MAX_ARGS {
        return Err(Error::invalid(
            format!("{field}.index"),
            format!(
                "{} is not an argument index (syscalls have arguments 0 to {})",
                arg.index(),
                MAX_ARGS - 1
            ),
        ));
    }
    let v = arg.value();
    let two = arg.value_two().unwrap_or(0);
    let compare = match arg.op() {
        LinuxSeccompOperator::ScmpCmpMaskedEq => Compare::MaskedEq {
            mask: v,
            value: two,
        },
        op => {
            // Only SCMP_CMP_MASKED_EQ reads valueTwo; a value elsewhere would be ignored.
            if two != 0 {
                return Err(Error::invalid(
                    format!("{field}.valueTwo"),
                    format!("{two} given, but only SCMP_CMP_MASKED_EQ uses valueTwo (op is {op})"),
                ));
            }
            match op {
                LinuxSeccompOperator::ScmpCmpNe => Compare::Ne(v),
                LinuxSeccompOperator::ScmpCmpLt => Compare::Lt(v),
                LinuxSeccompOperator::ScmpCmpLe => Compare::Le(v),
                LinuxSeccompOperator::ScmpCmpEq => Compare::Eq(v),
                LinuxSeccompOperator::ScmpCmpGe => Compare::Ge(v),
                LinuxSeccompOperator::ScmpCmpGt => Compare::Gt(v),
                LinuxSeccompOperator::ScmpCmpMaskedEq => unreachable!("handled above"),
            }
        }
    };
    Ok(ArgCondition {
        index: arg.index() as u8,
        compare,
    })
}

fn condition_sets(conds: Vec<ArgCondition>) -> Vec<Vec<ArgCondition>> {
    if conds.is_empty() {
        return Vec::new();
    }
    let mut per_index = [0usize; MAX_ARGS];
    conds.iter().for_each(|c| per_index[c.index as usize] += 1);
    if per_index.iter().any(|n| *n > 1) {
        conds.into_iter().map(|c| vec![c]).collect()
    } else {
        vec![conds]
    }
}

fn listener(s: &LinuxSeccomp, spec: &Spec, bundle: &Path, id: &str) -> Result<ListenerPlan> {
    let path = match s.listener_path() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => return Err(Error::invalid(
            format!("{FIELD}.listenerPath"),
            "required: a rule uses SCMP_ACT_NOTIFY, and the notify fd must go to a seccomp agent",
        )),
    };
    Ok(ListenerPlan {
        path: bundle.join(path),
        metadata: s.listener_metadata().clone(),
        id: id.to_owned(),
        bundle: bundle.to_path_buf(),
        annotations: spec
            .annotations()
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

/// Plans `linux.seccomp` of `spec`; `None` when there is none.
pub fn plan_seccomp(spec: &Spec, bundle: &Path, id: &str) -> Result<Option<SeccompPlan>> {
    let Some(s) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
        return Ok(None);
    };
    let default_action = action(
        &format!("{FIELD}.defaultAction"),
        s.default_action(),
        s.default_errno_ret(),
    )?;
    if default_action == Action::Notify {
        // Every syscall of the init after loading, the fd hand-off included, would wait
        // for an agent that has no fd yet (runc refuses it too).
        return Err(Error::invalid(
            format!("{FIELD}.defaultAction"),
            "SCMP_ACT_NOTIFY cannot be the default action",
        ));
    }
    let flags = match s.flags() {
        Some(flags) => flags.iter().map(|f| flag(*f)).collect(),
        // As runc (since 1.2): without an explicit list the filter does not force the costly
        // speculative store bypass mitigation on the container. `"flags": []` asks for none.
        None => vec![FilterFlag::SpecAllow],
    };

    let mut rules = Vec::new();
    for (i, sc) in s.syscalls().iter().flatten().enumerate() {
        let field = format!("{FIELD}.syscalls[{i}]");
        let act = action(&format!("{field}.action"), sc.action(), sc.errno_ret())?;
        if sc.names().is_empty() {
            return Err(Error::invalid(
                format!("{field}.names"),
                "must name at least one syscall",
            ));
        }
        for (j, name) in sc.names().iter().enumerate() {
            if name.is_empty() {
                return Err(Error::invalid(
                    format!("{field}.names[{j}]"),
                    "empty syscall name",
                ));
            }
            if act == Action::Notify && name == HANDOFF_SYSCALL {
                return Err(Error::invalid(
                    format!("{field}.names[{j}]"),
                    format!("SCMP_ACT_NOTIFY cannot be used for {HANDOFF_SYSCALL}: the runtime hands the notify fd to the agent with it"),
                ));
            }
        }
        let conds = sc
            .args()
            .iter()
            .flatten()
            .enumerate()
            .map(|(j, a)| condition(&format!("{field}.args[{j}]"), a))
            .collect::<Result<Vec<_>>>()?;
        if act == default_action {
            continue;
        }
        rules.push(SyscallRule {
            field,
            names: sc.names().clone(),
            action: act,
            condition_sets: condition_sets(conds),
        });
    }

    let listener = if rules.iter().any(|r| r.action == Action::Notify) {
        Some(listener(s, spec, bundle, id)?)
    } else {
        None
    };
    if s.listener_metadata().is_some() && s.listener_path().is_none() {
        return Err(Error::invalid(
            format!("{FIELD}.listenerMetadata"),
            "set without listenerPath",
        ));
    }
    Ok(Some(SeccompPlan {
        default_action,
        architectures: s.architectures().clone().unwrap_or_default(),
        flags,
        rules,
        listener,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// containerd 1.6.20's `ctr run --seccomp` spec (its default profile), as written to
    /// the bundle.
    const CTR_SECCOMP_SPEC: &str = include_str!("testdata/ctr-seccomp-spec.json");

    fn spec_with(seccomp: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "annotations": {"a": "b"},
            "linux": {"seccomp": seccomp}
        }))
        .unwrap()
    }

    fn plan(seccomp: serde_json::Value) -> Result<SeccompPlan> {
        plan_seccomp(&spec_with(seccomp), Path::new("/b"), "c1").map(Option::unwrap)
    }

    fn err(seccomp: serde_json::Value) -> String {
        plan(seccomp).unwrap_err().to_string()
    }

    #[test]
    fn no_seccomp_no_plan() {
        let spec: Spec =
            serde_json::from_str(r#"{"ociVersion":"1.0.2","root":{"path":"r"}}"#).unwrap();
        assert_eq!(plan_seccomp(&spec, Path::new("/b"), "c").unwrap(), None);
    }

    #[test]
    fn containerd_default_profile_plans() {
        let spec: Spec = serde_json::from_str(CTR_SECCOMP_SPEC).unwrap();
        let p = plan_seccomp(&spec, Path::new("/b"), "c").unwrap().unwrap();
        assert_eq!(p.default_action, Action::Errno(libc::EPERM as u16));
        assert_eq!(
            p.architectures,
            [Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
        assert_eq!(p.flags, [FilterFlag::SpecAllow]);
        assert!(p.listener.is_none());
        // clone3 fails with ENOSYS, so that libcs fall back to clone.
        let clone3 = p
            .rules
            .iter()
            .find(|r| r.names == ["clone3"])
            .expect("clone3 rule");
        assert_eq!(clone3.action, Action::Errno(libc::ENOSYS as u16));
        // clone is allowed only without namespace flags: one masked comparison.
        let clone = p.rules.iter().find(|r| r.names == ["clone"]).unwrap();
        assert_eq!(clone.condition_sets.len(), 1);
        assert!(matches!(
            clone.condition_sets[0][0].compare,
            Compare::MaskedEq { value: 0, .. }
        ));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<SeccompPlan>(&json).unwrap(), p);
    }

    #[test]
    fn actions_and_errno_values() {
        let p = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
            "syscalls": [
                {"names": ["a"], "action": "SCMP_ACT_KILL"},
                {"names": ["b"], "action": "SCMP_ACT_KILL_THREAD"},
                {"names": ["c"], "action": "SCMP_ACT_KILL_PROCESS"},
                {"names": ["d"], "action": "SCMP_ACT_TRAP"},
                {"names": ["e"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["f"], "action": "SCMP_ACT_ERRNO", "errnoRet": 0},
                {"names": ["g"], "action": "SCMP_ACT_TRACE", "errnoRet": 7},
                {"names": ["h"], "action": "SCMP_ACT_LOG"},
                {"names": ["i"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["j"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
            ]
        }))
        .unwrap();
        assert_eq!(p.default_action, Action::Errno(38));
        let acts: Vec<_> = p.rules.iter().map(|r| r.action).collect();
        assert_eq!(
            acts,
            [
                Action::KillThread,
                Action::KillThread,
                Action::KillProcess,
                Action::Trap,
                Action::Errno(1),
                Action::Errno(0),
                Action::Trace(7),
                Action::Log,
                Action::Allow,
                // "j" repeats the default action: dropped.
            ]
        );
        assert_eq!(p.rules[8].field, "linux.seccomp.syscalls[8]");
    }

    #[test]
    fn errno_on_an_action_without_one_is_refused() {
        let e = err(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ERRNO"},
                         {"names": ["b"], "action": "SCMP_ACT_KILL", "errnoRet": 1}]
        }));
        assert!(e.contains("linux.seccomp.syscalls[1].errnoRet"), "{e}");
        assert!(e.contains("SCMP_ACT_KILL"), "{e}");
        let e = err(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}));
        assert!(e.contains("linux.seccomp.defaultErrnoRet"), "{e}");
        let e = err(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5000}]
        }));
        assert!(
            e.contains("linux.seccomp.syscalls[0].errnoRet: 5000"),
            "{e}"
        );
    }

    #[test]
    fn every_operator_and_masked_eq_with_value_two() {
        let p = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO", "args": [
                {"index": 0, "value": 1, "op": "SCMP_CMP_NE"},
                {"index": 1, "value": 2, "op": "SCMP_CMP_LT"},
                {"index": 2, "value": 3, "op": "SCMP_CMP_LE"},
                {"index": 3, "value": 4, "op": "SCMP_CMP_EQ", "valueTwo": 0},
                {"index": 4, "value": 5, "op": "SCMP_CMP_GE"},
                {"index": 5, "value": 6, "op": "SCMP_CMP_GT"}
            ]}, {"names": ["y"], "action": "SCMP_ACT_ERRNO", "args": [
                {"index": 2, "value": 2, "valueTwo": 2, "op": "SCMP_CMP_MASKED_EQ"}
            ]}]
        }))
        .unwrap();
        let c: Vec<_> = p.rules[0].condition_sets[0]
            .iter()
            .map(|c| (c.index, c.compare))
            .collect();
        assert_eq!(
            c,
            [
                (0, Compare::Ne(1)),
                (1, Compare::Lt(2)),
                (2, Compare::Le(3)),
                (3, Compare::Eq(4)),
                (4, Compare::Ge(5)),
                (5, Compare::Gt(6))
            ]
        );
        assert_eq!(
            p.rules[1].condition_sets,
            [[ArgCondition {
                index: 2,
                compare: Compare::MaskedEq { mask: 2, value: 2 }
            }]]
        );
    }

    #[test]
    fn conditions_on_one_argument_become_alternatives() {
        let p = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [
                {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}
            ]}]
        }))
        .unwrap();
        assert_eq!(p.rules[0].condition_sets.len(), 2);
        assert_eq!(p.rules[0].condition_sets[1][0].compare, Compare::Eq(8));
    }

    #[test]
    fn bad_arguments_name_their_field() {
        let e = err(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO", "args": [
                {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                {"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]
        }));
        assert!(
            e.contains("linux.seccomp.syscalls[0].args[1].index: 6"),
            "{e}"
        );
        let e = err(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO", "args": [
                {"index": 0, "value": 1, "valueTwo": 3, "op": "SCMP_CMP_GT"}]}]
        }));
        assert!(
            e.contains("linux.seccomp.syscalls[0].args[0].valueTwo"),
            "{e}"
        );
        let e = err(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]
        }));
        assert!(e.contains("linux.seccomp.syscalls[0].names"), "{e}");
    }

    #[test]
    fn flags_as_given_or_spec_allow_by_default() {
        let p = plan(
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": [
            "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}),
        )
        .unwrap();
        assert_eq!(
            p.flags,
            [
                FilterFlag::Tsync,
                FilterFlag::Log,
                FilterFlag::SpecAllow,
                FilterFlag::WaitKillableRecv
            ]
        );
        let p = plan(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": []})).unwrap();
        assert!(p.flags.is_empty());
    }

    #[test]
    fn notify_needs_a_listener_and_carries_the_state() {
        let notify = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "agent.sock", "listenerMetadata": "m",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        });
        let p = plan(notify.clone()).unwrap();
        assert!(p.notifies());
        assert_eq!(
            p.listener,
            Some(ListenerPlan {
                path: "/b/agent.sock".into(),
                metadata: Some("m".into()),
                id: "c1".into(),
                bundle: "/b".into(),
                annotations: [("a".to_string(), "b".to_string())].into(),
            })
        );
        let mut no_path = notify.clone();
        no_path.as_object_mut().unwrap().remove("listenerPath");
        let e = err(no_path);
        assert!(e.contains("linux.seccomp.listenerPath"), "{e}");
        let e = err(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW", "listenerMetadata": "m"}));
        assert!(e.contains("linux.seccomp.listenerMetadata"), "{e}");
        // Without a notifying rule the path is ignored, as the spec says.
        let p = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x"}))
        .unwrap();
        assert_eq!(p.listener, None);
    }

    #[test]
    fn notify_where_it_would_deadlock_is_refused() {
        let e = err(serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/x"}));
        assert!(e.contains("linux.seccomp.defaultAction"), "{e}");
        let e = err(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x",
            "syscalls": [{"names": ["read", "sendmsg"], "action": "SCMP_ACT_NOTIFY"}]
        }));
        assert!(e.contains("linux.seccomp.syscalls[0].names[1]"), "{e}");
    }
}
