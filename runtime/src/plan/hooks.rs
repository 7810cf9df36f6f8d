//! OCI hooks (config.md "POSIX-platform Hooks") as planned data: validated once here, run by
//! [`crate::hooks`] from the shim (runtime namespace) or from the init (container namespace).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use oci_spec::runtime::{Hook, Spec};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The six kinds of hooks, in lifecycle order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HookKind {
    /// Deprecated, still honoured: runtime namespace, before createRuntime.
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl HookKind {
    /// The key under `hooks` in config.json.
    pub fn field(self) -> &'static str {
        match self {
            HookKind::Prestart => "prestart",
            HookKind::CreateRuntime => "createRuntime",
            HookKind::CreateContainer => "createContainer",
            HookKind::StartContainer => "startContainer",
            HookKind::Poststart => "poststart",
            HookKind::Poststop => "poststop",
        }
    }
}

/// One hook, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookPlan {
    /// The binary (absolute).
    pub path: PathBuf,
    /// The whole argv, argv[0] included; empty means `[path]`.
    pub args: Vec<String>,
    /// The hook's whole environment (`KEY=value`): nothing of the runtime's is inherited.
    pub env: Vec<String>,
    /// Seconds before the hook is killed and counts as failed.
    pub timeout_secs: Option<u64>,
}

/// Every hook of a container plus what their state JSON needs besides status and pid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HooksPlan {
    pub id: String,
    pub oci_version: String,
    pub bundle: PathBuf,
    /// Filled only when there are hooks: the plan crosses to the launcher for every container.
    pub annotations: BTreeMap<String, String>,
    pub prestart: Vec<HookPlan>,
    pub create_runtime: Vec<HookPlan>,
    pub create_container: Vec<HookPlan>,
    pub start_container: Vec<HookPlan>,
    pub poststart: Vec<HookPlan>,
    pub poststop: Vec<HookPlan>,
}

impl HooksPlan {
    pub fn get(&self, kind: HookKind) -> &[HookPlan] {
        match kind {
            HookKind::Prestart => &self.prestart,
            HookKind::CreateRuntime => &self.create_runtime,
            HookKind::CreateContainer => &self.create_container,
            HookKind::StartContainer => &self.start_container,
            HookKind::Poststart => &self.poststart,
            HookKind::Poststop => &self.poststop,
        }
    }

    /// The init must stop before pivot_root and let the shim run prestart and createRuntime.
    pub fn has_runtime_create_hooks(&self) -> bool {
        !self.prestart.is_empty() || !self.create_runtime.is_empty()
    }
}

fn no_nul(field: &str, value: &str) -> Result<()> {
    if value.contains('\0') {
        return Err(Error::invalid(
            field,
            format!("{value:?} contains a NUL byte"),
        ));
    }
    Ok(())
}

fn plan_hook(field: &str, h: &Hook) -> Result<HookPlan> {
    let path = h.path();
    let path_str = path.to_string_lossy();
    if !path.is_absolute() {
        return Err(Error::invalid(
            format!("{field}.path"),
            format!("{path_str:?} is not an absolute path"),
        ));
    }
    no_nul(&format!("{field}.path"), &path_str)?;
    let args = h.args().clone().unwrap_or_default();
    for (j, a) in args.iter().enumerate() {
        no_nul(&format!("{field}.args[{j}]"), a)?;
    }
    let env = h.env().clone().unwrap_or_default();
    for (j, e) in env.iter().enumerate() {
        let f = format!("{field}.env[{j}]");
        no_nul(&f, e)?;
        if e.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
            return Err(Error::invalid(f, format!("{e:?} is not KEY=value")));
        }
    }
    let timeout_secs = match h.timeout() {
        None => None,
        Some(t) if t > 0 => Some(t as u64),
        Some(t) => {
            return Err(Error::invalid(
                format!("{field}.timeout"),
                format!("{t} is not greater than zero"),
            ))
        }
    };
    Ok(HookPlan {
        path: path.clone(),
        args,
        env,
        timeout_secs,
    })
}

fn plan_list(kind: HookKind, hooks: Option<&Vec<Hook>>) -> Result<Vec<HookPlan>> {
    hooks
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, h)| plan_hook(&format!("hooks.{}[{i}]", kind.field()), h))
        .collect()
}

