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
        let result = p.results.get(i).and_then(|r| r.as_ref());
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
            }
            None => {
                let why = not_reached.unwrap_or("it was not reached");
                out.push_str(&format!("Why it did not run: {why}\n"));
            }
        }
    }
    host.hide(&out)
}
