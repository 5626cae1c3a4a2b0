#!/usr/bin/env bash
# Per-block latency of running `print(1)` in a Docker sandbox, four ways, on the same image:
#   1. proctor's executor (in-sandbox launcher; and its exec-per-block fallback)   benches/executor.rs
#   2. `docker exec` by the CLI into a long-lived container
#   3. AutoGen's DockerCommandLineCodeExecutor (PyPI autogen-ext[docker], in a venv made here)
#   4. `docker run --rm` (the cold-start reference)
# and proctor's executor again on the same daemon served over TLS with client certificates (a socat
# relay on 127.0.0.1, certificates made here with openssl): the cost of the TLS transport per block.
# Then the targets of issue 11, each beside its baseline measured in this run:
#   3 streaming ingest into a running app          benches/tui_stream.rs
#   5 idle CPU of the real TUI in a pty             scripts/bench_idle.py
#   6 per-block latency through the real binary     scripts/bench_block_e2e.py beside AutoGen, rounds
#   1, 2, 4, 7 and the rest: `cargo bench` of render, resume, workspace and every benches/screen_*.rs
#     and benches/tui_*.rs; their `BENCH <name> <value> <unit> [target]` lines and criterion's
#     estimates are collected.
# and prints ONE table: every figure, its issue-11 target and whether it is met ("not run" for a
# bench that is absent or failed).
# Usage: scripts/bench.sh [BLOCKS]   (default 50). Env: PROCTOR_SANDBOX_IMAGE, BENCH_SKIP_AUTOGEN=1,
#   BENCH_E2E_BLOCKS (30), BENCH_E2E_ROUNDS (3), BENCH_IDLE_SECS (30).
# Writes target/bench-results.md (the executor table, then the summary table) and prints it;
# every raw figure is in target/bench-lines.txt. BENCHMARKS.md quotes a run.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-50}"
IMAGE="${PROCTOR_SANDBOX_IMAGE:-proctor-sandbox:bookworm}"
E2E_BLOCKS="${BENCH_E2E_BLOCKS:-30}"
E2E_ROUNDS="${BENCH_E2E_ROUNDS:-3}"
IDLE_SECS="${BENCH_IDLE_SECS:-30}"
OUT=target/bench-results.md
LINES=target/bench-lines.txt
mkdir -p target
: >"$LINES"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
# One figure for the summary table: name value unit [target text].
bench_line() { echo "BENCH $*" >>"$LINES"; }
# A bench that did not run (absent or failed): a "not run" row.
not_run() { echo "NOTRUN $*" >>"$LINES"; }

echo "== release build (the benches, and the binary with them)" >&2
# (Not `cargo build --release`: without the dev-dependencies' features it would build everything
# a second time.)
cargo bench --quiet --no-run 2>/dev/null || echo "(some benches do not build; they show as not run)" >&2
BIN=target/release/proctor

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  if [ "$IMAGE" = "proctor-sandbox:bookworm" ]; then scripts/build-sandbox-image.sh "$IMAGE"; else
    echo "image $IMAGE missing" >&2; exit 1; fi
fi

now_ms() { date +%s%N | awk '{printf "%.3f", $1/1000000}'; }
# median and mean of numbers on stdin
summary() { sort -n | awk '{a[NR]=$1; s+=$1} END {printf "%.2f %.2f\n", a[int((NR+1)/2)], s/NR}'; }

echo "== proctor executor (cargo bench --bench executor)" >&2
BENCH_BLOCKS="$N" PROCTOR_SANDBOX_IMAGE="$IMAGE" cargo bench --quiet --bench executor 2>/dev/null | tee target/bench-proctor.txt >&2 || true
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
    cargo bench --quiet --bench executor 2>/dev/null | tee target/bench-proctor-tls.txt >&2 || true
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
AG_PY=""
if [ "${BENCH_SKIP_AUTOGEN:-0}" != 1 ]; then
  echo "== AutoGen DockerCommandLineCodeExecutor" >&2
  VENV=target/bench-venv
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q 'autogen-ext[docker]' >&2
  fi
  AG_VER="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("autogen-ext"))')"
  AG_PY=target/bench_autogen.py
  # AutoGen per block: IMAGE N same|distinct (`print(1)` every time, or `print(i)` as the e2e bench).
  cat >"$AG_PY" <<'PY'
