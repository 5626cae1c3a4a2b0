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

use crate::tui::app::{App, Modal};
use crate::tui::files::FileView;
use crate::tui::model::FileMark;
use crate::tui::render::text::one_line;
use crate::tui::render::wrap::pad_to;
use crate::tui::widgets::approval::{code_line_rows, code_view, diff_line, draw_code};

/// Label of the file tab.
fn file_label(view: Option<&FileView>) -> &'static str {
    if view.is_some_and(|v| v.file_is_start) {
        "at session start"
    } else {
        "file now"
    }
}

/// Draws the open file dialog over `screen` (between the header and the status bar). A scroll
/// past the last full page is pulled back to it, and the rows shown are kept for paging.
pub fn draw(app: &mut App, f: &mut Frame<'_>, screen: Rect) {
    if let Some((scroll, rows)) = draw_open(app, f, screen) {
        if let Some(Modal::File { scroll: s, .. }) = &mut app.modal {
            *s = scroll;
        }
        app.file_rows = rows;
    }
}

/// The first line of the last full page of `n` lines in `rows` rows, line `i` taking
/// `rows_of(i)` rows.
fn last_page(n: usize, rows: usize, rows_of: impl Fn(usize) -> usize) -> usize {
    let (mut i, mut used) = (n, 0);
    while i > 0 {
        let h = rows_of(i - 1);
        if used + h > rows {
            break;
        }
        used += h;
        i -= 1;
    }
    i.min(n.saturating_sub(1))
}

/// Draws the dialog; returns the scroll shown and the rows of its body.
fn draw_open(app: &App, f: &mut Frame<'_>, screen: Rect) -> Option<(usize, usize)> {
    let Some(Modal::File {
        path,
        mark,
        view,
        diff,
        scroll,
        ..
    }) = &app.modal
    else {
        return None;
    };
    let (view, diff) = (view.as_ref(), *diff);
    let theme = &app.theme;
    // Everything between the header and the status bar (which shows this dialog's keys).
    let area = Rect {
        y: screen.y + 1,
        height: screen.height.saturating_sub(2),
        ..screen
    };
    f.render_widget(Clear, area);
    let mut title = vec![Span::styled(
        format!(" {} ", one_line(path)),
        theme.focus_border(),
    )];
    if let Some(mark) = mark {
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
        return None;
    }
    let tab = |label: &str, on: bool| {
        if on {
            Span::styled(format!(" {label} "), theme.selected())
        } else {
            Span::styled(format!(" {label} "), theme.muted())
        }
    };
    let tabs = vec![
        tab(file_label(view), !diff),
        Span::raw(" "),
        tab("diff against session start", diff),
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
    let Some(view) = view else {
        f.render_widget(
            Paragraph::new(Span::styled("loading…", theme.muted())),
            body,
        );
        return None;
    };
    if !diff
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
    let (width, rows) = (body.width as usize, body.height as usize);
    let why = |text: &str| {
        Paragraph::new(Span::styled(one_line(text), theme.warning())).wrap(Wrap { trim: false })
    };
    let shown = match (diff, &view.file, &view.diff) {
        (false, Ok(lines), _) => {
            let last = last_page(lines.len(), rows, |i| {
                code_line_rows(lines, i, width, theme)
            });
            let scroll = (*scroll).min(last);
            let colored = view
                .hl_key
                .and_then(|k| app.highlighter.get_keyed(k, lines, &view.language));
            draw_code(code_view(lines, colored, scroll, theme), f, body);
            scroll
        }
        (true, _, Ok(lines)) => {
            let last = last_page(lines.len(), rows, |i| {
                diff_line(&lines[i], width, theme).len()
            });
            let scroll = (*scroll).min(last);
            draw_diff(app, f, body, lines, scroll);
            scroll
        }
        (false, Err(e), _) | (true, _, Err(e)) => {
            f.render_widget(why(e), body);
            0
        }
    };
    Some((shown, rows))
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
