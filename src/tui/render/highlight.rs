//! Syntax highlighting of code (syntect with two-face's syntaxes, pure-Rust regex), off the UI
//! task: the screen shows code plain first and highlighted once a worker thread has done it.
//!
//! Lines go in already made visible (`text_safety::code_lines`), so markers are highlighted as
//! the text they are and nothing hidden reaches the highlighter's output.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

/// Lowers the calling thread's CPU priority (nice 10 on Linux, where it is per thread): it still
/// gets every idle core, but the scheduler never lets it preempt the UI task on waking.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(None, 10) {
        tracing::debug!("highlighter keeps its priority: {e}");
    }
}

/// Lines highlighted between two looks at `keep_going` (a look is two atomic loads).
const LINES_PER_CHECK: usize = 16;

/// How long the worker waits before it looks again whether the screen is still drawing.
const YIELD_PAUSE: std::time::Duration = std::time::Duration::from_micros(250);

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

/// Key of a piece of code: its lines, language and code theme (always even: odd keys name a
/// block by [`Highlighter::code_key`]).
pub fn key(lines: &[String], language: &str, theme: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    theme.hash(&mut h);
    language.hash(&mut h);
    lines.hash(&mut h);
    h.finish() & !1
}

/// What the worker highlights.
enum Source {
    /// Lines already split.
    Lines(Arc<Vec<String>>),
    /// A block whose lines the worker makes itself (the UI task only found where they are).
    Code(Arc<crate::text_safety::CodeLines>),
}

/// A request for the worker.
struct Job {
    key: u64,
    source: Source,
    language: String,
    theme: String,
}

/// Entries kept before the cache starts over.
const CACHE_ENTRIES: usize = 4096;

struct Shared {
    cache: Mutex<HashMap<u64, Highlighted>>,
    pending: Mutex<HashSet<u64>>,
    generation: AtomicU64,
    /// The last key handed out by [`Highlighter::code_key`].
    next_code_key: AtomicU64,
    /// Frames (and event folds) in progress on the UI task: the worker waits while there are.
    busy: AtomicUsize,
}

/// The UI task is folding events or drawing while this lives: the highlighter's worker pauses
/// (see [`Highlighter::screen_busy`]).
pub struct ScreenBusy(Arc<Shared>);

