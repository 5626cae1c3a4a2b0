//! Wrapping styled spans to a width: word wrap for prose, hard wrap for code and output, with a
//! prefix on the first line and another on the lines that follow (indentation, quote bars, list
//! markers). Widths are measured like ratatui measures them (unicode-width).

use ratatui::style::Style;
use ratatui::text::{Line, Span};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// Width of spans in columns.
pub fn spans_width(spans: &[Span<'_>]) -> usize {
    spans.iter().map(|s| s.content.width()).sum()
}

/// Builds lines from pieces, starting new lines with the right prefix.
struct LineBuilder<'p> {
    width: usize,
    first: &'p [Span<'static>],
    rest: &'p [Span<'static>],
    lines: Vec<Line<'static>>,
    cur: Vec<Span<'static>>,
    cur_w: usize,
    /// Nothing but the prefix on the current line.
    empty: bool,
}

impl<'p> LineBuilder<'p> {
    fn new(width: usize, first: &'p [Span<'static>], rest: &'p [Span<'static>]) -> Self {
        let mut b = LineBuilder {
            width: width.max(1),
            first,
            rest,
            lines: Vec::new(),
            cur: Vec::new(),
            cur_w: 0,
            empty: true,
        };
        b.start(true);
        b
    }

    fn start(&mut self, first: bool) {
        let prefix = if first { self.first } else { self.rest };
        self.cur = prefix.to_vec();
        self.cur_w = spans_width(prefix);
        self.empty = true;
    }

    fn room(&self) -> usize {
        self.width.saturating_sub(self.cur_w)
    }

    fn newline(&mut self) {
        let done = std::mem::take(&mut self.cur);
        self.lines.push(Line::from(done));
        self.start(false);
    }

    fn push_str(&mut self, s: &str, style: Style) {
        if s.is_empty() {
            return;
        }
        self.cur_w += s.width();
        self.empty = false;
        match self.cur.last_mut() {
            Some(last) if last.style == style => {
                last.content.to_mut().push_str(s);
            }
            _ => self.cur.push(Span::styled(s.to_string(), style)),
        }
    }

    /// Puts `s` on the current line, breaking it by characters where it does not fit.
    fn push_hard(&mut self, s: &str, style: Style) {
        let mut piece = String::new();
        let mut piece_w = 0;
        for c in s.chars() {
            let w = c.width().unwrap_or(0);
            if piece_w + w > self.room() && !(self.empty && piece.is_empty()) {
                let p = std::mem::take(&mut piece);
                self.push_str(&p, style);
                piece_w = 0;
                self.newline();
                if w > self.room() {
                    // Wider than a whole line (a wide character in a 1-column pane): alone.
                    let mut one = String::new();
                    one.push(c);
                    self.push_str(&one, style);
                    continue;
                }
            }
            piece.push(c);
            piece_w += w;
        }
        self.push_str(&piece, style);
    }

    fn finish(mut self) -> Vec<Line<'static>> {
        let done = std::mem::take(&mut self.cur);
        self.lines.push(Line::from(done));
        self.lines
    }
}

