//! The cost meter: session dollars against the budget as a gauge that turns to the warning colour
//! at `warn_at` and to danger at the cap, tokens in / cached / out, "≈" when some usage was
//! estimated, "unpriced" when a model has no price. The per-model breakdown is a dialog (`$`).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use crate::tui::app::App;
use crate::tui::render::{tokens, usd};

/// Session spend as words: `≈$0.0123`, with `+ unpriced` when some calls have no price.
pub fn total(app: &App) -> String {
    let s = &app.view.spend;
    let approx = if s.estimated_calls > 0 { "≈" } else { "" };
    let unpriced = if s.unpriced_calls > 0 {
        " + unpriced"
    } else {
        ""
    };
    format!("{approx}{}{unpriced}", usd(s.usd))
}

/// A gauge of `width` cells for `fraction`.
pub fn gauge(fraction: f64, width: usize) -> String {
    let filled = ((fraction.clamp(0.0, 1.0)) * width as f64).round() as usize;
    format!(
        "{}{}",
        "▰".repeat(filled),
        "▱".repeat(width.saturating_sub(filled))
    )
}

/// The meter on the header line (narrow screens), at most `room` columns.
pub fn inline(app: &App, room: u16) -> Line<'static> {
    let theme = &app.theme;
    let mut spans = vec![Span::styled(total(app), theme.base())];
    if let Some(cap) = app.view.budget_usd {
        let frac = if cap > 0.0 {
            app.view.spend.usd / cap
        } else {
            1.0
        };
        spans.push(Span::styled(format!("/{} ", usd(cap)), theme.muted()));
        spans.push(Span::styled(
            gauge(frac, 8),
            theme.gauge(frac, app.view.warn_at),
        ));
    }
    spans.push(Span::raw(" "));
    let line = Line::from(spans);
    if line.width() as u16 > room {
        Line::default()
    } else {
        line
    }
}

/// The meter panel (sidebar).
pub fn panel(app: &App, f: &mut Frame<'_>, area: Rect) {
    let theme = &app.theme;
    let block = Block::new()
        .borders(Borders::ALL)
        .border_style(theme.border())
        .title(Span::styled(" cost ", theme.muted()));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let v = &app.view;
    let s = &v.spend;
    let mut lines = Vec::new();
    match v.budget_usd {
        Some(cap) => {
            let frac = if cap > 0.0 { s.usd / cap } else { 1.0 };
            lines.push(Line::from(vec![
                Span::styled(total(app), theme.base()),
                Span::styled(format!(" of {}", usd(cap)), theme.muted()),
            ]));
            let w = (inner.width as usize).saturating_sub(6).max(1);
            lines.push(Line::from(vec![
                Span::styled(gauge(frac, w), theme.gauge(frac, v.warn_at)),
                Span::styled(
                    format!(" {:>3.0}%", (frac * 100.0).min(999.0)),
                    theme.gauge(frac, v.warn_at),
                ),
            ]));
        }
        None => lines.push(Line::from(vec![
            Span::styled(total(app), theme.base()),
            Span::styled(" · no budget", theme.muted()),
        ])),
    }
    let approx = if s.estimated_calls > 0 { "≈" } else { "" };
    lines.push(Line::from(Span::styled(
        format!(
            "in {approx}{} · cached {}",
            tokens(s.input_tokens),
            tokens(s.cached_tokens)
        ),
        theme.muted(),
    )));
    lines.push(Line::from(Span::styled(
        format!(
            "out {approx}{} · {} call{}",
            tokens(s.output_tokens),
            s.calls,
            if s.calls == 1 { "" } else { "s" }
        ),
        theme.muted(),
    )));
    if s.unpriced_calls > 0 {
        lines.push(Line::from(Span::styled(
            format!(
                "{} call{} unpriced",
                s.unpriced_calls,
                if s.unpriced_calls == 1 { "" } else { "s" }
            ),
            theme.warning(),
        )));
    }
    if s.estimated_calls > 0 {
        lines.push(Line::from(Span::styled(
            "≈ estimated by proctor",
            theme.muted(),
        )));
    }
    if v.spend_by_model
        .keys()
        .any(|m| crate::engine::cost::is_demo_priced(m))
    {
        lines.push(Line::from(Span::styled(
            "demo prices · nothing billed",
            theme.warning(),
        )));
    }
    lines.push(Line::from(Span::styled(
        format!(
            "{} per model",
            app.keymap
                .describe(crate::tui::keymap::Action::CostBreakdown)
        ),
        theme.muted(),
    )));
    f.render_widget(Paragraph::new(lines), inner);
}
