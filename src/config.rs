//! config.toml and team files: serde structs, defaults, and validation whose errors name the file,
//! the line and the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// An error in a config or team file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{path}:{line}: {field}: {message}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// Dotted field path, e.g. `agents[1].model`.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// Kind of provider API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI Chat Completions (also Ollama, vLLM, LM Studio).
    Openai,
    /// Azure OpenAI deployments.
    Azure,
    /// Anthropic Messages.
    Anthropic,
    /// proctor's built-in scripted model (demo, tests).
    Scripted,
}

/// One `[providers.NAME]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// API kind.
    pub kind: ProviderKind,
    /// Base URL.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Name of the env var holding the key (the key itself is never in a file).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Azure: `api-version` query parameter.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Anthropic: `anthropic-version` header.
    #[serde(default)]
    pub anthropic_version: Option<String>,
    /// Idle timeout between streamed chunks, seconds (default 120).
    #[serde(default)]
    pub idle_timeout_s: Option<u64>,
    /// Connect timeout, seconds (default 10).
    #[serde(default)]
    pub connect_timeout_s: Option<u64>,
    /// Max retries before the first streamed byte (default 4).
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Every model of this provider costs nothing (local servers).
    #[serde(default)]
    pub free: bool,
    /// Scripted provider: path of the script file.
    #[serde(default)]
    pub script: Option<PathBuf>,
}

/// One `[pricing."provider/model"]` table: USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// Input tokens.
    pub input_per_mtok: f64,
    /// Output tokens.
    pub output_per_mtok: f64,
    /// Cached input tokens (defaults to the input price).
    #[serde(default)]
    pub cached_input_per_mtok: Option<f64>,
    /// Cache writes (Anthropic; defaults to the input price).
    #[serde(default)]
    pub cache_write_per_mtok: Option<f64>,
}

/// config.toml.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Providers by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Price overrides by `provider/model`.
    #[serde(default)]
    pub pricing: BTreeMap<String, PriceConfig>,
    /// Default team file.
    #[serde(default)]
    pub default_team: Option<PathBuf>,
    /// Theme name.
    #[serde(default)]
    pub theme: Option<String>,
    /// Key overrides (TUI).
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
}

/// One `[[agents]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Unique name.
    pub name: String,
    /// What the agent does (auto selector, roster).
    #[serde(default)]
    pub description: String,
    /// `provider/model`.
    pub model: String,
    /// System prompt.
    #[serde(default)]
    pub system: String,
    /// Whether its code blocks may be executed.
    #[serde(default)]
    pub can_execute: bool,
    /// Oldest turns are dropped from its requests beyond this many tokens.
    #[serde(default)]
    pub max_context_tokens: Option<u64>,
    /// Max output tokens per call.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Per-agent budget cap in USD.
    #[serde(default)]
    pub budget_usd: Option<f64>,
}

/// How the next speaker is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SpeakerSelection {
    /// In roster order.
    #[default]
    RoundRobin,
    /// An LLM picks from the roster using the descriptions.
    Auto,
    /// The human picks.
    Manual,
    /// Uniformly at random.
    Random,
}

/// `[orchestration]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Orchestration {
    /// Speaker selection.
    #[serde(default)]
    pub speaker_selection: SpeakerSelection,
    /// Max agent turns.
    #[serde(default = "default_max_rounds")]
    pub max_rounds: u32,
    /// Allowed next speakers per speaker.
    #[serde(default)]
    pub allowed_transitions: Option<BTreeMap<String, Vec<String>>>,
    /// Model for the auto selector (default: the first agent's model).
    #[serde(default)]
    pub selector_model: Option<String>,
    /// Whether the same agent may speak twice in a row.
    #[serde(default = "yes")]
    pub allow_repeat_speaker: bool,
}

impl Default for Orchestration {
    fn default() -> Self {
        Self {
            speaker_selection: SpeakerSelection::default(),
            max_rounds: default_max_rounds(),
            allowed_transitions: None,
            selector_model: None,
            allow_repeat_speaker: true,
        }
    }
}

/// `[termination]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Termination {
    /// A message mentioning this text ends the session.
    #[serde(default = "default_term_text")]
    pub text: Option<String>,
    /// Max agent turns in a row without a human message or decision.
    #[serde(default = "default_max_auto")]
    pub max_consecutive_auto_replies: u32,
    /// Wall-clock limit of the session, seconds.
    #[serde(default = "default_session_timeout")]
    pub timeout_s: u64,
}

