//! A node's storage: the data disk (the real [`MemDisk`] with its volatile cache and torn
//! crashes, behind the real [`FaultBackend`] for EIO) and the metadata that survives a
//! crash (superblock fields, on-disk bitmap, activity-log slots).
//!
//! Every 4 KiB block the simulation writes carries its write's id and the block number, so
//! any image can be read back as a vector of versions ([`version_of`]); the oracle reasons
//! on versions, the disk stores real bytes.

use urbd::core::MdUpdate;
use urbd::io::{AlignedBuf, Errno, FaultBackend, Faults, MemBackend, MemDisk, Op, SyncDriver};
use urbd::meta::{AlTransaction, Bitmap};

/// Bytes per block (the bitmap's and the torn write's granularity).
pub const BLOCK: u64 = 4096;
/// The version of a block nobody wrote (zeroes).
pub const INITIAL: u64 = 0;
/// The version of a block whose bytes no write produced.
pub const CORRUPT: u64 = u64::MAX;

/// The bytes write `write` puts into block `block`.
pub fn block_data(write: u64, block: u64) -> Vec<u8> {
    let mut unit = [0u8; 16];
    unit[..8].copy_from_slice(&write.to_le_bytes());
    unit[8..].copy_from_slice(&block.to_le_bytes());
    unit.repeat((BLOCK / 16) as usize)
}

/// A block of zeroes.
const ZERO: [u8; BLOCK as usize] = [0; BLOCK as usize];

/// Which write's data block `block` holds (`INITIAL`, a write id, or `CORRUPT`).
pub fn version_of(block: u64, data: &[u8]) -> u64 {
    if data == ZERO {
        return INITIAL;
    }
    let Some(head) = data.get(..16) else {
        return CORRUPT;
    };
    let mut w = [0u8; 8];
    let mut b = [0u8; 8];
    w.copy_from_slice(&head[..8]);
    b.copy_from_slice(&head[8..]);
    let (write, at) = (u64::from_le_bytes(w), u64::from_le_bytes(b));
    // Periodic with period 16 (compared as slices: memcmp, fast even unoptimised).
    let periodic = data.len() == BLOCK as usize && data[16..] == data[..data.len() - 16];
    if at != block || write == INITIAL || !periodic {
        return CORRUPT;
    }
    write
}

/// The data disk of one node.
pub struct SimDisk {
    mem: MemDisk,
    backend: FaultBackend<MemBackend>,
    faults: Faults,
    driver: Option<SyncDriver>,
    /// The version of every block as a reader sees it now (cache included).
    versions: Vec<u64>,
    /// Blocks written since the last flush (the only ones a crash can change).
    dirty: std::collections::BTreeSet<u64>,
}

impl SimDisk {
    /// A zeroed disk of `size` bytes.
    pub fn new(size: u64) -> SimDisk {
        let mem = MemDisk::new(size);
        let (backend, faults) = FaultBackend::new(mem.backend());
        SimDisk {
            mem,
            backend,
            faults,
            driver: Some(SyncDriver::new().expect("io_uring ring for the in-memory disk driver")),
            versions: vec![INITIAL; (size / BLOCK) as usize],
            dirty: Default::default(),
        }
    }

    /// A stand-in while a node's disk is moved (no ring, no blocks).
    pub fn placeholder() -> SimDisk {
        let mem = MemDisk::new(0);
        let (backend, faults) = FaultBackend::new(mem.backend());
        SimDisk {
            mem,
            backend,
            faults,
            driver: None,
            versions: Vec::new(),
            dirty: Default::default(),
        }
    }

    /// The fault switches (EIO).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Version of every block now.
    pub fn versions(&self) -> &[u64] {
        &self.versions
    }

    fn run(&mut self, op: Op) -> (Result<(), Errno>, Option<AlignedBuf>) {
        match self.driver.as_mut().map(|d| d.run(&mut self.backend, op)) {
            Some(Ok(d)) => (d.res, d.buf),
            _ => (Err(Errno::EIO), None),
        }
    }

