#!/usr/bin/env bash
# Runs the README quick start for real: ./runlocal.sh, a set and a get with curl; then the
# elastic walk-through (a 4th storage node joins by itself, `velourfog node remove --wait`
# drains one of the first three, the key still reads back); then SIGTERM, and checks that no
# process the script started outlives it. Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
out="$dir/runlocal.out"
VF_DIR="$dir/data" VF_CONTROLLER_PORT=17400 VF_STORAGE_PORT=17401 VF_FRONTEND_PORT=17500 \
  ./runlocal.sh >"$out" 2>&1 &
script=$!
for _ in $(seq 600); do
  grep -q "Velour Fog is running" "$out" && break
  kill -0 "$script" 2>/dev/null || { cat "$out"; echo "smoke: runlocal.sh exited early" >&2; exit 1; }
  sleep 0.5
done
grep -q "Velour Fog is running" "$out" || { cat "$out"; echo "smoke: cluster not ready" >&2; kill "$script"; exit 1; }
children=$(pgrep -P "$script" | tr '\n' ' ')
curl -fsS 'http://127.0.0.1:17500/set/?key=greeting&value=hello' >/dev/null
got=$(curl -fsS 'http://127.0.0.1:17501/get/?key=greeting')
[ "$got" = hello ] || { echo "smoke: expected hello, got '$got'" >&2; kill "$script"; exit 1; }

# The secret runlocal.sh created: admin commands and new nodes need it; without it, 401.
export VF_CLUSTER_SECRET_FILE="$dir/data/cluster.secret"
[ -s "$VF_CLUSTER_SECRET_FILE" ] || { echo "smoke: runlocal.sh made no cluster secret" >&2; kill "$script"; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{"replication":1}' http://127.0.0.1:17400/v1/admin/replication)
[ "$code" = 401 ] || { echo "smoke: an admin call without the secret answered $code, not 401" >&2; kill "$script"; exit 1; }
vf() { target/release/velourfog --controller 127.0.0.1:17400 "$@"; }
target/release/storage 127.0.0.1:17400 127.0.0.1:17410 --data-dir "$dir/d4" --worker-threads 1 >"$dir/d4.log" 2>&1 &
fourth=$!
for _ in $(seq 100); do
  vf --json status | grep -q '"addr":"127.0.0.1:17410"' && break
  sleep 0.2
done
vf status
timeout 120 target/release/velourfog --controller 127.0.0.1:17400 node remove 127.0.0.1:17401 --wait || {
  echo "smoke: draining 127.0.0.1:17401 failed" >&2; vf status; kill "$fourth" "$script"; exit 1; }
vf status
got=$(curl -fsS 'http://127.0.0.1:17500/get/?key=greeting')
[ "$got" = hello ] || { echo "smoke: after the drain, expected hello, got '$got'" >&2; kill "$fourth" "$script"; exit 1; }
kill -TERM "$fourth"
wait "$fourth" || true

kill -TERM "$script"
wait "$script" || true
sleep 0.5
for pid in $children; do
  if kill -0 "$pid" 2>/dev/null; then
    echo "smoke: process $pid outlived runlocal.sh" >&2
    kill -KILL $children 2>/dev/null || true
    exit 1
  fi
done
cat "$out"
echo "smoke: runlocal.sh quick start works and stops cleanly (children: $children)"
