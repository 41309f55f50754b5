#!/usr/bin/env bash
# Tests ./runlocal.sh --lb: nginx in front of two frontends, for real.
#
#   deploy/lb-test.sh              # builds the release binaries first (cargo)
#   deploy/lb-test.sh --no-build   # uses target/release as it is
#
# In a temp dir, on ports PORT_BASE.. (env LB_TEST_PORT_BASE, default 17600; nothing may listen
# there), it starts ./runlocal.sh --lb and checks, all through nginx:
#   1. the API: set (query and body), get, delete, a key holding %2F, %00 and a non-UTF-8 byte,
#      and a body over client_max_body_size refused with 413;
#   2. a 24 MiB value set and got back byte for byte (cmp), with the times;
#   3. throughput: the bench tool (64 connections, 100-byte values, GET then SET, 10 s each)
#      through nginx, against one frontend direct and both frontends direct, in alternating
#      rounds (ROUNDS, default 2), every round printed so the noise shows;
#   4. a frontend killed with SIGKILL in the middle of a load through nginx (32 connections,
#      half sets, which are POSTs): the load may lose at most the requests that were in flight
#      on that frontend (fewer than the connections); the failures are counted and printed,
#      with the upstream errors nginx logged (each one a request it passed to the other
#      frontend), and then 200 sets and gets in a row through nginx with that frontend still
#      down must all succeed.
# Exits non-zero on any failed check. Stops everything it started (runlocal.sh stops its
# children; the script checks none outlives it) and removes the temp dir unless a check failed.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=1
case "${1:-}" in
  --no-build) BUILD=0 ;;
  "") ;;
  -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "lb-test.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac
BASE=${LB_TEST_PORT_BASE:-17600}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10s}
[[ "$BASE" =~ ^[0-9]+$ ]] && [ "$BASE" -ge 1024 ] && [ "$BASE" -le 65000 ] ||
  { echo "lb-test.sh: LB_TEST_PORT_BASE must be a port between 1024 and 65000" >&2; exit 2; }
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "lb-test.sh: ROUNDS must be a positive count" >&2; exit 2; }
CONTROLLER_PORT=$BASE
STORAGE_PORT=$((BASE + 1))
FE1_PORT=$((BASE + 10))
FE2_PORT=$((BASE + 11))
LB_PORT=$((BASE + 20))
LB="http://127.0.0.1:$LB_PORT"
FE1="http://127.0.0.1:$FE1_PORT"
FE2="http://127.0.0.1:$FE2_PORT"

command -v curl >/dev/null || { echo "lb-test.sh: needs curl" >&2; exit 2; }
command -v python3 >/dev/null || { echo "lb-test.sh: needs python3 (for the summary)" >&2; exit 2; }
for p in "$CONTROLLER_PORT" "$STORAGE_PORT" $((STORAGE_PORT + 1)) $((STORAGE_PORT + 2)) "$FE1_PORT" "$FE2_PORT" "$LB_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "lb-test.sh: port $p is in use; set LB_TEST_PORT_BASE to a free range" >&2
    exit 2
  fi
done

if [ "$BUILD" = 1 ]; then
  echo "building release binaries (cargo build --release)..."
  cargo build --release --quiet -p controller -p storage -p frontend -p velourfog -p bench
fi
[ -x target/release/bench ] || { echo "lb-test.sh: target/release/bench is missing; run without --no-build" >&2; exit 2; }

