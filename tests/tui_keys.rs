//! Key → Op: every key of the pending-code pane sends exactly the op it should, and every "never
//! approve by accident" rule holds — each of those cases asserts that NO op was sent.

mod tui_support;

use std::time::Duration;

use proctor::engine::state::code_hash;
use proctor::protocol::{CodeBlock, Decision, EventKind, Op, PauseKind, PolicyRule, WaitingOn};
use proctor::tui::app::{App, Exit, Focus, ManualClock, PaneMode, Request};
use ratatui::crossterm::event::KeyCode;
use tui_support::*;

const CODE0: &str = "print('hello')";
const CODE1: &str = "import os\nprint(os.listdir('.'))";

fn blocks() -> Vec<CodeBlock> {
    vec![
        CodeBlock {
            index: 0,
            language: "python".into(),
            code: CODE0.into(),
            filename: Some("hello.py".into()),
        },
        CodeBlock {
            index: 1,
            language: "python".into(),
            code: CODE1.into(),
            filename: None,
        },
    ]
}

/// An app with the demo session started and approval #3 (two blocks) on screen for a second.
fn with_approval() -> (App, std::sync::Arc<ManualClock>) {
    let (mut app, clock) = app("dark");
    let started = recorded(DEMO_AUTO)
        .into_iter()
        .next()
        .expect("session_started");
    app.on_event(&started);
    app.on_event(&ev(
        70,
        EventKind::ApprovalRequested {
            id: 3,
            agent: "coder".into(),
            blocks: blocks(),
        },
    ));
    app.on_event(&ev(
        71,
        EventKind::Waiting {
            on: WaitingOn::Approval,
            ops_handled: 0,
        },
    ));
    clock.advance(Duration::from_secs(1));
    assert_eq!(app.focus, Focus::Approval);
    (app, clock)
}

fn resolve(
    block: usize,
    decision: Decision,
    remember: Option<PolicyRule>,
    allow_network: bool,
) -> Op {
    Op::ResolveApproval {
        id: 3,
        block,
        decision,
        remember,
        allow_network,
    }
}

#[test]
fn y_approves_the_block_and_it_shows_as_sent_until_resolved() {
    let (mut app, _) = with_approval();
    app.on_key(key('y'));
    assert_eq!(
        app.take_ops(),
        vec![resolve(0, Decision::Approve, None, false)]
    );
    assert!(app.sent.contains_key(&(3, 0)));
    let screen = text(&draw(&mut app, 100, 30));
    assert!(screen.contains("sent…"), "{screen}");
    // The engine's word replaces "sent…".
    app.on_event(&ev(
        72,
        EventKind::ApprovalResolved {
            id: 3,
            block: 0,
            decision: proctor::protocol::DecisionKind::Approved,
            code: None,
            reason: None,
            by_rule: None,
            allow_network: false,
        },
    ));
    assert!(app.sent.is_empty());
    assert_eq!(app.current_block(), Some((3, 1)));
}

#[test]
fn a_decision_the_engine_refused_is_asked_again() {
    let (mut app, clock) = with_approval();
    app.on_key(key('y'));
    assert_eq!(app.take_ops().len(), 1);
    assert_eq!(app.current_block(), Some((3, 1)));
    // The engine said no (here: the block was decided elsewhere) and waits again, having
    // handled our op: block 1 is back, not stuck on "sent…".
    app.on_event(&ev(
        73,
        EventKind::Error {
            message: "block 0 of approval #3 is already decided".into(),
        },
    ));
    app.on_event(&ev(
        74,
        EventKind::Waiting {
            on: WaitingOn::Approval,
            ops_handled: 1,
        },
    ));
    clock.advance(Duration::from_secs(1));
    assert_eq!(app.current_block(), Some((3, 0)));
    assert!(app.sent.is_empty());
}

