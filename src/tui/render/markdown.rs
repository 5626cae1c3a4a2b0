//! Markdown to ratatui lines for a width: our own small writer over pulldown-cmark (paragraphs,
//! headings, emphasis, lists, quotes, rules, tables, links, inline code) with fenced code
//! highlighted by the shared highlighter. All text goes through `text_safety` on its way in.
//!
//! A message is rendered block group by block group (`split_stable`): groups end at a blank line
//! followed by an unindented line outside a code fence. A streaming message re-renders only its
//! last group, and the final message renders exactly as the streamed one did.

use pulldown_cmark::{CodeBlockKind, Event as Md, Options, Parser, Tag, TagEnd};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use unicode_width::UnicodeWidthStr;

use super::highlight::Highlighter;
use super::text::{line_spans, restyle_markers};
use super::wrap::{pad_to, wrap_hard, wrap_words};
use crate::text_safety::{code_lines, visible_line};
use crate::tui::theme::Theme;

/// Lines of a long code block shown before the fold.
pub const CODE_FOLD_HEAD: usize = 20;
/// Lines of a long code block shown after the fold.
pub const CODE_FOLD_TAIL: usize = 5;

/// What the writer needs besides the text.
pub struct MdContext<'a> {
    /// Roles.
    pub theme: &'a Theme,
    /// Code colours.
    pub highlighter: &'a Highlighter,
    /// Long code blocks shown whole (else folded to head and tail).
    pub expand: bool,
}

/// Lines of one rendering, and whether some code waits for its colours.
#[derive(Debug, Default, Clone)]
pub struct Rendered {
    /// The lines.
    pub lines: Vec<Line<'static>>,
    /// A code block is shown plain until the highlighter is done.
    pub waiting: bool,
}

struct Container {
    first: Vec<Span<'static>>,
    rest: Vec<Span<'static>>,
    first_used: bool,
}

struct Table {
    rows: Vec<Vec<String>>,
    head_rows: usize,
    row: Vec<String>,
    cell: String,
}

struct Writer<'a, 'c> {
    ctx: &'a MdContext<'c>,
    width: usize,
    lines: Vec<Line<'static>>,
    containers: Vec<Container>,
    inline: Vec<Span<'static>>,
    styles: Vec<Style>,
    lists: Vec<Option<u64>>,
    code: Option<(String, String)>,
    links: Vec<(String, usize)>,
    table: Option<Table>,
    gap: bool,
    waiting: bool,
    /// The group ends inside a fence that is not closed yet (a message still streaming).
    open_fence: bool,
    /// The event being written reaches the end of the group.
    at_end: bool,
}

impl<'a, 'c> Writer<'a, 'c> {
    fn style(&self) -> Style {
        self.styles.last().copied().unwrap_or_default()
    }

    fn push_style(&mut self, add: Style) {
        let s = self.style().patch(add);
        self.styles.push(s);
    }

    fn prefixes(&self) -> (Vec<Span<'static>>, Vec<Span<'static>>) {
        let mut first = Vec::new();
        let mut rest = Vec::new();
        for c in &self.containers {
            if c.first_used {
                first.extend(c.rest.iter().cloned());
            } else {
                first.extend(c.first.iter().cloned());
            }
            rest.extend(c.rest.iter().cloned());
        }
        (first, rest)
    }

    fn mark_used(&mut self) {
        for c in &mut self.containers {
            c.first_used = true;
        }
    }

    fn emit(&mut self, new: Vec<Line<'static>>) {
        if !new.is_empty() {
            self.mark_used();
        }
        self.lines.extend(new);
    }

    fn flush_inline(&mut self) {
        if self.inline.is_empty() {
            return;
        }
        let spans = std::mem::take(&mut self.inline);
        let (first, rest) = self.prefixes();
        let wrapped = wrap_words(&spans, self.width, &first, &rest);
        self.emit(wrapped);
    }

