//! Which Docker engine proctor uses and how it reaches it, decided in one place: `--docker-host`,
//! the team file's `[executor] docker_host`, `DOCKER_HOST` (with `DOCKER_TLS_VERIFY` and
//! `DOCKER_CERT_PATH`, as the docker CLI reads them) or the local socket, resolved into an
//! [`EngineHost`]; and [`connect`], the one function that turns it into a bollard client over a unix
//! socket, TCP, TLS with client certificates, or SSH (`docker system dial-stdio` on the far side).
//! Every failure is one line naming the file, host or setting at fault and the fix.

use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bollard::{API_DEFAULT_VERSION, BollardRequest, Docker};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::ExecError;
use super::docker::CALL_TIMEOUT;
use crate::text_safety::excerpt;

/// Environment variable that allows plain `tcp://` (no TLS) to an address that is not loopback.
pub const ALLOW_INSECURE_ENV: &str = "PROCTOR_ALLOW_INSECURE_DOCKER";
/// The engine used when nothing names one.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// How long the first contact (version negotiation) may take over a local socket.
const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The same over TCP or TLS.
const NETWORK_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The same over SSH (ssh's own handshake included).
const SSH_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a failed SSH request waits for ssh's error text.
const SSH_STDERR_WAIT: Duration = Duration::from_secs(2);
/// Most of ssh's stderr kept per connection.
const SSH_STDERR_KEEP: usize = 8 * 1024;

/// How proctor talks to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineTransport {
    /// A unix socket on this machine.
    Unix,
    /// Plain TCP, unencrypted.
    Tcp,
    /// TCP with TLS: the engine's certificate is checked against `ca.pem` and proctor presents
    /// `cert.pem`/`key.pem`.
    Tls,
    /// The system `ssh` running `docker system dial-stdio` on the far host.
    Ssh,
}

impl EngineTransport {
    /// Short name for doctor lines and messages.
    pub fn label(self) -> &'static str {
        match self {
            EngineTransport::Unix => "unix socket",
            EngineTransport::Tcp => "plain TCP (no TLS)",
            EngineTransport::Tls => "TLS",
            EngineTransport::Ssh => "SSH",
        }
    }
}

/// Where the engine's address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostSource {
    /// Nothing named one: the local default socket.
    Default,
    /// The `DOCKER_HOST` environment variable.
    Environment,
    /// `[executor] docker_host` in the team file.
    TeamFile,
    /// `--docker-host` on the command line.
    CommandLine,
}

impl HostSource {
    /// Where to change it, in the user's words.
    pub fn label(self) -> &'static str {
        match self {
            HostSource::Default => "the default socket",
            HostSource::Environment => "DOCKER_HOST",
            HostSource::TeamFile => "the team file's [executor] docker_host",
            HostSource::CommandLine => "--docker-host",
        }
    }
}

/// The files of a TLS client, as the docker CLI names them in `DOCKER_CERT_PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The directory they were looked for in.
    pub dir: PathBuf,
    /// Where it came from (`DOCKER_CERT_PATH`, `DOCKER_CONFIG` or `~/.docker`).
    pub dir_source: &'static str,
    /// The CA that signed the engine's certificate.
    pub ca: PathBuf,
    /// proctor's client certificate.
    pub cert: PathBuf,
    /// The private key of `cert`.
    pub key: PathBuf,
}

/// Where an SSH engine lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// Login name (`ssh -l`); ssh's own default (config or local user) when absent.
    pub user: Option<String>,
    /// Host name, address or `~/.ssh/config` alias.
    pub host: String,
    /// Port (`ssh -p`); ssh's own default when absent.
    pub port: Option<u16>,
}

impl SshTarget {
    /// The `ssh` command line proctor runs for one connection (without the program name).
    pub fn ssh_args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "ServerAliveInterval=10",
            "-o",
            "ServerAliveCountMax=3",
            "-T",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if let Some(user) = &self.user {
            args.extend(["-l".to_owned(), user.clone()]);
        }
        if let Some(port) = self.port {
            args.extend(["-p".to_owned(), port.to_string()]);
        }
        args.extend([
            "--".to_owned(),
            self.host.clone(),
            "docker".to_owned(),
            "system".to_owned(),
            "dial-stdio".to_owned(),
        ]);
        args
    }

    /// `ssh [-p PORT] [USER@]HOST` as a user would type it to test the login.
    fn try_command(&self) -> String {
        let mut s = "ssh ".to_owned();
        if let Some(port) = self.port {
            s.push_str(&format!("-p {port} "));
        }
        if let Some(user) = &self.user {
            s.push_str(user);
            s.push('@');
        }
        s.push_str(&self.host);
        s
    }
}

/// Address part of a parsed host string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Address {
    Unix(PathBuf),
    Tcp { host: String, port: Option<u16> },
    Ssh(SshTarget),
}

/// The engine proctor talks to: its address, the transport, and whether it is remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineHost {
    host: String,
    source: HostSource,
    transport: EngineTransport,
    address: Address,
    tls: Option<TlsFiles>,
}

