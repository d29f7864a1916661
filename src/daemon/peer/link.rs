//! Establishing the two TCP connections of a peer link, as DRBD's `drbd_connect` does
//! (docs/PROTOCOL.md §1).
//!
//! Both nodes listen on their own `address` and dial the peer's. The first connection a
//! node dials becomes its **data** socket and carries `INITIAL_DATA` as its first frame;
//! the next one becomes its **meta** socket (`INITIAL_META`). An accepted connection is
//! identified by its first frame. If a node receives `INITIAL_DATA` (or `INITIAL_META`)
//! while it already has a data (meta) socket, both nodes dialed at the same moment: it drops
//! both sockets of that kind (DRBD's "initial packet S crossed") and dials again after a
//! random delay, so the next try is unlikely to cross. The peer sees the same cross, or
//! sees the sockets close, and does the same.
//!
//! What this adds to DRBD's loop, to make it converge quickly and rarely hand out a socket
//! the peer is about to drop:
//! - The node that *dialed* the data socket waits (up to `connect-int`) for the peer to
//!   dial the meta socket; the node that *accepted* the data socket dials meta at once. In
//!   the usual case exactly one node dials each socket, and nothing crosses.
//! - An accepted connection whose first frame is followed by end-of-file is a leftover of a
//!   crossed try; it is dropped without counting as a cross.
//! - Once both sockets exist, the node waits [`SETTLE`] (DRBD waits `sock-check-timeo`,
//!   or else `ping-timeout`: 500 ms by default),
//!   handling connections that are still queued, and returns only if both sockets are still
//!   open and nothing from the peer is pending.
//!
//! Sockets can still die after [`establish`] returns (the peer may be killed, or a cross
//! may complete later on a slow network): the handshake that follows treats a failed read
//! or write as a lost transport and calls [`establish`] again, as DRBD does.
//!
//! Connections from any IP but the peer's are refused and logged; a connection from the
//! peer's IP that sends anything but an initial frame, or nothing within
//! [`LinkConfig::timeout`], is closed and logged, and the attempt goes on.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::wire::{Frame, FrameHeader, HEADER_LEN, Packet, PacketType};

use super::sock;
use super::stream::PeerStream;
use super::tls::PeerTls;

/// How long a node that holds both sockets waits before it returns them, so that a cross
/// the peer is still detecting shows up first (DRBD's `connection_established` waits
/// `sock-check-timeo`, or else `ping-timeout`: 500 ms by default). A tenth of that is
/// enough here: with the dial rules above exactly one node dials each socket in the usual
/// case, and a cross found after the wait costs a failed handshake and a new attempt, not
/// data.
pub const SETTLE: Duration = Duration::from_millis(50);

/// The longest the loop sleeps without looking at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// Accepted connections waiting for their first frame, at most. More are refused (a flood
/// from the peer's address must not grow memory or file descriptors without bound).
const MAX_PENDING: usize = 16;

/// Connections taken off the listener per turn of the loop.
const MAX_ACCEPTS_PER_TURN: usize = 16;

/// Bounds of the random delay after a cross.
const MIN_BACKOFF_WINDOW: Duration = Duration::from_millis(100);
const MAX_BACKOFF_WINDOW: Duration = Duration::from_secs(1);

/// Where and how to reach the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    /// This node's `address`: the listener's, and the source of outgoing connections.
    pub local: SocketAddr,
    /// The peer's `address`. Only connections from its IP are accepted.
    pub peer: SocketAddr,
    /// The peer's host name, for messages.
    pub peer_name: String,
    /// `connect-int`: the pause between failed dials, and how long the node that dialed
    /// the data socket waits for the peer to dial the meta socket.
    pub connect_int: Duration,
    /// How long one step may take: a dial, and an accepted connection's first frame.
    pub timeout: Duration,
}

/// The two sockets of an established link. Both are blocking, with `TCP_NODELAY` and
/// `SO_KEEPALIVE` set and no read or write timeout.
#[derive(Debug)]
pub struct Link {
    /// The data socket (handshake, writes, resync, bitmaps, state changes).
    pub data: TcpStream,
    /// The meta socket (acks and pings).
    pub meta: TcpStream,
    /// This node accepted the meta socket: it holds DRBD's `RESOLVE_CONFLICTS` and breaks
    /// ties. Exactly one of the two nodes of a link says so.
    pub accepted: bool,
    /// This node dialed the data socket (it is the TLS client on it; the meta socket's
    /// client is the node that did not accept it).
    pub data_dialed: bool,
    /// The peer's configured address ([`LinkConfig::peer`]).
    pub peer_addr: SocketAddr,
}

