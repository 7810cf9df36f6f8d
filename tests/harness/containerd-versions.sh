#!/usr/bin/env bash
# Other containerd versions for the e2e test matrix, unpacked into a private
# directory (never installed system-wide).
#
#   containerd-versions.sh fetch [VERSION...]  download and unpack (default: all of
#                                             SHIM_RS_CONTAINERD_VERSIONS); idempotent
#   containerd-versions.sh bin VERSION         print the containerd binary of a
#                                             fetched VERSION (ctr and the stock
#                                             containerd-shim-runc-v2 sit beside it)
#   containerd-versions.sh list                print "VERSION DEBIAN-VERSION BIN" per
#                                             fetched version
#
# Environment:
#   SHIM_RS_CONTAINERD_VERSIONS  upstream versions to fetch (default: "1.7.24 2.1.9")
#   SHIM_RS_CONTAINERD_CACHE     cache dir (default: <repo>/.work/containerd); each
#                                version lives in CACHE/<version>/, apt's private
#                                lists and downloads in CACHE/.apt/
#
# Where they come from: Debian's own packages (containerd 1.7.24 is in trixie,
# 2.1.9 in sid), fetched with apt-get from the same mirror the machine's apt
# sources use, with a private sources list, private lists and a private cache,
# then `dpkg-deb -x`. The packages ship containerd, ctr and the stock
# containerd-shim-runc-v2 together. They need glibc >= 2.34 (Debian 12 has 2.36)
# and any runc (the package says >= 0.1); the stock shim of both versions runs
# with Debian 12's runc 1.1.5 (see tests/harness/NOTES.md).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"
CACHE="${SHIM_RS_CONTAINERD_CACHE:-$REPO_DIR/.work/containerd}"
VERSIONS="${SHIM_RS_CONTAINERD_VERSIONS:-1.7.24 2.1.9}"
# Debian suites that hold the versions we want (both are searched for each).
SUITES="trixie sid"
# Bump when the unpacked layout changes (invalidates caches).
RECIPE=1

die() { echo "containerd-versions.sh: $*" >&2; exit 1; }
note() { echo "containerd-versions.sh: $*" >&2; }

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep -v '^set ' | sed 's/^# \{0,1\}//' >&2
    exit 2
}

valid_version() { [[ "$1" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; }

# The Debian mirror of the machine's apt sources (deb822 .sources first, then
# one-line sources.list), without the security archive.
debian_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] || continue
        while read -r uri; do
            case "$uri" in
                *debian-security* | *security.debian.org*) ;;
                http://* | https://*) printf '%s\n' "${uri%/}"; return 0 ;;
            esac
        done < <(sed -n 's/^URIs:[[:space:]]*//p' "$f" | tr ' ' '\n')
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$f" ]] || continue
        while read -r uri; do
            case "$uri" in
                *debian-security* | *security.debian.org*) ;;
                */debian | */debian/) printf '%s\n' "${uri%/}"; return 0 ;;
            esac
        done < <(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\{0,1\}\([^[:space:]]\+\).*/\2/p' "$f")
    done
    return 1
}

APT_DIR="$CACHE/.apt"
apt_opts() {
    printf '%s\n' \
        -o "Dir::Etc::sourcelist=$APT_DIR/sources.list" \
        -o "Dir::Etc::sourceparts=-" \
        -o "Dir::Etc::preferences=$APT_DIR/preferences" \
        -o "Dir::Etc::preferencesparts=$APT_DIR/preferences.d" \
        -o "Dir::State::Lists=$APT_DIR/lists" \
        -o "Dir::Cache=$APT_DIR/cache" \
        -o "Acquire::Languages=none" \
        -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false" \
        -o "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false" \
        -o "APT::Sandbox::User=root" \
        -o "Debug::NoLocking=true"
}

prepare_apt() {
    local mirror keyring="/usr/share/keyrings/debian-archive-keyring.gpg" signed="" s
    mirror="$(debian_mirror)" || die "no Debian mirror found in /etc/apt/sources.list{,.d}"
    [[ -f "$keyring" ]] && signed="[signed-by=$keyring] "
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/preferences.d"
    : >"$APT_DIR/preferences"
    {
        echo "# Written by tests/harness/containerd-versions.sh"
        for s in $SUITES; do echo "deb ${signed}$mirror $s main"; done
    } >"$APT_DIR/sources.list.tmp"
    mv -f "$APT_DIR/sources.list.tmp" "$APT_DIR/sources.list"
}

