//! Choosing the directory a session works in: which directories are refused and why, the copy
//! made for `--workspace-mode copy`, and the record of the session's start.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::protocol::WorkspaceMode;

/// Why a directory cannot be a workspace; the text says why and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot use {path} as the workspace: {why}")]
pub struct Refused {
    /// The directory as given.
    pub path: String,
    /// Why, and what to do instead.
    pub why: String,
}

/// Docker sockets a workspace must never contain (the daemon's socket is root on the host).
fn docker_sockets() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = [
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/run/containerd/containerd.sock",
        "/run/podman/podman.sock",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    if let Some(h) = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
    {
        v.push(h);
    }
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR") {
        v.push(PathBuf::from(&run).join("docker.sock"));
        v.push(PathBuf::from(&run).join("podman/podman.sock"));
    }
    if let Some(home) = home_dir() {
        for rel in [
            ".docker/run/docker.sock",
            ".colima/default/docker.sock",
            ".rd/docker.sock",
        ] {
            v.push(home.join(rel));
        }
    }
    v
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// Resolves `path` through symlinks as far as it exists (so a missing data dir still compares).
fn resolve(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if parent != path => resolve(parent).join(name),
        _ => path.to_path_buf(),
    }
}

/// Checks a directory proposed as a workspace and returns its real path. Refused: a missing path
/// or one that is not a directory, `/`, the home directory itself, proctor's data dir (or a path
/// inside it or holding it), a directory holding a Docker socket, and (read-write) a directory
/// owned by root, since blocks never run as root.
pub fn check_dir(dir: &Path, data_dir: &Path, mode: WorkspaceMode) -> Result<PathBuf, Refused> {
    let refuse = |why: String| Refused {
        // The path may come from a team file: shown with anything invisible made visible.
        path: crate::text_safety::visible_line(&dir.display().to_string()).into_owned(),
        why,
    };
    let real = match dir.canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refuse(
                "it does not exist; create it first or check the path".into(),
            ));
        }
        Err(e) => return Err(refuse(format!("it cannot be resolved ({e})"))),
    };
    let meta = std::fs::metadata(&real).map_err(|e| refuse(format!("cannot stat it ({e})")))?;
    if !meta.is_dir() {
        return Err(refuse("it is not a directory".into()));
    }
    if real == Path::new("/") {
        return Err(refuse(
            "it is the filesystem root: the sandbox would get write access to the whole system; \
             pass a project directory"
                .into(),
        ));
    }
    if let Some(home) = home_dir().map(|h| resolve(&h))
        && real == home
    {
        return Err(refuse(
            "it is your home directory: the sandbox would get write access to your keys, shell \
             profile and every project; pass a project directory inside it"
                .into(),
        ));
    }
    let data = resolve(data_dir);
    if real == data || real.starts_with(&data) {
        return Err(refuse(format!(
            "it is inside proctor's data dir {} (sessions and their logs); pass a project \
             directory elsewhere",
            data.display()
        )));
    }
    if data.starts_with(&real) {
        return Err(refuse(format!(
            "it holds proctor's data dir {}: the sandbox could rewrite session logs; pass a \
             directory that does not contain it (or move the data dir with --data-dir)",
            data.display()
        )));
    }
    for sock in docker_sockets() {
        let sock = resolve(&sock);
        if sock.starts_with(&real) && std::fs::symlink_metadata(&sock).is_ok() {
            return Err(refuse(format!(
                "it holds the Docker socket {}: code in the sandbox could control Docker and so \
                 the host; pass a directory that does not contain it",
                sock.display()
            )));
        }
    }
    if mode == WorkspaceMode::Rw && meta.uid() == 0 {
        return Err(refuse(
            "it is owned by root, and blocks never run as root (they run as the directory's \
             owner, so what they write stays yours): `chown -R USER:GROUP DIR` to a regular \
             user, or use --workspace-mode copy"
                .into(),
        ));
    }
    Ok(real)
}

/// The user's directory a session works in, as recorded in its `workspace_attached` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceRecord {
    /// The directory (absolute): mounted (`rw`) or copied at start (`copy`).
    pub path: PathBuf,
    /// `rw` or `copy`.
    pub mode: WorkspaceMode,
    /// The git tree the patch export starts from.
    pub start: Option<String>,
    /// The commit HEAD named at start (git workspaces).
    pub commit: Option<String>,
    /// `dev:ino` of the directory at start.
    pub dir_id: Option<String>,
}

impl WorkspaceRecord {
    /// The event that records it.
    pub fn to_event(&self) -> crate::protocol::EventKind {
        crate::protocol::EventKind::WorkspaceAttached {
            path: self.path.display().to_string(),
            mode: self.mode,
            start: self.start.clone(),
            commit: self.commit.clone(),
            dir_id: self.dir_id.clone(),
        }
    }

    /// The record an event holds, if it is a `workspace_attached`.
    pub fn from_event(kind: &crate::protocol::EventKind) -> Option<Self> {
        match kind {
            crate::protocol::EventKind::WorkspaceAttached {
                path,
                mode,
                start,
                commit,
                dir_id,
            } => Some(WorkspaceRecord {
                path: PathBuf::from(path),
                mode: *mode,
                start: start.clone(),
                commit: commit.clone(),
                dir_id: dir_id.clone(),
            }),
            _ => None,
        }
    }

