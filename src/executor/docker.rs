//! The Docker sandbox executor: one hardened, labelled container per session, an in-sandbox launcher
//! that starts each approved block as a fresh process, and the cleanup, orphan sweep and doctor
//! checks around them. Every Docker call has a timeout; every failure says what to fix.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::query_parameters::ListContainersOptionsBuilder;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::backend::{Chunk, ProcessSpec, SandboxBackend, SandboxStream, run_command};
pub use super::docker_backend::CALL_TIMEOUT;
use super::docker_backend::{DockerBackend, call, remove_container};
use super::engine_host::{self, EngineHost, EngineHostError};
use super::image::{absent_image_fix, image_present};
use super::launcher::{
    DEAD_AFTER, ExitReport, Frame, LaunchError, Launcher, ReattachError, Relink,
};
use super::output::{OutputCap, Sanitizer};
use super::sandbox::{
    BlockFile, LABEL_OWNER, LABEL_SESSION, SandboxSpec, WORKSPACE, block_path, container_path,
    interpreter, write_block, write_unnamed,
};
use super::sync;
use super::{ExecError, ExecEvent, ExecOutcome, ExecRequest, Executor};
use crate::protocol::StreamKind;
use crate::workspace::snapshot::WalkOptions;
use crate::workspace::usage::{Check, DiskWatch};
use crate::workspace::{ChangeTracker, HostTracker};

/// Timeout of the first contact with the daemon.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long past a block's deadline the host waits for the launcher before giving up on it.
const BACKSTOP: Duration = Duration::from_secs(4);
/// How long past a block's deadline the host kills the block's processes itself, should the
/// launcher be too starved of CPU to do it.
const HOST_KILL_GRACE: Duration = Duration::from_millis(500);
/// `LauncherEnd::Lost::why` when the host-side deadline kill ended the block (and the launcher).
const HOST_KILLED: &str = "killed from the host at the deadline";
/// Longest a block's file write may take before the block is refused.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a running block's disk use is checked (a filesystem stat; the workspace is walked
/// only when the filesystem grew past the limit).
const DISK_CHECK: Duration = Duration::from_millis(100);
/// How long a launcher stream cut mid-block (dropped connection, dead link) is retried before the
/// block is reported interrupted (the launcher keeps the block running for 60 s after a cut).
pub const STREAM_DEADLINE: Duration = Duration::from_secs(20);
/// The note of a cancelled block (replaced when the cancel was the workspace limit's).
const CANCELLED_NOTE: &str =
    "[proctor: cancelled; the block and every process it started were killed]";

/// The sandbox [`Executor`]: the launcher protocol, deadlines, output caps and workspace change
/// lists over a [`SandboxBackend`] (Docker by default). Connects lazily; cheap to share behind an
/// `Arc`.
pub struct SandboxExecutor {
    inner: Arc<Inner>,
}

/// The executor on a Docker engine (the only backend so far).
pub type DockerExecutor = SandboxExecutor;

struct Inner {
    /// Where sandboxes run.
    backend: Arc<dyn SandboxBackend>,
    sessions: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Sandbox>>>>>,
    /// Container ids per session, readable without waiting for a running block.
    containers: Mutex<HashMap<String, Vec<String>>>,
    owner: String,
    use_launcher: std::sync::atomic::AtomicBool,
    /// Per session: proctor's directory of unnamed blocks' files (mounted read-only).
    scratch: Mutex<HashMap<String, Arc<tempfile::TempDir>>>,
    /// Per session: the workspace change tracker.
    trackers: Mutex<HashMap<String, Arc<Mutex<HostTracker>>>>,
    /// How long a cut launcher stream is retried before the block is reported interrupted.
    stream_deadline: Duration,
}

/// A session's live container.
struct Sandbox {
    id: String,
    spec: SandboxSpec,
    launcher: Option<Launcher>,
    /// The image cannot run the launcher: one exec per block.
    exec_per_block: bool,
    /// A synced sandbox (remote engine): its workspace as last listed (`None`: not pushed yet).
    listing: Option<sync::Listing>,
    /// A synced sandbox's workspace watch (for `workspace_limit_mb`).
    disk_watch: Option<sync::RemoteDiskWatch>,
}

/// A block in a synced sandbox: its file goes in through the launcher, and its network is
/// switched on for it alone when the human allowed it.
struct SyncedBlock<'a> {
    file: &'a BlockFile,
    code: &'a str,
    /// Permission bits of a named block's file (as written locally).
    mode: u32,
    online: bool,
    /// `workspace_limit_mb` in bytes, and where the watch records the growth past it.
    limit: u64,
    over: Arc<Mutex<Option<u64>>>,
}

/// How a block ended when run through the launcher.
enum LauncherEnd {
    Done(ExecOutcome),
    /// The launcher vanished mid-block; `started` says whether the block produced anything.
    Lost {
        collector: Collector,
        why: String,
        started: bool,
    },
    /// The launcher stopped answering past the deadline.
    Unresponsive(Collector),
    /// The stream was cut mid-block and could not be attached again before the stream deadline
    /// (the engine is unreachable); what arrived was streamed.
    Cut {
        why: String,
    },
}

impl SandboxExecutor {
    /// A new executor on the Docker engine `DOCKER_HOST` names (checked now); connects on the
    /// first block.
    pub fn new() -> Result<Self, ExecError> {
        Ok(Self::for_engine(EngineHost::from_environment()?))
    }

    /// A new executor on the Docker engine `engine`; connects on the first block.
    pub fn for_engine(engine: EngineHost) -> Self {
        Self::with_backend(Arc::new(DockerBackend::new(engine)))
    }

    /// A new executor whose sandboxes `backend` runs.
    pub fn with_backend(backend: Arc<dyn SandboxBackend>) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                sessions: Mutex::new(HashMap::new()),
                containers: Mutex::new(HashMap::new()),
                owner: owner_id(),
                use_launcher: std::sync::atomic::AtomicBool::new(true),
                scratch: Mutex::new(HashMap::new()),
                trackers: Mutex::new(HashMap::new()),
                stream_deadline: STREAM_DEADLINE,
            }),
        }
    }

    /// Gives a cut launcher stream `deadline` to come back (instead of [`STREAM_DEADLINE`]) before
    /// the block is reported interrupted. For tests.
    pub fn with_stream_deadline(mut self, deadline: Duration) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.stream_deadline = deadline;
        }
        self
    }

    /// Runs every block with its own `docker exec` instead of the in-sandbox launcher (slower; the
    /// path used automatically for images without `python3`). For benchmarks and tests.
    pub fn with_exec_per_block(self) -> Self {
        self.inner
            .use_launcher
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self
    }

    /// The container id currently serving `session`, if any.
    pub fn container_of(&self, session: &str) -> Option<String> {
        lock(&self.inner.containers)
            .get(session)
            .and_then(|ids| ids.last().cloned())
    }

    /// Stops and removes every sandbox of this executor (call on exit or SIGTERM). Bounded: gives
    /// up after 10 s.
    pub async fn shutdown_all(&self) {
        let all: Vec<String> = {
            let mut map = lock(&self.inner.containers);
            map.drain().flat_map(|(_, ids)| ids).collect()
        };
        lock(&self.inner.sessions).clear();
        if all.is_empty() {
            return;
        }
        let backend = &self.inner.backend;
        let removals = all.iter().map(|id| backend.destroy(id));
        let _ = tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(removals))
            .await;
    }

    /// [`shutdown_all`](Self::shutdown_all) for synchronous callers (signal handlers, `Drop`): runs
    /// on its own thread and runtime, at most 10 s.
    pub fn shutdown_all_blocking(&self) {
        let all: Vec<String> = {
            let mut map = lock(&self.inner.containers);
            map.drain().flat_map(|(_, ids)| ids).collect()
        };
        if all.is_empty() {
            return;
        }
        let backend = self.inner.backend.detached();
        let worker = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let removals = all.iter().map(|id| backend.destroy(id));
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    futures::future::join_all(removals),
                )
                .await;
            });
        });
        let _ = worker.join();
    }
}

