//! The help (`?`): every action with its active keys, grouped by where it acts, generated from the
//! keymap (so it shows `[keys]` overrides), plus the fixed keys of text fields and dialogs.

use ratatui::text::{Line, Span};

use crate::tui::app::App;
use crate::tui::keymap::{ACTIONS, Scope};

/// Keys that are not in the keymap: text fields and dialogs.
pub const FIXED: &[(&str, &[(&str, &str)])] = &[
    (
        "composer",
        &[
            ("Enter", "send to everyone (`@agent text`: a private note)"),
            ("Alt-Enter / Ctrl-J", "new line"),
            ("↑ ↓ PgUp PgDn", "scroll the transcript (one-line message)"),
            ("Esc", "leave the composer (the text stays)"),
            ("Ctrl-C", "clear the text"),
        ],
    ),
    (
        "editing a block in place",
        &[
            ("Ctrl-S", "done: show the diff"),
            ("Esc", "cancel the edit"),
        ],
    ),
    (
        "diff of an edit",
        &[
            ("y", "run the edited code"),
            ("e", "edit again"),
            ("Esc", "drop the edit"),
        ],
    ),
    (
        "rejection reason",
        &[("Enter", "reject with this reason"), ("Esc", "cancel")],
    ),
    (
        "pause dialog",
        &[
            ("c", "continue (once, past a budget pause)"),
            ("r", "raise the budget by an amount (budget pauses)"),
            ("m", "write a message"),
            ("s", "stop the session"),
            ("Esc", "close (the session stays paused; p opens it again)"),
        ],
    ),
    (
        "speaker picker, lists",
        &[
            ("j k ↑ ↓", "move"),
            ("Enter or 1-9", "choose"),
            ("d", "revoke the selected rule"),
        ],
    ),
];

/// The help's lines for a dialog `width` columns wide (each action's `[keys]` name on the right
/// where it fits).
pub fn lines(app: &App, width: usize) -> Vec<Line<'static>> {
    let theme = &app.theme;
    let key = theme
        .accent()
        .remove_modifier(ratatui::style::Modifier::UNDERLINED);
    let mut out = Vec::new();
    for scope in [
        Scope::Approval,
        Scope::Global,
        Scope::Navigation,
        Scope::Transcript,
        Scope::Roster,
        Scope::Files,
    ] {
        out.push(Line::from(Span::styled(
            scope.title().to_string(),
            theme.accent().add_modifier(ratatui::style::Modifier::BOLD),
        )));
        for a in ACTIONS.iter().filter(|a| a.scope == scope) {
            let keys = app.keymap.describe(a.action);
            let left = format!("  {keys:<14}{}", a.help);
            let used = unicode_width::UnicodeWidthStr::width(left.as_str());
            let mut spans = vec![
                Span::styled(format!("  {keys:<14}"), key),
                Span::styled(a.help.to_string(), theme.base()),
            ];
            if used + a.name.len() + 2 <= width {
                spans.push(Span::styled(
                    format!("{}{}", " ".repeat(width - used - a.name.len()), a.name),
                    theme.muted(),
                ));
            }
            out.push(Line::from(spans));
        }
        out.push(Line::default());
    }
    for (title, keys) in FIXED {
        out.push(Line::from(Span::styled(
            title.to_string(),
            theme.accent().add_modifier(ratatui::style::Modifier::BOLD),
        )));
        for (k, what) in *keys {
            out.push(Line::from(vec![
                Span::styled(format!("  {k:<14}"), key),
                Span::styled(what.to_string(), theme.base()),
            ]));
        }
        out.push(Line::default());
    }
    out.push(Line::from(Span::styled("Decision keys act only while the pending-code pane has focus; Enter, Esc, Ctrl-C and a paste never decide. On the right: each action's name for [keys] in config.toml.", theme.muted())));
    out
}
