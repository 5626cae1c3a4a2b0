//! The status bar: key hints for the focused pane, generated from the active keymap, and what
//! needs saying now (a flash, "approval pending — Tab", a running pull).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::tui::app::{App, Focus, Modal, PaneMode};
use crate::tui::keymap::Action;
use crate::tui::widgets::hint_line;

/// Decision keys the pending-code pane's own footer shows (the status bar shows the others).
pub const PANE_FOOTER: &[Action] = &[
    Action::Approve,
    Action::Reject,
    Action::EditInPlace,
    Action::Skip,
    Action::ApproveAll,
];

/// Keys hinted while a workspace file is open (after the diff toggle), most useful first.
const FILE_ACTIONS: &[Action] = &[
    Action::ScrollDown,
    Action::ScrollUp,
    Action::PageDown,
    Action::Top,
    Action::Bottom,
];

/// Actions hinted in the status bar for each pane, most useful first.
pub fn pane_actions(focus: Focus) -> &'static [Action] {
    match focus {
        Focus::Approval => &[
            Action::EditExternal,
            Action::ApproveAlwaysCode,
            Action::ApproveAlwaysLanguage,
            Action::ApproveWithNetwork,
            Action::FullScreenCode,
            Action::FocusNext,
            Action::Help,
        ],
        Focus::Transcript => &[
            Action::ScrollDown,
            Action::Search,
            Action::ToggleOutputs,
            Action::Bottom,
            Action::Compose,
            Action::FocusNext,
            Action::Pause,
            Action::Workspace,
            Action::Help,
            Action::Quit,
        ],
        Focus::Roster => &[
            Action::ScrollDown,
            Action::PinSpeaker,
            Action::Mute,
            Action::PrivateNote,
            Action::FocusNext,
            Action::Help,
        ],
        Focus::Composer => &[Action::FocusNext],
    }
}

/// Draws the status bar.
pub fn draw(app: &App, f: &mut Frame<'_>, area: Rect) {
    let theme = &app.theme;
    let key = theme
        .accent()
        .remove_modifier(ratatui::style::Modifier::UNDERLINED);
    let label = theme.muted();
    // What needs saying now, on the right.
    let mut right: Vec<Span<'static>> = Vec::new();
    if let Some((text, _)) = &app.flash {
        right.push(Span::styled(format!(" {text} "), theme.warning()));
    } else if app.view.open_approval().is_some() && app.focus != Focus::Approval {
        right.push(Span::styled(
            format!(
                " approval pending — {} ",
                app.keymap.describe(Action::FocusNext)
            ),
            theme
                .warning()
                .add_modifier(ratatui::style::Modifier::REVERSED),
        ));
    } else if let Some(p) = &app.view.pull {
        let pct = (p.current * 100).checked_div(p.total).unwrap_or(0);
        right.push(Span::styled(
            format!(
                " pulling {} {} {pct}% ({}/{} layers) ",
                crate::tui::render::text::one_line(&p.image),
                crate::tui::widgets::cost::gauge(pct as f64 / 100.0, 10),
                p.layers_done,
                p.layers
            ),
            theme.accent(),
        ));
    }
    let right_w = Line::from(right.clone()).width();
    let mut left: Vec<Span<'static>> = if let Some(Modal::File { diff, .. }) = &app.modal {
        // An open workspace file: its keys, from the keymap.
        let toggle = app.keymap.keys(Action::ToggleDiff).first().map(|k| {
            (
                k.to_string(),
                if *diff {
                    "show the file"
                } else {
                    "diff against session start"
                },
            )
        });
        let mut hints: Vec<(String, &str)> = toggle.into_iter().collect();
        hints.extend(app.keymap.hints(FILE_ACTIONS));
        hints.push(("Esc".into(), "back to the list"));
        let room = (area.width as usize).saturating_sub(right_w + 1);
        while hints.len() > 1 && Line::from(hint_line(&hints, key, label)).width() > room {
            hints.remove(hints.len() - 2);
        }
        hint_line(&hints, key, label)
    } else if app.search_input.is_some() {
        let q = app
            .search_input
            .as_ref()
            .map(|t| t.lines().join(" "))
            .unwrap_or_default();
        vec![
            Span::styled("/", key),
            Span::styled(crate::tui::render::text::one_line(&q), theme.base()),
            Span::styled("▏", key),
            Span::styled("  Enter search · Esc cancel", label),
        ]
    } else if app.focus == Focus::Composer {
        let mut s = vec![
            Span::styled("Enter", key),
            Span::styled(" send · ", label),
            Span::styled("Alt-Enter", key),
            Span::styled(" new line · ", label),
            Span::styled("@agent", key),
            Span::styled(" private note · ", label),
            Span::styled("Esc", key),
            Span::styled(" leave · ", label),
        ];
        s.extend(hint_line(
            &app.keymap.hints(&[Action::FocusNext]),
            key,
            label,
        ));
        s
    } else if app.focus == Focus::Approval && !matches!(app.pane, PaneMode::Code) {
        match &app.pane {
            PaneMode::Editing(_) => vec![
                Span::styled("Ctrl-S", key),
                Span::styled(" done (shows the diff) · ", label),
                Span::styled("Esc", key),
                Span::styled(" cancel", label),
            ],
            PaneMode::DiffConfirm { .. } => vec![
                Span::styled("y", key),
                Span::styled(" run the edited code · ", label),
                Span::styled("e", key),
                Span::styled(" edit again · ", label),
                Span::styled("Esc", key),
                Span::styled(" drop the edit", label),
            ],
            PaneMode::ConfirmAll { .. } => vec![
                Span::styled("y", key),
                Span::styled(" approve every block shown · ", label),
                Span::styled("j/k", key),
                Span::styled(" scroll · ", label),
                Span::styled("Esc", key),
                Span::styled(" back", label),
            ],
            PaneMode::Reason(_) | PaneMode::Code => vec![
                Span::styled("Enter", key),
                Span::styled(" reject with this reason · ", label),
                Span::styled("Esc", key),
                Span::styled(" cancel", label),
            ],
        }
    } else {
        // As many hints as fit whole, in order.
        let room = (area.width as usize).saturating_sub(right_w + 1);
        let mut hints = app.keymap.hints(pane_actions(app.focus));
        while !hints.is_empty() && Line::from(hint_line(&hints, key, label)).width() > room {
            hints.pop();
        }
        hint_line(&hints, key, label)
    };
    let right_line = Line::from(right);
    let rw = (right_line.width() as u16).min(area.width);
    let left_w = area.width.saturating_sub(rw);
    if left.is_empty() {
        left.push(Span::raw(""));
    }
    f.render_widget(
        Paragraph::new(Line::from(left)),
        Rect {
            width: left_w,
            ..area
        },
    );
    if rw > 0 {
        f.render_widget(
            Paragraph::new(right_line),
            Rect {
                x: area.x + left_w,
                width: rw,
                ..area
            },
        );
    }
}