impl Drop for SandboxExecutor {
    fn drop(&mut self) {
        if Arc::strong_count(&self.inner) == 1 {
            self.shutdown_all_blocking();
        }
    }
}

impl Executor for SandboxExecutor {
    fn run(
        &self,
        request: ExecRequest,
        cancel: CancellationToken,
    ) -> BoxStream<'static, Result<ExecEvent, ExecError>> {
        let (tx, rx) = tokio::sync::mpsc::channel(32);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            // Our own token: a consumer that goes away cancels the block.
            let cancel = cancel.child_token();
            let out = Out {
                tx: tx.clone(),
                cancel: cancel.clone(),
            };
            let end = match inner.run_block(request, cancel, &out).await {
                Ok(outcome) => Ok(ExecEvent::Finished(outcome)),
                Err(e) => {
                    if matches!(e, ExecError::Docker(_)) {
                        // Reconnect next time: the daemon may have restarted.
                        inner.backend.reset().await;
                    }
                    Err(e)
                }
            };
            let _ = tx.send(end).await;
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
            .boxed()
    }

    fn shutdown(&self, session: &str) -> BoxFuture<'static, ()> {
        let inner = self.inner.clone();
        let session = session.to_owned();
        Box::pin(async move {
            let ids = lock(&inner.containers).remove(&session).unwrap_or_default();
            let slot = lock(&inner.sessions).remove(&session);
            lock(&inner.trackers).remove(&session);
            // Removed once the containers that mount it are gone.
            let _scratch = lock(&inner.scratch).remove(&session);
            if let Some(slot) = slot {
                // Drop the launcher first if no block holds the slot.
                if let Ok(mut guard) = slot.try_lock() {
                    guard.take();
                }
            }
            for id in ids {
                inner.backend.destroy(&id).await;
            }
        })
    }
}

/// Sends events to the consumer; a consumer that hung up cancels the block.
struct Out {
    tx: tokio::sync::mpsc::Sender<Result<ExecEvent, ExecError>>,
    cancel: CancellationToken,
}

impl Out {
    async fn send(&self, event: ExecEvent) {
        if self.tx.send(Ok(event)).await.is_err() {
            self.cancel.cancel();
        }
    }
}

/// Collects a block's output: sanitised per stream, capped, streamed as it arrives.
struct Collector {
    out_s: Sanitizer,
    err_s: Sanitizer,
    cap: OutputCap,
    limit_kb: u64,
}

impl Collector {
    fn new(limit_kb: u64) -> Self {
        Self {
            out_s: Sanitizer::default(),
            err_s: Sanitizer::default(),
            cap: OutputCap::new((limit_kb * 1024) as usize),
            limit_kb,
        }
    }

    async fn push(&mut self, stream: StreamKind, bytes: &[u8], out: &Out) {
        let text = match stream {
            StreamKind::Stdout => self.out_s.push(bytes),
            StreamKind::Stderr => self.err_s.push(bytes),
        };
        self.emit(stream, &text, out).await;
    }

    async fn emit(&mut self, stream: StreamKind, text: &str, out: &Out) {
        if let Some(kept) = self.cap.push(text) {
            out.send(ExecEvent::Output { stream, text: kept }).await;
        }
    }

    async fn flush(&mut self, out: &Out) {
        let tail = self.out_s.finish();
        self.emit(StreamKind::Stdout, &tail, out).await;
        let tail = self.err_s.finish();
        self.emit(StreamKind::Stderr, &tail, out).await;
    }

    /// The outcome, with notes naming a timeout, OOM, cancellation, truncation or failure.
    fn finish(self, report: &ExitReport, elapsed: Duration, req: &ExecRequest) -> ExecOutcome {
        let mut cap = self.cap;
        cap.count_dropped(report.total.saturating_sub(report.kept));
        let truncated = cap.truncated();
        let dropped = cap.dropped();
        let mut output = cap.into_text();
        let mut note = |s: String| {
            if !output.is_empty() && !output.ends_with('\n') {
                output.push('\n');
            }
            output.push_str(&s);
            output.push('\n');
        };
        if let Some(err) = &report.spawn_error {
            note(format!(
                "[proctor: could not start the {} interpreter: {err}]",
                req.language
            ));
        }
        if truncated {
            note(format!(
                "[proctor: output truncated: kept the first {} KiB, dropped {dropped} bytes]",
                self.limit_kb
            ));
        }
        if report.timed_out {
            note(format!(
                "[proctor: timed out after {} s; the block and every process it started were killed]",
                req.policy.timeout_s
            ));
        } else if report.cancelled {
            note(CANCELLED_NOTE.into());
        } else if report.oom {
            note(format!(
                "[proctor: killed: out of memory (the sandbox limit is {} MiB)]",
                req.policy.memory_mb
            ));
        } else if report.code == -9 {
            note("[proctor: killed (SIGKILL)]".into());
        }
        let exit_code = if report.code < 0 {
            128 - report.code
        } else {
            report.code
        };
        ExecOutcome {
            exit_code,
            timed_out: report.timed_out,
            truncated,
            oom: report.oom,
            cancelled: report.cancelled && !report.timed_out,
            duration_ms: elapsed.as_millis() as u64,
            output,
            workspace_limit_exceeded: false,
            changes: None,
        }
    }
}

impl Inner {
    fn slot(&self, session: &str) -> Arc<tokio::sync::Mutex<Option<Sandbox>>> {
        lock(&self.sessions)
            .entry(session.to_owned())
            .or_default()
            .clone()
    }

