//! A snapshot of a workspace: the metadata of every file that counts (size, mtime, ctime, inode,
//! mode), never its content. `.git/`, `target/`, `node_modules/` and directories git ignores are
//! summarised by a fingerprint instead of walked; git-ignored files are left out; the walk stops
//! at a cap and says so.
//!
//! A [`Snapshot`] is plain data: the host walks the workspace with [`walk`]; another backend (a
//! remote sandbox) can build the same structure where the files are.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::gitignore::{BaseRules, Level, Repo, Tracked, is_ignored};

/// Directory names never walked (at any depth): git's own data and usual build output.
pub const SUMMARISED_DIRS: [&str; 3] = [".git", "target", "node_modules"];
/// Files walked at most by default.
pub const MAX_FILES: usize = 50_000;

/// A workspace-relative path as a sort key: components joined by `\0`, so that sorting keys gives
/// the walk's order (each directory's entries by name, depth first).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(Vec<u8>);

impl Key {
    /// The key of a `/`-separated relative path.
    pub fn from_rel(rel: &str) -> Key {
        Key(rel.replace('/', "\0").into_bytes())
    }

    fn child(&self, name: &[u8]) -> Key {
        let mut v = self.0.clone();
        if !v.is_empty() {
            v.push(0);
        }
        v.extend_from_slice(name);
        Key(v)
    }

    /// The path, `/`-separated (file names that are not UTF-8 are shown lossily).
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.0).replace('\0', "/")
    }

    /// The key's bytes (components joined by `\0`).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The path under `root`.
    pub fn under(&self, root: &Path) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        self.0.split(|b| *b == 0).fold(root.to_path_buf(), |p, c| {
            p.join(std::ffi::OsStr::from_bytes(c))
        })
    }
}

/// What kind of file an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A symbolic link (never followed).
    Symlink,
    /// A FIFO, socket or device.
    Special,
}

/// One file's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    /// Kind.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status change time, ns since the epoch.
    pub ctime_ns: i64,
    /// Inode number.
    pub ino: u64,
    /// Permission bits.
    pub mode: u32,
}

impl FileMeta {
    /// The metadata of `m` (from `symlink_metadata`).
    pub fn of(m: &std::fs::Metadata) -> FileMeta {
        let ft = m.file_type();
        FileMeta {
            kind: if ft.is_file() {
                Kind::File
            } else if ft.is_symlink() {
                Kind::Symlink
            } else {
                Kind::Special
            },
            size: m.len(),
            mtime_ns: m
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.mtime_nsec()),
            ctime_ns: m
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.ctime_nsec()),
            ino: m.ino(),
            mode: m.mode() & 0o7777,
        }
    }
}

/// Why a directory was summarised instead of walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summarised {
    /// A `.git` directory.
    Git,
    /// `target/` or `node_modules/`.
    BuildOutput,
    /// git ignores it.
    Ignored,
}

/// A summarised directory: why, and a cheap fingerprint that changes when its top level (or, for
/// `.git`, the branch, HEAD or index) changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSummary {
    /// Why it was not walked.
    pub why: Summarised,
    /// (mtime ns, inode) of the directory and of the files that tell what happened inside.
    pub fingerprint: Vec<(i64, u64)>,
}

/// The workspace at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every walked file that git would not ignore, sorted by key (the walk's order).
    pub files: Vec<(Key, FileMeta)>,
    /// Directories not walked.
    pub dirs: BTreeMap<Key, DirSummary>,
    /// The walk stopped at its cap; nothing after this key was seen.
    pub capped_at: Option<Key>,
    /// The cap the walk used.
    pub cap: usize,
    /// Directories that could not be read (permissions), workspace-relative.
    pub unreadable: Vec<String>,
}

impl Snapshot {
    /// The metadata of the file at `key`, if walked.
    pub fn file(&self, key: &Key) -> Option<&FileMeta> {
        self.files
            .binary_search_by(|(k, _)| k.cmp(key))
            .ok()
            .map(|i| &self.files[i].1)
    }
}

/// How to walk.
#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// Stop after this many files.
    pub max_files: usize,
    /// Look for the repository in the workspace's parents too (a workspace inside a repository).
    pub search_parents: bool,
}

