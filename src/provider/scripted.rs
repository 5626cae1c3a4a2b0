//! A deterministic chat model that replays scripted replies as streamed deltas with token usage.
//! It powers `proctor demo` (no key, no network) and the engine tests, which also read back every
//! request it received.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::engine::cost::estimate_tokens;
use crate::provider::{ChatChunk, ChatModel, ChatRequest, ProviderError, TokenUsage};

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
                .unwrap_or_else(|| estimate_tokens(&reply.text)),
            cached_tokens: reply.cached_tokens,
            cache_creation_tokens: 0,
        };
        let mut items: VecDeque<ChatChunk> = chunks(&reply.text, self.chunk_chars)
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
        let delay = Duration::from_millis(reply.delay_ms);
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
