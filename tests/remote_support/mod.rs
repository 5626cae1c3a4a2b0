//! Second Docker endpoints on this machine for the remote-engine tests: the local daemon served
//! over TLS with client certificates (socat, certificates made here with the openssl CLI) and over
//! SSH (sshd on 127.0.0.1 with a test host key and a test user key; the far side runs
//! `docker system dial-stdio`). Each endpoint lives in its own temp dir and is stopped on drop;
//! [`TlsRelay::kill`] and [`SshServer::kill`] cut every open stream at once (for dropped-link tests).
//! Tools come from `scripts/ensure-test-tools.sh` (run by `scripts/test.sh`).
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The local daemon's socket, which both endpoints serve.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// The sandbox image the tests use.
pub fn image() -> String {
    std::env::var("PROCTOR_SANDBOX_IMAGE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "proctor-sandbox:bookworm".into())
}

fn run(cmd: &mut Command) {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (scripts/ensure-test-tools.sh installs it)")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port on 127.0.0.1 nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn wait_listening(port: u16, child: &mut Child, what: &str, log: &Path) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} is not listening on 127.0.0.1:{port} after 10 s");
}

/// Kills a process started in its own process group, with everything it forked.
fn kill_group(child: &mut Child) {
    let pid = child.id();
    // Descendants that left the group (sshd's per-connection processes start sessions of their
    // own) die too: they carry the open streams.
    let tree = descendants(pid);
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
    for p in tree {
        let _ = Command::new("kill")
            .args(["-KILL", &p.to_string()])
            .stderr(Stdio::null())
            .status();
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Every live descendant of `root` (from /proc's parent links).
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (pid, ppid) in &parents {
            if *ppid == p && !out.contains(pid) {
                out.push(*pid);
                frontier.push(*pid);
            }
        }
    }
    out
}

// ---- certificates ----------------------------------------------------------------------------

/// A test PKI: a CA, a server certificate for 127.0.0.1/localhost and a client certificate.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// Makes the CA, the server and the client certificates (EC P-256, valid for a few days).
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki { dir };
        pki.make_ca("ca", "proctor test CA");
        pki.make_ca("other-ca", "some other CA");
        pki.sign(
            "ca",
            "server",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        pki.sign("ca", "client", "proctor", "extendedKeyUsage=clientAuth\n");
        pki.sign(
            "other-ca",
            "stranger",
            "proctor",
            "extendedKeyUsage=clientAuth\n",
        );
        pki
    }

    /// A file of the PKI (`ca.pem`, `server.pem`, `server-key.pem`, `client.pem`…).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn make_ca(&self, name: &str, cn: &str) {
        run(Command::new("openssl")
            .current_dir(self.dir.path())
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "3", "-subj", &format!("/CN={cn}")])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .args([
                "-keyout",
                &format!("{name}-key.pem"),
                "-out",
                &format!("{name}.pem"),
            ]));
    }

    fn sign(&self, ca: &str, name: &str, cn: &str, ext: &str) {
        let ext_file = self.path(&format!("{name}.ext"));
        std::fs::write(&ext_file, ext).unwrap();
        run(Command::new("openssl")
            .current_dir(self.dir.path())
            .args([
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
            ])
            .args(["-subj", &format!("/CN={cn}")])
            .args([
                "-keyout",
                &format!("{name}-key.pem"),
                "-out",
                &format!("{name}.csr"),
            ]));
        run(Command::new("openssl")
            .current_dir(self.dir.path())
            .args(["x509", "-req", "-in", &format!("{name}.csr"), "-days", "3"])
            .args([
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}-key.pem"),
            ])
            .args(["-CAcreateserial", "-extfile", &format!("{name}.ext")])
            .args(["-out", &format!("{name}.pem")]));
    }

    /// A certificate signed by the test CA whose validity ended in 2021, with its key
    /// (`expired.pem`, `expired-key.pem`).
    pub fn make_expired_client(&self) {
        let d = self.dir.path();
        std::fs::create_dir_all(d.join("ca-db")).unwrap();
        std::fs::write(d.join("ca-db/index.txt"), "").unwrap();
        std::fs::write(d.join("ca-db/serial"), "1000\n").unwrap();
        std::fs::write(
            d.join("ca.cnf"),
            format!(
                "[ca]\ndefault_ca = test\n[test]\ndir = {dir}\ndatabase = $dir/ca-db/index.txt\n\
                 serial = $dir/ca-db/serial\nnew_certs_dir = $dir/ca-db\ncertificate = $dir/ca.pem\n\
                 private_key = $dir/ca-key.pem\ndefault_md = sha256\npolicy = any\n\
                 unique_subject = no\n[any]\ncommonName = supplied\n",
                dir = d.display()
            ),
        )
        .unwrap();
        run(Command::new("openssl")
            .current_dir(d)
            .args([
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
            ])
            .args([
                "-subj",
                "/CN=proctor",
                "-keyout",
                "expired-key.pem",
                "-out",
                "expired.csr",
            ]));
        run(Command::new("openssl")
            .current_dir(d)
            .args(["ca", "-batch", "-config", "ca.cnf", "-notext"])
            .args([
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20210101000000Z",
            ])
            .args(["-extfile", "client.ext"])
            .args(["-in", "expired.csr", "-out", "expired.pem"]));
    }

    /// A `DOCKER_CERT_PATH` directory: `ca.pem`, `cert.pem`, `key.pem` copied from the PKI files
    /// named (`None` leaves that file out).
    pub fn cert_dir(&self, ca: Option<&str>, cert: Option<&str>, key: Option<&str>) -> PathBuf {
        let dir = tempfile::Builder::new()
            .prefix("certs")
            .tempdir_in(self.dir.path())
            .unwrap()
            .keep();
        for (name, from) in [("ca.pem", ca), ("cert.pem", cert), ("key.pem", key)] {
            if let Some(from) = from {
                std::fs::copy(self.path(from), dir.join(name)).unwrap();
            }
        }
        dir
    }

    /// The docker CLI's layout for a client of the test CA.
    pub fn client_dir(&self) -> PathBuf {
        self.cert_dir(Some("ca.pem"), Some("client.pem"), Some("client-key.pem"))
    }
}

