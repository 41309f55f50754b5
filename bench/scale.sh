#!/usr/bin/env bash
# Speed when the data outgrows memory, in one run on one cluster: a local release cluster
# (1 frontend, 3 storage nodes, K = 3, every write fsynced, 64 MiB block cache per node) is
# measured over 10,000 keys, then loaded with KEYS keys (by default 5 M of 100 bytes: each node
# holds them all, over 10× its block cache and over 4× the three caches together) and measured
# again, uniform and Zipfian. The table gives each run's throughput and tail latency and its
# ratio to the 10,000-key run of the same operation. Then storage node 3 is restarted (SIGTERM,
# and SIGKILL) and timed until it serves again, and killed for ABSENCE seconds under a write
# load and timed until it has caught up.
#
#   bench/scale.sh                                  # about 20 minutes
#   KEYS=1000000 SET_DURATION=60s bench/scale.sh    # quicker, smaller
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${KEYS:-5000000}
ABSENCE=${ABSENCE:-60}
SMALL_KEYS=${SMALL_KEYS:-10000}
DURATION=${DURATION:-60s}
SET_DURATION=${SET_DURATION:-300s}
CONCURRENCY=${CONCURRENCY:-64}
VALUE_SIZE=${VALUE_SIZE:-100}
BASE_PORT=${BASE_PORT:-18950}

source bench/cluster.sh

say "building release binaries"
cargo build --release --quiet -p controller -p storage -p frontend -p bench
start_velourfog "$BASE_PORT"

run() { # name, extra bench flags...
  local name=$1
  shift
  say "$name"
  "$BIN/bench" --frontends "http://$frontend_addr" --concurrency "$CONCURRENCY" --value-size "$VALUE_SIZE" \
    --quiet --label "$name" --json "$work/$name.json" "$@" >&2
}
disk() { local out=""; for i in 1 2 3; do out+="$(du -sm "$work/storage$i" | cut -f1) "; done; echo "$out"; }

run small-set --keys "$SMALL_KEYS" --duration "$DURATION" --read-ratio 0
run small-get --keys "$SMALL_KEYS" --duration "$DURATION" --read-ratio 1 --preload
say "loading $KEYS keys"
started=$(date +%s)
"$BIN/bench" --frontends "http://$frontend_addr" --concurrency "$CONCURRENCY" --value-size "$VALUE_SIZE" \
  --keys "$KEYS" --preload --duration 1s --read-ratio 1 --quiet >/dev/null
load_seconds=$(($(date +%s) - started))
disk_after_load=$(disk)
run large-set --keys "$KEYS" --duration "$SET_DURATION" --read-ratio 0
run large-get --keys "$KEYS" --duration "$DURATION" --read-ratio 1
run large-set-zipf --keys "$KEYS" --duration "$DURATION" --read-ratio 0 --distribution zipf
run large-get-zipf --keys "$KEYS" --duration "$DURATION" --read-ratio 1 --distribution zipf
stats=$(for addr in "${storage_addrs[@]}"; do curl -fsS "http://$addr/v1/stats"; echo; done)
rss=$(for pid in "${storage_pids[@]}"; do echo -n "$(($(rss_kib "$pid") >> 10)) "; done)
echo "storage nodes' resident memory after the runs: $rss MiB; frontend: $(($(rss_kib "$frontend_pid") >> 10)) MiB"

