//! Anthropic Messages API over SSE: named events (`message_start`, `content_block_delta`,
//! `message_delta`, `message_stop`, `ping`, `error`), the system prompt as the top-level `system`
//! field, and strictly alternating user/assistant turns.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use reqwest::header::{ACCEPT, HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::http::{
    Answer, Emit, StreamFailure, Transport, driven_stream, emit, is_transient_error_kind,
};
use super::retry::RetryPolicy;
use super::tokens::{count_request_tokens, count_tokens};
use super::turns::alternate_turns;
use super::{ChatChunk, ChatModel, ChatRequest, ProviderError, Role, TokenUsage};
use crate::config::{ProviderConfig, ProviderKind};

/// Anthropic's public endpoint, used when `base_url` is not set.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// `anthropic-version` header used when the config names none.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// `max_tokens` is required by the API; used when the request sets none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

#[derive(Debug, Clone)]
struct Inner {
    model_ref: String,
    model: String,
    url: String,
    version: String,
    transport: Transport,
}

/// A chat model served by the Anthropic Messages API.
#[derive(Debug, Clone)]
pub struct AnthropicModel {
    inner: Inner,
}

impl AnthropicModel {
    /// Builds the client for `model` of `[providers.<provider_name>]` (`kind = "anthropic"`);
    /// posts to `{base_url}/v1/messages` (a `base_url` ending in `/v1` is taken as the same), reads the key from its env var (default
    /// `ANTHROPIC_API_KEY`) now.
    pub fn from_config(
        provider_name: &str,
        cfg: &ProviderConfig,
        model: &str,
    ) -> Result<Self, ProviderError> {
        match cfg.kind {
            ProviderKind::Anthropic => {}
            ProviderKind::Openai | ProviderKind::Azure | ProviderKind::Scripted => {
                return Err(ProviderError::Config(format!(
                    "[providers.{provider_name}] is not an Anthropic provider"
                )));
            }
        }
        let base = cfg
            .base_url
            .as_deref()
            .unwrap_or(ANTHROPIC_BASE_URL)
            .trim_end_matches('/');
        // Both `https://api.anthropic.com` and `https://api.anthropic.com/v1` are written.
        let base = base.strip_suffix("/v1").unwrap_or(base);
        let url = format!("{base}/v1/messages");
        let parsed = reqwest::Url::parse(&url).map_err(|e| {
            ProviderError::Config(format!(
                "[providers.{provider_name}]: base_url is not a valid URL ({e})"
            ))
        })?;
        let transport =
            Transport::from_config(provider_name, cfg, Some("ANTHROPIC_API_KEY"), &parsed)?;
        Ok(Self {
            inner: Inner {
                model_ref: format!("{provider_name}/{model}"),
                model: model.to_string(),
                url,
                version: cfg
                    .anthropic_version
                    .clone()
                    .unwrap_or_else(|| ANTHROPIC_VERSION.into()),
                transport,
            },
        })
    }

    /// Replaces the retry policy (tests use short waits).
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.inner.transport.retry = policy;
        self
    }

    /// Replaces the idle timeout between streamed chunks.
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.inner.transport.idle_timeout = idle;
        self
    }

    /// The URL requests are posted to.
    pub fn endpoint(&self) -> &str {
        &self.inner.url
    }
}

impl Inner {
    fn body(&self, req: &ChatRequest) -> Value {
        let messages: Vec<Value> = alternate_turns(&req.messages)
            .into_iter()
            .map(|m| {
                let role = match m.role {
                    Role::User => "user",
                    Role::Assistant => "assistant",
                };
                json!({"role": role, "content": m.content})
            })
            .collect();
        let mut body = json!({
            "model": self.model,
            "max_tokens": req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            "messages": messages,
            "stream": true,
        });
        if !req.system.is_empty() {
            body["system"] = json!(req.system);
        }
        // The API documents temperature in [0, 1]; team files may use OpenAI's [0, 2].
        if let Some(t) = req.temperature.filter(|t| t.is_finite()) {
            body["temperature"] = json!(t.clamp(0.0, 1.0));
        }
        body
    }

