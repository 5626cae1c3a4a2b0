use proptest::prelude::*;

use super::*;
use crate::protocol::{Event, EventKind};
use crate::tui::render::highlight::Highlighter;
use crate::tui::theme::Theme;

fn ev(seq: u64, kind: EventKind) -> Event {
    Event {
        seq,
        session: "s".into(),
        ts_ms: seq,
        kind,
    }
}

fn text(lines: &[Line<'_>]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect())
        .collect()
}

struct Fixture {
    theme: Theme,
    hl: Highlighter,
    view: SessionView,
    t: Transcript,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            theme: Theme::load("dark", false).unwrap(),
            hl: Highlighter::inline(Some("base16-ocean.dark".into())),
            view: SessionView::new(),
            t: Transcript::default(),
        }
    }
    fn apply(&mut self, e: Event) {
        self.view.apply(&e);
        let touched = self.view.take_touched();
        self.t.sync(&self.view, &touched);
    }
    fn frame(&mut self, width: usize, height: usize) -> Vec<Line<'static>> {
        self.t.set_width(width, &self.view);
        let ctx = CellContext {
            theme: &self.theme,
            highlighter: &self.hl,
            view: &self.view,
            expand: false,
        };
        self.t.visible(height, &ctx, 0)
    }
    fn scroll(&mut self, d: i64) {
        let ctx = CellContext {
            theme: &self.theme,
            highlighter: &self.hl,
            view: &self.view,
            expand: false,
        };
        self.t.scroll_by(d, &ctx);
    }
}

const REPLY: &str = "Here is the plan:\n\n1. read the **file**\n2. count `words`\n\n```python\nimport re\nprint(len(re.findall(r'\\w+', open('a.txt').read())))\n```\n\n> done when the count matches\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nTERMINATE";

