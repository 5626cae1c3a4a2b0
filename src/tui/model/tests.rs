use super::*;
use crate::protocol::{CodeBlock, FileChange, StreamKind};

/// Events of a recorded `--json` stream (persisted events plus deltas).
pub(crate) fn recorded(text: &str) -> Vec<Event> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("recorded event"))
        .collect()
}

pub(crate) const DEMO_AUTO: &str =
    include_str!("../../../tests/fixtures/tui/demo_auto_stream.jsonl");
pub(crate) const DEMO_QUIT_AT_APPROVAL: &str =
    include_str!("../../../tests/fixtures/tui/demo_quit_at_approval_stream.jsonl");
pub(crate) const DEMO_RESUMED: &str =
    include_str!("../../../tests/fixtures/tui/demo_resumed_stream.jsonl");

fn fold(events: &[Event]) -> SessionView {
    let mut v = SessionView::new();
    for e in events {
        v.apply(e);
    }
    v
}

fn ev(seq: u64, kind: EventKind) -> Event {
    Event {
        seq,
        session: "s".into(),
        ts_ms: 1000 * seq,
        kind,
    }
}

fn messages(v: &SessionView) -> Vec<(String, String)> {
    v.cells
        .iter()
        .filter_map(|c| match &c.kind {
            CellKind::Message { agent, text, .. } => Some((agent.clone(), text.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_recorded_demo_folds_into_roster_cost_and_transcript() {
    let events = recorded(DEMO_AUTO);
    let v = fold(&events);
    assert_eq!(v.team, "demo");
    let names: Vec<&str> = v.agents.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["planner", "coder", "reviewer"]);
    assert!(v.agents.iter().all(|a| a.model == "scripted/demo"));
    // Every message once, in order, with its full text (streamed ones replaced by the final).
    let finals: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Message { agent, content, .. } if agent != EXECUTOR => {
                Some((agent.clone(), content.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(messages(&v), finals);
    // Cost: the sum of the usage events, per agent and in total.
    let usd: f64 = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Usage { usd, .. } => *usd,
            _ => None,
        })
        .sum();
    assert!((v.spend.usd - usd).abs() < 1e-12);
    assert_eq!(v.spend.calls, 6);
    let by_agent: f64 = v.agents.iter().map(|a| a.spend.usd).sum();
    assert!((by_agent - usd).abs() < 1e-12);
    assert_eq!(v.spend_by_model.len(), 1);
    // Both blocks ran; their output is in their cells.
    let x = v.execution(1, 0).expect("block 1 ran");
    assert!(x.output().contains("the 5"), "{}", x.output());
    assert_eq!(x.end.map(|e| e.exit_code), Some(0));
    let x = v.execution(2, 0).expect("block 2 ran");
    assert!(x.output().contains("word,count"));
    assert!(v.approvals.is_empty());
    assert!(v.running.is_none());
    assert_eq!(v.terminated.as_deref(), Some("reviewer said TERMINATE"));
    // Each message carries the usage of its call.
    let with_usage = v
        .cells
        .iter()
        .filter(|c| matches!(&c.kind, CellKind::Message { usage: Some(_), .. }))
        .count();
    assert_eq!(with_usage, 6);
}

#[test]
fn a_session_quit_at_an_approval_shows_it_open_and_a_resume_rebuilds_the_same_transcript() {
    let first = fold(&recorded(DEMO_QUIT_AT_APPROVAL));
    let open = first.open_approval().expect("the approval is open");
    assert_eq!(open.id, 1);
    assert_eq!(open.agent, "coder");
    assert!(open.blocks[0].code.contains("wordcount.py"));
    assert_eq!(open.first_undecided(), Some(0));

    // The resumed stream replays the log first: the screen is the one the session had.
    let resumed = recorded(DEMO_RESUMED);
    let replay_len = resumed
        .iter()
        .position(
            |e| matches!(&e.kind, EventKind::Notice { message } if message == "session resumed"),
        )
        .expect("resume notice");
    let replayed = fold(&resumed[..replay_len]);
    assert_eq!(messages(&replayed), messages(&first));
    assert_eq!(replayed.open_approval(), first.open_approval());
    assert!((replayed.spend.usd - first.spend.usd).abs() < 1e-12);

    // Then it goes on: the approval resolved, everything ran, the session ended.
    let done = fold(&resumed);
    assert!(done.approvals.is_empty());
    assert!(done.execution(2, 0).is_some());
    assert!(done.terminated.is_some());
    assert!(
        done.cells
            .iter()
            .any(|c| matches!(&c.kind, CellKind::Notice { text } if text == "session resumed"))
    );
}

#[test]
fn decisions_close_the_approval_block_by_block_and_edits_keep_the_original() {
    let block = |i: usize| CodeBlock {
        index: i,
        language: "python".into(),
        code: format!("print({i})"),
        filename: None,
    };
    let mut v = SessionView::new();
    v.apply(&ev(
        1,
        EventKind::ApprovalRequested {
            id: 7,
            agent: "coder".into(),
            blocks: vec![block(0), block(1)],
        },
    ));
    assert_eq!(v.open_approval().and_then(|a| a.first_undecided()), Some(0));
    v.apply(&ev(
        2,
        EventKind::ApprovalResolved {
            id: 7,
            block: 0,
            decision: DecisionKind::Edited,
            code: Some("print('x')".into()),
            reason: None,
            by_rule: None,
            allow_network: false,
        },
    ));
    assert_eq!(v.open_approval().and_then(|a| a.first_undecided()), Some(1));
    let edit = v.cells.last().map(|c| c.kind.clone());
    assert!(
        matches!(edit, Some(CellKind::Decision { original: Some(o), code: Some(c), .. }) if o == "print(0)" && c == "print('x')")
    );
    v.apply(&ev(
        3,
        EventKind::ApprovalResolved {
            id: 7,
            block: 1,
            decision: DecisionKind::Rejected,
            code: None,
            reason: Some("no".into()),
            by_rule: None,
            allow_network: false,
        },
    ));
    assert!(v.open_approval().is_none());
}

#[test]
fn execution_cells_stream_output_and_name_how_they_ended() {
    let mut v = SessionView::new();
    v.apply(&ev(
        1,
        EventKind::ExecutionStarted {
            id: 1,
            block: 0,
            language: "python".into(),
        },
    ));
    assert_eq!(v.running, Some(0));
    assert!(v.busy());
    for (i, (s, t)) in [
        (StreamKind::Stdout, "a\n"),
        (StreamKind::Stdout, "b\n"),
        (StreamKind::Stderr, "oops\n"),
    ]
    .into_iter()
    .enumerate()
    {
        v.apply(&ev(
            2 + i as u64,
            EventKind::ExecutionOutput {
                id: 1,
                block: 0,
                stream: s,
                text: t.into(),
            },
        ));
    }
    let x = v.execution(1, 0).unwrap();
    assert_eq!(x.chunks.len(), 2, "runs on one stream are merged");
    assert_eq!(x.output_lines, 3);
    v.apply(&ev(
        9,
        EventKind::ExecutionFinished {
            id: 1,
            block: 0,
            exit_code: 137,
            timed_out: false,
            truncated: false,
            duration_ms: 900,
            output: "a\nb\noops\nkilled: out of memory\n".into(),
            oom: true,
            interrupted: false,
            not_run: false,
            workspace_limit_exceeded: false,
        },
    ));
    let x = v.execution(1, 0).unwrap();
    assert!(x.end.unwrap().oom);
    assert_eq!(x.output(), "a\nb\noops\nkilled: out of memory\n");
    assert!(v.running.is_none());

    // A block that never started (refused) still gets a cell with the engine's words.
    v.apply(&ev(
        10,
        EventKind::ExecutionFinished {
            id: 1,
            block: 1,
            exit_code: -1,
            timed_out: false,
            truncated: false,
            duration_ms: 0,
            output: "not run: bad filename".into(),
            oom: false,
            interrupted: false,
            not_run: false,
            workspace_limit_exceeded: false,
        },
    ));
    assert_eq!(v.execution(1, 1).unwrap().output(), "not run: bad filename");
}

#[test]
fn workspace_changes_attach_to_their_block_and_sum_up_per_file() {
    let file = |p: &str| FileChange {
        path: p.into(),
        size_before: None,
        size_after: Some(10),
        lines_added: Some(1),
        lines_removed: None,
    };
    let mut v = SessionView::new();
    v.apply(&ev(
        1,
        EventKind::ExecutionStarted {
            id: 1,
            block: 0,
            language: "bash".into(),
        },
    ));
    v.apply(&ev(
        2,
        EventKind::WorkspaceChanged {
            id: 1,
            block: 0,
            created: vec![file("a.py"), file("tmp.txt")],
            modified: vec![file("old.csv")],
            deleted: vec![],
            notes: vec![],
        },
    ));
    assert_eq!(
        v.execution(1, 0).unwrap().changes.as_ref().unwrap().len(),
        3
    );
    v.apply(&ev(
        3,
        EventKind::WorkspaceChanged {
            id: 2,
            block: 0,
            created: vec![],
            modified: vec![file("a.py")],
            deleted: vec![file("tmp.txt"), file("old.csv")],
            notes: vec![],
        },
    ));
    let marks: Vec<(&str, FileMark)> = v.workspace.iter().map(|(p, m)| (p.as_str(), *m)).collect();
    assert_eq!(
        marks,
        [("a.py", FileMark::Created), ("old.csv", FileMark::Deleted)],
        "created then modified is still new; created then deleted is no change"
    );
    // No execution cell for approval 2: the changes get a cell of their own.
    assert!(matches!(
        v.cells.last().map(|c| &c.kind),
        Some(CellKind::Workspace { id: 2, .. })
    ));
}

#[test]
fn rules_pauses_and_manual_picks_follow_their_events() {
    let mut v = SessionView::new();
    let rule = PolicyRule::LanguageAgent {
        language: "python".into(),
        agent: "coder".into(),
    };
    v.apply(&ev(1, EventKind::PolicyAdded { rule: rule.clone() }));
    v.apply(&ev(2, EventKind::PolicyAdded { rule: rule.clone() }));
    assert_eq!(v.rules, vec![rule.clone()]);
    v.apply(&ev(3, EventKind::PolicyRevoked { rule }));
    assert!(v.rules.is_empty());
    v.apply(&ev(
        4,
        EventKind::Paused {
            reason: "budget".into(),
            kind: PauseKind::Budget,
        },
    ));
    assert_eq!(v.paused.as_ref().map(|p| p.kind), Some(PauseKind::Budget));
    v.apply(&ev(5, EventKind::Resumed {}));
    assert!(v.paused.is_none());
    v.apply(&ev(
        6,
        EventKind::SpeakerRequested {
            candidates: vec!["a".into(), "b".into()],
        },
    ));
    assert_eq!(v.speaker_requested.as_ref().map(Vec::len), Some(2));
    v.apply(&ev(
        7,
        EventKind::SpeakerSelected {
            agent: "a".into(),
            note: Some("chosen by the human".into()),
        },
    ));
    assert!(v.speaker_requested.is_none());
    v.apply(&ev(8, EventKind::BudgetChanged { cap_usd: 3.0 }));
    assert_eq!(v.budget_usd, Some(3.0));
}

#[test]
fn a_usage_before_its_message_is_shown_with_that_message() {
    let mut v = SessionView::new();
    v.apply(&ev(
        1,
        EventKind::Usage {
            agent: "coder".into(),
            model: "m/x".into(),
            input_tokens: 10,
            output_tokens: 5,
            cached_tokens: 2,
            cache_creation_tokens: 0,
            usd: None,
            estimated: true,
        },
    ));
    v.apply(&ev(
        2,
        EventKind::Message {
            agent: "coder".into(),
            content: "hi".into(),
            to: None,
        },
    ));
    assert!(
        matches!(&v.cells[0].kind, CellKind::Message { usage: Some(u), .. } if u.output_tokens == 5 && u.usd.is_none())
    );
    assert_eq!(v.spend.unpriced_calls, 1);
    assert_eq!(v.spend.estimated_calls, 1);
}
