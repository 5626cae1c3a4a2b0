//! Frame cost of the whole TUI screen (TestBackend 200x50), issue 11's targets 1 and 2.
//!
//! - `render/transcript/{1000,1000000}`: a transcript of 10^3 vs 10^6 lines, following the tail;
//!   `render/transcript_middle/…` scrolled to its middle; `render/resize/…` a frame after each
//!   resize (200 ↔ 180 columns: every height re-estimated, the visible slice laid out again).
//!   A frame lays out only the visible slice, so each pair should cost about the same
//!   (target: ratio ≤ 1.5).
//! - `pending/first_frame/{100,10000}`: the frame that first shows a proposed Python block of 100
//!   vs 10,000 lines (the agent's message already on screen; the approval request folded, then one
//!   frame), with the app's background highlighter: the code shows plain first and coloured when
//!   the worker is done, so the frame must not depend on the block's length (target: ratio ≤ 2).
//!   The worker may still be highlighting the message's copy of the block during the frame, as
//!   in a real session; each run waits (untimed) for the previous run's worker to end.
//!
//! After criterion, one `BENCH <name> <value> <unit>` line per figure goes to stdout.

#[path = "support/timing.rs"]
mod support;

use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use proctor::protocol::{CodeBlock, Event, EventKind};
use proctor::tui::app::{App, AppConfig, ManualClock};
use proctor::tui::keymap::Keymap;
use proctor::tui::render::highlight::Highlighter;
use proctor::tui::theme::Theme;
use proctor::tui::transcript::cell::CellContext;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

/// Lines of one message as laid out at 200 columns (header, 8 list items, blank line).
const LINES_PER_MESSAGE: u64 = 10;

fn new_app(theme: &Theme, highlighter: Highlighter) -> App {
    App::new(AppConfig {
        highlighter,
        theme: theme.clone(),
        keymap: Keymap::default(),
        notes: Vec::new(),
        clock: ManualClock::new(0),
        workspace: None,
    })
}

fn message(seq: u64, agent: &str, content: String) -> Event {
    Event {
        seq,
        session: "bench".into(),
        ts_ms: seq,
        kind: EventKind::Message {
            agent: agent.into(),
            content,
            to: None,
        },
    }
}

fn app_with_lines(theme: &Theme, lines: u64) -> App {
    let mut app = new_app(theme, Highlighter::inline(theme.syntect_theme.clone()));
    let body: String = (0..8)
        .map(|i| format!("- item {i}: the quick brown fox jumps over the lazy dog, counting words as it goes\n"))
        .collect();
    for seq in 0..lines / LINES_PER_MESSAGE {
        let agent = ["planner", "coder", "reviewer"][(seq % 3) as usize];
        app.on_event(&message(seq + 1, agent, body.clone()));
    }
    app
}

fn draw(term: &mut Terminal<TestBackend>, app: &mut App) {
    term.draw(|f| proctor::tui::widgets::draw(app, f))
        .expect("draw");
}

fn transcript(c: &mut Criterion) {
    let theme = Theme::load("dark", false).expect("theme");
    let mut g = c.benchmark_group("render");
    g.sample_size(30).measurement_time(Duration::from_secs(4));
    for lines in [1_000u64, 1_000_000] {
        let mut app = app_with_lines(&theme, lines);
        let mut term = Terminal::new(TestBackend::new(200, 50)).expect("terminal");
        // The first frame measures every cell's height estimate once.
        draw(&mut term, &mut app);
        let name = format!("render/transcript/{lines}");
        g.bench_with_input(BenchmarkId::new("transcript", lines), &lines, |b, _| {
            b.iter_custom(|iters| support::timed(&name, iters, || draw(&mut term, &mut app)))
        });

        // The middle: scroll up half the transcript (a human's PgUps, laid out on the way).
        let (_, total, _) = app.transcript.position();
        let ctx_half = -((total / 2) as i64);
        let ctx = CellContext {
            theme: &app.theme,
            highlighter: &app.highlighter,
            view: &app.view,
            expand: app.expand,
        };
        app.transcript.scroll_by(ctx_half, &ctx);
        draw(&mut term, &mut app);
        assert!(!app.transcript.following(), "scrolled to the middle");
        let name = format!("render/transcript_middle/{lines}");
        g.bench_with_input(
            BenchmarkId::new("transcript_middle", lines),
            &lines,
            |b, _| {
                b.iter_custom(|iters| support::timed(&name, iters, || draw(&mut term, &mut app)))
            },
        );

        // A resize: every frame at another width (200 ↔ 180), following the tail.
        app.transcript.bottom();
        let name = format!("render/resize/{lines}");
        let mut wide = true;
        g.bench_with_input(BenchmarkId::new("resize", lines), &lines, |b, _| {
            b.iter_custom(|iters| {
                support::timed(&name, iters, || {
                    wide = !wide;
                    term.backend_mut().resize(if wide { 200 } else { 180 }, 50);
                    draw(&mut term, &mut app);
                })
            })
        });
    }
    g.finish();
}

