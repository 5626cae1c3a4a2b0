# proctor's in-sandbox launcher: one long-lived `docker exec` per session that starts each block as a
# fresh process in its own session, streams its output back in frames, enforces the deadline and the
# output cap, and kills every process the block left behind before reporting the exit.
#
# Protocol. Host -> launcher (stdin, or an attach connection): one JSON object per line:
#   {"op":"hello","key":"<64 hex>"}   the secret an attach must prove it knows (sent first)
#   {"op":"run","nonce":"<32 hex>","argv":[...],"cwd":"/workspace","env":{...},"timeout_ms":N,"limit":BYTES,
#    "path0":"/workspace"}   (path0, optional: a Python script's sys.path[0] instead of its directory)
#   {"op":"kill"}      cancel the running block (ignored when idle)
#   {"op":"ping"}      answered with P
# Launcher -> host (stdout): frames of 1 type byte + 4-byte big-endian length + payload:
#   R ready {"pid","v","sock"} · P pong · A attach challenge (16 random bytes, only on an attach
#   connection) · S attached {"nonce","running","seq"} · and the tagged frames, whose payload starts
#   with a 32-byte tag and an 8-byte big-endian sequence number: 1 stdout bytes · 2 stderr bytes ·
#   X exit {"code","timed_out","cancelled","oom","total","kept","swept","spawn_error"} · K keepalive
#   (empty; its sequence number is the last one sent).
# The tag of every frame of a block is that block's nonce (from its `run`), so output the block
# manages to push into this stream cannot pass for the launcher's. 1/2/X frames are numbered from 1
# for the launcher's life; K, sent every KEEPALIVE seconds while the stream is up (also while a
# block is silent or nothing runs), repeats the last number.
# The bootstrap made this process non-dumpable (prctl PR_SET_DUMPABLE 0) before reading the script:
# code of the same uid cannot open /proc/<launcher>/fd/*, read its memory (the nonce, the key) or
# ptrace it.
# The launcher runs as the same uid as the code it starts (see docs/sandbox.md); the container's main
# process runs as another uid, so kill(-1, SIGKILL) reaches exactly the block's processes.
#
# A cut stream. Docker cannot reattach to an exec's stdio: when the host's connection drops, this
# process keeps running, reads EOF on stdin and its stdout goes nowhere. If a block is running then,
# the launcher keeps it running and keeps its frames (LOG_MAX bytes at most), and listens on an
# abstract unix socket (its name is in R; bound at start, before any block ran, so no block can take
# the name). The host starts a small relay exec (as the container's main uid, which blocks cannot
# signal) that connects to it; the launcher sends a random challenge, the host answers with
# {"op":"attach","seq":N,"proof":HMAC-SHA256(key, challenge)} and, when the proof is right, the
# launcher makes that connection its stream, says S (with its own proof, HMAC-SHA256(key, "S" +
# challenge)) and sends again every kept frame numbered above N. A connection that does not prove the key within ATTACH_AUTH seconds is closed. With no attach
# within ATTACH_WINDOW seconds of the cut, the block and everything it started are killed and the
# launcher exits.
import collections
import hashlib
import hmac
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time

VERSION = 2
# Seconds between keepalives while the stream is up.
KEEPALIVE = 1.0
# Seconds a cut stream waits for an attach before the block is killed and the launcher exits.
ATTACH_WINDOW = 60.0
# Seconds an attach connection has to prove the key.
ATTACH_AUTH = 5.0
# Most bytes of frames kept for a reattach (the oldest go first; the host then sees a gap).
LOG_MAX = 8 << 20
# Stop reading a block's output while this much is waiting to go out (back-pressure).
HIGH_WATER = 256 << 10
# The tag of frames outside a block.
IDLE_TAG = b"0" * 32


