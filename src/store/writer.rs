//! The one task that writes a session's log: it groups appends, fsyncs at the points that matter
//! (`EventKind::needs_sync`), retries failed writes, and never leaves a torn or doubled line behind.
//!
//! Lines are written at the end of the last good write, never with `O_APPEND`: after a failed
//! attempt the file is cut back to that length before the next one, so a half-written batch is
//! never followed by a second copy of itself. Lines that could not be written stay queued and go
//! out with the next write; the session goes on in memory meanwhile and the caller hears
//! "session not saved".

use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::protocol::Event;

use super::lock::SessionLock;
use super::summary::{Fold, SummaryFile};
use super::{EventSink, StoreError};

/// Where a session log's bytes go. `std::fs::File` is the real one; tests put failing ones in.
pub trait LogTarget: Send + 'static {
    /// Writes all of `buf` starting at byte `offset`.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()>;
    /// Cuts the log to `len` bytes.
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;
    /// Makes everything written durable (fsync).
    fn sync(&mut self) -> std::io::Result<()>;
}

impl LogTarget for std::fs::File {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        self.seek(SeekFrom::Start(offset))?;
        self.write_all(buf)
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }
}

/// Attempts per write before the caller hears "not saved"; the lines stay queued after that.
const ATTEMPTS: u32 = 3;
/// Pause before the second and third attempts.
const BACKOFF: [Duration; 2] = [Duration::from_millis(20), Duration::from_millis(100)];
/// Queued lines are written (without fsync) after this much quiet.
const IDLE_FLUSH: Duration = Duration::from_millis(100);
/// Longest wait between background retries while the disk refuses writes.
const IDLE_RETRY_MAX: Duration = Duration::from_secs(5);
/// Queued lines are written once they reach this size.
const FLUSH_BYTES: usize = 64 * 1024;
/// The cached summary is refreshed at most this often (and always on close).
const SUMMARY_EVERY: Duration = Duration::from_secs(1);
/// Commands taken from the queue in one go.
const BATCH: usize = 512;

type Ack = oneshot::Sender<Result<(), StoreError>>;

enum Cmd {
    Append { event: Box<Event>, ack: Option<Ack> },
    Sync { ack: Ack },
    Close { ack: Ack },
}

/// Files the writer keeps besides the log: where to cache the summary, and the session lock.
pub(crate) struct SessionFiles {
    pub dir: PathBuf,
    /// Held for as long as the writer runs.
    pub _lock: SessionLock,
    pub fold: Fold,
}

/// Writes a session's events to its log through a single background task. Implements
/// [`EventSink`]: `append` returns once the event is queued, or once it is fsynced when
/// `event.kind.needs_sync()`. Events that are not persisted (`is_persisted() == false`) and events
/// whose `seq` is not after the last one written are dropped silently.
///
/// Call [`SessionWriter::close`] at the end; dropping it also flushes, in the background.
#[derive(Debug)]
pub struct SessionWriter {
    id: String,
    tx: mpsc::UnboundedSender<Cmd>,
    last_seq: u64,
    failing: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl SessionWriter {
    /// Starts a writer on any log target whose first `good_len` bytes hold records up to `last_seq`.
    /// Without session files, no summary is cached and no lock is held. Needs a tokio runtime.
    pub fn spawn(
        id: &str,
        target: Box<dyn LogTarget>,
        good_len: u64,
        last_seq: u64,
    ) -> Result<Self, StoreError> {
        Self::start(id, target, good_len, last_seq, None)
    }

    pub(crate) fn start(
        id: &str,
        target: Box<dyn LogTarget>,
        good_len: u64,
        last_seq: u64,
        files: Option<SessionFiles>,
    ) -> Result<Self, StoreError> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| StoreError::Io("the session writer needs a tokio runtime".into()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let failing = std::sync::Arc::new(std::sync::Mutex::new(None));
        let task = WriterTask {
            id: id.to_string(),
            rx,
            disk: Some(Disk {
                target,
                good_len,
                dirty: false,
            }),
            pending: Vec::new(),
            pending_last_seq: last_seq,
            files,
            last_summary: None,
            failing: failing.clone(),
        };
        handle.spawn(task.run());
        Ok(SessionWriter {
            id: id.to_string(),
            tx,
            last_seq,
            failing,
        })
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seq of the last event accepted for writing.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Writes and fsyncs everything queued, refreshes the summary, and releases the session lock.
    pub async fn close(self) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx.send(Cmd::Close { ack }).map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }

    fn current_failure(&self) -> Option<String> {
        self.failing.lock().ok().and_then(|f| f.clone())
    }
}

fn stopped() -> StoreError {
    StoreError::Io("the session writer has stopped".into())
}

#[async_trait]
impl EventSink for SessionWriter {
    async fn append(&mut self, event: &Event) -> Result<(), StoreError> {
        if !event.kind.is_persisted() || event.seq <= self.last_seq {
            return Ok(());
        }
        self.last_seq = event.seq;
        if event.kind.needs_sync() {
            let (ack, done) = oneshot::channel();
            self.tx
                .send(Cmd::Append {
                    event: Box::new(event.clone()),
                    ack: Some(ack),
                })
                .map_err(|_| stopped())?;
            done.await.map_err(|_| stopped())?
        } else {
            self.tx
                .send(Cmd::Append {
                    event: Box::new(event.clone()),
                    ack: None,
                })
                .map_err(|_| stopped())?;
            // Queued; but while the disk refuses writes, say so now rather than at the next sync.
            match self.current_failure() {
                Some(e) => Err(StoreError::Io(e)),
                None => Ok(()),
            }
        }
    }

