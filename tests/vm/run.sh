#!/usr/bin/env bash
# tests/vm/run.sh [--systemd] DIR CMD [ARGS...]
#
# Boots the cgroup-v2 test VM (Debian's current kernel under qemu, cgroup_no_v1=all), runs
# CMD as root in DIR inside it, streams CMD's stdout+stderr to our stdout, and exits with
# CMD's exit code (125 when the VM did not come up or gave no exit code; the console log's
# tail is printed then).
#
# The guest's root is the host's / shared read-only over 9p under a tmpfs overlay (so the
# host's containerd, runc, busybox, ... are there, and writes go to RAM); DIR is shared
# read-write at the same path; /tmp, /run and /var/lib/containerd are tmpfs. An empty 1 GiB
# virtio disk (/dev/vda, reads give zeroes, writes are dropped) gives block I/O limits a
# device.
#   plain (default): a shell is PID 1; it mounts cgroup2 at /sys/fs/cgroup with every
#       controller enabled in the root's cgroup.subtree_control (tests/vm/stage2).
#   --systemd: systemd is PID 1 with D-Bus; CMD runs as the unit shimrs-vm-cmd.service
#       (tests/vm/stage2-systemd), so systemctl, systemd-run and D-Bus clients work.
#
# Environment:
#   SHIM_RS_VM_ACCEL    auto (default) | tcg | kvm. auto takes KVM only when /dev/kvm is
#                       usable and is not PVM (a paravirtual KVM on which stock kernels hang),
#                       else TCG (software emulation, multi-threaded).
#   SHIM_RS_VM_MEM      guest memory (default 2G);  SHIM_RS_VM_SMP  vCPUs (default 2)
#   SHIM_RS_VM_TIMEOUT  seconds before qemu is killed (default 3600)
#   SHIM_RS_VM_KEEP=1   keep the control directory (console log, command, env) and say where
#   SHIM_RS_VM_CACHE, SHIM_RS_VM_KVER: see tests/vm/image.sh
#   SHIM_RS_VM_KERNEL, SHIM_RS_VM_INITRD: boot these instead of asking image.sh (which
#                       checks apt for a newer kernel on every call)
# Passed into the guest (ctl/env): every SHIM_RS_* variable, RUST_BACKTRACE, RUST_LOG,
# RUST_TEST_THREADS, CONTAINERD_BIN.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep -v '^set ' | sed 's/^# \{0,1\}//' >&2; exit 2; }
note() { echo "tests/vm/run.sh: $*" >&2; }

SYSTEMD=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --systemd) SYSTEMD=1; shift ;;
        -h | --help) usage ;;
        --) shift; break ;;
        -*) note "unknown option $1"; usage ;;
        *) break ;;
    esac