/// Word-wraps `spans` (one logical line) to `width` columns. Breaks at spaces; a word longer than
/// a line is broken by characters. Spaces at a break are dropped.
pub fn wrap_words(
    spans: &[Span<'static>],
    width: usize,
    first: &[Span<'static>],
    rest: &[Span<'static>],
) -> Vec<Line<'static>> {
    let mut b = LineBuilder::new(width, first, rest);
    // Words with their styled parts (a word may change style midway: **bo**ld).
    let mut word: Vec<(String, Style)> = Vec::new();
    let mut word_w = 0usize;
    let mut pending_space: Option<(String, Style)> = None;
    let flush_word = |b: &mut LineBuilder<'_>,
                      word: &mut Vec<(String, Style)>,
                      word_w: &mut usize,
                      space: &mut Option<(String, Style)>| {
        if word.is_empty() {
            return;
        }
        let space_w = space.as_ref().map_or(0, |(s, _)| s.width());
        if !b.empty && space_w + *word_w > b.room() {
            b.newline();
            *space = None;
        }
        if let Some((s, st)) = space.take()
            && !b.empty
        {
            b.push_str(&s, st);
        }
        for (part, st) in word.drain(..) {
            b.push_hard(&part, st);
        }
        *word_w = 0;
    };
    for span in spans {
        let style = span.style;
        for (is_space, piece) in split_spaces(&span.content) {
            if is_space {
                flush_word(&mut b, &mut word, &mut word_w, &mut pending_space);
                match &mut pending_space {
                    Some((s, _)) => s.push_str(piece),
                    None => {
                        // Leading spaces of the line are kept (indentation inside text).
                        if b.empty && b.lines.is_empty() && word.is_empty() {
                            b.push_str(piece, style);
                        } else {
                            pending_space = Some((piece.to_string(), style));
                        }
                    }
                }
            } else {
                word_w += piece.width();
                word.push((piece.to_string(), style));
            }
        }
    }
    flush_word(&mut b, &mut word, &mut word_w, &mut pending_space);
    b.finish()
}

/// Runs of spaces and of other characters, in order.
fn split_spaces(s: &str) -> Vec<(bool, &str)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut kind: Option<bool> = None;
    for (i, c) in s.char_indices() {
        let sp = c == ' ';
        match kind {
            Some(k) if k == sp => {}
            Some(k) => {
                out.push((k, &s[start..i]));
                start = i;
                kind = Some(sp);
            }
            None => kind = Some(sp),
        }
    }
    if let Some(k) = kind {
        out.push((k, &s[start..]));
    }
    out
}

/// Hard-wraps `spans` (one logical line) to `width` columns: code and program output keep every
/// space; a line too long continues on the next with the `rest` prefix.
pub fn wrap_hard(
    spans: &[Span<'static>],
    width: usize,
    first: &[Span<'static>],
    rest: &[Span<'static>],
) -> Vec<Line<'static>> {
    let mut b = LineBuilder::new(width, first, rest);
    for s in spans {
        b.push_hard(&s.content, s.style);
    }
    b.finish()
}

/// Pads `line` with spaces in `style` to `width` columns (a code block's background).
pub fn pad_to(line: &mut Line<'static>, width: usize, style: Style) {
    let w = line.width();
    if w < width {
        line.spans.push(Span::styled(" ".repeat(width - w), style));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(lines: &[Line<'_>]) -> Vec<String> {
        lines
            .iter()
            .map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect())
            .collect()
    }

    #[test]
    fn words_wrap_at_spaces_with_prefixes() {
        let spans = vec![Span::raw("the quick brown fox jumps over the lazy dog")];
        let lines = wrap_words(&spans, 12, &[Span::raw("• ")], &[Span::raw("  ")]);
        assert_eq!(
            text(&lines),
            [
                "• the quick",
                "  brown fox",
                "  jumps over",
                "  the lazy",
                "  dog"
            ]
        );
        assert!(lines.iter().all(|l| l.width() <= 12));
    }

    #[test]
    fn long_words_and_wide_characters_are_broken_and_never_overflow() {
        let spans = vec![Span::raw("abcdefghijkl 世界世界世界 x")];
        for w in 1..8 {
            let lines = wrap_words(&spans, w, &[], &[]);
            for l in &lines {
                assert!(l.width() <= w.max(2), "width {w}: {:?}", text(&lines));
            }
            let joined: String = text(&lines).concat().replace(' ', "");
            assert_eq!(joined, "abcdefghijkl世界世界世界x");
        }
    }

    #[test]
    fn hard_wrap_keeps_spaces() {
        let lines = wrap_hard(&[Span::raw("    x = 1  # c")], 6, &[], &[Span::raw("↪")]);
        assert_eq!(text(&lines), ["    x ", "↪= 1  ", "↪# c"]);
    }
}
