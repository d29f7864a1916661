//! Errors of the control protocol, on either side.

use std::path::PathBuf;

/// Why a control request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No daemon answers on the socket: the resource is not up.
    #[error("resource {resource} is not up (no urbd daemon answers on {})", socket.display())]
    NotUp {
        /// The resource.
        resource: String,
        /// The socket tried.
        socket: PathBuf,
    },
    /// The socket's mode keeps this user out.
    #[error("permission denied on {}: only root, or a member of the control-group set in urbd-options {resource}, may drive resource {resource}", socket.display())]
    Denied {
        /// The resource.
        resource: String,
        /// The socket tried.
        socket: PathBuf,
    },
    /// A message was longer than [`super::MAX_MESSAGE_BYTES`].
    #[error("control message longer than {max} bytes")]
    TooLong {
        /// The cap.
        max: usize,
    },
    /// The connection closed before a whole message arrived.
    #[error("the control connection closed before a whole message arrived")]
    Truncated,
    /// Not a message of this protocol.
    #[error("malformed control message: {0}")]
    Malformed(String),
    /// The other side speaks another protocol version.
    #[error("control protocol version {theirs} is not supported (this is version {ours})")]
    Version {
        /// Their version.
        theirs: u32,
        /// Ours.
        ours: u32,
    },
    /// Any other I/O error on the socket.
    #[error("control socket {}: {source}", socket.display())]
    Io {
        /// The socket.
        socket: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}