/// Why the engine's address cannot be used. Each message names the setting and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineHostError {
    /// The address does not parse.
    #[error("{source_label} = {host:?}: {why}")]
    Malformed {
        /// The address as given.
        host: String,
        /// Where it was given.
        source_label: &'static str,
        /// What is wrong and what is accepted.
        why: String,
    },
    /// Plain TCP to an address that is not loopback, without the opt-in.
    #[error(
        "refusing plain {host} ({source_label}): without TLS the code, its output and the engine \
         itself are open to anyone on the path. Use TLS (DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH \
         holding ca.pem, cert.pem and key.pem) or ssh://USER@HOST, or set {ALLOW_INSECURE_ENV}=1 \
         to allow it"
    )]
    Insecure {
        /// The address.
        host: String,
        /// Where it was given.
        source_label: &'static str,
    },
    /// TLS was asked for but the certificate directory cannot be found.
    #[error("{0}")]
    Tls(String),
}

impl From<EngineHostError> for ExecError {
    fn from(e: EngineHostError) -> Self {
        ExecError::Docker(e.to_string())
    }
}

/// Checks the syntax of a Docker host string (for team-file validation); the error says what is
/// accepted.
pub fn check_host_syntax(host: &str) -> Result<(), String> {
    parse_address(host).map(|_| ())
}

impl EngineHost {
    /// Resolves the engine from the process environment: `chosen` (the command line's or the team
    /// file's address, in that order of precedence) over `DOCKER_HOST` over the default socket.
    pub fn resolve(chosen: Option<(&str, HostSource)>) -> Result<Self, EngineHostError> {
        Self::resolve_with(chosen, |name| std::env::var(name).ok())
    }

    /// [`resolve`](Self::resolve) with nothing chosen: what `DOCKER_HOST` says.
    pub fn from_environment() -> Result<Self, EngineHostError> {
        Self::resolve(None)
    }

