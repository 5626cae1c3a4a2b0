//! The TUI's state machine: engine events fold into the view model; keys, pastes and dialogs
//! become `Op`s in an outbox the run loop sends. Nothing here touches the terminal, so every key
//! can be tested for the ops it sends (and, for the "never approve by accident" rules, for the
//! ops it does not send).
//!
//! Safety rules enforced here: decision keys act only while the pending-code pane has focus; an
//! approval never takes the focus from the composer; paste and Enter never decide;
//! Ctrl-C and Esc never approve; a decision key within `APPROVAL_GUARD` of a block appearing is
//! ignored; a `waiting` the engine announced before it read our last op is stale and opens
//! nothing; quitting sends nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui_textarea::TextArea;

use crate::engine::state::code_hash;
use crate::protocol::{Decision, Event, EventKind, Op, PauseKind, PolicyRule, WaitingOn};
use crate::text_safety::{CodeLines, hidden_count};
use crate::tui::keymap::{Action, Keymap, Scope};
use crate::tui::model::SessionView;
use crate::tui::render::highlight::Highlighter;
use crate::tui::theme::Theme;
use crate::tui::transcript::Transcript;
use crate::tui::transcript::cell::CellContext;

/// A decision key pressed sooner than this after its block appeared is ignored.
pub const APPROVAL_GUARD: Duration = Duration::from_millis(300);

/// Time, injectable for tests.
pub trait Clock: Send + Sync {
    /// Monotonic now.
    fn now(&self) -> Instant;
    /// Wall time, ms since the epoch (elapsed time of running blocks).
    fn wall_ms(&self) -> u64;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn wall_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told (tests).
pub struct ManualClock {
    state: Mutex<(Instant, u64)>,
}

impl ManualClock {
    /// Starts at `wall_ms`.
    pub fn new(wall_ms: u64) -> Arc<Self> {
        Arc::new(ManualClock {
            state: Mutex::new((Instant::now(), wall_ms)),
        })
    }
    /// Moves both clocks forward.
    pub fn advance(&self, d: Duration) {
        if let Ok(mut s) = self.state.lock() {
            s.0 += d;
            s.1 += d.as_millis() as u64;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.state
            .lock()
            .map(|s| s.0)
            .unwrap_or_else(|_| Instant::now())
    }
    fn wall_ms(&self) -> u64 {
        self.state.lock().map(|s| s.1).unwrap_or(0)
    }
}

/// The pane with the keyboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// The transcript.
    Transcript,
    /// The pending-code pane.
    Approval,
    /// The roster.
    Roster,
    /// The message composer.
    Composer,
}

/// Moving around in the focused pane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nav {
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
}

/// A key on the roster's selected agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RosterKey {
    Pin,
    Mute,
    Note,
}

/// A decision key on the pane's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecisionKey {
    Approve,
    AlwaysCode,
    AlwaysLanguage,
    WithNetwork,
    EditInPlace,
    EditExternal,
    Reject,
    Skip,
    All,
}

/// What the pending-code pane is doing.
pub enum PaneMode {
    /// Showing the code.
    Code,
    /// Editing the block in place.
    Editing(Box<TextArea<'static>>),
    /// Showing the diff of an edit before it is sent.
    DiffConfirm {
        /// The edited code.
        code: String,
        /// First diff line shown.
        scroll: usize,
    },
    /// Typing a rejection reason.
    Reason(Box<TextArea<'static>>),
    /// Showing every block `a` would approve, in full, before it is sent.
    ConfirmAll {
        /// First line shown.
        scroll: usize,
        /// Every line has been on screen (set when drawn): only then does `y` approve.
        seen_all: bool,
    },
}

/// Choices of a pause dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PauseInput {
    /// Choosing.
    Choose,
    /// Typing the amount to raise the budget by.
    Raise(String),
}

/// A dialog over the screen.
pub enum Modal {
    /// The keys.
    Help {
        /// Scroll.
        scroll: usize,
    },
    /// The session paused: continue, raise the budget, stop or write.
    Pause(PauseInput),
    /// Manual selection: who speaks next.
    Picker {
        /// Selected row.
        selected: usize,
    },
    /// Quit while something runs?
    QuitConfirm,
    /// Active auto-approval rules.
    Rules {
        /// Selected row.
        selected: usize,
    },
    /// Files changed in this session.
    Workspace {
        /// Selected row.
        selected: usize,
    },
    /// One workspace file: as it is now, or its diff against the session's start.
    File {
        /// Path shown (relative to the workspace).
        path: String,
        /// How the session changed it, as the list said.
        mark: Option<crate::tui::model::FileMark>,
        /// What was read; `None` while loading (off the UI task).
        view: Option<crate::tui::files::FileView>,
        /// Which load this dialog waits for.
        seq: u64,
        /// Showing the diff (else the file).
        diff: bool,
        /// First line shown.
        scroll: usize,
        /// Row of the list it was opened from.
        from: usize,
    },
    /// Cost per model.
    Cost,
}

/// Something only the run loop can do.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Hand the terminal to `$VISUAL`/`$EDITOR` on this code.
    ExternalEdit {
        /// Approval id.
        id: u64,
        /// Block.
        block: usize,
        /// The agent's code.
        code: String,
        /// Its language (the file's suffix).
        language: String,
    },
    /// Read a workspace file now and at session start (blocking: off the UI task), then hand
    /// the result to [`App::file_loaded`].
    LoadFile {
        /// Which open of the file this is.
        seq: u64,
        /// Path relative to the workspace.
        path: String,
        /// Where to read it.
        files: crate::tui::files::WorkspaceFiles,
    },
}

/// Why the TUI ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The human quit.
    Quit,
}

/// Settings of the TUI.
pub struct AppConfig {
    /// Theme.
    pub theme: Theme,
    /// Keys.
    pub keymap: Keymap,
    /// Problems to show at the top of the transcript (config, resume warnings).
    pub notes: Vec<String>,
    /// Code highlighting.
    pub highlighter: Highlighter,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// The session's workspace on this machine and its start state (the `f` pane reads files
    /// and diffs from it); `None` when the workspace is elsewhere.
    pub workspace: Option<crate::tui::files::WorkspaceFiles>,
}