class Link:
    """The stream to the host: the exec's stdin/stdout, or after a reattach an attach connection.
    Frames are written without blocking (what does not fit waits in `pending`); 1/2/X frames are
    numbered and kept in `log` until the next block starts."""

    def __init__(self):
        self.in_fd, self.out_fd, self.sock = 0, 1, None
        self.up = True
        self.cut_at = None
        self.inbuf = b""
        self.pending = bytearray()
        self.seq = 0
        self.log = collections.deque()
        self.log_bytes = 0
        self.tag = IDLE_TAG
        self.running = False
        self.key = None
        self.last_sent = time.monotonic()
        self.conns = {}
        self.listener = None
        self.name = None
        os.set_blocking(1, False)
        try:
            name = "proctor-launcher-" + os.urandom(8).hex()
            lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            lst.bind("\0" + name)
            lst.listen(8)
            lst.setblocking(False)
            self.listener, self.name = lst, name
        except OSError:
            pass

    def frame(self, kind, payload):
        return struct.pack(">cI", kind, len(payload)) + payload

    def send(self, kind, payload=b""):
        """A frame for the host. 1/2/X get the current tag and the next sequence number."""
        if kind in (b"1", b"2", b"X"):
            self.seq += 1
            data = self.frame(kind, self.tag + struct.pack(">Q", self.seq) + payload)
            self.log.append((self.seq, data))
            self.log_bytes += len(data)
            while self.log_bytes > LOG_MAX and self.log:
                self.log_bytes -= len(self.log.popleft()[1])
        elif kind == b"K":
            data = self.frame(kind, self.tag + struct.pack(">Q", self.seq))
        else:
            data = self.frame(kind, payload)
        self.write(data)

    def write(self, data):
        if not self.up:
            return
        self.pending += data
        self.flush()

    def flush(self):
        while self.up and self.pending:
            try:
                n = os.write(self.out_fd, self.pending)
            except BlockingIOError:
                return
            except OSError:
                self.cut()
                return
            del self.pending[:n]
            self.last_sent = time.monotonic()

    def keepalive(self):
        if self.up and not self.pending and time.monotonic() - self.last_sent >= KEEPALIVE:
            self.send(b"K")

    def new_block(self, nonce):
        self.tag = nonce
        self.running = True
        self.log.clear()
        self.log_bytes = 0

    def cut(self):
        """The stream is gone (EOF on its input or an error writing): frames are only kept."""
        if not self.up:
            return
        self.up = False
        self.cut_at = time.monotonic()
        self.pending = bytearray()
        self.inbuf = b""
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def fill(self):
        """Reads what the host sent; False at EOF (the stream is then cut)."""
        try:
            data = os.read(self.in_fd, 65536)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            self.cut()
            return False
        self.inbuf += data
        return True

    def lines(self):
        while self.up and b"\n" in self.inbuf:
            line, self.inbuf = self.inbuf.split(b"\n", 1)
            if line.strip():
                c = json.loads(line)
                if c.get("op") == "hello":
                    self.key = bytes.fromhex(str(c.get("key", ""))) or None
                else:
                    yield c

    def rfds(self):
        """What to wait on for reading: the stream, the listener, attach connections."""
        fds = list(self.conns)
        if self.up:
            fds.append(self.in_fd)
        if self.listener is not None:
            fds.append(self.listener.fileno())
        return fds

    def wfds(self):
        return [self.out_fd] if self.up and self.pending else []

    def timeout(self, wait):
        """`wait`, shortened to the next keepalive or attach-connection deadline."""
        now = time.monotonic()
        # (With output waiting, the stream's writability wakes us; no keepalive is due then.)
        if self.up and not self.pending:
            wait = min(wait, max(0.0, self.last_sent + KEEPALIVE - now))
        for c in self.conns.values():
            wait = min(wait, max(0.0, c[2] - now))
        return wait

    def handle(self, fd):
        """An event on the listener or an attach connection; True when it was one of those."""
        if self.listener is not None and fd == self.listener.fileno():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return True
            challenge = os.urandom(16)
            conn.setblocking(False)
            try:
                conn.send(self.frame(b"A", challenge))
            except OSError:
                conn.close()
                return True
            if len(self.conns) >= 8:
                # Never more than a few waiting: the oldest goes.
                old = min(self.conns, key=lambda k: self.conns[k][2])
                self.conns.pop(old)[0].close()
            self.conns[conn.fileno()] = [conn, challenge, time.monotonic() + ATTACH_AUTH, b""]
            return True
        if fd not in self.conns:
            return False
        conn, challenge, _deadline, buf = self.conns[fd]
        try:
            data = conn.recv(4096)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        buf += data
        if not data or len(buf) > 4096:
            self.conns.pop(fd)[0].close()
            return True
        self.conns[fd][3] = buf
        if b"\n" not in buf:
            return True
        line, rest = buf.split(b"\n", 1)
        self.conns.pop(fd)
        try:
            c = json.loads(line)
            proof = bytes.fromhex(str(c.get("proof", "")))
            seq = int(c.get("seq", 0))
        except (ValueError, TypeError, AttributeError):
            conn.close()
            return True
        want = hmac.new(self.key, challenge, hashlib.sha256).digest() if self.key else None
        if c.get("op") != "attach" or want is None or not hmac.compare_digest(want, proof):
            conn.close()
            return True
        self.adopt(conn, seq, rest, challenge)
        return True

    def adopt(self, conn, seq, rest, challenge):
        """Makes an authenticated attach connection the stream and sends again what the host lacks."""
        if self.sock is not None:
            self.sock.close()
        # The exec's own stdio is never used again.
        self.sock = conn
        self.in_fd = self.out_fd = conn.fileno()
        self.up = True
        self.cut_at = None
        self.inbuf = rest
        self.pending = bytearray()
        # The launcher proves the key too: a process that took the socket's name after the
        # launcher died cannot pass for it (and learn a nonce from a `run` sent again).
        proof = hmac.new(self.key, b"S" + challenge, hashlib.sha256).hexdigest()
        status = {"nonce": self.tag.decode(), "running": self.running, "seq": self.seq,
                  "proof": proof}
        self.write(self.frame(b"S", json.dumps(status).encode()))
        for n, data in self.log:
            if n > seq:
                self.write(data)

    def expire(self):
        now = time.monotonic()
        for fd in [fd for fd, c in self.conns.items() if c[2] <= now]:
            self.conns.pop(fd)[0].close()

    def abandoned(self):
        """Cut for longer than ATTACH_WINDOW."""
        return not self.up and time.monotonic() - self.cut_at > ATTACH_WINDOW


