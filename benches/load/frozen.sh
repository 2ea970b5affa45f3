#!/usr/bin/env bash
# Coordinated omission beside oha: the same nginx (1 worker, CPU 0) loaded at a fixed rate from
# CPU 1 while the server is frozen (SIGSTOP) for 1 s, 3 s into the run. percore load reports the
# corrected latency (from intended send times) and the service time (uncorrected) of one run;
# oha runs twice, with and without --latency-correction. Alternating, ROUNDS rounds.
#
#   ROUNDS=3 RATE=2000 CONNS=16 DURATION=10 bash benches/load/frozen.sh
#
# Needs nginx, a release build of percore, and oha (`cargo install oha --locked`; OHA=path).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-2000}
CONNS=${CONNS:-16}
DURATION=${DURATION:-10}
PERCORE=${PERCORE:-target/release/percore}
OHA=${OHA:-oha}
OUT=${OUT:-/tmp/percore-frozen-bench}
rm -rf "$OUT" && mkdir -p "$OUT"
# shellcheck source=benches/load/nginx.sh
source benches/load/nginx.sh

freeze() {  # 3 s in, stop nginx (master and worker) for 1 s
  sleep 3
  kill -STOP $NGINX $(pgrep -P $NGINX)
  sleep 1
  kill -CONT $NGINX $(pgrep -P $NGINX)
}

printf '%-22s %5s %10s %10s %10s %10s %10s\n' tool round 'req/s' 'p50 ms' 'p99 ms' 'p99.9 ms' 'max ms'
for round in $(seq "$ROUNDS"); do
  freeze & freezer=$!
  taskset -c 1 "$PERCORE" load "$url" --rate "$RATE" -c "$CONNS" -d "${DURATION}s" --cpus 1 -q \
    --json "$OUT/percore.json" >/dev/null
  wait $freezer
  python3 - "$round" "$OUT/percore.json" <<'PY'
import json, sys
rnd, path = sys.argv[1:]
j = json.load(open(path))
for name, key in (("percore (corrected)", "latency_ns"), ("percore (service time)", "service_time_ns")):
    q = j[key]
    print(f'{name:<22} {rnd:>5} {j["achieved_rate"]:>10.0f} {q["p50"]/1e6:>10.2f} {q["p99"]/1e6:>10.2f} {q["p999"]/1e6:>10.2f} {q["max"]/1e6:>10.2f}')
PY
  for mode in corrected uncorrected; do
    flag=""; [[ $mode == corrected ]] && flag="--latency-correction"
    freeze & freezer=$!
    taskset -c 1 "$OHA" -z "${DURATION}s" -q "$RATE" -c "$CONNS" $flag --no-tui \
      --output-format json "$url" >"$OUT/oha.json"
    wait $freezer
    python3 - "$round" "$OUT/oha.json" "oha ($mode)" <<'PY'
import json, sys
rnd, path, name = sys.argv[1:]
j = json.load(open(path))
p = j["latencyPercentiles"]
s = j["summary"]
print(f'{name:<22} {rnd:>5} {s["requestsPerSec"]:>10.0f} {p["p50"]*1e3:>10.2f} {p["p99"]*1e3:>10.2f} {p["p99.9"]*1e3:>10.2f} {s["slowest"]*1e3:>10.2f}')
PY
  done
done
