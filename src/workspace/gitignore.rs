//! Which paths of a workspace git would not list: `.gitignore` files (every level), the
//! repository's `info/exclude` and the user's global excludes, with git's rule that a tracked file
//! is never ignored (the tracked paths come from the repository's index, read here without running
//! git: the workspace belongs to sandboxed code, and a `git` run in it would obey its config).
//!
//! Everything read from the workspace is opened without following symlinks and size-capped, so
//! planted links cannot make proctor read host files.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// Largest ignore file read (bigger ones are skipped).
const MAX_IGNORE_FILE: u64 = 1 << 20;
/// Largest index read (bigger ones: tracked paths unknown).
pub(crate) const MAX_INDEX: u64 = 256 << 20;

/// Reads a regular file under the workspace without following a symlink in its last component,
/// at most `max` bytes; `None` when it is missing, not a regular file, or too big.
pub(crate) fn read_plain(path: &Path, max: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(
            rustix::fs::OFlags::NOFOLLOW.bits() as i32 | rustix::fs::OFlags::NONBLOCK.bits() as i32,
        )
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > max {
        return None;
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut buf).ok()?;
    (buf.len() as u64 <= max).then_some(buf)
}

/// The git repository a workspace belongs to, if any.
#[derive(Debug, Clone)]
pub struct Repo {
    /// Its top directory (holds `.git/`).
    pub top: PathBuf,
    /// The workspace relative to `top` (empty when the workspace is the top), `/`-separated.
    pub prefix: String,
}

impl Repo {
    /// The repository whose work tree holds `root`: `root` itself when it has a `.git` directory,
    /// else the nearest parent with one (when `search_parents`). A `.git` file (worktrees,
    /// submodules) is not followed.
    pub fn find(root: &Path, search_parents: bool) -> Option<Repo> {
        let mut dir = root.to_path_buf();
        let mut rel: Vec<String> = Vec::new();
        loop {
            if std::fs::symlink_metadata(dir.join(".git")).is_ok_and(|m| m.is_dir()) {
                rel.reverse();
                return Some(Repo {
                    top: dir,
                    prefix: rel.join("/"),
                });
            }
            if !search_parents {
                return None;
            }
            let name = dir.file_name()?.to_string_lossy().into_owned();
            rel.push(name);
            dir = dir.parent()?.to_path_buf();
        }
    }

    /// The `.git` directory.
    pub fn git_dir(&self) -> PathBuf {
        self.top.join(".git")
    }
}

/// Paths in a git index (repository-relative, `/`-separated), or `None` when it cannot be read
/// (missing, too big, an unknown version or corrupt).
pub fn index_paths(index: &[u8]) -> Option<Vec<Vec<u8>>> {
    if index.len() < 12 || &index[..4] != b"DIRC" {
        return None;
    }
    let version = u32::from_be_bytes(index[4..8].try_into().ok()?);
    let count = u32::from_be_bytes(index[8..12].try_into().ok()?) as usize;
    if !(2..=4).contains(&version) {
        return None;
    }
    // The object id is 20 bytes (SHA-1) or 32 (SHA-256 repositories): try both.
    for hash_len in [20usize, 32] {
        if let Some(paths) = parse_entries(index, version, count, hash_len) {
            return Some(paths);
        }
    }
    None
}

