#!/usr/bin/env bash
# containerd-shim-rs test environment: the single source of setup used by the
# e2e tests (tests/common/mod.rs), `make demo` and the benchmarks.
#
#   containerd.sh image OUTDIR           build (or reuse) the busybox OCI image tarball,
#                                        print its path
#   containerd.sh pause-image OUTDIR     the same for the CRI sandbox (pause) image
#   containerd.sh start WORKDIR [BINDIR] private containerd in WORKDIR, BINDIR first on PATH
#   containerd.sh stop  WORKDIR          stop it, kill what provably belongs to it, remove WORKDIR
#   containerd.sh ctr   WORKDIR ARGS...  ctr --address WORKDIR/containerd.sock ARGS...
#   containerd.sh info  WORKDIR          print WORKDIR/env (binaries, address, pid)
#
# Environment:
#   CONTAINERD_BIN        containerd binary (default: `containerd` on PATH)
#   SHIM_RS_CONTAINERD    instead of CONTAINERD_BIN: a version fetched by
#                         containerd-versions.sh (e.g. 1.7.24, 2.1.9), or "system"
#   CTR_BIN               ctr binary (default: ctr next to CONTAINERD_BIN, else on PATH)
#   CONTAINERD_NAMESPACE  namespace `start` imports the image into (default: default);
#                         ctr itself honours this variable too
#   CONTAINERD_LOG_LEVEL  containerd log level (default: info)
#   SHIM_RS_IMAGE_DIR     image cache dir used by `start` (default: <repo>/.work/image)
#   SHIM_RS_START_TIMEOUT seconds to wait for containerd to answer (default: 30)
#   BUSYBOX               static busybox to put in the image (default: /bin/busybox)
#   SHIM_RS_CRI=1         at `start`: CRI mode (containerd 1.x: config version 2,
#                         2.x: version 3): the CRI plugin on WORKDIR/containerd.sock,
#                         runtime handlers `rs` and `rs-bare` (ours, with and without
#                         an options table) and `runc` (the runc shim next to
#                         containerd first on PATH), a local pause image as sandbox
#                         image, loopback-only CNI (plugins from /usr/lib/cni,
#                         containernetworking-plugins); the busybox and pause images
#                         are imported into `k8s.io`
#   SHIM_RS_CRI_HANDLERS  with SHIM_RS_CRI=1: more handlers, "NAME=RUNTIME_TYPE ..."
#                         (e.g. rsstatic=io.containerd.rsstatic.v1 for the bench's
#                         static binary), each like `rs` (cgroupfs options table)
#
# Everything here is bounded in time and touches only what it can prove is
# its own: processes are found through WORKDIR paths, never by name.
set -euo pipefail

IMAGE_NAME="localhost/shim-rs/busybox:latest"
IMAGE_FILE="busybox.oci.tar"
# Bump when the image layout produced below changes (invalidates caches).
IMAGE_RECIPE=3
MARKER=".shim-rs-harness"
# Debian's containernetworking-plugins.
CNI_BIN_DIR="${SHIM_RS_CNI_BIN_DIR:-/usr/lib/cni}"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"

die() { echo "containerd.sh: $*" >&2; exit 1; }
warn() { echo "containerd.sh: $*" >&2; }

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep -v '^set ' | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# Absolute, normalised, and refuses dangerous values.
abs_workdir() {
    local w="${1:-}"
    [[ -n "$w" ]] || die "WORKDIR missing"
    case "$w" in /*) ;; *) w="$PWD/$w" ;; esac
    w="$(realpath -m -- "$w")"
    case "$w" in
        / | /tmp | /run | /var | /var/tmp | /usr | /etc | /home | /root | /work)
            die "refusing WORKDIR $w" ;;
    esac
    printf '%s\n' "$w"
}

containerd_bin() {
    local b="${CONTAINERD_BIN:-containerd}"
    # A version fetched by containerd-versions.sh ("system" = the one on PATH).
    if [[ -z "${CONTAINERD_BIN:-}" && -n "${SHIM_RS_CONTAINERD:-}" && "$SHIM_RS_CONTAINERD" != system ]]; then
        b="$("$SCRIPT_DIR/containerd-versions.sh" bin "$SHIM_RS_CONTAINERD")" ||
            die "SHIM_RS_CONTAINERD=$SHIM_RS_CONTAINERD: run tests/harness/containerd-versions.sh fetch $SHIM_RS_CONTAINERD"
    fi
    if [[ "$b" != */* ]]; then
        b="$(command -v "$b" 2>/dev/null)" || die "containerd not found on PATH (install containerd or set CONTAINERD_BIN)"
    fi
    [[ -x "$b" ]] || die "CONTAINERD_BIN=$b is not executable"
    printf '%s\n' "$(realpath -- "$b")"
}

