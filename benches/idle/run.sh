#!/usr/bin/env bash
# Memory per idle connection: RSS growth per connection of each echo server at CONNS idle
# connections (benches/src/bin/idle_memory.rs does one measurement). Servers alternate
# A B C ... within each round, ROUNDS times; prints every measurement and the median per server.
#
# Usage: benches/idle/run.sh            (from anywhere)
# Env (defaults): CONNS=8000 ROUNDS=3 HELLO=16 SETTLE=2
#                 SERVERS="percore-serve percore raw tokio glommio monoio"
#                 (also: percore-holla, `percore serve holla`)
# Server pinned to CPU 0, this client to CPU 1. RSS is the kernel's count of resident pages:
# growth/connection includes allocator rounding, not kernel socket memory.
set -euo pipefail

CONNS=${CONNS:-8000}
ROUNDS=${ROUNDS:-3}
HELLO=${HELLO:-16}
SETTLE=${SETTLE:-2}
SERVERS=${SERVERS:-"percore-serve percore raw tokio glommio monoio"}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
cargo build --release -p percore-benches --bins --quiet
cargo build --release -p percore --bin percore --quiet
BIN="$ROOT/target/release"
OUT=$(mktemp /tmp/idle-memory.XXXXXX.tsv)

command_for() {
    case "$1" in
        percore-serve) echo "$BIN/percore serve echo --listen 127.0.0.1:0 --cpus 0" ;;
        percore-holla) echo "$BIN/percore serve holla --listen 127.0.0.1:0 --cpus 0" ;;
        percore) echo "$BIN/echo_percore --listen 127.0.0.1:0 --cpu 0" ;;
        percore-relay) echo "$BIN/echo_percore --listen 127.0.0.1:0 --cpu 0 --mode relay" ;;
        raw) echo "$BIN/echo_raw_uring --listen 127.0.0.1:0" ;;
        tokio) echo "$BIN/echo_tokio --listen 127.0.0.1:0 --cpu 0" ;;
        glommio) echo "$BIN/echo_glommio --listen 127.0.0.1:0 --cpu 0" ;;
        monoio) echo "$BIN/echo_monoio --listen 127.0.0.1:0 --cpu 0" ;;
        *) echo "unknown server $1" >&2; exit 2 ;;
    esac
}

for round in $(seq 1 "$ROUNDS"); do
    for server in $SERVERS; do
        # shellcheck disable=SC2046
        line=$("$BIN/idle_memory" --connections "$CONNS" --hello "$HELLO" --settle "$SETTLE" \
            --name "$server" -- $(command_for "$server"))
        echo "round $round: $line"
        bytes=$(sed -E 's/.*per connection ([0-9]+) B.*/\1/' <<<"$line")
        printf '%s\t%s\n' "$server" "$bytes" >>"$OUT"
    done
done

echo
echo "server | RSS growth per idle connection (median of $ROUNDS, bytes) | all rounds"
echo "---|---:|---"
for server in $SERVERS; do
    values=$(awk -v s="$server" '$1 == s { print $2 }' "$OUT" | sort -n)
    median=$(awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }' <<<"$values")
    echo "$server | $median | $(tr '\n' ' ' <<<"$values")"
done
echo "(raw data: $OUT)"
