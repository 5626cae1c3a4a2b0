//! The workspace at session start, kept in a git object store of proctor's own
//! (`DATA_DIR/sessions/<id>/start.git`), and the patch from there to now.
//!
//! `git` runs only with proctor's repository and configuration: never with the workspace's
//! `.git/config` (sandboxed code can write it, and options such as `core.fsmonitor` or filter
//! drivers run commands). The system and global configuration are off, hooks and fsmonitor are
//! off, and no filter, textconv or external diff driver is defined, so the work tree's
//! `.gitattributes` cannot make git run anything. A read-write workspace in a git repository
//! starts from the commit HEAD named at session start: its objects are read through an
//! alternate, never written to.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::gitignore::{Repo, read_plain};

/// Name of the start store inside a session directory.
pub const START_DIR: &str = "start.git";
/// git's empty tree (SHA-1).
pub const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// A git failure, with what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitError {
    /// No `git` on the PATH.
    #[error("git is not installed (or not on PATH); the patch export needs it: install git")]
    Missing,
    /// The directory is too big to keep a copy of its start.
    #[error(
        "the workspace holds more than {files} files or {mib} MiB that git would track; its start is not kept (add big data to .gitignore, or use a git repository: then the start is its commit)"
    )]
    TooLarge {
        /// File cap.
        files: usize,
        /// Size cap, MiB.
        mib: u64,
    },
    /// git failed.
    #[error("git {what} failed: {why}")]
    Failed {
        /// What was attempted.
        what: String,
        /// git's message.
        why: String,
    },
}

/// Most files a recorded start may hold (beyond it the start is not kept).
pub const START_MAX_FILES: usize = 100_000;
/// Most bytes a recorded start may hold.
pub const START_MAX_BYTES: u64 = 1 << 30;

/// Whether what git would track in `dir` (ignored files left out) fits the caps above: walked
/// once, stopping as soon as it does not.
fn fits_start_record(dir: &Path) -> bool {
    let (mut files, mut bytes) = (0usize, 0u64);
    let walk = ignore::WalkBuilder::new(dir)
        .hidden(false)
        .parents(false)
        .git_global(false)
        .require_git(false)
        .filter_entry(|e| e.file_name() != ".git")
        .build();
    for entry in walk.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() {
            files += 1;
            bytes = bytes.saturating_add(meta.len());
            if files > START_MAX_FILES || bytes > START_MAX_BYTES {
                return false;
            }
        }
    }
    true
}

/// `git --version`, or why git cannot be used.
pub fn version() -> Result<String, GitError> {
    let out = Command::new("git")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|_| GitError::Missing)?;
    if !out.status.success() {
        return Err(GitError::Missing);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The user's global excludes file (git's `core.excludesFile`, else `$XDG_CONFIG_HOME/git/ignore`
/// or `~/.config/git/ignore`), read from the user's own configuration, not the workspace's.
fn global_excludes() -> Option<PathBuf> {
    let configured = Command::new("git")
        .args(["config", "--global", "--path", "--get", "core.excludesFile"])
        .current_dir("/")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    configured
        .or_else(|| {
            std::env::var_os("XDG_CONFIG_HOME")
                .filter(|v| !v.is_empty())
                .map(|x| PathBuf::from(x).join("git/ignore"))
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/git/ignore"))
                })
        })
        .filter(|p| p.is_file())
}

/// The object store of one session's start state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartStore {
    dir: PathBuf,
}

impl StartStore {
    /// The store in `session_dir` (made on first use).
    pub fn in_session(session_dir: &Path) -> Self {
        Self {
            dir: session_dir.join(START_DIR),
        }
    }

    /// Whether it exists.
    pub fn exists(&self) -> bool {
        self.dir.join("objects").is_dir()
    }

