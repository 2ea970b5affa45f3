#!/usr/bin/env bash
# Open-loop accuracy: percore load at fixed rates against percore's echo service (CPU 0), the
# generator on CPU 1, 64 connections. Prints offered vs achieved rate, schedule lag and the
# verdict for each rate, after a closed-loop run that measures the capacity.
#
#   DURATION=5 RATES="10000 20000 40000 60000" bash benches/load/rate.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-5}
RATES=${RATES:-"10000 20000 40000 60000 80000"}
PERCORE=${PERCORE:-target/release/percore}
OUT=${OUT:-/tmp/percore-rate-bench}
mkdir -p "$OUT"
taskset -c 0 "$PERCORE" serve echo --listen 127.0.0.1:0 --cpus 0 2>"$OUT/serve.err" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q "listening on" "$OUT/serve.err" && break; sleep 0.1; done
addr=$(grep -o 'listening on [^ ]*' "$OUT/serve.err" | head -1 | cut -d' ' -f3)
target="tcp://$addr"

show() {
  python3 - "$1" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
off = j["offered_rate"]
print(f'{(off or 0):>10.0f} {j["achieved_rate"]:>10.0f} {(100*j["achieved_rate"]/off if off else 0):>8.2f}% '
      f'{j["latency_ns"]["p99"]/1e3:>10.1f} {j["schedule_lag_ns"]["max"]/1e6:>10.2f} '
      f'{j["generator_cpu"]["busiest_shard"]*100:>6.0f}%  {j["verdict"]["bottleneck"]}')
PY
}
printf '%10s %10s %9s %10s %10s %7s  %s\n' offered achieved ratio 'p99 us' 'lag ms' busy bottleneck
taskset -c 1 "$PERCORE" load "$target" --closed-loop -c 64 -d "${DURATION}s" --cpus 1 -q --json "$OUT/closed.json" >/dev/null
show "$OUT/closed.json"
for rate in $RATES; do
  taskset -c 1 "$PERCORE" load "$target" --rate "$rate" -c 64 -d "${DURATION}s" --cpus 1 --warmup 1s -q --json "$OUT/open-$rate.json" >/dev/null
  show "$OUT/open-$rate.json"
done
