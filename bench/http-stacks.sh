#!/usr/bin/env bash
# Why hyper and not actix-web and reqwest (the original design's packages): the frontend's hot
# path (a small GET answered with a 100-byte value) served by a minimal hyper server and a
# minimal actix-web server, one worker thread each, driven by the bench tool (64 connections,
# reads only); and 64 concurrent GETs from hyper-util's pooled client against reqwest's, one
# thread each, against the hyper server. Alternating rounds, side by side in one run.
# Usage: bench/http-stacks.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECONDS_EACH=${2:-10}
cargo build --release --quiet -p bench
cargo build --release --quiet --manifest-path bench/http-stacks/Cargo.toml
STACKS=bench/http-stacks/target/release/http-stacks
PORT=17900
pid=
cleanup() { [ -z "$pid" ] || kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT

rate() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(round(r["get"]["ops_per_sec"]), "req/s, errors", r["get"]["errors"])' "$1"; }

for round in $(seq "$ROUNDS"); do
  for server in hyper actix; do
    "$STACKS" serve "$server" "$PORT" & pid=$!
    sleep 0.5
    target/release/bench --frontends "http://127.0.0.1:$PORT" --read-ratio 1 --concurrency 64 \
      --duration "${SECONDS_EACH}s" --quiet --json "/tmp/http-stacks-$server.json" >/dev/null
    echo "round $round server $server: $(rate "/tmp/http-stacks-$server.json")"
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  done
  "$STACKS" serve hyper "$PORT" & pid=$!
  sleep 0.5
  for client in hyper reqwest; do
    echo "round $round client $("$STACKS" client "$client" "http://127.0.0.1:$PORT" 64 "$SECONDS_EACH")"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
done
