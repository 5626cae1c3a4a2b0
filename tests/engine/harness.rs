//! Drives the real orchestrator with the scripted model and a recording executor.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use proctor::config::{TeamConfig, parse_team};
use proctor::engine::cost::PriceTable;
use proctor::engine::{SessionHandle, SessionSetup, start};
use proctor::executor::{ExecError, ExecEvent, ExecOutcome, ExecRequest, Executor};
use proctor::protocol::{Event, EventKind, Op, SessionMode, StreamKind};
use proctor::provider::scripted::{ScriptedModel, ScriptedReply};
use proctor::provider::{ChatModel, ChatRequest};
use proctor::store::MemorySink;
use tokio_util::sync::CancellationToken;

/// Executor that records what it was asked to run and answers from a rule.
#[derive(Clone, Default)]
pub struct FakeExecutor {
    pub runs: Arc<Mutex<Vec<ExecRequest>>>,
    /// Code containing this text runs "forever" (until cancelled).
    pub hang_on: Option<String>,
    /// Fail every run with this sandbox error.
    pub fail_with: Option<String>,
    /// Refuse blocks whose filename hint is this (as the sandbox refuses an escaping path).
    pub refuse_filename: Option<String>,
    /// Send this output in these pieces, as an unbuffered `print` can arrive, before finishing.
    pub pieces: Option<Vec<&'static str>>,
    /// What every block "changed" in the workspace.
    pub changes: Option<proctor::workspace::WorkspaceDelta>,
    /// Blocks end as killed for growing the workspace past its limit.
    pub fill_workspace: bool,
    /// Blocks start, print these pieces, then fail with this sandbox error (a link cut mid-block).
    pub cut_after: Option<(Vec<&'static str>, String)>,
}

impl Executor for FakeExecutor {
    fn run(
        &self,
        request: ExecRequest,
        cancel: CancellationToken,
    ) -> BoxStream<'static, Result<ExecEvent, ExecError>> {
        self.runs.lock().unwrap().push(request.clone());
        if let Some(msg) = self.fail_with.clone() {
            return futures::stream::once(async move { Err(ExecError::Docker(msg)) }).boxed();
        }
        if let Some(bad) = self.refuse_filename.clone()
            && request.filename.as_deref() == Some(bad.as_str())
        {
            return futures::stream::once(async move {
                Err(ExecError::BadFilename {
                    filename: bad,
                    why: "it leaves the workspace".into(),
                })
            })
            .boxed();
        }
        if let Some((pieces, msg)) = self.cut_after.clone() {
            let mut events: Vec<Result<ExecEvent, ExecError>> = vec![Ok(ExecEvent::Started)];
            for p in pieces {
                events.push(Ok(ExecEvent::Output {
                    stream: StreamKind::Stdout,
                    text: p.to_string(),
                }));
            }
            events.push(Err(ExecError::Docker(msg)));
            return futures::stream::iter(events).boxed();
        }
        if let Some(pieces) = self.pieces.clone() {
            let mut events: Vec<Result<ExecEvent, ExecError>> = vec![Ok(ExecEvent::Started)];
            let output: String = pieces.concat();
            for p in pieces {
                events.push(Ok(ExecEvent::Output {
                    stream: StreamKind::Stdout,
                    text: p.to_string(),
                }));
            }
            events.push(Ok(ExecEvent::Finished(ExecOutcome {
                output,
                ..Default::default()
            })));
            return futures::stream::iter(events).boxed();
        }
        let hang = self
            .hang_on
            .as_ref()
            .is_some_and(|h| request.code.contains(h.as_str()));
        let code = request.code.clone();
        let changes = self.changes.clone();
        let fill = self.fill_workspace;
        let mut first = vec![Ok(ExecEvent::Started)];
        if hang {
            // A hanging block has said something before it hangs.
            first.push(Ok(ExecEvent::Output {
                stream: StreamKind::Stdout,
                text: "started working\n".into(),
            }));
        }
        let started = futures::stream::iter(first);
        let rest = futures::stream::once(async move {
            let mut events = vec![];
            if hang {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                }
                events.push(Ok(ExecEvent::Finished(ExecOutcome {
                    exit_code: 137,
                    cancelled: true,
                    output: "killed".into(),
                    ..Default::default()
                })));
                return futures::stream::iter(events);
            }
            let fails = code.contains("raise");
            let output = if fails {
                "Traceback (most recent call last):\nValueError: boom\n".to_string()
            } else {
                format!("ran {} bytes\n", code.len())
            };
            events.push(Ok(ExecEvent::Output {
                stream: if fails {
                    StreamKind::Stderr
                } else {
                    StreamKind::Stdout
                },
                text: output.clone(),
            }));
            events.push(Ok(ExecEvent::Finished(ExecOutcome {
                exit_code: if fill {
                    137
                } else if fails {
                    1
                } else {
                    0
                },
                duration_ms: 5,
                output,
                workspace_limit_exceeded: fill,
                changes,
                ..Default::default()
            })));
            futures::stream::iter(events)
        })
        .flatten();
        started.chain(rest).boxed()
    }

    fn shutdown(&self, _session: &str) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

