//! The screen: header, roster, cost meter, transcript, pending-code pane, composer, status bar and
//! dialogs, laid out for the terminal's size (a sidebar from 100 columns, a one-line roster below
//! that; anything down to a few cells draws without panicking). Widgets only draw; keys are `app`'s.

pub mod approval;
pub mod composer;
pub mod cost;
pub mod dialogs;
pub mod files;
pub mod help;
pub mod roster;
pub mod status_bar;

use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use crate::protocol::WaitingOn;
use crate::tui::app::{App, Focus};
use crate::tui::render::text::one_line;

/// Columns from which roster and cost get a sidebar.
pub const WIDE: u16 = 100;
/// Width of the sidebar.
pub const SIDEBAR: u16 = 34;

/// A rectangle inside `r` without its outer cells (for borders), never negative.
pub fn inner(r: Rect) -> Rect {
    Rect {
        x: r.x.saturating_add(1),
        y: r.y.saturating_add(1),
        width: r.width.saturating_sub(2),
        height: r.height.saturating_sub(2),
    }
}

/// Draws one frame.
pub fn draw(app: &mut App, f: &mut Frame<'_>) {
    let _busy = app.highlighter.screen_busy();
    let area = f.area();
    f.render_widget(Block::new().style(app.theme.base()), area);
    if area.width < 12 || area.height < 4 {
        // Too small for panes: one line that says what matters.
        let text = if app.view.open_approval().is_some() {
            "approval pending"
        } else {
            "proctor: window too small"
        };
        f.render_widget(
            Paragraph::new(Line::from(Span::styled(text, app.theme.warning()))),
            area,
        );
        return;
    }
    let wide = area.width >= WIDE && area.height >= 14;
    let strip = !wide && area.height >= 12;
    let composer_h = composer::height(app, area.height);
    let chunks = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Length(u16::from(strip)),
            Constraint::Min(1),
            Constraint::Length(composer_h),
            Constraint::Length(1),
        ])
        .split(area);
    header(app, f, chunks[0], !wide);
    if strip {
        roster::strip(app, f, chunks[1]);
    }
    let body = chunks[2];
    let main = if wide {
        let cols = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Min(20), Constraint::Length(SIDEBAR)])
            .split(body);
        let side = cols[1];
        let roster_h = (app.view.agents.len() as u16 * 2 + 2).clamp(4, side.height / 2 + 1);
        let parts = Layout::default()
            .direction(Direction::Vertical)
            .constraints([Constraint::Length(roster_h), Constraint::Min(3)])
            .split(side);
        roster::panel(app, f, parts[0]);
        cost::panel(app, f, parts[1]);
        cols[0]
    } else {
        body
    };
    if app.view.open_approval().is_some() {
        let pane_h = if app.fullscreen || main.height < 12 {
            main.height
        } else {
            let code = app.pane_code.as_ref().map_or(1, |p| p.lines.len()) as u16;
            (code.saturating_add(5)).clamp(9, main.height * 3 / 5)
        };
        let parts = Layout::default()
            .direction(Direction::Vertical)
            .constraints([Constraint::Min(0), Constraint::Length(pane_h)])
            .split(main);
        if parts[0].height > 0 {
            transcript(app, f, parts[0]);
        }
        approval::pane(app, f, parts[1]);
    } else {
        transcript(app, f, main);
    }
    if composer_h > 0 {
        composer::draw(app, f, chunks[3]);
    }
    status_bar::draw(app, f, chunks[4]);
    dialogs::draw(app, f, area);
}

fn header(app: &App, f: &mut Frame<'_>, area: Rect, with_cost: bool) {
    let theme = &app.theme;
    let v = &app.view;
    let mut spans = vec![Span::styled(
        " proctor ",
        theme
            .accent()
            .add_modifier(ratatui::style::Modifier::BOLD)
            .remove_modifier(ratatui::style::Modifier::UNDERLINED),
    )];
    if !v.team.is_empty() {
        spans.push(Span::styled(
            format!("· {} ", one_line(&v.team)),
            theme.muted(),
        ));
    }
    let mode = match v.mode {
        crate::protocol::SessionMode::Step => "step",
        crate::protocol::SessionMode::Gate => "gate",
        crate::protocol::SessionMode::Auto => "auto",
    };
    spans.push(Span::styled(format!("· {mode} "), theme.muted()));
    let state = if let Some(reason) = &v.terminated {
        Some((format!("ended: {}", one_line(reason)), theme.muted()))
    } else if v.open_approval().is_some() {
        Some(("● waiting for you: approval".to_string(), theme.warning()))
    } else if let Some(p) = &v.paused {
        Some((
            format!("⏸ paused ({})", crate::store::export::pause_name(p.kind)),
            theme.warning(),
        ))
    } else if v.speaker_requested.is_some() {
        Some((
            "● waiting for you: who speaks next".to_string(),
            theme.warning(),
        ))
    } else if app.engine_waits == Some(WaitingOn::Message) {
        Some(("● waiting for you: a message".to_string(), theme.warning()))
    } else if v.running.is_some() {
        Some((
            "▶ running code".to_string(),
            theme
                .accent()
                .remove_modifier(ratatui::style::Modifier::UNDERLINED),
        ))
    } else {
        None
    };
    if let Some((s, st)) = state {
        spans.push(Span::styled(format!("· {s} "), st));
    }
    let left = Line::from(spans);
    let right = if with_cost {
        cost::inline(app, area.width.saturating_sub(left.width() as u16))
    } else {
        Line::default()
    };
    let rw = right.width() as u16;
    f.render_widget(Paragraph::new(left), area);
    if rw > 0 && rw < area.width {
        let r = Rect {
            x: area.x + area.width - rw,
            width: rw,
            ..area
        };
        f.render_widget(Paragraph::new(right), r);
    }
}

