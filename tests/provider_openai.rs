//! Wire tests of the OpenAI Chat Completions client (also Azure and local /v1 servers) against
//! loopback servers: what is sent, what streams back, retries, timeouts, cancellation, secrets.

mod provider_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use proctor::config::{PriceConfig, ProviderKind};
use proctor::engine::cost::PriceTable;
use proctor::provider::openai::OpenAiModel;
use proctor::provider::retry::RetryPolicy;
use proctor::provider::tokens::count_tokens;
use proctor::provider::{ChatChunk, ChatModel, ProviderError, TokenUsage, build_model};
use provider_support::*;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{body_partial_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const ENV: &str = "PROCTOR_TEST_OPENAI_KEY";

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
        max_retry_after: Duration::from_secs(60),
    }
}

fn openai(base: &str) -> OpenAiModel {
    let cfg = provider(ProviderKind::Openai, base, ENV);
    with_env(ENV, SECRET, || {
        OpenAiModel::from_config("openai", &cfg, "gpt-4o-mini")
    })
    .expect("client")
    .with_retry_policy(fast())
}

fn chunk(content: &str) -> String {
    let v = json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",
        "choices":[{"index":0,"delta":{"content":content},"finish_reason":null}],"usage":null});
    format!("data: {v}\n\n")
}

/// A complete Chat Completions stream: role chunk, one chunk per part, finish, usage, [DONE].
fn openai_sse(parts: &[&str], usage: Option<(u64, u64, u64)>) -> String {
    let mut s = format!(
        "data: {}\n\n",
        json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",
            "choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null})
    );
    for p in parts {
        s.push_str(&chunk(p));
    }
    s.push_str(&format!(
        "data: {}\n\n",
        json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",
            "choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null})
    ));
    if let Some((p, c, cached)) = usage {
        s.push_str(&format!(
            "data: {}\n\n",
            json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],
                "usage":{"prompt_tokens":p,"completion_tokens":c,"total_tokens":p+c,
                    "prompt_tokens_details":{"cached_tokens":cached},"completion_tokens_details":{"reasoning_tokens":0}}})
        ));
    }
    s.push_str("data: [DONE]\n\n");
    s
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
async fn streams_deltas_then_reported_usage_then_done() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {SECRET}").as_str()))
        .and(body_partial_json(json!({
            "model": "gpt-4o-mini",
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role":"system","content":"You are terse."},{"role":"user","content":"hi"}],
            "max_tokens": 64
        })))
        .respond_with(sse_ok(openai_sse(&["Hel", "lo ", "wörld"], Some((20, 3, 8)))))
        .expect(1)
        .mount(&server)
        .await;
    let model = openai(&format!("{}/v1", server.uri()));
    assert_eq!(model.model_ref(), "openai/gpt-4o-mini");
    let out = call(&model, "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(
        out.chunks,
        vec![
            ChatChunk::Delta("Hel".into()),
            ChatChunk::Delta("lo ".into()),
            ChatChunk::Delta("wörld".into()),
            ChatChunk::Usage {
                usage: TokenUsage {
                    input_tokens: 20,
                    output_tokens: 3,
                    cached_tokens: 8,
                    cache_creation_tokens: 0
                },
                estimated: false,
                served_model: Some("gpt-4o-mini".into())
            },
            ChatChunk::Done {
                finish_reason: Some("stop".into())
            },
        ]
    );
}

#[tokio::test]
async fn deltas_reach_the_caller_before_the_reply_is_complete() {
    let server = RawServer::start(vec![
        sse_head(),
        write(&chunk("first")),
        Step::Gate,
        write(&chunk(" second")),
        write("data: [DONE]\n\n"),
    ])
    .await;
    let model = openai(&server.url());
    let mut s = model.stream(request("hi"), CancellationToken::new());
    let first = tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("first delta in time");
    assert_eq!(
        first.expect("item").expect("ok"),
        ChatChunk::Delta("first".into())
    );
    server.release();
    let rest = collect(s).await;
    assert_eq!(rest.text(), " second");
    assert!(matches!(rest.chunks.last(), Some(ChatChunk::Done { .. })));
}

