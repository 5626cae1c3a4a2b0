//! The host side of the in-sandbox launcher: one long-lived `docker exec` per session that starts
//! each block as a fresh process, so a block costs no Docker round trip (see `launcher.py`).

use std::pin::Pin;
use std::time::Duration;

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
    Ready,
    /// Block stdout bytes.
    Stdout(Bytes),
    /// Block stderr bytes.
    Stderr(Bytes),
    /// The block ended.
    Exit(ExitReport),
    /// Answer to a ping.
    Pong,
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
    /// Adds bytes; returns the frames they complete, each with the nonce it carried (empty for
    /// `R` and `P`), or why the stream is garbage.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<(Bytes, Frame)>, String> {
        self.buf.extend_from_slice(bytes);
        let mut frames = Vec::new();
        while self.buf.len() >= 5 {
            let kind = self.buf[0];
            let len =
                u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
            if len > MAX_FRAME || !matches!(kind, b'R' | b'1' | b'2' | b'P' | b'X') {
                return Err(self.garbage());
            }
            if self.buf.len() < 5 + len {
                break;
            }
            self.buf.advance(5);
            let mut payload = self.buf.split_to(len).freeze();
            let nonce = if matches!(kind, b'1' | b'2' | b'X') {
                if payload.len() < NONCE_LEN {
                    return Err(FORGED.into());
                }
                payload.split_to(NONCE_LEN)
            } else {
                Bytes::new()
            };
            frames.push((
                nonce,
                match kind {
                    b'R' => Frame::Ready,
                    b'1' => Frame::Stdout(payload),
                    b'2' => Frame::Stderr(payload),
                    b'P' => Frame::Pong,
                    b'X' => Frame::Exit(
                        serde_json::from_slice(&payload)
                            .map_err(|e| format!("bad exit report from launcher: {e}"))?,
                    ),
                    _ => return Err(self.garbage()),
                },
            ));
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

/// A running launcher.
pub struct Launcher {
    input: Pin<Box<dyn AsyncWrite + Send>>,
    frames: mpsc::Receiver<Result<(Bytes, Frame), String>>,
    reader: JoinHandle<()>,
    nonce: Bytes,
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
        let process = ProcessSpec {
            argv: ["python3", "-I", "-S", "-c", &bootstrap()]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
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
        let SandboxStream {
            mut output,
            mut input,
            ..
        } = stream;
        // The script goes over stdin: any image with python3 works, nothing is copied in.
        let handed = tokio::time::timeout(READY_TIMEOUT, async {
            input.write_all(SCRIPT.as_bytes()).await?;
            input.flush().await
        })
        .await;
        if !matches!(handed, Ok(Ok(()))) {
            return Err(LaunchError::Unavailable(
                "could not hand the launcher script to python3".into(),
            ));
        }
        // Small channel: a slow consumer backs up into Docker and then into the block's pipes.
        let (tx, rx) = mpsc::channel(16);
        let reader = tokio::spawn(async move {
            let mut decoder = FrameDecoder::default();
            let mut stderr_tail = String::new();
            while let Some(item) = output.next().await {
                match item {
                    Ok(Chunk::Stdout(message)) => match decoder.push(&message) {
                        Ok(frames) => {
                            for f in frames {
                                if tx.send(Ok(f)).await.is_err() {
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
        let mut launcher = Self {
            input,
            frames: rx,
            reader,
            nonce: Bytes::new(),
        };
        match tokio::time::timeout(READY_TIMEOUT, launcher.frames.recv()).await {
            Ok(Some(Ok((_, Frame::Ready)))) => Ok(launcher),
            Ok(Some(Ok((_, other)))) => Err(LaunchError::Unavailable(format!(
                "launcher sent {other:?} before it was ready"
            ))),
            Ok(Some(Err(why))) => Err(LaunchError::Unavailable(why)),
            Ok(None) => Err(LaunchError::Unavailable("the launcher exited".into())),
            Err(_) => Err(LaunchError::Unavailable(
                "the launcher did not start within 10 s".into(),
            )),
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
        self.send(&command).await
    }

    /// The next frame; `Err` once the launcher is gone (with what it last said), or when an output
    /// or exit frame does not carry the running block's nonce (see [`FORGED`]).
    pub async fn next(&mut self) -> Result<Frame, String> {
        match self.frames.recv().await {
            Some(Ok((nonce, frame))) => match frame {
                Frame::Stdout(_) | Frame::Stderr(_) | Frame::Exit(_) => {
                    if self.nonce.is_empty() || nonce != self.nonce {
                        Err(FORGED.into())
                    } else {
                        Ok(frame)
                    }
                }
                Frame::Ready | Frame::Pong => Ok(frame),
            },
            Some(Err(why)) => Err(why),
            None => Err("the launcher exited".into()),
        }
    }

    /// Whether the launcher's stream already ended (it died while idle).
    pub fn is_finished(&self) -> bool {
        self.reader.is_finished() && self.frames.is_empty()
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

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let nonce: &[u8] = if matches!(kind, b'1' | b'2' | b'X') {
            N
        } else {
            b""
        };
        let mut v = vec![kind];
        v.extend_from_slice(&((nonce.len() + payload.len()) as u32).to_be_bytes());
        v.extend_from_slice(nonce);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn frames_split_anywhere_decode_in_order() {
        let mut bytes = frame(b'R', b"{}");
        bytes.extend(frame(b'1', b"out"));
        bytes.extend(frame(b'2', b"err"));
        bytes.extend(frame(b'X', br#"{"code":3,"total":6,"kept":6}"#));
        let mut d = FrameDecoder::default();
        let mut frames = Vec::new();
        for chunk in bytes.chunks(3) {
            frames.extend(d.push(chunk).unwrap());
        }
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[0].0, Bytes::new());
        assert_eq!(frames[1].0, Bytes::from_static(N));
        assert_eq!(frames[1].1, Frame::Stdout(Bytes::from_static(b"out")));
        assert_eq!(frames[2].1, Frame::Stderr(Bytes::from_static(b"err")));
        let Frame::Exit(x) = &frames[3].1 else {
            panic!("{frames:?}")
        };
        assert_eq!((x.code, x.total), (3, 6));
    }

    #[test]
    fn garbage_is_reported_not_buffered_forever() {
        let mut d = FrameDecoder::default();
        assert!(d.push(b"Zxxxxxxx").is_err());
        let mut d = FrameDecoder::default();
        assert!(d.push(&[b'1', 0xff, 0xff, 0xff, 0xff]).is_err());
        // An output frame too short to hold a nonce is refused.
        let mut d = FrameDecoder::default();
        assert!(d.push(&[b'1', 0, 0, 0, 2, b'h', b'i']).is_err());
    }

    #[test]
    fn nonces_are_fresh_hex() {
        let (a, b) = (new_nonce(), new_nonce());
        assert_ne!(a, b);
        assert_eq!(a.len(), NONCE_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
