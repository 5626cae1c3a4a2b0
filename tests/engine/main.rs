//! Engine tests: the real orchestrator with the scripted model, a recording executor and an
//! in-memory log. Each test asserts what a user would see: who spoke, what ran, what the next
//! model request contained, why the session paused or ended.

mod harness;

use std::time::Duration;

use harness::*;
use proctor::config::PriceConfig;
use proctor::engine::cost::PriceTable;
use proctor::protocol::{
    Decision, DecisionKind, EventKind, Op, PauseKind, PolicyRule, SessionMode,
};
use proctor::provider::scripted::{ScriptedModel, ScriptedReply};

const CODE: &str = "Here:\n```python\nprint('hi')\n```\n";

fn is_terminated(k: &EventKind) -> bool {
    matches!(k, EventKind::Terminated { .. })
}
fn is_approval(k: &EventKind) -> bool {
    matches!(k, EventKind::ApprovalRequested { .. })
}
fn is_paused(k: &EventKind) -> bool {
    matches!(k, EventKind::Paused { .. })
}

fn resolve(id: u64, block: usize, decision: Decision) -> Op {
    Op::ResolveApproval {
        id,
        block,
        decision,
        remember: None,
        allow_network: false,
    }
}

#[tokio::test]
async fn round_robin_alternates_and_text_mention_terminates() {
    let mut s = Builder::new(PAIR)
        .reply("coder", "a plan")
        .reply("reviewer", "looks fine")
        .reply("coder", "done TERMINATE")
        .start();
    s.wait_for("end", is_terminated).await;
    assert_eq!(s.speakers(), ["coder", "reviewer", "coder"]);
    assert_eq!(s.terminated_reason().unwrap(), "coder said TERMINATE");
    // Deltas are streamed before the full message.
    let types = s.types();
    let first_delta = types.iter().position(|t| t == "message_delta").unwrap();
    let first_agent_msg = s
        .seen
        .iter()
        .position(|e| matches!(&e.kind, EventKind::Message { agent, .. } if agent == "coder"))
        .unwrap();
    assert!(first_delta < first_agent_msg);
    // The reviewer saw the coder's message labelled with its name, and its own system prompt.
    let r = s.requests();
    assert_eq!(r[1].agent, "reviewer");
    assert!(r[1].system.starts_with("You review."));
    assert!(r[1].messages.iter().any(|m| m.content == "[coder]: a plan"));
    assert!(r[1].messages[0].content.contains("write hello world"));
}

#[tokio::test]
async fn max_rounds_terminates() {
    let team = format!("{PAIR}\n[orchestration]\nmax_rounds = 3\n");
    let mut s = Builder::new(&team)
        .reply("coder", "1")
        .reply("reviewer", "2")
        .reply("coder", "3")
        .start();
    s.wait_for("end", is_terminated).await;
    assert_eq!(s.speakers().len(), 3);
    assert!(s.terminated_reason().unwrap().contains("max_rounds"));
}

#[tokio::test]
async fn max_consecutive_auto_replies_ends_an_auto_session() {
    let team = format!("{PAIR}\n[termination]\nmax_consecutive_auto_replies = 2\n");
    let mut s = Builder::new(&team)
        .reply("coder", "1")
        .reply("reviewer", "2")
        .reply("coder", "3")
        .mode(SessionMode::Auto)
        .start();
    s.wait_for("end", is_terminated).await;
    assert!(
        s.terminated_reason()
            .unwrap()
            .contains("max_consecutive_auto_replies")
    );
    // Counted per agent, as AutoGen does: the coder's second reply reaches 2.
    assert_eq!(s.speakers().len(), 3);
}

#[tokio::test]
async fn max_consecutive_auto_replies_asks_the_human_and_a_message_resets_it() {
    let team = format!("{PAIR}\n[termination]\nmax_consecutive_auto_replies = 2\n");
    let mut s = Builder::new(&team)
        .reply("coder", "1")
        .reply("reviewer", "2")
        .reply("coder", "3")
        .reply("reviewer", "4 TERMINATE")
        .start();
    let p = s.wait_for("pause", is_paused).await;
    assert!(matches!(
        p.kind,
        EventKind::Paused {
            kind: PauseKind::AutoReplies,
            ..
        }
    ));
    assert_eq!(
        s.speakers().len(),
        3,
        "the coder's second reply in a row reaches 2"
    );
    // A message to everyone answers the pause by itself.
    s.send(Op::UserMessage {
        text: "go on, two more".into(),
        to: None,
    });
    s.wait_for("end", is_terminated).await;
    assert_eq!(s.speakers().len(), 4);
    assert!(s.last_request_text("reviewer").contains("go on, two more"));
}

#[tokio::test(start_paused = true)]
async fn session_timeout_terminates() {
    let team = format!("{PAIR}\n[termination]\ntimeout_s = 1\n");
    let replies = vec![
        ScriptedReply {
            agent: Some("coder".into()),
            text: "slow reply".into(),
            delay_ms: 700,
            ..Default::default()
        },
        ScriptedReply {
            agent: Some("reviewer".into()),
            text: "slow too".into(),
            delay_ms: 700,
            ..Default::default()
        },
        ScriptedReply::for_agent("coder", "never asked"),
    ];
    let mut s = Builder::new(&team).replies(replies).start();
    s.wait_for("end", is_terminated).await;
    assert!(s.terminated_reason().unwrap().contains("timeout"));
    assert!(s.requests().len() < 3);
}

#[tokio::test]
async fn composable_all_condition() {
    use proctor::engine::state::SessionState;
    use proctor::engine::termination::Condition;
    let state = SessionState {
        rounds: 5,
        ..Default::default()
    };
    let all = Condition::All(vec![
        Condition::MaxRounds(3),
        Condition::MaxConsecutiveAutoReplies(10),
    ]);
    assert_eq!(all.check(&state, Duration::ZERO), None);
    let state = SessionState {
        rounds: 5,
        consecutive_auto: 10,
        ..Default::default()
    };
    assert!(all.check(&state, Duration::ZERO).unwrap().contains(" and "));
}

#[tokio::test]
async fn approve_runs_block_and_result_reaches_the_agent() {
    let mut s = Builder::new(PAIR)
        .reply("coder", CODE)
        .reply("reviewer", "ok TERMINATE")
        .start();
    let ev = s.wait_for("approval", is_approval).await;
    let id = approval_id(&ev);
    if let EventKind::ApprovalRequested { blocks, agent, .. } = &ev.kind {
        assert_eq!(agent, "coder");
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].language, "python");
    }
    s.send(resolve(id, 0, Decision::Approve));
    s.wait_for("end", is_terminated).await;
    let runs = s.exec.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].code, "print('hi')");
    let types = s.types();
    let pos = |t: &str| types.iter().position(|x| x == t).unwrap();
    assert!(pos("approval_resolved") < pos("execution_started"));
    assert!(pos("execution_started") < pos("execution_output"));
    assert!(pos("execution_output") < pos("execution_finished"));
    let next = s.last_request_text("reviewer");
    assert!(next.contains("approved and run as proposed"), "{next}");
    assert!(next.contains("exit code 0"));
}