# --- Restarts of storage node 3: started again with the flags cluster.sh gave it.
node3=${storage_addrs[2]}
serving_node3() { # whether node 3 says it is up and serving reads
  curl -fsS "http://$node3/v1/stats" 2>/dev/null |
    python3 -c "import json, sys; s = json.load(sys.stdin); sys.exit(0 if s['state'] == 'up' and s['serving_reads'] else 1)"
}
restart_node3() { # signal [seconds away under writes]; sets $elapsed: seconds from the start until it serves
  local pid=${storage_pids[2]}
  kill -"$1" "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  [ -n "${2:-}" ] && { say "node 3 away for ${2}s under writes"; "$BIN/bench" --frontends "http://$frontend_addr" \
    --concurrency "$CONCURRENCY" --value-size "$VALUE_SIZE" --keys "$KEYS" --duration "${2}s" --read-ratio 0 --quiet >/dev/null; }
  local started
  started=$(date +%s.%N)
  start storage3b "$BIN/storage" "127.0.0.1:$BASE_PORT" "$node3" --listen "$node3" --data-dir "$work/storage3" --sync always --worker-threads "$node_workers"
  storage_pids[2]=${pids[-1]}
  # Up in the node's own view: the controller said so (after a catch-up if it had marked the
  # node down) and its read lease holds.
  until serving_node3; do sleep 0.05; done
  elapsed=$(python3 -c "import time; print(f'{time.time() - $started:.2f}')")
  # After a crash the digests are rebuilt while it serves: timed too.
  until curl -fsS "http://$node3/v1/stats" | grep -q '"digests_whole":true'; do sleep 0.05; done
  whole=$(python3 -c "import time; print(f'{time.time() - $started:.2f}')")
  echo "node 3 serving ${elapsed} s after its start, digests whole after ${whole} s" >&2
  grep -h "digests restored\|digests rebuilt\|scanned every record\|caught up in" "$work/storage3b.log" | tail -n 2 >&2
}
say "restarting node 3 (SIGTERM)"; restart_node3 TERM; clean_restart=$elapsed
say "restarting node 3 (SIGKILL)"; restart_node3 KILL; crash_restart=$elapsed
restart_node3 KILL "$ABSENCE"; catch_up=$elapsed
pulled=$(curl -fsS "http://$node3/v1/stats" | python3 -c "import json, sys; r = json.load(sys.stdin)['repair']; print(r['records_pulled'], r['bytes_moved'])")
echo "restart of node 3 (about $KEYS records): after SIGTERM ${clean_restart} s, after SIGKILL ${crash_restart} s to up"
echo "catch-up after ${ABSENCE} s away under writes: ${catch_up} s from its start to up; records pulled and repair bytes since: $pulled"

python3 - "$work" "$KEYS" "$load_seconds" "$disk_after_load" "$(disk)" "$node_workers" "$stats" <<'PY'
import json, os, sys
work, keys, load_seconds, disk_load, disk_end, workers, stats = sys.argv[1:8]
load = lambda name: json.load(open(os.path.join(work, f"{name}.json")))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"machine: {os.cpu_count()} cores ({cpu}); 1 frontend, 3 storage nodes (K = 3), {workers} worker thread(s) each")
print(f"loaded {int(keys):,} keys in {load_seconds} s; data directories after loading: {disk_load.split()} MiB, at the end: {disk_end.split()} MiB")
engines = [json.loads(line)["engine"] for line in stats.strip().splitlines()]
print("engine at the end (per node): records ~" + ", ".join(f"{e['approximate_records']:,}" for e in engines)
      + "; cache " + ", ".join(f"{e['cache_bytes'] >> 20}/{e['cache_capacity_bytes'] >> 20} MiB" for e in engines))
for i, e in enumerate(engines, 1):
    lsm = e["lsm"]
    blocks = {kind: lsm[f"{kind}_blocks"] for kind in ("data", "index", "filter")}
    print(f"  node {i}: {lsm['tables']} tables, {lsm['compactions_done']} compactions ({lsm['compaction_ms'] / 1000:.0f} s),"
          f" {lsm['write_stalls']} write stalls; blocks found in the cache: "
          + ", ".join(f"{kind} {b['cached'] / max(1, b['cached'] + b['read']):.0%} of {b['cached'] + b['read']:,}" for kind, b in blocks.items())
          + f"; filter skips {lsm['filter_skips']:,}")
print()
print(f"{'data set':<26} {'op':<4} {'ops/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>9} {'max ms':>8} {'errors':>7} {'vs 10k':>7} {'s':>5}")
base = {}
for name, label in (("small-set", "10,000 keys"), ("small-get", "10,000 keys"), ("large-set", f"{int(keys):,} keys"),
                    ("large-get", f"{int(keys):,} keys"), ("large-set-zipf", f"{int(keys):,} keys, zipf"),
                    ("large-get-zipf", f"{int(keys):,} keys, zipf")):
    report = load(name)
    op = "set" if "set" in name else "get"
    r = report[op]
    lat = r["latency"]
    base.setdefault(op, r["ops_per_sec"])
    print(f"{label:<26} {op:<4} {r['ops_per_sec']:>9.0f} {lat['p50_ms']:>7.2f} {lat['p99_ms']:>7.2f} {lat['p99.9_ms']:>9.2f}"
          f" {lat['max_ms']:>8.1f} {r['errors']:>7} {r['ops_per_sec'] / base[op]:>7.2f} {report['seconds']:>5.0f}")
PY
