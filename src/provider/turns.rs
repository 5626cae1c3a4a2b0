//! Shapes the history the engine builds into the turns chat APIs accept: many servers (Anthropic,
//! vLLM chat templates) reject two consecutive messages of one role or empty messages.

use super::{ChatMessage, Role};

/// The history with empty messages dropped and consecutive messages of one role merged into one,
/// separated by a blank line. Order is kept.
pub fn merge_consecutive(messages: &[ChatMessage]) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len());
    for m in messages {
        if m.content.trim().is_empty() {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.role == m.role => {
                last.content.push_str("\n\n");
                last.content.push_str(&m.content);
            }
            Some(_) | None => out.push(m.clone()),
        }
    }
    out
}

/// The history as Anthropic accepts it: [`merge_consecutive`], and starting with a user turn
/// (a short placeholder is put first when the history starts with the assistant or is empty).
pub fn alternate_turns(messages: &[ChatMessage]) -> Vec<ChatMessage> {
    let mut out = merge_consecutive(messages);
    match out.first().map(|m| m.role) {
        Some(Role::User) => {}
        Some(Role::Assistant) | None => out.insert(
            0,
            ChatMessage {
                role: Role::User,
                content: "(The conversation starts.)".into(),
            },
        ),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: Role, c: &str) -> ChatMessage {
        ChatMessage {
            role,
            content: c.into(),
        }
    }

    #[test]
    fn turns_alternate_and_start_with_user() {
        let out = alternate_turns(&[
            msg(Role::Assistant, "hi"),
            msg(Role::User, "a"),
            msg(Role::User, "b"),
            msg(Role::Assistant, "c"),
        ]);
        let roles: Vec<Role> = out.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [Role::User, Role::Assistant, Role::User, Role::Assistant]
        );
        assert_eq!(out[2].content, "a\n\nb");
    }

    #[test]
    fn merging_keeps_a_leading_assistant_and_drops_empty_messages() {
        let out = merge_consecutive(&[
            msg(Role::Assistant, "hi"),
            msg(Role::User, " "),
            msg(Role::Assistant, "again"),
            msg(Role::User, "q"),
        ]);
        assert_eq!(
            out,
            vec![msg(Role::Assistant, "hi\n\nagain"), msg(Role::User, "q")]
        );
    }
}