#[tokio::test]
async fn what_a_block_changed_follows_its_result_and_reaches_the_agents() {
    use proctor::protocol::{FileChange, WorkspaceNote};
    let change =
        |path: &str, before: Option<u64>, after: Option<u64>, add: u64, rm: u64| FileChange {
            path: path.into(),
            size_before: before,
            size_after: after,
            lines_added: Some(add),
            lines_removed: Some(rm),
        };
    let delta = proctor::workspace::WorkspaceDelta {
        created: vec![change("out/report.csv", None, Some(40), 3, 0)],
        modified: vec![change("main.py", Some(100), Some(120), 2, 1)],
        deleted: vec![change("old.txt", Some(9), None, 0, 1)],
        notes: vec![WorkspaceNote {
            path: "target".into(),
            note: "build output (not walked): created".into(),
        }],
    };
    let mut b = Builder::new(PAIR)
        .reply("coder", CODE)
        .reply("reviewer", "ok TERMINATE");
    b.exec.changes = Some(delta.clone());
    let mut s = b.start();
    let ev = s.wait_for("approval", is_approval).await;
    s.send(resolve(approval_id(&ev), 0, Decision::Approve));
    let ev = s
        .wait_for("changes", |k| {
            matches!(k, EventKind::WorkspaceChanged { .. })
        })
        .await;
    let EventKind::WorkspaceChanged {
        block,
        created,
        modified,
        deleted,
        notes,
        ..
    } = &ev.kind
    else {
        unreachable!()
    };
    assert_eq!(*block, 0);
    assert_eq!(
        (created, modified, deleted, notes),
        (
            &delta.created,
            &delta.modified,
            &delta.deleted,
            &delta.notes
        )
    );
    s.wait_for("end", is_terminated).await;
    let types = s.types();
    let pos = |t: &str| types.iter().position(|x| x == t).unwrap();
    assert_eq!(pos("execution_finished") + 1, pos("workspace_changed"));
    let next = s.last_request_text("reviewer");
    for line in [
        "- created out/report.csv (3 lines, 40 B)",
        "- modified main.py (+2 −1 lines, 100 B → 120 B)",
        "- deleted old.txt (1 line, 9 B)",
        "- note: target: build output (not walked): created",
    ] {
        assert!(next.contains(line), "{line} missing from:\n{next}");
    }
}

#[tokio::test]
async fn a_block_killed_at_the_workspace_limit_is_told_so_and_the_session_goes_on() {
    let mut b = Builder::new(PAIR)
        .reply("coder", CODE)
        .reply("reviewer", "ok TERMINATE");
    b.exec.fill_workspace = true;
    let mut s = b.start();
    let ev = s.wait_for("approval", is_approval).await;
    s.send(resolve(approval_id(&ev), 0, Decision::Approve));
    let ev = s
        .wait_for("finish", |k| {
            matches!(k, EventKind::ExecutionFinished { .. })
        })
        .await;
    assert!(matches!(
        ev.kind,
        EventKind::ExecutionFinished {
            workspace_limit_exceeded: true,
            interrupted: false,
            ..
        }
    ));
    s.wait_for("end", is_terminated).await;
    assert!(!s.types().iter().any(|t| t == "paused"), "{:?}", s.types());
    let next = s.last_request_text("reviewer");
    assert!(
        next.contains("past its disk limit (workspace_limit_mb)"),
        "{next}"
    );
}

#[tokio::test]
async fn edit_runs_edited_code_and_tells_the_agent() {
    let mut s = Builder::new(PAIR)
        .reply("coder", CODE)
        .reply("reviewer", "TERMINATE")
        .start();
    let id = approval_id(&s.wait_for("approval", is_approval).await);
    s.send(resolve(
        id,
        0,
        Decision::Edit {
            code: "print('edited')".into(),
        },
    ));
    s.wait_for("end", is_terminated).await;
    assert_eq!(s.exec.runs.lock().unwrap()[0].code, "print('edited')");
    let resolved = s.seen.iter().find_map(|e| match &e.kind {
        EventKind::ApprovalResolved { decision, code, .. } => Some((*decision, code.clone())),
        _ => None,
    });
    assert_eq!(
        resolved,
        Some((DecisionKind::Edited, Some("print('edited')".into())))
    );
    let next = s.last_request_text("reviewer");
    assert!(next.contains("the human EDITED this block"), "{next}");
    assert!(
        next.contains("-print('hi')") && next.contains("+print('edited')"),
        "the agent sees a diff of what changed: {next}"
    );
    assert!(next.contains("print('edited')"));
}

#[tokio::test]
async fn reject_reason_is_in_the_very_next_request_of_the_proposer() {
    let team = r#"
name = "solo"
[[agents]]
name = "coder"
model = "scripted/m"
can_execute = true
"#;
    let mut s = Builder::new(team)
        .reply("coder", CODE)
        .reply("coder", "ok, TERMINATE")
        .start();
    let id = approval_id(&s.wait_for("approval", is_approval).await);
    s.send(resolve(
        id,
        0,
        Decision::Reject {
            reason: "use the stdlib only".into(),
        },
    ));
    s.wait_for("end", is_terminated).await;
    assert!(
        s.exec.runs.lock().unwrap().is_empty(),
        "a rejected block must not run"
    );
    let next = s.last_request_text("coder");
    assert!(
        next.contains("REJECTED by the human, not run. Reason: use the stdlib only"),
        "{next}"
    );
}

#[tokio::test]
async fn skip_and_several_blocks_each_decided_separately() {
    let text = "```python\nprint(1)\n```\n```bash\necho two\n```\n```python\nprint(3)\n```\n";
    let mut s = Builder::new(PAIR)
        .reply("coder", text)
        .reply("reviewer", "TERMINATE")
        .start();
    let id = approval_id(&s.wait_for("approval", is_approval).await);
    s.send(resolve(id, 0, Decision::Skip));
    s.send(resolve(id, 1, Decision::Approve));
    s.send(resolve(
        id,
        2,
        Decision::Reject {
            reason: "no".into(),
        },
    ));
    s.wait_for("end", is_terminated).await;
    let runs = s.exec.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].language, "bash");
    let next = s.last_request_text("reviewer");
    assert!(next.contains("Block 1 (python): skipped by the human"));
    assert!(next.contains("Block 2 (bash): approved and run"));
    assert!(next.contains("Block 3 (python): REJECTED"));
}

