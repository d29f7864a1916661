//! Block backends for the data path.
//!
//! A backend is a table of small operations, as nbdkit's plugins are: [`Backend::info`]
//! answers size and capabilities (`can_trim`, `can_zero`, `can_fua`, `can_flush`,
//! `is_rotational`), and [`Backend::submit`] starts one [`Op`] — read, write (optionally
//! FUA), flush, trim or write-zeroes. Results come back as [`Done`] entries, tagged with the
//! caller's tag, in any order.
//!
//! Backends do not own a thread or a ring. The I/O thread owns one io_uring and lends it to
//! the backend through an [`IoCtx`] on every call; a backend that talks to the kernel queues
//! SQEs on it (their `user_data` carries [`BACKEND_KEY_BIT`]) and gets the matching CQEs
//! back through [`Backend::complete`]. So sockets and disk share one ring per I/O thread and
//! one `io_uring_enter` submits both. A backend that needs no kernel (memory) completes
//! synchronously by pushing [`Done`] entries into the context.
//!
//! What is here:
//! - [`UringBackend`]: regular files and block devices through io_uring, O_DIRECT by
//!   default (or the page cache in [`CacheMode::Cached`], for comparison with nbdkit).
//! - [`MemDisk`]/[`MemBackend`]: a sparse in-memory disk with a volatile write cache, so a
//!   simulated crash loses what was not flushed (optionally tearing writes at 4 KiB).
//! - [`FaultBackend`]: wraps any backend and injects EIO on chosen sectors or operations.
//! - [`Aligned`]: wraps a backend with a logical block size and makes any byte range work
//!   (read-modify-write through an aligned bounce buffer, serialized against overlapping
//!   writes in flight).
//! - [`SyncDriver`]: runs ops to completion on a private ring (tests, tools, metadata).

mod align;
mod blkdev;
mod buf;
mod driver;
mod fault;
mod mem;
mod uring;

pub use align::Aligned;
pub use buf::{AlignedBuf, BUF_ALIGN, BufPool};
pub use driver::{BACKEND_KEY_BIT, IoCtx, SyncDriver, new_ring};
pub use fault::{
    FAULT_INJECTION_ENV, FaultBackend, FaultPlan, Faults, faults_for, injection_enabled, wrap_for,
};
pub use mem::{MemBackend, MemDisk};
pub use uring::{BackendSpec, CacheMode, UringBackend, open_backend};

use std::fmt;

/// A positive Linux errno carried by a failed operation. Unknown values survive as-is.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// Operation not permitted.
    pub const EPERM: Errno = Errno(libc::EPERM);
    /// I/O error.
    pub const EIO: Errno = Errno(libc::EIO);
    /// Out of memory.
    pub const ENOMEM: Errno = Errno(libc::ENOMEM);
    /// Invalid argument (misaligned or out-of-range op).
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    /// No space left.
    pub const ENOSPC: Errno = Errno(libc::ENOSPC);
    /// Operation not supported.
    pub const EOPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);
    /// Operation canceled (a linked or shut-down op).
    pub const ECANCELED: Errno = Errno(libc::ECANCELED);

    /// From an io_uring CQE result (negative errno).
    pub fn from_res(res: i32) -> Errno {
        Errno(res.saturating_neg())
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Errno({} {})",
            self.0,
            std::io::Error::from_raw_os_error(self.0)
        )
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

/// One operation on a backend. Offsets and lengths are in bytes; a backend whose
/// [`BackendInfo::block_size`] is above 1 requires them to be multiples of it (wrap it in
/// [`Aligned`] to accept any range).
#[derive(Debug)]
pub enum Op {
    /// Fill `buf` (all of its length) from `offset`.
    Read {
        /// Byte offset.
        offset: u64,
        /// Destination; its length is the read length.
        buf: AlignedBuf,
    },
    /// Write all of `buf` at `offset`; with `fua` the data is durable when the op completes.
    Write {
        /// Byte offset.
        offset: u64,
        /// Data.
        buf: AlignedBuf,
        /// Force unit access (RWF_DSYNC).
        fua: bool,
    },
    /// Make every write completed before this op was submitted durable (fdatasync). Does
    /// not wait for writes still in flight: ordering is the caller's job, since io_uring
    /// does not order operations.
    Flush,
    /// Discard a range; its content afterwards is unspecified (advisory, may do nothing).
    Trim {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u64,
    },
    /// Make a range read as zeroes; with `may_trim` the backend may deallocate it.
    Zero {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u64,
        /// False for NBD's NO_HOLE flag.
        may_trim: bool,
    },
}

