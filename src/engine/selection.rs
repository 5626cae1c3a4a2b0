//! Who speaks next: candidates from the allowed-transition graph and mutes, then round robin,
//! random, an LLM selector (auto) or the human (manual).

use crate::config::TeamConfig;
use crate::engine::state::SessionState;
use crate::provider::{ChatMessage, ChatRequest, Role};

/// The agents allowed to speak next, in roster order, and a note when the graph had to be ignored.
pub fn candidates(team: &TeamConfig, state: &SessionState) -> (Vec<String>, Option<String>) {
    let roster: Vec<String> = team.agents.iter().map(|a| a.name.clone()).collect();
    let unmuted: Vec<String> = roster
        .iter()
        .filter(|a| !state.muted.contains(*a))
        .cloned()
        .collect();
    let mut allowed: Vec<String> =
        match (&team.orchestration.allowed_transitions, &state.last_speaker) {
            (Some(graph), Some(last)) => match graph.get(last) {
                Some(next) => unmuted
                    .iter()
                    .filter(|a| next.contains(a))
                    .cloned()
                    .collect(),
                None => unmuted.clone(),
            },
            _ => unmuted.clone(),
        };
    if !team.orchestration.allow_repeat_speaker
        && allowed.len() > 1
        && let Some(last) = &state.last_speaker
    {
        allowed.retain(|a| a != last);
    }
    if allowed.is_empty() && !unmuted.is_empty() {
        return (
            unmuted,
            Some(
                "no allowed transition leads to an unmuted agent; choosing from all unmuted agents"
                    .into(),
            ),
        );
    }
    (allowed, None)
}

/// The next agent after the last speaker in roster order, among the candidates.
pub fn round_robin(team: &TeamConfig, last: Option<&str>, candidates: &[String]) -> Option<String> {
    let roster: Vec<&str> = team.agents.iter().map(|a| a.name.as_str()).collect();
    let start = last
        .and_then(|l| roster.iter().position(|a| *a == l))
        .map(|i| i + 1)
        .unwrap_or(0);
    (0..roster.len())
        .map(|k| roster[(start + k) % roster.len()])
        .find(|a| candidates.iter().any(|c| c == a))
        .map(str::to_string)
}

/// The selector's request: roster with descriptions, recent history, and the instruction to answer
/// with one name. `strict` is the retry after an unparseable answer.
pub fn selector_request(
    team: &TeamConfig,
    state: &SessionState,
    candidates: &[String],
    model: &str,
    strict: bool,
) -> ChatRequest {
    let mut roster = String::new();
    for a in team.agents.iter().filter(|a| candidates.contains(&a.name)) {
        roster.push_str(&format!("- {}: {}\n", a.name, a.description));
    }
    let mut convo = format!("task: {}\n", state.task);
    let skip = state.history.len().saturating_sub(12);
    for h in state.history.iter().skip(skip).filter(|h| h.to.is_none()) {
        let text: String = h.content.chars().take(1500).collect();
        convo.push_str(&format!("\n[{}]: {}\n", h.agent, text));
    }
    let system = format!(
        "You choose who speaks next in a group chat of AI agents.\nThe agents:\n{roster}\nRead the \
         conversation, then answer with the name of the one agent who should speak next. Answer with \
         the name only."
    );
    let ask = if strict {
        format!(
            "{convo}\nYour last answer named no agent. Reply with exactly one of: {}. No other words.",
            candidates.join(", ")
        )
    } else {
        format!(
            "{convo}\nWho speaks next? Choose one of: {}.",
            candidates.join(", ")
        )
    };
    ChatRequest {
        model: model.to_string(),
        system,
        messages: vec![ChatMessage {
            role: Role::User,
            content: ask,
        }],
        // No temperature or tight limit: reasoning models reject the one and need room past the other.
        max_tokens: None,
        temperature: None,
        agent: "selector".into(),
    }
}

/// The one candidate the selector's answer names, if exactly one is named.
pub fn parse_selector_answer(answer: &str, candidates: &[String]) -> Option<String> {
    let trimmed = answer
        .trim()
        .trim_matches(|c: char| !c.is_alphanumeric() && c != '_' && c != '-');
    if let Some(exact) = candidates.iter().find(|c| c.eq_ignore_ascii_case(trimmed)) {
        return Some(exact.clone());
    }
    let words: Vec<String> = answer
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let named: Vec<&String> = candidates
        .iter()
        .filter(|c| words.contains(&c.to_lowercase()))
        .collect();
    match named.as_slice() {
        [one] => Some((*one).clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_answers() {
        let c = vec!["planner".to_string(), "coder".to_string()];
        assert_eq!(
            parse_selector_answer(" Coder.", &c).as_deref(),
            Some("coder")
        );
        assert_eq!(
            parse_selector_answer("I think the coder should go", &c).as_deref(),
            Some("coder")
        );
        assert_eq!(parse_selector_answer("planner or coder", &c), None);
        assert_eq!(parse_selector_answer("nobody", &c), None);
    }
}