    async fn run_block(
        self: &Arc<Self>,
        req: ExecRequest,
        cancel: CancellationToken,
        out: &Out,
    ) -> Result<ExecOutcome, ExecError> {
        let interp = interpreter(&req.language, &req.policy.interpreters)?;
        let blocks = self.blocks_dir(&req.session)?;
        // On a remote engine nothing of this machine is mounted: the workspace travels through
        // the launcher, and a block's network is switched on the session's own sandbox.
        let synced = self.backend.is_remote();
        let one_block_network = req.allow_network && !req.policy.network;
        let ephemeral = one_block_network && !synced;
        let spec =
            SandboxSpec::for_request(&req, req.policy.network || ephemeral, &blocks, synced)?;
        let resolve = || {
            block_path(
                &spec.workspace,
                req.filename.as_deref(),
                &req.code,
                &interp.extension,
            )
        };
        // Refuse a bad filename at once, before touching Docker.
        resolve()?;
        self.backend.ready().await?;
        // One block at a time per session, including its file write and any network block.
        let slot = self.slot(&req.session);
        let mut guard = slot.lock().await;
        // Resolve again now that no block of this session runs: no symlink can appear meanwhile.
        let file = resolve()?;
        // The workspace as it is before the block (and before its `# filename:` file is written).
        let tracker = self.tracker(&req.session, &spec.workspace, req.user_workspace);
        let tracked = {
            let tracker = tracker.clone();
            let before = tokio::task::spawn_blocking(move || lock(&tracker).before()).await;
            match before {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::warn!(%e, "no snapshot before the block");
                    false
                }
                Err(e) => {
                    tracing::warn!(%e, "snapshot task failed");
                    false
                }
            }
        };
        // Off the async runtime and bounded: a file the code planted must never hang proctor.
        let write = {
            let (spec, file, code) = (spec.clone(), file.clone(), req.code.clone());
            tokio::task::spawn_blocking(move || match &file {
                BlockFile::InWorkspace(rel) => write_block(&spec, rel, &code),
                BlockFile::Unnamed(name) => write_unnamed(&spec, name, &code),
            })
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(result)) => result?,
            Ok(Err(e)) => return Err(ExecError::Other(format!("writing the block failed: {e}"))),
            Err(_) => {
                return Err(ExecError::Other(format!(
                    "writing {} took longer than {} s; the block was not run",
                    container_path(&file),
                    WRITE_TIMEOUT.as_secs()
                )));
            }
        }
        let mut argv = interp.argv.clone();
        argv.push(container_path(&file));
        if synced {
            let mode = match &file {
                BlockFile::InWorkspace(rel) => std::fs::symlink_metadata(spec.workspace.join(rel))
                    .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
                    .unwrap_or(0o644),
                BlockFile::Unnamed(_) => 0o644,
            };
            let limit_mb = req.policy.workspace_limit_mb.max(1);
            let block = SyncedBlock {
                file: &file,
                code: &req.code,
                mode,
                online: one_block_network,
                limit: limit_mb.saturating_mul(1 << 20),
                over: Arc::new(Mutex::new(None)),
            };
            let mut outcome = self
                .run_synced(&mut guard, &req, &spec, argv, &block, cancel, out)
                .await?;
            let grown = *lock(&block.over);
            if let Some(grown) = grown {
                over_limit(&mut outcome, grown, limit_mb);
            }
            if tracked {
                let after = tokio::task::spawn_blocking(move || lock(&tracker).after()).await;
                match after {
                    Ok(Ok(delta)) => outcome.changes = Some(delta),
                    Ok(Err(e)) => tracing::warn!(%e, "no snapshot after the block"),
                    Err(e) => tracing::warn!(%e, "snapshot task failed"),
                }
            }
            return Ok(outcome);
        }

        // The workspace's disk use is watched while the block runs; past the limit it is killed.
        let limit_mb = req.policy.workspace_limit_mb.max(1);
        let block_cancel = cancel.child_token();
        let watch_done = CancellationToken::new();
        let over = Arc::new(Mutex::new(None));
        let watcher = tokio::spawn(watch_disk(
            spec.workspace.clone(),
            limit_mb.saturating_mul(1 << 20),
            block_cancel.clone(),
            watch_done.clone(),
            over.clone(),
        ));
        let result = if ephemeral {
            // Network for one block only: a throwaway container on the bridge network, same
            // workspace and limits; the session's own sandbox stays offline.
            let mut net_slot = None;
            let key = format!("{}-net", req.session);
            let result = self
                .run_in(
                    &mut net_slot,
                    &key,
                    &req,
                    &spec,
                    argv,
                    block_cancel,
                    out,
                    None,
                )
                .await;
            if let Some(sb) = net_slot.take() {
                drop(sb.launcher);
                self.forget(&key, &sb.id);
                self.backend.destroy(&sb.id).await;
            }
            result
        } else {
            let session = req.session.clone();
            self.run_in(
                &mut guard,
                &session,
                &req,
                &spec,
                argv,
                block_cancel,
                out,
                None,
            )
            .await
        };
        watch_done.cancel();
        let _ = watcher.await;
        let mut outcome = result?;
        let grown = *lock(&over);
        if let Some(grown) = grown {
            over_limit(&mut outcome, grown, limit_mb);
        }
        if tracked {
            let after = tokio::task::spawn_blocking(move || lock(&tracker).after()).await;
            match after {
                Ok(Ok(delta)) => outcome.changes = Some(delta),
                Ok(Err(e)) => tracing::warn!(%e, "no snapshot after the block"),
                Err(e) => tracing::warn!(%e, "snapshot task failed"),
            }
        }
        Ok(outcome)
    }

    /// This session's directory for unnamed blocks' files: private to proctor on the host
    /// (inside a 0700 temporary directory), readable by the sandbox user through its mount.
    fn blocks_dir(&self, session: &str) -> Result<std::path::PathBuf, ExecError> {
        use std::os::unix::fs::PermissionsExt;
        let mut map = lock(&self.scratch);
        if let Some(dir) = map.get(session) {
            let inner = dir.path().join("blocks");
            if inner.is_dir() {
                return Ok(inner);
            }
        }
        let made = (|| {
            let dir = tempfile::Builder::new()
                .prefix("proctor-blocks-")
                .tempdir()?;
            let inner = dir.path().join("blocks");
            std::fs::create_dir(&inner)?;
            std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o755))?;
            Ok::<_, std::io::Error>(dir)
        })()
        .map_err(|e| ExecError::Other(format!("cannot make a directory for block files: {e}")))?;
        let inner = made.path().join("blocks");
        map.insert(session.to_owned(), Arc::new(made));
        Ok(inner)
    }

    /// This session's change tracker (a new one when the workspace moved).
    fn tracker(
        &self,
        session: &str,
        root: &std::path::Path,
        user: bool,
    ) -> Arc<Mutex<HostTracker>> {
        let mut map = lock(&self.trackers);
        if let Some(t) = map.get(session)
            && lock(t).root() == root
        {
            return t.clone();
        }
        let opts = WalkOptions {
            search_parents: user,
            ..Default::default()
        };
        let t = Arc::new(Mutex::new(HostTracker::new(root, opts)));
        map.insert(session.to_owned(), t.clone());
        t
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_in(
        &self,
        slot: &mut Option<Sandbox>,
        key: &str,
        req: &ExecRequest,
        spec: &SandboxSpec,
        argv: Vec<String>,
        cancel: CancellationToken,
        out: &Out,
        synced: Option<&SyncedBlock<'_>>,
    ) -> Result<ExecOutcome, ExecError> {
        let mut started_sent = false;
        for attempt in 0..2 {
            self.prepare(slot, key, spec, out).await?;
            if !started_sent {
                out.send(ExecEvent::Started).await;
                started_sent = true;
            }
            let Some(sb) = slot.as_mut() else {
                return Err(ExecError::Other("the sandbox vanished".into()));
            };
            let (id, user) = (sb.id.clone(), sb.spec.block_user());
            let Some(launcher) = sb.launcher.as_mut() else {
                return self
                    .run_exec_per_block(slot, key, req, &argv, cancel, out)
                    .await;
            };
            if let Some(block) = synced {
                // A cut while the file goes in: attached again, the file is sent again (once).
                if let Err(e) = put_block(launcher, block).await {
                    if !launcher.recover().await {
                        return Err(e);
                    }
                    put_block(launcher, block).await?;
                }
                if block.online {
                    self.backend.set_network(&id, true).await?;
                }
                // The workspace is on the engine's disk: watched from inside the sandbox.
                if sb.disk_watch.as_ref().is_none_or(|w| w.is_finished()) {
                    let main_user = format!("{0}:{0}", sb.spec.main_uid);
                    sb.disk_watch =
                        match sync::RemoteDiskWatch::start(&*self.backend, &id, &main_user).await {
                            Ok(w) => Some(w),
                            Err(e) => {
                                tracing::warn!(%e, "no workspace watch in the sandbox");
                                None
                            }
                        };
                }
                if let Some(w) = sb.disk_watch.as_mut()
                    && !w.arm(block.limit, cancel.clone(), block.over.clone()).await
                {
                    sb.disk_watch = None;
                }
            }
            let Some(launcher) = sb.launcher.as_mut() else {
                return Err(ExecError::Other("the sandbox's launcher is gone".into()));
            };
            let t0 = Instant::now();
            let relay = format!("{0}:{0}", sb.spec.main_uid);
            let backstop = (&*self.backend, id.as_str(), user.as_str());
            let link = (relay.as_str(), self.stream_deadline);
            let end = run_with_launcher(launcher, req, &argv, &cancel, out, backstop, link).await;
            if let Some(w) = sb.disk_watch.as_mut()
                && !w.disarm().await
            {
                sb.disk_watch = None;
            }
            if synced.is_some_and(|b| b.online)
                && let Err(e) = self.backend.set_network(&id, false).await
            {
                // A sandbox that cannot be taken off the network does not stay.
                tracing::warn!(%e, "network stays on; removing the sandbox");
                *slot = None;
                self.forget(key, &id);
                self.backend.destroy(&id).await;
                return Err(e);
            }
            let Some(sb) = slot.as_mut() else {
                return Err(ExecError::Other("the sandbox vanished".into()));
            };
            match end {
                LauncherEnd::Done(outcome) => return Ok(outcome),
                LauncherEnd::Cut { why } => {
                    // The launcher kills the block itself a minute after the cut if nobody comes
                    // back; kill it now if the engine answers. The launcher is replaced before
                    // the next block either way.
                    let killed = tokio::time::timeout(
                        Duration::from_secs(5),
                        kill_block_processes(&*self.backend, &id, &user),
                    )
                    .await
                    .unwrap_or(false);
                    // (The transport's own words go to the log; the line says what to do.)
                    tracing::warn!(%why, killed, "launcher stream cut");
                    return Err(ExecError::Docker(format!(
                        "the connection to {} was cut during this block and \
                         did not come back within {} s; check that the engine is reachable \
                         (`proctor doctor`). The output up to the cut is kept; the block {}",
                        self.backend.describe(),
                        self.stream_deadline.as_secs(),
                        if killed {
                            "was killed"
                        } else {
                            "is killed in the sandbox a minute after the cut"
                        }
                    )));
                }
                LauncherEnd::Lost {
                    collector,
                    why,
                    started,
                } => {
                    sb.launcher = None;
                    let alive = self.backend.is_running(&sb.id).await;
                    if !alive {
                        let id = sb.id.clone();
                        *slot = None;
                        self.forget(key, &id);
                        self.backend.destroy(&id).await;
                        if !started && attempt == 0 {
                            // The container died between blocks: recreate it and run again.
                            continue;
                        }
                    } else if kill_block_processes(&*self.backend, &sb.id, &sb.spec.block_user())
                        .await
                        && let Ok(mut l) =
                            Launcher::start(&*self.backend, &sb.id, &sb.spec.block_user()).await
                    {
                        l.set_relink(self.relink(&sb.id, &sb.spec));
                        // (Block processes die first: none may touch the new launcher before it
                        // is non-dumpable.)
                        // Replace the launcher now, so the next block pays nothing.
                        sb.launcher = Some(l);
                    }
                    if why == HOST_KILLED {
                        let report = ExitReport {
                            code: -9,
                            timed_out: true,
                            ..Default::default()
                        };
                        let mut outcome = collector.finish(&report, t0.elapsed(), req);
                        outcome.output.push_str(
                            "[proctor: the sandbox launcher was too starved of CPU to stop the \
                             block at the deadline; proctor killed it from outside and replaced \
                             the launcher]\n",
                        );
                        return Ok(outcome);
                    }
                    // The exit code is unknown (-1); the note below says what happened.
                    let report = ExitReport::default();
                    let mut outcome = collector.finish(&report, t0.elapsed(), req);
                    outcome.exit_code = -1;
                    let what = if why == super::launcher::FORGED {
                        "the launcher's output stream carried a frame it did not send (the block \
                         tried to forge or corrupt it); the launcher was replaced and the block's \
                         processes were killed"
                    } else if why == super::launcher::GAP {
                        "part of this block's output was lost while the connection to the engine \
                         was cut (more than the launcher keeps); the launcher was replaced and the \
                         block's processes were killed"
                    } else if alive {
                        "the sandbox launcher died or stopped answering during this block (the \
                         block may have killed or stopped it); it was replaced and the block's \
                         processes were killed"
                    } else {
                        "the sandbox container stopped during this block; a new one will be created \
                         for the next block, on the same workspace"
                    };
                    tracing::warn!(%why, "launcher lost");
                    outcome.output.push_str(&format!("[proctor: {what}]\n"));
                    return Ok(outcome);
                }
                LauncherEnd::Unresponsive(collector) => {
                    if let Some(sb) = slot.take() {
                        self.forget(key, &sb.id);
                        drop(sb.launcher);
                        self.backend.destroy(&sb.id).await;
                    }
                    let report = ExitReport {
                        code: -9,
                        timed_out: !cancel.is_cancelled(),
                        cancelled: cancel.is_cancelled(),
                        ..Default::default()
                    };
                    let mut outcome = collector.finish(&report, t0.elapsed(), req);
                    outcome.output.push_str(
                        "[proctor: the sandbox stopped answering; it was removed and will be \
                         recreated on the same workspace]\n",
                    );
                    return Ok(outcome);
                }
            }
        }
        Err(ExecError::Docker(
            "the sandbox container keeps disappearing; check `docker ps -a` and the daemon logs"
                .into(),
        ))
    }

    /// Makes sure `slot` holds a running container built from `spec`, with a live launcher unless
    /// the image cannot run one.
    async fn prepare(
        &self,
        slot: &mut Option<Sandbox>,
        key: &str,
        spec: &SandboxSpec,
        out: &Out,
    ) -> Result<(), ExecError> {
        for attempt in 0..2 {
            if let Some(sb) = slot.as_ref()
                && !sb.spec.same_container(spec)
            {
                let id = sb.id.clone();
                *slot = None;
                self.forget(key, &id);
                self.backend.destroy(&id).await;
            }
            let sb = match slot {
                Some(sb) => sb,
                None => {
                    let id = self.create_container(key, spec, out).await?;
                    if spec.synced {
                        self.open_workspace_volume(key, &id).await?;
                    }
                    slot.insert(Sandbox {
                        id,
                        spec: spec.clone(),
                        launcher: None,
                        exec_per_block: !spec.synced
                            && !self.use_launcher.load(std::sync::atomic::Ordering::Relaxed),
                        listing: None,
                        disk_watch: None,
                    })
                }
            };
            if sb.launcher.as_ref().is_some_and(Launcher::is_finished) {
                sb.launcher = None;
                // Nothing of the block uid may be alive while the next launcher starts up.
                kill_block_processes(&*self.backend, &sb.id, &spec.block_user()).await;
            }
            if sb.launcher.is_some() {
                return Ok(());
            }
            if sb.exec_per_block {
                if self.backend.is_running(&sb.id).await {
                    return Ok(());
                }
            } else {
                match Launcher::start(&*self.backend, &sb.id, &spec.block_user()).await {
                    Ok(mut l) => {
                        l.set_relink(self.relink(&sb.id, spec));
                        sb.launcher = Some(l);
                        if spec.synced && sb.listing.is_none() {
                            push(sb, out).await?;
                        }
                        return Ok(());
                    }
                    Err(LaunchError::Unavailable(why)) if spec.synced && no_interpreter(&why) => {
                        return Err(ExecError::Image(format!(
                            "the image {} cannot run proctor's launcher ({why}); a sandbox on a \
                             remote engine needs python3 in the image: its workspace travels \
                             through the launcher",
                            spec.image
                        )));
                    }
                    Err(LaunchError::Unavailable(why))
                        if no_interpreter(&why) && self.backend.is_running(&sb.id).await =>
                    {
                        tracing::warn!(%why, image = %spec.image, "no python3; one exec per block");
                        sb.exec_per_block = true;
                        return Ok(());
                    }
                    // Anything else (a full pids table, a stopped container): start afresh.
                    Err(LaunchError::Unavailable(why)) => {
                        tracing::warn!(%why, "launcher did not start; recreating the sandbox");
                    }
                    Err(LaunchError::Backend(e)) => {
                        tracing::debug!(%e, "launcher exec refused; recreating the sandbox");
                    }
                }
            }
            // The container is gone or stopped: replace it (same workspace).
            let id = sb.id.clone();
            *slot = None;
            self.forget(key, &id);
            self.backend.destroy(&id).await;
            if attempt == 1 {
                break;
            }
        }
        Err(ExecError::Docker(format!(
            "the sandbox container for image {} does not stay up; check `docker ps -a` and \
             `proctor doctor`",
            spec.image
        )))
    }

    /// How a launcher in sandbox `id` attaches again after a cut.
    fn relink(&self, id: &str, spec: &SandboxSpec) -> Relink {
        Relink {
            backend: self.backend.clone(),
            container: id.to_owned(),
            relay_user: format!("{0}:{0}", spec.main_uid),
            deadline: self.stream_deadline,
        }
    }

    async fn create_container(
        &self,
        key: &str,
        spec: &SandboxSpec,
        out: &Out,
    ) -> Result<String, ExecError> {
        let name = format!(
            "proctor-{}-{:06x}",
            name_part(key),
            rand::random::<u32>() & 0xff_ffff
        );
        let tx = out.tx.clone();
        let progress = Box::new(move |p| {
            let _ = tx.try_send(Ok(ExecEvent::Pull(p)));
        });
        let id = self
            .backend
            .create(&name, spec, key, &self.owner, progress)
            .await?;
        lock(&self.containers)
            .entry(key.to_owned())
            .or_default()
            .push(id.clone());
        Ok(id)
    }

    /// A synced sandbox's workspace volume starts out root's: open it to the block user (uid 0
    /// in the sandbox has no capabilities; as the volume's owner it may still chmod it).
    async fn open_workspace_volume(&self, key: &str, id: &str) -> Result<(), ExecError> {
        let argv = ["chmod", "0777", WORKSPACE];
        let done = run_command(&*self.backend, id, "0:0", &argv, CALL_TIMEOUT).await;
        if matches!(&done, Ok(o) if o.code == Some(0)) {
            return Ok(());
        }
        self.forget(key, id);
        self.backend.destroy(id).await;
        Err(ExecError::Docker(format!(
            "could not prepare the sandbox's workspace volume: {}",
            match done {
                Ok(o) => format!("chmod exited with {:?}", o.code),
                Err(e) => e.to_string(),
            }
        )))
    }

    /// Runs a block in a synced sandbox (a remote engine), then brings what it changed back to
    /// the local workspace.
    #[allow(clippy::too_many_arguments)]
    async fn run_synced(
        &self,
        slot: &mut Option<Sandbox>,
        req: &ExecRequest,
        spec: &SandboxSpec,
        argv: Vec<String>,
        block: &SyncedBlock<'_>,
        cancel: CancellationToken,
        out: &Out,
    ) -> Result<ExecOutcome, ExecError> {
        let key = req.session.clone();
        let mut outcome = self
            .run_in(slot, &key, req, spec, argv, cancel, out, Some(block))
            .await?;
        let budget = req.policy.workspace_limit_mb.max(1).saturating_mul(1 << 20);
        let note = match slot.as_mut() {
            Some(sb) => match (sb.launcher.as_mut(), sb.listing.clone()) {
                (Some(launcher), Some(before)) => {
                    let mut pulled =
                        sync::pull_changes(launcher, &spec.workspace, &before, budget).await;
                    // A cut while the changes come back: attached again, asked again (once).
                    if pulled.is_err() && launcher.recover().await {
                        pulled =
                            sync::pull_changes(launcher, &spec.workspace, &before, budget).await;
                    }
                    match pulled {
                        Ok(pulled) => {
                            sb.listing = Some(pulled.listing);
                            refused_note(&pulled.refused)
                        }
                        Err(why) => Some(format!(
                            "[proctor: what this block changed could not be brought back from \
                             the sandbox: {}]",
                            crate::text_safety::visible_line(&why)
                        )),
                    }
                }
                _ => Some(
                    "[proctor: what this block changed could not be brought back: the sandbox's \
                     launcher is gone]"
                        .to_owned(),
                ),
            },
            None => Some(
                "[proctor: the sandbox was lost, and what this block changed in it with it; the \
                 next block starts from the local workspace]"
                    .to_owned(),
            ),
        };
        if let Some(note) = note {
            if !outcome.output.is_empty() && !outcome.output.ends_with('\n') {
                outcome.output.push('\n');
            }
            outcome.output.push_str(&note);
            outcome.output.push('\n');
        }
        Ok(outcome)
    }

    fn forget(&self, key: &str, id: &str) {
        let mut map = lock(&self.containers);
        if let Some(ids) = map.get_mut(key) {
            ids.retain(|x| x != id);
            if ids.is_empty() {
                map.remove(key);
            }
        }
    }

    /// The slow path: one `docker exec` per block, for images that cannot run the launcher.
    #[allow(clippy::too_many_arguments)]
    async fn run_exec_per_block(
        &self,
        slot: &mut Option<Sandbox>,
        key: &str,
        req: &ExecRequest,
        argv: &[String],
        cancel: CancellationToken,
        out: &Out,
    ) -> Result<ExecOutcome, ExecError> {
        let Some(sb) = slot.as_ref() else {
            return Err(ExecError::Other("the sandbox vanished".into()));
        };
        let id = sb.id.clone();
        let user = sb.spec.block_user();
        let backend = &*self.backend;
        let oom_before = oom_kill_count(backend, &id).await;
        let t0 = Instant::now();
        let process = ProcessSpec {
            argv: argv.to_vec(),
            user: user.clone(),
            cwd: Some(WORKSPACE.to_owned()),
            env: block_env(),
            stdin: false,
        };
        let SandboxStream {
            mut output,
            exit_code,
            ..
        } = backend
            .open_stream(&id, process)
            .await
            .map_err(|e| ExecError::Docker(format!("could not start the block: {e}")))?;
        let mut collector = Collector::new(req.policy.output_limit());
        let deadline = t0 + req.policy.block_timeout();
        let (mut timed_out, mut cancelled) = (false, false);
        let mut give_up = None;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled(), if !cancelled && !timed_out => {
                    cancelled = true;
                    kill_block_processes(backend, &id, &user).await;
                    give_up = Some(Instant::now() + BACKSTOP);
                }
                _ = tokio::time::sleep_until(deadline.into()), if !cancelled && !timed_out => {
                    timed_out = true;
                    kill_block_processes(backend, &id, &user).await;
                    give_up = Some(Instant::now() + BACKSTOP);
                }
                _ = tokio::time::sleep_until(give_up.unwrap_or(deadline).into()), if give_up.is_some() => {
                    // The kill did not end the exec: drop the whole container.
                    if let Some(sb) = slot.take() {
                        self.forget(key, &sb.id);
                        backend.destroy(&sb.id).await;
                    }
                    break;
                }
                item = output.next() => match item {
                    Some(Ok(Chunk::Stdout(message))) => {
                        collector.push(StreamKind::Stdout, &message, out).await;
                    }
                    Some(Ok(Chunk::Stderr(message))) => {
                        collector.push(StreamKind::Stderr, &message, out).await;
                    }
                    Some(Err(_)) | None => break,
                }
            }
        }
        collector.flush(out).await;
        let code = exit_code().await.unwrap_or(-1);
        // Leftovers (background or double-forked processes) die with the block.
        if slot.is_some()
            && !kill_block_processes(backend, &id, &user).await
            && let Some(sb) = slot.take()
        {
            self.forget(key, &sb.id);
            backend.destroy(&sb.id).await;
        }
        // OOM only when the cgroup's counter says so: a plain SIGKILL is not an OOM, and an
        // OOM-killed child makes its parent exit with any code.
        let oom_after = match (&oom_before, slot.is_some()) {
            (Some(_), true) => oom_kill_count(backend, &id).await,
            _ => None,
        };
        let oom = matches!((oom_before, oom_after), (Some(a), Some(b)) if b > a);
        let report = ExitReport {
            code: if code == 137 { -9 } else { code },
            timed_out,
            cancelled,
            oom: oom && !timed_out && !cancelled,
            ..Default::default()
        };
        Ok(collector.finish(&report, t0.elapsed(), req))
    }
}

