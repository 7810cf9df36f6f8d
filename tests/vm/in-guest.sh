#!/usr/bin/env bash
# tests/vm/in-guest.sh MODE PLAN BINS LOGDIR: runs inside the test VM (tests/vm/suites.sh boots
# it). For each plan line `SUITE RUNTIME [TEST-ARGS...]`: the suite's test binary (its path
# from BINS, lines `SUITE EXECUTABLE`) under that runtime, its output streamed and kept in
# LOGDIR/SUITE-RUNTIME[-MODE].log; then what the suite left on the VM (cgroups, mounts,
# processes, work directories, shim sockets), which must be nothing. Exits 1 if anything
# failed.
set -uo pipefail
MODE=$1 PLAN=$2 BINS=$3 LOGDIR=$4
TIMEOUT=${SHIM_RS_VM_SUITE_TIMEOUT:-900}
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}

say() { echo "=== [vm $MODE] $*"; }
# Every cgroup directory but the systemd units' own (in systemd mode, services come and go)
# and the kubelet's QoS slices: systemd makes them as the parents of a pod's slice and keeps
# them, as on a node, where the kubelet owns them (pod slices and scopes are still checked).
cgroups() {
    find /sys/fs/cgroup -mindepth 1 -type d ! -name '*.service' ! -name kubepods.slice \
        ! -name kubepods-besteffort.slice ! -name kubepods-burstable.slice | sort
}
# What a test run may leave behind on the machine, one line each.
state() {
    grep -E 'shim-rs-e2e|/run/containerd|/run/netns|/var/lib/containerd/' /proc/self/mountinfo | sed 's/^/mount: /'
    # shellcheck disable=SC2009 # the whole command line is the point, not a name
    ps -eo pid=,args= | grep -E 'containerd|shim-rs|runc|sleep' | grep -v grep | sed 's/^/process: /'
    find /tmp -maxdepth 1 -name 'shim-rs-e2e-*' 2>/dev/null | sed 's/^/work directory: /'
    find /run/containerd/s -mindepth 1 2>/dev/null | sed 's/^/shim socket: /'
}

say "kernel $(uname -r), $(nproc) vCPUs, cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
if grep -q ' cgroup ' /proc/self/mounts; then
    say "FAIL: a cgroup v1 hierarchy is mounted: this is not a cgroup-v2-only host"
    exit 1
fi
base_cgroups=$(cgroups)
base_state=$(state)
summary=()
failed=0
while read -r suite rt args; do
    [[ -n $suite ]] || continue
    exe=$(awk -v s="$suite" '$1 == s {print $2; exit}' "$BINS")
    case $rt in
        rs | both) runtime=io.containerd.rs.v1 ;;
        runc) runtime=io.containerd.runc.v2 ;;
        *) say "FAIL: $suite: unknown runtime '$rt'"; failed=1; continue ;;
    esac
    log="$LOGDIR/$suite-$rt$([[ $MODE == plain ]] || echo "-$MODE").log"
    say "$suite ($rt) $args"
    t0=$(date +%s)
    # shellcheck disable=SC2086 # args are test-binary words
    SHIM_RS_RUNTIME=$runtime timeout -k 10 "$TIMEOUT" "$exe" $args 2>&1 | tee "$log"
    code=${PIPESTATUS[0]}
    secs=$(($(date +%s) - t0))
    ((code == 124)) && say "$suite ($rt): timed out after $TIMEOUT s"
    # The harness stops its containerd at exit; give the last teardown a moment.
    left=""
    for _ in $(seq 50); do
        left=$(comm -13 <(echo "$base_cgroups") <(cgroups) | sed 's/^/cgroup: /'
            comm -13 <(echo "$base_state" | sort) <(state | sort))
        [[ -z $left ]] && break
        sleep 0.2
    done
    if [[ -n $left ]]; then
        say "FAIL: $suite ($rt) left behind:"
        printf '    %s\n' "$left"
        ((code == 0)) && code=1
    fi
    result=PASS
    ((code == 0)) || { result=FAIL; failed=1; }
    summary+=("$(printf '%-4s %-16s %-5s %4d s  %s' "$result" "$suite" "$rt" "$secs" "$args")")
done <"$PLAN"
say "summary (kernel $(uname -r), cgroup v2 only, $MODE):"
printf '    %s\n' "${summary[@]}"
exit "$failed"
