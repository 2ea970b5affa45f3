#!/usr/bin/env bash
# UDP conversation benchmark: percore conversations vs plain percore UDP vs tokio UDP, all three
# answering a peer's k-th datagram with "k:payload" (so all keep per-peer state).
#
# For each point (payload size x peers) and each round, every server in turn is started pinned
# to CPU 0 (taskset -c 0), loaded by udp_conv_client pinned to CPU 1 (closed loop, one socket
# per peer, every reply checked), and killed. The client reads the server's utime/stime from
# /proc/PID/stat over the measured window. Servers alternate A B C A B C ... within each point,
# ROUNDS times; the table shows medians over the rounds and the median (min-max) of the
# per-round ratios vs plain percore and vs tokio.
#
# Usage: benches/udp-conversation/run.sh            (from anywhere)
# Env (defaults): DURATION=3 WARMUP=1 ROUNDS=3 SIZES="64" PEERS="64 512"
#                 SERVERS="conv plain tokio" OUT=<tmp file>
# See docs/BENCHMARKING.md: this is a noisy shared 2-vCPU VM; quote ratios, not absolutes.
set -euo pipefail

DURATION=${DURATION:-3}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-3}
SIZES=${SIZES:-"64"}
PEERS=${PEERS:-"64 512"}
SERVERS=${SERVERS:-"conv plain tokio"}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
cargo build --release -p percore-benches --bin udp_conv_echo --bin udp_conv_client --quiet
BIN="$ROOT/target/release"
OUT=${OUT:-$(mktemp /tmp/udp-conv-bench.XXXXXX.tsv)}
: >"$OUT"
ERR=$(mktemp /tmp/udp-conv-server.XXXXXX.err)

SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
trap 'cleanup; rm -f "$ERR"' EXIT INT TERM

echo "# results (one JSON line per run) in $OUT" >&2
for size in $SIZES; do
    for peers in $PEERS; do
        for round in $(seq 1 "$ROUNDS"); do
            for server in $SERVERS; do
                port=$("$BIN/udp_conv_client" --free-port)
                addr="127.0.0.1:$port"
                taskset -c "$SERVER_CPU" "$BIN/udp_conv_echo" --server "$server" \
                    --listen "$addr" --cpu "$SERVER_CPU" 2>"$ERR" &
                SERVER_PID=$!
                # A datagram sent before the server binds draws an ICMP error: wait for it.
                for _ in $(seq 100); do
                    grep -q "listening on" "$ERR" && break
                    sleep 0.05
                done
                json=$(taskset -c "$CLIENT_CPU" "$BIN/udp_conv_client" --cpu "$CLIENT_CPU" \
                    --addr "$addr" --peers "$peers" --size "$size" \
                    --duration "$DURATION" --warmup "$WARMUP" --server-pid "$SERVER_PID") || json=""
                cleanup
                if [[ -z "$json" ]]; then
                    echo "FAILED: $server size=$size peers=$peers round=$round" >&2
                    continue
                fi
                printf '%s\t%s\t%s\n' "$server" "$round" "$json" >>"$OUT"
                echo "$server size=$size peers=$peers round=$round $json" >&2
            done
        done
    done
done

python3 - "$OUT" <<'PY'
import json, sys, statistics as st
from collections import defaultdict
runs = defaultdict(dict)  # (size, peers) -> {(server, round): result}
order = []
for line in open(sys.argv[1]):
    server, rnd, js = line.rstrip("\n").split("\t", 2)
    r = json.loads(js)
    runs[(r["size"], r["peers"])][(server, int(rnd))] = r
    if server not in order:
        order.append(server)

def cpu(r):
    return r.get("server_user_us_per_rt", 0) + r.get("server_sys_us_per_rt", 0)

def ratio(key, server, base, of=lambda r: r["rt_per_s"]):
    rs = []
    for (s, rnd), r in runs[key].items():
        b = runs[key].get((base, rnd))
        if s == server and b and of(b) > 0:
            rs.append(of(r) / of(b))
    if not rs:
        return "-"
    return f"{st.median(rs):.2f} ({min(rs):.2f}-{max(rs):.2f})"

hdr = ["size", "peers", "server", "rt/s", "p50 us", "p99 us", "p99.9 us", "lost", "bad",
       "user us/rt", "sys us/rt", "rt/s vs plain", "rt/s vs tokio", "CPU/rt vs plain",
       "CPU/rt vs tokio"]
rows = []
for key in sorted(runs):
    for server in order:
        rs = [r for (s, _), r in runs[key].items() if s == server]
        if not rs:
            continue
        med = lambda f: st.median(r.get(f, float("nan")) for r in rs)
        rows.append([str(key[0]), str(key[1]), server, f"{med('rt_per_s'):.0f}",
                     f"{med('p50_us'):.0f}", f"{med('p99_us'):.0f}", f"{med('p999_us'):.0f}",
                     f"{sum(r['lost'] for r in rs)}", f"{sum(r['bad'] for r in rs)}",
                     f"{med('server_user_us_per_rt'):.2f}", f"{med('server_sys_us_per_rt'):.2f}",
                     ratio(key, server, "plain"), ratio(key, server, "tokio"),
                     ratio(key, server, "plain", cpu), ratio(key, server, "tokio", cpu)])
w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(hdr)]
print("| " + " | ".join(h.ljust(w[i]) for i, h in enumerate(hdr)) + " |")
print("|" + "|".join("-" * (x + 2) for x in w) + "|")
for r in rows:
    print("| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |")
print("\nmedians over rounds (lost/bad: totals); ratios compare each round's run with the same "
      "round's plain / tokio run (round trips/s; server CPU user+sys per round trip), "
      "median (min-max)")
PY
