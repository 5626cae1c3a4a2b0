//! How each kind of cell looks at a width: a message under its author's name, decisions with their
//! diffs and reasons, executions with their output folded (head and tail) and their workspace
//! changes, pauses, notices and errors.

use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};

use crate::protocol::{DecisionKind, HUMAN, SessionMode, StreamKind};
use crate::store::export::rule_text;
use crate::tui::model::cells::WorkspaceChange;
use crate::tui::model::{CellKind, ExecView, SessionView, UsageView};
use crate::tui::render::highlight::Highlighter;
use crate::tui::render::text::{line_spans, one_line};
use crate::tui::render::wrap::{wrap_hard, wrap_words};
use crate::tui::render::{bytes, duration, tokens, usd};
use crate::tui::theme::Theme;

/// Lines of output shown at each end of a folded output.
pub const FOLD_HEAD: usize = 5;
/// Lines shown at the end of a folded output.
pub const FOLD_TAIL: usize = 5;
/// Lines of a running block's output shown while it runs (folded).
pub const LIVE_TAIL: usize = 8;

/// What rendering a cell needs.
pub struct CellContext<'a> {
    /// Roles.
    pub theme: &'a Theme,
    /// Code colours.
    pub highlighter: &'a Highlighter,
    /// The session (agent colours).
    pub view: &'a SessionView,
    /// Outputs and reports shown whole.
    pub expand: bool,
}

impl CellContext<'_> {
    /// Style of an author's name.
    pub fn author(&self, agent: &str) -> Style {
        if agent == HUMAN {
            self.theme.accent().add_modifier(Modifier::BOLD)
        } else {
            self.theme.agent(self.view.agent_slot(agent))
        }
    }
}

fn wrap_text(
    text: &str,
    style: Style,
    width: usize,
    first: Vec<Span<'static>>,
    rest: Vec<Span<'static>>,
    ctx: &CellContext<'_>,
) -> Vec<Line<'static>> {
    let marker = ctx.theme.marker();
    let mut out = Vec::new();
    let mut first = Some(first);
    for l in text.split('\n') {
        let spans = line_spans(l, style, marker, 0);
        let f = first.take().unwrap_or_else(|| rest.clone());
        out.extend(wrap_words(&spans, width, &f, &rest));
    }
    out
}

/// A one-line entry: a symbol and words, wrapped under the symbol.
fn entry(
    symbol: &str,
    style: Style,
    text: &str,
    width: usize,
    ctx: &CellContext<'_>,
) -> Vec<Line<'static>> {
    let first = vec![Span::styled(format!("{symbol} "), style)];
    let pad = " ".repeat(unicode_width::UnicodeWidthStr::width(symbol) + 1);
    wrap_text(text, style, width, first, vec![Span::raw(pad)], ctx)
}

/// Header line of a message: the author, a private recipient, the call's tokens and cost.
pub fn message_header(
    agent: &str,
    to: Option<&str>,
    usage: Option<&UsageView>,
    streaming: bool,
    ctx: &CellContext<'_>,
) -> Line<'static> {
    let theme = ctx.theme;
    let name = if agent == HUMAN {
        "you".to_string()
    } else {
        one_line(agent)
    };
    let mut spans = vec![Span::styled(name, ctx.author(agent))];
    if let Some(to) = to {
        spans.push(Span::styled(
            format!(" → {} (private note)", one_line(to)),
            theme.warning(),
        ));
    }
    if let Some(u) = usage {
        let approx = if u.estimated { "≈" } else { "" };
        let cost = match u.usd {
            Some(x) => usd(x),
            None => "unpriced".into(),
        };
        spans.push(Span::styled(
            format!(
                "  {approx}{} in · {approx}{} out · {approx}{cost}",
                tokens(u.input_tokens),
                tokens(u.output_tokens)
            ),
            theme.muted(),
        ));
    }
    if streaming {
        spans.push(Span::styled("  …", theme.muted()));
    }
    Line::from(spans)
}

