//! config.toml and team files: serde structs, defaults, and validation whose errors name the file,
//! the line and the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// An error in a config or team file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        cause: std::io::Error,
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
        Self {
            usd: None,
            warn_at: default_warn_at(),
        }
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
    /// A directory of the user's to work in instead of the session's own (relative to the
    /// current directory); `--workspace` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<PathBuf>,
    /// How `workspace` is used: `rw` (default) or `copy`; `--workspace-mode` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_mode: Option<crate::protocol::WorkspaceMode>,
    /// Most a block may add to the workspace's disk use, MiB; past it the block is killed.
    #[serde(default = "default_workspace_limit")]
    pub workspace_limit_mb: u64,
    /// The Docker engine to run sandboxes on, over `DOCKER_HOST` (`unix://`, `tcp://`, `ssh://`).
    /// Left out of saved sessions when unset, so their logs read as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_host: Option<String>,
}

impl ExecutorConfig {
    /// The per-block time limit, within [`limits::EXEC_TIMEOUT_S`] whatever the policy says.
    pub fn block_timeout(&self) -> std::time::Duration {
        let range = limits::EXEC_TIMEOUT_S;
        std::time::Duration::from_secs(self.timeout_s.clamp(*range.start(), *range.end()))
    }

    /// Output kept per block, KiB, within [`limits::OUTPUT_LIMIT_KB`] whatever the policy says.
    pub fn output_limit(&self) -> u64 {
        let range = limits::OUTPUT_LIMIT_KB;
        self.output_limit_kb.clamp(*range.start(), *range.end())
    }
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
            docker_host: None,
            workspace: None,
            workspace_mode: None,
            workspace_limit_mb: default_workspace_limit(),
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

/// Themes shipped in `themes/`.
pub const THEMES: [&str; 3] = ["dark", "light", "high-contrast"];

/// Default sandbox image.
pub const DEFAULT_IMAGE: &str = "python:3.12-slim";

/// The ranges proctor accepts for the numbers of a team file and config.toml (docs/config.md
/// lists them). Checked when a file loads, so nothing fails later, after a paid model call, and
/// no arithmetic on them can overflow.
pub mod limits {
    use std::ops::RangeInclusive;

    /// `[executor] timeout_s`: one second to one day per block.
    pub const EXEC_TIMEOUT_S: RangeInclusive<u64> = 1..=86_400;
    /// `[executor] memory_mb`: 16 MiB to 1 TiB.
    pub const MEMORY_MB: RangeInclusive<u64> = 16..=1_048_576;
    /// `[executor] cpus`: Docker's smallest quota (0.01) to 1024.
    pub const CPUS: RangeInclusive<f64> = 0.01..=1024.0;
    /// `[executor] pids`: 8 to Linux's largest pid_max.
    pub const PIDS: RangeInclusive<u64> = 8..=4_194_304;
    /// `[executor] output_limit_kb`: 1 KiB to 64 MiB of output kept per block.
    pub const OUTPUT_LIMIT_KB: RangeInclusive<u64> = 1..=65_536;
    /// `[termination] timeout_s`: one second to 30 days.
    pub const SESSION_TIMEOUT_S: RangeInclusive<u64> = 1..=2_592_000;
    /// `[orchestration] max_rounds`.
    pub const MAX_ROUNDS: RangeInclusive<u32> = 1..=100_000;
    /// `[termination] max_consecutive_auto_replies`.
    pub const MAX_AUTO_REPLIES: RangeInclusive<u32> = 1..=100_000;
    /// `[budget] usd` and an agent's `budget_usd` (more than 0).
    pub const BUDGET_USD_MAX: f64 = 1_000_000.0;
    /// An agent's `max_context_tokens`.
    pub const MAX_CONTEXT_TOKENS: RangeInclusive<u64> = 1..=100_000_000;
    /// An agent's `max_tokens`.
    pub const MAX_TOKENS: RangeInclusive<u32> = 1..=10_000_000;
    /// A provider's `idle_timeout_s`: one second to one hour between streamed chunks.
    pub const IDLE_TIMEOUT_S: RangeInclusive<u64> = 1..=3_600;
    /// A provider's `connect_timeout_s`.
    pub const CONNECT_TIMEOUT_S: RangeInclusive<u64> = 1..=600;
    /// A provider's `max_retries`.
    pub const MAX_RETRIES: RangeInclusive<u32> = 0..=20;
    /// Prices, USD per million tokens.
    pub const PRICE_PER_MTOK: RangeInclusive<f64> = 0.0..=100_000.0;
}

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
/// Default of `[executor] workspace_limit_mb`.
pub const DEFAULT_WORKSPACE_LIMIT_MB: u64 = 2048;
/// Largest `workspace_limit_mb` (1 TiB).
pub const MAX_WORKSPACE_LIMIT_MB: u64 = 1 << 20;
fn default_workspace_limit() -> u64 {
    DEFAULT_WORKSPACE_LIMIT_MB
}

/// Name of the built-in scripted provider: always known, needs no config (demo, tests).
pub const SCRIPTED_PROVIDER: &str = "scripted";

/// Agent names that the transcript already uses for other speakers.
pub const RESERVED_AGENT_NAMES: [&str; 3] = ["human", "executor", "selector"];

/// The team used when neither `--team` nor `default_team` names one.
const DEFAULT_TEAM_TOML: &str = include_str!("../teams/default.toml");
/// The team of `proctor demo`.
const DEMO_TEAM_TOML: &str = include_str!("../teams/demo.toml");

impl ConfigError {
    /// 1-based line of the problem, when the error has one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Invalid { line, .. } => Some(*line).filter(|l| *l > 0),
        }
    }

    /// Dotted field path of the problem, when the error has one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Invalid { field, .. } => Some(field),
        }
    }
}

impl Config {
    /// The built-in providers with the user's `[providers.*]` laid over them (same name: user wins).
    pub fn effective_providers(&self) -> BTreeMap<String, ProviderConfig> {
        let mut all = builtin_providers();
        all.extend(self.providers.iter().map(|(k, v)| (k.clone(), v.clone())));
        all
    }