    /// [`resolve`](Self::resolve) reading variables through `env` (tests pass a map).
    pub fn resolve_with(
        chosen: Option<(&str, HostSource)>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, EngineHostError> {
        let set = |name: &str| env(name).filter(|v| !v.is_empty());
        let (raw, source) = match chosen {
            Some((h, s)) if !h.trim().is_empty() => (h.trim().to_owned(), s),
            _ => match set("DOCKER_HOST") {
                Some(h) => (h.trim().to_owned(), HostSource::Environment),
                None => (DEFAULT_HOST.to_owned(), HostSource::Default),
            },
        };
        let address = parse_address(&raw).map_err(|why| EngineHostError::Malformed {
            host: raw.clone(),
            source_label: source.label(),
            why,
        })?;
        let (transport, tls, host) = match &address {
            Address::Unix(path) => (
                EngineTransport::Unix,
                None,
                format!("unix://{}", path.display()),
            ),
            Address::Ssh(t) => (EngineTransport::Ssh, None, ssh_url(t)),
            Address::Tcp { host, port } => {
                // As the docker CLI: any non-empty DOCKER_TLS_VERIFY turns verification on.
                let verify = set("DOCKER_TLS_VERIFY").is_some();
                if !verify && set("DOCKER_TLS").is_some() {
                    return Err(EngineHostError::Tls(
                        "DOCKER_TLS is set without DOCKER_TLS_VERIFY: TLS that does not check the \
                         engine's certificate is not supported; set DOCKER_TLS_VERIFY=1 and put \
                         the CA that signed the engine's certificate in ca.pem"
                            .to_owned(),
                    ));
                }
                let port = port.unwrap_or(if verify { 2376 } else { 2375 });
                let url = format!("tcp://{}:{port}", bracket_v6(host));
                if verify {
                    let (dir, dir_source) = if let Some(d) = set("DOCKER_CERT_PATH") {
                        (PathBuf::from(d), "DOCKER_CERT_PATH")
                    } else if let Some(d) = set("DOCKER_CONFIG") {
                        (PathBuf::from(d), "DOCKER_CONFIG")
                    } else if let Some(home) = set("HOME") {
                        (Path::new(&home).join(".docker"), "~/.docker")
                    } else {
                        return Err(EngineHostError::Tls(
                            "DOCKER_TLS_VERIFY is set but no certificate directory is known: set \
                             DOCKER_CERT_PATH to the directory holding ca.pem, cert.pem and key.pem"
                                .to_owned(),
                        ));
                    };
                    let tls = TlsFiles {
                        ca: dir.join("ca.pem"),
                        cert: dir.join("cert.pem"),
                        key: dir.join("key.pem"),
                        dir,
                        dir_source,
                    };
                    (EngineTransport::Tls, Some(tls), url)
                } else {
                    let allowed = set(ALLOW_INSECURE_ENV).is_some_and(|v| {
                        matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes")
                    });
                    if !is_loopback(host) && !allowed {
                        return Err(EngineHostError::Insecure {
                            host: url,
                            source_label: source.label(),
                        });
                    }
                    (EngineTransport::Tcp, None, url)
                }
            }
        };
        Ok(Self {
            host,
            source,
            transport,
            address,
            tls,
        })
    }

    /// The engine's address, normalised (`unix:///…`, `tcp://HOST:PORT`, `ssh://[USER@]HOST[:PORT]`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The transport.
    pub fn transport(&self) -> EngineTransport {
        self.transport
    }

    /// Where the address came from.
    pub fn source(&self) -> HostSource {
        self.source
    }

    /// Whether the engine may not see this machine's files: anything not reached through a unix
    /// socket (TCP, TLS or SSH, even to a loopback address).
    pub fn is_remote(&self) -> bool {
        match self.transport {
            EngineTransport::Unix => false,
            EngineTransport::Tcp | EngineTransport::Tls | EngineTransport::Ssh => true,
        }
    }

    /// The TLS client files, for a TLS engine.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The SSH target, for an SSH engine.
    pub fn ssh_target(&self) -> Option<&SshTarget> {
        match &self.address {
            Address::Ssh(t) => Some(t),
            Address::Unix(_) | Address::Tcp { .. } => None,
        }
    }

    /// One line for `proctor doctor` and the session start: host, transport, remote or local, and
    /// where the address came from.
    pub fn describe(&self) -> String {
        let how = match (&self.transport, &self.tls) {
            (EngineTransport::Tls, Some(tls)) => format!(
                "TLS, client certificate {} ({})",
                tls.cert.display(),
                tls.dir_source
            ),
            (t, _) => t.label().to_owned(),
        };
        let place = if self.is_remote() { "remote" } else { "local" };
        format!(
            "{} over {how}, {place}, from {}",
            self.host,
            self.source.label()
        )
    }
}

fn bracket_v6(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

fn ssh_url(t: &SshTarget) -> String {
    let mut s = "ssh://".to_owned();
    if let Some(u) = &t.user {
        s.push_str(u);
        s.push('@');
    }
    s.push_str(&bracket_v6(&t.host));
    if let Some(p) = t.port {
        s.push_str(&format!(":{p}"));
    }
    s
}

/// Whether a TCP host is this machine's loopback (by name or literal address; names are not
/// looked up).
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

const ACCEPTED: &str = "use unix:///path/to/docker.sock, tcp://HOST:PORT (TLS with \
                        DOCKER_TLS_VERIFY=1) or ssh://[USER@]HOST[:PORT]";

fn parse_address(host: &str) -> Result<Address, String> {
    let host = host.trim();
    let Some((scheme, rest)) = host.split_once("://") else {
        return Err(format!("not a Docker host address; {ACCEPTED}"));
    };
    match scheme {
        "unix" => {
            if !rest.starts_with('/') {
                return Err(format!(
                    "the socket path must be absolute (unix:///var/run/docker.sock); {ACCEPTED}"
                ));
            }
            Ok(Address::Unix(PathBuf::from(rest)))
        }
        "tcp" => {
            let (host, port) = host_port(rest.strip_suffix('/').unwrap_or(rest))?;
            Ok(Address::Tcp { host, port })
        }
        "ssh" => {
            let rest = rest.strip_suffix('/').unwrap_or(rest);
            let (user, hostport) = match rest.split_once('@') {
                Some((u, h)) => (Some(u), h),
                None => (None, rest),
            };
            if let Some(u) = user
                && (u.is_empty()
                    || u.starts_with('-')
                    || !u
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
            {
                return Err(format!(
                    "the user name {u:?} may hold only letters, digits, '.', '_' and '-' (not first); {ACCEPTED}"
                ));
            }
            let (host, port) = host_port(hostport)?;
            Ok(Address::Ssh(SshTarget {
                user: user.map(str::to_owned),
                host,
                port,
            }))
        }
        "http" | "https" => Err(format!(
            "the docker CLI does not take {scheme}:// addresses either; {ACCEPTED}"
        )),
        "npipe" => Err(format!("named pipes exist on Windows only; {ACCEPTED}")),
        other => Err(format!("unsupported scheme {other:?}; {ACCEPTED}")),
    }
}

/// `HOST[:PORT]` or `[V6]:PORT`; names may hold letters, digits, '.', '-' and '_' and must not
/// start with '-' (they reach `ssh` as an argument).
fn host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(format!("unclosed '[' in the address; {ACCEPTED}"));
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{addr:?} is not an IPv6 address; {ACCEPTED}"));
        }
        match after {
            "" => (addr, None),
            p if p.starts_with(':') => (addr, Some(&p[1..])),
            _ => {
                return Err(format!(
                    "unexpected {after:?} after the address; {ACCEPTED}"
                ));
            }
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(format!("the host is missing; {ACCEPTED}"));
    }
    if !s.starts_with('[')
        && (host.starts_with('-')
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c)))
    {
        return Err(format!(
            "{host:?} is not a host name or address (letters, digits, '.', '-', '_'; no path); {ACCEPTED}"
        ));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(format!("{p:?} is not a port number (1-65535); {ACCEPTED}")),
        },
    };
    Ok((host.to_owned(), port))
}

