//! A deterministic chat model that replays scripted replies as streamed deltas with token usage.
//! It powers `proctor demo` (no key, no network) and the engine tests, which also read back every
//! request it received. A reply can branch on the human's previous decision (approved, edited,
//! rejected, skipped), which it reads from the executor's last report in the conversation, as a
//! real model would. The script format is documented in docs/scripted.md.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::engine::approval::read_report;
use crate::engine::cost::estimate_tokens;
use crate::protocol::DecisionKind;
use crate::provider::{ChatChunk, ChatMessage, ChatModel, ChatRequest, ProviderError, TokenUsage};

/// One scripted reply.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ScriptedReply {
    /// Only a request for this agent takes this reply (`selector` for the speaker selector).
    /// Without it, the reply goes to whichever request comes next.
    #[serde(default)]
    pub agent: Option<String>,
    /// The reply text.
    #[serde(default)]
    pub text: String,
    /// Fail the call with this message instead of replying.
    #[serde(default)]
    pub error: Option<String>,
    /// Pause between deltas, milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// Reported input tokens (default: estimated from the request).
    #[serde(default)]
    pub input_tokens: Option<u64>,
    /// Reported output tokens (default: estimated from the text).
    #[serde(default)]
    pub output_tokens: Option<u64>,
    /// Reported cached tokens.
    #[serde(default)]
    pub cached_tokens: u64,
    /// Other texts for this reply, by the human's previous decision (`[reply.after.rejected]`…).
    #[serde(default)]
    pub after: AfterDecision,
}

/// A reply's alternatives by the human's previous decision: the decision on the blocks of the
/// last approval the executor reported in the conversation. With several blocks, the strongest
/// decision counts: rejected, then edited, then skipped, then approved. A decision without an
/// alternative here, and a conversation without a decision yet, get the reply's own `text`.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AfterDecision {
    /// After the human approved (every block of) the last approval.
    #[serde(default)]
    pub approved: Option<Branch>,
    /// After the human edited a block before it ran.
    #[serde(default)]
    pub edited: Option<Branch>,
    /// After the human rejected a block; `{reason}` in the text becomes the human's reason.
    #[serde(default)]
    pub rejected: Option<Branch>,
    /// After the human skipped a block.
    #[serde(default)]
    pub skipped: Option<Branch>,
}

/// The text (and pace) a reply takes after one kind of decision.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    /// The reply text. `{reason}` becomes the reason of the previous rejection
    /// (`(no reason given)` when there was none).
    pub text: String,
    /// Pause between deltas, milliseconds (default: the reply's).
    #[serde(default)]
    pub delay_ms: Option<u64>,
}

/// What a rejection without a reason reads as in a branch's `{reason}`.
const NO_REASON: &str = "(no reason given)";

/// The human's previous decision as the conversation shows it: the strongest decision of the
/// last executor report among `messages`, and the first rejection's reason.
pub fn previous_decision(messages: &[ChatMessage]) -> Option<(DecisionKind, Option<String>)> {
    let decisions = messages
        .iter()
        .rev()
        .find_map(|m| read_report(&m.content))?;
    let rank = |d: DecisionKind| match d {
        DecisionKind::Rejected => 3,
        DecisionKind::Edited => 2,
        DecisionKind::Skipped => 1,
        DecisionKind::Approved => 0,
    };
    let strongest = decisions
        .iter()
        .map(|d| d.decision)
        .max_by_key(|d| rank(*d))?;
    let reason = decisions
        .iter()
        .find(|d| d.decision == DecisionKind::Rejected)
        .and_then(|d| d.reason.clone());
    Some((strongest, reason))
}

impl ScriptedReply {
    /// The text and delay this reply takes after `previous` (see [`AfterDecision`]).
    pub fn resolve(&self, previous: Option<&(DecisionKind, Option<String>)>) -> (String, u64) {
        let branch = previous.and_then(|(kind, _)| match kind {
            DecisionKind::Approved => self.after.approved.as_ref(),
            DecisionKind::Edited => self.after.edited.as_ref(),
            DecisionKind::Rejected => self.after.rejected.as_ref(),
            DecisionKind::Skipped => self.after.skipped.as_ref(),
        });
        match branch {
            None => (self.text.clone(), self.delay_ms),
            Some(b) => {
                let reason = previous
                    .and_then(|(_, r)| r.as_deref())
                    .unwrap_or(NO_REASON);
                (
                    b.text.replace("{reason}", reason),
                    b.delay_ms.unwrap_or(self.delay_ms),
                )
            }
        }
    }
}

