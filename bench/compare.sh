#!/usr/bin/env bash
# Side by side, on this machine, in one run: Velour Fog (1 frontend, 3 storage nodes, K = 3,
# durable writes) against Redis (redis-benchmark) and a single-node etcd (v2 HTTP API, driven by
# our bench tool), at the same concurrency and value size. All three run at once (the idle ones
# cost nothing) and are measured in ROUNDS alternating rounds, so a slow minute on a shared
# machine lands on every system alike; the table gives each system's median over the rounds and
# the ratios of those medians, then every round's own ratios. Also the 24 MiB value timings and
# memory before and after the load. Both clients drive the load from one thread
# (redis-benchmark's default and our bench tool's). Installs what it needs from apt.
#
#   bench/compare.sh                      # defaults below
#   DURATION=30s CONCURRENCY=50 ROUNDS=5 bench/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-50}
VALUE_SIZE=${VALUE_SIZE:-100}
KEYS=${KEYS:-10000}
REDIS_REQUESTS=${REDIS_REQUESTS:-300000}
ROUNDS=${ROUNDS:-3}
BASE_PORT=${BASE_PORT:-18700}

install_missing() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v redis-benchmark >/dev/null || missing+=(redis-tools)
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v curl >/dev/null || missing+=(curl)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} from apt"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

source bench/cluster.sh

install_missing
say "building release binaries"
cargo build --release --quiet -p controller -p storage -p frontend -p bench

# --- Velour Fog: 1 frontend, 3 storage nodes, K = 3, fsync before every acknowledgement.
start_velourfog "$BASE_PORT"

