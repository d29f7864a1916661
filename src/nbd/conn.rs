//! One client connection's buffers: receive buffer, large-payload buffer, reply queue and
//! the iovec array of its (single) SendMsg in flight.
//!
//! After `NBD_OPT_STARTTLS` a connection carries a [`TlsLayer`] (rustls, driven without a
//! socket): receives land in its ciphertext buffer and are decrypted into the receive (or
//! payload) buffer by [`Conn::pump_tls`], so option and request parsing stay the same;
//! everything queued is encrypted at once and queued as ciphertext, so the reply queue,
//! the iovecs and the send accounting stay the same. The cost is one more copy of every
//! byte each way plus the cipher, and a reply's data buffer is freed at queueing instead
//! of being sent from in place.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use crate::io::AlignedBuf;

use super::handshake::Handshake;
use super::request::{Limits, Request};

/// Receive buffer per connection: holds any option (16 + MAX_OPTION_LEN) and many request
/// headers; write payloads that do not fit are received into their own buffer.
pub(crate) const RX_CAP: usize = 256 * 1024;
/// Replies gathered into one sendmsg at most.
const MAX_IOV: usize = 64;
/// Ciphertext received and not yet given to rustls, per TLS connection (a few records).
pub(crate) const TLS_RX_CAP: usize = 64 * 1024;

/// A connection's TLS session after STARTTLS.
pub(crate) struct TlsLayer {
    session: rustls::ServerConnection,
    /// Ciphertext received, `start..end` not yet read by rustls.
    rx: Box<[u8]>,
    start: usize,
    end: usize,
    /// Decrypted bytes rustls holds that did not fit the receive buffer yet.
    plain_pending: usize,
    /// The client sent close_notify: no more input.
    closed_by_peer: bool,
    /// close_notify (or a fatal alert) is queued: nothing more is sent.
    closing: bool,
}

/// What went wrong inside TLS (the connection is closed after the alert, if any, is sent).
#[derive(Debug)]
pub(crate) struct TlsFailure(pub(crate) String);

impl TlsLayer {
    pub(crate) fn new(config: Arc<rustls::ServerConfig>) -> Result<TlsLayer, TlsFailure> {
        let mut session = rustls::ServerConnection::new(config)
            .map_err(|e| TlsFailure(format!("cannot start TLS: {e}")))?;
        // Everything written is taken out at once (`Conn::queue`); the reply queue's own
        // cap bounds memory.
        session.set_buffer_limit(None);
        Ok(TlsLayer {
            session,
            rx: vec![0u8; TLS_RX_CAP].into_boxed_slice(),
            start: 0,
            end: 0,
            plain_pending: 0,
            closed_by_peer: false,
            closing: false,
        })
    }

    /// True once the client sent close_notify.
    pub(crate) fn closed_by_peer(&self) -> bool {
        self.closed_by_peer
    }

    /// Whether the handshake is done (then the client's certificate, if any, was checked).
    pub(crate) fn is_handshaking(&self) -> bool {
        self.session.is_handshaking()
    }

    fn take_output(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while self.session.wants_write() {
            // Writing into a Vec cannot fail.
            if self.session.write_tls(&mut out).is_err() {
                break;
            }
        }
        out
    }
}

/// A reply (or handshake bytes) waiting to be sent.
pub(crate) struct Out {
    pub(crate) head: Vec<u8>,
    pub(crate) data: Option<AlignedBuf>,
}

impl Out {
    fn len(&self) -> usize {
        self.head.len() + self.data.as_ref().map_or(0, AlignedBuf::len)
    }
}

pub(crate) enum Phase {
    Handshake(Box<Handshake>),
    Transmission { lim: Limits },
}

/// A write whose payload is being received straight into its own buffer.
pub(crate) struct PayloadRecv {
    pub(crate) req: Request,
    pub(crate) buf: AlignedBuf,
    pub(crate) got: usize,
}

