use std::path::{Path, PathBuf};

use oci_spec::runtime::Linux;

use super::*;
use crate::cgroups::{plan_cgroup_for, CgroupPlan, DeviceRule, Layout};

fn v2() -> Layout {
    let mut l = Layout::parse("35 30 0:31 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
    l.hierarchies[0].controllers = ["cpu", "cpuset", "memory", "pids", "io", "hugetlb"]
        .map(String::from)
        .to_vec();
    l
}

fn hybrid() -> Layout {
    let mut l = Layout::parse(
        "31 30 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
         32 30 0:28 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n\
         33 30 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
         34 30 0:30 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n\
         36 30 0:32 / /sys/fs/cgroup/blkio rw - cgroup cgroup rw,blkio\n\
         37 30 0:33 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n\
         38 30 0:34 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
    );
    l.hierarchies[6].controllers = vec!["hugetlb".into()];
    l
}

fn linux(json: &str) -> Linux {
    serde_json::from_str(json).unwrap()
}

fn props(unit: &SystemdUnit) -> Vec<(&str, &Value)> {
    unit.properties
        .iter()
        .map(|p| (p.name.as_str(), &p.value))
        .collect()
}

fn get<'a>(unit: &'a SystemdUnit, name: &str) -> Option<&'a Value> {
    unit.properties
        .iter()
        .find(|p| p.name == name)
        .map(|p| &p.value)
}

#[test]
fn unit_names_and_cgroups_from_cgroups_path() {
    let u = |s: &str| unit_of(Some(Path::new(s)), "id1");
    assert_eq!(
        u("system.slice:test:c1").unwrap(),
        (
            "system.slice".into(),
            "test-c1.scope".into(),
            PathBuf::from("system.slice/test-c1.scope")
        )
    );
    // What containerd's CRI sends under a kubelet with cgroupDriver: systemd.
    assert_eq!(
        u("kubepods-besteffort-pod12ab.slice:cri-containerd:abc")
            .unwrap()
            .2,
        PathBuf::from(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12ab.slice/\
             cri-containerd-abc.scope"
        )
    );
    // runc's defaults: no slice is system.slice; no cgroupsPath is runc-<id>.scope; the
    // root slice is the root; an empty prefix still gets its dash.
    assert_eq!(u(":p:n").unwrap().0, "system.slice");
    assert_eq!(
        unit_of(None, "id1").unwrap(),
        (
            "system.slice".into(),
            "runc-id1.scope".into(),
            PathBuf::from("system.slice/runc-id1.scope")
        )
    );
    assert_eq!(u("-.slice:p:n").unwrap().2, PathBuf::from("p-n.scope"));
    assert_eq!(u("system.slice::n").unwrap().1, "-n.scope");
}

#[test]
fn bad_cgroups_paths_say_what_to_do() {
    let e = unit_of(Some(Path::new("/default/c1")), "c1")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("linux.cgroupsPath")
            && e.contains("slice:prefix:name")
            && e.contains("SystemdCgroup = false"),
        "{e}"
    );
    for bad in [
        "a:b",
        "system:p:n",
        "-a.slice:p:n",
        "a--b.slice:p:n",
        "a-.slice:p:n",
        "a/b.slice:p:n",
        "system.slice:p:n/../x",
        "system.slice:p:",
        "system.slice:p:n m",
    ] {
        let e = unit_of(Some(Path::new(bad)), "c1").unwrap_err().to_string();
        assert!(e.contains("linux.cgroupsPath"), "{bad}: {e}");
    }
    let e = unit_of(Some(Path::new("system.slice:p:x.slice")), "c1")
        .unwrap_err()
        .to_string();
    assert!(e.contains("scope"), "{e}");
}

