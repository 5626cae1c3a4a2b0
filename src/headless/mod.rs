//! The line-oriented front end: JSON events out and JSON decisions in (`--json`), or a readable
//! console transcript with prompts on the terminal. Like the TUI, it knows the session only through
//! `Event`s and acts only through `Op`s.

use std::fmt::Write as _;
use std::io::Write;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};
use tokio::sync::mpsc;

use crate::engine::SessionHandle;
use crate::engine::state::code_hash;
use crate::protocol::{
    CodeBlock, Decision, DecisionKind, Event, EventKind, Op, PolicyRule, StreamKind, WaitingOn,
};
use crate::text_safety;

/// How the headless front end talks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadlessOptions {
    /// JSON lines instead of a readable transcript.
    pub json: bool,
    /// `--approve auto`: nobody answers; a pause ends the run.
    pub auto: bool,
    /// Input comes from a person at a terminal (not a pipe): a console line typed while nothing is
    /// asked never answers a question asked later (a piped script's lines are kept for it).
    pub interactive: bool,
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
        use crate::cli::exit_code;
        match self {
            Outcome::Terminated(_) => exit_code::OK,
            Outcome::Paused(_) => exit_code::PAUSED,
            Outcome::InputClosed(_) => exit_code::INPUT_ENDED,
        }
    }
}

/// Parses one input line into ops. JSON mode takes contract decision lines
/// (`{"id":1,"block":0,"decision":"approve"}`), any `Op` as `{"op": ...}`, and
/// `{"decision":"approve_all","id":1}`.
pub fn parse_json_line(line: &str) -> Result<Op, String> {
    // Messages repeat a short, safe excerpt of the line, never the whole of it.
    let shown = text_safety::excerpt(line, EXCERPT_CHARS);
    // serde quotes offending values, which may be long: keep its words short too.
    let why = |e: serde_json::Error| text_safety::excerpt(&e.to_string(), 2 * EXCERPT_CHARS);
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| format!("input is not JSON ({}): {shown}", why(e)))?;
    if v.get("op").is_some() {
        return serde_json::from_value(v).map_err(|e| format!("invalid op ({}): {shown}", why(e)));
    }
    let Some(decision) = v.get("decision").and_then(|d| d.as_str()) else {
        return Err(format!(
            "expected a decision like {{\"id\":1,\"block\":0,\"decision\":\"approve\"}} or an op like {{\"op\":\"continue\"}}, got: {shown}"
        ));
    };
    let id = v
        .get("id")
        .and_then(|x| x.as_u64())
        .ok_or_else(|| format!("decision without a numeric \"id\": {shown}"))?;
    if decision == "approve_all" {
        return Ok(Op::ApproveAll { id });
    }
    let block = v
        .get("block")
        .and_then(|x| x.as_u64())
        .ok_or_else(|| format!("decision without a numeric \"block\": {shown}"))?
        as usize;
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let decision = match decision {
        "approve" | "approved" => Decision::Approve,
        "edit" | "edited" => Decision::Edit {
            code: text("code").ok_or_else(|| format!("an edit needs \"code\": {shown}"))?,
        },
        "reject" | "rejected" => Decision::Reject {
            reason: text("reason").unwrap_or_default(),
        },
        "skip" | "skipped" => Decision::Skip,
        other => {
            return Err(format!(
                "unknown decision {:?}: use approve, edit, reject or skip",
                text_safety::excerpt(other, EXCERPT_CHARS)
            ));
        }
    };
    let remember = match v.get("remember") {
        Some(r) => Some(
            serde_json::from_value(r.clone())
                .map_err(|e| format!("invalid \"remember\" ({}): {shown}", why(e)))?,
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

/// Longest input line read, in bytes (a decision with an edited block fits many times over).
pub const MAX_INPUT_LINE: usize = 16 << 20;

/// How much of a bad input line an error message repeats.
const EXCERPT_CHARS: usize = 60;

/// One line of input as the reader found it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum InputLine {
    /// A line of text, without its line end.
    Text(String),
    /// A line that cannot be used (not UTF-8, too long); the message says which and why, with
    /// at most a short excerpt. Reading goes on with the next line.
    Bad(String),
}

/// Reads lines from `input` into a channel; `None` marks end of input. Each line is read with a
/// bounded buffer: a line longer than [`MAX_INPUT_LINE`] is skipped to its end and reported, a
/// line that is not UTF-8 is reported, and neither ends the input.
fn spawn_reader<R: AsyncBufRead + Unpin + Send + 'static>(
    mut input: R,
) -> mpsc::UnboundedReceiver<Option<InputLine>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut number: u64 = 0;
        loop {
            let line = read_line(&mut input, &mut number).await;
            let end = line.is_none();
            if tx.send(line).is_err() || end {
                return;
            }
        }
    });
    rx
}

