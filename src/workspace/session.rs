//! A session's workspace at the binary's edge: choosing it for a new session (checked, copied,
//! its start recorded), finding it again on resume, the patch export, and `doctor`'s report.
//! Notes for the user go through a callback (the binary prints them before any front end owns
//! the terminal).

use std::path::{Path, PathBuf};

use super::git::{EMPTY_TREE, GitError, StartStore, head_commit};
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

/// The workspace of session `id` from its start to now, as a patch `git apply` takes.
pub fn patch(store: &SessionStore, id: &str) -> Result<String> {
    let (events, _) = store.read(id)?;
    let (work_tree, start) = match WorkspaceRecord::last_in(&events) {
        None => (store.workspace_dir(id), EMPTY_TREE.to_string()),
        Some(rec) => {
            let work_tree = match rec.mode {
                WorkspaceMode::Rw => rec.path,
                WorkspaceMode::Copy => store.workspace_dir(id),
            };
            let start = rec.start.ok_or_else(|| {
                SessionWorkspaceError::Other(format!(
                    "session {id} has no recorded start state (git was missing or failed when it started), so no patch can be made"
                ))
            })?;
            (work_tree, start)
        }
    };
    if !work_tree.is_dir() {
        return Err(SessionWorkspaceError::Other(format!(
            "the workspace of session {id}, {}, is not there (moved or deleted?)",
            visible_line(&work_tree.display().to_string())
        )));
    }
    Ok(StartStore::in_session(&store.session_dir(id)).patch(&work_tree, &start)?)
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