    /// Writes `data` at `offset` (into the volatile cache unless `fua`).
    pub fn write(&mut self, offset: u64, data: &[u8], fua: bool) -> Result<(), Errno> {
        let op = Op::Write {
            offset,
            buf: AlignedBuf::from_slice(data),
            fua,
        };
        let (res, _) = self.run(op);
        if res.is_ok() {
            for (i, chunk) in data.chunks(BLOCK as usize).enumerate() {
                let b = offset / BLOCK + i as u64;
                if let Some(v) = self.versions.get_mut(b as usize) {
                    *v = version_of(b, chunk);
                }
                if fua {
                    self.dirty.remove(&b);
                } else {
                    self.dirty.insert(b);
                }
            }
        }
        res
    }

    /// Writes zeroes.
    pub fn zero(&mut self, offset: u64, len: u64) -> Result<(), Errno> {
        let (res, _) = self.run(Op::Zero {
            offset,
            len,
            may_trim: false,
        });
        if res.is_ok() {
            for b in offset / BLOCK..(offset + len).div_ceil(BLOCK) {
                if let Some(v) = self.versions.get_mut(b as usize) {
                    *v = INITIAL;
                }
                self.dirty.insert(b);
            }
        }
        res
    }

    /// Reads `len` bytes at `offset`.
    pub fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, Errno> {
        let (res, buf) = self.run(Op::Read {
            offset,
            buf: AlignedBuf::zeroed(len as usize),
        });
        res.map(|()| buf.map(|b| b.as_slice().to_vec()).unwrap_or_default())
    }

    /// Flushes the volatile cache.
    pub fn flush(&mut self) -> Result<(), Errno> {
        let res = self.run(Op::Flush).0;
        if res.is_ok() {
            self.dirty.clear();
        }
        res
    }

    /// Power loss: the cache is lost; with `tear`, each unflushed 4 KiB page reaches the
    /// disk or not at random (seeded). Faults are cleared (a new boot).
    pub fn crash(&mut self, tear: Option<u64>) {
        self.mem.crash(tear);
        self.faults.clear();
        for b in std::mem::take(&mut self.dirty) {
            let d = self.mem.read(b * BLOCK, BLOCK as usize);
            self.versions[b as usize] = version_of(b, &d);
        }
    }

    /// The bytes a reader sees now in `offset..offset+len` (bypassing the fault
    /// injector).
    pub fn read_raw(&self, offset: u64, len: u64) -> Vec<u8> {
        self.mem.read(offset, len as usize)
    }
}

/// What of the metadata survives a crash: every write the host does to it is synchronous
/// (the daemon writes and syncs the superblock, bitmap ranges and AL transactions before
/// it goes on), so it is modelled as durable at once.
#[derive(Debug, Clone)]
pub struct DurableMeta {
    /// The superblock's core-owned fields.
    pub sb: MdUpdate,
    /// The on-disk bitmap.
    pub bitmap: Bitmap,
    /// The activity log's slots (extent per slot, `LC_FREE` when empty).
    pub al_slots: Vec<u32>,
}

impl DurableMeta {
    /// Records an AL transaction: first the bitmap blocks of the evicted extents (from
    /// `live`, the bitmap in memory), then the new slots.
    pub fn write_al(&mut self, live: &Bitmap, tr: &AlTransaction, evicted: &[u32]) {
        const BITS_PER_EXTENT: u64 = 1024;
        for &e in evicted {
            let first = u64::from(e) * BITS_PER_EXTENT;
            for bit in first..(first + BITS_PER_EXTENT).min(live.bits()) {
                let _ = if live.is_set(bit) {
                    self.bitmap.set_range(bit, 1)
                } else {
                    self.bitmap.clear_range(bit, 1)
                };
            }
        }
        for u in tr.updates().take(usize::from(tr.n_updates)) {
            if let Some(s) = self.al_slots.get_mut(usize::from(u.slot)) {
                *s = u.extent;
            }
        }
    }

    /// drbdmeta's `apply-al` after an unclean stop: a node that was Primary marks every
    /// extent of its activity log out of sync; the log starts empty.
    pub fn apply_al(&mut self) {
        if self.sb.flags.is_primary() {
            for &e in &self.al_slots {
                if e != urbd::meta::al::LC_FREE {
                    self.bitmap.set_al_extent(e);
                }
            }
        }
        for s in &mut self.al_slots {
            *s = urbd::meta::al::LC_FREE;
        }
    }
}
