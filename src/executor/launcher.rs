//! The host side of the in-sandbox launcher: one long-lived `docker exec` per session that starts
//! each block as a fresh process, so a block costs no Docker round trip (see `launcher.py`).

use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use serde::Deserialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::backend::{Chunk, ProcessSpec, SandboxBackend, SandboxStream, StreamError};

/// The launcher script, handed to the image's `python3`.
pub const SCRIPT: &str = include_str!("launcher.py");
/// Largest frame the host accepts (the launcher sends at most 64 KiB of output per frame).
const MAX_FRAME: usize = 1 << 20;
/// Length of the per-block nonce that starts every output and exit frame of that block.
pub const NONCE_LEN: usize = 32;
/// What `Launcher::next` says when a frame lacks the running block's nonce.
pub const FORGED: &str = "a frame without this block's nonce (forged or corrupt launcher output)";
/// What the launcher says when it cannot make itself non-dumpable (then it does not run).
pub const NOT_DUMPABLE: &str = "proctor-launcher: cannot make the launcher non-dumpable";
/// How long a fresh launcher may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Length of the sequence number after the tag of 1/2/X/K frames.
const SEQ_LEN: usize = 8;
/// How often the launcher sends a keepalive while its stream is up (`KEEPALIVE` in launcher.py).
pub const KEEPALIVE: Duration = Duration::from_secs(1);
/// The stream counts as dead after this long without a frame of the running block (keepalives
/// included).
pub const DEAD_AFTER: Duration = Duration::from_secs(5);
/// Longest one attach attempt may take (exec, challenge, proof, status).
const ATTACH_TRY: Duration = Duration::from_secs(5);
/// What `Launcher::next` says when sequence numbers jump (frames lost for good).
pub const GAP: &str =
    "frames of this block were lost for good (the launcher could not keep them all)";
/// What the attach relay says when no launcher listens (it died).
const NO_LAUNCHER: &str = "proctor-attach: no launcher";

/// The exit report the launcher sends when a block ends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ExitReport {
    /// Return code; negative is the killing signal.
    pub code: i64,
    /// Killed at the deadline.
    #[serde(default)]
    pub timed_out: bool,
    /// Killed on request.
    #[serde(default)]
    pub cancelled: bool,
    /// Killed by the OOM killer.
    #[serde(default)]
    pub oom: bool,
    /// Output bytes the block wrote.
    #[serde(default)]
    pub total: u64,
    /// Output bytes forwarded.
    #[serde(default)]
    pub kept: u64,
    /// The interpreter could not be started.
    #[serde(default)]
    pub spawn_error: Option<String>,
}

/// One message from the launcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Started and swept the process table.
    Ready(ReadyInfo),
    /// Block stdout bytes.
    Stdout(Bytes),
    /// Block stderr bytes.
    Stderr(Bytes),
    /// The block ended.
    Exit(ExitReport),
    /// Answer to a ping.
    Pong,
    /// The stream is alive; the last sequence number the launcher sent.
    Keepalive,
    /// An attach connection's challenge (before the proof).
    Challenge(Bytes),
    /// An attach was accepted: what the launcher is doing.
    Attached(AttachStatus),
}

/// What the launcher says when it accepts an attach.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AttachStatus {
    /// The nonce of the running (or last) block.
    #[serde(default)]
    pub nonce: String,
    /// A block is running.
    #[serde(default)]
    pub running: bool,
    /// The last sequence number sent.
    #[serde(default)]
    pub seq: u64,
    /// HMAC-SHA256 of "S" + the challenge under the launcher's key, in hex.
    #[serde(default)]
    pub proof: String,
}

/// What a launcher says when it is ready.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ReadyInfo {
    /// Protocol version.
    #[serde(default)]
    pub v: u32,
    /// The abstract unix socket it takes attaches on (none: it cannot be reattached).
    #[serde(default)]
    pub sock: Option<String>,
}

/// One decoded frame with its tag (the block nonce; empty for R, P, A and S) and sequence number
/// (0 for untagged frames).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The tag the frame carried.
    pub tag: Bytes,
    /// Its sequence number (K: the last one sent).
    pub seq: u64,
    /// The frame.
    pub frame: Frame,
}

