//! Messages and framing. A message is one line of JSON; a reader stops at
//! [`MAX_MESSAGE_BYTES`] so a misbehaving peer cannot make it allocate more.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::core::Refusal;
use crate::status::ResourceStatus;

use super::error::ControlError;

/// Version of this protocol; both sides refuse another.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest message, newline included. A status of a resource with the 32 volumes a
/// resource may have is about 32 KiB.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// A request for the daemon. `volume: None` means every volume of the resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// The resource's state.
    Status,
    /// `primary [--force]`.
    Primary {
        /// Volume number.
        volume: Option<u32>,
        /// `--force`.
        force: bool,
    },
    /// `secondary`.
    Secondary {
        /// Volume number.
        volume: Option<u32>,
    },
    /// `attach`: read the metadata again and attach the backing disk.
    Attach {
        /// Volume number.
        volume: Option<u32>,
    },
    /// `detach`.
    Detach {
        /// Volume number.
        volume: Option<u32>,
    },
    /// `down`: demote, detach every volume, stop the daemon.
    Down,
    /// `connect [--discard-my-data]`.
    Connect {
        /// One-shot: this node's data is the split-brain victim.
        #[serde(default)]
        discard_my_data: bool,
    },
    /// `disconnect`: StandAlone.
    Disconnect,
    /// `verify`, `invalidate`, `invalidate-remote`, `pause-sync`, `resume-sync`.
    Sync {
        /// Which.
        which: crate::core::SyncCmd,
        /// Volume number.
        volume: Option<u32>,
    },
    /// `outdate`: mark the disk Outdated.
    Outdate {
        /// Volume number.
        volume: Option<u32>,
    },
    /// `resume-io`: resume I/O frozen by fencing.
    ResumeIo {
        /// Volume number.
        volume: Option<u32>,
    },
    /// `inject-fault` (a testing aid): make the data disk fail as `plan` says. Refused
    /// unless the daemon runs with `URBD_FAULT_INJECTION=1`.
    InjectFault {
        /// Volume number.
        volume: Option<u32>,
        /// What to fail from now on (replaces the previous plan; empty: heal).
        plan: crate::io::FaultPlan,
    },
    /// `role`: `Primary/Unknown` per volume.
    Role {
        /// Volume number.
        volume: Option<u32>,
    },
    /// `cstate`: `StandAlone` per volume.
    Cstate {
        /// Volume number.
        volume: Option<u32>,
    },
    /// `dstate`: `UpToDate/DUnknown` per volume.
    Dstate {
        /// Volume number.
        volume: Option<u32>,
    },
}

/// A request with the protocol version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`PROTOCOL_VERSION`].
    pub v: u32,
    /// The request.
    pub request: Request,
}

/// Kinds of failure other than a refused state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailKind {
    /// The request could not be parsed or has the wrong version.
    BadRequest,
    /// The resource has no such volume.
    NoSuchVolume,
    /// Reading or writing a disk failed; the message says what.
    Io,
    /// The disk or its metadata does not fit (create-md not run, sizes disagree).
    Config,
    /// The client may not drive this resource (not root, not in its `control-group`).
    Denied,
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    /// Done (or nothing to do). Everything it changed is on disk.
    Ok {
        /// The resource's state afterwards.
        status: ResourceStatus,
        /// Text lines for `role`, `cstate`, `dstate`.
        #[serde(default)]
        lines: Vec<String>,
    },
    /// A state change DRBD would refuse; nothing changed.
    Refused {
        /// The volume's minor.
        minor: u32,
        /// Why.
        refusal: Refusal,
    },
    /// Anything else that failed.
    Failed {
        /// What kind of failure.
        kind: FailKind,
        /// For the operator.
        message: String,
    },
}

/// Writes `msg` as one line and flushes.
pub fn write_message<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), ControlError> {
    let mut line = serde_json::to_vec(msg).map_err(|e| ControlError::Malformed(e.to_string()))?;
    if line.len() >= MAX_MESSAGE_BYTES {
        return Err(ControlError::TooLong {
            max: MAX_MESSAGE_BYTES,
        });
    }
    line.push(b'\n');
    w.write_all(&line)
        .and_then(|()| w.flush())
        .map_err(|source| ControlError::Io {
            socket: Default::default(),
            source,
        })
}

/// Reads one line (at most [`MAX_MESSAGE_BYTES`]) and decodes it.
pub fn read_message<T: for<'de> Deserialize<'de>, R: BufRead>(
    r: &mut R,
) -> Result<T, ControlError> {
    let mut buf = Vec::new();
    let mut limited = std::io::Read::take(&mut *r, MAX_MESSAGE_BYTES as u64);
    limited
        .read_until(b'\n', &mut buf)
        .map_err(|source| ControlError::Io {
            socket: Default::default(),
            source,
        })?;
    if buf.last() != Some(&b'\n') {
        return Err(if buf.len() >= MAX_MESSAGE_BYTES {
            ControlError::TooLong {
                max: MAX_MESSAGE_BYTES,
            }
        } else {
            ControlError::Truncated
        });
    }
    serde_json::from_slice(&buf).map_err(|e| ControlError::Malformed(e.to_string()))
}

/// Decodes a request envelope and checks its version.
pub fn read_request(r: &mut impl BufRead) -> Result<Request, ControlError> {
    let env: Envelope = read_message(r)?;
    if env.v != PROTOCOL_VERSION {
        return Err(ControlError::Version {
            theirs: env.v,
            ours: PROTOCOL_VERSION,
        });
    }
    Ok(env.request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wire_form() {
        let env = Envelope {
            v: PROTOCOL_VERSION,
            request: Request::Primary {
                volume: Some(0),
                force: true,
            },
        };
        let mut buf = Vec::new();
        write_message(&mut buf, &env).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&buf),
            "{\"v\":1,\"request\":{\"cmd\":\"primary\",\"volume\":0,\"force\":true}}\n"
        );
        assert_eq!(read_request(&mut &buf[..]).unwrap(), env.request);
        let refused = Response::Refused {
            minor: 0,
            refusal: Refusal::NoUpToDateDisk,
        };
        let mut buf = Vec::new();
        write_message(&mut buf, &refused).unwrap();
        assert_eq!(read_message::<Response, _>(&mut &buf[..]).unwrap(), refused);
    }

    #[test]
    fn rejects_oversize_truncated_garbage_and_versions() {
        let big = vec![b'x'; MAX_MESSAGE_BYTES + 10];
        assert!(matches!(
            read_message::<Response, _>(&mut &big[..]),
            Err(ControlError::TooLong { .. })
        ));
        assert!(matches!(
            read_message::<Response, _>(&mut &b"{\"result\":"[..]),
            Err(ControlError::Truncated)
        ));
        assert!(matches!(
            read_message::<Response, _>(&mut &b"nonsense\n"[..]),
            Err(ControlError::Malformed(_))
        ));
        assert!(matches!(
            read_request(&mut &b"{\"v\":9,\"request\":{\"cmd\":\"status\"}}\n"[..]),
            Err(ControlError::Version { theirs: 9, .. })
        ));
        assert!(matches!(
            read_request(&mut &b"{\"v\":1,\"request\":{\"cmd\":\"format-disk\"}}\n"[..]),
            Err(ControlError::Malformed(_))
        ));
    }
}
