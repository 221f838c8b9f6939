#!/usr/bin/env bash
# bench/l4.sh: the L4 balancer's data paths side by side with a direct path, in one topology.
#
#   client ── router(bridge) ── balancer ──IPIP──► gateway host (iperf3 server, VIP on lo)
#
# Measures, in one run, iperf3 TCP throughput (client → server, the direction that crosses the
# balancer; one stream and --streams N parallel streams) and TCP connections per second
#   (a) direct: client → gateway host address (through the router, no balancer)
#   (h) routed hop: client → an address of the gateway host routed through the balancer's host
#       by plain kernel forwarding (no balancer, no IPIP): what the extra hop alone costs on this
#       machine, the ceiling for any balancer that sits on it
#   (b) userspace: client → VIP → balancer (TUN + raw IPIP socket) → decap agent → gateway
#   (c) xdp: client → VIP → balancer (XDP, native) → decap (XDP native, or tc with --decap tc)
#       → gateway
# and reports each against (a), and (c)/(h). The bridge segment (balancer ↔ gateway) has MTU 1520 so that a
# full-size packet plus the 20-byte IPIP header fits (XDP cannot fragment; docs/l4lb.md, MTU);
# the client sends full checksums (tx offloads off, which XDP needs on veth); the bridge does not
# hand bridged frames to iptables (bridge-nf-call-* = 0 in the router namespace: it stands in for
# a switch, and a host with br_netfilter loaded would otherwise charge the XDP path, which crosses
# the bridge twice, for netfilter work no switch does). Every row runs in this same topology.
#
#   bench/l4.sh [--duration SECONDS] [--connections N] [--rounds N] [--streams N]
#               [--xdp-mode native|generic] [--decap xdp|tc] [--record]
#
# Each round measures the three paths one after the other (interleaved, so that load from
# elsewhere hits all three alike); the table shows the medians over the rounds (default 3).
# --record appends the table to docs/benchmarks.md. Needs root, a release build
# (cargo build --release -p causeway-cli; with clang installed for the XDP row), iperf3, python3,
# clang, ethtool and iproute2 (scripts/install-deps). Traffic stays inside the namespaces it
# creates.
set -euo pipefail

DURATION=10
CONNS=2000
ROUNDS=3
STREAMS=4
XDP_MODE=native
DECAP=xdp
RECORD=0
while (($#)); do
    case $1 in
        --duration) DURATION=$2; shift 2 ;;
        --connections) CONNS=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --streams) STREAMS=$2; shift 2 ;;
        --decap) DECAP=$2; shift 2 ;;
        --xdp-mode) XDP_MODE=$2; shift 2 ;;
        --record) RECORD=1; shift ;;
        *) echo "usage: $0 [--duration SECONDS] [--connections N] [--rounds N] [--streams N] [--xdp-mode native|generic] [--decap xdp|tc] [--record]" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CAUSEWAY=${CAUSEWAY_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/causeway}
for tool in iperf3 python3 ip clang ethtool; do
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
# The bridge is a switch here: no iptables for bridged frames (the sysctls exist only while the
# br_netfilter module is loaded).
for f in iptables ip6tables arptables; do
    [[ -e /proc/sys/net/bridge/bridge-nf-call-$f ]] &&
        ip netns exec "$R" sysctl -qw "net.bridge.bridge-nf-call-$f=0"
done
ip -n "$R" route add 10.9.0.10/32 via 10.1.0.11
# The routed-hop row: 10.9.0.20 lives on the gateway host and is routed through the balancer's
# host, which forwards it like any router (back out of the interface it came in on; no
# redirects, they would teach the router to skip the hop).
ip -n "$R" route add 10.9.0.20/32 via 10.1.0.11
ip netns exec "$LB" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 \
    net.ipv4.conf.eth0.send_redirects=0
ip -n "$LB" route add 10.9.0.20/32 via 10.1.0.21
ip -n "$GW" addr add 10.9.0.20/32 dev lo
# Headroom for the IPIP header on the balancer ↔ gateway segment.
for dev in br0 p11 p21; do ip -n "$R" link set "$dev" mtu 1520; done
ip -n "$LB" link set eth0 mtu 1520
ip -n "$GW" link set eth0 mtu 1520
ip netns exec "$C" ethtool -K eth0 tx off tso off gso off >/dev/null
# Native XDP_TX on a veth needs an XDP program on its peer (the router's port). It is attached
# only for the XDP row: on the other rows it would make every packet the balancer's host sends
# pay for a copy into the peer's XDP buffer (skb_pp_cow_data), a cost of this test rig, not of
# them.
printf '%s\n' '#include <linux/bpf.h>' '#include <bpf/bpf_helpers.h>' \
    'SEC("xdp") int pass(struct xdp_md *c) { return XDP_PASS; }' \
    'char LICENSE[] SEC("license") = "GPL";' >"$TMP/pass.c"
