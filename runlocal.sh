#!/usr/bin/env bash
# Runs a whole Velour Fog cluster on this machine: one controller, storage nodes and frontends.
# Ctrl-C (or SIGTERM to this script) stops every process it started.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: ./runlocal.sh [options]

Builds the release binaries, starts a controller, storage nodes and frontends on this machine,
prints the frontend URLs, and runs until Ctrl-C or SIGTERM, which stops every process it started.

Options (each also settable by the environment variable in brackets):
  -s, --storage N          storage nodes                        [VF_STORAGE, default 3]
  -f, --frontends N        frontends                            [VF_NUM_FRONTENDS, default 2]
  -k, --redundancy K       replicas per partition               [VF_REDUNDANCY, default min(3, N)]
      --host HOST          address every node binds and uses    [VF_HOST, default 127.0.0.1]
      --controller-port P  controller port                      [VF_CONTROLLER_PORT, default 7000]
      --storage-port P     first storage port (then P+1, ...)   [VF_STORAGE_PORT, default 7001]
      --frontend-port P    first frontend port (then P+1, ...)  [VF_FRONTEND_PORT, default 8000]
      --dir DIR            data and logs directory              [VF_DIR, default ./runlocal-data]
      --worker-threads N   request threads per storage node and frontend
                                           [VF_WORKER_THREADS, default: cores / nodes, at least 1]
      --lb                 also start nginx in front of the frontends, on one port
                           (installs nginx with apt-get if it is missing)   [VF_LB=1]
      --lb-port P          the load balancer's port                 [VF_LB_PORT, default 8080]
      --fresh              delete DIR's data first (a new, empty cluster)
      --no-build           use the binaries already in target/release
  -h, --help               this text

The first run creates a cluster secret in DIR/cluster.secret (mode 600) and gives it to every
node: internal and admin endpoints then answer 401 to callers without it. Admin commands need
it too: export VF_CLUSTER_SECRET_FILE=DIR/cluster.secret (docs/security.md).

Data persists in DIR across runs: stop and start again and every key is still there. Start it
again with more storage nodes (-s 4) and the new ones join the cluster and take their share;
to shrink it, remove nodes with `target/release/velourfog node remove ADDR --wait` first. Logs go to DIR/logs/<node>.log; set RUST_LOG
(e.g. debug) for more detail.

With --lb, nginx runs as a child of this script with the configuration rendered from
deploy/nginx/nginx.conf.template into DIR/nginx/ (its pid and temp files there, its logs in
DIR/logs/nginx-*.log), spreads requests over the frontends, and retries another frontend when
one is down or answers 503. Clients then need only http://HOST:LB_PORT.

All nodes share this machine's cores, so each gets a share of them as worker threads rather
than one per core: on a small machine one each is much faster (docs/performance.md).
USAGE
}

STORAGE=${VF_STORAGE:-3}
# VF_FRONTENDS is velourfog's list of frontend addresses; a bare number there is the count
# this script once read from it, still honoured.
FRONTENDS=${VF_NUM_FRONTENDS:-}
if [ -z "$FRONTENDS" ] && [[ "${VF_FRONTENDS:-}" =~ ^[0-9]+$ ]]; then FRONTENDS=$VF_FRONTENDS; fi
FRONTENDS=${FRONTENDS:-2}
REDUNDANCY=${VF_REDUNDANCY:-}
HOST=${VF_HOST:-127.0.0.1}
CONTROLLER_PORT=${VF_CONTROLLER_PORT:-7000}
STORAGE_PORT=${VF_STORAGE_PORT:-7001}
FRONTEND_PORT=${VF_FRONTEND_PORT:-8000}
DIR=${VF_DIR:-./runlocal-data}
WORKER_THREADS=${VF_WORKER_THREADS:-}
LB=${VF_LB:-0}
LB_PORT=${VF_LB_PORT:-8080}
BUILD=1
FRESH=0

die() { echo "runlocal.sh: $*" >&2; exit 2; }
need_value() { [ $# -ge 2 ] && [ -n "$2" ] || die "option $1 needs a value (see --help)"; }

while [ $# -gt 0 ]; do
  case "$1" in
    -s|--storage) need_value "$@"; STORAGE=$2; shift 2 ;;
    -f|--frontends) need_value "$@"; FRONTENDS=$2; shift 2 ;;
    -k|--redundancy) need_value "$@"; REDUNDANCY=$2; shift 2 ;;
    --host) need_value "$@"; HOST=$2; shift 2 ;;
    --controller-port) need_value "$@"; CONTROLLER_PORT=$2; shift 2 ;;
    --storage-port) need_value "$@"; STORAGE_PORT=$2; shift 2 ;;
    --frontend-port) need_value "$@"; FRONTEND_PORT=$2; shift 2 ;;
    --dir) need_value "$@"; DIR=$2; shift 2 ;;
    --worker-threads) need_value "$@"; WORKER_THREADS=$2; shift 2 ;;
    --lb) LB=1; shift ;;
    --lb-port) need_value "$@"; LB_PORT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --fresh) FRESH=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