LINK = None


def send(kind, payload):
    LINK.send(kind, payload)


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
#
# The next block's child is forked ahead of time (a spare): once a block's processes are all dead,
# the launcher asks for a child that does everything above but the last steps, then waits on a
# pipe for its script's path; the next Python block then costs one write instead of a fork and
# the set-up. Until it is handed its path the spare stays non-dumpable, ignores the fork server's
# signals and runs nothing; no block code ever runs while a spare waits (one is made only after a
# block's processes are gone, is used by the next Python block, and is dropped before anything
# else runs).
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
            msg, fds, _f, _a = socket.recv_fds(sock, 65536, 3)
        except OSError:
            _os._exit(0)
        if not msg or len(fds) not in (2, 3):
            _os._exit(0)
        pid = _os.fork()
        if pid == 0:
            sock.close()
            return msg, fds
        for fd in fds:
            _os.close(fd)
        try:
            sock.sendall(struct.pack(">ci", b"P", pid))
            _p, status = _os.waitpid(pid, 0)
            sock.sendall(struct.pack(">ci", b"X", _os.waitstatus_to_exitcode(status)))
        except OSError:
            _os._exit(0)
def _child(msg, fds):
    _os.dup2(fds[0], 1)
    _os.dup2(fds[1], 2)
    # A spare (three descriptors): its path comes later, on the third.
    go = fds[2] if len(fds) == 3 else None
    null = _os.open("/dev/null", _os.O_RDONLY)
    _os.dup2(null, 0)
    for fd in [int(n) for n in _os.listdir("/proc/self/fd")]:
        if fd > 2 and fd != go:
            try:
                _os.close(fd)
            except OSError:
                pass
    _os.setsid()
    for name in [m for m in _sys.modules if m not in _base]:
        del _sys.modules[name]
    if go is not None:
        # Named while it waits (its `comm`, as `ps` shows it), the name it had back after.
        try:
            with open("/proc/self/comm", "rb") as f:
                comm = f.read().strip()
        except OSError:
            comm = b""
        _prctl(15, b"proctor-spare", 0, 0, 0)
        parts = []
        while True:
            try:
                part = _os.read(go, 65536)
            except InterruptedError:
                continue
            except OSError:
                part = b""
            if not part:
                break
            parts.append(part)
        _os.close(go)
        msg = b"".join(parts)
        if not msg:
            # Dropped before any block used it.
            _os._exit(0)
        if comm:
            _prctl(15, comm, 0, 0, 0)
    raw, _, path0 = msg.partition(b"\0")
    path, path0 = _os.fsdecode(raw), _os.fsdecode(path0)
    for n, h in _sigs.items():
        try:
            _signal.signal(n, h)
        except (ValueError, OSError, TypeError):
            pass
    _prctl(4, 1, 0, 0, 0)
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
        # The next block's child, forked ahead: (pid, stdout, stderr, the write end of its path).
        self.spare = None

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
        msg = os.fsencode(path) + (b"\0" + os.fsencode(path0) if path0 else b"")
        if self.spare is not None:
            pid, out_r, err_r, go_w = self.spare
            self.spare = None
            handed = _alive(pid) and not _stopped(pid)
            if handed:
                try:
                    view = memoryview(msg)
                    while view:
                        view = view[os.write(go_w, view):]
                except OSError:
                    handed = False
            os.close(go_w)
            if handed:
                return Forked(pid, os.fdopen(out_r, "rb", buffering=0), os.fdopen(err_r, "rb", buffering=0), self)
            # Killed or stopped while it waited: start over with a fresh fork server.
            os.close(out_r)
            os.close(err_r)
            self.discard()
            return None
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            self.sock.settimeout(2.0)
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

    def prefork(self, key):
        """Forks the next Python block's child ahead of time, when this fork server is ready for
        `key` and no block process is alive (the caller's word): it waits for its path."""
        import socket
        import struct

        if self.spare is not None or not self.usable(key, wait=False):
            return
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        go_r, go_w = os.pipe()
        try:
            self.sock.settimeout(2.0)
            socket.send_fds(self.sock, [b"spare"], [out_w, err_w, go_r])
            reply = self._read(5, 2.0)
        except OSError:
            reply = None
        finally:
            for fd in (out_w, err_w, go_r):
                os.close(fd)
        if reply is None or reply[:1] != b"P":
            for fd in (out_r, err_r, go_w):
                os.close(fd)
            self.discard()
            return
        self.spare = (struct.unpack(">i", reply[1:])[0], out_r, err_r, go_w)

    def drop_spare(self):
        """Ends a waiting spare (before anything but a Python block runs); its exit is read, so
        the fork server's next report is about the next child."""
        if self.spare is None:
            return
        _pid, out_r, err_r, go_w = self.spare
        self.spare = None
        for fd in (go_w, out_r, err_r):
            os.close(fd)
        if self.read_exit(2.0) is None:
            self.discard()

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
        if self.spare is not None:
            for fd in self.spare[1:]:
                os.close(fd)
            self.spare = None
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


