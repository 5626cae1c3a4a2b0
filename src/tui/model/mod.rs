//! The TUI's view model: everything the screen shows, folded from `Event`s and nothing else.
//!
//! `SessionView::apply` is pure (no ratatui, no I/O, no clock) and does O(1) work per event apart
//! from copying the event's own text: no wrapping, no Markdown, no highlighting — those happen
//! when a cell becomes visible (see `transcript`). Live events and a resumed log go through the
//! same fold, so a resumed screen is the screen the session had. Keys never change it: a decision
//! the human sends shows as "sent…" (front-end state in `app`) until `approval_resolved` arrives.

pub mod cells;

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::protocol::{
    AgentActivity, DecisionKind, EXECUTOR, Event, EventKind, HUMAN, PauseKind, PolicyRule,
    SessionMode, WaitingOn,
};

pub use cells::{Cell, CellKind, ExecEnd, ExecView, FileMark, OutputChunk, UsageView};

pub use crate::engine::state::Spend;

/// One agent of the roster.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentView {
    /// Name.
    pub name: String,
    /// `provider/model`.
    pub model: String,
    /// What it does (team file).
    pub description: String,
    /// Whether its code may run.
    pub can_execute: bool,
    /// What it is doing (from `agent_status`; idle after a resume).
    pub activity: AgentActivity,
    /// Never selected while muted.
    pub muted: bool,
    /// Its calls.
    pub spend: Spend,
}

/// An approval with undecided blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenApproval {
    /// Approval id.
    pub id: u64,
    /// Proposing agent.
    pub agent: String,
    /// The blocks, in message order.
    pub blocks: Vec<ProposedBlock>,
    /// The engine's decision per block, once resolved.
    pub decided: Vec<Option<DecisionKind>>,
}

/// A block of an open approval as it was proposed. Its code is shared, not copied, with the
/// pane that shows it and the highlighter that colours it (a 10,000-line block is 300 KB).
#[derive(Debug, Clone, PartialEq)]
pub struct ProposedBlock {
    /// Index within the message.
    pub index: usize,
    /// Language tag.
    pub language: String,
    /// Target file name, when the agent gave one.
    pub filename: Option<String>,
    /// The code.
    pub code: std::sync::Arc<String>,
}

impl OpenApproval {
    /// First block without a decision from the engine.
    pub fn first_undecided(&self) -> Option<usize> {
        self.decided.iter().position(Option::is_none)
    }
}

/// The session's pause, while it lasts.
#[derive(Debug, Clone, PartialEq)]
pub struct PauseView {
    /// Why, as a kind.
    pub kind: PauseKind,
    /// Why, in words.
    pub reason: String,
}

/// Progress of a sandbox image pull.
#[derive(Debug, Clone, PartialEq)]
pub struct PullView {
    /// Image reference.
    pub image: String,
    /// Docker's status line.
    pub status: String,
    /// Bytes done.
    pub current: u64,
    /// Bytes in all layers seen.
    pub total: u64,
    /// Layers seen.
    pub layers: u32,
    /// Layers complete.
    pub layers_done: u32,
}

/// The last `waiting` event, as the engine sent it (freshness is judged by the app, which knows
/// how many ops it sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitView {
    /// What the engine needs.
    pub on: WaitingOn,
    /// Ops the engine had handled when it started waiting.
    pub ops_handled: u64,
}

/// The event a cell comes from: its seq and time.
#[derive(Debug, Clone, Copy)]
struct At {
    seq: u64,
    ts_ms: u64,
}

