//! The sandbox policy: what container a session's code runs in (limits, user, mounts, labels), which
//! interpreter runs a language, and where a block's file may be written inside the workspace.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, ResourcesUlimits};
use sha2::{Digest, Sha256};

use super::{ExecError, ExecRequest};
use crate::config::limits;

/// Label carrying the session id on every sandbox container.
pub const LABEL_SESSION: &str = "proctor.session";
/// Label naming the proctor process that owns a container (`boot_id:pid:starttime`).
pub const LABEL_OWNER: &str = "proctor.owner";
/// Where the workspace is mounted in the container.
pub const WORKSPACE: &str = "/workspace";
/// Where proctor's own per-block files (unnamed blocks' code) are mounted, read-only.
pub const BLOCKS: &str = "/proctor";
/// Size of the [`BLOCKS`] tmpfs of a synced sandbox (block files only).
pub const BLOCKS_SIZE_MB: u64 = 16;
/// Size of the `/tmp` tmpfs.
pub const TMP_SIZE_MB: u64 = 64;
/// Open files per process.
pub const NOFILE: i64 = 1024;
/// Largest file a block may write.
pub const FSIZE_BYTES: i64 = 1 << 30;

/// Everything that decides how a session's container is built; a change means a new container.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxSpec {
    /// Image reference.
    pub image: String,
    /// Network on (bridge) or off (none).
    pub network: bool,
    /// Memory and memory+swap, MiB.
    pub memory_mb: u64,
    /// CPU quota.
    pub cpus: f64,
    /// Pids limit.
    pub pids: u64,
    /// The block uid is a real host user's (proctor does not run as root): the nproc ulimit must
    /// leave room for that user's own processes.
    pub host_user: bool,
    /// uid:gid the launcher and blocks run as.
    pub uid: u32,
    /// Group of the block processes.
    pub gid: u32,
    /// uid of the container's main process (never the block uid, so a sweep cannot reach it).
    pub main_uid: u32,
    /// Host workspace directory.
    pub workspace: PathBuf,
    /// Host directory of proctor's per-block files, mounted read-only at [`BLOCKS`].
    pub blocks: PathBuf,
    /// Nothing of this machine is mounted (a remote engine): the workspace is a volume of the
    /// sandbox's own, filled and read back through the launcher; block files go to a private
    /// tmpfs at [`BLOCKS`]; the network is switched per block by connecting and disconnecting.
    pub synced: bool,
}

impl SandboxSpec {
    /// The spec for a request; also makes the workspace exist and, when it is proctor's own and
    /// proctor runs as root, hands it to the session's sandbox uid. A user's workspace is never
    /// chowned: blocks run as its owner, and one owned by root is refused.
    pub fn for_request(
        req: &ExecRequest,
        network: bool,
        blocks: &Path,
        synced: bool,
    ) -> Result<Self, ExecError> {
        let ws = &req.workspace;
        std::fs::create_dir_all(ws).map_err(|e| {
            ExecError::Other(format!("cannot create workspace {}: {e}", ws.display()))
        })?;
        let ws = ws.canonicalize().map_err(|e| {
            ExecError::Other(format!(
                "cannot resolve workspace {}: {e}",
                req.workspace.display()
            ))
        })?;
        let meta = std::fs::metadata(&ws).map_err(|e| {
            ExecError::Other(format!("cannot stat workspace {}: {e}", ws.display()))
        })?;
        // Clamped to the ranges the team file is checked against, so nothing below overflows
        // even for a policy that did not come through that check.
        let pids = req.policy.pids.clamp(16, *limits::PIDS.end());
        let (uid, gid, host_user) = if req.user_workspace {
            if meta.uid() == 0 {
                return Err(ExecError::Other(format!(
                    "the workspace {} is owned by root, and blocks never run as root: chown it to \
                     a regular user, or use --workspace-mode copy",
                    ws.display()
                )));
            }
            // The user's directory: run as its owner, so what the code writes stays theirs.
            (meta.uid(), meta.gid(), true)
        } else if host_is_root() {
            // A uid of its own per session: the nproc ulimit counts processes per uid across
            // the whole host, so sessions must not share one.
            let uid = session_uid(&req.session);
            if meta.uid() != uid || meta.gid() != uid {
                std::os::unix::fs::chown(&ws, Some(uid), Some(uid)).map_err(|e| {
                    ExecError::Other(format!("cannot chown workspace {}: {e}", ws.display()))
                })?;
            }
            (uid, uid, false)
        } else {
            // Run as the workspace's owner so the user keeps owning what the code writes.
            (meta.uid(), meta.gid(), true)
        };
        let main_uid = if uid == 65534 { 65533 } else { 65534 };
        Ok(Self {
            image: req.policy.image.clone(),
            network,
            memory_mb: req
                .policy
                .memory_mb
                .clamp(*limits::MEMORY_MB.start(), *limits::MEMORY_MB.end()),
            cpus: if req.policy.cpus.is_finite() && req.policy.cpus > 0.0 {
                req.policy
                    .cpus
                    .clamp(*limits::CPUS.start(), *limits::CPUS.end())
            } else {
                1.0
            },
            pids,
            host_user,
            uid,
            gid,
            main_uid,
            workspace: ws,
            blocks: blocks.to_path_buf(),
            synced,
        })
    }

