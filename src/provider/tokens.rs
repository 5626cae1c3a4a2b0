//! Token counting for servers that report no usage and for cost projections before a call.
//!
//! Uses OpenAI's o200k_base vocabulary (compiled in, no network); for other model families the
//! count is an estimate, which is why usage counted here is always marked `estimated`.

use super::{ChatMessage, ChatRequest};

/// Tokens a chat format adds around each message (role markers), roughly.
const PER_MESSAGE_OVERHEAD: u64 = 4;

/// Token count of a text with the o200k_base vocabulary. The first call loads the vocabulary
/// (a fraction of a second); call [`warm_up`] off the UI task to pay that early.
pub fn count_tokens(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    tiktoken_rs::o200k_base_singleton()
        .encode_ordinary(text)
        .len() as u64
}

/// Loads the vocabulary now (blocking); later counts are fast.
pub fn warm_up() {
    let _ = count_tokens("warm up");
}

/// Estimated prompt tokens of a request: system prompt and every message, plus framing.
pub fn count_request_tokens(request: &ChatRequest) -> u64 {
    let system = if request.system.is_empty() {
        0
    } else {
        count_tokens(&request.system) + PER_MESSAGE_OVERHEAD
    };
    system + count_messages_tokens(&request.messages) + 3
}

/// Estimated tokens of a list of messages, framing included.
pub fn count_messages_tokens(messages: &[ChatMessage]) -> u64 {
    messages
        .iter()
        .map(|m| count_tokens(&m.content) + PER_MESSAGE_OVERHEAD)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_real_tokens() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens("hello"), 1);
        let n = count_tokens("The quick brown fox jumps over the lazy dog.");
        assert!((9..=11).contains(&n), "{n}");
    }
}
