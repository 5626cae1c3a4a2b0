//! The full-screen front end (ratatui): transcript, roster, cost meter, pending-code pane and live
//! output. Like `headless`, it knows the session only through `Event`s and acts only through `Op`s.
//!
//! `run` owns the terminal for the session: it folds engine events into the app, turns keys into
//! ops, draws on demand (coalesced, at most 60 fps, no timer while idle) and restores the terminal
//! on every way out. Quitting sends nothing: an open approval stays open in the log and resume asks
//! again.

pub mod app;
pub mod files;
pub mod frame;
pub mod keymap;
pub mod model;
pub mod render;
pub mod term;
pub mod theme;
pub mod transcript;
pub mod widgets;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{Event as TermEvent, KeyEventKind};
use tokio::sync::mpsc;

use crate::engine::SessionHandle;
use crate::protocol::WaitingOn;
use crate::tui::app::{App, AppConfig, Exit, Request, SystemClock};
use crate::tui::frame::FrameScheduler;
use crate::tui::keymap::Keymap;
use crate::tui::render::highlight::Highlighter;
use crate::tui::theme::Theme;

/// Environment variable of the test hook that makes the TUI panic right after its first frame
/// (the PTY test of terminal restore). Honoured only with exactly [`TEST_PANIC_VALUE`].
pub const TEST_PANIC_ENV: &str = "PROCTOR_TUI_TEST_PANIC";
/// The one value of [`TEST_PANIC_ENV`] that panics.
pub const TEST_PANIC_VALUE: &str = "panic-after-first-frame";
/// The value of [`TEST_PANIC_ENV`] that makes a background task panic after the first frame (the
/// TUI must go on, its screen intact).
pub const TEST_BACKGROUND_PANIC_VALUE: &str = "background-panic-after-first-frame";

/// How the TUI is set up.
#[derive(Debug, Clone, Default)]
pub struct TuiOptions {
    /// Theme name (`dark`, `light`, `high-contrast`).
    pub theme: String,
    /// Draw without colours (`NO_COLOR`).
    pub no_color: bool,
    /// `[keys]` of config.toml.
    pub keys: BTreeMap<String, String>,
    /// Notes to show at the top of the transcript (resume warnings, models missing).
    pub notes: Vec<String>,
    /// The session's workspace on the host (the `f` pane opens files there).
    pub workspace: Option<PathBuf>,
    /// The session's start state (the `f` pane's diffs against it).
    pub start: Option<crate::workspace::session::SessionStart>,
}

/// How the TUI ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TuiOutcome {
    /// The session ended (the human then quit the screen).
    Terminated(String),
    /// The human quit before the session ended; it is saved and resumable. The words say what
    /// was open.
    Quit(String),
    /// A signal ended proctor (`SIGTERM`, `SIGHUP`, `SIGINT`).
    Signal(&'static str),
    /// The terminal went away.
    TerminalLost,
}

impl TuiOutcome {
    /// Process exit code, as for the headless front end (docs/cli.md).
    pub fn exit_code(&self) -> i32 {
        match self {
            TuiOutcome::Terminated(_) => 0,
            TuiOutcome::Quit(_) => 3,
            TuiOutcome::Signal("SIGINT") => 130,
            TuiOutcome::Signal("SIGHUP") | TuiOutcome::TerminalLost => 129,
            TuiOutcome::Signal(_) => 143,
        }
    }
}

/// What the session came to, for the lines printed after the TUI.
#[derive(Debug, Clone)]
pub struct TuiReport {
    /// How it ended.
    pub outcome: TuiOutcome,
    /// Session USD (priced calls).
    pub usd: f64,
    /// Some calls had no price.
    pub unpriced: bool,
    /// Some usage was estimated.
    pub estimated: bool,
}

/// A TUI that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    /// The theme.
    #[error(transparent)]
    Theme(#[from] theme::ThemeError),
    /// The terminal.
    #[error("cannot use the terminal: {0}")]
    Terminal(#[from] std::io::Error),
}

async fn signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = hup.recv() => "SIGHUP",
    }
}

