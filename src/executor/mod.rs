//! Running approved code: the `Executor` trait and the hardened Docker sandbox behind it.

use std::path::PathBuf;

use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;

use crate::config::ExecutorConfig;
use crate::protocol::StreamKind;

/// One approved block to run.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecRequest {
    /// Session id (labels the sandbox).
    pub session: String,
    /// Host directory mounted at `/workspace`.
    pub workspace: PathBuf,
    /// Language.
    pub language: String,
    /// Code to run.
    pub code: String,
    /// Filename hint, relative to the workspace.
    pub filename: Option<String>,
    /// Sandbox policy from the team file (image possibly overridden by `--image`).
    pub policy: ExecutorConfig,
    /// The human allowed network for this block.
    pub allow_network: bool,
    /// The workspace is the user's own directory (`--workspace`, read-write): blocks run as its
    /// owner (never root) and proctor never changes its ownership. Otherwise it is proctor's
    /// (the session's directory or a copy), handed to a sandbox uid of the session's when
    /// proctor runs as root.
    pub user_workspace: bool,
}

/// The result of one block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutcome {
    /// Exit code (-1 when none).
    pub exit_code: i64,
    /// Killed at the deadline.
    pub timed_out: bool,
    /// Output cut at the cap.
    pub truncated: bool,
    /// Killed by the OOM killer.
    pub oom: bool,
    /// Cancelled.
    pub cancelled: bool,
    /// Wall time.
    pub duration_ms: u64,
    /// stdout+stderr interleaved in arrival order, capped, escapes neutralised.
    pub output: String,
    /// Killed because it grew the workspace past `workspace_limit_mb`.
    pub workspace_limit_exceeded: bool,
    /// What the block changed in the workspace (`None` when it could not be compared).
    pub changes: Option<crate::workspace::WorkspaceDelta>,
}

/// Progress of an image pull.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PullProgress {
    /// Image reference.
    pub image: String,
    /// Docker's status text.
    pub status: String,
    /// Bytes done.
    pub current: u64,
    /// Bytes total (so far known).
    pub total: u64,
    /// Layers seen.
    pub layers: u32,
    /// Layers complete.
    pub layers_done: u32,
}

/// One item of a running block's stream.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecEvent {
    /// The image is being pulled.
    Pull(PullProgress),
    /// Execution began (after the sandbox is ready).
    Started,
    /// Output, capped and neutralised.
    Output {
        /// Stream.
        stream: StreamKind,
        /// Text.
        text: String,
    },
    /// Finished; always the last item.
    Finished(ExecOutcome),
}

/// Why code could not be run at all. Messages say what to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExecError {
    /// Docker daemon unreachable.
    #[error("{0}")]
    Docker(String),
    /// Image missing and could not be pulled.
    #[error("{0}")]
    Image(String),
    /// Filename hint escapes the workspace.
    #[error("refused filename {filename:?}: {why}")]
    BadFilename {
        /// The hint.
        filename: String,
        /// Why.
        why: String,
    },
    /// No interpreter for the language.
    #[error(
        "no interpreter for language {0:?}; add one under [executor.interpreters] in the team file"
    )]
    UnknownLanguage(String),
    /// Other failure.
    #[error("{0}")]
    Other(String),
}

/// Runs code blocks. The stream ends with `Finished` or an error.
pub trait Executor: Send + Sync {
    /// Runs one block; `cancel` kills its whole process tree.
    fn run(
        &self,
        request: ExecRequest,
        cancel: CancellationToken,
    ) -> BoxStream<'static, Result<ExecEvent, ExecError>>;
    /// Stops and removes the sandbox of `session`.
    fn shutdown(&self, session: &str) -> futures::future::BoxFuture<'static, ()>;
}

pub mod backend;
pub mod docker;
pub mod docker_backend;
pub mod engine_host;
pub mod image;
pub mod launcher;
pub mod output;
pub mod sandbox;
pub mod sync;

pub use backend::SandboxBackend;
pub use docker::{
    DockerExecutor, SandboxExecutor, doctor_check, doctor_check_on, sweep_orphans, sweep_orphans_on,
};
pub use engine_host::{EngineHost, EngineTransport, HostSource};
