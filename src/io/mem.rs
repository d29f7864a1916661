//! A sparse in-memory disk with a volatile write cache.
//!
//! It models a disk the way crash-consistency reasoning needs: a write lands in a volatile
//! cache and is acknowledged; FUA or a flush makes it durable; [`MemDisk::crash`] throws the
//! cache away, optionally letting a seeded random subset of its 4 KiB pages reach the
//! durable image first (a torn write). Storage is sparse (pages of zeroes are not stored),
//! so a large export costs only what is written.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{AlignedBuf, Backend, BackendInfo, Done, Errno, IoCtx, Op, check_op};

/// Granularity of storage and of torn writes.
pub const PAGE: usize = 4096;
const PAGE64: u64 = PAGE as u64;

type Page = Box<[u8; PAGE]>;

#[derive(Debug, Default)]
struct State {
    size: u64,
    durable: HashMap<u64, Page>,
    /// Pages written since the last flush; `None` is a page of zeroes.
    cache: HashMap<u64, Option<Page>>,
    flushes: u64,
}

impl State {
    fn page(&self, idx: u64) -> Option<&[u8; PAGE]> {
        match self.cache.get(&idx) {
            Some(p) => p.as_deref(),
            None => self.durable.get(&idx).map(|p| &**p),
        }
    }

    fn read(&self, offset: u64, out: &mut [u8]) {
        let mut pos = 0usize;
        while pos < out.len() {
            let abs = offset + pos as u64;
            let (idx, within) = (abs / PAGE64, (abs % PAGE64) as usize);
            let n = (PAGE - within).min(out.len() - pos);
            match self.page(idx) {
                Some(p) => out[pos..pos + n].copy_from_slice(&p[within..within + n]),
                None => out[pos..pos + n].fill(0),
            }
            pos += n;
        }
    }

    /// Writes `data` (or zeroes when `None`) into the cache.
    fn write(&mut self, offset: u64, len: u64, data: Option<&[u8]>) -> Vec<u64> {
        let mut touched = Vec::new();
        let mut pos = 0u64;
        while pos < len {
            let abs = offset + pos;
            let (idx, within) = (abs / PAGE64, (abs % PAGE64) as usize);
            let n = (PAGE64 - within as u64).min(len - pos) as usize;
            let whole = within == 0 && n == PAGE;
            let new = if whole && data.is_none() {
                None
            } else {
                let mut page: Page = match self.page(idx) {
                    Some(p) => Box::new(*p),
                    None => Box::new([0u8; PAGE]),
                };
                match data {
                    Some(d) => {
                        page[within..within + n].copy_from_slice(&d[pos as usize..pos as usize + n])
                    }
                    None => page[within..within + n].fill(0),
                }
                Some(page)
            };
            self.cache.insert(idx, new);
            touched.push(idx);
            pos += n as u64;
        }
        touched
    }

    fn persist(&mut self, idx: u64) {
        if let Some(p) = self.cache.remove(&idx) {
            match p {
                Some(p) if p.iter().any(|&b| b != 0) => {
                    self.durable.insert(idx, p);
                }
                _ => {
                    self.durable.remove(&idx);
                }
            }
        }
    }

    fn flush(&mut self) {
        let idx: Vec<u64> = self.cache.keys().copied().collect();
        for i in idx {
            self.persist(i);
        }
        self.flushes += 1;
    }
}

/// The shared disk: tests keep a handle to inspect it and to crash it while the data path
/// owns a [`MemBackend`] on it.
#[derive(Debug, Clone)]
pub struct MemDisk {
    state: Arc<Mutex<State>>,
}

