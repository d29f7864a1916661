//! The daemon's files in the run directory: the lock that makes it the only daemon of its
//! resource, the pid file, its status as JSON, and the shared `proc_drbd`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::FlockOperation;

use crate::control::RunDir;
use crate::status::{ResourceStatus, proc};

use super::error::DaemonError;

/// The held lock of one resource. Dropping it releases the lock.
#[derive(Debug)]
pub struct ResourceLock {
    file: File,
    path: std::path::PathBuf,
}

impl ResourceLock {
    /// Takes `<run dir>/<resource>.lock` (flock, non-blocking). The kernel releases it when
    /// the daemon dies, so a lock file left by `kill -9` does not block the next start.
    pub fn acquire(run_dir: &RunDir, resource: &str) -> Result<Self, DaemonError> {
        let path = run_dir.lock(resource);
        // A daemon that stops unlinks the lock file before it releases it; if we locked a
        // file that was unlinked meanwhile, try again with the new one.
        for _ in 0..10 {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| DaemonError::io(format!("opening {}", path.display()), e))?;
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    let pid = fs::read_to_string(run_dir.pid(resource))
                        .map(|s| s.trim().to_owned())
                        .unwrap_or_else(|_| "unknown".into());
                    return Err(DaemonError::AlreadyUp {
                        resource: resource.to_owned(),
                        pid,
                        lock: path,
                    });
                }
                Err(e) => {
                    return Err(DaemonError::io(
                        format!("locking {}", path.display()),
                        e.into(),
                    ));
                }
            }
            let same = match (fs::metadata(&path), file.metadata()) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if same {
                return Ok(Self { file, path });
            }
        }
        Err(DaemonError::io(
            format!("locking {}", path.display()),
            std::io::Error::other("the lock file keeps being replaced"),
        ))
    }

    /// Unlinks the lock file, then releases the lock.
    pub fn release(self) {
        let _ = fs::remove_file(&self.path);
        drop(self.file);
    }
}

/// Writes `contents` to `path` atomically (temporary file in the same directory, then
/// rename).
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Like [`write_atomic`] without the fsync: for the status files (`*.state.json`,
/// `proc_drbd`), which readers must never see half-written but which need not survive a
/// crash; the daemon rewrites them on every state change, and an fsync each time made a
/// busy event loop fall behind (a stream of out-of-sync counts under write load).
pub fn write_replace(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(contents)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Is process `pid` alive?
fn alive(pid: u32) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
}

/// The statuses last published by the daemons in `run_dir` that are still running.
pub fn live_statuses(run_dir: &RunDir) -> Vec<ResourceStatus> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(run_dir.path()) else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.ends_with(".state.json") {
            continue;
        }
        // Cap what we read: a status is a few KiB.
        let Ok(bytes) = fs::read(entry.path()) else {
            continue;
        };
        if bytes.len() > crate::control::MAX_MESSAGE_BYTES {
            continue;
        }
        if let Ok(status) = serde_json::from_slice::<ResourceStatus>(&bytes) {
            if alive(status.pid) {
                out.push(status);
            }
        }
    }
    out
}

/// Publishes `status` (this daemon's) and rewrites `proc_drbd` from every live daemon's
/// last status. Daemons of other resources do the same; the periodic refresh settles any
/// race between two of them.
pub fn publish(run_dir: &RunDir, status: &ResourceStatus) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    write_replace(&run_dir.state(&status.resource), &json)?;
    rewrite_proc(run_dir)
}

/// Rewrites `proc_drbd` from the live daemons' statuses.
pub fn rewrite_proc(run_dir: &RunDir) -> std::io::Result<()> {
    let statuses = live_statuses(run_dir);
    write_replace(&run_dir.proc_drbd(), proc::render(&statuses).as_bytes())
}

/// Removes what the daemon of `resource` keeps in the run directory (not the lock: see
/// [`ResourceLock::release`]), and rewrites `proc_drbd` without it.
pub fn remove_all(run_dir: &RunDir, resource: &str) {
    for path in [
        run_dir.state(resource),
        run_dir.socket(resource),
        run_dir.pid(resource),
    ] {
        if let Err(e) = fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove");
            }
        }
    }
    if let Err(e) = rewrite_proc(run_dir) {
        tracing::warn!(error = %e, "cannot rewrite proc_drbd");
    }
}
