//! Transcript cells: one entry of the transcript each (a message, a decision, an execution, a
//! pause…), holding the raw text from the events. How a cell looks at a width is decided by
//! `transcript`, which caches it per (width, revision).

use crate::protocol::{DecisionKind, FileChange, PauseKind, PolicyRule, SessionMode, StreamKind};

/// One transcript entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// What it shows.
    pub kind: CellKind,
    /// Bumped whenever the cell changes (streamed text, output, a finish).
    pub rev: u64,
    /// Seq of the event that created it.
    pub seq: u64,
    /// Wall time of that event, ms since the epoch.
    pub ts_ms: u64,
}

/// Usage of the call that produced a message.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageView {
    /// `provider/model`.
    pub model: String,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Cached prompt tokens.
    pub cached_tokens: u64,
    /// USD; `None` when unpriced.
    pub usd: Option<f64>,
    /// Counted by proctor, not reported by the provider.
    pub estimated: bool,
}

/// How a file of the workspace changed over the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileMark {
    /// Did not exist at the start.
    Created,
    /// Existed and changed.
    Modified,
    /// Existed and is gone.
    Deleted,
}

impl FileMark {
    /// One-character mark (`+`, `~`, `-`).
    pub fn sign(self) -> &'static str {
        match self {
            FileMark::Created => "+",
            FileMark::Modified => "~",
            FileMark::Deleted => "-",
        }
    }

    /// The word.
    pub fn word(self) -> &'static str {
        match self {
            FileMark::Created => "created",
            FileMark::Modified => "modified",
            FileMark::Deleted => "deleted",
        }
    }
}

/// What one block changed in the workspace.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkspaceChange {
    /// Created files.
    pub created: Vec<FileChange>,
    /// Modified files.
    pub modified: Vec<FileChange>,
    /// Deleted files.
    pub deleted: Vec<FileChange>,
    /// (path, note) of parts summarised rather than walked.
    pub notes: Vec<(String, String)>,
}

impl WorkspaceChange {
    /// Every change with its mark, in the order created, modified, deleted.
    pub fn entries(&self) -> impl Iterator<Item = (FileMark, &FileChange)> {
        self.created
            .iter()
            .map(|f| (FileMark::Created, f))
            .chain(self.modified.iter().map(|f| (FileMark::Modified, f)))
            .chain(self.deleted.iter().map(|f| (FileMark::Deleted, f)))
    }

    /// Files changed.
    pub fn len(&self) -> usize {
        self.created.len() + self.modified.len() + self.deleted.len()
    }

    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.notes.is_empty()
    }
}

/// Output of a block as it arrived: a run of text on one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputChunk {
    /// stdout or stderr.
    pub stream: StreamKind,
    /// Text (may hold several lines).
    pub text: String,
}

/// How a block ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExecEnd {
    /// Exit code (`-1` when none).
    pub exit_code: i64,
    /// Killed by the timeout.
    pub timed_out: bool,
    /// Output cut at the cap.
    pub truncated: bool,
    /// Wall time.
    pub duration_ms: u64,
    /// Killed by the OOM killer.
    pub oom: bool,
    /// Cancelled by the human, or interrupted by a crash of proctor.
    pub interrupted: bool,
    /// Never started (a refused file name, no interpreter, a sandbox failure); the output says why.
    pub not_run: bool,
    /// Killed for growing the workspace past `workspace_limit_mb`.
    pub workspace_limit_exceeded: bool,
    /// When the finish was recorded, ms since the epoch.
    pub finished_ms: u64,
}

/// A block's execution: its output so far and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecView {
    /// Approval id.
    pub id: u64,
    /// Block index.
    pub block: usize,
    /// Language.
    pub language: String,
    /// When it started, ms since the epoch.
    pub started_ms: u64,
    /// Its timeout, seconds.
    pub timeout_s: u64,
    /// Output in arrival order.
    pub chunks: Vec<OutputChunk>,
    /// Bytes of output.
    pub output_len: usize,
    /// Newlines in the output.
    pub output_lines: usize,
    /// Set when it finished.
    pub end: Option<ExecEnd>,
    /// What it changed in the workspace.
    pub changes: Option<WorkspaceChange>,
}

