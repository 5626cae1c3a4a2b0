//! What one block changed in the workspace: a snapshot right before the block, one right after,
//! and the difference as the `workspace_changed` event carries it (created, modified, deleted,
//! with sizes and, for text files, lines added and removed).
//!
//! Files are compared by metadata first (size, mtime, ctime, inode, mode); content is read and
//! hashed only when those differ. To count the lines a block added to or removed from an existing
//! file the old text must be known, so the tracker keeps the text of small text files (bounded in
//! total) from the previous snapshot; the first snapshot of a session reads them once.
//!
//! The engine never walks anything: executors call a [`ChangeTracker`]. [`HostTracker`] walks a
//! directory on this machine; a sandbox on another host can implement the trait where the files are.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::snapshot::{FileMeta, GitView, Key, Kind, Snapshot, Summarised, WalkOptions, walk};
use crate::protocol::{FileChange, WorkspaceNote};

/// Text files up to this size keep their text for line counts.
pub const TEXT_CAP: u64 = 1 << 20;
/// Total text kept per workspace.
pub const TEXT_BUDGET: usize = 64 << 20;
/// Files up to this size are hashed to tell a real change from a touch.
pub const HASH_CAP: u64 = 16 << 20;
/// Bytes one snapshot reads at most to learn contents it has not seen (the first snapshot of a
/// big tree); files beyond it are compared by metadata only.
pub const READ_BUDGET: u64 = 256 << 20;

/// What a block changed: the payload of `workspace_changed`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkspaceDelta {
    /// Files the block created.
    pub created: Vec<FileChange>,
    /// Files the block modified.
    pub modified: Vec<FileChange>,
    /// Files the block deleted.
    pub deleted: Vec<FileChange>,
    /// Summarised directories that changed, a walk that hit its cap, unreadable directories.
    pub notes: Vec<WorkspaceNote>,
}

impl WorkspaceDelta {
    /// No file changed (notes aside).
    pub fn no_file_changed(&self) -> bool {
        self.created.is_empty() && self.modified.is_empty() && self.deleted.is_empty()
    }
}

/// Why the changes could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkspaceError {
    /// The workspace directory cannot be read (gone, moved, permissions).
    #[error("cannot read the workspace {path}: {why}")]
    Unreadable {
        /// The directory.
        path: String,
        /// The OS error.
        why: String,
    },
    /// `after` without `before`.
    #[error("no snapshot was taken before the block")]
    NoBefore,
}

/// Snapshots a workspace before and after each block.
pub trait ChangeTracker: Send {
    /// Records the workspace as it is now; call right before the block starts.
    fn before(&mut self) -> Result<(), WorkspaceError>;
    /// What changed since [`before`](Self::before).
    fn after(&mut self) -> Result<WorkspaceDelta, WorkspaceError>;
}

/// What the tracker knows of one file's content.
#[derive(Debug, Clone)]
struct Known {
    meta: FileMeta,
    hash: Option<[u8; 32]>,
    text: Option<Arc<str>>,
}

impl Known {
    fn lines(&self) -> Option<u64> {
        self.text.as_ref().map(|t| t.lines().count() as u64)
    }
}

/// A [`ChangeTracker`] for a directory on this host.
#[derive(Debug)]
pub struct HostTracker {
    root: PathBuf,
    opts: WalkOptions,
    git: GitView,
    /// What is known of each file of the last snapshot, sorted by key.
    known: Vec<(Key, Known)>,
    text_bytes: usize,
    before: Option<Snapshot>,
}

impl HostTracker {
    /// A tracker for `root`.
    pub fn new(root: &Path, opts: WalkOptions) -> Self {
        Self {
            root: root.to_path_buf(),
            opts,
            git: GitView::default(),
            known: Vec::new(),
            text_bytes: 0,
            before: None,
        }
    }

