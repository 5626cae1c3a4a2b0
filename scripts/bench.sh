#!/usr/bin/env bash
# Per-block latency of running `print(1)` in a Docker sandbox, four ways, on the same image:
#   1. proctor's executor (in-sandbox launcher; and its exec-per-block fallback)   benches/executor.rs
#   2. `docker exec` by the CLI into a long-lived container
#   3. AutoGen's DockerCommandLineCodeExecutor (PyPI autogen-ext[docker], in a venv made here)
#   4. `docker run --rm` (the cold-start reference)
# and proctor's executor again on the same daemon served over TLS with client certificates (a socat
# relay on 127.0.0.1, certificates made here with openssl): the cost of the TLS transport per block.
# then the resume bench (benches/resume.rs) and the workspace snapshot bench (benches/workspace.rs).
# Usage: scripts/bench.sh [BLOCKS]   (default 50). Env: PROCTOR_SANDBOX_IMAGE, BENCH_SKIP_AUTOGEN=1.
# Writes target/bench-results.md and prints it; BENCHMARKS.md quotes a run.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-50}"
IMAGE="${PROCTOR_SANDBOX_IMAGE:-proctor-sandbox:bookworm}"
OUT=target/bench-results.md
mkdir -p target

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  if [ "$IMAGE" = "proctor-sandbox:bookworm" ]; then scripts/build-sandbox-image.sh "$IMAGE"; else
    echo "image $IMAGE missing" >&2; exit 1; fi
fi

now_ms() { date +%s%N | awk '{printf "%.3f", $1/1000000}'; }
# median and mean of numbers on stdin
summary() { sort -n | awk '{a[NR]=$1; s+=$1} END {printf "%.2f %.2f\n", a[int((NR+1)/2)], s/NR}'; }

echo "== proctor executor (cargo bench --bench executor)" >&2
BENCH_BLOCKS="$N" PROCTOR_SANDBOX_IMAGE="$IMAGE" cargo bench --quiet --bench executor 2>/dev/null | tee target/bench-proctor.txt >&2
val() { awk -v k="$1" '$1==k {print $2}' target/bench-proctor.txt; }

echo "== proctor executor over TLS (socat relay on 127.0.0.1, client certificates)" >&2
TLS_MED="n/a"; TLS_MEAN="n/a"; TLS_COLD="n/a"
if command -v socat >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1; then
  PKI="$(mktemp -d)"
  RELAY=""
  cleanup_tls() { [ -n "$RELAY" ] && kill "$RELAY" 2>/dev/null; rm -rf "$PKI"; }
  trap cleanup_tls EXIT
  (
    cd "$PKI"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
      -keyout ca-key.pem -out ca.pem
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    for who in server client; do
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$who" \
        -keyout "$who-key.pem" -out "$who.csr"
      openssl x509 -req -in "$who.csr" -days 2 -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
        -extfile "$who.ext" -out "$who.pem"
    done
    mkdir client && cp ca.pem client/ca.pem && cp client.pem client/cert.pem && cp client-key.pem client/key.pem
    # socat's forked children cannot resume TLS sessions that carry a client certificate; stateful
    # tickets make them fall back to a full handshake (dockerd itself resumes fine). `nodelay` below:
    # dockerd (Go) sets TCP_NODELAY; without it socat's small writes wait for delayed ACKs (~40 ms).
    printf 'openssl_conf = r\n[r]\nssl_conf = s\n[s]\nsystem_default = d\n[d]\nOptions = -SessionTicket\n' >relay.cnf
  ) >/dev/null 2>&1
  PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  OPENSSL_CONF="$PKI/relay.cnf" socat \
    "OPENSSL-LISTEN:$PORT,bind=127.0.0.1,reuseaddr,fork,nodelay,cert=$PKI/server.pem,key=$PKI/server-key.pem,cafile=$PKI/ca.pem,verify=1" \
    UNIX-CONNECT:/var/run/docker.sock 2>/dev/null &
  RELAY=$!
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  DOCKER_HOST="tcp://127.0.0.1:$PORT" DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH="$PKI/client" \
    BENCH_ENGINE_LABEL=tls BENCH_BLOCKS="$N" PROCTOR_SANDBOX_IMAGE="$IMAGE" \
    cargo bench --quiet --bench executor 2>/dev/null | tee target/bench-proctor-tls.txt >&2
  tval() { awk -v k="$1" '$1==k {print $2}' target/bench-proctor-tls.txt; }
  TLS_MED=$(tval proctor_launcher_tls_median_ms); TLS_MEAN=$(tval proctor_launcher_tls_mean_ms)
  TLS_COLD=$(tval proctor_launcher_tls_cold_first_block_ms)
  cleanup_tls; RELAY=""; trap - EXIT
else
  echo "(skipped: socat or openssl missing; scripts/ensure-test-tools.sh installs them)" >&2
fi

