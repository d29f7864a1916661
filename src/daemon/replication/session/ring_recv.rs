//! Receiving a plain TCP link's frames on the session's own ring: a receive per socket
//! stays armed on the ring where the session sleeps, so a frame from the peer wakes the
//! session itself. With receiver threads (still used inside TLS, whose state machine
//! reads with blocking calls) every frame cost a wakeup of the receiver and then one of
//! the session; on a busy machine each wakeup is tens of microseconds.
//!
//! Each socket has its [`FrameReader`], whose buffer the kernel fills: from arming a
//! receive until its completion is taken, nothing else touches that buffer. A link that
//! closes shuts its sockets down (which ends armed receives at once) and waits for their
//! completions before the buffers may go.

use std::os::fd::RawFd;

use super::link::MAX_PEER_BUFFERED;
use super::*;
use crate::daemon::replication::disk::RECV_SOCKETS;

/// How long a closing link waits for its armed receives to end after the shutdown.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The ring receives of one link.
pub(super) struct RingRecv {
    sockets: [RecvSocket; RECV_SOCKETS],
}

struct RecvSocket {
    fd: RawFd,
    reader: FrameReader,
    /// A receive into `reader` is on the ring.
    armed: bool,
    /// The socket ended (end of file or error): no more receives.
    ended: bool,
}

/// Index of the data socket (the meta socket is 1), as the ring keys them.
const DATA: usize = 0;

impl RingRecv {
    /// Receives for a link's data and meta sockets (plain TCP).
    pub(super) fn new(data: RawFd, meta: RawFd) -> RingRecv {
        let socket = |fd| RecvSocket {
            fd,
            reader: FrameReader::new(),
            armed: false,
            ended: false,
        };
        RingRecv {
            sockets: [socket(data), socket(meta)],
        }
    }

    fn any_armed(&self) -> bool {
        self.sockets.iter().any(|s| s.armed)
    }
}

impl Session {
    /// Arms a receive on every socket of a ring-received link that has none (the data
    /// socket only while less than [`MAX_PEER_BUFFERED`] of peer data waits to be written:
    /// TCP then holds the peer back).
    pub(super) fn arm_receives(&mut self) {
        let over = self.buffered.load(Ordering::Acquire) > MAX_PEER_BUFFERED;
        let Some(rr) = self.link.as_mut().and_then(|l| l.ring.as_mut()) else {
            return;
        };
        for (i, s) in rr.sockets.iter_mut().enumerate() {
            if s.armed || s.ended || (i == DATA && over) {
                continue;
            }
            let space = s.reader.space();
            // SAFETY: the buffer belongs to the reader, which is neither touched nor
            // dropped until this receive's completion is taken (`on_received`, or
            // `end_ring_receives` when the link closes).
            match unsafe { self.disk.receive(i, s.fd, space.as_mut_ptr(), space.len()) } {
                Ok(()) => s.armed = true,
                Err(e) => {
                    tracing::error!(resource = %self.cfg.resource, error = %e, "session ring: cannot arm a receive");
                }
            }
        }
    }

    /// Takes the finished receives and handles the frames they completed; true if any.
    pub(super) fn on_received(&mut self, now: Instant) -> bool {
        let mut any = false;
        for i in 0..RECV_SOCKETS {
            let Some(res) = self.disk.take_received(i) else {
                continue;
            };
            any = true;
            let generation = self.generation;
            let Some(rr) = self.link.as_mut().and_then(|l| l.ring.as_mut()) else {
                continue;
            };
            let s = &mut rr.sockets[i];
            s.armed = false;
            match res {
                n if n > 0 => s.reader.filled(n as usize),
                0 => {
                    s.ended = true;
                    let why = s.reader.ended().to_string();
                    self.on_recv_failed(now, generation, i == DATA, why);
                    continue;
                }
                e if -e == libc::EINTR || -e == libc::EAGAIN => continue,
                e => {
                    s.ended = true;
                    let why = FrameError::from(std::io::Error::from_raw_os_error(-e)).to_string();
                    self.on_recv_failed(now, generation, i == DATA, why);
                    continue;
                }
            }
            self.frames_received(now, i, generation);
        }
        any
    }

    /// Handles every frame buffered whole on socket `i` (while the link stays the same).
    fn frames_received(&mut self, now: Instant, i: usize, generation: u64) {
        loop {
            if self.generation != generation {
                return;
            }
            let Some(rr) = self.link.as_mut().and_then(|l| l.ring.as_mut()) else {
                return;
            };
            let s = &mut rr.sockets[i];
            let (ty, f, payload) = match s.reader.next_buffered() {
                Ok(Some((h, at))) => (h.ty, h.flags, s.reader.payload(&h, at).to_vec()),
                Ok(None) => return,
                Err(e) => {
                    s.ended = true;
                    self.on_recv_failed(now, generation, i == DATA, e.to_string());
                    return;
                }
            };
            self.on_packet(now, ty, f, payload);
            self.drain(now);
        }
    }

    /// Waits (bounded) for the armed receives of a closing link, whose sockets were shut
    /// down, so that their buffers are no longer the kernel's. Disk completions reaped
    /// meanwhile are handled by the loop as usual.
    pub(super) fn end_ring_receives(&mut self, mut rr: RingRecv) {
        let until = Instant::now() + CLOSE_WAIT;
        while rr.any_armed() {
            self.disk.reap(&mut self.disk_done);
            for (i, s) in rr.sockets.iter_mut().enumerate() {
                if s.armed && self.disk.take_received(i).is_some() {
                    s.armed = false;
                }
            }
            let now = Instant::now();
            if !rr.any_armed() {
                break;
            }
            if now >= until {
                tracing::error!(resource = %self.cfg.resource,
                    "a receive of the closed link did not end within {CLOSE_WAIT:?}; its buffer is kept");
                // The kernel may still write into it: never free it.
                for s in rr.sockets.iter_mut().filter(|s| s.armed) {
                    std::mem::forget(std::mem::take(&mut s.reader));
                }
                return;
            }
            self.disk.wait((until - now).min(Duration::from_millis(10)));
        }
    }
}