clang -O2 -target bpf -I/usr/include/x86_64-linux-gnu -c "$TMP/pass.c" -o "$TMP/pass.o"

cat >"$TMP/vips.yaml" <<'EOF'
vips:
  - name: bench
    address: 10.9.0.10
    backends:
      - address: 10.1.0.21
    healthCheck:
      type: TCP
      port: 7000   # the accept server: probes on iperf3's port would disturb its tests
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

LBPIDS=()
start_lb() { # datapath: userspace | xdp
    local extra=() decap=()
    [[ $1 == xdp ]] && extra=(--datapath xdp --interface eth0 --xdp-mode "$XDP_MODE")
    decap=("${extra[@]}")
    [[ $1 == xdp && $DECAP == tc ]] && decap=(--datapath tc --interface eth0)
    ip netns exec "$GW" "$CAUSEWAY" l4lb decap --vip 10.9.0.10 "${decap[@]}" >"$TMP/decap-$1.log" 2>&1 &
    LBPIDS+=($!) PIDS+=($!)
    ip netns exec "$LB" "$CAUSEWAY" l4lb --config "$TMP/vips.yaml" "${extra[@]}" >"$TMP/lb-$1.log" 2>&1 &
    LBPIDS+=($!) PIDS+=($!)
    # Wait (bounded) until the VIP answers.
    local deadline=$((SECONDS + 30))
    until ip netns exec "$C" python3 "$TMP/connect.py" 10.9.0.10 1 >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            echo "the VIP did not answer within 30 s ($1); logs:" >&2
            tail -n 20 "$TMP/lb-$1.log" "$TMP/decap-$1.log" >&2
            echo "balancer counters:" >&2
            ip netns exec "$LB" python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:15110/metrics", timeout=5).read().decode())' | grep -v '^#' | grep -v ' 0$' >&2 || true
            echo "gateway counters:" >&2
            ip netns exec "$GW" python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:15111/metrics", timeout=5).read().decode())' | grep -v '^#' | grep -v ' 0$' >&2 || true
            ip -n "$LB" neigh >&2; ip -n "$LB" -d link show eth0 >&2; ip -n "$GW" -d link show eth0 >&2
            exit 1
        fi
        sleep 0.2
    done
}
stop_lb() {
    local p
    for p in "${LBPIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${LBPIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    LBPIDS=()
}

