#!/usr/bin/env bash
# image.sh: the kernel and initramfs of the cgroup-v2 test VM, cached under <repo>/.work/vm.
# Prints one line `KERNEL=<path> INITRD=<path> KVER=<version>` (eval-able).
#
# Kernel: Debian's current `linux-image-amd64` (the generic flavour: `-cloud` has no 9p),
# fetched with `apt-get download` and unpacked with `dpkg-deb -x`: never installed. Only
# vmlinuz and the few modules the initramfs needs are kept.
# Initramfs: busybox-static, those modules (dependencies resolved from each module's
# .modinfo, loaded in order by stage 1), `init` (stage 1) and the two PID-1 stages
# (`stage2`: a shell; `stage2-systemd`: systemd), chosen on the kernel command line.
#
# Rebuilt only when needed: a new kernel version in apt (or none cached yet), or a change
# of its inputs (these scripts, busybox). Without apt lists (offline) the newest cached
# kernel is used.
#
# Environment: SHIM_RS_VM_CACHE (default <repo>/.work/vm), SHIM_RS_VM_KVER (pin a
# version, e.g. 6.1.0-57-amd64).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${SHIM_RS_VM_CACHE:-$REPO/.work/vm}"
# Modules the initramfs loads (their dependencies are added): virtio-pci transport, the
# virtio-serial output port, 9p over virtio (host root, shares), overlayfs (the writable
# root; containerd's snapshots sit on a tmpfs beside it), virtio-blk (an empty disk, so that
# block I/O limits have a device to name).
WANT_MODULES="virtio_pci virtio_console 9pnet_virtio 9p overlay virtio_blk"
# Bump when the layout of the cache changes.
RECIPE=1

die() { echo "tests/vm/image.sh: $*" >&2; exit 1; }
note() { echo "tests/vm/image.sh: $*" >&2; }

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9

need() { command -v "$1" >/dev/null || die "$1 missing (apt-get install $2)"; }
need cpio cpio
need dpkg-deb dpkg
need gzip gzip
BUSYBOX=/bin/busybox
if [[ ! -x $BUSYBOX ]] || ! "$BUSYBOX" --list >/dev/null 2>&1; then
    die "busybox-static missing (apt-get install busybox-static)"
fi
# A dynamic executable names its loader (PT_INTERP) in its first page.
file_is_static() { ! head -c 4096 "$1" | LC_ALL=C grep -qa 'ld-linux'; }
file_is_static "$BUSYBOX" || die "$BUSYBOX is dynamically linked: the initramfs needs busybox-static"

# ---- which kernel
kver_from_apt() {
    local pkg
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    [[ -n $pkg ]] && echo "${pkg#linux-image-}"
}
newest_cached() {
    local d best=""
    for d in "$CACHE"/k-*/vmlinuz; do
        [[ -f $d ]] || continue
        best=$(basename "$(dirname "$d")")
    done
    [[ -n $best ]] && echo "${best#k-}"
}
KVER="${SHIM_RS_VM_KVER:-}"
[[ -n $KVER ]] || KVER=$(kver_from_apt || true)
if [[ -z $KVER ]]; then
    KVER=$(newest_cached || true)
    [[ -n $KVER ]] || die "no linux-image-amd64 in apt (run apt-get update) and no cached kernel in $CACHE"
    note "apt knows no linux-image-amd64; using the cached kernel $KVER"
