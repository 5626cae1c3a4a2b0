//! The protocol between the engine and its front ends: `Op`s go in, `Event`s come out.
//!
//! `Event` is also the persisted session record (one JSON object per line in `events.jsonl`) and the
//! headless `--json` stream, so its serde form is public contract (see shared/CONTRACT.md). Add fields
//! with `#[serde(default)]` so old logs keep loading; never rename a tag.

use serde::{Deserialize, Serialize};

use crate::config::TeamConfig;

/// Schema version written in the first record of every session log.
pub const SCHEMA_VERSION: u32 = 1;

/// Name used for the human in transcripts and `message` events.
pub const HUMAN: &str = "human";
/// Name used for executor result messages.
pub const EXECUTOR: &str = "executor";

/// One thing that happened in a session, with its position in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Strictly increasing per session, starting at 1.
    pub seq: u64,
    /// Full session id.
    pub session: String,
    /// Wall-clock time, milliseconds since the Unix epoch.
    #[serde(default)]
    pub ts_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Approval mode of a session (AutoGen: ALWAYS / TERMINATE / NEVER).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SessionMode {
    /// Pause before every agent turn and at every execution.
    Step,
    /// Pause at every execution (default).
    #[default]
    Gate,
    /// Approve every block automatically; code still runs in the sandbox.
    Auto,
}

/// Output stream of an executing block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One fenced code block offered for execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeBlock {
    /// Position of the block in its message, from 0.
    pub index: usize,
    /// Language, tagged or inferred (`python`, `bash`, `sh`, ...).
    pub language: String,
    /// The code as the agent wrote it.
    pub code: String,
    /// `# filename: x.py` hint, relative to the workspace.
    #[serde(default)]
    pub filename: Option<String>,
}

/// The human's decision on one block, as persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// Run as proposed.
    Approved,
    /// Run the human's edited code.
    Edited,
    /// Do not run; the reason goes back to the agent.
    Rejected,
    /// Do not run; no reason.
    Skipped,
}

/// A rule that approves future blocks without asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum PolicyRule {
    /// This exact code (sha256 of the code) once more.
    CodeOnce {
        /// Hex sha256 of the code.
        hash: String,
    },
    /// This exact code for the rest of the session.
    CodeSession {
        /// Hex sha256 of the code.
        hash: String,
    },
    /// Any block in this language from this agent for the rest of the session.
    LanguageAgent {
        /// Language name.
        language: String,
        /// Agent name.
        agent: String,
    },
    /// Session mode `auto` approved it (only in `approval_resolved.by_rule`).
    Mode {},
}

/// How a block changed one file of the workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    /// Path relative to the workspace, `/`-separated.
    pub path: String,
    /// Size before the block (absent for a created file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_before: Option<u64>,
    /// Size after the block (absent for a deleted file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_after: Option<u64>,
    /// Lines added (text files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines_added: Option<u64>,
    /// Lines removed (text files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines_removed: Option<u64>,
}

/// A part of the workspace that was summarised instead of walked (`.git/`, `target/`, an ignored
/// directory), or a note that the walk hit its cap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceNote {
    /// Path relative to the workspace (empty for the whole workspace).
    pub path: String,
    /// What was summarised or left out, in words.
    pub note: String,
}

/// How a session works in a directory of the user's (`--workspace-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceMode {
    /// The directory itself is mounted read-write.
    #[default]
    Rw,
    /// The directory is copied into the session's own directory first; the original is untouched.
    Copy,
}

/// Why the session paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PauseKind {
    /// The next call would exceed the budget.
    Budget,
    /// Loop detection fired.
    Loop,
    /// Step mode: before an agent turn.
    Step,
    /// The human asked for a pause.
    #[default]
    Human,
    /// A provider asked us to wait longer than we wait on our own.
    RetryWait,
    /// A provider call failed; continue retries the turn.
    ProviderError,
    /// The sandbox could not run code.
    Sandbox,
    /// `max_consecutive_auto_replies` agent turns without the human.
    AutoReplies,
}

