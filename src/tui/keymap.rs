//! Keys: every action the TUI takes from the keyboard, its default keys, where it acts, and the
//! `[keys]` overrides of config.toml (validated: an unknown action, a key that does not parse, a
//! clash or an unsafe binding is reported and that action keeps its defaults). The status bar's
//! hints and the `?` help are generated from the active map, so they never drift from the keys.

use std::collections::BTreeMap;
use std::fmt;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Where a key acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Anywhere outside a text field or dialog.
    Global,
    /// Moving around in the focused pane (transcript, code, roster, lists).
    Navigation,
    /// The pending-code pane, while it has focus.
    Approval,
    /// The transcript, while it has focus.
    Transcript,
    /// The roster, while it has focus.
    Roster,
    /// A workspace file opened from the `f` pane.
    Files,
}

impl Scope {
    /// Heading in the help.
    pub fn title(self) -> &'static str {
        match self {
            Scope::Global => "anywhere",
            Scope::Navigation => "moving around",
            Scope::Approval => "pending code (focused)",
            Scope::Transcript => "transcript (focused)",
            Scope::Roster => "roster (focused)",
            Scope::Files => "workspace file (f, then Enter)",
        }
    }
}

/// Everything a key can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Approve the block.
    Approve,
    /// Approve and always approve this exact code.
    ApproveAlwaysCode,
    /// Approve and always approve this language from this agent.
    ApproveAlwaysLanguage,
    /// Approve with network for this block.
    ApproveWithNetwork,
    /// Edit the block in place.
    EditInPlace,
    /// Edit the block in `$VISUAL`/`$EDITOR`.
    EditExternal,
    /// Reject the block with a reason.
    Reject,
    /// Skip the block.
    Skip,
    /// Approve every remaining block.
    ApproveAll,
    /// Code full screen.
    FullScreenCode,
    /// Workspace files.
    Workspace,
    /// Active auto-approval rules.
    Rules,
    /// Per-model cost breakdown.
    CostBreakdown,
    /// Interrupt the current call or block.
    Interrupt,
    /// Pause or continue.
    Pause,
    /// Help.
    Help,
    /// Quit.
    Quit,
    /// Next pane.
    FocusNext,
    /// Previous pane.
    FocusPrev,
    /// Write a message.
    Compose,
    /// Line up.
    ScrollUp,
    /// Line down.
    ScrollDown,
    /// Page up.
    PageUp,
    /// Page down.
    PageDown,
    /// Start.
    Top,
    /// End (and follow the tail).
    Bottom,
    /// Search the transcript.
    Search,
    /// Next match.
    SearchNext,
    /// Previous match.
    SearchPrev,
    /// Show outputs and reports whole, or folded.
    ToggleOutputs,
    /// Pin the selected agent to speak next.
    PinSpeaker,
    /// Mute or unmute the selected agent.
    Mute,
    /// A private note to the selected agent.
    PrivateNote,
    /// A workspace file: switch between the file now and its diff against the session's start.
    ToggleDiff,
}

/// What the map knows about an action.
pub struct ActionInfo {
    /// The action.
    pub action: Action,
    /// Its name in `[keys]`.
    pub name: &'static str,
    /// Where it acts.
    pub scope: Scope,
    /// Default keys.
    pub defaults: &'static [&'static str],
    /// Short label for the status bar.
    pub hint: &'static str,
    /// One line for the help.
    pub help: &'static str,
}

