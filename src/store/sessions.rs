//! The sessions directory: create, open (lock + repair), list, export, fork and remove sessions.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::protocol::{Event, EventKind, SCHEMA_VERSION};

use super::lock::{LockState, SessionLock};
use super::log::{LoadReport, ParsedLog, ReadError, parse_from, read_log, started};
use super::summary::{Fold, SUMMARY_FILE, SessionSummary, SummaryFile};
use super::writer::{SessionFiles, SessionWriter};
use super::{StoreError, export};

/// File name of the event log inside a session directory.
pub const LOG_FILE: &str = "events.jsonl";
/// Directory inside a session directory that the sandbox sees as `/workspace`.
pub const WORKSPACE_DIR: &str = "workspace";
/// Directory under the data dir that holds one directory per session.
pub const SESSIONS_DIR: &str = "sessions";
/// Bytes a new session must be able to write before it starts (see
/// [`SessionStore::check_writable`]).
pub const PROBE_BYTES: usize = 64 * 1024;
/// Environment variable that overrides the data dir.
pub const DATA_DIR_ENV: &str = "PROCTOR_DATA_DIR";

/// A new session id: a UUIDv7, so ids sort by creation time.
pub fn new_session_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The platform data dir for proctor (`~/.local/share/proctor` on Linux), if there is a home.
pub fn default_data_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "proctor").map(|d| d.data_dir().to_path_buf())
}

/// The data dir to use: `--data-dir` if given, else `PROCTOR_DATA_DIR` if set and not empty,
/// else the platform data dir.
pub fn resolve_data_dir(flag: Option<&Path>) -> Result<PathBuf, StoreError> {
    if let Some(dir) = flag {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os(DATA_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    default_data_dir().ok_or_else(|| {
        StoreError::Invalid(format!(
            "no home directory to keep sessions in; pass --data-dir DIR or set {DATA_DIR_ENV}"
        ))
    })
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Read(format!("{what} {}: {e}", path.display()))
}

/// Reads and parses the log `file` (at `path`, of session `id`) a block at a time; returns it and
/// its length.
fn read_whole_log(file: &mut File, path: &Path, id: &str) -> Result<(ParsedLog, u64), StoreError> {
    read_log(file).map_err(|e| match e {
        ReadError::Io(e) => io_err("cannot read", path, e),
        ReadError::Log(e) => in_session(id, e),
    })
}

/// Makes a directory entry durable (new or renamed files in it).
fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!("cannot fsync directory {}: {e}", dir.display());
    }
}

/// Ids are directory names: letters, digits, `-` and `_` only, so no id can point outside the
/// sessions directory.
fn check_id(id: &str) -> Result<(), StoreError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!("{id:?} is not a session id")))
    }
}

fn needs_runtime() -> Result<(), StoreError> {
    tokio::runtime::Handle::try_current()
        .map(|_| ())
        .map_err(|_| StoreError::Io("the session writer needs a tokio runtime".into()))
}

/// All sessions under `DATA_DIR/sessions`.
#[derive(Debug, Clone)]
pub struct SessionStore {
    root: PathBuf,
}

