//! The session task: `Op`s in, `Event`s out. It owns the conversation state, picks speakers, streams
//! model calls, parks turns on approvals, runs approved code and decides when to pause or stop.
//! Every event is recorded (and fsynced where it matters) before a front end sees it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use futures::StreamExt;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{SpeakerSelection, TeamConfig};
use crate::engine::approval;
use crate::engine::context::{self, DEFAULT_MAX_TOKENS};
use crate::engine::cost::{PriceTable, estimate_request_tokens, estimate_tokens};
use crate::engine::selection;
use crate::engine::state::SessionState;
use crate::engine::termination::{Condition, detect_loop};
use crate::executor::{ExecError, ExecEvent, ExecRequest, Executor};
use crate::protocol::{
    AgentActivity, Decision, DecisionKind, EXECUTOR, Event, EventKind, HUMAN, Op, PauseKind,
    SCHEMA_VERSION, SessionMode, WaitingOn,
};
use crate::provider::{ChatChunk, ChatModel, ChatRequest, ProviderError, TokenUsage};
use crate::store::EventSink;

/// Everything a session needs to run.
pub struct SessionSetup {
    /// Session id.
    pub id: String,
    /// The team.
    pub team: TeamConfig,
    /// The task (may be empty: the session then waits for a human message).
    pub task: String,
    /// Approval mode.
    pub mode: SessionMode,
    /// Models by `provider/model`. A missing model pauses the turn with an error naming it.
    pub models: HashMap<String, Arc<dyn ChatModel>>,
    /// Where approved code runs.
    pub executor: Arc<dyn Executor>,
    /// Host directory mounted at `/workspace`.
    pub workspace: PathBuf,
    /// Prices.
    pub prices: PriceTable,
    /// Where events are recorded.
    pub sink: Box<dyn EventSink>,
    /// A saved log to continue (resume); `None` starts a new session.
    pub resume: Option<Vec<Event>>,
    /// Seed for random speaker selection (tests).
    pub seed: Option<u64>,
    /// Sandbox image for this run (`--image`), over the team's.
    pub image_override: Option<String>,
    /// The user's directory the session works in (recorded as `workspace_attached` when new or
    /// moved); `None`: the session's own directory.
    pub workspace_record: Option<crate::workspace::WorkspaceRecord>,
}

/// A running session: send `Op`s, receive `Event`s.
pub struct SessionHandle {
    /// Ops to the engine.
    pub ops: mpsc::UnboundedSender<Op>,
    /// Events from the engine (replayed ones first when resuming).
    pub events: mpsc::UnboundedReceiver<Event>,
    /// The task; yields the final state.
    pub task: JoinHandle<SessionState>,
}

/// Starts a session task.
pub fn start(setup: SessionSetup) -> SessionHandle {
    let (ops_tx, ops_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let orch = Orchestrator::new(setup, ops_rx, ev_tx);
        orch.run().await
    });
    SessionHandle {
        ops: ops_tx,
        events: ev_rx,
        task,
    }
}

struct Orchestrator {
    id: String,
    team: TeamConfig,
    task: String,
    initial_mode: SessionMode,
    models: HashMap<String, Arc<dyn ChatModel>>,
    executor: Arc<dyn Executor>,
    workspace: PathBuf,
    prices: PriceTable,
    sink: Box<dyn EventSink>,
    resume: Option<Vec<Event>>,
    ops: mpsc::UnboundedReceiver<Op>,
    events: mpsc::UnboundedSender<Event>,
    state: SessionState,
    next_seq: u64,
    started: Instant,
    termination: Condition,
    rng: StdRng,
    pause_requested: bool,
    budget_override_once: bool,
    step_acknowledged: bool,
    stop_requested: Option<String>,
    front_end_gone: bool,
    current_cancel: Option<CancellationToken>,
    last_trim: HashMap<String, usize>,
    unpriced_noted: Vec<String>,
    save_failing: bool,
    last_waiting: Option<(WaitingOn, u64)>,
    image_override: Option<String>,
    live_since_persisted: u64,
    ops_handled: u64,
    workspace_record: Option<crate::workspace::WorkspaceRecord>,
}

/// Output of a running block not yet sent: pieces of one line on one stream.
struct OutputLine {
    stream: Option<crate::protocol::StreamKind>,
    text: String,
    deadline: Instant,
}

impl Default for OutputLine {
    fn default() -> Self {
        Self {
            stream: None,
            text: String::new(),
            deadline: Instant::now(),
        }
    }
}

impl OutputLine {
    /// Longest a piece waits for the rest of its line.
    const WAIT: std::time::Duration = std::time::Duration::from_millis(15);
    /// Sent at once beyond this many bytes.
    const MAX: usize = 16 * 1024;

    fn is_pending(&self) -> bool {
        self.stream.is_some()
    }

    fn push(&mut self, stream: crate::protocol::StreamKind, text: &str) {
        if self.stream.is_none() {
            self.deadline = Instant::now() + Self::WAIT;
        }
        self.stream = Some(stream);
        self.text.push_str(text);
    }
}

/// Seqs a resumed session skips past the last record of its log: live-only events (deltas,
/// status) of the crashed run used seqs that are not in the log.
pub const RESUME_SEQ_GAP: u64 = 10_000;
/// Live-only events in a row after which a record is written (see `RESUME_SEQ_GAP`).
const LIVE_SEQ_CHECKPOINT: u64 = 9_000;

