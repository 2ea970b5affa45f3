#!/usr/bin/env bash
# percore load vs wrk against the same nginx (1 worker, CPU 0), each generator pinned to CPU 1,
# closed loop, CONNS connections, alternating for ROUNDS rounds: the generator's user and
# kernel CPU per request from perf's cpu-clock samples (10 kHz over 4 s in the middle of each
# run: ~40,000 samples, a few thousand in user space), not /proc's 10 ms ticks, whose user
# split moves +-15% per round at ~0.5 us of user time per request. The count of requests in
# the sampled window is the run's rate times 4 s. run.sh gives the whole-process figures.
#
#   ROUNDS=6 CONNS=64 bash benches/load/sampled.sh
#
# Needs: nginx (nginx-light), wrk, perf, a release build of percore.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-6}
CONNS=${CONNS:-64}
PERCORE=${PERCORE:-target/release/percore}
OUT=${OUT:-/tmp/percore-load-sampled}
rm -rf "$OUT" && mkdir -p "$OUT"
# shellcheck source=benches/load/nginx.sh
source benches/load/nginx.sh

printf '%-8s %5s %10s %14s %16s %10s\n' tool round 'req/s' 'user us/req' 'kernel us/req' samples
for round in $(seq "$ROUNDS"); do
    for tool in wrk percore; do
        if [[ $tool == wrk ]]; then
            taskset -c 1 wrk -t1 -c"$CONNS" -d8s "$url" >"$OUT/wrk.txt" &
        else
            taskset -c 1 "$PERCORE" load "$url" --closed-loop -c "$CONNS" -d 8s --cpus 1 -q \
                --json "$OUT/percore.json" >"$OUT/percore.txt" &
        fi
        gen=$!
        sleep 2
        perf record -q -F 10000 -e cpu-clock -p "$gen" -o "$OUT/perf.data" -- sleep 4 \
            >/dev/null 2>&1
        wait "$gen"
        if [[ $tool == wrk ]]; then
            rate=$(awk '/Requests\/sec/ {print $2}' "$OUT/wrk.txt")
        else
            rate=$(python3 -c "import json; print(json.load(open('$OUT/percore.json'))['achieved_rate'])")
        fi
        perf script -i "$OUT/perf.data" -F ip,dso >"$OUT/dsos" 2>/dev/null
        python3 benches/perf_samples.py "$OUT/dsos" >"$OUT/samples"
        python3 - "$tool" "$round" "$rate" "$OUT/samples" <<'PY'
import sys
tool, rnd, rate, samples = sys.argv[1:]
user, kernel = map(int, open(samples).read().split())
requests = float(rate) * 4
print(f"{tool:<8} {rnd:>5} {float(rate):>10.0f} {user * 100 / requests:>14.3f} "
      f"{kernel * 100 / requests:>16.3f} {user:>5}+{kernel}")
PY
    done
done
