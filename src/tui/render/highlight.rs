//! Syntax highlighting of code (syntect with two-face's syntaxes, pure-Rust regex), off the UI
//! task: the screen shows code plain first and highlighted once a worker thread has done it.
//!
//! Lines go in already made visible (`text_safety::code_lines`), so markers are highlighted as
//! the text they are and nothing hidden reaches the highlighter's output.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use ratatui::style::{Color, Modifier, Style};
use syntect::easy::HighlightLines;
use syntect::highlighting::{FontStyle, ThemeSet};
use syntect::parsing::SyntaxSet;

/// One highlighted line: (style, text) pieces.
pub type StyledLine = Vec<(Style, String)>;

/// Highlighted lines of one piece of code.
pub type Highlighted = Arc<Vec<StyledLine>>;

fn syntaxes() -> &'static SyntaxSet {
    static SET: OnceLock<SyntaxSet> = OnceLock::new();
    SET.get_or_init(two_face::syntax::extra_newlines)
}

fn themes() -> &'static ThemeSet {
    static SET: OnceLock<ThemeSet> = OnceLock::new();
    SET.get_or_init(ThemeSet::load_defaults)
}

/// Loads the syntax and theme sets (slow the first time: call it off the UI task at start).
pub fn warm_up() {
    let _ = syntaxes();
    let _ = themes();
}

/// Names of the code themes a theme file may name.
pub fn theme_names() -> Vec<String> {
    themes().themes.keys().cloned().collect()
}

/// Highlights `lines` as `language` with the syntect theme `theme` (synchronous).
pub fn highlight_now(lines: &[String], language: &str, theme: &str) -> Vec<StyledLine> {
    highlight_while(lines, language, theme, &|| true).unwrap_or_default()
}

/// Like [`highlight_now`], giving up (`None`) as soon as `keep_going` says no: the worker stops
/// a big block's work when the screen that asked for it is gone.
fn highlight_while(
    lines: &[String],
    language: &str,
    theme: &str,
    keep_going: &dyn Fn() -> bool,
) -> Option<Vec<StyledLine>> {
    Some(
        highlight_raw(lines, language, theme, keep_going)?
            .into_iter()
            .map(expand_tabs)
            .collect(),
    )
}

/// Tabs as spaces to the next tab stop (the terminal would drop or move on a raw `\t`), as the
/// plain rendering does, so highlighting never changes what the code looks like.
fn expand_tabs(pieces: StyledLine) -> StyledLine {
    if !pieces.iter().any(|(_, t)| t.contains('\t')) {
        return pieces;
    }
    let mut col = 0usize;
    pieces
        .into_iter()
        .map(|(st, t)| {
            let mut s = String::with_capacity(t.len() + 8);
            for c in t.chars() {
                if c == '\t' {
                    let n = super::text::TAB - (col % super::text::TAB);
                    s.extend(std::iter::repeat_n(' ', n));
                    col += n;
                } else {
                    s.push(c);
                    col += unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
                }
            }
            (st, s)
        })
        .collect()
}

/// Lines highlighted between two looks at `keep_going`.
const LINES_PER_CHECK: usize = 256;

fn highlight_raw(
    lines: &[String],
    language: &str,
    theme: &str,
    keep_going: &dyn Fn() -> bool,
) -> Option<Vec<StyledLine>> {
    let plain = || {
        Some(
            lines
                .iter()
                .map(|l| vec![(Style::new(), l.clone())])
                .collect(),
        )
    };
    let ss = syntaxes();
    let Some(theme) = themes().themes.get(theme) else {
        return plain();
    };
    let syntax = ss
        .find_syntax_by_token(language)
        .or_else(|| ss.find_syntax_by_token(&language.to_ascii_lowercase()));
    let Some(syntax) = syntax else {
        return plain();
    };
    let mut h = HighlightLines::new(syntax, theme);
    let mut out = Vec::with_capacity(lines.len());
    let mut buf = String::new();
    for (i, line) in lines.iter().enumerate() {
        if i % LINES_PER_CHECK == LINES_PER_CHECK - 1 && !keep_going() {
            return None;
        }
        buf.clear();
        buf.push_str(line);
        buf.push('\n');
        match h.highlight_line(&buf, ss) {
            Ok(pieces) => out.push(
                pieces
                    .into_iter()
                    .map(|(s, t)| (convert(s), t.trim_end_matches('\n').to_string()))
                    .filter(|(_, t)| !t.is_empty())
                    .collect(),
            ),
            Err(_) => out.push(vec![(Style::new(), line.clone())]),
        }
    }
    Some(out)
}

