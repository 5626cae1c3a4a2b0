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


def leftovers(spare=None):
    """Live processes of this uid other than the launcher and `spare` (zombies do not count)."""
    me, mine, n = os.getpid(), os.getuid(), 0
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in (me, spare):
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


# The fork server: a Python interpreter started ahead of the blocks (after every block process of
# this uid is dead, so no block code has ever run beside it) that forks one child per Python block.
# A fork costs about a millisecond where an interpreter start costs tens (more on slow storage).
#
# What it holds: nothing of any block. It never runs block code, never reads block output and never
# sees a nonce; it is handed only a script path and the two pipe ends for the block's stdout and
# stderr (over a socket pair that only the launcher and it hold). It is non-dumpable, so code of the
# same uid cannot read or write its memory or open its file descriptors; it ignores the signals a
# block could send to make it act. A block CAN kill or stop it (same uid): the launcher then sees it
# gone or unresponsive and starts a new one. It survives a block only when the block left no
# process behind (then nothing of that block remains that could touch it); otherwise the sweep
# that kills the leftovers kills it too and a fresh one is started.
#
# What each child does before the block's first line: closes every descriptor but its stdio, starts
# a new session (its own process group), restores the signal dispositions a fresh interpreter has,
# drops every module the fork server imported beyond a fresh interpreter's start-up set (so the
# block's imports resolve exactly as under `python3 PATH`, workspace first), becomes dumpable again,
# and runs the script as `python3 PATH` would: fresh `__main__`, `sys.argv`, `sys.path[0]`, exit
# status, tracebacks without fork-server frames, `atexit` and thread joins at exit.
#
# Until it is handed a block it runs nothing from the workspace (its cwd): the current directory
# leaves sys.path before anything is imported.
ZYGOTE = r"""#proctor-zygote
import sys as _sys
_base = set(_sys.modules)
_sys.path[:] = [p for p in _sys.path if p not in ("", ".", "/workspace")]
import os as _os
import signal as _signal
# The signals the fork server ignores, with the dispositions a fresh interpreter has for them
# (its children get those back). It runs at nice 19 with oom_score_adj 1000, like every block:
# its children inherit both.
_sigs = {}
for _n in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGUSR1,
           _signal.SIGUSR2, _signal.SIGPIPE, _signal.SIGALRM, _signal.SIGTSTP, _signal.SIGTTIN,
           _signal.SIGTTOU):
    _sigs[_n] = _signal.getsignal(_n)
_prctl = None
def _serve():
    global _prctl
    import ctypes, socket, struct
    _prctl = ctypes.CDLL(None).prctl
    if _prctl(4, 0, 0, 0, 0) != 0:
        _os._exit(4)
    for n in _sigs:
        _signal.signal(n, _signal.SIG_IGN)
    sock = socket.socket(fileno=int(_sys.argv[1]))
    # The interpreter's compiler sets itself up on first use (about 3 ms, paid again in every
    # child if the fork server never compiled): do it once here. A fresh `python3 PATH` has it
    # set up too, from compiling PATH, before the script's first line.
    compile(b"pass\n", "<proctor-warm-up>", "exec")
    # Everything the fork server holds now is never collected in a child: its pages stay shared.
    import gc
    gc.freeze()
    sock.sendall(b"R")
    while True:
        try:
            msg, fds, _f, _a = socket.recv_fds(sock, 65536, 2)
        except OSError:
            _os._exit(0)
        if not msg or len(fds) != 2:
            _os._exit(0)
        pid = _os.fork()
        if pid == 0:
            sock.close()
            raw, _, path0 = msg.partition(b"\0")
            return _os.fsdecode(raw), _os.fsdecode(path0), fds
        for fd in fds:
            _os.close(fd)
        try:
            sock.sendall(struct.pack(">ci", b"P", pid))
            _p, status = _os.waitpid(pid, 0)
            sock.sendall(struct.pack(">ci", b"X", _os.waitstatus_to_exitcode(status)))
        except OSError:
            _os._exit(0)
def _child(path, path0, fds):
    _os.dup2(fds[0], 1)
    _os.dup2(fds[1], 2)
    null = _os.open("/dev/null", _os.O_RDONLY)
    _os.dup2(null, 0)
    for fd in [int(n) for n in _os.listdir("/proc/self/fd")]:
        if fd > 2:
            try:
                _os.close(fd)
            except OSError:
                pass
    _os.setsid()
    for n, h in _sigs.items():
        try:
            _signal.signal(n, h)
        except (ValueError, OSError, TypeError):
            pass
    _prctl(4, 1, 0, 0, 0)
    for name in [m for m in _sys.modules if m not in _base]:
        del _sys.modules[name]
    _sys.argv = [path]
    # An unnamed block's file lives outside the workspace but runs as if it were in it.
    _sys.path.insert(0, path0 or _os.path.dirname(_os.path.abspath(path)))
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
        _finish(1)
def _status(e):
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=_sys.stderr)
    except BaseException:
        pass
    return 1
def _flush():
    for f in (_sys.stdout, _sys.stderr):
        try:
            f.flush()
        except BaseException:
            pass
def _finish(status):
    # What interpreter shutdown does that a block can see: non-daemon threads joined, atexit
    # handlers run, then the block's own modules cleared newest first (names starting with one
    # underscore first, as CPython does) so its objects are finalized (open files flushed and
    # closed, __del__ run), cycles collected, stdio flushed. The fork server's own modules are left
    # alone: tearing them down in a forked child costs milliseconds of copy-on-write and nothing
    # the block could observe.
    t = _sys.modules.get("threading")
    if t is not None:
        try:
            t._shutdown()
        except BaseException:
            pass
    import atexit, gc
    atexit._run_exitfuncs()
    _flush()
    # (Held before the clearing below, which may reach these modules too.)
    collect, flush, leave = gc.collect, _flush, _os._exit
    for name in reversed(list(_sys.modules)):
        if name in _base and name != "__main__":
            continue
        d = getattr(_sys.modules.get(name), "__dict__", None)
        if not isinstance(d, dict):
            continue
        for first in (True, False):
            for k in list(d):
                if k == "__builtins__" or (k.startswith("_") and not k.startswith("__")) != first:
                    continue
                d[k] = None
    collect()
    flush()
    leave(status)
_c, _g = _child(*_serve())
del _serve, _child, _sigs, _prctl
try:
    exec(_c, _g)
except SystemExit as _e:
    _finish(_status(_e))
except BaseException as _e:
    _e.__traceback__ = _e.__traceback__.tb_next
    _sys.excepthook(type(_e), _e, _e.__traceback__)
    _finish(1)
_finish(0)
"""


