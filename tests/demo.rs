//! `proctor demo` as a newcomer meets it: the shipped script played by the real binary, code run
//! for real in the Docker sandbox, and the story branching on the human's decisions (auto,
//! rejected with a reason, edited, resumed from a fork), in JSON and on the console.

mod cli_support;

use cli_support::{Home, finish, messages_of, of_type};
use proctor::engine::codeblocks::extract_blocks;
use proctor::provider::scripted::{DEMO_SCRIPT, Script};
use serde_json::{Value, json};

fn approve(id: u64, block: u64) -> String {
    json!({"id": id, "block": block, "decision": "approve"}).to_string() + "\n"
}

fn reject(id: u64, block: u64, reason: &str) -> String {
    json!({"id": id, "block": block, "decision": "reject", "reason": reason}).to_string() + "\n"
}

fn edit(id: u64, block: u64, code: &str) -> String {
    json!({"id": id, "block": block, "decision": "edit", "code": code}).to_string() + "\n"
}

fn skip(id: u64, block: u64) -> String {
    json!({"id": id, "block": block, "decision": "skip"}).to_string() + "\n"
}

/// `proctor demo --headless --json` with `extra` flags and `stdin`; asserts it terminated.
fn demo_json(home: &Home, extra: &[&str], stdin: &str) -> Vec<Value> {
    let mut c = home.cmd();
    c.args(["demo", "--headless", "--json"]).args(extra);
    let run = finish(c, stdin);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let events = run.events();
    assert_eq!(
        events.last().unwrap()["type"],
        "terminated",
        "{}",
        run.stdout
    );
    events
}

/// The finished execution of block `block` of approval `id`.
fn finished(events: &[Value], id: u64, block: u64) -> Option<&Value> {
    of_type(events, "execution_finished")
        .into_iter()
        .find(|e| e["id"] == id && e["block"] == block)
}