    fn block_start(&mut self) {
        self.flush_inline();
        if self.gap && !self.lines.is_empty() {
            let (_, rest) = self.prefixes();
            let mut l = Line::from(rest);
            // No trailing spaces on an empty line.
            if let Some(last) = l.spans.last_mut() {
                let t = last.content.trim_end().to_string();
                last.content = t.into();
            }
            self.lines.push(l);
        }
        self.gap = false;
    }

    fn block_end(&mut self) {
        self.flush_inline();
        self.gap = true;
    }

    fn text(&mut self, t: &str) {
        if let Some((_, code)) = &mut self.code {
            code.push_str(t);
            return;
        }
        if let Some(table) = &mut self.table {
            table.cell.push_str(t);
            return;
        }
        let style = self.style();
        let marker = self.ctx.theme.marker();
        let mut parts = t.split('\n').peekable();
        while let Some(part) = parts.next() {
            self.inline
                .extend(restyle_markers(line_spans(part, style, marker, 0), marker));
            if parts.peek().is_some() {
                self.inline.push(Span::styled(" ", style));
            }
        }
    }

    fn inline_code(&mut self, t: &str) {
        if let Some(table) = &mut self.table {
            table.cell.push_str(t);
            return;
        }
        let style = self.style().patch(self.ctx.theme.code()).patch(
            self.ctx
                .theme
                .accent()
                .remove_modifier(Modifier::UNDERLINED),
        );
        let marker = self.ctx.theme.marker();
        self.inline
            .extend(line_spans(&t.replace('\n', " "), style, marker, 0));
    }

