//! Usage, prices and budgets: what each call cost, per agent, per model and per session.
//!
//! Prices come from a built-in table for the OpenAI and Anthropic models people pick most,
//! patched by `[pricing."provider/model"]` from config.toml. A model with no price is *unpriced*
//! (`None`, shown as `usd: null`), never $0; only a provider declared `free` costs nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{Config, PriceConfig};
use crate::provider::{ChatRequest, TokenUsage};

/// One built-in price row: model name (without provider), USD per million input, cached input,
/// output and cache-write tokens.
type PriceRow = (&'static str, f64, f64, f64, Option<f64>);

/// Built-in prices, USD per million tokens, as published by OpenAI and Anthropic (checked
/// 2026-11-21). `[pricing]` in config.toml overrides any row. Models with prompt-length price
/// tiers (e.g. claude-haiku-5-5) are left out on purpose: a single price would be wrong.
const BUILTIN: &[PriceRow] = &[
    // OpenAI: (model, input, cached input, output, -)
    ("gpt-5.5", 5.00, 0.50, 30.00, None),
    ("gpt-5.4", 2.50, 0.25, 15.00, None),
    ("gpt-5.4-mini", 0.75, 0.075, 4.50, None),
    ("gpt-5.4-nano", 0.20, 0.02, 1.25, None),
    ("gpt-5", 1.25, 0.125, 10.00, None),
    ("gpt-5-mini", 0.25, 0.025, 2.00, None),
    ("gpt-5-nano", 0.05, 0.005, 0.40, None),
    ("gpt-4.1", 2.00, 0.50, 8.00, None),
    ("gpt-4.1-mini", 0.40, 0.10, 1.60, None),
    ("gpt-4.1-nano", 0.10, 0.025, 0.40, None),
    ("gpt-4o", 2.50, 1.25, 10.00, None),
    ("gpt-4o-mini", 0.15, 0.075, 0.60, None),
    ("o3", 2.00, 0.50, 8.00, None),
    ("o4-mini", 1.10, 0.275, 4.40, None),
    // Anthropic: (model, input, cache read, output, 5-minute cache write)
    ("claude-opus-5-5", 4.00, 0.20, 20.00, Some(5.00)),
    ("claude-opus-5", 5.00, 0.50, 25.00, Some(6.25)),
    ("claude-opus-4-8", 5.00, 0.50, 25.00, Some(6.25)),
    ("claude-opus-4-7", 5.00, 0.50, 25.00, Some(6.25)),
    ("claude-opus-4-6", 5.00, 0.50, 25.00, Some(6.25)),
    ("claude-opus-4-5", 5.00, 0.50, 25.00, Some(6.25)),
    ("claude-opus-4-1", 15.00, 1.50, 75.00, Some(18.75)),
    ("claude-opus-4-0", 15.00, 1.50, 75.00, Some(18.75)),
    ("claude-opus-4", 15.00, 1.50, 75.00, Some(18.75)),
    ("claude-sonnet-5-5", 2.00, 0.10, 10.00, Some(2.50)),
    ("claude-sonnet-5", 2.00, 0.20, 10.00, Some(2.50)),
    ("claude-sonnet-4-6", 3.00, 0.30, 15.00, Some(3.75)),
    ("claude-sonnet-4-5", 3.00, 0.30, 15.00, Some(3.75)),
    ("claude-sonnet-4-0", 3.00, 0.30, 15.00, Some(3.75)),
    ("claude-sonnet-4", 3.00, 0.30, 15.00, Some(3.75)),
    ("claude-haiku-4-5", 1.00, 0.10, 5.00, Some(1.25)),
];

/// The model `proctor demo` runs on. Its price (set by the binary, like gpt-4o-mini's) is a demo
/// price: shown so the cost meter moves, never billed. The transcript, the console and exports
/// say so wherever its costs appear.
pub const DEMO_MODEL: &str = "scripted/demo";

/// Whether costs of `model_ref` are demo prices (see [`DEMO_MODEL`]).
pub fn is_demo_priced(model_ref: &str) -> bool {
    model_ref == DEMO_MODEL
}

/// Where a model's price came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceSource {
    /// `[pricing."provider/model"]` in config.toml.
    Config,
    /// The provider is declared `free` (a local server).
    Free,
    /// proctor's built-in table.
    BuiltIn,
    /// No price known: costs are shown as unknown, never as $0.
    Unpriced,
}

