//! Session state as a pure fold over `Event`s. Live events and a resumed log go through the same
//! `apply`, so a resumed session has exactly the transcript, roster, costs, counters and rules it had.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::TeamConfig;
use crate::protocol::{
    CodeBlock, DecisionKind, EXECUTOR, Event, EventKind, HUMAN, PauseKind, PolicyRule, SessionMode,
};

/// One message of the shared history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// Author.
    pub agent: String,
    /// Text.
    pub content: String,
    /// Private recipient.
    pub to: Option<String>,
}

/// The human's decision on one block, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockDecision {
    /// Kind.
    pub decision: DecisionKind,
    /// Edited code.
    pub code: Option<String>,
    /// Reason for a rejection.
    pub reason: Option<String>,
    /// Network allowed for this block.
    pub allow_network: bool,
    /// Decided by a rule, not by the human.
    pub by_rule: bool,
}

/// Result of one executed block.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockResult {
    /// Exit code.
    pub exit_code: i64,
    /// Timed out.
    pub timed_out: bool,
    /// Output truncated.
    pub truncated: bool,
    /// OOM-killed.
    pub oom: bool,
    /// Interrupted (cancel or crash).
    pub interrupted: bool,
    /// Never started (refused, or the sandbox failed); `output` says why.
    pub not_run: bool,
    /// Killed for growing the workspace past its limit.
    pub workspace_limit_exceeded: bool,
    /// Captured output.
    pub output: String,
    /// What it changed in the workspace (from `workspace_changed`).
    pub changes: Option<crate::workspace::WorkspaceDelta>,
}

/// An approval that is open or whose blocks have not all been reported back yet.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingApproval {
    /// Id.
    pub id: u64,
    /// Proposing agent.
    pub agent: String,
    /// Blocks.
    pub blocks: Vec<CodeBlock>,
    /// Decision per block.
    pub decisions: Vec<Option<BlockDecision>>,
    /// Result per block.
    pub results: Vec<Option<BlockResult>>,
    /// Blocks started but not finished.
    pub running: BTreeSet<usize>,
    /// Output seen so far of blocks that are running (capped).
    pub partial: BTreeMap<usize, String>,
}

impl PendingApproval {
    /// Every block has a decision.
    pub fn all_decided(&self) -> bool {
        self.decisions.iter().all(Option::is_some)
    }
}

/// Money and tokens of a set of model calls: per agent, per model, for the whole session.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Spend {
    /// Calls counted.
    pub calls: u64,
    /// Input tokens (cached included).
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cached input tokens.
    pub cached_tokens: u64,
    /// USD of priced calls.
    pub usd: f64,
    /// Calls whose model had no price.
    pub unpriced_calls: u64,
    /// Calls whose usage was estimated.
    pub estimated_calls: u64,
}

impl Spend {
    /// Counts one call.
    pub fn add(&mut self, input: u64, output: u64, cached: u64, usd: Option<f64>, estimated: bool) {
        self.calls += 1;
        self.input_tokens += input;
        self.output_tokens += output;
        self.cached_tokens += cached;
        match usd {
            Some(u) => self.usd += u,
            None => self.unpriced_calls += 1,
        }
        if estimated {
            self.estimated_calls += 1;
        }
    }
}

