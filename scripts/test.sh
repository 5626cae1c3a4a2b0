#!/usr/bin/env bash
# The test command: sets up what the tests need (Docker daemon, local sandbox image, cargo-nextest),
# then runs every test against the real Docker engine and loopback servers.
set -euo pipefail
cd "$(dirname "$0")/.."
export PROCTOR_SANDBOX_IMAGE="$(scripts/ensure-docker.sh | tail -n1)"
# socat, sshd and openssl for the remote-engine tests (tests/remote_docker.rs).
scripts/ensure-test-tools.sh
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest..." >&2
  cargo install cargo-nextest --locked
fi
cargo test --workspace --doc --quiet
cargo nextest run --workspace --lib --bins --tests --no-fail-fast "$@"