class Forked:
    """A block process forked by the fork server, with what `run_block` needs of a Popen. Its exit
    code comes from the fork server (its parent); if the fork server does not report it (killed or
    stopped by the block), the code is -9 when the launcher killed the block, else -1 (unknown),
    and that fork server is discarded."""

    def __init__(self, pid, stdout, stderr, zygote):
        self.pid, self.stdout, self.stderr = pid, stdout, stderr
        self.zygote = zygote
        self.returncode = None
        self.killed = False

    def poll(self):
        if self.returncode is None and not _alive(self.pid):
            return self.wait()
        return self.returncode

    def wait(self):
        end = time.monotonic() + 2.0
        while self.returncode is None:
            code = self.zygote.read_exit(0.01)
            if code is not None:
                self.returncode = code
            elif time.monotonic() > end or self.zygote.sock is None or _stopped(self.zygote.pid()):
                self.returncode = -9 if self.killed else -1
                self.zygote.broken = True
        return self.returncode


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


class Zygote:
    """At most one fork server, with the interpreter/env/cwd it was started for."""

    def __init__(self):
        self.proc = None
        self.key = None
        self.sock = None
        self.ready = False
        self.broken = False
        self.disabled = False
        self.buf = b""

    def start(self, key):
        import socket

        self.discard()
        if self.disabled:
            return
        interp, env, cwd = key
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            proc = spawn([interp, "-c", ZYGOTE, str(theirs.fileno())], dict(env), cwd,
                         pass_fds=(theirs.fileno(),))
        except OSError:
            mine.close()
            theirs.close()
            return
        theirs.close()
        self.proc, self.key, self.sock, self.ready, self.buf = proc, key, mine, False, b""
        self.broken = False

    def _read(self, n, timeout):
        """Reads exactly n bytes or returns None (closed, or nothing within timeout)."""
        end = time.monotonic() + timeout
        while len(self.buf) < n:
            if self.sock is None:
                return None
            left = end - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except (OSError, ValueError):
                return None
            if not data:
                # The fork server is gone.
                self.sock.close()
                self.sock = None
                self.broken = True
                return None
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def usable(self, key, wait=True):
        if self.proc is None or self.key != key or self.broken or self.proc.poll() is not None:
            return False
        if not _alive(self.proc.pid) or _stopped(self.proc.pid):
            return False
        if not self.ready and wait:
            # Started a moment ago (back-to-back blocks): waiting for it still beats a new start.
            if self._read(1, 5.0) != b"R":
                # It could not start (e.g. no ctypes): blocks spawn their interpreter from now on.
                self.disabled = self.proc.poll() is not None
                return False
            self.ready = True
        return True

    def fork(self, key, path, path0=None):
        """Starts `path` (with `path0` as its sys.path[0] when given) in a child of the fork
        server; a Forked, or None (caller spawns)."""
        import socket
        import struct

        if not self.usable(key):
            self.discard()
            return None
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            self.sock.settimeout(2.0)
            msg = os.fsencode(path) + (b"\0" + os.fsencode(path0) if path0 else b"")
            socket.send_fds(self.sock, [msg], [out_w, err_w])
            reply = self._read(5, 2.0)
        except OSError:
            reply = None
        finally:
            os.close(out_w)
            os.close(err_w)
        if reply is None or reply[:1] != b"P":
            os.close(out_r)
            os.close(err_r)
            self.discard()
            return None
        pid = struct.unpack(">i", reply[1:])[0]
        return Forked(pid, os.fdopen(out_r, "rb", buffering=0), os.fdopen(err_r, "rb", buffering=0), self)

    def read_exit(self, timeout):
        """The exit code the fork server reports for its running child (None: no report in time)."""
        import struct

        if self.sock is None:
            return None
        frame = self._read(5, timeout)
        if frame is None or frame[:1] != b"X":
            return None
        return struct.unpack(">i", frame[1:])[0]

    def discard(self):
        if self.sock is not None:
            self.sock.close()
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
        self.proc = self.key = self.sock = None
        self.ready = False
        self.broken = False
        self.buf = b""