/// Everything the orchestrator knows about a session, rebuilt from its events.
#[derive(Debug, Clone, Default)]
pub struct SessionState {
    /// Session id.
    pub id: String,
    /// Team (from `session_started`).
    pub team: Option<TeamConfig>,
    /// Task.
    pub task: String,
    /// Approval mode.
    pub mode: SessionMode,
    /// Shared history (agents, human, executor).
    pub history: Vec<HistoryEntry>,
    /// Last agent that spoke.
    pub last_speaker: Option<String>,
    /// Agent selected whose message has not arrived yet.
    pub speaking: Option<String>,
    /// A manual pick is awaited.
    pub speaker_requested: Option<Vec<String>>,
    /// Agent messages so far (rounds).
    pub rounds: u32,
    /// Agent messages since the human last said or decided something.
    pub consecutive_auto: u32,
    /// Per agent: its messages since the human last said or decided something (AutoGen's
    /// `max_consecutive_auto_reply` counts per agent). `consecutive_auto` is the largest.
    pub consecutive_by_agent: BTreeMap<String, u32>,
    /// Agent the human pinned to speak next.
    pub pinned: Option<String>,
    /// Muted agents.
    pub muted: BTreeSet<String>,
    /// Auto-approval rules in force.
    pub rules: Vec<PolicyRule>,
    /// The open (or not yet reported) approval.
    pub pending: Option<PendingApproval>,
    /// Highest approval id used.
    pub last_approval_id: u64,
    /// Spend per agent.
    pub spend_by_agent: BTreeMap<String, Spend>,
    /// Spend per model.
    pub spend_by_model: BTreeMap<String, Spend>,
    /// Session total.
    pub spend: Spend,
    /// Session cap (team budget, raised by the human).
    pub budget_usd: Option<f64>,
    /// Warning already given for the current cap.
    pub budget_warned: bool,
    /// Paused, and why.
    pub paused: Option<PauseKind>,
    /// Ended, and why.
    pub terminated: Option<String>,
    /// Last seq seen.
    pub last_seq: u64,
    /// Code hashes proposed since loop detection last fired or the human continued.
    pub loop_code_counts: BTreeMap<String, u32>,
    /// Last failing executions' error signatures since the last acknowledgement.
    pub loop_errors: Vec<String>,
    /// The last agent message (its place in `history`), while its code blocks have not been
    /// offered yet (a crash right after a message leaves it here; resume offers them).
    pub unoffered: Option<usize>,
    /// The last agent messages since the last acknowledgement (their places in `history`), at
    /// most `termination::LOOP_MESSAGES`: indices, so a replayed log copies each message once.
    pub loop_messages: Vec<usize>,
}

/// Output kept per running block for an interrupted-block report.
const PARTIAL_OUTPUT_CAP: usize = 64 * 1024;

