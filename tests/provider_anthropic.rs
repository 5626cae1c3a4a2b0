//! Wire tests of the Anthropic Messages client against loopback servers: headers, the top-level
//! system prompt, alternating turns, named SSE events, usage with cache counts, mid-stream errors.

mod provider_support;

use std::collections::BTreeMap;
use std::time::Duration;

use proctor::config::{PriceConfig, ProviderKind};
use proctor::engine::cost::PriceTable;
use proctor::provider::anthropic::AnthropicModel;
use proctor::provider::retry::RetryPolicy;
use proctor::provider::{
    ChatChunk, ChatMessage, ChatModel, ProviderError, Role, TokenUsage, build_model,
};
use provider_support::*;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ENV: &str = "PROCTOR_TEST_ANTHROPIC_KEY";
const MODEL: &str = "claude-sonnet-4-5";

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
        max_retry_after: Duration::from_secs(60),
    }
}

fn claude(base: &str) -> AnthropicModel {
    let cfg = provider(ProviderKind::Anthropic, base, ENV);
    with_env(ENV, SECRET, || {
        AnthropicModel::from_config("claude", &cfg, MODEL)
    })
    .expect("client")
    .with_retry_policy(fast())
}

fn ev(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

struct Usage {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
}

/// A Messages stream as documented: message_start, ping, one text block, message_delta,
/// message_stop.
fn claude_sse(parts: &[&str], u: &Usage, stop: bool) -> String {
    let mut s = ev(
        "message_start",
        json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],
            "model":MODEL,"stop_reason":null,"stop_sequence":null,
            "usage":{"input_tokens":u.input,"cache_creation_input_tokens":u.cache_write,
                     "cache_read_input_tokens":u.cache_read,"output_tokens":1}}}),
    );
    s.push_str(&ev(
        "content_block_start",
        json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
    ));
    s.push_str(&ev("ping", json!({"type":"ping"})));
    for p in parts {
        s.push_str(&ev(
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":p}}),
        ));
    }
    s.push_str(&ev(
        "content_block_stop",
        json!({"type":"content_block_stop","index":0}),
    ));
    s.push_str(&ev(
        "message_delta",
        json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":u.output}}),
    ));
    if stop {
        s.push_str(&ev("message_stop", json!({"type":"message_stop"})));
    }
    s
}

fn usage(input: u64, output: u64, cache_read: u64, cache_write: u64) -> Usage {
    Usage {
        input,
        output,
        cache_read,
        cache_write,
    }
}

fn sse_ok(body: String) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")
}

