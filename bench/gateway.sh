#!/usr/bin/env bash
# bench/gateway.sh: Causeway's gateway side by side with Envoy, nginx and HAProxy.
#
# One nginx backend (small fixed response), four proxies with one worker each, interleaved
# rounds so that machine noise hits every proxy alike:
#   (a) HTTP/1.1 keep-alive, small responses: wrk -t1 -c32
#   (b) HTTPS termination with HTTP/2 (ALPN h2): h2load -c32 -m10
# Reports req/s, p50 and p99 (median over rounds) and Causeway's ratios to Envoy and HAProxy.
#
# --lb runs the load-balancing cost comparison instead: one Causeway gateway, 100 endpoints
# (one nginx listening on 100 ports), HTTP/1.1 wrk -t1 -c32 against
#   rr:  plain round robin over the 100 endpoints;
#   lb:  the same 100 endpoints in 4 localities (3 weighted at priority 0 as Istio `distribute`
#        renders them, 1 at priority 1), outlier detection and retries on;
# in interleaved rounds, and reports the cost of lb over rr (target: at most 10%).
#
#   bench/gateway.sh [--rounds N] [--duration SECONDS] [--lb] [--record]
#
# --record appends the result, with date and machine, to docs/benchmarks.md.
# Needs: a release build (cargo build --release -p causeway-cli), wrk, h2load, nginx, haproxy,
# openssl, and Envoy (scripts/install-deps puts it under $CAUSEWAY_TOOLS). Loopback only.
set -euo pipefail

ROUNDS=3
DURATION=10
RECORD=0
LB=0
while (($#)); do
    case $1 in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --record) RECORD=1; shift ;;
        --lb) LB=1; shift ;;
        *) echo "usage: $0 [--rounds N] [--duration SECONDS] [--lb] [--record]" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CAUSEWAY=${CAUSEWAY_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/causeway}
TOOLS=${CAUSEWAY_TOOLS:-${HOME:-/root}/.cache/causeway/tools}
ENVOY=${CAUSEWAY_ENVOY:-}
if [[ -z $ENVOY ]]; then
    ENVOY=$(find "$TOOLS/venv" -path '*envoy/_bin/envoy' -type f 2>/dev/null | head -1 || true)
fi
for tool in wrk h2load nginx haproxy openssl; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/install-deps" >&2; exit 2; }
done
[[ -x $CAUSEWAY ]] || { echo "missing $CAUSEWAY: cargo build --release -p causeway-cli" >&2; exit 2; }
[[ -x $ENVOY ]] || { echo "missing Envoy: run scripts/install-deps" >&2; exit 2; }

