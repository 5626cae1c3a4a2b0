//! The composer: a message to everyone, or `@agent text` for a private note. It keeps its text
//! and its focus when an approval arrives (the status bar says "approval pending — Tab").

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::Span;
use ratatui::widgets::{Block, Borders};

use crate::protocol::WaitingOn;
use crate::tui::app::{App, Focus};

/// Rows the composer takes on a screen `screen_h` rows high.
pub fn height(app: &App, screen_h: u16) -> u16 {
    if screen_h < 8 {
        return 0;
    }
    if screen_h < 16 {
        return 1;
    }
    let lines = app.composer.lines().len() as u16;
    (lines.clamp(1, 4)) + 1
}

/// Draws the composer.
pub fn draw(app: &mut App, f: &mut Frame<'_>, area: Rect) {
    let theme = app.theme.clone();
    let focused = app.focus == Focus::Composer;
    let title = match app.engine_waits {
        Some(WaitingOn::Message) => " the team waits for your message ",
        _ => " message ",
    };
    let mut target = area;
    if area.height >= 2 {
        let block = Block::new()
            .borders(Borders::TOP)
            .border_style(if focused {
                theme.focus_border()
            } else {
                theme.border()
            })
            .title(Span::styled(
                title,
                if focused {
                    theme.focus_border()
                } else {
                    theme.muted()
                },
            ));
        target = block.inner(area);
        f.render_widget(block, area);
    }
    let cursor = if focused {
        theme.selected()
    } else {
        theme.base()
    };
    app.composer.set_cursor_style(cursor);
    app.composer.set_style(theme.base());
    f.render_widget(&app.composer, target);
}
