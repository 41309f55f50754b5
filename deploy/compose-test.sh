#!/usr/bin/env bash
# Tests deploy/compose.yaml for real: builds the images without a registry, starts the stack
# (controller, 3 storage nodes, 2 frontends, nginx), uses it through nginx, restarts it from
# its volumes, and tears it all down.
#
#   sudo deploy/compose-test.sh              # cargo build --release first
#   sudo deploy/compose-test.sh --no-build   # binaries already in target/release
#
# Needs root (dockerd, debootstrap). Installs docker.io, docker-compose and debootstrap with
# apt-get if missing. If no docker daemon answers, it starts one for the test, with
# --iptables=false --ip-forward=false --bridge=none (the host's firewall and forwarding are left
# alone, and containers have no route out: they only talk to each other and to the published
# port on 127.0.0.1), and stops it, by pid, at the end. nginx is published on
# 127.0.0.1:$COMPOSE_TEST_PORT (default 17880).
#
# Checks: every container becomes healthy (the image's HEALTHCHECK); set/get/delete, a binary
# key and an 8 MiB value (cmp) through nginx; `velourfog status` in the controller container
# shows 3 storage nodes up; root file systems are read-only; every node loaded the secret
# without a warning (it is mode 600, owned by the image's user); with frontend1 killed,
# 50 sets and gets through nginx still succeed; `down` then `up` (volumes kept) and every value
# reads back; finally `down -v` removes containers, network and volumes.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "compose-test.sh: $*" >&2; exit 2; }
BUILD_ARGS=()
case "${1:-}" in
  --no-build) BUILD_ARGS=(--no-build) ;;
  "") ;;
  -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument '$1' (see --help)" ;;
esac
PORT=${COMPOSE_TEST_PORT:-17880}
[[ "$PORT" =~ ^[0-9]+$ ]] && [ "$PORT" -gt 0 ] && [ "$PORT" -lt 65536 ] || die "COMPOSE_TEST_PORT must be a port"
[ "$(id -u)" = 0 ] || die "needs root (it starts dockerd and runs debootstrap)"
command -v curl >/dev/null || die "needs curl"

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} with apt-get..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
    die "could not install ${missing[*]}"
fi
if command -v docker-compose >/dev/null; then compose_cmd=(docker-compose); else compose_cmd=(docker compose); fi

work=$(mktemp -d)
dockerd_pid=
project=vf-compose-test
compose() { VF_COMPOSE_SECRET_FILE="$work/cluster.secret" VF_LB_PORT=$PORT "${compose_cmd[@]}" -p "$project" -f deploy/compose.yaml "$@"; }
finish() {
  local status=$?
  trap - EXIT INT TERM
  if [ "$status" != 0 ] && [ -e "$work/cluster.secret" ] && docker info >/dev/null 2>&1; then
    echo "--- compose ps and the last log lines of each service:" >&2
    compose ps >&2 || true
    compose logs --tail 15 --no-color >&2 || true
  fi
  if [ -e "$work/cluster.secret" ] && docker info >/dev/null 2>&1; then
    echo "== tearing down (compose down -v)"
    compose down -v --remove-orphans >/dev/null 2>&1 || echo "compose-test.sh: compose down failed" >&2
    left=$(docker ps -aq --filter "label=com.docker.compose.project=$project")
    [ -z "$left" ] || { echo "compose-test.sh: containers left: $left" >&2; status=1; }
  fi
  if [ -n "$dockerd_pid" ]; then
    echo "== stopping the dockerd this test started (pid $dockerd_pid)"
    kill -TERM "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$dockerd_pid" 2>/dev/null; then
      echo "compose-test.sh: dockerd did not stop in 30 s; killing it" >&2
      kill -KILL "$dockerd_pid" 2>/dev/null || true
    fi
    wait "$dockerd_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
  [ "$status" = 0 ] && echo "compose-test.sh: all checks passed" || echo "compose-test.sh: FAILED" >&2
  exit "$status"
}
trap finish EXIT
trap 'exit 130' INT TERM
fail() { echo "compose-test.sh: FAIL: $*" >&2; exit 1; }
pass() { echo "  ok: $*"; }

if ! docker info >/dev/null 2>&1; then
  echo "== starting dockerd (log: $work/dockerd.log)"
  dockerd --iptables=false --ip-forward=false --bridge=none --pidfile "$work/dockerd.pid" \
    >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { tail -20 "$work/dockerd.log" >&2; fail "dockerd did not come up in 30 s"; }
fi
echo "docker $(docker version -f '{{.Server.Version}}'), $("${compose_cmd[@]}" version --short 2>/dev/null || "${compose_cmd[@]}" version | head -1)"

echo "== images (deploy/build-image.sh ${BUILD_ARGS[*]})"
deploy/build-image.sh "${BUILD_ARGS[@]}"

