//! The NBD data path's backend when the volume replicates: reads go straight to the local
//! disk on the NBD thread's ring; writes, trims, zeroes and flushes go to the replication
//! session, which answers through a queue and an eventfd read armed on the same ring.
//! While fencing freezes I/O, reads wait here too (parked until the session thaws).
//! While the local disk cannot serve reads (Diskless after an I/O error, or not UpToDate)
//! they go to the session too, which asks the peer; a read the local disk fails goes
//! there as well ([`Input::ReadFailed`]).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use io_uring::{opcode, types};

use crate::io::{Backend, BackendInfo, Done, IoCtx, Op};

use super::Input;
use super::inbox::InputTx;

/// The key of the eventfd read (the local backend's keys are slot indexes, far below).
const WAKE_KEY: u64 = 1 << 62;
/// Requests forwarded to the session at most (then the NBD loop waits for completions).
const MAX_FORWARDED: usize = 512;

/// What the session and the NBD thread share: finished requests and the doorbell.
pub struct Completions {
    done: Mutex<Vec<Done>>,
    efd: OwnedFd,
    /// I/O is frozen by fencing: reads are parked too.
    frozen: AtomicBool,
    /// The local disk cannot serve reads: they go to the session (the peer).
    remote_reads: AtomicBool,
}

impl Completions {
    /// A new, empty queue with its eventfd.
    pub fn new() -> std::io::Result<Arc<Completions>> {
        // SAFETY: eventfd(2) with valid flags; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let efd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Arc::new(Completions {
            done: Mutex::new(Vec::new()),
            efd,
            frozen: AtomicBool::new(false),
            remote_reads: AtomicBool::new(false),
        }))
    }

    /// Called by the session: I/O freezes (`true`) or continues; continuing rings the
    /// doorbell so that parked reads start.
    pub fn set_frozen(&self, on: bool) {
        let was = self.frozen.swap(on, Ordering::AcqRel);
        if was && !on {
            super::inbox::ring_eventfd(self.efd.as_raw_fd());
        }
    }

    fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::Acquire)
    }

    /// Called by the session: reads go to the peer (`true`: the local disk is Diskless or
    /// not UpToDate) or to the local disk.
    pub fn set_remote_reads(&self, on: bool) {
        let was = self.remote_reads.swap(on, Ordering::AcqRel);
        if was != on {
            tracing::info!(
                remote = on,
                "application reads now go to the {}",
                if on { "peer" } else { "local disk" }
            );
        }
    }

    fn remote_reads(&self) -> bool {
        self.remote_reads.load(Ordering::Acquire)
    }

    /// Called by the session: these requests are finished (`batch` is emptied). One
    /// doorbell ring per batch, not per request.
    pub fn push_all(&self, batch: &mut Vec<Done>) {
        if batch.is_empty() {
            return;
        }
        if let Ok(mut q) = self.done.lock() {
            q.append(batch);
        }
        super::inbox::ring_eventfd(self.efd.as_raw_fd());
    }

    fn take(&self) -> Vec<Done> {
        self.done
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }
}

/// The backend the NBD server drives.
pub struct ReplBackend {
    local: Box<dyn Backend>,
    /// Set while the daemon restarts or stops the data path: what the data path still
    /// submits (its final flush) goes to the local disk, so that stopping it never waits
    /// for the session (which may be waiting for the daemon).
    local_only: Arc<AtomicBool>,
    session: InputTx,
    completions: Arc<Completions>,
    forwarded: usize,
    /// Reads that arrived while I/O was frozen.
    parked: Vec<(u64, Op)>,
    /// Reads submitted to the local disk: tag -> offset (a failed one is retried at the
    /// peer).
    local_reads: std::collections::HashMap<u64, u64>,
    /// Completions of the local backend, looked at before they go up.
    local_done: Vec<Done>,
    armed: bool,
    wake_buf: Box<[u8; 8]>,
}

impl ReplBackend {
    /// Wraps the local backend.
    pub fn new(
        local: Box<dyn Backend>,
        session: InputTx,
        completions: Arc<Completions>,
        local_only: Arc<AtomicBool>,
    ) -> ReplBackend {
        ReplBackend {
            local,
            local_only,
            session,
            completions,
            forwarded: 0,
            parked: Vec::new(),
            local_reads: std::collections::HashMap::new(),
            local_done: Vec::new(),
            armed: false,
            wake_buf: Box::new([0; 8]),
        }
    }

    fn arm(&mut self, ctx: &mut IoCtx<'_>) {
        if self.armed {
            return;
        }
        let entry = opcode::Read::new(
            types::Fd(self.completions.efd.as_raw_fd()),
            self.wake_buf.as_mut_ptr(),
            8,
        )
        .build();
        // SAFETY: the buffer is boxed and lives as long as self; the read completes or is
        // cancelled when the ring is torn down with the data path, which owns self.
        match unsafe { ctx.push(entry, WAKE_KEY) } {
            Ok(()) => {
                tracing::trace!(forwarded = self.forwarded, "replication doorbell armed");
                self.armed = true
            }
            Err(e) => tracing::error!(error = %e, "cannot arm the replication doorbell"),
        }
    }