fn usage_of(o: &Outcome) -> Vec<(TokenUsage, bool)> {
    o.chunks
        .iter()
        .filter_map(|c| match c {
            ChatChunk::Usage {
                usage, estimated, ..
            } => Some((*usage, *estimated)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn streams_text_and_reports_usage_with_cache_counts() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", SECRET))
        .and(header("anthropic-version", "2023-06-01"))
        .and(body_partial_json(json!({
            "model": MODEL,
            "system": "You are terse.",
            "stream": true,
            "max_tokens": 64,
            "messages": [{"role":"user","content":"hi"}]
        })))
        .respond_with(sse_ok(claude_sse(
            &["Hello", ", wörld"],
            &usage(25, 7, 100, 40),
            true,
        )))
        .expect(1)
        .mount(&server)
        .await;
    let model = claude(&server.uri());
    assert_eq!(model.model_ref(), "claude/claude-sonnet-4-5");
    let out = call(&model, "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(
        out.chunks,
        vec![
            ChatChunk::Delta("Hello".into()),
            ChatChunk::Delta(", wörld".into()),
            ChatChunk::Usage {
                // input includes cache reads and writes.
                usage: TokenUsage {
                    input_tokens: 165,
                    output_tokens: 7,
                    cached_tokens: 100,
                    cache_creation_tokens: 40
                },
                estimated: false,
                served_model: None
            },
            ChatChunk::Done {
                finish_reason: Some("end_turn".into())
            },
        ]
    );
    let reqs = server.received_requests().await.unwrap_or_default();
    let body: Value = serde_json::from_slice(&reqs[0].body).expect("json");
    assert!(
        body["messages"]
            .as_array()
            .expect("array")
            .iter()
            .all(|m| m["role"] != "system")
    );
    assert!(
        reqs[0].headers.get("authorization").is_none(),
        "Anthropic takes x-api-key only"
    );
}

#[tokio::test]
async fn history_is_sent_as_alternating_turns_starting_with_user() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sse_ok(claude_sse(&["ok"], &usage(1, 1, 0, 0), true)))
        .mount(&server)
        .await;
    let model = claude(&server.uri());
    let mut req = request("ignored");
    req.max_tokens = None;
    req.messages = vec![
        ChatMessage {
            role: Role::Assistant,
            content: "I am the coder.".into(),
        },
        ChatMessage {
            role: Role::User,
            content: "human: write fizzbuzz".into(),
        },
        ChatMessage {
            role: Role::User,
            content: "critic: in Python".into(),
        },
        ChatMessage {
            role: Role::Assistant,
            content: "```python\nprint(1)\n```".into(),
        },
        ChatMessage {
            role: Role::User,
            content: "executor: exit 0".into(),
        },
    ];
    let out = collect(model.stream(req, CancellationToken::new())).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let reqs = server.received_requests().await.unwrap_or_default();
    let body: Value = serde_json::from_slice(&reqs[0].body).expect("json");
    let msgs = body["messages"].as_array().expect("array");
    let roles: Vec<&str> = msgs.iter().filter_map(|m| m["role"].as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant", "user"]);
    assert_eq!(msgs[1]["content"], "I am the coder.");
    assert_eq!(
        msgs[2]["content"],
        "human: write fizzbuzz\n\ncritic: in Python"
    );
    assert_eq!(
        body["max_tokens"], 4096,
        "max_tokens is required by the API"
    );
}

#[tokio::test]
async fn an_error_event_mid_stream_ends_the_call_with_its_message() {
    let mut body = claude_sse(&["par", "tial"], &usage(5, 1, 0, 0), false);
    body = body
        .split("event: content_block_stop")
        .next()
        .unwrap_or_default()
        .to_string();
    body.push_str(&ev(
        "error",
        json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}),
    ));
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sse_ok(body))
        .expect(1)
        .mount(&server)
        .await;
    let out = call(&claude(&server.uri()), "hi").await;
    assert_eq!(out.text(), "partial");
    assert!(out.retries().is_empty(), "bytes were streamed: no retry");
    let msg = out.error.expect("error").to_string();
    assert!(
        msg.contains("overloaded_error") && msg.contains("Overloaded"),
        "{msg}"
    );
}

#[tokio::test]
async fn overloaded_529_before_the_stream_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(529).set_body_json(
            json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}),
        ))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(sse_ok(claude_sse(&["back"], &usage(3, 1, 0, 0), true)))
        .expect(1)
        .mount(&server)
        .await;
    let out = call(&claude(&server.uri()), "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.text(), "back");
    let retries = out.retries();
    assert_eq!(retries.iter().map(|r| r.0).collect::<Vec<_>>(), vec![2, 3]);
    assert!(
        retries[0].2.contains("529") && retries[0].2.contains("Overloaded"),
        "{retries:?}"
    );
}

#[tokio::test]
async fn a_stream_without_message_stop_is_an_error() {
    let server = RawServer::start(vec![
        sse_head(),
        write(&claude_sse(&["cut"], &usage(5, 1, 0, 0), false)),
    ])
    .await;
    let out = call(&claude(&server.url()), "hi").await;
    assert_eq!(out.text(), "cut");
    assert!(usage_of(&out).is_empty());
    let msg = out.error.expect("error").to_string();
    assert!(msg.contains("stream closed before completion"), "{msg}");
}

#[tokio::test]
async fn crlf_and_cr_line_endings_and_comments_are_understood() {
    let body = claude_sse(&["line ", "endings"], &usage(5, 2, 0, 0), true);
    let (a, b) = body.split_at(body.len() / 2);
    let mixed = format!(
        ": keep-alive comment\r\n\r\n{}{}",
        a.replace('\n', "\r\n"),
        b.replace('\n', "\r")
    );
    let server = RawServer::start(vec![sse_head(), write(&mixed)]).await;
    let out = call(&claude(&server.url()), "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.text(), "line endings");
    assert_eq!(usage_of(&out)[0].0.output_tokens, 2);
}

#[tokio::test]
async fn a_401_names_the_env_var_holding_the_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let model = claude(&server.uri());
    let out = call(&model, "hi").await;
    let err = out.error.expect("error");
    assert_eq!(
        err,
        ProviderError::Auth {
            provider: "claude".into(),
            status: 401,
            env: ENV.into()
        }
    );
    assert!(err.to_string().contains(ENV));
    assert!(!format!("{err:?} {model:?}").contains(SECRET));
}

