#!/usr/bin/env python3
"""Idle cost of the TUI (issue 11, target 5): the real binary in a pseudo-terminal (200x50),
showing a session whose transcript is 100,000 lines, left alone for 30 s. Measures the CPU time
the process uses in that window (utime + stime of every thread, from /proc/<pid>/stat, as
getrusage would report it; and the scheduler's nanosecond count from /proc/<pid>/task/*/schedstat),
how often its threads woke up (context switches), and how many bytes it wrote to the terminal.

The session is made first through the same binary: a scripted agent (docs/scripted.md) replies
100 times with 1,000 lines each, headless; then `proctor resume ID` opens it in the TUI.
Usage: bench_idle.py PROCTOR_BIN [IDLE_SECONDS] [LINES]   (prints `BENCH name value unit` lines)"""
import fcntl
import os
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time

COLS, ROWS = 200, 50


def make_session(binary, d, lines):
    per_reply = 1000
    replies = max(1, lines // per_reply)
    script = os.path.join(d, "script.toml")
    with open(script, "w") as f:
        for r in range(replies):
            # Numbered across the session: no two replies look alike to loop detection.
            # (Short lines: the session is made in seconds, streamed 12 characters at a time.)
            body = "".join("- %d\n" % (r * per_reply + i) for i in range(per_reply))
            f.write("[[reply]]\nagent = \"writer\"\ntext = '''\n%s'''\n" % body)
        f.write('[[reply]]\nagent = "writer"\ntext = "TERMINATE"\n')
    config = os.path.join(d, "config.toml")
    with open(config, "w") as f:
        f.write('[providers.bench]\nkind = "scripted"\nscript = "%s"\n' % script)
    team = os.path.join(d, "team.toml")
    with open(team, "w") as f:
        f.write(
            'name = "idle"\n[[agents]]\nname = "writer"\ndescription = "writes lines"\n'
            'model = "bench/writer"\nsystem = "x"\n'
            "[orchestration]\nmax_rounds = %d\n"
            "[termination]\ntext = \"TERMINATE\"\nmax_consecutive_auto_replies = %d\n"
            % (replies + 5, replies + 5)
        )
    data = os.path.join(d, "data")
    cmd = [binary, "--config", config, "--data-dir", data, "run", "--team", team,
           "--task", "write lines", "--headless", "--json"]
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        sys.exit("making the session failed (exit %d): %s" % (p.returncode, p.stderr.decode()[-500:]))
    (sid,) = os.listdir(os.path.join(data, "sessions"))
    return config, data, sid, replies * per_reply


def cpu(pid):
    """(utime+stime seconds of the whole process, dead threads included, as getrusage reports
    them; {tid: (schedstat ns on CPU, context switches)} of its live threads)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    threads = {}
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
                ns = int(f.read().split()[0])
            switches = 0
            with open("/proc/%d/task/%s/status" % (pid, t)) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        switches += int(line.split()[1])
            threads[t] = (ns, switches)
        except OSError:
            pass
    return ticks, threads


def main():
    binary = os.path.abspath(sys.argv[1])
    idle = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
    lines = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
    with tempfile.TemporaryDirectory() as d:
        t = time.monotonic()
        config, data, sid, made = make_session(binary, d, lines)
        print("# session of %d transcript lines made in %.1f s" % (made, time.monotonic() - t))
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        env = dict(os.environ, TERM="xterm-256color")
        env.pop("NO_COLOR", None)
        p = subprocess.Popen(
            [binary, "--config", config, "--data-dir", data, "resume", sid],
            stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0), cwd=d)
        os.close(slave)
        out = bytearray()
        lock = threading.Lock()

        def drain():
            while True:
                try:
                    b = os.read(master, 65536)
                except OSError:
                    return
                if not b:
                    return
                with lock:
                    out.extend(b)

        threading.Thread(target=drain, daemon=True).start()
        t0 = time.monotonic()
        # The last reply's last line on screen: the whole transcript is in and drawn.
        needle = str(made - 1).encode()
        while True:
            with lock:
                seen = needle in out
            if seen:
                break
            if p.poll() is not None or time.monotonic() - t0 > 120:
                p.kill()
                sys.exit("the TUI did not show the transcript (exit %s); output tail: %r"
                         % (p.poll(), bytes(out[-400:])))
            time.sleep(0.01)
        first = time.monotonic() - t0
        # Let it settle (highlighting, the last coalesced frames; tokio's idle blocking threads
        # end after 10 s), then measure.
        time.sleep(12.0)
        with lock:
            bytes_before = len(out)
        c0, th0 = cpu(p.pid)
        time.sleep(idle)
        c1, th1 = cpu(p.pid)
        # Threads alive at both ends (a thread that ends in between is counted by c1 - c0 only).
        both = th0.keys() & th1.keys()
        ns = sum(th1[t][0] - th0[t][0] for t in both)
        switches = sum(th1[t][1] - th0[t][1] for t in both)
        ended = len(th0.keys() - th1.keys())
        with lock:
            written = len(out) - bytes_before
        alive = p.poll() is None
        os.write(master, b"q")
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        os.close(master)
        if not alive:
            sys.exit("the TUI exited during the idle window")
    print("# resume to the transcript's tail on screen: %.2f s" % first)
    print("BENCH idle/cpu_s %.3f s" % (c1 - c0))
    print("BENCH idle/cpu_sched_s %.4f s" % (ns / 1e9))
    print("BENCH idle/wakeups %d switches" % switches)
    print("# threads that ended during the window: %d" % ended)
    print("BENCH idle/bytes_to_terminal %d bytes" % written)
    print("BENCH idle/window %.0f s" % idle)


if __name__ == "__main__":
    main()
