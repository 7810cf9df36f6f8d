//! containerd's own gRPC API, for what `ctr` cannot reach: a task created but not started, an
//! exec whose process spec we write ourselves. containerd then drives the shim exactly as
//! its Go client would. Used with `#[path = "common/api.rs"] mod api;` next to `mod common;`.
#![allow(dead_code)]

use std::time::Duration;

use containerd_client::{
    services::v1::{
        containers_client::ContainersClient, snapshots::snapshots_client::SnapshotsClient,
        snapshots::MountsRequest, tasks_client::TasksClient, CreateTaskRequest, DeleteTaskRequest,
        ExecProcessRequest, GetContainerRequest, KillRequest, StartRequest,
    },
    tonic::{transport::Channel, Request},
    with_namespace,
};

use crate::common::{env, namespace, wait_until};

/// The OCI process spec type containerd puts into an Exec request.
pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// containerd's gRPC API on the test's private socket, driven from a current-thread runtime.
pub struct Api {
    pub rt: tokio::runtime::Runtime,
    channel: Channel,
}

impl Api {
    pub fn connect() -> Api {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let channel = rt
            .block_on(containerd_client::connect(&env().address))
            .expect("connect to containerd");
        Api { rt, channel }
    }

    /// The connection, for clients of other services.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    /// Tasks.Create for container `id` (made by `ctr c create`), with its snapshot's mounts
    /// as rootfs and no stdio, as the Go client's NewTask does; returns the init's pid.
    pub fn create_task(&self, id: &str) -> Result<u32, String> {
        self.create_task_with_stdout(id, "")
    }

    /// Tasks.Create with the process's stdout going to the fifo `stdout` (none if empty).
    pub fn create_task_with_stdout(&self, id: &str, stdout: &str) -> Result<u32, String> {
        self.create_task_with(id, stdout, None)
    }

    /// Tasks.Create with stdout to `stdout` (none if empty) and the runtime options `options`.
    pub fn create_task_with(
        &self,
        id: &str,
        stdout: &str,
        options: Option<prost_types::Any>,
    ) -> Result<u32, String> {
        let ns = namespace();
        self.rt.block_on(async {
            let container = ContainersClient::new(self.channel.clone())
                .get(with_namespace!(GetContainerRequest { id: id.into() }, ns))
                .await
                .map_err(|e| format!("get container {id}: {e}"))?
                .into_inner()
                .container
                .ok_or("no container")?;
            let mounts = SnapshotsClient::new(self.channel.clone())
                .mounts(with_namespace!(
                    MountsRequest {
                        snapshotter: container.snapshotter.clone(),
                        key: container.snapshot_key.clone(),
                    },
                    ns
                ))
                .await
                .map_err(|e| format!("snapshot mounts of {id}: {e}"))?
                .into_inner()
                .mounts;
            self.tasks()
                .create(with_namespace!(
                    CreateTaskRequest {
                        container_id: id.into(),
                        rootfs: mounts,
                        stdout: stdout.into(),
                        options,
                        ..Default::default()
                    },
                    ns
                ))
                .await
                .map(|r| r.into_inner().pid)
                .map_err(|e| format!("create task {id}: {}", e.message()))
        })
    }

    /// Tasks.Start of the init (`exec_id` empty) or of an exec; returns its pid.
    pub fn start(&self, id: &str, exec_id: &str) -> Result<u32, String> {
        let ns = namespace();
        self.rt
            .block_on(self.tasks().start(with_namespace!(
                StartRequest {
                    container_id: id.into(),
                    exec_id: exec_id.into(),
                },
                ns
            )))
            .map(|r| r.into_inner().pid)
            .map_err(|e| format!("start {id}/{exec_id}: {}", e.message()))
    }

    /// Tasks.Exec with the process spec `spec` (OCI Process JSON) and no stdio.
    pub fn exec(&self, id: &str, exec_id: &str, spec: &serde_json::Value) -> Result<(), String> {
        let ns = namespace();
        self.rt
            .block_on(self.tasks().exec(with_namespace!(
                ExecProcessRequest {
                    container_id: id.into(),
                    exec_id: exec_id.into(),
                    spec: Some(prost_types::Any {
                        type_url: PROCESS_TYPE_URL.into(),
                        value: serde_json::to_vec(spec).unwrap(),
                    }),
                    ..Default::default()
                },
                ns
            )))
            .map(|_| ())
            .map_err(|e| format!("exec {id}/{exec_id}: {}", e.message()))
    }

    /// Exec, then Start: the exec's pid, or the error of either step.
    pub fn exec_and_start(
        &self,
        id: &str,
        exec_id: &str,
        spec: &serde_json::Value,
    ) -> Result<u32, String> {
        self.exec(id, exec_id, spec)?;
        self.start(id, exec_id)
    }

    /// Kills (SIGKILL, all) and deletes the task, ignoring errors: cleanup.
    pub fn kill_and_delete(&self, id: &str) {
        let ns = namespace();
        self.rt.block_on(async {
            let _ = self
                .tasks()
                .kill(with_namespace!(
                    KillRequest {
                        container_id: id.into(),
                        signal: 9,
                        all: true,
                        ..Default::default()
                    },
                    ns
                ))
                .await;
        });
        // Delete succeeds once the kill has been reaped.
        wait_until(Duration::from_secs(10), || {
            self.rt
                .block_on(self.tasks().delete(with_namespace!(
                    DeleteTaskRequest {
                        container_id: id.into()
                    },
                    ns
                )))
                .is_ok()
        });
    }
}

/// An exec process spec: `args` as root in `/`, with PATH set, plus `extra` fields.
pub fn process_spec(args: &[&str], extra: serde_json::Value) -> serde_json::Value {
    let mut spec = serde_json::json!({
        "args": args,
        "cwd": "/",
        "env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"],
        "user": {"uid": 0, "gid": 0},
    });
    if let (Some(obj), Some(more)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            obj.insert(k.clone(), v.clone());
        }
    }
    spec
}
