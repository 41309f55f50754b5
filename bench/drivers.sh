#!/usr/bin/env bash
# The bench tool's two drivers side by side on one local cluster (1 frontend, 3 storage nodes,
# K = 3, fsync before every acknowledgement, as bench/compare.sh runs it): the raw hot loop
# (bench/src/conn.rs) against the `client` library (pooled hyper client with failover and
# retries), for a GET-only and a SET-only load, each over alternating halves of DURATION per
# round. Prints each round's report and the library's ratios.
#
#   bench/drivers.sh                        # defaults below
#   DURATION=20s ROUNDS=3 bench/drivers.sh
#   NO_BUILD=1 bench/drivers.sh             # use the binaries already in target/release
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-50}
VALUE_SIZE=${VALUE_SIZE:-100}
KEYS=${KEYS:-10000}
ROUNDS=${ROUNDS:-2}
BASE_PORT=${BASE_PORT:-18800}

source bench/cluster.sh

if [ -z "${NO_BUILD:-}" ]; then
  say "building release binaries"
  cargo build --release --quiet -p controller -p storage -p frontend -p bench
fi
start_velourfog "$BASE_PORT"

common=(--frontends "$frontend_addr" --concurrency "$CONCURRENCY" --keys "$KEYS" --value-size "$VALUE_SIZE" --quiet)
say "preloading $KEYS keys through the client library and reading them back"
"$BIN/bench" "${common[@]}" --duration 1s --read-ratio 1 --preload --verify >/dev/null
common+=(--duration "$DURATION" --driver both)
for round in $(seq "$ROUNDS"); do
  say "round $round of $ROUNDS: get, raw and client library"
  "$BIN/bench" "${common[@]}" --read-ratio 1 --label get
  say "round $round of $ROUNDS: set, raw and client library"
  "$BIN/bench" "${common[@]}" --read-ratio 0 --label set
done
say "velourfog: 1 frontend, 3 storage nodes (K = 3), $node_workers worker thread(s) each; the bench one thread"