/// Events folded before a frame may be drawn (keeps keys responsive during a long replay).
const EVENT_BATCH: usize = 20_000;

/// Runs the TUI on this terminal until the human quits (or a signal, or the terminal goes).
/// The terminal is restored before this returns, whatever happened.
pub async fn run(handle: SessionHandle, opts: TuiOptions) -> Result<TuiReport, TuiError> {
    let theme = Theme::load(
        if opts.theme.is_empty() {
            "dark"
        } else {
            &opts.theme
        },
        opts.no_color,
    )?;
    let (keymap, mut notes) = Keymap::with_overrides(&opts.keys);
    for n in &notes {
        tracing::warn!("{n}");
    }
    notes.extend(opts.notes);
    let (wake_tx, mut wake_rx) = mpsc::unbounded_channel::<()>();
    let highlighter = Highlighter::background(theme.syntect_theme.clone(), move || {
        let _ = wake_tx.send(());
    });
    let mut app = App::new(AppConfig {
        theme,
        keymap,
        notes,
        highlighter,
        clock: Arc::new(SystemClock),
        workspace: opts
            .workspace
            .map(|dir| files::WorkspaceFiles::new(dir, opts.start)),
    });
    let test_panic = std::env::var(TEST_PANIC_ENV).is_ok_and(|v| v == TEST_PANIC_VALUE);
    let mut test_background_panic =
        std::env::var(TEST_PANIC_ENV).is_ok_and(|v| v == TEST_BACKGROUND_PANIC_VALUE);

    let SessionHandle {
        ops,
        mut events,
        task,
    } = handle;
    let mut terminal = term::enter()?;
    let (input_tx, mut input_rx) = mpsc::unbounded_channel();
    // Workspace files read off the UI task: (load, what was read).
    let (file_tx, mut file_rx) = mpsc::unbounded_channel::<(u64, files::FileView)>();
    let mut input = Some(term::InputReader::start(input_tx.clone()));
    let mut frames = FrameScheduler::default();
    frames.request();
    let signals = signal();
    tokio::pin!(signals);
    let mut events_open = true;
    let mut outcome: Option<TuiOutcome> = None;

    while outcome.is_none() {
        let now = Instant::now();
        let deadline = frames.deadline(now);
        let timer = next_timer(&app, now);
        tokio::select! {
            biased;
            sig = &mut signals => {
                outcome = Some(TuiOutcome::Signal(sig));
            }
            tev = input_rx.recv() => match tev.flatten() {
                None => outcome = Some(TuiOutcome::TerminalLost),
                Some(TermEvent::Key(k)) => {
                    if k.kind != KeyEventKind::Release {
                        app.on_key(k);
                        frames.request();
                    }
                }
                Some(TermEvent::Paste(text)) => {
                    app.on_paste(&text);
                    frames.request();
                }
                Some(TermEvent::Resize(..)) => frames.request(),
                Some(TermEvent::FocusGained | TermEvent::FocusLost | TermEvent::Mouse(_)) => {}
            },
            _ = sleep_until_opt(deadline) => {
                let t = Instant::now();
                if let Err(e) = term::draw(&mut terminal, |f| widgets::draw(&mut app, f)) {
                    tracing::warn!("drawing failed: {e}");
                    outcome = Some(TuiOutcome::TerminalLost);
                }
                frames.drawn(t);
                if test_panic {
                    panic!("{TEST_PANIC_ENV} asked for a panic after the first frame");
                }
                if test_background_panic {
                    test_background_panic = false;
                    tokio::task::spawn_blocking(|| {
                        panic!("{TEST_PANIC_ENV} asked for a panic in a background task")
                    });
                }
            }
            _ = sleep_until_opt(timer) => {
                app.expire_flash();
                frames.request();
            }
            Some(()) = wake_rx.recv() => frames.request(),
            Some((seq, view)) = file_rx.recv() => {
                app.file_loaded(seq, view);
                frames.request();
            }
            ev = events.recv(), if events_open => match ev {
                Some(ev) => {
                    app.on_event_owned(ev);
                    for _ in 0..EVENT_BATCH {
                        match events.try_recv() {
                            Ok(ev) => app.on_event_owned(ev),
                            Err(_) => break,
                        }
                    }
                    frames.request();
                }
                None => {
                    events_open = false;
                    frames.request();
                }
            },
        }
        for op in app.take_ops() {
            tracing::debug!("op: {op:?}");
            let _ = ops.send(op);
        }
        for req in app.take_requests() {
            match req {
                Request::ExternalEdit {
                    id,
                    block,
                    code,
                    language,
                } => {
                    if let Some(reader) = input.take() {
                        reader.stop().await;
                    }
                    term::restore();
                    let edited =
                        tokio::task::spawn_blocking(move || term::run_editor(&code, &language))
                            .await
                            .unwrap_or_else(|e| Err(format!("the editor hand-off failed: {e}")));
                    if let Err(e) = term::reenter(&mut terminal) {
                        tracing::warn!("cannot re-enter the terminal: {e}");
                        outcome = Some(TuiOutcome::TerminalLost);
                    }
                    term::flush_input();
                    // Keys typed for the editor after it exited must not reach the screen.
                    while input_rx.try_recv().is_ok() {}
                    input = Some(term::InputReader::start(input_tx.clone()));
                    app.external_edit_done(id, block, edited);
                    frames.request();
                }
                Request::LoadFile { seq, path, files } => {
                    let tx = file_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let _ = tx.send((seq, files.load(&path)));
                    });
                }
            }
        }
        if let Some(Exit::Quit) = app.exit {
            let what = match (
                &app.view.terminated,
                app.view.open_approval(),
                app.engine_waits,
            ) {
                (Some(reason), _, _) => {
                    outcome = Some(TuiOutcome::Terminated(reason.clone()));
                    break;
                }
                (None, Some(_), _) => "an approval was pending".to_string(),
                (None, None, Some(WaitingOn::Speaker)) => {
                    "a speaker choice was pending".to_string()
                }
                (None, None, Some(WaitingOn::Continue)) => "the session was paused".to_string(),
                (None, None, Some(WaitingOn::Message)) => {
                    "the session waited for a message".to_string()
                }
                _ => "the session was running".to_string(),
            };
            outcome = Some(TuiOutcome::Quit(what));
        }
    }
    if let Some(reader) = input.take() {
        reader.stop().await;
    }
    term::restore();
    let report = TuiReport {
        outcome: outcome.unwrap_or(TuiOutcome::TerminalLost),
        usd: app.view.spend.usd,
        unpriced: app.view.spend.unpriced_calls > 0,
        estimated: app.view.spend.estimated_calls > 0,
    };
    // Nothing more goes to the engine: it sees the front end gone, stops what runs (recorded as
    // interrupted) and saves. An open approval stays open.
    drop(ops);
    drop(events);
    if tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .is_err()
    {
        tracing::warn!("the session did not stop within 20 s after the TUI ended");
    }
    Ok(report)
}

/// The next time the screen changes by itself: a running block's clock (each second), a flash
/// going, the approval guard ending. `None` when nothing will (idle: no timer at all).
fn next_timer(app: &App, now: Instant) -> Option<Instant> {
    let mut t: Option<Instant> = None;
    let mut consider = |x: Instant| {
        if x > now {
            t = Some(t.map_or(x, |cur: Instant| cur.min(x)));
        }
    };
    if app.view.running.is_some() {
        let ms = app.wall_ms() % 1000;
        consider(now + Duration::from_millis(1000 - ms));
    }
    if let Some((_, until)) = &app.flash {
        consider(*until);
    }
    if let Some(g) = app.guard_until() {
        consider(g);
    }
    t.or_else(|| app.flash.as_ref().map(|_| now))
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Whether the TUI can run here: stdin and stdout are terminals.
pub fn available() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}
