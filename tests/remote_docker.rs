//! proctor on a "remote" Docker engine: the local daemon served over TLS with client certificates
//! (socat) and over SSH (sshd on 127.0.0.1, `docker system dial-stdio` on the far side). Real
//! sessions run blocks through the real binary; `doctor` names the transport; certificate and key
//! problems are one clear line; plain TCP off loopback is refused before any connection.

mod remote_support;

use std::process::Command;

use proctor::executor::engine_host::{EngineHost, EngineHostError, HostSource};
use proctor::executor::{EngineTransport, doctor_check_on};
use remote_support::{Pki, SshServer, TlsRelay, Workdir, of_type};

const TEAM: &str = r#"
name = "pair"
[[agents]]
name = "coder"
model = "fake/m"
can_execute = true
[[agents]]
name = "reviewer"
model = "fake/m"
"#;

const SCRIPT: &str = r#"
[[reply]]
agent = "coder"
text = """
```python
import socket
print(6 * 7, socket.gethostname() != "")
```
"""
[[reply]]
agent = "reviewer"
text = "Correct. TERMINATE"
"#;

/// A team on the engine `docker_host`.
fn team_on(docker_host: &str) -> String {
    format!("{TEAM}\n[executor]\ndocker_host = \"{docker_host}\"\n")
}

fn tls_env(cmd: &mut Command, relay: &TlsRelay, cert_dir: &std::path::Path) {
    cmd.env("DOCKER_HOST", relay.docker_host())
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", cert_dir);
}

/// Asserts the session ran its one block and printed what it computed.
fn assert_block_ran(code: i32, events: &[serde_json::Value], stderr: &str) {
    assert_eq!(code, 0, "stderr: {stderr}");
    let fin = of_type(events, "execution_finished");
    assert_eq!(fin.len(), 1, "{events:?}");
    assert_eq!(fin[0]["exit_code"], 0, "{}", fin[0]);
    assert_eq!(fin[0]["output"].as_str().unwrap().trim(), "42 True");
    let streamed: String = of_type(events, "execution_output")
        .iter()
        .map(|o| o["text"].as_str().unwrap())
        .collect();
    assert_eq!(streamed.trim(), "42 True", "output streamed as it came");
    assert_eq!(events.last().unwrap()["type"], "terminated");
}

/// The stderr lines that are not the session-start note about the engine.
fn problem_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !l.starts_with("proctor: code runs on the Docker engine at"))
        .collect()
}

#[test]
fn a_session_runs_its_block_over_tls_with_client_certificates() {
    let pki = Pki::new();
    let relay = TlsRelay::start(&pki);
    let work = Workdir::new(SCRIPT, TEAM);
    let mut cmd = work.proctor();
    tls_env(&mut cmd, &relay, &pki.client_dir());
    let (code, events, stderr) = work.run_auto(cmd, "compute 6*7");
    assert_block_ran(code, &events, &stderr);
    assert!(
        stderr.contains(&format!(
            "proctor: code runs on the Docker engine at {} over TLS",
            relay.docker_host()
        )) && stderr.contains("remote, from DOCKER_HOST"),
        "{stderr}"
    );
    assert!(
        relay.connections() > 0,
        "the session's Docker traffic went through the TLS relay"
    );
}

#[test]
fn a_session_runs_its_block_over_ssh_named_in_the_team_file() {
    let server = SshServer::start();
    let client = server.client(&server.path("user_key"));
    let work = Workdir::new(SCRIPT, &team_on(&server.docker_host()));
    let mut cmd = work.proctor();
    cmd.env("PATH", client.path_env());
    let (code, events, stderr) = work.run_auto(cmd, "compute 6*7");
    assert_block_ran(code, &events, &stderr);
    assert!(
        stderr.contains(&format!(
            "proctor: code runs on the Docker engine at {} over SSH, remote, from the team file",
            server.docker_host()
        )),
        "{stderr}"
    );
    assert!(server.logins() > 0, "the session logged in over ssh");
}

/// `proctor doctor`'s lines for the Docker checks.
fn doctor(cmd: &mut Command) -> String {
    let out = cmd.arg("doctor").output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn line<'a>(report: &'a str, start: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{report}"))
}

