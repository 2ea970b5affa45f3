#!/usr/bin/env bash
# A/B of servers' CPU per round trip, user and kernel separately, from perf's cpu-clock samples
# (10 kHz over 3 s of load: ~30,000 samples a run) rather than /proc's 10 ms ticks (a 5 s run
# holds ~20 ticks of user time, so ticks move +-15% round to round). The servers alternate
# A B A B ... for ROUNDS rounds; each runs pinned to CPU 0 and is loaded by echo_client (64
# connections of 64 B, CPU 1). Compare pairs of the same round, and rounds at the same rate:
# this VM has runs where the kernel's path is ~25% slower for every server.
#
#   ROUNDS=6 bash benches/echo/sampled_cpu.sh \
#       "before=/tmp/old/percore serve holla --listen 127.0.0.1:PORT --cpus 0" \
#       "after=target/release/percore serve holla --listen 127.0.0.1:PORT --cpus 0"
#
# PORT in a command is replaced by a free port. Env: ROUNDS (6), CONNS (64), SIZE (64).
# Needs perf and a release build of percore-benches (echo_client).
set -uo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-6}
CONNS=${CONNS:-64}
SIZE=${SIZE:-64}
CLIENT=target/release/echo_client
OUT=$(mktemp -d /tmp/sampled-cpu.XXXXXX)
for round in $(seq "$ROUNDS"); do
    for spec in "$@"; do
        name=${spec%%=*}
        cmd=${spec#*=}
        port=$("$CLIENT" --free-port)
        # shellcheck disable=SC2086
        taskset -c 0 ${cmd//PORT/$port} >/dev/null 2>&1 &
        pid=$!
        sleep 0.4
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
# Each sample is 100 us of the server's CPU; the samples cover 3 s of the measured load.
trips = client["rt_per_s"] * 3
print(f"{name:<12} round {rnd:>2}  rt/s {client['rt_per_s']:>9.0f}  "
      f"p99 {client['p99_us']:>7.0f} us  "
      f"user {user * 100 / trips:.3f} us/rt  kernel {kernel * 100 / trips:.3f} us/rt  "
      f"({user} + {kernel} samples)")
PY
    done
done
rm -rf "$OUT"
