//! The workspace of a sandbox on a remote engine, carried through the launcher's stream: the
//! local directory is packed as a tar stream and pushed when a sandbox is created (session start,
//! resume, a replaced container); after each block the launcher lists the sandbox's workspace,
//! the host compares the listing with the previous one and pulls what was created or modified as
//! a tar stream, which is applied to the local directory (deleted files are removed).
//!
//! Everything that comes back is untrusted (the code wrote it): only directories and regular
//! files are applied, only at paths that were asked for and that stay inside the workspace,
//! never through a symlink on this machine, within a byte budget; anything else is refused and
//! reported by name.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::backend::{Chunk, ProcessSpec, SandboxBackend, SandboxStream};
use super::launcher::{Frame, Launcher};

/// Most entries a listing may have.
pub const MAX_ENTRIES: usize = 200_000;
/// Most bytes a listing may take.
pub const MAX_LISTING_BYTES: u64 = 64 << 20;
/// Longest file name component a Linux file system stores.
const MAX_NAME: usize = 255;
/// Longest relative path accepted.
const MAX_PATH: usize = 4000;

/// What kind of file a listed path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Link,
    /// FIFO, socket or device.
    Other,
}

/// One listed path's metadata, as the sandbox sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Kind.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, ns.
    pub mtime_ns: i64,
    /// Change time, ns.
    pub ctime_ns: i64,
    /// Inode.
    pub ino: u64,
}

/// The sandbox's workspace at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Every path (relative, `/`-separated), symlinks not followed.
    pub entries: BTreeMap<String, Entry>,
    /// Names that are not UTF-8 (left in the sandbox).
    pub unreadable: u64,
}

impl Listing {
    /// Parses the launcher's `list` answer (one JSON array per line).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut listing = Listing::default();
        for line in bytes.split(|b| *b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if line.first() == Some(&b'{') {
                let value: serde_json::Value = serde_json::from_slice(line)
                    .map_err(|e| format!("a listing line is not JSON: {e}"))?;
                listing.unreadable = value
                    .get("unreadable")
                    .and_then(serde_json::Value::as_u64)
                    .ok_or("a listing line is not a row")?;
                continue;
            }
            type Row = (String, String, i64, i64, i64, i64, i64);
            let (path, kind, size, mode, mtime_ns, ctime_ns, ino): Row =
                serde_json::from_slice(line)
                    .map_err(|e| format!("a listing line is not a 7-field row: {e}"))?;
            let kind = match kind.as_str() {
                "f" => Kind::File,
                "d" => Kind::Dir,
                "l" => Kind::Link,
                "o" => Kind::Other,
                _ => return Err("a listed kind is unknown".into()),
            };
            let entry = Entry {
                kind,
                size: size.max(0) as u64,
                mode: (mode & 0o7777) as u32,
                mtime_ns,
                ctime_ns,
                ino: ino.max(0) as u64,
            };
            listing.entries.insert(path, entry);
            if listing.entries.len() > MAX_ENTRIES {
                return Err(format!(
                    "the workspace has more than {MAX_ENTRIES} files; they are not brought back"
                ));
            }
        }
        Ok(listing)
    }
}

/// What to do after a block: which paths to pull, which to delete here, which to refuse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// New or changed directories and regular files, parents first.
    pub pull: Vec<String>,
    /// Paths gone from the sandbox, deepest first.
    pub delete: Vec<String>,
    /// New or changed paths left in the sandbox, with why.
    pub refused: Vec<(String, String)>,
    /// Bytes of the files to pull.
    pub bytes: u64,
}

/// Compares two listings; files past `budget` bytes in all are refused (largest first).
pub fn plan(before: &Listing, now: &Listing, budget: u64) -> Plan {
    let mut plan = Plan::default();
    let mut files = Vec::new();
    for (path, entry) in &now.entries {
        if before.entries.get(path) == Some(entry) {
            continue;
        }
        // Unchanged content of a directory is nothing to bring back.
        if let Some(old) = before.entries.get(path)
            && old.kind == Kind::Dir
            && entry.kind == Kind::Dir
            && old.mode == entry.mode
        {
            continue;
        }
        if let Err(why) = check_path(path) {
            plan.refused.push((path.clone(), why));
            continue;
        }
        match entry.kind {
            Kind::Dir => plan.pull.push(path.clone()),
            Kind::File => files.push((path.clone(), entry.size)),
            Kind::Link => plan.refused.push((
                path.clone(),
                "a symbolic link: links are not brought back".into(),
            )),
            Kind::Other => plan.refused.push((
                path.clone(),
                "a FIFO, socket or device: only files and directories are brought back".into(),
            )),
        }
    }
    // Largest first past the budget, so the most files come back.
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|i| files[*i].1);
    let mut keep = vec![false; files.len()];
    for i in order {
        let size = files[i].1;
        if plan.bytes.saturating_add(size) <= budget {
            plan.bytes += size;
            keep[i] = true;
        }
    }
    for (i, (path, size)) in files.into_iter().enumerate() {
        if keep[i] {
            plan.pull.push(path);
        } else {
            plan.refused.push((
                path,
                format!(
                    "{} would pass the {} MiB budget of one block's changes (workspace_limit_mb)",
                    crate::workspace::changes::human_size(size),
                    budget >> 20
                ),
            ));
        }
    }
    plan.pull.sort();
    for path in before.entries.keys() {
        if !now.entries.contains_key(path) && check_path(path).is_ok() {
            plan.delete.push(path.clone());
        }
    }
    plan.delete.sort_by(|a, b| b.cmp(a));
    plan
}

