#!/usr/bin/env bash
# Builds proctor's sandbox image without any container registry:
# debootstrap a minimal Debian bookworm with python3 + procps, then `docker import` it.
# Usage: scripts/build-sandbox-image.sh [IMAGE]   (default: proctor-sandbox:bookworm)
set -euo pipefail
IMAGE="${1:-proctor-sandbox:bookworm}"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "sandbox image $IMAGE already present"
  exit 0
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
