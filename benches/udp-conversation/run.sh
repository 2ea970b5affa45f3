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
# Instructions per round trip (robust to the noise), over the same measured window:
# - PERF=1: `perf stat -e $PERF_EVENTS -p <server pid>` (default instructions:u,instructions:k;
#   needs a hardware PMU: in a VM without one perf says "not supported" and the columns say n/a);
# - CALLGRIND=1: the server runs under valgrind's callgrind, zeroed at the window's start and
#   dumped at its end: user-space instructions only, with the server slowed down (so with more
#   datagrams per turn than at full speed). Rates and CPU times of such runs mean nothing.
#
# Usage: benches/udp-conversation/run.sh            (from anywhere)
# Env (defaults): DURATION=3 WARMUP=1 ROUNDS=3 SIZES="64" PEERS="64 512"
#                 SERVERS="conv plain tokio" OUT=<tmp file> PERF=0 CALLGRIND=0
#                 PERF_EVENTS="instructions:u,instructions:k"
#                 BIN=<dir of prebuilt binaries: skips the build>
#                 BEFORE_BIN=<dir of an older build>: a server named NAME-before in SERVERS
#                 runs NAME from that build (a before/after comparison in one run)
#                 BUSY_POLL_US=50: a percore server named NAME+bp in SERVERS runs NAME in the
#                 runtime's latency mode (spins this long before sleeping; CPU times then
#                 include the spinning)
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
PERF=${PERF:-0}
CALLGRIND=${CALLGRIND:-0}
PERF_EVENTS=${PERF_EVENTS:-"instructions:u,instructions:k"}
BUSY_POLL_US=${BUSY_POLL_US:-50}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
if [[ -z "${BIN:-}" ]]; then
    cargo build --release -p percore-benches --bin udp_conv_echo --bin udp_conv_client --quiet
    BIN="$ROOT/target/release"
fi
OUT=${OUT:-$(mktemp /tmp/udp-conv-bench.XXXXXX.tsv)}
: >"$OUT"
ERR=$(mktemp /tmp/udp-conv-server.XXXXXX.err)
MEASURE=$(mktemp -d /tmp/udp-conv-measure.XXXXXX)

# Instructions of the server over the measured window, as JSON fields (none without PERF or
# CALLGRIND). Runs beside the client: waits out the warm-up, then counts for DURATION seconds.
measure() {
    local pid=$1
    sleep "$WARMUP"
    if [[ "$PERF" == 1 ]]; then
        perf stat -x, -e "$PERF_EVENTS" -p "$pid" -o "$MEASURE/perf" -- sleep "$DURATION" \
            >/dev/null 2>&1 || true
    elif [[ "$CALLGRIND" == 1 ]]; then
        rm -f "$MEASURE"/cg.*
        callgrind_control -z "$pid" >/dev/null 2>&1 || true
        sleep "$DURATION"
        callgrind_control -d "$pid" >/dev/null 2>&1 || true
    fi
}

# The fields `measure` found, for one run (`"instr_u": N, ...` or nothing).
measured_fields() {
    python3 - "$MEASURE" <<'PY'
import glob, os, sys
d = sys.argv[1]
fields = {}
perf = os.path.join(d, "perf")
if os.path.exists(perf):
    for line in open(perf):
        parts = line.strip().split(",")
        if len(parts) < 3 or line.startswith("#"):
            continue
        name = "instr_k" if parts[2].endswith(":k") else "instr_u" if parts[2].endswith(":u") else None
        if name:
            value = float(parts[0]) if parts[0].replace(".", "").isdigit() else 0
            fields[name] = value if value > 0 else None
    os.remove(perf)
dumps = [f for f in glob.glob(os.path.join(d, "cg.*")) if os.path.getsize(f) > 0]
if dumps:
    # The dump made at the window's end: costs since the zeroing at its start.
    last = max(dumps, key=os.path.getmtime)
    for line in open(last):
        if line.startswith(("summary:", "totals:")):
            # Zero when the zeroing came late (valgrind takes commands between its slices).
            fields["instr_u"] = float(line.split()[1]) or None
            break
print("".join(f',"{k}":{"null" if v is None else v}' for k, v in fields.items()))
PY
}

SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        # Under callgrind the server may not get to its graceful shutdown (its dump is made).
        kill "-$([[ "$CALLGRIND" == 1 ]] && echo KILL || echo TERM)" "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
trap 'cleanup; rm -f "$ERR"; rm -rf "$MEASURE"' EXIT INT TERM

echo "# results (one JSON line per run) in $OUT" >&2
for size in $SIZES; do
    for peers in $PEERS; do
        for round in $(seq 1 "$ROUNDS"); do
            for server in $SERVERS; do
                port=$("$BIN/udp_conv_client" --free-port)
                addr="127.0.0.1:$port"
                server_bin="$BIN" kind="$server" extra=()
                if [[ "$kind" == *+bp ]]; then
                    kind="${kind%+bp}" extra=(--busy-poll-us "$BUSY_POLL_US")
                fi
                if [[ "$kind" == *-before ]]; then
                    server_bin="${BEFORE_BIN:?BEFORE_BIN for $server}" kind="${kind%-before}"
                fi
                wrap=()
                if [[ "$CALLGRIND" == 1 ]]; then
                    wrap=(valgrind --tool=callgrind "--callgrind-out-file=$MEASURE/cg.%p")
                fi
                taskset -c "$SERVER_CPU" "${wrap[@]}" "$server_bin/udp_conv_echo" \
                    --server "$kind" --listen "$addr" --cpu "$SERVER_CPU" "${extra[@]}" 2>"$ERR" &
                SERVER_PID=$!
                # A datagram sent before the server binds draws an ICMP error: wait for it.
                for _ in $(seq 100); do
                    grep -q "listening on" "$ERR" && break
                    sleep 0.05
                done
                measure "$SERVER_PID" &
                measure_pid=$!
                json=$(taskset -c "$CLIENT_CPU" "$BIN/udp_conv_client" --cpu "$CLIENT_CPU" \
                    --addr "$addr" --peers "$peers" --size "$size" \
                    --duration "$DURATION" --warmup "$WARMUP" --server-pid "$SERVER_PID") || json=""
                wait "$measure_pid" || true
                [[ -n "$json" ]] && json="${json%\}}$(measured_fields),\"window_s\":$DURATION}"
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

def per_rt(r, field):
    # Instructions over the window / round trips over the same window.
    n, rts = r.get(field), r["rt_per_s"] * r.get("window_s", 0)
    return n / rts if n is not None and rts > 0 else None

def instr(r):
    u, k = per_rt(r, "instr_u"), per_rt(r, "instr_k")
    return None if u is None else u + (k or 0)

def kinstr(rs, field):
    xs = [x for x in (per_rt(r, field) for r in rs) if x is not None]
    return f"{st.median(xs) / 1000:.1f}" if xs else "n/a"

def ratio(key, server, base, of=lambda r: r["rt_per_s"]):
    rs = []
    for (s, rnd), r in runs[key].items():
        b = runs[key].get((base, rnd))
        if s == server and b and of(b) and of(r) is not None:
            rs.append(of(r) / of(b))
    if not rs:
        return "-"
    return f"{st.median(rs):.2f} ({min(rs):.2f}-{max(rs):.2f})"

hdr = ["size", "peers", "server", "rt/s", "p50 us", "p99 us", "p99.9 us", "lost", "bad",
       "user us/rt", "sys us/rt", "rt/s vs plain", "rt/s vs tokio", "CPU/rt vs plain",
       "CPU/rt vs tokio", "kinstr u/rt", "kinstr k/rt", "instr/rt vs plain",
       "instr/rt vs tokio"]
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
                     ratio(key, server, "plain", cpu), ratio(key, server, "tokio", cpu),
                     kinstr(rs, "instr_u"), kinstr(rs, "instr_k"),
                     ratio(key, server, "plain", instr), ratio(key, server, "tokio", instr)])
w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(hdr)]
print("| " + " | ".join(h.ljust(w[i]) for i, h in enumerate(hdr)) + " |")
print("|" + "|".join("-" * (x + 2) for x in w) + "|")
for r in rows:
    print("| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |")
print("\nmedians over rounds (lost/bad: totals); ratios compare each round's run with the same "
      "round's plain / tokio run (round trips/s; server CPU user+sys per round trip), "
      "median (min-max)")
PY