#[test]
fn doctor_over_tls_shows_the_host_api_version_tls_and_remote() {
    let pki = Pki::new();
    let relay = TlsRelay::start(&pki);
    let work = Workdir::new(SCRIPT, TEAM);
    let dir = pki.client_dir();
    let mut cmd = work.proctor();
    tls_env(&mut cmd, &relay, &dir);
    let report = doctor(&mut cmd);
    let daemon = line(&report, "ok    docker daemon:");
    assert!(
        daemon.contains(&relay.docker_host())
            && daemon.contains("over TLS")
            && daemon.contains(&dir.join("cert.pem").display().to_string())
            && daemon.contains("remote"),
        "{daemon}"
    );
    let api = line(&report, "ok    docker api version:");
    assert!(api.contains("speaks API 1."), "{api}");
    line(&report, "ok    sandbox run:");
}

#[test]
fn doctor_over_ssh_to_a_config_alias_shows_ssh_and_remote() {
    let server = SshServer::start();
    let client = server.client(&server.path("user_key"));
    let work = Workdir::new(SCRIPT, TEAM);
    let mut cmd = work.proctor();
    cmd.env("PATH", client.path_env())
        .arg("--docker-host")
        .arg(format!("ssh://{}", client.alias));
    let report = doctor(&mut cmd);
    let daemon = line(&report, "ok    docker daemon:");
    assert!(
        daemon.contains(&format!(
            "ssh://{} over SSH, remote, from --docker-host",
            client.alias
        )),
        "{daemon}"
    );
    line(&report, "ok    docker api version:");
    line(&report, "ok    sandbox run:");
    assert!(server.logins() > 0);
}

/// Runs a session whose engine fails; returns the one stderr line about it.
fn failing_session(work: &Workdir, cmd: Command) -> String {
    let (code, events, stderr) = work.run_auto(cmd, "compute 6*7");
    assert_ne!(code, 0, "stderr: {stderr}");
    assert!(of_type(&events, "execution_finished").len() <= 1);
    let lines = problem_lines(&stderr);
    assert_eq!(lines.len(), 1, "one line on stderr, got: {stderr}");
    lines[0].to_owned()
}

#[test]
fn a_wrong_ca_is_one_line_naming_ca_pem() {
    let pki = Pki::new();
    let relay = TlsRelay::start(&pki);
    let work = Workdir::new(SCRIPT, TEAM);
    let dir = pki.cert_dir(
        Some("other-ca.pem"),
        Some("client.pem"),
        Some("client-key.pem"),
    );
    let mut cmd = work.proctor();
    tls_env(&mut cmd, &relay, &dir);
    let line = failing_session(&work, cmd);
    assert!(
        line.contains("not signed by the CA in")
            && line.contains(&dir.join("ca.pem").display().to_string())
            && line.contains(&relay.docker_host()),
        "{line}"
    );
    // The session is saved and paused, not lost.
    assert!(line.contains("proctor resume"), "{line}");
}

#[test]
fn a_missing_client_certificate_is_one_line_naming_cert_pem() {
    let pki = Pki::new();
    let relay = TlsRelay::start(&pki);
    let work = Workdir::new(SCRIPT, TEAM);
    let dir = pki.cert_dir(Some("ca.pem"), None, Some("client-key.pem"));
    let mut cmd = work.proctor();
    tls_env(&mut cmd, &relay, &dir);
    let line = failing_session(&work, cmd);
    assert!(
        line.contains(&dir.join("cert.pem").display().to_string())
            && line.contains("does not exist")
            && line.contains("DOCKER_CERT_PATH"),
        "{line}"
    );
    assert_eq!(
        relay.connections(),
        0,
        "nothing was sent without a certificate"
    );
}

/// The first doctor check (the engine) on `host` with `vars` as the environment.
async fn engine_check(host: &str, vars: &[(&str, String)]) -> Result<String, String> {
    let engine = EngineHost::resolve_with(Some((host, HostSource::CommandLine)), |k| {
        vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    });
    let checks = doctor_check_on(engine, &remote_support::image()).await;
    assert_eq!(checks[0].0, "docker daemon");
    checks[0].1.clone()
}

fn tls_vars(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    vec![
        ("DOCKER_TLS_VERIFY", "1".into()),
        ("DOCKER_CERT_PATH", dir.display().to_string()),
    ]
}

