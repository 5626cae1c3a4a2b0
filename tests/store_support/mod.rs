//! Shared fixtures for the store tests: one event of every kind, and a realistic small session.
#![allow(dead_code)]

use std::path::Path;

use proctor::protocol::{
    AgentActivity, CodeBlock, DecisionKind, Event, EventKind, PauseKind, PolicyRule,
    SCHEMA_VERSION, SessionMode, StreamKind,
};

pub const TEAM_TOML: &str = r#"
name = "pair"
[[agents]]
name = "coder"
description = "writes Python"
model = "openai/gpt-4o-mini"
system = "You write Python."
can_execute = true
[[agents]]
name = "reviewer"
description = "reviews code"
model = "claude/claude-sonnet-4"
system = "You review."
"#;

pub fn team() -> proctor::config::TeamConfig {
    proctor::config::parse_team(Path::new("pair.toml"), TEAM_TOML).unwrap()
}

pub fn started(task: &str) -> EventKind {
    EventKind::SessionStarted {
        team: "pair".into(),
        task: task.into(),
        schema: SCHEMA_VERSION,
        team_config: Some(Box::new(team())),
        mode: SessionMode::Gate,
    }
}

/// Index of each kind in `every_kind()`. The match is exhaustive, so a new variant does not
/// compile until it has a sample here.
pub fn kind_index(kind: &EventKind) -> usize {
    match kind {
        EventKind::SessionStarted { .. } => 0,
        EventKind::SpeakerSelected { .. } => 1,
        EventKind::SpeakerRequested { .. } => 2,
        EventKind::AgentStatus { .. } => 3,
        EventKind::MessageDelta { .. } => 4,
        EventKind::Message { .. } => 5,
        EventKind::Usage { .. } => 6,
        EventKind::ApprovalRequested { .. } => 7,
        EventKind::ApprovalResolved { .. } => 8,
        EventKind::PolicyAdded { .. } => 9,
        EventKind::ModeChanged { .. } => 10,
        EventKind::AgentMuted { .. } => 11,
        EventKind::ImagePull { .. } => 12,
        EventKind::ExecutionStarted { .. } => 13,
        EventKind::ExecutionOutput { .. } => 14,
        EventKind::ExecutionFinished { .. } => 15,
        EventKind::BudgetWarning { .. } => 16,
        EventKind::BudgetChanged { .. } => 17,
        EventKind::Notice { .. } => 18,
        EventKind::Paused { .. } => 19,
        EventKind::Resumed {} => 20,
        EventKind::Terminated { .. } => 21,
        EventKind::Error { .. } => 22,
        EventKind::Waiting { .. } => 23,
        EventKind::SpeakerPinned { .. } => 24,
        EventKind::PolicyRevoked { .. } => 25,
        EventKind::WorkspaceChanged { .. } => 26,
        EventKind::WorkspaceAttached { .. } => 27,
    }
}

pub const KINDS: usize = 28;