#[tokio::test]
async fn nothing_runs_until_every_block_is_decided() {
    let text = "```python\nprint(1)\n```\n```python\nprint(2)\n```\n";
    let mut s = Builder::new(PAIR)
        .reply("coder", text)
        .reply("reviewer", "TERMINATE")
        .start();
    let id = approval_id(&s.wait_for("approval", is_approval).await);
    s.send(resolve(id, 0, Decision::Approve));
    s.wait_for("first decision", |k| {
        matches!(k, EventKind::ApprovalResolved { .. })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(s.exec.runs.lock().unwrap().is_empty());
    s.send(Op::ApproveAll { id });
    s.wait_for("end", is_terminated).await;
    assert_eq!(s.exec.runs.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn policy_code_session_and_once_rules() {
    let solo = "name='s'\n[[agents]]\nname='coder'\nmodel='scripted/m'\ncan_execute=true\n";
    let mut s = Builder::new(solo)
        .reply("coder", CODE)
        .reply("coder", CODE)
        .reply("coder", "```python\nprint('other')\n```")
        .reply("coder", "TERMINATE")
        .start();
    let id = approval_id(&s.wait_for("approval", is_approval).await);
    let hash = proctor::engine::state::code_hash("print('hi')");
    s.send(Op::ResolveApproval {
        id,
        block: 0,
        decision: Decision::Approve,
        remember: Some(PolicyRule::CodeSession { hash }),
        allow_network: false,
    });
    // Second identical proposal is approved by the rule without asking.
    let second = s.wait_for("second approval", is_approval).await;
    let rid = approval_id(&second);
    let by_rule = s
        .wait_for("auto resolution", |k| {
            matches!(
                k,
                EventKind::ApprovalResolved {
                    by_rule: Some(_),
                    ..
                }
            )
        })
        .await;
    if let EventKind::ApprovalResolved { id, by_rule, .. } = by_rule.kind {
        assert_eq!(id, rid);
        assert!(matches!(by_rule, Some(PolicyRule::CodeSession { .. })));
    }
    // Different code still asks.
    let third = approval_id(&s.wait_for("third approval", is_approval).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.send(resolve(third, 0, Decision::Skip));
    s.wait_for("end", is_terminated).await;
    assert_eq!(s.exec.runs.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn policy_language_agent_rule_and_auto_mode() {
    let mut s = Builder::new(PAIR)
        .reply("coder", CODE)
        .reply("reviewer", "TERMINATE")
        .start();
    s.send(Op::AddPolicy {
        rule: PolicyRule::LanguageAgent {
            language: "python".into(),
            agent: "coder".into(),
        },
    });
    s.wait_for("end", is_terminated).await;
    assert_eq!(s.exec.runs.lock().unwrap().len(), 1);

    let mut s = Builder::new(PAIR)
        .reply("coder", CODE)
        .reply("reviewer", "TERMINATE")
        .mode(SessionMode::Auto)
        .start();
    s.wait_for("end", is_terminated).await;
    assert_eq!(s.exec.runs.lock().unwrap().len(), 1);
    assert!(s.seen.iter().any(|e| matches!(
        &e.kind,
        EventKind::ApprovalResolved {
            by_rule: Some(PolicyRule::Mode {}),
            ..
        }
    )));
}

#[tokio::test]
async fn a_revoked_rule_approves_nothing_more() {
    let rule = PolicyRule::LanguageAgent {
        language: "python".into(),
        agent: "coder".into(),
    };
    let mut s = Builder::new(PAIR)
        .reply("coder", CODE)
        .reply("reviewer", "TERMINATE")
        .mode(SessionMode::Step)
        .start();
    s.wait_for("step pause", is_paused).await;
    s.send(Op::AddPolicy { rule: rule.clone() });
    s.send(Op::RevokePolicy { rule: rule.clone() });
    s.wait_for("revoked", |k| matches!(k, EventKind::PolicyRevoked { .. }))
        .await;
    s.send(Op::Continue);
    // The block is asked about, not approved by the revoked rule.
    let id = approval_id(&s.wait_for("approval", is_approval).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!s.seen.iter().any(|e| matches!(
        &e.kind,
        EventKind::ApprovalResolved {
            by_rule: Some(_),
            ..
        }
    )));
    s.send(resolve(id, 0, Decision::Skip));
    s.wait_for("second step pause", is_paused).await;
    // Revoking a rule that does not exist is an error event, not a crash.
    s.send(Op::RevokePolicy { rule });
    s.wait_for(
        "error",
        |k| matches!(k, EventKind::Error { message } if message.contains("no such")),
    )
    .await;
    s.send(Op::Continue);
    s.wait_for("end", is_terminated).await;
    assert!(s.exec.runs.lock().unwrap().is_empty());
}

#[tokio::test]
async fn step_mode_pauses_before_every_agent_turn() {
    let mut s = Builder::new(PAIR)
        .reply("coder", "one")
        .reply("reviewer", "TERMINATE")
        .mode(SessionMode::Step)
        .start();
    let p = s.wait_for("step pause", is_paused).await;
    assert!(matches!(
        p.kind,
        EventKind::Paused {
            kind: PauseKind::Step,
            ..
        }
    ));
    assert!(
        s.requests().is_empty(),
        "no call before the human continues"
    );
    s.send(Op::Continue);
    s.wait_for("second step pause", is_paused).await;
    assert_eq!(s.requests().len(), 1);
    s.send(Op::Continue);
    s.wait_for("end", is_terminated).await;
}

#[tokio::test]
async fn manual_selection_asks_the_human() {
    let team = format!("{PAIR}\n[orchestration]\nspeaker_selection = \"manual\"\n");
    let mut s = Builder::new(&team).reply("reviewer", "TERMINATE").start();
    let ev = s
        .wait_for("speaker request", |k| {
            matches!(k, EventKind::SpeakerRequested { .. })
        })
        .await;
    if let EventKind::SpeakerRequested { candidates } = ev.kind {
        assert_eq!(candidates, ["coder", "reviewer"]);
    }
    s.send(Op::SelectSpeaker {
        agent: "reviewer".into(),
    });
    s.wait_for("end", is_terminated).await;
    assert_eq!(s.speakers(), ["reviewer"]);
}

#[tokio::test]
async fn auto_selection_uses_the_selector_and_falls_back_after_one_retry() {
    let team = format!("{PAIR}\n[orchestration]\nspeaker_selection = \"auto\"\n");
    let mut s = Builder::new(&team)
        .replies(vec![
            ScriptedReply::for_agent("selector", "reviewer"),
            ScriptedReply::for_agent("reviewer", "first"),
            ScriptedReply::for_agent("selector", "hmm, not sure"),
            ScriptedReply::for_agent("selector", "both of them"),
            ScriptedReply::for_agent("coder", "TERMINATE"),
        ])
        .start();
    s.wait_for("end", is_terminated).await;
    assert_eq!(s.speakers(), ["reviewer", "coder"]);
    let selector_reqs: Vec<_> = s
        .requests()
        .into_iter()
        .filter(|r| r.agent == "selector")
        .collect();
    assert_eq!(selector_reqs.len(), 3, "one call, then one retry");
    assert!(
        selector_reqs[0].system.contains("coder: writes python"),
        "roster descriptions are given"
    );
    let note = s.seen.iter().find_map(|e| match &e.kind {
        EventKind::SpeakerSelected { note: Some(n), .. } => Some(n.clone()),
        _ => None,
    });
    assert!(note.unwrap().contains("fell back to round robin"));
    // The selector's calls are costed too.
    assert!(
        s.seen
            .iter()
            .any(|e| matches!(&e.kind, EventKind::Usage { agent, .. } if agent == "selector"))
    );
}

#[tokio::test]
async fn random_selection_respects_allowed_transitions() {
    let team = r#"
name = "three"
[[agents]]
name = "a"
model = "scripted/m"
[[agents]]
name = "b"
model = "scripted/m"
[[agents]]
name = "c"
model = "scripted/m"
[orchestration]
speaker_selection = "random"
max_rounds = 12
allowed_transitions = { a = ["b"], b = ["c"], c = ["a"] }
[termination]
max_consecutive_auto_replies = 100
"#;
    let replies = (0..12)
        .map(|i| ScriptedReply::next(&format!("turn {i}")))
        .collect();
    let mut s = Builder::new(team).replies(replies).start();
    s.wait_for("end", is_terminated).await;
    let sp = s.speakers();
    assert_eq!(sp.len(), 12);
    for w in sp.windows(2) {
        let ok = matches!(
            (w[0].as_str(), w[1].as_str()),
            ("a", "b") | ("b", "c") | ("c", "a")
        );
        assert!(ok, "transition {w:?} not allowed");
    }
}

#[tokio::test]
async fn random_selection_uses_every_candidate() {
    let team = "name='r'\n[[agents]]\nname='a'\nmodel='scripted/m'\n[[agents]]\nname='b'\nmodel='scripted/m'\n[[agents]]\nname='c'\nmodel='scripted/m'\n[orchestration]\nspeaker_selection='random'\nmax_rounds=30\n[termination]\nmax_consecutive_auto_replies=100\n";
    let replies = (0..30)
        .map(|i| ScriptedReply::next(&format!("turn {i}")))
        .collect();
    let mut s = Builder::new(team).replies(replies).start();
    s.wait_for("end", is_terminated).await;
    let sp = s.speakers();
    for name in ["a", "b", "c"] {
        assert!(
            sp.iter().any(|x| x == name),
            "{name} never picked in {sp:?}"
        );
    }
    assert!(
        sp.windows(3)
            .any(|w| !(w[0] != w[1] && w[1] != w[2] && w[0] != w[2])),
        "not just round robin: {sp:?}"
    );
}

#[tokio::test]
async fn private_note_reaches_only_its_agent_and_group_message_reaches_all() {
    let team = format!("{PAIR}\n[orchestration]\nspeaker_selection = \"manual\"\n");
    let mut s = Builder::new(&team)
        .reply("coder", "ok")
        .reply("reviewer", "TERMINATE")
        .start();
    s.wait_for("speaker request", |k| {
        matches!(k, EventKind::SpeakerRequested { .. })
    })
    .await;
    s.send(Op::UserMessage {
        text: "psst coder: keep it short".into(),
        to: Some("coder".into()),
    });
    s.send(Op::UserMessage {
        text: "everyone: use python 3.12".into(),
        to: None,
    });
    s.send(Op::SelectSpeaker {
        agent: "coder".into(),
    });
    s.wait_for("second request", |k| {
        matches!(k, EventKind::SpeakerRequested { .. })
    })
    .await;
    s.send(Op::SelectSpeaker {
        agent: "reviewer".into(),
    });
    s.wait_for("end", is_terminated).await;
    let coder = s.last_request_text("coder");
    let reviewer = s.last_request_text("reviewer");
    assert!(coder.contains("[human, privately to you]: psst coder: keep it short"));
    assert!(
        !reviewer.contains("psst"),
        "a private note leaked: {reviewer}"
    );
    assert!(coder.contains("everyone: use python 3.12"));
    assert!(reviewer.contains("everyone: use python 3.12"));
}

#[tokio::test]
async fn pin_and_mute_change_who_speaks() {
    let team = r#"
name = "three"
[[agents]]
name = "a"
model = "scripted/m"
[[agents]]
name = "b"
model = "scripted/m"
[[agents]]
name = "c"
model = "scripted/m"
[orchestration]
speaker_selection = "manual"
"#;
    let mut s = Builder::new(team)
        .reply("c", "from c")
        .reply("a", "TERMINATE")
        .start();
    s.wait_for("request", |k| {
        matches!(k, EventKind::SpeakerRequested { .. })
    })
    .await;
    s.send(Op::Mute {
        agent: "b".into(),
        muted: true,
    });
    s.send(Op::SelectSpeaker { agent: "c".into() });
    let ev = s
        .wait_for("second request", |k| {
            matches!(k, EventKind::SpeakerRequested { .. })
        })
        .await;
    if let EventKind::SpeakerRequested { candidates } = ev.kind {
        assert_eq!(candidates, ["a", "c"], "muted agent is not offered");
    }
    s.send(Op::SelectSpeaker { agent: "a".into() });
    s.wait_for("end", is_terminated).await;

    // Pinning overrides round robin.
    let mut s = Builder::new(PAIR)
        .replies(vec![ScriptedReply {
            agent: Some("coder".into()),
            text: "slow".into(),
            delay_ms: 50,
            ..Default::default()
        }])
        .reply("coder", "TERMINATE")
        .start();
    s.wait_for("coder streaming", |k| {
        matches!(k, EventKind::MessageDelta { .. })
    })
    .await;
    s.send(Op::PinNextSpeaker {
        agent: "coder".into(),
    });
    s.wait_for("end", is_terminated).await;
    assert_eq!(
        s.speakers(),
        ["coder", "coder"],
        "round robin would have picked the reviewer"
    );
}

#[tokio::test]
async fn interrupt_cancels_a_model_call_within_100ms() {
    let slow = ScriptedReply {
        agent: Some("coder".into()),
        text: "a b c d e f g h i j k l m n o p q r s t u v w x y z ".repeat(20),
        delay_ms: 200,
        ..Default::default()
    };
    let mut s = Builder::new(PAIR).replies(vec![slow]).start();
    s.wait_for("streaming", |k| matches!(k, EventKind::MessageDelta { .. }))
        .await;
    let t0 = std::time::Instant::now();
    s.send(Op::Interrupt);
    s.wait_for(
        "message",
        |k| matches!(k, EventKind::Message { agent, .. } if agent == "coder"),
    )
    .await;
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "took {:?}",
        t0.elapsed()
    );
    let p = s.wait_for("pause", is_paused).await;
    assert!(matches!(
        p.kind,
        EventKind::Paused {
            kind: PauseKind::Human,
            ..
        }
    ));
    s.send(Op::Stop { reason: None });
    s.wait_for("end", is_terminated).await;
}

#[tokio::test]
async fn interrupt_cancels_an_execution_within_100ms() {
    let exec = FakeExecutor {
        hang_on: Some("forever".into()),
        ..Default::default()
    };
    let mut b = Builder::new(PAIR).reply("coder", "```python\n# forever\nwhile True: pass\n```");
    b.exec = exec;
    let mut s = b.start();
    let id = approval_id(&s.wait_for("approval", is_approval).await);
    s.send(resolve(id, 0, Decision::Approve));
    s.wait_for("started", |k| {
        matches!(k, EventKind::ExecutionStarted { .. })
    })
    .await;
    let t0 = std::time::Instant::now();
    s.send(Op::Interrupt);
    let fin = s
        .wait_for("finished", |k| {
            matches!(k, EventKind::ExecutionFinished { .. })
        })
        .await;
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "took {:?}",
        t0.elapsed()
    );
    assert!(matches!(
        fin.kind,
        EventKind::ExecutionFinished {
            interrupted: true,
            not_run: false,
            ..
        }
    ));
    s.wait_for("pause", is_paused).await;
}

#[tokio::test]
async fn same_code_three_times_pauses_for_the_human() {
    let solo = "name='s'\n[[agents]]\nname='coder'\nmodel='scripted/m'\ncan_execute=true\n";
    let mut s = Builder::new(solo)
        .reply("coder", CODE)
        .reply("coder", CODE)
        .reply("coder", CODE)
        .reply("coder", "TERMINATE")
        .start();
    for _ in 0..3 {
        let id = approval_id(&s.wait_for("approval", is_approval).await);
        s.send(resolve(id, 0, Decision::Approve));
    }
    let p = s.wait_for("loop pause", is_paused).await;
    match &p.kind {
        EventKind::Paused { kind, reason } => {
            assert_eq!(*kind, PauseKind::Loop);
            assert!(reason.contains("same code 3 times"), "{reason}");
        }
        _ => unreachable!(),
    }
    s.send(Op::Continue);
    s.wait_for("end", is_terminated).await;
}

#[tokio::test]
async fn same_error_three_times_pauses() {
    let solo = "name='s'\n[[agents]]\nname='coder'\nmodel='scripted/m'\ncan_execute=true\n";
    let mut b = Builder::new(solo);
    for i in 0..3 {
        b = b.reply(
            "coder",
            &format!("```python\nx = {i}\nraise ValueError('boom')\n```"),
        );
    }
    let mut s = b.mode(SessionMode::Auto).start();
    let p = s.wait_for("loop pause", is_paused).await;
    assert!(
        matches!(&p.kind, EventKind::Paused { kind: PauseKind::Loop, reason } if reason.contains("same error 3 times"))
    );
    s.send(Op::Stop { reason: None });
    s.wait_for("end", is_terminated).await;
}

#[tokio::test]
async fn two_agents_repeating_themselves_pause() {
    let mut s = Builder::new(PAIR)
        .reply("coder", "Should I write the code now?")
        .reply("reviewer", "Yes, please write the code.")
        .reply("coder", "Should I write the code now")
        .reply("reviewer", "yes please write the code")
        .start();
    let p = s.wait_for("loop pause", is_paused).await;
    assert!(
        matches!(&p.kind, EventKind::Paused { kind: PauseKind::Loop, reason } if reason.contains("near-identical"))
    );
}

#[tokio::test]
async fn budget_pauses_before_a_call_that_would_cross_it() {
    let team = format!("{PAIR}\n[budget]\nusd = 0.01\n");
    let mut prices = std::collections::BTreeMap::new();
    prices.insert(
        "scripted/m".to_string(),
        PriceConfig {
            input_per_mtok: 1.0,
            output_per_mtok: 2.0,
            cached_input_per_mtok: None,
            cache_write_per_mtok: None,
        },
    );
    let mut b = Builder::new(&team).replies(vec![
        ScriptedReply {
            agent: Some("coder".into()),
            text: "expensive".into(),
            input_tokens: Some(1000),
            output_tokens: Some(4000),
            ..Default::default()
        },
        ScriptedReply::for_agent("reviewer", "TERMINATE"),
    ]);
    b.prices = PriceTable::new(prices, vec![]);
    let mut s = b.start();
    let usage = s
        .wait_for("usage", |k| matches!(k, EventKind::Usage { .. }))
        .await;
    if let EventKind::Usage { usd, .. } = usage.kind {
        // 1000 in × $1/M + 4000 out × $2/M = $0.009
        assert!((usd.unwrap() - 0.009).abs() < 1e-12);
    }
    let p = s.wait_for("budget pause", is_paused).await;
    assert!(matches!(
        &p.kind,
        EventKind::Paused {
            kind: PauseKind::Budget,
            ..
        }
    ));
    assert_eq!(
        s.requests().len(),
        1,
        "the call that would cross the cap did not start"
    );
    assert!(
        s.seen
            .iter()
            .any(|e| matches!(e.kind, EventKind::BudgetWarning { .. }))
    );
    s.send(Op::SetBudget { usd: 1.0 });
    s.send(Op::Continue);
    s.wait_for("end", is_terminated).await;
    assert_eq!(s.requests().len(), 2);
}

#[tokio::test]
async fn provider_error_pauses_and_continue_retries_the_turn() {
    let mut s = Builder::new(PAIR)
        .replies(vec![ScriptedReply {
            agent: Some("coder".into()),
            error: Some("upstream exploded".into()),
            ..Default::default()
        }])
        .reply("coder", "second try")
        .reply("reviewer", "TERMINATE")
        .start();
    let p = s.wait_for("pause", is_paused).await;
    assert!(
        matches!(&p.kind, EventKind::Paused { kind: PauseKind::ProviderError, reason } if reason.contains("upstream exploded"))
    );
    s.send(Op::Continue);
    s.wait_for("end", is_terminated).await;
    assert_eq!(s.speakers(), ["coder", "reviewer"]);
}

#[tokio::test]
async fn sandbox_failure_is_reported_to_agent_and_pauses() {
    let mut b = Builder::new(PAIR).reply("coder", CODE);
    b.exec = FakeExecutor {
        fail_with: Some("Docker is not running: start the daemon".into()),
        ..Default::default()
    };
    let mut s = b.start();
    let id = approval_id(&s.wait_for("approval", is_approval).await);
    s.send(resolve(id, 0, Decision::Approve));
    let p = s.wait_for("pause", is_paused).await;
    assert!(
        matches!(&p.kind, EventKind::Paused { kind: PauseKind::Sandbox, reason } if reason.contains("Docker is not running"))
    );
    assert!(s.seen.iter().any(|e| matches!(&e.kind, EventKind::Message { agent, content, .. } if agent == "executor" && content.contains("NOT RUN") && content.contains("Docker is not running"))));
}

#[tokio::test]
async fn a_block_the_sandbox_lost_mid_run_is_interrupted_with_its_output_and_pauses() {
    let mut b = Builder::new(PAIR).reply("coder", CODE);
    b.exec = FakeExecutor {
        cut_after: Some((
            vec!["tick 0\n", "tick 1\n"],
            "the connection to the Docker engine at tcp://127.0.0.1:1 was cut during this block"
                .into(),
        )),
        ..Default::default()
    };
    let mut s = b.start();
    let id = approval_id(&s.wait_for("approval", is_approval).await);
    s.send(resolve(id, 0, Decision::Approve));
    let p = s.wait_for("pause", is_paused).await;
    assert!(
        matches!(&p.kind, EventKind::Paused { kind: PauseKind::Sandbox, reason } if reason.contains("was cut during this block")),
        "{p:?}"
    );
    let finished = s
        .seen
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ExecutionFinished {
                output,
                interrupted,
                not_run,
                exit_code,
                ..
            } => Some((output.clone(), *interrupted, *not_run, *exit_code)),
            _ => None,
        })
        .expect("a finish");
    let (ref output, interrupted, not_run, exit_code) = finished;
    assert!(interrupted && !not_run && exit_code == -1, "{finished:?}");
    assert!(
        output.starts_with("tick 0\ntick 1\ninterrupted: the connection"),
        "{output}"
    );
    let report = s
        .seen
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Message { agent, content, .. } if agent == "executor" => {
                Some(content.clone())
            }
            _ => None,
        })
        .expect("a report");
    assert!(report.contains("INTERRUPTED"), "{report}");
    assert!(report.contains("tick 1"), "{report}");
}

#[tokio::test]
async fn blocks_that_did_not_run_are_never_reported_as_run_and_host_paths_stay_home() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let ws = data.join("sessions").join("test-session").join("workspace");
    let three = "```python\nprint(1)\n```\n```python\nprint(2)\n```\n```python\nprint(3)\n```\n";
    let mut b = Builder::new(PAIR).reply("coder", three);
    b.workspace = ws.clone();
    b.exec = FakeExecutor {
        fail_with: Some(format!(
            "cannot create workspace {}: Permission denied; check {}",
            ws.display(),
            data.display()
        )),
        ..Default::default()
    };
    let mut s = b.start();
    let id = approval_id(&s.wait_for("approval", is_approval).await);
    s.send(Op::ApproveAll { id });
    s.wait_for("pause", is_paused).await;
    let report = s
        .seen
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Message { agent, content, .. } if agent == "executor" => {
                Some(content.clone())
            }
            _ => None,
        })
        .expect("a report");
    assert!(!report.contains("run as proposed"), "{report}");
    assert_eq!(
        report.matches("approved, but NOT RUN").count(),
        3,
        "{report}"
    );
    assert!(
        report.contains("Why it did not run: the sandbox could not run code"),
        "{report}"
    );
    let host = tmp.path().display().to_string();
    assert!(
        !report.contains(&host),
        "a host path reached the agent: {report}"
    );
    assert!(
        report.contains("cannot create workspace /workspace: Permission denied; check <data dir>"),
        "{report}"
    );
    // The human still sees where the problem is.
    assert!(
        s.seen
            .iter()
            .any(|e| matches!(&e.kind, EventKind::Error { message } if message.contains(&host)))
    );
}

