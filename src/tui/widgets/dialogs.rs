//! Dialogs over the screen: help, the pause dialog (continue, raise the budget, stop, write), the
//! manual speaker picker, quit confirmation, active rules (revoke), workspace files (one file:
//! `files`), the cost per model.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use crate::protocol::PauseKind;
use crate::tui::app::{App, Modal, PauseInput};
use crate::tui::render::text::{line_spans, one_line};
use crate::tui::render::{tokens, usd};
use crate::tui::widgets::centered;

fn frame_block(app: &App, title: &str) -> Block<'static> {
    Block::new()
        .borders(Borders::ALL)
        .border_style(app.theme.focus_border())
        .style(app.theme.base())
        .title(Span::styled(format!(" {title} "), app.theme.focus_border()))
}

fn show(
    app: &App,
    f: &mut Frame<'_>,
    screen: Rect,
    title: &str,
    lines: Vec<Line<'static>>,
    w: u16,
    scroll: usize,
) {
    // Rows the lines take once wrapped to the dialog's inside.
    let inner_w = usize::from(w.saturating_sub(2)).max(1);
    let rows: usize = lines
        .iter()
        .map(|l| l.width().max(1).div_ceil(inner_w))
        .sum();
    let h = u16::try_from(rows).unwrap_or(u16::MAX).saturating_add(2);
    let area = centered(screen, w, h);
    f.render_widget(Clear, area);
    let block = frame_block(app, title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let scroll = scroll.min(rows.saturating_sub(inner.height as usize)) as u16;
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .scroll((scroll, 0)),
        inner,
    );
}

fn choice(app: &App, key: &str, what: &str) -> Line<'static> {
    Line::from(vec![
        Span::styled(
            format!("  {key}  "),
            app.theme
                .accent()
                .remove_modifier(Modifier::UNDERLINED)
                .add_modifier(Modifier::BOLD),
        ),
        Span::styled(what.to_string(), app.theme.base()),
    ])
}