impl Default for WalkOptions {
    fn default() -> Self {
        Self {
            max_files: MAX_FILES,
            search_parents: false,
        }
    }
}

/// What git knows about a workspace, read once per snapshot (cheaply: the tracked paths are
/// reused while the index file is unchanged).
#[derive(Debug, Default)]
pub struct GitView {
    repo: Option<Repo>,
    base: BaseRules,
    tracked: Tracked,
    index_stamp: Option<(u64, i64, u64)>,
}

impl GitView {
    /// Brings the view up to date with the repository at or above `root`.
    pub fn refresh(&mut self, root: &Path, search_parents: bool) {
        let repo = Repo::find(root, search_parents);
        let Some(repo) = repo else {
            *self = GitView::default();
            return;
        };
        self.base = BaseRules::for_repo(&repo);
        let index = repo.git_dir().join("index");
        let stamp = std::fs::symlink_metadata(&index)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| (m.len(), m.mtime_nsec() + m.mtime() * 1_000_000_000, m.ino()));
        if stamp.is_none() {
            self.tracked = Tracked::default();
        } else if stamp != self.index_stamp || self.repo.as_ref().map(|r| &r.top) != Some(&repo.top)
        {
            self.tracked = super::gitignore::read_plain(&index, super::gitignore::MAX_INDEX)
                .and_then(|b| super::gitignore::index_paths(&b))
                .map(|p| Tracked::from_index(p, &repo.prefix))
                .unwrap_or_default();
        }
        self.index_stamp = stamp;
        self.repo = Some(repo);
    }

    /// Whether the workspace is in a git repository.
    pub fn is_repo(&self) -> bool {
        self.repo.is_some()
    }

    /// The repository, if any.
    pub fn repo(&self) -> Option<&Repo> {
        self.repo.as_ref()
    }
}

/// Walks `root` (not following symlinks) and returns its snapshot. Directories are read by a few
/// threads at once; a tree bigger than the cap is walked again in order, stopping at the cap.
pub fn walk(root: &Path, opts: &WalkOptions, git: &mut GitView) -> std::io::Result<Snapshot> {
    git.refresh(root, opts.search_parents);
    // Make sure the root itself can be listed: a workspace that vanished is an error, not "every
    // file deleted".
    std::fs::read_dir(root)?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get().min(MAX_THREADS))
        .unwrap_or(1);
    if threads > 1
        && let Some(snap) = walk_parallel(root, opts, git, threads)
    {
        return Ok(snap);
    }
    Ok(walk_in_order(root, opts, git))
}

/// The walk on one thread, in key order, stopping exactly at the cap.
fn walk_in_order(root: &Path, opts: &WalkOptions, git: &GitView) -> Snapshot {
    let mut snap = Snapshot {
        cap: opts.max_files,
        ..Default::default()
    };
    let mut walker = Walker {
        opts,
        git,
        snap: &mut snap,
        levels: Vec::new(),
    };
    walker.dir(root.to_path_buf(), Key(Vec::new()), String::new(), false);
    snap
}

/// Threads reading directories at most.
const MAX_THREADS: usize = 8;

/// What one directory entry is to the snapshot.
enum Seen {
    /// A file to list.
    File(Key, FileMeta),
    /// A directory to walk (`ignored`: git ignores it, but it holds tracked files).
    Dir {
        key: Key,
        rel: String,
        ignored: bool,
    },
    /// A directory summarised instead of walked.
    Summary(Key, DirSummary),
    /// Ignored by git, or gone.
    Skip,
}

/// A directory's entries, sorted by name.
fn list(abs: &Path) -> std::io::Result<Vec<(std::ffi::OsString, std::fs::DirEntry)>> {
    use std::os::unix::ffi::OsStrExt;
    let mut entries: Vec<(std::ffi::OsString, std::fs::DirEntry)> = std::fs::read_dir(abs)?
        .filter_map(Result::ok)
        .map(|e| (e.file_name(), e))
        .collect();
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(entries)
}

