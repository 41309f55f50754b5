#!/usr/bin/env bash
# Renders deploy/nginx/nginx.conf.template into an nginx configuration on stdout.
#
#   deploy/nginx/render.sh --listen 127.0.0.1:8080 --prefix DIR \
#       --frontends 127.0.0.1:8000,127.0.0.1:8001 [--max-body BYTES] [--workers N|auto] \
#       [--error-log PATH] [--access-log PATH|off] [--user NAME]
#
# Used by ./runlocal.sh --lb and by the nginx container (deploy/docker/vf-nginx), so both run
# the same configuration. Every value is checked before it goes into the file: nothing a caller
# passes can add a directive.
set -euo pipefail

die() { echo "render.sh: $*" >&2; exit 2; }
need_value() { [ $# -ge 2 ] && [ -n "$2" ] || die "option $1 needs a value"; }

here=$(cd "$(dirname "$0")" && pwd)
template="$here/nginx.conf.template"
listen=
prefix=
frontends=
max_body=134217728
workers=auto
error_log=
access_log=
user=

while [ $# -gt 0 ]; do
  case "$1" in
    --listen) need_value "$@"; listen=$2; shift 2 ;;
    --prefix) need_value "$@"; prefix=$2; shift 2 ;;
    --frontends) need_value "$@"; frontends=$2; shift 2 ;;
    --max-body) need_value "$@"; max_body=$2; shift 2 ;;
    --workers) need_value "$@"; workers=$2; shift 2 ;;
    --error-log) need_value "$@"; error_log=$2; shift 2 ;;
    --access-log) need_value "$@"; access_log=$2; shift 2 ;;
    --user) need_value "$@"; user=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

[ -n "$listen" ] || die "--listen is required (PORT or HOST:PORT)"
[ -n "$prefix" ] || die "--prefix is required (the directory nginx writes its pid and temp files in)"
[ -n "$frontends" ] || die "--frontends is required (HOST:PORT,HOST:PORT,...)"
[ -r "$template" ] || die "template $template is missing"

# host:port with a DNS name, IPv4 or [IPv6] host.
addr_re='^([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$'
[[ "$listen" =~ ^[0-9]{1,5}$ || "$listen" =~ $addr_re ]] || die "--listen '$listen' is not PORT or HOST:PORT"
path_re='^/[A-Za-z0-9._/+-]*$'
[[ "$prefix" =~ $path_re ]] || die "--prefix must be an absolute path of letters, digits and ._/+- (got '$prefix')"
[[ "$max_body" =~ ^[0-9]+[kKmMgG]?$ ]] || die "--max-body '$max_body' is not a size (bytes, or with k/m/g)"
[[ "$workers" =~ ^([1-9][0-9]*|auto)$ ]] || die "--workers '$workers' is not a count or 'auto'"
[ -n "$error_log" ] || error_log="$prefix/error.log"
[ -n "$access_log" ] || access_log="$prefix/access.log"
[[ "$error_log" =~ $path_re || "$error_log" = stderr ]] || die "--error-log '$error_log' is not an absolute path or 'stderr'"
[[ "$access_log" =~ $path_re || "$access_log" = off ]] || die "--access-log '$access_log' is not an absolute path or 'off'"
[ -z "$user" ] || [[ "$user" =~ ^[a-z_][a-z0-9_-]*$ ]] || die "--user '$user' is not a user name"

servers=
IFS=',' read -r -a list <<<"$frontends"
[ "${#list[@]}" -gt 0 ] || die "--frontends lists no frontend"
for addr in "${list[@]}"; do
  [[ "$addr" =~ $addr_re ]] || die "frontend '$addr' is not HOST:PORT"
  servers+="        server $addr max_fails=1 fail_timeout=5s;"$'\n'
done
servers=${servers%$'\n'}

# Access log: buffered, so logging costs a write per 64 KiB rather than per request.
if [ "$access_log" = off ]; then
  access_line=off
elif [ "$access_log" = /dev/stdout ]; then
  access_line="$access_log"
else
  access_line="$access_log combined buffer=64k flush=1s"
fi
# `user` only means something when nginx starts as root: then the workers run as that user
# rather than nginx's default `nobody`, which may not reach the prefix directory.
user_line="# no user directive: workers run as the user that started nginx (nobody if that was root)"
[ -z "$user" ] || user_line="user $user;"

conf=$(<"$template")
conf=${conf//@USER@/"$user_line"}
conf=${conf//@WORKERS@/"$workers"}
conf=${conf//@PREFIX@/"$prefix"}
conf=${conf//@ERROR_LOG@/"$error_log"}
conf=${conf//@ACCESS_LOG@/"$access_line"}
conf=${conf//@SERVERS@/"$servers"}
conf=${conf//@LISTEN@/"$listen"}
conf=${conf//@MAX_BODY@/"$max_body"}
if [[ "$conf" == *@[A-Z_]*@* ]]; then
  left=$(grep -o '@[A-Z_]*@' <<<"$conf" | sort -u | tr '\n' ' ')
  die "template field(s) left unfilled: $left"
fi
printf '%s\n' "$conf"