/// Checks a relative `/`-separated path: no empty, `.` or `..` component, not absolute, no NUL,
/// within file system limits.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("an empty path".into());
    }
    if path.starts_with('/') {
        return Err("an absolute path".into());
    }
    if path.contains('\0') {
        return Err("a path with a NUL byte".into());
    }
    if path.len() > MAX_PATH {
        return Err(format!("a path longer than {MAX_PATH} bytes"));
    }
    for part in path.split('/') {
        match part {
            "" | "." => return Err("a path with an empty or `.` component".into()),
            ".." => return Err("a path that climbs out with `..`".into()),
            p if p.len() > MAX_NAME => return Err(format!("a name longer than {MAX_NAME} bytes")),
            _ => {}
        }
    }
    Ok(())
}

/// Packs the local workspace as a tar stream into `out`: directories, regular files and symlinks
/// (as links), never following one. Returns the paths left out (FIFOs, sockets, devices,
/// unreadable files).
pub fn pack(root: &Path, out: impl Write) -> std::io::Result<Vec<String>> {
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Complete);
    let mut skipped = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let Ok(read) = std::fs::read_dir(&dir) else {
            skipped.push(rel.display().to_string());
            continue;
        };
        let mut names: Vec<_> = read.filter_map(Result::ok).map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            let rel = rel.join(&name);
            let path = root.join(&rel);
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                skipped.push(rel.display().to_string());
                continue;
            };
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            let ft = meta.file_type();
            if ft.is_dir() {
                header.set_size(0);
                builder.append_data(&mut header, &rel, std::io::empty())?;
                stack.push(rel);
            } else if ft.is_file() {
                // Opened without following a link or blocking on a FIFO swapped in meanwhile.
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(
                        rustix::fs::OFlags::NOFOLLOW.bits() as i32
                            | rustix::fs::OFlags::NONBLOCK.bits() as i32,
                    )
                    .open(&path);
                let Ok(file) = file else {
                    skipped.push(rel.display().to_string());
                    continue;
                };
                let Ok(real) = file.metadata() else {
                    skipped.push(rel.display().to_string());
                    continue;
                };
                if !real.is_file() {
                    skipped.push(rel.display().to_string());
                    continue;
                }
                header.set_size(real.len());
                builder.append_data(&mut header, &rel, file.take(real.len()))?;
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&path)?;
                header.set_size(0);
                builder.append_link(&mut header, &rel, &target)?;
            } else {
                skipped.push(rel.display().to_string());
            }
        }
    }
    builder.into_inner()?.flush()?;
    Ok(skipped)
}

/// A tar stream holding one file `rel` with `content` and permission bits `mode`.
pub fn pack_one(rel: &Path, content: &[u8], mode: u32) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(mode & 0o777);
    header.set_size(content.len() as u64);
    header.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    builder.append_data(&mut header, rel, content)?;
    builder.into_inner()
}

/// What applying a pulled tar stream did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Files and directories written.
    pub written: usize,
    /// Paths deleted.
    pub deleted: usize,
    /// Entries refused, with why.
    pub refused: Vec<(String, String)>,
}

/// `open(2)` flags for walking without following links.
fn dir_flags() -> i32 {
    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::DIRECTORY).bits() as i32
}

/// A path naming `name` inside the open directory `dir` (like `openat`), through `/proc`.
fn at(dir: &std::fs::File, name: &std::ffi::OsStr) -> PathBuf {
    use std::os::fd::AsRawFd;
    Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
}

fn open_dir(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(dir_flags())
        .open(path)
}