/// Pushes the local workspace into a fresh synced sandbox.
async fn push(sb: &mut Sandbox, out: &Out) -> Result<(), ExecError> {
    let Some(launcher) = sb.launcher.as_mut() else {
        return Err(ExecError::Other("the sandbox's launcher is gone".into()));
    };
    let (listing, skipped) = sync::push_workspace(launcher, &sb.spec.workspace)
        .await
        .map_err(|why| {
            ExecError::Other(format!(
                "could not send the workspace to the sandbox: {}",
                crate::text_safety::visible_line(&why)
            ))
        })?;
    if !skipped.is_empty() {
        tracing::info!(?skipped, "left out of the pushed workspace");
        let shown: Vec<String> = skipped
            .iter()
            .take(10)
            .map(|p| crate::text_safety::visible_line(p).into_owned())
            .collect();
        out.send(ExecEvent::Output {
            stream: StreamKind::Stderr,
            text: format!(
                "[proctor: not sent to the sandbox (not a file, directory or link, or unreadable): \
                 {}{}]\n",
                shown.join(", "),
                if skipped.len() > 10 { ", ..." } else { "" }
            ),
        })
        .await;
    }
    sb.listing = Some(listing);
    Ok(())
}

/// Writes a block's file into a synced sandbox: a named one into its workspace, an unnamed one
/// into proctor's block directory (emptied first, so nothing planted there can stand in for it).
async fn put_block(launcher: &mut Launcher, block: &SyncedBlock<'_>) -> Result<(), ExecError> {
    let done = match block.file {
        BlockFile::InWorkspace(rel) => {
            sync::put_file(
                launcher,
                WORKSPACE,
                rel,
                block.code.as_bytes(),
                block.mode,
                false,
            )
            .await
        }
        BlockFile::Unnamed(name) => {
            let rel = std::path::Path::new(name);
            sync::put_file(
                launcher,
                super::sandbox::BLOCKS,
                rel,
                block.code.as_bytes(),
                0o644,
                true,
            )
            .await
        }
    };
    done.map_err(|why| {
        ExecError::Other(format!(
            "could not write {} in the sandbox; the block was not run: {}",
            container_path(block.file),
            crate::text_safety::visible_line(&why)
        ))
    })
}