pub fn team(toml: &str) -> TeamConfig {
    parse_team(std::path::Path::new("test-team.toml"), toml).expect("team parses")
}

/// Two agents on one scripted model.
pub const PAIR: &str = r#"
name = "t"
[[agents]]
name = "coder"
description = "writes python"
model = "scripted/m"
system = "You code."
can_execute = true
[[agents]]
name = "reviewer"
description = "reviews code"
model = "scripted/m"
system = "You review."
"#;

pub struct Session {
    pub handle: SessionHandle,
    pub model: ScriptedModel,
    pub exec: FakeExecutor,
    pub sink: MemorySink,
    pub seen: Vec<Event>,
}

pub struct Builder {
    pub team: TeamConfig,
    pub replies: Vec<ScriptedReply>,
    pub mode: SessionMode,
    pub exec: FakeExecutor,
    pub prices: PriceTable,
    pub resume: Option<Vec<Event>>,
    pub task: String,
    pub seed: Option<u64>,
    pub extra_models: Vec<ScriptedModel>,
    pub workspace: std::path::PathBuf,
}

impl Builder {
    pub fn new(team_toml: &str) -> Self {
        Self {
            team: team(team_toml),
            replies: Vec::new(),
            mode: SessionMode::Gate,
            exec: FakeExecutor::default(),
            prices: PriceTable::default(),
            resume: None,
            task: "write hello world".into(),
            seed: Some(7),
            extra_models: Vec::new(),
            workspace: std::env::temp_dir(),
        }
    }
    pub fn reply(mut self, agent: &str, text: &str) -> Self {
        self.replies.push(ScriptedReply::for_agent(agent, text));
        self
    }
    pub fn replies(mut self, r: Vec<ScriptedReply>) -> Self {
        self.replies.extend(r);
        self
    }
    pub fn mode(mut self, m: SessionMode) -> Self {
        self.mode = m;
        self
    }
    pub fn start(self) -> Session {
        let model = ScriptedModel::new("scripted/m", self.replies);
        let mut models: HashMap<String, Arc<dyn ChatModel>> = HashMap::new();
        models.insert("scripted/m".into(), Arc::new(model.clone()));
        for m in self.extra_models {
            models.insert(m.model_ref().to_string(), Arc::new(m));
        }
        let sink = MemorySink::default();
        let handle = start(SessionSetup {
            id: "test-session".into(),
            team: self.team,
            task: self.task,
            mode: self.mode,
            models,
            executor: Arc::new(self.exec.clone()),
            workspace: self.workspace,
            prices: self.prices,
            sink: Box::new(sink.clone()),
            resume: self.resume,
            seed: self.seed,
            image_override: None,
            workspace_record: None,
        });
        Session {
            handle,
            model,
            exec: self.exec,
            sink,
            seen: Vec::new(),
        }
    }
}

impl Session {
    pub fn send(&self, op: Op) {
        self.handle.ops.send(op).expect("engine alive");
    }

    /// Waits (max 5 s) for the first event matching `pred`, keeping everything seen.
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&EventKind) -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let ev = tokio::time::timeout_at(deadline, self.handle.events.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("timed out waiting for {what}; saw: {:#?}", self.types())
                })
                .unwrap_or_else(|| panic!("engine ended before {what}; saw: {:#?}", self.types()));
            self.seen.push(ev.clone());
            if pred(&ev.kind) {
                return ev;
            }
        }
    }

    pub fn types(&self) -> Vec<String> {
        self.seen
            .iter()
            .map(|e| e.kind.type_name().to_string())
            .collect()
    }

    pub fn speakers(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::SpeakerSelected { agent, .. } => Some(agent.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn requests(&self) -> Vec<ChatRequest> {
        self.model.requests()
    }

    /// Text of the last request sent for `agent`, all messages joined.
    pub fn last_request_text(&self, agent: &str) -> String {
        let r = self
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.agent == agent)
            .expect("a request for agent");
        r.messages
            .iter()
            .map(|m| format!("{:?}: {}", m.role, m.content))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn terminated_reason(&self) -> Option<String> {
        self.seen.iter().find_map(|e| match &e.kind {
            EventKind::Terminated { reason } => Some(reason.clone()),
            _ => None,
        })
    }
}

pub fn approval_id(ev: &Event) -> u64 {
    match &ev.kind {
        EventKind::ApprovalRequested { id, .. } => *id,
        other => panic!("not an approval: {other:?}"),
    }
}
