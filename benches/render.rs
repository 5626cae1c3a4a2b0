//! Frame cost of the whole TUI screen (TestBackend 200x50) with a transcript of 10^3 and 10^6
//! lines, following the tail: a frame lays out only the visible slice, so the two should cost
//! about the same (issue 11's target: ratio ≤ 1.5). The benchmark issue extends this file.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use proctor::protocol::{Event, EventKind};
use proctor::tui::app::{App, AppConfig, ManualClock};
use proctor::tui::keymap::Keymap;
use proctor::tui::render::highlight::Highlighter;
use proctor::tui::theme::Theme;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

/// Lines of one message as laid out at 200 columns (header, 8 list items, blank line).
const LINES_PER_MESSAGE: u64 = 10;

fn app_with_lines(lines: u64) -> App {
    let theme = Theme::load("dark", false).expect("theme");
    let mut app = App::new(AppConfig {
        highlighter: Highlighter::inline(theme.syntect_theme.clone()),
        theme,
        keymap: Keymap::default(),
        notes: Vec::new(),
        clock: ManualClock::new(0),
        workspace: None,
    });
    let body: String = (0..8)
        .map(|i| format!("- item {i}: the quick brown fox jumps over the lazy dog, counting words as it goes\n"))
        .collect();
    for seq in 0..lines / LINES_PER_MESSAGE {
        let agent = ["planner", "coder", "reviewer"][(seq % 3) as usize];
        app.on_event(&Event {
            seq: seq + 1,
            session: "bench".into(),
            ts_ms: seq,
            kind: EventKind::Message {
                agent: agent.into(),
                content: body.clone(),
                to: None,
            },
        });
    }
    app
}

fn transcript(c: &mut Criterion) {
    let mut g = c.benchmark_group("render");
    g.sample_size(30).measurement_time(Duration::from_secs(5));
    for lines in [1_000u64, 1_000_000] {
        let mut app = app_with_lines(lines);
        let mut term = Terminal::new(TestBackend::new(200, 50)).expect("terminal");
        // The first frame measures every cell's height estimate once.
        term.draw(|f| proctor::tui::widgets::draw(&mut app, f))
            .expect("draw");
        g.bench_with_input(BenchmarkId::new("transcript", lines), &lines, |b, _| {
            b.iter(|| {
                term.draw(|f| proctor::tui::widgets::draw(&mut app, f))
                    .expect("draw");
            })
        });
    }
    g.finish();
}

criterion_group!(benches, transcript);
criterion_main!(benches);
