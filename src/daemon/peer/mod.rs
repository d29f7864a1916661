//! The peer transport: the two TCP sockets of a link to the peer node and blocking frame
//! I/O on them (docs/PROTOCOL.md §1 and §2).
//!
//! - `link`: [`Listener`] (bound once at `up`), [`establish`] (one connection attempt,
//!   DRBD's `drbd_connect`: dial and accept until a data and a meta socket exist), [`Link`].
//! - `framed`: [`FrameReader`] and [`write_frame`] over the wire codec.
//! - `sock`: the socket calls std lacks (source-bound, stoppable dial; poll; keep-alive).
//! - `tls`: [`PeerTls`], the TLS handshake of each socket when `tls-*` is configured;
//!   `stream`: [`PeerStream`], a socket in clear or inside TLS, as the session uses it.
//!
//! What the sockets carry after the initial frames (HELLO, authentication, the setup
//! sequence) is decided by `core::conn`; this module only moves frames.

mod framed;
mod link;
mod sock;
mod stream;
mod tls;

pub use crate::daemon::tls::{TlsConfigError, load_certs, load_key, load_roots};
pub use framed::{FrameError, FrameReader, write_frame};
pub use link::{Link, LinkConfig, LinkError, Listener, PeerLink, SETTLE, establish};
pub use stream::{PeerStream, TlsStream};
pub use tls::PeerTls;
