# proctor's in-sandbox launcher: one long-lived `docker exec` per session that starts each block as a
# fresh process in its own session, streams its output back in frames, enforces the deadline and the
# output cap, and kills every process the block left behind before reporting the exit.
#
# Protocol. Host -> launcher (stdin): one JSON object per line:
#   {"op":"run","nonce":"<32 hex>","argv":[...],"cwd":"/workspace","env":{...},"timeout_ms":N,"limit":BYTES,
#    "path0":"/workspace"}   (path0, optional: a Python script's sys.path[0] instead of its directory)
#   {"op":"kill"}      cancel the running block (ignored when idle)
# Launcher -> host (stdout): frames of 1 type byte + 4-byte big-endian length + payload:
#   R ready {"pid","v"} · 1 stdout bytes · 2 stderr bytes · X exit {"code","timed_out","cancelled",
#   "oom","total","kept","swept","spawn_error"}
# Every 1/2/X frame of a block starts with that block's nonce (from its `run`), so output the block
# manages to push into this stream cannot pass for the launcher's. The bootstrap made this process
# non-dumpable (prctl PR_SET_DUMPABLE 0) before reading the script: code of the same uid cannot open
# /proc/<launcher>/fd/*, read its memory (the nonce) or ptrace it.
# The launcher runs as the same uid as the code it starts (see docs/sandbox.md); the container's main
# process runs as another uid, so kill(-1, SIGKILL) reaches exactly the block's processes.
import json
import os
import selectors
import signal
import struct
import subprocess
import sys
import time

VERSION = 1


def send(kind, payload):
    data = struct.pack(">cI", kind, len(payload)) + payload
    view = memoryview(data)
    while view:
        n = os.write(1, view)
        view = view[n:]


def oom_kills():
    for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        try:
            with open(path) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 2 and parts[0] == "oom_kill":
                        return int(parts[1])
        except OSError:
            pass
    return None


def leftovers():
    """Live processes of this uid other than the launcher (zombies do not count)."""
    me, mine, n = os.getpid(), os.getuid(), 0
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open("/proc/%s/status" % d) as f:
                state = uid = None
                for line in f:
                    if line.startswith("State:"):
                        state = line.split()[1]
                    elif line.startswith("Uid:"):
                        uid = int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            continue
        if uid == mine and state not in ("Z", "X"):
            n += 1
    return n


def sweep(child=None):
    """SIGKILL every process this uid may signal (all block processes), until none is left.

    kill(-1) cannot reach pid 1 or the container's main process (another uid), and it reaches
    setsid'd and double-forked leftovers that a process-group kill would miss."""
    rounds = 0
    end = time.monotonic() + 2.0
    while True:
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        if child is not None:
            child.poll()
        if leftovers() == 0:
            return rounds, True
        rounds += 1
        if time.monotonic() > end:
            return rounds, False
        time.sleep(0.001)


class Stdin:
    def __init__(self):
        self.buf = b""
        self.eof = False

    def fill(self):
        data = os.read(0, 65536)
        if not data:
            self.eof = True
        self.buf += data

    def lines(self):
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)