    /// `default_team` resolved: `~/` expands to the home dir, a relative path is taken from the
    /// directory of `config_file` (the file this config was loaded from).
    pub fn default_team_path(&self, config_file: &Path) -> Option<PathBuf> {
        let team = self.default_team.as_ref()?;
        if let Ok(rest) = team.strip_prefix("~")
            && let Some(home) = directories::BaseDirs::new()
        {
            return Some(home.home_dir().join(rest));
        }
        if team.is_absolute() {
            return Some(team.clone());
        }
        let base = config_file.parent().unwrap_or_else(|| Path::new(""));
        Some(base.join(team))
    }

    /// Names of providers marked `free = true` (for the price table).
    pub fn free_providers(&self) -> Vec<String> {
        self.effective_providers()
            .into_iter()
            .filter(|(_, p)| p.free)
            .map(|(n, _)| n)
            .collect()
    }
}

impl ProviderConfig {
    /// A provider of `kind` with everything else left to its defaults.
    pub fn new(kind: ProviderKind) -> Self {
        Self {
            kind,
            base_url: None,
            api_key_env: None,
            api_version: None,
            anthropic_version: None,
            idle_timeout_s: None,
            connect_timeout_s: None,
            max_retries: None,
            free: false,
            script: None,
        }
    }

    /// `base_url`, or the public endpoint of its kind when unset (Azure and scripted have none).
    pub fn base_url_or_default(&self) -> Option<&str> {
        if let Some(url) = &self.base_url {
            return Some(url.as_str());
        }
        match self.kind {
            ProviderKind::Openai => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Azure | ProviderKind::Scripted => None,
        }
    }
}

/// Providers every install knows: `openai` (key in `OPENAI_API_KEY`), `claude` (Anthropic, key in
/// `ANTHROPIC_API_KEY`) and `scripted` (built-in replayed replies, free).
pub fn builtin_providers() -> BTreeMap<String, ProviderConfig> {
    let openai = ProviderConfig {
        base_url: Some("https://api.openai.com/v1".into()),
        api_key_env: Some("OPENAI_API_KEY".into()),
        ..ProviderConfig::new(ProviderKind::Openai)
    };
    let anthropic = ProviderConfig {
        base_url: Some("https://api.anthropic.com".into()),
        api_key_env: Some("ANTHROPIC_API_KEY".into()),
        ..ProviderConfig::new(ProviderKind::Anthropic)
    };
    let scripted = ProviderConfig {
        free: true,
        ..ProviderConfig::new(ProviderKind::Scripted)
    };
    BTreeMap::from([
        ("openai".to_string(), openai),
        ("claude".to_string(), anthropic),
        (SCRIPTED_PROVIDER.to_string(), scripted),
    ])
}

/// Splits `"provider/model"` at the first `/`; `None` when either side is empty or there is no `/`.
pub fn split_model_ref(model_ref: &str) -> Option<(&str, &str)> {
    let (provider, model) = model_ref.split_once('/')?;
    (!provider.is_empty() && !model.is_empty()).then_some((provider, model))
}

/// The built-in default team (teams/default.toml): a Python `coder` and a `reviewer` on OpenAI.
pub fn default_team() -> TeamConfig {
    embedded_team(
        "teams/default.toml",
        DEFAULT_TEAM_TOML,
        "openai/gpt-4o-mini",
    )
}

/// The team of `proctor demo` (teams/demo.toml): planner, coder, reviewer on `scripted/demo`.
pub fn demo_team() -> TeamConfig {
    embedded_team("teams/demo.toml", DEMO_TEAM_TOML, "scripted/demo")
}

fn embedded_team(name: &str, text: &str, model: &str) -> TeamConfig {
    match parse_team(Path::new(name), text) {
        Ok(team) => team,
        Err(e) => {
            // Unreachable while the embedded-team tests pass; keep the app usable regardless.
            tracing::error!("embedded team is invalid: {e}");
            TeamConfig {
                name: "fallback".into(),
                agents: vec![AgentConfig {
                    name: "coder".into(),
                    description: "writes Python".into(),
                    model: model.into(),
                    system: "You write clean, tested Python. Reply TERMINATE when done.".into(),
                    can_execute: true,
                    max_context_tokens: None,
                    max_tokens: None,
                    temperature: None,
                    budget_usd: None,
                }],
                orchestration: Orchestration::default(),
                termination: Termination::default(),
                budget: Budget::default(),
                executor: ExecutorConfig::default(),
            }
        }
    }
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("dev", "proctor", "proctor")
}

/// `config.toml` in the platform config dir (e.g. `~/.config/proctor/config.toml`).
pub fn config_path_default() -> Option<PathBuf> {
    project_dirs().map(|d| d.config_dir().join("config.toml"))
}

/// The platform data dir (e.g. `~/.local/share/proctor`); sessions live in `sessions/` below it.
pub fn data_dir_default() -> Option<PathBuf> {
    project_dirs().map(|d| d.data_dir().to_path_buf())
}

/// Parses a team file's text and checks everything that does not need config.toml
/// (names, model ref shape, transitions, limits). Provider names are checked by [`validate_team`].
pub fn parse_team(path: &Path, text: &str) -> Result<TeamConfig, ConfigError> {
    let source = Source::new(path, text);
    let mut team: TeamConfig = toml::from_str(text).map_err(|e| source.toml_error(&e))?;
    if team
        .termination
        .text
        .as_deref()
        .is_some_and(|t| t.trim().is_empty())
    {
        team.termination.text = None;
    }
    check_team(&source, &team, None)?;
    Ok(team)
}

/// Reads and parses a team file (see [`parse_team`]).
pub fn load_team(path: &Path) -> Result<TeamConfig, ConfigError> {
    let text = read(path)?;
    parse_team(path, &text)
}

/// Checks a parsed team against a config: everything [`parse_team`] checks, plus that every
/// model ref names a provider of `config.effective_providers()`. `text` is the file's text (for lines).
pub fn validate_team(
    team: &TeamConfig,
    path: &Path,
    text: &str,
    config: &Config,
) -> Result<(), ConfigError> {
    let source = Source::new(path, text);
    let providers = config.effective_providers();
    check_team(&source, team, Some(&providers))
}

/// Reads, parses and validates a team file against `config` in one step.
pub fn load_team_checked(path: &Path, config: &Config) -> Result<TeamConfig, ConfigError> {
    let text = read(path)?;
    let team = parse_team(path, &text)?;
    validate_team(&team, path, &text, config)?;
    Ok(team)
}

/// Parses and validates config.toml text.
pub fn parse_config(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let source = Source::new(path, text);
    let config: Config = toml::from_str(text).map_err(|e| source.toml_error(&e))?;
    check_config(&source, &config)?;
    Ok(config)
}

