//! The approval gate: which rule (if any) approves a block without asking, and the report that
//! goes back to the proposing agent saying, per block, what ran, what the human changed, and why
//! something did not run.

use std::path::Path;

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

/// How every executor report begins (then the approval id); [`read_report`] looks for it.
const REPORT_HEADER: &str = "Results of the code blocks you proposed (approval #";
/// What a report says for a rejection without a reason.
const NO_REASON: &str = "(no reason given)";

/// Host paths the agent must never learn (where the data dir and the workspace live on this
/// machine), and the names it sees instead: the workspace is `/workspace`, as inside the sandbox.
#[derive(Debug, Clone, Default)]
pub struct HostPaths {
    /// (host path, shown as), longest first.
    pairs: Vec<(String, &'static str)>,
}

impl HostPaths {
    /// The paths around a session's `workspace`: the workspace itself and, when it is the
    /// session's own (`DATA_DIR/sessions/<id>/workspace`), the data dir; as given and resolved.
    pub fn new(workspace: &Path) -> Self {
        let mut pairs = Vec::new();
        let mut add = |path: &Path, shown: &'static str| {
            for p in [Some(path.to_path_buf()), path.canonicalize().ok()]
                .into_iter()
                .flatten()
            {
                let text = p.display().to_string();
                // Never a short path that would mangle ordinary text ("/", "/tmp").
                if text.len() > 4 && !pairs.iter().any(|(t, _)| *t == text) {
                    pairs.push((text, shown));
                }
            }
        };
        add(workspace, "/workspace");
        let data_dir = workspace
            .parent()
            .and_then(Path::parent)
            .filter(|sessions| sessions.file_name().is_some_and(|n| n == "sessions"))
            .and_then(Path::parent);
        if let Some(data) = data_dir {
            add(data, "<data dir>");
        }
        pairs.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        Self { pairs }
    }

    /// `text` with every host path replaced by what the agent may see.
    pub fn hide(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (path, shown) in &self.pairs {
            if out.contains(path.as_str()) {
                out = out.replace(path.as_str(), shown);
            }
        }
        out
    }
}

/// The executor's message to the proposing agent for a finished approval: per block, whether it
/// ran (as proposed or as the human edited it) and what came out, or that it did not run and
/// why. `not_reached` says why approved blocks that have no result were never tried (an earlier
/// failure of the sandbox, an interruption). Host paths never appear in it.
pub fn report(p: &PendingApproval, not_reached: Option<&str>, host: &HostPaths) -> String {
    let mut out = format!("{REPORT_HEADER}{}):\n", p.id);
    for (i, block) in p.blocks.iter().enumerate() {
        let n = i + 1;
        let lang = &block.language;
        let Some(d) = p.decisions.get(i).and_then(|d| d.as_ref()) else {
            out.push_str(&format!("\nBlock {n} ({lang}): not run (no decision).\n"));
            continue;
        };
        let result = p.results.get(i).and_then(|r| r.as_ref());
        match d.decision {
            DecisionKind::Rejected => {
                let reason = d.reason.as_deref().filter(|r| !r.trim().is_empty());
                out.push_str(&format!(
                    "\nBlock {n} ({lang}): REJECTED by the human, not run. Reason: {}\n",
                    reason.unwrap_or(NO_REASON)
                ));
                continue;
            }
            DecisionKind::Skipped => {
                out.push_str(&format!(
                    "\nBlock {n} ({lang}): skipped by the human, not run.\n"
                ));
                continue;
            }
            DecisionKind::Approved | DecisionKind::Edited => {}
        }
        let ran = result.is_some_and(|r| !r.not_run);
        let edited = d.decision == DecisionKind::Edited;
        match (edited, ran) {
            (false, true) => {
                let how = if result.is_some_and(|r| r.interrupted) {
                    "approved and started as proposed, but INTERRUPTED before it finished."
                } else {
                    "approved and run as proposed."
                };
                out.push_str(&format!("\nBlock {n} ({lang}): {how}\n"));
            }
            (false, false) => {
                out.push_str(&format!("\nBlock {n} ({lang}): approved, but NOT RUN.\n"));
            }
            (true, _) => {
                let code = d.code.as_deref().unwrap_or(&block.code);
                let what = if ran {
                    "The code that ran:"
                } else {
                    "It did NOT RUN. The edited code:"
                };
                out.push_str(&format!(
                    "\nBlock {n} ({lang}): the human EDITED this block. {what}\n```{lang}\n{code}\n```\n"
                ));
                let diff = crate::store::diff::unified(&block.code, code, "yours", "edited");
                if !diff.is_empty() {
                    out.push_str(&format!(
                        "What the human changed:\n```diff\n{}\n```\n",
                        diff.trim_end()
                    ));
                }
            }
        }
        match result {
            Some(r) if r.not_run => {
                let why = r.output.trim();
                let why = ["not run: ", "could not run: "]
                    .iter()
                    .find_map(|p| why.strip_prefix(p))
                    .unwrap_or(why);
                out.push_str(&format!("Why it did not run: {why}\n"));
            }
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
                let why = not_reached.unwrap_or("it was not reached");
                out.push_str(&format!("Why it did not run: {why}\n"));
            }
        }
    }
    host.hide(&out)
}