/// Everything the TUI shows about one session.
#[derive(Debug, Clone, Default)]
pub struct SessionView {
    /// Full session id.
    pub session: String,
    /// Team name.
    pub team: String,
    /// The task.
    pub task: String,
    /// Approval mode.
    pub mode: SessionMode,
    /// Roster, in team order.
    pub agents: Vec<AgentView>,
    agent_index: HashMap<String, usize>,
    /// Whole session.
    pub spend: Spend,
    /// Per model (`provider/model`).
    pub spend_by_model: BTreeMap<String, Spend>,
    /// Session cap in USD.
    pub budget_usd: Option<f64>,
    /// Fraction of the cap at which the meter warns.
    pub warn_at: f64,
    /// The engine warned about the budget (for the current cap).
    pub budget_warned: bool,
    /// Per-block timeout of the team's sandbox, seconds.
    pub exec_timeout_s: u64,
    /// The transcript.
    pub cells: Vec<Cell>,
    /// Approvals with undecided blocks, oldest first (the front one is shown).
    pub approvals: VecDeque<OpenApproval>,
    /// Auto-approval rules in force.
    pub rules: Vec<PolicyRule>,
    /// The session is paused.
    pub paused: Option<PauseView>,
    /// Manual selection: candidates for the next speaker.
    pub speaker_requested: Option<Vec<String>>,
    /// The agent pinned to speak next.
    pub pinned: Option<String>,
    /// The last `waiting` event.
    pub waiting: Option<WaitView>,
    /// An image pull in progress.
    pub pull: Option<PullView>,
    /// The block running now: its cell.
    pub running: Option<usize>,
    /// Files this session changed, with their latest mark.
    pub workspace: BTreeMap<String, FileMark>,
    /// The session ended, and why.
    pub terminated: Option<String>,
    /// Messages being streamed: agent → cell.
    streaming: HashMap<String, usize>,
    /// Execution cells by (approval id, block).
    exec_cells: HashMap<(u64, usize), usize>,
    /// Language of each block of the approvals seen: (id, block) → language (the code itself
    /// stays in the open approval only: a long session does not keep every block twice).
    proposed: HashMap<(u64, usize), String>,
    /// Usage of a call whose message has not arrived yet, per agent.
    pending_usage: HashMap<String, UsageView>,
    /// Cells changed since the screen last looked (see [`SessionView::take_touched`]).
    touched: Vec<usize>,
    /// Events folded.
    pub events_seen: u64,
    /// Bumped by every event that changes what is shown.
    pub revision: u64,
}

impl SessionView {
    /// An empty view.
    pub fn new() -> Self {
        Self {
            warn_at: 0.8,
            ..Self::default()
        }
    }

    /// Whether `name` is one of the team's agents.
    pub fn is_agent(&self, name: &str) -> bool {
        self.agent_index.contains_key(name)
    }

    /// The roster entry of `name`.
    pub fn agent(&self, name: &str) -> Option<&AgentView> {
        self.agent_index.get(name).map(|&i| &self.agents[i])
    }

    /// Position of `name` in the roster (its colour).
    pub fn agent_slot(&self, name: &str) -> Option<usize> {
        self.agent_index.get(name).copied()
    }

    /// The approval shown in the pending pane.
    pub fn open_approval(&self) -> Option<&OpenApproval> {
        self.approvals.front()
    }

    /// A model call or a block is in progress (what `Esc` would interrupt).
    pub fn busy(&self) -> bool {
        self.running.is_some()
            || self.agents.iter().any(|a| {
                matches!(
                    a.activity,
                    AgentActivity::Thinking | AgentActivity::Streaming | AgentActivity::Retrying
                )
            })
    }

    fn ensure_agent(&mut self, name: &str) -> usize {
        if let Some(&i) = self.agent_index.get(name) {
            return i;
        }
        let i = self.agents.len();
        self.agents.push(AgentView {
            name: name.to_string(),
            model: String::new(),
            description: String::new(),
            can_execute: false,
            activity: AgentActivity::Idle,
            muted: false,
            spend: Spend::default(),
        });
        self.agent_index.insert(name.to_string(), i);
        i
    }

    fn push(&mut self, at: At, kind: CellKind) -> usize {
        self.cells.push(Cell {
            kind,
            rev: 0,
            seq: at.seq,
            ts_ms: at.ts_ms,
        });
        self.cells.len() - 1
    }

    fn touch(&mut self, i: usize) {
        if let Some(c) = self.cells.get_mut(i) {
            c.rev += 1;
            if self.touched.last() != Some(&i) {
                self.touched.push(i);
            }
        }
    }

