#!/usr/bin/env bash
# tests/bench.sh — side-by-side benchmark of containerd shims, in one run on one private containerd.
#
#   make bench                       # builds target/release/containerd-shim-rs-v1, then runs this
#   BENCH_RUNTIMES=io.containerd.runc.v2 tests/bench.sh      # runc.v2 only
#
# What it measures, per runtime (default: io.containerd.runc.v2 = baseline, io.containerd.rs.v1):
#  1. start latency: hyperfine of `ctr run --rm --runtime RT IMAGE <unique id> true`, run in
#     BENCH_ROUNDS rounds whose runtime order rotates (interleaving), min / median / ratio;
#     plus `ctr version` as the floor of any ctr call.
#  1b. exec latency: hyperfine of `ctr task exec --exec-id X ID true` into one running container
#     per runtime, in the same rounds, min / median / ratio.
#  1c. execs in flight: BENCH_EXEC_BURST execs of `true` into that container, BENCH_EXEC_PAR at a
#     time, BENCH_BURST_RUNS bursts per runtime (interleaved), min / median / ratio.
#  2. memory per container: BENCH_MEM_CONTAINERS sleeping containers per runtime; every process of the
#     shim binary that belongs to a container (daemon and any helper such as a zygote) is summed:
#     RSS, PSS, USS (= Private_Clean + Private_Dirty) from /proc/PID/smaps_rollup, threads from status.
#  3. binary sizes (shim + runc for the runc shims).
#  4. BENCH_BURST_COUNT containers started back to back, and BENCH_BURST_PAR at a time.
#  5. Kubernetes through CRI (BENCH_CRI=1): a second private containerd in the harness' CRI mode
#     (handlers runc = io.containerd.runc.v2, rs = io.containerd.rs.v1, and one named after the tag of
#     any other runtime, e.g. rsstatic-v1 = io.containerd.rsstatic.v1), driven over gRPC by
#     examples/cri_bench.rs as kubelet would, handlers interleaved: the pod cycle (RunPodSandbox ->
#     StopPodSandbox -> RemovePodSandbox), a container's create-to-remove in a running pod
#     (CreateContainer, StartContainer, StopContainer timeout 0, RemoveContainer), ExecSync of `true`
#     (p50 / p99 over BENCH_EXECSYNC_CALLS calls, then as many BENCH_EXEC_PAR in flight), and the pod's
#     shim with one sandbox + two sleeping containers (BENCH_CRI_PODS such pods): PSS summed over every
#     process of the shim binary serving the pod, threads idle (after 3 s quiet), at the ExecSync
#     storm's peak and 3 s after.
# Results: a Markdown table on stdout and in $BENCH_OUT/results.md; raw data (hyperfine JSON, memory
# per container) in $BENCH_OUT/raw/.
#
# Environment (defaults in brackets):
#   BENCH_RUNTIMES        runtimes to compare ["io.containerd.runc.v2 io.containerd.rs.v1"]
#   BENCH_BASELINE        runtime the ratios refer to [io.containerd.runc.v2 if listed, else the first]
#   BENCH_RUNS            timed `ctr run --rm` runs per runtime, in total over all rounds [30]
#   BENCH_WARMUP          warmup runs per runtime and round [5 in the first round, 2 in later ones]
#   BENCH_ROUNDS          rounds the runs are split into, runtime order rotated by one each round [3]
#   BENCH_CTR_FLOOR       1 = also time `ctr version` [1]
#   BENCH_MEM_CONTAINERS  sleeping containers per runtime for the memory figures (0 = skip) [10]
#   BENCH_BURST_COUNT     containers per burst (0 = skip the burst scenario) [20]
#   BENCH_BURST_PAR       parallelism of the parallel burst (0 or 1 = sequential burst only) [4]
#   BENCH_BURST_RUNS      timed bursts per runtime and mode (containers and execs in flight) [3]
#   BENCH_EXEC_BURST      execs per exec burst (0 = skip the execs in flight) [100]
#   BENCH_EXEC_PAR        execs in flight in an exec burst, and ExecSyncs in the CRI storm [10]
#   BENCH_CRI             1 = the Kubernetes (CRI) rows, 0 = skip them [1]
#   BENCH_CRI_RUNS        pod cycles and container create-to-removes per handler [20]
#   BENCH_EXECSYNC_CALLS  ExecSync calls per handler, one at a time (then as many in the storm) [100]
#   BENCH_CRI_PODS        pods per handler for the pod shim's memory (mean per pod; a lone shim shares
#                         its binary's pages with no one, so its PSS is nearly its RSS) [10, the
#                         density of the per-container row's 10 containers]
#   BENCH_CRI_BIN         the CRI client [target/release/examples/cri_bench]
#   BENCH_BINDIR          where our shim binary is [target/release]
#   BENCH_HARNESS         containerd harness [tests/harness/containerd.sh]
#   BENCH_IMAGE           image [localhost/shim-rs/busybox:latest]
#   BENCH_OUT             results directory [.work/bench]
#   BENCH_TMPDIR          where the scratch directory (private containerd, id counters) goes [/tmp]
#   BENCH_TIMEOUT         seconds any single hyperfine invocation may take before it is killed [900]
#
# The script cleans up everything it starts (containers, shims, containerd, mounts, scratch directory)
# on exit, including on failure or Ctrl-C; containerd's log is kept as $BENCH_OUT/raw/containerd.log.
# Any failing `ctr` call fails the benchmark.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

BENCH_RUNTIMES=${BENCH_RUNTIMES:-"io.containerd.runc.v2 io.containerd.rs.v1"}
BENCH_RUNS=${BENCH_RUNS:-30}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_CTR_FLOOR=${BENCH_CTR_FLOOR:-1}
BENCH_MEM_CONTAINERS=${BENCH_MEM_CONTAINERS:-10}
BENCH_BURST_COUNT=${BENCH_BURST_COUNT:-20}
BENCH_BURST_PAR=${BENCH_BURST_PAR:-4}
BENCH_BURST_RUNS=${BENCH_BURST_RUNS:-3}
BENCH_EXEC_BURST=${BENCH_EXEC_BURST:-100}
BENCH_EXEC_PAR=${BENCH_EXEC_PAR:-10}
BENCH_CRI=${BENCH_CRI:-1}
BENCH_CRI_RUNS=${BENCH_CRI_RUNS:-20}
BENCH_EXECSYNC_CALLS=${BENCH_EXECSYNC_CALLS:-100}
BENCH_CRI_PODS=${BENCH_CRI_PODS:-10}
BENCH_CRI_BIN=${BENCH_CRI_BIN:-$ROOT/target/release/examples/cri_bench}
BENCH_BINDIR=${BENCH_BINDIR:-$ROOT/target/release}
BENCH_HARNESS=${BENCH_HARNESS:-$ROOT/tests/harness/containerd.sh}
BENCH_IMAGE=${BENCH_IMAGE:-localhost/shim-rs/busybox:latest}
BENCH_OUT=${BENCH_OUT:-$ROOT/.work/bench}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-900}