head -c $((24 << 20)) /dev/urandom >"$work/big"
big_values() { # label: five sets and gets of the 24 MiB value, times into big_set_$label/big_get_$label
  local set_times=() get_times=()
  for i in 1 2 3 4 5; do
    set_times+=("$(curl -fsS -o /dev/null -w '%{time_total}' -X POST --data-binary @"$work/big" "http://$frontend_addr/set/?key=big-$1-$i")")
    get_times+=("$(curl -fsS -o "$work/big.out" -w '%{time_total}' "http://$frontend_addr/get/?key=big-$1-$i")")
    cmp -s "$work/big" "$work/big.out" || { echo "24 MiB value came back different" >&2; exit 1; }
  done
  printf -v "big_set_$1" '%s' "${set_times[*]}"
  printf -v "big_get_$1" '%s' "${get_times[*]}"
}
say "velourfog: 24 MiB value, idle cluster"
big_values idle
frontend_rss_before=$(rss_kib "$frontend_pid")

# --- etcd, one node, v2 API, default durability (fsync of its WAL on every commit).
etcd_port=$((BASE_PORT + 79))
start etcd etcd --name bench --data-dir "$work/etcd" --enable-v2=true \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
  --initial-cluster "bench=http://127.0.0.1:$((etcd_port + 1))"
wait_http "http://127.0.0.1:$etcd_port/health"

# --- Redis, append-only file fsynced every second (its usual durable setting).
redis_port=$((BASE_PORT + 90))
mkdir -p "$work/redis"
start redis redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec --dir "$work/redis"
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

common=(--duration "$DURATION" --concurrency "$CONCURRENCY" --keys "$KEYS" --value-size "$VALUE_SIZE" --quiet)
for round in $(seq "$ROUNDS"); do
  say "round $round of $ROUNDS: velourfog set, get"
  "$BIN/bench" --frontends "http://$frontend_addr" "${common[@]}" --read-ratio 0 --label velourfog-set --json "$work/vf-set-$round.json" --plot "$work/vf-set.svg" >&2
  "$BIN/bench" --frontends "http://$frontend_addr" "${common[@]}" --read-ratio 1 --preload --label velourfog-get --json "$work/vf-get-$round.json" --plot "$work/vf-get.svg" >&2
  if [ "$round" = 1 ]; then
    say "velourfog: 24 MiB value, right after the load (the engine still flushing and compacting it)"
    big_values after
  fi
  say "round $round of $ROUNDS: etcd put, get"
  "$BIN/bench" --api etcd-v2 --frontends "http://127.0.0.1:$etcd_port" "${common[@]}" --read-ratio 0 --label etcd-put --json "$work/etcd-set-$round.json" >&2
  "$BIN/bench" --api etcd-v2 --frontends "http://127.0.0.1:$etcd_port" "${common[@]}" --read-ratio 1 --preload --label etcd-get --json "$work/etcd-get-$round.json" >&2
  say "round $round of $ROUNDS: redis set, get"
  redis-benchmark -p "$redis_port" -c "$CONCURRENCY" -n "$REDIS_REQUESTS" -d "$VALUE_SIZE" -r "$KEYS" -t set,get --csv >"$work/redis-$round.csv"
done
frontend_rss_after=$(rss_kib "$frontend_pid")
storage_rss=$(for pid in "${storage_pids[@]}"; do rss_kib "$pid"; done | paste -sd/)

python3 - "$work" "$ROUNDS" "$node_workers" "$frontend_rss_before" "$frontend_rss_after" "$storage_rss" "$big_set_idle" "$big_get_idle" "$big_set_after" "$big_get_after" <<'PY'
import csv, json, os, platform, sys
work, rounds, node_workers, fe_before, fe_after, storage_rss, big_set_idle, big_get_idle, big_set_after, big_get_after = sys.argv[1:11]
rounds = range(1, int(rounds) + 1)
load = lambda name: json.load(open(os.path.join(work, name)))
median = lambda xs: sorted(xs)[len(xs) // 2] if len(xs) % 2 else sum(sorted(xs)[len(xs) // 2 - 1:len(xs) // 2 + 1]) / 2
# runs[system][op] = one (ops/s, p99 ms) per round
runs = {"velourfog": {}, "etcd": {}, "redis": {}}
for op in ("set", "get"):
    for system, prefix in (("velourfog", "vf"), ("etcd", "etcd")):
        results = [load(f"{prefix}-{op}-{n}.json")[op] for n in rounds]
        runs[system][op] = [(r["ops_per_sec"], r["latency"]["p99_ms"]) for r in results]
    rows = [{row["test"].upper(): row for row in csv.DictReader(open(os.path.join(work, f"redis-{n}.csv")))} for n in rounds]
    runs["redis"][op] = [(float(r[op.upper()]["rps"]), float(r[op.upper()]["p99_latency_ms"])) for r in rows]
errors = {f"{prefix} {op} round {n}": e for prefix in ("vf", "etcd") for op in ("set", "get") for n in rounds
          if (e := load(f"{prefix}-{op}-{n}.json")[op]["errors"])}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
print(f"machine: {os.cpu_count()} cores ({cpu}), {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') >> 30} GiB, {platform.system()} {platform.release()}")
cfg = load("vf-get-1.json")
print(f"load: concurrency {cfg['concurrency']}, {cfg['value_size']}-byte values, {cfg['keys']} keys, {cfg['seconds']:.0f} s per run,"
      f" {len(rounds)} alternating rounds; all on this machine")
print(f"velourfog: 1 frontend and 3 storage nodes (K = 3), {node_workers} worker thread(s) each; both clients (bench, redis-benchmark) one thread")
print()
print(f"median of the rounds:")
print(f"{'op':<4} {'velourfog ops/s':>16} {'p99 ms':>7} {'etcd ops/s':>11} {'p99 ms':>7} {'redis ops/s':>12} {'p99 ms':>7} {'vf/etcd':>8} {'vf/redis':>9}")
for op in ("get", "set"):
    (vr, vp), (er, ep), (rr, rp) = ([median([run[i] for run in runs[s][op]]) for i in (0, 1)] for s in ("velourfog", "etcd", "redis"))
    print(f"{op:<4} {vr:>16.0f} {vp:>7.2f} {er:>11.0f} {ep:>7.2f} {rr:>12.0f} {rp:>7.2f} {vr / er:>8.2f} {vr / rr:>9.2f}")
print()
print("each round (ops/s velourfog / etcd / redis, then vf/etcd and vf/redis):")
for n in rounds:
    cells = []
    for op in ("get", "set"):
        v, e, r = (runs[s][op][n - 1][0] for s in ("velourfog", "etcd", "redis"))
        cells.append(f"{op} {v:.0f} / {e:.0f} / {r:.0f} ({v / e:.2f}, {v / r:.2f})")
    print(f"  round {n}: " + ";  ".join(cells))
if errors:
    print(f"errors: {errors}")
med = lambda xs: sorted(float(x) for x in xs.split())[len(xs.split()) // 2]
print()
print(f"24 MiB value through the frontend (median of 5): idle cluster: set {med(big_set_idle):.3f} s, get {med(big_get_idle):.3f} s;"
      f" right after the load: set {med(big_set_after):.3f} s, get {med(big_get_after):.3f} s")
print(f"memory: frontend RSS {int(fe_before) >> 10} MiB before the load, {int(fe_after) >> 10} MiB after; storage RSS {'/'.join(str(int(x) >> 10) for x in storage_rss.split('/'))} MiB")
print("durability: velourfog fsyncs on every live replica (3; at least a quorum of 2) before acknowledging; etcd fsyncs its WAL per commit; redis fsyncs its AOF every second")
PY