/// A Python block of `n` lines (a module of small functions, as an agent writes one).
fn python_block(n: usize, salt: u64) -> String {
    let mut lines = vec![
        format!("# generated {salt}"),
        "import math".to_string(),
        String::new(),
    ];
    let mut i = 0;
    while lines.len() < n {
        lines.extend([
            format!("def step_{i}(values, scale={i}):"),
            format!("    \"\"\"Scales and sums the values (step {i}).\"\"\""),
            "    total = 0.0".to_string(),
            "    for v in values:".to_string(),
            "        total += math.sqrt(abs(v)) * scale  # keep it positive".to_string(),
            "    return round(total, 3)".to_string(),
            String::new(),
        ]);
        i += 1;
    }
    lines.truncate(n);
    lines.join("\n") + "\n"
}

fn pending(c: &mut Criterion) {
    let theme = Theme::load("dark", false).expect("theme");
    let mut g = c.benchmark_group("pending");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    for n in [100usize, 10_000] {
        let name = format!("pending/first_frame/{n}");
        let mut salt = 0u64;
        g.bench_with_input(BenchmarkId::new("first_frame", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // A session with some transcript on screen, and the app's own highlighter:
                    // a worker thread (the block's code differs each time, so it is never
                    // cached).
                    salt += 1;
                    let code = python_block(n, salt);
                    // The worker holds `gone` until it ends: each run starts with no worker of
                    // an earlier run still busy (one app runs one worker).
                    let (gone, worker_ended) = std::sync::mpsc::channel::<()>();
                    let mut app = new_app(
                        &theme,
                        Highlighter::background(theme.syntect_theme.clone(), move || {
                            let _ = &gone;
                        }),
                    );
                    for seq in 1..=20 {
                        app.on_event(&message(
                            seq,
                            "planner",
                            format!("Plan step {seq}: read the data, then sum it.\n"),
                        ));
                    }
                    // The agent's message (the transcript folds its block) is on screen.
                    app.on_event(&message(
                        100,
                        "coder",
                        format!("Here is the module.\n\n```python\n{code}```\n"),
                    ));
                    let mut term = Terminal::new(TestBackend::new(200, 50)).expect("terminal");
                    draw(&mut term, &mut app);
                    let approval = Event {
                        seq: 101,
                        session: "bench".into(),
                        ts_ms: 101,
                        kind: EventKind::ApprovalRequested {
                            id: 1,
                            agent: "coder".into(),
                            blocks: vec![CodeBlock {
                                index: 0,
                                language: "python".into(),
                                code,
                                filename: Some("module.py".into()),
                            }],
                        },
                    };
                    // As the run loop: the event as it came from the engine, then a frame.
                    let t = std::time::Instant::now();
                    app.on_event_owned(approval);
                    draw(&mut term, &mut app);
                    total += t.elapsed();
                    std::hint::black_box(&term);
                    drop((app, term));
                    // Disconnected once the worker has given up its block and ended.
                    let _ = worker_ended.recv();
                }
                support::record(&name, total, iters);
                total
            })
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    transcript(&mut c);
    pending(&mut c);
    c.final_summary();
    support::ratio_line(
        "render_ratio_bottom",
        "render/transcript/1000",
        "render/transcript/1000000",
    );
    support::ratio_line(
        "render_ratio_middle",
        "render/transcript_middle/1000",
        "render/transcript_middle/1000000",
    );
    support::ratio_line(
        "render_ratio_resize",
        "render/resize/1000",
        "render/resize/1000000",
    );
    support::ratio_line(
        "pending_ratio_first_frame",
        "pending/first_frame/100",
        "pending/first_frame/10000",
    );
}