/// Connects to `engine` and negotiates the API version, within a timeout that suits the
/// transport. The error is one line: what failed, where, and the fix.
pub async fn connect(engine: &EngineHost) -> Result<Docker, ExecError> {
    let docker = match (&engine.address, &engine.tls) {
        (Address::Unix(_), _) => {
            Docker::connect_with_unix(&engine.host, CALL_TIMEOUT.as_secs(), API_DEFAULT_VERSION)
        }
        (Address::Tcp { .. }, Some(tls)) => {
            check_tls_files(engine, tls)?;
            install_crypto_provider();
            Docker::connect_with_ssl(
                &engine.host,
                &tls.key,
                &tls.cert,
                &tls.ca,
                CALL_TIMEOUT.as_secs(),
                API_DEFAULT_VERSION,
            )
        }
        (Address::Tcp { .. }, None) => {
            Docker::connect_with_http(&engine.host, CALL_TIMEOUT.as_secs(), API_DEFAULT_VERSION)
        }
        (Address::Ssh(target), _) => connect_ssh(target),
    }
    .map_err(|e| ExecError::Docker(unreachable(engine, &error_chain(&e))))?
    .with_timeout(CALL_TIMEOUT);
    let limit = match engine.transport {
        EngineTransport::Unix => LOCAL_CONNECT_TIMEOUT,
        EngineTransport::Tcp | EngineTransport::Tls => NETWORK_CONNECT_TIMEOUT,
        EngineTransport::Ssh => SSH_CONNECT_TIMEOUT,
    };
    match tokio::time::timeout(limit, docker.negotiate_version()).await {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(ExecError::Docker(unreachable(engine, &error_chain(&e)))),
        Err(_) => Err(ExecError::Docker(unreachable(
            engine,
            &format!("no answer within {} s", limit.as_secs()),
        ))),
    }
}

/// rustls needs one process-wide crypto provider; aws-lc-rs is the one already in the tree
/// (reqwest's). Installing twice is harmless.
fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let msg = inner.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        src = inner.source();
    }
    s
}

/// Checks `ca.pem`, `cert.pem` and `key.pem` before any connection, so that a missing, unreadable,
/// expired or mismatched file is named instead of failing as an opaque handshake error.
fn check_tls_files(engine: &EngineHost, tls: &TlsFiles) -> Result<(), ExecError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
    let fail = |file: &Path, what: String, fix: &str| {
        ExecError::Docker(format!(
            "cannot use {} for TLS to {}: {what}; {fix}",
            file.display(),
            engine.host
        ))
    };
    let where_ = format!(
        "put the docker CLI's TLS files in {} ({}) or point DOCKER_CERT_PATH at them",
        tls.dir.display(),
        tls.dir_source
    );
    let read = |file: &Path, role: &str| -> Result<Vec<u8>, ExecError> {
        std::fs::read(file).map_err(|e| {
            let what = match e.kind() {
                std::io::ErrorKind::NotFound => format!("the {role} file does not exist"),
                _ => format!("cannot read the {role} file ({e})"),
            };
            fail(file, what, &where_)
        })
    };
    let certs = |file: &Path, role: &str| -> Result<Vec<CertificateDer<'static>>, ExecError> {
        let pem = read(file, role)?;
        let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
        match certs {
            Ok(c) if !c.is_empty() => Ok(c),
            Ok(_) => Err(fail(
                file,
                format!("the {role} file holds no PEM certificate"),
                &where_,
            )),
            Err(e) => Err(fail(
                file,
                format!("the {role} file is not valid PEM ({e})"),
                &where_,
            )),
        }
    };
    let ca = certs(&tls.ca, "CA certificate")?;
    let chain = certs(&tls.cert, "client certificate")?;
    let key_pem = read(&tls.key, "private key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        fail(
            &tls.key,
            format!("the private key file holds no usable PEM key ({e})"),
            &where_,
        )
    })?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        fail(
            &tls.key,
            format!("the private key cannot be used ({e})"),
            "make a new key and certificate (docs/sandbox.md shows how)",
        )
    })?;
    let certified = rustls::sign::CertifiedKey::new(chain.clone(), signing);
    if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) =
        certified.keys_match()
    {
        return Err(fail(
            &tls.key,
            format!("this key does not belong to {}", tls.cert.display()),
            "use the key.pem made together with cert.pem",
        ));
    }
    // Validity of the client certificate (webpki checks dates before who signed it).
    let anchors: Vec<_> = ca
        .iter()
        .filter_map(|c| webpki::anchor_from_trusted_cert(c).ok())
        .collect();
    if let Ok(ee) = webpki::EndEntityCert::try_from(&chain[0]) {
        let date = |t: UnixTime| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_secs(t.as_secs()),
            )
            .to_string()
        };
        match ee.verify_for_usage(
            provider.signature_verification_algorithms.all,
            &anchors,
            &chain[1..],
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        ) {
            Err(webpki::Error::CertExpired { not_after, .. }) => {
                return Err(fail(
                    &tls.cert,
                    format!(
                        "the client certificate (or a CA above it) expired on {}",
                        date(not_after)
                    ),
                    "renew it with the CA that signed it",
                ));
            }
            Err(webpki::Error::CertNotValidYet { not_before, .. }) => {
                return Err(fail(
                    &tls.cert,
                    format!(
                        "the client certificate is not valid before {} (is this machine's clock right?)",
                        date(not_before)
                    ),
                    "check the clock or reissue the certificate",
                ));
            }
            // Signed by another CA than ca.pem, or other details: the engine decides.
            _ => {}
        }
    }
    Ok(())
}