work=$(mktemp -d)
runlocal=
children=
failed=1
finish() {
  local status=$?
  if [ -n "$runlocal" ] && kill -0 "$runlocal" 2>/dev/null; then
    kill -TERM "$runlocal"
    wait "$runlocal" 2>/dev/null || true
  fi
  # runlocal.sh stops its children on SIGTERM; anything left is a bug, reported and ended.
  local left=()
  for pid in $children; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
  if [ "${#left[@]}" -gt 0 ]; then
    echo "lb-test.sh: processes outlived runlocal.sh: ${left[*]}; killing them" >&2
    kill -KILL "${left[@]}" 2>/dev/null || true
    status=1
  fi
  if [ "$failed" = 1 ] || [ "$status" != 0 ]; then
    echo "lb-test.sh: FAILED; logs kept in $work/data/logs (runlocal output: $work/runlocal.out)" >&2
    [ "$status" != 0 ] || status=1
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap finish EXIT
trap 'exit 130' INT TERM

fail() { echo "lb-test.sh: FAIL: $*" >&2; exit 1; }
pass() { echo "  ok: $*"; }

echo "== starting ./runlocal.sh --lb in $work (controller :$CONTROLLER_PORT, frontends :$FE1_PORT :$FE2_PORT, nginx :$LB_PORT)"
./runlocal.sh --no-build --lb --lb-port "$LB_PORT" --dir "$work/data" \
  --controller-port "$CONTROLLER_PORT" --storage-port "$STORAGE_PORT" --frontend-port "$FE1_PORT" \
  >"$work/runlocal.out" 2>&1 &
runlocal=$!
for _ in $(seq 240); do
  grep -q "Velour Fog is running" "$work/runlocal.out" && break
  kill -0 "$runlocal" 2>/dev/null || { cat "$work/runlocal.out"; fail "runlocal.sh exited early"; }
  sleep 0.5
done
grep -q "Velour Fog is running" "$work/runlocal.out" || { cat "$work/runlocal.out"; fail "cluster not ready in 120 s"; }
children=$(pgrep -P "$runlocal" | tr '\n' ' ')
grep -q "Load balancer (nginx" "$work/runlocal.out" || fail "runlocal.sh --lb printed no load balancer line"
grep -q "curl '$LB/set/" "$work/runlocal.out" || fail "runlocal.sh --lb's Try lines do not show $LB"
sed 's/^/  | /' "$work/runlocal.out"

echo "== 1. the API through nginx"
status() { curl -s -o "$work/body" -w '%{http_code}' "$@"; }
expect() { # expected status, expected body (or - to skip), curl args...
  local want=$1 want_body=$2 got
  shift 2
  got=$(status "$@")
  [ "$got" = "$want" ] || fail "curl $* answered $got, expected $want: $(head -c 300 "$work/body")"
  if [ "$want_body" != - ] && [ "$(cat "$work/body")" != "$want_body" ]; then
    fail "curl $* answered '$(head -c 300 "$work/body")', expected '$want_body'"
  fi
}
expect 200 - "$LB/health"
pass "GET /health through nginx: 200 ($(cat "$work/body"))"
expect 200 ok "$LB/set/?key=greeting&value=hello"
expect 200 hello "$LB/get/?key=greeting"
expect 200 hello "$FE2/get/?key=greeting"
pass "set by query string, get through nginx and through a frontend direct"
expect 200 ok -X POST --data-binary 'body value' "$LB/set/?key=posted"
expect 200 'body value' "$LB/get/?key=posted"
pass "set with a POST body"
# A key of the bytes  a / b NUL c 0xFF: the escapes must reach the frontend unchanged.
odd='a%2Fb%00c%FF'
expect 200 ok -X POST --data-binary 'odd key value' "$LB/set/?key=$odd"
expect 200 'odd key value' "$LB/get/?key=$odd"
expect 200 'odd key value' "$FE1/get/?key=$odd"
expect 200 'odd key value' "$LB/get/?key=a/b%00c%ff"
expect 404 - "$LB/get/?key=a%2Fb"
expect 404 - "$LB/get/?key=a%2Fb%00c"
pass "binary key a/b\\0c\\xFF (sent as $odd): stored and read back whole, through nginx and direct"
expect 200 ok "$LB/delete/?key=$odd"
expect 404 - "$LB/get/?key=$odd"
expect 404 - "$FE2/get/?key=$odd"
expect 200 ok -X POST "$LB/delete/?key=greeting"
expect 404 - "$LB/get/?key=greeting"
pass "delete (GET and POST), then 404 through nginx and direct"
expect 400 - "$LB/set/?key=oops&value=100%"
pass "a malformed escape still gets the frontend's 400 through nginx: $(cat "$work/body")"
code=$(curl -s -o "$work/body" -w '%{http_code}' --max-time 10 -X POST -H 'Content-Length: 134217729' \
  --data-binary x "$LB/set/?key=too-big" || true)
[ "$code" = 413 ] || fail "a 128 MiB + 1 byte body answered $code, expected 413 from nginx"
pass "a body of 128 MiB + 1 byte is refused by nginx with 413 before it is read"

echo "== 2. a 24 MiB value through nginx"
head -c $((24 << 20)) /dev/urandom >"$work/big"
set_time=$(curl -fsS -o "$work/body" -w '%{time_total}' -X POST --data-binary @"$work/big" "$LB/set/?key=big") ||
  fail "24 MiB set through nginx failed: $(cat "$work/body")"
[ "$(cat "$work/body")" = ok ] || fail "24 MiB set answered '$(cat "$work/body")'"
get_time=$(curl -fsS -o "$work/big.back" -w '%{time_total}' "$LB/get/?key=big") || fail "24 MiB get through nginx failed"
cmp "$work/big" "$work/big.back" || fail "the 24 MiB value read back through nginx differs"
direct_time=$(curl -fsS -o "$work/big.direct" -w '%{time_total}' "$FE1/get/?key=big") || fail "24 MiB get direct failed"
cmp "$work/big" "$work/big.direct" || fail "the 24 MiB value read back direct differs"
rm -f "$work/big.back" "$work/big.direct"
pass "24 MiB set ${set_time} s, get ${get_time} s through nginx (get direct ${direct_time} s), byte-exact (cmp)"

echo "== 3. throughput: through nginx (2 frontends behind it) vs one frontend direct vs both direct"
bench() { # label, url list, read ratio
  target/release/bench --frontends "$2" --concurrency 64 --value-size 100 --keys 10000 \
    --duration "$DURATION" --read-ratio "$3" --quiet --label "$1" --json "$work/$1.json" >/dev/null
}
target/release/bench --frontends "$FE1" --concurrency 64 --value-size 100 --keys 10000 --preload \
  --duration 1s --read-ratio 1 --quiet >/dev/null 2>&1 || fail "preloading 10,000 keys failed"
for round in $(seq "$ROUNDS"); do
  # Alternate the order so neither side always runs first (or right after the other's writes).
  if [ $((round % 2)) = 1 ]; then order="nginx direct1 direct2"; else order="direct2 direct1 nginx"; fi
  for op in get set; do
    ratio=1
    [ "$op" = set ] && ratio=0
    for side in $order; do
      case "$side" in
        nginx) urls=$LB ;;
        direct1) urls=$FE1 ;;
        direct2) urls="$FE1,$FE2" ;;
      esac
      echo "  round $round: $op via $side ($DURATION)"
      bench "$side-$op-$round" "$urls" "$ratio"
    done
  done