/// Reads config.toml; a missing file gives the defaults.
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_config(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(cause) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        }),
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
        path: path.to_path_buf(),
        cause,
    })
}

// ---------------------------------------------------------------------------------------------
// Field paths and their lines

/// One step of a field path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// A dotted field path such as `agents[1].model` or `pricing."openai/gpt-4o".input_per_mtok`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FieldPath(Vec<Step>);

impl FieldPath {
    fn root() -> Self {
        Self::default()
    }

    fn key(&self, key: &str) -> Self {
        let mut steps = self.0.clone();
        steps.push(Step::Key(key.to_string()));
        Self(steps)
    }

    fn index(&self, index: usize) -> Self {
        let mut steps = self.0.clone();
        steps.push(Step::Index(index));
        Self(steps)
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(key)?
                    } else {
                        write!(f, "{key:?}")?
                    }
                }
                Step::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A file's text with its TOML parse tree kept for spans, so errors can name the line.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
    tree: toml::de::DeTable<'a>,
    /// Whether the text is well-formed TOML (errors are then about the schema, not syntax).
    syntax_ok: bool,
}

type SpannedValue<'a> = toml::Spanned<toml::de::DeValue<'a>>;

impl<'a> Source<'a> {
    fn new(path: &'a Path, text: &'a str) -> Self {
        // Best-effort tree even for broken TOML, so syntax errors can name a field too.
        let (tree, errors) = toml::de::DeTable::parse_recoverable(text);
        Self {
            path,
            text,
            tree: tree.into_inner(),
            syntax_ok: errors.is_empty(),
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    /// Span of the value at `field`, or of its deepest ancestor present in the file.
    fn span_of(&self, field: &FieldPath) -> Option<std::ops::Range<usize>> {
        let tree = &self.tree;
        let mut best = None;
        let mut current: Option<&SpannedValue<'a>> = None;
        for step in &field.0 {
            let next = match (step, current) {
                (Step::Key(key), None) => tree.get(key.as_str()),
                (Step::Key(key), Some(value)) => {
                    value.get_ref().as_table().and_then(|t| t.get(key.as_str()))
                }
                (Step::Index(index), Some(value)) => {
                    value.get_ref().as_array().and_then(|a| a.get(*index))
                }
                (Step::Index(_), None) => None,
            };
            let Some(next) = next else { break };
            best = Some(next.span());
            current = Some(next);
        }
        best
    }

    /// The deepest field whose key or value covers `offset`.
    fn field_at(&self, offset: usize) -> Option<FieldPath> {
        let tree = &self.tree;
        let mut best = None;
        field_at_in_table(tree, offset, &FieldPath::root(), &mut best);
        best
    }

    fn error(&self, field: &FieldPath, message: impl Into<String>) -> ConfigError {
        let line = self
            .span_of(field)
            .map(|s| self.line_of(s.start))
            .unwrap_or(1);
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// Turns a toml/serde error into a `ConfigError` naming file, line and dotted field.
    fn toml_error(&self, err: &toml::de::Error) -> ConfigError {
        let span = err.span();
        let line = span.as_ref().map(|s| self.line_of(s.start)).unwrap_or(0);
        let mut message = err.message().trim().to_string();
        let mut field = span
            .and_then(|s| self.field_at(s.start))
            .unwrap_or_default();
        if let Some(name) = message
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        {
            field = field.key(name);
        }
        if let Some(name) = message
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            // A header such as `[provider.openai]` covers its sub-tables too: stop at the bad key.
            if let Some(pos) = field
                .0
                .iter()
                .rposition(|s| *s == Step::Key(name.to_string()))
            {
                field.0.truncate(pos + 1);
            }
        }
        if message.starts_with("unknown field `api_key`") {
            message.push_str(
                "; API keys never go in a file: set the key in the environment and name the variable \
                 with api_key_env, e.g. api_key_env = \"OPENAI_API_KEY\"",
            );
        }
        let field = match (field.0.is_empty(), self.syntax_ok) {
            (false, _) => field.to_string(),
            (true, false) => "(syntax)".to_string(),
            (true, true) => "(top level)".to_string(),
        };
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            field,
            message,
        }
    }
}

fn covers(span: &std::ops::Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || (span.is_empty() && span.start == offset)
}

fn field_at_in_table(
    table: &toml::de::DeTable<'_>,
    offset: usize,
    prefix: &FieldPath,
    best: &mut Option<FieldPath>,
) {
    for (key, value) in table.iter() {
        let here = prefix.key(key.get_ref());
        if covers(&key.span(), offset) || covers(&value.span(), offset) {
            consider(best, &here);
        }
        field_at_in_value(value, offset, &here, best);
    }
}

fn field_at_in_value(
    value: &SpannedValue<'_>,
    offset: usize,
    here: &FieldPath,
    best: &mut Option<FieldPath>,
) {
    match value.get_ref() {
        toml::de::DeValue::Table(table) => field_at_in_table(table, offset, here, best),
        toml::de::DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let at = here.index(i);
                if covers(&item.span(), offset) {
                    consider(best, &at);
                }
                field_at_in_value(item, offset, &at, best);
            }
        }
        toml::de::DeValue::String(_)
        | toml::de::DeValue::Integer(_)
        | toml::de::DeValue::Float(_)
        | toml::de::DeValue::Boolean(_)
        | toml::de::DeValue::Datetime(_) => {}
    }
}

fn consider(best: &mut Option<FieldPath>, candidate: &FieldPath) {
    if best.as_ref().is_none_or(|b| candidate.0.len() > b.0.len()) {
        *best = Some(candidate.clone());
    }
}

// ---------------------------------------------------------------------------------------------
// Semantic checks

type Check = Result<(), ConfigError>;