/// How a model call ended.
struct CallOutcome {
    text: String,
    interrupted: bool,
    error: Option<ProviderError>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Orchestrator {
    fn new(
        setup: SessionSetup,
        ops: mpsc::UnboundedReceiver<Op>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        let termination = Condition::from_team(&setup.team);
        let rng = match setup.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Self {
            id: setup.id,
            team: setup.team,
            task: setup.task,
            initial_mode: setup.mode,
            models: setup.models,
            executor: setup.executor,
            workspace: setup.workspace,
            workspace_record: setup.workspace_record,
            prices: setup.prices,
            sink: setup.sink,
            resume: setup.resume,
            ops,
            events,
            state: SessionState::default(),
            next_seq: 1,
            started: Instant::now(),
            termination,
            rng,
            pause_requested: false,
            budget_override_once: false,
            step_acknowledged: false,
            stop_requested: None,
            front_end_gone: false,
            current_cancel: None,
            last_trim: HashMap::new(),
            unpriced_noted: Vec::new(),
            save_failing: false,
            last_waiting: None,
            image_override: setup.image_override,
            live_since_persisted: 0,
            ops_handled: 0,
        }
    }

    /// Records, folds and forwards one event.
    async fn emit(&mut self, kind: EventKind) {
        let ev = Event {
            seq: self.next_seq,
            session: self.id.clone(),
            ts_ms: now_ms(),
            kind,
        };
        self.next_seq += 1;
        let mut save_note = None;
        if ev.kind.is_persisted() {
            self.live_since_persisted = 0;
            match self.sink.append(&ev).await {
                Ok(()) => {
                    if self.save_failing {
                        self.save_failing = false;
                        save_note = Some(EventKind::Notice {
                            message: "session saving again".into(),
                        });
                    }
                }
                Err(e) => {
                    self.save_failing = true;
                    tracing::error!("save failed: {e}");
                    save_note = Some(EventKind::Error {
                        message: format!("{e} (the session goes on in memory)"),
                    });
                }
            }
        } else {
            self.live_since_persisted += 1;
        }
        self.state.apply(&ev);
        let _ = self.events.send(ev);
        // After the event it is about, so seqs stay in order.
        if let Some(note) = save_note {
            self.forward_live(note);
        }
        if self.live_since_persisted >= LIVE_SEQ_CHECKPOINT {
            // A resumed session skips RESUME_SEQ_GAP seqs past the log; a checkpoint keeps the
            // live-only events between two records below that, so no seq is ever used twice.
            Box::pin(self.emit(EventKind::Notice {
                message: "still streaming".into(),
            }))
            .await;
        }
    }

    /// Sends a live-only event to the front end (not recorded, no seq of its own).
    fn forward_live(&mut self, kind: EventKind) {
        self.live_since_persisted += 1;
        let ev = Event {
            seq: self.next_seq,
            session: self.id.clone(),
            ts_ms: now_ms(),
            kind,
        };
        self.next_seq += 1;
        let _ = self.events.send(ev);
    }

    async fn run(mut self) -> SessionState {
        if let Some(log) = self.resume.take() {
            let recorded = crate::workspace::WorkspaceRecord::last_in(&log);
            for ev in log {
                self.state.apply(&ev);
                let _ = self.events.send(ev);
            }
            self.next_seq = self.state.last_seq + 1 + RESUME_SEQ_GAP;
            if let Some(team) = self.state.team.clone() {
                self.termination = Condition::from_team(&team);
                self.team = team;
            }
            if self.state.terminated.is_none() {
                self.emit(EventKind::Notice {
                    message: "session resumed".into(),
                })
                .await;
                // The workspace was found at a new place (`resume --workspace`).
                if let Some(rec) = self.workspace_record.clone()
                    && recorded.as_ref() != Some(&rec)
                {
                    self.emit(rec.to_event()).await;
                }
                self.complete_interrupted_steps().await;
            }
        } else {
            self.emit(EventKind::SessionStarted {
                team: self.team.name.clone(),
                task: self.task.clone(),
                schema: SCHEMA_VERSION,
                team_config: Some(Box::new(self.team.clone())),
                mode: self.initial_mode,
            })
            .await;
            if let Some(rec) = self.workspace_record.clone() {
                self.emit(rec.to_event()).await;
            }
            if let Some(message) = self.demo_prices_note() {
                self.emit(EventKind::Notice { message }).await;
            }
            if !self.team.agents.iter().any(|a| a.can_execute) {
                let message = format!(
                    "no agent of team {} can execute code: their code blocks are shown, never run; set can_execute = true on an agent in the team file to run its code in the sandbox",
                    self.team.name
                );
                self.emit(EventKind::Notice { message }).await;
            }
            if !self.task.trim().is_empty() {
                let task = self.task.clone();
                self.emit(EventKind::Message {
                    agent: HUMAN.into(),
                    content: task,
                    to: None,
                })
                .await;
            }
        }
        self.turn_loop().await;
        if let Err(e) = self.sink.sync().await {
            self.forward_live(EventKind::Error {
                message: e.to_string(),
            });
        }
        self.executor.shutdown(&self.id).await;
        self.state
    }

    async fn turn_loop(&mut self) {
        loop {
            while let Ok(op) = self.ops.try_recv() {
                self.handle_op(op).await;
            }
            if self.state.terminated.is_some() {
                return;
            }
            if let Some(reason) = self.stop_requested.take() {
                self.emit(EventKind::Terminated { reason }).await;
                return;
            }
            if self.front_end_gone {
                return;
            }
            if self.state.paused.is_some() {
                self.wait_op(WaitingOn::Continue).await;
                continue;
            }
            if self.state.pending.is_some() {
                // Rules and the mode may have changed since the approval was asked.
                self.auto_resolve().await;
                if self.state.pending.as_ref().is_some_and(|p| p.all_decided()) {
                    self.execute_pending().await;
                } else {
                    self.wait_op(WaitingOn::Approval).await;
                }
                continue;
            }
            if let Some(reason) = self.termination.check(&self.state, self.started.elapsed()) {
                self.emit(EventKind::Terminated { reason }).await;
                return;
            }
            let max_auto = self.team.termination.max_consecutive_auto_replies;
            if max_auto > 0 && self.state.consecutive_auto >= max_auto {
                let reason = format!(
                    "max_consecutive_auto_replies reached (an agent replied {max_auto} times in a row without the human)"
                );
                if self.state.mode == SessionMode::Auto {
                    self.emit(EventKind::Terminated { reason }).await;
                    return;
                }
                let reason = format!("{reason}; continue, send a message, or stop");
                self.emit(EventKind::Paused {
                    reason,
                    kind: PauseKind::AutoReplies,
                })
                .await;
                continue;
            }
            if let Some(reason) = detect_loop(&self.state) {
                let reason = format!("{reason}; continue, send a message, or stop");
                self.emit(EventKind::Paused {
                    reason,
                    kind: PauseKind::Loop,
                })
                .await;
                continue;
            }
            if self.pause_requested {
                self.pause_requested = false;
                self.emit(EventKind::Paused {
                    reason: "paused by the human".into(),
                    kind: PauseKind::Human,
                })
                .await;
                continue;
            }
            if self.state.speaker_requested.is_some() {
                self.wait_op(WaitingOn::Speaker).await;
                continue;
            }
            if !self.state.history.iter().any(|h| h.agent == HUMAN) {
                self.wait_op(WaitingOn::Message).await;
                continue;
            }
            if let Some(agent) = self.state.speaking.clone() {
                if self.state.mode == SessionMode::Step && !self.step_acknowledged {
                    self.step_acknowledged = true;
                    let reason = format!("step mode: {agent} speaks next; continue to let it");
                    self.emit(EventKind::Paused {
                        reason,
                        kind: PauseKind::Step,
                    })
                    .await;
                    continue;
                }
                self.step_acknowledged = false;
                self.agent_turn(&agent).await;
                continue;
            }
            self.select_speaker().await;
        }
    }

    /// Waits for one op (or the end of the front end) and handles it.
    async fn wait_op(&mut self, on: WaitingOn) {
        if self.last_waiting != Some((on, self.next_seq - 1)) {
            let ops_handled = self.ops_handled;
            self.forward_live(EventKind::Waiting { on, ops_handled });
            self.last_waiting = Some((on, self.next_seq - 1));
        }
        match self.ops.recv().await {
            Some(op) => {
                self.handle_op(op).await;
                // Whatever the op did, say again what we wait for.
                self.last_waiting = None;
            }
            None => self.front_end_gone = true,
        }
    }

    fn is_agent(&self, name: &str) -> bool {
        self.team.agents.iter().any(|a| a.name == name)
    }

    async fn error(&mut self, message: String) {
        self.emit(EventKind::Error { message }).await;
    }

    async fn handle_op(&mut self, op: Op) {
        self.ops_handled += 1;
        match op {
            Op::ResolveApproval {
                id,
                block,
                decision,
                remember,
                allow_network,
            } => {
                let Some(p) = self.state.pending.as_ref() else {
                    return self
                        .error(format!("no approval is open (got a decision for #{id})"))
                        .await;
                };
                if p.id != id {
                    let open = p.id;
                    return self
                        .error(format!(
                            "approval #{id} is not open; the open one is #{open}"
                        ))
                        .await;
                }
                let Some(slot) = p.decisions.get(block) else {
                    let n = p.blocks.len();
                    return self
                        .error(format!(
                            "approval #{id} has {n} blocks; there is no block {block}"
                        ))
                        .await;
                };
                if slot.is_some() {
                    return self
                        .error(format!(
                            "block {block} of approval #{id} is already decided"
                        ))
                        .await;
                }
                if let Decision::Edit { code } = &decision
                    && code.trim().is_empty()
                {
                    // An edit that leaves nothing would run nothing: say so, keep the block open.
                    return self
                        .error(format!(
                            "an empty edit would run nothing: block {block} of approval #{id} stays \
                             open; reject it (with a reason) or skip it instead"
                        ))
                        .await;
                }
                let original = p.blocks[block].code.clone();
                if let Some(rule) = remember
                    && matches!(decision, Decision::Approve | Decision::Edit { .. })
                {
                    self.emit(EventKind::PolicyAdded { rule }).await;
                }
                let (decision, code, reason) = match decision {
                    Decision::Approve => (DecisionKind::Approved, None, None),
                    Decision::Edit { code } if code == original => {
                        (DecisionKind::Approved, None, None)
                    }
                    Decision::Edit { code } => (DecisionKind::Edited, Some(code), None),
                    Decision::Reject { reason } => (DecisionKind::Rejected, None, Some(reason)),
                    Decision::Skip => (DecisionKind::Skipped, None, None),
                };
                let allow_network = allow_network
                    && matches!(decision, DecisionKind::Approved | DecisionKind::Edited);
                self.emit(EventKind::ApprovalResolved {
                    id,
                    block,
                    decision,
                    code,
                    reason,
                    by_rule: None,
                    allow_network,
                })
                .await;
            }
            Op::ApproveAll { id } => {
                let Some(p) = self.state.pending.as_ref().filter(|p| p.id == id) else {
                    return self.error(format!("approval #{id} is not open")).await;
                };
                let open: Vec<usize> = p
                    .decisions
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.is_none())
                    .map(|(i, _)| i)
                    .collect();
                for block in open {
                    self.emit(EventKind::ApprovalResolved {
                        id,
                        block,
                        decision: DecisionKind::Approved,
                        code: None,
                        reason: None,
                        by_rule: None,
                        allow_network: false,
                    })
                    .await;
                }
            }
            Op::UserMessage { text, to } => {
                if let Some(t) = &to
                    && !self.is_agent(t)
                {
                    return self
                        .error(format!("no agent named {t:?} for a private note"))
                        .await;
                }
                let group = to.is_none();
                self.emit(EventKind::Message {
                    agent: HUMAN.into(),
                    content: text,
                    to,
                })
                .await;
                // Steering the agents answers a loop or auto-replies pause.
                if group
                    && matches!(
                        self.state.paused,
                        Some(PauseKind::Loop | PauseKind::AutoReplies)
                    )
                {
                    self.emit(EventKind::Resumed {}).await;
                }
            }
            Op::SelectSpeaker { agent } => {
                let Some(cands) = self.state.speaker_requested.clone() else {
                    return self
                        .error("no speaker choice is pending; use pin_next_speaker".into())
                        .await;
                };
                if !cands.contains(&agent) {
                    return self
                        .error(format!(
                            "{agent:?} cannot speak next; choose one of {}",
                            cands.join(", ")
                        ))
                        .await;
                }
                self.emit(EventKind::SpeakerSelected {
                    agent,
                    note: Some("chosen by the human".into()),
                })
                .await;
            }
            Op::PinNextSpeaker { agent } => {
                if !self.is_agent(&agent) {
                    return self.error(format!("no agent named {agent:?}")).await;
                }
                self.emit(EventKind::SpeakerPinned { agent }).await;
            }
            Op::Mute { agent, muted } => {
                if !self.is_agent(&agent) {
                    return self.error(format!("no agent named {agent:?}")).await;
                }
                self.emit(EventKind::AgentMuted { agent, muted }).await;
            }
            Op::AddPolicy { rule } => self.emit(EventKind::PolicyAdded { rule }).await,
            Op::RevokePolicy { rule } => {
                if !self.state.rules.contains(&rule) {
                    return self
                        .error(format!(
                            "no such auto-approval rule: {}",
                            serde_json::to_string(&rule).unwrap_or_default()
                        ))
                        .await;
                }
                self.emit(EventKind::PolicyRevoked { rule }).await;
            }
            Op::SetMode { mode } => {
                self.emit(EventKind::ModeChanged { mode }).await;
                self.auto_resolve().await;
            }
            Op::SetBudget { usd } => {
                if !(usd.is_finite() && usd > 0.0) {
                    return self
                        .error(format!(
                            "budget must be a positive amount of USD, got {usd}"
                        ))
                        .await;
                }
                self.emit(EventKind::BudgetChanged { cap_usd: usd }).await;
            }
            Op::Pause => self.pause_requested = true,
            Op::Continue => match self.state.paused {
                Some(kind) => {
                    match kind {
                        PauseKind::Budget => self.budget_override_once = true,
                        // The human saw who speaks next and let it.
                        PauseKind::Step => self.step_acknowledged = true,
                        PauseKind::Loop
                        | PauseKind::Human
                        | PauseKind::RetryWait
                        | PauseKind::ProviderError
                        | PauseKind::Sandbox
                        | PauseKind::AutoReplies => {}
                    }
                    self.emit(EventKind::Resumed {}).await;
                }
                None => {
                    self.error("nothing to continue: the session is not paused".into())
                        .await
                }
            },
            Op::Interrupt => {
                if let Some(c) = &self.current_cancel {
                    c.cancel();
                }
            }
            Op::Stop { reason } => {
                self.stop_requested = Some(reason.unwrap_or_else(|| "stopped by the human".into()));
                if let Some(c) = &self.current_cancel {
                    c.cancel();
                }
            }
            Op::ReportInputError { message } => {
                self.error(crate::text_safety::excerpt(&message, 300)).await;
            }
        }
    }

