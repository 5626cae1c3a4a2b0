//! End to end: the real binary, headless, against loopback servers speaking OpenAI's and
//! Anthropic's documented streaming formats. The `usage` events' `usd` must equal tokens × the
//! configured price exactly, and the API key must appear nowhere proctor writes.

use std::path::Path;
use std::process::Stdio;

use serde_json::Value;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "sk-test-SENTINEL-0123456789abcdef";

fn sse(events: &[&str]) -> String {
    events.iter().map(|e| format!("{e}\n\n")).collect()
}

fn openai_body(text: &str, prompt: u64, completion: u64, cached: u64) -> String {
    let chunk = |delta: &str, finish: &str| {
        format!(
            r#"data: {{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{{"index":0,"delta":{delta},"finish_reason":{finish}}}]}}"#
        )
    };
    let content = serde_json::to_string(text).unwrap();
    sse(&[
        &chunk(r#"{"role":"assistant","content":""}"#, "null"),
        &chunk(&format!(r#"{{"content":{content}}}"#), "null"),
        &chunk("{}", r#""stop""#),
        &format!(
            r#"data: {{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{},"prompt_tokens_details":{{"cached_tokens":{cached}}}}}}}"#,
            prompt + completion
        ),
        "data: [DONE]",
    ])
}

fn anthropic_body(text: &str, input: u64, output: u64, read: u64, created: u64) -> String {
    let t = serde_json::to_string(text).unwrap();
    sse(&[
        &format!(
            r#"event: message_start
data: {{"type":"message_start","message":{{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{{"input_tokens":{input},"cache_read_input_tokens":{read},"cache_creation_input_tokens":{created},"output_tokens":1}}}}}}"#
        ),
        r#"event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"event: ping
data: {"type": "ping"}"#,
        &format!(
            r#"event: content_block_delta
data: {{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":{t}}}}}"#
        ),
        r#"event: content_block_stop
data: {"type":"content_block_stop","index":0}"#,
        &format!(
            r#"event: message_delta
data: {{"type":"message_delta","delta":{{"stop_reason":"end_turn","stop_sequence":null}},"usage":{{"output_tokens":{output}}}}}"#
        ),
        r#"event: message_stop
data: {"type":"message_stop"}"#,
    ])
}

struct Run {
    code: i32,
    events: Vec<Value>,
    stdout: String,
    stderr: String,
}

async fn run_binary(dir: &Path, config: &str, team: &str) -> Run {
    std::fs::write(dir.join("config.toml"), config).unwrap();
    std::fs::write(dir.join("team.toml"), team).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_proctor"))
        .arg("--config")
        .arg(dir.join("config.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["run", "--team"])
        .arg(dir.join("team.toml"))
        .args([
            "--task",
            "say hi",
            "--headless",
            "--json",
            "--approve",
            "auto",
        ])
        .env("PROCTOR_TEST_KEY", KEY)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let events = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    Run {
        code: out.status.code().unwrap_or(-1),
        events,
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

fn usage_events(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["type"] == "usage").collect()
}

/// Every file under `dir`, read as bytes, must not contain the key.
fn assert_no_key_in_files(dir: &Path) {
    let mut checked = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(KEY),
                    "the API key leaked into {}",
                    p.display()
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 2,
        "expected the session log and a log file, checked {checked}"
    );
}

#[tokio::test]
async fn openai_compatible_server_end_to_end_cost_is_exact_and_key_stays_secret() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            openai_body("All done. TERMINATE", 1234, 56, 200),
            "text/event-stream",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[providers.loop]\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key_env = \"PROCTOR_TEST_KEY\"\n\n\
         [pricing.\"loop/gpt-4o-mini\"]\ninput_per_mtok = 0.15\noutput_per_mtok = 0.60\ncached_input_per_mtok = 0.075\n",
        server.uri()
    );
    let team = "name = \"solo\"\n[[agents]]\nname = \"coder\"\nmodel = \"loop/gpt-4o-mini\"\n";
    let run = run_binary(dir.path(), &config, team).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let usage = usage_events(&run.events);
    assert_eq!(usage.len(), 1);
    let u = usage[0];
    assert_eq!(u["model"], "loop/gpt-4o-mini");
    assert_eq!(u["input_tokens"], 1234);
    assert_eq!(u["output_tokens"], 56);
    assert_eq!(u["cached_tokens"], 200);
    assert_eq!(u["estimated"], false);
    let expected = ((1234.0 - 200.0) * 0.15 + 200.0 * 0.075 + 56.0 * 0.60) / 1e6;
    assert_eq!(u["usd"].as_f64().unwrap(), expected);
    // Deltas arrived as message_delta events before the message.
    assert!(run.events.iter().any(|e| e["type"] == "message_delta"));
    let msg = run
        .events
        .iter()
        .find(|e| e["type"] == "message" && e["agent"] == "coder")
        .unwrap();
    assert_eq!(msg["content"], "All done. TERMINATE");
    // The request asked for usage in the stream.
    let req = &server.received_requests().await.unwrap()[0];
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert!(!run.stdout.contains(KEY) && !run.stderr.contains(KEY));
    assert_no_key_in_files(&dir.path().join("data"));
}

#[tokio::test]
async fn anthropic_format_server_end_to_end_cost_is_exact() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", KEY))
        .and(header("anthropic-version", "2023-06-01"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            anthropic_body("Finished. TERMINATE", 500, 42, 100, 50),
            "text/event-stream",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[providers.ant]\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key_env = \"PROCTOR_TEST_KEY\"\n\n\
         [pricing.\"ant/claude-sonnet-4-5\"]\ninput_per_mtok = 3.0\noutput_per_mtok = 15.0\ncached_input_per_mtok = 0.30\ncache_write_per_mtok = 3.75\n",
        server.uri()
    );
    let team = "name = \"solo\"\n[[agents]]\nname = \"coder\"\nmodel = \"ant/claude-sonnet-4-5\"\nsystem = \"Be brief.\"\n";
    let run = run_binary(dir.path(), &config, team).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let u = usage_events(&run.events)[0];
    assert_eq!(u["input_tokens"], 650, "input + cache reads + cache writes");
    assert_eq!(u["cached_tokens"], 100);
    assert_eq!(u["cache_creation_tokens"], 50);
    assert_eq!(u["output_tokens"], 42);
    let expected = (500.0 * 3.0 + 100.0 * 0.30 + 50.0 * 3.75 + 42.0 * 15.0) / 1e6;
    assert_eq!(u["usd"].as_f64().unwrap(), expected);
    let req = &server.received_requests().await.unwrap()[0];
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert!(body["system"].as_str().unwrap().starts_with("Be brief."));
    assert_eq!(body["messages"][0]["role"], "user");
    assert_eq!(body["stream"], true);
    assert_no_key_in_files(&dir.path().join("data"));
}

#[tokio::test]
async fn a_rejected_key_pauses_with_the_env_var_named_and_never_the_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_string(format!(
            r#"{{"error":{{"message":"Incorrect API key provided: {KEY}","type":"invalid_request_error","code":"invalid_api_key"}}}}"#
        )))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[providers.loop]\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key_env = \"PROCTOR_TEST_KEY\"\n",
        server.uri()
    );
    let team = "name = \"solo\"\n[[agents]]\nname = \"coder\"\nmodel = \"loop/gpt-4o-mini\"\n";
    let run = run_binary(dir.path(), &config, team).await;
    assert_eq!(
        run.code, 2,
        "an auto session that pauses exits 2: {}",
        run.stderr
    );
    assert!(run.stderr.contains("PROCTOR_TEST_KEY"), "{}", run.stderr);
    assert!(run.events.iter().any(|e| e["type"] == "paused"));
    assert!(
        !run.stdout.contains(KEY),
        "the key leaked into the event stream"
    );
    assert!(!run.stderr.contains(KEY), "the key leaked into stderr");
    assert_no_key_in_files(&dir.path().join("data"));
}

#[tokio::test]
async fn azure_deployment_end_to_end_is_priced_by_the_model_it_serves() {
    let server = MockServer::start().await;
    let body = openai_body("Deployed. TERMINATE", 300, 20, 0).replace(
        "\"model\":\"gpt-4o-mini\"",
        "\"model\":\"gpt-4o-2024-08-06\"",
    );
    Mock::given(method("POST"))
        .and(path("/openai/deployments/team-gpt/chat/completions"))
        .and(wiremock::matchers::query_param("api-version", "2024-10-21"))
        .and(header("api-key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "text/event-stream"))
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[providers.az]\nkind = \"azure\"\nbase_url = \"{}\"\napi_key_env = \"PROCTOR_TEST_KEY\"\n\n\
         [pricing.\"az/gpt-4o-2024-08-06\"]\ninput_per_mtok = 2.5\noutput_per_mtok = 10.0\n",
        server.uri()
    );
    let team = "name = \"solo\"\n[[agents]]\nname = \"coder\"\nmodel = \"az/team-gpt\"\n";
    let run = run_binary(dir.path(), &config, team).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let u = usage_events(&run.events)[0];
    assert_eq!(u["model"], "az/team-gpt");
    assert_eq!(
        u["usd"].as_f64().unwrap(),
        (300.0 * 2.5 + 20.0 * 10.0) / 1e6
    );
    assert_no_key_in_files(&dir.path().join("data"));
}
