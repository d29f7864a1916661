//! A wrapper that injects failures into any backend.
//!
//! Faults are switched at run time through a shared [`Faults`] handle while the data path
//! owns the [`FaultBackend`]: EIO for reads or writes touching chosen 512-byte sectors, EIO
//! for flushes, or a dead disk (every op fails). A failed op never reaches the inner backend.
//! Lost writes on power failure are modelled by the disk itself ([`MemDisk::crash`]).
//!
//! [`MemDisk::crash`]: super::MemDisk::crash

use std::sync::{Arc, Mutex, MutexGuard};

use super::{Backend, BackendInfo, Done, Errno, IoCtx, Op};

/// Sector size used to name bad ranges.
pub const SECTOR: u64 = 512;

/// What to fail. Ranges are `(first_sector, sector_count)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FaultPlan {
    /// Reads touching these sectors fail with EIO.
    pub read_errors: Vec<(u64, u64)>,
    /// Writes, trims and write-zeroes touching these sectors fail with EIO.
    pub write_errors: Vec<(u64, u64)>,
    /// Flushes fail with EIO.
    pub flush_errors: bool,
    /// Every op fails with EIO (the disk is gone).
    pub dead: bool,
}

impl FaultPlan {
    fn verdict(&self, op: &Op) -> Option<Errno> {
        if self.dead {
            return Some(Errno::EIO);
        }
        let hits = |ranges: &[(u64, u64)], off: u64, len: u64| {
            let (first, last) = (off / SECTOR, (off + len.max(1) - 1) / SECTOR);
            ranges
                .iter()
                .any(|&(s, n)| s <= last && first < s.saturating_add(n))
        };
        match op {
            Op::Flush => self.flush_errors.then_some(Errno::EIO),
            _ => {
                let (off, len) = op.range()?;
                let ranges = if op.is_write() {
                    &self.write_errors
                } else {
                    &self.read_errors
                };
                hits(ranges, off, len).then_some(Errno::EIO)
            }
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    plan: FaultPlan,
    injected: u64,
}

/// Handle to change a [`FaultBackend`]'s faults while it runs.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    shared: Arc<Mutex<Shared>>,
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the whole plan.
    pub fn set(&self, plan: FaultPlan) {
        self.lock().plan = plan;
    }

    /// Fails reads of `count` sectors from `sector`.
    pub fn fail_reads(&self, sector: u64, count: u64) {
        self.lock().plan.read_errors.push((sector, count));
    }

    /// Fails writes of `count` sectors from `sector`.
    pub fn fail_writes(&self, sector: u64, count: u64) {
        self.lock().plan.write_errors.push((sector, count));
    }

    /// Makes flushes fail (or work again).
    pub fn fail_flushes(&self, on: bool) {
        self.lock().plan.flush_errors = on;
    }

    /// Kills (or revives) the disk.
    pub fn set_dead(&self, dead: bool) {
        self.lock().plan.dead = dead;
    }

    /// Removes every fault.
    pub fn clear(&self) {
        self.lock().plan = FaultPlan::default();
    }

    /// Ops failed so far by injection.
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }
}

/// Wraps a backend; see the module doc.
pub struct FaultBackend<B> {
    inner: B,
    faults: Faults,
}

impl<B: Backend> FaultBackend<B> {
    /// Wraps `inner`; returns the backend and the handle to steer it.
    pub fn new(inner: B) -> (Self, Faults) {
        let faults = Faults::default();
        (
            Self {
                inner,
                faults: faults.clone(),
            },
            faults,
        )
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }
}

impl<B: Backend> Backend for FaultBackend<B> {
    fn info(&self) -> BackendInfo {
        self.inner.info()
    }

    fn submit(&mut self, ctx: &mut IoCtx<'_>, tag: u64, op: Op) {
        let verdict = {
            let mut s = self.faults.lock();
            let v = s.plan.verdict(&op);
            if v.is_some() {
                s.injected += 1;
            }
            v
        };
        match verdict {
            Some(e) => {
                tracing::debug!(tag, op = op.name(), "injected {e}");
                ctx.complete(Done {
                    tag,
                    res: Err(e),
                    buf: op.into_buf(),
                })
            }
            None => self.inner.submit(ctx, tag, op),
        }
    }

