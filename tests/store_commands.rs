//! The session commands as library calls: list (states, counts, cost, the summary index), export
//! (Markdown and JSON snapshots), fork, rm, and id resolution.

mod store_support;

use proctor::protocol::{CodeBlock, DecisionKind, Event, EventKind, PauseKind};
use proctor::store::{
    EventSink, SessionState, SessionStore, StoreError, format_session_table, resolve_data_dir,
};
use store_support::{demo_session, events_of, every_kind, started};

const FINISHED: &str = "01900000-0000-7000-8000-000000000001";
const WAITING: &str = "01900000-0000-7000-8000-000000000002";
const PAUSED: &str = "01900000-0000-7000-8000-000000000003";
const CRASHED: &str = "01900000-0000-7000-8000-000000000004";

async fn save(store: &SessionStore, events: &[Event]) {
    let id = events[0].session.clone();
    let mut writer = store.create(&id, &events[0]).unwrap();
    for ev in &events[1..] {
        writer.append(ev).await.unwrap();
    }
    writer.close().await.unwrap();
}

fn waiting_session(id: &str) -> Vec<Event> {
    events_of(
        id,
        vec![
            started("Waits for the human"),
            EventKind::Message {
                agent: "coder".into(),
                content: "two blocks".into(),
                to: None,
            },
            EventKind::ApprovalRequested {
                id: 7,
                agent: "coder".into(),
                blocks: vec![
                    CodeBlock {
                        index: 0,
                        language: "python".into(),
                        code: "1".into(),
                        filename: None,
                    },
                    CodeBlock {
                        index: 1,
                        language: "python".into(),
                        code: "2".into(),
                        filename: None,
                    },
                ],
            },
            EventKind::ApprovalResolved {
                id: 7,
                block: 0,
                decision: DecisionKind::Approved,
                code: None,
                reason: None,
                by_rule: None,
                allow_network: false,
            },
        ],
    )
}

fn paused_session(id: &str) -> Vec<Event> {
    events_of(
        id,
        vec![
            started("Over budget"),
            EventKind::Message {
                agent: "coder".into(),
                content: "hi".into(),
                to: None,
            },
            EventKind::Usage {
                agent: "coder".into(),
                model: "openai/gpt-4o".into(),
                input_tokens: 10,
                output_tokens: 10,
                cached_tokens: 0,
                cache_creation_tokens: 0,
                usd: Some(2.5),
                estimated: false,
            },
            EventKind::Paused {
                reason: "budget of $2.00 reached".into(),
                kind: PauseKind::Budget,
            },
        ],
    )
}

fn crashed_session(id: &str) -> Vec<Event> {
    events_of(
        id,
        vec![
            started("Killed mid-turn"),
            EventKind::Message {
                agent: "human".into(),
                content: "go".into(),
                to: None,
            },
            EventKind::SpeakerSelected {
                agent: "coder".into(),
                note: None,
            },
        ],
    )
}

async fn four_sessions(store: &SessionStore) {
    save(store, &demo_session(FINISHED)).await;
    save(store, &waiting_session(WAITING)).await;
    save(store, &paused_session(PAUSED)).await;
    save(store, &crashed_session(CRASHED)).await;
}

#[tokio::test]
async fn list_shows_each_sessions_state_messages_and_cost() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SessionStore::open(tmp.path()).unwrap();
    four_sessions(&store).await;
    let list = store.list().unwrap();
    let ids: Vec<&str> = list.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![CRASHED, PAUSED, WAITING, FINISHED],
        "newest first"
    );
    let states: Vec<SessionState> = list.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        vec![
            SessionState::Crashed,
            SessionState::Paused,
            SessionState::WaitingForApproval,
            SessionState::Finished
        ]
    );
    let finished = &list[3];
    assert_eq!(finished.task, "Print the numbers 1 to 3");
    assert_eq!(finished.team, "pair");
    assert_eq!(finished.messages, 3);
    assert!((finished.cost_usd - 0.000_297).abs() < 1e-12);
    assert_eq!(finished.unpriced_calls, 1);
    assert_eq!(finished.started_ms, 1_790_000_000_000);
    assert_eq!(finished.last_activity_ms, 1_790_000_000_000 + 17_000);
    insta::assert_snapshot!("sessions_list", format_session_table(&list));
}

