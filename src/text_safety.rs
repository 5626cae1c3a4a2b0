//! One place that makes text from outside (agents, team files, tasks, providers, containers, file
//! names) safe to put on a terminal and honest to read: nothing that could move the cursor, change
//! the terminal's state or reorder what is shown passes through, and nothing is dropped silently.
//!
//! Every character that is invisible or acts on the terminal is replaced by a visible marker:
//! C0 controls as control pictures (`␍`, `␛`, `␀`…), DEL as `␡`, C1 controls, bidi controls,
//! zero-width and other invisible format characters, line/paragraph separators and tag characters
//! as `⟨U+202E⟩`. `\n` and `\t` are kept where the context allows them.
//!
//! Every front end (console, TUI), the Markdown export and every stderr line go through here.
//! The JSON stream does not: it carries the exact text, and its consumers sanitise it themselves.

use std::borrow::Cow;

/// Why a character is shown as a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hidden {
    /// A C0 control (other than `\n` and `\t` where those are allowed), DEL, or a C1 control.
    Control,
    /// A bidirectional control (U+202A–202E, U+2066–2069, U+200E/200F, U+061C).
    Bidi,
    /// A zero-width or other invisible format character, a line or paragraph separator, a tag
    /// character, or a filler that renders as blank.
    Invisible,
}

/// Classifies `c`: `None` when it is shown as itself.
///
/// `\n` and `\t` count as controls here; the functions below decide where they may pass.
pub fn classify(c: char) -> Option<Hidden> {
    let u = c as u32;
    match u {
        0x00..=0x1F | 0x7F | 0x80..=0x9F => Some(Hidden::Control),
        0x061C | 0x200E | 0x200F | 0x202A..=0x202E | 0x2066..=0x2069 => Some(Hidden::Bidi),
        0x00AD
        | 0x034F
        | 0x0600..=0x0605
        | 0x06DD
        | 0x070F
        | 0x0890..=0x0891
        | 0x08E2
        | 0x115F
        | 0x1160
        | 0x17B4
        | 0x17B5
        | 0x180B..=0x180F
        | 0x200B..=0x200D
        | 0x2028
        | 0x2029
        | 0x2060..=0x2065
        | 0x206A..=0x206F
        | 0x3164
        | 0xFE00..=0xFE0F
        | 0xFEFF
        | 0xFFA0
        | 0xFFF9..=0xFFFB
        | 0x110BD
        | 0x110CD
        | 0x13430..=0x1343F
        | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A
        | 0xE0000..=0xE007F
        | 0xE0100..=0xE01EF => Some(Hidden::Invisible),
        _ => None,
    }
}

/// The visible marker shown in place of a hidden character.
///
/// ```
/// use proctor::text_safety::marker;
/// assert_eq!(marker('\r'), "␍");
/// assert_eq!(marker('\u{1b}'), "␛");
/// assert_eq!(marker('\u{202E}'), "⟨U+202E⟩");
/// ```
pub fn marker(c: char) -> String {
    let u = c as u32;
    match u {
        // Control pictures: U+2400 + the code for C0, U+2421 for DEL.
        0x00..=0x1F => char::from_u32(0x2400 + u)
            .map(String::from)
            .unwrap_or_default(),
        0x7F => "␡".to_string(),
        _ => format!("⟨U+{u:04X}⟩"),
    }
}

/// A piece of made-safe text: shown as is, or a marker standing for one hidden character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Text that is safe to show as is.
    Text(&'a str),
    /// A marker for one hidden character.
    Marker {
        /// What the marker shows (`␍`, `⟨U+202E⟩`…).
        shown: String,
        /// The kind of character it stands for.
        kind: Hidden,
    },
}

/// Which of `\n` and `\t` pass through as themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// `\n` and `\t` (messages, code, output).
    NewlinesAndTabs,
    /// `\t` only: one line (a line of code already split, a transcript line).
    Tabs,
    /// Neither: a name, a file name, a one-line summary.
    Nothing,
}

impl Keep {
    fn passes(self, c: char) -> bool {
        match self {
            Keep::NewlinesAndTabs => c == '\n' || c == '\t',
            Keep::Tabs => c == '\t',
            Keep::Nothing => false,
        }
    }
}