/// sha256 of code, hex; what code-hash rules match on.
pub fn code_hash(code: &str) -> String {
    use sha2::Digest;
    let normalized: String = code.trim().replace("\r\n", "\n");
    let digest = sha2::Sha256::digest(normalized.as_bytes());
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(digest.len() * 2);
    for b in digest {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    hex
}

/// The line of output that identifies an error: the last non-empty line.
pub fn error_signature(output: &str) -> String {
    output
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

impl SessionState {
    /// Folds one event into the state.
    pub fn apply(&mut self, ev: &Event) {
        self.last_seq = self.last_seq.max(ev.seq);
        if self.id.is_empty() {
            self.id = ev.session.clone();
        }
        match &ev.kind {
            EventKind::SessionStarted {
                task,
                team_config,
                mode,
                ..
            } => {
                self.task = task.clone();
                self.mode = *mode;
                if let Some(t) = team_config {
                    self.budget_usd = t.budget.usd;
                    self.team = Some((**t).clone());
                }
            }
            EventKind::SpeakerSelected { agent, .. } => {
                self.unoffered = None;
                self.pinned = None;
                self.speaking = Some(agent.clone());
                self.speaker_requested = None;
            }
            EventKind::SpeakerRequested { candidates } => {
                self.speaker_requested = Some(candidates.clone());
            }
            EventKind::AgentStatus { .. }
            | EventKind::MessageDelta { .. }
            | EventKind::ImagePull { .. }
            | EventKind::Waiting { .. } => {}
            EventKind::Message { agent, content, to } => {
                self.history.push(HistoryEntry {
                    agent: agent.clone(),
                    content: content.clone(),
                    to: to.clone(),
                });
                if agent == HUMAN {
                    self.reset_auto_replies();
                } else if agent == EXECUTOR {
                    // The executor's report closes the approval it answers.
                    self.pending = None;
                } else {
                    self.rounds += 1;
                    let n = self.consecutive_by_agent.entry(agent.clone()).or_default();
                    *n += 1;
                    self.consecutive_auto = self.consecutive_auto.max(*n);
                    self.last_speaker = Some(agent.clone());
                    self.speaking = None;
                    let at = self.history.len() - 1;
                    self.loop_messages.push(at);
                    // Loop detection reads only the last few: a long session keeps no more.
                    if self.loop_messages.len() > crate::engine::termination::LOOP_MESSAGES {
                        self.loop_messages.remove(0);
                    }
                    self.unoffered = Some(at);
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
                for s in [
                    self.spend_by_agent.entry(agent.clone()).or_default(),
                    self.spend_by_model.entry(model.clone()).or_default(),
                ] {
                    s.add(
                        *input_tokens,
                        *output_tokens,
                        *cached_tokens,
                        *usd,
                        *estimated,
                    );
                }
                self.spend.add(
                    *input_tokens,
                    *output_tokens,
                    *cached_tokens,
                    *usd,
                    *estimated,
                );
            }
            EventKind::ApprovalRequested { id, agent, blocks } => {
                self.unoffered = None;
                self.last_approval_id = self.last_approval_id.max(*id);
                for b in blocks {
                    *self.loop_code_counts.entry(code_hash(&b.code)).or_default() += 1;
                }
                self.pending = Some(PendingApproval {
                    id: *id,
                    agent: agent.clone(),
                    blocks: blocks.clone(),
                    decisions: vec![None; blocks.len()],
                    results: vec![None; blocks.len()],
                    running: BTreeSet::new(),
                    partial: BTreeMap::new(),
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
                if let Some(PolicyRule::CodeOnce { hash }) = by_rule {
                    self.rules
                        .retain(|r| !matches!(r, PolicyRule::CodeOnce { hash: h } if h == hash));
                }
                if by_rule.is_none() {
                    self.reset_auto_replies();
                }
                if let Some(p) = self.pending.as_mut().filter(|p| p.id == *id)
                    && let Some(slot) = p.decisions.get_mut(*block)
                {
                    *slot = Some(BlockDecision {
                        decision: *decision,
                        code: code.clone(),
                        reason: reason.clone(),
                        allow_network: *allow_network,
                        by_rule: by_rule.is_some(),
                    });
                }
            }
            EventKind::PolicyAdded { rule } => {
                if !self.rules.contains(rule) {
                    self.rules.push(rule.clone());
                }
            }
            EventKind::PolicyRevoked { rule } => self.rules.retain(|r| r != rule),
            EventKind::ModeChanged { mode } => self.mode = *mode,
            EventKind::SpeakerPinned { agent } => self.pinned = Some(agent.clone()),
            EventKind::AgentMuted { agent, muted } => {
                if *muted {
                    self.muted.insert(agent.clone());
                } else {
                    self.muted.remove(agent);
                }
            }
            EventKind::ExecutionStarted { id, block, .. } => {
                if let Some(p) = self.pending.as_mut().filter(|p| p.id == *id) {
                    p.running.insert(*block);
                }
            }
            EventKind::ExecutionOutput {
                id, block, text, ..
            } => {
                if let Some(p) = self.pending.as_mut().filter(|p| p.id == *id) {
                    let buf = p.partial.entry(*block).or_default();
                    if buf.len() < PARTIAL_OUTPUT_CAP {
                        buf.push_str(text);
                    }
                }
            }
            EventKind::ExecutionFinished {
                id,
                block,
                exit_code,
                timed_out,
                truncated,
                output,
                oom,
                interrupted,
                not_run,
                workspace_limit_exceeded,
                ..
            } => {
                // A block that never started says nothing about the code: it neither repeats
                // an error nor breaks a run of them.
                match (*not_run, *exit_code != 0 && !*interrupted) {
                    (true, _) => {}
                    (false, true) => self.loop_errors.push(error_signature(output)),
                    (false, false) => self.loop_errors.clear(),
                }
                if let Some(p) = self.pending.as_mut().filter(|p| p.id == *id) {
                    p.running.remove(block);
                    p.partial.remove(block);
                    if let Some(slot) = p.results.get_mut(*block) {
                        *slot = Some(BlockResult {
                            exit_code: *exit_code,
                            timed_out: *timed_out,
                            truncated: *truncated,
                            oom: *oom,
                            interrupted: *interrupted,
                            not_run: *not_run,
                            workspace_limit_exceeded: *workspace_limit_exceeded,
                            output: output.clone(),
                            changes: None,
                        });
                    }
                }
            }
            EventKind::BudgetWarning { .. } => self.budget_warned = true,
            EventKind::BudgetChanged { cap_usd } => {
                self.budget_usd = Some(*cap_usd);
                self.budget_warned = false;
            }
            EventKind::WorkspaceChanged {
                id,
                block,
                created,
                modified,
                deleted,
                notes,
            } => {
                if let Some(r) = self
                    .pending
                    .as_mut()
                    .filter(|p| p.id == *id)
                    .and_then(|p| p.results.get_mut(*block))
                    .and_then(Option::as_mut)
                {
                    r.changes = Some(crate::workspace::WorkspaceDelta {
                        created: created.clone(),
                        modified: modified.clone(),
                        deleted: deleted.clone(),
                        notes: notes.clone(),
                    });
                }
            }
            EventKind::Notice { .. }
            | EventKind::Error { .. }
            | EventKind::WorkspaceAttached { .. } => {}
            EventKind::Paused { kind, .. } => {
                // An interrupted or failed reply proposes nothing.
                self.unoffered = None;
                self.paused = Some(*kind);
                if *kind == PauseKind::Loop {
                    self.reset_loop_detection();
                }
            }
            EventKind::Resumed {} => {
                self.paused = None;
                self.reset_auto_replies();
            }
            EventKind::Terminated { reason } => self.terminated = Some(reason.clone()),
        }
    }

    /// What a running block printed so far, ending with a newline when not empty.
    pub fn partial_output(&self, id: u64, block: usize) -> String {
        let text = self
            .pending
            .as_ref()
            .filter(|p| p.id == id)
            .and_then(|p| p.partial.get(&block))
            .cloned()
            .unwrap_or_default();
        if text.is_empty() || text.ends_with('\n') {
            text
        } else {
            text + "\n"
        }
    }

    /// The human acted: every agent's run of auto replies starts again.
    pub fn reset_auto_replies(&mut self) {
        self.consecutive_auto = 0;
        self.consecutive_by_agent.clear();
    }

    /// The last agent message (agent, text) while its code blocks have not been offered yet.
    pub fn unoffered_message(&self) -> Option<(&str, &str)> {
        self.unoffered
            .and_then(|i| self.history.get(i))
            .map(|h| (h.agent.as_str(), h.content.as_str()))
    }

    /// The last agent messages since the last acknowledgement (agent, text), oldest first, at
    /// most `termination::LOOP_MESSAGES`.
    pub fn loop_messages(&self) -> Vec<(&str, &str)> {
        self.loop_messages
            .iter()
            .filter_map(|&i| self.history.get(i))
            .map(|h| (h.agent.as_str(), h.content.as_str()))
            .collect()
    }

    /// Forget what loop detection has seen (after it fired).
    pub fn reset_loop_detection(&mut self) {
        self.loop_code_counts.clear();
        self.loop_errors.clear();
        self.loop_messages.clear();
    }

    /// The agents of the team, in roster order.
    pub fn agent_names(&self) -> Vec<String> {
        self.team
            .as_ref()
            .map(|t| t.agents.iter().map(|a| a.name.clone()).collect())
            .unwrap_or_default()
    }
}