read -ra RUNTIMES <<<"$BENCH_RUNTIMES"
[ ${#RUNTIMES[@]} -gt 0 ] || { echo "bench: BENCH_RUNTIMES is empty" >&2; exit 2; }
if [ -z "${BENCH_BASELINE:-}" ]; then
    BENCH_BASELINE=${RUNTIMES[0]}
    for rt in "${RUNTIMES[@]}"; do [ "$rt" = io.containerd.runc.v2 ] && BENCH_BASELINE=$rt; done
fi

log() { printf '\n== %s\n' "$*" >&2; }
warn() { printf 'bench: WARNING: %s\n' "$*" >&2; }
die() { printf 'bench: ERROR: %s\n' "$*" >&2; exit 1; }

for tool in hyperfine ctr jq awk timeout; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
[ -x "$BENCH_HARNESS" ] || [ -f "$BENCH_HARNESS" ] || die "harness $BENCH_HARNESS not found"

# io.containerd.runc.v2 -> runc-v2 (ids, file names); -> containerd-shim-runc-v2 (binary, as containerd
# resolves it).
tag_of() { local t=${1#io.containerd.}; echo "${t//./-}"; }
shim_name_of() { echo "containerd-shim-$(tag_of "$1")"; }
shim_path_of() {
    local name; name=$(shim_name_of "$1")
    if [ -x "$BENCH_BINDIR/$name" ]; then echo "$BENCH_BINDIR/$name"; else command -v "$name" || true; fi
}
for rt in "${RUNTIMES[@]}"; do
    [ -n "$(shim_path_of "$rt")" ] ||
        die "no $(shim_name_of "$rt") in $BENCH_BINDIR or PATH for runtime $rt (run 'make bench', or cargo build --release)"
done
if [ "$BENCH_CRI" = 1 ]; then
    [ -x "$BENCH_CRI_BIN" ] ||
        die "no CRI client at $BENCH_CRI_BIN (cargo build --release --example cri_bench, or BENCH_CRI=0)"
fi

# ---------------------------------------------------------------------------------------------------
# Private containerd, unique namespace, cleanup on exit.
# SCRATCH holds our id counters and scripts; WORK (inside it, made by the harness) the containerd.
SCRATCH=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/shim-rs-bench.XXXXXX")
case $SCRATCH in *[[:space:]]*) rmdir "$SCRATCH"; die "scratch directory must not contain whitespace: $SCRATCH" ;; esac
WORK=$SCRATCH/c
SOCK=$WORK/containerd.sock
# The CRI phase's own containerd (harness CRI mode), started only for that phase.
CRI_WORK=$SCRATCH/cri
CRI_SOCK=$CRI_WORK/containerd.sock
CRI_STARTED=0
CTR=ctr
NS=bench-$(date +%s)-$$
RAW=$BENCH_OUT/raw
STARTED=0
FAILED_MEM=()
declare -A SEEN_PIDS=() # pid -> starttime of every shim/task process seen, to check they are gone

ctrx() { timeout -s KILL 60 "$CTR" --address "$SOCK" -n "$NS" "$@"; }

pid_starttime() { # PID -> starttime field of /proc/PID/stat (empty if gone)
    local s
    { read -r s <"/proc/$1/stat"; } 2>/dev/null || return 0
    s=${s##*) }; local f; read -ra f <<<"$s"; echo "${f[19]}"
}
alive_seen_pids() { # prints the recorded pids still alive (same start time)
    local p
    for p in "${!SEEN_PIDS[@]}"; do
        [ "$(pid_starttime "$p")" = "${SEEN_PIDS[$p]}" ] && echo "$p"
    done
    return 0
}
sock_pids() { # [SOCKET] processes started with that containerd address on their command line
    local d p args a sock=${1:-$SOCK}
    for d in /proc/[0-9]*; do
        p=${d#/proc/}
        [ "$p" = $$ ] && continue
        mapfile -d "" args 2>/dev/null <"$d/cmdline" || continue
        for a in "${args[@]}"; do
            case $a in "$sock" | "unix://$sock" | *"=$sock" | *"=unix://$sock") echo "$p"; break ;; esac
        done
    done
    return 0
}

remove_all_containers() { # kill, delete and remove every container of our namespace
    local ids id i
    ids=$(ctrx c ls -q 2>/dev/null) || return 0
    [ -n "$ids" ] || return 0
    for id in $ids; do ctrx t kill -s KILL "$id" >/dev/null 2>&1 || true; done
    for i in $(seq 100); do
        ctrx t ls 2>/dev/null | awk 'NR>1 && $3!="STOPPED"{f=1} END{exit f}' && break
        sleep 0.1
    done
    for id in $ids; do
        ctrx t delete "$id" >/dev/null 2>&1 || ctrx t delete -f "$id" >/dev/null 2>&1 || true
        ctrx c rm "$id" >/dev/null 2>&1 || true
    done
}

verify_clean() { # WHAT: nothing of ours left in containerd, no shim or task seen so far alive
    local what=$1 c t left i
    c=$(ctrx c ls -q) || die "ctr c ls failed"
    t=$(ctrx t ls -q) || die "ctr t ls failed"
    [ -z "$c" ] || die "$what: containers left: ${c//$'\n'/ }"
    [ -z "$t" ] || die "$what: tasks left: ${t//$'\n'/ }"
    for i in $(seq 50); do # shims exit asynchronously after the delete
        left="$(alive_seen_pids) $(sock_pids)"
        [ -z "${left// /}" ] && break
        sleep 0.1
    done
    [ -z "${left// /}" ] || die "$what: processes left: $(for p in $left; do
        printf '%s(%s) ' "$p" "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-80)"; done)"
    if [ -d "/run/containerd/runc/$NS" ] && [ -n "$(ls -A "/run/containerd/runc/$NS")" ]; then
        die "$what: runc state left in /run/containerd/runc/$NS: $(ls "/run/containerd/runc/$NS")"
    fi
    echo "bench: $what: clean (no container, task, shim or runc state left)" >&2
}

cleanup() {
    local rc=$? p m left
    set +e
    trap - EXIT INT TERM
    if [ -f "$WORK/containerd.log" ]; then
        cp "$WORK/containerd.log" "$RAW/containerd.log" 2>/dev/null
        if [ "$rc" != 0 ]; then
            echo "bench: last lines of containerd's log ($RAW/containerd.log):" >&2
            tail -n 20 "$WORK/containerd.log" >&2
        fi
    fi
    if [ "$CRI_STARTED" = 1 ]; then
        cp "$CRI_WORK/containerd.log" "$RAW/containerd-cri.log" 2>/dev/null
        if [ "$rc" != 0 ] && [ -f "$CRI_WORK/containerd.log" ]; then
            echo "bench: last lines of the CRI containerd's log ($RAW/containerd-cri.log):" >&2
            tail -n 20 "$CRI_WORK/containerd.log" >&2
        fi
        # Stops it, kills its shims and pods' processes, removes the pods' netns and cgroups.
        "$BENCH_HARNESS" stop "$CRI_WORK" >/dev/null 2>&1 || warn "harness stop (CRI) failed"
    fi
    if [ "$STARTED" = 1 ]; then
        remove_all_containers
        ctrx images rm "$BENCH_IMAGE" >/dev/null 2>&1
        ctrx namespaces rm "$NS" >/dev/null 2>&1
        "$BENCH_HARNESS" stop "$WORK" >/dev/null 2>&1 || warn "harness stop failed"
    fi
    # Shims (and their helpers) that outlived containerd: ours by their address or their recorded pid.
    left="$(sock_pids) $(sock_pids "$CRI_SOCK") $(alive_seen_pids)"
    if [ -n "${left// /}" ]; then
        warn "killing leftover processes: $left"
        for p in $left; do kill -KILL "$p" 2>/dev/null; done
        [ "$rc" = 0 ] && rc=1
    fi
    if [ -d "/run/containerd/runc/$NS" ]; then
        rm -rf "/run/containerd/runc/${NS:?}"
    fi
    # Mounts left under the work directories (rootfs of a container whose delete failed).
    while read -r m; do
        warn "unmounting leftover $m"; umount -l "$m" 2>/dev/null
    done < <(awk -v w="$SCRATCH/" 'index($2, w) == 1 {print $2}' /proc/self/mounts | sort -r)
    if [ -n "$(awk -v w="$SCRATCH/" 'index($2, w) == 1' /proc/self/mounts)" ]; then
        warn "mounts still under $SCRATCH; not removing it"
    else
        rm -rf --one-file-system "$SCRATCH"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$BENCH_OUT" "$RAW" "$SCRATCH/ids"
rm -f "$RAW"/*.json "$RAW"/*.tsv "$RAW"/containerd.log

log "starting private containerd in $WORK (namespace $NS)"
STARTED=1
bindir_arg=()
[ -d "$BENCH_BINDIR" ] && bindir_arg=("$BENCH_BINDIR")
# CONTAINERD_NAMESPACE: the namespace the harness imports the image into.
CONTAINERD_NAMESPACE=$NS "$BENCH_HARNESS" start "$WORK" "${bindir_arg[@]}" >&2
[ -S "$SOCK" ] || die "no containerd socket at $SOCK after harness start"
if [ -f "$WORK/env" ]; then
    CTR=$(sed -n 's/^CTR_BIN=//p' "$WORK/env")
    [ -n "$CTR" ] || CTR=ctr
fi
if ! ctrx images ls -q | grep -qxF "$BENCH_IMAGE"; then
    tarball=$("$BENCH_HARNESS" image "$SCRATCH/image" | tail -n 1)
    [ -f "$tarball" ] || die "harness image printed no tarball path (got: $tarball)"
    ctrx images import "$tarball" >&2
    ctrx images ls -q | grep -qxF "$BENCH_IMAGE" || die "image $BENCH_IMAGE missing after importing $tarball"
fi

for rt in "${RUNTIMES[@]}"; do echo 0 >"$SCRATCH/ids/$(tag_of "$rt").n"; done

# One visible run per runtime: a broken runtime fails here with ctr's own message.
for rt in "${RUNTIMES[@]}"; do
    out=$(ctrx run --rm --runtime "$rt" "$BENCH_IMAGE" "smoke-$(tag_of "$rt")" sh -c 'echo ok' 2>&1 | tr -d '\0') ||
        die "smoke run with $rt failed: $out"
    [ "$out" = ok ] || die "smoke run with $rt: expected 'ok', got: $out"
done
echo "bench: smoke runs ok: ${RUNTIMES[*]}" >&2

# ---------------------------------------------------------------------------------------------------
# hyperfine in rounds. Commands run through sh (dash); hyperfine subtracts the shell's start time.
# Each command takes a fresh container id from a counter file with shell builtins only (no fork).
HF_STYLE=()
[ -t 1 ] || HF_STYLE=(--style basic)

# run_rounds PHASE ROUNDS RUNS_PER_ROUND WARMUP_FIRST WARMUP_LATER NAME=CMD...
run_rounds() {
    local phase=$1 rounds=$2 per=$3 w1=$4 w2=$5; shift 5
    local r args=() names=() cmds=() i warm
    for a in "$@"; do names+=("${a%%=*}"); cmds+=("${a#*=}"); done
    for ((r = 1; r <= rounds; r++)); do
        args=()
        # Rotated by one each round, so that each command takes every position and follows
        # every other one as often: a command run right after another's batch pays that
        # batch's deferred kernel work (network namespaces are torn down in a worker).
        local n=${#names[@]} k
        for ((k = 0; k < n; k++)); do
            i=$(((r - 1 + k) % n))
            args+=(-n "${names[$i]}" "${cmds[$i]}")
        done
        warm=$w2; ((r == 1)) && warm=$w1
        log "$phase: round $r/$rounds ($per runs, $warm warmup per command)"
        timeout -s KILL "$BENCH_TIMEOUT" hyperfine "${HF_STYLE[@]}" --shell sh --warmup "$warm" --runs "$per" \
            --export-json "$RAW/$phase-round$r.json" "${args[@]}" >&2 ||
            die "$phase: hyperfine failed (a command failed, or it took longer than ${BENCH_TIMEOUT}s)"
    done
}

# stats PHASE NAME -> "n min median mean stddev max" in seconds, over all rounds of PHASE
stats() {
    jq -rs --arg c "$2" '
        [.[].results[] | select(.command == $c) | .times[]] | sort as $t | ($t | length) as $n
        | if $n == 0 then "0 0 0 0 0 0" else
          ($t | add / $n) as $mean
          | (if $n % 2 == 1 then $t[(($n - 1) / 2 | floor)] else ($t[$n / 2 - 1] + $t[$n / 2]) / 2 end) as $med
          | (if $n > 1 then ([$t[] | (. - $mean) * (. - $mean)] | add / ($n - 1) | sqrt) else 0 end) as $sd
          | "\($n) \($t[0]) \($med) \($mean) \($sd) \($t[-1])" end' "$RAW/$1"-round*.json
}

ctr_cmd="$CTR --address $SOCK -n $NS"
run_cmd() { # RT PREFIX -> shell command that runs one container with a fresh id
    local rt=$1 tag; tag=$(tag_of "$1")
    echo "read n < $SCRATCH/ids/$tag.n; n=\$((n+1)); echo \$n > $SCRATCH/ids/$tag.n; exec $ctr_cmd run --rm --runtime $rt $BENCH_IMAGE $2-$tag-\$n true"
}

declare -A LAT=() BURST_SEQ=() BURST_PAR=() MEM=() SIZE=() SIZE_DETAIL=()
FLOOR=""

# 1. Start latency --------------------------------------------------------------------------------
per_round=$(((BENCH_RUNS + BENCH_ROUNDS - 1) / BENCH_ROUNDS))
warm_first=${BENCH_WARMUP:-5}
warm_later=${BENCH_WARMUP:-2}
specs=()
for rt in "${RUNTIMES[@]}"; do specs+=("$rt=$(run_cmd "$rt" lat)"); done
[ "$BENCH_CTR_FLOOR" = 1 ] && specs+=("ctr version=$ctr_cmd version")
run_rounds latency "$BENCH_ROUNDS" "$per_round" "$warm_first" "$warm_later" "${specs[@]}"
for rt in "${RUNTIMES[@]}"; do LAT[$rt]=$(stats latency "$rt"); done
[ "$BENCH_CTR_FLOOR" = 1 ] && FLOOR=$(stats latency "ctr version")
verify_clean "after latency runs"

# 1b. Exec latency: `ctr task exec` of `true` into a running container of each runtime -------------
declare -A EXEC=()
exec_cmd() { # RT -> shell command that runs one exec with a fresh exec id
    local tag; tag=$(tag_of "$1")
    echo "read n < $SCRATCH/ids/$tag.x; n=\$((n+1)); echo \$n > $SCRATCH/ids/$tag.x; exec $ctr_cmd task exec --exec-id x\$n exec-$tag true"
}
specs=()
for rt in "${RUNTIMES[@]}"; do
    tag=$(tag_of "$rt")
    echo 0 >"$SCRATCH/ids/$tag.x"
    ctrx run -d --runtime "$rt" "$BENCH_IMAGE" "exec-$tag" sleep 600 >/dev/null ||
        die "ctr run -d exec-$tag with $rt failed"
    specs+=("$rt=$(exec_cmd "$rt")")
done
run_rounds exec "$BENCH_ROUNDS" "$per_round" "$warm_first" "$warm_later" "${specs[@]}"

# 1c. Execs in flight: BENCH_EXEC_BURST execs into the same containers, BENCH_EXEC_PAR at a time.
declare -A EXEC_BURST=()
if [ "$BENCH_EXEC_BURST" -gt 0 ]; then
    cat >"$SCRATCH/execburst.sh" <<EOF
#!/bin/sh
# execburst.sh TAG: $BENCH_EXEC_BURST execs of true into container exec-TAG, $BENCH_EXEC_PAR in flight.
# Any failure fails the burst.
set -eu
tag=\$1 count=$BENCH_EXEC_BURST
read n < $SCRATCH/ids/\$tag.x; echo \$((n + count)) > $SCRATCH/ids/\$tag.x
seq \$((n + 1)) \$((n + count)) |
    xargs -P $BENCH_EXEC_PAR -I@ $ctr_cmd task exec --exec-id b@ "exec-\$tag" true
EOF
    specs=()
    for rt in "${RUNTIMES[@]}"; do specs+=("$rt=sh $SCRATCH/execburst.sh $(tag_of "$rt")"); done
    run_rounds execburst "$BENCH_BURST_RUNS" 1 1 0 "${specs[@]}"
    for rt in "${RUNTIMES[@]}"; do EXEC_BURST[$rt]=$(stats execburst "$rt"); done
fi
for rt in "${RUNTIMES[@]}"; do
    EXEC[$rt]=$(stats exec "$rt")
    tag=$(tag_of "$rt")
    ctrx task kill -s SIGKILL "exec-$tag" >/dev/null 2>&1 || true
    for _ in $(seq 50); do ctrx task rm "exec-$tag" >/dev/null 2>&1 && break; sleep 0.1; done
    ctrx container rm "exec-$tag" >/dev/null 2>&1 || true
done
verify_clean "after exec runs"

# 2. Burst: N containers back to back, and N with P at a time ---------------------------------------
if [ "$BENCH_BURST_COUNT" -gt 0 ]; then
    cat >"$SCRATCH/burst.sh" <<EOF
#!/bin/sh
# burst.sh seq|par RUNTIME TAG: start $BENCH_BURST_COUNT containers (ctr run --rm ... true), one after the
# other or $BENCH_BURST_PAR at a time. Any failure fails the burst.
set -eu
mode=\$1 rt=\$2 tag=\$3 count=$BENCH_BURST_COUNT
read n < $SCRATCH/ids/\$tag.n; echo \$((n + count)) > $SCRATCH/ids/\$tag.n
if [ "\$mode" = seq ]; then
    i=1
    while [ \$i -le \$count ]; do
        $ctr_cmd run --rm --runtime "\$rt" $BENCH_IMAGE "burst-\$tag-\$((n + i))" true
        i=\$((i + 1))
    done
else
    seq \$((n + 1)) \$((n + count)) |
        xargs -P $BENCH_BURST_PAR -I@ $ctr_cmd run --rm --runtime "\$rt" $BENCH_IMAGE "burst-\$tag-@" true
fi
EOF
    specs=()
    for rt in "${RUNTIMES[@]}"; do specs+=("$rt seq=sh $SCRATCH/burst.sh seq $rt $(tag_of "$rt")"); done
    if [ "$BENCH_BURST_PAR" -gt 1 ]; then
        for rt in "${RUNTIMES[@]}"; do specs+=("$rt par=sh $SCRATCH/burst.sh par $rt $(tag_of "$rt")"); done
    fi
    # One run per command and round, rounds rotate the order: interleaved.
    run_rounds burst "$BENCH_BURST_RUNS" 1 0 0 "${specs[@]}"
    for rt in "${RUNTIMES[@]}"; do
        BURST_SEQ[$rt]=$(stats burst "$rt seq")
        [ "$BENCH_BURST_PAR" -gt 1 ] && BURST_PAR[$rt]=$(stats burst "$rt par")
    done
    verify_clean "after bursts"
fi

# 3. Memory per container ----------------------------------------------------------------------------
declare -A PPID_OF=() CHILDREN=() NSID_OF=()
scan_procs() { # snapshot of the process table: parents, children, "-namespace NS -id ID" of shims
    local d p s f
    PPID_OF=(); CHILDREN=(); NSID_OF=()
    for d in /proc/[0-9]*; do
        p=${d#/proc/}
        { read -r s <"$d/stat"; } 2>/dev/null || continue
        s=${s##*) }; read -ra f <<<"$s"
        PPID_OF[$p]=${f[1]}
        CHILDREN[${f[1]}]+=" $p"
        parse_ns_id "$p"
        [ -z "$NSID" ] || NSID_OF[$p]=$NSID
    done
}
parse_ns_id() { # PID -> NSID="NAMESPACE ID" from a shim command line (-namespace NS -id ID, or -flag=value)
    local args a prev="" ns="" id=""
    NSID=""
    mapfile -d "" args 2>/dev/null <"/proc/$1/cmdline" || return 0
    for a in "${args[@]}"; do
        case $prev in -namespace | --namespace) ns=$a ;; -id | --id) id=$a ;; esac
        case $a in -namespace=* | --namespace=*) ns=${a#*=} ;; -id=* | --id=*) id=${a#*=} ;; esac
        prev=$a
    done
    if [ -n "$ns" ] && [ -n "$id" ]; then NSID="$ns $id"; fi
    return 0
}
exe_base() {
    local e a=""
    e=$(readlink "/proc/$1/exe" 2>/dev/null) || return 0
    e=${e% (deleted)}
    # Our launcher runs from a detached read-only view of the binary (README "Security"), whose
    # link reads "/": its name is then the command's.
    if [ "$e" = / ]; then
        IFS= read -r -d '' a <"/proc/$1/cmdline" || true
        e=$a
    fi
    echo "${e##*/}"
}

# shim_pids_of ID TASKPID SHIMNAME -> every process of the shim binary belonging to the container:
# the task's ancestors of that binary, all their descendants of that binary, and any process of that
# binary started with "-namespace NS ... -id ID" on its command line.
shim_pids_of() {
    local id=$1 tpid=$2 name=$3 p top="" q queue args i
    declare -A found=()
    p=${PPID_OF[$tpid]:-0}
    while [ "$p" -gt 1 ] && [ "$(exe_base "$p")" = "$name" ]; do
        found[$p]=1; top=$p; p=${PPID_OF[$p]:-0}
    done
    if [ -n "$top" ]; then
        queue=$top
        while [ -n "$queue" ]; do
            read -r q queue <<<"$queue" || true
            for p in ${CHILDREN[$q]:-}; do
                [ "$(exe_base "$p")" = "$name" ] && found[$p]=1
                queue="$queue $p"
            done
        done
    fi
    for p in "${!NSID_OF[@]}"; do
        [ "${NSID_OF[$p]}" = "$NS $id" ] && [ "$(exe_base "$p")" = "$name" ] && found[$p]=1
    done
    echo "${!found[@]}"
}

mem_of() { # PID -> "rss_kb pss_kb uss_kb threads"
    local k v rss=0 pss=0 pc=0 pd=0 th=0
    while read -r k v _; do
        case $k in Rss:) rss=$v ;; Pss:) pss=$v ;; Private_Clean:) pc=$v ;; Private_Dirty:) pd=$v ;; esac
    done <"/proc/$1/smaps_rollup"
    while read -r k v _; do [ "$k" = Threads: ] && th=$v; done <"/proc/$1/status"
    echo "$rss $pss $((pc + pd)) $th"
}

