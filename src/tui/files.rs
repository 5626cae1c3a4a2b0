//! The `f` pane's files: a workspace file as it is now and as it was at session start, and the
//! diff between the two. Loading reads the disk and git objects, so the run loop does it off the
//! UI task (the pane says "loading…" until it lands); tests call [`WorkspaceFiles::load`] directly.
//!
//! Files are opened only inside the workspace (no absolute path, no `..`, no link leading out).
//! Text is shown up to [`TEXT_CAP`]; a text diff is made only when both sides are text under it.
//! Lines keep the file's own characters: the pane draws them through `text_safety` (hidden
//! characters as markers), like every other outside text.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::text_safety::code_lines;
use crate::tui::render::bytes;
use crate::workspace::git::StartFile;
use crate::workspace::session::SessionStart;

/// Most bytes of a file shown, and the largest file given a text diff (1 MiB).
pub const TEXT_CAP: u64 = 1 << 20;
/// [`TEXT_CAP`] in words.
const CAP_WORDS: &str = "1 MiB";

/// Where the `f` pane reads files: the session's workspace on this machine and its start state.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceFiles {
    dir: PathBuf,
    start: Option<SessionStart>,
}

/// What the pane shows of one file, once loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct FileView {
    /// Highlighting language (the file's suffix).
    pub language: String,
    /// The file tab: its lines as an interpreter counts them (hidden characters shown as
    /// markers), or why it cannot be shown. A deleted file shows its start content.
    pub file: Result<Arc<Vec<String>>, String>,
    /// A note above the file tab (deleted: shown as it was at start; only the first 1 MiB).
    pub file_note: Option<String>,
    /// Whether the file tab shows the file at session start (it was deleted).
    pub file_is_start: bool,
    /// The diff tab: a unified diff against the session's start, or why there is none.
    pub diff: Result<Vec<String>, String>,
    /// Highlighter key of the file lines (set by the app when the view lands).
    pub hl_key: Option<u64>,
}

/// One side of the comparison.
enum Side {
    /// Text (the first [`TEXT_CAP`] bytes of `size` when `cut`).
    Text { text: String, size: u64, cut: bool },
    /// Holds a NUL byte: no text view.
    Binary(u64),
    /// Larger than the cap (the start side reads no content then).
    TooLarge(u64),
    /// Not there.
    Absent,
    /// A directory, a device, a submodule.
    NotAFile,
    /// Cannot be read: why.
    Unreadable(String),
}

impl Side {
    fn from_bytes(bytes: Vec<u8>, size: u64) -> Side {
        if bytes.contains(&0) {
            return Side::Binary(size);
        }
        Side::Text {
            cut: size > bytes.len() as u64,
            text: String::from_utf8_lossy(&bytes).into_owned(),
            size,
        }
    }

    /// Its size in words, for notes.
    fn size(&self) -> String {
        match self {
            Side::Text { size, .. } | Side::Binary(size) | Side::TooLarge(size) => bytes(*size),
            Side::Absent => "not there".into(),
            Side::NotAFile => "not a file".into(),
            Side::Unreadable(_) => "unreadable".into(),
        }
    }
}

/// `path` as a relative path that stays inside the workspace, or why not.
fn inside(path: &str) -> Result<&Path, String> {
    let rel = Path::new(path);
    if path.is_empty()
        || rel.is_absolute()
        || rel.components().any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err("this path leaves the workspace; not opened".into());
    }
    Ok(rel)
}

impl WorkspaceFiles {
    /// Files of the workspace at `dir`; `start` is its state at session start (no diffs without).
    pub fn new(dir: PathBuf, start: Option<SessionStart>) -> Self {
        WorkspaceFiles { dir, start }
    }