#[tokio::test]
async fn build_model_makes_an_anthropic_client_from_config() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("anthropic-version", "2024-01-01"))
        .respond_with(sse_ok(claude_sse(&["built"], &usage(2, 1, 0, 0), true)))
        .expect(1)
        .mount(&server)
        .await;
    let env = "PROCTOR_TEST_ANTHROPIC_KEY_2";
    let mut cfg = provider(ProviderKind::Anthropic, &format!("{}/", server.uri()), env);
    cfg.anthropic_version = Some("2024-01-01".into());
    let model = with_env(env, SECRET, || {
        build_model("work", &cfg, "claude-haiku-4-5")
    })
    .expect("build");
    assert_eq!(model.model_ref(), "work/claude-haiku-4-5");
    let out = call(model.as_ref(), "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.text(), "built");
}

#[tokio::test]
async fn reported_usage_costs_exactly_tokens_times_configured_price() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sse_ok(claude_sse(
            &["ok"],
            &usage(1_000, 500, 2_000, 400),
            true,
        )))
        .mount(&server)
        .await;
    let out = call(&claude(&server.uri()), "hi").await;
    let (u, estimated) = usage_of(&out)[0];
    assert!(!estimated);
    let mut pricing = BTreeMap::new();
    pricing.insert(
        format!("claude/{MODEL}"),
        PriceConfig {
            input_per_mtok: 4.0,
            output_per_mtok: 16.0,
            cached_input_per_mtok: Some(0.5),
            cache_write_per_mtok: Some(5.0),
        },
    );
    let usd = PriceTable::new(pricing, vec![])
        .cost(&format!("claude/{MODEL}"), &u)
        .expect("priced");
    // 1000 input × $4 + 2000 cache reads × $0.50 + 400 cache writes × $5 + 500 output × $16, per million.
    let expected = (1_000.0 * 4.0 + 2_000.0 * 0.5 + 400.0 * 5.0 + 500.0 * 16.0) / 1_000_000.0;
    assert_eq!(usd, expected);
    assert_eq!(usd, 0.015);
}

#[tokio::test]
async fn a_server_reporting_no_usage_gets_an_estimate() {
    let body = claude_sse(&["no usage here"], &usage(0, 0, 0, 0), true)
        .lines()
        .map(|l| {
            if let Some(data) = l.strip_prefix("data: ") {
                let mut v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                if let Some(m) = v.get_mut("message").and_then(Value::as_object_mut) {
                    m.remove("usage");
                }
                if let Some(o) = v.as_object_mut() {
                    o.remove("usage");
                }
                format!("data: {v}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect::<String>();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sse_ok(body))
        .mount(&server)
        .await;
    let out = call(&claude(&server.uri()), "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let (u, estimated) = usage_of(&out)[0];
    assert!(estimated);
    assert!(u.output_tokens > 0 && u.input_tokens > 0, "{u:?}");
}

#[tokio::test]
async fn temperature_is_clamped_to_the_documented_range() {
    for (asked, sent) in [(1.5f32, 1.0f64), (-0.5, 0.0), (0.25, 0.25)] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(sse_ok(claude_sse(&["ok"], &usage(1, 1, 0, 0), true)))
            .mount(&server)
            .await;
        let mut req = request("hi");
        req.temperature = Some(asked);
        let out = collect(claude(&server.uri()).stream(req, CancellationToken::new())).await;
        assert!(out.error.is_none(), "{:?}", out.error);
        let reqs = server.received_requests().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&reqs[0].body).expect("json");
        assert_eq!(body["temperature"].as_f64(), Some(sent), "asked {asked}");
    }
}

#[tokio::test]
async fn events_without_event_lines_are_dispatched_by_their_type() {
    // Some gateways drop the `event:` lines; the JSON `type` still names each event.
    let named = claude_sse(&["no ", "names"], &usage(6, 2, 0, 0), true);
    let unnamed: String = named
        .lines()
        .filter(|l| !l.starts_with("event:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let server = RawServer::start(vec![sse_head(), write(&unnamed)]).await;
    let out = call(&claude(&server.url()), "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.text(), "no names");
    assert_eq!(usage_of(&out)[0].0.output_tokens, 2);
    assert_eq!(
        out.chunks.last(),
        Some(&ChatChunk::Done {
            finish_reason: Some("end_turn".into())
        })
    );
}

#[tokio::test]
async fn unknown_events_and_non_text_blocks_are_skipped() {
    let mut body = claude_sse(&["visible"], &usage(6, 2, 0, 0), true);
    let extra = format!(
        "event: some_future_event\ndata: not json at all\n\n{}",
        ev(
            "content_block_start",
            json!({"type":"content_block_start","index":1,
                "content_block":{"type":"future_block","text":"not for the human"}})
        )
    );
    body = body.replacen("event: ping", &format!("{extra}event: ping"), 1);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sse_ok(body))
        .mount(&server)
        .await;
    let out = call(&claude(&server.uri()), "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.text(), "visible");
}

#[tokio::test]
async fn a_base_url_ending_in_v1_posts_to_v1_messages() {
    for suffix in ["/v1", "/v1/"] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(sse_ok(claude_sse(&["ok"], &usage(1, 1, 0, 0), true)))
            .expect(1)
            .mount(&server)
            .await;
        let model = claude(&format!("{}{suffix}", server.uri()));
        assert_eq!(model.endpoint(), format!("{}/v1/messages", server.uri()));
        let out = call(&model, "hi").await;
        assert!(out.error.is_none(), "{suffix}: {:?}", out.error);
        server.verify().await;
    }
}

#[tokio::test]
async fn a_transient_error_event_before_any_text_is_retried() {
    for kind in ["overloaded_error", "api_error", "rate_limit_error"] {
        let mut body = ev(
            "message_start",
            json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",
                "content":[],"model":MODEL,"usage":{"input_tokens":5,"output_tokens":1}}}),
        );
        body.push_str(&ev(
            "error",
            json!({"type":"error","error":{"type":kind,"message":"try again"}}),
        ));
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(sse_ok(body))
            .up_to_n_times(1)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .respond_with(sse_ok(claude_sse(&["recovered"], &usage(5, 1, 0, 0), true)))
            .expect(1)
            .mount(&server)
            .await;
        let out = call(&claude(&server.uri()), "hi").await;
        assert!(out.error.is_none(), "{kind}: {:?}", out.error);
        assert_eq!(out.text(), "recovered");
        let retries = out.retries();
        assert_eq!(retries.len(), 1, "{kind}");
        assert!(retries[0].2.contains(kind), "{retries:?}");
        server.verify().await;
    }
}

#[tokio::test]
async fn a_non_transient_error_event_before_text_is_not_retried() {
    let body = ev(
        "error",
        json!({"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long"}}),
    );
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sse_ok(body))
        .expect(1)
        .mount(&server)
        .await;
    let out = call(&claude(&server.uri()), "hi").await;
    assert!(out.retries().is_empty());
    let msg = out.error.expect("error").to_string();
    assert!(msg.contains("prompt is too long"), "{msg}");
}

