//! The roster: each agent's state (idle, thinking, streaming, waiting for you, running code,
//! muted), model, tokens and cost; a panel in the sidebar or one line on narrow screens.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use crate::protocol::AgentActivity;
use crate::tui::app::{App, Focus};
use crate::tui::model::AgentView;
use crate::tui::render::text::one_line;
use crate::tui::render::{tokens, usd};

/// An agent's state in words and its style.
pub fn state(app: &App, a: &AgentView) -> (&'static str, &'static str, Style) {
    let theme = &app.theme;
    let waiting_on_it = app.view.open_approval().is_some_and(|p| p.agent == a.name);
    if a.muted {
        return ("×", "muted", theme.danger());
    }
    if waiting_on_it && !matches!(a.activity, AgentActivity::Executing) {
        return ("●", "waiting for you", theme.warning());
    }
    match a.activity {
        AgentActivity::Idle => ("○", "idle", theme.muted()),
        AgentActivity::Thinking => (
            "◐",
            "thinking…",
            theme.accent().remove_modifier(Modifier::UNDERLINED),
        ),
        AgentActivity::Streaming => ("●", "streaming", theme.success()),
        AgentActivity::Retrying => ("◌", "retrying", theme.warning()),
        AgentActivity::AwaitingApproval => ("●", "waiting for you", theme.warning()),
        AgentActivity::Executing => ("▶", "running code", theme.warning()),
    }
}

/// `model · tokens · cost` in `width` columns, the model name cut first.
fn detail(a: &AgentView, width: usize) -> String {
    let spend = spend(a);
    let model = a.model.rsplit('/').next().unwrap_or(&a.model);
    let model = crate::tui::render::text::one_line(model);
    let room = width.saturating_sub(unicode_width::UnicodeWidthStr::width(spend.as_str()) + 3);
    if room < 4 {
        return spend;
    }
    let shown: String = if unicode_width::UnicodeWidthStr::width(model.as_str()) > room {
        let mut s: String = model.chars().take(room - 1).collect();
        s.push('…');
        s
    } else {
        model
    };
    format!("{shown} · {spend}")
}

fn spend(a: &AgentView) -> String {
    let s = &a.spend;
    let approx = if s.estimated_calls > 0 { "≈" } else { "" };
    let cost = if s.calls > 0 && s.unpriced_calls == s.calls {
        "unpriced".to_string()
    } else {
        format!("{approx}{}", usd(s.usd))
    };
    format!(
        "{approx}{} tok · {cost}",
        tokens(s.input_tokens + s.output_tokens)
    )
}

/// The roster panel (sidebar).
pub fn panel(app: &App, f: &mut Frame<'_>, area: Rect) {
    let theme = &app.theme;
    let focused = app.focus == Focus::Roster;
    let block = Block::new()
        .borders(Borders::ALL)
        .border_style(if focused {
            theme.focus_border()
        } else {
            theme.border()
        })
        .title(Span::styled(
            " roster ",
            if focused {
                theme.focus_border()
            } else {
                theme.muted()
            },
        ));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let two_lines = inner.height as usize >= app.view.agents.len() * 2;
    let mut lines = Vec::new();
    for (i, a) in app.view.agents.iter().enumerate() {
        let (glyph, word, st) = state(app, a);
        let mut name = app.theme.agent(Some(i));
        if a.muted {
            name = name.add_modifier(Modifier::CROSSED_OUT);
        }
        let sel = focused && i == app.roster_selected;
        let mut first = vec![
            Span::styled(if sel { "▸" } else { " " }, theme.accent()),
            Span::styled(format!("{glyph} "), st),
            Span::styled(
                one_line(&a.name),
                if sel {
                    name.add_modifier(Modifier::REVERSED)
                } else {
                    name
                },
            ),
            Span::styled(format!(" {word}"), st),
        ];
        if app.view.pinned.as_deref() == Some(a.name.as_str()) {
            first.push(Span::styled(" · next", theme.accent()));
        }
        lines.push(Line::from(first));
        if two_lines {
            let w = (inner.width as usize).saturating_sub(4);
            lines.push(Line::from(Span::styled(
                format!("    {}", detail(a, w)),
                theme.muted(),
            )));
        }
    }
    f.render_widget(Paragraph::new(lines), inner);
}

/// The roster on one line (narrow screens).
pub fn strip(app: &App, f: &mut Frame<'_>, area: Rect) {
    let theme = &app.theme;
    let focused = app.focus == Focus::Roster;
    let mut spans = vec![Span::styled(
        if focused { "▸ " } else { "  " },
        theme.accent(),
    )];
    for (i, a) in app.view.agents.iter().enumerate() {
        if i > 0 {
            spans.push(Span::styled(" │ ", theme.border()));
        }
        let (glyph, word, st) = state(app, a);
        let mut name = theme.agent(Some(i));
        if focused && i == app.roster_selected {
            name = name.add_modifier(Modifier::REVERSED);
        }
        spans.push(Span::styled(format!("{glyph} "), st));
        spans.push(Span::styled(one_line(&a.name), name));
        if word != "idle" {
            spans.push(Span::styled(format!(" {word}"), st));
        }
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}