fn transcript(app: &mut App, f: &mut Frame<'_>, area: Rect) {
    let theme = app.theme.clone();
    let focused = app.focus == Focus::Transcript;
    let block = Block::new()
        .borders(ratatui::widgets::Borders::TOP)
        .border_style(if focused {
            theme.focus_border()
        } else {
            theme.border()
        })
        .title(Span::styled(
            " transcript ",
            if focused {
                theme.focus_border()
            } else {
                theme.muted()
            },
        ));
    let inner_area = block.inner(area);
    f.render_widget(block, area);
    if inner_area.height == 0 || inner_area.width < 2 {
        return;
    }
    let notes_h = (app.notes.len() as u16).min(inner_area.height / 3);
    let notes_area = Rect {
        height: notes_h,
        ..inner_area
    };
    for (i, n) in app.notes.iter().take(notes_h as usize).enumerate() {
        let r = Rect {
            y: notes_area.y + i as u16,
            height: 1,
            ..notes_area
        };
        f.render_widget(
            Paragraph::new(Line::from(Span::styled(
                format!("⚠ {}", one_line(n)),
                theme.warning(),
            ))),
            r,
        );
    }
    let text_area = Rect {
        y: inner_area.y + notes_h,
        height: inner_area.height - notes_h,
        width: inner_area.width - 1,
        ..inner_area
    };
    app.sync_transcript();
    app.transcript
        .set_width(text_area.width as usize, &app.view);
    let now = app.wall_ms();
    let lines = app.visible_transcript(text_area.height as usize, now);
    f.render_widget(Paragraph::new(lines), text_area);
    // Scrollbar.
    let (pos, total, view_h) = app.transcript.position();
    let bar = Rect {
        x: text_area.x + text_area.width,
        width: 1,
        ..text_area
    };
    if total > view_h as u64 && bar.height > 0 {
        let h = u64::from(bar.height);
        let thumb = (h * view_h as u64 / total).clamp(1, h);
        let start = if app.transcript.following() {
            h - thumb
        } else {
            ((h - thumb) * pos / (total - view_h as u64).max(1)).min(h - thumb)
        };
        let lines: Vec<Line<'static>> = (0..h)
            .map(|i| {
                if i >= start && i < start + thumb {
                    Line::from(Span::styled(
                        "┃",
                        theme
                            .accent()
                            .remove_modifier(ratatui::style::Modifier::UNDERLINED),
                    ))
                } else {
                    Line::from(Span::raw(" "))
                }
            })
            .collect();
        f.render_widget(Paragraph::new(lines), bar);
    }
    if !app.transcript.following() && app.transcript.unseen() > 0 {
        let text = format!(
            " ↓ {} new · {} ",
            app.transcript.unseen(),
            app.keymap.describe(crate::tui::keymap::Action::Bottom)
        );
        let w = (unicode_width::UnicodeWidthStr::width(text.as_str()) as u16).min(text_area.width);
        let r = Rect {
            x: text_area.x + text_area.width - w,
            y: text_area.y + text_area.height - 1,
            width: w,
            height: 1,
        };
        f.render_widget(
            Paragraph::new(Line::from(Span::styled(
                text,
                theme
                    .warning()
                    .add_modifier(ratatui::style::Modifier::REVERSED),
            ))),
            r,
        );
    }
}

/// A centred rectangle of at most `w` x `h` inside `area`.
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

/// A line of key hints: `key label · key label`.
pub fn hint_line(hints: &[(String, &str)], key: Style, label: Style) -> Vec<Span<'static>> {
    let mut spans = Vec::new();
    for (i, (k, l)) in hints.iter().enumerate() {
        if i > 0 {
            spans.push(Span::styled(" · ", label));
        }
        spans.push(Span::styled(k.clone(), key));
        spans.push(Span::styled(format!(" {l}"), label));
    }
    spans
}