pub(crate) struct Conn {
    pub(crate) fd: OwnedFd,
    pub(crate) generation: u32,
    pub(crate) peer: String,
    pub(crate) phase: Phase,
    pub(crate) rx: Box<[u8]>,
    pub(crate) rx_start: usize,
    pub(crate) rx_end: usize,
    pub(crate) payload: Option<PayloadRecv>,
    /// Payload bytes of a refused write still to be skipped.
    pub(crate) discard: u64,
    pub(crate) recv_armed: bool,
    pub(crate) send_armed: bool,
    pub(crate) tx: VecDeque<Out>,
    /// Bytes of `tx.front()` already sent.
    pub(crate) tx_sent: usize,
    /// Bytes queued in `tx` and not yet sent.
    pub(crate) tx_bytes: usize,
    iov: Vec<libc::iovec>,
    msg: Box<libc::msghdr>,
    /// No more input is read (EOF, DISC, framing error, shutdown).
    pub(crate) read_closed: bool,
    /// Drop pending output and close as soon as no SQE references the socket.
    pub(crate) hard_close: bool,
    /// Requests executing on the backend, not yet answered.
    pub(crate) outstanding: usize,
    /// Waiting for backend room before parsing more requests.
    pub(crate) paused: bool,
    /// Counted in the gate's open clients.
    pub(crate) counted: bool,
    /// Inside TLS (after STARTTLS).
    pub(crate) tls: Option<Box<TlsLayer>>,
    /// The listener's TLS configuration, for STARTTLS (`None`: TLS is not offered).
    pub(crate) tls_config: Option<Arc<rustls::ServerConfig>>,
}