/// Opens the directory that holds `rel` under `root`, one component at a time, never following
/// a symlink (a link on the way is refused); missing directories are made (owned by `owner`).
fn open_parent(
    root: &Path,
    rel: &Path,
    owner: Option<(u32, u32)>,
) -> Result<std::fs::File, String> {
    let mut dir = open_dir(root).map_err(|e| format!("cannot open the workspace: {e}"))?;
    let Some(parent) = rel.parent() else {
        return Ok(dir);
    };
    for comp in parent.components() {
        let Component::Normal(c) = comp else {
            return Err("not a plain relative path".into());
        };
        let sub = at(&dir, c);
        match std::fs::symlink_metadata(&sub) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&sub).map_err(|e| format!("cannot make a directory: {e}"))?;
                let made = open_dir(&sub).map_err(|e| format!("cannot open a directory: {e}"))?;
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::fchown(&made, Some(uid), Some(gid))
                        .map_err(|e| format!("cannot hand a directory over: {e}"))?;
                }
                dir = made;
            }
            Err(e) => return Err(format!("cannot read the path: {e}")),
            Ok(m) if m.file_type().is_symlink() => {
                return Err("a symbolic link on this machine is in the way".into());
            }
            Ok(m) if m.is_dir() => {
                dir = open_dir(&sub).map_err(|e| format!("cannot open a directory: {e}"))?;
            }
            Ok(_) => return Err("a part of the path is a file on this machine".into()),
        }
    }
    Ok(dir)
}

/// Deletes `paths` (deepest first) under `root` without following links: files and links are
/// unlinked, directories removed when empty. Returns the paths that could not go, with why.
pub fn delete(root: &Path, paths: &[String]) -> (usize, Vec<(String, String)>) {
    let mut refused = Vec::new();
    let mut deleted = 0;
    for path in paths {
        if let Err(why) = check_path(path) {
            refused.push((path.clone(), why));
            continue;
        }
        let rel = Path::new(path);
        let dir = match open_parent_existing(root, rel) {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(why) => {
                refused.push((path.clone(), why));
                continue;
            }
        };
        let Some(name) = rel.file_name() else {
            continue;
        };
        let target = at(&dir, name);
        let gone = match std::fs::symlink_metadata(&target) {
            Err(_) => continue,
            Ok(m) if m.is_dir() => std::fs::remove_dir(&target),
            Ok(_) => std::fs::remove_file(&target),
        };
        match gone {
            Ok(()) => deleted += 1,
            // A directory that still holds files of this machine stays.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTEMPTY.raw_os_error()) => {}
            Err(e) => refused.push((path.clone(), format!("cannot delete it: {e}"))),
        }
    }
    (deleted, refused)
}

/// [`open_parent`] without making anything: `None` when a directory on the way is missing.
fn open_parent_existing(root: &Path, rel: &Path) -> Result<Option<std::fs::File>, String> {
    let mut dir = open_dir(root).map_err(|e| format!("cannot open the workspace: {e}"))?;
    let Some(parent) = rel.parent() else {
        return Ok(Some(dir));
    };
    for comp in parent.components() {
        let Component::Normal(c) = comp else {
            return Err("not a plain relative path".into());
        };
        let sub = at(&dir, c);
        match std::fs::symlink_metadata(&sub) {
            Err(_) => return Ok(None),
            Ok(m) if m.file_type().is_symlink() => {
                return Err("a symbolic link on this machine is in the way".into());
            }
            Ok(m) if m.is_dir() => {
                dir = open_dir(&sub).map_err(|e| format!("cannot open a directory: {e}"))?;
            }
            Ok(_) => return Ok(None),
        }
    }
    Ok(Some(dir))
}

