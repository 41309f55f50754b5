#!/usr/bin/env bash
# Offline checks of everything in deploy/ (no cluster, no registry, no docker daemon needed):
#
#   deploy/validate.sh
#
#   shell     shellcheck on runlocal.sh and every script in deploy/
#   yaml      every YAML file parses (python3 yaml) and passes yamllint (relaxed, strict on
#             warnings, 130 columns but for the alert tests' long series names)
#   nginx     the template rendered as runlocal.sh and the nginx container do, then nginx -t
#   prom      promtool check config, check rules, and the alert unit tests (test rules); the
#             metric names the alerts use appear in the nodes' */src/metrics.rs
#   compose   docker-compose config -q (or docker compose)
#   k8s       deploy/k8s/check.py (the manifests agree with each other and the binaries);
#             kubernetes-validate --strict against the Kubernetes schemas it bundles, on the
#             files and on `kubectl kustomize deploy/k8s` (installs kubernetes-validate from
#             PyPI into a temp venv if it is not on PATH)
#
# A tool that is missing makes its check SKIPPED (said at the end), never passed; set
# REQUIRE_ALL=1 to make a skip fail. Exits 1 if any check failed.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=()
skipped=()
failed=()
run() { # name, command...
  local name=$1
  shift
  if "$@" >"$work/out" 2>&1; then
    passed+=("$name")
    echo "ok      $name"
  else
    failed+=("$name")
    echo "FAILED  $name"
    sed 's/^/        /' "$work/out"
  fi
}
skip() { skipped+=("$1 ($2)"); echo "SKIPPED $1: $2"; }
have() { command -v "$1" >/dev/null 2>&1; }

scripts=(runlocal.sh deploy/*.sh deploy/nginx/render.sh deploy/docker/vf-healthcheck deploy/docker/vf-nginx)
if have shellcheck; then
  run "shellcheck ${#scripts[@]} scripts (every level but SC2015: A && B || die is meant)" shellcheck -e SC2015 "${scripts[@]}"
else
  skip shellcheck "not installed (apt-get install shellcheck)"
fi

mapfile -t yamls < <(ls deploy/*.yaml deploy/k8s/*.yaml deploy/prometheus/*.yml)
run "yaml parses (${#yamls[@]} files)" python3 -c '
import sys, yaml
for path in sys.argv[1:]:
    docs = [d for d in yaml.safe_load_all(open(path)) if d is not None]
    assert docs, f"{path}: no document"
' "${yamls[@]}"
if have yamllint; then
  # The alert tests hold series names and expected alert texts that are long by nature.
  run "yamllint (${#yamls[@]} files)" yamllint -s \
    -d '{extends: relaxed, rules: {line-length: {max: 130, ignore: deploy/prometheus/alerts.test.yml}}}' "${yamls[@]}"
else
  skip yamllint "not installed (apt-get install yamllint)"
fi

nginx_bin=$(command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true)
if [ -n "$nginx_bin" ]; then
  nginx_test() { # render.sh args...: render into a fresh prefix, then nginx -t
    local prefix
    prefix=$(mktemp -d -p "$work")
    deploy/nginx/render.sh --prefix "$prefix" "$@" >"$prefix/nginx.conf" &&
      "$nginx_bin" -t -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log"
  }
  run "nginx -t (as ./runlocal.sh --lb renders it)" nginx_test --listen 127.0.0.1:8080 \
    --frontends 127.0.0.1:8000,127.0.0.1:8001 --max-body 134217728 --user "$(id -un)"
  run "nginx -t (as the nginx container renders it)" nginx_test --listen 8080 \
    --frontends localhost:8000,localhost:8001 --error-log stderr --access-log /dev/stdout --workers auto
  run "render.sh refuses a directive smuggled into --frontends" bash -c \
    '! deploy/nginx/render.sh --listen 80 --prefix /tmp --frontends "a:1;evil" 2>/dev/null'
else
  skip "nginx -t" "nginx not installed (apt-get install nginx)"
fi

# The metric names the alerts use must be ones the nodes export (their */src/metrics.rs).
if ls ./*/src/metrics.rs >/dev/null 2>&1; then
  run "alerts use only metrics the nodes export" python3 -c '
import glob, re, sys
exported = set()
for path in glob.glob("*/src/metrics.rs"):
    exported |= set(re.findall(r"velourfog_[a-z_]+", open(path).read()))
