//! The line-oriented front end: JSON events out and JSON decisions in (`--json`), or a readable
//! console transcript with prompts on the terminal. Like the TUI, it knows the session only through
//! `Event`s and acts only through `Op`s.

use std::io::Write;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::sync::mpsc;

use crate::engine::SessionHandle;
use crate::engine::state::code_hash;
use crate::protocol::{
    CodeBlock, Decision, DecisionKind, Event, EventKind, Op, PolicyRule, StreamKind, WaitingOn,
};

/// How the headless front end talks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadlessOptions {
    /// JSON lines instead of a readable transcript.
    pub json: bool,
    /// `--approve auto`: nobody answers; a pause ends the run.
    pub auto: bool,
}

/// How a headless run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The session terminated normally.
    Terminated(String),
    /// The session paused and nobody can answer (auto mode): non-zero exit.
    Paused(String),
    /// Input ended while the engine waited for the human; the session is saved and resumable.
    InputClosed(String),
}

impl Outcome {
    /// Process exit code for this outcome.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Terminated(_) => 0,
            Outcome::Paused(_) => 2,
            Outcome::InputClosed(_) => 3,
        }
    }
}

/// Parses one input line into ops. JSON mode takes contract decision lines
/// (`{"id":1,"block":0,"decision":"approve"}`), any `Op` as `{"op": ...}`, and
/// `{"decision":"approve_all","id":1}`.
pub fn parse_json_line(line: &str) -> Result<Op, String> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("input is not JSON ({e}): {line}"))?;
    if v.get("op").is_some() {
        return serde_json::from_value(v).map_err(|e| format!("invalid op ({e}): {line}"));
    }
    let Some(decision) = v.get("decision").and_then(|d| d.as_str()) else {
        return Err(format!(
            "expected a decision like {{\"id\":1,\"block\":0,\"decision\":\"approve\"}} or an op like {{\"op\":\"continue\"}}, got: {line}"
        ));
    };
    let id = v
        .get("id")
        .and_then(|x| x.as_u64())
        .ok_or_else(|| format!("decision without a numeric \"id\": {line}"))?;
    if decision == "approve_all" {
        return Ok(Op::ApproveAll { id });
    }
    let block = v
        .get("block")
        .and_then(|x| x.as_u64())
        .ok_or_else(|| format!("decision without a numeric \"block\": {line}"))?
        as usize;
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let decision = match decision {
        "approve" | "approved" => Decision::Approve,
        "edit" | "edited" => Decision::Edit {
            code: text("code").ok_or_else(|| format!("an edit needs \"code\": {line}"))?,
        },
        "reject" | "rejected" => Decision::Reject {
            reason: text("reason").unwrap_or_default(),
        },
        "skip" | "skipped" => Decision::Skip,
        other => {
            return Err(format!(
                "unknown decision {other:?}: use approve, edit, reject or skip"
            ));
        }
    };
    let remember = match v.get("remember") {
        Some(r) => Some(
            serde_json::from_value(r.clone())
                .map_err(|e| format!("invalid \"remember\" ({e}): {line}"))?,
        ),
        None => None,
    };
    let allow_network = v
        .get("allow_network")
        .and_then(|x| x.as_bool())
        .unwrap_or(false);
    Ok(Op::ResolveApproval {
        id,
        block,
        decision,
        remember,
        allow_network,
    })
}

/// Reads lines from `input` into a channel; `None` marks end of input.
fn spawn_reader<R: AsyncBufRead + Unpin + Send + 'static>(
    input: R,
) -> mpsc::UnboundedReceiver<Option<String>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = input.lines();
        loop {
            match lines.next_line().await {
                Ok(Some(l)) => {
                    if tx.send(Some(l)).is_err() {
                        return;
                    }
                }
                Ok(None) | Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
            }
        }
    });
    rx
}