    async fn sync(&mut self) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx.send(Cmd::Sync { ack }).map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }
}

/// The log file and how much of it is good.
struct Disk {
    target: Box<dyn LogTarget>,
    /// Bytes of whole, written lines.
    good_len: u64,
    /// A write failed after `good_len`: cut back before writing again.
    dirty: bool,
}

impl Disk {
    fn attempt(&mut self, buf: &[u8], sync: bool) -> std::io::Result<()> {
        if self.dirty {
            self.target.truncate(self.good_len)?;
        }
        // From here until success the bytes after `good_len` are in doubt.
        self.dirty = true;
        if !buf.is_empty() {
            self.target.write_at(self.good_len, buf)?;
        }
        if sync {
            self.target.sync()?;
        }
        self.dirty = false;
        self.good_len += buf.len() as u64;
        Ok(())
    }
}

struct WriterTask {
    id: String,
    rx: mpsc::UnboundedReceiver<Cmd>,
    /// `None` only while a blocking write holds it.
    disk: Option<Disk>,
    /// Serialized lines not yet on disk.
    pending: Vec<u8>,
    pending_last_seq: u64,
    files: Option<SessionFiles>,
    last_summary: Option<Instant>,
    failing: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl WriterTask {
    async fn run(mut self) {
        let mut idle_wait = IDLE_FLUSH;
        loop {
            let first = if self.pending.is_empty() {
                self.rx.recv().await
            } else {
                match tokio::time::timeout(idle_wait, self.rx.recv()).await {
                    Ok(cmd) => cmd,
                    Err(_) => {
                        // Quiet for a while: write what is queued, without fsync; while the disk
                        // refuses, try less and less often.
                        idle_wait = match self.flush(false).await {
                            Ok(()) => IDLE_FLUSH,
                            Err(_) => (idle_wait * 2).min(IDLE_RETRY_MAX),
                        };
                        continue;
                    }
                }
            };
            let Some(first) = first else {
                // Every handle is gone: write what is left and stop.
                match self.flush(true).await {
                    Ok(()) => self.refresh_summary(true).await,
                    Err(e) => tracing::error!("session {}: lost on close: {e}", self.id),
                }
                return;
            };
            let mut cmds = vec![first];
            while cmds.len() < BATCH {
                match self.rx.try_recv() {
                    Ok(cmd) => cmds.push(cmd),
                    Err(_) => break,
                }
            }
            let mut acks = Vec::new();
            let mut want_sync = false;
            let mut close = None;
            for cmd in cmds {
                match cmd {
                    Cmd::Append { event, ack } => {
                        want_sync |= event.kind.needs_sync();
                        self.queue(&event);
                        acks.extend(ack);
                    }
                    Cmd::Sync { ack } => {
                        want_sync = true;
                        acks.push(ack);
                    }
                    Cmd::Close { ack } => {
                        want_sync = true;
                        close = Some(ack);
                    }
                }
            }
            let result = if want_sync || self.pending.len() >= FLUSH_BYTES {
                let r = self.flush(want_sync).await;
                if r.is_ok() {
                    idle_wait = IDLE_FLUSH;
                }
                r
            } else {
                Ok(())
            };
            if result.is_ok() {
                self.refresh_summary(close.is_some()).await;
            }
            for ack in acks {
                let _ = ack.send(result.clone());
            }
            if let Some(ack) = close {
                // Release the lock before saying the session is closed.
                self.files = None;
                let _ = ack.send(result);
                return;
            }
        }
    }

    fn queue(&mut self, event: &Event) {
        match serde_json::to_vec(event) {
            Ok(line) => {
                self.pending.extend_from_slice(&line);
                self.pending.push(b'\n');
                self.pending_last_seq = event.seq;
                if let Some(files) = &mut self.files {
                    files.fold.apply(event);
                }
            }
            // Serializing our own enums does not fail; if it ever does, the record is lost, not the
            // session.
            Err(e) => tracing::error!(
                "session {}: cannot serialize event {}: {e}",
                self.id,
                event.seq
            ),
        }
    }

    /// Writes the queued lines (and fsyncs when asked), retrying with backoff.
    async fn flush(&mut self, sync: bool) -> Result<(), StoreError> {
        if self.pending.is_empty() && !sync {
            return Ok(());
        }
        // The first failure names the cause (disk full); later attempts may fail differently.
        let mut first_error: Option<String> = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(BACKOFF[(attempt - 1) as usize % BACKOFF.len()]).await;
            }
            let Some(mut disk) = self.disk.take() else {
                return Err(stopped());
            };
            let buf = std::mem::take(&mut self.pending);
            let joined = tokio::task::spawn_blocking(move || {
                let r = disk.attempt(&buf, sync);
                (disk, buf, r)
            })
            .await;
            let (disk, buf, r) = match joined {
                Ok(v) => v,
                Err(e) => {
                    // The blocking pool is gone (runtime shutting down); nothing more can be written.
                    tracing::error!("session {}: writer lost its file: {e}", self.id);
                    return Err(stopped());
                }
            };
            self.disk = Some(disk);
            match r {
                Ok(()) => {
                    if let Ok(mut f) = self.failing.lock() {
                        *f = None;
                    }
                    return Ok(());
                }
                Err(e) => {
                    self.pending = buf;
                    first_error.get_or_insert_with(|| e.to_string());
                    tracing::warn!(
                        "session {}: write attempt {} failed: {e}",
                        self.id,
                        attempt + 1
                    );
                }
            }
        }
        let message = format!(
            "{} (events up to seq {} of session {} are kept in memory and retried)",
            first_error.unwrap_or_default(),
            self.pending_last_seq,
            self.id
        );
        if let Ok(mut f) = self.failing.lock() {
            *f = Some(message.clone());
        }
        Err(StoreError::Io(message))
    }

    /// Refreshes `summary.json` when everything is on disk, at most once a second unless forced.
    async fn refresh_summary(&mut self, force: bool) {
        if !self.pending.is_empty() {
            return;
        }
        if !force
            && self
                .last_summary
                .is_some_and(|t| t.elapsed() < SUMMARY_EVERY)
        {
            return;
        }
        let (Some(files), Some(disk)) = (&self.files, &self.disk) else {
            return;
        };
        let dir = files.dir.clone();
        let fold = files.fold.clone();
        let len = disk.good_len;
        self.last_summary = Some(Instant::now());
        let id = self.id.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = SummaryFile::write(&dir, len, &fold) {
                tracing::warn!("session {id}: cannot write summary: {e}");
            }
        })
        .await;
    }
}