#[tokio::test]
async fn local_server_without_usage_gets_estimated_usage() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(sse_ok(openai_sse(&["The answer ", "is 42."], None)))
        .mount(&server)
        .await;
    // An Ollama-style provider: no key env at all.
    let mut cfg = provider(ProviderKind::Openai, &format!("{}/v1", server.uri()), ENV);
    cfg.api_key_env = None;
    let model = build_model("ollama", &cfg, "llama3.2").expect("build");
    assert_eq!(model.model_ref(), "ollama/llama3.2");
    let out = call(model.as_ref(), "What is the answer?").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let usage = usage_of(&out);
    assert_eq!(usage.len(), 1);
    let (u, estimated) = usage[0];
    assert!(estimated);
    assert_eq!(u.output_tokens, count_tokens("The answer is 42."));
    assert!(u.input_tokens >= count_tokens("You are terse.") + count_tokens("What is the answer?"));
    let reqs = server.received_requests().await.unwrap_or_default();
    assert!(
        reqs[0].headers.get("authorization").is_none(),
        "no key configured, none sent"
    );
}

#[tokio::test]
async fn azure_posts_to_the_deployment_with_api_version_and_api_key_header() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/openai/deployments/prod-gpt4o/chat/completions"))
        .and(query_param("api-version", "2024-10-21"))
        .and(header("api-key", SECRET))
        .respond_with(sse_ok(openai_sse(&["ok"], Some((5, 1, 0)))))
        .expect(1)
        .mount(&server)
        .await;
    let env = "PROCTOR_TEST_AZURE_KEY";
    let cfg = provider(ProviderKind::Azure, &server.uri(), env);
    let model = with_env(env, SECRET, || build_model("azure", &cfg, "prod-gpt4o")).expect("build");
    let out = call(model.as_ref(), "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.text(), "ok");
    let reqs = server.received_requests().await.unwrap_or_default();
    assert!(reqs[0].headers.get("authorization").is_none());
    let body: Value = serde_json::from_slice(&reqs[0].body).expect("json");
    assert_eq!(body["max_completion_tokens"], 64);
}

#[tokio::test]
async fn every_retryable_status_is_retried_then_succeeds() {
    for status in [
        408u16, 409, 429, 500, 501, 502, 503, 504, 505, 520, 529, 599,
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_string("busy"))
            .up_to_n_times(1)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .respond_with(sse_ok(openai_sse(&["fine"], Some((3, 1, 0)))))
            .expect(1)
            .mount(&server)
            .await;
        let out = call(&openai(&server.uri()), "hi").await;
        assert!(out.error.is_none(), "status {status}: {:?}", out.error);
        assert_eq!(out.text(), "fine");
        let retries = out.retries();
        assert_eq!(retries.len(), 1, "status {status}");
        assert_eq!(retries[0].0, 2);
        assert!(retries[0].2.contains(&status.to_string()), "{retries:?}");
        server.verify().await;
    }
}

#[tokio::test]
async fn retry_after_ms_and_seconds_are_honoured() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after-ms", "120"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(sse_ok(openai_sse(&["ok"], None)))
        .mount(&server)
        .await;
    let started = Instant::now();
    let out = call(&openai(&server.uri()), "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let waits: Vec<u64> = out.retries().iter().map(|r| r.1).collect();
    assert_eq!(waits, vec![120, 1000]);
    assert!(started.elapsed() >= Duration::from_millis(1120));
}

#[tokio::test]
async fn retry_after_as_http_date_is_honoured() {
    let server = MockServer::start().await;
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", date.as_str()))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(sse_ok(openai_sse(&["ok"], None)))
        .mount(&server)
        .await;
    let out = call(&openai(&server.uri()), "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let wait = out.retries()[0].1;
    // HTTP dates have one-second resolution: between 1 and 2 s from now.
    assert!((900..=2100).contains(&wait), "{wait}");
}

#[tokio::test]
async fn retry_after_beyond_60_s_is_handed_to_the_human() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "120"))
        .expect(1)
        .mount(&server)
        .await;
    let started = Instant::now();
    let out = call(&openai(&server.uri()), "hi").await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        out.error,
        Some(ProviderError::RetryAfterTooLong {
            provider: "openai".into(),
            wait_s: 120
        })
    );
    assert!(out.retries().is_empty());
}