    fn headers(&self) -> Result<HeaderMap, ProviderError> {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        h.insert(
            "anthropic-version",
            HeaderValue::from_str(&self.version).map_err(|_| {
                ProviderError::Config("anthropic_version is not a valid header value".into())
            })?,
        );
        if let Some(key) = &self.transport.key {
            h.insert("x-api-key", key.header("")?);
        }
        Ok(h)
    }

    async fn run(self: Arc<Self>, req: ChatRequest, mut tx: Emit) -> Result<(), ProviderError> {
        let t = &self.transport;
        let mut body = self.body(&req);
        let headers = self.headers()?;
        let mut attempt = 1;
        loop {
            let resp = t
                .send(
                    &mut body,
                    |b| t.client.post(&self.url).headers(headers.clone()).json(b),
                    |_, _| None,
                    &self.model,
                    &mut attempt,
                    &mut tx,
                )
                .await?;
            let resp = match t.answer(resp).await? {
                Answer::Stream(resp) => resp,
                // A gateway that does not stream: the body is the whole message.
                Answer::Whole(v) => return self.read_whole(&v, &req, &mut tx).await,
            };
            match self.read(resp, &req, &mut tx).await {
                Ok(()) => return Ok(()),
                Err(StreamFailure::Retry(reason)) => {
                    t.backoff(&mut attempt, reason, None, &mut tx).await?
                }
                Err(StreamFailure::Fatal(e)) => return Err(e),
            }
        }
    }

    /// Reads one streamed message, ending with its usage and `Done`.
    async fn read(
        &self,
        resp: reqwest::Response,
        req: &ChatRequest,
        tx: &mut Emit,
    ) -> Result<(), StreamFailure> {
        let t = &self.transport;
        let mut events = t.events(resp);
        let mut usage = UsageParts::default();
        let mut stop_reason: Option<String> = None;
        let mut output = String::new();
        loop {
            let Some(ev) = events.next().await? else {
                return Err(t.closed_early().into());
            };
            let unreadable = || t.bad_chunk(&format!("unreadable `{}` event", ev.event), &ev.data);
            // An event without an `event:` line is named `message`: its JSON `type` names it.
            let (name, parsed) = if ev.event == "message" {
                if ev.data.trim().is_empty() {
                    continue;
                }
                let v: Value = serde_json::from_str(&ev.data).map_err(|_| unreadable())?;
                let name = v
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                (name, Some(v))
            } else {
                (ev.event.clone(), None)
            };
            match name.as_str() {
                "ping" | "content_block_stop" => continue,
                "message_stop" => break,
                "message_start"
                | "content_block_start"
                | "content_block_delta"
                | "message_delta"
                | "error" => {}
                // Events added to the API later are skipped, as Anthropic's versioning asks.
                _ => continue,
            }
            let v = match parsed {
                Some(v) => v,
                None => serde_json::from_str(&ev.data).map_err(|_| unreadable())?,
            };
            match name.as_str() {
                "message_start" => {
                    if let Some(u) = v.pointer("/message/usage") {
                        usage.update(u);
                    }
                }
                "content_block_start" => {
                    if v.pointer("/content_block/type").and_then(Value::as_str) == Some("text")
                        && let Some(text) = v.pointer("/content_block/text").and_then(Value::as_str)
                        && !text.is_empty()
                    {
                        output.push_str(text);
                        emit(tx, ChatChunk::Delta(text.to_string())).await?;
                    }
                }
                "content_block_delta" => {
                    if v.pointer("/delta/type").and_then(Value::as_str) == Some("text_delta")
                        && let Some(text) = v.pointer("/delta/text").and_then(Value::as_str)
                        && !text.is_empty()
                    {
                        output.push_str(text);
                        emit(tx, ChatChunk::Delta(text.to_string())).await?;
                    }
                }
                "message_delta" => {
                    if let Some(r) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                        stop_reason = Some(r.to_string());
                    }
                    if let Some(u) = v.get("usage") {
                        usage.update(u);
                    }
                }
                _ => {
                    // "error"
                    let kind = v
                        .pointer("/error/type")
                        .and_then(Value::as_str)
                        .unwrap_or("error");
                    let msg = v
                        .pointer("/error/message")
                        .and_then(Value::as_str)
                        .unwrap_or(&ev.data);
                    if is_transient_error_kind(kind) && output.is_empty() {
                        return Err(StreamFailure::Retry(t.redact(&format!(
                            "the server reported an error before any text: {kind}: {msg}"
                        ))));
                    }
                    return Err(t
                        .bad_chunk(
                            "the server reported an error mid-stream",
                            &format!("{kind}: {msg}"),
                        )
                        .into());
                }
            }
        }
        finish_reply(req, &output, &usage, stop_reason, tx).await?;
        Ok(())
    }

    /// Reads a `message` object sent whole instead of streamed: its text blocks go out as one
    /// delta, then its usage and stop reason, as a stream would end.
    async fn read_whole(
        &self,
        v: &Value,
        req: &ChatRequest,
        tx: &mut Emit,
    ) -> Result<(), ProviderError> {
        let t = &self.transport;
        let (Some("message"), Some(content)) = (
            v.get("type").and_then(Value::as_str),
            v.get("content").and_then(Value::as_array),
        ) else {
            return Err(t.not_a_reply(v));
        };
        let output: String = content
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect();
        if !output.is_empty() {
            emit(tx, ChatChunk::Delta(output.clone())).await?;
        }
        let mut usage = UsageParts::default();
        if let Some(u) = v.get("usage") {
            usage.update(u);
        }
        let stop_reason = v
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(str::to_string);
        finish_reply(req, &output, &usage, stop_reason, tx).await
    }
}

