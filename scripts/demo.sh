#!/usr/bin/env bash
# Runs the demo: builds proctor, makes sure Docker and a sandbox image are there, then plays the
# shipped demo session. Extra arguments go to `proctor demo` (e.g. --headless --approve auto).
set -euo pipefail
cd "$(dirname "$0")/.."
if docker image inspect python:3.12-slim >/dev/null 2>&1 && [ -z "${PROCTOR_SANDBOX_IMAGE:-}" ]; then
  IMAGE=python:3.12-slim
else
  IMAGE="$(scripts/ensure-docker.sh | tail -n1)"
fi
cargo build --release --quiet
exec target/release/proctor --image "$IMAGE" demo "$@"