/// One line for an engine that could not be reached or refused us: the cause in the user's
/// terms and the fix first, then a short excerpt of the underlying error.
fn unreachable(engine: &EngineHost, err: &str) -> String {
    let lower = err.to_ascii_lowercase();
    let host = &engine.host;
    let detail = excerpt(err, 160);
    let check_address = || {
        format!(
            "is the engine running and listening there? Check the address in {}",
            engine.source.label()
        )
    };
    match engine.transport {
        EngineTransport::Unix => {
            let fix = if lower.contains("permission denied") {
                "Your user may not use the Docker socket: add it to the `docker` group \
                 (`sudo usermod -aG docker $USER`, then log in again) or use rootless Docker."
            } else {
                "Is Docker running? Start it (`sudo systemctl start docker`, or open Docker \
                 Desktop), or point DOCKER_HOST at a running engine (unix:///var/run/docker.sock, \
                 tcp://HOST:2376 with TLS, ssh://USER@HOST)."
            };
            format!(
                "cannot reach the Docker daemon at {host} ({detail}). {fix} `proctor doctor` \
                 checks this."
            )
        }
        EngineTransport::Tls => {
            let (ca, cert) = match &engine.tls {
                Some(tls) => (tls.ca.display().to_string(), tls.cert.display().to_string()),
                None => ("ca.pem".to_owned(), "cert.pem".to_owned()),
            };
            let why = if lower.contains("unknownissuer")
                || lower.contains("unknown issuer")
                || lower.contains("badsignature")
            {
                format!(
                    "the engine's certificate is not signed by the CA in {ca}; put the CA that \
                     signed the engine's certificate there"
                )
            } else if lower.contains("notvalidforname") || lower.contains("not valid for name") {
                "the engine's certificate does not name this address; connect by a name or IP \
                 address the certificate lists, or reissue it with this one"
                    .to_owned()
            } else if lower.contains("invalid peer certificate") && lower.contains("expired") {
                "the engine's certificate has expired; renew it on the engine's host".to_owned()
            } else if lower.contains("received fatal alert") {
                format!(
                    "the engine refused the client certificate {cert}; use one signed by the CA \
                     the engine trusts (its --tlscacert), with its key.pem"
                )
            } else if lower.contains("corrupt message") || lower.contains("invalidcontenttype") {
                "the engine does not speak TLS on this port; use its TLS port (usually 2376)"
                    .to_owned()
            } else {
                check_address()
            };
            format!("cannot reach the Docker engine at {host} over TLS: {why} ({detail})")
        }
        EngineTransport::Tcp => {
            let why = if lower.contains("http request to an https server")
                || lower.contains("client sent an http request")
            {
                "the engine expects TLS; set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH (ca.pem, \
                 cert.pem, key.pem)"
                    .to_owned()
            } else {
                check_address()
            };
            format!("cannot reach the Docker engine at {host}: {why} ({detail})")
        }
        // The SSH transport's errors already say what failed and the fix (see `ssh_failure`).
        EngineTransport::Ssh => {
            format!(
                "cannot reach the Docker engine at {host} over SSH: {}",
                excerpt(err, 400)
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SSH: each connection is one `ssh … -- HOST docker system dial-stdio`, HTTP over its stdio.
// (bollard's own ssh transport drops the port of ssh://HOST:PORT and lets the far side's stderr
// through to the terminal, so proctor runs ssh itself, as the docker CLI does.)

/// The body type of bollard's requests.
trait HasBody {
    type Body;
}
impl<B> HasBody for hyper::Request<B> {
    type Body = B;
}
type RequestBody = <BollardRequest as HasBody>::Body;

/// Starts one ssh per connection and remembers the stderr of the last one that failed.
#[derive(Clone)]
struct SshConnector {
    target: Arc<SshTarget>,
    /// stderr of the most recent ssh that ended with something to say.
    last_stderr: Arc<Mutex<Option<String>>>,
}

/// One ssh process's stdio as a connection.
struct SshStream {
    io: TokioIo<tokio::io::Join<ChildStdout, ChildStdin>>,
    /// Killed when the connection is dropped.
    _child: Child,
}

impl tower_service::Service<hyper::Uri> for SshConnector {
    type Response = SshStream;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<SshStream, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        let target = self.target.clone();
        let last = self.last_stderr.clone();
        Box::pin(async move {
            *lock(&last) = None;
            let mut child = tokio::process::Command::new("ssh")
                .args(target.ssh_args())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| {
                    let why = if e.kind() == std::io::ErrorKind::NotFound {
                        "the ssh client is not installed here: install OpenSSH's client \
                         (e.g. `apt-get install openssh-client`)"
                            .to_owned()
                    } else {
                        format!("cannot start ssh ({e})")
                    };
                    std::io::Error::new(e.kind(), why)
                })?;
            let (Some(stdin), Some(stdout), Some(mut stderr)) =
                (child.stdin.take(), child.stdout.take(), child.stderr.take())
            else {
                return Err(std::io::Error::other("ssh started without its pipes"));
            };
            tokio::spawn(async move {
                let mut kept = Vec::new();
                let mut buf = [0u8; 1024];
                while let Ok(n) = stderr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if kept.len() < SSH_STDERR_KEEP {
                        kept.extend_from_slice(&buf[..n]);
                    }
                }
                let text = String::from_utf8_lossy(&kept).trim().to_owned();
                if !text.is_empty() {
                    *lock(&last) = Some(text);
                }
            });
            Ok(SshStream {
                io: TokioIo::new(tokio::io::join(stdout, stdin)),
                _child: child,
            })
        })
    }
}

impl hyper::rt::Read for SshStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for SshStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Connection for SshStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

fn connect_ssh(target: &SshTarget) -> Result<Docker, bollard::errors::Error> {
    let connector = SshConnector {
        target: Arc::new(target.clone()),
        last_stderr: Arc::new(Mutex::new(None)),
    };
    let last = connector.last_stderr.clone();
    let shown = Arc::new(target.clone());
    let client: Arc<Client<SshConnector, RequestBody>> = Arc::new(
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector),
    );
    Docker::connect_with_custom_transport(
        move |req: BollardRequest| {
            let client = client.clone();
            let last = last.clone();
            let target = shown.clone();
            async move {
                match client.request(req).await {
                    Ok(response) => Ok(response),
                    Err(e) => {
                        let chain = error_chain(&e);
                        let stderr = wait_for_stderr(&last).await;
                        Err(bollard::errors::Error::IOError {
                            err: std::io::Error::other(ssh_failure(
                                &target,
                                &chain,
                                stderr.as_deref(),
                            )),
                        })
                    }
                }
            }
        },
        Some("ssh://docker-engine"),
        CALL_TIMEOUT.as_secs(),
        API_DEFAULT_VERSION,
    )
}