ctr_bin() {
    if [[ -n "${CTR_BIN:-}" ]]; then
        local c="$CTR_BIN"
        [[ "$c" == */* ]] || c="$(command -v "$c" 2>/dev/null)" || die "CTR_BIN=$CTR_BIN not found"
        [[ -x "$c" ]] || die "CTR_BIN=$c is not executable"
        printf '%s\n' "$c"
        return
    fi
    local d
    d="$(dirname "$(containerd_bin)")"
    if [[ -x "$d/ctr" ]]; then
        printf '%s\n' "$d/ctr"
    else
        command -v ctr 2>/dev/null || die "ctr not found (set CTR_BIN)"
    fi
}

go_arch() {
    case "$(uname -m)" in
        x86_64) echo amd64 ;;
        aarch64 | arm64) echo arm64 ;;
        armv7l) echo arm ;;
        ppc64le) echo ppc64le ;;
        s390x) echo s390x ;;
        riscv64) echo riscv64 ;;
        *) die "unsupported architecture $(uname -m)" ;;
    esac
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# ---------------------------------------------------------------- image ---

# Writes the OCI layout tarball into $1 (atomically); caller holds the lock.
build_image() {
    local out="$1" bb="$2" arch="$3"
    local tmp="$4"

    local rootfs="$tmp/rootfs"
    mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,root,run,var/tmp,home}
    mkdir -p "$rootfs/tmp"
    chmod 1777 "$rootfs/tmp" "$rootfs/var/tmp"
    chmod 0700 "$rootfs/root"
    install -m 0755 "$bb" "$rootfs/bin/busybox"

    # Symlinks for every applet at the place busybox itself would install it.
    local applet
    while IFS= read -r applet; do
        [[ -n "$applet" && "$applet" != "bin/busybox" ]] || continue
        mkdir -p "$rootfs/$(dirname "$applet")"
        [[ -e "$rootfs/$applet" || -L "$rootfs/$applet" ]] || ln -s /bin/busybox "$rootfs/$applet"
    done < <("$bb" --list-full)
    # The applets the tests rely on must be there.
    local a
    for a in sh echo true false sleep cat ls id hostname mount ps head dd wc sha256sum env kill grep; do
        [[ -L "$rootfs/bin/$a" || -L "$rootfs/usr/bin/$a" || -L "$rootfs/sbin/$a" || -L "$rootfs/usr/sbin/$a" ]] ||
            ln -s /bin/busybox "$rootfs/bin/$a"
    done

    cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
    cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
EOF
    chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"

    pack_layout "$out" "$arch" "$tmp" "$rootfs" "$IMAGE_NAME" "$IMAGE_FILE" \
        '"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["/bin/sh"],"WorkingDir":"/"' \
        "busybox-static"
}

# Packs directory $4 as a one-layer OCI image named $5 into the tarball $1/$6 (atomically);
# $7 is the image config's "config" members (JSON), $8 a word for its history.
pack_layout() {
    local out="$1" arch="$2" tmp="$3" rootfs="$4" name="$5" file="$6" cfg="$7" what="$8"
    local blobs="$tmp/layout/blobs/sha256"
    mkdir -p "$blobs"

    # Layer: reproducible tar (sorted, fixed owner and mtime), gzip without name/time.
    local -a entries
    mapfile -t entries < <(cd "$rootfs" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort)
    tar -C "$rootfs" --sort=name --owner=0 --group=0 --numeric-owner \
        --mtime='@0' --format=posix --pax-option='exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime' \
        -cf "$tmp/layer.tar" "${entries[@]}"
    local diff_id
    diff_id="$(sha256_of "$tmp/layer.tar")"
    gzip -n -6 <"$tmp/layer.tar" >"$tmp/layer.tar.gz"
    local layer_digest layer_size
    layer_digest="$(sha256_of "$tmp/layer.tar.gz")"
    layer_size="$(stat -c %s "$tmp/layer.tar.gz")"
    mv "$tmp/layer.tar.gz" "$blobs/$layer_digest"

    # Config.
    printf '%s' \
        '{"architecture":"'"$arch"'","os":"linux",' \
        '"created":"1970-01-01T00:00:00Z",' \
        '"config":{'"$cfg"'},' \
        '"rootfs":{"type":"layers","diff_ids":["sha256:'"$diff_id"'"]},' \
        '"history":[{"created":"1970-01-01T00:00:00Z","created_by":"containerd-shim-rs tests/harness/containerd.sh: '"$what"'"}]}' \
        >"$tmp/config.json"
    local config_digest config_size
    config_digest="$(sha256_of "$tmp/config.json")"
    config_size="$(stat -c %s "$tmp/config.json")"
    mv "$tmp/config.json" "$blobs/$config_digest"

    # Manifest.
    printf '%s' \
        '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",' \
        '"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:'"$config_digest"'","size":'"$config_size"'},' \
        '"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:'"$layer_digest"'","size":'"$layer_size"'}]}' \
        >"$tmp/manifest.json"
    local manifest_digest manifest_size
    manifest_digest="$(sha256_of "$tmp/manifest.json")"
    manifest_size="$(stat -c %s "$tmp/manifest.json")"
    mv "$tmp/manifest.json" "$blobs/$manifest_digest"

    # Index + layout marker.
    printf '%s' \
        '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",' \
        '"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:'"$manifest_digest"'","size":'"$manifest_size"',' \
        '"platform":{"architecture":"'"$arch"'","os":"linux"},' \
        '"annotations":{"io.containerd.image.name":"'"$name"'","org.opencontainers.image.ref.name":"'"${name##*:}"'"}}]}' \
        >"$tmp/layout/index.json"
    printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$tmp/layout/oci-layout"

    tar -C "$tmp/layout" --sort=name --owner=0 --group=0 --numeric-owner --mtime='@0' \
        -cf "$tmp/$file" oci-layout index.json blobs
    mv -f "$tmp/$file" "$out/$file"
}

cmd_image() {
    [[ $# -eq 1 ]] || usage
    local out="$1"
    mkdir -p "$out"
    out="$(realpath -- "$out")"
    local bb="${BUSYBOX:-/bin/busybox}"
    [[ -x "$bb" ]] || die "$bb not found: apt-get install busybox-static"
    if ldd "$bb" >/dev/null 2>&1; then
        die "$bb is dynamically linked; the image needs busybox-static"
    fi
    local arch stamp
    arch="$(go_arch)"
    stamp="recipe=$IMAGE_RECIPE busybox=$(sha256_of "$bb") arch=$arch name=$IMAGE_NAME"
    (
        flock -w 120 9 || die "timed out waiting for the image lock in $out"
        if [[ -f "$out/$IMAGE_FILE" && -f "$out/$IMAGE_FILE.stamp" ]] &&
            [[ "$(cat "$out/$IMAGE_FILE.stamp")" == "$stamp" ]]; then
            exit 0
        fi
        rm -f "$out/$IMAGE_FILE.stamp"
        tmp="$(mktemp -d "$out/.build.XXXXXX")"
        # shellcheck disable=SC2064
        trap "rm -rf '$tmp'" EXIT
        build_image "$out" "$bb" "$arch" "$tmp"
        printf '%s\n' "$stamp" >"$out/$IMAGE_FILE.stamp.tmp"
        mv -f "$out/$IMAGE_FILE.stamp.tmp" "$out/$IMAGE_FILE.stamp"
    ) 9>"$out/.lock"
    printf '%s\n' "$out/$IMAGE_FILE"
}

# The CRI sandbox image: tests/harness/pause.c built static, alone in its rootfs.
PAUSE_IMAGE_NAME="localhost/shim-rs/pause:3.9"
PAUSE_IMAGE_FILE="pause.oci.tar"

cmd_pause_image() {
    [[ $# -eq 1 ]] || usage
    local out="$1" src="$SCRIPT_DIR/pause.c"
    mkdir -p "$out"
    out="$(realpath -- "$out")"
    command -v gcc >/dev/null || die "gcc not found (apt-get install gcc libc6-dev)"
    local arch stamp
    arch="$(go_arch)"
    stamp="recipe=$IMAGE_RECIPE pause=$(sha256_of "$src") gcc=$(gcc -dumpfullversion) arch=$arch name=$PAUSE_IMAGE_NAME"
    (
        flock -w 120 9 || die "timed out waiting for the image lock in $out"
        if [[ -f "$out/$PAUSE_IMAGE_FILE" && -f "$out/$PAUSE_IMAGE_FILE.stamp" ]] &&
            [[ "$(cat "$out/$PAUSE_IMAGE_FILE.stamp")" == "$stamp" ]]; then
            exit 0
        fi
        rm -f "$out/$PAUSE_IMAGE_FILE.stamp"
        tmp="$(mktemp -d "$out/.build.XXXXXX")"
        # shellcheck disable=SC2064
        trap "rm -rf '$tmp'" EXIT
        mkdir -p "$tmp/rootfs"
        gcc -static -O2 -s -o "$tmp/rootfs/pause" "$src" || die "building $src failed (needs libc6-dev)"
        touch -d @0 "$tmp/rootfs/pause"
        pack_layout "$out" "$arch" "$tmp" "$tmp/rootfs" "$PAUSE_IMAGE_NAME" "$PAUSE_IMAGE_FILE" \
            '"Entrypoint":["/pause"],"WorkingDir":"/"' "pause.c"
        printf '%s\n' "$stamp" >"$out/$PAUSE_IMAGE_FILE.stamp.tmp"
        mv -f "$out/$PAUSE_IMAGE_FILE.stamp.tmp" "$out/$PAUSE_IMAGE_FILE.stamp"
    ) 9>"$out/.lock"
    printf '%s\n' "$out/$PAUSE_IMAGE_FILE"
}

# ---------------------------------------------------------------- start ---

# Major version of a containerd binary ("containerd <repo> 1.6.20~ds1 ..." -> 1).
containerd_major() {
    local v
    v="$("$1" --version 2>/dev/null | awk '{print $3}')"
    v="${v#v}"
    [[ "$v" =~ ^[0-9]+ ]] || die "cannot tell the version of $1 ($("$1" --version 2>&1 | head -n 1))"
    printf '%s\n' "${BASH_REMATCH[0]}"
}

# CRI mode: everything private to WORKDIR except the pods' network namespaces, which
# containerd makes under /var/run/netns (unique names; `stop` removes those of our pods).
# Same settings on every containerd line, spelled for its config version: 1.x reads
# version 2 with everything in `io.containerd.grpc.v1.cri`; 2.x reads version 3, where
# CRI is split into `io.containerd.cri.v1.images` (snapshotter, pinned sandbox image),
# `io.containerd.cri.v1.runtime` (runtimes, CNI, the OCI spec switches) and
# `io.containerd.grpc.v1.cri` (the gRPC service and the streaming server).
# Unprivileged ports and ICMP are switched on everywhere (2.x's default, off in 1.x):
# the sandbox spec then carries the net.ipv4 sysctls kubelet's pods get on 2.x.
# Handlers: `rs` (ours, with an options table: the shim gets runtimeoptions.v1.Options),
# `rs-bare` (ours, runtime_type alone: the README's snippet; containerd then sends no
# options, or runc's where it adds its own, as for user-namespaced pods) and `runc`.
write_cri_config() {
    local w="$1" level="$2" major="$3"
    # Loopback only. containerd fails a pod whose default network yields no IP
    # (it wants one for "eth0"), so the chain ends with the stateless `static` IPAM
    # plugin reporting the pod's own 127.0.0.1: no interface, route or host state is
    # made, and no traffic can leave the pod.
    mkdir -p "$w/cni/net.d"
    printf '%s\n' '{"cniVersion":"0.4.0","name":"lo","plugins":[{"type":"loopback"},{"type":"static","ipam":{"type":"static","addresses":[{"address":"127.0.0.1/8"}]}}]}' \
        >"$w/cni/net.d/10-lo.conflist"
    printf 'SystemdCgroup = true\n' >"$w/rs-systemd.toml"
    if ((major >= 2)); then
        write_cri_config_v3 "$w" "$level"
    else
        write_cri_config_v2 "$w" "$level"
    fi
}

# The top of both: private root, state, sockets and opt; NRI off (it would share
# /var/run/nri/nri.sock with the machine's containerd).
cri_config_head() {
    local w="$1" level="$2" version="$3"
    cat <<EOF
# Written by tests/harness/containerd.sh (SHIM_RS_CRI=1): a private containerd with CRI.
version = $version
root = "$w/root"
state = "$w/state"
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = "$w/containerd.sock"

[ttrpc]
  address = "$w/containerd.sock.ttrpc"

[debug]
  address = ""
  level = "$level"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$w/opt"
EOF
}

# containerd 1.x (config version 2).
write_cri_config_v2() {
    local w="$1" level="$2"
    {
        cri_config_head "$w" "$level" 2
        cat <<EOF
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$PAUSE_IMAGE_NAME"
    # Containers may not get a lower oom_score_adj than the shim (no CAP_SYS_RESOURCE here).
    restrict_oom_score_adj = true
    disable_apparmor = true
    enable_selinux = false
    enable_unprivileged_ports = true
    enable_unprivileged_icmp = true
    # The streaming server (exec/attach/port-forward URLs) listens on loopback only.
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rs]
        runtime_type = "io.containerd.rs.v1"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rs.options]
          SystemdCgroup = false
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rs-bare]
        runtime_type = "io.containerd.rs.v1"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
      # The systemd cgroup driver (tests where systemd is PID 1: e2e_cri cri_systemd_*).
      # containerd 1.6 hands a non-runc runtime only ConfigPath of its options table (1.7+
      # also the table as TOML), so SystemdCgroup goes into that file.
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rs-systemd]
        runtime_type = "io.containerd.rs.v1"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rs-systemd.options]
          ConfigPath = "$w/rs-systemd.toml"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc-systemd]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc-systemd.options]
          SystemdCgroup = true
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "$CNI_BIN_DIR"
      conf_dir = "$w/cni/net.d"
      max_conf_num = 1
EOF
        extra_cri_handlers 'plugins."io.containerd.grpc.v1.cri".containerd.runtimes' ""
    } >"$w/config.toml"
}

# The handlers of SHIM_RS_CRI_HANDLERS ("NAME=RUNTIME_TYPE ..."), as TOML tables under
# $1 (the runtimes table of the config version); $2: a `sandboxer` to name (2.x), or "".
extra_cri_handlers() {
    local table="$1" sandboxer="$2" h name type
    for h in ${SHIM_RS_CRI_HANDLERS:-}; do
        name="${h%%=*}" type="${h#*=}"
        [[ "$h" == *=* && "$name" =~ ^[a-z0-9][a-z0-9-]*$ && "$type" =~ ^[a-z0-9.]+$ ]] ||
            die "SHIM_RS_CRI_HANDLERS: bad entry '$h' (want NAME=RUNTIME_TYPE)"
        printf '      [%s.%s]\n        runtime_type = "%s"\n' "$table" "$name" "$type"
        [[ -z "$sandboxer" ]] || printf '        sandboxer = "%s"\n' "$sandboxer"
        printf '        [%s.%s.options]\n          SystemdCgroup = false\n' "$table" "$name"
    done
}

# containerd 2.x (config version 3): the same settings under the split CRI plugins.
# Pods use the default `podsandbox` sandboxer (the pause container runs as a task of
# the handler's shim, as in 1.x).
write_cri_config_v3() {
    local w="$1" level="$2"
    {
        cri_config_head "$w" "$level" 3
        cat <<EOF
  [plugins."io.containerd.cri.v1.images"]
    snapshotter = "overlayfs"
    [plugins."io.containerd.cri.v1.images".pinned_images]
      sandbox = "$PAUSE_IMAGE_NAME"
  [plugins."io.containerd.cri.v1.runtime"]
    # Containers may not get a lower oom_score_adj than the shim (no CAP_SYS_RESOURCE here).
    restrict_oom_score_adj = true
    disable_apparmor = true
    enable_selinux = false
    enable_unprivileged_ports = true
    enable_unprivileged_icmp = true
    [plugins."io.containerd.cri.v1.runtime".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.rs]
        runtime_type = "io.containerd.rs.v1"
        sandboxer = "podsandbox"
        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.rs.options]
          SystemdCgroup = false
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.rs-bare]
        runtime_type = "io.containerd.rs.v1"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        sandboxer = "podsandbox"
        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
          SystemdCgroup = false
      # The systemd cgroup driver (tests where systemd is PID 1: e2e_cri cri_systemd_*).
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.rs-systemd]
        runtime_type = "io.containerd.rs.v1"
        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.rs-systemd.options]
          ConfigPath = "$w/rs-systemd.toml"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc-systemd]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc-systemd.options]
          SystemdCgroup = true
    [plugins."io.containerd.cri.v1.runtime".cni]
      bin_dirs = ["$CNI_BIN_DIR"]
      conf_dir = "$w/cni/net.d"
      max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri"]
    # The streaming server (exec/attach/port-forward URLs) listens on loopback only.
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
EOF
        extra_cri_handlers 'plugins."io.containerd.cri.v1.runtime".containerd.runtimes' podsandbox
    } >"$w/config.toml"
}

write_config() {
    local w="$1" level="$2" major="$3" version disabled
    # containerd 2.x reads config version 3 (it migrates 2 with a warning on every
    # start); 1.x knows only up to 2. The keys used below are the same in both.
    # No CRI for now (1.x: grpc.v1.cri; 2.x split it into cri.v1.images and
    # cri.v1.runtime, and the pod sandbox controller and its grpc service then
    # fail to load with a warning unless they are disabled too); NRI
    # (containerd >= 1.7) would share /var/run/nri/nri.sock.
    if ((major >= 2)); then
        version=3
        disabled='"io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images", "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.grpc.v1.sandbox-controllers", "io.containerd.nri.v1.nri"'
    else
        version=2
        disabled='"io.containerd.grpc.v1.cri", "io.containerd.nri.v1.nri"'
    fi
    cat >"$w/config.toml" <<EOF
# Written by tests/harness/containerd.sh: a private containerd for tests.
version = $version
root = "$w/root"
state = "$w/state"
disabled_plugins = [$disabled]

[grpc]
  address = "$w/containerd.sock"

[ttrpc]
  address = "$w/containerd.sock.ttrpc"

[debug]
  address = ""
  level = "$level"

[metrics]
  address = ""

# The default snapshotter (overlayfs) keeps its data under root; opt would
# default to the machine-wide /opt/containerd.
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$w/opt"
EOF
}

# True when directory $1 holds nothing but what a caller may prepare: bin/, owner.
only_caller_files() {
    local f
    for f in "$1"/* "$1"/.[!.]* "$1"/..?*; do
        [[ -e "$f" || -L "$f" ]] || continue
        case "${f##*/}" in bin | owner) ;; *) return 1 ;; esac
    done
    return 0
}

# Alive and not a zombie (our pid 1 may reap late).
pid_alive() {
    [[ -n "${1:-}" ]] || return 1
    local st
    st="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    st="${st##*) }"
    [[ "${st:0:1}" != Z && "${st:0:1}" != X ]]
}

# True when pid $1 is the containerd started for WORKDIR $2 (guards against pid reuse).
is_our_containerd() {
    local pid="$1" w="$2"
    pid_alive "$pid" || return 1
    local cmdline
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ "$cmdline" == *"--config $w/config.toml"* ]]
}

