//! Regular files and block devices through io_uring.
//!
//! Reads and writes are IORING_OP_READ/WRITE on an fd opened with O_DIRECT (the default,
//! [`CacheMode::Direct`]) so that a completed write is in the device, not in the page
//! cache; FUA is RWF_DSYNC on the write itself; flush is IORING_OP_FSYNC with DATASYNC.
//! Trim and write-zeroes are IORING_OP_FALLOCATE (PUNCH_HOLE / ZERO_RANGE, both with
//! KEEP_SIZE, which block devices also accept); where the filesystem or device refuses,
//! write-zeroes falls back to writing a shared zero buffer, and trim (advisory) succeeds
//! doing nothing. Trim on a block device is a BLKDISCARD ioctl, done synchronously on the
//! I/O thread because io_uring has no portable discard opcode.
//!
//! Every op lives in a slot of a fixed table; the slot index is the SQE key, so a CQE finds
//! its op without a lookup structure. Short transfers are resubmitted for the rest. When
//! every slot is busy, new ops wait in a FIFO and [`Backend::has_room`] turns false, which
//! is the data path's backpressure.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

use io_uring::{opcode, types};

use super::{Aligned, AlignedBuf, Backend, BackendInfo, Done, Errno, IoCtx, Op, blkdev};

/// Default number of slots (ops in flight to the kernel).
pub const DEFAULT_SLOTS: usize = 128;
/// Zero-fill fallback writes this much per SQE.
const ZERO_CHUNK: usize = 1 << 20;
/// O_DIRECT alignment used for regular files (safe for every filesystem block size).
const FILE_DIRECT_BLOCK: u32 = 4096;

/// Page cache or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// O_DIRECT: completed writes are on the device (its volatile cache aside).
    #[default]
    Direct,
    /// Through the page cache, like nbdkit's file plugin: only for comparisons.
    Cached,
}

/// Which file or device to open, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// Regular file or block device.
    pub path: PathBuf,
    /// O_DIRECT or page cache.
    pub cache: CacheMode,
    /// Open read-only; writes fail with EPERM.
    pub read_only: bool,
    /// Slot table size.
    pub slots: usize,
    /// Export at most this many bytes from the start (a data disk whose end holds internal
    /// metadata, or a device larger than the replicated size). `None`: the whole device.
    pub size_limit: Option<u64>,
}

impl BackendSpec {
    /// O_DIRECT, read-write, default slots.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cache: CacheMode::Direct,
            read_only: false,
            slots: DEFAULT_SLOTS,
            size_limit: None,
        }
    }
}

/// Opens `spec` as a backend that accepts any byte range: the [`UringBackend`] wrapped in
/// [`Aligned`] when its block size is above 1.
pub fn open_backend(spec: &BackendSpec) -> io::Result<Box<dyn Backend>> {
    let be = UringBackend::open(spec)?;
    if be.info().block_size > 1 {
        Ok(Box::new(Aligned::new(be)))
    } else {
        Ok(Box::new(be))
    }
}

#[derive(Debug)]
enum State {
    Read {
        buf: AlignedBuf,
        offset: u64,
        done: usize,
    },
    Write {
        buf: AlignedBuf,
        offset: u64,
        done: usize,
        fua: bool,
    },
    Flush,
    Fallocate {
        offset: u64,
        len: u64,
        mode: i32,
        zero: bool,
    },
    ZeroWrite {
        offset: u64,
        end: u64,
    },
}

#[derive(Debug)]
struct Slot {
    tag: u64,
    state: State,
}

/// A file or block device on io_uring; see the module doc.
pub struct UringBackend {
    file: File,
    info: BackendInfo,
    is_blockdev: bool,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    waiting: VecDeque<(u64, Op)>,
    zero_buf: AlignedBuf,
    /// Cleared after the first ZERO_RANGE refusal, so later zeroes go straight to writes.
    zero_range_ok: bool,
    punch_ok: bool,
}

