//! The whole screen in its main states, at 80x24 and 120x40, in the dark and light themes
//! (TestBackend + insta; each snapshot holds the text and a map of the styles). Tiny sizes draw
//! without panicking.

mod tui_support;

use std::time::Duration;

use proctor::protocol::{Event, EventKind, PauseKind, StreamKind, WaitingOn};
use proctor::tui::app::App;
use ratatui::crossterm::event::KeyCode;
use tui_support::*;

const SIZES: [(u16, u16); 2] = [(80, 24), (120, 40)];
const THEMES: [&str; 2] = ["dark", "light"];

/// The demo up to (not including) the event where `stop` holds.
fn demo_until(mut stop: impl FnMut(&Event) -> bool) -> Vec<Event> {
    recorded(DEMO_AUTO)
        .into_iter()
        .take_while(|e| !stop(e))
        .collect()
}

/// Runs `state` for each size and theme and snapshots the screen.
fn snap(name: &str, state: impl Fn(&mut App, &proctor::tui::app::ManualClock)) {
    for theme in THEMES {
        for (w, h) in SIZES {
            let (mut app, clock) = app(theme);
            state(&mut app, &clock);
            let t = draw(&mut app, w, h);
            insta::assert_snapshot!(format!("{name}_{w}x{h}_{theme}"), screen(&t));
        }
    }
}

/// Streaming: the coder's reply is half in.
fn streaming(app: &mut App, clock: &proctor::tui::app::ManualClock) {
    let mut deltas = 0;
    let events = demo_until(|e| {
        if matches!(&e.kind, EventKind::MessageDelta { agent, .. } if agent == "coder") {
            deltas += 1;
        }
        deltas > 20
    });
    feed(app, clock, &events);
    // The live roster state the JSON stream does not carry.
    app.on_event(&ev(
        1000,
        EventKind::AgentStatus {
            agent: "coder".into(),
            state: proctor::protocol::AgentActivity::Streaming,
        },
    ));
}

/// The coder's block waits for a decision (the demo stream, with the approval asked instead of
/// auto-approved).
fn approval(app: &mut App, clock: &proctor::tui::app::ManualClock) {
    let events: Vec<Event> = recorded(DEMO_QUIT_AT_APPROVAL);
    feed(app, clock, &events);
}

#[test]
fn streaming_reply() {
    snap("streaming", streaming);
}

#[test]
fn approval_pending_with_highlighted_code() {
    snap("approval", approval);
}

#[test]
fn in_place_edit() {
    snap("edit", |app, clock| {
        approval(app, clock);
        app.on_key(key('e'));
        for _ in 0..3 {
            app.on_key(code(KeyCode::Down));
        }
        app.on_key(code(KeyCode::End));
        typed(app, "  # edited");
    });
}

#[test]
fn diff_confirm() {
    snap("diff", |app, clock| {
        approval(app, clock);
        app.on_key(key('e'));
        for _ in 0..3 {
            app.on_key(code(KeyCode::Down));
        }
        app.on_key(code(KeyCode::End));
        typed(app, "  # edited");
        app.on_key(ctrl('s'));
    });
}

#[test]
fn reject_reason() {
    snap("reject", |app, clock| {
        approval(app, clock);
        app.on_key(key('n'));
        typed(app, "write the CSV with the csv module only");
    });
}

#[test]
fn budget_dialog() {
    snap("budget", |app, clock| {
        let events = demo_until(
            |e| matches!(&e.kind, EventKind::SpeakerSelected { agent, .. } if agent == "reviewer"),
        );
        feed(app, clock, &events);
        let next = events.last().map_or(0, |e| e.seq) + 1;
        app.on_event(&ev(next, EventKind::BudgetChanged { cap_usd: 0.0005 }));
        app.on_event(&ev(
            next + 1,
            EventKind::BudgetWarning {
                spent_usd: 0.00041,
                cap_usd: 0.0005,
            },
        ));
        app.on_event(&ev(next + 2, EventKind::Paused { reason: "budget: the next call (reviewer, scripted/demo) could cost up to $0.0026; $0.0004 of $0.0005 spent. Raise the budget or continue once, or stop".into(), kind: PauseKind::Budget }));
        app.on_event(&ev(
            next + 3,
            EventKind::Waiting {
                on: WaitingOn::Continue,
                ops_handled: 0,
            },
        ));
        clock.advance(Duration::from_secs(1));
    });
}

#[test]
fn help() {
    snap("help", |app, clock| {
        feed(
            app,
            clock,
            &demo_until(|e| matches!(e.kind, EventKind::Terminated { .. })),
        );
        app.on_key(key('?'));
    });
}

#[test]
fn manual_speaker_picker() {
    snap("picker", |app, clock| {
        let events = demo_until(
            |e| matches!(&e.kind, EventKind::SpeakerSelected { agent, .. } if agent == "coder"),
        );
        feed(app, clock, &events);
        let next = events.last().map_or(0, |e| e.seq) + 1;
        app.on_event(&ev(
            next,
            EventKind::SpeakerRequested {
                candidates: vec!["planner".into(), "coder".into(), "reviewer".into()],
            },
        ));
        app.on_event(&ev(
            next + 1,
            EventKind::Waiting {
                on: WaitingOn::Speaker,
                ops_handled: 0,
            },
        ));
        app.on_key(key('j'));
    });
}