cmd_start() {
    [[ $# -ge 1 && $# -le 2 ]] || usage
    [[ "$(id -u)" == 0 ]] || die "must run as root"
    local w bindir=""
    w="$(abs_workdir "$1")"
    if [[ $# -eq 2 ]]; then
        bindir="$(realpath -- "$2")" || die "BINDIR $2 not found"
        [[ -d "$bindir" ]] || die "BINDIR $bindir is not a directory"
    fi
    local cbin ctr ns level timeout
    cbin="$(containerd_bin)"
    ctr="$(ctr_bin)"
    ns="${CONTAINERD_NAMESPACE:-default}"
    level="${CONTAINERD_LOG_LEVEL:-info}"
    timeout="${SHIM_RS_START_TIMEOUT:-30}"

    # unix socket paths are limited to 107 bytes; leave room for ".ttrpc".
    (( ${#w} + 22 <= 107 )) || die "WORKDIR path too long for a unix socket: $w"

    if [[ -f "$w/containerd.pid" ]] && is_our_containerd "$(cat "$w/containerd.pid")" "$w"; then
        die "a containerd is already running for $w (pid $(cat "$w/containerd.pid"))"
    fi
    # WORKDIR must be new, empty, ours already, or hold only the caller's bin/
    # (BINDIR) and owner file.
    if [[ -e "$w" && ! -e "$w/$MARKER" ]] && ! only_caller_files "$w"; then
        die "$w exists, is not empty and was not made by this script"
    fi
    mkdir -p "$w"
    : >"$w/$MARKER"
    mkdir -p "$w/root" "$w/state" "$w/opt"
    local cri="${SHIM_RS_CRI:-0}" major pause_image=""
    major="$(containerd_major "$cbin")"
    if [[ "$cri" == 1 ]]; then
        [[ -x "$CNI_BIN_DIR/loopback" && -x "$CNI_BIN_DIR/static" ]] ||
            die "$CNI_BIN_DIR/loopback missing: apt-get install containernetworking-plugins"
        write_cri_config "$w" "$level" "$major"
        pause_image="$(cmd_pause_image "${SHIM_RS_IMAGE_DIR:-$REPO_DIR/.work/image}")"
    else
        write_config "$w" "$level" "$major"
    fi

    local image
    image="$(cmd_image "${SHIM_RS_IMAGE_DIR:-$REPO_DIR/.work/image}")"

    local path="$PATH"
    # CRI mode: the `runc` handler must get the containerd-shim-runc-v2 of the same
    # package as containerd (a 2.x containerd with Debian 12's 1.6 shim is not a pairing
    # anyone runs); containerd looks on PATH before its own directory.
    [[ "$cri" == 1 ]] && path="$(dirname "$cbin"):$path"
    [[ -n "$bindir" ]] && path="$bindir:$path"

    # setsid: own session, so the caller's terminal signals do not reach it;
    # std fds point at the log so no caller pipe is held open.
    PATH="$path" setsid "$cbin" --config "$w/config.toml" \
        </dev/null >>"$w/containerd.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$w/containerd.pid"
    {
        echo "CONTAINERD_BIN=$cbin"
        echo "CONTAINERD_VERSION=$("$cbin" --version | awk '{print $3}')"
        echo "CTR_BIN=$ctr"
        echo "ADDRESS=$w/containerd.sock"
        echo "NAMESPACE=$ns"
        echo "IMAGE=$IMAGE_NAME"
        echo "IMAGE_TAR=$image"
        echo "BINDIR=$bindir"
        echo "PID=$pid"
        echo "CRI=$cri"
    } >"$w/env"

    local deadline=$((SECONDS + timeout))
    until "$ctr" --address "$w/containerd.sock" --timeout 2s version >/dev/null 2>&1; do
        if ! pid_alive "$pid"; then
            warn "containerd exited during startup (run: $0 stop $w); last log lines:"
            tail -n 30 "$w/containerd.log" >&2 || true
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            warn "containerd did not answer within ${timeout}s (run: $0 stop $w); last log lines:"
            tail -n 30 "$w/containerd.log" >&2 || true
            exit 1
        fi
        sleep 0.05
    done

    # setsid must not have forked: the recorded pid is containerd itself.
    is_our_containerd "$pid" "$w" || die "pid $pid in $w/containerd.pid is not our containerd"

    local out
    if ! out="$(timeout -s KILL 120 "$ctr" --address "$w/containerd.sock" -n "$ns" \
        images import "$image" 2>&1)"; then
        warn "image import failed: $out"
        exit 1
    fi
    # Listing retries when ctr fails: on a loaded machine (or under emulation, tests/vm) its
    # dial can time out, which is not a missing image. The listing is captured before grep:
    # `ctr ... | grep -q` under pipefail fails whenever grep exits before ctr has written its
    # last line (SIGPIPE).
    image_listed() {
        local i listed
        for i in 1 2 3 4 5; do
            if listed="$("$ctr" --address "$w/containerd.sock" -n "$1" images ls -q)"; then
                grep -qxF "$2" <<<"$listed"
                return
            fi
            sleep "$i"
        done
        return 1
    }
    if ! image_listed "$ns" "$IMAGE_NAME"; then
        warn "image $IMAGE_NAME missing after import: $out"
        exit 1
    fi
    if [[ "$cri" == 1 ]]; then
        # CRI sees only the k8s.io namespace; pods need the sandbox image there too.
        local tar name
        for tar in "$image" "$pause_image"; do
            if ! out="$(timeout -s KILL 120 "$ctr" --address "$w/containerd.sock" -n k8s.io \
                images import "$tar" 2>&1)"; then
                warn "image import of $tar into k8s.io failed: $out"
                exit 1
            fi
        done
        for name in "$IMAGE_NAME" "$PAUSE_IMAGE_NAME"; do
            image_listed k8s.io "$name" ||
                { warn "image $name missing in k8s.io after import"; exit 1; }
        done
    fi
}

# ----------------------------------------------------------------- stop ---

# Processes provably belonging to WORKDIR $1, one "PID KIND" per line:
#  - shim:      its argv has "-address $1/containerd.sock" (how containerd starts shims);
#  - container: its root directory is under $1/ (chroot), or it lives in another mount
#               namespace whose root mount names a path under $1/ (overlay lower/upperdir
#               of our snapshotter), or it descends from one of our shims.
# Zombies are skipped (nothing to kill).
our_pids() {
    local w="$1" p pid i n root selfns st state ppid line link
    local -a argv fields
    local -A ppid_of=() kind_of=() root_of=() mntns_of=()
    selfns="$(readlink /proc/self/ns/mnt)"
    # Every process's root and mount namespace in two processes, not two per process: the
    # cgroup-v2 test VM (tests/vm) pays tens of ms per process start.
    while read -r p link; do
        p="${p#/proc/}"
        root_of[${p%%/*}]="$link"
    done < <(find /proc/[0-9]*/root -maxdepth 0 -printf '%p %l\n' 2>/dev/null)
    while read -r p link; do
        p="${p#/proc/}"
        mntns_of[${p%%/*}]="$link"
    done < <(find /proc/[0-9]*/ns/mnt -maxdepth 0 -printf '%p %l\n' 2>/dev/null)
    for p in /proc/[0-9]*; do
        pid="${p#/proc/}"
        [[ "$pid" == "$$" || "$pid" == "$BASHPID" ]] && continue
        read -r st 2>/dev/null <"$p/stat" || continue
        st="${st##*) }"
        read -r -a fields <<<"$st"
        state="${fields[0]:-}"
        ppid="${fields[1]:-0}"
        [[ "$state" == Z || "$state" == X || -z "$state" ]] && continue
        ppid_of[$pid]="$ppid"
        argv=()
        mapfile -d '' -t argv <"$p/cmdline" 2>/dev/null || continue
        n=${#argv[@]}
        for ((i = 0; i < n; i++)); do
            if [[ "${argv[i]}" == "-address=$w/containerd.sock" ||
                ("${argv[i]}" == -address && "${argv[i + 1]:-}" == "$w/containerd.sock") ]]; then
                kind_of[$pid]=shim
                continue 2
            fi
        done
        root="${root_of[$pid]:-}"
        [[ -n "$root" ]] || continue
        if [[ "$root" == "$w/"* ]]; then
            kind_of[$pid]=container
            continue
        fi
        if [[ -n "${mntns_of[$pid]:-}" && "${mntns_of[$pid]}" != "$selfns" ]]; then
            while IFS= read -r line; do
                # field 5 is the mount point; the root mount of that namespace
                line=" $line "
                read -r -a fields <<<"$line"
                if [[ "${fields[4]:-}" == / && "$line" == *"$w/"* ]]; then
                    kind_of[$pid]=container
                    break
                fi
            done <"$p/mountinfo" 2>/dev/null || true
        fi
    done
    # Descendants of our shims (containers are children of their shim).
    local a depth
    for pid in "${!ppid_of[@]}"; do
        [[ -n "${kind_of[$pid]:-}" ]] && continue
        a="${ppid_of[$pid]}"
        for ((depth = 0; depth < 64 && a > 1; depth++)); do
            if [[ "${kind_of[$a]:-}" == shim ]]; then
                kind_of[$pid]=container
                break
            fi
            a="${ppid_of[$a]:-0}"
        done
    done
    for pid in "${!kind_of[@]}"; do
        echo "$pid ${kind_of[$pid]}"
    done
}

# What a CRI pod of bundle $1 may leave when its containerd died first: the pod's
# network namespace (containerd 1.6 mounts it at /var/run/netns/cni-UUID) and the
# cgroup named by cgroupsPath with its pod parent (rmdir only: empty ones).
cri_bundle_leftovers() {
    local cfg="$1/config.json" p d
    [[ -f "$cfg" ]] && command -v jq >/dev/null || return 0
    p="$(jq -r '.linux.namespaces[]? | select(.type == "network") | .path // empty' "$cfg" 2>/dev/null || true)"
    case "$p" in
        /var/run/netns/cni-* | /run/netns/cni-*)
            if [[ -e "$p" ]]; then
                umount -l -- "$p" 2>/dev/null || true
                rm -f -- "$p"
            fi ;;
    esac
    p="$(jq -r '.linux.cgroupsPath // empty' "$cfg" 2>/dev/null || true)"
    # cgroupfs form only ("/parent/id"); never a path that climbs out.
    [[ "$p" == /?*/?* && "$p" != *..* ]] || return 0
    for d in /sys/fs/cgroup/*"$p" /sys/fs/cgroup"$p"; do
        [[ -d "$d" ]] || continue
        rmdir -- "$d" 2>/dev/null || true
        rmdir -- "$(dirname "$d")" 2>/dev/null || true
    done
}

# Mount points under $1, deepest first (mountinfo field 5, octal escapes decoded).
mounts_under() {
    local w="$1"
    awk '{print $5}' /proc/self/mountinfo |
        while IFS= read -r m; do
            m="$(printf '%b' "$m")"
            [[ "$m" == "$w" || "$m" == "$w/"* ]] && printf '%s\n' "$m"
        done |
        awk '{print length($0) "\t" $0}' | sort -rn | cut -f2-
}

cmd_stop() {
    [[ $# -eq 1 ]] || usage
    local w
    w="$(abs_workdir "$1")"
    [[ -e "$w" ]] || return 0
    if [[ ! -e "$w/$MARKER" ]]; then
        # A caller-prepared WORKDIR whose `start` never ran: only bin/ and owner.
        if only_caller_files "$w"; then
            rm -rf --one-file-system -- "$w"
            return 0
        fi
        die "$w was not made by this script ($MARKER missing); not touching it"
    fi

    # 1. containerd: TERM, then KILL after 10s; only the one recorded for this WORKDIR.
    local pid=""
    [[ -f "$w/containerd.pid" ]] && pid="$(cat "$w/containerd.pid")"
    if [[ -n "$pid" ]] && is_our_containerd "$pid" "$w"; then
        kill -TERM "$pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 200; i++)); do
            pid_alive "$pid" || break
            sleep 0.05
        done
        if pid_alive "$pid"; then
            warn "containerd $pid ignored SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 100; i++)); do
                pid_alive "$pid" || break
                sleep 0.05
            done
        fi
        pid_alive "$pid" && warn "containerd $pid still alive"
    fi

    # 2. Container processes, then shims. Repeat: a shim may spawn while we look.
    local round line p kind left
    for ((round = 0; round < 20; round++)); do
        left=0
        while read -r p kind; do
            [[ -n "$p" ]] || continue
            left=1
            if [[ "$kind" == container ]]; then kill -KILL "$p" 2>/dev/null || true; fi
        done < <(our_pids "$w")
        ((left)) || break
        sleep 0.05
        while read -r p kind; do
            [[ -n "$p" ]] || continue
            kill -KILL "$p" 2>/dev/null || true
        done < <(our_pids "$w")
        sleep 0.1
    done
    if [[ -n "$(our_pids "$w")" ]]; then
        warn "processes of $w still alive: $(our_pids "$w" | tr '\n' ' ')"
    fi

    # 3. Shared state under /run/containerd that belongs to our bundles: the shim
    #    socket recorded in each bundle's "address" file, runtime state dirs
    #    /run/containerd/<runtime>/<ns>/<id>, and empty cgroups <ns>/<id>.
    local b ns id addr sock d
    for b in "$w"/state/io.containerd.runtime.v2.task/*/*; do
        [[ -d "$b" ]] || continue
        id="$(basename "$b")"
        ns="$(basename "$(dirname "$b")")"
        if [[ -f "$b/address" ]]; then
            addr="$(cat "$b/address" 2>/dev/null || true)"
            sock="${addr#unix://}"
            case "$sock" in
                /run/containerd/s/*) [[ -S "$sock" ]] && rm -f -- "$sock" ;;
            esac
        fi
        for d in /run/containerd/*/"$ns"/"$id"; do
            [[ -e "$d" && "$d" != /run/containerd/s/* ]] || continue
            rm -rf --one-file-system -- "$d"
            rmdir -- "$(dirname "$d")" 2>/dev/null || true
        done
        for d in /sys/fs/cgroup/*/"$ns"/"$id" /sys/fs/cgroup/"$ns"/"$id"; do
            [[ -d "$d" ]] || continue
            rmdir -- "$d" 2>/dev/null || true
            rmdir -- "$(dirname "$d")" 2>/dev/null || true
        done
        cri_bundle_leftovers "$b"
    done

    # Per-namespace dirs left empty by runtimes (/run/containerd/runc/<ns>, cgroup
    # <ns>): rmdir only, so anything still in use by someone else stays.
    for b in "$w"/state/io.containerd.runtime.v2.task/*; do
        [[ -d "$b" ]] || continue
        ns="$(basename "$b")"
        for d in /run/containerd/*/"$ns" /sys/fs/cgroup/*/"$ns" /sys/fs/cgroup/"$ns"; do
            [[ -d "$d" && "$d" != /run/containerd/s/* ]] || continue
            rmdir -- "$d" 2>/dev/null || true
        done
    done

    # 4. Unmount everything under WORKDIR, deepest first, lazily; repeat for stacked mounts.
    local m
    for ((round = 0; round < 10; round++)); do
        left=0
        while IFS= read -r m; do
            [[ -n "$m" ]] || continue
            left=1
            umount -l -- "$m" 2>/dev/null || warn "umount -l $m failed"
        done < <(mounts_under "$w")
        ((left)) || break
    done
    if [[ -n "$(mounts_under "$w")" ]]; then
        die "mounts left under $w: $(mounts_under "$w" | tr '\n' ' ')"
    fi

    # 5. Remove WORKDIR (never crossing into another filesystem).
    rm -rf --one-file-system -- "$w"
    [[ ! -e "$w" ]] || die "could not remove $w"
}

# ------------------------------------------------------------------ ctr ---

cmd_ctr() {
    [[ $# -ge 1 ]] || usage
    local w ctr
    w="$(abs_workdir "$1")"
    shift
    if [[ -f "$w/env" ]]; then
        ctr="$(sed -n 's/^CTR_BIN=//p' "$w/env")"
    else
        ctr="$(ctr_bin)"
    fi
    exec "$ctr" --address "$w/containerd.sock" "$@"
}

cmd_info() {
    [[ $# -eq 1 ]] || usage
    local w
    w="$(abs_workdir "$1")"
    cat "$w/env"
}

main() {
    [[ $# -ge 1 ]] || usage
    local cmd="$1"
    shift
    case "$cmd" in
        image) cmd_image "$@" ;;
        pause-image) cmd_pause_image "$@" ;;
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        ctr) cmd_ctr "$@" ;;
        info) cmd_info "$@" ;;
        -h | --help | help) usage ;;
        *) usage ;;
    esac
}

main "$@"