    /// A fenced block: its language, then its lines as the interpreter sees them, highlighted
    /// once the fence is closed (`complete`). Long blocks fold to head and tail unless expanded
    /// (the pending-code pane shows a proposed block whole).
    fn code_block(&mut self, lang: &str, code: &str, complete: bool) {
        let theme = self.ctx.theme;
        let language = lang.split_whitespace().next().unwrap_or("").to_string();
        let mut lines = code_lines(code.strip_suffix('\n').unwrap_or(code), &language);
        let (_, rest) = self.prefixes();
        let indent_w = rest.iter().map(|s| s.content.width()).sum::<usize>() + 2;
        let mut prefix = rest.clone();
        prefix.push(Span::styled("  ", theme.code()));
        if !language.is_empty() {
            let mut l = rest.clone();
            l.push(Span::styled(
                format!("  {}", visible_line(&language)),
                theme.muted(),
            ));
            self.emit(vec![Line::from(l)]);
        }
        // (first line of the tail, lines folded away)
        let mut fold: Option<(usize, usize)> = None;
        if !self.ctx.expand && lines.len() > CODE_FOLD_HEAD + CODE_FOLD_TAIL + 1 {
            let tail = lines.split_off(lines.len() - CODE_FOLD_TAIL);
            let folded = lines.len() - CODE_FOLD_HEAD;
            lines.truncate(CODE_FOLD_HEAD);
            fold = Some((lines.len(), folded));
            lines.extend(tail);
        }
        // A block still streaming is shown plain: its colours come once it is complete.
        let colored = if complete && fold.is_none() {
            let c = self.ctx.highlighter.get(&lines, &language);
            if c.is_none() && self.ctx.highlighter.enabled() {
                self.waiting = true;
            }
            c
        } else {
            None
        };
        let base = theme.code();
        let width = self.width.max(indent_w + 1);
        let mut out = Vec::with_capacity(lines.len() + 1);
        for (i, line) in lines.iter().enumerate() {
            if let Some((at, n)) = fold
                && i == at
            {
                let mut l = rest.clone();
                l.push(Span::styled(
                    format!("  ┆ … {n} more lines (o shows all)"),
                    theme.muted(),
                ));
                out.push(Line::from(l));
            }
            let spans: Vec<Span<'static>> = match colored.as_ref().and_then(|c| c.get(i)) {
                Some(pieces) => pieces
                    .iter()
                    .map(|(s, t)| Span::styled(t.clone(), base.patch(*s)))
                    .collect(),
                None => line_spans(line, base, theme.marker(), 0),
            };
            // Markers keep their marker style even when highlighted.
            let spans = restyle_markers(spans, theme.marker());
            for mut l in wrap_hard(&spans, width, &prefix, &prefix) {
                pad_to(&mut l, width, base);
                out.push(l);
            }
        }
        self.emit(out);
    }

    fn table(&mut self, t: Table) {
        let theme = self.ctx.theme;
        let cols = t.rows.iter().map(Vec::len).max().unwrap_or(0);
        if cols == 0 {
            return;
        }
        let cells: Vec<Vec<String>> = t
            .rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|c| visible_line(c.trim()).into_owned())
                    .collect()
            })
            .collect();
        let mut widths = vec![1usize; cols];
        for r in &cells {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.width());
            }
        }
        let (_, rest) = self.prefixes();
        let avail = self
            .width
            .saturating_sub(rest.iter().map(|s| s.content.width()).sum::<usize>())
            .saturating_sub(3 * (cols - 1))
            .max(cols);
        while widths.iter().sum::<usize>() > avail {
            let Some((i, _)) = widths.iter().enumerate().max_by_key(|(_, w)| **w) else {
                break;
            };
            if widths[i] <= 1 {
                break;
            }
            widths[i] -= 1;
        }
        let mut out = Vec::new();
        for (ri, r) in cells.iter().enumerate() {
            let mut spans = rest.clone();
            for (i, w) in widths.iter().enumerate() {
                let c = r.get(i).map(String::as_str).unwrap_or("");
                let shown = fit(c, *w);
                let style = if ri < t.head_rows {
                    Style::new().add_modifier(Modifier::BOLD)
                } else {
                    Style::new()
                };
                spans.push(Span::styled(shown, style));
                if i + 1 < cols {
                    spans.push(Span::styled(" │ ", theme.muted()));
                }
            }
            out.push(Line::from(spans));
            if ri + 1 == t.head_rows {
                let mut sep = rest.clone();
                let bar: Vec<String> = widths.iter().map(|w| "─".repeat(*w)).collect();
                sep.push(Span::styled(bar.join("─┼─"), theme.muted()));
                out.push(Line::from(sep));
            }
        }
        self.emit(out);
    }

    fn event(&mut self, ev: Md<'_>) {
        let theme = self.ctx.theme;
        match ev {
            Md::Start(tag) => match tag {
                Tag::Paragraph => self.block_start(),
                Tag::Heading { level, .. } => {
                    self.block_start();
                    let mut s = theme.accent().add_modifier(Modifier::BOLD);
                    if level != pulldown_cmark::HeadingLevel::H1 {
                        s = s.remove_modifier(Modifier::UNDERLINED);
                    }
                    self.push_style(s);
                }
                Tag::BlockQuote(_) => {
                    self.block_start();
                    let bar = Span::styled("│ ", theme.muted());
                    self.containers.push(Container {
                        first: vec![bar.clone()],
                        rest: vec![bar],
                        first_used: false,
                    });
                }
                Tag::CodeBlock(kind) => {
                    self.block_start();
                    let lang = match kind {
                        CodeBlockKind::Fenced(l) => l.to_string(),
                        CodeBlockKind::Indented => String::new(),
                    };
                    self.code = Some((lang, String::new()));
                }
                Tag::HtmlBlock | Tag::MetadataBlock(_) | Tag::DefinitionList => self.block_start(),
                Tag::FootnoteDefinition(name) => {
                    self.block_start();
                    self.text(&format!("[^{name}]: "));
                }
                Tag::DefinitionListTitle => {
                    self.flush_inline();
                    self.push_style(Style::new().add_modifier(Modifier::BOLD));
                }
                Tag::DefinitionListDefinition => {
                    self.flush_inline();
                    self.containers.push(Container {
                        first: vec![Span::raw("  ")],
                        rest: vec![Span::raw("  ")],
                        first_used: false,
                    });
                }
                Tag::List(start) => {
                    if self.lists.is_empty() {
                        self.block_start();
                    } else {
                        self.flush_inline();
                    }
                    self.lists.push(start);
                }
                Tag::Item => {
                    self.flush_inline();
                    let marker = match self.lists.last_mut() {
                        Some(Some(n)) => {
                            let m = format!("{n}. ");
                            *n += 1;
                            m
                        }
                        _ => "• ".to_string(),
                    };
                    let w = marker.width();
                    self.containers.push(Container {
                        first: vec![Span::styled(
                            marker,
                            theme.accent().remove_modifier(Modifier::UNDERLINED),
                        )],
                        rest: vec![Span::raw(" ".repeat(w))],
                        first_used: false,
                    });
                }
                Tag::Table(_) => {
                    self.block_start();
                    self.table = Some(Table {
                        rows: Vec::new(),
                        head_rows: 0,
                        row: Vec::new(),
                        cell: String::new(),
                    });
                }
                Tag::TableHead | Tag::TableRow => {
                    if let Some(t) = &mut self.table {
                        t.row.clear();
                    }
                }
                Tag::TableCell => {
                    if let Some(t) = &mut self.table {
                        t.cell.clear();
                    }
                }
                Tag::Emphasis => self.push_style(Style::new().add_modifier(Modifier::ITALIC)),
                Tag::Strong => self.push_style(Style::new().add_modifier(Modifier::BOLD)),
                Tag::Strikethrough => {
                    self.push_style(Style::new().add_modifier(Modifier::CROSSED_OUT))
                }
                Tag::Superscript | Tag::Subscript => self.push_style(Style::new()),
                Tag::Link { dest_url, .. } => {
                    let start = self.inline.len();
                    self.links.push((dest_url.to_string(), start));
                    self.push_style(theme.accent());
                }
                Tag::Image { dest_url, .. } => {
                    self.text("[image: ");
                    let start = self.inline.len();
                    self.links.push((dest_url.to_string(), start));
                    self.push_style(Style::new());
                }
            },
            Md::End(end) => match end {
                TagEnd::Paragraph | TagEnd::HtmlBlock | TagEnd::MetadataBlock(_) => {
                    self.block_end()
                }
                TagEnd::FootnoteDefinition | TagEnd::DefinitionList => self.block_end(),
                TagEnd::DefinitionListTitle => {
                    self.flush_inline();
                    self.styles.pop();
                }
                TagEnd::DefinitionListDefinition => {
                    self.flush_inline();
                    self.containers.pop();
                }
                TagEnd::Heading(_) => {
                    self.flush_inline();
                    self.styles.pop();
                    self.gap = true;
                }
                TagEnd::BlockQuote(_) => {
                    self.flush_inline();
                    self.containers.pop();
                    self.gap = true;
                }
                TagEnd::CodeBlock => {
                    if let Some((lang, code)) = self.code.take() {
                        let complete = !(self.open_fence && self.at_end);
                        self.code_block(&lang, &code, complete);
                    }
                    self.gap = true;
                }
                TagEnd::List(_) => {
                    self.flush_inline();
                    self.lists.pop();
                    if self.lists.is_empty() {
                        self.gap = true;
                    }
                }
                TagEnd::Item => {
                    self.flush_inline();
                    self.containers.pop();
                }
                TagEnd::Table => {
                    if let Some(t) = self.table.take() {
                        self.table(t);
                    }
                    self.gap = true;
                }
                TagEnd::TableHead => {
                    if let Some(t) = &mut self.table {
                        let row = std::mem::take(&mut t.row);
                        t.rows.push(row);
                        t.head_rows = t.rows.len();
                    }
                }
                TagEnd::TableRow => {
                    if let Some(t) = &mut self.table {
                        let row = std::mem::take(&mut t.row);
                        t.rows.push(row);
                    }
                }
                TagEnd::TableCell => {
                    if let Some(t) = &mut self.table {
                        let cell = std::mem::take(&mut t.cell);
                        t.row.push(cell);
                    }
                }
                TagEnd::Emphasis
                | TagEnd::Strong
                | TagEnd::Strikethrough
                | TagEnd::Superscript
                | TagEnd::Subscript => {
                    self.styles.pop();
                }
                TagEnd::Link => {
                    self.styles.pop();
                    if let Some((url, start)) = self.links.pop() {
                        let shown: String = self.inline[start.min(self.inline.len())..]
                            .iter()
                            .map(|s| s.content.as_ref())
                            .collect();
                        if !url.is_empty() && shown != url && !url.starts_with('#') {
                            let muted = theme.muted();
                            self.inline.push(Span::styled(" <", muted));
                            self.inline
                                .extend(line_spans(&url, muted, theme.marker(), 0));
                            self.inline.push(Span::styled(">", muted));
                        }
                    }
                }
                TagEnd::Image => {
                    self.styles.pop();
                    self.links.pop();
                    self.text("]");
                }
            },
            Md::Text(t) => self.text(&t),
            Md::Code(t) | Md::InlineMath(t) => self.inline_code(&t),
            Md::DisplayMath(t) => {
                self.block_start();
                self.code_block("", &t, true);
                self.gap = true;
            }
            Md::Html(t) => {
                // Raw HTML is shown as the text it is, line by line.
                for l in t.lines() {
                    self.text(l);
                    self.flush_inline();
                }
            }
            Md::InlineHtml(t) => {
                let muted = theme.muted();
                self.inline.extend(line_spans(&t, muted, theme.marker(), 0));
            }
            Md::FootnoteReference(n) => self.text(&format!("[^{n}]")),
            Md::SoftBreak => {
                let s = self.style();
                if self.table.is_none() {
                    self.inline.push(Span::styled(" ", s));
                }
            }
            Md::HardBreak => self.flush_inline(),
            Md::Rule => {
                self.block_start();
                let (first, _) = self.prefixes();
                let w = self
                    .width
                    .saturating_sub(first.iter().map(|s| s.content.width()).sum());
                let mut l = first;
                l.push(Span::styled("─".repeat(w.max(1)), theme.muted()));
                self.emit(vec![Line::from(l)]);
                self.gap = true;
            }
            Md::TaskListMarker(done) => {
                let s = if done { "[x] " } else { "[ ] " };
                self.inline.push(Span::styled(
                    s,
                    theme.accent().remove_modifier(Modifier::UNDERLINED),
                ));
            }
        }
    }
}