fn check_team(
    src: &Source<'_>,
    team: &TeamConfig,
    providers: Option<&BTreeMap<String, ProviderConfig>>,
) -> Check {
    let root = FieldPath::root();
    if team.name.trim().is_empty() {
        return Err(src.error(
            &root.key("name"),
            "the team needs a name, e.g. name = \"squad\"",
        ));
    }
    let agents = root.key("agents");
    if team.agents.is_empty() {
        return Err(src.error(
            &agents,
            "a team needs at least one agent: add an [[agents]] table",
        ));
    }
    for (i, agent) in team.agents.iter().enumerate() {
        check_agent(src, team, i, agent, providers)?;
    }

    let orch = root.key("orchestration");
    check_range(
        src,
        &orch.key("max_rounds"),
        team.orchestration.max_rounds,
        limits::MAX_ROUNDS,
        " agent turns per session",
    )?;
    if let Some(model) = &team.orchestration.selector_model {
        check_model_ref(src, &orch.key("selector_model"), model, providers)?;
    }
    if let Some(transitions) = &team.orchestration.allowed_transitions {
        let at = orch.key("allowed_transitions");
        let known = agent_list(team);
        for (from, targets) in transitions {
            if !team.agents.iter().any(|a| &a.name == from) {
                return Err(src.error(
                    &at.key(from),
                    format!("unknown agent \"{from}\" (agents: {known})"),
                ));
            }
            for (j, to) in targets.iter().enumerate() {
                if !team.agents.iter().any(|a| &a.name == to) {
                    return Err(src.error(
                        &at.key(from).index(j),
                        format!("unknown agent \"{to}\" (agents: {known})"),
                    ));
                }
            }
        }
    }

    let term = root.key("termination");
    check_range(
        src,
        &term.key("max_consecutive_auto_replies"),
        team.termination.max_consecutive_auto_replies,
        limits::MAX_AUTO_REPLIES,
        " turns",
    )?;
    check_range(
        src,
        &term.key("timeout_s"),
        team.termination.timeout_s,
        limits::SESSION_TIMEOUT_S,
        " seconds (30 days)",
    )?;

    let budget = root.key("budget");
    if let Some(usd) = team.budget.usd {
        check_usd(src, &budget.key("usd"), usd, "remove `usd` for no cap")?;
    }
    let warn_at = team.budget.warn_at;
    if !(warn_at > 0.0 && warn_at <= 1.0) {
        return Err(src.error(
            &budget.key("warn_at"),
            format!("must be a fraction of the cap in (0, 1], e.g. 0.8 (got {warn_at})"),
        ));
    }

    check_executor(src, &root.key("executor"), &team.executor)
}

fn agent_list(team: &TeamConfig) -> String {
    team.agents
        .iter()
        .map(|a| a.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_agent(
    src: &Source<'_>,
    team: &TeamConfig,
    i: usize,
    agent: &AgentConfig,
    providers: Option<&BTreeMap<String, ProviderConfig>>,
) -> Check {
    let at = FieldPath::root().key("agents").index(i);
    let name = &agent.name;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(src.error(
            &at.key("name"),
            format!("agent name {name:?} must be letters, digits, '_' or '-' (e.g. \"coder\")"),
        ));
    }
    if RESERVED_AGENT_NAMES
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
    {
        return Err(src.error(
            &at.key("name"),
            format!(
                "agent name \"{name}\" is reserved (reserved: {}); choose another name",
                RESERVED_AGENT_NAMES.join(", ")
            ),
        ));
    }
    if let Some(first) = team.agents[..i]
        .iter()
        .position(|a| a.name.eq_ignore_ascii_case(name))
    {
        let other = &team.agents[first].name;
        return Err(src.error(
            &at.key("name"),
            format!(
                "duplicate agent name \"{name}\" (also agents[{first}].name = \"{other}\"); names must \
                 be unique, ignoring case"
            ),
        ));
    }
    check_model_ref(src, &at.key("model"), &agent.model, providers)?;
    if let Some(n) = agent.max_context_tokens {
        check_range(
            src,
            &at.key("max_context_tokens"),
            n,
            limits::MAX_CONTEXT_TOKENS,
            " tokens; remove it for no limit",
        )?;
    }
    if let Some(n) = agent.max_tokens {
        check_range(
            src,
            &at.key("max_tokens"),
            n,
            limits::MAX_TOKENS,
            " tokens; remove it for the model's default",
        )?;
    }
    if let Some(t) = agent.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(src.error(
            &at.key("temperature"),
            format!("must be between 0 and 2 (got {t})"),
        ));
    }
    if let Some(usd) = agent.budget_usd {
        check_usd(
            src,
            &at.key("budget_usd"),
            usd,
            "remove it for no per-agent cap",
        )?;
    }
    Ok(())
}

/// `value` must lie in `range`; the message names the range, its unit and the value found.
fn check_range<T>(
    src: &Source<'_>,
    at: &FieldPath,
    value: T,
    range: std::ops::RangeInclusive<T>,
    unit: &str,
) -> Check
where
    T: PartialOrd + std::fmt::Display,
{
    if range.contains(&value) {
        return Ok(());
    }
    Err(src.error(
        at,
        format!(
            "must be from {} to {}{unit} (got {value})",
            range.start(),
            range.end()
        ),
    ))
}

/// A budget in USD: more than 0, at most [`limits::BUDGET_USD_MAX`].
fn check_usd(src: &Source<'_>, at: &FieldPath, usd: f64, otherwise: &str) -> Check {
    if usd.is_finite() && usd > 0.0 && usd <= limits::BUDGET_USD_MAX {
        return Ok(());
    }
    Err(src.error(
        at,
        format!(
            "must be more than 0 USD and at most {} USD (got {usd}); {otherwise}",
            limits::BUDGET_USD_MAX
        ),
    ))
}

fn check_model_ref(
    src: &Source<'_>,
    at: &FieldPath,
    model_ref: &str,
    providers: Option<&BTreeMap<String, ProviderConfig>>,
) -> Check {
    let Some((provider, _model)) = split_model_ref(model_ref) else {
        return Err(src.error(
            at,
            format!(
                "model ref {model_ref:?} is not \"<provider>/<model>\" (e.g. \"openai/gpt-4o-mini\")"
            ),
        ));
    };
    if let Some(providers) = providers
        && !providers.contains_key(provider)
    {
        let known = providers
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(src.error(
            at,
            format!(
                "unknown provider \"{provider}\" (known: {known}){}; model refs are \"<provider>/<model>\"; \
                 define others as [providers.{provider}] in config.toml",
                did_you_mean(provider, providers.keys().map(String::as_str))
            ),
        ));
    }
    Ok(())
}