/// The two sockets of a link ready for the session: in clear, or each inside its own TLS
/// connection ([`Link::secure`]).
#[derive(Debug)]
pub struct PeerLink {
    /// The data socket.
    pub data: PeerStream,
    /// The meta socket.
    pub meta: PeerStream,
    /// As [`Link::accepted`].
    pub accepted: bool,
}

impl Link {
    /// The link as the session uses it: without `tls`, the sockets as they are; with it,
    /// each socket after a TLS handshake (data first, then meta: both nodes take them in
    /// that order), each bounded by `timeout`. On an error both sockets are shut down;
    /// the error names the socket.
    pub fn secure(self, tls: Option<&PeerTls>, timeout: Duration) -> Result<PeerLink, io::Error> {
        let Some(tls) = tls else {
            return Ok(PeerLink {
                data: PeerStream::Plain(self.data),
                meta: PeerStream::Plain(self.meta),
                accepted: self.accepted,
            });
        };
        let meta_clone = self.meta.try_clone();
        let data = tls
            .secure(self.data, self.data_dialed, timeout)
            .map_err(|e| {
                if let Ok(m) = &meta_clone {
                    let _ = m.shutdown(std::net::Shutdown::Both);
                }
                io::Error::new(e.kind(), format!("TLS on the data socket: {e}"))
            })?;
        let meta = tls
            .secure(self.meta, !self.accepted, timeout)
            .map_err(|e| {
                let _ = data.shutdown(std::net::Shutdown::Both);
                io::Error::new(e.kind(), format!("TLS on the meta socket: {e}"))
            })?;
        Ok(PeerLink {
            data,
            meta,
            accepted: self.accepted,
        })
    }
}

/// Why [`establish`] gave up. Failed dials and bad incoming connections are not errors
/// (they are logged and retried); these are the failures retrying cannot fix.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The configuration cannot work (for example the two addresses are of different
    /// families, or equal).
    #[error("peer {peer} at {addr}: {reason}")]
    Config {
        /// The peer's name.
        peer: String,
        /// The peer's address.
        addr: SocketAddr,
        /// What is wrong.
        reason: &'static str,
    },
    /// The listening socket failed.
    #[error("peer {peer} at {addr}: accepting connections on {local}: {source}")]
    Listener {
        /// The peer's name.
        peer: String,
        /// The peer's address.
        addr: SocketAddr,
        /// The listener's address.
        local: SocketAddr,
        /// The error.
        source: io::Error,
    },
    /// Waiting for the sockets failed.
    #[error("peer {peer} at {addr}: waiting for connections: {source}")]
    Poll {
        /// The peer's name.
        peer: String,
        /// The peer's address.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
    },
}

/// The listening socket of a resource: bound once at `up` and kept across connection
/// attempts, so that the peer's dials are queued even between attempts.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    local: SocketAddr,
}

impl Listener {
    /// Binds `local` (std sets `SO_REUSEADDR`, so a restart does not wait for TIME_WAIT).
    /// Port 0 picks a free port; [`Listener::local_addr`] tells which.
    pub fn bind(local: SocketAddr) -> io::Result<Listener> {
        let inner = TcpListener::bind(local)?;
        inner.set_nonblocking(true)?;
        let local = inner.local_addr()?;
        Ok(Listener { inner, local })
    }