(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/cluster.secret")
chown 10001:10001 "$work/cluster.secret"
compose config -q || fail "compose config rejects deploy/compose.yaml"

echo "== compose up"
compose up -d
LB="http://127.0.0.1:$PORT"
wait_healthy() { # seconds
  local deadline=$((SECONDS + $1)) states healthy
  while :; do
    states=$(docker ps -aq --filter "label=com.docker.compose.project=$project" | xargs -r docker inspect \
      -f '{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}')
    healthy=$(grep -c ' healthy$' <<<"$states" || true)
    if [ "$healthy" = 7 ] && [ "$(wc -l <<<"$states")" = 7 ]; then
      echo "  all 7 containers healthy after $(($1 - deadline + SECONDS)) s"
      return 0
    fi
    [ "$SECONDS" -lt "$deadline" ] || fail "containers not all healthy after $1 s: $(tr '\n' ' ' <<<"$states")"
    sleep 1
  done
}
wait_healthy 150
status=$(curl -s -o "$work/body" -w '%{http_code}' "$LB/health")
[ "$status" = 200 ] || fail "GET /health through nginx answered $status"
pass "GET /health through nginx: $(cat "$work/body")"

expect() { # status, body (- to skip), curl args...
  local want=$1 want_body=$2 got
  shift 2
  got=$(curl -s -o "$work/body" -w '%{http_code}' "$@")
  [ "$got" = "$want" ] || fail "curl $* answered $got, expected $want: $(head -c 300 "$work/body")"
  [ "$want_body" = - ] || [ "$(cat "$work/body")" = "$want_body" ] ||
    fail "curl $* answered '$(head -c 300 "$work/body")', expected '$want_body'"
}
echo "== the API through the stack's nginx"
expect 200 ok "$LB/set/?key=greeting&value=hello"
expect 200 hello "$LB/get/?key=greeting"
expect 200 ok -X POST --data-binary 'odd key value' "$LB/set/?key=a%2Fb%00c%FF"
expect 200 'odd key value' "$LB/get/?key=a%2Fb%00c%FF"
expect 200 ok "$LB/set/?key=gone&value=soon"
expect 200 ok "$LB/delete/?key=gone"
expect 404 - "$LB/get/?key=gone"
pass "set, get, delete and a binary key (a%2Fb%00c%FF) through nginx"
head -c $((8 << 20)) /dev/urandom >"$work/big"
expect 200 ok -X POST --data-binary @"$work/big" "$LB/set/?key=big"
curl -fsS -o "$work/big.back" "$LB/get/?key=big" || fail "8 MiB get failed"
cmp "$work/big" "$work/big.back" || fail "the 8 MiB value read back differs"
pass "an 8 MiB value set and read back byte for byte"
compose exec -T controller velourfog --controller 127.0.0.1:7000 --json status >"$work/status.json" ||
  fail "velourfog status in the controller container failed"
python3 - "$work/status.json" <<'PY' || fail "velourfog status does not show 3 storage nodes up and no degraded partition"
import json, sys
status = json.load(open(sys.argv[1]))
nodes = {n["addr"]: n["state"] for n in status["storage"]}
print(f"  velourfog status: epoch {status['epoch']}, storage {nodes}, {len(status['frontends'])} frontend(s),"
      f" {len(status['partitions_degraded'])} degraded partition(s)")
sys.exit(0 if sorted(nodes.values()) == ["up"] * 3 and not status["partitions_degraded"] else 1)
PY
pass "velourfog status in the controller container: 3 storage nodes up"
if compose exec -T storage1 touch /tmp/probe 2>/dev/null; then
  fail "storage1 could write /tmp: its root file system is not read-only"
fi
pass "the nodes' root file systems are read-only (storage1 cannot write /tmp)"
compose logs --no-color >"$work/logs.txt" 2>&1
if grep -E 'without a cluster secret|readable by other users' "$work/logs.txt"; then
  fail "a node runs without the cluster secret, or finds it readable by others (lines above)"
fi
pass "every node loaded the cluster secret (no warning about a missing or readable secret)"

echo "== frontend1 killed (SIGKILL): nginx sends everything to frontend2"
compose kill -s SIGKILL frontend1 >/dev/null 2>&1
for i in $(seq 50); do
  expect 200 ok "$LB/set/?key=during-$i&value=v$i"
  expect 200 "v$i" "$LB/get/?key=during-$i"
done
pass "50 sets and 50 gets through nginx with frontend1 dead"

echo "== compose down (volumes kept), then up again: the cluster resumes from its volumes"
compose down >/dev/null 2>&1
compose up -d
wait_healthy 150
expect 200 hello "$LB/get/?key=greeting"
expect 200 v50 "$LB/get/?key=during-50"
curl -fsS -o "$work/big.back" "$LB/get/?key=big" || fail "8 MiB get after the restart failed"
cmp "$work/big" "$work/big.back" || fail "the 8 MiB value read back after the restart differs"
pass "after down and up, every value reads back (greeting, during-50, the 8 MiB value)"