#[tokio::test]
async fn an_open_session_is_listed_as_running_with_its_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SessionStore::open(tmp.path()).unwrap();
    save(&store, &crashed_session(CRASHED)).await;
    let (_, _, writer) = store.open_existing(CRASHED).unwrap();
    let row = store.summary(CRASHED).unwrap();
    assert_eq!(row.state, SessionState::Running);
    assert_eq!(row.pid, Some(std::process::id()));
    let table = format_session_table(&[row]);
    assert!(
        table.contains(&format!("running (pid {})", std::process::id())),
        "{table}"
    );
    writer.close().await.unwrap();
    assert_eq!(store.summary(CRASHED).unwrap().state, SessionState::Crashed);
}

#[tokio::test]
async fn list_trusts_the_summary_and_reads_only_what_was_appended_since() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SessionStore::open(tmp.path()).unwrap();
    save(&store, &demo_session(FINISHED)).await;
    let log = store.log_path(FINISHED);
    let original = std::fs::read(&log).unwrap();

    // Blank out the body of the log, same length: list must not have read it.
    let mut blanked = original.clone();
    for b in &mut blanked[..original.len() - 1] {
        if *b != b'\n' {
            *b = b' ';
        }
    }
    std::fs::write(&log, &blanked).unwrap();
    let row = store.summary(FINISHED).unwrap();
    assert_eq!(row.messages, 3);
    assert_eq!(row.state, SessionState::Finished);

    // A record appended after the summary is read (and only it).
    let more = Event {
        seq: 99,
        session: FINISHED.into(),
        ts_ms: 1_800_000_000_000,
        kind: EventKind::Message {
            agent: "human".into(),
            content: "one more".into(),
            to: None,
        },
    };
    let mut grown = blanked.clone();
    grown.extend_from_slice(serde_json::to_string(&more).unwrap().as_bytes());
    grown.push(b'\n');
    std::fs::write(&log, &grown).unwrap();
    let row = store.summary(FINISHED).unwrap();
    assert_eq!(row.messages, 4);
    assert_eq!(row.last_seq, 99);
    assert_eq!(row.last_activity_ms, 1_800_000_000_000);
    assert_eq!(
        row.state,
        SessionState::Crashed,
        "a message after the end reopens the session"
    );

    // Without a summary the whole log is read, and the summary is rebuilt.
    let mut restored = original.clone();
    restored.extend_from_slice(&grown[original.len()..]);
    std::fs::write(&log, &restored).unwrap();
    std::fs::remove_file(store.session_dir(FINISHED).join("summary.json")).unwrap();
    let row = store.summary(FINISHED).unwrap();
    assert_eq!(row.messages, 4);
    assert!(store.session_dir(FINISHED).join("summary.json").exists());
}

#[tokio::test]
async fn markdown_export_reads_like_a_transcript() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SessionStore::open(tmp.path()).unwrap();
    save(&store, &demo_session(FINISHED)).await;
    let md = store.export_md(FINISHED).unwrap();
    // What a reader looks for, before the full snapshot.
    assert!(md.contains("### coder"));
    assert!(md.contains("```python\n# filename: count.py"));
    assert!(md.contains("-    print(i)\n+    print(f\"n={i}\")"), "{md}");
    assert!(md.contains("rejected**: do not delete things"));
    assert!(md.contains("n=1\nn=2\nn=3"));
    // Output holding a fence is fenced with a longer one.
    assert!(md.contains("````text\nls: cannot access '```'"), "{md}");
    insta::assert_snapshot!("export_demo_md", md);
}

#[tokio::test]
async fn markdown_export_covers_every_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SessionStore::open(tmp.path()).unwrap();
    save(&store, &events_of(WAITING, every_kind())).await;
    insta::assert_snapshot!("export_every_kind_md", store.export_md(WAITING).unwrap());
}