    /// The bound address, with the actual port.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// Runs one connection attempt: accepts on `listener` and dials `cfg.peer` until both
/// sockets of one link exist, or `stop` is set.
///
/// Returns `Ok(None)` within about 100 ms of `stop` being set. `rng` gives the random
/// delays that break ties after a cross (pass a seeded generator in tests). Errors are
/// only the ones retrying cannot fix ([`LinkError`]); dial failures are retried every
/// `connect_int`, bad incoming connections are logged and closed.
pub fn establish(
    listener: &Listener,
    cfg: &LinkConfig,
    stop: &AtomicBool,
    rng: &mut impl FnMut() -> u64,
) -> Result<Option<Link>, LinkError> {
    check_config(listener, cfg)?;
    let mut attempt = Attempt::new(listener, cfg, rng);
    loop {
        if stop.load(Ordering::Acquire) {
            tracing::debug!(peer = %cfg.peer_name, "connection attempt stopped");
            return Ok(None);
        }
        let now = Instant::now();
        attempt.accept_new(now)?;
        attempt.advance_pending(now);
        attempt.drop_closed();
        if let Some(link) = attempt.try_finish(now) {
            return Ok(Some(link));
        }
        if attempt.next_dial_at().is_some_and(|at| now >= at) {
            attempt.dial(stop);
            continue;
        }
        attempt.wait(now)?;
    }
}

fn check_config(listener: &Listener, cfg: &LinkConfig) -> Result<(), LinkError> {
    let err = |reason| LinkError::Config {
        peer: cfg.peer_name.clone(),
        addr: cfg.peer,
        reason,
    };
    if cfg.local.is_ipv4() != cfg.peer.is_ipv4() {
        return Err(err(
            "the local and the peer's address are of different families",
        ));
    }
    if cfg.peer == cfg.local || cfg.peer == listener.local_addr() {
        return Err(err("the peer's address is this node's own"));
    }
    if cfg.peer.port() == 0 || cfg.peer.ip().is_unspecified() {
        return Err(err("the peer's address has no port or no IP"));
    }
    Ok(())
}

/// Which socket of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Data,
    Meta,
}

impl Kind {
    fn initial(self) -> Packet<'static> {
        match self {
            Kind::Data => Packet::InitialData,
            Kind::Meta => Packet::InitialMeta,
        }
    }

    /// DRBD's letter in "initial packet S crossed": S for the data socket, M for meta.
    fn letter(self) -> char {
        match self {
            Kind::Data => 'S',
            Kind::Meta => 'M',
        }
    }
}

/// One socket of the link and who opened it.
#[derive(Debug)]
struct Slot {
    stream: TcpStream,
    dialed: bool,
}

/// An accepted connection whose first frame has not arrived in full yet.
#[derive(Debug)]
struct Pending {
    stream: TcpStream,
    from: SocketAddr,
    head: [u8; HEADER_LEN],
    got: usize,
    deadline: Instant,
}

/// What reading a pending connection gave.
enum HeadProgress {
    /// Not all of the header yet.
    More,
    /// The whole header.
    Done,
    /// End of file after this many bytes.
    Eof(usize),
    /// A read error.
    Failed(io::Error),
}

impl Pending {
    /// Reads what is there of the header, never past it: what follows belongs to the
    /// handshake.
    fn read_head(&mut self) -> HeadProgress {
        while self.got < HEADER_LEN {
            match self.stream.read(&mut self.head[self.got..]) {
                Ok(0) => return HeadProgress::Eof(self.got),
                Ok(n) => self.got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return HeadProgress::More,
                Err(e) => return HeadProgress::Failed(e),
            }
        }
        HeadProgress::Done
    }
}

/// What a complete first header says about an accepted connection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FirstFrame {
    /// `INITIAL_DATA` or `INITIAL_META`, empty as it must be.
    Initial(Kind),
    /// Anything else: why it is refused.
    Bad(String),
}

fn classify(head: &[u8; HEADER_LEN]) -> FirstFrame {
    let header = match FrameHeader::decode(head) {
        Ok(h) => h,
        Err(e) => return FirstFrame::Bad(format!("not a frame header: {e}")),
    };
    let kind = match header.ty {
        PacketType::INITIAL_DATA => Kind::Data,
        PacketType::INITIAL_META => Kind::Meta,
        ty => {
            return FirstFrame::Bad(format!(
                "first frame is {ty}, not INITIAL_DATA or INITIAL_META"
            ));
        }
    };
    if header.len != 0 {
        return FirstFrame::Bad(format!("{} with a payload", header.ty));
    }
    FirstFrame::Initial(kind)
}

/// The random delay before the next dial after a cross: uniform below `connect_int`,
/// kept within 100 ms..1 s so that it neither collides often nor delays long.
fn backoff(connect_int: Duration, random: u64) -> Duration {
    let window = connect_int.clamp(MIN_BACKOFF_WINDOW, MAX_BACKOFF_WINDOW);
    let window_us = window.as_micros() as u64;
    Duration::from_micros(random % window_us)
}

/// `connect_int` with DRBD's ±1/7 jitter, so two nodes' timers do not expire together.
fn jittered(connect_int: Duration, random: u64) -> Duration {
    let seventh = connect_int / 7;
    if random & 1 == 0 {
        connect_int + seventh
    } else {
        connect_int - seventh
    }
}

fn same_host(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// Makes a socket ready for the link: blocking, no timeouts, no Nagle delay, keep-alive.
fn prepare(s: &TcpStream) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(None)?;
    s.set_write_timeout(None)?;
    s.set_nodelay(true)?;
    sock::set_keepalive(s)
}

