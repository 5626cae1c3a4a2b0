//! One proctor per session: an exclusive lock on `session.lock` beside the log, with the holder's
//! pid written in it so a second proctor can say who has the session.
//!
//! The lock is std's `File::try_lock` (flock on Unix): it belongs to the open file, so it is
//! released when the holder exits, crashes or is killed, and a stale pid in the file means nothing.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::StoreError;

/// File name of the lock, inside the session directory.
pub const LOCK_FILE: &str = "session.lock";

/// Attempts before a held lock is reported: a `sessions list` probing the lock holds it for an
/// instant, which must not make an opening proctor fail.
const ATTEMPTS: u32 = 4;
const RETRY_PAUSE: Duration = Duration::from_millis(25);

/// An exclusive hold on a session; released when dropped.
#[derive(Debug)]
pub struct SessionLock {
    // Held for its lock; closing the file releases it.
    _file: File,
    path: PathBuf,
}

/// What a look at a session's lock found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    /// No proctor has the session open.
    Free,
    /// A live process has it open; its pid when the lock file names one.
    Held(Option<u32>),
}

impl SessionLock {
    /// Takes the lock of the session in `dir`, or says which process holds it.
    pub fn acquire(dir: &Path, id: &str) -> Result<Self, StoreError> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::Read(format!("cannot open {}: {e}", path.display())))?;
        let mut attempt = 0;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if attempt + 1 < ATTEMPTS => {
                    attempt += 1;
                    std::thread::sleep(RETRY_PAUSE);
                }
                Err(TryLockError::WouldBlock) => {
                    let holder = match read_pid(&mut file) {
                        Some(pid) => format!("process {pid}"),
                        None => "another process".to_string(),
                    };
                    return Err(StoreError::Locked(format!(
                        "session {id} is open in another proctor ({holder} holds {}); close it there first",
                        path.display()
                    )));
                }
                Err(TryLockError::Error(e)) => {
                    return Err(StoreError::Read(format!(
                        "cannot lock {}: {e}",
                        path.display()
                    )));
                }
            }
        }
        // Best effort: the pid only makes the message of a second proctor clearer.
        let pid = format!("{}\n", std::process::id());
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(pid.as_bytes()));
        if let Err(e) = written {
            tracing::warn!("cannot write pid to {}: {e}", path.display());
        }
        Ok(SessionLock { _file: file, path })
    }

    /// Path of the lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Looks at the lock of the session in `dir` without taking it for longer than an instant.
    pub fn probe(dir: &Path) -> LockState {
        let Ok(mut file) = File::open(dir.join(LOCK_FILE)) else {
            return LockState::Free;
        };
        match file.try_lock_shared() {
            Ok(()) => LockState::Free,
            Err(TryLockError::WouldBlock) => LockState::Held(read_pid(&mut file)),
            // A filesystem without locks cannot tell; say free rather than claim a live holder.
            Err(TryLockError::Error(_)) => LockState::Free,
        }
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(64).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}