W=$(mktemp -d /tmp/causeway-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT

BACKEND=19000
declare -A HTTP_PORT=([causeway]=19081 [envoy]=19082 [nginx]=19083 [haproxy]=19084)
declare -A HTTPS_PORT=([causeway]=19441 [envoy]=19442 [nginx]=19443 [haproxy]=19444)
PROXIES=(causeway envoy nginx haproxy)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench.local -addext subjectAltName=DNS:bench.local \
    -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
cat "$W/cert.pem" "$W/key.pem" >"$W/combined.pem"

nginx_common() {
    cat <<EOF
worker_processes 1;
daemon off;
pid $W/$1.pid;
error_log $W/$1.err warn;
events { worker_connections 8192; }
EOF
}

if ((LB)); then
    LB_BASE=19100
    nginx_common lb-backend >"$W/lb-backend.conf"
    {
        echo "http {"
        echo "    access_log off;"
        echo "    keepalive_requests 10000000;"
        echo "    client_body_temp_path $W/b-body; proxy_temp_path $W/b-proxy; fastcgi_temp_path $W/b-fcgi;"
        echo "    uwsgi_temp_path $W/b-uwsgi; scgi_temp_path $W/b-scgi;"
        echo "    server {"
        for ((i = 0; i < 100; i++)); do echo "        listen 127.0.0.1:$((LB_BASE + i));"; done
        echo "        location / { return 200 \"hello from the backend\\n\"; }"
        echo "    }"
        echo "}"
    } >>"$W/lb-backend.conf"
    eps() { # eps FIRST COUNT → "127.0.0.1:PORT", … for YAML
        local out=() i
        for ((i = $1; i < $1 + $2; i++)); do out+=("\"127.0.0.1:$((LB_BASE + i))\""); done
        local IFS=,
        echo "${out[*]}"
    }
    cat >"$W/causeway-lb.yaml" <<EOF
listeners:
- {name: rr, address: "127.0.0.1:19085", protocol: HTTP, virtualHosts: [rr]}
- {name: lb, address: "127.0.0.1:19086", protocol: HTTP, virtualHosts: [lb]}
virtualHosts:
- {name: rr, domains: ["*"], routes: [{route: {cluster: rr100}}]}
- name: lb
  domains: ["*"]
  routes:
  - route: {cluster: lb100, retries: {attempts: 2, perTryTimeout: 2s, retryOn: [5xx, connect-failure]}}
clusters:
- {name: rr100, endpoints: [$(eps 0 100)]}
- name: lb100
  localityEndpoints:
  - {locality: {region: us-west, zone: us-west-a}, weight: 49500, endpoints: [$(eps 0 25)]}
  - {locality: {region: us-west, zone: us-west-b}, weight: 49500, endpoints: [$(eps 25 25)]}
  - {locality: {region: us-east, zone: us-east-a}, weight: 1000, endpoints: [$(eps 50 25)]}
  - {locality: {region: eu-west, zone: eu-west-a}, priority: 1, weight: 1, endpoints: [$(eps 75 25)]}
  outlierDetection: {consecutive5xxErrors: 5, consecutiveGatewayErrors: 3, interval: 1s,
                     baseEjectionTime: 30s, maxEjectionPercent: 10}
EOF
    lb_start() {
        "$@" >"$W/$(basename "$1").out" 2>&1 &
        PIDS+=($!)
    }
    lb_start nginx -c "$W/lb-backend.conf" -p "$W"
    lb_start "$CAUSEWAY" gateway --config "$W/causeway-lb.yaml" --concurrency 1 \
        --admin 127.0.0.1:19001 --log-level warn
    deadline=$((SECONDS + 20))
    for port in $LB_BASE $((LB_BASE + 99)) 19085 19086; do
        until curl -s -o /dev/null "http://127.0.0.1:$port/"; do
            ((SECONDS < deadline)) || { echo "not up: $port" >&2; cat "$W"/*.out >&2; exit 1; }
            sleep 0.1
        done
    done
    lb_ms() {
        awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f\n", v}'
    }
    declare -A LBR
    for ((r = 1; r <= ROUNDS; r++)); do
        order=(rr lb)
        ((r % 2)) || order=(lb rr)
        for m in "${order[@]}"; do
            port=19085
            [[ $m == lb ]] && port=19086
            out=$(wrk -t1 -c32 -d"${DURATION}s" --latency "http://127.0.0.1:$port/")
            if grep -q -e 'Non-2xx' -e 'Socket errors' <<<"$out"; then
                echo "errors against $m:" >&2
                echo "$out" >&2
            fi
            rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
            p50=$(awk '$1=="50%" {print $2}' <<<"$out" | lb_ms)
            p99=$(awk '$1=="99%" {print $2}' <<<"$out" | lb_ms)
            LBR[$m,$r]="$rps $p50 $p99"
            echo "round $r $m: ${LBR[$m,$r]}" >&2
        done
    done
    lb_median() { sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
    declare -A LBM
    for m in rr lb; do
        for col in 1 2 3; do
            LBM[$m,$col]=$(for ((r = 1; r <= ROUNDS; r++)); do
                echo "${LBR[$m,$r]}" | awk -v c=$col '{print $c}'
            done | lb_median)
        done
    done
    lb_report() {
        echo "### $(date -u +%Y-%m-%dT%H:%MZ) — load-balancing cost (\`bench/gateway.sh --lb\`) — $(uname -srm), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
        echo
        echo "$ROUNDS interleaved rounds of ${DURATION}s, medians; Causeway $("$CAUSEWAY" version | awk '{print $2}'),"
        echo "one worker; wrk -t1 -c32 HTTP/1.1 on the same 2 cores; one nginx with 100 listening ports."
        echo "rr: round robin over 100 endpoints. lb: the same endpoints in 3 weighted localities at"
        echo "priority 0 (49500/49500/1000) and 1 at priority 1, outlier detection, retries (attempts 2)."
        echo
        echo "| cluster | req/s | p50 ms | p99 ms |"
        echo "|---|---:|---:|---:|"
        for m in rr lb; do echo "| $m | ${LBM[$m,1]} | ${LBM[$m,2]} | ${LBM[$m,3]} |"; done
        echo
        awk -v a="${LBM[lb,1]}" -v b="${LBM[rr,1]}" -v pa="${LBM[lb,3]}" -v pb="${LBM[rr,3]}" \
            'BEGIN {printf "Cost of lb over rr: %.1f%% req/s, p99 %+.1f%% (target: at most 10%%).\n", (1 - a / b) * 100, (pa / pb - 1) * 100}'
        echo
    }
    lb_report
    if ((RECORD)); then
        f=$ROOT/docs/benchmarks.md
        { echo; lb_report; } >>"$f"
        echo "appended to $f" >&2
    fi
    exit 0
fi

nginx_common backend >"$W/backend.conf"
cat >>"$W/backend.conf" <<EOF
http {
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path $W/b-body; proxy_temp_path $W/b-proxy; fastcgi_temp_path $W/b-fcgi;
    uwsgi_temp_path $W/b-uwsgi; scgi_temp_path $W/b-scgi;
    server {
        listen 127.0.0.1:$BACKEND;
        location / { return 200 "hello from the backend\n"; }
    }
}
EOF

nginx_common nginx-proxy >"$W/nginx-proxy.conf"
cat >>"$W/nginx-proxy.conf" <<EOF
http {
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path $W/p-body; proxy_temp_path $W/p-proxy; fastcgi_temp_path $W/p-fcgi;
    uwsgi_temp_path $W/p-uwsgi; scgi_temp_path $W/p-scgi;
    upstream be { server 127.0.0.1:$BACKEND; keepalive 64; }
    server {
        listen 127.0.0.1:${HTTP_PORT[nginx]};
        listen 127.0.0.1:${HTTPS_PORT[nginx]} ssl http2;
        ssl_certificate $W/cert.pem;
        ssl_certificate_key $W/key.pem;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF

cat >"$W/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend http
    bind 127.0.0.1:${HTTP_PORT[haproxy]}
    default_backend be
frontend https
    bind 127.0.0.1:${HTTPS_PORT[haproxy]} ssl crt $W/combined.pem alpn h2,http/1.1
    default_backend be
backend be
    server s1 127.0.0.1:$BACKEND
EOF

hcm() {
    cat <<EOF
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: $1
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - {name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: backend}}]}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
EOF
}
{
    cat <<EOF
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 19002}}}
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: ${HTTP_PORT[envoy]}}}
    filter_chains:
    - filters:
EOF
    hcm http
    cat <<EOF
  - name: https
    address: {socket_address: {address: 127.0.0.1, port_value: ${HTTPS_PORT[envoy]}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates:
            - {certificate_chain: {filename: $W/cert.pem}, private_key: {filename: $W/key.pem}}
      filters:
EOF
    hcm https
    cat <<EOF
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $BACKEND}}}
EOF
} >"$W/envoy.yaml"

cat >"$W/causeway.yaml" <<EOF
listeners:
- {name: http, address: "127.0.0.1:${HTTP_PORT[causeway]}", protocol: HTTP}
- name: https
  address: "127.0.0.1:${HTTPS_PORT[causeway]}"
  protocol: HTTPS
  tls: {certificates: [{default: true, certFile: cert.pem, keyFile: key.pem}]}
virtualHosts:
- {name: all, domains: ["*"], routes: [{route: {cluster: backend}}]}
clusters:
- {name: backend, endpoints: ["127.0.0.1:$BACKEND"]}
EOF

start() {
    "$@" >"$W/$(basename "$1").out" 2>&1 &
    PIDS+=($!)
}
start nginx -c "$W/backend.conf" -p "$W"
start nginx -c "$W/nginx-proxy.conf" -p "$W"
start haproxy -f "$W/haproxy.cfg" -db
start "$ENVOY" -c "$W/envoy.yaml" --concurrency 1 --disable-hot-restart -l warning
# Access logging off (warn level), as for the other three.
start "$CAUSEWAY" gateway --config "$W/causeway.yaml" --concurrency 1 --admin 127.0.0.1:19001 \
    --log-level warn

wait_up() {
    local url=$1 deadline=$((SECONDS + 20))
    until curl -sk -o /dev/null "$url"; do
        ((SECONDS < deadline)) || { echo "not up: $url" >&2; cat "$W"/*.out >&2; exit 1; }
        sleep 0.1
    done
}
wait_up "http://127.0.0.1:$BACKEND/"
for p in "${PROXIES[@]}"; do
    wait_up "http://127.0.0.1:${HTTP_PORT[$p]}/"
    wait_up "https://127.0.0.1:${HTTPS_PORT[$p]}/"
done

# wrk latency "  50%  322.00us" → milliseconds.
to_ms() {
    awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f\n", v}'
}

run_wrk() {
    local out
    out=$(wrk -t1 -c32 -d"${DURATION}s" --latency "http://127.0.0.1:$1/")
    if grep -q -e 'Non-2xx' -e 'Socket errors' <<<"$out"; then
        echo "errors against port $1:" >&2; echo "$out" >&2
    fi
    local rps p50 p99
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out" | to_ms)
    p99=$(awk '$1=="99%" {print $2}' <<<"$out" | to_ms)
    echo "$rps $p50 $p99"
}

run_h2load() {
    local out log="$W/h2load.log"
    rm -f "$log"
    out=$(h2load -c32 -m10 -D "$DURATION" --warm-up-time=1 --log-file="$log" \
        "https://127.0.0.1:$1/")
    grep -q 'Application protocol: h2' <<<"$out" || { echo "no h2 on port $1" >&2; echo "$out" >&2; }
    local rps p50 p99
    rps=$(awk '/^finished in/ {print $4}' <<<"$out")
    read -r p50 p99 < <(awk -F'\t' '{print $3}' "$log" | sort -n | awk '
        {v[NR]=$1} END {
            if (NR == 0) {print "0 0"; exit}
            i50=int(NR*0.50); if (i50<1) i50=1; i99=int(NR*0.99); if (i99<1) i99=1
            printf "%.3f %.3f\n", v[i50]/1000, v[i99]/1000}')
    echo "$rps $p50 $p99"
}

declare -A RES
for ((r = 1; r <= ROUNDS; r++)); do
    # Rotate the order each round so no proxy always runs first (warm caches, turbo).
    order=("${PROXIES[@]:r%4}" "${PROXIES[@]:0:r%4}")
    for p in "${order[@]}"; do
        RES[$p,a,$r]=$(run_wrk "${HTTP_PORT[$p]}")
        RES[$p,b,$r]=$(run_h2load "${HTTPS_PORT[$p]}")
        echo "round $r $p: http1 ${RES[$p,a,$r]} | h2 ${RES[$p,b,$r]}" >&2
    done
done

median() { sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
declare -A MED
for p in "${PROXIES[@]}"; do
    for t in a b; do
        for col in 1 2 3; do
            MED[$p,$t,$col]=$(for ((r = 1; r <= ROUNDS; r++)); do
                echo "${RES[$p,$t,$r]}" | awk -v c=$col '{print $c}'
            done | median)
        done
    done
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a/b; else print "n/a"}'; }

report() {
    echo "### $(date -u +%Y-%m-%dT%H:%MZ) — $(uname -srm), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
    echo
    echo "$ROUNDS interleaved rounds of ${DURATION}s, medians; one worker per proxy; backend nginx"
    echo "on loopback; load generator on the same 2 cores. Causeway $("$CAUSEWAY" version | awk '{print $2}'),"
    echo "Envoy $("$ENVOY" --version 2>&1 | grep -o '/1\.[0-9]*\.[0-9]*/' | tr -d / || true),"
    echo "$(nginx -v 2>&1 | cut -d' ' -f3), HAProxy $(haproxy -v | head -1 | awk '{print $3}')."
    echo
    echo "| proxy | (a) HTTP/1.1 req/s | p50 ms | p99 ms | (b) HTTPS h2 req/s | p50 ms | p99 ms |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for p in "${PROXIES[@]}"; do
        echo "| $p | ${MED[$p,a,1]} | ${MED[$p,a,2]} | ${MED[$p,a,3]} | ${MED[$p,b,1]} | ${MED[$p,b,2]} | ${MED[$p,b,3]} |"
    done
    echo
    echo "Causeway ÷ Envoy: (a) $(ratio "${MED[causeway,a,1]}" "${MED[envoy,a,1]}")× req/s, p99 $(ratio "${MED[causeway,a,3]}" "${MED[envoy,a,3]}")×;" \
        "(b) $(ratio "${MED[causeway,b,1]}" "${MED[envoy,b,1]}")× req/s, p99 $(ratio "${MED[causeway,b,3]}" "${MED[envoy,b,3]}")×."
    echo "Causeway ÷ HAProxy: (a) $(ratio "${MED[causeway,a,1]}" "${MED[haproxy,a,1]}")× req/s;" \
        "(b) $(ratio "${MED[causeway,b,1]}" "${MED[haproxy,b,1]}")× req/s."
    echo
}

report
if ((RECORD)); then
    f=$ROOT/docs/benchmarks.md
    [[ -f $f ]] || printf '# Benchmarks\n\nRecorded by `bench/gateway.sh --record`; newest last.\n\n' >"$f"
    { echo; report; } >>"$f"
    echo "appended to $f" >&2
fi
