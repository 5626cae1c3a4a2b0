//! A provider on this machine (Ollama, vLLM on 127.0.0.1) is reached directly even when the
//! environment names an HTTP proxy. Its own test binary (one process), so the proxy variables
//! it sets cannot leak into other tests.

mod provider_support;

use proctor::config::ProviderKind;
use proctor::provider::build_model;
use provider_support::*;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn loopback_servers_bypass_environment_proxies() {
    let server = MockServer::start().await;
    let body = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"direct\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "text/event-stream"))
        .expect(1)
        .mount(&server)
        .await;
    // A proxy that refuses every connection: going through it fails.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let proxy = format!("http://{}", dead.local_addr().expect("addr"));
    drop(dead);
    let mut cfg = provider(ProviderKind::Openai, &format!("{}/v1", server.uri()), "");
    cfg.api_key_env = None;
    cfg.max_retries = Some(0);
    let model = with_env("NO_PROXY", "", || {
        for var in [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            // SAFETY: under the env lock of `with_env`, in a binary with this single test.
            unsafe { std::env::set_var(var, &proxy) };
        }
        for var in ["NO_PROXY", "no_proxy"] {
            // SAFETY: as above.
            unsafe { std::env::remove_var(var) };
        }
        build_model("ollama", &cfg, "llama3.2")
    })
    .expect("build");
    let out = call(model.as_ref(), "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.text(), "direct");
}
