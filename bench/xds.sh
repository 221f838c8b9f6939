#!/usr/bin/env bash
# bench/xds.sh: ADS push to many proxies, state of the world against delta.
#
# CLIENTS simulated proxies (in-process tonic clients, 100 streams per HTTP/2 connection) subscribe
# to CDS, EDS, LDS, SRDS and RDS of one group holding a gateway-like configuration of ACCESSPOINTS
# AccessPoints, rendered by the product's translation (one listener routed by scopes: per
# AccessPoint two routing scopes, a route configuration, a cluster and a load assignment). One AccessPoint changes (its route and its endpoints); the table shows,
# from set_snapshot, the time until each client has ACKed every changed type (p50, p99, all) and
# the bytes each client received for the change. Targets (issue 6): all ACKed < 500 ms; delta
# bytes per change < 5% of SotW. Then what one sidecar receives in a federation of 10,000
# services (100 clusters, 1,000 namespaces, every NameService exported to its own namespace) when
# its namespace may see 10 (federation-controller/examples/sidecar_scope.rs); target < 100 KB.
#
#   bench/xds.sh [--record] [CLIENTS ACCESSPOINTS]     (default 1000 100)
#
# PROFILE=dev runs the debug build (no release build of the dependencies needed; slower).
# --record appends the output, date, machine and commit to docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

record=false
if [[ ${1:-} == --record ]]; then
    record=true
    shift
fi
clients=${1:-1000}
aps=${2:-100}
profile=${PROFILE:-release}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${HOME:-/root}/.cache/causeway/target}

echo "bench/xds.sh: building ($profile)..." >&2
cargo build --profile "$profile" -q -p causeway-xds --example ads_bench
cargo build --profile "$profile" -q -p causeway-controller --example sidecar_scope
dir=$([[ $profile == dev ]] && echo debug || echo "$profile")
out=$("$CARGO_TARGET_DIR/$dir/examples/ads_bench" "$clients" "$aps")
echo "$out"
scope=$("$CARGO_TARGET_DIR/$dir/examples/sidecar_scope" 10000 1000)
echo "$scope"
out="$out
$scope"

if $record; then
    {
        echo
        echo "### xDS push: $clients clients, $aps AccessPoints ($(date -u +%Y-%m-%d), $profile build)"
        echo
        echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), commit $(git rev-parse --short HEAD)."
        echo
        echo '```'
        echo "$out"
        echo '```'
    } >>docs/benchmarks.md
fi