fn convert(s: syntect::highlighting::Style) -> Style {
    let f = s.foreground;
    let mut style = Style::new().fg(Color::Rgb(f.r, f.g, f.b));
    if s.font_style.contains(FontStyle::BOLD) {
        style = style.add_modifier(Modifier::BOLD);
    }
    if s.font_style.contains(FontStyle::ITALIC) {
        style = style.add_modifier(Modifier::ITALIC);
    }
    if s.font_style.contains(FontStyle::UNDERLINE) {
        style = style.add_modifier(Modifier::UNDERLINED);
    }
    style
}

/// Key of a piece of code: its lines, language and code theme.
pub fn key(lines: &[String], language: &str, theme: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    theme.hash(&mut h);
    language.hash(&mut h);
    lines.hash(&mut h);
    h.finish()
}

/// A request for the worker.
struct Job {
    key: u64,
    lines: Arc<Vec<String>>,
    language: String,
    theme: String,
}

/// Entries kept before the cache starts over.
const CACHE_ENTRIES: usize = 4096;

struct Shared {
    cache: Mutex<HashMap<u64, Highlighted>>,
    pending: Mutex<HashSet<u64>>,
    generation: AtomicU64,
}

/// Highlighting for the screen: cached results, computed inline (tests, snapshots) or by a
/// worker thread that wakes the app when a result is ready.
#[derive(Clone)]
pub struct Highlighter {
    theme: Option<String>,
    shared: Arc<Shared>,
    worker: Option<std::sync::mpsc::Sender<Job>>,
}

impl Highlighter {
    fn with(theme: Option<String>, worker: Option<std::sync::mpsc::Sender<Job>>) -> Self {
        Highlighter {
            theme,
            shared: Arc::new(Shared {
                cache: Mutex::new(HashMap::new()),
                pending: Mutex::new(HashSet::new()),
                generation: AtomicU64::new(0),
            }),
            worker,
        }
    }

    /// Highlights on the calling thread (tests and snapshots). `None`: no colours.
    pub fn inline(theme: Option<String>) -> Self {
        Self::with(theme, None)
    }

    /// Highlights on a worker thread; `ready` is called after each result lands in the cache.
    pub fn background(theme: Option<String>, ready: impl Fn() + Send + 'static) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let h = Self::with(theme, Some(tx));
        // Weak: once every handle is gone (the screen ended), the worker drops what it is doing.
        let weak = Arc::downgrade(&h.shared);
        let spawned = std::thread::Builder::new()
            .name("proctor-highlight".into())
            .spawn(move || {
                warm_up();
                while let Ok(job) = rx.recv() {
                    let alive = || weak.strong_count() > 0;
                    let Some(out) = highlight_while(&job.lines, &job.language, &job.theme, &alive)
                    else {
                        break;
                    };
                    let out = Arc::new(out);
                    let Some(shared) = weak.upgrade() else { break };
                    if let Ok(mut c) = shared.cache.lock() {
                        if c.len() >= CACHE_ENTRIES {
                            c.clear();
                        }
                        c.insert(job.key, out);
                    }
                    if let Ok(mut p) = shared.pending.lock() {
                        p.remove(&job.key);
                    }
                    shared.generation.fetch_add(1, Ordering::SeqCst);
                    ready();
                }
            });
        match spawned {
            Ok(_) => h,
            Err(e) => {
                tracing::warn!("no highlighting thread ({e}); code is shown plain");
                Self::with(None, None)
            }
        }
    }

    /// Whether code gets colours at all.
    pub fn enabled(&self) -> bool {
        self.theme.is_some()
    }