def _stopped(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return True


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


ZYGOTE_SERVER = Zygote()


def run_block(cmd, stdin):
    nonce = str(cmd.get("nonce", "")).encode()
    out = lambda kind, payload: send(kind, nonce + payload)
    limit = int(cmd.get("limit", 1 << 20))
    timeout = max(0.0, cmd.get("timeout_ms", 60000) / 1000.0)
    oom_before = oom_kills()
    argv = cmd["argv"]
    env = dict(os.environ, **(cmd.get("env") or {}))
    cwd = cmd.get("cwd") or "/"
    zygote_key = None
    if len(argv) == 2 and argv[0] in ("python3", "python"):
        zygote_key = (argv[0], tuple(sorted(env.items())), cwd)
    path0 = cmd.get("path0")
    start = time.monotonic()
    child = None
    if zygote_key is not None:
        child = ZYGOTE_SERVER.fork(zygote_key, argv[1], path0)
        if child is None and path0:
            # sys.path[0] other than the script's directory: only the fork server can do that.
            ZYGOTE_SERVER.start(zygote_key)
            child = ZYGOTE_SERVER.fork(zygote_key, argv[1], path0)
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
        if isinstance(child, Forked):
            child.killed = True
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
            # closes the output pipes those leftovers held. (The sweep kills the fork server too;
            # with nothing left behind there is nothing to sweep and the fork server lives on.)
            if leftovers(ZYGOTE_SERVER.pid()) > 0:
                if isinstance(child, Forked):
                    # The fork server reports the exit code; the sweep kills it too.
                    child.wait()
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
    if zygote_key is not None and not host_gone and not ZYGOTE_SERVER.usable(zygote_key, wait=False):
        ZYGOTE_SERVER.start(zygote_key)
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