    /// Resolves undecided blocks of the open approval that a rule or the mode approves.
    async fn auto_resolve(&mut self) {
        let Some(p) = self.state.pending.clone() else {
            return;
        };
        for (i, block) in p.blocks.iter().enumerate() {
            if p.decisions[i].is_some() {
                continue;
            }
            if let Some(rule) =
                approval::matching_rule(self.state.mode, &self.state.rules, &p.agent, block)
            {
                self.emit(EventKind::ApprovalResolved {
                    id: p.id,
                    block: i,
                    decision: DecisionKind::Approved,
                    code: None,
                    reason: None,
                    by_rule: Some(rule),
                    allow_network: false,
                })
                .await;
            }
        }
    }

    async fn select_speaker(&mut self) {
        let team = self.team.clone();
        if let Some(agent) = self.state.pinned.clone()
            && !self.state.muted.contains(&agent)
        {
            self.emit(EventKind::SpeakerSelected {
                agent,
                note: Some("pinned by the human".into()),
            })
            .await;
            return;
        }
        let (cands, graph_note) = selection::candidates(&team, &self.state);
        if cands.is_empty() {
            self.emit(EventKind::Paused {
                reason: "every agent is muted; unmute one or send a message".into(),
                kind: PauseKind::Human,
            })
            .await;
            return;
        }
        let last = self.state.last_speaker.clone();
        let (agent, mut note) = match team.orchestration.speaker_selection {
            SpeakerSelection::RoundRobin => {
                (selection::round_robin(&team, last.as_deref(), &cands), None)
            }
            SpeakerSelection::Random => (cands.choose(&mut self.rng).cloned(), None),
            SpeakerSelection::Manual => {
                self.emit(EventKind::SpeakerRequested { candidates: cands })
                    .await;
                return;
            }
            SpeakerSelection::Auto => {
                if cands.len() == 1 {
                    (cands.first().cloned(), None)
                } else {
                    let Some((agent, note)) = self.auto_select(&cands).await else {
                        if self.stop_requested.is_none() && !self.front_end_gone {
                            self.emit(EventKind::Paused {
                                reason: "interrupted while choosing the next speaker".into(),
                                kind: PauseKind::Human,
                            })
                            .await;
                        }
                        return;
                    };
                    (agent, note)
                }
            }
        };
        if let Some(g) = graph_note {
            note = Some(match note {
                Some(n) => format!("{g}; {n}"),
                None => g,
            });
        }
        let agent = agent.or_else(|| cands.first().cloned()).unwrap_or_default();
        self.emit(EventKind::SpeakerSelected { agent, note }).await;
    }