/// Classifies one entry of the directory `abs` (key `key`, workspace-relative `rel`); `levels`
/// are the `.gitignore` rules from the top down to this directory.
fn classify(
    git: &GitView,
    levels: &[&Level],
    (abs, key, rel, parent_ignored): (&Path, &Key, &str, bool),
    name: &std::ffi::OsStr,
    entry: &std::fs::DirEntry,
) -> Seen {
    use std::os::unix::ffi::OsStrExt;
    let nb = name.as_bytes();
    let child_key = key.child(nb);
    let rel_of = || {
        if rel.is_empty() {
            String::from_utf8_lossy(nb).into_owned()
        } else {
            format!("{rel}/{}", String::from_utf8_lossy(nb))
        }
    };
    // lstat relative to the open directory: no path walk from the root per file.
    let Ok(meta) = entry.metadata() else {
        // Gone between the listing and now.
        return Seen::Skip;
    };
    let in_repo = git.is_repo();
    if meta.is_dir() {
        let child_rel = rel_of();
        let summarised = match nb {
            b".git" => Some(Summarised::Git),
            b"target" | b"node_modules" => Some(Summarised::BuildOutput),
            _ => None,
        };
        let tracked_inside = git.tracked.has_dir(child_key.as_bytes());
        let ignored =
            in_repo && (parent_ignored || is_ignored(&git.base, levels, &child_rel, true));
        let why = summarised.or((ignored && !tracked_inside).then_some(Summarised::Ignored));
        return match why {
            Some(why) => Seen::Summary(
                child_key,
                DirSummary {
                    why,
                    fingerprint: fingerprint(&abs.join(name), why),
                },
            ),
            // Inside an ignored directory that holds tracked files, only those files count.
            None => Seen::Dir {
                key: child_key,
                rel: child_rel,
                ignored,
            },
        };
    }
    if in_repo
        && !git.tracked.has_file(child_key.as_bytes())
        && (parent_ignored || is_ignored(&git.base, levels, &rel_of(), false))
    {
        return Seen::Skip;
    }
    Seen::File(child_key, FileMeta::of(&meta))
}

fn has_gitignore(git: &GitView, entries: &[(std::ffi::OsString, std::fs::DirEntry)]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    git.is_repo() && entries.iter().any(|(n, _)| n.as_bytes() == b".gitignore")
}

/// The in-order walk: stops exactly at the cap.
struct Walker<'a> {
    opts: &'a WalkOptions,
    git: &'a GitView,
    snap: &'a mut Snapshot,
    levels: Vec<Level>,
}

impl Walker<'_> {
    /// Walks one directory; returns false once the cap is hit.
    fn dir(&mut self, abs: PathBuf, key: Key, rel: String, parent_ignored: bool) -> bool {
        let Ok(entries) = list(&abs) else {
            self.snap.unreadable.push(rel);
            return true;
        };
        self.levels
            .push(Level::new(&abs, &rel, has_gitignore(self.git, &entries)));
        for (name, entry) in entries {
            let levels: Vec<&Level> = self.levels.iter().collect();
            let seen = classify(
                self.git,
                &levels,
                (&abs, &key, &rel, parent_ignored),
                &name,
                &entry,
            );
            match seen {
                Seen::Skip => {}
                Seen::Summary(k, s) => {
                    self.snap.dirs.insert(k, s);
                }
                Seen::Dir {
                    key: k,
                    rel: r,
                    ignored,
                } => {
                    if !self.dir(abs.join(&name), k, r, ignored) {
                        self.levels.pop();
                        return false;
                    }
                }
                Seen::File(k, meta) => {
                    if self.snap.files.len() >= self.opts.max_files {
                        let last = self.snap.files.last().map(|(k, _)| k.clone());
                        if let Some(l) = &last {
                            self.snap.dirs.retain(|k, _| k <= l);
                        }
                        self.snap.capped_at = last;
                        self.levels.pop();
                        return false;
                    }
                    // Entries are sorted and the walk is depth first: keys arrive in order.
                    self.snap.files.push((k, meta));
                }
            }
        }
        self.levels.pop();
        true
    }
}

/// The `.gitignore` levels from the top down to a directory, shared between threads.
struct Chain {
    level: Level,
    parent: Option<std::sync::Arc<Chain>>,
}