#[test]
fn capital_y_remembers_this_exact_code_and_l_this_language_from_this_agent() {
    let (mut app, clock) = with_approval();
    app.on_key(key('Y'));
    assert_eq!(
        app.take_ops(),
        vec![resolve(
            0,
            Decision::Approve,
            Some(PolicyRule::CodeSession {
                hash: code_hash(CODE0)
            }),
            false
        )]
    );
    clock.advance(Duration::from_secs(1));
    app.on_key(key('L'));
    assert_eq!(
        app.take_ops(),
        vec![resolve(
            1,
            Decision::Approve,
            Some(PolicyRule::LanguageAgent {
                language: "python".into(),
                agent: "coder".into()
            }),
            false
        )]
    );
}

#[test]
fn w_approves_with_network_s_skips_a_approves_all() {
    let (mut app, clock) = with_approval();
    app.on_key(key('w'));
    assert_eq!(
        app.take_ops(),
        vec![resolve(0, Decision::Approve, None, true)]
    );
    clock.advance(Duration::from_secs(1));
    app.on_key(key('s'));
    assert_eq!(
        app.take_ops(),
        vec![resolve(1, Decision::Skip, None, false)]
    );

    // `a` first shows every block it would approve, in full; only `y` there sends.
    let (mut app, _) = with_approval();
    app.on_key(key('a'));
    assert!(app.take_ops().is_empty());
    let screen = text(&draw(&mut app, 100, 30));
    assert!(
        screen.contains("block 1/2") && screen.contains("block 2/2"),
        "{screen}"
    );
    assert!(screen.contains(CODE1.lines().next().unwrap()), "{screen}");
    assert!(
        screen.contains("approve all 2 blocks shown here?"),
        "{screen}"
    );
    app.on_key(code(KeyCode::Esc));
    assert!(app.take_ops().is_empty(), "Esc approves nothing");
    assert_eq!(app.current_block(), Some((3, 0)));
    app.on_key(key('a'));
    draw(&mut app, 100, 30);
    app.on_key(key('y'));
    assert_eq!(app.take_ops(), vec![Op::ApproveAll { id: 3 }]);
    assert_eq!(app.current_block(), None, "both blocks show as sent");

    // Blocks taller than the pane: `y` approves only once the last line has been on screen.
    let (mut app, clock) = tui_support::app("dark");
    app.on_event(&recorded(DEMO_AUTO)[0]);
    let long = (0..60)
        .map(|i| format!("print({i})"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut two = blocks();
    two[1].code = format!("{long}\nimport shutil; shutil.rmtree('/workspace')");
    app.on_event(&ev(
        70,
        EventKind::ApprovalRequested {
            id: 3,
            agent: "coder".into(),
            blocks: two,
        },
    ));
    clock.advance(Duration::from_secs(1));
    app.on_key(key('a'));
    draw(&mut app, 100, 30);
    app.on_key(key('y'));
    assert!(app.take_ops().is_empty(), "the end was never shown");
    for _ in 0..30 {
        app.on_key(code(KeyCode::PageDown));
        draw(&mut app, 100, 30);
    }
    let screen = text(&draw(&mut app, 100, 30));
    assert!(screen.contains("shutil.rmtree"), "{screen}");
    app.on_key(key('y'));
    assert_eq!(app.take_ops(), vec![Op::ApproveAll { id: 3 }]);
}

#[test]
fn e_edits_in_place_and_only_the_confirmed_diff_is_sent() {
    let (mut app, _) = with_approval();
    app.on_key(key('e'));
    assert!(matches!(app.pane, PaneMode::Editing(_)));
    app.on_key(code(KeyCode::End));
    typed(&mut app, " # checked");
    assert!(app.take_ops().is_empty(), "typing sends nothing");
    app.on_key(ctrl('s'));
    assert!(
        matches!(&app.pane, PaneMode::DiffConfirm { code, .. } if code == "print('hello') # checked")
    );
    let screen = text(&draw(&mut app, 100, 30));
    assert!(screen.contains("+print('hello') # checked"), "{screen}");
    assert!(screen.contains("-print('hello')"), "{screen}");
    assert!(app.take_ops().is_empty());
    app.on_key(key('y'));
    assert_eq!(
        app.take_ops(),
        vec![resolve(
            0,
            Decision::Edit {
                code: "print('hello') # checked".into()
            },
            None,
            false
        )]
    );
}

#[test]
fn leaving_an_edit_or_its_diff_sends_nothing() {
    let (mut app, _) = with_approval();
    app.on_key(key('e'));
    typed(&mut app, "x");
    app.on_key(code(KeyCode::Esc));
    assert!(matches!(app.pane, PaneMode::Code));
    app.on_key(key('e'));
    app.on_key(ctrl('s'));
    app.on_key(code(KeyCode::Esc));
    app.on_key(key('e'));
    app.on_key(ctrl('s'));
    app.on_key(ctrl('c'));
    assert!(app.take_ops().is_empty());
    assert_eq!(app.current_block(), Some((3, 0)));
}

#[test]
fn capital_e_hands_the_code_to_the_editor_then_confirms_the_diff() {
    let (mut app, _) = with_approval();
    app.on_key(key('E'));
    assert_eq!(
        app.take_requests(),
        vec![Request::ExternalEdit {
            id: 3,
            block: 0,
            code: CODE0.into(),
            language: "python".into()
        }]
    );
    assert!(app.take_ops().is_empty());
    app.external_edit_done(3, 0, Ok("print('edited')\n".into()));
    assert!(matches!(app.pane, PaneMode::DiffConfirm { .. }));
    app.on_key(key('y'));
    assert_eq!(
        app.take_ops(),
        vec![resolve(
            0,
            Decision::Edit {
                code: "print('edited')\n".into()
            },
            None,
            false
        )]
    );
    // An editor that failed leaves the block undecided.
    let (mut app, _) = with_approval();
    app.on_key(key('E'));
    app.external_edit_done(3, 0, Err("vi exited with 1".into()));
    assert!(app.take_ops().is_empty());
    assert!(
        app.flash
            .as_ref()
            .is_some_and(|(t, _)| t.contains("vi exited"))
    );
}

#[test]
fn n_rejects_with_the_typed_reason_and_esc_cancels() {
    let (mut app, _) = with_approval();
    app.on_key(key('n'));
    typed(&mut app, "use the stdlib only");
    app.on_key(code(KeyCode::Esc));
    assert!(app.take_ops().is_empty());
    app.on_key(key('n'));
    typed(&mut app, "use the stdlib only");
    app.on_key(code(KeyCode::Enter));
    assert_eq!(
        app.take_ops(),
        vec![resolve(
            0,
            Decision::Reject {
                reason: "use the stdlib only".into()
            },
            None,
            false
        )]
    );
}

#[test]
fn z_shows_the_code_full_screen_and_sends_nothing() {
    let (mut app, _) = with_approval();
    app.on_key(key('z'));
    assert!(app.fullscreen);
    let screen = text(&draw(&mut app, 80, 24));
    assert!(!screen.contains("transcript"), "{screen}");
    app.on_key(key('z'));
    assert!(!app.fullscreen);
    assert!(app.take_ops().is_empty());
}

#[test]
fn a_rule_is_listed_and_revoked_from_the_rules_dialog() {
    let (mut app, _) = with_approval();
    let rule = PolicyRule::LanguageAgent {
        language: "python".into(),
        agent: "coder".into(),
    };
    app.on_event(&ev(80, EventKind::PolicyAdded { rule: rule.clone() }));
    app.on_key(key('R'));
    let screen = text(&draw(&mut app, 100, 30));
    assert!(screen.contains("any python block from coder"), "{screen}");
    app.on_key(key('d'));
    assert_eq!(
        app.take_ops(),
        vec![Op::RevokePolicy { rule: rule.clone() }]
    );
    app.on_key(key('d'));
    assert!(app.take_ops().is_empty(), "sent once");
    app.on_event(&ev(81, EventKind::PolicyRevoked { rule }));
    assert!(app.view.rules.is_empty());
}

// ---- never approve by accident: every case asserts that no op was sent ----

#[test]
fn decision_keys_do_nothing_unless_the_pane_has_focus() {
    let (mut app, _) = with_approval();
    app.on_key(code(KeyCode::Tab));
    assert_ne!(app.focus, Focus::Approval);
    for c in ['y', 'Y', 'L', 'w', 's', 'a', 'e', 'E', 'n'] {
        app.on_key(key(c));
        if app.focus == Focus::Composer {
            app.on_key(code(KeyCode::Esc));
        }
    }
    assert!(app.take_ops().is_empty());
    assert!(app.take_requests().is_empty());
    assert_eq!(app.current_block(), Some((3, 0)));
}

#[test]
fn an_approval_never_takes_the_focus_from_a_composer_holding_text() {
    let (mut app, clock) = app("dark");
    app.on_event(&recorded(DEMO_AUTO)[0]);
    app.on_key(key('i'));
    assert_eq!(app.focus, Focus::Composer);
    typed(&mut app, "please also add tests");
    app.on_event(&ev(
        70,
        EventKind::ApprovalRequested {
            id: 3,
            agent: "coder".into(),
            blocks: blocks(),
        },
    ));
    clock.advance(Duration::from_secs(2));
    assert_eq!(app.focus, Focus::Composer);
    let screen = text(&draw(&mut app, 100, 30));
    assert!(screen.contains("approval pending — Tab"), "{screen}");
    typed(&mut app, "y");
    assert!(app.take_ops().is_empty());
    assert_eq!(app.composer.lines().join("\n"), "please also add testsy");
    // An empty composer keeps the focus too: someone who just sent a message and types the
    // next one after the block appeared writes text, never `a`, `y` or `s` decisions.
    let (mut app, clock) = app_pair_empty_composer();
    assert_eq!(app.focus, Focus::Composer);
    clock.advance(Duration::from_secs(2));
    typed(&mut app, "also add tests");
    assert!(app.take_ops().is_empty());
    assert_eq!(app.composer.lines().join("\n"), "also add tests");
    assert_eq!(app.current_block(), Some((3, 0)));
}

fn app_pair_empty_composer() -> (App, std::sync::Arc<ManualClock>) {
    let (mut app, clock) = app("dark");
    app.on_event(&recorded(DEMO_AUTO)[0]);
    app.on_key(key('i'));
    app.on_event(&ev(
        70,
        EventKind::ApprovalRequested {
            id: 3,
            agent: "coder".into(),
            blocks: blocks(),
        },
    ));
    (app, clock)
}

#[test]
fn pastes_and_enter_never_decide() {
    let (mut app, _) = with_approval();
    app.on_paste("y");
    app.on_paste("a\n");
    app.on_paste("\n\n");
    app.on_key(code(KeyCode::Enter));
    assert!(app.take_ops().is_empty());
    assert_eq!(app.current_block(), Some((3, 0)));
    // A paste into the reason field is text, never the Enter that submits it.
    app.on_key(key('n'));
    app.on_paste("first line\nsecond line\n");
    assert!(app.take_ops().is_empty());
}

#[test]
fn ctrl_c_and_esc_never_approve() {
    let (mut app, _) = with_approval();
    app.on_key(code(KeyCode::Esc));
    assert!(
        app.take_ops().is_empty(),
        "nothing runs, so Esc has nothing to interrupt"
    );
    app.on_key(ctrl('c'));
    assert_eq!(app.exit, Some(Exit::Quit));
    assert!(app.take_ops().is_empty());
    // While something runs, Esc interrupts — and still decides nothing.
    let (mut app, _) = with_approval();
    app.on_event(&ev(
        90,
        EventKind::AgentStatus {
            agent: "planner".into(),
            state: proctor::protocol::AgentActivity::Streaming,
        },
    ));
    app.on_key(code(KeyCode::Esc));
    assert_eq!(app.take_ops(), vec![Op::Interrupt]);
}

#[test]
fn a_key_pressed_as_the_block_appears_is_not_a_decision() {
    let (mut app, clock) = app("dark");
    app.on_event(&recorded(DEMO_AUTO)[0]);
    app.on_event(&ev(
        70,
        EventKind::ApprovalRequested {
            id: 3,
            agent: "coder".into(),
            blocks: blocks(),
        },
    ));
    clock.advance(Duration::from_millis(120));
    app.on_key(key('y'));
    assert!(app.take_ops().is_empty(), "120 ms after it appeared");
    clock.advance(Duration::from_millis(250));
    app.on_key(key('y'));
    assert_eq!(app.take_ops().len(), 1);
    // The next block appears at once: a double tap does not approve it unseen.
    app.on_key(key('y'));
    assert!(app.take_ops().is_empty(), "second tap of a double tap");
    clock.advance(Duration::from_millis(400));
    app.on_key(key('y'));
    assert_eq!(
        app.take_ops(),
        vec![resolve(1, Decision::Approve, None, false)]
    );
}

#[test]
fn a_stale_wait_opens_nothing_and_takes_no_answer() {
    let (mut app, clock) = app("dark");
    app.on_event(&recorded(DEMO_AUTO)[0]);
    app.on_event(&ev(
        10,
        EventKind::Paused {
            reason: "loop detected".into(),
            kind: PauseKind::Loop,
        },
    ));
    app.on_event(&ev(
        11,
        EventKind::Waiting {
            on: WaitingOn::Continue,
            ops_handled: 0,
        },
    ));
    clock.advance(Duration::from_secs(1));
    assert!(matches!(
        app.modal,
        Some(proctor::tui::app::Modal::Pause(_))
    ));
    app.on_key(key('c'));
    assert_eq!(app.take_ops(), vec![Op::Continue]);
    assert!(app.modal.is_none());
    // Announced before the engine read our `continue`: stale.
    app.on_event(&ev(
        12,
        EventKind::Waiting {
            on: WaitingOn::Continue,
            ops_handled: 0,
        },
    ));
    assert!(app.modal.is_none());
    app.on_key(key('c'));
    app.on_key(key('p'));
    assert!(app.take_ops().is_empty());
    // A fresh wait (the engine has read it) asks again.
    app.on_event(&ev(
        13,
        EventKind::Waiting {
            on: WaitingOn::Continue,
            ops_handled: 1,
        },
    ));
    assert!(matches!(
        app.modal,
        Some(proctor::tui::app::Modal::Pause(_))
    ));
}

#[test]
fn quitting_with_an_approval_open_sends_nothing() {
    let (mut app, _) = with_approval();
    app.on_key(key('q'));
    assert_eq!(app.exit, Some(Exit::Quit));
    assert!(app.take_ops().is_empty());
    assert!(app.take_requests().is_empty());
}

// ---- the rest of the keys that send ops ----

#[test]
fn roster_keys_pin_mute_and_write_a_private_note() {
    let (mut app, _) = app("dark");
    app.on_event(&recorded(DEMO_AUTO)[0]);
    app.focus = Focus::Roster;
    app.on_key(key('j'));
    app.on_key(key('P'));
    assert_eq!(
        app.take_ops(),
        vec![Op::PinNextSpeaker {
            agent: "coder".into()
        }]
    );
    app.on_key(key('m'));
    assert_eq!(
        app.take_ops(),
        vec![Op::Mute {
            agent: "coder".into(),
            muted: true
        }]
    );
    app.on_key(key('@'));
    assert_eq!(app.focus, Focus::Composer);
    typed(&mut app, "keep it short");
    app.on_key(code(KeyCode::Enter));
    assert_eq!(
        app.take_ops(),
        vec![Op::UserMessage {
            text: "keep it short".into(),
            to: Some("coder".into())
        }]
    );
    // A note to nobody is refused, not sent.
    typed(&mut app, "@nobody hi");
    app.on_key(code(KeyCode::Enter));
    assert!(app.take_ops().is_empty());
}

#[test]
fn the_picker_sends_the_chosen_speaker() {
    let (mut app, clock) = app("dark");
    app.on_event(&recorded(DEMO_AUTO)[0]);
    app.on_event(&ev(
        5,
        EventKind::SpeakerRequested {
            candidates: vec!["planner".into(), "coder".into(), "reviewer".into()],
        },
    ));
    app.on_event(&ev(
        6,
        EventKind::Waiting {
            on: WaitingOn::Speaker,
            ops_handled: 0,
        },
    ));
    clock.advance(Duration::from_secs(1));
    app.on_key(key('j'));
    app.on_key(code(KeyCode::Enter));
    assert_eq!(
        app.take_ops(),
        vec![Op::SelectSpeaker {
            agent: "coder".into()
        }]
    );
    assert!(app.modal.is_none());
}

#[test]
fn the_budget_dialog_raises_the_cap_and_continues_or_stops() {
    let (mut app, clock) = app("dark");
    app.on_event(&recorded(DEMO_AUTO)[0]);
    app.on_event(&ev(7, EventKind::BudgetChanged { cap_usd: 2.0 }));
    app.on_event(&ev(
        8,
        EventKind::Paused {
            reason: "budget: next call could cross".into(),
            kind: PauseKind::Budget,
        },
    ));
    app.on_event(&ev(
        9,
        EventKind::Waiting {
            on: WaitingOn::Continue,
            ops_handled: 0,
        },
    ));
    clock.advance(Duration::from_secs(1));
    app.on_key(key('r'));
    // The suggestion goes as soon as an amount is typed.
    typed(&mut app, "1.5");
    app.on_key(code(KeyCode::Enter));
    assert_eq!(
        app.take_ops(),
        vec![Op::SetBudget { usd: 3.5 }, Op::Continue]
    );
    app.on_event(&ev(
        10,
        EventKind::Waiting {
            on: WaitingOn::Continue,
            ops_handled: 2,
        },
    ));
    app.on_key(key('s'));
    assert_eq!(app.take_ops(), vec![Op::Stop { reason: None }]);
}

#[test]
fn p_pauses_and_esc_interrupts_a_running_block() {
    let (mut app, _) = app("dark");
    app.on_event(&recorded(DEMO_AUTO)[0]);
    app.on_key(key('p'));
    assert_eq!(app.take_ops(), vec![Op::Pause]);
    app.on_event(&ev(
        20,
        EventKind::ExecutionStarted {
            id: 1,
            block: 0,
            language: "python".into(),
        },
    ));
    app.on_key(code(KeyCode::Esc));
    assert_eq!(app.take_ops(), vec![Op::Interrupt]);
    // Quitting while it runs asks first; any key but y stays.
    app.on_key(key('q'));
    assert!(app.exit.is_none());
    app.on_key(key('n'));
    assert!(app.exit.is_none());
    app.on_key(key('q'));
    app.on_key(key('y'));
    assert_eq!(app.exit, Some(Exit::Quit));
    assert!(app.take_ops().is_empty());
}

#[test]
fn key_overrides_move_the_decision_and_the_hints_follow() {
    let keys = [
        ("approve".to_string(), "A".to_string()),
        ("reject".to_string(), "enter".to_string()),
    ]
    .into_iter()
    .collect();
    let (mut app, clock) = app_with("dark", keys);
    app.on_event(&recorded(DEMO_AUTO)[0]);
    app.on_event(&ev(
        70,
        EventKind::ApprovalRequested {
            id: 3,
            agent: "coder".into(),
            blocks: blocks(),
        },
    ));
    clock.advance(Duration::from_secs(1));
    app.on_key(key('y'));
    assert!(app.take_ops().is_empty(), "y is no longer approve");
    assert!(
        app.notes.iter().any(|n| n.contains("reject = \"enter\"")),
        "{:?}",
        app.notes
    );
    let screen = text(&draw(&mut app, 120, 40));
    assert!(screen.contains("A approve"), "{screen}");
    assert!(screen.contains("reject = \"enter\""), "{screen}");
    app.on_key(key('A'));
    assert_eq!(
        app.take_ops(),
        vec![resolve(0, Decision::Approve, None, false)]
    );
}