fn parse_entries(
    index: &[u8],
    version: u32,
    count: usize,
    hash_len: usize,
) -> Option<Vec<Vec<u8>>> {
    // ctime, mtime (2 × 8), dev, ino, mode, uid, gid, size (6 × 4), object id, flags (2).
    let fixed = 16 + 24 + hash_len + 2;
    let mut pos = 12usize;
    let mut paths: Vec<Vec<u8>> = Vec::with_capacity(count.min(1 << 20));
    let mut prev: Vec<u8> = Vec::new();
    // The trailing checksum is as long as an object id.
    let end = index.len().checked_sub(hash_len)?;
    for _ in 0..count {
        let start = pos;
        if pos + fixed > end {
            return None;
        }
        let flags = u16::from_be_bytes([index[pos + fixed - 2], index[pos + fixed - 1]]);
        pos += fixed;
        if flags & 0x4000 != 0 {
            if version < 3 || pos + 2 > end {
                return None;
            }
            pos += 2;
        }
        let path = if version == 4 {
            // Varint: bytes to drop from the previous path; then the NUL-terminated suffix.
            let mut strip: usize = 0;
            loop {
                let b = *index.get(pos)?;
                pos += 1;
                strip = strip.checked_mul(128)?.checked_add((b & 0x7f) as usize)?;
                if b & 0x80 == 0 {
                    break;
                }
                strip = strip.checked_add(1)?;
            }
            let nul = index.get(pos..end)?.iter().position(|b| *b == 0)?;
            let keep = prev.len().checked_sub(strip)?;
            let mut p = prev[..keep].to_vec();
            p.extend_from_slice(&index[pos..pos + nul]);
            pos += nul + 1;
            p
        } else {
            let nul = index.get(pos..end)?.iter().position(|b| *b == 0)?;
            let p = index[pos..pos + nul].to_vec();
            // Entries are NUL-padded to a multiple of 8 bytes.
            let len = pos + nul + 1 - start;
            pos = start + len.div_ceil(8) * 8;
            if pos > end {
                return None;
            }
            p
        };
        if path.is_empty() || path.contains(&0) {
            return None;
        }
        prev.clone_from(&path);
        paths.push(path);
    }
    Some(paths)
}

/// The tracked paths of a workspace and every directory holding one, relative to it with `\0`
/// between components (the form of a snapshot's keys, so lookups need no conversion).
#[derive(Debug, Default, Clone)]
pub struct Tracked {
    files: HashSet<Vec<u8>>,
    dirs: HashSet<Vec<u8>>,
}

impl Tracked {
    /// From a repository's index paths, keeping those under `prefix`.
    pub fn from_index(paths: Vec<Vec<u8>>, prefix: &str) -> Self {
        let mut t = Tracked::default();
        let pre = if prefix.is_empty() {
            Vec::new()
        } else {
            format!("{prefix}/").into_bytes()
        };
        for p in paths {
            let Some(rel) = p.strip_prefix(pre.as_slice()) else {
                continue;
            };
            let rel: Vec<u8> = rel
                .iter()
                .map(|b| if *b == b'/' { 0 } else { *b })
                .collect();
            let mut cut = rel.len();
            while let Some(i) = rel[..cut].iter().rposition(|b| *b == 0) {
                if !t.dirs.insert(rel[..i].to_vec()) {
                    break;
                }
                cut = i;
            }
            t.files.insert(rel);
        }
        t
    }

    /// Whether this file (`\0`-separated) is tracked.
    pub fn has_file(&self, rel: &[u8]) -> bool {
        self.files.contains(rel)
    }

    /// Whether this directory (`\0`-separated) holds a tracked file.
    pub fn has_dir(&self, rel: &[u8]) -> bool {
        self.dirs.contains(rel)
    }

