//! The device allowlist on cgroup v2: an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE,
//! generated from the same rules the v1 devices controller takes, attached to the
//! container's cgroup. The kernel runs it on every open/mknod of a device node.
//!
//! v1 semantics, which the program reproduces: an "a" rule (all devices) sets the default
//! and forgets earlier rules; later rules are exceptions, the last matching one wins.

use std::{
    fs::File,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

use super::DeviceRule;
use crate::{Error, Result};

/// One eBPF instruction (struct bpf_insn).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    /// dst register in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

// Opcode pieces (linux/bpf.h, linux/bpf_common.h).
const BPF_LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const BPF_ALU64_AND_K: u8 = 0x57;
const BPF_ALU64_RSH_K: u8 = 0x77;
const BPF_ALU64_MOV_K: u8 = 0xb7;
const BPF_JMP_JNE_K: u8 = 0x55;
const BPF_JMP_JSET_K: u8 = 0x45;
const BPF_EXIT: u8 = 0x95;

const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// A parsed rule: `None` fields are wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    allow: bool,
    /// None for "a" (every type).
    kind: Option<i32>,
    major: Option<i32>,
    minor: Option<i32>,
    access: i32,
}

fn parse(r: &DeviceRule) -> Result<Rule> {
    let bad = || {
        Error::invalid(
            "linux.resources.devices",
            format!("bad device rule {:?}", r.rule),
        )
    };
    let mut parts = r.rule.split_whitespace();
    let kind = match parts.next().ok_or_else(bad)? {
        "a" => None,
        "c" => Some(DEV_CHAR),
        "b" => Some(DEV_BLOCK),
        _ => return Err(bad()),
    };
    let (major, minor) = match parts.next() {
        None => (None, None),
        Some(mm) => {
            let (ma, mi) = mm.split_once(':').ok_or_else(bad)?;
            let num = |s: &str| -> Result<Option<i32>> {
                if s == "*" {
                    Ok(None)
                } else {
                    s.parse().map(Some).map_err(|_| bad())
                }
            };
            (num(ma)?, num(mi)?)
        }
    };
    let mut access = 0;
    for c in parts.next().unwrap_or("rwm").chars() {
        access |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => return Err(bad()),
        };
    }
    Ok(Rule {
        allow: r.allow,
        kind,
        major,
        minor,
        access,
    })
}

/// The program for `rules`. Registers: r1 = ctx; r2 = device type, r3 = requested access,
/// r4 = major, r5 = minor.
pub fn program(rules: &[DeviceRule]) -> Result<Vec<Insn>> {
    let rules = rules.iter().map(parse).collect::<Result<Vec<_>>>()?;
    // The last "all devices, all access" rule sets the default; what follows are exceptions.
    let reset = rules
        .iter()
        .rposition(|r| r.kind.is_none() && r.major.is_none() && r.minor.is_none() && r.access == 7);
    let (default_allow, exceptions) = match reset {
        Some(i) => (rules[i].allow, &rules[i + 1..]),
        None => (true, &rules[..]),
    };
    let mut p = vec![
        insn(BPF_LDX_MEM_W, 2, 1, 0, 0),        // r2 = ctx->access_type
        insn(BPF_ALU64_AND_K, 2, 0, 0, 0xffff), // r2 &= 0xffff (type)
        insn(BPF_LDX_MEM_W, 3, 1, 0, 0),        // r3 = ctx->access_type
        insn(BPF_ALU64_RSH_K, 3, 0, 0, 16),     // r3 >>= 16 (access)
        insn(BPF_LDX_MEM_W, 4, 1, 4, 0),        // r4 = ctx->major
        insn(BPF_LDX_MEM_W, 5, 1, 8, 0),        // r5 = ctx->minor
    ];
    // Last match wins: test the exceptions from the last one back.
    for r in exceptions.iter().rev() {
        let mut block = Vec::new();
        if let Some(k) = r.kind {
            block.push((BPF_JMP_JNE_K, 2, k));
        }
        if r.access != 7 {
            // Skip unless every requested access bit is one the rule grants.
            block.push((BPF_JMP_JSET_K, 3, !r.access & 7));
        }
        if let Some(m) = r.major {
            block.push((BPF_JMP_JNE_K, 4, m));
        }
        if let Some(m) = r.minor {
            block.push((BPF_JMP_JNE_K, 5, m));
        }
        // Each test jumps over the rest of the block: the remaining tests + mov + exit.
        let n = block.len();
        for (i, (code, reg, imm)) in block.into_iter().enumerate() {
            let skip = (n - i - 1) + 2;
            p.push(insn(code, reg, 0, skip as i16, imm));
        }
        p.push(insn(BPF_ALU64_MOV_K, 0, 0, 0, i32::from(r.allow)));
        p.push(insn(BPF_EXIT, 0, 0, 0, 0));
    }
    p.push(insn(BPF_ALU64_MOV_K, 0, 0, 0, i32::from(default_allow)));
    p.push(insn(BPF_EXIT, 0, 0, 0, 0));
    Ok(p)
}

