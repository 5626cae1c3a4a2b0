//! The pending-code pane: `approval #id · block i/n · agent · language · → filename`, the code
//! with line numbers as its interpreter counts them (hidden characters shown as markers), its
//! colours once the highlighter is done, and the pane's own modes: editing in place, the diff of
//! an edit to confirm, a rejection reason. Decisions already sent show as "sent…".

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use crate::tui::app::{App, Focus, PaneMode};
use crate::tui::keymap::Action;
use crate::tui::render::text::{line_spans, one_line, restyle_markers};
use crate::tui::render::wrap::{pad_to, wrap_hard};
use crate::tui::widgets::hint_line;

/// The approval shown, as its title names it.
struct Heading {
    id: u64,
    agent: String,
    n: usize,
}

/// Draws the pane.
pub fn pane(app: &mut App, f: &mut Frame<'_>, area: Rect) {
    let theme = app.theme.clone();
    let focused = app.focus == Focus::Approval;
    // What the title needs, not the blocks' code (a frame never copies a big block).
    let Some(a) = app.view.open_approval().map(|a| Heading {
        id: a.id,
        agent: a.agent.clone(),
        n: a.blocks.len(),
    }) else {
        return;
    };
    let n = a.n;
    let shown_idx = app.pane_code.as_ref().map_or(0, |p| p.key.1);
    let b = app
        .view
        .open_approval()
        .and_then(|a| a.blocks.get(shown_idx))
        .map(|b| (b.language.clone(), b.filename.clone()));
    let mut title = vec![
        Span::styled(
            format!(" approval #{} · block {}/{n} · ", a.id, shown_idx + 1),
            theme.warning(),
        ),
        Span::styled(
            one_line(&a.agent),
            theme.agent(app.view.agent_slot(&a.agent)),
        ),
    ];
    if let Some((language, filename)) = &b {
        title.push(Span::styled(
            format!(" · {}", one_line(language)),
            theme.warning(),
        ));
        if let Some(file) = filename {
            title.push(Span::styled(
                format!(" · → {}", one_line(file)),
                theme.warning(),
            ));
        }
    }
    title.push(Span::raw(" "));
    let hidden = app.pane_code.as_ref().map_or(0, |p| p.hidden);
    let block = Block::new()
        .borders(Borders::ALL)
        .border_style(if focused {
            theme.focus_border()
        } else {
            theme.warning()
        })
        .title(Line::from(title));
    let block = if hidden > 0 {
        block.title_bottom(Line::from(Span::styled(
            format!(
                " ⚠ {hidden} hidden character{} shown as markers ",
                if hidden == 1 { "" } else { "s" }
            ),
            theme.danger().add_modifier(Modifier::BOLD),
        )))
    } else {
        block
    };
    let inner = block.inner(area);
    f.render_widget(block, area);
    if inner.height == 0 || inner.width == 0 {
        return;
    }
    // Decisions already sent for this approval.
    let mut sent_lines: Vec<Line<'static>> = Vec::new();
    for i in 0..n {
        if let Some(what) = app.sent.get(&(a.id, i)) {
            sent_lines.push(Line::from(vec![
                Span::styled(format!("block {}/{n}: {what} — ", i + 1), theme.muted()),
                Span::styled("sent…", theme.warning()),
            ]));
        }
    }
    let waiting_for_engine = app.current_block().is_none();
    let footer_h: u16 = if inner.height >= 4 { 1 } else { 0 };
    let sent_h = (sent_lines.len() as u16).min(inner.height.saturating_sub(footer_h + 1) / 2);
    let body = Rect {
        height: inner.height - footer_h - sent_h,
        ..inner
    };
    let sent_area = Rect {
        y: body.y + body.height,
        height: sent_h,
        ..inner
    };
    let footer = Rect {
        y: inner.y + inner.height - footer_h,
        height: footer_h,
        ..inner
    };
    f.render_widget(
        Paragraph::new(
            sent_lines
                .into_iter()
                .rev()
                .take(sent_h as usize)
                .rev()
                .collect::<Vec<_>>(),
        ),
        sent_area,
    );

    let key = theme.accent().remove_modifier(Modifier::UNDERLINED);
    let label = theme.muted();
    #[derive(PartialEq)]
    enum Shown {
        Code,
        Editing,
        Diff,
        Reason,
        All,
    }
    let shown = match &app.pane {
        PaneMode::Code => Shown::Code,
        PaneMode::Editing(_) => Shown::Editing,
        PaneMode::DiffConfirm { .. } => Shown::Diff,
        PaneMode::Reason(_) => Shown::Reason,
        PaneMode::ConfirmAll { .. } => Shown::All,
    };
    if shown == Shown::All {
        let scroll = match &app.pane {
            PaneMode::ConfirmAll { scroll, .. } => *scroll,
            _ => 0,
        };
        let blocks = app.undecided_blocks(a.id);
        let all: Vec<crate::tui::model::ProposedBlock> = app
            .view
            .open_approval()
            .map(|a| a.blocks.clone())
            .unwrap_or_default();
        let width = body.width as usize;
        let mut lines: Vec<Line<'static>> = Vec::new();
        for &i in &blocks {
            let Some(bl) = all.get(i) else { continue };
            let code = crate::text_safety::code_lines(&bl.code, &bl.language);
            let hidden = crate::text_safety::hidden_count(&bl.code);
            let mut head = format!("block {}/{n} · {}", i + 1, one_line(&bl.language));
            if let Some(f) = &bl.filename {
                head.push_str(&format!(" → {}", one_line(f)));
            }
            head.push_str(&format!(" · {} lines", code.len()));
            if hidden > 0 {
                head.push_str(&format!(" · ⚠ {hidden} hidden characters"));
            }
            lines.push(Line::from(Span::styled(head, theme.warning())));
            let digits = code.len().max(1).to_string().len();
            for (k, l) in code.iter().enumerate() {
                lines.extend(wrap_hard(
                    &line_spans(l, theme.code(), theme.marker(), 0),
                    width,
                    &[Span::styled(
                        format!("{:>digits$} │ ", k + 1),
                        theme.muted(),
                    )],
                    &[Span::styled(format!("{:>digits$} ┆ ", ""), theme.muted())],
                ));
            }
        }
        app.code_rows = body.height as usize;
        let max = lines.len().saturating_sub(body.height as usize);
        if let PaneMode::ConfirmAll { seen_all, .. } = &mut app.pane
            && scroll >= max
        {
            *seen_all = true;
        }
        let visible: Vec<Line<'static>> = lines.into_iter().skip(scroll.min(max)).collect();
        f.render_widget(Paragraph::new(visible), body);
        f.render_widget(
            Paragraph::new(Line::from(vec![
                Span::styled(
                    if max > scroll {
                        format!("j/PgDn: {} more lines to read before y · ", max - scroll)
                    } else {
                        format!("approve all {} blocks shown here? ", blocks.len())
                    },
                    theme.warning(),
                ),
                Span::styled("y", key),
                Span::styled(" yes · ", label),
                Span::styled("Esc", key),
                Span::styled(" back", label),
            ])),
            footer,
        );
        return;
    }
    if shown == Shown::Editing {
        if let PaneMode::Editing(t) = &mut app.pane {
            t.set_style(theme.code());
            t.set_cursor_style(theme.selected());
            f.render_widget(&**t, body);
        }
        f.render_widget(
            Paragraph::new(Line::from(vec![
                Span::styled("editing in place · ", theme.warning()),
                Span::styled("Ctrl-S", key),
                Span::styled(" done, show the diff · ", label),
                Span::styled("Esc", key),
                Span::styled(" cancel", label),
            ])),
            footer,
        );
        return;
    }
    if shown == Shown::Diff {
        let (code, scroll) = if let PaneMode::DiffConfirm { code, scroll } = &app.pane {
            (code.clone(), *scroll)
        } else {
            (String::new(), 0)
        };
        let original = app
            .view
            .open_approval()
            .and_then(|a| a.blocks.get(shown_idx))
            .map(|b| b.code.clone())
            .unwrap_or_default();
        let diff = crate::store::diff::unified(&original, &code, "agent's version", "your edit");
        let lines: Vec<Line<'static>> = if diff.is_empty() {
            vec![Line::from(Span::styled(
                "no change: y runs the block as the agent wrote it",
                theme.muted(),
            ))]
        } else {
            diff.lines()
                .flat_map(|d| diff_line(d, body.width as usize, &theme))
                .collect()
        };
        app.code_rows = body.height as usize;
        let max = lines.len().saturating_sub(body.height as usize);
        let shown: Vec<Line<'static>> = lines.into_iter().skip(scroll.min(max)).collect();
        f.render_widget(Paragraph::new(shown), body);
        f.render_widget(
            Paragraph::new(Line::from(vec![
                Span::styled(
                    if max > scroll {
                        "j/k scroll · run the edited code? "
                    } else {
                        "run the edited code? "
                    },
                    theme.warning(),
                ),
                Span::styled("y", key),
                Span::styled(" yes · ", label),
                Span::styled("e", key),
                Span::styled(" edit again · ", label),
                Span::styled("Esc", key),
                Span::styled(" drop the edit", label),
            ])),
            footer,
        );
        return;
    }
    if shown == Shown::Reason {
        let code_h = body.height.saturating_sub(2);
        let code_area = Rect {
            height: code_h,
            ..body
        };
        draw_code(app_code(app), f, code_area);
        let input_area = Rect {
            y: body.y + code_h,
            height: body.height - code_h,
            ..body
        };
        if let PaneMode::Reason(t) = &mut app.pane {
            t.set_block(
                Block::new()
                    .borders(Borders::TOP)
                    .border_style(theme.danger())
                    .title(Span::styled(
                        " reason for rejecting (the agent reads it) ",
                        theme.danger(),
                    )),
            );
            t.set_style(theme.base());
            t.set_cursor_style(theme.selected());
            f.render_widget(&**t, input_area);
        }
        f.render_widget(
            Paragraph::new(Line::from(vec![
                Span::styled("Enter", key),
                Span::styled(" reject with this reason · ", label),
                Span::styled("Esc", key),
                Span::styled(" cancel", label),
            ])),
            footer,
        );
        return;
    }
    app.code_rows = body.height as usize;
    draw_code(app_code(app), f, body);
    let footer_line = if waiting_for_engine {
        Line::from(Span::styled(
            "sent… waiting for the engine",
            theme.warning(),
        ))
    } else if !focused {
        Line::from(vec![
            Span::styled("approval pending — ", theme.warning()),
            Span::styled(app.keymap.describe(Action::FocusNext), key),
            Span::styled(" to decide", label),
        ])
    } else if app.guard_until().is_some_and(|t| t > app.now()) {
        Line::from(Span::styled("just appeared — read it first", theme.muted()))
    } else {
        Line::from(hint_line(
            &app.keymap
                .hints(crate::tui::widgets::status_bar::PANE_FOOTER),
            key,
            label,
        ))
    };
    f.render_widget(Paragraph::new(footer_line), footer);
}