    /// Asks the selector model; one retry on an unparseable answer, then round robin. Returns
    /// the pick and a note for the transcript, or `None` when the human interrupted the call.
    async fn auto_select(&mut self, cands: &[String]) -> Option<(Option<String>, Option<String>)> {
        let team = self.team.clone();
        let model_ref = team
            .orchestration
            .selector_model
            .clone()
            .or_else(|| team.agents.first().map(|a| a.model.clone()))
            .unwrap_or_default();
        let fallback = selection::round_robin(&team, self.state.last_speaker.as_deref(), cands);
        let Some(model) = self.models.get(&model_ref).cloned() else {
            return Some((
                fallback,
                Some(format!(
                    "selector model {model_ref} is not available; fell back to round robin"
                )),
            ));
        };
        let mut answers = Vec::new();
        for strict in [false, true] {
            let req = selection::selector_request(&team, &self.state, cands, &model_ref, strict);
            let projected =
                self.prices
                    .project_request(&model_ref, &req, u64::from(DEFAULT_MAX_TOKENS));
            if let (Some(cap), Some(p)) = (self.state.budget_usd, projected)
                && self.state.spend.usd + p > cap
            {
                return Some((
                    fallback,
                    Some(
                        "the selector's call could cross the budget; fell back to round robin"
                            .into(),
                    ),
                ));
            }
            let out = self.call_model("selector", model.clone(), req, false).await;
            if let Some(e) = out.error {
                return Some((
                    fallback,
                    Some(format!(
                        "selector call failed ({e}); fell back to round robin"
                    )),
                ));
            }
            if out.interrupted {
                // Nobody speaks: the human interrupted to take over.
                return None;
            }
            if let Some(a) = selection::parse_selector_answer(&out.text, cands) {
                let note = (!answers.is_empty())
                    .then(|| "selector named an agent on its second try".to_string());
                return Some((Some(a), note));
            }
            answers.push(out.text);
        }
        let shown: Vec<String> = answers
            .iter()
            .map(|a| format!("{:?}", a.chars().take(60).collect::<String>()))
            .collect();
        Some((
            fallback,
            Some(format!(
                "selector answered {} without naming one agent; fell back to round robin",
                shown.join(" then ")
            )),
        ))
    }