const LIMITS: &str = r#"{"cgroupsPath":"system.slice:test:c1","resources":{
    "devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":10,"minor":229,"access":"rw"}],
    "memory":{"limit":104857600,"reservation":52428800,"swap":209715200},
    "cpu":{"shares":512,"quota":50000,"period":100000,"cpus":"0-1","mems":"0"},
    "pids":{"limit":64},"blockIO":{"weight":500},
    "unified":{"memory.high":"94371840"}}}"#;

#[test]
fn v2_properties_restate_the_limits_and_the_files_stay() {
    let plan = plan_cgroup_for(&linux(LIMITS), "c1", &[], &v2(), CgroupDriver::Systemd).unwrap();
    assert_eq!(
        plan.dirs,
        [PathBuf::from("/sys/fs/cgroup/system.slice/test-c1.scope")]
    );
    let cgroupfs =
        plan_cgroup_for(&linux(LIMITS), "c1", &[], &v2(), CgroupDriver::Cgroupfs).unwrap();
    let files = |p: &CgroupPlan| -> Vec<(String, String)> {
        p.writes
            .iter()
            .map(|w| (w.file.clone(), w.value.clone()))
            .collect()
    };
    assert_eq!(
        files(&plan),
        files(&cgroupfs),
        "every limit is written to the files too"
    );
    // ... the cgroupfs driver's own directory being literally "system.slice:test:c1".
    assert_eq!(
        cgroupfs.dirs,
        [PathBuf::from("/sys/fs/cgroup/system.slice:test:c1")]
    );
    assert!(cgroupfs.systemd.is_none());
    let unit = plan.systemd.as_ref().unwrap();
    assert_eq!(
        (unit.unit.as_str(), unit.slice.as_str()),
        ("test-c1.scope", "system.slice")
    );
    let names: Vec<_> = props(unit).iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "Description",
            "Slice",
            "Delegate",
            "MemoryAccounting",
            "CPUAccounting",
            "IOAccounting",
            "TasksAccounting",
            "DefaultDependencies",
            "DevicePolicy",
            "DeviceAllow",
            "CPUWeight",
            "AllowedCPUs",
            "AllowedMemoryNodes",
            "MemoryMax",
            "MemoryLow",
            "MemorySwapMax",
            "TasksMax",
            "IOWeight",
            "MemoryHigh",
            // gathered from two files on v1, so they come last
            "CPUQuotaPeriodUSec",
            "CPUQuotaPerSecUSec",
        ]
    );
    assert_eq!(get(unit, "Slice"), Some(&Value::Str("system.slice".into())));
    assert_eq!(get(unit, "Delegate"), Some(&Value::Bool(true)));
    assert_eq!(get(unit, "MemoryMax"), Some(&Value::U64(104_857_600)));
    assert_eq!(get(unit, "MemoryLow"), Some(&Value::U64(52_428_800)));
    // v2 swap.max counts swap alone: 200 MiB memory+swap - 100 MiB memory.
    assert_eq!(get(unit, "MemorySwapMax"), Some(&Value::U64(104_857_600)));
    assert_eq!(get(unit, "MemoryHigh"), Some(&Value::U64(94_371_840)));
    assert_eq!(get(unit, "CPUWeight"), Some(&Value::U64(20)));
    assert_eq!(get(unit, "CPUQuotaPerSecUSec"), Some(&Value::U64(500_000)));
    assert_eq!(get(unit, "CPUQuotaPeriodUSec"), Some(&Value::U64(100_000)));
    assert_eq!(get(unit, "TasksMax"), Some(&Value::U64(64)));
    assert_eq!(get(unit, "AllowedCPUs"), Some(&Value::Bytes(vec![0b11])));
    assert_eq!(
        get(unit, "AllowedMemoryNodes"),
        Some(&Value::Bytes(vec![1]))
    );
    // io.bfq.weight 500 -> IOWeight whose BFQ weight is 500 again.
    assert_eq!(get(unit, "IOWeight"), Some(&Value::U64(4500)));
    assert_eq!(
        get(unit, "DevicePolicy"),
        Some(&Value::Str("strict".into()))
    );
    let Some(Value::DeviceAllow(allow)) = get(unit, "DeviceAllow") else {
        panic!("no DeviceAllow")
    };
    assert_eq!(
        allow[0],
        DeviceAllow {
            device: DeviceSpec::Path("/dev/char/10:229".into()),
            access: "rw".into()
        }
    );
    assert!(allow.contains(&DeviceAllow {
        device: DeviceSpec::Class {
            block: false,
            major: 136
        },
        access: "rwm".into()
    }));
    assert!(allow.contains(&DeviceAllow {
        device: DeviceSpec::Path("char-*".into()),
        access: "m".into()
    }));
}

