//! The client side: connect to a resource's daemon, send one request, read the answer.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::error::ControlError;
use super::paths::RunDir;
use super::protocol::{Envelope, PROTOCOL_VERSION, Request, Response, read_message, write_message};

/// How long a request may take. State changes include a synced superblock write; `down`
/// also closes the disks.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to one resource's daemon.
#[derive(Debug)]
pub struct Client {
    resource: String,
    stream: UnixStream,
    socket: std::path::PathBuf,
}

impl Client {
    /// Connects; a missing socket or one nobody listens on means the resource is not up.
    pub fn connect(run_dir: &RunDir, resource: &str) -> Result<Self, ControlError> {
        let socket = run_dir.socket(resource);
        match UnixStream::connect(&socket) {
            Ok(stream) => {
                let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
                let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
                Ok(Self {
                    resource: resource.to_owned(),
                    stream,
                    socket,
                })
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                Err(ControlError::NotUp {
                    resource: resource.to_owned(),
                    socket,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                Err(ControlError::Denied {
                    resource: resource.to_owned(),
                    socket,
                })
            }
            Err(source) => Err(ControlError::Io { socket, source }),
        }
    }

    /// Sends `request` and waits for the answer.
    pub fn call(mut self, request: Request) -> Result<Response, ControlError> {
        let env = Envelope {
            v: PROTOCOL_VERSION,
            request,
        };
        let socket = self.socket.clone();
        let with_socket = |e: ControlError| match e {
            ControlError::Io { source, .. } => ControlError::Io {
                socket: socket.clone(),
                source,
            },
            other => other,
        };
        write_message(&mut self.stream, &env).map_err(with_socket)?;
        let mut reader = BufReader::new(&self.stream);
        match read_message(&mut reader) {
            // The daemon went away mid-request (e.g. killed): treat as not up.
            Err(ControlError::Truncated) => Err(ControlError::NotUp {
                resource: self.resource,
                socket: self.socket,
            }),
            other => other.map_err(with_socket),
        }
    }
}

/// Connects to `resource`'s daemon and sends one request.
pub fn call(run_dir: &RunDir, resource: &str, request: Request) -> Result<Response, ControlError> {
    Client::connect(run_dir, resource)?.call(request)
}
