//! HTTP plumbing shared by the provider clients: the redacted API key, sending with retries,
//! reading SSE with an idle timeout, turning HTTP failures into errors that say what to fix, and
//! adapting a client's async driver into the `ChatModel` stream with prompt cancellation.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use futures::channel::mpsc;
use futures::stream::{self, BoxStream};
use futures::{SinkExt, StreamExt};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use tokio_util::sync::CancellationToken;

use super::retry::{
    RetryPolicy, is_retryable_status, rate_limit_reset, retry_after, should_retry_header,
};
use super::sse::{SseEvent, SseParser};
use super::{ChatChunk, ProviderError};
use crate::config::ProviderConfig;

/// Default idle timeout between streamed chunks.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default TCP/TLS connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("proctor/", env!("CARGO_PKG_VERSION"));
/// Most bytes of an error body kept for the message.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Most bytes of a whole (non-streamed) JSON reply.
const MAX_WHOLE_BODY: usize = 16 << 20;

/// A 2xx answer to a streaming request.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Server-sent events, read with [`Transport::events`].
    Stream(reqwest::Response),
    /// One complete JSON body: the whole reply at once, from a server that does not stream.
    Whole(serde_json::Value),
}

/// An API key. Its `Debug` never shows the value; it leaves the process only in a header.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key read from the environment.
    pub fn new(key: String) -> Self {
        Self(key)
    }

    /// A header value carrying `prefix` + key, marked sensitive so it is never logged.
    pub(crate) fn header(&self, prefix: &str) -> Result<HeaderValue, ProviderError> {
        let mut v = HeaderValue::from_str(&format!("{prefix}{}", self.0)).map_err(|_| {
            ProviderError::Config(
                "the API key contains characters not allowed in an HTTP header".into(),
            )
        })?;
        v.set_sensitive(true);
        Ok(v)
    }

    /// Replaces every occurrence of the key in `text` (servers sometimes echo it back).
    pub(crate) fn redact(&self, text: &str) -> String {
        if self.0.len() < 4 {
            text.to_string()
        } else {
            text.replace(&self.0, "[redacted]")
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// Sends one kind of request for one provider: client, key, timeouts and retry policy.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    /// Provider name as configured (used in every message).
    pub provider: String,
    /// Env var that holds the key, for "fix it here" messages.
    pub key_env: Option<String>,
    pub key: Option<ApiKey>,
    pub client: reqwest::Client,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub retry: RetryPolicy,
}

/// Channel end a client's driver writes its chunks to.
pub(crate) type Emit = mpsc::Sender<Result<ChatChunk, ProviderError>>;

/// Sends a chunk to the consumer; a dropped consumer stops the driver.
pub(crate) async fn emit(tx: &mut Emit, chunk: ChatChunk) -> Result<(), ProviderError> {
    tx.send(Ok(chunk))
        .await
        .map_err(|_| ProviderError::Cancelled)
}

/// Runs `driver` as the stream a `ChatModel` returns. The driver only runs while the stream is
/// polled; when `cancel` fires it is dropped at once (closing the connection, cutting any backoff
/// sleep short) and the stream ends with `Err(Cancelled)`. Dropping the stream drops the request.
pub(crate) fn driven_stream<F, Fut>(
    cancel: CancellationToken,
    driver: F,
) -> BoxStream<'static, Result<ChatChunk, ProviderError>>
where
    F: FnOnce(Emit) -> Fut,
    Fut: Future<Output = Result<(), ProviderError>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(32);
    let mut err_tx = tx.clone();
    let fut = driver(tx);
    let run = async move {
        let outcome = tokio::select! {
            biased;
            () = cancel.cancelled() => Err(ProviderError::Cancelled),
            r = fut => r,
        };
        if let Err(e) = outcome {
            let _ = err_tx.send(Err(e)).await;
        }
    };
    let run = stream::once(run).filter_map(|()| async { None });
    stream::select(rx, run).boxed()
}