fn message(agent: &str, content: &str) -> EventKind {
    EventKind::Message {
        agent: agent.into(),
        content: content.into(),
        to: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// A reply split into deltas at random points, drawn after every delta, ends up exactly like
    /// the same reply arriving whole.
    #[test]
    fn streamed_deltas_render_like_the_final_message(cuts in proptest::collection::btree_set(1usize..REPLY.len(), 0..25), width in 12usize..90) {
        let cuts: Vec<usize> = cuts.into_iter().filter(|c| REPLY.is_char_boundary(*c)).collect();
        let mut streamed = Fixture::new();
        let mut start = 0;
        let mut seq = 1;
        for c in cuts.iter().copied().chain(std::iter::once(REPLY.len())) {
            streamed.apply(ev(seq, EventKind::MessageDelta { agent: "coder".into(), delta: REPLY[start..c].into() }));
            seq += 1;
            start = c;
            let _ = streamed.frame(width, 200);
        }
        let while_streaming = text(&streamed.frame(width, 200));
        streamed.apply(ev(seq, message("coder", REPLY)));
        let after = text(&streamed.frame(width, 200));

        let mut whole = Fixture::new();
        whole.apply(ev(1, message("coder", REPLY)));
        let expected = text(&whole.frame(width, 200));
        prop_assert_eq!(&after, &expected);
        // While streaming only the header differs (the "…" mark).
        prop_assert_eq!(&while_streaming[1..], &expected[1..]);
    }
}

#[test]
fn a_frame_lays_out_only_what_is_visible_and_a_resize_reflows_lazily() {
    let mut f = Fixture::new();
    for i in 0..5_000u64 {
        f.apply(ev(
            i + 1,
            message(
                if i % 2 == 0 { "coder" } else { "planner" },
                &format!("message number {i} with some words to wrap"),
            ),
        ));
    }
    let lines = f.frame(60, 20);
    assert_eq!(lines.len(), 20);
    assert!(
        text(&lines)
            .iter()
            .any(|l| l.contains("message number 4999"))
    );
    assert!(f.t.cached_cells() <= 12, "laid out {}", f.t.cached_cells());
    // Resize: nothing is wrapped again until it is seen.
    f.t.set_width(30, &f.view);
    assert_eq!(f.t.cached_cells(), 0);
    let lines = f.frame(30, 20);
    assert!(lines.iter().all(|l| l.width() <= 30));
    assert!(f.t.cached_cells() <= 20);
    // The index knows roughly how long the whole transcript is.
    let (_, total, _) = f.t.position();
    assert!(total >= 15_000, "{total}");
}

#[test]
fn scrolling_up_stops_following_counts_new_cells_and_the_end_follows_again() {
    let mut f = Fixture::new();
    for i in 0..50u64 {
        f.apply(ev(i + 1, message("coder", &format!("line {i}"))));
    }
    let _ = f.frame(40, 10);
    assert!(f.t.following());
    f.scroll(-5);
    assert!(!f.t.following());
    let before = text(&f.frame(40, 10));
    f.apply(ev(100, message("coder", "brand new")));
    f.apply(ev(101, message("coder", "newer still")));
    assert_eq!(f.t.unseen(), 2);
    // What was on screen stays put.
    assert_eq!(text(&f.frame(40, 10)), before);
    f.scroll(1_000);
    assert!(f.t.following());
    assert_eq!(f.t.unseen(), 0);
    assert!(
        text(&f.frame(40, 10))
            .iter()
            .any(|l| l.contains("newer still"))
    );
    // To the very top and back.
    f.t.top();
    assert!(text(&f.frame(40, 10))[0].contains("coder"));
    f.t.bottom();
    assert!(f.t.following());
}

#[test]
fn search_scrolls_to_the_match_and_marks_it() {
    let mut f = Fixture::new();
    for i in 0..200u64 {
        let body = if i == 37 {
            "the needle is here".to_string()
        } else {
            format!("hay {i}")
        };
        f.apply(ev(i + 1, message("coder", &body)));
    }
    let _ = f.frame(40, 10);
    let ctx = CellContext {
        theme: &f.theme,
        highlighter: &f.hl,
        view: &f.view,
        expand: false,
    };
    assert!(f.t.search("NEEDLE", true, &ctx));
    assert!(!f.t.following());
    let lines = f.frame(40, 10);
    let hit = lines
        .iter()
        .find(|l| text(std::slice::from_ref(l))[0].contains("needle"))
        .expect("match on screen");
    assert!(
        hit.spans
            .iter()
            .any(|s| s.content == "needle"
                && s.style == f.theme.base().patch(f.theme.search_match()))
    );
    let ctx = CellContext {
        theme: &f.theme,
        highlighter: &f.hl,
        view: &f.view,
        expand: false,
    };
    assert!(!f.t.search("absent", true, &ctx));
}

#[test]
fn a_running_block_shows_its_elapsed_time_and_only_its_latest_output() {
    let mut f = Fixture::new();
    f.apply(ev(
        1,
        EventKind::ExecutionStarted {
            id: 1,
            block: 0,
            language: "python".into(),
        },
    ));
    for i in 0..40u64 {
        f.apply(ev(
            2 + i,
            EventKind::ExecutionOutput {
                id: 1,
                block: 0,
                stream: crate::protocol::StreamKind::Stdout,
                text: format!("tick {i}\n"),
            },
        ));
    }
    f.t.set_width(60, &f.view);
    let ctx = CellContext {
        theme: &f.theme,
        highlighter: &f.hl,
        view: &f.view,
        expand: false,
    };
    let lines = text(&f.t.visible(30, &ctx, 3_200));
    assert!(lines[0].contains("running 3.2 s"), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("tick 39")));
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("tick 3\u{20}") || l.ends_with("tick 3"))
    );
    assert!(lines.iter().any(|l| l.contains("more lines")));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]
    /// A resize divides every cell's text by the width with a multiplication: exactly as `/`.
    #[test]
    fn the_width_divisor_divides_exactly(n in any::<u32>(), width in 0usize..100_000) {
        prop_assert_eq!(Divisor::new(width).div(n), n / (width.max(8) as u32));
    }
}

#[test]
fn the_width_divisor_is_exact_at_the_edges() {
    for width in [8usize, 9, 80, 199, 200, 65_535, 1 << 20, u32::MAX as usize] {
        for n in [0u32, 1, 7, 8, 79, 80, 81, u32::MAX - 1, u32::MAX] {
            assert_eq!(
                Divisor::new(width).div(n),
                n / width as u32,
                "{n} / {width}"
            );
        }
    }
}