is_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
is_count "$STORAGE" || die "storage count must be a positive number, got '$STORAGE'"
is_count "$FRONTENDS" || die "frontend count must be a positive number, got '$FRONTENDS'"
[ -n "$REDUNDANCY" ] || REDUNDANCY=$(( STORAGE < 3 ? STORAGE : 3 ))
is_count "$REDUNDANCY" || die "redundancy must be a positive number, got '$REDUNDANCY'"
[ "$REDUNDANCY" -le "$STORAGE" ] || die "redundancy $REDUNDANCY exceeds the $STORAGE storage nodes"
if [ -z "$WORKER_THREADS" ]; then
  WORKER_THREADS=$(( $(nproc) / (STORAGE + FRONTENDS) ))
  [ "$WORKER_THREADS" -ge 1 ] || WORKER_THREADS=1
fi
is_count "$WORKER_THREADS" || die "worker threads must be a positive number, got '$WORKER_THREADS'"
[[ "$LB" =~ ^[01]$ ]] || die "VF_LB must be 0 or 1, got '$LB'"
for p in "$CONTROLLER_PORT" "$STORAGE_PORT" "$FRONTEND_PORT" "$LB_PORT"; do
  [[ "$p" =~ ^[0-9]+$ ]] && [ "$p" -gt 0 ] && [ "$p" -lt 65536 ] || die "invalid port '$p'"
done

# nginx for --lb: the one on PATH (or in /usr/sbin, often not on a user's PATH), else installed
# with apt-get when this script may do that.
find_nginx() {
  command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true
}
ensure_nginx() {
  NGINX=$(find_nginx)
  [ -n "$NGINX" ] && return
  command -v apt-get >/dev/null ||
    die "--lb needs nginx, which is not installed, and there is no apt-get here to install it: install nginx, or run without --lb"
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    sudo -n true 2>/dev/null ||
      die "--lb needs nginx, which is not installed; installing it needs root: run 'sudo apt-get install nginx' (or run without --lb)"
    sudo=(sudo -n)
  fi
  echo "--lb needs nginx, which is not installed: installing it with apt-get (Debian package nginx)..."
  if ! "${sudo[@]}" apt-get update -qq >/dev/null ||
     ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq nginx >/dev/null; then
    die "installing nginx with apt-get failed (see the messages above): install nginx yourself, or run without --lb"
  fi
  NGINX=$(find_nginx)
  [ -n "$NGINX" ] || die "apt-get installed nginx but no nginx binary is on PATH or in /usr/sbin"
  echo "installed $("$NGINX" -v 2>&1) (on a systemd machine Debian's package also starts its own nginx on port 80;"
  echo "  this script runs a separate one: 'sudo systemctl disable --now nginx' stops that one if unwanted)"
}
NGINX=
MAX_VALUE_BYTES=${VF_MAX_VALUE_BYTES:-134217728}
if [ "$LB" = 1 ]; then
  [[ "$MAX_VALUE_BYTES" =~ ^[0-9]+$ ]] || die "VF_MAX_VALUE_BYTES must be a number of bytes, got '$MAX_VALUE_BYTES'"
  ensure_nginx
fi

cd "$(dirname "$0")"
if [ "$BUILD" = 1 ]; then
  echo "building release binaries (cargo build --release)..."
  cargo build --release --quiet -p controller -p storage -p frontend -p velourfog
fi
BIN=target/release
for b in controller storage frontend velourfog; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is missing; run without --no-build"
done

if [ "$FRESH" = 1 ]; then
  rm -rf "$DIR/controller" "$DIR"/storage* "$DIR/logs"
