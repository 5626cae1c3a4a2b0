//! The command line of shared/CONTRACT.md (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::protocol::{SessionMode, WorkspaceMode};

/// Process exit codes: the one table of docs/cli.md, used by every path that ends the process.
pub mod exit_code {
    /// The session ended normally, the command did what it was asked, or `--help`/`--version`.
    pub const OK: i32 = 0;
    /// Bad input (a usage error, an invalid config or team file, a missing key, an unknown
    /// session) or any other failure; `doctor` found a problem. The message says what to fix.
    pub const FAILED: i32 = 1;
    /// A `--approve auto` session paused (budget, loop, provider or sandbox error): nobody can
    /// answer, the session is saved.
    pub const PAUSED: i32 = 2;
    /// Input ended while the session waited for the human; the session is saved.
    pub const INPUT_ENDED: i32 = 3;
    /// Stopped by SIGINT (Ctrl-C); the session is saved.
    pub const SIGINT: i32 = 130;
    /// Stopped by SIGTERM; the session is saved.
    pub const SIGTERM: i32 = 143;
}

/// Supervise a team of LLM coding agents: approve, edit or reject every code block before it runs
/// in a hardened Docker sandbox.
#[derive(Debug, Parser)]
#[command(name = "proctor", version, about, long_about = None)]
pub struct Cli {
    /// config.toml to use (default: the user config dir's proctor/config.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where sessions live (default: the user data dir).
    #[arg(long, global = true, value_name = "DIR", env = "PROCTOR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Colour theme (dark, light, high-contrast).
    #[arg(long, global = true, value_name = "NAME")]
    pub theme: Option<String>,
    /// Sandbox image for this run, over the team's `[executor] image`.
    #[arg(
        long,
        global = true,
        value_name = "IMAGE",
        env = "PROCTOR_SANDBOX_IMAGE"
    )]
    pub image: Option<String>,
    /// Start a new session even when the data dir cannot be written: nothing is saved and the
    /// session cannot be resumed (proctor, run, demo).
    #[arg(long, global = true)]
    pub unsaved: bool,
    /// Docker engine for this run (unix://, tcp:// with DOCKER_TLS_VERIFY, ssh://[USER@]HOST[:PORT]),
    /// over the team's `[executor] docker_host` and DOCKER_HOST.
    #[arg(long, global = true, value_name = "HOST")]
    pub docker_host: Option<String>,
    /// What to do (default: a new session with the default team).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// How a session's code blocks are approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ApproveArg {
    /// The human decides every block (TUI, console prompt, or JSON lines on stdin).
    #[default]
    Ask,
    /// Every block is approved (still sandboxed); for scripts and CI.
    Auto,
}

/// Front-end options shared by `run`, `resume` and `demo`.
#[derive(Debug, Clone, Args, Default)]
pub struct FrontEnd {
    /// No TUI: a line-oriented transcript on stdout.
    #[arg(long)]
    pub headless: bool,
    /// With --headless: one JSON event per line on stdout, JSON decisions on stdin.
    #[arg(long)]
    pub json: bool,
    /// Approval of code blocks.
    #[arg(long, value_enum)]
    pub approve: Option<ApproveArg>,
    /// Session mode: step (pause before every turn), gate (pause at every execution), auto.
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Pause before every agent turn and at every execution.
    Step,
    /// Pause at every execution.
    Gate,
    /// Approve everything (sandboxed).
    Auto,
}

impl FrontEnd {
    /// The session mode these flags ask for.
    pub fn session_mode(&self) -> SessionMode {
        match (self.approve, self.mode) {
            (Some(ApproveArg::Auto), _) | (_, Some(ModeArg::Auto)) => SessionMode::Auto,
            (_, Some(ModeArg::Step)) => SessionMode::Step,
            _ => SessionMode::Gate,
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The shipped demo team on the built-in scripted model (no API key, no network; code still runs in Docker).
    Demo {
        /// Front end.
        #[command(flatten)]
        front: FrontEnd,
    },
    /// Start a new session.
    Run {
        /// Team file (default: the built-in team).
        #[arg(long, value_name = "FILE")]
        team: Option<PathBuf>,
        /// The task for the team.
        #[arg(long, value_name = "TEXT")]
        task: Option<String>,
        /// Work in DIR (mounted at /workspace) instead of the session's own directory.
        #[arg(long, value_name = "DIR")]
        workspace: Option<PathBuf>,
        /// rw: DIR itself, read-write (default); copy: a copy of DIR in the session, DIR untouched.
        #[arg(long, value_enum, value_name = "MODE")]
        workspace_mode: Option<WorkspaceModeArg>,
        /// Front end.
        #[command(flatten)]
        front: FrontEnd,
    },
    /// Continue a saved session where it stopped (a pending approval is asked again).
    Resume {
        /// Session id (or a unique prefix).
        id: Option<String>,
        /// The most recent session.
        #[arg(long, conflicts_with = "id")]
        last: bool,
        /// The session's read-write workspace is now at DIR (it moved).
        #[arg(long, value_name = "DIR")]
        workspace: Option<PathBuf>,
        /// Front end.
        #[command(flatten)]
        front: FrontEnd,
    },
    /// Saved sessions.
    Sessions {
        /// What to do with them.
        #[command(subcommand)]
        action: SessionsCommand,
    },
    /// Check Docker, the sandbox image, providers and keys, pricing and the data dir.
    Doctor,
}

/// `proctor sessions …`.
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Table of saved sessions.
    List,
    /// Transcript to stdout.
    Export {
        /// Session id.
        id: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "md")]
        format: ExportFormat,
    },
    /// New session holding events 1..SEQ of ID.
    Fork {
        /// Session id.
        id: String,
        /// Last event to keep.
        #[arg(long, value_name = "SEQ")]
        at: u64,
    },
    /// Delete a session and its workspace.
    Rm {
        /// Session id.
        id: String,
    },
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Markdown transcript.
    Md,
    /// The event log as JSON lines.
    Json,
    /// A unified diff (`git apply` format) of the workspace from the session's start to now.
    Patch,
}

/// `--workspace-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkspaceModeArg {
    /// Mount the directory itself, read-write.
    Rw,
    /// Copy it into the session first; the original stays untouched.
    Copy,
}

impl From<WorkspaceModeArg> for WorkspaceMode {
    fn from(m: WorkspaceModeArg) -> Self {
        match m {
            WorkspaceModeArg::Rw => WorkspaceMode::Rw,
            WorkspaceModeArg::Copy => WorkspaceMode::Copy,
        }
    }
}