/// Applies a pulled tar stream to `root`: only directories and regular files, only at paths in
/// `expected`, at most `budget` bytes of content in all; files are written to a fresh file next
/// to the target and renamed over it (a link in the target's place is replaced, never written
/// through), handed to `owner` when given. Everything else is refused, with why.
pub fn apply(
    root: &Path,
    tar_stream: impl Read,
    expected: &HashSet<String>,
    budget: u64,
    owner: Option<(u32, u32)>,
) -> Applied {
    let mut applied = Applied::default();
    let mut archive = tar::Archive::new(tar_stream);
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => {
            applied.refused.push((
                String::new(),
                format!("the sandbox sent no tar stream: {e}"),
            ));
            return applied;
        }
    };
    let mut used: u64 = 0;
    let mut seen = 0usize;
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                applied
                    .refused
                    .push((String::new(), format!("the tar stream is broken: {e}")));
                break;
            }
        };
        seen += 1;
        if seen > MAX_ENTRIES {
            applied
                .refused
                .push((String::new(), format!("more than {MAX_ENTRIES} entries")));
            break;
        }
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw)
            .trim_end_matches('/')
            .to_owned();
        let refuse = |applied: &mut Applied, why: &str| {
            applied.refused.push((name.clone(), why.to_owned()));
        };
        if std::str::from_utf8(&raw).is_err() {
            refuse(&mut applied, "a name that is not UTF-8");
            continue;
        }
        if let Err(why) = check_path(&name) {
            refuse(&mut applied, &why);
            continue;
        }
        if !expected.contains(&name) {
            refuse(&mut applied, "not a path proctor asked for");
            continue;
        }
        let kind = entry.header().entry_type();
        let size = entry.header().size().unwrap_or(u64::MAX);
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        let rel = PathBuf::from(&name);
        match kind {
            tar::EntryType::Directory => {
                let dir = match open_parent(root, &rel, owner) {
                    Ok(d) => d,
                    Err(why) => {
                        refuse(&mut applied, &why);
                        continue;
                    }
                };
                let Some(base) = rel.file_name() else {
                    continue;
                };
                let target = at(&dir, base);
                match std::fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    Ok(m) if m.file_type().is_symlink() => {
                        // Never replaced: it is this machine's, and may be the user's.
                        refuse(
                            &mut applied,
                            "a symbolic link on this machine is in the way",
                        );
                        continue;
                    }
                    Ok(_) => {
                        // A file or link here became a directory in the sandbox.
                        if let Err(e) = std::fs::remove_file(&target) {
                            refuse(&mut applied, &format!("cannot replace it: {e}"));
                            continue;
                        }
                        if let Err(e) = std::fs::create_dir(&target) {
                            refuse(&mut applied, &format!("cannot make it: {e}"));
                            continue;
                        }
                    }
                    Err(_) => {
                        if let Err(e) = std::fs::create_dir(&target) {
                            refuse(&mut applied, &format!("cannot make it: {e}"));
                            continue;
                        }
                    }
                }
                if let Ok(made) = open_dir(&target) {
                    let _ = made.set_permissions(std::fs::Permissions::from_mode(mode | 0o700));
                    if let Some((uid, gid)) = owner {
                        let _ = std::os::unix::fs::fchown(&made, Some(uid), Some(gid));
                    }
                }
                applied.written += 1;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if size > budget.saturating_sub(used) {
                    refuse(
                        &mut applied,
                        &format!(
                            "{} would pass the budget of one block's changes",
                            crate::workspace::changes::human_size(size)
                        ),
                    );
                    continue;
                }
                let dir = match open_parent(root, &rel, owner) {
                    Ok(d) => d,
                    Err(why) => {
                        refuse(&mut applied, &why);
                        continue;
                    }
                };
                let Some(base) = rel.file_name() else {
                    continue;
                };
                let target = at(&dir, base);
                if std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                    refuse(&mut applied, "a directory on this machine is in the way");
                    continue;
                }
                match write_file(&dir, &target, &mut entry, size, mode, owner) {
                    Ok(()) => {
                        used += size;
                        applied.written += 1;
                    }
                    Err(e) => refuse(&mut applied, &format!("cannot write it: {e}")),
                }
            }
            tar::EntryType::Symlink => refuse(&mut applied, "a symbolic link"),
            tar::EntryType::Link => refuse(&mut applied, "a hard link"),
            tar::EntryType::Char | tar::EntryType::Block => refuse(&mut applied, "a device file"),
            tar::EntryType::Fifo => refuse(&mut applied, "a FIFO"),
            _ => refuse(&mut applied, "not a file or a directory"),
        }
    }
    applied
}

