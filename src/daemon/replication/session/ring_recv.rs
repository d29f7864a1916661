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
    /// The link's tag on the ring (its generation): a completion of an earlier link's
    /// receive is never taken for this one.
    tag: u64,
}

struct RecvSocket {
    fd: RawFd,
    reader: FrameReader,
    /// A receive into `reader` is on the ring.
    armed: bool,
    /// The socket ended (end of file or error): no more receives.
    ended: bool,
    /// Bytes were received while the session waited to write: frames to handle.
    unparsed: bool,
    /// The end of file or error a receive returned while the session waited to write.
    stash: Option<i32>,
}

/// Index of the data socket (the meta socket is 1), as the ring keys them.
const DATA: usize = 0;

impl RingRecv {
    /// Receives for a link's data and meta sockets (plain TCP).
    pub(super) fn new(data: RawFd, meta: RawFd, tag: u64) -> RingRecv {
        let socket = |fd| RecvSocket {
            fd,
            reader: FrameReader::new(),
            armed: false,
            ended: false,
            unparsed: false,
            stash: None,
        };
        RingRecv {
            sockets: [socket(data), socket(meta)],
            tag,
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
        let tag = rr.tag;
        for (i, s) in rr.sockets.iter_mut().enumerate() {
            if s.armed || s.ended || s.stash.is_some() || (i == DATA && over) {
                continue;
            }
            let space = s.reader.space();
            // SAFETY: the buffer belongs to the reader, which is neither touched nor
            // dropped until this receive's completion is taken (`on_received`, or
            // `end_ring_receives` when the link closes).
            match unsafe {
                self.disk
                    .receive(i, tag, s.fd, space.as_mut_ptr(), space.len())
            } {
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
            let generation = self.generation;
            let Some(rr) = self.link.as_mut().and_then(|l| l.ring.as_mut()) else {
                continue;
            };
            let taken = self.disk.take_received(i, rr.tag);
            let s = &mut rr.sockets[i];
            let res = match taken {
                Some(r) => {
                    s.armed = false;
                    Some(r)
                }
                None => s.stash.take(),
            };
            if res.is_none() && !std::mem::take(&mut s.unparsed) {
                continue;
            }
            any = true;
            match res {
                None => {}
                Some(n) if n > 0 => s.reader.filled(n as usize),
                Some(e) if -e == libc::EINTR || -e == libc::EAGAIN => {}
                Some(r) => {
                    // Frames that came before the end are handled first.
                    s.stash = Some(r);
                    self.frames_received(now, i, generation);
                    let Some(s) = self
                        .link
                        .as_mut()
                        .and_then(|l| l.ring.as_mut())
                        .map(|rr| &mut rr.sockets[i])
                    else {
                        continue;
                    };
                    s.stash = None;
                    if self.generation != generation || s.ended {
                        // The link went, or a bad frame before the end was reported.
                        continue;
                    }
                    s.ended = true;
                    let why = if r == 0 {
                        s.reader.ended().to_string()
                    } else {
                        FrameError::from(std::io::Error::from_raw_os_error(-r)).to_string()
                    };
                    self.on_recv_failed(now, generation, i == DATA, why);
                    continue;
                }
            }
            self.frames_received(now, i, generation);
        }
        any
    }

    /// While the session waits to write to a full socket (`fd`, until `deadline`): takes
    /// what the ring receives meanwhile into the frame buffers, without handling it, and
    /// re-arms, so that a peer writing to us at the same moment is not stuck either.
    pub(super) fn wait_writable(&mut self, fd: RawFd, deadline: Instant) -> std::io::Result<()> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the peer took no data within the timeout",
                ));
            }
            self.buffer_receives();
            self.disk.flush();
            let mut fds = [
                libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.disk.ring_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let ms = (deadline - now).as_millis().clamp(1, 100) as libc::c_int;
            // SAFETY: two valid pollfd entries.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
                continue;
            }
            if fds[0].revents != 0 {
                // Writable, or an error the next send reports.
                self.buffer_receives();
                return Ok(());
            }
        }
    }

    /// Takes finished receives into their frame buffers (handled later by `on_received`)
    /// and arms new ones. Disk completions reaped on the way are handled by the loop.
    fn buffer_receives(&mut self) {
        self.disk.reap(&mut self.disk_done);
        let Some(rr) = self.link.as_mut().and_then(|l| l.ring.as_mut()) else {
            return;
        };
        for (i, s) in rr.sockets.iter_mut().enumerate() {
            if !s.armed {
                continue;
            }
            match self.disk.take_received(i, rr.tag) {
                Some(n) if n > 0 => {
                    s.armed = false;
                    s.reader.filled(n as usize);
                    s.unparsed = true;
                }
                Some(r) => {
                    s.armed = false;
                    s.stash = Some(r);
                }
                None => {}
            }
        }
        self.arm_receives();
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
                if s.armed && self.disk.take_received(i, rr.tag).is_some() {
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