impl ScriptedReply {
    /// A reply for a given agent.
    pub fn for_agent(agent: &str, text: &str) -> Self {
        Self {
            agent: Some(agent.into()),
            text: text.into(),
            ..Default::default()
        }
    }
    /// A reply for whoever asks next.
    pub fn next(text: &str) -> Self {
        Self {
            text: text.into(),
            ..Default::default()
        }
    }
}

/// A script file: `[[reply]]` tables.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// The task this script was written for (the demo's task).
    #[serde(default)]
    pub task: Option<String>,
    /// Replies in order.
    #[serde(default)]
    pub reply: Vec<ScriptedReply>,
}

/// The shipped demo script (sessions/demo/script.toml).
pub const DEMO_SCRIPT: &str = include_str!("../../sessions/demo/script.toml");

impl Script {
    /// Parses a TOML script.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| format!("invalid script: {e}"))
    }
}

#[derive(Debug, Default)]
struct Queues {
    by_agent: BTreeMap<String, VecDeque<ScriptedReply>>,
    any: VecDeque<ScriptedReply>,
}

/// The scripted model. Clones share the same script and request log.
#[derive(Debug, Clone)]
pub struct ScriptedModel {
    model_ref: String,
    queues: Arc<Mutex<Queues>>,
    requests: Arc<Mutex<Vec<ChatRequest>>>,
    chunk_chars: usize,
}

impl ScriptedModel {
    /// A model named `model_ref` replaying `replies`.
    pub fn new(model_ref: &str, replies: Vec<ScriptedReply>) -> Self {
        let mut q = Queues::default();
        for r in replies {
            match &r.agent {
                Some(a) => q.by_agent.entry(a.clone()).or_default().push_back(r),
                None => q.any.push_back(r),
            }
        }
        Self {
            model_ref: model_ref.into(),
            queues: Arc::new(Mutex::new(q)),
            requests: Arc::new(Mutex::new(Vec::new())),
            chunk_chars: 12,
        }
    }