/// `s` cut or padded to exactly `w` columns.
fn fit(s: &str, w: usize) -> String {
    let sw = s.width();
    if sw <= w {
        return format!("{s}{}", " ".repeat(w - sw));
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let cw = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if used + cw + 1 > w {
            break;
        }
        out.push(c);
        used += cw;
    }
    out.push('…');
    used += 1;
    out.push_str(&" ".repeat(w.saturating_sub(used)));
    out
}

/// Renders one group of Markdown (see [`split_stable`]) to `width` columns.
pub fn render_group(src: &str, width: usize, ctx: &MdContext<'_>) -> Rendered {
    let mut w = Writer {
        ctx,
        width: width.max(1),
        lines: Vec::new(),
        containers: Vec::new(),
        inline: Vec::new(),
        styles: vec![ctx.theme.base()],
        lists: Vec::new(),
        code: None,
        links: Vec::new(),
        table: None,
        gap: false,
        waiting: false,
        open_fence: false,
        at_end: false,
    };
    let opts = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    // A lone `\r` would end a line for the parser and vanish: show it as its marker instead.
    let src = lone_cr_visible(src);
    w.open_fence = ends_in_open_fence(&src);
    for (ev, range) in Parser::new_ext(&src, opts).into_offset_iter() {
        w.at_end = range.end >= src.len();
        w.event(ev);
    }
    // An unclosed fence while streaming: show what came so far as code.
    if let Some((lang, code)) = w.code.take() {
        w.code_block(&lang, &code, false);
    }
    w.flush_inline();
    Rendered {
        lines: w.lines,
        waiting: w.waiting,
    }
}