/// The status line of an execution: running with elapsed time against the timeout, or how it
/// ended (exit code, time, timeout, out of memory, interruption, truncation).
pub fn exec_header(x: &ExecView, now_ms: u64, theme: &Theme) -> Line<'static> {
    let what = format!(
        "#{} block {} · {}",
        x.id,
        x.block + 1,
        one_line(&x.language)
    );
    match &x.end {
        None => {
            let elapsed = now_ms.saturating_sub(x.started_ms);
            Line::from(vec![
                Span::styled("▶ ", theme.warning()),
                Span::styled(what, theme.warning()),
                Span::styled(
                    format!(" · running {} / {} s", duration(elapsed), x.timeout_s),
                    theme.muted(),
                ),
                Span::styled("  (Esc stops it)", theme.muted()),
            ])
        }
        Some(e) if e.not_run => Line::from(vec![
            Span::styled("■ ", theme.danger()),
            Span::styled(what, theme.danger()),
            Span::styled(" · not run", theme.danger()),
        ]),
        Some(e) => {
            let ok = e.exit_code == 0 && !e.timed_out && !e.oom && !e.interrupted;
            let style = if ok { theme.success() } else { theme.danger() };
            let mut spans = vec![
                Span::styled("■ ", style),
                Span::styled(what, style),
                Span::styled(format!(" · exit {}", e.exit_code), style),
                Span::styled(format!(" · {}", duration(e.duration_ms)), theme.muted()),
            ];
            for (flag, word, st) in [
                (
                    e.timed_out,
                    format!("timed out after {} s", x.timeout_s),
                    theme.danger(),
                ),
                (e.oom, "killed: out of memory".to_string(), theme.danger()),
                (
                    e.workspace_limit_exceeded,
                    "killed: workspace over its limit".to_string(),
                    theme.danger(),
                ),
                (e.interrupted, "interrupted".to_string(), theme.warning()),
                (e.truncated, "output truncated".to_string(), theme.warning()),
            ] {
                if flag {
                    spans.push(Span::styled(format!(" · {word}"), st));
                }
            }
            Line::from(spans)
        }
    }
}

