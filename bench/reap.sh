#!/usr/bin/env bash
# Disk space before and after deleting every key: a local release cluster (1 frontend, 3
# storage nodes, K = 3) is loaded with KEYS keys of VALUE_SIZE bytes, every key is deleted,
# and each node's data directory is measured until the tombstones are reaped (after GRACE,
# `--tombstone-grace`) and the storage engine has compacted what they and the values took.
#
#   bench/reap.sh                          # 1 M keys of 100 bytes, grace 30 s
#   KEYS=200000 GRACE=10s bench/reap.sh
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${KEYS:-1000000}
VALUE_SIZE=${VALUE_SIZE:-100}
GRACE=${GRACE:-30s}
WATCH=${WATCH:-300}
BASE_PORT=${BASE_PORT:-18900}

source bench/cluster.sh

say "building release binaries"
cargo build --release --quiet -p controller -p storage -p frontend -p bench
export VF_TOMBSTONE_GRACE=$GRACE
start_velourfog "$BASE_PORT"

disk() { # "MiB MiB MiB": each storage node's data directory
  local out=""
  for i in 1 2 3; do out+="$(du -sm "$work/storage$i" | cut -f1) "; done
  echo "$out"
}
stat_of() { # storage address, python expression over the stats JSON
  curl -fsS "http://$1/v1/stats" | python3 -c "import json, sys; s = json.load(sys.stdin); print($2)"
}
reaped() { # tombstones reaped by all three nodes
  local total=0
  for addr in "${storage_addrs[@]}"; do total=$((total + $(stat_of "$addr" 's["repair"]["tombstones_reaped"]'))); done
  echo "$total"
}
records() {
  local out=""
  for addr in "${storage_addrs[@]}"; do out+="$(stat_of "$addr" 's["engine"]["approximate_records"]') "; done
  echo "$out"
}

say "writing $KEYS keys of $VALUE_SIZE bytes"
started=$(date +%s)
"$BIN/bench" --frontends "http://$frontend_addr" --preload --keys "$KEYS" --value-size "$VALUE_SIZE" \
  --duration 1s --read-ratio 1 --quiet >/dev/null
sleep 5
echo "written in $(($(date +%s) - started)) s; disk MiB per node: $(disk); records: $(records)"
before=$(disk)

say "deleting every key"
"$BIN/bench" --frontends "http://$frontend_addr" --keys "$KEYS" --duration 1s --read-ratio 1 \
  --delete-all --quiet | grep deleted
deleted_at=$(date +%s)
echo "right after the deletes: disk MiB per node: $(disk); records: $(records)"

say "watching for ${WATCH}s: tombstones reaped (all nodes), disk, records"
printf '%6s %12s  %-20s %s\n' "t s" "reaped" "disk MiB per node" "records per node"
for ((t = 0; t <= WATCH; t += 15)); do
  printf '%6d %12d  %-20s %s\n' "$t" "$(reaped)" "$(disk)" "$(records)"
  [ "$t" -lt "$WATCH" ] && sleep 15
done
echo "before deleting: $before MiB; $(( $(date +%s) - deleted_at )) s after: $(disk) MiB"
grep -h "compacted the store\|reaping tombstones failed\|compaction after reaping" "$work"/storage*.log || echo "no compaction logged"
echo "what node 1's data directory holds (KiB):"
du -ak "$work/storage1" | sort -n | tail -12
