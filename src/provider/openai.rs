//! OpenAI Chat Completions over SSE: OpenAI itself, Azure OpenAI deployments, and every server
//! with an OpenAI-compatible `/v1` (Ollama, vLLM, LM Studio, llama.cpp, ...).

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::http::{
    Answer, Emit, StreamFailure, Transport, driven_stream, emit, is_transient_error_kind,
};
use super::retry::RetryPolicy;
use super::tokens::{count_request_tokens, count_tokens};
use super::turns::merge_consecutive;
use super::{ChatChunk, ChatModel, ChatRequest, ProviderError, Role, TokenUsage};
use crate::config::{ProviderConfig, ProviderKind};

/// OpenAI's public endpoint, used when `base_url` is not set.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// Azure `api-version` used when the config names none (GA, supports `stream_options`).
pub const AZURE_API_VERSION: &str = "2024-10-21";

/// Which flavour of the Chat Completions API.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Flavor {
    /// `Authorization: Bearer`, model in the body.
    OpenAi,
    /// `api-key` header, deployment in the URL.
    Azure,
}

#[derive(Debug, Clone)]
struct Inner {
    model_ref: String,
    model: String,
    url: String,
    flavor: Flavor,
    /// OpenAI's own API wants `max_completion_tokens`; compatible servers know `max_tokens`.
    max_completion_tokens: bool,
    transport: Transport,
}

/// A chat model served by a Chat Completions endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiModel {
    inner: Inner,
}