impl Transport {
    /// Transport for `[providers.NAME]` posting to `url`: reads the key from the env var the
    /// config names (or `default_env` when it names none) now, and applies its timeouts and
    /// retry count.
    pub fn from_config(
        name: &str,
        cfg: &ProviderConfig,
        default_env: Option<&str>,
        url: &reqwest::Url,
    ) -> Result<Self, ProviderError> {
        let key_env = cfg
            .api_key_env
            .clone()
            .or_else(|| default_env.map(str::to_string));
        let key = match &key_env {
            Some(env) => match std::env::var(env) {
                Ok(k) if !k.trim().is_empty() => Some(ApiKey::new(k.trim().to_string())),
                Ok(_) | Err(_) => return Err(ProviderError::MissingKey { env: env.clone() }),
            },
            None => None,
        };
        let connect = cfg
            .connect_timeout_s
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let idle = cfg
            .idle_timeout_s
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_IDLE_TIMEOUT);
        let mut retry = RetryPolicy::default();
        if let Some(n) = cfg.max_retries {
            retry.max_retries = n;
        }
        Ok(Self {
            provider: name.to_string(),
            key_env,
            key,
            client: Self::client(connect, is_loopback(url))?,
            connect_timeout: connect,
            idle_timeout: idle,
            retry,
        })
    }

    /// Builds the reqwest client: connect timeout, no total timeout (generations can be long),
    /// our User-Agent. A `loopback` server (Ollama, vLLM on this machine) is always reached
    /// directly: an `HTTP(S)_PROXY` from the environment cannot reach it and would only fail.
    pub fn client(
        connect_timeout: Duration,
        loopback: bool,
    ) -> Result<reqwest::Client, ProviderError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .user_agent(USER_AGENT);
        if loopback {
            builder = builder.no_proxy();
        }
        builder
            .build()
            .map_err(|e| ProviderError::Config(format!("cannot build the HTTP client: {e}")))
    }

    /// A transport failure in words: connect timeouts say so plainly.
    fn transport_reason(&self, e: &reqwest::Error) -> String {
        let chain = error_chain(e);
        let timed_out =
            e.is_timeout() || chain.contains("deadline has elapsed") || chain.contains("timed out");
        if e.is_connect() && timed_out {
            format!(
                "connect timeout: no connection within {} s ({chain})",
                self.connect_timeout.as_secs_f64()
            )
        } else {
            chain
        }
    }

    pub(crate) fn redact(&self, text: &str) -> String {
        match &self.key {
            Some(k) => k.redact(text),
            None => text.to_string(),
        }
    }

    /// Sends `body` with the request built by `build`, retrying connect failures, header
    /// timeouts and retryable statuses (emitting `Retrying` before each wait) until a 2xx
    /// response arrives. A 400/422 whose server message `fix` can repair (by editing the body and
    /// returning what it changed) is sent again at once without counting as a retry. `attempt`
    /// is shared with [`Transport::backoff`] so stream-level retries count against the same
    /// budget. `what` names the model for "check the model name" hints.
    pub async fn send(
        &self,
        body: &mut serde_json::Value,
        build: impl Fn(&serde_json::Value) -> reqwest::RequestBuilder,
        mut fix: impl FnMut(&mut serde_json::Value, &str) -> Option<&'static str>,
        what: &str,
        attempt: &mut u32,
        tx: &mut Emit,
    ) -> Result<reqwest::Response, ProviderError> {
        loop {
            tracing::debug!(provider = %self.provider, attempt = *attempt, "sending chat request");
            let sent = tokio::time::timeout(self.idle_timeout, build(body).send()).await;
            let (reason, server_wait) = match sent {
                Err(_) => (
                    format!(
                        "no response within {} s (idle timeout)",
                        self.idle_timeout.as_secs_f64()
                    ),
                    None,
                ),
                Ok(Err(e)) => (self.redact(&self.transport_reason(&e)), None),
                Ok(Ok(resp)) => {
                    let status = resp.status().as_u16();
                    if resp.status().is_success() {
                        return Ok(resp);
                    }
                    let headers = resp.headers().clone();
                    let url = resp.url().clone();
                    let err_body = self.read_error_body(resp).await;
                    if matches!(status, 400 | 422)
                        && let Some(change) = fix(body, &err_body.message)
                    {
                        tracing::info!(provider = %self.provider, status, change, "server rejected the request; sending it again");
                        continue;
                    }
                    let retry = should_retry_header(&headers).unwrap_or_else(|| {
                        is_retryable_status(status)
                            && err_body.code.as_deref() != Some("insufficient_quota")
                    });
                    if !retry {
                        return Err(self.status_error(
                            status,
                            &err_body.message,
                            url.as_str(),
                            what,
                        ));
                    }
                    let wait = retry_after(&headers).or_else(|| {
                        (status == 429)
                            .then(|| rate_limit_reset(&headers))
                            .flatten()
                    });
                    (format!("HTTP {status}: {}", err_body.message), wait)
                }
            };
            self.backoff(attempt, reason, server_wait, tx).await?;
        }
    }

    /// Decides what follows a failure that happened before any text streamed: wait (emitting
    /// `Retrying`, honouring the server's wait up to the policy's cap) and return `Ok` so the
    /// caller tries again, or the error that ends the call. Advances `attempt`.
    pub async fn backoff(
        &self,
        attempt: &mut u32,
        reason: String,
        server_wait: Option<Duration>,
        tx: &mut Emit,
    ) -> Result<(), ProviderError> {
        if let Some(wait) = server_wait
            && wait > self.retry.max_retry_after
        {
            return Err(ProviderError::RetryAfterTooLong {
                provider: self.provider.clone(),
                wait_s: wait.as_secs_f64().ceil() as u64,
            });
        }
        if *attempt > self.retry.max_retries {
            return Err(ProviderError::RetriesExhausted {
                provider: self.provider.clone(),
                attempts: *attempt,
                last: reason,
            });
        }
        let wait = server_wait.unwrap_or_else(|| self.retry.backoff(*attempt));
        tracing::info!(provider = %self.provider, attempt = *attempt, wait_ms = wait.as_millis() as u64, %reason, "retrying");
        emit(
            tx,
            ChatChunk::Retrying {
                attempt: *attempt + 1,
                wait_ms: wait.as_millis() as u64,
                reason,
            },
        )
        .await?;
        tokio::time::sleep(wait).await;
        *attempt += 1;
        Ok(())
    }

    /// Reads a whole (non-streamed) answer, with the idle timeout on every read and at most
    /// [`MAX_WHOLE_BODY`] bytes.
    async fn read_whole_body(&self, mut resp: reqwest::Response) -> Result<Vec<u8>, ProviderError> {
        let mut raw = Vec::new();
        loop {
            match tokio::time::timeout(self.idle_timeout, resp.chunk()).await {
                Err(_) => {
                    return Err(ProviderError::IdleTimeout {
                        provider: self.provider.clone(),
                        secs: self.idle_timeout.as_secs(),
                    });
                }
                Ok(Err(e)) => {
                    return Err(ProviderError::Stream {
                        provider: self.provider.clone(),
                        message: format!("reply closed before completion: {}", error_chain(&e)),
                    });
                }
                Ok(Ok(None)) => return Ok(raw),
                Ok(Ok(Some(bytes))) => {
                    if raw.len() + bytes.len() > MAX_WHOLE_BODY {
                        return Err(ProviderError::Stream {
                            provider: self.provider.clone(),
                            message: format!(
                                "the server's reply is larger than {} MiB; proctor stopped reading it",
                                MAX_WHOLE_BODY >> 20
                            ),
                        });
                    }
                    raw.extend_from_slice(&bytes);
                }
            }
        }
    }

    /// The error for a whole JSON answer that is not a reply: the server's own error, or an
    /// excerpt of what it sent.
    pub fn not_a_reply(&self, v: &serde_json::Value) -> ProviderError {
        let err = v.get("error").filter(|e| !e.is_null());
        let message = match err {
            Some(e) => {
                let text = e
                    .get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| e.to_string());
                format!(
                    "the server answered with an error instead of a reply: {}",
                    excerpt(&self.redact(&text))
                )
            }
            None => format!(
                "the server's JSON answer is not a reply this client reads: {}",
                excerpt(&self.redact(&v.to_string()))
            ),
        };
        ProviderError::Stream {
            provider: self.provider.clone(),
            message,
        }
    }

    async fn read_error_body(&self, mut resp: reqwest::Response) -> ErrorBody {
        let mut raw = Vec::new();
        let wait = self.idle_timeout.min(Duration::from_secs(10));
        while let Ok(Ok(Some(bytes))) = tokio::time::timeout(wait, resp.chunk()).await {
            raw.extend_from_slice(&bytes);
            if raw.len() >= MAX_ERROR_BODY {
                raw.truncate(MAX_ERROR_BODY);
                break;
            }
        }
        let text = String::from_utf8_lossy(&raw);
        let mut body = ErrorBody::parse(&text);
        body.message = self.redact(&body.message);
        body
    }

    fn status_error(&self, status: u16, server: &str, url: &str, what: &str) -> ProviderError {
        let provider = self.provider.clone();
        match status {
            401 | 403 => match &self.key_env {
                Some(env) => ProviderError::Auth {
                    provider,
                    status,
                    env: env.clone(),
                },
                None => ProviderError::Http {
                    provider: provider.clone(),
                    status,
                    message: format!(
                        "{server}; the server wants an API key: set api_key_env in [providers.{provider}] of config.toml"
                    ),
                },
            },
            404 => ProviderError::Http {
                provider,
                status,
                message: format!(
                    "{server}; check base_url (posted to {url}) and the model name `{what}`"
                ),
            },
            400 | 422 => ProviderError::Http {
                provider,
                status,
                message: format!(
                    "{server}; check the model name `{what}` and the request options (max_tokens, temperature)"
                ),
            },
            429 => ProviderError::Http {
                provider,
                status,
                message: format!("{server}; the account's quota is used up: check billing"),
            },
            _ => ProviderError::Http {
                provider,
                status,
                message: server.to_string(),
            },
        }
    }

    /// What a 2xx answer to a streaming request is: an event stream, or — from gateways that
    /// ignore `stream: true` — one complete JSON body. Anything else is an error saying what the
    /// server sent.
    pub async fn answer(&self, resp: reqwest::Response) -> Result<Answer, ProviderError> {
        let ctype = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if ctype.is_empty() || ctype.contains("event-stream") {
            return Ok(Answer::Stream(resp));
        }
        let essence = ctype.split(';').next().unwrap_or("").trim();
        if essence == "application/json" || essence.ends_with("+json") {
            let raw = self.read_whole_body(resp).await?;
            return match serde_json::from_slice::<serde_json::Value>(&raw) {
                Ok(v) => Ok(Answer::Whole(v)),
                Err(e) => Err(ProviderError::Stream {
                    provider: self.provider.clone(),
                    message: format!(
                        "the server sent {essence} that is not JSON ({e}): {}",
                        excerpt(&self.redact(&String::from_utf8_lossy(&raw)))
                    ),
                }),
            };
        }
        let body = self.read_error_body(resp).await;
        Err(ProviderError::Stream {
            provider: self.provider.clone(),
            message: format!(
                "expected a stream (text/event-stream) but the server sent {ctype}: {}",
                body.message
            ),
        })
    }

    /// Reads the SSE events of a streaming response.
    pub fn events(&self, resp: reqwest::Response) -> SseReader {
        SseReader {
            resp,
            parser: SseParser::new(),
            queue: VecDeque::new(),
            idle: self.idle_timeout,
            provider: self.provider.clone(),
            ended: false,
            broken: false,
        }
    }

    /// The error for a stream that ended without its terminator.
    pub fn closed_early(&self) -> ProviderError {
        ProviderError::Stream {
            provider: self.provider.clone(),
            message: "stream closed before completion".into(),
        }
    }

    /// The error for a chunk the client cannot read.
    pub fn bad_chunk(&self, what: &str, data: &str) -> ProviderError {
        ProviderError::Stream {
            provider: self.provider.clone(),
            message: format!("{what}: {}", excerpt(&self.redact(data))),
        }
    }
}