/// Marks an outcome as killed for growing the workspace by `grown` bytes past `limit_mb`.
fn over_limit(outcome: &mut ExecOutcome, grown: u64, limit_mb: u64) {
    outcome.cancelled = false;
    outcome.workspace_limit_exceeded = true;
    let note = format!(
        "[proctor: killed: the block grew the workspace by {} MiB, past its limit of \
         {limit_mb} MiB (workspace_limit_mb); it and every process it started were killed]",
        grown >> 20
    );
    if outcome.output.contains(CANCELLED_NOTE) {
        outcome.output = outcome.output.replace(CANCELLED_NOTE, &note);
    } else {
        if !outcome.output.is_empty() && !outcome.output.ends_with('\n') {
            outcome.output.push('\n');
        }
        outcome.output.push_str(&note);
        outcome.output.push('\n');
    }
}

/// The note naming what was left in the sandbox, if anything.
fn refused_note(refused: &[(String, String)]) -> Option<String> {
    if refused.is_empty() {
        return None;
    }
    let shown: Vec<String> = refused
        .iter()
        .take(20)
        .map(|(path, why)| {
            if path.is_empty() {
                crate::text_safety::visible_line(why).into_owned()
            } else {
                format!(
                    "{} ({})",
                    crate::text_safety::visible_line(path),
                    crate::text_safety::visible_line(why)
                )
            }
        })
        .collect();
    let more = refused.len().saturating_sub(shown.len());
    Some(format!(
        "[proctor: left in the sandbox, not brought back to the local workspace: {}{}]",
        shown.join("; "),
        if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        }
    ))
}