fn output(events: &[Value], id: u64, block: u64) -> String {
    finished(events, id, block)
        .unwrap_or_else(|| panic!("block {block} of approval {id} did not run"))["output"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The first agent message after the executor's report on approval `id`.
fn reply_after_report(events: &[Value], id: u64) -> (String, String) {
    let marker = format!("(approval #{id})");
    let at = events
        .iter()
        .position(|e| {
            e["type"] == "message"
                && e["agent"] == "executor"
                && e["content"].as_str().unwrap().contains(&marker)
        })
        .unwrap_or_else(|| panic!("no report on approval {id}"));
    let next = events[at..]
        .iter()
        .find(|e| e["type"] == "message" && e["agent"] != "executor")
        .unwrap();
    (
        next["agent"].as_str().unwrap().to_string(),
        next["content"].as_str().unwrap().to_string(),
    )
}

fn notices(events: &[Value]) -> Vec<String> {
    of_type(events, "notice")
        .into_iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

/// The demo's first version of `wordcount.py`, with the reviewer's fix applied.
fn first_version_fixed() -> String {
    let script = Script::parse(DEMO_SCRIPT).unwrap();
    let coder = script
        .reply
        .iter()
        .find(|r| r.agent.as_deref() == Some("coder"))
        .unwrap();
    let code = extract_blocks(&coder.text).remove(0).code;
    assert!(code.contains("    if word[0].isdigit():"));
    code.replace(
        "    if word[0].isdigit():",
        "    if not word or word[0].isdigit():",
    )
}

#[test]
fn the_demo_auto_terminates_with_the_real_traceback_and_the_fixed_result() {
    let home = Home::new("");
    let events = demo_json(&home, &["--approve", "auto"], "");
    let session = events[0]["session"].as_str().unwrap();
    assert!(
        events.last().unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("TERMINATE")
    );

    // The first version fails for real in the sandbox.
    let first = finished(&events, 1, 0).unwrap();
    assert_eq!(first["exit_code"], 1);
    let traceback = output(&events, 1, 0);
    assert!(traceback.contains("Traceback (most recent call last):"));
    // The reviewer quotes the traceback, and every line it quotes is in what the run printed.
    let (agent, review) = reply_after_report(&events, 1);
    assert_eq!(agent, "reviewer");
    for quoted in [
        "File \"/workspace/wordcount.py\", line 11, in <module>",
        "IndexError: string index out of range",
    ] {
        assert!(review.contains(quoted), "the reviewer quotes {quoted}");
        assert!(
            traceback.contains(quoted),
            "{quoted} is not in the run's output: {traceback}"
        );
    }
    // The traceback is not scripted: it reached the transcript from the run's stderr.
    assert!(!DEMO_SCRIPT.contains("Traceback (most recent call last)"));
    let streamed: String = of_type(&events, "execution_output")
        .into_iter()
        .filter(|e| e["id"] == 1 && e["stream"] == "stderr")
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect();
    assert!(streamed.contains("IndexError: string index out of range"));

    // The fix runs, writes the CSV, and the shell block shows it.
    assert_eq!(finished(&events, 2, 0).unwrap()["exit_code"], 0);
    assert_eq!(finished(&events, 2, 1).unwrap()["exit_code"], 0);
    let shown = output(&events, 2, 1).replace('\r', "");
    assert!(
        shown.contains("word,count\nthe,5\nfox,3\ndog,3\nis,3\n"),
        "{shown}"
    );
    let csv = std::fs::read_to_string(home.workspace(session).join("top_words.csv")).unwrap();
    assert_eq!(
        csv.replace('\r', "").lines().count(),
        11,
        "header and ten rows"
    );

    // Approved, the download meets a sandbox without network.
    let download = finished(&events, 3, 0).unwrap();
    assert_ne!(download["exit_code"], 0);
    assert!(output(&events, 3, 0).contains("urlopen error"));
    // The offline test reuses the fixed counter on 200,000 tokens.
    let long = output(&events, 4, 0);
    for word in ["runs", "sleeps", "the"] {
        assert!(
            long.lines()
                .any(|l| l.trim().starts_with(&format!("{word} "))),
            "{long}"
        );
    }
    assert!(!long.contains("2024") && !long.contains(" - "), "{long}");

    // Costs move, at demo prices that say so; the reviewer's quoted fix is explained once.
    let usages = of_type(&events, "usage");
    assert_eq!(usages.len(), 12, "one call per scripted reply");
    assert!(usages.iter().all(|u| u["usd"].as_f64().unwrap() > 0.0));
    let said = notices(&events);
    assert!(
        said[0].starts_with("demo prices:") && said[0].contains("nothing is billed"),
        "{said:?}"
    );
    let not_offered: Vec<&String> = said.iter().filter(|n| n.contains("can_execute")).collect();
    assert_eq!(not_offered.len(), 1, "{said:?}");
    assert!(not_offered[0].starts_with("reviewer's code is shown, never offered to run"));
}

#[test]
fn rejecting_the_download_with_a_reason_changes_the_plan_and_a_resumed_fork_keeps_the_branch() {
    let home = Home::new("");
    let reason = "no network: tests must run offline";
    let input = [
        approve(1, 0),
        approve(2, 0),
        approve(2, 1),
        reject(3, 0, reason),
        approve(4, 0),
    ]
    .concat();
    let events = demo_json(&home, &[], &input);
    let session = events[0]["session"].as_str().unwrap().to_string();
    assert!(
        finished(&events, 3, 0).is_none(),
        "the rejected download never ran"
    );
    // The next reply answers the reason, quoting it; the plan and the code follow it.
    let (agent, next) = reply_after_report(&events, 3);
    assert_eq!(agent, "reviewer");
    assert!(
        next.contains(&format!("You turned the download down: “{reason}”")),
        "{next}"
    );
    let planner = messages_of(&events, "planner");
    assert!(planner[3].contains(&format!("because of your “{reason}”")));
    let coder = messages_of(&events, "coder");
    assert!(coder[3].starts_with(&format!("Understood: “{reason}”")));
    assert_eq!(finished(&events, 4, 0).unwrap()["exit_code"], 0);

    // A fork that ends with the report of the rejection, resumed: the replies it has not had
    // yet take the rejected branch, read from the replayed events.
    let report_seq = events
        .iter()
        .find(|e| {
            e["type"] == "message"
                && e["agent"] == "executor"
                && e["content"].as_str().unwrap().contains("(approval #3)")
        })
        .unwrap()["seq"]
        .as_u64()
        .unwrap();
    let mut c = home.cmd();
    c.args([
        "sessions",
        "fork",
        &session,
        "--at",
        &report_seq.to_string(),
    ]);
    let fork = finish(c, "");
    assert_eq!(fork.code, 0, "{}", fork.stderr);
    let fork_id = fork.stdout.trim().to_string();
    let mut c = home.cmd();
    c.args(["resume", &fork_id, "--headless", "--json"]);
    let resumed = finish(c, &skip(4, 0));
    assert_eq!(resumed.code, 0, "stderr: {}", resumed.stderr);
    let resumed = resumed.events();
    let new: Vec<Value> = resumed
        .iter()
        .filter(|e| e["seq"].as_u64().unwrap() > report_seq)
        .cloned()
        .collect();
    assert!(messages_of(&new, "reviewer")[0].contains(&format!("“{reason}”")));
    assert!(messages_of(&new, "planner")[0].contains(&format!("“{reason}”")));
    assert!(messages_of(&new, "coder")[0].starts_with(&format!("Understood: “{reason}”")));
    // The session's last decision was the skip of the long-text test.
    assert!(messages_of(&new, "reviewer")[1].starts_with("The long-text test was skipped"));
    assert_eq!(new.last().unwrap()["type"], "terminated");
}

#[test]
fn edits_are_acknowledged_and_a_fixed_first_block_leaves_no_traceback() {
    let home = Home::new("");
    let offline = "print('counting offline instead')";
    let input = [
        edit(1, 0, &first_version_fixed()),
        approve(2, 0),
        approve(2, 1),
        edit(3, 0, offline),
        approve(4, 0),
    ]
    .concat();
    let events = demo_json(&home, &[], &input);
    let resolved = of_type(&events, "approval_resolved");
    assert_eq!(resolved[0]["decision"], "edited");
    // The human's fix ran instead: no traceback anywhere, and the reviewer says so.
    assert_eq!(finished(&events, 1, 0).unwrap()["exit_code"], 0);
    assert!(
        of_type(&events, "execution_finished")
            .iter()
            .all(|e| !e["output"].as_str().unwrap().contains("Traceback"))
    );
    let (_, review) = reply_after_report(&events, 1);
    assert!(
        review.starts_with("You edited the coder's block before it ran"),
        "{review}"
    );
    assert!(!review.contains("line 11"));
    // The edited download ran as edited, and both the reviewer and the coder acknowledge it.
    assert_eq!(output(&events, 3, 0).trim(), "counting offline instead");
    let (agent, next) = reply_after_report(&events, 3);
    assert_eq!(agent, "reviewer");
    assert!(
        next.starts_with("You edited the download before it ran"),
        "{next}"
    );
    assert!(messages_of(&events, "coder")[3].starts_with("Thanks for the edit to my download"));
}

#[test]
fn the_console_demo_takes_typed_decisions_and_shows_demo_prices() {
    let home = Home::new("");
    let mut c = home.cmd();
    c.arg("demo");
    let run = finish(c, "y\ny\ny\nn please keep it offline\ny\n");
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let out = &run.stdout;
    // The real traceback on the console, then the reply to the typed reason.
    assert!(
        out.contains("! IndexError: string index out of range"),
        "{out}"
    );
    assert!(out.contains("You turned the download down: “please keep it offline”"));
    assert!(out.contains("· demo prices:"));
    assert!(out.contains(" demo price · session $"), "{out}");
    assert!(out.contains("(demo prices; nothing is billed)"));
    assert!(out.contains("· reviewer's code is shown, never offered to run"));
    assert!(out.contains("■ session ended: reviewer said TERMINATE"));
}

#[test]
fn a_missing_sandbox_image_says_how_to_build_or_pull_one() {
    let home = Home::new("");
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_proctor"));
    c.arg("--config")
        .arg(home.path("config.toml"))
        .arg("--data-dir")
        .arg(home.path("data"))
        .args(["--image", "proctor-test-no-such-image:none"])
        .args(["demo", "--headless", "--approve", "auto"]);
    let run = finish(c, "");
    assert_eq!(
        run.code, 2,
        "an auto run stops at the pause: {}",
        run.stderr
    );
    // The one line on stderr carries the fix, whatever Docker said after it.
    let line = run.stderr.lines().last().unwrap_or_default();
    for fix in [
        "proctor-test-no-such-image:none",
        "scripts/build-sandbox-image.sh",
        "--image proctor-sandbox:bookworm",
        "proctor resume",
    ] {
        assert!(line.contains(fix), "{fix} missing from: {line}");
    }
}