#[tokio::test]
async fn gives_up_after_max_retries_with_the_last_failure() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(503).set_body_json(
                json!({"error":{"message":"server overloaded","type":"server_error"}}),
            ),
        )
        .expect(4)
        .mount(&server)
        .await;
    let out = call(&openai(&server.uri()), "hi").await;
    let attempts: Vec<u32> = out.retries().iter().map(|r| r.0).collect();
    assert_eq!(attempts, vec![2, 3, 4]);
    match out.error {
        Some(ProviderError::RetriesExhausted { attempts, last, .. }) => {
            assert_eq!(attempts, 4);
            assert!(
                last.contains("503") && last.contains("server overloaded"),
                "{last}"
            );
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
}

#[tokio::test]
async fn connection_refused_is_retried_then_reported() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let out = call(&openai(&format!("http://{addr}/v1")), "hi").await;
    assert_eq!(out.retries().len(), 3);
    match out.error {
        Some(ProviderError::RetriesExhausted { last, .. }) => {
            assert!(last.to_lowercase().contains("connect"), "{last}")
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
}

#[tokio::test]
async fn client_errors_are_not_retried_and_say_what_to_fix() {
    let cases: [(u16, &str); 4] = [
        (400, "check the model name `gpt-4o-mini`"),
        (401, "check the key in $PROCTOR_TEST_OPENAI_KEY"),
        (403, "check the key in $PROCTOR_TEST_OPENAI_KEY"),
        (404, "check base_url"),
    ];
    for (status, hint) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_json(
                json!({"error":{"message":"The model `gpt-4o-mini` does not exist or you do not have access to it.","type":"invalid_request_error","code":"x"}}),
            ))
            .expect(1)
            .mount(&server)
            .await;
        let out = call(&openai(&server.uri()), "hi").await;
        let err = out.error.clone().expect("an error");
        assert!(out.retries().is_empty(), "{status} must not be retried");
        let msg = err.to_string();
        assert!(msg.contains(hint), "{status}: {msg}");
        assert!(msg.contains(&status.to_string()), "{status}: {msg}");
        server.verify().await;
    }
}

#[tokio::test]
async fn insufficient_quota_429_is_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).set_body_json(
            json!({"error":{"message":"You exceeded your current quota.","type":"insufficient_quota","code":"insufficient_quota"}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let out = call(&openai(&server.uri()), "hi").await;
    assert!(out.retries().is_empty());
    assert!(out.error.expect("error").to_string().contains("billing"));
}

#[tokio::test]
async fn missing_key_names_the_env_var() {
    let cfg = provider(
        ProviderKind::Openai,
        "http://127.0.0.1:9/v1",
        "PROCTOR_TEST_KEY_THAT_IS_NOT_SET",
    );
    let err = build_model("openai", &cfg, "gpt-4o-mini")
        .err()
        .expect("must fail");
    assert_eq!(
        err,
        ProviderError::MissingKey {
            env: "PROCTOR_TEST_KEY_THAT_IS_NOT_SET".into()
        }
    );
    assert!(err.to_string().contains("PROCTOR_TEST_KEY_THAT_IS_NOT_SET"));
}

#[tokio::test]
async fn the_key_appears_in_no_error_or_debug_output() {
    // Servers echo keys back ("Incorrect API key provided: sk-...").
    for status in [401u16, 400, 500] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_json(
                json!({"error":{"message":format!("Incorrect API key provided: {SECRET}."),"type":"invalid_request_error"}}),
            ))
            .mount(&server)
            .await;
        let model = openai(&server.uri());
        assert!(!format!("{model:?}").contains(SECRET));
        let out = call(&model, "hi").await;
        let err = out.error.clone().expect("error");
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains(SECRET), "{status}: {text}");
        }
        for (_, _, reason) in out.retries() {
            assert!(!reason.contains(SECRET), "{reason}");
        }
    }
    // Mid-stream errors too.
    let body = format!(
        "{}data: {}\n\n",
        chunk("x"),
        json!({"error":{"message":format!("bad key {SECRET}")}})
    );
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sse_ok(body))
        .mount(&server)
        .await;
    let out = call(&openai(&server.uri()), "hi").await;
    let err = out.error.expect("error");
    assert!(err.to_string().contains("bad key"), "{err}");
    assert!(!format!("{err} {err:?}").contains(SECRET));
}

#[tokio::test]
async fn an_error_object_mid_stream_ends_the_call_with_its_message() {
    let body = format!(
        "{}data: {}\n\n",
        chunk("partial"),
        json!({"error":{"message":"The server had an error while processing your request.","type":"server_error"}})
    );
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sse_ok(body))
        .expect(1)
        .mount(&server)
        .await;
    let out = call(&openai(&server.uri()), "hi").await;
    assert_eq!(out.text(), "partial");
    let msg = out.error.expect("error").to_string();
    assert!(msg.contains("had an error while processing"), "{msg}");
}

