//! Loopback servers and helpers shared by the provider wire tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::BoxStream;
use proctor::config::{ProviderConfig, ProviderKind};
use proctor::provider::{ChatChunk, ChatMessage, ChatModel, ChatRequest, ProviderError, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};

/// The fake key every test uses; it must never show up in errors or Debug output.
pub const SECRET: &str = "sk-test-PROCTOR-SECRET-4f1c9d2e7a";

static ENV_LOCK: Mutex<()> = Mutex::new(());

/// A provider config pointing at `base_url`, key in env var `env`.
pub fn provider(kind: ProviderKind, base_url: &str, env: &str) -> ProviderConfig {
    ProviderConfig {
        kind,
        base_url: Some(base_url.to_string()),
        api_key_env: Some(env.to_string()),
        api_version: None,
        anthropic_version: None,
        idle_timeout_s: None,
        connect_timeout_s: None,
        max_retries: None,
        free: false,
        script: None,
    }
}

/// Sets `env` to `value` and runs `build` under one lock, so no other test reads the
/// environment while it changes.
pub fn with_env<T>(env: &str, value: &str, build: impl FnOnce() -> T) -> T {
    let _guard = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: every env access of these tests happens under ENV_LOCK.
    unsafe { std::env::set_var(env, value) };
    build()
}

/// A one-message request.
pub fn request(text: &str) -> ChatRequest {
    ChatRequest {
        model: String::new(),
        system: "You are terse.".into(),
        messages: vec![ChatMessage {
            role: Role::User,
            content: text.into(),
        }],
        max_tokens: Some(64),
        temperature: None,
        agent: "coder".into(),
    }
}

/// Everything a stream yielded: chunks until the end or the first error.
pub struct Outcome {
    pub chunks: Vec<ChatChunk>,
    pub error: Option<ProviderError>,
}

impl Outcome {
    pub fn text(&self) -> String {
        self.chunks
            .iter()
            .filter_map(|c| match c {
                ChatChunk::Delta(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn retries(&self) -> Vec<(u32, u64, String)> {
        self.chunks
            .iter()
            .filter_map(|c| match c {
                ChatChunk::Retrying {
                    attempt,
                    wait_ms,
                    reason,
                } => Some((*attempt, *wait_ms, reason.clone())),
                _ => None,
            })
            .collect()
    }
}

/// Drains a stream with a generous overall guard (tests must not hang).
pub async fn collect(mut s: BoxStream<'static, Result<ChatChunk, ProviderError>>) -> Outcome {
    let mut chunks = Vec::new();
    let mut error = None;
    let run = async {
        while let Some(item) = s.next().await {
            match item {
                Ok(c) => chunks.push(c),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("stream did not finish within 30 s");
    Outcome { chunks, error }
}

/// Runs one call on `model` and collects it.
pub async fn call(model: &dyn ChatModel, text: &str) -> Outcome {
    collect(model.stream(request(text), tokio_util::sync::CancellationToken::new())).await
}

/// One step of a raw server's reply.
#[derive(Debug, Clone)]
pub enum Step {
    /// Write these bytes (and flush).
    Write(Vec<u8>),
    /// Pause.
    Sleep(Duration),
    /// Wait until the test calls `RawServer::release`.
    Gate,
    /// Keep the connection open, sending nothing, until the client closes it.
    Stall,
}

/// Response head of a close-delimited event stream.
pub fn sse_head() -> Step {
    Step::Write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n"
            .to_vec(),
    )
}

pub fn write(s: &str) -> Step {
    Step::Write(s.as_bytes().to_vec())
}

/// A raw HTTP/1.1 server on 127.0.0.1 that answers every connection with the same steps,
/// records the requests, and notes when a client hung up during a stall.
pub struct RawServer {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<String>>>,
    gate: Arc<Notify>,
    pub hangups: mpsc::UnboundedReceiver<Instant>,
}

impl RawServer {
    pub async fn start(steps: Vec<Step>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Notify::new());
        let (tx, hangups) = mpsc::unbounded_channel();
        let reqs = Arc::clone(&requests);
        let g = Arc::clone(&gate);
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let steps = steps.clone();
                let reqs = Arc::clone(&reqs);
                let g = Arc::clone(&g);
                let tx = tx.clone();
                tokio::spawn(async move { serve(sock, steps, reqs, g, tx).await });
            }
        });
        Self {
            addr,
            requests,
            gate,
            hangups,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn release(&self) {
        self.gate.notify_one();
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().map(|r| r.len()).unwrap_or(0)
    }
}

async fn serve(
    mut sock: TcpStream,
    steps: Vec<Step>,
    reqs: Arc<Mutex<Vec<String>>>,
    gate: Arc<Notify>,
    hangups: mpsc::UnboundedSender<Instant>,
) {
    let _ = sock.set_nodelay(true);
    let Some(req) = read_request(&mut sock).await else {
        return;
    };
    if let Ok(mut r) = reqs.lock() {
        r.push(req);
    }
    for step in steps {
        match step {
            Step::Write(bytes) => {
                if sock.write_all(&bytes).await.is_err() || sock.flush().await.is_err() {
                    let _ = hangups.send(Instant::now());
                    return;
                }
            }
            Step::Sleep(d) => tokio::time::sleep(d).await,
            Step::Gate => gate.notified().await,
            Step::Stall => {
                let mut buf = [0u8; 1024];
                loop {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            let _ = hangups.send(Instant::now());
                            return;
                        }
                        Ok(_) => {}
                    }
                }
            }
        }
    }
    let _ = sock.shutdown().await;
}

/// Reads one request (head and Content-Length body) and returns it as text.
async fn read_request(sock: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = sock.read(&mut tmp).await.ok()?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            return Some(String::from_utf8_lossy(&buf).into_owned());
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