/// Code of the block in the pane, made visible, with its highlighting key.
pub struct PaneCode {
    /// (approval id, block).
    pub key: (u64, usize),
    /// Lines as the interpreter sees them, made visible as they are drawn (shared with the
    /// highlighter, which splits them itself).
    pub lines: Arc<CodeLines>,
    /// Hidden characters shown as markers.
    pub hidden: usize,
    /// Highlighter key.
    pub hl_key: Option<u64>,
}

/// The TUI's whole state.
pub struct App {
    /// The session as events told it.
    pub view: SessionView,
    /// Transcript layout and scroll.
    pub transcript: Transcript,
    /// Roles.
    pub theme: Theme,
    /// Keys.
    pub keymap: Keymap,
    /// Code colours.
    pub highlighter: Highlighter,
    clock: Arc<dyn Clock>,
    /// Pane with the keyboard.
    pub focus: Focus,
    /// The message composer.
    pub composer: TextArea<'static>,
    /// A dialog, if one is open.
    pub modal: Option<Modal>,
    /// What the pending-code pane shows.
    pub pane: PaneMode,
    /// Code of the pane's block.
    pub pane_code: Option<PaneCode>,
    /// First code line shown in the pane.
    pub code_scroll: usize,
    /// The pane fills the main area.
    pub fullscreen: bool,
    /// The block shown and when it appeared (the decision guard).
    shown: Option<((u64, usize), Instant)>,
    /// Decisions sent and not yet resolved: (id, block) → what was sent.
    pub sent: HashMap<(u64, usize), String>,
    /// Rules whose revocation was sent.
    pub revoking: Vec<PolicyRule>,
    outbox: Vec<Op>,
    ops_sent: u64,
    /// What the engine waits for (fresh waits only).
    pub engine_waits: Option<WaitingOn>,
    /// A pause dialog choice was sent; the dialog stays closed until a new wait.
    pause_answered: bool,
    /// The raise amount is still the suggestion (the first digit typed replaces it).
    raise_suggested: bool,
    /// Outputs and reports shown whole.
    pub expand: bool,
    /// A search being typed.
    pub search_input: Option<TextArea<'static>>,
    /// A short message in the status bar, and when it goes.
    pub flash: Option<(String, Instant)>,
    /// Notes shown at the top of the transcript.
    pub notes: Vec<String>,
    requests: Vec<Request>,
    /// Selected agent in the roster.
    pub roster_selected: usize,
    /// The workspace on the host and its start state.
    pub workspace: Option<crate::tui::files::WorkspaceFiles>,
    /// Loads of workspace files asked for (the newest is the one shown).
    file_seq: u64,
    /// Rows of the open workspace file's view at the last frame (paging).
    pub file_rows: usize,
    /// Set when the TUI should end.
    pub exit: Option<Exit>,
    /// Height of the pane's code view at the last frame (paging).
    pub code_rows: usize,
}

fn text_area(lines: Vec<String>) -> TextArea<'static> {
    let mut t = TextArea::new(lines);
    t.set_cursor_line_style(ratatui::style::Style::new());
    // Everything typed stays in view: long lines wrap instead of scrolling sideways.
    t.set_wrap_mode(ratatui_textarea::WrapMode::WordOrGlyph);
    t
}

fn area_text(t: &TextArea<'_>) -> String {
    t.lines().join("\n")
}

impl App {
    /// A TUI with no session yet.
    pub fn new(cfg: AppConfig) -> App {
        let mut composer = text_area(Vec::new());
        composer.set_placeholder_text("message to everyone · @agent private note");
        composer.set_placeholder_style(cfg.theme.muted());
        App {
            view: SessionView::new(),
            transcript: Transcript::default(),
            theme: cfg.theme,
            keymap: cfg.keymap,
            highlighter: cfg.highlighter,
            clock: cfg.clock,
            focus: Focus::Transcript,
            composer,
            modal: None,
            pane: PaneMode::Code,
            pane_code: None,
            code_scroll: 0,
            fullscreen: false,
            shown: None,
            sent: HashMap::new(),
            revoking: Vec::new(),
            outbox: Vec::new(),
            ops_sent: 0,
            engine_waits: None,
            pause_answered: false,
            raise_suggested: false,
            expand: false,
            search_input: None,
            flash: None,
            notes: cfg.notes,
            requests: Vec::new(),
            roster_selected: 0,
            workspace: cfg.workspace,
            file_seq: 0,
            file_rows: 20,
            exit: None,
            code_rows: 10,
        }
    }

    /// Monotonic now.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Wall time in ms.
    pub fn wall_ms(&self) -> u64 {
        self.clock.wall_ms()
    }

    /// Ops to send to the engine (taken).
    pub fn take_ops(&mut self) -> Vec<Op> {
        std::mem::take(&mut self.outbox)
    }

    /// Requests for the run loop (taken).
    pub fn take_requests(&mut self) -> Vec<Request> {
        std::mem::take(&mut self.requests)
    }

    fn send(&mut self, op: Op) {
        self.ops_sent += 1;
        self.engine_waits = None;
        self.outbox.push(op);
    }

    fn say(&mut self, text: impl Into<String>) {
        self.flash = Some((text.into(), self.now() + Duration::from_secs(4)));
    }