fi
[[ $KVER =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || die "odd kernel version '$KVER'"
K="$CACHE/k-$KVER"

# ---- kernel: vmlinuz + the modules we load, from the unpacked package
module_file() { # NAME -> path of NAME.ko* below DIR ('-' and '_' are the same in names)
    local dir=$1 name=$2 alt
    alt=$(echo "$name" | tr '_' '-')
    find "$dir" \( -name "$name.ko" -o -name "$name.ko.xz" -o -name "$name.ko.zst" \
        -o -name "$alt.ko" -o -name "$alt.ko.xz" -o -name "$alt.ko.zst" \) -print -quit
}
unpack_ko() { # SRC DEST.ko
    case $1 in
        *.xz) need xz xz-utils; xz -dc "$1" >"$2" ;;
        *.zst) need zstd zstd; zstd -qdc "$1" >"$2" ;;
        *) cp "$1" "$2" ;;
    esac
}
if [[ ! -f $K/vmlinuz || ! -f $K/mods/order || $(cat "$K/recipe" 2>/dev/null) != "$RECIPE $WANT_MODULES" ]]; then
    pkg="linux-image-$KVER"
    T=$(mktemp -d "$CACHE/.fetch.XXXXXX")
    trap 'rm -rf "$T"' EXIT
    note "fetching $pkg (apt-get download; not installed)"
    (cd "$T" && apt-get download -q "$pkg" >/dev/null 2>"$T/apt.err") || {
        cat "$T/apt.err" >&2
        die "apt-get download $pkg failed"
    }
    dpkg-deb -x "$T"/"${pkg}"_*.deb "$T/root"
    MODDIR="$T/root/lib/modules/$KVER"
    [[ -f "$T/root/boot/vmlinuz-$KVER" && -d $MODDIR ]] || die "$pkg has no vmlinuz-$KVER or modules"
    builtin_names=$(sed 's#.*/##; s#\.ko.*##; s#-#_#g' "$MODDIR/modules.builtin" 2>/dev/null || true)
    mkdir -p "$T/k/mods"
    order=()
    visit() { # depth-first: dependencies first
        local name=$1 f dep deps
        name=${name//-/_}
        [[ " ${order[*]} " == *" $name "* ]] && return
        if grep -qx "$name" <<<"$builtin_names"; then return; fi
        f=$(module_file "$MODDIR/kernel" "$name")
        [[ -n $f ]] || die "module $name not in $pkg"
        unpack_ko "$f" "$T/k/mods/$name.ko"
        deps=$(tr '\0' '\n' <"$T/k/mods/$name.ko" | sed -n 's/^depends=//p' | head -1)
        for dep in ${deps//,/ }; do visit "$dep"; done
        order+=("$name")
    }
    for m in $WANT_MODULES; do visit "$m"; done
    echo "${order[*]}" >"$T/k/mods/order"
    cp "$T/root/boot/vmlinuz-$KVER" "$T/k/vmlinuz"
    echo "$RECIPE $WANT_MODULES" >"$T/k/recipe"
    rm -rf "$K"
    mv "$T/k" "$K"
    rm -rf "$T"
    trap - EXIT
    # Older kernels are of no further use (a pinned SHIM_RS_VM_KVER fetches again).
    for old in "$CACHE"/k-*; do [[ $old == "$K" ]] || rm -rf "$old"; done
    note "kernel $KVER cached in $K (modules: $(cat "$K/mods/order"))"
fi

# ---- initramfs: rebuilt when any input changed
inputs_hash() {
    {
        echo "$RECIPE"
        cat "$HERE/image.sh" "$HERE/init" "$HERE/stage2" "$HERE/stage2-systemd" "$K/mods/order"
        sha256sum "$BUSYBOX" "$K"/mods/*.ko
    } | sha256sum | cut -c1-16
}
H=$(inputs_hash)
INITRD="$K/initramfs-$H.cpio.gz"
if [[ ! -f $INITRD ]]; then
    T=$(mktemp -d "$CACHE/.initrd.XXXXXX")
    trap 'rm -rf "$T"' EXIT
    R="$T/root"
    mkdir -p "$R"/{bin,dev,proc,sys,lower,rw,newroot,mods}
    cp "$BUSYBOX" "$R/bin/busybox"
    ln -s busybox "$R/bin/sh"
    cp "$K"/mods/*.ko "$K/mods/order" "$R/mods/"
    install -m 0755 "$HERE/init" "$R/init"
    install -m 0755 "$HERE/stage2" "$R/stage2"
    install -m 0755 "$HERE/stage2-systemd" "$R/stage2-systemd"
    (cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -1) >"$T/initrd"
    rm -f "$K"/initramfs-*.cpio.gz
    mv "$T/initrd" "$INITRD"
    rm -rf "$T"
    trap - EXIT
    note "initramfs $INITRD built"
fi
echo "KERNEL=$K/vmlinuz INITRD=$INITRD KVER=$KVER"
