//! One client connection's buffers: receive buffer, large-payload buffer, reply queue and
//! the iovec array of its (single) SendMsg in flight.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::io::AlignedBuf;

use super::handshake::Handshake;
use super::request::{Limits, Request};

/// Receive buffer per connection: holds any option (16 + MAX_OPTION_LEN) and many request
/// headers; write payloads that do not fit are received into their own buffer.
pub(crate) const RX_CAP: usize = 256 * 1024;
/// Replies gathered into one sendmsg at most.
const MAX_IOV: usize = 64;

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

    /// Where the next recv writes: the open payload buffer, else the receive buffer's free
    /// tail (compacting first when the tail is full).
    pub(crate) fn recv_target(&mut self) -> (*mut u8, usize) {
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
        match self.payload.as_mut() {
            Some(p) => p.got = (p.got + n).min(p.buf.len()),
            None => self.rx_end = (self.rx_end + n).min(self.rx.len()),
        }
    }

    pub(crate) fn queue(&mut self, head: Vec<u8>, data: Option<AlignedBuf>) {
        if !self.hard_close {
            let out = Out { head, data };
            self.tx_bytes += out.len();
            self.tx.push_back(out);
        }
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

    /// True once nothing references the socket and nothing is left to do on it.
    pub(crate) fn finished(&self) -> bool {
        self.read_closed
            && !self.recv_armed
            && !self.send_armed
            && (self.hard_close || (self.tx.is_empty() && self.outstanding == 0))
    }
}
