#!/usr/bin/env bash
# User-space instructions per round trip of an echo-style server, counted by callgrind (the VM
# has no hardware counters): the server runs under valgrind pinned to CPU 0, echo_client loads
# it from CPU 1 (64 connections of 64 B), instrumentation is on for the 6 s the client measures,
# and the count is divided by the round trips the client saw. Deterministic per code path, but
# it depends on how many completions a loop turn batches (the server runs ~10x slower under
# valgrind): compare builds run back to back.
#
#   bash benches/echo/callgrind.sh "target/release/percore serve holla --listen 127.0.0.1:PORT --cpus 0"
#
# PORT is replaced by a free port. Env: CONNS (64), SIZE (64), CGOUT (a directory to keep the
# profile and the client's report in; default a temporary one, removed). Needs valgrind.
set -euo pipefail
cd "$(dirname "$0")/../.."
CONNS=${CONNS:-64}
SIZE=${SIZE:-64}
CLIENT=target/release/echo_client
OUT=${CGOUT:-$(mktemp -d /tmp/echo-callgrind.XXXXXX)}
port=$("$CLIENT" --free-port)
# shellcheck disable=SC2086
taskset -c 0 valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$OUT/callgrind.out" ${1//PORT/$port} >/dev/null 2>&1 &
server=$!
sleep 3
taskset -c 1 "$CLIENT" --cpu 1 --addr "127.0.0.1:$port" --connections "$CONNS" --size "$SIZE" \
    --warmup 1 --duration 6 >"$OUT/client.json" &
client=$!
sleep 1
callgrind_control -i on "$server" >/dev/null 2>&1
sleep 6
callgrind_control -i off "$server" >/dev/null 2>&1
callgrind_control -d "$server" >/dev/null 2>&1
wait "$client"
# valgrind does not always pass SIGINT on to a percore core in time: it is done with here.
kill -9 "$server" 2>/dev/null || true
wait "$server" 2>/dev/null || true
python3 - "$OUT" <<'PY'
import glob, json, sys
out = sys.argv[1]
client = json.load(open(f"{out}/client.json"))
total = 0
for path in glob.glob(f"{out}/callgrind.out*"):
    for line in open(path):
        if line.startswith("totals:"):
            total = max(total, int(line.split()[1]))
print(f"{total / client['round_trips']:.0f} user instructions per round trip "
      f"({total} over {client['round_trips']} round trips; {client['rt_per_s']:.0f}/s under valgrind)")
PY
[[ -n ${CGOUT:-} ]] || rm -rf "$OUT"