#[tokio::test]
async fn anthropic_rate_limit_reset_times_set_the_wait() {
    let reset = humantime::format_rfc3339(std::time::SystemTime::now() + Duration::from_secs(2))
        .to_string();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("anthropic-ratelimit-requests-remaining", "0")
                .insert_header("anthropic-ratelimit-requests-reset", reset.as_str())
                .set_body_json(json!({"type":"error","error":{"type":"rate_limit_error","message":"slow down"}})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(sse_ok(claude_sse(&["ok"], &usage(1, 1, 0, 0), true)))
        .mount(&server)
        .await;
    let out = call(&claude(&server.uri()), "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let wait = out.retries()[0].1;
    assert!((1000..=2000).contains(&wait), "{wait}");
}

#[tokio::test]
async fn a_gateway_that_does_not_stream_gives_the_whole_message_at_once() {
    let server = MockServer::start().await;
    let message = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": MODEL,
        "content": [
            {"type": "thinking", "thinking": "not shown", "signature": "x"},
            {"type": "text", "text": "Part one, "},
            {"type": "text", "text": "part two."}
        ],
        "stop_reason": "max_tokens", "stop_sequence": null,
        "usage": {"input_tokens": 25, "output_tokens": 9, "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 40}
    });
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(body_partial_json(json!({"stream": true})))
        .respond_with(ResponseTemplate::new(200).set_body_json(message))
        .expect(1)
        .mount(&server)
        .await;
    let out = call(&claude(&server.uri()), "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(
        out.chunks,
        vec![
            ChatChunk::Delta("Part one, part two.".into()),
            ChatChunk::Usage {
                usage: TokenUsage {
                    input_tokens: 165,
                    output_tokens: 9,
                    cached_tokens: 100,
                    cache_creation_tokens: 40
                },
                estimated: false,
                served_model: None
            },
            ChatChunk::Done {
                finish_reason: Some("max_tokens".into())
            },
        ]
    );
}

#[tokio::test]
async fn a_whole_error_object_is_reported_with_its_message() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "streaming is not enabled for this key"}
        })))
        .mount(&server)
        .await;
    let out = call(&claude(&server.uri()), "hi").await;
    let msg = out.error.expect("error").to_string();
    assert!(msg.contains("streaming is not enabled"), "{msg}");
}
