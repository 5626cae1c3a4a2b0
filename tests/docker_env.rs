//! The Docker executor with DOCKER_HOST pointed elsewhere: a dead socket, and a stand-in daemon on
//! 127.0.0.1 that "pulls" an image. These tests change the process environment, so they hold
//! `ENV_LOCK` (nextest also gives each test its own process).

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use proctor::config::ExecutorConfig;
use proctor::executor::{
    DockerExecutor, ExecError, ExecEvent, ExecRequest, Executor, doctor_check,
};
use tokio_util::sync::CancellationToken;

static ENV_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn image() -> String {
    std::env::var("PROCTOR_SANDBOX_IMAGE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "proctor-sandbox:bookworm".into())
}

fn policy() -> ExecutorConfig {
    ExecutorConfig {
        image: image(),
        timeout_s: 20,
        ..Default::default()
    }
}

fn request(
    session: &str,
    ws: &Path,
    language: &str,
    code: &str,
    policy: &ExecutorConfig,
) -> ExecRequest {
    ExecRequest {
        session: session.into(),
        workspace: ws.to_path_buf(),
        language: language.into(),
        code: code.into(),
        filename: None,
        policy: policy.clone(),
        allow_network: false,
        user_workspace: false,
    }
}

/// Runs a block to its end: the events, then the error that ended it (if any).
async fn events_and_error(
    exec: &DockerExecutor,
    req: ExecRequest,
) -> (Vec<ExecEvent>, Option<ExecError>) {
    let mut stream = exec.run(req, CancellationToken::new());
    let mut events = Vec::new();
    let mut err = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(e) => events.push(e),
            Err(e) => err = Some(e),
        }
    }
    (events, err)
}

#[tokio::test]
async fn no_daemon_gives_an_actionable_error_quickly() {
    let _env = ENV_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    unsafe { std::env::set_var("DOCKER_HOST", format!("unix://{}", sock.display())) };
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let req = request("nodaemon", ws.path(), "python", "print(1)", &policy());
    let (events, err) = events_and_error(&exec, req).await;
    assert!(events.is_empty(), "{events:?}");
    let Some(ExecError::Docker(msg)) = err else {
        panic!("expected a Docker error, got {err:?}")
    };
    assert!(t0.elapsed() < Duration::from_secs(6));
    assert!(msg.contains(&sock.display().to_string()), "{msg}");
    assert!(
        msg.contains("DOCKER_HOST") && msg.contains("Is Docker running"),
        "{msg}"
    );
    let checks = doctor_check(&image()).await;
    assert_eq!(checks[0].0, "docker daemon");
    let Err(fix) = &checks[0].1 else {
        panic!("{checks:?}")
    };
    assert!(fix.contains("Is Docker running"));
    assert!(checks.iter().skip(1).all(|(_, r)| r.is_err()));
}

#[tokio::test]
async fn missing_image_is_pulled_with_layer_and_byte_progress() {
    // No registry is reachable here, so the daemon is a stand-in on 127.0.0.1 speaking the
    // Engine API (over tcp://, which also exercises DOCKER_HOST=tcp). The real-daemon path of a
    // failing pull is covered by `missing_image_says_how_to_build_one`.
    use wiremock::matchers::{method, path_regex};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let _env = ENV_LOCK.lock().await;
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex(r"/version$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "ApiVersion": "1.41", "MinAPIVersion": "1.12", "Version": "20.10.24"
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/containers/create$"))
        .respond_with(ResponseTemplate::new(404).set_body_json(serde_json::json!({
            "message": "No such image: python:3.12-slim"
        })))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/containers/create$"))
        .respond_with(ResponseTemplate::new(500).set_body_json(serde_json::json!({
            "message": "stand-in daemon stops here"
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(r"/images/.+/json$"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(serde_json::json!({"message": "No such image"})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(r"/images/.+/json$"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"Id": "sha256:abc"})),
        )
        .mount(&server)
        .await;
    let progress = [
        r#"{"status":"Pulling from library/python","id":"3.12-slim"}"#,
        r#"{"status":"Pulling fs layer","progressDetail":{},"id":"aaa"}"#,
        r#"{"status":"Pulling fs layer","progressDetail":{},"id":"bbb"}"#,
        r#"{"status":"Downloading","progressDetail":{"current":100,"total":1000},"id":"aaa"}"#,
        r#"{"status":"Downloading","progressDetail":{"current":500,"total":2000},"id":"bbb"}"#,
        r#"{"status":"Download complete","progressDetail":{},"id":"aaa"}"#,
        r#"{"status":"Pull complete","progressDetail":{},"id":"aaa"}"#,
        r#"{"status":"Downloading","progressDetail":{"current":2000,"total":2000},"id":"bbb"}"#,
        r#"{"status":"Pull complete","progressDetail":{},"id":"bbb"}"#,
        r#"{"status":"Digest: sha256:0123"}"#,
        r#"{"status":"Status: Downloaded newer image for python:3.12-slim"}"#,
    ]
    .join("\r\n");
    Mock::given(method("POST"))
        .and(path_regex(r"/images/create$"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(progress, "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    unsafe { std::env::set_var("DOCKER_HOST", format!("tcp://{}", server.address())) };
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let mut p = policy();
    p.image = "python:3.12-slim".into();
    let mut stream = exec.run(
        request("pull", ws.path(), "python", "print(1)", &p),
        CancellationToken::new(),
    );
    let mut pulls = Vec::new();
    let mut end = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(ExecEvent::Pull(progress)) => pulls.push(progress),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => end = Some(e),
        }
    }
    let last = pulls.last().expect("pull progress events");
    assert_eq!(last.image, "python:3.12-slim");
    assert_eq!((last.layers, last.layers_done), (2, 2), "{pulls:?}");
    assert_eq!((last.current, last.total), (3000, 3000), "{pulls:?}");
    assert!(
        pulls.iter().any(|p| p.current > 0 && p.current < p.total),
        "{pulls:?}"
    );
    // After the pull the container is created again; the stand-in refuses, and that is reported.
    let Some(ExecError::Docker(msg)) = end else {
        panic!("{end:?}")
    };
    assert!(msg.contains("stand-in daemon stops here"), "{msg}");
}