# A Python interpreter started ahead of the next block (after the previous block's processes are
# all gone, so no block code ever ran next to it). Given a script path on the fd named by argv[1], it runs the script
# as `python3 PATH` would: fresh __main__ module, sys.argv, sys.path[0], exit code, tracebacks.
# The path may be followed by NUL and the directory to use as sys.path[0] (an unnamed block's file
# lives outside the workspace but runs as if it were in it).
# Until the block starts it must run nothing from the workspace (its cwd): the current directory
# leaves sys.path before anything is imported, and the stub uses only builtins and modules the
# interpreter already loaded.
WARM_STUB = r"""#proctor-warm
import sys as _sys
_sys.path[:] = [p for p in _sys.path if p not in ("", ".", "/workspace")]
import os as _os
def _proctor_load():
    r = _os.fdopen(int(_sys.argv[1]), "rb", buffering=0)
    line = r.readline()
    r.close()
    if not line:
        _os._exit(0)
    raw, _, path0 = line.rstrip(b"\n").partition(b"\0")
    path = _os.fsdecode(raw)
    _sys.argv = [path]
    _sys.path.insert(0, _os.fsdecode(path0) if path0 else _os.path.dirname(_os.path.abspath(path)))
    main = type(_sys)("__main__")
    main.__file__ = path
    main.__builtins__ = __builtins__
    _sys.modules["__main__"] = main
    with open(path, "rb") as f:
        src = f.read()
    try:
        return compile(src, path, "exec"), main.__dict__
    except SyntaxError as e:
        e.__traceback__ = None
        _sys.excepthook(type(e), e, None)
        _sys.exit(1)
_c, _g = _proctor_load()
del _proctor_load
try:
    exec(_c, _g)
except SystemExit:
    raise
except BaseException as _e:
    _e.__traceback__ = _e.__traceback__.tb_next
    _sys.excepthook(type(_e), _e, _e.__traceback__)
    _sys.exit(1)
"""


class Warm:
    """At most one pre-started interpreter, with the argv/env/cwd it was started for."""

    def __init__(self):
        self.proc = None
        self.key = None
        self.control = None

    def start(self, key):
        self.discard()
        interp, env, cwd = key
        r, w = os.pipe()
        try:
            proc = spawn([interp, "-c", WARM_STUB, str(r)], dict(env), cwd, pass_fds=(r,))
        except OSError:
            os.close(r)
            os.close(w)
            return
        os.close(r)
        self.proc, self.key, self.control = proc, key, w

    def take(self, key):
        """The warm interpreter for `key`, told to run `path`, or None."""
        return self.proc if self.proc is not None and self.key == key and self.proc.poll() is None else None

    def hand_over(self, path, path0=None):
        proc, w = self.proc, self.control
        self.proc = self.key = self.control = None
        line = os.fsencode(path)
        if path0:
            line += b"\0" + os.fsencode(path0)
        try:
            os.write(w, line + b"\n")
        except OSError:
            os.close(w)
            self.proc, self.control = proc, None
            self.discard()
            return None
        os.close(w)
        return proc

    def discard(self):
        if self.control is not None:
            os.close(self.control)
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait()
            self.proc.stdout.close()
            self.proc.stderr.close()
            # Whatever it may have started dies too, as after a block.
            sweep()
        self.proc = self.key = self.control = None


def spawn(argv, env, cwd, pass_fds=()):
    child = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,
        close_fds=True,
        pass_fds=pass_fds,
        # The lowest CPU priority: the launcher must keep the CPU it needs to enforce the deadline.
        preexec_fn=lambda: os.setpriority(os.PRIO_PROCESS, 0, 19),
    )
    try:
        with open("/proc/%d/oom_score_adj" % child.pid, "w") as f:
            f.write("1000")
    except OSError:
        pass
    return child


WARM = Warm()


