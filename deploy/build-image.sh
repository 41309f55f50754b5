#!/usr/bin/env bash
# Builds the Velour Fog images without any image registry: a Debian base made here with
# debootstrap, and the binaries built on this machine.
#
#   deploy/build-image.sh [--no-build] [--tag velourfog:latest] [--nginx-tag velourfog-nginx:latest]
#                         [--base-tag velourfog-base:bookworm] [--rebuild-base]
#
#   1. base: if the image --base-tag is missing (or --rebuild-base), `debootstrap --variant=minbase
#      bookworm` into a temp dir (from $DEBIAN_MIRROR, default http://deb.debian.org/debian),
#      then `docker import` it. Needs root and debootstrap.
#   2. binaries: `cargo build --release` (skipped with --no-build), then copies of the four
#      binaries without debug info, staged with deploy/ in a small build context.
#   3. `docker build --target local` and `--target nginx` of deploy/Dockerfile with
#      BASE_IMAGE=the base (the legacy builder, which uses a local base image as it is; the
#      nginx stage's apt-get runs with the host's network).
#
# The binaries must run on Debian bookworm's glibc (2.36): build them on bookworm or older.
# With a registry, build from source instead: docker build -f deploy/Dockerfile -t velourfog .
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "build-image.sh: $*" >&2; exit 2; }
need_value() { [ $# -ge 2 ] && [ -n "$2" ] || die "option $1 needs a value"; }

BUILD=1
TAG=velourfog:latest
NGINX_TAG=velourfog-nginx:latest
BASE_TAG=velourfog-base:bookworm
REBUILD_BASE=0
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) BUILD=0; shift ;;
    --tag) need_value "$@"; TAG=$2; shift 2 ;;
    --nginx-tag) need_value "$@"; NGINX_TAG=$2; shift 2 ;;
    --base-tag) need_value "$@"; BASE_TAG=$2; shift 2 ;;
    --rebuild-base) REBUILD_BASE=1; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

command -v docker >/dev/null || die "docker is not installed (Debian: apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "the docker daemon does not answer (start dockerd, or see deploy/compose-test.sh)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ "$REBUILD_BASE" = 1 ] || ! docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "making the base image with debootstrap needs root"
  command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
  echo "== base image $BASE_TAG: debootstrap --variant=minbase bookworm from $MIRROR (a few minutes)"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
  # What a container does not need: package caches and lists (apt-get update refills them).
  rm -rf "$work/rootfs"/var/cache/apt/archives/*.deb "$work/rootfs"/var/cache/apt/*.bin \
    "$work/rootfs"/var/lib/apt/lists/* \
    "$work/rootfs"/var/log/*.log "$work/rootfs"/tmp/*
  tar --numeric-owner -C "$work/rootfs" -c . | docker import --change 'CMD ["bash"]' - "$BASE_TAG" >/dev/null
  rm -rf "$work/rootfs"
fi
echo "== base image: $BASE_TAG ($(docker image inspect -f '{{.Size}}' "$BASE_TAG" | awk '{printf "%.0f MB", $1 / 1e6}'))"

if [ "$BUILD" = 1 ]; then
  echo "== cargo build --release"
  cargo build --release --quiet -p controller -p storage -p frontend -p velourfog
fi
ctx="$work/context"
mkdir -p "$ctx/target/release" "$ctx/deploy"
for b in controller storage frontend velourfog; do
  [ -x "target/release/$b" ] || die "target/release/$b is missing; run without --no-build"
  objcopy --strip-debug "target/release/$b" "$ctx/target/release/$b"
done
cp -r deploy/Dockerfile deploy/docker deploy/nginx "$ctx/deploy/"

build() { # target, tag
  echo "== docker build --target $1 -t $2"
  DOCKER_BUILDKIT=0 docker build --network host --build-arg "BASE_IMAGE=$BASE_TAG" \
    --target "$1" -t "$2" -f "$ctx/deploy/Dockerfile" "$ctx" >"$work/build-$1.log" 2>&1 ||
    { tail -30 "$work/build-$1.log" >&2; die "docker build --target $1 failed (log above)"; }
}
build local "$TAG"
build nginx "$NGINX_TAG"
for image in "$TAG" "$NGINX_TAG"; do
  echo "built $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}'))"
done