#[tokio::test]
async fn certificate_problems_each_name_the_file_and_the_fix() {
    let pki = Pki::new();
    pki.make_expired_client();
    let relay = TlsRelay::start(&pki);
    let host = relay.docker_host();
    let mut errs = Vec::new();

    // Signed by a CA the engine does not trust: the engine refuses it.
    let dir = pki.cert_dir(
        Some("ca.pem"),
        Some("stranger.pem"),
        Some("stranger-key.pem"),
    );
    let err = engine_check(&host, &tls_vars(&dir)).await.unwrap_err();
    errs.push(err.clone());
    assert!(
        err.contains("refused the client certificate")
            && err.contains(&dir.join("cert.pem").display().to_string()),
        "{err}"
    );
    // Expired: found before connecting.
    let dir = pki.cert_dir(Some("ca.pem"), Some("expired.pem"), Some("expired-key.pem"));
    let before = relay.connections();
    let err = engine_check(&host, &tls_vars(&dir)).await.unwrap_err();
    errs.push(err.clone());
    assert!(
        err.contains(&dir.join("cert.pem").display().to_string())
            && err.contains("expired on 2021-01-01")
            && err.contains("renew"),
        "{err}"
    );
    // A key that is not the certificate's.
    let dir = pki.cert_dir(Some("ca.pem"), Some("client.pem"), Some("stranger-key.pem"));
    let err = engine_check(&host, &tls_vars(&dir)).await.unwrap_err();
    errs.push(err.clone());
    assert!(
        err.contains(&dir.join("key.pem").display().to_string())
            && err.contains("does not belong to"),
        "{err}"
    );
    // Not a key at all.
    let dir = pki.cert_dir(Some("ca.pem"), Some("client.pem"), Some("client.pem"));
    let err = engine_check(&host, &tls_vars(&dir)).await.unwrap_err();
    errs.push(err.clone());
    assert!(
        err.contains(&dir.join("key.pem").display().to_string())
            && err.contains("no usable PEM key"),
        "{err}"
    );
    assert_eq!(
        relay.connections(),
        before,
        "local file problems never dial"
    );
    // And the right files work.
    let ok = engine_check(&host, &tls_vars(&pki.client_dir()))
        .await
        .unwrap();
    assert!(ok.contains("over TLS") && ok.contains("remote"), "{ok}");
}

#[test]
fn an_ssh_key_the_host_does_not_accept_is_one_line() {
    let server = SshServer::start();
    let client = server.client(&server.path("stranger_key"));
    let work = Workdir::new(SCRIPT, &team_on(&server.docker_host()));
    let mut cmd = work.proctor();
    cmd.env("PATH", client.path_env());
    let line = failing_session(&work, cmd);
    assert!(
        line.contains(&format!(
            "ssh login as {}@127.0.0.1 was refused",
            server.user
        )) && line.contains("Permission denied (publickey)")
            && line.contains(&format!("ssh -p {} {}@127.0.0.1", server.port, server.user)),
        "{line}"
    );
}

