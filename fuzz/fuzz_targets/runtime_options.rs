//! The runtime options containerd sends with Create (a protobuf Any): whatever the bytes,
//! RuntimeOptions::from_any returns options or a clear error, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shim::{options::RuntimeOptions, protos::protobuf::well_known_types::any::Any};

/// The type URLs the shim decodes, and one it does not know.
const TYPES: [&str; 5] = [
    "containerd.runc.v1.Options",
    "type.googleapis.com/containerd.runc.v1.Options",
    "runtimeoptions.v1.Options",
    "containerd.linux.runc.CreateOptions",
    "example.com/unknown",
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, value)) = data.split_first() else {
        return;
    };
    // runtimeoptions' config_path names a file the shim reads: keep the fuzzer off devices
    // and pseudo-files that never end.
    if value
        .windows(4)
        .any(|w| w == b"/dev" || w == b"/pro" || w == b"/sys")
    {
        return;
    }
    let any = Any {
        type_url: TYPES[which as usize % TYPES.len()].to_owned(),
        value: value.to_vec(),
        ..Default::default()
    };
    if let Ok(opts) = RuntimeOptions::from_any(&any) {
        let _ = opts.describe();
        let _ = opts.cgroup_driver();
    }
});
