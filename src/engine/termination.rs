//! When a session ends (composable conditions) and when it looks stuck (loop detection, which pauses
//! and asks the human rather than stopping silently).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::config::TeamConfig;
use crate::engine::state::SessionState;

/// A condition that ends the session. Combine with `Any` / `All`.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The last agent message mentions this text.
    TextMention(String),
    /// This many agent messages.
    MaxRounds(u32),
    /// This many agent messages in a row without the human.
    MaxConsecutiveAutoReplies(u32),
    /// The session ran this long (in this process).
    Timeout(Duration),
    /// Ends when any inner condition does.
    Any(Vec<Condition>),
    /// Ends when every inner condition does.
    All(Vec<Condition>),
}

impl Condition {
    /// The team's conditions, any of which ends the session. `max_consecutive_auto_replies` is
    /// left out: the orchestrator pauses on it (or ends the session in mode `auto`, as AutoGen's
    /// NEVER mode does).
    pub fn from_team(team: &TeamConfig) -> Condition {
        let mut any = Vec::new();
        if let Some(text) = team.termination.text.as_ref().filter(|t| !t.is_empty()) {
            any.push(Condition::TextMention(text.clone()));
        }
        any.push(Condition::MaxRounds(team.orchestration.max_rounds));
        if team.termination.timeout_s > 0 {
            any.push(Condition::Timeout(Duration::from_secs(
                team.termination.timeout_s,
            )));
        }
        Condition::Any(any)
    }

    /// The reason to stop, if this condition holds.
    pub fn check(&self, state: &SessionState, elapsed: Duration) -> Option<String> {
        match self {
            Condition::TextMention(text) => {
                let last = state
                    .history
                    .iter()
                    .rev()
                    .find(|h| state.agent_names().contains(&h.agent))?;
                last.content
                    .contains(text.as_str())
                    .then(|| format!("{} said {text}", last.agent))
            }
            Condition::MaxRounds(n) => {
                (state.rounds >= *n).then(|| format!("max_rounds reached ({n} agent turns)"))
            }
            Condition::MaxConsecutiveAutoReplies(n) => (state.consecutive_auto >= *n).then(|| {
                format!("max_consecutive_auto_replies reached (an agent replied {n} times in a row without the human)")
            }),
            Condition::Timeout(d) => {
                (elapsed >= *d).then(|| format!("session timeout reached ({} s)", d.as_secs()))
            }
            Condition::Any(cs) => cs.iter().find_map(|c| c.check(state, elapsed)),
            Condition::All(cs) => {
                let reasons: Option<Vec<String>> =
                    cs.iter().map(|c| c.check(state, elapsed)).collect();
                reasons.filter(|r| !r.is_empty()).map(|r| r.join(" and "))
            }
        }
    }
}

/// How many repeats make a loop.
pub const LOOP_REPEATS: u32 = 3;
/// Agent messages loop detection compares (two agents, twice each).
pub const LOOP_MESSAGES: usize = 4;

/// Why the session looks stuck, if it does.
pub fn detect_loop(state: &SessionState) -> Option<String> {
    if let Some((_, n)) = state
        .loop_code_counts
        .iter()
        .find(|(_, n)| **n >= LOOP_REPEATS)
    {
        let who = state
            .pending
            .as_ref()
            .map(|p| p.agent.as_str())
            .or(state.last_speaker.as_deref());
        return Some(format!(
            "loop detected: {} proposed the same code {n} times",
            who.unwrap_or("an agent")
        ));
    }
    let errs = &state.loop_errors;
    if errs.len() >= LOOP_REPEATS as usize {
        let tail = &errs[errs.len() - LOOP_REPEATS as usize..];
        if tail.iter().all(|e| e == &tail[0]) {
            return Some(format!(
                "loop detected: the same error {LOOP_REPEATS} times in a row: {}",
                truncate(&tail[0], 120)
            ));
        }
    }
    let msgs = state.loop_messages();
    if msgs.len() >= LOOP_MESSAGES {
        let n = msgs.len();
        let (a1, a2, b1, b2) = (&msgs[n - 4], &msgs[n - 2], &msgs[n - 3], &msgs[n - 1]);
        if a1.0 == a2.0 && b1.0 == b2.0 && similar(a1.1, a2.1) && similar(b1.1, b2.1) {
            let who = if a1.0 == b1.0 {
                a1.0.to_string()
            } else {
                format!("{} and {}", a1.0, b1.0)
            };
            return Some(format!(
                "loop detected: {who} keep repeating near-identical messages"
            ));
        }
    }
    None
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n).collect::<String>() + "…"
    }
}

/// Near-identical: word-set Jaccard similarity of at least 0.9 (or equal after normalising).
pub fn similar(a: &str, b: &str) -> bool {
    let words = |s: &str| -> BTreeSet<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let (wa, wb) = (words(a), words(b));
    if wa.is_empty() && wb.is_empty() {
        return a.trim() == b.trim();
    }
    let inter = wa.intersection(&wb).count() as f64;
    let union = wa.union(&wb).count() as f64;
    inter / union >= 0.9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_ignores_case_and_punctuation() {
        assert!(similar("Please fix the bug.", "please fix the bug"));
        assert!(!similar("Please fix the bug.", "The tests pass now"));
    }
}
