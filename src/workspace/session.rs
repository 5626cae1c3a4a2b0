//! A session's workspace at the binary's edge: choosing it for a new session (checked, copied,
//! its start recorded), finding it again on resume, the patch export, and `doctor`'s report.
//! Notes for the user go through a callback (the binary prints them before any front end owns
//! the terminal).

use std::path::{Path, PathBuf};

use super::git::{EMPTY_TREE, GitError, StartFile, StartStore, head_commit};
use super::gitignore::Repo;
use super::setup::{Refused, WorkspaceRecord, check_dir, copy_tree, dir_id};
use crate::config::{ExecutorConfig, TeamConfig};
use crate::protocol::{Event, WorkspaceMode};
use crate::store::{SessionStore, StoreError};
use crate::text_safety::visible_line;

/// Why a session's workspace cannot be set up; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SessionWorkspaceError {
    /// The directory is refused.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The session's files.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// git, for the patch.
    #[error(transparent)]
    Git(#[from] GitError),
    /// Anything else, in words.
    #[error("{0}")]
    Other(String),
}

type Result<T> = std::result::Result<T, SessionWorkspaceError>;

/// `--workspace` and `--workspace-mode` of `run`.
#[derive(Debug, Clone, Default)]
pub struct Choice {
    /// `--workspace DIR`.
    pub dir: Option<PathBuf>,
    /// `--workspace-mode`.
    pub mode: Option<WorkspaceMode>,
}

/// Prepares the directory a new session works in: the session's own (nothing to do), the user's
/// (checked; its start recorded) or a copy of it (made in the session's directory). The command
/// line wins over the team's `[executor]`. Returns the directory to mount and the record for the
/// session.
pub fn prepare(
    store: &SessionStore,
    data_dir: &Path,
    id: &str,
    exec: &ExecutorConfig,
    choice: Choice,
    say: &mut dyn FnMut(String),
) -> Result<(PathBuf, Option<WorkspaceRecord>)> {
    let (dir, from) = match (choice.dir, &exec.workspace) {
        (Some(d), _) => (d, "--workspace"),
        (None, Some(d)) => (d.clone(), "[executor] workspace in the team file"),
        (None, None) => {
            if choice.mode.is_some() {
                return Err(SessionWorkspaceError::Other(
                    "--workspace-mode needs a directory: add --workspace DIR (or `workspace = \"DIR\"` under [executor] in the team file)".into(),
                ));
            }
            return Ok((store.workspace_dir(id), None));
        }
    };
    let mode = choice.mode.or(exec.workspace_mode).unwrap_or_default();
    let real = check_dir(&dir, data_dir, mode).map_err(|mut e| {
        e.why = format!("{} (from {from})", e.why);
        e
    })?;
    let io = |what: &str, p: &Path, e: std::io::Error| {
        SessionWorkspaceError::Other(format!(
            "cannot {what} {}: {e}",
            visible_line(&p.display().to_string())
        ))
    };
    let session_dir = store.session_dir(id);
    std::fs::create_dir_all(&session_dir).map_err(|e| io("create", &session_dir, e))?;
    let start_store = StartStore::in_session(&session_dir);
    let no_patch = |e: GitError, say: &mut dyn FnMut(String)| {
        say(format!(
            "{}; `proctor sessions export {id} --format patch` will not work for this session",
            visible_line(&e.to_string())
        ));
    };
    let (mount, start, commit) = match mode {
        WorkspaceMode::Rw => {
            let repo = Repo::find(&real, true);
            let commit = repo.as_ref().and_then(head_commit);
            let start = match (&repo, &commit) {
                (Some(repo), Some(c)) => start_store.record_commit(repo, c),
                _ => start_store.record(&real),
            };
            let start = start.map_err(|e| no_patch(e, say)).ok();
            (real.clone(), start, commit)
        }
        WorkspaceMode::Copy => {
            let mount = store.workspace_dir(id);
            std::fs::create_dir_all(&mount).map_err(|e| io("create", &mount, e))?;
            // Running as root, the copy belongs to the session's sandbox user.
            let owner = crate::executor::sandbox::host_is_root().then(|| {
                let uid = crate::executor::sandbox::session_uid(id);
                (uid, uid)
            });
            say(format!(
                "copying {} into session {id}…",
                visible_line(&real.display().to_string())
            ));
            let report = copy_tree(&real, &mount, owner).map_err(|e| io("copy", &real, e))?;
            say(format!(
                "copied {} files ({}); the original is left untouched",
                report.files,
                super::changes::human_size(report.bytes)
            ));
            if !report.skipped.is_empty() {
                say(format!(
                    "not copied (not regular files, or unreadable): {}",
                    visible_line(&report.skipped.join(", "))
                ));
            }
            let commit = Repo::find(&mount, false).as_ref().and_then(head_commit);
            let start = start_store
                .record(&mount)
                .map_err(|e| no_patch(e, say))
                .ok();
            (mount, start, commit)
        }
    };
    Ok((
        mount,
        Some(WorkspaceRecord {
            dir_id: dir_id(&real),
            path: real,
            mode,
            start,
            commit,
        }),
    ))
}

