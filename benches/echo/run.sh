#!/usr/bin/env bash
# TCP echo benchmark: raw io_uring loop (the floor), percore, tokio, glommio, monoio, side by side.
#
# For each point (message size x connections) and each round, every server in turn is started
# pinned to CPU 0 (taskset -c 0), loaded by echo_client pinned to CPU 1 (closed loop), and
# killed. The client reads the server's utime/stime from /proc/PID/stat over the measured
# window. Servers alternate A B C A B C ... within each point, ROUNDS times; the table shows
# medians over the rounds and the median (min-max) of the per-round ratios vs raw and tokio.
#
# Usage: benches/echo/run.sh            (from anywhere)
# Env (defaults): DURATION=3 WARMUP=1 ROUNDS=3 SIZES="64 4096" CONNS="1 64 512"
#                 SERVERS="raw percore tokio glommio monoio" PERCORE_MODE=chunk OUT=<tmp file>
#                 (percore-relay: echo_percore --mode relay, beside percore's PERCORE_MODE)
#                 BEFORE_BIN=<dir of an older build>: a server named NAME-before in SERVERS
#                 runs that build's NAME (before/after in one run)
# See docs/BENCHMARKING.md: this is a noisy shared 2-vCPU VM; quote ratios, not absolutes.
set -euo pipefail

DURATION=${DURATION:-3}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-3}
SIZES=${SIZES:-"64 4096"}
CONNS=${CONNS:-"1 64 512"}
SERVERS=${SERVERS:-"raw percore tokio glommio monoio"}
PERCORE_MODE=${PERCORE_MODE:-chunk}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
cargo build --release -p percore-benches --bins --quiet
BIN="$ROOT/target/release"
OUT=${OUT:-$(mktemp /tmp/echo-bench.XXXXXX.tsv)}
: >"$OUT"

SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
trap cleanup EXIT INT TERM

server_cmd() { # name addr
    local BIN=$BIN
    if [[ "$1" == *-before ]]; then
        BIN=${BEFORE_BIN:?BEFORE_BIN for $1}
        set -- "${1%-before}" "$2"
    fi
    case "$1" in
    raw) echo "$BIN/echo_raw_uring --listen $2" ;;
    percore) echo "$BIN/echo_percore --listen $2 --cpu $SERVER_CPU --mode $PERCORE_MODE" ;;
    percore-relay) echo "$BIN/echo_percore --listen $2 --cpu $SERVER_CPU --mode relay" ;;
    tokio) echo "$BIN/echo_tokio --listen $2 --cpu $SERVER_CPU" ;;
    glommio) echo "$BIN/echo_glommio --listen $2 --cpu $SERVER_CPU" ;;
    monoio) echo "$BIN/echo_monoio --listen $2 --cpu $SERVER_CPU" ;;
    *) echo "unknown server $1" >&2; exit 2 ;;
    esac
}

echo "# results (one JSON line per run) in $OUT" >&2
for size in $SIZES; do
    for conns in $CONNS; do
        for round in $(seq 1 "$ROUNDS"); do
            for server in $SERVERS; do
                port=$("$BIN/echo_client" --free-port)
                addr="127.0.0.1:$port"
                # shellcheck disable=SC2046
                taskset -c "$SERVER_CPU" $(server_cmd "$server" "$addr") 2>/dev/null &
                SERVER_PID=$!
                json=$(taskset -c "$CLIENT_CPU" "$BIN/echo_client" --cpu "$CLIENT_CPU" \
                    --addr "$addr" --connections "$conns" --size "$size" \
                    --duration "$DURATION" --warmup "$WARMUP" --server-pid "$SERVER_PID") || json=""
                cleanup
                if [[ -z "$json" ]]; then
                    echo "FAILED: $server size=$size conns=$conns round=$round" >&2
                    continue
                fi
                printf '%s\t%s\t%s\n' "$server" "$round" "$json" >>"$OUT"
                echo "$server size=$size conns=$conns round=$round $json" >&2
            done
        done
    done
done

python3 - "$OUT" <<'PY'
import json, sys, statistics as st
from collections import defaultdict
runs = defaultdict(dict)  # (size, conns) -> {(server, round): result}
order = []
for line in open(sys.argv[1]):
    server, rnd, js = line.rstrip("\n").split("\t", 2)
    r = json.loads(js)
    key = (r["size"], r["connections"])
    runs[key][(server, int(rnd))] = r
    if server not in order:
        order.append(server)

def ratio(key, server, base):
    rs = []
    for (s, rnd), r in runs[key].items():
        b = runs[key].get((base, rnd))
        if s == server and b and b["rt_per_s"] > 0:
            rs.append(r["rt_per_s"] / b["rt_per_s"])
    if not rs:
        return "-"
    return f"{st.median(rs):.2f} ({min(rs):.2f}-{max(rs):.2f})"

hdr = ["size", "conns", "server", "rt/s", "p50 us", "p99 us", "p99.9 us", "max us",
       "user us/rt", "sys us/rt", "vs raw", "vs tokio"]
rows = []
for key in sorted(runs):
    for server in order:
        rs = [r for (s, _), r in runs[key].items() if s == server]
        if not rs:
            continue
        med = lambda f: st.median(r.get(f, float("nan")) for r in rs)
        rows.append([str(key[0]), str(key[1]), server, f"{med('rt_per_s'):.0f}",
                     f"{med('p50_us'):.0f}", f"{med('p99_us'):.0f}", f"{med('p999_us'):.0f}",
                     f"{med('max_us'):.0f}", f"{med('server_user_us_per_rt'):.2f}",
                     f"{med('server_sys_us_per_rt'):.2f}", ratio(key, server, "raw"),
                     ratio(key, server, "tokio")])
w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(hdr)]
print("| " + " | ".join(h.ljust(w[i]) for i, h in enumerate(hdr)) + " |")
print("|" + "|".join("-" * (x + 2) for x in w) + "|")
for r in rows:
    print("| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |")
print("\nmedians over rounds; ratios are rt/s per round vs the same round's raw / tokio run, "
      "median (min-max)")
PY