def run_block(cmd):
    link = LINK
    nonce = str(cmd.get("nonce", "")).encode()
    link.new_block(nonce)
    out = send
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
    if zygote_key is None:
        # Nothing but a Python block runs beside a spare (one made for another interpreter or
        # environment goes with its fork server in `fork`).
        ZYGOTE_SERVER.drop_spare()
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
            link.running = False
            return
    deadline = start + timeout
    pipes = {child.stdout.fileno(): b"1", child.stderr.fileno(): b"2"}
    pidfd = None
    try:
        pidfd = os.pidfd_open(child.pid)
    except (AttributeError, OSError):
        pidfd = None
    total = kept = 0
    timed_out = cancelled = False
    exited = killed = False
    swept = 0

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

    while pipes or not exited:
        now = time.monotonic()
        if not killed and now >= deadline:
            timed_out = True
            kill_all()
            continue
        if not killed and link.abandoned():
            # Nobody came back for this block: it dies, as when the host closes the stream.
            cancelled = True
            kill_all()
            continue
        link.expire()
        link.keepalive()
        wait = deadline - now if not killed else 0.5
        if pidfd is None and not exited:
            wait = min(wait, 0.02)
        if not link.up:
            wait = min(wait, max(0.0, link.cut_at + ATTACH_WINDOW - now) + 0.01)
        wait = link.timeout(wait)
        rfds = link.rfds()
        # Back-pressure: the block's pipes wait while the stream is behind.
        if len(link.pending) < HIGH_WATER:
            rfds += list(pipes)
        if pidfd is not None and pidfd >= 0:
            rfds.append(pidfd)
        try:
            readable, writable, _x = select.select(rfds, link.wfds(), [], wait)
        except InterruptedError:
            continue
        if writable:
            link.flush()
        for fd in readable:
            if fd == pidfd:
                os.close(pidfd)
                pidfd = -1
                exited = True
            elif fd in pipes:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    data = b""
                if not data:
                    del pipes[fd]
                    continue
                total += len(data)
                if kept < limit:
                    part = data[: limit - kept]
                    kept += len(part)
                    out(pipes[fd], part)
            elif link.handle(fd):
                pass
            elif link.up and fd == link.in_fd:
                link.fill()
                for c in link.lines():
                    if c.get("op") == "kill" and not killed:
                        cancelled = True
                        kill_all()
                    elif c.get("op") == "run":
                        # Never dropped silently: the host learns at once that it is out of step.
                        busy = {"code": 127, "spawn_error": "the launcher is still running a block"}
                        saved = link.tag
                        link.tag = str(c.get("nonce", "")).encode()
                        send(b"X", json.dumps(busy).encode())
                        link.tag = saved
                    elif c.get("op") == "ping":
                        send(b"P", b"")
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
        os.close(pidfd)
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
    link.running = False
    if zygote_key is not None and link.up and not ZYGOTE_SERVER.usable(zygote_key, wait=False):
        ZYGOTE_SERVER.start(zygote_key)
    elif zygote_key is not None and link.up and leftovers(ZYGOTE_SERVER.pid()) == 0:
        # Every process of this block is gone: the next one's child can wait, set up.
        ZYGOTE_SERVER.prefork(zygote_key)


