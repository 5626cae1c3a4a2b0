//! LLM providers behind one trait: the engine streams a chat request and gets text deltas and usage.
//!
//! Real clients (`openai`, `anthropic`) speak the providers' documented wire formats over reqwest;
//! `scripted` replays canned replies for the demo and the engine tests.

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub mod anthropic;
pub mod http;
pub mod openai;
pub mod registry;
pub mod retry;
pub mod scripted;
pub mod sse;
pub mod tokens;
pub mod turns;

pub use registry::{build_model, build_model_ref, split_model_ref};

/// Who wrote a chat message, from the requesting agent's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything not written by the requesting agent (other agents, the human, the executor).
    User,
    /// The requesting agent's own earlier messages.
    Assistant,
}

/// One message of the history sent to a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Role.
    pub role: Role,
    /// Text. Messages from others are prefixed with their author's name by the engine.
    pub content: String,
}

/// A request to a chat model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Model name as the provider knows it (without the `provider/` prefix).
    pub model: String,
    /// System prompt (may be empty).
    pub system: String,
    /// History, oldest first.
    pub messages: Vec<ChatMessage>,
    /// Max output tokens.
    pub max_tokens: Option<u32>,
    /// Temperature.
    pub temperature: Option<f32>,
    /// Agent the call is for (`selector` for the speaker selector). Not sent to providers.
    #[serde(default)]
    pub agent: String,
}

/// Token usage of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Prompt tokens, including cached ones.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Prompt tokens read from cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to cache.
    pub cache_creation_tokens: u64,
}

/// One item of a model's streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatChunk {
    /// More text.
    Delta(String),
    /// Usage as reported by the provider (or estimated when `estimated`).
    Usage {
        /// Counts.
        usage: TokenUsage,
        /// True when the provider reported nothing and we counted.
        estimated: bool,
        /// The model the server says answered (Azure reports the real model behind a
        /// deployment name); pricing falls back to it.
        served_model: Option<String>,
    },
    /// The call failed before the first byte and will be retried after `wait_ms`.
    Retrying {
        /// Attempt number about to start (2 = first retry).
        attempt: u32,
        /// Wait before it.
        wait_ms: u64,
        /// What failed.
        reason: String,
    },
    /// The stream finished normally.
    Done {
        /// Provider's stop reason.
        finish_reason: Option<String>,
    },
}

/// Why a model call failed. Messages name the problem and the fix; they never contain a key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// The key's env var is missing or empty.
    #[error("no API key: set the environment variable {env}")]
    MissingKey {
        /// Env var name.
        env: String,
    },
    /// Authentication failed.
    #[error("{provider} rejected the API key (HTTP {status}); check the key in ${env}")]
    Auth {
        /// Provider name.
        provider: String,
        /// HTTP status.
        status: u16,
        /// Env var name.
        env: String,
    },
    /// A non-retryable HTTP status.
    #[error("{provider} answered HTTP {status}: {message}")]
    Http {
        /// Provider name.
        provider: String,
        /// HTTP status.
        status: u16,
        /// Server's message and what to fix.
        message: String,
    },
    /// Retries exhausted.
    #[error("{provider}: gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// Provider name.
        provider: String,
        /// Attempts made.
        attempts: u32,
        /// Last failure.
        last: String,
    },
    /// The provider asked to wait longer than we wait on our own.
    #[error("{provider} asks to retry after {wait_s} s; continue to wait and retry, or stop")]
    RetryAfterTooLong {
        /// Provider name.
        provider: String,
        /// Requested wait.
        wait_s: u64,
    },
    /// Connection or transport failure.
    #[error("{provider}: connection failed: {message}")]
    Connect {
        /// Provider name.
        provider: String,
        /// Details.
        message: String,
    },
    /// The stream was malformed or ended early.
    #[error("{provider}: {message}")]
    Stream {
        /// Provider name.
        provider: String,
        /// Details.
        message: String,
    },
    /// No chunk within the idle timeout.
    #[error("{provider}: no data for {secs} s (idle timeout)")]
    IdleTimeout {
        /// Provider name.
        provider: String,
        /// Timeout.
        secs: u64,
    },
    /// Cancelled by the human.
    #[error("cancelled")]
    Cancelled,
    /// Configuration problem (unknown model, bad URL, ...).
    #[error("{0}")]
    Config(String),
}

/// A streaming chat model. Implementations stop promptly (within 100 ms) when `cancel` fires,
/// also while waiting to retry, and then yield `Err(ProviderError::Cancelled)`.
pub trait ChatModel: Send + Sync {
    /// `provider/model`, as in team files and usage events.
    fn model_ref(&self) -> &str;
    /// Starts a call.
    fn stream(
        &self,
        request: ChatRequest,
        cancel: CancellationToken,
    ) -> BoxStream<'static, Result<ChatChunk, ProviderError>>;
}
