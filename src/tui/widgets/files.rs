//! One workspace file opened from the `f` pane: a tab line (the file now, or its diff against
//! the session's start; the status bar names the key that switches, from the keymap), a note where the view is
//! not simply the file now (deleted: as it was at start; only the first 1 MiB), then the file
//! highlighted with line numbers, or the diff coloured like the edit confirmation. "loading…"
//! until the run loop has read it.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use crate::tui::app::App;
use crate::tui::files::FileView;
use crate::tui::model::FileMark;
use crate::tui::render::text::one_line;
use crate::tui::render::wrap::pad_to;
use crate::tui::widgets::approval::{code_view, diff_line, draw_code};

/// What the dialog shows.
pub struct Shown<'a> {
    /// Path relative to the workspace.
    pub path: &'a str,
    /// How the session changed it.
    pub mark: Option<FileMark>,
    /// What was read (`None`: loading).
    pub view: Option<&'a FileView>,
    /// The diff tab (else the file).
    pub diff: bool,
    /// First line shown.
    pub scroll: usize,
}

/// Label of the file tab.
fn file_label(view: Option<&FileView>) -> &'static str {
    if view.is_some_and(|v| v.file_is_start) {
        "at session start"
    } else {
        "file now"
    }
}

/// Draws the file dialog over `screen`.
pub fn draw(app: &App, f: &mut Frame<'_>, screen: Rect, s: Shown<'_>) {
    let theme = &app.theme;
    // Everything between the header and the status bar (which shows this dialog's keys).
    let area = Rect {
        y: screen.y + 1,
        height: screen.height.saturating_sub(2),
        ..screen
    };
    f.render_widget(Clear, area);
    let mut title = vec![Span::styled(
        format!(" {} ", one_line(s.path)),
        theme.focus_border(),
    )];
    if let Some(mark) = s.mark {
        let st = match mark {
            FileMark::Created => theme.success(),
            FileMark::Modified => theme.warning(),
            FileMark::Deleted => theme.danger(),
        };
        title.push(Span::styled(
            format!("{} {} in this session ", mark.sign(), mark.word()),
            st,
        ));
    }
    let block = Block::new()
        .borders(Borders::ALL)
        .border_style(theme.focus_border())
        .style(theme.base())
        .title(Line::from(title));
    let inner = block.inner(area);
    f.render_widget(block, area);
    if inner.height == 0 || inner.width == 0 {
        return;
    }
    let tab = |label: &str, on: bool| {
        if on {
            Span::styled(format!(" {label} "), theme.selected())
        } else {
            Span::styled(format!(" {label} "), theme.muted())
        }
    };
    let tabs = vec![
        tab(file_label(s.view), !s.diff),
        Span::raw(" "),
        tab("diff against session start", s.diff),
    ];
    f.render_widget(
        Paragraph::new(Line::from(tabs)),
        Rect { height: 1, ..inner },
    );
    let mut body = Rect {
        y: inner.y + 1,
        height: inner.height - 1,
        ..inner
    };
    let Some(view) = s.view else {
        f.render_widget(
            Paragraph::new(Span::styled("loading…", theme.muted())),
            body,
        );
        return;
    };
    if !s.diff
        && let Some(note) = &view.file_note
        && body.height > 1
    {
        f.render_widget(
            Paragraph::new(Span::styled(one_line(note), theme.warning())),
            Rect { height: 1, ..body },
        );
        body.y += 1;
        body.height -= 1;
    }
    let why = |text: &str| {
        Paragraph::new(Span::styled(one_line(text), theme.warning())).wrap(Wrap { trim: false })
    };
    match (s.diff, &view.file, &view.diff) {
        (false, Ok(lines), _) => {
            let colored = view
                .hl_key
                .and_then(|k| app.highlighter.get_keyed(k, lines, &view.language));
            draw_code(code_view(lines, colored, s.scroll, theme), f, body);
        }
        (true, _, Ok(lines)) => draw_diff(app, f, body, lines, s.scroll),
        (false, Err(e), _) | (true, _, Err(e)) => f.render_widget(why(e), body),
    }
}

/// Diff lines from `scroll`, wrapped only as far as they are seen.
fn draw_diff(app: &App, f: &mut Frame<'_>, area: Rect, lines: &[String], scroll: usize) {
    let theme = &app.theme;
    let rows = area.height as usize;
    let mut out: Vec<Line<'static>> = Vec::with_capacity(rows);
    let mut shown = 0;
    for d in lines.iter().skip(scroll) {
        if out.len() >= rows {
            break;
        }
        for mut line in diff_line(d, area.width as usize, theme) {
            if out.len() >= rows {
                break;
            }
            pad_to(&mut line, area.width as usize, theme.base());
            out.push(line);
        }
        shown += 1;
    }
    f.render_widget(Paragraph::new(out), area);
    let more = lines.len().saturating_sub(scroll + shown);
    if more > 0 && area.width > 20 {
        let text = format!(" ↓ {more} more lines ");
        let w = (unicode_width::UnicodeWidthStr::width(text.as_str()) as u16).min(area.width);
        f.render_widget(
            Paragraph::new(Span::styled(
                text,
                theme.muted().add_modifier(Modifier::REVERSED),
            )),
            Rect {
                x: area.x + area.width - w,
                y: area.y + area.height - 1,
                width: w,
                height: 1,
            },
        );
    }
}
