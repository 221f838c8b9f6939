#!/usr/bin/env bash
# bench/controller.sh: the controller's translator at federation scale.
#
# A synthetic federation — CLUSTERS clusters (4 regions, 3 zones each), OBJECTS/2 AccessPoints
# (3 placed clusters, 2 routes, 3 WorkloadEntries each) and OBJECTS/2 NameServices — is
# translated in full (placement, host ownership, Istio objects for every cluster) and its
# statuses computed; then one AccessPoint changes and both run again (ten changes, median;
# the incremental translation's thread CPU time is shown beside its wall time, which a busy
# machine inflates). Peak RSS is the process's
# high-water mark (VmHWM). Targets (issue 5): full < 5 s, incremental < 50 ms, RSS < 2 GiB.
#
#   bench/controller.sh [--record] [CLUSTERS OBJECTS]     (default 100 10000)
#
# --record appends the table, date, machine and commit to docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

record=false
if [[ ${1:-} == --record ]]; then
    record=true
    shift
fi
clusters=${1:-100}
objects=${2:-10000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${HOME:-/root}/.cache/causeway/target}

echo "bench/controller.sh: building (release)..." >&2
cargo build --release -q -p causeway-controller --example translate_bench
bin=$CARGO_TARGET_DIR/release/examples/translate_bench

header='| clusters | AccessPoints | NameServices | Istio objects | full translate ms | full status ms | incremental translate ms | (its CPU ms) | incremental status ms | RSS before MiB | peak RSS MiB |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|'
rows=""
for size in "10 1000" "$clusters $objects"; do
    # shellcheck disable=SC2086
    row=$("$bin" $size 2>/dev/null)
    rows+="$row"$'\n'
done
table="$header"$'\n'"$rows"
printf '%s' "$table"

if $record; then
    {
        printf '\n### %s — controller translation, %s, %s cores (%s)\n\n' \
            "$(date -u +%Y-%m-%dT%H:%MZ)" "$(uname -srm)" "$(nproc)" \
            "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
        printf 'Commit %s, `bench/controller.sh %s %s` (release build).\n\n' \
            "$(git rev-parse --short HEAD)" "$clusters" "$objects"
        printf '%s' "$table"
    } >>docs/benchmarks.md
    echo "bench/controller.sh: recorded in docs/benchmarks.md" >&2
fi