    /// Cells changed (not added) since the last call: the screen re-measures them.
    pub fn take_touched(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.touched)
    }

    /// Folds one event into the view (a copy of it: see [`SessionView::apply_owned`]).
    pub fn apply(&mut self, ev: &Event) {
        self.apply_owned(ev.clone());
    }

    /// Folds one event into the view, keeping its text without copying it (a resumed session
    /// folds its whole log through here: no allocation per event beyond the cells).
    pub fn apply_owned(&mut self, ev: Event) {
        self.events_seen += 1;
        self.revision += 1;
        let Event {
            seq,
            session,
            ts_ms,
            kind,
        } = ev;
        if self.session.is_empty() {
            self.session = session;
        }
        let at = At { seq, ts_ms };
        match kind {
            EventKind::SessionStarted {
                team,
                task,
                team_config,
                mode,
                ..
            } => {
                self.mode = mode;
                if let Some(t) = team_config {
                    for a in &t.agents {
                        let i = self.ensure_agent(&a.name);
                        let v = &mut self.agents[i];
                        v.model = a.model.clone();
                        v.description = a.description.clone();
                        v.can_execute = a.can_execute;
                    }
                    self.budget_usd = t.budget.usd;
                    self.warn_at = t.budget.warn_at;
                    self.exec_timeout_s = t.executor.timeout_s;
                }
                self.push(
                    at,
                    CellKind::SessionStart {
                        team: team.clone(),
                        task: task.clone(),
                    },
                );
                self.team = team;
                self.task = task;
            }
            EventKind::SpeakerSelected { agent, note } => {
                self.speaker_requested = None;
                self.pinned = None;
                if let Some(note) = note {
                    self.push(at, CellKind::SpeakerNote { agent, note });
                }
            }
            EventKind::SpeakerRequested { candidates } => {
                self.speaker_requested = Some(candidates.clone());
                self.push(at, CellKind::SpeakerRequested { candidates });
            }
            EventKind::AgentStatus { agent, state } => {
                let i = self.ensure_agent(&agent);
                self.agents[i].activity = state;
            }
            EventKind::MessageDelta { agent, delta } => match self.streaming.get(&agent) {
                Some(&i) => {
                    if let Some(CellKind::Message { text, .. }) =
                        self.cells.get_mut(i).map(|c| &mut c.kind)
                    {
                        text.push_str(&delta);
                    }
                    self.touch(i);
                }
                None => {
                    let usage = self.pending_usage.remove(&agent);
                    let i = self.push(
                        at,
                        CellKind::Message {
                            agent: agent.clone(),
                            to: None,
                            text: delta,
                            streaming: true,
                            usage,
                        },
                    );
                    self.streaming.insert(agent, i);
                }
            },
            EventKind::Message { agent, content, to } => {
                if agent != HUMAN && agent != EXECUTOR {
                    let i = self.ensure_agent(&agent);
                    self.agents[i].activity = AgentActivity::Idle;
                }
                if agent == EXECUTOR {
                    self.push(at, CellKind::ExecutorReport { text: content });
                } else if let Some(i) = self.streaming.remove(&agent) {
                    let usage = self.pending_usage.remove(&agent);
                    if let Some(CellKind::Message {
                        text,
                        streaming,
                        to: cell_to,
                        usage: cell_usage,
                        ..
                    }) = self.cells.get_mut(i).map(|c| &mut c.kind)
                    {
                        // The complete message is the truth: it replaces what streamed.
                        if *text != content {
                            *text = content;
                        }
                        *streaming = false;
                        *cell_to = to;
                        if usage.is_some() {
                            *cell_usage = usage;
                        }
                    }
                    self.touch(i);
                } else {
                    let usage = self.pending_usage.remove(&agent);
                    self.push(
                        at,
                        CellKind::Message {
                            agent,
                            to,
                            text: content,
                            streaming: false,
                            usage,
                        },
                    );
                }
            }
            EventKind::Usage {
                agent,
                model,
                input_tokens,
                output_tokens,
                cached_tokens,
                usd,
                estimated,
                ..
            } => {
                let u = UsageView {
                    model,
                    input_tokens,
                    output_tokens,
                    cached_tokens,
                    usd,
                    estimated,
                };
                let add = |s: &mut Spend| {
                    s.add(
                        u.input_tokens,
                        u.output_tokens,
                        u.cached_tokens,
                        u.usd,
                        u.estimated,
                    )
                };
                add(&mut self.spend);
                match self.spend_by_model.get_mut(&u.model) {
                    Some(s) => add(s),
                    None => add(self.spend_by_model.entry(u.model.clone()).or_default()),
                }
                if let Some(&i) = self.agent_index.get(&agent) {
                    add(&mut self.agents[i].spend);
                }
                // Shown with the message it paid for: the one streaming, or the next one.
                match self.streaming.get(&agent) {
                    Some(&i) => {
                        if let Some(CellKind::Message { usage, .. }) =
                            self.cells.get_mut(i).map(|c| &mut c.kind)
                        {
                            *usage = Some(u);
                        }
                        self.touch(i);
                    }
                    None => {
                        self.pending_usage.insert(agent, u);
                    }
                }
            }
            EventKind::ApprovalRequested { id, agent, blocks } => {
                for b in &blocks {
                    self.proposed.insert((id, b.index), b.language.clone());
                }
                self.push(
                    at,
                    CellKind::Approval {
                        id,
                        agent: agent.clone(),
                        blocks: blocks
                            .iter()
                            .map(|b| {
                                (
                                    b.language.clone(),
                                    b.filename.clone(),
                                    crate::text_safety::line_count(&b.code),
                                )
                            })
                            .collect(),
                    },
                );
                self.approvals.push_back(OpenApproval {
                    id,
                    agent,
                    decided: vec![None; blocks.len()],
                    blocks: blocks
                        .into_iter()
                        .map(|b| ProposedBlock {
                            index: b.index,
                            language: b.language,
                            filename: b.filename,
                            code: std::sync::Arc::new(b.code),
                        })
                        .collect(),
                });
            }
            EventKind::ApprovalResolved {
                id,
                block,
                decision,
                code,
                reason,
                by_rule,
                allow_network,
            } => {
                if let Some(PolicyRule::CodeOnce { hash }) = &by_rule {
                    self.rules
                        .retain(|r| !matches!(r, PolicyRule::CodeOnce { hash: h } if h == hash));
                }
                let language = self.proposed.get(&(id, block)).cloned().unwrap_or_default();
                // An edit's diff is against the code as proposed, still in the open approval.
                let mut original = (decision == DecisionKind::Edited).then(String::new);
                if let Some(pos) = self.approvals.iter().position(|a| a.id == id) {
                    let a = &mut self.approvals[pos];
                    if let (Some(o), Some(b)) = (original.as_mut(), a.blocks.get(block)) {
                        o.clone_from(&*b.code);
                    }
                    if let Some(slot) = a.decided.get_mut(block) {
                        *slot = Some(decision);
                    }
                    if a.first_undecided().is_none() {
                        self.approvals.remove(pos);
                    }
                }
                self.push(
                    at,
                    CellKind::Decision {
                        id,
                        block,
                        language,
                        decision,
                        original,
                        code,
                        reason,
                        by_rule,
                        allow_network,
                    },
                );
            }
            EventKind::PolicyAdded { rule } => {
                if !self.rules.contains(&rule) {
                    self.rules.push(rule.clone());
                }
                self.push(at, CellKind::Rule { rule, added: true });
            }
            EventKind::PolicyRevoked { rule } => {
                self.rules.retain(|r| *r != rule);
                self.push(at, CellKind::Rule { rule, added: false });
            }
            EventKind::ModeChanged { mode } => {
                self.mode = mode;
                self.push(at, CellKind::ModeChanged { mode });
            }
            EventKind::SpeakerPinned { agent } => {
                self.pinned = Some(agent.clone());
                self.push(at, CellKind::Pinned { agent });
            }
            EventKind::AgentMuted { agent, muted } => {
                let i = self.ensure_agent(&agent);
                self.agents[i].muted = muted;
                self.push(at, CellKind::Muted { agent, muted });
            }
            EventKind::ImagePull {
                image,
                status,
                current,
                total,
                layers,
                layers_done,
            } => {
                self.pull = Some(PullView {
                    image,
                    status,
                    current,
                    total,
                    layers,
                    layers_done,
                });
            }
            EventKind::ExecutionStarted {
                id,
                block,
                language,
            } => {
                let i = self.push(
                    at,
                    CellKind::Execution(ExecView {
                        id,
                        block,
                        language,
                        started_ms: ts_ms,
                        timeout_s: self.exec_timeout_s,
                        chunks: Vec::new(),
                        output_len: 0,
                        output_lines: 0,
                        end: None,
                        changes: None,
                    }),
                );
                self.exec_cells.insert((id, block), i);
                self.running = Some(i);
            }
            EventKind::ExecutionOutput {
                id,
                block,
                stream,
                text,
            } => {
                self.pull = None;
                if let Some(&i) = self.exec_cells.get(&(id, block)) {
                    if let Some(CellKind::Execution(x)) = self.cells.get_mut(i).map(|c| &mut c.kind)
                    {
                        x.push_output_owned(stream, std::borrow::Cow::Owned(text));
                    }
                    self.touch(i);
                }
            }
            EventKind::ExecutionFinished {
                id,
                block,
                exit_code,
                timed_out,
                truncated,
                duration_ms,
                output,
                oom,
                interrupted,
                not_run,
                workspace_limit_exceeded,
            } => {
                self.pull = None;
                let i = match self.exec_cells.get(&(id, block)) {
                    Some(&i) => i,
                    None => {
                        // A finish without a start (a block refused before it ran).
                        let i = self.push(
                            at,
                            CellKind::Execution(ExecView {
                                id,
                                block,
                                language: self
                                    .proposed
                                    .get(&(id, block))
                                    .cloned()
                                    .unwrap_or_default(),
                                started_ms: ts_ms,
                                timeout_s: self.exec_timeout_s,
                                chunks: Vec::new(),
                                output_len: 0,
                                output_lines: 0,
                                end: None,
                                changes: None,
                            }),
                        );
                        self.exec_cells.insert((id, block), i);
                        i
                    }
                };
                if let Some(CellKind::Execution(x)) = self.cells.get_mut(i).map(|c| &mut c.kind) {
                    x.finish(
                        &output,
                        ExecEnd {
                            exit_code,
                            timed_out,
                            truncated,
                            duration_ms,
                            oom,
                            interrupted,
                            not_run,
                            workspace_limit_exceeded,
                            finished_ms: ts_ms,
                        },
                    );
                }
                self.touch(i);
                if self.running == Some(i) {
                    self.running = None;
                }
            }
            EventKind::WorkspaceChanged {
                id,
                block,
                created,
                modified,
                deleted,
                notes,
            } => {
                for (list, mark) in [
                    (&created, FileMark::Created),
                    (&modified, FileMark::Modified),
                    (&deleted, FileMark::Deleted),
                ] {
                    for f in list {
                        let merged = match (self.workspace.get(&f.path), mark) {
                            // Created in this session, then changed: still new to the session.
                            (Some(FileMark::Created), FileMark::Modified) => FileMark::Created,
                            // Deleted, then written again: changed against the start.
                            (Some(FileMark::Deleted), FileMark::Created) => FileMark::Modified,
                            (_, m) => m,
                        };
                        if merged == FileMark::Deleted
                            && self.workspace.get(&f.path) == Some(&FileMark::Created)
                        {
                            // Created and deleted within the session: no change left.
                            self.workspace.remove(&f.path);
                        } else {
                            self.workspace.insert(f.path.clone(), merged);
                        }
                    }
                }
                let changes = cells::WorkspaceChange {
                    created,
                    modified,
                    deleted,
                    notes: notes.into_iter().map(|n| (n.path, n.note)).collect(),
                };
                match self.exec_cells.get(&(id, block)).copied() {
                    Some(i) => {
                        if let Some(CellKind::Execution(x)) =
                            self.cells.get_mut(i).map(|c| &mut c.kind)
                        {
                            x.changes = Some(changes);
                        }
                        self.touch(i);
                    }
                    None => {
                        self.push(at, CellKind::Workspace { id, block, changes });
                    }
                }
            }
            EventKind::BudgetWarning { spent_usd, cap_usd } => {
                self.budget_warned = true;
                self.push(at, CellKind::BudgetWarning { spent_usd, cap_usd });
            }
            EventKind::BudgetChanged { cap_usd } => {
                self.budget_usd = Some(cap_usd);
                self.budget_warned = false;
                self.push(at, CellKind::BudgetChanged { cap_usd });
            }
            EventKind::WorkspaceAttached { path, mode, .. } => {
                let how = match mode {
                    crate::protocol::WorkspaceMode::Rw => "mounted read-write at /workspace",
                    crate::protocol::WorkspaceMode::Copy => {
                        "copied; the copy is mounted at /workspace and the original is left untouched"
                    }
                };
                self.push(
                    at,
                    CellKind::Notice {
                        text: format!("workspace: {path} ({how})"),
                    },
                );
            }
            EventKind::Notice { message } => {
                // The engine's checkpoint record says nothing to the human.
                if message != "still streaming" {
                    self.push(at, CellKind::Notice { text: message });
                }
            }
            EventKind::Paused { reason, kind } => {
                self.paused = Some(PauseView {
                    kind,
                    reason: reason.clone(),
                });
                self.push(at, CellKind::Paused { kind, reason });
            }
            EventKind::Resumed {} => {
                self.paused = None;
                self.push(at, CellKind::Resumed);
            }
            EventKind::Terminated { reason } => {
                self.terminated = Some(reason.clone());
                self.paused = None;
                self.speaker_requested = None;
                self.running = None;
                for a in &mut self.agents {
                    a.activity = AgentActivity::Idle;
                }
                for (_, i) in self.streaming.drain() {
                    if let Some(CellKind::Message { streaming, .. }) =
                        self.cells.get_mut(i).map(|c| &mut c.kind)
                    {
                        *streaming = false;
                    }
                }
                self.push(at, CellKind::Terminated { reason });
            }
            EventKind::Waiting { on, ops_handled } => {
                self.waiting = Some(WaitView { on, ops_handled });
            }
            EventKind::Error { message } => {
                self.push(at, CellKind::Error { text: message });
            }
        }
    }

    /// The execution cell of a block.
    pub fn execution(&self, id: u64, block: usize) -> Option<&ExecView> {
        let i = *self.exec_cells.get(&(id, block))?;
        if let CellKind::Execution(x) = &self.cells.get(i)?.kind {
            Some(x)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests;