/// The directory a resumed session works in: its own, its copy, or the user's directory where it
/// was recorded (or at `moved_to`: then the record says so). A directory that is gone, or another
/// one at its path, is an error that says how to continue.
pub fn reopen(
    store: &SessionStore,
    data_dir: &Path,
    id: &str,
    events: &[Event],
    moved_to: Option<PathBuf>,
    say: &mut dyn FnMut(String),
) -> Result<(PathBuf, Option<WorkspaceRecord>)> {
    let recorded = WorkspaceRecord::last_in(events);
    let Some(mut rec) = recorded.clone().filter(|r| r.mode == WorkspaceMode::Rw) else {
        if moved_to.is_some() {
            return Err(SessionWorkspaceError::Other(format!(
                "session {id} works in its own directory (or a copy made there), so --workspace cannot move it; resume it without --workspace, or start a new session with `proctor run --workspace DIR`"
            )));
        }
        return Ok((store.workspace_dir(id), recorded));
    };
    let shown = visible_line(&rec.path.display().to_string()).into_owned();
    match moved_to {
        Some(dir) => {
            let real = check_dir(&dir, data_dir, WorkspaceMode::Rw)?;
            if let Some(repo) = Repo::find(&real, true)
                && let Err(e) = StartStore::in_session(&store.session_dir(id)).relink(&repo)
            {
                say(visible_line(&e.to_string()).into_owned());
            }
            rec.dir_id = dir_id(&real);
            rec.path = real.clone();
            Ok((real, Some(rec)))
        }
        None => {
            if !rec.path.is_dir() {
                return Err(SessionWorkspaceError::Other(format!(
                    "session {id} works in {shown}, which is not there any more (moved or deleted?); if it moved: `proctor resume {id} --workspace NEWDIR`"
                )));
            }
            let real = check_dir(&rec.path, data_dir, WorkspaceMode::Rw)?;
            if rec.dir_id.is_some() && dir_id(&real) != rec.dir_id {
                return Err(SessionWorkspaceError::Other(format!(
                    "{shown} is not the directory session {id} started in (it was replaced or restored from a copy); if it is the same project: `proctor resume {id} --workspace {shown}`"
                )));
            }
            Ok((real, Some(rec)))
        }
    }
}

/// A session's workspace as it is now and the state it started from: the one place that knows
/// where both are, for the patch export and the TUI's diffs. Building it reads nothing; its
/// methods read the start store (and, for a read-write git workspace, the repository's objects)
/// without writing to either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStart {
    id: String,
    work_tree: PathBuf,
    /// The start tree, or why there is none.
    start: std::result::Result<String, String>,
    store: Option<StartStore>,
}

impl SessionStart {
    /// The start of session `id` whose code works in `work_tree` (the directory mounted at
    /// `/workspace`), as its `record` says (`None`: the session's own directory, which starts
    /// empty). `session_dir` holds its start store; `None` for a session that is not saved.
    pub fn new(
        id: &str,
        session_dir: Option<&Path>,
        work_tree: PathBuf,
        record: Option<&WorkspaceRecord>,
    ) -> Self {
        let start = match record {
            None => Ok(EMPTY_TREE.to_string()),
            Some(rec) => rec.start.clone().ok_or_else(|| {
                format!(
                    "session {id} has no recorded start state (git was missing or failed when it started), so there is no patch or diff against it"
                )
            }),
        };
        SessionStart {
            id: id.to_owned(),
            work_tree,
            start,
            store: session_dir.map(StartStore::in_session),
        }
    }

