#!/usr/bin/env bash
# Memory under sustained load: a local release cluster (1 frontend, 3 storage nodes, K = 3,
# durable writes) under a 50% read / 50% write load over a large key space, sampled every
# INTERVAL seconds. Each sample shows the frontend's RSS, each storage node's RSS next to what
# its engine reports holding in memory (block cache and unflushed memtables, both bounded by
# configuration), the records it holds (versions not yet compacted included) and its data on
# disk, and how the C allocator splits its heap between bytes in use and bytes freed but kept
# for reuse (flushed memtables). Ends with the growth of each between the first sample after
# WARMUP and the last.
#
#   bench/soak.sh                                  # 5 minutes, 2 M keys
#   SOAK=600 KEYS=5000000 CACHE_MIB=16 bench/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SOAK=${SOAK:-300}
INTERVAL=${INTERVAL:-30}
WARMUP=${WARMUP:-60}
KEYS=${KEYS:-2000000}
CONCURRENCY=${CONCURRENCY:-50}
CACHE_MIB=${CACHE_MIB:-64}
BASE_PORT=${BASE_PORT:-18800}

source bench/cluster.sh

say "building release binaries"
cargo build --release --quiet -p controller -p storage -p frontend -p bench
export VF_CACHE_MIB=$CACHE_MIB
start_velourfog "$BASE_PORT"

engine() { # storage address: "cache_MiB write_buffers_MiB records heap_in_use_MiB heap_free_MiB"
  curl -fsS "http://$1/v1/stats" | python3 -c '
import json, sys
stats = json.load(sys.stdin)
e, h = stats["engine"], stats["heap"] or {"in_use_bytes": 0, "free_bytes": 0}
print(e["cache_bytes"] >> 20, e["write_buffer_bytes"] >> 20, e["approximate_records"], h["in_use_bytes"] >> 20, h["free_bytes"] >> 20)'
}

say "load: ${SOAK}s, concurrency $CONCURRENCY, read ratio 0.5, $KEYS keys, block cache ${CACHE_MIB} MiB per node"
"$BIN/bench" --frontends "http://$frontend_addr" --duration "${SOAK}s" --concurrency "$CONCURRENCY" \
  --read-ratio 0.5 --keys "$KEYS" --quiet --json "$work/soak.json" >"$work/bench.txt" &
bench_pid=$!
pids+=("$bench_pid")

samples="$work/samples.txt"
printf '%6s %12s  %-44s\n' "t s" "frontend MiB" "storage node: RSS MiB (engine cache + write buffers; heap in use / free, MiB), records, disk MiB"
for ((t = 0; t <= SOAK; t += INTERVAL)); do
  frontend_rss=$(($(rss_kib "$frontend_pid") >> 10))
  echo "$t fe $frontend_rss" >>"$samples"
  line=$(printf '%6d %12d ' "$t" "$frontend_rss")
  for i in 0 1 2; do
    read -r cache buffers records heap_used heap_free < <(engine "${storage_addrs[$i]}")
    rss=$(($(rss_kib "${storage_pids[$i]}") >> 10))
    disk=$(du -sm "$work/storage$((i + 1))" | cut -f1)
    line+=" | $rss ($cache + $buffers; $heap_used / $heap_free), $records, $disk"
    echo "$t $i $rss $cache $buffers $records $disk $heap_used $heap_free" >>"$samples"
  done
  echo "$line"
  [ "$t" -lt "$SOAK" ] && sleep "$INTERVAL"
done
wait "$bench_pid"
grep -E '^(op|get|set) ' "$work/bench.txt"

python3 - "$samples" "$WARMUP" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1])]
warmup = int(sys.argv[2])
after_warmup = lambda samples: next(s for s in samples if s[0] >= warmup)
frontend = [(int(r[0]), int(r[2])) for r in rows if r[1] == "fe"]
first, last = after_warmup(frontend), frontend[-1]
print(f"frontend, {first[0]} s -> {last[0]} s: RSS {first[1]} -> {last[1]} MiB")
nodes = [[list(map(int, (r[0], *r[2:]))) for r in rows if r[1] == str(i)] for i in range(3)]
for i, samples in enumerate(nodes):
    first = after_warmup(samples)
    last = samples[-1]
    beyond_cache = lambda s: s[1] - s[2]
    print(f"storage {i + 1}, {first[0]} s -> {last[0]} s: records {first[4]} -> {last[4]}, disk {first[5]} -> {last[5]} MiB, "
          f"RSS {first[1]} -> {last[1]} MiB, of which beyond the block cache {beyond_cache(first)} -> {beyond_cache(last)} MiB; "
          f"heap in use {first[6]} -> {last[6]} MiB, free {first[7]} -> {last[7]} MiB")
PY
