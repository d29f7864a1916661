//! The handle shared between the daemon's control thread and the data path.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Whether new clients are admitted, how many are connected, and I/O counters. All fields
/// are atomics (plus the refusal text behind a mutex, read only when a client negotiates).
#[derive(Debug, Default)]
pub struct Gate {
    refusing: AtomicBool,
    reason: Mutex<Option<String>>,
    open_clients: AtomicUsize,
    bytes_written: AtomicU64,
    bytes_read: AtomicU64,
    disk_in_flight: AtomicUsize,
    pending: AtomicUsize,
}

/// I/O counters in the units of /proc/drbd (`dw:`, `dr:` in KiB; `lo:`, `ap:` counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// KiB written to the local disk (`dw:`).
    pub dw: u64,
    /// KiB read from the local disk (`dr:`).
    pub dr: u64,
    /// Requests in flight to the local disk (`lo:`).
    pub lo: u64,
    /// Application requests received and not yet answered (`ap:`).
    pub ap: u64,
}

impl Gate {
    /// A gate that serves.
    pub fn new() -> Self {
        Self::default()
    }

    /// A gate that refuses new clients with `reason`.
    pub fn refusing(reason: &str) -> Self {
        let g = Self::default();
        g.set_serving(Some(reason));
        g
    }

    /// `None`: admit new clients. `Some(reason)`: refuse new clients, telling them `reason`
    /// (e.g. "optzimbra is Secondary"). Clients already past negotiation are not affected;
    /// the daemon checks [`open_clients`](Self::open_clients) before demoting.
    pub fn set_serving(&self, serving: Option<&str>) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        *r = serving.map(str::to_owned);
        self.refusing.store(serving.is_some(), Ordering::Release);
    }

    /// The refusal text, if new clients are refused.
    pub fn refusal(&self) -> Option<String> {
        if !self.refusing.load(Ordering::Acquire) {
            return None;
        }
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Connections past negotiation (in transmission).
    pub fn open_clients(&self) -> usize {
        self.open_clients.load(Ordering::Acquire)
    }

    /// Current counters.
    pub fn counters(&self) -> Counters {
        Counters {
            dw: self.bytes_written.load(Ordering::Relaxed) >> 10,
            dr: self.bytes_read.load(Ordering::Relaxed) >> 10,
            lo: self.disk_in_flight.load(Ordering::Relaxed) as u64,
            ap: self.pending.load(Ordering::Relaxed) as u64,
        }
    }

    pub(crate) fn client_opened(&self) {
        self.open_clients.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn client_closed(&self) {
        self.open_clients.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn add_written(&self, bytes: u64) {
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn add_read(&self, bytes: u64) {
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn set_levels(&self, disk_in_flight: usize, pending: usize) {
        self.disk_in_flight.store(disk_in_flight, Ordering::Relaxed);
        self.pending.store(pending, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_and_counters() {
        let g = Gate::refusing("r0 is Secondary");
        assert_eq!(g.refusal().as_deref(), Some("r0 is Secondary"));
        g.set_serving(None);
        assert_eq!(g.refusal(), None);
        g.add_written(4096);
        g.add_read(2048);
        g.set_levels(3, 4);
        assert_eq!(
            g.counters(),
            Counters {
                dw: 4,
                dr: 2,
                lo: 3,
                ap: 4
            }
        );
    }
}