#[tokio::test]
async fn an_interrupted_block_is_reported_as_interrupted_not_as_run() {
    let text = "```python\nprint('slow')\n```\n```python\nprint('never')\n```\n";
    let mut b = Builder::new(PAIR).reply("coder", text);
    b.exec = FakeExecutor {
        hang_on: Some("slow".into()),
        ..Default::default()
    };
    let mut s = b.start();
    let id = approval_id(&s.wait_for("approval", is_approval).await);
    s.send(Op::ApproveAll { id });
    s.wait_for("output", |k| matches!(k, EventKind::ExecutionOutput { .. }))
        .await;
    s.send(Op::Interrupt);
    s.wait_for("pause", is_paused).await;
    let report = s
        .seen
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Message { agent, content, .. } if agent == "executor" => {
                Some(content.clone())
            }
            _ => None,
        })
        .expect("a report");
    assert!(!report.contains("run as proposed"), "{report}");
    assert!(
        report.contains("Block 1 (python): approved and started as proposed, but INTERRUPTED"),
        "{report}"
    );
    assert!(
        report.contains("Block 2 (python): approved, but NOT RUN.\nWhy it did not run: execution was interrupted before this block"),
        "{report}"
    );
}

#[tokio::test]
async fn context_is_trimmed_to_max_context_tokens_keeping_system_and_task() {
    let team = r#"
name = "t"
[[agents]]
name = "coder"
model = "scripted/m"
system = "SYSTEM PROMPT"
max_context_tokens = 120
[[agents]]
name = "reviewer"
model = "scripted/m"
"#;
    let long = "word ".repeat(60);
    let mut s = Builder::new(team)
        .reply("coder", &format!("first {long}"))
        .reply("reviewer", &format!("second {long}"))
        .reply("coder", "TERMINATE")
        .start();
    s.wait_for("end", is_terminated).await;
    let last = s
        .requests()
        .into_iter()
        .rfind(|r| r.agent == "coder")
        .unwrap();
    assert!(last.system.contains("SYSTEM PROMPT"));
    assert!(
        last.messages[0].content.contains("write hello world"),
        "task kept"
    );
    assert!(
        !last
            .messages
            .iter()
            .any(|m| m.content.contains("first word")),
        "oldest turn dropped"
    );
    assert!(s.seen.iter().any(
        |e| matches!(&e.kind, EventKind::Notice { message } if message.contains("context trimmed"))
    ));
}

