//! Transcripts out of a session log: Markdown for people (`sessions export --format md`) and the
//! events themselves as JSON lines for scripts (`--format json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::protocol::{
    DecisionKind, EXECUTOR, Event, EventKind, PauseKind, PolicyRule, SessionMode,
};

use super::diff;
use super::summary::{format_time, format_usd};

/// The events as JSON lines, one object per line, exactly as `--headless --json` prints them.
pub fn to_jsonl(events: &[Event]) -> String {
    let mut out = String::new();
    for ev in events {
        // Serializing our own types does not fail; a record that somehow did is left out.
        if let Ok(line) = serde_json::to_string(ev) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// A fence of backticks longer than any run in `text`, so the text cannot close it.
fn fence(text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    "`".repeat((longest + 1).max(3))
}

fn fenced(out: &mut String, lang: &str, text: &str) {
    let f = fence(text);
    let _ = writeln!(out, "{f}{lang}");
    out.push_str(text);
    if !text.ends_with('\n') {
        out.push('\n');
    }
    let _ = writeln!(out, "{f}\n");
}

fn mode_name(mode: SessionMode) -> &'static str {
    match mode {
        SessionMode::Step => "step",
        SessionMode::Gate => "gate",
        SessionMode::Auto => "auto",
    }
}

/// A pause kind in words.
pub fn pause_name(kind: PauseKind) -> &'static str {
    match kind {
        PauseKind::Budget => "budget",
        PauseKind::Loop => "loop detected",
        PauseKind::Step => "step",
        PauseKind::Human => "by the human",
        PauseKind::RetryWait => "waiting to retry",
        PauseKind::ProviderError => "provider error",
        PauseKind::Sandbox => "sandbox unavailable",
        PauseKind::AutoReplies => "agents went on without the human",
    }
}

