#!/usr/bin/env bash
# tests/vm/suites.sh: the end-to-end suites on a cgroup-v2-only host (`make test-cgroupv2`).
#
# Builds the test binaries on the host (`cargo test --no-run`; their paths come from cargo's
# JSON messages), boots the test VM (tests/vm/run.sh) once per PID-1 mode that has suites, and
# runs them there with tests/vm/in-guest.sh: each suite under each runtime it is listed for,
# then a check that nothing was left behind (cgroups, mounts, shim and container processes).
# Exits non-zero when a suite fails, a leftover is found, or the VM does not come up; the
# failing test's output is in the stream (and in .work/vm/logs/).
#
# A plan line is `SUITE RUNTIME [TEST-ARGS...]`:
#   RUNTIME  rs (io.containerd.rs.v1), runc (io.containerd.runc.v2: SHIM_RS_RUNTIME for suites
#            that test one runtime), or both (suites that loop over both runtimes themselves,
#            like e2e_cri with its rs and runc handlers)
#   TEST-ARGS  passed to the test binary (a name filter, --skip NAME, ...)
# Environment:
#   SHIM_RS_VM_PLAN          plan lines for the plain VM (shell as PID 1); default below
#   SHIM_RS_VM_SYSTEMD_PLAN  plan lines for the VM with systemd as PID 1; default below
#   SHIM_RS_VM_SUITES        run only these suites (names, space-separated) of the plans
#   SHIM_RS_VM_SUITE_TIMEOUT seconds per suite in the guest (default 900)
#   CARGO                    cargo (default cargo); and everything tests/vm/run.sh takes
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${SHIM_RS_VM_CACHE:-$REPO/.work/vm}"
CARGO="${CARGO:-cargo}"

# What runs on cgroup v2, and under which runtime. Chosen to cover every cgroup code path
# (create, limits, update, freeze, stats, OOM, devices, cgroup namespace and mount, exec,
# delete after a crash, CRI pods) within CI's budget; see README "Host layouts". Left out
# here, and run on the host: tests that prove nothing about cgroups and only load an emulated
# CPU (100 concurrent execs through 100 ctr processes; strace of containerd, which holds the
# whole suite; 1 MiB through stdout).
SKIP_LIFECYCLE="--skip no_external_runtime_is_executed --skip larger_output_is_complete"
SKIP_EXEC="--skip a_hundred_concurrent_execs_get_their_own_exit_codes"
DEFAULT_PLAN="
e2e_cgroups rs
e2e_cgroups runc
e2e_lifecycle rs $SKIP_LIFECYCLE
e2e_lifecycle runc $SKIP_LIFECYCLE
e2e_exec rs $SKIP_EXEC
e2e_exec runc $SKIP_EXEC
e2e_recovery rs
e2e_recovery runc
e2e_cri both
e2e_rootfs rs cgroup_mount
"
# systemd as PID 1: the cgroupfs driver beside systemd, as on a systemd host without
# SystemdCgroup, then the systemd cgroup driver (transient scopes over D-Bus) for ctr and CRI.
DEFAULT_SYSTEMD_PLAN="
e2e_cgroups rs
e2e_systemd rs --test-threads=2
e2e_systemd runc --test-threads=2
e2e_cri both cri_systemd --test-threads=1
"
PLAN="${SHIM_RS_VM_PLAN-$DEFAULT_PLAN}"
SYSTEMD_PLAN="${SHIM_RS_VM_SYSTEMD_PLAN-$DEFAULT_SYSTEMD_PLAN}"

note() { echo "tests/vm/suites.sh: $*" >&2; }
die() { note "$*"; exit 2; }

filter() { # keeps the plan lines of SHIM_RS_VM_SUITES (all when unset)
    local line suite
    while read -r line; do
        [[ -n $line ]] || continue
        suite=${line%% *}
        if [[ -z ${SHIM_RS_VM_SUITES:-} || " $SHIM_RS_VM_SUITES " == *" $suite "* ]]; then
            echo "$line"
        fi
    done <<<"$1"
}
PLAN=$(filter "$PLAN")
SYSTEMD_PLAN=$(filter "$SYSTEMD_PLAN")
[[ -n $PLAN$SYSTEMD_PLAN ]] || die "nothing to run (SHIM_RS_VM_SUITES=${SHIM_RS_VM_SUITES:-})"

started=$SECONDS
# ---- the test binaries, from cargo's own report of what it built
suites=$(printf '%s\n%s\n' "$PLAN" "$SYSTEMD_PLAN" | awk 'NF {print $1}' | sort -u)
args=()
for s in $suites; do args+=(--test "$s"); done
command -v jq >/dev/null || die "jq missing (apt-get install jq)"
note "building the test binaries: $CARGO test --no-run ${args[*]}"
json=$(cd "$REPO" && "$CARGO" test --no-run --message-format=json "${args[@]}") ||
    die "cargo test --no-run failed"
mkdir -p "$CACHE/logs"
BINS="$CACHE/bins"
jq -r 'select(.reason == "compiler-artifact" and .profile.test and .executable != null
        and (.target.kind | index("test"))) | "\(.target.name) \(.executable)"' <<<"$json" >"$BINS"
for s in $suites; do
    grep -q "^$s " "$BINS" || die "cargo reported no test binary for $s"
done
note "test binaries ready after $((SECONDS - started)) s"

# The harness' images, built here: in the guest every process start costs tens of ms (the
# busybox image alone took minutes there).
images="${SHIM_RS_IMAGE_DIR:-$REPO/.work/image}"
"$REPO/tests/harness/containerd.sh" image "$images" >/dev/null
if printf '%s\n%s\n' "$PLAN" "$SYSTEMD_PLAN" | grep -q '^e2e_cri '; then
    "$REPO/tests/harness/containerd.sh" pause-image "$images" >/dev/null
fi

eval "$("$HERE/image.sh" | tail -n 1)"
export SHIM_RS_VM_KERNEL="$KERNEL" SHIM_RS_VM_INITRD="$INITRD"

rc=0
run_vm() { # MODE PLAN
    local mode=$1 plan=$2 t0=$SECONDS vm_rc=0
    [[ -n $plan ]] || return 0
    printf '%s\n' "$plan" >"$CACHE/plan-$mode"
    note "booting the cgroup v2 VM ($mode; kernel $KVER) for: $(awk '{printf "%s(%s) ", $1, $2}' <<<"$plan")"
    local opt=()
    [[ $mode == systemd ]] && opt=(--systemd)
    "$HERE/run.sh" "${opt[@]}" "$REPO" bash "$HERE/in-guest.sh" "$mode" "$CACHE/plan-$mode" "$BINS" \
        "$CACHE/logs" || vm_rc=$?
    note "VM ($mode) finished in $((SECONDS - t0)) s with exit code $vm_rc"
    if ((vm_rc != 0)); then rc=1; fi
}
run_vm plain "$PLAN"
run_vm systemd "$SYSTEMD_PLAN"
if ((rc == 0)); then
    note "PASS: all suites passed on cgroup v2 ($((SECONDS - started)) s in all)"
else
    note "FAIL: see the output above (and $CACHE/logs/) ($((SECONDS - started)) s in all)"
fi
exit "$rc"