    /// The directory tracked.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn snapshot(&mut self) -> Result<Snapshot, WorkspaceError> {
        walk(&self.root, &self.opts, &mut self.git).map_err(|e| WorkspaceError::Unreadable {
            path: self.root.display().to_string(),
            why: e.to_string(),
        })
    }

    /// Reads what we need to know of a file's content, within `budget` bytes read (and the
    /// text budget, for the text kept).
    fn learn(&mut self, key: &Key, meta: FileMeta, budget: &mut u64) -> Known {
        let path = key.under(&self.root);
        let mut known = Known {
            meta,
            hash: None,
            text: None,
        };
        match meta.kind {
            Kind::Symlink => {
                if let Ok(target) = std::fs::read_link(&path) {
                    use std::os::unix::ffi::OsStrExt;
                    known.hash = Some(Sha256::digest(target.as_os_str().as_bytes()).into());
                }
            }
            Kind::File if meta.size <= HASH_CAP && meta.size <= *budget => {
                if let Some(bytes) = super::gitignore::read_plain(&path, HASH_CAP) {
                    *budget = budget.saturating_sub(bytes.len() as u64);
                    known.hash = Some(Sha256::digest(&bytes).into());
                    if bytes.len() as u64 <= TEXT_CAP
                        && self.text_bytes + bytes.len() <= TEXT_BUDGET
                        && !bytes.contains(&0)
                        && let Ok(text) = String::from_utf8(bytes)
                    {
                        // Counted against the budget when kept (see `keep`).
                        known.text = Some(Arc::from(text));
                    }
                }
            }
            Kind::File | Kind::Special => {}
        }
        known
    }

    /// Keeps `known` in the new list (counting its text against the budget).
    fn keep(&mut self, list: &mut Vec<(Key, Known)>, key: Key, known: Known) {
        if let Some(t) = &known.text {
            self.text_bytes += t.len();
        }
        list.push((key, known));
    }
}

impl ChangeTracker for HostTracker {
    fn before(&mut self) -> Result<(), WorkspaceError> {
        let snap = self.snapshot()?;
        // Both lists are sorted by key: what is unchanged since the last snapshot is kept; files
        // new or changed since (by the user between blocks) are read now.
        let mut old = std::mem::take(&mut self.known).into_iter().peekable();
        let mut known = Vec::with_capacity(snap.files.len());
        self.text_bytes = 0;
        let mut budget = READ_BUDGET;
        for (key, meta) in &snap.files {
            while old.next_if(|(k, _)| k < key).is_some() {}
            match old.next_if(|(k, kn)| k == key && kn.meta == *meta) {
                Some((k, kn)) => self.keep(&mut known, k, kn),
                None => {
                    let kn = self.learn(key, *meta, &mut budget);
                    self.keep(&mut known, key.clone(), kn);
                }
            }
        }
        self.known = known;
        self.before = Some(snap);
        Ok(())
    }

