//! The ring an I/O thread lends to its backend, and a small synchronous driver.

use std::collections::VecDeque;
use std::io;

use io_uring::{IoUring, squeue};

use super::{Backend, Done, Op};

/// Set in the `user_data` of every SQE a backend queues, so the ring's owner can route the
/// CQE back to [`Backend::complete`]. The other 63 bits are the backend's own key.
pub const BACKEND_KEY_BIT: u64 = 1 << 63;

/// Creates a ring for the calling thread: SINGLE_ISSUER and DEFER_TASKRUN when the kernel
/// has them (completions are then only processed when this thread enters the kernel, which
/// it does anyway to wait), falling back to SINGLE_ISSUER alone and then to a plain ring.
///
/// The ring must only be used by the thread that created it.
pub fn new_ring(entries: u32) -> io::Result<IoUring> {
    let cq = entries.saturating_mul(4);
    const NAMES: [&str; 3] = ["SINGLE_ISSUER|DEFER_TASKRUN", "SINGLE_ISSUER", "plain"];
    let tries: [fn(&mut io_uring::Builder); 3] = [
        |b| {
            b.setup_single_issuer().setup_defer_taskrun();
        },
        |b| {
            b.setup_single_issuer();
        },
        |_| {},
    ];
    let mut last = None;
    for (setup, name) in tries.into_iter().zip(NAMES) {
        let mut b = IoUring::builder();
        b.setup_cqsize(cq);
        setup(&mut b);
        match b.build(entries) {
            Ok(ring) => {
                tracing::debug!(entries, "io_uring ring: {name}");
                return Ok(ring);
            }
            Err(e) => {
                tracing::debug!("io_uring setup variant refused: {e}");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("io_uring setup failed")))
}

/// What a backend gets on every call: the thread's ring to queue SQEs on, and a list to
/// push finished ops into.
pub struct IoCtx<'a> {
    ring: &'a mut IoUring,
    done: &'a mut Vec<Done>,
}

impl<'a> IoCtx<'a> {
    /// A context over `ring` collecting into `done`.
    pub fn new(ring: &'a mut IoUring, done: &'a mut Vec<Done>) -> Self {
        Self { ring, done }
    }

    /// The same ring with another `done` list: wrappers use it to see their inner backend's
    /// completions before their caller does.
    pub fn reborrow<'b>(&'b mut self, done: &'b mut Vec<Done>) -> IoCtx<'b> {
        IoCtx {
            ring: &mut *self.ring,
            done,
        }
    }

    /// Reports a finished op.
    pub fn complete(&mut self, done: Done) {
        self.done.push(done);
    }

    /// Queues an SQE with `user_data = BACKEND_KEY_BIT | key`; if the submission queue is
    /// full it is first flushed to the kernel.
    ///
    /// # Safety
    /// Every buffer and fd the entry points to must stay valid until its CQE is handled.
    pub unsafe fn push(&mut self, entry: squeue::Entry, key: u64) -> io::Result<()> {
        let entry = entry.user_data(BACKEND_KEY_BIT | key);
        // SAFETY: forwarded contract.
        unsafe { push_sqe(self.ring, &entry) }
    }
}

/// Pushes an SQE, submitting queued ones first when the queue is full.
///
/// # Safety
/// As [`IoCtx::push`].
pub(crate) unsafe fn push_sqe(ring: &mut IoUring, entry: &squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: forwarded contract.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        match ring.submit() {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                // The CQ is full: the caller must reap first; this only happens when more
                // than cq-size ops are in flight, which slot limits prevent.
                return Err(e);
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Runs ops on a backend to completion on a private ring: for tests, tools and code outside
/// the data path.
pub struct SyncDriver {
    ring: IoUring,
    done: Vec<Done>,
    ready: VecDeque<Done>,
}

impl SyncDriver {
    /// A driver with its own small ring.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            ring: new_ring(64)?,
            done: Vec::new(),
            ready: VecDeque::new(),
        })
    }

    /// Submits `op` without waiting.
    pub fn submit(&mut self, backend: &mut dyn Backend, tag: u64, op: Op) {
        let mut ctx = IoCtx::new(&mut self.ring, &mut self.done);
        backend.submit(&mut ctx, tag, op);
        self.ready.extend(self.done.drain(..));
    }

    /// Waits for the next finished op (of any tag). `None` when nothing is in flight.
    pub fn next(&mut self, backend: &mut dyn Backend) -> io::Result<Option<Done>> {
        loop {
            if let Some(d) = self.ready.pop_front() {
                return Ok(Some(d));
            }
            if backend.in_flight() == 0 {
                return Ok(None);
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            let cqes: Vec<(u64, i32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            for (ud, res) in cqes {
                if ud & BACKEND_KEY_BIT != 0 {
                    let mut ctx = IoCtx::new(&mut self.ring, &mut self.done);
                    backend.complete(&mut ctx, ud & !BACKEND_KEY_BIT, res);
                }
            }
            self.ready.extend(self.done.drain(..));
        }
    }

    /// Runs one op to completion (other ops in flight may finish meanwhile; they are kept
    /// for [`next`](Self::next)).
    pub fn run(&mut self, backend: &mut dyn Backend, op: Op) -> io::Result<Done> {
        const TAG: u64 = u64::MAX;
        self.submit(backend, TAG, op);
        let mut others = Vec::new();
        let found = loop {
            match self.next(backend)? {
                Some(d) if d.tag == TAG => break d,
                Some(d) => others.push(d),
                None => return Err(io::Error::other("backend lost an op")),
            }
        };
        for d in others.into_iter().rev() {
            self.ready.push_front(d);
        }
        Ok(found)
    }

    /// Reads `len` bytes at `offset`.
    pub fn read(
        &mut self,
        backend: &mut dyn Backend,
        offset: u64,
        len: usize,
    ) -> io::Result<Result<Vec<u8>, super::Errno>> {
        let d = self.run(
            backend,
            Op::Read {
                offset,
                buf: super::AlignedBuf::zeroed(len),
            },
        )?;
        Ok(d.res
            .map(|()| d.buf.map(|b| b.as_slice().to_vec()).unwrap_or_default()))
    }

    /// Writes `data` at `offset`.
    pub fn write(
        &mut self,
        backend: &mut dyn Backend,
        offset: u64,
        data: &[u8],
        fua: bool,
    ) -> io::Result<Result<(), super::Errno>> {
        let d = self.run(
            backend,
            Op::Write {
                offset,
                buf: super::AlignedBuf::from_slice(data),
                fua,
            },
        )?;
        Ok(d.res)
    }
}