# ---- The workspace through this stream (a remote engine: nothing of proctor's machine is mounted).
# Host -> launcher, each answered by X {"code":0} or {"code":1,"spawn_error":"why"} with its nonce:
#   {"op":"put","nonce":N,"root":"/workspace","clear":false} then lines {"d":"<base64>"}... {"end":true}
#       a tar stream (directories, regular files, symlinks) written under root; `clear` empties root
#       first. Nothing is written through a symlink that leads out of root.
#   {"op":"list","nonce":N,"root":R}   1 frames: one JSON array per line
#       [path, kind (f d l o), size, mode, mtime_ns, ctime_ns, ino]; symlinks are not followed;
#       names that are not UTF-8 are counted in a last line {"unreadable": n}
#   {"op":"pull","nonce":N,"root":R,"paths":[...]}   1 frames: a tar stream (GNU format) of those
#       directories and regular files (nothing else; a path through a symlink is left out)
# They run between blocks, when no block process is alive.
SYNC_CHUNK = 65536


class SyncFailed(Exception):
    pass


def wait_link(link, read):
    """Waits until the stream can be read (`read`) or its pending output has gone out, keeping it
    alive; a cut stream fails the transfer (the host sees the cut and reports it)."""
    while True:
        if not link.up:
            raise SyncFailed("the stream to the host was cut during a transfer")
        if read and b"\n" in link.inbuf:
            return
        if not read and len(link.pending) < HIGH_WATER:
            return
        link.keepalive()
        try:
            readable, writable, _x = select.select(
                [link.in_fd] if read else [], link.wfds(), [], KEEPALIVE
            )
        except InterruptedError:
            continue
        if writable:
            link.flush()
        if readable:
            link.fill()


class PutStream:
    """The tar bytes of a `put`, decoded from the base64 lines that follow it on the stream."""

    def __init__(self, link):
        self.link, self.buf, self.done = link, b"", False

    def _line(self):
        while True:
            for c in self.link.lines():
                return c
            wait_link(self.link, True)

    def read(self, n=-1):
        import base64

        while not self.done and (n < 0 or len(self.buf) < n):
            c = self._line()
            if c.get("end"):
                self.done = True
            else:
                self.buf += base64.b64decode(c.get("d", ""))
        if n < 0:
            n = len(self.buf)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def drain(self):
        while not self.done:
            self.buf = b""
            self.read(SYNC_CHUNK)