    /// Whether an existing container built from `other` can serve this spec.
    pub fn same_container(&self, other: &SandboxSpec) -> bool {
        self.image == other.image
            && self.network == other.network
            && self.memory_mb == other.memory_mb
            && self.cpus == other.cpus
            && self.pids == other.pids
            && self.uid == other.uid
            && self.gid == other.gid
            && self.workspace == other.workspace
            && self.blocks == other.blocks
            && self.synced == other.synced
    }

    /// Whether the network is switched per block (connect/disconnect) rather than fixed at
    /// creation.
    pub fn switchable_network(&self) -> bool {
        self.synced
    }

    /// The `user` string for execs that run block code.
    pub fn block_user(&self) -> String {
        format!("{}:{}", self.uid, self.gid)
    }

    /// The container-create body: every hardening default lives here.
    pub fn container_body(&self, session: &str, owner: &str) -> ContainerCreateBody {
        let memory = (self.memory_mb * 1024 * 1024) as i64;
        // nproc counts a uid's processes host-wide: a real user's own processes need room too.
        let nproc = if self.host_user {
            self.pids + count_host_processes(self.uid) + 64
        } else {
            self.pids
        };
        let labels = HashMap::from([
            (LABEL_SESSION.to_owned(), session.to_owned()),
            (LABEL_OWNER.to_owned(), owner.to_owned()),
        ]);
        let mut tmpfs = HashMap::from([(
            "/tmp".to_owned(),
            format!("rw,noexec,nosuid,nodev,size={TMP_SIZE_MB}m,mode=1777"),
        )]);
        if self.synced {
            tmpfs.insert(
                BLOCKS.to_owned(),
                format!(
                    "rw,noexec,nosuid,nodev,size={BLOCKS_SIZE_MB}m,uid={},gid={},mode=0700",
                    self.uid, self.gid
                ),
            );
        }
        // A switchable sandbox is created on the network and taken off it before it starts.
        let online = self.network || self.switchable_network();
        let ulimit = |name: &str, v: i64| ResourcesUlimits {
            name: Some(name.to_owned()),
            soft: Some(v),
            hard: Some(v),
        };
        ContainerCreateBody {
            image: Some(self.image.clone()),
            hostname: Some("sandbox".into()),
            user: Some(format!("{}:{}", self.main_uid, self.main_uid)),
            entrypoint: Some(vec!["sleep".into()]),
            cmd: Some(vec!["2147483647".into()]),
            env: Some(Vec::new()),
            working_dir: Some(WORKSPACE.into()),
            network_disabled: Some(!online),
            labels: Some(labels),
            tty: Some(false),
            open_stdin: Some(false),
            attach_stdin: Some(false),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            host_config: Some(HostConfig {
                binds: Some(self.binds()).filter(|b| !b.is_empty()),
                mounts: Some(self.typed_mounts()).filter(|m| !m.is_empty()),
                network_mode: Some(if online { "bridge" } else { "none" }.into()),
                readonly_rootfs: Some(true),
                tmpfs: Some(tmpfs),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                memory: Some(memory),
                memory_swap: Some(memory),
                nano_cpus: Some((self.cpus * 1e9) as i64),
                pids_limit: Some(self.pids as i64),
                ulimits: Some(vec![
                    ulimit("nproc", nproc as i64),
                    ulimit("nofile", NOFILE),
                    ulimit("fsize", FSIZE_BYTES),
                ]),
                init: Some(true),
                privileged: Some(false),
                auto_remove: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

impl SandboxSpec {
    /// The two mounts: the workspace (the only writable one) and proctor's block files
    /// (read-only).
    fn mount_list(&self) -> [(&Path, &str, bool); 2] {
        [
            (self.workspace.as_path(), WORKSPACE, false),
            (self.blocks.as_path(), BLOCKS, true),
        ]
    }

    /// A mount as a bind string with `z`, so SELinux hosts relabel it for the container (a no-op
    /// elsewhere); `None` when the path cannot be written as `src:dst:opts`.
    fn bind_string(src: &Path, dst: &str, read_only: bool) -> Option<String> {
        let src = src.to_str()?;
        let mode = if read_only { "ro" } else { "rw" };
        (!src.contains(':') && !src.contains(',')).then(|| format!("{src}:{dst}:{mode},z"))
    }

    fn binds(&self) -> Vec<String> {
        if self.synced {
            return Vec::new();
        }
        self.mount_list()
            .iter()
            .filter_map(|(src, dst, ro)| Self::bind_string(src, dst, *ro))
            .collect()
    }

    /// Typed mounts, for paths a bind string cannot carry.
    fn typed_mounts(&self) -> Vec<Mount> {
        if self.synced {
            // The workspace: an anonymous volume on the engine's host, removed with the
            // container. Nothing of this machine.
            return vec![Mount {
                target: Some(WORKSPACE.into()),
                typ: Some(MountType::VOLUME),
                read_only: Some(false),
                ..Default::default()
            }];
        }
        self.mount_list()
            .iter()
            .filter(|(src, dst, ro)| Self::bind_string(src, dst, *ro).is_none())
            .map(|(src, dst, ro)| Mount {
                target: Some((*dst).into()),
                source: Some(src.to_string_lossy().into_owned()),
                typ: Some(MountType::BIND),
                read_only: Some(*ro),
                ..Default::default()
            })
            .collect()
    }
}

/// Whether this process runs as root (then it can hand the workspace to a sandbox uid).
pub fn host_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A stable uid for a session, far from real users: 200000..=259999.
pub fn session_uid(session: &str) -> u32 {
    let digest = Sha256::digest(session.as_bytes());
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    200_000 + n % 60_000
}

fn count_host_processes(uid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| e.metadata().map(|m| m.uid() == uid).unwrap_or(false))
        .count() as u64
}

/// How a language is run: the interpreter's argv and the file extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    /// argv before the file path.
    pub argv: Vec<String>,
    /// File extension for unnamed blocks.
    pub extension: String,
}

/// The interpreter for `language`: the team's `[executor.interpreters]` first, then the built-ins
/// (python, bash, sh).
pub fn interpreter(
    language: &str,
    extra: &std::collections::BTreeMap<String, Vec<String>>,
) -> Result<Interpreter, ExecError> {
    let lang = language.trim().to_ascii_lowercase();
    let ext = |l: &str| -> String {
        match l {
            "python" | "python3" | "py" => "py",
            "bash" | "sh" | "shell" | "zsh" => "sh",
            "javascript" | "js" | "node" => "js",
            "ruby" | "rb" => "rb",
            "perl" | "pl" => "pl",
            other => other,
        }
        .to_owned()
    };
    if let Some(argv) = extra.get(&lang).filter(|a| !a.is_empty()) {
        return Ok(Interpreter {
            argv: argv.clone(),
            extension: ext(&lang),
        });
    }
    let argv: &[&str] = match lang.as_str() {
        "python" | "python3" | "py" => &["python3"],
        "bash" => &["bash"],
        "sh" | "shell" => &["sh"],
        _ => return Err(ExecError::UnknownLanguage(language.to_owned())),
    };
    Ok(Interpreter {
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        extension: ext(&lang),
    })
}

/// Longest file name component a Linux file system stores (`NAME_MAX`).
const MAX_NAME_BYTES: usize = 255;
/// Longest hint accepted (the interpreter gets `/workspace/<hint>`, well under `PATH_MAX`).
const MAX_PATH_BYTES: usize = 1024;

/// Whether a failed write is about the name itself (too long, not a directory where one is
/// needed, ...): then the block is refused, and the session goes on.
fn is_name_error(e: &std::io::Error) -> bool {
    // ENOTDIR, EISDIR, EINVAL, ENAMETOOLONG, ELOOP, EILSEQ.
    matches!(e.raw_os_error(), Some(20 | 21 | 22 | 36 | 40 | 84))
}

/// Where a block's code is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockFile {
    /// The `# filename:` hint, relative to the workspace: the user asked for this file.
    InWorkspace(PathBuf),
    /// `tmp_code_<hash>.<ext>` in proctor's own read-only block directory: never in the workspace.
    Unnamed(String),
}

/// Resolves where a block's code is written: the hint (relative, inside the workspace, not through
/// a symlink that leaves it) or, without one, `tmp_code_<hash>.<ext>` outside the workspace.
pub fn block_path(
    workspace: &Path,
    filename: Option<&str>,
    code: &str,
    extension: &str,
) -> Result<BlockFile, ExecError> {
    let Some(hint) = filename.map(str::trim).filter(|h| !h.is_empty()) else {
        let digest = Sha256::digest(code.as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        return Ok(BlockFile::Unnamed(format!("tmp_code_{hex}.{extension}")));
    };
    let refuse = |why: &str| ExecError::BadFilename {
        filename: crate::text_safety::visible_line(hint).into_owned(),
        why: why.to_owned(),
    };
    if crate::text_safety::has_hidden(hint) {
        // A name that shows differently from what it is (escapes, bidi, zero-width, newlines).
        return Err(refuse(
            "holds control or invisible characters (shown as markers); use a plain file name",
        ));
    }
    if hint.starts_with('/') || hint.starts_with('\\') || hint.starts_with('~') {
        return Err(refuse(
            "absolute paths are not allowed; use a path relative to the workspace",
        ));
    }
    let mut rel = PathBuf::new();
    for comp in Path::new(hint).components() {
        match comp {
            Component::Normal(c) => rel.push(c),
            Component::CurDir => {}
            Component::ParentDir => return Err(refuse("`..` would leave the workspace")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse("absolute paths are not allowed"));
            }
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(refuse("names no file"));
    }
    // What the host cannot store is this block's problem, not the sandbox's.
    if rel
        .components()
        .any(|c| c.as_os_str().len() > MAX_NAME_BYTES)
    {
        return Err(refuse(&format!(
            "a part of the path is longer than {MAX_NAME_BYTES} bytes, more than a file system allows"
        )));
    }
    if rel.as_os_str().len() > MAX_PATH_BYTES {
        return Err(refuse(&format!("is longer than {MAX_PATH_BYTES} bytes")));
    }
    let root = workspace
        .canonicalize()
        .map_err(|e| ExecError::Other(format!("cannot resolve workspace: {e}")))?;
    // Every existing prefix must resolve inside the workspace (a symlink may not lead out).
    let mut probe = root.clone();
    for comp in rel.components() {
        probe.push(comp);
        match std::fs::symlink_metadata(&probe) {
            Ok(_) => {
                let real = probe
                    .canonicalize()
                    .map_err(|_| refuse("is a dangling symlink"))?;
                if !real.starts_with(&root) {
                    return Err(refuse("a symlink leads outside the workspace"));
                }
            }
            Err(_) => break,
        }
    }
    if std::fs::metadata(root.join(&rel)).is_ok_and(|m| m.is_dir()) {
        return Err(refuse("is a directory"));
    }
    Ok(BlockFile::InWorkspace(rel))
}

/// Writes an unnamed block's code into proctor's block directory (never mounted writable), readable
/// by the sandbox user.
pub fn write_unnamed(spec: &SandboxSpec, name: &str, code: &str) -> Result<(), ExecError> {
    use std::os::unix::fs::PermissionsExt;
    let path = spec.blocks.join(name);
    let io = |e: std::io::Error| ExecError::Other(format!("cannot write {}: {e}", path.display()));
    std::fs::write(&path, code).map_err(io)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).map_err(io)
}

/// `open(2)` flags std does not name (Linux values; arm and powerpc differ from the rest).
#[cfg(any(
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "powerpc",
    target_arch = "powerpc64"
))]
mod oflags {
    pub const NOFOLLOW: i32 = 0o100000;
    pub const DIRECTORY: i32 = 0o40000;
}
#[cfg(not(any(
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "powerpc",
    target_arch = "powerpc64"
)))]
mod oflags {
    pub const NOFOLLOW: i32 = 0o400000;
    pub const DIRECTORY: i32 = 0o200000;
}