    /// The last record in a session's events (`None`: the session works in its own directory).
    pub fn last_in(events: &[crate::protocol::Event]) -> Option<Self> {
        events.iter().rev().find_map(|e| Self::from_event(&e.kind))
    }
}

/// `dev:ino` of a directory: tells the same directory from a replacement at the same path.
pub fn dir_id(dir: &Path) -> Option<String> {
    std::fs::metadata(dir)
        .ok()
        .map(|m| format!("{}:{}", m.dev(), m.ino()))
}

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Files copied.
    pub files: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Entries left out (FIFOs, sockets, devices, unreadable files), relative paths.
    pub skipped: Vec<String>,
}

/// Copies the tree `src` into the existing directory `dst`: files (permission bits and mtimes
/// kept), directories and symlinks (as links, never followed); FIFOs, sockets, devices and
/// unreadable files are left out and listed. With `owner`, everything made is handed to that
/// uid:gid (proctor running as root, the copy belongs to the session's sandbox user).
pub fn copy_tree(src: &Path, dst: &Path, owner: Option<(u32, u32)>) -> std::io::Result<CopyReport> {
    let mut report = CopyReport::default();
    copy_dir(src, dst, owner, Path::new(""), &mut report)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dst, Some(uid), Some(gid))?;
    }
    Ok(report)
}

fn copy_dir(
    src: &Path,
    dst: &Path,
    owner: Option<(u32, u32)>,
    rel: &Path,
    report: &mut CopyReport,
) -> std::io::Result<()> {
    let read = match std::fs::read_dir(src) {
        Ok(read) => read,
        // A directory of the project proctor may not read (a container's 0700 data directory):
        // left out and listed, like an unreadable file. The top directory must be readable.
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied && !rel.as_os_str().is_empty() =>
        {
            report
                .skipped
                .push(format!("{}/ (unreadable directory)", rel.display()));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let mut entries: Vec<std::fs::DirEntry> = read.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let from = e.path();
        let to = dst.join(e.file_name());
        let here = rel.join(e.file_name());
        let meta = std::fs::symlink_metadata(&from)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&to)?;
            copy_dir(&from, &to, owner, &here, report)?;
            std::fs::set_permissions(&to, meta.permissions())?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&to, Some(uid), Some(gid))?;
            }
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::lchown(&to, Some(uid), Some(gid))?;
            }
        } else if ft.is_file() {
            match std::fs::copy(&from, &to) {
                Ok(n) => {
                    report.files += 1;
                    report.bytes += n;
                    if let Ok(f) = std::fs::File::options().write(true).open(&to) {
                        let _ = f.set_modified(meta.modified()?);
                    }
                    if let Some((uid, gid)) = owner {
                        std::os::unix::fs::chown(&to, Some(uid), Some(gid))?;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    report
                        .skipped
                        .push(format!("{} (unreadable)", here.display()));
                }
                Err(e) => return Err(e),
            }
        } else {
            report
                .skipped
                .push(format!("{} (not a regular file)", here.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_paths_say_why() {
        let data = tempfile::tempdir().unwrap();
        let why = |p: &Path| {
            check_dir(p, data.path(), WorkspaceMode::Copy)
                .unwrap_err()
                .why
        };
        assert!(why(Path::new("/")).contains("filesystem root"));
        assert!(why(data.path()).contains("inside proctor's data dir"));
        let inner = data.path().join("sessions");
        std::fs::create_dir(&inner).unwrap();
        assert!(why(&inner).contains("inside proctor's data dir"));
        assert!(why(data.path().parent().unwrap()).contains("holds proctor's data dir"));
        assert!(why(&data.path().join("nope")).contains("does not exist"));
        let file = data.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let other = tempfile::tempdir().unwrap();
        let f2 = other.path().join("f");
        std::fs::write(&f2, "x").unwrap();
        assert!(
            check_dir(&f2, data.path(), WorkspaceMode::Rw)
                .unwrap_err()
                .why
                .contains("not a directory")
        );
        if let Some(home) = home_dir().filter(|h| h.is_dir()) {
            assert!(why(&home).contains("home directory"));
        }
    }

    #[test]
    fn a_directory_holding_the_docker_socket_is_refused() {
        let data = tempfile::tempdir().unwrap();
        if Path::new("/var/run/docker.sock").exists() {
            let why = check_dir(Path::new("/var/run"), data.path(), WorkspaceMode::Copy)
                .unwrap_err()
                .why;
            assert!(why.contains("Docker socket"), "{why}");
        }
    }

    #[test]
    fn copies_keep_links_modes_and_times_and_skip_fifos() {
        use std::os::unix::fs::PermissionsExt;
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("bin")).unwrap();
        std::fs::write(src.path().join("bin/run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            src.path().join("bin/run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("bin/run.sh", src.path().join("link")).unwrap();
        assert!(
            std::process::Command::new("mkfifo")
                .arg(src.path().join("pipe"))
                .status()
                .unwrap()
                .success()
        );
        let r = copy_tree(src.path(), dst.path(), None).unwrap();
        assert_eq!(r.files, 1);
        assert_eq!(r.skipped, ["pipe (not a regular file)"]);
        let m = std::fs::metadata(dst.path().join("bin/run.sh")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o755);
        assert_eq!(
            m.modified().unwrap(),
            std::fs::metadata(src.path().join("bin/run.sh"))
                .unwrap()
                .modified()
                .unwrap()
        );
        assert_eq!(
            std::fs::read_link(dst.path().join("link")).unwrap(),
            Path::new("bin/run.sh")
        );
    }
}