/// Every action, in help order.
pub const ACTIONS: &[ActionInfo] = &[
    ActionInfo {
        action: Action::Approve,
        name: "approve",
        scope: Scope::Approval,
        defaults: &["y"],
        hint: "approve",
        help: "approve this block",
    },
    ActionInfo {
        action: Action::Reject,
        name: "reject",
        scope: Scope::Approval,
        defaults: &["n"],
        hint: "reject",
        help: "reject this block with a reason (sent to the agent)",
    },
    ActionInfo {
        action: Action::EditInPlace,
        name: "edit",
        scope: Scope::Approval,
        defaults: &["e"],
        hint: "edit",
        help: "edit in place, then confirm the diff",
    },
    ActionInfo {
        action: Action::EditExternal,
        name: "edit_external",
        scope: Scope::Approval,
        defaults: &["E"],
        hint: "$EDITOR",
        help: "edit in $VISUAL/$EDITOR, then confirm the diff",
    },
    ActionInfo {
        action: Action::Skip,
        name: "skip",
        scope: Scope::Approval,
        defaults: &["s"],
        hint: "skip",
        help: "skip this block (not run, no reason)",
    },
    ActionInfo {
        action: Action::ApproveAll,
        name: "approve_all",
        scope: Scope::Approval,
        defaults: &["a"],
        hint: "all",
        help: "approve every remaining block of this approval",
    },
    ActionInfo {
        action: Action::ApproveAlwaysCode,
        name: "approve_always_code",
        scope: Scope::Approval,
        defaults: &["Y"],
        hint: "always this code",
        help: "approve, and always approve this exact code this session",
    },
    ActionInfo {
        action: Action::ApproveAlwaysLanguage,
        name: "approve_always_language",
        scope: Scope::Approval,
        defaults: &["L"],
        hint: "always lang",
        help: "approve, and always approve this language from this agent",
    },
    ActionInfo {
        action: Action::ApproveWithNetwork,
        name: "approve_with_network",
        scope: Scope::Approval,
        defaults: &["w"],
        hint: "with network",
        help: "approve with network access for this block only",
    },
    ActionInfo {
        action: Action::FullScreenCode,
        name: "fullscreen_code",
        scope: Scope::Approval,
        defaults: &["z"],
        hint: "full screen",
        help: "show the code full screen (again: back)",
    },
    ActionInfo {
        action: Action::Search,
        name: "search",
        scope: Scope::Transcript,
        defaults: &["/"],
        hint: "search",
        help: "search the transcript",
    },
    ActionInfo {
        action: Action::SearchNext,
        name: "search_next",
        scope: Scope::Transcript,
        defaults: &["n"],
        hint: "next",
        help: "next match",
    },
    ActionInfo {
        action: Action::SearchPrev,
        name: "search_prev",
        scope: Scope::Transcript,
        defaults: &["N"],
        hint: "prev",
        help: "previous match",
    },
    ActionInfo {
        action: Action::ToggleOutputs,
        name: "toggle_outputs",
        scope: Scope::Transcript,
        defaults: &["o"],
        hint: "outputs",
        help: "show outputs and reports whole, or folded (head and tail)",
    },
    ActionInfo {
        action: Action::PinSpeaker,
        name: "pin_speaker",
        scope: Scope::Roster,
        defaults: &["P"],
        hint: "pin next",
        help: "the selected agent speaks next",
    },
    ActionInfo {
        action: Action::Mute,
        name: "mute",
        scope: Scope::Roster,
        defaults: &["m"],
        hint: "mute",
        help: "mute or unmute the selected agent",
    },
    ActionInfo {
        action: Action::PrivateNote,
        name: "private_note",
        scope: Scope::Roster,
        defaults: &["@"],
        hint: "note",
        help: "write a private note to the selected agent",
    },
    ActionInfo {
        action: Action::ToggleDiff,
        name: "toggle_diff",
        scope: Scope::Files,
        defaults: &["d"],
        hint: "diff/file",
        help: "switch between the file now and its diff against the session's start",
    },
    ActionInfo {
        action: Action::ScrollUp,
        name: "scroll_up",
        scope: Scope::Navigation,
        defaults: &["k", "up"],
        hint: "up",
        help: "line up (the mouse wheel too)",
    },
    ActionInfo {
        action: Action::ScrollDown,
        name: "scroll_down",
        scope: Scope::Navigation,
        defaults: &["j", "down"],
        hint: "down",
        help: "line down (the mouse wheel too)",
    },
    ActionInfo {
        action: Action::PageUp,
        name: "page_up",
        scope: Scope::Navigation,
        defaults: &["pgup"],
        hint: "page up",
        help: "page up",
    },
    ActionInfo {
        action: Action::PageDown,
        name: "page_down",
        scope: Scope::Navigation,
        defaults: &["pgdn"],
        hint: "page down",
        help: "page down",
    },
    ActionInfo {
        action: Action::Top,
        name: "top",
        scope: Scope::Navigation,
        defaults: &["g", "home"],
        hint: "top",
        help: "go to the start",
    },
    ActionInfo {
        action: Action::Bottom,
        name: "bottom",
        scope: Scope::Navigation,
        defaults: &["G", "end"],
        hint: "end",
        help: "go to the end and follow new text",
    },
    ActionInfo {
        action: Action::FocusNext,
        name: "focus_next",
        scope: Scope::Global,
        defaults: &["tab"],
        hint: "pane",
        help: "next pane",
    },
    ActionInfo {
        action: Action::FocusPrev,
        name: "focus_prev",
        scope: Scope::Global,
        defaults: &["backtab"],
        hint: "prev pane",
        help: "previous pane",
    },
    ActionInfo {
        action: Action::Compose,
        name: "compose",
        scope: Scope::Global,
        defaults: &["i"],
        hint: "write",
        help: "write a message to everyone (`@agent text`: a private note)",
    },
    ActionInfo {
        action: Action::Interrupt,
        name: "interrupt",
        scope: Scope::Global,
        defaults: &["esc"],
        hint: "interrupt",
        help: "interrupt the current model call or running block",
    },
    ActionInfo {
        action: Action::Pause,
        name: "pause",
        scope: Scope::Global,
        defaults: &["p"],
        hint: "pause",
        help: "pause at the next safe point, or continue",
    },
    ActionInfo {
        action: Action::Workspace,
        name: "workspace",
        scope: Scope::Global,
        defaults: &["f"],
        hint: "files",
        help: "files this session changed in the workspace",
    },
    ActionInfo {
        action: Action::Rules,
        name: "rules",
        scope: Scope::Global,
        defaults: &["R"],
        hint: "rules",
        help: "active auto-approval rules (revoke one)",
    },
    ActionInfo {
        action: Action::CostBreakdown,
        name: "cost",
        scope: Scope::Global,
        defaults: &["$"],
        hint: "cost",
        help: "cost per model",
    },
    ActionInfo {
        action: Action::Help,
        name: "help",
        scope: Scope::Global,
        defaults: &["?"],
        hint: "help",
        help: "this help",
    },
    ActionInfo {
        action: Action::Quit,
        name: "quit",
        scope: Scope::Global,
        defaults: &["q", "ctrl-c"],
        hint: "quit",
        help: "quit (asks while something runs); the session is saved and resumable",
    },
];