/// Prices by `provider/model`: built-in table patched by `[pricing]` from config.toml.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    overrides: BTreeMap<String, PriceConfig>,
    free_providers: Vec<String>,
}

impl PriceTable {
    /// Built-in prices plus config overrides; `free_providers` price every model of theirs at 0.
    pub fn new(overrides: BTreeMap<String, PriceConfig>, free_providers: Vec<String>) -> Self {
        Self {
            overrides,
            free_providers,
        }
    }

    /// The table config.toml describes: `[pricing]` overrides, and every provider with
    /// `free = true` priced at 0.
    pub fn from_config(config: &Config) -> Self {
        Self::new(config.pricing.clone(), config.free_providers())
    }

    /// Price of a model, `None` when unpriced.
    pub fn lookup(&self, model_ref: &str) -> Option<PriceConfig> {
        self.lookup_with_source(model_ref).0
    }

    /// Where the price of `model_ref` comes from (for `proctor doctor`'s pricing coverage).
    pub fn source(&self, model_ref: &str) -> PriceSource {
        self.lookup_with_source(model_ref).1
    }

    fn lookup_with_source(&self, model_ref: &str) -> (Option<PriceConfig>, PriceSource) {
        if let Some(p) = self.overrides.get(model_ref) {
            return (Some(*p), PriceSource::Config);
        }
        let (provider, model) =
            crate::config::split_model_ref(model_ref).unwrap_or(("", model_ref));
        if self.free_providers.iter().any(|f| f == provider) {
            let free = PriceConfig {
                input_per_mtok: 0.0,
                output_per_mtok: 0.0,
                cached_input_per_mtok: None,
                cache_write_per_mtok: None,
            };
            return (Some(free), PriceSource::Free);
        }
        match builtin_price(model) {
            Some(p) => (Some(p), PriceSource::BuiltIn),
            None => (None, PriceSource::Unpriced),
        }
    }

    /// Cost of one call in USD, `None` when unpriced. Cached input is billed at the cached
    /// price and cache writes at the cache-write price (each defaulting to the input price).
    pub fn cost(&self, model_ref: &str, usage: &TokenUsage) -> Option<f64> {
        let p = self.lookup(model_ref)?;
        let cached = usage.cached_tokens.min(usage.input_tokens);
        let written = usage.cache_creation_tokens.min(usage.input_tokens - cached);
        let uncached = usage.input_tokens - cached - written;
        let cached_price = p.cached_input_per_mtok.unwrap_or(p.input_per_mtok);
        let write_price = p.cache_write_per_mtok.unwrap_or(p.input_per_mtok);
        Some(
            (uncached as f64 * p.input_per_mtok
                + cached as f64 * cached_price
                + written as f64 * write_price
                + usage.output_tokens as f64 * p.output_per_mtok)
                / 1_000_000.0,
        )
    }

    /// Worst-case cost of a call before it starts: known input, output bounded by `max_output`.
    pub fn project(&self, model_ref: &str, input_tokens: u64, max_output: u64) -> Option<f64> {
        self.cost(
            model_ref,
            &TokenUsage {
                input_tokens,
                output_tokens: max_output,
                ..Default::default()
            },
        )
    }

    /// [`PriceTable::project`] for a request: its prompt counted with the tokenizer, output
    /// bounded by its `max_tokens` (or `default_max_output` when it sets none).
    pub fn project_request(
        &self,
        model_ref: &str,
        request: &ChatRequest,
        default_max_output: u64,
    ) -> Option<f64> {
        let max_output = request
            .max_tokens
            .map(u64::from)
            .unwrap_or(default_max_output);
        self.project(model_ref, estimate_request_tokens(request), max_output)
    }
}

/// Built-in price of a model name; a dated snapshot (`-2025-04-14`, `-20250929`) or `-latest`
/// suffix resolves to its base model.
fn builtin_price(model: &str) -> Option<PriceConfig> {
    let row = BUILTIN.iter().find(|r| r.0 == model).or_else(|| {
        BUILTIN
            .iter()
            .filter(|r| model.strip_prefix(r.0).is_some_and(is_snapshot_suffix))
            .max_by_key(|r| r.0.len())
    })?;
    Some(PriceConfig {
        input_per_mtok: row.1,
        output_per_mtok: row.3,
        cached_input_per_mtok: Some(row.2),
        cache_write_per_mtok: row.4,
    })
}