impl SessionStore {
    /// The store under `data_dir` (sessions live in `data_dir/sessions/<id>/`); creates it if needed.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let root = data_dir.as_ref().join(SESSIONS_DIR);
        std::fs::create_dir_all(&root).map_err(|e| io_err("cannot create", &root, e))?;
        Ok(SessionStore { root })
    }

    /// The store under `data_dir` for reading only (list, export): creates nothing, so it works
    /// on a data dir that cannot be written; a missing sessions directory holds no sessions.
    pub fn for_reading(data_dir: impl AsRef<Path>) -> Self {
        SessionStore {
            root: data_dir.as_ref().join(SESSIONS_DIR),
        }
    }

    /// Checks that new sessions can be saved here: makes the sessions directory, writes and
    /// fsyncs a probe of [`PROBE_BYTES`] (a full disk fails here, before a session starts) and
    /// removes it. The error names the directory, what failed and the fix.
    pub fn check_writable(data_dir: impl AsRef<Path>) -> Result<(), StoreError> {
        let root = data_dir.as_ref().join(SESSIONS_DIR);
        let path = root.join(format!(".proctor-probe-{}", std::process::id()));
        let probe = || -> std::io::Result<()> {
            std::fs::create_dir_all(&root)?;
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)?;
            let written = file
                .write_all(&[0u8; PROBE_BYTES])
                .and_then(|()| file.sync_data());
            drop(file);
            let _ = std::fs::remove_file(&path);
            written
        };
        probe().map_err(|e| {
            use std::io::ErrorKind;
            let fix = match e.kind() {
                ErrorKind::StorageFull | ErrorKind::QuotaExceeded => {
                    "the disk is full: free some space on it"
                }
                ErrorKind::ReadOnlyFilesystem => {
                    "the file system is read-only: remount it writable"
                }
                ErrorKind::PermissionDenied => "fix its permissions",
                _ => "make it a writable directory",
            };
            StoreError::Read(format!(
                "cannot save sessions in {}: {e}; {fix}, or pass --data-dir DIR (or set {DATA_DIR_ENV})",
                root.display()
            ))
        })
    }

    /// The sessions directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of one session.
    pub fn session_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// The session's workspace, mounted as `/workspace` in its sandbox.
    pub fn workspace_dir(&self, id: &str) -> PathBuf {
        self.session_dir(id).join(WORKSPACE_DIR)
    }

    /// The session's event log.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.session_dir(id).join(LOG_FILE)
    }

    fn existing_dir(&self, id: &str) -> Result<PathBuf, StoreError> {
        check_id(id)?;
        let dir = self.session_dir(id);
        if dir.join(LOG_FILE).is_file() {
            Ok(dir)
        } else {
            Err(StoreError::NotFound(format!(
                "no session {id} in {}; `proctor sessions list` shows the saved ones",
                self.root.display()
            )))
        }
    }

    /// Ids of all sessions, oldest first.
    pub fn ids(&self) -> Result<Vec<String>, StoreError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            // Nothing was ever saved here.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("cannot list", &self.root, e)),
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| check_id(name).is_ok() && self.root.join(name).join(LOG_FILE).is_file())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The full id of the session named by `id_or_prefix` (a full id or an unambiguous prefix).
    pub fn resolve(&self, id_or_prefix: &str) -> Result<String, StoreError> {
        check_id(id_or_prefix)?;
        if self.log_path(id_or_prefix).is_file() {
            return Ok(id_or_prefix.to_string());
        }
        let matches: Vec<String> = self
            .ids()?
            .into_iter()
            .filter(|id| id.starts_with(id_or_prefix))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(StoreError::NotFound(format!(
                "no session {id_or_prefix} in {}; `proctor sessions list` shows the saved ones",
                self.root.display()
            ))),
            many => Err(StoreError::Invalid(format!(
                "{id_or_prefix} matches {} sessions ({}); give more of the id",
                many.len(),
                many.join(", ")
            ))),
        }
    }

    /// The session written to most recently (`resume --last`), if any.
    pub fn resolve_last(&self) -> Result<Option<String>, StoreError> {
        let mut best: Option<(std::time::SystemTime, String)> = None;
        for id in self.ids()? {
            let Ok(modified) = std::fs::metadata(self.log_path(&id)).and_then(|m| m.modified())
            else {
                continue;
            };
            if best.as_ref().is_none_or(|(t, b)| (modified, &id) > (*t, b)) {
                best = Some((modified, id));
            }
        }
        Ok(best.map(|(_, id)| id))
    }

    /// Creates session `id` with its first record (a `session_started` event for this id), takes
    /// its lock and returns the writer for the rest. The first record is on disk when this returns.
    /// Needs a tokio runtime.
    pub fn create(&self, id: &str, first: &Event) -> Result<SessionWriter, StoreError> {
        check_id(id)?;
        needs_runtime()?;
        if !matches!(first.kind, EventKind::SessionStarted { .. }) {
            return Err(StoreError::Invalid(format!(
                "the first event of a session must be session_started, not {}",
                first.kind.type_name()
            )));
        }
        if first.session != id {
            return Err(StoreError::Invalid(format!(
                "the first event belongs to session {}, not {id}",
                first.session
            )));
        }
        let dir = self.session_dir(id);
        std::fs::create_dir_all(&self.root).map_err(|e| io_err("cannot create", &self.root, e))?;
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            // Prepared before the first record (a copied workspace, the start state): kept.
            Err(e)
                if e.kind() == std::io::ErrorKind::AlreadyExists
                    && !dir.join(LOG_FILE).exists() => {}
            Err(e) => return Err(io_err("cannot create session directory", &dir, e)),
        }
        let workspace = dir.join(WORKSPACE_DIR);
        match std::fs::create_dir(&workspace) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(io_err("cannot create", &workspace, e));
            }
            _ => {}
        }
        let lock = SessionLock::acquire(&dir, id)?;
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_err("cannot create", &path, e))?;
        let mut line = serde_json::to_vec(first).map_err(|e| StoreError::Io(e.to_string()))?;
        line.push(b'\n');
        file.write_all(&line)
            .and_then(|()| file.sync_all())
            .map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))?;
        sync_dir(&dir);
        sync_dir(&self.root);
        let mut fold = Fold::default();
        fold.apply(first);
        let len = line.len() as u64;
        if let Err(e) = SummaryFile::write(&dir, len, &fold) {
            tracing::warn!("session {id}: cannot write summary: {e}");
        }
        SessionWriter::start(
            id,
            Box::new(file),
            len,
            first.seq,
            Some(SessionFiles {
                dir,
                _lock: lock,
                fold,
            }),
        )
    }

    /// Reads a session without opening it for writing: the good events and what was skipped. A torn
    /// tail is left on disk (and reported in `truncated_bytes`); only `open_existing` repairs.
    pub fn read(&self, id: &str) -> Result<(Vec<Event>, LoadReport), StoreError> {
        let dir = self.existing_dir(id)?;
        let path = dir.join(LOG_FILE);
        let mut file = File::open(&path).map_err(|e| io_err("cannot open", &path, e))?;
        let (parsed, _) = read_whole_log(&mut file, &path, id)?;
        Ok((parsed.events, parsed.report))
    }

    /// Opens a saved session to continue it: takes its lock (or says which process has it), reads
    /// the log, cuts a torn tail back to the last good record, and returns the events, what loading
    /// found, and the writer positioned after the last good record. Needs a tokio runtime.
    pub fn open_existing(
        &self,
        id: &str,
    ) -> Result<(Vec<Event>, LoadReport, SessionWriter), StoreError> {
        needs_runtime()?;
        let dir = self.existing_dir(id)?;
        let lock = SessionLock::acquire(&dir, id)?;
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_err("cannot open", &path, e))?;
        // A block at a time: the whole log is never in memory beside its events.
        let (parsed, log_len) = read_whole_log(&mut file, &path, id)?;
        if started(&parsed.events).is_none() {
            return Err(StoreError::Corrupt(format!(
                "session {id} cannot be resumed: its log {} does not begin with a readable session_started record",
                path.display()
            )));
        }
        let mut report = parsed.report;
        let mut good_len = parsed.good_len;
        if good_len < log_len || parsed.needs_newline {
            let repaired = file.set_len(good_len).and_then(|()| {
                if parsed.needs_newline {
                    file.seek(SeekFrom::Start(good_len))?;
                    file.write_all(b"\n")?;
                }
                file.sync_all()
            });
            repaired
                .map_err(|e| StoreError::Io(format!("cannot repair {}: {e}", path.display())))?;
            if parsed.needs_newline {
                good_len += 1;
                report.newline_added = true;
            }
            for w in report.warnings() {
                tracing::warn!("session {id}: {w}");
            }
        }
        let mut fold = Fold::default();
        for ev in &parsed.events {
            fold.apply(ev);
        }
        // The log may have changed under an older summary: replace it, or at least drop it.
        if let Err(e) = SummaryFile::write(&dir, good_len, &fold) {
            tracing::warn!("session {id}: cannot write summary: {e}");
            let _ = std::fs::remove_file(dir.join(SUMMARY_FILE));
        }
        let last_seq = fold.last_seq;
        let writer = SessionWriter::start(
            id,
            Box::new(file),
            good_len,
            last_seq,
            Some(SessionFiles {
                dir,
                _lock: lock,
                fold,
            }),
        )?;
        Ok((parsed.events, report, writer))
    }

    /// All sessions, newest first. Reads each session's cached summary and only the part of its log
    /// written since; a session without a usable summary is read whole once and its summary cached.
    pub fn list(&self) -> Result<Vec<SessionSummary>, StoreError> {
        let mut out = Vec::new();
        for id in self.ids()?.into_iter().rev() {
            match self.summarize(&id) {
                Ok(s) => out.push(s),
                Err(e) => {
                    let fold = Fold {
                        task: format!("(cannot read: {e})"),
                        ..Fold::default()
                    };
                    out.push(SessionSummary::from_fold(&id, &fold, None));
                }
            }
        }
        Ok(out)
    }

    /// The list row of one session.
    pub fn summary(&self, id: &str) -> Result<SessionSummary, StoreError> {
        self.existing_dir(id)?;
        self.summarize(id)
    }

    fn summarize(&self, id: &str) -> Result<SessionSummary, StoreError> {
        let dir = self.session_dir(id);
        let path = dir.join(LOG_FILE);
        let mut file = File::open(&path).map_err(|e| io_err("cannot open", &path, e))?;
        let meta = file
            .metadata()
            .map_err(|e| io_err("cannot stat", &path, e))?;
        let len = meta.len();
        let lock = match SessionLock::probe(&dir) {
            LockState::Free => None,
            LockState::Held(pid) => Some(pid),
        };
        let cached = SummaryFile::read(&dir).filter(|s| s.log_len <= len && s.log_len > 0);
        let fold = match cached {
            Some(s) if s.log_len == len => s.fold,
            Some(s) => {
                // Read from the byte before the summary's end: it must be the newline ending the last
                // record it covers, or the log changed under it.
                let mut delta = Vec::new();
                file.seek(SeekFrom::Start(s.log_len - 1))
                    .and_then(|_| file.read_to_end(&mut delta))
                    .map_err(|e| io_err("cannot read", &path, e))?;
                if delta.first() == Some(&b'\n') {
                    let parsed = parse_from(
                        &delta[1..],
                        s.log_len,
                        Some(SCHEMA_VERSION),
                        s.fold.last_seq,
                    )
                    .map_err(|e| in_session(id, e))?;
                    let mut fold = s.fold;
                    for ev in &parsed.events {
                        fold.apply(ev);
                    }
                    fold
                } else {
                    self.full_fold(id, &mut file, lock.is_none())?
                }
            }
            None => self.full_fold(id, &mut file, lock.is_none())?,
        };
        let mut summary = SessionSummary::from_fold(id, &fold, lock);
        if summary.last_activity_ms == 0
            && let Ok(modified) = meta.modified()
            && let Ok(since) = modified.duration_since(std::time::UNIX_EPOCH)
        {
            summary.last_activity_ms = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
        }
        Ok(summary)
    }

    /// Folds a whole log; caches the result when no proctor is writing the session.
    fn full_fold(&self, id: &str, file: &mut File, cache: bool) -> Result<Fold, StoreError> {
        let path = self.log_path(id);
        file.seek(SeekFrom::Start(0))
            .map_err(|e| io_err("cannot read", &path, e))?;
        let (parsed, _) = read_whole_log(file, &path, id)?;
        let mut fold = Fold::default();
        for ev in &parsed.events {
            fold.apply(ev);
        }
        if cache && parsed.good_len > 0 && !parsed.needs_newline {
            // A torn tail stays out of the summary; whoever repairs it rewrites the summary.
            let _ = SummaryFile::write(&self.session_dir(id), parsed.good_len, &fold);
        }
        Ok(fold)
    }

    /// The session as a Markdown transcript.
    pub fn export_md(&self, id: &str) -> Result<String, StoreError> {
        let (events, _) = self.read(id)?;
        Ok(export::to_markdown(id, &events))
    }

    /// The session's events as JSON lines (the same objects `--headless --json` prints).
    pub fn export_json(&self, id: &str) -> Result<String, StoreError> {
        let (events, _) = self.read(id)?;
        Ok(export::to_jsonl(&events))
    }

    /// Starts a new session holding the events of `id` up to and including seq `at_seq`, under a
    /// new id. Its workspace starts empty. Returns the new id.
    pub fn fork(&self, id: &str, at_seq: u64) -> Result<String, StoreError> {
        let (events, _) = self.read(id)?;
        if started(&events).is_none() {
            return Err(StoreError::Corrupt(format!(
                "session {id} cannot be forked: its log does not begin with a readable session_started record"
            )));
        }
        let last = events.last().map_or(0, |e| e.seq);
        if at_seq < 1 || at_seq > last {
            return Err(StoreError::Invalid(format!(
                "session {id} has events 1..{last}; --at {at_seq} is outside them"
            )));
        }
        let new_id = new_session_id();
        let mut buf = Vec::new();
        let mut fold = Fold::default();
        for mut ev in events.into_iter().take_while(|e| e.seq <= at_seq) {
            ev.session.clone_from(&new_id);
            if let EventKind::SessionStarted { schema, .. } = &mut ev.kind {
                *schema = SCHEMA_VERSION;
            }
            fold.apply(&ev);
            serde_json::to_writer(&mut buf, &ev).map_err(|e| StoreError::Io(e.to_string()))?;
            buf.push(b'\n');
        }
        let dir = self.session_dir(&new_id);
        std::fs::create_dir(&dir)
            .map_err(|e| io_err("cannot create session directory", &dir, e))?;
        let workspace = dir.join(WORKSPACE_DIR);
        std::fs::create_dir(&workspace).map_err(|e| io_err("cannot create", &workspace, e))?;
        // The fork starts from the parent's workspace as it is now (the closest there is to its
        // state at `at_seq`), owned as the parent's is, so its code finds the files it wrote.
        let parent_ws = self.workspace_dir(id);
        if let Ok(meta) = std::fs::metadata(&parent_ws) {
            use std::os::unix::fs::MetadataExt;
            let owner = Some((meta.uid(), meta.gid()));
            crate::workspace::setup::copy_tree(&parent_ws, &workspace, owner)
                .map_err(|e| io_err("cannot copy the workspace of", &parent_ws, e))?;
        }
        // The workspace's state at the session's start, so the fork's patch starts there too.
        let start = self.session_dir(id).join(crate::workspace::git::START_DIR);
        if start.is_dir() {
            let copy = dir.join(crate::workspace::git::START_DIR);
            std::fs::create_dir(&copy)
                .and_then(|()| crate::workspace::setup::copy_tree(&start, &copy, None))
                .map_err(|e| io_err("cannot copy", &start, e))?;
        }
        let path = dir.join(LOG_FILE);
        let written = tempfile::NamedTempFile::new_in(&dir).and_then(|mut tmp| {
            tmp.write_all(&buf)?;
            tmp.as_file().sync_all()?;
            tmp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        });
        written.map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))?;
        sync_dir(&dir);
        sync_dir(&self.root);
        if let Err(e) = SummaryFile::write(&dir, buf.len() as u64, &fold) {
            tracing::warn!("session {new_id}: cannot write summary: {e}");
        }
        Ok(new_id)
    }

    /// Deletes a session and its workspace; refused while a proctor has it open.
    /// A directory left without a log (a crash while creating it) can be removed too.
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        let dir = match self.existing_dir(id) {
            Ok(dir) => dir,
            Err(StoreError::NotFound(_)) if self.session_dir(id).is_dir() => self.session_dir(id),
            Err(e) => return Err(e),
        };
        let lock = SessionLock::acquire(&dir, id).map_err(|e| match e {
            StoreError::Locked(m) => StoreError::Locked(format!("not removed: {m}")),
            other => other,
        })?;
        std::fs::remove_dir_all(&dir).map_err(|e| io_err("cannot remove", &dir, e))?;
        drop(lock);
        sync_dir(&self.root);
        Ok(())
    }
}

/// Names the session in a log error.
fn in_session(id: &str, e: StoreError) -> StoreError {
    match e {
        StoreError::Corrupt(m) => StoreError::Corrupt(format!("session {id}: {m}")),
        other => other,
    }
}