/// A path that names `name` inside the open directory `dir` (like `openat`), through `/proc`.
fn at(dir: &std::fs::File, name: &std::ffi::OsStr) -> PathBuf {
    use std::os::fd::AsRawFd;
    Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
}

/// Opens a directory without following a symlink in its last component (and without blocking
/// on a FIFO planted in its place).
fn open_dir(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(oflags::NOFOLLOW | oflags::DIRECTORY)
        .open(path)
}

/// Opens `rel` under `root` one component at a time, never following a symlink.
fn open_walk(root: &Path, rel: &Path) -> std::io::Result<std::fs::File> {
    let mut dir = open_dir(root)?;
    for comp in rel.components() {
        if let Component::Normal(c) = comp {
            dir = open_dir(&at(&dir, c))?;
        }
    }
    Ok(dir)
}

/// Writes the block's code at `rel` under the workspace, owned by the sandbox user.
///
/// The sandbox user controls the workspace and proctor may run as root, so nothing here follows a
/// symlink the code planted: directories are opened one component at a time with `O_NOFOLLOW`
/// (a symlinked directory is allowed only when it resolves inside the workspace), the code goes
/// to a fresh file created with `O_EXCL` next to the target and is renamed over it (replacing a
/// symlink instead of writing through it, never opening a FIFO), and ownership is set on the open
/// file, not on a path.
pub fn write_block(spec: &SandboxSpec, rel: &Path, code: &str) -> Result<(), ExecError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    let root = &spec.workspace;
    // Named as the code sees it: the host's paths stay out of messages the agent may read.
    let shown = format!("{WORKSPACE}/{}", rel.display());
    let io = |e: std::io::Error| {
        if is_name_error(&e) {
            ExecError::BadFilename {
                filename: crate::text_safety::visible_line(&rel.display().to_string()).into_owned(),
                why: format!("the host cannot write it: {e}"),
            }
        } else {
            ExecError::Other(format!("cannot write {shown}: {e}"))
        }
    };
    let refuse = |why: &str| ExecError::BadFilename {
        filename: crate::text_safety::visible_line(&rel.display().to_string()).into_owned(),
        why: why.to_owned(),
    };
    let root_owned = host_is_root();
    let chown = |f: &std::fs::File| -> std::io::Result<()> {
        if root_owned {
            std::os::unix::fs::fchown(f, Some(spec.uid), Some(spec.gid))?;
        }
        Ok(())
    };
    let name = rel.file_name().ok_or_else(|| refuse("names no file"))?;
    let mut dir = open_dir(root).map_err(io)?;
    // Where `dir` is, as a real path (for resolving a symlinked directory inside the workspace).
    let mut here = root.clone();
    for comp in rel.parent().unwrap_or(Path::new("")).components() {
        let Component::Normal(c) = comp else {
            continue;
        };
        let sub = at(&dir, c);
        match std::fs::symlink_metadata(&sub) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&sub).map_err(io)?;
                let made = open_dir(&sub).map_err(io)?;
                chown(&made).map_err(io)?;
                dir = made;
                here.push(c);
            }
            Err(e) => return Err(io(e)),
            Ok(m) if m.file_type().is_symlink() => {
                let real = here
                    .join(c)
                    .canonicalize()
                    .map_err(|_| refuse("is a dangling symlink"))?;
                let inner = real
                    .strip_prefix(root)
                    .map_err(|_| refuse("a symlink leads outside the workspace"))?
                    .to_path_buf();
                dir = open_walk(root, &inner).map_err(|_| {
                    refuse("a symlink leads outside the workspace or to no directory")
                })?;
                here = real;
            }
            Ok(m) if m.is_dir() => {
                dir = open_dir(&sub).map_err(io)?;
                here.push(c);
            }
            Ok(_) => return Err(refuse("a path component is not a directory")),
        }
    }
    let target = at(&dir, name);
    let mut mode = 0o644;
    match std::fs::symlink_metadata(&target) {
        Ok(m) if m.is_dir() => return Err(refuse("is a directory")),
        Ok(m) if m.is_file() => mode = m.permissions().mode() & 0o7777,
        Ok(m) if m.file_type().is_symlink() => {}
        Ok(m) => {
            use std::os::unix::fs::FileTypeExt;
            let ft = m.file_type();
            let what = if ft.is_fifo() {
                "a FIFO"
            } else if ft.is_socket() {
                "a socket"
            } else {
                "a device"
            };
            return Err(refuse(&format!(
                "exists as {what}, not a regular file; remove it or pick another name"
            )));
        }
        Err(_) => {}
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp_name = format!(".proctor-write-{}-{nanos:x}", std::process::id());
    let tmp = at(&dir, std::ffi::OsStr::new(&tmp_name));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(oflags::NOFOLLOW)
        .open(&tmp)
        .map_err(io)?;
    let written = (|| {
        file.write_all(code.as_bytes())?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        chown(&file)?;
        std::fs::rename(&tmp, &target)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(())
}

/// The block's path as the container sees it.
pub fn container_path(file: &BlockFile) -> String {
    match file {
        BlockFile::InWorkspace(rel) => format!("{WORKSPACE}/{}", rel.display()),
        BlockFile::Unnamed(name) => format!("{BLOCKS}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_filenames_are_refused() {
        let ws = tempfile::tempdir().unwrap();
        for bad in [
            "../x.py",
            "a/../../x.py",
            "/etc/passwd",
            "~/x",
            "a/\0b",
            "x\u{1b}[2J.py",
            "tx\u{202E}yp.exe",
            "a\u{200B}.py",
            "a\nb.py",
            "a\rb.py",
            "tag\u{E0041}.py",
            &format!("{}.py", "a".repeat(300)),
            &format!("{}/x.py", "d/".repeat(600)),
        ] {
            let err = block_path(ws.path(), Some(bad), "", "py").unwrap_err();
            assert!(
                matches!(err, ExecError::BadFilename { .. }),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn symlink_out_of_the_workspace_is_refused_but_inner_paths_are_fine() {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), ws.path().join("out")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", ws.path().join("pw")).unwrap();
        assert!(block_path(ws.path(), Some("out/x.py"), "", "py").is_err());
        assert!(block_path(ws.path(), Some("pw"), "", "py").is_err());
        let ok = block_path(ws.path(), Some("./src/main.py"), "", "py").unwrap();
        assert_eq!(ok, BlockFile::InWorkspace(PathBuf::from("src/main.py")));
    }

    fn spec_for(ws: &Path) -> SandboxSpec {
        let meta = std::fs::metadata(ws).unwrap();
        SandboxSpec {
            image: "x".into(),
            network: false,
            memory_mb: 64,
            cpus: 1.0,
            pids: 64,
            host_user: true,
            uid: meta.uid(),
            gid: meta.gid(),
            main_uid: 65534,
            workspace: ws.canonicalize().unwrap(),
            blocks: ws.canonicalize().unwrap(),
            synced: false,
        }
    }

    #[test]
    fn writes_replace_planted_symlinks_and_refuse_fifos() {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "original").unwrap();
        let spec = spec_for(ws.path());
        std::os::unix::fs::symlink(&victim, ws.path().join("tmp_code_x.py")).unwrap();
        write_block(&spec, Path::new("tmp_code_x.py"), "print(1)").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "original");
        let written = ws.path().join("tmp_code_x.py");
        assert!(
            !std::fs::symlink_metadata(&written)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&written).unwrap(), "print(1)");
        // A directory symlink leading out is refused; one inside the workspace is followed.
        std::os::unix::fs::symlink(outside.path(), ws.path().join("out")).unwrap();
        assert!(write_block(&spec, Path::new("out/x.py"), "").is_err());
        assert!(!outside.path().join("x.py").exists());
        std::fs::create_dir(ws.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", ws.path().join("alias")).unwrap();
        write_block(&spec, Path::new("alias/new/y.py"), "y").unwrap();
        assert_eq!(
            std::fs::read_to_string(ws.path().join("real/new/y.py")).unwrap(),
            "y"
        );
        // A FIFO in the file's place is refused without opening it (which would block).
        let fifo = ws.path().join("f.py");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let err = write_block(&spec, Path::new("f.py"), "x").unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        // Nothing is left behind.
        let names: Vec<_> = std::fs::read_dir(ws.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".proctor-write"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn unnamed_blocks_get_a_content_hash_name() {
        let ws = tempfile::tempdir().unwrap();
        let a = block_path(ws.path(), None, "print(1)", "py").unwrap();
        let b = block_path(ws.path(), None, "print(2)", "py").unwrap();
        assert_ne!(a, b);
        let BlockFile::Unnamed(name) = &a else {
            panic!("{a:?}")
        };
        assert!(name.starts_with("tmp_code_") && name.ends_with(".py"));
        assert!(container_path(&a).starts_with("/proctor/tmp_code_"));
    }

    #[test]
    fn interpreters_default_and_configurable() {
        let mut extra = std::collections::BTreeMap::new();
        assert_eq!(interpreter("Python", &extra).unwrap().argv, ["python3"]);
        assert_eq!(interpreter("bash", &extra).unwrap().extension, "sh");
        assert!(matches!(
            interpreter("node", &extra),
            Err(ExecError::UnknownLanguage(_))
        ));
        extra.insert("node".into(), vec!["node".into()]);
        let node = interpreter("node", &extra).unwrap();
        assert_eq!(
            (node.argv, node.extension),
            (vec!["node".into()], "js".into())
        );
    }
}