impl Chain {
    fn levels(&self) -> Vec<&Level> {
        let mut v = vec![&self.level];
        let mut at = self.parent.as_deref();
        while let Some(c) = at {
            v.push(&c.level);
            at = c.parent.as_deref();
        }
        v.reverse();
        v
    }
}

/// A directory waiting to be read.
struct Job {
    abs: PathBuf,
    key: Key,
    rel: String,
    ignored: bool,
    parent: Option<std::sync::Arc<Chain>>,
}

/// Work shared by the walking threads.
struct Queue {
    jobs: Vec<Job>,
    busy: usize,
    files: usize,
    abandoned: bool,
}

/// Reads directories on `threads` threads, then sorts. `None` when the tree holds far more files
/// than the cap (the in-order walk then stops at the cap instead).
fn walk_parallel(
    root: &Path,
    opts: &WalkOptions,
    git: &GitView,
    threads: usize,
) -> Option<Snapshot> {
    use std::sync::{Condvar, Mutex};
    let queue = Mutex::new(Queue {
        jobs: vec![Job {
            abs: root.to_path_buf(),
            key: Key(Vec::new()),
            rel: String::new(),
            ignored: false,
            parent: None,
        }],
        busy: 0,
        files: 0,
        abandoned: false,
    });
    let wake = Condvar::new();
    let bound = opts.max_files.saturating_mul(2).saturating_add(1);
    let lock = || {
        queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let parts: Option<Vec<Snapshot>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut part = Snapshot::default();
                    loop {
                        let job = {
                            let mut q = lock();
                            loop {
                                if q.abandoned {
                                    return part;
                                }
                                if let Some(job) = q.jobs.pop() {
                                    q.busy += 1;
                                    break job;
                                }
                                if q.busy == 0 {
                                    return part;
                                }
                                q = wake
                                    .wait(q)
                                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                            }
                        };
                        let (found, subdirs) = read_one(git, job, &mut part);
                        let mut q = lock();
                        q.busy -= 1;
                        q.files += found;
                        if q.files > bound {
                            q.abandoned = true;
                        }
                        q.jobs.extend(subdirs);
                        wake.notify_all();
                    }
                })
            })
            .collect();
        // A part missing would read as files deleted: all or nothing.
        workers.into_iter().map(|w| w.join().ok()).collect()
    });
    let parts = parts?;
    if lock().abandoned {
        return None;
    }
    let mut snap = Snapshot {
        cap: opts.max_files,
        ..Default::default()
    };
    for part in parts {
        snap.files.extend(part.files);
        snap.dirs.extend(part.dirs);
        snap.unreadable.extend(part.unreadable);
    }
    snap.files.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    snap.unreadable.sort();
    if snap.files.len() > opts.max_files {
        snap.files.truncate(opts.max_files);
        let last = snap.files.last().map(|(k, _)| k.clone());
        if let Some(l) = &last {
            snap.dirs.retain(|k, _| k <= l);
        }
        snap.capped_at = last;
    }
    Some(snap)
}

/// Reads one directory into `part`; returns the files found and the directories to read next.
fn read_one(git: &GitView, job: Job, part: &mut Snapshot) -> (usize, Vec<Job>) {
    let Ok(entries) = list(&job.abs) else {
        part.unreadable.push(job.rel);
        return (0, Vec::new());
    };
    let chain = std::sync::Arc::new(Chain {
        level: Level::new(&job.abs, &job.rel, has_gitignore(git, &entries)),
        parent: job.parent,
    });
    let levels = chain.levels();
    let mut found = 0;
    let mut subdirs = Vec::new();
    for (name, entry) in entries {
        let seen = classify(
            git,
            &levels,
            (&job.abs, &job.key, &job.rel, job.ignored),
            &name,
            &entry,
        );
        match seen {
            Seen::Skip => {}
            Seen::Summary(k, s) => {
                part.dirs.insert(k, s);
            }
            Seen::Dir { key, rel, ignored } => subdirs.push(Job {
                abs: job.abs.join(&name),
                key,
                rel,
                ignored,
                parent: Some(chain.clone()),
            }),
            Seen::File(k, meta) => {
                found += 1;
                part.files.push((k, meta));
            }
        }
    }
    (found, subdirs)
}