#[tokio::test]
async fn a_stream_without_done_is_an_error() {
    let server = RawServer::start(vec![sse_head(), write(&chunk("half an ans"))]).await;
    let out = call(&openai(&server.url()), "hi").await;
    assert_eq!(out.text(), "half an ans");
    assert!(
        out.retries().is_empty(),
        "bytes had streamed: never re-sent"
    );
    let msg = out.error.expect("error").to_string();
    assert!(msg.contains("stream closed before completion"), "{msg}");
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn a_reply_sent_one_byte_at_a_time_arrives_intact() {
    let body = openai_sse(&["Grüße ", "🦀 ", "done"], Some((4, 3, 0))).replace("\n", "\r\n");
    let mut steps = vec![sse_head()];
    for b in body.bytes() {
        steps.push(Step::Write(vec![b]));
    }
    let server = RawServer::start(steps).await;
    let out = call(&openai(&server.url()), "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.text(), "Grüße 🦀 done");
    assert_eq!(usage_of(&out)[0].0.input_tokens, 4);
}

#[tokio::test]
async fn a_10_mb_event_is_refused_with_a_clear_error() {
    let huge = format!("data: {}", "x".repeat(10 * 1024 * 1024));
    let server = RawServer::start(vec![
        sse_head(),
        write(&chunk("ok")),
        write(&huge),
        write("\n\n"),
    ])
    .await;
    let out = call(&openai(&server.url()), "hi").await;
    assert_eq!(out.text(), "ok");
    let msg = out.error.expect("error").to_string();
    assert!(msg.contains("larger than"), "{msg}");
}

#[tokio::test]
async fn a_stalled_stream_hits_the_configured_idle_timeout() {
    let server = RawServer::start(vec![sse_head(), write(&chunk("thinking")), Step::Stall]).await;
    let mut cfg = provider(ProviderKind::Openai, &server.url(), ENV);
    cfg.idle_timeout_s = Some(1);
    let model =
        with_env(ENV, SECRET, || build_model("openai", &cfg, "gpt-4o-mini")).expect("build");
    let started = Instant::now();
    let out = call(model.as_ref(), "hi").await;
    assert_eq!(out.text(), "thinking");
    assert_eq!(
        out.error,
        Some(ProviderError::IdleTimeout {
            provider: "openai".into(),
            secs: 1
        })
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_the_request_is_retried_then_reported() {
    // No response head within the idle timeout: nothing streamed yet, so it is retried like a
    // connect failure.
    let server = RawServer::start(vec![Step::Stall]).await;
    let model = openai(&server.url()).with_idle_timeout(Duration::from_millis(300));
    let out = call(&model, "hi").await;
    assert_eq!(
        out.retries().iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    match out.error {
        Some(ProviderError::RetriesExhausted { attempts, last, .. }) => {
            assert_eq!(attempts, 4);
            assert!(last.contains("no response within 0.3 s"), "{last}");
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
    assert_eq!(server.request_count(), 4);
}

#[tokio::test]
async fn a_slow_first_response_is_retried_and_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sse_ok(openai_sse(&["late"], None)).set_delay(Duration::from_secs(2)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(sse_ok(openai_sse(&["prompt"], None)))
        .mount(&server)
        .await;
    let model = openai(&server.uri()).with_idle_timeout(Duration::from_millis(300));
    let out = call(&model, "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.text(), "prompt");
    assert_eq!(out.retries().len(), 1);
}

#[tokio::test]
async fn connect_timeout_applies_when_the_server_cannot_accept() {
    // A listener with a full accept queue drops new SYNs, so connecting hangs.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    let _listener = socket.listen(0).expect("listen");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let mut cfg = provider(ProviderKind::Openai, &format!("http://{addr}/v1"), ENV);
    cfg.connect_timeout_s = Some(1);
    cfg.idle_timeout_s = Some(3);
    cfg.max_retries = Some(0);
    let model =
        with_env(ENV, SECRET, || build_model("openai", &cfg, "gpt-4o-mini")).expect("build");
    let started = Instant::now();
    let out = call(model.as_ref(), "hi").await;
    let took = started.elapsed();
    match out.error {
        Some(ProviderError::RetriesExhausted {
            attempts: 1, last, ..
        }) => {
            assert!(
                last.contains("connect timeout: no connection within 1 s"),
                "{last}"
            )
        }
        other => panic!("expected a connect timeout, got {other:?}"),
    }
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_json_error_instead_of_a_stream_is_reported() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"error":{"message":"streaming is disabled on this server"}})),
        )
        .mount(&server)
        .await;
    let out = call(&openai(&server.uri()), "hi").await;
    let msg = out.error.expect("error").to_string();
    assert!(
        msg.contains("error instead of a reply") && msg.contains("streaming is disabled"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_gateway_that_does_not_stream_gives_the_whole_reply_at_once() {
    let server = MockServer::start().await;
    let completion = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Whole reply.\n```python\nprint(1)\n```"},
            "logprobs": null, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 31, "completion_tokens": 12, "total_tokens": 43,
            "prompt_tokens_details": {"cached_tokens": 16}}
    });
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"stream": true})))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(completion.to_string(), "application/json; charset=utf-8"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let out = call(&openai(&server.uri()), "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(
        out.chunks,
        vec![
            ChatChunk::Delta("Whole reply.\n```python\nprint(1)\n```".into()),
            ChatChunk::Usage {
                usage: TokenUsage {
                    input_tokens: 31,
                    output_tokens: 12,
                    cached_tokens: 16,
                    cache_creation_tokens: 0
                },
                estimated: false,
                served_model: Some("gpt-4o-mini-2024-07-18".into())
            },
            ChatChunk::Done {
                finish_reason: Some("length".into())
            },
        ]
    );
}

#[tokio::test]
async fn a_whole_reply_without_usage_is_counted_and_junk_json_is_an_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello there"}, "finish_reason": "stop"}]
        })))
        .mount(&server)
        .await;
    let out = call(&openai(&server.uri()), "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.text(), "hello there");
    assert!(usage_of(&out).iter().all(|(_, estimated)| *estimated));

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"status": "queued"})))
        .mount(&server)
        .await;
    let out = call(&openai(&server.uri()), "hi").await;
    let msg = out.error.as_ref().expect("not a reply").to_string();
    assert!(msg.contains("queued"), "{msg}");
    assert!(out.text().is_empty());
}

