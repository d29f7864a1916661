//! The activity log's active set: before an application write touches a 4 MiB extent that
//! is not active, a transaction that makes it active must be durable on the meta-disk
//! (DRBD's `drbd_al_begin_io`). Extents stay active while writes use them and leave in
//! least-recently-used order when a slot is needed. After a crash of the Primary, every
//! extent of the log is resynced; nothing outside it can differ between the two disks.

use std::collections::HashMap;

use crate::meta::al::{AL_EXTENT_BYTES, AL_UPDATES_PER_TRANSACTION, LC_FREE};
use crate::meta::{AlTransaction, AlUpdate, AlWriter};

/// What [`ActiveSet::begin`] says about a write's extents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Begin {
    /// All active: the write may go (its extents are now referenced).
    Go,
    /// A transaction is needed and none is in flight: write this one (after the bitmap
    /// blocks of the `evicted` extents), then [`ActiveSet::committed`].
    Write {
        tr: AlTransaction,
        evicted: Vec<u32>,
    },
    /// Wait: a transaction is in flight, or every slot is busy.
    Wait,
}

#[derive(Debug)]
pub(super) struct ActiveSet {
    writer: AlWriter,
    /// Active extent -> slot.
    active: HashMap<u32, u16>,
    /// Writes in flight per active extent.
    refs: HashMap<u32, u32>,
    /// Last use per slot (a counter), for least-recently-used eviction.
    last_use: Vec<u64>,
    tick: u64,
    /// Extents (with their slots) of the transaction in flight.
    pending: Vec<(u32, u16)>,
}

/// The extents `offset..offset+len` touches.
pub(super) fn extents(offset: u64, len: u64) -> std::ops::RangeInclusive<u32> {
    let first = (offset / AL_EXTENT_BYTES) as u32;
    let last = ((offset + len.max(1) - 1) / AL_EXTENT_BYTES) as u32;
    first..=last
}

impl ActiveSet {
    /// An active set continuing `writer` (its slots are active).
    pub(super) fn new(writer: AlWriter) -> ActiveSet {
        let slots = writer.slots().len();
        let mut active = HashMap::new();
        for (slot, &e) in writer.slots().iter().enumerate() {
            if e != LC_FREE {
                active.insert(e, slot as u16);
            }
        }
        ActiveSet {
            writer,
            active,
            refs: HashMap::new(),
            last_use: vec![0; slots],
            tick: 0,
            pending: Vec::new(),
        }
    }

    /// Extents active now (ascending).
    pub(super) fn active_extents(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.active.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// A write wants `range`'s extents.
    pub(super) fn begin(&mut self, range: std::ops::RangeInclusive<u32>) -> Begin {
        let missing: Vec<u32> = range
            .clone()
            .filter(|e| !self.active.contains_key(e))
            .collect();
        if missing.is_empty() {
            self.tick += 1;
            for e in range {
                *self.refs.entry(e).or_insert(0) += 1;
                if let Some(&slot) = self.active.get(&e) {
                    self.last_use[usize::from(slot)] = self.tick;
                }
            }
            return Begin::Go;
        }
        if !self.pending.is_empty() || missing.len() > AL_UPDATES_PER_TRANSACTION {
            return Begin::Wait;
        }
        // Slots: free ones first, then the least recently used idle ones.
        let mut candidates: Vec<(u64, u16)> = self
            .writer
            .slots()
            .iter()
            .enumerate()
            .filter(|&(_, &e)| {
                e == LC_FREE
                    || (self.refs.get(&e).copied().unwrap_or(0) == 0 && !range.contains(&e))
            })
            .map(|(slot, &e)| {
                let age = if e == LC_FREE {
                    0
                } else {
                    self.last_use[slot] + 1
                };
                (age, slot as u16)
            })
            .collect();
        if candidates.len() < missing.len() {
            return Begin::Wait;
        }
        candidates.sort_unstable();
        let mut updates = Vec::new();
        let mut evicted = Vec::new();
        for (&extent, &(_, slot)) in missing.iter().zip(&candidates) {
            let old = self.writer.slots()[usize::from(slot)];
            if old != LC_FREE {
                evicted.push(old);
            }
            updates.push(AlUpdate { slot, extent });
        }
        let Some(tr) = self.writer.record(&updates) else {
            return Begin::Wait;
        };
        for e in &evicted {
            self.active.remove(e);
            self.refs.remove(e);
        }
        self.pending = updates.iter().map(|u| (u.extent, u.slot)).collect();
        Begin::Write { tr, evicted }
    }

    /// The transaction in flight is durable: its extents are active.
    pub(super) fn committed(&mut self) {
        for (e, slot) in std::mem::take(&mut self.pending) {
            self.active.insert(e, slot);
        }
    }

    /// A write that began is done with `range`'s extents.
    pub(super) fn end(&mut self, range: std::ops::RangeInclusive<u32>) {
        for e in range {
            if let Some(n) = self.refs.get_mut(&e) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: u16) -> ActiveSet {
        ActiveSet::new(AlWriter::new(n, 0))
    }

    #[test]
    fn a_new_extent_needs_a_transaction_then_goes() {
        let mut a = set(4);
        let Begin::Write { tr, evicted } = a.begin(extents(0, 4096)) else {
            panic!("transaction expected")
        };
        assert!(evicted.is_empty());
        assert_eq!(tr.updates().next(), Some(AlUpdate { slot: 0, extent: 0 }));
        assert_eq!(a.begin(extents(4096, 4096)), Begin::Wait, "one in flight");
        a.committed();
        assert_eq!(a.begin(extents(4096, 4096)), Begin::Go);
        assert_eq!(a.active_extents(), vec![0]);
    }

    #[test]
    fn a_write_across_an_extent_boundary_takes_both() {
        let mut a = set(4);
        let Begin::Write { tr, .. } = a.begin(extents(AL_EXTENT_BYTES - 4096, 8192)) else {
            panic!()
        };
        assert_eq!(tr.n_updates, 2);
        a.committed();
        assert_eq!(a.active_extents(), vec![0, 1]);
    }

    #[test]
    fn eviction_is_lru_and_never_of_a_busy_extent() {
        let mut a = set(2);
        for e in [0u64, 1] {
            assert!(matches!(
                a.begin(extents(e * AL_EXTENT_BYTES, 4096)),
                Begin::Write { .. }
            ));
            a.committed();
            assert_eq!(a.begin(extents(e * AL_EXTENT_BYTES, 4096)), Begin::Go);
        }
        // Both busy: a third extent waits.
        assert_eq!(a.begin(extents(2 * AL_EXTENT_BYTES, 4096)), Begin::Wait);
        // Extent 0 idle (refs: begin + begin = 2 for extent 0; end both).
        a.end(extents(0, 4096));
        a.end(extents(0, 4096));
        let Begin::Write { evicted, .. } = a.begin(extents(2 * AL_EXTENT_BYTES, 4096)) else {
            panic!()
        };
        assert_eq!(evicted, vec![0]);
        a.committed();
        assert_eq!(a.active_extents(), vec![1, 2]);
    }

    #[test]
    fn resumes_with_the_replayed_set() {
        let mut w = AlWriter::new(8, 0);
        w.record(&[AlUpdate {
            slot: 3,
            extent: 42,
        }]);
        let mut a = ActiveSet::new(w);
        assert_eq!(a.active_extents(), vec![42]);
        assert_eq!(a.begin(extents(42 * AL_EXTENT_BYTES, 4096)), Begin::Go);
    }
}