#[test]
fn v1_properties_use_v1_names_and_leave_cpuset_to_the_files() {
    let plan = plan_cgroup_for(
        &linux(
            r#"{"cgroupsPath":"system.slice:test:c1","resources":{
            "memory":{"limit":104857600},"cpu":{"shares":512,"quota":33333,"cpus":"0"},
            "pids":{"limit":-1},"blockIO":{"weight":300}}}"#,
        ),
        "c1",
        &[],
        &hybrid(),
        CgroupDriver::Systemd,
    )
    .unwrap();
    assert_eq!(
        plan.dirs[0],
        PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/system.slice/test-c1.scope")
    );
    assert_eq!(
        plan.dirs.len(),
        7,
        "every hierarchy, systemd's named one included"
    );
    let unit = plan.systemd.unwrap();
    assert_eq!(get(&unit, "BlockIOAccounting"), Some(&Value::Bool(true)));
    assert_eq!(get(&unit, "IOAccounting"), None);
    assert_eq!(get(&unit, "MemoryLimit"), Some(&Value::U64(104_857_600)));
    assert_eq!(get(&unit, "MemoryMax"), None);
    assert_eq!(get(&unit, "CPUShares"), Some(&Value::U64(512)));
    assert_eq!(get(&unit, "BlockIOWeight"), Some(&Value::U64(300)));
    assert_eq!(get(&unit, "TasksMax"), Some(&Value::U64(u64::MAX)));
    assert_eq!(get(&unit, "AllowedCPUs"), None);
    // 33333 us per 100 ms is 333330 us per second, rounded up to whole 10 ms as runc does.
    assert_eq!(get(&unit, "CPUQuotaPerSecUSec"), Some(&Value::U64(340_000)));
    assert_eq!(get(&unit, "CPUQuotaPeriodUSec"), None, "no period given");
    assert_eq!(
        get(&unit, "DevicePolicy"),
        None,
        "no device rules, nothing sent"
    );
}

#[test]
fn unlimited_values_are_systemd_infinity() {
    let w = |file: &str, value: &str| crate::cgroups::resources::CgroupWrite {
        dir: "/sys/fs/cgroup/x".into(),
        file: file.into(),
        value: value.into(),
        field: "f".into(),
        optional: false,
        fallback: None,
    };
    let p = resource_properties(
        &[
            w("memory.max", "max"),
            w("cpu.max", "max 50000"),
            w("pids.max", "max"),
        ],
        true,
    )
    .unwrap();
    let got: Vec<_> = p
        .iter()
        .map(|p| (p.name.as_str(), p.value.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("MemoryMax", Value::U64(u64::MAX)),
            ("TasksMax", Value::U64(u64::MAX)),
            ("CPUQuotaPeriodUSec", Value::U64(50_000)),
            ("CPUQuotaPerSecUSec", Value::U64(u64::MAX)),
        ]
    );
    let e = resource_properties(&[w("memory.max", "lots")], true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("f:") || e.contains("f "), "{e}");
    // Per-device weights and throttles have no property here: files only.
    assert!(resource_properties(
        &[w("io.bfq.weight", "8:0 100"), w("io.max", "8:0 rbps=1")],
        true
    )
    .unwrap()
    .is_empty());
}

fn rule(allow: bool, r: &str) -> DeviceRule {
    DeviceRule {
        allow,
        rule: r.into(),
    }
}