#[tokio::test]
async fn resume_asks_the_pending_approval_again_without_duplicating_it() {
    let mut s = Builder::new(PAIR).reply("coder", CODE).start();
    let id = approval_id(&s.wait_for("approval", is_approval).await);
    drop(s.handle.ops.clone());
    let log = s.sink.events.lock().unwrap().clone();
    s.handle.task.abort();
    let last_seq = log.last().unwrap().seq;

    let mut b = Builder::new(PAIR).reply("reviewer", "TERMINATE");
    b.resume = Some(log.clone());
    let mut r = b.start();
    // Replay first: the same approval, same id.
    let replayed = r.wait_for("replayed approval", is_approval).await;
    assert_eq!(approval_id(&replayed), id);
    r.send(resolve(id, 0, Decision::Approve));
    r.wait_for("end", is_terminated).await;
    let new: Vec<_> = r.sink.events.lock().unwrap().clone();
    assert!(
        new.iter().all(|e| e.seq > last_seq),
        "resumed events continue the seq"
    );
    assert!(
        !new.iter()
            .any(|e| matches!(e.kind, EventKind::ApprovalRequested { .. })),
        "approval not duplicated"
    );
    assert_eq!(r.exec.runs.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn resume_reports_a_block_that_was_running_as_interrupted() {
    let exec = FakeExecutor {
        hang_on: Some("forever".into()),
        ..Default::default()
    };
    let mut b = Builder::new(PAIR).reply("coder", "```python\n# forever\n```");
    b.exec = exec;
    let mut s = b.start();
    let id = approval_id(&s.wait_for("approval", is_approval).await);
    s.send(resolve(id, 0, Decision::Approve));
    s.wait_for("its first output", |k| {
        matches!(k, EventKind::ExecutionOutput { .. })
    })
    .await;
    let log = s.sink.events.lock().unwrap().clone();
    s.handle.task.abort();

    let mut b = Builder::new(PAIR).reply("reviewer", "TERMINATE");
    b.resume = Some(log);
    let mut r = b.start();
    r.wait_for("end", is_terminated).await;
    assert!(
        r.exec.runs.lock().unwrap().is_empty(),
        "not re-run silently"
    );
    assert!(r.seen.iter().any(|e| matches!(&e.kind, EventKind::ExecutionFinished { interrupted: true, output, .. } if output.contains("not re-run"))));
    // What it printed before the crash reaches the agent with the interruption.
    assert!(
        r.last_request_text("reviewer").contains("started working"),
        "{}",
        r.last_request_text("reviewer")
    );
}

#[tokio::test]
async fn bad_ops_get_errors_naming_the_problem() {
    let mut s = Builder::new(PAIR).reply("coder", CODE).start();
    let id = approval_id(&s.wait_for("approval", is_approval).await);
    s.send(resolve(id + 5, 0, Decision::Approve));
    let e = s
        .wait_for("error", |k| matches!(k, EventKind::Error { .. }))
        .await;
    assert!(matches!(&e.kind, EventKind::Error { message } if message.contains("not open")));
    s.send(resolve(id, 9, Decision::Approve));
    let e = s
        .wait_for("error", |k| matches!(k, EventKind::Error { .. }))
        .await;
    assert!(matches!(&e.kind, EventKind::Error { message } if message.contains("no block 9")));
    s.send(Op::UserMessage {
        text: "hi".into(),
        to: Some("ghost".into()),
    });
    let e = s
        .wait_for("error", |k| matches!(k, EventKind::Error { .. }))
        .await;
    assert!(matches!(&e.kind, EventKind::Error { message } if message.contains("ghost")));
}

#[tokio::test]
async fn missing_model_pauses_with_a_message_naming_it() {
    let team = "name='t'\n[[agents]]\nname='coder'\nmodel='openai/gpt-4o'\n";
    let mut s = Builder::new(team).start();
    let p = s.wait_for("pause", is_paused).await;
    assert!(
        matches!(&p.kind, EventKind::Paused { reason, .. } if reason.contains("openai/gpt-4o"))
    );
}

#[tokio::test]
async fn closing_the_front_end_while_an_approval_is_pending_ends_without_terminating() {
    let mut s = Builder::new(PAIR).reply("coder", CODE).start();
    s.wait_for("approval", is_approval).await;
    let Session { handle, sink, .. } = s;
    let proctor::engine::SessionHandle {
        ops,
        mut events,
        task,
    } = handle;
    drop(ops);
    while events.recv().await.is_some() {}
    let state = tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap();
    assert!(state.terminated.is_none());
    assert!(state.pending.is_some());
    assert!(
        !sink
            .events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e.kind, EventKind::Terminated { .. }))
    );
}