/// A fresh random nonce for one block (32 hex digits).
pub fn new_nonce() -> String {
    let raw: [u8; NONCE_LEN / 2] = rand::random();
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// Splits the launcher's stdout into frames.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    /// Adds bytes; returns the frames they complete, or why the stream is garbage.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Decoded>, String> {
        self.buf.extend_from_slice(bytes);
        let mut frames = Vec::new();
        while self.buf.len() >= 5 {
            let kind = self.buf[0];
            let len =
                u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
            if len > MAX_FRAME
                || !matches!(kind, b'R' | b'1' | b'2' | b'P' | b'X' | b'K' | b'A' | b'S')
            {
                return Err(self.garbage());
            }
            if self.buf.len() < 5 + len {
                break;
            }
            self.buf.advance(5);
            let mut payload = self.buf.split_to(len).freeze();
            let (tag, seq) = if matches!(kind, b'1' | b'2' | b'X' | b'K') {
                if payload.len() < NONCE_LEN + SEQ_LEN {
                    return Err(FORGED.into());
                }
                let tag = payload.split_to(NONCE_LEN);
                let seq = payload.split_to(SEQ_LEN);
                let seq = u64::from_be_bytes(seq[..].try_into().unwrap_or_default());
                (tag, seq)
            } else {
                (Bytes::new(), 0)
            };
            let frame = match kind {
                b'R' => Frame::Ready(serde_json::from_slice(&payload).unwrap_or_default()),
                b'1' => Frame::Stdout(payload),
                b'2' => Frame::Stderr(payload),
                b'P' => Frame::Pong,
                b'K' => Frame::Keepalive,
                b'A' => Frame::Challenge(payload),
                b'S' => Frame::Attached(
                    serde_json::from_slice(&payload)
                        .map_err(|e| format!("bad attach status from launcher: {e}"))?,
                ),
                b'X' => Frame::Exit(
                    serde_json::from_slice(&payload)
                        .map_err(|e| format!("bad exit report from launcher: {e}"))?,
                ),
                _ => return Err(self.garbage()),
            };
            frames.push(Decoded { tag, seq, frame });
        }
        Ok(frames)
    }
}

impl FrameDecoder {
    /// What the stream said instead of frames (e.g. Docker's "executable file not found").
    fn garbage(&self) -> String {
        let n = self.buf.len().min(300);
        format!(
            "the launcher sent non-protocol output: {}",
            String::from_utf8_lossy(&self.buf[..n]).trim()
        )
    }
}

/// Why a launcher could not be started.
#[derive(Debug)]
pub enum LaunchError {
    /// The backend refused the stream (sandbox gone or stopped, engine trouble).
    Backend(StreamError),
    /// The exec ran but no launcher came up (no `python3` in the image, or it crashed).
    Unavailable(String),
}

/// Why a cut stream could not be attached again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReattachError {
    /// The launcher or its container is gone: nothing to attach to (no point trying again).
    Gone(String),
    /// The engine could not be reached (or did not answer) until the deadline; the last error.
    Unreachable(String),
}

/// The `-c` program: makes the process non-dumpable first (so code of the same uid cannot open its
/// `/proc/<pid>/fd`, memory or ptrace it), reads exactly the script's bytes from stdin and runs
/// it, leaving the rest of stdin to the protocol. Without `prctl` it says [`NOT_DUMPABLE`] and
/// exits, and the session falls back to one exec per block.
fn bootstrap() -> String {
    format!(
        "#proctor-launcher\nimport os\ntry:\n import ctypes\n ok=ctypes.CDLL(None).prctl(4,0,0,0,0)==0\nexcept Exception:\n ok=False\nn={}\nb=b''\nwhile len(b)<n:\n c=os.read(0,n-len(b))\n if not c: raise SystemExit(3)\n b+=c\nif not ok:\n os.write(2,b'{NOT_DUMPABLE}\\n')\n raise SystemExit(4)\nexec(compile(b,'proctor-launcher','exec'))\n",
        SCRIPT.len()
    )
}