#[tokio::test]
async fn log_lines_never_carry_the_key() {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_string(format!("key {SECRET} broke")))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(sse_ok(openai_sse(&["ok"], None)))
        .mount(&server)
        .await;
    let out = call(&openai(&server.uri()), "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let logs = String::from_utf8_lossy(&buf.0.lock().expect("lock")).into_owned();
    assert!(logs.contains("retrying"), "the retry is logged: {logs}");
    assert!(!logs.contains(SECRET), "{logs}");
}

#[tokio::test]
async fn a_slow_but_steady_stream_is_not_cut_by_the_idle_timeout() {
    // Total time well past the idle timeout, but no gap reaches it: there is no total timeout.
    let mut steps = vec![sse_head()];
    for i in 0..6 {
        steps.push(Step::Sleep(Duration::from_millis(200)));
        steps.push(write(&chunk(&i.to_string())));
    }
    steps.push(write("data: [DONE]\n\n"));
    let server = RawServer::start(steps).await;
    let model = openai(&server.url()).with_idle_timeout(Duration::from_millis(600));
    let out = call(&model, "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.text(), "012345");
}

#[tokio::test]
async fn cancel_mid_stream_drops_the_request_within_100_ms() {
    let mut server = RawServer::start(vec![sse_head(), write(&chunk("tick")), Step::Stall]).await;
    let model = openai(&server.url());
    let cancel = CancellationToken::new();
    let mut s = model.stream(request("hi"), cancel.clone());
    let first = s.next().await.expect("item").expect("ok");
    assert_eq!(first, ChatChunk::Delta("tick".into()));
    let started = Instant::now();
    cancel.cancel();
    let next = tokio::time::timeout(Duration::from_millis(100), s.next())
        .await
        .expect("ended within 100 ms");
    assert_eq!(next.expect("item"), Err(ProviderError::Cancelled));
    assert!(s.next().await.is_none());
    let hung_up = tokio::time::timeout(Duration::from_secs(2), server.hangups.recv())
        .await
        .expect("server saw the hang-up");
    assert!(hung_up.expect("instant").duration_since(started) < Duration::from_millis(100));
}

#[tokio::test]
async fn cancel_during_a_backoff_sleep_ends_at_once() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "30"))
        .expect(1)
        .mount(&server)
        .await;
    let model = openai(&server.uri());
    let cancel = CancellationToken::new();
    let mut s = model.stream(request("hi"), cancel.clone());
    let retrying = s.next().await.expect("item").expect("ok");
    assert!(
        matches!(
            retrying,
            ChatChunk::Retrying {
                attempt: 2,
                wait_ms: 30_000,
                ..
            }
        ),
        "{retrying:?}"
    );
    let started = Instant::now();
    cancel.cancel();
    let next = tokio::time::timeout(Duration::from_millis(100), s.next())
        .await
        .expect("ended within 100 ms");
    assert_eq!(next.expect("item"), Err(ProviderError::Cancelled));
    assert!(started.elapsed() < Duration::from_millis(100));
}