    /// Projects the next call's cost; pauses (and returns false) when it would cross a cap.
    async fn budget_allows(&mut self, agent: &str, model_ref: &str, req: &ChatRequest) -> bool {
        let Some(projected) =
            self.prices
                .project_request(model_ref, req, u64::from(DEFAULT_MAX_TOKENS))
        else {
            if (self.state.budget_usd.is_some() || self.agent_cap(agent).is_some())
                && !self.unpriced_noted.iter().any(|m| m == model_ref)
            {
                self.unpriced_noted.push(model_ref.to_string());
                self.emit(EventKind::Notice {
                    message: format!(
                        "{model_ref} has no price: its calls are not counted against the budget; add [pricing.\"{model_ref}\"] to config.toml"
                    ),
                })
                .await;
            }
            return true;
        };
        if self.budget_override_once {
            self.budget_override_once = false;
            return true;
        }
        let spent = self.state.spend.usd;
        let agent_spent = self
            .state
            .spend_by_agent
            .get(agent)
            .map(|s| s.usd)
            .unwrap_or(0.0);
        let caps = [
            self.state.budget_usd.map(|cap| {
                (spent, cap, format!(
                    "budget: the next call ({agent}, {model_ref}) could cost up to ${projected:.4}; ${spent:.4} of ${cap:.2} spent. Raise the budget or continue once, or stop"
                ))
            }),
            self.agent_cap(agent).map(|cap| {
                (agent_spent, cap, format!(
                    "budget: {agent}'s next call could cost up to ${projected:.4}; it has spent ${agent_spent:.4} of its ${cap:.2}. Continue once, or stop"
                ))
            }),
        ];
        for (spent, cap, reason) in caps.into_iter().flatten() {
            if spent + projected > cap {
                self.emit(EventKind::Paused {
                    reason,
                    kind: PauseKind::Budget,
                })
                .await;
                return false;
            }
        }
        true
    }

    fn agent_cap(&self, agent: &str) -> Option<f64> {
        self.team
            .agents
            .iter()
            .find(|a| a.name == agent)
            .and_then(|a| a.budget_usd)
    }

    /// Streams one model call, handling ops meanwhile; emits deltas (when `visible`) and usage.
    async fn call_model(
        &mut self,
        label: &str,
        model: Arc<dyn ChatModel>,
        req: ChatRequest,
        visible: bool,
    ) -> CallOutcome {
        let cancel = CancellationToken::new();
        self.current_cancel = Some(cancel.clone());
        // Kept to count the prompt only if the provider reports no usage (an interrupted call).
        let sent = req.clone();
        let mut stream = model.stream(req, cancel.clone());
        let mut out = CallOutcome {
            text: String::new(),
            interrupted: false,
            error: None,
        };
        let mut usage: Option<(TokenUsage, bool)> = None;
        let mut served: Option<String> = None;
        let mut ops_open = true;
        loop {
            tokio::select! {
                biased;
                op = self.ops.recv(), if ops_open => match op {
                    Some(op) => self.handle_op(op).await,
                    None => { ops_open = false; self.front_end_gone = true; cancel.cancel(); }
                },
                item = stream.next() => match item {
                    Some(Ok(ChatChunk::Delta(d))) => {
                        if visible {
                            if out.text.is_empty() {
                                self.emit(EventKind::AgentStatus { agent: label.into(), state: AgentActivity::Streaming }).await;
                            }
                            self.emit(EventKind::MessageDelta { agent: label.into(), delta: d.clone() }).await;
                        }
                        out.text.push_str(&d);
                    }
                    Some(Ok(ChatChunk::Usage { usage: u, estimated, served_model })) => {
                        usage = Some((u, estimated));
                        served = served_model;
                    }
                    Some(Ok(ChatChunk::Retrying { attempt, wait_ms, reason })) => {
                        if visible {
                            self.emit(EventKind::AgentStatus { agent: label.into(), state: AgentActivity::Retrying }).await;
                        }
                        self.emit(EventKind::Notice {
                            message: format!("{label}: {reason}; retry {attempt} in {:.1} s", wait_ms as f64 / 1000.0),
                        }).await;
                    }
                    Some(Ok(ChatChunk::Done { .. })) | None => break,
                    Some(Err(ProviderError::Cancelled)) => { out.interrupted = true; break; }
                    Some(Err(e)) => { out.error = Some(e); break; }
                },
            }
            if cancel.is_cancelled() {
                out.interrupted = true;
                break;
            }
        }
        drop(stream);
        self.current_cancel = None;
        let (u, estimated) = match usage {
            Some(u) => u,
            None if out.text.is_empty() && out.error.is_some() => return out,
            None => (
                TokenUsage {
                    input_tokens: estimate_request_tokens(&sent),
                    output_tokens: estimate_tokens(&out.text),
                    ..Default::default()
                },
                true,
            ),
        };
        let model_ref = model.model_ref().to_string();
        let usd = self.prices.cost(&model_ref, &u).or_else(|| {
            // A deployment name (Azure) has no price; the model the server reports may.
            let (provider, _) = crate::config::split_model_ref(&model_ref)?;
            self.prices
                .cost(&format!("{provider}/{}", served.as_deref()?), &u)
        });
        self.emit(EventKind::Usage {
            agent: label.into(),
            model: model_ref,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cached_tokens: u.cached_tokens,
            cache_creation_tokens: u.cache_creation_tokens,
            usd,
            estimated,
        })
        .await;
        if let Some(cap) = self.state.budget_usd {
            let spent = self.state.spend.usd;
            let warn_at = self.team.budget.warn_at;
            if !self.state.budget_warned && spent >= cap * warn_at {
                self.emit(EventKind::BudgetWarning {
                    spent_usd: spent,
                    cap_usd: cap,
                })
                .await;
            }
        }
        out
    }

