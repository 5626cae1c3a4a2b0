//! Shared helpers of the TUI tests: an app on a manual clock, recorded sessions, and a dump of a
//! TestBackend screen with its styles (so themes and highlighting show in snapshots).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proctor::protocol::{Event, EventKind};
use proctor::tui::app::{App, AppConfig, ManualClock};
use proctor::tui::keymap::Keymap;
use proctor::tui::render::highlight::Highlighter;
use proctor::tui::theme::Theme;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::{Color, Modifier, Style};

pub const DEMO_AUTO: &str = include_str!("../fixtures/tui/demo_auto_stream.jsonl");
pub const DEMO_QUIT_AT_APPROVAL: &str =
    include_str!("../fixtures/tui/demo_quit_at_approval_stream.jsonl");

/// Events of a recorded `--json` stream.
pub fn recorded(text: &str) -> Vec<Event> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("recorded event"))
        .collect()
}

/// An app on a manual clock that starts at the first event's wall time.
pub fn app_with(theme: &str, keys: BTreeMap<String, String>) -> (App, Arc<ManualClock>) {
    let theme = Theme::load(theme, false).expect("theme");
    let clock = ManualClock::new(1_795_784_734_171);
    let (keymap, notes) = Keymap::with_overrides(&keys);
    let app = App::new(AppConfig {
        highlighter: Highlighter::inline(theme.syntect_theme.clone()),
        theme,
        keymap,
        notes,
        clock: clock.clone(),
        workspace: None,
    });
    (app, clock)
}

pub fn app(theme: &str) -> (App, Arc<ManualClock>) {
    app_with(theme, BTreeMap::new())
}

/// Feeds events, letting a second pass between them (so guards are past unless a test says).
pub fn feed(app: &mut App, clock: &ManualClock, events: &[Event]) {
    for e in events {
        app.on_event(e);
    }
    clock.advance(Duration::from_secs(1));
}

pub fn ev(seq: u64, kind: EventKind) -> Event {
    Event {
        seq,
        session: "01a21d1c-75d6-7401-a232-0164001db74f".into(),
        ts_ms: 1_795_784_734_171 + seq,
        kind,
    }
}

pub fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

pub fn code(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

pub fn ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}

pub fn typed(app: &mut App, text: &str) {
    for c in text.chars() {
        app.on_key(key(c));
    }
}

/// Does what the run loop does with file loads the app asked for (there: off the UI task).
pub fn load_files(app: &mut App) {
    for r in app.take_requests() {
        if let proctor::tui::app::Request::LoadFile { seq, path, files } = r {
            app.file_loaded(seq, files.load(&path));
        }
    }
}

/// Draws one frame on a TestBackend.
pub fn draw(app: &mut App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("terminal");
    t.draw(|f| proctor::tui::widgets::draw(app, f))
        .expect("draw");
    t
}

/// The screen's text, one row per line, trailing spaces cut.
pub fn text(t: &Terminal<TestBackend>) -> String {
    let buf = t.backend().buffer();
    let mut out = String::new();
    for y in 0..buf.area.height {
        let mut row = String::new();
        for x in 0..buf.area.width {
            row.push_str(buf[(x, y)].symbol());
        }
        out.push_str(row.trim_end());
        out.push('\n');
    }
    out
}

fn style_name(s: &Style) -> String {
    let c = |c: Option<Color>| match c {
        None | Some(Color::Reset) => "-".to_string(),
        Some(Color::Rgb(r, g, b)) => format!("#{r:02x}{g:02x}{b:02x}"),
        Some(other) => format!("{other:?}").to_lowercase(),
    };
    let mut m = Vec::new();
    for (flag, name) in [
        (Modifier::BOLD, "bold"),
        (Modifier::DIM, "dim"),
        (Modifier::ITALIC, "italic"),
        (Modifier::UNDERLINED, "underline"),
        (Modifier::REVERSED, "reversed"),
        (Modifier::CROSSED_OUT, "crossed"),
    ] {
        if s.add_modifier.contains(flag) {
            m.push(name);
        }
    }
    format!("fg {} bg {} {}", c(s.fg), c(s.bg), m.join(" "))
}

/// The screen's text, then a grid of one letter per cell naming its style, then the legend.
pub fn screen(t: &Terminal<TestBackend>) -> String {
    let buf = t.backend().buffer();
    let mut legend: Vec<String> = Vec::new();
    let mut grid = String::new();
    for y in 0..buf.area.height {
        let mut row = String::new();
        for x in 0..buf.area.width {
            let cell = &buf[(x, y)];
            let name = style_name(&cell.style());
            let i = match legend.iter().position(|l| *l == name) {
                Some(i) => i,
                None => {
                    legend.push(name);
                    legend.len() - 1
                }
            };
            let letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
            row.push(letters.chars().nth(i).unwrap_or('?'));
        }
        grid.push_str(&row);
        grid.push('\n');
    }
    let letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let legend: String = legend
        .iter()
        .enumerate()
        .map(|(i, l)| {
            format!(
                "{} = {}\n",
                letters.chars().nth(i).unwrap_or('?'),
                l.trim_end()
            )
        })
        .collect();
    format!("{}\n-- styles --\n{grid}{legend}", text(t))
}
