#!/usr/bin/env bash
# percore load vs wrk against the same nginx (1 worker pinned to CPU 0), each generator pinned to
# CPU 1, closed loop, 64 connections, alternating A/B for ROUNDS rounds. Prints requests/s and
# the generator's user and system CPU per request (from /usr/bin/time, whole process), and the
# nginx worker's CPU per request.
#
#   ROUNDS=5 DURATION=10 CONNS=64 bash benches/load/run.sh
#
# Needs: nginx (nginx-light), wrk, a release build of percore (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
PERCORE=${PERCORE:-target/release/percore}
OUT=${OUT:-/tmp/percore-load-bench}
rm -rf "$OUT" && mkdir -p "$OUT"
# shellcheck source=benches/load/nginx.sh
source benches/load/nginx.sh
worker=$(pgrep -P "$NGINX" | head -1)

cpu_of() { awk '{print $14+$15}' "/proc/$1/stat"; }   # utime + stime, in ticks (1/100 s)

printf '%-8s %5s %12s %14s %14s %16s\n' tool round 'req/s' 'user us/req' 'sys us/req' 'nginx us/req'
for round in $(seq "$ROUNDS"); do
  for tool in wrk percore; do
    before=$(cpu_of "$worker")
    if [[ $tool == wrk ]]; then
      /usr/bin/time -f '%U %S' -o "$OUT/time" taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" "$url" >"$OUT/wrk.txt"
      reqs=$(awk '/requests in/ {print $1}' "$OUT/wrk.txt")
      rate=$(awk '/Requests\/sec/ {print $2}' "$OUT/wrk.txt")
    else
      /usr/bin/time -f '%U %S' -o "$OUT/time" taskset -c 1 "$PERCORE" load "$url" --closed-loop \
        -c "$CONNS" -d "${DURATION}s" --cpus 1 -q --json "$OUT/percore.json" >"$OUT/percore.txt"
      reqs=$(python3 -c "import json; print(json.load(open('$OUT/percore.json'))['requests'])")
      rate=$(python3 -c "import json; print(round(json.load(open('$OUT/percore.json'))['achieved_rate']))")
    fi
    after=$(cpu_of "$worker")
    read -r user sys <"$OUT/time"
    python3 - "$tool" "$round" "$rate" "$reqs" "$user" "$sys" "$before" "$after" <<'PY'
import sys
tool, rnd, rate, reqs, user, sys_, before, after = sys.argv[1:]
reqs = float(reqs)
print(f"{tool:<8} {rnd:>5} {float(rate):>12.0f} {float(user)*1e6/reqs:>14.2f} {float(sys_)*1e6/reqs:>14.2f} {(float(after)-float(before))*1e4/reqs:>16.2f}")
PY
  done
done