fi
mkdir -p "$DIR/logs"
SECRET="$DIR/cluster.secret"
if [ ! -s "$SECRET" ]; then
  (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$SECRET")
  echo "created a cluster secret in $SECRET"
fi
export VF_CLUSTER_SECRET_FILE=$SECRET
PIDS=()
NAMES=()
stopping=0
stop_all() {
  [ "$stopping" = 1 ] && return
  stopping=1
  echo
  echo "stopping ${#PIDS[@]} processes..."
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped."
}
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT

start() { # name, binary, args...
  local name=$1 bin=$2
  shift 2
  run "$name" "$BIN/$bin" "$@"
}
run() { # name, command, args...
  local name=$1
  shift
  "$@" >"$DIR/logs/$name.log" 2>&1 &
  PIDS+=($!)
  NAMES+=("$name")
}

CONTROLLER="$HOST:$CONTROLLER_PORT"
start controller controller "$CONTROLLER_PORT" "$STORAGE" "$REDUNDANCY" --host "$HOST" --state-dir "$DIR/controller"
for i in $(seq 1 "$STORAGE"); do
  addr="$HOST:$((STORAGE_PORT + i - 1))"
  start "storage$i" storage "$CONTROLLER" "$addr" --listen "$addr" --data-dir "$DIR/storage$i" --worker-threads "$WORKER_THREADS"
done
FRONTEND_URLS=()
FRONTEND_ADDRS=()
for i in $(seq 1 "$FRONTENDS"); do
  addr="$HOST:$((FRONTEND_PORT + i - 1))"
  start "frontend$i" frontend "$CONTROLLER" "$addr" --listen "$addr" --worker-threads "$WORKER_THREADS"
  FRONTEND_URLS+=("http://$addr")
  FRONTEND_ADDRS+=("$addr")
done

# nginx in front of the frontends, configured from the template every deployment shares.
TRY_URLS=("${FRONTEND_URLS[0]}" "${FRONTEND_URLS[${#FRONTEND_URLS[@]}-1]}")
WAIT_URLS=("${FRONTEND_URLS[@]}")
LB_LINE=
if [ "$LB" = 1 ]; then
  mkdir -p "$DIR/nginx"
  NGINX_DIR=$(cd "$DIR/nginx" && pwd)
  LOGS=$(cd "$DIR/logs" && pwd)
  user=()
  [ "$(id -u)" != 0 ] || user=(--user root)
  LB_ADDR="$HOST:$LB_PORT"
  frontends=$(IFS=,; echo "${FRONTEND_ADDRS[*]}")
  deploy/nginx/render.sh --listen "$LB_ADDR" --prefix "$NGINX_DIR" --frontends "$frontends" \
    --max-body "$MAX_VALUE_BYTES" --error-log "$LOGS/nginx-error.log" \
    --access-log "$LOGS/nginx-access.log" "${user[@]}" >"$NGINX_DIR/nginx.conf"
  "$NGINX" -t -q -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" -e "$LOGS/nginx-error.log" ||
    die "nginx rejects the configuration in $NGINX_DIR/nginx.conf (see above and $LOGS/nginx-error.log)"
  run nginx "$NGINX" -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" -e "$LOGS/nginx-error.log"
  TRY_URLS=("http://$LB_ADDR" "http://$LB_ADDR")
  WAIT_URLS+=("http://$LB_ADDR")
  LB_LINE="Load balancer (nginx, pid ${PIDS[${#PIDS[@]}-1]}): http://$LB_ADDR -> every frontend above (config: $NGINX_DIR/nginx.conf)"
fi

# Wait until every frontend has the partition map (and nginx answers).
if command -v curl >/dev/null; then
  for url in "${WAIT_URLS[@]}"; do
    for attempt in $(seq 200); do
      curl -fsS -o /dev/null "$url/health" 2>/dev/null && break
      for idx in "${!PIDS[@]}"; do
        kill -0 "${PIDS[$idx]}" 2>/dev/null || die "${NAMES[$idx]} exited at start; see $DIR/logs/${NAMES[$idx]}.log"
      done
      [ "$attempt" = 200 ] && die "$url not ready after 20 s; see $DIR/logs/"
      sleep 0.1
    done
  done
fi

cat <<READY
Velour Fog is running: controller on $CONTROLLER, $STORAGE storage nodes, $FRONTENDS frontends, $REDUNDANCY replicas per key
($WORKER_THREADS worker thread(s) per node).
Frontends:
$(printf '  %s\n' "${FRONTEND_URLS[@]}")${LB_LINE:+
$LB_LINE}
Try:
  curl '${TRY_URLS[0]}/set/?key=greeting&value=hello'
  curl '${TRY_URLS[1]}/get/?key=greeting'
Cluster status: $BIN/velourfog --controller $CONTROLLER status   (JSON: curl http://$CONTROLLER/v1/status)
Dashboard: http://$CONTROLLER/   Metrics: http://$CONTROLLER/metrics (and every node's /metrics)
CLI: export VF_FRONTENDS=$(IFS=,; echo "${FRONTEND_URLS[*]#http://}"); $BIN/velourfog set greeting hello
Cluster secret: $SECRET (every node has it; for admin commands: export VF_CLUSTER_SECRET_FILE=$SECRET)
Grow it: $BIN/storage $CONTROLLER $HOST:$((STORAGE_PORT + STORAGE)) --data-dir $DIR/storage$((STORAGE + 1)) --cluster-secret-file $SECRET   (joins by itself)
Data: $DIR/ (kept across runs)   Logs: $DIR/logs/   Stop: Ctrl-C
READY

# Run until a signal; report any process that dies on its own and keep the rest running.
LIVE=("${PIDS[@]}")
while [ "${#LIVE[@]}" -gt 0 ]; do
  done_pid=
  set +e
  wait -n -p done_pid "${LIVE[@]}"
  status=$?
  set -e
  [ -n "$done_pid" ] || break
  for idx in "${!PIDS[@]}"; do
    [ "${PIDS[$idx]}" = "$done_pid" ] && echo "${NAMES[$idx]} (pid $done_pid) exited with status $status; see $DIR/logs/${NAMES[$idx]}.log" >&2
  done
  still=()
  for pid in "${LIVE[@]}"; do [ "$pid" = "$done_pid" ] || still+=("$pid"); done
  LIVE=("${still[@]+"${still[@]}"}")
done