/// One block's decision as an executor report states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedDecision {
    /// What the human decided.
    pub decision: DecisionKind,
    /// The reason of a rejection, when one was given.
    pub reason: Option<String>,
}

/// The decisions an executor report (see [`report`]) states, block by block, read back from its
/// text: for a reader that sees only the conversation, as a model does (the scripted model
/// branches on them). `None` when `text` holds no report; blocks without a decision are left out.
pub fn read_report(text: &str) -> Option<Vec<ReportedDecision>> {
    let start = text.find(REPORT_HEADER)?;
    let body = &text[start..];
    // Block headers in order; output quoted in the report cannot reorder them.
    let mut heads = Vec::new();
    let mut from = 0;
    for n in 1.. {
        let Some(at) = body[from..].find(&format!("\nBlock {n} (")) else {
            break;
        };
        heads.push(from + at + 1);
        from += at + 1;
    }
    let mut out = Vec::new();
    for (k, &head) in heads.iter().enumerate() {
        let end = heads.get(k + 1).copied().unwrap_or(body.len());
        let section = &body[head..end];
        let Some(colon) = section.find("): ") else {
            continue;
        };
        let said = &section[colon + 3..];
        let decision =
            if let Some(rest) = said.strip_prefix("REJECTED by the human, not run. Reason: ") {
                let reason = rest.trim_end();
                ReportedDecision {
                    decision: DecisionKind::Rejected,
                    reason: (reason != NO_REASON).then(|| reason.to_string()),
                }
            } else if said.starts_with("skipped by the human") {
                ReportedDecision {
                    decision: DecisionKind::Skipped,
                    reason: None,
                }
            } else if said.starts_with("the human EDITED this block") {
                ReportedDecision {
                    decision: DecisionKind::Edited,
                    reason: None,
                }
            } else if said.starts_with("approved and run as proposed") {
                ReportedDecision {
                    decision: DecisionKind::Approved,
                    reason: None,
                }
            } else {
                continue;
            };
        out.push(decision);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::{BlockDecision, BlockResult};

    fn block(i: usize, code: &str) -> CodeBlock {
        CodeBlock {
            index: i,
            language: "python".into(),
            code: code.into(),
            filename: None,
        }
    }

    fn decided(decision: DecisionKind, code: Option<&str>, reason: Option<&str>) -> BlockDecision {
        BlockDecision {
            decision,
            code: code.map(str::to_string),
            reason: reason.map(str::to_string),
            allow_network: false,
            by_rule: false,
        }
    }

    fn ran(output: &str) -> Option<BlockResult> {
        Some(BlockResult {
            exit_code: 0,
            timed_out: false,
            truncated: false,
            oom: false,
            interrupted: false,
            not_run: false,
            workspace_limit_exceeded: false,
            changes: None,
            output: output.into(),
        })
    }

    #[test]
    fn a_report_reads_back_as_the_decisions_it_states() {
        let p = PendingApproval {
            id: 4,
            agent: "coder".into(),
            blocks: (0..5).map(|i| block(i, "print(1)")).collect(),
            decisions: vec![
                // Output that looks like a later block's header does not confuse the reader.
                Some(decided(DecisionKind::Approved, None, None)),
                Some(decided(DecisionKind::Edited, Some("print(2)"), None)),
                Some(decided(
                    DecisionKind::Rejected,
                    None,
                    Some("no network\nuse the stdlib"),
                )),
                Some(decided(DecisionKind::Rejected, None, Some("  "))),
                Some(decided(DecisionKind::Skipped, None, None)),
            ],
            results: vec![
                ran("Block 3 (python): approved and run as proposed."),
                ran("2"),
                None,
                None,
                None,
            ],
            running: Default::default(),
            partial: Default::default(),
        };
        let text = format!("[executor]: {}", report(&p, None, &HostPaths::default()));
        let read = read_report(&text).expect("a report");
        let kinds: Vec<DecisionKind> = read.iter().map(|d| d.decision).collect();
        assert_eq!(
            kinds,
            [
                DecisionKind::Approved,
                DecisionKind::Edited,
                DecisionKind::Rejected,
                DecisionKind::Rejected,
                DecisionKind::Skipped
            ]
        );
        assert_eq!(
            read[2].reason.as_deref(),
            Some("no network\nuse the stdlib")
        );
        assert_eq!(read[3].reason, None, "a blank reason is no reason");
        assert_eq!(read_report("[coder]: Results are in."), None);
    }
}