class FrameOut:
    """A write-only file whose bytes go to the host in `1` frames (tagged with the op's nonce by
    the link), written no faster than the stream takes them."""

    def __init__(self):
        self.buf = bytearray()

    def _send(self, data):
        send(b"1", data)
        wait_link(LINK, False)

    def write(self, data):
        self.buf += data
        if len(self.buf) >= SYNC_CHUNK:
            view = memoryview(self.buf)
            n = len(self.buf) - len(self.buf) % SYNC_CHUNK
            for i in range(0, n, SYNC_CHUNK):
                self._send(bytes(view[i : i + SYNC_CHUNK]))
            view.release()
            del self.buf[:n]
        return len(data)

    def close(self):
        if self.buf:
            self._send(bytes(self.buf))
        self.buf = bytearray()


def _rel_ok(rel):
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def _inside(root, path):
    return path == root or path.startswith(root + "/")


def _parent(root, rel, make, known=None):
    """The real directory that holds `rel` under root (made when `make`), never outside root.
    `known` caches directories already checked during one put (the put itself makes no links)."""
    import stat

    head = rel.rpartition("/")[0]
    if known is not None and head in known:
        return known[head]
    d = root
    for part in rel.split("/")[:-1]:
        p = os.path.join(d, part)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            if not make:
                raise SyncFailed("%s: no such directory" % rel)
            os.mkdir(p, 0o755)
            d = p
            continue
        if stat.S_ISLNK(st.st_mode):
            real = os.path.realpath(p)
            if not _inside(root, real) or not os.path.isdir(real):
                raise SyncFailed("%s: a symlink on the way leads out of %s" % (rel, root))
            d = real
        elif stat.S_ISDIR(st.st_mode):
            d = p
        else:
            raise SyncFailed("%s: a part of the path is not a directory" % rel)
    if known is not None:
        known[head] = d
    return d


def _clear(root):
    import shutil
    import stat

    for e in os.scandir(root):
        st = e.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(e.path)
        else:
            os.unlink(e.path)


def op_put(cmd, link):
    import stat
    import tarfile

    root = os.path.realpath(cmd.get("root") or "/workspace")
    data = PutStream(link)
    dirs = []
    known = {}
    # Files get their own modes exactly (blocks keep the launcher's umask).
    mask = os.umask(0)
    try:
        if cmd.get("clear"):
            _clear(root)
        with tarfile.open(fileobj=data, mode="r|") as tf:
            for n, m in enumerate(tf):
                rel = m.name.rstrip("/")
                if rel in ("", "."):
                    continue
                if not _rel_ok(rel):
                    raise SyncFailed("%r: not a path inside %s" % (rel, root))
                parent = _parent(root, rel, True, known)
                target = os.path.join(parent, os.path.basename(rel))
                try:
                    old = os.lstat(target)
                except FileNotFoundError:
                    old = None
                if m.isdir():
                    if old is not None and not stat.S_ISDIR(old.st_mode):
                        os.unlink(target)
                        old = None
                    if old is None:
                        os.mkdir(target, 0o755)
                    known[rel] = target
                    dirs.append((target, m.mode & 0o777))
                elif m.isreg():
                    if old is not None and stat.S_ISDIR(old.st_mode):
                        raise SyncFailed("%s: is a directory in the sandbox" % rel)
                    # A new file is made in place; anything already there (a link the code
                    # planted) is replaced by a rename, never written through.
                    fresh = old is None
                    tmp = target if fresh else os.path.join(parent, ".proctor-put-%d-%d" % (os.getpid(), n))
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                    fd = os.open(tmp, flags, m.mode & 0o777)
                    try:
                        src = tf.extractfile(m)
                        while True:
                            chunk = src.read(SYNC_CHUNK)
                            if not chunk:
                                break
                            os.write(fd, chunk)
                        os.utime(fd, (m.mtime, m.mtime))
                    finally:
                        os.close(fd)
                    if not fresh:
                        os.replace(tmp, target)
                elif m.issym():
                    if old is not None and stat.S_ISDIR(old.st_mode):
                        raise SyncFailed("%s: is a directory in the sandbox" % rel)
                    if old is not None:
                        os.unlink(target)
                    os.symlink(m.linkname, target)
        for d, mode in reversed(dirs):
            if mode != 0o755:
                os.chmod(d, mode)
        data.drain()
        return None
    except (SyncFailed, OSError, tarfile.TarError, ValueError) as e:
        data.drain()
        return str(e)
    finally:
        os.umask(mask)


