#!/usr/bin/env python3
"""Per-block latency through the real binary: `proctor run --headless --json --approve auto` on a
scripted agent that proposes one distinct `print(i)` block per turn. For each block, the time from
the `approval_resolved` line to its `execution_finished` line as read on proctor's stdout.
Usage: bench_block_e2e.py PROCTOR_BIN IMAGE [BLOCKS]   (prints `key value` lines)"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def main():
    binary, image = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "script.toml")
        with open(script, "w") as f:
            # One cold block first (container start), then n warm ones.
            for i in range(n + 1):
                f.write('[[reply]]\nagent = "coder"\ntext = """\n```python\nprint(%d)\n```\n"""\n' % i)
            f.write('[[reply]]\nagent = "coder"\ntext = "TERMINATE"\n')
        config = os.path.join(d, "config.toml")
        with open(config, "w") as f:
            f.write('[providers.bench]\nkind = "scripted"\nscript = "%s"\n' % script)
        team = os.path.join(d, "team.toml")
        with open(team, "w") as f:
            f.write(
                'name = "bench"\n[[agents]]\nname = "coder"\ndescription = "prints"\n'
                'model = "bench/coder"\nsystem = "x"\ncan_execute = true\n'
                "[orchestration]\nmax_rounds = %d\n"
                "[termination]\nmax_consecutive_auto_replies = %d\n"
                '[executor]\nimage = "%s"\n' % (4 * n + 10, 4 * n + 10, image)
            )
        data = os.path.join(d, "data")
        cmd = [binary, "--config", config, "--data-dir", data, "run", "--team", team,
               "--task", "print numbers", "--headless", "--json", "--approve", "auto"]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        resolved, lat, outputs = {}, [], []
        dump = open(os.environ["BENCH_DUMP"], "wb") if os.environ.get("BENCH_DUMP") else None
        for raw in p.stdout:
            t = time.perf_counter()
            if dump:
                dump.write(raw)
            ev = json.loads(raw)
            kind = ev.get("type")
            if kind == "approval_resolved":
                resolved[(ev["id"], ev["block"])] = t
            elif kind == "execution_finished":
                t0 = resolved.get((ev["id"], ev["block"]))
                if t0 is not None:
                    lat.append((t - t0) * 1000)
                    outputs.append(ev["output"].strip())
        err = p.stderr.read().decode(errors="replace")
        if p.wait() != 0 or len(lat) != n + 1:
            sys.exit("proctor run failed (exit %s, %d blocks): %s" % (p.returncode, len(lat), err.strip()[-500:]))
        if outputs != [str(i) for i in range(n + 1)]:
            sys.exit("unexpected outputs: %r" % outputs[:5])
    warm = lat[1:]
    print("e2e_cold_first_block_ms %.2f" % lat[0])
    print("e2e_median_ms %.2f" % statistics.median(warm))
    print("e2e_mean_ms %.2f" % statistics.mean(warm))
    print("e2e_p90_ms %.2f" % sorted(warm)[int(0.9 * (len(warm) - 1))])


if __name__ == "__main__":
    main()
