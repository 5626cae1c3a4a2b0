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

/// Keeps marker characters (control pictures, `⟨U+…⟩`) in the marker style after highlighting.
pub fn restyle_markers(spans: Vec<Span<'static>>, marker: Style) -> Vec<Span<'static>> {
    let is_marker_char = |c: char| ('\u{2400}'..='\u{2421}').contains(&c);
    if !spans
        .iter()
        .any(|s| s.content.contains(is_marker_char) || s.content.contains("⟨U+"))
    {
        return spans;
    }
    let mut out = Vec::new();
    for s in spans {
        let text = s.content.to_string();
        let mut rest = text.as_str();
        while !rest.is_empty() {
            let next_pic = rest.find(is_marker_char);
            let next_u = rest.find("⟨U+");
            let at = match (next_pic, next_u) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => {
                    out.push(Span::styled(rest.to_string(), s.style));
                    break;
                }
            };
            if at > 0 {
                out.push(Span::styled(rest[..at].to_string(), s.style));
            }
            let tail = &rest[at..];
            let len = if tail.starts_with("⟨U+") {
                tail.find('⟩')
                    .map(|e| e + '⟩'.len_utf8())
                    .unwrap_or(tail.len())
            } else {
                tail.chars()
                    .next()
                    .map(char::len_utf8)
                    .unwrap_or(tail.len())
            };
            out.push(Span::styled(tail[..len].to_string(), marker));
            rest = &tail[len..];
        }
    }
    out
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