impl Conn {
    pub(crate) fn new(fd: OwnedFd, generation: u32, peer: String, hs: Handshake) -> Self {
        // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
        let msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        Self {
            fd,
            generation,
            peer,
            phase: Phase::Handshake(Box::new(hs)),
            rx: vec![0u8; RX_CAP].into_boxed_slice(),
            rx_start: 0,
            rx_end: 0,
            payload: None,
            discard: 0,
            recv_armed: false,
            send_armed: false,
            tx: VecDeque::new(),
            tx_sent: 0,
            tx_bytes: 0,
            iov: Vec::with_capacity(MAX_IOV * 2),
            msg,
            read_closed: false,
            hard_close: false,
            outstanding: 0,
            paused: false,
            counted: false,
            tls: None,
            tls_config: None,
        }
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(crate) fn avail(&self) -> &[u8] {
        &self.rx[self.rx_start..self.rx_end]
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.rx_start += n;
        debug_assert!(self.rx_start <= self.rx_end);
        if self.rx_start == self.rx_end {
            self.rx_start = 0;
            self.rx_end = 0;
        }
    }

    /// Where the next recv writes: inside TLS the ciphertext buffer's free tail, else the
    /// plaintext target ([`Conn::plain_target`]).
    pub(crate) fn recv_target(&mut self) -> (*mut u8, usize) {
        if let Some(t) = self.tls.as_mut() {
            // Receive only when rustls has taken everything: the plaintext that did not fit
            // must be parsed first (the connection may be paused).
            if t.start < t.end || t.plain_pending > 0 || t.closed_by_peer {
                return (t.rx.as_mut_ptr(), 0);
            }
            t.start = 0;
            t.end = 0;
            return (t.rx.as_mut_ptr(), t.rx.len());
        }
        self.plain_target()
    }

    /// Where received plaintext goes: the open payload buffer, else the receive buffer's
    /// free tail (compacting first when the tail is full).
    fn plain_target(&mut self) -> (*mut u8, usize) {
        if let Some(p) = self.payload.as_mut() {
            let left = p.buf.len() - p.got;
            // SAFETY: got <= len.
            return (unsafe { p.buf.as_mut_ptr().add(p.got) }, left);
        }
        if self.rx_end == self.rx.len() && self.rx_start > 0 {
            self.rx.copy_within(self.rx_start..self.rx_end, 0);
            self.rx_end -= self.rx_start;
            self.rx_start = 0;
        }
        let free = self.rx.len() - self.rx_end;
        // SAFETY: rx_end <= len.
        (unsafe { self.rx.as_mut_ptr().add(self.rx_end) }, free)
    }

    /// Records `n` received bytes at the last recv target.
    pub(crate) fn received(&mut self, n: usize) {
        if let Some(t) = self.tls.as_mut() {
            t.end = (t.end + n).min(t.rx.len());
            return;
        }
        self.plain_received(n);
    }

    fn plain_received(&mut self, n: usize) {
        match self.payload.as_mut() {
            Some(p) => p.got = (p.got + n).min(p.buf.len()),
            None => self.rx_end = (self.rx_end + n).min(self.rx.len()),
        }
    }

    pub(crate) fn queue(&mut self, head: Vec<u8>, data: Option<AlignedBuf>) {
        if self.hard_close {
            return;
        }
        if let Some(t) = self.tls.as_mut() {
            if t.closing {
                return;
            }
            let mut w = t.session.writer();
            let wrote = w.write_all(&head).and_then(|()| match &data {
                Some(d) => w.write_all(d.as_slice()),
                None => Ok(()),
            });
            if let Err(e) = wrote {
                // Only after close_notify, which is sent last; keep the invariant anyway.
                tracing::warn!(peer = %self.peer, "TLS refused output: {e}");
                return;
            }
            self.queue_tls_output();
            return;
        }
        self.push_out(head, data);
    }

    fn push_out(&mut self, head: Vec<u8>, data: Option<AlignedBuf>) {
        let out = Out { head, data };
        if out.len() > 0 {
            self.tx_bytes += out.len();
            self.tx.push_back(out);
        }
    }

    /// Moves the records rustls has ready into the reply queue.
    fn queue_tls_output(&mut self) {
        if let Some(t) = self.tls.as_mut() {
            let out = t.take_output();
            self.push_out(out, None);
        }
    }

    /// Starts TLS (after STARTTLS's ACK is queued in clear): bytes already received after
    /// the option are the client's first TLS bytes.
    pub(crate) fn start_tls(
        &mut self,
        config: Arc<rustls::ServerConfig>,
    ) -> Result<(), TlsFailure> {
        let mut t = TlsLayer::new(config)?;
        let early = self.rx_end - self.rx_start;
        if early > t.rx.len() {
            return Err(TlsFailure("too much data after STARTTLS".into()));
        }
        t.rx[..early].copy_from_slice(&self.rx[self.rx_start..self.rx_end]);
        t.end = early;
        self.consume(early);
        self.tls = Some(Box::new(t));
        Ok(())
    }

    /// Decrypts what has been received into the plaintext target, as far as it has room,
    /// and queues what rustls wants to send (handshake messages, alerts). Returns whether
    /// any plaintext was delivered. A TLS error queues the alert and is returned; the
    /// caller then closes the connection's input.
    pub(crate) fn pump_tls(&mut self) -> Result<bool, TlsFailure> {
        let Some(mut t) = self.tls.take() else {
            return Ok(false);
        };
        let res = self.pump_with(&mut t);
        self.tls = Some(t);
        self.queue_tls_output();
        if res.is_err()
            && let Some(t) = self.tls.as_mut()
        {
            t.closing = true;
        }
        res
    }

    fn pump_with(&mut self, t: &mut TlsLayer) -> Result<bool, TlsFailure> {
        let mut delivered = false;
        loop {
            // Plaintext first: rustls refuses to read more while it holds too much.
            while t.plain_pending > 0 {
                let (ptr, room) = self.plain_target();
                if room == 0 {
                    return Ok(delivered);
                }
                // SAFETY: plain_target points at `room` writable bytes of our own buffers,
                // and nothing else references them until `plain_received`.
                let target = unsafe { std::slice::from_raw_parts_mut(ptr, room) };
                match t.session.reader().read(target) {
                    Ok(0) => {
                        t.closed_by_peer = true;
                        t.plain_pending = 0;
                    }
                    Ok(n) => {
                        self.plain_received(n);
                        t.plain_pending = t.plain_pending.saturating_sub(n);
                        delivered = true;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => t.plain_pending = 0,
                    Err(e) => return Err(TlsFailure(e.to_string())),
                }
            }
            if t.start == t.end || t.closed_by_peer {
                return Ok(delivered);
            }
            // Never an empty slice: rustls takes a read of 0 bytes for end of file.
            let mut src = &t.rx[t.start..t.end];
            let n = t
                .session
                .read_tls(&mut src)
                .map_err(|e| TlsFailure(e.to_string()))?;
            if n == 0 {
                // close_notify was received: what follows is ignored.
                t.closed_by_peer = true;
                t.start = t.end;
                return Ok(delivered);
            }
            t.start += n;
            let state = match t.session.process_new_packets() {
                Ok(s) => s,
                Err(e) => {
                    // The alert rustls queued still goes out.
                    let out = t.take_output();
                    self.push_out(out, None);
                    return Err(TlsFailure(e.to_string()));
                }
            };
            t.plain_pending = state.plaintext_bytes_to_read();
            if state.peer_has_closed() && t.plain_pending == 0 {
                t.closed_by_peer = true;
            }
            let out = t.take_output();
            self.push_out(out, None);
        }
    }

    /// Inside TLS, once no reply is left to send: queues close_notify (the spec's "close
    /// down the TLS session" before the TCP connection). Returns whether it did.
    pub(crate) fn close_tls(&mut self) -> bool {
        let Some(t) = self.tls.as_mut() else {
            return false;
        };
        if t.closing {
            return false;
        }
        t.closing = true;
        t.session.send_close_notify();
        self.queue_tls_output();
        true
    }

    /// Fills the iovec array and msghdr for the queued output; returns the msghdr to pass
    /// to SendMsg, or `None` when nothing is queued.
    pub(crate) fn prepare_send(&mut self) -> Option<*const libc::msghdr> {
        self.iov.clear();
        let mut skip = self.tx_sent;
        for out in self.tx.iter().take(MAX_IOV) {
            let data = out.data.as_ref().map(AlignedBuf::as_slice).unwrap_or(&[]);
            for part in [&out.head[..], data] {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                self.iov.push(libc::iovec {
                    iov_base: part[skip..].as_ptr() as *mut libc::c_void,
                    iov_len: part.len() - skip,
                });
                skip = 0;
            }
        }
        if self.iov.is_empty() {
            return None;
        }
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = self.iov.len();
        Some(&*self.msg as *const libc::msghdr)
    }

    /// Records `n` bytes sent; replies that are complete are dropped and their data
    /// buffers handed to `recycle`.
    pub(crate) fn sent(&mut self, mut n: usize, recycle: &mut impl FnMut(AlignedBuf)) {
        self.tx_bytes = self.tx_bytes.saturating_sub(n);
        while let Some(front) = self.tx.front() {
            let left = front.len() - self.tx_sent;
            if n >= left {
                n -= left;
                self.tx_sent = 0;
                if let Some(Out {
                    data: Some(buf), ..
                }) = self.tx.pop_front()
                {
                    recycle(buf);
                }
            } else {
                self.tx_sent += n;
                break;
            }
        }
    }

    /// Drops all queued output (the peer is gone).
    pub(crate) fn drop_output(&mut self) {
        self.tx.clear();
        self.tx_sent = 0;
        self.tx_bytes = 0;
    }

    /// True once nothing references the socket and nothing is left to do on it (inside
    /// TLS: close_notify has been sent, see [`Conn::wants_close_tls`]).
    pub(crate) fn finished(&self) -> bool {
        self.read_closed
            && !self.recv_armed
            && !self.send_armed
            && (self.hard_close
                || (self.tx.is_empty()
                    && self.outstanding == 0
                    && self.tls.as_ref().is_none_or(|t| t.closing)))
    }

    /// Inside TLS, input is closed and every reply has been sent: time for close_notify.
    pub(crate) fn wants_close_tls(&self) -> bool {
        self.read_closed
            && !self.hard_close
            && self.tx.is_empty()
            && self.outstanding == 0
            && self.tls.as_ref().is_some_and(|t| !t.closing)
    }
}
