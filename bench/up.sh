#!/usr/bin/env bash
# bench/up.sh: `causeway up` — time to Ready and memory of the whole local federation.
#
# Runs `causeway up --detach` (release build) ROUNDS times without Envoy, each in a fresh data
# directory (a user's first start: CA, certificate and store are made), once more on the last
# directory (a restart), and once with Envoy sidecars for reference. Time to Ready is the wall
# time of the command, which returns once everything is Ready (processes, controller status and
# traffic through c1's gateway and sidecar). Memory is read after Ready and 200 requests through
# each gateway (and sidecar): for every process of the federation (supervisor and children)
# VmRSS, VmHWM (its peak RSS) and Pss (smaps_rollup: pages shared between the processes — the
# one causeway binary — split between them instead of counted in each), summed.
# Targets (issue 7): Ready < 10 s; peak memory without Envoy < 300 MB.
#
#   [CAUSEWAY_BIN=PATH] bench/up.sh [--record] [ROUNDS]   (default 3; uses the fixed §9 addresses)
#
# --record appends the table, date, machine and commit to docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

record=false
if [[ ${1:-} == --record ]]; then
    record=true
    shift
fi
rounds=${1:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${HOME:-/root}/.cache/causeway/target}
tools=${CAUSEWAY_TOOLS:-${HOME:-/root}/.cache/causeway/tools}
# shellcheck disable=SC1091
[[ -z ${CAUSEWAY_ENVOY:-} && -f $tools/env ]] && source "$tools/env"

# CAUSEWAY_BIN: an already built binary (skips the build).
if [[ -n ${CAUSEWAY_BIN:-} ]]; then
    bin=$CAUSEWAY_BIN
else
    echo "bench/up.sh: building (release)..." >&2
    cargo build --release -q -p causeway-cli
    bin=$CARGO_TARGET_DIR/release/causeway
fi

work=$(mktemp -d)
current=""
cleanup() {
    [[ -n $current ]] && "$bin" down --data-dir "$current" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# Sum of a /proc field (kB) over the federation's processes, in MiB.
mem() { # DIR FIELD FILE
    local sup pids p total=0 v
    sup=$(cat "$1/up.pid")
    pids="$sup $(ps -o pid= --ppid "$sup" | tr '\n' ' ')"
    for p in $pids; do
        v=$(awk -v f="$2:" '$1 == f {print $2}' "/proc/$p/$3" 2>/dev/null || echo 0)
        total=$((total + ${v:-0}))
    done
    awk -v t="$total" 'BEGIN {printf "%.0f", t / 1024}'
}

run() { # LABEL DIR ENVOY(yes|no)
    local label=$1 dir=$2 envoy=$3 flags=() t0 t1 n
    [[ $envoy == no ]] && flags=(--no-envoy)
    current=$dir
    t0=$(date +%s.%N)
    "$bin" up --detach --data-dir "$dir" "${flags[@]}" >"$work/out" 2>&1 || {
        cat "$work/out" >&2
        exit 1
    }
    t1=$(date +%s.%N)
    for n in 1 2 3; do
        curl -s -o /dev/null -H 'Host: shop.example.com' "http://127.0.$n.1:8080/get_ip?[1-200]"
        if [[ $envoy == yes ]]; then
            curl -s -o /dev/null -H 'Host: shop.global' "http://127.0.$n.10:15001/get_ip?[1-200]"
        fi
    done
    local procs
    procs=$((1 + $(ps -o pid= --ppid "$(cat "$dir/up.pid")" | wc -l)))
    printf '| %s | %s | %.2f | %s | %s | %s | %s |\n' "$label" "$envoy" \
        "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" "$procs" "$(mem "$dir" VmRSS status)" \
        "$(mem "$dir" VmHWM status)" "$(mem "$dir" Pss smaps_rollup)"
    "$bin" down --data-dir "$dir" >/dev/null
    current=""
}

header='| run | Envoy | time to Ready s | processes | RSS sum MiB | peak RSS sum MiB | PSS sum MiB |
|---|---|---:|---:|---:|---:|---:|'
rows=""
for i in $(seq 1 "$rounds"); do
    rows+="$(run "first start $i" "$work/d$i" no)"$'\n'
done
rows+="$(run "restart (same data dir)" "$work/d$rounds" no)"$'\n'
if [[ -n ${CAUSEWAY_ENVOY:-} ]] || command -v envoy >/dev/null; then
    rows+="$(run "first start, sidecars" "$work/e" yes)"$'\n'
fi
table="$header"$'\n'"$rows"
printf '%s' "$table"

if $record; then
    {
        printf '\n### %s — causeway up, %s, %s cores (%s)\n\n' \
            "$(date -u +%Y-%m-%dT%H:%MZ)" "$(uname -srm)" "$(nproc)" \
            "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
        printf 'Commit %s, `bench/up.sh %s` (release build), %s.\n\n' \
            "$(git rev-parse --short HEAD)" "$rounds" "$("${CAUSEWAY_ENVOY:-envoy}" --version 2>/dev/null | grep -o '1\.[0-9]*\.[0-9]*' | head -1 | sed 's/^/Envoy /')"
        printf '%s' "$table"
    } >>docs/benchmarks.md
    echo "bench/up.sh: recorded in docs/benchmarks.md" >&2
fi