/// (mtime, inode) of a summarised directory and, for `.git`, of what changes with commits,
/// checkouts and staging.
fn fingerprint(dir: &Path, why: Summarised) -> Vec<(i64, u64)> {
    let stamp = |p: &Path| {
        std::fs::symlink_metadata(p)
            .map(|m| (m.mtime() * 1_000_000_000 + m.mtime_nsec(), m.ino()))
            .unwrap_or((0, 0))
    };
    let mut v = vec![stamp(dir)];
    if why == Summarised::Git {
        for inner in ["HEAD", "index", "refs/heads", "packed-refs", "logs/HEAD"] {
            v.push(stamp(&dir.join(inner)));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(s: &Snapshot) -> Vec<String> {
        s.files.iter().map(|(k, _)| k.display()).collect()
    }

    #[test]
    fn files_come_sorted_by_key() {
        let d = tempfile::tempdir().unwrap();
        for rel in ["a/z", "a.b", "a-c", "b", "a/y/x"] {
            let p = d.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        let snap = walk(d.path(), &WalkOptions::default(), &mut GitView::default()).unwrap();
        assert!(snap.files.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(keys(&snap), ["a/y/x", "a/z", "a-c", "a.b", "b"]);
        assert!(snap.file(&Key::from_rel("a/z")).is_some());
        assert!(snap.file(&Key::from_rel("a")).is_none());
    }

    #[test]
    fn keys_sort_in_walk_order() {
        let mut v = [
            Key::from_rel("a.b"),
            Key::from_rel("a/z"),
            Key::from_rel("a"),
        ];
        v.sort();
        let shown: Vec<String> = v.iter().map(Key::display).collect();
        assert_eq!(shown, ["a", "a/z", "a.b"]);
    }

    #[test]
    fn summarised_dirs_and_ignored_files_are_not_listed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join(".git/refs/heads")).unwrap();
        std::fs::create_dir_all(p.join("target/debug")).unwrap();
        std::fs::create_dir_all(p.join("web/node_modules/x")).unwrap();
        std::fs::create_dir_all(p.join("build")).unwrap();
        std::fs::write(p.join("target/debug/bin"), "x").unwrap();
        std::fs::write(p.join("build/out.o"), "x").unwrap();
        std::fs::write(p.join(".gitignore"), "build/\n*.tmp\n").unwrap();
        std::fs::write(p.join("a.py"), "x").unwrap();
        std::fs::write(p.join("junk.tmp"), "x").unwrap();
        std::fs::write(p.join("web/index.js"), "x").unwrap();
        let snap = walk(p, &WalkOptions::default(), &mut GitView::default()).unwrap();
        assert_eq!(keys(&snap), [".gitignore", "a.py", "web/index.js"]);
        let dirs: Vec<(String, Summarised)> = snap
            .dirs
            .iter()
            .map(|(k, s)| (k.display(), s.why))
            .collect();
        assert_eq!(
            dirs,
            [
                (".git".to_string(), Summarised::Git),
                ("build".to_string(), Summarised::Ignored),
                ("target".to_string(), Summarised::BuildOutput),
                ("web/node_modules".to_string(), Summarised::BuildOutput),
            ]
        );
    }

    #[test]
    fn without_a_repository_gitignore_files_do_not_apply() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(".gitignore"), "*.tmp\n").unwrap();
        std::fs::write(d.path().join("x.tmp"), "x").unwrap();
        let snap = walk(d.path(), &WalkOptions::default(), &mut GitView::default()).unwrap();
        assert_eq!(keys(&snap), [".gitignore", "x.tmp"]);
    }

    #[test]
    fn tracked_files_are_listed_even_when_ignored() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let git = |args: &[&str]| {
            assert!(
                std::process::Command::new("git")
                    .args(args)
                    .current_dir(p)
                    .env("GIT_CONFIG_GLOBAL", "/dev/null")
                    .output()
                    .unwrap()
                    .status
                    .success()
            )
        };
        git(&["init", "-q"]);
        std::fs::create_dir(p.join("logs")).unwrap();
        std::fs::write(p.join("logs/keep.log"), "x").unwrap();
        std::fs::write(p.join("logs/other.log"), "x").unwrap();
        std::fs::write(p.join("config.json"), "{}").unwrap();
        git(&["add", "-A"]);
        std::fs::write(p.join(".gitignore"), "logs/\nconfig.json\n").unwrap();
        git(&["rm", "-q", "--cached", "logs/other.log"]);
        let snap = walk(p, &WalkOptions::default(), &mut GitView::default()).unwrap();
        // git status would list: .gitignore (untracked), config.json and logs/keep.log (tracked).
        assert_eq!(keys(&snap), [".gitignore", "config.json", "logs/keep.log"]);
    }

    #[test]
    fn threads_and_the_in_order_walk_see_the_same_tree() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let git = |args: &[&str]| {
            assert!(
                std::process::Command::new("git")
                    .args(args)
                    .current_dir(p)
                    .env("GIT_CONFIG_GLOBAL", "/dev/null")
                    .output()
                    .unwrap()
                    .status
                    .success()
            )
        };
        git(&["init", "-q"]);
        for i in 0..30 {
            for j in 0..7 {
                let dir = p.join(format!("d{i}/e{j}"));
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("f.py"), "x").unwrap();
                std::fs::write(dir.join("g.log"), "x").unwrap();
            }
        }
        std::fs::write(
            p.join(".gitignore"),
            "*.log
d3/
",
        )
        .unwrap();
        std::fs::write(
            p.join("d5/.gitignore"),
            "e1/
!*.log
",
        )
        .unwrap();
        std::fs::create_dir_all(p.join("d7/node_modules/x")).unwrap();
        git(&["add", "-f", "d3/e2/f.py"]);
        let opts = WalkOptions::default();
        let mut view = GitView::default();
        let threaded = walk_parallel(
            p,
            &opts,
            &{
                view.refresh(p, false);
                view
            },
            4,
        )
        .unwrap();
        let mut view = GitView::default();
        view.refresh(p, false);
        let ordered = walk_in_order(p, &opts, &view);
        assert_eq!(threaded, ordered);
        assert!(keys(&ordered).contains(&"d3/e2/f.py".to_string()));
        assert!(keys(&ordered).contains(&"d5/e0/g.log".to_string()));
        assert!(!keys(&ordered).iter().any(|k| k.starts_with("d5/e1/")));
        // Capped the same way too.
        let small = WalkOptions {
            max_files: 150,
            ..Default::default()
        };
        let capped = walk_in_order(p, &small, &view);
        assert_eq!(capped.files.len(), 150);
        assert_eq!(walk_parallel(p, &small, &view, 4).unwrap(), capped);
        // Far more files than the cap: the threads give up and the in-order walk is used.
        let tiny = WalkOptions {
            max_files: 20,
            ..Default::default()
        };
        assert!(walk_parallel(p, &tiny, &view, 4).is_none());
    }

    #[test]
    fn the_walk_stops_at_its_cap_and_says_where() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..10 {
            std::fs::write(d.path().join(format!("f{i}")), "x").unwrap();
        }
        let opts = WalkOptions {
            max_files: 4,
            ..Default::default()
        };
        let snap = walk(d.path(), &opts, &mut GitView::default()).unwrap();
        assert_eq!(snap.files.len(), 4);
        assert_eq!(
            snap.capped_at.as_ref().map(Key::display).as_deref(),
            Some("f3")
        );
    }

    #[test]
    fn symlinks_are_recorded_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), "x".repeat(1000)).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("dir-link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("big"), d.path().join("file-link")).unwrap();
        let snap = walk(d.path(), &WalkOptions::default(), &mut GitView::default()).unwrap();
        assert_eq!(keys(&snap), ["dir-link", "file-link"]);
        assert!(snap.files.iter().all(|(_, m)| m.kind == Kind::Symlink));
    }

    #[test]
    fn a_missing_workspace_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let gone = d.path().join("gone");
        assert!(walk(&gone, &WalkOptions::default(), &mut GitView::default()).is_err());
    }
}