done
[[ $# -ge 2 ]] || usage
[[ -d $1 ]] || { note "$1 is not a directory"; exit 2; }
DIR="$(cd "$1" && pwd)"
shift
[[ $(id -u) == 0 ]] || { note "must run as root (qemu shares / with passthrough permissions)"; exit 2; }
command -v qemu-system-x86_64 >/dev/null || { note "qemu-system-x86_64 missing (apt-get install qemu-system-x86)"; exit 2; }

if [[ -n ${SHIM_RS_VM_KERNEL:-} && -n ${SHIM_RS_VM_INITRD:-} ]]; then
    KERNEL=$SHIM_RS_VM_KERNEL INITRD=$SHIM_RS_VM_INITRD
else
    eval "$("$HERE/image.sh" | tail -n 1)"
fi
[[ -f ${KERNEL:-} && -f ${INITRD:-} ]] || { note "tests/vm/image.sh gave no kernel/initramfs"; exit 125; }

CTL=$(mktemp -d "${TMPDIR:-/tmp}/shimrs-vm.XXXXXX")
QEMU_PID=""
CAT_PID=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    [[ -n $QEMU_PID ]] && kill -9 "$QEMU_PID" 2>/dev/null
    [[ -n $CAT_PID ]] && kill "$CAT_PID" 2>/dev/null
    if [[ ${SHIM_RS_VM_KEEP:-0} != 0 ]]; then note "kept $CTL (console.log, cmd.sh, env)"; else rm -rf "$CTL"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

{
    printf 'SHIMRS_VM_WORKDIR=%q\n' "$DIR"
    while IFS='=' read -r name _; do
        case $name in
            SHIM_RS_* | RUST_BACKTRACE | RUST_LOG | RUST_TEST_THREADS | CONTAINERD_BIN)
                printf '%s=%q\n' "$name" "${!name}" ;;
        esac
    done < <(env)
} >"$CTL/env"
{ printf '%q ' "$@"; echo; } >"$CTL/cmd.sh"
KARGS="console=ttyS0 quiet panic=-1 cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1"
KARGS+=" tsc=reliable i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd"
if ((SYSTEMD)); then
    bash "$HERE/stage2-systemd" --mkroot "$CTL/sdroot" "$DIR"
    KARGS+=" shimrs.pid1=systemd"
fi

accel=${SHIM_RS_VM_ACCEL:-auto}
if [[ $accel == auto ]]; then
    accel=tcg
    if [[ -r /dev/kvm && -w /dev/kvm && ! -d /sys/module/kvm_pvm ]] &&
        [[ -d /sys/module/kvm_intel || -d /sys/module/kvm_amd ]]; then
        accel=kvm
    fi
fi
case $accel in
    kvm) ACCEL=(-accel kvm -cpu host) ;;
    tcg) ACCEL=(-accel "tcg,thread=multi,tb-size=256" -cpu max) ;;
    *) note "SHIM_RS_VM_ACCEL must be auto, tcg or kvm"; exit 2 ;;
esac

# Output: a virtio-serial port written to a FIFO we relay (qemu's stdio chardev with stdin
# from /dev/null hangs). The exit code comes back in the ctl share.
mkfifo "$CTL/out.fifo"
cat "$CTL/out.fifo" &
CAT_PID=$!
started=$SECONDS
set +e
timeout -k 10 "${SHIM_RS_VM_TIMEOUT:-3600}" qemu-system-x86_64 "${ACCEL[@]}" -M q35 \
    -m "${SHIM_RS_VM_MEM:-2G}" -smp "${SHIM_RS_VM_SMP:-2}" \
    -nodefaults -no-user-config -display none -monitor none -no-reboot \
    -kernel "$KERNEL" -initrd "$INITRD" -append "$KARGS" \
    -serial "file:$CTL/console.log" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap \
    -virtfs "local,path=$CTL,mount_tag=ctl,security_model=passthrough" \
    -virtfs "local,path=$DIR,mount_tag=work,security_model=passthrough,multidevs=remap" \
    -device virtio-serial-pci -chardev "file,id=out,path=$CTL/out.fifo" \
    -device virtserialport,chardev=out,name=out \
    -blockdev driver=null-co,node-name=disk0,size=1073741824,read-zeroes=on \
    -device virtio-blk-pci,drive=disk0 \
    </dev/null &
QEMU_PID=$!
wait "$QEMU_PID"
qrc=$?
QEMU_PID=""
# Unblock the relay if qemu never opened the FIFO.
if kill -0 "$CAT_PID" 2>/dev/null; then timeout 2 bash -c ': >"$1"' _ "$CTL/out.fifo"; fi
wait "$CAT_PID"
CAT_PID=""
set -e

up=$(sed -n 's/.*command starts at \([0-9.]*\)s.*/\1/p' "$CTL/console.log" | head -n 1)
note "$accel, $((SECONDS - started)) s in all${up:+; the guest was ready after ${up} s of uptime}"
if [[ ! -s $CTL/rc ]]; then
    if ((qrc == 124 || qrc == 137)); then
        note "the VM ran out of time (SHIM_RS_VM_TIMEOUT=${SHIM_RS_VM_TIMEOUT:-3600} s) and was killed"
    fi
    note "no exit code from the guest (qemu exit $qrc); the console log's end:"
    tail -n 40 "$CTL/console.log" >&2
    exit 125
fi
exit "$(cat "$CTL/rc")"