/// `src` with every `\r` that does not start a `\r\n` replaced by its marker `␍`.
fn lone_cr_visible(src: &str) -> std::borrow::Cow<'_, str> {
    if !src.contains('\r') {
        return std::borrow::Cow::Borrowed(src);
    }
    let mut out = String::with_capacity(src.len() + 4);
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' && chars.peek() != Some(&'\n') {
            out.push('␍');
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Whether `src` ends inside a code fence that has not been closed.
fn ends_in_open_fence(src: &str) -> bool {
    let mut fence: Option<(char, usize)> = None;
    for line in src.split('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if indent >= 4 {
            continue;
        }
        match fence {
            Some((ch, n)) => {
                let run = trimmed.chars().take_while(|c| *c == ch).count();
                if run >= n && trimmed[run * ch.len_utf8()..].trim().is_empty() {
                    fence = None;
                }
            }
            None => {
                for ch in ['`', '~'] {
                    let run = trimmed.chars().take_while(|c| *c == ch).count();
                    if run >= 3 {
                        fence = Some((ch, run));
                    }
                }
            }
        }
    }
    fence.is_some()
}

/// Where each complete group of `src` ends, looking from byte `from` (which must be a group
/// start): byte offsets of the starts of the following groups. The text after the last offset is
/// the group that may still grow.
pub fn split_stable(src: &str, from: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut fence: Option<(char, usize)> = None;
    let mut blank_before = false;
    let mut pos = from;
    let rest = &src[from..];
    for line in rest.split_inclusive('\n') {
        let start = pos;
        pos += line.len();
        let body = line.trim_end_matches(['\n', '\r']);
        let trimmed = body.trim_start();
        let indent = body.len() - trimmed.len();
        if let Some((ch, n)) = fence {
            let run = trimmed.chars().take_while(|c| *c == ch).count();
            if indent < 4 && run >= n && trimmed[run * ch.len_utf8()..].trim().is_empty() {
                fence = None;
            }
            blank_before = false;
            continue;
        }
        if trimmed.is_empty() {
            blank_before = true;
            continue;
        }
        // A group ends before an unindented line that follows a blank line — once that line is
        // complete (ends with a newline), so a growing last line never starts a group early.
        if blank_before && indent == 0 && start > from && line.ends_with('\n') {
            out.push(start);
        }
        blank_before = false;
        for ch in ['`', '~'] {
            let run = trimmed.chars().take_while(|c| *c == ch).count();
            if indent < 4 && run >= 3 {
                fence = Some((ch, run));
            }
        }
    }
    out
}