/// Whether `c` is an emoji presentation selector right after a symbol (`❤️`): shown as is in
/// prose. After a letter or digit it can make two identifiers look the same, so it is marked.
fn emoji_selector(prev: Option<char>, c: char) -> bool {
    matches!(c, '\u{FE0E}' | '\u{FE0F}')
        && prev.is_some_and(|p| !p.is_ascii() && !p.is_alphanumeric() && classify(p).is_none())
}

/// Splits `s` into safe text and markers, in order (for front ends that style markers).
pub fn pieces(s: &str, keep: Keep) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev = None;
    for (i, c) in s.char_indices() {
        let last = prev.replace(c);
        let Some(kind) = classify(c) else { continue };
        if keep.passes(c) || emoji_selector(last, c) {
            continue;
        }
        if start < i {
            out.push(Piece::Text(&s[start..i]));
        }
        out.push(Piece::Marker {
            shown: marker(c),
            kind,
        });
        start = i + c.len_utf8();
    }
    if start < s.len() {
        out.push(Piece::Text(&s[start..]));
    }
    out
}

fn needs_change(s: &str, keep: Keep) -> bool {
    let mut prev = None;
    s.chars().any(|c| {
        let last = prev.replace(c);
        !keep.passes(c) && classify(c).is_some() && !emoji_selector(last, c)
    })
}

/// Text for a terminal: every hidden character but `\n` and `\t` becomes its marker.
///
/// ```
/// use proctor::text_safety::visible;
/// assert_eq!(visible("a\x1b[2Jb\n"), "a␛[2Jb\n");
/// assert_eq!(visible("ok\u{202E}txt"), "ok⟨U+202E⟩txt");
/// ```
pub fn visible(s: &str) -> Cow<'_, str> {
    visible_keeping(s, Keep::NewlinesAndTabs)
}

/// One line for a terminal (names, file names, table cells, stderr summaries): like [`visible`],
/// and `\n` and `\t` become markers too.
pub fn visible_line(s: &str) -> Cow<'_, str> {
    visible_keeping(s, Keep::Nothing)
}

/// Like [`visible`], keeping exactly what `keep` allows.
pub fn visible_keeping(s: &str, keep: Keep) -> Cow<'_, str> {
    if !needs_change(s, keep) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for p in pieces(s, keep) {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Marker { shown, .. } => out.push_str(&shown),
        }
    }
    Cow::Owned(out)
}

/// A one-line, length-capped excerpt of text from outside, for error messages: hidden characters
/// made visible, whitespace runs folded, at most `max_chars` characters (then `…`).
pub fn excerpt(s: &str, max_chars: usize) -> String {
    let folded: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let safe = visible_line(&folded);
    if safe.chars().count() <= max_chars {
        safe.into_owned()
    } else {
        safe.chars().take(max_chars).collect::<String>() + "…"
    }
}

/// How many hidden characters `code` holds (what the approval header reports). `\n` and `\t` are
/// not counted; a `\r` is, even in `\r\n`.
pub fn hidden_count(code: &str) -> usize {
    if plain_code(code) {
        return 0;
    }
    hidden_count_by_char(code)
}

fn hidden_count_by_char(code: &str) -> usize {
    code.chars()
        .filter(|c| *c != '\n' && *c != '\t' && classify(*c).is_some())
        .count()
}

/// What an approval header says about `code`'s hidden characters, e.g. `2 hidden characters shown
/// as ␍ ⟨U+202E⟩` (each kind of marker once, in order of appearance); `None` when there are none.
///
/// ```
/// use proctor::text_safety::hidden_summary;
/// assert_eq!(hidden_summary("print(1)\n"), None);
/// assert_eq!(
///     hidden_summary("a\rb\u{202E}c\r").as_deref(),
///     Some("3 hidden characters shown as ␍ ⟨U+202E⟩")
/// );
/// ```
pub fn hidden_summary(code: &str) -> Option<String> {
    const MAX_KINDS: usize = 6;
    let n = hidden_count(code);
    if n == 0 {
        return None;
    }
    let mut kinds: Vec<String> = Vec::new();
    let mut more = false;
    for c in code.chars() {
        if c == '\n' || c == '\t' || classify(c).is_none() {
            continue;
        }
        let m = marker(c);
        if kinds.contains(&m) {
            continue;
        }
        if kinds.len() == MAX_KINDS {
            more = true;
            break;
        }
        kinds.push(m);
    }
    let plural = if n == 1 { "" } else { "s" };
    let more = if more { " …" } else { "" };
    Some(format!(
        "{n} hidden character{plural} shown as {}{more}",
        kinds.join(" ")
    ))
}