    fn after(&mut self) -> Result<WorkspaceDelta, WorkspaceError> {
        let before = self.before.take().ok_or(WorkspaceError::NoBefore)?;
        let after = self.snapshot()?;
        let limit = match (&before.capped_at, &after.capped_at) {
            (Some(a), Some(b)) => Some(a.min(b).clone()),
            (Some(a), None) | (None, Some(a)) => Some(a.clone()),
            (None, None) => None,
        };
        let within = |k: &Key| limit.as_ref().is_none_or(|l| k <= l);
        let mut delta = WorkspaceDelta::default();
        let mut budget = READ_BUDGET;
        // `known` holds the files of the snapshot before the block (with their metadata then);
        // both lists are sorted by key: walk them side by side.
        let mut old = std::mem::take(&mut self.known).into_iter().peekable();
        let mut new = after.files.iter().peekable();
        let mut known = Vec::with_capacity(after.files.len());
        self.text_bytes = 0;
        loop {
            let order = match (old.peek(), new.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((a, _)), Some((b, _))) => a.cmp(b),
            };
            match order {
                std::cmp::Ordering::Less => {
                    let Some((key, gone)) = old.next() else { break };
                    if within(&key) {
                        delta.deleted.push(FileChange {
                            path: key.display(),
                            size_before: Some(gone.meta.size),
                            size_after: None,
                            lines_added: gone.lines().map(|_| 0),
                            lines_removed: gone.lines(),
                        });
                    }
                }
                std::cmp::Ordering::Greater => {
                    let Some((key, meta)) = new.next() else { break };
                    if !within(key) {
                        continue;
                    }
                    let kn = self.learn(key, *meta, &mut budget);
                    let lines = kn.lines();
                    delta.created.push(FileChange {
                        path: key.display(),
                        size_before: None,
                        size_after: Some(meta.size),
                        lines_added: lines,
                        lines_removed: lines.map(|_| 0),
                    });
                    self.keep(&mut known, key.clone(), kn);
                }
                std::cmp::Ordering::Equal => {
                    let (Some((key, was)), Some((_, meta))) = (old.next(), new.next()) else {
                        break;
                    };
                    if was.meta == *meta {
                        self.keep(&mut known, key, was);
                        continue;
                    }
                    let now = self.learn(&key, *meta, &mut budget);
                    let same_content = was.meta.kind == meta.kind
                        && was.meta.size == meta.size
                        && was.meta.mode == meta.mode
                        && now.hash.is_some()
                        && was.hash == now.hash;
                    if !same_content && within(&key) {
                        let (added, removed) = match (was.text.as_deref(), now.text.as_deref()) {
                            (Some(a), Some(b)) => {
                                let (x, y) = crate::store::diff::line_counts(a, b);
                                (Some(x), Some(y))
                            }
                            _ => (None, None),
                        };
                        delta.modified.push(FileChange {
                            path: key.display(),
                            size_before: Some(was.meta.size),
                            size_after: Some(meta.size),
                            lines_added: added,
                            lines_removed: removed,
                        });
                    }
                    self.keep(&mut known, key, now);
                }
            }
        }
        self.known = known;
        delta.notes = notes(&before, &after, limit.is_some());
        Ok(delta)
    }
}

/// Notes on summarised directories that appeared, went or changed, the cap and unreadable parts.
fn notes(before: &Snapshot, after: &Snapshot, capped: bool) -> Vec<WorkspaceNote> {
    let mut notes = Vec::new();
    let what = |why: Summarised| match why {
        Summarised::Git => "git's data",
        Summarised::BuildOutput => "build output",
        Summarised::Ignored => "ignored by git",
    };
    for (key, s) in &after.dirs {
        let change = match before.dirs.get(key) {
            None => "created",
            Some(b) if b.fingerprint != s.fingerprint => "changed",
            Some(_) => continue,
        };
        let detail = if s.why == Summarised::Git && change == "changed" {
            "changed (commits, branches, HEAD or the index)"
        } else {
            change
        };
        notes.push(WorkspaceNote {
            path: key.display(),
            note: format!("{} (not walked): {detail}", what(s.why)),
        });
    }
    for (key, s) in &before.dirs {
        if !after.dirs.contains_key(key) && after.file(key).is_none() {
            notes.push(WorkspaceNote {
                path: key.display(),
                note: format!("{} (not walked): removed", what(s.why)),
            });
        }
    }
    if capped {
        notes.push(WorkspaceNote {
            path: String::new(),
            note: format!(
                "only the first {} files were compared (the walk's cap); changes after them are not listed",
                after.cap
            ),
        });
    }
    for rel in &after.unreadable {
        notes.push(WorkspaceNote {
            path: rel.clone(),
            note: "could not be read (permissions); changes inside are not listed".into(),
        });
    }
    notes
}