def run_block(cmd, stdin):
    nonce = str(cmd.get("nonce", "")).encode()
    out = lambda kind, payload: send(kind, nonce + payload)
    limit = int(cmd.get("limit", 1 << 20))
    timeout = max(0.0, cmd.get("timeout_ms", 60000) / 1000.0)
    oom_before = oom_kills()
    argv = cmd["argv"]
    env = dict(os.environ, **(cmd.get("env") or {}))
    cwd = cmd.get("cwd") or "/"
    warm_key = None
    if len(argv) == 2 and argv[0] in ("python3", "python"):
        warm_key = (argv[0], tuple(sorted(env.items())), cwd)
    path0 = cmd.get("path0")
    start = time.monotonic()
    child = None
    if warm_key is not None and WARM.take(warm_key) is not None:
        child = WARM.hand_over(argv[1], path0)
    else:
        WARM.discard()
        if warm_key is not None and path0:
            # sys.path[0] other than the script's directory: only the stub can do that.
            WARM.start(warm_key)
            if WARM.take(warm_key) is not None:
                child = WARM.hand_over(argv[1], path0)
    if child is None:
        try:
            child = spawn(argv, env, cwd)
        except OSError as e:
            out(b"X", json.dumps({"code": 127, "spawn_error": str(e)}).encode())
            return True
    deadline = start + timeout
    sel = selectors.DefaultSelector()
    sel.register(child.stdout.fileno(), selectors.EVENT_READ, b"1")
    sel.register(child.stderr.fileno(), selectors.EVENT_READ, b"2")
    sel.register(0, selectors.EVENT_READ, b"in")
    pidfd = None
    try:
        pidfd = os.pidfd_open(child.pid)
        sel.register(pidfd, selectors.EVENT_READ, b"pid")
    except (AttributeError, OSError):
        pidfd = None
    pipes = 2
    total = kept = 0
    timed_out = cancelled = False
    exited = killed = False
    swept = 0
    host_gone = False

    def kill_all():
        nonlocal killed, swept
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except OSError:
            pass
        n, _ = sweep(child)
        swept += n
        killed = True

    while pipes > 0 or not exited:
        now = time.monotonic()
        if not killed and now >= deadline:
            timed_out = True
            kill_all()
            continue
        wait = deadline - now if not killed else 0.5
        if pidfd is None and not exited:
            wait = min(wait, 0.02)
        for key, _ in sel.select(wait):
            tag = key.data
            if tag == b"in":
                try:
                    stdin.fill()
                except OSError:
                    stdin.eof = True
                if stdin.eof:
                    sel.unregister(0)
                    host_gone = True
                    if not killed:
                        cancelled = True
                        kill_all()
                    continue
                for c in stdin.lines():
                    if c.get("op") == "kill" and not killed:
                        cancelled = True
                        kill_all()
                    elif c.get("op") == "run":
                        # Never dropped silently: the host learns at once that it is out of step.
                        busy = {"code": 127, "spawn_error": "the launcher is still running a block"}
                        send(b"X", str(c.get("nonce", "")).encode() + json.dumps(busy).encode())
            elif tag == b"pid":
                sel.unregister(pidfd)
                os.close(pidfd)
                pidfd = -1
                exited = True
            else:
                try:
                    data = os.read(key.fd, 65536)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(key.fd)
                    pipes -= 1
                    continue
                total += len(data)
                if kept < limit:
                    part = data[: limit - kept]
                    kept += len(part)
                    out(tag, part)
        if not exited and child.poll() is not None:
            exited = True
        if exited and not killed:
            # The block's main process is gone: whatever it left behind dies now, which also
            # closes the output pipes those leftovers held.
            n, _ = sweep(child)
            swept += n
            killed = True
    code = child.wait()
    if pidfd is not None and pidfd >= 0:
        try:
            sel.unregister(pidfd)
        except (KeyError, ValueError):
            pass
        os.close(pidfd)
    sel.close()
    child.stdout.close()
    child.stderr.close()
    oom_after = oom_kills()
    # Only the cgroup's OOM-kill counter says OOM: an OOM-killed child makes its parent exit with
    # any code (bash: 137), and a plain SIGKILL is not an OOM. Unknown counter: not called OOM.
    oom = False
    if not timed_out and not cancelled and oom_before is not None and oom_after is not None:
        oom = oom_after > oom_before
    out(
        b"X",
        json.dumps(
            {
                "code": code,
                "timed_out": timed_out,
                "cancelled": cancelled,
                "oom": oom,
                "total": total,
                "kept": kept,
                "swept": swept,
            }
        ).encode(),
    )
    if warm_key is not None and not host_gone:
        WARM.start(warm_key)
    return not host_gone


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    # A previous launcher may have died mid-block: start from a clean process table.
    sweep()
    send(b"R", json.dumps({"pid": os.getpid(), "v": VERSION}).encode())
    stdin = Stdin()
    while True:
        pending = list(stdin.lines())
        for c in pending:
            if c.get("op") == "run":
                if not run_block(c, stdin):
                    return
            elif c.get("op") == "ping":
                send(b"P", b"")
        if stdin.eof:
            return
        stdin.fill()


if __name__ == "__main__":
    try:
        main()
    finally:
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
    sys.exit(0)