echo "== docker exec (CLI)" >&2
WS="$(mktemp -d)"; chmod 777 "$WS"; echo 'print(1)' >"$WS/b.py"
C="$(docker run -d --rm --network none -v "$WS:/workspace" "$IMAGE" sleep 2147483647)"
docker exec "$C" python3 /workspace/b.py >/dev/null
: >target/bench-cli.txt
for _ in $(seq "$N"); do
  t0=$(now_ms); docker exec "$C" python3 /workspace/b.py >/dev/null; t1=$(now_ms)
  echo "$t1 - $t0" | bc >>target/bench-cli.txt
done
docker rm -f "$C" >/dev/null; rm -rf "$WS"
read -r CLI_MED CLI_MEAN < <(summary <target/bench-cli.txt)

echo "== docker run --rm (cold reference)" >&2
: >target/bench-run.txt
for _ in $(seq 5); do
  t0=$(now_ms); docker run --rm --network none "$IMAGE" python3 -c 'print(1)' >/dev/null; t1=$(now_ms)
  echo "$t1 - $t0" | bc >>target/bench-run.txt
done
read -r RUN_MED RUN_MEAN < <(summary <target/bench-run.txt)

AG_MED="n/a"; AG_MEAN="n/a"; AG_COLD="n/a"; AG_VER="skipped"
if [ "${BENCH_SKIP_AUTOGEN:-0}" != 1 ]; then
  echo "== AutoGen DockerCommandLineCodeExecutor" >&2
  VENV=target/bench-venv
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q 'autogen-ext[docker]' >&2
  fi
  AG_VER="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("autogen-ext"))')"
  "$VENV/bin/python" - "$IMAGE" "$N" >target/bench-autogen.txt <<'PY'
import asyncio, sys, tempfile, time
from autogen_core import CancellationToken
from autogen_core.code_executor import CodeBlock
from autogen_ext.code_executors.docker import DockerCommandLineCodeExecutor

async def main(image, n):
    with tempfile.TemporaryDirectory() as d:
        ex = DockerCommandLineCodeExecutor(image=image, work_dir=d, timeout=60, auto_remove=True)
        block = [CodeBlock(code="print(1)", language="python")]
        t = time.perf_counter()
        await ex.start()
        r = await ex.execute_code_blocks(block, CancellationToken())
        cold = (time.perf_counter() - t) * 1000
        assert r.exit_code == 0 and r.output.strip() == "1", r
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            r = await ex.execute_code_blocks(block, CancellationToken())
            ts.append((time.perf_counter() - t) * 1000)
            assert r.exit_code == 0, r
        await ex.stop()
    ts.sort()
    print("cold", "%.2f" % cold)
    print("median", "%.2f" % ts[len(ts) // 2])
    print("mean", "%.2f" % (sum(ts) / len(ts)))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
PY
  AG_COLD=$(awk '$1=="cold"{print $2}' target/bench-autogen.txt)
  AG_MED=$(awk '$1=="median"{print $2}' target/bench-autogen.txt)
  AG_MEAN=$(awk '$1=="mean"{print $2}' target/bench-autogen.txt)
fi

P_MEAN=$(val proctor_launcher_mean_ms); P_MED=$(val proctor_launcher_median_ms)
P_COLD=$(val proctor_launcher_cold_first_block_ms)
E_MEAN=$(val proctor_exec_per_block_mean_ms); E_MED=$(val proctor_exec_per_block_median_ms)
RATIO="n/a"
if [ "$AG_MEAN" != "n/a" ]; then RATIO=$(echo "scale=3; $P_MEAN / $AG_MEAN" | bc); fi

{
  echo "| $N blocks of \`print(1)\`, image \`$IMAGE\` | median ms/block | mean ms/block | cold first block ms (median of 5) |"
  echo "|---|---:|---:|---:|"
  echo "| proctor executor (in-sandbox launcher) | $P_MED | $P_MEAN | $P_COLD |"
  echo "| proctor executor, exec per block (fallback; ≈ a bollard exec) | $E_MED | $E_MEAN | $(val proctor_exec_per_block_cold_first_block_ms) |"
  echo "| proctor executor over TLS (socat relay on 127.0.0.1, client certificates) | $TLS_MED | $TLS_MEAN | $TLS_COLD |"
  echo "| \`docker exec\` by the CLI | $CLI_MED | $CLI_MEAN | |"
  echo "| AutoGen DockerCommandLineCodeExecutor ($AG_VER) | $AG_MED | $AG_MEAN | $AG_COLD |"
  echo "| \`docker run --rm\` | | | $RUN_MED |"
  echo
  echo "proctor / AutoGen per block (mean): $RATIO (target ≤ 0.25); proctor cold first block $P_COLD ms vs \`docker run --rm\` $RUN_MED ms."
  echo "Machine: $(nproc) cores, $(uname -sr), Docker $(docker version --format '{{.Server.Version}}' 2>/dev/null), $(date -u +%Y-%m-%d)."
} | tee "$OUT"

echo "== resume: 100,000-event session (cargo bench --bench resume)" >&2
cargo bench --quiet --bench resume 2>/dev/null | grep -E '^resume_|^list_|time:' | tee -a "$OUT"

echo "== workspace: snapshot and change list on a 10,000-file repository (cargo bench --bench workspace)" >&2
cargo bench --quiet --bench workspace 2>/dev/null | grep -E '^workspace_|time:' | tee -a "$OUT"