impl Op {
    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Read { .. } => "read",
            Op::Write { .. } => "write",
            Op::Flush => "flush",
            Op::Trim { .. } => "trim",
            Op::Zero { .. } => "zero",
        }
    }

    /// The byte range the op touches (`None` for flush).
    pub fn range(&self) -> Option<(u64, u64)> {
        match self {
            Op::Read { offset, buf } | Op::Write { offset, buf, .. } => {
                Some((*offset, buf.len() as u64))
            }
            Op::Trim { offset, len } | Op::Zero { offset, len, .. } => Some((*offset, *len)),
            Op::Flush => None,
        }
    }

    /// True for ops that change data.
    pub fn is_write(&self) -> bool {
        matches!(self, Op::Write { .. } | Op::Trim { .. } | Op::Zero { .. })
    }

    /// Takes the buffer out of a read or write.
    pub fn into_buf(self) -> Option<AlignedBuf> {
        match self {
            Op::Read { buf, .. } | Op::Write { buf, .. } => Some(buf),
            _ => None,
        }
    }
}

/// A finished op: its tag, its result and, for reads and writes, the buffer back.
#[derive(Debug)]
pub struct Done {
    /// The tag given to [`Backend::submit`].
    pub tag: u64,
    /// Success, or the errno of the first failure.
    pub res: Result<(), Errno>,
    /// The op's buffer (filled for a successful read).
    pub buf: Option<AlignedBuf>,
}

/// Size and capabilities of a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    /// Size in bytes.
    pub size: u64,
    /// Logical block size: offsets and lengths of ops must be multiples of it (1 = any).
    pub block_size: u32,
    /// Preferred I/O granularity (NBD's preferred block size).
    pub preferred_block: u32,
    /// Trim does something useful.
    pub can_trim: bool,
    /// Write-zeroes is cheaper than writing zeroes.
    pub can_zero: bool,
    /// FUA is native (otherwise a flush follows the write).
    pub can_fua: bool,
    /// Flush is meaningful (a volatile cache exists).
    pub can_flush: bool,
    /// Spinning media (NBD_FLAG_ROTATIONAL).
    pub is_rotational: bool,
    /// Writes are refused with EPERM.
    pub read_only: bool,
}

/// A block backend: a table of small asynchronous operations (see the module doc).
///
/// Contract: every submitted op yields exactly one [`Done`], pushed into the context of the
/// `submit` or of a later `complete` call. A backend never blocks the I/O thread for long
/// (block-device discards via ioctl are the one synchronous exception, documented there).
pub trait Backend: Send {
    /// Size and capabilities; constant for the backend's life.
    fn info(&self) -> BackendInfo;

    /// Starts `op`. Errors are reported through a [`Done`], never returned.
    fn submit(&mut self, ctx: &mut IoCtx<'_>, tag: u64, op: Op);

    /// Handles a CQE whose `user_data` had [`BACKEND_KEY_BIT`] set; `key` is `user_data`
    /// without that bit, `res` the CQE result.
    fn complete(&mut self, ctx: &mut IoCtx<'_>, key: u64, res: i32);

    /// Ops submitted and not yet done.
    fn in_flight(&self) -> usize;

    /// False when the backend's slot table is full: the caller should stop taking new
    /// requests until something completes (ops submitted anyway are queued, not lost).
    fn has_room(&self) -> bool {
        true
    }
}

impl<B: Backend + ?Sized> Backend for Box<B> {
    fn info(&self) -> BackendInfo {
        (**self).info()
    }
    fn submit(&mut self, ctx: &mut IoCtx<'_>, tag: u64, op: Op) {
        (**self).submit(ctx, tag, op)
    }
    fn complete(&mut self, ctx: &mut IoCtx<'_>, key: u64, res: i32) {
        (**self).complete(ctx, key, res)
    }
    fn in_flight(&self) -> usize {
        (**self).in_flight()
    }
    fn has_room(&self) -> bool {
        (**self).has_room()
    }
}

/// Checks an op against a backend's size and block size; the error a leaf backend reports.
pub(crate) fn check_op(info: &BackendInfo, op: &Op) -> Result<(), Errno> {
    if info.read_only && op.is_write() {
        return Err(Errno::EPERM);
    }
    if let Some((off, len)) = op.range() {
        let end = off.checked_add(len).ok_or(Errno::EINVAL)?;
        if end > info.size {
            return Err(if op.is_write() {
                Errno::ENOSPC
            } else {
                Errno::EINVAL
            });
        }
        let bs = u64::from(info.block_size.max(1));
        if off % bs != 0 || len % bs != 0 {
            return Err(Errno::EINVAL);
        }
    }
    Ok(())
}

pub(crate) use driver::push_sqe as driver_push;