impl ExecView {
    /// Appends output (merging runs on the same stream).
    pub fn push_output(&mut self, stream: StreamKind, text: &str) {
        self.push_output_owned(stream, std::borrow::Cow::Borrowed(text));
    }

    /// Like [`ExecView::push_output`], keeping `text` itself when it starts a new run (no copy).
    pub fn push_output_owned(&mut self, stream: StreamKind, text: std::borrow::Cow<'_, str>) {
        self.output_len += text.len();
        self.output_lines += text.bytes().filter(|&b| b == b'\n').count();
        match self.chunks.last_mut() {
            Some(last) if last.stream == stream => last.text.push_str(&text),
            _ => self.chunks.push(OutputChunk {
                stream,
                text: text.into_owned(),
            }),
        }
    }

    /// Records the finish. `output` is the engine's capped record of the whole output; text it
    /// holds beyond what streamed (a note that the block was not run or was interrupted) is added.
    pub fn finish(&mut self, output: &str, end: ExecEnd) {
        if self.output_len == 0 {
            if !output.is_empty() {
                self.push_output(StreamKind::Stdout, output);
            }
        } else if output.len() > self.output_len && self.same_as_streamed(output) {
            let extra = output[self.output_len..].to_string();
            self.push_output(StreamKind::Stdout, &extra);
        }
        self.end = Some(end);
    }

    /// Whether `output` begins with exactly what streamed.
    fn same_as_streamed(&self, output: &str) -> bool {
        let mut rest = output;
        for c in &self.chunks {
            match rest.strip_prefix(c.text.as_str()) {
                Some(r) => rest = r,
                None => return false,
            }
        }
        true
    }

    /// The whole output as one string.
    pub fn output(&self) -> String {
        self.chunks.iter().map(|c| c.text.as_str()).collect()
    }
}

/// What a cell shows.
#[derive(Debug, Clone, PartialEq)]
pub enum CellKind {
    /// The session began.
    SessionStart {
        /// Team name.
        team: String,
        /// Task.
        task: String,
    },
    /// A message from an agent or the human.
    Message {
        /// Author.
        agent: String,
        /// Private recipient.
        to: Option<String>,
        /// Markdown source (grows while streaming).
        text: String,
        /// Still streaming.
        streaming: bool,
        /// The call that produced it.
        usage: Option<UsageView>,
    },
    /// How a speaker was chosen, when the engine says.
    SpeakerNote {
        /// Agent.
        agent: String,
        /// The note.
        note: String,
    },
    /// Manual selection asked who speaks next.
    SpeakerRequested {
        /// Candidates.
        candidates: Vec<String>,
    },
    /// An agent proposed code blocks.
    Approval {
        /// Approval id.
        id: u64,
        /// Agent.
        agent: String,
        /// (language, filename, lines) per block.
        blocks: Vec<(String, Option<String>, usize)>,
    },
    /// The decision on one block.
    Decision {
        /// Approval id.
        id: u64,
        /// Block.
        block: usize,
        /// Language.
        language: String,
        /// Decision.
        decision: DecisionKind,
        /// The agent's code (edits only, for the diff).
        original: Option<String>,
        /// The edited code.
        code: Option<String>,
        /// Rejection reason.
        reason: Option<String>,
        /// The rule that decided.
        by_rule: Option<PolicyRule>,
        /// Network allowed for this block.
        allow_network: bool,
    },
    /// A block's execution.
    Execution(ExecView),
    /// Workspace changes of a block without an execution cell.
    Workspace {
        /// Approval id.
        id: u64,
        /// Block.
        block: usize,
        /// The changes.
        changes: WorkspaceChange,
    },
    /// The executor's report to the agent (what it will read).
    ExecutorReport {
        /// Text.
        text: String,
    },
    /// A rule was added or revoked.
    Rule {
        /// The rule.
        rule: PolicyRule,
        /// Added (else revoked).
        added: bool,
    },
    /// The approval mode changed.
    ModeChanged {
        /// New mode.
        mode: SessionMode,
    },
    /// The human pinned the next speaker.
    Pinned {
        /// Agent.
        agent: String,
    },
    /// An agent was muted or unmuted.
    Muted {
        /// Agent.
        agent: String,
        /// Muted.
        muted: bool,
    },
    /// Spending crossed `warn_at`.
    BudgetWarning {
        /// Spent.
        spent_usd: f64,
        /// Cap.
        cap_usd: f64,
    },
    /// The cap changed.
    BudgetChanged {
        /// New cap.
        cap_usd: f64,
    },
    /// Something to know.
    Notice {
        /// Text.
        text: String,
    },
    /// An error.
    Error {
        /// Text.
        text: String,
    },
    /// The session paused.
    Paused {
        /// Kind.
        kind: PauseKind,
        /// Reason.
        reason: String,
    },
    /// The session continued.
    Resumed,
    /// The session ended.
    Terminated {
        /// Why.
        reason: String,
    },
}