    /// The start of saved session `id`, from its events (the last `workspace_attached`).
    pub fn of(store: &SessionStore, id: &str, events: &[Event]) -> Self {
        let record = WorkspaceRecord::last_in(events);
        let work_tree = match &record {
            Some(rec) if rec.mode == WorkspaceMode::Rw => rec.path.clone(),
            _ => store.workspace_dir(id),
        };
        Self::new(id, Some(&store.session_dir(id)), work_tree, record.as_ref())
    }

    /// The directory the session's code works in (as recorded; it may have gone since).
    pub fn work_tree(&self) -> &Path {
        &self.work_tree
    }

    /// The start tree and the store it is in.
    fn start(&self) -> Result<(&str, &StartStore)> {
        let start = self
            .start
            .as_deref()
            .map_err(|why| SessionWorkspaceError::Other(why.clone()))?;
        let store = self.store.as_ref().ok_or_else(|| {
            SessionWorkspaceError::Other(format!(
                "session {} keeps no start state (it is not saved)",
                self.id
            ))
        })?;
        Ok((start, store))
    }

    /// The workspace from its start to now, as a patch `git apply` takes.
    pub fn patch(&self) -> Result<String> {
        let (start, store) = self.start()?;
        if !self.work_tree.is_dir() {
            return Err(SessionWorkspaceError::Other(format!(
                "the workspace of session {}, {}, is not there (moved or deleted?)",
                self.id,
                visible_line(&self.work_tree.display().to_string())
            )));
        }
        Ok(store.patch(&self.work_tree, start)?)
    }

    /// What `path` (relative to the workspace, `/`-separated, as `workspace_changed` names it)
    /// held at session start, reading at most `cap` bytes of content:
    /// [`StartFile::Absent`] for a file the session created.
    pub fn file(&self, path: &str, cap: u64) -> Result<StartFile> {
        let rel = Path::new(path);
        if path.is_empty()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(SessionWorkspaceError::Other(format!(
                "{} is not a path inside the workspace",
                visible_line(path)
            )));
        }
        if self.start.as_deref() == Ok(EMPTY_TREE) {
            // The session's own directory starts empty: no store to read.
            return Ok(StartFile::Absent);
        }
        let (start, store) = self.start()?;
        Ok(store.file_at(start, path, cap)?)
    }
}

/// The workspace of session `id` from its start to now, as a patch `git apply` takes.
pub fn patch(store: &SessionStore, id: &str) -> Result<String> {
    let (events, _) = store.read(id)?;
    SessionStart::of(store, id, &events).patch()
}

/// `proctor doctor`'s lines: what `team` works in (its `[executor] workspace`: checked, owner,
/// files, repository), and git for the patch export. (check, Ok(detail) | Err(failure and fix))
pub fn doctor(
    data_dir: &Path,
    team: Option<&TeamConfig>,
) -> Vec<(String, std::result::Result<String, String>)> {
    let mut checks = Vec::new();
    match team.and_then(|t| t.executor.workspace.clone()) {
        None => checks.push((
            "workspace".to_string(),
            Ok(format!(
                "each session works in its own directory ({}/sessions/<id>/workspace); `proctor run --workspace DIR` works in yours",
                visible_line(&data_dir.display().to_string())
            )),
        )),
        Some(dir) => {
            let mode = team.and_then(|t| t.executor.workspace_mode).unwrap_or_default();
            let r = check_dir(&dir, data_dir, mode)
                .map_err(|e| format!("{e} ([executor] workspace of the default team)"))
                .map(|real| describe_dir(&real, mode));
            checks.push(("workspace".to_string(), r));
        }
    }
    checks.push((
        "git".to_string(),
        super::git::version()
            .map(|v| format!("{v} (for `sessions export --format patch`)"))
            .map_err(|e| e.to_string()),
    ));
    checks
}

