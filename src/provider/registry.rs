//! Builds the `ChatModel` for a model ref (`"<provider>/<model>"`) from config.toml's providers.

use std::sync::Arc;

use super::anthropic::AnthropicModel;
use super::openai::OpenAiModel;
use super::{ChatModel, ProviderError};
use crate::config::{Config, ProviderConfig, ProviderKind};

/// Splits a model ref at its first `/`: `("openai", "gpt-4o-mini")`; model names may contain
/// further slashes (`"vllm/meta-llama/Llama-3.1-8B"`).
pub fn split_model_ref(model_ref: &str) -> Result<(&str, &str), ProviderError> {
    crate::config::split_model_ref(model_ref).ok_or_else(|| {
        ProviderError::Config(format!(
            "model `{model_ref}` must be written as \"<provider>/<model>\", e.g. \"openai/gpt-4o-mini\""
        ))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kind: ProviderKind, base_url: Option<&str>) -> ProviderConfig {
        ProviderConfig {
            base_url: base_url.map(str::to_string),
            ..ProviderConfig::new(kind)
        }
    }

    #[test]
    fn model_refs_split_at_the_first_slash() {
        assert_eq!(
            split_model_ref("vllm/meta-llama/Llama-3.1-8B").ok(),
            Some(("vllm", "meta-llama/Llama-3.1-8B"))
        );
        assert!(split_model_ref("gpt-4o").is_err());
        assert!(split_model_ref("/gpt-4o").is_err());
    }

    #[test]
    fn config_mistakes_are_reported_not_built() {
        let err = build_model("az", &cfg(ProviderKind::Azure, None), "dep")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("base_url")));
        let err = build_model("s", &cfg(ProviderKind::Scripted, None), "m").err();
        assert!(matches!(err, Some(ProviderError::Config(_))));
        let err = build_model("l", &cfg(ProviderKind::Openai, Some("not a url")), "m")
            .err()
            .map(|e| e.to_string());
        assert!(
            err.is_some_and(|e| e.contains("not a valid URL")),
            "bad base_url"
        );
        let config = Config::default();
        let err = build_model_ref(&config, "nope/m")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("no provider `nope`")));
    }

    #[test]
    fn a_local_server_needs_no_key() {
        let m = build_model(
            "ollama",
            &cfg(ProviderKind::Openai, Some("http://127.0.0.1:11434/v1")),
            "llama3.2",
        );
        assert_eq!(
            m.ok().map(|m| m.model_ref().to_string()).as_deref(),
            Some("ollama/llama3.2")
        );
    }
}
