#!/usr/bin/env bash
# bench/l4.sh: the L4 balancer's data paths side by side with a direct path, in one topology.
#
#   client ── router(bridge) ── balancer ──IPIP──► gateway host (iperf3 server, VIP on lo)
#
# Measures, in one run, iperf3 TCP throughput and TCP connections per second
#   (a) direct: client → gateway host address (through the router, no balancer)
#   (b) userspace: client → VIP → balancer (TUN + raw IPIP socket) → decap agent → gateway
# and reports (b)/(a). The XDP path is not implemented yet (docs/l4lb.md); its row says so.
#
#   bench/l4.sh [--duration SECONDS] [--connections N]
#
# Needs root, a release build (cargo build --release -p causeway-cli), iperf3, python3 and
# iproute2 (scripts/install-deps). Traffic stays inside the namespaces it creates.
set -euo pipefail

DURATION=10
CONNS=2000
while (($#)); do
    case $1 in
        --duration) DURATION=$2; shift 2 ;;
        --connections) CONNS=$2; shift 2 ;;
        *) echo "usage: $0 [--duration SECONDS] [--connections N]" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CAUSEWAY=${CAUSEWAY_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/causeway}
for tool in iperf3 python3 ip; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/install-deps" >&2; exit 2; }
done
[[ -x $CAUSEWAY ]] || { echo "missing $CAUSEWAY: cargo build --release -p causeway-cli" >&2; exit 2; }
((EUID == 0)) || { echo "needs root (namespaces, TUN, raw sockets)" >&2; exit 2; }

P="cw-l4b-$$"
NS=("$P-c" "$P-r" "$P-lb" "$P-gw")
C=${NS[0]} R=${NS[1]} LB=${NS[2]} GW=${NS[3]}
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    local n
    for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

for n in "${NS[@]}"; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip -n "$R" link add br0 type bridge
ip -n "$R" addr add 10.1.0.1/24 dev br0
ip -n "$R" link set br0 up
ip -n "$R" link add pc type veth peer name eth0 netns "$C"
ip -n "$R" addr add 10.2.0.1/24 dev pc
ip -n "$R" link set pc up
ip -n "$C" addr add 10.2.0.2/24 dev eth0
ip -n "$C" link set eth0 up
ip -n "$C" route add default via 10.2.0.1
for pair in "$LB:11" "$GW:21"; do
    ns=${pair%%:*} last=${pair##*:}
    ip -n "$R" link add "p$last" type veth peer name eth0 netns "$ns"
    ip -n "$R" link set "p$last" master br0 up
    ip -n "$ns" addr add "10.1.0.$last/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via 10.1.0.1
done
ip netns exec "$R" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
ip -n "$R" route add 10.9.0.10/32 via 10.1.0.11

cat >"$TMP/vips.yaml" <<'EOF'
vips:
  - name: bench
    address: 10.9.0.10
    backends:
      - address: 10.1.0.21
    healthCheck:
      type: TCP
      port: 5201
EOF
cat >"$TMP/accept.py" <<'EOF'
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000))
s.listen(1024)
while True:
    c, _ = s.accept()
    c.sendall(b"x")
    c.close()
EOF
cat >"$TMP/connect.py" <<'EOF'
import socket, sys, time
host, n = sys.argv[1], int(sys.argv[2])
t0 = time.monotonic()
for _ in range(n):
    c = socket.create_connection((host, 7000), timeout=5)
    c.recv(1)
    c.close()
print(f"{n / (time.monotonic() - t0):.0f}")
EOF

ip netns exec "$GW" iperf3 -s -B 0.0.0.0 >/dev/null 2>&1 &
PIDS+=($!)
ip netns exec "$GW" python3 "$TMP/accept.py" >/dev/null 2>&1 &
PIDS+=($!)
ip netns exec "$GW" "$CAUSEWAY" l4lb decap --vip 10.9.0.10 >"$TMP/decap.log" 2>&1 &
PIDS+=($!)
ip netns exec "$LB" "$CAUSEWAY" l4lb --config "$TMP/vips.yaml" >"$TMP/lb.log" 2>&1 &
PIDS+=($!)

# Wait (bounded) until the VIP answers.
deadline=$((SECONDS + 30))
until ip netns exec "$C" python3 "$TMP/connect.py" 10.9.0.10 1 >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
        echo "the VIP did not answer within 30 s; logs:" >&2
        tail -n 20 "$TMP/lb.log" "$TMP/decap.log" >&2
        exit 1
    fi
    sleep 0.2
done

throughput() { # host -> Gbit/s
    ip netns exec "$C" iperf3 -c "$1" -t "$DURATION" -J |
        python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.2f" % (r["end"]["sum_received"]["bits_per_second"]/1e9))'
}
cps() { ip netns exec "$C" python3 "$TMP/connect.py" "$1" "$CONNS"; }

echo "bench/l4.sh: iperf3 ${DURATION}s, $CONNS connections, $(nproc) cores, $(uname -r)"
d_bw=$(throughput 10.1.0.21)
u_bw=$(throughput 10.9.0.10)
d_cps=$(cps 10.1.0.21)
u_cps=$(cps 10.9.0.10)
ratio() { python3 -c "print(f'{$1 / $2 * 100:.0f}%')"; }
printf '%-12s %14s %10s %12s %10s\n' path 'iperf3 Gbit/s' 'vs direct' 'conn/s' 'vs direct'
printf '%-12s %14s %10s %12s %10s\n' direct "$d_bw" 100% "$d_cps" 100%
printf '%-12s %14s %10s %12s %10s\n' userspace "$u_bw" "$(ratio "$u_bw" "$d_bw")" "$u_cps" "$(ratio "$u_cps" "$d_cps")"
printf '%-12s %14s %10s %12s %10s\n' xdp 'not built' - - -