/// One line of a unified diff, coloured by its kind (added, removed, hunk header), made visible
/// and wrapped to `width` under a `┆` gutter: the edit confirmation and the `f` pane's diffs.
pub fn diff_line(d: &str, width: usize, theme: &crate::tui::theme::Theme) -> Vec<Line<'static>> {
    let st = if d.starts_with('+') {
        theme.success()
    } else if d.starts_with('-') {
        theme.danger()
    } else if d.starts_with("@@") {
        theme.accent()
    } else {
        theme.base()
    };
    wrap_hard(
        &line_spans(d, st, theme.marker(), 0),
        width,
        &[],
        &[Span::styled(" ┆", theme.muted())],
    )
}

/// Lines of code to draw: split already (a workspace file), or found in a block and made visible
/// as they are drawn (the pending pane).
#[derive(Clone, Copy)]
enum CodeSource<'a> {
    Lines(&'a [String]),
    Block(&'a crate::text_safety::CodeLines),
}

impl<'a> CodeSource<'a> {
    fn len(&self) -> usize {
        match self {
            CodeSource::Lines(l) => l.len(),
            CodeSource::Block(b) => b.len(),
        }
    }

    fn line(&self, i: usize) -> std::borrow::Cow<'a, str> {
        match self {
            CodeSource::Lines(l) => l.get(i).map_or("", String::as_str).into(),
            CodeSource::Block(b) => b.line(i),
        }
    }
}