import asyncio, statistics, sys, tempfile, time
from autogen_core import CancellationToken
from autogen_core.code_executor import CodeBlock
from autogen_ext.code_executors.docker import DockerCommandLineCodeExecutor

async def main(image, n, distinct):
    with tempfile.TemporaryDirectory() as d:
        ex = DockerCommandLineCodeExecutor(image=image, work_dir=d, timeout=60, auto_remove=True)
        code = lambda i: "print(%d)" % (i if distinct else 1)
        t = time.perf_counter()
        await ex.start()
        r = await ex.execute_code_blocks([CodeBlock(code=code(0), language="python")], CancellationToken())
        cold = (time.perf_counter() - t) * 1000
        assert r.exit_code == 0 and r.output.strip() == (code(0)[6:-1]), r
        ts = []
        for i in range(1, n + 1):
            block = [CodeBlock(code=code(i), language="python")]
            t = time.perf_counter()
            r = await ex.execute_code_blocks(block, CancellationToken())
            ts.append((time.perf_counter() - t) * 1000)
            assert r.exit_code == 0 and r.output.strip() == code(i)[6:-1], r
        await ex.stop()
    print("cold", "%.2f" % cold)
    print("median", "%.2f" % statistics.median(ts))
    print("mean", "%.2f" % statistics.mean(ts))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "distinct"))
PY
  "$VENV/bin/python" "$AG_PY" "$IMAGE" "$N" same >target/bench-autogen.txt
  AG_COLD=$(awk '$1=="cold"{print $2}' target/bench-autogen.txt)
  AG_MED=$(awk '$1=="median"{print $2}' target/bench-autogen.txt)
  AG_MEAN=$(awk '$1=="mean"{print $2}' target/bench-autogen.txt)
fi

P_MEAN=$(val proctor_launcher_mean_ms); P_MED=$(val proctor_launcher_median_ms)
P_COLD=$(val proctor_launcher_cold_first_block_ms)
E_MEAN=$(val proctor_exec_per_block_mean_ms); E_MED=$(val proctor_exec_per_block_median_ms)
RATIO="n/a"
if [ "$AG_MEAN" != "n/a" ] && [ -n "$P_MEAN" ]; then
  RATIO=$(awk -v a="$P_MEAN" -v b="$AG_MEAN" 'BEGIN {printf "%.3f", a / b}')
fi
if [ -n "$P_MED" ]; then
  bench_line executor/proctor_median "$P_MED" ms
  bench_line executor/autogen_median "$AG_MED" ms
  bench_line executor/proctor_over_autogen_mean "$RATIO" x "<= 0.25"
  bench_line executor/proctor_cold_first_block "$P_COLD" ms
  bench_line executor/docker_run_rm "$RUN_MED" ms
  bench_line executor/proctor_tls_median "$TLS_MED" ms
else
  not_run executor "cargo bench --bench executor failed"
fi

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
  echo "proctor / AutoGen per block (mean): $RATIO; proctor cold first block $P_COLD ms vs \`docker run --rm\` $RUN_MED ms."
} | tee "$OUT"

# ---- Target 6: per-block latency end to end, through the release binary, beside AutoGen ----
# Rounds alternate proctor and AutoGen so both see the same load; the figure is the median of the
# rounds' medians.
echo "== target 6: $E2E_ROUNDS rounds of $E2E_BLOCKS distinct print(i) blocks, proctor (headless, --approve auto) then AutoGen" >&2
: >target/bench-e2e-rounds.txt
for r in $(seq "$E2E_ROUNDS"); do
  if ! python3 scripts/bench_block_e2e.py "$BIN" "$IMAGE" "$E2E_BLOCKS" >target/bench-e2e.txt; then
    echo "(proctor e2e round $r failed)" >&2; continue
  fi
  pm=$(awk '$1=="e2e_median_ms"{print $2}' target/bench-e2e.txt)
  am="n/a"
  if [ -n "$AG_PY" ]; then
    "$VENV/bin/python" "$AG_PY" "$IMAGE" "$E2E_BLOCKS" distinct >target/bench-ag-e2e.txt &&
      am=$(awk '$1=="median"{print $2}' target/bench-ag-e2e.txt)
  fi
  echo "$r $pm $am $(awk '$1=="e2e_p90_ms"{print $2}' target/bench-e2e.txt)" | tee -a target/bench-e2e-rounds.txt >&2
