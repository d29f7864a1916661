//! The run directory (`/run/urbd`, or `URBD_RUN_DIR`) and the files a daemon keeps there.

use std::path::{Path, PathBuf};

/// Default run directory.
pub const DEFAULT_RUN_DIR: &str = "/run/urbd";
/// Environment variable that overrides it.
pub const RUN_DIR_ENV: &str = "URBD_RUN_DIR";

/// A run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir(pub PathBuf);

impl RunDir {
    /// `URBD_RUN_DIR` if set and not empty, else `/run/urbd`.
    pub fn from_env() -> Self {
        match std::env::var_os(RUN_DIR_ENV) {
            Some(d) if !d.is_empty() => RunDir(PathBuf::from(d)),
            _ => RunDir(PathBuf::from(DEFAULT_RUN_DIR)),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The control socket of `resource`.
    pub fn socket(&self, resource: &str) -> PathBuf {
        self.0.join(format!("{resource}.ctl"))
    }

    /// The lock file held (flock) by the daemon of `resource` while it runs.
    pub fn lock(&self, resource: &str) -> PathBuf {
        self.0.join(format!("{resource}.lock"))
    }

    /// The daemon's pid file.
    pub fn pid(&self, resource: &str) -> PathBuf {
        self.0.join(format!("{resource}.pid"))
    }

    /// The daemon's log (stdout and stderr when daemonised).
    pub fn log(&self, resource: &str) -> PathBuf {
        self.0.join(format!("{resource}.log"))
    }

    /// The daemon's last reported status, JSON (input of `proc_drbd`).
    pub fn state(&self, resource: &str) -> PathBuf {
        self.0.join(format!("{resource}.state.json"))
    }

    /// The /proc/drbd look-alike for every resource up in this run directory.
    pub fn proc_drbd(&self) -> PathBuf {
        self.0.join("proc_drbd")
    }

    /// Names of the resources with a control socket here, sorted.
    pub fn resources_with_sockets(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(&self.0)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".ctl").map(str::to_owned)
            })
            .collect();
        out.sort();
        out
    }
}

/// Default state directory: what the daemon keeps across restarts besides the metadata
/// (split-brain saves, one folder per resource).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/urbd";
/// Environment variable that overrides it.
pub const STATE_DIR_ENV: &str = "URBD_STATE_DIR";

/// The state directory (`/var/lib/urbd`, or `URBD_STATE_DIR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir(pub PathBuf);

impl StateDir {
    /// `URBD_STATE_DIR` if set and not empty, else `/var/lib/urbd`.
    pub fn from_env() -> Self {
        match std::env::var_os(STATE_DIR_ENV) {
            Some(d) if !d.is_empty() => StateDir(PathBuf::from(d)),
            _ => StateDir(PathBuf::from(DEFAULT_STATE_DIR)),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The folder of `resource` (its split-brain saves).
    pub fn resource(&self, resource: &str) -> PathBuf {
        self.0.join(resource)
    }
}