/// Renders a whole Markdown text: its groups one by one, a blank line between them.
pub fn render(src: &str, width: usize, ctx: &MdContext<'_>) -> Rendered {
    let mut out = Rendered::default();
    let mut start = 0;
    for end in split_stable(src, 0)
        .into_iter()
        .chain(std::iter::once(src.len()))
    {
        append_group(&mut out, &src[start..end], width, ctx);
        start = end;
    }
    out
}

/// Adds one group's lines to `out` (with the blank line between groups).
pub fn append_group(out: &mut Rendered, group: &str, width: usize, ctx: &MdContext<'_>) {
    let r = render_group(group, width, ctx);
    if r.lines.is_empty() {
        return;
    }
    if !out.lines.is_empty() {
        out.lines.push(Line::default());
    }
    out.lines.extend(r.lines);
    out.waiting |= r.waiting;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(r: &Rendered) -> Vec<String> {
        r.lines
            .iter()
            .map(|l| {
                l.spans
                    .iter()
                    .map(|s| s.content.as_ref())
                    .collect::<String>()
            })
            .map(|s| s.trim_end().to_string())
            .collect()
    }

    fn ctx_render(src: &str, width: usize) -> Vec<String> {
        let theme = Theme::load("dark", false).unwrap();
        let hl = Highlighter::inline(None);
        let ctx = MdContext {
            theme: &theme,
            highlighter: &hl,
            expand: false,
        };
        plain(&render(src, width, &ctx))
    }

    #[test]
    fn paragraphs_lists_quotes_and_code_have_their_shapes() {
        let src = "# Plan\n\nSteps, *quickly*:\n\n1. write `a.py`\n2. run it\n   - nested\n\n> quoted text\n\n```python\nprint('hi')\n```\n";
        assert_eq!(
            ctx_render(src, 40),
            [
                "Plan",
                "",
                "Steps, quickly:",
                "",
                "1. write a.py",
                "2. run it",
                "   • nested",
                "",
                "│ quoted text",
                "",
                "  python",
                "  print('hi')",
            ]
        );
    }

    #[test]
    fn escape_sequences_in_agent_text_become_markers() {
        let lines = ctx_render(
            "hello \x1b]52;c;ZXZpbA==\x07 world\n\n```sh\necho \x1b[2J\n```",
            80,
        );
        let all = lines.join("\n");
        assert!(!all.contains('\x1b') && !all.contains('\x07'), "{all:?}");
        assert!(all.contains("␛]52;c;ZXZpbA==␇"));
        assert!(all.contains("echo ␛[2J"));
    }

    #[test]
    fn long_code_folds_to_head_and_tail_unless_expanded_and_a_growing_fence_is_not_highlighted() {
        let theme = Theme::load("dark", false).unwrap();
        let hl = Highlighter::inline(Some("base16-ocean.dark".into()));
        let code: String = (0..100).map(|i| format!("x{i} = {i}\n")).collect();
        let src = format!("```python\n{code}```\n");
        let folded = render(
            &src,
            60,
            &MdContext {
                theme: &theme,
                highlighter: &hl,
                expand: false,
            },
        );
        let text = plain(&folded);
        assert_eq!(text.len(), 1 + 20 + 1 + 5, "{text:?}");
        assert!(
            text.iter()
                .any(|l| l.contains("… 75 more lines (o shows all)"))
        );
        assert!(text.last().unwrap().contains("x99 = 99"));
        let whole = render(
            &src,
            60,
            &MdContext {
                theme: &theme,
                highlighter: &hl,
                expand: true,
            },
        );
        assert_eq!(plain(&whole).len(), 101);
        // Still streaming (no closing fence): shown, but not sent to the highlighter.
        let bg = Highlighter::background(Some("base16-ocean.dark".into()), || {});
        let open = render(
            "```python\nx = 1\n",
            60,
            &MdContext {
                theme: &theme,
                highlighter: &bg,
                expand: false,
            },
        );
        assert!(!open.waiting);
        assert!(plain(&open).iter().any(|l| l.contains("x = 1")));
    }

    #[test]
    fn tables_and_links_render_as_text() {
        let lines = ctx_render(
            "| a | bb |\n|---|----|\n| 1 | 2 |\n\nsee [docs](https://x.dev)",
            40,
        );
        assert_eq!(
            lines,
            ["a │ bb", "──┼───", "1 │ 2", "", "see docs <https://x.dev>"]
        );
    }

    #[test]
    fn groups_end_at_blank_lines_outside_fences() {
        let src = "a\n\nb\n```\nx\n\ny\n```\n\n  indented\n\nc\n";
        let cuts = split_stable(src, 0);
        let groups: Vec<&str> = {
            let mut v = Vec::new();
            let mut s = 0;
            for c in cuts.iter().chain(std::iter::once(&src.len())) {
                v.push(&src[s..*c]);
                s = *c;
            }
            v
        };
        assert_eq!(
            groups,
            ["a\n\n", "b\n```\nx\n\ny\n```\n\n  indented\n\n", "c\n"]
        );
    }
}