    fn complete(&mut self, ctx: &mut IoCtx<'_>, key: u64, res: i32) {
        self.inner.complete(ctx, key, res)
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }

    fn has_room(&self) -> bool {
        self.inner.has_room()
    }
}

/// The environment variable that turns on fault injection in a daemon (a testing aid:
/// `urbdadm inject-fault` then steers the disks of that daemon).
pub const FAULT_INJECTION_ENV: &str = "URBD_FAULT_INJECTION";

/// Per backing path, the faults every backend opened for it shares (the NBD data path's
/// and the replication session's), when fault injection is on in this process.
static REGISTRY: std::sync::OnceLock<
    Option<Mutex<std::collections::HashMap<std::path::PathBuf, Faults>>>,
> = std::sync::OnceLock::new();

fn registry() -> Option<&'static Mutex<std::collections::HashMap<std::path::PathBuf, Faults>>> {
    REGISTRY
        .get_or_init(|| {
            (std::env::var_os(FAULT_INJECTION_ENV).is_some_and(|v| v == "1"))
                .then(|| Mutex::new(std::collections::HashMap::new()))
        })
        .as_ref()
}

/// Whether fault injection is on in this process ([`FAULT_INJECTION_ENV`]`=1`).
pub fn injection_enabled() -> bool {
    registry().is_some()
}

/// The faults of the disk at `path`, if fault injection is on (created on first use).
pub fn faults_for(path: &std::path::Path) -> Option<Faults> {
    let reg = registry()?;
    let mut map = reg.lock().unwrap_or_else(|p| p.into_inner());
    Some(map.entry(path.to_path_buf()).or_default().clone())
}

/// Wraps a backend of the disk at `path` in a [`FaultBackend`] sharing that disk's faults,
/// if fault injection is on; else returns it as it is.
pub fn wrap_for(path: &std::path::Path, be: Box<dyn Backend>) -> Box<dyn Backend> {
    match faults_for(path) {
        Some(faults) => Box::new(FaultBackend { inner: be, faults }),
        None => be,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{MemDisk, SyncDriver};

    #[test]
    fn eio_on_chosen_sectors_only() {
        let disk = MemDisk::new(1 << 20);
        let (mut be, faults) = FaultBackend::new(disk.backend());
        let mut d = SyncDriver::new().unwrap();
        faults.fail_reads(8, 1);
        faults.fail_writes(16, 2);
        assert_eq!(d.read(&mut be, 8 * 512 - 1, 1).unwrap(), Ok(vec![0]));
        assert_eq!(d.read(&mut be, 8 * 512 - 1, 2).unwrap(), Err(Errno::EIO));
        assert_eq!(d.read(&mut be, 9 * 512, 512).unwrap(), Ok(vec![0; 512]));
        assert_eq!(
            d.write(&mut be, 17 * 512 + 5, b"x", false).unwrap(),
            Err(Errno::EIO)
        );
        assert_eq!(disk.read(17 * 512 + 5, 1), vec![0]);
        assert_eq!(d.write(&mut be, 18 * 512, b"x", false).unwrap(), Ok(()));
        // Reads of a write-failing sector still work.
        assert_eq!(d.read(&mut be, 16 * 512, 1).unwrap(), Ok(vec![0]));
        faults.fail_flushes(true);
        assert_eq!(d.run(&mut be, Op::Flush).unwrap().res, Err(Errno::EIO));
        faults.clear();
        assert_eq!(d.run(&mut be, Op::Flush).unwrap().res, Ok(()));
        faults.set_dead(true);
        assert_eq!(d.read(&mut be, 0, 1).unwrap(), Err(Errno::EIO));
        assert_eq!(faults.injected(), 4);
    }
}