#[tokio::test]
async fn json_export_is_the_persisted_events_one_per_line() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SessionStore::open(tmp.path()).unwrap();
    let events = demo_session(FINISHED);
    save(&store, &events).await;
    let json = store.export_json(FINISHED).unwrap();
    let back: Vec<Event> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(back, events);
    insta::assert_snapshot!("export_demo_json", json);
}

#[tokio::test]
async fn fork_copies_events_up_to_seq_under_a_new_id() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SessionStore::open(tmp.path()).unwrap();
    let events = demo_session(FINISHED);
    save(&store, &events).await;
    std::fs::write(store.workspace_dir(FINISHED).join("count.py"), "x").unwrap();

    let new_id = store.fork(FINISHED, 5).unwrap();
    assert_ne!(new_id, FINISHED);
    let (forked, report) = store.read(&new_id).unwrap();
    assert!(report.is_clean());
    assert_eq!(forked.len(), 5);
    for (f, o) in forked.iter().zip(&events) {
        assert_eq!(f.session, new_id);
        assert_eq!((f.seq, &f.kind), (o.seq, &o.kind));
    }
    // The fork stops at the open approval: listed as waiting, resumable, appendable.
    let row = store.summary(&new_id).unwrap();
    assert_eq!(row.state, SessionState::WaitingForApproval);
    // Its workspace starts as the parent's is now: the files its agents wrote are there.
    assert_eq!(
        std::fs::read_to_string(store.workspace_dir(&new_id).join("count.py")).unwrap(),
        "x"
    );
    let (_, _, mut writer) = store.open_existing(&new_id).unwrap();
    let next = Event {
        seq: 6,
        session: new_id.clone(),
        ts_ms: 0,
        kind: EventKind::Resumed {},
    };
    writer.append(&next).await.unwrap();
    writer.close().await.unwrap();
    assert_eq!(store.read(&new_id).unwrap().0.len(), 6);
    // The original is untouched.
    assert_eq!(store.read(FINISHED).unwrap().0, events);

    for bad in [0, 19] {
        let err = store.fork(FINISHED, bad).expect_err("out of range");
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
        assert!(err.to_string().contains("1..18"), "{err}");
    }
}

#[tokio::test]
async fn rm_deletes_the_session_and_its_workspace() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SessionStore::open(tmp.path()).unwrap();
    four_sessions(&store).await;
    std::fs::write(store.workspace_dir(PAUSED).join("out.txt"), "x").unwrap();
    store.remove(PAUSED).unwrap();
    assert!(!store.session_dir(PAUSED).exists());
    assert_eq!(store.list().unwrap().len(), 3);
    assert!(matches!(store.remove(PAUSED), Err(StoreError::NotFound(_))));
    // Ids cannot reach outside the sessions directory.
    assert!(matches!(
        store.remove("../sessions"),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(store.remove(""), Err(StoreError::Invalid(_))));
    assert!(store.root().exists());
    // A directory a crash left without a log can still be removed.
    std::fs::create_dir_all(store.workspace_dir("half-made")).unwrap();
    store.remove("half-made").unwrap();
    assert!(!store.session_dir("half-made").exists());
}

#[tokio::test]
async fn ids_resolve_from_prefixes_and_last() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SessionStore::open(tmp.path()).unwrap();
    assert_eq!(store.resolve_last().unwrap(), None);
    four_sessions(&store).await;
    assert_eq!(store.resolve(CRASHED).unwrap(), CRASHED);
    assert_eq!(
        store
            .resolve("01900000-0000-7000-8000-000000000003")
            .unwrap(),
        PAUSED
    );
    let err = store.resolve("01900000").err().unwrap();
    assert!(
        matches!(err, StoreError::Invalid(_)) && err.to_string().contains("4 sessions"),
        "{err}"
    );
    assert!(matches!(
        store.resolve("ffff"),
        Err(StoreError::NotFound(_))
    ));

    // --last: the session written most recently, whatever its id.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (_, _, mut writer) = store.open_existing(WAITING).unwrap();
    let ev = Event {
        seq: 5,
        session: WAITING.into(),
        ts_ms: 0,
        kind: EventKind::Resumed {},
    };
    writer.append(&ev).await.unwrap();
    writer.close().await.unwrap();
    assert_eq!(store.resolve_last().unwrap().as_deref(), Some(WAITING));
}

