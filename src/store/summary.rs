//! What `sessions list` shows about a session, folded from its events and cached in `summary.json`
//! so that listing many sessions reads only the part of each log written since its summary.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::protocol::{Event, EventKind};

/// File name of the cached summary, inside the session directory.
pub const SUMMARY_FILE: &str = "summary.json";
const SUMMARY_VERSION: u32 = 1;

/// Where a session stands, as shown by `sessions list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Open in a live proctor and working.
    Running,
    /// Code blocks wait for the human's decision.
    WaitingForApproval,
    /// Paused (budget, loop, human); continue or stop.
    Paused,
    /// Ended normally.
    Finished,
    /// Stopped mid-way without ending (proctor was killed or crashed); resumable.
    Crashed,
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionState::Running => "running",
            SessionState::WaitingForApproval => "waiting for approval",
            SessionState::Paused => "paused",
            SessionState::Finished => "finished",
            SessionState::Crashed => "crashed",
        })
    }
}

/// Running totals over a session's events: everything `sessions list` needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Fold {
    pub task: String,
    pub team: String,
    pub started_ms: u64,
    pub last_activity_ms: u64,
    pub messages: u64,
    pub cost_usd: f64,
    pub unpriced_calls: u64,
    pub last_seq: u64,
    pub events: u64,
    pub terminated: bool,
    pub paused: bool,
    /// Approval id -> blocks still undecided.
    pub open_approvals: BTreeMap<u64, BTreeSet<usize>>,
}

impl Fold {
    /// Folds one event in.
    pub fn apply(&mut self, ev: &Event) {
        self.events += 1;
        self.last_seq = self.last_seq.max(ev.seq);
        self.last_activity_ms = self.last_activity_ms.max(ev.ts_ms);
        // Events that show the session moving on after a pause or an end.
        let mut activity = false;
        match &ev.kind {
            EventKind::SessionStarted { team, task, .. } => {
                self.team.clone_from(team);
                self.task.clone_from(task);
                self.started_ms = ev.ts_ms;
            }
            EventKind::SpeakerSelected { .. }
            | EventKind::SpeakerRequested { .. }
            | EventKind::AgentStatus { .. }
            | EventKind::MessageDelta { .. }
            | EventKind::ExecutionStarted { .. }
            | EventKind::ExecutionOutput { .. } => activity = true,
            EventKind::Message { .. } => {
                self.messages += 1;
                activity = true;
            }
            EventKind::Usage { usd, .. } => match usd {
                Some(usd) => self.cost_usd += usd,
                None => self.unpriced_calls += 1,
            },
            EventKind::ApprovalRequested { id, blocks, .. } => {
                let undecided: BTreeSet<usize> = blocks.iter().map(|b| b.index).collect();
                if !undecided.is_empty() {
                    self.open_approvals.insert(*id, undecided);
                }
                activity = true;
            }
            EventKind::ApprovalResolved { id, block, .. } => {
                if let Some(open) = self.open_approvals.get_mut(id) {
                    open.remove(block);
                    if open.is_empty() {
                        self.open_approvals.remove(id);
                    }
                }
                activity = true;
            }
            EventKind::Resumed {} => activity = true,
            EventKind::Paused { .. } => self.paused = true,
            EventKind::Terminated { .. } => {
                self.terminated = true;
                self.paused = false;
            }
            EventKind::PolicyAdded { .. }
            | EventKind::PolicyRevoked { .. }
            | EventKind::WorkspaceChanged { .. }
            | EventKind::WorkspaceAttached { .. }
            | EventKind::ModeChanged { .. }
            | EventKind::AgentMuted { .. }
            | EventKind::SpeakerPinned { .. }
            | EventKind::ImagePull { .. }
            | EventKind::Waiting { .. }
            | EventKind::ExecutionFinished { .. }
            | EventKind::BudgetWarning { .. }
            | EventKind::BudgetChanged { .. }
            | EventKind::Notice { .. }
            | EventKind::Error { .. } => {}
        }
        if activity {
            self.paused = false;
            self.terminated = false;
        }
    }

    /// The state shown for this session, given whether a live proctor holds its lock.
    pub fn state(&self, locked: bool) -> SessionState {
        if self.terminated {
            SessionState::Finished
        } else if !self.open_approvals.is_empty() {
            SessionState::WaitingForApproval
        } else if self.paused {
            SessionState::Paused
        } else if locked {
            SessionState::Running
        } else {
            SessionState::Crashed
        }
    }
}

/// The cached fold of a log's first `log_len` bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SummaryFile {
    pub version: u32,
    pub log_len: u64,
    pub fold: Fold,
}

