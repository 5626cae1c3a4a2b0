//! The teams proctor ships (teams/pair.toml, squad.toml, local-ollama.toml) run end to end, as
//! shipped, against a loopback server speaking OpenAI's streaming format, with only config.toml
//! pointing their provider at it; and the first steps that used to end in a bare error now say
//! what to do: no API key, an agent that cannot execute, a team where none can.

mod cli_support;

use cli_support::{Home, Run, finish, messages_of, of_type, write};
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "sk-test-TEAMS-0123456789abcdef";

fn team_file(name: &str) -> String {
    format!("{}/teams/{name}.toml", env!("CARGO_MANIFEST_DIR"))
}

/// One streamed chat completion with usage, as OpenAI sends it.
fn completion(text: &str) -> String {
    let content = serde_json::to_string(text).unwrap();
    let chunk = |delta: &str, finish: &str| {
        format!(
            r#"data: {{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{{"index":0,"delta":{delta},"finish_reason":{finish}}}]}}"#
        )
    };
    [
        chunk(r#"{"role":"assistant","content":""}"#, "null"),
        chunk(&format!(r#"{{"content":{content}}}"#), "null"),
        chunk("{}", r#""stop""#),
        r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":300,"completion_tokens":20,"total_tokens":320}}"#.to_string(),
        "data: [DONE]".to_string(),
    ]
    .iter()
    .map(|e| format!("{e}\n\n"))
    .collect()
}

/// A model that plays every role of the shipped teams: the selector names who should speak,
/// the planner plans, the coder writes a block and, once the executor has reported, says it is
/// done; the reviewer approves. Who is asked is read from the system prompt proctor sends.
fn play(req: &Request) -> ResponseTemplate {
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    let messages = body["messages"].as_array().unwrap();
    let system = messages[0]["content"].as_str().unwrap_or_default();
    let convo: String = messages
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let ran = convo.contains("[executor]:");
    let is = |agent: &str| {
        system.contains(&format!("You are {agent} in a group chat"))
            || system.contains(&format!("You are {agent}, working with"))
    };
    let text = if system.contains("You choose who speaks next") {
        if ran { "reviewer" } else { "planner" }
    } else if is("planner") {
        "1. coder: print 6 * 7. 2. reviewer: check it."
    } else if is("coder") && !ran {
        "Here it is:\n```python\nprint(6 * 7)\n```"
    } else if is("coder") {
        "It printed 42, as it should. TERMINATE"
    } else if is("reviewer") {
        "Correct: 42. TERMINATE"
    } else {
        panic!("who is this? {system}")
    };
    ResponseTemplate::new(200).set_body_raw(completion(text), "text/event-stream")
}

async fn loopback() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(play)
        .mount(&server)
        .await;
    server
}

/// `proctor run --team FILE --headless --json --approve auto` in `home`.
fn run_team(home: &Home, team: &str) -> (Run, Vec<Value>) {
    let mut c = home.cmd();
    c.args(["run", "--team", team])
        .args(["--task", "print 6 * 7"])
        .args(["--headless", "--json", "--approve", "auto"])
        .env("PROCTOR_TEST_KEY", KEY);
    let run = finish(c, "");
    assert_eq!(run.code, 0, "{team}: stderr: {}", run.stderr);
    let events = run.events();
    assert_eq!(
        events.last().unwrap()["type"],
        "terminated",
        "{}",
        run.stdout
    );
    (run, events)
}

fn ran_42(events: &[Value]) -> bool {
    of_type(events, "execution_finished")
        .iter()
        .any(|e| e["exit_code"] == 0 && e["output"] == "42\n")
}

fn speakers(events: &[Value]) -> Vec<String> {
    of_type(events, "speaker_selected")
        .iter()
        .map(|e| e["agent"].as_str().unwrap().to_string())
        .collect()
}

/// The config.toml that points the built-in `openai` provider at `server`.
fn openai_on(server: &MockServer) -> String {
    format!(
        "[providers.openai]\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key_env = \"PROCTOR_TEST_KEY\"\n",
        server.uri()
    )
}

async fn requests(server: &MockServer) -> Vec<(Value, Option<String>)> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                serde_json::from_slice(&r.body).unwrap(),
                r.headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_string()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn pair_runs_end_to_end_on_an_openai_format_server() {
    let server = loopback().await;
    let home = Home::new(&openai_on(&server));
    let (_, events) = tokio::task::spawn_blocking(move || run_team(&home, &team_file("pair")))
        .await
        .unwrap();
    assert!(ran_42(&events), "the coder's block ran in the sandbox");
    assert_eq!(speakers(&events), ["coder", "coder"]);
    let sent = requests(&server).await;
    assert_eq!(sent.len(), 2);
    for (body, auth) in &sent {
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(auth.as_deref(), Some(format!("Bearer {KEY}").as_str()));
    }
    // Priced from the built-in table, as the team's budget expects.
    assert!(
        of_type(&events, "usage")
            .iter()
            .all(|u| u["usd"].as_f64().unwrap() > 0.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn squad_runs_end_to_end_with_the_llm_selector_along_its_transitions() {
    let server = loopback().await;
    let home = Home::new(&openai_on(&server));
    let (_, events) = tokio::task::spawn_blocking(move || run_team(&home, &team_file("squad")))
        .await
        .unwrap();
    assert!(ran_42(&events));
    assert_eq!(speakers(&events), ["planner", "coder", "reviewer"]);
    // The selector was asked where there was a choice (the start, after the coder), and not
    // after the planner, whose only allowed successor is the coder.
    let selector_calls = of_type(&events, "usage")
        .iter()
        .filter(|u| u["agent"] == "selector")
        .count();
    assert_eq!(selector_calls, 2);
    assert_eq!(requests(&server).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn local_ollama_runs_end_to_end_with_the_config_its_header_shows() {
    let server = loopback().await;
    // The config.toml lines the team file's header tells the user to add, pointed at loopback.
    let text = std::fs::read_to_string(team_file("local-ollama")).unwrap();
    let config: String = text
        .lines()
        .skip_while(|l| !l.starts_with("# [providers.ollama]"))
        .take_while(|l| *l != "#")
        .map(|l| l.trim_start_matches('#').trim_start().to_string() + "\n")
        .collect();
    assert!(
        config.contains("base_url = \"http://localhost:11434/v1\""),
        "{config}"
    );
    let config = config.replace("http://localhost:11434", &server.uri());
    let home = Home::new(&config);
    let (_, events) =
        tokio::task::spawn_blocking(move || run_team(&home, &team_file("local-ollama")))
            .await
            .unwrap();
    assert!(ran_42(&events));
    assert_eq!(speakers(&events), ["coder", "reviewer"]);
    let sent = requests(&server).await;
    for (body, auth) in &sent {
        assert_eq!(body["model"], "qwen2.5-coder:7b");
        assert_eq!(auth, &None, "a local server gets no key");
    }
    // `free = true`: every call costs exactly nothing, and is not unpriced.
    assert!(of_type(&events, "usage").iter().all(|u| u["usd"] == 0.0));
}

#[test]
fn no_api_key_for_the_default_team_says_what_to_do_instead() {
    let home = Home::new("");
    for args in [
        vec![],
        vec!["run", "--headless", "--task", "x"],
        vec![
            "run",
            "--team",
            &team_file("squad"),
            "--headless",
            "--json",
            "--task",
            "x",
        ],
    ] {
        let mut c = home.cmd();
        c.args(&args);
        let run = finish(c, "");
        assert_eq!(run.code, 1, "{args:?}: {}", run.stderr);
        let err = &run.stderr;
        for what in [
            "$OPENAI_API_KEY is not set",
            "export OPENAI_API_KEY=",
            "ANTHROPIC_API_KEY",
            "teams/local-ollama.toml",
            "proctor demo",
        ] {
            assert!(err.contains(what), "{args:?}: {what} missing from:\n{err}");
        }
        assert!(err.lines().count() <= 5, "a few lines:\n{err}");
        assert!(run.stdout.is_empty(), "nothing on stdout: {}", run.stdout);
    }
    // Nothing was started, so nothing was saved.
    let sessions = home.path("data").join("sessions");
    let saved = std::fs::read_dir(&sessions).map(|d| d.count()).unwrap_or(0);
    assert_eq!(saved, 0);
}

/// A home whose config.toml has a scripted provider `fake` playing `script`.
fn scripted_home(script: &str) -> Home {
    let home = Home::new("");
    let path = write(home.dir.path(), "script.toml", script);
    write(
        home.dir.path(),
        "config.toml",
        &format!(
            "[providers.fake]\nkind = \"scripted\"\nscript = \"{}\"\n",
            path.display()
        ),
    );
    home
}

fn run_scripted(home: &Home, team: &str) -> Vec<Value> {
    let team = write(home.dir.path(), "team.toml", team);
    let mut c = home.cmd();
    c.args(["run", "--team"]).arg(team).args([
        "--task",
        "t",
        "--headless",
        "--json",
        "--approve",
        "auto",
    ]);
    let run = finish(c, "");
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    run.events()
}

fn notices(events: &[Value]) -> Vec<String> {
    of_type(events, "notice")
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn code_from_an_agent_that_cannot_execute_is_explained_once() {
    let home = scripted_home(
        r#"
[[reply]]
agent = "coder"
text = "Reviewer, what do you suggest?"
[[reply]]
agent = "reviewer"
text = "Try:\n```python\nprint(1)\n```"
[[reply]]
agent = "coder"
text = "Noted."
[[reply]]
agent = "reviewer"
text = "Or:\n```bash\necho 2\n```\nTERMINATE"
"#,
    );
    let events = run_scripted(
        &home,
        "name = \"t\"\n[[agents]]\nname = \"coder\"\nmodel = \"fake/m\"\ncan_execute = true\n\
         [[agents]]\nname = \"reviewer\"\nmodel = \"fake/m\"\n",
    );
    let said: Vec<String> = notices(&events)
        .into_iter()
        .filter(|n| n.contains("can_execute"))
        .collect();
    assert_eq!(
        said,
        [
            "reviewer's code is shown, never offered to run: reviewer has can_execute = false in the team file"
        ]
    );
    assert!(of_type(&events, "approval_requested").is_empty());
    assert_eq!(messages_of(&events, "reviewer").len(), 2);
}

#[test]
fn a_team_where_no_agent_can_execute_says_so_at_the_start() {
    let home = scripted_home(
        r#"
[[reply]]
agent = "writer"
text = "```python\nprint(1)\n```\nTERMINATE"
"#,
    );
    let events = run_scripted(
        &home,
        "name = \"talkers\"\n[[agents]]\nname = \"writer\"\nmodel = \"fake/m\"\n",
    );
    assert_eq!(events[0]["type"], "session_started");
    assert_eq!(events[1]["type"], "notice");
    let first = events[1]["message"].as_str().unwrap();
    assert!(
        first.starts_with("no agent of team talkers can execute code"),
        "{first}"
    );
    assert!(first.contains("can_execute = true"));
    assert!(of_type(&events, "execution_started").is_empty());
}