/// A rule in words (transcripts and the TUI's rules list).
pub fn rule_text(rule: &PolicyRule) -> String {
    match rule {
        PolicyRule::CodeOnce { hash } => {
            format!("this exact code once more (sha256 {})", short(hash))
        }
        PolicyRule::CodeSession { hash } => {
            format!("this exact code for the session (sha256 {})", short(hash))
        }
        PolicyRule::LanguageAgent { language, agent } => {
            format!("any {language} block from {agent}")
        }
        PolicyRule::Mode {} => "session mode auto".to_string(),
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

#[derive(Default)]
struct CostRow {
    calls: u64,
    input: u64,
    output: u64,
    cached: u64,
    usd: f64,
    unpriced: u64,
    estimated: bool,
}

/// Untrusted text (a file name) as an inline code span, made visible first.
fn md_code(s: &str) -> String {
    let s = crate::text_safety::visible_line(s);
    let ticks = if s.contains('`') { "``" } else { "`" };
    format!(
        "{ticks}{}{}{}{ticks}",
        if ticks.len() > 1 { " " } else { "" },
        s,
        if ticks.len() > 1 { " " } else { "" }
    )
}

/// A readable Markdown transcript: the task and team, each message under its author's name,
/// each approval with the decision on every block (edits as unified diffs, rejections with their
/// reasons), each execution's output, and a cost table per agent and model.
///
/// The executor's result messages are left out: the approvals and executions above them already
/// say what ran and what came out. Control and invisible characters from the session (agent text,
/// names, file names, output) are shown as visible markers (`␛`, `⟨U+202E⟩`), never passed on.
pub fn to_markdown(id: &str, events: &[Event]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# proctor session {id}\n");
    // Code of each block by approval, to diff edits against.
    let mut proposed: BTreeMap<(u64, usize), (String, String)> = BTreeMap::new();
    // Output of executions that never finished.
    let mut running: BTreeMap<(u64, usize), (String, String)> = BTreeMap::new();
    let mut costs: BTreeMap<(String, String), CostRow> = BTreeMap::new();
    let mut last_ts = 0;
    for ev in events {
        last_ts = last_ts.max(ev.ts_ms);
        match &ev.kind {
            EventKind::SessionStarted {
                team,
                task,
                team_config,
                mode,
                ..
            } => {
                let task = task.trim();
                if task.contains('\n') {
                    out.push_str("- **Task:**\n\n");
                    for line in task.lines() {
                        let _ = writeln!(out, "  > {line}");
                    }
                    out.push('\n');
                } else {
                    let _ = writeln!(out, "- **Task:** {task}");
                }
                let _ = writeln!(out, "- **Team:** {team}");
                if let Some(cfg) = team_config {
                    for a in &cfg.agents {
                        let exec = if a.can_execute { ", may run code" } else { "" };
                        let desc = if a.description.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", a.description)
                        };
                        let _ = writeln!(out, "  - **{}** (`{}`{exec}){desc}", a.name, a.model);
                    }
                }
                let _ = writeln!(out, "- **Started:** {} UTC", format_time(ev.ts_ms));
                let _ = writeln!(out, "- **Approval mode:** {}\n", mode_name(*mode));
            }
            EventKind::SpeakerSelected { agent, note } => {
                if let Some(note) = note {
                    let _ = writeln!(out, "> Next speaker: **{agent}** ({note})\n");
                }
            }
            EventKind::SpeakerRequested { candidates } => {
                let _ = writeln!(
                    out,
                    "> The human picks the next speaker from: {}\n",
                    candidates.join(", ")
                );
            }
            EventKind::AgentStatus { .. }
            | EventKind::MessageDelta { .. }
            | EventKind::ImagePull { .. }
            | EventKind::Waiting { .. } => {}
            EventKind::Message { agent, content, to } => {
                if agent == EXECUTOR {
                    continue;
                }
                match to {
                    Some(to) => {
                        let _ = writeln!(out, "### {agent} → {to} (private note)\n");
                    }
                    None => {
                        let _ = writeln!(out, "### {agent}\n");
                    }
                }
                out.push_str(content.trim_end());
                out.push_str("\n\n");
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
                let row = costs.entry((agent.clone(), model.clone())).or_default();
                row.calls += 1;
                row.input += input_tokens;
                row.output += output_tokens;
                row.cached += cached_tokens;
                match usd {
                    Some(usd) => row.usd += usd,
                    None => row.unpriced += 1,
                }
                row.estimated |= *estimated;
            }
            EventKind::ApprovalRequested { id, agent, blocks } => {
                let n = blocks.len();
                let plural = if n == 1 { "" } else { "s" };
                let _ = writeln!(out, "#### Approval {id}: {n} block{plural} from {agent}\n");
                for b in blocks {
                    let file = b
                        .filename
                        .as_deref()
                        .map(|f| format!(" · `{}`", crate::text_safety::visible_line(f)))
                        .unwrap_or_default();
                    let lines = b.code.lines().count();
                    let unit = if lines == 1 { "line" } else { "lines" };
                    let _ = writeln!(
                        out,
                        "- Block {} · {}{file} · {lines} {unit}",
                        b.index + 1,
                        b.language
                    );
                    proposed.insert((*id, b.index), (b.language.clone(), b.code.clone()));
                }
                out.push('\n');
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
                let who = match by_rule {
                    Some(rule) => format!(" by rule: {}", rule_text(rule)),
                    None => String::new(),
                };
                let net = if *allow_network {
                    " (network allowed)"
                } else {
                    ""
                };
                match decision {
                    DecisionKind::Approved => {
                        let _ = writeln!(
                            out,
                            "**Block {} of approval {id}: approved**{who}{net}\n",
                            block + 1
                        );
                    }
                    DecisionKind::Skipped => {
                        let _ = writeln!(
                            out,
                            "**Block {} of approval {id}: skipped**{who}\n",
                            block + 1
                        );
                    }
                    DecisionKind::Rejected => {
                        let why = reason
                            .as_deref()
                            .filter(|r| !r.trim().is_empty())
                            .unwrap_or("no reason given");
                        let _ = writeln!(
                            out,
                            "**Block {} of approval {id}: rejected**{who}: {why}\n",
                            block + 1
                        );
                    }
                    DecisionKind::Edited => {
                        let _ = writeln!(
                            out,
                            "**Block {} of approval {id}: edited**{who}{net}\n",
                            block + 1
                        );
                        let new = code.as_deref().unwrap_or_default();
                        match proposed.get(&(*id, *block)) {
                            Some((_, old)) => {
                                let d = diff::unified(old, new, "proposed", "edited");
                                if d.is_empty() {
                                    out.push_str("(no change to the code)\n\n");
                                } else {
                                    fenced(&mut out, "diff", &d);
                                }
                            }
                            None => fenced(&mut out, "", new),
                        }
                    }
                }
            }
            EventKind::PolicyAdded { rule } => {
                let _ = writeln!(out, "> Auto-approval rule added: {}\n", rule_text(rule));
            }
            EventKind::PolicyRevoked { rule } => {
                let _ = writeln!(out, "> Auto-approval rule revoked: {}\n", rule_text(rule));
            }
            EventKind::WorkspaceChanged {
                id,
                block,
                created,
                modified,
                deleted,
                notes,
            } => {
                let delta = crate::workspace::WorkspaceDelta {
                    created: created.clone(),
                    modified: modified.clone(),
                    deleted: deleted.clone(),
                    notes: notes.clone(),
                };
                let lines = crate::workspace::describe(&delta, 200, &|p| md_code(p));
                if lines.is_empty() {
                    let _ = writeln!(
                        out,
                        "Block {} of approval {id} changed no files.\n",
                        block + 1
                    );
                } else {
                    let _ = writeln!(out, "Files block {} of approval {id} changed:\n", block + 1);
                    for l in lines {
                        let _ = writeln!(out, "- {l}");
                    }
                    out.push('\n');
                }
            }
            EventKind::WorkspaceAttached {
                path, mode, commit, ..
            } => {
                let how = match mode {
                    crate::protocol::WorkspaceMode::Rw => "read-write",
                    crate::protocol::WorkspaceMode::Copy => "a copy",
                };
                let at = commit
                    .as_deref()
                    .map(|c| format!(", git commit {}", c.chars().take(12).collect::<String>()))
                    .unwrap_or_default();
                let _ = writeln!(out, "> Workspace: {} ({how}{at})\n", md_code(path));
            }
            EventKind::ModeChanged { mode } => {
                let _ = writeln!(out, "> Approval mode is now {}\n", mode_name(*mode));
            }
            EventKind::SpeakerPinned { agent } => {
                let _ = writeln!(out, "> {agent} was pinned to speak next\n");
            }
            EventKind::AgentMuted { agent, muted } => {
                let _ = writeln!(
                    out,
                    "> {agent} {}\n",
                    if *muted { "muted" } else { "unmuted" }
                );
            }
            EventKind::ExecutionStarted {
                id,
                block,
                language,
            } => {
                running.insert((*id, *block), (language.clone(), String::new()));
            }
            EventKind::ExecutionOutput {
                id, block, text, ..
            } => {
                if let Some((_, buf)) = running.get_mut(&(*id, *block)) {
                    buf.push_str(text);
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
                let language = running
                    .remove(&(*id, *block))
                    .map(|(l, _)| l)
                    .or_else(|| proposed.get(&(*id, *block)).map(|(l, _)| l.clone()))
                    .unwrap_or_default();
                let mut what = vec![format!("exit {exit_code}"), format!("{duration_ms} ms")];
                if *timed_out {
                    what.push("timed out".into());
                }
                if *oom {
                    what.push("out of memory".into());
                }
                if *interrupted {
                    what.push("interrupted".into());
                }
                if *workspace_limit_exceeded {
                    what.push("killed: the workspace grew past its disk limit".into());
                }
                if *truncated {
                    what.push("output truncated".into());
                }
                if *not_run {
                    let _ = writeln!(
                        out,
                        "#### Block {} of approval {id} ({language}) did not run\n",
                        block + 1
                    );
                } else {
                    let _ = writeln!(
                        out,
                        "#### Ran block {} of approval {id} ({language}): {}\n",
                        block + 1,
                        what.join(", ")
                    );
                }
                if output.is_empty() {
                    out.push_str("(no output)\n\n");
                } else {
                    fenced(&mut out, "text", output);
                }
            }
            EventKind::BudgetWarning { spent_usd, cap_usd } => {
                let _ = writeln!(
                    out,
                    "> Budget warning: ${spent_usd:.2} of ${cap_usd:.2} spent\n"
                );
            }
            EventKind::BudgetChanged { cap_usd } => {
                let _ = writeln!(out, "> Budget set to ${cap_usd:.2}\n");
            }
            EventKind::Notice { message } => {
                let _ = writeln!(out, "> {}\n", message.trim());
            }
            EventKind::Paused { reason, kind } => {
                let _ = writeln!(
                    out,
                    "> **Paused** ({}): {}\n",
                    pause_name(*kind),
                    reason.trim()
                );
            }
            EventKind::Resumed {} => out.push_str("> **Resumed**\n\n"),
            EventKind::Terminated { reason } => {
                let _ = writeln!(out, "> **Session ended:** {}\n", reason.trim());
            }
            EventKind::Error { message } => {
                let _ = writeln!(out, "> **Error:** {}\n", message.trim());
            }
        }
    }
    for ((id, block), (language, output)) in &running {
        let _ = writeln!(
            out,
            "#### Block {} of approval {id} ({language}) did not finish\n",
            block + 1
        );
        if !output.is_empty() {
            fenced(&mut out, "text", output);
        }
    }
    write_costs(&mut out, &costs);
    let _ = writeln!(out, "_Last activity: {} UTC_", format_time(last_ts));
    // Everything above came from the session's events: a transcript printed to a terminal must
    // not act on it, so every hidden character becomes its visible marker (one pass, all fields).
    crate::text_safety::visible(&out).into_owned()
}

fn write_costs(out: &mut String, costs: &BTreeMap<(String, String), CostRow>) {
    out.push_str("## Cost\n\n");
    if costs.is_empty() {
        out.push_str("No model calls.\n\n");
        return;
    }
    out.push_str(
        "| agent | model | calls | input tokens | output tokens | cached tokens | USD |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---:|---:|\n");
    let mut total = CostRow::default();
    for ((agent, model), row) in costs {
        let demo = if crate::engine::cost::is_demo_priced(model) {
            " (demo price)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "| {agent} | {model} | {} | {} | {} | {} | {}{demo} |",
            row.calls,
            row.input,
            row.output,
            row.cached,
            usd_cell(row)
        );
        total.calls += row.calls;
        total.input += row.input;
        total.output += row.output;
        total.cached += row.cached;
        total.usd += row.usd;
        total.unpriced += row.unpriced;
        total.estimated |= row.estimated;
    }
    let _ = writeln!(
        out,
        "| **total** | | {} | {} | {} | {} | **{}** |\n",
        total.calls,
        total.input,
        total.output,
        total.cached,
        usd_cell(&total)
    );
    if total.unpriced > 0 {
        let _ = writeln!(
            out,
            "{} call(s) had no price and are not in the total.\n",
            total.unpriced
        );
    }
    if total.estimated {
        out.push_str(
            "≈ marks token counts estimated by proctor rather than reported by the provider.\n\n",
        );
    }
    if costs
        .keys()
        .any(|(_, model)| crate::engine::cost::is_demo_priced(model))
    {
        let _ = writeln!(
            out,
            "{} costs are demo prices: what the demo would cost on a real model; nothing was billed.\n",
            crate::engine::cost::DEMO_MODEL
        );
    }
}

fn usd_cell(row: &CostRow) -> String {
    let approx = if row.estimated { "≈" } else { "" };
    if row.unpriced == row.calls {
        return "unpriced".into();
    }
    format!("{approx}{}", format_usd(row.usd, row.unpriced))
}