fn send_initial(s: &mut TcpStream, kind: Kind, timeout: Duration) -> io::Result<()> {
    let mut buf = Vec::with_capacity(HEADER_LEN);
    Frame::new(0, kind.initial()).encode(&mut buf);
    // A fresh socket's send buffer is empty, so this cannot block long; the timeout only
    // guards against the impossible.
    s.set_write_timeout(Some(timeout))?;
    s.write_all(&buf)?;
    s.set_write_timeout(None)
}

/// The state of one call to [`establish`].
struct Attempt<'a, R> {
    listener: &'a Listener,
    cfg: &'a LinkConfig,
    rng: &'a mut R,
    data: Option<Slot>,
    meta: Option<Slot>,
    pending: Vec<Pending>,
    /// No dial before this (failed dial: `connect_int`; cross: a random delay).
    next_dial: Instant,
    /// Having dialed the data socket, we leave the meta socket to the peer until then.
    meta_wait_until: Instant,
    /// Both sockets have existed, unchanged, since this moment minus [`SETTLE`].
    settled_at: Option<Instant>,
    /// The last dial error logged, so that a peer that stays down is logged once.
    last_dial_error: Option<io::ErrorKind>,
}

impl<'a, R: FnMut() -> u64> Attempt<'a, R> {
    fn new(listener: &'a Listener, cfg: &'a LinkConfig, rng: &'a mut R) -> Self {
        let now = Instant::now();
        Attempt {
            listener,
            cfg,
            rng,
            data: None,
            meta: None,
            pending: Vec::new(),
            next_dial: now,
            meta_wait_until: now,
            settled_at: None,
            last_dial_error: None,
        }
    }

    fn slot(&mut self, kind: Kind) -> &mut Option<Slot> {
        match kind {
            Kind::Data => &mut self.data,
            Kind::Meta => &mut self.meta,
        }
    }

    /// The sockets changed: the settle period starts over.
    fn changed(&mut self) {
        self.settled_at = None;
    }