/// Facts about `action`.
pub fn info(action: Action) -> &'static ActionInfo {
    ACTIONS
        .iter()
        .find(|i| i.action == action)
        .unwrap_or(&ACTIONS[0])
}

/// One key, as written in `[keys]` (`y`, `Y`, `ctrl-c`, `esc`, `pgdn`, `f2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    code: KeyCode,
    mods: KeyModifiers,
}

impl Key {
    /// The key of a terminal key event (Shift folded into the character).
    pub fn from_event(ev: &KeyEvent) -> Key {
        let mut mods =
            ev.modifiers & (KeyModifiers::CONTROL | KeyModifiers::ALT | KeyModifiers::SHIFT);
        let code = match ev.code {
            KeyCode::Char(c) => {
                mods.remove(KeyModifiers::SHIFT);
                KeyCode::Char(if mods.contains(KeyModifiers::CONTROL) {
                    c.to_ascii_lowercase()
                } else {
                    c
                })
            }
            KeyCode::BackTab => {
                mods.remove(KeyModifiers::SHIFT);
                KeyCode::BackTab
            }
            other => other,
        };
        Key { code, mods }
    }

    /// A plain key (for tests and fixed bindings).
    pub fn plain(code: KeyCode) -> Key {
        Key {
            code,
            mods: KeyModifiers::NONE,
        }
    }

    fn is_enter(&self) -> bool {
        self.code == KeyCode::Enter
    }

    fn is_ctrl_c(&self) -> bool {
        self.code == KeyCode::Char('c') && self.mods.contains(KeyModifiers::CONTROL)
    }
}

impl std::str::FromStr for Key {
    type Err = String;