impl MemDisk {
    /// A zeroed disk of `size` bytes.
    pub fn new(size: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                size,
                ..State::default()
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (each op is applied page by
        // page), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A read-write backend on this disk.
    pub fn backend(&self) -> MemBackend {
        MemBackend {
            disk: self.clone(),
            read_only: false,
        }
    }

    /// A read-only backend on this disk.
    pub fn backend_read_only(&self) -> MemBackend {
        MemBackend {
            disk: self.clone(),
            read_only: true,
        }
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.lock().size
    }

    /// What a reader sees now (cache included). Ranges past the end read as zeroes.
    pub fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.lock().read(offset, &mut v);
        v
    }

    /// What would survive a crash without tearing: the durable image only.
    pub fn read_durable(&self, offset: u64, len: usize) -> Vec<u8> {
        let s = self.lock();
        let mut v = vec![0u8; len];
        let mut pos = 0usize;
        while pos < len {
            let abs = offset + pos as u64;
            let (idx, within) = (abs / PAGE64, (abs % PAGE64) as usize);
            let n = (PAGE - within).min(len - pos);
            if let Some(p) = s.durable.get(&idx) {
                v[pos..pos + n].copy_from_slice(&p[within..within + n]);
            }
            pos += n;
        }
        v
    }

    /// Writes directly (as if it had been flushed), for setting up tests.
    pub fn write_durable(&self, offset: u64, data: &[u8]) {
        let mut s = self.lock();
        let touched = s.write(offset, data.len() as u64, Some(data));
        for i in touched {
            s.persist(i);
        }
    }

    /// 4 KiB pages written and not yet flushed.
    pub fn dirty_pages(&self) -> usize {
        self.lock().cache.len()
    }

    /// Flushes completed so far.
    pub fn flushes(&self) -> u64 {
        self.lock().flushes
    }

    /// Simulates power loss: every write not yet flushed is lost. With `tear = Some(seed)`,
    /// each unflushed 4 KiB page independently reaches the disk with probability 1/2
    /// (deterministic for a seed), so a multi-page write may be torn. Returns how many
    /// unflushed pages were dropped.
    pub fn crash(&self, tear: Option<u64>) -> usize {
        let mut s = self.lock();
        let mut idx: Vec<u64> = s.cache.keys().copied().collect();
        idx.sort_unstable();
        let mut dropped = 0;
        let mut rng = tear.map(|seed| seed ^ 0x9E37_79B9_7F4A_7C15);
        for i in idx {
            let keep = match rng.as_mut() {
                Some(x) => splitmix(x) & 1 == 1,
                None => false,
            };
            if keep {
                s.persist(i);
            } else {
                s.cache.remove(&i);
                dropped += 1;
            }
        }
        dropped
    }
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A backend on a [`MemDisk`]; completes every op synchronously.
#[derive(Debug)]
pub struct MemBackend {
    disk: MemDisk,
    read_only: bool,
}

impl MemBackend {
    /// The disk this backend writes to.
    pub fn disk(&self) -> &MemDisk {
        &self.disk
    }

    fn run(&self, op: Op) -> (Result<(), Errno>, Option<AlignedBuf>) {
        if let Err(e) = check_op(&self.info(), &op) {
            return (Err(e), op.into_buf());
        }
        let mut s = self.disk.lock();
        match op {
            Op::Read { offset, mut buf } => {
                s.read(offset, buf.as_mut_slice());
                (Ok(()), Some(buf))
            }
            Op::Write { offset, buf, fua } => {
                let touched = s.write(offset, buf.len() as u64, Some(buf.as_slice()));
                if fua {
                    for i in touched {
                        s.persist(i);
                    }
                }
                (Ok(()), Some(buf))
            }
            Op::Flush => {
                s.flush();
                (Ok(()), None)
            }
            Op::Trim { offset, len } | Op::Zero { offset, len, .. } => {
                s.write(offset, len, None);
                (Ok(()), None)
            }
        }
    }
}

impl Backend for MemBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            size: self.disk.size(),
            block_size: 1,
            preferred_block: PAGE as u32,
            can_trim: true,
            can_zero: true,
            can_fua: true,
            can_flush: true,
            is_rotational: false,
            read_only: self.read_only,
        }
    }

    fn submit(&mut self, ctx: &mut IoCtx<'_>, tag: u64, op: Op) {
        let (res, buf) = self.run(op);
        ctx.complete(Done { tag, res, buf });
    }

    fn complete(&mut self, _ctx: &mut IoCtx<'_>, key: u64, _res: i32) {
        tracing::warn!(key, "memory backend got a CQE it never asked for");
    }

    fn in_flight(&self) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::SyncDriver;

    #[test]
    fn write_read_flush_crash() {
        let disk = MemDisk::new(1 << 20);
        let mut be = disk.backend();
        let mut d = SyncDriver::new().unwrap();
        d.write(&mut be, 100, b"hello", false).unwrap().unwrap();
        assert_eq!(d.read(&mut be, 98, 9).unwrap().unwrap(), b"\0\0hello\0\0");
        assert_eq!(disk.dirty_pages(), 1);
        assert_eq!(disk.crash(None), 1);
        assert_eq!(disk.read(100, 5), vec![0; 5]);

        d.write(&mut be, 100, b"hello", false).unwrap().unwrap();
        d.run(&mut be, Op::Flush).unwrap().res.unwrap();
        assert_eq!(disk.crash(None), 0);
        assert_eq!(disk.read(100, 5), b"hello");

        d.write(&mut be, 8192, b"fua", true).unwrap().unwrap();
        assert_eq!(disk.crash(None), 0);
        assert_eq!(disk.read(8192, 3), b"fua");
    }

    #[test]
    fn torn_crash_is_seeded_and_page_granular() {
        let run = |seed| {
            let disk = MemDisk::new(1 << 20);
            let mut be = disk.backend();
            let mut d = SyncDriver::new().unwrap();
            d.write(&mut be, 0, &[7u8; 64 * PAGE], false)
                .unwrap()
                .unwrap();
            let dropped = disk.crash(Some(seed));
            let img = disk.read(0, 64 * PAGE);
            for page in img.chunks(PAGE) {
                assert!(page.iter().all(|&b| b == 7) || page.iter().all(|&b| b == 0));
            }
            (dropped, img)
        };
        let (a, img_a) = run(42);
        let (b, img_b) = run(42);
        assert_eq!(a, b);
        assert_eq!(img_a, img_b);
        assert!(a > 0 && a < 64, "dropped {a} of 64 pages");
    }

    #[test]
    fn zero_trim_bounds_and_read_only() {
        let disk = MemDisk::new(3 * PAGE as u64);
        disk.write_durable(0, &[1u8; 3 * PAGE]);
        let mut be = disk.backend();
        let mut d = SyncDriver::new().unwrap();
        let r = d
            .run(
                &mut be,
                Op::Zero {
                    offset: 10,
                    len: PAGE as u64,
                    may_trim: false,
                },
            )
            .unwrap();
        r.res.unwrap();
        let img = disk.read(0, 3 * PAGE);
        assert!(img[..10].iter().all(|&b| b == 1));
        assert!(img[10..10 + PAGE].iter().all(|&b| b == 0));
        assert!(img[10 + PAGE..].iter().all(|&b| b == 1));
        assert_eq!(
            d.read(&mut be, 2 * PAGE as u64, PAGE + 1).unwrap(),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            d.write(&mut be, 3 * PAGE as u64, b"x", false).unwrap(),
            Err(Errno::ENOSPC)
        );
        let mut ro = disk.backend_read_only();
        assert_eq!(d.write(&mut ro, 0, b"x", false).unwrap(), Err(Errno::EPERM));
        assert_eq!(d.read(&mut ro, 0, 1).unwrap(), Ok(vec![1]));
    }
}