    /// The file as it is now.
    fn now(&self, rel: &Path) -> Side {
        let root = match self.dir.canonicalize() {
            Ok(r) => r,
            Err(e) => return Side::Unreadable(format!("cannot open the workspace: {e}")),
        };
        let full = root.join(rel);
        match std::fs::symlink_metadata(&full) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Side::Absent,
            Err(e) => return Side::Unreadable(format!("cannot open it: {e}")),
            Ok(_) => {}
        }
        let real = match full.canonicalize() {
            Ok(r) => r,
            Err(e) => return Side::Unreadable(format!("cannot open it: {e}")),
        };
        if !real.starts_with(&root) {
            return Side::Unreadable("a link leads out of the workspace; not opened".into());
        }
        // A running block may swap the file meanwhile: never follow a link, never wait on a FIFO,
        // and check where the opened file really is.
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::io::AsRawFd;
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(
                rustix::fs::OFlags::NOFOLLOW.bits() as i32
                    | rustix::fs::OFlags::NONBLOCK.bits() as i32,
            )
            .open(&real)
        {
            Ok(f) => f,
            Err(e) => return Side::Unreadable(format!("cannot open it: {e}")),
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => return Side::Unreadable(format!("cannot open it: {e}")),
        };
        if !meta.is_file() {
            return Side::NotAFile;
        }
        let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()));
        if opened.is_ok_and(|p| !p.starts_with(&root)) {
            return Side::Unreadable("a link leads out of the workspace; not opened".into());
        }
        let mut buf = Vec::new();
        match file.take(TEXT_CAP).read_to_end(&mut buf) {
            Ok(_) => Side::from_bytes(buf, meta.len()),
            Err(e) => Side::Unreadable(format!("cannot read it: {e}")),
        }
    }

    /// The file at session start.
    fn at_start(&self, path: &str) -> Side {
        let Some(start) = &self.start else {
            return Side::Unreadable("the session's start state is not known here".into());
        };
        match start.file(path, TEXT_CAP) {
            Ok(StartFile::Absent) => Side::Absent,
            Ok(StartFile::Bytes(b)) => {
                let n = b.len() as u64;
                Side::from_bytes(b, n)
            }
            Ok(StartFile::TooLarge(n)) => Side::TooLarge(n),
            Ok(StartFile::NotAFile) => Side::NotAFile,
            Err(e) => Side::Unreadable(e.to_string()),
        }
    }

    /// Reads `path` (relative to the workspace) now and at session start and compares them.
    /// Blocking: run it off the UI task.
    pub fn load(&self, path: &str) -> FileView {
        let language = Path::new(path)
            .extension()
            .map(|e| e.to_string_lossy().to_string())
            .unwrap_or_default();
        let rel = match inside(path) {
            Ok(rel) => rel,
            Err(why) => {
                return FileView {
                    language,
                    file: Err(why.clone()),
                    file_note: None,
                    file_is_start: false,
                    diff: Err(why),
                    hl_key: None,
                };
            }
        };
        let now = self.now(rel);
        let start = self.at_start(path);
        let (file, file_note, file_is_start) = file_tab(&now, &start, &language);
        FileView {
            file,
            file_note,
            file_is_start,
            diff: diff_tab(path, &now, &start),
            language,
            hl_key: None,
        }
    }
}

type Tab = (Result<Arc<Vec<String>>, String>, Option<String>, bool);

/// What the file tab shows: the file now, or (deleted) as it was at start.
fn file_tab(now: &Side, start: &Side, language: &str) -> Tab {
    let lines = |text: &str| Ok(Arc::new(code_lines(text, language)));
    let first = |size: u64| format!("only the first {} of {} shown", CAP_WORDS, bytes(size));
    match now {
        Side::Text { text, size, cut } => (lines(text), cut.then(|| first(*size)), false),
        Side::Binary(n) => (Err(format!("binary file, {}", bytes(*n))), None, false),
        Side::TooLarge(n) => (Err(first(*n)), None, false),
        Side::NotAFile => (Err("not a regular file".into()), None, false),
        Side::Unreadable(why) => (Err(why.clone()), None, false),
        Side::Absent => {
            let gone = "deleted in this session";
            match start {
                Side::Text { text, .. } => (
                    lines(text),
                    Some(format!("{gone}: shown as it was at session start")),
                    true,
                ),
                Side::Binary(n) => (
                    Err(format!(
                        "{gone}; at session start it was a binary file, {}",
                        bytes(*n)
                    )),
                    None,
                    true,
                ),
                Side::TooLarge(n) => (
                    Err(format!(
                        "{gone}; at session start it was {}, more than the {} shown",
                        bytes(*n),
                        CAP_WORDS
                    )),
                    None,
                    true,
                ),
                Side::NotAFile => (
                    Err(format!(
                        "{gone}; at session start it was not a regular file"
                    )),
                    None,
                    true,
                ),
                Side::Absent => (
                    Err("not in the workspace now, nor in its state at session start".into()),
                    None,
                    false,
                ),
                Side::Unreadable(why) => (
                    Err(format!(
                        "not in the workspace now, and its state at session start cannot be read: {why}"
                    )),
                    None,
                    false,
                ),
            }
        }
    }
}