done
python3 - "$work" "$ROUNDS" <<'PY' | tee "$work/throughput.txt"
import json, os, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
load = lambda name: json.load(open(os.path.join(work, name + ".json")))
sides = [("nginx", "through nginx (2 frontends)"), ("direct1", "one frontend direct"), ("direct2", "both frontends direct")]
errors = 0
print(f"  64 connections, 100-byte values, 10,000 keys, {load('nginx-get-1')['seconds']:.0f} s per run, {rounds} alternating rounds")
for op in ("get", "set"):
    rates = {}
    for side, _ in sides:
        runs = [load(f"{side}-{op}-{r}")[op] for r in range(1, rounds + 1)]
        errors += sum(run["errors"] for run in runs)
        rates[side] = [(run["ops_per_sec"], run["latency"]["p99_ms"]) for run in runs]
    for side, name in sides:
        ops = [r for r, _ in rates[side]]
        med = statistics.median(ops)
        spread = (max(ops) - min(ops)) / med * 100 if med else 0
        rounds_text = ", ".join(f"{r:,.0f}/s (p99 {p:.2f} ms)" for r, p in rates[side])
        print(f"  {op.upper()} {name:<28} median {med:>9,.0f}/s   rounds: {rounds_text}   spread {spread:.0f}%")
    ratios = [n / d for (n, _), (d, _) in zip(rates["nginx"], rates["direct1"]) if d]
    ratios2 = [n / d for (n, _), (d, _) in zip(rates["nginx"], rates["direct2"]) if d]
    print(f"  {op.upper()} nginx / one frontend direct, by round: {', '.join(f'{x:.2f}x' for x in ratios)};"
          f" nginx / both direct: {', '.join(f'{x:.2f}x' for x in ratios2)}")