#[test]
fn data_dir_comes_from_the_flag_then_the_environment() {
    let flag = std::path::Path::new("/tmp/from-flag");
    assert_eq!(resolve_data_dir(Some(flag)).unwrap(), flag);
    // SAFETY: this test binary's other tests do not read the environment concurrently with this
    // one in a way that matters (nextest runs each test in its own process anyway).
    unsafe { std::env::set_var("PROCTOR_DATA_DIR", "/tmp/from-env") };
    assert_eq!(
        resolve_data_dir(None).unwrap(),
        std::path::Path::new("/tmp/from-env")
    );
    assert_eq!(resolve_data_dir(Some(flag)).unwrap(), flag);
    unsafe { std::env::remove_var("PROCTOR_DATA_DIR") };
    let default = resolve_data_dir(None).unwrap();
    assert!(default.ends_with("proctor"), "{}", default.display());
}

/// Whether `text` holds anything a terminal would act on or hide (besides `\n` and `\t`).
fn has_raw_controls(text: &str) -> Option<char> {
    text.chars().find(|c| {
        let u = *c as u32;
        (u < 0x20 && *c != '\n' && *c != '\t')
            || (0x7f..=0x9f).contains(&u)
            || (0x200b..=0x200f).contains(&u)
            || (0x202a..=0x202e).contains(&u)
            || (0x2066..=0x2069).contains(&u)
            || u == 0xfeff
            || (0xe0000..=0xe007f).contains(&u)
    })
}

#[tokio::test]
async fn hostile_names_tasks_and_text_reach_neither_the_list_nor_the_export_raw() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SessionStore::open(tmp.path()).unwrap();
    let id = "01900000-0000-7000-8000-00000000000a";
    let mut first = started("fix \u{1b}[2Jit\u{202E}txt.exe");
    if let EventKind::SessionStarted { team, .. } = &mut first {
        // An OSC never closed: a terminal would swallow everything after it.
        *team = "squad\u{1b}]0;".into();
    }
    let events = events_of(
        id,
        vec![
            first,
            EventKind::Message {
                agent: "coder".into(),
                content: "done \u{1b}]52;c;cHduZWQ=\u{7} \u{200B}".into(),
                to: None,
            },
            EventKind::ApprovalRequested {
                id: 1,
                agent: "coder".into(),
                blocks: vec![CodeBlock {
                    index: 0,
                    language: "python".into(),
                    code: "# x\rimport os".into(),
                    filename: Some("a\u{1b}[8m.py\n# injected".into()),
                }],
            },
        ],
    );
    save(&store, &events).await;

    let table = format_session_table(&store.list().unwrap());
    assert_eq!(has_raw_controls(&table), None, "{table}");
    let row = table.lines().nth(1).unwrap();
    assert!(row.contains("fix ␛[2Jit⟨U+202E⟩txt.exe"), "{row}");
    assert!(row.contains("squad␛]0;"), "{row}");
    // The rest of the row is still there after the team name.
    assert!(row.contains("waiting for approval"), "{row}");

    let md = store.export_md(id).unwrap();
    assert_eq!(has_raw_controls(&md), None, "{md}");
    assert!(md.contains("done ␛]52;c;cHduZWQ=␇ ⟨U+200B⟩"), "{md}");
    assert!(md.contains("`a␛[8m.py␊# injected`"), "{md}");
    // The JSON export stays the exact events.
    let json = store.export_json(id).unwrap();
    assert!(json.contains("\\u001b]52;c;"), "{json}");
}