/// State of one agent, for the roster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentActivity {
    /// Waiting for its turn.
    Idle,
    /// Request sent, no token yet.
    Thinking,
    /// Tokens are arriving.
    Streaming,
    /// Waiting for a retry after a provider error.
    Retrying,
    /// Its code is waiting for the human.
    AwaitingApproval,
    /// Its code is running.
    Executing,
}

/// What the engine waits for from the human.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitingOn {
    /// Decisions on the open approval.
    Approval,
    /// A manual speaker pick.
    Speaker,
    /// `continue` or `stop` after a pause.
    Continue,
    /// A first message (the session has no task yet).
    Message,
}

/// What happened. Serialized with a `type` tag in snake_case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// First record of a session.
    SessionStarted {
        /// Team name.
        team: String,
        /// The task given by the human.
        task: String,
        /// Log schema version.
        #[serde(default = "default_schema")]
        schema: u32,
        /// The full team the session runs with, so resume needs no team file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        team_config: Option<Box<TeamConfig>>,
        /// Approval mode at start.
        #[serde(default)]
        mode: SessionMode,
    },
    /// An agent takes the next turn.
    SpeakerSelected {
        /// Agent name.
        agent: String,
        /// How it was chosen, when that is worth telling (fallbacks, pins, manual picks).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// Manual selection: the engine asks the human to pick the next speaker (`Op::SelectSpeaker`).
    SpeakerRequested {
        /// Agents that may speak next.
        candidates: Vec<String>,
    },
    /// An agent's activity changed (roster).
    AgentStatus {
        /// Agent name.
        agent: String,
        /// New activity.
        state: AgentActivity,
    },
    /// Streamed text of the message in progress (not persisted).
    MessageDelta {
        /// Agent name.
        agent: String,
        /// New text.
        delta: String,
    },
    /// A complete message: from an agent, the human (`human`) or the executor (`executor`).
    Message {
        /// Author.
        agent: String,
        /// Full text.
        content: String,
        /// Private note: only this agent sees it. `None` = everyone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
    /// Token usage and cost of one model call.
    Usage {
        /// Agent the call was for (`selector` for the auto speaker selector).
        agent: String,
        /// `provider/model`.
        model: String,
        /// Prompt tokens, including cached ones.
        input_tokens: u64,
        /// Completion tokens.
        output_tokens: u64,
        /// Prompt tokens read from the provider's cache.
        cached_tokens: u64,
        /// Prompt tokens written to the provider's cache (Anthropic).
        #[serde(default)]
        cache_creation_tokens: u64,
        /// Cost in USD; `None` when the model has no price.
        usd: Option<f64>,
        /// True when counted by us rather than reported by the provider.
        estimated: bool,
    },
    /// Code blocks wait for the human; the turn is parked until each is resolved.
    ApprovalRequested {
        /// Approval id, unique in the session.
        id: u64,
        /// Proposing agent.
        agent: String,
        /// The blocks, in message order.
        blocks: Vec<CodeBlock>,
    },
    /// The decision on one block.
    ApprovalResolved {
        /// Approval id.
        id: u64,
        /// Block index.
        block: usize,
        /// Decision.
        decision: DecisionKind,
        /// Edited code (when edited).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        /// The human's reason (when rejected).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The rule that approved it, when no human was asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by_rule: Option<PolicyRule>,
        /// The human allowed network access for this block.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        allow_network: bool,
    },
    /// An auto-approval rule was added.
    PolicyAdded {
        /// The rule.
        rule: PolicyRule,
    },
    /// An auto-approval rule was revoked: it approves nothing from now on.
    PolicyRevoked {
        /// The rule.
        rule: PolicyRule,
    },
    /// Session approval mode changed.
    ModeChanged {
        /// New mode.
        mode: SessionMode,
    },
    /// The human pinned the next speaker (it speaks next, whatever the selector says).
    SpeakerPinned {
        /// Agent name.
        agent: String,
    },
    /// An agent was muted or unmuted.
    AgentMuted {
        /// Agent name.
        agent: String,
        /// True when muted.
        muted: bool,
    },
    /// The sandbox image is being pulled.
    ImagePull {
        /// Image reference.
        image: String,
        /// Docker's status line.
        status: String,
        /// Bytes done over all layers seen so far.
        current: u64,
        /// Bytes in all layers seen so far.
        total: u64,
        /// Layers seen / layers complete.
        layers: u32,
        /// Layers complete.
        layers_done: u32,
    },
    /// A block started running.
    ExecutionStarted {
        /// Approval id.
        id: u64,
        /// Block index.
        block: usize,
        /// Language.
        language: String,
    },
    /// Output of a running block (capped, escape sequences neutralised).
    ExecutionOutput {
        /// Approval id.
        id: u64,
        /// Block index.
        block: usize,
        /// Which stream.
        stream: StreamKind,
        /// Text.
        text: String,
    },
    /// A block finished.
    ExecutionFinished {
        /// Approval id.
        id: u64,
        /// Block index.
        block: usize,
        /// Exit code (`-1` when none).
        exit_code: i64,
        /// Killed by the timeout.
        timed_out: bool,
        /// Output was cut at the cap.
        truncated: bool,
        /// Wall time.
        duration_ms: u64,
        /// stdout and stderr interleaved in arrival order, capped.
        output: String,
        /// Killed by the out-of-memory killer.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        oom: bool,
        /// Cancelled by the human or interrupted by a crash of proctor.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        interrupted: bool,
        /// The code never started: its file name was refused, no interpreter knows its
        /// language, or the sandbox could not run it. `output` says why.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        not_run: bool,
        /// Killed because it grew the workspace past `workspace_limit_mb`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        workspace_limit_exceeded: bool,
    },
    /// What a finished block changed in the workspace.
    WorkspaceChanged {
        /// Approval id.
        id: u64,
        /// Block index.
        block: usize,
        /// Files the block created.
        #[serde(default)]
        created: Vec<FileChange>,
        /// Files the block modified.
        #[serde(default)]
        modified: Vec<FileChange>,
        /// Files the block deleted.
        #[serde(default)]
        deleted: Vec<FileChange>,
        /// Parts summarised rather than walked, and whether the walk hit its cap.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        notes: Vec<WorkspaceNote>,
    },
    /// The session works in a directory of the user's (right after `session_started`; again
    /// when `resume --workspace` finds it at a new place). Sessions without it work in their own
    /// directory.
    WorkspaceAttached {
        /// The directory, absolute: mounted at `/workspace` (`rw`), or copied into the session's
        /// own directory at start (`copy`).
        path: String,
        /// `rw` or `copy`.
        mode: WorkspaceMode,
        /// The git tree the patch export starts from (the workspace at session start).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<String>,
        /// The commit HEAD named at session start, when the directory is in a git repository.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        commit: Option<String>,
        /// `dev:ino` of the directory, to tell it from a replacement at the same path on resume.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dir_id: Option<String>,
    },
    /// Budget warning threshold crossed.
    BudgetWarning {
        /// Spent so far.
        spent_usd: f64,
        /// The cap.
        cap_usd: f64,
    },
    /// Budget raised by the human.
    BudgetChanged {
        /// New cap.
        cap_usd: f64,
    },
    /// Something the human should know (context trimmed, selector fell back, retrying...).
    Notice {
        /// Text.
        message: String,
    },
    /// The session waits for the human (`Op::Continue` or `Op::Stop`).
    Paused {
        /// Why, in words.
        reason: String,
        /// Why, as a kind.
        #[serde(default)]
        kind: PauseKind,
    },
    /// The session continues after a pause.
    Resumed {},
    /// The session ended.
    Terminated {
        /// Why.
        reason: String,
    },
    /// The engine is idle until the human acts (live-only).
    Waiting {
        /// What it needs.
        on: WaitingOn,
        /// Ops the engine had handled when it started waiting (a front end that sent more
        /// knows this wait is already answered).
        #[serde(default)]
        ops_handled: u64,
    },
    /// An error the human should see.
    Error {
        /// Text naming the problem and the fix.
        message: String,
    },
}

fn default_schema() -> u32 {
    SCHEMA_VERSION
}

impl EventKind {
    /// Whether `name` is the `type` tag of an event this build knows. A whole record with another
    /// tag was written by a newer proctor.
    pub fn is_known_type(name: &str) -> bool {
        // Serde names an unknown tag before it looks at any other field.
        let probe = serde_json::json!({ "type": name });
        match serde_json::from_value::<EventKind>(probe) {
            Ok(_) => true,
            Err(e) => !e.to_string().starts_with("unknown variant"),
        }
    }

    /// The `type` tag of this event, as in JSON.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::SessionStarted { .. } => "session_started",
            EventKind::SpeakerSelected { .. } => "speaker_selected",
            EventKind::SpeakerRequested { .. } => "speaker_requested",
            EventKind::AgentStatus { .. } => "agent_status",
            EventKind::MessageDelta { .. } => "message_delta",
            EventKind::Message { .. } => "message",
            EventKind::Usage { .. } => "usage",
            EventKind::ApprovalRequested { .. } => "approval_requested",
            EventKind::ApprovalResolved { .. } => "approval_resolved",
            EventKind::PolicyAdded { .. } => "policy_added",
            EventKind::PolicyRevoked { .. } => "policy_revoked",
            EventKind::ModeChanged { .. } => "mode_changed",
            EventKind::SpeakerPinned { .. } => "speaker_pinned",
            EventKind::AgentMuted { .. } => "agent_muted",
            EventKind::ImagePull { .. } => "image_pull",
            EventKind::ExecutionStarted { .. } => "execution_started",
            EventKind::ExecutionOutput { .. } => "execution_output",
            EventKind::ExecutionFinished { .. } => "execution_finished",
            EventKind::WorkspaceChanged { .. } => "workspace_changed",
            EventKind::WorkspaceAttached { .. } => "workspace_attached",
            EventKind::BudgetWarning { .. } => "budget_warning",
            EventKind::BudgetChanged { .. } => "budget_changed",
            EventKind::Notice { .. } => "notice",
            EventKind::Paused { .. } => "paused",
            EventKind::Resumed {} => "resumed",
            EventKind::Terminated { .. } => "terminated",
            EventKind::Waiting { .. } => "waiting",
            EventKind::Error { .. } => "error",
        }
    }

    /// Whether this event is written to the session log. Streaming deltas, roster activity and pull
    /// progress are live-only.
    pub fn is_persisted(&self) -> bool {
        !matches!(
            self,
            EventKind::MessageDelta { .. }
                | EventKind::AgentStatus { .. }
                | EventKind::ImagePull { .. }
                | EventKind::Waiting { .. }
        )
    }

    /// Whether the log must be fsynced after this event before anyone acts on it.
    pub fn needs_sync(&self) -> bool {
        matches!(
            self,
            EventKind::SessionStarted { .. }
                | EventKind::Message { .. }
                | EventKind::ApprovalRequested { .. }
                | EventKind::ApprovalResolved { .. }
                | EventKind::ExecutionStarted { .. }
                | EventKind::ExecutionFinished { .. }
                | EventKind::Paused { .. }
                | EventKind::Terminated { .. }
                | EventKind::SpeakerRequested { .. }
                | EventKind::WorkspaceAttached { .. }
        )
    }
}