// bpf(2) commands and attr layouts (linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    // The kernel takes a larger attr; zeroed tail fields are fine.
    _pad: [u64; 16],
}

#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    _pad: [u32; 11],
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: bpf(2) reads (and for PROG_LOAD's log, writes) the attr we own, of its size.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// One BPF_PROG_LOAD of `prog`; with a non-empty `log`, the verifier writes its log there.
fn try_load(prog: &[Insn], log: &mut [u8]) -> std::io::Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: u32::from(!log.is_empty()),
        log_size: log.len() as u32,
        log_buf: if log.is_empty() {
            0
        } else {
            log.as_mut_ptr() as u64
        },
        ..Default::default()
    };
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: the descriptor bpf(2) returned is ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Loads `prog` into the kernel and returns its descriptor.
///
/// The first attempt asks for no verifier log: with a log level set, kernels before 6.4 fail
/// the load with ENOSPC as soon as the log outgrows its buffer, even for a valid program
/// (Debian 12's 6.1 does so for an allowlist of ordinary size). Only a failed load is
/// repeated with a log, to say why.
fn load(prog: &[Insn]) -> Result<OwnedFd> {
    let e = match try_load(prog, &mut []) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let mut log = vec![0u8; 1 << 20];
    if let Ok(fd) = try_load(prog, &mut log) {
        return Ok(fd); // a transient failure
    }
    let text = String::from_utf8_lossy(&log);
    // The verifier's conclusion is at the end of its log.
    let lines: Vec<&str> = text.trim_end_matches('\0').trim().lines().collect();
    let tail = lines[lines.len().saturating_sub(3)..].join("; ");
    Err(Error::Other(format!(
        "linux.resources.devices: load the cgroup v2 device program ({} instructions): {e}: {tail}",
        prog.len()
    )))
}

/// Loads the program for `rules` and attaches it to the cgroup v2 directory `dir`. It stays
/// attached (and enforced) for the cgroup's life, after our descriptors are closed.
pub fn attach(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    let prog = program(rules)?;
    let prog_fd = load(&prog)?;
    let cgroup = File::open(dir).map_err(|e| Error::io(dir, e))?;
    let mut at = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut at).map_err(|e| {
        Error::Other(format!(
            "linux.resources.devices: attach the device program to {}: {e}",
            dir.display()
        ))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(allow: bool, r: &str) -> DeviceRule {
        DeviceRule {
            allow,
            rule: r.into(),
        }
    }

    #[test]
    fn program_shape_for_deny_all_plus_exceptions() {
        let p = program(&[
            rule(false, "a"),
            rule(true, "c 1:3 rwm"),
            rule(true, "c *:* m"),
        ])
        .unwrap();
        // 6 loads, 2 exception blocks, the default.
        assert_eq!(p.len(), 6 + (3 + 2) + (2 + 2) + 2);
        let last = &p[p.len() - 2];
        assert_eq!((last.code, last.imm), (BPF_ALU64_MOV_K, 0), "default deny");
        // Rules without a reset leave the default at allow.
        let p = program(&[rule(false, "c 1:1 rwm")]).unwrap();
        assert_eq!(p[p.len() - 2].imm, 1);
        assert!(program(&[rule(true, "x 1:1 rwm")]).is_err());
        assert!(program(&[rule(true, "c 1:1 q")]).is_err());
    }

    /// Real enforcement on this host's cgroup2 mount (the hybrid layout keeps one at
    /// /sys/fs/cgroup/unified; on a pure v2 host it is /sys/fs/cgroup).
    #[test]
    fn the_kernel_enforces_the_program() {
        let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(Path::new)
            .find(|p| {
                p.join("cgroup.procs").exists()
                    && std::fs::read_to_string("/proc/mounts")
                        .unwrap()
                        .contains(&format!(" {} cgroup2 ", p.display()))
            })
            .expect("a cgroup2 mount");
        let dir = root.join(format!("shim-rs-bpf-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        attach(
            &dir,
            &[
                rule(false, "a"),
                rule(true, "c 1:3 rwm"),
                rule(true, "c *:* m"),
            ],
        )
        .unwrap();
        let node = std::env::temp_dir().join(format!("shim-rs-bpf-zero-{}", std::process::id()));
        let _ = std::fs::remove_file(&node);
        // A child in the cgroup: /dev/null (1:3) opens, a fresh node for /dev/zero (1:5) does not.
        let script = format!(
            "echo 0 > {}/cgroup.procs; mknod {} c 1 5 && echo mknod-ok; \
             head -c1 /dev/null && echo null-ok; head -c1 {} >/dev/null 2>&1 && echo zero-ok || echo zero-denied",
            dir.display(),
            node.display(),
            node.display()
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&node);
        let _ = std::fs::remove_dir(&dir);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "mknod-ok\nnull-ok\nzero-denied\n"
        );
    }
}
