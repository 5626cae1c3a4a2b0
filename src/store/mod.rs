//! Sessions on disk: the append-only event log, its repair and locking, and list / export / fork.
//!
//! Layout: `DATA_DIR/sessions/<id>/` holds `events.jsonl` (the log), `workspace/` (the sandbox's
//! `/workspace`), `session.lock` and a cached `summary.json`.
//!
//! How the engine uses it:
//! - `SessionStore::open(resolve_data_dir(flag)?)?` once.
//! - New session: `let id = new_session_id();` then `store.create(&id, &session_started_event)?`
//!   gives a [`SessionWriter`], the session's [`EventSink`].
//! - Resume: `store.open_existing(&store.resolve(arg)?)?` (or `resolve_last()`) takes the lock,
//!   repairs the log and gives `(events, report, writer)`: show `report.warnings()`, replay the
//!   events, go on from seq `writer.last_seq() + 1`.
//! - At the end, `writer.close().await` (fsync, summary, lock released).
//!
//! The writer runs as a tokio task and uses tokio's timer: it needs a runtime with time enabled
//! (`#[tokio::main]` has it).

use async_trait::async_trait;

pub mod diff;
pub mod export;
pub mod lock;
pub mod log;
pub mod sessions;
pub mod summary;
pub mod writer;

pub use lock::{LockState, SessionLock};
pub use log::{LoadReport, ParsedLog, parse_log};
pub use sessions::{SessionStore, default_data_dir, new_session_id, resolve_data_dir};
pub use summary::{SessionState, SessionSummary, format_session_table};
pub use writer::{LogTarget, SessionWriter};

use crate::protocol::Event;

/// A failure to save. The session goes on in memory; the front end shows "not saved".
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// I/O failure.
    #[error("session not saved: {0}")]
    Io(String),
    /// Someone else holds the session.
    #[error("{0}")]
    Locked(String),
    /// The log cannot be read.
    #[error("{0}")]
    Corrupt(String),
    /// No session with that id (or prefix).
    #[error("{0}")]
    NotFound(String),
    /// Reading, listing or removing sessions failed (I/O outside the writer).
    #[error("{0}")]
    Read(String),
    /// A request the store cannot carry out (bad id, seq out of range, ambiguous prefix).
    #[error("{0}")]
    Invalid(String),
}

/// Where the orchestrator records events. `append` returns once the event is queued, or, when
/// `event.kind.needs_sync()`, once it is on disk (fsynced).
#[async_trait]
pub trait EventSink: Send {
    /// Records one persisted event.
    async fn append(&mut self, event: &Event) -> Result<(), StoreError>;
    /// Flushes and fsyncs everything appended so far.
    async fn sync(&mut self) -> Result<(), StoreError>;
}

/// An in-memory sink for tests and ephemeral runs.
#[derive(Debug, Default, Clone)]
pub struct MemorySink {
    /// Everything appended.
    pub events: std::sync::Arc<std::sync::Mutex<Vec<Event>>>,
}

#[async_trait]
impl EventSink for MemorySink {
    async fn append(&mut self, event: &Event) -> Result<(), StoreError> {
        if let Ok(mut v) = self.events.lock() {
            v.push(event.clone());
        }
        Ok(())
    }
    async fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}
