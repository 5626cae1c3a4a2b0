//! Text from outside (agents, team files, containers, the session log) turned into styled spans
//! through `text_safety`: hidden characters become visible markers in the marker style, tabs become
//! spaces (a terminal would move the cursor), and nothing else is changed.

use ratatui::style::Style;
use ratatui::text::Span;
use unicode_width::UnicodeWidthStr;

use crate::text_safety::{Keep, Piece, pieces};

/// Columns between tab stops.
pub const TAB: usize = 4;

/// One line of outside text (no `\n` inside; one is shown as a marker) as spans. `col` is the
/// column the text starts at, for tab stops.
pub fn line_spans(text: &str, style: Style, marker: Style, col: usize) -> Vec<Span<'static>> {
    let mut out = Vec::new();
    let mut col = col;
    for p in pieces(text, Keep::Tabs) {
        match p {
            Piece::Text(t) => {
                if t.contains('\t') {
                    let mut s = String::with_capacity(t.len() + 8);
                    for c in t.chars() {
                        if c == '\t' {
                            let n = TAB - (col % TAB);
                            s.extend(std::iter::repeat_n(' ', n));
                            col += n;
                        } else {
                            s.push(c);
                            col += unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
                        }
                    }
                    out.push(Span::styled(s, style));
                } else {
                    col += t.width();
                    out.push(Span::styled(t.to_string(), style));
                }
            }
            Piece::Marker { shown, .. } => {
                col += shown.width();
                out.push(Span::styled(shown, marker));
            }
        }
    }
    out
}

/// Outside text that may hold several lines: one span list per line.
pub fn lines_spans(text: &str, style: Style, marker: Style) -> Vec<Vec<Span<'static>>> {
    text.split('\n')
        .map(|l| line_spans(l, style, marker, 0))
        .collect()
}

/// A name, file name or one-line summary from outside: one span, `\n` and `\t` shown as markers.
pub fn one_line(text: &str) -> String {
    crate::text_safety::visible_line(text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_bidi_become_markers_and_tabs_spaces() {
        let spans = line_spans("a\x1b[2J\tb\u{202E}c", Style::new(), Style::new().bold(), 0);
        let text: String = spans.iter().map(|s| s.content.as_ref()).collect();
        assert_eq!(text, "a␛[2J   b⟨U+202E⟩c");
        assert!(!text.chars().any(|c| c.is_control()));
        assert_eq!(
            spans
                .iter()
                .filter(|s| s.style == Style::new().bold())
                .count(),
            2
        );
    }
}
