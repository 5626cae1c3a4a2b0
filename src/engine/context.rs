//! What an agent sees: its system prompt, the shared history from its point of view (its own
//! messages as assistant turns, everyone else's labelled by name, private notes only when they are
//! addressed to it), trimmed to its `max_context_tokens`.

use crate::config::{AgentConfig, TeamConfig, split_model_ref};
use crate::engine::cost::estimate_tokens;
use crate::engine::state::SessionState;
use crate::protocol::HUMAN;
use crate::provider::{ChatMessage, ChatRequest, Role};

/// A built request and how many history messages were left out to fit the limit.
#[derive(Debug, Clone)]
pub struct BuiltRequest {
    /// The request.
    pub request: ChatRequest,
    /// Messages dropped by `max_context_tokens`.
    pub dropped: usize,
}

/// Output tokens assumed for a call whose agent sets no `max_tokens` (bounds cost projections;
/// Anthropic, which requires a limit, gets this one).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

fn system_prompt(team: &TeamConfig, agent: &AgentConfig) -> String {
    let mut s = agent.system.clone();
    let others: Vec<String> = team
        .agents
        .iter()
        .filter(|a| a.name != agent.name)
        .map(|a| {
            if a.description.is_empty() {
                a.name.clone()
            } else {
                format!("{} ({})", a.name, a.description)
            }
        })
        .collect();
    if !s.is_empty() {
        s.push_str("\n\n");
    }
    if others.is_empty() {
        s.push_str(&format!(
            "You are {}, working with a human supervisor.",
            agent.name
        ));
    } else {
        s.push_str(&format!(
            "You are {} in a group chat with {}, supervised by a human.",
            agent.name,
            others.join(", ")
        ));
    }
    if agent.can_execute {
        s.push_str(
            " Code you put in fenced blocks (```python or ```bash) runs in a sandbox only after the human \
             approves it; the executor reports back what ran and its output.",
        );
    }
    s
}

/// Builds `agent`'s next request from the session state.
pub fn build_request(
    team: &TeamConfig,
    agent: &AgentConfig,
    state: &SessionState,
    model: &str,
) -> BuiltRequest {
    let mut messages: Vec<ChatMessage> = Vec::new();
    for h in &state.history {
        if let Some(to) = &h.to
            && to != &agent.name
        {
            continue;
        }
        let msg = if h.agent == agent.name {
            ChatMessage {
                role: Role::Assistant,
                content: h.content.clone(),
            }
        } else {
            let label = match (&h.to, h.agent.as_str()) {
                (Some(_), HUMAN) => "human, privately to you".to_string(),
                (Some(_), other) => format!("{other}, privately to you"),
                (None, other) => other.to_string(),
            };
            ChatMessage {
                role: Role::User,
                content: format!("[{label}]: {}", h.content),
            }
        };
        messages.push(msg);
    }
    if messages.last().is_none_or(|m| m.role == Role::Assistant) {
        messages.push(ChatMessage {
            role: Role::User,
            content: "[proctor]: It is your turn to speak.".into(),
        });
    }
    let system = system_prompt(team, agent);
    let mut dropped = 0;
    if let Some(limit) = agent.max_context_tokens {
        let cost = |m: &ChatMessage| estimate_tokens(&m.content) + 4;
        let mut total: u64 = estimate_tokens(&system) + messages.iter().map(cost).sum::<u64>();
        // Keep the task (first message) and the newest message; drop the oldest in between.
        while total > limit && messages.len() > 2 {
            let removed = messages.remove(1);
            total -= cost(&removed);
            dropped += 1;
        }
    }
    BuiltRequest {
        request: ChatRequest {
            model: split_model_ref(model)
                .map(|(_, m)| m)
                .unwrap_or(model)
                .to_string(),
            system,
            messages,
            // Only when the team sets it: local servers reject a limit beyond their context.
            max_tokens: agent.max_tokens,
            temperature: agent.temperature,
            agent: agent.name.clone(),
        },
        dropped,
    }
}