/// How reading a stream failed.
#[derive(Debug)]
pub(crate) enum StreamFailure {
    /// The server reported a transient error before any text streamed: try the call again
    /// (the string says why, for the `Retrying` chunk).
    Retry(String),
    /// The call is over.
    Fatal(ProviderError),
}

impl From<ProviderError> for StreamFailure {
    fn from(e: ProviderError) -> Self {
        Self::Fatal(e)
    }
}

/// Whether an error `type`/`code` a server puts in a stream names a transient condition
/// (overload, rate limit, internal error) that a new attempt may not meet.
pub(crate) fn is_transient_error_kind(kind: &str) -> bool {
    matches!(
        kind,
        "server_error"
            | "api_error"
            | "overloaded_error"
            | "rate_limit_error"
            | "rate_limit_exceeded"
            | "service_unavailable"
    )
}

/// Pulls SSE events off a response, with an idle timeout on every network read.
#[derive(Debug)]
pub(crate) struct SseReader {
    resp: reqwest::Response,
    parser: SseParser,
    queue: VecDeque<SseEvent>,
    idle: Duration,
    provider: String,
    ended: bool,
    /// The connection failed mid-body (rather than closing cleanly).
    broken: bool,
}

impl SseReader {
    /// Whether the last error was the connection failing mid-body (a cut chunked body, a
    /// reset), as opposed to a timeout or an unreadable event.
    pub fn broke(&self) -> bool {
        self.broken
    }

