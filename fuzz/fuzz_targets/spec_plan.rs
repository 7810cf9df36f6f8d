//! config.json bytes -> spec -> launch plan: must return Ok or a clear error, never panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

const HYBRID: &str = "\
31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset
33 30 0:29 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices
34 30 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";

fuzz_target!(|data: &[u8]| {
    let layout = runtime::cgroups::Layout::parse(HYBRID);
    if let Ok(spec) = runtime::spec::parse(data, Path::new("config.json")) {
        let _ = runtime::plan::build(&spec, Path::new("/bundle"), "fuzz", &layout);
    }
});