/// What `draw_code` needs, borrowed from the app.
pub struct CodeView<'a> {
    lines: CodeSource<'a>,
    colored: Option<crate::tui::render::highlight::Highlighted>,
    scroll: usize,
    theme: &'a crate::tui::theme::Theme,
}

fn app_code(app: &App) -> CodeView<'_> {
    let (lines, colored) = match &app.pane_code {
        Some(p) => {
            let lang = app
                .view
                .open_approval()
                .and_then(|a| a.blocks.get(p.key.1))
                .map(|b| b.language.clone())
                .unwrap_or_default();
            let colored = p
                .hl_key
                .and_then(|k| app.highlighter.get_code(k, &p.lines, &lang));
            (CodeSource::Block(&p.lines), colored)
        }
        None => (CodeSource::Lines(&[]), None),
    };
    CodeView {
        lines,
        colored,
        scroll: app.code_scroll,
        theme: &app.theme,
    }
}

/// A code view of any lines (a workspace file).
pub fn code_view<'a>(
    lines: &'a [String],
    colored: Option<crate::tui::render::highlight::Highlighted>,
    scroll: usize,
    theme: &'a crate::tui::theme::Theme,
) -> CodeView<'a> {
    CodeView {
        lines: CodeSource::Lines(lines),
        colored,
        scroll,
        theme,
    }
}

