# Shared by bench/compare.sh, soak.sh, scale.sh and tune.sh (source it, do not run it): a
# temporary work directory, processes that are killed on exit, and a local release cluster.
#
# After `start_velourfog BASE_PORT`: $frontend_addr, $frontend_pid, ${storage_pids[@]} and
# ${storage_addrs[@]} describe a running cluster of 1 controller, 3 storage nodes (K = 3,
# fsync before every acknowledgement) and 1 frontend, with leases granted and a cluster secret
# (exported as VF_CLUSTER_SECRET_FILE, so velourfog calls carry it). The four nodes and
# the load generator share this machine's cores, so each node gets a quarter of them as worker
# threads (at least one), as `./runlocal.sh` does; WORKER_THREADS overrides. $node_workers says
# how many each got.

BIN=target/release
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '== %s\n' "$*" >&2; }

start() { # log name, command...
  local name=$1
  shift
  "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
}

wait_http() { # url
  for _ in $(seq 300); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "not ready: $1" >&2
  return 1
}

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# CPU seconds (user + system, all threads) process $1 has used so far.
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$1/stat"; }
# CPU seconds process $1's threads have used so far, summed by thread name: "name=seconds ...".
thread_cpu() {
  for task in /proc/"$1"/task/*; do
    # The name is in parentheses and may hold spaces; utime and stime follow it.
    echo "$(tr ' ' '_' <"$task/comm") $(sed 's/.*) //' "$task/stat" | awk '{print $12 + $13}')"
  done 2>/dev/null | awk -v hz="$(getconf CLK_TCK)" '{sub(/[0-9]+$/, "", $1); s[$1] += $2}
    END {for (n in s) printf "%s=%.1f ", n, s[n] / hz}'
}
# The change between two thread_cpu readings, largest first: "name +seconds, ...".
thread_cpu_delta() {
  python3 -c '
import sys
before = dict(w.split("=") for w in sys.argv[1].split())
after = dict(w.split("=") for w in sys.argv[2].split())
d = {n: float(s) - float(before.get(n, 0)) for n, s in after.items()}
print(", ".join(f"{n} +{v:.1f}" for n, v in sorted(d.items(), key=lambda x: -x[1]) if v >= 0.1))' "$1" "$2"
}

start_velourfog() { # base port
  local base=$1 addr
  # A cluster secret, as ./runlocal.sh sets one: the numbers include checking it.
  (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/cluster.secret")
  export VF_CLUSTER_SECRET_FILE="$work/cluster.secret"
  node_workers=${WORKER_THREADS:-$(( $(nproc) / 4 ))}
  [ "$node_workers" -ge 1 ] || node_workers=1
  frontend_addr="127.0.0.1:$((base + 10))"
  start controller "$BIN/controller" "$base" 3 3 --host 127.0.0.1 --state-dir "$work/controller"
  storage_pids=() storage_addrs=()
  for i in 1 2 3; do
    addr="127.0.0.1:$((base + i))"
    start "storage$i" "$BIN/storage" "127.0.0.1:$base" "$addr" --listen "$addr" --data-dir "$work/storage$i" --sync always --worker-threads "$node_workers"
    storage_pids+=("${pids[-1]}")
    storage_addrs+=("$addr")
  done
  start frontend "$BIN/frontend" "127.0.0.1:$base" "$frontend_addr" --listen "$frontend_addr" --worker-threads "$node_workers"
  frontend_pid=${pids[-1]}
  wait_http "http://$frontend_addr/health" || { for f in "$work"/*.log; do echo "--- $f" >&2; tail -n 5 "$f" >&2; done; return 1; }
  sleep 1 # leases granted
}
