#!/usr/bin/env bash
# Installs the tools the remote-Docker tests need (tests/remote_docker.rs): socat serves the local
# daemon over TLS, sshd serves it over SSH, openssl makes the test certificates. Idempotent and quiet
# when everything is present; uses apt-get (Debian/Ubuntu) otherwise, as build-sandbox-image.sh does.
set -euo pipefail
missing=()
command -v socat >/dev/null 2>&1 || missing+=(socat)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ "${#missing[@]}" = 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "proctor tests need: ${missing[*]}; install them with your package manager" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
echo "installing test tools (apt-get): ${missing[*]}..." >&2
$SUDO apt-get update -qq >/dev/null
# policy-rc.d (where present) keeps the package's own sshd service from starting; the tests run
# their own sshd on 127.0.0.1 with their own keys.
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >/dev/null
