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
    /// Bytes were received and not yet looked at for frames.
    unparsed: bool,
    /// The end of file or error a receive returned, not yet handled.
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

    /// Takes the finished receives and handles the frames they completed, then an end of
    /// file or error; true if any.
    pub(super) fn on_received(&mut self, now: Instant) -> bool {
        let mut any = self.take_receives();
        for i in 0..RECV_SOCKETS {
            let generation = self.generation;
            let Some(s) = self.ring_socket(i) else {
                continue;
            };
            let end = s.stash;
            if !std::mem::take(&mut s.unparsed) && end.is_none() {
                continue;
            }
            any = true;
            // Frames that came before the end are handled first (the stash keeps the
            // socket from being armed meanwhile).
            self.frames_received(now, i, generation);
            let Some(r) = end else {
                continue;
            };
            let same_link = self.generation == generation;
            let Some(s) = self.ring_socket(i) else {
                continue;
            };
            s.stash = None;
            if -r == libc::EINTR || -r == libc::EAGAIN {
                continue;
            }
            if !same_link || s.ended {
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
        }
        any
    }

    /// Socket `i` of the current link, if it is received on the ring.
    fn ring_socket(&mut self, i: usize) -> Option<&mut RecvSocket> {
        self.link
            .as_mut()
            .and_then(|l| l.ring.as_mut())
            .and_then(|rr| rr.sockets.get_mut(i))
    }

    /// Takes finished receives: bytes into the frame buffers (`unparsed`), an end of file
    /// or error into `stash`. True if any.
    fn take_receives(&mut self) -> bool {
        let Some(rr) = self.link.as_mut().and_then(|l| l.ring.as_mut()) else {
            return false;
        };
        let mut any = false;
        for (i, s) in rr.sockets.iter_mut().enumerate() {
            if !s.armed {
                continue;
            }
            let Some(res) = self.disk.take_received(i, rr.tag) else {
                continue;
            };
            s.armed = false;
            any = true;
            if res > 0 {
                s.reader.filled(res as usize);
                s.unparsed = true;
            } else {
                s.stash = Some(res);
            }
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
        self.take_receives();
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