/// One event of every kind, session_started first, with awkward text (quotes, newlines, unicode).
pub fn every_kind() -> Vec<EventKind> {
    vec![
        started("print \"hi\"\nthen stop — ünïcode ✓"),
        EventKind::SpeakerSelected {
            agent: "coder".into(),
            note: Some("pinned by the human".into()),
        },
        EventKind::SpeakerRequested {
            candidates: vec!["coder".into(), "reviewer".into()],
        },
        EventKind::AgentStatus {
            agent: "coder".into(),
            state: AgentActivity::Streaming,
        },
        EventKind::MessageDelta {
            agent: "coder".into(),
            delta: "Here".into(),
        },
        EventKind::Message {
            agent: "coder".into(),
            content: "Here:\n```python\nprint('hi')\n```\n".into(),
            to: Some("reviewer".into()),
        },
        EventKind::Usage {
            agent: "coder".into(),
            model: "openai/gpt-4o-mini".into(),
            input_tokens: 1200,
            output_tokens: 80,
            cached_tokens: 100,
            cache_creation_tokens: 7,
            usd: Some(0.000_228),
            estimated: true,
        },
        EventKind::ApprovalRequested {
            id: 1,
            agent: "coder".into(),
            blocks: vec![CodeBlock {
                index: 0,
                language: "python".into(),
                code: "print('hi')\n".into(),
                filename: Some("hi.py".into()),
            }],
        },
        EventKind::ApprovalResolved {
            id: 1,
            block: 0,
            decision: DecisionKind::Edited,
            code: Some("print('hello')\n".into()),
            reason: Some("friendlier".into()),
            by_rule: Some(PolicyRule::LanguageAgent {
                language: "python".into(),
                agent: "coder".into(),
            }),
            allow_network: true,
        },
        EventKind::PolicyAdded {
            rule: PolicyRule::CodeSession {
                hash: "ab".repeat(32),
            },
        },
        EventKind::ModeChanged {
            mode: SessionMode::Step,
        },
        EventKind::AgentMuted {
            agent: "reviewer".into(),
            muted: true,
        },
        EventKind::SpeakerPinned {
            agent: "coder".into(),
        },
        EventKind::ImagePull {
            image: "python:3.12-slim".into(),
            status: "Downloading".into(),
            current: 10,
            total: 100,
            layers: 3,
            layers_done: 1,
        },
        EventKind::ExecutionStarted {
            id: 1,
            block: 0,
            language: "python".into(),
        },
        EventKind::ExecutionOutput {
            id: 1,
            block: 0,
            stream: StreamKind::Stderr,
            text: "warn\n".into(),
        },
        EventKind::ExecutionFinished {
            id: 1,
            block: 0,
            exit_code: -1,
            timed_out: true,
            truncated: true,
            duration_ms: 60_000,
            output: "hello\nwarn\n".into(),
            oom: true,
            interrupted: true,
            not_run: false,
            workspace_limit_exceeded: true,
        },
        EventKind::BudgetWarning {
            spent_usd: 1.6,
            cap_usd: 2.0,
        },
        EventKind::BudgetChanged { cap_usd: 5.0 },
        EventKind::Notice {
            message: "context trimmed for coder".into(),
        },
        EventKind::Paused {
            reason: "budget reached".into(),
            kind: PauseKind::Budget,
        },
        EventKind::Resumed {},
        EventKind::Terminated {
            reason: "TERMINATE".into(),
        },
        EventKind::Error {
            message: "provider said 500; retrying".into(),
        },
        EventKind::Waiting {
            on: proctor::protocol::WaitingOn::Approval,
            ops_handled: 0,
        },
        EventKind::PolicyRevoked {
            rule: PolicyRule::CodeSession {
                hash: "ab".repeat(32),
            },
        },
        EventKind::WorkspaceChanged {
            id: 1,
            block: 0,
            created: vec![proctor::protocol::FileChange {
                path: "out.csv".into(),
                size_before: None,
                size_after: Some(12),
                lines_added: Some(2),
                lines_removed: Some(0),
            }],
            modified: vec![],
            deleted: vec![],
            notes: vec![proctor::protocol::WorkspaceNote {
                path: ".git".into(),
                note: "summarised, not walked".into(),
            }],
        },
        EventKind::WorkspaceAttached {
            path: "/home/u/project \"ü\"".into(),
            mode: proctor::protocol::WorkspaceMode::Copy,
            start: Some("4b825dc642cb6eb9a060e54bf8d69288fbee4904".into()),
            commit: None,
            dir_id: Some("2049:1234".into()),
        },
    ]
}

/// Numbers kinds into events of session `id`, seq from 1, fixed timestamps.
pub fn events_of(id: &str, kinds: Vec<EventKind>) -> Vec<Event> {
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| Event {
            seq: i as u64 + 1,
            session: id.into(),
            ts_ms: 1_790_000_000_000 + i as u64 * 1000,
            kind,
        })
        .collect()
}