done
if [ -s target/bench-e2e-rounds.txt ]; then
  med() { sort -n | awk '{a[NR]=$1} END {if (NR) printf "%.2f", (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
  PM=$(awk '{print $2}' target/bench-e2e-rounds.txt | med)
  P90=$(awk '{print $4}' target/bench-e2e-rounds.txt | med)
  bench_line e2e/proctor_block_median "$PM" ms
  bench_line e2e/proctor_block_p90 "$P90" ms
  AM=$(awk '$3!="n/a"{print $3}' target/bench-e2e-rounds.txt | med)
  if [ -n "$AM" ]; then
    bench_line e2e/autogen_block_median "$AM" ms
    bench_line e2e/proctor_over_autogen "$(awk -v a="$PM" -v b="$AM" 'BEGIN {printf "%.3f", a / b}')" x "<= 0.1"
  else
    not_run e2e/proctor_over_autogen "AutoGen skipped"
  fi
else
  not_run e2e/proctor_over_autogen "scripts/bench_block_e2e.py failed"
fi

# ---- Target 5: idle CPU of the real TUI in a pty ----
echo "== target 5: the TUI idle for ${IDLE_SECS} s with a 100,000-line transcript (scripts/bench_idle.py)" >&2
if python3 scripts/bench_idle.py "$BIN" "$IDLE_SECS" >target/bench-idle.txt; then
  cat target/bench-idle.txt >&2
  grep '^BENCH ' target/bench-idle.txt >>"$LINES" || true
else
  not_run idle/cpu_s "scripts/bench_idle.py failed"
fi

# ---- cargo benches: targets 1, 2, 3, 4, 7 and the workspace ----
# criterion's estimates as `BENCH <name> <estimate> <unit>`.
criterion_lines() {
  awk '/time:[[:space:]]*\[/ { n = $1; if (n == "time:") n = prev; s = $0; sub(/.*\[/, "", s);
         sub(/\].*/, "", s); split(s, a, " "); print "BENCH " n " " a[3] " " a[4]; next }
       NF { prev = $1 }'
}
run_bench() {
  local b="$1"
  if [ ! -f "benches/$b.rs" ]; then not_run "$b" "benches/$b.rs absent"; return; fi
  echo "== cargo bench --bench $b" >&2
  if cargo bench --quiet --bench "$b" 2>/dev/null >"target/bench-$b.txt"; then
    grep -E '^BENCH |^#|time:' "target/bench-$b.txt" >&2 || true
    grep '^BENCH ' "target/bench-$b.txt" >>"$LINES" || true
    criterion_lines <"target/bench-$b.txt" >>"$LINES"
  else
    not_run "$b" "cargo bench --bench $b failed"
  fi
}
EXTRA=$(cd benches && ls screen_*.rs tui_*.rs resume_*.rs 2>/dev/null | sed 's/\.rs$//' || true)
for b in render resume $EXTRA workspace; do run_bench "$b"; done

LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
# ---- the summary table ----
python3 - "$LINES" <<'PY' | tee -a "$OUT"
import re, sys