#[test]
fn execution_running() {
    snap("running", |app, clock| {
        let events = demo_until(|e| matches!(e.kind, EventKind::ExecutionOutput { .. }));
        feed(app, clock, &events);
        let next = events.last().map_or(0, |e| e.seq) + 1;
        let started = events
            .iter()
            .rev()
            .find(|e| matches!(e.kind, EventKind::ExecutionStarted { .. }))
            .map_or(0, |e| e.ts_ms);
        for (i, (s, t)) in [
            (StreamKind::Stdout, "   the 5\n"),
            (StreamKind::Stdout, "   fox 3\n"),
            (StreamKind::Stderr, "warning: a tie between dog and is\n"),
        ]
        .into_iter()
        .enumerate()
        {
            app.on_event(&Event {
                seq: next + i as u64,
                session: "s".into(),
                ts_ms: started + 10,
                kind: EventKind::ExecutionOutput {
                    id: 1,
                    block: 0,
                    stream: s,
                    text: t.into(),
                },
            });
        }
        // 3.2 s after the block started.
        let now = app.wall_ms();
        clock.advance(Duration::from_millis((started + 3200).saturating_sub(now)));
    });
}

#[test]
fn tiny_sizes_never_panic() {
    for (w, h) in [
        (1, 1),
        (5, 2),
        (20, 5),
        (12, 4),
        (30, 8),
        (40, 10),
        (79, 23),
        (100, 13),
        (200, 3),
        (3, 60),
    ] {
        for state in [
            streaming as fn(&mut App, &proctor::tui::app::ManualClock),
            approval,
        ] {
            let (mut app, clock) = app("dark");
            state(&mut app, &clock);
            let _ = draw(&mut app, w, h);
            app.on_key(key('?'));
            let _ = draw(&mut app, w, h);
            app.on_key(code(KeyCode::Esc));
            app.on_key(key('e'));
            let _ = draw(&mut app, w, h);
            app.on_key(ctrl('s'));
            let _ = draw(&mut app, w, h);
        }
    }
}

#[test]
fn no_escape_from_agent_text_or_output_reaches_the_screen() {
    let (mut app, clock) = app("dark");
    feed(&mut app, &clock, &recorded(DEMO_AUTO)[..1]);
    let evil = "look \x1b]52;c;ZXZpbA==\x07 here \x1b[2J\u{202E}txt.py\r";
    app.on_event(&ev(
        2,
        EventKind::Message {
            agent: "coder".into(),
            content: evil.into(),
            to: None,
        },
    ));
    app.on_event(&ev(
        3,
        EventKind::ExecutionStarted {
            id: 1,
            block: 0,
            language: "bash".into(),
        },
    ));
    app.on_event(&ev(
        4,
        EventKind::ExecutionOutput {
            id: 1,
            block: 0,
            stream: StreamKind::Stdout,
            text: "out \x1b[31mred\x1b[0m \u{9b}31m\n".into(),
        },
    ));
    let t = draw(&mut app, 100, 30);
    let s = text(&t);
    assert!(!s.chars().any(|c| c.is_control() && c != '\n'), "{s:?}");
    assert!(s.contains("␛]52;c;ZXZpbA==␇"), "{s}");
    assert!(s.contains("⟨U+202E⟩txt.py␍"), "{s}");
    assert!(s.contains("⟨U+009B⟩31m"), "{s}");
}

#[test]
fn approve_all_shows_every_block_first() {
    snap("approve_all", |app, clock| {
        let events =
            demo_until(|e| matches!(&e.kind, EventKind::ApprovalRequested { id, .. } if *id == 2));
        feed(app, clock, &events);
        // A fix and the shell block that shows its file, as the demo's coder proposes them.
        let block = |index: usize, language: &str, code: &str, filename: Option<&str>| {
            proctor::protocol::CodeBlock {
                index,
                language: language.into(),
                code: code.into(),
                filename: filename.map(str::to_string),
            }
        };
        app.on_event(&ev(
            900,
            EventKind::ApprovalRequested {
                id: 2,
                agent: "coder".into(),
                blocks: vec![
                    block(
                        0,
                        "python",
                        "# filename: wordcount.py\nimport collections, csv\n\nwords = open('text.txt').read().split()\ntop = collections.Counter(words).most_common(10)\nwith open('top_words.csv', 'w', newline='') as f:\n    csv.writer(f).writerows(top)",
                        Some("wordcount.py"),
                    ),
                    block(1, "bash", "wc -l top_words.csv\ncat top_words.csv", None),
                ],
            },
        ));
        clock.advance(std::time::Duration::from_secs(1));
        app.on_key(key('a'));
    });
}