impl SummaryFile {
    /// Reads a session's cached summary; `None` when missing, unreadable or of another version.
    pub fn read(dir: &Path) -> Option<SummaryFile> {
        let bytes = std::fs::read(dir.join(SUMMARY_FILE)).ok()?;
        let s: SummaryFile = serde_json::from_slice(&bytes).ok()?;
        (s.version == SUMMARY_VERSION).then_some(s)
    }

    /// Replaces a session's cached summary atomically. Not fsynced: a lost or stale summary is
    /// rebuilt from the log.
    pub fn write(dir: &Path, log_len: u64, fold: &Fold) -> std::io::Result<()> {
        let file = SummaryFile {
            version: SUMMARY_VERSION,
            log_len,
            fold: fold.clone(),
        };
        let bytes = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut tmp, &bytes)?;
        tmp.persist(dir.join(SUMMARY_FILE)).map_err(|e| e.error)?;
        Ok(())
    }
}

/// One row of `sessions list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// Full session id.
    pub id: String,
    /// The task given by the human.
    pub task: String,
    /// Team name.
    pub team: String,
    /// When the session started, ms since the Unix epoch.
    pub started_ms: u64,
    /// Time of its latest event, ms since the Unix epoch.
    pub last_activity_ms: u64,
    /// Number of `message` events.
    pub messages: u64,
    /// Sum of priced model calls, USD.
    pub cost_usd: f64,
    /// Model calls without a price (their cost is not in `cost_usd`).
    pub unpriced_calls: u64,
    /// Seq of the latest event.
    pub last_seq: u64,
    /// Where it stands.
    pub state: SessionState,
    /// Pid of the proctor that has it open, when one does.
    pub pid: Option<u32>,
}

impl SessionSummary {
    pub(crate) fn from_fold(id: &str, fold: &Fold, locked: Option<Option<u32>>) -> Self {
        SessionSummary {
            id: id.to_string(),
            task: fold.task.clone(),
            team: fold.team.clone(),
            started_ms: fold.started_ms,
            last_activity_ms: fold.last_activity_ms,
            messages: fold.messages,
            cost_usd: fold.cost_usd,
            unpriced_calls: fold.unpriced_calls,
            last_seq: fold.last_seq,
            state: fold.state(locked.is_some()),
            pid: locked.flatten(),
        }
    }
}

/// Formats ms since the Unix epoch as `YYYY-MM-DD HH:MM` (UTC); `-` for an unknown time.
pub fn format_time(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    // 2026-11-21T23:51:57Z -> 2026-11-21 23:51
    s.get(..16).map_or(s.clone(), |p| p.replacen('T', " ", 1))
}

/// Formats a USD amount the way the list and the export show it.
pub fn format_usd(usd: f64, unpriced_calls: u64) -> String {
    let mut s = if usd < 0.01 && usd > 0.0 {
        format!("${usd:.4}")
    } else {
        format!("${usd:.2}")
    };
    if unpriced_calls > 0 {
        s.push('+');
    }
    s
}

/// One table cell: on one line, every hidden character a visible marker, at most `width` wide.
fn clip(text: &str, width: usize) -> String {
    let folded: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let one_line = crate::text_safety::visible_line(&folded);
    if one_line.chars().count() <= width {
        one_line.into_owned()
    } else {
        let mut s: String = one_line.chars().take(width.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

/// The `sessions list` table: one header line and one line per session, columns aligned. A `+`
/// after the cost means some calls had no price.
pub fn format_session_table(sessions: &[SessionSummary]) -> String {
    let header = [
        "ID",
        "TASK",
        "TEAM",
        "STARTED (UTC)",
        "LAST ACTIVITY (UTC)",
        "MSGS",
        "COST",
        "STATE",
    ];
    let rows: Vec<[String; 8]> = sessions
        .iter()
        .map(|s| {
            let state = match (s.state, s.pid) {
                (SessionState::Running, Some(pid)) => format!("running (pid {pid})"),
                (state, _) => state.to_string(),
            };
            [
                crate::text_safety::visible_line(&s.id).into_owned(),
                clip(&s.task, 40),
                clip(&s.team, 16),
                format_time(s.started_ms),
                format_time(s.last_activity_ms),
                s.messages.to_string(),
                format_usd(s.cost_usd, s.unpriced_calls),
                state,
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: &[String]| {
        let mut line = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            // Numbers right-aligned, text left-aligned.
            if i == 5 || i == 6 {
                line.push_str(&format!("{cell:>w$}"));
            } else {
                line.push_str(&format!("{cell:<w$}"));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_row(&header.map(String::from));
    for row in &rows {
        push_row(row);
    }
    out
}