/// The line-number gutter of code line `i` and of its continuation rows.
fn gutters(
    i: usize,
    digits: usize,
    theme: &crate::tui::theme::Theme,
) -> (Vec<Span<'static>>, Vec<Span<'static>>) {
    (
        vec![Span::styled(
            format!("{:>digits$} │ ", i + 1),
            theme.muted(),
        )],
        vec![Span::styled(format!("{:>digits$} ┆ ", ""), theme.muted())],
    )
}

/// Rows code line `i` of `lines` takes in [`draw_code`] at `width` columns.
pub fn code_line_rows(
    lines: &[String],
    i: usize,
    width: usize,
    theme: &crate::tui::theme::Theme,
) -> usize {
    let digits = lines.len().max(1).to_string().len();
    let Some(l) = lines.get(i) else { return 0 };
    let (first, rest) = gutters(i, digits, theme);
    wrap_hard(
        &line_spans(l, theme.code(), theme.marker(), 0),
        width,
        &first,
        &rest,
    )
    .len()
}

/// Code with line numbers, from `scroll`. Long lines wrap (never cut: what is past the edge
/// is code that would run), continuing under a `┆` gutter.
pub fn draw_code(v: CodeView<'_>, f: &mut Frame<'_>, area: Rect) {
    if area.height == 0 || area.width == 0 {
        return;
    }
    let theme = v.theme;
    let digits = v.lines.len().max(1).to_string().len();
    let base = theme.code();
    let rows = area.height as usize;
    let mut out: Vec<Line<'static>> = Vec::with_capacity(rows);
    let mut shown = 0usize;
    for i in v.scroll..v.lines.len() {
        if out.len() >= rows {
            break;
        }
        let l = v.lines.line(i);
        let spans: Vec<Span<'static>> = match v.colored.as_ref().and_then(|c| c.get(i)) {
            Some(pieces) => {
                let colored: Vec<Span<'static>> = pieces
                    .iter()
                    .map(|(st, t)| Span::styled(t.clone(), base.patch(*st)))
                    .collect();
                restyle_markers(colored, theme.marker())
            }
            None => line_spans(&l, base, theme.marker(), 0),
        };
        let (first, rest) = gutters(i, digits, theme);
        for mut line in wrap_hard(&spans, area.width as usize, &first, &rest) {
            if out.len() >= rows {
                break;
            }
            pad_to(&mut line, area.width as usize, base);
            out.push(line);
        }
        shown += 1;
    }
    let more = v.lines.len().saturating_sub(v.scroll + shown);
    f.render_widget(Paragraph::new(out), area);
    if more > 0 && area.width > 20 {
        let text = format!(" ↓ {more} more lines ");
        let w = (unicode_width::UnicodeWidthStr::width(text.as_str()) as u16).min(area.width);
        let r = Rect {
            x: area.x + area.width - w,
            y: area.y + area.height - 1,
            width: w,
            height: 1,
        };
        f.render_widget(
            Paragraph::new(Span::styled(
                text,
                theme.muted().add_modifier(Modifier::REVERSED),
            )),
            r,
        );
    }
}