    /// Next event; `Ok(None)` when the connection closed.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, ProviderError> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Ok(Some(ev));
            }
            if self.ended {
                return Ok(None);
            }
            match tokio::time::timeout(self.idle, self.resp.chunk()).await {
                Err(_) => {
                    return Err(ProviderError::IdleTimeout {
                        provider: self.provider.clone(),
                        secs: self.idle.as_secs(),
                    });
                }
                Ok(Err(e)) => {
                    self.broken = true;
                    return Err(ProviderError::Stream {
                        provider: self.provider.clone(),
                        message: format!("stream closed before completion: {}", error_chain(&e)),
                    });
                }
                Ok(Ok(None)) => self.ended = true,
                Ok(Ok(Some(bytes))) => {
                    let events = self
                        .parser
                        .push(&bytes)
                        .map_err(|e| ProviderError::Stream {
                            provider: self.provider.clone(),
                            message: e.to_string(),
                        })?;
                    self.queue.extend(events);
                }
            }
        }
    }
}

/// What a failed response's body said.
#[derive(Debug, Default)]
struct ErrorBody {
    message: String,
    code: Option<String>,
}

impl ErrorBody {
    /// Understands OpenAI (`{"error":{"message","code","type"}}`), Anthropic
    /// (`{"type":"error","error":{"type","message"}}`) and plain-text bodies.
    fn parse(text: &str) -> Self {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
            let t = text.trim();
            return Self {
                message: if t.is_empty() {
                    "(no details)".into()
                } else {
                    excerpt(t)
                },
                code: None,
            };
        };
        let err = v.get("error").unwrap_or(&v);
        let message = err
            .get("message")
            .and_then(|m| m.as_str())
            .or_else(|| err.as_str())
            .map(excerpt)
            .unwrap_or_else(|| excerpt(text.trim()));
        let code = ["code", "type"]
            .iter()
            .find_map(|k| err.get(*k).and_then(|c| c.as_str()).map(str::to_string));
        let message = match &code {
            Some(c) if !message.contains(c.as_str()) => format!("{message} ({c})"),
            _ => message,
        };
        Self { message, code }
    }
}

