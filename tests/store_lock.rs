//! One proctor per session: a second process is refused with the holder's pid, `rm` refuses a
//! session in use, and a killed holder leaves the session free (and listed as crashed).

mod store_support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use proctor::protocol::{Event, EventKind};
use proctor::store::{EventSink, SessionState, SessionStore, StoreError, new_session_id};
use store_support::{events_of, started};

const CHILD_ENV: &str = "PROCTOR_STORE_LOCK_CHILD";

/// The second process of `a_second_process_is_refused_with_the_holders_pid`: this test binary run
/// again with `CHILD_ENV` set. It opens the session, says so on stdout, and holds it until its
/// stdin closes or it is killed. Run without `CHILD_ENV` (the normal test run) it does nothing.
#[tokio::test]
async fn lock_holder_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (data_dir, id) = spec.split_once('|').unwrap();
    let store = SessionStore::open(data_dir).unwrap();
    let (_, _, mut writer) = store.open_existing(id).unwrap();
    let ev = Event {
        seq: 3,
        session: id.into(),
        ts_ms: 3,
        kind: EventKind::Notice {
            message: "child".into(),
        },
    };
    writer.append(&ev).await.unwrap();
    writer.sync().await.unwrap();
    println!("LOCKED {}", std::process::id());
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    writer.close().await.unwrap();
}

async fn unfinished_session(store: &SessionStore) -> String {
    let id = new_session_id();
    let events = events_of(
        &id,
        vec![
            started("hold me"),
            EventKind::Message {
                agent: "human".into(),
                content: "go".into(),
                to: None,
            },
        ],
    );
    let mut writer = store.create(&id, &events[0]).unwrap();
    writer.append(&events[1]).await.unwrap();
    writer.close().await.unwrap();
    id
}

#[tokio::test]
async fn a_second_process_is_refused_with_the_holders_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SessionStore::open(tmp.path()).unwrap();
    let id = unfinished_session(&store).await;

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "lock_holder_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{}|{id}", tmp.path().display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest prints "test NAME ... " without a newline before the test's own output.
            if let Some(pid) = line.split("LOCKED ").nth(1) {
                let _ = tx.send(pid.trim().parse::<u32>().unwrap());
            }
        }
    });
    let pid = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("child never locked the session");
    assert_eq!(pid, child.id());
    assert_ne!(pid, std::process::id());

    // Another process holds it: opening and removing are refused, naming that process.
    let err = store
        .open_existing(&id)
        .expect_err("second open must be refused");
    assert!(matches!(err, StoreError::Locked(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("process {pid}")) && msg.contains("another proctor"),
        "{msg}"
    );
    let err = store
        .remove(&id)
        .expect_err("rm must be refused while open");
    assert!(err.to_string().contains(&format!("process {pid}")), "{err}");
    assert!(store.session_dir(&id).exists());
    let row = store
        .list()
        .unwrap()
        .into_iter()
        .find(|s| s.id == id)
        .unwrap();
    assert_eq!(row.state, SessionState::Running);
    assert_eq!(row.pid, Some(pid));
    assert_eq!(row.last_seq, 3, "the child's append is listed");

    // kill -9: the OS drops the lock with the process; the session is crashed, and free.
    child.kill().unwrap();
    child.wait().unwrap();
    let row = store
        .list()
        .unwrap()
        .into_iter()
        .find(|s| s.id == id)
        .unwrap();
    assert_eq!(row.state, SessionState::Crashed);
    assert_eq!(row.pid, None);
    let (events, _, writer) = store
        .open_existing(&id)
        .expect("free after the holder died");
    assert_eq!(events.len(), 3);
    writer.close().await.unwrap();
    store.remove(&id).unwrap();
    assert!(!store.session_dir(&id).exists());
}

#[tokio::test]
async fn open_twice_in_one_process_is_refused_until_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SessionStore::open(tmp.path()).unwrap();
    let id = unfinished_session(&store).await;
    let (_, _, writer) = store.open_existing(&id).unwrap();
    let err = store.open_existing(&id).expect_err("refused");
    assert!(
        err.to_string()
            .contains(&format!("process {}", std::process::id())),
        "{err}"
    );
    writer.close().await.unwrap();
    let (_, _, writer) = store.open_existing(&id).expect("free after close");
    writer.close().await.unwrap();
}

#[tokio::test]
async fn a_stale_pid_in_the_lock_file_does_not_block() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SessionStore::open(tmp.path()).unwrap();
    let id = unfinished_session(&store).await;
    std::fs::write(store.session_dir(&id).join("session.lock"), "999999\n").unwrap();
    let (_, _, writer) = store.open_existing(&id).unwrap();
    let pid = std::fs::read_to_string(store.session_dir(&id).join("session.lock")).unwrap();
    assert_eq!(pid.trim(), std::process::id().to_string());
    writer.close().await.unwrap();
}
