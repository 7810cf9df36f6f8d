#!/usr/bin/env bash
# packaging/test-deb.sh DEB: the package as a user installs it. Installs DEB with dpkg (its
# declared dependencies must be there), checks the installed binary, then runs a container
# with a private containerd that finds the shim the way a system containerd does (next to
# its own binary in /usr/bin, then PATH; the harness's BINDIR holds no copy), and checks that
# the shim serving it is /usr/bin's. Removes the package at the end. Installs system-wide:
# meant for CI's fresh machine (`make test-deb`).
set -euo pipefail

deb=${1:?usage: test-deb.sh DEB}
here=$(cd "$(dirname "$0")/.." && pwd)
harness=$here/tests/harness/containerd.sh
bin=/usr/bin/containerd-shim-rs-v1
say() { echo "test-deb: $*"; }
fail() { say "FAIL: $*" >&2; exit 1; }

work=$(mktemp -d /tmp/shim-rs-deb-XXXXXX)
ns=deb-$$
id=deb-$$
cleanup() {
    "$harness" stop "$work" >/dev/null 2>&1 || true
    dpkg -r containerd-shim-rs >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

dpkg -i "$deb" || fail "dpkg -i $deb"
dpkg -s containerd-shim-rs | grep -q '^Status: install ok installed' || fail "not installed"
[[ -x $bin ]] || fail "$bin missing"
"$bin" -v | grep -q "^  Version:" || fail "$bin -v: $("$bin" -v 2>&1)"
[[ -f /usr/share/doc/containerd-shim-rs/copyright ]] || fail "no copyright file"

mkdir -p "$work/bin" # no shim here: containerd must find the installed one
CONTAINERD_NAMESPACE=$ns "$harness" start "$work" "$work/bin" >/dev/null
ctr() { timeout -s KILL 60 "$harness" ctr "$work" -n "$ns" "$@"; }
out=$(ctr run --rm --runtime io.containerd.rs.v1 localhost/shim-rs/busybox:latest "$id" echo hello) ||
    fail "ctr run: $out"
[[ $out == hello ]] || fail "expected hello, got: $out"
say "ctr run --rm --runtime io.containerd.rs.v1 ... echo hello: $out"

# Which binary served it: the daemon of a detached container, by inode. The daemon is the
# child `start` forked, so its argv ends with `start`; its launcher's ends with `launcher`
# (and runs a sealed view of the binary, whose link reads "/").
ctr run -d --runtime io.containerd.rs.v1 localhost/shim-rs/busybox:latest "$id-d" sleep 60 >/dev/null
shim=""
for p in /proc/[0-9]*; do
    if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -Eq -- "-id $id-d( .*)? start $"; then
        shim=${p#/proc/}
        break
    fi
done
[[ -n $shim ]] || fail "no shim daemon found for $id-d"
[[ $(stat -L -c '%d:%i' "/proc/$shim/exe") == $(stat -c '%d:%i' "$bin") ]] ||
    fail "shim $shim runs $(readlink "/proc/$shim/exe"), not $bin"
say "the shim daemon (pid $shim) runs $bin"
ctr task kill -s SIGKILL "$id-d" >/dev/null
for _ in $(seq 50); do
    ctr task rm "$id-d" >/dev/null 2>&1 && break
    sleep 0.2
done
ctr container rm "$id-d" >/dev/null
say "PASS"