/// Whether `s` holds any control or invisible character at all (`\n` and `\t` included): such a
/// string cannot be a file name.
pub fn has_hidden(s: &str) -> bool {
    s.chars().any(|c| classify(c).is_some())
}

/// The characters that end a line for `language`'s interpreter, besides `\n`.
fn breaks_line(language: &str, c: char) -> bool {
    match language {
        // Python's tokenizer: `\n`, `\r\n` and a lone `\r`.
        "python" => c == '\r',
        // ECMAScript line terminators.
        "javascript" | "typescript" => matches!(c, '\r' | '\u{2028}' | '\u{2029}'),
        // Shells and everything else: only `\n` (a `\r` is part of the line).
        _ => false,
    }
}

/// Whether `code` is printable ASCII, `\n` and `\t` only: nothing in it is hidden or ends a line
/// but `\n` (most code). Checked 32 bytes at a time without an early exit, so the compiler
/// vectorises it (a 300 KB block in some 20 µs).
fn plain_code(code: &str) -> bool {
    let ok = |b: u8| matches!(b, b' '..=b'~' | b'\n' | b'\t');
    let mut chunks = code.as_bytes().chunks_exact(32);
    for c in &mut chunks {
        if !c.iter().fold(true, |all, &b| all & ok(b)) {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| ok(b))
}

/// The lines of `code` as `language`'s interpreter will see them, each made visible (tabs kept):
/// line numbers shown next to these match the interpreter's. A `\r` that ends a Python line is
/// still shown (as `␍`) at the end of that line.
///
/// ```
/// use proctor::text_safety::code_lines;
/// let lines = code_lines("# TODO: tidy later\rimport os", "python");
/// assert_eq!(lines, vec!["# TODO: tidy later␍", "import os"]);
/// let lines = code_lines("echo hi\r", "bash");
/// assert_eq!(lines, vec!["echo hi␍"]);
/// ```
pub fn code_lines(code: &str, language: &str) -> Vec<String> {
    if plain_code(code) {
        // Nothing to mark and no line end but `\n`: the same lines, without the walk by char.
        return plain_lines(code);
    }
    code_lines_by_char(code, language)
}

/// The lines of a block of code exactly as [`code_lines`] makes them, found once (where each
/// line starts and ends: one pass, no copy) and made visible one at a time when asked for. The
/// pending pane shows the 30 lines on screen of a 10,000-line block without splitting the other
/// 9,970 on the UI task.
///
/// ```
/// use proctor::text_safety::{CodeLines, code_lines};
/// let code = "x = 1\r# \u{202E}note\nprint(x)\n";
/// let lines = CodeLines::new(code, "python");
/// assert_eq!(lines.len(), 3);
/// assert_eq!(lines.line(1), "# ⟨U+202E⟩note");
/// assert_eq!(lines.to_vec(), code_lines(code, "python"));
/// assert_eq!(lines.hidden(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct CodeLines {
    code: std::sync::Arc<String>,
    /// Byte range of each line in `code`: its `\n` left out, a line-ending `\r` (or other line
    /// terminator of the language) kept, to be shown as a marker.
    ranges: Vec<(usize, usize)>,
    /// Printable ASCII, `\n` and `\t` only: a line is its bytes as they are.
    plain: bool,
    hidden: usize,
}

impl CodeLines {
    /// Finds the lines of `code` as `language`'s interpreter sees them.
    pub fn new(code: &str, language: &str) -> Self {
        Self::shared(std::sync::Arc::new(code.to_string()), language)
    }

