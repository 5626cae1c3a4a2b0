#!/usr/bin/env bash
# Makes sure a Docker daemon answers and the sandbox image exists (built locally, no registry).
# Prints the image name to use on the last line of stdout.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
IMAGE="${PROCTOR_SANDBOX_IMAGE:-proctor-sandbox:bookworm}"

if ! command -v docker >/dev/null 2>&1; then
  echo "proctor: the docker CLI is not installed; install Docker Engine (https://docs.docker.com/engine/install/)" >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "Docker daemon not answering; trying to start it..." >&2
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
  ($SUDO systemctl start docker || $SUDO service docker start || ($SUDO dockerd >/tmp/proctor-dockerd.log 2>&1 &)) >/dev/null 2>&1 || true
  for _ in $(seq 1 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
  if ! docker info >/dev/null 2>&1; then
    echo "proctor: cannot reach the Docker daemon; start it (e.g. 'sudo systemctl start docker') and retry" >&2
    exit 1
  fi
fi
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  if [ "$IMAGE" = "proctor-sandbox:bookworm" ]; then
    "$HERE/build-sandbox-image.sh" "$IMAGE" >&2
  else
    echo "pulling $IMAGE..." >&2
    docker pull "$IMAGE" >&2 || { echo "proctor: cannot pull $IMAGE; unset PROCTOR_SANDBOX_IMAGE to build the local image" >&2; exit 1; }
  fi
fi
echo "$IMAGE"