/// Runs one block through the launcher, streaming its output.
async fn run_with_launcher(
    launcher: &mut Launcher,
    req: &ExecRequest,
    argv: &[String],
    cancel: &CancellationToken,
    out: &Out,
    (backend, id, user): (&dyn SandboxBackend, &str, &str),
    (relay_user, stream_deadline): (&str, Duration),
) -> LauncherEnd {
    let limit_kb = req.policy.output_limit();
    let timeout = req.policy.block_timeout();
    let env: serde_json::Map<String, serde_json::Value> = block_env()
        .into_iter()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), serde_json::Value::String(v.to_owned())))
        })
        .collect();
    let mut command = json!({
        "op": "run",
        "argv": argv,
        "cwd": WORKSPACE,
        "env": env,
        "timeout_ms": timeout.as_millis() as u64,
        "limit": limit_kb * 1024,
    });
    // An unnamed Python block's file lives outside the workspace; it runs as if it were in it
    // (`sys.path[0]` is the workspace, so its modules import as before).
    if argv
        .last()
        .is_some_and(|p| p.starts_with(&format!("{}/", super::sandbox::BLOCKS)))
    {
        command["path0"] = serde_json::Value::String(WORKSPACE.into());
    }
    let mut collector = Collector::new(limit_kb);
    let t0 = Instant::now();
    // A `run` that could not be written may still have reached the launcher (or not): the
    // reattach below finds out, and sends it again if the launcher never got it.
    let mut unsent = launcher
        .send_run(command)
        .await
        .err()
        .map(|e| e.to_string());
    let mut give_up = t0 + timeout + BACKSTOP;
    let mut host_kill = t0 + timeout + HOST_KILL_GRACE;
    let mut host_killed = false;
    let mut kill_sent = false;
    let mut started = false;
    loop {
        let dead_at = launcher.last_heard() + DEAD_AFTER;
        let cut = if let Some(why) = unsent.take() {
            why
        } else {
            tokio::select! {
            biased;
            _ = tokio::time::sleep_until(host_kill.into()), if !host_killed && !kill_sent => {
                // The launcher missed the deadline: kill every block-uid process (the launcher
                // too) from outside; its stream then ends.
                host_killed = true;
                kill_block_processes(backend, id, user).await;
                continue;
            }
            _ = cancel.cancelled(), if !kill_sent => {
                kill_sent = true;
                give_up = give_up.min(Instant::now() + BACKSTOP);
                match launcher.send(&json!({"op": "kill"})).await {
                    Ok(()) => continue,
                    Err(e) => e.to_string(),
                }
            }
            frame = launcher.next() => match frame {
                Ok(Frame::Stdout(b)) => {
                    started = true;
                    collector.push(StreamKind::Stdout, &b, out).await;
                    continue;
                }
                Ok(Frame::Stderr(b)) => {
                    started = true;
                    collector.push(StreamKind::Stderr, &b, out).await;
                    continue;
                }
                Ok(Frame::Exit(report)) => {
                    collector.flush(out).await;
                    return LauncherEnd::Done(collector.finish(&report, t0.elapsed(), req));
                }
                Ok(_) => continue,
                Err(why) if host_killed || why == super::launcher::FORGED
                    || why == super::launcher::GAP => {
                    collector.flush(out).await;
                    let why = if host_killed { HOST_KILLED.to_owned() } else { why };
                    return LauncherEnd::Lost { collector, why, started };
                }
                Err(why) => why,
            },
            _ = tokio::time::sleep_until(dead_at.into()) => {
                format!("no keepalive for {} s", DEAD_AFTER.as_secs())
            }
            _ = tokio::time::sleep_until(give_up.into()) => {
                collector.flush(out).await;
                return LauncherEnd::Unresponsive(collector);
            }
            }
        };
        // The stream is cut (or silent): attach to the launcher again; it kept the block running
        // and its frames, and sends again what did not arrive.
        let t_cut = Instant::now();
        tracing::info!(%cut, "launcher stream cut; reattaching");
        match launcher
            .reattach(backend, id, relay_user, t_cut + stream_deadline)
            .await
        {
            Ok(()) => {
                // The block's deadline is the launcher's while the link was down.
                let outage = t_cut.elapsed();
                // (Only the outage is added: a stream that keeps being cut still ends.)
                host_kill += outage + Duration::from_secs(1);
                give_up += outage;
                if kill_sent {
                    // The kill may have been lost in the cut; a second one is harmless.
                    let _ = launcher.send(&json!({"op": "kill"})).await;
                }
            }
            Err(ReattachError::Gone(gone)) => {
                tracing::debug!(%gone, "nothing to reattach to");
                collector.flush(out).await;
                let why = if host_killed {
                    HOST_KILLED.to_owned()
                } else {
                    cut
                };
                return LauncherEnd::Lost {
                    collector,
                    why,
                    started,
                };
            }
            Err(ReattachError::Unreachable(last)) => {
                collector.flush(out).await;
                launcher.give_up();
                return LauncherEnd::Cut {
                    why: format!("{cut}; last attempt: {last}"),
                };
            }
        }
    }
}