/// The next line of `input` (`None` at its end); `number` counts lines read.
async fn read_line<R: AsyncBufRead + Unpin>(input: &mut R, number: &mut u64) -> Option<InputLine> {
    let mut buf = Vec::new();
    let read = (&mut *input)
        .take(MAX_INPUT_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await;
    match read {
        Ok(0) => return None,
        Ok(_) => {}
        // An unreadable stdin: say why once and end the input.
        Err(e) => {
            return if buf.is_empty() {
                None
            } else {
                Some(InputLine::Bad(format!("input could not be read: {e}")))
            };
        }
    }
    *number += 1;
    let n = *number;
    if buf.last() != Some(&b'\n') && buf.len() > MAX_INPUT_LINE {
        let rest = skip_to_line_end(input).await;
        return Some(InputLine::Bad(format!(
            "input line {n} is longer than {} MiB ({} bytes or more) and was ignored: {}",
            MAX_INPUT_LINE >> 20,
            buf.len() as u64 + rest,
            text_safety::excerpt(&String::from_utf8_lossy(&buf[..256]), EXCERPT_CHARS)
        )));
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    match String::from_utf8(buf) {
        Ok(text) => Some(InputLine::Text(text)),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
            Some(InputLine::Bad(format!(
                "input line {n} is not UTF-8 (invalid byte at offset {at}) and was ignored: {}",
                text_safety::excerpt(&lossy, EXCERPT_CHARS)
            )))
        }
    }
}

/// Reads and drops the rest of an over-long line, through its `\n`; returns how many bytes.
async fn skip_to_line_end<R: AsyncBufRead + Unpin>(input: &mut R) -> u64 {
    let mut skipped = 0u64;
    loop {
        let (used, done) = match input.fill_buf().await {
            Ok([]) | Err(_) => return skipped,
            Ok(chunk) => match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            },
        };
        input.consume(used);
        skipped += used as u64;
        if done {
            return skipped;
        }
    }
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
    /// Some costs were demo prices (`proctor demo`).
    demo_priced: bool,
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
                    Some(InputLine::Bad(why)) => {
                        note(&mut err, &why);
                        if opts.json {
                            // A JSON consumer sees it in the stream too.
                            sent += send(ops.as_ref(), vec![Op::ReportInputError { message: why }]);
                            waiting = None;
                        }
                    }
                    Some(InputLine::Text(line)) if line.trim().is_empty() => {}
                    Some(InputLine::Text(line)) => {
                        let line = line.trim();
                        if opts.json {
                            match parse_json_line(line) {
                                Err(e) => {
                                    note(&mut err, &e);
                                    sent += send(ops.as_ref(), vec![Op::ReportInputError { message: e }]);
                                    waiting = None;
                                }
                                Ok(op) if answers_a_question(&op) => queue.push_back(Queued::Op(op)),
                                Ok(op) => {
                                    sent += send(ops.as_ref(), vec![op]);
                                    waiting = None;
                                }
                            }
                        } else if line.starts_with('@') || line.starts_with('/') {
                            sent += deliver_console(&mut console, waiting, line, ops.as_ref(), &mut err);
                            waiting = None;
                        } else if opts.interactive && waiting.is_none() {
                            // Typed while nothing was asked: it must not answer what is asked
                            // next (an approval the person has not seen yet).
                            if looks_like_an_answer(line) {
                                note(
                                    &mut err,
                                    "nothing is being asked right now: answer at the prompt (that line was not used)",
                                );
                            } else {
                                sent += send(
                                    ops.as_ref(),
                                    vec![Op::UserMessage { text: line.to_string(), to: None }],
                                );
                            }
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
                        write_safe(&mut out, &format!("{line}\n"));
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

/// Whether a console line reads like an answer to a prompt (a decision, continue, stop) rather than
/// a message to the agents.
fn looks_like_an_answer(line: &str) -> bool {
    let first = line.split_whitespace().next().unwrap_or("");
    matches!(
        first,
        "y" | "Y"
            | "yes"
            | "L"
            | "w"
            | "n"
            | "no"
            | "s"
            | "skip"
            | "a"
            | "all"
            | "e"
            | "edit"
            | "approve"
            | "reject"
            | "c"
            | "continue"
            | "q"
            | "stop"
            | "?"
    )
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
            note(err, &e);
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
    write_safe(out, &text);
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
                                block · e edit in $VISUAL/$EDITOR (an empty edit is refused: reject or skip \
                                instead) · n REASON reject (the agent reads the reason; without one it is told \
                                none was given) · s skip · a approve all remaining · @agent TEXT private note · \
                                /stop"
                        .into());
                }
                "a" | "all" => {
                    decided.iter_mut().for_each(|d| *d = true);
                    return Ok(vec![Op::ApproveAll { id }]);
                }
                "e" | "edit" => {
                    let code = edit_in_editor(&blocks[i].code)?;
                    if code.trim().is_empty() {
                        return Err(
                            "the edited block is empty and would run nothing; it stays open: \
                                    reject it (n REASON) or skip it (s) instead"
                                .into(),
                        );
                    }
                    Decision::Edit { code }
                }
                other => {
                    return Err(format!(
                        "unknown answer {:?}: y, e, n [reason], s or a (? for more)",
                        text_safety::excerpt(other, EXCERPT_CHARS)
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

/// The one place console text reaches the terminal: whatever hidden character is still in
/// `text` (anything but `\n` and `\t`) is written as its visible marker.
fn write_safe<W: Write>(out: &mut W, text: &str) {
    let _ = out.write_all(text_safety::visible(text).as_bytes());
    let _ = out.flush();
}

/// A note for the human on stderr, on one line, made safe.
fn note<E: Write>(err: &mut E, message: &str) {
    let _ = writeln!(err, "proctor: {}", text_safety::visible_line(message));
    let _ = err.flush();
}

/// One-line text from outside (names, file names, reasons) for the console.
fn one(s: &str) -> std::borrow::Cow<'_, str> {
    text_safety::visible_line(s)
}

fn render_console<W: Write>(out: &mut W, c: &mut Console, ev: &Event) {
    let mut s = String::new();
    console_text(&mut s, c, ev);
    write_safe(out, &s);
}

/// The blocks of an approval as the human decides them: per block its language, file name (and
/// whether it will be refused), how many hidden characters it holds, and its lines numbered as
/// the interpreter will count them, every hidden character shown as a marker.
fn approval_text(s: &mut String, id: u64, agent: &str, blocks: &[CodeBlock]) {
    let _ = writeln!(
        s,
        "\n┌ approval #{id}: {} proposes {} block(s)",
        one(agent),
        blocks.len()
    );
    for b in blocks {
        let file = match &b.filename {
            Some(f) if text_safety::has_hidden(f) => format!(
                " → {} (refused: a file name with hidden characters; the block will not run)",
                one(f)
            ),
            Some(f) => format!(" → {}", one(f)),
            None => String::new(),
        };
        let _ = writeln!(s, "│ block {} ({}){file}", b.index + 1, one(&b.language));
        if let Some(summary) = text_safety::hidden_summary(&b.code) {
            let _ = writeln!(s, "│ ⚠ {summary}");
        }
        let lines = text_safety::code_lines(&b.code, &b.language);
        let width = lines.len().to_string().len();
        for (i, l) in lines.iter().enumerate() {
            let _ = writeln!(s, "│ {:>width$}  {l}", i + 1);
        }
    }
    let _ = writeln!(s, "└");
}

fn console_text(out: &mut String, c: &mut Console, ev: &Event) {
    let end_stream = |out: &mut String, c: &mut Console| {
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
            let _ = writeln!(
                out,
                "proctor session {} · team {}",
                one(&ev.session),
                one(team)
            );
            if !task.is_empty() {
                let _ = writeln!(out, "task: {}", text_safety::visible(task));
            }
        }
        EventKind::SpeakerSelected { agent, note } => {
            c.header = Some(agent.clone());
            match note {
                Some(n) => {
                    let _ = writeln!(out, "\n── {} ── ({})", one(agent), one(n));
                }
                None => {
                    let _ = writeln!(out, "\n── {} ──", one(agent));
                }
            }
        }
        EventKind::SpeakerRequested { candidates } => c.speaker_candidates = candidates.clone(),
        EventKind::AgentStatus { .. } | EventKind::Waiting { .. } | EventKind::Resumed {} => {}
        EventKind::MessageDelta { agent, delta } => {
            c.streamed = Some(agent.clone());
            c.mid_line = !delta.ends_with('\n');
            out.push_str(&text_safety::visible(delta));
        }
        EventKind::Message { agent, content, to } => {
            end_stream(out, c);
            let header = c.header.take();
            let content = text_safety::visible(content);
            if c.streamed.take().as_ref() == Some(agent) {
                // Already on screen, streamed.
            } else if header.as_ref() == Some(agent) {
                let _ = writeln!(out, "{content}");
            } else if agent == "human" {
                let who = to
                    .as_ref()
                    .map(|t| format!("human → {} (private)", one(t)))
                    .unwrap_or_else(|| "human".into());
                let _ = writeln!(out, "\n── {who} ──\n{content}");
            } else {
                let _ = writeln!(out, "\n── {} ──\n{content}", one(agent));
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
            let demo = crate::engine::cost::is_demo_priced(model);
            c.demo_priced |= demo;
            let cost = usd
                .map(|u| format!("${u:.4}{}", if demo { " demo price" } else { "" }))
                .unwrap_or_else(|| "unpriced".into());
            let total = if c.unpriced {
                format!("${:.4}+", c.total_usd)
            } else {
                format!("${:.4}", c.total_usd)
            };
            let _ = writeln!(
                out,
                "   [{} · {} · {approx}{input_tokens} in / {approx}{output_tokens} out · {cost} · session {total}]",
                one(agent),
                one(model)
            );
        }
        EventKind::ApprovalRequested { id, agent, blocks } => {
            approval_text(out, *id, agent, blocks);
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
            let why = match (decision, reason.as_deref().map(str::trim)) {
                (DecisionKind::Rejected, Some(r)) if !r.is_empty() => format!(": {}", one(r)),
                (DecisionKind::Rejected, _) => ": no reason given".to_string(),
                _ => String::new(),
            };
            let word = match decision {
                DecisionKind::Approved => "approved",
                DecisionKind::Edited => "edited",
                DecisionKind::Rejected => "rejected",
                DecisionKind::Skipped => "skipped",
            };
            let _ = writeln!(out, "  block {} {word}{by}{why}", block + 1);
        }
        EventKind::PolicyAdded { rule } => {
            let _ = writeln!(out, "  rule added: {}", one(&format!("{rule:?}")));
        }
        EventKind::PolicyRevoked { rule } => {
            let _ = writeln!(out, "  rule revoked: {}", one(&format!("{rule:?}")));
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
            let _ = writeln!(out, "  {} speaks next (pinned)", one(agent));
        }
        EventKind::AgentMuted { agent, muted } => {
            let _ = writeln!(
                out,
                "  {} {}",
                one(agent),
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
            let pct = if *total > 0 {
                current.saturating_mul(100) / total
            } else {
                0
            };
            let _ = writeln!(
                out,
                "  pulling {}: {pct}% ({layers_done}/{layers} layers)",
                one(image)
            );
        }
        EventKind::ExecutionStarted {
            block, language, ..
        } => {
            let _ = writeln!(out, "  ▶ running block {} ({})", block + 1, one(language));
        }
        EventKind::ExecutionOutput { stream, text, .. } => {
            let prefix = match stream {
                StreamKind::Stdout => "  │ ",
                StreamKind::Stderr => "  ! ",
            };
            for l in text.lines() {
                let _ = writeln!(
                    out,
                    "{prefix}{}",
                    text_safety::visible_keeping(l, text_safety::Keep::Tabs)
                );
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
            let _ = writeln!(out, "  · {}", text_safety::visible(message));
        }
        EventKind::Paused { reason, .. } => {
            let _ = writeln!(out, "\n⏸ paused: {}", text_safety::visible(reason));
        }
        EventKind::Terminated { reason } => {
            let _ = writeln!(out, "\n■ session ended: {}", text_safety::visible(reason));
            let unpriced = if c.unpriced {
                " (some calls unpriced)"
            } else {
                ""
            };
            let demo = if c.demo_priced {
                " (demo prices; nothing is billed)"
            } else {
                ""
            };
            let _ = writeln!(out, "  cost: ${:.4}{unpriced}{demo}", c.total_usd);
        }
        EventKind::Error { message } => {
            let _ = writeln!(out, "  ✗ {}", text_safety::visible(message));
        }
    }
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

    fn console_bytes(kind: EventKind) -> String {
        let mut out = Vec::new();
        let ev = Event {
            seq: 1,
            session: "s".into(),
            ts_ms: 0,
            kind,
        };
        render_console(&mut out, &mut Console::default(), &ev);
        String::from_utf8(out).unwrap()
    }

    fn approval(language: &str, code: &str, filename: Option<&str>) -> EventKind {
        EventKind::ApprovalRequested {
            id: 1,
            agent: "coder".into(),
            blocks: vec![CodeBlock {
                index: 0,
                language: language.into(),
                code: code.into(),
                filename: filename.map(str::to_string),
            }],
        }
    }

    /// Nothing but `\n` (and `\t`) from the C0 range, and none of the invisible or bidi
    /// characters, reaches the terminal.
    fn assert_terminal_safe(shown: &str) {
        for c in shown.chars() {
            assert!(
                c == '\n' || c == '\t' || text_safety::classify(c).is_none(),
                "{c:?} reached the terminal in {shown:?}"
            );
        }
    }

    #[test]
    fn a_carriage_return_in_python_shows_as_the_second_line_it_is() {
        let shown = console_bytes(approval(
            "python",
            "# TODO: tidy later\rimport os; os.system('id')\nprint('ok')",
            None,
        ));
        assert_terminal_safe(&shown);
        assert!(
            shown.contains("│ ⚠ 1 hidden character shown as ␍\n"),
            "{shown}"
        );
        assert!(shown.contains("│ 1  # TODO: tidy later␍\n"), "{shown}");
        assert!(
            shown.contains("│ 2  import os; os.system('id')\n"),
            "{shown}"
        );
        assert!(shown.contains("│ 3  print('ok')\n"), "{shown}");
        // In a shell script a lone \r does not end the line: one line, the marker inside it.
        let shown = console_bytes(approval("bash", "echo safe\rrm -rf ~", None));
        assert!(shown.contains("│ 1  echo safe␍rm -rf ~\n"), "{shown}");
    }

    #[test]
    fn bidi_zero_width_and_tag_characters_are_markers_and_counted() {
        let code = "access = 'user\u{202E} \u{2066}// admin\u{2069}\u{2066}'\nx\u{200B}y = 1\nz = 'a\u{E0041}\u{E0042}'\u{FEFF}";
        let shown = console_bytes(approval("python", code, None));
        assert_terminal_safe(&shown);
        assert!(
            shown.contains("│ ⚠ 8 hidden characters shown as ⟨U+202E⟩ ⟨U+2066⟩ ⟨U+2069⟩ ⟨U+200B⟩ ⟨U+E0041⟩ ⟨U+E0042⟩ …"),
            "{shown}"
        );
        assert!(
            shown.contains("│ 1  access = 'user⟨U+202E⟩ ⟨U+2066⟩// admin⟨U+2069⟩⟨U+2066⟩'\n"),
            "{shown}"
        );
        assert!(shown.contains("│ 2  x⟨U+200B⟩y = 1\n"), "{shown}");
        assert!(
            shown.contains("│ 3  z = 'a⟨U+E0041⟩⟨U+E0042⟩'⟨U+FEFF⟩\n"),
            "{shown}"
        );
        // Line numbers line up past nine lines.
        let long = (1..=10)
            .map(|i| format!("x = {i}"))
            .collect::<Vec<_>>()
            .join("\n");
        let shown = console_bytes(approval("python", &long, None));
        assert!(shown.contains("│  9  x = 9\n│ 10  x = 10\n"), "{shown}");
    }

    #[test]
    fn escapes_in_names_file_hints_and_messages_never_reach_the_terminal() {
        let shown = console_bytes(approval(
            "python",
            "print(1)",
            Some("x.py\u{1b}]52;c;Y2xpcGJvYXJk\u{7}\u{1b}[2J"),
        ));
        assert_terminal_safe(&shown);
        assert!(
            shown.contains("→ x.py␛]52;c;Y2xpcGJvYXJk␇␛[2J (refused"),
            "{shown}"
        );
        let shown = console_bytes(approval("python", "print(1)", Some("a\nb.py")));
        assert!(shown.contains("→ a␊b.py (refused"), "{shown}");
        for kind in [
            EventKind::SessionStarted {
                team: "t\u{1b}]0;pwned\u{7}".into(),
                task: "do \u{1b}[31mthis\u{202E}".into(),
                schema: 1,
                team_config: None,
                mode: crate::protocol::SessionMode::Gate,
            },
            EventKind::Message {
                agent: "coder".into(),
                content: "hi\u{1b}[2J\r there\u{200B}".into(),
                to: None,
            },
            EventKind::MessageDelta {
                agent: "coder".into(),
                delta: "\u{9b}31m\u{85}".into(),
            },
            EventKind::Error {
                message: "provider said \u{1b}]8;;http://x\u{7}click".into(),
            },
            EventKind::ExecutionOutput {
                id: 1,
                block: 0,
                stream: StreamKind::Stdout,
                text: "50%\r100%\u{1b}[K\n".into(),
            },
        ] {
            let shown = console_bytes(kind);
            assert_terminal_safe(&shown);
            assert!(shown.contains('␛') || shown.contains("⟨U+"), "{shown}");
        }
    }

    async fn read_all(bytes: Vec<u8>) -> Vec<InputLine> {
        let mut input = tokio::io::BufReader::new(std::io::Cursor::new(bytes));
        let mut n = 0;
        let mut lines = Vec::new();
        while let Some(l) = read_line(&mut input, &mut n).await {
            lines.push(l);
        }
        lines
    }

    #[tokio::test]
    async fn a_line_that_is_not_utf8_is_one_bad_line_not_the_end_of_input() {
        let mut bytes = b"first\n".to_vec();
        bytes.extend_from_slice(b"caf\xe9 \xff\xfe\r\n");
        bytes.extend_from_slice(b"{\"op\":\"continue\"}\nlast without newline");
        let lines = read_all(bytes).await;
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(lines[0], InputLine::Text("first".into()));
        let InputLine::Bad(why) = &lines[1] else {
            panic!("{lines:?}")
        };
        assert!(
            why.starts_with("input line 2 is not UTF-8 (invalid byte at offset 3)"),
            "{why}"
        );
        assert_eq!(lines[2], InputLine::Text("{\"op\":\"continue\"}".into()));
        assert_eq!(lines[3], InputLine::Text("last without newline".into()));
    }

    #[tokio::test]
    async fn an_over_long_line_is_skipped_with_a_short_message_and_reading_goes_on() {
        let mut bytes = vec![b'x'; MAX_INPUT_LINE + 4096];
        bytes.extend_from_slice(b"\nnext\n");
        // Exactly the limit is still a line.
        bytes.extend(std::iter::repeat_n(b'y', MAX_INPUT_LINE));
        bytes.push(b'\n');
        let lines = read_all(bytes).await;
        assert_eq!(lines.len(), 3);
        let InputLine::Bad(why) = &lines[0] else {
            panic!("first line should be refused")
        };
        assert!(why.contains("longer than 16 MiB"), "{why}");
        assert!(
            why.len() < 300,
            "the message repeats only an excerpt: {} bytes",
            why.len()
        );
        assert_eq!(lines[1], InputLine::Text("next".into()));
        assert!(matches!(&lines[2], InputLine::Text(t) if t.len() == MAX_INPUT_LINE));
    }

    #[test]
    fn decision_errors_repeat_only_an_excerpt_of_the_line() {
        let huge = format!(
            "{{\"id\":1,\"block\":0,\"decision\":\"{}\"}}",
            "z".repeat(100_000)
        );
        let e = parse_json_line(&huge).unwrap_err();
        assert!(e.len() < 400, "{} bytes", e.len());
        let e = parse_json_line(&format!("not json {}", "q".repeat(100_000))).unwrap_err();
        assert!(e.len() < 400, "{} bytes", e.len());
        let e = parse_json_line(&format!("{{\"id\":\"{}\"}}", "w".repeat(100_000))).unwrap_err();
        assert!(e.len() < 400, "{} bytes", e.len());
    }
}

#[cfg(test)]
mod type_ahead {
    use super::*;
    use crate::engine::state::SessionState;
    use tokio::io::AsyncWriteExt;

    fn event(seq: u64, kind: EventKind) -> Event {
        Event {
            seq,
            session: "s".into(),
            ts_ms: 0,
            kind,
        }
    }

    /// A person at a terminal types before the approval exists: the line is not used for it.
    #[tokio::test]
    async fn a_line_typed_before_an_approval_never_answers_it_at_a_terminal() {
        for interactive in [true, false] {
            let (ops_tx, mut ops_rx) = mpsc::unbounded_channel();
            let (ev_tx, ev_rx) = mpsc::unbounded_channel();
            let handle = SessionHandle {
                ops: ops_tx,
                events: ev_rx,
                task: tokio::spawn(async { SessionState::default() }),
            };
            let (mut typing, input) = tokio::io::duplex(1024);
            let opts = HeadlessOptions {
                json: false,
                auto: false,
                interactive,
            };
            let run = tokio::spawn(run(
                handle,
                opts,
                tokio::io::BufReader::new(input),
                Vec::new(),
                Vec::new(),
            ));
            typing.write_all(b"yes sounds good\n").await.unwrap();
            typing.write_all(b"please add tests too\n").await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let block = CodeBlock {
                index: 0,
                language: "python".into(),
                code: "import shutil; shutil.rmtree('/workspace')".into(),
                filename: None,
            };
            ev_tx
                .send(event(
                    1,
                    EventKind::ApprovalRequested {
                        id: 1,
                        agent: "coder".into(),
                        blocks: vec![block],
                    },
                ))
                .unwrap();
            let ops_before = if interactive { 1 } else { 0 };
            ev_tx
                .send(event(
                    2,
                    EventKind::Waiting {
                        on: WaitingOn::Approval,
                        ops_handled: ops_before,
                    },
                ))
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let mut ops = Vec::new();
            while let Ok(op) = ops_rx.try_recv() {
                ops.push(op);
            }
            let decided = ops
                .iter()
                .any(|o| matches!(o, Op::ResolveApproval { .. } | Op::ApproveAll { .. }));
            if interactive {
                assert!(!decided, "typed-ahead line decided the block: {ops:?}");
                assert_eq!(
                    ops,
                    vec![Op::UserMessage {
                        text: "please add tests too".into(),
                        to: None
                    }],
                    "the other line is a message to everyone"
                );
            } else {
                // A piped script's lines are kept for the questions to come (documented).
                assert!(decided, "{ops:?}");
            }
            drop(ev_tx);
            drop(typing);
            let _ = run.await;
        }
    }
}