print(f"  errors in all throughput runs: {errors}")
sys.exit(1 if errors else 0)
PY

echo "== 4. SIGKILL a frontend in the middle of a load through nginx"
fe1_pid=$(pgrep -P "$runlocal" -f "release/frontend .*127\\.0\\.0\\.1:$FE1_PORT( |$)" || true)
[ -n "$fe1_pid" ] && [ "$(wc -w <<<"$fe1_pid")" = 1 ] || fail "cannot find frontend 1 (port $FE1_PORT) among runlocal.sh's children"
errors_before=$(grep -c -E 'upstream|connect\(\) failed' "$work/data/logs/nginx-error.log" || true)
target/release/bench --frontends "$LB" --concurrency 32 --value-size 100 --keys 10000 --duration 8s \
  --read-ratio 0.5 --quiet --label kill --json "$work/kill.json" >"$work/kill.txt" 2>&1 &
load=$!
sleep 3
kill -KILL "$fe1_pid"
echo "  killed frontend 1 (pid $fe1_pid, :$FE1_PORT) with SIGKILL 3 s into an 8 s load of 32 connections"
wait "$load" || fail "the bench load through nginx failed: $(cat "$work/kill.txt")"
kill -0 "$fe1_pid" 2>/dev/null && fail "frontend 1 is still alive after SIGKILL"
sleep 1.5 # the access and error logs flush every second
retried=$(( $(grep -c -E 'upstream|connect\(\) failed' "$work/data/logs/nginx-error.log" || true) - errors_before ))
python3 - "$work/kill.json" "$retried" <<'PY'
import json, sys
report, retried = json.load(open(sys.argv[1])), int(sys.argv[2])
ops = report["get"]["ops"] + report["set"]["ops"]
failed = report["get"]["errors"] + report["set"]["errors"]
first = report["get"].get("first_error") or report["set"].get("first_error")
print(f"  {ops:,} requests ({report['get']['ops']:,} gets, {report['set']['ops']:,} sets as POST) in"
      f" {report['seconds']:.1f} s: {failed} failed (gets {report['get']['errors']}, sets {report['set']['errors']})")
print(f"  nginx logged {retried} upstream error(s) for the dead frontend: each request it passed on to the other frontend")
print("  p99 latency: get %.2f ms, set %.2f ms" % (report["get"]["latency"]["p99_ms"], report["set"]["latency"]["p99_ms"]))
# At most the requests in flight on the killed frontend may fail: fewer than the 32 connections.
if failed >= 32:
    print(f"FAIL: {failed} failures is more than the requests that can have been in flight (< 32)")
    sys.exit(1)
if ops < 1000:
    print("FAIL: the load made fewer than 1,000 requests; it did not really run")
    sys.exit(1)
print(f"  ok: failures ({failed}) within the requests in flight on the killed frontend (< 32)")
PY
for i in $(seq 200); do
  expect 200 ok -X POST --data-binary "after-kill-$i" "$LB/set/?key=after-kill-$i"
  expect 200 "after-kill-$i" "$LB/get/?key=after-kill-$i"
done
pass "200 sets and 200 gets in a row through nginx with frontend 1 dead: all answered 200 with the value"
grep -q "frontend1 (pid $fe1_pid) exited" "$work/runlocal.out" || fail "runlocal.sh did not report frontend 1's death"
pass "runlocal.sh reported the death of frontend 1 and kept the rest running"

echo "== stopping runlocal.sh (SIGTERM)"
kill -TERM "$runlocal"
wait "$runlocal" || true
runlocal=
sleep 0.5
for pid in $children; do
  [ "$pid" = "$fe1_pid" ] && continue
  kill -0 "$pid" 2>/dev/null && fail "process $pid outlived runlocal.sh"
done
pass "runlocal.sh stopped every process it started, nginx included"
failed=0
echo "lb-test.sh: all checks passed"