    /// A `git` command on this store, with `work_tree` as the work tree and proctor's settings.
    fn git(&self, work_tree: &Path, index: &Path) -> Command {
        let mut c = Command::new("git");
        c.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            c.env("PATH", path);
        }
        let excludes = global_excludes()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "/dev/null".into());
        c.env("GIT_DIR", &self.dir)
            .env("GIT_WORK_TREE", work_tree)
            .env("GIT_INDEX_FILE", index)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_ATTR_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("HOME", &self.dir)
            .env("LC_ALL", "C")
            .current_dir(work_tree)
            .stdin(Stdio::null());
        for setting in [
            "safe.directory=*",
            "core.bare=false",
            "core.autocrlf=false",
            "core.safecrlf=false",
            "core.fsmonitor=false",
            "core.untrackedCache=false",
            "core.hooksPath=/dev/null",
            "core.symlinks=true",
            "core.fileMode=true",
            "core.quotePath=false",
            "gc.auto=0",
            "advice.addEmbeddedRepo=false",
            "diff.renames=false",
        ] {
            c.arg("-c").arg(setting);
        }
        c.arg("-c").arg(format!("core.excludesFile={excludes}"));
        c
    }

    fn run(&self, what: &str, mut cmd: Command) -> Result<Vec<u8>, GitError> {
        let out = cmd.output().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                GitError::Missing
            } else {
                GitError::Failed {
                    what: what.to_owned(),
                    why: e.to_string(),
                }
            }
        })?;
        if !out.status.success() {
            return Err(GitError::Failed {
                what: what.to_owned(),
                why: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(out.stdout)
    }

    /// Creates the store (object format as `like`'s ids: 40 hex SHA-1, 64 hex SHA-256).
    fn init(&self, sha256: bool) -> Result<(), GitError> {
        if self.exists() {
            return Ok(());
        }
        let mut c = Command::new("git");
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("HOME", "/nonexistent")
            .args(["init", "-q", "--bare"]);
        if sha256 {
            c.arg("--object-format=sha256");
        }
        c.arg(&self.dir).stdin(Stdio::null());
        self.run("init", c).map(|_| ())
    }

    /// Gives the store read access to a repository's objects (a workspace in a git repository).
    fn link(&self, repo: &Repo) -> Result<(), GitError> {
        let objects = repo.git_dir().join("objects");
        let alternates = self.dir.join("objects/info/alternates");
        std::fs::create_dir_all(self.dir.join("objects/info"))
            .and_then(|()| std::fs::write(&alternates, format!("{}\n", objects.display())))
            .map_err(|e| GitError::Failed {
                what: "link the repository's objects".into(),
                why: e.to_string(),
            })
    }

    /// Copies the workspace repository's `info/exclude` (its ignore rules that live in `.git`).
    fn sync_excludes(&self, work_tree: &Path) {
        let target = self.dir.join("info/exclude");
        let text = Repo::find(work_tree, false)
            .and_then(|r| read_plain(&r.git_dir().join("info/exclude"), 1 << 20))
            .unwrap_or_default();
        let _ = std::fs::create_dir_all(self.dir.join("info"));
        let _ = std::fs::write(target, text);
    }

    /// Stores `work_tree` as it is now (files git would list: ignored ones left out) and returns
    /// the tree id.
    pub fn record(&self, work_tree: &Path) -> Result<String, GitError> {
        if !fits_start_record(work_tree) {
            return Err(GitError::TooLarge {
                files: START_MAX_FILES,
                mib: START_MAX_BYTES >> 20,
            });
        }
        self.init(false)?;
        self.sync_excludes(work_tree);
        let index = self.dir.join("record.index");
        let _ = std::fs::remove_file(&index);
        let mut add = self.git(work_tree, &index);
        add.args(["add", "-A", "--ignore-errors", "--", "."]);
        let added = self.run("add", add);
        let tree = added.and_then(|_| {
            let mut c = self.git(work_tree, &index);
            c.arg("write-tree");
            self.run("write-tree", c)
        });
        let _ = std::fs::remove_file(&index);
        let tree = String::from_utf8_lossy(&tree?).trim().to_owned();
        // A ref keeps the tree should anything ever collect garbage here.
        let mut c = self.git(work_tree, &self.dir.join("ref.index"));
        c.args(["update-ref", "refs/proctor/start", &tree]);
        let _ = self.run("update-ref", c);
        Ok(tree)
    }

    /// Records the start of a workspace in `repo` at `commit`: links the repository's objects and
    /// returns the tree of the workspace's directory in that commit.
    pub fn record_commit(&self, repo: &Repo, commit: &str) -> Result<String, GitError> {
        self.init(commit.len() == 64)?;
        self.link(repo)?;
        let spec = if repo.prefix.is_empty() {
            format!("{commit}^{{tree}}")
        } else {
            format!("{commit}:{}", repo.prefix)
        };
        let index = self.dir.join("ref.index");
        let mut c = self.git(&repo.top, &index);
        c.args(["rev-parse", "--verify", "--quiet", &spec]);
        let out = self.run("rev-parse", c)?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// Points the store at a repository that moved (resume with `--workspace NEWDIR`).
    pub fn relink(&self, repo: &Repo) -> Result<(), GitError> {
        if self.dir.join("objects/info/alternates").exists() {
            self.link(repo)?;
        }
        Ok(())
    }

    /// A patch (`git apply` format, binary files included) that turns the state `start` into
    /// `work_tree` as it is now. Nothing is written to the store or the workspace.
    pub fn patch(&self, work_tree: &Path, start: &str) -> Result<String, GitError> {
        check_id(start)?;
        if start != EMPTY_TREE && !self.exists() {
            return Err(GitError::Failed {
                what: "find the session's start state".into(),
                why: format!("{} is missing", self.dir.display()),
            });
        }
        self.init(start.len() == 64)?;
        self.sync_excludes(work_tree);
        let scratch = tempfile::tempdir().map_err(|e| GitError::Failed {
            what: "make a scratch directory".into(),
            why: e.to_string(),
        })?;
        let index = scratch.path().join("index");
        let objects = scratch.path().join("objects");
        let _ = std::fs::create_dir(&objects);
        let with_scratch = |mut c: Command| {
            c.env("GIT_OBJECT_DIRECTORY", &objects)
                .env("GIT_ALTERNATE_OBJECT_DIRECTORIES", self.dir.join("objects"));
            c
        };
        let mut c = self.git(work_tree, &index);
        c.args(["read-tree", start]);
        self.run("read-tree", with_scratch(c))?;
        let mut c = self.git(work_tree, &index);
        c.args(["add", "-A", "--ignore-errors", "--", "."]);
        self.run("add", with_scratch(c))?;
        let mut c = self.git(work_tree, &index);
        c.args([
            "diff",
            "--cached",
            "--binary",
            "--full-index",
            "--no-renames",
            "--no-ext-diff",
            "--no-textconv",
            "--no-color",
            start,
        ]);
        let out = self.run("diff", with_scratch(c))?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// A start id read from a session log must be an object id, never something git could take as
/// an option.
fn check_id(id: &str) -> Result<(), GitError> {
    if (id.len() == 40 || id.len() == 64) && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(());
    }
    Err(GitError::Failed {
        what: "read the session's start state".into(),
        why: format!(
            "the recorded start {:?} is not a git object id",
            crate::text_safety::visible_line(id)
        ),
    })
}

/// What a path held in a session's start state ([`StartStore::file_at`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartFile {
    /// Nothing: the path was not in the start state (created during the session, or ignored or
    /// untracked then).
    Absent,
    /// A file's bytes (for a symbolic link, the path it pointed to).
    Bytes(Vec<u8>),
    /// A file bigger than the cap asked for: its size in bytes.
    TooLarge(u64),
    /// Something that is not a file: a directory or a git submodule.
    NotAFile,
}

impl StartStore {
    /// What `path` (relative to the workspace, `/`-separated) held in the start tree `start`,
    /// reading at most `cap` bytes of content. Only reads: nothing is written to the store, and a
    /// repository it borrows objects from is only read.
    pub fn file_at(&self, start: &str, path: &str, cap: u64) -> Result<StartFile, GitError> {
        if start == EMPTY_TREE {
            return Ok(StartFile::Absent);
        }
        check_id(start)?;
        if !self.exists() {
            return Err(GitError::Failed {
                what: "find the session's start state".into(),
                why: format!("{} is missing", self.dir.display()),
            });
        }
        // Neither command reads a work tree or an index: `/` stands for both.
        let mut c = self.git(Path::new("/"), Path::new("/dev/null"));
        c.env("GIT_LITERAL_PATHSPECS", "1").args([
            "ls-tree",
            "-z",
            "-l",
            "--full-tree",
            start,
            "--",
            path,
        ]);
        let listed = self.run("ls-tree", c)?;
        let entry = listed.split(|b| *b == 0).find_map(|rec| {
            let tab = rec.iter().position(|b| *b == b'\t')?;
            (&rec[tab + 1..] == path.as_bytes()).then(|| String::from_utf8_lossy(&rec[..tab]))
        });
        let Some(meta) = entry else {
            return Ok(StartFile::Absent);
        };
        // `<mode> <type> <id> <size>`
        let fields: Vec<&str> = meta.split_whitespace().collect();
        let (Some(kind), Some(id), Some(size)) = (fields.get(1), fields.get(2), fields.get(3))
        else {
            return Err(GitError::Failed {
                what: "ls-tree".into(),
                why: format!("unexpected output {meta:?}"),
            });
        };
        if *kind != "blob" {
            return Ok(StartFile::NotAFile);
        }
        let size: u64 = size.parse().map_err(|_| GitError::Failed {
            what: "ls-tree".into(),
            why: format!("unexpected size in {meta:?}"),
        })?;
        if size > cap {
            return Ok(StartFile::TooLarge(size));
        }
        let mut c = self.git(Path::new("/"), Path::new("/dev/null"));
        c.args(["cat-file", "blob", id]);
        Ok(StartFile::Bytes(self.run("cat-file", c)?))
    }
}

/// The commit HEAD names in `repo`, read from its files (no git run): `None` for a repository
/// without commits or an unreadable HEAD.
pub fn head_commit(repo: &Repo) -> Option<String> {
    let git_dir = repo.git_dir();
    let head = read_plain(&git_dir.join("HEAD"), 4096)?;
    let head = String::from_utf8_lossy(&head).trim().to_owned();
    let is_id =
        |s: &str| (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit());
    let Some(name) = head.strip_prefix("ref:").map(str::trim) else {
        return is_id(&head).then_some(head);
    };
    if name.split('/').any(|c| c == ".." || c.is_empty()) || !name.starts_with("refs/") {
        return None;
    }
    if let Some(v) = read_plain(&git_dir.join(name), 4096) {
        let v = String::from_utf8_lossy(&v).trim().to_owned();
        return is_id(&v).then_some(v);
    }
    let packed = read_plain(&git_dir.join("packed-refs"), 64 << 20)?;
    String::from_utf8_lossy(&packed).lines().find_map(|l| {
        let (id, r) = l.split_once(' ')?;
        (r == name && is_id(id)).then(|| id.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_too_big_to_keep_is_refused_unless_git_ignores_it() {
        let ws = tempfile::tempdir().unwrap();
        let session = tempfile::tempdir().unwrap();
        std::fs::write(ws.path().join("app.py"), "print(1)\n").unwrap();
        // Sparse: 1 GiB and one byte that cost nothing on disk.
        let big = std::fs::File::create(ws.path().join("data.bin")).unwrap();
        big.set_len(START_MAX_BYTES + 1).unwrap();
        let store = StartStore::in_session(session.path());
        let err = store.record(ws.path()).unwrap_err();
        assert!(matches!(err, GitError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains(".gitignore"), "{err}");
        std::fs::write(ws.path().join(".gitignore"), "data.bin\n").unwrap();
        assert!(store.record(ws.path()).is_ok());
    }

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    #[test]
    fn head_is_read_from_loose_and_packed_refs() {
        let d = tempfile::tempdir().unwrap();
        git(d.path(), &["init", "-q"]);
        let repo = Repo::find(d.path(), false).unwrap();
        assert_eq!(head_commit(&repo), None, "no commits yet");
        std::fs::write(d.path().join("a"), "x").unwrap();
        git(d.path(), &["add", "a"]);
        git(d.path(), &["commit", "-q", "-m", "one"]);
        let id = git(d.path(), &["rev-parse", "HEAD"]);
        assert_eq!(head_commit(&repo).as_deref(), Some(id.as_str()));
        git(d.path(), &["pack-refs", "--all"]);
        assert_eq!(head_commit(&repo).as_deref(), Some(id.as_str()));
    }

    #[test]
    fn a_recorded_start_gives_a_patch_that_git_applies() {
        let d = tempfile::tempdir().unwrap();
        let session = tempfile::tempdir().unwrap();
        let ws = d.path();
        std::fs::write(ws.join("keep.txt"), "one\ntwo\n").unwrap();
        std::fs::write(ws.join("gone.txt"), "bye\n").unwrap();
        std::fs::write(ws.join("bin.dat"), [0u8, 159, 146, 150]).unwrap();
        let original = tempfile::tempdir().unwrap();
        for f in ["keep.txt", "gone.txt", "bin.dat"] {
            std::fs::copy(ws.join(f), original.path().join(f)).unwrap();
        }
        let store = StartStore::in_session(session.path());
        let start = store.record(ws).unwrap();
        std::fs::write(ws.join("keep.txt"), "one\n2\nthree\n").unwrap();
        std::fs::remove_file(ws.join("gone.txt")).unwrap();
        std::fs::write(ws.join("bin.dat"), [1u8, 0, 2, 255, 254]).unwrap();
        std::fs::create_dir(ws.join("new")).unwrap();
        std::fs::write(ws.join("new/file.py"), "print(1)\n").unwrap();
        let patch = store.patch(ws, &start).unwrap();
        assert!(patch.contains("GIT binary patch"), "{patch}");
        git(original.path(), &["init", "-q"]);
        std::fs::write(original.path().join("p.diff"), &patch).unwrap();
        git(original.path(), &["apply", "p.diff"]);
        std::fs::remove_file(original.path().join("p.diff")).unwrap();
        for f in ["keep.txt", "bin.dat", "new/file.py"] {
            assert_eq!(
                std::fs::read(original.path().join(f)).unwrap(),
                std::fs::read(ws.join(f)).unwrap(),
                "{f}"
            );
        }
        assert!(!original.path().join("gone.txt").exists());
    }

    #[test]
    fn a_start_that_is_not_an_object_id_is_refused_before_git_runs() {
        let session = tempfile::tempdir().unwrap();
        let store = StartStore::in_session(session.path());
        for bad in ["--output=/tmp/x", "HEAD", "4b825dc6"] {
            let e = store.file_at(bad, "a.txt", 10).unwrap_err().to_string();
            assert!(e.contains("is not a git object id"), "{bad}: {e}");
            let e = store.patch(session.path(), bad).unwrap_err().to_string();
            assert!(e.contains("is not a git object id"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_empty_start_needs_no_store() {
        let d = tempfile::tempdir().unwrap();
        let session = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.txt"), "x\n").unwrap();
        let patch = StartStore::in_session(session.path())
            .patch(d.path(), EMPTY_TREE)
            .unwrap();
        assert!(patch.contains("new file mode 100644"), "{patch}");
        assert!(patch.contains("+x"), "{patch}");
    }
}