TARGETS = {
    "1": "render cost does not grow with the transcript",
    "2": "highlighting never blocks the screen",
    "3": "streaming ingest",
    "4": "resume to first frame",
    "5": "idle",
    "6": "per-block latency end to end",
    "7": "memory of a long session",
    "exec": "executor per block (bench.sh's earlier table)",
    "ws": "workspace snapshots",
}
# Targets for names this script knows; a bench may also give its own as the 5th field on.
KNOWN = {
    "tui_stream/frame_p99": "< 16",
    "tui_stream/keys_not_on_next_frame": "= 0",
    "idle/cpu_s": "< 0.1",
    "e2e/proctor_over_autogen": "<= 0.1",
    "render_ratio_bottom": "<= 1.5",
    "render_ratio_middle": "<= 1.5",
    "render_ratio_resize": "<= 1.5",
    "pending_ratio_first_frame": "<= 2",
    "resume_first_frame_vs_parse": "<= 1.2",
    "resume_peak_rss_vs_file": "<= 2",
    "tui_rss_1e5_vs_log": "<= 3",
}

def target_of(name):
    n = name.lower()
    if n.startswith("executor"): return "exec"
    if n.startswith("workspace"): return "ws"
    if n.startswith("e2e"): return "6"
    if n.startswith("idle"): return "5"
    if n.startswith("tui_stream") or "stream" in n: return "3"
    if "highlight" in n or "pending" in n: return "2"
    if "resume" in n: return "4"
    if "memory" in n or "rss" in n or n.startswith("tui_log"): return "7"
    if n.startswith("render"): return "1"
    return "other"

def to_ms(v, unit):
    return v * {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}.get(unit, float("nan"))

def verdict(value, target):
    m = re.fullmatch(r"\s*(<=|<|>=|>|=|≤|≥)\s*([0-9.]+)\s*\S*", target or "")
    if not m:
        return ""
    try:
        v = float(value)
    except ValueError:
        return ""
    op, t = m.group(1), float(m.group(2))
    ok = {"<=": v <= t, "≤": v <= t, "<": v < t, ">=": v >= t, "≥": v >= t, ">": v > t, "=": v == t}[op]
    return "met" if ok else "**missed**"

rows, notrun, crit = [], [], {}
for line in open(sys.argv[1], encoding="utf-8"):
    parts = line.split()
    if parts and parts[0] == "BENCH" and len(parts) >= 4:
        name, value, unit = parts[1], parts[2], parts[3]
        target = " ".join(parts[4:]) or KNOWN.get(name, "")
        rows.append((target_of(name), name, value, unit, target))
        try:
            crit[name] = to_ms(float(value), unit)
        except ValueError:
            pass
    elif parts and parts[0] == "NOTRUN":
        notrun.append((target_of(parts[1]), parts[1], " ".join(parts[2:])))

# Ratios the issue asks for, from criterion pairs when the benches did not print them.
have = {r[1] for r in rows}
for num, den, name, target in [
    ("render/transcript/1000000", "render/transcript/1000", "render/ratio_1e6_over_1e3", "<= 1.5"),
]:
    if num in crit and den in crit and name not in have:
        rows.append((target_of(name), name, "%.2f" % (crit[num] / crit[den]), "x", target))

order = ["1", "2", "3", "4", "5", "6", "7", "exec", "ws", "other"]
print()
print("| target | figure | value | unit | target | |")
print("|---|---|---:|---|---|---|")
for t in order:
    mine = [r for r in rows if r[0] == t]
    missing = [r for r in notrun if r[0] == t]
    label = "%s %s" % (t, TARGETS.get(t, "")) if t.isdigit() else TARGETS.get(t, t)
    if not mine and not missing and t.isdigit():
        print("| %s | | not run | | | |" % label)
    for _, name, value, unit, target in mine:
        print("| %s | %s | %s | %s | %s | %s |" % (label, name, value, unit, target, verdict(value, target)))
    for _, name, why in missing:
        print("| %s | %s | not run | | | %s |" % (label, name, why))
PY
{
  echo
  echo "Machine: $(nproc) cores, $(uname -sr), Docker $(docker version --format '{{.Server.Version}}' 2>/dev/null), $(date -u '+%Y-%m-%d %H:%M UTC');"
  echo "load average (1, 5, 15 min) $LOAD_START at the start, $LOAD_END at the end."
} | tee -a "$OUT"