/// Validates the spec's hooks of container `id` in `bundle`.
pub fn plan_hooks(spec: &Spec, bundle: &Path, id: &str) -> Result<HooksPlan> {
    let Some(h) = spec.hooks() else {
        return Ok(HooksPlan::default());
    };
    #[allow(deprecated)] // prestart is deprecated in the spec, and still honoured
    let prestart = h.prestart().as_ref();
    let mut plan = HooksPlan {
        prestart: plan_list(HookKind::Prestart, prestart)?,
        create_runtime: plan_list(HookKind::CreateRuntime, h.create_runtime().as_ref())?,
        create_container: plan_list(HookKind::CreateContainer, h.create_container().as_ref())?,
        start_container: plan_list(HookKind::StartContainer, h.start_container().as_ref())?,
        poststart: plan_list(HookKind::Poststart, h.poststart().as_ref())?,
        poststop: plan_list(HookKind::Poststop, h.poststop().as_ref())?,
        ..HooksPlan::default()
    };
    if plan != HooksPlan::default() {
        plan.id = id.to_owned();
        plan.oci_version = spec.version().clone();
        plan.bundle = bundle.to_path_buf();
        plan.annotations = spec
            .annotations()
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(hooks: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.2.0",
            "root": {"path": "rootfs"},
            "annotations": {"a": "1"},
            "hooks": hooks,
        }))
        .unwrap()
    }

    fn err(hooks: serde_json::Value) -> String {
        plan_hooks(&spec(hooks), Path::new("/b"), "c")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn plans_every_kind_in_order_with_state_info() {
        let h = |p: &str| serde_json::json!([{"path": p}]);
        let plan = plan_hooks(
            &spec(serde_json::json!({
                "prestart": [{"path": "/p", "args": ["p0", "x"], "env": ["A=b=c"], "timeout": 3}],
                "createRuntime": h("/cr"),
                "createContainer": h("/cc"),
                "startContainer": h("/sc"),
                "poststart": h("/ps"),
                "poststop": h("/pt"),
            })),
            Path::new("/run/b"),
            "c1",
        )
        .unwrap();
        assert_eq!(
            plan.prestart,
            [HookPlan {
                path: "/p".into(),
                args: vec!["p0".into(), "x".into()],
                env: vec!["A=b=c".into()],
                timeout_secs: Some(3),
            }]
        );
        let kinds = [
            (HookKind::CreateRuntime, "/cr"),
            (HookKind::CreateContainer, "/cc"),
            (HookKind::StartContainer, "/sc"),
            (HookKind::Poststart, "/ps"),
            (HookKind::Poststop, "/pt"),
        ];
        for (kind, path) in kinds {
            let hooks = plan.get(kind);
            assert_eq!(hooks.len(), 1, "{kind:?}");
            assert_eq!(hooks[0].path, Path::new(path));
            assert!(hooks[0].args.is_empty() && hooks[0].env.is_empty());
            assert_eq!(hooks[0].timeout_secs, None);
        }
        assert!(plan.has_runtime_create_hooks());
        assert_eq!(
            (plan.id.as_str(), plan.oci_version.as_str()),
            ("c1", "1.2.0")
        );
        assert_eq!(plan.bundle, Path::new("/run/b"));
        assert_eq!(plan.annotations.get("a").map(String::as_str), Some("1"));
    }

    #[test]
    fn no_hooks_plan_to_nothing_not_even_state_info() {
        for hooks in [serde_json::json!({}), serde_json::json!({"poststop": []})] {
            let plan = plan_hooks(&spec(hooks), Path::new("/b"), "c").unwrap();
            assert_eq!(plan, HooksPlan::default());
            assert!(!plan.has_runtime_create_hooks());
        }
    }

    #[test]
    fn errors_name_the_field_and_value() {
        let e = err(serde_json::json!({"createRuntime": [{"path": "/ok"}, {"path": "rel/hook"}]}));
        assert!(
            e.contains("hooks.createRuntime[1].path") && e.contains("rel/hook"),
            "{e}"
        );
        let e = err(serde_json::json!({"poststart": [{"path": "/h", "timeout": 0}]}));
        assert!(
            e.contains("hooks.poststart[0].timeout") && e.contains('0'),
            "{e}"
        );
        let e = err(serde_json::json!({"prestart": [{"path": "/h", "timeout": -5}]}));
        assert!(
            e.contains("hooks.prestart[0].timeout") && e.contains("-5"),
            "{e}"
        );
        let e = err(
            serde_json::json!({"startContainer": [{"path": "/h", "env": ["A=1", "NOEQUALS"]}]}),
        );
        assert!(
            e.contains("hooks.startContainer[0].env[1]") && e.contains("NOEQUALS"),
            "{e}"
        );
        let e = err(serde_json::json!({"poststop": [{"path": "/h", "env": ["=v"]}]}));
        assert!(e.contains("hooks.poststop[0].env[0]"), "{e}");
        let e =
            err(serde_json::json!({"createContainer": [{"path": "/h", "args": ["a", "b\u{0}c"]}]}));
        assert!(e.contains("hooks.createContainer[0].args[1]"), "{e}");
        let e = err(serde_json::json!({"createContainer": [{"path": ""}]}));
        assert!(e.contains("hooks.createContainer[0].path"), "{e}");
    }
}