used = set(re.findall(r"velourfog_[a-z_]+", open("deploy/prometheus/alerts.yml").read()))
base = lambda name: re.sub(r"_(bucket|sum|count)$", "", name)
missing = sorted(n for n in used if n not in exported and base(n) not in exported)
print("used:", ", ".join(sorted(used)))
sys.exit(f"not exported by any node: {missing}" if missing else 0)
'
else
  skip "alert metric names" "no */src/metrics.rs in this tree yet (the nodes do not export metrics)"
fi

if have promtool; then
  run "promtool check config" promtool check config deploy/prometheus/prometheus.yml
  run "promtool check rules" promtool check rules deploy/prometheus/alerts.yml
  run "promtool test rules (alert unit tests)" promtool test rules deploy/prometheus/alerts.test.yml
else
  skip promtool "not installed (apt-get install prometheus)"
fi

if have docker-compose; then compose=(docker-compose); elif docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(); fi
if [ "${#compose[@]}" -gt 0 ]; then
  echo 0123456789abcdef0123456789abcdef >"$work/cluster.secret"
  run "compose config (${compose[*]})" env VF_COMPOSE_SECRET_FILE="$work/cluster.secret" \
    "${compose[@]}" -f deploy/compose.yaml config -q
else
  skip "compose config" "neither docker-compose nor docker compose is installed"
fi

run "k8s/check.py (manifests agree with each other and the binaries)" python3 deploy/k8s/check.py
validator=${KUBERNETES_VALIDATE:-$(command -v kubernetes-validate || true)}
if [ -z "$validator" ]; then
  echo "        (installing kubernetes-validate from PyPI into a temp venv)"
  if python3 -m venv "$work/venv" >/dev/null 2>&1 &&
     "$work/venv/bin/pip" install -q kubernetes-validate >"$work/pip.log" 2>&1; then
    validator="$work/venv/bin/kubernetes-validate"
  fi
fi
manifests=(deploy/k8s/namespace.yaml deploy/k8s/controller.yaml deploy/k8s/storage.yaml deploy/k8s/frontend.yaml)
if [ -n "$validator" ]; then
  run "kubernetes-validate --strict (schemas of $("$validator" --version 2>/dev/null | awk '{print $NF}' || echo '?'))" \
    "$validator" --strict --quiet "${manifests[@]}"
  if have kubectl && kubectl kustomize deploy/k8s >"$work/kustomized.yaml" 2>"$work/kustomize.err"; then
    for version in 1.29.0 1.33.0; do
      run "kubectl kustomize deploy/k8s | kubernetes-validate --strict -k $version" \
        "$validator" --strict --quiet -k "$version" "$work/kustomized.yaml"
    done
  else
    skip "kustomize" "kubectl is not installed or kubectl kustomize failed: $(head -c 200 "$work/kustomize.err" 2>/dev/null)"
  fi
else
  skip kubernetes-validate "not installed and could not be installed from PyPI (see pip's log)"
fi

echo
echo "passed: ${#passed[@]}, failed: ${#failed[@]}, skipped: ${#skipped[@]}"
for s in "${skipped[@]+"${skipped[@]}"}"; do echo "  skipped: $s"; done
for f in "${failed[@]+"${failed[@]}"}"; do echo "  failed: $f"; done
[ "${#failed[@]}" = 0 ] || exit 1
[ "${REQUIRE_ALL:-0}" = 0 ] || [ "${#skipped[@]}" = 0 ] || { echo "REQUIRE_ALL=1 and checks were skipped" >&2; exit 1; }