apt_update() {
    local -a o
    mapfile -t o < <(apt_opts)
    local i
    for i in 1 2 3; do
        if timeout 300 apt-get "${o[@]}" -q update >"$APT_DIR/update.log" 2>&1; then return 0; fi
        note "apt-get update attempt $i failed:"
        tail -n 5 "$APT_DIR/update.log" >&2
        sleep $((i * 5))
    done
    die "apt-get update of the private lists failed"
}

# The Debian version of package containerd whose upstream version is $1
# (e.g. 1.7.24 -> 1.7.24~ds1-6+deb13u1); the newest such if several.
debian_version_of() {
    local want="$1" v
    local -a o
    mapfile -t o < <(apt_opts)
    while read -r v; do
        case "$v" in
            "$want"~* | "$want"+* | "$want"-*) printf '%s\n' "$v"; return 0 ;;
        esac
    done < <(apt-cache "${o[@]}" madison containerd 2>/dev/null | awk -F'|' '{gsub(/ /,"",$2); print $2}' |
        sort -u -r -V)
    return 1
}

stamp_of() { printf 'recipe=%s deb=%s\n' "$RECIPE" "$1"; }

fetched() {
    local d="$CACHE/$1"
    [[ -x "$d/usr/bin/containerd" && -x "$d/usr/bin/ctr" && -f "$d/.stamp" ]] &&
        grep -q "^recipe=$RECIPE " "$d/.stamp"
}

fetch_one() {
    local ver="$1" deb tmp file
    local -a o
    mapfile -t o < <(apt_opts)
    if ! deb="$(debian_version_of "$ver")"; then
        note "containerd $ver is not in Debian's $SUITES any more; available:"
        apt-cache "${o[@]}" madison containerd >&2 || true
        die "cannot fetch containerd $ver"
    fi
    tmp="$(mktemp -d "$CACHE/.fetch-$ver.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" RETURN
    (cd "$tmp" && timeout 600 apt-get "${o[@]}" -q download "containerd=$deb") >"$tmp/download.log" 2>&1 || {
        tail -n 10 "$tmp/download.log" >&2
        die "apt-get download containerd=$deb failed"
    }
    file="$(find "$tmp" -maxdepth 1 -name 'containerd_*.deb' | head -n 1)"
    [[ -n "$file" ]] || die "apt-get download containerd=$deb produced no .deb"
    [[ "$(dpkg-deb -f "$file" Version)" == "$deb" ]] || die "$file is not containerd $deb"
    mkdir "$tmp/root"
    dpkg-deb -x "$file" "$tmp/root"
    "$tmp/root/usr/bin/containerd" --version >/dev/null ||
        die "containerd $deb does not run on this machine"
    stamp_of "$deb" >"$tmp/root/.stamp"
    rm -rf --one-file-system "${CACHE:?}/$ver"
    mv "$tmp/root" "$CACHE/$ver"
    note "containerd $deb in $CACHE/$ver"
}

cmd_fetch() {
    local -a want=("$@")
    [[ ${#want[@]} -gt 0 ]] || read -r -a want <<<"$VERSIONS"
    local v
    for v in "${want[@]}"; do valid_version "$v" || die "bad version $v (want X.Y.Z)"; done
    mkdir -p "$CACHE"
    (
        flock -w 900 9 || die "timed out waiting for the lock on $CACHE"
        local -a missing=()
        for v in "${want[@]}"; do fetched "$v" || missing+=("$v"); done
        ((${#missing[@]})) || exit 0
        command -v apt-get >/dev/null || die "apt-get not found (this script needs Debian's apt)"
        [[ "$(id -u)" == 0 ]] || die "must run as root (apt-get download)"
        prepare_apt
        apt_update
        for v in "${missing[@]}"; do fetch_one "$v"; done
    ) 9>"$CACHE/.lock"
    for v in "${want[@]}"; do printf '%s %s\n' "$v" "$CACHE/$v/usr/bin/containerd"; done
}

cmd_bin() {
    [[ $# -eq 1 ]] || usage
    valid_version "$1" || die "bad version $1 (want X.Y.Z)"
    fetched "$1" || die "containerd $1 not fetched: run $0 fetch $1"
    printf '%s\n' "$CACHE/$1/usr/bin/containerd"
}

cmd_list() {
    local d v
    for d in "$CACHE"/*/; do
        v="$(basename "$d")"
        if ! valid_version "$v" || ! fetched "$v"; then continue; fi
        printf '%s %s %s\n' "$v" "$(sed -n 's/.* deb=//p' "$d/.stamp")" "$d"usr/bin/containerd
    done
}

main() {
    [[ $# -ge 1 ]] || usage
    local cmd="$1"
    shift
    case "$cmd" in
        fetch) cmd_fetch "$@" ;;
        bin) cmd_bin "$@" ;;
        list) cmd_list "$@" ;;
        *) usage ;;
    esac
}

main "$@"