#[tokio::test]
async fn reported_usage_costs_exactly_tokens_times_configured_price() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sse_ok(openai_sse(&["ok"], Some((1_200, 350, 400)))))
        .mount(&server)
        .await;
    let out = call(&openai(&server.uri()), "hi").await;
    let (usage, estimated) = usage_of(&out)[0];
    assert!(!estimated);
    let mut pricing = BTreeMap::new();
    pricing.insert(
        "openai/gpt-4o-mini".to_string(),
        PriceConfig {
            input_per_mtok: 0.5,
            output_per_mtok: 2.0,
            cached_input_per_mtok: Some(0.25),
            cache_write_per_mtok: None,
        },
    );
    let usd = PriceTable::new(pricing, vec![])
        .cost("openai/gpt-4o-mini", &usage)
        .expect("priced");
    // 800 uncached × $0.50 + 400 cached × $0.25 + 350 output × $2.00, per million.
    let expected = (800.0 * 0.5 + 400.0 * 0.25 + 350.0 * 2.0) / 1_000_000.0;
    assert_eq!(usd, expected);
    assert_eq!(usd, 0.0012);
}

#[tokio::test]
async fn request_bodies_carry_the_whole_history_in_order() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sse_ok(openai_sse(&["ok"], None)))
        .mount(&server)
        .await;
    let model = openai(&server.uri());
    let mut req = request("first");
    req.messages.push(proctor::provider::ChatMessage {
        role: proctor::provider::Role::Assistant,
        content: "reply".into(),
    });
    req.messages.push(proctor::provider::ChatMessage {
        role: proctor::provider::Role::User,
        content: "second".into(),
    });
    req.temperature = Some(0.25);
    let out = collect(model.stream(req, CancellationToken::new())).await;
    assert!(out.error.is_none());
    let reqs: Vec<Request> = server.received_requests().await.unwrap_or_default();
    let body: Value = serde_json::from_slice(&reqs[0].body).expect("json");
    let roles: Vec<&str> = body["messages"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|m| m["role"].as_str())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(body["temperature"], 0.25);
}

#[tokio::test]
async fn a_server_rejecting_stream_options_is_asked_again_without_them() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"stream_options": {"include_usage": true}})))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"error":{"message":"Unrecognized request argument supplied: stream_options","type":"invalid_request_error"}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(sse_ok(openai_sse(&["old server"], None)))
        .expect(1)
        .mount(&server)
        .await;
    let out = call(&openai(&server.uri()), "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.text(), "old server");
    assert!(usage_of(&out)[0].1, "usage estimated");
    let reqs = server.received_requests().await.unwrap_or_default();
    let second: Value = serde_json::from_slice(&reqs[1].body).expect("json");
    assert!(second.get("stream_options").is_none());
}

/// The finishing chunk and the usage chunk of a stream, without `[DONE]`.
fn finish_and_usage(p: u64, c: u64) -> String {
    let mut s = format!(
        "data: {}\n\n",
        json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",
            "choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null})
    );
    s.push_str(&format!(
        "data: {}\n\n",
        json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],
            "usage":{"prompt_tokens":p,"completion_tokens":c,"total_tokens":p+c}})
    ));
    s
}

#[tokio::test]
async fn a_finished_stream_that_closes_without_done_completes_normally() {
    // Some compatible servers close after the last chunk, or cut the final `data: [DONE]` line.
    for tail in ["", "data: [DONE]"] {
        let server = RawServer::start(vec![
            sse_head(),
            write(&chunk("all there")),
            write(&finish_and_usage(9, 2)),
            write(tail),
        ])
        .await;
        let out = call(&openai(&server.url()), "hi").await;
        assert!(out.error.is_none(), "tail {tail:?}: {:?}", out.error);
        assert_eq!(out.text(), "all there");
        assert_eq!(
            usage_of(&out),
            vec![(
                TokenUsage {
                    input_tokens: 9,
                    output_tokens: 2,
                    ..TokenUsage::default()
                },
                false
            )]
        );
        assert_eq!(
            out.chunks.last(),
            Some(&ChatChunk::Done {
                finish_reason: Some("stop".into())
            })
        );
    }
}