/// Console view state: what is open and needs an answer.
#[derive(Default)]
struct Console {
    /// Agent whose deltas were printed for the message in progress.
    streamed: Option<String>,
    /// The cursor is mid-line (after a delta without a newline).
    mid_line: bool,
    /// Agent named by the last `── agent ──` header.
    header: Option<String>,
    pending: Option<(u64, Vec<CodeBlock>, Vec<bool>)>,
    /// Agent that proposed the open approval.
    pending_agent: String,
    speaker_candidates: Vec<String>,
    total_usd: f64,
    unpriced: bool,
}

/// Runs the headless front end until the session ends. `out` gets events (JSON) or the transcript;
/// `err` gets notes for the human that are not part of the stream.
pub async fn run<R, W, E>(
    mut handle: SessionHandle,
    opts: HeadlessOptions,
    input: R,
    mut out: W,
    mut err: E,
) -> Outcome
where
    R: AsyncBufRead + Unpin + Send + 'static,
    W: Write,
    E: Write,
{
    let mut lines = spawn_reader(input);
    let mut input_open = true;
    let mut console = Console::default();
    // What the engine waits for right now (None once we answered, until it says so again).
    let mut waiting: Option<WaitingOn> = None;
    let mut last_waiting: Option<WaitingOn> = None;
    // Answers typed before the engine asked: delivered in order when it waits.
    let mut queue: std::collections::VecDeque<Queued> = std::collections::VecDeque::new();
    let mut last_pause = String::new();
    let mut terminated: Option<String> = None;
    let mut ops = Some(handle.ops.clone());
    drop(handle.ops);
    // Ops sent to the engine so far (compared with `waiting.ops_handled`).
    let mut sent: u64 = 0;
    loop {
        tokio::select! {
            ev = handle.events.recv() => {
                let Some(ev) = ev else { break };
                if opts.json {
                    // The contract's stream: the persisted events and the streamed deltas.
                    let contract = ev.kind.is_persisted() || matches!(ev.kind, EventKind::MessageDelta { .. });
                    if contract && let Ok(line) = serde_json::to_string(&ev) {
                        let _ = writeln!(out, "{line}");
                        let _ = out.flush();
                    }
                } else {
                    render_console(&mut out, &mut console, &ev);
                }
                match &ev.kind {
                    EventKind::Terminated { reason } => terminated = Some(reason.clone()),
                    EventKind::Paused { reason, .. } => last_pause = reason.clone(),
                    // A wait announced before the engine read our last answer is stale.
                    EventKind::Waiting { on, ops_handled } if *ops_handled >= sent => {
                        waiting = Some(*on);
                        last_waiting = Some(*on);
                    }
                    _ => {}
                }
                if !matches!(ev.kind, EventKind::Waiting { .. }) {
                    continue;
                }
            }
            line = lines.recv(), if input_open => {
                match line.flatten() {
                    None => input_open = false,
                    Some(line) if line.trim().is_empty() => {}
                    Some(line) => {
                        let line = line.trim();
                        if opts.json {
                            match parse_json_line(line) {
                                Err(e) => { let _ = writeln!(err, "proctor: {e}"); }
                                Ok(op) if answers_a_question(&op) => queue.push_back(Queued::Op(op)),
                                Ok(op) => {
                                    sent += send(ops.as_ref(), vec![op]);
                                    waiting = None;
                                }
                            }
                        } else if line.starts_with('@') || line.starts_with('/') {
                            sent += deliver_console(&mut console, waiting, line, ops.as_ref(), &mut err);
                            waiting = None;
                        } else {
                            queue.push_back(Queued::Line(line.to_string()));
                        }
                    }
                }
            }
        }
        // Answer what the engine waits for from the queue, one answer per request.
        if let Some(on) = waiting {
            if opts.auto && on == WaitingOn::Continue {
                ops = None; // nobody will answer: end the run, the session stays paused
            } else if let Some(answer) = queue.pop_front() {
                let n = match answer {
                    Queued::Op(op) => send(ops.as_ref(), vec![op]),
                    Queued::Line(line) => {
                        // Typed ahead: show the question with its answer, as a transcript would.
                        prompt(&mut out, &console, on);
                        let _ = writeln!(out, "{line}");
                        deliver_console(&mut console, Some(on), &line, ops.as_ref(), &mut err)
                    }
                };
                if n > 0 {
                    sent += n;
                    waiting = None;
                } else if !opts.json {
                    prompt(&mut out, &console, on);
                }
            } else if !input_open {
                ops = None; // nobody can answer: end the run, the session is saved
            } else if !opts.json {
                prompt(&mut out, &console, on);
                waiting = Some(on);
            }
        }
    }
    let _ = out.flush();
    let state = handle.task.await.ok();
    if let Some(reason) = terminated.or_else(|| state.and_then(|s| s.terminated)) {
        return Outcome::Terminated(reason);
    }
    let waiting = last_waiting;
    let what = match waiting {
        Some(WaitingOn::Approval) => "an approval was pending".to_string(),
        Some(WaitingOn::Speaker) => "a speaker choice was pending".to_string(),
        Some(WaitingOn::Continue) => format!("the session paused: {last_pause}"),
        Some(WaitingOn::Message) => "the session waits for a first message".to_string(),
        None => "the session stopped".to_string(),
    };
    if opts.auto && waiting == Some(WaitingOn::Continue) {
        Outcome::Paused(what)
    } else {
        Outcome::InputClosed(what)
    }
}