/// Ends a reply: its usage (counted by proctor when the server reported none) and `Done`.
async fn finish_reply(
    req: &ChatRequest,
    output: &str,
    usage: &UsageParts,
    stop_reason: Option<String>,
    tx: &mut Emit,
) -> Result<(), ProviderError> {
    let (usage, estimated) = match usage.total() {
        Some(u) => (u, false),
        None => (
            TokenUsage {
                input_tokens: count_request_tokens(req),
                output_tokens: count_tokens(output),
                ..TokenUsage::default()
            },
            true,
        ),
    };
    emit(
        tx,
        ChatChunk::Usage {
            usage,
            estimated,
            served_model: None,
        },
    )
    .await?;
    emit(
        tx,
        ChatChunk::Done {
            finish_reason: stop_reason,
        },
    )
    .await
}

/// Anthropic reports usage in pieces: `message_start` has the input side, `message_delta` the
/// (cumulative) output and sometimes updated input counts. Later values replace earlier ones.
#[derive(Debug, Default)]
struct UsageParts {
    input: Option<u64>,
    output: Option<u64>,
    cache_read: Option<u64>,
    cache_creation: Option<u64>,
}

impl UsageParts {
    fn update(&mut self, u: &Value) {
        let get = |k: &str| u.get(k).and_then(Value::as_u64);
        self.input = get("input_tokens").or(self.input);
        self.output = get("output_tokens").or(self.output);
        self.cache_read = get("cache_read_input_tokens").or(self.cache_read);
        self.cache_creation = get("cache_creation_input_tokens").or(self.cache_creation);
    }

    /// Usage in proctor's terms (input includes cache reads and writes), `None` if the server
    /// reported nothing real (no counts, or all of them zero).
    fn total(&self) -> Option<TokenUsage> {
        let read = self.cache_read.unwrap_or(0);
        let creation = self.cache_creation.unwrap_or(0);
        if self.input.unwrap_or(0) + read + creation == 0 && self.output.unwrap_or(0) == 0 {
            return None;
        }
        Some(TokenUsage {
            input_tokens: self.input.unwrap_or(0) + read + creation,
            output_tokens: self.output.unwrap_or(0),
            cached_tokens: read,
            cache_creation_tokens: creation,
        })
    }
}

impl ChatModel for AnthropicModel {
    fn model_ref(&self) -> &str {
        &self.inner.model_ref
    }

    /// Streams a message. The model named at construction is used (`request.model` is ignored).
    fn stream(
        &self,
        request: ChatRequest,
        cancel: CancellationToken,
    ) -> BoxStream<'static, Result<ChatChunk, ProviderError>> {
        let inner = Arc::new(self.inner.clone());
        driven_stream(cancel, move |tx| inner.run(request, tx))
    }
}