throughput() { # host [streams] -> Gbit/s; retried when the iperf3 server is still busy
    local attempt out
    for attempt in 1 2 3; do
        if out=$(ip netns exec "$C" iperf3 -c "$1" -P "${2:-1}" -t "$DURATION" -J |
            python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.2f" % (r["end"]["sum_received"]["bits_per_second"]/1e9))' 2>/dev/null); then
            echo "$out"
            return
        fi
        sleep 1
    done
    echo "iperf3 to $1 failed 3 times" >&2
    exit 1
}
cps() { ip netns exec "$C" python3 "$TMP/connect.py" "$1" "$CONNS"; }

metric() { # namespace admin-port name-regex -> summed value
    ip netns exec "$1" python3 - "$2" "$3" <<'PY'
import re, sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
print(int(sum(float(l.split()[-1]) for l in text.splitlines() if re.match(sys.argv[2], l))))
PY
}

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
echo "bench/l4.sh: iperf3 ${DURATION}s (1 and $STREAMS streams), $CONNS connections, $ROUNDS interleaved rounds, $(nproc) cores, $(uname -r), load $LOAD"
D_BW=() D_BWP=() D_CPS=() H_BW=() H_BWP=() H_CPS=() U_BW=() U_BWP=() U_CPS=() X_BW=() X_BWP=() X_CPS=()
x_pkts=0 x_slow=0
for ((round = 1; round <= ROUNDS; round++)); do
    D_BW+=("$(throughput 10.1.0.21)")
    D_BWP+=("$(throughput 10.1.0.21 "$STREAMS")")
    D_CPS+=("$(cps 10.1.0.21)")
    H_BW+=("$(throughput 10.9.0.20)")
    H_BWP+=("$(throughput 10.9.0.20 "$STREAMS")")
    H_CPS+=("$(cps 10.9.0.20)")

    start_lb userspace
    U_BW+=("$(throughput 10.9.0.10)")
    U_BWP+=("$(throughput 10.9.0.10 "$STREAMS")")
    U_CPS+=("$(cps 10.9.0.10)")
    stop_lb

    ip -n "$R" link set dev p11 xdpdrv obj "$TMP/pass.o" sec xdp
    start_lb xdp
    X_BW+=("$(throughput 10.9.0.10)")
    X_BWP+=("$(throughput 10.9.0.10 "$STREAMS")")
    X_CPS+=("$(cps 10.9.0.10)")
    # What the XDP program forwarded itself versus what it left to the userspace path (the
    # counters reach the metrics once a second).
    sleep 1.2
    x_pkts=$((x_pkts + $(metric "$LB" 15110 '^causeway_l4lb_packets_total')))
    x_slow=$((x_slow + $(metric "$LB" 15110 '^causeway_l4lb_xdp_slow_path_packets_total')))
    stop_lb
    ip -n "$R" link set dev p11 xdpdrv off
    echo "round $round: direct ${D_BW[-1]} / ${D_BWP[-1]} Gbit/s ${D_CPS[-1]} conn/s; routed hop ${H_BW[-1]} / ${H_BWP[-1]} / ${H_CPS[-1]}; userspace ${U_BW[-1]} / ${U_BWP[-1]} / ${U_CPS[-1]}; xdp ${X_BW[-1]} / ${X_BWP[-1]} / ${X_CPS[-1]}"
done
d_bw=$(median "${D_BW[@]}") d_bwp=$(median "${D_BWP[@]}") d_cps=$(median "${D_CPS[@]}")
h_bw=$(median "${H_BW[@]}") h_bwp=$(median "${H_BWP[@]}") h_cps=$(median "${H_CPS[@]}")
u_bw=$(median "${U_BW[@]}") u_bwp=$(median "${U_BWP[@]}") u_cps=$(median "${U_CPS[@]}")
x_bw=$(median "${X_BW[@]}") x_bwp=$(median "${X_BWP[@]}") x_cps=$(median "${X_CPS[@]}")

ratio() { python3 -c "print(f'{$1 / $2 * 100:.0f}%')"; }
row() { # name bw bwp cps
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$2" "$(ratio "$2" "$d_bw")" "$3" "$(ratio "$3" "$d_bwp")" "$4" "$(ratio "$4" "$d_cps")"
}
table=$(
    printf '| path | iperf3 1 stream Gbit/s | vs direct | %s streams Gbit/s | vs direct | conn/s | vs direct |\n|---|---:|---:|---:|---:|---:|---:|\n' "$STREAMS"
    row direct "$d_bw" "$d_bwp" "$d_cps"
    row "routed hop (no balancer)" "$h_bw" "$h_bwp" "$h_cps"
    row userspace "$u_bw" "$u_bwp" "$u_cps"
    row "xdp ($XDP_MODE, $DECAP decap)" "$x_bw" "$x_bwp" "$x_cps"
)
vs_hop="xdp against the routed hop: $(ratio "$x_bw" "$h_bw") (1 stream), $(ratio "$x_bwp" "$h_bwp") ($STREAMS streams), $(ratio "$x_cps" "$h_cps") (conn/s)"
echo "$table"
echo "$vs_hop"
echo "xdp runs: $x_pkts packets counted, $x_slow of them through the slow path"

if ((RECORD)); then
    {
        echo
        echo "### L4 balancer $(date -u +%Y-%m-%dT%H:%MZ) — Linux $(uname -r) $(uname -m), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
        echo
        echo "\`bench/l4.sh --duration $DURATION --connections $CONNS --rounds $ROUNDS --streams $STREAMS --xdp-mode $XDP_MODE --decap $DECAP\`: one run, one topology (veth + bridge without bridge netfilter, MTU 1520 balancer ↔ gateway, $XDP_MODE XDP balancer, $DECAP decap), $ROUNDS interleaved rounds, medians; iperf3 (one TCP stream, and $STREAMS in parallel) client → server through the VIP; connections/s from a Python connect loop. XDP runs: $x_pkts packets counted, $x_slow through the slow path. Rounds (Gbit/s 1 stream / $STREAMS streams / conn/s): direct ${D_BW[*]} / ${D_BWP[*]} / ${D_CPS[*]}; routed hop ${H_BW[*]} / ${H_BWP[*]} / ${H_CPS[*]}; userspace ${U_BW[*]} / ${U_BWP[*]} / ${U_CPS[*]}; xdp ${X_BW[*]} / ${X_BWP[*]} / ${X_CPS[*]}. Load average at the start: $LOAD."
        echo
        echo "$table"
        echo
        echo "$vs_hop."
    } >>"$ROOT/docs/benchmarks.md"
    echo "recorded in docs/benchmarks.md"
fi