    async fn agent_turn(&mut self, agent: &str) {
        let team = self.team.clone();
        let Some(spec) = team.agents.iter().find(|a| a.name == agent).cloned() else {
            let message = format!("agent {agent:?} is not in the team; pick another speaker");
            self.error(message.clone()).await;
            self.emit(EventKind::Paused {
                reason: message,
                kind: PauseKind::Human,
            })
            .await;
            return;
        };
        let Some(model) = self.models.get(&spec.model).cloned() else {
            let message = format!(
                "{agent} cannot speak: model {} is not available (its provider is not configured or its API key is missing); fix config.toml or the key and continue",
                spec.model
            );
            self.error(message.clone()).await;
            self.emit(EventKind::Paused {
                reason: message,
                kind: PauseKind::ProviderError,
            })
            .await;
            return;
        };
        let built = context::build_request(&team, &spec, &self.state, &spec.model);
        if built.dropped > 0 && self.last_trim.get(agent) != Some(&built.dropped) {
            self.last_trim.insert(agent.to_string(), built.dropped);
            let limit = spec.max_context_tokens.unwrap_or_default();
            self.emit(EventKind::Notice {
                message: format!(
                    "{agent}'s context trimmed to {limit} tokens: the {} oldest messages after the task are left out",
                    built.dropped
                ),
            })
            .await;
        }
        if !self.budget_allows(agent, &spec.model, &built.request).await {
            return;
        }
        self.emit(EventKind::AgentStatus {
            agent: agent.into(),
            state: AgentActivity::Thinking,
        })
        .await;
        let out = self.call_model(agent, model, built.request, true).await;
        if let Some(e) = out.error {
            self.emit(EventKind::AgentStatus {
                agent: agent.into(),
                state: AgentActivity::Idle,
            })
            .await;
            if !out.text.is_empty() {
                let content = format!("{}\n\n[reply cut off: {e}]", out.text);
                self.emit(EventKind::Message {
                    agent: agent.into(),
                    content,
                    to: None,
                })
                .await;
            }
            let kind = match e {
                ProviderError::RetryAfterTooLong { .. } => PauseKind::RetryWait,
                ProviderError::MissingKey { .. }
                | ProviderError::Auth { .. }
                | ProviderError::Http { .. }
                | ProviderError::RetriesExhausted { .. }
                | ProviderError::Connect { .. }
                | ProviderError::Stream { .. }
                | ProviderError::IdleTimeout { .. }
                | ProviderError::Cancelled
                | ProviderError::Config(_) => PauseKind::ProviderError,
            };
            let message = e.to_string();
            self.error(format!("{agent}: {message}")).await;
            let what = if out.text.is_empty() {
                format!("retry {agent}'s turn")
            } else {
                "go on".into()
            };
            self.emit(EventKind::Paused {
                reason: format!("{agent}: {message}; continue to {what}, or stop"),
                kind,
            })
            .await;
            return;
        }
        if out.interrupted {
            let content = if out.text.is_empty() {
                "[interrupted by the human before replying]".to_string()
            } else {
                format!("{}\n\n[interrupted by the human]", out.text)
            };
            self.emit(EventKind::Message {
                agent: agent.into(),
                content,
                to: None,
            })
            .await;
            self.emit(EventKind::AgentStatus {
                agent: agent.into(),
                state: AgentActivity::Idle,
            })
            .await;
            if self.stop_requested.is_none() && !self.front_end_gone {
                self.emit(EventKind::Paused {
                    reason: format!("{agent} interrupted by the human"),
                    kind: PauseKind::Human,
                })
                .await;
            }
            return;
        }
        self.emit(EventKind::Message {
            agent: agent.into(),
            content: out.text.clone(),
            to: None,
        })
        .await;
        if spec.can_execute && self.offer_blocks(agent, &out.text).await {
            return;
        }
        if !spec.can_execute {
            self.note_code_not_offered(agent, &out.text).await;
        }
        self.emit(EventKind::AgentStatus {
            agent: agent.into(),
            state: AgentActivity::Idle,
        })
        .await;
    }

    /// Sends what `line` holds as one `execution_output` event.
    async fn flush_output(&mut self, id: u64, block: usize, line: &mut OutputLine) {
        let Some(stream) = line.stream.take() else {
            return;
        };
        let text = std::mem::take(&mut line.text);
        self.emit(EventKind::ExecutionOutput {
            id,
            block,
            stream,
            text,
        })
        .await;
    }