/// ssh's error text, once its stderr has ended (ssh writes it before exiting), or `None`.
async fn wait_for_stderr(last: &Mutex<Option<String>>) -> Option<String> {
    let deadline = tokio::time::Instant::now() + SSH_STDERR_WAIT;
    loop {
        if let Some(text) = lock(last).clone() {
            return Some(text);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What went wrong with ssh, in the user's words, and the fix. `stderr` is ssh's (and the far
/// side's) error text.
pub fn ssh_failure(target: &SshTarget, transport_error: &str, stderr: Option<&str>) -> String {
    let try_it = target.try_command();
    let who = format!(
        "{}{}",
        target
            .user
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default(),
        target.host
    );
    let Some(stderr) = stderr else {
        return format!(
            "the connection through ssh ended ({}); check that `{try_it} docker version` works",
            excerpt(transport_error, 200)
        );
    };
    let lower = stderr.to_ascii_lowercase();
    let said = excerpt(
        stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or(stderr),
        200,
    );
    if let Some(rest) = stderr.split("Load key \"").nth(1)
        && let Some((file, why)) = rest.split_once("\":")
    {
        return format!(
            "ssh cannot use the key {} ({}): fix or replace it (a private key readable only by \
             you, `chmod 600`), or point IdentityFile for {} at a valid key in ~/.ssh/config",
            excerpt(file, 200),
            excerpt(why.lines().next().unwrap_or(why), 100),
            target.host
        );
    }
    if lower.contains("remote host identification has changed") {
        return format!(
            "the host key of {} has CHANGED since you last connected ({said}): check with the \
             host's owner before trusting it; then remove the old key with `ssh-keygen -R {}`",
            target.host, target.host
        );
    }
    if lower.contains("host key verification failed") || lower.contains("host key is known") {
        return format!(
            "ssh does not know the host key of {}: proctor runs ssh without prompts, so connect \
             once with `{try_it}`, check the fingerprint and accept it ({said})",
            target.host
        );
    }
    if lower.contains("permission denied (") {
        return format!(
            "ssh login as {who} was refused ({said}): offer a key that {} accepts (ssh-add it, or \
             set IdentityFile for this host in ~/.ssh/config); `{try_it}` must log in without a \
             password",
            target.host
        );
    }
    if lower.contains("could not resolve hostname") {
        return format!(
            "ssh cannot resolve {} ({said}): check the host name",
            target.host
        );
    }
    if lower.contains("connection refused")
        || lower.contains("timed out")
        || lower.contains("no route to host")
        || lower.contains("network is unreachable")
    {
        return format!(
            "ssh cannot reach {}{} ({said}): is the host up and sshd listening on that port?",
            target.host,
            target.port.map(|p| format!(":{p}")).unwrap_or_default()
        );
    }
    if lower.contains("docker: command not found")
        || lower.contains("docker: not found")
        || (lower.contains("docker") && lower.contains("no such file"))
    {
        return format!(
            "the docker CLI is not installed on {} (or not on the login PATH of {who}): \
             `docker system dial-stdio` runs there ({said})",
            target.host
        );
    }
    if lower.contains("permission denied") && lower.contains("docker") {
        return format!(
            "{who} may not use the Docker socket on {} ({said}): add the user to the `docker` \
             group there",
            target.host
        );
    }
    format!("ssh to {who} failed ({said}); check that `{try_it} docker version` works")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(
        chosen: Option<(&str, HostSource)>,
        vars: &[(&str, &str)],
    ) -> Result<EngineHost, EngineHostError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        EngineHost::resolve_with(chosen, |k| map.get(k).cloned())
    }

    #[test]
    fn nothing_set_is_the_local_socket() {
        let e = resolve(None, &[]).unwrap();
        assert_eq!(e.host(), DEFAULT_HOST);
        assert_eq!(e.transport(), EngineTransport::Unix);
        assert_eq!(e.source(), HostSource::Default);
        assert!(!e.is_remote());
        assert!(e.describe().contains("local"), "{}", e.describe());
    }

    #[test]
    fn the_command_line_and_team_file_win_over_docker_host() {
        let vars = [("DOCKER_HOST", "unix:///other.sock")];
        let e = resolve(None, &vars).unwrap();
        assert_eq!(
            (e.host(), e.source()),
            ("unix:///other.sock", HostSource::Environment)
        );
        let e = resolve(Some(("ssh://me@box", HostSource::TeamFile)), &vars).unwrap();
        assert_eq!(
            (e.host(), e.source()),
            ("ssh://me@box", HostSource::TeamFile)
        );
        assert_eq!(e.transport(), EngineTransport::Ssh);
        assert!(e.is_remote());
    }

    #[test]
    fn tls_verify_makes_tcp_tls_with_the_cli_file_names() {
        let vars = [
            ("DOCKER_HOST", "tcp://build.example:2376"),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", "/certs"),
        ];
        let e = resolve(None, &vars).unwrap();
        assert_eq!(e.transport(), EngineTransport::Tls);
        let tls = e.tls_files().unwrap();
        assert_eq!(tls.ca, Path::new("/certs/ca.pem"));
        assert_eq!(tls.cert, Path::new("/certs/cert.pem"));
        assert_eq!(tls.key, Path::new("/certs/key.pem"));
        assert!(e.describe().contains("over TLS") && e.describe().contains("remote"));
        // Without DOCKER_CERT_PATH: ~/.docker, as the docker CLI.
        let e = resolve(
            Some(("tcp://build.example", HostSource::CommandLine)),
            &[("DOCKER_TLS_VERIFY", "1"), ("HOME", "/home/u")],
        )
        .unwrap();
        assert_eq!(e.host(), "tcp://build.example:2376");
        assert_eq!(e.tls_files().unwrap().dir, Path::new("/home/u/.docker"));
    }

    #[test]
    fn plain_tcp_is_refused_off_loopback_unless_allowed() {
        let err = resolve(Some(("tcp://192.0.2.1:2375", HostSource::TeamFile)), &[]).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, EngineHostError::Insecure { .. }), "{msg}");
        assert!(
            msg.contains("tcp://192.0.2.1:2375")
                && msg.contains("DOCKER_TLS_VERIFY")
                && msg.contains("ssh://")
                && msg.contains(ALLOW_INSECURE_ENV)
                && msg.contains("team file"),
            "{msg}"
        );
        let err = resolve(None, &[("DOCKER_HOST", "tcp://docker.internal")]).unwrap_err();
        assert!(matches!(err, EngineHostError::Insecure { .. }));
        let ok = resolve(
            None,
            &[
                ("DOCKER_HOST", "tcp://192.0.2.1:2375"),
                (ALLOW_INSECURE_ENV, "1"),
            ],
        )
        .unwrap();
        assert_eq!(ok.transport(), EngineTransport::Tcp);
        for local in [
            "tcp://127.0.0.1:2375",
            "tcp://localhost",
            "tcp://[::1]:2375",
        ] {
            let e = resolve(None, &[("DOCKER_HOST", local)]).unwrap();
            assert_eq!(e.transport(), EngineTransport::Tcp, "{local}");
            assert!(
                e.is_remote(),
                "a TCP engine may not share our files: {local}"
            );
        }
        // TLS makes any address acceptable.
        let e = resolve(
            None,
            &[
                ("DOCKER_HOST", "tcp://192.0.2.1:2376"),
                ("DOCKER_TLS_VERIFY", "1"),
                ("HOME", "/h"),
            ],
        )
        .unwrap();
        assert_eq!(e.transport(), EngineTransport::Tls);
    }

    #[test]
    fn ssh_addresses_keep_user_and_port() {
        let e = resolve(Some(("ssh://dev@10.1.2.3:2222", HostSource::TeamFile)), &[]).unwrap();
        let t = e.ssh_target().unwrap();
        assert_eq!(t.user.as_deref(), Some("dev"));
        assert_eq!(t.host, "10.1.2.3");
        assert_eq!(t.port, Some(2222));
        let args = t.ssh_args();
        let tail: Vec<&str> = args
            .iter()
            .rev()
            .take(5)
            .rev()
            .map(String::as_str)
            .collect();
        assert_eq!(tail, ["--", "10.1.2.3", "docker", "system", "dial-stdio"]);
        assert!(args.windows(2).any(|w| w == ["-p", "2222"]));
        assert!(args.windows(2).any(|w| w == ["-l", "dev"]));
        assert!(args.windows(2).any(|w| w == ["-o", "BatchMode=yes"]));
        let alias = resolve(Some(("ssh://buildbox", HostSource::TeamFile)), &[]).unwrap();
        let t = alias.ssh_target().unwrap();
        assert_eq!((t.user.as_deref(), t.port), (None, None));
    }

    #[test]
    fn bad_addresses_say_what_is_accepted() {
        for bad in [
            "docker.sock",
            "unix://relative.sock",
            "http://host:2375",
            "ftp://x",
            "tcp://",
            "tcp://host:0",
            "tcp://host:99999",
            "tcp://host/path",
            "ssh://-oProxyCommand=touch%20x",
            "ssh://-oProxyCommand=x@host",
            "ssh://user@host name",
            "ssh://[::1",
        ] {
            let err = check_host_syntax(bad).unwrap_err();
            assert!(err.contains("ssh://[USER@]HOST[:PORT]"), "{bad}: {err}");
        }
        for good in [
            "unix:///var/run/docker.sock",
            "tcp://10.0.0.5:2376",
            "tcp://[fd00::1]:2376",
            "ssh://box",
            "ssh://u@box:22",
        ] {
            check_host_syntax(good).unwrap();
        }
        let err = resolve(None, &[("DOCKER_HOST", "http://x:1")]).unwrap_err();
        assert!(
            err.to_string().starts_with("DOCKER_HOST = \"http://x:1\""),
            "{err}"
        );
    }

    #[test]
    fn tls_without_verification_is_refused() {
        let err = resolve(
            None,
            &[("DOCKER_HOST", "tcp://10.0.0.5:2376"), ("DOCKER_TLS", "1")],
        )
        .unwrap_err();
        assert!(err.to_string().contains("DOCKER_TLS_VERIFY=1"), "{err}");
    }

    #[test]
    fn unix_unreachable_message_names_the_fix() {
        let e = resolve(Some(("unix:///nope.sock", HostSource::CommandLine)), &[]).unwrap();
        let m = unreachable(&e, "No such file or directory");
        assert!(m.contains("unix:///nope.sock") && m.contains("DOCKER_HOST"));
        let m = unreachable(&e, "Permission denied (os error 13)");
        assert!(m.contains("docker` group"));
    }

    #[test]
    fn ssh_failures_are_named() {
        let t = SshTarget {
            user: Some("dev".into()),
            host: "box".into(),
            port: Some(2222),
        };
        let m = ssh_failure(&t, "x", Some("dev@box: Permission denied (publickey)."));
        assert!(
            m.contains("refused")
                && m.contains("IdentityFile")
                && m.contains("ssh -p 2222 dev@box"),
            "{m}"
        );
        let m = ssh_failure(
            &t,
            "x",
            Some("Load key \"/k/id\": invalid format\r\ndev@box: Permission denied (publickey)."),
        );
        assert!(m.contains("/k/id") && m.contains("invalid format"), "{m}");
        let m = ssh_failure(&t, "x", Some("Host key verification failed."));
        assert!(
            m.contains("host key") && m.contains("ssh -p 2222 dev@box"),
            "{m}"
        );
        let m = ssh_failure(
            &t,
            "x",
            Some("ssh: connect to host box port 2222: Connection refused"),
        );
        assert!(m.contains("cannot reach box:2222"), "{m}");
        let m = ssh_failure(&t, "x", Some("bash: line 1: docker: command not found"));
        assert!(m.contains("docker CLI is not installed on box"), "{m}");
        let m = ssh_failure(&t, "connection closed", None);
        assert!(m.contains("docker version"), "{m}");
        // Text from the far side is made visible and kept to one line.
        let m = ssh_failure(&t, "x", Some("weird\x1b[2J\nthing"));
        assert!(!m.contains('\x1b') && !m.contains('\n'), "{m}");
    }
}
