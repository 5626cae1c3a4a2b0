//! Builds the `ChatModel` for a model ref ("<provider>/<model>") from config.toml's providers.

use std::sync::Arc;

use super::anthropic::AnthropicModel;
use super::openai::OpenAiModel;
use super::{ChatModel, ProviderError};
use crate::config::{Config, ProviderConfig, ProviderKind};

/// Splits a model ref at its first `/`: `("openai", "gpt-4o-mini")`; model names may contain
/// further slashes (`"vllm/meta-llama/Llama-3.1-8B"`).
pub fn split_model_ref(model_ref: &str) -> Result<(&str, &str), ProviderError> {
    match model_ref.split_once('/') {
        Some((p, m)) if !p.is_empty() && !m.is_empty() => Ok((p, m)),
        Some(_) | None => Err(ProviderError::Config(format!(
            "model `{model_ref}` must be written as \"<provider>/<model>\", e.g. \"openai/gpt-4o-mini\""
        ))),
    }
}

/// The HTTP client for `model` of `[providers.<provider_name>]`. Reads the API key from the env
/// var the config names now; a missing key is `ProviderError::MissingKey` naming that variable.
/// `kind = "scripted"` is not built here (the engine builds the scripted model itself).
pub fn build_model(
    provider_name: &str,
    provider: &ProviderConfig,
    model: &str,
) -> Result<Arc<dyn ChatModel>, ProviderError> {
    match provider.kind {
        ProviderKind::Openai | ProviderKind::Azure => Ok(Arc::new(OpenAiModel::from_config(
            provider_name,
            provider,
            model,
        )?)),
        ProviderKind::Anthropic => Ok(Arc::new(AnthropicModel::from_config(
            provider_name,
            provider,
            model,
        )?)),
        ProviderKind::Scripted => Err(ProviderError::Config(format!(
            "[providers.{provider_name}] is scripted; the scripted model is built by the engine"
        ))),
    }
}

/// [`build_model`] for a model ref, looking its provider up in `config`.
pub fn build_model_ref(
    config: &Config,
    model_ref: &str,
) -> Result<Arc<dyn ChatModel>, ProviderError> {
    let (provider_name, model) = split_model_ref(model_ref)?;
    let Some(provider) = config.providers.get(provider_name) else {
        let known: Vec<&str> = config.providers.keys().map(String::as_str).collect();
        return Err(ProviderError::Config(format!(
            "model `{model_ref}`: no provider `{provider_name}` in config.toml (configured: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    };
    build_model(provider_name, provider, model)
}
