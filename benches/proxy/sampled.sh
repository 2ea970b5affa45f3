#!/usr/bin/env bash
# TCP proxies side by side: each proxy runs pinned to CPU 0 in front of the same upstream echo
# server (echo_raw_uring, CPU 1), loaded through the proxy by echo_client (CPU 1: CONNS
# connections of SIZE bytes, closed loop). The proxies alternate A B C A B C ... for ROUNDS
# rounds; each round gives the round trips/s the client saw and the proxy's user and kernel
# CPU per round trip from perf's cpu-clock samples (10 kHz over 3 s of load). A round trip
# crosses the proxy twice (request and answer), so the proxy does two relays' work per trip.
#
#   ROUNDS=5 bash benches/proxy/sampled.sh \
#       "percore=target/release/percore serve proxy --listen 127.0.0.1:PORT --to UPSTREAM --cpus 0" \
#       "tokio=target/release/proxy_tokio --listen 127.0.0.1:PORT --to UPSTREAM --cpu 0" \
#       "haproxy=haproxy"
#
# PORT and UPSTREAM in a command are replaced by the proxy's port and the upstream's address;
# the word `haproxy` alone runs haproxy 2.6 (Debian) with one thread in TCP mode. Env: ROUNDS
# (5), CONNS (64), SIZE (64). Needs perf, a release build of percore-benches and percore.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}
CONNS=${CONNS:-64}
SIZE=${SIZE:-64}
CLIENT=target/release/echo_client
OUT=$(mktemp -d /tmp/proxy-sampled.XXXXXX)
trap 'kill $upstream_pid 2>/dev/null; rm -rf "$OUT"' EXIT
upstream_port=$("$CLIENT" --free-port)
upstream="127.0.0.1:$upstream_port"
taskset -c 1 target/release/echo_raw_uring --listen "$upstream" >/dev/null 2>&1 &
upstream_pid=$!
sleep 0.3

haproxy_cfg() {
    cat >"$OUT/haproxy.cfg" <<CFG
global
    nbthread 1
    maxconn 8000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend proxy
    bind 127.0.0.1:$1
    default_backend upstream
backend upstream
    server echo $upstream
CFG
}

for round in $(seq "$ROUNDS"); do
    for spec in "$@"; do
        name=${spec%%=*}
        cmd=${spec#*=}
        port=$("$CLIENT" --free-port)
        if [[ $cmd == haproxy ]]; then
            haproxy_cfg "$port"
            cmd="haproxy -db -f $OUT/haproxy.cfg"
        fi
        cmd=${cmd//PORT/$port}
        # shellcheck disable=SC2086
        taskset -c 0 ${cmd//UPSTREAM/$upstream} >/dev/null 2>&1 &
        pid=$!
        sleep 0.5
        taskset -c 1 "$CLIENT" --cpu 1 --addr "127.0.0.1:$port" --connections "$CONNS" \
            --size "$SIZE" --duration 6 --warmup 1 >"$OUT/client.json" &
        client=$!
        sleep 2
        perf record -q -F 10000 -e cpu-clock -p "$pid" -o "$OUT/perf.data" -- sleep 3 \
            >/dev/null 2>&1
        wait "$client"
        kill -INT "$pid" 2>/dev/null
        sleep 0.3
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        perf script -i "$OUT/perf.data" -F ip,dso >"$OUT/dsos" 2>/dev/null
        python3 benches/perf_samples.py "$OUT/dsos" >"$OUT/samples"
        python3 - "$name" "$round" "$OUT" <<'PY'
import json, sys
name, rnd, out = sys.argv[1:]
client = json.load(open(f"{out}/client.json"))
user, kernel = map(int, open(f"{out}/samples").read().split())
# Each sample is 100 us of the proxy's CPU; the samples cover 3 s of the measured load.
trips = client["rt_per_s"] * 3
print(f"{name:<10} round {rnd:>2}  rt/s {client['rt_per_s']:>9.0f}  "
      f"p99 {client.get('p99_us', float('nan')):>7.0f} us  "
      f"user {user * 100 / trips:.3f} us/rt  kernel {kernel * 100 / trips:.3f} us/rt  "
      f"({user} + {kernel} samples)")
PY
    done
done
