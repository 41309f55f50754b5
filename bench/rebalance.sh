#!/usr/bin/env bash
# A node joining under load: a local release cluster (1 frontend, 3 storage nodes, K = 3,
# durable writes) is filled with DATA_MIB of values, measured under a read/write load
# (STEADY seconds), then a 4th storage node is started while the same load runs, until every
# partition move has committed. Prints: throughput and p99 during the rebalance against the
# steady state (the same bench command, side by side in one run), how long the moves took,
# the bytes the new node received against the bytes it owns afterwards, and the time to move
# 1 GiB at that pace. Run it at the default --rebalance-mib-per-s, or set RATE_MIB.
#
#   bench/rebalance.sh                              # 1 GiB of 1 KiB values
#   DATA_MIB=256 RATE_MIB=64 bench/rebalance.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_MIB=${DATA_MIB:-1024}
VALUE_SIZE=${VALUE_SIZE:-1024}
STEADY=${STEADY:-20}
CONCURRENCY=${CONCURRENCY:-32}
READ_RATIO=${READ_RATIO:-0.9}
RATE_MIB=${RATE_MIB:-}
BASE_PORT=${BASE_PORT:-18900}
KEYS=$((DATA_MIB * 1024 * 1024 / VALUE_SIZE))

source bench/cluster.sh

say "building release binaries"
cargo build --release --quiet -p controller -p storage -p frontend -p bench -p velourfog
[ -z "$RATE_MIB" ] || export VF_REBALANCE_MIB_PER_S=$RATE_MIB
start_velourfog "$BASE_PORT"
controller="127.0.0.1:$BASE_PORT"

load() { # seconds, json file
  "$BIN/bench" --frontends "http://$frontend_addr" --duration "${1}s" --concurrency "$CONCURRENCY" \
    --read-ratio "$READ_RATIO" --keys "$KEYS" --value-size "$VALUE_SIZE" --quiet --json "$2" >/dev/null
}
field() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r$2)" "$1"; }

say "filling: $KEYS keys of $VALUE_SIZE bytes ($DATA_MIB MiB, x3 replicas)"
fill_start=$(date +%s.%N)
"$BIN/bench" --frontends "http://$frontend_addr" --duration 1s --concurrency 64 --read-ratio 0 \
  --keys "$KEYS" --value-size "$VALUE_SIZE" --preload --quiet >/dev/null
say "filled in $(python3 -c "print(round($(date +%s.%N) - $fill_start, 1))") s"

say "steady state: ${STEADY}s"
load "$STEADY" "$work/steady.json"

say "starting a 4th storage node, same load until the moves are done"
addr4="127.0.0.1:$((BASE_PORT + 4))"
start storage4 "$BIN/storage" "$controller" "$addr4" --listen "$addr4" --data-dir "$work/storage4" \
  --sync always --worker-threads "$node_workers"
joined=$(date +%s.%N)
# The load runs in slices of 5 s until the controller reports no move left.
slices=0
rm -f "$work/during.jsonl"
while :; do
  load 5 "$work/slice.json"
  python3 -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))' "$work/slice.json" >>"$work/during.jsonl"
  slices=$((slices + 1))
  moves=$("$BIN/velourfog" --controller "$controller" --json status | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["moves"]))')
  [ "$moves" -eq 0 ] && break
  [ "$slices" -lt 120 ] || { echo "moves not done after 10 minutes" >&2; exit 1; }
done
settled=$(python3 -c "print(round($(date +%s.%N) - $joined, 1))")

stats4=$(curl -fsS "http://$addr4/v1/stats")
"$BIN/velourfog" --controller "$controller" status
python3 - "$work/steady.json" "$work/during.jsonl" "$settled" "$stats4" "$DATA_MIB" <<'EOF'
import json, sys
steady = json.load(open(sys.argv[1]))
during = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
settled, stats4, data_mib = float(sys.argv[3]), json.loads(sys.argv[4]), float(sys.argv[5])
def ops(r): return r["get"]["ops_per_sec"] + r["set"]["ops_per_sec"]
def p99(r, op): return r[op]["latency"]["p99_ms"]
during_ops = sum(ops(r) * r["seconds"] for r in during) / sum(r["seconds"] for r in during)
received = stats4["repair"]["bytes_moved"]
owned = 0.75 * data_mib
print(f"steady state:      {ops(steady):9.0f} ops/s, p99 get {p99(steady, 'get'):.2f} ms, set {p99(steady, 'set'):.2f} ms")
print(f"during rebalance:  {during_ops:9.0f} ops/s ({during_ops / ops(steady):.2f}x steady); by 5 s slice: "
      + ", ".join(f"{ops(r):.0f}" for r in during))
print("  p99 set by slice (ms): " + ", ".join(f"{p99(r, 'set'):.1f}" for r in during))
print(f"moves done in {settled:.1f} s; the new node received {received / 2**20:.0f} MiB for the "
      f"~{owned:.0f} MiB of values it owns (3/4 of the data set): {received / 2**20 / owned:.2f}x")
print(f"pace: {received / 2**20 / settled:.1f} MiB/s, so 1 GiB moves in {1024 / (received / 2**20 / settled):.0f} s")
EOF