#[test]
fn device_policy_follows_the_rules() {
    assert!(device_properties(&[]).unwrap().is_empty());
    let auto = vec![
        Property {
            name: "DevicePolicy".into(),
            value: Value::Str("auto".into()),
        },
        Property {
            name: "DeviceAllow".into(),
            value: Value::DeviceAllow(vec![]),
        },
    ];
    // Privileged: allow everything.
    assert_eq!(device_properties(&[rule(true, "a")]).unwrap(), auto);
    // Allow all but a few: systemd has no denylist; ours enforces the denials.
    assert_eq!(
        device_properties(&[rule(true, "a"), rule(false, "c 1:9 rwm")]).unwrap(),
        auto
    );
    // Deny all, allow some, take some access back from an allowed one.
    let p = device_properties(&[
        rule(true, "c 1:9 rwm"),
        rule(false, "a"),
        rule(true, "c 1:3 rwm"),
        rule(true, "b 8:* r"),
        rule(true, "c 1:3 r"),
        rule(false, "c 1:3 w"),
        rule(true, "c *:5 rwm"),
        rule(true, "b *:* m"),
    ])
    .unwrap();
    assert_eq!(p[0].value, Value::Str("strict".into()));
    assert_eq!(
        p[1].value,
        Value::DeviceAllow(vec![
            DeviceAllow {
                device: DeviceSpec::Path("/dev/char/1:3".into()),
                access: "rm".into()
            },
            DeviceAllow {
                device: DeviceSpec::Class {
                    block: true,
                    major: 8
                },
                access: "r".into()
            },
            DeviceAllow {
                device: DeviceSpec::Path("block-*".into()),
                access: "m".into()
            },
        ])
    );
    assert!(device_properties(&[rule(true, "x 1:1 r")]).is_err());
}

#[test]
fn cpu_lists_become_little_endian_bitmasks() {
    assert_eq!(range_to_bits("0-3,8").unwrap(), [0x0f, 0x01]);
    assert_eq!(range_to_bits(" 9 ").unwrap(), [0, 0x02]);
    for bad in ["", "3-1", "a", "1-", "99999"] {
        assert!(range_to_bits(bad).is_err(), "{bad}");
    }
}

/// systemd's IOWeight -> BFQ weight conversion (src/core/cgroup.c), for the round trip.
fn systemd_io_to_bfq(io: u64) -> u64 {
    if io <= 100 {
        (io - 1) * 99 / 99 + 1
    } else {
        (io - 100) * 900 / 9900 + 100
    }
}

#[test]
fn io_weight_gives_back_the_exact_bfq_weight() {
    for bfq in 1..=1000 {
        assert_eq!(systemd_io_to_bfq(plan::bfq_to_io_weight(bfq)), bfq);
    }
}

#[test]
fn persisted_plans_keep_the_unit_and_old_ones_still_load() {
    let plan = plan_cgroup_for(&linux(LIMITS), "c1", &[], &v2(), CgroupDriver::Systemd).unwrap();
    let json = serde_json::to_string(&plan).unwrap();
    assert_eq!(serde_json::from_str::<CgroupPlan>(&json).unwrap(), plan);
    // A state file written before the systemd driver existed.
    let old: CgroupPlan = serde_json::from_str(
        r#"{"dirs":["/sys/fs/cgroup/d/c"],"cpuset_dir":null,"devices_dir":null,
            "device_rules":[],"writes":[]}"#,
    )
    .unwrap();
    assert!(old.systemd.is_none());
}

#[test]
fn without_systemd_the_error_names_the_option() {
    if Path::new("/run/systemd/system").is_dir() {
        eprintln!("skipped: this host runs systemd");
        return;
    }
    let e = check_reachable().unwrap_err().to_string();
    assert!(
        e.contains("SystemdCgroup") && e.contains("SystemdCgroup = false") && e.contains("systemd"),
        "{e}"
    );
}
