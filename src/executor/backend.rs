//! The boundary between the sandbox executor and the engine that hosts sandboxes: a backend
//! creates a sandbox from a [`SandboxSpec`], opens a bidirectional byte stream into it (the
//! launcher's process, or a one-off command), switches its network, and destroys it. Everything
//! above (the launcher protocol, block deadlines, output caps, workspace sync, change lists) is
//! engine-independent and lives in the executor (`docker.rs`) and `launcher.rs`.
//!
//! Docker implements it in `docker_backend.rs`; a Kubernetes backend (a pod per session, exec over
//! a websocket) would implement the same trait without touching the launcher or the engine.

use std::pin::Pin;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio::io::AsyncWrite;

use super::sandbox::SandboxSpec;
use super::{ExecError, PullProgress};

/// What to start inside a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// `uid:gid` to run as.
    pub user: String,
    /// Working directory inside the sandbox.
    pub cwd: Option<String>,
    /// Environment (`K=V`) on top of the image's.
    pub env: Vec<String>,
    /// Attach stdin (a stream the host writes to).
    pub stdin: bool,
}

/// One chunk of a sandboxed process's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Bytes from stdout.
    Stdout(Bytes),
    /// Bytes from stderr.
    Stderr(Bytes),
}

/// A live process inside a sandbox: its stdin, its output, and a way to read its exit code once
/// the output ended.
pub struct SandboxStream {
    /// The process's stdin (a sink that discards when stdin was not attached).
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
    /// Its stdout and stderr in arrival order; an `Err` (the transport broke) ends it.
    pub output: BoxStream<'static, Result<Chunk, String>>,
    /// Its exit code, asked after `output` ended (`None`: unknown).
    pub exit_code: Box<dyn FnOnce() -> BoxFuture<'static, Option<i64>> + Send>,
}

impl std::fmt::Debug for SandboxStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxStream").finish_non_exhaustive()
    }
}

/// Why a stream could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The sandbox is gone or stopped, or the engine refused.
    #[error("{0}")]
    Refused(String),
    /// The engine did not answer.
    #[error("{0}")]
    Unreachable(String),
}

/// Where sandboxes run. Object-safe: the executor holds an `Arc<dyn SandboxBackend>`.
pub trait SandboxBackend: Send + Sync {
    /// Whether the engine runs on another machine: then no path of this machine can be mounted
    /// and the workspace travels through the launcher's stream.
    fn is_remote(&self) -> bool;

    /// Where sandboxes run, for messages: "the Docker engine at tcp://build:2376".
    fn describe(&self) -> String;

    /// Reaches the engine (connecting when needed); the error says how to fix the link.
    fn ready(&self) -> BoxFuture<'_, Result<(), ExecError>>;

    /// Creates and starts a sandbox named `name` from `spec`, labelled with the session `key` and
    /// this proctor's `owner` id; pulls a missing image (reporting through `progress`). Returns
    /// the sandbox id.
    fn create<'a>(
        &'a self,
        name: &'a str,
        spec: &'a SandboxSpec,
        key: &'a str,
        owner: &'a str,
        progress: Box<dyn Fn(PullProgress) + Send + Sync>,
    ) -> BoxFuture<'a, Result<String, ExecError>>;

    /// Stops and removes a sandbox and its storage; failures are logged, never raised.
    fn destroy<'a>(&'a self, id: &'a str) -> BoxFuture<'a, ()>;

    /// Whether the sandbox runs.
    fn is_running<'a>(&'a self, id: &'a str) -> BoxFuture<'a, bool>;

    /// Starts a process in the sandbox with its stdin and output attached.
    fn open_stream<'a>(
        &'a self,
        id: &'a str,
        process: ProcessSpec,
    ) -> BoxFuture<'a, Result<SandboxStream, StreamError>>;

    /// Connects the sandbox to the engine's default network (`on`) or disconnects it from every
    /// network (it keeps only loopback).
    fn set_network<'a>(&'a self, id: &'a str, on: bool) -> BoxFuture<'a, Result<(), ExecError>>;

    /// Forgets the connection to the engine after a transport failure (the next call reconnects).
    fn reset(&self) -> BoxFuture<'_, ()>;

    /// A backend on the same engine with a connection of its own, for use on another runtime
    /// (exit and signal handlers).
    fn detached(&self) -> std::sync::Arc<dyn SandboxBackend>;
}

/// A finished one-off command: its exit code (`None`: unknown) and what it printed on stdout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit code.
    pub code: Option<i64>,
    /// stdout, at most [`ONE_OFF_OUTPUT`] bytes.
    pub stdout: Vec<u8>,
}

/// Most stdout a one-off command keeps.
pub const ONE_OFF_OUTPUT: usize = 64 * 1024;

/// Runs a short command in the sandbox to its end (at most `timeout`), through
/// [`SandboxBackend::open_stream`].
pub async fn run_command(
    backend: &dyn SandboxBackend,
    id: &str,
    user: &str,
    argv: &[&str],
    timeout: std::time::Duration,
) -> Result<CommandOutput, StreamError> {
    use futures::StreamExt;
    let process = ProcessSpec {
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        user: user.to_owned(),
        cwd: None,
        env: Vec::new(),
        stdin: false,
    };
    let stream = tokio::time::timeout(timeout, backend.open_stream(id, process))
        .await
        .map_err(|_| {
            StreamError::Unreachable("the engine did not start a command in time".into())
        })??;
    let SandboxStream {
        mut output,
        exit_code,
        ..
    } = stream;
    let mut stdout = Vec::new();
    let drained = tokio::time::timeout(timeout, async {
        while let Some(item) = output.next().await {
            match item {
                Ok(Chunk::Stdout(b)) => {
                    let room = ONE_OFF_OUTPUT.saturating_sub(stdout.len());
                    stdout.extend_from_slice(&b[..b.len().min(room)]);
                }
                Ok(Chunk::Stderr(_)) => {}
                Err(_) => break,
            }
        }
    })
    .await;
    if drained.is_err() {
        return Err(StreamError::Unreachable(
            "a command in the sandbox did not end in time".into(),
        ));
    }
    let code = tokio::time::timeout(timeout, exit_code())
        .await
        .ok()
        .flatten();
    Ok(CommandOutput { code, stdout })
}