/// Watches the workspace's disk use while a block runs: on growth past `limit` bytes it records
/// the growth in `over` and cancels the block through `kill`. Ends when `done` is cancelled.
async fn watch_disk(
    root: std::path::PathBuf,
    limit: u64,
    kill: CancellationToken,
    done: CancellationToken,
    over: Arc<Mutex<Option<u64>>>,
) {
    let watch = DiskWatch::new(&root, limit);
    // Measuring the start walks the workspace: alongside the block's own start-up.
    let mut watch = match tokio::task::spawn_blocking(move || {
        let mut w = watch;
        w.measure_start();
        w
    })
    .await
    {
        Ok(w) => w,
        Err(_) => return,
    };
    loop {
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tokio::time::sleep(DISK_CHECK) => {}
        }
        if !watch.suspect() {
            continue;
        }
        let checked = tokio::task::spawn_blocking(move || {
            let c = watch.confirm();
            (watch, c)
        })
        .await;
        let Ok((w, check)) = checked else { return };
        watch = w;
        if let Check::Over(grown) = check {
            *lock(&over) = Some(grown);
            kill.cancel();
            return;
        }
    }
}

/// The environment of block processes (on top of the image's own; nothing from the host).
fn block_env() -> Vec<String> {
    [
        "HOME=/tmp",
        "TMPDIR=/tmp",
        "LANG=C.UTF-8",
        "TERM=dumb",
        "PYTHONUNBUFFERED=1",
        "PYTHONDONTWRITEBYTECODE=1",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Whether a launcher failure means the image has no `python3` (so: one exec per block).
fn no_interpreter(why: &str) -> bool {
    let why = why.to_ascii_lowercase();
    why.contains(super::launcher::NOT_DUMPABLE)
        || why.contains("executable file not found")
        || why.contains("no such file or directory")
        || why.contains("not found")
}

/// Kills every process of the block user in the sandbox (`kill -9 -1` as that user cannot reach
/// the main process, which runs as another uid). Returns whether it ran.
async fn kill_block_processes(backend: &dyn SandboxBackend, id: &str, user: &str) -> bool {
    let argv = ["sh", "-c", "kill -9 -1 2>/dev/null; exit 0"];
    matches!(
        run_command(backend, id, user, &argv, CALL_TIMEOUT).await,
        Ok(out) if out.code == Some(0)
    )
}

/// The sandbox cgroup's OOM-kill counter (cgroup v2 `memory.events`, v1 `memory.oom_control`),
/// read by a short command; `None` when it cannot be read.
async fn oom_kill_count(backend: &dyn SandboxBackend, id: &str) -> Option<u64> {
    let argv = [
        "cat",
        "/sys/fs/cgroup/memory.events",
        "/sys/fs/cgroup/memory/memory.oom_control",
    ];
    let out = run_command(backend, id, "", &argv, CALL_TIMEOUT)
        .await
        .ok()?;
    parse_oom_kills(&String::from_utf8_lossy(&out.stdout))
}

/// The `oom_kill` count in a cgroup memory events / oom_control listing.
fn parse_oom_kills(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        (parts.next() == Some("oom_kill"))
            .then(|| parts.next()?.parse().ok())
            .flatten()
    })
}