/// An answer typed before the engine asked for it: a parsed JSON op, or a console line (read
/// in the light of the question it answers).
enum Queued {
    Op(Op),
    Line(String),
}

/// Ops that answer a question (a decision, a speaker pick, continue) wait for it; every other op
/// acts at once.
fn answers_a_question(op: &Op) -> bool {
    matches!(
        op,
        Op::ResolveApproval { .. }
            | Op::ApproveAll { .. }
            | Op::SelectSpeaker { .. }
            | Op::Continue
    )
}

/// Sends ops to the engine (if it still listens); how many were sent.
fn send(ops: Option<&mpsc::UnboundedSender<Op>>, new_ops: Vec<Op>) -> u64 {
    let n = new_ops.len() as u64;
    if let Some(tx) = ops {
        for op in new_ops {
            let _ = tx.send(op);
        }
    }
    n
}

/// Reads a console line in the current state and sends its ops; how many (0 when refused).
fn deliver_console<E: Write>(
    console: &mut Console,
    waiting: Option<WaitingOn>,
    line: &str,
    ops: Option<&mpsc::UnboundedSender<Op>>,
    err: &mut E,
) -> u64 {
    match console_ops(console, waiting, line) {
        Ok(new_ops) => send(ops, new_ops),
        Err(e) => {
            let _ = writeln!(err, "proctor: {e}");
            0
        }
    }
}

fn prompt<W: Write>(out: &mut W, c: &Console, on: WaitingOn) {
    let text = match on {
        WaitingOn::Approval => match &c.pending {
            Some((id, blocks, decided)) => match decided.iter().position(|d| !d) {
                Some(i) => format!(
                    "approval #{id} block {}/{} ({}): [y] approve  [e] edit  [n] reject  [s] skip  [a] approve all  (? more) > ",
                    i + 1,
                    blocks.len(),
                    blocks[i].language
                ),
                None => "waiting for the engine… > ".into(),
            },
            None => "approval pending > ".into(),
        },
        WaitingOn::Speaker => format!("who speaks next? ({}) > ", c.speaker_candidates.join(", ")),
        WaitingOn::Continue => "[c] continue  [q] stop  or type a message > ".into(),
        WaitingOn::Message => "type the task > ".into(),
    };
    let _ = write!(out, "{text}");
    let _ = out.flush();
}

