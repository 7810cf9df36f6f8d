#!/usr/bin/env bash
# tests/harness/ensure-deps.sh PACKAGE...: what `make demo` and `make test` run first on a
# Debian or Ubuntu machine. Installs, as root with apt-get, only the packages that are not
# installed yet (nothing when all are), and checks that cargo is there, saying how to get it.
set -euo pipefail

missing=()
for p in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) != 0 ]]; then
        echo "missing packages: ${missing[*]}; run as root (or: apt-get install ${missing[*]})" >&2
        exit 1
    fi
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if ! command -v "${CARGO:-cargo}" >/dev/null; then
    echo "cargo not found: install the Rust toolchain with rustup (https://rustup.rs:" >&2
    echo "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y" >&2
    echo "then '. \$HOME/.cargo/env'), and run make again" >&2
    exit 1
fi