/// [`sweep_orphans_on`] the engine `DOCKER_HOST` names.
pub async fn sweep_orphans(live_sessions: &[String]) -> Result<Vec<String>, ExecError> {
    sweep_orphans_on(&EngineHost::from_environment()?, live_sessions).await
}

/// Removes sandbox containers on `engine` whose session is not in `live_sessions` and whose owning
/// proctor process is gone (so a second proctor's sandboxes survive). On a remote engine only
/// containers this machine's current boot made are judged: others may belong to other machines.
/// Returns the removed container names.
pub async fn sweep_orphans_on(
    engine: &EngineHost,
    live_sessions: &[String],
) -> Result<Vec<String>, ExecError> {
    let docker = engine_host::connect(engine).await?;
    let filters = HashMap::from([("label", vec![LABEL_SESSION])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let list = call(
        "list sandbox containers",
        docker.list_containers(Some(options)),
    )
    .await?;
    let mut removed = Vec::new();
    for c in list {
        let labels = c.labels.unwrap_or_default();
        let session = labels.get(LABEL_SESSION).cloned().unwrap_or_default();
        if live_sessions.iter().any(|s| s == &session) {
            continue;
        }
        if labels
            .get(LABEL_OWNER)
            .is_some_and(|o| owner_alive(o) || (engine.is_remote() && !owned_by_this_boot(o)))
        {
            continue;
        }
        let Some(id) = c.id else { continue };
        remove_container(&docker, &id).await;
        let name = c
            .names
            .and_then(|n| n.first().cloned())
            .unwrap_or(id)
            .trim_start_matches('/')
            .to_owned();
        removed.push(name);
    }
    Ok(removed)
}

/// [`doctor_check_on`] the engine `DOCKER_HOST` names.
pub async fn doctor_check(image: &str) -> Vec<(String, Result<String, String>)> {
    doctor_check_on(EngineHost::from_environment(), image).await
}

/// Checks for `proctor doctor` on `engine`: (check, Ok(detail) | Err(failure and fix)). The first
/// names the engine: host, transport (TLS, SSH…), remote or local, and where it was chosen.
pub async fn doctor_check_on(
    engine: Result<EngineHost, EngineHostError>,
    image: &str,
) -> Vec<(String, Result<String, String>)> {
    let mut checks = Vec::new();
    let connected = match &engine {
        Ok(engine) => engine_host::connect(engine)
            .await
            .map(|d| (engine.clone(), d)),
        Err(e) => Err(ExecError::from(e.clone())),
    };
    let (engine, docker) = match connected {
        Ok((engine, d)) => {
            checks.push((
                "docker daemon".to_owned(),
                Ok(format!("reachable: {}", engine.describe())),
            ));
            (engine, d)
        }
        Err(e) => {
            checks.push(("docker daemon".to_owned(), Err(e.to_string())));
            let skipped = || Err("skipped: the Docker daemon is unreachable".to_owned());
            checks.push(("docker api version".to_owned(), skipped()));
            checks.push(("sandbox image".to_owned(), skipped()));
            checks.push(("sandbox run".to_owned(), skipped()));
            return checks;
        }
    };
    let version = match call("read the engine version", docker.version()).await {
        Ok(v) => Ok(format!(
            "engine {} speaks API {} (min {}); proctor uses {}",
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default(),
            v.min_api_version.unwrap_or_default(),
            docker.client_version()
        )),
        Err(e) => Err(e.to_string()),
    };
    checks.push(("docker api version".to_owned(), version));
    match image_present(&docker, image).await {
        Ok(true) => checks.push((
            "sandbox image".to_owned(),
            Ok(format!("{image} is present")),
        )),
        Ok(false) => {
            checks.push(("sandbox image".to_owned(), Err(absent_image_fix(image))));
            checks.push((
                "sandbox run".to_owned(),
                Err("skipped: the sandbox image is missing".to_owned()),
            ));
            return checks;
        }
        Err(e) => {
            checks.push(("sandbox image".to_owned(), Err(e.to_string())));
            return checks;
        }
    }
    checks.push((
        "sandbox run".to_owned(),
        sandbox_smoke_test(engine, image).await,
    ));
    checks
}

/// Runs `print(1)` in a throwaway sandbox on `engine`.
async fn sandbox_smoke_test(engine: EngineHost, image: &str) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temp workspace: {e}"))?;
    let exec = DockerExecutor::for_engine(engine);
    let session = format!("doctor-{}", std::process::id());
    let request = ExecRequest {
        session: session.clone(),
        workspace: dir.path().to_path_buf(),
        language: "python".into(),
        code: "print(6 * 7)".into(),
        filename: None,
        policy: crate::config::ExecutorConfig {
            image: image.to_owned(),
            timeout_s: 20,
            ..Default::default()
        },
        allow_network: false,
        user_workspace: false,
    };
    let t0 = Instant::now();
    let mut stream = exec.run(request, CancellationToken::new());
    let mut result = Err("the sandbox produced no result".to_owned());
    while let Some(item) = stream.next().await {
        match item {
            Ok(ExecEvent::Finished(o)) if o.exit_code == 0 && o.output.trim() == "42" => {
                result = Ok(format!(
                    "python3 ran in a hardened container in {} ms",
                    t0.elapsed().as_millis()
                ));
            }
            Ok(ExecEvent::Finished(o)) => {
                result = Err(format!(
                    "the sandbox ran but printed {:?} (exit {}); the image needs python3",
                    o.output, o.exit_code
                ));
            }
            Ok(_) => {}
            Err(e) => result = Err(e.to_string()),
        }
    }
    exec.shutdown(&session).await;
    result
}

/// `boot_id:pid:starttime` of this process: who owns the containers it creates.
fn owner_id() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let pid = std::process::id();
    format!(
        "{}:{pid}:{}",
        boot.trim(),
        start_time(pid).unwrap_or_default()
    )
}

fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19).map(str::to_owned)
}

/// Whether an owner label was written by a proctor of this machine's current boot.
fn owned_by_this_boot(owner: &str) -> bool {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    owner.split(':').next() == Some(boot.trim())
}

/// Whether the proctor process named by an owner label still runs (on this machine).
fn owner_alive(owner: &str) -> bool {
    let mut parts = owner.split(':');
    let (Some(boot), Some(pid), Some(start)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let my_boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    if boot != my_boot.trim() {
        return false;
    }
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    start_time(pid).as_deref() == Some(start)
}

fn name_part(session: &str) -> String {
    session
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(40)
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_of_this_process_is_alive_and_a_dead_one_is_not() {
        assert!(owner_alive(&owner_id()));
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        assert!(!owner_alive(&format!("{}:999999999:1", boot.trim())));
        assert!(!owner_alive("other-boot:1:1"));
        assert!(!owner_alive("garbage"));
    }

    #[test]
    fn only_owners_of_this_boot_count_as_this_machine() {
        assert!(owned_by_this_boot(&owner_id()));
        assert!(!owned_by_this_boot("another-machine-boot:1:1"));
        assert!(!owned_by_this_boot("garbage"));
    }

    #[test]
    fn oom_kill_counter_is_read_from_v2_and_v1_listings() {
        let v2 = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(parse_oom_kills(v2), Some(2));
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n";
        assert_eq!(parse_oom_kills(v1), Some(7));
        assert_eq!(parse_oom_kills("cat: no such file"), None);
    }
}