#[tokio::test]
async fn selector_model_can_differ_from_agents() {
    let team = format!(
        "{PAIR}\n[orchestration]\nspeaker_selection = \"auto\"\nselector_model = \"scripted/sel\"\n"
    );
    let sel = ScriptedModel::new("scripted/sel", vec![ScriptedReply::next("coder")]);
    let mut b = Builder::new(&team).reply("coder", "TERMINATE");
    b.extra_models.push(sel.clone());
    let mut s = b.start();
    s.wait_for("end", is_terminated).await;
    assert_eq!(sel.requests().len(), 1);
    assert_eq!(s.speakers(), ["coder"]);
}

#[tokio::test]
async fn interrupting_the_selector_pauses_instead_of_picking_someone() {
    let team = format!("{PAIR}\n[orchestration]\nspeaker_selection = \"auto\"\n");
    let slow = ScriptedReply {
        agent: Some("selector".into()),
        text: "reviewer reviewer reviewer reviewer".into(),
        delay_ms: 300,
        ..Default::default()
    };
    let mut s = Builder::new(&team).replies(vec![slow]).start();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.send(Op::Interrupt);
    let p = s.wait_for("pause", is_paused).await;
    assert!(matches!(
        p.kind,
        EventKind::Paused {
            kind: PauseKind::Human,
            ..
        }
    ));
    assert!(
        s.speakers().is_empty(),
        "nobody was picked: {:?}",
        s.speakers()
    );
}