    /// Bumped whenever a result lands (cells that showed plain code redraw then).
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::SeqCst)
    }

    /// The highlighted lines of `lines`, or `None` (show them plain) while the worker is on it.
    pub fn get(&self, lines: &[String], language: &str) -> Option<Highlighted> {
        let theme = self.theme.as_ref()?;
        let key = key(lines, language, theme);
        self.lookup(key, language, || Arc::new(lines.to_vec()))
    }

    /// Like [`Highlighter::get`] with the key already computed and the lines shared (a big
    /// block is handed to the worker without a copy).
    pub fn get_keyed(
        &self,
        key: u64,
        lines: &Arc<Vec<String>>,
        language: &str,
    ) -> Option<Highlighted> {
        self.lookup(key, language, || lines.clone())
    }

    fn lookup(
        &self,
        key: u64,
        language: &str,
        lines: impl FnOnce() -> Arc<Vec<String>>,
    ) -> Option<Highlighted> {
        let theme = self.theme.as_ref()?;
        if let Some(h) = self.shared.cache.lock().ok()?.get(&key) {
            return Some(h.clone());
        }
        match &self.worker {
            None => {
                let out = Arc::new(highlight_now(&lines(), language, theme));
                if let Ok(mut c) = self.shared.cache.lock() {
                    if c.len() >= CACHE_ENTRIES {
                        c.clear();
                    }
                    c.insert(key, out.clone());
                }
                Some(out)
            }
            Some(tx) => {
                let mut pending = self.shared.pending.lock().ok()?;
                if pending.insert(key) {
                    let _ = tx.send(Job {
                        key,
                        lines: lines(),
                        language: language.to_string(),
                        theme: theme.clone(),
                    });
                }
                None
            }
        }
    }

    /// The code theme's key for `lines` (`None` without colours).
    pub fn key_for(&self, lines: &[String], language: &str) -> Option<u64> {
        Some(key(lines, language, self.theme.as_ref()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_gets_more_than_one_colour_and_the_text_is_unchanged() {
        let lines = vec![
            "def f(x):".to_string(),
            "    return x  # ␛ marker".to_string(),
        ];
        let out = highlight_now(&lines, "python", "base16-ocean.dark");
        let text: Vec<String> = out
            .iter()
            .map(|l| l.iter().map(|(_, t)| t.as_str()).collect())
            .collect();
        assert_eq!(text, lines);
        let colours: HashSet<Option<Color>> = out.iter().flatten().map(|(s, _)| s.fg).collect();
        assert!(colours.len() >= 3, "{colours:?}");
    }

    #[test]
    fn tabs_look_the_same_highlighted_or_plain() {
        let lines = vec!["if False:".to_string(), "\tx = 'a\tb'".to_string()];
        for lang in ["python", "no-such-language"] {
            let out = highlight_now(&lines, lang, "base16-ocean.dark");
            let text: String = out[1].iter().map(|(_, t)| t.as_str()).collect();
            let plain: String =
                crate::tui::render::text::line_spans(&lines[1], Style::new(), Style::new(), 0)
                    .iter()
                    .map(|s| s.content.to_string())
                    .collect();
            assert_eq!(text, "    x = 'a  b'", "{lang}");
            assert_eq!(text, plain, "{lang}");
        }
    }

    #[test]
    fn a_big_block_is_given_up_as_soon_as_nobody_wants_it() {
        let lines: Vec<String> = (0..10_000).map(|i| format!("x_{i} = {i} * 2")).collect();
        let looks = std::cell::Cell::new(0);
        let out = highlight_while(&lines, "python", "InspiredGitHub", &|| {
            looks.set(looks.get() + 1);
            false
        });
        assert!(out.is_none());
        assert_eq!(
            looks.get(),
            1,
            "stopped at the first look, {LINES_PER_CHECK} lines in"
        );
        let all = highlight_while(&lines, "python", "InspiredGitHub", &|| true);
        assert_eq!(all.map(|l| l.len()), Some(lines.len()));
    }

    #[test]
    fn the_worker_ends_without_a_result_once_the_screen_is_gone() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let h = Highlighter::background(Some("InspiredGitHub".into()), move || {
            let _ = tx.send(());
        });
        let lines: Vec<String> = (0..20_000).map(|i| format!("x_{i} = {i} * 2")).collect();
        assert!(h.get(&lines, "python").is_none(), "handed to the worker");
        drop(h);
        // The worker ends (its `ready` goes with it) and never reports a result.
        match rx.recv_timeout(std::time::Duration::from_secs(120)) {
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {}
            other => panic!("the worker went on: {other:?}"),
        }
    }

    #[test]
    fn the_worker_highlights_in_the_background_and_says_so() {
        let (tx, rx) = std::sync::mpsc::channel();
        let h = Highlighter::background(Some("InspiredGitHub".into()), move || {
            let _ = tx.send(());
        });
        let lines = vec!["echo hi".to_string()];
        assert!(h.get(&lines, "bash").is_none(), "first ask: plain");
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .expect("worker finished");
        assert!(h.generation() >= 1);
        assert!(h.get(&lines, "bash").is_some());
        assert!(Highlighter::inline(None).get(&lines, "bash").is_none());
    }
}