    /// The same script and request log under another model ref (several refs, one script).
    pub fn renamed(&self, model_ref: &str) -> Self {
        Self {
            model_ref: model_ref.into(),
            ..self.clone()
        }
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<ChatRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Adds replies at the end of the script.
    pub fn push(&self, reply: ScriptedReply) {
        if let Ok(mut q) = self.queues.lock() {
            match &reply.agent {
                Some(a) => q.by_agent.entry(a.clone()).or_default().push_back(reply),
                None => q.any.push_back(reply),
            }
        }
    }

    fn take(&self, agent: &str) -> Option<ScriptedReply> {
        let mut q = self.queues.lock().ok()?;
        if let Some(r) = q.by_agent.get_mut(agent).and_then(VecDeque::pop_front) {
            return Some(r);
        }
        q.any.pop_front()
    }
}

fn chunks(text: &str, size: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for ch in text.chars() {
        cur.push(ch);
        if cur.chars().count() >= size && (ch.is_whitespace() || cur.len() > size * 2) {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

impl ChatModel for ScriptedModel {
    fn model_ref(&self) -> &str {
        &self.model_ref
    }

    fn stream(
        &self,
        request: ChatRequest,
        cancel: CancellationToken,
    ) -> BoxStream<'static, Result<ChatChunk, ProviderError>> {
        if let Ok(mut r) = self.requests.lock() {
            r.push(request.clone());
        }
        let Some(reply) = self.take(&request.agent) else {
            let msg = format!(
                "scripted model {}: the script has no reply left for {}",
                self.model_ref, request.agent
            );
            return futures::stream::once(async move { Err(ProviderError::Config(msg)) }).boxed();
        };
        if let Some(err) = reply.error.clone() {
            return futures::stream::once(async move {
                Err(ProviderError::Stream {
                    provider: "scripted".into(),
                    message: err,
                })
            })
            .boxed();
        }
        let (text, delay_ms) = reply.resolve(previous_decision(&request.messages).as_ref());
        let input = reply.input_tokens.unwrap_or_else(|| {
            estimate_tokens(&request.system)
                + request
                    .messages
                    .iter()
                    .map(|m| estimate_tokens(&m.content) + 4)
                    .sum::<u64>()
        });
        let usage = TokenUsage {
            input_tokens: input,
            output_tokens: reply
                .output_tokens
                .unwrap_or_else(|| estimate_tokens(&text)),
            cached_tokens: reply.cached_tokens,
            cache_creation_tokens: 0,
        };
        let mut items: VecDeque<ChatChunk> = chunks(&text, self.chunk_chars)
            .into_iter()
            .map(ChatChunk::Delta)
            .collect();
        items.push_back(ChatChunk::Usage {
            usage,
            estimated: false,
            served_model: None,
        });
        items.push_back(ChatChunk::Done {
            finish_reason: Some("stop".into()),
        });
        let delay = Duration::from_millis(delay_ms);
        futures::stream::unfold((items, cancel, false), move |(mut items, cancel, done)| async move {
            if done {
                return None;
            }
            if !delay.is_zero() {
                tokio::select! {
                    _ = cancel.cancelled() => return Some((Err(ProviderError::Cancelled), (items, cancel, true))),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            if cancel.is_cancelled() {
                return Some((Err(ProviderError::Cancelled), (items, cancel, true)));
            }
            let item = items.pop_front()?;
            Some((Ok(item), (items, cancel, false)))
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Role;

    const BRANCHING: &str = r#"
[[reply]]
agent = "coder"
delay_ms = 5
text = "default"
[reply.after.rejected]
text = "you said: {reason}"
delay_ms = 0
[reply.after.edited]
text = "thanks for the edit"
"#;

    fn request_after(report: Option<&str>) -> ChatRequest {
        let mut messages = vec![ChatMessage {
            role: Role::User,
            content: "[human]: the task".into(),
        }];
        if let Some(r) = report {
            messages.push(ChatMessage {
                role: Role::User,
                content: format!("[executor]: {r}"),
            });
        }
        ChatRequest {
            model: "m".into(),
            system: String::new(),
            messages,
            max_tokens: None,
            temperature: None,
            agent: "coder".into(),
        }
    }

    async fn reply_text(script: &str, req: ChatRequest) -> String {
        let replies = Script::parse(script).unwrap().reply;
        let model = ScriptedModel::new("scripted/t", replies);
        let mut stream = model.stream(req, CancellationToken::new());
        let mut text = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            if let ChatChunk::Delta(d) = chunk {
                text.push_str(&d);
            }
        }
        text
    }

    const REJECTED: &str = "Results of the code blocks you proposed (approval #3):\n\nBlock 1 (python): approved and run as proposed.\nexit code 0; no output.\n\nBlock 2 (python): REJECTED by the human, not run. Reason: no network, please\n";
    const EDITED: &str = "Results of the code blocks you proposed (approval #3):\n\nBlock 1 (python): the human EDITED this block before it ran. The code that ran:\n```python\nprint(2)\n```\nexit code 0; output:\n```\n2\n```\n";
    const SKIPPED: &str = "Results of the code blocks you proposed (approval #3):\n\nBlock 1 (python): skipped by the human, not run.\n";

    #[tokio::test]
    async fn a_reply_branches_on_the_previous_decision_and_quotes_the_reason() {
        assert_eq!(
            reply_text(BRANCHING, request_after(Some(REJECTED))).await,
            "you said: no network, please"
        );
        assert_eq!(
            reply_text(BRANCHING, request_after(Some(EDITED))).await,
            "thanks for the edit"
        );
        // No alternative for skipped, and none before any decision: the reply's own text.
        assert_eq!(
            reply_text(BRANCHING, request_after(Some(SKIPPED))).await,
            "default"
        );
        assert_eq!(reply_text(BRANCHING, request_after(None)).await, "default");
    }

    #[test]
    fn a_rejection_without_reason_and_unknown_branches() {
        let reply = &Script::parse(BRANCHING).unwrap().reply[0];
        let (text, delay) = reply.resolve(Some(&(DecisionKind::Rejected, None)));
        assert_eq!((text.as_str(), delay), ("you said: (no reason given)", 0));
        let (_, delay) = reply.resolve(Some(&(DecisionKind::Edited, None)));
        assert_eq!(delay, 5, "a branch without delay_ms keeps the reply's");
        let err = Script::parse("[[reply]]\ntext = \"x\"\n[reply.after.rejcted]\ntext = \"y\"\n")
            .err()
            .unwrap_or_default();
        assert!(err.contains("rejcted"), "{err}");
    }

    #[test]
    fn the_last_report_counts_and_rejection_outranks_approval() {
        let msgs = request_after(Some(REJECTED)).messages;
        assert_eq!(
            previous_decision(&msgs),
            Some((DecisionKind::Rejected, Some("no network, please".into())))
        );
        let mut later = msgs.clone();
        later.extend(request_after(Some(SKIPPED)).messages);
        assert_eq!(
            previous_decision(&later),
            Some((DecisionKind::Skipped, None))
        );
    }
}