    fn from_str(s: &str) -> Result<Key, String> {
        let mut mods = KeyModifiers::NONE;
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err("an empty key".into());
        }
        // `-` alone is the minus key; `ctrl--` is ctrl and minus.
        loop {
            let lower = rest.to_ascii_lowercase();
            if let Some(r) = lower.strip_prefix("ctrl-").filter(|r| !r.is_empty()) {
                mods |= KeyModifiers::CONTROL;
                rest = &rest[rest.len() - r.len()..];
            } else if let Some(r) = lower.strip_prefix("alt-").filter(|r| !r.is_empty()) {
                mods |= KeyModifiers::ALT;
                rest = &rest[rest.len() - r.len()..];
            } else {
                break;
            }
        }
        let mut chars = rest.chars();
        let code = match (chars.next(), chars.next()) {
            (Some(c), None) => KeyCode::Char(if mods.contains(KeyModifiers::CONTROL) {
                c.to_ascii_lowercase()
            } else {
                c
            }),
            _ => match rest.to_ascii_lowercase().as_str() {
                "esc" | "escape" => KeyCode::Esc,
                "enter" | "return" => KeyCode::Enter,
                "tab" => KeyCode::Tab,
                "backtab" | "shift-tab" => KeyCode::BackTab,
                "space" => KeyCode::Char(' '),
                "backspace" => KeyCode::Backspace,
                "delete" | "del" => KeyCode::Delete,
                "insert" | "ins" => KeyCode::Insert,
                "up" => KeyCode::Up,
                "down" => KeyCode::Down,
                "left" => KeyCode::Left,
                "right" => KeyCode::Right,
                "home" => KeyCode::Home,
                "end" => KeyCode::End,
                "pgup" | "pageup" => KeyCode::PageUp,
                "pgdn" | "pagedown" => KeyCode::PageDown,
                f if f.starts_with('f')
                    && f[1..].parse::<u8>().is_ok_and(|n| (1..=12).contains(&n)) =>
                {
                    KeyCode::F(f[1..].parse().unwrap_or(1))
                }
                _ => {
                    return Err(format!(
                        "{s:?} is not a key (write a character like \"y\", or esc, enter, tab, backtab, space, up, down, left, right, home, end, pgup, pgdn, f1…f12, with ctrl- or alt- in front)"
                    ));
                }
            },
        };
        Ok(Key { code, mods })
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mods.contains(KeyModifiers::CONTROL) {
            write!(f, "Ctrl-")?;
        }
        if self.mods.contains(KeyModifiers::ALT) {
            write!(f, "Alt-")?;
        }
        match self.code {
            KeyCode::Char(' ') => write!(f, "Space"),
            KeyCode::Char(c) if self.mods.contains(KeyModifiers::CONTROL) => {
                write!(f, "{}", c.to_ascii_uppercase())
            }
            KeyCode::Char(c) => write!(f, "{c}"),
            KeyCode::Esc => write!(f, "Esc"),
            KeyCode::Enter => write!(f, "Enter"),
            KeyCode::Tab => write!(f, "Tab"),
            KeyCode::BackTab => write!(f, "Shift-Tab"),
            KeyCode::Backspace => write!(f, "Backspace"),
            KeyCode::Delete => write!(f, "Del"),
            KeyCode::Insert => write!(f, "Ins"),
            KeyCode::Up => write!(f, "↑"),
            KeyCode::Down => write!(f, "↓"),
            KeyCode::Left => write!(f, "←"),
            KeyCode::Right => write!(f, "→"),
            KeyCode::Home => write!(f, "Home"),
            KeyCode::End => write!(f, "End"),
            KeyCode::PageUp => write!(f, "PgUp"),
            KeyCode::PageDown => write!(f, "PgDn"),
            KeyCode::F(n) => write!(f, "F{n}"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// The active keys.
#[derive(Debug, Clone)]
pub struct Keymap {
    keys: BTreeMap<Action, Vec<Key>>,
}

/// Whether two scopes can be active at once (so one key cannot serve both).
fn overlap(a: Scope, b: Scope) -> bool {
    a == b
        || matches!(a, Scope::Global | Scope::Navigation)
        || matches!(b, Scope::Global | Scope::Navigation)
}

/// Decision keys: never Enter, Ctrl-C or Esc (those must never approve anything).
fn decides(action: Action) -> bool {
    info(action).scope == Scope::Approval && action != Action::FullScreenCode
}

impl Default for Keymap {
    fn default() -> Self {
        let keys = ACTIONS
            .iter()
            .map(|i| {
                let keys = i
                    .defaults
                    .iter()
                    .filter_map(|k| k.parse::<Key>().ok())
                    .collect();
                (i.action, keys)
            })
            .collect();
        Keymap { keys }
    }
}

impl Keymap {
    /// The defaults with `overrides` (`[keys]` of config.toml: action name → key) applied. Each
    /// problem is returned in words; the action it concerns keeps its default keys.
    pub fn with_overrides(overrides: &BTreeMap<String, String>) -> (Keymap, Vec<String>) {
        let mut map = Keymap::default();
        let mut problems = Vec::new();
        let mut wanted: Vec<(Action, Key)> = Vec::new();
        for (name, value) in overrides {
            let Some(i) = ACTIONS.iter().find(|i| i.name == name) else {
                let names: Vec<&str> = ACTIONS.iter().map(|i| i.name).collect();
                problems.push(format!(
                    "[keys] {name}: no such action; the actions are {}",
                    names.join(", ")
                ));
                continue;
            };
            let key = match value.parse::<Key>() {
                Ok(k) => k,
                Err(e) => {
                    problems.push(format!("[keys] {name}: {e}"));
                    continue;
                }
            };
            if decides(i.action) && (key.is_enter() || key.is_ctrl_c() || key.code == KeyCode::Esc)
            {
                problems.push(format!(
                    "[keys] {name} = {value:?}: Enter, Esc and Ctrl-C never decide a block; choose another key"
                ));
                continue;
            }
            wanted.push((i.action, key));
        }
        // Apply, then check clashes in the result; a clashing override is dropped.
        let mut trial = map.keys.clone();
        for (a, k) in &wanted {
            trial.insert(*a, vec![*k]);
        }
        for (a, k) in &wanted {
            let scope = info(*a).scope;
            let clash = trial.iter().find(|(other, keys)| {
                *other != a && keys.contains(k) && overlap(scope, info(**other).scope)
            });
            match clash {
                Some((other, _)) => problems.push(format!(
                    "[keys] {} = \"{k}\" clashes with {} (also \"{k}\"); {} keeps {}",
                    info(*a).name,
                    info(*other).name,
                    info(*a).name,
                    map.describe(*a)
                )),
                None => {
                    map.keys.insert(*a, vec![*k]);
                }
            }
        }
        (map, problems)
    }

    /// The action `key` triggers in `scope` (the pane's own keys first, then moving around, then
    /// the global keys).
    pub fn action(&self, scope: Scope, key: &KeyEvent) -> Option<Action> {
        let key = Key::from_event(key);
        let find = |s: Scope| {
            self.keys
                .iter()
                .find(|(a, keys)| info(**a).scope == s && keys.contains(&key))
                .map(|(a, _)| *a)
        };
        let mut order = vec![scope];
        for s in [Scope::Navigation, Scope::Global] {
            if !order.contains(&s) {
                order.push(s);
            }
        }
        order.into_iter().find_map(find)
    }

    /// The keys of `action`.
    pub fn keys(&self, action: Action) -> &[Key] {
        self.keys
            .get(&action)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// `action`'s keys in words (`y`, `j/↓`).
    pub fn describe(&self, action: Action) -> String {
        let keys: Vec<String> = self.keys(action).iter().map(Key::to_string).collect();
        keys.join("/")
    }

    /// Hints (key, label) for the status bar, in the given order.
    pub fn hints(&self, actions: &[Action]) -> Vec<(String, &'static str)> {
        actions
            .iter()
            .filter(|a| !self.keys(**a).is_empty())
            .map(|a| (self.keys(*a)[0].to_string(), info(*a).hint))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: KeyCode, m: KeyModifiers) -> KeyEvent {
        KeyEvent::new(c, m)
    }

    #[test]
    fn defaults_follow_the_contract() {
        let m = Keymap::default();
        for (k, a) in [
            ("y", Action::Approve),
            ("Y", Action::ApproveAlwaysCode),
            ("L", Action::ApproveAlwaysLanguage),
            ("w", Action::ApproveWithNetwork),
            ("e", Action::EditInPlace),
            ("E", Action::EditExternal),
            ("n", Action::Reject),
            ("s", Action::Skip),
            ("a", Action::ApproveAll),
            ("z", Action::FullScreenCode),
            ("f", Action::Workspace),
            ("esc", Action::Interrupt),
            ("p", Action::Pause),
            ("?", Action::Help),
            ("q", Action::Quit),
        ] {
            let k: Key = k.parse().unwrap();
            assert!(m.keys(a).contains(&k), "{a:?} should have {k}");
        }
        // Shift is folded into the character, whatever the terminal reports.
        let shifted = key(KeyCode::Char('Y'), KeyModifiers::SHIFT);
        assert_eq!(
            m.action(Scope::Approval, &shifted),
            Some(Action::ApproveAlwaysCode)
        );
        // Pane keys act only in their pane.
        let y = key(KeyCode::Char('y'), KeyModifiers::NONE);
        assert_eq!(m.action(Scope::Transcript, &y), None);
        let n = key(KeyCode::Char('n'), KeyModifiers::NONE);
        assert_eq!(m.action(Scope::Approval, &n), Some(Action::Reject));
        assert_eq!(m.action(Scope::Transcript, &n), Some(Action::SearchNext));
        let ctrl_c = key(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(m.action(Scope::Approval, &ctrl_c), Some(Action::Quit));
    }

    #[test]
    fn no_two_default_actions_share_a_key_where_both_act() {
        let m = Keymap::default();
        for a in ACTIONS {
            for b in ACTIONS {
                if a.action >= b.action || !overlap(a.scope, b.scope) {
                    continue;
                }
                for k in m.keys(a.action) {
                    assert!(
                        !m.keys(b.action).contains(k),
                        "{} and {} share {k}",
                        a.name,
                        b.name
                    );
                }
            }
        }
    }

    #[test]
    fn overrides_apply_and_bad_ones_are_reported_with_defaults_kept() {
        let o: BTreeMap<String, String> = [
            ("approve", "ctrl-y"),
            ("reject", "enter"),
            ("skip", "ctrl-c"),
            ("nonsense", "x"),
            ("pause", "hyper-p"),
            ("help", "f1"),
            ("workspace", "q"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let (m, problems) = Keymap::with_overrides(&o);
        assert_eq!(m.describe(Action::Approve), "Ctrl-Y");
        assert_eq!(m.describe(Action::Help), "F1");
        assert_eq!(m.describe(Action::Reject), "n", "Enter never decides");
        assert_eq!(m.describe(Action::Skip), "s");
        assert_eq!(m.describe(Action::Pause), "p");
        assert_eq!(m.describe(Action::Workspace), "f", "q is quit's");
        assert_eq!(m.describe(Action::Quit), "q/Ctrl-C");
        let all = problems.join("\n");
        for needle in [
            "nonsense: no such action",
            "reject = \"enter\"",
            "skip = \"ctrl-c\"",
            "\"hyper-p\" is not a key",
            "workspace = \"q\" clashes with quit",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(problems.len(), 5);
    }

    #[test]
    fn keys_parse_and_print_back() {
        for (s, shown) in [
            ("y", "y"),
            ("Y", "Y"),
            ("ctrl-c", "Ctrl-C"),
            ("Ctrl-C", "Ctrl-C"),
            ("alt-x", "Alt-x"),
            ("esc", "Esc"),
            ("pgdn", "PgDn"),
            ("f12", "F12"),
            ("space", "Space"),
            ("?", "?"),
            ("-", "-"),
            ("ctrl--", "Ctrl--"),
            ("backtab", "Shift-Tab"),
        ] {
            let k: Key = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(k.to_string(), shown, "{s}");
        }
        assert!("f13".parse::<Key>().is_err());
        assert!("".parse::<Key>().is_err());
        assert!("hyper-x".parse::<Key>().is_err());
    }
}
