//! A deterministic structure-aware fuzz of spec parsing and planning that runs with every
//! `cargo test` on stable Rust: thousands of mutations of ctr's default spec (values replaced
//! by other types, numbers pushed to extremes, strings made hostile, keys dropped) must each
//! give Ok or an error, never a panic. `make fuzz` runs the libFuzzer target on top of this.

use std::path::Path;

use serde_json::{json, Value};

const BASE: &str = include_str!("../src/plan/testdata/ctr-default-spec.json");
const HYBRID: &str = "31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
33 30 0:29 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices\n\
35 30 0:31 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn hostile_value(rng: &mut Rng) -> Value {
    match rng.below(12) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(u64::MAX),
        4 => json!(i64::MIN),
        5 => json!(""),
        6 => json!("../../../../etc/passwd"),
        7 => json!("/proc/self/fd/3"),
        8 => json!("a\u{0}b"),
        9 => json!([]),
        10 => json!({}),
        _ => json!("x".repeat(rng.below(5000))),
    }
}

/// Replaces, removes or duplicates one node somewhere in `v`.
fn mutate(v: &mut Value, rng: &mut Rng, depth: usize) {
    match v {
        Value::Object(map) if !map.is_empty() && depth < 8 => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let k = &keys[rng.below(keys.len())];
            match rng.below(6) {
                0 => {
                    map.remove(k);
                }
                1 => {
                    map.insert(k.clone(), hostile_value(rng));
                }
                _ => mutate(map.get_mut(k).unwrap(), rng, depth + 1),
            }
        }
        Value::Array(items) if !items.is_empty() && depth < 8 => {
            let i = rng.below(items.len());
            match rng.below(5) {
                0 => {
                    items.remove(i);
                }
                1 => {
                    let copy = items[i].clone();
                    items.push(copy);
                }
                2 => items[i] = hostile_value(rng),
                _ => mutate(&mut items[i], rng, depth + 1),
            }
        }
        _ => *v = hostile_value(rng),
    }
}

#[test]
fn parsing_and_planning_never_panic_on_mutated_specs() {
    let layout = runtime::cgroups::Layout::parse(HYBRID);
    let base: Value = serde_json::from_str(BASE).unwrap();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..20_000 {
        let mut v = base.clone();
        for _ in 0..=rng.below(4) {
            mutate(&mut v, &mut rng, 0);
        }
        let bytes = serde_json::to_vec(&v).unwrap();
        match runtime::spec::parse(&bytes, Path::new("config.json"))
            .and_then(|spec| runtime::plan::build(&spec, Path::new("/bundle"), "fuzz", &layout))
        {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                refused += 1;
            }
        }
    }
    // The mutations must exercise both outcomes, or the test proves nothing.
    assert!(ok > 1000 && refused > 1000, "ok {ok}, refused {refused}");
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut rng = Rng(42);
    for _ in 0..5_000 {
        let len = rng.below(300);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let _ = runtime::spec::parse(&bytes, Path::new("config.json"));
    }
}
