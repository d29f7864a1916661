//! Why the daemon could not start (or a disk could not be attached).

use std::path::PathBuf;

/// A startup or attach failure, with the message the operator sees.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The NBD export of an attached disk could not start.
    #[error("{0}")]
    Export(String),
    /// The configuration could not be read or does not define the resource for this node.
    #[error("{0}")]
    Config(String),
    /// Another daemon runs for this resource.
    #[error("resource {resource} is already up (urbd pid {pid} holds {})", lock.display())]
    AlreadyUp {
        /// The resource.
        resource: String,
        /// The other daemon, as its pid file says ("unknown" if unreadable).
        pid: String,
        /// The lock file.
        lock: PathBuf,
    },
    /// No valid metadata: create-md was not run (or the meta-disk is wrong).
    #[error(
        "{label}: no valid urbd/DRBD metadata on {} ({detail}); run `urbdadm create-md {resource}` first",
        meta.display()
    )]
    NoMetadata {
        /// `RES/VOL`.
        label: String,
        /// The resource.
        resource: String,
        /// The meta-disk.
        meta: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// Data disk and metadata disagree on the size.
    #[error("{label}: {detail}; nothing was attached")]
    SizeMismatch {
        /// `RES/VOL`.
        label: String,
        /// Which sizes.
        detail: String,
    },
    /// Anything that failed on a file or device.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A metadata read or write failed.
    #[error("{label}: {source}")]
    Meta {
        /// `RES/VOL`.
        label: String,
        /// The error.
        source: crate::meta::MetaError,
    },
}

impl DaemonError {
    /// An I/O error with context.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        DaemonError::Io {
            what: what.into(),
            source,
        }
    }
}