#[tokio::test]
async fn max_tokens_is_renamed_when_the_model_wants_max_completion_tokens() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"max_tokens": 64})))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error":{
            "message":"Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
            "type":"invalid_request_error","param":"max_tokens","code":"unsupported_parameter"}})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"max_completion_tokens": 64})))
        .respond_with(sse_ok(openai_sse(&["renamed"], Some((3, 1, 0)))))
        .expect(1)
        .mount(&server)
        .await;
    // A proxy in front of OpenAI: not api.openai.com, so max_tokens is tried first.
    let out = call(&openai(&format!("{}/v1", server.uri())), "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.text(), "renamed");
    assert!(
        out.retries().is_empty(),
        "a repaired request is not a retry"
    );
    let reqs = server.received_requests().await.unwrap_or_default();
    let second: Value = serde_json::from_slice(&reqs[1].body).expect("json");
    assert!(second.get("max_tokens").is_none(), "{second}");
}

#[tokio::test]
async fn max_completion_tokens_is_renamed_for_servers_that_only_know_max_tokens() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"max_completion_tokens": 64})))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error":{
            "message":"Unrecognized request argument supplied: max_completion_tokens",
            "type":"invalid_request_error"}})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"max_tokens": 64})))
        .respond_with(sse_ok(openai_sse(&["old api"], Some((3, 2, 0)))))
        .expect(1)
        .mount(&server)
        .await;
    // Azure sends max_completion_tokens first; an old api-version refuses it.
    let env = "PROCTOR_TEST_AZURE_KEY";
    let cfg = provider(ProviderKind::Azure, &server.uri(), env);
    let model = with_env(env, SECRET, || build_model("azure", &cfg, "old-dep")).expect("build");
    let out = call(model.as_ref(), "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.text(), "old api");
    server.verify().await;
}

#[tokio::test]
async fn the_limit_is_renamed_only_once() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error":{
            "message":"Unsupported parameter: max_tokens / max_completion_tokens"}})))
        .expect(2)
        .mount(&server)
        .await;
    let out = call(&openai(&server.uri()), "hi").await;
    match out.error {
        Some(ProviderError::Http { status: 400, .. }) => {}
        other => panic!("expected the 400, got {other:?}"),
    }
}

#[tokio::test]
async fn no_output_limit_is_sent_unless_the_team_sets_one() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sse_ok(openai_sse(&["ok"], None)))
        .mount(&server)
        .await;
    let mut req = request("hi");
    req.max_tokens = None;
    let out = collect(openai(&server.uri()).stream(req, CancellationToken::new())).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let reqs = server.received_requests().await.unwrap_or_default();
    let body: Value = serde_json::from_slice(&reqs[0].body).expect("json");
    assert!(body.get("max_tokens").is_none() && body.get("max_completion_tokens").is_none());
}

#[tokio::test]
async fn consecutive_messages_of_one_role_are_merged_for_chat_templates() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sse_ok(openai_sse(&["ok"], None)))
        .mount(&server)
        .await;
    let mut req = request("human: write fizzbuzz");
    for (role, text) in [
        (proctor::provider::Role::User, "critic: in Python"),
        (proctor::provider::Role::Assistant, "sure"),
        (
            proctor::provider::Role::Assistant,
            "```python\nprint(1)\n```",
        ),
        (proctor::provider::Role::User, "executor: exit 0"),
    ] {
        req.messages.push(proctor::provider::ChatMessage {
            role,
            content: text.into(),
        });
    }
    let out = collect(openai(&server.uri()).stream(req, CancellationToken::new())).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let reqs = server.received_requests().await.unwrap_or_default();
    let body: Value = serde_json::from_slice(&reqs[0].body).expect("json");
    let msgs = body["messages"].as_array().expect("array");
    let roles: Vec<&str> = msgs.iter().filter_map(|m| m["role"].as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(
        msgs[1]["content"],
        "human: write fizzbuzz\n\ncritic: in Python"
    );
    assert_eq!(msgs[2]["content"], "sure\n\n```python\nprint(1)\n```");
}