/// Writes `size` bytes of `content` as `target` in `dir`: a fresh file (`O_EXCL`, no link
/// followed), filled, given `mode` and `owner`, renamed over the target.
fn write_file(
    dir: &std::fs::File,
    target: &Path,
    content: &mut impl Read,
    size: u64,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = at(
        dir,
        std::ffi::OsStr::new(&format!(".proctor-pull-{}-{nanos:x}", std::process::id())),
    );
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&tmp)?;
    let written = (|| {
        let copied = std::io::copy(&mut content.take(size), &mut file)?;
        if copied != size {
            return Err(std::io::Error::other(
                "the tar stream ended inside the file",
            ));
        }
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        }
        std::fs::rename(&tmp, target)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Who files written into `root` should belong to: its owner, when this process may hand files
/// over (runs as root); otherwise files are this process's, as the directory's owner's usually.
pub fn local_owner(root: &Path) -> Option<(u32, u32)> {
    if !super::sandbox::host_is_root() {
        return None;
    }
    std::fs::metadata(root).ok().map(|m| (m.uid(), m.gid()))
}

/// Longest a sync request may go without a frame from the launcher.
const SYNC_IDLE: std::time::Duration = std::time::Duration::from_secs(60);
/// Raw bytes per pushed line (base64 makes them a third larger).
const PUSH_CHUNK: usize = 48 * 1024;

/// Sends one sync `command` (its nonce added) and feeds the bytes of the answer to `sink` until
/// the launcher's exit report; `Err` with why when the launcher refused or went away.
async fn request(
    launcher: &mut Launcher,
    command: serde_json::Value,
    lines: Option<&mut (dyn FnMut() -> Option<serde_json::Value> + Send)>,
    sink: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<(), String> {
    let sent = launcher.send_run(command).await;
    launcher.forget_command();
    sent.map_err(|e| format!("the launcher did not take the request: {e}"))?;
    if let Some(next) = lines {
        while let Some(line) = next() {
            launcher
                .send(&line)
                .await
                .map_err(|e| format!("the launcher did not take the data: {e}"))?;
        }
    }
    loop {
        let frame = tokio::time::timeout(SYNC_IDLE, launcher.next())
            .await
            .map_err(|_| {
                format!(
                    "the launcher sent nothing for {} s during a transfer",
                    SYNC_IDLE.as_secs()
                )
            })??;
        match frame {
            Frame::Stdout(bytes) => sink(&bytes),
            Frame::Stderr(_) | Frame::Ready(_) | Frame::Pong | Frame::Keepalive => {}
            Frame::Challenge(_) | Frame::Attached(_) => {}
            Frame::Exit(report) if report.code == 0 => return Ok(()),
            Frame::Exit(report) => {
                return Err(report
                    .spawn_error
                    .unwrap_or_else(|| "the launcher refused the transfer".into()));
            }
        }
    }
}

/// A put's data lines from `file`: `{"d": base64}` chunks, then `{"end": true}`.
fn data_lines(mut file: std::fs::File) -> impl FnMut() -> Option<serde_json::Value> + Send {
    use base64::Engine;
    let mut done = false;
    let mut buf = vec![0u8; PUSH_CHUNK];
    move || {
        if done {
            return None;
        }
        let n = match read_full(&mut file, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(%e, "reading the packed workspace");
                0
            }
        };
        if n == 0 {
            done = true;
            return Some(serde_json::json!({"end": true}));
        }
        Some(serde_json::json!({
            "d": base64::engine::general_purpose::STANDARD.encode(&buf[..n])
        }))
    }
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Puts a tar stream (in `file`) under `root` in the sandbox; `clear` empties `root` first.
async fn put(
    launcher: &mut Launcher,
    root: &str,
    file: std::fs::File,
    clear: bool,
) -> Result<(), String> {
    let mut lines = data_lines(file);
    request(
        launcher,
        serde_json::json!({"op": "put", "root": root, "clear": clear}),
        Some(&mut lines),
        &mut |_| {},
    )
    .await
}

/// Lists the sandbox's `root`.
pub async fn list(launcher: &mut Launcher, root: &str) -> Result<Listing, String> {
    let mut bytes = Vec::new();
    let mut over = false;
    request(
        launcher,
        serde_json::json!({"op": "list", "root": root}),
        None,
        &mut |b| {
            if bytes.len() as u64 + b.len() as u64 > MAX_LISTING_BYTES {
                over = true;
            } else {
                bytes.extend_from_slice(b);
            }
        },
    )
    .await?;
    if over {
        return Err(format!(
            "the workspace listing is larger than {} MiB",
            MAX_LISTING_BYTES >> 20
        ));
    }
    Listing::parse(&bytes)
}

/// Pushes the local workspace `local` into the sandbox's (fresh) workspace and lists it there.
/// Returns the listing and the local paths that could not be sent (FIFOs, sockets, devices).
pub async fn push_workspace(
    launcher: &mut Launcher,
    local: &Path,
) -> Result<(Listing, Vec<String>), String> {
    let root = local.to_path_buf();
    let packed = tokio::task::spawn_blocking(move || {
        use std::io::Seek;
        let mut file = tempfile::tempfile()?;
        let skipped = pack(&root, &mut file)?;
        file.rewind()?;
        Ok::<_, std::io::Error>((file, skipped))
    })
    .await
    .map_err(|e| format!("packing the workspace failed: {e}"))?
    .map_err(|e| format!("cannot pack the workspace: {e}"))?;
    let (file, skipped) = packed;
    put(launcher, super::sandbox::WORKSPACE, file, false).await?;
    let listing = list(launcher, super::sandbox::WORKSPACE).await?;
    Ok((listing, skipped))
}

/// Writes one block file into the sandbox: `rel` under `root`, with `content` and `mode`;
/// `clear` empties `root` first (proctor's own block directory).
pub async fn put_file(
    launcher: &mut Launcher,
    root: &str,
    rel: &Path,
    content: &[u8],
    mode: u32,
    clear: bool,
) -> Result<(), String> {
    let tar = pack_one(rel, content, mode).map_err(|e| format!("cannot pack the block: {e}"))?;
    let file = (|| {
        use std::io::Seek;
        let mut f = tempfile::tempfile()?;
        f.write_all(&tar)?;
        f.rewind()?;
        Ok::<_, std::io::Error>(f)
    })()
    .map_err(|e| format!("cannot stage the block: {e}"))?;
    put(launcher, root, file, clear).await
}

/// What a pull brought back.
#[derive(Debug, Clone, Default)]
pub struct Pulled {
    /// The sandbox's workspace now (the baseline of the next pull).
    pub listing: Listing,
    /// Files and directories written here.
    pub written: usize,
    /// Paths deleted here.
    pub deleted: usize,
    /// What was left in the sandbox, with why.
    pub refused: Vec<(String, String)>,
}

/// Brings what changed in the sandbox's workspace since `before` to `local`: lists, deletes what
/// went, pulls what is new or changed (at most `budget` bytes), applies it.
pub async fn pull_changes(
    launcher: &mut Launcher,
    local: &Path,
    before: &Listing,
    budget: u64,
) -> Result<Pulled, String> {
    let now = list(launcher, super::sandbox::WORKSPACE).await?;
    let plan = plan(before, &now, budget);
    let mut pulled = Pulled {
        refused: plan.refused.clone(),
        ..Default::default()
    };
    if now.unreadable > 0 {
        pulled.refused.push((
            String::new(),
            format!(
                "{} file(s) whose names are not UTF-8 stay in the sandbox",
                now.unreadable
            ),
        ));
    }
    let owner = local_owner(local);
    if !plan.delete.is_empty() {
        let (root, paths) = (local.to_path_buf(), plan.delete.clone());
        let (n, refused) = tokio::task::spawn_blocking(move || delete(&root, &paths))
            .await
            .map_err(|e| format!("deleting failed: {e}"))?;
        pulled.deleted = n;
        pulled.refused.extend(refused);
    }
    if !plan.pull.is_empty() {
        // The tar stream may not be larger than what was asked for plus its headers.
        let cap = plan
            .bytes
            .saturating_add(2048 * (plan.pull.len() as u64 + 2))
            .saturating_add(1 << 20);
        let mut file = tempfile::tempfile().map_err(|e| format!("cannot stage a pull: {e}"))?;
        let mut size: u64 = 0;
        let mut failed: Option<String> = None;
        request(
            launcher,
            serde_json::json!({"op": "pull", "root": super::sandbox::WORKSPACE, "paths": plan.pull}),
            None,
            &mut |b| {
                size += b.len() as u64;
                if size > cap {
                    failed.get_or_insert_with(|| {
                        format!("the sandbox sent more than the {} asked for", crate::workspace::changes::human_size(cap))
                    });
                } else if failed.is_none()
                    && let Err(e) = file.write_all(b)
                {
                    failed = Some(format!("cannot stage a pull: {e}"));
                }
            },
        )
        .await?;
        if let Some(why) = failed {
            pulled.refused.push((String::new(), why));
        } else {
            use std::io::Seek;
            file.rewind()
                .map_err(|e| format!("cannot read a staged pull: {e}"))?;
            let expected: HashSet<String> = plan.pull.iter().cloned().collect();
            let root = local.to_path_buf();
            let applied = tokio::task::spawn_blocking(move || {
                apply(
                    &root,
                    std::io::BufReader::new(file),
                    &expected,
                    budget,
                    owner,
                )
            })
            .await
            .map_err(|e| format!("applying the changes failed: {e}"))?;
            pulled.written = applied.written;
            pulled.refused.extend(applied.refused);
        }
    }
    pulled.listing = now;
    Ok(pulled)
}

/// The workspace watch run inside a synced sandbox (see `disk_watch.py`).
pub const DISK_WATCH: &str = include_str!("disk_watch.py");

/// Where a watch reports a block's growth past the limit: the block's kill switch and the
/// growth.
type Armed = std::sync::Arc<
    std::sync::Mutex<
        Option<(
            tokio_util::sync::CancellationToken,
            std::sync::Arc<std::sync::Mutex<Option<u64>>>,
        )>,
    >,
>;

/// The workspace watch of one synced sandbox: a long-lived process inside it (as the container's
/// main uid) that proctor arms when a block starts and disarms when it ends; past the limit it
/// records the growth and cancels the block.
pub struct RemoteDiskWatch {
    input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    armed: Armed,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RemoteDiskWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteDiskWatch").finish_non_exhaustive()
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RemoteDiskWatch {
    /// Starts the watch in sandbox `id` as `user`.
    pub async fn start(backend: &dyn SandboxBackend, id: &str, user: &str) -> Result<Self, String> {
        use futures::StreamExt;
        let process = ProcessSpec {
            argv: ["python3", "-I", "-S", "-c", DISK_WATCH]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            user: user.to_owned(),
            cwd: None,
            env: Vec::new(),
            stdin: true,
        };
        let SandboxStream {
            mut output, input, ..
        } = backend
            .open_stream(id, process)
            .await
            .map_err(|e| e.to_string())?;
        let armed: Armed = Default::default();
        let reports = armed.clone();
        let reader = tokio::spawn(async move {
            let mut line = Vec::new();
            while let Some(item) = output.next().await {
                let bytes = match item {
                    Ok(Chunk::Stdout(b)) => b,
                    Ok(Chunk::Stderr(b)) => {
                        tracing::debug!(stderr = %String::from_utf8_lossy(&b), "workspace watch");
                        continue;
                    }
                    Err(_) => return,
                };
                line.extend_from_slice(&bytes);
                while let Some(end) = line.iter().position(|b| *b == b'\n') {
                    let text: Vec<u8> = line.drain(..=end).collect();
                    let text = String::from_utf8_lossy(&text);
                    let grown = text.trim().strip_prefix("O ").and_then(|n| n.parse().ok());
                    if let Some(grown) = grown
                        && let Some((kill, over)) = lock(&reports).take()
                    {
                        *lock(&over) = Some(grown);
                        kill.cancel();
                    }
                }
                if line.len() > 4096 {
                    return;
                }
            }
        });
        Ok(Self {
            input,
            armed,
            reader,
        })
    }

    /// Whether the watch is gone (then a new one is started).
    pub fn is_finished(&self) -> bool {
        self.reader.is_finished()
    }

    async fn say(&mut self, line: &str) -> bool {
        use tokio::io::AsyncWriteExt;
        let write = async {
            self.input.write_all(line.as_bytes()).await?;
            self.input.flush().await
        };
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(5), write).await,
            Ok(Ok(()))
        )
    }

    /// Arms the watch for a block: past `limit` bytes of growth, `over` gets the growth and
    /// `kill` is cancelled. Returns whether the watch took it.
    pub async fn arm(
        &mut self,
        limit: u64,
        kill: tokio_util::sync::CancellationToken,
        over: std::sync::Arc<std::sync::Mutex<Option<u64>>>,
    ) -> bool {
        *lock(&self.armed) = Some((kill, over));
        self.say(&format!("start {limit}\n")).await
    }

    /// Disarms the watch when the block ended.
    pub async fn disarm(&mut self) -> bool {
        lock(&self.armed).take();
        self.say("stop\n").await
    }
}

impl Drop for RemoteDiskWatch {
    fn drop(&mut self) {
        // Closing its stdin ends the watch.
        self.reader.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: Kind, size: u64, mtime_ns: i64) -> Entry {
        Entry {
            kind,
            size,
            mode: 0o644,
            mtime_ns,
            ctime_ns: mtime_ns,
            ino: 1,
        }
    }

    #[test]
    fn a_listing_parses_and_a_bad_line_is_an_error() {
        let text =
            b"[\"a.txt\",\"f\",3,420,5,6,7]\n[\"d\",\"d\",0,493,1,1,2]\n{\"unreadable\":2}\n";
        let l = Listing::parse(text).unwrap();
        assert_eq!(l.entries.len(), 2);
        assert_eq!(l.entries["a.txt"].size, 3);
        assert_eq!(l.unreadable, 2);
        assert!(Listing::parse(b"[\"a\",\"q\",1,1,1,1,1]").is_err());
        assert!(Listing::parse(b"not json").is_err());
    }

    #[test]
    fn the_plan_pulls_what_changed_deletes_what_went_and_refuses_links_and_big_files() {
        let mut before = Listing::default();
        before
            .entries
            .insert("keep".into(), entry(Kind::File, 1, 1));
        before
            .entries
            .insert("edit".into(), entry(Kind::File, 1, 1));
        before
            .entries
            .insert("gone".into(), entry(Kind::File, 1, 1));
        let mut now = before.clone();
        now.entries.remove("gone");
        now.entries.insert("edit".into(), entry(Kind::File, 2, 2));
        now.entries.insert("new/dir".into(), entry(Kind::Dir, 0, 1));
        now.entries.insert("link".into(), entry(Kind::Link, 0, 1));
        now.entries.insert("fifo".into(), entry(Kind::Other, 0, 1));
        now.entries
            .insert("big".into(), entry(Kind::File, 10 << 20, 1));
        let p = plan(&before, &now, 1 << 20);
        assert_eq!(p.pull, ["edit", "new/dir"]);
        assert_eq!(p.delete, ["gone"]);
        let refused: Vec<&str> = p.refused.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(refused.len(), 3, "{:?}", p.refused);
        for r in ["link", "fifo", "big"] {
            assert!(refused.contains(&r), "{r}: {:?}", p.refused);
        }
    }

    /// A tar stream built by hand, so that it can hold what a well-behaved packer never writes.
    fn raw_tar(entries: &[(&[u8], u8, &[u8], &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, data, link) in entries {
            let mut h = [0u8; 512];
            h[..name.len()].copy_from_slice(name);
            h[100..107].copy_from_slice(b"0000644");
            h[108..115].copy_from_slice(b"0000000");
            h[116..123].copy_from_slice(b"0000000");
            let size = format!("{:011o}", data.len());
            h[124..135].copy_from_slice(size.as_bytes());
            h[136..147].copy_from_slice(b"00000000000");
            h[156] = *kind;
            h[157..157 + link.len()].copy_from_slice(link.as_bytes());
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
            h[148..156].copy_from_slice(b"        ");
            let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
            h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
            out.extend_from_slice(&h);
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    #[test]
    fn hostile_entries_are_refused_and_nothing_is_written_outside() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("ws");
        std::fs::create_dir(&root).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
        let tar = raw_tar(&[
            (b"../escape.txt", b'0', b"x", ""),
            (b"/etc/abs.txt", b'0', b"x", ""),
            (b"out/through.txt", b'0', b"x", ""),
            (b"link", b'2', b"", "/etc/passwd"),
            (b"hard", b'1', b"", "ok.txt"),
            (b"dev", b'3', b"", ""),
            (b"fifo", b'6', b"", ""),
            (b"huge.bin", b'0', &[7u8; 4096], ""),
            (b"unasked.txt", b'0', b"x", ""),
            (b"ok.txt", b'0', b"fine", ""),
        ]);
        let expected: HashSet<String> = [
            "../escape.txt",
            "out/through.txt",
            "link",
            "hard",
            "dev",
            "fifo",
            "huge.bin",
            "ok.txt",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let applied = apply(&root, &tar[..], &expected, 1024, None);
        assert_eq!(applied.written, 1, "{:?}", applied.refused);
        assert_eq!(
            std::fs::read_to_string(root.join("ok.txt")).unwrap(),
            "fine"
        );
        let refused: Vec<&str> = applied.refused.iter().map(|(p, _)| p.as_str()).collect();
        for bad in [
            "../escape.txt",
            "/etc/abs.txt",
            "out/through.txt",
            "link",
            "hard",
            "dev",
            "fifo",
            "huge.bin",
            "unasked.txt",
        ] {
            assert!(refused.contains(&bad), "{bad}: {:?}", applied.refused);
        }
        assert!(!parent.path().join("escape.txt").exists());
        assert!(!outside.path().join("through.txt").exists());
        assert!(!root.join("link").exists() && !root.join("fifo").exists());
        assert!(!root.join("huge.bin").exists());
    }

    #[test]
    fn pack_then_apply_round_trips_files_and_directories() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("a/b")).unwrap();
        std::fs::write(src.path().join("a/b/c.txt"), "deep").unwrap();
        std::fs::write(src.path().join(format!("{}.txt", "n".repeat(150))), "long").unwrap();
        let mut tar = Vec::new();
        let skipped = pack(src.path(), &mut tar).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        let dst = tempfile::tempdir().unwrap();
        let expected: HashSet<String> = ["a", "a/b", "a/b/c.txt"]
            .iter()
            .map(|s| (*s).to_owned())
            .chain([format!("{}.txt", "n".repeat(150))])
            .collect();
        let applied = apply(dst.path(), &tar[..], &expected, 1 << 20, None);
        assert!(applied.refused.is_empty(), "{:?}", applied.refused);
        assert_eq!(
            std::fs::read_to_string(dst.path().join("a/b/c.txt")).unwrap(),
            "deep"
        );
        let (n, refused) = delete(dst.path(), &["a/b/c.txt".into(), "a/b".into()]);
        assert_eq!((n, refused.len()), (2, 0));
        assert!(!dst.path().join("a/b").exists());
    }
}