impl CellKind {
    /// Bytes of text the cell holds (for height estimates before layout).
    pub fn text_len(&self) -> usize {
        match self {
            CellKind::Message { text, .. } | CellKind::ExecutorReport { text } => text.len(),
            CellKind::Execution(x) => x.output_len,
            CellKind::Decision {
                original,
                code,
                reason,
                ..
            } => {
                original.as_ref().map_or(0, String::len)
                    + code.as_ref().map_or(0, String::len)
                    + reason.as_ref().map_or(0, String::len)
            }
            CellKind::SessionStart { task, .. } => task.len(),
            CellKind::Notice { text } | CellKind::Error { text } => text.len(),
            CellKind::Paused { reason, .. } | CellKind::Terminated { reason } => reason.len(),
            CellKind::SpeakerNote { note, .. } => note.len(),
            CellKind::SpeakerRequested { .. }
            | CellKind::Approval { .. }
            | CellKind::Workspace { .. }
            | CellKind::Rule { .. }
            | CellKind::ModeChanged { .. }
            | CellKind::Pinned { .. }
            | CellKind::Muted { .. }
            | CellKind::BudgetWarning { .. }
            | CellKind::BudgetChanged { .. }
            | CellKind::Resumed => 0,
        }
    }

    /// The words a search looks in.
    pub fn search_text(&self) -> String {
        match self {
            CellKind::SessionStart { team, task } => format!("{team} {task}"),
            CellKind::Message { agent, text, .. } => format!("{agent}\n{text}"),
            CellKind::SpeakerNote { agent, note } => format!("{agent} {note}"),
            CellKind::SpeakerRequested { candidates } => candidates.join(" "),
            CellKind::Approval { agent, blocks, .. } => {
                let files: Vec<&str> = blocks.iter().filter_map(|b| b.1.as_deref()).collect();
                format!("approval {agent} {}", files.join(" "))
            }
            CellKind::Decision { code, reason, .. } => format!(
                "{} {}",
                code.as_deref().unwrap_or_default(),
                reason.as_deref().unwrap_or_default()
            ),
            CellKind::Execution(x) => {
                let mut s = x.output();
                if let Some(c) = &x.changes {
                    for (_, f) in c.entries() {
                        s.push('\n');
                        s.push_str(&f.path);
                    }
                }
                s
            }
            CellKind::Workspace { changes, .. } => changes
                .entries()
                .map(|(_, f)| f.path.clone())
                .collect::<Vec<_>>()
                .join("\n"),
            CellKind::ExecutorReport { text }
            | CellKind::Notice { text }
            | CellKind::Error { text } => text.clone(),
            CellKind::Paused { reason, .. } | CellKind::Terminated { reason } => reason.clone(),
            CellKind::Rule { .. }
            | CellKind::ModeChanged { .. }
            | CellKind::Pinned { .. }
            | CellKind::Muted { .. }
            | CellKind::BudgetWarning { .. }
            | CellKind::BudgetChanged { .. }
            | CellKind::Resumed => String::new(),
        }
    }
}