/// `" — did you mean \"x\"?"` for the closest known name, or nothing.
fn did_you_mean<'n>(name: &str, known: impl Iterator<Item = &'n str>) -> String {
    if name.eq_ignore_ascii_case("anthropic") {
        return " — Anthropic's built-in provider is called \"claude\"".into();
    }
    known
        .map(|k| {
            (
                edit_distance(&name.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                k,
            )
        })
        .filter(|(d, k)| *d <= 2 && *d < k.len())
        .min()
        .map(|(_, k)| format!(" — did you mean \"{k}\"?"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

fn check_executor(src: &Source<'_>, at: &FieldPath, exec: &ExecutorConfig) -> Check {
    if let Err(why) = check_image_ref(&exec.image) {
        return Err(src.error(&at.key("image"), why));
    }
    check_range(
        src,
        &at.key("timeout_s"),
        exec.timeout_s,
        limits::EXEC_TIMEOUT_S,
        " seconds per block",
    )?;
    check_range(
        src,
        &at.key("memory_mb"),
        exec.memory_mb,
        limits::MEMORY_MB,
        " MiB; 512 is a good start",
    )?;
    check_range(
        src,
        &at.key("cpus"),
        exec.cpus,
        limits::CPUS,
        " CPUs, and not more than the Docker host has",
    )?;
    check_range(
        src,
        &at.key("pids"),
        exec.pids,
        limits::PIDS,
        " processes; an interpreter needs a few",
    )?;
    check_range(
        src,
        &at.key("output_limit_kb"),
        exec.output_limit_kb,
        limits::OUTPUT_LIMIT_KB,
        " KiB",
    )?;
    if let Some(host) = &exec.docker_host
        && let Err(why) = crate::executor::engine_host::check_host_syntax(host)
    {
        return Err(src.error(&at.key("docker_host"), why));
    }
    for (language, command) in &exec.interpreters {
        let here = at.key("interpreters").key(language);
        // Keys are the names fenced blocks get, so a block can find its interpreter.
        let named = crate::engine::codeblocks::normalize_language(language);
        if crate::engine::codeblocks::DISPLAY_ONLY.contains(&named.as_str()) {
            return Err(src.error(
                &here,
                format!(
                    "\"{named}\" blocks are shown, never run (a console block is a transcript of \
                     commands and their output); remove this entry"
                ),
            ));
        }
        if named != *language {
            return Err(src.error(
                &here,
                format!(
                    "blocks tagged {language:?} are called \"{named}\": write {named} = [...] so \
                     they find this interpreter"
                ),
            ));
        }
        if command.first().is_none_or(|c| c.trim().is_empty()) {
            return Err(src.error(&here, "must be a non-empty command, e.g. [\"node\"]"));
        }
    }
    check_workspace_fields(src, at, exec)
}

/// `workspace`, `workspace_mode` and `workspace_limit_mb` of `[executor]`.
fn check_workspace_fields(src: &Source<'_>, at: &FieldPath, exec: &ExecutorConfig) -> Check {
    if !(1..=MAX_WORKSPACE_LIMIT_MB).contains(&exec.workspace_limit_mb) {
        return Err(src.error(
            &at.key("workspace_limit_mb"),
            format!(
                "must be between 1 and {MAX_WORKSPACE_LIMIT_MB} MiB (got {}); the default is {DEFAULT_WORKSPACE_LIMIT_MB}",
                exec.workspace_limit_mb
            ),
        ));
    }
    if exec
        .workspace
        .as_ref()
        .is_some_and(|w| w.as_os_str().is_empty())
    {
        return Err(src.error(
            &at.key("workspace"),
            "must name a directory, e.g. \".\" or \"../my-project\"; remove it to work in the session's own directory",
        ));
    }
    if exec.workspace_mode.is_some() && exec.workspace.is_none() {
        return Err(src.error(
            &at.key("workspace_mode"),
            "applies to `workspace`, which is not set: add `workspace = \"DIR\"` or remove it",
        ));
    }
    Ok(())
}

/// Checks an image reference the way Docker reads one (`[host[:port]/]path[:tag][@digest]`), so
/// a typo is refused when the file loads instead of at the first block. `Err` says what is wrong.
///
/// ```
/// use proctor::config::check_image_ref;
/// assert!(check_image_ref("python:3.12-slim").is_ok());
/// assert!(check_image_ref("localhost:5000/team/sandbox:v2").is_ok());
/// assert!(check_image_ref("Python:3.12").is_err());
/// assert!(check_image_ref("python 3.12").is_err());
/// ```
pub fn check_image_ref(reference: &str) -> Result<(), String> {
    const EXAMPLE: &str = "e.g. \"python:3.12-slim\" or \"ghcr.io/org/sandbox:1.0\"";
    let bad = |why: &str| {
        Err(format!(
            "{:?} is not an image reference: {why}; {EXAMPLE}",
            crate::text_safety::excerpt(reference, 80)
        ))
    };
    if reference.is_empty() {
        return bad("it is empty");
    }
    if !reference.chars().all(|c| c.is_ascii_graphic()) {
        return bad("it may hold only ASCII letters, digits and punctuation, no spaces");
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (reference, None),
    };
    if let Some(d) = digest {
        let Some((algo, hex)) = d.split_once(':') else {
            return bad("a digest is ALGORITHM:HEX, e.g. @sha256:…");
        };
        let algo_ok = !algo.is_empty()
            && algo.starts_with(|c: char| c.is_ascii_alphabetic())
            && algo
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-_".contains(c));
        if !algo_ok || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return bad("a digest is ALGORITHM:HEX with at least 32 hex digits");
        }
    }
    let last_slash = rest.rfind('/');
    let (name, tag) = match rest.rfind(':') {
        Some(i) if last_slash.is_none_or(|s| i > s) => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if let Some(tag) = tag {
        let ok = (1..=128).contains(&tag.len())
            && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return bad(
                "a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
            );
        }
    }
    if name.is_empty() || name.len() > 255 {
        return bad("the name must be 1 to 255 characters");
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let first = parts[0];
    let is_host = parts.len() > 1
        && (first.contains('.')
            || first.contains(':')
            || first == "localhost"
            || first.chars().any(|c| c.is_ascii_uppercase()));
    if is_host {
        let (host, port) = match first.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (first, None),
        };
        let host_ok = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        let port_ok = port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        if !host_ok || !port_ok {
            return bad("the registry must be HOST or HOST:PORT");
        }
        parts.remove(0);
    }
    for part in parts {
        if !is_path_component(part) {
            return bad(
                "each part of the name is lowercase letters and digits, joined by '.', '_', '__' or '-'",
            );
        }
    }
    Ok(())
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or runs of `-` (Docker's path component).
fn is_path_component(part: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !part.starts_with(alnum) || !part.ends_with(alnum) {
        return false;
    }
    let mut separator = String::new();
    for c in part.chars() {
        if alnum(c) {
            let ok = separator.is_empty()
                || separator == "."
                || separator == "_"
                || separator == "__"
                || separator.chars().all(|s| s == '-');
            if !ok {
                return false;
            }
            separator.clear();
        } else if ".-_".contains(c) {
            separator.push(c);
        } else {
            return false;
        }
    }
    true
}

/// Checks a team that comes from a saved session (resume) with the same rules as a team file;
/// `Err` is `field: what is wrong`.
pub fn check_recorded_team(team: &TeamConfig) -> Result<(), String> {
    let source = Source::new(Path::new("(recorded team)"), "");
    check_team(&source, team, None).map_err(|e| match e {
        ConfigError::Invalid { field, message, .. } => format!("{field}: {message}"),
        ConfigError::Read { .. } => e.to_string(),
    })
}

fn check_config(src: &Source<'_>, config: &Config) -> Check {
    let providers = FieldPath::root().key("providers");
    for (name, provider) in &config.providers {
        let at = providers.key(name);
        if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
            return Err(src.error(
                &at,
                format!("provider name {name:?} must be non-empty, without '/' or spaces"),
            ));
        }
        check_provider(src, &at, provider)?;
    }
    let pricing = FieldPath::root().key("pricing");
    for (model_ref, price) in &config.pricing {
        let at = pricing.key(model_ref);
        if split_model_ref(model_ref).is_none() {
            return Err(src.error(
                &at,
                format!("{model_ref:?} is not \"<provider>/<model>\" (e.g. [pricing.\"openai/gpt-4o-mini\"])"),
            ));
        }
        let prices = [
            ("input_per_mtok", Some(price.input_per_mtok)),
            ("output_per_mtok", Some(price.output_per_mtok)),
            ("cached_input_per_mtok", price.cached_input_per_mtok),
            ("cache_write_per_mtok", price.cache_write_per_mtok),
        ];
        for (field, value) in prices {
            if let Some(v) = value {
                check_range(
                    src,
                    &at.key(field),
                    v,
                    limits::PRICE_PER_MTOK,
                    " USD per million tokens",
                )?;
            }
        }
    }
    Ok(())
}

fn check_provider(src: &Source<'_>, at: &FieldPath, provider: &ProviderConfig) -> Check {
    match provider.kind {
        ProviderKind::Azure if provider.base_url.is_none() => {
            return Err(src.error(
                &at.key("base_url"),
                "kind \"azure\" needs base_url = \"https://<resource>.openai.azure.com\"; model names are deployment names",
            ));
        }
        ProviderKind::Azure
        | ProviderKind::Openai
        | ProviderKind::Anthropic
        | ProviderKind::Scripted => {}
    }
    if let Some(url) = &provider.base_url {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
            return Err(src.error(
                &at.key("base_url"),
                format!("base_url {url:?} must be an http:// or https:// URL"),
            ));
        }
    }
    if let Some(var) = &provider.api_key_env {
        if looks_like_api_key(var) {
            // Never echo the value: it is probably a secret.
            return Err(src.error(
                &at.key("api_key_env"),
                "this looks like an API key, not the name of an environment variable; keys go in the \
                 environment, never in a file: export the key (e.g. OPENAI_API_KEY=...) and write \
                 api_key_env = \"OPENAI_API_KEY\"; if this was a real key, revoke it",
            ));
        }
        if var.is_empty()
            || var.starts_with(|c: char| c.is_ascii_digit())
            || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(src.error(
                &at.key("api_key_env"),
                "must be the name of an environment variable (letters, digits, '_'), e.g. \"OPENAI_API_KEY\"",
            ));
        }
    }
    if let Some(s) = provider.idle_timeout_s {
        check_range(
            src,
            &at.key("idle_timeout_s"),
            s,
            limits::IDLE_TIMEOUT_S,
            " seconds",
        )?;
    }
    if let Some(s) = provider.connect_timeout_s {
        check_range(
            src,
            &at.key("connect_timeout_s"),
            s,
            limits::CONNECT_TIMEOUT_S,
            " seconds",
        )?;
    }
    if let Some(n) = provider.max_retries {
        check_range(
            src,
            &at.key("max_retries"),
            n,
            limits::MAX_RETRIES,
            " retries",
        )?;
    }
    Ok(())
}

/// Whether an `api_key_env` value is more likely a key than a variable name.
fn looks_like_api_key(value: &str) -> bool {
    let v = value.trim();
    let lower = v.to_ascii_lowercase();
    let key_prefixes = [
        "sk-", "sk_", "sk-ant-", "pk-", "xai-", "gsk_", "aiza", "bearer ",
    ];
    if key_prefixes.iter().any(|p| lower.starts_with(p)) {
        return true;
    }
    let has_lower = v.chars().any(|c| c.is_ascii_lowercase());
    let has_upper = v.chars().any(|c| c.is_ascii_uppercase());
    let has_digit = v.chars().any(|c| c.is_ascii_digit());
    // Variable names are short, or SHOUTY_WITH_UNDERSCORES; keys are long random runs.
    (v.len() >= 24 && !v.contains('_')) || (v.len() >= 32 && has_lower && has_upper && has_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn team(text: &str) -> Result<TeamConfig, ConfigError> {
        parse_team(Path::new("teams/x.toml"), text)
    }

    fn checked(text: &str, config: &Config) -> Result<TeamConfig, ConfigError> {
        let path = Path::new("teams/x.toml");
        let t = parse_team(path, text)?;
        validate_team(&t, path, text, config)?;
        Ok(t)
    }

    #[test]
    fn unknown_provider_error_reads_file_line_field_and_the_fix() {
        let text = "name = \"x\"\n\n[[agents]]\nname = \"a\"\nmodel = \"openai/gpt-4o\"\n\n[[agents]]\nname = \"b\"\nmodel = \"opnai/gpt-4o-mini\"\n";
        let config = Config {
            providers: BTreeMap::from([(
                "openai".into(),
                ProviderConfig::new(ProviderKind::Openai),
            )]),
            ..Config::default()
        };
        let err = checked(text, &config).unwrap_err();
        assert_eq!(
            err.to_string(),
            "teams/x.toml:9: agents[1].model: unknown provider \"opnai\" (known: claude, openai, \
             scripted) — did you mean \"openai\"?; model refs are \"<provider>/<model>\"; define \
             others as [providers.opnai] in config.toml"
        );
        assert_eq!(err.line(), Some(9));
        assert_eq!(err.field(), Some("agents[1].model"));
    }

    #[test]
    fn parse_team_alone_does_not_need_providers() {
        let t = team("name = \"x\"\n[[agents]]\nname = \"a\"\nmodel = \"nowhere/m\"\n").unwrap();
        assert_eq!(t.agents[0].model, "nowhere/m");
        let err = checked(
            "name = \"x\"\n[[agents]]\nname = \"a\"\nmodel = \"nowhere/m\"\n",
            &Config::default(),
        )
        .unwrap_err();
        assert_eq!(err.line(), Some(4));
    }

    #[test]
    fn scripted_provider_is_always_known() {
        let text = "name = \"x\"\n[[agents]]\nname = \"a\"\nmodel = \"scripted/demo\"\n";
        checked(text, &Config::default()).unwrap();
    }

    #[test]
    fn user_providers_override_builtins_of_the_same_name() {
        let config = parse_config(
            Path::new("config.toml"),
            "[providers.openai]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9999/v1\"\n",
        )
        .unwrap();
        let all = config.effective_providers();
        assert_eq!(
            all["openai"].base_url.as_deref(),
            Some("http://127.0.0.1:9999/v1")
        );
        assert_eq!(all["openai"].api_key_env, None);
        assert_eq!(
            all["claude"].api_key_env.as_deref(),
            Some("ANTHROPIC_API_KEY")
        );
        assert_eq!(all["claude"].kind, ProviderKind::Anthropic);
        assert!(
            !all.contains_key("anthropic"),
            "one name per provider keeps prices unambiguous"
        );
        assert_eq!(
            builtin_providers()["openai"].api_key_env.as_deref(),
            Some("OPENAI_API_KEY")
        );
        assert_eq!(all[SCRIPTED_PROVIDER].kind, ProviderKind::Scripted);
    }

    #[test]
    fn base_url_defaults_per_kind() {
        assert_eq!(
            ProviderConfig::new(ProviderKind::Openai).base_url_or_default(),
            Some("https://api.openai.com/v1")
        );
        assert_eq!(
            ProviderConfig::new(ProviderKind::Anthropic).base_url_or_default(),
            Some("https://api.anthropic.com")
        );
        assert_eq!(
            ProviderConfig::new(ProviderKind::Azure).base_url_or_default(),
            None
        );
    }

    #[test]
    fn model_refs_split_at_the_first_slash() {
        assert_eq!(split_model_ref("openai/gpt-4o"), Some(("openai", "gpt-4o")));
        assert_eq!(
            split_model_ref("router/meta-llama/llama-3.1-8b"),
            Some(("router", "meta-llama/llama-3.1-8b"))
        );
        assert_eq!(split_model_ref("gpt-4o"), None);
        assert_eq!(split_model_ref("/gpt-4o"), None);
        assert_eq!(split_model_ref("openai/"), None);
    }

    #[test]
    fn defaults_fill_every_omitted_table() {
        let t =
            team("name = \"x\"\n[[agents]]\nname = \"a\"\nmodel = \"openai/gpt-4o\"\n").unwrap();
        assert_eq!(t.orchestration, Orchestration::default());
        assert_eq!(t.orchestration.max_rounds, 20);
        assert_eq!(t.termination.text.as_deref(), Some("TERMINATE"));
        assert_eq!(t.termination.max_consecutive_auto_replies, 10);
        assert_eq!(t.termination.timeout_s, 1800);
        assert_eq!(t.budget.usd, None);
        assert_eq!(t.budget.warn_at, 0.8);
        assert_eq!(t.executor, ExecutorConfig::default());
        assert_eq!(t.executor.image, DEFAULT_IMAGE);
        assert_eq!(
            (t.executor.memory_mb, t.executor.pids, t.executor.timeout_s),
            (512, 256, 60)
        );
        assert!(!t.executor.network);
        assert!(!t.agents[0].can_execute);
    }

    #[test]
    fn empty_termination_text_turns_text_termination_off() {
        let t = team("name = \"x\"\n[[agents]]\nname = \"a\"\nmodel = \"openai/gpt-4o\"\n[termination]\ntext = \"\"\n")
            .unwrap();
        assert_eq!(t.termination.text, None);
    }

    #[test]
    fn default_team_is_a_python_coder_and_a_reviewer_on_openai() {
        let t = default_team();
        let names: Vec<&str> = t.agents.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["coder", "reviewer"]);
        assert!(t.agents.iter().all(|a| a.model == "openai/gpt-4o-mini"));
        assert!(t.agents[0].can_execute && !t.agents[1].can_execute);
        assert!(t.agents[0].system.contains("Python"));
        validate_team(
            &t,
            Path::new("teams/default.toml"),
            DEFAULT_TEAM_TOML,
            &Config::default(),
        )
        .unwrap();
    }

    #[test]
    fn demo_team_runs_on_the_scripted_model_without_config() {
        let t = demo_team();
        let names: Vec<&str> = t.agents.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["planner", "coder", "reviewer"]);
        assert!(t.agents.iter().all(|a| a.model == "scripted/demo"));
        assert_eq!(
            t.orchestration.speaker_selection,
            SpeakerSelection::RoundRobin
        );
        assert_eq!(t.executor.image, DEFAULT_IMAGE);
        validate_team(
            &t,
            Path::new("teams/demo.toml"),
            DEMO_TEAM_TOML,
            &Config::default(),
        )
        .unwrap();
    }

    #[test]
    fn api_key_in_a_file_is_refused_without_echoing_it() {
        // Key-shaped, built at run time so no key-like literal sits in the source.
        let key = ["sk", "ant", "api03", "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"].join("-");
        let text = format!("[providers.claude]\nkind = \"anthropic\"\napi_key_env = \"{key}\"\n");
        let err = parse_config(Path::new("config.toml"), &text).unwrap_err();
        let shown = format!("{err} / {err:?}");
        assert!(!shown.contains("AbCdEf"), "key leaked: {shown}");
        assert!(
            shown.contains("config.toml:3: providers.claude.api_key_env:"),
            "{shown}"
        );
        assert!(shown.contains("environment"), "{shown}");
    }

    #[test]
    fn variable_names_are_not_mistaken_for_keys() {
        for name in [
            "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
            "AZURE_OPENAI_API_KEY",
            "MY_LLM_KEY_2",
            "together_api_key",
        ] {
            assert!(!looks_like_api_key(name), "{name}");
        }
        for key in [
            "sk-abc",
            "sk-proj-0123456789abcdef",
            "gsk_abc123",
            "a8F3kd93JdkQ02mZxP4vLw7sT1nB6cYe",
            "0123456789abcdef0123456789abcdef",
        ] {
            assert!(looks_like_api_key(key), "{key}");
        }
    }

    #[test]
    fn missing_config_file_gives_defaults_and_unreadable_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            load_config(&dir.path().join("nope.toml")).unwrap(),
            Config::default()
        );
        let err = load_config(dir.path()).unwrap_err(); // a directory cannot be read as a file
        assert!(
            err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn default_paths_name_proctor() {
        if let Some(p) = config_path_default() {
            assert!(p.ends_with("config.toml"), "{}", p.display());
            assert!(
                p.display().to_string().contains("proctor"),
                "{}",
                p.display()
            );
        }
        if let Some(d) = data_dir_default() {
            assert!(
                d.display().to_string().contains("proctor"),
                "{}",
                d.display()
            );
        }
    }

    #[test]
    fn field_paths_quote_keys_that_are_not_bare() {
        let p = FieldPath::root()
            .key("pricing")
            .key("openai/gpt-4o")
            .key("input_per_mtok");
        assert_eq!(p.to_string(), "pricing.\"openai/gpt-4o\".input_per_mtok");
        assert_eq!(
            FieldPath::root()
                .key("agents")
                .index(2)
                .key("name")
                .to_string(),
            "agents[2].name"
        );
    }

    #[test]
    fn dotted_keys_and_inline_tables_get_the_right_line() {
        let text = "name = \"x\"\nagents = [\n  { name = \"a\", model = \"openai/m\" },\n  { name = \"b\", model = \"m\" },\n]\n";
        let err = team(text).unwrap_err();
        assert_eq!(
            (err.line(), err.field()),
            (Some(4), Some("agents[1].model"))
        );

        let text =
            "name = \"x\"\n[[agents]]\nname = \"a\"\nmodel = \"openai/m\"\n\nexecutor.pids = 2\n";
        // `executor.pids` after [[agents]] belongs to the agent: serde names the unknown field there.
        let err = team(text).unwrap_err();
        assert_eq!(
            (err.line(), err.field()),
            (Some(6), Some("agents[0].executor"))
        );
    }

    #[test]
    fn unknown_provider_suggests_the_closest_name() {
        let text = |m: &str| format!("name = \"x\"\n[[agents]]\nname = \"a\"\nmodel = \"{m}\"\n");
        let msg = |m: &str| {
            checked(&text(m), &Config::default())
                .unwrap_err()
                .to_string()
        };
        assert!(
            msg("claud/x").contains("did you mean \"claude\"?"),
            "{}",
            msg("claud/x")
        );
        assert!(msg("anthropic/claude-sonnet-4-5").contains("called \"claude\""));
        assert!(
            !msg("gemini/flash").contains("did you mean"),
            "{}",
            msg("gemini/flash")
        );
    }

    #[test]
    fn default_team_path_resolves_home_and_relative_paths() {
        let cfg = |p: &str| Config {
            default_team: Some(PathBuf::from(p)),
            ..Config::default()
        };
        let file = Path::new("/etc/proctor/config.toml");
        assert_eq!(
            cfg("teams/squad.toml").default_team_path(file),
            Some(PathBuf::from("/etc/proctor/teams/squad.toml"))
        );
        assert_eq!(
            cfg("/srv/t.toml").default_team_path(file),
            Some(PathBuf::from("/srv/t.toml"))
        );
        if let Some(home) = directories::BaseDirs::new() {
            assert_eq!(
                cfg("~/t.toml").default_team_path(file),
                Some(home.home_dir().join("t.toml"))
            );
        }
        assert_eq!(Config::default().default_team_path(file), None);
    }

    #[test]
    fn image_references_are_read_as_docker_reads_them() {
        for ok in [
            "python:3.12-slim",
            "proctor-sandbox:bookworm",
            "ubuntu",
            "library/python",
            "ghcr.io/org/team/sandbox:1.0",
            "localhost:5000/sandbox",
            "localhost/sandbox:v_2",
            "registry.example.com:443/a__b/c-d.e:latest",
            "python@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "python:3.12@sha256:0123456789abcdef0123456789abcdef",
        ] {
            assert!(
                check_image_ref(ok).is_ok(),
                "{ok}: {:?}",
                check_image_ref(ok)
            );
        }
        for bad in [
            "",
            "Python",
            "python 3",
            "python:",
            "python:-x",
            "a//b",
            "/python",
            "python/",
            "py..thon",
            "py___thon",
            "python@sha256:abc",
            "python@:0123456789abcdef0123456789abcdef",
            "reg:xx/img",
            "-python",
            "pyth\u{202E}on",
            "python\n",
        ] {
            assert!(check_image_ref(bad).is_err(), "{bad:?} passed");
        }
        let long = format!("a:{}", "b".repeat(129));
        assert!(check_image_ref(&long).is_err());
    }

    #[test]
    fn a_recorded_team_is_checked_like_a_file() {
        let mut t = default_team();
        assert_eq!(check_recorded_team(&t), Ok(()));
        t.executor.memory_mb = u64::MAX / 2;
        let e = check_recorded_team(&t).unwrap_err();
        assert!(e.starts_with("executor.memory_mb: must be from 16"), "{e}");
    }

    #[test]
    fn executor_numbers_are_clamped_where_they_are_used() {
        let huge = ExecutorConfig {
            timeout_s: u64::MAX,
            output_limit_kb: u64::MAX,
            ..ExecutorConfig::default()
        };
        assert_eq!(huge.block_timeout().as_secs(), 86_400);
        assert_eq!(huge.output_limit(), 65_536);
        let zero = ExecutorConfig {
            timeout_s: 0,
            output_limit_kb: 0,
            ..ExecutorConfig::default()
        };
        assert_eq!(zero.block_timeout().as_secs(), 1);
        assert_eq!(zero.output_limit(), 1);
    }
}
