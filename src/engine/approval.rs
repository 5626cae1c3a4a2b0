//! The approval gate: which rule (if any) approves a block without asking, and the report that
//! goes back to the proposing agent saying, per block, what ran, what the human changed, and why
//! something did not run.

use crate::engine::state::{PendingApproval, code_hash};
use crate::protocol::{CodeBlock, DecisionKind, PolicyRule, SessionMode};

/// The rule that approves `block` from `agent` without asking, if any. Session mode `auto` is
/// reported as `PolicyRule::Mode`.
pub fn matching_rule(
    mode: SessionMode,
    rules: &[PolicyRule],
    agent: &str,
    block: &CodeBlock,
) -> Option<PolicyRule> {
    match mode {
        SessionMode::Auto => return Some(PolicyRule::Mode {}),
        SessionMode::Step | SessionMode::Gate => {}
    }
    let hash = code_hash(&block.code);
    rules
        .iter()
        .find(|r| match r {
            PolicyRule::CodeOnce { hash: h } | PolicyRule::CodeSession { hash: h } => *h == hash,
            PolicyRule::LanguageAgent { language, agent: a } => {
                *language == block.language && a == agent
            }
            PolicyRule::Mode {} => false,
        })
        .cloned()
}

/// Truncates an output for the agent's context, keeping head and tail.
fn clip(output: &str, max: usize) -> String {
    if output.len() <= max {
        return output.to_string();
    }
    let head: String = output.chars().take(max / 2).collect();
    let tail_rev: String = output.chars().rev().take(max / 2).collect();
    let tail: String = tail_rev.chars().rev().collect();
    format!("{head}\n… [{} bytes omitted] …\n{tail}", output.len() - max)
}

/// The files a block changed, for the agents (paths exact; at most 50 listed).
fn changes_text(changes: &crate::workspace::WorkspaceDelta) -> String {
    let lines = crate::workspace::describe(changes, 50, &|p| p.to_owned());
    if lines.is_empty() {
        return "Files in the workspace: none changed.\n".into();
    }
    let mut out = String::from("Files in the workspace:\n");
    for l in lines {
        out.push_str(&format!("- {l}\n"));
    }
    out
}

/// The executor's message to the proposing agent for a finished approval.
pub fn report(p: &PendingApproval, sandbox_error: Option<&str>) -> String {
    let mut out = format!(
        "Results of the code blocks you proposed (approval #{}):\n",
        p.id
    );
    for (i, block) in p.blocks.iter().enumerate() {
        let n = i + 1;
        let lang = &block.language;
        let Some(d) = p.decisions.get(i).and_then(|d| d.as_ref()) else {
            out.push_str(&format!("\nBlock {n} ({lang}): not run (no decision).\n"));
            continue;
        };
        match d.decision {
            DecisionKind::Rejected => {
                let reason = d.reason.as_deref().filter(|r| !r.trim().is_empty());
                out.push_str(&format!(
                    "\nBlock {n} ({lang}): REJECTED by the human, not run. Reason: {}\n",
                    reason.unwrap_or("(no reason given)")
                ));
                continue;
            }
            DecisionKind::Skipped => {
                out.push_str(&format!(
                    "\nBlock {n} ({lang}): skipped by the human, not run.\n"
                ));
                continue;
            }
            DecisionKind::Edited => {
                let code = d.code.as_deref().unwrap_or(&block.code);
                out.push_str(&format!(
                    "\nBlock {n} ({lang}): the human EDITED this block before it ran. The code that ran:\n```{lang}\n{code}\n```\n"
                ));
                let diff = crate::store::diff::unified(&block.code, code, "yours", "ran");
                if !diff.is_empty() {
                    out.push_str(&format!(
                        "What the human changed:\n```diff\n{}\n```\n",
                        diff.trim_end()
                    ));
                }
            }
            DecisionKind::Approved => {
                out.push_str(&format!(
                    "\nBlock {n} ({lang}): approved and run as proposed.\n"
                ));
            }
        }
        match p.results.get(i).and_then(|r| r.as_ref()) {
            Some(r) => {
                let mut status = format!("exit code {}", r.exit_code);
                if r.timed_out {
                    status.push_str(", TIMED OUT (killed at the time limit)");
                }
                if r.oom {
                    status.push_str(", OUT OF MEMORY (killed by the memory limit)");
                }
                if r.interrupted {
                    status.push_str(", INTERRUPTED (stopped before it finished)");
                }
                if r.workspace_limit_exceeded {
                    status.push_str(
                        ", KILLED: it grew the workspace past its disk limit (workspace_limit_mb)",
                    );
                }
                if r.truncated {
                    status.push_str(", output truncated");
                }
                let output = clip(&r.output, 8000);
                if output.trim().is_empty() {
                    out.push_str(&format!("{status}; no output.\n"));
                } else {
                    out.push_str(&format!(
                        "{status}; output:\n```\n{}\n```\n",
                        output.trim_end()
                    ));
                }
                if let Some(changes) = &r.changes {
                    out.push_str(&changes_text(changes));
                }
            }
            None => {
                let why = sandbox_error.unwrap_or("it was not run");
                out.push_str(&format!("could not run: {why}\n"));
            }
        }
    }
    out
}