/// What the diff tab shows: a unified diff from start to now, or why there is none.
fn diff_tab(path: &str, now: &Side, start: &Side) -> Result<Vec<String>, String> {
    if let Side::Unreadable(why) = now {
        return Err(why.clone());
    }
    if let Side::Unreadable(why) = start {
        return Err(format!(
            "no diff: its state at session start cannot be read: {why}"
        ));
    }
    let sizes = || format!("at session start: {}; now: {}", start.size(), now.size());
    if matches!(now, Side::Binary(_)) || matches!(start, Side::Binary(_)) {
        return Err(format!("binary file: no text diff ({})", sizes()));
    }
    let too_big = |s: &Side| matches!(s, Side::TooLarge(_) | Side::Text { cut: true, .. });
    if too_big(now) || too_big(start) {
        return Err(format!(
            "too large for a text diff, made for files up to {CAP_WORDS} ({})",
            sizes()
        ));
    }
    if matches!(now, Side::NotAFile) || matches!(start, Side::NotAFile) {
        return Err(format!("not a regular file: no text diff ({})", sizes()));
    }
    let text = |s: &Side| match s {
        Side::Text { text, .. } => Some(text.clone()),
        _ => None,
    };
    let (old, new) = (text(start), text(now));
    if old.is_none() && new.is_none() {
        return Err("not in the workspace now, nor in its state at session start".into());
    }
    let old_name = match old {
        Some(_) => format!("{path} (session start)"),
        None => "(not in the start state)".to_string(),
    };
    let new_name = match new {
        Some(_) => format!("{path} (now)"),
        None => "(deleted)".to_string(),
    };
    let diff = crate::store::diff::unified(
        old.as_deref().unwrap_or(""),
        new.as_deref().unwrap_or(""),
        &old_name,
        &new_name,
    );
    if diff.is_empty() {
        return Err("the same as at session start (changed, then changed back)".into());
    }
    Ok(diff.lines().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> WorkspaceFiles {
        // The session's own directory: it started empty.
        let start = SessionStart::new("t", None, dir.to_path_buf(), None);
        WorkspaceFiles::new(dir.to_path_buf(), Some(start))
    }

    #[test]
    fn a_file_made_in_the_session_is_all_added() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.py"), "x = 1\ny = 2\n").unwrap();
        let v = files(d.path()).load("a.py");
        assert_eq!(v.language, "py");
        assert_eq!(
            v.file.unwrap().as_slice(),
            ["x = 1".to_string(), "y = 2".to_string()]
        );
        assert_eq!(
            v.diff.unwrap(),
            [
                "--- (not in the start state)",
                "+++ a.py (now)",
                "@@ -0,0 +1,2 @@",
                "+x = 1",
                "+y = 2"
            ]
        );
    }

    #[test]
    fn binary_large_and_outside_files_say_why() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("b.bin"), [1u8, 0, 2]).unwrap();
        std::fs::write(d.path().join("big.txt"), "x\n".repeat(600_000)).unwrap();
        let w = files(d.path());
        let v = w.load("b.bin");
        assert_eq!(v.file.unwrap_err(), "binary file, 3 B");
        assert!(v.diff.unwrap_err().starts_with("binary file: no text diff"));
        let v = w.load("big.txt");
        assert_eq!(v.file.unwrap().len(), 1 << 19);
        assert!(
            v.file_note
                .unwrap()
                .contains("only the first 1 MiB of 1.1 MiB")
        );
        assert!(v.diff.unwrap_err().starts_with("too large for a text diff"));
        let v = w.load("../etc/passwd");
        assert!(v.file.unwrap_err().contains("leaves the workspace"));
        let v = w.load("gone.txt");
        assert!(v.file.unwrap_err().contains("not in the workspace now"));
        // A FIFO a block planted is never opened for reading (that would wait forever).
        let fifo = d.path().join("pipe");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let v = w.load("pipe");
        assert!(v.file.is_err());
    }
}
