#!/usr/bin/env bash
# Paired runs of storage settings when the data outgrows the block cache: for each round and
# each setting in turn, a fresh local release cluster (1 frontend, 3 storage nodes, K = 3,
# fsync before every acknowledgement) is loaded with KEYS keys and measured (SET, then GET,
# uniform keys), so the settings see the same machine within minutes of each other. A setting
# is a name and environment assignments for every process, e.g. VF_ENGINE_NICENESS=0. The
# cache is small (CACHE_MIB per node) so that a quick load is already many times the cache.
#
#   bench/tune.sh "niceness-0 VF_ENGINE_NICENESS=0" "niceness-10 VF_ENGINE_NICENESS=10"
#   ROUNDS=3 KEYS=2000000 SMALL=1 bench/tune.sh "a" "b VF_MEMTABLE_MIB=32"
#
# Each line gives the setting's SET and GET throughput, p99 and max, storage node 1's CPU
# seconds (all threads) in each, and from its engine counters the compactions, write stalls
# (engine writes of 10 ms or more) and data blocks found in the cache or read from the file.
# PAUSE=seconds waits between the SETs and the GETs (the GETs then do not share the machine
# with the compactions the SETs left). SMALL=1 also measures 10,000 keys first. THREADS=1 also splits the CPU seconds of storage node 1
# and of the frontend in each run by thread name (request workers, flushes, compactions...).
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${KEYS:-1000000}
ROUNDS=${ROUNDS:-2}
SET_DURATION=${SET_DURATION:-30s}
GET_DURATION=${GET_DURATION:-20s}
BASE_PORT=${BASE_PORT:-19950}
export VF_CACHE_MIB=${CACHE_MIB:-16}
[ $# -ge 1 ] || { sed -n '2,15p' "$0" >&2; exit 2; }

cargo build --release --quiet -p controller -p storage -p frontend -p bench

measure() { # round, setting
  local round=$1 name envs
  read -r name envs <<<"$2"
  for assignment in $envs; do export "${assignment?}"; done
  source bench/cluster.sh
  start_velourfog "$BASE_PORT"
  b() { "$BIN/bench" --frontends "http://$frontend_addr" --concurrency 64 --value-size 100 --quiet "$@"; }
  row() { awk -v op="$1" '$1 == op {printf "%7d/s p99 %6.2f max %6.1f ms", $3, $5, $7}'; }
  threads() { echo "$(thread_cpu "${storage_pids[0]}")|$(thread_cpu "$frontend_pid")"; }
  phase_by_thread() { # phase, threads before, threads after
    echo "  CPU seconds by thread in the $1:"
    echo "    node 1: $(thread_cpu_delta "${2%%|*}" "${3%%|*}")"
    echo "    frontend: $(thread_cpu_delta "${2#*|}" "${3#*|}")"
  }
  by_thread() { # threads before the SETs, after them, after the GETs (printed with THREADS=1)
    [ -n "${THREADS:-}" ] || return 0
    phase_by_thread SETs "$1" "$2"
    phase_by_thread GETs "$2" "$3"
  }
  local t0 t1 t2 t3 t4 t5
  if [ -n "${SMALL:-}" ]; then
    local small_set small_get
    t0=$(threads)
    small_set=$(b --keys 10000 --duration "$SET_DURATION" --read-ratio 0 | row set)
    t1=$(threads)
    small_get=$(b --keys 10000 --duration "$GET_DURATION" --read-ratio 1 --preload | row get)
    t2=$(threads)
    echo "round $round $name, 10,000 keys: set $small_set, get $small_get"
    by_thread "$t0" "$t1" "$t2"
  fi
  b --keys "$KEYS" --preload --duration 1s --read-ratio 1 >/dev/null
  local set get engine cpu0 cpu1 cpu2
  cpu0=$(cpu_seconds "${storage_pids[0]}") t3=$(threads)
  set=$(b --keys "$KEYS" --duration "$SET_DURATION" --read-ratio 0 | row set)
  cpu1=$(cpu_seconds "${storage_pids[0]}") t4=$(threads)
  local cpu1g=$cpu1
  if [ "${PAUSE:-0}" -gt 0 ]; then # the engine catches up on its flushes and compactions
    sleep "$PAUSE"
    cpu1g=$(cpu_seconds "${storage_pids[0]}") t4=$(threads)
  fi
  get=$(b --keys "$KEYS" --duration "$GET_DURATION" --read-ratio 1 | row get)
  cpu2=$(cpu_seconds "${storage_pids[0]}") t5=$(threads)
  engine=$(curl -fsS "http://${storage_addrs[0]}/v1/stats" | python3 -c '
import json, sys
e = json.load(sys.stdin)["engine"]["lsm"]
done, seconds, stalls = e["compactions_done"], e["compaction_ms"] / 1000, e["write_stalls"]
cached, read = e["data_blocks"]["cached"], e["data_blocks"]["read"]
print(f"compactions {done} ({seconds:.1f} s), stalls {stalls}, data blocks {cached / max(1, cached + read):.0%} cached")')
  echo "round $round $name, $KEYS keys: set $set, get $get; node 1 CPU $(python3 -c "print(f'{$cpu1 - $cpu0:.1f} s in the SETs, {$cpu2 - $cpu1g:.1f} s in the GETs')"); $engine; $(du -sm "$work/storage1" | cut -f1) MiB"
  by_thread "$t3" "$t4" "$t5"
}

for round in $(seq "$ROUNDS"); do
  for setting in "$@"; do
    # A subshell per run: its cluster is stopped and its directory removed when it ends.
    (measure "$round" "$setting")
  done
done