/// Interprets a console line in the current waiting state.
fn console_ops(c: &mut Console, waiting: Option<WaitingOn>, line: &str) -> Result<Vec<Op>, String> {
    if let Some(rest) = line.strip_prefix('@') {
        let (to, text) = rest
            .split_once(' ')
            .ok_or("a private note is `@agent text`")?;
        return Ok(vec![Op::UserMessage {
            text: text.trim().into(),
            to: Some(to.into()),
        }]);
    }
    if line == "/stop" || line == "/quit" {
        return Ok(vec![Op::Stop { reason: None }]);
    }
    if line == "/pause" {
        return Ok(vec![Op::Pause]);
    }
    match waiting {
        Some(WaitingOn::Approval) => {
            let Some((id, blocks, decided)) = c.pending.as_mut() else {
                return Err("no approval is open".into());
            };
            let Some(i) = decided.iter().position(|d| !d) else {
                return Err("every block is decided".into());
            };
            let id = *id;
            let (cmd, arg) = line
                .split_once(' ')
                .map(|(a, b)| (a, b.trim()))
                .unwrap_or((line, ""));
            let block = &blocks[i];
            let agent = &c.pending_agent;
            let (mut remember, mut allow_network) = (None, false);
            let decision = match cmd {
                "y" | "yes" | "approve" => Decision::Approve,
                "w" => {
                    allow_network = true;
                    Decision::Approve
                }
                "Y" => {
                    remember = Some(PolicyRule::CodeSession {
                        hash: code_hash(&block.code),
                    });
                    Decision::Approve
                }
                "L" => {
                    remember = Some(PolicyRule::LanguageAgent {
                        language: block.language.clone(),
                        agent: agent.clone(),
                    });
                    Decision::Approve
                }
                "s" | "skip" => Decision::Skip,
                "n" | "no" | "reject" => Decision::Reject {
                    reason: arg.to_string(),
                },
                "?" | "h" | "help" => {
                    return Err("answers: y approve · Y approve and always approve this exact code · L approve and \
                                always approve this language from this agent · w approve with network for this \
                                block · e edit in $VISUAL/$EDITOR · n REASON reject · s skip · a approve all \
                                remaining · @agent TEXT private note · /stop"
                        .into());
                }
                "a" | "all" => {
                    decided.iter_mut().for_each(|d| *d = true);
                    return Ok(vec![Op::ApproveAll { id }]);
                }
                "e" | "edit" => {
                    let code = edit_in_editor(&blocks[i].code)?;
                    Decision::Edit { code }
                }
                other => {
                    return Err(format!(
                        "unknown answer {other:?}: y, e, n [reason], s or a"
                    ));
                }
            };
            decided[i] = true;
            Ok(vec![Op::ResolveApproval {
                id,
                block: i,
                decision,
                remember,
                allow_network,
            }])
        }
        Some(WaitingOn::Speaker) => Ok(vec![Op::SelectSpeaker {
            agent: line.to_string(),
        }]),
        Some(WaitingOn::Continue) => match line {
            "c" | "continue" => Ok(vec![Op::Continue]),
            "q" | "stop" => Ok(vec![Op::Stop { reason: None }]),
            // A message answers a loop or auto-replies pause; other pauses still need `c`.
            text => Ok(vec![Op::UserMessage {
                text: text.into(),
                to: None,
            }]),
        },
        Some(WaitingOn::Message) | None => Ok(vec![Op::UserMessage {
            text: line.into(),
            to: None,
        }]),
    }
}

/// Opens `$VISUAL`/`$EDITOR` on the code; returns the edited text.
fn edit_in_editor(code: &str) -> Result<String, String> {
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .map_err(|_| "set $VISUAL or $EDITOR to edit a block on the console".to_string())?;
    let file = tempfile::Builder::new()
        .suffix(".txt")
        .tempfile()
        .map_err(|e| format!("cannot create a temp file for editing: {e}"))?;
    std::fs::write(file.path(), code).map_err(|e| format!("cannot write the temp file: {e}"))?;
    let mut parts = editor.split_whitespace();
    let prog = parts.next().ok_or("$EDITOR is empty")?;
    let status = std::process::Command::new(prog)
        .args(parts)
        .arg(file.path())
        .status()
        .map_err(|e| format!("cannot start {editor}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "{editor} exited with {status}; block left undecided"
        ));
    }
    std::fs::read_to_string(file.path()).map_err(|e| format!("cannot read the edited file: {e}"))
}