measure_memory() { # RT -> sets MEM[RT]="rss_mib pss_mib uss_mib threads procs_per_container"
    local rt=$1 tag name n=$BENCH_MEM_CONTAINERS i id tpid pids p tsv
    tag=$(tag_of "$rt"); name=$(shim_name_of "$rt"); tsv=$RAW/memory-$tag.tsv
    log "memory: $n sleeping containers with $rt"
    for ((i = 1; i <= n; i++)); do
        ctrx run -d --runtime "$rt" "$BENCH_IMAGE" "mem-$tag-$i" sleep 600 >/dev/null ||
            die "ctr run -d mem-$tag-$i with $rt failed"
    done
    local ok=0
    for i in $(seq 100); do
        [ "$(ctrx t ls | awk 'NR>1 && $3=="RUNNING"' | wc -l)" -eq "$n" ] && { ok=1; break; }
        sleep 0.1
    done
    [ $ok = 1 ] || die "not all $n tasks of $rt are RUNNING: $(ctrx t ls)"
    sleep "${BENCH_MEM_SETTLE:-1}" # let the shims finish their start-up work
    scan_procs
    declare -A all=() owners=()
    local rss pss uss th tot_rss=0 tot_pss=0 tot_uss=0 tot_th=0 nproc=0
    printf 'container\ttask_pid\tshim_pids\trss_kb\tpss_kb\tuss_kb\tthreads\n' >"$tsv"
    while read -r id tpid _; do
        SEEN_PIDS[$tpid]=$(pid_starttime "$tpid")
        pids=$(shim_pids_of "$id" "$tpid" "$name")
        if [ -z "$pids" ]; then
            warn "$rt: found no $name process for container $id (task pid $tpid, parent ${PPID_OF[$tpid]:-?})"
            FAILED_MEM+=("$rt")
            break
        fi
        local c_rss=0 c_pss=0 c_uss=0 c_th=0
        for p in $pids; do
            SEEN_PIDS[$p]=$(pid_starttime "$p")
            read -r rss pss uss th <<<"$(mem_of "$p")"
            c_rss=$((c_rss + rss)); c_pss=$((c_pss + pss)); c_uss=$((c_uss + uss)); c_th=$((c_th + th))
            owners[$p]+=" $id"
            if [ -z "${all[$p]:-}" ]; then
                all[$p]=1; nproc=$((nproc + 1))
                tot_rss=$((tot_rss + rss)); tot_pss=$((tot_pss + pss)); tot_uss=$((tot_uss + uss)); tot_th=$((tot_th + th))
            fi
        done
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$tpid" "${pids// /,}" "$c_rss" "$c_pss" "$c_uss" "$c_th" >>"$tsv"
    done < <(ctrx t ls | awk 'NR>1 {print $1, $2}')
    # Processes of our namespace's shims that no container claimed (e.g. a helper shared by all shims).
    for p in "${!NSID_OF[@]}"; do
        [ -z "${all[$p]:-}" ] || continue
        [[ "${NSID_OF[$p]}" == "$NS "* ]] || continue
        [ "$(exe_base "$p")" = "$name" ] && warn "$rt: process $p of $name in namespace $NS belongs to no container; not counted"
    done
    for p in "${!owners[@]}"; do
        read -ra o <<<"${owners[$p]}"
        [ ${#o[@]} -gt 1 ] && warn "$rt: shim process $p serves ${#o[@]} containers; it is counted once and shared out"
    done
    column -t -s $'\t' "$tsv" >&2 2>/dev/null || cat "$tsv" >&2
    # Mean per container = sum over the distinct processes / containers (a process shared by several
    # containers is thus split between them rather than counted for each).
    [[ " ${FAILED_MEM[*]} " == *" $rt "* ]] ||
        MEM[$rt]=$(awk -v r=$tot_rss -v p=$tot_pss -v u=$tot_uss -v t=$tot_th -v np=$nproc -v n="$n" \
            'BEGIN {printf "%.1f %.1f %.1f %.1f %.1f", r/n/1024, p/n/1024, u/n/1024, t/n, np/n}')
    log "memory: removing the $rt containers"
    remove_all_containers
    verify_clean "after memory ($rt)"
}
if [ "$BENCH_MEM_CONTAINERS" -gt 0 ]; then
    for rt in "${RUNTIMES[@]}"; do measure_memory "$rt"; done
fi

# 5. Kubernetes through CRI -----------------------------------------------------------------------------
# handler_of RT -> the CRI runtime handler the CRI containerd maps to RT.
handler_of() {
    case $1 in
        io.containerd.runc.v2) echo runc ;;
        io.containerd.rs.v1) echo rs ;;
        *) tag_of "$1" ;;
    esac
}
CRI_JSON=""
if [ "$BENCH_CRI" = 1 ]; then
    extra=() handlers=()
    for rt in "${RUNTIMES[@]}"; do
        h=$(handler_of "$rt")
        handlers+=("$h")
        case $h in runc | rs) ;; *) extra+=("$h=$rt") ;; esac
    done
    log "CRI: private containerd in CRI mode in $CRI_WORK (handlers ${handlers[*]})"
    CRI_STARTED=1
    SHIM_RS_CRI=1 SHIM_RS_CRI_HANDLERS="${extra[*]}" CONTAINERD_NAMESPACE=k8s.io \
        "$BENCH_HARNESS" start "$CRI_WORK" "${bindir_arg[@]}" >&2
    [ -S "$CRI_SOCK" ] || die "no CRI containerd socket at $CRI_SOCK after harness start"
    CRI_JSON=$RAW/cri.json
    timeout -s KILL "$BENCH_TIMEOUT" "$BENCH_CRI_BIN" --socket "$CRI_SOCK" --workdir "$CRI_WORK" \
        --handlers "$(IFS=,; echo "${handlers[*]}")" --image "$BENCH_IMAGE" --out "$CRI_JSON" \
        --runs "$BENCH_CRI_RUNS" --exec-calls "$BENCH_EXECSYNC_CALLS" --exec-par "$BENCH_EXEC_PAR" \
        --pods "$BENCH_CRI_PODS" >&2 ||
        die "CRI: $BENCH_CRI_BIN failed (or took longer than ${BENCH_TIMEOUT}s)"
    # Every pod is gone: no shim of this containerd may outlive it.
    for _ in $(seq 50); do
        left=$(sock_pids "$CRI_SOCK")
        [ -z "$left" ] && break
        sleep 0.1
    done
    [ -z "$left" ] || die "CRI: shims left after the pods were removed: ${left//$'\n'/ }"
    pods=$(timeout -s KILL 60 "$CTR" --address "$CRI_SOCK" -n k8s.io c ls -q) || die "CRI: ctr c ls failed"
    [ -z "$pods" ] || die "CRI: containers left: ${pods//$'\n'/ }"
    cp "$CRI_WORK/containerd.log" "$RAW/containerd-cri.log" 2>/dev/null || true
    "$BENCH_HARNESS" stop "$CRI_WORK" >&2 || die "CRI: harness stop failed"
    CRI_STARTED=0
    echo "bench: after CRI: clean (no pod, container or shim left; CRI containerd stopped)" >&2
