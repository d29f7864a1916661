//! The session's ring: the local disk's I/O and the input doorbell on one io_uring, so the
//! session thread submits as many disk operations as the core allows (the core keeps the
//! order that matters: overlapping writes wait, barriers wait for their epoch) and sleeps in
//! one place until a disk operation completes, an input arrives or a timer is due.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use io_uring::{IoUring, opcode, types};

use crate::io::{BACKEND_KEY_BIT, Backend, BackendSpec, Done, IoCtx, Op, open_backend};

/// Submission queue entries (the completion queue has four times as many).
const RING_ENTRIES: u32 = 256;
/// `user_data` of the doorbell read (backend keys carry [`BACKEND_KEY_BIT`]).
const BELL_KEY: u64 = 1;
/// `user_data` of a peer socket's receive: this bit, the link's tag (its low
/// [`RECV_TAG_BITS`]) shifted by one, and the socket's index (0 data, 1 meta).
const RECV_BIT: u64 = 1 << 62;
/// Bits of a link's tag that a receive's `user_data` keeps.
const RECV_TAG_BITS: u32 = 61;
/// Peer sockets whose receives run on the ring.
pub const RECV_SOCKETS: usize = 2;
const _: () = assert!(
    RECV_SOCKETS == 2,
    "one bit of user_data holds the socket index"
);

/// The part of a link's tag that a receive's `user_data` keeps.
fn recv_tag(tag: u64) -> u64 {
    tag & ((1 << RECV_TAG_BITS) - 1)
}

/// The ring and the disk it drives.
pub struct SessionRing {
    ring: IoUring,
    backend: Box<dyn Backend>,
    done: Vec<Done>,
    cqes: Vec<(u64, i32)>,
    bell_fd: RawFd,
    bell_buf: Box<[u8; 8]>,
    bell_armed: bool,
    /// Results of finished receives not yet taken: (socket index, link tag, result).
    received: Vec<(usize, u64, i32)>,
}

impl SessionRing {
    /// Opens the disk and makes the ring (a plain ring: completions land in the queue
    /// without the session entering the kernel, and the ring may be made on the thread
    /// that starts the session and used by the session's own).
    pub fn new(spec: &BackendSpec, bell_fd: RawFd) -> io::Result<SessionRing> {
        let backend = crate::io::wrap_for(&spec.path, open_backend(spec)?);
        let ring = IoUring::builder()
            .setup_cqsize(RING_ENTRIES * 4)
            .build(RING_ENTRIES)?;
        Ok(SessionRing {
            ring,
            backend,
            done: Vec::new(),
            cqes: Vec::new(),
            bell_fd,
            bell_buf: Box::new([0; 8]),
            bell_armed: false,
            received: Vec::new(),
        })
    }

    /// Starts `op`; its result comes out of [`reap`](Self::reap) tagged `id`.
    pub fn submit(&mut self, id: u64, op: Op) {
        let mut ctx = IoCtx::new(&mut self.ring, &mut self.done);
        self.backend.submit(&mut ctx, id, op);
    }

    /// Operations in flight.
    pub fn in_flight(&self) -> usize {
        self.backend.in_flight()
    }

    /// Hands the queued submissions to the kernel without waiting.
    pub fn flush(&mut self) {
        if self.ring.submission().is_empty() {
            return;
        }
        if let Err(e) = self.ring.submit() {
            tracing::error!(error = %e, "session ring: submit failed");
        }
    }

    /// Finished operations (appended to `out`); true if the doorbell rang.
    pub fn reap(&mut self, out: &mut Vec<Done>) -> bool {
        let mut rang = false;
        self.cqes.clear();
        self.cqes
            .extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
        for i in 0..self.cqes.len() {
            let (ud, res) = self.cqes[i];
            if ud & BACKEND_KEY_BIT != 0 {
                let mut ctx = IoCtx::new(&mut self.ring, &mut self.done);
                self.backend.complete(&mut ctx, ud & !BACKEND_KEY_BIT, res);
            } else if ud == BELL_KEY {
                self.bell_armed = false;
                rang = true;
            } else if ud & RECV_BIT != 0 {
                let index = (ud & 1) as usize;
                self.received.push((index, recv_tag(ud >> 1), res));
            }
        }
        out.append(&mut self.done);
        rang
    }

    /// Starts a receive from socket `fd` into `len` bytes at `buf` for the link tagged
    /// `tag`; its result comes out of [`take_received`](Self::take_received)`(index, tag)`
    /// after a [`reap`](Self::reap).
    ///
    /// # Safety
    /// `buf` must stay valid, and nothing else may touch it, until that result was taken
    /// (or until the ring is dropped after the socket was shut down).
    pub unsafe fn receive(
        &mut self,
        index: usize,
        tag: u64,
        fd: RawFd,
        buf: *mut u8,
        len: usize,
    ) -> io::Result<()> {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let ud = RECV_BIT | recv_tag(tag) << 1 | (index as u64 & 1);
        let entry = opcode::Recv::new(types::Fd(fd), buf, len)
            .build()
            .user_data(ud);
        // SAFETY: the caller keeps the buffer valid until the completion was reaped.
        unsafe { crate::io::driver_push(&mut self.ring, &entry) }
    }

    /// The ring's descriptor (readable while completions wait).
    pub fn ring_fd(&self) -> RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.ring)
    }

    /// The result of the finished receive of socket `index` armed with `tag` (bytes, 0 at
    /// end of file, or a negative errno), once. Results of that socket with another tag
    /// (a link given up on) are dropped.
    pub fn take_received(&mut self, index: usize, tag: u64) -> Option<i32> {
        let tag = recv_tag(tag);
        let mut found = None;
        self.received.retain(|&(i, t, res)| {
            if i != index {
                return true;
            }
            if t == tag && found.is_none() {
                found = Some(res);
            }
            false
        });
        found
    }

    /// Sleeps until something completes (a disk operation or the doorbell, whose read is
    /// armed here) or `timeout` passes. The caller has announced its sleep to the inbox.
    pub fn wait(&mut self, timeout: Duration) {
        if !self.bell_armed {
            let entry = opcode::Read::new(types::Fd(self.bell_fd), self.bell_buf.as_mut_ptr(), 8)
                .build()
                .user_data(BELL_KEY);
            // SAFETY: the buffer is boxed and owned by self, which outlives the ring's use
            // (the ring is dropped with self; a pending read on an eventfd is then
            // cancelled by the kernel).
            match unsafe { crate::io::driver_push(&mut self.ring, &entry) } {
                Ok(()) => self.bell_armed = true,
                Err(e) => tracing::error!(error = %e, "session ring: cannot arm the doorbell"),
            }
        }
        if !self.ring.completion().is_empty() {
            self.flush();
            return;
        }
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => {
                tracing::error!(error = %e, "session ring: wait failed");
                std::thread::sleep(timeout.min(Duration::from_millis(10)));
            }
        }
    }
}