    /// Like [`CodeLines::new`] on code shared with its owner (no copy).
    pub fn shared(shared: std::sync::Arc<String>, language: &str) -> Self {
        let code = shared.as_str();
        let plain = plain_code(code);
        let mut ranges = Vec::with_capacity(line_count(code) + 1);
        if plain {
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', code.as_bytes()) {
                ranges.push((start, end));
                start = end + 1;
            }
            // What follows the last `\n` is a line unless it is empty (and not the only one).
            if start < code.len() || ranges.is_empty() {
                ranges.push((start, code.len()));
            }
        } else {
            // As `code_lines_by_char` walks it, keeping positions instead of text.
            let mut start = 0;
            let mut chars = code.char_indices().peekable();
            while let Some((at, c)) = chars.next() {
                if c == '\n' {
                    ranges.push((start, at));
                    start = at + 1;
                } else if c != '\t' && classify(c).is_some() && breaks_line(language, c) {
                    let end = at + c.len_utf8();
                    ranges.push((start, end));
                    start = end;
                    if c == '\r' && chars.peek().is_some_and(|&(_, n)| n == '\n') {
                        chars.next();
                        start += 1;
                    }
                }
            }
            if start < code.len() || ranges.is_empty() {
                ranges.push((start, code.len()));
            }
        }
        let hidden = if plain { 0 } else { hidden_count_by_char(code) };
        CodeLines {
            code: shared,
            ranges,
            plain,
            hidden,
        }
    }

    /// How many lines.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether there are no lines (never: empty code is one empty line).
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Hidden characters (as [`hidden_count`]).
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Line `i` made visible (tabs kept); empty past the end.
    pub fn line(&self, i: usize) -> Cow<'_, str> {
        let Some(&(s, e)) = self.ranges.get(i) else {
            return Cow::Borrowed("");
        };
        let raw = &self.code[s..e];
        if self.plain {
            return Cow::Borrowed(raw);
        }
        let mut out = String::with_capacity(raw.len() + 8);
        for c in raw.chars() {
            if c == '\t' || classify(c).is_none() {
                out.push(c);
            } else {
                out.push_str(&marker(c));
            }
        }
        Cow::Owned(out)
    }

    /// Every line, as [`code_lines`] gives them.
    pub fn to_vec(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.line(i).into_owned()).collect()
    }
}

/// Lines of `code` as `str::lines` counts them (a last line without `\n` counts, an empty code
/// has none), a vector at a time.
pub fn line_count(code: &str) -> usize {
    memchr::memchr_iter(b'\n', code.as_bytes()).count()
        + usize::from(!code.is_empty() && !code.ends_with('\n'))
}