/// `-latest`, `-YYYYMMDD` or `-YYYY-MM-DD`.
fn is_snapshot_suffix(rest: &str) -> bool {
    let Some(s) = rest.strip_prefix('-') else {
        return false;
    };
    if s == "latest" {
        return true;
    }
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    let shape_ok = match s.len() {
        8 => digits == 8,
        10 => digits == 8 && s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-',
        _ => false,
    };
    shape_ok && s.starts_with("20")
}

/// Token count of a text (o200k_base tokenizer; an estimate for non-OpenAI models), for
/// projections and for servers that report no usage.
pub fn estimate_tokens(text: &str) -> u64 {
    crate::provider::tokens::count_tokens(text)
}

/// Prompt tokens of a whole request (system prompt, messages and their framing).
pub fn estimate_request_tokens(request: &ChatRequest) -> u64 {
    crate::provider::tokens::count_request_tokens(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64, cached: u64, written: u64) -> TokenUsage {
        TokenUsage {
            input_tokens: input,
            output_tokens: output,
            cached_tokens: cached,
            cache_creation_tokens: written,
        }
    }

    #[test]
    fn builtin_prices_and_snapshots() {
        let t = PriceTable::default();
        assert_eq!(t.source("openai/gpt-4o-mini"), PriceSource::BuiltIn);
        assert_eq!(
            t.lookup("openai/gpt-4o-mini-2024-07-18"),
            t.lookup("openai/gpt-4o-mini")
        );
        assert_eq!(
            t.lookup("claude/claude-sonnet-4-5-20250929"),
            t.lookup("claude/claude-sonnet-4-5")
        );
        // gpt-4o-mini must not fall back to gpt-4o, nor a fine-tune to its base.
        assert_ne!(t.lookup("openai/gpt-4o-mini"), t.lookup("openai/gpt-4o"));
        assert_eq!(t.lookup("openai/gpt-4o-mini-custom"), None);
        assert_eq!(t.source("ollama/llama3.2"), PriceSource::Unpriced);
        assert_eq!(t.cost("ollama/llama3.2", &usage(10, 10, 0, 0)), None);
    }

    #[test]
    fn overrides_and_free_providers() {
        let mut o = BTreeMap::new();
        o.insert(
            "openai/gpt-4o-mini".to_string(),
            PriceConfig {
                input_per_mtok: 1.0,
                output_per_mtok: 2.0,
                cached_input_per_mtok: None,
                cache_write_per_mtok: None,
            },
        );
        let t = PriceTable::new(o, vec!["ollama".into()]);
        assert_eq!(t.source("openai/gpt-4o-mini"), PriceSource::Config);
        assert_eq!(
            t.cost("openai/gpt-4o-mini", &usage(1_000_000, 1_000_000, 0, 0)),
            Some(3.0)
        );
        assert_eq!(t.cost("ollama/llama3.2", &usage(500, 500, 0, 0)), Some(0.0));
    }

    #[test]
    fn config_free_providers_cost_nothing_and_pricing_overrides() {
        let text = r#"
[providers.ollama]
kind = "openai"
base_url = "http://127.0.0.1:11434/v1"
free = true
[providers.openai]
kind = "openai"
[pricing."openai/my-finetune"]
input_per_mtok = 1.0
output_per_mtok = 4.0
"#;
        let config = crate::config::parse_config(std::path::Path::new("config.toml"), text)
            .unwrap_or_else(|e| panic!("{e}"));
        let t = PriceTable::from_config(&config);
        assert_eq!(t.source("ollama/qwen2.5-coder"), PriceSource::Free);
        assert_eq!(
            t.cost("ollama/qwen2.5-coder", &usage(9000, 9000, 0, 0)),
            Some(0.0)
        );
        assert_eq!(
            t.cost("openai/my-finetune", &usage(1_000_000, 250_000, 0, 0)),
            Some(2.0)
        );
        assert_eq!(t.cost("openai/unknown-model", &usage(1, 1, 0, 0)), None);
    }

    #[test]
    fn cached_and_cache_write_tokens_use_their_prices() {
        let t = PriceTable::default();
        // claude-sonnet-4-5: input 3, cache read 0.30, write 3.75, output 15 per MTok.
        let c = t.cost(
            "claude/claude-sonnet-4-5",
            &usage(4_000_000, 1_000_000, 2_000_000, 1_000_000),
        );
        let expected = 1.0 * 3.0 + 2.0 * 0.30 + 1.0 * 3.75 + 1.0 * 15.0;
        assert!((c.unwrap_or(f64::NAN) - expected).abs() < 1e-9, "{c:?}");
    }
}