impl Default for Termination {
    fn default() -> Self {
        Self {
            text: default_term_text(),
            max_consecutive_auto_replies: default_max_auto(),
            timeout_s: default_session_timeout(),
        }
    }
}

/// `[budget]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Session cap in USD.
    #[serde(default)]
    pub usd: Option<f64>,
    /// Warn at this fraction of the cap.
    #[serde(default = "default_warn_at")]
    pub warn_at: f64,
}

impl Default for Budget {
    fn default() -> Self {
        Self { usd: None, warn_at: default_warn_at() }
    }
}

/// `[executor]`: the sandbox policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorConfig {
    /// Image.
    #[serde(default = "default_image")]
    pub image: String,
    /// Per-block timeout, seconds.
    #[serde(default = "default_exec_timeout")]
    pub timeout_s: u64,
    /// Network access for the whole session.
    #[serde(default)]
    pub network: bool,
    /// Memory limit (memory+swap), MiB.
    #[serde(default = "default_memory")]
    pub memory_mb: u64,
    /// CPU quota.
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    /// Pids limit and nproc ulimit.
    #[serde(default = "default_pids")]
    pub pids: u64,
    /// Output kept per block, KiB.
    #[serde(default = "default_output_kb")]
    pub output_limit_kb: u64,
    /// Extra interpreters: language -> command (e.g. `node = ["node"]`).
    #[serde(default)]
    pub interpreters: BTreeMap<String, Vec<String>>,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            image: default_image(),
            timeout_s: default_exec_timeout(),
            network: false,
            memory_mb: default_memory(),
            cpus: default_cpus(),
            pids: default_pids(),
            output_limit_kb: default_output_kb(),
            interpreters: BTreeMap::new(),
        }
    }
}

/// A team file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamConfig {
    /// Team name.
    pub name: String,
    /// Agents in roster order.
    pub agents: Vec<AgentConfig>,
    /// `[orchestration]`.
    #[serde(default)]
    pub orchestration: Orchestration,
    /// `[termination]`.
    #[serde(default)]
    pub termination: Termination,
    /// `[budget]`.
    #[serde(default)]
    pub budget: Budget,
    /// `[executor]`.
    #[serde(default)]
    pub executor: ExecutorConfig,
}

/// Default sandbox image.
pub const DEFAULT_IMAGE: &str = "python:3.12-slim";

fn default_max_rounds() -> u32 {
    20
}
fn yes() -> bool {
    true
}
fn default_term_text() -> Option<String> {
    Some("TERMINATE".into())
}
fn default_max_auto() -> u32 {
    10
}
fn default_session_timeout() -> u64 {
    1800
}
fn default_warn_at() -> f64 {
    0.8
}
fn default_image() -> String {
    DEFAULT_IMAGE.into()
}
fn default_exec_timeout() -> u64 {
    60
}
fn default_memory() -> u64 {
    512
}
fn default_cpus() -> f64 {
    1.0
}
fn default_pids() -> u64 {
    256
}
fn default_output_kb() -> u64 {
    1024
}

/// Turns a toml error into a `ConfigError` naming file, line and field.
fn toml_error(path: &Path, text: &str, err: &toml::de::Error) -> ConfigError {
    let line = err
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
        .unwrap_or(0);
    let message = err.message().to_string();
    let field = field_from_message(&message).unwrap_or_else(|| "(file)".into());
    ConfigError::Invalid { path: path.to_path_buf(), line, field, message }
}

fn field_from_message(message: &str) -> Option<String> {
    // serde messages: "unknown field `x`, expected ..." / "missing field `x`"
    let start = message.find('`')?;
    let rest = &message[start + 1..];
    let end = rest.find('`')?;
    Some(rest[..end].to_string())
}

/// Parses a team file's text.
pub fn parse_team(path: &Path, text: &str) -> Result<TeamConfig, ConfigError> {
    toml::from_str(text).map_err(|e| toml_error(path, text, &e))
}

/// Reads and parses a team file.
pub fn load_team(path: &Path) -> Result<TeamConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    parse_team(path, &text)
}

/// Parses config.toml text.
pub fn parse_config(path: &Path, text: &str) -> Result<Config, ConfigError> {
    toml::from_str(text).map_err(|e| toml_error(path, text, &e))
}

/// Reads config.toml; a missing file gives the defaults.
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_config(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(source) => Err(ConfigError::Read { path: path.to_path_buf(), source }),
    }
}
