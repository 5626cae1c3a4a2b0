# proctor's workspace watch inside a sandbox on a remote engine (where proctor cannot look at the
# workspace's disk itself). One per sandbox, started with it, as the container's main uid (not the
# block's: a block cannot signal it, and the sweep after a block leaves it alone). Commands on
# stdin, one per line: "start LIMIT" when a block starts (measures the workspace, then checks the
# filesystem's use every 100 ms; when it grew by more than LIMIT bytes, measures the workspace
# again, blocks occupied, each inode once, and prints "O <bytes grown>" if the workspace itself
# grew past LIMIT), "stop" when it ends. Exits when stdin closes.
import os
import select

ROOT = "/workspace"


def fs_used():
    try:
        s = os.statvfs(ROOT)
    except OSError:
        return None
    return (s.f_blocks - s.f_bfree) * s.f_frsize


def disk_use():
    seen, total, stack = set(), 0, [ROOT]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
    return total


buf = b""
limit = None
base = start = None
os.write(1, b"R\n")
while True:
    ready, _, _ = select.select([0], [], [], 0.1 if limit is not None else None)
    if ready:
        data = os.read(0, 4096)
        if not data:
            break
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            parts = line.split()
            if parts[:1] == [b"start"] and len(parts) == 2:
                limit = int(parts[1])
                base, start = fs_used(), disk_use()
            elif parts[:1] == [b"stop"]:
                limit = None
    if limit is None:
        continue
    now = fs_used()
    if base is not None and now is not None and now - base <= limit:
        continue
    grown = disk_use() - start
    if grown > limit:
        os.write(1, b"O %d\n" % grown)
        limit = None
        continue
    now = fs_used()
    if now is not None:
        base = now - max(grown, 0)