    /// What the transcript says at the start of a session whose costs are demo prices.
    fn demo_prices_note(&self) -> Option<String> {
        let model = crate::engine::cost::DEMO_MODEL;
        if !self.team.agents.iter().any(|a| a.model == model) {
            return None;
        }
        let p = self.prices.lookup(model)?;
        Some(format!(
            "demo prices: the costs shown are what {model} would cost at ${:.2} in / ${:.2} out per million tokens; nothing is billed",
            p.input_per_mtok, p.output_per_mtok
        ))
    }

    /// The blocks of `text` the sandbox could run.
    fn executable_blocks(&self, text: &str) -> Vec<crate::protocol::CodeBlock> {
        let interpreters = &self.team.executor.interpreters;
        crate::engine::codeblocks::extract_blocks(text)
            .into_iter()
            .filter(|b| crate::engine::codeblocks::is_executable(&b.language, interpreters))
            .collect()
    }

    /// The first time an agent that cannot execute writes runnable code, says once why it is
    /// not offered. Counted from the history, so a resumed session does not say it again.
    async fn note_code_not_offered(&mut self, agent: &str, text: &str) {
        if self.executable_blocks(text).is_empty() {
            return;
        }
        // Borrowed, not copied (this runs for every such message of a long session), and
        // counted only as far as two.
        let with_code = self
            .state
            .history
            .iter()
            .filter(|h| h.agent == agent && !self.executable_blocks(&h.content).is_empty())
            .take(2)
            .count();
        if with_code == 1 {
            self.emit(EventKind::Notice {
                message: format!(
                    "{agent}'s code is shown, never offered to run: {agent} has can_execute = false in the team file"
                ),
            })
            .await;
        }
    }

    /// Offers the executable blocks of `agent`'s message for approval (rules and the mode may
    /// approve them at once). Returns whether there were any.
    async fn offer_blocks(&mut self, agent: &str, text: &str) -> bool {
        let mut blocks = self.executable_blocks(text);
        if blocks.is_empty() {
            return false;
        }
        for (i, b) in blocks.iter_mut().enumerate() {
            b.index = i;
        }
        let id = self.state.last_approval_id + 1;
        self.emit(EventKind::ApprovalRequested {
            id,
            agent: agent.into(),
            blocks,
        })
        .await;
        // The same code a third time: ask the human about the loop before the code.
        if let Some(reason) = detect_loop(&self.state) {
            let reason = format!("{reason}; continue, send a message, or stop");
            self.emit(EventKind::Paused {
                reason,
                kind: PauseKind::Loop,
            })
            .await;
            return true;
        }
        self.auto_resolve().await;
        if self
            .state
            .pending
            .as_ref()
            .is_some_and(|p| !p.all_decided())
        {
            self.emit(EventKind::AgentStatus {
                agent: agent.into(),
                state: AgentActivity::AwaitingApproval,
            })
            .await;
        }
        true
    }

    /// After a crash, finishes what the dead run had started but not recorded: the task message
    /// of a brand-new session, the approval for a message with code.
    async fn complete_interrupted_steps(&mut self) {
        if !self.state.history.iter().any(|h| h.agent == HUMAN)
            && !self.state.task.trim().is_empty()
        {
            let task = self.state.task.clone();
            self.emit(EventKind::Message {
                agent: HUMAN.into(),
                content: task,
                to: None,
            })
            .await;
        }
        if self.state.pending.is_none()
            && let Some((agent, text)) = self
                .state
                .unoffered_message()
                .map(|(a, t)| (a.to_string(), t.to_string()))
            && self
                .team
                .agents
                .iter()
                .any(|a| a.name == agent && a.can_execute)
        {
            self.offer_blocks(&agent, &text).await;
        }
    }

    /// Closes a started block the executor gave no result for, so every start has a finish.
    async fn finish_without_result(
        &mut self,
        id: u64,
        block: usize,
        output: String,
        interrupted: bool,
        not_run: bool,
    ) {
        self.emit(EventKind::ExecutionFinished {
            id,
            block,
            exit_code: -1,
            timed_out: false,
            truncated: false,
            duration_ms: 0,
            output,
            oom: false,
            interrupted,
            not_run,
            workspace_limit_exceeded: false,
        })
        .await;
    }