fn plain_lines(code: &str) -> Vec<String> {
    let mut lines: Vec<String> = code.split('\n').map(str::to_string).collect();
    if lines.len() > 1 && lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

fn code_lines_by_char(code: &str, language: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\n' {
            lines.push(std::mem::take(&mut current));
            continue;
        }
        if c == '\t' || classify(c).is_none() {
            current.push(c);
            continue;
        }
        current.push_str(&marker(c));
        if breaks_line(language, c) {
            // `\r\n` is one line end.
            if c == '\r' && chars.peek() == Some(&'\n') {
                chars.next();
            }
            lines.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() || lines.is_empty() {
        lines.push(current);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// The byte-wise path for plain code gives what the walk by char gives.
        #[test]
        fn plain_code_takes_a_shortcut_to_the_same_lines(
            code in "[a-z \\n\\t\\r\u{202E}\u{2028}\u{0}é(){}=]{0,40}",
            lang in prop::sample::select(vec!["python", "bash", "javascript"]),
        ) {
            prop_assert_eq!(code_lines(&code, lang), code_lines_by_char(&code, lang));
            prop_assert_eq!(hidden_count(&code), hidden_count_by_char(&code));
            let lines = CodeLines::new(&code, lang);
            prop_assert_eq!(lines.to_vec(), code_lines_by_char(&code, lang));
            prop_assert_eq!(lines.len(), code_lines_by_char(&code, lang).len());
            prop_assert_eq!(lines.hidden(), hidden_count_by_char(&code));
            prop_assert_eq!(line_count(&code), code.lines().count());
        }
    }

    #[test]
    fn every_kind_named_by_the_issue_is_marked() {
        for c in [
            '\r',
            '\u{0}',
            '\u{7}',
            '\u{8}',
            '\u{1b}',
            '\u{7f}',
            '\u{85}',
            '\u{9b}',
            '\u{202A}',
            '\u{202E}',
            '\u{2066}',
            '\u{2069}',
            '\u{200B}',
            '\u{200F}',
            '\u{2028}',
            '\u{2029}',
            '\u{FEFF}',
            '\u{E0041}',
            '\u{E007F}',
        ] {
            let s = format!("a{c}b");
            let v = visible(&s);
            assert!(!v.contains(c), "{c:?} passed through: {v:?}");
            assert!(v.len() > 2, "{c:?} dropped: {v:?}");
            assert_eq!(hidden_count(&s), 1, "{c:?}");
        }
    }

    #[test]
    fn newlines_and_tabs_depend_on_the_context() {
        assert_eq!(visible("a\n\tb"), "a\n\tb");
        assert_eq!(visible_line("a\n\tb"), "a␊␉b");
        assert_eq!(visible_keeping("a\n\tb", Keep::Tabs), "a␊\tb");
        assert!(matches!(visible("plain ascii"), Cow::Borrowed(_)));
    }

    #[test]
    fn variation_selectors_that_change_identifiers_are_marked() {
        // `delete︀` is another Python variable than `delete`, and draws the same.
        let code = "delete = True\ndelete\u{FE00} = False";
        assert_eq!(hidden_count(code), 1);
        assert_eq!(code_lines(code, "python")[1], "delete⟨U+FE00⟩ = False");
        assert_eq!(visible("x\u{FE0F}"), "x⟨U+FE0F⟩");
        assert!(visible("a\u{E0100}b").contains("⟨U+E0100⟩"));
        // After a symbol, the emoji selector is how the emoji is meant to look.
        assert_eq!(visible("love ❤\u{FE0F}"), "love ❤\u{FE0F}");
    }

    #[test]
    fn ordinary_unicode_is_left_alone() {
        let s = "héllo → 世界 🎉 ❤️ ∑";
        assert_eq!(visible(s), s);
        // In code every selector counts (the approval header says so).
        assert_eq!(hidden_count(s), 1);
        assert_eq!(hidden_count("héllo → 世界 🎉 ∑"), 0);
    }

    #[test]
    fn python_lines_follow_the_tokenizer() {
        assert_eq!(code_lines("a\r\nb\rc\n", "python"), vec!["a␍", "b␍", "c"]);
        assert_eq!(code_lines("a\rb", "bash"), vec!["a␍b"]);
        assert_eq!(
            code_lines("x\u{2028}y", "javascript"),
            vec!["x⟨U+2028⟩", "y"]
        );
        assert_eq!(code_lines("", "python"), vec![""]);
        assert_eq!(code_lines("a\n\nb", "sh"), vec!["a", "", "b"]);
    }

    #[test]
    fn pieces_tell_markers_from_text() {
        let p = pieces("x\u{202E}y", Keep::NewlinesAndTabs);
        assert_eq!(p.len(), 3);
        assert!(matches!(
            p[1],
            Piece::Marker {
                kind: Hidden::Bidi,
                ..
            }
        ));
    }

    #[test]
    fn excerpts_are_short_single_lines() {
        let long = "line one\nline\ttwo ".repeat(100);
        let e = excerpt(&long, 40);
        assert!(!e.contains('\n'));
        assert_eq!(e.chars().count(), 41);
        assert!(e.ends_with('…'));
        assert_eq!(excerpt("a\x1b]52;c;x\x07", 80), "a␛]52;c;x␇");
    }

    #[test]
    fn file_names_with_any_hidden_character_are_detected() {
        assert!(has_hidden("a\u{200B}.py"));
        assert!(has_hidden("a\n.py"));
        assert!(!has_hidden("dir/ok_name-1.py"));
    }
}
