//! What containerd sends the daemon, from the bytes on the socket up: ttrpc frames as the
//! server splits them from a connection's input, each request's envelope, its payload as the
//! task API message of its method, and the parts of a request the shim interprets before
//! touching the host (runtime options, an exec's process spec). Whatever the bytes: frames,
//! messages or a clear error, never a panic, never an allocation the header alone asks for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shim::{
    options::RuntimeOptions,
    protos::{
        api,
        protobuf::{well_known_types::any::Any, Message},
        ttrpc::Request,
    },
    ttrpc::server::take_frames,
};

/// Keeps the fuzzer off paths that read devices or never end (runtimeoptions' config_path).
fn touches_the_host(bytes: &[u8]) -> bool {
    bytes
        .windows(4)
        .any(|w| w == b"/dev" || w == b"/pro" || w == b"/sys")
}

fn options(any: &Any) {
    if touches_the_host(&any.value) {
        return;
    }
    if let Ok(o) = RuntimeOptions::from_any(any) {
        let _ = o.describe();
        let _ = o.cgroup_driver();
    }
}

fn exec_spec(any: &Any) {
    if let Ok(p) = serde_json::from_slice::<oci_spec::runtime::Process>(&any.value) {
        let _ = runtime::plan::plan_exec_process(&p);
    }
}

fn payload(method: &str, p: &[u8]) {
    macro_rules! parse {
        ($t:ty) => {
            <$t>::parse_from_bytes(p).ok()
        };
    }
    match method {
        "Create" => {
            if let Some(r) = parse!(api::CreateTaskRequest) {
                if let Some(o) = r.options.as_ref() {
                    options(o);
                }
            }
        }
        "Exec" => {
            if let Some(r) = parse!(api::ExecProcessRequest) {
                if let Some(s) = r.spec.as_ref() {
                    exec_spec(s);
                }
            }
        }
        "Update" => {
            let _ = parse!(api::UpdateTaskRequest);
        }
        "Start" => drop(parse!(api::StartRequest)),
        "Delete" => drop(parse!(api::DeleteRequest)),
        "Kill" => drop(parse!(api::KillRequest)),
        "Wait" => drop(parse!(api::WaitRequest)),
        "State" => drop(parse!(api::StateRequest)),
        "ResizePty" => drop(parse!(api::ResizePtyRequest)),
        "CloseIO" => drop(parse!(api::CloseIORequest)),
        "Stats" => drop(parse!(api::StatsRequest)),
        _ => drop(parse!(api::ShutdownRequest)),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = data.to_vec();
    let Ok(frames) = take_frames(&mut input) else {
        return;
    };
    for (_, body) in frames {
        if let Ok(req) = Request::parse_from_bytes(&body) {
            payload(&req.method, &req.payload);
        }
    }
});
