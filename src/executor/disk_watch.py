# proctor's workspace watch inside a sandbox on a remote engine (where proctor cannot look at the
# workspace's disk itself): while one block runs, checks the workspace filesystem's use every
# 100 ms; when it grew by more than the limit, measures the workspace (blocks occupied, each inode
# once) and prints "O <bytes grown>" when the workspace itself grew past the limit. Runs as the
# container's main uid (not the block's: a block cannot signal it, and the sweep after a block
# leaves it alone); exits when its stdin closes (the block ended).
import os
import select
import sys

ROOT = "/workspace"
LIMIT = int(sys.argv[1])


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


base = fs_used()
start = disk_use()
os.write(1, b"R\n")
while True:
    ready, _, _ = select.select([0], [], [], 0.1)
    if ready and not os.read(0, 4096):
        break
    now = fs_used()
    if base is not None and now is not None and now - base <= LIMIT:
        continue
    grown = disk_use() - start
    if grown > LIMIT:
        os.write(1, b"O %d\n" % grown)
        break
    now = fs_used()
    if now is not None:
        base = now - max(grown, 0)