    /// A context for laying out cells.
    pub fn cell_context(&self) -> CellContext<'_> {
        CellContext {
            theme: &self.theme,
            highlighter: &self.highlighter,
            view: &self.view,
            expand: self.expand,
        }
    }

    /// Folds one engine event and updates what depends on it (focus, dialogs, the guard).
    pub fn on_event(&mut self, ev: &Event) {
        self.on_event_owned(ev.clone());
    }

    /// Like [`App::on_event`], keeping the event's text without copying it (the run loop).
    pub fn on_event_owned(&mut self, ev: Event) {
        let _busy = self.highlighter.screen_busy();
        // What the app itself keeps first: the view then takes the event's text.
        match &ev.kind {
            // A wait announced before the engine read our last op is already answered.
            EventKind::Waiting { on, ops_handled } if *ops_handled >= self.ops_sent => {
                self.engine_waits = Some(*on);
                self.pause_answered = false;
                // The engine has handled every op we sent: a decision or revocation still
                // shown as "sent…" was refused (its error is in the transcript); ask again.
                self.sent.clear();
                self.revoking.clear();
            }
            EventKind::ApprovalResolved { id, block, .. } => {
                self.sent.remove(&(*id, *block));
            }
            EventKind::PolicyRevoked { rule } => self.revoking.retain(|r| r != rule),
            EventKind::Resumed {} | EventKind::Terminated { .. } => {
                if matches!(self.modal, Some(Modal::Pause(_))) {
                    self.modal = None;
                }
                if matches!(ev.kind, EventKind::Terminated { .. }) {
                    self.engine_waits = None;
                    if matches!(self.modal, Some(Modal::Picker { .. })) {
                        self.modal = None;
                    }
                }
            }
            EventKind::SpeakerSelected { .. } => {
                if matches!(self.modal, Some(Modal::Picker { .. })) {
                    self.modal = None;
                }
            }
            // A stale wait, and everything the fold alone shows.
            EventKind::Waiting { .. }
            | EventKind::SessionStarted { .. }
            | EventKind::SpeakerRequested { .. }
            | EventKind::AgentStatus { .. }
            | EventKind::MessageDelta { .. }
            | EventKind::Message { .. }
            | EventKind::Usage { .. }
            | EventKind::ApprovalRequested { .. }
            | EventKind::PolicyAdded { .. }
            | EventKind::ModeChanged { .. }
            | EventKind::SpeakerPinned { .. }
            | EventKind::AgentMuted { .. }
            | EventKind::ImagePull { .. }
            | EventKind::ExecutionStarted { .. }
            | EventKind::ExecutionOutput { .. }
            | EventKind::ExecutionFinished { .. }
            | EventKind::WorkspaceChanged { .. }
            | EventKind::WorkspaceAttached { .. }
            | EventKind::BudgetWarning { .. }
            | EventKind::BudgetChanged { .. }
            | EventKind::Notice { .. }
            | EventKind::Paused { .. }
            | EventKind::Error { .. } => {}
        }
        self.view.apply_owned(ev);
        self.after_change();
    }

    /// The transcript lines for a viewport of `height` rows.
    pub fn visible_transcript(
        &mut self,
        height: usize,
        now_ms: u64,
    ) -> Vec<ratatui::text::Line<'static>> {
        let ctx = CellContext {
            theme: &self.theme,
            highlighter: &self.highlighter,
            view: &self.view,
            expand: self.expand,
        };
        self.transcript.visible(height, &ctx, now_ms)
    }

    /// Syncs the transcript with changed cells (before a frame).
    pub fn sync_transcript(&mut self) {
        let touched = self.view.take_touched();
        self.transcript.sync(&self.view, &touched);
    }

    /// The block the pane decides now: the first of the open approval that is neither resolved
    /// nor sent.
    pub fn current_block(&self) -> Option<(u64, usize)> {
        let a = self.view.open_approval()?;
        a.decided
            .iter()
            .enumerate()
            .find(|(i, d)| d.is_none() && !self.sent.contains_key(&(a.id, *i)))
            .map(|(i, _)| (a.id, i))
    }

    /// Focus, dialogs and the guard after anything changed.
    fn after_change(&mut self) {
        let current = self.current_block();
        if current != self.shown.map(|(k, _)| k) {
            self.shown = current.map(|k| (k, self.now()));
            self.code_scroll = 0;
            if !matches!(self.pane, PaneMode::Code) {
                self.pane = PaneMode::Code;
            }
            if current.is_some() {
                // Focus goes to the new block, but never away from the composer (empty or not):
                // what someone types there must never land on a decision key. The status bar
                // says "approval pending — Tab".
                if self.focus != Focus::Composer && self.search_input.is_none() {
                    self.focus = Focus::Approval;
                }
            }
        }
        if current.is_none() {
            self.fullscreen = false;
        }
        if self.view.open_approval().is_none() && self.focus == Focus::Approval {
            self.focus = Focus::Transcript;
        }
        self.refresh_pane_code();
        // Dialogs the engine asks for, on fresh waits only.
        if self.modal.is_none() && !self.pause_answered {
            match self.engine_waits {
                Some(WaitingOn::Continue) if self.view.paused.is_some() => {
                    self.modal = Some(Modal::Pause(PauseInput::Choose));
                }
                Some(WaitingOn::Speaker) if self.view.speaker_requested.is_some() => {
                    self.modal = Some(Modal::Picker { selected: 0 });
                }
                Some(WaitingOn::Message) if self.focus != Focus::Approval => {
                    self.focus = Focus::Composer;
                }
                _ => {}
            }
        }
    }

    fn refresh_pane_code(&mut self) {
        let Some(a) = self.view.open_approval() else {
            self.pane_code = None;
            return;
        };
        // The block shown: the current one, else the last sent one (shown as "sent…").
        let idx = self
            .current_block()
            .map(|(_, i)| i)
            .unwrap_or_else(|| a.blocks.len().saturating_sub(1));
        let key = (a.id, idx);
        if self.pane_code.as_ref().is_some_and(|p| p.key == key) {
            return;
        }
        let Some(b) = a.blocks.get(idx) else {
            self.pane_code = None;
            return;
        };
        // Where the lines are, not the lines: a 10,000-line block costs the UI task one pass.
        let lines = Arc::new(CodeLines::shared(b.code.clone(), &b.language));
        let hidden = lines.hidden();
        let hl_key = self.highlighter.code_key();
        self.pane_code = Some(PaneCode {
            key,
            hidden,
            lines,
            hl_key,
        });
    }

    /// A bracketed paste: text goes into the field being typed in, and nowhere else. A paste
    /// never decides anything.
    pub fn on_paste(&mut self, text: &str) {
        if let Some(s) = &mut self.search_input {
            s.insert_str(text.replace(['\n', '\r'], " "));
            return;
        }
        if let Some(Modal::Pause(PauseInput::Raise(amount))) = &mut self.modal {
            amount.push_str(text.trim());
            return;
        }
        if self.modal.is_some() {
            self.say("paste ignored: close the dialog first");
            return;
        }
        if self.focus == Focus::Approval {
            match &mut self.pane {
                PaneMode::Editing(t) => {
                    t.insert_str(text);
                }
                PaneMode::Reason(t) => {
                    t.insert_str(text.replace(['\n', '\r'], " "));
                }
                PaneMode::Code | PaneMode::DiffConfirm { .. } | PaneMode::ConfirmAll { .. } => {
                    self.say("paste ignored: a paste never decides a block (Tab to the composer to paste there)");
                }
            }
            return;
        }
        if self.focus != Focus::Composer {
            self.focus = Focus::Composer;
        }
        self.composer.insert_str(text);
    }

    /// Scope of the focused pane in the keymap.
    pub fn scope(&self) -> Scope {
        match self.focus {
            Focus::Transcript => Scope::Transcript,
            Focus::Approval => Scope::Approval,
            Focus::Roster => Scope::Roster,
            Focus::Composer => Scope::Global,
        }
    }

    /// A key from the terminal.
    pub fn on_key(&mut self, key: KeyEvent) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        let ctrl_c =
            key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
        if self.modal.is_some() {
            self.modal_key(key);
            return;
        }
        if self.search_input.is_some() {
            self.search_key(key);
            return;
        }
        if self.focus == Focus::Approval && !matches!(self.pane, PaneMode::Code) {
            self.pane_input_key(key);
            return;
        }
        if self.focus == Focus::Composer {
            if self.composer_key(key) {
                return;
            }
        } else if self.focus == Focus::Approval && key.code == KeyCode::Enter {
            self.say(format!(
                "Enter does not decide: {} approves, {} rejects ({} shows every key)",
                self.keymap.describe(Action::Approve),
                self.keymap.describe(Action::Reject),
                self.keymap.describe(Action::Help)
            ));
            return;
        }
        let Some(action) = self.keymap.action(self.scope(), &key) else {
            if ctrl_c {
                self.quit();
            }
            return;
        };
        self.act(action);
    }

    /// Keys typed into the composer; false when the key is left to the keymap.
    fn composer_key(&mut self, key: KeyEvent) -> bool {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        let empty = area_text(&self.composer).is_empty();
        match key.code {
            KeyCode::Enter if alt || key.modifiers.contains(KeyModifiers::SHIFT) => {
                self.composer.insert_newline();
            }
            KeyCode::Char('j') if ctrl => self.composer.insert_newline(),
            KeyCode::Enter => self.submit_composer(),
            KeyCode::Esc => self.focus = Focus::Transcript,
            KeyCode::Tab | KeyCode::BackTab => return false,
            KeyCode::Char('c') if ctrl => {
                if empty {
                    return false;
                }
                self.composer = {
                    let mut t = text_area(Vec::new());
                    t.set_placeholder_text("message to everyone · @agent private note");
                    t.set_placeholder_style(self.theme.muted());
                    t
                };
            }
            KeyCode::Up | KeyCode::Down | KeyCode::PageUp | KeyCode::PageDown
                if self.composer.lines().len() <= 1 =>
            {
                // The mouse wheel arrives as arrows: scroll the transcript.
                let ctx_delta = match key.code {
                    KeyCode::Up => -1,
                    KeyCode::Down => 1,
                    KeyCode::PageUp => -10,
                    _ => 10,
                };
                self.scroll_transcript(ctx_delta);
            }
            _ => {
                self.composer.input(key);
            }
        }
        true
    }

    fn submit_composer(&mut self) {
        let text = area_text(&self.composer);
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        let op = if let Some(rest) = text.strip_prefix('@') {
            let (to, body) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            if !self.view.is_agent(to) {
                let names: Vec<&str> = self.view.agents.iter().map(|a| a.name.as_str()).collect();
                self.say(format!(
                    "no agent named {to:?}: use one of {}",
                    names.join(", ")
                ));
                return;
            }
            if body.trim().is_empty() {
                self.say("a private note is `@agent text`");
                return;
            }
            Op::UserMessage {
                text: body.trim().to_string(),
                to: Some(to.to_string()),
            }
        } else {
            Op::UserMessage {
                text: text.to_string(),
                to: None,
            }
        };
        self.send(op);
        let mut t = text_area(Vec::new());
        t.set_placeholder_text("message to everyone · @agent private note");
        t.set_placeholder_style(self.theme.muted());
        self.composer = t;
        // A message answers a loop or auto-replies pause; the dialog's job is done.
        self.pause_answered = true;
    }

    fn scroll_transcript(&mut self, delta: i64) {
        let ctx = CellContext {
            theme: &self.theme,
            highlighter: &self.highlighter,
            view: &self.view,
            expand: self.expand,
        };
        self.transcript.scroll_by(delta, &ctx);
    }

    fn quit(&mut self) {
        if self.view.busy() && self.view.terminated.is_none() {
            self.modal = Some(Modal::QuitConfirm);
        } else {
            self.exit = Some(Exit::Quit);
        }
    }

    fn cycle_focus(&mut self, forward: bool) {
        let mut order = vec![Focus::Transcript];
        if self.view.open_approval().is_some() {
            order.push(Focus::Approval);
        }
        order.push(Focus::Roster);
        order.push(Focus::Composer);
        let pos = order.iter().position(|f| *f == self.focus).unwrap_or(0);
        let n = order.len();
        self.focus = order[if forward {
            (pos + 1) % n
        } else {
            (pos + n - 1) % n
        }];
    }

    /// Runs a keymap action.
    pub fn act(&mut self, action: Action) {
        match action {
            Action::Approve => self.decide(DecisionKey::Approve),
            Action::ApproveAlwaysCode => self.decide(DecisionKey::AlwaysCode),
            Action::ApproveAlwaysLanguage => self.decide(DecisionKey::AlwaysLanguage),
            Action::ApproveWithNetwork => self.decide(DecisionKey::WithNetwork),
            Action::EditInPlace => self.decide(DecisionKey::EditInPlace),
            Action::EditExternal => self.decide(DecisionKey::EditExternal),
            Action::Reject => self.decide(DecisionKey::Reject),
            Action::Skip => self.decide(DecisionKey::Skip),
            Action::ApproveAll => self.decide(DecisionKey::All),
            Action::FullScreenCode => {
                if self.view.open_approval().is_some() {
                    self.fullscreen = !self.fullscreen;
                }
            }
            Action::Workspace => self.modal = Some(Modal::Workspace { selected: 0 }),
            Action::Rules => self.modal = Some(Modal::Rules { selected: 0 }),
            Action::CostBreakdown => self.modal = Some(Modal::Cost),
            Action::Help => self.modal = Some(Modal::Help { scroll: 0 }),
            Action::Interrupt => {
                if self.view.busy() {
                    self.send(Op::Interrupt);
                    self.say("interrupting…");
                } else {
                    self.say("nothing to interrupt");
                }
            }
            Action::Pause => {
                if self.view.paused.is_some() {
                    if self.engine_waits == Some(WaitingOn::Continue) {
                        self.pause_answered = false;
                        self.modal = Some(Modal::Pause(PauseInput::Choose));
                    }
                } else if self.view.terminated.is_none() {
                    self.send(Op::Pause);
                    self.say("pausing at the next safe point…");
                }
            }
            Action::Quit => self.quit(),
            Action::FocusNext => self.cycle_focus(true),
            Action::FocusPrev => self.cycle_focus(false),
            Action::Compose => self.focus = Focus::Composer,
            Action::ScrollUp => self.navigate(Nav::Up),
            Action::ScrollDown => self.navigate(Nav::Down),
            Action::PageUp => self.navigate(Nav::PageUp),
            Action::PageDown => self.navigate(Nav::PageDown),
            Action::Top => self.navigate(Nav::Top),
            Action::Bottom => self.navigate(Nav::Bottom),
            Action::Search => {
                let mut t = text_area(Vec::new());
                t.set_placeholder_text("search the transcript");
                self.search_input = Some(t);
            }
            Action::SearchNext | Action::SearchPrev => {
                let Some(q) = self.transcript.query().map(str::to_string) else {
                    self.say(format!(
                        "no search yet: {} starts one",
                        self.keymap.describe(Action::Search)
                    ));
                    return;
                };
                let ctx = CellContext {
                    theme: &self.theme,
                    highlighter: &self.highlighter,
                    view: &self.view,
                    expand: self.expand,
                };
                if !self
                    .transcript
                    .search(&q, action == Action::SearchNext, &ctx)
                {
                    self.say(format!("{q:?} not found"));
                }
            }
            Action::ToggleOutputs => {
                self.expand = !self.expand;
                self.transcript.restyle();
            }
            Action::PinSpeaker => self.roster_action(RosterKey::Pin),
            Action::Mute => self.roster_action(RosterKey::Mute),
            Action::PrivateNote => self.roster_action(RosterKey::Note),
            // Acts only in an open workspace file (`modal_key`).
            Action::ToggleDiff => {}
        }
    }

    fn navigate(&mut self, nav: Nav) {
        match self.focus {
            Focus::Approval => {
                let n = self.pane_code.as_ref().map_or(0, |p| p.lines.len());
                let page = self.code_rows.saturating_sub(1).max(1);
                let max = n.saturating_sub(self.code_rows.max(1));
                self.code_scroll = match nav {
                    Nav::Up => self.code_scroll.saturating_sub(1),
                    Nav::Down => (self.code_scroll + 1).min(max),
                    Nav::PageUp => self.code_scroll.saturating_sub(page),
                    Nav::PageDown => (self.code_scroll + page).min(max),
                    Nav::Top => 0,
                    Nav::Bottom => max,
                };
            }
            Focus::Roster => {
                let n = self.view.agents.len();
                if n == 0 {
                    return;
                }
                self.roster_selected = match nav {
                    Nav::Up | Nav::PageUp => self.roster_selected.saturating_sub(1),
                    Nav::Top => 0,
                    Nav::Bottom => n - 1,
                    Nav::Down | Nav::PageDown => (self.roster_selected + 1).min(n - 1),
                };
            }
            Focus::Transcript | Focus::Composer => {
                let ctx = CellContext {
                    theme: &self.theme,
                    highlighter: &self.highlighter,
                    view: &self.view,
                    expand: self.expand,
                };
                match nav {
                    Nav::Up => self.transcript.scroll_by(-1, &ctx),
                    Nav::Down => self.transcript.scroll_by(1, &ctx),
                    Nav::PageUp => self.transcript.page(false, &ctx),
                    Nav::PageDown => self.transcript.page(true, &ctx),
                    Nav::Top => self.transcript.top(),
                    Nav::Bottom => self.transcript.bottom(),
                }
            }
        }
    }

    fn roster_action(&mut self, key: RosterKey) {
        let Some(agent) = self.view.agents.get(self.roster_selected).cloned() else {
            return;
        };
        match key {
            RosterKey::Pin => {
                self.send(Op::PinNextSpeaker {
                    agent: agent.name.clone(),
                });
                self.say(format!("{} speaks next (sent…)", agent.name));
            }
            RosterKey::Mute => {
                self.send(Op::Mute {
                    agent: agent.name.clone(),
                    muted: !agent.muted,
                });
                self.say(format!(
                    "{} {} (sent…)",
                    agent.name,
                    if agent.muted { "unmuted" } else { "muted" }
                ));
            }
            RosterKey::Note => {
                self.composer = text_area(vec![format!("@{} ", agent.name)]);
                self.composer.move_cursor(ratatui_textarea::CursorMove::End);
                self.focus = Focus::Composer;
            }
        }
    }

    /// A decision key on the pane's block (only while the pane has focus).
    fn decide(&mut self, action: DecisionKey) {
        if self.focus != Focus::Approval {
            return;
        }
        let Some((id, block)) = self.current_block() else {
            if self.view.open_approval().is_some() {
                self.say("sent… waiting for the engine");
            }
            return;
        };
        if let Some((k, at)) = self.shown
            && k == (id, block)
            && self.now().saturating_duration_since(at) < APPROVAL_GUARD
        {
            self.say("key ignored: this block just appeared — look, then press again");
            return;
        }
        let Some(approval) = self.view.open_approval() else {
            return;
        };
        let agent = approval.agent.clone();
        let Some(b) = approval.blocks.get(block).cloned() else {
            return;
        };
        let resolve = |decision: Decision, remember: Option<PolicyRule>, allow_network: bool| {
            Op::ResolveApproval {
                id,
                block,
                decision,
                remember,
                allow_network,
            }
        };
        match action {
            DecisionKey::Approve => {
                self.send_decision(resolve(Decision::Approve, None, false), "approve")
            }
            DecisionKey::AlwaysCode => self.send_decision(
                resolve(
                    Decision::Approve,
                    Some(PolicyRule::CodeSession {
                        hash: code_hash(&b.code),
                    }),
                    false,
                ),
                "approve, always this code",
            ),
            DecisionKey::AlwaysLanguage => self.send_decision(
                resolve(
                    Decision::Approve,
                    Some(PolicyRule::LanguageAgent {
                        language: b.language.clone(),
                        agent,
                    }),
                    false,
                ),
                "approve, always this language",
            ),
            DecisionKey::WithNetwork => self.send_decision(
                resolve(Decision::Approve, None, true),
                "approve with network",
            ),
            DecisionKey::Skip => self.send_decision(resolve(Decision::Skip, None, false), "skip"),
            DecisionKey::All => {
                if self.undecided_blocks(id).len() > 1 {
                    // Blocks beyond the one shown are approved only after they were shown.
                    self.pane = PaneMode::ConfirmAll {
                        scroll: 0,
                        seen_all: false,
                    };
                } else {
                    self.approve_all(id);
                }
            }
            DecisionKey::Reject => {
                let mut t = text_area(Vec::new());
                t.set_placeholder_text("why? (the agent reads this)");
                t.set_placeholder_style(self.theme.muted());
                self.pane = PaneMode::Reason(Box::new(t));
            }
            DecisionKey::EditInPlace => {
                if hidden_count(&b.code) > 0 {
                    self.say(format!(
                        "this block holds hidden characters; edit it in $EDITOR ({}) or reject it",
                        self.keymap.describe(Action::EditExternal)
                    ));
                    return;
                }
                let lines: Vec<String> = b.code.split('\n').map(str::to_string).collect();
                let mut t = text_area(lines);
                t.set_line_number_style(self.theme.muted());
                self.pane = PaneMode::Editing(Box::new(t));
            }
            DecisionKey::EditExternal => self.requests.push(Request::ExternalEdit {
                id,
                block,
                code: b.code.to_string(),
                language: b.language.clone(),
            }),
        }
    }

    fn send_decision(&mut self, op: Op, what: &str) {
        if let Op::ResolveApproval { id, block, .. } = &op {
            self.sent.insert((*id, *block), what.to_string());
        }
        self.send(op);
        self.pane = PaneMode::Code;
        self.after_change();
    }

    /// The run loop's answer to `Request::ExternalEdit`: the edited code, or why there is none.
    pub fn external_edit_done(&mut self, id: u64, block: usize, result: Result<String, String>) {
        if self.current_block() != Some((id, block)) {
            return;
        }
        match result {
            Ok(code) => {
                self.focus = Focus::Approval;
                self.pane = PaneMode::DiffConfirm { code, scroll: 0 };
            }
            Err(e) => self.say(e),
        }
    }

    /// The blocks of approval `id` that are neither decided nor sent.
    pub fn undecided_blocks(&self, id: u64) -> Vec<usize> {
        self.view
            .open_approval()
            .filter(|a| a.id == id)
            .map(|a| {
                a.decided
                    .iter()
                    .enumerate()
                    .filter(|(i, d)| d.is_none() && !self.sent.contains_key(&(id, *i)))
                    .map(|(i, _)| i)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn approve_all(&mut self, id: u64) {
        for i in self.undecided_blocks(id) {
            self.sent.insert((id, i), "approve (all)".into());
        }
        self.pane = PaneMode::Code;
        self.send(Op::ApproveAll { id });
        self.after_change();
    }

    /// Keys while the pane edits, confirms a diff or takes a reason.
    fn pane_input_key(&mut self, key: KeyEvent) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let Some((id, block)) = self.current_block() else {
            self.pane = PaneMode::Code;
            return;
        };
        match &mut self.pane {
            PaneMode::Code => {}
            PaneMode::ConfirmAll { scroll, seen_all } => match key.code {
                KeyCode::Down | KeyCode::Char('j') => *scroll += 1,
                KeyCode::Up | KeyCode::Char('k') => *scroll = scroll.saturating_sub(1),
                KeyCode::PageDown => *scroll += self.code_rows.max(2) - 1,
                KeyCode::PageUp => *scroll = scroll.saturating_sub(self.code_rows.max(2) - 1),
                KeyCode::Char('y') if !ctrl && *seen_all => self.approve_all(id),
                KeyCode::Char('y') if !ctrl => {
                    self.say("scroll to the last block first (j, PgDn): every block is approved only once shown")
                }
                KeyCode::Esc | KeyCode::Char('n') => {
                    self.pane = PaneMode::Code;
                    self.say("nothing approved; the blocks are undecided");
                }
                KeyCode::Char('c') if ctrl => self.pane = PaneMode::Code,
                _ => {}
            },
            PaneMode::Editing(t) => match key.code {
                KeyCode::Esc => {
                    self.pane = PaneMode::Code;
                    self.say("edit cancelled");
                }
                KeyCode::Char('c') if ctrl => {
                    self.pane = PaneMode::Code;
                    self.say("edit cancelled");
                }
                KeyCode::Char('s') if ctrl => {
                    let code = area_text(t);
                    self.pane = PaneMode::DiffConfirm { code, scroll: 0 };
                }
                _ => {
                    t.input(key);
                }
            },
            PaneMode::DiffConfirm { code, scroll } => match key.code {
                KeyCode::Down | KeyCode::Char('j') => *scroll += 1,
                KeyCode::Up | KeyCode::Char('k') => *scroll = scroll.saturating_sub(1),
                KeyCode::PageDown => *scroll += self.code_rows.max(2) - 1,
                KeyCode::PageUp => *scroll = scroll.saturating_sub(self.code_rows.max(2) - 1),
                KeyCode::Char('y') if !ctrl => {
                    let code = code.clone();
                    self.send_decision(
                        Op::ResolveApproval {
                            id,
                            block,
                            decision: Decision::Edit { code },
                            remember: None,
                            allow_network: false,
                        },
                        "run the edited code",
                    );
                }
                KeyCode::Char('e') if !ctrl => {
                    let lines: Vec<String> = code.split('\n').map(str::to_string).collect();
                    let mut t = text_area(lines);
                    t.set_line_number_style(self.theme.muted());
                    self.pane = PaneMode::Editing(Box::new(t));
                }
                KeyCode::Esc | KeyCode::Char('n') => {
                    self.pane = PaneMode::Code;
                    self.say("edit dropped; the block is undecided");
                }
                KeyCode::Char('c') if ctrl => {
                    self.pane = PaneMode::Code;
                    self.say("edit dropped; the block is undecided");
                }
                _ => {}
            },
            PaneMode::Reason(t) => match key.code {
                KeyCode::Esc => self.pane = PaneMode::Code,
                KeyCode::Char('c') if ctrl => self.pane = PaneMode::Code,
                KeyCode::Enter => {
                    let reason = area_text(t).trim().to_string();
                    self.send_decision(
                        Op::ResolveApproval {
                            id,
                            block,
                            decision: Decision::Reject { reason },
                            remember: None,
                            allow_network: false,
                        },
                        "reject",
                    );
                }
                _ => {
                    t.input(key);
                }
            },
        }
    }

    fn search_key(&mut self, key: KeyEvent) {
        let Some(t) = &mut self.search_input else {
            return;
        };
        match key.code {
            KeyCode::Esc => {
                self.search_input = None;
                self.transcript.clear_search();
            }
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                self.search_input = None;
                self.transcript.clear_search();
            }
            KeyCode::Enter => {
                let q = area_text(t);
                self.search_input = None;
                let ctx = CellContext {
                    theme: &self.theme,
                    highlighter: &self.highlighter,
                    view: &self.view,
                    expand: self.expand,
                };
                if !self.transcript.search(&q, true, &ctx) && !q.is_empty() {
                    self.say(format!("{q:?} not found"));
                }
            }
            _ => {
                t.input(key);
            }
        }
    }

    /// The raise suggested in the budget dialog: half the cap, at least a dollar.
    pub fn suggested_raise(&self) -> f64 {
        self.view.budget_usd.map_or(1.0, |c| (c * 0.5).max(1.0))
    }

    fn modal_key(&mut self, key: KeyEvent) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let Some(modal) = self.modal.take() else {
            return;
        };
        let close = matches!(key.code, KeyCode::Esc) || (ctrl && key.code == KeyCode::Char('c'));
        let up = matches!(key.code, KeyCode::Up | KeyCode::Char('k'));
        let down = matches!(key.code, KeyCode::Down | KeyCode::Char('j'));
        self.modal = match modal {
            Modal::Help { scroll } => {
                if close
                    || matches!(
                        key.code,
                        KeyCode::Char('?') | KeyCode::Char('q') | KeyCode::Enter
                    )
                {
                    None
                } else if up {
                    Some(Modal::Help {
                        scroll: scroll.saturating_sub(1),
                    })
                } else if down {
                    Some(Modal::Help { scroll: scroll + 1 })
                } else if key.code == KeyCode::PageDown {
                    Some(Modal::Help {
                        scroll: scroll + 10,
                    })
                } else if key.code == KeyCode::PageUp {
                    Some(Modal::Help {
                        scroll: scroll.saturating_sub(10),
                    })
                } else {
                    Some(Modal::Help { scroll })
                }
            }
            Modal::QuitConfirm => {
                if key.code == KeyCode::Char('y') && !ctrl {
                    self.exit = Some(Exit::Quit);
                }
                None
            }
            Modal::Cost => {
                if close
                    || matches!(
                        key.code,
                        KeyCode::Char('$') | KeyCode::Char('q') | KeyCode::Enter
                    )
                {
                    None
                } else {
                    Some(Modal::Cost)
                }
            }
            Modal::Rules { selected } => {
                let n = self.view.rules.len();
                if close || key.code == KeyCode::Char('q') {
                    None
                } else if up {
                    Some(Modal::Rules {
                        selected: selected.saturating_sub(1),
                    })
                } else if down {
                    Some(Modal::Rules {
                        selected: (selected + 1).min(n.saturating_sub(1)),
                    })
                } else if matches!(
                    key.code,
                    KeyCode::Char('d') | KeyCode::Char('x') | KeyCode::Delete
                ) {
                    if let Some(rule) = self.view.rules.get(selected).cloned()
                        && !self.revoking.contains(&rule)
                    {
                        self.revoking.push(rule.clone());
                        self.send(Op::RevokePolicy { rule });
                    }
                    Some(Modal::Rules { selected })
                } else {
                    Some(Modal::Rules { selected })
                }
            }
            Modal::Workspace { selected } => {
                let n = self.view.workspace.len();
                if close || key.code == KeyCode::Char('q') || key.code == KeyCode::Char('f') {
                    None
                } else if up {
                    Some(Modal::Workspace {
                        selected: selected.saturating_sub(1),
                    })
                } else if down {
                    Some(Modal::Workspace {
                        selected: (selected + 1).min(n.saturating_sub(1)),
                    })
                } else if key.code == KeyCode::Enter {
                    match self.view.workspace.iter().nth(selected) {
                        Some((path, mark)) => Some(self.open_file(path.clone(), *mark, selected)),
                        None => Some(Modal::Workspace { selected }),
                    }
                } else {
                    Some(Modal::Workspace { selected })
                }
            }
            Modal::File {
                path,
                mark,
                view,
                seq,
                diff,
                scroll,
                from,
            } => {
                let n = view.as_ref().map_or(0, |v| {
                    if diff {
                        v.diff.as_ref().map_or(0, Vec::len)
                    } else {
                        v.file.as_ref().map_or(0, |l| l.len())
                    }
                });
                let last = n.saturating_sub(1);
                if close || key.code == KeyCode::Char('q') {
                    Some(Modal::Workspace { selected: from })
                } else {
                    let page = self.file_rows.saturating_sub(1).max(1);
                    let (diff, scroll) = match self.keymap.action(Scope::Files, &key) {
                        Some(Action::ToggleDiff) => (!diff, 0),
                        Some(Action::ScrollUp) => (diff, scroll.saturating_sub(1)),
                        Some(Action::ScrollDown) => (diff, (scroll + 1).min(last)),
                        Some(Action::PageUp) => (diff, scroll.saturating_sub(page)),
                        Some(Action::PageDown) => (diff, (scroll + page).min(last)),
                        Some(Action::Top) => (diff, 0),
                        Some(Action::Bottom) => (diff, last),
                        _ => (diff, scroll),
                    };
                    Some(Modal::File {
                        path,
                        mark,
                        view,
                        seq,
                        diff,
                        scroll,
                        from,
                    })
                }
            }
            Modal::Picker { selected } => {
                let cands = self.view.speaker_requested.clone().unwrap_or_default();
                let n = cands.len();
                let pick = match key.code {
                    KeyCode::Enter => Some(selected),
                    KeyCode::Char(c) if c.is_ascii_digit() && c != '0' => {
                        Some(c as usize - '1' as usize)
                    }
                    _ => None,
                };
                if let Some(i) = pick.filter(|i| *i < n) {
                    self.send(Op::SelectSpeaker {
                        agent: cands[i].clone(),
                    });
                    self.pause_answered = true;
                    None
                } else if up {
                    Some(Modal::Picker {
                        selected: selected.saturating_sub(1),
                    })
                } else if down {
                    Some(Modal::Picker {
                        selected: (selected + 1).min(n.saturating_sub(1)),
                    })
                } else if key.code == KeyCode::Char('q') || (ctrl && key.code == KeyCode::Char('c'))
                {
                    self.modal = Some(Modal::Picker { selected });
                    self.quit();
                    return;
                } else if key.code == KeyCode::Char('?') {
                    Some(Modal::Help { scroll: 0 })
                } else {
                    Some(Modal::Picker { selected })
                }
            }
            Modal::Pause(input) => self.pause_key(key, input),
        };
    }

    fn pause_key(&mut self, key: KeyEvent, input: PauseInput) -> Option<Modal> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let kind = self.view.paused.as_ref().map(|p| p.kind);
        match input {
            PauseInput::Raise(mut amount) => match key.code {
                KeyCode::Esc => Some(Modal::Pause(PauseInput::Choose)),
                KeyCode::Enter => {
                    let Ok(x) = amount.trim().trim_start_matches('$').parse::<f64>() else {
                        self.say(format!("{amount:?} is not an amount of dollars"));
                        return Some(Modal::Pause(PauseInput::Raise(amount)));
                    };
                    if !(x.is_finite() && x > 0.0) {
                        self.say("raise the budget by a positive amount");
                        return Some(Modal::Pause(PauseInput::Raise(amount)));
                    }
                    let cap = self.view.budget_usd.unwrap_or(self.view.spend.usd) + x;
                    self.send(Op::SetBudget { usd: cap });
                    self.send(Op::Continue);
                    self.pause_answered = true;
                    None
                }
                KeyCode::Backspace => {
                    if std::mem::take(&mut self.raise_suggested) {
                        amount.clear();
                    } else {
                        amount.pop();
                    }
                    Some(Modal::Pause(PauseInput::Raise(amount)))
                }
                KeyCode::Char(c) if !ctrl && (c.is_ascii_digit() || c == '.') => {
                    if std::mem::take(&mut self.raise_suggested) {
                        amount.clear();
                    }
                    amount.push(c);
                    Some(Modal::Pause(PauseInput::Raise(amount)))
                }
                _ => Some(Modal::Pause(PauseInput::Raise(amount))),
            },
            PauseInput::Choose => match key.code {
                KeyCode::Char('c') if !ctrl => {
                    self.send(Op::Continue);
                    self.pause_answered = true;
                    None
                }
                KeyCode::Char('r') if kind == Some(PauseKind::Budget) => Some(Modal::Pause({
                    self.raise_suggested = true;
                    PauseInput::Raise(format!("{:.2}", self.suggested_raise()))
                })),
                KeyCode::Char('s') => {
                    self.send(Op::Stop { reason: None });
                    self.pause_answered = true;
                    None
                }
                KeyCode::Char('m') => {
                    self.focus = Focus::Composer;
                    self.pause_answered = true;
                    None
                }
                KeyCode::Esc => {
                    // Closed, not answered: the session stays paused (p opens this again).
                    self.pause_answered = true;
                    None
                }
                KeyCode::Char('q') => {
                    self.quit();
                    if self.exit.is_none() {
                        Some(Modal::Pause(PauseInput::Choose))
                    } else {
                        None
                    }
                }
                KeyCode::Char('c') if ctrl => {
                    self.quit();
                    None
                }
                KeyCode::Char('?') => Some(Modal::Help { scroll: 0 }),
                _ => Some(Modal::Pause(PauseInput::Choose)),
            },
        }
    }

    /// Opens a file of the `f` pane: "loading…" until the run loop hands back what it read.
    fn open_file(&mut self, path: String, mark: crate::tui::model::FileMark, from: usize) -> Modal {
        self.file_seq += 1;
        let view = match &self.workspace {
            Some(files) => {
                self.requests.push(Request::LoadFile {
                    seq: self.file_seq,
                    path: path.clone(),
                    files: files.clone(),
                });
                None
            }
            None => {
                let why = "the workspace is not on this machine".to_string();
                Some(crate::tui::files::FileView {
                    language: String::new(),
                    file: Err(why.clone()),
                    file_note: None,
                    file_is_start: false,
                    diff: Err(why),
                    hl_key: None,
                })
            }
        };
        Modal::File {
            path,
            mark: Some(mark),
            view,
            seq: self.file_seq,
            diff: false,
            scroll: 0,
            from,
        }
    }

    /// The run loop's answer to `Request::LoadFile`: shown if that file is still open (a later
    /// open or a closed dialog drops it).
    pub fn file_loaded(&mut self, seq: u64, mut loaded: crate::tui::files::FileView) {
        if let Some(Modal::File {
            seq: open, view, ..
        }) = &mut self.modal
            && *open == seq
        {
            if let Ok(lines) = &loaded.file {
                loaded.hl_key = self.highlighter.key_for(lines, &loaded.language);
            }
            *view = Some(loaded);
        }
    }

    /// What the status bar says about the state of things (the waiting approval, a pull).
    pub fn rules_text(&self) -> Vec<String> {
        self.view
            .rules
            .iter()
            .map(crate::store::export::rule_text)
            .collect()
    }

    /// Per-model spend rows for the cost dialog.
    pub fn model_rows(&self) -> BTreeMap<String, crate::tui::model::Spend> {
        self.view.spend_by_model.clone()
    }

    /// Drops an expired flash; true when one was dropped (redraw).
    pub fn expire_flash(&mut self) -> bool {
        if self
            .flash
            .as_ref()
            .is_some_and(|(_, until)| *until <= self.now())
        {
            self.flash = None;
            return true;
        }
        false
    }

    /// When the guard of the shown block ends (the status bar then stops saying "just appeared").
    pub fn guard_until(&self) -> Option<Instant> {
        self.shown.map(|(_, at)| at + APPROVAL_GUARD)
    }
}
