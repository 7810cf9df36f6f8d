#!/usr/bin/env bash
# tests/harness/systemd-vm.sh: the systemd cgroup driver's end-to-end tests (`make test-systemd`),
# in a cgroup-v2-only VM whose PID 1 is systemd (on the development host systemd does not run,
# so these tests skip there, saying why).
#
# Builds the test binaries on the host (`cargo test --no-run`), the busybox image into the
# shared image cache, then boots the VM once and runs there:
#   e2e_systemd under io.containerd.rs.v1, then under io.containerd.runc.v2 (same assertions)
#   e2e_cri's cri_systemd_* tests (handlers rs-systemd and runc-systemd)
# Exits non-zero if any of them fails or the VM does not come up.
#
# The VM runner: SHIM_RS_SYSTEMD_VM (a command taking `DIR CMD...`, booting systemd as PID 1),
# else tests/vm/run.sh --systemd when the project's VM harness is there, else the prototype
# ../shared/reference/cgroup-v2-vm/run-in-v2vm-systemd.sh (or /work/shared/...).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CARGO="${CARGO:-cargo}"
OUT="$REPO/.work/systemd-vm"
note() { echo "systemd-vm: $*" >&2; }

runner=()
if [[ -n ${SHIM_RS_SYSTEMD_VM:-} ]]; then
    read -r -a runner <<<"$SHIM_RS_SYSTEMD_VM"
elif [[ -x $REPO/tests/vm/run.sh ]]; then
    runner=("$REPO/tests/vm/run.sh" --systemd)
else
    for d in "$REPO/../shared/reference/cgroup-v2-vm" /work/shared/reference/cgroup-v2-vm; do
        if [[ -x $d/run-in-v2vm-systemd.sh ]]; then
            runner=("$d/run-in-v2vm-systemd.sh")
            break
        fi
    done
fi
[[ ${#runner[@]} -gt 0 ]] || { note "no VM runner found (set SHIM_RS_SYSTEMD_VM)"; exit 2; }

# Test binaries: their paths from cargo's JSON messages.
bins=$("$CARGO" test --no-run --message-format=json --test e2e_systemd --test e2e_cri 2>/dev/null |
    jq -r 'select(.reason == "compiler-artifact" and .profile.test == true) | .executable // empty')
sd_bin=$(grep '/e2e_systemd-' <<<"$bins" | head -n 1)
cri_bin=$(grep '/e2e_cri-' <<<"$bins" | head -n 1)
[[ -x $sd_bin && -x $cri_bin ]] || { note "test binaries not built: $bins"; exit 2; }
# The busybox image once on the host (building it under emulation takes minutes).
"$REPO/tests/harness/containerd.sh" image "$REPO/.work/image" >/dev/null

mkdir -p "$OUT"
cat >"$OUT/in-guest.sh" <<EOF
#!/bin/bash
# Written by tests/harness/systemd-vm.sh; runs inside the VM.
export RUST_BACKTRACE=1 SHIM_RS_IMAGE_DIR=$REPO/.work/image
rc=0
run() { local t0=\$SECONDS; echo "=== \$*"; "\$@" || rc=1; echo "=== \$((SECONDS - t0)) s: \$*"; }
echo "=== PID 1: \$(cat /proc/1/comm), systemd \$(systemctl --version | head -n 1)"
run env SHIM_RS_RUNTIME=io.containerd.rs.v1 $sd_bin --test-threads=2
run env SHIM_RS_RUNTIME=io.containerd.runc.v2 $sd_bin --test-threads=2
run $cri_bin cri_systemd --test-threads=1
exit \$rc
EOF
chmod +x "$OUT/in-guest.sh"
export V2VM_TIMEOUT=${V2VM_TIMEOUT:-1800}
note "running in ${runner[*]}"
start=$SECONDS
set +e
"${runner[@]}" "$OUT" "$OUT/in-guest.sh"
rc=$?
set -e
note "done in $((SECONDS - start)) s, exit $rc"
exit $rc
