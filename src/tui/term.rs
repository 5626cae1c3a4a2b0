//! The terminal: entering (raw mode, alternate screen, bracketed paste, alternate-scroll mode so the
//! mouse wheel scrolls without capturing the mouse), restoring it on every way out (normal exit,
//! panic, signals, a lost terminal), frames inside synchronized updates, the input reader task,
//! and the `$VISUAL`/`$EDITOR` hand-off (stop reading, restore, run, re-enter, drop queued input).

use std::io::{self, Stdout, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{
    self, DisableBracketedPaste, EnableBracketedPaste, Event as TermEvent, EventStream,
};
use ratatui::crossterm::terminal::{
    BeginSynchronizedUpdate, EndSynchronizedUpdate, EnterAlternateScreen, LeaveAlternateScreen,
    disable_raw_mode, enable_raw_mode,
};
use ratatui::crossterm::{cursor, execute};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The terminal type the TUI draws on.
pub type Tui = Terminal<CrosstermBackend<Stdout>>;

/// Whether the terminal is in the TUI's modes (restore has work to do).
static ENTERED: AtomicBool = AtomicBool::new(false);

/// Alternate-scroll mode: in the alternate screen the wheel sends arrow keys (xterm 1007).
const ALT_SCROLL_ON: &str = "\x1b[?1007h";
const ALT_SCROLL_OFF: &str = "\x1b[?1007l";

fn set_modes(out: &mut impl Write) -> io::Result<()> {
    enable_raw_mode()?;
    execute!(
        out,
        EnterAlternateScreen,
        EnableBracketedPaste,
        cursor::Hide
    )?;
    out.write_all(ALT_SCROLL_ON.as_bytes())?;
    out.flush()
}

/// Enters the TUI's modes and returns the terminal. Installs the panic hook first, so a panic
/// from here on leaves a usable terminal.
pub fn enter() -> io::Result<Tui> {
    install_panic_hook();
    let mut out = io::stdout();
    ENTERED.store(true, Ordering::SeqCst);
    if let Err(e) = set_modes(&mut out) {
        restore();
        return Err(e);
    }
    let mut t = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    clear(&mut t)?;
    Ok(t)
}

/// Clears the screen and forgets what was drawn, so the next frame is drawn whole. (Not
/// `Terminal::clear`: that asks the terminal where its cursor is, and waits for the answer.)
fn clear(t: &mut Tui) -> io::Result<()> {
    let size = t.size()?;
    t.resize(ratatui::layout::Rect::new(0, 0, size.width, size.height))
}

/// Puts the terminal back as it was (idempotent; errors are ignored: the terminal may be gone).
pub fn restore() {
    if !ENTERED.swap(false, Ordering::SeqCst) {
        return;
    }
    let mut out = io::stdout();
    let _ = out.write_all(ALT_SCROLL_OFF.as_bytes());
    let _ = execute!(
        out,
        EndSynchronizedUpdate,
        DisableBracketedPaste,
        LeaveAlternateScreen,
        cursor::Show
    );
    let _ = disable_raw_mode();
    let _ = out.flush();
}

/// Enters the modes again after `restore` (after the editor).
pub fn reenter(t: &mut Tui) -> io::Result<()> {
    ENTERED.store(true, Ordering::SeqCst);
    set_modes(&mut io::stdout())?;
    clear(t)
}

fn install_panic_hook() {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // The TUI runs on the main thread: a panic there ends proctor, so the terminal is
        // restored first. A panic elsewhere (a blocking task: a snapshot, the highlighter) is
        // caught by its owner and the TUI goes on: it goes to the log, never over the screen.
        if std::thread::current().name() == Some("main") {
            restore();
            previous(info);
        } else {
            tracing::error!("a background task panicked: {info}");
        }
    }));
}

/// Draws one frame inside a synchronized update (the terminal shows it whole or not at all).
pub fn draw(t: &mut Tui, render: impl FnOnce(&mut ratatui::Frame<'_>)) -> io::Result<()> {
    execute!(io::stdout(), BeginSynchronizedUpdate)?;
    let drawn = t.draw(render).map(|_| ());
    execute!(io::stdout(), EndSynchronizedUpdate)?;
    drawn
}

/// Reads terminal events on a task until stopped; `None` on the channel means the terminal is
/// gone (closed, hung up, unreadable).
pub struct InputReader {
    stop: CancellationToken,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl InputReader {
    /// Starts reading into `tx`.
    pub fn start(tx: mpsc::UnboundedSender<Option<TermEvent>>) -> InputReader {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let done = tokio::spawn(async move {
            let mut stream = EventStream::new();
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    ev = stream.next() => match ev {
                        Some(Ok(ev)) => {
                            if tx.send(Some(ev)).is_err() {
                                break;
                            }
                        }
                        Some(Err(e)) => {
                            tracing::warn!("terminal input failed: {e}");
                            let _ = tx.send(None);
                            break;
                        }
                        None => {
                            let _ = tx.send(None);
                            break;
                        }
                    },
                }
            }
        });
        InputReader {
            stop,
            done: Some(done),
        }
    }

    /// Stops reading (before the terminal is handed to another program).
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(d) = self.done.take() {
            let _ = d.await;
        }
    }
}

impl Drop for InputReader {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Drops input typed while another program had the terminal.
pub fn flush_input() {
    while let Ok(true) = event::poll(Duration::from_millis(0)) {
        if event::read().is_err() {
            break;
        }
    }
}

/// Opens `code` in `$VISUAL` (or `$EDITOR`; the value may carry arguments, e.g. `code -w`) and
/// returns the edited text. Blocking: call with the terminal restored and input stopped.
pub fn run_editor(code: &str, language: &str) -> Result<String, String> {
    let editor = std::env::var("VISUAL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or_else(|| {
            std::env::var("EDITOR")
                .ok()
                .filter(|v| !v.trim().is_empty())
        })
        .ok_or_else(|| "set $VISUAL or $EDITOR to edit a block in your editor".to_string())?;
    let suffix = match language {
        "python" => ".py",
        "bash" | "sh" => ".sh",
        "javascript" => ".js",
        "typescript" => ".ts",
        _ => ".txt",
    };
    let file = tempfile::Builder::new()
        .prefix("proctor-block-")
        .suffix(suffix)
        .tempfile()
        .map_err(|e| format!("cannot create a file to edit: {e}"))?;
    std::fs::write(file.path(), code).map_err(|e| format!("cannot write the file to edit: {e}"))?;
    let mut parts = editor.split_whitespace();
    let prog = parts.next().ok_or("$EDITOR is empty")?;
    let status = std::process::Command::new(prog)
        .args(parts)
        .arg(file.path())
        .status()
        .map_err(|e| format!("cannot start {editor}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "{editor} exited with {status}; the block is undecided"
        ));
    }
    std::fs::read_to_string(file.path()).map_err(|e| format!("cannot read the edited file: {e}"))
}