#[test]
fn an_unreadable_ssh_key_and_an_unknown_host_key_are_named() {
    let server = SshServer::start();
    let bad_key = server.path("garbage_key");
    std::fs::write(&bad_key, "not a key\n").unwrap();
    std::fs::set_permissions(
        &bad_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let client = server.client(&bad_key);
    let work = Workdir::new(SCRIPT, TEAM);
    let mut cmd = work.proctor();
    cmd.env("PATH", client.path_env())
        .args(["--docker-host", &server.docker_host()]);
    let report = doctor(&mut cmd);
    let daemon = line(&report, "FAIL  docker daemon:");
    assert!(
        daemon.contains(&bad_key.display().to_string()) && daemon.contains("IdentityFile"),
        "{daemon}"
    );

    std::fs::write(server.path("known_hosts"), "").unwrap();
    let client = server.client(&server.path("user_key"));
    let mut cmd = work.proctor();
    cmd.env("PATH", client.path_env())
        .args(["--docker-host", &server.docker_host()]);
    let report = doctor(&mut cmd);
    let daemon = line(&report, "FAIL  docker daemon:");
    assert!(
        daemon.contains("does not know the host key of 127.0.0.1"),
        "{daemon}"
    );
}

#[test]
fn plain_tcp_off_loopback_is_refused_before_any_connection() {
    // The refusal is decided from the address alone: the resolved engine says so, and connect()
    // is never reached (192.0.2.1 is TEST-NET-1 and is never dialled).
    let err =
        EngineHost::resolve_with(Some(("tcp://192.0.2.1:2375", HostSource::TeamFile)), |_| {
            None
        })
        .unwrap_err();
    assert!(matches!(err, EngineHostError::Insecure { .. }));

    let work = Workdir::new(SCRIPT, &team_on("tcp://192.0.2.1:2375"));
    let mut cmd = work.proctor();
    cmd.env("PROCTOR_ALLOW_INSECURE_DOCKER", "0");
    let (code, events, stderr) = work.run_auto(cmd, "compute 6*7");
    assert_ne!(code, 0);
    assert!(events.is_empty(), "no session was started: {events:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("refusing plain tcp://192.0.2.1:2375")
            && stderr.contains("DOCKER_TLS_VERIFY=1")
            && stderr.contains("PROCTOR_ALLOW_INSECURE_DOCKER=1"),
        "{stderr}"
    );
    assert!(
        !work.path("data/sessions").exists()
            || std::fs::read_dir(work.path("data/sessions"))
                .unwrap()
                .next()
                .is_none(),
        "nothing saved"
    );
}

#[test]
fn an_engine_that_does_not_answer_pauses_the_session_with_the_fix() {
    // Loopback plain TCP is allowed; nobody listens on this port.
    let port = remote_support::free_port();
    let work = Workdir::new(SCRIPT, &team_on(&format!("tcp://127.0.0.1:{port}")));
    let line = failing_session(&work, work.proctor());
    assert!(
        line.contains(&format!(
            "cannot reach the Docker engine at tcp://127.0.0.1:{port}"
        )) && line.contains("the team file's [executor] docker_host")
            && line.contains("proctor resume"),
        "{line}"
    );
}

#[test]
fn the_transport_follows_the_environment_like_the_docker_cli() {
    let vars = |k: &str| match k {
        "DOCKER_HOST" => Some("tcp://127.0.0.1:2376".to_owned()),
        "DOCKER_TLS_VERIFY" => Some("1".to_owned()),
        "HOME" => Some("/home/u".to_owned()),
        _ => None,
    };
    let e = EngineHost::resolve_with(None, vars).unwrap();
    assert_eq!(e.transport(), EngineTransport::Tls);
    assert_eq!(
        e.tls_files().unwrap().ca,
        std::path::Path::new("/home/u/.docker/ca.pem")
    );
}

/// The harness the dropped-link tests build on: a killed relay cuts an open stream, new
/// connections fail with the engine named, and a restarted relay serves the same client again.
#[tokio::test]
async fn a_killed_relay_cuts_the_link_and_a_restarted_one_serves_again() {
    use futures::StreamExt;
    use proctor::executor::engine_host::connect;
    let pki = Pki::new();
    let mut relay = TlsRelay::start(&pki);
    let engine = EngineHost::resolve_with(
        Some((&relay.docker_host(), HostSource::CommandLine)),
        |k| match k {
            "DOCKER_TLS_VERIFY" => Some("1".into()),
            "DOCKER_CERT_PATH" => Some(pki.client_dir().display().to_string()),
            _ => None,
        },
    )
    .unwrap();
    let docker = connect(&engine).await.unwrap();
    // An open stream: the daemon's event feed, which stays open until the link goes (other tests'
    // containers may show up on it meanwhile).
    let mut feed = docker.events(None::<bollard::query_parameters::EventsOptions>);
    let first = tokio::time::timeout(std::time::Duration::from_secs(2), feed.next()).await;
    assert!(!matches!(first, Ok(None | Some(Err(_)))), "{first:?}");
    relay.kill();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(Ok(_)) = feed.next().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "a cut link ends the stream instead of hanging"
    );
    let err = connect(&engine).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "cannot reach the Docker engine at {}",
            relay.docker_host()
        )),
        "{err}"
    );
    let relay = TlsRelay::start_on(&pki, relay.port);
    docker
        .version()
        .await
        .expect("the same client works once the relay is back");
    drop(relay);
}

#[tokio::test]
async fn a_killed_sshd_is_named_and_a_restarted_one_serves_again() {
    use proctor::executor::engine_host::connect;
    let mut server = SshServer::start();
    let client = server.client(&server.path("user_key"));
    // The transport runs `ssh` from PATH: give this process the test client's.
    // SAFETY: nextest runs each test in its own process and nothing else reads PATH meanwhile.
    unsafe { std::env::set_var("PATH", client.path_env()) };
    let engine = EngineHost::resolve_with(
        Some((&server.docker_host(), HostSource::CommandLine)),
        |_| None,
    )
    .unwrap();
    connect(&engine).await.expect("sshd serves");
    server.kill();
    let err = connect(&engine).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("ssh cannot reach 127.0.0.1:{}", server.port))
            && err.contains("sshd listening"),
        "{err}"
    );
    server.restart();
    connect(&engine).await.expect("sshd serves again");
}