fn changes_lines(c: &WorkspaceChange, width: usize, ctx: &CellContext<'_>) -> Vec<Line<'static>> {
    let theme = ctx.theme;
    let mut out = Vec::new();
    for (mark, f) in c.entries() {
        let style = match mark {
            crate::tui::model::FileMark::Created => theme.success(),
            crate::tui::model::FileMark::Modified => theme.warning(),
            crate::tui::model::FileMark::Deleted => theme.danger(),
        };
        let mut detail = Vec::new();
        match (f.size_before, f.size_after) {
            (Some(a), Some(b)) if a != b => detail.push(format!("{} → {}", bytes(a), bytes(b))),
            (_, Some(b)) => detail.push(bytes(b)),
            (Some(a), None) => detail.push(bytes(a)),
            (None, None) => {}
        }
        if let Some(n) = f.lines_added.filter(|n| *n > 0) {
            detail.push(format!("+{n}"));
        }
        if let Some(n) = f.lines_removed.filter(|n| *n > 0) {
            detail.push(format!("-{n}"));
        }
        let text = format!(
            "{} {}",
            one_line(&f.path),
            if detail.is_empty() {
                String::new()
            } else {
                format!("({})", detail.join(", "))
            }
        );
        let first = vec![
            Span::raw("  "),
            Span::styled(format!("{} ", mark.sign()), style),
            Span::styled(format!("{} ", mark.word()), theme.muted()),
        ];
        out.extend(wrap_hard(
            &[Span::styled(text.trim_end().to_string(), theme.base())],
            width,
            &first,
            &[Span::raw("      ")],
        ));
    }
    for (path, note) in &c.notes {
        let text = if path.is_empty() {
            one_line(note)
        } else {
            format!("{}: {}", one_line(path), one_line(note))
        };
        out.extend(entry("  ·", theme.muted(), &text, width, ctx));
    }
    out
}

/// Output lines of a block: each stream in its style, folded to head and tail unless expanded.
fn output_lines(x: &ExecView, width: usize, ctx: &CellContext<'_>) -> Vec<Line<'static>> {
    let theme = ctx.theme;
    let bar = vec![Span::styled("  │ ", theme.muted())];
    let cont = vec![Span::styled("  │   ", theme.muted())];
    // Logical lines with their stream, without building more than needed when folded.
    let total = x.output_lines
        + usize::from(!x.chunks.last().is_some_and(|c| c.text.ends_with('\n')) && x.output_len > 0);
    let running = x.end.is_none();
    let (head, tail) = if ctx.expand {
        (usize::MAX, 0)
    } else if running {
        (0, LIVE_TAIL)
    } else if total > FOLD_HEAD + FOLD_TAIL + 1 {
        (FOLD_HEAD, FOLD_TAIL)
    } else {
        (usize::MAX, 0)
    };
    let mut out = Vec::new();
    let mut index = 0usize;
    let mut skipped = 0usize;
    let mut folded_note_at: Option<usize> = None;
    let skip_from = head;
    let skip_to = total.saturating_sub(tail);
    for chunk in &x.chunks {
        let style = match chunk.stream {
            StreamKind::Stdout => theme.base(),
            StreamKind::Stderr => theme.warning(),
        };
        let text = chunk.text.strip_suffix('\n').unwrap_or(&chunk.text);
        if chunk.text.is_empty() {
            continue;
        }
        for l in text.split('\n') {
            if head != usize::MAX && index >= skip_from && index < skip_to {
                if folded_note_at.is_none() {
                    folded_note_at = Some(out.len());
                }
                skipped += 1;
                index += 1;
                continue;
            }
            index += 1;
            let spans = line_spans(l, style, theme.marker(), 0);
            out.extend(wrap_hard(&spans, width, &bar, &cont));
        }
    }
    if let Some(at) = folded_note_at.filter(|_| skipped > 0) {
        let hint = if running { "" } else { " (o shows all)" };
        out.insert(
            at,
            Line::from(vec![Span::styled(
                format!("  ┆ … {skipped} more lines{hint}"),
                theme.muted(),
            )]),
        );
    }
    out
}

/// Renders every kind of cell but messages (see `transcript::Transcript`).
pub fn render_cell(kind: &CellKind, width: usize, ctx: &CellContext<'_>) -> Vec<Line<'static>> {
    let theme = ctx.theme;
    match kind {
        // The task follows as the human's first message.
        CellKind::SessionStart { team, .. } => vec![
            Line::from(vec![
                Span::styled("proctor", theme.accent().add_modifier(Modifier::BOLD)),
                Span::styled(
                    format!(
                        " · team {} · session {}",
                        one_line(team),
                        one_line(&ctx.view.session)
                    ),
                    theme.muted(),
                ),
            ]),
            Line::default(),
        ],
        CellKind::Message { .. } => Vec::new(),
        CellKind::SpeakerNote { agent, note } => {
            let mut l = vec![
                Span::styled("→ ", theme.muted()),
                Span::styled(one_line(agent), ctx.author(agent)),
                Span::styled(" speaks next: ", theme.muted()),
            ];
            l.extend(line_spans(note, theme.muted(), theme.marker(), 0));
            wrap_words(&l, width, &[], &[Span::raw("  ")])
        }
        CellKind::SpeakerRequested { candidates } => {
            let names: Vec<String> = candidates.iter().map(|c| one_line(c)).collect();
            entry(
                "?",
                theme.warning(),
                &format!("who speaks next? {}", names.join(", ")),
                width,
                ctx,
            )
        }
        CellKind::Approval { id, agent, blocks } => {
            let n = blocks.len();
            let mut l = vec![Line::from(vec![
                Span::styled("┃ ", theme.warning()),
                Span::styled(format!("approval #{id}: "), theme.warning()),
                Span::styled(one_line(agent), ctx.author(agent)),
                Span::styled(
                    format!(" proposes {n} block{}", if n == 1 { "" } else { "s" }),
                    theme.warning(),
                ),
            ])];
            for (i, (lang, file, lines)) in blocks.iter().enumerate() {
                let file = file
                    .as_ref()
                    .map(|f| format!(" → {}", one_line(f)))
                    .unwrap_or_default();
                l.push(Line::from(vec![
                    Span::styled("┃   ", theme.warning()),
                    Span::styled(
                        format!(
                            "block {}/{n} · {}{file} · {lines} lines",
                            i + 1,
                            one_line(lang)
                        ),
                        theme.muted(),
                    ),
                ]));
            }
            l
        }
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
        } => {
            let what = format!("#{id} block {}", block + 1);
            let mut l = match decision {
                DecisionKind::Approved => {
                    let by = match by_rule {
                        Some(crate::protocol::PolicyRule::Mode {}) => " (auto mode)".to_string(),
                        Some(r) => format!(" by rule: {}", rule_text(r)),
                        None => String::new(),
                    };
                    entry(
                        "✓",
                        theme.success(),
                        &format!("{what} approved{by}"),
                        width,
                        ctx,
                    )
                }
                DecisionKind::Edited => entry(
                    "✎",
                    theme.warning(),
                    &format!("{what} edited by you before it ran"),
                    width,
                    ctx,
                ),
                DecisionKind::Rejected => {
                    let r = reason
                        .as_deref()
                        .filter(|r| !r.trim().is_empty())
                        .unwrap_or("(no reason)");
                    entry(
                        "✗",
                        theme.danger(),
                        &format!("{what} rejected: {r}"),
                        width,
                        ctx,
                    )
                }
                DecisionKind::Skipped => {
                    entry("↷", theme.muted(), &format!("{what} skipped"), width, ctx)
                }
            };
            if *allow_network {
                l.extend(entry(
                    "  ⚠",
                    theme.danger(),
                    "with network access for this block",
                    width,
                    ctx,
                ));
            }
            if let (Some(old), Some(new)) = (original, code) {
                let diff = crate::store::diff::unified(old, new, "agent's version", "what ran");
                for d in diff.lines() {
                    let style = if d.starts_with('+') {
                        theme.success()
                    } else if d.starts_with('-') {
                        theme.danger()
                    } else if d.starts_with("@@") {
                        theme.accent()
                    } else {
                        theme.muted()
                    };
                    let spans = line_spans(d, style, theme.marker(), 0);
                    l.extend(wrap_hard(
                        &spans,
                        width,
                        &[Span::raw("    ")],
                        &[Span::raw("    ")],
                    ));
                }
                let _ = language;
            }
            l
        }
        CellKind::Execution(x) => {
            let mut l = vec![exec_header(x, x.started_ms, theme)];
            l.extend(output_lines(x, width, ctx));
            if let Some(c) = &x.changes {
                if c.is_empty() {
                    l.push(Line::from(Span::styled(
                        "  no workspace changes",
                        theme.muted(),
                    )));
                } else {
                    l.extend(changes_lines(c, width, ctx));
                }
            }
            l.push(Line::default());
            l
        }
        CellKind::Workspace { id, block, changes } => {
            let mut l = entry(
                "·",
                theme.muted(),
                &format!("#{id} block {} changed the workspace:", block + 1),
                width,
                ctx,
            );
            l.extend(changes_lines(changes, width, ctx));
            l
        }
        CellKind::ExecutorReport { text } => {
            let n = text.lines().count();
            if ctx.expand {
                let mut l = entry("↳", theme.muted(), "report sent to the agent:", width, ctx);
                l.extend(wrap_text(
                    text,
                    theme.muted(),
                    width,
                    vec![Span::raw("  ")],
                    vec![Span::raw("  ")],
                    ctx,
                ));
                l.push(Line::default());
                l
            } else {
                let mut l = entry(
                    "↳",
                    theme.muted(),
                    &format!("results reported to the agent ({n} lines; o shows them)"),
                    width,
                    ctx,
                );
                l.push(Line::default());
                l
            }
        }
        CellKind::Rule { rule, added } => {
            if *added {
                entry(
                    "+",
                    theme.accent(),
                    &format!("auto-approval rule: {}", rule_text(rule)),
                    width,
                    ctx,
                )
            } else {
                entry(
                    "−",
                    theme.muted(),
                    &format!("rule revoked: {}", rule_text(rule)),
                    width,
                    ctx,
                )
            }
        }
        CellKind::ModeChanged { mode } => {
            let words = match mode {
                SessionMode::Step => "step (pause before every turn and every execution)",
                SessionMode::Gate => "gate (every block waits for you)",
                SessionMode::Auto => "auto (every block approved, still sandboxed)",
            };
            entry("·", theme.muted(), &format!("mode: {words}"), width, ctx)
        }
        CellKind::Pinned { agent } => entry(
            "·",
            theme.muted(),
            &format!("{} speaks next (pinned by you)", one_line(agent)),
            width,
            ctx,
        ),
        CellKind::Muted { agent, muted } => entry(
            "·",
            theme.muted(),
            &format!(
                "{} {}",
                one_line(agent),
                if *muted { "muted" } else { "unmuted" }
            ),
            width,
            ctx,
        ),
        CellKind::BudgetWarning { spent_usd, cap_usd } => entry(
            "⚠",
            theme.warning(),
            &format!("budget: {} of {} spent", usd(*spent_usd), usd(*cap_usd)),
            width,
            ctx,
        ),
        CellKind::BudgetChanged { cap_usd } => entry(
            "·",
            theme.muted(),
            &format!("budget now {}", usd(*cap_usd)),
            width,
            ctx,
        ),
        CellKind::Notice { text } => entry("·", theme.muted(), text, width, ctx),
        CellKind::Error { text } => entry("✗", theme.danger(), text, width, ctx),
        CellKind::Paused { kind, reason } => {
            let mut l = entry(
                "⏸",
                theme.warning(),
                &match kind {
                    // The human's own pause says so in its reason.
                    crate::protocol::PauseKind::Human => format!("paused: {reason}"),
                    crate::protocol::PauseKind::Budget
                    | crate::protocol::PauseKind::Loop
                    | crate::protocol::PauseKind::Step
                    | crate::protocol::PauseKind::RetryWait
                    | crate::protocol::PauseKind::ProviderError
                    | crate::protocol::PauseKind::Sandbox
                    | crate::protocol::PauseKind::AutoReplies => format!(
                        "paused ({}): {reason}",
                        crate::store::export::pause_name(*kind)
                    ),
                },
                width,
                ctx,
            );
            l.push(Line::default());
            l
        }
        CellKind::Resumed => entry("▶", theme.muted(), "continued", width, ctx),
        CellKind::Terminated { reason } => {
            let mut l = entry(
                "■",
                theme.accent().add_modifier(Modifier::BOLD),
                &format!("session ended: {reason}"),
                width,
                ctx,
            );
            l.push(Line::default());
            l
        }
    }
}
