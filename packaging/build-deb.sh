#!/usr/bin/env bash
# packaging/build-deb.sh BINARY OUTDIR: a Debian package of the shim with dpkg-deb (no
# debhelper tree needed for one binary): /usr/bin/containerd-shim-rs-v1, the README and the
# copyright file; libc6 and libseccomp2 declared from what the binary links (dpkg-shlibdeps
# is not used: it wants a debian/ source tree), containerd recommended. Prints the .deb's path.
set -euo pipefail

bin=${1:?usage: build-deb.sh BINARY OUTDIR}
out=${2:?usage: build-deb.sh BINARY OUTDIR}
here=$(cd "$(dirname "$0")/.." && pwd)
name=containerd-shim-rs
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/Cargo.toml" | head -n 1)
commit=$(git -C "$here" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
arch=$(dpkg --print-architecture)
[[ -x $bin ]] || { echo "build-deb.sh: $bin is not an executable" >&2; exit 1; }

# The versions the binary needs: glibc's highest symbol version it uses, and libseccomp 2.5
# (SCMP_ACT_NOTIFY and the notify fd API) when it is linked dynamically.
glibc=$(objdump -T "$bin" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)
depends="libc6 (>= ${glibc:-2.31})"
if objdump -p "$bin" | grep -q 'NEEDED.*libseccomp'; then
    depends="$depends, libseccomp2 (>= 2.5.0)"
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -D -m 0755 "$bin" "$stage/usr/bin/containerd-shim-rs-v1"
install -D -m 0644 "$here/README.md" "$stage/usr/share/doc/$name/README.md"
gzip -9n "$stage/usr/share/doc/$name/README.md"
cat >"$stage/usr/share/doc/$name/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: $name
Source: built from commit $commit

Files: *
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
size=$(du -k -s "$stage/usr" | cut -f1)
mkdir -p "$stage/DEBIAN"
cat >"$stage/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: $arch
Maintainer: containerd-shim-rs developers <containerd-shim-rs@localhost>
Installed-Size: $size
Depends: $depends
Recommends: containerd
Section: admin
Priority: optional
Description: containerd shim v2 that runs OCI containers itself, without runc
 containerd-shim-rs-v1 implements containerd's shim protocol and launches containers
 itself. containerd finds it on PATH for the runtime type io.containerd.rs.v1
 (ctr run --runtime io.containerd.rs.v1, nerdctl, or a Kubernetes RuntimeClass).
CONTROL
mkdir -p "$out"
deb="$out/${name}_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null
echo "$deb"