#[tokio::test]
async fn a_per_agent_cap_pauses_only_for_that_agent() {
    let team = r#"
name = "t"
[[agents]]
name = "coder"
model = "scripted/m"
budget_usd = 0.005
[[agents]]
name = "reviewer"
model = "scripted/m"
"#;
    let mut prices = std::collections::BTreeMap::new();
    prices.insert(
        "scripted/m".to_string(),
        PriceConfig {
            input_per_mtok: 1.0,
            output_per_mtok: 1.0,
            cached_input_per_mtok: None,
            cache_write_per_mtok: None,
        },
    );
    let costly = |agent: &str| ScriptedReply {
        agent: Some(agent.into()),
        text: "ok".into(),
        input_tokens: Some(4000),
        output_tokens: Some(0),
        ..Default::default()
    };
    let mut b = Builder::new(team).replies(vec![costly("coder"), costly("reviewer")]);
    b.prices = PriceTable::new(prices, vec![]);
    let mut s = b.start();
    let p = s.wait_for("pause", is_paused).await;
    match &p.kind {
        EventKind::Paused { kind, reason } => {
            assert_eq!(*kind, PauseKind::Budget);
            assert!(reason.contains("coder's next call"), "{reason}");
        }
        _ => unreachable!(),
    }
    // The reviewer, with no cap of its own, spoke; the coder's second call did not start.
    assert_eq!(s.speakers(), ["coder", "reviewer", "coder"]);
    assert_eq!(s.requests().len(), 2);
}