impl UringBackend {
    /// Opens a file or block device.
    pub fn open(spec: &BackendSpec) -> io::Result<Self> {
        let mut oo = OpenOptions::new();
        oo.read(true).write(!spec.read_only);
        if spec.cache == CacheMode::Direct {
            oo.custom_flags(libc::O_DIRECT);
        }
        let file = oo.open(&spec.path)?;
        let meta = file.metadata()?;
        let fd = file.as_raw_fd();
        let is_blockdev = meta.file_type().is_block_device();
        let (mut size, mut block_size, can_trim, is_rotational) = if is_blockdev {
            (
                blkdev::size(fd)?,
                blkdev::logical_block_size(fd)?.max(512),
                blkdev::can_discard(meta.rdev()),
                blkdev::is_rotational(fd),
            )
        } else if meta.is_file() {
            (meta.len(), FILE_DIRECT_BLOCK, true, false)
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is neither a file nor a block device",
                    spec.path.display()
                ),
            ));
        };
        if spec.cache == CacheMode::Cached {
            block_size = 1;
        }
        if let Some(limit) = spec.size_limit {
            size = size.min(limit);
        }
        let bs = u64::from(block_size);
        if size % bs != 0 {
            tracing::warn!(
                path = %spec.path.display(),
                size,
                "size is not a multiple of the {block_size}-byte block; exporting the whole blocks only"
            );
            size -= size % bs;
        }
        let slots = spec.slots.max(1);
        Ok(Self {
            file,
            info: BackendInfo {
                size,
                block_size,
                preferred_block: block_size.max(4096),
                can_trim,
                can_zero: true,
                can_fua: true,
                can_flush: true,
                is_rotational,
                read_only: spec.read_only,
            },
            is_blockdev,
            slots: (0..slots).map(|_| None).collect(),
            free: (0..slots).rev().collect(),
            waiting: VecDeque::new(),
            zero_buf: AlignedBuf::zeroed(ZERO_CHUNK),
            zero_range_ok: true,
            punch_ok: true,
        })
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn finish(&mut self, ctx: &mut IoCtx<'_>, idx: usize, res: Result<(), Errno>) {
        let Some(slot) = self.slots.get_mut(idx).and_then(Option::take) else {
            return;
        };
        self.free.push(idx);
        let buf = match slot.state {
            State::Read { buf, .. } | State::Write { buf, .. } => Some(buf),
            _ => None,
        };
        ctx.complete(Done {
            tag: slot.tag,
            res,
            buf,
        });
        // A slot is free: start the oldest waiting op.
        if let Some((tag, op)) = self.waiting.pop_front() {
            self.start(ctx, tag, op);
        }
    }

    fn start(&mut self, ctx: &mut IoCtx<'_>, tag: u64, op: Op) {
        if let Err(e) = super::check_op(&self.info, &op) {
            ctx.complete(Done {
                tag,
                res: Err(e),
                buf: op.into_buf(),
            });
            return;
        }
        let state = match op {
            Op::Read { offset, buf } => State::Read {
                buf,
                offset,
                done: 0,
            },
            Op::Write { offset, buf, fua } => State::Write {
                buf,
                offset,
                done: 0,
                fua,
            },
            Op::Flush => State::Flush,
            Op::Trim { offset, len } => {
                if len == 0 || !self.info.can_trim {
                    ctx.complete(Done {
                        tag,
                        res: Ok(()),
                        buf: None,
                    });
                    return;
                }
                if self.is_blockdev {
                    // Synchronous: see the module doc.
                    let res = match blkdev::discard(self.fd(), offset, len) {
                        Ok(()) => Ok(()),
                        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
                        Err(e) => Err(Errno(e.raw_os_error().unwrap_or(libc::EIO))),
                    };
                    ctx.complete(Done {
                        tag,
                        res,
                        buf: None,
                    });
                    return;
                }
                State::Fallocate {
                    offset,
                    len,
                    mode: libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    zero: false,
                }
            }
            Op::Zero {
                offset,
                len,
                may_trim,
            } => {
                if len == 0 {
                    ctx.complete(Done {
                        tag,
                        res: Ok(()),
                        buf: None,
                    });
                    return;
                }
                if may_trim && self.punch_ok {
                    State::Fallocate {
                        offset,
                        len,
                        mode: libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        zero: true,
                    }
                } else if self.zero_range_ok {
                    State::Fallocate {
                        offset,
                        len,
                        mode: libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                        zero: true,
                    }
                } else {
                    State::ZeroWrite {
                        offset,
                        end: offset + len,
                    }
                }
            }
        };
        let Some(idx) = self.free.pop() else {
            // Unreachable when called from submit (it checks); keep the op anyway.
            self.waiting.push_back((tag, rebuild(state)));
            return;
        };
        self.slots[idx] = Some(Slot { tag, state });
        self.issue(ctx, idx);
    }

    /// Queues the SQE for the slot's current state.
    fn issue(&mut self, ctx: &mut IoCtx<'_>, idx: usize) {
        let fd = types::Fd(self.fd());
        let zero_ptr = self.zero_buf.as_ptr();
        let Some(slot) = self.slots[idx].as_mut() else {
            return;
        };
        let entry = match &mut slot.state {
            State::Read { buf, offset, done } => {
                let len = (buf.len() - *done) as u32;
                // SAFETY: in bounds of the buffer.
                let ptr = unsafe { buf.as_mut_ptr().add(*done) };
                opcode::Read::new(fd, ptr, len)
                    .offset(*offset + *done as u64)
                    .build()
            }
            State::Write {
                buf,
                offset,
                done,
                fua,
            } => {
                let len = (buf.len() - *done) as u32;
                // SAFETY: in bounds of the buffer.
                let ptr = unsafe { buf.as_ptr().add(*done) };
                opcode::Write::new(fd, ptr, len)
                    .offset(*offset + *done as u64)
                    .rw_flags(if *fua { libc::RWF_DSYNC } else { 0 })
                    .build()
            }
            State::Flush => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            State::Fallocate {
                offset, len, mode, ..
            } => opcode::Fallocate::new(fd, *len)
                .offset(*offset)
                .mode(*mode)
                .build(),
            State::ZeroWrite { offset, end } => {
                let len = (*end - *offset).min(ZERO_CHUNK as u64) as u32;
                opcode::Write::new(fd, zero_ptr, len)
                    .offset(*offset)
                    .build()
            }
        };
        // SAFETY: the slot owns its buffer until `finish`; the zero buffer and the file live
        // as long as the backend, which the I/O thread drains before dropping (and Drop
        // leaks the buffers of ops still in flight).
        if let Err(e) = unsafe { ctx.push(entry, idx as u64) } {
            tracing::error!("cannot queue an SQE: {e}");
            self.finish(ctx, idx, Err(Errno::EIO));
        }
    }
}