fi

# 4. Binary sizes --------------------------------------------------------------------------------------
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b/1048576}'; }
for rt in "${RUNTIMES[@]}"; do
    shim=$(shim_path_of "$rt"); s=$(stat -L -c %s "$shim")
    SIZE_DETAIL[$rt]="$(mib "$s")"
    if [[ $rt == io.containerd.runc.* ]] && runc=$(command -v runc); then
        r=$(stat -L -c %s "$runc")
        SIZE_DETAIL[$rt]="$(mib "$s") + runc $(mib "$r")"
        s=$((s + r))
    fi
    SIZE[$rt]=$(mib "$s")
done

# ---------------------------------------------------------------------------------------------------
# Report.
ms() { awk -v s="$1" 'BEGIN {printf "%.1f", s*1000}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f×", a/b; else printf "n/a"}'; }
short() { local t=${1#io.containerd.}; echo "$t"; }

# cri_report CRI_JSON: the "Kubernetes (CRI)" section (Markdown), ratios to the baseline's handler.
cri_report() {
    local base hmap=""
    base=$(handler_of "$BENCH_BASELINE")
    for rt in "${RUNTIMES[@]}"; do hmap="$hmap$(handler_of "$rt")=$(short "$rt") "; done
    jq -r --arg base "$base" --arg hmap "$hmap" '
        # Fixed decimals (jq 1.6 has no printf): D digits after the point.
        def fixed(d): (. * pow(10; d) | round) as $n | pow(10; d) as $p
            | "\($n / $p | floor).\((($n % $p) + $p | tostring)[1:])";
        def f: fixed(1);
        def r($a; $b): if ($b // 0) > 0 then ($a / $b | fixed(2)) + "×" else "n/a" end;
        def mib: . / 1024 | fixed(2);
        ($hmap | split(" ") | map(select(. != "") | split("=") | {(.[0]): .[1]}) | add) as $rt
        | . as $j | $j.handlers as $hs
        | (if ($hs | index($base)) then $base else $hs[0] end) as $b
        | "### Kubernetes (CRI)",
          "",
          "The CRI plugin of containerd driven over gRPC as kubelet does (examples/cri_bench.rs), handlers interleaved (order alternating):",
          "\(.runs) pod cycles (RunPodSandbox → StopPodSandbox → RemovePodSandbox) and \(.runs) container create-to-removes",
          "(CreateContainer, StartContainer, StopContainer timeout 0, RemoveContainer; a `sleep` container in a running pod) per handler,",
          "\(.exec_calls) ExecSync calls of `true` one at a time, then \(.exec_calls) with \(.exec_par) in flight. Times in ms; ratios to \($b).",
          "",
          "| handler (runtime) | pod cycle p50 / p90 / p99 | ratio p50 | container create-to-remove p50 / p90 / p99 | ratio p50 | ExecSync p50 / p99 | ratio p50 / p99 |",
          "|---|---|---|---|---|---|---|",
          ($hs[] as $h
           | $j.pod_cycle_ms[$h].total.stats as $p | $j.pod_cycle_ms[$b].total.stats as $pb
           | $j.container_cycle_ms[$h].total.stats as $c | $j.container_cycle_ms[$b].total.stats as $cb
           | $j.exec_sync_ms[$h].stats as $x | $j.exec_sync_ms[$b].stats as $xb
           | "| \($h) (\($rt[$h] // "?")) | \($p.p50|f) / \($p.p90|f) / \($p.p99|f) | \(r($p.p50; $pb.p50))"
             + " | \($c.p50|f) / \($c.p90|f) / \($c.p99|f) | \(r($c.p50; $cb.p50))"
             + " | \($x.p50|f) / \($x.p99|f) | \(r($x.p50; $xb.p50)) / \(r($x.p99; $xb.p99)) |"),
          "",
          "Steps, p50 (ms):",
          "",
          "| handler | RunPodSandbox | StopPodSandbox | RemovePodSandbox | CreateContainer | StartContainer | StopContainer | RemoveContainer |",
          "|---|---|---|---|---|---|---|---|",
          ($hs[] as $h | $j.pod_cycle_ms[$h] as $p | $j.container_cycle_ms[$h] as $c
           | "| \($h) | \($p.run.stats.p50|f) | \($p.stop.stats.p50|f) | \($p.remove.stats.p50|f)"
             + " | \($c.create.stats.p50|f) | \($c.start.stats.p50|f) | \($c.stop.stats.p50|f) | \($c.remove.stats.p50|f) |"),
          "",
          "The pod shim, \(.pods) pod(s) per handler of one sandbox + two sleeping containers (3 s quiet): RSS / PSS / USS",
          "summed over every process of the shim binary serving a pod, mean per pod; the threads of the first pod shim idle, at the",
          "peak of the ExecSync storm into it and 3 s after it; wall time of the storm:",
          "",
          "| handler | pod shim RSS / PSS / USS (MiB) | ratio PSS | processes | threads idle / storm peak / after | ExecSync storm (ms) | ratio |",
          "|---|---|---|---|---|---|---|",
          ($hs[] as $h | $j.pod_shim[$h] as $s | $j.pod_shim[$b].mean_per_pod as $mb | $s.mean_per_pod as $m
           | $j.exec_sync_storm[$h] as $w | $j.exec_sync_storm[$b] as $wb
           | "| \($h) | \($m.rss_kib|mib) / \($m.pss_kib|mib) / \($m.uss_kib|mib) | \(r($m.pss_kib; $mb.pss_kib)) | \($m.processes)"
             + " | \($s.threads_idle) / \($s.threads_peak) / \($s.threads_after) | \($w.wall_ms|f) | \(r($w.wall_ms; $wb.wall_ms)) |")
    ' "$1"
}

read -r _ bmin bmed _ <<<"${LAT[$BENCH_BASELINE]}"
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)
[ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -n 1)" ] && commit="$commit (dirty)"
results=$BENCH_OUT/results.md
{
    echo "Benchmark $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit: $(nproc) cores, kernel $(uname -r)," \
        "containerd $(containerd --version | awk '{print $3}'), $(runc --version 2>/dev/null | head -n 1)," \
        "hyperfine $(hyperfine --version | awk '{print $2}'). Image $BENCH_IMAGE (busybox-static)."
    echo
    echo "\`ctr run --rm --runtime RT IMAGE ID true\`: $((per_round * BENCH_ROUNDS)) runs per runtime in" \
        "$BENCH_ROUNDS round(s) of $per_round, runtime order rotating (warmup $warm_first, then $warm_later per round)." \
        "Memory: mean per container over $BENCH_MEM_CONTAINERS sleeping containers, summed over every" \
        "process of the shim binary that belongs to the container (USS = Private_Clean + Private_Dirty)."
    echo
    echo "| runtime | run min / median (ms) | ratio to $(short "$BENCH_BASELINE") (min / median) | RSS (MiB) | PSS (MiB) | USS (MiB) | threads | shim processes | binary size (MiB) |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for rt in "${RUNTIMES[@]}"; do
        read -r _ mn md _ <<<"${LAT[$rt]}"
        if [ -n "${MEM[$rt]:-}" ]; then
            read -r rss pss uss th np <<<"${MEM[$rt]}"
        else
            rss=n/a pss=n/a uss=n/a th=n/a np=n/a
        fi
        size=${SIZE[$rt]}
        [ "${SIZE_DETAIL[$rt]}" != "$size" ] && size="$size (${SIZE_DETAIL[$rt]})"
        echo "| $(short "$rt") | $(ms "$mn") / $(ms "$md") | $(ratio "$mn" "$bmin") / $(ratio "$md" "$bmed") | $rss | $pss | $uss | $th | $np | $size |"
    done
    echo
    echo "\`ctr task exec --exec-id X ID true\` into a running container, as many runs and rounds:"
    echo
    echo "| runtime | exec min / median (ms) | ratio to $(short "$BENCH_BASELINE") (min / median) |"
    echo "|---|---|---|"
    read -r _ xbmin xbmed _ <<<"${EXEC[$BENCH_BASELINE]}"
    for rt in "${RUNTIMES[@]}"; do
        read -r _ mn md _ <<<"${EXEC[$rt]}"
        echo "| $(short "$rt") | $(ms "$mn") / $(ms "$md") | $(ratio "$mn" "$xbmin") / $(ratio "$md" "$xbmed") |"
    done
    if [ "$BENCH_EXEC_BURST" -gt 0 ]; then
        echo
        echo "$BENCH_EXEC_BURST execs (\`ctr task exec ... true\`) into one running container, $BENCH_EXEC_PAR in flight," \
            "$BENCH_BURST_RUNS bursts per runtime, min / median (s):"
        echo
        echo "| runtime | execs in flight | ratio to $(short "$BENCH_BASELINE") (median) |"
        echo "|---|---|---|"
        read -r _ _ xbm _ <<<"${EXEC_BURST[$BENCH_BASELINE]}"
        for rt in "${RUNTIMES[@]}"; do
            read -r _ mn md _ <<<"${EXEC_BURST[$rt]}"
            echo "| $(short "$rt") | $(printf '%.2f / %.2f' "$mn" "$md") | $(ratio "$md" "$xbm") |"
        done
    fi
    if [ -n "$FLOOR" ]; then
        read -r _ mn md _ <<<"$FLOOR"
        echo
        echo "\`ctr version\` alone (ctr start + one round trip, part of every run above): min $(ms "$mn") / median $(ms "$md") ms."
    fi
    if [ "$BENCH_BURST_COUNT" -gt 0 ]; then
        echo
        echo "$BENCH_BURST_COUNT containers (\`ctr run --rm ... true\`), $BENCH_BURST_RUNS bursts per runtime, min / median (s):"
        echo
        if [ "$BENCH_BURST_PAR" -gt 1 ]; then
            echo "| runtime | back to back | ratio | $BENCH_BURST_PAR at a time | ratio |"
            echo "|---|---|---|---|---|"
        else
            echo "| runtime | back to back | ratio |"
            echo "|---|---|---|"
        fi
        read -r _ _ bsm _ <<<"${BURST_SEQ[$BENCH_BASELINE]}"
        [ "$BENCH_BURST_PAR" -gt 1 ] && read -r _ _ bpm _ <<<"${BURST_PAR[$BENCH_BASELINE]}"
        for rt in "${RUNTIMES[@]}"; do
            read -r _ smn smd _ <<<"${BURST_SEQ[$rt]}"
            line="| $(short "$rt") | $(printf '%.2f / %.2f' "$smn" "$smd") | $(ratio "$smd" "$bsm") |"
            if [ "$BENCH_BURST_PAR" -gt 1 ]; then
                read -r _ pmn pmd _ <<<"${BURST_PAR[$rt]}"
                line="$line $(printf '%.2f / %.2f' "$pmn" "$pmd") | $(ratio "$pmd" "$bpm") |"
            fi
            echo "$line"
        done
    fi
    if [ -n "$CRI_JSON" ]; then
        echo
        cri_report "$CRI_JSON"
    fi
} >"$results"
mkdir -p "$BENCH_OUT/history"
cp "$results" "$BENCH_OUT/history/results-$(date -u +%Y%m%d-%H%M%S).md"

# stats_json ARRAY: the stats() lines of ARRAY (keyed by runtime) as JSON members.
stats_json() {
    local -n per_rt=$1
    local rt sep="" n mn md mean sd mx
    for rt in "${RUNTIMES[@]}"; do
        read -r n mn md mean sd mx <<<"${per_rt[$rt]}"
        printf '%s"%s": {"n": %s, "min": %s, "median": %s, "mean": %s, "stddev": %s, "max": %s}' \
            "$sep" "$rt" "$n" "$mn" "$md" "$mean" "$sd" "$mx"
        sep=", "
    done
}

# Machine-readable summary beside the Markdown.
{
    printf '{"baseline": "%s", "latency_s": {' "$BENCH_BASELINE"
    stats_json LAT
    printf '}, "memory_mib_per_container": {'
    sep=""
    for rt in "${RUNTIMES[@]}"; do
        [ -n "${MEM[$rt]:-}" ] || continue
        read -r rss pss uss th np <<<"${MEM[$rt]}"
        printf '%s"%s": {"rss": %s, "pss": %s, "uss": %s, "threads": %s, "processes": %s}' \
            "$sep" "$rt" "$rss" "$pss" "$uss" "$th" "$np"
        sep=", "
    done
    printf '}, "exec_s": {'
    stats_json EXEC
    printf '}, "exec_in_flight_s": {'
    sep=""
    for rt in "${RUNTIMES[@]}"; do
        [ -n "${EXEC_BURST[$rt]:-}" ] || continue
        read -r n mn md mean sd mx <<<"${EXEC_BURST[$rt]}"
        printf '%s"%s": {"execs": %s, "in_flight": %s, "n": %s, "min": %s, "median": %s, "max": %s}' \
            "$sep" "$rt" "$BENCH_EXEC_BURST" "$BENCH_EXEC_PAR" "$n" "$mn" "$md" "$mx"
        sep=", "
    done
    printf '}}\n'
} | jq . >"$BENCH_OUT/results.json.tmp"
# The CRI figures (statistics only; the samples stay in raw/cri.json), keyed by handler, with
# the runtime each handler maps to.
if [ -n "$CRI_JSON" ]; then
    map="{}"
    for rt in "${RUNTIMES[@]}"; do map=$(jq -c --arg h "$(handler_of "$rt")" --arg r "$rt" '. + {($h): $r}' <<<"$map"); done
    jq --slurpfile cri "$CRI_JSON" --argjson map "$map" '
        def nosamples: walk(if type == "object" then del(.samples_ms) | del(.pids) else . end);
        . + {cri: ($cri[0] | nosamples | . + {runtime_of_handler: $map})}' \
        "$BENCH_OUT/results.json.tmp" >"$BENCH_OUT/results.json"
    rm -f "$BENCH_OUT/results.json.tmp"
else
    mv "$BENCH_OUT/results.json.tmp" "$BENCH_OUT/results.json"
fi

echo
cat "$results"
echo
echo "bench: wrote $results (raw data in $RAW)" >&2
[ ${#FAILED_MEM[@]} -eq 0 ] || die "memory attribution failed for: ${FAILED_MEM[*]}"