// ---- TLS relay -------------------------------------------------------------------------------

/// The local daemon served over TLS on 127.0.0.1: socat checks client certificates against the
/// test CA and forwards each connection to the Docker socket.
pub struct TlsRelay {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    log: PathBuf,
    /// Connections logged by the readiness probe.
    probes: usize,
}

impl TlsRelay {
    /// Starts the relay with `pki`'s server certificate, requiring client certificates signed by
    /// its CA.
    pub fn start(pki: &Pki) -> TlsRelay {
        Self::start_on(pki, free_port())
    }

    /// [`start`](Self::start) on a given port (to restart a killed relay where it was).
    pub fn start_on(pki: &Pki, port: u16) -> TlsRelay {
        use std::os::unix::process::CommandExt;
        let log = pki.path(&format!("socat-{port}.log"));
        let listen = format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay,cert={},key={},cafile={},verify=1",
            pki.path("server.pem").display(),
            pki.path("server-key.pem").display(),
            pki.path("ca.pem").display()
        );
        // socat's forked children verify client certificates without a session id context, so
        // OpenSSL refuses a resumed session ("session id context uninitialized"); dockerd has no
        // such problem. Stateful tickets make each child fall back to a full handshake instead.
        // `nodelay`: dockerd (Go) sets TCP_NODELAY; without it socat's small writes wait for
        // delayed ACKs (about 40 ms per block).
        let conf = pki.path("openssl-relay.cnf");
        std::fs::write(
            &conf,
            "openssl_conf = relay\n[relay]\nssl_conf = ssl\n[ssl]\nsystem_default = defaults\n\
             [defaults]\nOptions = -SessionTicket\n",
        )
        .unwrap();
        let mut child = Command::new("socat")
            .env("OPENSSL_CONF", &conf)
            .args(["-d", "-d", "-lf"])
            .arg(&log)
            .arg(listen)
            .arg(format!("UNIX-CONNECT:{DOCKER_SOCKET}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("socat (scripts/ensure-test-tools.sh installs it)");
        wait_listening(port, &mut child, "socat", &log);
        let mut relay = TlsRelay {
            child,
            port,
            log,
            probes: 0,
        };
        // The readiness probe was one connection; wait until socat has logged it.
        let t0 = Instant::now();
        while relay.connections() == 0 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        relay.probes = relay.connections();
        relay
    }

    /// `tcp://127.0.0.1:PORT`.
    pub fn docker_host(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// How many TLS connections the relay accepted so far.
    pub fn connections(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("accepting connection from")
            .count()
            - self.probes
    }

    /// Stops the relay and every connection it carries, at once.
    pub fn kill(&mut self) {
        kill_group(&mut self.child);
    }

    /// Freezes the relay and every connection it carries (SIGSTOP): a link that goes silent
    /// without closing. [`resume`](Self::resume) thaws it.
    pub fn pause(&self) {
        signal_group(&self.child, "-STOP");
    }

    /// Thaws a [`pause`](Self::pause)d relay.
    pub fn resume(&self) {
        signal_group(&self.child, "-CONT");
    }
}

fn signal_group(child: &Child, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---- SSH -------------------------------------------------------------------------------------

/// sshd on 127.0.0.1 with its own host key, accepting one test user key for the current user.
pub struct SshServer {
    dir: tempfile::TempDir,
    child: Child,
    /// The port it listens on.
    pub port: u16,
    /// The login name (the user running the tests).
    pub user: String,
}

/// A client setup for [`SshServer`]: a directory whose `ssh` runs the system ssh with a config
/// made here (known host key, identity), so nothing in `~/.ssh` is read or written.
pub struct SshClient {
    /// Put first on `PATH`.
    pub bin_dir: PathBuf,
    /// Host alias defined by the config (`ssh://ALIAS` reaches the server).
    pub alias: String,
}

impl SshServer {
    /// Starts sshd with fresh host and user keys.
    pub fn start() -> SshServer {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for key in ["host_key", "user_key", "stranger_key"] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", key, "-f"])
                .arg(d.join(key)));
        }
        std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).unwrap();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_owned();
        // sshd's privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = free_port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\n\
                 PidFile {dir}/sshd.pid\nAuthorizedKeysFile {dir}/authorized_keys\n\
                 PubkeyAuthentication yes\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 PermitRootLogin prohibit-password\nAllowUsers {user}\nLogLevel INFO\n",
                dir = d.display()
            ),
        )
        .unwrap();
        let child = spawn_sshd(d, port);
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        let mut parts = host_pub.split_whitespace();
        let (kind, key) = (parts.next().unwrap(), parts.next().unwrap());
        std::fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {kind} {key}\n"),
        )
        .unwrap();
        SshServer {
            dir,
            child,
            port,
            user,
        }
    }

    /// Starts sshd again on the same port with the same keys, after [`kill`](Self::kill).
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn_sshd(self.dir.path(), self.port);
    }

    /// The server's files (`user_key`, `stranger_key`, `sshd.log`…).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `ssh://USER@127.0.0.1:PORT`.
    pub fn docker_host(&self) -> String {
        format!("ssh://{}@127.0.0.1:{}", self.user, self.port)
    }

    /// How many logins sshd accepted so far.
    pub fn logins(&self) -> usize {
        std::fs::read_to_string(self.path("sshd.log"))
            .unwrap_or_default()
            .matches("Accepted publickey")
            .count()
    }

    /// A client that offers `key` (a private key file) and trusts this server's host key.
    pub fn client(&self, key: &Path) -> SshClient {
        let dir = tempfile::Builder::new()
            .prefix("client")
            .tempdir_in(self.dir.path())
            .unwrap()
            .keep();
        let alias = "proctor-test-engine".to_owned();
        let config = dir.join("ssh_config");
        std::fs::write(
            &config,
            format!(
                "Host {alias}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n\
                 Host *\n  IdentityFile {key}\n  IdentitiesOnly yes\n  \
                 UserKnownHostsFile {known}\n  GlobalKnownHostsFile /dev/null\n  \
                 StrictHostKeyChecking yes\n  UpdateHostKeys no\n",
                port = self.port,
                user = self.user,
                key = key.display(),
                known = self.path("known_hosts").display()
            ),
        )
        .unwrap();
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let ssh = bin.join("ssh");
        std::fs::write(
            &ssh,
            format!(
                "#!/bin/sh\nexec /usr/bin/ssh -F '{}' \"$@\"\n",
                config.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
        SshClient {
            bin_dir: bin,
            alias,
        }
    }

    /// Stops sshd and every session it carries.
    pub fn kill(&mut self) {
        kill_group(&mut self.child);
    }
}

fn spawn_sshd(dir: &Path, port: u16) -> Child {
    use std::os::unix::process::CommandExt;
    let log = dir.join("sshd.log");
    let mut child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-f"])
        .arg(dir.join("sshd_config"))
        .arg("-E")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("sshd (scripts/ensure-test-tools.sh installs openssh-server)");
    wait_listening(port, &mut child, "sshd", &log);
    child
}

impl Drop for SshServer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl SshClient {
    /// `PATH` with this client's `ssh` first.
    pub fn path_env(&self) -> std::ffi::OsString {
        let mut paths = vec![self.bin_dir.clone()];
        paths.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        std::env::join_paths(paths).unwrap()
    }
}

// ---- the real binary -------------------------------------------------------------------------

/// A data dir, a config with a scripted provider playing `script`, and a team file, for running
/// the real `proctor` binary.
pub struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    /// Writes the config, the script and the team file.
    pub fn new(script: &str, team: &str) -> Workdir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("script.toml"), script).unwrap();
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                "[providers.fake]\nkind = \"scripted\"\nscript = \"{}\"\n",
                dir.path().join("script.toml").display()
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("team.toml"), team).unwrap();
        Workdir { dir }
    }

    /// A file of the workdir.
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// `proctor --config … --data-dir … --image …` with no Docker variables inherited.
    pub fn proctor(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_proctor"));
        c.arg("--config")
            .arg(self.path("config.toml"))
            .arg("--data-dir")
            .arg(self.path("data"))
            .arg("--image")
            .arg(image());
        for var in [
            "PROCTOR_DATA_DIR",
            "DOCKER_HOST",
            "DOCKER_TLS_VERIFY",
            "DOCKER_TLS",
            "DOCKER_CERT_PATH",
            "DOCKER_CONFIG",
            "PROCTOR_ALLOW_INSECURE_DOCKER",
        ] {
            c.env_remove(var);
        }
        c
    }

    /// `proctor run --team team.toml --task TASK --headless --json --approve auto` plus `cmd`'s
    /// settings: (exit code, JSON events, stderr).
    pub fn run_auto(&self, mut cmd: Command, task: &str) -> (i32, Vec<serde_json::Value>, String) {
        cmd.args(["run", "--team"])
            .arg(self.path("team.toml"))
            .args(["--task", task, "--headless", "--json", "--approve", "auto"]);
        let out = cmd.stdin(Stdio::null()).output().expect("run proctor");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let events = stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
            })
            .collect();
        (
            out.status.code().unwrap_or(-1),
            events,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The events of one `type`.
pub fn of_type<'a>(events: &'a [serde_json::Value], t: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}