#[tokio::test]
async fn a_refused_filename_is_that_blocks_result_and_the_next_block_still_runs() {
    let text = "```python\n# filename: ../escape.py\nprint(1)\n```\n```python\nprint(2)\n```\n";
    let mut b = Builder::new(PAIR)
        .reply("coder", text)
        .reply("reviewer", "TERMINATE")
        .mode(SessionMode::Auto);
    b.exec = FakeExecutor {
        refuse_filename: Some("../escape.py".into()),
        ..Default::default()
    };
    let mut s = b.start();
    s.wait_for("end", is_terminated).await;
    assert!(
        !s.types().iter().any(|t| t == "paused"),
        "no pause: {:?}",
        s.types()
    );
    let fin: Vec<_> = s
        .seen
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ExecutionFinished { block, output, .. } => Some((*block, output.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(fin.len(), 2);
    assert!(
        fin[0].1.contains("not run") && fin[0].1.contains("leaves the workspace"),
        "{fin:?}"
    );
    assert!(
        s.last_request_text("reviewer")
            .contains("leaves the workspace")
    );
}

#[tokio::test]
async fn pieces_of_one_output_line_become_one_event_and_streams_keep_their_order() {
    let mut b = Builder::new(PAIR)
        .reply("coder", CODE)
        .reply("reviewer", "TERMINATE")
        .mode(SessionMode::Auto);
    b.exec = FakeExecutor {
        pieces: Some(vec!["tick", " ", "1\n", "tick 2\nti", "ck 3\n"]),
        ..Default::default()
    };
    let mut s = b.start();
    s.wait_for("end", is_terminated).await;
    let outputs: Vec<String> = s
        .seen
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ExecutionOutput { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(outputs, ["tick 1\n", "tick 2\ntick 3\n"]);
}

#[tokio::test]
async fn a_code_once_rule_approves_that_code_one_time_only() {
    let solo = "name='s'\n[[agents]]\nname='coder'\nmodel='scripted/m'\ncan_execute=true\n";
    let mut s = Builder::new(solo)
        .reply("coder", CODE)
        .reply("coder", CODE)
        .reply("coder", "TERMINATE")
        .start();
    s.send(Op::AddPolicy {
        rule: PolicyRule::CodeOnce {
            hash: proctor::engine::state::code_hash("print('hi')"),
        },
    });
    let first = approval_id(&s.wait_for("first approval", is_approval).await);
    let auto = s
        .wait_for("auto resolution", |k| {
            matches!(k, EventKind::ApprovalResolved { .. })
        })
        .await;
    assert!(matches!(
        auto.kind,
        EventKind::ApprovalResolved { id, by_rule: Some(PolicyRule::CodeOnce { .. }), .. } if id == first
    ));
    // The same code again: the rule is used up, so the human is asked.
    let second = approval_id(&s.wait_for("second approval", is_approval).await);
    s.send(resolve(second, 0, Decision::Skip));
    s.wait_for("end", is_terminated).await;
    let second_decisions: Vec<_> = s
        .seen
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ApprovalResolved {
                id,
                decision,
                by_rule,
                ..
            } if *id == second => Some((*decision, by_rule.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        second_decisions,
        [(DecisionKind::Skipped, None)],
        "the human, not the used-up rule, decided the second proposal"
    );
    assert_eq!(s.exec.runs.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_pinned_speaker_survives_a_resume() {
    let slow = ScriptedReply {
        agent: Some("coder".into()),
        text: "a long first reply that is still streaming".into(),
        delay_ms: 100,
        ..Default::default()
    };
    let mut s = Builder::new(PAIR).replies(vec![slow]).start();
    s.wait_for("coder streaming", |k| {
        matches!(k, EventKind::MessageDelta { .. })
    })
    .await;
    s.send(Op::PinNextSpeaker {
        agent: "coder".into(),
    });
    s.wait_for("pin recorded", |k| {
        matches!(k, EventKind::SpeakerPinned { .. })
    })
    .await;
    let log = s.sink.events.lock().unwrap().clone();
    s.handle.task.abort();

    let mut b = Builder::new(PAIR)
        .reply("coder", "first, again")
        .reply("coder", "pinned turn TERMINATE");
    b.resume = Some(log);
    let mut r = b.start();
    r.wait_for("end", is_terminated).await;
    let after: Vec<String> = r
        .seen
        .iter()
        .filter(|e| e.seq > 10_000)
        .filter_map(|e| match &e.kind {
            EventKind::SpeakerSelected { agent, .. } => Some(agent.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        after,
        ["coder"],
        "round robin would have picked the reviewer"
    );
}

fn notices(s: &Session) -> Vec<String> {
    s.seen
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Notice { message } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn code_from_an_agent_that_cannot_execute_gets_one_notice_even_across_a_resume() {
    let mut s = Builder::new(PAIR)
        .reply("coder", "I'll leave the code to you.")
        .reply("reviewer", CODE)
        .reply("coder", "ok")
        .reply("reviewer", "again:\n```bash\nls\n```\n")
        .start();
    s.wait_for("reviewer's second code", |k| {
        matches!(k, EventKind::Message { agent, content, .. } if agent == "reviewer" && content.contains("ls"))
    })
    .await;
    // The script is used up: the session pauses, and that log is resumed below.
    s.wait_for("script used up", is_paused).await;
    let log = s.sink.events.lock().unwrap().clone();
    s.handle.task.abort();
    let said: Vec<String> = notices(&s)
        .into_iter()
        .filter(|m| m.contains("can_execute"))
        .collect();
    assert_eq!(said.len(), 1, "one notice, the first time: {said:?}");
    assert!(said[0].starts_with("reviewer's code is shown, never offered to run"));
    // The notice comes right after the message with the code; nothing was offered.
    let at = s
        .seen
        .iter()
        .position(
            |e| matches!(&e.kind, EventKind::Notice { message } if message.contains("can_execute")),
        )
        .unwrap();
    assert!(
        matches!(&s.seen[at - 1].kind, EventKind::Message { agent, .. } if agent == "reviewer")
    );
    assert!(!s.types().iter().any(|t| t == "approval_requested"));

    // Resumed, the reviewer writes code again: the notice is not repeated.
    let mut b = Builder::new(PAIR).reply("coder", "fine").reply(
        "reviewer",
        "once more:\n```python\nprint(3)\n```\nTERMINATE",
    );
    b.resume = Some(log);
    let mut r = b.start();
    r.send(Op::Continue);
    r.wait_for("end", is_terminated).await;
    let again = r
        .seen
        .iter()
        .filter(|e| e.seq > 10_000)
        .filter(
            |e| matches!(&e.kind, EventKind::Notice { message } if message.contains("can_execute")),
        )
        .count();
    assert_eq!(again, 0);
}

#[tokio::test]
async fn a_team_where_no_agent_can_execute_says_so_at_session_start() {
    let talkers = PAIR.replace("can_execute = true", "can_execute = false");
    let mut s = Builder::new(&talkers).reply("coder", "TERMINATE").start();
    s.wait_for("end", is_terminated).await;
    assert_eq!(s.types()[1], "notice", "right after session_started");
    let said = notices(&s);
    assert!(
        said[0].contains("no agent of team t can execute code")
            && said[0].contains("can_execute = true"),
        "{said:?}"
    );
    // A team with an agent that can execute is not told so.
    let mut s = Builder::new(PAIR).reply("coder", "TERMINATE").start();
    s.wait_for("end", is_terminated).await;
    assert!(notices(&s).iter().all(|m| !m.contains("can execute")));
}

#[tokio::test]
async fn a_scripted_reply_answers_the_reason_of_the_human_rejection() {
    let script = r#"
[[reply]]
agent = "coder"
text = "```python\nimport socket\n```"
[[reply]]
agent = "reviewer"
text = "approved path"
[reply.after.rejected]
text = "The human said: {reason}. TERMINATE"
[reply.after.edited]
text = "edited path"
"#;
    let replies = proctor::provider::scripted::Script::parse(script)
        .unwrap()
        .reply;
    let mut s = Builder::new(PAIR).replies(replies).start();
    let id = approval_id(&s.wait_for("approval", is_approval).await);
    s.send(resolve(
        id,
        0,
        Decision::Reject {
            reason: "no sockets in this sandbox".into(),
        },
    ));
    s.wait_for("end", is_terminated).await;
    let reviewer = s
        .seen
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Message { agent, content, .. } if agent == "reviewer" => {
                Some(content.clone())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(
        reviewer,
        "The human said: no sockets in this sandbox. TERMINATE"
    );
    assert!(s.exec.runs.lock().unwrap().is_empty(), "nothing ran");
}