/// The attach relay (`python3 -I -S -c RELAY SOCKET`): non-dumpable like the launcher, it connects
/// to the launcher's abstract socket and copies bytes both ways between it and the exec's stdio.
/// It holds no secret: the host and the launcher authenticate through it.
const RELAY: &str = "#proctor-attach
import os,sys,socket,select
try:
 import ctypes
 ok=ctypes.CDLL(None).prctl(4,0,0,0,0)==0
except Exception:
 ok=False
if not ok:
 os.write(2,b'proctor-attach: cannot make the relay non-dumpable\\n')
 raise SystemExit(4)
s=socket.socket(socket.AF_UNIX,socket.SOCK_STREAM)
try:
 s.connect('\\0'+sys.argv[1])
except OSError as e:
 os.write(2,('proctor-attach: no launcher: %s\\n'%e).encode())
 raise SystemExit(5)
fds=[0,s.fileno()]
while fds:
 for f in select.select(fds,[],[])[0]:
  d=os.read(f,65536)
  if not d:
   if f:
    raise SystemExit(0)
   s.shutdown(socket.SHUT_WR)
   fds.remove(0)
  elif f:
   v=memoryview(d)
   while v:
    v=v[os.write(1,v):]
  else:
   s.sendall(d)
";

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| block.iter().map(|k| k ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

type Frames = mpsc::Receiver<Result<Decoded, String>>;
type Input = Pin<Box<dyn AsyncWrite + Send>>;
type Output = futures::stream::BoxStream<'static, Result<Chunk, String>>;

/// Starts `argv` in `container` as `user` through `backend`, with its stdin; its stdin and output.
async fn open_exec(
    backend: &dyn SandboxBackend,
    container: &str,
    user: &str,
    argv: &[&str],
) -> Result<(Input, Output), LaunchError> {
    let process = ProcessSpec {
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        user: user.to_owned(),
        cwd: Some(super::sandbox::WORKSPACE.to_owned()),
        env: Vec::new(),
        stdin: true,
    };
    let stream = tokio::time::timeout(READY_TIMEOUT, backend.open_stream(container, process))
        .await
        .map_err(|_| {
            LaunchError::Backend(StreamError::Unreachable(
                "the engine did not start the launcher within 10 s".into(),
            ))
        })?
        .map_err(LaunchError::Backend)?;
    let SandboxStream { output, input, .. } = stream;
    Ok((input, output))
}

/// Decodes an exec's output into frames on a small channel (a slow consumer backs up into Docker
/// and then into the block's pipes). Keepalives never wait for room: one that does not fit is
/// dropped. Ends with an `Err` saying how the stream ended.
fn spawn_reader(mut output: Output) -> (Frames, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(16);
    let reader = tokio::spawn(async move {
        let mut decoder = FrameDecoder::default();
        let mut stderr_tail = String::new();
        while let Some(item) = output.next().await {
            match item {
                Ok(Chunk::Stdout(message)) => match decoder.push(&message) {
                    Ok(frames) => {
                        for f in frames {
                            if f.frame == Frame::Keepalive {
                                let _ = tx.try_send(Ok(f));
                            } else if tx.send(Ok(f)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                },
                Ok(Chunk::Stderr(message)) => {
                    tracing::debug!(stderr = %String::from_utf8_lossy(&message), "launcher stderr");
                    stderr_tail.push_str(&String::from_utf8_lossy(&message));
                    if stderr_tail.len() > 2000 {
                        let cut = stderr_tail.len() - 2000;
                        let cut = (cut..stderr_tail.len())
                            .find(|i| stderr_tail.is_char_boundary(*i))
                            .unwrap_or(stderr_tail.len());
                        stderr_tail.drain(..cut);
                    }
                }
                Err(e) => {
                    stderr_tail.push_str(&format!(" ({e})"));
                    break;
                }
            }
        }
        let tail = stderr_tail.trim();
        let _ = tx
            .send(Err(if tail.is_empty() {
                "the launcher exited".to_owned()
            } else {
                format!("the launcher exited: {tail}")
            }))
            .await;
    });
    (rx, reader)
}

/// Aborts the task it holds when dropped.
struct AbortOnDrop(Option<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// A running launcher.
pub struct Launcher {
    input: Input,
    frames: Frames,
    reader: JoinHandle<()>,
    nonce: Bytes,
    /// The last sequence number received.
    seq: u64,
    /// When the last frame of the running block (keepalives included) arrived.
    heard: Instant,
    /// The secret an attach proves it knows (sent to the launcher at start; never stored).
    key: [u8; 32],
    /// The launcher's attach socket.
    sock: Option<String>,
    /// The running block's `run` command (sent again when a cut swallowed it).
    command: Option<serde_json::Value>,
    /// The stream was given up on: the launcher must be replaced.
    dead: bool,
    /// How to attach again when a transfer's stream is cut ([`Launcher::recover`]).
    relink: Option<Relink>,
    /// The last reattach found that the launcher never got the last command.
    swallowed: bool,
}

/// What [`Launcher::recover`] needs to attach again: the backend, the sandbox, the relay's user
/// (a uid blocks cannot signal) and how long a cut may last.
pub struct Relink {
    pub backend: std::sync::Arc<dyn SandboxBackend>,
    pub container: String,
    pub relay_user: String,
    pub deadline: Duration,
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launcher").finish_non_exhaustive()
    }
}

impl Launcher {
    /// Starts a launcher in `container` as `user` through `backend` and waits for it to be ready.
    pub async fn start(
        backend: &dyn SandboxBackend,
        container: &str,
        user: &str,
    ) -> Result<Self, LaunchError> {
        let bootstrap = bootstrap();
        let (mut input, output) = open_exec(
            backend,
            container,
            user,
            &["python3", "-I", "-S", "-c", &bootstrap],
        )
        .await?;
        let key: [u8; 32] = rand::random();
        // The script goes over stdin: any image with python3 works, nothing is copied in. The
        // attach key follows at once, before any block can run.
        let hello = format!("{{\"op\":\"hello\",\"key\":\"{}\"}}\n", hex(&key));
        let handed = tokio::time::timeout(READY_TIMEOUT, async {
            input.write_all(SCRIPT.as_bytes()).await?;
            input.write_all(hello.as_bytes()).await?;
            input.flush().await
        })
        .await;
        if !matches!(handed, Ok(Ok(()))) {
            return Err(LaunchError::Unavailable(
                "could not hand the launcher script to python3".into(),
            ));
        }
        let (frames, reader) = spawn_reader(output);
        let mut launcher = Self {
            input,
            frames,
            reader,
            nonce: Bytes::new(),
            seq: 0,
            heard: Instant::now(),
            key,
            sock: None,
            command: None,
            dead: false,
            relink: None,
            swallowed: false,
        };
        loop {
            match tokio::time::timeout(READY_TIMEOUT, launcher.frames.recv()).await {
                Ok(Some(Ok(Decoded {
                    frame: Frame::Ready(info),
                    ..
                }))) => {
                    launcher.sock = info.sock;
                    return Ok(launcher);
                }
                Ok(Some(Ok(Decoded {
                    frame: Frame::Keepalive,
                    ..
                }))) => {}
                Ok(Some(Ok(d))) => {
                    return Err(LaunchError::Unavailable(format!(
                        "launcher sent {:?} before it was ready",
                        d.frame
                    )));
                }
                Ok(Some(Err(why))) => return Err(LaunchError::Unavailable(why)),
                Ok(None) => return Err(LaunchError::Unavailable("the launcher exited".into())),
                Err(_) => {
                    return Err(LaunchError::Unavailable(
                        "the launcher did not start within 10 s".into(),
                    ));
                }
            }
        }
    }

    /// Sends one command line.
    pub async fn send(&mut self, command: &serde_json::Value) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(command).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let write = async {
            self.input.write_all(&line).await?;
            self.input.flush().await
        };
        match tokio::time::timeout(READY_TIMEOUT, write).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the launcher did not take a command within 10 s",
            )),
        }
    }

    /// Sends a `run` command for one block, tagged with a fresh nonce that every output and exit
    /// frame of that block must carry.
    pub async fn send_run(&mut self, mut command: serde_json::Value) -> std::io::Result<()> {
        let nonce = new_nonce();
        command["nonce"] = serde_json::Value::String(nonce.clone());
        self.nonce = Bytes::from(nonce);
        self.heard = Instant::now();
        self.command = Some(command.clone());
        self.send(&command).await
    }

    /// The next frame of the running block; `Err` once the launcher's stream is gone (with what
    /// it last said), when an output or exit frame does not carry the running block's nonce (see
    /// [`FORGED`]), or when frames are missing (see [`GAP`]). Frames the host already has (sent
    /// again after a reattach) are skipped, and so are keepalives without the block's nonce (idle
    /// ones from before it); its keepalives and output count as signs of life
    /// ([`Launcher::last_heard`]).
    pub async fn next(&mut self) -> Result<Frame, String> {
        loop {
            let d = match self.frames.recv().await {
                Some(Ok(d)) => d,
                Some(Err(why)) => return Err(why),
                None => return Err("the launcher exited".into()),
            };
            match d.frame {
                Frame::Stdout(_) | Frame::Stderr(_) | Frame::Exit(_) => {
                    if self.nonce.is_empty() || d.tag != self.nonce {
                        return Err(FORGED.into());
                    }
                    self.heard = Instant::now();
                    if d.seq <= self.seq {
                        continue;
                    }
                    if d.seq != self.seq + 1 {
                        return Err(GAP.into());
                    }
                    self.seq = d.seq;
                    return Ok(d.frame);
                }
                Frame::Keepalive => {
                    // Keepalives from before this block (idle ones) say nothing about it.
                    if !self.nonce.is_empty() && d.tag == self.nonce {
                        self.heard = Instant::now();
                        return Ok(Frame::Keepalive);
                    }
                }
                Frame::Ready(_) | Frame::Pong => return Ok(d.frame),
                Frame::Challenge(_) | Frame::Attached(_) => {}
            }
        }
    }

    /// Lets [`recover`](Self::recover) attach again after a cut.
    pub fn set_relink(&mut self, relink: Relink) {
        self.relink = Some(relink);
    }

    /// Forgets the last command, so that a reattach never sends it again (a transfer is retried
    /// whole by its caller instead: its data lines cannot be sent again one by one).
    pub fn forget_command(&mut self) {
        self.command = None;
    }

    /// After a request failed: when its stream was cut (not when the launcher refused it),
    /// attaches again and reads what is left of that request (up to its exit report), so the
    /// caller can send it again on a clean stream. False when the stream is not back.
    pub async fn recover(&mut self) -> bool {
        if self.dead || !self.reader.is_finished() {
            return false;
        }
        let Some(r) = self.relink.as_ref() else {
            return false;
        };
        let (backend, container, user) =
            (r.backend.clone(), r.container.clone(), r.relay_user.clone());
        let deadline = Instant::now() + r.deadline;
        if let Err(e) = self.reattach(&*backend, &container, &user, deadline).await {
            tracing::warn!(?e, "a transfer's stream was cut and did not come back");
            return false;
        }
        if self.swallowed {
            return true;
        }
        loop {
            match tokio::time::timeout(READY_TIMEOUT, self.next()).await {
                Ok(Ok(Frame::Exit(_))) => return true,
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => return false,
            }
        }
    }

    /// When the running block's stream last showed life.
    pub fn last_heard(&self) -> Instant {
        self.heard
    }

    /// Whether the launcher's stream already ended (it died while idle), or was given up on.
    pub fn is_finished(&self) -> bool {
        self.dead || (self.reader.is_finished() && self.frames.is_empty())
    }

    /// Marks the stream as given up on: the launcher is replaced before the next block.
    pub fn give_up(&mut self) {
        self.dead = true;
        self.reader.abort();
    }

    /// Attaches to the running launcher again after its stream was cut, through a relay exec run
    /// as `relay_user` (a uid the block cannot signal), until `deadline`. The launcher sends
    /// again every frame numbered above the last one received; [`next`](Self::next) drops any
    /// it already had. A `run` the cut swallowed is sent again.
    pub async fn reattach(
        &mut self,
        backend: &dyn SandboxBackend,
        container: &str,
        relay_user: &str,
        deadline: Instant,
    ) -> Result<(), ReattachError> {
        let Some(sock) = self.sock.clone() else {
            return Err(ReattachError::Gone(
                "the launcher takes no attaches (an older launcher)".into(),
            ));
        };
        let mut last = String::from("no attempt finished");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReattachError::Unreachable(last));
            }
            // (Each step of an attempt has its own ATTACH_TRY.)
            match self
                .attach_once(backend, container, relay_user, &sock)
                .await
            {
                Ok(()) => return Ok(()),
                Err(ReattachError::Gone(why)) => return Err(ReattachError::Gone(why)),
                Err(ReattachError::Unreachable(why)) => last = why,
            }
            let pause = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(500));
            tokio::time::sleep(pause).await;
        }
    }

    async fn attach_once(
        &mut self,
        backend: &dyn SandboxBackend,
        container: &str,
        relay_user: &str,
        sock: &str,
    ) -> Result<(), ReattachError> {
        let opened = tokio::time::timeout(
            ATTACH_TRY,
            open_exec(
                backend,
                container,
                relay_user,
                &["python3", "-I", "-S", "-c", RELAY, sock],
            ),
        )
        .await;
        let (mut input, output) = match opened {
            Ok(Ok(io)) => io,
            Err(_) => {
                return Err(ReattachError::Unreachable(
                    "the engine did not answer in time".into(),
                ));
            }
            // The sandbox is gone or stopped: nothing runs there any more.
            Ok(Err(LaunchError::Backend(StreamError::Refused(why)))) => {
                return Err(ReattachError::Gone(why));
            }
            Ok(Err(LaunchError::Backend(StreamError::Unreachable(why)))) => {
                return Err(ReattachError::Unreachable(why));
            }
            Ok(Err(LaunchError::Unavailable(why))) => return Err(ReattachError::Unreachable(why)),
        };
        let (mut frames, reader) = spawn_reader(output);
        // A failed attempt leaves no reader behind.
        let mut reader = AbortOnDrop(Some(reader));
        let refused = |why: String| {
            if why.contains(NO_LAUNCHER) {
                ReattachError::Gone(why)
            } else {
                ReattachError::Unreachable(why)
            }
        };
        // The engine answered and the relay runs: a launcher that says nothing now is stopped or
        // hung, not behind a bad link.
        let silent = || {
            ReattachError::Gone(format!(
                "the launcher did not answer an attach within {} s",
                ATTACH_TRY.as_secs()
            ))
        };
        let challenge = tokio::time::timeout(ATTACH_TRY, async {
            loop {
                match frames.recv().await {
                    Some(Ok(Decoded {
                        frame: Frame::Challenge(c),
                        ..
                    })) => return Ok(c),
                    Some(Ok(_)) => {}
                    Some(Err(why)) => return Err(refused(why)),
                    None => return Err(refused("the attach relay ended".into())),
                }
            }
        })
        .await
        .map_err(|_| silent())??;
        let proof = hex(&hmac_sha256(&self.key, &challenge));
        let line = format!(
            "{{\"op\":\"attach\",\"seq\":{},\"proof\":\"{proof}\"}}\n",
            self.seq
        );
        let sent = async {
            input.write_all(line.as_bytes()).await?;
            input.flush().await
        };
        if let Err(e) = sent.await {
            return Err(ReattachError::Unreachable(e.to_string()));
        }
        let status = tokio::time::timeout(ATTACH_TRY, async {
            loop {
                match frames.recv().await {
                    Some(Ok(Decoded {
                        frame: Frame::Attached(s),
                        ..
                    })) => return Ok(s),
                    Some(Ok(_)) => {}
                    // The launcher closed the connection: it refused the proof.
                    Some(Err(why)) => return Err(refused(why)),
                    None => return Err(refused("the attach relay ended".into())),
                }
            }
        })
        .await
        .map_err(|_| silent())??;
        let mut signed = b"S".to_vec();
        signed.extend_from_slice(&challenge);
        if status.proof != hex(&hmac_sha256(&self.key, &signed)) {
            return Err(ReattachError::Gone(
                "something other than the launcher answered on its socket (the launcher died and \
                 the block took its place)"
                    .into(),
            ));
        }
        let Some(reader) = reader.0.take() else {
            return Err(ReattachError::Gone("no reader".into()));
        };
        self.reader.abort();
        self.input = input;
        self.frames = frames;
        self.reader = reader;
        self.heard = Instant::now();
        self.swallowed = status.nonce.as_bytes() != self.nonce.as_ref() && !status.running;
        if self.swallowed {
            // The `run` was lost in the cut: the block never started. It starts now.
            if let Some(command) = self.command.clone() {
                self.send(&command)
                    .await
                    .map_err(|e| ReattachError::Unreachable(e.to_string()))?;
            }
        }
        Ok(())
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        // Closing stdin makes the launcher kill whatever runs and exit.
        self.reader.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: &[u8; NONCE_LEN] = b"0123456789abcdef0123456789abcdef";

    /// A frame as launcher.py writes it: tagged kinds carry `N` and `seq`.
    fn frame_seq(kind: u8, seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        if matches!(kind, b'1' | b'2' | b'X' | b'K') {
            body.extend_from_slice(N);
            body.extend_from_slice(&seq.to_be_bytes());
        }
        body.extend_from_slice(payload);
        let mut v = vec![kind];
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend(body);
        v
    }

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        frame_seq(kind, 1, payload)
    }

    #[test]
    fn frames_split_anywhere_decode_in_order() {
        let mut bytes = frame(b'R', br#"{"pid":7,"v":2,"sock":"proctor-launcher-ab"}"#);
        bytes.extend(frame_seq(b'1', 1, b"out"));
        bytes.extend(frame_seq(b'K', 1, b""));
        bytes.extend(frame_seq(b'2', 2, b"err"));
        bytes.extend(frame_seq(b'X', 3, br#"{"code":3,"total":6,"kept":6}"#));
        let mut d = FrameDecoder::default();
        let mut frames = Vec::new();
        for chunk in bytes.chunks(3) {
            frames.extend(d.push(chunk).unwrap());
        }
        assert_eq!(frames.len(), 5);
        assert_eq!(frames[0].tag, Bytes::new());
        let Frame::Ready(info) = &frames[0].frame else {
            panic!("{frames:?}")
        };
        assert_eq!(info.sock.as_deref(), Some("proctor-launcher-ab"));
        assert_eq!(frames[1].tag, Bytes::from_static(N));
        assert_eq!(frames[1].seq, 1);
        assert_eq!(frames[1].frame, Frame::Stdout(Bytes::from_static(b"out")));
        assert_eq!((frames[2].seq, &frames[2].frame), (1, &Frame::Keepalive));
        assert_eq!(frames[3].frame, Frame::Stderr(Bytes::from_static(b"err")));
        let Frame::Exit(x) = &frames[4].frame else {
            panic!("{frames:?}")
        };
        assert_eq!((x.code, x.total, frames[4].seq), (3, 6, 3));
    }

    #[test]
    fn garbage_is_reported_not_buffered_forever() {
        let mut d = FrameDecoder::default();
        assert!(d.push(b"Zxxxxxxx").is_err());
        let mut d = FrameDecoder::default();
        assert!(d.push(&[b'1', 0xff, 0xff, 0xff, 0xff]).is_err());
        // An output frame too short to hold a nonce and a sequence number is refused.
        let mut d = FrameDecoder::default();
        assert!(d.push(&[b'1', 0, 0, 0, 2, b'h', b'i']).is_err());
        let mut short = vec![b'K', 0, 0, 0, 34];
        short.extend_from_slice(N);
        short.extend_from_slice(b"12");
        assert!(FrameDecoder::default().push(&short).is_err());
    }

    #[test]
    fn nonces_are_fresh_hex() {
        let (a, b) = (new_nonce(), new_nonce());
        assert_ne!(a, b);
        assert_eq!(a.len(), NONCE_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test cases 1 and 6 (a key longer than the block).
        let mac = hmac_sha256(&[0x0b; 20], b"Hi There");
        assert_eq!(
            hex(&mac),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    /// A launcher fed from a byte channel, as the reader task feeds it.
    fn fed(frames: Vec<Result<Decoded, String>>) -> Launcher {
        let (tx, rx) = mpsc::channel(frames.len() + 1);
        for f in frames {
            tx.try_send(f).unwrap();
        }
        Launcher {
            input: Box::pin(tokio::io::sink()),
            frames: rx,
            reader: tokio::spawn(async {}),
            nonce: Bytes::from_static(N),
            seq: 0,
            heard: Instant::now(),
            key: [7; 32],
            sock: None,
            command: None,
            dead: false,
            relink: None,
            swallowed: false,
        }
    }

    fn decode(bytes: &[u8]) -> Vec<Result<Decoded, String>> {
        FrameDecoder::default()
            .push(bytes)
            .unwrap()
            .into_iter()
            .map(Ok)
            .collect()
    }

    #[tokio::test]
    async fn frames_sent_again_after_a_reattach_are_not_repeated() {
        let mut bytes = frame_seq(b'1', 1, b"a\n");
        bytes.extend(frame_seq(b'1', 2, b"b\n"));
        // The launcher sends again what it kept: 1 and 2 were already here.
        bytes.extend(frame_seq(b'1', 1, b"a\n"));
        bytes.extend(frame_seq(b'1', 2, b"b\n"));
        bytes.extend(frame_seq(b'K', 2, b""));
        bytes.extend(frame_seq(b'1', 3, b"c\n"));
        bytes.extend(frame_seq(b'X', 4, br#"{"code":0}"#));
        let mut l = fed(decode(&bytes));
        let mut got = Vec::new();
        let mut keepalives = 0;
        loop {
            match l.next().await.unwrap() {
                Frame::Stdout(b) => got.push(b),
                Frame::Keepalive => keepalives += 1,
                Frame::Exit(x) => {
                    assert_eq!(x.code, 0);
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, ["a\n", "b\n", "c\n"]);
        assert_eq!(keepalives, 1);
    }

    #[tokio::test]
    async fn a_gap_in_the_sequence_is_output_lost_not_skipped() {
        let mut bytes = frame_seq(b'1', 1, b"a\n");
        bytes.extend(frame_seq(b'1', 3, b"c\n"));
        let mut l = fed(decode(&bytes));
        assert_eq!(l.next().await.unwrap(), Frame::Stdout("a\n".into()));
        assert_eq!(l.next().await.unwrap_err(), GAP);
    }

    #[tokio::test]
    async fn keepalives_count_as_life_only_with_the_blocks_nonce() {
        let mut forged = vec![b'K', 0, 0, 0, 40];
        forged.extend_from_slice(&[b'f'; NONCE_LEN]);
        forged.extend_from_slice(&9u64.to_be_bytes());
        let mut bytes = forged;
        bytes.extend(frame_seq(b'1', 1, b"x"));
        let mut l = fed(decode(&bytes));
        let before = l.last_heard();
        tokio::time::sleep(Duration::from_millis(5)).await;
        // The foreign keepalive is skipped (and does not count); the output frame does.
        assert_eq!(l.next().await.unwrap(), Frame::Stdout("x".into()));
        assert!(l.last_heard() > before);
        let mut l = fed(decode(&{
            let mut f = vec![b'K', 0, 0, 0, 40];
            f.extend_from_slice(&[b'f'; NONCE_LEN]);
            f.extend_from_slice(&9u64.to_be_bytes());
            f
        }));
        let before = l.last_heard();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let next = tokio::time::timeout(Duration::from_millis(50), l.next()).await;
        assert!(next.is_err() || next.unwrap().is_err());
        assert_eq!(
            l.last_heard(),
            before,
            "a forged keepalive is no sign of life"
        );
    }

    #[tokio::test]
    async fn an_output_frame_with_another_nonce_is_forged() {
        let mut bytes = frame_seq(b'1', 1, b"ok");
        let mut forged = vec![b'1', 0, 0, 0, 42];
        forged.extend_from_slice(&[b'f'; NONCE_LEN]);
        forged.extend_from_slice(&2u64.to_be_bytes());
        forged.extend_from_slice(b"no");
        bytes.extend(forged);
        let mut l = fed(decode(&bytes));
        assert_eq!(l.next().await.unwrap(), Frame::Stdout("ok".into()));
        assert_eq!(l.next().await.unwrap_err(), FORGED);
    }
}
