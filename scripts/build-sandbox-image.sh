#!/usr/bin/env bash
# Builds proctor's sandbox image without any container registry:
# debootstrap a minimal Debian bookworm with python3 + procps, then `docker import` it.
# Usage: scripts/build-sandbox-image.sh [--force] [IMAGE]   (default: proctor-sandbox:bookworm)
# Idempotent: does nothing when IMAGE exists and runs python3, unless --force.
set -euo pipefail
FORCE=0
if [ "${1:-}" = "--force" ]; then FORCE=1; shift; fi
IMAGE="${1:-proctor-sandbox:bookworm}"

if ! docker version >/dev/null 2>&1; then
  echo "cannot reach the Docker daemon (DOCKER_HOST=${DOCKER_HOST:-unix:///var/run/docker.sock}); start Docker first" >&2
  exit 1
fi

if [ "$FORCE" = 0 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  if docker run --rm --network none "$IMAGE" python3 -c 'print(1)' >/dev/null 2>&1; then
    echo "sandbox image $IMAGE already present"
    exit 0
  fi
  echo "sandbox image $IMAGE exists but cannot run python3; rebuilding"
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

if ! command -v debootstrap >/dev/null 2>&1; then
  echo "installing debootstrap (apt-get)..."
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq debootstrap >/dev/null
fi

ROOT="$(mktemp -d /tmp/proctor-rootfs.XXXXXX)"
trap '$SUDO rm -rf "$ROOT"' EXIT
echo "debootstrap bookworm into $ROOT (about a minute)..."
$SUDO debootstrap --variant=minbase --include=python3,python-is-python3,procps \
  bookworm "$ROOT" http://deb.debian.org/debian >/tmp/proctor-debootstrap.log 2>&1 || {
  echo "debootstrap failed; see /tmp/proctor-debootstrap.log" >&2
  tail -20 /tmp/proctor-debootstrap.log >&2
  exit 1
}
# Trim caches and docs: smaller image, faster container start.
$SUDO rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* \
  "$ROOT"/usr/share/doc "$ROOT"/usr/share/man "$ROOT"/usr/share/locale
$SUDO tar -C "$ROOT" -c . | docker import \
  -c 'CMD ["python3"]' -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  - "$IMAGE" >/dev/null
echo "built sandbox image $IMAGE"