/// Whether `url` names this machine: `localhost` (and `*.localhost`), 127.0.0.0/8 or ::1.
pub(crate) fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            let d = host.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
    }
}

/// First 300 characters of a server text, on one line, safe for a terminal.
fn excerpt(text: &str) -> String {
    crate::text_safety::excerpt(text, 300)
}

/// An error and its causes on one line ("error sending request: tcp connect error: refused").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_debug_and_redaction() {
        let k = ApiKey::new("sk-secret-123456".into());
        assert!(!format!("{k:?}").contains("secret"));
        assert_eq!(k.redact("bad key sk-secret-123456!"), "bad key [redacted]!");
    }

    #[test]
    fn loopback_hosts() {
        for (u, want) in [
            ("http://localhost:11434/v1", true),
            ("http://127.0.0.1:8000/v1", true),
            ("http://127.1.2.3/v1", true),
            ("http://[::1]:8000/v1", true),
            ("https://api.openai.com/v1", false),
            ("http://10.0.0.5:8000/v1", false),
        ] {
            let url = reqwest::Url::parse(u).unwrap();
            assert_eq!(is_loopback(&url), want, "{u}");
        }
    }

    #[test]
    fn error_bodies() {
        let b = ErrorBody::parse(
            r#"{"error":{"message":"Incorrect model","type":"invalid_request_error","code":"model_not_found"}}"#,
        );
        assert_eq!(b.code.as_deref(), Some("model_not_found"));
        assert!(b.message.contains("Incorrect model"));
        let b = ErrorBody::parse(
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(b.code.as_deref(), Some("overloaded_error"));
        let b = ErrorBody::parse("");
        assert_eq!(b.message, "(no details)");
    }
}