/// One line about a workspace directory: path, mode, owner, files, repository.
fn describe_dir(real: &Path, mode: WorkspaceMode) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut what = vec![format!(
        "{} ({})",
        visible_line(&real.display().to_string()),
        match mode {
            WorkspaceMode::Rw => "read-write",
            WorkspaceMode::Copy => "copied into each session",
        }
    )];
    if let Ok(m) = std::fs::metadata(real) {
        what.push(format!("owner {}:{}", m.uid(), m.gid()));
    }
    let mut view = super::snapshot::GitView::default();
    let opts = super::snapshot::WalkOptions {
        search_parents: true,
        ..Default::default()
    };
    if let Ok(snap) = super::snapshot::walk(real, &opts, &mut view) {
        let n = snap.files.len();
        what.push(if snap.capped_at.is_some() {
            format!("more than {n} files (changes are listed for the first {n})")
        } else {
            format!("{n} files")
        });
    }
    what.push(match view.repo() {
        Some(repo) => match head_commit(repo) {
            Some(c) => format!("git repository at commit {}", &c[..c.len().min(12)]),
            None => "git repository without commits".into(),
        },
        None => "not a git repository".into(),
    });
    what.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(["-c", "safe.directory=*"])
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

    /// Every entry under `dir` with its size and mtime.
    fn listing(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    todo.push(e.path());
                }
                out.push((e.path(), m.len(), m.modified().unwrap()));
            }
        }
        out.sort();
        out
    }

    /// A new session `s1` in `data` working in `choice`, its start recorded by `prepare`.
    fn session(data: &Path, choice: Choice) -> (SessionStore, PathBuf, SessionStart) {
        let store = SessionStore::open(data).unwrap();
        let mut notes = Vec::new();
        let (mount, record) = prepare(
            &store,
            data,
            "s1",
            &ExecutorConfig::default(),
            choice,
            &mut |n| notes.push(n),
        )
        .unwrap();
        std::fs::create_dir_all(&mount).unwrap();
        let start = SessionStart::new(
            "s1",
            Some(&store.session_dir("s1")),
            mount.clone(),
            record.as_ref(),
        );
        (store, mount, start)
    }

    fn bytes(s: &str) -> StartFile {
        StartFile::Bytes(s.as_bytes().to_vec())
    }

    #[test]
    fn a_copied_workspace_gives_each_file_as_it_was_at_start() {
        let data = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("lib")).unwrap();
        std::fs::write(src.path().join("lib/keep.py"), "one\ntwo\n").unwrap();
        std::fs::write(src.path().join("gone.txt"), "bye\n").unwrap();
        std::fs::write(src.path().join("big.bin"), vec![7u8; 5000]).unwrap();
        std::fs::write(src.path().join("odd [x]*.txt"), "glob chars\n").unwrap();
        let (store, mount, start) = session(
            data.path(),
            Choice {
                dir: Some(src.path().to_path_buf()),
                mode: Some(WorkspaceMode::Copy),
            },
        );
        assert_eq!(mount, store.workspace_dir("s1"));
        // What the session does to its copy changes nothing about the start.
        std::fs::write(mount.join("lib/keep.py"), "one\n2\n").unwrap();
        std::fs::remove_file(mount.join("gone.txt")).unwrap();
        std::fs::write(mount.join("new.txt"), "new\n").unwrap();
        assert_eq!(
            start.file("lib/keep.py", 1 << 20).unwrap(),
            bytes("one\ntwo\n")
        );
        assert_eq!(start.file("gone.txt", 1 << 20).unwrap(), bytes("bye\n"));
        assert_eq!(start.file("new.txt", 1 << 20).unwrap(), StartFile::Absent);
        assert_eq!(start.file("lib", 1 << 20).unwrap(), StartFile::NotAFile);
        assert_eq!(
            start.file("big.bin", 4096).unwrap(),
            StartFile::TooLarge(5000)
        );
        assert_eq!(
            start.file("big.bin", 5000).unwrap(),
            StartFile::Bytes(vec![7u8; 5000])
        );
        // Paths are literal: glob characters match only themselves.
        assert_eq!(
            start.file("odd [x]*.txt", 1 << 20).unwrap(),
            bytes("glob chars\n")
        );
        assert_eq!(start.file("*.txt", 1 << 20).unwrap(), StartFile::Absent);
        for bad in ["../gone.txt", "/etc/passwd", "lib/../gone.txt", ""] {
            let e = start.file(bad, 1 << 20).unwrap_err().to_string();
            assert!(e.contains("not a path inside the workspace"), "{bad}: {e}");
        }
        // The same start makes the patch export.
        let patch = start.patch().unwrap();
        assert!(patch.contains("-two\n+2\n"), "{patch}");
        assert!(patch.contains("deleted file mode"), "{patch}");
    }

    #[test]
    fn the_sessions_own_directory_starts_empty() {
        let data = tempfile::tempdir().unwrap();
        let (_, mount, start) = session(data.path(), Choice::default());
        std::fs::write(mount.join("made.txt"), "x\n").unwrap();
        assert_eq!(start.file("made.txt", 1 << 20).unwrap(), StartFile::Absent);
        assert!(start.patch().unwrap().contains("+x"));
        // A session that is not saved has no store, and its empty start needs none.
        let unsaved = SessionStart::new("u", None, mount.clone(), None);
        assert_eq!(
            unsaved.file("made.txt", 1 << 20).unwrap(),
            StartFile::Absent
        );
    }

    #[test]
    fn a_read_write_git_workspace_starts_at_its_commit_and_is_only_read() {
        let data = tempfile::tempdir().unwrap();
        let holder = tempfile::tempdir().unwrap();
        let repo = holder.path().join("repo");
        std::fs::create_dir_all(repo.join("app")).unwrap();
        git(&repo, &["init", "-q"]);
        std::fs::write(repo.join("app/main.py"), "print('v1')\n").unwrap();
        std::fs::write(repo.join("README"), "readme\n").unwrap();
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "one"]);
        // Uncommitted at start: the start is the commit, so this is not in it.
        std::fs::write(repo.join("app/draft.py"), "draft\n").unwrap();
        // Blocks never run as root: the workspace belongs to a user.
        let status = Command::new("chown")
            .args(["-R", "4242:4242"])
            .arg(holder.path())
            .status()
            .unwrap();
        assert!(status.success());
        let before = listing(&repo.join(".git"));
        let head = git(&repo, &["rev-parse", "HEAD"]);
        // A workspace in a subdirectory of the repository: paths are relative to it.
        let (_, mount, start) = session(
            data.path(),
            Choice {
                dir: Some(repo.join("app")),
                mode: None,
            },
        );
        assert_eq!(mount, repo.join("app").canonicalize().unwrap());
        std::fs::write(repo.join("app/main.py"), "print('v2')\n").unwrap();
        assert_eq!(
            start.file("main.py", 1 << 20).unwrap(),
            bytes("print('v1')\n")
        );
        assert_eq!(start.file("draft.py", 1 << 20).unwrap(), StartFile::Absent);
        assert_eq!(start.file("README", 1 << 20).unwrap(), StartFile::Absent);
        assert!(start.patch().unwrap().contains("+print('v2')"));
        // Read, never written: the repository's objects, refs and HEAD are as they were.
        assert_eq!(listing(&repo.join(".git")), before);
        assert_eq!(git(&repo, &["rev-parse", "HEAD"]), head);
    }

    #[test]
    fn a_session_without_a_recorded_start_says_so() {
        let d = tempfile::tempdir().unwrap();
        let rec = WorkspaceRecord {
            path: d.path().to_path_buf(),
            mode: WorkspaceMode::Rw,
            start: None,
            commit: None,
            dir_id: None,
        };
        let start = SessionStart::new("s9", Some(d.path()), d.path().to_path_buf(), Some(&rec));
        let e = start.file("a.txt", 10).unwrap_err().to_string();
        assert!(e.contains("session s9 has no recorded start state"), "{e}");
        let e = start.patch().unwrap_err().to_string();
        assert!(e.contains("no recorded start state"), "{e}");
    }
}
