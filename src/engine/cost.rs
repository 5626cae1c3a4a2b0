//! Usage, prices and budgets: what each call cost, per agent, per model and per session.

use std::collections::BTreeMap;

use crate::config::PriceConfig;
use crate::provider::TokenUsage;

/// Prices by `provider/model`: built-in table patched by `[pricing]` from config.toml.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    overrides: BTreeMap<String, PriceConfig>,
    free_providers: Vec<String>,
}

impl PriceTable {
    /// Built-in prices plus config overrides; `free_providers` price every model of theirs at 0.
    pub fn new(overrides: BTreeMap<String, PriceConfig>, free_providers: Vec<String>) -> Self {
        Self { overrides, free_providers }
    }

    /// Price of a model, `None` when unpriced.
    pub fn lookup(&self, model_ref: &str) -> Option<PriceConfig> {
        if let Some(p) = self.overrides.get(model_ref) {
            return Some(*p);
        }
        let provider = model_ref.split('/').next().unwrap_or_default();
        if self.free_providers.iter().any(|f| f == provider) {
            return Some(PriceConfig {
                input_per_mtok: 0.0,
                output_per_mtok: 0.0,
                cached_input_per_mtok: None,
                cache_write_per_mtok: None,
            });
        }
        None
    }

    /// Cost of one call in USD, `None` when unpriced.
    pub fn cost(&self, model_ref: &str, usage: &TokenUsage) -> Option<f64> {
        let p = self.lookup(model_ref)?;
        let cached = usage.cached_tokens.min(usage.input_tokens);
        let uncached = usage.input_tokens - cached;
        let cached_price = p.cached_input_per_mtok.unwrap_or(p.input_per_mtok);
        Some(
            (uncached as f64 * p.input_per_mtok
                + cached as f64 * cached_price
                + usage.output_tokens as f64 * p.output_per_mtok)
                / 1_000_000.0,
        )
    }

    /// Worst-case cost of a call before it starts: known input, output bounded by `max_output`.
    pub fn project(&self, model_ref: &str, input_tokens: u64, max_output: u64) -> Option<f64> {
        self.cost(
            model_ref,
            &TokenUsage { input_tokens, output_tokens: max_output, ..Default::default() },
        )
    }
}

/// Rough token count of a text, for projections and for servers that report no usage.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}