impl OpenAiModel {
    /// Builds the client for `model` of `[providers.<provider_name>]` (`kind = "openai"` or
    /// `"azure"`); reads the API key from its env var now.
    ///
    /// OpenAI: posts to `{base_url}/chat/completions`; the key env defaults to `OPENAI_API_KEY`
    /// for the public endpoint and to none for other servers. Azure: `base_url` is the resource
    /// endpoint and `model` the deployment; posts to
    /// `{base_url}/openai/deployments/{model}/chat/completions?api-version=...` with an `api-key`
    /// header (key env defaults to `AZURE_OPENAI_API_KEY`).
    pub fn from_config(
        provider_name: &str,
        cfg: &ProviderConfig,
        model: &str,
    ) -> Result<Self, ProviderError> {
        let model_ref = format!("{provider_name}/{model}");
        let (flavor, url, default_env, max_completion_tokens) = match cfg.kind {
            ProviderKind::Openai => {
                let base = cfg
                    .base_url
                    .as_deref()
                    .unwrap_or(OPENAI_BASE_URL)
                    .trim_end_matches('/');
                let official = base.contains("api.openai.com");
                let env = if cfg.base_url.is_none() || official {
                    Some("OPENAI_API_KEY")
                } else {
                    None
                };
                (
                    Flavor::OpenAi,
                    format!("{base}/chat/completions"),
                    env,
                    official,
                )
            }
            ProviderKind::Azure => {
                let Some(base) = cfg.base_url.as_deref() else {
                    return Err(ProviderError::Config(format!(
                        "[providers.{provider_name}]: kind = \"azure\" needs base_url = \"https://<resource>.openai.azure.com\""
                    )));
                };
                let base = base.trim_end_matches('/');
                let version = cfg.api_version.as_deref().unwrap_or(AZURE_API_VERSION);
                let url = format!(
                    "{base}/openai/deployments/{model}/chat/completions?api-version={version}"
                );
                (Flavor::Azure, url, Some("AZURE_OPENAI_API_KEY"), true)
            }
            ProviderKind::Anthropic | ProviderKind::Scripted => {
                return Err(ProviderError::Config(format!(
                    "[providers.{provider_name}] is not an OpenAI-compatible provider"
                )));
            }
        };
        let parsed = reqwest::Url::parse(&url).map_err(|e| {
            ProviderError::Config(format!(
                "[providers.{provider_name}]: base_url is not a valid URL ({e})"
            ))
        })?;
        let transport = Transport::from_config(provider_name, cfg, default_env, &parsed)?;
        Ok(Self {
            inner: Inner {
                model_ref,
                model: model.to_string(),
                url,
                flavor,
                max_completion_tokens,
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
        let mut messages = Vec::with_capacity(req.messages.len() + 1);
        if !req.system.is_empty() {
            messages.push(json!({"role": "system", "content": req.system}));
        }
        // vLLM chat templates (and others) refuse two turns of one role in a row.
        for m in &merge_consecutive(&req.messages) {
            let role = match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            messages.push(json!({"role": role, "content": m.content}));
        }
        let mut body = json!({
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if self.flavor == Flavor::OpenAi {
            body["model"] = json!(self.model);
        }
        if let Some(max) = req.max_tokens {
            let key = if self.max_completion_tokens {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            body[key] = json!(max);
        }
        if let Some(t) = req.temperature {
            body["temperature"] = json!(t);
        }
        body
    }

    fn headers(&self) -> Result<HeaderMap, ProviderError> {
        let mut h = HeaderMap::new();
        h.insert(
            ACCEPT,
            reqwest::header::HeaderValue::from_static("text/event-stream"),
        );
        if let Some(key) = &self.transport.key {
            match self.flavor {
                Flavor::OpenAi => {
                    h.insert(AUTHORIZATION, key.header("Bearer ")?);
                }
                Flavor::Azure => {
                    h.insert("api-key", key.header("")?);
                }
            }
        }
        Ok(h)
    }

    async fn run(self: Arc<Self>, req: ChatRequest, mut tx: Emit) -> Result<(), ProviderError> {
        let t = &self.transport;
        let mut body = self.body(&req);
        let headers = self.headers()?;
        let mut attempt = 1;
        let mut limit_swapped = false;
        loop {
            let resp = t
                .send(
                    &mut body,
                    |b| t.client.post(&self.url).headers(headers.clone()).json(b),
                    |b, server| fix_rejected(b, server, &mut limit_swapped),
                    &self.model,
                    &mut attempt,
                    &mut tx,
                )
                .await?;
            let resp = match t.answer(resp).await? {
                Answer::Stream(resp) => resp,
                // A gateway that does not stream: the body is the whole reply.
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

    /// Reads one streamed answer, ending with its usage and `Done`.
    async fn read(
        &self,
        resp: reqwest::Response,
        req: &ChatRequest,
        tx: &mut Emit,
    ) -> Result<(), StreamFailure> {
        let t = &self.transport;
        let mut events = t.events(resp);
        let mut usage: Option<TokenUsage> = None;
        let mut finish: Option<String> = None;
        let mut output = String::new();
        let mut served_model: Option<String> = None;
        loop {
            let next = match events.next().await {
                // A connection dropped after the finishing chunk lost at most the usage chunk.
                Err(_) if finish.is_some() && events.broke() => None,
                other => other?,
            };
            let Some(ev) = next else {
                // Some compatible servers close right after the finishing chunk without
                // `[DONE]`: the answer is complete all the same.
                if finish.is_some() {
                    break;
                }
                return Err(t.closed_early().into());
            };
            let data = ev.data.trim();
            if data == "[DONE]" {
                break;
            }
            if data.is_empty() {
                continue;
            }
            let parsed = serde_json::from_str::<Value>(data);
            let server_error = match &parsed {
                Ok(v) => v
                    .get("error")
                    .filter(|e| !e.is_null())
                    .or((ev.event == "error").then_some(v)),
                Err(_) => None,
            };
            if ev.event == "error" || server_error.is_some() {
                let msg = server_error
                    .and_then(|e| e.get("message").and_then(Value::as_str))
                    .unwrap_or(data);
                let transient = server_error.is_some_and(|e| {
                    ["type", "code"].iter().any(|k| {
                        e.get(*k)
                            .and_then(Value::as_str)
                            .is_some_and(is_transient_error_kind)
                    })
                });
                if transient && output.is_empty() {
                    return Err(StreamFailure::Retry(t.redact(&format!(
                        "the server reported an error before any text: {msg}"
                    ))));
                }
                return Err(t
                    .bad_chunk("the server reported an error mid-stream", msg)
                    .into());
            }
            let v = parsed.map_err(|_| t.bad_chunk("unreadable chunk from the server", data))?;
            if let Some(m) = v
                .get("model")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
            {
                served_model = Some(m.to_string());
            }
            if let Some(choices) = v.get("choices").and_then(Value::as_array) {
                for choice in choices {
                    if let Some(text) = choice.pointer("/delta/content").and_then(Value::as_str)
                        && !text.is_empty()
                    {
                        output.push_str(text);
                        emit(tx, ChatChunk::Delta(text.to_string())).await?;
                    }
                    if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                        finish = Some(reason.to_string());
                    }
                }
            }
            if let Some(u) = v.get("usage").and_then(parse_usage) {
                usage = Some(u);
            }
        }
        finish_reply(req, &output, usage, served_model, finish, tx).await?;
        Ok(())
    }

    /// Reads a `chat.completion` object sent whole instead of streamed: its text goes out as
    /// one delta, then its usage and finish reason, as a stream would end.
    async fn read_whole(
        &self,
        v: &Value,
        req: &ChatRequest,
        tx: &mut Emit,
    ) -> Result<(), ProviderError> {
        let t = &self.transport;
        let Some(choices) = v.get("choices").and_then(Value::as_array) else {
            return Err(t.not_a_reply(v));
        };
        if v.get("error").is_some_and(|e| !e.is_null()) {
            return Err(t.not_a_reply(v));
        }
        let mut output = String::new();
        let mut finish = None;
        for choice in choices {
            let message = choice.get("message").or_else(|| choice.get("delta"));
            if let Some(text) = message
                .and_then(|m| m.get("content"))
                .and_then(Value::as_str)
            {
                output.push_str(text);
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                finish = Some(reason.to_string());
            }
        }
        if !output.is_empty() {
            emit(tx, ChatChunk::Delta(output.clone())).await?;
        }
        let served_model = v
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .map(str::to_string);
        let usage = v.get("usage").and_then(parse_usage);
        finish_reply(req, &output, usage, served_model, finish, tx).await
    }
}

/// Ends a reply: its usage (counted by proctor when the server reported none) and `Done`.
async fn finish_reply(
    req: &ChatRequest,
    output: &str,
    usage: Option<TokenUsage>,
    served_model: Option<String>,
    finish: Option<String>,
    tx: &mut Emit,
) -> Result<(), ProviderError> {
    let (usage, estimated) = match usage {
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
            served_model,
        },
    )
    .await?;
    emit(
        tx,
        ChatChunk::Done {
            finish_reason: finish,
        },
    )
    .await
}

/// Repairs a request a server rejected with 400/422 when its message names the culprit:
/// `stream_options` unknown to older servers (dropped; usage is then estimated unless reported
/// anyway), or the output limit under the name this model does not take (`max_tokens` vs
/// `max_completion_tokens`; swapped once). Returns what changed, `None` when nothing applies.
fn fix_rejected(body: &mut Value, server: &str, limit_swapped: &mut bool) -> Option<&'static str> {
    let obj = body.as_object_mut()?;
    if server.contains("stream_options") && obj.remove("stream_options").is_some() {
        return Some("dropped stream_options");
    }
    if *limit_swapped {
        return None;
    }
    for (sent, other, change) in [
        (
            "max_tokens",
            "max_completion_tokens",
            "sent max_completion_tokens instead of max_tokens",
        ),
        (
            "max_completion_tokens",
            "max_tokens",
            "sent max_tokens instead of max_completion_tokens",
        ),
    ] {
        if server.contains(sent)
            && let Some(limit) = obj.remove(sent)
        {
            obj.insert(other.to_string(), limit);
            *limit_swapped = true;
            return Some(change);
        }
    }
    None
}

/// Reads a Chat Completions `usage` object; `None` when it carries no real counts (null, `{}`,
/// only `total_tokens`, or zero prompt and completion tokens), so usage is estimated instead.
fn parse_usage(u: &Value) -> Option<TokenUsage> {
    let get = |p: &str| u.pointer(p).and_then(Value::as_u64);
    let (prompt, completion) = (get("/prompt_tokens"), get("/completion_tokens"));
    if prompt.unwrap_or(0) == 0 && completion.unwrap_or(0) == 0 {
        return None;
    }
    Some(TokenUsage {
        input_tokens: prompt.unwrap_or(0),
        output_tokens: completion.unwrap_or(0),
        cached_tokens: get("/prompt_tokens_details/cached_tokens").unwrap_or(0),
        cache_creation_tokens: 0,
    })
}

impl ChatModel for OpenAiModel {
    fn model_ref(&self) -> &str {
        &self.inner.model_ref
    }

    /// Streams a completion. The model named at construction is used (`request.model` is
    /// ignored), so `model_ref` always matches what was called.
    fn stream(
        &self,
        request: ChatRequest,
        cancel: CancellationToken,
    ) -> BoxStream<'static, Result<ChatChunk, ProviderError>> {
        let inner = Arc::new(self.inner.clone());
        driven_stream(cancel, move |tx| inner.run(request, tx))
    }
}