/// A size in words: `512 B`, `1.5 KiB`, `2.0 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// One line per change, e.g. `created src/a.py (12 lines, 340 B)`,
/// `modified b.py (+3 −1 lines, 1.2 KiB → 1.3 KiB)`, `deleted c.txt (20 lines, 500 B)`, then the
/// notes; at most `max` file lines, then `… and N more`. `show` renders a path (front ends make
/// it safe for a terminal; the agents' report keeps it exact).
pub fn describe(delta: &WorkspaceDelta, max: usize, show: &dyn Fn(&str) -> String) -> Vec<String> {
    let mut lines = Vec::new();
    let all = delta
        .created
        .iter()
        .map(|c| ("created", c))
        .chain(delta.modified.iter().map(|c| ("modified", c)))
        .chain(delta.deleted.iter().map(|c| ("deleted", c)));
    let total = delta.created.len() + delta.modified.len() + delta.deleted.len();
    for (what, c) in all.take(max) {
        let detail = match what {
            "created" => match c.lines_added {
                Some(n) => format!(
                    "{n} line{}, {}",
                    plural(n),
                    human_size(c.size_after.unwrap_or(0))
                ),
                None => human_size(c.size_after.unwrap_or(0)),
            },
            "deleted" => match c.lines_removed {
                Some(n) => format!(
                    "{n} line{}, {}",
                    plural(n),
                    human_size(c.size_before.unwrap_or(0))
                ),
                None => human_size(c.size_before.unwrap_or(0)),
            },
            _ => {
                let sizes = format!(
                    "{} → {}",
                    human_size(c.size_before.unwrap_or(0)),
                    human_size(c.size_after.unwrap_or(0))
                );
                match (c.lines_added, c.lines_removed) {
                    (Some(a), Some(r)) => format!("+{a} −{r} lines, {sizes}"),
                    _ => sizes,
                }
            }
        };
        lines.push(format!("{what} {} ({detail})", show(&c.path)));
    }
    if total > max {
        lines.push(format!("… and {} more", total - max));
    }
    for n in &delta.notes {
        if n.path.is_empty() {
            lines.push(format!("note: {}", n.note));
        } else {
            lines.push(format!("note: {}: {}", show(&n.path), n.note));
        }
    }
    lines
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(v: &[FileChange]) -> Vec<&str> {
        v.iter().map(|c| c.path.as_str()).collect()
    }

    #[test]
    fn created_modified_deleted_with_sizes_and_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("edit.py"), "a\nb\nc\n").unwrap();
        std::fs::write(p.join("gone.txt"), "1\n2\n").unwrap();
        std::fs::write(p.join("touched.txt"), "same\n").unwrap();
        std::fs::write(p.join("bin.dat"), [0u8, 1, 2, 3]).unwrap();
        let mut t = HostTracker::new(p, WalkOptions::default());
        t.before().unwrap();
        std::fs::write(p.join("edit.py"), "a\nB\nc\nd\n").unwrap();
        std::fs::remove_file(p.join("gone.txt")).unwrap();
        std::fs::create_dir(p.join("new")).unwrap();
        std::fs::write(p.join("new/made.py"), "x = 1\ny = 2\n").unwrap();
        // Same content, new inode and times: not a change.
        std::fs::remove_file(p.join("touched.txt")).unwrap();
        std::fs::write(p.join("touched.txt"), "same\n").unwrap();
        std::fs::write(p.join("bin.dat"), [0u8, 1, 2, 3, 4]).unwrap();
        let delta = t.after().unwrap();
        assert_eq!(paths(&delta.created), ["new/made.py"]);
        assert_eq!(paths(&delta.modified), ["bin.dat", "edit.py"]);
        assert_eq!(paths(&delta.deleted), ["gone.txt"]);
        let edit = &delta.modified[1];
        assert_eq!(
            (
                edit.size_before,
                edit.size_after,
                edit.lines_added,
                edit.lines_removed
            ),
            (Some(6), Some(8), Some(2), Some(1))
        );
        let bin = &delta.modified[0];
        assert_eq!((bin.lines_added, bin.size_after), (None, Some(5)));
        assert_eq!(delta.created[0].lines_added, Some(2));
        assert_eq!(delta.deleted[0].lines_removed, Some(2));
        assert!(delta.notes.is_empty(), "{:?}", delta.notes);
        // The next block starts from what the last one left.
        t.before().unwrap();
        std::fs::write(p.join("edit.py"), "a\nB\nc\n").unwrap();
        let delta = t.after().unwrap();
        assert_eq!(paths(&delta.modified), ["edit.py"]);
        assert_eq!(
            (
                delta.modified[0].lines_added,
                delta.modified[0].lines_removed
            ),
            (Some(0), Some(1))
        );
    }

    #[test]
    fn edits_between_blocks_are_not_the_next_blocks_doing() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.txt"), "1\n").unwrap();
        let mut t = HostTracker::new(d.path(), WalkOptions::default());
        t.before().unwrap();
        assert!(t.after().unwrap().no_file_changed());
        std::fs::write(d.path().join("a.txt"), "1\n2\n").unwrap();
        t.before().unwrap();
        std::fs::write(d.path().join("a.txt"), "1\n2\n3\n").unwrap();
        let delta = t.after().unwrap();
        assert_eq!(delta.modified[0].lines_added, Some(1));
    }

    #[test]
    fn summarised_dirs_are_noted_when_they_change() {
        let d = tempfile::tempdir().unwrap();
        let mut t = HostTracker::new(d.path(), WalkOptions::default());
        t.before().unwrap();
        std::fs::create_dir_all(d.path().join("target/debug")).unwrap();
        std::fs::write(d.path().join("target/debug/app"), "x").unwrap();
        let delta = t.after().unwrap();
        assert!(delta.no_file_changed());
        assert_eq!(
            delta.notes,
            vec![WorkspaceNote {
                path: "target".into(),
                note: "build output (not walked): created".into()
            }]
        );
    }

    #[test]
    fn a_capped_walk_compares_only_what_both_snapshots_saw() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..6 {
            std::fs::write(d.path().join(format!("f{i}")), "x").unwrap();
        }
        let opts = WalkOptions {
            max_files: 3,
            ..Default::default()
        };
        let mut t = HostTracker::new(d.path(), opts);
        t.before().unwrap();
        std::fs::write(d.path().join("a-first"), "new").unwrap();
        std::fs::write(d.path().join("f5"), "changed beyond the cap").unwrap();
        let delta = t.after().unwrap();
        assert_eq!(paths(&delta.created), ["a-first"]);
        assert!(
            delta.modified.is_empty() && delta.deleted.is_empty(),
            "{delta:?}"
        );
        assert!(delta.notes.iter().any(|n| n.note.contains("first 3 files")));
    }

    #[test]
    fn a_vanished_workspace_is_an_error_not_a_mass_deletion() {
        let d = tempfile::tempdir().unwrap();
        let ws = d.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        std::fs::write(ws.join("a"), "x").unwrap();
        let mut t = HostTracker::new(&ws, WalkOptions::default());
        t.before().unwrap();
        std::fs::remove_dir_all(&ws).unwrap();
        assert!(matches!(t.after(), Err(WorkspaceError::Unreadable { .. })));
    }

    #[test]
    fn describe_is_short_and_caps_the_list() {
        let delta = WorkspaceDelta {
            created: vec![FileChange {
                path: "a.py".into(),
                size_before: None,
                size_after: Some(340),
                lines_added: Some(12),
                lines_removed: Some(0),
            }],
            modified: vec![FileChange {
                path: "b.py".into(),
                size_before: Some(1200),
                size_after: Some(1300),
                lines_added: Some(3),
                lines_removed: Some(1),
            }],
            deleted: vec![FileChange {
                path: "c.bin".into(),
                size_before: Some(5),
                size_after: None,
                lines_added: None,
                lines_removed: None,
            }],
            notes: vec![],
        };
        let show = |p: &str| p.to_owned();
        assert_eq!(
            describe(&delta, 10, &show),
            [
                "created a.py (12 lines, 340 B)",
                "modified b.py (+3 −1 lines, 1.2 KiB → 1.3 KiB)",
                "deleted c.bin (5 B)"
            ]
        );
        assert_eq!(describe(&delta, 1, &show)[1], "… and 2 more");
    }
}