    /// Number of tracked files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// No tracked files.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// A `.gitignore` file's rules, built for the directory that holds it.
pub fn dir_rules(dir: &Path) -> Option<Gitignore> {
    let text = read_plain(&dir.join(".gitignore"), MAX_IGNORE_FILE)?;
    rules_from(dir, &text)
}

fn rules_from(root: &Path, text: &[u8]) -> Option<Gitignore> {
    let text = String::from_utf8_lossy(text);
    let mut b = GitignoreBuilder::new(root);
    for line in text.lines() {
        // A line git cannot parse is skipped by git too.
        let _ = b.add_line(None, line);
    }
    b.build().ok().filter(|g| !g.is_empty())
}

/// The user's global excludes (`core.excludesFile`), read once per process.
fn global_rules() -> Option<Arc<Gitignore>> {
    static GLOBAL: std::sync::OnceLock<Option<Arc<Gitignore>>> = std::sync::OnceLock::new();
    GLOBAL
        .get_or_init(|| {
            let (g, _) = Gitignore::global();
            (!g.is_empty()).then(|| Arc::new(g))
        })
        .clone()
}

/// The ignore rules that sit above the walked tree: the user's global excludes, the
/// repository's `info/exclude`, and the `.gitignore` files of directories between the repository's
/// top and the workspace. Lowest precedence first.
#[derive(Debug, Clone, Default)]
pub struct BaseRules {
    /// (rules, the workspace's path relative to the rules' directory, `/`-terminated or empty).
    layers: Vec<(Arc<Gitignore>, String)>,
}

impl BaseRules {
    /// The base rules for a workspace inside `repo`.
    pub fn for_repo(repo: &Repo) -> Self {
        let mut layers = Vec::new();
        let under = |depth_prefix: &str| -> String {
            if depth_prefix.is_empty() {
                String::new()
            } else {
                format!("{depth_prefix}/")
            }
        };
        if let Some(global) = global_rules() {
            layers.push((global, under(&repo.prefix)));
        }
        if let Some(text) = read_plain(
            &repo.git_dir().join("info").join("exclude"),
            MAX_IGNORE_FILE,
        ) && let Some(g) = rules_from(&repo.top, &text)
        {
            layers.push((Arc::new(g), under(&repo.prefix)));
        }
        // .gitignore files of the directories from the top down to the workspace's parent.
        if !repo.prefix.is_empty() {
            let parts: Vec<&str> = repo.prefix.split('/').collect();
            for depth in 0..parts.len() {
                let dir = parts[..depth]
                    .iter()
                    .fold(repo.top.clone(), |d, p| d.join(p));
                if let Some(g) = dir_rules(&dir) {
                    layers.push((Arc::new(g), under(&parts[depth..].join("/"))));
                }
            }
        }
        BaseRules { layers }
    }

    /// The verdict of the base rules on `rel` (workspace-relative), most specific layer first.
    fn verdict(&self, rel: &str, is_dir: bool) -> Option<bool> {
        for (rules, prefix) in self.layers.iter().rev() {
            let path = format!("{prefix}{rel}");
            match rules.matched(Path::new(&path), is_dir) {
                Match::Ignore(_) => return Some(true),
                Match::Whitelist(_) => return Some(false),
                Match::None => {}
            }
        }
        None
    }
}

/// One level of the walk: the directory's own `.gitignore` rules and its path.
#[derive(Debug, Clone)]
pub struct Level {
    rules: Option<Arc<Gitignore>>,
    /// The directory relative to the workspace (`/`-separated, empty at the top).
    rel: String,
}

impl Level {
    /// A level for the directory `abs` (workspace-relative `rel`).
    pub fn new(abs: &Path, rel: &str, has_gitignore: bool) -> Self {
        Level {
            rules: if has_gitignore {
                dir_rules(abs).map(Arc::new)
            } else {
                None
            },
            rel: rel.to_owned(),
        }
    }
}

/// Whether git would ignore `rel` (workspace-relative, `/`-separated): the deepest `.gitignore`
/// with an opinion decides, then the base rules. Tracked files are never ignored; this does not
/// check that (see [`Tracked`]).
pub fn is_ignored(base: &BaseRules, levels: &[&Level], rel: &str, is_dir: bool) -> bool {
    for level in levels.iter().rev() {
        let Some(rules) = &level.rules else { continue };
        let inner = if level.rel.is_empty() {
            rel
        } else {
            match rel
                .strip_prefix(&level.rel)
                .and_then(|r| r.strip_prefix('/'))
            {
                Some(r) => r,
                None => continue,
            }
        };
        match rules.matched(Path::new(inner), is_dir) {
            Match::Ignore(_) => return true,
            Match::Whitelist(_) => return false,
            Match::None => {}
        }
    }
    base.verdict(rel, is_dir).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// The sandbox can write `.git/index`: no byte string makes the parser panic.
        #[test]
        fn any_index_bytes_parse_or_are_refused(
            version in 2u32..=4,
            count in 0u32..4,
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            let mut index = b"DIRC".to_vec();
            index.extend_from_slice(&version.to_be_bytes());
            index.extend_from_slice(&count.to_be_bytes());
            index.extend_from_slice(&body);
            let _ = index_paths(&index);
        }
    }