/// Turns a slot state back into an op (only for the defensive no-slot path).
fn rebuild(state: State) -> Op {
    match state {
        State::Read { buf, offset, .. } => Op::Read { offset, buf },
        State::Write {
            buf, offset, fua, ..
        } => Op::Write { offset, buf, fua },
        State::Flush => Op::Flush,
        State::Fallocate {
            offset,
            len,
            mode,
            zero,
        } => {
            if zero {
                Op::Zero {
                    offset,
                    len,
                    may_trim: mode & libc::FALLOC_FL_PUNCH_HOLE != 0,
                }
            } else {
                Op::Trim { offset, len }
            }
        }
        State::ZeroWrite { offset, end } => Op::Zero {
            offset,
            len: end - offset,
            may_trim: false,
        },
    }
}

impl Backend for UringBackend {
    fn info(&self) -> BackendInfo {
        self.info.clone()
    }

    fn submit(&mut self, ctx: &mut IoCtx<'_>, tag: u64, op: Op) {
        if self.free.is_empty() || !self.waiting.is_empty() {
            self.waiting.push_back((tag, op));
            return;
        }
        self.start(ctx, tag, op);
    }

    fn complete(&mut self, ctx: &mut IoCtx<'_>, key: u64, res: i32) {
        let idx = key as usize;
        let Some(slot) = self.slots.get_mut(idx).and_then(Option::as_mut) else {
            tracing::warn!(key, "CQE for an empty slot");
            return;
        };
        let outcome: Option<Result<(), Errno>> = match &mut slot.state {
            State::Read { buf, done, .. } => {
                if res < 0 {
                    Some(Err(Errno::from_res(res)))
                } else if res == 0 {
                    // EOF inside the exported size: the file shrank under us.
                    Some(Err(Errno::EIO))
                } else {
                    *done += res as usize;
                    (*done >= buf.len()).then_some(Ok(()))
                }
            }
            State::Write { buf, done, .. } => {
                if res < 0 {
                    Some(Err(Errno::from_res(res)))
                } else if res == 0 {
                    Some(Err(Errno::EIO))
                } else {
                    *done += res as usize;
                    (*done >= buf.len()).then_some(Ok(()))
                }
            }
            State::Flush => Some(if res < 0 {
                Err(Errno::from_res(res))
            } else {
                Ok(())
            }),
            State::Fallocate {
                offset,
                len,
                mode,
                zero,
            } => {
                let refused = res == -libc::EOPNOTSUPP || res == -libc::EINVAL;
                if res >= 0 {
                    Some(Ok(()))
                } else if refused && !*zero {
                    // Trim is advisory.
                    self.info.can_trim = false;
                    Some(Ok(()))
                } else if refused && *mode & libc::FALLOC_FL_PUNCH_HOLE != 0 {
                    self.punch_ok = false;
                    *mode = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
                    None
                } else if refused {
                    self.zero_range_ok = false;
                    slot.state = State::ZeroWrite {
                        offset: *offset,
                        end: *offset + *len,
                    };
                    None
                } else {
                    Some(Err(Errno::from_res(res)))
                }
            }
            State::ZeroWrite { offset, end } => {
                if res < 0 {
                    Some(Err(Errno::from_res(res)))
                } else if res == 0 {
                    Some(Err(Errno::EIO))
                } else {
                    *offset += res as u64;
                    (*offset >= *end).then_some(Ok(()))
                }
            }
        };
        match outcome {
            Some(res) => self.finish(ctx, idx, res),
            None => self.issue(ctx, idx),
        }
    }

    fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len() + self.waiting.len()
    }

    fn has_room(&self) -> bool {
        !self.free.is_empty() && self.waiting.is_empty()
    }
}

impl Drop for UringBackend {
    fn drop(&mut self) {
        // The kernel may still write into buffers of ops in flight: leak them rather than
        // free memory under a DMA.
        let mut busy = false;
        for slot in self.slots.iter_mut().filter_map(Option::take) {
            busy = true;
            if let State::Read { buf, .. } | State::Write { buf, .. } = slot.state {
                std::mem::forget(buf);
            }
        }
        if busy {
            tracing::warn!("io_uring backend dropped with ops in flight; leaking their buffers");
            std::mem::forget(std::mem::replace(&mut self.zero_buf, AlignedBuf::zeroed(0)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::SyncDriver;

    fn temp_file(size: u64) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(size).unwrap();
        f
    }

    #[test]
    fn direct_file_read_write_flush_zero_trim() {
        let f = temp_file(1 << 20);
        let mut be = UringBackend::open(&BackendSpec::new(f.path())).unwrap();
        assert_eq!(be.info().block_size, 4096);
        let mut d = SyncDriver::new().unwrap();
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        d.write(&mut be, 4096, &data, true).unwrap().unwrap();
        assert_eq!(d.read(&mut be, 4096, 8192).unwrap().unwrap(), data);
        d.run(&mut be, Op::Flush).unwrap().res.unwrap();
        // Misaligned ops are refused by the raw backend.
        assert_eq!(d.read(&mut be, 1, 4096).unwrap(), Err(Errno::EINVAL));
        for may_trim in [true, false] {
            d.write(&mut be, 0, &[9u8; 16384], false).unwrap().unwrap();
            let r = d
                .run(
                    &mut be,
                    Op::Zero {
                        offset: 4096,
                        len: 8192,
                        may_trim,
                    },
                )
                .unwrap();
            r.res.unwrap();
            let back = d.read(&mut be, 0, 16384).unwrap().unwrap();
            assert!(back[..4096].iter().all(|&b| b == 9));
            assert!(back[4096..12288].iter().all(|&b| b == 0));
            assert!(back[12288..].iter().all(|&b| b == 9));
        }
        d.run(
            &mut be,
            Op::Trim {
                offset: 0,
                len: 4096,
            },
        )
        .unwrap()
        .res
        .unwrap();
        assert_eq!(
            d.write(&mut be, 1 << 20, &[0u8; 4096], false).unwrap(),
            Err(Errno::ENOSPC)
        );
        // The bytes are really in the file.
        let on_disk = std::fs::read(f.path()).unwrap();
        assert!(on_disk[12288..16384].iter().all(|&b| b == 9));
    }

    #[test]
    fn backpressure_queues_beyond_slots() {
        let f = temp_file(1 << 20);
        let mut spec = BackendSpec::new(f.path());
        spec.slots = 2;
        let mut be = UringBackend::open(&spec).unwrap();
        let mut d = SyncDriver::new().unwrap();
        for i in 0..16u64 {
            d.submit(
                &mut be,
                i,
                Op::Write {
                    offset: i * 4096,
                    buf: AlignedBuf::from_slice(&[i as u8; 4096]),
                    fua: false,
                },
            );
        }
        assert!(!be.has_room());
        let mut seen = Vec::new();
        while let Some(done) = d.next(&mut be).unwrap() {
            done.res.unwrap();
            seen.push(done.tag);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..16).collect::<Vec<_>>());
        assert!(be.has_room());
        for i in 0..16u64 {
            assert_eq!(
                d.read(&mut be, i * 4096, 4096).unwrap().unwrap(),
                vec![i as u8; 4096]
            );
        }
    }

    #[test]
    fn cached_mode_has_no_alignment() {
        let f = temp_file(10_000);
        let mut spec = BackendSpec::new(f.path());
        spec.cache = CacheMode::Cached;
        let mut be = UringBackend::open(&spec).unwrap();
        assert_eq!(be.info().block_size, 1);
        assert_eq!(be.info().size, 10_000);
        let mut d = SyncDriver::new().unwrap();
        d.write(&mut be, 9_999, b"z", false).unwrap().unwrap();
        assert_eq!(d.read(&mut be, 9_998, 2).unwrap().unwrap(), b"\0z");
    }
}