/// Draws the open dialog, if any.
pub fn draw(app: &mut App, f: &mut Frame<'_>, screen: Rect) {
    if let Some(Modal::File { .. }) = &app.modal {
        crate::tui::widgets::files::draw(app, f, screen);
        return;
    }
    let app = &*app;
    let Some(modal) = &app.modal else { return };
    let theme = &app.theme;
    let w = screen.width.saturating_sub(4).min(76);
    match modal {
        Modal::Help { scroll } => {
            let hw = screen.width.saturating_sub(4).min(100);
            let h = screen.height.saturating_sub(2);
            let area = centered(screen, hw, h);
            let lines = crate::tui::widgets::help::lines(app, hw.saturating_sub(2) as usize);
            f.render_widget(Clear, area);
            let block = frame_block(app, "keys — Esc closes");
            let inner = block.inner(area);
            f.render_widget(block, area);
            let max = lines.len().saturating_sub(inner.height as usize);
            f.render_widget(
                Paragraph::new(lines)
                    .wrap(Wrap { trim: false })
                    .scroll(((*scroll).min(max) as u16, 0)),
                inner,
            );
        }
        Modal::Pause(input) => {
            let Some(p) = &app.view.paused else { return };
            let mut lines = vec![
                Line::from(line_spans(&p.reason, theme.warning(), theme.marker(), 0)),
                Line::default(),
            ];
            match input {
                PauseInput::Choose => {
                    if p.kind == PauseKind::Budget {
                        lines.push(choice(
                            app,
                            "r",
                            &format!(
                                "raise the budget by an amount (suggested {})",
                                usd(app.suggested_raise())
                            ),
                        ));
                        lines.push(choice(
                            app,
                            "c",
                            "continue once (this call may cross the budget)",
                        ));
                    } else {
                        lines.push(choice(app, "c", "continue"));
                    }
                    lines.push(choice(app, "m", "write a message to the team"));
                    lines.push(choice(app, "s", "stop the session"));
                    lines.push(Line::from(Span::styled(
                        "  Esc  close; the session stays paused (p opens this again)",
                        theme.muted(),
                    )));
                }
                PauseInput::Raise(amount) => {
                    let cap = app.view.budget_usd.unwrap_or(0.0);
                    let new = amount
                        .trim()
                        .parse::<f64>()
                        .map(|x| usd(cap + x))
                        .unwrap_or_else(|_| "?".into());
                    lines.push(Line::from(vec![
                        Span::styled("  raise by $", theme.base()),
                        Span::styled(amount.clone(), theme.accent()),
                        Span::styled("▏", theme.accent()),
                        Span::styled(format!("   new budget {new}"), theme.muted()),
                    ]));
                    lines.push(Line::from(Span::styled(
                        "  Enter raise and continue · Esc back",
                        theme.muted(),
                    )));
                }
            }
            let title = format!("paused: {}", crate::store::export::pause_name(p.kind));
            show(app, f, screen, &title, lines, w, 0);
        }
        Modal::Picker { selected } => {
            let cands = app.view.speaker_requested.clone().unwrap_or_default();
            let mut lines = vec![
                Line::from(Span::styled(
                    "manual selection: who speaks next?",
                    theme.base(),
                )),
                Line::default(),
            ];
            for (i, c) in cands.iter().enumerate() {
                let mut name = theme.agent(app.view.agent_slot(c));
                if i == *selected {
                    name = name.add_modifier(Modifier::REVERSED);
                }
                let desc = app
                    .view
                    .agent(c)
                    .map(|a| a.description.clone())
                    .unwrap_or_default();
                lines.push(Line::from(vec![
                    Span::styled(
                        format!("  {}  ", i + 1),
                        theme.accent().remove_modifier(Modifier::UNDERLINED),
                    ),
                    Span::styled(one_line(c), name),
                    Span::styled(format!("  {}", one_line(&desc)), theme.muted()),
                ]));
            }
            lines.push(Line::default());
            lines.push(Line::from(Span::styled(
                "j/k move · Enter or 1-9 choose",
                theme.muted(),
            )));
            show(app, f, screen, "who speaks next", lines, w, 0);
        }
        Modal::QuitConfirm => {
            let what = if app.view.running.is_some() {
                "A block is running; quitting stops it."
            } else {
                "An agent is replying; quitting cuts the reply."
            };
            let lines = vec![
                Line::from(Span::styled(what, theme.warning())),
                Line::from(Span::styled(
                    "The session is saved either way: `proctor resume` continues it.",
                    theme.base(),
                )),
                Line::default(),
                choice(app, "y", "quit"),
                Line::from(Span::styled("  any other key stays", theme.muted())),
            ];
            show(app, f, screen, "quit?", lines, w.min(70), 0);
        }
        Modal::Rules { selected } => {
            let mut lines = Vec::new();
            if app.view.rules.is_empty() {
                lines.push(Line::from(Span::styled(
                    "no auto-approval rules: every block waits for you",
                    theme.muted(),
                )));
            }
            for (i, (r, text)) in app.view.rules.iter().zip(app.rules_text()).enumerate() {
                let mut st = theme.base();
                if i == *selected {
                    st = st.add_modifier(Modifier::REVERSED);
                }
                let mut spans = vec![Span::styled(format!("  {text}"), st)];
                if app.revoking.contains(r) {
                    spans.push(Span::styled("  revoking — sent…", theme.warning()));
                }
                lines.push(Line::from(spans));
            }
            lines.push(Line::default());
            lines.push(Line::from(Span::styled(
                "j/k move · d revoke the selected rule · Esc close",
                theme.muted(),
            )));
            show(app, f, screen, "auto-approval rules", lines, w, 0);
        }
        Modal::Workspace { selected } => {
            let mut lines = Vec::new();
            if app.view.workspace.is_empty() {
                lines.push(Line::from(Span::styled(
                    "no file changed in this session yet",
                    theme.muted(),
                )));
            }
            for (i, (path, mark)) in app.view.workspace.iter().enumerate() {
                let st = match mark {
                    crate::tui::model::FileMark::Created => theme.success(),
                    crate::tui::model::FileMark::Modified => theme.warning(),
                    crate::tui::model::FileMark::Deleted => theme.danger(),
                };
                let mut name = theme.base();
                if i == *selected {
                    name = name.add_modifier(Modifier::REVERSED);
                }
                lines.push(Line::from(vec![
                    Span::styled(format!("  {} {:<9}", mark.sign(), mark.word()), st),
                    Span::styled(one_line(path), name),
                ]));
            }
            lines.push(Line::default());
            lines.push(Line::from(Span::styled(
                "j/k move · Enter open · Esc close",
                theme.muted(),
            )));
            show(
                app,
                f,
                screen,
                "workspace: files changed in this session",
                lines,
                w,
                0,
            );
        }
        // Drawn above.
        Modal::File { .. } => {}
        Modal::Cost => {
            let s = &app.view.spend;
            let mut lines = vec![Line::from(Span::styled(
                format!(
                    "{:<26} {:>6} {:>7} {:>7} {:>7} {:>18}",
                    "model", "calls", "in", "cached", "out", "USD"
                ),
                theme.muted(),
            ))];
            for (m, r) in app.model_rows() {
                let approx = if r.estimated_calls > 0 { "≈" } else { "" };
                let cost = if r.unpriced_calls == r.calls && r.calls > 0 {
                    "unpriced".to_string()
                } else {
                    format!("{approx}{}", usd(r.usd))
                };
                let cost = if crate::engine::cost::is_demo_priced(&m) {
                    format!("{cost} (demo)")
                } else {
                    cost
                };
                lines.push(Line::from(Span::styled(
                    format!(
                        "{:<26} {:>6} {:>7} {:>7} {:>7} {:>18}",
                        one_line(&m),
                        r.calls,
                        tokens(r.input_tokens),
                        tokens(r.cached_tokens),
                        tokens(r.output_tokens),
                        cost
                    ),
                    theme.base(),
                )));
            }
            lines.push(Line::from(Span::styled(
                format!(
                    "{:<26} {:>6} {:>7} {:>7} {:>7} {:>18}",
                    "session",
                    s.calls,
                    tokens(s.input_tokens),
                    tokens(s.cached_tokens),
                    tokens(s.output_tokens),
                    crate::tui::widgets::cost::total(app)
                ),
                theme.base().add_modifier(Modifier::BOLD),
            )));
            if s.estimated_calls > 0 {
                lines.push(Line::from(Span::styled(
                    "≈: counted by proctor (the provider reported no usage)",
                    theme.muted(),
                )));
            }
            show(
                app,
                f,
                screen,
                "cost per model — Esc closes",
                lines,
                82.min(screen.width),
                0,
            );
        }
    }
}
