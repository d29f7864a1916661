//! The `urbdadm` <-> `urbd` control protocol: one request and one response per
//! connection on the unix socket `<run dir>/<resource>.ctl`, each a single line of JSON
//! (at most [`MAX_MESSAGE_BYTES`]), tagged with [`PROTOCOL_VERSION`].
//!
//! Files: `paths` (run directory and file names), `protocol` (messages and framing),
//! `client` (what urbdadm calls), `error`.

pub mod client;
pub mod error;
pub mod paths;
pub mod protocol;

pub use client::{Client, call};
pub use error::ControlError;
pub use paths::{RunDir, StateDir};
pub use protocol::{
    Envelope, FailKind, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, Request, Response, read_message,
    write_message,
};