fn render_console<W: Write>(out: &mut W, c: &mut Console, ev: &Event) {
    let end_stream = |out: &mut W, c: &mut Console| {
        if c.mid_line {
            c.mid_line = false;
            let _ = writeln!(out);
        }
    };
    if !matches!(
        ev.kind,
        EventKind::MessageDelta { .. }
            | EventKind::Message { .. }
            | EventKind::AgentStatus { .. }
            | EventKind::Waiting { .. }
    ) {
        end_stream(out, c);
    }
    match &ev.kind {
        EventKind::SessionStarted { team, task, .. } => {
            let _ = writeln!(out, "proctor session {} · team {team}", ev.session);
            if !task.is_empty() {
                let _ = writeln!(out, "task: {task}");
            }
        }
        EventKind::SpeakerSelected { agent, note } => {
            c.header = Some(agent.clone());
            match note {
                Some(n) => {
                    let _ = writeln!(out, "\n── {agent} ── ({n})");
                }
                None => {
                    let _ = writeln!(out, "\n── {agent} ──");
                }
            }
        }
        EventKind::SpeakerRequested { candidates } => c.speaker_candidates = candidates.clone(),
        EventKind::AgentStatus { .. } | EventKind::Waiting { .. } | EventKind::Resumed {} => {}
        EventKind::MessageDelta { agent, delta } => {
            c.streamed = Some(agent.clone());
            c.mid_line = !delta.ends_with('\n');
            let _ = write!(out, "{}", sanitize(delta));
            let _ = out.flush();
        }
        EventKind::Message { agent, content, to } => {
            end_stream(out, c);
            let header = c.header.take();
            if c.streamed.take().as_ref() == Some(agent) {
                // Already on screen, streamed.
            } else if header.as_ref() == Some(agent) {
                let _ = writeln!(out, "{}", sanitize(content));
            } else if agent == "human" {
                let who = to
                    .as_ref()
                    .map(|t| format!("human → {t} (private)"))
                    .unwrap_or_else(|| "human".into());
                let _ = writeln!(out, "\n── {who} ──\n{}", sanitize(content));
            } else {
                let _ = writeln!(out, "\n── {agent} ──\n{}", sanitize(content));
            }
        }
        EventKind::Usage {
            agent,
            model,
            input_tokens,
            output_tokens,
            usd,
            estimated,
            ..
        } => {
            match usd {
                Some(u) => c.total_usd += u,
                None => c.unpriced = true,
            }
            let approx = if *estimated { "≈" } else { "" };
            let cost = usd
                .map(|u| format!("${u:.4}"))
                .unwrap_or_else(|| "unpriced".into());
            let total = if c.unpriced {
                format!("${:.4}+", c.total_usd)
            } else {
                format!("${:.4}", c.total_usd)
            };
            let _ = writeln!(
                out,
                "   [{agent} · {model} · {approx}{input_tokens} in / {approx}{output_tokens} out · {cost} · session {total}]"
            );
        }
        EventKind::ApprovalRequested { id, agent, blocks } => {
            let _ = writeln!(
                out,
                "\n┌ approval #{id}: {agent} proposes {} block(s)",
                blocks.len()
            );
            for b in blocks {
                let file = b
                    .filename
                    .as_ref()
                    .map(|f| format!(" → {f}"))
                    .unwrap_or_default();
                let _ = writeln!(out, "│ block {} ({}){file}", b.index + 1, b.language);
                for l in b.code.lines() {
                    let _ = writeln!(out, "│   {}", sanitize(l));
                }
            }
            let _ = writeln!(out, "└");
            c.pending = Some((*id, blocks.clone(), vec![false; blocks.len()]));
            c.pending_agent = agent.clone();
        }
        EventKind::ApprovalResolved {
            block,
            decision,
            reason,
            by_rule,
            ..
        } => {
            if let Some((_, _, decided)) = c.pending.as_mut()
                && let Some(d) = decided.get_mut(*block)
            {
                *d = true;
            }
            let by = if by_rule.is_some() { " (by rule)" } else { "" };
            let why = reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            let word = match decision {
                DecisionKind::Approved => "approved",
                DecisionKind::Edited => "edited",
                DecisionKind::Rejected => "rejected",
                DecisionKind::Skipped => "skipped",
            };
            let _ = writeln!(out, "  block {} {word}{by}{why}", block + 1);
        }
        EventKind::PolicyAdded { rule } => {
            let _ = writeln!(out, "  rule added: {rule:?}");
        }
        EventKind::PolicyRevoked { rule } => {
            let _ = writeln!(out, "  rule revoked: {rule:?}");
        }
        EventKind::WorkspaceChanged {
            created,
            modified,
            deleted,
            notes,
            ..
        } => {
            let delta = crate::workspace::WorkspaceDelta {
                created: created.clone(),
                modified: modified.clone(),
                deleted: deleted.clone(),
                notes: notes.clone(),
            };
            let lines = crate::workspace::describe(&delta, 20, &|p| {
                crate::text_safety::visible_line(p).into_owned()
            });
            if lines.is_empty() {
                let _ = writeln!(out, "  ✎ no files changed");
            }
            for l in lines {
                let _ = writeln!(out, "  ✎ {l}");
            }
        }
        EventKind::WorkspaceAttached { path, mode, .. } => {
            let path = crate::text_safety::visible_line(path);
            let _ = match mode {
                crate::protocol::WorkspaceMode::Rw => {
                    writeln!(out, "  workspace: {path} (read-write)")
                }
                crate::protocol::WorkspaceMode::Copy => {
                    writeln!(out, "  workspace: a copy of {path}")
                }
            };
        }
        EventKind::ModeChanged { mode } => {
            let _ = writeln!(out, "  mode: {mode:?}");
        }
        EventKind::SpeakerPinned { agent } => {
            let _ = writeln!(out, "  {agent} speaks next (pinned)");
        }
        EventKind::AgentMuted { agent, muted } => {
            let _ = writeln!(
                out,
                "  {agent} {}",
                if *muted { "muted" } else { "unmuted" }
            );
        }
        EventKind::ImagePull {
            image,
            current,
            total,
            layers_done,
            layers,
            ..
        } => {
            let pct = if *total > 0 { current * 100 / total } else { 0 };
            let _ = writeln!(
                out,
                "  pulling {image}: {pct}% ({layers_done}/{layers} layers)"
            );
        }
        EventKind::ExecutionStarted {
            block, language, ..
        } => {
            let _ = writeln!(out, "  ▶ running block {} ({language})", block + 1);
        }
        EventKind::ExecutionOutput { stream, text, .. } => {
            let prefix = match stream {
                StreamKind::Stdout => "  │ ",
                StreamKind::Stderr => "  ! ",
            };
            for l in text.lines() {
                let _ = writeln!(out, "{prefix}{}", sanitize(l));
            }
        }
        EventKind::ExecutionFinished {
            block,
            exit_code,
            timed_out,
            duration_ms,
            oom,
            interrupted,
            truncated,
            workspace_limit_exceeded,
            ..
        } => {
            let mut s = format!(
                "  ■ block {} exit {exit_code} in {duration_ms} ms",
                block + 1
            );
            for (flag, word) in [
                (*timed_out, "timed out"),
                (*oom, "out of memory"),
                (*interrupted, "interrupted"),
                (
                    *workspace_limit_exceeded,
                    "killed: workspace over its disk limit",
                ),
                (*truncated, "output truncated"),
            ] {
                if flag {
                    s.push_str(&format!(" · {word}"));
                }
            }
            let _ = writeln!(out, "{s}");
        }
        EventKind::BudgetWarning { spent_usd, cap_usd } => {
            let _ = writeln!(out, "  ⚠ budget: ${spent_usd:.4} of ${cap_usd:.2} spent");
        }
        EventKind::BudgetChanged { cap_usd } => {
            let _ = writeln!(out, "  budget now ${cap_usd:.2}");
        }
        EventKind::Notice { message } => {
            let _ = writeln!(out, "  · {}", sanitize(message));
        }
        EventKind::Paused { reason, .. } => {
            let _ = writeln!(out, "\n⏸ paused: {}", sanitize(reason));
        }
        EventKind::Terminated { reason } => {
            let _ = writeln!(out, "\n■ session ended: {}", sanitize(reason));
            let unpriced = if c.unpriced {
                " (some calls unpriced)"
            } else {
                ""
            };
            let _ = writeln!(out, "  cost: ${:.4}{unpriced}", c.total_usd);
        }
        EventKind::Error { message } => {
            let _ = writeln!(out, "  ✗ {}", sanitize(message));
        }
    }
    let _ = out.flush();
}