    /// Runs the approved blocks of the pending approval in order and reports back to the agent.
    async fn execute_pending(&mut self) {
        let Some(p) = self.state.pending.clone() else {
            return;
        };
        for block in p.running.iter().copied() {
            // What the block printed before the crash goes with the interruption.
            let partial = self.state.partial_output(p.id, block);
            self.finish_without_result(
                p.id,
                block,
                format!(
                    "{partial}interrupted: proctor stopped while this block was running; it was not re-run"
                ),
                true,
                false,
            )
            .await;
        }
        let mut sandbox_error: Option<String> = None;
        let mut interrupted = false;
        let mut policy = self.team.executor.clone();
        if let Some(img) = self.image_override.clone() {
            policy.image = img;
        }
        for (i, block) in p.blocks.iter().enumerate() {
            let Some(d) = self
                .state
                .pending
                .as_ref()
                .and_then(|p| p.decisions[i].clone())
            else {
                continue;
            };
            let already = self
                .state
                .pending
                .as_ref()
                .is_some_and(|p| p.results[i].is_some());
            if already || !matches!(d.decision, DecisionKind::Approved | DecisionKind::Edited) {
                continue;
            }
            if interrupted || sandbox_error.is_some() {
                continue;
            }
            let code = d.code.clone().unwrap_or_else(|| block.code.clone());
            let req = ExecRequest {
                session: self.id.clone(),
                workspace: self.workspace.clone(),
                language: block.language.clone(),
                code,
                filename: block.filename.clone(),
                policy: policy.clone(),
                allow_network: d.allow_network,
                user_workspace: self
                    .workspace_record
                    .as_ref()
                    .is_some_and(|r| r.mode == crate::protocol::WorkspaceMode::Rw),
            };
            self.emit(EventKind::AgentStatus {
                agent: p.agent.clone(),
                state: AgentActivity::Executing,
            })
            .await;
            // On disk before the code can start: a crash from here on reports the block as
            // interrupted on resume instead of running it again.
            self.emit(EventKind::ExecutionStarted {
                id: p.id,
                block: i,
                language: block.language.clone(),
            })
            .await;
            let cancel = CancellationToken::new();
            self.current_cancel = Some(cancel.clone());
            let mut stream = self.executor.run(req, cancel.clone());
            let mut finished = false;
            // The executor says when the code itself starts (after the file and the sandbox).
            let mut code_started = false;
            let mut block_refused: Option<String> = None;
            let mut ops_open = true;
            // Output pieces of one line ("tick", " ", "9\n") go out as one event.
            let mut line = OutputLine::default();
            loop {
                tokio::select! {
                    biased;
                    op = self.ops.recv(), if ops_open => match op {
                        Some(op) => self.handle_op(op).await,
                        None => { ops_open = false; self.front_end_gone = true; cancel.cancel(); }
                    },
                    _ = tokio::time::sleep_until(line.deadline), if line.is_pending() => {
                        self.flush_output(p.id, i, &mut line).await;
                    }
                    item = stream.next() => match item {
                        Some(Ok(ExecEvent::Pull(pp))) => {
                            self.emit(EventKind::ImagePull {
                                image: pp.image, status: pp.status, current: pp.current, total: pp.total,
                                layers: pp.layers, layers_done: pp.layers_done,
                            }).await;
                        }
                        Some(Ok(ExecEvent::Started)) => code_started = true,
                        Some(Ok(ExecEvent::Output { stream: s, text })) => {
                            if line.stream.is_some_and(|cur| cur != s) {
                                self.flush_output(p.id, i, &mut line).await;
                            }
                            line.push(s, &text);
                            if text.ends_with('\n') || line.text.len() >= OutputLine::MAX {
                                self.flush_output(p.id, i, &mut line).await;
                            }
                        }
                        Some(Ok(ExecEvent::Finished(o))) => {
                            self.flush_output(p.id, i, &mut line).await;
                            finished = true;
                            if o.cancelled {
                                interrupted = true;
                            }
                            self.emit(EventKind::ExecutionFinished {
                                id: p.id, block: i, exit_code: o.exit_code, timed_out: o.timed_out,
                                truncated: o.truncated, duration_ms: o.duration_ms, output: o.output,
                                oom: o.oom, interrupted: o.cancelled, not_run: false,
                                workspace_limit_exceeded: o.workspace_limit_exceeded,
                            }).await;
                            if let Some(d) = o.changes {
                                self.emit(EventKind::WorkspaceChanged {
                                    id: p.id, block: i, created: d.created, modified: d.modified,
                                    deleted: d.deleted, notes: d.notes,
                                }).await;
                            }
                            break;
                        }
                        Some(Err(e)) => {
                            match e {
                                // Something wrong with this block only: its result, not a pause.
                                ExecError::BadFilename { .. } | ExecError::UnknownLanguage(_) => {
                                    block_refused = Some(e.to_string());
                                }
                                ExecError::Docker(_) | ExecError::Image(_) | ExecError::Other(_) => {
                                    let msg = e.to_string();
                                    self.error(format!("sandbox: {msg}")).await;
                                    sandbox_error = Some(msg);
                                }
                            }
                            break;
                        }
                        None => break,
                    },
                }
            }
            drop(stream);
            self.flush_output(p.id, i, &mut line).await;
            self.current_cancel = None;
            if !finished {
                // No result from the executor: close the block so every start has a finish.
                let cancelled = cancel.is_cancelled() && sandbox_error.is_none();
                interrupted = interrupted || cancelled;
                // The sandbox failed after the code started (e.g. the link to a remote engine
                // was cut and did not come back): the block was interrupted, with what arrived.
                let cut_short = code_started && sandbox_error.is_some() && block_refused.is_none();
                let output = match (&sandbox_error, &block_refused) {
                    (_, Some(why)) => format!("not run: {why}"),
                    (Some(msg), None) if cut_short => format!("interrupted: {msg}"),
                    (Some(msg), None) => format!("could not run: {msg}"),
                    (None, None) if cancelled => "interrupted before it finished".into(),
                    (None, None) => {
                        let msg = "the executor ended without a result".to_string();
                        sandbox_error = Some(msg.clone());
                        format!("could not run: {msg}")
                    }
                };
                // Refused or failed before the code started: the result says it never ran.
                let not_run = !code_started;
                let partial = self.state.partial_output(p.id, i);
                self.finish_without_result(
                    p.id,
                    i,
                    format!("{partial}{output}"),
                    cancelled || cut_short,
                    not_run,
                )
                .await;
            }
        }
        let Some(done) = self.state.pending.clone() else {
            return;
        };
        let not_reached = match (&sandbox_error, interrupted) {
            (Some(msg), _) => Some(format!("the sandbox could not run code: {msg}")),
            (None, true) => Some("execution was interrupted before this block".to_string()),
            (None, false) => None,
        };
        let report = approval::report(
            &done,
            not_reached.as_deref(),
            &approval::HostPaths::new(&self.workspace),
        );
        self.emit(EventKind::Message {
            agent: EXECUTOR.into(),
            content: report,
            to: None,
        })
        .await;
        self.emit(EventKind::AgentStatus {
            agent: done.agent.clone(),
            state: AgentActivity::Idle,
        })
        .await;
        if self.front_end_gone || self.stop_requested.is_some() {
            return;
        }
        if let Some(msg) = sandbox_error {
            self.emit(EventKind::Paused {
                reason: format!("sandbox could not run code: {msg}; fix it and continue, or stop"),
                kind: PauseKind::Sandbox,
            })
            .await;
        } else if interrupted {
            self.emit(EventKind::Paused {
                reason: "execution interrupted by the human".into(),
                kind: PauseKind::Human,
            })
            .await;
        }
    }
}
