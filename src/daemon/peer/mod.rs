//! The peer transport: the two TCP sockets of a link to the peer node and blocking frame
//! I/O on them (docs/PROTOCOL.md §1 and §2).
//!
//! - `link`: [`Listener`] (bound once at `up`), [`establish`] (one connection attempt,
//!   DRBD's `drbd_connect`: dial and accept until a data and a meta socket exist), [`Link`].
//! - `framed`: [`FrameReader`] and [`write_frame`] over the wire codec.
//! - `sock`: the socket calls std lacks (source-bound, stoppable dial; poll; keep-alive).
//!
//! What the sockets carry after the initial frames (HELLO, authentication, the setup
//! sequence) is decided by `core::conn`; this module only moves frames.

mod framed;
mod link;
mod sock;

pub use framed::{FrameError, FrameReader, write_frame};
pub use link::{Link, LinkConfig, LinkError, Listener, SETTLE, establish};
pub(crate) use sock::is_open;