/// Removes terminal control sequences (ESC and other C0 controls except newline and tab).
pub fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_decision_lines_parse() {
        let op = parse_json_line(
            r#"{"id": 3, "block": 1, "decision": "edit", "code": "print('edited')"}"#,
        )
        .unwrap();
        assert_eq!(
            op,
            Op::ResolveApproval {
                id: 3,
                block: 1,
                decision: Decision::Edit {
                    code: "print('edited')".into()
                },
                remember: None,
                allow_network: false
            }
        );
        let op = parse_json_line(
            r#"{"id": 3, "block": 0, "decision": "reject", "reason": "use the stdlib only"}"#,
        )
        .unwrap();
        assert!(
            matches!(op, Op::ResolveApproval { decision: Decision::Reject { reason }, .. } if reason == "use the stdlib only")
        );
        assert!(parse_json_line(r#"{"op":"continue"}"#).is_ok());
        let e = parse_json_line(r#"{"id": 3, "decision": "approve"}"#).unwrap_err();
        assert!(e.contains("block"), "{e}");
        let e = parse_json_line("approve").unwrap_err();
        assert!(e.contains("not JSON"));
        let e = parse_json_line(r#"{"id":1,"block":0,"decision":"maybe"}"#).unwrap_err();
        assert!(e.contains("maybe"));
    }

    fn console_with_two_blocks() -> Console {
        let block = |i: usize| CodeBlock {
            index: i,
            language: "python".into(),
            code: format!("print({i})"),
            filename: None,
        };
        Console {
            pending: Some((4, vec![block(0), block(1)], vec![false, false])),
            pending_agent: "coder".into(),
            ..Default::default()
        }
    }

    #[test]
    fn console_answers_map_to_decisions_rules_and_network() {
        let mut c = console_with_two_blocks();
        let ops = console_ops(&mut c, Some(WaitingOn::Approval), "Y").unwrap();
        assert_eq!(
            ops,
            vec![Op::ResolveApproval {
                id: 4,
                block: 0,
                decision: Decision::Approve,
                remember: Some(PolicyRule::CodeSession {
                    hash: code_hash("print(0)")
                }),
                allow_network: false
            }]
        );
        let ops = console_ops(&mut c, Some(WaitingOn::Approval), "w").unwrap();
        assert!(matches!(
            &ops[0],
            Op::ResolveApproval {
                block: 1,
                allow_network: true,
                remember: None,
                ..
            }
        ));

        let mut c = console_with_two_blocks();
        let ops = console_ops(&mut c, Some(WaitingOn::Approval), "L").unwrap();
        assert!(
            matches!(&ops[0], Op::ResolveApproval { remember: Some(PolicyRule::LanguageAgent { language, agent }), .. } if language == "python" && agent == "coder")
        );
        let ops = console_ops(&mut c, Some(WaitingOn::Approval), "n no network calls").unwrap();
        assert!(
            matches!(&ops[0], Op::ResolveApproval { block: 1, decision: Decision::Reject { reason }, .. } if reason == "no network calls")
        );

        let mut c = console_with_two_blocks();
        assert!(console_ops(&mut c, Some(WaitingOn::Approval), "maybe").is_err());
        assert_eq!(
            console_ops(&mut c, Some(WaitingOn::Approval), "a").unwrap(),
            vec![Op::ApproveAll { id: 4 }]
        );
        let note = console_ops(&mut c, None, "@coder keep it short").unwrap();
        assert_eq!(
            note,
            vec![Op::UserMessage {
                text: "keep it short".into(),
                to: Some("coder".into())
            }]
        );
    }

    #[test]
    fn sanitize_strips_escape_sequences() {
        assert_eq!(sanitize("a\x1b[31mred\x07\n"), "a[31mred\n");
    }
}