#[tokio::test]
async fn x_should_retry_overrides_the_status() {
    // `true` on a status we would not retry.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).insert_header("x-should-retry", "true"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(sse_ok(openai_sse(&["again"], None)))
        .expect(1)
        .mount(&server)
        .await;
    let out = call(&openai(&server.uri()), "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.retries().len(), 1);
    // `false` on a status we would retry.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).insert_header("x-should-retry", "false"))
        .expect(1)
        .mount(&server)
        .await;
    let out = call(&openai(&server.uri()), "hi").await;
    assert!(out.retries().is_empty());
    assert!(
        matches!(out.error, Some(ProviderError::Http { status: 503, .. })),
        "{:?}",
        out.error
    );
}

#[tokio::test]
async fn a_transient_error_event_before_any_text_is_retried() {
    for error in [
        json!({"error":{"message":"The server had an error","type":"server_error"}}),
        json!({"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(sse_ok(format!("data: {error}\n\n")))
            .up_to_n_times(1)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .respond_with(sse_ok(openai_sse(&["second try"], Some((4, 2, 0)))))
            .expect(1)
            .mount(&server)
            .await;
        let out = call(&openai(&server.uri()), "hi").await;
        assert!(out.error.is_none(), "{error}: {:?}", out.error);
        assert_eq!(out.text(), "second try");
        let retries = out.retries();
        assert_eq!(retries.len(), 1, "{error}");
        assert_eq!(retries[0].0, 2);
        server.verify().await;
    }
}

#[tokio::test]
async fn empty_or_partial_usage_is_estimated() {
    for u in [
        json!({}),
        json!({"total_tokens": 12}),
        json!({"prompt_tokens":0,"completion_tokens":0}),
    ] {
        let mut body = chunk("some text");
        body.push_str(&format!(
            "data: {}\n\n",
            json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",
                "choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":u})
        ));
        body.push_str("data: [DONE]\n\n");
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(sse_ok(body))
            .mount(&server)
            .await;
        let out = call(&openai(&server.uri()), "hi").await;
        assert!(out.error.is_none(), "{:?}", out.error);
        let (usage, estimated) = usage_of(&out)[0];
        assert!(estimated, "{u}");
        assert_eq!(usage.output_tokens, count_tokens("some text"), "{u}");
        assert!(usage.input_tokens > 0, "{u}");
    }
}

#[tokio::test]
async fn requests_carry_proctors_user_agent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header(
            "user-agent",
            concat!("proctor/", env!("CARGO_PKG_VERSION")),
        ))
        .respond_with(sse_ok(openai_sse(&["ok"], None)))
        .expect(1)
        .mount(&server)
        .await;
    let out = call(&openai(&server.uri()), "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
}

#[tokio::test]
async fn rate_limit_reset_headers_set_the_wait_when_there_is_no_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("x-ratelimit-remaining-requests", "0")
                .insert_header("x-ratelimit-reset-requests", "1.2s")
                .insert_header("x-ratelimit-remaining-tokens", "0")
                .insert_header("x-ratelimit-reset-tokens", "300ms"),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(sse_ok(openai_sse(&["ok"], None)))
        .mount(&server)
        .await;
    let started = Instant::now();
    let out = call(&openai(&server.uri()), "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.retries()[0].1, 1200, "the larger reset");
    assert!(started.elapsed() >= Duration::from_millis(1200));
    // A reset beyond 60 s is the human's call, like a long Retry-After.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("x-ratelimit-reset-tokens", "6m0s"))
        .expect(1)
        .mount(&server)
        .await;
    let out = call(&openai(&server.uri()), "hi").await;
    assert_eq!(
        out.error,
        Some(ProviderError::RetryAfterTooLong {
            provider: "openai".into(),
            wait_s: 360
        })
    );
}

#[tokio::test]
async fn a_connection_cut_after_the_finishing_chunk_still_completes() {
    // A proxy drops a chunked body right after the last event (no terminating 0-size chunk).
    let events = format!("{}{}", chunk("complete"), finish_and_usage(7, 1));
    let head =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    let server = RawServer::start(vec![
        write(head),
        write(&format!("{:x}\r\n{events}\r\n", events.len())),
    ])
    .await;
    let out = call(&openai(&server.url()), "hi").await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.text(), "complete");
    assert_eq!(usage_of(&out)[0].0.input_tokens, 7);
    // Without a finishing chunk the same cut is an error.
    let events = chunk("half");
    let server = RawServer::start(vec![
        write(head),
        write(&format!("{:x}\r\n{events}\r\n", events.len())),
    ])
    .await;
    let out = call(&openai(&server.url()), "hi").await;
    let msg = out.error.expect("error").to_string();
    assert!(msg.contains("stream closed before completion"), "{msg}");
}