    /// Takes new connections off the listener: the peer's wait for their first frame,
    /// anyone else's are refused.
    fn accept_new(&mut self, now: Instant) -> Result<(), LinkError> {
        for _ in 0..MAX_ACCEPTS_PER_TURN {
            let (stream, from) = match self.listener.inner.accept() {
                Ok(accepted) => accepted,
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok(()),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => continue,
                    _ if is_fatal_accept_error(&e) => {
                        return Err(LinkError::Listener {
                            peer: self.cfg.peer_name.clone(),
                            addr: self.cfg.peer,
                            local: self.listener.local,
                            source: e,
                        });
                    }
                    // Out of descriptors or memory, or a network error passed on by
                    // accept(2): try again next turn.
                    _ => {
                        tracing::warn!(peer = %self.cfg.peer_name, error = %e, "accept failed");
                        return Ok(());
                    }
                },
            };
            if !same_host(from.ip(), self.cfg.peer.ip()) {
                tracing::warn!(
                    peer = %self.cfg.peer_name,
                    %from,
                    expected = %self.cfg.peer.ip(),
                    "refusing a connection from {from}: not the peer's address"
                );
                continue;
            }
            if self.pending.len() >= MAX_PENDING {
                tracing::warn!(
                    peer = %self.cfg.peer_name,
                    %from,
                    "refusing a connection from {from}: {MAX_PENDING} connections are already waiting for their first frame"
                );
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                tracing::warn!(peer = %self.cfg.peer_name, %from, error = %e, "closing an accepted connection");
                continue;
            }
            self.pending.push(Pending {
                stream,
                from,
                head: [0; HEADER_LEN],
                got: 0,
                deadline: now + self.cfg.timeout,
            });
        }
        Ok(())
    }

    /// Reads the first frames that have arrived and files each connection as the data or
    /// meta socket, or closes it.
    fn advance_pending(&mut self, now: Instant) {
        for mut p in std::mem::take(&mut self.pending) {
            let peer = &self.cfg.peer_name;
            let from = p.from;
            match p.read_head() {
                HeadProgress::More if now >= p.deadline => {
                    tracing::warn!(
                        %peer, %from, got = p.got,
                        "closing a connection from {from}: no initial packet within {:?}",
                        self.cfg.timeout
                    );
                }
                HeadProgress::More => self.pending.push(p),
                HeadProgress::Eof(got) => {
                    if got == 0 {
                        tracing::debug!(%peer, %from, "a connection closed before its first frame");
                    } else {
                        tracing::warn!(%peer, %from, got, "a connection closed inside its first frame");
                    }
                }
                HeadProgress::Failed(e) => {
                    tracing::warn!(%peer, %from, error = %e, "error receiving initial packet");
                }
                HeadProgress::Done => match classify(&p.head) {
                    FirstFrame::Bad(why) => {
                        tracing::warn!(%peer, %from, "error receiving initial packet: {why}; closing the connection");
                    }
                    FirstFrame::Initial(kind) => self.file(p, kind, now),
                },
            }
        }
    }

    /// Files an accepted connection that said which socket it is.
    fn file(&mut self, p: Pending, kind: Kind, now: Instant) {
        let peer = &self.cfg.peer_name;
        if !sock::is_open(&p.stream) {
            // The peer dropped it already: a leftover of a crossed try.
            tracing::debug!(%peer, from = %p.from, ?kind, "dropping a connection the peer already closed");
            return;
        }
        if let Err(e) = prepare(&p.stream) {
            tracing::warn!(%peer, from = %p.from, error = %e, "closing an accepted connection");
            return;
        }
        if self
            .slot(kind)
            .as_ref()
            .is_some_and(|s| !sock::is_open(&s.stream))
        {
            *self.slot(kind) = None;
        }
        self.changed();
        if self.slot(kind).is_some() {
            tracing::warn!(peer = %self.cfg.peer_name, "initial packet {} crossed", kind.letter());
            *self.slot(kind) = None;
            let delay = backoff(self.cfg.connect_int, (self.rng)());
            self.next_dial = now + delay;
            return;
        }
        tracing::debug!(peer = %self.cfg.peer_name, from = %p.from, ?kind, "accepted");
        *self.slot(kind) = Some(Slot {
            stream: p.stream,
            dialed: false,
        });
        if kind == Kind::Data && self.meta.is_none() {
            // The peer dialed data and now waits for us to dial meta.
            self.next_dial = self.next_dial.min(now);
        }
    }

    /// Forgets sockets the peer has closed.
    fn drop_closed(&mut self) {
        for kind in [Kind::Data, Kind::Meta] {
            if self
                .slot(kind)
                .as_ref()
                .is_some_and(|s| !sock::is_open(&s.stream))
            {
                tracing::debug!(peer = %self.cfg.peer_name, ?kind, "the peer closed a socket");
                *self.slot(kind) = None;
                self.changed();
            }
        }
    }

    /// Returns the link once both sockets have been there for [`SETTLE`] with nothing
    /// else pending.
    fn try_finish(&mut self, now: Instant) -> Option<Link> {
        if self.data.is_none() || self.meta.is_none() || !self.pending.is_empty() {
            // The settle period starts when all of this holds (and `wait` must not keep
            // waking up for a settle deadline that no longer counts).
            self.settled_at = None;
            return None;
        }
        let since = *self.settled_at.get_or_insert(now);
        if now < since + SETTLE {
            return None;
        }
        let data = self.data.take()?;
        let meta = self.meta.take()?;
        let accepted = !meta.dialed;
        tracing::info!(
            peer = %self.cfg.peer_name,
            addr = %self.cfg.peer,
            accepted,
            "data and meta sockets established"
        );
        Some(Link {
            data: data.stream,
            meta: meta.stream,
            accepted,
            data_dialed: data.dialed,
            peer_addr: self.cfg.peer,
        })
    }

    /// When the next dial is due, if a socket is missing.
    fn next_dial_at(&self) -> Option<Instant> {
        match (&self.data, &self.meta) {
            (None, _) => Some(self.next_dial),
            (Some(d), None) if d.dialed => Some(self.next_dial.max(self.meta_wait_until)),
            (Some(_), None) => Some(self.next_dial),
            (Some(_), Some(_)) => None,
        }
    }

    /// Dials the peer once, for the data socket if we have none, else for the meta socket.
    fn dial(&mut self, stop: &AtomicBool) {
        let kind = if self.data.is_none() {
            Kind::Data
        } else {
            Kind::Meta
        };
        let cfg = self.cfg;
        let result =
            sock::dial(Some(cfg.local.ip()), cfg.peer, cfg.timeout, stop).and_then(|s| match s {
                Some(mut s) => {
                    prepare(&s)?;
                    send_initial(&mut s, kind, cfg.timeout)?;
                    Ok(Some(s))
                }
                None => Ok(None),
            });
        let now = Instant::now();
        match result {
            Ok(None) => {}
            Ok(Some(stream)) => {
                tracing::debug!(peer = %cfg.peer_name, ?kind, "dialed");
                self.last_dial_error = None;
                *self.slot(kind) = Some(Slot {
                    stream,
                    dialed: true,
                });
                self.changed();
                if kind == Kind::Data {
                    self.meta_wait_until = now + jittered(cfg.connect_int, (self.rng)());
                }
            }
            Err(e) => {
                if self.last_dial_error != Some(e.kind()) {
                    let quiet = matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::TimedOut
                    );
                    if quiet {
                        tracing::debug!(peer = %cfg.peer_name, addr = %cfg.peer, error = %e, "cannot connect; retrying every {:?}", cfg.connect_int);
                    } else {
                        tracing::warn!(peer = %cfg.peer_name, addr = %cfg.peer, error = %e, "cannot connect; retrying every {:?}", cfg.connect_int);
                    }
                    self.last_dial_error = Some(e.kind());
                }
                self.next_dial = now + cfg.connect_int;
            }
        }
    }

    /// Sleeps until a connection or a first frame arrives, a deadline passes, or at most
    /// [`STOP_CHECK`].
    fn wait(&self, now: Instant) -> Result<(), LinkError> {
        let mut until = now + STOP_CHECK;
        if let Some(at) = self.next_dial_at() {
            until = until.min(at);
        }
        if let Some(since) = self.settled_at {
            until = until.min(since + SETTLE);
        }
        for p in &self.pending {
            until = until.min(p.deadline);
        }
        let mut fds: Vec<BorrowedFd<'_>> = Vec::with_capacity(1 + self.pending.len());
        fds.push(self.listener.inner.as_fd());
        fds.extend(self.pending.iter().map(|p| p.stream.as_fd()));
        sock::wait(&fds, libc::POLLIN, until.saturating_duration_since(now))
            .map(drop)
            .map_err(|source| LinkError::Poll {
                peer: self.cfg.peer_name.clone(),
                addr: self.cfg.peer,
                source,
            })
    }
}

