#!/usr/bin/env bash
# TCP proxies side by side: each proxy runs pinned to CPU 0 in front of the same upstream echo
# server (echo_raw_uring, CPU 1), loaded through the proxy by echo_client (CPU 1: CONNS
# connections of SIZE bytes, closed loop); benches/echo/sampled_cpu.sh alternates them
# A B C A B C ... for ROUNDS rounds and gives, per round, the round trips/s and p99 the client
# saw and the proxy's user and kernel CPU per round trip from perf's cpu-clock samples. A
# round trip crosses the proxy twice (request and answer), so the proxy does two relays'
# work per trip.
#
#   ROUNDS=5 bash benches/proxy/sampled.sh \
#       "percore=target/release/percore serve proxy --listen 127.0.0.1:PORT --to UPSTREAM --cpus 0" \
#       "tokio=target/release/proxy_tokio --listen 127.0.0.1:PORT --to UPSTREAM --cpu 0" \
#       "haproxy=haproxy"
#
# PORT and UPSTREAM in a command are replaced by the proxy's port and the upstream's address;
# the word `haproxy` alone runs benches/proxy/haproxy.sh (haproxy 2.6, one thread, TCP mode).
# Env: ROUNDS (5), CONNS (64), SIZE (64). Needs perf, a release build of percore-benches and
# percore.
set -uo pipefail
cd "$(dirname "$0")/../.."
upstream_port=$(target/release/echo_client --free-port)
upstream="127.0.0.1:$upstream_port"
taskset -c 1 target/release/echo_raw_uring --listen "$upstream" >/dev/null 2>&1 &
upstream_pid=$!
trap 'kill $upstream_pid 2>/dev/null' EXIT
sleep 0.3
specs=()
for spec in "$@"; do
    name=${spec%%=*}
    cmd=${spec#*=}
    [[ $cmd == haproxy ]] && cmd="bash benches/proxy/haproxy.sh PORT UPSTREAM"
    specs+=("$name=${cmd//UPSTREAM/$upstream}")
done
ROUNDS=${ROUNDS:-5} bash benches/echo/sampled_cpu.sh "${specs[@]}"