    /// Sends `input` to the session; gives it back if the session has stopped.
    #[allow(clippy::result_large_err)]
    fn forward(&mut self, ctx: &mut IoCtx<'_>, input: Input) -> Result<(), Input> {
        match self.session.send(input) {
            Ok(()) => {
                self.forwarded += 1;
                self.arm(ctx);
                Ok(())
            }
            Err(std::sync::mpsc::SendError(input)) => Err(input),
        }
    }

    /// A read for the local disk; its completion is looked at in [`Self::pass_up`].
    fn submit_local_read(&mut self, ctx: &mut IoCtx<'_>, tag: u64, op: Op) {
        if let Op::Read { offset, .. } = &op {
            self.local_reads.insert(tag, *offset);
        }
        let mut done = std::mem::take(&mut self.local_done);
        self.local.submit(&mut ctx.reborrow(&mut done), tag, op);
        self.local_done = done;
        self.pass_up(ctx);
    }

    /// Hands the local backend's completions up; a read that failed goes to the session
    /// (the peer may have the data) unless the data path is local-only.
    fn pass_up(&mut self, ctx: &mut IoCtx<'_>) {
        let mut done = std::mem::take(&mut self.local_done);
        for d in done.drain(..) {
            let Some(offset) = self.local_reads.remove(&d.tag) else {
                ctx.complete(d);
                continue;
            };
            match (d.res, d.buf) {
                (Err(_), Some(buf)) if !self.local_only.load(Ordering::Acquire) => {
                    let op = Op::Read { offset, buf };
                    if let Err(Input::ReadFailed { op, .. }) =
                        self.forward(ctx, Input::ReadFailed { tag: d.tag, op })
                    {
                        ctx.complete(Done {
                            tag: d.tag,
                            res: d.res,
                            buf: op.into_buf(),
                        });
                    }
                }
                (res, buf) => ctx.complete(Done {
                    tag: d.tag,
                    res,
                    buf,
                }),
            }
        }
        self.local_done = done;
    }

    fn collect(&mut self, ctx: &mut IoCtx<'_>) {
        for d in self.completions.take() {
            self.forwarded = self.forwarded.saturating_sub(1);
            ctx.complete(d);
        }
    }
}

impl Backend for ReplBackend {
    fn info(&self) -> BackendInfo {
        self.local.info()
    }

    fn submit(&mut self, ctx: &mut IoCtx<'_>, tag: u64, op: Op) {
        if matches!(op, Op::Read { .. })
            && self.completions.is_frozen()
            && !self.local_only.load(Ordering::Acquire)
        {
            self.parked.push((tag, op));
            self.arm(ctx);
            return;
        }
        let local_only = self.local_only.load(Ordering::Acquire);
        let read = matches!(op, Op::Read { .. });
        if local_only {
            return self.local.submit(ctx, tag, op);
        }
        if read && !self.completions.remote_reads() {
            return self.submit_local_read(ctx, tag, op);
        }
        if let Err(e) = crate::io::check_op(&self.local.info(), &op) {
            ctx.complete(Done {
                tag,
                res: Err(e),
                buf: op.into_buf(),
            });
            return;
        }
        match self.forward(ctx, Input::App { tag, op }) {
            Ok(()) => {}
            // The session has stopped (the disk is being detached): what is left, such as
            // the data path's final flush, is local.
            Err(Input::App { op, .. }) => self.local.submit(ctx, tag, op),
            Err(_) => {}
        }
    }

    fn complete(&mut self, ctx: &mut IoCtx<'_>, key: u64, res: i32) {
        if key != WAKE_KEY {
            let mut done = std::mem::take(&mut self.local_done);
            self.local.complete(&mut ctx.reborrow(&mut done), key, res);
            self.local_done = done;
            return self.pass_up(ctx);
        }
        self.armed = false;
        tracing::trace!(res, forwarded = self.forwarded, "replication doorbell rang");
        self.collect(ctx);
        if !self.completions.is_frozen() {
            for (tag, op) in std::mem::take(&mut self.parked) {
                self.submit(ctx, tag, op);
            }
        }
        if self.forwarded > 0 || !self.parked.is_empty() {
            self.arm(ctx);
        }
    }

    fn in_flight(&self) -> usize {
        // The doorbell read is armed only while requests are forwarded: every forwarded
        // request rings it once answered, so it never outlives them.
        self.local.in_flight() + self.forwarded + self.parked.len()
    }

    fn has_room(&self) -> bool {
        self.local.has_room() && self.forwarded < MAX_FORWARDED
    }
}