/// accept(2) errors that mean the listener itself is broken, not one connection.
fn is_fatal_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP | libc::EFAULT)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(ty: PacketType, len: u32) -> [u8; HEADER_LEN] {
        let mut v = Vec::new();
        FrameHeader {
            flags: 0,
            ty,
            volume: 0,
            len,
        }
        .encode(&mut v);
        v.try_into().expect("16 bytes")
    }

    #[test]
    fn first_frames_are_classified_from_the_header_alone() {
        assert_eq!(
            classify(&head(PacketType::INITIAL_DATA, 0)),
            FirstFrame::Initial(Kind::Data)
        );
        assert_eq!(
            classify(&head(PacketType::INITIAL_META, 0)),
            FirstFrame::Initial(Kind::Meta)
        );
        assert!(matches!(
            classify(&head(PacketType::HELLO, 16)),
            FirstFrame::Bad(why) if why.contains("HELLO")
        ));
        assert!(matches!(
            classify(&head(PacketType::INITIAL_DATA, 4)),
            FirstFrame::Bad(_)
        ));
        assert!(
            matches!(classify(b"GET / HTTP/1.1\r\n"), FirstFrame::Bad(why) if why.contains("magic"))
        );
    }

    #[test]
    fn backoff_stays_in_its_window() {
        let ten_s = Duration::from_secs(10);
        for r in [0, 1, 999_999, u64::MAX] {
            assert!(backoff(ten_s, r) < MAX_BACKOFF_WINDOW);
            assert!(backoff(Duration::ZERO, r) < MIN_BACKOFF_WINDOW);
        }
        assert_ne!(
            backoff(ten_s, 123_456),
            backoff(ten_s, 654_321),
            "the delay depends on the random input"
        );
        assert_eq!(jittered(Duration::from_secs(7), 0), Duration::from_secs(8));
        assert_eq!(jittered(Duration::from_secs(7), 1), Duration::from_secs(6));
    }

    #[test]
    fn ipv4_mapped_addresses_are_the_same_host() {
        let v4: IpAddr = "10.0.0.2".parse().expect("ip");
        let mapped: IpAddr = "::ffff:10.0.0.2".parse().expect("ip");
        assert!(same_host(v4, mapped));
        assert!(!same_host(v4, "10.0.0.3".parse().expect("ip")));
    }
}