impl Drop for ScreenBusy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Release);
    }
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
                next_code_key: AtomicU64::new(0),
                busy: AtomicUsize::new(0),
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
                // The screen comes first: a worker that has just woken never takes a core from
                // the UI task (with two cores and a busy machine it would, for milliseconds).
                lower_priority();
                warm_up();
                while let Ok(job) = rx.recv() {
                    // Whether to go on: not once the screen is gone, and not while it draws
                    // (even on another core, a busy neighbour slows a frame by a third or more on
                    // a small machine: shared caches, the allocator, the page-table lock).
                    let alive = || loop {
                        let Some(shared) = weak.upgrade() else {
                            return false;
                        };
                        if shared.busy.load(Ordering::Acquire) == 0 {
                            return true;
                        }
                        drop(shared);
                        std::thread::sleep(YIELD_PAUSE);
                    };
                    if !alive() {
                        break;
                    }
                    let lines = match job.source {
                        Source::Lines(lines) => lines,
                        Source::Code(code) => Arc::new(code.to_vec()),
                    };
                    // A block's own key (odd) may name code already highlighted under its
                    // content's key: that result serves both.
                    let content =
                        (job.key & 1 == 1).then(|| key(&lines, &job.language, &job.theme));
                    let known = content.and_then(|k| {
                        weak.upgrade()
                            .and_then(|s| s.cache.lock().ok().and_then(|c| c.get(&k).cloned()))
                    });
                    let out = match known {
                        Some(out) => out,
                        None => {
                            let Some(out) =
                                highlight_while(&lines, &job.language, &job.theme, &alive)
                            else {
                                break;
                            };
                            Arc::new(out)
                        }
                    };
                    let Some(shared) = weak.upgrade() else { break };
                    if let Ok(mut c) = shared.cache.lock() {
                        if c.len() + 2 > CACHE_ENTRIES {
                            c.clear();
                        }
                        if let Some(k) = content {
                            c.insert(k, out.clone());
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

    /// Marks the UI task busy (folding events, drawing a frame) until the guard is dropped: the
    /// worker pauses meanwhile and goes on after, so highlighting never takes time from a frame.
    pub fn screen_busy(&self) -> ScreenBusy {
        self.shared.busy.fetch_add(1, Ordering::Acquire);
        ScreenBusy(self.shared.clone())
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
        self.lookup(key, language, || Source::Lines(Arc::new(lines.to_vec())))
    }

    /// Like [`Highlighter::get`] with the key already computed and the lines shared (a big
    /// block is handed to the worker without a copy).
    pub fn get_keyed(
        &self,
        key: u64,
        lines: &Arc<Vec<String>>,
        language: &str,
    ) -> Option<Highlighted> {
        self.lookup(key, language, || Source::Lines(lines.clone()))
    }

    /// A key for one block's lines (O(1), unlike [`Highlighter::key_for`], which reads every
    /// line): the pending pane asks with it for a block it shows (`None` without colours).
    pub fn code_key(&self) -> Option<u64> {
        self.theme.as_ref()?;
        Some(self.shared.next_code_key.fetch_add(1, Ordering::Relaxed) * 2 + 1)
    }

    /// The highlighted lines of a block asked for with a [`Highlighter::code_key`], or `None`
    /// (show it plain) while the worker splits and highlights it.
    pub fn get_code(
        &self,
        key: u64,
        code: &Arc<crate::text_safety::CodeLines>,
        language: &str,
    ) -> Option<Highlighted> {
        self.lookup(key, language, || Source::Code(code.clone()))
    }

    fn lookup(
        &self,
        key: u64,
        language: &str,
        source: impl FnOnce() -> Source,
    ) -> Option<Highlighted> {
        let theme = self.theme.as_ref()?;
        if let Some(h) = self.shared.cache.lock().ok()?.get(&key) {
            return Some(h.clone());
        }
        match &self.worker {
            None => {
                let lines = match source() {
                    Source::Lines(lines) => lines,
                    Source::Code(code) => Arc::new(code.to_vec()),
                };
                let out = Arc::new(highlight_now(&lines, language, theme));
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
                        source: source(),
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

    /// A background highlighter and what its worker says after each result.
    fn background() -> (Highlighter, std::sync::mpsc::Receiver<()>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let h = Highlighter::background(Some("InspiredGitHub".into()), move || {
            let _ = tx.send(());
        });
        (h, rx)
    }

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
    fn the_worker_waits_while_the_screen_is_busy_and_goes_on_after() {
        let (h, rx) = background();
        let lines = vec!["echo hi".to_string()];
        let busy = h.screen_busy();
        assert!(h.get(&lines, "bash").is_none(), "handed to the worker");
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(500))
                .is_err(),
            "no highlighting while a frame is being drawn"
        );
        drop(busy);
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .expect("highlighted once the frame is done");
        assert!(h.get(&lines, "bash").is_some());
    }

    #[test]
    fn a_block_asked_for_by_its_own_key_is_split_and_highlighted_by_the_worker() {
        let (h, rx) = background();
        let code = Arc::new(crate::text_safety::CodeLines::new(
            "x = 1\r# \u{202E}\nprint(x)\n",
            "python",
        ));
        let key = h.code_key().expect("colours");
        assert_ne!(Some(key), h.code_key(), "each block its own key");
        assert!(h.get_code(key, &code, "python").is_none(), "plain first");
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .expect("worker finished");
        let out = h.get_code(key, &code, "python").expect("highlighted");
        let text: Vec<String> = out
            .iter()
            .map(|l| l.iter().map(|(_, t)| t.as_str()).collect())
            .collect();
        assert_eq!(
            text,
            code.to_vec(),
            "the lines as the pane shows them plain"
        );
        assert_eq!(text[1], "# ⟨U+202E⟩", "markers highlighted as text");
        // The same lines by content: already known, no second job.
        assert!(h.get(&code.to_vec(), "python").is_some());
        assert!(Highlighter::inline(None).code_key().is_none());
    }

    #[test]
    fn the_worker_highlights_in_the_background_and_says_so() {
        let (h, rx) = background();
        let lines = vec!["echo hi".to_string()];
        assert!(h.get(&lines, "bash").is_none(), "first ask: plain");
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .expect("worker finished");
        assert!(h.generation() >= 1);
        assert!(h.get(&lines, "bash").is_some());
        assert!(Highlighter::inline(None).get(&lines, "bash").is_none());
    }
}