/// A small realistic session: a task, code proposed, approved / edited / rejected, run, paid for.
pub fn demo_session(id: &str) -> Vec<Event> {
    let fizz = "for i in range(1, 4):\n    print(i)\n";
    events_of(
        id,
        vec![
            started("Print the numbers 1 to 3"),
            EventKind::SpeakerSelected {
                agent: "coder".into(),
                note: None,
            },
            EventKind::Message {
                agent: "coder".into(),
                content: format!(
                    "Three blocks:\n\n```python\n# filename: count.py\n{fizz}```\n\n```bash\nls -la\n```\n\n```sh\nrm -rf /tmp/x\n```"
                ),
                to: None,
            },
            EventKind::Usage {
                agent: "coder".into(),
                model: "openai/gpt-4o-mini".into(),
                input_tokens: 1500,
                output_tokens: 120,
                cached_tokens: 0,
                cache_creation_tokens: 0,
                usd: Some(0.000_297),
                estimated: false,
            },
            EventKind::ApprovalRequested {
                id: 1,
                agent: "coder".into(),
                blocks: vec![
                    CodeBlock {
                        index: 0,
                        language: "python".into(),
                        code: fizz.into(),
                        filename: Some("count.py".into()),
                    },
                    CodeBlock {
                        index: 1,
                        language: "bash".into(),
                        code: "ls -la\n".into(),
                        filename: None,
                    },
                    CodeBlock {
                        index: 2,
                        language: "sh".into(),
                        code: "rm -rf /tmp/x\n".into(),
                        filename: None,
                    },
                ],
            },
            EventKind::ApprovalResolved {
                id: 1,
                block: 0,
                decision: DecisionKind::Edited,
                code: Some("for i in range(1, 4):\n    print(f\"n={i}\")\n".into()),
                reason: None,
                by_rule: None,
                allow_network: false,
            },
            EventKind::ApprovalResolved {
                id: 1,
                block: 1,
                decision: DecisionKind::Approved,
                code: None,
                reason: None,
                by_rule: None,
                allow_network: false,
            },
            EventKind::ApprovalResolved {
                id: 1,
                block: 2,
                decision: DecisionKind::Rejected,
                code: None,
                reason: Some("do not delete things".into()),
                by_rule: None,
                allow_network: false,
            },
            EventKind::ExecutionStarted {
                id: 1,
                block: 0,
                language: "python".into(),
            },
            EventKind::ExecutionOutput {
                id: 1,
                block: 0,
                stream: StreamKind::Stdout,
                text: "n=1\nn=2\nn=3\n".into(),
            },
            EventKind::ExecutionFinished {
                id: 1,
                block: 0,
                exit_code: 0,
                timed_out: false,
                truncated: false,
                duration_ms: 412,
                output: "n=1\nn=2\nn=3\n".into(),
                oom: false,
                interrupted: false,
                not_run: false,
                workspace_limit_exceeded: false,
            },
            EventKind::ExecutionStarted {
                id: 1,
                block: 1,
                language: "bash".into(),
            },
            EventKind::ExecutionFinished {
                id: 1,
                block: 1,
                exit_code: 2,
                timed_out: false,
                truncated: false,
                duration_ms: 35,
                output: "ls: cannot access '```': No such file\n".into(),
                oom: false,
                interrupted: false,
                not_run: false,
                workspace_limit_exceeded: false,
            },
            EventKind::Message {
                agent: "executor".into(),
                content: "block 0 exit 0 ...".into(),
                to: None,
            },
            EventKind::SpeakerSelected {
                agent: "reviewer".into(),
                note: None,
            },
            EventKind::Message {
                agent: "reviewer".into(),
                content: "Looks right. TERMINATE".into(),
                to: None,
            },
            EventKind::Usage {
                agent: "reviewer".into(),
                model: "claude/claude-sonnet-4".into(),
                input_tokens: 2000,
                output_tokens: 10,
                cached_tokens: 0,
                cache_creation_tokens: 0,
                usd: None,
                estimated: false,
            },
            EventKind::Terminated {
                reason: "TERMINATE mentioned by reviewer".into(),
            },
        ],
    )
}

/// The log file's lines as JSON values.
pub fn log_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}