/// The human's answer to one block, as sent by a front end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Run it.
    Approve,
    /// Run this code instead.
    Edit {
        /// The edited code.
        code: String,
    },
    /// Don't run it, and tell the agent why.
    Reject {
        /// Reason, sent back to the agent.
        #[serde(default)]
        reason: String,
    },
    /// Don't run it.
    Skip,
}

/// A request from a front end to the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Resolve one block of the open approval.
    ResolveApproval {
        /// Approval id.
        id: u64,
        /// Block index.
        block: usize,
        /// The decision.
        #[serde(flatten)]
        decision: Decision,
        /// Also add this rule (approve / edit only).
        #[serde(default)]
        remember: Option<PolicyRule>,
        /// Allow network for this block only.
        #[serde(default)]
        allow_network: bool,
    },
    /// Approve every block of the open approval that is still undecided.
    ApproveAll {
        /// Approval id.
        id: u64,
    },
    /// A message from the human: to everyone, or a private note to one agent.
    UserMessage {
        /// Text.
        text: String,
        /// Private recipient.
        #[serde(default)]
        to: Option<String>,
    },
    /// Answer to `SpeakerRequested`.
    SelectSpeaker {
        /// Agent name.
        agent: String,
    },
    /// The next turn goes to this agent, whatever the selector says.
    PinNextSpeaker {
        /// Agent name.
        agent: String,
    },
    /// Mute or unmute an agent (a muted agent is never selected).
    Mute {
        /// Agent name.
        agent: String,
        /// Muted or not.
        muted: bool,
    },
    /// Add an auto-approval rule.
    AddPolicy {
        /// The rule.
        rule: PolicyRule,
    },
    /// Revoke an auto-approval rule (it approves nothing from now on).
    RevokePolicy {
        /// The rule, as in `policy_added`.
        rule: PolicyRule,
    },
    /// Change the approval mode.
    SetMode {
        /// New mode.
        mode: SessionMode,
    },
    /// Raise (or set) the session budget.
    SetBudget {
        /// New cap in USD.
        usd: f64,
    },
    /// Pause at the next safe point.
    Pause,
    /// Continue after a pause.
    Continue,
    /// Interrupt the current model call or execution.
    Interrupt,
    /// End the session.
    Stop {
        /// Why.
        #[serde(default)]
        reason: Option<String>,
    },
    /// A line of the human's input could not be read (not UTF-8, too long, not a decision): the
    /// engine records it as an `error` event, so every consumer of the stream sees it.
    ReportInputError {
        /// What was wrong, with at most a short excerpt of the line.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_json_matches_contract_shape() {
        let ev = Event {
            seq: 3,
            session: "s1".into(),
            ts_ms: 0,
            kind: EventKind::ApprovalResolved {
                id: 1,
                block: 0,
                decision: DecisionKind::Rejected,
                code: None,
                reason: Some("use stdlib".into()),
                by_rule: None,
                allow_network: false,
            },
        };
        let v: serde_json::Value = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["type"], "approval_resolved");
        assert_eq!(v["seq"], 3);
        assert_eq!(v["session"], "s1");
        assert_eq!(v["decision"], "rejected");
        assert_eq!(v["reason"], "use stdlib");
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn decision_lines_from_contract_parse() {
        let op: Op = serde_json::from_str(
            r#"{"op":"resolve_approval","id":1,"block":0,"decision":"reject","reason":"no"}"#,
        )
        .unwrap();
        assert!(matches!(
            op,
            Op::ResolveApproval { decision: Decision::Reject { ref reason }, .. } if reason == "no"
        ));
    }

    #[test]
    fn known_event_types_are_told_from_newer_ones() {
        for name in [
            "session_started",
            "message",
            "approval_requested",
            "execution_finished",
            "workspace_changed",
            "error",
            "waiting",
        ] {
            assert!(EventKind::is_known_type(name), "{name}");
        }
        assert!(!EventKind::is_known_type("hologram_projected"));
        assert!(!EventKind::is_known_type(""));
    }
}