    /// Builds a v2 index with these paths (SHA-1 ids).
    fn index_v2(paths: &[&str]) -> Vec<u8> {
        let mut v = b"DIRC".to_vec();
        v.extend_from_slice(&2u32.to_be_bytes());
        v.extend_from_slice(&(paths.len() as u32).to_be_bytes());
        for p in paths {
            let start = v.len();
            v.extend_from_slice(&[0u8; 40]);
            v.extend_from_slice(&[0u8; 20]);
            v.extend_from_slice(&(p.len() as u16).to_be_bytes());
            v.extend_from_slice(p.as_bytes());
            v.push(0);
            while !(v.len() - start).is_multiple_of(8) {
                v.push(0);
            }
        }
        v.extend_from_slice(&[0u8; 20]);
        v
    }

    #[test]
    fn index_paths_are_read_and_garbage_is_refused() {
        let idx = index_v2(&["a.txt", "src/lib.rs", "src/deep/x.py"]);
        let paths = index_paths(&idx).unwrap();
        assert_eq!(
            paths,
            vec![
                b"a.txt".to_vec(),
                b"src/lib.rs".to_vec(),
                b"src/deep/x.py".to_vec()
            ]
        );
        assert!(index_paths(b"DIRC\0\0\0\x02\0\0\0\x05short").is_none());
        assert!(index_paths(b"nope").is_none());
        let t = Tracked::from_index(paths, "src");
        assert!(t.has_file(b"lib.rs") && t.has_file(b"deep\0x.py") && t.has_dir(b"deep"));
        assert!(!t.has_file(b"a.txt"));
    }

    #[test]
    fn a_real_git_index_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let ok = std::process::Command::new("git")
                .args(args)
                .current_dir(dir.path())
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        git(&["init", "-q"]);
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/c.txt"), "x").unwrap();
        std::fs::write(dir.path().join("top.txt"), "x").unwrap();
        git(&["add", "-A"]);
        let idx = std::fs::read(dir.path().join(".git/index")).unwrap();
        let paths = index_paths(&idx).unwrap();
        assert_eq!(paths, vec![b"a/b/c.txt".to_vec(), b"top.txt".to_vec()]);
        // Version 4 (prefix-compressed paths).
        git(&["update-index", "--index-version", "4"]);
        let idx = std::fs::read(dir.path().join(".git/index")).unwrap();
        assert_eq!(index_paths(&idx).unwrap(), paths);
    }

    #[test]
    fn deeper_gitignore_wins_and_negation_reincludes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".gitignore"), "*.log\nbuild/\n").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/.gitignore"), "!keep.log\n/only-here\n").unwrap();
        let base = BaseRules::default();
        let (top, sub) = (
            Level::new(dir.path(), "", true),
            Level::new(&dir.path().join("sub"), "sub", true),
        );
        let levels = vec![&top, &sub];
        assert!(is_ignored(&base, &levels[..1], "x.log", false));
        assert!(is_ignored(&base, &levels, "sub/x.log", false));
        assert!(!is_ignored(&base, &levels, "sub/keep.log", false));
        assert!(is_ignored(&base, &levels, "sub/only-here", false));
        assert!(!is_ignored(&base, &levels[..1], "only-here", false));
        assert!(is_ignored(&base, &levels[..1], "build", true));
        assert!(!is_ignored(&base, &levels[..1], "build", false));
    }

    #[test]
    fn symlinked_ignore_files_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "*\n").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join(".gitignore"))
            .unwrap();
        assert!(dir_rules(dir.path()).is_none());
    }
}
