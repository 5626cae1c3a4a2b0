//! How much disk a workspace uses, for `workspace_limit_mb`: every file counts (build output and
//! `.git` too), by the blocks it occupies (a sparse file costs what it holds), each inode once.
//! [`DiskWatch`] checks a running block cheaply: the filesystem's free space says when the
//! workspace may have grown past the limit, and only then is the workspace walked to be sure
//! (other programs writing to the same disk never get a block killed).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Entries walked at most when measuring (beyond it the measure is a lower bound).
pub const MAX_ENTRIES: usize = 2_000_000;

/// Bytes of disk the files under `root` occupy (not following symlinks, hard links once).
pub fn disk_use(root: &Path) -> std::io::Result<u64> {
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut total = 0u64;
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    let mut entries = 0usize;
    let top = std::fs::symlink_metadata(root)?;
    total += top.blocks() * 512;
    while let Some(dir) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in read.filter_map(Result::ok) {
            entries += 1;
            if entries > MAX_ENTRIES {
                return Ok(total);
            }
            let Ok(m) = e.metadata() else { continue };
            if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            total = total.saturating_add(m.blocks().saturating_mul(512));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(total)
}

/// Bytes used on the filesystem holding `path` (`None` when it cannot be asked).
pub fn fs_used(path: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(path).ok()?;
    let frsize = if s.f_frsize > 0 {
        s.f_frsize
    } else {
        s.f_bsize
    };
    Some(s.f_blocks.saturating_sub(s.f_bfree).saturating_mul(frsize))
}

/// Watches one block's growth of a workspace against a limit.
#[derive(Debug)]
pub struct DiskWatch {
    root: PathBuf,
    limit: u64,
    /// Filesystem use at which the workspace may be past the limit.
    fs_base: Option<u64>,
    /// The workspace's own use when the block started.
    start: Option<u64>,
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Within the limit.
    Fine,
    /// The workspace grew by this many bytes, more than the limit.
    Over(u64),
}

impl DiskWatch {
    /// Starts watching `root` for a block that may add `limit` bytes. Cheap: the workspace is
    /// measured by [`measure_start`](Self::measure_start), which may run alongside the block.
    pub fn new(root: &Path, limit: u64) -> Self {
        Self {
            root: root.to_path_buf(),
            limit,
            fs_base: fs_used(root),
            start: None,
        }
    }

    /// Measures the workspace as it is at the start (call once, off the async threads).
    pub fn measure_start(&mut self) {
        self.start = disk_use(&self.root).ok();
    }

    /// Whether the start was measured.
    pub fn started(&self) -> bool {
        self.start.is_some()
    }

    /// Whether the filesystem grew enough that the workspace may be past the limit (or the
    /// filesystem cannot be asked, so only a walk can tell).
    pub fn suspect(&self) -> bool {
        match (self.fs_base, fs_used(&self.root)) {
            (Some(base), Some(now)) => now.saturating_sub(base) > self.limit,
            _ => true,
        }
    }

    /// Walks the workspace: over the limit, or fine (then the filesystem's growth not due to the
    /// workspace is discounted, so other writers do not cause a walk at every check).
    pub fn confirm(&mut self) -> Check {
        let (Some(start), Ok(now)) = (self.start, disk_use(&self.root)) else {
            return Check::Fine;
        };
        let grown = now.saturating_sub(start);
        if grown > self.limit {
            return Check::Over(grown);
        }
        if let Some(fs_now) = fs_used(&self.root) {
            self.fs_base = Some(fs_now.saturating_sub(grown));
        }
        Check::Fine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_past_the_limit_is_found_and_sparse_files_cost_nothing() {
        let d = tempfile::tempdir().unwrap();
        let mut w = DiskWatch::new(d.path(), 4 << 20);
        w.measure_start();
        assert!(w.started());
        let f = std::fs::File::create(d.path().join("sparse")).unwrap();
        f.set_len(1 << 30).unwrap();
        assert_eq!(w.confirm(), Check::Fine);
        std::fs::write(d.path().join("real"), vec![7u8; 6 << 20]).unwrap();
        assert!(matches!(w.confirm(), Check::Over(n) if n >= 6 << 20));
    }

    #[test]
    fn hard_links_count_once() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), vec![1u8; 1 << 20]).unwrap();
        let one = disk_use(d.path()).unwrap();
        std::fs::hard_link(d.path().join("a"), d.path().join("b")).unwrap();
        assert_eq!(disk_use(d.path()).unwrap(), one);
    }
}