def op_list(cmd):
    import stat

    root = os.path.realpath(cmd.get("root") or "/workspace")
    w = FrameOut()
    unreadable = 0
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            it = os.scandir(os.path.join(root, rel) if rel else root)
        except OSError:
            continue
        with it:
            for e in it:
                r = rel + "/" + e.name if rel else e.name
                try:
                    r.encode("utf-8")
                    st = e.stat(follow_symlinks=False)
                except (UnicodeEncodeError, OSError):
                    unreadable += 1
                    continue
                m = st.st_mode
                kind = "d" if stat.S_ISDIR(m) else "f" if stat.S_ISREG(m) else "l" if stat.S_ISLNK(m) else "o"
                row = [r, kind, st.st_size, m & 0o7777, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
                w.write((json.dumps(row) + "\n").encode())
                if kind == "d":
                    stack.append(r)
    if unreadable:
        w.write((json.dumps({"unreadable": unreadable}) + "\n").encode())
    w.close()
    return None


def op_pull(cmd):
    import stat
    import tarfile

    root = os.path.realpath(cmd.get("root") or "/workspace")
    w = FrameOut()
    try:
        with tarfile.open(fileobj=w, mode="w|", format=tarfile.GNU_FORMAT) as tf:
            for rel in cmd.get("paths") or []:
                if not isinstance(rel, str) or not _rel_ok(rel):
                    continue
                try:
                    parent = _parent(root, rel, False)
                except SyncFailed:
                    continue
                if parent != os.path.join(root, os.path.dirname(rel)).rstrip("/"):
                    continue
                path = os.path.join(parent, os.path.basename(rel))
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                ti = tarfile.TarInfo(rel)
                ti.mode = st.st_mode & 0o777
                ti.mtime = int(st.st_mtime)
                if stat.S_ISDIR(st.st_mode):
                    ti.type = tarfile.DIRTYPE
                    tf.addfile(ti)
                elif stat.S_ISREG(st.st_mode):
                    try:
                        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                    except OSError:
                        continue
                    with os.fdopen(fd, "rb") as f:
                        real = os.fstat(fd)
                        if not stat.S_ISREG(real.st_mode):
                            continue
                        ti.size = real.st_size
                        tf.addfile(ti, f)
        w.close()
        return None
    except (OSError, tarfile.TarError, ValueError) as e:
        w.close()
        return str(e)


def sync_op(c, link):
    op = c.get("op")
    # The op's frames carry its nonce and are numbered like a block's.
    link.new_block(str(c.get("nonce", "")).encode())
    try:
        if op == "put":
            err = op_put(c, link)
        elif op == "list":
            err = op_list(c)
        else:
            err = op_pull(c)
    except Exception as e:  # noqa: BLE001 - reported to the host, never fatal
        err = "%s: %s" % (type(e).__name__, e)
    report = {"code": 0} if err is None else {"code": 1, "spawn_error": err}
    send(b"X", json.dumps(report).encode())
    link.running = False


def main():
    global LINK
    # A write to a closed stream is an error to handle (a cut), not a reason to die.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    # A previous launcher may have died mid-block: start from a clean process table.
    sweep()
    LINK = link = Link()
    send(b"R", json.dumps({"pid": os.getpid(), "v": VERSION, "sock": link.name}).encode())
    while True:
        # One command at a time: a `put` reads the lines after it itself.
        for c in link.lines():
            if c.get("op") == "run":
                run_block(c)
            elif c.get("op") == "ping":
                send(b"P", b"")
            elif c.get("op") in ("put", "list", "pull"):
                sync_op(c, link)
        if not link.up and link.abandoned():
            # Cut between blocks and nobody came back (a host that closed the stream on purpose
            # never does; it kills this launcher before starting the next).
            return
        link.expire()
        link.keepalive()
        wait = link.timeout(KEEPALIVE if link.up else 0.5)
        try:
            readable, writable, _x = select.select(link.rfds(), link.wfds(), [], wait)
        except InterruptedError:
            continue
        if writable:
            link.flush()
        for fd in readable:
            if link.handle(fd):
                continue
            if link.up and fd == link.in_fd:
                link.fill()


if __name__ == "__main__":
    try:
        main()
    finally:
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
    sys.exit(0)
